//! The content checksum of what one `COPY`/`ADD` selects: [`checksum`] walks the source tree
//! exactly as [`copy`](crate::copy()) would — the same planning, wildcard expansion,
//! `.dockerignore`, `--exclude` and `--parents` decisions (both go through
//! `copy::Selection`), so the same missing source fails the same way — and hashes a canonical
//! listing of every selected entry instead of copying it.
//!
//! **What counts.** For each entry, in the order `copy` visits them: its path as it is placed
//! relative to the destination (a non-directory source by its name, a directory source's
//! entries below it, `--parents`' kept paths and their parent directories), its type, its mode
//! after `--chmod`, its owner after `--chown` (the source's with [`CopyOp::keep_owners`], else
//! `0:0`), and: a regular file's size and digest (sha256 of its content, combined with its
//! extended attributes when it has some, since `copy` carries them over), a symlink's target
//! verbatim, a device's numbers, a hardlink's first path in its group (files linked together
//! inside one source stay linked). Heredoc sources count by name, content, mode and owner.
//! Mtimes do not count, nor does anything that is not selected: an ignored, excluded or
//! unmatched file can change freely. A local archive of `ADD` is hashed as a file (what it
//! extracts to follows from its content); URL sources are not fetched: they are returned in
//! [`SourceChecksum::remote_urls`] for the caller to decide on. The destination does not take
//! part: where the listing lands depends on the destination tree, which the caller's key covers
//! through the parent step, and on the operation's definition (`dest`, flags), which the caller
//! hashes with it.
//!
//! **Cost.** Directories are walked in parallel (rayon) and an ignored or excluded directory
//! whose contents cannot be re-included is never opened. Each directory is opened once (from
//! its parent's fd), read with `getdents64` into one buffer of names, and its entries are
//! `statx`ed by name relative to it; the entries of one directory live in one vector with
//! their names in one buffer, and a subdirectory's entries hang below its entry, so a walk
//! allocates per directory, not per entry, and the listing is folded depth first from that
//! tree. Files are read through the source
//! [`Root`] (`openat2` confinement, as `copy` reads them), streamed through sha256 in fixed
//! buffers, also in parallel. A [`FileDigests`] index is asked first by each file's identity
//! ([`FileKey`]: device, inode, size, mtime, ctime), so an unchanged file is only `lstat`ed; a
//! digest is given to the index only when the file did not change while it was read and its
//! ctime is at least [`SETTLE_NS`] older than the start of the checksum — a file changed again
//! within the same timestamp tick could otherwise keep its key with new content (Git's "racy
//! timestamp" problem), so recently changed files are simply re-read next time.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{CStr, OsString};
use std::fs::Metadata;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::SystemTime;

use rayon::prelude::*;
use rbuild_fsutil::Root;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, StatxFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

pub use rbuild_cache::{FileDigests, FileKey, NoIndex};

use crate::copy::{pivot_of, read_xattrs, Child, CopyOp, Found, Item, Selection};
use crate::error::{ExecError, Side};
use crate::paths::{open_regular, Rel};
use crate::source::Pos;

/// How much older than the start of a checksum a file's ctime must be for its digest to be
/// recorded in the index: more than the timestamp granularity of the filesystems a context
/// lives on (a kernel tick on ext4, xfs, btrfs, tmpfs; a second on some others).
pub const SETTLE_NS: i128 = 2_000_000_000;

/// The version of the listing format; part of every checksum.
const FORMAT: &[u8] = b"rbuild copy-source checksum v1\0";

/// Read buffer per thread.
const READ_BUF: usize = 128 * 1024;

/// What [`checksum`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceChecksum {
    /// sha256 of the canonical listing (see the [module docs](self)).
    pub digest: [u8; 32],
    /// The `ADD` URL sources, in order: not fetched, not part of `digest`.
    pub remote_urls: Vec<String>,
    /// What it took.
    pub stats: ChecksumStats,
}

