//! Runs a build: parse, plan, then each needed stage in order — base layers unpacked into
//! snapshots, file steps (COPY, ADD, WORKDIR) applied to an overlay view whose upper dir becomes
//! the step's layer, metadata steps applied to the image config — and writes the target stage's
//! image (config, manifest, layers) into the store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rbuild_cache::{Digest, Store};
use rbuild_fsutil::Root;
use rbuild_image::manifest::{Descriptor, Manifest};
use rbuild_image::{write_image, ImageConfig, LayerOptions};
use rbuild_parser::instruction::{parse, Instruction};
use rbuild_solver::{plan, BuildOptions, FromSource, PlannedStage, PlannedStep, StageBase};

use crate::base_image::{Events, ImageSource, Planning, StoreImages};
use crate::cachekey::{self, base_key, step_key};
use crate::config::{is_metadata_only, StageConfig};
use crate::copy_reuse;
use crate::error::BuildError;
use crate::fileops::{apply_file_step, step_copy_op, FileStep, SourceRoot};
use crate::layers::{base_layers, commit_layer, lower_dirs, StageLayer};
use crate::overlay::OverlayView;
use crate::run::{run_step, RunOptions, RunStep, StageRoots};

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The build context directory.
    pub context_dir: PathBuf,
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// The Dockerfile's path relative to the context (for `NAME.dockerignore`); `None` when it
    /// came from standard input.
    pub dockerfile_path: Option<PathBuf>,
    pub options: BuildOptions,
    /// `--label`s added to the image config.
    pub labels: BTreeMap<String, String>,
    /// The manifest format (and media types) of the image and its layers. Built layers are
    /// stored uncompressed: `compression` and `level` are not used by the build (they apply
    /// when an image leaves the store, see `rbuild_image::compressed_layers`).
    pub layer_options: LayerOptions,
    /// `created` timestamps (RFC 3339); `None` leaves them out. `source_date_epoch`, when set,
    /// replaces it.
    pub created: Option<String>,
    /// `SOURCE_DATE_EPOCH` (Unix seconds), for reproducible images: `created` in the config
    /// and in the history entries the build adds becomes this time, and layer file mtimes
    /// newer than it are clamped to it (`layer_options.source_date_epoch`), as BuildKit does
    /// with `SOURCE_DATE_EPOCH` and its exporters' `rewrite-timestamp=true`.
    pub source_date_epoch: Option<i64>,
    /// Secrets, SSH agents, network and limits of RUN steps.
    pub run: RunOptions,
    /// `--no-cache`: run every step (results are still recorded for later builds).
    pub no_cache: bool,
    /// `--no-cache-filter`: stages (by name or index) whose steps all run.
    pub no_cache_filter: Vec<String>,
    /// `--jobs`: how many stages run at once (0: all that are ready).
    pub jobs: usize,
    /// `--cache-from`: caches (directories, registry references) whose records a store miss
    /// falls back to.
    pub cache_from: Vec<cachekey::CacheSource>,
    /// `--cache-to`: where the keys and layers of this build go.
    pub cache_to: Option<cachekey::CacheExport>,
    /// The registry client of registry caches (`None`: one with the default options, made
    /// when needed).
    pub cache_registry: Option<crate::remote_cache::SharedClient>,
    /// Where base images the store lacks are pulled from (`None`: the store alone).
    pub image_source: Option<std::sync::Arc<dyn ImageSource>>,
    /// `--pull`: check every base image against its registry, even one the store has.
    pub pull: bool,
}

impl BuildRequest {
    /// The request with `source_date_epoch` (if any) applied to `created` and the layer options.
    fn with_source_date_epoch(&self) -> BuildRequest {
        let mut req = self.clone();
        if let Some(epoch) = req.source_date_epoch {
            req.created = Some(rbuild_image::config::format_rfc3339_nano(epoch, 0));
            req.layer_options.source_date_epoch = Some(epoch);
        }
        req
    }
}

/// What a build reports while it runs.
#[derive(Debug, Clone)]
pub enum BuildEvent {
    Warning(String),
    /// A step starts: `[stage step/total] INSTRUCTION`.
    StepStarted {
        stage: String,
        step: usize,
        total: usize,
        text: String,
    },
    /// A line a RUN step's command printed.
    StepOutput {
        step: usize,
        line: String,
    },
    /// Step `step` was not run: the store held its result (BuildKit's `CACHED`).
    StepCached {
        step: usize,
    },
    /// Step `step` failed after `elapsed`.
    StepFailed {
        step: usize,
        elapsed: Duration,
        error: String,
    },
    /// Step `step` finished.
    StepDone {
        step: usize,
        elapsed: Duration,
    },
}

/// The image a build produced (already in the store's blobs).
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub manifest: Descriptor,
    pub config: ImageConfig,
    pub config_digest: Digest,
    pub layers: Vec<StageLayer>,
}

