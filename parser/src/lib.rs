//! The Dockerfile parser: parser directives, line continuations, heredocs, JSON and shell forms,
//! instruction flags, BuildKit's shell-word lexer, and a typed AST whose nodes carry source spans.
//!
//! Two layers: [`raw::parse`] turns text into [`node::Node`]s exactly as BuildKit's parser does
//! (its dump format lives in [`dump`]); [`instruction`] types those nodes into [`instruction::Instruction`]s.

pub mod dump;
pub mod error;
pub mod expand;
pub mod flags;
pub mod heredoc;
pub mod instruction;
pub mod mount;
pub mod node;
pub mod raw;
pub mod shell;
pub mod span;

pub use error::{ParseError, ParseErrorKind};
pub use node::{Heredoc, Node, RawDockerfile};
pub use span::{LineIndex, Position, Span, Spanned};
