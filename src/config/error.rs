//! Config errors: every problem found in a file, each with PATH:LINE:COL and the field.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a config file, pointing at the exact place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    /// Dotted path of the offending field, e.g. `routes[0].backends[1].upstream`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.col)?;
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// All the errors of one load; `Display` prints one per line.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects errors while a file is decoded and validated, turning byte spans into
/// line and column numbers against the source text.
pub(crate) struct Collector<'t> {
    file: PathBuf,
    text: &'t str,
    errors: Vec<ConfigError>,
    /// When cataloguing keys (see `config::keys_asked`): every key path a table was
    /// asked for, as each table finishes.
    pub(crate) catalog: Option<std::collections::BTreeSet<String>>,
}

impl<'t> Collector<'t> {
    pub(crate) fn new(file: &Path, text: &'t str) -> Self {
        Collector { file: file.to_path_buf(), text, errors: Vec::new(), catalog: None }
    }

    pub(crate) fn push(&mut self, span: Range<usize>, field: impl Into<String>, message: impl Into<String>) {
        let (line, col) = line_col(self.text, span.start);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            col,
            field: field.into(),
            message: message.into(),
        });
    }

    /// A path from the config, relative to the config file's directory.
    pub(crate) fn relative_to_config(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        match self.file.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The errors in file order (decode and validation find them in different orders).
    pub(crate) fn finish(mut self) -> Vec<ConfigError> {
        self.errors.sort_by_key(|e| (e.line, e.col));
        self.errors.dedup();
        self.errors
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 9), (2, 4));
        assert_eq!(line_col(text, 999), (3, 1));
    }
}
