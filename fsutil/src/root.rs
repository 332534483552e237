//! [`Root`]: a directory fd that every operation is confined beneath.
//!
//! Paths given to a `Root` are relative to it (a leading `/` is the root
//! itself) and are cleaned lexically first ([`RelPath::clamped`]: `..` at the
//! top stays at the root). They are then resolved by the kernel with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: symlinks are
//! followed, but an absolute target or a `..` is clamped to the root exactly
//! as if the process were chrooted there. Nothing is ever resolved by
//! joining strings onto a host path.
//!
//! Creating or changing an entry resolves the *parent* that way and then acts
//! on the final name with an `*at` call relative to the parent's fd, never
//! following a symlink in the final position. Metadata changes act on an
//! `O_PATH|O_NOFOLLOW` fd of the entry itself. So a concurrent swap of a
//! directory for a symlink (the TOCTOU class, docker cp CVE-2018-15664) can
//! at worst redirect an operation to another place *inside* the root.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{FsError, Result};
use crate::path::RelPath;
use crate::sys;

/// How many symlinks [`Root::mkdir_all`] follows before giving up (`ELOOP`),
/// the same budget the kernel uses.
const MAX_SYMLINK_FOLLOWS: usize = 40;

/// How many times [`Root::mkdir_all`] retries a component that changed under
/// it (created or swapped by someone else) before giving up.
const MAX_RACE_RETRIES: usize = 64;

/// The kind of special file [`Root::mknod`] creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A FIFO (named pipe); major/minor are ignored.
    Fifo,
}

/// An owned directory fd (`O_PATH|O_DIRECTORY|O_CLOEXEC`) that every
/// operation is confined beneath.
///
/// Paths are relative to the root (a leading `/` is the root itself) and
/// are cleaned lexically first: `..` pops a component and at the top stays
/// at the root, as BuildKit cleans `COPY` destinations. They are then
/// resolved by the kernel with `openat2(RESOLVE_IN_ROOT |
/// RESOLVE_NO_MAGICLINKS)`: symlinks are followed but an absolute target or
/// a `..` is clamped to the root, as in a chroot.
///
/// Operations that create or replace an entry resolve its parent that way
/// and act on the final name with an `*at` call relative to the parent fd,
/// never following a symlink in the final position; metadata changes act on
/// an `O_PATH|O_NOFOLLOW` fd of the entry. A concurrent swap of a directory
/// for a symlink can at worst redirect an operation elsewhere *inside* the
/// root. See the [crate docs](crate).
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
}

impl AsFd for Root {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Root {
    /// Open the host directory `path` as a root. `path` is trusted (it comes
    /// from rbuild's own state, not from build input).
    pub fn open(path: &Path) -> Result<Root> {
        let fd = rfs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| FsError::OpenRoot {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(Root { fd })
    }

    /// Use an already-open directory fd as a root.
    pub fn from_fd(fd: OwnedFd) -> Result<Root> {
        let st = rfs::fstat(&fd).map_err(|e| FsError::io("stat", ".", e))?;
        if sys::file_type(&st) != FileType::Directory {
            return Err(FsError::io("open", ".", Errno::NOTDIR));
        }
        Ok(Root { fd })
    }

    /// The directory fd itself.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Another handle on the same directory.
    pub fn try_clone(&self) -> Result<Root> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| FsError::io("dup", ".", e))?;
        Ok(Root { fd })
    }

    /// Open the directory `rel` (resolved in this root) as a new root.
    ///
    /// Symlinks inside the new root are then clamped to *it*, not to `self`.
    pub fn open_beneath(&self, rel: impl AsRef<Path>) -> Result<Root> {
        let given = rel.as_ref();
        let fd = self
            .resolve(&RelPath::clamped(given), OFlags::PATH | OFlags::DIRECTORY)
            .map_err(|e| FsError::io("open", given, e))?;
        Ok(Root { fd })
    }

    /// Resolve `p` from the root fd with `RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS`.
    pub(crate) fn resolve(&self, p: &RelPath, flags: OFlags) -> Result<OwnedFd, Errno> {
        sys::openat2(self.fd.as_fd(), &p.to_kernel_arg(), flags, 0, sys::IN_ROOT)
    }

    /// Resolve `p` without following a symlink in the final position.
    pub(crate) fn resolve_nofollow(&self, p: &RelPath) -> Result<OwnedFd, Errno> {
        self.resolve(p, OFlags::PATH | OFlags::NOFOLLOW)
    }

