//! Content-addressed blobs: `blobs/sha256/<hex>`, written through a hashing temp file and renamed
//! into place only once complete, read back through a [`VerifiedReader`] — or kept as a recipe
//! (`blobs/sha256-recipes/<hex>`) and made on demand by the store's [`BlobMaker`] (see
//! [`crate::blob_recipe`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::blob_recipe::{self, BlobMaker, BlobReader, MadeBlob, RecipeFile};
use crate::digest::{Digest, DigestWriter, VerifiedReader};
use crate::error::{IoResultExt, StoreError};
use crate::fsx::{self, TempEntry};

/// Blob files are readable by all; the 0700 store directories above them keep others out.
const BLOB_FILE_MODE: u32 = 0o644;
/// The fixed buffer between a writer's caller and the temp file.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// The blob half of the store.
#[derive(Debug, Clone)]
pub struct BlobStore {
    /// `…/blobs/sha256`.
    dir: PathBuf,
    /// `…/blobs/sha256-recipes`.
    recipes: PathBuf,
    /// The store's tmp dir, on the same filesystem as `dir`.
    tmp: PathBuf,
    /// Makes blobs kept as recipes (set once).
    maker: Arc<OnceLock<MakerSlot>>,
}

/// A recipe and the maker that can make it now.
type UsableRecipe = (Arc<dyn BlobMaker>, RecipeFile);

/// The registered [`BlobMaker`].
#[derive(Clone)]
struct MakerSlot(Arc<dyn BlobMaker>);

impl std::fmt::Debug for MakerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlobMaker")
    }
}

/// Up to this size, [`BlobStore::put_bytes`] compares an existing blob instead of rewriting it.
const SMALL_BLOB_BYTES: usize = 1 << 20;

impl BlobStore {
    pub(crate) fn new(dir: PathBuf, tmp: PathBuf) -> BlobStore {
        BlobStore {
            recipes: dir.with_file_name("sha256-recipes"),
            dir,
            tmp,
            maker: Arc::new(OnceLock::new()),
        }
    }

    /// Registers what makes blobs kept as recipes; the first registration stays (every clone
    /// of this store shares it). Without one, a recipe-only blob is missing.
    pub fn set_maker(&self, maker: Arc<dyn BlobMaker>) {
        let _ = self.maker.set(MakerSlot(maker));
    }

    fn recipe_path(&self, digest: &Digest) -> PathBuf {
        self.recipes.join(digest.hex())
    }

    /// Keeps the blob `digest` of `size` bytes as `recipe`, for the registered [`BlobMaker`] to
    /// make when it is read. Write it only once what the recipe names exists.
    pub fn put_recipe(
        &self,
        digest: &Digest,
        size: u64,
        recipe: serde_json::Value,
    ) -> Result<(), StoreError> {
        blob_recipe::write_recipe(
            &self.tmp,
            &self.recipe_path(digest),
            &RecipeFile { size, recipe },
        )
    }

    /// The recipe of `digest`, when it has one the maker can make now.
    fn usable_recipe(
        &self,
        digest: &Digest,
    ) -> Result<Option<UsableRecipe>, StoreError> {
        let Some(MakerSlot(maker)) = self.maker.get() else {
            return Ok(None);
        };
        let Some(file) = blob_recipe::read_recipe(&self.recipe_path(digest))? else {
            return Ok(None);
        };
        if !maker.available(&file.recipe) {
            return Ok(None);
        }
        Ok(Some((maker.clone(), file)))
    }

    /// Whether the blob is kept as a recipe only (no file).
    pub fn is_recipe(&self, digest: &Digest) -> bool {
        !self.has_file(digest) && self.recipe_path(digest).is_file()
    }

    fn has_file(&self, digest: &Digest) -> bool {
        fs::symlink_metadata(self.path(digest)).is_ok_and(|m| m.is_file())
    }

    /// Where the blob with this digest lives (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// Starts a new blob: bytes written go to a temp file in the store's tmp dir; nothing is
    /// visible under `blobs/` until [`BlobWriter::commit`].
    pub fn writer(&self) -> Result<BlobWriter, StoreError> {
        let (file, temp_path) = fsx::create_temp_file(&self.tmp, "blob-", BLOB_FILE_MODE)?;
        Ok(BlobWriter {
            hashing: DigestWriter::new(BufWriter::with_capacity(WRITE_BUFFER_BYTES, file)),
            temp: TempEntry::new(temp_path),
            blob_dir: self.dir.clone(),
        })
    }

