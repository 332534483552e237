//! The build context: which files of the context directory are sent to the build.
//!
//! This crate owns `.dockerignore` handling with Docker's semantics (moby/patternmatcher and
//! its `ignorefile` reader):
//!
//! * [`ignorefile`] finds and reads ignore files ([`read_patterns`], [`ignore_file_for`],
//!   [`load_ignore_patterns`]);
//! * [`matcher`] decides whether a context path is ignored ([`PatternMatcher`]), including the
//!   incremental form a directory walker uses ([`PatternMatcher::matches_using_parent_results`])
//!   and the "skip this whole directory" test ([`PatternMatcher::can_skip_dir`]);
//! * [`pattern`] compiles one pattern ([`Pattern`]).
//!
//! Paths given to the matcher are relative to the context root and `/`-separated on every
//! platform (Unix semantics: `\` in a pattern escapes the next character).

pub mod cleanpath;
pub mod error;
pub mod ignorefile;
pub mod matcher;
pub mod pattern;

pub use cleanpath::clean_path;
pub use error::ContextError;
pub use ignorefile::{
    ignore_file_for, load_ignore_patterns, read_patterns, IgnoreFile, DOCKERIGNORE_FILE_NAME,
    MAX_LINE_BYTES,
};
pub use matcher::{matches_legacy, MatchInfo, PatternMatcher};
pub use pattern::{Pattern, PatternKind};
