//! Unpacked layer trees, used as overlayfs lower dirs, keyed by the layer's chain ID.
//!
//! Each snapshot is `snapshots/<hex>/` holding `fs/` (the tree) and `parent` (the parent's chain
//! ID, or empty for a base layer). A snapshot is built in a temp dir and renamed into place in
//! one step, so a snapshot directory either is complete or does not exist.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{IoResultExt, StoreError};
use crate::fsx::{self, TempEntry};

/// The tree inside a snapshot dir.
const TREE_DIR: &str = "fs";
/// The parent record inside a snapshot dir.
const PARENT_FILE: &str = "parent";
/// The `parent` file holds one digest; anything longer is corrupt.
const PARENT_FILE_LIMIT: u64 = 128;
/// Mode of the `fs` dir before `fill` sets the layer's own root mode.
const TREE_ROOT_MODE: u32 = 0o755;
/// Far more layers than overlayfs can stack; a longer chain means a cycle or corruption.
const MAX_CHAIN_LENGTH: usize = 4096;

/// One unpacked layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The layer's chain ID.
    pub id: Digest,
    /// The unpacked tree (`snapshots/<hex>/fs`).
    pub path: PathBuf,
    /// The chain ID of the layer below, `None` for a base layer.
    pub parent: Option<Digest>,
}

/// The snapshot half of the store.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    /// `…/snapshots`.
    dir: PathBuf,
    /// The store's tmp dir, on the same filesystem as `dir`.
    tmp: PathBuf,
    /// Where removed snapshots go before being deleted.
    trash: PathBuf,
}

impl SnapshotStore {
    pub(crate) fn new(dir: PathBuf, tmp: PathBuf, trash: PathBuf) -> SnapshotStore {
        SnapshotStore { dir, tmp, trash }
    }

    fn snapshot_dir(&self, id: &Digest) -> PathBuf {
        self.dir.join(id.hex())
    }

    /// The snapshot, if it exists.
    pub fn get(&self, id: &Digest) -> Result<Option<Snapshot>, StoreError> {
        let dir = self.snapshot_dir(id);
        match fs::symlink_metadata(&dir) {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => return Err(StoreError::corrupt(&dir, "snapshot is not a directory")),
            Err(error) if fsx::is_not_found(&error) => return Ok(None),
            Err(error) => return Err(StoreError::io(&dir, error)),
        }
        let parent_path = dir.join(PARENT_FILE);
        let Some(parent_bytes) = fsx::read_small_file(&parent_path, PARENT_FILE_LIMIT)? else {
            return Err(StoreError::corrupt(
                &parent_path,
                "snapshot has no parent record",
            ));
        };
        let parent = parse_parent(&parent_path, &parent_bytes)?;
        let tree = dir.join(TREE_DIR);
        if !fs::symlink_metadata(&tree).at(&tree)?.is_dir() {
            return Err(StoreError::corrupt(
                &tree,
                "snapshot tree is not a directory",
            ));
        }
        Ok(Some(Snapshot {
            id: id.clone(),
            path: tree,
            parent,
        }))
    }

    /// Returns snapshot `id`, creating it first if it is absent.
    ///
    /// To create it, `fill` gets a fresh empty directory inside the store and unpacks the layer
    /// there; only when `fill` succeeds is the directory renamed into place, so an error (or a
    /// crash) leaves no half snapshot. If `id` already exists `fill` is not called. When several
    /// callers create the same `id` at once, each may run `fill`, one rename wins, and the others
    /// discard their copy and return the winner.
    ///
    /// `parent`, if given, must already exist.
    pub fn create<F, E>(&self, id: &Digest, parent: Option<&Digest>, fill: F) -> Result<Snapshot, E>
    where
        F: FnOnce(&Path) -> Result<(), E>,
        E: From<StoreError>,
    {
        if let Some(existing) = self.get(id)? {
            return Ok(check_parent(existing, parent)?);
        }
        if let Some(parent_id) = parent {
            if parent_id == id {
                return Err(StoreError::corrupt(
                    &self.snapshot_dir(id),
                    "a snapshot cannot be its own parent",
                )
                .into());
            }
            if self.get(parent_id)?.is_none() {
                return Err(StoreError::NotFound(parent_id.clone()).into());
            }
        }

        let temp = TempEntry::new(fsx::create_temp_dir(&self.tmp, "snapshot-")?);
        let tree = temp.path().join(TREE_DIR);
        create_dir_with_mode(&tree, TREE_ROOT_MODE)?;
        write_parent_record(&temp.path().join(PARENT_FILE), parent)?;

        fill(&tree)?;

        sync_tree(temp.path())?;
        let target = self.snapshot_dir(id);
        match fs::rename(temp.path(), &target) {
            Ok(()) => {
                temp.keep();
                fsx::sync_dir(&self.dir)?;
            }
            Err(error) => {
                // Someone else won the race (ENOTEMPTY/EEXIST); ours is removed on drop.
                drop(temp);
                return match self.get(id)? {
                    Some(winner) => Ok(check_parent(winner, parent)?),
                    None => Err(StoreError::io(&target, error).into()),
                };
            }
        }
        match self.get(id)? {
            Some(created) => Ok(created),
            None => {
                Err(StoreError::corrupt(&target, "snapshot vanished right after creation").into())
            }
        }
    }

