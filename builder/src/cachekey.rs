//! Cache keys of build steps, and the records of what keyed steps produced.
//!
//! A stage's first key comes from its base: the image's config digest (which names its layers'
//! diff IDs), `scratch`, or the base stage's last key. Each step's key is a sha256 over:
//!
//! * its parent's key (so a change invalidates everything after it);
//! * its definition: the instruction as written (trigger text for ONBUILD) and the values of
//!   the variables its expansion used — the expanded instruction is a function of the two —
//!   plus the stage state it runs in (USER, WORKDIR, SHELL), and for RUN its whole environment
//!   (image ENV and every ARG in scope, as BuildKit keys RUN);
//! * its inputs: for COPY/ADD from the context the checksum of exactly the selected files
//!   (`rbuild_executor::checksum`), for `--from` a stage that stage's key, for an image its
//!   config digest, for `RUN --mount` sources the same; and what the layer blob is — an
//!   uncompressed tar (compression happens when layers leave the store, so no output's
//!   compression is in a key) of the OCI or Docker media types, with `SOURCE_DATE_EPOCH`'s
//!   clamped mtimes.
//!
//! Never in a key: secrets (only their ids, as written), cache-mount contents, mtimes.
//! Steps whose result cannot be known from their inputs are not cached: `ADD` of a URL without
//! `--checksum`.
//!
//! A record (`rbuild_cache::KeyIndex`) is written only after the step's layer blob and
//! snapshot are complete; a hit is used only when the blob still exists and the layer sits on
//! the stage's layers (its chain ID); a snapshot pruned since is unpacked again from the blob.
//!
//! [`BuildCache`] adds the portable half: `--cache-from` records (read before the build; a
//! store miss falls back to them, and a hit copies the layer blob into the store, verified,
//! stores it uncompressed — so the importing store has the very image the exporting one has —
//! unpacks it and records it) and `--cache-to` (the keys and layers this build used, the layers
//! compressed for the export, gzip unless `compression=` says otherwise). A cache
//! lives in a directory (`type=local`, an OCI image layout), in a registry (`type=registry`,
//! the same artifact pushed to a reference; see `remote_cache.rs`) or inside the image's config
//! (`type=inline`). `docs/cache-format.md` describes the format.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rbuild_cache::{Digest, Store, VerifiedReader};
use rbuild_fsutil::Root;
use rbuild_image::json;
use rbuild_image::layer::recompress_to_store;
use rbuild_image::manifest::{annotations, media_types, Descriptor, Index, Manifest};
use rbuild_image::oci_layout::OCI_LAYOUT_CONTENT;
use rbuild_image::reference::Reference;
use rbuild_image::{compressed_layer, Compression, LayerCompression, LayerOptions, ManifestFormat};
use rbuild_parser::instruction::Instruction;
use rbuild_registry::{Client, Repository};
use rbuild_solver::{PlannedStage, PlannedStep, StageBase};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::config::StageConfig;
use crate::error::BuildError;
use crate::layers::{chain_id, unpack, StageLayer};

/// The format version of keys: changing how keys are computed changes it.
const KEY_VERSION: &str = "rbuild-cache-key-v1";

/// Builds one key from length-prefixed fields (so no two field lists collide).
pub struct KeyHasher(Sha256);

impl KeyHasher {
    pub fn new(kind: &str) -> KeyHasher {
        let mut h = KeyHasher(Sha256::new());
        h.field(KEY_VERSION);
        h.field(kind);
        h
    }

    pub fn field(&mut self, value: &str) -> &mut KeyHasher {
        self.0.update((value.len() as u64).to_le_bytes());
        self.0.update(value.as_bytes());
        self
    }

    pub fn pair(&mut self, key: &str, value: &str) -> &mut KeyHasher {
        self.field(key).field(value)
    }

    pub fn finish(self) -> Digest {
        Digest::from_sha256(self.0.finalize().into())
    }
}

/// The key of a stage's base: an image (by config digest), scratch, or a stage (its key).
pub fn base_key(kind: &str, id: &str, platform: &str) -> Digest {
    let mut h = KeyHasher::new("base");
    h.pair(kind, id).pair("platform", platform);
    h.finish()
}

/// The key of `step` on top of `parent`, run in the stage state `config` (before the step),
/// with `inputs` (name, value) the caller computed (content checksums, source stage keys).
pub fn step_key(
    parent: &Digest,
    step: &PlannedStep,
    config: &StageConfig,
    layer_options: &LayerOptions,
    inputs: &[(String, String)],
) -> Digest {
    let mut h = KeyHasher::new("step");
    h.pair("parent", &parent.to_string());
    h.pair("instruction", &step.step.original);
    // The values the expansion used (ARG and ENV in scope before the step).
    for name in &step.vars_used {
        let value = step
            .args
            .iter()
            .chain(step.env.iter())
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        h.pair("var", name);
        match value {
            Some(v) => h.pair("set", v),
            None => h.field("unset"),
        };
    }
    let c = &config.config.config;
    h.pair("user", &c.user);
    h.pair("workdir", config.workdir());
    for word in config.shell() {
        h.pair("shell", &word);
    }
    if let Instruction::Run(_) = step.step.instruction {
        for entry in config.run_env() {
            h.pair("env", entry);
        }
        for (k, v) in &step.args {
            h.pair("arg", k).field(v);
        }
    }
    // The record's layer blob: an uncompressed tar of these media types, mtimes clamped.
    h.pair(
        "layer-format",
        &format!("{:?} uncompressed", layer_options.format),
    );
    if let Some(epoch) = layer_options.source_date_epoch {
        h.pair("source-date-epoch", &epoch.to_string());
    }
    for (name, value) in inputs {
        h.pair(name, value);
    }
    h.finish()
}

/// What the store remembers of a step.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// The step's layer, `None` for a step that made none.
    layer: Option<LayerRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
struct LayerRecord {
    descriptor: Descriptor,
    diff_id: Digest,
    uncompressed_size: u64,
    chain_id: Digest,
    /// When the step ran (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created: Option<String>,
}

/// A usable earlier result of `key` in the store, for a step whose stage has `parent` as its
/// top layer: `Some(layer)` (`layer` itself `None` for a step without one), or `None` when
/// there is none, the record is unreadable, its layer does not sit on `parent`, or its blob is
/// gone. A layer whose blob is present but whose snapshot was pruned is unpacked again first.
pub fn lookup(
    store: &Store,
    key: &Digest,
    parent: Option<&StageLayer>,
) -> Result<Option<Option<StageLayer>>, BuildError> {
    let Some(bytes) = store.cache_keys().get(key)? else {
        return Ok(None);
    };
    let Ok(record) = serde_json::from_slice::<Record>(&bytes) else {
        return Ok(None);
    };
    let Some(l) = record.layer else {
        return Ok(Some(None));
    };
    let layer = StageLayer {
        descriptor: l.descriptor,
        diff_id: l.diff_id,
        uncompressed_size: l.uncompressed_size,
        chain_id: l.chain_id,
        created: l.created,
    };
    if !materialize(store, &layer, parent, None)? {
        return Ok(None);
    }
    Ok(Some(Some(layer)))
}

