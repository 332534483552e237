//! Wildcard sources: Go's `filepath.Match` semantics (Unix), which BuildKit uses to expand
//! `COPY`/`ADD` sources.
//!
//! * `*` matches any run of characters except `/`; `?` one character except `/`;
//! * `[abc]`, `[a-z]`, `[^a-z]` match one character of (or not of) a class — a class may
//!   match `/`, exactly as in Go;
//! * `\c` matches `c` literally; a trailing `\` or an unterminated or empty class is a bad
//!   pattern, which (as in BuildKit) simply matches nothing.
//!
//! A source "has wildcards" when one of `*`, `?`, `[` appears unescaped ([`contains_wildcards`]).

/// Whether `s` contains an unescaped `*`, `?` or `[` (a `\` escapes the next character).
pub fn contains_wildcards(s: &str) -> bool {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

/// The pattern is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPattern;

/// One piece of a pattern between stars.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    Any,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled Go `filepath.Match` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    /// Chunks: `(preceded by a star, tokens)`.
    chunks: Vec<(bool, Vec<Token>)>,
}

impl Glob {
    /// Compiles `pattern`; malformed patterns are refused (Go reports `ErrBadPattern`).
    pub fn new(pattern: &str) -> Result<Glob, BadPattern> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut chunks: Vec<(bool, Vec<Token>)> = Vec::new();
        let mut i = 0;
        let mut star = false;
        let mut tokens = Vec::new();
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    if !tokens.is_empty() {
                        chunks.push((star, std::mem::take(&mut tokens)));
                    }
                    star = true;
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::Any);
                    i += 1;
                }
                '\\' => {
                    let c = *chars.get(i + 1).ok_or(BadPattern)?;
                    tokens.push(Token::Literal(c));
                    i += 2;
                }
                '[' => {
                    let (token, next) = parse_class(&chars, i + 1)?;
                    tokens.push(token);
                    i = next;
                }
                c => {
                    tokens.push(Token::Literal(c));
                    i += 1;
                }
            }
        }
        chunks.push((star, tokens));
        Ok(Glob { chunks })
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        let s: Vec<char> = name.chars().collect();
        let mut rest: &[char] = &s;
        for (idx, (star, tokens)) in self.chunks.iter().enumerate() {
            let last = idx + 1 == self.chunks.len();
            if *star && tokens.is_empty() {
                // A trailing star matches the rest unless it holds a separator. (A star
                // followed by another chunk never has empty tokens.)
                return !rest.contains(&'/');
            }
            // Leftmost position first; a star may skip characters other than `/`.
            let mut found = None;
            let max_skip = if *star {
                rest.iter().position(|c| *c == '/').unwrap_or(rest.len())
            } else {
                0
            };
            for skip in 0..=max_skip {
                if let Some(after) = match_tokens(tokens, &rest[skip..]) {
                    if last && !after.is_empty() {
                        continue;
                    }
                    found = Some(after);
                    break;
                }
            }
            match found {
                Some(after) => rest = after,
                None => return false,
            }
        }
        rest.is_empty()
    }

    /// Whether the pattern can match a string containing `/` anywhere but through its literal
    /// `/`s (only a character class can): when false, a match has exactly as many `/` as the
    /// pattern, so a directory walk can stop at that depth.
    pub fn class_may_match_slash(&self) -> bool {
        self.chunks.iter().any(|(_, toks)| {
            toks.iter()
                .any(|t| matches!(t, Token::Class { .. }) && token_matches(t, '/'))
        })
    }

    /// How many `/`-separated components a match has when no class can match `/`.
    pub fn depth(&self) -> usize {
        1 + self
            .chunks
            .iter()
            .flat_map(|(_, toks)| toks.iter())
            .filter(|t| **t == Token::Literal('/'))
            .count()
    }
}

/// Go's `filepath.Match(pattern, name)`, with a bad pattern reported as an error.
pub fn go_match(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    Ok(Glob::new(pattern)?.matches(name))
}

fn parse_class(chars: &[char], mut i: usize) -> Result<(Token, usize), BadPattern> {
    let mut negated = false;
    if chars.get(i) == Some(&'^') {
        negated = true;
        i += 1;
    }
    let mut ranges = Vec::new();
    loop {
        match chars.get(i) {
            None => return Err(BadPattern),
            Some(']') if !ranges.is_empty() => {
                i += 1;
                break;
            }
            _ => {}
        }
        let (lo, next) = class_char(chars, i)?;
        i = next;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') {
            let (h, next) = class_char(chars, i + 1)?;
            hi = h;
            i = next;
        }
        ranges.push((lo, hi));
    }
    Ok((Token::Class { negated, ranges }, i))
}

/// One (possibly escaped) character of a class; `-` and `]` must be escaped there.
fn class_char(chars: &[char], mut i: usize) -> Result<(char, usize), BadPattern> {
    let c = *chars.get(i).ok_or(BadPattern)?;
    if c == '-' || c == ']' {
        return Err(BadPattern);
    }
    if c == '\\' {
        i += 1;
    }
    let c = *chars.get(i).ok_or(BadPattern)?;
    // Go also refuses a class that ends right after a character (no closing `]`).
    if i + 1 >= chars.len() {
        return Err(BadPattern);
    }
    Ok((c, i + 1))
}

