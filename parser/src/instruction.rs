//! The typed layer: raw [`Node`]s become [`Instruction`]s with typed fields and flags, grouped into
//! build [`Stage`]s, as BuildKit's `frontend/dockerfile/instructions` package does for Dockerfile
//! syntax 1.x.
//!
//! Values that the builder expands (see [`crate::expand`]) are kept *as written* here, quotes and
//! `$VARS` included; [`Instruction::expand`] turns them into their final form once the solver knows
//! the variables in scope. Everything that can be checked without variables is checked here.

use std::time::Duration;

use crate::error::{ParseError, ParseErrorKind};
use crate::flags::{parse_flags, sub_span, FlagSpec, ParsedFlags, WrittenFlag};
use crate::mount::{is_literal, parse_octal_mode, Device, Mount, NetworkMode, SecurityMode};
use crate::node::{Directives, Heredoc, Node, RawDockerfile, Warning};
use crate::span::{Span, Spanned};

/// A parsed Dockerfile: parser directives, the ARGs before the first FROM, and the stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    pub directives: Directives,
    /// `ARG`s before the first `FROM` (usable in `FROM` lines, and by stages that re-declare them).
    pub meta_args: Vec<Spanned<ArgInstruction>>,
    pub stages: Vec<Stage>,
    /// The raw parser's warnings, then build-check warnings (`RuleName: message`), honouring
    /// `# check=skip=…`.
    pub warnings: Vec<Warning>,
}

impl Dockerfile {
    /// A stage by name (case-insensitive, as stage names are lower-cased) or by index.
    pub fn stage(&self, name_or_index: &str) -> Option<(usize, &Stage)> {
        let lower = name_or_index.to_ascii_lowercase();
        if let Some(found) = self
            .stages
            .iter()
            .enumerate()
            .find(|(_, s)| s.name.as_deref() == Some(lower.as_str()))
        {
            return Some(found);
        }
        let index: usize = name_or_index.parse().ok()?;
        self.stages.get(index).map(|s| (index, s))
    }
}

/// One build stage: a `FROM` and the instructions up to the next `FROM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The `AS` name, lower-cased.
    pub name: Option<String>,
    pub base: FromInstruction,
    /// Where the `FROM` instruction is.
    pub base_span: Span,
    pub instructions: Vec<Step>,
    /// From `FROM` to the end of the stage's last instruction.
    pub span: Span,
}

/// A typed instruction and where and how it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub instruction: Instruction,
    /// From the keyword to the end of the instruction (heredoc bodies included).
    pub span: Span,
    pub keyword_span: Span,
    /// The logical line as written (continuations joined), for build history.
    pub original: String,
}

impl Step {
    /// Types one raw node; `escape` is the Dockerfile's escape character.
    pub fn from_node(node: &Node, escape: char) -> Result<Step, ParseError> {
        Ok(Step {
            instruction: Instruction::from_node(node, escape)?,
            span: node.span,
            keyword_span: node.keyword_span,
            original: node.original.clone(),
        })
    }
}

/// Every Dockerfile instruction, with typed arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    From(FromInstruction),
    Run(RunInstruction),
    Cmd(CmdInstruction),
    Entrypoint(EntrypointInstruction),
    Shell(ShellInstruction),
    Label(LabelInstruction),
    Maintainer(MaintainerInstruction),
    Expose(ExposeInstruction),
    Env(EnvInstruction),
    Add(AddInstruction),
    Copy(CopyInstruction),
    Volume(VolumeInstruction),
    User(UserInstruction),
    Workdir(WorkdirInstruction),
    Arg(ArgInstruction),
    Onbuild(OnbuildInstruction),
    Stopsignal(StopsignalInstruction),
    Healthcheck(HealthcheckInstruction),
}

/// Every instruction keyword, upper-case.
pub const INSTRUCTION_NAMES: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// A command line: shell form (run through the stage's `SHELL`) or exec form (a JSON array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Shell(String),
    Exec(Vec<String>),
}

/// `FROM [--platform=<p>] <image> [AS <name>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromInstruction {
    /// Expanded with the meta ARGs only.
    pub image: Spanned<String>,
    /// `--platform`; expanded with the meta ARGs (and the automatic platform ARGs).
    pub platform: Option<Spanned<String>>,
    /// The stage name, lower-cased (the span is the name as written). Never expanded.
    pub alias: Option<Spanned<String>>,
}

/// `RUN [--mount=…]… [--network=…] [--security=…] [--device=…]… <command>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInstruction {
    /// Not expanded by the builder: the shell does it.
    pub command: Command,
    /// Here-documents opened on the command line, in order.
    pub heredocs: Vec<Heredoc>,
    pub mounts: Vec<Mount>,
    pub network: NetworkMode,
    pub security: SecurityMode,
    pub devices: Vec<Device>,
}

/// `CMD`: the default command. `CMD []` is an empty exec form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdInstruction {
    pub command: Command,
}

/// `ENTRYPOINT`. `ENTRYPOINT []` (empty exec form) clears the inherited entrypoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrypointInstruction {
    pub command: Command,
}

/// `SHELL ["executable", "parameters"…]` (JSON form only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellInstruction {
    pub shell: Vec<String>,
}

/// One `key=value` of `ENV` or `LABEL`, as written (quotes kept until expansion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Spanned<String>,
    pub value: Spanned<String>,
    /// Written in the legacy `KEY value` form (no `=`).
    pub legacy: bool,
}

/// `LABEL k=v…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelInstruction {
    pub labels: Vec<KeyValue>,
}

/// `MAINTAINER <name>` (deprecated in favour of a label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintainerInstruction {
    pub name: Spanned<String>,
}

/// `EXPOSE <port>[/<proto>]…`; each word may expand to several ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposeInstruction {
    pub ports: Vec<Spanned<String>>,
}

/// `ENV k=v…` or `ENV k v`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvInstruction {
    pub vars: Vec<KeyValue>,
}

/// A here-document used as a COPY/ADD source: a file whose content is inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeredocSource {
    /// The file name (the heredoc delimiter).
    pub name: String,
    /// The body; leading tabs already removed for `<<-`.
    pub content: String,
    /// The delimiter was unquoted: the builder expands variables in the body.
    pub expand: bool,
    /// The `<<NAME` word.
    pub span: Span,
}

/// The sources and destination of COPY/ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcesAndDest {
    /// Paths, globs, URLs or Git addresses.
    pub sources: Vec<Spanned<String>>,
    pub heredocs: Vec<HeredocSource>,
    pub dest: Spanned<String>,
}

/// `COPY [--from] [--chown] [--chmod] [--link] [--parents] [--exclude]… <src>… <dest>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyInstruction {
    pub files: SourcesAndDest,
    /// A stage name or index, image, or named context. Never expanded (variables are an error).
    pub from: Option<Spanned<String>>,
    /// `user[:group]`, names or ids.
    pub chown: Option<Spanned<String>>,
    /// Octal (`755`) or symbolic (`u=rwX,go=rX`); see [`parse_chmod`].
    pub chmod: Option<Spanned<String>>,
    pub link: bool,
    pub parents: bool,
    pub excludes: Vec<Spanned<String>>,
}

/// `ADD [--chown] [--chmod] [--link] [--keep-git-dir] [--checksum] [--unpack] [--exclude]… <src>… <dest>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddInstruction {
    pub files: SourcesAndDest,
    pub chown: Option<Spanned<String>>,
    pub chmod: Option<Spanned<String>>,
    pub link: bool,
    pub keep_git_dir: bool,
    /// `sha256:<hex>` for HTTP sources, a commit (prefix) for Git.
    pub checksum: Option<Spanned<String>>,
    /// `None`: the default (local archives unpacked, remote ones not).
    pub unpack: Option<bool>,
    pub excludes: Vec<Spanned<String>>,
}

/// `VOLUME <path>…` or `VOLUME ["<path>"…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInstruction {
    pub paths: Vec<Spanned<String>>,
}

/// `USER <user>[:<group>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInstruction {
    pub user: Spanned<String>,
}

/// `WORKDIR <path>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkdirInstruction {
    pub path: Spanned<String>,
}

/// One `name[=default]` of an `ARG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub name: Spanned<String>,
    /// As written (quotes kept until expansion).
    pub default: Option<Spanned<String>>,
}

/// `ARG name[=default]…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgInstruction {
    pub args: Vec<ArgDecl>,
}

/// `ONBUILD <instruction>`: a trigger stored in the image, run by builds that use it as a base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnbuildInstruction {
    /// The trigger, typed (so mistakes show now, not in the downstream build).
    pub trigger: Box<Step>,
    /// The trigger's text as stored in the image config (heredoc bodies appended).
    pub expression: String,
}

/// `STOPSIGNAL <signal>`: a name (`SIGTERM`, `TERM`) or a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopsignalInstruction {
    pub signal: Spanned<String>,
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [options] CMD <command>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthcheckInstruction {
    /// Disable any health check inherited from the base image.
    None,
    Cmd(HealthCheck),
}

/// A health check command and its timing. `None` means the flag was not given; zero durations and
/// zero retries mean "the default", as in Docker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub command: Command,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u32>,
}