/// Remembers that `key` produced `layer`.
pub fn record(store: &Store, key: &Digest, layer: Option<&StageLayer>) -> Result<(), BuildError> {
    let record = Record {
        layer: layer.map(|l| LayerRecord {
            descriptor: l.descriptor.clone(),
            diff_id: l.diff_id.clone(),
            uncompressed_size: l.uncompressed_size,
            chain_id: l.chain_id.clone(),
            created: l.created.clone(),
        }),
    };
    let bytes = serde_json::to_vec(&record).map_err(|e| BuildError::Io {
        what: "encoding a cache record".into(),
        source: std::io::Error::other(e),
    })?;
    store.cache_keys().put(key, &bytes)?;
    Ok(())
}

/// Fetches a missing layer blob into the store (from an imported cache).
type FetchBlob<'a> = &'a dyn Fn(&Store) -> Result<(), BuildError>;

/// Makes `layer` usable on top of `parent`: its blob in the store (fetched with `fetch` when
/// missing) and its snapshot (unpacked from the blob, diff ID checked, when missing). `false`
/// when the layer does not belong on `parent` (its chain ID says otherwise) or its blob is
/// missing and there is nowhere to fetch it from.
fn materialize(
    store: &Store,
    layer: &StageLayer,
    parent: Option<&StageLayer>,
    fetch: Option<FetchBlob<'_>>,
) -> Result<bool, BuildError> {
    let parent_chain = parent.map(|p| &p.chain_id);
    if chain_id(parent_chain, &layer.diff_id) != layer.chain_id {
        return Ok(false);
    }
    if !store.blobs().contains(&layer.descriptor.digest) {
        match fetch {
            Some(fetch) => fetch(store)?,
            None => return Ok(false),
        }
    }
    if store.snapshots().get(&layer.chain_id)?.is_none() {
        store
            .snapshots()
            .create(&layer.chain_id, parent_chain, |dir: &Path| {
                unpack(store, &layer.descriptor, &layer.diff_id, dir)
            })?;
    }
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// Cache import and export (`--cache-from type=local,src=DIR`, `--cache-to type=local,dest=DIR`).
// The format is documented in docs/cache-format.md.

/// `artifactType` of the cache manifest (and of its entry in `index.json`).
pub const CACHE_ARTIFACT_TYPE: &str = "application/vnd.rbuild.cache.v1";
/// Media type of the cache config blob: the records.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.rbuild.cache.config.v1+json";
/// `org.opencontainers.image.ref.name` of the cache manifest in `index.json`.
pub const CACHE_REF_NAME: &str = "rbuild-cache";
/// The image config key of an inline cache (`--cache-to type=inline`): a cache config (the
/// records) whose layers are the image's own.
pub const INLINE_CACHE_KEY: &str = "rbuild.cache.v1";
/// OCI's empty descriptor (`{}`), the single "layer" of a cache that has no layer.
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub(crate) const EMPTY_CONTENT: &[u8] = b"{}";
/// The most a cache config may hold (about 100,000 records).
pub(crate) const MAX_CACHE_CONFIG_BYTES: u64 = 64 << 20;
/// The most `oci-layout` may hold.
const MAX_LAYOUT_FILE_BYTES: u64 = 4 << 10;
/// Names of temp files an export writes in DIR before renaming them into place.
const TEMP_PREFIX: &str = ".rbuild-tmp-";

/// Which steps `--cache-to` exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// The steps of the final image's stages: the target stage and the stages it is `FROM`.
    #[default]
    Min,
    /// Every step the build ran or found cached, in every stage.
    Max,
}

/// Where `--cache-to` writes the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheTarget {
    /// `type=local,dest=DIR`: an OCI image layout, merged with what DIR holds.
    Local(PathBuf),
    /// `type=registry,ref=REF`: the cache artifact pushed to REF (replacing what REF named).
    Registry(Reference),
    /// `type=inline`: the records inside the image's config (their layers are the image's).
    Inline,
}

/// `--cache-to type=local|registry|inline,…,mode=…[,compression=…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheExport {
    pub target: CacheTarget,
    pub mode: CacheMode,
    /// `Some`: every layer blob is exported in this compression (recompressed if it is in
    /// another one). `None`: uncompressed layers (those builds make) are exported gzip, and
    /// compressed ones (records made by older rbuild versions) as they are.
    pub compression: Option<Compression>,
}

/// Where `--cache-from` reads a cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheSource {
    /// `type=local,src=DIR`.
    Local(PathBuf),
    /// `type=registry,ref=REF` or a bare `REF`: a cache artifact, or an image with an inline
    /// cache.
    Registry(Reference),
}

impl std::fmt::Display for CacheSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheSource::Local(dir) => write!(f, "{}", dir.display()),
            CacheSource::Registry(reference) => write!(f, "{reference}"),
        }
    }
}

/// The cache config blob.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct CacheConfig {
    pub(crate) records: Vec<CacheRecord>,
}

/// One step's result: its key and its layer (`null` for a step that made none).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CacheRecord {
    pub(crate) key: Digest,
    pub(crate) layer: Option<CacheLayer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CacheLayer {
    pub(crate) descriptor: Descriptor,
    pub(crate) diff_id: Digest,
    uncompressed_size: u64,
    chain_id: Digest,
    /// The chain ID of the layer below; absent for a bottom layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent_chain_id: Option<Digest>,
    /// When the step first ran (RFC 3339): a builder importing the record writes the same
    /// history, hence the same image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created: Option<String>,
}

impl CacheLayer {
    fn new(layer: &StageLayer, parent: Option<&StageLayer>) -> CacheLayer {
        CacheLayer {
            descriptor: layer.descriptor.clone(),
            diff_id: layer.diff_id.clone(),
            uncompressed_size: layer.uncompressed_size,
            chain_id: layer.chain_id.clone(),
            parent_chain_id: parent.map(|p| p.chain_id.clone()),
            created: layer.created.clone(),
        }
    }

    fn stage_layer(&self) -> StageLayer {
        StageLayer {
            descriptor: self.descriptor.clone(),
            diff_id: self.diff_id.clone(),
            uncompressed_size: self.uncompressed_size,
            chain_id: self.chain_id.clone(),
            created: self.created.clone(),
        }
    }

    /// Whether the record is self-consistent: its chain ID is its diff ID on its parent.
    fn consistent(&self) -> bool {
        chain_id(self.parent_chain_id.as_ref(), &self.diff_id) == self.chain_id
    }
}

/// Where an imported cache's layer blobs are read from.
pub(crate) enum SourceKind {
    /// A `--cache-from type=local` directory.
    Local(Root),
    /// The repository of a `--cache-from type=registry` reference.
    Registry(Repository),
}

/// A `--cache-from` source.
struct ImportSource {
    /// What warnings name it by (the directory or the reference).
    name: String,
    kind: SourceKind,
}

/// What an imported record says, and which source it came from.
struct Imported {
    source: usize,
    layer: Option<CacheLayer>,
}

/// The cache side of one build: the records of the `--cache-from` directories (read before the
/// build starts), and the steps the build ran or found cached (what `--cache-to` exports).
/// Stages use it from several threads.
pub struct BuildCache {
    /// The media types' family of this build's layers: imported layers are stored as this
    /// build would have stored them.
    layer_format: ManifestFormat,
    sources: Vec<ImportSource>,
    imported: BTreeMap<Digest, Imported>,
    /// key → (stage index, layer): every keyed step of this build.
    used: Mutex<BTreeMap<Digest, (usize, Option<CacheLayer>)>>,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// Records of this build in the export.
    pub exported: usize,
    /// Records in the directory now (older ones kept included).
    pub total: usize,
}

