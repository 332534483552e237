//! The source side of a copy: a [`Root`] (the build context or another stage's root
//! filesystem) seen through `.dockerignore` and `--exclude` patterns, and wildcard expansion.
//!
//! `.dockerignore` works on paths relative to the context root, as Docker applies it when the
//! context is sent: an ignored entry does not exist for the build, except that an ignored
//! directory holding something re-included by a `!` pattern is still there (with only the
//! re-included entries inside). Symlinks are resolved inside the source root and a path that
//! passes through an ignored entry is missing.
//!
//! `--exclude` patterns (same syntax as `.dockerignore`) are matched against paths relative to
//! what is being copied: for a directory source, its entries' paths below it; for a wildcard
//! match, the match's own name; with `--parents`, the path kept under the destination.

use std::ffi::OsString;
use std::fs::Metadata;

use rbuild_context::{MatchInfo, PatternMatcher};
use rbuild_fsutil::Root;

use crate::error::{ExecError, Side};
use crate::glob::{contains_wildcards, Glob};
use crate::paths::{is_missing, lstat, resolve_in_root, Rel};

/// A source tree and its `.dockerignore` matcher.
pub(crate) struct SourceTree<'a> {
    pub(crate) root: &'a Root,
    pub(crate) ignore: Option<&'a PatternMatcher>,
}

/// Where a walk is: the entry's path in the source root, its path relative to the copy (for
/// `--exclude`), and the matchers' per-pattern results for it.
#[derive(Clone, Debug)]
pub(crate) struct Pos {
    pub(crate) src: Rel,
    pub(crate) rel: Rel,
    pub(crate) ignore_info: MatchInfo,
    pub(crate) exclude_info: MatchInfo,
}

impl Pos {
    pub(crate) fn top(src: Rel, rel: Rel) -> Pos {
        Pos {
            src,
            rel,
            ignore_info: MatchInfo::default(),
            exclude_info: MatchInfo::default(),
        }
    }
}

/// What the filters say about one entry.
pub(crate) struct Verdict {
    /// Ignored or excluded.
    pub(crate) hidden: bool,
    /// Hidden, and so is everything below it: no need to look inside.
    pub(crate) prune: bool,
}

