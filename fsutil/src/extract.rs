//! Safe, streaming tar extraction into a [`Root`]: [`extract_tar`].
//!
//! The archive is hostile (tar-slip class: kaniko CVE-2026-28406, apko
//! CVE-2026-42574; bombs: CVE-2017-14992). The rules:
//!
//! * **Names.** A leading `./` or `/` is stripped and the name cleaned
//!   lexically (`a/../b` is `b`). A name whose `..` still climbs above the
//!   root after cleaning (`../evil`, `a/../../evil`) is *rejected* with
//!   [`FsError::EscapingEntry`] naming it: no archive rbuild should accept
//!   contains one. `/abs/evil` is `abs/evil` in the root. A backslash is an
//!   ordinary byte, so `..\evil` is a file of that name in the root.
//! * **Confinement at write time.** The parent directory of every entry is
//!   resolved with `RESOLVE_IN_ROOT` (missing parents are created with
//!   `mkdirat`, through symlinks clamped to the root), and the entry is
//!   created relative to that parent fd. A symlink entry `link -> /` followed
//!   by `link/evil` therefore writes `<root>/evil`.
//! * **Replacing.** A directory over an existing directory merges (its mode,
//!   owner and xattrs are updated). Anything else replaces what is there: it
//!   is unlinked (a directory removed recursively without following
//!   symlinks) and created anew with `O_EXCL`/`O_NOFOLLOW`, so a file is
//!   never written through an existing symlink.
//! * **Symlinks** keep their target verbatim; they are only ever resolved
//!   in-root.
//! * **Hardlinks.** The target name gets the same cleaning (an escaping one
//!   is [`FsError::BadHardlink`]; an absolute one is relative to the root),
//!   is resolved in-root without following a final symlink, and must be a
//!   regular file already in the root. A hardlink to a symlink or device is
//!   refused rather than guessed at.
//! * **Bombs.** [`ExtractOptions::max_entries`] and
//!   [`ExtractOptions::max_total_bytes`] (entry payload bytes, padding and
//!   headers excluded) bound the work; the metadata read for one entry (its
//!   headers, PAX records, GNU long names) is bounded by
//!   [`ExtractOptions::max_metadata_bytes`] because the tar reader buffers
//!   those in memory. Entry data is streamed, never buffered whole.
//! * **Whiteouts** follow [`WhiteoutMode`].
//!
//! Metadata: owner (header uid/gid, PAX `uid`/`gid`, or a forced
//! [`ExtractOptions::owner`]), mode including setuid/setgid/sticky (applied
//! after chown, which may clear them), PAX `SCHILY.xattr.*` xattrs, and mtime
//! (PAX `mtime` with sub-second precision when present; atime is set to the
//! same). Directory times are applied at the end, once their contents stop
//! changing. The `./` entry naming the root itself is skipped: the root's own
//! metadata belongs to whoever owns the root.

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{self as rfs, FileType, Mode, OFlags, Timespec};
use rustix::io::Errno;
use tar::EntryType;

use crate::error::{FsError, Result};
use crate::path::RelPath;
use crate::root::{create_in, mknod_in, read_names, NodeKind, Root};
use crate::sys;
use crate::whiteout::{classify, Whiteout, WhiteoutMode, AUFS_META_PREFIX, OVERLAY_OPAQUE_XATTR};

/// Default for [`ExtractOptions::max_metadata_bytes`]: 16 MiB.
pub const DEFAULT_MAX_METADATA_BYTES: u64 = 16 << 20;

/// Mode of parent directories an archive did not list.
const IMPLIED_DIR_MODE: u32 = 0o755;

