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
//! whose contents cannot be re-included is never opened. Files are read through the source
//! [`Root`] (`openat2` confinement, as `copy` reads them), streamed through sha256 in fixed
//! buffers, also in parallel. A [`FileDigests`] index is asked first by each file's identity
//! ([`FileKey`]: device, inode, size, mtime, ctime), so an unchanged file is only `lstat`ed; a
//! digest is given to the index only when the file did not change while it was read and its
//! ctime is at least [`SETTLE_NS`] older than the start of the checksum — a file changed again
//! within the same timestamp tick could otherwise keep its key with new content (Git's "racy
//! timestamp" problem), so recently changed files are simply re-read next time.

use std::cell::RefCell;
use std::ffi::OsString;
use std::fs::Metadata;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::sync::atomic::{AtomicU64, Ordering};
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

    // 1. What is selected, item by item, in copy's order.
    let mut listed: Vec<Listed> = Vec::new();
    for (group, items) in groups.iter().enumerate() {
        listed.push(Listed::Group(group as u64));
        for item in items {
            if let Some(l) = list_item(&sel, item)? {
                listed.push(l);
            }
        }
    }

    // 2. File digests and symlink targets, in parallel.
    let counters = Counters::default();
    let mut work: Vec<&mut Entry> = Vec::new();
    for l in &mut listed {
        if let Listed::Local { entries, .. } = l {
            work.extend(entries.iter_mut());
        }
    }
    work.par_iter_mut()
        .try_for_each(|entry| fill_detail(src, entry, digests, started - SETTLE_NS, &counters))?;
    drop(work);

    // 3. The canonical listing, folded in order.
    let mut out = Listing::default();
    let mut remote_urls = Vec::new();
    let mut stats = ChecksumStats {
        files_read: counters.files_read.load(Ordering::Relaxed),
        bytes_read: counters.bytes_read.load(Ordering::Relaxed),
        ..ChecksumStats::default()
    };
    out.bytes(FORMAT);
    for l in &listed {
        match l {
            Listed::Group(n) => {
                out.tag(b'G');
                out.u64(*n);
            }
            Listed::Url(url) => remote_urls.push(url.clone()),
            Listed::Heredoc { name, content } => {
                let mode = sel.mode_for(0o644, false)?;
                let (uid, gid) = op.chown.unwrap_or((0, 0));
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
                src_base,
                placed_base,
                parent_dirs,
                entries,
            } => {
                out.tag(b'L');
                out.tag(*kind);
                out.path(placed_base, &[]);
                for (part, meta) in parent_dirs {
                    out.tag(b'd');
                    out.path(part, &[]);
                    out.meta(&sel, meta)?;
                    stats.entries += 1;
                }
                for e in entries {
                    // Placed at `placed_base` + its path below `src_base`.
                    let below = e.src.0.get(src_base.0.len()..).unwrap_or_default();
                    out.entry(&sel, (placed_base, below), e)?;
                    stats.entries += 1;
                    if matches!(e.detail, Detail::File(_)) {
                        stats.files += 1;
                    }
                }
                out.tag(b'E');
            }
        }
    }
    Ok(SourceChecksum {
        digest: out.hasher.finalize().into(),
        remote_urls,
        stats,
    })
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
        /// Where the source is in the source root.
        src_base: Rel,
        /// Where it is placed, relative to the destination (directory).
        placed_base: Rel,
        /// `--parents`: the kept path's directories, with their source's metadata.
        parent_dirs: Vec<(Rel, Meta)>,
        /// The entries, in copy's order (depth first, names sorted), all at or below
        /// `src_base`.
        entries: Vec<Entry>,
    },
}

