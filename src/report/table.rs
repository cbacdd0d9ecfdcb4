//! Aligned columns for people, as kubectl prints them: a header row in capitals, each column as wide
//! as its widest cell, three spaces between columns, no trailing spaces.

const GAP: &str = "   ";

/// `header` and `rows` as aligned lines, each ending in a newline.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, width) in widths.iter().enumerate() {
            let cell = row.get(i).map_or("", String::as_str);
            if i > 0 {
                line.push_str(GAP);
            }
            line.push_str(cell);
            let pad = width.saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let rows = vec![
            vec![
                "argo".to_string(),
                "task-1".to_string(),
                "stuck".to_string(),
            ],
            vec!["e2e-long-name".to_string(), "t".to_string(), String::new()],
        ];
        assert_eq!(
            render(&["NAMESPACE", "NAME", "FINDING"], &rows),
            "NAMESPACE       NAME     FINDING\n\
             argo            task-1   stuck\n\
             e2e-long-name   t\n"
        );
        // Width counts characters, not bytes.
        assert_eq!(
            render(&["A", "B"], &[vec!["é".into(), "x".into()]]),
            "A   B\né   x\n"
        );
    }
}
