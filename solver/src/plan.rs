//! Build planning: which stages a target needs and in what order, and every needed instruction
//! with its variables expanded in the scope BuildKit gives it — meta ARGs (before the first
//! `FROM`) for `FROM` lines, then per stage the base image's ENV, the stage's ARGs (from
//! `--build-arg`, their defaults, or the meta ARG of the same name) and its ENVs, where an ENV
//! always wins over an ARG of the same name.
//!
//! Stages no target needs are never planned, so their mistakes (say, an unset `${X:?}`) cannot
//! fail a build that does not use them.

use std::collections::{BTreeMap, BTreeSet};

use petgraph::algo::toposort;
use petgraph::graphmap::DiGraphMap;
use petgraph::visit::Dfs;
use rbuild_parser::instruction::{ArgDecl, Dockerfile, Instruction, Step};
use rbuild_parser::shell::Lexer;
use rbuild_parser::span::{Span, Spanned};
use rbuild_parser::ParseError;

use crate::platform::Platform;

/// Build arguments Docker passes to RUN without a declaring `ARG`, and never records.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// What a build was asked for.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// `--build-arg NAME=VALUE`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: a stage name (or index); the last stage when absent.
    pub target: Option<String>,
    /// The platform the image is built for.
    pub platform: Platform,
    /// The platform the build runs on.
    pub build_platform: Platform,
}

/// What planning needs to know of a base image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseImageInfo {
    /// Its `config.Env`, in order.
    pub env: Vec<(String, String)>,
    /// Its `config.OnBuild` triggers, run at the start of a stage built on it.
    pub onbuild: Vec<String>,
}

/// Looks base images up (in the local store, later in registries).
pub trait BaseImageResolver {
    /// `reference` is the `FROM` image after expansion, as written (not yet normalised).
    fn resolve(&mut self, reference: &str) -> Result<BaseImageInfo, String>;
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageBase {
    Scratch,
    /// An image reference (expanded, as written).
    Image(String),
    /// An earlier stage, by index.
    Stage(usize),
}

/// Where a `COPY --from` or `RUN --mount from=` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromSource {
    Stage(usize),
    Image(String),
}

/// One instruction ready to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStep {
    /// The instruction with its variables expanded.
    pub step: Step,
    /// ENV in effect before the step (the image's environment).
    pub env: Vec<(String, String)>,
    /// ARGs in scope with a value, in declaration order (RUN sees them; images never record them).
    pub args: Vec<(String, String)>,
    /// Variables the step's expansion referenced.
    pub vars_used: BTreeSet<String>,
    /// The step came from a base image's ONBUILD trigger.
    pub from_onbuild: bool,
    /// Where its `COPY --from` reads: a stage (by index) or an image reference.
    pub copy_from: Option<FromSource>,
}

/// A stage ready to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStage {
    pub index: usize,
    pub name: Option<String>,
    pub base: StageBase,
    pub base_span: Span,
    pub steps: Vec<PlannedStep>,
    /// ENV at the end of the stage.
    pub env: Vec<(String, String)>,
    /// ONBUILD triggers the stage's image will carry (inherited plus its own).
    pub onbuild: Vec<String>,
}

/// The stages a target needs, dependencies first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildPlan {
    pub stages: Vec<PlannedStage>,
    /// Index (into the Dockerfile's stages) of the target stage.
    pub target: usize,
    /// `--build-arg`s no needed stage declared (proxy variables excepted).
    pub unused_build_args: Vec<String>,
    /// The meta ARGs with their values.
    pub meta_args: Vec<(String, String)>,
}

impl BuildPlan {
    pub fn stage(&self, index: usize) -> Option<&PlannedStage> {
        self.stages.iter().find(|s| s.index == index)
    }
}

/// Why a build cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    #[error("target stage {target:?} could not be found (stages: {known})")]
    UnknownTarget { target: String, known: String },
    #[error("the Dockerfile has no stages")]
    NoStages,
    #[error("circular dependency between stages {0}")]
    Cycle(String),
    #[error("stage {reference:?} refers to itself or to a stage that comes after it")]
    ForwardStageReference { reference: String, span: Span },
    #[error("base image {reference:?}: {reason}")]
    BaseImage {
        reference: String,
        reason: String,
        span: Span,
    },
    #[error(transparent)]
    Parse(#[from] ParseError),
}

