//! `COPY` and `ADD`: [`copy`] applies one instruction ([`CopyOp`]) from a source tree to a
//! destination root filesystem with BuildKit's semantics.
//!
//! **Destination.** `dest` is absolute (see [`resolve_dest`](crate::resolve_dest)); a trailing
//! `/` makes it a directory. Its symlinks are resolved inside the destination root (an
//! absolute `/a -> /realdir` leads to `<root>/realdir`, `../../..` stops at the root).
//! Missing parents are created `0755`, owned by `--chown`'s owner (root otherwise).
//!
//! **Sources.** Each is resolved inside the source root (`..` stops at its top; symlinks are
//! followed *inside* it, so a context symlink to `/etc` reads the context's `etc`, never the
//! host's). A source that is a symlink is followed; symlinks *inside* a copied directory are
//! copied as symlinks with their targets verbatim. A directory source copies its contents. A
//! non-directory goes to `dest` itself, or into it when `dest` is an existing directory. Several
//! sources (or a wildcard with several matches) need a `dest` ending in `/`.
//!
//! **Metadata.** Modes are kept (`--chmod` replaces them on every copied file and directory);
//! owners become `--chown`'s, else `0:0` — or the source's own with
//! [`CopyOp::keep_owners`], as BuildKit does for `COPY --from` another stage; mtimes (and
//! atimes) are kept; xattrs of regular files are copied where the destination accepts them.
//! Files hardlinked together inside one source stay hardlinked. Directories the copy merges
//! into keep their metadata when they are the destination itself, and take the source's when
//! they are nested.
//!
//! **ADD.** With [`CopyOp::unpack_archives`], a local regular file that is a tar archive
//! (plain, gzip, bzip2, xz, zstd — by content) is extracted into `dest` (a directory);
//! `http(s)://` sources are downloaded (see [`crate::remote`]); Git sources are refused with
//! [`ExecError::Unsupported`]. Heredoc sources are files of mode `0644`.
//!
//! **Where this is stricter than BuildKit.** A `COPY` whose sources are all wildcards that
//! match nothing fails with `no source files were specified` (the classic builder's rule;
//! BuildKit's frontend allows empty wildcards and copies nothing); a wildcard that matches
//! nothing next to other sources is fine, as in BuildKit.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::time::SystemTime;

use rbuild_context::PatternMatcher;
use rbuild_fsutil::{NodeKind, Root};
use rbuild_parser::instruction::Chmod;

use crate::archive::{self, ArchiveLimits};
use crate::chmod;
use crate::error::{ExecError, Side};
use crate::glob::contains_wildcards;
use crate::paths::{lstat, open_regular, resolve_in_root, Rel};
use crate::remote::{self, DownloadLimits};
use crate::source::{Pos, SourceTree};
use rbuild_cache::FileKey;

/// One `COPY` or `ADD`, with every value already expanded.
#[derive(Clone, Debug, Default)]
pub struct CopyOp {
    /// Sources as written (after variable expansion), relative to the source root; may hold
    /// wildcards (`*`, `?`, `[…]`, Go `filepath.Match`); for `ADD` also URLs.
    pub sources: Vec<String>,
    /// Heredoc sources: `(name, content)`, content already expanded.
    pub heredocs: Vec<(String, String)>,
    /// The destination, absolute (see [`resolve_dest`](crate::resolve_dest)); a trailing `/`
    /// marks a directory.
    pub dest: String,
    /// `--chown`, resolved (see [`resolve_chown`](crate::resolve_chown)).
    pub chown: Option<(u32, u32)>,
    /// `--chmod`.
    pub chmod: Option<Chmod>,
    /// The build context's `.dockerignore` matcher (context sources only).
    pub ignore: Option<PatternMatcher>,
    /// `--exclude` patterns (`.dockerignore` syntax).
    pub excludes: Vec<String>,
    /// `--parents`: keep each source's path (below a `/./` pivot if there is one) under `dest`.
    pub parents: bool,
    /// This is an `ADD`: URLs are allowed and messages say `ADD`.
    pub add: bool,
    /// `ADD`'s extraction of local tar archives (implies [`CopyOp::add`]).
    pub unpack_archives: bool,
    /// `--link`: accepted; the result is the same.
    pub link: bool,
    /// Keep the sources' owners when there is no `--chown` (BuildKit does for `COPY --from`
    /// another stage or image); otherwise files become `0:0` as the context transfer makes them.
    pub keep_owners: bool,
    /// `ADD --checksum=<alg>:<hex>` for an HTTP(S) source.
    pub checksum: Option<String>,
    /// Bounds on extracting an archive.
    pub archive_limits: ArchiveLimits,
    /// Bounds on a download.
    pub download_limits: DownloadLimits,
}

