//! How Dockerfile instructions change an image's config and history, as BuildKit records them:
//! a stage's starting config (scratch's defaults, a base image's config, the default `PATH`),
//! every metadata instruction's effect (ENV order kept and replaced in place, ENTRYPOINT
//! resetting an inherited CMD, shell forms wrapped in the stage's SHELL, …), the environment
//! RUN steps see (ENV and ARG values in Dockerfile order), and the history entry each step
//! leaves, with BuildKit's `created_by` text (a RUN's `|N ARG=value …` prefix included).

use rbuild_image::{HealthConfig, History, ImageConfig};
use rbuild_parser::dump::go_quote;
use rbuild_parser::instruction::{Command, HealthcheckInstruction, Instruction};
use rbuild_solver::{PlannedStep, Platform};

use crate::error::BuildError;

/// The `PATH` BuildKit gives a stage whose base image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The shell of shell-form commands when no SHELL instruction set one.
pub const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];
/// The history comment of every step a Dockerfile adds.
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// What one stage's config evolution needs besides the config itself.
#[derive(Debug, Clone, Default)]
pub struct StageConfig {
    pub config: ImageConfig,
    /// A CMD was set in this stage (an ENTRYPOINT then keeps it).
    cmd_set: bool,
    /// The environment RUN steps see (BuildKit's LLB state env): the image's ENV with every
    /// ARG that has a value set into it in Dockerfile order, so the later of an ENV and an ARG
    /// of the same name wins. A stage built on another stage inherits it, ARGs included.
    run_env: Vec<String>,
    /// This stage's ARG declarations in order, with their values: the `|N K=V …` prefix of a
    /// RUN's history entry.
    build_args: Vec<(String, Option<String>)>,
}

impl StageConfig {
    /// The config a stage starts from: the base image's (with its ONBUILD triggers consumed),
    /// or scratch's (`WorkingDir` `/`), plus the default `PATH` when the base sets none.
    pub fn start(base: Option<ImageConfig>, platform: &Platform) -> StageConfig {
        let mut config = base.unwrap_or_else(|| {
            let mut c = ImageConfig::new(&platform.architecture, &platform.os);
            c.variant = platform.variant.clone().unwrap_or_default();
            c.config.working_dir = "/".into();
            c
        });
        config.config.on_build.clear();
        if !config.config.env.iter().any(|e| e.starts_with("PATH=")) {
            config.config.env.push(DEFAULT_PATH.into());
        }
        StageConfig {
            run_env: config.config.env.clone(),
            config,
            cmd_set: false,
            build_args: Vec::new(),
        }
    }

    /// Takes over the RUN environment of the stage this one is built `FROM` (BuildKit carries
    /// that stage's whole LLB state over, its ARG values included; the ARG declarations of the
    /// history prefix start afresh).
    pub fn inherit_run_env(&mut self, parent_run_env: Vec<String>) {
        self.run_env = parent_run_env;
    }

    /// The environment of a RUN step (`KEY=value`, see the field's doc).
    pub fn run_env(&self) -> &[String] {
        &self.run_env
    }

    /// The shell of shell-form commands.
    pub fn shell(&self) -> Vec<String> {
        if self.config.config.shell.is_empty() {
            DEFAULT_SHELL.iter().map(|s| (*s).to_string()).collect()
        } else {
            self.config.config.shell.clone()
        }
    }

    /// The working directory (`/` when unset).
    pub fn workdir(&self) -> &str {
        match self.config.config.working_dir.as_str() {
            "" => "/",
            w => w,
        }
    }

