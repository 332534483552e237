//! The store as a whole: opening (and creating) the versioned on-disk layout, handing out its
//! parts, and the store-wide lock.
//!
//! ```text
//! <root>/                      0700, owned by the user running rbuild
//!   v1/                        layout version; a new incompatible layout gets a new dir
//!     store.lock               shared while a build uses the store, exclusive while pruning
//!     blobs/sha256/<hex>       content-addressed blobs
//!     images.json, images.lock the image index
//!     snapshots/<hex>/{fs,parent}
//!     cachekeys/<hex>          what the build step with that cache key produced
//!     compressed/<hex>         a layer's compressed copy: (diff ID, compression, level) → blob
//!     file-index/<hex>         per build context: file identity → content digest
//!     tmp/                     temp files and dirs, renamed into place when complete
//!     trash/                   removed snapshots, deleted from here
//! ```

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::blob::BlobStore;
use crate::error::{IoResultExt, StoreError};
use crate::fsx::{self, PRIVATE_DIR_MODE};
use crate::images::ImageDb;
use crate::keys::KeyIndex;
use crate::lock::{FileLock, LockMode, StoreLock};
use crate::snapshots::SnapshotStore;

/// The directory of the current layout version under the root.
pub const LAYOUT_DIR: &str = "v1";

/// An opened store. Cheap to share between threads; every operation works on the files
/// directly, so several `Store`s (in one process or many) can use one root at once.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    layout: PathBuf,
    blobs: BlobStore,
    images: ImageDb,
    snapshots: SnapshotStore,
    keys: KeyIndex,
    compressed: KeyIndex,
}

