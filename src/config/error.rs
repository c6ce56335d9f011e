//! Configuration errors that always say where: file, line, column and what is wrong.

use std::fmt;
use std::path::{Path, PathBuf};

/// A position in a configuration file, 1-based like editors show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Line number, starting at 1.
    pub line: usize,
    /// Column number, starting at 1.
    pub column: usize,
}

/// Why a configuration could not be loaded, validated or compiled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{path}: cannot read config file: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid darklight configuration.
    #[error("{}", render_invalid(path, location.as_ref(), message))]
    Invalid {
        /// The file (or a label such as `<inline>` for text given directly).
        path: PathBuf,
        /// Where the problem is, when it can be pinned down.
        location: Option<Location>,
        /// What is wrong, in words a sysadmin can act on.
        message: String,
    },
}

impl ConfigError {
    /// Builds an [`ConfigError::Invalid`] for `path`.
    pub(crate) fn invalid(
        path: &Path,
        location: Option<Location>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            path: path.to_path_buf(),
            location,
            message: message.into(),
        }
    }

    /// The location of the problem, if known.
    pub fn location(&self) -> Option<Location> {
        match self {
            ConfigError::Invalid { location, .. } => *location,
            ConfigError::Read { .. } => None,
        }
    }

    /// Converts a YAML parsing/deserialisation error, moving its position into [`Location`].
    pub(crate) fn from_yaml(path: &Path, error: &serde_yaml::Error) -> Self {
        let location = error.location().map(|l| Location {
            line: l.line(),
            column: l.column(),
        });
        let message = strip_position(&error.to_string());
        ConfigError::invalid(path, location, message)
    }
}

fn render_invalid(path: &Path, location: Option<&Location>, message: &str) -> String {
    match location {
        Some(l) => format!("{}:{}:{}: {}", path.display(), l.line, l.column, message),
        None => format!("{}: {}", path.display(), message),
    }
}

/// Removes serde_yaml's own " at line N column M" so that the position is shown once, up front.
fn strip_position(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(" at line ") {
        out.push_str(&rest[..start]);
        let tail = &rest[start + " at line ".len()..];
        let skipped = skip_line_column(tail);
        if skipped == 0 {
            out.push_str(" at line ");
        }
        rest = &tail[skipped..];
    }
    out.push_str(rest);
    out
}

/// Length of a leading `N column M` in `text`, or 0 when it does not start that way.
fn skip_line_column(text: &str) -> usize {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let line_len = digits(text);
    if line_len == 0 {
        return 0;
    }
    let Some(after) = text[line_len..].strip_prefix(" column ") else {
        return 0;
    };
    let column_len = digits(after);
    if column_len == 0 {
        return 0;
    }
    line_len + " column ".len() + column_len
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Finds where `needle` first appears as a value after `occurrence - 1` earlier appearances.
///
/// Semantic checks run after parsing, when serde's positions are gone; the offending value is
/// still in the text, so this points the sysadmin at it.
pub(crate) fn locate(text: &str, needle: &str, occurrence: usize) -> Option<Location> {
    if needle.is_empty() {
        return None;
    }
    let mut seen = 0;
    for (index, line) in text.lines().enumerate() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let code = line.split(" #").next().unwrap_or(line);
        let mut from = 0;
        while let Some(offset) = code[from..].find(needle) {
            let column = from + offset;
            if is_token_boundary(code, column, needle.len()) {
                seen += 1;
                if seen == occurrence.max(1) {
                    return Some(Location {
                        line: index + 1,
                        column: code[..column].chars().count() + 1,
                    });
                }
            }
            from = column + needle.len();
        }
    }
    None
}

fn is_token_boundary(line: &str, start: usize, len: usize) -> bool {
    let before = line[..start].chars().next_back();
    let after = line[start + len..].chars().next();
    let separates = |c: Option<char>| match c {
        None => true,
        Some(c) => c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '[' | ']' | ':' | '-'),
    };
    separates(before) && separates(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_serde_yaml_position_suffix() {
        assert_eq!(
            strip_position("sites[0]: unknown field `x` at line 4 column 5"),
            "sites[0]: unknown field `x`"
        );
        assert_eq!(strip_position("no position here"), "no position here");
        assert_eq!(
            strip_position("text at line seven stays"),
            "text at line seven stays"
        );
    }

    #[test]
    fn locate_finds_the_nth_whole_token() {
        let text = "a: foo\nb: [foobar, foo]\n# foo\n";
        assert_eq!(
            locate(text, "foo", 1),
            Some(Location { line: 1, column: 4 })
        );
        assert_eq!(
            locate(text, "foo", 2),
            Some(Location {
                line: 2,
                column: 13
            })
        );
        assert_eq!(locate(text, "foo", 3), None);
    }

    #[test]
    fn renders_file_line_column_first() {
        let error = ConfigError::invalid(
            Path::new("x.yaml"),
            Some(Location { line: 3, column: 7 }),
            "bad",
        );
        assert_eq!(error.to_string(), "x.yaml:3:7: bad");
    }
}
