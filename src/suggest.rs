//! "Did you mean ...?" for misspelt words (configuration keys, stage names, log levels).

/// The candidate closest to `word`, when it is close enough to be a likely typo: at most a third
/// of the word's length in edits (at least one), or one word the start of the other (`warning`,
/// `warn`). On a tie the first candidate wins.
pub fn closest<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn distance(word: &str, candidate: &str) -> usize {
    let (short, long) = if word.len() < candidate.len() {
        (word, candidate)
    } else {
        (candidate, word)
    };
    if short.chars().count() >= 3 && long.starts_with(short) {
        1
    } else {
        edit_distance(word, candidate)
    }
}

/// Levenshtein distance counting an adjacent transposition as one edit (`trasitions`, `limt`,
/// `wran` are all one edit away).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows: two back (for transpositions), previous, current.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let substitution = previous[j - 1] + usize::from(a[i - 1] != b[j - 1]);
            let mut best = substitution.min(previous[j] + 1).min(current[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            current[j] = best;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        for (a, b, d) in [
            ("", "", 0),
            ("abc", "abc", 0),
            ("trasitions", "transitions", 1),
            ("limt", "limit", 1),
            ("wran", "warn", 1),
            ("warning", "warn", 3),
            ("kitten", "sitting", 3),
            ("", "abc", 3),
        ] {
            assert_eq!(edit_distance(a, b), d, "{a} / {b}");
            assert_eq!(edit_distance(b, a), d, "{b} / {a}");
        }
    }

    #[test]
    fn suggestions_are_close_words_only() {
        let keys = ["label", "stages", "entry", "transitions", "mode"];
        assert_eq!(closest("trasitions", keys), Some("transitions"));
        assert_eq!(closest("stage", keys), Some("stages"));
        assert_eq!(closest("lable", keys), Some("label"));
        assert_eq!(closest("colour", keys), None);
        assert_eq!(
            closest("label", keys),
            None,
            "the word itself is no suggestion"
        );
        let levels = ["error", "warn", "info", "debug", "trace"];
        assert_eq!(closest("warning", levels), Some("warn"));
        assert_eq!(closest("infos", levels), Some("info"));
        assert_eq!(closest("verbose", levels), None);
    }
}
