//! Ignore files: which file applies to a build (`NAME.dockerignore` beside the Dockerfile `NAME`,
//! else `.dockerignore` at the context root) and reading one into patterns, with the rules of
//! Docker's `ignorefile.ReadAll`.

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};

use crate::cleanpath::clean_path;
use crate::error::ContextError;

/// The ignore file at the root of the build context.
pub const DOCKERIGNORE_FILE_NAME: &str = ".dockerignore";

/// Longest accepted ignore-file line in bytes (without its `\n`), as with Go's `bufio.Scanner`
/// default that Docker uses; longer lines are an error.
pub const MAX_LINE_BYTES: usize = 64 * 1024 - 1;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Reads an ignore file into patterns, Docker's way:
///
/// * lines end at `\n` (a `\r` before it is dropped); a UTF-8 byte-order mark at the very start
///   is removed;
/// * a line whose *first* character is `#` is a comment (`  # x` is a pattern);
/// * other lines are trimmed and dropped when empty;
/// * a leading `!` is split off and the rest trimmed again; the rest is path-cleaned (see
///   [`crate::clean_path`]) and one leading `/` removed (patterns are relative to the context
///   root); then the `!` is put back. A lone `!` is kept (the matcher rejects it).
///
/// Fails on a read error, on a line longer than [`MAX_LINE_BYTES`], and on a pattern line that
/// is not UTF-8 (comment lines may be any bytes).
pub fn read_patterns(reader: impl Read) -> Result<Vec<String>, ContextError> {
    let mut reader = BufReader::new(reader);
    let mut patterns = Vec::new();
    let mut raw = Vec::new();
    let mut line_number = 0usize;
    loop {
        raw.clear();
        let limit = u64::try_from(MAX_LINE_BYTES)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let read = (&mut reader)
            .take(limit)
            .read_until(b'\n', &mut raw)
            .map_err(ContextError::Read)?;
        if read == 0 {
            break;
        }
        line_number += 1;
        let line = match raw.strip_suffix(b"\n") {
            Some(line) => line,
            None if raw.len() > MAX_LINE_BYTES => {
                return Err(ContextError::LineTooLong {
                    line: line_number,
                    max: MAX_LINE_BYTES,
                })
            }
            None => &raw[..],
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = if line_number == 1 {
            line.strip_prefix(UTF8_BOM).unwrap_or(line)
        } else {
            line
        };
        if line.starts_with(b"#") {
            continue;
        }
        let text = std::str::from_utf8(line)
            .map_err(|_| ContextError::InvalidUtf8 { line: line_number })?;
        if let Some(pattern) = normalize_line(text) {
            patterns.push(pattern);
        }
    }
    Ok(patterns)
}

/// One non-comment line to its pattern, or `None` for a blank line.
fn normalize_line(line: &str) -> Option<String> {
    let pattern = line.trim();
    if pattern.is_empty() {
        return None;
    }
    let (exclusion, path) = match pattern.strip_prefix('!') {
        Some(rest) => (true, rest.trim()),
        None => (false, pattern),
    };
    let mut body = String::new();
    if !path.is_empty() {
        let cleaned = clean_path(path);
        body = match cleaned.strip_prefix('/') {
            Some(relative) if !relative.is_empty() => relative.to_owned(),
            _ => cleaned,
        };
    }
    Some(if exclusion { format!("!{body}") } else { body })
}

/// The ignore files that may apply to a build, most important first; the first one that exists
/// is used and the others are not read.
///
/// `dockerfile` is the Dockerfile's path, relative to `context_dir` or absolute. For a Dockerfile
/// named `NAME`, `NAME.dockerignore` in the same directory comes first (so `Dockerfile` →
/// `Dockerfile.dockerignore`, `build/app.Dockerfile` → `build/app.Dockerfile.dockerignore`), then
/// `.dockerignore` at the context root. Without a usable Dockerfile file name (empty path, `-`
/// for standard input, `.`, `..`, `/`) only the root file is returned. The file system is not
/// consulted.
pub fn ignore_file_for(
    dockerfile: impl AsRef<Path>,
    context_dir: impl AsRef<Path>,
) -> Vec<PathBuf> {
    let dockerfile = dockerfile.as_ref();
    let context_dir = context_dir.as_ref();
    let mut candidates = Vec::with_capacity(2);
    if dockerfile != Path::new("-") {
        if let Some(name) = dockerfile.file_name() {
            let mut specific = name.to_os_string();
            specific.push(DOCKERIGNORE_FILE_NAME);
            candidates.push(context_dir.join(dockerfile.with_file_name(specific)));
        }
    }
    candidates.push(context_dir.join(DOCKERIGNORE_FILE_NAME));
    candidates
}

/// An ignore file that was found and read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IgnoreFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its patterns, as [`read_patterns`] returns them.
    pub patterns: Vec<String>,
}

