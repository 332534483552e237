//! `ADD` of archives (every compression, detection by content) and of HTTP URLs against a
//! tiny server on 127.0.0.1: file name from the URL, mode 0600, mtime from `Last-Modified`,
//! no extraction, and `--checksum` verified before anything is written.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;

use common::{am_root, digest, op, Env, TestResult};
use rbuild_executor::{CopyOp, ExecError};
use sha2::Digest;

const BODY: &[u8] = b"downloaded content\n";
const LAST_MODIFIED: &str = "Wed, 21 Oct 2015 07:28:00 GMT";
const LAST_MODIFIED_EPOCH: i64 = 1_445_412_480;

/// Serves `count` requests, one per connection: `/file.txt` and `/dir/archive.tar.gz` (a
/// gzip tar, which must not be extracted) with `Last-Modified`, anything else 404. Returns the
/// base URL.
fn serve(count: usize, archive: Vec<u8>) -> Result<String, Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
            let mut reader = BufReader::new(match stream.try_clone() {
                Ok(s) => s,
                Err(_) => continue,
            });
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if line == "\r\n" || line == "\n" => break,
                    Ok(_) => {}
                }
            }
            let path = request_line.split_whitespace().nth(1).unwrap_or("/");
            let (status, body): (&str, &[u8]) = match path {
                "/file.txt" | "/a%20b.txt" => ("200 OK", BODY),
                "/dir/archive.tar.gz" => ("200 OK", &archive),
                _ => ("404 Not Found", b"not found"),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nLast-Modified: {LAST_MODIFIED}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    Ok(format!("http://{addr}"))
}

fn sha256_hex(data: &[u8]) -> String {
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn add(sources: &[&str], dest: &str) -> CopyOp {
    CopyOp {
        add: true,
        unpack_archives: true,
        ..op(sources, dest)
    }
}

fn gzip_tar() -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "inner.txt", &b"abc"[..])?;
    let tar = b.into_inner()?;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&tar)?;
    Ok(e.finish()?)
}

#[test]
fn add_url_with_right_and_wrong_checksum() -> TestResult {
    let archive = gzip_tar()?;
    let base = serve(6, archive.clone())?;
    let env = Env::new()?;
    let good = format!("sha256:{}", sha256_hex(BODY));
    let bad = format!("sha256:{}", sha256_hex(b"something else"));

    // Wrong checksum: an error naming both digests, nothing written.
    let wrong = CopyOp {
        checksum: Some(bad.clone()),
        ..add(&[&format!("{base}/file.txt")], "/dl/")
    };
    let err = env.copy(&wrong).err().ok_or("expected a digest mismatch")?;
    match &err {
        ExecError::ChecksumMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &bad);
            assert_eq!(actual, &good);
        }
        other => return Err(format!("unexpected error {other}").into()),
    }
    assert!(!env.dest_path().join("dl/file.txt").exists());

    // Right checksum: the file, 0600, mtime from Last-Modified.
    let right = CopyOp {
        checksum: Some(good),
        ..add(&[&format!("{base}/file.txt")], "/dl/")
    };
    env.copy(&right)?;
    let path = env.dest_path().join("dl/file.txt");
    assert_eq!(std::fs::read(&path)?, BODY);
    let md = std::fs::metadata(&path)?;
    assert_eq!(md.mode() & 0o7777, 0o600);
    assert_eq!(md.mtime(), LAST_MODIFIED_EPOCH);

    // No checksum; a percent-encoded name; a file destination; --chown and --chmod.
    let named = CopyOp {
        chown: Some((12, 34)),
        chmod: Some(rbuild_parser::instruction::Chmod::Octal(0o640)),
        ..add(&[&format!("{base}/a%20b.txt")], "/named")
    };
    env.copy(&named)?;
    let md = std::fs::metadata(env.dest_path().join("named"))?;
    assert_eq!(md.mode() & 0o7777, 0o640);
    if am_root() {
        assert_eq!((md.uid(), md.gid()), (12, 34));
    }
    env.copy(&add(&[&format!("{base}/a%20b.txt")], "/dir2/"))?;
    assert!(env.dest_path().join("dir2/a b.txt").is_file());

    // A remote archive is not extracted.
    env.copy(&add(&[&format!("{base}/dir/archive.tar.gz")], "/remote/"))?;
    assert_eq!(
        std::fs::read(env.dest_path().join("remote/archive.tar.gz"))?,
        archive
    );

    // A 404 is an error naming the URL.
    let err = env
        .copy(&add(&[&format!("{base}/missing")], "/x"))
        .err()
        .ok_or("expected a 404 error")?;
    assert!(
        err.to_string().contains("/missing") && err.to_string().contains("404"),
        "{err}"
    );
    Ok(())
}

