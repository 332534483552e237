//! Text → raw nodes: directives, continuations, comments, heredoc bodies, JSON vs shell form.
// SKELETON — being written.
use crate::{ParseError, RawDockerfile};

/// Parses a Dockerfile into raw nodes.
pub fn parse(_src: &str) -> Result<RawDockerfile, ParseError> {
    unimplemented!("skeleton")
}