impl CopyOp {
    fn is_add(&self) -> bool {
        self.add || self.unpack_archives
    }

    fn keyword(&self) -> &'static str {
        if self.is_add() {
            "ADD"
        } else {
            "COPY"
        }
    }
}

/// What a copy did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Regular files written (downloads, heredocs and archive members included).
    pub files: u64,
    /// Directories copied or created.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hardlinks created.
    pub hardlinks: u64,
    /// Device nodes and FIFOs created.
    pub devices: u64,
    /// Bytes of file content written (archive members included).
    pub bytes: u64,
    /// Archives extracted.
    pub archives: u64,
    /// Entries left out by `.dockerignore` or `--exclude` (sockets too).
    pub skipped: u64,
}

/// One thing to copy, after wildcard expansion.
pub(crate) enum Item {
    Local {
        /// The source's path as written, cleaned, relative to the source root.
        lexical: Rel,
        /// For messages.
        display: String,
        /// Whether it came from a wildcard (then `--exclude` applies to its name).
        from_wildcard: bool,
        /// With `--parents`: the path kept under the destination.
        parents: Option<Rel>,
    },
    Url(String),
    Heredoc(String, String),
}

/// Applies `op`, reading from `src` and writing into `dest`. See the [module docs](self).
pub fn copy(op: &CopyOp, src: &Root, dest: &Root) -> Result<CopyStats, ExecError> {
    copy_journaled(op, src, dest, None)
}

/// The change stamps of a copied source entry that is not a directory: if none of them
/// changed, copying it again writes the same entry (content, type, symlink target, mode,
/// owner, times and extended attributes: a change to any of them moves the ctime).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SourceStamp {
    /// Identity, size, mtime and ctime.
    pub key: FileKey,
    /// `st_mode` (type and permission bits).
    pub mode: u32,
    /// `st_uid`.
    pub uid: u32,
    /// `st_gid`.
    pub gid: u32,
}

impl SourceStamp {
    /// The stamp of a source entry from its `lstat`; `None` for a directory and for a file
    /// linked more than once (a copy keeps hardlink groups together, so such a file is never
    /// taken from an earlier result alone).
    pub fn of(md: &Metadata) -> Option<SourceStamp> {
        if md.is_dir() || (md.is_file() && md.nlink() > 1) {
            return None;
        }
        Some(SourceStamp {
            key: FileKey::from_metadata(md),
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
        })
    }
}

/// What a copy tells about the entries it places from a local source, and asks before writing
/// one: the builder's incremental `COPY` records a copy's entries with their [`SourceStamp`]s
/// and, when the same copy runs again on changed sources, starts from the earlier result with
/// the unchanged entries already in place (hardlinked). Paths are `/`-joined components
/// relative to their roots (the destination's physical path, the source's path in the source
/// root).
pub trait CopyJournal {
    /// A directory copied from `source` to `target` (its metadata applied after its entries).
    fn dir(&mut self, target: &[u8], source: &[u8]);
    /// A non-directory copied (or found in place) from `source`, stamped `stamp`, to `target`.
    fn entry(&mut self, target: &[u8], source: &[u8], stamp: &SourceStamp);
    /// Whether `target` already holds what copying a source stamped `stamp` writes there; such
    /// an entry is left as it is (otherwise the copy replaces whatever is there). Asked once
    /// per entry the copy reaches.
    fn in_place(&mut self, target: &[u8], stamp: &SourceStamp) -> bool;
}

/// [`copy`], telling `journal` (when given) what it copies and leaving the entries it says
/// are in place untouched.
pub fn copy_journaled<'j>(
    op: &CopyOp,
    src: &Root,
    dest: &Root,
    journal: Option<&'j mut (dyn CopyJournal + 'j)>,
) -> Result<CopyStats, ExecError> {
    let mut c = Copier {
        op,
        sel: Selection::new(op, src)?,
        dest,
        stats: CopyStats::default(),
        links: HashMap::new(),
        journal,
    };
    let items = c.sel.plan()?;
    c.prepare_dest()?;
    for item in items.iter().flatten() {
        // Hardlinks are kept within one source (BuildKit copies each wildcard match
        // separately, so files linked across two matches become two files).
        c.links.clear();
        c.copy_item(item)?;
    }
    Ok(c.stats)
}

/// An `--exclude` pattern cleaned as `.dockerignore` lines are (`!` kept, leading `/` off).
fn clean_pattern(p: &str) -> String {
    let (neg, body) = match p.strip_prefix('!') {
        Some(rest) => ("!", rest.trim()),
        None => ("", p.trim()),
    };
    let cleaned = rbuild_context::clean_path(body);
    let cleaned = cleaned.strip_prefix('/').unwrap_or(&cleaned);
    format!("{neg}{cleaned}")
}