/// A finished stage: its image config and layers.
#[derive(Debug, Clone)]
struct StageImage {
    /// The key of the stage's last step: what the stage's result is a function of.
    key: Digest,
    config: ImageConfig,
    layers: Vec<StageLayer>,
    /// The RUN environment a stage built FROM this one starts with (ARG values included).
    run_env: Vec<String>,
    /// The stage's time (RFC 3339): that of its latest layer step, or the build's.
    created: Option<String>,
}

/// Builds `req` in `store`, reporting progress to `on_event`.
pub fn build(
    store: &Store,
    req: &BuildRequest,
    on_event: &mut (dyn FnMut(BuildEvent) + Send),
) -> Result<BuiltImage, BuildError> {
    let req = &req.with_source_date_epoch();
    let file = parse(&req.dockerfile)?;
    for w in &file.warnings {
        on_event(BuildEvent::Warning(w.message.clone()));
    }
    let mut images = StoreImages::new(store, req);
    // Steps taken by pulls while planning.
    let pulls = AtomicUsize::new(0);
    let plan = plan(
        &file,
        &req.options,
        &mut Planning {
            images: &mut images,
            on_event: &mut *on_event,
            counter: &pulls,
        },
    )?;
    let pulls = pulls.into_inner();
    if !plan.unused_build_args.is_empty() {
        on_event(BuildEvent::Warning(format!(
            "one or more build-args {:?} were not consumed",
            plan.unused_build_args
        )));
    }
    let context = Root::open(&req.context_dir).map_err(|source| BuildError::Fs {
        what: format!("opening the build context {}", req.context_dir.display()),
        source,
    })?;
    let ignore = load_ignore(req)?;
    let total: usize = plan.stages.iter().map(|s| s.steps.len() + 1).sum::<usize>() + pulls;
    let stage_names = plan
        .stages
        .iter()
        .flat_map(|s| {
            let by_index = (s.index.to_string(), s.index);
            s.name
                .clone()
                .map(|n| (n, s.index))
                .into_iter()
                .chain([by_index])
        })
        .collect();
    let client = std::sync::OnceLock::new();
    let registry = || registry_client(req, &client);
    let format = req.layer_options.format;
    let cache = cachekey::BuildCache::open(store, &req.cache_from, format, &registry, &mut |w| {
        on_event(BuildEvent::Warning(w))
    });
    let run = StageRun {
        cache,
        cancelled: std::sync::atomic::AtomicBool::new(false),
        digests: rbuild_cache::FileIndex::load(store, &req.context_dir),
        stage_names,
        context_view: Mutex::new(None),
        store,
        req,
        images: Mutex::new(images),
        context: &context,
        ignore: ignore.as_ref(),
        counter: AtomicUsize::new(pulls),
        total,
        on_event: Mutex::new(on_event),
    };
    let done = run_stages(&run, &plan.stages, req.jobs);
    // What was learnt about the context's files is kept, whatever the outcome.
    if let Err(e) = run.digests.save() {
        run.event(BuildEvent::Warning(format!(
            "the context's file digest index was not saved (the next build hashes the files again): {e}"
        )));
    }
    let done = done?;
    let mut done = done;
    let target = done
        .remove(&plan.target)
        .ok_or(BuildError::Internal("the target stage was not built"))?;
    let mut config = target.config;
    config.config.labels.extend(req.labels.clone());
    config.created = target.created.clone();
    // An inline cache of the base image is not this image's.
    config.rbuild_cache = None;
    if let Some(to) = req
        .cache_to
        .as_ref()
        .filter(|to| to.target == cachekey::CacheTarget::Inline)
    {
        let chain = cachekey::target_chain(&plan.stages, plan.target);
        config.rbuild_cache = Some(run.cache.inline_records(&chain, to.mode)?);
    }
    let infos: Vec<_> = target.layers.iter().map(StageLayer::info).collect();
    let manifest = write_image(store, config.clone(), &infos, req.layer_options.format)?;
    let written = rbuild_image::images::resolve_manifest(store, &manifest)?.1;
    if let Some(to) = &req.cache_to {
        let chain = cachekey::target_chain(&plan.stages, plan.target);
        run.cache.export(store, to, &chain, &registry, &|w| {
            run.event(BuildEvent::Warning(w))
        })?;
    }
    Ok(BuiltImage {
        manifest,
        config_digest: written.config.digest,
        config,
        layers: target.layers,
    })
}

/// The registry client of the request's registry caches, or one with the default options
/// (made once).
fn registry_client(
    req: &BuildRequest,
    made: &std::sync::OnceLock<std::sync::Arc<rbuild_registry::Client>>,
) -> Result<std::sync::Arc<rbuild_registry::Client>, BuildError> {
    if let Some(client) = &req.cache_registry {
        return Ok(client.0.clone());
    }
    if let Some(client) = made.get() {
        return Ok(client.clone());
    }
    let client = std::sync::Arc::new(rbuild_registry::Client::new(
        rbuild_registry::ClientOptions::default(),
    )?);
    Ok(made.get_or_init(|| client).clone())
}

