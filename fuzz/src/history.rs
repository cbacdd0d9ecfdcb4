//! The history parser: no panic on any text, and what it accepts survives a round trip through
//! `render` (the mutating webhook writes back what it parsed, plus one entry).

use std::time::{Duration, SystemTime};

use stage_guard::core::history::{self, Entry};

pub fn history(data: &[u8]) -> Result<(), String> {
    // Annotation values are strings: the decoder hands the parser UTF-8 only.
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok(());
    };
    let Ok(entries) = history::parse(text) else {
        return Ok(());
    };
    let rendered = history::render(&entries);
    let again = history::parse(&rendered)
        .map_err(|e| format!("render of a parsed history does not parse: {e}\n{rendered}"))?;
    if again != entries {
        return Err(format!(
            "round trip changed the history:\n{text}\n{rendered}"
        ));
    }
    // Appending keeps the newest entries under the limit, the new one last.
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    for limit in [1, 2, 50] {
        let entry = Entry::new(Some("a"), Some("b"), "fuzz", at);
        let appended = history::append(&entries, entry.clone(), limit);
        let kept = entries.len().min(limit - 1);
        if appended.len() != kept + 1
            || appended.last() != Some(&entry)
            || appended[..kept] != entries[entries.len() - kept..]
        {
            return Err(format!(
                "append under limit {limit} broke the history: {text}"
            ));
        }
    }
    Ok(())
}
