//! A root filesystem as a listing, one line per entry, in the format of
//! `testdata/build/tree.py` (which lists BuildKit's exported tars), so build results can be
//! compared with BuildKit's recorded ones:
//!
//! ```text
//! PATH TYPE MODE UID:GID DETAIL
//! ```
//!
//! Paths are relative, sorted as strings, with spaces written `\x20`; TYPE is `dir`, `file`,
//! `symlink`, `hardlink`, `char`, `block` or `fifo`; MODE is the octal permission bits with
//! setuid/setgid/sticky; DETAIL is `SIZE sha256:HEX` for files, the target for symlinks, the
//! first path (in sorted order) of the same inode for hardlinks, `MAJOR,MINOR` for devices,
//! `-` otherwise. Mtimes are left out. Sockets are skipped (a tar cannot hold them). The tree is
//! read through a [`Root`], so symlinks in it are never followed.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use rbuild_fsutil::Root;
use sha2::{Digest, Sha256};

use crate::error::{ExecError, Side};
use crate::paths::{lstat, open_regular, Rel};

/// The listing of `root`: path → line, sorted by path.
pub fn list_tree(root: &Root) -> Result<BTreeMap<String, String>, ExecError> {
    let mut entries: BTreeMap<String, (Rel, std::fs::Metadata)> = BTreeMap::new();
    collect(root, &Rel::root(), &mut entries)?;
    let mut first_of_inode: HashMap<(u64, u64), String> = HashMap::new();
    let mut out = BTreeMap::new();
    for (path, (rel, md)) in &entries {
        let ft = md.file_type();
        let mode = md.mode() & 0o7777;
        let (typ, detail) = if ft.is_dir() {
            ("dir", "-".to_string())
        } else if ft.is_symlink() {
            let target = root
                .read_link(rel.path())
                .map_err(|e| ExecError::fs(Side::Source, rel.display(), e))?;
            ("symlink", target.to_string_lossy().into_owned())
        } else if ft.is_file() {
            let key = (md.dev(), md.ino());
            match first_of_inode.get(&key).filter(|_| md.nlink() > 1) {
                Some(first) => ("hardlink", first.clone()),
                None => {
                    if md.nlink() > 1 {
                        first_of_inode.insert(key, path.clone());
                    }
                    ("file", file_detail(root, rel)?)
                }
            }
        } else if ft.is_char_device() || ft.is_block_device() {
            let rdev = md.rdev();
            let typ = if ft.is_char_device() { "char" } else { "block" };
            (
                typ,
                format!("{},{}", rustix::fs::major(rdev), rustix::fs::minor(rdev)),
            )
        } else if ft.is_fifo() {
            ("fifo", "-".to_string())
        } else {
            continue;
        };
        let line = format!(
            "{} {typ} {mode:04o} {}:{} {detail}",
            path.replace(' ', "\\x20"),
            md.uid(),
            md.gid()
        );
        out.insert(path.clone(), line);
    }
    Ok(out)
}

/// The lines of `tree` that are not identical in `base` (tree.py's `--minus`), in order.
pub fn minus(tree: &BTreeMap<String, String>, base: &BTreeMap<String, String>) -> Vec<String> {
    tree.iter()
        .filter(|(path, line)| base.get(*path) != Some(*line))
        .map(|(_, line)| line.clone())
        .collect()
}

fn collect(
    root: &Root,
    dir: &Rel,
    out: &mut BTreeMap<String, (Rel, std::fs::Metadata)>,
) -> Result<(), ExecError> {
    let names = root
        .read_dir(dir.path())
        .map_err(|e| ExecError::fs(Side::Source, dir.display(), e))?;
    for name in names {
        let rel = dir.join(&name);
        let Some(md) = lstat(root, Side::Source, &rel)? else {
            continue;
        };
        let is_dir = md.is_dir();
        out.insert(rel.rel_string(), (rel.clone(), md));
        if is_dir {
            collect(root, &rel, out)?;
        }
    }
    Ok(())
}

fn file_detail(root: &Root, rel: &Rel) -> Result<String, ExecError> {
    let (mut file, _) = open_regular(root, Side::Source, rel)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size: u64 = 0;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| ExecError::io("read", Side::Source, rel.display(), e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("{size} sha256:{hex}"))
}
