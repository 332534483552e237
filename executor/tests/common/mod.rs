//! Helpers shared by the executor's integration tests: temporary source and destination
//! roots, a listing of a tree (`tree.py` format), and running a copy.

#![allow(dead_code)]

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use rbuild_executor::tree::list_tree;
use rbuild_executor::{copy, CopyOp, CopyStats, ExecError};
use rbuild_fsutil::Root;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;
pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// A scratch area with a source tree (`src/`) and a destination root (`dest/`), plus room
/// around them to check nothing is written outside.
pub struct Env {
    pub tmp: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Res<Env> {
        let tmp = tempfile::tempdir()?;
        std::fs::create_dir(tmp.path().join("src"))?;
        std::fs::create_dir(tmp.path().join("dest"))?;
        std::fs::set_permissions(
            tmp.path().join("src"),
            std::fs::Permissions::from_mode(0o755),
        )?;
        std::fs::set_permissions(
            tmp.path().join("dest"),
            std::fs::Permissions::from_mode(0o755),
        )?;
        Ok(Env { tmp })
    }

    pub fn src_path(&self) -> PathBuf {
        self.tmp.path().join("src")
    }

    pub fn dest_path(&self) -> PathBuf {
        self.tmp.path().join("dest")
    }

    pub fn src(&self) -> Res<Root> {
        Ok(Root::open(&self.src_path())?)
    }

    pub fn dest(&self) -> Res<Root> {
        Ok(Root::open(&self.dest_path())?)
    }

    /// Writes a source file (parents created) with `mode`.
    pub fn file(&self, rel: &str, content: &str, mode: u32) -> Res<()> {
        write(&self.src_path(), rel, content, mode)
    }

    pub fn dir(&self, rel: &str, mode: u32) -> Res<()> {
        mkdir(&self.src_path(), rel, mode)
    }

    pub fn link(&self, target: &str, rel: &str) -> Res<()> {
        let p = self.src_path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        symlink(target, p)?;
        Ok(())
    }

    /// Writes a file into the destination root (parents created).
    pub fn dest_file(&self, rel: &str, content: &str, mode: u32) -> Res<()> {
        write(&self.dest_path(), rel, content, mode)
    }

    pub fn dest_dir(&self, rel: &str, mode: u32) -> Res<()> {
        mkdir(&self.dest_path(), rel, mode)
    }

    pub fn dest_link(&self, target: &str, rel: &str) -> Res<()> {
        symlink(target, self.dest_path().join(rel))?;
        Ok(())
    }

    /// Runs `op` from `src/` into `dest/`.
    pub fn copy(&self, op: &CopyOp) -> Result<CopyStats, ExecError> {
        let src = self
            .src()
            .map_err(|e| ExecError::Unsupported(e.to_string()))?;
        let dest = self
            .dest()
            .map_err(|e| ExecError::Unsupported(e.to_string()))?;
        copy(op, &src, &dest)
    }

    /// The destination's listing.
    pub fn listing(&self) -> Res<Vec<String>> {
        Ok(list_tree(&self.dest()?)?.into_values().collect())
    }

    /// Everything in the scratch area outside `src/` and `dest/`.
    pub fn outside(&self) -> Res<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.tmp.path())? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if name != "src" && name != "dest" {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }
}

fn write(base: &Path, rel: &str, content: &str, mode: u32) -> Res<()> {
    let p = base.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&p, content)?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn mkdir(base: &Path, rel: &str, mode: u32) -> Res<()> {
    let p = base.join(rel);
    std::fs::create_dir_all(&p)?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// A `COPY` of `sources` to `dest`.
pub fn op(sources: &[&str], dest: &str) -> CopyOp {
    CopyOp {
        sources: sources.iter().map(|s| s.to_string()).collect(),
        dest: dest.to_string(),
        ..CopyOp::default()
    }
}

/// Whether the tests run as root (owners can be set).
pub fn am_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// The `file` line detail for `content`: `SIZE sha256:HEX`.
pub fn digest(content: &str) -> String {
    use sha2::Digest;
    let hex: String = sha2::Sha256::digest(content.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{} sha256:{hex}", content.len())
}
