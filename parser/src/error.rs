//! Parse errors with the span they refer to, and their rendering as `file:line:col` plus a caret.

use crate::shell::ShellError;
use crate::span::{LineIndex, Span};

/// What went wrong, in words a user understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    // ---- raw syntax (node parser) ----
    #[error("the Dockerfile has no instructions (it is empty or holds only comments)")]
    EmptyDockerfile,
    #[error("dockerfile line greater than max allowed size of 65535")]
    LineTooLong,
    #[error("unknown instruction: {name}{}", suggestion.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default())]
    UnknownInstruction {
        name: String,
        suggestion: Option<String>,
    },
    #[error("unterminated heredoc: no line `{name}` ends the here-document started here")]
    UnterminatedHeredoc { name: String },
    #[error("invalid heredoc: {0}")]
    InvalidHeredoc(String),
    #[error("invalid JSON form: {0}")]
    BadJson(String),
    #[error("{instruction} requires {what}")]
    MissingArguments { instruction: String, what: String },
    #[error("{instruction}: {reason}")]
    InvalidArguments { instruction: String, reason: String },
    #[error("ONBUILD cannot be chained: ONBUILD ONBUILD is not allowed")]
    ChainedOnbuild,
    #[error("{0} is not allowed as an ONBUILD trigger")]
    ForbiddenOnbuild(String),
    #[error("invalid parser directive: {0}")]
    InvalidDirective(String),

    // ---- typed instructions and flags ----
    #[error("unknown flag: --{flag} (valid flags for {instruction}: {valid})")]
    UnknownFlag {
        instruction: String,
        flag: String,
        valid: String,
    },
    #[error("flag --{flag} {reason}")]
    InvalidFlag { flag: String, reason: String },
    #[error("invalid --mount: {0}")]
    InvalidMount(String),
    #[error("no FROM instruction: {0}")]
    MissingFrom(String),
    #[error("{0}")]
    Shell(#[from] ShellError),
    #[error("{instruction} does not accept flags, but --{flag} was given (a leading `--word` is read as a flag; use the JSON form to pass it as an argument)")]
    FlagsNotAccepted { instruction: String, flag: String },
    #[error("invalid --device: {0}")]
    InvalidDevice(String),
    #[error("cannot expand {word:?}: {error}")]
    Expansion { word: String, error: ShellError },
}

/// A parse error and the source span it points at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct ParseError {
    pub kind: ParseErrorKind,
    pub span: Span,
}

impl ParseError {
    pub fn new(kind: ParseErrorKind, span: Span) -> Self {
        ParseError { kind, span }
    }

    /// Renders the error as a user sees it:
    ///
    /// ```text
    /// error: unknown instruction: RUNN (did you mean RUN?)
    ///  --> Dockerfile:3:1
    ///   |
    /// 3 | RUNN echo hi
    ///   | ^^^^
    /// ```
    pub fn render(&self, file_name: &str, src: &str) -> String {
        render_at(&self.kind.to_string(), self.span, file_name, src)
    }
}

/// Renders any message about `span` of `src` the way [`ParseError::render`] does (later pipeline
/// stages use it for their own errors about a Dockerfile location).
pub fn render_at(message: &str, span: Span, file_name: &str, src: &str) -> String {
    let index = LineIndex::new(src);
    let pos = index.position(src, span.start);
    let line_text = index.line_text(src, pos.line);
    let end_pos = index.position(src, span.end.max(span.start));
    let width = if end_pos.line == pos.line && end_pos.column > pos.column {
        end_pos.column - pos.column
    } else {
        line_text
            .chars()
            .count()
            .saturating_sub(pos.column - 1)
            .max(1)
    };
    let gutter = " ".repeat(pos.line.to_string().len());
    // Tabs before the caret keep their width so the caret lines up.
    let pad: String = line_text
        .chars()
        .take(pos.column - 1)
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    format!(
        "error: {}\n{gutter}--> {}:{}:{}\n{gutter} |\n{} | {}\n{gutter} | {}{}\n",
        message,
        file_name,
        pos.line,
        pos.column,
        pos.line,
        line_text,
        pad,
        "^".repeat(width)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_caret_under_span() {
        let src = "FROM scratch\nRUNN echo hi\n";
        let err = ParseError::new(
            ParseErrorKind::UnknownInstruction {
                name: "RUNN".into(),
                suggestion: Some("RUN".into()),
            },
            Span::new(13, 17),
        );
        let out = err.render("Dockerfile", src);
        assert_eq!(
            out,
            "error: unknown instruction: RUNN (did you mean RUN?)\n --> Dockerfile:2:1\n  |\n2 | RUNN echo hi\n  | ^^^^\n"
        );
    }
}