const FROM_FLAGS: &[FlagSpec] = &[FlagSpec::string("platform")];
const RUN_FLAGS: &[FlagSpec] = &[
    FlagSpec::strings("mount"),
    FlagSpec::string("network"),
    FlagSpec::string("security"),
    FlagSpec::strings("device"),
];
const COPY_FLAGS: &[FlagSpec] = &[
    FlagSpec::string("from"),
    FlagSpec::string("chown"),
    FlagSpec::string("chmod"),
    FlagSpec::bool("link"),
    FlagSpec::bool("parents"),
    FlagSpec::strings("exclude"),
];
const ADD_FLAGS: &[FlagSpec] = &[
    FlagSpec::string("chown"),
    FlagSpec::string("chmod"),
    FlagSpec::bool("link"),
    FlagSpec::bool("keep-git-dir"),
    FlagSpec::string("checksum"),
    FlagSpec::bool("unpack"),
    FlagSpec::strings("exclude"),
];
const HEALTHCHECK_FLAGS: &[FlagSpec] = &[
    FlagSpec::string("interval"),
    FlagSpec::string("timeout"),
    FlagSpec::string("start-period"),
    FlagSpec::string("start-interval"),
    FlagSpec::string("retries"),
];

impl Instruction {
    /// The keyword, upper-case.
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::From(_) => "FROM",
            Instruction::Run(_) => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Shell(_) => "SHELL",
            Instruction::Label(_) => "LABEL",
            Instruction::Maintainer(_) => "MAINTAINER",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Env(_) => "ENV",
            Instruction::Add(_) => "ADD",
            Instruction::Copy(_) => "COPY",
            Instruction::Volume(_) => "VOLUME",
            Instruction::User(_) => "USER",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::Arg(_) => "ARG",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::Stopsignal(_) => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
        }
    }

    /// Types one raw node; `escape` is the Dockerfile's escape character.
    pub fn from_node(node: &Node, escape: char) -> Result<Instruction, ParseError> {
        Ok(match node.keyword.as_str() {
            "from" => Instruction::From(type_from(node)?),
            "run" => Instruction::Run(type_run(node, escape)?),
            "cmd" => Instruction::Cmd(CmdInstruction {
                command: type_command(node, "CMD")?,
            }),
            "entrypoint" => Instruction::Entrypoint(EntrypointInstruction {
                command: type_command(node, "ENTRYPOINT")?,
            }),
            "shell" => Instruction::Shell(type_shell(node)?),
            "label" => Instruction::Label(LabelInstruction {
                labels: type_key_values(node, "LABEL")?,
            }),
            "maintainer" => Instruction::Maintainer(MaintainerInstruction {
                name: exactly_one(node, "MAINTAINER")?,
            }),
            "expose" => Instruction::Expose(type_expose(node)?),
            "env" => Instruction::Env(EnvInstruction {
                vars: type_key_values(node, "ENV")?,
            }),
            "add" => Instruction::Add(type_add(node, escape)?),
            "copy" => Instruction::Copy(type_copy(node, escape)?),
            "volume" => Instruction::Volume(type_volume(node)?),
            "user" => Instruction::User(UserInstruction {
                user: exactly_one(node, "USER")?,
            }),
            "workdir" => Instruction::Workdir(WorkdirInstruction {
                path: exactly_one(node, "WORKDIR")?,
            }),
            "arg" => Instruction::Arg(type_arg(node)?),
            "onbuild" => Instruction::Onbuild(type_onbuild(node, escape)?),
            "stopsignal" => Instruction::Stopsignal(type_stopsignal(node, escape)?),
            "healthcheck" => Instruction::Healthcheck(type_healthcheck(node)?),
            _ => return Err(unknown_instruction(node)),
        })
    }
}

/// Parses a Dockerfile: raw parse, then typing.
pub fn parse(src: &str) -> Result<Dockerfile, ParseError> {
    from_raw(&crate::raw::parse(src)?)
}

/// Types a raw Dockerfile and groups its instructions into stages.
pub fn from_raw(raw: &RawDockerfile) -> Result<Dockerfile, ParseError> {
    let escape = raw.directives.escape;
    let mut checks = BuildChecks::new(raw.directives.check.as_ref().map(|c| c.value.as_str()));
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &raw.nodes {
        let step = Step::from_node(node, escape)?;
        checks.instruction(node, &step.instruction);
        match step.instruction {
            Instruction::From(base) => {
                stages.push(Stage {
                    name: base.alias.as_ref().map(|a| a.value.clone()),
                    base,
                    base_span: step.span,
                    instructions: Vec::new(),
                    span: step.span,
                });
            }
            Instruction::Arg(arg) if stages.is_empty() => {
                meta_args.push(Spanned::new(arg, step.span))
            }
            _ => {
                let Some(stage) = stages.last_mut() else {
                    return Err(ParseError::new(
                        ParseErrorKind::MissingFrom(format!(
                            "{} must come after a FROM (only ARG may come before the first FROM)",
                            step.instruction.keyword()
                        )),
                        step.keyword_span,
                    ));
                };
                stage.span = stage.span.to(step.span);
                stage.instructions.push(step);
            }
        }
    }
    if stages.is_empty() {
        let span = raw
            .nodes
            .first()
            .map_or(Span::default(), |n| n.keyword_span);
        return Err(ParseError::new(
            ParseErrorKind::MissingFrom(
                "the Dockerfile has no stage to build: add `FROM <image>`".into(),
            ),
            span,
        ));
    }
    for stage in &stages {
        checks.stage(stage);
    }
    let mut warnings = raw.warnings.clone();
    warnings.extend(checks.warnings);
    Ok(Dockerfile {
        directives: raw.directives.clone(),
        meta_args,
        stages,
        warnings,
    })
}

// ---- per-instruction typing ----

fn error(kind: ParseErrorKind, span: Span) -> ParseError {
    ParseError::new(kind, span)
}

fn invalid(instruction: &str, reason: impl Into<String>, span: Span) -> ParseError {
    error(
        ParseErrorKind::InvalidArguments {
            instruction: instruction.into(),
            reason: reason.into(),
        },
        span,
    )
}

fn missing(instruction: &str, what: impl Into<String>, span: Span) -> ParseError {
    error(
        ParseErrorKind::MissingArguments {
            instruction: instruction.into(),
            what: what.into(),
        },
        span,
    )
}

/// The span of all arguments, or of the keyword when there are none.
fn args_span(node: &Node) -> Span {
    match (node.args.first(), node.args.last()) {
        (Some(first), Some(last)) => first.span.to(last.span),
        _ => node.keyword_span,
    }
}

fn no_flags(node: &Node, instruction: &str) -> Result<(), ParseError> {
    parse_flags(instruction, &[], &node.flags).map(|_| ())
}

fn exactly_one(node: &Node, instruction: &str) -> Result<Spanned<String>, ParseError> {
    no_flags(node, instruction)?;
    match node.args.as_slice() {
        [one] if !one.value.trim().is_empty() => Ok(one.clone()),
        [] | [_] => Err(missing(
            instruction,
            "exactly one argument",
            node.keyword_span,
        )),
        [_, second, ..] => Err(missing(
            instruction,
            "exactly one argument",
            second.span.to(args_span(node)),
        )),
    }
}

fn unknown_instruction(node: &Node) -> ParseError {
    let name = node.keyword.to_ascii_uppercase();
    let suggestion = did_you_mean(&name, &INSTRUCTION_NAMES).map(str::to_string);
    error(
        ParseErrorKind::UnknownInstruction { name, suggestion },
        node.keyword_span,
    )
}

/// The candidate closest to `word` by edit distance (adjacent swaps count once), if close enough
/// to be a likely typo.
pub(crate) fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = if word.chars().count() <= 3 { 1 } else { 2 };
    candidates
        .iter()
        .map(|c| {
            (
                edit_distance(&word.to_ascii_lowercase(), &c.to_ascii_lowercase()),
                *c,
            )
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal-string-alignment distance (Levenshtein plus adjacent transpositions).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    let at = |i: usize, j: usize| i * width + j;
    for i in 0..=a.len() {
        d[at(i, 0)] = i;
    }
    for j in 0..=b.len() {
        d[at(0, j)] = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[at(i - 1, j)] + 1)
                .min(d[at(i, j - 1)] + 1)
                .min(d[at(i - 1, j - 1)] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[at(i - 2, j - 2)] + 1);
            }
            d[at(i, j)] = best;
        }
    }
    d[at(a.len(), b.len())]
}

const FROM_USAGE: &str = "FROM [--platform=<platform>] <image> [AS <name>]";

