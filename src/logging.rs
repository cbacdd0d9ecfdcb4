//! Logging set-up (SPEC 8). `--log-level` is checked before use: tracing reads an unknown word
//! such as `warning` as the name of a log target, which would silence every log line without a
//! word of complaint.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// The levels `--log-level` takes, alone or after `target=`.
pub const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

/// A `--log-level` that is neither a level nor a list of `target=level` directives.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "--log-level {given:?}: {problem}; accepted: error|warn|info|debug|trace|off, or directives like stage_guard=debug,info"
)]
pub struct LogLevelError {
    given: String,
    problem: String,
}

/// The filter for `--log-level` (a level, or comma-separated `target=level` directives, a bare
/// level among them setting the default).
pub fn filter(spec: &str) -> Result<EnvFilter, LogLevelError> {
    let error = |problem: String| LogLevelError {
        given: spec.to_owned(),
        problem,
    };
    if spec.trim().is_empty() {
        return Err(error("empty".to_owned()));
    }
    let directives: Vec<&str> = spec.split(',').map(str::trim).collect();
    for &directive in &directives {
        let (target, level) = match directive.split_once('=') {
            Some((target, level)) => (Some(target.trim()), level.trim()),
            None => (None, directive),
        };
        if let Some(target) = target
            && (target.is_empty() || !target.chars().all(is_target_char))
        {
            return Err(error(format!("{target:?} is not a log target")));
        }
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            let hint = crate::suggest::closest(&level.to_ascii_lowercase(), LEVELS)
                .map(|l| format!(" (did you mean {l}?)"))
                .unwrap_or_default();
            return Err(error(format!("{level:?} is not a level{hint}")));
        }
    }
    EnvFilter::try_new(directives.join(",")).map_err(|e| error(e.to_string()))
}

/// Module paths and crate names, as tracing names targets.
fn is_target_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-' | '.')
}

/// Installs the global subscriber: `--log-level` when given (already checked), else `RUST_LOG`,
/// else `info`.
pub fn init(format: LogFormat, level: Option<&str>) -> Result<(), LogLevelError> {
    let filter = match level {
        Some(l) => filter(l)?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_directives_are_accepted() {
        for ok in [
            "info",
            "DEBUG",
            "off",
            "stage_guard=debug",
            "stage_guard=debug,info",
            "stage_guard::server=trace, hyper=warn",
            "tower-http=error",
        ] {
            assert!(filter(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn anything_else_is_one_line_naming_the_accepted_values() {
        for (bad, problem) in [
            (
                "warning",
                r#""warning" is not a level (did you mean warn?)"#,
            ),
            ("verbose", r#""verbose" is not a level;"#),
            ("", "empty"),
            ("stage_guard", r#""stage_guard" is not a level"#),
            ("stage_guard=loud", r#""loud" is not a level"#),
            ("=debug", r#""" is not a log target"#),
            ("a b=debug", r#""a b" is not a log target"#),
            ("info,,debug", r#""" is not a level"#),
        ] {
            let e = filter(bad).expect_err(bad).to_string();
            assert!(e.contains(problem), "{bad}: {e}");
            assert!(e.contains("error|warn|info|debug|trace"), "{e}");
            assert!(e.contains("stage_guard=debug"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