impl SolveError {
    /// The Dockerfile span the error is about, when there is one.
    pub fn span(&self) -> Option<Span> {
        match self {
            SolveError::ForwardStageReference { span, .. } | SolveError::BaseImage { span, .. } => {
                Some(*span)
            }
            SolveError::Parse(e) => Some(e.span),
            _ => None,
        }
    }
}

/// Plans a build of `file` for `opts`, resolving base images through `resolver`.
pub fn plan(
    file: &Dockerfile,
    opts: &BuildOptions,
    resolver: &mut dyn BaseImageResolver,
) -> Result<BuildPlan, SolveError> {
    if file.stages.is_empty() {
        return Err(SolveError::NoStages);
    }
    let lexer = Lexer::new(file.directives.escape);
    let mut declared: BTreeSet<String> = BTreeSet::new();
    let automatic = automatic_args(opts);
    let meta = meta_arg_values(file, opts, &lexer, &automatic, &mut declared)?;
    let mut meta_scope = automatic.clone();
    meta_scope.extend(meta.iter().cloned());

    // FROM lines first: they decide which stages feed which.
    let mut bases = Vec::with_capacity(file.stages.len());
    for (index, stage) in file.stages.iter().enumerate() {
        let mut from = stage.base.clone();
        from.expand(&lexer, &meta_scope)?;
        let image = from.image.value;
        let base = if image.eq_ignore_ascii_case("scratch") {
            StageBase::Scratch
        } else if let Some(parent) = stage_by_name(file, &image, index) {
            StageBase::Stage(parent)
        } else {
            StageBase::Image(image)
        };
        bases.push(base);
    }

    let target = match &opts.target {
        None => file.stages.len() - 1,
        Some(t) => file
            .stage(t)
            .map(|(i, _)| i)
            .ok_or_else(|| SolveError::UnknownTarget {
                target: t.clone(),
                known: file
                    .stages
                    .iter()
                    .enumerate()
                    .map(|(i, s)| s.name.clone().unwrap_or_else(|| i.to_string()))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?,
    };

    // The stage graph: an edge from each stage to every stage it reads.
    let mut graph: DiGraphMap<usize, ()> = DiGraphMap::new();
    for (index, stage) in file.stages.iter().enumerate() {
        graph.add_node(index);
        if let StageBase::Stage(parent) = bases[index] {
            graph.add_edge(index, parent, ());
        }
        for step in &stage.instructions {
            for (reference, span) in step_sources(&step.instruction) {
                if let Some(FromSource::Stage(other)) = resolve_from(file, &reference) {
                    if other == index {
                        return Err(SolveError::ForwardStageReference { reference, span });
                    }
                    graph.add_edge(index, other, ());
                }
            }
        }
    }
    let mut needed = BTreeSet::new();
    let mut dfs = Dfs::new(&graph, target);
    while let Some(n) = dfs.next(&graph) {
        needed.insert(n);
    }
    let order = toposort(&graph, None).map_err(|cycle| {
        SolveError::Cycle(format!("(stage {} is part of a cycle)", cycle.node_id()))
    })?;

    let mut planned: BTreeMap<usize, PlannedStage> = BTreeMap::new();
    // toposort puts dependents first; plan dependencies first.
    for index in order.into_iter().rev().filter(|i| needed.contains(i)) {
        let stage = &file.stages[index];
        let base = bases[index].clone();
        let info = match &base {
            StageBase::Scratch => BaseImageInfo::default(),
            StageBase::Stage(parent) => match planned.get(parent) {
                Some(p) => BaseImageInfo {
                    env: p.env.clone(),
                    onbuild: p.onbuild.clone(),
                },
                None => {
                    return Err(SolveError::Cycle(format!(
                        "(stage {index} needs stage {parent})"
                    )))
                }
            },
            StageBase::Image(reference) => {
                resolver
                    .resolve(reference)
                    .map_err(|reason| SolveError::BaseImage {
                        reference: reference.clone(),
                        reason,
                        span: stage.base.image.span,
                    })?
            }
        };
        let p = plan_stage(
            file,
            index,
            base,
            info,
            opts,
            &lexer,
            &meta_scope,
            &mut declared,
        )?;
        planned.insert(index, p);
    }

    let unused_build_args = opts
        .build_args
        .keys()
        .filter(|k| !declared.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
        .cloned()
        .collect();
    let mut stages: Vec<PlannedStage> = Vec::new();
    // Dependencies first, otherwise in file order.
    let mut remaining: Vec<usize> = planned.keys().copied().collect();
    while !remaining.is_empty() {
        let ready = remaining
            .iter()
            .position(|i| {
                graph
                    .neighbors(*i)
                    .all(|d| stages.iter().any(|s| s.index == d))
            })
            .unwrap_or(0);
        let index = remaining.remove(ready);
        if let Some(p) = planned.remove(&index) {
            stages.push(p);
        }
    }
    Ok(BuildPlan {
        stages,
        target,
        unused_build_args,
        meta_args: meta,
    })
}

/// The platform ARGs BuildKit defines in the meta scope.
fn automatic_args(opts: &BuildOptions) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (prefix, p) in [("TARGET", &opts.platform), ("BUILD", &opts.build_platform)] {
        out.push((format!("{prefix}PLATFORM"), p.to_string()));
        out.push((format!("{prefix}OS"), p.os.clone()));
        out.push((format!("{prefix}ARCH"), p.architecture.clone()));
        out.push((
            format!("{prefix}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        ));
    }
    out
}

/// Values of the ARGs before the first FROM, each default expanded with the ones before it.
fn meta_arg_values(
    file: &Dockerfile,
    opts: &BuildOptions,
    lexer: &Lexer,
    automatic: &[(String, String)],
    declared: &mut BTreeSet<String>,
) -> Result<Vec<(String, String)>, SolveError> {
    let mut values: Vec<(String, String)> = Vec::new();
    for arg in &file.meta_args {
        for decl in &arg.value.args {
            let scope: Vec<(String, String)> =
                automatic.iter().chain(values.iter()).cloned().collect();
            let name = decl.name.value.clone();
            declared.insert(name.clone());
            if let (Some(v), _) = arg_value(decl, opts, lexer, &scope, None)? {
                set_var(&mut values, name, v);
            }
        }
    }
    Ok(values)
}

/// An ARG's value — the `--build-arg`, else its default expanded in `scope`, else `fallback` —
/// and the variables its default referenced.
fn arg_value(
    decl: &ArgDecl,
    opts: &BuildOptions,
    lexer: &Lexer,
    scope: &[(String, String)],
    fallback: Option<&str>,
) -> Result<(Option<String>, BTreeSet<String>), SolveError> {
    let mut expanded = decl.clone();
    let used = expanded.expand(lexer, &scope.to_vec())?.used;
    let value = match opts.build_args.get(&decl.name.value) {
        Some(v) => Some(v.clone()),
        None if expanded.default.is_some() => expanded.default.map(|s| s.value),
        None => fallback.map(str::to_string),
    };
    Ok((value, used))
}

/// Sets `name` in an ordered variable list: replaced in place, or appended.
pub fn set_var(vars: &mut Vec<(String, String)>, name: String, value: String) {
    match vars.iter_mut().find(|(k, _)| *k == name) {
        Some(slot) => slot.1 = value,
        None => vars.push((name, value)),
    }
}

/// A stage named `name` (case-insensitive) defined before `before`, or by index.
fn stage_by_name(file: &Dockerfile, name: &str, before: usize) -> Option<usize> {
    let lower = name.to_ascii_lowercase();
    file.stages[..before.min(file.stages.len())]
        .iter()
        .position(|s| s.name.as_deref() == Some(lower.as_str()))
}

/// How BuildKit reads a `--from` value: a stage name, a stage index, or else an image.
pub fn resolve_from(file: &Dockerfile, reference: &str) -> Option<FromSource> {
    let lower = reference.to_ascii_lowercase();
    if let Some(i) = file
        .stages
        .iter()
        .position(|s| s.name.as_deref() == Some(lower.as_str()))
    {
        return Some(FromSource::Stage(i));
    }
    if let Ok(i) = reference.parse::<usize>() {
        return (i < file.stages.len()).then_some(FromSource::Stage(i));
    }
    Some(FromSource::Image(reference.to_string()))
}

/// Every `--from` an instruction reads (COPY --from, RUN --mount from=), with its span.
fn step_sources(instruction: &Instruction) -> Vec<(String, Span)> {
    match instruction {
        Instruction::Copy(c) => c.from.iter().map(|f| (f.value.clone(), f.span)).collect(),
        Instruction::Run(r) => r
            .mounts
            .iter()
            .filter_map(|m| m.from.clone().map(|f| (f, m.span)))
            .collect(),
        Instruction::Onbuild(_) => Vec::new(),
        _ => Vec::new(),
    }
}

#[allow(clippy::too_many_arguments)]
fn plan_stage(
    file: &Dockerfile,
    index: usize,
    base: StageBase,
    info: BaseImageInfo,
    opts: &BuildOptions,
    lexer: &Lexer,
    meta_scope: &[(String, String)],
    declared: &mut BTreeSet<String>,
) -> Result<PlannedStage, SolveError> {
    let stage = &file.stages[index];
    let mut env = info.env.clone();
    let mut args: Vec<(String, String)> = PROXY_ARGS
        .iter()
        .filter_map(|k| {
            opts.build_args
                .get(*k)
                .map(|v| ((*k).to_string(), v.clone()))
        })
        .collect();
    let mut steps = Vec::new();
    let mut onbuild = Vec::new();

    let mut triggers = Vec::new();
    for text in &info.onbuild {
        let trigger = parse_trigger(text, stage.base_span)?;
        triggers.push((trigger, true));
    }
    let own = stage.instructions.iter().cloned().map(|s| (s, false));
    // What expansions see: ARG values and ENV in the order they were set, so that of an ARG
    // and an ENV of the same name the later one wins (as BuildKit expands).
    let mut order: Vec<(String, String)> = args.iter().chain(env.iter()).cloned().collect();
    for (mut step, from_onbuild) in triggers.into_iter().chain(own) {
        let scope: Vec<(String, String)> = order.clone();
        let env_before = env.clone();
        let args_before = args.clone();
        let mut vars_used = BTreeSet::new();
        match &mut step.instruction {
            Instruction::Arg(arg) => {
                for decl in &mut arg.args {
                    let scope: Vec<(String, String)> = order.clone();
                    let name = decl.name.value.clone();
                    declared.insert(name.clone());
                    let fallback = meta_scope
                        .iter()
                        .rev()
                        .find(|(k, _)| *k == name)
                        .map(|(_, v)| v.as_str());
                    let (value, used) = arg_value(decl, opts, lexer, &scope, fallback)?;
                    vars_used.extend(used);
                    if let Some(v) = value {
                        decl.default = Some(Spanned::new(
                            v.clone(),
                            decl.default.as_ref().map_or(decl.name.span, |d| d.span),
                        ));
                        set_later(&mut order, &name, &v);
                        set_var(&mut args, name, v);
                    }
                }
            }
            Instruction::Onbuild(o) => onbuild.push(o.expression.clone()),
            instruction => {
                let usage = instruction.expand(lexer, &scope)?;
                vars_used.extend(usage.used);
                if let Instruction::Env(e) = instruction {
                    for kv in &e.vars {
                        set_later(&mut order, &kv.key.value, &kv.value.value);
                        set_var(&mut env, kv.key.value.clone(), kv.value.value.clone());
                    }
                }
            }
        }
        let copy_from = match &step.instruction {
            Instruction::Copy(c) => c.from.as_ref().and_then(|f| resolve_from(file, &f.value)),
            _ => None,
        };
        steps.push(PlannedStep {
            step,
            env: env_before,
            args: args_before,
            vars_used,
            from_onbuild,
            copy_from,
        });
    }
    Ok(PlannedStage {
        index,
        name: stage.name.clone(),
        base,
        base_span: stage.base_span,
        steps,
        env,
        onbuild,
    })
}

/// Sets `key` to `value` as the most recent assignment of `order`.
fn set_later(order: &mut Vec<(String, String)>, key: &str, value: &str) {
    order.retain(|(k, _)| k != key);
    order.push((key.to_string(), value.to_string()));
}

/// Parses one ONBUILD trigger from a base image. Errors point at the stage's FROM.
fn parse_trigger(text: &str, from_span: Span) -> Result<Step, SolveError> {
    let located = |e: ParseError| SolveError::BaseImage {
        reference: String::new(),
        reason: format!("its ONBUILD trigger {text:?} is invalid: {}", e.kind),
        span: from_span,
    };
    let raw = rbuild_parser::raw::parse(text).map_err(located)?;
    let node = raw.nodes.first().ok_or_else(|| {
        located(ParseError::new(
            rbuild_parser::ParseErrorKind::EmptyDockerfile,
            Span::default(),
        ))
    })?;
    if matches!(node.keyword.as_str(), "onbuild" | "from" | "maintainer") {
        return Err(SolveError::BaseImage {
            reference: String::new(),
            reason: format!(
                "{} is not allowed as an ONBUILD trigger",
                node.keyword.to_ascii_uppercase()
            ),
            span: from_span,
        });
    }
    let mut step = Step::from_node(node, raw.directives.escape).map_err(located)?;
    // Spans of trigger text do not point into this Dockerfile: use the FROM line's.
    step.span = from_span;
    step.keyword_span = from_span;
    Ok(step)
}
