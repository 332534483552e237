//! Planning: target pruning, stage order, and BuildKit's ARG/ENV scoping, on small Dockerfiles.

use std::collections::BTreeMap;

use rbuild_parser::instruction::{parse, Instruction};
use rbuild_solver::{
    plan, BaseImageInfo, BaseImageResolver, BuildOptions, BuildPlan, Platform, SolveError,
    StageBase,
};

/// Base images known to the tests: `envimg` has ENV, `trig` has ONBUILD triggers.
struct Images;

impl BaseImageResolver for Images {
    fn resolve(&mut self, reference: &str) -> Result<BaseImageInfo, String> {
        match reference {
            "busybox" | "alpine:3" | "img-1.0" => Ok(BaseImageInfo::default()),
            "envimg" => Ok(BaseImageInfo {
                env: vec![
                    ("PATH".into(), "/bin".into()),
                    ("FROM_IMAGE".into(), "yes".into()),
                ],
                onbuild: vec![],
            }),
            "trig" => Ok(BaseImageInfo {
                env: vec![],
                onbuild: vec!["ENV TRIGGERED=1".into(), "LABEL t=$TRIGGERED".into()],
            }),
            other => Err(format!("no such image {other:?} in the test store")),
        }
    }
}

fn build(src: &str, args: &[(&str, &str)], target: Option<&str>) -> Result<BuildPlan, SolveError> {
    let file = parse(src).unwrap_or_else(|e| panic!("{}", e.render("Dockerfile", src)));
    let opts = BuildOptions {
        build_args: args
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect::<BTreeMap<_, _>>(),
        target: target.map(str::to_string),
        platform: Platform::parse("linux/amd64").unwrap_or_default(),
        build_platform: Platform::parse("linux/amd64").unwrap_or_default(),
    };
    plan(&file, &opts, &mut Images)
}

fn ok(src: &str, args: &[(&str, &str)], target: Option<&str>) -> BuildPlan {
    build(src, args, target).unwrap_or_else(|e| panic!("{e}"))
}

/// The value of the last ENV/LABEL key=value of the target stage's step `n`.
fn kv(plan: &BuildPlan, stage: usize, n: usize) -> Vec<(String, String)> {
    let step = &plan
        .stage(stage)
        .unwrap_or_else(|| panic!("stage {stage} not planned"))
        .steps[n];
    match &step.step.instruction {
        Instruction::Env(e) => e
            .vars
            .iter()
            .map(|v| (v.key.value.clone(), v.value.value.clone()))
            .collect(),
        Instruction::Label(l) => l
            .labels
            .iter()
            .map(|v| (v.key.value.clone(), v.value.value.clone()))
            .collect(),
        other => panic!("step {n} is {other:?}"),
    }
}

fn pair(k: &str, v: &str) -> Vec<(String, String)> {
    vec![(k.to_string(), v.to_string())]
}

