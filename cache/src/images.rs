//! The image index: which image (manifest) each tag names, kept in one JSON file.
//!
//! Writers take an exclusive `flock` on `images.lock`, read the file, change it, and replace it
//! atomically (temp + fsync + rename + dir fsync); readers take a shared lock. Concurrent rbuild
//! processes therefore never lose an update, and nobody ever sees a torn file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::StoreError;
use crate::fsx;
use crate::lock::{FileLock, LockMode};

/// The version written in `images.json`; any other version is refused rather than misread.
const INDEX_FORMAT_VERSION: u32 = 1;
/// `images.json` is never legitimately this large; refusing bigger files bounds memory use.
const INDEX_FILE_LIMIT: u64 = 256 * 1024 * 1024;
const INDEX_FILE_MODE: u32 = 0o600;

/// One tag and the image it names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The already-normalised reference, e.g. `docker.io/library/app:latest`. The store does
    /// not parse it; it only has to be non-empty and free of control characters.
    pub name: String,
    /// Digest of the image manifest blob.
    pub manifest: Digest,
    /// Media type of the manifest (OCI or Docker schema 2).
    pub media_type: String,
    /// Digest of the image config blob.
    pub config: Digest,
    /// Size of the image, as the caller counts it.
    pub size: u64,
    /// When the image was created, RFC 3339; not parsed by the store.
    pub created: Option<String>,
}

/// The on-disk form of the index.
#[derive(Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    images: Vec<ImageRecord>,
}

/// The index of tagged images.
#[derive(Debug, Clone)]
pub struct ImageDb {
    /// `…/images.json`.
    file: PathBuf,
    /// `…/images.lock`.
    lock: PathBuf,
    /// The store's tmp dir, on the same filesystem as `file`.
    tmp: PathBuf,
}

type Index = BTreeMap<String, ImageRecord>;

impl ImageDb {
    pub(crate) fn new(file: PathBuf, lock: PathBuf, tmp: PathBuf) -> ImageDb {
        ImageDb { file, lock, tmp }
    }

    /// Every image, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        Ok(self.read_locked()?.into_values().collect())
    }

    /// The image with this name, if any.
    pub fn get(&self, name: &str) -> Result<Option<ImageRecord>, StoreError> {
        Ok(self.read_locked()?.remove(name))
    }

    /// Adds or replaces the image named `record.name`; returns the record it replaced.
    pub fn put(&self, record: ImageRecord) -> Result<Option<ImageRecord>, StoreError> {
        check_name(&record.name)?;
        // Re-tagging an image with what the name already holds writes (and syncs) nothing.
        if self.read_locked()?.get(&record.name) == Some(&record) {
            return Ok(Some(record));
        }
        self.update(|index| Some(index.insert(record.name.clone(), record)))
            .map(Option::flatten)
    }

    /// Removes the image with this name; returns it, or `None` if there was none.
    pub fn remove(&self, name: &str) -> Result<Option<ImageRecord>, StoreError> {
        self.update(|index| index.remove(name).map(Some))
            .map(Option::flatten)
    }

    /// Every image whose manifest is `manifest`, sorted by name.
    pub fn find_by_manifest(&self, manifest: &Digest) -> Result<Vec<ImageRecord>, StoreError> {
        Ok(self
            .read_locked()?
            .into_values()
            .filter(|record| &record.manifest == manifest)
            .collect())
    }

    fn read_locked(&self) -> Result<Index, StoreError> {
        let _shared = FileLock::acquire(&self.lock, LockMode::Shared, true)?;
        self.read_unlocked()
    }

    /// Runs `change` on the index under the exclusive lock. `change` returns `None` to leave the
    /// file untouched, or `Some(result)` to write the changed index back.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut Index) -> Option<T>,
    ) -> Result<Option<T>, StoreError> {
        let _exclusive = FileLock::acquire(&self.lock, LockMode::Exclusive, true)?;
        let mut index = self.read_unlocked()?;
        let Some(result) = change(&mut index) else {
            return Ok(None);
        };
        let file = IndexFile {
            version: INDEX_FORMAT_VERSION,
            images: index.into_values().collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).map_err(|source| StoreError::Json {
            path: self.file.clone(),
            source,
        })?;
        bytes.push(b'\n');
        fsx::write_file_atomic(&self.tmp, &self.file, &bytes, INDEX_FILE_MODE)?;
        Ok(Some(result))
    }

    fn read_unlocked(&self) -> Result<Index, StoreError> {
        let Some(bytes) = fsx::read_small_file(&self.file, INDEX_FILE_LIMIT)? else {
            return Ok(Index::new());
        };
        let file: IndexFile =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
                path: self.file.clone(),
                source,
            })?;
        if file.version != INDEX_FORMAT_VERSION {
            return Err(StoreError::corrupt(
                &self.file,
                format!(
                    "unsupported index version {} (expected {INDEX_FORMAT_VERSION})",
                    file.version
                ),
            ));
        }
        let mut index = Index::new();
        for record in file.images {
            if check_name(&record.name).is_err() {
                return Err(StoreError::corrupt(
                    &self.file,
                    format!("invalid image name {:?}", record.name),
                ));
            }
            if let Some(duplicate) = index.insert(record.name.clone(), record) {
                return Err(StoreError::corrupt(
                    &self.file,
                    format!("image {:?} is listed twice", duplicate.name),
                ));
            }
        }
        Ok(index)
    }
}

