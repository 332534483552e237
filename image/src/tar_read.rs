//! A streaming tar reader for untrusted archives.
//!
//! It understands what real image archives use (ustar and GNU headers, PAX `path` /
//! `linkpath` / `size` records, GNU long names) and nothing more, and it bounds everything it
//! keeps in memory: PAX and long-name headers over [`MAX_META_BYTES`] are refused instead of
//! being read into memory. Checksums are verified; a truncated archive is an error, a missing
//! end-of-archive marker is not (as with Go's reader). Entry types that carry no data
//! (links, directories, devices, fifos) are treated as size 0 whatever their header says,
//! again as Go does. Names are returned raw; deciding which names are acceptable is the
//! caller's job.

use std::io::{self, Read};

use crate::error::ImageError;
use crate::tar_write::BLOCK;

/// The largest PAX or GNU long-name header accepted.
pub(crate) const MAX_META_BYTES: u64 = 1 << 20;

/// One entry's header, with PAX and GNU extensions applied.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// The raw path.
    pub path: Vec<u8>,
    /// The raw type flag (`b'0'`, `b'5'` …; `b'\0'` and `b'7'` are normalised to `b'0'`).
    pub kind: u8,
    /// Link target for symlinks and hardlinks.
    pub link: Vec<u8>,
}

impl Entry {
    pub fn is_file(&self) -> bool {
        self.kind == b'0'
    }

    pub fn is_dir(&self) -> bool {
        self.kind == b'5'
    }

    pub fn is_symlink(&self) -> bool {
        self.kind == b'2'
    }
}

/// Reads entries one by one; the current entry's data is read through the `Read` impl.
pub(crate) struct TarReader<R: Read> {
    inner: R,
    /// Unread data bytes of the current entry.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
    done: bool,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> TarReader<R> {
        TarReader {
            inner,
            remaining: 0,
            padding: 0,
            done: false,
        }
    }

    /// The next entry, skipping whatever of the current entry was not read; `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, ImageError> {
        if self.done {
            return Ok(None);
        }
        self.skip_current()?;
        let mut pax_path: Option<Vec<u8>> = None;
        let mut pax_link: Option<Vec<u8>> = None;
        let mut pax_size: Option<u64> = None;
        let mut gnu_name: Option<Vec<u8>> = None;
        let mut gnu_link: Option<Vec<u8>> = None;
        let mut pending = false;
        loop {
            let Some(block) = self.read_block()? else {
                if pending {
                    return Err(malformed("archive ends after an extended header"));
                }
                self.done = true;
                return Ok(None);
            };
            if block.iter().all(|&b| b == 0) {
                if pending {
                    return Err(malformed("end-of-archive marker after an extended header"));
                }
                self.done = true;
                return Ok(None);
            }
            verify_checksum(&block)?;
            let size =
                parse_number(&block[124..136]).ok_or_else(|| malformed("invalid size field"))?;
            let flag = block[156];
            match flag {
                b'x' | b'g' | b'L' | b'K' => {
                    if size > MAX_META_BYTES {
                        return Err(malformed(format!(
                            "extended header of {size} bytes is over the limit of {MAX_META_BYTES}"
                        )));
                    }
                    let data = self.read_meta(size)?;
                    pending = true;
                    match flag {
                        b'x' => {
                            for (key, value) in parse_pax(&data)? {
                                match key.as_slice() {
                                    b"path" => pax_path = Some(value),
                                    b"linkpath" => pax_link = Some(value),
                                    b"size" => pax_size = Some(parse_decimal(&value)?),
                                    _ => {}
                                }
                            }
                        }
                        b'L' => gnu_name = Some(trim_nuls(data)),
                        b'K' => gnu_link = Some(trim_nuls(data)),
                        _ => {} // global headers are ignored
                    }
                    continue;
                }
                b'S' => return Err(malformed("GNU sparse files are not supported")),
                _ => {}
            }
            let path = match (pax_path, gnu_name) {
                (Some(p), _) => p,
                (None, Some(p)) => p,
                (None, None) => header_path(&block),
            };
            let kind = match flag {
                // Old (V7) tars mark directories only with a trailing slash.
                b'\0' if path.ends_with(b"/") => b'5',
                b'\0' | b'7' => b'0',
                other => other,
            };
            let link = match (pax_link, gnu_link) {
                (Some(l), _) => l,
                (None, Some(l)) => l,
                (None, None) => cstr(&block[157..257]).to_vec(),
            };
            let header_only = matches!(kind, b'1' | b'2' | b'3' | b'4' | b'5' | b'6');
            let size = if header_only {
                0
            } else {
                pax_size.unwrap_or(size)
            };
            self.remaining = size;
            self.padding = padding(size);
            return Ok(Some(Entry { path, kind, link }));
        }
    }

    /// Skips the rest of the current entry's data and its padding.
    fn skip_current(&mut self) -> Result<(), ImageError> {
        let skip = self.remaining.saturating_add(self.padding);
        self.remaining = 0;
        self.padding = 0;
        let copied =
            io::copy(&mut (&mut self.inner).take(skip), &mut io::sink()).map_err(read_error)?;
        if copied != skip {
            return Err(malformed("archive is truncated inside an entry"));
        }
        Ok(())
    }

    /// Reads a whole block; `None` at a clean end of input.
    fn read_block(&mut self) -> Result<Option<[u8; BLOCK]>, ImageError> {
        let mut block = [0u8; BLOCK];
        let mut filled = 0;
        while filled < BLOCK {
            match self.inner.read(&mut block[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_error(e)),
            }
        }
        match filled {
            0 => Ok(None),
            BLOCK => Ok(Some(block)),
            _ => Err(malformed("archive is truncated inside a header")),
        }
    }

    /// Reads a bounded metadata entry and its padding.
    fn read_meta(&mut self, size: u64) -> Result<Vec<u8>, ImageError> {
        let mut data = Vec::new();
        (&mut self.inner)
            .take(size)
            .read_to_end(&mut data)
            .map_err(read_error)?;
        if data.len() as u64 != size {
            return Err(malformed("archive is truncated inside an extended header"));
        }
        self.remaining = 0;
        self.padding = padding(size);
        self.skip_current()?;
        Ok(data)
    }
}