#[test]
fn only_the_stages_the_target_needs_are_planned() {
    let src = "FROM busybox AS broken\nARG X\nENV Y=\"${X:?X must be set}\"\n\
               FROM busybox AS base\nENV A=1\n\
               FROM base AS app\nCOPY --from=1 /x /y\n\
               FROM busybox AS other\nCOPY --from=app /a /b\n";
    let p = ok(src, &[], Some("app"));
    let planned: Vec<usize> = p.stages.iter().map(|s| s.index).collect();
    assert_eq!(planned, [1, 2]);
    assert_eq!(p.target, 2);
    assert_eq!(
        p.stage(2).map(|s| s.base.clone()),
        Some(StageBase::Stage(1))
    );
    // The default target is the last stage, which needs app and base, not the broken one.
    let p = ok(src, &[], None);
    assert_eq!(
        p.stages.iter().map(|s| s.index).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // Asking for the broken stage fails on its expansion.
    let err = build(src, &[], Some("broken"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("X must be set"), "{err}");
}

#[test]
fn stage_order_puts_copy_from_sources_first() {
    let src = "FROM busybox AS a\nCOPY --from=b /x /x\nFROM busybox AS b\nENV B=1\n";
    let p = ok(src, &[], Some("a"));
    assert_eq!(p.stages.iter().map(|s| s.index).collect::<Vec<_>>(), [1, 0]);
}

#[test]
fn cycles_and_bad_targets_are_errors() {
    let src = "FROM busybox AS a\nCOPY --from=b /x /x\nFROM busybox AS b\nCOPY --from=a /y /y\n";
    assert!(matches!(build(src, &[], None), Err(SolveError::Cycle(_))));
    let src = "FROM busybox AS a\nCOPY --from=a /x /x\n";
    assert!(matches!(
        build(src, &[], None),
        Err(SolveError::ForwardStageReference { .. })
    ));
    let err = build("FROM busybox AS a\n", &[], Some("nope"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert_eq!(err, "target stage \"nope\" could not be found (stages: a)");
    let err = build("FROM nosuch\n", &[], None)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("no such image \"nosuch\""), "{err}");
}

#[test]
fn arg_and_env_scoping_follow_buildkit() {
    // (Dockerfile, build args, expected key/value of the last stage's step n)
    type Case<'a> = (
        &'a str,
        &'a [(&'a str, &'a str)],
        usize,
        Vec<(String, String)>,
    );
    let cases: &[Case] = &[
        // Meta ARG in FROM; invisible in the stage until re-declared.
        (
            "ARG V=1.0\nFROM img-$V\nENV X=${V:-unset}\n",
            &[],
            0,
            pair("X", "unset"),
        ),
        (
            "ARG V=1.0\nFROM img-$V\nARG V\nENV X=$V\n",
            &[],
            1,
            pair("X", "1.0"),
        ),
        // --build-arg overrides a meta default and a stage default.
        (
            "ARG V=0.9\nFROM img-$V\nARG V\nENV X=$V\n",
            &[("V", "1.0")],
            1,
            pair("X", "1.0"),
        ),
        (
            "FROM busybox\nARG V=def\nENV X=$V\n",
            &[("V", "cli")],
            1,
            pair("X", "cli"),
        ),
        (
            "FROM busybox\nARG V=def\nENV X=$V\n",
            &[],
            1,
            pair("X", "def"),
        ),
        // Of an ENV and an ARG of the same name, the later wins (checked with Docker 20.10's
        // BuildKit); the ARG's value is the build arg's.
        (
            "FROM busybox\nENV V=env\nARG V=arg\nENV X=$V\n",
            &[("V", "cli")],
            2,
            pair("X", "cli"),
        ),
        (
            "FROM busybox\nARG V=arg\nENV V=env\nENV X=$V\n",
            &[("V", "cli")],
            2,
            pair("X", "env"),
        ),
        // An ARG without a value and without a build-arg stays unset.
        (
            "FROM busybox\nARG V\nENV X=${V-unset}\n",
            &[],
            1,
            pair("X", "unset"),
        ),
        // ARG defaults see earlier ARGs and ENVs.
        (
            "FROM busybox\nENV A=a\nARG B=${A}b\nENV X=$B\n",
            &[],
            2,
            pair("X", "ab"),
        ),
        // Values on one ENV line see the environment from before the line.
        (
            "FROM busybox\nENV A=old\nENV A=new X=$A\n",
            &[],
            1,
            vec![("A".into(), "new".into()), ("X".into(), "old".into())],
        ),
        // The base image's ENV is in scope.
        (
            "FROM envimg\nENV X=$FROM_IMAGE:$PATH\n",
            &[],
            0,
            pair("X", "yes:/bin"),
        ),
        // Stage bases pass their ENV down.
        (
            "FROM busybox AS a\nENV A=from-a\nFROM a\nENV X=$A\n",
            &[],
            0,
            pair("X", "from-a"),
        ),
        // Automatic platform ARGs, declared in the stage.
        (
            "FROM busybox\nARG TARGETARCH\nENV X=$TARGETARCH\n",
            &[],
            1,
            pair("X", "amd64"),
        ),
        (
            "ARG TARGETPLATFORM\nFROM busybox\nARG TARGETPLATFORM\nENV X=$TARGETPLATFORM\n",
            &[],
            1,
            pair("X", "linux/amd64"),
        ),
    ];
    for (src, args, n, want) in cases {
        let p = ok(src, args, None);
        assert_eq!(&kv(&p, p.target, *n), want, "{src:?} with {args:?}");
    }
}

#[test]
fn run_steps_see_args_but_env_records_only_env() {
    let p = ok(
        "FROM busybox\nARG A=1\nENV E=2\nRUN echo\n",
        &[("http_proxy", "http://p")],
        None,
    );
    let run = &p.stages[0].steps[2];
    assert_eq!(
        run.args,
        [
            ("http_proxy".to_string(), "http://p".to_string()),
            ("A".to_string(), "1".to_string())
        ]
    );
    assert_eq!(run.env, [("E".to_string(), "2".to_string())]);
    assert_eq!(p.stages[0].env, [("E".to_string(), "2".to_string())]);
}

#[test]
fn unused_build_args_are_reported() {
    let p = ok(
        "ARG USED\nFROM busybox\nARG ALSO\n",
        &[
            ("USED", "1"),
            ("ALSO", "2"),
            ("NOPE", "3"),
            ("HTTP_PROXY", "x"),
        ],
        None,
    );
    assert_eq!(p.unused_build_args, ["NOPE"]);
}

#[test]
fn onbuild_triggers_run_first_and_are_inherited() {
    let p = ok("FROM trig\nENV AFTER=1\n", &[], None);
    let steps = &p.stages[0].steps;
    assert!(steps[0].from_onbuild && steps[1].from_onbuild && !steps[2].from_onbuild);
    assert_eq!(kv(&p, 0, 1), pair("t", "1"));
    let p = ok(
        "FROM busybox AS a\nONBUILD ENV X=1\nFROM a\nENV Y=$X\n",
        &[],
        None,
    );
    assert_eq!(p.stages[1].steps.len(), 2);
    assert_eq!(kv(&p, 1, 1), pair("Y", "1"));
    assert_eq!(p.stages[0].onbuild, ["ENV X=1"]);
}

#[test]
fn variables_used_are_recorded() {
    let p = ok("FROM busybox\nARG A=1\nARG B=2\nENV X=$A\n", &[], None);
    let used: Vec<&str> = p.stages[0].steps[2]
        .vars_used
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(used, ["A"]);
}

#[test]
fn of_an_arg_and_an_env_of_one_name_the_later_expands() {
    // What Docker 20.10's BuildKit gives (testdata/build/run-basics records the RUN side).
    let src = "FROM busybox\nENV E=env\nARG E=arg\nLABEL e=$E\nARG F=arg\nENV F=env\nLABEL f=$F\n";
    let p = ok(src, &[], None);
    assert_eq!(kv(&p, 0, 2), pair("e", "arg"));
    assert_eq!(kv(&p, 0, 5), pair("f", "env"));
    // A build arg's value counts as the ARG's.
    let p = ok(src, &[("E", "cli")], None);
    assert_eq!(kv(&p, 0, 2), pair("e", "cli"));
}