impl SourceChecksum {
    /// The digest as `sha256:<hex>`.
    pub fn digest_string(&self) -> String {
        let mut s = String::from("sha256:");
        for b in self.digest {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

/// Counters of one [`checksum`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChecksumStats {
    /// Entries in the listing (heredocs included, URLs not).
    pub entries: u64,
    /// Regular files among them whose digest was needed (hardlinks after the first not).
    pub files: u64,
    /// Files whose content was read (the others came from the index).
    pub files_read: u64,
    /// Bytes of content read.
    pub bytes_read: u64,
}

/// The checksum of what `copy(op, src, _)` would copy: see the [module docs](self). Errors are
/// `copy`'s for the same sources (missing sources, bad patterns, a `--chmod` that does not
/// apply, a file replaced while being read), but not those that depend on the destination.
pub fn checksum(
    op: &CopyOp,
    src: &Root,
    digests: &dyn FileDigests,
) -> Result<SourceChecksum, ExecError> {
    let started = now_ns();
    let sel = Selection::new(op, src)?;
    let groups = sel.plan()?;

    // 1. What is selected, item by item, in copy's order (the digests the index already has
    //    are looked up on the way).
    let mut listed: Vec<Listed> = Vec::new();
    for (group, items) in groups.iter().enumerate() {
        listed.push(Listed::Group(group as u64));
        for item in items {
            if let Some(l) = list_item(&sel, item, digests)? {
                listed.push(l);
            }
        }
    }

    // 2. The other file digests and symlink targets, in parallel.
    let counters = Counters::default();
    let mut work: Vec<Pending<'_>> = Vec::new();
    for l in &mut listed {
        if let Listed::Local { top, .. } = l {
            if top.links {
                link_groups(top);
            }
            if top.unfilled {
                pending(top, &mut work);
            }
        }
    }
    if !work.is_empty() {
        work.par_iter_mut()
            .try_for_each(|p| fill_detail(src, p, digests, started - SETTLE_NS, &counters))?;
    }
    drop(work);

    // 3. The canonical listing, folded in order (a big one hashed on another thread as it is
    //    written).
    let stats = ChecksumStats {
        files_read: counters.files_read.load(Ordering::Relaxed),
        bytes_read: counters.bytes_read.load(Ordering::Relaxed),
        ..ChecksumStats::default()
    };
    let entries: usize = listed
        .iter()
        .map(|l| match l {
            Listed::Local { top, .. } => top.count,
            _ => 1,
        })
        .sum();
    let fold = |out: &mut Listing<'_>| fold_listing(out, &sel, &listed, stats);
    let (digest, folded) = if entries >= PIPE_ENTRIES {
        Listing::digest_aside(fold)
    } else {
        Listing::digest_of(fold)
    };
    let (remote_urls, stats) = folded?;
    Ok(SourceChecksum {
        digest,
        remote_urls,
        stats,
    })
}

/// Entries from which a listing is hashed on another thread while it is written.
const PIPE_ENTRIES: usize = 4096;

/// Writes the canonical listing of `listed` into `out`; returns the URL sources and `stats`
/// with the entries counted.
fn fold_listing(
    out: &mut Listing<'_>,
    sel: &Selection<'_>,
    listed: &[Listed],
    mut stats: ChecksumStats,
) -> Result<(Vec<String>, ChecksumStats), ExecError> {
    let mut remote_urls = Vec::new();
    out.bytes(FORMAT);
    for l in listed {
        match l {
            Listed::Group(n) => {
                out.tag(b'G');
                out.u64(*n);
            }
            Listed::Url(url) => remote_urls.push(url.clone()),
            Listed::Heredoc { name, content } => {
                let mode = sel.mode_for(0o644, false)?;
                let (uid, gid) = sel.op.chown.unwrap_or((0, 0));
                out.tag(b'H');
                out.bytes(name.as_bytes());
                out.bytes(content.as_bytes());
                out.u32(mode);
                out.u32(uid);
                out.u32(gid);
                stats.entries += 1;
            }
            Listed::Local {
                kind,
                placed_base,
                parent_dirs,
                top,
            } => {
                out.tag(b'L');
                out.tag(*kind);
                let mut path = path_bytes(placed_base);
                out.path(&path);
                for (part, meta) in parent_dirs {
                    out.tag(b'd');
                    out.path(&path_bytes(part));
                    out.meta(sel, meta.mode, meta.uid, meta.gid)?;
                    stats.entries += 1;
                }
                // Each entry is placed at `placed_base` + its path below the source.
                out.dir(sel, &mut path, top, &mut stats)?;
                out.tag(b'E');
            }
        }
    }
    Ok((remote_urls, stats))
}

/// One planned item, listed.
enum Listed {
    /// The start of a source argument's items.
    Group(u64),
    Url(String),
    Heredoc {
        /// The file name it gets.
        name: OsString,
        content: String,
    },
    Local {
        /// `D`: a directory's contents into the destination; `F`: one non-directory, placed by
        /// name; `P`: `--parents`, placed at its kept path.
        kind: u8,
        /// Where it is placed, relative to the destination (directory).
        placed_base: Rel,
        /// `--parents`: the kept path's directories, with their source's metadata.
        parent_dirs: Vec<(Rel, Meta)>,
        /// The entries: for `D` the source directory's, for `F` and `P` the source itself
        /// (under an empty name: it is placed at `placed_base`), with a `P` directory's
        /// entries below it.
        top: Dir,
    },
}

/// The selected entries of one directory, in `copy`'s order (names sorted); a directory
/// entry's own entries hang below it, so the whole item is listed depth first without a path
/// per entry.
struct Dir {
    /// Its path in the source root.
    src: Rel,
    /// The entries' names, each followed by a NUL (as `statx` was given them).
    names: Vec<u8>,
    entries: Vec<Entry>,
    /// Entries here and below.
    count: usize,
    /// Some entry here or below is [`Detail::Unfilled`].
    unfilled: bool,
    /// Some regular file here or below has other links (see [`link_groups`]).
    links: bool,
}

/// A selected entry: what the listing needs of it.
struct Entry {
    /// Its name in its directory's `names`: start and length (without the NUL). Empty for a
    /// source that is placed by its own path.
    name: (u32, u32),
    /// `st_mode`: type and permission bits.
    mode: u32,
    uid: u32,
    gid: u32,
    detail: Detail,
}

/// What is hashed for an entry besides its name, mode and owner.
enum Detail {
    /// A directory, with its entries when it was walked.
    Dir(Option<Box<Dir>>),
    /// A fifo or a device, and its device number.
    Special(u64),
    /// A regular file's size and digest.
    File { size: u64, digest: [u8; 32] },
    /// A symlink's target, verbatim.
    Target(Vec<u8>),
    /// A regular file or a symlink whose digest or target is still to be found; its `lstat`.
    Unfilled(Box<Meta>),
    /// A hardlink to the entry at this index of the same item.
    LinkTo(usize),
}

impl Entry {
    /// The entry named `name` of `lstat` `meta`, its details still to be found: a walked
    /// directory's entries are set by the walk.
    fn of(name: (u32, u32), meta: Meta) -> Entry {
        let detail = match meta.file_type() {
            FileType::Directory => Detail::Dir(None),
            FileType::RegularFile | FileType::Symlink => Detail::Unfilled(Box::new(meta)),
            _ => Detail::Special(meta.rdev),
        };
        Entry::with(name, &meta, detail)
    }

    /// The entry named `name` of `lstat` `meta` with its `detail`.
    fn with(name: (u32, u32), meta: &Meta, detail: Detail) -> Entry {
        Entry {
            name,
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            detail,
        }
    }

    fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }

    /// A regular file linked elsewhere, whose digest is still to be found.
    fn is_linked_file(&self) -> bool {
        matches!(&self.detail, Detail::Unfilled(meta) if meta.is_file() && meta.nlink > 1)
    }
}

impl Dir {
    /// A directory that holds the entries `entries` (whose directories are walked).
    fn new(src: Rel, names: Vec<u8>, entries: Vec<Entry>) -> Dir {
        let mut dir = Dir {
            src,
            names,
            count: entries.len(),
            unfilled: false,
            links: false,
            entries,
        };
        for e in &dir.entries {
            match &e.detail {
                Detail::Dir(Some(below)) => {
                    dir.count += below.count;
                    dir.unfilled |= below.unfilled;
                    dir.links |= below.links;
                }
                Detail::Unfilled(_) => {
                    dir.unfilled = true;
                    dir.links |= e.is_linked_file();
                }
                _ => {}
            }
        }
        dir
    }

