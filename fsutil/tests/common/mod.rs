//! Shared helpers for the attack and functional tests.
//!
//! * [`Sandbox`]: a temp dir holding a "host" area (`outside/` with
//!   sentinel files, a sentinel next to it) and the extraction root
//!   `root/`. [`Sandbox::snapshot`] records everything outside the root
//!   (type, mode, owner, link count, size, content, symlink target, xattr
//!   names) so a test can assert that an attack changed nothing there.
//! * [`RawTar`]: writes tar entries with raw header names and link targets,
//!   bypassing the `tar` Builder's path checks, so `../evil` and friends can
//!   be produced.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rbuild_fsutil::Root;
use tar::{EntryType, Header};

pub const SENTINEL: &[u8] = b"host sentinel: must never change\n";

pub struct Sandbox {
    _tmp: tempfile::TempDir,
    /// The temp dir (canonical host path).
    pub base: PathBuf,
    /// Host directory outside the root, with `sentinel` and `dir/sentinel`.
    pub outside: PathBuf,
    /// Host path of the root directory (for assertions only).
    pub root_dir: PathBuf,
    pub root: Root,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let base = fs::canonicalize(tmp.path()).unwrap_or_else(|e| panic!("canonicalize: {e}"));
        let outside = base.join("outside");
        fs::create_dir_all(outside.join("dir")).unwrap_or_else(|e| panic!("mkdir: {e}"));
        for p in [
            outside.join("sentinel"),
            outside.join("dir/sentinel"),
            base.join("sentinel"),
        ] {
            fs::write(&p, SENTINEL).unwrap_or_else(|e| panic!("write {p:?}: {e}"));
        }
        let root_dir = base.join("root");
        fs::create_dir(&root_dir).unwrap_or_else(|e| panic!("mkdir root: {e}"));
        let root = Root::open(&root_dir).unwrap_or_else(|e| panic!("open root: {e}"));
        Sandbox {
            _tmp: tmp,
            base,
            outside,
            root_dir,
            root,
        }
    }

    /// Everything under `base` except the root, described in a comparable way.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.base.clone()];
        while let Some(dir) = stack.pop() {
            let rd = fs::read_dir(&dir).unwrap_or_else(|e| panic!("read_dir {dir:?}: {e}"));
            for entry in rd {
                let path = entry.unwrap_or_else(|e| panic!("entry: {e}")).path();
                if path == self.root_dir {
                    continue;
                }
                let md =
                    fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("stat {path:?}: {e}"));
                let ft = md.file_type();
                let mut desc = format!(
                    "mode={:o} uid={} gid={} nlink={} size={} mtime={}",
                    md.mode(),
                    md.uid(),
                    md.gid(),
                    md.nlink(),
                    md.size(),
                    md.mtime()
                );
                if ft.is_symlink() {
                    desc += &format!(" -> {:?}", fs::read_link(&path).ok());
                } else if ft.is_file() {
                    desc += &format!(" content={:?}", fs::read(&path).ok());
                } else if ft.is_dir() {
                    stack.push(path.clone());
                } else if ft.is_char_device() || ft.is_block_device() {
                    desc += &format!(" rdev={}", md.rdev());
                }
                desc += &format!(" xattrs={:?}", xattr_names(&path));
                out.insert(path, desc);
            }
        }
        out
    }

    /// Assert nothing outside the root changed since `before`, and that no
    /// file named `token` appeared in the usual escape targets.
    pub fn assert_untouched(&self, before: &BTreeMap<PathBuf, String>, token: &str) {
        let after = self.snapshot();
        if &after != before {
            let mut diff = String::new();
            for (k, v) in before {
                if after.get(k) != Some(v) {
                    diff += &format!("changed/removed {k:?}: {v} => {:?}\n", after.get(k));
                }
            }
            for (k, v) in &after {
                if !before.contains_key(k) {
                    diff += &format!("created {k:?}: {v}\n");
                }
            }
            panic!("the host area outside the root changed:\n{diff}");
        }
        for dir in [
            Path::new("/"),
            Path::new("/tmp"),
            Path::new("/etc"),
            self.base.as_path(),
            self.outside.as_path(),
        ] {
            let p = dir.join(token);
            assert!(fs::symlink_metadata(&p).is_err(), "escaped: {p:?} exists");
        }
        for p in [
            self.outside.join("sentinel"),
            self.outside.join("dir/sentinel"),
            self.base.join("sentinel"),
        ] {
            assert_eq!(
                fs::read(&p).ok().as_deref(),
                Some(SENTINEL),
                "sentinel {p:?} changed"
            );
        }
    }

    /// The host path of `rel` in the root, for assertions only.
    pub fn in_root(&self, rel: &str) -> PathBuf {
        self.root_dir.join(rel.trim_start_matches('/'))
    }

    /// Substitute `{OUTSIDE}` and `{BASE}` with the host paths.
    pub fn expand(&self, s: &str) -> String {
        s.replace("{OUTSIDE}", &self.outside.to_string_lossy())
            .replace("{BASE}", &self.base.to_string_lossy())
    }
}

