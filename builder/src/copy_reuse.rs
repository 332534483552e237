//! Incremental `COPY` from the build context: a context `COPY` whose key missed starts from
//! its own earlier result when the same step ran before on the same layers (same parent chain,
//! same definition; only what the selected files hold differs — the *origin* of the step).
//!
//! **How.** Before the step's overlay is mounted, its upper dir gets the earlier result's
//! directories (created anew with their owner, mode, extended attributes and times) and,
//! hardlinked, each entry whose source is unchanged since: same [`SourceStamp`] (identity, size,
//! mtime, ctime, mode, owner; a change to content, type, symlink target, mode, owner or extended
//! attributes moves the ctime). The copy then runs as usual over that upper dir and leaves
//! those entries alone ([`CopyJournal::in_place`]), writing only what changed. Entries whose
//! source changed or vanished, and directories whose source is no longer a directory, are not
//! taken over, so the result is the tree a copy from scratch gives (tests compare the layers'
//! diff IDs under `SOURCE_DATE_EPOCH`). Directories the copy merges into (the destination and
//! its parents) are taken over as they are.
//!
//! Hardlinks share inodes with the earlier snapshot. That is safe because snapshots are never
//! written to (they are only overlay lower dirs and tar sources) and the copy never writes into
//! an entry it finds in place: a changed one is removed first and created anew.
//!
//! **What is stored.** The *listing* of a copy, a blob written while it copies: the line
//! `rbuild copy listing v1\n`, then one record per copied entry: a tag (`D` directory, `E`
//! anything else), the target path (relative to the root filesystem) and the source path
//! (relative to the context), each as a little-endian `u32` length and the bytes, and for `E` the
//! stamp (`dev`, `ino`, `size` as `u64`; mtime and ctime in nanoseconds as `i128`; `mode`,
//! `uid`, `gid` as `u32`; little-endian). Files linked more than once, and entries whose ctime is
//! within [`SETTLE_NS`] of the copy (a file changed again within one timestamp tick could keep
//! its stamp with new content), are left out and so always copied again. The *origin record*
//! (cache-key index, under [`origin_key`]) names the result's snapshot, its parent's chain ID
//! and the listing; it is written after both exist, and anything missing or unreadable simply
//! means a full copy.
//!
//! Not used for `ADD`, `COPY --from`, `--parents`, heredoc sources, `--no-cache`, nor when the
//! earlier result holds overlayfs whiteouts or opaque directories (a copy makes none).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::SystemTime;

use rayon::prelude::*;
use rbuild_cache::{BlobWriter, Digest, FileKey, Store};
use rbuild_executor::checksum::SETTLE_NS;
use rbuild_executor::{CopyJournal, SourceStamp};
use rbuild_fsutil::Root;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use rbuild_parser::instruction::Instruction;
use rbuild_solver::PlannedStep;

use crate::cachekey::KeyHasher;
use crate::error::BuildError;

/// First line of a listing blob.
const LISTING_MAGIC: &[u8] = b"rbuild copy listing v1\n";
/// The longest path a listing record may hold.
const MAX_LISTED_PATH: u32 = 64 << 10;
/// Write buffer of a listing.
const LISTING_BUF: usize = 256 << 10;
/// Extended attributes that belong to overlayfs and are not taken over.
const OVERLAY_XATTR_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];

/// Whether `step` may start from its earlier result: a `COPY` from the build context without
/// heredoc sources or `--parents`.
pub(crate) fn eligible(step: &PlannedStep) -> bool {
    match &step.step.instruction {
        Instruction::Copy(c) => {
            step.copy_from.is_none() && c.files.heredocs.is_empty() && !c.parents
        }
        _ => false,
    }
}

/// The key of a step's origin record, from the step's key computed without its content
/// checksum.
pub(crate) fn origin_key(step_identity: &Digest) -> Digest {
    let mut h = KeyHasher::new("copy-origin");
    h.pair("step", &step_identity.to_string());
    h.finish()
}

#[derive(Debug, Serialize, Deserialize)]
struct OriginRecord {
    copy_origin: Origin,
}