    /// Applies one planned step's metadata effect and returns its history entry's `created_by`
    /// (layer-producing steps get their `empty_layer` flag from the caller), or `None` for a step
    /// BuildKit records no history for (ONBUILD).
    pub fn apply(&mut self, step: &PlannedStep) -> Result<Option<String>, BuildError> {
        let c = &mut self.config.config;
        Ok(Some(match &step.step.instruction {
            Instruction::Env(e) => {
                let mut parts = Vec::new();
                for kv in &e.vars {
                    set_env(&mut c.env, &kv.key.value, &kv.value.value);
                    set_env(&mut self.run_env, &kv.key.value, &kv.value.value);
                    parts.push(format!("{}={}", kv.key.value, kv.value.value));
                }
                format!("ENV {}", parts.join(" "))
            }
            Instruction::Label(l) => {
                let mut parts = Vec::new();
                for kv in &l.labels {
                    c.labels
                        .insert(kv.key.value.clone(), kv.value.value.clone());
                    parts.push(format!("{}={}", kv.key.value, kv.value.value));
                }
                format!("LABEL {}", parts.join(" "))
            }
            Instruction::Maintainer(m) => {
                self.config.author = m.name.value.clone();
                format!("MAINTAINER {}", m.name.value)
            }
            Instruction::Expose(e) => {
                let mut ports = std::collections::BTreeSet::new();
                for p in &e.ports {
                    for port in
                        expand_port_spec(&p.value).map_err(|reason| BuildError::Instruction {
                            span: p.span,
                            reason,
                        })?
                    {
                        c.exposed_ports.insert(port.clone(), Default::default());
                        ports.insert(port);
                    }
                }
                let shown: Vec<String> = ports.iter().map(|p| format!("{p}:{{}}")).collect();
                format!("EXPOSE map[{}]", shown.join(" "))
            }
            Instruction::Volume(v) => {
                let paths: Vec<&str> = v.paths.iter().map(|p| p.value.as_str()).collect();
                for p in &paths {
                    if p.is_empty() {
                        return Err(BuildError::Instruction {
                            span: step.step.span,
                            reason: "VOLUME specified can not be an empty string".into(),
                        });
                    }
                    c.volumes.insert((*p).to_string(), Default::default());
                }
                format!("VOLUME [{}]", paths.join(" "))
            }
            Instruction::User(u) => {
                c.user = u.user.value.clone();
                format!("USER {}", u.user.value)
            }
            Instruction::Workdir(w) => {
                c.working_dir = resolve_workdir(&c.working_dir, &w.path.value);
                format!("WORKDIR {}", c.working_dir)
            }
            Instruction::Shell(s) => {
                c.shell = s.shell.clone();
                format!("SHELL [{}]", s.shell.join(" "))
            }
            Instruction::Stopsignal(s) => {
                c.stop_signal = s.signal.value.clone();
                format!("STOPSIGNAL {}", s.signal.value)
            }
            Instruction::Cmd(cmd) => {
                let args = self.command_args(&cmd.command);
                let c = &mut self.config.config;
                c.cmd = args;
                c.args_escaped = true;
                self.cmd_set = true;
                format!("CMD {}", go_quote_list(&c.cmd))
            }
            Instruction::Entrypoint(e) => {
                let args = self.command_args(&e.command);
                let c = &mut self.config.config;
                c.entrypoint = args;
                c.args_escaped = true;
                if !self.cmd_set {
                    c.cmd.clear();
                }
                format!("ENTRYPOINT {}", go_quote_list(&c.entrypoint))
            }
            Instruction::Healthcheck(h) => {
                let health = match h {
                    HealthcheckInstruction::None => HealthConfig {
                        test: vec!["NONE".into()],
                        ..HealthConfig::default()
                    },
                    HealthcheckInstruction::Cmd(hc) => {
                        let test = match &hc.command {
                            Command::Exec(args) => std::iter::once("CMD".to_string())
                                .chain(args.iter().cloned())
                                .collect(),
                            Command::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
                        };
                        let nanos = |d: Option<std::time::Duration>| {
                            d.map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
                        };
                        HealthConfig {
                            test,
                            interval: nanos(hc.interval),
                            timeout: nanos(hc.timeout),
                            start_period: nanos(hc.start_period),
                            start_interval: nanos(hc.start_interval),
                            retries: i64::from(hc.retries.unwrap_or(0)),
                        }
                    }
                };
                let created_by = format!(
                    "HEALTHCHECK &{{{} {} {} {} {}}}",
                    go_quote_list(&health.test),
                    quoted(&go_duration(health.interval)),
                    quoted(&go_duration(health.timeout)),
                    quoted(&go_duration(health.start_period)),
                    go_quote_rune(health.retries),
                );
                self.config.config.healthcheck = Some(health);
                created_by
            }
            Instruction::Onbuild(o) => {
                c.on_build.push(o.expression.clone());
                return Ok(None);
            }
            Instruction::Arg(a) => {
                // The solver put each ARG's value (build arg, default or meta ARG) in `default`.
                for d in &a.args {
                    let value = d.default.as_ref().map(|v| v.value.clone());
                    if let Some(v) = &value {
                        set_env(&mut self.run_env, &d.name.value, v);
                    }
                    self.build_args.push((d.name.value.clone(), value));
                }
                let parts: Vec<String> = a
                    .args
                    .iter()
                    .map(|d| match &d.default {
                        Some(v) => format!("{}={}", d.name.value, v.value),
                        None => d.name.value.clone(),
                    })
                    .collect();
                format!("ARG {}", parts.join(" "))
            }
            Instruction::Copy(cp) => file_created_by("COPY", &cp.files),
            Instruction::Add(add) => file_created_by("ADD", &add.files),
            Instruction::Run(run) => {
                let args = crate::run::run_args(self, run);
                format!("RUN {} # buildkit", self.with_build_args(&args).join(" "))
            }
            Instruction::From(_) => return Ok(None),
        }))
    }

