//! Layer tars: writing a directory tree (an overlayfs upper dir, or any dir) as a deterministic
//! layer blob — uncompressed, as build steps store their layers, or compressed — recompressing
//! a layer stream, and opening layer blobs for reading.
//!
//! # Writing
//! [`write_layer`] walks the tree depth-first with each directory's entries sorted by name
//! (bytewise), never following symlinks (`symlink_metadata`, `read_dir`, files opened with
//! `O_NOFOLLOW` and checked to be the inode that was walked), and streams a tar through fixed
//! buffers: no file is ever held in memory. Entries carry uid, gid, mode (including
//! setuid/setgid/sticky) and mtime (whole seconds) as on disk, empty user/group names, and extended attributes as `SCHILY.xattr.*` PAX records, except
//! overlayfs' own `trusted.overlay.*` / `user.overlay.*`. A non-directory whose (dev, inode)
//! was already written becomes a hardlink to the first path. Symlink targets are written
//! verbatim; char/block devices and fifos as such; sockets are skipped (tar cannot hold
//! them). The root directory itself is not an entry.
//!
//! overlayfs whiteouts become OCI whiteouts: a char device 0/0 named `X` becomes an empty
//! regular file `.wh.X` (mode 0600, the device's owner and mtime, even when overlayfs shares one
//! whiteout inode between several paths); a directory with `trusted.overlay.opaque=y` (or
//! `user.overlay.opaque=y`) is written followed immediately by an empty file
//! `<dir>/.wh..wh..opq` with the directory's permission bits, owner and mtime.
//!
//! With `source_date_epoch` set (`SOURCE_DATE_EPOCH`), every entry whose mtime is newer than
//! the epoch gets the epoch — files, directories, symlinks, hardlinks, whiteouts and opaque
//! markers alike — and older ones keep theirs: BuildKit's `rewrite-timestamp=true`. Since the
//! rest of an entry and the order of entries never depend on when or where the tree was made
//! (inode numbers, `readdir` order), two trees with the same content written after the epoch
//! give the same bytes.
//!
//! Both digests are computed while streaming: tar → sha256 (the diff ID) → compressor →
//! sha256 and byte count (the blob digest and size) → `out`.
//!
//! # Compression
//! - gzip uses the [`gzp`] crate (maintained; pigz-style: 128 KiB chunks deflated in parallel
//!   on all cores, one gzip member, deterministic output for a given level whatever the core
//!   count). It is built on flate2's pure-Rust backend, which has no preset dictionaries, so
//!   chunks are compressed independently (a fraction of a percent larger than pigz).
//! - zstd uses the `zstd` crate with libzstd's multithreaded mode (`Encoder::multithread`),
//!   content checksums on. Its jobs are cut at fixed sizes (8 MiB at level 3), so the output
//!   is the same for any number of workers ≥ 1 (the thread count is never 0 here).
//!
//! Neither compressor is ever flushed before the end, so the bytes do not depend on how the
//! tar arrives either: the same tree and options give the same blob on any machine (tested
//! with 1–7 threads over inputs spanning several chunks and jobs). gzp's header has mtime 0
//! and OS 255 (unknown).
//!
//! # Reading
//! [`open_layer`] decompresses by media type, sniffing gzip/zstd magic bytes when the type is
//! generic, with an optional limit on the decompressed size (decompression-bomb protection).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rbuild_cache::{BlobStore, Digest, DigestWriter};

use crate::error::{shown, ImageError, IoContext};
use crate::manifest::{layer_compression, media_types, ManifestFormat};
use crate::tar_write::{Header, Kind, TarWriter};

pub use crate::manifest::Compression;

/// The OCI whiteout prefix.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The OCI opaque-directory marker.
pub const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";