    /// The name of the entry named by `at`.
    fn name(&self, at: (u32, u32)) -> &[u8] {
        let (start, len) = (at.0 as usize, at.1 as usize);
        self.names.get(start..start + len).unwrap_or_default()
    }
}

/// The path in the source root of the entry `name` of the directory `dir`.
fn src_of(dir: &Rel, name: &[u8]) -> Rel {
    if name.is_empty() {
        return dir.clone();
    }
    dir.join(std::ffi::OsStr::from_bytes(name))
}

/// A relative path as the listing has it: each component followed by `/`.
fn path_bytes(rel: &Rel) -> Vec<u8> {
    let mut out = Vec::new();
    for c in &rel.0 {
        out.extend_from_slice(c.as_bytes());
        out.push(b'/');
    }
    out
}

/// What the listing needs of an entry's `lstat` (a `std::fs::Metadata` is twice as big, and
/// cannot be had from `statx` relative to a directory fd).
#[derive(Clone, Copy, Debug)]
struct Meta {
    /// `st_mode`: type and permission bits.
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    rdev: u64,
    /// Identity, size and times.
    key: FileKey,
}

impl Meta {
    fn from_std(md: &Metadata) -> Meta {
        Meta {
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            nlink: md.nlink(),
            rdev: md.rdev(),
            key: FileKey::from_metadata(md),
        }
    }

    /// The same values as [`Meta::from_std`] (which `statx` too).
    fn from_statx(st: &rustix::fs::Statx) -> Meta {
        let ns = |t: rustix::fs::StatxTimestamp| {
            i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec)
        };
        Meta {
            mode: u32::from(st.stx_mode),
            uid: st.stx_uid,
            gid: st.stx_gid,
            nlink: u64::from(st.stx_nlink),
            rdev: rustix::fs::makedev(st.stx_rdev_major, st.stx_rdev_minor),
            key: FileKey {
                dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor),
                ino: st.stx_ino,
                size: st.stx_size,
                mtime_ns: ns(st.stx_mtime),
                ctime_ns: ns(st.stx_ctime),
            },
        }
    }

    fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }

    fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }

    fn is_file(&self) -> bool {
        self.file_type() == FileType::RegularFile
    }
}

