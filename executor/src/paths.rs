//! Paths inside a root filesystem: lexical cleaning, destination resolution against WORKDIR,
//! and symlink resolution *inside* a [`Root`] the way BuildKit's scoped `RootPath` does it.
//!
//! A path is kept as a list of components ([`Rel`]) and only ever handed to [`Root`] methods
//! (or to `openat2(RESOLVE_IN_ROOT)` on the root's fd), never joined onto a host path.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rbuild_fsutil::{FsError, Root};
use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::error::{ExecError, Side};

/// How many symlinks one resolution may follow (as Go's scoped symlink evaluation).
const MAX_SYMLINKS: usize = 255;

/// A cleaned path relative to a root: normal components only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Rel(pub(crate) Vec<OsString>);

impl Rel {
    /// The root itself.
    pub(crate) fn root() -> Rel {
        Rel(Vec::new())
    }

    /// Cleans `p` lexically as `filepath.Clean("/" + p)`: `.` and empty components vanish and
    /// `..` pops a component, staying at the root when there is none.
    pub(crate) fn clamped(p: &str) -> Rel {
        Rel::clamped_bytes(p.as_bytes())
    }

    pub(crate) fn clamped_bytes(p: &[u8]) -> Rel {
        let mut comps = Vec::new();
        for c in p.split(|b| *b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    comps.pop();
                }
                other => comps.push(OsStr::from_bytes(other).to_os_string()),
            }
        }
        Rel(comps)
    }

    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn join(&self, name: &OsStr) -> Rel {
        let mut v = self.0.clone();
        v.push(name.to_os_string());
        Rel(v)
    }

    pub(crate) fn join_rel(&self, other: &Rel) -> Rel {
        let mut v = self.0.clone();
        v.extend(other.0.iter().cloned());
        Rel(v)
    }

    pub(crate) fn parent(&self) -> Rel {
        let mut v = self.0.clone();
        v.pop();
        Rel(v)
    }

    pub(crate) fn name(&self) -> Option<&OsStr> {
        self.0.last().map(OsString::as_os_str)
    }

    /// For [`Root`] methods: components joined with `/`, `/` for the root.
    pub(crate) fn path(&self) -> PathBuf {
        if self.0.is_empty() {
            return PathBuf::from("/");
        }
        PathBuf::from(<OsString as std::os::unix::ffi::OsStringExt>::from_vec(
            self.bytes(),
        ))
    }

    /// Components joined with `/` (empty for the root).
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            out.extend_from_slice(c.as_bytes());
        }
        out
    }

    /// Relative form for pattern matching: `a/b` (`.` for the root); lossy for non-UTF-8.
    pub(crate) fn rel_string(&self) -> String {
        if self.0.is_empty() {
            return ".".to_string();
        }
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// Absolute form for messages: `/a/b`.
    pub(crate) fn display(&self) -> String {
        format!("/{}", String::from_utf8_lossy(&self.bytes()))
    }
}

/// Resolves a `COPY`/`ADD` destination against the working directory, as BuildKit's
/// Dockerfile frontend does: a relative `dest` is joined to `workdir`; the result is cleaned
/// (`..` stops at `/`); a trailing `/` — or a `dest` of `.` or ending in `/.` — is kept as a
/// trailing `/`, which marks the destination as a directory.
///
/// ```
/// use rbuild_executor::resolve_dest;
/// assert_eq!(resolve_dest("/w", "rel/"), "/w/rel/");
/// assert_eq!(resolve_dest("/w", "."), "/w/");
/// assert_eq!(resolve_dest("/w", "../../x"), "/x");
/// assert_eq!(resolve_dest("/w", "/abs/file"), "/abs/file");
/// ```
pub fn resolve_dest(workdir: &str, dest: &str) -> String {
    let dir_syntax = dest.is_empty() || dest == "." || dest.ends_with('/') || dest.ends_with("/.");
    let joined = if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!("{workdir}/{dest}")
    };
    let cleaned = Rel::clamped(&joined);
    let mut out = cleaned.display();
    if dir_syntax && !cleaned.is_root() {
        out.push('/');
    }
    out
}