/// Default gzip level (Go's `gzip.DefaultCompression`).
pub const DEFAULT_GZIP_LEVEL: u32 = 6;
/// Default zstd level (zstd's own default, also BuildKit's).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// How to write a layer.
#[derive(Clone, Debug)]
pub struct LayerOptions {
    /// The compression algorithm.
    pub compression: Compression,
    /// The compression level; `None` for the algorithm's default (gzip 6, zstd 3).
    pub level: Option<i32>,
    /// Clamp every mtime to at most this Unix time (`SOURCE_DATE_EPOCH`): entries newer than
    /// it get it, older ones keep theirs.
    pub source_date_epoch: Option<i64>,
    /// Which media type family to report in [`LayerInfo::media_type`].
    pub format: ManifestFormat,
    /// Compression threads; `None` for all cores.
    pub threads: Option<usize>,
}

impl Default for LayerOptions {
    /// gzip at the default level, OCI media types, all cores, no mtime clamping.
    fn default() -> LayerOptions {
        LayerOptions {
            compression: Compression::Gzip,
            level: None,
            source_date_epoch: None,
            format: ManifestFormat::Oci,
            threads: None,
        }
    }
}

/// What [`write_layer`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// sha256 of the bytes written (the blob digest).
    pub digest: Digest,
    /// Number of bytes written (the blob size).
    pub size: u64,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    /// The layer media type for the options' format and compression.
    pub media_type: String,
}

/// Writes the tree at `diff_dir` as a layer into `out`.
pub fn write_layer<W: Write + Send>(
    diff_dir: &Path,
    out: W,
    opts: &LayerOptions,
) -> Result<LayerInfo, ImageError> {
    let root_meta = fs::symlink_metadata(diff_dir).io_context(|| diff_dir.display().to_string())?;
    if !root_meta.is_dir() {
        return Err(ImageError::Unarchivable {
            path: diff_dir.display().to_string(),
            reason: "layer root is not a directory".into(),
        });
    }
    compress_stream(out, opts, |sink| {
        let mut walker = Walker {
            tar: TarWriter::new(sink),
            root: diff_dir,
            opts,
            links: HashMap::new(),
        };
        walker.walk()?;
        walker.tar.finish().io_context(|| "writing layer tar")?;
        Ok(())
    })
}

/// Writes the tree at `diff_dir` as a layer blob into `blobs`.
pub fn layer_to_store(
    diff_dir: &Path,
    blobs: &BlobStore,
    opts: &LayerOptions,
) -> Result<LayerInfo, ImageError> {
    let mut writer = blobs.writer()?;
    let info = write_layer(diff_dir, &mut writer, opts)?;
    writer.commit_expecting(&info.digest)?;
    Ok(info)
}

/// Reads a layer stream (compressed as `media_type` says, or sniffed when the type is generic),
/// and stores it recompressed as `opts` say (`Compression::None`: decompressed). Returns the
/// new blob's [`LayerInfo`], whose `diff_id` is the sha256 of the uncompressed content. With
/// `expected_diff_id`, content that hashes otherwise is refused before anything is stored.
pub fn recompress_to_store(
    input: impl Read,
    media_type: &str,
    blobs: &BlobStore,
    opts: &LayerOptions,
    expected_diff_id: Option<&Digest>,
) -> Result<LayerInfo, ImageError> {
    let mut reader = open_layer(input, media_type, None)?;
    let mut writer = blobs.writer()?;
    let info = compress_stream(&mut writer, opts, |sink| {
        io::copy(&mut reader, sink).io_context(|| "recompressing layer")?;
        Ok(())
    })?;
    if let Some(expected) = expected_diff_id.filter(|&d| *d != info.diff_id) {
        return Err(ImageError::DigestMismatch {
            what: "uncompressed layer".to_owned(),
            expected: expected.clone(),
            actual: info.diff_id,
        });
    }
    writer.commit_expecting(&info.digest)?;
    Ok(info)
}

/// The level `level` means for `compression`: the algorithm's default when `None`, gzip's
/// clamped to 0–9; 0 for no compression. Two writes of one tar with the same algorithm and
/// resolved level give the same bytes.
pub fn resolved_level(compression: Compression, level: Option<i32>) -> i32 {
    match compression {
        Compression::None => 0,
        Compression::Gzip => level.map_or(DEFAULT_GZIP_LEVEL as i32, |l| l.clamp(0, 9)),
        Compression::Zstd => level.unwrap_or(DEFAULT_ZSTD_LEVEL),
    }
}

