//! Thin, fd-only wrappers over the system calls this crate uses.
//!
//! Everything here operates on a directory fd plus *one* path component, or
//! on an already-resolved fd. Nothing takes a host path derived from input.
//! The only absolute paths built are `/proc/self/fd/N` magic links for the
//! three operations Linux offers no fd-based form of that works on `O_PATH`
//! fds (`chmod`, `setxattr`, linking without `CAP_DAC_READ_SEARCH`); `/proc`
//! is checked once to really be procfs.
//!
//! Errors are returned as raw [`Errno`] so callers can branch on them and
//! attach the user-facing path.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{
    self as rfs, AtFlags, Dir, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid,
};
use rustix::io::Errno;

/// Resolution for a path from the root fd: symlinks (absolute ones and `..`
/// included) are clamped to the root, as if the process were chrooted there;
/// `/proc/*/fd`-style magic links are refused outright.
pub(crate) const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// Resolution for a single component relative to a resolved directory fd:
/// no symlink may be followed at all and nothing may leave the directory.
pub(crate) const ONE_COMPONENT: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// `openat2` can fail with `EAGAIN` under `RESOLVE_IN_ROOT` when a concurrent
/// rename could have moved a path out of the root; the kernel asks to retry.
const MAX_AGAIN_RETRIES: usize = 128;

/// Mode bits we ever pass through: permissions plus setuid/setgid/sticky.
pub(crate) const MODE_MASK: u32 = 0o7777;

/// `openat2` with retries on `EAGAIN`/`EINTR`; `O_CLOEXEC` is always added.
pub(crate) fn openat2(
    dirfd: BorrowedFd<'_>,
    path: &OsStr,
    flags: OFlags,
    mode: u32,
    resolve: ResolveFlags,
) -> Result<OwnedFd, Errno> {
    let mut tries = 0;
    loop {
        match rfs::openat2(
            dirfd,
            path,
            flags | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode & MODE_MASK),
            resolve,
        ) {
            Err(Errno::AGAIN | Errno::INTR) if tries < MAX_AGAIN_RETRIES => tries += 1,
            other => return other,
        }
    }
}

/// Open one component `name` inside the directory `parent` without
/// following a symlink there (`O_NOFOLLOW` plus `RESOLVE_NO_SYMLINKS`).
/// With `O_PATH` a symlink is returned as itself.
pub(crate) fn open_child(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    flags: OFlags,
    mode: u32,
) -> Result<OwnedFd, Errno> {
    openat2(parent, name, flags | OFlags::NOFOLLOW, mode, ONE_COMPONENT)
}

/// `fstatat(parent, name, AT_SYMLINK_NOFOLLOW)`: the entry itself.
pub(crate) fn lstat_child(parent: BorrowedFd<'_>, name: &OsStr) -> Result<rfs::Stat, Errno> {
    rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
}

pub(crate) fn file_type(st: &rfs::Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// A uid/gid pair as rustix types; `u32::MAX` is `-1` ("leave unchanged")
/// to the kernel and is refused rather than silently ignored.
pub(crate) fn ids(uid: u32, gid: u32) -> Result<(Uid, Gid), Errno> {
    if uid == u32::MAX || gid == u32::MAX {
        return Err(Errno::INVAL);
    }
    Ok((Uid::from_raw(uid), Gid::from_raw(gid)))
}

/// Change the owner of exactly the inode `fd` refers to (a symlink stays a
/// symlink: `AT_EMPTY_PATH` on an `O_PATH|O_NOFOLLOW` fd).
pub(crate) fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> Result<(), Errno> {
    let (u, g) = ids(uid, gid)?;
    rfs::chownat(
        fd,
        "",
        Some(u),
        Some(g),
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
    )
}

/// `/proc` must be procfs before we trust its magic links.
fn proc_is_procfs() -> Result<(), Errno> {
    static CHECK: OnceLock<Result<(), Errno>> = OnceLock::new();
    *CHECK.get_or_init(|| {
        let st = rfs::statfs("/proc/self/fd")?;
        if st.f_type == rfs::PROC_SUPER_MAGIC {
            Ok(())
        } else {
            Err(Errno::NOTSUP)
        }
    })
}

/// `/proc/self/fd/N` for an fd we hold. `self` is looked up at use time, so
/// this stays right after a fork.
pub(crate) fn proc_fd_path(fd: BorrowedFd<'_>) -> Result<PathBuf, Errno> {
    proc_is_procfs()?;
    Ok(PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())))
}

