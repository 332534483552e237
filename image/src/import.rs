//! Importing image archives (OCI layouts and both docker-archive layouts) from an untrusted tar
//! stream, in one pass and without spooling.
//!
//! Entries are handled as they come, in whatever order the archive has them:
//! - `blobs/sha256/<hex>` is streamed into a [`rbuild_cache::BlobWriter`] and committed only if
//!   it hashes to `<hex>` (a blob already in the store is hashed and compared, not rewritten);
//! - `<hex>.json` (a classic config) is read bounded, checked against `<hex>` and stored;
//! - `<id>/layer.tar` and `<hex>.tar` (classic layers, as `docker save` and skopeo write them)
//!   are decompressed if they happen to be compressed, hashed (the diff ID) and stored
//!   **recompressed with gzip** (level 6) as they stream — loaded images keep compressed
//!   layers, as pulled ones do (only the layers rbuild builds are stored uncompressed);
//! - `index.json`, `oci-layout` and `manifest.json` are read bounded and kept in memory;
//! - `<id>/`, `<id>/VERSION`, `<id>/json`, `repositories`, `blobs/`, `blobs/sha256/` are
//!   accepted and skipped; `<id>/layer.tar` may be a symlink (skopeo) to another accepted name.
//!
//! Everything else is refused: absolute paths, `..`, unknown names, other entry types,
//! duplicates. At the end, if there is an `index.json` the images are taken from it (the
//! OCI layout, also inside Docker ≥ 25's `docker save` output), keeping their manifests and
//! digests; names come from its `io.containerd.image.name` annotations, or from a
//! `org.opencontainers.image.ref.name` that is a full reference, or else from `manifest.json`'s
//! `RepoTags`. Otherwise `manifest.json` (classic `docker save`) is used: each layer's diff ID is
//! checked against the config's `rootfs.diff_ids`, and a Docker schema 2 manifest is written
//! over the stored config and recompressed layers. The only case that re-reads a blob from the
//! store is a classic `manifest.json` pointing at `blobs/sha256/…` without an `index.json`:
//! those layers are recompressed from the store after the pass.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};

use rbuild_cache::{BlobWriter, Digest, DigestWriter, ImageRecord, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::config::ImageConfig;
use crate::error::{shown, ImageError, IoContext};
use crate::images::{check_layer_count, collect_blobs, read_config, resolve_manifest};
use crate::json::{self, null_default, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES, MAX_SMALL_JSON_BYTES};
use crate::layer::{recompress_to_store, Compression, LayerInfo, LayerOptions};
use crate::manifest::{annotations, media_types, Descriptor, Index, Manifest, ManifestFormat};
use crate::reference::Reference;
use crate::tar_read::{Entry, TarReader};

/// One image found in an imported archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedImage {
    /// The normalised name it was recorded under, if the archive named it.
    pub name: Option<String>,
    /// Its manifest (or index) digest.
    pub manifest: Digest,
    /// The manifest's media type.
    pub media_type: String,
    /// Its config digest (the host platform's, for an index).
    pub config: Digest,
    /// Total size of its distinct blobs.
    pub size: u64,
}

/// Which names an import accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Only an OCI layout.
    Oci,
    /// A docker-archive, classic or with an OCI layout inside (also accepts a plain OCI
    /// layout).
    Docker,
}

/// An entry name this importer understands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Name {
    Root,
    OciLayout,
    IndexJson,
    ManifestJson,
    Repositories,
    BlobsDir,
    ShaDir,
    Blob(Digest),
    /// `<hex>.json`
    Config(Digest),
    /// `<hex>.tar`
    LayerTar,
    /// `<id>/`
    LegacyDir,
    /// `<id>/layer.tar`
    LegacyLayer,
    /// `<id>/VERSION`, `<id>/json`
    LegacyMeta,
}