/// Runs `produce` with a writer that hashes what it gets (the diff ID), compresses it per
/// `opts`, and hashes and counts the compressed bytes on their way to `out`.
fn compress_stream<W: Write + Send>(
    out: W,
    opts: &LayerOptions,
    produce: impl FnOnce(&mut dyn Write) -> Result<(), ImageError>,
) -> Result<LayerInfo, ImageError> {
    let media_type = opts.format.layer_media_type(opts.compression).to_owned();
    let threads = opts
        .threads
        .unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
        .max(1);
    let counted = DigestWriter::new(out);
    match opts.compression {
        Compression::None => {
            // The blob is the tar: one hash serves as both digests.
            let mut counted = counted;
            produce(&mut counted)?;
            let (mut out, digest, size) = counted.finish();
            out.flush().io_context(|| "writing layer")?;
            Ok(LayerInfo {
                diff_id: digest.clone(),
                digest,
                size,
                uncompressed_size: size,
                media_type,
            })
        }
        Compression::Gzip => {
            let level = u32::try_from(resolved_level(Compression::Gzip, opts.level))
                .unwrap_or(DEFAULT_GZIP_LEVEL);
            std::thread::scope(|scope| {
                let builder = gzp::par::compress::ParCompressBuilder::<gzp::deflate::Gzip>::new()
                    .num_threads(threads)
                    .map_err(|e| ImageError::io("starting gzip", io::Error::other(e.to_string())))?
                    .compression_level(gzp::Compression::new(level));
                let compressor = builder.from_borrowed_writer(counted, scope);
                let mut hashed = DigestWriter::new(compressor);
                let produced = produce(&mut hashed);
                let (mut compressor, diff_id, uncompressed_size) = hashed.finish();
                // Always finish, so gzp's threads end and its drop does not finish again.
                let finished = gzp::ZWriter::finish(&mut compressor);
                produced?;
                let counted = finished.map_err(|e| {
                    ImageError::io("writing gzip layer", io::Error::other(e.to_string()))
                })?;
                let (mut out, digest, size) = counted.finish();
                out.flush().io_context(|| "writing layer")?;
                Ok(LayerInfo {
                    diff_id,
                    digest,
                    size,
                    uncompressed_size,
                    media_type,
                })
            })
        }
        Compression::Zstd => {
            let level = resolved_level(Compression::Zstd, opts.level);
            let mut encoder =
                zstd::stream::write::Encoder::new(counted, level).io_context(|| "starting zstd")?;
            encoder
                .multithread(u32::try_from(threads).unwrap_or(1))
                .io_context(|| "starting multithreaded zstd")?;
            encoder
                .include_checksum(true)
                .io_context(|| "starting zstd")?;
            let mut hashed = DigestWriter::new(encoder);
            produce(&mut hashed)?;
            let (encoder, diff_id, uncompressed_size) = hashed.finish();
            let counted = encoder.finish().io_context(|| "writing zstd layer")?;
            let (mut out, digest, size) = counted.finish();
            out.flush().io_context(|| "writing layer")?;
            Ok(LayerInfo {
                diff_id,
                digest,
                size,
                uncompressed_size,
                media_type,
            })
        }
    }
}

/// The directory walk, writing entries as it goes.
struct Walker<'a, W: Write> {
    tar: TarWriter<W>,
    root: &'a Path,
    opts: &'a LayerOptions,
    /// (dev, inode) → first path written, for hardlinks.
    links: HashMap<(u64, u64), Vec<u8>>,
}

/// One open directory level of the walk.
struct Level {
    dir: PathBuf,
    /// The archive path prefix, empty or ending in `/`.
    prefix: Vec<u8>,
    /// Children and their types as the directory listing gave them, sorted descending so
    /// `pop` yields them in order.
    children: Vec<(OsString, Option<fs::FileType>)>,
}