fn load_ignore(req: &BuildRequest) -> Result<Option<rbuild_context::PatternMatcher>, BuildError> {
    let dockerfile = req
        .dockerfile_path
        .clone()
        .unwrap_or_else(|| PathBuf::from("-"));
    let Some(file) = rbuild_context::load_ignore_patterns(&dockerfile, &req.context_dir)? else {
        return Ok(None);
    };
    Ok(Some(rbuild_context::PatternMatcher::new(&file.patterns)?))
}

/// Gives an error the step's location when it has none of its own.
fn in_step(step: &PlannedStep, e: BuildError) -> BuildError {
    // Ctrl-C is not the step's failure: it stays recognisable (the CLI exits 130).
    if matches!(e, BuildError::Interrupted) {
        return e;
    }
    match e.span() {
        Some(_) => e,
        None => BuildError::Step {
            span: step.step.span,
            source: Box::new(e),
        },
    }
}

/// What every stage of one build shares; stages of one wave use it from several threads.
struct StageRun<'a> {
    /// Imported cache records, and the keys and layers of this build for `--cache-to`.
    cache: cachekey::BuildCache,
    /// Content digests of the context's files by identity, kept between builds.
    digests: rbuild_cache::FileIndex,
    /// Set when a stage failed: the others stop at their next step.
    cancelled: std::sync::atomic::AtomicBool,
    /// Stage names and indexes (as text) of the plan, for `--mount from=`.
    stage_names: BTreeMap<String, usize>,
    /// The context with `.dockerignore` applied, for bind mounts (made on first use).
    context_view: Mutex<Option<(Option<rbuild_cache::WorkDir>, PathBuf)>>,
    store: &'a Store,
    req: &'a BuildRequest,
    images: Mutex<StoreImages<'a>>,
    context: &'a Root,
    ignore: Option<&'a rbuild_context::PatternMatcher>,
    counter: AtomicUsize,
    total: usize,
    on_event: Mutex<&'a mut (dyn FnMut(BuildEvent) + Send)>,
}

/// Runs `stages`, each as soon as the stages it reads are built, at most `jobs` at once (all
/// that are ready when `jobs` is 0). After a failure no new stage starts; stages already
/// running stop at their next step; every failure that happened is reported.
fn run_stages(
    run: &StageRun<'_>,
    stages: &[PlannedStage],
    jobs: usize,
) -> Result<BTreeMap<usize, StageImage>, BuildError> {
    use std::sync::mpsc;
    let limit = if jobs == 0 { usize::MAX } else { jobs };
    let mut done: BTreeMap<usize, StageImage> = BTreeMap::new();
    let mut pending: Vec<&PlannedStage> = stages.iter().collect();
    let mut failures: Vec<BuildError> = Vec::new();
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, Result<StageImage, BuildError>)>();
        let mut running = 0usize;
        loop {
            if failures.is_empty() {
                while running < limit {
                    let Some(pos) = pending
                        .iter()
                        .position(|s| stage_inputs(s, stages).iter().all(|i| done.contains_key(i)))
                    else {
                        break;
                    };
                    let stage = pending.remove(pos);
                    // What the stage reads, as of now (they are all built).
                    let inputs: BTreeMap<usize, StageImage> = stage_inputs(stage, stages)
                        .into_iter()
                        .filter_map(|i| done.get(&i).map(|s| (i, s.clone())))
                        .collect();
                    let tx = tx.clone();
                    scope.spawn(move || {
                        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            run.stage(stage, &inputs)
                        }))
                        .unwrap_or(Err(BuildError::Internal("a stage's thread panicked")));
                        let _ = tx.send((stage.index, result));
                    });
                    running += 1;
                }
            }
            if running == 0 {
                if failures.is_empty() && !pending.is_empty() {
                    failures.push(BuildError::Internal(
                        "no stage is ready to run (a dependency cycle)",
                    ));
                }
                break;
            }
            let Ok((index, result)) = rx.recv() else {
                failures.push(BuildError::Internal("a stage's thread vanished"));
                break;
            };
            running -= 1;
            match result {
                Ok(image) => {
                    done.insert(index, image);
                }
                Err(e) => {
                    // The others stop at their next step.
                    run.cancelled.store(true, Ordering::SeqCst);
                    if !matches!(e, BuildError::Cancelled) {
                        failures.push(e);
                    }
                }
            }
        }
    });
    match failures.len() {
        0 => Ok(done),
        1 => Err(failures.remove(0)),
        _ => {
            let first = failures.remove(0);
            Err(BuildError::Several {
                first: Box::new(first),
                others: failures,
            })
        }
    }
}