/// chmod the inode `fd` refers to. `fd` may be `O_PATH`; it must not be a
/// symlink (Linux has no symlink modes; following it would be wrong).
pub(crate) fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> Result<(), Errno> {
    let st = rfs::fstat(fd)?;
    if file_type(&st) == FileType::Symlink {
        return Err(Errno::LOOP);
    }
    if st.st_mode & MODE_MASK == mode & MODE_MASK {
        return Ok(());
    }
    // The magic link jumps straight to the inode `fd` holds; no lookup by
    // name happens, so nothing can be swapped in between.
    let path = proc_fd_path(fd)?;
    rfs::chmodat(
        rfs::CWD,
        &path,
        Mode::from_raw_mode(mode & MODE_MASK),
        AtFlags::empty(),
    )
}

/// Set an xattr on exactly the inode `fd` refers to (any type, including a
/// symlink held as `O_PATH|O_NOFOLLOW`).
pub(crate) fn set_xattr_fd(fd: BorrowedFd<'_>, name: &OsStr, value: &[u8]) -> Result<(), Errno> {
    let path = proc_fd_path(fd)?;
    rfs::setxattr(&path, name, value, rfs::XattrFlags::empty())
}

/// Convert a `SystemTime` (possibly before 1970) to a kernel timespec.
pub(crate) fn timespec(t: SystemTime) -> Timespec {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timespec {
            tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(d.subsec_nanos()),
        },
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            let nanos = i64::from(d.subsec_nanos());
            if nanos == 0 {
                Timespec {
                    tv_sec: -secs,
                    tv_nsec: 0,
                }
            } else {
                Timespec {
                    tv_sec: -secs - 1,
                    tv_nsec: 1_000_000_000 - nanos,
                }
            }
        }
    }
}

/// Set atime/mtime of exactly the inode `fd` refers to, symlinks included.
pub(crate) fn set_times_fd(
    fd: BorrowedFd<'_>,
    atime: Timespec,
    mtime: Timespec,
) -> Result<(), Errno> {
    let times = Timestamps {
        last_access: atime,
        last_modification: mtime,
    };
    rfs::utimensat(
        fd,
        "",
        &times,
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
    )
}

/// Hard-link the inode `fd` refers to as `name` in `parent`.
///
/// `linkat(fd, "", ..., AT_EMPTY_PATH)` needs `CAP_DAC_READ_SEARCH`; without
/// it the kernel says `ENOENT` and we go through the `/proc/self/fd` magic
/// link instead, which names the same inode. That fallback is not used for
/// a symlink: linking it needs `AT_SYMLINK_FOLLOW` on the magic link, and we
/// do not rely on the kernel stopping at the symlink there.
pub(crate) fn link_fd(
    fd: BorrowedFd<'_>,
    parent: BorrowedFd<'_>,
    name: &OsStr,
) -> Result<(), Errno> {
    match rfs::linkat(fd, "", parent, name, AtFlags::EMPTY_PATH) {
        Err(Errno::NOENT) if file_type(&rfs::fstat(fd)?) != FileType::Symlink => {
            let path = proc_fd_path(fd)?;
            rfs::linkat(rfs::CWD, &path, parent, name, AtFlags::SYMLINK_FOLLOW)
        }
        other => other,
    }
}

/// Remove `name` in `parent` and everything beneath it, never following a
/// symlink (BuildKit CVE-2024-23652). Missing is not an error; returns
/// whether something was removed.
pub(crate) fn remove_at(parent: BorrowedFd<'_>, name: &OsStr) -> Result<bool, Errno> {
    // Each round either removes the entry or sees that it changed type under
    // us; give up after a bounded number of such races.
    for _ in 0..16 {
        let st = match lstat_child(parent, name) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(e),
        };
        if file_type(&st) != FileType::Directory {
            match rfs::unlinkat(parent, name, AtFlags::empty()) {
                Ok(()) => return Ok(true),
                Err(Errno::NOENT) => return Ok(false),
                Err(Errno::ISDIR) => continue, // swapped for a directory
                Err(e) => return Err(e),
            }
        }
        let dir = match open_child(parent, name, OFlags::RDONLY | OFlags::DIRECTORY, 0) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(false),
            Err(Errno::NOTDIR | Errno::LOOP) => continue, // swapped for a non-directory
            Err(e) => return Err(e),
        };
        remove_children(dir, |_| false)?;
        match rfs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
            Ok(()) => return Ok(true),
            Err(Errno::NOENT) => return Ok(false),
            Err(Errno::NOTEMPTY | Errno::NOTDIR) => continue, // refilled or swapped
            Err(e) => return Err(e),
        }
    }
    Err(Errno::AGAIN)
}