/// PAX record prefix for extended attributes (GNU tar, Go's archive/tar).
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// How to extract. [`Default`] is the conservative choice for a user
/// archive (`ADD`): whiteouts kept as files, header owners kept, xattrs
/// applied, no size limits (set them!), 16 MiB of metadata per entry.
#[derive(Clone, Debug)]
pub struct ExtractOptions {
    /// How `.wh.*` entries are treated.
    pub whiteouts: WhiteoutMode,
    /// Force every entry (and every implied parent directory) to this
    /// `(uid, gid)`, ignoring the archive's owners (`ADD --chown`).
    pub owner: Option<(u32, u32)>,
    /// Without a forced owner: apply the archive's uid/gid (`true`, needs
    /// `CAP_CHOWN`) or leave entries owned by the extracting process.
    pub same_owner: bool,
    /// Apply PAX `SCHILY.xattr.*` records.
    pub xattrs: bool,
    /// Fail once more than this many payload bytes have been read.
    pub max_total_bytes: Option<u64>,
    /// Fail once the archive has more than this many entries.
    pub max_entries: Option<u64>,
    /// Fail if one entry's headers, PAX records and GNU long names together
    /// exceed this many bytes (they are held in memory by the tar reader).
    pub max_metadata_bytes: u64,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            whiteouts: WhiteoutMode::Keep,
            owner: None,
            same_owner: true,
            xattrs: true,
            max_total_bytes: None,
            max_entries: None,
            max_metadata_bytes: DEFAULT_MAX_METADATA_BYTES,
        }
    }
}

/// What an extraction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtractStats {
    /// Entries read (all types, including skipped ones).
    pub entries: u64,
    /// Payload bytes read from the archive.
    pub bytes: u64,
    /// Regular files written.
    pub files: u64,
    /// Directories created or merged.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hardlinks created.
    pub hardlinks: u64,
    /// Device nodes and FIFOs created.
    pub devices: u64,
    /// Whiteout markers applied or converted.
    pub whiteouts: u64,
    /// Entries skipped (the root entry, global PAX headers, AUFS metadata).
    pub skipped: u64,
}

/// Extract the tar stream `archive` beneath `root`. See the
/// [module docs](self) for the rules. On error, entries extracted so far
/// stay in place; the caller discards the target (a snapshot, a fresh
/// directory) as a whole.
pub fn extract_tar<R: Read>(
    archive: R,
    root: &Root,
    opts: &ExtractOptions,
) -> Result<ExtractStats> {
    let meter = Rc::new(Meter::default());
    let mut ar = tar::Archive::new(Metered {
        inner: archive,
        meter: Rc::clone(&meter),
    });
    let mut x = Extractor {
        root,
        opts,
        stats: ExtractStats::default(),
        extracted: HashSet::new(),
        dir_times: Vec::new(),
        last: None,
        buf: vec![0; 64 * 1024],
    };
    meter.metadata_phase(opts.max_metadata_bytes);
    let mut entries = ar.entries().map_err(|e| x.archive_error(&meter, e))?;
    loop {
        meter.metadata_phase(opts.max_metadata_bytes);
        let entry = match entries.next() {
            None => break,
            Some(Ok(entry)) => entry,
            Some(Err(e)) => return Err(x.archive_error(&meter, e)),
        };
        meter.data_phase();
        x.entry(entry)?;
    }
    x.finish()?;
    Ok(x.stats)
}

/// Counts what the tar reader pulls from the stream outside entry data.
#[derive(Default)]
struct Meter {
    used: Cell<u64>,
    limit: Cell<u64>,
    tripped: Cell<bool>,
}

impl Meter {
    fn metadata_phase(&self, limit: u64) {
        self.used.set(0);
        self.limit.set(limit);
    }

    fn data_phase(&self) {
        // Entry data is bounded by our own accounting in `copy_data`.
        self.used.set(0);
        self.limit.set(u64::MAX);
    }
}

struct Metered<R> {
    inner: R,
    meter: Rc<Meter>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.meter.limit.get().saturating_sub(self.meter.used.get());
        if left == 0 && !buf.is_empty() {
            self.meter.tripped.set(true);
            return Err(io::Error::other(
                "tar metadata exceeds the configured limit",
            ));
        }
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = self.inner.read(&mut buf[..want])?;
        self.meter
            .used
            .set(self.meter.used.get().saturating_add(n as u64));
        Ok(n)
    }
}