impl<W: Write> Walker<'_, W> {
    fn walk(&mut self) -> Result<(), ImageError> {
        let mut stack = vec![Level {
            dir: self.root.to_path_buf(),
            prefix: Vec::new(),
            children: sorted_children(self.root)?,
        }];
        while let Some(level) = stack.last_mut() {
            let Some((name, listed_type)) = level.children.pop() else {
                stack.pop();
                continue;
            };
            let path = level.dir.join(&name);
            let mut rel = level.prefix.clone();
            rel.extend_from_slice(name.as_bytes());
            // Most entries are regular files: opened at once (never following a symlink), their
            // metadata and xattrs read from the open file.
            if listed_type.is_some_and(|t| t.is_file()) {
                if let Some((file, meta)) = open_listed_file(&path)? {
                    self.other_entry(&path, &rel, name.as_bytes(), &meta, Some(file))?;
                    continue;
                }
            }
            let meta = fs::symlink_metadata(&path).io_context(|| path.display().to_string())?;
            if meta.is_dir() {
                self.dir_entry(&path, &rel, &meta)?;
                let children = sorted_children(&path)?;
                rel.push(b'/');
                stack.push(Level {
                    dir: path,
                    prefix: rel,
                    children,
                });
            } else {
                self.other_entry(&path, &rel, name.as_bytes(), &meta, None)?;
            }
        }
        Ok(())
    }

    fn mtime(&self, meta: &Metadata) -> i64 {
        match self.opts.source_date_epoch {
            Some(epoch) => meta.mtime().min(epoch),
            None => meta.mtime(),
        }
    }

    fn base_header(&self, rel: Vec<u8>, kind: Kind, meta: &Metadata) -> Header {
        let mut h = Header::new(rel, kind);
        h.mode = meta.mode() & 0o7777;
        h.uid = u64::from(meta.uid());
        h.gid = u64::from(meta.gid());
        h.mtime = self.mtime(meta);
        h
    }

    fn dir_entry(&mut self, path: &Path, rel: &[u8], meta: &Metadata) -> Result<(), ImageError> {
        let (xattrs, opaque) = read_xattrs(path)?;
        let mut name = rel.to_vec();
        name.push(b'/');
        let mut h = self.base_header(name, Kind::Dir, meta);
        h.xattrs = xattrs;
        self.append(&h, &mut io::empty(), rel)?;
        if opaque {
            let mut marker = rel.to_vec();
            marker.push(b'/');
            marker.extend_from_slice(WHITEOUT_OPAQUE.as_bytes());
            let mut h = self.base_header(marker, Kind::File, meta);
            h.mode = meta.mode() & 0o777;
            self.append(&h, &mut io::empty(), rel)?;
        }
        Ok(())
    }

    /// An entry that is not a directory; `opened`: the regular file already open (`meta` is
    /// its `fstat`).
    fn other_entry(
        &mut self,
        path: &Path,
        rel: &[u8],
        name: &[u8],
        meta: &Metadata,
        opened: Option<File>,
    ) -> Result<(), ImageError> {
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            // An overlayfs whiteout.
            let mut wh = rel
                .get(..rel.len() - name.len())
                .unwrap_or_default()
                .to_vec();
            wh.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
            wh.extend_from_slice(name);
            let mut h = self.base_header(wh, Kind::File, meta);
            h.mode = 0o600;
            return self.append(&h, &mut io::empty(), rel);
        }
        if ft.is_socket() {
            return Ok(());
        }
        let (xattrs, _) = match &opened {
            Some(file) => read_file_xattrs(file, path)?,
            None => read_xattrs(path)?,
        };
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                let mut h = self.base_header(rel.to_vec(), Kind::Hardlink, meta);
                h.link = first.clone();
                h.xattrs = xattrs;
                return self.append(&h, &mut io::empty(), rel);
            }
            self.links.insert(key, rel.to_vec());
        }
        let kind = if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_char_device() {
            Kind::Char
        } else if ft.is_block_device() {
            Kind::Block
        } else if ft.is_fifo() {
            Kind::Fifo
        } else {
            return Err(ImageError::Unarchivable {
                path: shown(rel),
                reason: "unknown file type".into(),
            });
        };
        let mut h = self.base_header(rel.to_vec(), kind, meta);
        h.xattrs = xattrs;
        match kind {
            Kind::File => {
                h.size = meta.len();
                let mut file = match opened {
                    Some(file) => file,
                    None => open_nofollow(path, meta)?,
                };
                self.append(&h, &mut file, rel)
            }
            Kind::Symlink => {
                h.link = fs::read_link(path)
                    .io_context(|| path.display().to_string())?
                    .into_os_string()
                    .into_vec();
                self.append(&h, &mut io::empty(), rel)
            }
            Kind::Char | Kind::Block => {
                let (major, minor) = split_dev(meta.rdev());
                h.dev_major = major;
                h.dev_minor = minor;
                self.append(&h, &mut io::empty(), rel)
            }
            _ => self.append(&h, &mut io::empty(), rel),
        }
    }

    fn append(&mut self, h: &Header, data: &mut dyn Read, rel: &[u8]) -> Result<(), ImageError> {
        self.tar
            .append(h, data)
            .map_err(|e| ImageError::io(format!("archiving {}", shown(rel)), e))
    }
}

