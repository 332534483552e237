//! The ordered list of `.dockerignore` patterns and the decision "is this context path ignored",
//! for single paths and for directory walks (Docker's `MatchesOrParentMatches` /
//! `MatchesUsingParentResults`), plus the test that lets a walker skip a whole directory.
//!
//! Rules: patterns apply in order and the last one that matches decides; a plain pattern ignores
//! what it matches, a `!` pattern re-includes it. A pattern matches a path when it matches the
//! whole path or any of its ancestor directories (`a`, `a/b` for `a/b/c`), so ignoring a
//! directory ignores everything below it unless a later `!` pattern brings something back.

use crate::cleanpath::{clean_path, parent_dir};
use crate::error::ContextError;
use crate::pattern::Pattern;

/// A compiled, ordered list of ignore patterns.
#[derive(Clone, Debug, Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

/// Per-pattern results for a directory, passed down to its children during a walk.
///
/// `MatchInfo::default()` means "no information" (for a top-level path, or when the parent's
/// results are not at hand): the matcher then checks the ancestors itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MatchInfo {
    /// `matched[i]`: pattern i matched this path or one of its ancestors.
    matched: Vec<bool>,
}

impl PatternMatcher {
    /// Compiles `patterns` (in ignore-file order). Patterns that are empty once trimmed are
    /// dropped. Fails on the first bad pattern (a lone `!`, or bad glob syntax) and names it.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<PatternMatcher, ContextError> {
        let mut compiled = Vec::with_capacity(patterns.len());
        for raw in patterns {
            if let Some(pattern) = Pattern::parse(raw.as_ref())? {
                compiled.push(pattern);
            }
        }
        let exclusions = compiled.iter().any(Pattern::is_exclusion);
        Ok(PatternMatcher {
            patterns: compiled,
            exclusions,
        })
    }

    /// The compiled patterns, in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Whether there are no patterns (nothing is ever ignored).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether any pattern is an exclusion (`!`).
    pub fn exclusions(&self) -> bool {
        self.exclusions
    }

    /// Whether `path` (relative to the context root, `/`-separated) is ignored: the last pattern
    /// that matches the path or one of its ancestor directories decides (Docker's
    /// `MatchesOrParentMatches`). The ancestors are those of the cleaned parent directory; the
    /// path itself is matched as given.
    pub fn matches(&self, path: &str) -> bool {
        let ancestors = Ancestors::of(path);
        let mut matched = false;
        for pattern in &self.patterns {
            // A pattern can only change the outcome if it goes the other way.
            if pattern.is_exclusion() != matched {
                continue;
            }
            if pattern.matches(path) || ancestors.iter().any(|a| pattern.matches(a)) {
                matched = !pattern.is_exclusion();
            }
        }
        matched
    }

    /// The incremental form of [`matches`](Self::matches) for walking a tree: `parent` is the
    /// [`MatchInfo`] returned for the parent directory (or `MatchInfo::default()` at the top, or
    /// when unknown, in which case ancestors are checked here). Returns whether `path` is
    /// ignored and the info to pass to `path`'s own children.
    ///
    /// Always agrees with [`matches`](Self::matches) when the walk passes each directory's info
    /// to its direct children. (Docker skips evaluating some patterns here and records them as
    /// "not matched", which makes its walk disagree with `MatchesOrParentMatches` for lists such
    /// as `a`, `!a/b`, `a`; every pattern is evaluated here, so the info is exact.) An info with
    /// the wrong number of entries is treated as "no information".
    pub fn matches_using_parent_results(
        &self,
        path: &str,
        parent: &MatchInfo,
    ) -> (bool, MatchInfo) {
        let have_parent = !parent.matched.is_empty() && parent.matched.len() == self.patterns.len();
        let ancestors = if have_parent {
            Ancestors::none()
        } else {
            Ancestors::of(path)
        };
        let mut matched = false;
        let mut info = Vec::with_capacity(self.patterns.len());
        for (i, pattern) in self.patterns.iter().enumerate() {
            let inherited = have_parent && parent.matched.get(i).copied().unwrap_or(false);
            let hit =
                inherited || pattern.matches(path) || ancestors.iter().any(|a| pattern.matches(a));
            info.push(hit);
            if hit {
                matched = !pattern.is_exclusion();
            }
        }
        (matched, MatchInfo { matched: info })
    }

    /// Whether a walker may skip the directory `dir_path` entirely, without visiting anything
    /// below it: true only when the directory is ignored and no later `!` pattern could match
    /// anything inside it (so everything below is ignored too). Conservative: when unsure, false.
    /// The context root (`""` or `.`) is never skipped.
    pub fn can_skip_dir(&self, dir_path: &str) -> bool {
        let (_, info) = self.matches_using_parent_results(dir_path, &MatchInfo::default());
        self.can_skip_dir_with(dir_path, &info)
    }

    /// [`can_skip_dir`](Self::can_skip_dir) for a walker that already has the directory's own
    /// [`MatchInfo`] (returned by [`matches_using_parent_results`](Self::matches_using_parent_results)
    /// for `dir_path`), which saves matching it again.
    pub fn can_skip_dir_with(&self, dir_path: &str, info: &MatchInfo) -> bool {
        if dir_path.is_empty() || dir_path == "." {
            return false;
        }
        if info.matched.len() != self.patterns.len() {
            let (_, fresh) = self.matches_using_parent_results(dir_path, &MatchInfo::default());
            return self.can_skip_dir_with(dir_path, &fresh);
        }
        // The last pattern matching the directory (or an ancestor) decides for the directory and,
        // since it matches every descendant through that ancestor, for all descendants, unless a
        // later pattern matches them. Only later exclusions can therefore re-include something.
        let Some(deciding) = info.matched.iter().rposition(|&hit| hit) else {
            return false;
        };
        match self.patterns.get(deciding) {
            Some(pattern) if !pattern.is_exclusion() => {}
            _ => return false,
        }
        let dir_slash = format!("{}/", dir_path.trim_end_matches('/'));
        !self
            .patterns
            .iter()
            .skip(deciding + 1)
            .any(|p| p.is_exclusion() && p.could_match_below(&dir_slash))
    }

    /// Docker's deprecated `PatternMatcher.Matches` on an already cleaned path: when a pattern
    /// does not match the whole path, only the one ancestor with as many segments as the pattern
    /// is tried.
    fn matches_legacy_cleaned(&self, file: &str) -> bool {
        let parent = parent_dir(file);
        let parent_segments = parent.split('/').count();
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.is_exclusion() != matched {
                continue;
            }
            let mut hit = pattern.matches(file);
            if !hit && parent != "." && pattern.segments() <= parent_segments {
                hit = pattern.matches(first_segments(&parent, pattern.segments()));
            }
            if hit {
                matched = !pattern.is_exclusion();
            }
        }
        matched
    }
}

