//! Advisory `flock(2)` locks between rbuild processes: the store-wide lock (shared while a build
//! uses the store, exclusive while pruning) and the short locks around the image index.
//!
//! Every lock is taken on a freshly opened fd (`O_CLOEXEC`, as every fd Rust's std opens), so two
//! threads of one process exclude each other exactly as two processes do, and no lock fd leaks
//! into a child process.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::StoreError;

/// Mode of lock files; their content is never used.
const LOCK_FILE_MODE: u32 = 0o600;

/// Whether a lock is shared with other holders or exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Many holders at once; excludes exclusive holders.
    Shared,
    /// One holder; excludes everyone else.
    Exclusive,
}

/// A held `flock` on a lock file; released when dropped (the fd is closed).
pub(crate) struct FileLock {
    _locked: Flock<File>,
    mode: LockMode,
    path: PathBuf,
}

impl FileLock {
    /// Opens (creating it if needed) the lock file at `path` and locks it, waiting if `wait` is
    /// true; `Ok(None)` if `wait` is false and someone else holds a conflicting lock.
    pub(crate) fn acquire(
        path: &Path,
        mode: LockMode,
        wait: bool,
    ) -> Result<Option<FileLock>, StoreError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(LOCK_FILE_MODE)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .map_err(|source| StoreError::io(path, source))?;
        let arg = match (mode, wait) {
            (LockMode::Shared, true) => FlockArg::LockShared,
            (LockMode::Shared, false) => FlockArg::LockSharedNonblock,
            (LockMode::Exclusive, true) => FlockArg::LockExclusive,
            (LockMode::Exclusive, false) => FlockArg::LockExclusiveNonblock,
        };
        loop {
            match Flock::lock(file, arg) {
                Ok(locked) => {
                    return Ok(Some(FileLock {
                        _locked: locked,
                        mode,
                        path: path.to_owned(),
                    }))
                }
                Err((_, Errno::EWOULDBLOCK)) if !wait => return Ok(None),
                Err((returned, Errno::EINTR)) => file = returned,
                Err((_, errno)) => return Err(StoreError::io(path, errno.into())),
            }
        }
    }

    pub(crate) fn mode(&self) -> LockMode {
        self.mode
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Debug for FileLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileLock")
            .field("mode", &self.mode)
            .field("path", &self.path)
            .finish()
    }
}

/// The store-wide lock: hold it [`LockMode::Shared`] for as long as a build reads or writes the
/// store, and [`LockMode::Exclusive`] while deleting things (prune, GC), so a prune never removes
/// what a running build uses. Released when dropped.
#[derive(Debug)]
pub struct StoreLock {
    lock: FileLock,
}

impl StoreLock {
    pub(crate) fn new(lock: FileLock) -> StoreLock {
        StoreLock { lock }
    }

    /// Shared or exclusive.
    pub fn mode(&self) -> LockMode {
        self.lock.mode()
    }

    /// The lock file this lock is on.
    pub fn path(&self) -> &Path {
        self.lock.path()
    }
}
