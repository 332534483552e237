//! BuildKit's shell-word lexer: quote removal, escapes, `$VAR`/`${VAR…}` expansion and word splitting.
// SKELETON — the shell helper replaces this file with the real implementation.

use std::collections::BTreeSet;

/// Where the lexer looks variables up.
pub trait EnvLookup {
    /// The value of `name`, or `None` when unset (an empty value is set).
    fn lookup(&self, name: &str) -> Option<&str>;
}

/// An environment given as `(name, value)` pairs; a later pair for the same name wins.
impl EnvLookup for [(String, String)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

impl EnvLookup for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

impl EnvLookup for std::collections::HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// An environment with no variables.
pub struct EmptyEnv;

impl EnvLookup for EmptyEnv {
    fn lookup(&self, _: &str) -> Option<&str> {
        None
    }
}

/// Why a word could not be processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(char),
    #[error("{0}")]
    Other(String),
}

/// The lexer, configured as BuildKit's `shell.Lex`.
#[derive(Debug, Clone)]
pub struct Lexer {
    pub escape: char,
    /// Keep quote characters in the output (BuildKit's `RawQuotes`).
    pub raw_quotes: bool,
    /// Leave `$VAR` of unset variables in place (BuildKit's `SkipUnsetEnv`).
    pub skip_unset_env: bool,
    /// Do not remove quotes or escapes at all (BuildKit's `SkipProcessQuotes`).
    pub skip_process_quotes: bool,
}

/// The result of processing one word, with the names of the variables it used.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expansion {
    pub value: String,
    /// Variables that were referenced and set.
    pub matched: BTreeSet<String>,
    /// Variables that were referenced but unset.
    pub unmatched: BTreeSet<String>,
}

impl Lexer {
    pub fn new(escape: char) -> Self {
        Lexer { escape, raw_quotes: false, skip_unset_env: false, skip_process_quotes: false }
    }

    pub fn process_word(&self, word: &str, env: &dyn EnvLookup) -> Result<String, ShellError> {
        self.process_word_with_matches(word, env).map(|e| e.value)
    }

    pub fn process_word_with_matches(&self, _word: &str, _env: &dyn EnvLookup) -> Result<Expansion, ShellError> {
        unimplemented!("skeleton")
    }

    pub fn process_words(&self, _word: &str, _env: &dyn EnvLookup) -> Result<Vec<String>, ShellError> {
        unimplemented!("skeleton")
    }
}
