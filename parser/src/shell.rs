//! BuildKit's shell-word lexer: quote removal, escapes, `$VAR`/`${VAR…}` expansion and word splitting.
//!
//! This follows the behaviour of BuildKit's `frontend/dockerfile/shell` package (Dockerfile
//! syntax 1.x), including its quirks:
//!
//! * Outside quotes the escape character (`\` or a backtick) escapes any following character; an
//!   escape at the very end of the input is dropped.
//! * Inside single quotes everything is literal. Inside double quotes `$` expansions happen and the
//!   escape character only escapes `"`, `$` and itself; before any other character it is kept.
//! * `$NAME`, `${NAME}` and the modifiers `:-` `-` `:+` `+` `:?` `?` `#` `##` `%` `%%` `/` `//`.
//!   The word after a modifier is itself processed (quotes, escapes, nested expansions). Positional
//!   (`$1`, `${10}`) and special parameters (`$@ $* $# $? $- $$ $! $0`) are never set.
//! * Patterns of `#`, `%` and `/` are shell globs with `*`, `?` and `\`-escapes (`\*`, `\?`, `\\`;
//!   `\}` and `\/` stand for `}` and `/`). Like BuildKit there are no bracket expressions (`[` is a
//!   literal), and `*`/`?` do not match a newline.
//! * Word splitting ([`Lexer::process_words`]) splits the results of unquoted expansions and
//!   unquoted literal whitespace; quoted text is never split.
//!
//! Unlike BuildKit the lexer bounds its resource use so that hostile input cannot exhaust the
//! stack, memory or time: `${…}` may nest at most [`MAX_NESTING`] levels, the bytes produced while
//! processing one word are limited (see [`ShellError::TooLarge`]), and so is the work spent on
//! pattern matching (see [`ShellError::TooComplex`]). Pattern matching uses an automaton
//! simulation, never backtracking, so its cost is at most proportional to
//! `pattern length × value length` per match.

use std::collections::BTreeSet;

/// How deeply `${…}` substitutions may nest inside each other.
pub const MAX_NESTING: usize = 64;

/// Bytes that processing one word may produce in total (all intermediate strings included),
/// on top of [`OUTPUT_BUDGET_PER_INPUT_BYTE`] per byte of input.
const BASE_OUTPUT_BUDGET: usize = 4 << 20;
const OUTPUT_BUDGET_PER_INPUT_BYTE: usize = 64;

/// Automaton steps (state × character) that pattern matching may take for one word.
const MATCH_STEP_BUDGET: u64 = 1 << 24;

/// Where the lexer looks variables up.
pub trait EnvLookup {
    /// The value of `name`, or `None` when unset (an empty value is set).
    fn lookup(&self, name: &str) -> Option<&str>;
}

/// An environment given as `(name, value)` pairs; a later pair for the same name wins.
impl EnvLookup for [(String, String)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
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

/// Why a word could not be processed. The messages follow BuildKit's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    /// A quote was opened and never closed; the field is the quote character (`'` or `"`).
    #[error("unexpected end of statement while looking for matching {}", quote_name(*.0))]
    Unterminated(char),
    /// `${` without its closing `}`.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${NAME/pattern` without the `/` that ends the pattern.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// `${}`, `${:…}`, `${{…}` and the like.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// `${NAME` followed by something that is not a supported modifier (`${NAME:=x}`, `${NAME.}`).
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// A `${NAME?message}` / `${NAME:?message}` check failed. `message` is the processed word, or
    /// `is not allowed to be unset` / `is not allowed to be empty` when that word is empty.
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    /// The pattern of `#`, `%` or `/` is not a valid glob (a `\` before an ordinary character,
    /// or at the end).
    #[error("invalid pattern ({pattern}) in substitution: {reason}")]
    InvalidPattern { pattern: String, reason: String },
    /// `${…}` nested more than [`MAX_NESTING`] levels deep.
    #[error("variable substitutions are nested too deeply (more than {max} levels)", max = MAX_NESTING)]
    TooDeep,
    /// Expanding the word would produce more than the given number of bytes.
    #[error("variable expansion produces too much data (more than {0} bytes)")]
    TooLarge(usize),
    /// Pattern matching in `#`, `%` or `/` substitutions needs too much work.
    #[error("pattern matching in variable substitutions needs too much work")]
    TooComplex,
    /// Any other problem.
    #[error("{0}")]
    Other(String),
}

fn quote_name(quote: char) -> &'static str {
    match quote {
        '\'' => "single-quote",
        '"' => "double-quote",
        '}' => "}",
        '/' => "/",
        _ => "quote",
    }
}

/// The lexer, configured as BuildKit's `shell.Lex`.
#[derive(Debug, Clone)]
pub struct Lexer {
    pub escape: char,
    /// Keep quote characters in the output (BuildKit's `RawQuotes`). Quotes still group text.
    pub raw_quotes: bool,
    /// Leave references to unset variables in place (BuildKit's `SkipUnsetEnv`): `$FOO`,
    /// `${FOO}`, `${FOO:-word}` (with `word` processed) stay in the output.
    pub skip_unset_env: bool,
    /// Treat `'` and `"` as ordinary characters (BuildKit's `SkipProcessQuotes`, used for heredoc
    /// bodies). As in BuildKit, escapes are still processed (`\$` gives `$`, `\\` gives `\`).
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
        Lexer {
            escape,
            raw_quotes: false,
            skip_unset_env: false,
            skip_process_quotes: false,
        }
    }

    /// Processes `word` as one word: quote removal, escapes and variable expansion, no splitting.
    pub fn process_word(&self, word: &str, env: &dyn EnvLookup) -> Result<String, ShellError> {
        self.process_word_with_matches(word, env).map(|e| e.value)
    }

    /// Like [`Lexer::process_word`], also reporting which variables were referenced.
    pub fn process_word_with_matches(
        &self,
        word: &str,
        env: &dyn EnvLookup,
    ) -> Result<Expansion, ShellError> {
        let mut sw = ShellWord::new(self, word, env);
        let (value, _) = sw.process_stop_on(None, false, false)?;
        Ok(Expansion {
            value,
            matched: sw.matched,
            unmatched: sw.unmatched,
        })
    }

    /// Processes `word` and splits the result into words: whitespace outside quotes and
    /// whitespace produced by unquoted expansions separates words; quoted text is never split.
    /// Words that end up empty are dropped (so `""` alone yields no word, as in BuildKit).
    pub fn process_words(
        &self,
        word: &str,
        env: &dyn EnvLookup,
    ) -> Result<Vec<String>, ShellError> {
        let mut sw = ShellWord::new(self, word, env);
        let (_, words) = sw.process_stop_on(None, false, true)?;
        Ok(words)
    }
}