/// A selected entry.
struct Entry {
    /// Its path in the source root.
    src: Rel,
    meta: Meta,
    detail: Detail,
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

/// What is hashed for an entry besides its metadata.
enum Detail {
    None,
    /// A regular file's digest.
    File([u8; 32]),
    /// A symlink's target, verbatim.
    Target(Vec<u8>),
    /// A hardlink to the entry at this index of the same item.
    LinkTo(usize),
}

fn entry(src: Rel, meta: Meta) -> Entry {
    Entry {
        src,
        meta,
        detail: Detail::None,
    }
}

/// Lists one item as `copy` would copy it (`None`: excluded whole, nothing copied).
fn list_item(sel: &Selection<'_>, item: &Item) -> Result<Option<Listed>, ExecError> {
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
    let mut parent_dirs = Vec::new();
    let (kind, placed_base, mut entries) = match parents {
        Some(kept) if kept.is_root() => {
            if !md.is_dir() {
                return Err(ExecError::CannotReplaceDir {
                    path: Rel::clamped(&sel.op.dest).display(),
                });
            }
            (
                b'D',
                Rel::root(),
                walk(sel, &Pos::top(phys.clone(), Rel::root()))?,
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
            if !md.file_type().is_socket() {
                let is_dir = md.is_dir();
                entries.push(entry(phys.clone(), Meta::from_std(&md)));
                if is_dir {
                    entries.extend(walk(sel, &Pos::top(phys.clone(), kept.clone()))?);
                }
            }
            (b'P', kept.clone(), entries)
        }
        None if md.is_dir() => (
            b'D',
            Rel::root(),
            walk(sel, &Pos::top(phys.clone(), Rel::root()))?,
        ),
        None => {
            let entries = if md.file_type().is_socket() {
                Vec::new()
            } else {
                vec![entry(phys.clone(), Meta::from_std(&md))]
            };
            (b'F', Rel(vec![name]), entries)
        }
    };
    link_groups(&mut entries);
    Ok(Some(Listed::Local {
        kind,
        src_base: phys,
        placed_base,
        parent_dirs,
        entries,
    }))
}

/// The entries below the directory at `dir`, depth first with names sorted: `copy`'s order.
/// Entries are looked at in parallel, subdirectories walked in parallel.
///
/// The directory is opened once beneath the source root (`openat2(RESOLVE_IN_ROOT)`, as
/// `copy` reads it) and its entries are `statx`ed and `readlinkat`ed relative to that fd by
/// their single-component names, never following a final symlink: one system call per entry,
/// where a path from the root costs three, and nothing outside the directory is reachable.
fn walk(sel: &Selection<'_>, dir: &Pos) -> Result<Vec<Entry>, ExecError> {
    let chunks = walk_chunks(sel, dir)?;
    let mut out = Vec::with_capacity(chunks.iter().map(Vec::len).sum());
    for chunk in chunks {
        out.extend(chunk);
    }
    Ok(out)
}

/// [`walk`]'s entries as runs, in order. Runs are joined only once, at the top: joining the
/// vectors of a subtree into its parent's at every level (and at every merge of the parallel
/// fold) would copy each entry once per level.
fn walk_chunks(sel: &Selection<'_>, dir: &Pos) -> Result<Vec<Vec<Entry>>, ExecError> {
    let (fd, names) = open_dir(sel, &dir.src)?;
    // Entries are appended to the last run; a subdirectory's runs are moved in whole.
    fn push(out: &mut Vec<Vec<Entry>>, e: Entry) {
        match out.last_mut() {
            Some(run) => run.push(e),
            None => out.push(vec![e]),
        }
    }
    names
        .par_iter()
        .try_fold(
            Vec::new,
            |mut out, name| -> Result<Vec<Vec<Entry>>, ExecError> {
                let shown =
                    sel.child_with(dir, name, |src| stat_at(&fd, name, src), Meta::is_dir)?;
                let Child::Shown(child, meta) = shown else {
                    return Ok(out);
                };
                match meta.file_type() {
                    // `copy` skips sockets (a layer cannot hold them).
                    FileType::Socket => {}
                    FileType::Directory => {
                        let below = walk_chunks(sel, &child)?;
                        push(&mut out, entry(child.src, meta));
                        out.extend(below);
                    }
                    FileType::Symlink => {
                        let target = rustix::fs::readlinkat(&fd, name.as_os_str(), Vec::new())
                            .map_err(|e| {
                                ExecError::io(
                                    "readlink",
                                    Side::Source,
                                    child.src.display(),
                                    e.into(),
                                )
                            })?;
                        push(
                            &mut out,
                            Entry {
                                src: child.src,
                                meta,
                                detail: Detail::Target(target.into_bytes()),
                            },
                        );
                    }
                    _ => push(&mut out, entry(child.src, meta)),
                }
                Ok(out)
            },
        )
        .try_reduce(Vec::new, |mut a, b| {
            if a.is_empty() {
                return Ok(b);
            }
            a.extend(b);
            Ok(a)
        })
}

/// Opens the directory `src` beneath the source root and lists it (names sorted, as
/// [`Root::read_dir`] does). Failures are reported exactly as `copy` reports them.
fn open_dir(sel: &Selection<'_>, src: &Rel) -> Result<(OwnedFd, Vec<OsString>), ExecError> {
    let arg = if src.is_root() {
        std::path::PathBuf::from(".")
    } else {
        src.path()
    };
    let opened = rustix::fs::openat2(
        sel.src.root.as_fd(),
        &arg,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .and_then(|fd| {
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&fd)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(std::ffi::OsStr::from_bytes(name).to_os_string());
            }
        }
        names.sort();
        Ok((fd, names))
    });
    match opened {
        Ok(found) => Ok(found),
        // The same failure through `copy`'s own path, for its message.
        Err(e) => match sel.src.read_dir(src) {
            Err(copy_error) => Err(copy_error),
            Ok(_) => Err(ExecError::io(
                "read directory",
                Side::Source,
                src.display(),
                e.into(),
            )),
        },
    }
}

