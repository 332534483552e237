//! The persistent per-file digest index: a file's identity and change stamps ([`FileKey`]: device,
//! inode, size, mtime, ctime) → the digest of its content, so that an unchanged file of a build
//! context is never read again. [`FileDigests`] is the interface the executor's
//! `COPY`/`ADD` checksum consults; [`FileIndex`] implements it on disk, one file per context
//! directory, and [`NoIndex`] hashes every time.
//!
//! ```text
//! <root>/v1/file-index/<sha256 hex of the context directory's canonical path>
//! ```
//!
//! The file is binary and self-checking: the magic `RBFIDX` and format version, the entry count,
//! fixed-size little-endian records (`dev ino size mtime_ns ctime_ns digest`, 88 bytes each),
//! then the sha256 of everything before it. A file that is missing, truncated, too big, of
//! another version or whose checksum does not match is ignored: the index starts empty and the
//! next [`FileIndex::save`] replaces it. Saving writes a temporary file in the store's `tmp/`
//! and renames it into place, so a reader sees the old or the new index, never a mix; it is not
//! synced (a crash can at worst leave a torn file, which its checksum rejects); a crash leaves a
//! stale temporary that `remove_stale_temporaries` deletes. [`FileIndex::load`] reads the file
//! on a thread of its own, while the build walks its context: the first lookup waits for it
//! ([`FileDigests::ready`] says whether it would). The file is mapped whole (index files are
//! only ever replaced by rename, never changed in place) and looked up in place through a
//! table of record numbers: nothing is copied or allocated per entry.
//!
//! The index stays bounded by the context: [`FileIndex::save`] keeps only the entries looked up
//! or stored since it was loaded. Keys carry the ctime, which every change of content, mode,
//! owner or xattrs moves (and which no user can set), so a file rewritten with the same size and
//! mtime gets a new key. The digest stored is whatever the producer defines (the executor's:
//! sha256 of the content, combined with the xattrs when there are some); the index only keeps
//! it.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;

use crate::digest::{Digest, DigestWriter};
use crate::error::{IoResultExt, StoreError};
use crate::fsx::{self, TempEntry};
use crate::store::{Store, LAYOUT_DIR};

/// A regular file's identity and change stamps: if none of them changed, its content did not
/// either (a write moves mtime and ctime; a replacement changes the inode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// `st_size`.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Status-change time, nanoseconds since the epoch.
    pub ctime_ns: i128,
}

impl FileKey {
    /// The key of a file from its `stat`.
    pub fn from_metadata(md: &fs::Metadata) -> FileKey {
        FileKey {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime_ns: i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
            ctime_ns: i128::from(md.ctime()) * 1_000_000_000 + i128::from(md.ctime_nsec()),
        }
    }
}

/// Digests of files by identity, so an unchanged file is never read twice. Implemented
/// persistently by [`FileIndex`]; [`NoIndex`] remembers nothing. Shared by the threads of a
/// parallel walk.
pub trait FileDigests: Sync {
    /// The digest recorded for `key`, if any.
    fn get(&self, key: &FileKey) -> Option<[u8; 32]>;
    /// Records the digest of the file `key` names.
    fn put(&self, key: FileKey, digest: [u8; 32]);
    /// Whether [`FileDigests::get`] answers at once: an index still being read makes it wait,
    /// and a caller with other work to do may rather ask later.
    fn ready(&self) -> bool {
        true
    }
}

/// A [`FileDigests`] that remembers nothing: every file is hashed every time.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoIndex;

impl FileDigests for NoIndex {
    fn get(&self, _key: &FileKey) -> Option<[u8; 32]> {
        None
    }

    fn put(&self, _key: FileKey, _digest: [u8; 32]) {}
}

