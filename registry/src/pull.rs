//! Pulling an image: resolve the reference to a manifest or index, pick the platform's
//! manifest from an index (or every manifest, for a multi-platform pull), download the config
//! and layers a few at a time into the store — each verified, non-distributable layers
//! skipped — then store the manifests, and only then tag the image. A failure anywhere tags
//! nothing, and nothing unverified is ever stored.

use std::collections::BTreeSet;

use rbuild_cache::{Digest, ImageRecord, Store};
use rbuild_image::images::manifest_for_platform;
use rbuild_image::manifest::{is_non_distributable, ManifestOrIndex};
use rbuild_image::reference::{Reference, DEFAULT_TAG};
use rbuild_image::{tag_image, Descriptor, Index, Manifest, Platform};

use crate::client::Client;
use crate::error::RegistryError;
use crate::manifests::FetchedManifest;
use crate::parallel::for_each_bounded;
use crate::progress::{BlobKind, Event, ProgressSink};
use crate::repository::Repository;

/// Which image(s) of a multi-platform index to pull.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PlatformChoice {
    /// The platform rbuild runs on.
    #[default]
    Host,
    /// This platform.
    Only(Platform),
    /// Every platform (the index itself is tagged).
    All,
}

/// How to pull.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PullOptions {
    /// Which platform's image to pull from an index.
    pub platform: PlatformChoice,
}

/// An image fetched into the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedImage {
    /// The manifest pulled (the index itself, for [`PlatformChoice::All`]).
    pub descriptor: Descriptor,
    /// The digest the reference resolved to (an index's, when a platform was picked from one).
    pub resolved: Digest,
}

/// An image pulled and tagged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PulledImage {
    /// What was fetched.
    pub image: FetchedImage,
    /// Its record in the store's image index.
    pub record: ImageRecord,
}

/// A manifest to store, and the blobs it needs.
struct Selected {
    manifests: Vec<FetchedManifest>,
    blobs: Vec<(Descriptor, BlobKind)>,
}

impl Client {
    /// Pulls `reference` into `store` and tags it with the reference's full name.
    pub fn pull(
        &self,
        store: &Store,
        reference: &Reference,
        options: &PullOptions,
        progress: ProgressSink<'_>,
    ) -> Result<PulledImage, RegistryError> {
        let image = self.fetch_image(store, reference, options, progress)?;
        let record = tag_image(store, &reference.to_string(), &image.descriptor.digest)?;
        Ok(PulledImage { image, record })
    }

    /// Fetches everything `reference` needs into `store` without tagging anything.
    pub fn fetch_image(
        &self,
        store: &Store,
        reference: &Reference,
        options: &PullOptions,
        progress: ProgressSink<'_>,
    ) -> Result<FetchedImage, RegistryError> {
        let repository = self.repository(reference)?;
        let target = reference
            .digest()
            .or(reference.tag())
            .unwrap_or(DEFAULT_TAG);
        let top = repository.fetch_manifest(target)?;
        progress(Event::Resolved {
            digest: top.digest.clone(),
            media_type: top.media_type.clone(),
        });
        let resolved = top.digest.clone();
        let (descriptor, selected) = match &top.parsed {
            ManifestOrIndex::Manifest(manifest) => {
                let blobs = blobs_of(manifest);
                (
                    descriptor_of(&top),
                    Selected {
                        manifests: vec![top],
                        blobs,
                    },
                )
            }
            ManifestOrIndex::Index(index) => {
                self.select_from_index(&repository, reference, &top, index, &options.platform)?
            }
        };
        self.fetch_blobs(store, &repository, &selected.blobs, progress)?;
        for manifest in &selected.manifests {
            store.blobs().put_bytes(&manifest.bytes)?;
        }
        Ok(FetchedImage {
            descriptor,
            resolved,
        })
    }