/// Docker's old, **deprecated** matching helper (`patternmatcher.Matches`), kept only so the
/// conformance tables asserted with it can be checked. Do not use it for builds: it is wrong for
/// ancestors deeper than the pattern (use [`PatternMatcher::matches`]).
///
/// `path` is cleaned first; `.` never matches; a pattern that does not match the whole path is
/// tried against exactly one ancestor, the one with as many segments as the pattern
/// (`a*` matches `ab/c` through `ab`, but `a*/b` does not match `a/c/b`).
pub fn matches_legacy<S: AsRef<str>>(path: &str, patterns: &[S]) -> Result<bool, ContextError> {
    let matcher = PatternMatcher::new(patterns)?;
    let file = clean_path(path);
    if file == "." {
        return Ok(false);
    }
    Ok(matcher.matches_legacy_cleaned(&file))
}

/// The first `n` `/`-separated segments of `path`, joined (all of it if it has fewer).
fn first_segments(path: &str, n: usize) -> &str {
    match path.match_indices('/').nth(n.saturating_sub(1)) {
        Some((i, _)) if n > 0 => path.get(..i).unwrap_or(path),
        _ if n == 0 => "",
        _ => path,
    }
}

/// The ancestor directories Docker tries for a path: the prefixes of its cleaned parent
/// directory (`a`, `a/b` for `a/b/c`; `` and `/` for `/x`), none for a top-level path.
struct Ancestors {
    parent: String,
}

impl Ancestors {
    fn of(path: &str) -> Ancestors {
        Ancestors {
            parent: parent_dir(path),
        }
    }