fn token_matches(t: &Token, c: char) -> bool {
    match t {
        Token::Literal(l) => *l == c,
        Token::Any => c != '/',
        Token::Class { negated, ranges } => {
            ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi) != *negated
        }
    }
}

fn match_tokens<'a>(tokens: &[Token], s: &'a [char]) -> Option<&'a [char]> {
    if tokens.len() > s.len() {
        return None;
    }
    for (t, c) in tokens.iter().zip(s) {
        if !token_matches(t, *c) {
            return None;
        }
    }
    Some(&s[tokens.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's own `filepath.Match` table (match_test.go), plus a few of ours.
    #[test]
    fn go_match_table() {
        // (pattern, name, Some(matched) or None for ErrBadPattern)
        let cases: &[(&str, &str, Option<bool>)] = &[
            ("abc", "abc", Some(true)),
            ("*", "abc", Some(true)),
            ("*c", "abc", Some(true)),
            ("a*", "a", Some(true)),
            ("a*", "abc", Some(true)),
            ("a*", "ab/c", Some(false)),
            ("a*/b", "abc/b", Some(true)),
            ("a*/b", "a/c/b", Some(false)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Some(true)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Some(true)),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Some(false)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Some(false)),
            ("a*b?c*x", "abxbbxdbxebxczzx", Some(true)),
            ("a*b?c*x", "abxbbxdbxebxczzy", Some(false)),
            ("ab[c]", "abc", Some(true)),
            ("ab[b-d]", "abc", Some(true)),
            ("ab[e-g]", "abc", Some(false)),
            ("ab[^c]", "abc", Some(false)),
            ("ab[^b-d]", "abc", Some(false)),
            ("ab[^e-g]", "abc", Some(true)),
            ("a\\*b", "a*b", Some(true)),
            ("a\\*b", "ab", Some(false)),
            ("a?b", "a☺b", Some(true)),
            ("a[^a]b", "a☺b", Some(true)),
            ("a???b", "a☺b", Some(false)),
            ("a[^a][^a][^a]b", "a☺b", Some(false)),
            ("[a-ζ]*", "α", Some(true)),
            ("*[a-ζ]", "A", Some(false)),
            ("a?b", "a/b", Some(false)),
            ("a*b", "a/b", Some(false)),
            ("[\\]a]", "]", Some(true)),
            ("[\\-]", "-", Some(true)),
            ("[x\\-]", "x", Some(true)),
            ("[x\\-]", "-", Some(true)),
            ("[x\\-]", "z", Some(false)),
            ("[\\-x]", "x", Some(true)),
            ("[\\-x]", "-", Some(true)),
            ("[\\-x]", "a", Some(false)),
            ("[]a]", "]", None),
            ("[-]", "-", None),
            ("[x-]", "x", None),
            ("[x-]", "-", None),
            ("[x-]", "z", None),
            ("[-x]", "x", None),
            ("[-x]", "-", None),
            ("[-x]", "a", None),
            ("\\", "a", None),
            ("[a-b-c]", "a", None),
            ("[", "a", None),
            ("[^", "a", None),
            ("[^bc", "a", None),
            ("a[", "ab", None),
            ("*x", "xxx", Some(true)),
            // Ours: a class may match `/`, as in Go.
            ("a[^x]b", "a/b", Some(true)),
            ("d[i]r/sub/deep.txt", "dir/sub/deep.txt", Some(true)),
            ("*.txt", "file with space.txt", Some(true)),
            ("*.txt", ".hidden.txt", Some(true)),
            ("f?.txt", "f1.txt", Some(true)),
            ("f?.txt", "f10.txt", Some(false)),
            ("**", "a", Some(true)),
            ("", "", Some(true)),
            ("", "a", Some(false)),
        ];
        for (pattern, name, want) in cases {
            let got = go_match(pattern, name).ok();
            // Go reports ErrBadPattern only when it reaches the bad part; we always refuse a
            // bad pattern, which BuildKit treats as "no match" either way.
            match want {
                None => assert_eq!(got, None, "pattern {pattern:?} should be bad"),
                Some(w) => assert_eq!(got, Some(*w), "go_match({pattern:?}, {name:?})"),
            }
        }
    }

    #[test]
    fn wildcard_detection() {
        let cases: &[(&str, bool)] = &[
            ("file.txt", false),
            ("*.txt", true),
            ("dir/f?.txt", true),
            ("d[i]r", true),
            ("a\\*b", false),
            ("a\\\\*b", true),
            ("http://x/y", false),
        ];
        for (s, want) in cases {
            assert_eq!(contains_wildcards(s), *want, "{s:?}");
        }
    }

    #[test]
    fn depth_and_slash_classes() -> Result<(), BadPattern> {
        assert_eq!(Glob::new("a/*/c")?.depth(), 3);
        assert!(!Glob::new("a/*/c")?.class_may_match_slash());
        assert!(Glob::new("a[^x]c")?.class_may_match_slash());
        assert!(!Glob::new("d[i]r")?.class_may_match_slash());
        Ok(())
    }
}