/// Header fields of one entry, PAX overrides applied.
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: Timespec,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

struct Extractor<'a> {
    root: &'a Root,
    opts: &'a ExtractOptions,
    stats: ExtractStats,
    /// `(st_dev, st_ino)` of every entry this archive created or merged,
    /// for `.wh..wh..opq` in [`WhiteoutMode::Apply`]. Inodes rather than
    /// names, so a directory reached through a symlink is still recognised.
    extracted: HashSet<(u64, u64)>,
    /// Directory times to set once everything else is in place.
    dir_times: Vec<(RelPath, PathBuf, Timespec)>,
    /// The last entry name read, for errors from the stream.
    last: Option<PathBuf>,
    buf: Vec<u8>,
}

fn invalid(name: &Path, reason: impl Into<String>) -> FsError {
    FsError::InvalidEntry {
        path: name.to_path_buf(),
        reason: reason.into(),
    }
}

impl Extractor<'_> {
    fn archive_error(&self, meter: &Meter, source: io::Error) -> FsError {
        if meter.tripped.get() {
            FsError::LimitExceeded {
                limit: "metadata bytes",
                max: self.opts.max_metadata_bytes,
                path: self.last.clone(),
            }
        } else {
            FsError::Archive {
                after: self.last.clone(),
                source,
            }
        }
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        self.stats.entries += 1;
        let raw = entry.path_bytes().into_owned();
        let name = PathBuf::from(OsStr::from_bytes(&raw));
        self.last = Some(name.clone());
        if let Some(max) = self.opts.max_entries {
            if self.stats.entries > max {
                return Err(FsError::LimitExceeded {
                    limit: "entry count",
                    max,
                    path: Some(name),
                });
            }
        }
        if let Some(max) = self.opts.max_total_bytes {
            if self.stats.bytes.saturating_add(entry.size()) > max {
                return Err(FsError::LimitExceeded {
                    limit: "total bytes",
                    max,
                    path: Some(name),
                });
            }
        }
        let mut kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            return self.skip(&mut entry, &name);
        }
        // Pre-POSIX archives mark directories with a trailing slash only.
        if kind == EntryType::Regular && raw.ends_with(b"/") {
            kind = EntryType::Directory;
        }
        let supported = matches!(
            kind,
            EntryType::Directory
                | EntryType::Regular
                | EntryType::Continuous
                | EntryType::GNUSparse
                | EntryType::Symlink
                | EntryType::Link
                | EntryType::Char
                | EntryType::Block
                | EntryType::Fifo
        );
        if !supported {
            return Err(FsError::UnsupportedEntry {
                path: name,
                kind: char::from(kind.as_byte()),
            });
        }
        let p = RelPath::strict(&raw).map_err(|_| FsError::EscapingEntry { path: name.clone() })?;
        let Some((parent_rel, base)) = p.split_last() else {
            if kind == EntryType::Directory {
                return self.skip(&mut entry, &name);
            }
            return Err(invalid(
                &name,
                "a non-directory entry names the extraction root",
            ));
        };
        let base = base.to_os_string();

        if self.opts.whiteouts != WhiteoutMode::Keep {
            if p.components()
                .iter()
                .any(|c| c.as_bytes().starts_with(AUFS_META_PREFIX.as_bytes()))
                && classify(&base) != Whiteout::Opaque
            {
                return self.skip(&mut entry, &name);
            }
            match classify(&base) {
                Whiteout::None | Whiteout::AufsMeta => {}
                Whiteout::Invalid => return Err(invalid(&name, "whiteout names no file")),
                Whiteout::Opaque => {
                    self.drain(&mut entry, &name)?;
                    self.stats.whiteouts += 1;
                    return self.opaque(&parent_rel, &name);
                }
                Whiteout::Remove(target) => {
                    let target = target.to_os_string();
                    self.drain(&mut entry, &name)?;
                    self.stats.whiteouts += 1;
                    return self.whiteout(&parent_rel, &target, &name);
                }
            }
        }

        let meta = self.meta(&mut entry, &name)?;
        let (parent, created) =
            self.root
                .mkdir_all_fd(&parent_rel, IMPLIED_DIR_MODE, self.opts.owner, &name)?;
        if self.opts.whiteouts == WhiteoutMode::Apply {
            // Parents this archive implied are its own too (an opaque marker
            // later in the same archive must not remove them).
            for dir in created {
                let fd = self
                    .root
                    .resolve_nofollow(&RelPath::clamped(&dir))
                    .map_err(|e| FsError::io("open", &dir, e))?;
                self.record(fd.as_fd(), &name)?;
            }
        }
        let parent = parent.as_fd();
        match kind {
            EntryType::Directory => {
                self.drain(&mut entry, &name)?;
                self.directory(parent, &base, &p, &name, &meta)?;
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(&mut entry, parent, &base, &name, &meta)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| invalid(&name, "symlink entry without a target"))?;
                self.drain(&mut entry, &name)?;
                self.symlink(parent, &base, &target, &name, &meta)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                self.drain(&mut entry, &name)?;
                self.hardlink(parent, &base, &target, &name)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let node = match kind {
                    EntryType::Char => NodeKind::Char,
                    EntryType::Block => NodeKind::Block,
                    _ => NodeKind::Fifo,
                };
                let header = entry.header();
                let major = header
                    .device_major()
                    .map_err(|e| invalid(&name, format!("device major: {e}")))?;
                let minor = header
                    .device_minor()
                    .map_err(|e| invalid(&name, format!("device minor: {e}")))?;
                self.drain(&mut entry, &name)?;
                self.node(
                    parent,
                    &base,
                    node,
                    major.unwrap_or(0),
                    minor.unwrap_or(0),
                    &name,
                    &meta,
                )?;
            }
            other => {
                return Err(FsError::UnsupportedEntry {
                    path: name,
                    kind: char::from(other.as_byte()),
                });
            }
        }
        Ok(())
    }

    /// Remember the inode `fd` refers to as this archive's (Apply mode only).
    fn record(&mut self, fd: BorrowedFd<'_>, name: &Path) -> Result<()> {
        if self.opts.whiteouts == WhiteoutMode::Apply {
            let st = rfs::fstat(fd).map_err(|e| FsError::io("stat", name, e))?;
            self.extracted.insert((st.st_dev, st.st_ino));
        }
        Ok(())
    }

    fn skip<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, name: &Path) -> Result<()> {
        self.stats.skipped += 1;
        self.drain(entry, name)
    }

    /// Read (and count) what is left of an entry's data.
    fn drain(&mut self, entry: &mut impl Read, name: &Path) -> Result<()> {
        self.copy_data(entry, &mut io::sink(), name)
    }

    /// Stream entry data to `out`, counting it against `max_total_bytes`.
    fn copy_data(&mut self, entry: &mut impl Read, out: &mut dyn Write, name: &Path) -> Result<()> {
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(FsError::Archive {
                        after: Some(name.to_path_buf()),
                        source,
                    })
                }
            };
            self.stats.bytes = self.stats.bytes.saturating_add(n as u64);
            if let Some(max) = self.opts.max_total_bytes {
                if self.stats.bytes > max {
                    return Err(FsError::LimitExceeded {
                        limit: "total bytes",
                        max,
                        path: Some(name.to_path_buf()),
                    });
                }
            }
            out.write_all(&self.buf[..n])
                .map_err(|e| FsError::io("write", name, e))?;
        }
    }

    fn meta<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, name: &Path) -> Result<Meta> {
        let header = entry.header();
        let mode = header
            .mode()
            .map_err(|e| invalid(name, format!("mode: {e}")))?
            & sys::MODE_MASK;
        let mut uid = header
            .uid()
            .map_err(|e| invalid(name, format!("uid: {e}")))?;
        let mut gid = header
            .gid()
            .map_err(|e| invalid(name, format!("gid: {e}")))?;
        let secs = header
            .mtime()
            .map_err(|e| invalid(name, format!("mtime: {e}")))?;
        let mut mtime = Timespec {
            tv_sec: i64::try_from(secs).unwrap_or(i64::MAX),
            tv_nsec: 0,
        };
        let mut xattrs = Vec::new();
        let pax = entry
            .pax_extensions()
            .map_err(|e| invalid(name, format!("PAX records: {e}")))?;
        if let Some(pax) = pax {
            for rec in pax {
                let rec = rec.map_err(|e| invalid(name, format!("PAX record: {e}")))?;
                let key = rec.key_bytes();
                let value = rec.value_bytes();
                match key {
                    b"uid" => {
                        uid = parse_pax_id(value)
                            .ok_or_else(|| invalid(name, "PAX uid is not a number"))?
                    }
                    b"gid" => {
                        gid = parse_pax_id(value)
                            .ok_or_else(|| invalid(name, "PAX gid is not a number"))?
                    }
                    b"mtime" => {
                        mtime = parse_pax_time(value)
                            .ok_or_else(|| invalid(name, "PAX mtime is malformed"))?
                    }
                    _ => {
                        if let Some(attr) = key.strip_prefix(PAX_XATTR_PREFIX) {
                            if attr.is_empty() {
                                return Err(invalid(name, "PAX xattr record with an empty name"));
                            }
                            xattrs.push((OsStr::from_bytes(attr).to_os_string(), value.to_vec()));
                        }
                    }
                }
            }
        }
        Ok(Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
    }

    /// The owner to give an entry, if any.
    fn owner_for(&self, meta: &Meta, name: &Path) -> Result<Option<(u32, u32)>> {
        if let Some(forced) = self.opts.owner {
            return Ok(Some(forced));
        }
        if !self.opts.same_owner {
            return Ok(None);
        }
        let ok = |v: u64| u32::try_from(v).ok().filter(|v| *v != u32::MAX);
        match (ok(meta.uid), ok(meta.gid)) {
            (Some(u), Some(g)) => Ok(Some((u, g))),
            _ => Err(invalid(
                name,
                format!("owner {}:{} is out of range", meta.uid, meta.gid),
            )),
        }
    }

    /// Owner, then mode (chown may clear setuid), then xattrs (chown clears
    /// `security.capability`), on the exact inode `fd` refers to.
    fn apply_meta(
        &self,
        fd: BorrowedFd<'_>,
        kind: FileType,
        meta: &Meta,
        name: &Path,
    ) -> Result<()> {
        if let Some((u, g)) = self.owner_for(meta, name)? {
            sys::chown_fd(fd, u, g).map_err(|e| FsError::io("chown", name, e))?;
        }
        if kind == FileType::RegularFile {
            rfs::fchmod(fd, Mode::from_raw_mode(meta.mode))
                .map_err(|e| FsError::io("chmod", name, e))?;
        } else if kind != FileType::Symlink {
            sys::chmod_fd(fd, meta.mode).map_err(|e| FsError::io("chmod", name, e))?;
        }
        if self.opts.xattrs {
            for (attr, value) in &meta.xattrs {
                let res = if kind == FileType::RegularFile {
                    rfs::fsetxattr(fd, attr.as_os_str(), value, rfs::XattrFlags::empty())
                } else {
                    sys::set_xattr_fd(fd, attr, value)
                };
                res.map_err(|e| FsError::io("setxattr", name, e))?;
            }
        }
        Ok(())
    }

    /// Make room for a non-directory at `base`: remove whatever is there
    /// (recursively for a directory, never following symlinks).
    fn clear_slot(parent: BorrowedFd<'_>, base: &OsStr, name: &Path) -> Result<()> {
        sys::remove_at(parent, base)
            .map(|_| ())
            .map_err(|e| FsError::io("remove", name, e))
    }

    fn directory(
        &mut self,
        parent: BorrowedFd<'_>,
        base: &OsStr,
        p: &RelPath,
        name: &Path,
        meta: &Meta,
    ) -> Result<()> {
        let exists_as_dir = match sys::lstat_child(parent, base) {
            Ok(st) => sys::file_type(&st) == FileType::Directory,
            Err(Errno::NOENT) => false,
            Err(e) => return Err(FsError::io("stat", name, e)),
        };
        if !exists_as_dir {
            Self::clear_slot(parent, base, name)?;
            rfs::mkdirat(parent, base, Mode::from_raw_mode(meta.mode))
                .map_err(|e| FsError::io("mkdir", name, e))?;
        }
        let fd = sys::open_child(parent, base, OFlags::PATH | OFlags::DIRECTORY, 0)
            .map_err(|e| FsError::io("open", name, e))?;
        self.apply_meta(fd.as_fd(), FileType::Directory, meta, name)?;
        self.record(fd.as_fd(), name)?;
        self.dir_times
            .push((p.clone(), name.to_path_buf(), meta.mtime));
        self.stats.dirs += 1;
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parent: BorrowedFd<'_>,
        base: &OsStr,
        name: &Path,
        meta: &Meta,
    ) -> Result<()> {
        Self::clear_slot(parent, base, name)?;
        let mut file =
            create_in(parent, base, meta.mode).map_err(|e| FsError::io("create", name, e))?;
        self.copy_data(entry, &mut file, name)?;
        self.apply_meta(file.as_fd(), FileType::RegularFile, meta, name)?;
        self.record(file.as_fd(), name)?;
        sys::set_times_fd(file.as_fd(), meta.mtime, meta.mtime)
            .map_err(|e| FsError::io("set times of", name, e))?;
        self.stats.files += 1;
        Ok(())
    }

    fn symlink(
        &mut self,
        parent: BorrowedFd<'_>,
        base: &OsStr,
        target: &[u8],
        name: &Path,
        meta: &Meta,
    ) -> Result<()> {
        Self::clear_slot(parent, base, name)?;
        rfs::symlinkat(target, parent, base).map_err(|e| FsError::io("symlink", name, e))?;
        let fd = sys::open_child(parent, base, OFlags::PATH, 0)
            .map_err(|e| FsError::io("open", name, e))?;
        self.apply_meta(fd.as_fd(), FileType::Symlink, meta, name)?;
        self.record(fd.as_fd(), name)?;
        sys::set_times_fd(fd.as_fd(), meta.mtime, meta.mtime)
            .map_err(|e| FsError::io("set times of", name, e))?;
        self.stats.symlinks += 1;
        Ok(())
    }

    fn hardlink(
        &mut self,
        parent: BorrowedFd<'_>,
        base: &OsStr,
        target_raw: &[u8],
        name: &Path,
    ) -> Result<()> {
        let target_name = PathBuf::from(OsStr::from_bytes(target_raw));
        let bad = |reason| FsError::BadHardlink {
            path: name.to_path_buf(),
            target: target_name.clone(),
            reason,
        };
        let target = RelPath::strict(target_raw)
            .map_err(|_| bad("the target escapes the extraction root"))?;
        if target.is_root() {
            return Err(bad("the target is the extraction root"));
        }
        let fd = match self.root.resolve_nofollow(&target) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => {
                return Err(bad("the target does not exist in the extraction root"))
            }
            Err(e) => return Err(FsError::io("open", &target_name, e)),
        };
        let st = rfs::fstat(&fd).map_err(|e| FsError::io("stat", &target_name, e))?;
        if sys::file_type(&st) != FileType::RegularFile {
            return Err(bad("the target is not a regular file"));
        }
        match sys::lstat_child(parent, base) {
            // `a` hardlinked to itself, or a repeated entry: already done.
            Ok(cur) if cur.st_dev == st.st_dev && cur.st_ino == st.st_ino => {
                self.stats.hardlinks += 1;
                return self.record(fd.as_fd(), name);
            }
            Ok(_) => Self::clear_slot(parent, base, name)?,
            Err(Errno::NOENT) => {}
            Err(e) => return Err(FsError::io("stat", name, e)),
        }
        sys::link_fd(fd.as_fd(), parent, base).map_err(|e| FsError::io("link", name, e))?;
        self.stats.hardlinks += 1;
        self.record(fd.as_fd(), name)
    }

    #[allow(clippy::too_many_arguments)]
    fn node(
        &mut self,
        parent: BorrowedFd<'_>,
        base: &OsStr,
        kind: NodeKind,
        major: u32,
        minor: u32,
        name: &Path,
        meta: &Meta,
    ) -> Result<()> {
        Self::clear_slot(parent, base, name)?;
        mknod_in(parent, base, kind, meta.mode, major, minor)
            .map_err(|e| FsError::io("mknod", name, e))?;
        let fd = sys::open_child(parent, base, OFlags::PATH, 0)
            .map_err(|e| FsError::io("open", name, e))?;
        let ft = match kind {
            NodeKind::Char => FileType::CharacterDevice,
            NodeKind::Block => FileType::BlockDevice,
            NodeKind::Fifo => FileType::Fifo,
        };
        self.apply_meta(fd.as_fd(), ft, meta, name)?;
        self.record(fd.as_fd(), name)?;
        sys::set_times_fd(fd.as_fd(), meta.mtime, meta.mtime)
            .map_err(|e| FsError::io("set times of", name, e))?;
        self.stats.devices += 1;
        Ok(())
    }

    /// `.wh.NAME` in `dir`.
    fn whiteout(&mut self, dir: &RelPath, target: &OsStr, name: &Path) -> Result<()> {
        match self.opts.whiteouts {
            WhiteoutMode::Apply => {
                // Resolve the directory in-root; if it is not there, there is
                // nothing to delete. The victim itself is never followed.
                let parent = match self.root.resolve(dir, OFlags::PATH | OFlags::DIRECTORY) {
                    Ok(fd) => fd,
                    Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
                    Err(e) => return Err(FsError::io("open parent of", name, e)),
                };
                sys::remove_at(parent.as_fd(), target)
                    .map_err(|e| FsError::io("remove", name, e))?;
            }
            WhiteoutMode::ToOverlay => {
                let (parent, _) =
                    self.root
                        .mkdir_all_fd(dir, IMPLIED_DIR_MODE, self.opts.owner, name)?;
                Self::clear_slot(parent.as_fd(), target, name)?;
                mknod_in(parent.as_fd(), target, NodeKind::Char, 0, 0, 0)
                    .map_err(|e| FsError::io("mknod", name, e))?;
            }
            WhiteoutMode::Keep => {}
        }
        Ok(())
    }

    /// `.wh..wh..opq` in `dir`.
    fn opaque(&mut self, dir: &RelPath, name: &Path) -> Result<()> {
        match self.opts.whiteouts {
            WhiteoutMode::Apply => {
                let fd = match self.root.resolve(dir, OFlags::RDONLY | OFlags::DIRECTORY) {
                    Ok(fd) => fd,
                    Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
                    Err(e) => return Err(FsError::io("open", name, e)),
                };
                self.clear_lower(fd, name)
            }
            WhiteoutMode::ToOverlay => {
                let (fd, _) =
                    self.root
                        .mkdir_all_fd(dir, IMPLIED_DIR_MODE, self.opts.owner, name)?;
                sys::set_xattr_fd(fd.as_fd(), OsStr::new(OVERLAY_OPAQUE_XATTR), b"y")
                    .map_err(|e| FsError::io("setxattr", name, e))
            }
            WhiteoutMode::Keep => Ok(()),
        }
    }

    /// Remove everything under the directory open as `fd` that this archive
    /// did not itself extract; descend into directories it did (merged or
    /// created), since their lower contents are hidden too. Never follows
    /// symlinks. Recursion depth is bounded by the depth of paths this
    /// archive created, which the kernel's `PATH_MAX` bounds.
    fn clear_lower(&self, fd: OwnedFd, name: &Path) -> Result<()> {
        let err = |e| FsError::io("remove", name, e);
        let names =
            read_names(fd.try_clone().map_err(|e| FsError::io("dup", name, e))?).map_err(err)?;
        for child in names {
            let st = match sys::lstat_child(fd.as_fd(), &child) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(err(e)),
            };
            if !self.extracted.contains(&(st.st_dev, st.st_ino)) {
                sys::remove_at(fd.as_fd(), &child).map_err(err)?;
                continue;
            }
            if sys::file_type(&st) != FileType::Directory {
                continue;
            }
            match sys::open_child(fd.as_fd(), &child, OFlags::RDONLY | OFlags::DIRECTORY, 0) {
                Ok(sub) => self.clear_lower(sub, name)?,
                Err(Errno::NOTDIR | Errno::LOOP | Errno::NOENT) => {}
                Err(e) => return Err(err(e)),
            }
        }
        Ok(())
    }

    /// Set directory times, deepest-last-created first, now that nothing
    /// more will be written into them.
    fn finish(&mut self) -> Result<()> {
        for (p, name, mtime) in self.dir_times.iter().rev() {
            let fd = match self.root.resolve_nofollow(p) {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::NOTDIR) => continue,
                Err(e) => return Err(FsError::io("open", name, e)),
            };
            sys::set_times_fd(fd.as_fd(), *mtime, *mtime)
                .map_err(|e| FsError::io("set times of", name, e))?;
        }
        Ok(())
    }
}

