//! `ADD` of remote sources: HTTP(S) downloads, and recognising Git addresses (not supported).
//!
//! Like BuildKit's HTTP source as the Dockerfile frontend drives it:
//!
//! * the file is named after the last segment of the URL's (percent-decoded) path, or
//!   `__unnamed__` when there is none (the frontend passes that name explicitly, so a
//!   `Content-Disposition` header does not rename it);
//! * it gets mode `0600` (before `--chmod`), and its mtime from `Last-Modified` when the
//!   server sends one;
//! * it is never extracted;
//! * with `--checksum=sha256:…` (or sha384/sha512) the content's digest must match, checked
//!   before anything is written to the root filesystem.
//!
//! The body is staged in an anonymous temporary file (`O_TMPFILE`, no name), bounded by
//! [`DownloadLimits::max_bytes`]. Proxies come from the usual environment variables, except
//! for loopback hosts (as Go's `ProxyFromEnvironment`).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::time::{Duration, SystemTime};

use sha2::Digest;

use crate::error::ExecError;

/// The name BuildKit gives a download whose URL path has no last segment.
pub const UNNAMED: &str = "__unnamed__";

/// Bounds on one download.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DownloadLimits {
    /// Most bytes one download may have.
    pub max_bytes: Option<u64>,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// Longest wait for any one read.
    pub read_timeout: Duration,
}

impl Default for DownloadLimits {
    fn default() -> Self {
        DownloadLimits {
            max_bytes: Some(64 << 30),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
        }
    }
}