    /// Stores `bytes` and returns their digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        // Small documents (configs, manifests) are often already there: an unchanged rebuild
        // writes (and syncs) nothing. A damaged copy is replaced.
        let digest = Digest::of_bytes(bytes);
        if bytes.len() <= SMALL_BLOB_BYTES
            && fs::read(self.path(&digest)).is_ok_and(|stored| stored == bytes)
        {
            return Ok(digest);
        }
        let mut writer = self.writer()?;
        writer
            .write_all(bytes)
            .map_err(|e| StoreError::io(writer.temp.path(), e))?;
        writer.commit().map(|(digest, _)| digest)
    }

    /// Whether the blob is present: as a file (its content is checked only when read), or as a
    /// recipe the registered maker can make now.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.has_file(digest) || matches!(self.usable_recipe(digest), Ok(Some(_)))
    }

    /// The blob's size in bytes.
    pub fn size(&self, digest: &Digest) -> Result<u64, StoreError> {
        let path = self.path(digest);
        match fs::symlink_metadata(&path) {
            Ok(metadata) if metadata.is_file() => Ok(metadata.len()),
            Ok(_) => Err(StoreError::corrupt(&path, "blob is not a regular file")),
            Err(error) if fsx::is_not_found(&error) => match self.usable_recipe(digest)? {
                Some((_, file)) => Ok(file.size),
                None => Err(StoreError::NotFound(digest.clone())),
            },
            Err(error) => Err(StoreError::io(&path, error)),
        }
    }

    /// Opens the blob for streaming (a blob kept as a recipe is made as it is read). The reader
    /// checks the content against `digest` when it reaches the end and fails there (kind
    /// `InvalidData`) if the file on disk was corrupted or the recipe made other bytes.
    pub fn open(&self, digest: &Digest) -> Result<VerifiedReader<BlobReader>, StoreError> {
        let path = self.path(digest);
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(file) => file,
            Err(error) if fsx::is_not_found(&error) => {
                return match self.usable_recipe(digest)? {
                    Some((maker, file)) => {
                        let made = MadeBlob::start(maker, file.recipe)
                            .map_err(|e| StoreError::io(&self.recipe_path(digest), e))?;
                        Ok(VerifiedReader::new(BlobReader::Made(made), digest.clone()))
                    }
                    None => Err(StoreError::NotFound(digest.clone())),
                };
            }
            Err(error) => return Err(StoreError::io(&path, error)),
        };
        if !file.metadata().at(&path)?.is_file() {
            return Err(StoreError::corrupt(&path, "blob is not a regular file"));
        }
        Ok(VerifiedReader::new(BlobReader::File(file), digest.clone()))
    }

    /// The blob as a file, for readers that need to seek (uploads): a blob kept as a recipe is
    /// made and stored as a file first (verified). The file's content is not checked here.
    pub fn open_file(&self, digest: &Digest) -> Result<File, StoreError> {
        if !self.has_file(digest) && self.usable_recipe(digest)?.is_some() {
            let mut made = self.open(digest)?;
            let mut writer = self.writer()?;
            io::copy(&mut made, &mut writer)
                .map_err(|e| StoreError::from_read_error(&self.recipe_path(digest), e))?;
            writer.commit_expecting(digest)?;
        }
        match self.open(digest)?.into_inner() {
            BlobReader::File(file) => Ok(file),
            BlobReader::Made(_) => Err(StoreError::NotFound(digest.clone())),
        }
    }

    /// Reads a small blob (a manifest, a config) whole, verified. Fails with
    /// [`StoreError::TooLarge`] without reading it if it is bigger than `limit` bytes.
    pub fn read_to_vec(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, StoreError> {
        let path = self.path(digest);
        let size = self.size(digest)?;
        let reader = self.open(digest)?;
        if size > limit {
            return Err(StoreError::TooLarge {
                digest: digest.clone(),
                size,
                limit,
            });
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        reader
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|error| StoreError::from_read_error(&path, error))?;
        let read = bytes.len() as u64;
        if read > limit {
            // The file grew after we checked its size.
            return Err(StoreError::TooLarge {
                digest: digest.clone(),
                size: read,
                limit,
            });
        }
        Ok(bytes)
    }

    /// Deletes the blob (its file and its recipe). [`StoreError::NotFound`] if it is absent.
    pub fn remove(&self, digest: &Digest) -> Result<(), StoreError> {
        let path = self.path(digest);
        let recipe = self.recipe_path(digest);
        if recipe.is_file() {
            blob_recipe::remove_recipe(&recipe)?;
            if !self.has_file(digest) {
                return Ok(());
            }
        }
        match fs::remove_file(&path) {
            Ok(()) => fsx::sync_dir(&self.dir),
            Err(error) if fsx::is_not_found(&error) => Err(StoreError::NotFound(digest.clone())),
            Err(error) => Err(StoreError::io(&path, error)),
        }
    }

    /// Every blob in the store (files and recipes), sorted. Stray files whose names are not
    /// digests are skipped.
    pub fn list(&self) -> Result<Vec<Digest>, StoreError> {
        let mut digests = Vec::new();
        for dir in [&self.dir, &self.recipes] {
            let entries = match fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if dir == &self.recipes && fsx::is_not_found(&e) => continue,
                Err(e) => return Err(StoreError::io(dir, e)),
            };
            for entry in entries {
                let entry = entry.at(dir)?;
                let Some(hex) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if let Ok(digest) = Digest::parse(&format!("sha256:{hex}")) {
                    digests.push(digest);
                }
            }
        }
        digests.sort();
        digests.dedup();
        Ok(digests)
    }
}