impl<'a> SourceTree<'a> {
    fn active_ignore(&self) -> Option<&'a PatternMatcher> {
        self.ignore.filter(|m| !m.is_empty())
    }

    /// Whether the entry `rel` (of metadata `md`) exists in the build's view of the tree.
    pub(crate) fn visible(&self, rel: &Rel, md: &Metadata) -> Result<bool, ExecError> {
        let Some(m) = self.active_ignore() else {
            return Ok(true);
        };
        if rel.is_root() {
            return Ok(true);
        }
        let path = rel.rel_string();
        let (ignored, info) = m.matches_using_parent_results(&path, &MatchInfo::default());
        if !ignored {
            return Ok(true);
        }
        if !md.is_dir() || m.can_skip_dir_with(&path, &info) {
            return Ok(false);
        }
        let pos = Pos {
            src: rel.clone(),
            rel: Rel::root(),
            ignore_info: info,
            exclude_info: MatchInfo::default(),
        };
        self.has_shown_descendant(&pos, None)
    }

    /// Resolves the source path `lexical` (symlinks followed inside the root, hidden entries
    /// missing): its path in the root and its metadata, or `None` when it does not exist.
    pub(crate) fn resolve(&self, lexical: &Rel) -> Result<Option<(Rel, Metadata)>, ExecError> {
        let phys = resolve_in_root(self.root, Side::Source, lexical, &mut |r, md| {
            self.visible(r, md)
        })?;
        let Some(md) = lstat(self.root, Side::Source, &phys)? else {
            return Ok(None);
        };
        if !self.visible(&phys, &md)? {
            return Ok(None);
        }
        Ok(Some((phys, md)))
    }

    /// The names in the directory `src` (sorted).
    pub(crate) fn read_dir(&self, src: &Rel) -> Result<Vec<OsString>, ExecError> {
        self.root
            .read_dir(src.path())
            .map_err(|e| ExecError::fs(Side::Source, src.display(), e))
    }

    /// The child `name` of `parent` as a walk position, with what the filters say about it.
    pub(crate) fn child(
        &self,
        parent: &Pos,
        name: &OsString,
        exclude: Option<&PatternMatcher>,
    ) -> (Pos, Verdict) {
        let src = parent.src.join(name);
        let rel = parent.rel.join(name);
        let mut hidden = false;
        let mut prune = false;
        let mut ignore_info = MatchInfo::default();
        if let Some(m) = self.active_ignore() {
            let path = src.rel_string();
            let (hit, info) = m.matches_using_parent_results(&path, &parent.ignore_info);
            if hit {
                hidden = true;
                prune |= m.can_skip_dir_with(&path, &info);
            }
            ignore_info = info;
        }
        let mut exclude_info = MatchInfo::default();
        if let Some(m) = exclude {
            let path = rel.rel_string();
            let (hit, info) = m.matches_using_parent_results(&path, &parent.exclude_info);
            if hit {
                hidden = true;
                prune |= m.can_skip_dir_with(&path, &info);
            }
            exclude_info = info;
        }
        (
            Pos {
                src,
                rel,
                ignore_info,
                exclude_info,
            },
            Verdict { hidden, prune },
        )
    }

    /// Whether some entry below the directory at `pos` is neither ignored nor excluded.
    pub(crate) fn has_shown_descendant(
        &self,
        pos: &Pos,
        exclude: Option<&PatternMatcher>,
    ) -> Result<bool, ExecError> {
        let names = match self.root.read_dir(pos.src.path()) {
            Ok(n) => n,
            Err(e) if is_missing(&e) => return Ok(false),
            Err(e) => return Err(ExecError::fs(Side::Source, pos.src.display(), e)),
        };
        for name in &names {
            let (child, verdict) = self.child(pos, name, exclude);
            if !verdict.hidden {
                return Ok(true);
            }
            if verdict.prune {
                continue;
            }
            let Some(md) = lstat(self.root, Side::Source, &child.src)? else {
                continue;
            };
            if md.is_dir() && self.has_shown_descendant(&child, exclude)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Expands a wildcard source the way BuildKit does: the components before the first one
    /// with a wildcard are resolved (symlinks followed); below that directory every entry
    /// whose relative path matches the rest of the pattern (Go `filepath.Match`) is a match, a
    /// matched directory is not searched further, and symlinks are not descended into.
    /// Returns the matches' lexical paths, sorted. `Ok(None)` when the directory before the
    /// wildcard does not exist.
    pub(crate) fn expand(&self, source: &str) -> Result<Option<Vec<Rel>>, ExecError> {
        let cleaned = Rel::clamped(source);
        let split = cleaned
            .0
            .iter()
            .position(|c| contains_wildcards(&c.to_string_lossy()))
            .unwrap_or(cleaned.0.len());
        let base_lexical = Rel(cleaned.0[..split].to_vec());
        let pattern = Rel(cleaned.0[split..].to_vec()).rel_string();
        let Some((base, md)) = self.resolve(&base_lexical)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        let Ok(glob) = Glob::new(&pattern) else {
            return Ok(Some(out));
        };
        if !md.is_dir() {
            return Ok(Some(out));
        }
        let max_depth = if glob.class_may_match_slash() {
            usize::MAX
        } else {
            glob.depth()
        };
        self.walk_matches(
            &base,
            &Rel::root(),
            1,
            max_depth,
            &glob,
            &base_lexical,
            &mut out,
        )?;
        Ok(Some(out))
    }

    #[allow(clippy::too_many_arguments)]
    fn walk_matches(
        &self,
        base: &Rel,
        rel: &Rel,
        depth: usize,
        max_depth: usize,
        glob: &Glob,
        base_lexical: &Rel,
        out: &mut Vec<Rel>,
    ) -> Result<(), ExecError> {
        let dir = base.join_rel(rel);
        for name in self.read_dir(&dir)? {
            let child_rel = rel.join(&name);
            let child = base.join_rel(&child_rel);
            let Some(md) = lstat(self.root, Side::Source, &child)? else {
                continue;
            };
            if !self.visible(&child, &md)? {
                continue;
            }
            if glob.matches(&child_rel.rel_string()) {
                out.push(base_lexical.join_rel(&child_rel));
                continue;
            }
            if md.is_dir() && depth < max_depth {
                self.walk_matches(
                    base,
                    &child_rel,
                    depth + 1,
                    max_depth,
                    glob,
                    base_lexical,
                    out,
                )?;
            }
        }
        Ok(())
    }
}
