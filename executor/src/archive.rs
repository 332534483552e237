//! `ADD` of local archives: recognising one and extracting it.
//!
//! Docker decides by content, never by name: a regular file is an archive when it is a tar
//! stream, plain or compressed with gzip, bzip2, xz or zstd (recognised by their magic bytes),
//! whose first header is valid. So `not-really.tar.gz` holding text is copied as a file, and a
//! gzip file that does not hold a tar is copied too.
//!
//! Extraction goes through [`rbuild_fsutil::extract_tar`] into a [`Root`] opened on the
//! destination directory, the way Docker chroots into it: names that climb out are refused,
//! symlinks in the archive resolve inside that directory, whiteout names are ordinary files,
//! owners come from the archive unless `--chown` forces one, and the size and entry limits of
//! [`ArchiveLimits`] bound a decompression bomb.

use std::io::{self, Read, Seek, SeekFrom};

use rbuild_fsutil::{extract_tar, ExtractOptions, ExtractStats, Root, WhiteoutMode};

/// A compression format, from the magic bytes at the start of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// No compression (maybe a plain tar).
    None,
    /// `1f 8b 08`.
    Gzip,
    /// `BZh`.
    Bzip2,
    /// `fd 37 7a 58 5a 00`.
    Xz,
    /// `28 b5 2f fd`.
    Zstd,
}

impl Compression {
    /// Detects the compression from the first bytes of a file.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b, 0x08]) {
            Compression::Gzip
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// A decompressing reader over `r`.
    pub fn reader<'a, R: Read + 'a>(self, r: R) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(r),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(r)),
            Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
        })
    }
}

/// Bounds on what extracting one archive may write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Most payload bytes (after decompression) one archive may hold.
    pub max_bytes: Option<u64>,
    /// Most entries one archive may hold.
    pub max_entries: Option<u64>,
}

impl Default for ArchiveLimits {
    /// 64 GiB and ten million entries: far above real archives, far below a bomb's claims.
    fn default() -> Self {
        ArchiveLimits {
            max_bytes: Some(64 << 30),
            max_entries: Some(10_000_000),
        }
    }
}

/// Whether the stream `r` (positioned at the start of a file) is a tar archive, maybe
/// compressed: Go's `tar.Reader.Next` must succeed on its first header. Reads at most one
/// decompressed 512-byte block.
pub fn is_tar_stream<R: Read>(mut r: R) -> bool {
    let mut head = [0u8; 6];
    let n = read_full(&mut r, &mut head).unwrap_or(0);
    let compression = Compression::detect(&head[..n]);
    let chained = io::Cursor::new(head[..n].to_vec()).chain(r);
    let Ok(mut dec) = compression.reader(chained) else {
        return false;
    };
    let mut block = [0u8; 512];
    match read_full(&mut dec, &mut block) {
        Ok(512) => valid_tar_header(&block),
        _ => false,
    }
}

/// Whether `block` is a tar header Go's reader accepts as a first entry: not the zero block
/// (that is the end of an empty archive, or an error), with a checksum that matches (unsigned
/// or signed sum, as Go accepts both) and a parseable size.
pub fn valid_tar_header(block: &[u8; 512]) -> bool {
    if block.iter().all(|b| *b == 0) {
        return false;
    }
    let Some(stored) = parse_numeric(&block[148..156]) else {
        return false;
    };
    let mut unsigned: i64 = 0;
    let mut signed: i64 = 0;
    for (i, b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { *b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    if stored != unsigned && stored != signed {
        return false;
    }
    parse_numeric(&block[124..136]).is_some_and(|size| size >= 0)
}

/// A tar numeric field: octal (spaces and NULs around it allowed, empty is 0) or GNU base-256.
fn parse_numeric(field: &[u8]) -> Option<i64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // Base-256: big-endian two's complement with the top bit as a marker.
        let mut v: i64 = 0;
        for (i, b) in field.iter().enumerate() {
            let b = if i == 0 { b & 0x7f } else { *b };
            v = v.checked_mul(256)?.checked_add(i64::from(b))?;
        }
        return Some(v);
    }
    let trimmed: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ' || *b == 0)
        .take_while(|b| *b != b' ' && *b != 0)
        .collect();
    if trimmed.is_empty() {
        return Some(0);
    }
    let s = std::str::from_utf8(&trimmed).ok()?;
    i64::from_str_radix(s, 8).ok()
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// If `file` (a regular file, at any position) is an archive, extracts it into `dest` and
/// returns the stats; `Ok(None)` when it is not an archive. Errors are strings for the caller
/// to attach the source's name to.
pub(crate) fn extract_if_archive<F: Read + Seek>(
    file: &mut F,
    dest: &dyn Fn() -> Result<Root, String>,
    owner: Option<(u32, u32)>,
    limits: ArchiveLimits,
) -> Result<Option<ExtractStats>, String> {
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    if !is_tar_stream(&mut *file) {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let mut head = [0u8; 6];
    let n = read_full(file, &mut head).map_err(|e| e.to_string())?;
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let reader = Compression::detect(&head[..n])
        .reader(&mut *file)
        .map_err(|e| e.to_string())?;
    let root = dest()?;
    let opts = ExtractOptions {
        whiteouts: WhiteoutMode::Keep,
        owner,
        same_owner: true,
        xattrs: true,
        max_total_bytes: limits.max_bytes,
        max_entries: limits.max_entries,
        ..ExtractOptions::default()
    };
    extract_tar(reader, &root, &opts)
        .map(Some)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn tar_bytes() -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "top/file.txt", &b"hello"[..])?;
        Ok(b.into_inner()?)
    }

    fn compress(kind: Compression, data: &[u8]) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        Ok(match kind {
            Compression::None => data.to_vec(),
            Compression::Gzip => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data)?;
                e.finish()?
            }
            Compression::Bzip2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
                e.write_all(data)?;
                e.finish()?
            }
            Compression::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
                e.write_all(data)?;
                e.finish()?
            }
            Compression::Zstd => zstd::stream::encode_all(data, 3)?,
        })
    }

    #[test]
    fn detection_table() -> TestResult {
        let tar = tar_bytes()?;
        let kinds = [
            Compression::None,
            Compression::Gzip,
            Compression::Bzip2,
            Compression::Xz,
            Compression::Zstd,
        ];
        for kind in kinds {
            let archive = compress(kind, &tar)?;
            assert_eq!(Compression::detect(&archive), kind);
            assert!(is_tar_stream(&archive[..]), "{kind:?} tar is an archive");
            // Compressed text is not an archive, whatever its name would say.
            let text = compress(kind, b"plain text, not an archive.\n")?;
            assert!(!is_tar_stream(&text[..]), "{kind:?} text is not an archive");
        }
        let mut corrupt = tar.clone();
        corrupt[0] ^= 0xff;
        let cases: &[(&[u8], bool)] = &[
            (b"", false),
            (b"BZh", false),
            (&[0u8; 1024], false),
            (&tar[..511], false),
            (&corrupt, false),
            (&tar, true),
        ];
        for (data, want) in cases {
            assert_eq!(is_tar_stream(*data), *want, "{} bytes", data.len());
        }
        Ok(())
    }

    #[test]
    fn numeric_fields() {
        assert_eq!(parse_numeric(b"0000644\0"), Some(0o644));
        assert_eq!(parse_numeric(b"   644 \0"), Some(0o644));
        assert_eq!(parse_numeric(b"\0\0\0\0"), Some(0));
        assert_eq!(parse_numeric(&[0x80, 0, 0, 1, 0]), Some(256));
        assert_eq!(parse_numeric(b"12x4"), None);
    }
}