/// Accumulates the field-split words of one (top-level) word. Disabled when not splitting.
struct Words {
    enabled: bool,
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn new(enabled: bool) -> Self {
        Words {
            enabled,
            word: String::new(),
            words: Vec::new(),
            in_word: false,
        }
    }

    /// An unquoted, unescaped character: whitespace ends the current word.
    fn add_char(&mut self, ch: char) {
        if !self.enabled {
            return;
        }
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    /// A character that is part of the word whatever it is (escaped).
    fn add_raw_char(&mut self, ch: char) {
        if self.enabled {
            self.word.push(ch);
            self.in_word = true;
        }
    }

    /// The result of an unquoted expansion: split like unquoted text.
    fn add_string(&mut self, s: &str) {
        if self.enabled {
            s.chars().for_each(|c| self.add_char(c));
        }
    }

    /// The content of a quoted string: never split.
    fn add_raw_string(&mut self, s: &str) {
        if self.enabled {
            self.word.push_str(s);
            self.in_word = true;
        }
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

/// The state of processing one word.
struct ShellWord<'a> {
    lexer: &'a Lexer,
    env: &'a dyn EnvLookup,
    chars: Vec<char>,
    pos: usize,
    depth: usize,
    budget_limit: usize,
    budget: usize,
    steps: u64,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

impl<'a> ShellWord<'a> {
    fn new(lexer: &'a Lexer, word: &str, env: &'a dyn EnvLookup) -> Self {
        let budget = BASE_OUTPUT_BUDGET
            .saturating_add(word.len().saturating_mul(OUTPUT_BUDGET_PER_INPUT_BYTE));
        ShellWord {
            lexer,
            env,
            chars: word.chars().collect(),
            pos: 0,
            depth: 0,
            budget_limit: budget,
            budget,
            steps: MATCH_STEP_BUDGET,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn at_eof(&self) -> bool {
        self.pos >= self.chars.len()
    }

    /// Accounts for `n` more bytes of output.
    fn charge(&mut self, n: usize) -> Result<(), ShellError> {
        match self.budget.checked_sub(n) {
            Some(rest) => {
                self.budget = rest;
                Ok(())
            }
            None => Err(ShellError::TooLarge(self.budget_limit)),
        }
    }

    fn push_char(&mut self, out: &mut String, c: char) -> Result<(), ShellError> {
        self.charge(c.len_utf8())?;
        out.push(c);
        Ok(())
    }

    fn push_str(&mut self, out: &mut String, s: &str) -> Result<(), ShellError> {
        self.charge(s.len())?;
        out.push_str(s);
        Ok(())
    }

    fn owned(&mut self, s: &str) -> Result<String, ShellError> {
        self.charge(s.len())?;
        Ok(s.to_owned())
    }

    /// Processes characters until `stop` (consumed) or the end of input. With `raw_escapes` the
    /// escape character is kept in the output (it still protects the next character). With
    /// `split` the field-split words are collected too.
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
        split: bool,
    ) -> Result<(String, Vec<String>), ShellError> {
        let mut result = String::new();
        let mut words = Words::new(split);
        let process_quotes = !self.lexer.skip_process_quotes;

        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            if ch == '$' {
                let expanded = self.process_dollar()?;
                self.push_str(&mut result, &expanded)?;
                words.add_string(&expanded);
                continue;
            }
            if process_quotes && (ch == '\'' || ch == '"') {
                let quoted = if ch == '\'' {
                    self.process_single_quote()?
                } else {
                    self.process_double_quote(raw_escapes)?
                };
                self.push_str(&mut result, &quoted)?;
                words.add_raw_string(&quoted);
                continue;
            }
            self.pos += 1;
            if ch == self.lexer.escape {
                if raw_escapes {
                    words.add_raw_char(ch);
                    self.push_char(&mut result, ch)?;
                }
                match self.next() {
                    // A lone escape at the end is dropped (kept above when raw).
                    None => break,
                    Some(escaped) => {
                        words.add_raw_char(escaped);
                        self.push_char(&mut result, escaped)?;
                    }
                }
            } else {
                words.add_char(ch);
                self.push_char(&mut result, ch)?;
            }
        }

        match stop {
            None => Ok((result, words.finish())),
            Some('/') => Err(ShellError::MissingSlash),
            Some(_) => Err(ShellError::MissingBrace),
        }
    }

    /// `'…'`: everything literal up to the next `'`.
    fn process_single_quote(&mut self) -> Result<String, ShellError> {
        let raw = self.lexer.raw_quotes;
        let mut result = String::new();
        self.pos += 1; // the opening quote
        if raw {
            self.push_char(&mut result, '\'')?;
        }
        loop {
            match self.next() {
                None => return Err(ShellError::Unterminated('\'')),
                Some('\'') => {
                    if raw {
                        self.push_char(&mut result, '\'')?;
                    }
                    return Ok(result);
                }
                Some(c) => self.push_char(&mut result, c)?,
            }
        }
    }

    /// `"…"`: `$` expands; the escape character escapes only `"`, `$` and itself.
    fn process_double_quote(&mut self, raw_escapes: bool) -> Result<String, ShellError> {
        let raw = self.lexer.raw_quotes;
        let escape = self.lexer.escape;
        let mut result = String::new();
        self.pos += 1; // the opening quote
        if raw {
            self.push_char(&mut result, '"')?;
        }
        loop {
            match self.peek() {
                None => return Err(ShellError::Unterminated('"')),
                Some('"') => {
                    self.pos += 1;
                    if raw {
                        self.push_char(&mut result, '"')?;
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let expanded = self.process_dollar()?;
                    self.push_str(&mut result, &expanded)?;
                }
                Some(ch) => {
                    self.pos += 1;
                    let mut out = ch;
                    if ch == escape {
                        if raw_escapes {
                            self.push_char(&mut result, ch)?;
                        }
                        match self.peek() {
                            // The next round reports the missing closing quote.
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == escape => {
                                self.pos += 1;
                                out = next;
                            }
                            // Any other escape stays literal.
                            Some(_) => {}
                        }
                    }
                    self.push_char(&mut result, out)?;
                }
            }
        }
    }

    /// Looks `name` up and records it as matched or unmatched.
    fn get_env(&mut self, name: &str) -> Option<&'a str> {
        let env: &'a dyn EnvLookup = self.env;
        let value = env.lookup(name);
        let set = if value.is_some() {
            &mut self.matched
        } else {
            &mut self.unmatched
        };
        if !set.contains(name) {
            set.insert(name.to_owned());
        }
        value
    }

    /// `$NAME` or `${…}`; the scanner is at the `$`.
    fn process_dollar(&mut self) -> Result<String, ShellError> {
        self.pos += 1; // '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return match self.get_env(&name) {
                Some(value) => self.owned(value),
                None if self.lexer.skip_unset_env => self.owned(&format!("${name}")),
                None => Ok(String::new()),
            };
        }

        self.pos += 1; // '{'
        match self.peek() {
            None => return Err(ShellError::MissingBrace),
            Some('{' | '}' | ':') => return Err(ShellError::BadSubstitution),
            Some(_) => {}
        }
        if self.depth >= MAX_NESTING {
            return Err(ShellError::TooDeep);
        }
        self.depth += 1;
        let result = self.process_braced();
        self.depth -= 1;
        result
    }

    /// Processes the word of a modifier up to `stop`, turning failures at the end of input into
    /// the "missing `}`/`/`" errors as BuildKit does.
    fn process_modifier_word(
        &mut self,
        stop: char,
        raw_escapes: bool,
    ) -> Result<String, ShellError> {
        match self.process_stop_on(Some(stop), raw_escapes, false) {
            Ok((word, _)) => Ok(word),
            Err(e @ (ShellError::TooDeep | ShellError::TooLarge(_) | ShellError::TooComplex)) => {
                Err(e)
            }
            Err(_) if self.at_eof() && stop == '/' => Err(ShellError::MissingSlash),
            Err(_) if self.at_eof() => Err(ShellError::MissingBrace),
            Err(e) => Err(e),
        }
    }

    /// The inside of `${…}`, after the `{`.
    fn process_braced(&mut self) -> Result<String, ShellError> {
        let name = self.process_name();
        let Some(ch) = self.next() else {
            return Err(ShellError::MissingBrace);
        };
        let skip_unset = self.lexer.skip_unset_env;

        match ch {
            '}' => match self.get_env(&name) {
                Some(value) => self.owned(value),
                None if skip_unset => self.owned(&format!("${{{name}}}")),
                None => Ok(String::new()),
            },
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let mut modifier = String::from(ch);
                let mut op = ch;
                let null_is_unset = ch == ':';
                if null_is_unset {
                    match self.next() {
                        Some(c) => {
                            modifier.push(c);
                            op = c;
                        }
                        None => return Err(ShellError::MissingBrace),
                    }
                }
                let raw_escapes = op == '#' || op == '%';
                let word = self.process_modifier_word('}', raw_escapes)?;

                let value = self.get_env(&name);
                if value.is_none() && skip_unset {
                    return self.owned(&format!("${{{name}{modifier}{word}}}"));
                }
                let unset_or_null = match value {
                    None => true,
                    Some(v) => null_is_unset && v.is_empty(),
                };

                match op {
                    '-' => match value {
                        Some(v) if !unset_or_null => self.owned(v),
                        _ => Ok(word),
                    },
                    '+' => Ok(if unset_or_null { String::new() } else { word }),
                    '?' => match value {
                        Some(v) if !unset_or_null => self.owned(v),
                        _ => {
                            let message = if !word.is_empty() {
                                word
                            } else if value.is_none() {
                                "is not allowed to be unset".to_owned()
                            } else {
                                "is not allowed to be empty".to_owned()
                            };
                            Err(ShellError::Required { name, message })
                        }
                    },
                    '#' | '%' => {
                        // `##`/`%%` remove the longest match, `#`/`%` the shortest.
                        let (longest, pattern) = match word.strip_prefix(op) {
                            Some(rest) => (true, rest),
                            None => (false, word.as_str()),
                        };
                        let tokens = compile_pattern(pattern)?;
                        let value = value.unwrap_or("");
                        if op == '#' {
                            self.trim_prefix(&tokens, value, longest)
                        } else {
                            self.trim_suffix(&tokens, value, longest)
                        }
                    }
                    _ => Err(ShellError::UnsupportedModifier(modifier)),
                }
            }
            '/' => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.pos += 1;
                }
                let pattern = self.process_modifier_word('/', true)?;
                let replacement = self.process_modifier_word('}', true)?;

                let value = self.get_env(&name);
                if value.is_none() && skip_unset {
                    let slashes = if replace_all { "//" } else { "/" };
                    return self.owned(&format!("${{{name}{slashes}{pattern}/{replacement}}}"));
                }
                let tokens = compile_pattern(&pattern)?;
                self.replace(&tokens, value.unwrap_or(""), &replacement, replace_all)
            }
            other => Err(ShellError::UnsupportedModifier(other.to_string())),
        }
    }

    /// A variable name: letters, digits and `_`; or a run of digits (positional parameter); or
    /// one special-parameter character. Empty when none of these follows.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_digit(ch) {
                while let Some(d) = self.peek().filter(|&c| is_digit(c)) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.pos += 1;
                name.push(ch);
                return name;
            }
            if !is_letter(ch) && !is_digit(ch) && ch != '_' {
                break;
            }
            self.pos += 1;
            name.push(ch);
        }
        name
    }

    fn take_steps(&mut self, n: usize) -> Result<(), ShellError> {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        match self.steps.checked_sub(n) {
            Some(rest) => {
                self.steps = rest;
                Ok(())
            }
            None => Err(ShellError::TooComplex),
        }
    }

    /// `${NAME#pattern}` / `${NAME##pattern}`.
    fn trim_prefix(
        &mut self,
        tokens: &[Tok],
        value: &str,
        longest: bool,
    ) -> Result<String, ShellError> {
        let chars: Vec<char> = value.chars().collect();
        match self.anchored_match(tokens, &chars, longest)? {
            Some(end) => {
                let rest: String = chars[end..].iter().collect();
                self.owned(&rest)
            }
            None => self.owned(value),
        }
    }

    /// `${NAME%pattern}` / `${NAME%%pattern}`: matches the reversed pattern against the reversed
    /// value from its start.
    fn trim_suffix(
        &mut self,
        tokens: &[Tok],
        value: &str,
        longest: bool,
    ) -> Result<String, ShellError> {
        let reversed_tokens: Vec<Tok> = tokens.iter().rev().copied().collect();
        let reversed: Vec<char> = value.chars().rev().collect();
        match self.anchored_match(&reversed_tokens, &reversed, longest)? {
            Some(len) => {
                let keep = reversed.len() - len;
                let rest: String = value.chars().take(keep).collect();
                self.owned(&rest)
            }
            None => self.owned(value),
        }
    }

    /// The end of the shortest (or longest) match of `tokens` at the start of `text`.
    fn anchored_match(
        &mut self,
        tokens: &[Tok],
        text: &[char],
        longest: bool,
    ) -> Result<Option<usize>, ShellError> {
        let m = tokens.len();
        let mut cur = vec![false; m + 1];
        let mut next = vec![false; m + 1];
        cur[0] = true;
        close(tokens, &mut cur);
        let mut best = None;
        if cur[m] {
            best = Some(0);
            if !longest {
                return Ok(best);
            }
        }
        for (i, &c) in text.iter().enumerate() {
            self.take_steps(m + 1)?;
            next.iter_mut().for_each(|s| *s = false);
            for (state, tok) in tokens.iter().enumerate() {
                if cur[state] {
                    if let Some(target) = tok.step(state, c) {
                        next[target] = true;
                    }
                }
            }
            close(tokens, &mut next);
            std::mem::swap(&mut cur, &mut next);
            if cur[m] {
                best = Some(i + 1);
                if !longest {
                    return Ok(best);
                }
            }
            if !cur.iter().any(|&s| s) {
                break;
            }
        }
        Ok(best)
    }

    /// The leftmost match of `tokens` in `text` starting at or after `from`, and the longest one
    /// among those starting there, as `(start, end)`. This equals the leftmost-first match of
    /// the greedy regular expression BuildKit builds from the glob.
    fn find_match(
        &mut self,
        tokens: &[Tok],
        text: &[char],
        from: usize,
    ) -> Result<Option<(usize, usize)>, ShellError> {
        let m = tokens.len();
        // For each automaton state, the earliest start of a thread in it.
        let mut cur: Vec<Option<usize>> = vec![None; m + 1];
        let mut next: Vec<Option<usize>> = vec![None; m + 1];
        let mut best: Option<(usize, usize)> = None;
        let mut pos = from;
        loop {
            self.take_steps(m + 1)?;
            if best.is_none() && cur[0].is_none() {
                cur[0] = Some(pos);
            }
            close_min(tokens, &mut cur);
            if let Some(start) = cur[m] {
                let better = match best {
                    None => true,
                    Some((best_start, best_end)) => {
                        start < best_start || (start == best_start && pos > best_end)
                    }
                };
                if better {
                    best = Some((start, pos));
                }
            }
            if let Some((best_start, _)) = best {
                // Threads that started later can only give a match further right.
                cur.iter_mut()
                    .filter(|s| s.is_some_and(|s| s > best_start))
                    .for_each(|s| *s = None);
                if cur.iter().all(Option::is_none) {
                    break;
                }
            }
            let Some(&c) = text.get(pos) else {
                break;
            };
            next.iter_mut().for_each(|s| *s = None);
            for (state, tok) in tokens.iter().enumerate() {
                if let Some(start) = cur[state] {
                    if let Some(target) = tok.step(state, c) {
                        next[target] = Some(next[target].map_or(start, |s| s.min(start)));
                    }
                }
            }
            std::mem::swap(&mut cur, &mut next);
            pos += 1;
        }
        Ok(best)
    }

    /// `${NAME/pattern/replacement}` and `${NAME//pattern/replacement}`. The replacement is
    /// literal. Replacing all follows Go's `ReplaceAllString`: after a match the search resumes at
    /// its end, and an empty match right after a previous match is not replaced.
    fn replace(
        &mut self,
        tokens: &[Tok],
        value: &str,
        replacement: &str,
        all: bool,
    ) -> Result<String, ShellError> {
        let text: Vec<char> = value.chars().collect();
        let mut out = String::new();
        let mut last_end = 0;
        let mut search = 0;
        while search <= text.len() {
            let Some((start, end)) = self.find_match(tokens, &text, search)? else {
                break;
            };
            let before: String = text[last_end..start].iter().collect();
            self.push_str(&mut out, &before)?;
            if end > last_end || start == 0 {
                self.push_str(&mut out, replacement)?;
            }
            last_end = end;
            if !all {
                break;
            }
            search = if end > search { end } else { search + 1 };
        }
        let rest: String = text[last_end..].iter().collect();
        self.push_str(&mut out, &rest)?;
        Ok(out)
    }
}