/// Lists one item as `copy` would copy it (`None`: excluded whole, nothing copied).
fn list_item(
    sel: &Selection<'_>,
    item: &Item,
    digests: &dyn FileDigests,
) -> Result<Option<Listed>, ExecError> {
    let (lexical, display, from_wildcard, parents) = match item {
        Item::Url(url) => return Ok(Some(Listed::Url(url.clone()))),
        Item::Heredoc(name, content) => {
            let Some(base) = Rel::clamped(name).name().map(|n| n.to_os_string()) else {
                return Err(ExecError::InvalidSource {
                    source_path: format!("<<{name}"),
                    reason: "a heredoc source needs a file name".into(),
                });
            };
            return Ok(Some(Listed::Heredoc {
                name: base,
                content: content.clone(),
            }));
        }
        Item::Local {
            lexical,
            display,
            from_wildcard,
            parents,
        } => (lexical, display, *from_wildcard, parents.as_ref()),
    };
    let Some(Found { phys, md, name }) =
        sel.select_local(lexical, display, from_wildcard, parents)?
    else {
        return Ok(None);
    };
    let walker = Walker { sel, digests };
    let mut parent_dirs = Vec::new();
    let (kind, placed_base, top) = match parents {
        Some(kept) if kept.is_root() => {
            if !md.is_dir() {
                return Err(ExecError::CannotReplaceDir {
                    path: Rel::clamped(&sel.op.dest).display(),
                });
            }
            (
                b'D',
                Rel::root(),
                walker.walk(&Pos::top(phys.clone(), Rel::root()))?,
            )
        }
        Some(kept) => {
            let pivot = pivot_of(lexical, kept);
            for i in 1..kept.0.len() {
                let part = Rel(kept.0[..i].to_vec());
                // `copy` needs them only where the destination lacks the directory; a missing
                // one (which resolving the whole path rules out) leaves nothing to hash.
                if let Some((_, dir_md)) = sel.src.resolve(&pivot.join_rel(&part))? {
                    parent_dirs.push((part, Meta::from_std(&dir_md)));
                }
            }
            let mut entries = Vec::new();
            // `copy` skips a socket source.
            if !md.file_type().is_socket() {
                let mut e = Entry::of((0, 0), Meta::from_std(&md));
                if md.is_dir() {
                    let below = walker.walk(&Pos::top(phys.clone(), kept.clone()))?;
                    e.detail = Detail::Dir(Some(Box::new(below)));
                }
                entries.push(e);
            }
            (
                b'P',
                kept.clone(),
                Dir::new(phys.clone(), Vec::new(), entries),
            )
        }
        None if md.is_dir() => (
            b'D',
            Rel::root(),
            walker.walk(&Pos::top(phys.clone(), Rel::root()))?,
        ),
        None => {
            let mut entries = Vec::new();
            // `copy` skips a socket source.
            if !md.file_type().is_socket() {
                entries.push(Entry::of((0, 0), Meta::from_std(&md)));
            }
            (
                b'F',
                Rel(vec![name]),
                Dir::new(phys.clone(), Vec::new(), entries),
            )
        }
    };
    Ok(Some(Listed::Local {
        kind,
        placed_base,
        parent_dirs,
        top,
    }))
}

/// A directory's entries are looked at in runs of this many, which idle threads can take over
/// (a run of a few `statx` is not worth a task of its own)...
const STAT_RUN: usize = 512;
/// ... or of this many when `.dockerignore` or `--exclude` patterns are matched against each.
const FILTERED_RUN: usize = 32;

/// getdents64 buffer per thread.
const DENTS_BUF: usize = 32 * 1024;

/// The walk of one item's directories.
struct Walker<'s, 'a> {
    sel: &'s Selection<'a>,
    digests: &'s dyn FileDigests,
}

impl Walker<'_, '_> {
    /// The entries below the directory at `dir`, depth first with names sorted: `copy`'s
    /// order. Subdirectories are walked in parallel, and a big directory's entries are looked
    /// at in parallel runs.
    ///
    /// Each directory is opened once — the top one beneath the source root
    /// (`openat2(RESOLVE_IN_ROOT)`, as `copy` reads it), the others by name from their
    /// parent's fd, never following a symlink — read with `getdents64` into one buffer, and
    /// its entries are `statx`ed and `readlinkat`ed relative to that fd by their
    /// single-component names, never following a final symlink: one system call per entry,
    /// where a path from the root costs three, and nothing outside the directory is
    /// reachable. A regular file's digest is taken from the index when the index is ready
    /// (the others are filled in after the walk).
    fn walk(&self, dir: &Pos) -> Result<Dir, ExecError> {
        let fd = open_dir(self.sel, &dir.src)?;
        self.walk_open(dir, &fd)
    }

