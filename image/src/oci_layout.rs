//! OCI image layouts (image-spec `image-layout.md`): export as a tar stream (an "OCI archive")
//! or a directory, and import from either.
//!
//! An export holds `oci-layout` (`{"imageLayoutVersion":"1.0.0"}`), `index.json` with one
//! entry per requested name — annotated with `io.containerd.image.name` (the full normalised
//! name) and `org.opencontainers.image.ref.name` (the tag) as containerd and Docker write them —
//! and every blob of those images under `blobs/sha256/<hex>`, each once, streamed from the
//! store and verified against its digest on the way. Tar entries have mtime 0, mode 0644/0755,
//! owner 0, so the same images give the same archive bytes.
//!
//! Imports treat the archive as hostile: only `oci-layout`, `index.json`, `blobs/`,
//! `blobs/sha256/` and `blobs/sha256/<64 hex>` (optionally with a leading `./`) are accepted,
//! as regular files or directories respectively; every blob is streamed into the store and
//! committed only if it hashes to the digest its name claims; JSON is bounded; and every blob
//! the index references must be present. See [`crate::import`] for the shared machinery.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rbuild_cache::{Digest, Store};

use crate::error::{ImageError, IoContext};
use crate::images::{collect_blobs, describe_manifest};
use crate::import::{self, ImportedImage, Mode};
use crate::json::{self, MAX_MANIFEST_BYTES, MAX_SMALL_JSON_BYTES};
use crate::manifest::{annotations, Descriptor, Index, ManifestFormat};
use crate::reference::Reference;
use crate::tar_write::{Header, Kind, TarWriter};

/// The content of `oci-layout`.
pub const OCI_LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// What an export writes: the `index.json` document and the blobs to copy.
struct Plan {
    index: Index,
    blobs: Vec<Descriptor>,
}

fn plan<N: AsRef<str>>(store: &Store, images: &[(N, Digest)]) -> Result<Plan, ImageError> {
    let mut entries = Vec::new();
    let mut blobs = Vec::new();
    let mut seen = BTreeSet::new();
    for (name, digest) in images {
        let (mut desc, _) = describe_manifest(store, digest)?;
        collect_blobs(store, &desc, &mut blobs, &mut seen)?;
        // An empty name exports the image unnamed (no annotations), as an untagged build's.
        if !name.as_ref().is_empty() {
            let reference = Reference::parse(name.as_ref())?;
            desc.annotations.insert(
                annotations::CONTAINERD_IMAGE_NAME.to_owned(),
                reference.to_string(),
            );
            if let Some(tag) = reference.tag() {
                desc.annotations
                    .insert(annotations::REF_NAME.to_owned(), tag.to_owned());
            }
        }
        entries.push(desc);
    }
    Ok(Plan {
        index: Index::new(ManifestFormat::Oci, entries),
        blobs,
    })
}

/// Writes the images (each a name and its manifest or index digest) as an OCI layout tar.
pub fn export_oci_archive<N: AsRef<str>>(
    store: &Store,
    images: &[(N, Digest)],
    out: impl Write,
) -> Result<(), ImageError> {
    let plan = plan(store, images)?;
    let mut tar = TarWriter::new(out);
    let werr = |e| ImageError::io("writing OCI archive", e);
    tar.append_bytes("oci-layout", OCI_LAYOUT_CONTENT, 0o644, 0)
        .map_err(werr)?;
    tar.append_bytes("index.json", &plan.index.to_json()?, 0o644, 0)
        .map_err(werr)?;
    tar.append_dir("blobs/", 0o755, 0).map_err(werr)?;
    tar.append_dir("blobs/sha256/", 0o755, 0).map_err(werr)?;
    for blob in &plan.blobs {
        append_blob(
            &mut tar,
            store,
            &format!("blobs/sha256/{}", blob.digest.hex()),
            &blob.digest,
            blob.size,
        )?;
    }
    tar.finish().map_err(werr)?;
    Ok(())
}