/// Empty the directory open as `dir` (opened `O_RDONLY|O_DIRECTORY`),
/// skipping the top-level children for which `keep(name)` is true.
///
/// Iterative, one fd per directory level held at a time, so a deep tree
/// cannot overflow the stack (it can at worst hit `EMFILE`, an error).
/// Subdirectories are opened with `O_NOFOLLOW|O_DIRECTORY` through
/// `RESOLVE_NO_SYMLINKS`; symlinks are unlinked, never entered.
pub(crate) fn remove_children(dir: OwnedFd, keep: impl Fn(&OsStr) -> bool) -> Result<(), Errno> {
    use std::os::unix::ffi::OsStrExt;

    struct Frame {
        dir: Dir,
        /// The name of this directory inside the frame below, to rmdir
        /// once it is empty; `None` for the starting directory.
        name: Option<std::ffi::OsString>,
    }

    let mut stack = vec![Frame {
        dir: Dir::new(dir)?,
        name: None,
    }];
    loop {
        let at_top = stack.len() == 1;
        let Some(top) = stack.last_mut() else { break };
        let entry = match top.dir.read() {
            None => {
                if let Some(done) = stack.pop() {
                    if let (Some(name), Some(below)) = (done.name, stack.last()) {
                        drop(done.dir);
                        match rfs::unlinkat(below.dir.fd()?, &name, AtFlags::REMOVEDIR) {
                            Ok(()) | Err(Errno::NOENT) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                continue;
            }
            Some(entry) => entry?,
        };
        let name_bytes = entry.file_name().to_bytes();
        if name_bytes == b"." || name_bytes == b".." {
            continue;
        }
        let name = OsStr::from_bytes(name_bytes).to_os_string();
        if at_top && keep(&name) {
            continue;
        }
        let parent = top.dir.fd()?;
        let is_dir = match entry.file_type() {
            FileType::Directory => true,
            FileType::Unknown => match lstat_child(parent, &name) {
                Ok(st) => file_type(&st) == FileType::Directory,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e),
            },
            _ => false,
        };
        if !is_dir {
            match rfs::unlinkat(parent, &name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => continue,
                Err(Errno::ISDIR) => {} // raced into a directory: descend below
                Err(e) => return Err(e),
            }
        }
        match open_child(parent, &name, OFlags::RDONLY | OFlags::DIRECTORY, 0) {
            Ok(child) => stack.push(Frame {
                dir: Dir::new(child)?,
                name: Some(name),
            }),
            Err(Errno::NOENT) => {}
            // Swapped for a symlink or file after the type check: unlink it.
            Err(Errno::NOTDIR | Errno::LOOP) => {
                match rfs::unlinkat(parent, &name, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timespec_table() {
        let cases: &[(SystemTime, (i64, i64))] = &[
            (UNIX_EPOCH, (0, 0)),
            (UNIX_EPOCH + Duration::new(5, 7), (5, 7)),
            (UNIX_EPOCH - Duration::new(5, 0), (-5, 0)),
            (UNIX_EPOCH - Duration::new(5, 1), (-6, 999_999_999)),
        ];
        for (t, want) in cases {
            let ts = timespec(*t);
            assert_eq!((ts.tv_sec, ts.tv_nsec), *want, "{t:?}");
        }
    }

    #[test]
    fn ids_refuse_minus_one() {
        assert!(ids(u32::MAX, 0).is_err());
        assert!(ids(0, u32::MAX).is_err());
        assert!(ids(65534, 65534).is_ok());
    }

    #[test]
    fn proc_is_checked() {
        assert!(proc_is_procfs().is_ok(), "tests need a mounted procfs");
    }
}
