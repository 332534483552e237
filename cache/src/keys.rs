//! A key index: small records under sha256 keys, opaque to this crate. The store has two: the
//! cache-key index — what a build step with a given cache key produced, so that a later build
//! (in any process) can reuse it instead of running the step again — and the index of layers'
//! compressed copies (which blob compressing a layer gave).
//!
//! ```text
//! v1/cachekeys/<hex of the key>   the step's result record
//! v1/compressed/<hex of the key>  a compressed copy's descriptor
//! ```
//!
//! A record is written atomically (temp file, fsync, rename, directory fsync) *after* what it
//! points at (layer blob, snapshot) is complete, so a crash leaves either no record or a
//! complete one. Readers must still check that what a record names exists — a prune may have
//! removed it since.

use std::path::PathBuf;

use crate::digest::Digest;
use crate::error::StoreError;
use crate::fsx::{self, read_small_file, write_file_atomic};

/// The most a record may hold.
pub const MAX_RECORD_BYTES: u64 = 64 << 10;

/// A key index of a store (the cache keys, or the compressed copies of layers).
#[derive(Debug)]
pub struct KeyIndex {
    dir: PathBuf,
    tmp: PathBuf,
}

impl KeyIndex {
    pub(crate) fn new(dir: PathBuf, tmp: PathBuf) -> KeyIndex {
        KeyIndex { dir, tmp }
    }

    fn path(&self, key: &Digest) -> PathBuf {
        self.dir.join(key.hex())
    }

    /// The record stored for `key`, if any.
    pub fn get(&self, key: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        read_small_file(&self.path(key), MAX_RECORD_BYTES)
    }

    /// Stores `record` for `key`, replacing an older one.
    pub fn put(&self, key: &Digest, record: &[u8]) -> Result<(), StoreError> {
        if record.len() as u64 > MAX_RECORD_BYTES {
            return Err(StoreError::corrupt(
                &self.path(key),
                format!("a cache record is larger than {MAX_RECORD_BYTES} bytes"),
            ));
        }
        write_file_atomic(&self.tmp, &self.path(key), record, 0o600)
    }

    /// Forgets `key`.
    pub fn remove(&self, key: &Digest) -> Result<(), StoreError> {
        match std::fs::remove_file(self.path(key)) {
            Ok(()) => Ok(()),
            Err(e) if fsx::is_not_found(&e) => Ok(()),
            Err(e) => Err(StoreError::io(&self.path(key), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Digest, Store};

    #[test]
    fn records_round_trip_and_survive_reopening() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let key = Digest::of_bytes(b"step");
        {
            let store = Store::open(tmp.path())?;
            assert_eq!(store.cache_keys().get(&key)?, None);
            store.cache_keys().put(&key, b"{\"layer\":null}")?;
            // The store's two indexes are apart.
            assert_eq!(store.compressed_layers().get(&key)?, None);
            store.compressed_layers().put(&key, b"{}")?;
        }
        let store = Store::open(tmp.path())?;
        assert_eq!(
            store.cache_keys().get(&key)?.as_deref(),
            Some(&b"{\"layer\":null}"[..])
        );
        store.cache_keys().remove(&key)?;
        assert_eq!(store.cache_keys().get(&key)?, None);
        assert_eq!(
            store.compressed_layers().get(&key)?.as_deref(),
            Some(&b"{}"[..])
        );
        let big = vec![0u8; (super::MAX_RECORD_BYTES + 1) as usize];
        assert!(store.cache_keys().put(&key, &big).is_err());
        Ok(())
    }
}