/// An earlier result of a copy step.
#[derive(Debug, Serialize, Deserialize)]
struct Origin {
    /// The result's layer (its snapshot is the starting point).
    chain_id: Digest,
    /// The layer it sits on.
    parent_chain: Option<Digest>,
    /// The listing blob.
    listing: Digest,
}

/// Remembers that the copy step `origin` (see [`origin_key`]) on `parent_chain` made the layer
/// `chain_id`, whose entries `listing` lists.
pub(crate) fn remember(
    store: &Store,
    origin: &Digest,
    chain_id: &Digest,
    parent_chain: Option<&Digest>,
    listing: Digest,
) -> Result<(), BuildError> {
    let record = OriginRecord {
        copy_origin: Origin {
            chain_id: chain_id.clone(),
            parent_chain: parent_chain.cloned(),
            listing,
        },
    };
    let bytes = serde_json::to_vec(&record).map_err(|e| BuildError::Io {
        what: "encoding a copy origin record".into(),
        source: io::Error::other(e),
    })?;
    store.cache_keys().put(origin, &bytes)?;
    Ok(())
}

/// Entries of an earlier result, by target path.
enum Listed {
    Dir { source: Vec<u8> },
    Entry { source: Vec<u8>, stamp: SourceStamp },
}

/// What was taken over from an earlier result: entries by target path, with the stamp they
/// were copied with, and the directories that were copied ones (not the destination's).
#[derive(Default)]
pub(crate) struct TakenOver {
    entries: HashMap<Vec<u8>, SourceStamp>,
    dirs: HashSet<Vec<u8>>,
}

/// Fills `upper` (an empty dir) from the earlier result of `origin` on `parent_chain`, if
/// there is a usable one; returns what was taken over. `Ok(None)`: no usable earlier result
/// (then `upper` is empty). On an error `upper` may be partly filled: the caller starts over
/// with a new one.
pub(crate) fn start_from_origin(
    store: &Store,
    origin: &Digest,
    parent_chain: Option<&Digest>,
    context: &Root,
    upper: &Path,
) -> Result<Option<TakenOver>, BuildError> {
    let Some(bytes) = store.cache_keys().get(origin)? else {
        return Ok(None);
    };
    let Ok(OriginRecord { copy_origin: o }) = serde_json::from_slice::<OriginRecord>(&bytes) else {
        return Ok(None);
    };
    if o.parent_chain.as_ref() != parent_chain {
        return Ok(None);
    }
    let Some(snapshot) = store.snapshots().get(&o.chain_id)? else {
        return Ok(None);
    };
    let Some(listed) = read_listing(store, &o.listing)? else {
        return Ok(None);
    };
    let io_err = |what: &str, e: Errno| BuildError::Io {
        what: what.to_string(),
        source: e.into(),
    };
    let from = open_dir(rfs::CWD, &snapshot.path)
        .map_err(|e| io_err(&format!("opening {}", snapshot.path.display()), e))?;
    let to = open_dir(rfs::CWD, upper)
        .map_err(|e| io_err(&format!("opening {}", upper.display()), e))?;
    let mut clone = Clone {
        listed: &listed,
        context,
        taken: TakenOver::default(),
        path: Vec::new(),
        source_dir: None,
    };
    match clone.dir_entries(from.as_fd(), to.as_fd()) {
        Ok(true) => Ok(Some(clone.taken)),
        Ok(false) => {
            clear_dir(upper)?;
            Ok(None)
        }
        Err(e) => Err(io_err(
            &format!(
                "taking over {} from the step's earlier result",
                String::from_utf8_lossy(&clone.path)
            ),
            e,
        )),
    }
}

