//! Errors of the policy crate. Every bundle problem names its file, and where Cedar gives a source
//! span, its line and column, so that `writ policy validate` reads like a compiler.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// One problem in one bundle file, located as precisely as the source allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceError {
    /// The file, relative to the bundle directory.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<u32>,
    /// 1-based column (in characters), when known.
    pub column: Option<u32>,
    /// The policy concerned, when the problem belongs to one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    pub message: String,
    /// What to do about it, when Cedar or Writ knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl SourceError {
    pub(crate) fn in_file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: None,
            column: None,
            policy_id: None,
            message: message.into(),
            help: None,
        }
    }

    pub(crate) fn at(mut self, location: Option<(u32, u32)>) -> Self {
        if let Some((line, column)) = location {
            self.line = Some(line);
            self.column = Some(column);
        }
        self
    }

    pub(crate) fn with_policy(mut self, id: impl Into<String>) -> Self {
        self.policy_id = Some(id.into());
        self
    }

    pub(crate) fn with_help(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)?;
        if let Some(id) = &self.policy_id {
            write!(f, " (policy `{id}`)")?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Why a bundle could not be loaded. A refused bundle never replaces a serving one.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read the policy bundle at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir} is not a policy bundle: {problem}")]
    Layout { dir: PathBuf, problem: String },
    #[error("the policy bundle {dir} is invalid ({count} error{s}):\n{list}",
        count = errors.len(),
        s = if errors.len() == 1 { "" } else { "s" },
        list = errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        dir: PathBuf,
        errors: Vec<SourceError>,
    },
}

impl BundleError {
    /// The located problems, when the bundle was readable but wrong.
    pub fn source_errors(&self) -> &[SourceError] {
        match self {
            Self::Invalid { errors, .. } => errors,
            _ => &[],
        }
    }
}

/// A [`crate::PolicyRequest`] that cannot be turned into a Cedar request for this bundle's schema.
/// The engine never returns it: it becomes a `Deny` carrying the message (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

/// A case file or request file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The directory watcher could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch the policy bundle at {dir}: {message}")]
pub struct WatchError {
    pub dir: PathBuf,
    pub message: String,
}

/// Maps a byte offset in `text` to a 1-based (line, column), the column counted in characters.
pub(crate) fn line_col(text: &str, offset: usize) -> (u32, u32) {
    let offset = offset.min(text.len());
    let mut line = 1u32;
    let mut line_start = 0usize;
    for (i, b) in text.as_bytes()[..offset].iter().enumerate() {
        if *b == b'\n' {
            line += 1;
            line_start = i + 1;
        }
    }
    let column = text
        .get(line_start..offset)
        .map_or(offset - line_start, |s| s.chars().count());
    (
        line,
        u32::try_from(column).unwrap_or(u32::MAX).saturating_add(1),
    )
}

/// Turns any Cedar diagnostic into located errors in `file` (whose text is `text`).
pub(crate) fn from_diagnostic(
    file: &Path,
    text: &str,
    diag: &dyn miette::Diagnostic,
) -> SourceError {
    let offset = diag
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|l| l.offset());
    let mut message = diag.to_string();
    // Cedar puts the useful detail of some errors into a label.
    if let Some(label) = diag
        .labels()
        .and_then(|mut l| l.next())
        .and_then(|l| l.label().map(str::to_owned))
        && !label.is_empty()
        && !message.contains(&label)
    {
        message = format!("{message}: {label}");
    }
    SourceError::in_file(file, message)
        .at(offset.map(|o| line_col(text, o)))
        .with_help(diag.help().map(|h| h.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_is_one_based_and_counts_characters() {
        let text = "ab\ncdé\nf";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 3), (2, 1));
        // 'é' is two bytes: the byte after it is the 4th character of line 2.
        assert_eq!(line_col(text, 7), (2, 4));
        assert_eq!(line_col(text, 8), (3, 1));
        assert_eq!(line_col(text, 999), (3, 2));
    }

    #[test]
    fn display_reads_like_a_compiler() {
        let e = SourceError::in_file(Path::new("a.cedar"), "bad")
            .at(Some((3, 7)))
            .with_policy("p");
        assert_eq!(e.to_string(), "a.cedar:3:7: bad (policy `p`)");
    }
}