#[test]
fn add_local_archives_every_compression_and_not_by_name() -> TestResult {
    if !am_root() {
        eprintln!("skipped: owners need root");
        return Ok(());
    }
    let env = Env::new()?;
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o755);
    h.set_uid(1000);
    h.set_gid(1000);
    h.set_cksum();
    b.append_data(&mut h, "top/run.sh", &b"echo\n"[..])?;
    let tar = b.into_inner()?;
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&tar)?;
        e.finish()?
    };
    let bz = {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        e.write_all(&tar)?;
        e.finish()?
    };
    let xz = {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
        e.write_all(&tar)?;
        e.finish()?
    };
    let zst = zstd::stream::encode_all(&tar[..], 3)?;
    // Names that lie: the zstd archive is called .txt, the text is called .tar.gz.
    std::fs::write(env.src_path().join("a.tar"), &tar)?;
    std::fs::write(env.src_path().join("a.tgz"), &gz)?;
    std::fs::write(env.src_path().join("a.bz2"), &bz)?;
    std::fs::write(env.src_path().join("a.xz"), &xz)?;
    std::fs::write(env.src_path().join("zstd.txt"), &zst)?;
    std::fs::write(env.src_path().join("text.tar.gz"), "not an archive\n")?;
    for (src, dest) in [
        ("a.tar", "/plain"),
        ("a.tgz", "/gz/"),
        ("a.bz2", "/bz2/"),
        ("a.xz", "/xz/"),
        ("zstd.txt", "/zst/"),
    ] {
        env.copy(&add(&[src], dest))?;
    }
    env.copy(&add(&["text.tar.gz"], "/text/"))?;
    // COPY never extracts.
    env.copy(&op(&["a.tgz"], "/copied/"))?;
    // --chown overrides the archive's owners.
    env.copy(&CopyOp {
        chown: Some((5, 5)),
        ..add(&["a.tgz"], "/owned/")
    })?;
    let got = env.listing()?;
    let run = digest("echo\n");
    let extracted = |d: &str, owner: &str| {
        vec![
            format!(
                "{d} dir 0755 {} -",
                if owner == "5:5" { owner } else { "0:0" }
            ),
            format!(
                "{d}/top dir 0755 {} -",
                if owner == "5:5" { owner } else { "0:0" }
            ),
            format!("{d}/top/run.sh file 0755 {owner} {run}"),
        ]
    };
    let mut want = extracted("bz2", "1000:1000");
    want.push("copied dir 0755 0:0 -".into());
    want.push(format!(
        "copied/a.tgz file 0644 0:0 {} sha256:{}",
        gz.len(),
        sha256_hex(&gz)
    ));
    want.extend(extracted("gz", "1000:1000"));
    want.extend(extracted("owned", "5:5"));
    want.extend(extracted("plain", "1000:1000"));
    want.push("text dir 0755 0:0 -".into());
    want.push(format!(
        "text/text.tar.gz file 0644 0:0 {}",
        digest("not an archive\n")
    ));
    want.extend(extracted("xz", "1000:1000"));
    want.extend(extracted("zst", "1000:1000"));
    assert_eq!(got, want);
    Ok(())
}