impl BuildCache {
    /// Reads the records of each `--cache-from` source: a directory's `index.json`, manifest
    /// and config; a registry reference's manifest and config (a cache artifact) or image
    /// config (an inline cache), fetched with `client`. A source that holds no cache (yet) or
    /// an unreadable one is reported through `warn` and skipped: the build runs without it.
    /// Layer blobs are only read (and verified) when a step uses them, and stored as a build of
    /// `layer_format` stores its layers (uncompressed tars of those media types).
    pub fn open(
        store: &Store,
        cache_from: &[CacheSource],
        layer_format: ManifestFormat,
        client: &dyn Fn() -> Result<std::sync::Arc<Client>, BuildError>,
        warn: &mut dyn FnMut(String),
    ) -> BuildCache {
        let mut cache = BuildCache {
            layer_format,
            sources: Vec::new(),
            imported: BTreeMap::new(),
            used: Mutex::new(BTreeMap::new()),
        };
        for from in cache_from {
            let read = match from {
                CacheSource::Local(dir) => open_local(dir),
                CacheSource::Registry(reference) => client().and_then(|client| {
                    crate::remote_cache::read_records(store, &client, reference)
                }),
            };
            let (kind, records) = match read {
                Ok(Some(found)) => found,
                Ok(None) => {
                    warn(format!("--cache-from {from}: no rbuild cache there (yet)"));
                    continue;
                }
                Err(e) => {
                    warn(format!(
                        "--cache-from {from}: ignored, the cache cannot be read: {e}"
                    ));
                    continue;
                }
            };
            let source = cache.sources.len();
            cache.sources.push(ImportSource {
                name: from.to_string(),
                kind,
            });
            for record in records {
                if record.layer.as_ref().is_some_and(|l| !l.consistent()) {
                    continue;
                }
                // The first source that has a key wins.
                cache.imported.entry(record.key).or_insert(Imported {
                    source,
                    layer: record.layer,
                });
            }
        }
        cache
    }

    /// How many records the `--cache-from` directories hold.
    pub fn imported_records(&self) -> usize {
        self.imported.len()
    }

    /// A usable earlier result of `key` for a step whose stage has `parent` as its top layer:
    /// from the store ([`lookup`]), else from an imported cache — whose layer blob is then
    /// copied into the store (verified) and kept there uncompressed (the layer this build would
    /// have made), unpacked on `parent`'s snapshot, and recorded in the store, so later builds
    /// find it there. A result that cannot be used (a corrupt blob, a diff ID mismatch) is
    /// reported through `warn` and counts as a miss: the step runs.
    pub fn lookup(
        &self,
        store: &Store,
        key: &Digest,
        parent: Option<&StageLayer>,
        warn: &dyn Fn(String),
    ) -> Result<Option<Option<StageLayer>>, BuildError> {
        match lookup(store, key, parent) {
            Ok(Some(hit)) => return Ok(Some(hit)),
            Ok(None) => {}
            Err(e) => warn(format!(
                "the stored result of a step cannot be used, the step runs again: {e}"
            )),
        }
        let Some(imported) = self.imported.get(key) else {
            return Ok(None);
        };
        let Some(source) = self.sources.get(imported.source) else {
            return Err(BuildError::Internal("an imported record has no source"));
        };
        let layer = imported.layer.as_ref();
        match import_record(store, source, layer, parent, self.layer_format) {
            Ok(Some(layer)) => {
                record(store, key, layer.as_ref())?;
                Ok(Some(layer))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                warn(format!(
                    "--cache-from {}: a cached step result was refused, the step runs: {e}",
                    source.name
                ));
                Ok(None)
            }
        }
    }

    /// Notes that step `key` of stage `stage` (on `parent`) has `layer`, for the export.
    pub fn note(
        &self,
        stage: usize,
        key: &Digest,
        parent: Option<&StageLayer>,
        layer: Option<&StageLayer>,
    ) {
        if let Ok(mut used) = self.used.lock() {
            used.insert(
                key.clone(),
                (stage, layer.map(|l| CacheLayer::new(l, parent))),
            );
        }
    }

    /// Writes the records of this build — of the stages in `target_chain` for
    /// [`CacheMode::Min`], of every stage for [`CacheMode::Max`] — and their layer blobs
    /// (compressed as `to.compression` says, see [`CacheExport::compression`]) where
    /// `to.target` says:
    ///
    /// - a directory: merged with what is already there (older records are kept, this build's
    ///   replace those with the same key). Blobs are written first, `index.json` last
    ///   (atomically), under an exclusive lock on the directory. An existing cache that cannot
    ///   be read is reported through `warn` and replaced.
    /// - a registry reference: the cache artifact is pushed there with `client`, replacing what
    ///   the reference named.
    /// - inline: nothing here (the build put [`BuildCache::inline_records`] into the image).
    pub fn export(
        &self,
        store: &Store,
        to: &CacheExport,
        target_chain: &BTreeSet<usize>,
        client: &dyn Fn() -> Result<std::sync::Arc<Client>, BuildError>,
        warn: &dyn Fn(String),
    ) -> Result<ExportSummary, BuildError> {
        let mut ours = self.records(to.mode, target_chain)?;
        if to.target == CacheTarget::Inline {
            return Ok(ExportSummary {
                exported: ours.len(),
                total: ours.len(),
            });
        }
        let how = match to.compression {
            None => LayerCompression::default(),
            Some(compression) => LayerCompression {
                compression,
                level: None,
                force: true,
            },
        };
        compress_records(store, &mut ours, &how)?;
        match &to.target {
            CacheTarget::Local(dest) => export_records(store, dest, ours, warn),
            CacheTarget::Registry(reference) => {
                crate::remote_cache::push_records(store, &*client()?, reference, ours)
            }
            CacheTarget::Inline => Err(BuildError::Internal("inline caches are not pushed")),
        }
    }

    /// The inline cache of the image (`--cache-to type=inline`): this build's records of
    /// `mode` (the final image's stages for `min`), as a cache config.
    pub fn inline_records(
        &self,
        target_chain: &BTreeSet<usize>,
        mode: CacheMode,
    ) -> Result<serde_json::Value, BuildError> {
        let config = CacheConfig {
            records: self.records(mode, target_chain)?,
        };
        serde_json::to_value(&config).map_err(|e| BuildError::Io {
            what: "encoding the inline cache".into(),
            source: std::io::Error::other(e),
        })
    }

    /// This build's records of `mode`.
    fn records(
        &self,
        mode: CacheMode,
        target_chain: &BTreeSet<usize>,
    ) -> Result<Vec<CacheRecord>, BuildError> {
        let used = self
            .used
            .lock()
            .map_err(|_| BuildError::Internal("the cache's step list is poisoned"))?;
        Ok(used
            .iter()
            .filter(|(_, (stage, _))| mode == CacheMode::Max || target_chain.contains(stage))
            .map(|(key, (_, layer))| CacheRecord {
                key: key.clone(),
                layer: layer.clone(),
            })
            .collect())
    }
}

/// Replaces each record's layer blob by its copy compressed as `how` says (made once per store,
/// see `rbuild_image::compressed_layers`).
fn compress_records(
    store: &Store,
    records: &mut [CacheRecord],
    how: &LayerCompression,
) -> Result<(), BuildError> {
    for layer in records.iter_mut().filter_map(|r| r.layer.as_mut()) {
        layer.descriptor =
            compressed_layer(store, &layer.descriptor, &layer.diff_id, how, &|_| {})?;
    }
    Ok(())
}