impl<R: Read> Read for TarReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(buf.get_mut(..want).unwrap_or_default())?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "tar archive is truncated inside an entry",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn malformed(reason: impl Into<String>) -> ImageError {
    ImageError::MalformedTar(reason.into())
}

fn read_error(e: io::Error) -> ImageError {
    ImageError::io("reading tar archive", e)
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// The bytes of a NUL-terminated field.
fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

fn trim_nuls(mut data: Vec<u8>) -> Vec<u8> {
    while data.last() == Some(&0) {
        data.pop();
    }
    data
}

/// The name, with the ustar prefix if the header is ustar and has one.
fn header_path(block: &[u8; BLOCK]) -> Vec<u8> {
    let name = cstr(&block[0..100]);
    if &block[257..263] == b"ustar\0" {
        let prefix = cstr(&block[345..500]);
        if !prefix.is_empty() {
            let mut path = prefix.to_vec();
            path.push(b'/');
            path.extend_from_slice(name);
            return path;
        }
    }
    name.to_vec()
}

/// Accepts the unsigned sum (POSIX) and the signed sum (old Sun tars) as Go does.
fn verify_checksum(block: &[u8; BLOCK]) -> Result<(), ImageError> {
    let stored =
        parse_number(&block[148..156]).ok_or_else(|| malformed("invalid checksum field"))?;
    let mut unsigned: i64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    let stored = i64::try_from(stored).unwrap_or(-1);
    if stored != unsigned && stored != signed {
        return Err(malformed("header checksum mismatch"));
    }
    Ok(())
}

/// An octal field (spaces and NULs around it allowed) or a GNU base-256 field.
fn parse_number(field: &[u8]) -> Option<u64> {
    if let Some((&first, rest)) = field.split_first() {
        if first & 0x80 != 0 {
            if first & 0x40 != 0 {
                return None; // negative
            }
            let mut value: u64 = u64::from(first & 0x3f);
            for &b in rest {
                value = value.checked_mul(256)?.checked_add(u64::from(b))?;
            }
            return Some(value);
        }
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .filter(|&b| b != 0 && b != b' ')
        .collect();
    if text.is_empty() {
        return Some(0);
    }
    let mut value: u64 = 0;
    for b in text {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        value = value.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(value)
}

fn parse_decimal(value: &[u8]) -> Result<u64, ImageError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| malformed("invalid PAX size record"))
}

/// Parses `"<len> <key>=<value>\n"` records.
/// PAX records as (key, value) pairs.
type PaxRecords = Vec<(Vec<u8>, Vec<u8>)>;

fn parse_pax(mut data: &[u8]) -> Result<PaxRecords, ImageError> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| malformed("invalid PAX record"))?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| malformed("invalid PAX record length"))?;
        if len <= space + 1 || len > data.len() {
            return Err(malformed("invalid PAX record length"));
        }
        let record = &data[space + 1..len];
        let Some((&b'\n', body)) = record.split_last() else {
            return Err(malformed("PAX record does not end in a newline"));
        };
        let eq = body
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| malformed("PAX record without '='"))?;
        out.push((body[..eq].to_vec(), body[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::tar_write::{Header, Kind, TarWriter};

    fn archive(entries: &[(Header, &[u8])]) -> Vec<u8> {
        let mut w = TarWriter::new(Vec::new());
        for (h, data) in entries {
            w.append(h, &mut &data[..]).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn roundtrip_with_pax() {
        let long = format!("{}/{}", "é".repeat(80), "x".repeat(120));
        let mut file = Header::new(long.clone().into_bytes(), Kind::File);
        file.size = 5;
        let mut link = Header::new(b"l".to_vec(), Kind::Symlink);
        link.link = "t".repeat(300).into_bytes();
        let bytes = archive(&[(file, b"hello"), (link, b"")]);
        let mut r = TarReader::new(&bytes[..]);
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.path, long.as_bytes());
        assert!(e.is_file());
        let mut data = Vec::new();
        r.read_to_end(&mut data).unwrap();
        assert_eq!(data, b"hello");
        let e = r.next_entry().unwrap().unwrap();
        assert!(e.is_symlink());
        assert_eq!(e.link.len(), 300);
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn hostile_inputs() {
        let mut file = Header::new(b"f".to_vec(), Kind::File);
        file.size = 1000;
        let good = archive(&[(file, &[7u8; 1000])]);

        // Truncated inside data.
        let mut r = TarReader::new(&good[..900]);
        r.next_entry().unwrap();
        assert!(r.next_entry().is_err());
        // Truncated inside a header.
        assert!(TarReader::new(&good[..100]).next_entry().is_err());
        // Bad checksum.
        let mut bad = good.clone();
        bad[0] = b'g';
        assert!(TarReader::new(&bad[..]).next_entry().is_err());
        // A huge PAX header is refused without reading it.
        let pax = Header::new(b"PaxHeaders.0/x".to_vec(), Kind::File);
        let mut block = archive(&[(pax, &[])]);
        block.truncate(BLOCK);
        block[156] = b'x';
        block[124..136].copy_from_slice(format!("{:011o}\0", MAX_META_BYTES + 1).as_bytes());
        block[148..156].copy_from_slice(b"        ");
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        assert!(matches!(
            TarReader::new(&block[..]).next_entry(),
            Err(ImageError::MalformedTar(_))
        ));
        // Empty input is an empty archive.
        assert!(TarReader::new(&b""[..]).next_entry().unwrap().is_none());
    }

    #[test]
    fn pax_parsing() {
        assert_eq!(
            parse_pax(b"10 path=a\n").unwrap(),
            vec![(b"path".to_vec(), b"a".to_vec())]
        );
        for bad in [
            &b"10 path=a"[..],
            b"x path=a\n",
            b"3 \n",
            b"99 path=a\n",
            b"10 patha\n\n",
        ] {
            assert!(parse_pax(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_number(b"0000644\0"), Some(0o644));
        assert_eq!(parse_number(&[0x80, 0, 0, 1, 0]), Some(256));
        assert_eq!(parse_number(b"9"), None);
    }
}
