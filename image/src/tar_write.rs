//! A small streaming tar writer: POSIX ustar headers, with PAX extended headers for whatever
//! ustar cannot hold (long or non-ASCII paths and link targets, large sizes, uids and gids,
//! out-of-range mtimes, and `SCHILY.xattr.*` extended attributes).
//!
//! The choices follow Go's `archive/tar` (which BuildKit uses): ustar when it fits, the ustar
//! prefix field for long ASCII paths that can be split, PAX otherwise, PAX records sorted by
//! key, empty user and group names, and no padding of the archive to a record size.
//! Data is copied through one fixed buffer; a reader that ends before the size in its header
//! is an error (the archive would be corrupt), and bytes beyond the size are not read.

use std::io::{self, Read, Write};

/// The tar block size.
pub(crate) const BLOCK: usize = 512;
/// Size of the copy buffer.
const COPY_BUFFER: usize = 64 * 1024;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Hardlink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
}

impl Kind {
    fn flag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::Hardlink => b'1',
            Kind::Symlink => b'2',
            Kind::Char => b'3',
            Kind::Block => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
        }
    }
}

/// One entry's metadata.
#[derive(Clone, Debug)]
pub(crate) struct Header {
    /// The name in the archive, with a trailing `/` for directories.
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits plus setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Data size; 0 for everything but files.
    pub size: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// Link target for symlinks and hardlinks.
    pub link: Vec<u8>,
    pub dev_major: u64,
    pub dev_minor: u64,
    /// Extended attributes (name without the `SCHILY.xattr.` prefix, value), sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Header {
    /// A header with everything zero or empty.
    pub fn new(path: Vec<u8>, kind: Kind) -> Header {
        Header {
            path,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            link: Vec::new(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
        }
    }
}

/// Streams entries into `out`.
pub(crate) struct TarWriter<W: Write> {
    out: W,
    buffer: Vec<u8>,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> TarWriter<W> {
        TarWriter {
            out,
            buffer: Vec::new(),
        }
    }

    /// Writes a header and, for files, exactly `header.size` bytes from `data`.
    pub fn append(&mut self, header: &Header, data: &mut dyn Read) -> io::Result<()> {
        let (block, pax) = encode(header)?;
        if !pax.is_empty() {
            let mut pax_header = Header::new(pax_name(&header.path), Kind::File);
            pax_header.size = pax.len() as u64;
            let (mut pax_block, _) = encode(&pax_header)?;
            pax_block[156] = b'x';
            set_checksum(&mut pax_block);
            self.out.write_all(&pax_block)?;
            self.out.write_all(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        self.out.write_all(&block)?;
        if header.kind == Kind::File && header.size > 0 {
            self.copy_exact(data, header.size)?;
            self.pad(header.size)?;
        }
        Ok(())
    }

    /// A regular file with in-memory content (for small metadata files).
    pub fn append_bytes(
        &mut self,
        path: &str,
        bytes: &[u8],
        mode: u32,
        mtime: i64,
    ) -> io::Result<()> {
        let mut header = Header::new(path.as_bytes().to_vec(), Kind::File);
        header.mode = mode;
        header.size = bytes.len() as u64;
        header.mtime = mtime;
        self.append(&header, &mut &bytes[..])
    }

    /// A directory entry (`path` must end in `/`).
    pub fn append_dir(&mut self, path: &str, mode: u32, mtime: i64) -> io::Result<()> {
        let mut header = Header::new(path.as_bytes().to_vec(), Kind::Dir);
        header.mode = mode;
        header.mtime = mtime;
        self.append(&header, &mut io::empty())
    }

    /// Writes the end-of-archive marker (two zero blocks) and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        Ok(self.out)
    }

    fn copy_exact(&mut self, data: &mut dyn Read, size: u64) -> io::Result<()> {
        if self.buffer.is_empty() {
            self.buffer = vec![0u8; COPY_BUFFER];
        }
        let mut remaining = size;
        while remaining > 0 {
            let want = usize::try_from(remaining.min(COPY_BUFFER as u64)).unwrap_or(COPY_BUFFER);
            let chunk = self.buffer.get_mut(..want).unwrap_or_default();
            let n = match data.read(chunk) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("content ended {remaining} bytes before its recorded size of {size} bytes (changed while archiving?)"),
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.out.write_all(chunk.get(..n).unwrap_or_default())?;
            remaining -= n as u64;
        }
        Ok(())
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }
}

/// Encodes the ustar block for `h` and the PAX records it needs (empty if none).
fn encode(h: &Header) -> io::Result<([u8; BLOCK], Vec<u8>)> {
    let mut block = [0u8; BLOCK];
    let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();

    // Name: ustar name, or prefix + name, or PAX.
    match split_ustar(&h.path) {
        Some((prefix, name)) => {
            put_bytes(&mut block[345..500], prefix);
            put_bytes(&mut block[0..100], name);
        }
        None => {
            pax.push((b"path".to_vec(), h.path.clone()));
            put_truncated(&mut block[0..100], &h.path);
        }
    }
    put_octal(&mut block[100..108], u64::from(h.mode & 0o7777));
    if !put_octal(&mut block[108..116], h.uid) {
        pax.push((b"uid".to_vec(), h.uid.to_string().into_bytes()));
        put_octal(&mut block[108..116], 0);
    }
    if !put_octal(&mut block[116..124], h.gid) {
        pax.push((b"gid".to_vec(), h.gid.to_string().into_bytes()));
        put_octal(&mut block[116..124], 0);
    }
    if !put_octal(&mut block[124..136], h.size) {
        pax.push((b"size".to_vec(), h.size.to_string().into_bytes()));
        put_octal(&mut block[124..136], 0);
    }
    match u64::try_from(h.mtime) {
        Ok(mtime) if put_octal(&mut block[136..148], mtime) => {}
        _ => {
            pax.push((b"mtime".to_vec(), h.mtime.to_string().into_bytes()));
            put_octal(&mut block[136..148], 0);
        }
    }
    block[156] = h.kind.flag();
    if h.link.len() <= 100 && h.link.is_ascii() {
        put_bytes(&mut block[157..257], &h.link);
    } else {
        pax.push((b"linkpath".to_vec(), h.link.clone()));
        put_truncated(&mut block[157..257], &h.link);
    }
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    if !put_octal(&mut block[329..337], h.dev_major)
        || !put_octal(&mut block[337..345], h.dev_minor)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "device number too large for a tar header",
        ));
    }
    for (name, value) in &h.xattrs {
        if name.contains(&b'=') || name.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "extended attribute name {:?} cannot be stored in a PAX record",
                    String::from_utf8_lossy(name)
                ),
            ));
        }
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(name);
        pax.push((key, value.clone()));
    }
    set_checksum(&mut block);

    pax.sort();
    let mut records = Vec::new();
    for (key, value) in &pax {
        records.extend_from_slice(&pax_record(key, value));
    }
    Ok((block, records))
}