    /// BuildKit's history words of a RUN: `|N K=V …` for the stage's ARGs (each once, at its
    /// first declaration, with its value in the RUN environment — an ENV of the same name
    /// shows — or its own, empty when it has none), then the command's argv.
    fn with_build_args(&self, args: &[String]) -> Vec<String> {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        for (key, value) in &self.build_args {
            let current = self
                .run_env
                .iter()
                .find_map(|e| e.strip_prefix(key.as_str())?.strip_prefix('='))
                .map(str::to_string)
                .or_else(|| value.clone())
                .unwrap_or_default();
            match pairs.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = current,
                None => pairs.push((key, current)),
            }
        }
        let mut words = Vec::new();
        if !pairs.is_empty() {
            words.push(format!("|{}", pairs.len()));
            words.extend(pairs.into_iter().map(|(k, v)| format!("{k}={v}")));
        }
        words.extend(args.iter().cloned());
        words
    }

    /// A command's argv: exec form as is, shell form through the stage's SHELL.
    pub fn command_args(&self, command: &Command) -> Vec<String> {
        match command {
            Command::Exec(args) => args.clone(),
            Command::Shell(s) => {
                let mut args = self.shell();
                args.push(s.clone());
                args
            }
        }
    }

    /// Appends a history entry.
    pub fn push_history(&mut self, created_by: String, created: Option<String>, empty_layer: bool) {
        self.config.history.push(History {
            created,
            created_by,
            author: String::new(),
            comment: HISTORY_COMMENT.into(),
            empty_layer,
        });
    }
}

/// Whether a step only changes the config (its history entry is an empty layer). COPY, ADD,
/// RUN and WORKDIR (which creates its directory) change the filesystem; a step whose change
/// turns out empty also gets an empty layer.
pub fn is_metadata_only(instruction: &Instruction) -> bool {
    !matches!(
        instruction,
        Instruction::Copy(_) | Instruction::Add(_) | Instruction::Run(_) | Instruction::Workdir(_)
    )
}

fn file_created_by(keyword: &str, files: &rbuild_parser::instruction::SourcesAndDest) -> String {
    let mut words: Vec<String> = files.sources.iter().map(|s| s.value.clone()).collect();
    words.extend(files.heredocs.iter().map(|h| format!("<<{}", h.name)));
    words.push(files.dest.value.clone());
    format!("{keyword} {} # buildkit", words.join(" "))
}

/// Sets `KEY=value` in an env list: replaced in place, or appended.
pub fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
    {
        Some(slot) => *slot = entry,
        None => env.push(entry),
    }
}

/// WORKDIR semantics: a relative path joins the current one; the result is cleaned.
pub fn resolve_workdir(current: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{path}", if current.is_empty() { "/" } else { current })
    };
    rbuild_context::clean_path(&joined)
}

