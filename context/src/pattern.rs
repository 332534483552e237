//! One `.dockerignore` pattern: normalisation, syntax checking, classification and matching
//! against a single path, with Docker's (moby/patternmatcher) semantics.
//!
//! # Syntax
//!
//! A pattern is trimmed of surrounding whitespace and path-cleaned (see [`crate::clean_path`]);
//! a leading `!` then marks an exclusion (a re-include). Note that, as in Docker, cleaning
//! happens *before* the `!` is split off, so `!a/../b` is the plain pattern `b`.
//!
//! * `*` matches any run of characters except `/`; `?` matches one character except `/`.
//! * `**` matches any number of characters including `/` (so any number of directories, also
//!   zero); a `/` right after `**` is part of it (`**/` = "zero or more directories").
//! * `[...]` / `[^...]` match one character from / not from a set of characters and ranges
//!   `a-z`; `[:alpha:]`-style POSIX classes (and `[:^alpha:]`) are recognised inside them.
//!   `-` and `]` must be escaped inside brackets unless they cannot be read otherwise; ranges must
//!   be in order.
//! * `\` makes the next character literal. A trailing `\` is an error.
//! * Everything else, including `. + ( ) | { } $`, is literal.
//!
//! The syntax check is Go's `filepath.Match` grammar, which Docker uses to reject patterns.
//!
//! # Classification
//!
//! Like Docker, a pattern is classified before matching, and the class changes what it matches:
//!
//! * **exact** (no wildcard at all): the path must equal the pattern;
//! * **prefix** (a literal followed by a final `**`): the path must start with the literal, so
//!   `abc/**` matches `abc/x` but not `abc`, and `abc**` matches `abcdef`;
//! * **suffix** (`**` followed by a literal): the path must end with the literal, or equal it
//!   without its leading `/`; so `**/foo` matches `foo` and `a/foo`, and `**.txt` / `**foo`
//!   match `a.txt` / `xfoo`;
//! * **glob** (everything else), matched with the rules above over the whole path. In this form
//!   `**` not at the end means "empty, or anything ending in `/`", so `a**b` matches `ab` and
//!   `ax/b` but not `axb`, exactly as in Docker.
//!
//! # Faithfully kept Docker quirks
//!
//! Docker turns glob-class patterns into Go regular expressions, and a few regex behaviours leak
//! through; they are reproduced here so that the same files are ignored:
//!
//! * In the glob class, `**` does not match a newline character (Go's `.` excludes `\n`).
//! * In the glob class, an unescaped `^` outside brackets only matches at the start of the path
//!   (`a^b*` matches nothing); in the other classes it is literal.
//! * POSIX classes `[:name:]` inside brackets; an unknown name is an error.
//! * A range written backwards (`[z-a]`, `[Local-Only]`) is an error.
//! * A byte-order mark at the very start of the pattern is ignored by the glob class but is part
//!   of the literal in the exact, prefix and suffix classes.
//!
//! # Deliberate differences
//!
//! These are Docker accidents that no reasonable ignore file relies on; rbuild follows the glob
//! syntax (`filepath.Match`) instead, so results can differ from Docker only for such patterns:
//!
//! * `\` followed by a letter, digit or non-ASCII character is that character literally. Docker
//!   passes it to Go's regexp, where `\d`, `\w`, `\s`, `\n`, `\x41`, ... have regex meanings and
//!   other letters are a match-time error.
//! * `*` and `?` inside brackets are literal. Docker expands them inside the brackets and gets
//!   a garbled regex (its `[*]` matches `]` but not `*`).
//!
//! # Matching cost
//!
//! Glob matching simulates a position automaton: time `O(path length × pattern length)`, no
//! backtracking, no recursion, so hostile patterns cannot blow up.

use crate::clean_path;
use crate::error::ContextError;

/// One compiled `.dockerignore` pattern.
#[derive(Clone, Debug)]
pub struct Pattern {
    /// Trimmed, cleaned, without the leading `!`.
    text: String,
    exclusion: bool,
    /// Number of `/`-separated segments of `text` (for the legacy single-ancestor rule).
    segments: usize,
    kind: Kind,
}

/// How a pattern is matched (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatternKind {
    /// The path must equal the pattern.
    Exact,
    /// The path must start with the pattern minus its final `**`.
    Prefix,
    /// The path must end with the pattern minus its leading `**`.
    Suffix,
    /// General glob matching.
    Glob,
}