/// The dependency levels of `stages` (a description of [`stage_inputs`] for tests; the
/// scheduler itself starts each stage as soon as its own inputs are built).
#[cfg(test)]
/// Groups stages into waves: each wave holds the stages whose inputs all come from earlier
/// waves, so a wave's stages can run at the same time.
fn waves(stages: &[PlannedStage]) -> Result<Vec<Vec<&PlannedStage>>, BuildError> {
    let mut built = std::collections::BTreeSet::new();
    let mut remaining: Vec<&PlannedStage> = stages.iter().collect();
    let mut out = Vec::new();
    while !remaining.is_empty() {
        let (ready, later): (Vec<&PlannedStage>, Vec<&PlannedStage>) = remaining
            .into_iter()
            .partition(|s| stage_inputs(s, stages).iter().all(|i| built.contains(i)));
        if ready.is_empty() {
            return Err(BuildError::Internal(
                "no stage is ready to run (a dependency cycle)",
            ));
        }
        built.extend(ready.iter().map(|s| s.index));
        out.push(ready);
        remaining = later;
    }
    Ok(out)
}

/// The stages a stage reads: its base stage, its `COPY --from` stages and its
/// `RUN --mount from=` stages (named or numbered among `stages`).
fn stage_inputs(stage: &PlannedStage, stages: &[PlannedStage]) -> Vec<usize> {
    let by_name = |from: &str| {
        let from = from.to_ascii_lowercase();
        stages
            .iter()
            .find(|s| s.name.as_deref() == Some(from.as_str()) || s.index.to_string() == from)
            .map(|s| s.index)
    };
    let mut inputs: Vec<usize> = Vec::new();
    for s in &stage.steps {
        if let Some(FromSource::Stage(i)) = s.copy_from {
            inputs.push(i);
        }
        if let Instruction::Run(run) = &s.step.instruction {
            inputs.extend(
                run.mounts
                    .iter()
                    .filter_map(|m| m.from.as_deref().and_then(by_name)),
            );
        }
    }
    if let StageBase::Stage(i) = stage.base {
        inputs.push(i);
    }
    inputs.retain(|i| *i != stage.index);
    inputs
}

