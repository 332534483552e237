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
use rbuild_image::reference::Reference;
use rbuild_image::{write_image, ImageConfig, LayerOptions};
use rbuild_parser::instruction::{parse, Instruction};
use rbuild_solver::{
    plan, BaseImageInfo, BaseImageResolver, BuildOptions, FromSource, PlannedStage, PlannedStep,
    StageBase,
};

use crate::config::{is_metadata_only, StageConfig};
use crate::error::BuildError;
use crate::fileops::{apply_file_step, FileStep, SourceRoot};
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
    /// Layer compression and the manifest format.
    pub layer_options: LayerOptions,
    /// `created` timestamps (RFC 3339); `None` leaves them out.
    pub created: Option<String>,
    /// Secrets, SSH agents, network and limits of RUN steps.
    pub run: RunOptions,
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
    config: ImageConfig,
    layers: Vec<StageLayer>,
    /// The RUN environment a stage built FROM this one starts with (ARG values included).
    run_env: Vec<String>,
}

/// Base images come from the store's image index (pulling arrives with the registry client).
struct StoreImages<'a> {
    store: &'a Store,
    found: BTreeMap<String, (Manifest, ImageConfig)>,
}

impl StoreImages<'_> {
    fn lookup(&mut self, reference: &str) -> Result<(Manifest, ImageConfig), String> {
        if let Some(found) = self.found.get(reference) {
            return Ok(found.clone());
        }
        let parsed = Reference::parse(reference).map_err(|e| e.to_string())?;
        let name = parsed.to_string();
        let record = self
            .store
            .images()
            .get(&name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{name} is not in the local image store (pulling from registries is not supported yet; use `rbuild load`)"))?;
        let desc = Descriptor::new(&record.media_type, record.manifest.clone(), 0);
        let (_, manifest) =
            rbuild_image::images::resolve_manifest(self.store, &desc).map_err(|e| e.to_string())?;
        let config = rbuild_image::images::read_config(self.store, &manifest.config.digest)
            .map_err(|e| e.to_string())?;
        self.found
            .insert(reference.to_string(), (manifest.clone(), config.clone()));
        Ok((manifest, config))
    }
}

