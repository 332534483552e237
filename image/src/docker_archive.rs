//! The docker-archive format (`docker save` / `docker load`): export in the classic layout that
//! `docker load` (20.10 and later) and skopeo accept, and import of both the classic layout and
//! the newer one (Docker ≥ 25) that carries an OCI layout inside.
//!
//! An export holds, for each distinct image (several names of one manifest share an entry):
//! - `<config hex>.json`: the config blob, byte for byte (so the image ID is unchanged);
//! - for each layer, a directory named by the layer's chain ID (`ChainID(L0) = DiffID(L0)`,
//!   `ChainID(L0…n) = sha256(ChainID(L0…n-1) + " " + DiffID(Ln))`) with `VERSION` (`1.0`),
//!   `json` (a minimal legacy v1 layer config: `id`, `parent`, `created`, `os`, `architecture`)
//!   and `layer.tar`, the **uncompressed** layer, decompressed on the fly from the stored blob;
//! - `manifest.json`: `[{"Config":"<hex>.json","RepoTags":["app:latest"],"Layers":["<id>/layer.tar",…]}]`;
//! - `repositories`: `{"app":{"latest":"<top layer id>"}}` for the tagged names.
//!
//! A tar header needs the size before the data, so each layer is decompressed twice: once to
//! count its bytes and check its diff ID against the config, once to write it. Memory stays
//! bounded; a layer whose content does not match its diff ID fails the export.
//! An index is exported as the manifest for the host platform (docker-archive holds
//! single-platform images only).
//!
//! Imports are in [`crate::import`] (see there for what is accepted and how layers are stored).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use rbuild_cache::{Digest, DigestWriter, Store};
use serde::Serialize;

use crate::error::{ImageError, IoContext};
use crate::images::{check_layer_count, describe_manifest, read_config, resolve_manifest};
use crate::import::{self, DockerManifestItem, ImportedImage, Mode};
use crate::json::{self, MAX_CONFIG_BYTES};
use crate::layer::{open_layer, sniff, Compression};
use crate::manifest::Descriptor;
use crate::reference::Reference;
use crate::tar_write::{Header, Kind, TarWriter};

/// One image of the export.
struct Item {
    config: Digest,
    created: Option<String>,
    os: String,
    architecture: String,
    repo_tags: Vec<Reference>,
    /// (chain ID, layer descriptor, diff ID), bottom first.
    layers: Vec<(Digest, Descriptor, Digest)>,
}

/// Writes the images (each a name and its manifest or index digest) as a docker-archive.
pub fn export_docker_archive<N: AsRef<str>>(
    store: &Store,
    images: &[(N, Digest)],
    out: impl Write,
) -> Result<(), ImageError> {
    let mut items: Vec<Item> = Vec::new();
    let mut by_manifest: BTreeMap<Digest, usize> = BTreeMap::new();
    for (name, digest) in images {
        // An empty name exports the image untagged (`RepoTags` empty).
        let reference = match name.as_ref() {
            "" => None,
            n => Some(Reference::parse(n)?),
        };
        let (desc, _) = describe_manifest(store, digest)?;
        let (manifest_desc, manifest) = resolve_manifest(store, &desc)?;
        if let Some(&i) = by_manifest.get(&manifest_desc.digest) {
            if let Some(item) = items.get_mut(i) {
                item.repo_tags.extend(reference);
            }
            continue;
        }
        let config = read_config(store, &manifest.config.digest)?;
        check_layer_count(&manifest_desc.digest, &manifest, &config)?;
        let mut layers = Vec::new();
        let mut chain: Option<Digest> = None;
        for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            let id = match &chain {
                None => diff_id.clone(),
                Some(parent) => Digest::of_bytes(format!("{parent} {diff_id}").as_bytes()),
            };
            chain = Some(id.clone());
            layers.push((id, layer.clone(), diff_id.clone()));
        }
        by_manifest.insert(manifest_desc.digest.clone(), items.len());
        items.push(Item {
            config: manifest.config.digest.clone(),
            created: config.created.clone(),
            os: config.os.clone(),
            architecture: config.architecture.clone(),
            repo_tags: reference.into_iter().collect(),
            layers,
        });
    }

    let mut tar = TarWriter::new(out);
    let werr = |e| ImageError::io("writing docker-archive", e);
    let mut written_configs = BTreeSet::new();
    let mut written_layers = BTreeSet::new();
    let mut manifest_items = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for item in &items {
        let config_name = format!("{}.json", item.config.hex());
        if written_configs.insert(item.config.clone()) {
            let bytes = store.blobs().read_to_vec(&item.config, MAX_CONFIG_BYTES)?;
            tar.append_bytes(&config_name, &bytes, 0o644, 0)
                .map_err(werr)?;
        }
        let mut layer_paths = Vec::new();
        let mut parent: Option<&Digest> = None;
        for (id, layer, diff_id) in &item.layers {
            let dir = id.hex().to_owned();
            if written_layers.insert(id.clone()) {
                let size = check_layer(store, layer, diff_id)?;
                tar.append_dir(&format!("{dir}/"), 0o755, 0).map_err(werr)?;
                tar.append_bytes(&format!("{dir}/VERSION"), b"1.0", 0o644, 0)
                    .map_err(werr)?;
                let legacy = LegacyLayerJson {
                    id: dir.clone(),
                    parent: parent.map(|p| p.hex().to_owned()),
                    created: item.created.clone(),
                    os: item.os.clone(),
                    architecture: item.architecture.clone(),
                };
                tar.append_bytes(
                    &format!("{dir}/json"),
                    &json::to_go_json(&legacy)?,
                    0o644,
                    0,
                )
                .map_err(werr)?;
                let mut header = Header::new(format!("{dir}/layer.tar").into_bytes(), Kind::File);
                header.mode = 0o644;
                header.size = size;
                let mut reader =
                    open_layer(store.blobs().open(&layer.digest)?, &layer.media_type, None)?;
                tar.append(&header, &mut reader)
                    .map_err(|e| ImageError::io(format!("writing layer {}", layer.digest), e))?;
            }
            layer_paths.push(format!("{dir}/layer.tar"));
            parent = Some(id);
        }
        let mut tags = Vec::new();
        for reference in &item.repo_tags {
            if let Some(tag) = reference.tag() {
                tags.push(reference.familiar());
                if let Some((top, _, _)) = item.layers.last() {
                    repositories
                        .entry(reference.familiar_name())
                        .or_default()
                        .insert(tag.to_owned(), top.hex().to_owned());
                }
            }
        }
        manifest_items.push(DockerManifestItem {
            config: config_name,
            repo_tags: (!tags.is_empty()).then_some(tags),
            layers: layer_paths,
        });
    }
    let mut manifest_json = json::to_go_json(&manifest_items)?;
    manifest_json.push(b'\n');
    tar.append_bytes("manifest.json", &manifest_json, 0o644, 0)
        .map_err(werr)?;
    if !repositories.is_empty() {
        let mut repos = json::to_go_json(&repositories)?;
        repos.push(b'\n');
        tar.append_bytes("repositories", &repos, 0o644, 0)
            .map_err(werr)?;
    }
    tar.finish().map_err(werr)?;
    Ok(())
}