impl StageRun<'_> {
    fn event(&self, e: BuildEvent) {
        if let Ok(mut f) = self.on_event.lock() {
            (*f)(e);
        }
    }

    fn lookup(&self, reference: &str) -> Result<(Manifest, ImageConfig), String> {
        let emit = |e: BuildEvent| self.event(e);
        let events = Events {
            emit: &emit,
            counter: &self.counter,
        };
        self.images
            .lock()
            .map_err(|_| "the image resolver is poisoned".to_string())?
            .lookup(reference, &events)
    }

    /// Runs one stage whose inputs are in `done`.
    fn stage(
        &self,
        stage: &PlannedStage,
        done: &BTreeMap<usize, StageImage>,
    ) -> Result<StageImage, BuildError> {
        let store = self.store;
        let stage_name = stage
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", stage.index));
        let from_text = match &stage.base {
            StageBase::Scratch => "FROM scratch".to_string(),
            StageBase::Image(r) => format!("FROM {r}"),
            StageBase::Stage(i) => format!("FROM stage {i}"),
        };
        let step_no = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        self.event(BuildEvent::StepStarted {
            stage: stage_name.clone(),
            step: step_no,
            total: self.total,
            text: from_text,
        });
        let started = Instant::now();
        let mut inherited_env = None;
        let platform = self.req.options.platform.to_string();
        let base = (|| -> Result<_, BuildError> {
            Ok(match &stage.base {
                StageBase::Scratch => (None, Vec::new(), base_key("scratch", "", &platform)),
                StageBase::Image(reference) => {
                    let (manifest, config) =
                        self.lookup(reference)
                            .map_err(|reason| BuildError::Instruction {
                                span: stage.base_span,
                                reason,
                            })?;
                    let layers = base_layers(store, &manifest.layers, &config.rootfs.diff_ids)?;
                    let key = base_key("image", manifest.config.digest.as_str(), &platform);
                    (Some(config), layers, key)
                }
                StageBase::Stage(i) => {
                    let parent = done.get(i).ok_or(BuildError::Internal(
                        "a stage ran before the stage it is based on",
                    ))?;
                    inherited_env = Some(parent.run_env.clone());
                    (
                        Some(parent.config.clone()),
                        parent.layers.clone(),
                        parent.key.clone(),
                    )
                }
            })
        })();
        let (base_config, mut layers, mut key) = match base {
            Ok(base) => base,
            Err(e) => {
                self.event(BuildEvent::StepFailed {
                    step: step_no,
                    elapsed: started.elapsed(),
                    error: e.to_string(),
                });
                return Err(e);
            }
        };
        let use_cache = !self.req.no_cache
            && !self
                .req
                .no_cache_filter
                .iter()
                .any(|f| f.eq_ignore_ascii_case(&stage_name) || *f == stage.index.to_string());
        self.event(BuildEvent::StepDone {
            step: step_no,
            elapsed: started.elapsed(),
        });
        let mut sc = StageConfig::start(base_config, &self.req.options.platform);
        if let Some(env) = inherited_env {
            sc.inherit_run_env(env);
        }
        // History entries of this stage still waiting for their time, and the time of its
        // latest layer step.
        let mut untimed: Vec<usize> = Vec::new();
        let mut last_layer_time: Option<String> = None;
        for step in &stage.steps {
            // `Some(time)` once the step has a layer.
            let mut step_time: Option<Option<String>> = None;
            if rbuild_executor::sandbox::interrupted() {
                return Err(BuildError::Interrupted);
            }
            if self.cancelled.load(Ordering::SeqCst) {
                return Err(BuildError::Cancelled);
            }
            let step_no = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
            self.event(BuildEvent::StepStarted {
                stage: stage_name.clone(),
                step: step_no,
                total: self.total,
                text: step.step.original.clone(),
            });
            let started = Instant::now();
            let fail = |e: BuildError| {
                let e = in_step(step, e);
                self.event(BuildEvent::StepFailed {
                    step: step_no,
                    elapsed: started.elapsed(),
                    error: e.to_string(),
                });
                e
            };
            let metadata_only = is_metadata_only(&step.step.instruction);
            // The key is of the step in the stage state before it.
            let inputs = if metadata_only {
                Some(Vec::new())
            } else {
                self.step_inputs(step, &sc, done).map_err(fail)?
            };
            let cacheable = inputs.is_some();
            let inputs = inputs.unwrap_or_default();
            // A context COPY's identity without its content: its earlier result is where a
            // re-run starts (see `copy_reuse`).
            let origin = (cacheable && copy_reuse::eligible(step)).then(|| {
                let without_content: Vec<(String, String)> = inputs
                    .iter()
                    .filter(|(name, _)| name != "context")
                    .cloned()
                    .collect();
                copy_reuse::origin_key(&step_key(
                    &key,
                    step,
                    &sc,
                    &self.req.layer_options,
                    &without_content,
                ))
            });
            key = step_key(&key, step, &sc, &self.req.layer_options, &inputs);
            let created_by = sc.apply(step).map_err(fail)?;
            let mut empty_layer = metadata_only;
            let mut cached = false;
            if !metadata_only {
                let parent = layers.last().cloned();
                let hit = if use_cache && cacheable {
                    let warn = |w: String| self.event(BuildEvent::Warning(w));
                    self.cache
                        .lookup(store, &key, parent.as_ref(), &warn)
                        .map_err(fail)?
                } else {
                    None
                };
                let layer = match hit {
                    Some(mut layer) => {
                        cached = true;
                        // A result stored before step times were kept gets one now, so that
                        // from now on rebuilds give the same image.
                        if let Some(l) = layer.as_mut().filter(|l| l.created.is_none()) {
                            if self.req.created.is_some() && self.req.source_date_epoch.is_none() {
                                l.created = self.req.created.clone();
                                cachekey::record(store, &key, Some(l)).map_err(fail)?;
                            }
                        }
                        layer
                    }
                    None => {
                        let origin = origin.as_ref().map(|key| Origin { key, use_cache });
                        let mut layer = self
                            .file_step(step, step_no, &sc, &layers, done, origin)
                            .map_err(fail)?;
                        if let Some(layer) = layer.as_mut() {
                            layer.created = self.req.created.clone();
                        }
                        if cacheable {
                            cachekey::record(store, &key, layer.as_ref()).map_err(fail)?;
                        }
                        layer
                    }
                };
                if cacheable {
                    self.cache
                        .note(stage.index, &key, parent.as_ref(), layer.as_ref());
                }
                match layer {
                    Some(layer) => {
                        let time = self.layer_time(&layer);
                        if time.is_some() {
                            last_layer_time.clone_from(&time);
                        }
                        step_time = Some(time);
                        layers.push(layer);
                    }
                    None => empty_layer = true,
                }
            }
            if let Some(created_by) = created_by {
                match step_time.take() {
                    Some(time) if !empty_layer => sc.push_history(created_by, time, false),
                    // Entries without a layer get the stage's time once it is known (below).
                    _ => {
                        untimed.push(sc.config.history.len());
                        sc.push_history(created_by, None, empty_layer);
                    }
                }
            }
            if cached {
                self.event(BuildEvent::StepCached { step: step_no });
            } else {
                self.event(BuildEvent::StepDone {
                    step: step_no,
                    elapsed: started.elapsed(),
                });
            }
        }
        // The stage is as old as its newest layer step: an unchanged rebuild, whose steps are
        // all cached, writes the same config, hence the same image.
        let created = last_layer_time.or_else(|| self.req.created.clone());
        for i in untimed {
            if let Some(h) = sc.config.history.get_mut(i) {
                h.created = created.clone();
            }
        }
        Ok(StageImage {
            key,
            run_env: sc.run_env().to_vec(),
            config: sc.config,
            layers,
            created,
        })
    }
    /// Runs one filesystem step in an overlay over the stage's layers. Returns its layer, or
    /// `None` when it changed nothing. A context COPY with an `origin` lists what it copies
    /// and, with the cache in use, starts from its earlier result (see `copy_reuse`).
    fn file_step(
        &self,
        step: &PlannedStep,
        step_no: usize,
        sc: &StageConfig,
        layers: &[StageLayer],
        done: &BTreeMap<usize, StageImage>,
        origin: Option<Origin<'_>>,
    ) -> Result<Option<StageLayer>, BuildError> {
        if let Some(origin) = origin {
            return self.context_copy(step, sc, layers, origin);
        }
        let store = self.store;
        let work = store.work_dir("step")?;
        let view = mount_view(store, layers, work.path())?;
        if let Instruction::Run(run) = &step.step.instruction {
            let roots = Roots { run: self, done };
            let on_output = |line: &str| {
                self.event(BuildEvent::StepOutput {
                    step: step_no,
                    line: line.to_string(),
                })
            };
            run_step(
                &RunStep {
                    store,
                    step,
                    run,
                    config: sc,
                    context: self.context,
                    context_view: &|| self.context_view(),
                    stages: &roots,
                    options: &self.req.run,
                    on_output: &on_output,
                },
                &view,
                work.path(),
            )?;
            // BuildKit gives every RUN a layer, even one that changed nothing.
            return self.finish_layer(view, &work, layers, true);
        }
        // A `--from` source: that stage's (or image's) root filesystem, through its own overlay.
        let from_work;
        let from_view;
        let source = match &step.copy_from {
            None => SourceRoot::Context {
                root: self.context,
                ignore: self.ignore,
            },
            Some(from) => {
                let from_layers = match from {
                    FromSource::Stage(i) => done
                        .get(i)
                        .map(|s| s.layers.clone())
                        .ok_or(BuildError::Internal("a --from stage was not built first"))?,
                    FromSource::Image(reference) => {
                        let (manifest, config) =
                            self.lookup(reference)
                                .map_err(|reason| BuildError::Instruction {
                                    span: step.step.span,
                                    reason,
                                })?;
                        base_layers(store, &manifest.layers, &config.rootfs.diff_ids)?
                    }
                };
                from_work = store.work_dir("from")?;
                from_view = mount_view(store, &from_layers, from_work.path())?;
                SourceRoot::Stage {
                    root: from_view.root(),
                }
            }
        };
        apply_file_step(
            &FileStep {
                step,
                workdir: sc.workdir(),
                user: &sc.config.config.user,
            },
            &source,
            view.root(),
            None,
        )?;
        self.finish_layer(view, &work, layers, false)
    }

    /// A context COPY with an origin (see `copy_reuse`): it lists what it copies and, with the
    /// cache in use, starts from its earlier result. Should that copy fail, it is done again
    /// from scratch: whatever went wrong, a copy from scratch is the reference.
    fn context_copy(
        &self,
        step: &PlannedStep,
        sc: &StageConfig,
        layers: &[StageLayer],
        origin: Origin<'_>,
    ) -> Result<Option<StageLayer>, BuildError> {
        match self.context_copy_once(step, sc, layers, origin.key, origin.use_cache) {
            Err(_) if origin.use_cache && !rbuild_executor::sandbox::interrupted() => {
                self.context_copy_once(step, sc, layers, origin.key, false)
            }
            result => result,
        }
    }

    fn context_copy_once(
        &self,
        step: &PlannedStep,
        sc: &StageConfig,
        layers: &[StageLayer],
        origin: &Digest,
        reuse: bool,
    ) -> Result<Option<StageLayer>, BuildError> {
        let store = self.store;
        let work = store.work_dir("step")?;
        let parent_chain = layers.last().map(|l| &l.chain_id);
        let mut journal = self.copy_journal(origin, reuse, parent_chain, work.path())?;
        let view = mount_view(store, layers, work.path())?;
        apply_file_step(
            &FileStep {
                step,
                workdir: sc.workdir(),
                user: &sc.config.config.user,
            },
            &SourceRoot::Context {
                root: self.context,
                ignore: self.ignore,
            },
            view.root(),
            Some(&mut journal),
        )?;
        drop(view);
        journal.sweep(&work.path().join("upper"))?;
        let layer = self.commit_upper(&work, layers, false)?;
        if let Some(layer) = &layer {
            if let Some(listing) = journal.finish() {
                copy_reuse::remember(store, origin, &layer.chain_id, parent_chain, listing)?;
            }
        }
        Ok(layer)
    }

    /// The journal of a context COPY: its upper dir (`work/upper`) is created and, with `reuse`,
    /// filled from the step's earlier result when there is one.
    fn copy_journal(
        &self,
        origin: &Digest,
        reuse: bool,
        parent_chain: Option<&Digest>,
        work: &Path,
    ) -> Result<copy_reuse::ListingJournal, BuildError> {
        let upper = work.join("upper");
        std::fs::create_dir(&upper).map_err(|e| BuildError::Io {
            what: format!("creating {}", upper.display()),
            source: e,
        })?;
        let mut taken = copy_reuse::TakenOver::default();
        if reuse {
            match copy_reuse::start_from_origin(
                self.store,
                origin,
                parent_chain,
                self.context,
                &upper,
            ) {
                Ok(found) => taken = found.unwrap_or_default(),
                Err(e) => {
                    // A full copy instead, into an empty upper dir.
                    self.event(BuildEvent::Warning(format!(
                        "starting the COPY from its earlier result failed, copying everything: {e}"
                    )));
                    copy_reuse::clear_dir(&upper)?;
                }
            }
        }
        copy_reuse::ListingJournal::new(self.store, taken)
    }

    /// The time of a layer step's history entry: when it ran (a cached step: when it first
    /// ran), or the reproducible epoch when one is set.
    fn layer_time(&self, layer: &StageLayer) -> Option<String> {
        if self.req.source_date_epoch.is_some() || self.req.created.is_none() {
            return self.req.created.clone();
        }
        layer.created.clone().or_else(|| self.req.created.clone())
    }

    /// Turns a finished step's upper dir into its layer (`None` when it changed nothing,
    /// unless `keep_empty`).
    fn finish_layer(
        &self,
        view: OverlayView,
        work: &rbuild_cache::WorkDir,
        layers: &[StageLayer],
        keep_empty: bool,
    ) -> Result<Option<StageLayer>, BuildError> {
        drop(view);
        self.commit_upper(work, layers, keep_empty)
    }

    /// [`Self::finish_layer`] once the step's overlay is unmounted.
    fn commit_upper(
        &self,
        work: &rbuild_cache::WorkDir,
        layers: &[StageLayer],
        keep_empty: bool,
    ) -> Result<Option<StageLayer>, BuildError> {
        let upper = work.path().join("upper");
        if !keep_empty && is_empty_dir(&upper)? {
            return Ok(None);
        }
        let layer = commit_layer(self.store, &upper, layers.last(), &self.req.layer_options)?;
        Ok(Some(layer))
    }
}