/// `lstat` of the entry `name` of the directory `dir` (whose path in the source root is `src`);
/// `None` when it is gone.
fn stat_at(dir: &OwnedFd, name: &OsString, src: &Rel) -> Result<Option<Meta>, ExecError> {
    match rustix::fs::statx(
        dir,
        name.as_os_str(),
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS,
    ) {
        Ok(st) => Ok(Some(Meta::from_statx(&st))),
        Err(Errno::NOENT | Errno::NOTDIR) => Ok(None),
        Err(e) => Err(ExecError::io("stat", Side::Source, src.display(), e.into())),
    }
}

/// Marks the regular files linked to an earlier entry of the same item, as `copy` links them.
fn link_groups(entries: &mut [Entry]) {
    let mut first = std::collections::HashMap::new();
    for (i, e) in entries.iter_mut().enumerate() {
        if e.meta.is_file() && e.meta.nlink > 1 {
            let id = (e.meta.key.dev, e.meta.key.ino);
            match first.get(&id) {
                Some(j) => e.detail = Detail::LinkTo(*j),
                None => {
                    first.insert(id, i);
                }
            }
        }
    }
}

#[derive(Default)]
struct Counters {
    files_read: AtomicU64,
    bytes_read: AtomicU64,
}

/// Fills in a file's digest or a symlink's target.
fn fill_detail(
    root: &Root,
    e: &mut Entry,
    digests: &dyn FileDigests,
    settled_before: i128,
    counters: &Counters,
) -> Result<(), ExecError> {
    if !matches!(e.detail, Detail::None) {
        return Ok(());
    }
    let ft = e.meta.file_type();
    if ft == FileType::RegularFile {
        e.detail = Detail::File(file_digest(
            root,
            &e.src,
            &e.meta.key,
            digests,
            settled_before,
            counters,
        )?);
    } else if ft == FileType::Symlink {
        let target = root
            .read_link(e.src.path())
            .map_err(|err| ExecError::fs(Side::Source, e.src.display(), err))?;
        e.detail = Detail::Target(target.into_os_string().into_vec());
    }
    Ok(())
}