/// The legacy per-layer `json`.
#[derive(Serialize)]
struct LegacyLayerJson {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    os: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    architecture: String,
}

/// Decompresses a stored layer once: checks the blob digest and the diff ID, returns the
/// uncompressed size.
fn check_layer(store: &Store, layer: &Descriptor, diff_id: &Digest) -> Result<u64, ImageError> {
    let mut reader = open_layer(store.blobs().open(&layer.digest)?, &layer.media_type, None)?;
    let mut hashed = DigestWriter::new(io::sink());
    io::copy(&mut reader, &mut hashed).io_context(|| format!("reading layer {}", layer.digest))?;
    // Drain whatever the decompressor left, so the verifying reader reaches its end.
    io::copy(&mut reader, &mut io::sink())
        .io_context(|| format!("reading layer {}", layer.digest))?;
    let (_, actual, size) = hashed.finish();
    if &actual != diff_id {
        return Err(ImageError::DigestMismatch {
            what: format!("uncompressed layer {}", layer.digest),
            expected: diff_id.clone(),
            actual,
        });
    }
    Ok(size)
}

/// Imports a docker-archive stream (classic, or with an OCI layout inside; a plain OCI layout
/// is accepted too), records the named images, and returns every image found.
pub fn import_docker_archive(
    store: &Store,
    input: impl Read,
) -> Result<Vec<ImportedImage>, ImageError> {
    import::import_stream(store, input, Mode::Docker)
}

/// Which archive format a file holds, by its entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// An OCI image layout (`oci-layout`, `index.json`, blobs) without `manifest.json`.
    OciLayout,
    /// A classic docker-archive (`manifest.json` without `index.json`).
    DockerArchive,
    /// Docker ≥ 25's `docker save`: both an OCI layout and `manifest.json`.
    DockerArchiveWithOciLayout,
}

/// Imports an archive file of any supported format (OCI layout tar, classic or newer
/// docker-archive), plain or gzip/zstd compressed (as `docker save | gzip` makes). The format
/// is recognised from the entries themselves in the same single pass (an `index.json` makes it
/// an OCI layout, else `manifest.json` a classic docker-archive), so nothing is read twice.
pub fn import_archive(store: &Store, path: &Path) -> Result<Vec<ImportedImage>, ImageError> {
    let file = File::open(path).io_context(|| path.display().to_string())?;
    let reader = decompressed(io::BufReader::new(file))?;
    import::import_stream(store, reader, Mode::Docker)
}

/// Looks at the entry names of an archive file (plain or compressed) without importing it.
pub fn detect_archive_format(path: &Path) -> Result<ArchiveFormat, ImageError> {
    let file = File::open(path).io_context(|| path.display().to_string())?;
    let mut tar = crate::tar_read::TarReader::new(decompressed(io::BufReader::new(file))?);
    let (mut oci, mut docker) = (false, false);
    while let Some(entry) = tar.next_entry()? {
        let name = entry.path.strip_prefix(b"./").unwrap_or(&entry.path);
        oci |= name == b"index.json";
        docker |= name == b"manifest.json";
    }
    match (oci, docker) {
        (true, false) => Ok(ArchiveFormat::OciLayout),
        (false, true) => Ok(ArchiveFormat::DockerArchive),
        (true, true) => Ok(ArchiveFormat::DockerArchiveWithOciLayout),
        (false, false) => Err(ImageError::InvalidArchive(format!(
            "{}: neither index.json nor manifest.json found",
            path.display()
        ))),
    }
}

fn decompressed<'a>(reader: impl Read + 'a) -> Result<Box<dyn Read + 'a>, ImageError> {
    let (compression, reader) = sniff(reader)?;
    Ok(match compression {
        Compression::None => reader,
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(reader).io_context(|| "opening zstd archive")?,
        ),
    })
}