    /// [`Walker::walk`] of the directory `dir`, open as `fd`.
    fn walk_open(&self, dir: &Pos, fd: &OwnedFd) -> Result<Dir, ExecError> {
        let (names, order) = match read_names(fd) {
            Ok(found) => found,
            Err(e) => return Err(dir_error(self.sel, &dir.src, e)),
        };
        // Filters that can hide an entry: each entry then goes through `copy`'s decision.
        let filtered =
            self.sel.src.ignore.is_some_and(|m| !m.is_empty()) || self.sel.exclude.is_some();
        // Each name's entry (none when it is gone, hidden or a socket), looked at in runs that
        // other threads may take; the directories among them, with their walk positions.
        let mut slots: Vec<Option<Entry>> = Vec::with_capacity(order.len());
        slots.resize_with(order.len(), || None);
        let look = |first: usize, slots: &mut [Option<Entry>], at: &[(u32, u32)]| {
            let mut dirs = Vec::new();
            for (i, (slot, at)) in slots.iter_mut().zip(at).enumerate() {
                if let Some((e, pos)) = self.look_at(dir, fd, &names, *at, filtered)? {
                    if let Some(pos) = pos {
                        dirs.push((first + i, pos));
                    }
                    *slot = Some(e);
                }
            }
            Ok::<_, ExecError>(dirs)
        };
        let run = if filtered { FILTERED_RUN } else { STAT_RUN };
        let subdirs: Vec<(usize, Pos)> = if order.len() <= run {
            look(0, &mut slots, &order)?
        } else {
            slots
                .par_chunks_mut(run)
                .zip(order.par_chunks(run))
                .enumerate()
                .map(|(n, (slots, at))| look(n * run, slots, at))
                .collect::<Result<Vec<_>, ExecError>>()?
                .into_iter()
                .flatten()
                .collect()
        };
        let walked = subdirs
            .par_iter()
            .map(|(i, pos)| {
                let at = slots
                    .get(*i)
                    .and_then(Option::as_ref)
                    .map_or((0, 0), |e| e.name);
                let child =
                    match names_cstr(&names, at).and_then(|name| open_child_dir(fd, name).ok()) {
                        Some(child) => child,
                        // The same failure through `copy`'s own path, for its message.
                        None => open_dir(self.sel, &pos.src)?,
                    };
                self.walk_open(pos, &child)
            })
            .collect::<Result<Vec<Dir>, ExecError>>()?;
        for ((i, _), below) in subdirs.iter().zip(walked) {
            if let Some(Some(e)) = slots.get_mut(*i) {
                e.detail = Detail::Dir(Some(Box::new(below)));
            }
        }
        // `filter_map` is collected in place (an `Option<Entry>` is as big as an `Entry`);
        // `flatten` would copy into a new vector.
        #[allow(clippy::filter_map_identity)]
        let entries: Vec<Entry> = slots.into_iter().filter_map(|e| e).collect();
        Ok(Dir::new(dir.src.clone(), names, entries))
    }

    /// The entry named by `at` in `names` of the directory `dir` (open as `fd`): `None` when
    /// it is gone, hidden or a socket; with its walk position when it is a directory.
    fn look_at(
        &self,
        dir: &Pos,
        fd: &OwnedFd,
        names: &[u8],
        at: (u32, u32),
        filtered: bool,
    ) -> Result<Option<(Entry, Option<Pos>)>, ExecError> {
        let Some(cname) = names_cstr(names, at) else {
            return Ok(None);
        };
        let name = cname.to_bytes();
        let (meta, pos) = if filtered {
            let name = std::ffi::OsStr::from_bytes(name).to_os_string();
            let shown =
                self.sel
                    .child_with(dir, &name, |src| stat_at(fd, cname, src), Meta::is_dir)?;
            let Child::Shown(child, meta) = shown else {
                return Ok(None);
            };
            (meta, Some(child))
        } else {
            let Some(meta) = stat_at_named(fd, cname, &dir.src)? else {
                return Ok(None);
            };
            (meta, None)
        };
        let detail = match meta.file_type() {
            // `copy` skips sockets (a layer cannot hold them).
            FileType::Socket => return Ok(None),
            FileType::Directory => {
                let pos = match pos {
                    Some(pos) => pos,
                    None => {
                        let name = std::ffi::OsStr::from_bytes(name).to_os_string();
                        self.sel.src.child(dir, &name, None).0
                    }
                };
                return Ok(Some((Entry::of(at, meta), Some(pos))));
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(fd, cname, Vec::new()).map_err(|err| {
                    ExecError::io(
                        "readlink",
                        Side::Source,
                        src_of(&dir.src, name).display(),
                        err.into(),
                    )
                })?;
                Detail::Target(target.into_bytes())
            }
            // Hardlinked files wait for `link_groups`: only the first of a group is hashed.
            FileType::RegularFile if meta.nlink <= 1 && self.digests.ready() => {
                match self.digests.get(&meta.key) {
                    Some(digest) => Detail::File {
                        size: meta.key.size,
                        digest,
                    },
                    None => Detail::Unfilled(Box::new(meta)),
                }
            }
            _ => return Ok(Some((Entry::of(at, meta), None))),
        };
        Ok(Some((Entry::with(at, &meta, detail), None)))
    }
}

/// The name at `at` in a directory's `names`, with its NUL.
fn names_cstr(names: &[u8], at: (u32, u32)) -> Option<&CStr> {
    let (start, len) = (at.0 as usize, at.1 as usize);
    CStr::from_bytes_with_nul(names.get(start..start + len + 1)?).ok()
}

/// A directory's names, each followed by a NUL in one buffer, and where each is (start,
/// length) in name order.
type Names = (Vec<u8>, Vec<(u32, u32)>);

/// The names in the directory open as `fd` (without `.` and `..`), sorted as
/// [`Root::read_dir`] sorts them.
fn read_names(fd: &OwnedFd) -> Result<Names, Errno> {
    thread_local! {
        static DENTS: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(DENTS_BUF));
    }
    let mut names = Vec::new();
    let mut order = Vec::new();
    DENTS.with(|buf| -> Result<(), Errno> {
        let mut buf = buf.borrow_mut();
        let mut dents = rustix::fs::RawDir::new(fd, buf.spare_capacity_mut());
        while let Some(entry) = dents.next() {
            let entry = entry?;
            let name = entry.file_name().to_bytes_with_nul();
            if name == b".\0" || name == b"..\0" {
                continue;
            }
            let start = u32::try_from(names.len()).map_err(|_| Errno::NOMEM)?;
            let len = u32::try_from(name.len() - 1).map_err(|_| Errno::NAMETOOLONG)?;
            names.extend_from_slice(name);
            order.push((start, len));
        }
        Ok(())
    })?;
    let key = |at: &(u32, u32)| {
        let (start, len) = (at.0 as usize, at.1 as usize);
        names.get(start..start + len).unwrap_or_default()
    };
    order.sort_unstable_by(|a, b| key(a).cmp(key(b)));
    Ok((names, order))
}