    /// Resolve the parent of `rel` in-root and return its fd (`O_PATH`) and
    /// the final component.
    ///
    /// `rel` is cleaned first (`a/b/../c` is `a/c`); a path that cleans to
    /// the root itself (``, `.`, `/`, `a/..`) has no final name and is
    /// refused with [`FsError::InvalidPath`].
    pub fn parent_and_name(&self, rel: impl AsRef<Path>) -> Result<(OwnedFd, OsString)> {
        let given = rel.as_ref();
        let p = RelPath::clamped(given);
        let (parent, name) = self.parent_of(&p, given)?;
        Ok((parent, name.to_os_string()))
    }

    pub(crate) fn parent_of<'p>(
        &self,
        p: &'p RelPath,
        given: &Path,
    ) -> Result<(OwnedFd, &'p OsStr)> {
        let Some((parent, name)) = p.split_last() else {
            return Err(FsError::InvalidPath {
                path: given.to_path_buf(),
                reason: "names the root itself",
            });
        };
        let fd = self
            .resolve(&parent, OFlags::PATH | OFlags::DIRECTORY)
            .map_err(|e| FsError::io("open parent of", given, e))?;
        Ok((fd, name))
    }

    /// Create `rel` and any missing parents, like `mkdir -p`, returning the
    /// directories created (relative to the root, symlinks resolved).
    ///
    /// Each missing component is made with `mkdirat` under the directory fd
    /// it belongs in. Existing symlinks on the way are followed *inside the
    /// root* (an absolute target or `..` is clamped), including dangling
    /// ones, whose targets are created — so `WORKDIR /a/b` with `a -> /`
    /// lands in the root (Podman's WORKDIR-through-symlink class). New
    /// directories get exactly `mode` (no umask) and `owner` if given.
    pub fn mkdir_all(
        &self,
        rel: impl AsRef<Path>,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<Vec<PathBuf>> {
        let given = rel.as_ref();
        let (_, created) = self.mkdir_all_fd(&RelPath::clamped(given), mode, owner, given)?;
        Ok(created)
    }

    /// [`Root::mkdir_all`] returning an `O_PATH` fd of the final directory.
    pub(crate) fn mkdir_all_fd(
        &self,
        target: &RelPath,
        mode: u32,
        owner: Option<(u32, u32)>,
        given: &Path,
    ) -> Result<(OwnedFd, Vec<PathBuf>)> {
        let dir_flags = OFlags::PATH | OFlags::DIRECTORY;
        let fail = |op: &'static str, e: Errno| FsError::io(op, given, e);
        // Fast path: it already exists.
        match self.resolve(target, dir_flags) {
            Ok(fd) => return Ok((fd, Vec::new())),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(fail("mkdir", e)),
        }
        if let Some((u, g)) = owner {
            sys::ids(u, g).map_err(|e| fail("chown", e))?;
        }

        // Walk component by component. `physical` is where `cur` is, with
        // every symlink already replaced by its (clamped) target.
        let mut pending: VecDeque<OsString> = target.components().iter().cloned().collect();
        let mut physical = RelPath::root();
        let mut cur = self
            .resolve(&physical, dir_flags)
            .map_err(|e| fail("open", e))?;
        let mut created = Vec::new();
        let mut follows = 0;
        let mut races = 0;
        while let Some(comp) = pending.pop_front() {
            match comp.as_bytes() {
                b"" | b"." => continue,
                b".." => {
                    physical.pop();
                    cur = self
                        .resolve(&physical, dir_flags)
                        .map_err(|e| fail("open", e))?;
                    continue;
                }
                _ => {}
            }
            let mut retry = |pending: &mut VecDeque<OsString>, comp: OsString| -> Result<()> {
                races += 1;
                if races > MAX_RACE_RETRIES {
                    return Err(fail("mkdir", Errno::AGAIN));
                }
                pending.push_front(comp);
                Ok(())
            };
            match sys::lstat_child(cur.as_fd(), &comp) {
                Ok(st) => match sys::file_type(&st) {
                    FileType::Directory => {
                        match sys::open_child(cur.as_fd(), &comp, dir_flags, 0) {
                            Ok(fd) => {
                                physical.push(&comp);
                                cur = fd;
                            }
                            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => {
                                retry(&mut pending, comp)?
                            }
                            Err(e) => return Err(fail("open", e)),
                        }
                    }
                    FileType::Symlink => {
                        follows += 1;
                        if follows > MAX_SYMLINK_FOLLOWS {
                            return Err(fail("mkdir", Errno::LOOP));
                        }
                        let target = match rfs::readlinkat(cur.as_fd(), &comp, Vec::new()) {
                            Ok(t) => t,
                            Err(Errno::NOENT | Errno::INVAL) => {
                                retry(&mut pending, comp)?;
                                continue;
                            }
                            Err(e) => return Err(fail("readlink", e)),
                        };
                        let bytes = target.as_bytes();
                        if bytes.starts_with(b"/") {
                            physical = RelPath::root();
                            cur = self
                                .resolve(&physical, dir_flags)
                                .map_err(|e| fail("open", e))?;
                        }
                        for part in bytes.split(|b| *b == b'/').rev() {
                            if !part.is_empty() && part != b"." {
                                pending.push_front(OsStr::from_bytes(part).to_os_string());
                            }
                        }
                    }
                    _ => return Err(fail("mkdir", Errno::NOTDIR)),
                },
                Err(Errno::NOENT) => match rfs::mkdirat(
                    cur.as_fd(),
                    &comp,
                    Mode::from_raw_mode(mode & sys::MODE_MASK),
                ) {
                    Ok(()) => {
                        let fd = match sys::open_child(cur.as_fd(), &comp, dir_flags, 0) {
                            Ok(fd) => fd,
                            // Removed or swapped right after we made it.
                            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => {
                                retry(&mut pending, comp)?;
                                continue;
                            }
                            Err(e) => return Err(fail("open", e)),
                        };
                        if let Some((u, g)) = owner {
                            sys::chown_fd(fd.as_fd(), u, g).map_err(|e| fail("chown", e))?;
                        }
                        sys::chmod_fd(fd.as_fd(), mode).map_err(|e| fail("chmod", e))?;
                        physical.push(&comp);
                        created.push(physical.to_path_buf());
                        cur = fd;
                    }
                    Err(Errno::EXIST) => retry(&mut pending, comp)?,
                    Err(e) => return Err(fail("mkdir", e)),
                },
                Err(e) => return Err(fail("stat", e)),
            }
        }
        Ok((cur, created))
    }

    /// Create a new regular file `rel` (the parent must exist) and open it
    /// for writing. Fails if anything, even a dangling symlink, is already
    /// there (`O_CREAT|O_EXCL|O_NOFOLLOW`). The file gets exactly `mode`.
    pub fn create_file(&self, rel: impl AsRef<Path>, mode: u32) -> Result<File> {
        let given = rel.as_ref();
        let p = RelPath::clamped(given);
        let (parent, name) = self.parent_of(&p, given)?;
        create_in(parent.as_fd(), name, mode).map_err(|e| FsError::io("create", given, e))
    }

    /// Open the existing file `rel` for reading (symlinks followed in-root).
    pub fn open_file(&self, rel: impl AsRef<Path>) -> Result<File> {
        let given = rel.as_ref();
        let fd = self
            .resolve(&RelPath::clamped(given), OFlags::RDONLY)
            .map_err(|e| FsError::io("open", given, e))?;
        Ok(File::from(fd))
    }

    /// Write `reader` to a new file `rel` with `mode`, replacing an existing
    /// non-directory entry there (it is unlinked, never written through —
    /// an existing symlink is replaced, not followed). The parent must
    /// exist. Returns the number of bytes written.
    pub fn write_file_from(
        &self,
        rel: impl AsRef<Path>,
        reader: &mut dyn Read,
        mode: u32,
    ) -> Result<u64> {
        let given = rel.as_ref();
        let p = RelPath::clamped(given);
        let (parent, name) = self.parent_of(&p, given)?;
        replace_non_dir(parent.as_fd(), name).map_err(|e| FsError::io("replace", given, e))?;
        let mut file =
            create_in(parent.as_fd(), name, mode).map_err(|e| FsError::io("create", given, e))?;
        io::copy(reader, &mut file).map_err(|e| FsError::io("write", given, e))
    }

    /// Create a symlink `rel` whose target is `target`, stored verbatim.
    pub fn symlink(&self, target: impl AsRef<Path>, rel: impl AsRef<Path>) -> Result<()> {
        let given = rel.as_ref();
        let p = RelPath::clamped(given);
        let (parent, name) = self.parent_of(&p, given)?;
        rfs::symlinkat(target.as_ref(), parent.as_fd(), name)
            .map_err(|e| FsError::io("symlink", given, e))
    }

    /// Hard-link `existing_rel` as `new_rel`, both resolved in-root.
    ///
    /// A symlink in the final position of `existing_rel` is *not* followed:
    /// the new name shares the symlink's own inode, never an outside file.
    /// Directories cannot be hard-linked.
    pub fn hardlink(
        &self,
        existing_rel: impl AsRef<Path>,
        new_rel: impl AsRef<Path>,
    ) -> Result<()> {
        let existing = existing_rel.as_ref();
        let given = new_rel.as_ref();
        let src = RelPath::clamped(existing);
        if src.is_root() {
            return Err(FsError::InvalidPath {
                path: existing.to_path_buf(),
                reason: "names the root itself",
            });
        }
        let fd = self
            .resolve_nofollow(&src)
            .map_err(|e| FsError::io("open", existing, e))?;
        let st = rfs::fstat(&fd).map_err(|e| FsError::io("stat", existing, e))?;
        if sys::file_type(&st) == FileType::Directory {
            return Err(FsError::io("link", existing, Errno::PERM));
        }
        let p = RelPath::clamped(given);
        let (parent, name) = self.parent_of(&p, given)?;
        sys::link_fd(fd.as_fd(), parent.as_fd(), name).map_err(|e| FsError::io("link", given, e))
    }

    /// Create a device node or FIFO `rel` with exactly `mode` (no umask).
    pub fn mknod(
        &self,
        rel: impl AsRef<Path>,
        kind: NodeKind,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<()> {
        let given = rel.as_ref();
        let p = RelPath::clamped(given);
        let (parent, name) = self.parent_of(&p, given)?;
        mknod_in(parent.as_fd(), name, kind, mode, major, minor)
            .map_err(|e| FsError::io("mknod", given, e))
    }

    /// Remove `rel` and, if it is a directory, everything beneath it.
    ///
    /// Never follows a symlink: a symlink (even to a host directory) is
    /// unlinked itself, and subdirectories are entered with
    /// `O_NOFOLLOW|O_DIRECTORY` (BuildKit CVE-2024-23652). Intermediate
    /// components of `rel` are resolved in-root. Missing is not an error;
    /// returns whether something was removed. The root itself cannot be
    /// removed (use [`Root::clear`]).
    pub fn remove_all(&self, rel: impl AsRef<Path>) -> Result<bool> {
        let given = rel.as_ref();
        let p = RelPath::clamped(given);
        let (parent, name) = match self.parent_of(&p, given) {
            Ok(v) => v,
            Err(e) if e.io_kind() == Some(io::ErrorKind::NotFound) => return Ok(false),
            Err(e) => return Err(e),
        };
        sys::remove_at(parent.as_fd(), name).map_err(|e| FsError::io("remove", given, e))
    }

    /// Remove everything inside the directory `rel` (resolved in-root),
    /// keeping the directory itself. Never follows symlinks inside it.
    pub fn clear(&self, rel: impl AsRef<Path>) -> Result<()> {
        let given = rel.as_ref();
        let dir = self
            .resolve(&RelPath::clamped(given), OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(|e| FsError::io("open", given, e))?;
        sys::remove_children(dir, |_| false).map_err(|e| FsError::io("remove", given, e))
    }

    /// Change the owner of `rel` itself (a symlink is not followed).
    pub fn lchown(&self, rel: impl AsRef<Path>, uid: u32, gid: u32) -> Result<()> {
        let given = rel.as_ref();
        let fd = self
            .resolve_nofollow(&RelPath::clamped(given))
            .map_err(|e| FsError::io("open", given, e))?;
        sys::chown_fd(fd.as_fd(), uid, gid).map_err(|e| FsError::io("chown", given, e))
    }

    /// Set the permission bits (and setuid/setgid/sticky) of `rel`.
    ///
    /// A symlink in the final position is not followed; since Linux has no
    /// symlink modes, that is an error (`ELOOP`).
    pub fn chmod(&self, rel: impl AsRef<Path>, mode: u32) -> Result<()> {
        let given = rel.as_ref();
        let fd = self
            .resolve_nofollow(&RelPath::clamped(given))
            .map_err(|e| FsError::io("open", given, e))?;
        sys::chmod_fd(fd.as_fd(), mode).map_err(|e| FsError::io("chmod", given, e))
    }

    /// Set access and modification times of `rel` itself (symlinks included,
    /// not followed).
    pub fn set_times(
        &self,
        rel: impl AsRef<Path>,
        atime: SystemTime,
        mtime: SystemTime,
    ) -> Result<()> {
        let given = rel.as_ref();
        let fd = self
            .resolve_nofollow(&RelPath::clamped(given))
            .map_err(|e| FsError::io("open", given, e))?;
        sys::set_times_fd(fd.as_fd(), sys::timespec(atime), sys::timespec(mtime))
            .map_err(|e| FsError::io("set times of", given, e))
    }

    /// Set the extended attribute `name` on `rel` itself (not followed).
    pub fn set_xattr(
        &self,
        rel: impl AsRef<Path>,
        name: impl AsRef<OsStr>,
        value: &[u8],
    ) -> Result<()> {
        let given = rel.as_ref();
        let fd = self
            .resolve_nofollow(&RelPath::clamped(given))
            .map_err(|e| FsError::io("open", given, e))?;
        sys::set_xattr_fd(fd.as_fd(), name.as_ref(), value)
            .map_err(|e| FsError::io("setxattr", given, e))
    }

    /// Metadata of `rel` itself (a final symlink is not followed).
    pub fn symlink_metadata(&self, rel: impl AsRef<Path>) -> Result<Metadata> {
        let given = rel.as_ref();
        let fd = self
            .resolve_nofollow(&RelPath::clamped(given))
            .map_err(|e| FsError::io("open", given, e))?;
        File::from(fd)
            .metadata()
            .map_err(|e| FsError::io("stat", given, e))
    }

    /// The target of the symlink `rel`, verbatim.
    pub fn read_link(&self, rel: impl AsRef<Path>) -> Result<PathBuf> {
        use std::os::unix::ffi::OsStringExt;
        let given = rel.as_ref();
        let fd = self
            .resolve_nofollow(&RelPath::clamped(given))
            .map_err(|e| FsError::io("open", given, e))?;
        let target =
            rfs::readlinkat(&fd, "", Vec::new()).map_err(|e| FsError::io("readlink", given, e))?;
        Ok(PathBuf::from(OsString::from_vec(target.into_bytes())))
    }

    /// The names in directory `rel` (symlinks followed in-root), sorted,
    /// without `.` and `..`.
    pub fn read_dir(&self, rel: impl AsRef<Path>) -> Result<Vec<OsString>> {
        let given = rel.as_ref();
        let fd = self
            .resolve(&RelPath::clamped(given), OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(|e| FsError::io("open", given, e))?;
        let mut names = read_names(fd).map_err(|e| FsError::io("read directory", given, e))?;
        names.sort();
        Ok(names)
    }

    /// An `O_PATH` fd of `rel`, resolved in the root (symlinks followed in-root, a final one
    /// too unless `nofollow`). Such an fd is what mounts are made on and from: the path is
    /// resolved once, and the mount acts on the fd (SECURITY-CLASSES 3, 4).
    pub fn open_path(&self, rel: impl AsRef<Path>, nofollow: bool) -> Result<OwnedFd> {
        let given = rel.as_ref();
        let p = RelPath::clamped(given);
        let fd = if nofollow {
            self.resolve_nofollow(&p)
        } else {
            self.resolve(&p, OFlags::PATH)
        };
        fd.map_err(|e| FsError::io("open", given, e))
    }

    /// Whether `rel` exists (a dangling symlink exists). A missing parent or
    /// a non-directory on the way means `false`.
    pub fn exists(&self, rel: impl AsRef<Path>) -> Result<bool> {
        let given = rel.as_ref();
        match self.resolve_nofollow(&RelPath::clamped(given)) {
            Ok(_) => Ok(true),
            Err(Errno::NOENT | Errno::NOTDIR) => Ok(false),
            Err(e) => Err(FsError::io("stat", given, e)),
        }
    }
}

/// `O_CREAT|O_EXCL|O_NOFOLLOW` one component in `parent`, then set `mode`
/// exactly (the umask would otherwise narrow it).
pub(crate) fn create_in(parent: BorrowedFd<'_>, name: &OsStr, mode: u32) -> Result<File, Errno> {
    let fd = sys::open_child(
        parent,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
        mode,
    )?;
    rfs::fchmod(&fd, Mode::from_raw_mode(mode & sys::MODE_MASK))?;
    Ok(File::from(fd))
}

/// Unlink whatever non-directory is at `name` in `parent`; a directory there
/// is an error (`EISDIR`), nothing there is fine.
pub(crate) fn replace_non_dir(parent: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    match rfs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `mknodat` one component in `parent`, then set `mode` exactly.
pub(crate) fn mknod_in(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    kind: NodeKind,
    mode: u32,
    major: u32,
    minor: u32,
) -> Result<(), Errno> {
    let (ft, dev) = match kind {
        NodeKind::Char => (FileType::CharacterDevice, rfs::makedev(major, minor)),
        NodeKind::Block => (FileType::BlockDevice, rfs::makedev(major, minor)),
        NodeKind::Fifo => (FileType::Fifo, 0),
    };
    rfs::mknodat(
        parent,
        name,
        ft,
        Mode::from_raw_mode(mode & sys::MODE_MASK),
        dev,
    )?;
    let fd = sys::open_child(parent, name, OFlags::PATH, 0)?;
    sys::chmod_fd(fd.as_fd(), mode)
}

/// All names in the directory open as `dir`, minus `.` and `..`.
pub(crate) fn read_names(dir: OwnedFd) -> Result<Vec<OsString>, Errno> {
    let mut names = Vec::new();
    for entry in rfs::Dir::new(dir)? {
        let entry = entry?;
        let b = entry.file_name().to_bytes();
        if b != b"." && b != b".." {
            names.push(OsStr::from_bytes(b).to_os_string());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn setup() -> std::result::Result<(tempfile::TempDir, Root), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let root = Root::open(tmp.path())?;
        Ok((tmp, root))
    }

    fn am_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[test]
    fn open_refuses_non_directories() -> TestResult {
        let (tmp, _root) = setup()?;
        std::fs::write(tmp.path().join("f"), b"")?;
        assert!(matches!(
            Root::open(&tmp.path().join("f")),
            Err(FsError::OpenRoot { .. })
        ));
        assert!(matches!(
            Root::open(&tmp.path().join("missing")),
            Err(FsError::OpenRoot { .. })
        ));
        let file = rfs::open(
            tmp.path().join("f"),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        assert!(Root::from_fd(file).is_err());
        Ok(())
    }

    #[test]
    fn parent_and_name_table() -> TestResult {
        let (_tmp, root) = setup()?;
        root.mkdir_all("a/b", 0o755, None)?;
        let ok: &[(&str, &str)] = &[
            ("a/b/c", "c"),
            ("/a/x", "x"),
            ("../../a/b/..\\c", "..\\c"),
            ("a/b/../y", "y"),
        ];
        for (input, name) in ok {
            let (_, got) = root.parent_and_name(input)?;
            assert_eq!(got, OsStr::new(name), "{input}");
        }
        for input in ["", ".", "/", "..", "a/..", "a/b/../.."] {
            let err = root
                .parent_and_name(input)
                .err()
                .ok_or("expected an error")?;
            assert!(
                matches!(err, FsError::InvalidPath { .. }),
                "{input:?}: {err}"
            );
        }
        let err = root
            .parent_and_name("missing/x")
            .err()
            .ok_or("expected an error")?;
        assert_eq!(err.io_kind(), Some(io::ErrorKind::NotFound));
        assert!(
            err.to_string().contains("\"missing/x\""),
            "error names the path as given: {err}"
        );
        Ok(())
    }

    #[test]
    fn create_file_is_exclusive_and_exact_mode() -> TestResult {
        let (tmp, root) = setup()?;
        let mut f = root.create_file("f", 0o4711)?;
        f.write_all(b"hi")?;
        assert_eq!(
            std::fs::metadata(tmp.path().join("f"))?.mode() & 0o7777,
            0o4711,
            "no umask"
        );
        assert!(root.create_file("f", 0o644).is_err(), "O_EXCL");
        // A dangling symlink is not followed to create its target.
        root.symlink("target-would-be-created", "dangling")?;
        let err = root
            .create_file("dangling", 0o644)
            .err()
            .ok_or("expected EEXIST")?;
        assert_eq!(err.raw_os_error(), Some(Errno::EXIST.raw_os_error()));
        assert!(!root.exists("target-would-be-created")?);
        Ok(())
    }

    #[test]
    fn write_file_from_replaces_symlink_without_following() -> TestResult {
        let (tmp, root) = setup()?;
        root.write_file_from("real", &mut &b"original"[..], 0o644)?;
        root.symlink("real", "link")?;
        let n = root.write_file_from("link", &mut &b"replacement"[..], 0o600)?;
        assert_eq!(n, 11);
        assert_eq!(std::fs::read(tmp.path().join("real"))?, b"original");
        assert!(root.symlink_metadata("link")?.is_file());
        root.mkdir_all("dir", 0o755, None)?;
        assert!(
            root.write_file_from("dir", &mut &b""[..], 0o644).is_err(),
            "a directory is not replaced"
        );
        Ok(())
    }

    #[test]
    fn open_file_and_read_dir_follow_in_root() -> TestResult {
        let (_tmp, root) = setup()?;
        root.mkdir_all("etc", 0o755, None)?;
        root.write_file_from("etc/passwd", &mut &b"in-root"[..], 0o644)?;
        root.symlink("/etc/passwd", "abs")?;
        root.symlink("../../../etc", "rel")?;
        let mut s = String::new();
        root.open_file("abs")?.read_to_string(&mut s)?;
        assert_eq!(s, "in-root");
        assert_eq!(root.read_dir("rel")?, vec![OsString::from("passwd")]);
        assert_eq!(root.read_dir("/")?, ["abs", "etc", "rel"]);
        Ok(())
    }

    #[test]
    fn exists_does_not_follow_final_symlink() -> TestResult {
        let (_tmp, root) = setup()?;
        root.symlink("nowhere", "dangling")?;
        root.write_file_from("file", &mut &b""[..], 0o644)?;
        assert!(root.exists("dangling")?);
        assert!(!root.exists("nowhere")?);
        assert!(!root.exists("file/below")?, "ENOTDIR is just 'no'");
        assert!(root.exists("/")?);
        Ok(())
    }

    #[test]
    fn hardlink_to_symlink_links_the_symlink_itself() -> TestResult {
        let (tmp, root) = setup()?;
        root.symlink("/etc/passwd", "s")?;
        root.hardlink("s", "h")?;
        let h = std::fs::symlink_metadata(tmp.path().join("h"))?;
        assert!(h.file_type().is_symlink());
        assert_eq!(
            h.ino(),
            std::fs::symlink_metadata(tmp.path().join("s"))?.ino()
        );
        root.mkdir_all("d", 0o755, None)?;
        assert!(root.hardlink("d", "d2").is_err(), "no directory hardlinks");
        assert!(root.hardlink("/", "r").is_err());
        Ok(())
    }

    #[test]
    fn metadata_ops_do_not_follow_final_symlink() -> TestResult {
        let (tmp, root) = setup()?;
        root.write_file_from("target", &mut &b""[..], 0o644)?;
        root.symlink("target", "link")?;
        // chmod refuses a symlink rather than changing its target.
        let err = root.chmod("link", 0o777).err().ok_or("expected ELOOP")?;
        assert_eq!(err.raw_os_error(), Some(Errno::LOOP.raw_os_error()));
        assert_eq!(
            std::fs::metadata(tmp.path().join("target"))?.mode() & 0o777,
            0o644
        );
        root.chmod("target", 0o1700)?;
        assert_eq!(
            std::fs::metadata(tmp.path().join("target"))?.mode() & 0o7777,
            0o1700
        );
        // set_times on the link sets the link's times.
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_234_567_890, 5);
        root.set_times("link", t, t)?;
        let lmd = std::fs::symlink_metadata(tmp.path().join("link"))?;
        assert_eq!((lmd.mtime(), lmd.mtime_nsec()), (1_234_567_890, 5));
        assert_ne!(
            std::fs::metadata(tmp.path().join("target"))?.mtime(),
            1_234_567_890
        );
        let before_epoch = std::time::UNIX_EPOCH - std::time::Duration::new(10, 250_000_000);
        root.set_times("target", before_epoch, before_epoch)?;
        let tmd = std::fs::metadata(tmp.path().join("target"))?;
        assert_eq!((tmd.mtime(), tmd.mtime_nsec()), (-11, 750_000_000));
        if am_root() {
            root.lchown("link", 123, 456)?;
            let lmd = std::fs::symlink_metadata(tmp.path().join("link"))?;
            assert_eq!((lmd.uid(), lmd.gid()), (123, 456));
            assert_eq!(std::fs::metadata(tmp.path().join("target"))?.uid(), 0);
            root.set_xattr("link", "trusted.rbuild-test", b"link")?;
            let mut buf = [0u8; 16];
            let n = rfs::lgetxattr(tmp.path().join("link"), "trusted.rbuild-test", &mut buf[..])?;
            assert_eq!(&buf[..n], b"link");
            assert!(rfs::getxattr(
                tmp.path().join("target"),
                "trusted.rbuild-test",
                &mut buf[..]
            )
            .is_err());
            assert!(
                root.lchown("target", u32::MAX, 0).is_err(),
                "-1 is refused, not 'unchanged'"
            );
        }
        Ok(())
    }

    #[test]
    fn mknod_kinds() -> TestResult {
        let (tmp, root) = setup()?;
        root.mknod("fifo", NodeKind::Fifo, 0o640, 9, 9)?;
        let md = std::fs::symlink_metadata(tmp.path().join("fifo"))?;
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&md.file_type()));
        assert_eq!(md.mode() & 0o7777, 0o640);
        if am_root() {
            root.mknod("null", NodeKind::Char, 0o666, 1, 3)?;
            let md = std::fs::symlink_metadata(tmp.path().join("null"))?;
            assert_eq!(md.rdev(), rfs::makedev(1, 3));
            root.make_whiteout("wh")?;
            let md = std::fs::symlink_metadata(tmp.path().join("wh"))?;
            assert!(std::os::unix::fs::FileTypeExt::is_char_device(
                &md.file_type()
            ));
            assert_eq!((md.rdev(), md.mode() & 0o7777), (0, 0));
        }
        Ok(())
    }

    #[test]
    fn mkdir_all_reports_created_and_applies_mode() -> TestResult {
        let (tmp, root) = setup()?;
        assert_eq!(root.mkdir_all("a", 0o755, None)?, [PathBuf::from("a")]);
        let created = root.mkdir_all("/a/b/../c/d", 0o700, None)?;
        assert_eq!(created, [PathBuf::from("a/c"), PathBuf::from("a/c/d")]);
        assert_eq!(
            std::fs::metadata(tmp.path().join("a/c/d"))?.mode() & 0o7777,
            0o700
        );
        assert!(root.mkdir_all("a/c/d", 0o700, None)?.is_empty());
        root.write_file_from("file", &mut &b""[..], 0o644)?;
        let err = root
            .mkdir_all("file/sub", 0o755, None)
            .err()
            .ok_or("expected ENOTDIR")?;
        assert_eq!(err.raw_os_error(), Some(Errno::NOTDIR.raw_os_error()));
        Ok(())
    }

    #[test]
    fn remove_all_deep_tree_and_missing() -> TestResult {
        let (tmp, root) = setup()?;
        let mut deep = String::from("top");
        for _ in 0..300 {
            deep.push_str("/d");
        }
        root.mkdir_all(&deep, 0o755, None)?;
        root.write_file_from(format!("{deep}/f"), &mut &b""[..], 0o000)?;
        root.chmod("top/d", 0o000)?;
        root.symlink("/", format!("{deep}/slash"))?;
        assert!(root.remove_all("top")?);
        assert!(!root.remove_all("top")?);
        assert!(!root.remove_all("missing/parent/x")?);
        assert!(std::fs::read_dir(tmp.path())?.next().is_none());
        Ok(())
    }

    #[test]
    fn open_beneath_is_a_new_root() -> TestResult {
        let (_tmp, root) = setup()?;
        root.mkdir_all("sub/inner", 0o755, None)?;
        root.write_file_from("top-secret", &mut &b""[..], 0o644)?;
        let sub = root.open_beneath("sub")?;
        sub.symlink("/top-secret", "l")?;
        assert!(sub.open_file("l").is_err(), "clamped to the sub-root");
        assert!(sub.exists("/inner")?);
        assert!(root.open_beneath("top-secret").is_err());
        let clone = sub.try_clone()?;
        assert!(clone.exists("inner")?);
        Ok(())
    }
}
