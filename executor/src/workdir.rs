//! `WORKDIR`: the directory is created (like `mkdir -p`, mode `0755`) if missing, with its
//! symlinks resolved inside the root filesystem — a `WORKDIR /a/b` where `/a -> /` creates
//! `<root>/b`, never a host directory. New directories belong to `owner` (BuildKit uses the
//! stage's `USER` at that point); existing ones are left alone.

use std::path::PathBuf;

use rbuild_fsutil::Root;

use crate::error::{ExecError, Side};

/// Ensures the absolute directory `path` exists in `root`; returns the directories created.
pub fn ensure_workdir(
    root: &Root,
    path: &str,
    owner: Option<(u32, u32)>,
) -> Result<Vec<PathBuf>, ExecError> {
    root.mkdir_all(path, 0o755, owner)
        .map_err(|e| ExecError::fs(Side::Dest, path, e))
}