/// What a `COPY`/`ADD` selects from its source tree, independent of the destination: the
/// planning of its sources, and the decisions of the walk (`.dockerignore`, `--exclude`). Both
/// [`copy`] and [`checksum`](crate::checksum()) walk through it, so they select the same
/// entries and fail the same way on missing sources.
pub(crate) struct Selection<'a> {
    pub(crate) op: &'a CopyOp,
    pub(crate) src: SourceTree<'a>,
    pub(crate) exclude: Option<PatternMatcher>,
}

/// A local source, resolved and not excluded as a whole.
pub(crate) struct Found {
    /// Its path in the source root (symlinks resolved).
    pub(crate) phys: Rel,
    /// Its `lstat`.
    pub(crate) md: Metadata,
    /// The name a non-directory gets in a directory destination.
    pub(crate) name: OsString,
}

/// What the filters make of one entry of a directory being copied (`M`: its `lstat`).
// Returned and consumed at once, one entry at a time: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Child<M = Metadata> {
    /// It vanished since the directory was read.
    Gone,
    /// Ignored or excluded (with nothing shown below it): left out.
    Hidden,
    /// Copied: its walk position and `lstat`.
    Shown(Pos, M),
}

fn dest_is_dir_syntax(op: &CopyOp) -> bool {
    op.dest.ends_with('/') || op.dest.ends_with("/.") || Rel::clamped(&op.dest).is_root()
}

