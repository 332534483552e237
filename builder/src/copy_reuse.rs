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

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::SystemTime;

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

/// Entries taken over from an earlier result, by target path, with the stamp they were copied
/// with.
pub(crate) type InPlace = HashMap<Vec<u8>, SourceStamp>;

/// Fills `upper` (an empty dir) from the earlier result of `origin` on `parent_chain`, if
/// there is a usable one; returns the entries taken over. `Ok(None)`: no usable earlier result
/// (then `upper` is empty). On an error `upper` may be partly filled: the caller starts over
/// with a new one.
pub(crate) fn start_from_origin(
    store: &Store,
    origin: &Digest,
    parent_chain: Option<&Digest>,
    context: &Root,
    upper: &Path,
) -> Result<Option<InPlace>, BuildError> {
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
        in_place: InPlace::new(),
        path: Vec::new(),
    };
    match clone.dir_entries(from.as_fd(), to.as_fd()) {
        Ok(true) => Ok(Some(clone.in_place)),
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

/// The walk that takes an earlier result over into a new upper dir.
struct Clone<'a> {
    listed: &'a HashMap<Vec<u8>, Listed>,
    context: &'a Root,
    in_place: InPlace,
    /// The target path of the entry being looked at.
    path: Vec<u8>,
}

impl Clone<'_> {
    /// Takes over the entries of the directory `from` into `to`. `Ok(false)`: the earlier
    /// result cannot be used (it holds a whiteout or an opaque directory).
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
        for (name, kind) in names {
            let len = self.path.len();
            if len > 0 {
                self.path.push(b'/');
            }
            self.path.extend_from_slice(&name);
            let name = OsStr::from_bytes(&name);
            let usable = self.entry(from, to, name, kind);
            self.path.truncate(len);
            if !usable? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn entry(
        &mut self,
        from: BorrowedFd<'_>,
        to: BorrowedFd<'_>,
        name: &OsStr,
        kind: FileType,
    ) -> Result<bool, Errno> {
        let st = rfs::statat(from, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let kind = if kind == FileType::Unknown {
            FileType::from_raw_mode(st.st_mode)
        } else {
            kind
        };
        if kind == FileType::Directory {
            return self.dir(from, to, name, &st);
        }
        if kind == FileType::CharacterDevice && st.st_rdev == 0 {
            return Ok(false); // an overlayfs whiteout
        }
        let Some(Listed::Entry { source, stamp }) = self.listed.get(&self.path) else {
            return Ok(true); // not from the context: made again by the copy if still wanted
        };
        if !self.source_has(source, stamp) {
            return Ok(true);
        }
        match rfs::linkat(from, name, to, name, AtFlags::empty()) {
            Ok(()) => {
                self.in_place.insert(self.path.clone(), *stamp);
                Ok(true)
            }
            // Too many links to that inode already: copied again instead.
            Err(Errno::MLINK) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Whether the context entry at `source` still has `stamp`.
    fn source_has(&self, source: &[u8], stamp: &SourceStamp) -> bool {
        match self.context.symlink_metadata(OsStr::from_bytes(source)) {
            Ok(md) => SourceStamp::of(&md).as_ref() == Some(stamp),
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
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: st.st_atime,
                tv_nsec: st.st_atime_nsec as _,
            },
            last_modification: Timespec {
                tv_sec: st.st_mtime,
                tv_nsec: st.st_mtime_nsec as _,
            },
        };
        rfs::futimens(dst.as_fd(), &times)?;
        Ok(true)
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
/// the entries taken over from the earlier result.
pub(crate) struct ListingJournal {
    out: Option<BufWriter<BlobWriter>>,
    failed: bool,
    in_place: InPlace,
    /// Entries whose ctime is at or after this (ns since the epoch) are not listed.
    unsettled_from_ns: i128,
}

impl ListingJournal {
    pub(crate) fn new(store: &Store, in_place: InPlace) -> Result<ListingJournal, BuildError> {
        let mut out = BufWriter::with_capacity(LISTING_BUF, store.blobs().writer()?);
        let failed = out.write_all(LISTING_MAGIC).is_err();
        let now_ns = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        Ok(ListingJournal {
            out: Some(out),
            failed,
            in_place,
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
        self.record(b'D', target, source, None);
    }

    fn entry(&mut self, target: &[u8], source: &[u8], stamp: &SourceStamp) {
        if stamp.key.ctime_ns >= self.unsettled_from_ns {
            return;
        }
        self.record(b'E', target, source, Some(stamp));
    }

    fn in_place(&self, target: &[u8], stamp: &SourceStamp) -> bool {
        self.in_place.get(target) == Some(stamp)
    }
}
