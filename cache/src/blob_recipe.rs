//! Blobs the store keeps as a *recipe* instead of a file: content it can make again on demand,
//! byte for byte, from something else it holds — a built layer's uncompressed tar, written from
//! the layer's snapshot. Keeping the snapshot alone spares writing (and syncing) a second copy of
//! every layer a build makes, as Docker's image store keeps layers as directories.
//!
//! A recipe is `blobs/sha256-recipes/<hex>`: `{"size": N, "recipe": …}`, written atomically
//! *after* what it names exists. The recipe itself is opaque here; a [`BlobMaker`] registered on
//! the store ([`BlobStore::set_maker`](crate::BlobStore::set_maker)) turns it into bytes. A blob
//! made from a recipe is read like any other: streamed (through a bounded in-process pipe from
//! the maker's thread) and checked against its digest at the end, so a snapshot that no longer
//! gives the same bytes fails loudly instead of passing off other content.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::fsx::{self, read_small_file, write_file_atomic};

/// The most a recipe file may hold.
const MAX_RECIPE_BYTES: u64 = 64 << 10;
/// Size of each chunk between a maker and its reader.
const CHUNK_BYTES: usize = 256 << 10;
/// Chunks in flight between a maker and its reader.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Makes blobs from their recipes.
pub trait BlobMaker: Send + Sync {
    /// Whether `recipe` can be made now (what it is made from still exists).
    fn available(&self, recipe: &serde_json::Value) -> bool;
    /// Writes the content `recipe` describes to `out`.
    fn make(&self, recipe: &serde_json::Value, out: &mut (dyn Write + Send)) -> io::Result<()>;
}

/// Makes the [`BlobMaker`] of a store.
pub type BlobMakerFactory = fn(&crate::Store) -> std::sync::Arc<dyn BlobMaker>;

static DEFAULT_MAKER: std::sync::OnceLock<BlobMakerFactory> = std::sync::OnceLock::new();

/// Registers the factory every [`Store::open`](crate::Store::open) of this process uses to give
/// the store its [`BlobMaker`] (the first registration stays).
pub fn set_default_maker(factory: BlobMakerFactory) {
    let _ = DEFAULT_MAKER.set(factory);
}

pub(crate) fn default_maker() -> Option<BlobMakerFactory> {
    DEFAULT_MAKER.get().copied()
}

/// A recipe file.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RecipeFile {
    /// The size of the blob it makes.
    pub(crate) size: u64,
    /// What the maker needs.
    pub(crate) recipe: serde_json::Value,
}

/// Reads the recipe at `path` (`None` when there is none or it is unreadable).
pub(crate) fn read_recipe(path: &Path) -> Result<Option<RecipeFile>, StoreError> {
    let Some(bytes) = read_small_file(path, MAX_RECIPE_BYTES)? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&bytes).ok())
}

/// Writes a recipe atomically at `path` (its dir made if needed).
pub(crate) fn write_recipe(tmp: &Path, path: &Path, file: &RecipeFile) -> Result<(), StoreError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    }
    let bytes = serde_json::to_vec(file)
        .map_err(|e| StoreError::io(path, io::Error::other(e.to_string())))?;
    write_file_atomic(tmp, path, &bytes, 0o600)
}