fn check_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(StoreError::InvalidImageName(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::Store;
    use std::fs;
    use std::path::Path;
    use std::sync::Arc;

    fn record(name: &str, manifest: &[u8]) -> ImageRecord {
        ImageRecord {
            name: name.to_owned(),
            manifest: Digest::of_bytes(manifest),
            media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
            config: Digest::of_bytes(b"config"),
            size: 1234,
            created: Some("2024-01-02T03:04:05Z".to_owned()),
        }
    }

    #[test]
    fn put_get_list_replace_remove() {
        let scratch = tempfile::tempdir().unwrap();
        let store = Store::open(scratch.path()).unwrap();
        let images = store.images();
        assert!(images.list().unwrap().is_empty());
        assert_eq!(images.get("docker.io/library/app:latest").unwrap(), None);

        let app = record("docker.io/library/app:latest", b"m1");
        let base = record("docker.io/library/base:1", b"m1");
        assert_eq!(images.put(app.clone()).unwrap(), None);
        assert_eq!(images.put(base.clone()).unwrap(), None);
        assert_eq!(images.get(&app.name).unwrap(), Some(app.clone()));
        assert_eq!(images.list().unwrap(), vec![app.clone(), base.clone()]);
        assert_eq!(
            images.find_by_manifest(&Digest::of_bytes(b"m1")).unwrap(),
            vec![app.clone(), base.clone()]
        );

        let app_v2 = ImageRecord {
            created: None,
            ..record(&app.name, b"m2")
        };
        assert_eq!(images.put(app_v2.clone()).unwrap(), Some(app.clone()));
        assert_eq!(images.get(&app.name).unwrap(), Some(app_v2.clone()));
        assert_eq!(
            images.find_by_manifest(&Digest::of_bytes(b"m1")).unwrap(),
            vec![base.clone()]
        );

        assert_eq!(images.remove(&app.name).unwrap(), Some(app_v2));
        assert_eq!(images.remove(&app.name).unwrap(), None);
        assert_eq!(images.list().unwrap(), vec![base]);

        // Another Store on the same root sees the same index.
        let again = Store::open(scratch.path()).unwrap();
        assert_eq!(
            again.images().list().unwrap(),
            store.images().list().unwrap()
        );
        assert_eq!(
            fs::read_dir(scratch.path().join("v1/tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn invalid_names_are_refused() {
        let scratch = tempfile::tempdir().unwrap();
        let store = Store::open(scratch.path()).unwrap();
        for name in ["", "app\n:latest", "app\0"] {
            assert!(
                matches!(
                    store.images().put(record(name, b"m")),
                    Err(StoreError::InvalidImageName(_))
                ),
                "{name:?}"
            );
        }
        assert!(store.images().list().unwrap().is_empty());
    }

    #[test]
    fn concurrent_puts_from_separate_stores_lose_nothing() {
        const THREADS: usize = 8;
        const PUTS: usize = 50;
        let scratch = tempfile::tempdir().unwrap();
        let root: Arc<Path> = Arc::from(scratch.path().join("store"));
        Store::open(&root).unwrap();
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let root = Arc::clone(&root);
                std::thread::spawn(move || {
                    let store = Store::open(&root).unwrap();
                    for put in 0..PUTS {
                        let name = format!("example.com/t{thread}/img:{put}");
                        store.images().put(record(&name, name.as_bytes())).unwrap();
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        let listed = Store::open(&root).unwrap().images().list().unwrap();
        assert_eq!(listed.len(), THREADS * PUTS);
        for thread in 0..THREADS {
            for put in 0..PUTS {
                let name = format!("example.com/t{thread}/img:{put}");
                assert!(listed
                    .iter()
                    .any(|r| r.name == name && r.manifest == Digest::of_bytes(name.as_bytes())));
            }
        }
    }

    #[test]
    fn corrupt_index_is_an_error_not_a_panic() {
        let scratch = tempfile::tempdir().unwrap();
        let store = Store::open(scratch.path()).unwrap();
        store.images().put(record("a:1", b"m")).unwrap();
        let path = scratch.path().join("v1/images.json");
        let good = fs::read(&path).unwrap();
        let good_text = String::from_utf8(good.clone()).unwrap();
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            ("truncated", good[..good.len() / 2].to_vec(), true),
            ("empty", Vec::new(), true),
            ("binary junk", vec![0xff, 0x00, 0x13, 0x37], true),
            ("not an object", b"[]".to_vec(), true),
            (
                "bad digest",
                good_text.replacen("sha256:", "sha256:zz", 1).into_bytes(),
                true,
            ),
            (
                "future version",
                good_text
                    .replace("\"version\": 1", "\"version\": 99")
                    .into_bytes(),
                false,
            ),
            (
                "duplicate name",
                format!(
                    "{{\"version\":1,\"images\":[{0},{0}]}}",
                    serde_json::to_string(&record("a:1", b"m")).unwrap()
                )
                .into_bytes(),
                false,
            ),
            (
                "empty name",
                format!(
                    "{{\"version\":1,\"images\":[{}]}}",
                    serde_json::to_string(&record("", b"m")).unwrap()
                )
                .into_bytes(),
                false,
            ),
        ];
        for (name, content, is_json_error) in cases {
            fs::write(&path, &content).unwrap();
            let error = store.images().list().unwrap_err();
            if is_json_error {
                assert!(
                    matches!(error, StoreError::Json { .. }),
                    "{name}: {error:?}"
                );
            } else {
                assert!(
                    matches!(error, StoreError::Corrupt { .. }),
                    "{name}: {error:?}"
                );
            }
            // A writer must not paper over the corruption either.
            assert!(store.images().put(record("b:1", b"m")).is_err(), "{name}");
            assert_eq!(fs::read(&path).unwrap(), content, "{name}");
        }
    }
}