/// The stages the final image is made of: `target` and the stages it is (transitively) `FROM`.
pub fn target_chain(stages: &[PlannedStage], target: usize) -> BTreeSet<usize> {
    let mut chain = BTreeSet::new();
    let mut next = Some(target);
    while let Some(index) = next {
        if !chain.insert(index) {
            break;
        }
        next = stages
            .iter()
            .find(|s| s.index == index)
            .and_then(|s| match s.base {
                StageBase::Stage(base) => Some(base),
                _ => None,
            });
    }
    chain
}

/// Reads a `--cache-from type=local` directory (under a shared lock): `None` when it holds no
/// cache.
fn open_local(dir: &Path) -> Result<Option<(SourceKind, Vec<CacheRecord>)>, BuildError> {
    if std::fs::symlink_metadata(dir).is_err_and(|e| e.kind() == ErrorKind::NotFound) {
        return Ok(None);
    }
    let root = Root::open(dir).map_err(|source| BuildError::Fs {
        what: format!("opening {}", dir.display()),
        source,
    })?;
    let _lock = lock_dir(dir, false)?;
    Ok(read_cache_dir(&root)?.map(|found| (SourceKind::Local(root), found.records)))
}

/// Makes an imported record's layer usable in the store; `None` when it does not belong on
/// `parent`. The layer is kept as a build of `layer_format` keeps its layers — an uncompressed
/// tar, blob digest = diff ID — so the image made of it is the exporting store's image: a
/// compressed blob is fetched, stored decompressed (its content checked against the diff ID and
/// the record's size) and dropped. A store that has the uncompressed blob fetches nothing.
fn import_record(
    store: &Store,
    source: &ImportSource,
    layer: Option<&CacheLayer>,
    parent: Option<&StageLayer>,
    layer_format: ManifestFormat,
) -> Result<Option<Option<StageLayer>>, BuildError> {
    let Some(layer) = layer else {
        return Ok(Some(None));
    };
    if layer.parent_chain_id.as_ref() != parent.map(|p| &p.chain_id) {
        return Ok(None);
    }
    let mut stage_layer = layer.stage_layer();
    stage_layer.descriptor = Descriptor::new(
        layer_format.layer_media_type(Compression::None),
        layer.diff_id.clone(),
        layer.uncompressed_size,
    );
    let fetch = |store: &Store| {
        let sent = &layer.descriptor;
        let had = store.blobs().contains(&sent.digest);
        match &source.kind {
            SourceKind::Local(root) => copy_blob_into_store(root, sent, store)?,
            SourceKind::Registry(repository) => repository.fetch_blob(store, sent, &|_| {})?,
        }
        if sent.digest == layer.diff_id {
            return Ok(());
        }
        let decompressed = decompress_into_store(store, sent, &layer.diff_id);
        if !had {
            store.blobs().remove(&sent.digest)?;
        }
        decompressed
    };
    if !materialize(store, &stage_layer, parent, Some(&fetch))? {
        return Ok(None);
    }
    let size = store.blobs().size(&layer.diff_id)?;
    if size != layer.uncompressed_size {
        return Err(invalid(
            &format!("layer {}", layer.diff_id),
            format!(
                "it is {size} bytes uncompressed, its record says {}",
                layer.uncompressed_size
            ),
        ));
    }
    Ok(Some(Some(stage_layer)))
}

/// Stores the layer blob `compressed` (in the store) decompressed, checking that its content
/// is `diff_id`.
fn decompress_into_store(
    store: &Store,
    compressed: &Descriptor,
    diff_id: &Digest,
) -> Result<(), BuildError> {
    let options = LayerOptions {
        compression: Compression::None,
        ..LayerOptions::default()
    };
    let blob = store.blobs().open(&compressed.digest)?;
    let media_type = &compressed.media_type;
    recompress_to_store(blob, media_type, store.blobs(), &options, Some(diff_id))?;
    Ok(())
}

/// Streams blob `desc` of a cache directory into the store, committed only when its size and
/// digest are what `desc` says.
fn copy_blob_into_store(root: &Root, desc: &Descriptor, store: &Store) -> Result<(), BuildError> {
    let rel = blob_path(&desc.digest);
    let mut file = open_blob(root, &rel)?;
    let mut writer = store.blobs().writer()?;
    let copied = std::io::copy(
        &mut (&mut file).take(desc.size.saturating_add(1)),
        &mut writer,
    )
    .map_err(|e| BuildError::Io {
        what: format!("copying {rel}"),
        source: e,
    })?;
    if copied != desc.size {
        return Err(invalid(
            &rel,
            format!(
                "the blob is {copied} bytes, its descriptor says {}",
                desc.size
            ),
        ));
    }
    writer
        .commit_expecting(&desc.digest)
        .map_err(|e| invalid(&rel, e.to_string()))?;
    Ok(())
}

fn blob_path(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// A cache-format error about `what`.
fn invalid(what: &str, reason: impl std::fmt::Display) -> BuildError {
    BuildError::Io {
        what: what.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, reason.to_string()),
    }
}

/// Opens a regular file beneath a cache directory (symlinks resolved inside it).
fn open_blob(root: &Root, rel: &str) -> Result<File, BuildError> {
    let file = root.open_file(rel).map_err(|source| BuildError::Fs {
        what: format!("opening {rel}"),
        source,
    })?;
    let meta = file.metadata().map_err(|e| BuildError::Io {
        what: format!("reading {rel}"),
        source: e,
    })?;
    if !meta.is_file() {
        return Err(invalid(rel, "not a regular file"));
    }
    Ok(file)
}

/// Reads a small file beneath a cache directory whole; `None` when it does not exist.
fn read_small(root: &Root, rel: &str, limit: u64) -> Result<Option<Vec<u8>>, BuildError> {
    match root.exists(rel) {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(source) => {
            return Err(BuildError::Fs {
                what: format!("looking for {rel}"),
                source,
            })
        }
    }
    let file = open_blob(root, rel)?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| BuildError::Io {
            what: format!("reading {rel}"),
            source: e,
        })?;
    if bytes.len() as u64 > limit {
        return Err(invalid(rel, format!("larger than {limit} bytes")));
    }
    Ok(Some(bytes))
}

/// Reads the blob `desc` names, checking its size and digest.
fn read_json_blob(root: &Root, desc: &Descriptor, limit: u64) -> Result<Vec<u8>, BuildError> {
    let rel = blob_path(&desc.digest);
    if desc.size > limit {
        return Err(invalid(&rel, format!("larger than {limit} bytes")));
    }
    let bytes = read_small(root, &rel, limit)?.ok_or_else(|| invalid(&rel, "missing"))?;
    if bytes.len() as u64 != desc.size {
        return Err(invalid(
            &rel,
            format!("{} bytes, its descriptor says {}", bytes.len(), desc.size),
        ));
    }
    let actual = Digest::of_bytes(&bytes);
    if actual != desc.digest {
        return Err(invalid(
            &rel,
            format!("content digest mismatch: got {actual}"),
        ));
    }
    Ok(bytes)
}

/// What a cache directory holds.
struct CacheDir {
    /// `index.json`.
    index: Index,
    /// The descriptors (in `index`) of the rbuild cache manifests, with their config digests.
    ours: Vec<(Descriptor, Digest)>,
    /// Their records, merged (a later manifest's record of a key wins).
    records: Vec<CacheRecord>,
}