/// One element of a compiled glob pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    /// This exact character.
    Lit(char),
    /// `?`: any one character except a newline.
    Any,
    /// `*`: any run of characters without a newline.
    Star,
}

impl Tok {
    /// The state reached from `state` (whose token is `self`) by reading `c`.
    fn step(self, state: usize, c: char) -> Option<usize> {
        match self {
            Tok::Lit(l) if l == c => Some(state + 1),
            Tok::Any if c != '\n' => Some(state + 1),
            Tok::Star if c != '\n' => Some(state),
            _ => None,
        }
    }
}

/// Adds the states reachable without reading: past a `*`, which may match nothing.
fn close(tokens: &[Tok], active: &mut [bool]) {
    for (state, tok) in tokens.iter().enumerate() {
        if *tok == Tok::Star && active[state] {
            active[state + 1] = true;
        }
    }
}

/// Like [`close`], keeping the earliest start for each state.
fn close_min(tokens: &[Tok], starts: &mut [Option<usize>]) {
    for (state, tok) in tokens.iter().enumerate() {
        if *tok == Tok::Star {
            if let Some(start) = starts[state] {
                starts[state + 1] = Some(starts[state + 1].map_or(start, |s| s.min(start)));
            }
        }
    }
}

/// Compiles a glob as BuildKit does: `*`, `?`, and `\` escaping `*`, `?` or `\`; a `\` before
/// `}` or `/` is dropped; every other character (including `[`) is literal.
fn compile_pattern(pattern: &str) -> Result<Vec<Tok>, ShellError> {
    let invalid = |reason: String| ShellError::InvalidPattern {
        pattern: pattern.to_owned(),
        reason,
    };
    let mut tokens = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                if tokens.last() != Some(&Tok::Star) {
                    tokens.push(Tok::Star);
                }
            }
            '?' => tokens.push(Tok::Any),
            '\\' => match chars.peek() {
                Some('}' | '/') => {}
                Some(&e @ ('*' | '?' | '\\')) => {
                    chars.next();
                    tokens.push(Tok::Lit(e));
                }
                Some(&e) => return Err(invalid(format!("invalid escape '\\{e}'"))),
                None => {
                    return Err(invalid(
                        "invalid escape at the end of the pattern".to_owned(),
                    ))
                }
            },
            other => tokens.push(Tok::Lit(other)),
        }
    }
    Ok(tokens)
}