/// Resolves every symlink of `path` inside `root` (Go's `fs.RootPath`): the path is cleaned
/// first, then each component is looked at in turn; a symlink is replaced by its target (an
/// absolute target restarts at the root, `..` never climbs above it). Components that do not
/// exist are kept as they are, so the result may name something missing. The final component
/// is followed too. `visible` lets the caller hide entries (`.dockerignore`): a hidden entry is
/// treated as missing.
pub(crate) fn resolve_in_root(
    root: &Root,
    side: Side,
    path: &Rel,
    visible: &mut dyn FnMut(&Rel, &Metadata) -> Result<bool, ExecError>,
) -> Result<Rel, ExecError> {
    let mut pending: VecDeque<OsString> = path.0.iter().cloned().collect();
    let mut resolved = Rel::root();
    let mut follows = 0;
    let mut missing = false;
    while let Some(comp) = pending.pop_front() {
        match comp.as_bytes() {
            b"" | b"." => continue,
            b".." => {
                resolved.0.pop();
                continue;
            }
            _ => {}
        }
        let candidate = resolved.join(&comp);
        if missing {
            resolved = candidate;
            continue;
        }
        let md = match lstat(root, side, &candidate)? {
            Some(md) if visible(&candidate, &md)? => md,
            _ => {
                missing = true;
                resolved = candidate;
                continue;
            }
        };
        if !md.file_type().is_symlink() {
            resolved = candidate;
            continue;
        }
        follows += 1;
        if follows > MAX_SYMLINKS {
            return Err(ExecError::SymlinkLoop {
                side,
                path: path.display(),
            });
        }
        let target = root
            .read_link(candidate.path())
            .map_err(|e| ExecError::fs(side, candidate.display(), e))?;
        let bytes = target.as_os_str().as_bytes();
        if bytes.starts_with(b"/") {
            resolved = Rel::root();
        }
        for part in bytes.split(|b| *b == b'/').rev() {
            if !part.is_empty() && part != b"." {
                pending.push_front(OsStr::from_bytes(part).to_os_string());
            }
        }
    }
    Ok(resolved)
}

/// `lstat` of `rel` in `root`; `None` when it (or a parent) does not exist or a parent is not
/// a directory.
pub(crate) fn lstat(root: &Root, side: Side, rel: &Rel) -> Result<Option<Metadata>, ExecError> {
    match root.symlink_metadata(rel.path()) {
        Ok(md) => Ok(Some(md)),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(ExecError::fs(side, rel.display(), e)),
    }
}

/// Whether an [`FsError`] means "nothing there" (`ENOENT`, or `ENOTDIR` on the way).
pub(crate) fn is_missing(e: &FsError) -> bool {
    e.io_kind() == Some(io::ErrorKind::NotFound)
        || e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error())
}

/// Opens the regular file `rel` for reading, resolved in `root` with
/// `openat2(RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS)` on the root's own fd, *not* following a
/// final symlink and without blocking on a FIFO swapped in; the fd is checked to be a regular
/// file. Returns the file and its metadata (from the same fd, so they cannot disagree).
pub(crate) fn open_regular(
    root: &Root,
    side: Side,
    rel: &Rel,
) -> Result<(File, Metadata), ExecError> {
    let arg = if rel.is_root() {
        PathBuf::from(".")
    } else {
        rel.path()
    };
    let fd = rustix::fs::openat2(
        root.as_fd(),
        &arg,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| ExecError::io("open", side, rel.display(), e.into()))?;
    let file = File::from(fd);
    let md = file
        .metadata()
        .map_err(|e| ExecError::io("stat", side, rel.display(), e))?;
    if !md.is_file() {
        return Err(ExecError::SourceChanged {
            path: rel.display(),
        });
    }
    Ok((file, md))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_dest_table() {
        let cases: &[(&str, &str, &str)] = &[
            ("/", "/", "/"),
            ("/", ".", "/"),
            ("/", "", "/"),
            ("/w", ".", "/w/"),
            ("/w", "./", "/w/"),
            ("/w", "rel/", "/w/rel/"),
            ("/w", "rel", "/w/rel"),
            ("/w", "sub/.", "/w/sub/"),
            ("/w/x", "..", "/w"),
            ("/w", "../../../x", "/x"),
            ("/w", "/abs//dir/", "/abs/dir/"),
            ("/w", "/abs/./f", "/abs/f"),
            ("/app/sub", "../other", "/app/other"),
            ("/", "/..", "/"),
            ("/w", "a b/", "/w/a b/"),
        ];
        for (wd, dest, want) in cases {
            assert_eq!(
                resolve_dest(wd, dest),
                *want,
                "resolve_dest({wd:?}, {dest:?})"
            );
        }
    }

    #[test]
    fn clamped_table() {
        let cases: &[(&str, &str)] = &[
            ("", "/"),
            ("../../etc/passwd", "/etc/passwd"),
            ("a/./b/../c/", "/a/c"),
            ("/a//b", "/a/b"),
        ];
        for (input, want) in cases {
            assert_eq!(Rel::clamped(input).display(), *want, "{input:?}");
        }
    }
}