/// `80` → `80/tcp`; `8000-8002/udp` → three ports; protocol lower-cased.
pub fn expand_port_spec(spec: &str) -> Result<Vec<String>, String> {
    let (range, proto) = match spec.split_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let port = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| format!("invalid containerPort: {s}"))
    };
    let (start, end) = match range.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(range)?, port(range)?),
    };
    if end < start {
        return Err(format!(
            "invalid range specified for container port: {range}"
        ));
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

fn quoted(s: &str) -> String {
    let mut out = String::new();
    go_quote(s, &mut out);
    out
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
fn go_quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quoted(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `%q` of an integer: a quoted rune (`'\x04'`, `'A'`).
fn go_quote_rune(n: i64) -> String {
    let Some(c) = u32::try_from(n).ok().and_then(char::from_u32) else {
        return "'\\ufffd'".into();
    };
    match c {
        '\'' => "'\\''".into(),
        '\\' => "'\\\\'".into(),
        '\u{7}' => "'\\a'".into(),
        '\u{8}' => "'\\b'".into(),
        '\u{c}' => "'\\f'".into(),
        '\n' => "'\\n'".into(),
        '\r' => "'\\r'".into(),
        '\t' => "'\\t'".into(),
        '\u{b}' => "'\\v'".into(),
        c if (c as u32) < 0x20 || c == '\u{7f}' => format!("'\\x{:02x}'", c as u32),
        c if c.is_ascii() => format!("'{c}'"),
        c if c.is_control() => format!("'\\u{:04x}'", c as u32),
        c => format!("'{c}'"),
    }
}

/// Go's `time.Duration.String()`: `0s`, `1.5s`, `1m30s`, `1h0m0s`, `500ms`, `2µs`, `7ns`.
pub fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    let frac = |v: u64, digits: u32| {
        let scale = 10u64.pow(digits);
        let (int, rest) = (v / scale, v % scale);
        if rest == 0 {
            int.to_string()
        } else {
            let f = format!("{rest:0width$}", width = digits as usize);
            format!("{int}.{}", f.trim_end_matches('0'))
        }
    };
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000 {
        return format!("{sign}{}µs", frac(u, 3));
    }
    if u < 1_000_000_000 {
        return format!("{sign}{}ms", frac(u, 6));
    }
    let secs = u / 1_000_000_000;
    let sub = u % 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let mut out = sign.to_string();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&frac(s * 1_000_000_000 + sub, 9));
    out.push('s');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let cases = [
            (0, "0s"),
            (30_000_000_000, "30s"),
            (1_500_000_000, "1.5s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (500_000_000, "500ms"),
            (2_000, "2µs"),
            (7, "7ns"),
            (-1_000_000_000, "-1s"),
        ];
        for (n, want) in cases {
            assert_eq!(go_duration(n), want, "{n}");
        }
    }

    #[test]
    fn ports_workdirs_and_runes() {
        assert_eq!(expand_port_spec("80"), Ok(vec!["80/tcp".to_string()]));
        assert_eq!(expand_port_spec("53/UDP"), Ok(vec!["53/udp".to_string()]));
        assert_eq!(expand_port_spec("8000-8002/tcp").map(|v| v.len()), Ok(3));
        assert!(expand_port_spec("http").is_err());
        assert!(expand_port_spec("9-1").is_err());
        assert_eq!(resolve_workdir("/app", "sub"), "/app/sub");
        assert_eq!(resolve_workdir("/app/sub", "../other"), "/app/other");
        assert_eq!(resolve_workdir("", "x"), "/x");
        assert_eq!(resolve_workdir("/a", "/../../b/./c/"), "/b/c");
        assert_eq!(go_quote_rune(4), "'\\x04'");
        assert_eq!(go_quote_rune(0), "'\\x00'");
        assert_eq!(go_quote_rune(65), "'A'");
    }

    struct AnyImage;

    impl rbuild_solver::BaseImageResolver for AnyImage {
        fn resolve(&mut self, _: &str) -> Result<rbuild_solver::BaseImageInfo, String> {
            Ok(rbuild_solver::BaseImageInfo::default())
        }
    }

    #[test]
    fn run_env_and_history_follow_arg_and_env_order() {
        let src =
            "FROM base\nENV E=env\nARG A=1\nARG E=arg\nARG B\nARG A=2\nENV A=env-a\nRUN true\n";
        let file = rbuild_parser::instruction::parse(src).unwrap_or_else(|e| panic!("{e}"));
        let plan = rbuild_solver::plan(&file, &Default::default(), &mut AnyImage)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut sc = StageConfig::start(None, &Platform::default());
        let mut last = None;
        for step in &plan.stages[0].steps {
            last = sc.apply(step).unwrap_or_else(|e| panic!("{e}"));
        }
        // The later of an ARG and an ENV of one name wins in RUN's environment; ARGs stay out
        // of the image config.
        assert_eq!(sc.run_env(), [DEFAULT_PATH, "E=arg", "A=env-a"]);
        assert_eq!(sc.config.config.env, [DEFAULT_PATH, "E=env", "A=env-a"]);
        // Each ARG once, where first declared, with its value in RUN's environment.
        assert_eq!(
            last.as_deref(),
            Some("RUN |3 A=env-a E=arg B= /bin/sh -c true # buildkit")
        );
    }

    #[test]
    fn env_replaces_in_place() {
        let mut env = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        set_env(&mut env, "A", "2");
        set_env(&mut env, "B", "x=y");
        assert_eq!(env, ["PATH=/bin", "A=2", "B=x=y"]);
    }
}