impl<'a> Selection<'a> {
    pub(crate) fn new(op: &'a CopyOp, src: &'a Root) -> Result<Selection<'a>, ExecError> {
        let exclude = if op.excludes.is_empty() {
            None
        } else {
            let cleaned: Vec<String> = op.excludes.iter().map(|p| clean_pattern(p)).collect();
            Some(
                PatternMatcher::new(&cleaned).map_err(|e| ExecError::BadPattern {
                    patterns: op.excludes.clone(),
                    reason: e.to_string(),
                })?,
            )
        };
        Ok(Selection {
            op,
            src: SourceTree {
                root: src,
                ignore: op.ignore.as_ref(),
            },
            exclude,
        })
    }

    fn need_dir_dest(&self) -> Result<(), ExecError> {
        if dest_is_dir_syntax(self.op) {
            return Ok(());
        }
        Err(ExecError::DestNotDirectory {
            instruction: self.op.keyword(),
            dest: self.op.dest.clone(),
        })
    }

    /// Checks the sources and expands wildcards: one group of items per source argument.
    pub(crate) fn plan(&self) -> Result<Vec<Vec<Item>>, ExecError> {
        let op = self.op;
        if op.sources.len() + op.heredocs.len() > 1 {
            self.need_dir_dest()?;
        }
        if op.checksum.is_some() {
            if let Some(s) = op.sources.iter().find(|s| !remote::is_http_url(s)) {
                return Err(ExecError::InvalidSource {
                    source_path: s.clone(),
                    reason: "--checksum can only be used with HTTP(S) sources".into(),
                });
            }
        }
        let mut groups = Vec::new();
        let mut wildcards = Vec::new();
        let mut found_any = !op.heredocs.is_empty();
        for source in &op.sources {
            if op.is_add() && remote::is_git_url(source) {
                return Err(ExecError::Unsupported(format!(
                    "ADD from a Git repository is not supported by rbuild yet: {source:?}"
                )));
            }
            if remote::is_http_url(source) {
                if !op.is_add() {
                    return Err(ExecError::InvalidSource {
                        source_path: source.clone(),
                        reason: "source can't be a URL for COPY".into(),
                    });
                }
                groups.push(vec![Item::Url(source.clone())]);
                found_any = true;
                continue;
            }
            let (pivot_base, pivot_rest) = split_pivot(source);
            if contains_wildcards(source) {
                wildcards.push(source.clone());
                let matches =
                    self.src
                        .expand(source)?
                        .ok_or_else(|| ExecError::SourceNotFound {
                            source_path: source.clone(),
                        })?;
                if matches.len() > 1 {
                    self.need_dir_dest()?;
                }
                found_any |= !matches.is_empty();
                let items = matches
                    .into_iter()
                    .map(|lexical| Item::Local {
                        parents: op.parents.then(|| {
                            strip_prefix(&lexical, &pivot_base).unwrap_or_else(|| lexical.clone())
                        }),
                        display: lexical.display(),
                        lexical,
                        from_wildcard: true,
                    })
                    .collect();
                groups.push(items);
            } else {
                found_any = true;
                let lexical = Rel::clamped(source);
                groups.push(vec![Item::Local {
                    parents: op.parents.then(|| pivot_rest.clone()),
                    display: source.clone(),
                    lexical,
                    from_wildcard: false,
                }]);
            }
        }
        if !found_any {
            return Err(ExecError::NoSourceFiles {
                patterns: wildcards,
            });
        }
        for (name, content) in &op.heredocs {
            groups.push(vec![Item::Heredoc(name.clone(), content.clone())]);
        }
        Ok(groups)
    }

    /// Resolves a local source: [`ExecError::SourceNotFound`] when it does not exist (or is
    /// hidden by `.dockerignore`), `None` when `--exclude` leaves it out whole.
    pub(crate) fn select_local(
        &self,
        lexical: &Rel,
        display: &str,
        from_wildcard: bool,
        parents: Option<&Rel>,
    ) -> Result<Option<Found>, ExecError> {
        let Some((phys, md)) = self.src.resolve(lexical)? else {
            return Err(ExecError::SourceNotFound {
                source_path: display.to_string(),
            });
        };
        let name = lexical
            .name()
            .or_else(|| phys.name())
            .map(OsStr::to_os_string)
            .unwrap_or_else(|| OsString::from("."));
        // `--exclude` applies to a wildcard match by its name (a match that is excluded is
        // left out whole), and with `--parents` to the path kept under the destination.
        if let Some(m) = &self.exclude {
            if let Some(kept) = parents.filter(|k| !k.is_root()) {
                let path = kept.rel_string();
                if m.matches(&path) {
                    let pos = Pos::top(phys.clone(), kept.clone());
                    if !md.is_dir()
                        || m.can_skip_dir(&path)
                        || !self.src.has_shown_descendant(&pos, Some(m))?
                    {
                        return Ok(None);
                    }
                }
            } else if parents.is_none() && from_wildcard && m.matches(&name.to_string_lossy()) {
                return Ok(None);
            }
        }
        Ok(Some(Found { phys, md, name }))
    }

    /// The entry `name` of the directory at `dir`, as the filters see it. A hidden directory
    /// is looked into only when a `!` pattern may show something below it.
    pub(crate) fn child(&self, dir: &Pos, name: &OsString) -> Result<Child, ExecError> {
        self.child_with(
            dir,
            name,
            |src| lstat(self.src.root, Side::Source, src),
            Metadata::is_dir,
        )
    }

    /// [`Selection::child`] with the caller's `lstat` (given the entry's path in the source
    /// root; `None`: it is gone).
    pub(crate) fn child_with<M>(
        &self,
        dir: &Pos,
        name: &OsString,
        stat: impl FnOnce(&Rel) -> Result<Option<M>, ExecError>,
        is_dir: impl Fn(&M) -> bool,
    ) -> Result<Child<M>, ExecError> {
        let (child, verdict) = self.src.child(dir, name, self.exclude.as_ref());
        let Some(md) = stat(&child.src)? else {
            return Ok(Child::Gone);
        };
        if verdict.hidden
            && (!is_dir(&md)
                || verdict.prune
                || !self
                    .src
                    .has_shown_descendant(&child, self.exclude.as_ref())?)
        {
            return Ok(Child::Hidden);
        }
        Ok(Child::Shown(child, md))
    }

    /// Owner and group a copied entry owned by `uid:gid` in the source gets.
    pub(crate) fn owner_of(&self, uid: u32, gid: u32) -> (u32, u32) {
        self.op.chown.unwrap_or(if self.op.keep_owners {
            (uid, gid)
        } else {
            (0, 0)
        })
    }

    /// The mode a copied entry gets: its own, or `--chmod`'s.
    pub(crate) fn mode_for(&self, mode: u32, is_dir: bool) -> Result<u32, ExecError> {
        match &self.op.chmod {
            Some(c) => chmod::apply(c, mode, is_dir),
            None => Ok(mode),
        }
    }
}

struct Copier<'a, 'j> {
    op: &'a CopyOp,
    sel: Selection<'a>,
    dest: &'a Root,
    stats: CopyStats,
    /// Source `(dev, ino)` of multiply-linked files → where the first copy went.
    links: HashMap<(u64, u64), Rel>,
    journal: Option<&'j mut (dyn CopyJournal + 'j)>,
}

impl Copier<'_, '_> {
    fn dest_is_dir_syntax(&self) -> bool {
        dest_is_dir_syntax(self.op)
    }

    /// Creates the destination directory (`dest/`) or its parent (`dest`), as BuildKit does
    /// before copying.
    fn prepare_dest(&self) -> Result<(), ExecError> {
        let clean = Rel::clamped(&self.op.dest);
        let dir = if self.dest_is_dir_syntax() {
            clean
        } else {
            clean.parent()
        };
        self.mkdir_p(&dir)
    }

