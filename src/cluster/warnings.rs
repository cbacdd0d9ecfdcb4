//! The API server's `Warning` response headers (RFC 7234 5.5: `299 - "text"`), where admission webhooks'
//! warnings reach the client: kubectl prints them as `Warning: text`, and so do the commands that write.

/// The texts of one `Warning` header value: several warnings may be joined by commas.
pub fn parse(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value.trim_start();
    while !rest.is_empty() {
        // warn-code SP warn-agent SP quoted-text [SP quoted-date]
        let Some((_code, after_code)) = rest.split_once(' ') else {
            break;
        };
        let Some((_agent, after_agent)) = after_code.trim_start().split_once(' ') else {
            break;
        };
        let Some((text, after_text)) = quoted(after_agent.trim_start()) else {
            break;
        };
        out.push(text);
        rest = after_text.trim_start();
        if rest.starts_with('"') {
            // The optional date.
            rest = quoted(rest).map_or("", |(_, after)| after).trim_start();
        }
        rest = rest.strip_prefix(',').unwrap_or("").trim_start();
    }
    out
}

/// A quoted string at the start of `s` (backslash escapes undone) and what follows it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let mut text = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => text.push(chars.next()?.1),
            '"' => return Some((text, &body[i + 1..])),
            c => text.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_header_gives_its_texts() {
        assert_eq!(
            parse(r#"299 - "forced change \"a\" -> \"c\" by alice""#),
            [r#"forced change "a" -> "c" by alice"#]
        );
        assert_eq!(
            parse(r#"299 - "one", 299 - "two, with a comma" "Sat, 06 Dec 2026 03:00:00 GMT""#),
            ["one", "two, with a comma"]
        );
        assert!(parse("").is_empty());
        assert!(parse("299 - unquoted").is_empty());
        assert!(parse(r#"299 - "never closed"#).is_empty());
    }
}