fn type_from(node: &Node) -> Result<FromInstruction, ParseError> {
    let flags = parse_flags("FROM", FROM_FLAGS, &node.flags)?;
    let (image, alias) = match node.args.as_slice() {
        [] => {
            return Err(missing(
                "FROM",
                format!("a base image: {FROM_USAGE}"),
                node.keyword_span,
            ))
        }
        [image] => (image.clone(), None),
        [image, as_word, name] if as_word.value.eq_ignore_ascii_case("as") => {
            let lower = name.value.to_ascii_lowercase();
            if !is_valid_stage_name(&lower) {
                return Err(invalid(
                    "FROM",
                    format!(
                        "invalid stage name {:?}: it must start with a letter and contain only letters, digits, '-', '_' and '.'",
                        name.value
                    ),
                    name.span,
                ));
            }
            (image.clone(), Some(Spanned::new(lower, name.span)))
        }
        [_, other, _] => {
            return Err(invalid(
                "FROM",
                format!(
                    "expected AS before the stage name, found {:?}: {FROM_USAGE}",
                    other.value
                ),
                other.span,
            ));
        }
        _ => {
            return Err(missing(
                "FROM",
                format!("either one or three arguments: {FROM_USAGE}"),
                args_span(node),
            ))
        }
    };
    Ok(FromInstruction {
        image,
        platform: non_empty(flags.string("platform")),
        alias,
    })
}

/// BuildKit's `^[a-z][a-z0-9-_.]*$`.
fn is_valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// The command of RUN/CMD/ENTRYPOINT/HEALTHCHECK CMD from its argument nodes.
fn command_from(json: bool, args: &[Spanned<String>]) -> Command {
    if json || args.is_empty() {
        Command::Exec(args.iter().map(|a| a.value.clone()).collect())
    } else {
        Command::Shell(
            args.iter()
                .map(|a| a.value.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        )
    }
}

fn type_command(node: &Node, instruction: &str) -> Result<Command, ParseError> {
    no_flags(node, instruction)?;
    Ok(command_from(node.json, &node.args))
}

fn type_run(node: &Node, escape: char) -> Result<RunInstruction, ParseError> {
    let flags = parse_flags("RUN", RUN_FLAGS, &node.flags)?;
    let mounts = flags
        .strings("mount")
        .iter()
        .map(|m| Mount::parse(m, escape))
        .collect::<Result<Vec<_>, _>>()?;
    let network = match flags.string("network") {
        None => NetworkMode::Default,
        Some(v) => NetworkMode::parse(&v.value).ok_or_else(|| {
            let reason = format!("must be default, none or host, not {:?}", v.value);
            error(
                ParseErrorKind::InvalidFlag {
                    flag: "network".into(),
                    reason,
                },
                v.span,
            )
        })?,
    };
    let security = match flags.string("security") {
        None => SecurityMode::Sandbox,
        Some(v) => SecurityMode::parse(&v.value).ok_or_else(|| {
            let reason = format!("must be sandbox or insecure, not {:?}", v.value);
            error(
                ParseErrorKind::InvalidFlag {
                    flag: "security".into(),
                    reason,
                },
                v.span,
            )
        })?,
    };
    let devices = flags
        .strings("device")
        .iter()
        .map(Device::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let command = command_from(node.json, &node.args);
    let empty = match &command {
        Command::Shell(s) => s.trim().is_empty(),
        Command::Exec(v) => v.is_empty(),
    };
    if empty && node.heredocs.is_empty() {
        return Err(missing(
            "RUN",
            "a command: RUN <command>, RUN [\"executable\", \"arg\"…] or RUN <<EOF",
            args_span(node),
        ));
    }
    Ok(RunInstruction {
        command,
        heredocs: node.heredocs.clone(),
        mounts,
        network,
        security,
        devices,
    })
}

fn type_shell(node: &Node) -> Result<ShellInstruction, ParseError> {
    no_flags(node, "SHELL")?;
    if node.args.is_empty() {
        return Err(missing(
            "SHELL",
            "at least one argument: SHELL [\"executable\", \"parameters\"]",
            args_span(node),
        ));
    }
    if !node.json {
        let mut reason =
            "requires the arguments in JSON form: SHELL [\"executable\", \"parameters\"]"
                .to_string();
        if looks_like_unescaped_windows_path(&node.original) {
            reason.push_str(
                "; it looks like a Windows path with single back-slashes: JSON needs them doubled, as in [\"c:\\\\path\\\\to\\\\file.exe\", \"/parameter\"]",
            );
        }
        return Err(invalid("SHELL", reason, args_span(node)));
    }
    Ok(ShellInstruction {
        shell: node.args.iter().map(|a| a.value.clone()).collect(),
    })
}

/// `["c:\windows\…"` : a bracketed list holding a drive path with single back-slashes.
fn looks_like_unescaped_windows_path(text: &str) -> bool {
    let b = text.as_bytes();
    let has_drive_path = b
        .windows(4)
        .any(|w| w[0] == b'"' && w[1].is_ascii_alphabetic() && w[2] == b':' && w[3] == b'\\');
    has_drive_path && !text.contains("\\\\") && text.contains('[') && text.contains(']')
}

fn type_key_values(node: &Node, instruction: &str) -> Result<Vec<KeyValue>, ParseError> {
    no_flags(node, instruction)?;
    if node.args.is_empty() {
        return Err(missing(
            instruction,
            format!("at least one argument: {instruction} <key>=<value> …"),
            node.keyword_span,
        ));
    }
    if !node.args.chunks_exact(3).remainder().is_empty() {
        return Err(invalid(
            instruction,
            "malformed arguments: expected <key>=<value> pairs",
            args_span(node),
        ));
    }
    let mut pairs = Vec::with_capacity(node.args.len() / 3);
    for triple in node.args.chunks_exact(3) {
        let [key, value, delim] = triple else {
            continue;
        };
        if key.value.is_empty() {
            return Err(invalid(
                instruction,
                "names can not be blank",
                key.span.to(value.span),
            ));
        }
        let legacy = delim.value.is_empty();
        if legacy && value.value.is_empty() {
            return Err(missing(
                instruction,
                format!("a value for {0}: {instruction} {0}=<value>", key.value),
                key.span,
            ));
        }
        pairs.push(KeyValue {
            key: key.clone(),
            value: value.clone(),
            legacy,
        });
    }
    Ok(pairs)
}

fn type_expose(node: &Node) -> Result<ExposeInstruction, ParseError> {
    no_flags(node, "EXPOSE")?;
    if node.args.is_empty() {
        return Err(missing(
            "EXPOSE",
            "at least one port: EXPOSE <port>[/<protocol>] …",
            node.keyword_span,
        ));
    }
    Ok(ExposeInstruction {
        ports: node.args.clone(),
    })
}

fn type_volume(node: &Node) -> Result<VolumeInstruction, ParseError> {
    no_flags(node, "VOLUME")?;
    if node.args.is_empty() {
        return Err(missing(
            "VOLUME",
            "at least one path: VOLUME <path> … or VOLUME [\"<path>\", …]",
            args_span(node),
        ));
    }
    let mut paths = Vec::with_capacity(node.args.len());
    for arg in &node.args {
        let trimmed = arg.value.trim();
        if trimmed.is_empty() {
            return Err(invalid(
                "VOLUME",
                "a volume path can not be empty",
                arg.span,
            ));
        }
        paths.push(Spanned::new(trimmed.to_string(), arg.span));
    }
    Ok(VolumeInstruction { paths })
}

fn type_arg(node: &Node) -> Result<ArgInstruction, ParseError> {
    no_flags(node, "ARG")?;
    if node.args.is_empty() {
        return Err(missing(
            "ARG",
            "at least one argument: ARG <name>[=<default value>] …",
            node.keyword_span,
        ));
    }
    let mut args = Vec::with_capacity(node.args.len());
    for word in &node.args {
        let (name, default) = match word.value.split_once('=') {
            Some((name, default)) => {
                let start = name.len() + 1;
                let span = sub_span(word, start, start + default.len());
                (name, Some(Spanned::new(default.to_string(), span)))
            }
            None => (word.value.as_str(), None),
        };
        if name.is_empty() {
            return Err(invalid("ARG", "names can not be blank", word.span));
        }
        args.push(ArgDecl {
            name: Spanned::new(name.to_string(), sub_span(word, 0, name.len())),
            default,
        });
    }
    Ok(ArgInstruction { args })
}

fn type_stopsignal(node: &Node, escape: char) -> Result<StopsignalInstruction, ParseError> {
    let signal = exactly_one(node, "STOPSIGNAL")?;
    if is_literal(&signal.value, escape) {
        check_signal(&signal.value).map_err(|reason| invalid("STOPSIGNAL", reason, signal.span))?;
    }
    Ok(StopsignalInstruction { signal })
}

/// Checks a stop signal the way Docker reads it: a non-zero number up to 255, or a Linux signal
/// name with or without `SIG` (any case).
pub fn check_signal(signal: &str) -> Result<(), String> {
    if !signal.is_empty() && signal.bytes().all(|b| b.is_ascii_digit()) {
        return match signal.parse::<u8>() {
            Ok(n) if n > 0 => Ok(()),
            _ => Err(format!(
                "invalid signal {signal:?}: a signal number must be between 1 and 255"
            )),
        };
    }
    let upper = signal.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
        "RTMIN", "RTMAX",
    ];
    let realtime = |prefix: &str, max: u8| {
        name.strip_prefix(prefix)
            .and_then(|n| n.parse::<u8>().ok())
            .is_some_and(|n| (1..=max).contains(&n))
    };
    if NAMES.contains(&name) || realtime("RTMIN+", 15) || realtime("RTMAX-", 14) {
        Ok(())
    } else {
        Err(format!(
            "invalid signal {signal:?}: use a name such as SIGTERM or SIGKILL, or a number"
        ))
    }
}

fn type_onbuild(node: &Node, escape: char) -> Result<OnbuildInstruction, ParseError> {
    no_flags(node, "ONBUILD")?;
    let Some(inner) = node.inner.as_deref() else {
        return Err(missing(
            "ONBUILD",
            "an instruction to run in downstream builds: ONBUILD <INSTRUCTION>",
            node.keyword_span,
        ));
    };
    match inner.keyword.as_str() {
        "onbuild" => return Err(error(ParseErrorKind::ChainedOnbuild, inner.keyword_span)),
        "from" | "maintainer" => {
            return Err(error(
                ParseErrorKind::ForbiddenOnbuild(inner.keyword.to_ascii_uppercase()),
                inner.keyword_span,
            ));
        }
        _ => {}
    }
    // The raw parser attaches the bodies of heredocs opened by the trigger to the ONBUILD node.
    let trigger = if inner.heredocs.is_empty() && !node.heredocs.is_empty() {
        let mut with_bodies = inner.clone();
        with_bodies.heredocs = node.heredocs.clone();
        Step::from_node(&with_bodies, escape)?
    } else {
        Step::from_node(inner, escape)?
    };
    let mut expression = strip_keyword(&node.original, "onbuild").to_string();
    let heredocs = if inner.heredocs.is_empty() {
        &node.heredocs
    } else {
        &inner.heredocs
    };
    for heredoc in heredocs {
        expression.push('\n');
        expression.push_str(&heredoc.content);
        expression.push_str(&heredoc.name);
    }
    Ok(OnbuildInstruction {
        trigger: Box::new(trigger),
        expression,
    })
}

/// `text` without leading whitespace, `keyword` (any case) and the whitespace after it.
fn strip_keyword<'a>(text: &'a str, keyword: &str) -> &'a str {
    let text = text.trim_start();
    match text.get(..keyword.len()) {
        Some(head) if head.eq_ignore_ascii_case(keyword) => {
            text.get(keyword.len()..).unwrap_or("").trim_start()
        }
        _ => text,
    }
}