    fn mkdir_p(&self, dir: &Rel) -> Result<(), ExecError> {
        self.dest
            .mkdir_all(dir.path(), 0o755, self.op.chown)
            .map(|_| ())
            .map_err(|e| ExecError::fs(Side::Dest, dir.display(), e))
    }

    /// The destination with its symlinks resolved in the destination root, and what is there.
    fn dest_state(&self) -> Result<(Rel, Option<Metadata>), ExecError> {
        let clean = Rel::clamped(&self.op.dest);
        let resolved = resolve_in_root(self.dest, Side::Dest, &clean, &mut |_, _| Ok(true))?;
        let md = lstat(self.dest, Side::Dest, &resolved)?;
        Ok((resolved, md))
    }

    /// Where a non-directory named `name` goes: into `dest` when it is a directory, else
    /// `dest` itself; the parent is created.
    fn file_target(&self, name: &OsStr) -> Result<Rel, ExecError> {
        let (resolved, md) = self.dest_state()?;
        let target = match md {
            Some(md) if md.is_dir() => resolved.join(name),
            _ => resolved,
        };
        if target.is_root() {
            return Err(ExecError::CannotReplaceDir {
                path: target.display(),
            });
        }
        self.mkdir_p(&target.parent())?;
        Ok(target)
    }

    /// The destination as a directory (created if missing).
    fn dir_target(&self) -> Result<Rel, ExecError> {
        let (resolved, md) = self.dest_state()?;
        match md {
            Some(md) if md.is_dir() => {}
            Some(_) => {
                return Err(ExecError::CannotCopyToNonDir {
                    path: resolved.display(),
                })
            }
            None => self.mkdir_p(&resolved)?,
        }
        Ok(resolved)
    }

    fn copy_item(&mut self, item: &Item) -> Result<(), ExecError> {
        match item {
            Item::Url(url) => self.copy_url(url),
            Item::Heredoc(name, content) => self.copy_heredoc(name, content),
            Item::Local {
                lexical,
                display,
                from_wildcard,
                parents,
            } => self.copy_local(lexical, display, *from_wildcard, parents.as_ref()),
        }
    }

    fn copy_local(
        &mut self,
        lexical: &Rel,
        display: &str,
        from_wildcard: bool,
        parents: Option<&Rel>,
    ) -> Result<(), ExecError> {
        let Some(Found { phys, md, name }) =
            self.sel
                .select_local(lexical, display, from_wildcard, parents)?
        else {
            self.stats.skipped += 1;
            return Ok(());
        };
        if self.op.unpack_archives && md.is_file() && self.try_unpack(&phys, display)? {
            return Ok(());
        }
        if let Some(kept) = parents {
            return self.copy_with_parents(lexical, kept, &phys, &md);
        }
        let top = Pos::top(phys, Rel::root());
        if md.is_dir() {
            let target = self.dir_target()?;
            self.copy_children(&top, &target)
        } else {
            let target = self.file_target(&name)?;
            self.copy_entry(&top, &md, &target, true)
        }
    }

    /// `--parents`: the kept path's directories are created under the destination with the
    /// source directories' metadata (when missing), then the source is copied at the end of it.
    fn copy_with_parents(
        &mut self,
        lexical: &Rel,
        kept: &Rel,
        phys: &Rel,
        md: &Metadata,
    ) -> Result<(), ExecError> {
        let base = self.dir_target()?;
        if kept.is_root() {
            let top = Pos::top(phys.clone(), Rel::root());
            return if md.is_dir() {
                self.copy_children(&top, &base)
            } else {
                Err(ExecError::CannotReplaceDir {
                    path: base.display(),
                })
            };
        }
        let pivot = pivot_of(lexical, kept);
        let mut created: Vec<(Pos, Metadata, Rel)> = Vec::new();
        for i in 1..kept.0.len() {
            let part = Rel(kept.0[..i].to_vec());
            let target = base.join_rel(&part);
            match lstat(self.dest, Side::Dest, &target)? {
                Some(t) if t.is_dir() => continue,
                Some(_) => {
                    return Err(ExecError::CannotCopyToNonDir {
                        path: target.display(),
                    })
                }
                None => {}
            }
            let Some((src_dir, src_md)) = self.sel.src.resolve(&pivot.join_rel(&part))? else {
                return Err(ExecError::SourceNotFound {
                    source_path: pivot.join_rel(&part).display(),
                });
            };
            self.dest
                .mkdir_all(target.path(), 0o700, None)
                .map_err(|e| ExecError::fs(Side::Dest, target.display(), e))?;
            self.stats.dirs += 1;
            created.push((Pos::top(src_dir, part), src_md, target));
        }
        let top = Pos::top(phys.clone(), kept.clone());
        self.copy_entry(&top, md, &base.join_rel(kept), true)?;
        for (_, src_md, target) in created.iter().rev() {
            self.apply_meta(src_md, target, None)?;
        }
        Ok(())
    }

