//! Filesystem building blocks shared by the store's parts: unique temporary names, atomic file
//! replacement with fsyncs, bounded reads, and tree removal that never follows a symlink.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{self, OFlag};
use nix::sys::stat::{self, Mode};
use nix::unistd::{self, UnlinkatFlags};

use crate::error::{IoResultExt, StoreError};

/// Mode of every directory of the store layout.
pub(crate) const PRIVATE_DIR_MODE: u32 = 0o700;
/// How many names to try before giving up on creating a unique temporary entry.
const UNIQUE_NAME_ATTEMPTS: u32 = 64;

/// A name that no other process or thread is using right now, with high probability; callers
/// still create it exclusively (`O_EXCL`) and retry on a collision.
fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}{:x}-{count:x}-{nanos:x}", std::process::id())
}

/// Creates a new empty file with a unique name in `dir`, opened for writing.
pub(crate) fn create_temp_file(
    dir: &Path,
    prefix: &str,
    mode: u32,
) -> Result<(File, PathBuf), StoreError> {
    let mut last_error = None;
    for _ in 0..UNIQUE_NAME_ATTEMPTS {
        let path = dir.join(unique_name(prefix));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(file) => return Ok((file, path)),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => last_error = Some(error),
            Err(error) => return Err(StoreError::io(&path, error)),
        }
    }
    Err(StoreError::io(
        dir,
        last_error.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)),
    ))
}

/// Creates a new empty directory (mode 0700) with a unique name in `dir`.
pub(crate) fn create_temp_dir(dir: &Path, prefix: &str) -> Result<PathBuf, StoreError> {
    let mut last_error = None;
    for _ in 0..UNIQUE_NAME_ATTEMPTS {
        let path = dir.join(unique_name(prefix));
        match fs::DirBuilder::new().mode(PRIVATE_DIR_MODE).create(&path) {
            Ok(()) => return Ok(path),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => last_error = Some(error),
            Err(error) => return Err(StoreError::io(&path, error)),
        }
    }
    Err(StoreError::io(
        dir,
        last_error.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)),
    ))
}

/// Flushes a directory's entries (after a rename, create or unlink in it) to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|handle| handle.sync_all()).at(dir)
}

/// Whether an I/O error means "no such file or directory".
pub(crate) fn is_not_found(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::NotFound
}

/// A temporary file or directory that is removed when dropped, unless [`TempEntry::keep`] was
/// called (after it was renamed into place).
#[derive(Debug)]
pub(crate) struct TempEntry {
    path: Option<PathBuf>,
}

impl TempEntry {
    /// Takes ownership of `path` for removal.
    pub(crate) fn new(path: PathBuf) -> TempEntry {
        TempEntry { path: Some(path) }
    }

    /// The temporary path.
    pub(crate) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Disarms the removal: the entry has been moved away.
    pub(crate) fn keep(mut self) {
        self.path = None;
    }
}

impl Drop for TempEntry {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            // Best effort: a failure leaves a stale entry that `remove_stale_temporaries` cleans.
            let _ = remove_tree(&path);
        }
    }
}

/// Replaces `target` with `bytes` atomically: write a temporary file in `tmp_dir` (which must be
/// on the same filesystem), fsync it, rename it over `target`, fsync `target`'s directory.
/// Readers see either the old or the new content, never a mix, even across a crash.
pub(crate) fn write_file_atomic(
    tmp_dir: &Path,
    target: &Path,
    bytes: &[u8],
    mode: u32,
) -> Result<(), StoreError> {
    let (mut file, temp_path) = create_temp_file(tmp_dir, "write-", mode)?;
    let temp = TempEntry::new(temp_path);
    file.write_all(bytes).at(temp.path())?;
    file.sync_all().at(temp.path())?;
    drop(file);
    fs::rename(temp.path(), target).at(target)?;
    temp.keep();
    sync_dir(parent_of(target))
}