/// The names in `dir` with their listed types (when the filesystem gives them), sorted bytewise
/// descending (the walk pops from the end).
fn sorted_children(dir: &Path) -> Result<Vec<(OsString, Option<fs::FileType>)>, ImageError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).io_context(|| dir.display().to_string())? {
        let entry = entry.io_context(|| dir.display().to_string())?;
        let listed = entry.file_type().ok();
        names.push((entry.file_name(), listed));
    }
    names.sort_by(|a, b| b.0.as_bytes().cmp(a.0.as_bytes()));
    Ok(names)
}

/// Opens an entry the listing says is a regular file, never following a symlink and never
/// blocking (should it have become a fifo); `None` when it is not a regular file any more (the
/// caller looks at it again).
fn open_listed_file(path: &Path) -> Result<Option<(File, Metadata)>, ImageError> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
        Err(e) => return Err(ImageError::io(path.display().to_string(), e)),
    };
    let meta = file.metadata().io_context(|| path.display().to_string())?;
    Ok(meta.is_file().then_some((file, meta)))
}

/// Opens a regular file without following symlinks and checks it is the inode walked.
fn open_nofollow(path: &Path, meta: &Metadata) -> Result<File, ImageError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)
        .io_context(|| path.display().to_string())?;
    let opened = file.metadata().io_context(|| path.display().to_string())?;
    if opened.dev() != meta.dev() || opened.ino() != meta.ino() || !opened.is_file() {
        return Err(ImageError::Unarchivable {
            path: path.display().to_string(),
            reason: "file was replaced while the layer was being written".into(),
        });
    }
    Ok(file)
}

/// The xattrs to archive (sorted, overlayfs' own removed) and whether the directory is opaque.
/// Extended attributes as (name, value) pairs.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

fn read_xattrs(path: &Path) -> Result<(Xattrs, bool), ImageError> {
    collect_xattrs(path, xattr::list(path), |name| xattr::get(path, name))
}

/// [`read_xattrs`] of an open file.
fn read_file_xattrs(file: &File, path: &Path) -> Result<(Xattrs, bool), ImageError> {
    use xattr::FileExt;
    collect_xattrs(path, file.list_xattr(), |name| file.get_xattr(name))
}

fn collect_xattrs<L: Iterator<Item = OsString>>(
    path: &Path,
    listed: io::Result<L>,
    get: impl Fn(&OsStr) -> io::Result<Option<Vec<u8>>>,
) -> Result<(Xattrs, bool), ImageError> {
    let names = match listed {
        Ok(names) => names,
        Err(e) if is_unsupported(&e) => return Ok((Vec::new(), false)),
        Err(e) => {
            return Err(ImageError::io(
                format!("listing xattrs of {}", path.display()),
                e,
            ))
        }
    };
    let mut out = Vec::new();
    let mut opaque = false;
    for name in names {
        let bytes = name.as_bytes();
        let overlay = bytes.starts_with(b"trusted.overlay.") || bytes.starts_with(b"user.overlay.");
        let value = match get(&name) {
            Ok(Some(value)) => value,
            Ok(None) => continue,
            Err(e) if is_unsupported(&e) || e.raw_os_error() == Some(libc::ENODATA) => continue,
            Err(e) => {
                return Err(ImageError::io(
                    format!("reading xattr of {}", path.display()),
                    e,
                ))
            }
        };
        if overlay {
            if (bytes == b"trusted.overlay.opaque" || bytes == b"user.overlay.opaque")
                && value == b"y"
            {
                opaque = true;
            }
            continue;
        }
        out.push((bytes.to_vec(), value));
    }
    out.sort();
    Ok((out, opaque))
}