/// Whether an `index.json` entry is an rbuild cache manifest.
fn is_cache_entry(desc: &Descriptor) -> bool {
    desc.media_type == media_types::OCI_MANIFEST
        && (desc.artifact_type == CACHE_ARTIFACT_TYPE
            || desc
                .annotations
                .get(annotations::REF_NAME)
                .map(String::as_str)
                == Some(CACHE_REF_NAME))
}

/// Reads a cache directory: `None` when it has no `index.json`. Manifest and config blobs are
/// verified against their descriptors.
fn read_cache_dir(root: &Root) -> Result<Option<CacheDir>, BuildError> {
    let Some(index_bytes) = read_small(root, "index.json", json::MAX_MANIFEST_BYTES)? else {
        return Ok(None);
    };
    let layout = read_small(root, "oci-layout", MAX_LAYOUT_FILE_BYTES)?
        .ok_or_else(|| invalid("oci-layout", "missing: not an OCI image layout"))?;
    let version = serde_json::from_slice::<serde_json::Value>(&layout)
        .ok()
        .and_then(|v| v.get("imageLayoutVersion")?.as_str().map(str::to_owned));
    if version.as_deref() != Some("1.0.0") {
        return Err(invalid("oci-layout", "imageLayoutVersion is not 1.0.0"));
    }
    let index = Index::from_json(&index_bytes).map_err(|e| invalid("index.json", e))?;
    let mut ours = Vec::new();
    let mut merged: BTreeMap<Digest, Option<CacheLayer>> = BTreeMap::new();
    for desc in index.manifests.iter().filter(|d| is_cache_entry(d)) {
        let bytes = read_json_blob(root, desc, json::MAX_MANIFEST_BYTES)?;
        let manifest =
            Manifest::from_json(&bytes).map_err(|e| invalid(&blob_path(&desc.digest), e))?;
        if manifest.config.media_type != CACHE_CONFIG_MEDIA_TYPE {
            return Err(invalid(
                &blob_path(&desc.digest),
                format!(
                    "the cache manifest's config has media type {:?}, not {CACHE_CONFIG_MEDIA_TYPE}",
                    manifest.config.media_type
                ),
            ));
        }
        let config_bytes = read_json_blob(root, &manifest.config, MAX_CACHE_CONFIG_BYTES)?;
        let config: CacheConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| invalid(&blob_path(&manifest.config.digest), e))?;
        for r in config.records {
            merged.insert(r.key, r.layer);
        }
        ours.push((desc.clone(), manifest.config.digest.clone()));
    }
    if ours.is_empty() {
        return Ok(None);
    }
    let records = merged
        .into_iter()
        .map(|(key, layer)| CacheRecord { key, layer })
        .collect();
    Ok(Some(CacheDir {
        index,
        ours,
        records,
    }))
}

/// An `flock` on a cache directory (shared to read, exclusive to write); released on drop.
fn lock_dir(dir: &Path, exclusive: bool) -> Result<File, BuildError> {
    let file = File::open(dir).map_err(|e| BuildError::Io {
        what: format!("opening {}", dir.display()),
        source: e,
    })?;
    let op = if exclusive {
        rustix::fs::FlockOperation::LockExclusive
    } else {
        rustix::fs::FlockOperation::LockShared
    };
    rustix::fs::flock(&file, op).map_err(|e| BuildError::Io {
        what: format!("locking {}", dir.display()),
        source: e.into(),
    })?;
    Ok(file)
}

/// Writes `records` (this build's) into the cache directory `dest`, merged with its contents.
fn export_records(
    store: &Store,
    dest: &Path,
    ours: Vec<CacheRecord>,
    warn: &dyn Fn(String),
) -> Result<ExportSummary, BuildError> {
    let io = |what: String| move |e: std::io::Error| BuildError::Io { what, source: e };
    let blob_dir = dest.join("blobs").join("sha256");
    std::fs::create_dir_all(&blob_dir).map_err(io(format!("creating {}", blob_dir.display())))?;
    let _lock = lock_dir(dest, true)?;
    remove_stale_temps(dest);
    let root = Root::open(dest).map_err(|source| BuildError::Fs {
        what: format!("opening {}", dest.display()),
        source,
    })?;
    let existing = match read_cache_dir(&root) {
        Ok(existing) => existing,
        Err(e) => {
            warn(format!(
                "--cache-to {}: the cache there cannot be read, it is replaced: {e}",
                dest.display()
            ));
            None
        }
    };
    // Older records whose layer blob is still there are kept; ours replace them by key.
    let mut merged: BTreeMap<Digest, Option<CacheLayer>> = BTreeMap::new();
    if let Some(existing) = &existing {
        for r in &existing.records {
            let blob_there = r.layer.as_ref().is_none_or(|l| {
                std::fs::symlink_metadata(blob_dir.join(l.descriptor.digest.hex()))
                    .is_ok_and(|m| m.is_file() && m.len() == l.descriptor.size)
            });
            if blob_there {
                merged.insert(r.key.clone(), r.layer.clone());
            }
        }
    }
    let exported = ours.len();
    let mut written = BTreeSet::new();
    for r in ours {
        if let Some(l) = &r.layer {
            if written.insert(l.descriptor.digest.clone()) {
                copy_blob_to_dir(store, &l.descriptor, dest, &blob_dir)?;
            }
        }
        merged.insert(r.key, r.layer);
    }
    let total = merged.len();
    let artifact = CacheArtifact::new(merged)?;
    if artifact.uses_empty {
        write_bytes_blob(dest, &blob_dir, EMPTY_CONTENT)?;
    }
    let config_digest = write_bytes_blob(dest, &blob_dir, &artifact.config)?;
    let manifest_bytes = artifact.manifest;
    let manifest_digest = write_bytes_blob(dest, &blob_dir, &manifest_bytes)?;
    sync_dir(&blob_dir)?;
    // index.json: whatever else was there, and our one manifest.
    let mut entry = Descriptor::new(
        media_types::OCI_MANIFEST,
        manifest_digest.clone(),
        manifest_bytes.len() as u64,
    );
    entry.artifact_type = CACHE_ARTIFACT_TYPE.to_string();
    entry.annotations.insert(
        annotations::REF_NAME.to_string(),
        CACHE_REF_NAME.to_string(),
    );
    let mut entries: Vec<Descriptor> = existing
        .as_ref()
        .map(|e| {
            e.index
                .manifests
                .iter()
                .filter(|d| !is_cache_entry(d))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let others: BTreeSet<Digest> = entries.iter().map(|d| d.digest.clone()).collect();
    entries.push(entry);
    let index_bytes = Index::new(ManifestFormat::Oci, entries).to_json()?;
    if read_small(&root, "oci-layout", MAX_LAYOUT_FILE_BYTES)?.as_deref()
        != Some(OCI_LAYOUT_CONTENT)
    {
        write_file_atomic(dest, &dest.join("oci-layout"), |f| {
            f.write_all(OCI_LAYOUT_CONTENT)
        })?;
    }
    write_file_atomic(dest, &dest.join("index.json"), |f| {
        f.write_all(&index_bytes)
    })?;
    sync_dir(dest)?;
    // The previous manifests and configs are no longer referenced.
    for (desc, config) in existing.iter().flat_map(|e| e.ours.iter()) {
        for old in [&desc.digest, config] {
            if *old != manifest_digest && *old != config_digest && !others.contains(old) {
                let _ = std::fs::remove_file(blob_dir.join(old.hex()));
            }
        }
    }
    Ok(ExportSummary { exported, total })
}

/// The cache artifact of some records: its config and manifest (see docs/cache-format.md).
pub(crate) struct CacheArtifact {
    /// The config blob (the records).
    pub(crate) config: Vec<u8>,
    /// The manifest.
    pub(crate) manifest: Vec<u8>,
    /// Whether the manifest lists the empty blob ([`EMPTY_CONTENT`]) as its one layer.
    pub(crate) uses_empty: bool,
}

impl CacheArtifact {
    pub(crate) fn new(
        records: BTreeMap<Digest, Option<CacheLayer>>,
    ) -> Result<CacheArtifact, BuildError> {
        // The manifest lists every layer blob the records name, once, sorted by digest.
        let mut layers: BTreeMap<Digest, Descriptor> = BTreeMap::new();
        for l in records.values().flatten() {
            let mut d = Descriptor::new(
                &l.descriptor.media_type,
                l.descriptor.digest.clone(),
                l.descriptor.size,
            );
            d.annotations.clear();
            layers.entry(d.digest.clone()).or_insert(d);
        }
        let mut layers: Vec<Descriptor> = layers.into_values().collect();
        let uses_empty = layers.is_empty();
        if uses_empty {
            layers.push(Descriptor::new(
                EMPTY_MEDIA_TYPE,
                Digest::of_bytes(EMPTY_CONTENT),
                EMPTY_CONTENT.len() as u64,
            ));
        }
        let config = CacheConfig {
            records: records
                .into_iter()
                .map(|(key, layer)| CacheRecord { key, layer })
                .collect(),
        };
        let config = json::to_go_json_indent(&config)?;
        let mut manifest = Manifest::new(
            ManifestFormat::Oci,
            Descriptor::new(
                CACHE_CONFIG_MEDIA_TYPE,
                Digest::of_bytes(&config),
                config.len() as u64,
            ),
            layers,
        );
        manifest.artifact_type = CACHE_ARTIFACT_TYPE.to_string();
        Ok(CacheArtifact {
            manifest: manifest.to_json()?,
            config,
            uses_empty,
        })
    }
}

/// Copies a store blob into the cache directory unless an intact copy is there already
/// (checked by hashing it). The store's reader verifies the digest as it streams.
fn copy_blob_to_dir(
    store: &Store,
    desc: &Descriptor,
    dest: &Path,
    blob_dir: &Path,
) -> Result<(), BuildError> {
    let target = blob_dir.join(desc.digest.hex());
    if std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_file() && m.len() == desc.size) {
        let intact = File::open(&target).is_ok_and(|f| {
            let mut reader = VerifiedReader::new(f, desc.digest.clone());
            std::io::copy(&mut reader, &mut std::io::sink()).is_ok() && reader.is_verified()
        });
        if intact {
            return Ok(());
        }
    }
    let mut reader = store.blobs().open(&desc.digest)?;
    write_file_atomic(dest, &target, |f| {
        let n = std::io::copy(&mut reader, f)?;
        if n != desc.size {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("blob {} is {n} bytes, not {}", desc.digest, desc.size),
            ));
        }
        Ok(())
    })
}