/// Reads a listing blob whole (verified). `None` when it is missing or malformed.
fn read_listing(
    store: &Store,
    digest: &Digest,
) -> Result<Option<HashMap<Vec<u8>, Listed>>, BuildError> {
    let blob = match store.blobs().open(digest) {
        Ok(blob) => blob,
        Err(rbuild_cache::StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut r = BufReader::with_capacity(LISTING_BUF, blob);
    let mut magic = [0u8; LISTING_MAGIC.len()];
    if r.read_exact(&mut magic).is_err() || magic != LISTING_MAGIC {
        return Ok(None);
    }
    let mut listed = HashMap::new();
    loop {
        let mut tag = [0u8; 1];
        match r.read(&mut tag) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return Ok(None),
        }
        let parsed = (|| -> io::Result<(Vec<u8>, Listed)> {
            let target = read_path(&mut r)?;
            let source = read_path(&mut r)?;
            let entry = match tag[0] {
                b'D' => Listed::Dir { source },
                b'E' => {
                    let key = FileKey {
                        dev: read_u64(&mut r)?,
                        ino: read_u64(&mut r)?,
                        size: read_u64(&mut r)?,
                        mtime_ns: read_i128(&mut r)?,
                        ctime_ns: read_i128(&mut r)?,
                    };
                    let stamp = SourceStamp {
                        key,
                        mode: read_u32(&mut r)?,
                        uid: read_u32(&mut r)?,
                        gid: read_u32(&mut r)?,
                    };
                    Listed::Entry { source, stamp }
                }
                _ => return Err(io::ErrorKind::InvalidData.into()),
            };
            Ok((target, entry))
        })();
        match parsed {
            Ok((target, entry)) => {
                listed.insert(target, entry);
            }
            Err(_) => return Ok(None),
        }
    }
    // The verified reader fails at the end when the content does not match its digest; a
    // listing is only used once it has been read to its end.
    Ok(Some(listed))
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_i128(r: &mut impl Read) -> io::Result<i128> {
    let mut b = [0u8; 16];
    r.read_exact(&mut b)?;
    Ok(i128::from_le_bytes(b))
}

fn read_path(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let len = read_u32(r)?;
    if len > MAX_LISTED_PATH {
        return Err(io::ErrorKind::InvalidData.into());
    }
    let mut path = vec![0u8; len as usize];
    r.read_exact(&mut path)?;
    Ok(path)
}

/// Removes everything inside `dir`.
pub(crate) fn clear_dir(dir: &Path) -> Result<(), BuildError> {
    let io = |e: io::Error| BuildError::Io {
        what: format!("emptying {}", dir.display()),
        source: e,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        if entry.file_type().map_err(io)?.is_dir() {
            std::fs::remove_dir_all(&path).map_err(io)?;
        } else {
            std::fs::remove_file(&path).map_err(io)?;
        }
    }
    Ok(())
}

fn open_dir<P: rustix::path::Arg>(at: impl AsFd, path: P) -> Result<OwnedFd, Errno> {
    rfs::openat(
        at,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// [`SourceStamp::of`] from a raw `stat`.
fn stamp_of(st: &rfs::Stat) -> Option<SourceStamp> {
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind == FileType::Directory || (kind == FileType::RegularFile && st.st_nlink > 1) {
        return None;
    }
    let ns = |sec: i64, nsec: i64| i128::from(sec) * 1_000_000_000 + i128::from(nsec);
    Some(SourceStamp {
        key: FileKey {
            dev: st.st_dev,
            ino: st.st_ino,
            size: u64::try_from(st.st_size).ok()?,
            mtime_ns: ns(st.st_mtime, st.st_mtime_nsec as i64),
            ctime_ns: ns(st.st_ctime, st.st_ctime_nsec as i64),
        },
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
    })
}

/// What [`Clone::entry`] did with an entry.
enum Entry {
    /// A directory (its `lstat`), for the caller to take over.
    Dir(rfs::Stat),
    /// Handled; `false` when the earlier result cannot be used.
    Done(bool),
}

/// The walk that takes an earlier result over into a new upper dir.
struct Clone<'a> {
    listed: &'a HashMap<Vec<u8>, Listed>,
    context: &'a Root,
    taken: TakenOver,
    /// The target path of the entry being looked at.
    path: Vec<u8>,
    /// The context directory the last source was in (its path and an `O_PATH` fd).
    source_dir: Option<(Vec<u8>, OwnedFd)>,
}

impl Clone<'_> {
    /// Takes over the entries of the directory `from` into `to`. `Ok(false)`: the earlier
    /// result cannot be used (it holds a whiteout or an opaque directory). Subdirectories are
    /// taken over in parallel (linking is the cost, and directories do not contend).
    fn dir_entries(&mut self, from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> Result<bool, Errno> {
        let mut names: Vec<(Vec<u8>, FileType)> = Vec::new();
        for entry in rfs::Dir::read_from(from)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            names.push((name.to_vec(), entry.file_type()));
        }
        let mut subdirs: Vec<(Vec<u8>, Vec<u8>, rfs::Stat)> = Vec::new();
        for (name, kind) in names {
            let len = self.path.len();
            if len > 0 {
                self.path.push(b'/');
            }
            self.path.extend_from_slice(&name);
            let usable = match self.entry(from, to, OsStr::from_bytes(&name), kind) {
                Ok(Entry::Dir(st)) => {
                    subdirs.push((self.path.clone(), name, st));
                    Ok(true)
                }
                Ok(Entry::Done(usable)) => Ok(usable),
                Err(e) => Err(e),
            };
            self.path.truncate(len);
            if !usable? {
                return Ok(false);
            }
        }
        let (listed, context) = (self.listed, self.context);
        let results: Vec<Result<(bool, TakenOver), Errno>> = subdirs
            .into_par_iter()
            .map(|(path, name, st)| {
                let mut sub = Clone {
                    listed,
                    context,
                    taken: TakenOver::default(),
                    path,
                    source_dir: None,
                };
                let usable = sub.dir(from, to, OsStr::from_bytes(&name), &st)?;
                Ok((usable, sub.taken))
            })
            .collect();
        let mut usable = true;
        for result in results {
            let (ok, taken) = result?;
            usable &= ok;
            self.taken.entries.extend(taken.entries);
            self.taken.dirs.extend(taken.dirs);
        }
        Ok(usable)
    }

    /// Takes over one entry that is not a directory; a directory is returned to be taken over
    /// with its siblings.
    fn entry(
        &mut self,
        from: BorrowedFd<'_>,
        to: BorrowedFd<'_>,
        name: &OsStr,
        kind: FileType,
    ) -> Result<Entry, Errno> {
        // Regular files and symlinks need no stat of their own (the source's stamp decides).
        if !matches!(kind, FileType::RegularFile | FileType::Symlink) {
            let st = rfs::statat(from, name, AtFlags::SYMLINK_NOFOLLOW)?;
            let kind = FileType::from_raw_mode(st.st_mode);
            if kind == FileType::Directory {
                return Ok(Entry::Dir(st));
            }
            if kind == FileType::CharacterDevice && st.st_rdev == 0 {
                return Ok(Entry::Done(false)); // an overlayfs whiteout
            }
        }
        let Some(Listed::Entry { source, stamp }) = self.listed.get(&self.path) else {
            // Not from the context: made again by the copy if still wanted.
            return Ok(Entry::Done(true));
        };
        if !self.source_has(source, stamp) {
            return Ok(Entry::Done(true));
        }
        match rfs::linkat(from, name, to, name, AtFlags::empty()) {
            Ok(()) => {
                self.taken.entries.insert(self.path.clone(), *stamp);
                Ok(Entry::Done(true))
            }
            // Too many links to that inode already: copied again instead.
            Err(Errno::MLINK) => Ok(Entry::Done(true)),
            Err(e) => Err(e),
        }
    }

    /// Whether the context entry at `source` still has `stamp`. Its parent is resolved in the
    /// context (and kept for its siblings, which usually follow), the entry itself is looked
    /// up by name beneath it without following it.
    fn source_has(&mut self, source: &[u8], stamp: &SourceStamp) -> bool {
        let (parent, name) = match source.iter().rposition(|b| *b == b'/') {
            Some(i) => (&source[..i], &source[i + 1..]),
            None => (&source[..0], source),
        };
        if name.is_empty() || name == b"." || name == b".." {
            return false;
        }
        if self.source_dir.as_ref().is_none_or(|(p, _)| p != parent) {
            let dir = if parent.is_empty() {
                self.context.try_clone().map(Root::into_fd)
            } else {
                self.context
                    .open_beneath(OsStr::from_bytes(parent))
                    .map(Root::into_fd)
            };
            match dir {
                Ok(fd) => self.source_dir = Some((parent.to_vec(), fd)),
                Err(_) => return false,
            }
        }
        let Some((_, dir)) = &self.source_dir else {
            return false;
        };
        match rfs::statat(dir, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => stamp_of(&st).as_ref() == Some(stamp),
            Err(_) => false,
        }
    }

    fn dir(
        &mut self,
        from: BorrowedFd<'_>,
        to: BorrowedFd<'_>,
        name: &OsStr,
        st: &rfs::Stat,
    ) -> Result<bool, Errno> {
        match self.listed.get(&self.path) {
            Some(Listed::Dir { source }) => {
                let still_dir = self
                    .context
                    .symlink_metadata(OsStr::from_bytes(source))
                    .is_ok_and(|md| md.is_dir());
                if !still_dir {
                    return Ok(true);
                }
                self.taken.dirs.insert(self.path.clone());
            }
            Some(Listed::Entry { .. }) => return Ok(true),
            None => {}
        }
        let src = open_dir(from, name)?;
        let xattrs = read_xattrs(src.as_fd())?;
        if xattrs
            .iter()
            .any(|(n, _)| n.as_bytes().ends_with(b"overlay.opaque"))
        {
            return Ok(false);
        }
        rfs::mkdirat(to, name, Mode::from_raw_mode(0o700))?;
        let dst = open_dir(to, name)?;
        if !self.dir_entries(src.as_fd(), dst.as_fd())? {
            return Ok(false);
        }
        for (n, value) in &xattrs {
            if OVERLAY_XATTR_PREFIXES
                .iter()
                .any(|p| n.as_bytes().starts_with(p))
            {
                continue;
            }
            rfs::fsetxattr(dst.as_fd(), n.as_c_str(), value, rfs::XattrFlags::empty())?;
        }
        rfs::fchown(
            dst.as_fd(),
            Some(rfs::Uid::from_raw(st.st_uid)),
            Some(rfs::Gid::from_raw(st.st_gid)),
        )?;
        rfs::fchmod(dst.as_fd(), Mode::from_raw_mode(st.st_mode & 0o7777))?;
        rfs::futimens(dst.as_fd(), &times_of(st))?;
        Ok(true)
    }
}

/// The access and modification times of a `stat`.
fn times_of(st: &rfs::Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

/// The extended attributes of an open directory.
fn read_xattrs(fd: BorrowedFd<'_>) -> Result<Vec<(std::ffi::CString, Vec<u8>)>, Errno> {
    let size = rfs::flistxattr(fd, &mut [0u8; 0][..])?;
    if size == 0 {
        return Ok(Vec::new());
    }
    let mut names = vec![0u8; size];
    let n = rfs::flistxattr(fd, &mut names[..])?;
    names.truncate(n);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(cname) = std::ffi::CString::new(name) else {
            continue;
        };
        let len = rfs::fgetxattr(fd, cname.as_c_str(), &mut [0u8; 0][..])?;
        let mut value = vec![0u8; len];
        let got = rfs::fgetxattr(fd, cname.as_c_str(), &mut value[..])?;
        value.truncate(got);
        out.push((cname, value));
    }
    Ok(out)
}

/// The [`CopyJournal`] of a context copy: writes its listing to a blob as it goes, and knows
/// what was taken over from the earlier result — and so, after the copy, what of that the copy
/// no longer reached (a source now ignored, a source symlink pointing elsewhere), which
/// [`ListingJournal::sweep`] removes.
pub(crate) struct ListingJournal {
    out: Option<BufWriter<BlobWriter>>,
    failed: bool,
    taken: TakenOver,
    /// Entries whose ctime is at or after this (ns since the epoch) are not listed.
    unsettled_from_ns: i128,
}

impl ListingJournal {
    pub(crate) fn new(store: &Store, taken: TakenOver) -> Result<ListingJournal, BuildError> {
        let mut out = BufWriter::with_capacity(LISTING_BUF, store.blobs().writer()?);
        let failed = out.write_all(LISTING_MAGIC).is_err();
        let now_ns = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        Ok(ListingJournal {
            out: Some(out),
            failed,
            taken,
            unsettled_from_ns: now_ns - SETTLE_NS,
        })
    }

    fn record(&mut self, tag: u8, target: &[u8], source: &[u8], stamp: Option<&SourceStamp>) {
        if self.failed {
            return;
        }
        let Some(out) = self.out.as_mut() else {
            return;
        };
        let (Ok(tl), Ok(sl)) = (u32::try_from(target.len()), u32::try_from(source.len())) else {
            return;
        };
        if tl > MAX_LISTED_PATH || sl > MAX_LISTED_PATH {
            return;
        }
        let mut w = || -> io::Result<()> {
            out.write_all(&[tag])?;
            out.write_all(&tl.to_le_bytes())?;
            out.write_all(target)?;
            out.write_all(&sl.to_le_bytes())?;
            out.write_all(source)?;
            if let Some(s) = stamp {
                out.write_all(&s.key.dev.to_le_bytes())?;
                out.write_all(&s.key.ino.to_le_bytes())?;
                out.write_all(&s.key.size.to_le_bytes())?;
                out.write_all(&s.key.mtime_ns.to_le_bytes())?;
                out.write_all(&s.key.ctime_ns.to_le_bytes())?;
                out.write_all(&s.mode.to_le_bytes())?;
                out.write_all(&s.uid.to_le_bytes())?;
                out.write_all(&s.gid.to_le_bytes())?;
            }
            Ok(())
        };
        if w().is_err() {
            self.failed = true;
        }
    }

    /// Removes from `upper` (no longer mounted) what was taken over but not reached by the
    /// copy: a copy from scratch would not have made it.
    pub(crate) fn sweep(&mut self, upper: &Path) -> Result<(), BuildError> {
        let fail = |path: &Path, e: io::Error| BuildError::Io {
            what: format!("removing {} from the step's result", path.display()),
            source: e,
        };
        let files = std::mem::take(&mut self.taken.entries);
        let dirs = std::mem::take(&mut self.taken.dirs);
        // The copy set the directories' times already: removing entries must not move them.
        let mut parents: HashMap<Vec<u8>, Option<Timestamps>> = HashMap::new();
        for target in files.keys().chain(dirs.iter()) {
            let parent = match target.iter().rposition(|b| *b == b'/') {
                Some(i) => target[..i].to_vec(),
                None => continue, // the upper dir itself: not part of the layer
            };
            parents.entry(parent).or_insert(None);
        }
        for (parent, times) in &mut parents {
            let path = upper.join(OsStr::from_bytes(parent));
            if let Ok(st) = rfs::statat(rfs::CWD, &path, AtFlags::SYMLINK_NOFOLLOW) {
                *times = Some(times_of(&st));
            }
        }
        for target in files.keys() {
            let path = upper.join(OsStr::from_bytes(target));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(fail(&path, e)),
            }
        }
        for target in &dirs {
            let path = upper.join(OsStr::from_bytes(target));
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(fail(&path, e)),
            }
        }
        for (parent, times) in &parents {
            let Some(times) = times else { continue };
            let path = upper.join(OsStr::from_bytes(parent));
            match rfs::utimensat(rfs::CWD, &path, times, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(fail(&path, e.into())),
            }
        }
        Ok(())
    }

    /// Stores the listing; `None` when writing it failed (the next run copies in full).
    pub(crate) fn finish(mut self) -> Option<Digest> {
        let out = self.out.take()?;
        if self.failed {
            return None;
        }
        let writer = out.into_inner().ok()?;
        writer.commit().ok().map(|(digest, _)| digest)
    }
}

impl CopyJournal for ListingJournal {
    fn dir(&mut self, target: &[u8], source: &[u8]) {
        self.taken.dirs.remove(target);
        self.record(b'D', target, source, None);
    }

    fn entry(&mut self, target: &[u8], source: &[u8], stamp: &SourceStamp) {
        if stamp.key.ctime_ns >= self.unsettled_from_ns {
            return;
        }
        self.record(b'E', target, source, Some(stamp));
    }

    fn in_place(&mut self, target: &[u8], stamp: &SourceStamp) -> bool {
        // Reached: kept if it is what the copy writes, replaced by the copy otherwise.
        self.taken.entries.remove(target).as_ref() == Some(stamp)
    }
}