    /// Copies the children of the directory at `dir` into the directory `target`.
    fn copy_children(&mut self, dir: &Pos, target: &Rel) -> Result<(), ExecError> {
        for name in self.sel.src.read_dir(&dir.src)? {
            match self.sel.child(dir, &name)? {
                Child::Gone => {}
                Child::Hidden => self.stats.skipped += 1,
                Child::Shown(child, md) => {
                    self.copy_entry(&child, &md, &target.join(&name), true)?
                }
            }
        }
        Ok(())
    }

    /// Copies one entry (`md` is its `lstat`) to `target`. `overwrite_meta`: an existing
    /// directory at `target` takes the source's metadata.
    fn copy_entry(
        &mut self,
        pos: &Pos,
        md: &Metadata,
        target: &Rel,
        overwrite_meta: bool,
    ) -> Result<(), ExecError> {
        let ft = md.file_type();
        if ft.is_dir() {
            let created = match lstat(self.dest, Side::Dest, target)? {
                Some(t) if t.is_dir() => false,
                Some(_) => {
                    return Err(ExecError::CannotCopyToNonDir {
                        path: target.display(),
                    })
                }
                None => {
                    self.dest
                        .mkdir_all(target.path(), 0o700, None)
                        .map_err(|e| ExecError::fs(Side::Dest, target.display(), e))?;
                    true
                }
            };
            self.stats.dirs += 1;
            self.copy_children(pos, target)?;
            if created || overwrite_meta {
                self.apply_meta(md, target, None)?;
                if let Some(j) = self.journal.as_deref_mut() {
                    j.dir(&target.bytes(), &pos.src.bytes());
                }
            }
            return Ok(());
        }
        if ft.is_socket() {
            self.stats.skipped += 1;
            return Ok(());
        }
        let stamp = self.journal.as_ref().and_then(|_| SourceStamp::of(md));
        if let (Some(j), Some(stamp)) = (self.journal.as_deref_mut(), stamp.as_ref()) {
            let (target_bytes, source_bytes) = (target.bytes(), pos.src.bytes());
            if j.in_place(&target_bytes, stamp) {
                j.entry(&target_bytes, &source_bytes, stamp);
                self.count_in_place(md);
                return Ok(());
            }
        }
        self.copy_non_dir(pos, md, target)?;
        if let (Some(j), Some(stamp)) = (self.journal.as_deref_mut(), stamp.as_ref()) {
            j.entry(&target.bytes(), &pos.src.bytes(), stamp);
        }
        Ok(())
    }

    /// Counts an entry a journal found in place as if it had been copied.
    fn count_in_place(&mut self, md: &Metadata) {
        let ft = md.file_type();
        if ft.is_file() {
            self.stats.files += 1;
            self.stats.bytes += md.len();
        } else if ft.is_symlink() {
            self.stats.symlinks += 1;
        } else {
            self.stats.devices += 1;
        }
    }

    /// Copies one non-directory, non-socket entry (`md` is its `lstat`) to `target`.
    fn copy_non_dir(&mut self, pos: &Pos, md: &Metadata, target: &Rel) -> Result<(), ExecError> {
        let ft = md.file_type();
        self.ensure_empty_target(target)?;
        if ft.is_file() {
            if md.nlink() > 1 {
                let key = (md.dev(), md.ino());
                if let Some(first) = self.links.get(&key) {
                    self.dest
                        .hardlink(first.path(), target.path())
                        .map_err(|e| ExecError::fs(Side::Dest, target.display(), e))?;
                    self.stats.hardlinks += 1;
                    return Ok(());
                }
                self.links.insert(key, target.clone());
            }
            let (mut file, fmd) = open_regular(self.sel.src.root, Side::Source, &pos.src)?;
            if (fmd.dev(), fmd.ino()) != (md.dev(), md.ino()) {
                return Err(ExecError::SourceChanged {
                    path: pos.src.display(),
                });
            }
            self.write_file(target, &mut file, &pos.src)?;
            self.apply_meta(md, target, Some(&file))?;
        } else if ft.is_symlink() {
            let link = self
                .sel
                .src
                .root
                .read_link(pos.src.path())
                .map_err(|e| ExecError::fs(Side::Source, pos.src.display(), e))?;
            self.dest
                .symlink(&link, target.path())
                .map_err(|e| ExecError::fs(Side::Dest, target.display(), e))?;
            self.stats.symlinks += 1;
            self.apply_meta(md, target, None)?;
        } else {
            let kind = if ft.is_fifo() {
                NodeKind::Fifo
            } else if ft.is_char_device() {
                NodeKind::Char
            } else {
                NodeKind::Block
            };
            let rdev = md.rdev();
            self.dest
                .mknod(
                    target.path(),
                    kind,
                    md.mode() & 0o7777,
                    rustix::fs::major(rdev),
                    rustix::fs::minor(rdev),
                )
                .map_err(|e| ExecError::fs(Side::Dest, target.display(), e))?;
            self.stats.devices += 1;
            self.apply_meta(md, target, None)?;
        }
        Ok(())
    }

