//! The registry side of `rbuild build`: [`RegistrySource`], through which the builder pulls the
//! base images the store lacks (and re-checks them all with `--pull`), with a progress line per
//! resolved manifest and per blob; and [`push_image`], which pushes the built image under each
//! of its names for `--push`, `-o type=image,push=true` and `-o type=registry` — the image as it
//! leaves the store, its layers compressed as the output says (`build.rs`) — printing what was
//! pushed as buildx does (`pushing manifest for REF@DIGEST done`).
//!
//! The registry client is made on first use: a build whose base images are all in the store
//! (and that pushes nothing) never makes one, so it needs no network and no readable
//! `--registry-ca` file.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context;
use rbuild_builder::base_image::{ImageSource, PullError};
use rbuild_cache::{Digest, Store};
use rbuild_image::reference::Reference;
use rbuild_image::Platform;
use rbuild_registry::{Client, Event, PlatformChoice, PullOptions};

use crate::registry::RegistryFlags;

/// The registry client of one build, made on first use from the build's registry flags.
pub struct LazyClient {
    flags: RegistryFlags,
    client: OnceLock<Result<Arc<Client>, String>>,
}

impl LazyClient {
    pub fn new(flags: RegistryFlags) -> LazyClient {
        LazyClient {
            flags,
            client: OnceLock::new(),
        }
    }

    /// The client (the same one each time), or why it cannot be made.
    pub fn get(&self) -> Result<Arc<Client>, String> {
        self.client
            .get_or_init(|| {
                self.flags
                    .client()
                    .map(Arc::new)
                    .map_err(|e| format!("{e:#}"))
            })
            .clone()
    }
}

impl std::fmt::Debug for LazyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyClient")
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}

/// Base images pulled from their registries.
#[derive(Debug)]
pub struct RegistrySource {
    client: Arc<LazyClient>,
}

impl RegistrySource {
    pub fn new(client: Arc<LazyClient>) -> RegistrySource {
        RegistrySource { client }
    }
}

impl ImageSource for RegistrySource {
    fn pull(
        &self,
        store: &Store,
        reference: &Reference,
        platform: &Platform,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<(), PullError> {
        let client = self.client.get()?;
        let sizes: Mutex<HashMap<Digest, u64>> = Mutex::new(HashMap::new());
        let size_of = |digest: &Digest| {
            sizes
                .lock()
                .map(|s| s.get(digest).copied().unwrap_or(0))
                .unwrap_or(0)
        };
        let sink = |event: Event| match event {
            Event::Resolved { digest, .. } => progress(&format!("resolve {reference}: {digest}")),
            Event::BlobQueued { digest, size, .. } => {
                if let Ok(mut s) = sizes.lock() {
                    s.insert(digest, size);
                }
            }
            Event::BlobDone { digest } => progress(&format!(
                "{digest} {} done",
                crate::images::human_size(size_of(&digest))
            )),
            Event::BlobExists { digest } => progress(&format!("{digest} already in the store")),
            Event::BlobSkipped { digest } => {
                progress(&format!("{digest} skipped (non-distributable)"))
            }
            Event::BlobProgress { .. }
            | Event::BlobMounted { .. }
            | Event::ManifestPushed { .. } => {}
        };
        let options = PullOptions {
            platform: PlatformChoice::Only(platform.clone()),
        };
        let pulled = client.pull(store, reference, &options, &sink)?;
        let image = &pulled.image;
        if image.descriptor.digest != image.resolved {
            progress(&format!(
                "{platform} image of {reference}: {}",
                image.descriptor.digest
            ));
        }
        Ok(())
    }
}

/// Pushes each manifest (in `store`) under its name; says what was pushed on standard error
/// unless `quiet`.
pub fn push_image(
    store: &Store,
    client: &LazyClient,
    names: &[(Reference, Digest)],
    quiet: bool,
) -> anyhow::Result<()> {
    if names.is_empty() {
        anyhow::bail!(
            "pushing needs a name for the image: give -t REGISTRY/NAME[:TAG] or -o type=registry,name=REGISTRY/NAME[:TAG]"
        );
    }
    let client = client.get().map_err(anyhow::Error::msg)?;
    for (name, manifest) in names {
        if !quiet {
            eprintln!("pushing layers for {name}");
        }
        let pushed = client
            .push(store, manifest, name, &rbuild_registry::no_progress)
            .with_context(|| format!("pushing {name}"))?;
        if !quiet {
            eprintln!("pushing manifest for {name}@{} done", pushed.digest);
        }
    }
    Ok(())
}