/// Opens the first existing candidate of [`ignore_file_for`] and reads it. `Ok(None)` when no
/// ignore file exists (nothing is ignored). A candidate that exists but cannot be read is an
/// error, as is any error of [`read_patterns`]; both carry the file's path.
pub fn load_ignore_patterns(
    dockerfile: impl AsRef<Path>,
    context_dir: impl AsRef<Path>,
) -> Result<Option<IgnoreFile>, ContextError> {
    for path in ignore_file_for(dockerfile, context_dir) {
        let in_file = |path: &Path, error: ContextError| ContextError::InFile {
            path: path.to_path_buf(),
            source: Box::new(error),
        };
        match File::open(&path) {
            Ok(file) => {
                let patterns = read_patterns(file).map_err(|e| in_file(&path, e))?;
                return Ok(Some(IgnoreFile { path, patterns }));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(in_file(&path, ContextError::Read(e))),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8]) -> Vec<String> {
        match read_patterns(input) {
            Ok(patterns) => patterns,
            Err(e) => panic!("{input:?}: {e}"),
        }
    }

    #[test]
    fn reading_rules() {
        // (file contents, patterns)
        let cases: &[(&[u8], &[&str])] = &[
            (b"", &[]),
            (b"\n\n  \n", &[]),
            (b"a\nb", &["a", "b"]),
            (b"a\r\nb\r\n", &["a", "b"]),
            (b"\xEF\xBB\xBFa\n\xEF\xBB\xBFb", &["a", "\u{feff}b"]),
            (b"\xEF\xBB\xBF# comment\nx", &["x"]),
            (b"# comment\n  # not a comment", &["# not a comment"]),
            (b"#\xff\xfe latin-1 comment\nok", &["ok"]),
            (
                b"/abs\n//double//slash/\n./a/../b\n/",
                &["abs", "double/slash", "b", "/"],
            ),
            (b"!  /x/./y \n! \n!\n!/", &["!x/y", "!", "!", "!/"]),
            (b"  spaced out  \n\tTab", &["spaced out", "Tab"]),
            (b"..\n../x\n/..", &["..", "../x", "/"]),
            (
                b"*.go\n**/node_modules\n!keep.go",
                &["*.go", "**/node_modules", "!keep.go"],
            ),
        ];
        for &(input, want) in cases {
            assert_eq!(
                read(input),
                want,
                "reading {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn line_length_limit() {
        let ok = vec![b'a'; MAX_LINE_BYTES];
        assert_eq!(read(&ok).first().map(String::len), Some(MAX_LINE_BYTES));
        let mut ok_nl = ok.clone();
        ok_nl.extend_from_slice(b"\nb");
        assert_eq!(read(&ok_nl).len(), 2);

        let long = vec![b'a'; MAX_LINE_BYTES + 1];
        assert!(matches!(
            read_patterns(&long[..]),
            Err(ContextError::LineTooLong { line: 1, .. })
        ));
        let mut crlf = ok.clone();
        crlf.extend_from_slice(b"\r\n");
        assert!(matches!(
            read_patterns(&crlf[..]),
            Err(ContextError::LineTooLong { line: 1, .. })
        ));
        let mut second = b"x\n".to_vec();
        second.extend_from_slice(&long);
        assert!(matches!(
            read_patterns(&second[..]),
            Err(ContextError::LineTooLong { line: 2, .. })
        ));
    }

    #[test]
    fn invalid_utf8_pattern_is_an_error() {
        assert!(matches!(
            read_patterns(&b"ok\nbad\xff\n"[..]),
            Err(ContextError::InvalidUtf8 { line: 2 })
        ));
    }

    #[test]
    fn ignore_file_precedence() {
        // (dockerfile, context dir, candidates in order)
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "Dockerfile",
                "/ctx",
                &["/ctx/Dockerfile.dockerignore", "/ctx/.dockerignore"],
            ),
            (
                "app.Dockerfile",
                "/ctx",
                &["/ctx/app.Dockerfile.dockerignore", "/ctx/.dockerignore"],
            ),
            (
                "build/app.Dockerfile",
                "/ctx",
                &[
                    "/ctx/build/app.Dockerfile.dockerignore",
                    "/ctx/.dockerignore",
                ],
            ),
            (
                "/elsewhere/Dockerfile",
                "/ctx",
                &["/elsewhere/Dockerfile.dockerignore", "/ctx/.dockerignore"],
            ),
            (
                "Dockerfile",
                "ctx",
                &["ctx/Dockerfile.dockerignore", "ctx/.dockerignore"],
            ),
            (
                "Dockerfile",
                "",
                &["Dockerfile.dockerignore", ".dockerignore"],
            ),
            ("-", "/ctx", &["/ctx/.dockerignore"]),
            ("", "/ctx", &["/ctx/.dockerignore"]),
            (".", "/ctx", &["/ctx/.dockerignore"]),
            ("..", "/ctx", &["/ctx/.dockerignore"]),
            ("/", "/ctx", &["/ctx/.dockerignore"]),
        ];
        for &(dockerfile, context, want) in cases {
            let got = ignore_file_for(dockerfile, context);
            let want: Vec<PathBuf> = want.iter().map(PathBuf::from).collect();
            assert_eq!(got, want, "ignore_file_for({dockerfile:?}, {context:?})");
        }
    }

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("rbuild-context-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            if let Err(e) = std::fs::create_dir_all(dir.join("sub")) {
                panic!("{}: {e}", dir.display());
            }
            Scratch(dir)
        }
        fn write(&self, rel: &str, contents: &str) {
            if let Err(e) = std::fs::write(self.0.join(rel), contents) {
                panic!("{rel}: {e}");
            }
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn load(dockerfile: &str, dir: &Path) -> Option<IgnoreFile> {
        match load_ignore_patterns(dockerfile, dir) {
            Ok(found) => found,
            Err(e) => panic!("{dockerfile}: {e}"),
        }
    }

    #[test]
    fn loading_uses_the_first_existing_file() {
        let scratch = Scratch::new("load");
        let dir = scratch.0.as_path();
        assert_eq!(load("Dockerfile", dir), None);

        scratch.write(".dockerignore", "/root-rule\n");
        let found = load("sub/app.Dockerfile", dir);
        assert_eq!(
            found,
            Some(IgnoreFile {
                path: dir.join(".dockerignore"),
                patterns: vec!["root-rule".to_owned()]
            })
        );

        scratch.write("sub/app.Dockerfile.dockerignore", "specific\n!keep\n");
        let found = load("sub/app.Dockerfile", dir);
        assert_eq!(
            found,
            Some(IgnoreFile {
                path: dir.join("sub/app.Dockerfile.dockerignore"),
                patterns: vec!["specific".to_owned(), "!keep".to_owned()],
            })
        );
        // Another Dockerfile still gets the root file.
        let found = load("Dockerfile", dir).map(|f| f.patterns);
        assert_eq!(found, Some(vec!["root-rule".to_owned()]));

        // Errors carry the file's path.
        scratch.write(".dockerignore", &"x".repeat(MAX_LINE_BYTES + 1));
        match load_ignore_patterns("Dockerfile", dir) {
            Err(e) => assert!(e.to_string().contains(".dockerignore"), "{e}"),
            Ok(found) => panic!("expected an error, got {found:?}"),
        }
    }
}