fn parse_pax_id(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// PAX times are decimal seconds with an optional fraction: `1700000000.5`,
/// possibly negative.
fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: i64 = int.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, d) in frac.bytes().take(9).enumerate() {
        nanos += i64::from(d - b'0') * 10_i64.pow(8 - i as u32);
    }
    if !neg {
        return Some(Timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        });
    }
    if nanos == 0 {
        Some(Timespec {
            tv_sec: -secs,
            tv_nsec: 0,
        })
    } else {
        Some(Timespec {
            tv_sec: -secs - 1,
            tv_nsec: 1_000_000_000 - nanos,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_time_table() {
        let cases: &[(&str, Option<(i64, i64)>)] = &[
            ("0", Some((0, 0))),
            ("1700000000", Some((1_700_000_000, 0))),
            ("1700000000.5", Some((1_700_000_000, 500_000_000))),
            ("1.123456789999", Some((1, 123_456_789))),
            ("-1.25", Some((-2, 750_000_000))),
            ("-3", Some((-3, 0))),
            ("", None),
            (".5", None),
            ("1e9", None),
            ("1.-5", None),
            ("99999999999999999999999", None),
        ];
        for (input, want) in cases {
            let got = parse_pax_time(input.as_bytes()).map(|t| (t.tv_sec, t.tv_nsec));
            assert_eq!(&got, want, "{input:?}");
        }
    }

    #[test]
    fn metered_reader_trips_at_limit() {
        let meter = Rc::new(Meter::default());
        let mut r = Metered {
            inner: &[7u8; 100][..],
            meter: Rc::clone(&meter),
        };
        meter.metadata_phase(10);
        let mut buf = [0u8; 64];
        assert_eq!(r.read(&mut buf).ok(), Some(10));
        assert!(r.read(&mut buf).is_err());
        assert!(meter.tripped.get());
        meter.data_phase();
        assert_eq!(r.read(&mut buf).ok(), Some(64));
    }
}