/// A blob being written. Bytes stream through a fixed buffer into a temp file while being
/// hashed; [`BlobWriter::commit`] makes the blob visible. Dropping an uncommitted writer removes
/// its temp file.
#[derive(Debug)]
pub struct BlobWriter {
    hashing: DigestWriter<BufWriter<File>>,
    temp: TempEntry,
    blob_dir: PathBuf,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.hashing.bytes_written()
    }

    /// Finishes the blob: flush and fsync the temp file, rename it to `blobs/sha256/<hex>`
    /// (no-op if that blob is already stored), fsync the directory.
    pub fn commit(self) -> Result<(Digest, u64), StoreError> {
        let (digest, size, temp, blob_dir) = self.finish_file()?;
        publish(temp, &blob_dir, &digest, size)?;
        Ok((digest, size))
    }

    /// Like [`BlobWriter::commit`], but stores nothing and fails with
    /// [`StoreError::DigestMismatch`] if the content does not hash to `expected`.
    pub fn commit_expecting(self, expected: &Digest) -> Result<u64, StoreError> {
        let (actual, size, temp, blob_dir) = self.finish_file()?;
        if &actual != expected {
            drop(temp);
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        publish(temp, &blob_dir, &actual, size)?;
        Ok(size)
    }

    /// Flushes and fsyncs the temp file and closes it.
    fn finish_file(self) -> Result<(Digest, u64, TempEntry, PathBuf), StoreError> {
        let BlobWriter {
            hashing,
            temp,
            blob_dir,
        } = self;
        let (buffered, digest, size) = hashing.finish();
        let file = buffered
            .into_inner()
            .map_err(|error| StoreError::io(temp.path(), error.into_error()))?;
        file.sync_all().at(temp.path())?;
        drop(file);
        Ok((digest, size, temp, blob_dir))
    }
}