/// One PAX record, `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    loop {
        let total = body + len.to_string().len();
        if total == len {
            break;
        }
        len = total;
    }
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

/// Go's `splitUSTARPath`: `(prefix, name)` if the path fits ustar, else `None`.
fn split_ustar(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if !path.is_ascii() {
        return None;
    }
    if path.len() <= 100 {
        return Some((&[], path));
    }
    let mut length = path.len();
    if length > 156 {
        length = 156;
    } else if path.get(length - 1) == Some(&b'/') {
        length -= 1;
    }
    let i = path.get(..length)?.iter().rposition(|&b| b == b'/')?;
    let name_len = path.len() - i - 1;
    if i == 0 || name_len > 100 || name_len == 0 || i > 155 {
        return None;
    }
    Some((path.get(..i)?, path.get(i + 1..)?))
}

/// The name of the PAX header entry for `path`: `PaxHeaders.0/<base name>`, ASCII, ≤ 100.
fn pax_name(path: &[u8]) -> Vec<u8> {
    let trimmed = path.strip_suffix(b"/").unwrap_or(path);
    let base = trimmed.rsplit(|&b| b == b'/').next().unwrap_or(trimmed);
    let mut name = b"PaxHeaders.0/".to_vec();
    name.extend(base.iter().filter(|b| b.is_ascii() && **b != 0));
    name.truncate(100);
    name
}

/// Copies `value` into `field` (which the caller checked is large enough).
fn put_bytes(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// The ASCII bytes of `value`, cut to `field`'s size, without a trailing `/` (some readers
/// would take a cut file name ending in `/` for a directory).
fn put_truncated(field: &mut [u8], value: &[u8]) {
    let ascii: Vec<u8> = value
        .iter()
        .copied()
        .filter(|b| b.is_ascii() && *b != 0)
        .collect();
    let mut n = ascii.len().min(field.len());
    if ascii.len() > field.len() {
        while n > 0 && ascii[n - 1] == b'/' {
            n -= 1;
        }
    }
    field[..n].copy_from_slice(&ascii[..n]);
}

/// Zero-padded octal with a terminating NUL; false if `value` does not fit.
fn put_octal(field: &mut [u8], value: u64) -> bool {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    if text.len() > digits {
        return false;
    }
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
    true
}

/// The ustar checksum: the byte sum with the checksum field read as spaces, as six octal
/// digits, NUL, space.
fn set_checksum(block: &mut [u8; BLOCK]) {
    block[148..156].copy_from_slice(b"        ");
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(text.as_bytes());
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths() {
        assert_eq!(pax_record(b"path", b"a"), b"9 path=a\n");
        assert_eq!(pax_record(b"path", b"ab"), b"11 path=ab\n");
        // A 98-byte body plus 2 digits would be 100, which needs 3 digits: 101.
        let v = vec![b'x'; 91];
        let r = pax_record(b"path", &v);
        assert_eq!(r.len(), 101);
        assert!(r.starts_with(b"101 path="));
    }

    #[test]
    fn ustar_split_table() {
        let long_name = "n".repeat(101);
        let p = format!("{}/{}", "d".repeat(150), "f".repeat(100));
        for (path, want) in [
            (
                "short".to_owned(),
                Some((String::new(), "short".to_owned())),
            ),
            (format!("dir/{long_name}"), None),
            (p.clone(), Some(("d".repeat(150), "f".repeat(100)))),
            (format!("{}/{}", "d".repeat(156), "f"), None),
            ("é".to_owned(), None),
        ] {
            let got = split_ustar(path.as_bytes()).map(|(a, b)| {
                (
                    String::from_utf8(a.to_vec()).unwrap(),
                    String::from_utf8(b.to_vec()).unwrap(),
                )
            });
            assert_eq!(got, want, "{path}");
        }
    }

    #[test]
    fn octal_fields() {
        let mut f = [0u8; 8];
        assert!(put_octal(&mut f, 0o755));
        assert_eq!(&f, b"0000755\0");
        assert!(put_octal(&mut f, 0o7777777));
        assert!(!put_octal(&mut f, 0o10000000));
    }
}