/// Streams a stored blob into `tar` as `path`, verifying its digest.
pub(crate) fn append_blob<W: Write>(
    tar: &mut TarWriter<W>,
    store: &Store,
    path: &str,
    digest: &Digest,
    size: u64,
) -> Result<(), ImageError> {
    let mut reader = store.blobs().open(digest)?;
    let mut header = Header::new(path.as_bytes().to_vec(), Kind::File);
    header.mode = 0o644;
    header.size = size;
    tar.append(&header, &mut reader)
        .map_err(|e| ImageError::io(format!("writing {path}"), e))?;
    // The verifying reader checks the digest when it reaches the end.
    let mut probe = [0u8; 1];
    match reader
        .read(&mut probe)
        .map_err(|e| ImageError::io(format!("reading blob {digest}"), e))?
    {
        0 => Ok(()),
        _ => Err(ImageError::InvalidImage(format!(
            "blob {digest} grew while being exported"
        ))),
    }
}

/// Writes the images as an OCI layout directory at `dir` (created if missing). Blobs
/// already there with the right size are kept; `oci-layout` and `index.json` are replaced
/// atomically (the index lists exactly `images`).
pub fn export_oci_dir<N: AsRef<str>>(
    store: &Store,
    images: &[(N, Digest)],
    dir: &Path,
) -> Result<(), ImageError> {
    let plan = plan(store, images)?;
    let blob_dir = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blob_dir).io_context(|| blob_dir.display().to_string())?;
    for blob in &plan.blobs {
        let target = blob_dir.join(blob.digest.hex());
        if fs::symlink_metadata(&target).is_ok_and(|m| m.is_file() && m.len() == blob.size) {
            continue;
        }
        let mut reader = store.blobs().open(&blob.digest)?;
        write_atomically(&target, |file| io::copy(&mut reader, file).map(|_| ()))?;
    }
    write_atomically(&dir.join("oci-layout"), |f| f.write_all(OCI_LAYOUT_CONTENT))?;
    let index = plan.index.to_json()?;
    write_atomically(&dir.join("index.json"), |f| f.write_all(&index))?;
    Ok(())
}

/// Writes `target` through a temp file next to it, renamed into place after fsync.
fn write_atomically(
    target: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), ImageError> {
    let parent = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)?;
        fill(&mut file)?;
        file.sync_all()?;
        fs::rename(&temp, target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.io_context(|| target.display().to_string())
}

/// Imports an OCI layout tar: stores its blobs (verified), records the named images in the
/// image index, and returns every image the index lists (unnamed ones with `name: None`).
pub fn import_oci_archive(
    store: &Store,
    input: impl Read,
) -> Result<Vec<ImportedImage>, ImageError> {
    import::import_stream(store, input, Mode::Oci)
}

/// Imports an OCI layout directory: reads `oci-layout` and `index.json`, then copies exactly
/// the blobs the index references (verified; files opened without following symlinks).
pub fn import_oci_dir(store: &Store, dir: &Path) -> Result<Vec<ImportedImage>, ImageError> {
    let layout = read_file_bounded(&dir.join("oci-layout"), MAX_SMALL_JSON_BYTES)?;
    import::check_oci_layout(&layout)?;
    let index_bytes = read_file_bounded(&dir.join("index.json"), MAX_MANIFEST_BYTES)?;
    let index = Index::from_json(&index_bytes)?;
    let mut pending: Vec<Descriptor> = index.manifests.clone();
    let mut seen = BTreeSet::new();
    while let Some(desc) = pending.pop() {
        if !seen.insert(desc.digest.clone()) {
            continue;
        }
        if !store.blobs().contains(&desc.digest) {
            let path = dir.join("blobs").join("sha256").join(desc.digest.hex());
            let file = open_nofollow(&path)?;
            let mut writer = store.blobs().writer()?;
            io::copy(&mut (&file).take(desc.size.saturating_add(1)), &mut writer)
                .io_context(|| path.display().to_string())?;
            import::commit_verified(writer, &desc.digest, &path.display().to_string())?;
        }
        if crate::manifest::is_manifest_type(&desc.media_type)
            || crate::manifest::is_index_type(&desc.media_type)
        {
            match crate::images::read_manifest_or_index(store, &desc.digest, &desc.media_type)? {
                crate::manifest::ManifestOrIndex::Manifest(m) => {
                    pending.push(m.config.clone());
                    pending.extend(m.layers.iter().cloned());
                }
                crate::manifest::ManifestOrIndex::Index(i) => {
                    pending.extend(i.manifests.iter().cloned())
                }
            }
        }
    }
    import::assemble_oci(store, &index, None)
}

fn open_nofollow(path: &Path) -> Result<File, ImageError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .io_context(|| path.display().to_string())
}

fn read_file_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ImageError> {
    let file = open_nofollow(path)?;
    json::read_bounded(file, limit, &path.display().to_string())
}