/// The directory containing `path` (`.` for a bare name).
pub(crate) fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Reads a whole file that must not be bigger than `limit` bytes (store metadata, never blobs).
/// `Ok(None)` if the file does not exist.
pub(crate) fn read_small_file(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, StoreError> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => file,
        Err(error) if is_not_found(&error) => return Ok(None),
        Err(error) => return Err(StoreError::io(path, error)),
    };
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .at(path)?;
    if bytes.len() as u64 > limit {
        return Err(StoreError::corrupt(
            path,
            format!("file is larger than {limit} bytes"),
        ));
    }
    Ok(Some(bytes))
}

/// Removes `path` and, if it is a directory, everything under it, without ever following a
/// symlink (the BuildKit CVE-2024-23652 class).
///
/// Every step works relative to an open directory fd: entries are unlinked with `unlinkat`,
/// directories are entered with `openat(O_NOFOLLOW | O_DIRECTORY)`, so a symlink anywhere in the
/// tree (or swapped in while removing) is removed as a link and its target is untouched.
/// Directories without write or search permission are made 0700 through their own fd first.
/// A missing `path` is not an error.
pub(crate) fn remove_tree(path: &Path) -> Result<(), StoreError> {
    let Some(name) = path.file_name() else {
        return Err(StoreError::corrupt(
            path,
            "refusing to remove a path without a final name",
        ));
    };
    let parent_path = parent_of(path);
    let parent = fcntl::open(
        parent_path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .at(parent_path)?;
    remove_entry_at(parent.as_fd(), name).at(path)
}

/// One directory being emptied: its open handle, the children still to remove, and its name in
/// the directory below it on the stack.
struct OpenLevel {
    dir: Dir,
    remaining: Vec<OsString>,
    name: OsString,
}

/// What an entry turned out to be when we tried to unlink it as a file.
enum Unlinked {
    Done,
    IsDirectory,
}

fn unlink_non_directory(parent: BorrowedFd<'_>, name: &OsStr) -> nix::Result<Unlinked> {
    match unistd::unlinkat(parent, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(Unlinked::Done),
        // Linux reports EISDIR for unlink(2) on a directory; POSIX allows EPERM.
        Err(Errno::EISDIR | Errno::EPERM) => {
            match stat::fstatat(parent, name, fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFDIR => {
                    Ok(Unlinked::IsDirectory)
                }
                Ok(_) => Err(Errno::EPERM),
                Err(Errno::ENOENT) => Ok(Unlinked::Done),
                Err(errno) => Err(errno),
            }
        }
        Err(errno) => Err(errno),
    }
}

/// Opens directory `name` under `parent` without following a symlink and lists its children.
fn open_level(parent: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OpenLevel> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match fcntl::openat(parent, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::EACCES) => open_unreadable_dir(parent, name)?,
        Err(errno) => return Err(errno),
    };
    let st = stat::fstat(&fd)?;
    let owner_rwx = Mode::S_IRWXU.bits();
    if st.st_mode & owner_rwx != owner_rwx {
        // Needed when not root to list and empty a 0555 or 0000 directory; harmless otherwise.
        let _ = stat::fchmod(&fd, Mode::S_IRWXU);
    }
    let mut dir = Dir::from_fd(fd)?;
    let mut remaining = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        let child = entry.file_name().to_bytes();
        if child != b"." && child != b".." {
            remaining.push(OsStr::from_bytes(child).to_owned());
        }
    }
    Ok(OpenLevel {
        dir,
        remaining,
        name: name.to_owned(),
    })
}

