//! End-to-end: Dockerfile text → typed AST (`instruction::parse`), errors with their
//! `file:line:col`, variable expansion of typed instructions, the real-world corpus, and a small
//! deterministic mutation pass that must never panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use rbuild_parser::instruction::{
    parse, Command, Dockerfile, HealthcheckInstruction, Instruction, Stage, Step,
};
use rbuild_parser::mount::{CacheSharing, MountType, NetworkMode, SecurityMode};
use rbuild_parser::shell::{EmptyEnv, Lexer};
use rbuild_parser::{ParseErrorKind, Span};

fn parsed(src: &str) -> Dockerfile {
    parse(src).unwrap_or_else(|e| panic!("{}", e.render("Dockerfile", src)))
}

fn text(src: &str, span: Span) -> &str {
    src.get(span.start..span.end).unwrap_or("<bad span>")
}

fn stage(df: &Dockerfile, index: usize) -> &Stage {
    df.stages
        .get(index)
        .unwrap_or_else(|| panic!("no stage {index}"))
}

fn step(stage: &Stage, index: usize) -> &Step {
    stage
        .instructions
        .get(index)
        .unwrap_or_else(|| panic!("no instruction {index}"))
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const MULTI_STAGE: &str = r#"# syntax=docker/dockerfile:1
ARG GO_VERSION=1.22
ARG BASE="alpine:3.20"

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS="-trimpath -mod=vendor"
RUN --mount=type=cache,target=/root/.cache/go-build,sharing=locked \
    --mount=type=bind,source=.,target=/src \
    --network=none \
    go build -o /out/app ./cmd/app
COPY --chmod=0755 <<EOF /out/entrypoint.sh
#!/bin/sh
exec /app "$@"
EOF

FROM ${BASE}
LABEL org.opencontainers.image.title="app" version=1
COPY --from=build --chown=1000:1000 --link /out/app /out/entrypoint.sh /usr/local/bin/
ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.com/a.tgz /opt/
EXPOSE 8080/tcp 9090
VOLUME ["/data"]
USER app:app
HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD ["/usr/local/bin/app", "health"]
STOPSIGNAL SIGINT
ONBUILD RUN echo triggered
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
"#;

#[test]
fn typed_ast_of_a_multi_stage_dockerfile() {
    let src = MULTI_STAGE;
    let df = parsed(src);
    assert_eq!(
        df.directives.syntax.as_ref().map(|s| s.value.as_str()),
        Some("docker/dockerfile:1")
    );

    // Meta ARGs.
    let meta: Vec<(&str, Option<&str>)> = df
        .meta_args
        .iter()
        .flat_map(|a| a.value.args.iter())
        .map(|d| {
            (
                d.name.value.as_str(),
                d.default.as_ref().map(|v| v.value.as_str()),
            )
        })
        .collect();
    assert_eq!(
        meta,
        vec![
            ("GO_VERSION", Some("1.22")),
            ("BASE", Some("\"alpine:3.20\""))
        ]
    );

    assert_eq!(df.stages.len(), 2);
    let build = stage(&df, 0);
    assert_eq!(build.name.as_deref(), Some("build"));
    assert_eq!(build.base.image.value, "golang:${GO_VERSION}");
    assert_eq!(text(src, build.base.image.span), "golang:${GO_VERSION}");
    assert_eq!(
        build.base.platform.as_ref().map(|p| p.value.as_str()),
        Some("$BUILDPLATFORM")
    );
    assert_eq!(
        text(src, build.base_span).lines().next(),
        Some("FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build")
    );

    let Instruction::Workdir(w) = &step(build, 0).instruction else {
        panic!("WORKDIR")
    };
    assert_eq!(w.path.value, "/src");

    let Instruction::Env(e) = &step(build, 1).instruction else {
        panic!("ENV")
    };
    let vars: Vec<(&str, &str)> = e
        .vars
        .iter()
        .map(|kv| (kv.key.value.as_str(), kv.value.value.as_str()))
        .collect();
    assert_eq!(
        vars,
        vec![
            ("CGO_ENABLED", "0"),
            ("GOFLAGS", "\"-trimpath -mod=vendor\"")
        ]
    );

    let run_step = step(build, 2);
    let Instruction::Run(run) = &run_step.instruction else {
        panic!("RUN")
    };
    assert_eq!(
        run.command,
        Command::Shell("go build -o /out/app ./cmd/app".into())
    );
    assert_eq!(run.network, NetworkMode::None);
    assert_eq!(run.security, SecurityMode::Sandbox);
    let cache = run.mounts.first().expect("cache mount");
    assert_eq!(
        (cache.kind, cache.sharing, cache.read_only),
        (MountType::Cache, CacheSharing::Locked, false)
    );
    assert_eq!(cache.target.as_deref(), Some("/root/.cache/go-build"));
    assert_eq!(
        text(src, cache.span),
        "type=cache,target=/root/.cache/go-build,sharing=locked"
    );
    let bind = run.mounts.get(1).expect("bind mount");
    assert_eq!(
        (bind.kind, bind.read_only, bind.source.as_deref()),
        (MountType::Bind, true, Some("."))
    );

    let Instruction::Copy(copy) = &step(build, 3).instruction else {
        panic!("COPY heredoc")
    };
    assert!(copy.files.sources.is_empty());
    let doc = copy.files.heredocs.first().expect("heredoc source");
    assert_eq!(
        (doc.name.as_str(), doc.content.as_str(), doc.expand),
        ("EOF", "#!/bin/sh\nexec /app \"$@\"\n", true)
    );
    assert_eq!(text(src, doc.span), "<<EOF");
    assert_eq!(copy.files.dest.value, "/out/entrypoint.sh");
    assert_eq!(copy.chmod.as_ref().map(|c| c.value.as_str()), Some("0755"));

    let last = stage(&df, 1);
    assert_eq!(last.name, None);
    assert_eq!(last.base.image.value, "${BASE}");
    let keywords: Vec<&str> = last
        .instructions
        .iter()
        .map(|s| s.instruction.keyword())
        .collect();
    assert_eq!(
        keywords,
        vec![
            "LABEL",
            "COPY",
            "ADD",
            "EXPOSE",
            "VOLUME",
            "USER",
            "HEALTHCHECK",
            "STOPSIGNAL",
            "ONBUILD",
            "ENTRYPOINT"
        ]
    );
    let Instruction::Copy(copy) = &step(last, 1).instruction else {
        panic!("COPY")
    };
    assert_eq!(copy.from.as_ref().map(|f| f.value.as_str()), Some("build"));
    assert_eq!(
        copy.chown.as_ref().map(|f| f.value.as_str()),
        Some("1000:1000")
    );
    assert!(copy.link);
    let sources: Vec<&str> = copy
        .files
        .sources
        .iter()
        .map(|s| s.value.as_str())
        .collect();
    assert_eq!(sources, vec!["/out/app", "/out/entrypoint.sh"]);
    let Instruction::Add(add) = &step(last, 2).instruction else {
        panic!("ADD")
    };
    assert!(add.checksum.is_some());
    let Instruction::Expose(expose) = &step(last, 3).instruction else {
        panic!("EXPOSE")
    };
    assert_eq!(
        expose
            .ports
            .iter()
            .map(|p| p.value.as_str())
            .collect::<Vec<_>>(),
        vec!["8080/tcp", "9090"]
    );
    let Instruction::Volume(volume) = &step(last, 4).instruction else {
        panic!("VOLUME")
    };
    assert_eq!(
        volume.paths.first().map(|p| p.value.as_str()),
        Some("/data")
    );
    let Instruction::Healthcheck(HealthcheckInstruction::Cmd(health)) = &step(last, 6).instruction
    else {
        panic!("HEALTHCHECK")
    };
    assert_eq!(
        health.command,
        Command::Exec(vec!["/usr/local/bin/app".into(), "health".into()])
    );
    assert_eq!(
        (health.interval, health.timeout, health.retries),
        (
            Some(Duration::from_secs(30)),
            Some(Duration::from_secs(3)),
            Some(3)
        )
    );
    let Instruction::Onbuild(onbuild) = &step(last, 8).instruction else {
        panic!("ONBUILD")
    };
    assert_eq!(onbuild.expression, "RUN echo triggered");
    assert_eq!(text(src, onbuild.trigger.keyword_span), "RUN");
    let entrypoint = step(last, 9);
    assert_eq!(
        entrypoint.original,
        "ENTRYPOINT [\"/usr/local/bin/entrypoint.sh\"]"
    );
    assert_eq!(text(src, entrypoint.keyword_span), "ENTRYPOINT");
}

/// `(Dockerfile, expected message fragment, expected "line:col" of the error)`.
const ERRORS: &[(&str, &str, &str)] = &[
    (
        "FROM alpine\nRUNN echo hi\n",
        "unknown instruction: RUNN (did you mean RUN?)",
        "2:1",
    ),
    ("FROM alpine\nCOPPY a b\n", "did you mean COPY?", "2:1"),
    (
        "RUN echo hi\n",
        "no FROM instruction: RUN must come after a FROM",
        "1:1",
    ),
    ("ARG A=1\n", "no FROM instruction", "1:1"),
    (
        "FROM alpine AS\n",
        "FROM requires either one or three arguments",
        "1:6",
    ),
    (
        "FROM alpine AS 9lives\n",
        "invalid stage name \"9lives\"",
        "1:16",
    ),
    (
        "FROM alpine BY name\n",
        "expected AS before the stage name",
        "1:13",
    ),
    (
        "FROM --plat=linux/amd64 alpine\n",
        "unknown flag: --plat (valid flags for FROM: --platform)",
        "1:6",
    ),
    (
        "FROM a\nCOPY --form=b x /y\n",
        "unknown flag: --form",
        "2:6",
    ),
    (
        "FROM a\nCOPY --from b x /y\n",
        "flag --from needs a value",
        "2:6",
    ),
    (
        "FROM a\nCOPY --link=maybe x /y\n",
        "flag --link expects true or false, not \"maybe\"",
        "2:13",
    ),
    (
        "FROM a\nCOPY x\n",
        "COPY requires at least two arguments",
        "2:6",
    ),
    (
        "FROM a\nCOPY --chmod=8888 x /y\n",
        "flag --chmod invalid mode",
        "2:14",
    ),
    (
        "FROM a\nADD --unpack=ok x /y\n",
        "flag --unpack expects true or false",
        "2:14",
    ),
    (
        "FROM a\nRUN --mount=type=cache,target=/c,uid=root make\n",
        "invalid --mount: invalid value \"root\" for `uid`",
        "2:34",
    ),
    (
        "FROM a\nRUN --mount=type=bind,target=/c,size=1g make\n",
        "`size` does not apply to a bind mount",
        "2:33",
    ),
    (
        "FROM a\nRUN --mount=type=cache,target=/c,x-opt=1 make\n",
        "unknown option `x-opt`",
        "2:34",
    ),
    (
        "FROM a\nCOPY --from=$BUILDER /out /out\n",
        "flag --from does not support variables",
        "2:13",
    ),
    (
        "FROM a\nRUN --mount=from=$BASE,target=/b make\n",
        "`from` does not support variables",
        "2:13",
    ),
    (
        "FROM a\nRUN --network=bridge make\n",
        "flag --network must be default, none or host",
        "2:15",
    ),
    (
        "FROM a\nRUN --mount=type=cache,target=/c\n",
        "RUN requires a command",
        "2:1",
    ),
    (
        "FROM a\nCMD --verbose\n",
        "CMD does not accept flags, but --verbose was given",
        "2:5",
    ),
    (
        "FROM a\nSHELL /bin/bash -c\n",
        "SHELL: requires the arguments in JSON form",
        "2:7",
    ),
    (
        "FROM a\nSTOPSIGNAL SIGNOPE\n",
        "invalid signal \"SIGNOPE\"",
        "2:12",
    ),
    (
        "FROM a\nHEALTHCHECK --interval=10 CMD true\n",
        "flag --interval is not a valid duration",
        "2:24",
    ),
    (
        "FROM a\nHEALTHCHECK --timeout=-5s CMD true\n",
        "flag --timeout must be at least 1ms",
        "2:23",
    ),
    (
        "FROM a\nHEALTHCHECK --retries=-1 CMD true\n",
        "flag --retries cannot be negative",
        "2:23",
    ),
    (
        "FROM a\nHEALTHCHECK NONE true\n",
        "NONE takes no arguments",
        "2:18",
    ),
    (
        "FROM a\nHEALTHCHECK CHECK true\n",
        "unknown type \"CHECK\"",
        "2:13",
    ),
    (
        "FROM a\nONBUILD ONBUILD RUN x\n",
        "ONBUILD cannot be chained",
        "2:9",
    ),
    (
        "FROM a\nONBUILD FROM b\n",
        "FROM is not allowed as an ONBUILD trigger",
        "2:9",
    ),
    (
        "FROM a\nONBUILD MAINTAINER me\n",
        "MAINTAINER is not allowed as an ONBUILD trigger",
        "2:9",
    ),
    (
        "FROM a\nONBUILD RUN --mount=type=nope x\n",
        "unsupported mount type \"nope\"",
        "2:21",
    ),
    ("FROM a\nARG =x\n", "ARG: names can not be blank", "2:5"),
    ("FROM a\nENV A=1 =2\n", "ENV: names can not be blank", "2:9"),
    (
        "FROM a\nVOLUME [\"\"]\n",
        "VOLUME: a volume path can not be empty",
        "2:8",
    ),
];

#[test]
fn errors_carry_messages_and_positions() {
    for (src, message, position) in ERRORS {
        let err = match parse(src) {
            Ok(df) => panic!("{src:?} should fail, got {df:?}"),
            Err(e) => e,
        };
        let rendered = err.render("Dockerfile", src);
        assert!(
            rendered.contains(message),
            "{src:?}: wanted {message:?} in\n{rendered}"
        );
        let location = format!("Dockerfile:{position}\n");
        assert!(
            rendered.contains(&location),
            "{src:?}: wanted {location:?} in\n{rendered}"
        );
    }
}

#[test]
fn unknown_instruction_error_kind() {
    let err = parse("FROM a\nFORM b\n").expect_err("unknown");
    assert_eq!(
        err.kind,
        ParseErrorKind::UnknownInstruction {
            name: "FORM".into(),
            suggestion: Some("FROM".into())
        }
    );
    let err = parse("FROM a\nFROBNICATE b\n").expect_err("unknown");
    assert_eq!(
        err.kind,
        ParseErrorKind::UnknownInstruction {
            name: "FROBNICATE".into(),
            suggestion: None
        }
    );
}

#[test]
fn heredocs_in_run_copy_and_onbuild() {
    let src = "FROM a\nRUN <<EOT bash\n  set -e\n  echo hi\nEOT\nCOPY <<-A <<'B' /etc/\n\tone $X\nA\ntwo $X\nB\nONBUILD RUN <<EOF\necho later\nEOF\n";
    let df = parsed(src);
    let s = stage(&df, 0);
    let Instruction::Run(run) = &step(s, 0).instruction else {
        panic!("RUN")
    };
    assert_eq!(run.command, Command::Shell("<<EOT bash".into()));
    assert_eq!(
        run.heredocs.first().map(|h| h.content.as_str()),
        Some("  set -e\n  echo hi\n")
    );
    let Instruction::Copy(copy) = &step(s, 1).instruction else {
        panic!("COPY")
    };
    let docs: Vec<(&str, &str, bool)> = copy
        .files
        .heredocs
        .iter()
        .map(|h| (h.name.as_str(), h.content.as_str(), h.expand))
        .collect();
    assert_eq!(
        docs,
        vec![("A", "one $X\n", true), ("B", "two $X\n", false)]
    );
    let Instruction::Onbuild(onbuild) = &step(s, 2).instruction else {
        panic!("ONBUILD")
    };
    assert_eq!(onbuild.expression, "RUN <<EOF\necho later\nEOF");
    let Instruction::Run(trigger) = &onbuild.trigger.instruction else {
        panic!("trigger")
    };
    assert_eq!(
        trigger.heredocs.first().map(|h| h.content.as_str()),
        Some("echo later\n")
    );
}

#[test]
fn escape_directive_is_used_for_literal_checks() {
    // With a backtick escape, a backslash in a chmod-like value is plain text.
    let src = "# escape=`\nFROM mcr.microsoft.com/windows/nanoserver\nCOPY --chmod=755 a c:\\dest\\\nSHELL [\"powershell\", \"-command\"]\n";
    let df = parsed(src);
    let s = stage(&df, 0);
    let Instruction::Copy(copy) = &step(s, 0).instruction else {
        panic!("COPY")
    };
    assert_eq!(copy.files.dest.value, "c:\\dest\\");
}

#[test]
fn build_check_warnings_respect_the_check_directive() {
    let src = "FROM a as Builder\nMAINTAINER me\nCMD run\nFROM b AS builder\n";
    let rules = |df: &Dockerfile| -> Vec<String> {
        df.warnings
            .iter()
            .filter_map(|w| w.message.split(':').next().map(str::to_string))
            .collect()
    };
    let all = rules(&parsed(src));
    for rule in [
        "StageNameCasing",
        "FromAsCasing",
        "MaintainerDeprecated",
        "JSONArgsRecommended",
        "DuplicateStageName",
    ] {
        assert!(all.iter().any(|r| r == rule), "{rule} missing from {all:?}");
    }
    let skipped = rules(&parsed(&format!(
        "# check=skip=StageNameCasing,MaintainerDeprecated\n{src}"
    )));
    assert!(
        !skipped
            .iter()
            .any(|r| r == "StageNameCasing" || r == "MaintainerDeprecated"),
        "{skipped:?}"
    );
    assert!(skipped.iter().any(|r| r == "FromAsCasing"));
    assert!(rules(&parsed(&format!("# check=skip=all\n{src}"))).is_empty());
}

// ---- expansion ----

fn expanded(
    src: &str,
    stage_index: usize,
    step_index: usize,
    vars: &[(&str, &str)],
) -> (Instruction, Vec<String>, Vec<String>) {
    let df = parsed(src);
    let mut instruction = step(stage(&df, stage_index), step_index)
        .instruction
        .clone();
    let lexer = Lexer::new(df.directives.escape);
    let usage = instruction
        .expand(&lexer, &env(vars))
        .unwrap_or_else(|e| panic!("{}", e.render("Dockerfile", src)));
    (
        instruction,
        usage.used.into_iter().collect(),
        usage.unset.into_iter().collect(),
    )
}

#[test]
fn expansion_of_env_label_arg_user_workdir() {
    let (i, used, unset) = expanded(
        "FROM a\nENV A=\"$X y\" B='$X' $K=v\n",
        0,
        0,
        &[("X", "1"), ("K", "KEY")],
    );
    let Instruction::Env(e) = i else {
        panic!("ENV")
    };
    let vars: Vec<(&str, &str)> = e
        .vars
        .iter()
        .map(|kv| (kv.key.value.as_str(), kv.value.value.as_str()))
        .collect();
    assert_eq!(vars, vec![("A", "1 y"), ("B", "$X"), ("KEY", "v")]);
    assert_eq!(used, vec!["K", "X"]);
    assert!(unset.is_empty());

    let (i, _, _) = expanded(
        "FROM a\nENV LEGACY some \"quoted\" $X\n",
        0,
        0,
        &[("X", "x")],
    );
    let Instruction::Env(e) = i else {
        panic!("ENV")
    };
    assert_eq!(
        e.vars.first().map(|kv| kv.value.value.as_str()),
        Some("some quoted x")
    );

    let (i, _, unset) = expanded(
        "FROM a\nLABEL \"com.example.v\"=\"${VERSION:-dev}\"\n",
        0,
        0,
        &[],
    );
    let Instruction::Label(l) = i else {
        panic!("LABEL")
    };
    assert_eq!(
        l.labels
            .first()
            .map(|kv| (kv.key.value.as_str(), kv.value.value.as_str())),
        Some(("com.example.v", "dev"))
    );
    assert_eq!(unset, vec!["VERSION"]);

    let (i, _, _) = expanded("FROM a\nARG A=\"$B c\" D\n", 0, 0, &[("B", "b")]);
    let Instruction::Arg(a) = i else {
        panic!("ARG")
    };
    let decls: Vec<(&str, Option<&str>)> = a
        .args
        .iter()
        .map(|d| {
            (
                d.name.value.as_str(),
                d.default.as_ref().map(|v| v.value.as_str()),
            )
        })
        .collect();
    assert_eq!(decls, vec![("A", Some("b c")), ("D", None)]);

    let (i, _, _) = expanded(
        "FROM a\nUSER ${U}:${G}\n",
        0,
        0,
        &[("U", "app"), ("G", "staff")],
    );
    assert!(matches!(i, Instruction::User(u) if u.user.value == "app:staff"));
    let (i, _, _) = expanded("FROM a\nWORKDIR $HOME/src\n", 0, 0, &[("HOME", "/root")]);
    assert!(matches!(i, Instruction::Workdir(w) if w.path.value == "/root/src"));
}

#[test]
fn expansion_of_copy_add_expose_volume_stopsignal() {
    let src =
        "FROM a\nCOPY --from=build --chown=$U --chmod=$MODE --exclude=$EX ${SRC}/* \"$DEST\"\n";
    let vars = [
        ("U", "1000"),
        ("MODE", "u=rwX"),
        ("EX", "*.md"),
        ("SRC", "out"),
        ("DEST", "/opt/app dir/"),
    ];
    let (i, used, _) = expanded(src, 0, 0, &vars);
    let Instruction::Copy(c) = i else {
        panic!("COPY")
    };
    assert_eq!(c.from.map(|f| f.value), Some("build".into()));
    assert_eq!(c.chown.map(|f| f.value), Some("1000".into()));
    assert_eq!(c.chmod.map(|f| f.value), Some("u=rwX".into()));
    assert_eq!(c.excludes.first().map(|e| e.value.as_str()), Some("*.md"));
    assert_eq!(
        c.files.sources.first().map(|s| s.value.as_str()),
        Some("out/*")
    );
    assert_eq!(c.files.dest.value, "/opt/app dir/");
    assert_eq!(
        used,
        vec!["DEST", "EX", "MODE", "SRC", "U"],
        "--from is never expanded"
    );

    // A chmod that only becomes invalid after expansion is caught there.
    let df = parsed("FROM a\nCOPY --chmod=$MODE x /y\n");
    let mut copy = step(stage(&df, 0), 0).instruction.clone();
    let err = copy
        .expand(&Lexer::new('\\'), &env(&[("MODE", "999")]))
        .expect_err("bad chmod");
    assert!(
        err.to_string()
            .contains("flag --chmod invalid mode \"999\""),
        "{err}"
    );

    // Heredoc bodies: expanded (quotes kept) unless the delimiter was quoted.
    let src = "FROM a\nCOPY <<A <<'B' /d/\necho \"$X\"\nA\necho \"$X\"\nB\n";
    let (i, _, _) = expanded(src, 0, 0, &[("X", "hi")]);
    let Instruction::Copy(c) = i else {
        panic!("COPY")
    };
    let bodies: Vec<&str> = c
        .files
        .heredocs
        .iter()
        .map(|h| h.content.as_str())
        .collect();
    assert_eq!(bodies, vec!["echo \"hi\"\n", "echo \"$X\"\n"]);

    let sha = format!("sha256:{}", "0".repeat(64));
    let (i, _, _) = expanded(
        "FROM a\nADD --checksum=$SUM --chown=$U https://x/a.tgz /a\n",
        0,
        0,
        &[("SUM", &sha), ("U", "")],
    );
    let Instruction::Add(a) = i else {
        panic!("ADD")
    };
    assert_eq!(a.checksum.map(|c| c.value), Some(sha));
    assert_eq!(a.chown, None);

    let (i, _, _) = expanded(
        "FROM a\nEXPOSE $PORTS 53/udp\n",
        0,
        0,
        &[("PORTS", "80  443/tcp")],
    );
    let Instruction::Expose(e) = i else {
        panic!("EXPOSE")
    };
    assert_eq!(
        e.ports.iter().map(|p| p.value.as_str()).collect::<Vec<_>>(),
        vec!["80", "443/tcp", "53/udp"]
    );

    let (i, _, _) = expanded("FROM a\nVOLUME $DATA /logs\n", 0, 0, &[("DATA", "/data")]);
    let Instruction::Volume(v) = i else {
        panic!("VOLUME")
    };
    assert_eq!(
        v.paths.iter().map(|p| p.value.as_str()).collect::<Vec<_>>(),
        vec!["/data", "/logs"]
    );

    let (i, _, _) = expanded("FROM a\nSTOPSIGNAL $SIG\n", 0, 0, &[("SIG", "SIGQUIT")]);
    assert!(matches!(i, Instruction::Stopsignal(s) if s.signal.value == "SIGQUIT"));
    let df = parsed("FROM a\nSTOPSIGNAL $SIG\n");
    let mut stop = step(stage(&df, 0), 0).instruction.clone();
    assert!(stop
        .expand(&Lexer::new('\\'), &env(&[("SIG", "SIGWHAT")]))
        .is_err());
}

#[test]
fn expansion_of_from_and_mounts() {
    let df =
        parsed("ARG TAG=3.20\nFROM --platform=$TARGETPLATFORM alpine:$TAG AS x\nFROM $EMPTY\n");
    let meta = env(&[("TAG", "3.20"), ("TARGETPLATFORM", "linux/arm64")]);
    let lexer = Lexer::new('\\');
    let mut base = stage(&df, 0).base.clone();
    let usage = base.expand(&lexer, &meta).unwrap();
    assert_eq!(base.image.value, "alpine:3.20");
    assert_eq!(base.platform.map(|p| p.value), Some("linux/arm64".into()));
    assert_eq!(
        usage.used.into_iter().collect::<Vec<_>>(),
        vec!["TAG", "TARGETPLATFORM"]
    );
    let mut empty = stage(&df, 1).base.clone();
    let err = empty.expand(&lexer, &meta).expect_err("empty base");
    assert!(
        err.to_string().contains("expands to an empty name"),
        "{err}"
    );

    let src = "FROM a\nRUN --mount=type=$T,target=$DIR,id=$ID,mode=$MODE,uid=${UID} make\n";
    let (i, used, _) = expanded(
        src,
        0,
        0,
        &[
            ("T", "cache"),
            ("DIR", "/cache"),
            ("ID", "go"),
            ("MODE", "0700"),
            ("UID", "1000"),
        ],
    );
    let Instruction::Run(run) = i else {
        panic!("RUN")
    };
    let m = run.mounts.first().expect("mount");
    assert_eq!(
        (m.kind, m.target.as_deref(), m.id.as_deref(), m.mode, m.uid),
        (
            MountType::Cache,
            Some("/cache"),
            Some("go"),
            Some(0o700),
            Some(1000)
        )
    );
    assert!(
        !m.read_only,
        "cache mounts default to read-write once the type is known"
    );
    assert_eq!(used.len(), 5);
    // The command itself is left to the shell.
    assert_eq!(run.command, Command::Shell("make".into()));

    // Expanded values are checked against the allow-list of the expanded type.
    let df = parsed("FROM a\nRUN --mount=type=$T,target=/t,size=1g x\n");
    let mut run = step(stage(&df, 0), 0).instruction.clone();
    let err = run
        .expand(&Lexer::new('\\'), &env(&[("T", "bind")]))
        .expect_err("size on bind");
    assert!(
        err.to_string()
            .contains("`size` does not apply to a bind mount"),
        "{err}"
    );
    let mut run = step(stage(&df, 0), 0).instruction.clone();
    assert!(run
        .expand(&Lexer::new('\\'), &env(&[("T", "tmpfs")]))
        .is_ok());
}

#[test]
fn not_expanded_by_the_builder() {
    for src in [
        "FROM a\nRUN echo $HOME\n",
        "FROM a\nCMD echo $HOME\n",
        "FROM a\nENTRYPOINT [\"$HOME\"]\n",
        "FROM a\nONBUILD COPY $X /y\n",
        "FROM a\nMAINTAINER $ME\n",
    ] {
        let df = parsed(src);
        let before = step(stage(&df, 0), 0).instruction.clone();
        let mut after = before.clone();
        let usage = after
            .expand(
                &Lexer::new('\\'),
                &env(&[("HOME", "/root"), ("X", "x"), ("ME", "me")]),
            )
            .unwrap();
        assert_eq!(before, after, "{src:?}");
        assert!(usage.used.is_empty() && usage.unset.is_empty(), "{src:?}");
    }
}

#[test]
fn expansion_errors_point_at_the_word() {
    let src = "FROM a\nWORKDIR ${DIR:?is required}\n";
    let df = parsed(src);
    let mut workdir = step(stage(&df, 0), 0).instruction.clone();
    let err = workdir
        .expand(&Lexer::new('\\'), &EmptyEnv)
        .expect_err("required");
    assert!(
        matches!(err.kind, ParseErrorKind::Expansion { .. }),
        "{err:?}"
    );
    assert_eq!(text(src, err.span), "${DIR:?is required}");
}

// ---- corpus and robustness ----

#[test]
fn real_world_dockerfiles_type_check() {
    let Some(dir) = common::conformance_dir("real-world") else {
        return;
    };
    let mut total = 0;
    let mut failures = Vec::new();
    for owner in common::subdirs(&dir) {
        let mut files: Vec<_> = std::fs::read_dir(&owner)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for path in files {
            let src = common::read(&path);
            total += 1;
            match parse(&src) {
                Ok(df) => {
                    // Expansion with nothing set must not panic; `${X:?}` may legitimately fail.
                    let lexer = Lexer::new(df.directives.escape);
                    for stage in &df.stages {
                        for step in &stage.instructions {
                            let _ = step.instruction.clone().expand(&lexer, &EmptyEnv);
                        }
                    }
                }
                Err(e) => failures.push(e.render(&path.display().to_string(), &src)),
            }
        }
    }
    common::report("real-world typed parse", total, &failures);
}

/// A tiny deterministic generator (xorshift) for the mutation pass.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_inputs_never_panic() {
    const PIECES: &[&str] = &[
        "--mount=",
        "type=",
        "cache",
        "secret",
        ",",
        "\"",
        "'",
        "=",
        "$",
        "${",
        "}",
        "\\\n",
        "<<EOF\n",
        "EOF\n",
        "[",
        "]",
        "\n",
        " AS ",
        "ONBUILD ",
        "HEALTHCHECK ",
        "--interval=",
        "1.5h",
        "-",
        "0",
        "CMD ",
        "COPY ",
        "--chmod=",
        "u+",
        "µs",
        "é",
        "\t",
        "ARG ",
        "ENV ",
        "=\"",
        "FROM ",
        "--",
        "#",
        "`",
    ];
    let seeds = [
        MULTI_STAGE,
        "FROM a\nRUN --mount=type=cache,target=/c x\nCOPY <<A /d\nx\nA\nHEALTHCHECK --retries=1 CMD y\n",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut checked = 0;
    for seed in seeds {
        for _ in 0..1500 {
            let mut s: Vec<char> = seed.chars().collect();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(s.len() + 1);
                match rng.below(3) {
                    0 => {
                        let piece = PIECES[rng.below(PIECES.len())];
                        for (k, c) in piece.chars().enumerate() {
                            s.insert((at + k).min(s.len()), c);
                        }
                    }
                    1 if at < s.len() => {
                        let end = (at + 1 + rng.below(8)).min(s.len());
                        s.drain(at..end);
                    }
                    _ => s.truncate(at),
                }
            }
            let src: String = s.into_iter().collect();
            match parse(&src) {
                Ok(df) => {
                    let lexer = Lexer::new(df.directives.escape);
                    let vars = env(&[("X", "1"), ("T", "cache")]);
                    for stage in &df.stages {
                        let _ = stage.base.clone().expand(&lexer, &vars);
                        for step in &stage.instructions {
                            let _ = step.instruction.clone().expand(&lexer, &vars);
                        }
                    }
                }
                Err(e) => assert!(!e.render("Dockerfile", &src).is_empty()),
            }
            checked += 1;
        }
    }
    println!("mutation pass: {checked} inputs");
}