fn xattr_names(p: &Path) -> Vec<String> {
    let mut buf = vec![0u8; 4096];
    match rustix::fs::llistxattr(p, &mut buf[..]) {
        Ok(n) => buf[..n]
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A name nobody else uses, so escapes into `/`, `/tmp`, ... are detectable.
pub fn token() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "rbuild-fsutil-escape-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Read a `trusted.*`/`user.*` xattr of a host path without following it.
pub fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    rustix::fs::lgetxattr(p, name, &mut buf[..])
        .ok()
        .map(|n| buf[..n].to_vec())
}

/// A tar writer that puts names and link targets into headers verbatim.
pub struct RawTar {
    b: tar::Builder<Vec<u8>>,
    uid: u64,
    gid: u64,
    mtime: u64,
}

impl Default for RawTar {
    fn default() -> Self {
        RawTar::new()
    }
}

impl RawTar {
    pub fn new() -> RawTar {
        RawTar {
            b: tar::Builder::new(Vec::new()),
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
        }
    }

    /// Owner for the following entries.
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// mtime for the following entries.
    pub fn mtime(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }

    pub fn header(&self, name: &[u8], ty: EntryType, size: u64, mode: u32) -> Header {
        assert!(name.len() <= 100, "raw names must fit the 100-byte field");
        let mut h = Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(ty);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(self.uid);
        h.set_gid(self.gid);
        h.set_mtime(self.mtime);
        h
    }

    /// Append a header (checksum fixed up) and its data.
    pub fn raw(mut self, mut h: Header, data: &[u8]) -> Self {
        h.set_cksum();
        self.b
            .append(&h, data)
            .unwrap_or_else(|e| panic!("append: {e}"));
        self
    }

    pub fn file(self, name: &str, data: &[u8]) -> Self {
        self.file_mode(name, data, 0o644)
    }

    pub fn file_mode(self, name: &str, data: &[u8], mode: u32) -> Self {
        let h = self.header(name.as_bytes(), EntryType::Regular, data.len() as u64, mode);
        self.raw(h, data)
    }

    pub fn dir(self, name: &str) -> Self {
        self.dir_mode(name, 0o755)
    }

    pub fn dir_mode(self, name: &str, mode: u32) -> Self {
        let h = self.header(name.as_bytes(), EntryType::Directory, 0, mode);
        self.raw(h, &[])
    }

    fn with_link(self, name: &str, ty: EntryType, target: &str) -> Self {
        assert!(
            target.len() <= 100,
            "raw link targets must fit the 100-byte field"
        );
        let mut h = self.header(name.as_bytes(), ty, 0, 0o777);
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        self.raw(h, &[])
    }

    pub fn symlink(self, name: &str, target: &str) -> Self {
        self.with_link(name, EntryType::Symlink, target)
    }

    pub fn hardlink(self, name: &str, target: &str) -> Self {
        self.with_link(name, EntryType::Link, target)
    }

    pub fn node(self, name: &str, ty: EntryType, mode: u32, major: u32, minor: u32) -> Self {
        let mut h = self.header(name.as_bytes(), ty, 0, mode);
        h.set_device_major(major)
            .unwrap_or_else(|e| panic!("major: {e}"));
        h.set_device_minor(minor)
            .unwrap_or_else(|e| panic!("minor: {e}"));
        self.raw(h, &[])
    }

    /// A PAX extended header applying to the next entry.
    pub fn pax(mut self, records: &[(&str, &[u8])]) -> Self {
        self.b
            .append_pax_extensions(records.iter().copied())
            .unwrap_or_else(|e| panic!("pax: {e}"));
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.b
            .into_inner()
            .unwrap_or_else(|e| panic!("finish: {e}"))
    }
}