/// The directory of the index files under the layout directory.
const INDEX_DIR: &str = "file-index";
/// Magic and format version at the start of an index file.
const MAGIC: &[u8; 8] = b"RBFIDX\x00\x01";
/// Bytes of one record: dev, ino, size (u64 each), mtime, ctime (i128 each), digest.
const RECORD_LEN: usize = 8 * 3 + 16 * 2 + 32;
/// Bytes before the records: the magic and the entry count.
const HEADER_LEN: usize = MAGIC.len() + 8;
/// Bytes after the records: the sha256 of everything before.
const TRAILER_LEN: usize = 32;
/// The most entries an index file may hold (about 700 MiB of index); a bigger file is ignored.
const MAX_ENTRIES: u64 = 8 << 20;
/// Lock shards of the map of new digests, so that a parallel walk does not serialise on one
/// lock.
const SHARDS: usize = 16;

type Map = HashMap<FileKey, [u8; 32], KeyHash>;

/// Hashes [`FileKey`]s (integers the local filesystem hands out, not attacker-chosen strings)
/// with one multiply per word instead of SipHash: index maps of 100,000s of keys are built and
/// probed on every build.
type KeyHash = BuildHasherDefault<KeyHasher>;

/// See [`KeyHash`] (the multiply-rotate step of rustc's `FxHasher`).
#[derive(Default)]
struct KeyHasher(u64);