/// Whether `src` is an HTTP(S) URL (BuildKit: an `http://` or `https://` prefix).
pub fn is_http_url(src: &str) -> bool {
    let lower = src.get(..8).unwrap_or(src).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// Whether `src` names a Git repository the way BuildKit's frontend recognises one: a
/// `git://`, `git@host:` or `ssh://` address, a `github.com/` path, or an HTTP(S) URL whose path
/// ends in `.git` (optionally followed by a `#ref`).
pub fn is_git_url(src: &str) -> bool {
    let lower = src.to_ascii_lowercase();
    if lower.starts_with("git://")
        || lower.starts_with("ssh://")
        || lower.starts_with("github.com/")
    {
        return true;
    }
    if let Some(rest) = src.strip_prefix("git@") {
        return rest.contains(':');
    }
    if is_http_url(src) {
        let before_fragment = src.split('#').next().unwrap_or(src);
        let path = before_fragment.split('?').next().unwrap_or(before_fragment);
        return path.ends_with(".git");
    }
    false
}

/// The file name a download gets: the last segment of the URL's percent-decoded path (Go's
/// `path.Base(url.Path)`), or [`UNNAMED`].
pub fn file_name_for(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let without_fragment = after_scheme.split('#').next().unwrap_or(after_scheme);
    let without_query = without_fragment
        .split('?')
        .next()
        .unwrap_or(without_fragment);
    let path = match without_query.find('/') {
        Some(i) => &without_query[i..],
        None => "",
    };
    let decoded = percent_decode(path);
    let trimmed = decoded.trim_end_matches('/');
    let base = trimmed.rsplit('/').next().unwrap_or("");
    match base {
        "" | "." | ".." => UNNAMED.to_string(),
        b => b.to_string(),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A `--checksum` value: algorithm and lowercase hex digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checksum {
    algorithm: &'static str,
    hex: String,
}

impl Checksum {
    /// Parses `sha256:<hex>`, `sha384:<hex>` or `sha512:<hex>`.
    pub fn parse(url: &str, s: &str) -> Result<Checksum, ExecError> {
        let bad = |reason: &str| ExecError::Download {
            url: url.to_string(),
            reason: format!("invalid --checksum {s:?}: {reason}"),
        };
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| bad("expected <algorithm>:<hex digest>"))?;
        let (algorithm, len) = match alg {
            "sha256" => ("sha256", 64),
            "sha384" => ("sha384", 96),
            "sha512" => ("sha512", 128),
            _ => return Err(bad("unsupported algorithm (sha256, sha384, sha512)")),
        };
        if hex.len() != len || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("wrong digest length or not hex"));
        }
        Ok(Checksum {
            algorithm,
            hex: hex.to_ascii_lowercase(),
        })
    }
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

/// A finished download.
#[derive(Debug)]
pub struct Download {
    /// The body, in an unnamed temporary file, positioned at the start.
    pub file: File,
    /// The name the file gets in the destination.
    pub name: String,
    /// `Last-Modified`, if the server sent a valid one.
    pub modified: Option<SystemTime>,
    /// Its size in bytes.
    pub size: u64,
}

enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(algorithm: &str) -> Hasher {
        match algorithm {
            "sha384" => Hasher::Sha384(sha2::Sha384::new()),
            "sha512" => Hasher::Sha512(sha2::Sha512::new()),
            _ => Hasher::Sha256(sha2::Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    fn hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn is_loopback_host(url: &str) -> bool {
    let after = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = after.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Downloads `url` into an unnamed temporary file, verifying `checksum` when given.
pub fn download(
    url: &str,
    checksum: Option<&str>,
    limits: &DownloadLimits,
) -> Result<Download, ExecError> {
    let fail = |reason: String| ExecError::Download {
        url: url.to_string(),
        reason,
    };
    let checksum = checksum.map(|c| Checksum::parse(url, c)).transpose()?;
    let mut builder = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(limits.connect_timeout))
        .timeout_per_read(Some(limits.read_timeout));
    if is_loopback_host(url) {
        builder = builder.proxy(None);
    }
    let agent: ureq::Agent = builder.build().into();
    let mut response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(fail(format!("invalid response status {status}")));
    }
    let modified = response
        .headers()
        .get("last-modified")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let mut file =
        tempfile::tempfile().map_err(|e| fail(format!("creating a temporary file: {e}")))?;
    let mut reader = response.body_mut().as_reader();
    let mut hasher = checksum.as_ref().map(|c| Hasher::new(c.algorithm));
    let mut buf = vec![0u8; 64 * 1024];
    let mut size: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(format!("reading the body: {e}"))),
        };
        size += n as u64;
        if let Some(max) = limits.max_bytes {
            if size > max {
                return Err(fail(format!(
                    "the body is larger than the {max}-byte limit"
                )));
            }
        }
        if let Some(h) = hasher.as_mut() {
            h.update(&buf[..n]);
        }
        file.write_all(&buf[..n])
            .map_err(|e| fail(format!("writing the temporary file: {e}")))?;
    }
    if let (Some(h), Some(want)) = (hasher, checksum.as_ref()) {
        let actual = format!("{}:{}", want.algorithm, h.hex());
        if actual != want.to_string() {
            return Err(ExecError::ChecksumMismatch {
                url: url.to_string(),
                expected: want.to_string(),
                actual,
            });
        }
    }
    file.seek(SeekFrom::Start(0))
        .map_err(|e| fail(format!("rewinding the temporary file: {e}")))?;
    Ok(Download {
        file,
        name: file_name_for(url),
        modified,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        let cases: &[(&str, &str)] = &[
            ("https://example.com/a/b/file.tar.gz", "file.tar.gz"),
            ("https://example.com/a/b/file.txt?x=1#frag", "file.txt"),
            ("https://example.com/dir/", "dir"),
            ("https://example.com/", UNNAMED),
            ("https://example.com", UNNAMED),
            ("http://127.0.0.1:8080/a%20b.txt", "a b.txt"),
            ("http://h/a%2Fb", "b"),
            ("http://h/x/..", UNNAMED),
            ("http://h/bad%zz", "bad%zz"),
        ];
        for (url, want) in cases {
            assert_eq!(file_name_for(url), *want, "{url}");
        }
    }

    #[test]
    fn url_kinds() {
        let cases: &[(&str, bool, bool)] = &[
            ("http://x/y", true, false),
            ("HTTPS://x/y", true, false),
            ("https://github.com/moby/buildkit.git", true, true),
            ("https://github.com/moby/buildkit.git#v0.12", true, true),
            ("git://host/repo", false, true),
            ("git@github.com:moby/buildkit.git", false, true),
            ("ssh://git@host/repo", false, true),
            ("github.com/moby/buildkit", false, true),
            ("file.git", false, false),
            ("git@", false, false),
            ("src/http://x", false, false),
        ];
        for (src, http, git) in cases {
            assert_eq!(is_http_url(src), *http, "http {src}");
            assert_eq!(is_git_url(src), *git, "git {src}");
        }
    }

    #[test]
    fn checksums_and_loopback() {
        let hex = "a".repeat(64);
        assert!(Checksum::parse("u", &format!("sha256:{hex}")).is_ok());
        assert!(Checksum::parse("u", &format!("sha256:{}", "A".repeat(64))).is_ok());
        assert!(Checksum::parse("u", "sha256:abc").is_err());
        assert!(Checksum::parse("u", &format!("md5:{hex}")).is_err());
        assert!(Checksum::parse("u", &hex).is_err());
        assert!(is_loopback_host("http://127.0.0.1:8080/x"));
        assert!(is_loopback_host("http://localhost/x"));
        assert!(is_loopback_host("http://[::1]:80/x"));
        assert!(is_loopback_host("http://user@127.0.0.2/x"));
        assert!(!is_loopback_host("http://example.com/x"));
    }
}