    /// The snapshot and all its ancestors, top first: the order of overlayfs `lowerdir=`.
    pub fn chain(&self, id: &Digest) -> Result<Vec<Snapshot>, StoreError> {
        let mut chain = Vec::new();
        let mut seen = HashSet::new();
        let mut next = Some(id.clone());
        while let Some(current) = next {
            if !seen.insert(current.clone()) || chain.len() >= MAX_CHAIN_LENGTH {
                return Err(StoreError::corrupt(
                    &self.snapshot_dir(&current),
                    "snapshot parents form a cycle or an impossibly long chain",
                ));
            }
            let Some(snapshot) = self.get(&current)? else {
                return Err(StoreError::NotFound(current));
            };
            next = snapshot.parent.clone();
            chain.push(snapshot);
        }
        Ok(chain)
    }

    /// Deletes the snapshot. It is first renamed into the store's trash dir (so it disappears
    /// at once and as a whole), then its tree is removed without ever following a symlink in it.
    /// Snapshots whose parent it is are not touched; the caller decides what may go.
    pub fn remove(&self, id: &Digest) -> Result<(), StoreError> {
        let source = self.snapshot_dir(id);
        if fs::symlink_metadata(&source).is_err_and(|e| fsx::is_not_found(&e)) {
            return Err(StoreError::NotFound(id.clone()));
        }
        let trash_slot = fsx::create_temp_dir(&self.trash, &format!("{}-", id.hex()))?;
        let trashed = trash_slot.join("snapshot");
        if let Err(error) = fs::rename(&source, &trashed) {
            let _ = fs::remove_dir(&trash_slot);
            if fsx::is_not_found(&error) {
                return Err(StoreError::NotFound(id.clone()));
            }
            return Err(StoreError::io(&source, error));
        }
        fsx::sync_dir(&self.dir)?;
        fsx::remove_tree(&trash_slot)
    }

    /// Every snapshot, sorted by chain ID. Stray entries whose names are not digests are
    /// skipped.
    pub fn list(&self) -> Result<Vec<Snapshot>, StoreError> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.dir).at(&self.dir)? {
            let entry = entry.at(&self.dir)?;
            if let Some(hex) = entry.file_name().to_str() {
                if let Ok(id) = Digest::parse(&format!("sha256:{hex}")) {
                    ids.push(id);
                }
            }
        }
        ids.sort();
        let mut snapshots = Vec::with_capacity(ids.len());
        for id in ids {
            // A snapshot removed while listing is simply not listed.
            if let Some(snapshot) = self.get(&id)? {
                snapshots.push(snapshot);
            }
        }
        Ok(snapshots)
    }
}

/// Returns `existing` if its parent is the one `requested`, an error otherwise (same chain ID
/// with another parent means corruption or a caller computing chain IDs wrongly).
fn check_parent(existing: Snapshot, requested: Option<&Digest>) -> Result<Snapshot, StoreError> {
    if existing.parent.as_ref() == requested {
        Ok(existing)
    } else {
        Err(StoreError::SnapshotParentMismatch {
            id: existing.id,
            existing: existing.parent,
            requested: requested.cloned(),
        })
    }
}

fn parse_parent(path: &Path, bytes: &[u8]) -> Result<Option<Digest>, StoreError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| StoreError::corrupt(path, "parent record is not UTF-8"))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() {
        return Ok(None);
    }
    Digest::parse(text)
        .map(Some)
        .map_err(|_| StoreError::corrupt(path, "parent record is not a digest"))
}

fn write_parent_record(path: &Path, parent: Option<&Digest>) -> Result<(), StoreError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .at(path)?;
    if let Some(parent) = parent {
        writeln!(file, "{parent}").at(path)?;
    }
    file.sync_all().at(path)
}

fn create_dir_with_mode(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new().mode(mode).create(path).at(path)?;
    // The umask may have removed bits; the layer's root mode should not depend on it.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).at(path)
}