impl StageRun<'_> {
    /// A source stage's key or an image's config digest, for `--from` inputs.
    fn source_id(
        &self,
        from: &str,
        done: &BTreeMap<usize, StageImage>,
    ) -> Result<String, BuildError> {
        if let Some(i) = self.stage_names.get(&from.to_ascii_lowercase()) {
            let stage = done
                .get(i)
                .ok_or(BuildError::Internal("a --from stage was not built first"))?;
            return Ok(format!("stage {}", stage.key));
        }
        let (manifest, _) = self.lookup(from).map_err(|reason| BuildError::Mount {
            what: format!("--from={from}"),
            source: std::io::Error::other(reason),
        })?;
        Ok(format!("image {}", manifest.config.digest))
    }

    /// What a step reads besides its definition, as key inputs; `None` when its result cannot
    /// be known from its inputs (never cached).
    fn step_inputs(
        &self,
        step: &PlannedStep,
        sc: &StageConfig,
        done: &BTreeMap<usize, StageImage>,
    ) -> Result<Option<Vec<(String, String)>>, BuildError> {
        let mut inputs = Vec::new();
        match &step.step.instruction {
            Instruction::Copy(_) | Instruction::Add(_) => match &step.copy_from {
                Some(FromSource::Stage(i)) => {
                    let stage = done
                        .get(i)
                        .ok_or(BuildError::Internal("a --from stage was not built first"))?;
                    inputs.push(("from".into(), format!("stage {}", stage.key)));
                }
                Some(FromSource::Image(reference)) => {
                    inputs.push(("from".into(), self.source_id(reference, done)?));
                }
                None => {
                    let source = SourceRoot::Context {
                        root: self.context,
                        ignore: self.ignore,
                    };
                    let Some(op) = step_copy_op(step, sc.workdir(), &source, None)? else {
                        return Ok(Some(inputs));
                    };
                    let sum =
                        rbuild_executor::checksum::checksum(&op, self.context, &self.digests)?;
                    if !sum.remote_urls.is_empty() && op.checksum.is_none() {
                        // A URL's content is only known by downloading it.
                        return Ok(None);
                    }
                    inputs.push(("context".into(), sum.digest_string()));
                }
            },
            Instruction::Run(run) => {
                for m in &run.mounts {
                    use rbuild_parser::mount::MountType;
                    match (m.kind, &m.from) {
                        (MountType::Bind, None) => {
                            let op = rbuild_executor::CopyOp {
                                sources: vec![m.source.clone().unwrap_or_else(|| ".".into())],
                                dest: "/".into(),
                                ignore: self.ignore.cloned(),
                                keep_owners: true,
                                ..rbuild_executor::CopyOp::default()
                            };
                            let sum = rbuild_executor::checksum::checksum(
                                &op,
                                self.context,
                                &self.digests,
                            )?;
                            inputs.push(("bind".into(), sum.digest_string()));
                        }
                        (MountType::Bind | MountType::Cache, Some(from)) => {
                            inputs.push(("mount-from".into(), self.source_id(from, done)?));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        Ok(Some(inputs))
    }

    /// The build context as RUN bind mounts see it: the context dir itself, or, when a
    /// `.dockerignore` applies, a copy without the ignored files (made once per build).
    fn context_view(&self) -> Result<PathBuf, BuildError> {
        let mut slot = self
            .context_view
            .lock()
            .map_err(|_| BuildError::Internal("the context view is poisoned"))?;
        if let Some((_, dir)) = slot.as_ref() {
            return Ok(dir.clone());
        }
        let Some(ignore) = self.ignore else {
            *slot = Some((None, self.req.context_dir.clone()));
            return Ok(self.req.context_dir.clone());
        };
        let work = self.store.work_dir("context")?;
        let dir = work.path().join("context");
        std::fs::create_dir(&dir).map_err(|e| BuildError::Io {
            what: format!("creating {}", dir.display()),
            source: e,
        })?;
        let dest = Root::open(&dir).map_err(|source| BuildError::Fs {
            what: "opening the context copy".into(),
            source,
        })?;
        let op = rbuild_executor::CopyOp {
            sources: vec![".".into()],
            dest: "/".into(),
            ignore: Some(ignore.clone()),
            keep_owners: true,
            ..rbuild_executor::CopyOp::default()
        };
        rbuild_executor::copy(&op, self.context, &dest)?;
        *slot = Some((Some(work), dir.clone()));
        Ok(dir)
    }
}

/// Root filesystems of built stages and images, for `RUN --mount from=`.
struct Roots<'r, 'a> {
    run: &'r StageRun<'a>,
    done: &'r BTreeMap<usize, StageImage>,
}

impl StageRoots for Roots<'_, '_> {
    fn root_of(&self, from: &str, work: &Path) -> Result<OverlayView, BuildError> {
        let layers = match self.run.stage_names.get(&from.to_ascii_lowercase()) {
            Some(i) => self
                .done
                .get(i)
                .map(|s| s.layers.clone())
                .ok_or(BuildError::Internal(
                    "a --mount from= stage was not built first",
                ))?,
            None => {
                let (manifest, config) =
                    self.run.lookup(from).map_err(|reason| BuildError::Mount {
                        what: format!("--mount from={from}"),
                        source: std::io::Error::other(reason),
                    })?;
                base_layers(self.run.store, &manifest.layers, &config.rootfs.diff_ids)?
            }
        };
        mount_view(self.run.store, &layers, work)
    }
}

/// The earlier result a context COPY may start from.
#[derive(Clone, Copy)]
struct Origin<'k> {
    /// The step's origin key (`copy_reuse::origin_key`).
    key: &'k Digest,
    /// Whether the cache is in use for the step (else it only lists what it copies).
    use_cache: bool,
}

/// An overlay over `layers` with `upper` and `work` dirs made inside `dir` (`upper` may exist
/// already, filled by the caller).
fn mount_view(store: &Store, layers: &[StageLayer], dir: &Path) -> Result<OverlayView, BuildError> {
    let (upper, work, empty) = (dir.join("upper"), dir.join("work"), dir.join("empty"));
    for d in [&upper, &work, &empty] {
        if d == &upper && upper.is_dir() {
            continue;
        }
        std::fs::create_dir(d).map_err(|e| BuildError::Io {
            what: format!("creating {}", d.display()),
            source: e,
        })?;
    }
    let mut lowers = lower_dirs(store, layers)?;
    if lowers.is_empty() {
        lowers.push(empty);
    }
    OverlayView::mount(&lowers, &upper, &work)
}

fn is_empty_dir(dir: &Path) -> Result<bool, BuildError> {
    let mut entries = std::fs::read_dir(dir).map_err(|e| BuildError::Io {
        what: format!("reading {}", dir.display()),
        source: e,
    })?;
    Ok(entries.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbuild_parser::instruction::parse;
    use rbuild_solver::{BaseImageInfo, BaseImageResolver};

    struct AnyImage;

    impl BaseImageResolver for AnyImage {
        fn resolve(&mut self, _: &str) -> Result<BaseImageInfo, String> {
            Ok(BaseImageInfo::default())
        }
    }

    #[test]
    fn independent_stages_share_a_wave() {
        // (Dockerfile, waves of stage indexes)
        let cases: &[(&str, &[&[usize]])] = &[
            ("FROM a AS x\nFROM b AS y\nFROM c\nCOPY --from=x /a /a\nCOPY --from=y /b /b\n", &[&[0, 1], &[2]]),
            ("FROM a AS x\nFROM x AS y\nFROM y\n", &[&[0], &[1], &[2]]),
            ("FROM a AS x\nFROM a AS y\nCOPY --from=x / /\nFROM a\nCOPY --from=x / /x\nCOPY --from=y / /y\n", &[&[0], &[1], &[2]]),
            ("FROM scratch\n", &[&[0]]),
        ];
        for (src, want) in cases {
            let file = parse(src).unwrap_or_else(|e| panic!("{e}"));
            let p = plan(&file, &BuildOptions::default(), &mut AnyImage)
                .unwrap_or_else(|e| panic!("{e}"));
            let got: Vec<Vec<usize>> = waves(&p.stages)
                .unwrap_or_default()
                .iter()
                .map(|w| w.iter().map(|s| s.index).collect())
                .collect();
            let want: Vec<Vec<usize>> = want.iter().map(|w| w.to_vec()).collect();
            assert_eq!(got, want, "{src:?}");
        }
    }
}