fn type_healthcheck(node: &Node) -> Result<HealthcheckInstruction, ParseError> {
    let Some((kind, rest)) = node.args.split_first() else {
        return Err(missing(
            "HEALTHCHECK",
            "CMD <command> or NONE",
            node.keyword_span,
        ));
    };
    match kind.value.to_ascii_uppercase().as_str() {
        "NONE" => {
            if let Some(flag) = node.flags.first() {
                let name = WrittenFlag::split(flag)?.name.value;
                let reason = "does not apply to HEALTHCHECK NONE (options go with HEALTHCHECK CMD)"
                    .to_string();
                return Err(error(
                    ParseErrorKind::InvalidFlag { flag: name, reason },
                    flag.span,
                ));
            }
            if let (Some(first), Some(last)) = (rest.first(), rest.last()) {
                return Err(invalid(
                    "HEALTHCHECK",
                    "NONE takes no arguments",
                    first.span.to(last.span),
                ));
            }
            Ok(HealthcheckInstruction::None)
        }
        "CMD" => {
            let flags = parse_flags("HEALTHCHECK", HEALTHCHECK_FLAGS, &node.flags)?;
            let command = command_from(node.json, rest);
            let empty = match &command {
                Command::Shell(s) => s.trim().is_empty(),
                Command::Exec(v) => v.is_empty(),
            };
            if empty {
                return Err(missing("HEALTHCHECK CMD", "a command to run", kind.span));
            }
            Ok(HealthcheckInstruction::Cmd(HealthCheck {
                command,
                interval: duration_flag(&flags, "interval")?,
                timeout: duration_flag(&flags, "timeout")?,
                start_period: duration_flag(&flags, "start-period")?,
                start_interval: duration_flag(&flags, "start-interval")?,
                retries: retries_flag(&flags)?,
            }))
        }
        _ => Err(invalid(
            "HEALTHCHECK",
            format!(
                "unknown type {:?}: use HEALTHCHECK [options] CMD <command> or HEALTHCHECK NONE",
                kind.value
            ),
            kind.span,
        )),
    }
}

/// A health-check duration: absent or empty → `None`; zero → `Some(0)` (the default); otherwise at least 1ms.
fn duration_flag(flags: &ParsedFlags, name: &str) -> Result<Option<Duration>, ParseError> {
    let Some(value) = flags.string(name) else {
        return Ok(None);
    };
    if value.value.is_empty() {
        return Ok(None);
    }
    let flag_error = |reason: String| {
        error(
            ParseErrorKind::InvalidFlag {
                flag: name.into(),
                reason,
            },
            value.span,
        )
    };
    let nanos = parse_go_duration(&value.value).map_err(|why| {
        flag_error(format!(
            "is not a valid duration: {:?} ({why}; write e.g. 30s, 1m30s or 1.5h)",
            value.value
        ))
    })?;
    if nanos == 0 {
        return Ok(Some(Duration::ZERO));
    }
    if nanos < 1_000_000 {
        return Err(flag_error(format!(
            "must be at least 1ms (or 0 for the default), got {:?}",
            value.value
        )));
    }
    Ok(Some(Duration::from_nanos(
        u64::try_from(nanos).unwrap_or(u64::MAX),
    )))
}

fn retries_flag(flags: &ParsedFlags) -> Result<Option<u32>, ParseError> {
    let Some(value) = flags.string("retries") else {
        return Ok(None);
    };
    if value.value.is_empty() {
        return Ok(None);
    }
    let flag_error = |reason: String| {
        error(
            ParseErrorKind::InvalidFlag {
                flag: "retries".into(),
                reason,
            },
            value.span,
        )
    };
    let n: i32 = value
        .value
        .parse()
        .map_err(|_| flag_error(format!("expects a whole number, not {:?}", value.value)))?;
    u32::try_from(n)
        .map(Some)
        .map_err(|_| flag_error(format!("cannot be negative ({n})")))
}

/// Go's `time.ParseDuration`, in nanoseconds: an optional sign, then one or more
/// `<decimal><unit>` with units ns, us (µs, μs), ms, s, m, h; a bare `0` is allowed.
pub fn parse_go_duration(s: &str) -> Result<i64, String> {
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, s.get(1..).unwrap_or("")),
        Some(b'+') => (false, s.get(1..).unwrap_or("")),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(tail) => {
                let n = tail.bytes().take_while(u8::is_ascii_digit).count();
                tail.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err("expected a number".into());
        }
        let unit_len = after
            .bytes()
            .take_while(|b| *b != b'.' && !b.is_ascii_digit())
            .count();
        let (unit, tail) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err("missing unit".into()),
            other => return Err(format!("unknown unit {other:?}")),
        };
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part
                .parse()
                .map_err(|_| "number too large".to_string())?
        };
        let mut part = whole.checked_mul(unit_nanos).ok_or("duration too large")?;
        if !frac_part.is_empty() {
            let digits = frac_part.get(..frac_part.len().min(18)).unwrap_or("");
            let fraction: f64 = format!("0.{digits}").parse().unwrap_or(0.0);
            part += (fraction * unit_nanos as f64) as u128;
        }
        total = total.checked_add(part).ok_or("duration too large")?;
        if total > i64::MAX as u128 {
            return Err("duration too large".into());
        }
        rest = tail;
    }
    let total = i64::try_from(total).map_err(|_| "duration too large".to_string())?;
    Ok(if negative { -total } else { total })
}

fn type_copy(node: &Node, escape: char) -> Result<CopyInstruction, ParseError> {
    let flags = parse_flags("COPY", COPY_FLAGS, &node.flags)?;
    let files = sources_and_dest(node, "COPY")?;
    let from = non_empty(flags.string("from"));
    if let Some(from) = from.as_ref().filter(|f| !is_literal(&f.value, escape)) {
        // BuildKit never expands --from: the stage graph is fixed before any variable is known.
        let reason =
            "does not support variables: declare the image with a global ARG, add a stage \
                      `FROM ${IMAGE} AS <name>` and use --from=<name>"
                .to_string();
        return Err(error(
            ParseErrorKind::InvalidFlag {
                flag: "from".into(),
                reason,
            },
            from.span,
        ));
    }
    let chmod = non_empty(flags.string("chmod"));
    check_chmod_if_literal(chmod.as_ref(), escape)?;
    Ok(CopyInstruction {
        files,
        from,
        chown: non_empty(flags.string("chown")),
        chmod,
        link: flags.bool("link"),
        parents: flags.bool("parents"),
        excludes: flags.strings("exclude").to_vec(),
    })
}

fn type_add(node: &Node, escape: char) -> Result<AddInstruction, ParseError> {
    let flags = parse_flags("ADD", ADD_FLAGS, &node.flags)?;
    let files = sources_and_dest(node, "ADD")?;
    let chmod = non_empty(flags.string("chmod"));
    check_chmod_if_literal(chmod.as_ref(), escape)?;
    let checksum = non_empty(flags.string("checksum"));
    if let Some(c) = checksum.as_ref().filter(|c| is_literal(&c.value, escape)) {
        check_checksum(&c.value).map_err(|reason| {
            error(
                ParseErrorKind::InvalidFlag {
                    flag: "checksum".into(),
                    reason,
                },
                c.span,
            )
        })?;
    }
    Ok(AddInstruction {
        files,
        chown: non_empty(flags.string("chown")),
        chmod,
        link: flags.bool("link"),
        keep_git_dir: flags.bool("keep-git-dir"),
        checksum,
        unpack: flags.bool_given("unpack").map(|b| b.value),
        excludes: flags.strings("exclude").to_vec(),
    })
}