/// A character that starts a positional parameter (Go's `unicode.IsDigit`, approximated).
fn is_digit(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_digit()
    } else {
        c.is_numeric() && !c.is_alphabetic()
    }
}

/// A letter of a variable name (Go's `unicode.IsLetter`, approximated).
fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphabetic()
    } else {
        c.is_alphabetic()
    }
}

/// POSIX special parameters; they are never set in a Dockerfile.
fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a case expects: a value, an error with exactly this message, or any error.
    #[derive(Debug, Clone, Copy)]
    enum Want {
        Value(&'static str),
        Error(&'static str),
        AnyError,
    }
    use Want::{AnyError, Error, Value};

    type Env = &'static [(&'static str, &'static str)];

    fn env(pairs: Env) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Runs every case through `process_word` and reports all failures at once.
    fn check(lexer: &Lexer, cases: &[(&str, Env, Want)]) {
        let mut failures = Vec::new();
        for (input, pairs, want) in cases {
            let got = lexer.process_word(input, &env(pairs));
            let ok = match (want, &got) {
                (Value(v), Ok(g)) => v == g,
                (Error(m), Err(e)) => e.to_string() == *m,
                (AnyError, Err(_)) => true,
                _ => false,
            };
            if !ok {
                failures.push(format!(
                    "{input:?} (env {pairs:?}): want {want:?}, got {got:?}"
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases fail:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }

    const XXYY: Env = &[("FOO", "xxyy")];
    const PATH: Env = &[("F", "/usr/local/lib/libfoo.so.1.2")];
    const MULTILINE: Env = &[("ML", "ab\ncd")];

    #[test]
    fn pattern_removal() {
        let cases: &[(&str, Env, Want)] = &[
            ("${FOO#x}", XXYY, Value("xyy")),
            ("${FOO##x}", XXYY, Value("xyy")),
            ("${FOO#*x}", XXYY, Value("xyy")),
            ("${FOO##*x}", XXYY, Value("yy")),
            ("${FOO#*}", XXYY, Value("xxyy")),
            ("${FOO##*}", XXYY, Value("")),
            ("${FOO#*x*y}", XXYY, Value("y")),
            ("${FOO##*x*y}", XXYY, Value("")),
            ("${FOO#?}", XXYY, Value("xyy")),
            ("${FOO##??}", XXYY, Value("yy")),
            ("${FOO#y}", XXYY, Value("xxyy")),
            ("${FOO#}", XXYY, Value("xxyy")),
            ("${FOO##}", XXYY, Value("xxyy")),
            ("${FOO%y}", XXYY, Value("xxy")),
            ("${FOO%%y}", XXYY, Value("xxy")),
            ("${FOO%y*}", XXYY, Value("xxy")),
            ("${FOO%%y*}", XXYY, Value("xx")),
            ("${FOO%*y}", XXYY, Value("xxy")),
            ("${FOO%%*y}", XXYY, Value("")),
            ("${FOO%x}", XXYY, Value("xxyy")),
            ("${FOO%}", XXYY, Value("xxyy")),
            ("${FOO%%}", XXYY, Value("xxyy")),
            ("${FOO%??}", XXYY, Value("xx")),
            ("${F##*/}", PATH, Value("libfoo.so.1.2")),
            ("${F#*/}", PATH, Value("usr/local/lib/libfoo.so.1.2")),
            ("${F%/*}", PATH, Value("/usr/local/lib")),
            ("${F%%/*}", PATH, Value("")),
            ("${F%.*}", PATH, Value("/usr/local/lib/libfoo.so.1")),
            ("${F%%.*}", PATH, Value("/usr/local/lib/libfoo")),
            ("${F#*.}", PATH, Value("so.1.2")),
            ("${F##*.}", PATH, Value("2")),
            // Escapes in patterns: `\*`, `\?`, `\\` are literal; `\}` stands for `}`.
            ("${FOO#?\\?}", &[("FOO", "???y")], Value("?y")),
            ("${FOO%%\\**}", &[("FOO", "xx**")], Value("xx")),
            ("${FOO%%\\**\\*}", &[("FOO", "a***yy*")], Value("a")),
            (
                "${FOO#()[]{\\}^$.\\*\\?|\\\\}",
                &[("FOO", "()[]{}^$.*?|\\x")],
                Value("x"),
            ),
            // No bracket expressions, as in BuildKit: `[` is literal.
            ("${FOO#[a]}", &[("FOO", "[a]b")], Value("b")),
            ("${FOO#[ab]}", &[("FOO", "ab")], Value("ab")),
            // The pattern is the processed word: variables and quotes work, globs stay active.
            (
                "${FOO#$BAR}",
                &[("FOO", "xxyy"), ("BAR", "x")],
                Value("xyy"),
            ),
            (
                "${FOO#$BAR}",
                &[("FOO", "xxyy"), ("BAR", "")],
                Value("xxyy"),
            ),
            (
                "${FOO%%$BAR}",
                &[("FOO", "xxyy"), ("BAR", "")],
                Value("xxyy"),
            ),
            ("${FOO##\"*\"}", XXYY, Value("")),
            ("${FOO#x\"x y\"}", &[("FOO", "xx yz")], Value("z")),
            // Inside quotes in a pattern a lone `\` is kept doubled, so it matches itself.
            ("${FOO#\"a\\b\"}", &[("FOO", "a\\bc")], Value("c")),
            ("${K#한}", &[("K", "한국어")], Value("국어")),
            ("${K%?}", &[("K", "한국어")], Value("한국")),
            // Like Go's regexp `.`, `*` and `?` do not match a newline.
            ("${ML##*}", MULTILINE, Value("\ncd")),
            ("${ML%%*}", MULTILINE, Value("ab\n")),
            ("${ML#??}", MULTILINE, Value("\ncd")),
            ("${ML#???}", MULTILINE, Value("ab\ncd")),
            ("${UNSET#x}", &[], Value("")),
            ("${UNSET%%*}", &[], Value("")),
            ("${ABC:-.}${FOO%x}${ABC:-.}", XXYY, Value(".xxyy.")),
            // Invalid patterns.
            (
                "${FOO#\\a}",
                XXYY,
                Error("invalid pattern (\\a) in substitution: invalid escape '\\a'"),
            ),
            ("${FOO%$P}", &[("FOO", "x"), ("P", "a\\")], AnyError),
            ("${FOO#x", XXYY, Error("syntax error: missing '}'")),
        ];
        check(&Lexer::new('\\'), cases);
    }

    #[test]
    fn pattern_substitution() {
        const NEEDLE_STAR: Env = &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", "\\*/")];
        const NEEDLE_TMP: Env = &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")];
        const NEEDLE_ANY: Env = &[
            ("FOO", "/a/foo/b/c.txt"),
            ("NEEDLE", "/?/"),
            ("REPLACEMENT", "/"),
        ];
        const URL: Env = &[
            ("FOO", "http://google.de"),
            ("NEEDLE", "http://"),
            ("REPLACEMENT", "https://"),
        ];
        let cases: &[(&str, Env, Want)] = &[
            ("${FOO/x/Z}", XXYY, Value("Zxyy")),
            ("${FOO//x/Z}", XXYY, Value("ZZyy")),
            ("${FOO/y/Z}", XXYY, Value("xxZy")),
            ("${FOO/y*/Z}", XXYY, Value("xxZ")),
            ("${FOO/x*y/Z}", XXYY, Value("Z")),
            ("${FOO//x?/Z}", XXYY, Value("Zyy")),
            ("${FOO//?/.}", XXYY, Value("....")),
            ("${FOO/q/Z}", XXYY, Value("xxyy")),
            ("${FOO/x/}", XXYY, Value("xyy")),
            ("${FOO/x/a b}", XXYY, Value("a bxyy")),
            ("${FOO/x/\"a b\"}", XXYY, Value("a bxyy")),
            // `*` matches as much as it can; empty matches follow Go's ReplaceAllString.
            ("${FOO//*/Z}", XXYY, Value("Z")),
            ("${FOO///-}", XXYY, Value("-x-x-y-y-")),
            (
                "${FOO/$BAR/ww}",
                &[("FOO", "xxyy"), ("BAR", "")],
                Value("wwxxyy"),
            ),
            ("${FOO///}", XXYY, Value("xxyy")),
            ("${FOO///}", &[], Value("")),
            ("${ML//*/Z}", MULTILINE, Value("Z\nZ")),
            (
                "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
                NEEDLE_STAR,
                Value("/foo.*/*.txt - /foo..*.txt"),
            ),
            (
                "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
                NEEDLE_TMP,
                Value("/tmp/bar.txt - /bar.txt"),
            ),
            (
                "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
                NEEDLE_ANY,
                Value("/foo/b/c.txt - /foo/c.txt"),
            ),
            (
                "${FOO/$NEEDLE/$REPLACEMENT}",
                URL,
                Value("https://google.de"),
            ),
            // `\/` separates nothing; in the pattern it is `/`, the replacement keeps the escape.
            (
                "${FOO//\\//\\/}",
                &[("FOO", "/tmp/foo.txt")],
                Value("\\/tmp\\/foo.txt"),
            ),
            ("${FOO/\\}/x}", &[("FOO", "a}b")], Value("axb")),
            ("${UNSET/a/b}", &[], Value("")),
            (
                "${FOO//ww}",
                XXYY,
                Error("syntax error: missing '/' in ${}"),
            ),
            ("${FOO//}", XXYY, Error("syntax error: missing '/' in ${}")),
            ("${FOO/a/b", XXYY, Error("syntax error: missing '}'")),
            (
                "${FOO/\\q/b}",
                XXYY,
                Error("invalid pattern (\\q) in substitution: invalid escape '\\q'"),
            ),
        ];
        check(&Lexer::new('\\'), cases);
    }

    const PWD: Env = &[("PWD", "/home"), ("NULL", "")];

    #[test]
    fn backtick_escape() {
        let cases: &[(&str, Env, Want)] = &[
            ("he`$PWD", PWD, Value("he$PWD")),
            ("he$PWD", PWD, Value("he/home")),
            ("a\\b", PWD, Value("a\\b")),
            ("a`\\b", PWD, Value("a\\b")),
            ("a``b", PWD, Value("a`b")),
            ("a` b", PWD, Value("a b")),
            ("trail`", PWD, Value("trail")),
            ("'a`b'", PWD, Value("a`b")),
            ("`'x`'", PWD, Value("'x'")),
            ("\"a`\"b\"", PWD, Value("a\"b")),
            ("\"a`b\"", PWD, Value("a`b")),
            ("\"a``b\"", PWD, Value("a`b")),
            ("\"`$PWD\"", PWD, Value("$PWD")),
            ("\"a\\\"", PWD, Value("a\\")),
            (
                "\"a`\"",
                PWD,
                Error("unexpected end of statement while looking for matching double-quote"),
            ),
            ("${X:-`}}", PWD, Value("}")),
            // Patterns always use `\` as their escape, whatever the lexer's escape character.
            ("${PWD#`/}", PWD, Value("/home")),
            ("${X#`*}", &[("X", "`*abc")], Value("*abc")),
            ("${X#\\*}", &[("X", "*abc")], Value("abc")),
            ("${PWD#\\/}", PWD, Value("home")),
        ];
        check(&Lexer::new('`'), cases);
    }

    #[test]
    fn raw_quotes() {
        let lexer = Lexer {
            raw_quotes: true,
            ..Lexer::new('\\')
        };
        let cases: &[(&str, Env, Want)] = &[
            ("\"a b\"'c'", PWD, Value("\"a b\"'c'")),
            ("he\"$PWD\"", PWD, Value("he\"/home\"")),
            ("'$PWD'", PWD, Value("'$PWD'")),
            ("\\\"x", PWD, Value("\"x")),
            ("\"a\\\"b\"", PWD, Value("\"a\"b\"")),
            ("${X:-\"d\"}", PWD, Value("\"d\"")),
            (
                "'abc",
                PWD,
                Error("unexpected end of statement while looking for matching single-quote"),
            ),
        ];
        check(&lexer, cases);
        assert_eq!(
            lexer.process_words("a \"b c\" 'd e'f", &env(PWD)),
            Ok(vec![
                "a".to_owned(),
                "\"b c\"".to_owned(),
                "'d e'f".to_owned()
            ])
        );
    }

    #[test]
    fn skip_unset_env() {
        let lexer = Lexer {
            skip_unset_env: true,
            ..Lexer::new('\\')
        };
        let cases: &[(&str, Env, Want)] = &[
            ("$FOO", PWD, Value("$FOO")),
            ("${FOO}", PWD, Value("${FOO}")),
            ("$PWD$FOO", PWD, Value("/home$FOO")),
            ("\"$FOO\"", PWD, Value("$FOO")),
            ("${FOO:-x}", PWD, Value("${FOO:-x}")),
            ("${FOO-$PWD}", PWD, Value("${FOO-/home}")),
            ("${FOO:+x}", PWD, Value("${FOO:+x}")),
            ("${FOO?msg}", PWD, Value("${FOO?msg}")),
            ("${FOO:?}", PWD, Value("${FOO:?}")),
            ("${FOO#a*}", PWD, Value("${FOO#a*}")),
            ("${FOO##a\\*}", PWD, Value("${FOO##a\\*}")),
            ("${FOO/a/b}", PWD, Value("${FOO/a/b}")),
            ("${FOO//a/b}", PWD, Value("${FOO//a/b}")),
            ("${PWD:-x}", PWD, Value("/home")),
            ("${NULL:-x}", PWD, Value("x")),
            ("${NULL:?}", PWD, Error("NULL: is not allowed to be empty")),
            ("$1", PWD, Value("$1")),
            ("${@}", PWD, Value("${@}")),
            ("$", PWD, Value("$")),
            ("${}", PWD, Error("syntax error: bad substitution")),
        ];
        check(&lexer, cases);
    }

    #[test]
    fn skip_process_quotes() {
        let lexer = Lexer {
            skip_process_quotes: true,
            ..Lexer::new('\\')
        };
        let cases: &[(&str, Env, Want)] = &[
            ("'$PWD' \"$PWD\"", PWD, Value("'/home' \"/home\"")),
            ("'unterminated", PWD, Value("'unterminated")),
            ("\"${X:-'a'}\"", PWD, Value("\"'a'\"")),
            // As in BuildKit, escapes are still processed.
            ("\\$PWD", PWD, Value("$PWD")),
            ("a\\\\b", PWD, Value("a\\b")),
            ("\\\"", PWD, Value("\"")),
            ("line\\\nnext", PWD, Value("line\nnext")),
            ("end\\", PWD, Value("end")),
        ];
        check(&lexer, cases);
    }

    #[test]
    fn required_messages() {
        const SET: Env = &[("VAR", "plain"), ("ARG", "x")];
        const EMPTY: Env = &[("VAR", ""), ("ARG", "x")];
        const UNSET: Env = &[("ARG", "x")];
        let cases: &[(&str, Env, Want)] = &[
            ("${VAR:?message here$ARG}", SET, Value("plain")),
            (
                "${VAR:?message here$ARG}",
                EMPTY,
                Error("VAR: message herex"),
            ),
            (
                "${VAR:?message here$ARG}",
                UNSET,
                Error("VAR: message herex"),
            ),
            ("${VAR?message here$ARG}", SET, Value("plain")),
            ("${VAR?message here$ARG}", EMPTY, Value("")),
            (
                "${VAR?message here$ARG}",
                UNSET,
                Error("VAR: message herex"),
            ),
            ("${VAR:?}", EMPTY, Error("VAR: is not allowed to be empty")),
            ("${VAR:?}", UNSET, Error("VAR: is not allowed to be unset")),
            ("${VAR?}", UNSET, Error("VAR: is not allowed to be unset")),
            ("${VAR?}", EMPTY, Value("")),
            ("${VAR:?\"quoted msg\"}", UNSET, Error("VAR: quoted msg")),
        ];
        check(&Lexer::new('\\'), cases);
    }

    #[test]
    fn error_messages() {
        let cases: &[(&str, Env, Want)] = &[
            ("${}", PWD, Error("syntax error: bad substitution")),
            ("${:-x}", PWD, Error("syntax error: bad substitution")),
            ("${{a}", PWD, Error("syntax error: bad substitution")),
            (
                "'abc",
                PWD,
                Error("unexpected end of statement while looking for matching single-quote"),
            ),
            (
                "\"abc",
                PWD,
                Error("unexpected end of statement while looking for matching double-quote"),
            ),
            ("${abc", PWD, Error("syntax error: missing '}'")),
            ("${", PWD, Error("syntax error: missing '}'")),
            ("${a:", PWD, Error("syntax error: missing '}'")),
            ("${a:-\"x}", PWD, Error("syntax error: missing '}'")),
            ("${a:-\"x}\" y", PWD, Error("syntax error: missing '}'")),
            (
                "\"${a:-x}",
                PWD,
                Error("unexpected end of statement while looking for matching double-quote"),
            ),
            (
                "${a:=b}",
                PWD,
                Error("unsupported modifier (:=) in substitution"),
            ),
            (
                "${a=b}",
                PWD,
                Error("unsupported modifier (=) in substitution"),
            ),
            (
                "${a.b}",
                PWD,
                Error("unsupported modifier (.) in substitution"),
            ),
            (
                "${#PWD}",
                PWD,
                Error("unsupported modifier (P) in substitution"),
            ),
            ("${a/b", PWD, Error("syntax error: missing '/' in ${}")),
        ];
        check(&Lexer::new('\\'), cases);
    }

    #[test]
    fn matched_and_unmatched() {
        type Row = (
            &'static str,
            Env,
            &'static str,
            &'static [&'static str],
            &'static [&'static str],
        );
        const FOO_BAR: Env = &[("FOO", "xxx"), ("BAR", "")];
        const RELEASE: &str =
            "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz";
        const PLATFORM: Env = &[
            ("VERSION", "v1.2.3"),
            ("TARGETOS", "linux"),
            ("TARGETARCH", "arm"),
        ];
        let rows: &[Row] = &[
            ("x", &[("DUMMY", "dummy")], "x", &[], &[]),
            ("x ${UNUSED}", &[("DUMMY", "dummy")], "x ", &[], &["UNUSED"]),
            ("x ${FOO}", &[("FOO", "y")], "x y", &["FOO"], &[]),
            (
                "${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}",
                FOO_BAR,
                "xxx  ccc",
                &["BAR", "FOO"],
                &["BAZ"],
            ),
            (
                "${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}",
                FOO_BAR,
                "xxx bbb ccc",
                &["BAR", "FOO"],
                &["BAZ"],
            ),
            (
                "${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}",
                FOO_BAR,
                "aaa bbb ",
                &["BAR", "FOO"],
                &["BAZ"],
            ),
            (
                "${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}",
                FOO_BAR,
                "aaa  ",
                &["BAR", "FOO"],
                &["BAZ"],
            ),
            ("${FOO:-}", FOO_BAR, "xxx", &["FOO"], &[]),
            ("${FOO:-}", &[], "", &[], &["FOO"]),
            ("${FOO?aaa}", FOO_BAR, "xxx", &["FOO"], &[]),
            ("${BAR?bbb}", FOO_BAR, "", &["BAR"], &[]),
            (
                "${ABC:-.}${FOO%x}${ABC:-.}",
                XXYY,
                ".xxyy.",
                &["FOO"],
                &["ABC"],
            ),
            (
                "${FOO#$BAR}",
                &[("FOO", "xxyy"), ("BAR", "x")],
                "xyy",
                &["BAR", "FOO"],
                &[],
            ),
            // The word of a modifier is always processed, so its variables count as used.
            ("${FOO:+$BAR}", &[("BAR", "1")], "", &["BAR"], &["FOO"]),
            (
                "\"$FOO\"${BAR:-$BAZ}",
                &[("FOO", "1")],
                "1",
                &["FOO"],
                &["BAR", "BAZ"],
            ),
            // Quoted or escaped references are not references.
            ("'$FOO' \\$BAR", &[("FOO", "x")], "$FOO $BAR", &[], &[]),
            ("$1$@${10}", &[], "", &[], &["1", "10", "@"]),
            (
                RELEASE,
                PLATFORM,
                "something-v1.2.3.linux-arm.tar.gz",
                &["TARGETARCH", "TARGETOS", "VERSION"],
                &["TARGETVARIANT"],
            ),
        ];
        let lexer = Lexer::new('\\');
        let mut failures = Vec::new();
        for (input, pairs, value, matched, unmatched) in rows {
            let want = Expansion {
                value: (*value).to_owned(),
                matched: matched.iter().map(|s| (*s).to_owned()).collect(),
                unmatched: unmatched.iter().map(|s| (*s).to_owned()).collect(),
            };
            let got = lexer.process_word_with_matches(input, &env(pairs));
            if got.as_ref() != Ok(&want) {
                failures.push(format!("{input:?}: want {want:?}, got {got:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));

        let variant = [
            ("VERSION", "v1"),
            ("TARGETOS", "linux"),
            ("TARGETARCH", "arm"),
            ("TARGETVARIANT", "v7"),
        ];
        let variant: Vec<(String, String)> = variant
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(
            lexer.process_word(RELEASE, &variant),
            Ok("something-v1.linux-arm-v7.tar.gz".to_owned())
        );
    }

    #[test]
    fn word_splitting() {
        type Row = (&'static str, &'static [&'static str]);
        const ENV: Env = &[
            ("SP", "a  b"),
            ("EMPTY", ""),
            ("NL", "x\ny"),
            ("PWD", "/home"),
        ];
        let rows: &[Row] = &[
            ("", &[]),
            ("   ", &[]),
            ("a b  c", &["a", "b", "c"]),
            ("  lead trail  ", &["lead", "trail"]),
            ("\"\"", &[]),
            ("a \"\" b", &["a", "b"]),
            ("a\\ b", &["a b"]),
            ("$SP", &["a", "b"]),
            ("\"$SP\"", &["a  b"]),
            ("x${SP}y", &["xa", "by"]),
            ("${EMPTY}", &[]),
            ("x${EMPTY}y", &["xy"]),
            ("$NL", &["x", "y"]),
            // The default word is processed on its own, and its result is split like any other
            // unquoted expansion (BuildKit behaviour).
            ("${UNSET:-\"a b\"}", &["a", "b"]),
            ("\"${UNSET:-a b}\"", &["a b"]),
        ];
        let lexer = Lexer::new('\\');
        let environment = env(ENV);
        let mut failures = Vec::new();
        for (input, want) in rows {
            let got = lexer.process_words(input, &environment);
            let want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
            if got.as_ref() != Ok(&want) {
                failures.push(format!("{input:?}: want {want:?}, got {got:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn env_lookup_impls() {
        let pairs = env(&[("A", "1"), ("A", "2"), ("E", "")]);
        assert_eq!(pairs.lookup("A"), Some("2"));
        assert_eq!(pairs.as_slice().lookup("E"), Some(""));
        assert_eq!(pairs.lookup("B"), None);
        let map: std::collections::HashMap<String, String> = pairs.iter().cloned().collect();
        assert_eq!(map.lookup("E"), Some(""));
        assert_eq!(EmptyEnv.lookup("A"), None);
        let lexer = Lexer::new('\\');
        assert_eq!(
            lexer.process_word("${A}-${E:-e}", &map),
            Ok("2-e".to_owned())
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let lexer = Lexer::new('\\');
        let nested = |levels: usize| format!("{}x{}", "${a:-".repeat(levels), "}".repeat(levels));
        assert_eq!(
            lexer.process_word(&nested(MAX_NESTING), &EmptyEnv),
            Ok("x".to_owned())
        );
        assert_eq!(
            lexer.process_word(&nested(MAX_NESTING + 1), &EmptyEnv),
            Err(ShellError::TooDeep)
        );
        // Far deeper than any stack would allow with unbounded recursion.
        assert_eq!(
            lexer.process_word(&"${a:-\"".repeat(200_000), &EmptyEnv),
            Err(ShellError::TooDeep)
        );
        assert!(lexer
            .process_words(&"${a:-".repeat(200_000), &EmptyEnv)
            .is_err());
    }

    #[test]
    fn output_is_bounded() {
        // Each level multiplies the length by ten: 10^13 bytes if unbounded.
        let mut word = "$A".to_owned();
        for _ in 0..12 {
            word = format!("${{A//?/{word}}}");
        }
        let environment = env(&[("A", "0123456789")]);
        let got = Lexer::new('\\').process_word(&word, &environment);
        assert!(
            matches!(got, Err(ShellError::TooLarge(_))),
            "got {:?}",
            got.map(|s| s.len())
        );
    }

    #[test]
    fn glob_matching_is_not_exponential() {
        let value = "a".repeat(20_000);
        let environment = vec![("V".to_owned(), value.clone())];
        let lexer = Lexer::new('\\');
        let stars = "*a".repeat(30);
        let start = std::time::Instant::now();
        assert_eq!(
            lexer.process_word(&format!("${{V##{stars}*b}}"), &environment),
            Ok(value.clone())
        );
        assert_eq!(
            lexer.process_word(&format!("${{V%%{stars}*b}}"), &environment),
            Ok(value.clone())
        );
        assert_eq!(
            lexer.process_word(&format!("${{V//{stars}*b/x}}"), &environment),
            Ok(value.clone())
        );
        assert_eq!(
            lexer.process_word(&format!("${{V##{stars}}}"), &environment),
            Ok(String::new())
        );
        assert_eq!(
            lexer.process_word("${V//a/b}", &environment),
            Ok("b".repeat(20_000))
        );
        assert_eq!(
            lexer
                .process_word("${V///-}", &environment)
                .map(|s| s.len()),
            Ok(40_001)
        );
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "took {:?}",
            start.elapsed()
        );
    }

    /// Random inputs made of the interesting characters never panic, and split words are never
    /// empty.
    #[test]
    fn random_inputs_do_not_panic() {
        const ALPHABET: &[char] = &[
            '$', '$', '{', '{', '}', '}', ':', '-', '+', '?', '#', '%', '/', '*', '\\', '\\', '\'',
            '"', '`', 'a', 'b', 'A', '1', '0', '@', '_', ' ', '\n', '[', 'é', '한',
        ];
        let environment = env(&[("a", "x y"), ("A", "*a?"), ("b", ""), ("1", "one")]);
        let mut lexers = Vec::new();
        for escape in ['\\', '`'] {
            for flags in 0..8u8 {
                lexers.push(Lexer {
                    escape,
                    raw_quotes: flags & 1 != 0,
                    skip_unset_env: flags & 2 != 0,
                    skip_process_quotes: flags & 4 != 0,
                });
            }
        }
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut random = move |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % bound as u64).unwrap_or(0)
        };
        for _ in 0..3_000 {
            let len = random(48);
            let input: String = (0..len).map(|_| ALPHABET[random(ALPHABET.len())]).collect();
            for lexer in &lexers {
                let word = lexer.process_word_with_matches(&input, &environment);
                let words = lexer.process_words(&input, &environment);
                assert_eq!(word.is_ok(), words.is_ok(), "{input:?} with {lexer:?}");
                if let Ok(words) = words {
                    assert!(
                        words.iter().all(|w| !w.is_empty()),
                        "{input:?} with {lexer:?}: {words:?}"
                    );
                }
            }
        }
    }
}
