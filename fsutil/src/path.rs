//! Lexical cleaning of root-relative paths.
//!
//! Two policies, both purely lexical (no filesystem access):
//!
//! * [`RelPath::clamped`] — for the [`Root`](crate::Root) API. Like Go's
//!   `filepath.Clean("/" + p)` as BuildKit applies it to COPY destinations:
//!   leading `/` is dropped, `.` and empty components vanish, and `..` pops a
//!   component or, at the top, stays at the root. This matches what
//!   `RESOLVE_IN_ROOT` does with a `..` at the root.
//! * [`RelPath::strict`] — for tar entry names and hardlink targets. Leading
//!   `./` and `/` are stripped and the name is cleaned the same way, but a
//!   `..` that would climb above the root is an error: an archive that says
//!   `../evil` is hostile or broken and the caller is told so by name.
//!
//! A backslash is an ordinary byte on Linux: `..\evil` is one component
//! named `..\evil` and is written, confined, under that name.
//!
//! A component may hold any byte but `/`. A NUL byte cannot reach the kernel:
//! rustix refuses to build the C string and the call fails with `EINVAL`,
//! which is the right outcome for such a name.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// A cleaned path relative to a root: only normal components.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct RelPath {
    comps: Vec<OsString>,
}

/// `..` would leave the root in a [`RelPath::strict`] clean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Escapes;

impl RelPath {
    /// The root itself.
    pub(crate) fn root() -> Self {
        RelPath { comps: Vec::new() }
    }

    /// Clean `p` treating `..` at the top as staying at the root.
    pub(crate) fn clamped(p: &Path) -> Self {
        let mut comps: Vec<OsString> = Vec::new();
        for c in p.as_os_str().as_bytes().split(|b| *b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    comps.pop();
                }
                other => comps.push(OsStr::from_bytes(other).to_os_string()),
            }
        }
        RelPath { comps }
    }

    /// Clean raw archive bytes; `Err(Escapes)` when a `..` climbs above the top.
    pub(crate) fn strict(bytes: &[u8]) -> Result<Self, Escapes> {
        let mut comps: Vec<OsString> = Vec::new();
        for c in bytes.split(|b| *b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    if comps.pop().is_none() {
                        return Err(Escapes);
                    }
                }
                other => comps.push(OsStr::from_bytes(other).to_os_string()),
            }
        }
        Ok(RelPath { comps })
    }

    /// Build from components that are already known to be normal
    /// (used when walking the tree).
    pub(crate) fn push(&mut self, name: &OsStr) {
        self.comps.push(name.to_os_string());
    }

    /// Drop the last component (no-op at the root).
    pub(crate) fn pop(&mut self) {
        self.comps.pop();
    }

    pub(crate) fn is_root(&self) -> bool {
        self.comps.is_empty()
    }

    pub(crate) fn components(&self) -> &[OsString] {
        &self.comps
    }

    /// The parent path and the final name; `None` for the root.
    pub(crate) fn split_last(&self) -> Option<(RelPath, &OsStr)> {
        let (last, rest) = self.comps.split_last()?;
        Some((
            RelPath {
                comps: rest.to_vec(),
            },
            last.as_os_str(),
        ))
    }

    /// The path as given to `openat2` relative to the root fd: components
    /// joined with `/`, or `.` for the root. This is a *root-relative* name
    /// handed to the kernel together with `RESOLVE_IN_ROOT`, never a host path.
    pub(crate) fn to_kernel_arg(&self) -> OsString {
        if self.comps.is_empty() {
            return OsString::from(".");
        }
        let mut out = Vec::new();
        for (i, c) in self.comps.iter().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            out.extend_from_slice(c.as_bytes());
        }
        OsString::from_vec(out)
    }

    /// For messages and return values: the cleaned path relative to the root.
    pub(crate) fn to_path_buf(&self) -> PathBuf {
        PathBuf::from(self.to_kernel_arg())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamped_cleaning_table() {
        let cases: &[(&str, &str)] = &[
            ("", "."),
            ("/", "."),
            (".", "."),
            ("a/b/c", "a/b/c"),
            ("/a//b/./c/", "a/b/c"),
            ("../../a", "a"),
            ("a/../../b", "b"),
            ("a/b/..", "a"),
            ("a/..", "."),
            ("..\\evil", "..\\evil"),
            ("./..\\..\\x/y", "..\\..\\x/y"),
        ];
        for (input, want) in cases {
            let got = RelPath::clamped(Path::new(input)).to_path_buf();
            assert_eq!(got, Path::new(want), "input {input:?}");
        }
    }

    #[test]
    fn strict_cleaning_table() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"./", Some(".")),
            (b"./a/b", Some("a/b")),
            (b"/abs/evil", Some("abs/evil")),
            (b"//abs//evil", Some("abs/evil")),
            (b"a/../b", Some("b")),
            (b"a/b/../../c", Some("c")),
            (b"..\\evil", Some("..\\evil")),
            (b"a/..\\..\\b", Some("a/..\\..\\b")),
            (b"../evil", None),
            (b"../../evil", None),
            (b"a/../../evil", None),
            (b"/../evil", None),
            (b"./../evil", None),
            (b"..", None),
        ];
        for (input, want) in cases {
            let got = RelPath::strict(input).map(|p| p.to_path_buf());
            match want {
                Some(w) => assert_eq!(
                    got,
                    Ok(PathBuf::from(w)),
                    "input {:?}",
                    OsStr::from_bytes(input)
                ),
                None => assert_eq!(got, Err(Escapes), "input {:?}", OsStr::from_bytes(input)),
            }
        }
    }

    #[test]
    fn split_last_and_root() {
        let p = RelPath::clamped(Path::new("a/b/c"));
        let (parent, name) = p
            .split_last()
            .unwrap_or_else(|| panic!("has a last component"));
        assert_eq!(parent.to_path_buf(), Path::new("a/b"));
        assert_eq!(name, OsStr::new("c"));
        assert!(RelPath::clamped(Path::new("/..")).split_last().is_none());
        assert!(RelPath::root().is_root());
    }
}
