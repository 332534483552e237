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
//!   config digest, for `RUN --mount` sources the same; and the layer format (compression),
//!   since the record names a blob in that format.
//!
//! Never in a key: secrets (only their ids, as written), cache-mount contents, mtimes.
//! Steps whose result cannot be known from their inputs are not cached: `ADD` of a URL without
//! `--checksum`.
//!
//! A record (`rbuild_cache::KeyIndex`) is written only after the step's layer blob and
//! snapshot are complete; a hit is used only when both still exist.

use rbuild_cache::{Digest, Store};
use rbuild_image::manifest::Descriptor;
use rbuild_image::LayerOptions;
use rbuild_parser::instruction::Instruction;
use rbuild_solver::PlannedStep;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::config::StageConfig;
use crate::error::BuildError;
use crate::layers::StageLayer;

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
    let mut opts = layer_options.clone();
    opts.threads = None;
    h.pair("layer-format", &format!("{opts:?}"));
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
}

/// A usable earlier result of `key`: `Some(layer)` (`layer` itself `None` for a step without
/// one), or `None` when there is none, or what it names is gone, or the record is unreadable.
pub fn lookup(store: &Store, key: &Digest) -> Result<Option<Option<StageLayer>>, BuildError> {
    let Some(bytes) = store.cache_keys().get(key)? else {
        return Ok(None);
    };
    let Ok(record) = serde_json::from_slice::<Record>(&bytes) else {
        return Ok(None);
    };
    let Some(l) = record.layer else {
        return Ok(Some(None));
    };
    if !store.blobs().contains(&l.descriptor.digest)
        || store.snapshots().get(&l.chain_id)?.is_none()
    {
        return Ok(None);
    }
    Ok(Some(Some(StageLayer {
        descriptor: l.descriptor,
        diff_id: l.diff_id,
        uncompressed_size: l.uncompressed_size,
        chain_id: l.chain_id,
    })))
}

/// Remembers that `key` produced `layer`.
pub fn record(store: &Store, key: &Digest, layer: Option<&StageLayer>) -> Result<(), BuildError> {
    let record = Record {
        layer: layer.map(|l| LayerRecord {
            descriptor: l.descriptor.clone(),
            diff_id: l.diff_id.clone(),
            uncompressed_size: l.uncompressed_size,
            chain_id: l.chain_id.clone(),
        }),
    };
    let bytes = serde_json::to_vec(&record).map_err(|e| BuildError::Io {
        what: "encoding a cache record".into(),
        source: std::io::Error::other(e),
    })?;
    store.cache_keys().put(key, &bytes)?;
    Ok(())
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
}