impl Store {
    /// Opens the store at `root`, creating the layout if needed.
    ///
    /// The root is made mode 0700 (CVE-2021-41091: other host users must not reach image trees
    /// or setuid binaries in them) and must be owned by the effective user; a root owned by
    /// someone else is refused, because whoever owns it controls what rbuild unpacks and mounts.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let root = std::path::absolute(root).at(root)?;
        if let Some(parent) = root.parent() {
            fs::create_dir_all(parent).at(parent)?;
        }
        match fs::DirBuilder::new().mode(PRIVATE_DIR_MODE).create(&root) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(StoreError::io(&root, error)),
        }
        secure_root(&root)?;

        let layout = root.join(LAYOUT_DIR);
        let blobs_parent = layout.join("blobs");
        let blobs = blobs_parent.join("sha256");
        let snapshots = layout.join("snapshots");
        let tmp = layout.join("tmp");
        let trash = layout.join("trash");
        let cachekeys = layout.join("cachekeys");
        let compressed = layout.join("compressed");
        for dir in [
            &layout,
            &blobs_parent,
            &blobs,
            &snapshots,
            &tmp,
            &trash,
            &cachekeys,
            &compressed,
        ] {
            fsx::ensure_private_dir(dir)?;
        }

        let store = Store {
            keys: KeyIndex::new(cachekeys, tmp.clone()),
            compressed: KeyIndex::new(compressed, tmp.clone()),
            blobs: BlobStore::new(blobs, tmp.clone()),
            images: ImageDb::new(
                layout.join("images.json"),
                layout.join("images.lock"),
                tmp.clone(),
            ),
            snapshots: SnapshotStore::new(snapshots, tmp, trash),
            root,
            layout,
        };
        if let Some(factory) = crate::blob_recipe::default_maker() {
            store.blobs.set_maker(factory(&store));
        }
        Ok(store)
    }

    /// A fresh private directory inside the store (on the snapshots' filesystem, so what is
    /// built in it can be renamed into a snapshot), removed with everything in it when the
    /// returned [`WorkDir`] is dropped — without following symlinks.
    pub fn work_dir(&self, prefix: &str) -> Result<WorkDir, StoreError> {
        let path = fsx::create_temp_dir(&self.layout.join("tmp"), prefix)?;
        Ok(WorkDir {
            entry: fsx::TempEntry::new(path),
        })
    }

    /// The root directory (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The blobs.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// The image index.
    pub fn images(&self) -> &ImageDb {
        &self.images
    }

    /// The cache-key index (build steps' results).
    pub fn cache_keys(&self) -> &KeyIndex {
        &self.keys
    }

    /// The compressed copies of stored layers, by (diff ID, compression, level): which blob
    /// compressing a layer gave, so that it is compressed once (records written by
    /// `rbuild_image::compressed_layers`).
    pub fn compressed_layers(&self) -> &KeyIndex {
        &self.compressed
    }

    /// The unpacked layer snapshots.
    pub fn snapshots(&self) -> &SnapshotStore {
        &self.snapshots
    }

    fn lock_path(&self) -> PathBuf {
        self.layout.join("store.lock")
    }

    /// Takes the store-wide lock shared, waiting while a prune holds it exclusively. Hold it for
    /// as long as a build uses the store.
    pub fn lock_shared(&self) -> Result<StoreLock, StoreError> {
        self.lock(LockMode::Shared)
    }

    /// Takes the store-wide lock exclusively, waiting until no build holds it. Hold it while
    /// deleting (prune, GC).
    pub fn lock_exclusive(&self) -> Result<StoreLock, StoreError> {
        self.lock(LockMode::Exclusive)
    }

    fn lock(&self, mode: LockMode) -> Result<StoreLock, StoreError> {
        let path = self.lock_path();
        match FileLock::acquire(&path, mode, true)? {
            Some(lock) => Ok(StoreLock::new(lock)),
            None => Err(StoreError::corrupt(
                &path,
                "blocking lock returned without the lock",
            )),
        }
    }

    /// Takes the store-wide lock exclusively if nobody holds it; `Ok(None)` otherwise.
    pub fn try_lock_exclusive(&self) -> Result<Option<StoreLock>, StoreError> {
        Ok(FileLock::acquire(&self.lock_path(), LockMode::Exclusive, false)?.map(StoreLock::new))
    }

    /// Deletes what interrupted writers and removals left in `tmp/` and `trash/` (after a crash
    /// or a kill). Needs this store's exclusive lock, since a live writer's temp files look the
    /// same as stale ones. Returns how many entries were removed.
    pub fn remove_stale_temporaries(&self, lock: &StoreLock) -> Result<usize, StoreError> {
        if lock.mode() != LockMode::Exclusive || lock.path() != self.lock_path() {
            return Err(StoreError::ExclusiveLockRequired {
                operation: "removing stale temporaries",
            });
        }
        let mut removed = 0;
        for dir in [self.layout.join("tmp"), self.layout.join("trash")] {
            for entry in fs::read_dir(&dir).at(&dir)? {
                let entry = entry.at(&dir)?;
                fsx::remove_tree(&entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Checks the root is a directory owned by us and makes it exactly 0700.
fn secure_root(root: &Path) -> Result<(), StoreError> {
    // Follows a symlinked root on purpose: pointing the store at another disk is legitimate,
    // and the owner check below still applies to the real directory.
    let metadata = fs::metadata(root).at(root)?;
    if !metadata.is_dir() {
        return Err(StoreError::InsecureRoot {
            path: root.to_owned(),
            reason: "not a directory".to_owned(),
        });
    }
    let euid = nix::unistd::geteuid().as_raw();
    if metadata.uid() != euid {
        return Err(StoreError::InsecureRoot {
            path: root.to_owned(),
            reason: format!(
                "owned by uid {}, but rbuild runs as uid {euid}",
                metadata.uid()
            ),
        });
    }
    if metadata.mode() & 0o7777 != PRIVATE_DIR_MODE {
        fs::set_permissions(root, fs::Permissions::from_mode(PRIVATE_DIR_MODE)).at(root)?;
    }
    Ok(())
}

/// A scratch directory inside the store; removed when dropped.
pub struct WorkDir {
    entry: fsx::TempEntry,
}

impl WorkDir {
    /// Its path.
    pub fn path(&self) -> &Path {
        self.entry.path()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::mpsc;
    use std::time::Duration;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn layout_is_created_private() {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().join("nested/store");
        let store = Store::open(&root).unwrap();
        assert_eq!(store.root(), root);
        assert_eq!(mode_of(&root), 0o700);
        for dir in [
            "v1",
            "v1/blobs",
            "v1/blobs/sha256",
            "v1/snapshots",
            "v1/tmp",
            "v1/trash",
        ] {
            assert_eq!(mode_of(&root.join(dir)), 0o700, "{dir}");
        }
    }

    #[test]
    fn an_existing_open_root_is_tightened_to_0700() {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().join("store");
        for loose in [0o755, 0o777, 0o711, 0o1777] {
            fs::create_dir_all(&root).unwrap();
            fs::set_permissions(&root, fs::Permissions::from_mode(loose)).unwrap();
            Store::open(&root).unwrap();
            assert_eq!(mode_of(&root), 0o700, "{loose:o}");
        }
    }

    #[test]
    fn a_root_that_is_a_file_is_refused() {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().join("file");
        fs::write(&root, b"x").unwrap();
        assert!(Store::open(&root).is_err());
    }

    #[test]
    fn a_root_owned_by_another_user_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            // Only root can hand a directory to another user; nothing to try otherwise.
            return;
        }
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().join("store");
        fs::create_dir(&root).unwrap();
        std::os::unix::fs::chown(&root, Some(65534), Some(65534)).unwrap();
        match Store::open(&root) {
            Err(StoreError::InsecureRoot { .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_layout_dir_replaced_by_a_symlink_is_refused() {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().join("store");
        Store::open(&root).unwrap();
        let elsewhere = scratch.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::remove_dir(root.join("v1/tmp")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("v1/tmp")).unwrap();
        assert!(matches!(
            Store::open(&root),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn exclusive_lock_waits_for_shared_lock() {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().join("store");
        let builder = Store::open(&root).unwrap();
        let shared = builder.lock_shared().unwrap();
        assert_eq!(shared.mode(), LockMode::Shared);
        // Shared locks coexist.
        let second_shared = Store::open(&root).unwrap().lock_shared().unwrap();
        drop(second_shared);

        let (acquired_tx, acquired_rx) = mpsc::channel();
        let pruner_root = root.clone();
        let pruner = std::thread::spawn(move || {
            let pruner = Store::open(&pruner_root).unwrap();
            let exclusive = pruner.lock_exclusive().unwrap();
            acquired_tx.send(exclusive.mode()).unwrap();
            // While held exclusively, nobody else gets in.
            assert!(Store::open(&pruner_root)
                .unwrap()
                .try_lock_exclusive()
                .unwrap()
                .is_none());
        });
        assert!(
            acquired_rx
                .recv_timeout(Duration::from_millis(300))
                .is_err(),
            "the exclusive lock was granted while a shared lock was held"
        );
        assert!(builder.try_lock_exclusive().unwrap().is_none());
        drop(shared);
        assert_eq!(
            acquired_rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            LockMode::Exclusive
        );
        pruner.join().unwrap();
        assert!(builder.try_lock_exclusive().unwrap().is_some());
    }

    #[test]
    fn lock_fds_are_close_on_exec() {
        let scratch = tempfile::tempdir().unwrap();
        let store = Store::open(&scratch.path().join("store")).unwrap();
        let lock = store.lock_shared().unwrap();
        let mut found = 0;
        for entry in fs::read_dir("/proc/self/fd").unwrap() {
            let entry = entry.unwrap();
            if fs::read_link(entry.path()).ok().as_deref() != Some(lock.path()) {
                continue;
            }
            let info = fs::read_to_string(Path::new("/proc/self/fdinfo").join(entry.file_name()))
                .unwrap_or_default();
            let flags = info
                .lines()
                .find_map(|line| line.strip_prefix("flags:"))
                .map(|octal| u32::from_str_radix(octal.trim(), 8).unwrap())
                .unwrap();
            assert_ne!(flags & 0o2000000, 0, "lock fd without O_CLOEXEC: {info}");
            found += 1;
        }
        assert_eq!(found, 1);
    }

    #[test]
    fn stale_temporaries_need_the_exclusive_lock() {
        let scratch = tempfile::tempdir().unwrap();
        let store = Store::open(&scratch.path().join("store")).unwrap();
        let mut abandoned = store.blobs().writer().unwrap();
        abandoned.write_all(b"partial").unwrap();
        std::mem::forget(abandoned); // as if the process had been killed
        fs::create_dir_all(store.root().join("v1/tmp/snapshot-dead/fs/dir")).unwrap();

        let shared = store.lock_shared().unwrap();
        assert!(matches!(
            store.remove_stale_temporaries(&shared),
            Err(StoreError::ExclusiveLockRequired { .. })
        ));
        drop(shared);
        let other = Store::open(&scratch.path().join("other")).unwrap();
        let foreign = other.lock_exclusive().unwrap();
        assert!(store.remove_stale_temporaries(&foreign).is_err());

        let exclusive = store.lock_exclusive().unwrap();
        assert_eq!(store.remove_stale_temporaries(&exclusive).unwrap(), 2);
        assert_eq!(
            fs::read_dir(store.root().join("v1/tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn work_dirs_are_private_and_removed_on_drop() {
        let base = std::env::temp_dir().join(format!("rbuild-workdir-{}", std::process::id()));
        let store = Store::open(&base).unwrap_or_else(|e| panic!("{e}"));
        let work = store.work_dir("step").unwrap_or_else(|e| panic!("{e}"));
        let path = work.path().to_path_buf();
        std::fs::create_dir_all(path.join("a/b")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("/", path.join("a/root-link")).unwrap_or_else(|e| panic!("{e}"));
        assert!(path.starts_with(store.root()));
        drop(work);
        assert!(!path.exists());
        assert!(std::path::Path::new("/etc/passwd").exists());
        let _ = std::fs::remove_dir_all(&base);
    }
}