#[derive(Clone, Debug)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Glob(Glob),
}

impl Pattern {
    /// Compiles one pattern as it appears in an ignore file (or as handed to the matcher).
    ///
    /// Returns `Ok(None)` for a pattern that is empty once trimmed (it is ignored).
    pub fn parse(raw: &str) -> Result<Option<Pattern>, ContextError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        let cleaned = clean_path(trimmed);
        let (exclusion, text) = match cleaned.strip_prefix('!') {
            Some("") => {
                return Err(ContextError::LoneExclusion {
                    pattern: raw.to_owned(),
                })
            }
            Some(rest) => (true, rest.to_owned()),
            None => (false, cleaned),
        };
        let chars: Vec<char> = text.chars().collect();
        let bad = |reason: String| ContextError::BadPattern {
            pattern: raw.to_owned(),
            reason,
        };
        check_syntax(&chars).map_err(bad)?;
        let kind = compile(&chars).map_err(bad)?;
        let segments = text.split('/').count();
        Ok(Some(Pattern {
            text,
            exclusion,
            segments,
            kind,
        }))
    }

    /// The pattern after trimming and cleaning, without its `!`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this is an exclusion (`!`) pattern, which re-includes what it matches.
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    /// How the pattern is matched.
    pub fn kind(&self) -> PatternKind {
        match self.kind {
            Kind::Exact => PatternKind::Exact,
            Kind::Prefix => PatternKind::Prefix,
            Kind::Suffix => PatternKind::Suffix,
            Kind::Glob(_) => PatternKind::Glob,
        }
    }

    /// Whether the pattern matches the whole of `path` (no ancestor rule; see
    /// [`crate::PatternMatcher::matches`] for that).
    pub fn matches(&self, path: &str) -> bool {
        let path_bytes = path.as_bytes();
        let text = self.text.as_bytes();
        match &self.kind {
            Kind::Exact => path_bytes == text,
            Kind::Prefix => {
                path_bytes.starts_with(text.get(..text.len().saturating_sub(2)).unwrap_or(text))
            }
            Kind::Suffix => {
                // Byte-wise like Docker (a leading byte-order mark makes this cut inside it).
                let suffix = text.get(2..).unwrap_or_default();
                path_bytes.ends_with(suffix)
                    || (suffix.first() == Some(&b'/') && suffix.get(1..) == Some(path_bytes))
            }
            Kind::Glob(glob) => glob.matches(path),
        }
    }

    /// Number of `/`-separated segments of the cleaned pattern.
    pub(crate) fn segments(&self) -> usize {
        self.segments
    }

    /// Conservative: `false` only when no path strictly below `dir_slash` (a directory path
    /// ending in `/`) can match this pattern.
    pub(crate) fn could_match_below(&self, dir_slash: &str) -> bool {
        let dir = dir_slash.as_bytes();
        let text = self.text.as_bytes();
        match &self.kind {
            Kind::Exact => text.len() > dir.len() && text.starts_with(dir),
            Kind::Prefix => {
                let prefix = text.get(..text.len().saturating_sub(2)).unwrap_or(text);
                prefix.starts_with(dir) || dir.starts_with(prefix)
            }
            // Any suffix can be reached by some path below any directory.
            Kind::Suffix => true,
            Kind::Glob(glob) => glob.alive_after(dir_slash),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Syntax check: Go's `filepath.Match` grammar (what Docker validates patterns with).
// ---------------------------------------------------------------------------------------------

const UNTERMINATED: &str = "unterminated character class (missing `]`)";

fn check_syntax(p: &[char]) -> Result<(), String> {
    let mut i = 0;
    while let Some(&c) = p.get(i) {
        match c {
            '\\' => {
                if i + 1 >= p.len() {
                    return Err("trailing `\\` escapes nothing".to_owned());
                }
                i += 2;
            }
            '[' => {
                i += 1;
                if p.get(i) == Some(&'^') {
                    i += 1;
                }
                let mut items = 0usize;
                loop {
                    if items > 0 && p.get(i) == Some(&']') {
                        i += 1;
                        break;
                    }
                    i = class_char_end(p, i)?;
                    if p.get(i) == Some(&'-') {
                        if matches!(p.get(i + 1), Some('-' | ']')) {
                            return Err(
                                "a range needs an end character; escape a literal `-` as `\\-`"
                                    .to_owned(),
                            );
                        }
                        i = class_char_end(p, i + 1)?;
                    }
                    items += 1;
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Checks one character (or range end) inside brackets starting at `i`; returns the index after
/// it. Like Go, the character must be followed by something (the class must go on or close).
fn class_char_end(p: &[char], i: usize) -> Result<usize, String> {
    let mut j = i;
    match p.get(j) {
        None => return Err(UNTERMINATED.to_owned()),
        Some('-') => {
            return Err(
                "`-` in a character class must be escaped (`\\-`) unless it joins a range"
                    .to_owned(),
            )
        }
        Some(']') => {
            return Err("`]` cannot open a character class item; escape it as `\\]`".to_owned())
        }
        Some('\\') => {
            j += 1;
            if j >= p.len() {
                return Err(UNTERMINATED.to_owned());
            }
        }
        Some(_) => {}
    }
    j += 1;
    if j >= p.len() {
        return Err(UNTERMINATED.to_owned());
    }
    Ok(j)
}

// ---------------------------------------------------------------------------------------------
// Compilation: classification and glob tokens, following Docker's pattern-to-regex conversion.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Detected {
    Exact,
    Prefix,
    Suffix,
    Glob,
}

fn compile(p: &[char]) -> Result<Kind, String> {
    // Docker's scanner skips a byte-order mark at the start of the pattern.
    let mut i = usize::from(p.first() == Some(&'\u{feff}'));
    let mut first = true;
    let mut detected = Detected::Exact;
    let mut tokens = Vec::new();
    while let Some(&c) = p.get(i) {
        i += 1;
        match c {
            '*' if p.get(i) == Some(&'*') => {
                i += 1;
                if p.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= p.len() {
                    if detected == Detected::Exact {
                        detected = Detected::Prefix;
                    } else {
                        tokens.push(Token::Rest);
                        detected = Detected::Glob;
                    }
                } else {
                    tokens.push(Token::AnyDirs);
                    detected = Detected::Glob;
                }
                if first {
                    detected = Detected::Suffix;
                }
            }
            '*' => {
                tokens.push(Token::Star);
                detected = Detected::Glob;
            }
            '?' => {
                tokens.push(Token::AnyChar);
                detected = Detected::Glob;
            }
            '\\' => match p.get(i) {
                Some(&next) => {
                    i += 1;
                    tokens.push(Token::Literal(next));
                    detected = Detected::Glob;
                }
                // Unreachable after the syntax check; Docker keeps it literal.
                None => tokens.push(Token::Literal('\\')),
            },
            '[' => {
                let (class, next) = parse_class(p, i)?;
                i = next;
                tokens.push(Token::Class(class));
                detected = Detected::Glob;
            }
            ']' => {
                tokens.push(Token::Literal(']'));
                detected = Detected::Glob;
            }
            '^' => tokens.push(Token::StartOfPath),
            other => tokens.push(Token::Literal(other)),
        }
        first = false;
    }
    Ok(match detected {
        Detected::Exact => Kind::Exact,
        Detected::Prefix => Kind::Prefix,
        Detected::Suffix => Kind::Suffix,
        Detected::Glob => Kind::Glob(Glob { tokens }),
    })
}

/// Parses the inside of `[...]` starting just after the `[`, with the regex reading Docker ends up
/// using (POSIX classes, ordered ranges). Returns the class and the index after its `]`.
fn parse_class(p: &[char], mut i: usize) -> Result<(Class, usize), String> {
    let negated = p.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut items = Vec::new();
    let mut first = true;
    loop {
        let Some(&c) = p.get(i) else {
            return Err(UNTERMINATED.to_owned());
        };
        if c == ']' && !first {
            return Ok((Class { negated, items }, i + 1));
        }
        first = false;
        if c == '[' && p.get(i + 1) == Some(&':') {
            if let Some(close) = find_colon_bracket(p, i + 2) {
                let name: String = p.get(i + 2..close).unwrap_or_default().iter().collect();
                let Some(item) = posix_class(&name) else {
                    return Err(format!("unknown character class `[:{name}:]`"));
                };
                items.push(item);
                i = close + 2;
                continue;
            }
        }
        let lo = class_char(p, &mut i)?;
        let mut hi = lo;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&c| c != ']') {
            i += 1;
            hi = class_char(p, &mut i)?;
            if hi < lo {
                return Err(format!("character range `{lo}-{hi}` is out of order"));
            }
        }
        items.push(ClassItem::Range(lo, hi));
    }
}

/// Index of the first `:]` at or after `from`.
fn find_colon_bracket(p: &[char], from: usize) -> Option<usize> {
    (from..p.len().saturating_sub(1))
        .find(|&k| p.get(k) == Some(&':') && p.get(k + 1) == Some(&']'))
}

/// One character inside brackets (`\x` is a literal `x`); advances `i`.
fn class_char(p: &[char], i: &mut usize) -> Result<char, String> {
    let mut c = p.get(*i).copied().ok_or_else(|| UNTERMINATED.to_owned())?;
    if c == '\\' {
        *i += 1;
        c = p.get(*i).copied().ok_or_else(|| UNTERMINATED.to_owned())?;
    }
    *i += 1;
    Ok(c)
}

fn posix_class(name: &str) -> Option<ClassItem> {
    let (negated, bare) = match name.strip_prefix('^') {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    let ranges: &'static [(char, char)] = match bare {
        "alnum" => &[('0', '9'), ('A', 'Z'), ('a', 'z')],
        "alpha" => &[('A', 'Z'), ('a', 'z')],
        "ascii" => &[('\0', '\x7f')],
        "blank" => &[('\t', '\t'), (' ', ' ')],
        "cntrl" => &[('\0', '\x1f'), ('\x7f', '\x7f')],
        "digit" => &[('0', '9')],
        "graph" => &[('!', '~')],
        "lower" => &[('a', 'z')],
        "print" => &[(' ', '~')],
        "punct" => &[('!', '/'), (':', '@'), ('[', '`'), ('{', '~')],
        "space" => &[('\t', '\r'), (' ', ' ')],
        "upper" => &[('A', 'Z')],
        "word" => &[('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')],
        "xdigit" => &[('0', '9'), ('A', 'F'), ('a', 'f')],
        _ => return None,
    };
    Some(ClassItem::Posix { ranges, negated })
}

// ---------------------------------------------------------------------------------------------
// Glob matching: a position automaton simulated over the path's characters.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Glob {
    tokens: Vec<Token>,
}

#[derive(Clone, Debug)]
enum Token {
    /// One given character.
    Literal(char),
    /// `?`: one character other than `/`.
    AnyChar,
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**` (not at the end): empty, or any run of non-newline characters ending in `/`.
    AnyDirs,
    /// Final `**`: any run of non-newline characters.
    Rest,
    /// Unescaped `^`: matches the empty string at the start of the path only.
    StartOfPath,
    /// `[...]`: one character from a set.
    Class(Class),
}

#[derive(Clone, Debug)]
struct Class {
    negated: bool,
    items: Vec<ClassItem>,
}

#[derive(Clone, Debug)]
enum ClassItem {
    Range(char, char),
    Posix {
        ranges: &'static [(char, char)],
        negated: bool,
    },
}

impl Class {
    fn matches(&self, c: char) -> bool {
        let hit = self.items.iter().any(|item| match item {
            ClassItem::Range(lo, hi) => (*lo..=*hi).contains(&c),
            ClassItem::Posix { ranges, negated } => {
                ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
            }
        });
        hit != self.negated
    }
}

/// State flag: "about to match token i".
const AT: u8 = 1;
/// State flag: "inside the `.*` of an [`Token::AnyDirs`] at i, waiting for its `/`".
const INSIDE: u8 = 2;

impl Glob {
    fn matches(&self, path: &str) -> bool {
        self.run(path)
            .is_some_and(|states| states.last().is_some_and(|s| s & AT != 0))
    }

    /// Whether some continuation of `prefix` could still be accepted (conservative).
    fn alive_after(&self, prefix: &str) -> bool {
        self.run(prefix).is_some()
    }

    /// The state set after reading `input` (index i = before token i, last = accepted), or
    /// `None` as soon as no state is left.
    fn run(&self, input: &str) -> Option<Vec<u8>> {
        let n = self.tokens.len();
        let mut current = vec![0u8; n + 1];
        let mut next = vec![0u8; n + 1];
        if let Some(s) = current.first_mut() {
            *s = AT;
        }
        self.close(&mut current, true);
        for c in input.chars() {
            next.fill(0);
            for (i, token) in self.tokens.iter().enumerate() {
                let state = current.get(i).copied().unwrap_or(0);
                if state == 0 {
                    continue;
                }
                let mut stay = 0u8;
                let mut advance = false;
                if state & INSIDE != 0 {
                    if c != '\n' {
                        stay |= INSIDE;
                    }
                    advance |= c == '/';
                }
                if state & AT != 0 {
                    match token {
                        Token::Literal(l) => advance |= c == *l,
                        Token::AnyChar => advance |= c != '/',
                        Token::Class(class) => advance |= class.matches(c),
                        Token::Star => {
                            if c != '/' {
                                stay |= AT;
                            }
                        }
                        Token::Rest => {
                            if c != '\n' {
                                stay |= AT;
                            }
                        }
                        Token::AnyDirs => {
                            if c != '\n' {
                                stay |= INSIDE;
                            }
                            advance |= c == '/';
                        }
                        Token::StartOfPath => {}
                    }
                }
                if let Some(s) = next.get_mut(i) {
                    *s |= stay;
                }
                if advance {
                    if let Some(s) = next.get_mut(i + 1) {
                        *s |= AT;
                    }
                }
            }
            self.close(&mut next, false);
            if next.iter().all(|&s| s == 0) {
                return None;
            }
            std::mem::swap(&mut current, &mut next);
        }
        Some(current)
    }

    /// Follows the tokens that can match the empty string (in order, so chains are followed).
    fn close(&self, states: &mut [u8], at_start: bool) {
        for (i, token) in self.tokens.iter().enumerate() {
            if states.get(i).is_some_and(|s| s & AT != 0) {
                let empty_ok = match token {
                    Token::Star | Token::Rest | Token::AnyDirs => true,
                    Token::StartOfPath => at_start,
                    Token::Literal(_) | Token::AnyChar | Token::Class(_) => false,
                };
                if empty_ok {
                    if let Some(s) = states.get_mut(i + 1) {
                        *s |= AT;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_ok(raw: &str) -> Pattern {
        match Pattern::parse(raw) {
            Ok(Some(p)) => p,
            other => panic!("pattern {raw:?} should compile, got {other:?}"),
        }
    }

    #[test]
    fn single_pattern_semantics() {
        // (pattern, path, matches the whole path)
        let cases: &[(&str, &str, bool)] = &[
            ("a**b", "ab", true),
            ("a**b", "a/b", true),
            ("a**b", "ax/y/b", true),
            ("a**b", "axb", false),
            ("**foo", "xfoo", true),
            ("**.txt", "dir/a.txt", true),
            ("**a**", "xa", false),
            ("**a**", "x/a", true),
            ("abc**", "abcdef", true),
            ("abc**", "abc", true),
            ("abc/**", "abc", false),
            ("**/dir2/**", "x/dir2/a\nb", false),
            ("dir/**", "dir/a\nb", true),
            ("**/*.log", "a\nb/x.log", false),
            ("*.log", "a\nb.log", true),
            ("a^b", "a^b", true),
            ("a^b*", "a^b", false),
            ("^a*", "abc", true),
            ("**/^a*", "abc", true),
            ("**/^a*", "x/abc", false),
            ("[[:digit:]]*.log", "1.log", true),
            ("[[:digit:]]*.log", "x.log", false),
            ("[[:^digit:]x]", "y", true),
            ("[[:^digit:]x]", "1", false),
            ("[^[:alpha:]]", "1", true),
            ("[^[:alpha:]]", "a", false),
            ("[\\*]", "*", true),
            ("[*]", "*", true),
            ("[?]", "?", true),
            ("[?]", "x", false),
            ("a\\d", "ad", true),
            ("a[/]b", "a/b", true),
            ("[^a]", "/", true),
            ("?", "/", false),
            ("a$b", "a$b", true),
            ("a$b*", "a$bc", true),
            ("\u{feff}a*", "abc", true),
            ("\u{feff}abc", "abc", false),
            ("\u{feff}abc", "\u{feff}abc", true),
            ("\u{feff}**foo", "x\u{feff}**foo", true),
            ("\u{feff}**foo", "foo", false),
            ("\u{feff}abc**", "\u{feff}abcd", true),
            ("  spaced  ", "spaced", true),
            ("./a//b/", "a/b", true),
            ("/abs", "/abs", true),
            ("/abs", "abs", false),
            (".", ".", true),
        ];
        for &(pattern, path, want) in cases {
            assert_eq!(
                compile_ok(pattern).matches(path),
                want,
                "pattern {pattern:?} vs path {path:?}"
            );
        }
    }

    #[test]
    fn classification() {
        let cases = [
            ("abc", PatternKind::Exact),
            ("a.b+c", PatternKind::Exact),
            ("a^b", PatternKind::Exact),
            ("abc/**", PatternKind::Prefix),
            ("**", PatternKind::Suffix),
            ("**/foo", PatternKind::Suffix),
            ("**/**", PatternKind::Glob),
            ("**/*.go", PatternKind::Glob),
            ("a\\b", PatternKind::Glob),
            ("a]", PatternKind::Glob),
        ];
        for (pattern, want) in cases {
            assert_eq!(compile_ok(pattern).kind(), want, "{pattern:?}");
        }
    }

    #[test]
    fn exclusion_is_split_after_cleaning() {
        let p = compile_ok("  !/foo/../bar ");
        assert!(p.is_exclusion());
        assert_eq!(p.as_str(), "/bar");
        let p = compile_ok("!a/../b");
        assert!(!p.is_exclusion());
        assert_eq!(p.as_str(), "b");
        assert!(Pattern::parse("   ").map(|p| p.is_none()).unwrap_or(false));
    }

    #[test]
    fn syntax_errors_name_the_pattern() {
        let bad = [
            "[",
            "a[",
            "[^",
            "[^bc",
            "[]a]",
            "[-]",
            "[x-]",
            "[-x]",
            "[a-b-c]",
            "\\",
            "a\\",
            "[z-a]",
            "[Local-Only]",
            "[[:foo:]]",
            "[[::]",
            "[x[:alpha:]",
            "!",
            " ! ",
            "!/",
        ];
        for raw in bad {
            match Pattern::parse(raw) {
                Err(e) => {
                    let message = e.to_string();
                    assert!(
                        message.contains(&format!("{raw:?}")),
                        "message {message:?} should name {raw:?}"
                    );
                }
                Ok(p) => panic!("pattern {raw:?} should be rejected, got {p:?}"),
            }
        }
    }

    #[test]
    fn could_match_below_is_conservative_and_useful() {
        let cases: &[(&str, &str, bool)] = &[
            ("dir/keep", "dir/", true),
            ("dir/keep", "other/", false),
            ("dir", "dir/", false),
            ("dir/**", "dir/", true),
            ("dir/**", "dir/sub/", true),
            ("d**", "dir/", true),
            ("dir/sub/**", "dir/", true),
            ("x/**", "dir/", false),
            ("**/keep", "anything/", true),
            ("*/keep", "dir/", true),
            ("*/keep", "a/b/", false),
            ("dir/*.txt", "dir/", true),
            ("dir/*.txt", "dir/sub/", false),
            ("**/*.txt", "a/b/", true),
            ("[a-c]/x", "b/", true),
            ("[a-c]/x", "d/", false),
        ];
        for &(pattern, dir, want) in cases {
            assert_eq!(
                compile_ok(pattern).could_match_below(dir),
                want,
                "pattern {pattern:?} below {dir:?}"
            );
        }
    }

    #[test]
    fn hostile_patterns_stay_linear() {
        let start = std::time::Instant::now();
        let pattern = "*a".repeat(200) + "b";
        let path = "a".repeat(20_000);
        assert!(!compile_ok(&pattern).matches(&path));
        let pattern = "**/".repeat(200) + "x";
        let path = "a/".repeat(5_000) + "y";
        assert!(!compile_ok(&pattern).matches(&path));
        let pattern = "a**".repeat(200) + "[a-z]?";
        assert!(!compile_ok(&pattern).matches(&"a/".repeat(5_000)));
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "took {:?}",
            start.elapsed()
        );
    }

    /// A tiny deterministic generator (no extra dependencies).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn string(&mut self, alphabet: &[char], max_len: u64) -> String {
            let len = self.next() % (max_len + 1);
            (0..len)
                .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize])
                .collect()
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let pattern_alphabet = [
            '*', '?', '[', ']', '^', '-', '\\', '/', '!', '.', ':', 'a', 'b', 'z', ' ', '\n',
            '\u{feff}', 'é', '$',
        ];
        let path_alphabet = ['a', 'b', 'z', '/', '.', '\n', 'é', '*', '[', ']', '-'];
        let mut rng = Lcg(42);
        for _ in 0..20_000 {
            let raw = rng.string(&pattern_alphabet, 12);
            let path = rng.string(&path_alphabet, 12);
            if let Ok(Some(p)) = Pattern::parse(&raw) {
                let _ = p.matches(&path);
                let _ = p.could_match_below(&format!("{path}/"));
            }
        }
    }
}