/// Opens the subdirectory `name` of the directory open as `dir`, not following a symlink.
fn open_child_dir(dir: &OwnedFd, name: &CStr) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens the directory `src` beneath the source root. Failures are reported exactly as `copy`
/// reports them.
fn open_dir(sel: &Selection<'_>, src: &Rel) -> Result<OwnedFd, ExecError> {
    let arg = if src.is_root() {
        std::path::PathBuf::from(".")
    } else {
        src.path()
    };
    rustix::fs::openat2(
        sel.src.root.as_fd(),
        &arg,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| dir_error(sel, src, e))
}

/// A failure to open or read the directory `src`: the same failure through `copy`'s own path,
/// for its message.
fn dir_error(sel: &Selection<'_>, src: &Rel, e: Errno) -> ExecError {
    match sel.src.read_dir(src) {
        Err(copy_error) => copy_error,
        Ok(_) => ExecError::io("read directory", Side::Source, src.display(), e.into()),
    }
}

/// `lstat` of the entry `name` of the directory `dir` (whose path in the source root is `src`);
/// `None` when it is gone.
fn stat_at(dir: &OwnedFd, name: &CStr, src: &Rel) -> Result<Option<Meta>, ExecError> {
    match statx_at(dir, name) {
        Ok(st) => Ok(Some(Meta::from_statx(&st))),
        Err(Errno::NOENT | Errno::NOTDIR) => Ok(None),
        Err(e) => Err(ExecError::io("stat", Side::Source, src.display(), e.into())),
    }
}

/// [`stat_at`] of the entry `name` of the directory at `dir_src` (its path only made for an
/// error).
fn stat_at_named(dir: &OwnedFd, name: &CStr, dir_src: &Rel) -> Result<Option<Meta>, ExecError> {
    match statx_at(dir, name) {
        Ok(st) => Ok(Some(Meta::from_statx(&st))),
        Err(Errno::NOENT | Errno::NOTDIR) => Ok(None),
        Err(e) => Err(ExecError::io(
            "stat",
            Side::Source,
            src_of(dir_src, name.to_bytes()).display(),
            e.into(),
        )),
    }
}

/// `statx` of `name` in `dir`, not following a final symlink, for the fields [`Meta`] keeps.
fn statx_at(dir: &OwnedFd, name: &CStr) -> Result<rustix::fs::Statx, Errno> {
    rustix::fs::statx(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::TYPE
            | StatxFlags::MODE
            | StatxFlags::NLINK
            | StatxFlags::UID
            | StatxFlags::GID
            | StatxFlags::MTIME
            | StatxFlags::CTIME
            | StatxFlags::INO
            | StatxFlags::SIZE,
    )
}

/// Marks the regular files linked to an earlier entry of the same item, as `copy` links them
/// (entries are numbered in listing order).
fn link_groups(top: &mut Dir) {
    fn visit(dir: &mut Dir, next: &mut usize, first: &mut HashMap<(u64, u64), usize>) {
        for e in &mut dir.entries {
            let i = *next;
            *next += 1;
            match &mut e.detail {
                Detail::Unfilled(meta) if meta.is_file() && meta.nlink > 1 => {
                    let id = (meta.key.dev, meta.key.ino);
                    match first.get(&id) {
                        Some(j) => e.detail = Detail::LinkTo(*j),
                        None => {
                            first.insert(id, i);
                        }
                    }
                }
                Detail::Dir(Some(below)) if below.links => visit(below, next, first),
                Detail::Dir(Some(below)) => *next += below.count,
                _ => {}
            }
        }
    }
    visit(top, &mut 0, &mut HashMap::new());
}

/// An entry whose digest or target is still to be found.
struct Pending<'a> {
    /// Its path in the source root is this directory's, joined with `name` unless empty.
    dir: &'a Rel,
    name: &'a [u8],
    /// [`Detail::Unfilled`], to be replaced.
    detail: &'a mut Detail,
}

/// Collects the entries of `dir` (and below) still [`Detail::Unfilled`].
fn pending<'a>(dir: &'a mut Dir, out: &mut Vec<Pending<'a>>) {
    let Dir {
        src,
        names,
        entries,
        ..
    } = dir;
    for Entry { name, detail, .. } in entries.iter_mut() {
        match detail {
            Detail::Unfilled(_) => {
                let (start, len) = (name.0 as usize, name.1 as usize);
                out.push(Pending {
                    dir: src,
                    name: names.get(start..start + len).unwrap_or_default(),
                    detail,
                });
            }
            Detail::Dir(Some(below)) if below.unfilled => pending(below, out),
            _ => {}
        }
    }
}