    /// The manifests of `index` that `choice` wants, fetched; and what to tag.
    fn select_from_index(
        &self,
        repository: &Repository,
        reference: &Reference,
        top: &FetchedManifest,
        index: &Index,
        choice: &PlatformChoice,
    ) -> Result<(Descriptor, Selected), RegistryError> {
        let wanted: Vec<&Descriptor> = match choice {
            PlatformChoice::All => index
                .manifests
                .iter()
                .filter(|d| rbuild_image::manifest::is_manifest_type(&d.media_type))
                .collect(),
            PlatformChoice::Host => vec![pick(reference, index, &Platform::host())?],
            PlatformChoice::Only(platform) => vec![pick(reference, index, platform)?],
        };
        let mut selected = Selected {
            manifests: Vec::new(),
            blobs: Vec::new(),
        };
        for entry in &wanted {
            let child = repository.fetch_manifest(entry.digest.as_str())?;
            let ManifestOrIndex::Manifest(manifest) = &child.parsed else {
                return Err(RegistryError::protocol(
                    &repository.name(),
                    format!("index entry {} is not an image manifest", entry.digest),
                ));
            };
            selected.blobs.extend(blobs_of(manifest));
            selected.manifests.push(child);
        }
        let descriptor = match (choice, selected.manifests.first()) {
            (PlatformChoice::All, _) | (_, None) => {
                selected.manifests.push(top.clone());
                descriptor_of(top)
            }
            (_, Some(child)) => descriptor_of(child),
        };
        Ok((descriptor, selected))
    }

    /// Downloads the blobs the store lacks, [`crate::ClientOptions::concurrency`] at a time.
    fn fetch_blobs(
        &self,
        store: &Store,
        repository: &Repository,
        blobs: &[(Descriptor, BlobKind)],
        progress: ProgressSink<'_>,
    ) -> Result<(), RegistryError> {
        let mut seen = BTreeSet::new();
        let mut queue = Vec::new();
        for (blob, kind) in blobs {
            if !seen.insert(blob.digest.clone()) {
                continue;
            }
            if is_non_distributable(&blob.media_type) {
                progress(Event::BlobSkipped {
                    digest: blob.digest.clone(),
                });
                continue;
            }
            progress(Event::BlobQueued {
                digest: blob.digest.clone(),
                size: blob.size,
                kind: *kind,
            });
            if store.blobs().contains(&blob.digest) {
                progress(Event::BlobExists {
                    digest: blob.digest.clone(),
                });
                continue;
            }
            queue.push(blob);
        }
        for_each_bounded(queue, self.options().concurrency, |blob: &Descriptor| {
            let report = |done: u64| {
                progress(Event::BlobProgress {
                    digest: blob.digest.clone(),
                    done,
                    total: blob.size,
                })
            };
            repository.fetch_blob(store, blob, &report)?;
            progress(Event::BlobDone {
                digest: blob.digest.clone(),
            });
            Ok(())
        })
    }
}

/// The manifest of `index` for `platform`.
fn pick<'a>(
    reference: &Reference,
    index: &'a Index,
    platform: &Platform,
) -> Result<&'a Descriptor, RegistryError> {
    manifest_for_platform(index, platform).ok_or_else(|| {
        let available: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref().map(Platform::to_string))
            .collect();
        RegistryError::NoMatchingPlatform {
            reference: reference.to_string(),
            platform: platform.to_string(),
            available: if available.is_empty() {
                "no platforms".to_owned()
            } else {
                available.join(", ")
            },
        }
    })
}

/// The config and layers of a manifest.
fn blobs_of(manifest: &Manifest) -> Vec<(Descriptor, BlobKind)> {
    std::iter::once((manifest.config.clone(), BlobKind::Config))
        .chain(
            manifest
                .layers
                .iter()
                .map(|layer| (layer.clone(), BlobKind::Layer)),
        )
        .collect()
}

fn descriptor_of(fetched: &FetchedManifest) -> Descriptor {
    Descriptor::new(
        &fetched.media_type,
        fetched.digest.clone(),
        fetched.bytes.len() as u64,
    )
}