/// Removes a recipe; missing is fine.
pub(crate) fn remove_recipe(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if fsx::is_not_found(&e) => Ok(()),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

/// The reading end of a blob being made on another thread.
pub struct MadeBlob {
    chunks: Option<Receiver<io::Result<Vec<u8>>>>,
    current: Vec<u8>,
    pos: usize,
    maker: Option<JoinHandle<()>>,
}

impl MadeBlob {
    /// Starts making `recipe` with `maker` on a thread of its own.
    pub(crate) fn start(
        maker: std::sync::Arc<dyn BlobMaker>,
        recipe: serde_json::Value,
    ) -> io::Result<MadeBlob> {
        let (tx, rx) = sync_channel(CHUNKS_IN_FLIGHT);
        let handle = std::thread::Builder::new()
            .name("blob-maker".into())
            .spawn(move || {
                let mut out = ChunkWriter {
                    tx: tx.clone(),
                    buf: Vec::with_capacity(CHUNK_BYTES),
                };
                let result = maker.make(&recipe, &mut out).and_then(|()| out.flush());
                if let Err(e) = result {
                    // The reader may be gone already; then nobody needs the error.
                    let _ = tx.send(Err(e));
                }
            })?;
        Ok(MadeBlob {
            chunks: Some(rx),
            current: Vec::new(),
            pos: 0,
            maker: Some(handle),
        })
    }
}

impl Read for MadeBlob {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            let Some(rx) = &self.chunks else {
                return Ok(0);
            };
            match rx.recv() {
                Ok(Ok(chunk)) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.chunks = None;
                    return Err(e);
                }
                // The maker finished and hung up: the end.
                Err(_) => {
                    self.chunks = None;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for MadeBlob {
    fn drop(&mut self) {
        // Hanging up first makes a maker still writing fail at its next chunk and end.
        self.chunks = None;
        if let Some(handle) = self.maker.take() {
            let _ = handle.join();
        }
    }
}

impl std::fmt::Debug for MadeBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MadeBlob").finish_non_exhaustive()
    }
}

/// The maker's end: bytes go out in chunks.
struct ChunkWriter {
    tx: SyncSender<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK_BYTES - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK_BYTES {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
        self.tx
            .send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the blob's reader is gone"))
    }
}

/// What [`BlobStore::open`](crate::BlobStore::open) reads: a blob file, or a blob being made.
#[derive(Debug)]
pub enum BlobReader {
    /// A blob file.
    File(std::fs::File),
    /// A blob made from its recipe.
    Made(MadeBlob),
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BlobReader::File(f) => f.read(buf),
            BlobReader::Made(m) => m.read(buf),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::io::Read;
    use std::sync::Arc;

    use super::*;
    use crate::{Digest, Store, StoreError};

    /// Writes `{"repeat": N, "byte": B}` as N copies of byte B.
    struct Repeat;

    impl BlobMaker for Repeat {
        fn available(&self, recipe: &serde_json::Value) -> bool {
            recipe.get("repeat").is_some()
        }

        fn make(&self, recipe: &serde_json::Value, out: &mut (dyn Write + Send)) -> io::Result<()> {
            let n = recipe["repeat"].as_u64().unwrap_or(0);
            let byte = u8::try_from(recipe["byte"].as_u64().unwrap_or(0)).unwrap_or(0);
            let block = [byte; 4096];
            let mut left = n;
            while left > 0 {
                let k = left.min(block.len() as u64) as usize;
                out.write_all(&block[..k])?;
                left -= k as u64;
            }
            Ok(())
        }
    }

    fn content(n: usize, byte: u8) -> (Digest, serde_json::Value) {
        let digest = Digest::of_bytes(&vec![byte; n]);
        (digest, serde_json::json!({"repeat": n, "byte": byte}))
    }

    fn store_with_maker() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s")).unwrap();
        store.blobs().set_maker(Arc::new(Repeat));
        (dir, store)
    }

    #[test]
    fn a_recipe_blob_is_made_when_read_and_checked() {
        let (_dir, store) = store_with_maker();
        // Several chunks, not a multiple of the chunk size.
        let n = 3 * CHUNK_BYTES + 123;
        let (digest, recipe) = content(n, 7);
        store.blobs().put_recipe(&digest, n as u64, recipe).unwrap();
        assert!(store.blobs().contains(&digest));
        assert!(store.blobs().is_recipe(&digest));
        assert_eq!(store.blobs().size(&digest).unwrap(), n as u64);
        assert_eq!(store.blobs().list().unwrap(), vec![digest.clone()]);
        let mut bytes = Vec::new();
        store
            .blobs()
            .open(&digest)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        assert_eq!(bytes, vec![7u8; n]);
        // Made into a file for seeking readers: the same bytes, no longer a recipe.
        let mut file = store.blobs().open_file(&digest).unwrap();
        let mut again = Vec::new();
        file.read_to_end(&mut again).unwrap();
        assert_eq!(again, bytes);
        assert!(!store.blobs().is_recipe(&digest));
        store.blobs().remove(&digest).unwrap();
        assert!(!store.blobs().contains(&digest));
    }

    #[test]
    fn a_recipe_that_makes_other_bytes_fails_at_the_end() {
        let (_dir, store) = store_with_maker();
        let (digest, _) = content(10_000, 1);
        let (_, other) = content(10_000, 2);
        store.blobs().put_recipe(&digest, 10_000, other).unwrap();
        let mut bytes = Vec::new();
        let err = store
            .blobs()
            .open(&digest)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(matches!(
            store.blobs().open_file(&digest),
            Err(StoreError::Io { .. }
                | StoreError::DigestMismatch { .. }
                | StoreError::Corrupt { .. })
        ));
        assert!(store.blobs().is_recipe(&digest), "no file was stored");
    }

    #[test]
    fn a_reader_dropped_early_ends_its_maker() {
        let (_dir, store) = store_with_maker();
        let n = 64 * CHUNK_BYTES;
        let (digest, recipe) = content(n, 3);
        store.blobs().put_recipe(&digest, n as u64, recipe).unwrap();
        let mut reader = store.blobs().open(&digest).unwrap();
        let mut first = [0u8; 100];
        reader.read_exact(&mut first).unwrap();
        // Dropping joins the maker thread, which must notice that nobody reads any more.
        drop(reader);
    }

    #[test]
    fn without_a_maker_or_with_an_unavailable_recipe_the_blob_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s")).unwrap();
        let (digest, recipe) = content(10, 1);
        store.blobs().put_recipe(&digest, 10, recipe).unwrap();
        assert!(!store.blobs().contains(&digest));
        assert!(matches!(
            store.blobs().open(&digest),
            Err(StoreError::NotFound(_))
        ));
        let (_dir2, store) = store_with_maker();
        let (digest, _) = content(10, 1);
        store
            .blobs()
            .put_recipe(&digest, 10, serde_json::json!({"unknown": true}))
            .unwrap();
        assert!(!store.blobs().contains(&digest));
        assert!(matches!(
            store.blobs().size(&digest),
            Err(StoreError::NotFound(_))
        ));
    }
}
