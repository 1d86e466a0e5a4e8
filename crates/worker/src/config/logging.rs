//! Logging of one process: format and colours.

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line (for log shippers).
    Json,
}

/// Logging of one process.
#[derive(Debug, Clone)]
pub struct LoggingConfig {
    pub format: LogFormat,
    /// Filter when `RUST_LOG` is unset.
    pub default_filter: &'static str,
    /// ANSI colours in pretty lines.
    pub color: bool,
}

impl LoggingConfig {
    /// Logging to stderr: colours only on a terminal and without `NO_COLOR`.
    pub fn new(format: LogFormat, default_filter: &'static str) -> LoggingConfig {
        use std::io::IsTerminal;
        LoggingConfig {
            format,
            default_filter,
            color: wants_color(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            ),
        }
    }
}

/// Colours only on a terminal, and never when `NO_COLOR` is set to anything non-empty
/// (<https://no-color.org>).
pub fn wants_color(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(wants_color(true, None));
        assert!(wants_color(true, Some(OsStr::new(""))));
        assert!(!wants_color(true, Some(OsStr::new("1"))));
        assert!(!wants_color(false, None));
    }
}