impl BaseImageResolver for StoreImages<'_> {
    fn resolve(&mut self, reference: &str) -> Result<BaseImageInfo, String> {
        let (_, config) = self.lookup(reference)?;
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

/// Builds `req` in `store`, reporting progress to `on_event`.
pub fn build(
    store: &Store,
    req: &BuildRequest,
    on_event: &mut (dyn FnMut(BuildEvent) + Send),
) -> Result<BuiltImage, BuildError> {
    let file = parse(&req.dockerfile)?;
    for w in &file.warnings {
        on_event(BuildEvent::Warning(w.message.clone()));
    }
    let mut images = StoreImages {
        store,
        found: BTreeMap::new(),
    };
    let plan = plan(&file, &req.options, &mut images)?;
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
    let total: usize = plan.stages.iter().map(|s| s.steps.len() + 1).sum();
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
    let run = StageRun {
        stage_names,
        context_view: Mutex::new(None),
        store,
        req,
        images: Mutex::new(images),
        context: &context,
        ignore: ignore.as_ref(),
        counter: AtomicUsize::new(0),
        total,
        on_event: Mutex::new(on_event),
    };
    let mut done: BTreeMap<usize, StageImage> = BTreeMap::new();
    for wave in waves(&plan.stages)? {
        // Every stage of a wave has its inputs built: independent stages run side by side.
        let finished: Vec<(usize, Result<StageImage, BuildError>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = wave
                .iter()
                .map(|stage| {
                    let (run, done) = (&run, &done);
                    (stage.index, scope.spawn(move || run.stage(stage, done)))
                })
                .collect();
            handles
                .into_iter()
                .map(|(i, h)| {
                    (
                        i,
                        h.join()
                            .unwrap_or(Err(BuildError::Internal("a stage's thread panicked"))),
                    )
                })
                .collect()
        });
        for (index, result) in finished {
            done.insert(index, result?);
        }
    }
    let target = done
        .remove(&plan.target)
        .ok_or(BuildError::Internal("the target stage was not built"))?;
    let mut config = target.config;
    config.config.labels.extend(req.labels.clone());
    config.created = req.created.clone();
    let infos: Vec<_> = target.layers.iter().map(StageLayer::info).collect();
    let manifest = write_image(store, config.clone(), &infos, req.layer_options.format)?;
    let written = rbuild_image::images::resolve_manifest(store, &manifest)?.1;
    Ok(BuiltImage {
        manifest,
        config_digest: written.config.digest,
        config,
        layers: target.layers,
    })
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
        self.images
            .lock()
            .map_err(|_| "the image resolver is poisoned".to_string())?
            .lookup(reference)
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
        let (base_config, mut layers) = match &stage.base {
            StageBase::Scratch => (None, Vec::new()),
            StageBase::Image(reference) => {
                let (manifest, config) =
                    self.lookup(reference)
                        .map_err(|reason| BuildError::Instruction {
                            span: stage.base_span,
                            reason,
                        })?;
                let layers = base_layers(store, &manifest.layers, &config.rootfs.diff_ids)?;
                (Some(config), layers)
            }
            StageBase::Stage(i) => {
                let parent = done.get(i).ok_or(BuildError::Internal(
                    "a stage ran before the stage it is based on",
                ))?;
                inherited_env = Some(parent.run_env.clone());
                (Some(parent.config.clone()), parent.layers.clone())
            }
        };
        self.event(BuildEvent::StepDone {
            step: step_no,
            elapsed: started.elapsed(),
        });
        let mut sc = StageConfig::start(base_config, &self.req.options.platform);
        if let Some(env) = inherited_env {
            sc.inherit_run_env(env);
        }
        for step in &stage.steps {
            if rbuild_executor::sandbox::interrupted() {
                return Err(BuildError::Interrupted);
            }
            let step_no = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
            self.event(BuildEvent::StepStarted {
                stage: stage_name.clone(),
                step: step_no,
                total: self.total,
                text: step.step.original.clone(),
            });
            let started = Instant::now();
            let created_by = sc.apply(step).map_err(|e| in_step(step, e))?;
            let mut empty_layer = is_metadata_only(&step.step.instruction);
            if !empty_layer {
                match self
                    .file_step(step, step_no, &sc, &layers, done)
                    .map_err(|e| in_step(step, e))?
                {
                    Some(layer) => layers.push(layer),
                    None => empty_layer = true,
                }
            }
            if let Some(created_by) = created_by {
                sc.push_history(created_by, self.req.created.clone(), empty_layer);
            }
            self.event(BuildEvent::StepDone {
                step: step_no,
                elapsed: started.elapsed(),
            });
        }
        Ok(StageImage {
            run_env: sc.run_env().to_vec(),
            config: sc.config,
            layers,
        })
    }
    /// Runs one filesystem step in an overlay over the stage's layers. Returns its layer, or
    /// `None` when it changed nothing.
    fn file_step(
        &self,
        step: &PlannedStep,
        step_no: usize,
        sc: &StageConfig,
        layers: &[StageLayer],
        done: &BTreeMap<usize, StageImage>,
    ) -> Result<Option<StageLayer>, BuildError> {
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
        )?;
        self.finish_layer(view, &work, layers, false)
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
        let store = self.store;
        drop(view);
        let upper = work.path().join("upper");
        if !keep_empty && is_empty_dir(&upper)? {
            return Ok(None);
        }
        let layer = commit_layer(store, &upper, layers.last(), &self.req.layer_options)?;
        Ok(Some(layer))
    }
}

impl StageRun<'_> {
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

/// An overlay over `layers` with `upper` and `work` dirs made inside `dir`.
fn mount_view(store: &Store, layers: &[StageLayer], dir: &Path) -> Result<OverlayView, BuildError> {
    let (upper, work, empty) = (dir.join("upper"), dir.join("work"), dir.join("empty"));
    for d in [&upper, &work, &empty] {
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
    use rbuild_solver::BaseImageInfo;

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
