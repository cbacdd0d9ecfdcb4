//! Fitting a warning into the API server's 120 characters (SPEC 4.7): a line is made of pieces, and
//! when it is too long the least useful pieces are shortened in their middle, so that every piece
//! keeps its beginning and its end and the line never loses its tail.

/// Shortened pieces keep at least this many characters (the `…` included).
pub(crate) const MIN_SHORTENED: usize = 12;

/// One piece of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    /// The text as shown, already escaped; quotes are added around it when `quoted`.
    text: String,
    quoted: bool,
    /// `None`: fixed words. `Some(r)`: request data or names that may be shortened, lowest `r` first.
    rank: Option<u8>,
}

impl Piece {
    /// Words of the message itself: never shortened.
    pub(crate) fn fixed(text: impl Into<String>) -> Piece {
        Piece {
            text: text.into(),
            quoted: false,
            rank: None,
        }
    }

    /// A name (a workflow, a user, an annotation key) that may be shortened at rank `rank`.
    pub(crate) fn name(text: &str, rank: u8) -> Piece {
        Piece {
            text: escaped(text),
            quoted: false,
            rank: Some(rank),
        }
    }

    /// A stage in quotes, so that an empty value shows as `""`; `none` for no label.
    pub(crate) fn stage(stage: Option<&str>, rank: u8) -> Piece {
        match stage {
            Some(s) => Piece {
                text: escaped(s),
                quoted: true,
                rank: Some(rank),
            },
            None => Piece::fixed("none"),
        }
    }

    fn shown_len(&self, cap: Option<usize>) -> usize {
        let inner = self.text.chars().count();
        let inner = cap.map_or(inner, |c| inner.min(c));
        inner + if self.quoted { 2 } else { 0 }
    }

    fn render(&self, cap: Option<usize>, out: &mut String) {
        let text = match cap {
            Some(c) => elide_middle(&self.text, c),
            None => self.text.clone(),
        };
        if self.quoted {
            out.push('"');
            out.push_str(&text);
            out.push('"');
        } else {
            out.push_str(&text);
        }
    }
}

/// Control characters, quotes and backslashes escaped, so the text stays on one line and a quoted
/// piece cannot be mistaken for two.
fn escaped(s: &str) -> String {
    s.chars().flat_map(char::escape_debug).collect()
}

/// `s` in at most `max` characters: its beginning, `…`, its end.
pub(crate) fn elide_middle(s: &str, max: usize) -> String {
    let len = s.chars().count();
    if len <= max {
        return s.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let keep = max - 1;
    let head = keep.div_ceil(2);
    let tail = keep - head;
    let mut out: String = s.chars().take(head).collect();
    out.push('…');
    out.extend(s.chars().skip(len - tail));
    out
}

/// The line as it stands, nothing shortened.
pub(crate) fn render(pieces: &[Piece]) -> String {
    render_capped(pieces, &vec![None; pieces.len()])
}

/// The line's length in characters, nothing shortened.
pub(crate) fn length(pieces: &[Piece]) -> usize {
    pieces.iter().map(|p| p.shown_len(None)).sum()
}

fn render_capped(pieces: &[Piece], caps: &[Option<usize>]) -> String {
    let mut out = String::new();
    for (piece, cap) in pieces.iter().zip(caps) {
        piece.render(*cap, &mut out);
    }
    out
}

fn capped_length(pieces: &[Piece], caps: &[Option<usize>]) -> usize {
    pieces
        .iter()
        .zip(caps)
        .map(|(p, cap)| p.shown_len(*cap))
        .sum()
}

/// The line in at most `max` characters. Pieces of the lowest rank are shortened first, all of one
/// rank to the same length and none below [`MIN_SHORTENED`]; only when every piece is as short as it
/// may be is the line cut at its end (names of hundreds of characters are the only way there).
pub(crate) fn fit(pieces: &[Piece], max: usize) -> String {
    let mut caps: Vec<Option<usize>> = vec![None; pieces.len()];
    let mut ranks: Vec<u8> = pieces.iter().filter_map(|p| p.rank).collect();
    ranks.sort_unstable();
    ranks.dedup();
    for rank in ranks {
        if capped_length(pieces, &caps) <= max {
            break;
        }
        let members: Vec<usize> = (0..pieces.len())
            .filter(|&i| pieces[i].rank == Some(rank))
            .collect();
        let longest = members
            .iter()
            .map(|&i| pieces[i].text.chars().count())
            .max()
            .unwrap_or(0);
        // The longest common cap that fits, searched downwards from what could ever fit.
        let mut cap = longest.min(max);
        loop {
            for &i in &members {
                caps[i] = Some(cap);
            }
            if cap <= MIN_SHORTENED || capped_length(pieces, &caps) <= max {
                break;
            }
            cap -= 1;
        }
    }
    let line = render_capped(pieces, &caps);
    if line.chars().count() <= max {
        return line;
    }
    let mut cut: String = line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elision_keeps_both_ends() {
        assert_eq!(elide_middle("abcdefghij", 10), "abcdefghij");
        assert_eq!(elide_middle("abcdefghij", 5), "ab…ij");
        assert_eq!(elide_middle("abcdefghij", 6), "abc…ij");
        assert_eq!(elide_middle("äöüäöü", 4), "äö…ü");
        assert_eq!(elide_middle("abc", 0), "");
    }

    #[test]
    fn stages_are_quoted_and_escaped() {
        let line = render(&[
            Piece::stage(Some(""), 1),
            Piece::fixed(" "),
            Piece::stage(None, 1),
            Piece::fixed(" "),
            Piece::stage(Some("a\"b\nc"), 1),
        ]);
        assert_eq!(line, r#""" none "a\"b\nc""#);
    }

    #[test]
    fn a_line_that_fits_is_left_alone() {
        let pieces = [Piece::fixed("warn: "), Piece::name("argo/wf", 1)];
        assert_eq!(fit(&pieces, 120), "warn: argo/wf");
        assert_eq!(length(&pieces), 13);
    }

    #[test]
    fn the_lowest_rank_goes_first_and_one_rank_shares_a_length() {
        let pieces = [
            Piece::name(&"w".repeat(50), 1),
            Piece::fixed(" "),
            Piece::stage(Some(&"a".repeat(30)), 2),
            Piece::fixed(" -> "),
            Piece::stage(Some(&"b".repeat(40)), 2),
        ];
        // 50 + 1 + 32 + 4 + 42 = 129: the workflow alone gives up 9 characters.
        let line = fit(&pieces, 120);
        assert_eq!(line.chars().count(), 120);
        assert!(line.starts_with(&format!("{}…{} ", "w".repeat(20), "w".repeat(20))));
        assert!(line.ends_with(&format!("\"{}\"", "b".repeat(40))));
        // Much shorter: the workflow stops at its minimum, the stages share what is left.
        let line = fit(&pieces, 60);
        assert!(line.chars().count() <= 60, "{line}");
        let words: Vec<&str> = line.split(' ').collect();
        assert_eq!(words[0].chars().count(), MIN_SHORTENED);
        assert_eq!(words[1].chars().count(), words[3].chars().count(), "{line}");
    }

    #[test]
    fn fixed_words_are_only_ever_cut_at_the_end_as_a_last_resort() {
        let pieces = [Piece::fixed("x".repeat(200)), Piece::name("y", 1)];
        let line = fit(&pieces, 120);
        assert_eq!(line.chars().count(), 120);
        assert!(line.ends_with('…'));
    }
}