fn is_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENOSYS))
}

/// Linux's `major()` / `minor()` for a `dev_t`.
fn split_dev(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// Bytes that mark a gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Bytes that mark a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Opens a layer blob for reading its uncompressed tar.
///
/// The compression is taken from a known layer `media_type`; for a generic or empty type
/// (`application/octet-stream`, Docker's uncompressed `…rootfs.diff.tar`, which docker-archives
/// sometimes fill with gzip) it is sniffed from the magic bytes. Other types (encrypted or
/// foreign layers) are refused. With `max_uncompressed`, reading past that many decompressed
/// bytes fails with an error instead of continuing.
pub fn open_layer<'a, R: Read + 'a>(
    reader: R,
    media_type: &str,
    max_uncompressed: Option<u64>,
) -> Result<Box<dyn Read + 'a>, ImageError> {
    let generic = media_type.is_empty()
        || media_type == media_types::OCTET_STREAM
        || media_type == media_types::DOCKER_LAYER_TAR;
    let (compression, reader): (Compression, Box<dyn Read + 'a>) = if generic {
        let (compression, reader) = sniff(reader)?;
        (compression, reader)
    } else {
        match layer_compression(media_type) {
            Some(c) => (c, Box::new(reader)),
            None => return Err(ImageError::UnsupportedMediaType(media_type.to_owned())),
        }
    };
    let decoded: Box<dyn Read + 'a> = match compression {
        Compression::None => reader,
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(reader).io_context(|| "opening zstd layer")?)
        }
    };
    Ok(match max_uncompressed {
        Some(limit) => Box::new(LimitedReader {
            inner: decoded,
            remaining: limit,
            limit,
        }),
        None => decoded,
    })
}

/// Detects the compression from the first bytes.
pub fn sniff<'a, R: Read + 'a>(
    mut reader: R,
) -> Result<(Compression, Box<dyn Read + 'a>), ImageError> {
    let mut head = [0u8; 4];
    let mut filled = 0;
    while filled < head.len() {
        match reader.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ImageError::io("reading layer", e)),
        }
    }
    let head = head.get(..filled).unwrap_or_default().to_vec();
    let compression = if head.starts_with(&GZIP_MAGIC) {
        Compression::Gzip
    } else if head.starts_with(&ZSTD_MAGIC) {
        Compression::Zstd
    } else {
        Compression::None
    };
    Ok((compression, Box::new(io::Cursor::new(head).chain(reader))))
}

/// Fails once more than `limit` bytes have been read.
struct LimitedReader<R> {
    inner: R,
    remaining: u64,
    limit: u64,
}

impl<R: Read> Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "decompressed layer is larger than the limit of {} bytes",
                        self.limit
                    ),
                )),
            };
        }
        let want = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(buf.get_mut(..want).unwrap_or_default())?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn dev_numbers() {
        // makedev(8, 1) and makedev(259, 70000) in glibc's encoding.
        let makedev = |major: u64, minor: u64| {
            ((major & 0xfffff000) << 32)
                | ((major & 0xfff) << 8)
                | ((minor & 0xffffff00) << 12)
                | (minor & 0xff)
        };
        assert_eq!(split_dev(makedev(8, 1)), (8, 1));
        assert_eq!(split_dev(makedev(259, 70000)), (259, 70000));
        assert_eq!(split_dev(0), (0, 0));
    }

    #[test]
    fn limited_reader() {
        let mut r = LimitedReader {
            inner: &b"abcdef"[..],
            remaining: 6,
            limit: 6,
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abcdef");
        let mut r = LimitedReader {
            inner: &b"abcdefg"[..],
            remaining: 6,
            limit: 6,
        };
        assert!(r.read_to_end(&mut Vec::new()).is_err());
    }

    #[test]
    fn sniffing() {
        for (bytes, want) in [
            (&b"\x1f\x8b\x08\x00"[..], Compression::Gzip),
            (&b"\x28\xb5\x2f\xfd\x00"[..], Compression::Zstd),
            (&b"abc"[..], Compression::None),
            (&b""[..], Compression::None),
        ] {
            let (c, mut r) = sniff(bytes).unwrap();
            assert_eq!(c, want);
            let mut back = Vec::new();
            r.read_to_end(&mut back).unwrap();
            assert_eq!(back, bytes);
        }
        assert!(matches!(
            open_layer(
                &b""[..],
                "application/vnd.oci.image.layer.v1.tar+encrypted",
                None
            ),
            Err(ImageError::UnsupportedMediaType(_))
        ));
    }
}