#[derive(Default)]
struct Counters {
    files_read: AtomicU64,
    bytes_read: AtomicU64,
}

/// Fills in a file's digest (from the index, or read) or a symlink's target.
fn fill_detail(
    root: &Root,
    p: &mut Pending<'_>,
    digests: &dyn FileDigests,
    settled_before: i128,
    counters: &Counters,
) -> Result<(), ExecError> {
    let Detail::Unfilled(meta) = &*p.detail else {
        return Ok(());
    };
    let meta = **meta;
    let ft = meta.file_type();
    if ft == FileType::RegularFile {
        let digest = match digests.get(&meta.key) {
            Some(digest) => digest,
            None => {
                let src = src_of(p.dir, p.name);
                file_digest(root, &src, &meta.key, digests, settled_before, counters)?
            }
        };
        *p.detail = Detail::File {
            size: meta.key.size,
            digest,
        };
    } else if ft == FileType::Symlink {
        let src = src_of(p.dir, p.name);
        let target = root
            .read_link(src.path())
            .map_err(|err| ExecError::fs(Side::Source, src.display(), err))?;
        *p.detail = Detail::Target(target.into_os_string().into_vec());
    }
    Ok(())
}

/// The digest of the regular file `src` (of `lstat` key `key`), read and recorded in the
/// index.
fn file_digest(
    root: &Root,
    src: &Rel,
    key: &FileKey,
    digests: &dyn FileDigests,
    settled_before: i128,
    counters: &Counters,
) -> Result<[u8; 32], ExecError> {
    let key = *key;
    let (mut file, opened) = open_regular(root, Side::Source, src)?;
    if (opened.dev(), opened.ino()) != (key.dev, key.ino) {
        return Err(ExecError::SourceChanged {
            path: src.display(),
        });
    }
    thread_local! {
        static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0u8; READ_BUF]);
    }
    let mut hasher = Sha256::new();
    let mut total: u64 = 0;
    BUF.with(|buf| -> Result<(), ExecError> {
        let mut buf = buf.borrow_mut();
        loop {
            let n = file
                .read(&mut buf[..])
                .map_err(|err| ExecError::io("read", Side::Source, src.display(), err))?;
            if n == 0 {
                return Ok(());
            }
            total += n as u64;
            hasher.update(&buf[..n]);
        }
    })?;
    let content: [u8; 32] = hasher.finalize().into();
    let digest = with_xattrs(content, read_xattrs(&file));
    counters.files_read.fetch_add(1, Ordering::Relaxed);
    counters.bytes_read.fetch_add(total, Ordering::Relaxed);
    let after = file
        .metadata()
        .map_err(|err| ExecError::io("stat", Side::Source, src.display(), err))?;
    let unchanged = FileKey::from_metadata(&opened) == key && FileKey::from_metadata(&after) == key;
    if unchanged && key.ctime_ns < settled_before {
        digests.put(key, digest);
    }
    Ok(digest)
}

/// A file's digest: its content's sha256 alone when it has no extended attributes, else a
/// sha256 over that and the attributes sorted by name.
fn with_xattrs(content: [u8; 32], mut xattrs: Vec<(OsString, Vec<u8>)>) -> [u8; 32] {
    if xattrs.is_empty() {
        return content;
    }
    xattrs.sort();
    Listing::digest_of(|l| {
        l.bytes(b"rbuild file+xattrs v1\0");
        l.bytes(&content);
        for (name, value) in &xattrs {
            l.bytes(name.as_bytes());
            l.bytes(value);
        }
    })
    .0
}

/// The listing being hashed: every field of fixed size or length-prefixed, so no two listings
/// share an encoding. Fields are gathered in a buffer that is hashed in large pieces: see
/// [`Listing::digest_of`].
struct Listing<'s> {
    /// Takes a full buffer (to hash), gives back an empty one.
    sink: &'s mut dyn FnMut(Vec<u8>) -> Vec<u8>,
    buf: Vec<u8>,
}

/// Bytes gathered before [`Listing`] hashes them.
const LISTING_BUF: usize = 64 * 1024;