    /// Makes room for a non-directory at `target`: an existing non-directory is removed (a
    /// symlink is never followed); an existing directory is an error.
    fn ensure_empty_target(&self, target: &Rel) -> Result<(), ExecError> {
        match lstat(self.dest, Side::Dest, target)? {
            None => Ok(()),
            Some(md) if md.is_dir() => Err(ExecError::CannotReplaceDir {
                path: target.display(),
            }),
            Some(_) => self
                .dest
                .remove_all(target.path())
                .map(|_| ())
                .map_err(|e| ExecError::fs(Side::Dest, target.display(), e)),
        }
    }

    /// Creates `target` (mode `0600` until [`Self::apply_meta`]) with `reader`'s content.
    fn write_file(
        &mut self,
        target: &Rel,
        reader: &mut dyn Read,
        from: &Rel,
    ) -> Result<(), ExecError> {
        let mut out = self
            .dest
            .create_file(target.path(), 0o600)
            .map_err(|e| ExecError::fs(Side::Dest, target.display(), e))?;
        let n = io::copy(reader, &mut out).map_err(|e| {
            let side = if e.kind() == io::ErrorKind::WriteZero {
                Side::Dest
            } else {
                Side::Source
            };
            ExecError::io("copy", side, from.display(), e)
        })?;
        self.stats.files += 1;
        self.stats.bytes += n;
        Ok(())
    }

    /// Owner, mode, xattrs (from `file`) and times of a copied entry.
    fn apply_meta(
        &self,
        md: &Metadata,
        target: &Rel,
        file: Option<&File>,
    ) -> Result<(), ExecError> {
        let fail = |e| ExecError::fs(Side::Dest, target.display(), e);
        let (uid, gid) = self.sel.owner_of(md.uid(), md.gid());
        self.dest.lchown(target.path(), uid, gid).map_err(fail)?;
        if !md.file_type().is_symlink() {
            let mode = self.mode_for(md.mode() & 0o7777, md.is_dir())?;
            self.dest.chmod(target.path(), mode).map_err(fail)?;
        }
        if let Some(f) = file {
            copy_xattrs(f, self.dest, target);
        }
        let mtime = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let atime = md.accessed().unwrap_or(mtime);
        self.dest
            .set_times(target.path(), atime, mtime)
            .map_err(fail)?;
        Ok(())
    }

    fn mode_for(&self, mode: u32, is_dir: bool) -> Result<u32, ExecError> {
        self.sel.mode_for(mode, is_dir)
    }