/// `SOURCE_DATE_EPOCH` clamping and the determinism of the compressed bytes.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod reproducible_tests {
    use std::os::unix::fs::{symlink, PermissionsExt};

    use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
    use nix::sys::time::TimeSpec;

    use super::*;
    use crate::tar_write;

    const EPOCH: i64 = 1_700_000_000;
    const OLD: i64 = 1_500_000_000;

    fn set_mtime(path: &Path, secs: i64) {
        let t = TimeSpec::new(secs, 0);
        utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }

    /// An overlayfs-style upper dir: old files (before the epoch), new files, directories,
    /// a symlink, a hardlink pair, a whiteout and an opaque directory. Everything "new" gets
    /// `now`; entries are created in one order or the other (`reversed`) so that inode numbers and directory order differ
    /// between two trees.
    fn upper_tree(root: &Path, now: i64, reversed: bool) {
        fs::create_dir(root).unwrap();
        let mut steps: Vec<fn(&Path)> = vec![
            |r: &Path| {
                fs::create_dir_all(r.join("app/src")).unwrap();
                fs::write(r.join("app/src/old.txt"), "old").unwrap();
                fs::write(r.join("app/src/new.txt"), "new").unwrap();
            },
            |r: &Path| {
                fs::write(r.join("script"), "#!/bin/sh\n").unwrap();
                fs::set_permissions(r.join("script"), fs::Permissions::from_mode(0o755)).unwrap();
                symlink("script", r.join("link")).unwrap();
            },
            |r: &Path| {
                fs::create_dir(r.join("etc")).unwrap();
                // A whiteout (the file was deleted).
                mknod(
                    &r.join("etc/gone"),
                    SFlag::S_IFCHR,
                    Mode::from_bits_truncate(0o000),
                    0,
                )
                .unwrap();
            },
            |r: &Path| {
                fs::create_dir(r.join("opaque")).unwrap();
                xattr::set(r.join("opaque"), "trusted.overlay.opaque", b"y").unwrap();
                fs::write(r.join("opaque/kept"), "kept").unwrap();
            },
            |r: &Path| {
                fs::create_dir(r.join("links")).unwrap();
                fs::write(r.join("links/b"), "shared").unwrap();
                fs::hard_link(r.join("links/b"), r.join("links/a")).unwrap();
            },
        ];
        if reversed {
            steps.reverse();
        }
        for step in &steps {
            step(root);
        }
        for rel in [
            "app/src/new.txt",
            "script",
            "link",
            "etc/gone",
            "opaque/kept",
            "links/b",
            "opaque",
            "links",
            "etc",
            "app/src",
            "app",
        ] {
            set_mtime(&root.join(rel), now);
        }
        set_mtime(&root.join("app/src/old.txt"), OLD);
    }

    fn with(compression: Compression, threads: usize, epoch: Option<i64>) -> LayerOptions {
        LayerOptions {
            compression,
            threads: Some(threads),
            source_date_epoch: epoch,
            ..LayerOptions::default()
        }
    }

    /// (path, type flag, mtime) of every entry of an uncompressed layer.
    fn entries(tar: &[u8]) -> Vec<(String, u8, i64)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + tar_write::BLOCK <= tar.len() {
            let block = &tar[at..at + tar_write::BLOCK];
            if block.iter().all(|&b| b == 0) {
                break;
            }
            let field = |r: std::ops::Range<usize>| {
                let s = String::from_utf8_lossy(&block[r]).into_owned();
                s.trim_end_matches('\0').to_string()
            };
            let size = u64::from_str_radix(field(124..135).trim(), 8).unwrap();
            let mtime = i64::from_str_radix(field(136..147).trim(), 8).unwrap();
            out.push((field(0..100), block[156], mtime));
            at += tar_write::BLOCK
                + usize::try_from(size.div_ceil(tar_write::BLOCK as u64)).unwrap()
                    * tar_write::BLOCK;
        }
        out
    }

    #[test]
    fn clamping_makes_trees_built_at_different_times_identical() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        upper_tree(&a, EPOCH + 1000, false);
        upper_tree(&b, EPOCH + 5000, true);

        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let la = write_layer(&a, io::sink(), &with(compression, 1, Some(EPOCH))).unwrap();
            let lb = write_layer(&b, io::sink(), &with(compression, 3, Some(EPOCH))).unwrap();
            assert_eq!(la, lb, "{compression:?}");
            // Without the epoch the build times show.
            let ua = write_layer(&a, io::sink(), &with(compression, 1, None)).unwrap();
            let ub = write_layer(&b, io::sink(), &with(compression, 1, None)).unwrap();
            assert_ne!(ua.diff_id, ub.diff_id, "{compression:?}");
            assert_ne!(ua.digest, ub.digest, "{compression:?}");
        }

        let mut tar = Vec::new();
        write_layer(&b, &mut tar, &with(Compression::None, 1, Some(EPOCH))).unwrap();
        let got = entries(&tar);
        let want: Vec<(String, u8, i64)> = [
            ("app/", b'5', EPOCH),
            ("app/src/", b'5', EPOCH),
            ("app/src/new.txt", b'0', EPOCH),
            ("app/src/old.txt", b'0', OLD),
            ("etc/", b'5', EPOCH),
            ("etc/.wh.gone", b'0', EPOCH),
            ("link", b'2', EPOCH),
            ("links/", b'5', EPOCH),
            ("links/a", b'0', EPOCH),
            ("links/b", b'1', EPOCH),
            ("opaque/", b'5', EPOCH),
            ("opaque/.wh..wh..opq", b'0', EPOCH),
            ("opaque/kept", b'0', EPOCH),
            ("script", b'0', EPOCH),
        ]
        .iter()
        .map(|(p, k, m)| ((*p).to_string(), *k, *m))
        .collect();
        assert_eq!(got, want);

        // An mtime equal to the epoch, or one before it, is kept as it is.
        set_mtime(&b.join("script"), EPOCH);
        set_mtime(&b.join("link"), EPOCH - 1);
        let mut tar = Vec::new();
        write_layer(&b, &mut tar, &with(Compression::None, 1, Some(EPOCH))).unwrap();
        let got = entries(&tar);
        assert!(got.contains(&("script".into(), b'0', EPOCH)));
        assert!(got.contains(&("link".into(), b'2', EPOCH - 1)));
    }

    /// Pseudo-random, partly compressible data of `len` bytes.
    fn noise(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 4 == 0 {
                    b' '
                } else {
                    b'a' + (x % 16) as u8
                }
            })
            .collect()
    }

    #[test]
    fn compressed_bytes_do_not_depend_on_the_thread_count() {
        // 20 MiB: several of gzp's 128 KiB chunks and more than one of libzstd's
        // multithreaded jobs (8 MiB at level 3).
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("t");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("big"), noise(20 << 20)).unwrap();
        fs::write(root.join("small"), "s").unwrap();
        for compression in [Compression::Gzip, Compression::Zstd] {
            let digests: Vec<Digest> = [1, 2, 4, 7]
                .iter()
                .map(|&threads| {
                    write_layer(&root, io::sink(), &with(compression, threads, Some(EPOCH)))
                        .unwrap()
                        .digest
                })
                .collect();
            assert!(
                digests.iter().all(|d| *d == digests[0]),
                "{compression:?}: {digests:?}"
            );
        }
    }
}