/// An empty value (`--from=`) means the flag's default, as in BuildKit.
fn non_empty(value: Option<&Spanned<String>>) -> Option<Spanned<String>> {
    value.filter(|v| !v.value.is_empty()).cloned()
}

fn check_chmod_if_literal(chmod: Option<&Spanned<String>>, escape: char) -> Result<(), ParseError> {
    match chmod {
        Some(c) if is_literal(&c.value, escape) => {
            parse_chmod(&c.value).map(|_| ()).map_err(|reason| {
                error(
                    ParseErrorKind::InvalidFlag {
                        flag: "chmod".into(),
                        reason,
                    },
                    c.span,
                )
            })
        }
        _ => Ok(()),
    }
}

/// A `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// `755`, `0644`.
    Octal(u32),
    /// `u=rwX,go=rX`, `+x`, `g=u` (chmod(1) syntax), kept as written.
    Symbolic(String),
}

/// Parses a `--chmod` value: octal up to `7777`, or chmod(1) symbolic clauses
/// `[ugoa]*([-+=]([rwxXst]*|[ugo]))+` separated by commas.
pub fn parse_chmod(s: &str) -> Result<Chmod, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return parse_octal_mode(s).map(Chmod::Octal).ok_or_else(|| {
            format!("invalid mode {s:?}: octal modes use digits 0-7 and go up to 7777")
        });
    }
    let bad = || format!("invalid mode {s:?}: use octal (755) or symbolic notation (u=rwX,go=rX)");
    for clause in s.split(',') {
        let mut bytes = clause.bytes().peekable();
        while bytes.peek().is_some_and(|b| b"ugoa".contains(b)) {
            bytes.next();
        }
        if bytes.peek().is_none() {
            return Err(bad());
        }
        while let Some(op) = bytes.next() {
            if !b"+-=".contains(&op) {
                return Err(bad());
            }
            if bytes.peek().is_some_and(|b| b"ugo".contains(b)) {
                bytes.next();
                if bytes.peek().is_some_and(|b| !b"+-=".contains(b)) {
                    return Err(bad());
                }
            } else {
                while bytes.peek().is_some_and(|b| b"rwxXst".contains(b)) {
                    bytes.next();
                }
            }
        }
    }
    Ok(Chmod::Symbolic(s.to_string()))
}

/// `ADD --checksum`: `<algorithm>:<hex>` (sha256, sha384, sha512) for HTTP sources, or a hex
/// commit (prefix) for Git sources.
pub fn check_checksum(s: &str) -> Result<(), String> {
    let hex = |h: &str| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit());
    let ok = match s.split_once(':') {
        Some(("sha256", h)) => h.len() == 64 && hex(h),
        Some(("sha384", h)) => h.len() == 96 && hex(h),
        Some(("sha512", h)) => h.len() == 128 && hex(h),
        Some(_) => false,
        None => s.len() <= 64 && hex(s),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expects sha256:<64 hex digits> (HTTP) or a commit hash (Git), not {s:?}"
        ))
    }
}

/// `<<EOF`, `<<-EOF`, `3<<"EOF"`: a word that opens a here-document, as the raw parser detects them.
fn is_heredoc_word(word: &str) -> bool {
    matches!(crate::heredoc::parse_heredoc(word), Ok(Some(_)))
}

fn sources_and_dest(node: &Node, instruction: &str) -> Result<SourcesAndDest, ParseError> {
    let usage = format!("{instruction} <src>… <dest>");
    let Some((dest, sources)) = node.args.split_last() else {
        return Err(missing(
            instruction,
            format!("a source and a destination: {usage}"),
            node.keyword_span,
        ));
    };
    if sources.is_empty() {
        return Err(missing(
            instruction,
            format!("at least two arguments, but only one was provided, so the destination could not be determined: {usage}"),
            dest.span,
        ));
    }
    // Heredocs only exist in shell form; the raw parser found their bodies in the same order.
    let shell_form = !node.json;
    if shell_form && is_heredoc_word(&dest.value) {
        return Err(invalid(
            instruction,
            "a heredoc can not be the destination",
            dest.span,
        ));
    }
    let mut bodies = node.heredocs.iter();
    let mut paths = Vec::with_capacity(sources.len());
    let mut heredocs = Vec::new();
    for source in sources {
        if shell_form && is_heredoc_word(&source.value) {
            if let Some(body) = bodies.next() {
                heredocs.push(HeredocSource {
                    name: body.name.clone(),
                    content: body.body(),
                    expand: body.expand,
                    span: source.span,
                });
                continue;
            }
        }
        paths.push(source.clone());
    }
    Ok(SourcesAndDest {
        sources: paths,
        heredocs,
        dest: dest.clone(),
    })
}

// ---- build checks (BuildKit's linter rules that need no variables) ----

/// Collects build-check warnings, skipping the rules `# check=skip=…` names.
struct BuildChecks {
    skip_all: bool,
    skip: Vec<String>,
    warnings: Vec<Warning>,
    stage_names: Vec<String>,
}