/// The digest of the regular file `src` (of `lstat` key `key`): from the index, or read and
/// recorded.
fn file_digest(
    root: &Root,
    src: &Rel,
    key: &FileKey,
    digests: &dyn FileDigests,
    settled_before: i128,
    counters: &Counters,
) -> Result<[u8; 32], ExecError> {
    let key = *key;
    if let Some(d) = digests.get(&key) {
        return Ok(d);
    }
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
    let mut l = Listing::default();
    l.bytes(b"rbuild file+xattrs v1\0");
    l.bytes(&content);
    for (name, value) in &xattrs {
        l.bytes(name.as_bytes());
        l.bytes(value);
    }
    l.hasher.finalize().into()
}

/// The listing being hashed: every field of fixed size or length-prefixed, so no two listings
/// share an encoding.
#[derive(Default)]
struct Listing {
    hasher: Sha256,
}

impl Listing {
    fn tag(&mut self, t: u8) {
        self.hasher.update([t]);
    }

    fn u32(&mut self, v: u32) {
        self.hasher.update(v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.hasher.update(v.to_le_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.hasher.update(b);
    }

    /// A relative path (`base` then `more`), each component followed by `/`.
    fn path(&mut self, base: &Rel, more: &[OsString]) {
        let comps = || base.0.iter().chain(more);
        let len: usize = comps().map(|c| c.len() + 1).sum();
        self.u64(len as u64);
        for c in comps() {
            self.hasher.update(c.as_bytes());
            self.hasher.update(b"/");
        }
    }

    /// Mode (after `--chmod`) and owner (after `--chown`) of a copied entry.
    fn meta(&mut self, sel: &Selection<'_>, meta: &Meta) -> Result<(), ExecError> {
        let mode = sel.mode_for(meta.mode & 0o7777, meta.is_dir())?;
        let (uid, gid) = sel.owner_of(meta.uid, meta.gid);
        self.u32(mode);
        self.u32(uid);
        self.u32(gid);
        Ok(())
    }

    /// An entry placed at `placed` (a base and the components below it).
    fn entry(
        &mut self,
        sel: &Selection<'_>,
        placed: (&Rel, &[OsString]),
        e: &Entry,
    ) -> Result<(), ExecError> {
        let ft = e.meta.file_type();
        match &e.detail {
            Detail::LinkTo(first) => {
                // `copy` makes a hardlink: no metadata of its own.
                self.tag(b'h');
                self.path(placed.0, placed.1);
                self.u64(*first as u64);
                Ok(())
            }
            Detail::File(digest) => {
                self.tag(b'f');
                self.path(placed.0, placed.1);
                self.meta(sel, &e.meta)?;
                self.u64(e.meta.key.size);
                self.hasher.update(digest);
                Ok(())
            }
            Detail::Target(target) => {
                // A symlink's mode is not copied; its owner is.
                let (uid, gid) = sel.owner_of(e.meta.uid, e.meta.gid);
                self.tag(b'l');
                self.path(placed.0, placed.1);
                self.u32(uid);
                self.u32(gid);
                self.bytes(target);
                Ok(())
            }
            Detail::None => {
                let t = match ft {
                    FileType::Directory => b'd',
                    FileType::Fifo => b'p',
                    FileType::CharacterDevice => b'c',
                    FileType::BlockDevice => b'b',
                    _ => return unreachable_detail(&e.src),
                };
                self.tag(t);
                self.path(placed.0, placed.1);
                self.meta(sel, &e.meta)?;
                if t == b'c' || t == b'b' {
                    let rdev = e.meta.rdev;
                    self.u32(rustix::fs::major(rdev));
                    self.u32(rustix::fs::minor(rdev));
                }
                Ok(())
            }
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