impl Name {
    fn is_dir(&self) -> bool {
        matches!(
            self,
            Name::Root | Name::BlobsDir | Name::ShaDir | Name::LegacyDir
        )
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn hex_digest(hex: &str) -> Option<Digest> {
    if is_hex64(hex) {
        Digest::parse(&format!("sha256:{hex}")).ok()
    } else {
        None
    }
}

/// The canonical form of an entry name (no leading `./`, no trailing `/`), or `None` if it is
/// not even plausible (absolute, `..`, empty components, not UTF-8).
fn canonical(raw: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(raw).ok()?;
    let s = s.strip_prefix("./").unwrap_or(s);
    let s = s.strip_suffix('/').unwrap_or(s);
    if s.is_empty() || s == "." {
        return Some(String::new());
    }
    if s.starts_with('/')
        || s.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        || s.contains('\0')
    {
        return None;
    }
    Some(s.to_owned())
}

/// Classifies a canonical name.
fn classify(name: &str, mode: Mode) -> Option<Name> {
    let oci = match name {
        "" => Some(Name::Root),
        "oci-layout" => Some(Name::OciLayout),
        "index.json" => Some(Name::IndexJson),
        "blobs" => Some(Name::BlobsDir),
        "blobs/sha256" => Some(Name::ShaDir),
        _ => name
            .strip_prefix("blobs/sha256/")
            .and_then(hex_digest)
            .map(Name::Blob),
    };
    if oci.is_some() || mode == Mode::Oci {
        return oci;
    }
    match name {
        "manifest.json" => return Some(Name::ManifestJson),
        "repositories" => return Some(Name::Repositories),
        _ => {}
    }
    match name.split_once('/') {
        None => {
            if let Some(hex) = name.strip_suffix(".json") {
                hex_digest(hex).map(Name::Config)
            } else if let Some(hex) = name.strip_suffix(".tar") {
                is_hex64(hex).then_some(Name::LayerTar)
            } else {
                is_hex64(name).then_some(Name::LegacyDir)
            }
        }
        Some((id, rest)) if is_hex64(id) => match rest {
            "layer.tar" => Some(Name::LegacyLayer),
            "VERSION" | "json" => Some(Name::LegacyMeta),
            _ => None,
        },
        Some(_) => None,
    }
}

/// Resolves a symlink target relative to the link's directory, staying inside the archive.
fn resolve_link(link_name: &str, target: &[u8]) -> Option<String> {
    let target = std::str::from_utf8(target).ok()?;
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = link_name.split('/').collect();
    parts.pop();
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

/// What the pass over the archive collected.
#[derive(Default)]
struct Collected {
    oci_layout: Option<Vec<u8>>,
    index_json: Option<Vec<u8>>,
    manifest_json: Option<Vec<u8>>,
    /// Blobs stored from `blobs/sha256/…`.
    blobs: BTreeSet<Digest>,
    /// `<hex>.json` name → digest.
    configs: BTreeMap<String, Digest>,
    /// Classic layer name → the stored, recompressed layer.
    layers: BTreeMap<String, LayerInfo>,
    /// Symlink name → canonical target name.
    links: BTreeMap<String, String>,
    /// Every name seen, for duplicate detection.
    seen: BTreeSet<String>,
}

/// How classic layers are stored.
fn import_layer_options() -> LayerOptions {
    LayerOptions {
        compression: Compression::Gzip,
        format: ManifestFormat::Docker,
        ..LayerOptions::default()
    }
}

/// Imports an archive stream.
pub(crate) fn import_stream(
    store: &Store,
    input: impl Read,
    mode: Mode,
) -> Result<Vec<ImportedImage>, ImageError> {
    let mut tar = TarReader::new(input);
    let mut c = Collected::default();
    while let Some(entry) = tar.next_entry()? {
        take_entry(store, &mut tar, &entry, mode, &mut c)?;
    }
    if let Some(layout) = &c.oci_layout {
        check_oci_layout(layout)?;
    }
    if let Some(index_bytes) = &c.index_json {
        if mode == Mode::Oci && c.oci_layout.is_none() {
            return Err(ImageError::InvalidArchive(
                "OCI layout without an oci-layout file".into(),
            ));
        }
        let index = Index::from_json(index_bytes)?;
        let fallback = match &c.manifest_json {
            Some(bytes) => Some(parse_docker_manifest(bytes)?),
            None => None,
        };
        return assemble_oci(store, &index, fallback.as_deref());
    }
    match mode {
        Mode::Oci => Err(ImageError::InvalidArchive(
            "no index.json in the OCI layout".into(),
        )),
        Mode::Docker => match c.manifest_json.take() {
            Some(bytes) => assemble_docker(store, &parse_docker_manifest(&bytes)?, &mut c),
            None => Err(ImageError::InvalidArchive(
                "neither manifest.json nor index.json in the archive".into(),
            )),
        },
    }
}

fn take_entry<R: Read>(
    store: &Store,
    tar: &mut TarReader<R>,
    entry: &Entry,
    mode: Mode,
    c: &mut Collected,
) -> Result<(), ImageError> {
    let raw = &entry.path;
    let name = canonical(raw).ok_or_else(|| ImageError::bad_entry(raw, "unsafe path"))?;
    let kind = classify(&name, mode)
        .ok_or_else(|| ImageError::bad_entry(raw, "not part of the image archive format"))?;
    if kind.is_dir() {
        if !entry.is_dir() {
            return Err(ImageError::bad_entry(raw, "expected a directory"));
        }
        return Ok(());
    }
    if !c.seen.insert(name.clone()) {
        return Err(ImageError::bad_entry(raw, "duplicate entry"));
    }
    if entry.is_symlink() && kind == Name::LegacyLayer {
        let target = resolve_link(&name, &entry.link)
            .filter(|t| {
                matches!(
                    classify(t, mode),
                    Some(Name::LayerTar | Name::Blob(_) | Name::LegacyLayer)
                )
            })
            .ok_or_else(|| {
                ImageError::bad_entry(raw, format!("symlink to {:?} refused", shown(&entry.link)))
            })?;
        c.links.insert(name, target);
        return Ok(());
    }
    if !entry.is_file() {
        return Err(ImageError::bad_entry(raw, "expected a regular file"));
    }
    match kind {
        Name::Blob(digest) => {
            store_blob(store, tar, &digest, &name)?;
            c.blobs.insert(digest);
        }
        Name::Config(digest) => {
            let bytes = json::read_bounded(tar, MAX_CONFIG_BYTES, &name)?;
            let actual = Digest::of_bytes(&bytes);
            if actual != digest {
                return Err(ImageError::DigestMismatch {
                    what: name,
                    expected: digest,
                    actual,
                });
            }
            store.blobs().put_bytes(&bytes)?;
            c.configs.insert(name, digest);
        }
        Name::LayerTar | Name::LegacyLayer => {
            let info = recompress_to_store(tar, "", store.blobs(), &import_layer_options(), None)?;
            c.layers.insert(name, info);
        }
        Name::OciLayout => {
            c.oci_layout = Some(json::read_bounded(tar, MAX_SMALL_JSON_BYTES, &name)?)
        }
        Name::IndexJson => c.index_json = Some(json::read_bounded(tar, MAX_MANIFEST_BYTES, &name)?),
        Name::ManifestJson => {
            c.manifest_json = Some(json::read_bounded(tar, MAX_CONFIG_BYTES, &name)?)
        }
        // Skipped (the reader discards the data).
        Name::Repositories | Name::LegacyMeta => {}
        Name::Root | Name::BlobsDir | Name::ShaDir | Name::LegacyDir => {}
    }
    Ok(())
}

/// Streams a blob into the store, committing it only if it has the claimed digest.
fn store_blob(
    store: &Store,
    input: &mut impl Read,
    digest: &Digest,
    what: &str,
) -> Result<(), ImageError> {
    if store.blobs().contains(digest) {
        let mut sink = DigestWriter::new(io::sink());
        io::copy(input, &mut sink).io_context(|| what.to_owned())?;
        let (_, actual, _) = sink.finish();
        if &actual != digest {
            return Err(ImageError::DigestMismatch {
                what: what.to_owned(),
                expected: digest.clone(),
                actual,
            });
        }
        return Ok(());
    }
    let mut writer = store.blobs().writer()?;
    io::copy(input, &mut writer).io_context(|| what.to_owned())?;
    commit_verified(writer, digest, what)
}

/// Commits `writer` if its content is `digest`, mapping a mismatch to [`ImageError::DigestMismatch`].
pub(crate) fn commit_verified(
    writer: BlobWriter,
    digest: &Digest,
    what: &str,
) -> Result<(), ImageError> {
    match writer.commit_expecting(digest) {
        Ok(_) => Ok(()),
        Err(StoreError::DigestMismatch { expected, actual }) => Err(ImageError::DigestMismatch {
            what: what.to_owned(),
            expected,
            actual,
        }),
        Err(e) => Err(e.into()),
    }
}

/// `oci-layout` must say version 1.0.0.
#[derive(Deserialize)]
struct OciLayoutFile {
    #[serde(rename = "imageLayoutVersion")]
    image_layout_version: String,
}

pub(crate) fn check_oci_layout(bytes: &[u8]) -> Result<(), ImageError> {
    let layout: OciLayoutFile = json::parse(bytes, || "oci-layout".to_owned())?;
    if layout.image_layout_version != "1.0.0" {
        return Err(ImageError::InvalidArchive(format!(
            "unsupported OCI layout version {:?}",
            shown(layout.image_layout_version.as_bytes())
        )));
    }
    Ok(())
}

/// One entry of a docker-archive `manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct DockerManifestItem {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags")]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default, deserialize_with = "null_default")]
    pub layers: Vec<String>,
}

fn parse_docker_manifest(bytes: &[u8]) -> Result<Vec<DockerManifestItem>, ImageError> {
    json::parse(bytes, || "manifest.json".to_owned())
}

/// The images of an OCI index whose blobs are all in the store; records the named ones.
pub(crate) fn assemble_oci(
    store: &Store,
    index: &Index,
    fallback: Option<&[DockerManifestItem]>,
) -> Result<Vec<ImportedImage>, ImageError> {
    let mut out = Vec::new();
    for desc in &index.manifests {
        let mut blobs = Vec::new();
        collect_blobs(store, desc, &mut blobs, &mut BTreeSet::new())?;
        let (manifest_desc, manifest) = resolve_manifest(store, desc)?;
        let config = read_config(store, &manifest.config.digest)?;
        check_layer_count(&manifest_desc.digest, &manifest, &config)?;
        let size = blobs.iter().map(|b| b.size).sum();
        let mut names = Vec::new();
        if let Some(full) = desc.annotations.get(annotations::CONTAINERD_IMAGE_NAME) {
            names.push(Reference::parse(full)?.to_string());
        } else if let Some(ref_name) = desc.annotations.get(annotations::REF_NAME) {
            // OCI allows a bare tag here; only a full reference names an image.
            if ref_name.contains(['/', ':', '@']) {
                names.push(Reference::parse(ref_name)?.to_string());
            }
        }
        if names.is_empty() {
            let config_path = format!("blobs/sha256/{}", manifest.config.digest.hex());
            for item in fallback.unwrap_or_default() {
                if canonical(item.config.as_bytes()).as_deref() == Some(config_path.as_str()) {
                    for tag in item.repo_tags.iter().flatten() {
                        names.push(Reference::parse(tag)?.to_string());
                    }
                }
            }
        }
        record(
            store,
            &mut out,
            names,
            desc.digest.clone(),
            desc.media_type.clone(),
            manifest.config.digest.clone(),
            size,
            config.created,
        )?;
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn record(
    store: &Store,
    out: &mut Vec<ImportedImage>,
    names: Vec<String>,
    manifest: Digest,
    media_type: String,
    config: Digest,
    size: u64,
    created: Option<String>,
) -> Result<(), ImageError> {
    let image = ImportedImage {
        name: None,
        manifest,
        media_type,
        config,
        size,
    };
    if names.is_empty() {
        out.push(image);
        return Ok(());
    }
    for name in names {
        store.images().put(ImageRecord {
            name: name.clone(),
            manifest: image.manifest.clone(),
            media_type: image.media_type.clone(),
            config: image.config.clone(),
            size: image.size,
            created: created.clone(),
        })?;
        out.push(ImportedImage {
            name: Some(name),
            ..image.clone()
        });
    }
    Ok(())
}

/// Builds Docker schema 2 images from a classic `manifest.json`.
fn assemble_docker(
    store: &Store,
    items: &[DockerManifestItem],
    c: &mut Collected,
) -> Result<Vec<ImportedImage>, ImageError> {
    let mut out = Vec::new();
    for item in items {
        let config_name = canonical(item.config.as_bytes()).ok_or_else(|| {
            ImageError::InvalidArchive(format!(
                "manifest.json config path {:?} is unsafe",
                shown(item.config.as_bytes())
            ))
        })?;
        let config_digest = match classify(&config_name, Mode::Docker) {
            Some(Name::Config(d)) if c.configs.contains_key(&config_name) => d,
            Some(Name::Blob(d)) if c.blobs.contains(&d) => d,
            _ => {
                return Err(ImageError::InvalidArchive(format!(
                    "config {config_name:?} is not in the archive"
                )))
            }
        };
        let config_bytes = store
            .blobs()
            .read_to_vec(&config_digest, MAX_CONFIG_BYTES)?;
        let config = ImageConfig::from_json(&config_bytes)?;
        if item.layers.len() != config.rootfs.diff_ids.len() {
            return Err(ImageError::InvalidImage(format!(
                "manifest.json lists {} layers but config {config_digest} lists {} diff IDs",
                item.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (path, diff_id) in item.layers.iter().zip(&config.rootfs.diff_ids) {
            let info = classic_layer(store, c, path)?;
            if &info.diff_id != diff_id {
                return Err(ImageError::DigestMismatch {
                    what: format!("layer {}", shown(path.as_bytes())),
                    expected: diff_id.clone(),
                    actual: info.diff_id,
                });
            }
            layers.push(Descriptor::new(
                &info.media_type,
                info.digest.clone(),
                info.size,
            ));
        }
        let config_desc = Descriptor::new(
            media_types::DOCKER_CONFIG,
            config_digest.clone(),
            config_bytes.len() as u64,
        );
        let manifest = Manifest::new(ManifestFormat::Docker, config_desc, layers);
        let manifest_bytes = manifest.to_json()?;
        let manifest_digest = store.blobs().put_bytes(&manifest_bytes)?;
        let size = manifest_bytes.len() as u64
            + config_bytes.len() as u64
            + manifest.layers.iter().map(|l| l.size).sum::<u64>();
        let mut names = Vec::new();
        for tag in item.repo_tags.iter().flatten() {
            names.push(Reference::parse(tag)?.to_string());
        }
        record(
            store,
            &mut out,
            names,
            manifest_digest,
            media_types::DOCKER_MANIFEST.to_owned(),
            config_digest,
            size,
            config.created.clone(),
        )?;
    }
    Ok(out)
}

/// The stored layer for a `manifest.json` layer path.
fn classic_layer(store: &Store, c: &mut Collected, path: &str) -> Result<LayerInfo, ImageError> {
    let mut name = canonical(path.as_bytes()).ok_or_else(|| {
        ImageError::InvalidArchive(format!("layer path {:?} is unsafe", shown(path.as_bytes())))
    })?;
    // Follow symlinks (bounded: a legacy link points at a physical layer).
    for _ in 0..4 {
        match c.links.get(&name) {
            Some(target) => name = target.clone(),
            None => break,
        }
    }
    if let Some(info) = c.layers.get(&name) {
        return Ok(info.clone());
    }
    match classify(&name, Mode::Docker) {
        Some(Name::Blob(digest)) if c.blobs.contains(&digest) => {
            let reader = store.blobs().open(&digest)?;
            let info =
                recompress_to_store(reader, "", store.blobs(), &import_layer_options(), None)?;
            c.layers.insert(name, info.clone());
            Ok(info)
        }
        _ => Err(ImageError::InvalidArchive(format!(
            "layer {name:?} is not in the archive"
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn names_table() {
        let hex = "a".repeat(64);
        let ok: Vec<(String, Mode, bool)> = vec![
            ("oci-layout".into(), Mode::Oci, true),
            ("./index.json".into(), Mode::Oci, true),
            (format!("blobs/sha256/{hex}"), Mode::Oci, true),
            (format!("./blobs/sha256/{hex}"), Mode::Oci, true),
            ("blobs/".into(), Mode::Oci, true),
            ("./".into(), Mode::Oci, true),
            ("manifest.json".into(), Mode::Oci, false),
            ("manifest.json".into(), Mode::Docker, true),
            (format!("{hex}.json"), Mode::Docker, true),
            (format!("{hex}.tar"), Mode::Docker, true),
            (format!("{hex}/layer.tar"), Mode::Docker, true),
            (format!("{hex}/VERSION"), Mode::Docker, true),
            (format!("{hex}/"), Mode::Docker, true),
            (format!("{hex}/layer.tar"), Mode::Oci, false),
            (format!("blobs/sha256/{}", &hex[..63]), Mode::Oci, false),
            (format!("blobs/sha512/{hex}"), Mode::Docker, false),
            (
                format!("blobs/sha256/{}", hex.to_uppercase()),
                Mode::Oci,
                false,
            ),
            (format!("../blobs/sha256/{hex}"), Mode::Oci, false),
            (format!("blobs/../blobs/sha256/{hex}"), Mode::Oci, false),
            (format!("/blobs/sha256/{hex}"), Mode::Oci, false),
            (format!("blobs//sha256/{hex}"), Mode::Oci, false),
            ("etc/passwd".into(), Mode::Docker, false),
            (format!("{hex}/../../x"), Mode::Docker, false),
            (format!("{hex}/other"), Mode::Docker, false),
            ("xyz.json".into(), Mode::Docker, false),
        ];
        for (name, mode, want) in ok {
            let got = canonical(name.as_bytes())
                .and_then(|n| classify(&n, mode))
                .is_some();
            assert_eq!(got, want, "{name} in {mode:?}");
        }
    }

    #[test]
    fn link_resolution() {
        let hex = "b".repeat(64);
        assert_eq!(
            resolve_link(
                &format!("{hex}/layer.tar"),
                format!("../{hex}.tar").as_bytes()
            ),
            Some(format!("{hex}.tar"))
        );
        assert_eq!(
            resolve_link(&format!("{hex}/layer.tar"), b"../../etc/passwd"),
            None
        );
        assert_eq!(
            resolve_link(&format!("{hex}/layer.tar"), b"/etc/passwd"),
            None
        );
    }
}