/// Opens a directory we may not read (mode 0000 when not root): take an `O_PATH` handle without
/// following symlinks, chmod the very inode it names through `/proc/self/fd`, then reopen that
/// inode for reading through the same magic link. The name is never resolved a second time.
fn open_unreadable_dir(parent: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    let handle = fcntl::openat(
        parent,
        name,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let magic = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
    stat::fchmodat(
        fcntl::AT_FDCWD,
        &magic,
        Mode::S_IRWXU,
        stat::FchmodatFlags::FollowSymlink,
    )?;
    fcntl::open(
        &magic,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn remove_entry_at(top_parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    if let Unlinked::Done = unlink_non_directory(top_parent, name)? {
        return Ok(());
    }
    let mut stack = vec![open_level(top_parent, name)?];
    loop {
        let Some(level) = stack.last_mut() else {
            return Ok(());
        };
        match level.remaining.pop() {
            Some(child) => {
                let dir_fd = level.dir.as_fd();
                if let Unlinked::IsDirectory = unlink_non_directory(dir_fd, &child)? {
                    let child_level = open_level(dir_fd, &child)?;
                    stack.push(child_level);
                }
            }
            None => {
                let Some(finished) = stack.pop() else {
                    return Ok(());
                };
                let name = finished.name;
                drop(finished.dir);
                let parent = stack.last().map_or(top_parent, |level| level.dir.as_fd());
                match unistd::unlinkat(parent, name.as_os_str(), UnlinkatFlags::RemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(errno) => return Err(errno.into()),
                }
            }
        }
    }
}

/// Creates `path` as a 0700 directory if it is missing, and checks that it is a real directory
/// (not a symlink) if it exists.
pub(crate) fn ensure_private_dir(path: &Path) -> Result<(), StoreError> {
    match fs::DirBuilder::new().mode(PRIVATE_DIR_MODE).create(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            let metadata = fs::symlink_metadata(path).at(path)?;
            if metadata.is_dir() {
                Ok(())
            } else {
                Err(StoreError::corrupt(
                    path,
                    "expected a directory of the store layout",
                ))
            }
        }
        Err(error) => Err(StoreError::io(path, error)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn remove_tree_keeps_symlink_targets() {
        let scratch = tempfile::tempdir().unwrap();
        let outside = scratch.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("sentinel"), b"keep me").unwrap();

        let tree = scratch.path().join("tree");
        fs::create_dir_all(tree.join("a/b/c")).unwrap();
        fs::write(tree.join("a/b/c/file"), b"x").unwrap();
        symlink(&outside, tree.join("link-to-dir")).unwrap();
        symlink(outside.join("sentinel"), tree.join("a/link-to-file")).unwrap();
        symlink("/nonexistent", tree.join("a/b/dangling")).unwrap();
        fs::set_permissions(tree.join("a/b"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::set_permissions(tree.join("a/b/c"), fs::Permissions::from_mode(0o000)).unwrap();

        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert_eq!(fs::read(outside.join("sentinel")).unwrap(), b"keep me");
    }

    #[test]
    fn remove_tree_of_a_symlink_removes_only_the_link() {
        let scratch = tempfile::tempdir().unwrap();
        let outside = scratch.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("sentinel"), b"keep me").unwrap();
        let link = scratch.path().join("link");
        symlink(&outside, &link).unwrap();
        remove_tree(&link).unwrap();
        assert!(fs::symlink_metadata(&link).is_err());
        assert!(outside.join("sentinel").exists());
    }

    #[test]
    fn remove_tree_of_missing_path_is_ok() {
        let scratch = tempfile::tempdir().unwrap();
        remove_tree(&scratch.path().join("missing")).unwrap();
    }

    #[test]
    fn remove_tree_handles_deep_trees_without_recursion() {
        let scratch = tempfile::tempdir().unwrap();
        let tree = scratch.path().join("deep");
        let mut path = tree.clone();
        for _ in 0..300 {
            path.push("d");
        }
        fs::create_dir_all(&path).unwrap();
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let scratch = tempfile::tempdir().unwrap();
        let tmp = scratch.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let target = scratch.path().join("data.json");
        write_file_atomic(&tmp, &target, b"one", 0o600).unwrap();
        write_file_atomic(&tmp, &target, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    }
}