impl BuildChecks {
    fn new(check_directive: Option<&str>) -> BuildChecks {
        let mut checks = BuildChecks {
            skip_all: false,
            skip: Vec::new(),
            warnings: Vec::new(),
            stage_names: Vec::new(),
        };
        for part in check_directive.unwrap_or("").split(';') {
            if let Some((key, value)) = part.split_once('=') {
                if key.trim().eq_ignore_ascii_case("skip") {
                    for rule in value.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                        checks.skip_all |= rule.eq_ignore_ascii_case("all");
                        checks.skip.push(rule.to_string());
                    }
                }
            }
        }
        checks
    }

    fn warn(&mut self, rule: &str, message: String, span: Span) {
        if !self.skip_all && !self.skip.iter().any(|s| s == rule) {
            self.warnings.push(Warning {
                message: format!("{rule}: {message}"),
                span,
            });
        }
    }

    fn instruction(&mut self, node: &Node, instruction: &Instruction) {
        match instruction {
            Instruction::Maintainer(_) => {
                self.warn(
                    "MaintainerDeprecated",
                    "MAINTAINER instruction is deprecated in favor of using label".into(),
                    node.keyword_span,
                );
            }
            Instruction::Cmd(CmdInstruction {
                command: Command::Shell(_),
            })
            | Instruction::Entrypoint(EntrypointInstruction {
                command: Command::Shell(_),
            }) => {
                let keyword = instruction.keyword();
                self.warn(
                    "JSONArgsRecommended",
                    format!(
                        "JSON arguments recommended for {keyword} to prevent unintended behavior related to OS signals"
                    ),
                    args_span(node),
                );
            }
            Instruction::From(from) => {
                let Some(alias) = &from.alias else { return };
                let written_name = node.args.get(2).map_or("", |a| a.value.as_str());
                if written_name != alias.value {
                    self.warn(
                        "StageNameCasing",
                        format!("Stage name '{written_name}' should be lowercase"),
                        alias.span,
                    );
                }
                let written_keyword = node.original.trim_start().get(..4).unwrap_or("");
                if let Some(as_word) = node.args.get(1) {
                    let upper = |s: &str| s.chars().all(|c| !c.is_ascii_lowercase());
                    let lower = |s: &str| s.chars().all(|c| !c.is_ascii_uppercase());
                    let mismatch = (upper(written_keyword) && !upper(&as_word.value))
                        || (lower(written_keyword) && !lower(&as_word.value));
                    if mismatch {
                        self.warn(
                            "FromAsCasing",
                            "'as' and 'FROM' keywords' casing do not match".into(),
                            as_word.span,
                        );
                    }
                }
                if self.stage_names.contains(&alias.value) {
                    self.warn(
                        "DuplicateStageName",
                        format!(
                            "Duplicate stage name '{}', stage names should be unique",
                            alias.value
                        ),
                        alias.span,
                    );
                } else {
                    self.stage_names.push(alias.value.clone());
                }
            }
            _ => {}
        }
    }

    fn stage(&mut self, stage: &Stage) {
        for keyword in ["CMD", "ENTRYPOINT", "HEALTHCHECK"] {
            let spans: Vec<Span> = stage
                .instructions
                .iter()
                .filter(|s| s.instruction.keyword() == keyword)
                .map(|s| s.keyword_span)
                .collect();
            if let Some((_, earlier)) = spans.split_last() {
                for span in earlier {
                    self.warn(
                        "MultipleInstructionsDisallowed",
                        format!("Multiple {keyword} instructions should not be used in the same stage because only the last one will be used"),
                        *span,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Builds a raw node as if written `KEYWORD flags… args…` at `offset`, one space apart.
    pub(crate) struct NodeSpec<'a> {
        pub keyword: &'a str,
        pub flags: &'a [&'a str],
        pub args: &'a [&'a str],
        pub json: bool,
        pub heredocs: Vec<Heredoc>,
        pub inner: Option<Node>,
    }

    pub(crate) fn node_at(spec: NodeSpec<'_>, offset: usize) -> Node {
        let mut at = offset;
        let mut word = |s: &str| {
            let w = Spanned::new(s.to_string(), Span::new(at, at + s.len()));
            at += s.len() + 1;
            w
        };
        let keyword = word(spec.keyword);
        let flags: Vec<_> = spec.flags.iter().map(|f| word(f)).collect();
        let args: Vec<_> = spec.args.iter().map(|a| word(a)).collect();
        let mut original = spec.keyword.to_string();
        for w in spec.flags.iter().chain(spec.args) {
            original.push(' ');
            original.push_str(w);
        }
        let end = at.saturating_sub(1).max(keyword.span.end);
        Node {
            keyword: spec.keyword.to_ascii_lowercase(),
            keyword_span: keyword.span,
            flags,
            args,
            json: spec.json,
            inner: spec.inner.map(Box::new),
            heredocs: spec.heredocs,
            original,
            span: Span::new(offset, end),
            start_line: 1,
            end_line: 1,
        }
    }

    fn node(keyword: &str, flags: &[&str], args: &[&str]) -> Node {
        node_at(
            NodeSpec {
                keyword,
                flags,
                args,
                json: false,
                heredocs: vec![],
                inner: None,
            },
            0,
        )
    }

    fn json_node(keyword: &str, flags: &[&str], args: &[&str]) -> Node {
        node_at(
            NodeSpec {
                keyword,
                flags,
                args,
                json: true,
                heredocs: vec![],
                inner: None,
            },
            0,
        )
    }

    fn typed(n: &Node) -> Result<Instruction, ParseError> {
        Instruction::from_node(n, '\\')
    }

    fn heredoc(name: &str, content: &str, chomp: bool, expand: bool) -> Heredoc {
        Heredoc {
            name: name.into(),
            file_descriptor: 0,
            expand,
            chomp,
            content: content.into(),
            span: Span::new(500, 510),
        }
    }

    #[test]
    fn argument_errors() {
        let cases: Vec<(Node, &str)> = vec![
            (node("from", &[], &[]), "FROM requires a base image"),
            (node("from", &[], &["a", "b"]), "FROM requires either one or three arguments"),
            (node("from", &[], &["a", "b", "c", "d"]), "FROM requires either one or three arguments"),
            (node("from", &[], &["a", "IS", "c"]), "expected AS before the stage name, found \"IS\""),
            (node("from", &[], &["a", "as", "1st"]), "invalid stage name \"1st\""),
            (node("from", &[], &["a", "as", "my/stage"]), "invalid stage name"),
            (node("from", &["--platfrom=x"], &["a"]), "unknown flag: --platfrom (valid flags for FROM: --platform)"),
            (node("from", &["--platform"], &["a"]), "flag --platform needs a value"),
            (node("run", &[], &[]), "RUN requires a command"),
            (json_node("run", &[], &[]), "RUN requires a command"),
            (node("run", &["--network=bridge"], &["x"]), "flag --network must be default, none or host, not \"bridge\""),
            (node("run", &["--security=privileged"], &["x"]), "flag --security must be sandbox or insecure"),
            (node("run", &["--mount=type=cache,target=/c,foo=1"], &["x"]), "invalid --mount: unknown option `foo`"),
            (node("run", &["--mount"], &["x"]), "flag --mount needs a value"),
            (node("run", &["--device=,required"], &["x"]), "invalid --device"),
            (node("cmd", &["--port=80"], &["x"]), "CMD does not accept flags, but --port was given"),
            (node("shell", &[], &["/bin/sh -c"]), "SHELL: requires the arguments in JSON form"),
            (json_node("shell", &[], &[]), "SHELL requires at least one argument"),
            (node("env", &[], &[]), "ENV requires at least one argument"),
            (node("env", &[], &["", "x", "="]), "ENV: names can not be blank"),
            (node("env", &[], &["A", "", ""]), "ENV requires a value for A: ENV A=<value>"),
            (node("env", &[], &["A", "b"]), "ENV: malformed arguments"),
            (node("label", &[], &[]), "LABEL requires at least one argument"),
            (node("label", &["--x=1"], &["a", "b", "="]), "LABEL does not accept flags"),
            (node("maintainer", &[], &[]), "MAINTAINER requires exactly one argument"),
            (node("user", &[], &[]), "USER requires exactly one argument"),
            (node("user", &[], &["a", "b"]), "USER requires exactly one argument"),
            (node("workdir", &[], &[" "]), "WORKDIR requires exactly one argument"),
            (node("stopsignal", &[], &["SIGFOO"]), "STOPSIGNAL: invalid signal \"SIGFOO\""),
            (node("stopsignal", &[], &["0"]), "STOPSIGNAL: invalid signal \"0\""),
            (node("stopsignal", &[], &["256"]), "between 1 and 255"),
            (node("expose", &[], &[]), "EXPOSE requires at least one port"),
            (node("volume", &[], &[]), "VOLUME requires at least one path"),
            (json_node("volume", &[], &["/a", " "]), "VOLUME: a volume path can not be empty"),
            (node("arg", &[], &[]), "ARG requires at least one argument"),
            (node("arg", &[], &["=x"]), "ARG: names can not be blank"),
            (node("arg", &["--x"], &["a"]), "ARG does not accept flags"),
            (node("copy", &[], &[]), "COPY requires a source and a destination"),
            (node("copy", &[], &["/dest"]), "COPY requires at least two arguments, but only one was provided"),
            (node("copy", &[], &["a", "<<EOF"]), "COPY: a heredoc can not be the destination"),
            (node("copy", &["--keep-git-dir"], &["a", "b"]), "unknown flag: --keep-git-dir (valid flags for COPY: --from, --chown, --chmod, --link, --parents, --exclude)"),
            (node("copy", &["--chmod=999"], &["a", "b"]), "flag --chmod invalid mode \"999\""),
            (node("copy", &["--chmod=u+q"], &["a", "b"]), "flag --chmod invalid mode \"u+q\""),
            (node("copy", &["--link=nope"], &["a", "b"]), "flag --link expects true or false"),
            (node("copy", &["--from=a", "--from=b"], &["a", "b"]), "flag --from may only be given once"),
            (node("add", &["--from=x"], &["a", "b"]), "unknown flag: --from"),
            (node("copy", &["--from=$STAGE"], &["a", "b"]), "flag --from does not support variables"),
            (node("copy", &["--from=base:${TAG}"], &["a", "b"]), "flag --from does not support variables"),
            (node("add", &["--checksum=md5:abc"], &["a", "b"]), "flag --checksum expects sha256"),
            (node("add", &["--unpack=sure"], &["a", "b"]), "flag --unpack expects true or false"),
            (node("healthcheck", &[], &[]), "HEALTHCHECK requires CMD <command> or NONE"),
            (node("healthcheck", &[], &["NONE", "x"]), "HEALTHCHECK: NONE takes no arguments"),
            (node("healthcheck", &["--interval=5s"], &["NONE"]), "flag --interval does not apply to HEALTHCHECK NONE"),
            (node("healthcheck", &[], &["RUN", "x"]), "HEALTHCHECK: unknown type \"RUN\""),
            (node("healthcheck", &[], &["CMD"]), "HEALTHCHECK CMD requires a command"),
            (node("healthcheck", &["--interval=5"], &["CMD", "x"]), "flag --interval is not a valid duration: \"5\" (missing unit"),
            (node("healthcheck", &["--timeout=-1s"], &["CMD", "x"]), "flag --timeout must be at least 1ms"),
            (node("healthcheck", &["--start-period=100us"], &["CMD", "x"]), "flag --start-period must be at least 1ms"),
            (node("healthcheck", &["--retries=-1"], &["CMD", "x"]), "flag --retries cannot be negative (-1)"),
            (node("healthcheck", &["--retries=two"], &["CMD", "x"]), "flag --retries expects a whole number"),
            (node("healthcheck", &["--retry=2"], &["CMD", "x"]), "unknown flag: --retry"),
            (node("onbuild", &[], &[]), "ONBUILD requires an instruction"),
        ];
        for (n, want) in cases {
            match typed(&n) {
                Ok(i) => panic!("{:?} should fail, got {i:?}", n.original),
                Err(e) => assert!(
                    e.to_string().contains(want),
                    "{:?}: got {:?}, want {want:?}",
                    n.original,
                    e.to_string()
                ),
            }
        }
    }

    #[test]
    fn unknown_instructions_suggest_the_closest() {
        let cases = [
            ("runn", Some("RUN")),
            ("form", Some("FROM")),
            ("coppy", Some("COPY")),
            ("entrypont", Some("ENTRYPOINT")),
            ("xyzzy", None),
            ("", None),
        ];
        for (keyword, want) in cases {
            let n = node(keyword, &[], &[""]);
            let err = typed(&n).expect_err("unknown keyword");
            assert_eq!(
                err.kind,
                ParseErrorKind::UnknownInstruction {
                    name: keyword.to_ascii_uppercase(),
                    suggestion: want.map(String::from)
                }
            );
            assert_eq!(err.span, n.keyword_span);
        }
    }

    #[test]
    fn onbuild_rules() {
        let inner = |keyword: &str, args: &[&str]| {
            node_at(
                NodeSpec {
                    keyword,
                    flags: &[],
                    args,
                    json: false,
                    heredocs: vec![],
                    inner: None,
                },
                8,
            )
        };
        let onbuild = |inner: Node| {
            let mut n = node_at(
                NodeSpec {
                    keyword: "onbuild",
                    flags: &[],
                    args: &[],
                    json: false,
                    heredocs: vec![],
                    inner: Some(inner.clone()),
                },
                0,
            );
            n.original = format!("ONBUILD {}", inner.original);
            n
        };
        let err = typed(&onbuild(inner("onbuild", &[]))).expect_err("chained");
        assert_eq!(err.kind, ParseErrorKind::ChainedOnbuild);
        let err = typed(&onbuild(inner("from", &["x"]))).expect_err("from");
        assert_eq!(err.kind, ParseErrorKind::ForbiddenOnbuild("FROM".into()));
        let err = typed(&onbuild(inner("maintainer", &["x"]))).expect_err("maintainer");
        assert_eq!(
            err.kind,
            ParseErrorKind::ForbiddenOnbuild("MAINTAINER".into())
        );
        assert!(
            typed(&onbuild(inner("runn", &["x"]))).is_err(),
            "the trigger is typed too"
        );

        let Instruction::Onbuild(ob) = typed(&onbuild(inner("run", &["echo hi"]))).unwrap() else {
            panic!("onbuild")
        };
        assert_eq!(ob.expression, "run echo hi");
        assert!(matches!(ob.trigger.instruction, Instruction::Run(_)));
        assert_eq!(ob.trigger.keyword_span, Span::new(8, 11));

        let mut with_heredoc = inner("run", &["<<EOF"]);
        with_heredoc.heredocs = vec![heredoc("EOF", "echo hi\n", false, true)];
        let Instruction::Onbuild(ob) = typed(&onbuild(with_heredoc)).unwrap() else {
            panic!("onbuild")
        };
        assert_eq!(ob.expression, "run <<EOF\necho hi\nEOF");
    }

    #[test]
    fn from_forms() {
        let Instruction::From(f) = typed(&node(
            "from",
            &["--platform=$BUILDPLATFORM"],
            &["golang:1.22", "AS", "Build"],
        ))
        .unwrap() else {
            panic!("from")
        };
        assert_eq!(f.image.value, "golang:1.22");
        assert_eq!(
            f.platform.map(|p| p.value),
            Some("$BUILDPLATFORM".to_string())
        );
        assert_eq!(f.alias.map(|a| a.value), Some("build".to_string()));
        let Instruction::From(f) = typed(&node("from", &[], &["scratch"])).unwrap() else {
            panic!("from")
        };
        assert_eq!((f.alias, f.platform), (None, None));
    }

    #[test]
    fn run_forms() {
        let n = node(
            "run",
            &[
                "--mount=type=cache,target=/c",
                "--mount=type=secret,id=x",
                "--network=none",
                "--security=insecure",
                "--device=nvidia.com/gpu=all",
            ],
            &["make  all"],
        );
        let Instruction::Run(r) = typed(&n).unwrap() else {
            panic!("run")
        };
        assert_eq!(r.command, Command::Shell("make  all".into()));
        assert_eq!(r.mounts.len(), 2);
        assert_eq!(
            (r.network, r.security),
            (NetworkMode::None, SecurityMode::Insecure)
        );
        assert_eq!(
            r.devices.first().map(|d| d.name.as_str()),
            Some("nvidia.com/gpu=all")
        );
        // The mount span is the flag value's.
        assert_eq!(r.mounts.first().map(|m| m.span), Some(Span::new(12, 32)));

        let Instruction::Run(r) = typed(&json_node("run", &[], &["echo", "a b"])).unwrap() else {
            panic!("run")
        };
        assert_eq!(r.command, Command::Exec(vec!["echo".into(), "a b".into()]));
        assert_eq!(
            (r.network, r.security),
            (NetworkMode::Default, SecurityMode::Sandbox)
        );

        let mut n = node("run", &[], &["<<EOF"]);
        n.heredocs = vec![heredoc("EOF", "echo hi\n", false, true)];
        let Instruction::Run(r) = typed(&n).unwrap() else {
            panic!("run")
        };
        assert_eq!(r.heredocs.len(), 1);
    }

    #[test]
    fn cmd_entrypoint_shell_forms() {
        assert_eq!(
            typed(&node("cmd", &[], &["echo hi"])).unwrap(),
            Instruction::Cmd(CmdInstruction {
                command: Command::Shell("echo hi".into())
            })
        );
        assert_eq!(
            typed(&json_node("cmd", &[], &[])).unwrap(),
            Instruction::Cmd(CmdInstruction {
                command: Command::Exec(vec![])
            })
        );
        assert_eq!(
            typed(&json_node("entrypoint", &[], &["/bin/app", "-v"])).unwrap(),
            Instruction::Entrypoint(EntrypointInstruction {
                command: Command::Exec(vec!["/bin/app".into(), "-v".into()])
            })
        );
        assert_eq!(
            typed(&json_node("shell", &[], &["powershell", "-command"])).unwrap(),
            Instruction::Shell(ShellInstruction {
                shell: vec!["powershell".into(), "-command".into()]
            })
        );
        let mut windows = node("shell", &[], &["[\"c:\\windows\\cmd.exe\", \"/S\"]"]);
        windows.original = "SHELL [\"c:\\windows\\cmd.exe\", \"/S\"]".into();
        let err = typed(&windows).expect_err("not json");
        assert!(err.to_string().contains("Windows path"), "{err}");
    }

    #[test]
    fn env_label_arg() {
        let Instruction::Env(e) =
            typed(&node("env", &[], &["A", "\"a b\"", "=", "B", "2", "="])).unwrap()
        else {
            panic!("env")
        };
        let got: Vec<_> = e
            .vars
            .iter()
            .map(|kv| (kv.key.value.as_str(), kv.value.value.as_str(), kv.legacy))
            .collect();
        assert_eq!(got, vec![("A", "\"a b\"", false), ("B", "2", false)]);
        let Instruction::Env(e) = typed(&node("env", &[], &["SCUBA", "1 DUBA 3", ""])).unwrap()
        else {
            panic!("env")
        };
        assert!(e
            .vars
            .first()
            .is_some_and(|kv| kv.legacy && kv.value.value == "1 DUBA 3"));

        let Instruction::Label(l) =
            typed(&node("label", &[], &["\"com.x\"", "\"y\"", "="])).unwrap()
        else {
            panic!("label")
        };
        assert_eq!(l.labels.len(), 1);

        let n = node("arg", &[], &["abc=\"123 456\"", "def", "x="]);
        let Instruction::Arg(a) = typed(&n).unwrap() else {
            panic!("arg")
        };
        let got: Vec<_> = a
            .args
            .iter()
            .map(|d| {
                (
                    d.name.value.as_str(),
                    d.default.as_ref().map(|v| v.value.as_str()),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![("abc", Some("\"123 456\"")), ("def", None), ("x", Some(""))]
        );
        // Spans of name and default point inside the word.
        let first = a.args.first().unwrap();
        assert_eq!(first.name.span, Span::new(4, 7));
        assert_eq!(
            first.default.as_ref().map(|d| d.span),
            Some(Span::new(8, 17))
        );
    }

    #[test]
    fn copy_and_add() {
        let n = node(
            "copy",
            &[
                "--from=build",
                "--chown=1000:1000",
                "--chmod=u=rwX,go=rX",
                "--link",
                "--parents",
                "--exclude=*.md",
                "--exclude=*.txt",
            ],
            &["a", "b*", "/dst/"],
        );
        let Instruction::Copy(c) = typed(&n).unwrap() else {
            panic!("copy")
        };
        let srcs: Vec<_> = c.files.sources.iter().map(|s| s.value.as_str()).collect();
        assert_eq!(srcs, vec!["a", "b*"]);
        assert_eq!(c.files.dest.value, "/dst/");
        assert_eq!(c.from.map(|f| f.value), Some("build".into()));
        assert_eq!(c.chown.map(|f| f.value), Some("1000:1000".into()));
        assert_eq!(c.chmod.map(|f| f.value), Some("u=rwX,go=rX".into()));
        assert!(c.link && c.parents);
        assert_eq!(c.excludes.len(), 2);

        let n = node("copy", &["--from=", "--chmod=$MODE"], &["a", "b"]);
        let Instruction::Copy(c) = typed(&n).unwrap() else {
            panic!("copy")
        };
        assert_eq!(c.from, None, "an empty --from means the build context");
        assert!(
            c.chmod.is_some(),
            "a chmod with a variable is checked after expansion"
        );

        let mut n = node("copy", &[], &["<<A", "file", "<<-B", "/dest/"]);
        n.heredocs = vec![
            heredoc("A", "one\n", false, true),
            heredoc("B", "\t\ttwo\n", true, false),
        ];
        let Instruction::Copy(c) = typed(&n).unwrap() else {
            panic!("copy")
        };
        assert_eq!(
            c.files
                .sources
                .iter()
                .map(|s| s.value.as_str())
                .collect::<Vec<_>>(),
            vec!["file"]
        );
        let docs: Vec<_> = c
            .files
            .heredocs
            .iter()
            .map(|h| (h.name.as_str(), h.content.as_str(), h.expand))
            .collect();
        assert_eq!(docs, vec![("A", "one\n", true), ("B", "two\n", false)]);

        // JSON form never has heredocs.
        let Instruction::Copy(c) = typed(&json_node("copy", &[], &["<<A", "/d"])).unwrap() else {
            panic!("copy")
        };
        assert_eq!(
            c.files.sources.first().map(|s| s.value.as_str()),
            Some("<<A")
        );

        let sha = format!("--checksum=sha256:{}", "a".repeat(64));
        let n = node(
            "add",
            &[
                "--keep-git-dir=true",
                &sha,
                "--unpack=false",
                "--chown=app",
                "--link=false",
            ],
            &["https://x/y.tgz", "/y"],
        );
        let Instruction::Add(a) = typed(&n).unwrap() else {
            panic!("add")
        };
        assert!(a.keep_git_dir && !a.link);
        assert_eq!(a.unpack, Some(false));
        assert!(a.checksum.is_some());
        let Instruction::Add(a) = typed(&node(
            "add",
            &["--checksum=be1f38e"],
            &["git@x:y.git", "/y"],
        ))
        .unwrap() else {
            panic!("add")
        };
        assert_eq!(
            (a.unpack, a.checksum.map(|c| c.value)),
            (None, Some("be1f38e".into()))
        );
    }

    #[test]
    fn chmod_values() {
        let ok = [
            "755",
            "0644",
            "7777",
            "+x",
            "u=rwX,go=rX",
            "g=u",
            "a-w",
            "u+s,o=",
            "ug+rw-x",
            "=r",
        ];
        for s in ok {
            assert!(parse_chmod(s).is_ok(), "{s:?}");
        }
        assert_eq!(parse_chmod("0755"), Ok(Chmod::Octal(0o755)));
        let bad = [
            "", "8", "17777", "u", "u+q", "x+r", "g=uo", "u=r,", ",", "rwx",
        ];
        for s in bad {
            assert!(parse_chmod(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn signals() {
        for s in [
            "SIGTERM",
            "TERM",
            "sigkill",
            "9",
            "255",
            "SIGRTMIN+3",
            "RTMAX-14",
            "SIGUSR1",
        ] {
            assert!(check_signal(s).is_ok(), "{s:?}");
        }
        for s in ["", "0", "256", "SIGFOO", "RTMIN+16", "-9", "SIG"] {
            assert!(check_signal(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn go_durations() {
        let cases: &[(&str, Result<i64, ()>)] = &[
            ("0", Ok(0)),
            ("-0", Ok(0)),
            ("30s", Ok(30_000_000_000)),
            ("1m30s", Ok(90_000_000_000)),
            ("1.5h", Ok(5_400_000_000_000)),
            (".5s", Ok(500_000_000)),
            ("5.s", Ok(5_000_000_000)),
            ("1ms", Ok(1_000_000)),
            ("100us", Ok(100_000)),
            ("100µs", Ok(100_000)),
            ("3ns", Ok(3)),
            ("-2s", Ok(-2_000_000_000)),
            ("+2s", Ok(2_000_000_000)),
            ("2h45m", Ok(9_900_000_000_000)),
            ("", Err(())),
            ("5", Err(())),
            ("s", Err(())),
            (".s", Err(())),
            ("5d", Err(())),
            ("1s2", Err(())),
            ("-", Err(())),
            ("3000000h", Err(())),
            ("99999999999999999999999s", Err(())),
        ];
        for (input, want) in cases {
            assert_eq!(parse_go_duration(input).map_err(|_| ()), *want, "{input:?}");
        }
    }

    #[test]
    fn healthcheck_forms() {
        let n = node(
            "healthcheck",
            &[
                "--interval=5m",
                "--timeout=3s",
                "--start-period=0",
                "--retries=3",
                "--start-interval=1s",
            ],
            &["CMD", "curl -f http://localhost/ || exit 1"],
        );
        let Instruction::Healthcheck(HealthcheckInstruction::Cmd(h)) = typed(&n).unwrap() else {
            panic!("healthcheck")
        };
        assert_eq!(
            h.command,
            Command::Shell("curl -f http://localhost/ || exit 1".into())
        );
        assert_eq!(h.interval, Some(Duration::from_secs(300)));
        assert_eq!(h.timeout, Some(Duration::from_secs(3)));
        assert_eq!(h.start_period, Some(Duration::ZERO));
        assert_eq!(h.start_interval, Some(Duration::from_secs(1)));
        assert_eq!(h.retries, Some(3));
        let Instruction::Healthcheck(HealthcheckInstruction::Cmd(h)) =
            typed(&json_node("healthcheck", &[], &["cmd", "/bin/check", "-q"])).unwrap()
        else {
            panic!("healthcheck")
        };
        assert_eq!(
            h.command,
            Command::Exec(vec!["/bin/check".into(), "-q".into()])
        );
        assert_eq!(h.interval, None);
        assert_eq!(
            typed(&node("healthcheck", &[], &["none"])).unwrap(),
            Instruction::Healthcheck(HealthcheckInstruction::None)
        );
    }

    fn raw(nodes: Vec<Node>) -> RawDockerfile {
        // Lay the nodes out one after another so spans do not overlap.
        RawDockerfile {
            directives: Directives::default(),
            nodes,
            warnings: vec![],
        }
    }

    fn at(offset: usize, keyword: &str, args: &[&str]) -> Node {
        node_at(
            NodeSpec {
                keyword,
                flags: &[],
                args,
                json: false,
                heredocs: vec![],
                inner: None,
            },
            offset,
        )
    }

    #[test]
    fn stages_and_meta_args() {
        let df = from_raw(&raw(vec![
            at(0, "arg", &["VERSION=1"]),
            at(20, "from", &["alpine:$VERSION", "AS", "base"]),
            at(50, "run", &["echo hi"]),
            at(70, "from", &["base"]),
            at(90, "arg", &["X"]),
            at(100, "cmd", &["run"]),
        ]))
        .unwrap();
        assert_eq!(df.meta_args.len(), 1);
        assert_eq!(df.stages.len(), 2);
        let first = df.stages.first().unwrap();
        assert_eq!(first.name.as_deref(), Some("base"));
        assert_eq!(first.instructions.len(), 1);
        assert_eq!(first.span, Span::new(20, 61));
        let second = df.stages.get(1).unwrap();
        assert_eq!(second.name, None);
        assert!(matches!(
            second.instructions.first().map(|s| &s.instruction),
            Some(Instruction::Arg(_))
        ));
        assert_eq!(df.stage("BASE").map(|(i, _)| i), Some(0));
        assert_eq!(df.stage("1").map(|(i, _)| i), Some(1));
        assert!(df.stage("nope").is_none());
        // Shell-form CMD draws the JSONArgsRecommended check.
        assert!(
            df.warnings
                .iter()
                .any(|w| w.message.starts_with("JSONArgsRecommended")),
            "{:?}",
            df.warnings
        );
    }

    #[test]
    fn missing_from() {
        let err =
            from_raw(&raw(vec![at(0, "arg", &["A"]), at(10, "run", &["x"])])).expect_err("no FROM");
        assert!(matches!(err.kind, ParseErrorKind::MissingFrom(_)));
        assert_eq!(err.span, Span::new(10, 13));
        assert!(
            err.to_string().contains("RUN must come after a FROM"),
            "{err}"
        );
        let err = from_raw(&raw(vec![at(0, "arg", &["A"])])).expect_err("only ARG");
        assert!(matches!(err.kind, ParseErrorKind::MissingFrom(_)));
        assert!(from_raw(&raw(vec![])).is_err());
    }

    #[test]
    fn build_checks() {
        let nodes = vec![
            at(0, "from", &["a", "as", "Build"]),
            at(20, "maintainer", &["me"]),
            at(40, "cmd", &["x"]),
            at(50, "cmd", &["x"]),
            at(60, "from", &["b", "AS", "build"]),
        ];
        let mut r = raw(nodes.clone());
        r.nodes[0].original = "FROM a as Build".into();
        r.nodes[4].original = "FROM b AS build".into();
        let df = from_raw(&r).unwrap();
        let rules: Vec<&str> = df
            .warnings
            .iter()
            .filter_map(|w| w.message.split(':').next())
            .collect();
        for rule in [
            "StageNameCasing",
            "FromAsCasing",
            "MaintainerDeprecated",
            "JSONArgsRecommended",
            "MultipleInstructionsDisallowed",
            "DuplicateStageName",
        ] {
            assert!(rules.contains(&rule), "{rule} missing from {rules:?}");
        }
        r.directives.check = Some(Spanned::new(
            "skip=JSONArgsRecommended,FromAsCasing;error=true".into(),
            Span::default(),
        ));
        let df = from_raw(&r).unwrap();
        assert!(!df
            .warnings
            .iter()
            .any(|w| w.message.starts_with("JSONArgs") || w.message.starts_with("FromAs")));
        r.directives.check = Some(Spanned::new("skip=all".into(), Span::default()));
        assert!(from_raw(&r).unwrap().warnings.is_empty());
    }
}
