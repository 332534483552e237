//! The raw syntax tree: one [`Node`] per instruction, as BuildKit's parser produces it before typing.

use crate::span::{Span, Spanned};

/// A here-document attached to a RUN, COPY or ADD instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word after quote removal (`<<'EOF'` → `EOF`).
    pub name: String,
    /// Digits written before `<<` (`3<<X` → 3), else 0.
    pub file_descriptor: u32,
    /// False when any part of the delimiter was quoted: the body is not expanded.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body when it is used.
    pub chomp: bool,
    /// Body lines with their newlines, terminator excluded (tabs kept even with `chomp`).
    pub content: String,
    /// Where the body and its terminator line are.
    pub span: Span,
}

impl Heredoc {
    /// The body as it is used: with `chomp`, leading tabs removed from every line.
    pub fn body(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        self.content
            .split_inclusive('\n')
            .map(|l| l.trim_start_matches('\t'))
            .collect()
    }
}

/// One instruction as written, before its arguments are typed.
///
/// `args` follow BuildKit's AST exactly (see `dump`): JSON elements for exec form, one string for
/// shell-form RUN/CMD/ENTRYPOINT/SHELL, whitespace-split words for FROM/COPY/ADD/VOLUME/EXPOSE,
/// `key, value, "="` triples for ENV and LABEL (values keep their quotes), quoted-aware words for ARG,
/// the first word then the command for HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The instruction keyword, lower-cased (`run`).
    pub keyword: String,
    pub keyword_span: Span,
    /// Leading `--name[=value]` words after quote removal, in order; a bare `--` ends them and is dropped.
    pub flags: Vec<Spanned<String>>,
    pub args: Vec<Spanned<String>>,
    /// The arguments were a JSON array (exec form).
    pub json: bool,
    /// The instruction an ONBUILD wraps.
    pub inner: Option<Box<Node>>,
    pub heredocs: Vec<Heredoc>,
    /// The logical line: continuations joined, comment lines inside dropped, keyword included.
    pub original: String,
    /// From the keyword to the end of the instruction (heredoc bodies included).
    pub span: Span,
    /// 1-based first and last physical line (heredoc bodies included).
    pub start_line: usize,
    pub end_line: usize,
}

/// A warning the parser found while reading (never fatal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub message: String,
    pub span: Span,
}

/// Parser directives from the top of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// `# syntax=` — recorded; rbuild always uses its own frontend.
    pub syntax: Option<Spanned<String>>,
    /// `# escape=` — `\` (default) or `` ` ``.
    pub escape: char,
    /// `# check=` — the build-check configuration string.
    pub check: Option<Spanned<String>>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            syntax: None,
            escape: '\\',
            check: None,
        }
    }
}

/// A whole Dockerfile in raw form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDockerfile {
    pub directives: Directives,
    pub nodes: Vec<Node>,
    pub warnings: Vec<Warning>,
}
