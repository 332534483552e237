//! Pushing a stored image, index or any manifest to a reference: for each manifest its config
//! and layers first (a few at a time; those the repository has are not sent, those another
//! repository of the same registry is known to have are mounted, non-distributable ones are
//! skipped), then the manifest; an index's manifests by digest before the index by tag.

use std::collections::{BTreeMap, BTreeSet};

use rbuild_cache::{Digest, Store};
use rbuild_image::images::{collect_blobs, describe_manifest};
use rbuild_image::json::MAX_MANIFEST_BYTES;
use rbuild_image::manifest::{is_non_distributable, ManifestOrIndex};
use rbuild_image::reference::{Reference, DEFAULT_TAG};
use rbuild_image::Descriptor;

use crate::blob_upload::BlobPush;
use crate::client::Client;
use crate::error::RegistryError;
use crate::parallel::for_each_bounded;
use crate::progress::{BlobKind, Event, ProgressSink};
use crate::repository::Repository;

/// How deep indexes may nest.
const MAX_INDEX_DEPTH: usize = 4;

/// What was pushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedImage {
    /// The top manifest's (or index's) digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
    /// The tag (or digest) it was put under.
    pub reference: String,
}

/// Other repositories of the target's registry that hold each blob, as far as the store's
/// image index tells: where a blob can be mounted from.
type MountSources = BTreeMap<Digest, Vec<String>>;

impl Client {
    /// Pushes the manifest or index `manifest` (in `store`, with everything it references) to
    /// `target`, put under the target's tag (`latest` if it has none) or digest.
    pub fn push(
        &self,
        store: &Store,
        manifest: &Digest,
        target: &Reference,
        progress: ProgressSink<'_>,
    ) -> Result<PushedImage, RegistryError> {
        let repository = self.repository(target)?;
        let (descriptor, _) = describe_manifest(store, manifest)?;
        let put_as = match (target.tag(), target.digest()) {
            (Some(tag), _) => tag.to_owned(),
            (None, Some(digest)) if digest == manifest.as_str() => digest.to_owned(),
            (None, Some(digest)) => {
                return Err(RegistryError::InvalidReference {
                    reference: target.to_string(),
                    reason: format!("the image to push is {manifest}, not {digest}"),
                })
            }
            (None, None) => DEFAULT_TAG.to_owned(),
        };
        let sources = mount_sources(store, target);
        let pusher = Pusher {
            client: self,
            store,
            repository: &repository,
            sources: &sources,
            progress,
        };
        pusher.push_manifest(&descriptor, &put_as, 0)?;
        Ok(PushedImage {
            digest: descriptor.digest,
            size: descriptor.size,
            media_type: descriptor.media_type,
            reference: put_as,
        })
    }
}

/// One push in progress.
struct Pusher<'a> {
    client: &'a Client,
    store: &'a Store,
    repository: &'a Repository,
    sources: &'a MountSources,
    progress: ProgressSink<'a>,
}

impl Pusher<'_> {
    /// Pushes what `descriptor` references, then it, under `put_as`.
    fn push_manifest(
        &self,
        descriptor: &Descriptor,
        put_as: &str,
        depth: usize,
    ) -> Result<(), RegistryError> {
        if depth > MAX_INDEX_DEPTH {
            return Err(RegistryError::InvalidReference {
                reference: descriptor.digest.to_string(),
                reason: format!("indexes nested deeper than {MAX_INDEX_DEPTH}"),
            });
        }
        let bytes = self
            .store
            .blobs()
            .read_to_vec(&descriptor.digest, MAX_MANIFEST_BYTES)?;
        let parsed =
            rbuild_image::manifest::parse_manifest_or_index(&bytes, &descriptor.media_type)?;
        match parsed {
            ManifestOrIndex::Manifest(manifest) => {
                let blobs = std::iter::once((manifest.config, BlobKind::Config))
                    .chain(manifest.layers.into_iter().map(|l| (l, BlobKind::Layer)))
                    .collect();
                self.push_blobs(blobs)?;
            }
            ManifestOrIndex::Index(index) => {
                for child in &index.manifests {
                    self.push_manifest(child, child.digest.as_str(), depth + 1)?;
                }
            }
        }
        let digest = self
            .repository
            .put_manifest(put_as, &descriptor.media_type, &bytes)?;
        (self.progress)(Event::ManifestPushed {
            reference: put_as.to_owned(),
            digest,
            size: bytes.len() as u64,
        });
        Ok(())
    }

    /// Pushes blobs a few at a time.
    fn push_blobs(&self, blobs: Vec<(Descriptor, BlobKind)>) -> Result<(), RegistryError> {
        let mut queue = Vec::new();
        for (blob, kind) in blobs {
            if is_non_distributable(&blob.media_type) {
                (self.progress)(Event::BlobSkipped {
                    digest: blob.digest.clone(),
                });
                continue;
            }
            (self.progress)(Event::BlobQueued {
                digest: blob.digest.clone(),
                size: blob.size,
                kind,
            });
            queue.push(blob);
        }
        let none = Vec::new();
        for_each_bounded(queue, self.client.options().concurrency, |blob| {
            let report = |done: u64| {
                (self.progress)(Event::BlobProgress {
                    digest: blob.digest.clone(),
                    done,
                    total: blob.size,
                })
            };
            let from = self.sources.get(&blob.digest).unwrap_or(&none);
            let digest = blob.digest.clone();
            let event = match self
                .repository
                .push_blob(self.store, &blob, from, &report)?
            {
                BlobPush::Exists => Event::BlobExists { digest },
                BlobPush::Mounted { from } => Event::BlobMounted { digest, from },
                BlobPush::Uploaded => Event::BlobDone { digest },
            };
            (self.progress)(event);
            Ok(())
        })
    }
}

/// For each blob of the store's images named in `target`'s registry (other repositories than
/// the target's), those repositories.
fn mount_sources(store: &Store, target: &Reference) -> MountSources {
    let mut sources = MountSources::new();
    let Ok(records) = store.images().list() else {
        return sources;
    };
    for record in records {
        let Ok(name) = Reference::parse(&record.name) else {
            continue;
        };
        if name.domain() != target.domain() || name.path() == target.path() {
            continue;
        }
        let Ok((descriptor, _)) = describe_manifest(store, &record.manifest) else {
            continue;
        };
        let mut blobs = Vec::new();
        if collect_blobs(store, &descriptor, &mut blobs, &mut BTreeSet::new()).is_err() {
            continue;
        }
        for blob in blobs {
            let repositories = sources.entry(blob.digest).or_default();
            if !repositories.iter().any(|r| r == name.path()) {
                repositories.push(name.path().to_owned());
            }
        }
    }
    sources
}