impl KeyHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_i128(&mut self, n: i128) {
        self.add(n as u64);
        self.add((n >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The entries of an index file as read: its records in one buffer, found through an
/// open-addressing table of record numbers, and whether this run looked each up. Nothing is
/// allocated per entry: an index of 100,000s of entries is read on every build.
#[derive(Debug, Default)]
struct Loaded {
    /// The file's bytes: `count` records of `RECORD_LEN` bytes from `start` (none for an
    /// index that could not be read).
    bytes: Option<Mapped>,
    start: usize,
    count: usize,
    /// Record number + 1 per slot, 0 for an empty slot; a power of two long, at least one
    /// slot in four empty (linear probing).
    slots: Vec<u32>,
    /// Per record: looked up in this run.
    seen: Vec<AtomicBool>,
}

impl Loaded {
    /// The `count` records of `bytes` from `start` (fewer than `u32::MAX`); of equal keys the
    /// last wins.
    fn new(bytes: Mapped, start: usize, count: usize) -> Option<Loaded> {
        bytes
            .bytes()
            .get(start..start.checked_add(count.checked_mul(RECORD_LEN)?)?)?;
        let bytes = Some(bytes);
        let wanted = count.checked_add(count / 3)?.checked_add(1)?;
        let slots_len = wanted.checked_next_power_of_two()?;
        let mut loaded = Loaded {
            bytes,
            start,
            count,
            slots: vec![0; slots_len],
            seen: Vec::new(),
        };
        for n in 0..count {
            let key = loaded.key(n)?;
            let number = u32::try_from(n + 1).ok()?;
            let slot = loaded.probe(&key);
            *loaded.slots.get_mut(slot)? = number;
        }
        loaded.seen = (0..count).map(|_| AtomicBool::new(false)).collect();
        Some(loaded)
    }

    fn record(&self, n: usize) -> Option<&[u8; RECORD_LEN]> {
        if n >= self.count {
            return None;
        }
        let start = self.start + n * RECORD_LEN;
        self.bytes
            .as_ref()?
            .bytes()
            .get(start..start + RECORD_LEN)?
            .try_into()
            .ok()
    }

    fn key(&self, n: usize) -> Option<FileKey> {
        decode(self.record(n)?).map(|(key, _)| key)
    }

    /// The slot that holds `key`, or the empty slot where it would go.
    fn probe(&self, key: &FileKey) -> usize {
        let mask = self.slots.len().wrapping_sub(1);
        let mut hasher = KeyHasher::default();
        key.hash(&mut hasher);
        // The multiply leaves the low bits depending on the inputs' low bits only: mixed
        // (murmur3's finaliser) before they pick the slot, or similar keys cluster.
        let mut h = hasher.finish();
        h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h = (h ^ (h >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        let mut slot = (h as usize) & mask;
        // At least one slot in four is empty: the probe ends.
        loop {
            match self.slots.get(slot) {
                Some(0) | None => return slot,
                Some(&number) => {
                    if self.key(number as usize - 1).as_ref() == Some(key) {
                        return slot;
                    }
                }
            }
            slot = (slot + 1) & mask;
        }
    }

    /// The record number and digest of `key`.
    ///
    /// Records are sorted by key, and a walk tends to look files up in inode order (files
    /// created one after the other, listed by name): the record after the one a thread found
    /// last is tried first, which turns most lookups into a sequential read instead of two
    /// random ones (cache and TLB misses are most of a lookup's cost).
    fn get(&self, key: &FileKey) -> Option<(usize, [u8; 32])> {
        thread_local! {
            static NEXT: Cell<usize> = const { Cell::new(0) };
        }
        let next = NEXT.get();
        if let Some((found, digest)) = self.record(next).and_then(decode) {
            if found == *key {
                NEXT.set(next + 1);
                return Some((next, digest));
            }
        }
        let number = *self.slots.get(self.probe(key))?;
        let n = (number as usize).checked_sub(1)?;
        let (_, digest) = decode(self.record(n)?)?;
        NEXT.set(n + 1);
        Some((n, digest))
    }

    fn contains_key(&self, key: &FileKey) -> bool {
        self.get(key).is_some()
    }

    /// Whether some entry of the table was not looked up.
    fn any_unseen(&self) -> bool {
        self.slots.iter().any(|&number| {
            (number as usize)
                .checked_sub(1)
                .and_then(|n| self.seen.get(n))
                .is_some_and(|seen| !seen.load(Ordering::Relaxed))
        })
    }

    /// The entries the table holds, and whether each was looked up.
    fn entries(&self) -> impl Iterator<Item = (FileKey, [u8; 32], bool)> + '_ {
        self.slots.iter().filter_map(move |&number| {
            let n = (number as usize).checked_sub(1)?;
            let (key, digest) = decode(self.record(n)?)?;
            let seen = self.seen.get(n)?.load(Ordering::Relaxed);
            Some((key, digest, seen))
        })
    }
}

/// The persistent [`FileDigests`] of one build context (see the [module docs](self)).
///
/// [`FileIndex::load`] reads what earlier runs saved; lookups and new digests are recorded in
/// memory (safe to share between threads); [`FileIndex::save`] writes back the entries of this
/// run only.
#[derive(Debug)]
pub struct FileIndex {
    path: PathBuf,
    tmp_dir: PathBuf,
    /// What the file held when loaded (looking an entry up marks it seen, without a lock); set
    /// from `loader` on first use.
    loaded: OnceLock<Loaded>,
    /// The thread reading the file.
    loader: Mutex<Option<JoinHandle<Option<Loaded>>>>,
    /// Digests stored in this run.
    added: Vec<Mutex<Map>>,
    /// Some stored digest replaces a loaded one: lookups must check `added` first.
    replaced: AtomicBool,
}

impl FileIndex {
    /// The index of the context directory `scope` in `store`: what earlier runs saved, or an
    /// empty index when there is none or it cannot be read (a corrupt or truncated file is
    /// ignored, never an error).
    pub fn load(store: &Store, scope: &Path) -> FileIndex {
        let layout = store.root().join(LAYOUT_DIR);
        let canonical = fs::canonicalize(scope).unwrap_or_else(|_| scope.to_path_buf());
        let name = Digest::of_bytes(canonical.as_os_str().as_encoded_bytes())
            .hex()
            .to_owned();
        let path = layout.join(INDEX_DIR).join(name);
        let loaded = OnceLock::new();
        let reading = path.clone();
        let loader = match std::thread::Builder::new()
            .name("file-index".into())
            .spawn(move || read_index(&reading))
        {
            Ok(handle) => Some(handle),
            Err(_) => {
                let _ = loaded.set(read_index(&path).unwrap_or_default());
                None
            }
        };
        FileIndex {
            path,
            tmp_dir: layout.join("tmp"),
            loaded,
            loader: Mutex::new(loader),
            added: (0..SHARDS).map(|_| Mutex::new(Map::default())).collect(),
            replaced: AtomicBool::new(false),
        }
    }

    /// The index file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many entries the index held when it was loaded.
    pub fn loaded_len(&self) -> usize {
        self.loaded().entries().count()
    }

    /// How many entries [`FileIndex::save`] would write: those looked up or stored so far.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether [`FileIndex::save`] would write no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the entries looked up or stored since [`FileIndex::load`] back to the store,
    /// atomically (entries of files this run did not see are dropped, which keeps the index
    /// bounded by what builds use). Nothing is written when the run neither added an entry
    /// nor left one unseen. The file is not synced: a crash can at worst leave a torn file,
    /// which its checksum rejects (the files are then hashed again).
    pub fn save(&self) -> Result<(), StoreError> {
        if !self.changed() {
            return Ok(());
        }
        let entries = self.entries();
        let dir = fsx::parent_of(&self.path);
        fsx::ensure_private_dir(dir)?;
        let (file, temp_path) = fsx::create_temp_file(&self.tmp_dir, "file-index-", 0o600)?;
        let temp = TempEntry::new(temp_path);
        let mut out = DigestWriter::new(BufWriter::with_capacity(256 * 1024, file));
        let count = entries.len() as u64;
        out.write_all(MAGIC).at(temp.path())?;
        out.write_all(&count.to_le_bytes()).at(temp.path())?;
        for (key, digest) in &entries {
            out.write_all(&encode(key, digest)).at(temp.path())?;
        }
        let (mut inner, checksum, _) = out.finish();
        inner.write_all(&checksum.sha256_bytes()).at(temp.path())?;
        let file = inner
            .into_inner()
            .map_err(|e| StoreError::io(temp.path(), e.into_error()))?;
        drop(file);
        fs::rename(temp.path(), &self.path).at(&self.path)?;
        temp.keep();
        Ok(())
    }

    /// Whether saving would write something other than what was loaded.
    fn changed(&self) -> bool {
        self.added.iter().any(|shard| !lock(shard).is_empty()) || self.loaded().any_unseen()
    }

    /// The entries of this run, sorted by key (a digest stored in this run wins over a loaded
    /// one).
    fn entries(&self) -> Vec<(FileKey, [u8; 32])> {
        let mut entries: Vec<(FileKey, [u8; 32])> = Vec::new();
        for shard in &self.added {
            entries.extend(lock(shard).iter().map(|(k, d)| (*k, *d)));
        }
        entries.extend(
            self.loaded()
                .entries()
                .filter(|(_, _, seen)| *seen)
                .map(|(k, d, _)| (k, d)),
        );
        // Stable: for equal keys the added entry, pushed first, stays first.
        entries.sort_by_key(|a| a.0);
        entries.dedup_by_key(|a| a.0);
        entries
    }

    /// The entries of the file, once the loader thread is done (an index that could not be
    /// read, or whose thread failed, is empty).
    fn loaded(&self) -> &Loaded {
        self.loaded.get_or_init(|| {
            let handle = self
                .loader
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            handle
                .and_then(|h| h.join().ok().flatten())
                .unwrap_or_default()
        })
    }

    fn shard(&self, key: &FileKey) -> &Mutex<Map> {
        let mixed = key.ino ^ key.dev.rotate_left(29) ^ key.size.rotate_left(47);
        &self.added[(mixed % SHARDS as u64) as usize]
    }
}

impl FileDigests for FileIndex {
    fn get(&self, key: &FileKey) -> Option<[u8; 32]> {
        if self.replaced.load(Ordering::Acquire) {
            if let Some(digest) = lock(self.shard(key)).get(key) {
                return Some(*digest);
            }
        }
        let loaded = self.loaded();
        if let Some((n, digest)) = loaded.get(key) {
            if let Some(seen) = loaded.seen.get(n) {
                seen.store(true, Ordering::Relaxed);
            }
            return Some(digest);
        }
        lock(self.shard(key)).get(key).copied()
    }

    fn ready(&self) -> bool {
        if self.loaded.get().is_some() {
            return true;
        }
        let finished = match self.loader.try_lock() {
            Ok(loader) => loader.as_ref().is_none_or(JoinHandle::is_finished),
            Err(_) => false,
        };
        if finished {
            self.loaded();
        }
        finished
    }

    fn put(&self, key: FileKey, digest: [u8; 32]) {
        let mut shard = lock(self.shard(&key));
        if self.loaded().contains_key(&key) {
            self.replaced.store(true, Ordering::Release);
        }
        shard.insert(key, digest);
    }
}

/// Locks a shard; a panic of another thread while holding it cannot leave a map half-updated
/// (each operation is one insert), so a poisoned lock is simply taken over.
fn lock(shard: &Mutex<Map>) -> MutexGuard<'_, Map> {
    shard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The entries of the index file at `path`, or `None` if it is missing or not a valid index.
/// The file is mapped whole and checked before any entry is used.
fn read_index(path: &Path) -> Option<Loaded> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let md = file.metadata().ok()?;
    if !md.is_file() {
        return None;
    }
    let max_len = (HEADER_LEN + TRAILER_LEN) as u64 + MAX_ENTRIES * RECORD_LEN as u64;
    if md.len() < (HEADER_LEN + TRAILER_LEN) as u64 || md.len() > max_len {
        return None;
    }
    let mapped = Mapped::of(&file, usize::try_from(md.len()).ok()?)?;
    let bytes = mapped.bytes();
    let (header, rest) = bytes.split_at_checked(HEADER_LEN)?;
    if &header[..MAGIC.len()] != MAGIC {
        return None;
    }
    let count = u64::from_le_bytes(header.get(MAGIC.len()..)?.try_into().ok()?);
    if count > MAX_ENTRIES || rest.len() as u64 != count * RECORD_LEN as u64 + TRAILER_LEN as u64 {
        return None;
    }
    let (body, trailer) = bytes.split_at_checked(bytes.len() - TRAILER_LEN)?;
    if Digest::of_bytes(body) != Digest::from_sha256(trailer.try_into().ok()?) {
        return None;
    }
    Loaded::new(mapped, HEADER_LEN, usize::try_from(count).ok()?)
}

/// An index file mapped read-only into memory, whole: its bytes are read in place, with no
/// copy and no page faults of a fresh buffer (`MAP_POPULATE`). Index files are never written
/// in place: [`FileIndex::save`] renames a new file over the old one, which stays as it was
/// for those who mapped it.
#[derive(Debug)]
struct Mapped {
    ptr: std::ptr::NonNull<std::ffi::c_void>,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value: sharing or moving it between
// threads is sharing an immutable byte slice.
#[allow(unsafe_code)]
unsafe impl Send for Mapped {}
// SAFETY: as for `Send`.
#[allow(unsafe_code)]
unsafe impl Sync for Mapped {}

impl Mapped {
    /// The first `len` bytes of `file` (`None` for an empty file or a failed `mmap`).
    #[allow(unsafe_code)]
    fn of(file: &fs::File, len: usize) -> Option<Mapped> {
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        let length = std::num::NonZeroUsize::new(len)?;
        // SAFETY: a new private read-only mapping of an open file, at an address the kernel
        // chooses: no existing memory is affected. It is unmapped only by `Drop`.
        let ptr = unsafe {
            mmap(
                None,
                length,
                ProtFlags::PROT_READ,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_POPULATE,
                file,
                0,
            )
        }
        .ok()?;
        Some(Mapped { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives; the store's
        // index files are only ever replaced by rename, never changed in place.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>(), self.len)
        }
    }
}

impl Drop for Mapped {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: the mapping made in `Mapped::of`, unmapped once; no slice of it outlives
        // `self`.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr, self.len) };
    }
}

fn encode(key: &FileKey, digest: &[u8; 32]) -> [u8; RECORD_LEN] {
    let mut out = [0u8; RECORD_LEN];
    out[0..8].copy_from_slice(&key.dev.to_le_bytes());
    out[8..16].copy_from_slice(&key.ino.to_le_bytes());
    out[16..24].copy_from_slice(&key.size.to_le_bytes());
    out[24..40].copy_from_slice(&key.mtime_ns.to_le_bytes());
    out[40..56].copy_from_slice(&key.ctime_ns.to_le_bytes());
    out[56..88].copy_from_slice(digest);
    out
}

fn decode(record: &[u8; RECORD_LEN]) -> Option<(FileKey, [u8; 32])> {
    let key = FileKey {
        dev: u64::from_le_bytes(record[0..8].try_into().ok()?),
        ino: u64::from_le_bytes(record[8..16].try_into().ok()?),
        size: u64::from_le_bytes(record[16..24].try_into().ok()?),
        mtime_ns: i128::from_le_bytes(record[24..40].try_into().ok()?),
        ctime_ns: i128::from_le_bytes(record[40..56].try_into().ok()?),
    };
    Some((key, record[56..88].try_into().ok()?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::time::{Duration, SystemTime};

    fn key(n: u64) -> FileKey {
        FileKey {
            dev: 7,
            ino: n,
            size: n * 10,
            mtime_ns: 1_700_000_000_000_000_000 + i128::from(n),
            ctime_ns: 1_700_000_000_500_000_000 - i128::from(n),
        }
    }

    fn digest(n: u8) -> [u8; 32] {
        [n; 32]
    }

    fn setup() -> (tempfile::TempDir, Store, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("store")).unwrap();
        let ctx = tmp.path().join("ctx");
        fs::create_dir(&ctx).unwrap();
        (tmp, store, ctx)
    }

    #[test]
    fn round_trip_keeps_exactly_the_entries_of_the_run() {
        let (_tmp, store, ctx) = setup();
        let index = FileIndex::load(&store, &ctx);
        assert_eq!(index.loaded_len(), 0);
        for n in 1..=3 {
            assert_eq!(index.get(&key(n)), None);
            index.put(key(n), digest(n as u8));
        }
        index.save().unwrap();
        // No temporary is left behind.
        let tmp_dir = store.root().join(LAYOUT_DIR).join("tmp");
        assert_eq!(fs::read_dir(&tmp_dir).unwrap().count(), 0);

        let again = FileIndex::load(&store, &ctx);
        assert_eq!(again.loaded_len(), 3);
        assert_eq!(again.path(), index.path());
        for n in 1..=3 {
            assert_eq!(again.get(&key(n)), Some(digest(n as u8)), "entry {n}");
        }
        assert_eq!(again.get(&key(4)), None);

        // A run that sees only entry 2 (and adds 5) saves only those.
        let third = FileIndex::load(&store, &ctx);
        assert_eq!(third.get(&key(2)), Some(digest(2)));
        third.put(key(5), digest(5));
        assert_eq!(third.len(), 2);
        third.save().unwrap();
        let fourth = FileIndex::load(&store, &ctx);
        assert_eq!(fourth.loaded_len(), 2);
        assert_eq!(fourth.get(&key(1)), None);
        assert_eq!(fourth.get(&key(2)), Some(digest(2)));
        assert_eq!(fourth.get(&key(5)), Some(digest(5)));

        // A digest stored again replaces the loaded one, once.
        fourth.put(key(2), digest(22));
        assert_eq!(fourth.get(&key(2)), Some(digest(22)));
        assert_eq!(fourth.get(&key(5)), Some(digest(5)));
        assert_eq!(fourth.len(), 2);
        fourth.save().unwrap();
        let fifth = FileIndex::load(&store, &ctx);
        assert_eq!(fifth.loaded_len(), 2);
        assert_eq!(fifth.get(&key(2)), Some(digest(22)));
    }

    #[test]
    fn each_context_has_its_own_index() {
        let (tmp, store, ctx) = setup();
        let other = tmp.path().join("other");
        fs::create_dir(&other).unwrap();
        let a = FileIndex::load(&store, &ctx);
        a.put(key(1), digest(1));
        a.save().unwrap();
        let b = FileIndex::load(&store, &other);
        assert_ne!(a.path(), b.path());
        assert_eq!(b.get(&key(1)), None);
        // The same directory through a symlink is the same context.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&ctx, &link).unwrap();
        assert_eq!(FileIndex::load(&store, &link).get(&key(1)), Some(digest(1)));
    }

    #[test]
    fn damaged_index_files_are_ignored() {
        let (_tmp, store, ctx) = setup();
        let index = FileIndex::load(&store, &ctx);
        for n in 1..=4 {
            index.put(key(n), digest(n as u8));
        }
        index.save().unwrap();
        let path = index.path().to_path_buf();
        let good = fs::read(&path).unwrap();
        assert_eq!(good.len(), HEADER_LEN + 4 * RECORD_LEN + TRAILER_LEN);

        let mut flipped = good.clone();
        flipped[HEADER_LEN + RECORD_LEN + 60] ^= 0x40;
        let mut huge_count = good.clone();
        huge_count[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let mut wrong_count = good.clone();
        wrong_count[8..16].copy_from_slice(&3u64.to_le_bytes());
        let mut other_version = good.clone();
        other_version[7] = 2;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("garbage", b"not an index at all".to_vec()),
            (
                "truncated record",
                good[..good.len() - TRAILER_LEN - 5].to_vec(),
            ),
            ("truncated trailer", good[..good.len() - 1].to_vec()),
            ("header only", good[..HEADER_LEN].to_vec()),
            ("flipped digest byte", flipped),
            ("huge count", huge_count),
            ("count disagrees with length", wrong_count),
            ("other version", other_version),
            ("extra bytes", [good.clone(), vec![0; 3]].concat()),
        ];
        for (name, bytes) in cases {
            fs::write(&path, &bytes).unwrap();
            let loaded = FileIndex::load(&store, &ctx);
            assert_eq!(loaded.loaded_len(), 0, "{name}");
            assert_eq!(loaded.get(&key(1)), None, "{name}");
            // And it can be saved over.
            loaded.put(key(9), digest(9));
            loaded.save().unwrap();
            assert_eq!(
                FileIndex::load(&store, &ctx).get(&key(9)),
                Some(digest(9)),
                "{name}"
            );
        }
        // A directory where the file should be is ignored too (and save reports it).
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        let loaded = FileIndex::load(&store, &ctx);
        assert_eq!(loaded.loaded_len(), 0);
        loaded.put(key(9), digest(9));
        assert!(loaded.save().is_err());
    }

    #[test]
    fn a_rewrite_with_the_same_size_and_mtime_has_a_new_key() {
        let (_tmp, store, ctx) = setup();
        let file = ctx.join("f");
        fs::write(&file, b"one").unwrap();
        let first = FileKey::from_metadata(&fs::symlink_metadata(&file).unwrap());
        let index = FileIndex::load(&store, &ctx);
        index.put(first, digest(1));
        index.save().unwrap();

        // The kernel's timestamps advance by clock ticks: wait past one before rewriting.
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&file, b"two").unwrap();
        let mtime = SystemTime::UNIX_EPOCH
            + Duration::new(
                u64::try_from(first.mtime_ns / 1_000_000_000).unwrap(),
                u32::try_from(first.mtime_ns % 1_000_000_000).unwrap(),
            );
        File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let second = FileKey::from_metadata(&fs::symlink_metadata(&file).unwrap());
        assert_eq!(
            (second.dev, second.ino, second.size, second.mtime_ns),
            (first.dev, first.ino, first.size, first.mtime_ns)
        );
        assert_ne!(second.ctime_ns, first.ctime_ns);

        let loaded = FileIndex::load(&store, &ctx);
        assert_eq!(
            loaded.get(&second),
            None,
            "the rewritten file must be re-hashed"
        );
        assert_eq!(loaded.get(&first), Some(digest(1)));
    }

    #[test]
    fn shared_between_threads() {
        let (_tmp, store, ctx) = setup();
        let index = FileIndex::load(&store, &ctx);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let index = &index;
                s.spawn(move || {
                    for n in 0..500 {
                        index.put(key(t * 1000 + n), digest(t as u8));
                    }
                });
            }
        });
        assert_eq!(index.len(), 2000);
        index.save().unwrap();
        let loaded = FileIndex::load(&store, &ctx);
        assert_eq!(loaded.loaded_len(), 2000);
        assert_eq!(loaded.get(&key(3499)), Some(digest(3)));
    }
}