/// Writes `bytes` as a blob of the cache directory; returns its digest.
fn write_bytes_blob(dest: &Path, blob_dir: &Path, bytes: &[u8]) -> Result<Digest, BuildError> {
    let digest = Digest::of_bytes(bytes);
    let target = blob_dir.join(digest.hex());
    if std::fs::read(&target).is_ok_and(|existing| existing == bytes) {
        return Ok(digest);
    }
    write_file_atomic(dest, &target, |f| f.write_all(bytes))?;
    Ok(digest)
}

/// Writes `target` through a temp file in `dest`, fsynced and renamed into place.
fn write_file_atomic(
    dest: &Path,
    target: &Path,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), BuildError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let temp = dest.join(format!(
        "{TEMP_PREFIX}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let _ = std::fs::remove_file(&temp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&temp)?;
        fill(&mut file)?;
        file.sync_all()?;
        std::fs::rename(&temp, target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(|e| BuildError::Io {
        what: format!("writing {}", target.display()),
        source: e,
    })
}

fn sync_dir(dir: &Path) -> Result<(), BuildError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BuildError::Io {
            what: format!("syncing {}", dir.display()),
            source: e,
        })
}

/// Removes temp files an interrupted export left (the caller holds the exclusive lock).
fn remove_stale_temps(dest: &Path) {
    let Ok(entries) = std::fs::read_dir(dest) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_delimited() {
        let key = |fields: &[&str]| {
            let mut h = KeyHasher::new("t");
            for f in fields {
                h.field(f);
            }
            h.finish()
        };
        assert_ne!(key(&["ab", "c"]), key(&["a", "bc"]));
        assert_ne!(key(&["a"]), key(&["a", ""]));
        assert_eq!(key(&["a", "b"]), key(&["a", "b"]));
    }

    /// A scratch dir removed on drop.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("rbuild-cachekey-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        Scratch(dir)
    }

    /// A layer holding `/f` = `content`, committed into `store` on `parent`.
    fn make_layer(
        store: &Store,
        dir: &Path,
        content: &str,
        parent: Option<&StageLayer>,
    ) -> StageLayer {
        let upper = dir.join(format!(
            "upper-{}",
            Digest::of_bytes(content.as_bytes()).hex()
        ));
        std::fs::create_dir_all(&upper).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(upper.join("f"), content).unwrap_or_else(|e| panic!("{e}"));
        crate::layers::commit_layer(store, &upper, parent, &LayerOptions::default())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn read_f(store: &Store, layer: &StageLayer) -> String {
        let snap = store
            .snapshots()
            .get(&layer.chain_id)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no snapshot {}", layer.chain_id));
        std::fs::read_to_string(snap.path.join("f")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn no_registry() -> Result<std::sync::Arc<Client>, BuildError> {
        Err(BuildError::Internal("no registry in these tests"))
    }

    fn open_cache(dirs: &[PathBuf]) -> (BuildCache, Vec<String>) {
        let mut warnings = Vec::new();
        static OPENED: AtomicU64 = AtomicU64::new(0);
        let sources: Vec<CacheSource> = dirs.iter().cloned().map(CacheSource::Local).collect();
        // Local sources do not use the store: a throwaway one.
        let tmp = scratch(&format!("open-{}", OPENED.fetch_add(1, Ordering::Relaxed)));
        let store = Store::open(&tmp.0.join("s")).unwrap_or_else(|e| panic!("{e}"));
        let cache = BuildCache::open(
            &store,
            &sources,
            ManifestFormat::Oci,
            &no_registry,
            &mut |w| warnings.push(w),
        );
        (cache, warnings)
    }

    fn config_records(dir: &Path) -> CacheConfig {
        let root = Root::open(dir).unwrap_or_else(|e| panic!("{e}"));
        let found = read_cache_dir(&root)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no cache in {}", dir.display()));
        CacheConfig {
            records: found.records,
        }
    }

    /// Layer snapshots keep owners: these tests unpack as root only.
    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[test]
    fn export_then_import_into_a_fresh_store() {
        if !is_root() {
            eprintln!("SKIPPED: needs root");
            return;
        }
        let tmp = scratch("roundtrip");
        let a = Store::open(&tmp.0.join("a")).unwrap_or_else(|e| panic!("{e}"));
        let l1 = make_layer(&a, &tmp.0, "one", None);
        let l2 = make_layer(&a, &tmp.0, "two", Some(&l1));
        let (k1, k2, k3) = (
            Digest::of_bytes(b"k1"),
            Digest::of_bytes(b"k2"),
            Digest::of_bytes(b"k3"),
        );
        let (exporting, _) = open_cache(&[]);
        exporting.note(0, &k1, None, Some(&l1));
        exporting.note(0, &k2, Some(&l1), Some(&l2));
        exporting.note(0, &k3, Some(&l2), None);
        let dest = tmp.0.join("cache");
        let to = CacheExport {
            target: CacheTarget::Local(dest.clone()),
            mode: CacheMode::Max,
            compression: None,
        };
        let summary = exporting
            .export(&a, &to, &BTreeSet::new(), &no_registry, &|w| panic!("{w}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            summary,
            ExportSummary {
                exported: 3,
                total: 3
            }
        );
        for f in ["oci-layout", "index.json"] {
            assert!(dest.join(f).is_file(), "{f}");
        }
        // The store keeps the built layers uncompressed; the export has them gzip.
        for l in [&l1, &l2] {
            assert_eq!(l.descriptor.media_type, media_types::OCI_LAYER_TAR);
            assert_eq!(l.descriptor.digest, l.diff_id);
        }
        let exported = exported_layers(&dest);
        assert_eq!(exported.len(), 2);
        for d in &exported {
            assert_eq!(d.media_type, media_types::OCI_LAYER_GZIP);
            assert!(dest.join("blobs/sha256").join(d.digest.hex()).is_file());
        }

        let b = Store::open(&tmp.0.join("b")).unwrap_or_else(|e| panic!("{e}"));
        let (cache, warnings) = open_cache(std::slice::from_ref(&dest));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(cache.imported_records(), 3);
        let warn = |w: String| panic!("{w}");
        // A record is only for the parent it was made on.
        assert_eq!(
            cache
                .lookup(&b, &k2, None, &warn)
                .unwrap_or_else(|e| panic!("{e}")),
            None
        );
        let got1 = cache
            .lookup(&b, &k1, None, &warn)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got1, Some(Some(l1.clone())));
        let got2 = cache
            .lookup(&b, &k2, Some(&l1), &warn)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got2, Some(Some(l2.clone())));
        let got3 = cache
            .lookup(&b, &k3, Some(&l2), &warn)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got3, Some(None));
        assert_eq!(read_f(&b, &l1), "one");
        assert_eq!(read_f(&b, &l2), "two");
        // B keeps the layers as A does: uncompressed, the fetched gzip blobs dropped.
        for l in [&l1, &l2] {
            assert!(b.blobs().contains(&l.diff_id));
        }
        assert!(exported.iter().all(|d| !b.blobs().contains(&d.digest)));
        // Now the store itself has the records, without the import.
        assert_eq!(
            lookup(&b, &k2, Some(&l1)).unwrap_or_else(|e| panic!("{e}")),
            Some(Some(l2.clone()))
        );
        assert_eq!(
            lookup(&b, &k3, Some(&l2)).unwrap_or_else(|e| panic!("{e}")),
            Some(None)
        );
    }

    /// The layer descriptors the records of the cache in `dir` name.
    fn exported_layers(dir: &Path) -> Vec<Descriptor> {
        config_records(dir)
            .records
            .into_iter()
            .filter_map(|r| r.layer.map(|l| l.descriptor))
            .collect()
    }

    #[test]
    fn compression_asked_for_applies_to_every_layer_and_imports_give_the_same_layers() {
        if !is_root() {
            eprintln!("SKIPPED: needs root");
            return;
        }
        let tmp = scratch("compression");
        let a = Store::open(&tmp.0.join("a")).unwrap_or_else(|e| panic!("{e}"));
        let l1 = make_layer(&a, &tmp.0, "one", None);
        let key = Digest::of_bytes(b"k");
        for (name, compression, media_type) in [
            ("zstd", Compression::Zstd, media_types::OCI_LAYER_ZSTD),
            ("tar", Compression::None, media_types::OCI_LAYER_TAR),
        ] {
            let dest = tmp.0.join(name);
            let exporting = open_cache(&[]).0;
            exporting.note(0, &key, None, Some(&l1));
            let to = CacheExport {
                target: CacheTarget::Local(dest.clone()),
                mode: CacheMode::Max,
                compression: Some(compression),
            };
            exporting
                .export(&a, &to, &BTreeSet::new(), &no_registry, &|w| panic!("{w}"))
                .unwrap_or_else(|e| panic!("{e}"));
            let exported = exported_layers(&dest);
            assert_eq!(exported.len(), 1);
            assert_eq!(exported[0].media_type, media_type, "{name}");
            assert_eq!(
                exported[0].digest == l1.diff_id,
                compression == Compression::None
            );
            let b = Store::open(&tmp.0.join(format!("b-{name}"))).unwrap_or_else(|e| panic!("{e}"));
            let (cache, _) = open_cache(std::slice::from_ref(&dest));
            let got = cache
                .lookup(&b, &key, None, &|w| panic!("{w}"))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got, Some(Some(l1.clone())), "{name}");
            assert_eq!(read_f(&b, &l1), "one");
        }
    }

    #[test]
    fn a_pruned_snapshot_is_unpacked_again_from_its_blob() {
        if !is_root() {
            eprintln!("SKIPPED: needs root");
            return;
        }
        let tmp = scratch("pruned");
        let store = Store::open(&tmp.0.join("s")).unwrap_or_else(|e| panic!("{e}"));
        let l1 = make_layer(&store, &tmp.0, "one", None);
        let l2 = make_layer(&store, &tmp.0, "two", Some(&l1));
        let key = Digest::of_bytes(b"k");
        record(&store, &key, Some(&l2)).unwrap_or_else(|e| panic!("{e}"));
        // A built layer is kept as its snapshot and a recipe: without the snapshot it is gone,
        // and its record is a miss.
        assert!(store.blobs().is_recipe(&l2.descriptor.digest));
        let kept = tmp.0.join("kept-snapshot");
        let snapshot = store
            .snapshots()
            .get(&l2.chain_id)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no snapshot"));
        std::fs::rename(snapshot.path.parent().unwrap_or(&snapshot.path), &kept)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!store.blobs().contains(&l2.descriptor.digest));
        assert_eq!(
            lookup(&store, &key, Some(&l1)).unwrap_or_else(|e| panic!("{e}")),
            None
        );
        std::fs::rename(&kept, snapshot.path.parent().unwrap_or(&snapshot.path))
            .unwrap_or_else(|e| panic!("{e}"));
        // Once the layer is a blob file (as a layer imported from a cache is), a pruned
        // snapshot is unpacked again from it.
        store
            .blobs()
            .open_file(&l2.descriptor.digest)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!store.blobs().is_recipe(&l2.descriptor.digest));
        store
            .snapshots()
            .remove(&l2.chain_id)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            lookup(&store, &key, Some(&l1)).unwrap_or_else(|e| panic!("{e}")),
            Some(Some(l2.clone()))
        );
        assert_eq!(read_f(&store, &l2), "two");
        // On another parent the record does not apply; without its blob it is a miss.
        assert_eq!(
            lookup(&store, &key, None).unwrap_or_else(|e| panic!("{e}")),
            None
        );
        store
            .blobs()
            .remove(&l2.descriptor.digest)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            lookup(&store, &key, Some(&l1)).unwrap_or_else(|e| panic!("{e}")),
            None
        );
    }

    #[test]
    fn exports_merge_and_min_keeps_the_target_chain() {
        if !is_root() {
            eprintln!("SKIPPED: needs root");
            return;
        }
        let tmp = scratch("merge");
        let store = Store::open(&tmp.0.join("s")).unwrap_or_else(|e| panic!("{e}"));
        let dest = tmp.0.join("cache");
        let l1 = make_layer(&store, &tmp.0, "one", None);
        let l2 = make_layer(&store, &tmp.0, "two", None);
        let (k1, k2, k3) = (
            Digest::of_bytes(b"k1"),
            Digest::of_bytes(b"k2"),
            Digest::of_bytes(b"k3"),
        );
        let warn = |w: String| panic!("{w}");
        // Stage 1 is the target; stage 0 is only a COPY --from source.
        let first = open_cache(&[]).0;
        first.note(0, &k1, None, Some(&l1));
        first.note(1, &k2, None, Some(&l2));
        let min = CacheExport {
            target: CacheTarget::Local(dest.clone()),
            mode: CacheMode::Min,
            compression: None,
        };
        let chain = BTreeSet::from([1]);
        let s = first
            .export(&store, &min, &chain, &no_registry, &warn)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s,
            ExportSummary {
                exported: 1,
                total: 1
            }
        );
        let keys = |dir: &Path| -> Vec<Digest> {
            config_records(dir)
                .records
                .into_iter()
                .map(|r| r.key)
                .collect()
        };
        assert_eq!(keys(&dest), vec![k2.clone()]);
        // A later build adds its records; the older ones stay.
        let second = open_cache(&[]).0;
        second.note(0, &k1, None, Some(&l1));
        second.note(0, &k3, None, None);
        let max = CacheExport {
            target: CacheTarget::Local(dest.clone()),
            mode: CacheMode::Max,
            compression: None,
        };
        let s = second
            .export(&store, &max, &chain, &no_registry, &warn)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s,
            ExportSummary {
                exported: 2,
                total: 3
            }
        );
        let mut want = vec![k1.clone(), k2.clone(), k3.clone()];
        want.sort();
        assert_eq!(keys(&dest), want);
        // One cache manifest in the index; the replaced manifest and config blobs are gone.
        let index: Index = serde_json::from_slice(
            &std::fs::read(dest.join("index.json")).unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(index.manifests.len(), 1);
        let blobs = std::fs::read_dir(dest.join("blobs/sha256"))
            .unwrap_or_else(|e| panic!("{e}"))
            .count();
        // Two layers, one config, one manifest.
        assert_eq!(blobs, 4);
        assert!(std::fs::read_dir(&dest)
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with(TEMP_PREFIX)));
    }

    #[test]
    fn a_corrupt_blob_is_refused_and_healed_by_the_next_export() {
        if !is_root() {
            eprintln!("SKIPPED: needs root");
            return;
        }
        let tmp = scratch("corrupt");
        let a = Store::open(&tmp.0.join("a")).unwrap_or_else(|e| panic!("{e}"));
        let l1 = make_layer(&a, &tmp.0, "one", None);
        let key = Digest::of_bytes(b"k");
        let dest = tmp.0.join("cache");
        let to = CacheExport {
            target: CacheTarget::Local(dest.clone()),
            mode: CacheMode::Max,
            compression: None,
        };
        let exporting = open_cache(&[]).0;
        exporting.note(0, &key, None, Some(&l1));
        exporting
            .export(&a, &to, &BTreeSet::new(), &no_registry, &|w| panic!("{w}"))
            .unwrap_or_else(|e| panic!("{e}"));
        let exported = config_records(&dest).records[0]
            .layer
            .clone()
            .unwrap_or_else(|| panic!("no layer exported"))
            .descriptor;
        let blob = dest.join("blobs/sha256").join(exported.digest.hex());
        let mut bytes = std::fs::read(&blob).unwrap_or_else(|e| panic!("{e}"));
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&blob, &bytes).unwrap_or_else(|e| panic!("{e}"));

        let b = Store::open(&tmp.0.join("b")).unwrap_or_else(|e| panic!("{e}"));
        let (cache, _) = open_cache(std::slice::from_ref(&dest));
        let warnings = Mutex::new(Vec::new());
        let warn = |w: String| warnings.lock().unwrap_or_else(|e| panic!("{e}")).push(w);
        assert_eq!(
            cache
                .lookup(&b, &key, None, &warn)
                .unwrap_or_else(|e| panic!("{e}")),
            None
        );
        let warnings = warnings.into_inner().unwrap_or_default();
        assert!(
            warnings.len() == 1 && warnings[0].contains("digest mismatch"),
            "{warnings:?}"
        );
        assert!(!b.blobs().contains(&l1.descriptor.digest));
        assert!(!b.blobs().contains(&exported.digest));
        assert_eq!(
            lookup(&b, &key, None).unwrap_or_else(|e| panic!("{e}")),
            None
        );
        // Exporting the same record again replaces the damaged copy.
        exporting
            .export(&a, &to, &BTreeSet::new(), &no_registry, &|w| panic!("{w}"))
            .unwrap_or_else(|e| panic!("{e}"));
        let (cache, _) = open_cache(std::slice::from_ref(&dest));
        assert_eq!(
            cache
                .lookup(&b, &key, None, &|w| panic!("{w}"))
                .unwrap_or_else(|e| panic!("{e}")),
            Some(Some(l1.clone()))
        );
    }

    #[test]
    fn a_missing_or_foreign_dir_is_a_warning() {
        let tmp = scratch("missing");
        let file = tmp.0.join("file");
        std::fs::write(&file, "").unwrap_or_else(|e| panic!("{e}"));
        let (cache, warnings) = open_cache(&[tmp.0.join("absent"), tmp.0.clone(), file]);
        assert_eq!(cache.imported_records(), 0);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(
            warnings[0].contains("no rbuild cache there"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].contains("no rbuild cache there"),
            "{warnings:?}"
        );
        assert!(warnings[2].contains("cannot be read"), "{warnings:?}");
        std::fs::write(tmp.0.join("index.json"), "{}").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(tmp.0.join("oci-layout"), OCI_LAYOUT_CONTENT)
            .unwrap_or_else(|e| panic!("{e}"));
        let (_, warnings) = open_cache(std::slice::from_ref(&tmp.0));
        assert!(
            warnings.len() == 1 && warnings[0].contains("index.json"),
            "{warnings:?}"
        );
    }

    #[test]
    fn the_target_chain_follows_from_stages() {
        let file = rbuild_parser::instruction::parse(
            "FROM scratch AS a\nFROM a AS b\nFROM scratch AS c\nFROM b\nCOPY --from=c / /\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        struct NoImages;
        impl rbuild_solver::BaseImageResolver for NoImages {
            fn resolve(&mut self, r: &str) -> Result<rbuild_solver::BaseImageInfo, String> {
                Err(r.to_string())
            }
        }
        let plan = rbuild_solver::plan(&file, &Default::default(), &mut NoImages)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            target_chain(&plan.stages, plan.target),
            BTreeSet::from([0, 1, 3])
        );
    }
}
