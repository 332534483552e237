//! Base images of a build (`FROM image`, `COPY --from=image`, `RUN --mount from=image`): found
//! in the store's image index, or pulled through an [`ImageSource`] — the registry client, which
//! the command line gives; builds without one (tests) use the store alone — when the store
//! lacks them. With `--pull` ([`BuildRequest::pull`]) every base image is checked against its
//! registry once per build even when the store has it (the tag resolved again, only missing
//! blobs fetched). A base image the store has is never looked up anywhere else without
//! `--pull`: such a build needs no network. A pull shows as an `[internal] pull NAME` step of
//! the build's progress, with a line per resolved manifest and per blob.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use rbuild_cache::Store;
use rbuild_image::manifest::{Descriptor, Manifest};
use rbuild_image::reference::Reference;
use rbuild_image::{ImageConfig, Platform};
use rbuild_solver::{BaseImageInfo, BaseImageResolver};

use crate::build::{BuildEvent, BuildRequest};

/// What an [`ImageSource`] fails with; its message names the image and the registry (and says
/// what to do, such as `rbuild login`, where there is something).
pub type PullError = Box<dyn std::error::Error + Send + Sync>;

/// Where base images the store lacks come from: a registry client.
pub trait ImageSource: Send + Sync + std::fmt::Debug {
    /// Fetches the image `reference` names for `platform` (picked from a multi-platform index)
    /// into `store` and tags it with the reference's full name (`Reference::to_string`),
    /// reporting what happens as lines to `progress`.
    fn pull(
        &self,
        store: &Store,
        reference: &Reference,
        platform: &Platform,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<(), PullError>;
}

/// How a lookup reports a pull: the build's events and its step counter.
pub(crate) struct Events<'e> {
    pub emit: &'e (dyn Fn(BuildEvent) + Sync),
    pub counter: &'e AtomicUsize,
}

/// The base images of one build, each looked up (and pulled) once.
pub(crate) struct StoreImages<'a> {
    store: &'a Store,
    req: &'a BuildRequest,
    found: BTreeMap<String, (Manifest, ImageConfig)>,
}

impl<'a> StoreImages<'a> {
    pub(crate) fn new(store: &'a Store, req: &'a BuildRequest) -> StoreImages<'a> {
        StoreImages {
            store,
            req,
            found: BTreeMap::new(),
        }
    }

    /// The manifest and config of the image `reference` names, pulled first when the store
    /// lacks it (or always, once, with `--pull`).
    pub(crate) fn lookup(
        &mut self,
        reference: &str,
        events: &Events<'_>,
    ) -> Result<(Manifest, ImageConfig), String> {
        if let Some(found) = self.found.get(reference) {
            return Ok(found.clone());
        }
        let parsed = Reference::parse(reference).map_err(|e| e.to_string())?;
        let name = parsed.to_string();
        let images = self.store.images();
        let mut record = images.get(&name).map_err(|e| e.to_string())?;
        match (&record, self.req.image_source.as_deref()) {
            (Some(_), _) if !self.req.pull => {}
            (None, None) => {
                return Err(format!(
                    "{name} is not in the local image store (and this build has no registry to pull it from; use `rbuild pull` or `rbuild load`)"
                ))
            }
            // `--pull` without a registry: the store's image is all there is.
            (Some(_), None) => {}
            (had, Some(source)) => {
                let had = had.is_some();
                self.pull(source, &parsed, &name, events)
                    .map_err(|e| match had {
                        true => format!("pulling {name} (--pull) failed: {e}"),
                        false => format!(
                            "{name} is not in the local image store, and pulling it failed: {e}"
                        ),
                    })?;
                record = images.get(&name).map_err(|e| e.to_string())?;
            }
        }
        let record = record
            .ok_or_else(|| format!("{name} was pulled but is not in the local image store"))?;
        let desc = Descriptor::new(&record.media_type, record.manifest.clone(), 0);
        let (_, manifest) =
            rbuild_image::images::resolve_manifest(self.store, &desc).map_err(|e| e.to_string())?;
        let config = rbuild_image::images::read_config(self.store, &manifest.config.digest)
            .map_err(|e| e.to_string())?;
        self.found
            .insert(reference.to_string(), (manifest.clone(), config.clone()));
        Ok((manifest, config))
    }

    /// Pulls `reference` as a step of its own (`[internal] pull NAME`).
    fn pull(
        &self,
        source: &dyn ImageSource,
        reference: &Reference,
        name: &str,
        events: &Events<'_>,
    ) -> Result<(), String> {
        let step = events.counter.fetch_add(1, Ordering::SeqCst) + 1;
        (events.emit)(BuildEvent::StepStarted {
            stage: "internal".into(),
            step,
            total: 0,
            text: format!("pull {name}"),
        });
        let started = Instant::now();
        let progress = |line: &str| {
            (events.emit)(BuildEvent::StepOutput {
                step,
                line: line.to_owned(),
            })
        };
        let result = Platform::parse(&self.req.options.platform.to_string())
            .map_err(|e| e.to_string())
            .and_then(|platform| {
                source
                    .pull(self.store, reference, &platform, &progress)
                    .map_err(|e| error_chain(&*e))
            });
        (events.emit)(match &result {
            Ok(()) => BuildEvent::StepDone {
                step,
                elapsed: started.elapsed(),
            },
            Err(error) => BuildEvent::StepFailed {
                step,
                elapsed: started.elapsed(),
                error: error.clone(),
            },
        });
        result
    }
}

/// An error with its sources, each not already part of the message before it.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// The planner's view of the base images: their environment and `ONBUILD` triggers, pulled
/// while planning when needed, the pulls reported through the build's event callback.
pub(crate) struct Planning<'p, 'a> {
    pub images: &'p mut StoreImages<'a>,
    pub on_event: &'p mut (dyn FnMut(BuildEvent) + Send),
    pub counter: &'p AtomicUsize,
}

impl BaseImageResolver for Planning<'_, '_> {
    fn resolve(&mut self, reference: &str) -> Result<BaseImageInfo, String> {
        let sink = Mutex::new(&mut *self.on_event);
        let emit = |e: BuildEvent| {
            if let Ok(mut f) = sink.lock() {
                (*f)(e);
            }
        };
        let events = Events {
            emit: &emit,
            counter: self.counter,
        };
        let (_, config) = self.images.lookup(reference, &events)?;
        let env = config
            .config
            .env
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.clone(), String::new()),
            })
            .collect();
        Ok(BaseImageInfo {
            env,
            onbuild: config.config.on_build.clone(),
        })
    }
}
