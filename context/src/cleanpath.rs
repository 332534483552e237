//! Lexical path cleaning with Go's `filepath.Clean` rules (Unix flavour), which Docker applies
//! to `.dockerignore` patterns and to the paths it matches, plus Go's `filepath.Dir`.

/// Cleans a `/`-separated path lexically, like Go's `filepath.Clean` on Unix:
/// runs of `/` become one, `.` elements are dropped, `..` removes the element before it (and is
/// dropped right after a leading `/`), a trailing `/` is removed (except for `/` itself), and
/// an empty result becomes `.`. The file system is never consulted.
pub fn clean_path(path: &str) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                // `/..` is `/`; a relative path keeps leading `..` elements.
                _ if rooted => {}
                _ => parts.push(".."),
            },
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_owned()
    } else {
        joined
    }
}

/// Go's `filepath.Dir` on Unix: everything before the last `/`, cleaned; `.` when there is no `/`.
pub(crate) fn parent_dir(path: &str) -> String {
    match path.rfind('/') {
        Some(i) => clean_path(path.get(..=i).unwrap_or(path)),
        None => ".".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go_filepath_clean() {
        let cases = [
            ("", "."),
            (".", "."),
            ("./", "."),
            ("/", "/"),
            ("//", "/"),
            ("abc", "abc"),
            ("abc/", "abc"),
            ("a//b///c", "a/b/c"),
            ("./a/./b/.", "a/b"),
            ("a/b/..", "a"),
            ("a/..", "."),
            ("a/../..", ".."),
            ("../a/..", ".."),
            ("a/b/../../../c", "../c"),
            ("/../a", "/a"),
            ("/..", "/"),
            ("/a/../..", "/"),
            ("!a/../b", "b"),
            ("!../a", "!../a"),
            ("..a/b", "..a/b"),
            ("a/...", "a/..."),
        ];
        for (input, want) in cases {
            assert_eq!(clean_path(input), want, "clean_path({input:?})");
        }
    }

    #[test]
    fn parent_dir_matches_go_filepath_dir() {
        let cases = [
            ("file", "."),
            ("", "."),
            ("/", "/"),
            ("/a", "/"),
            ("a/b", "a"),
            ("a/b/", "a/b"),
            ("a//b", "a"),
            ("./a/b", "a"),
            ("a/../b/c", "b"),
        ];
        for (input, want) in cases {
            assert_eq!(parent_dir(input), want, "parent_dir({input:?})");
        }
    }
}