/// Makes everything `fill` wrote durable before the snapshot becomes visible.
fn sync_tree(dir: &Path) -> Result<(), StoreError> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let handle = fs::File::open(dir).at(dir)?;
        nix::unistd::syncfs(&handle).at(dir)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        fsx::sync_dir(dir)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::Store;
    use std::os::unix::fs::symlink;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn open_store() -> (tempfile::TempDir, Store) {
        let scratch = tempfile::tempdir().unwrap();
        let store = Store::open(&scratch.path().join("store")).unwrap();
        (scratch, store)
    }

    fn entries(dir: &Path) -> usize {
        fs::read_dir(dir).unwrap().count()
    }

    fn id(name: &str) -> Digest {
        Digest::of_bytes(name.as_bytes())
    }

    fn write_file(tree: &Path, name: &str) -> Result<(), StoreError> {
        fs::write(tree.join(name), name).map_err(|e| StoreError::io(tree, e))
    }

    #[derive(Debug)]
    enum UnpackError {
        Store(#[allow(dead_code)] StoreError),
        BadLayer,
    }

    impl From<StoreError> for UnpackError {
        fn from(error: StoreError) -> Self {
            UnpackError::Store(error)
        }
    }

    #[test]
    fn create_get_and_reuse() {
        let (_scratch, store) = open_store();
        let snapshots = store.snapshots();
        let base = id("base");
        assert_eq!(snapshots.get(&base).unwrap(), None);
        let created = snapshots
            .create(&base, None, |tree| write_file(tree, "etc-os-release"))
            .unwrap();
        assert_eq!(created.id, base);
        assert_eq!(created.parent, None);
        assert!(created.path.ends_with(Path::new(base.hex()).join("fs")));
        assert_eq!(
            fs::read(created.path.join("etc-os-release")).unwrap(),
            b"etc-os-release"
        );
        assert_eq!(snapshots.get(&base).unwrap(), Some(created.clone()));

        let calls = AtomicUsize::new(0);
        let again = snapshots
            .create(&base, None, |_| -> Result<(), StoreError> {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .unwrap();
        assert_eq!(again, created);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "fill must not run for an existing snapshot"
        );
        assert_eq!(entries(&store.root().join("v1/tmp")), 0);
    }

    #[test]
    fn failing_fill_leaves_nothing() {
        let (_scratch, store) = open_store();
        let layer = id("layer");
        let result = store.snapshots().create(&layer, None, |tree| {
            fs::create_dir_all(tree.join("usr/bin")).unwrap();
            fs::write(tree.join("usr/bin/half"), b"half written").unwrap();
            Err(UnpackError::BadLayer)
        });
        assert!(matches!(result, Err(UnpackError::BadLayer)));
        assert_eq!(store.snapshots().get(&layer).unwrap(), None);
        assert!(store.snapshots().list().unwrap().is_empty());
        assert_eq!(entries(&store.root().join("v1/snapshots")), 0);
        assert_eq!(entries(&store.root().join("v1/tmp")), 0);
        // Now a good attempt succeeds.
        store
            .snapshots()
            .create(&layer, None, |tree| write_file(tree, "ok"))
            .unwrap();
    }

    #[test]
    fn chain_is_top_first() {
        let (_scratch, store) = open_store();
        let snapshots = store.snapshots();
        let (l1, l2, l3) = (id("l1"), id("l2"), id("l3"));
        snapshots.create(&l1, None, |t| write_file(t, "1")).unwrap();
        snapshots
            .create(&l2, Some(&l1), |t| write_file(t, "2"))
            .unwrap();
        snapshots
            .create(&l3, Some(&l2), |t| write_file(t, "3"))
            .unwrap();
        let chain: Vec<Digest> = snapshots
            .chain(&l3)
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(chain, vec![l3.clone(), l2.clone(), l1.clone()]);
        let parents: Vec<Option<Digest>> = snapshots
            .chain(&l3)
            .unwrap()
            .into_iter()
            .map(|s| s.parent)
            .collect();
        assert_eq!(parents, vec![Some(l2.clone()), Some(l1.clone()), None]);
        assert_eq!(snapshots.chain(&l1).unwrap().len(), 1);
        assert!(matches!(
            snapshots.chain(&id("absent")),
            Err(StoreError::NotFound(_))
        ));

        let mut all: Vec<Digest> = snapshots
            .list()
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        all.sort();
        let mut want = vec![l1, l2, l3];
        want.sort();
        assert_eq!(all, want);
    }

    #[test]
    fn parent_rules_table() {
        let (_scratch, store) = open_store();
        let snapshots = store.snapshots();
        let base = id("base");
        let child = id("child");
        snapshots
            .create(&base, None, |_| Ok::<(), StoreError>(()))
            .unwrap();
        snapshots
            .create(&child, Some(&base), |_| Ok::<(), StoreError>(()))
            .unwrap();
        let missing = id("missing");
        let cases: Vec<(&str, Digest, Option<Digest>)> = vec![
            ("missing parent", id("new"), Some(missing.clone())),
            ("own parent", id("self"), Some(id("self"))),
            ("existing with other parent", child.clone(), None),
            (
                "existing base given a parent",
                base.clone(),
                Some(child.clone()),
            ),
        ];
        for (name, snapshot, parent) in cases {
            let result = snapshots.create(&snapshot, parent.as_ref(), |_| Ok::<(), StoreError>(()));
            assert!(result.is_err(), "{name}: {result:?}");
        }
        assert!(matches!(
            snapshots.create(&child, None, |_| Ok::<(), StoreError>(())),
            Err(StoreError::SnapshotParentMismatch { .. })
        ));
        assert_eq!(snapshots.list().unwrap().len(), 2);
    }

    #[test]
    fn corrupt_metadata_is_an_error() {
        let (_scratch, store) = open_store();
        let snapshots = store.snapshots();
        let (a, b) = (id("a"), id("b"));
        snapshots
            .create(&a, None, |_| Ok::<(), StoreError>(()))
            .unwrap();
        snapshots
            .create(&b, Some(&a), |_| Ok::<(), StoreError>(()))
            .unwrap();
        let dir = store.root().join("v1/snapshots");
        let parent_of_a = dir.join(a.hex()).join(PARENT_FILE);

        // A cycle: a's parent is b, b's parent is a.
        fs::write(&parent_of_a, format!("{b}\n")).unwrap();
        assert!(matches!(
            snapshots.chain(&b),
            Err(StoreError::Corrupt { .. })
        ));

        for (name, content) in [
            ("junk", b"not a digest".to_vec()),
            ("long", vec![b'a'; 4096]),
            ("binary", vec![0xff, 0xfe]),
        ] {
            fs::write(&parent_of_a, &content).unwrap();
            assert!(
                matches!(snapshots.get(&a), Err(StoreError::Corrupt { .. })),
                "{name}"
            );
        }
        fs::remove_file(&parent_of_a).unwrap();
        assert!(matches!(snapshots.get(&a), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn remove_does_not_follow_symlinks_out_of_the_store() {
        let (scratch, store) = open_store();
        let sentinel_dir = scratch.path().join("host-dir");
        fs::create_dir(&sentinel_dir).unwrap();
        fs::write(sentinel_dir.join("precious"), b"do not delete").unwrap();
        let sentinel_file = scratch.path().join("host-file");
        fs::write(&sentinel_file, b"do not delete").unwrap();

        let layer = id("evil layer");
        let snapshot = store
            .snapshots()
            .create(&layer, None, |tree| {
                let io = |e| StoreError::io(tree, e);
                fs::create_dir_all(tree.join("var/lib")).map_err(io)?;
                symlink(&sentinel_dir, tree.join("var/lib/escape")).map_err(io)?;
                symlink(&sentinel_dir, tree.join("escape-dir")).map_err(io)?;
                symlink(&sentinel_file, tree.join("escape-file")).map_err(io)?;
                symlink("/", tree.join("root")).map_err(io)?;
                Ok::<(), StoreError>(())
            })
            .unwrap();
        assert!(snapshot.path.join("escape-dir/precious").exists());

        store.snapshots().remove(&layer).unwrap();
        assert_eq!(store.snapshots().get(&layer).unwrap(), None);
        assert_eq!(
            fs::read(sentinel_dir.join("precious")).unwrap(),
            b"do not delete"
        );
        assert_eq!(fs::read(&sentinel_file).unwrap(), b"do not delete");
        assert_eq!(entries(&store.root().join("v1/trash")), 0);
        assert!(matches!(
            store.snapshots().remove(&layer),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn concurrent_creators_of_one_id_agree() {
        const CREATORS: usize = 4;
        let scratch = tempfile::tempdir().unwrap();
        let root: Arc<Path> = Arc::from(scratch.path().join("store"));
        Store::open(&root).unwrap();
        let fills = Arc::new(AtomicUsize::new(0));
        let layer = id("shared layer");
        let workers: Vec<_> = (0..CREATORS)
            .map(|creator| {
                let (root, fills, layer) = (Arc::clone(&root), Arc::clone(&fills), layer.clone());
                std::thread::spawn(move || {
                    let store = Store::open(&root).unwrap();
                    store
                        .snapshots()
                        .create(&layer, None, |tree| {
                            fills.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            write_file(tree, &format!("from-{creator}"))
                        })
                        .unwrap()
                })
            })
            .collect();
        let results: Vec<Snapshot> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        assert!(fills.load(Ordering::SeqCst) >= 1);
        assert!(results.iter().all(|s| s == &results[0]));
        // Exactly one creator's tree is in place, whole.
        assert_eq!(entries(&results[0].path), 1);
        assert_eq!(entries(&root.join("v1/tmp")), 0);
        assert_eq!(entries(&root.join("v1/snapshots")), 1);
    }
}