    fn none() -> Ancestors {
        Ancestors {
            parent: ".".to_owned(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        let parent = self.parent.as_str();
        let prefixes = if parent == "." { None } else { Some(parent) };
        prefixes.into_iter().flat_map(|parent| {
            parent
                .match_indices('/')
                .map(move |(i, _)| parent.get(..i).unwrap_or(parent))
                .chain(std::iter::once(parent))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(patterns: &[&str]) -> PatternMatcher {
        match PatternMatcher::new(patterns) {
            Ok(m) => m,
            Err(e) => panic!("{patterns:?}: {e}"),
        }
    }

    #[test]
    fn ancestors_follow_go_dir_and_split() {
        let cases: &[(&str, &[&str])] = &[
            ("file", &[]),
            ("a/b/c", &["a", "a/b"]),
            ("a/b/", &["a", "a/b"]),
            ("/", &["", "/"]),
            ("/x", &["", "/"]),
            ("/a/x", &["", "/a"]),
            ("./a/./b", &["a"]),
        ];
        for &(path, want) in cases {
            let ancestors = Ancestors::of(path);
            let got: Vec<&str> = ancestors.iter().collect();
            assert_eq!(got, want, "ancestors of {path:?}");
        }
    }

    #[test]
    fn first_segments_cases() {
        assert_eq!(first_segments("a/b/c", 1), "a");
        assert_eq!(first_segments("a/b/c", 2), "a/b");
        assert_eq!(first_segments("a/b/c", 3), "a/b/c");
        assert_eq!(first_segments("a/b/c", 9), "a/b/c");
        assert_eq!(first_segments("a/b/c", 0), "");
    }

    #[test]
    fn last_matching_pattern_decides() {
        // (patterns, path, ignored)
        let cases: &[(&[&str], &str, bool)] = &[
            (&[], "a", false),
            (&["a"], "a/b/c", true),
            (&["a", "!a/b"], "a/b/c", false),
            (&["a", "!a/b", "a/b/c"], "a/b/c", true),
            (&["!a", "a"], "a", true),
            (&["*.go", "!keep.go"], "keep.go", false),
            (&["*.go", "!keep.go"], "x/keep.go", false),
            (&["**/*.go", "!keep.go"], "x/keep.go", true),
            (&["a", "!a/b", "a"], "a/b", true),
            (&["docs", "!docs/README.md"], "docs/README.md", false),
            (&["docs", "!docs/README.md"], "docs/other.md", true),
        ];
        for &(patterns, path, want) in cases {
            let m = matcher(patterns);
            assert_eq!(m.matches(path), want, "{patterns:?} vs {path:?}");
        }
    }

    /// Every path of a small tree: a walker's view.
    fn tree() -> Vec<&'static str> {
        vec![
            "a",
            "a/b",
            "a/b/c",
            "a/b/c/keep.txt",
            "a/b/d.go",
            "a/keep.txt",
            "a/x.go",
            "docs",
            "docs/README.md",
            "docs/api",
            "docs/api/index.md",
            "node_modules",
            "node_modules/pkg",
            "node_modules/pkg/index.js",
            "node_modules/pkg/keep",
            "src",
            "src/main.rs",
            "src/keep",
            "src/keep/x",
            "x.go",
        ]
    }

    fn pattern_lists() -> Vec<Vec<&'static str>> {
        vec![
            vec![],
            vec!["a"],
            vec!["a", "!a/b", "a"],
            vec!["a", "!a/b"],
            vec!["**/*.go", "!a/x.go"],
            vec!["*", "!src"],
            vec!["*", "!src", "src/keep"],
            vec!["docs", "!docs/README.md"],
            vec!["docs/*", "!docs/api/index.md"],
            vec!["docs/**", "!**/index.md"],
            vec!["node_modules", "!node_modules/*/keep"],
            vec!["**", "!**/keep.txt"],
            vec!["**", "!**/keep", "**/keep/x"],
            vec!["a/b", "!a/b/c/keep.txt", "a"],
            vec!["!a", "a", "!a/b/c"],
            vec!["[a-d]*", "!d*/api", "docs/api/index.md"],
            vec!["a**", "!a/b/c**"],
        ]
    }

    #[test]
    fn walk_with_parent_results_agrees_with_matches() {
        for patterns in pattern_lists() {
            let m = matcher(&patterns);
            let mut infos: std::collections::HashMap<&str, MatchInfo> =
                std::collections::HashMap::new();
            for path in tree() {
                let parent_info = match path.rfind('/') {
                    Some(i) => infos.get(&path[..i]).cloned().unwrap_or_default(),
                    None => MatchInfo::default(),
                };
                let (walked, info) = m.matches_using_parent_results(path, &parent_info);
                let (fresh, fresh_info) =
                    m.matches_using_parent_results(path, &MatchInfo::default());
                let direct = m.matches(path);
                assert_eq!(walked, direct, "{patterns:?}: walk vs matches for {path:?}");
                assert_eq!(
                    fresh, direct,
                    "{patterns:?}: no-info vs matches for {path:?}"
                );
                assert_eq!(info, fresh_info, "{patterns:?}: info for {path:?}");
                infos.insert(path, info);
            }
        }
    }

    #[test]
    fn can_skip_dir_table() {
        // (patterns, directory, may be skipped)
        let cases: &[(&[&str], &str, bool)] = &[
            (&[], "a", false),
            (&["a"], "a", true),
            (&["a"], "b", false),
            (&["a"], "", false),
            (&["**"], ".", false),
            (&["a/**"], "a", false),
            (&["a/**"], "a/b", true),
            (&["node_modules"], "node_modules", true),
            (
                &["node_modules", "!node_modules/keep"],
                "node_modules",
                false,
            ),
            (
                &["node_modules", "!node_modules/keep"],
                "node_modules/pkg",
                true,
            ),
            (
                &["node_modules", "!node_modules/*/keep"],
                "node_modules/pkg",
                false,
            ),
            (
                &["node_modules", "!node_modules/*/keep"],
                "node_modules/pkg/sub",
                true,
            ),
            // Docker's prefix heuristic would skip these and lose the re-included files.
            (&["a", "!**/keep.txt"], "a", false),
            (&["a", "!*/keep.txt"], "a", false),
            (&["a", "!*/keep.txt"], "a/b", true),
            (&["a", "!a**"], "a", false),
            (&["a", "![a-c]/x"], "a", false),
            (&["a", "!other/x"], "a", true),
            // An exclusion before the deciding pattern cannot re-include anything.
            (&["!a/keep", "a"], "a", true),
            (&["a", "!a/keep", "a"], "a", true),
            // The directory itself is re-included: it must be walked.
            (&["a", "!a"], "a", false),
            (&["a/b", "!a"], "a/b", false),
            // Ignored through an ancestor.
            (&["a"], "a/b/c", true),
            (&["a", "!a/b/c/keep"], "a/b", false),
            (&["a", "!a/b/c/keep"], "a/x", true),
            (&["*.tmp"], "dir.tmp", true),
            (&["*.tmp", "!**/*.keep"], "dir.tmp", false),
        ];
        for &(patterns, dir, want) in cases {
            let m = matcher(patterns);
            assert_eq!(
                m.can_skip_dir(dir),
                want,
                "{patterns:?}: can_skip_dir({dir:?})"
            );
            let (_, info) = m.matches_using_parent_results(dir, &MatchInfo::default());
            assert_eq!(
                m.can_skip_dir_with(dir, &info),
                want,
                "{patterns:?}: can_skip_dir_with({dir:?})"
            );
            assert_eq!(
                m.can_skip_dir_with(dir, &MatchInfo::default()),
                want,
                "{patterns:?}: can_skip_dir_with({dir:?}) without info"
            );
        }
    }

    #[test]
    fn can_skip_dir_is_sound_on_the_tree() {
        for patterns in pattern_lists() {
            let m = matcher(&patterns);
            for dir in tree() {
                if !m.can_skip_dir(dir) {
                    continue;
                }
                let prefix = format!("{dir}/");
                for path in tree().into_iter().filter(|p| p.starts_with(&prefix)) {
                    assert!(
                        m.matches(path),
                        "{patterns:?}: {dir:?} skipped but {path:?} is not ignored"
                    );
                }
            }
        }
    }

    #[test]
    fn legacy_tries_one_ancestor() {
        let cases: &[(&[&str], &str, bool)] = &[
            (&["a*"], "ab/c", true),
            (&["a*/b"], "a/c/b", false),
            (&["a"], "a/b/c", true),
            (&["*.go"], ".", false),
            (&["*"], "./", false),
            (&["a/b"], "a/b/c/d", true),
            (&["b"], "a/b/c", false),
        ];
        for &(patterns, path, want) in cases {
            match matches_legacy(path, patterns) {
                Ok(got) => assert_eq!(got, want, "{patterns:?} vs {path:?}"),
                Err(e) => panic!("{patterns:?}: {e}"),
            }
        }
        assert!(matches_legacy("x", &["!"]).is_err());
    }

    #[test]
    fn exclusions_flag() {
        assert!(!matcher(&["a", "b"]).exclusions());
        assert!(matcher(&["a", "!b"]).exclusions());
        assert!(matcher(&["", "  "]).is_empty());
    }
}