/// Renames a complete, fsynced temp file into place as blob `digest`.
fn publish(temp: TempEntry, blob_dir: &Path, digest: &Digest, size: u64) -> Result<(), StoreError> {
    let target = blob_dir.join(digest.hex());
    if let Ok(existing) = fs::symlink_metadata(&target) {
        if existing.is_file() && existing.len() == size {
            // Same content already stored; `temp` is removed on drop.
            return Ok(());
        }
        // A truncated or otherwise broken blob is replaced by the good copy.
    }
    fs::rename(temp.path(), &target).at(&target)?;
    temp.keep();
    fsx::sync_dir(blob_dir)
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hashing.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.hashing.flush()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::Store;

    fn open_store() -> (tempfile::TempDir, Store) {
        let scratch = tempfile::tempdir().unwrap();
        let store = Store::open(&scratch.path().join("store")).unwrap();
        (scratch, store)
    }

    fn tmp_entries(store: &Store) -> usize {
        fs::read_dir(store.root().join("v1/tmp")).unwrap().count()
    }

    /// Deterministic pseudo-random bytes (xorshift), so a large blob needs no large buffer.
    struct PatternSource {
        state: u64,
    }

    impl PatternSource {
        fn fill(&mut self, buf: &mut [u8]) {
            for chunk in buf.chunks_mut(8) {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                let bytes = self.state.to_le_bytes();
                chunk.copy_from_slice(&bytes[..chunk.len()]);
            }
        }
    }

    #[test]
    fn streamed_64_mib_roundtrip() {
        const TOTAL: u64 = 64 * 1024 * 1024;
        const CHUNK: usize = 1024 * 1024;
        let (_scratch, store) = open_store();
        let mut source = PatternSource {
            state: 0x9e37_79b9_7f4a_7c15,
        };
        let mut chunk = vec![0u8; CHUNK];
        let mut expected = DigestWriter::new(io::sink());
        let mut writer = store.blobs().writer().unwrap();
        let mut written = 0u64;
        while written < TOTAL {
            source.fill(&mut chunk);
            writer.write_all(&chunk).unwrap();
            expected.write_all(&chunk).unwrap();
            written += CHUNK as u64;
            // Streaming: everything but the fixed buffer is already in the temp file.
            let on_disk = writer.temp.path().metadata().unwrap().len();
            assert!(
                written - on_disk <= WRITE_BUFFER_BYTES as u64,
                "{written} vs {on_disk}"
            );
        }
        assert_eq!(writer.bytes_written(), TOTAL);
        let (_, expected_digest, _) = expected.finish();
        let (digest, size) = writer.commit().unwrap();
        assert_eq!((digest.clone(), size), (expected_digest, TOTAL));
        assert_eq!(store.blobs().size(&digest).unwrap(), TOTAL);
        assert_eq!(tmp_entries(&store), 0);

        // Read back through a fixed 64 KiB buffer.
        let mut reader = store.blobs().open(&digest).unwrap();
        let mut check = DigestWriter::new(io::sink());
        let mut buffer = [0u8; 64 * 1024];
        loop {
            let count = reader.read(&mut buffer).unwrap();
            if count == 0 {
                break;
            }
            check.write_all(&buffer[..count]).unwrap();
        }
        assert!(reader.is_verified());
        let (_, read_digest, read_size) = check.finish();
        assert_eq!((read_digest, read_size), (digest, TOTAL));
    }

    #[test]
    fn put_bytes_is_idempotent() {
        let (_scratch, store) = open_store();
        let first = store.blobs().put_bytes(b"hello").unwrap();
        let second = store.blobs().put_bytes(b"hello").unwrap();
        assert_eq!(first, second);
        assert_eq!(first, Digest::of_bytes(b"hello"));
        assert_eq!(store.blobs().list().unwrap(), vec![first.clone()]);
        assert!(store.blobs().contains(&first));
        assert_eq!(store.blobs().read_to_vec(&first, 5).unwrap(), b"hello");
        assert_eq!(tmp_entries(&store), 0);
    }

    #[test]
    fn commit_expecting_table() {
        let content: &[u8] = b"layer bytes";
        let right = Digest::of_bytes(content);
        let wrong = Digest::of_bytes(b"something else");
        for (name, expected, ok) in [("matching", &right, true), ("mismatching", &wrong, false)] {
            let (_scratch, store) = open_store();
            let mut writer = store.blobs().writer().unwrap();
            writer.write_all(content).unwrap();
            let result = writer.commit_expecting(expected);
            if ok {
                assert_eq!(result.unwrap(), content.len() as u64, "{name}");
                assert_eq!(store.blobs().list().unwrap(), vec![right.clone()], "{name}");
            } else {
                match result {
                    Err(StoreError::DigestMismatch {
                        expected: e,
                        actual,
                    }) => {
                        assert_eq!((&e, &actual), (&wrong, &right), "{name}");
                    }
                    other => panic!("{name}: {other:?}"),
                }
                assert!(store.blobs().list().unwrap().is_empty(), "{name}");
                assert!(!store.blobs().contains(&wrong), "{name}");
                assert!(!store.blobs().contains(&right), "{name}");
            }
            assert_eq!(tmp_entries(&store), 0, "{name}");
        }
    }

    #[test]
    fn corruption_on_disk_is_detected_on_read() {
        let content = b"{\"config\": true}".to_vec();
        let mut flipped = content.clone();
        flipped[3] ^= 0x20;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("same length, one byte flipped", flipped),
            ("truncated", content[..5].to_vec()),
            ("extended", [content.as_slice(), b"!"].concat()),
            ("emptied", Vec::new()),
        ];
        for (name, corrupt) in cases {
            let (_scratch, store) = open_store();
            let digest = store.blobs().put_bytes(&content).unwrap();
            fs::write(store.blobs().path(&digest), &corrupt).unwrap();

            let mut reader = store.blobs().open(&digest).unwrap();
            let mut out = Vec::new();
            let error = reader.read_to_end(&mut out).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{name}");
            assert!(!reader.is_verified(), "{name}");

            match store.blobs().read_to_vec(&digest, 1024) {
                Err(StoreError::DigestMismatch { expected, actual }) => {
                    assert_eq!(expected, digest, "{name}");
                    assert_eq!(actual, Digest::of_bytes(&corrupt), "{name}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn broken_blob_is_replaced_by_a_new_good_copy() {
        let (_scratch, store) = open_store();
        let digest = store.blobs().put_bytes(b"good content").unwrap();
        fs::write(store.blobs().path(&digest), b"bad").unwrap();
        store.blobs().put_bytes(b"good content").unwrap();
        assert_eq!(
            store.blobs().read_to_vec(&digest, 100).unwrap(),
            b"good content"
        );
    }

    #[test]
    fn dropped_writer_leaves_no_temp_file() {
        let (_scratch, store) = open_store();
        let mut writer = store.blobs().writer().unwrap();
        writer.write_all(&[7u8; 200_000]).unwrap();
        assert_eq!(tmp_entries(&store), 1);
        drop(writer);
        assert_eq!(tmp_entries(&store), 0);
        assert!(store.blobs().list().unwrap().is_empty());
    }

    #[test]
    fn read_to_vec_enforces_the_limit() {
        let (_scratch, store) = open_store();
        let digest = store.blobs().put_bytes(&[1u8; 100]).unwrap();
        assert_eq!(store.blobs().read_to_vec(&digest, 100).unwrap().len(), 100);
        match store.blobs().read_to_vec(&digest, 99) {
            Err(StoreError::TooLarge {
                size: 100,
                limit: 99,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_blob_table() {
        let (_scratch, store) = open_store();
        let absent = Digest::of_bytes(b"absent");
        assert!(!store.blobs().contains(&absent));
        assert!(matches!(store.blobs().size(&absent), Err(StoreError::NotFound(d)) if d == absent));
        assert!(matches!(
            store.blobs().open(&absent),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.blobs().read_to_vec(&absent, 10),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.blobs().remove(&absent),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn remove_and_list() {
        let (_scratch, store) = open_store();
        let a = store.blobs().put_bytes(b"a").unwrap();
        let b = store.blobs().put_bytes(b"b").unwrap();
        // Junk in the blob dir is not a blob.
        fs::write(store.root().join("v1/blobs/sha256/not-a-digest"), b"x").unwrap();
        let mut both = vec![a.clone(), b.clone()];
        both.sort();
        assert_eq!(store.blobs().list().unwrap(), both);
        store.blobs().remove(&a).unwrap();
        assert_eq!(store.blobs().list().unwrap(), vec![b]);
        assert!(!store.blobs().contains(&a));
    }

    #[test]
    fn a_blob_that_is_a_symlink_is_not_followed() {
        let (scratch, store) = open_store();
        let outside = scratch.path().join("outside");
        fs::write(&outside, b"secret").unwrap();
        let digest = Digest::of_bytes(b"secret");
        std::os::unix::fs::symlink(&outside, store.blobs().path(&digest)).unwrap();
        assert!(!store.blobs().contains(&digest));
        assert!(store.blobs().open(&digest).is_err());
        assert!(store.blobs().read_to_vec(&digest, 100).is_err());
    }
}