    /// `ADD` of a local file: extracts it into the destination directory if it is an archive.
    fn try_unpack(&mut self, phys: &Rel, display: &str) -> Result<bool, ExecError> {
        let (mut file, _) = open_regular(self.sel.src.root, Side::Source, phys)?;
        let dest_dir = Rel::clamped(&self.op.dest);
        let open_dest = || -> Result<Root, String> {
            self.dest
                .mkdir_all(dest_dir.path(), 0o755, self.op.chown)
                .map_err(|e| e.to_string())?;
            self.dest
                .open_beneath(dest_dir.path())
                .map_err(|e| e.to_string())
        };
        let extracted = archive::extract_if_archive(
            &mut file,
            &open_dest,
            self.op.chown,
            self.op.archive_limits,
        )
        .map_err(|reason| ExecError::Archive {
            source_path: display.to_string(),
            reason,
        })?;
        match extracted {
            Some(stats) => {
                self.stats.archives += 1;
                self.stats.files += stats.files;
                self.stats.bytes += stats.bytes;
                self.stats.dirs += stats.dirs;
                self.stats.symlinks += stats.symlinks;
                self.stats.hardlinks += stats.hardlinks;
                self.stats.devices += stats.devices;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn copy_url(&mut self, url: &str) -> Result<(), ExecError> {
        let mut dl = remote::download(url, self.op.checksum.as_deref(), &self.op.download_limits)?;
        let target = self.file_target(OsStr::new(&dl.name))?;
        self.ensure_empty_target(&target)?;
        let from = Rel(vec![OsString::from(url)]);
        self.write_file(&target, &mut dl.file, &from)?;
        let when = dl.modified;
        self.finish_new_file(&target, 0o600, when)
    }

    fn copy_heredoc(&mut self, name: &str, content: &str) -> Result<(), ExecError> {
        let clean = Rel::clamped(name);
        let Some(base) = clean.name().map(OsStr::to_os_string) else {
            return Err(ExecError::InvalidSource {
                source_path: format!("<<{name}"),
                reason: "a heredoc source needs a file name".into(),
            });
        };
        let target = self.file_target(&base)?;
        self.ensure_empty_target(&target)?;
        let from = Rel(vec![OsString::from(format!("<<{name}"))]);
        self.write_file(&target, &mut content.as_bytes(), &from)?;
        self.finish_new_file(&target, 0o644, None)
    }

    /// Owner, mode and (if known) mtime of a file that has no source metadata.
    fn finish_new_file(
        &self,
        target: &Rel,
        mode: u32,
        mtime: Option<SystemTime>,
    ) -> Result<(), ExecError> {
        let fail = |e| ExecError::fs(Side::Dest, target.display(), e);
        let (uid, gid) = self.op.chown.unwrap_or((0, 0));
        self.dest.lchown(target.path(), uid, gid).map_err(fail)?;
        let mode = self.mode_for(mode, false)?;
        self.dest.chmod(target.path(), mode).map_err(fail)?;
        if let Some(t) = mtime {
            self.dest.set_times(target.path(), t, t).map_err(fail)?;
        }
        Ok(())
    }
}

/// Copies the extended attributes of the open source file to `target`, best effort: like
/// BuildKit, an attribute the destination refuses (`trusted.*` without privilege, a
/// filesystem without xattrs) is skipped.
fn copy_xattrs(file: &File, dest: &Root, target: &Rel) {
    for (name, value) in read_xattrs(file) {
        let _ = dest.set_xattr(target.path(), &name, &value);
    }
}

/// The extended attributes of an open file that a copy carries over, in the order the kernel
/// lists them; best effort (none when they cannot be listed, an attribute that cannot be read
/// is left out).
pub(crate) fn read_xattrs(file: &File) -> Vec<(OsString, Vec<u8>)> {
    // The size of the name list first: most files have none, and then nothing is allocated.
    if let Ok(0) = rustix::fs::flistxattr_query(file.as_fd()) {
        return Vec::new();
    }
    let mut names = vec![0u8; 64 * 1024];
    let Ok(n) = rustix::fs::flistxattr(file.as_fd(), &mut names[..]) else {
        return Vec::new();
    };
    let mut value = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let name = OsStr::from_bytes(name);
        if let Ok(len) = rustix::fs::fgetxattr(file.as_fd(), name, &mut value[..]) {
            out.push((name.to_os_string(), value[..len].to_vec()));
        }
    }
    out
}

/// Splits a `--parents` source at its pivot: `a/./b/c` → (`a`, `b/c`); without a `/./`
/// pivot the whole cleaned path is kept.
fn split_pivot(source: &str) -> (Rel, Rel) {
    let trimmed = source.trim_start_matches('/');
    let mut s = trimmed;
    while let Some(rest) = s.strip_prefix("./") {
        s = rest;
    }
    match s.find("/./") {
        Some(i) => (Rel::clamped(&s[..i]), Rel::clamped(&s[i + 3..])),
        None => (Rel::root(), Rel::clamped(s)),
    }
}

/// With `--parents`, the lexical path of the pivot of a source: what precedes the kept part.
pub(crate) fn pivot_of(lexical: &Rel, kept: &Rel) -> Rel {
    let pivot_len = lexical.0.len().saturating_sub(kept.0.len());
    Rel(lexical.0[..pivot_len].to_vec())
}

fn strip_prefix(path: &Rel, prefix: &Rel) -> Option<Rel> {
    if path.0.len() >= prefix.0.len() && path.0[..prefix.0.len()] == prefix.0[..] {
        Some(Rel(path.0[prefix.0.len()..].to_vec()))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pivots() {
        let cases: &[(&str, &str, &str)] = &[
            ("a/b/c.txt", "/", "/a/b/c.txt"),
            ("./a/b", "/", "/a/b"),
            ("a/./b/c", "/a", "/b/c"),
            ("./x/./y/*.txt", "/x", "/y/*.txt"),
            ("/abs/./k", "/abs", "/k"),
        ];
        for (src, base, rest) in cases {
            let (b, r) = split_pivot(src);
            assert_eq!(
                (b.display(), r.display()),
                (base.to_string(), rest.to_string()),
                "{src}"
            );
        }
    }

    #[test]
    fn exclude_patterns_are_cleaned() {
        assert_eq!(clean_pattern("/a/./b/"), "a/b");
        assert_eq!(clean_pattern("! /x"), "!x");
        assert_eq!(clean_pattern("**/*.md"), "**/*.md");
    }
}