impl Listing<'_> {
    /// The digest of what `write` writes into a listing, and what it returned.
    fn digest_of<T>(write: impl FnOnce(&mut Listing<'_>) -> T) -> ([u8; 32], T) {
        let mut hasher = Sha256::new();
        let written = {
            let mut sink = |mut buf: Vec<u8>| {
                hasher.update(&buf);
                buf.clear();
                buf
            };
            let mut out = Listing {
                sink: &mut sink,
                buf: Vec::new(),
            };
            let written = write(&mut out);
            out.flush();
            written
        };
        (hasher.finalize().into(), written)
    }

    /// [`Listing::digest_of`], the bytes hashed by another worker of the pool as they are
    /// written, so that hashing a big listing (megabytes) mostly overlaps writing it.
    fn digest_aside<T: Send>(write: impl FnOnce(&mut Listing<'_>) -> T + Send) -> ([u8; 32], T) {
        let (full, to_hash) = mpsc::channel::<Vec<u8>>();
        let (hashed, empty) = mpsc::channel::<Vec<u8>>();
        let mut digest = [0u8; 32];
        let written = rayon::scope(|scope| {
            let digest = &mut digest;
            scope.spawn(move |_| {
                let mut hasher = Sha256::new();
                // Every buffer sent, in order, until the writer's sender is dropped.
                for mut buf in to_hash {
                    hasher.update(&buf);
                    buf.clear();
                    // Back to the writer, unless it is done.
                    let _ = hashed.send(buf);
                }
                *digest = hasher.finalize().into();
            });
            let mut sink = move |buf: Vec<u8>| {
                // Only a hasher that panicked is gone, and `scope` re-raises its panic: no
                // digest of part of the bytes is returned.
                let _ = full.send(buf);
                // A buffer back from the hasher, or a new one: never waited for (the hasher
                // may not even have started).
                empty
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(LISTING_BUF + 4096))
            };
            let mut out = Listing {
                sink: &mut sink,
                buf: Vec::with_capacity(LISTING_BUF + 4096),
            };
            let written = write(&mut out);
            out.flush();
            // The sender goes with `sink`: the hasher ends.
            written
        });
        (digest, written)
    }

    /// Hands the buffered bytes to the sink.
    fn flush(&mut self) {
        let full = std::mem::take(&mut self.buf);
        self.buf = (self.sink)(full);
    }

    fn raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= LISTING_BUF {
            self.flush();
        }
    }

    fn tag(&mut self, t: u8) {
        self.raw(&[t]);
    }

    fn u32(&mut self, v: u32) {
        self.raw(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.raw(&v.to_le_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.raw(b);
    }

    /// A relative path, given as its components each followed by `/`.
    fn path(&mut self, p: &[u8]) {
        self.bytes(p);
    }

    /// Mode (after `--chmod`) and owner (after `--chown`) of a copied entry of `st_mode`
    /// `mode` owned by `uid:gid`.
    fn meta(
        &mut self,
        sel: &Selection<'_>,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(), ExecError> {
        let is_dir = FileType::from_raw_mode(mode) == FileType::Directory;
        let mode = sel.mode_for(mode & 0o7777, is_dir)?;
        let (uid, gid) = sel.owner_of(uid, gid);
        self.u32(mode);
        self.u32(uid);
        self.u32(gid);
        Ok(())
    }

    /// The entries of `dir` and below, in order; `path` is where `dir` is placed (components
    /// each followed by `/`), and is given back as it came.
    fn dir(
        &mut self,
        sel: &Selection<'_>,
        path: &mut Vec<u8>,
        dir: &Dir,
        stats: &mut ChecksumStats,
    ) -> Result<(), ExecError> {
        for e in &dir.entries {
            let len = path.len();
            let name = dir.name(e.name);
            if !name.is_empty() {
                path.extend_from_slice(name);
                path.push(b'/');
            }
            self.entry(sel, path, e, (&dir.src, name))?;
            stats.entries += 1;
            match &e.detail {
                Detail::File { .. } => stats.files += 1,
                Detail::Dir(Some(below)) => self.dir(sel, path, below, stats)?,
                _ => {}
            }
            path.truncate(len);
        }
        Ok(())
    }

    /// An entry placed at `placed` (components each followed by `/`); `src` is its directory's
    /// path and its name (for a message).
    fn entry(
        &mut self,
        sel: &Selection<'_>,
        placed: &[u8],
        e: &Entry,
        src: (&Rel, &[u8]),
    ) -> Result<(), ExecError> {
        match &e.detail {
            Detail::LinkTo(first) => {
                // `copy` makes a hardlink: no metadata of its own.
                self.tag(b'h');
                self.path(placed);
                self.u64(*first as u64);
                Ok(())
            }
            Detail::File { size, digest } => {
                self.tag(b'f');
                self.path(placed);
                self.meta(sel, e.mode, e.uid, e.gid)?;
                self.u64(*size);
                self.raw(digest);
                Ok(())
            }
            Detail::Target(target) => {
                // A symlink's mode is not copied; its owner is.
                let (uid, gid) = sel.owner_of(e.uid, e.gid);
                self.tag(b'l');
                self.path(placed);
                self.u32(uid);
                self.u32(gid);
                self.bytes(target);
                Ok(())
            }
            Detail::Dir(_) | Detail::Special(_) => {
                let t = match e.file_type() {
                    FileType::Directory => b'd',
                    FileType::Fifo => b'p',
                    FileType::CharacterDevice => b'c',
                    FileType::BlockDevice => b'b',
                    _ => return unreachable_detail(&src_of(src.0, src.1)),
                };
                self.tag(t);
                self.path(placed);
                self.meta(sel, e.mode, e.uid, e.gid)?;
                if let (b'c' | b'b', Detail::Special(rdev)) = (t, &e.detail) {
                    self.u32(rustix::fs::major(*rdev));
                    self.u32(rustix::fs::minor(*rdev));
                }
                Ok(())
            }
            Detail::Unfilled(_) => unreachable_detail(&src_of(src.0, src.1)),
        }
    }
}

/// An entry whose kind and detail disagree: the walk fills both, so this is a bug; refused
/// rather than hashed wrongly.
fn unreachable_detail(src: &Rel) -> Result<(), ExecError> {
    Err(ExecError::SourceChanged {
        path: src.display(),
    })
}

fn now_ns() -> i128 {
    match SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX),
    }
}
