//! The build cases of `testdata/build/`, checked against the root filesystems Docker's BuildKit
//! produced for them (`expected/TARGET.tree`).
//!
//! For each case: the context is copied to a temporary directory and its `setup.sh` run there;
//! the Dockerfile is parsed and planned (`rbuild_solver::plan`, with a resolver that knows
//! `busybox` and `scratch`); each needed stage starts from an empty directory (`scratch`), a
//! copy of the busybox root filesystem (`testdata/base/make-busybox-rootfs.sh`) or a copy of
//! the earlier stage's directory, and its steps' file effects are applied — `COPY`/`ADD` from
//! the context (with its `.dockerignore`) or, with `--from`, from the earlier stage's
//! directory, and `WORKDIR`'s directory (owned by the `USER` in effect); other instructions
//! change nothing on disk. The target's tree, minus the entries identical in the busybox base,
//! must equal BuildKit's listing line for line.
//!
//! Needs root (owners) and Debian's busybox-static (`/bin/busybox`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use rbuild_context::{load_ignore_patterns, PatternMatcher};
use rbuild_executor::tree::{list_tree, minus};
use rbuild_executor::{chmod, copy, ensure_workdir, resolve_chown, resolve_dest, CopyOp};
use rbuild_fsutil::Root;
use rbuild_parser::instruction::{parse, Instruction};
use rbuild_solver::plan::resolve_from;
use rbuild_solver::{
    plan, BaseImageInfo, BaseImageResolver, BuildOptions, FromSource, Platform, StageBase,
};

/// The cases with file effects. (All of them: `metadata` is mostly config, but its WORKDIRs
/// under `USER 1000:1000` leave directories behind, which BuildKit recorded too.)
const CASES: &[&str] = &[
    "copy-basics",
    "chown",
    "dest-symlink",
    "hardlinks",
    "dockerignore",
    "add-archive",
    "multistage",
    "metadata",
];

/// Differences from BuildKit that are deliberate: `(case, target, line, reason)`. A line listed
/// here may be missing from, or extra in, rbuild's result. None so far.
const EXCEPTIONS: &[(&str, &str, &str, &str)] = &[];

struct TestImages;

impl BaseImageResolver for TestImages {
    fn resolve(&mut self, reference: &str) -> Result<BaseImageInfo, String> {
        match reference {
            "busybox" | "busybox:latest" => Ok(BaseImageInfo::default()),
            other => Err(format!("no image {other:?} in the test store")),
        }
    }
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    run(Command::new("cp").arg("-a").arg("--").arg(from).arg(to))
}

fn am_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// A stage's directory and what later stages inherit from it.
#[derive(Clone)]
struct StageState {
    dir: PathBuf,
    workdir: String,
    user: Option<String>,
}

/// Builds `target` of the case in `case_dir` (context already prepared in `ctx`) under `work`;
/// returns the target stage's directory.
fn build(
    case_dir: &Path,
    ctx: &Path,
    busybox: &Path,
    work: &Path,
    target: Option<&str>,
) -> Result<PathBuf, String> {
    let dockerfile = case_dir.join("Dockerfile");
    let text = std::fs::read_to_string(&dockerfile)
        .map_err(|e| format!("{}: {e}", dockerfile.display()))?;
    let file = parse(&text).map_err(|e| e.render("Dockerfile", &text))?;
    let platform = Platform::parse("linux/amd64").unwrap_or_default();
    let opts = BuildOptions {
        build_args: BTreeMap::new(),
        target: target.map(str::to_string),
        platform: platform.clone(),
        build_platform: platform,
    };
    let plan = plan(&file, &opts, &mut TestImages).map_err(|e| e.to_string())?;
    let ignore = match load_ignore_patterns(&dockerfile, ctx).map_err(|e| e.to_string())? {
        Some(f) => Some(PatternMatcher::new(&f.patterns).map_err(|e| e.to_string())?),
        None => None,
    };
    let ctx_root = Root::open(ctx).map_err(|e| e.to_string())?;
    let mut stages: HashMap<usize, StageState> = HashMap::new();
    for stage in &plan.stages {
        let dir = work.join(format!("stage-{}", stage.index));
        let mut state = match &stage.base {
            StageBase::Scratch => {
                std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
                StageState {
                    dir,
                    workdir: "/".into(),
                    user: None,
                }
            }
            StageBase::Image(name) if name == "busybox" => {
                copy_tree(busybox, &dir)?;
                StageState {
                    dir,
                    workdir: "/".into(),
                    user: None,
                }
            }
            StageBase::Image(name) => return Err(format!("unexpected base image {name:?}")),
            StageBase::Stage(parent) => {
                let p = stages
                    .get(parent)
                    .ok_or_else(|| format!("stage {parent} not built"))?
                    .clone();
                copy_tree(&p.dir, &dir)?;
                StageState { dir, ..p }
            }
        };
        let root = Root::open(&state.dir).map_err(|e| e.to_string())?;
        for planned in &stage.steps {
            let step = &planned.step;
            let fail = |e: rbuild_executor::ExecError| format!("{}: {e}", step.original.trim());
            match &step.instruction {
                Instruction::Copy(c) => {
                    let (src_root, keep_owners, ignore) = match &c.from {
                        None => (
                            ctx_root.try_clone().map_err(|e| e.to_string())?,
                            false,
                            ignore.clone(),
                        ),
                        Some(from) => match resolve_from(&file, &from.value) {
                            Some(FromSource::Stage(j)) => {
                                let s = stages
                                    .get(&j)
                                    .ok_or_else(|| format!("--from stage {j} not built"))?;
                                (Root::open(&s.dir).map_err(|e| e.to_string())?, true, None)
                            }
                            other => return Err(format!("unsupported --from {other:?}")),
                        },
                    };
                    let op = CopyOp {
                        sources: c.files.sources.iter().map(|s| s.value.clone()).collect(),
                        heredocs: c
                            .files
                            .heredocs
                            .iter()
                            .map(|h| (h.name.clone(), h.content.clone()))
                            .collect(),
                        dest: resolve_dest(&state.workdir, &c.files.dest.value),
                        chown: c
                            .chown
                            .as_ref()
                            .map(|s| resolve_chown(&s.value, &root))
                            .transpose()
                            .map_err(fail)?,
                        chmod: c
                            .chmod
                            .as_ref()
                            .map(|s| chmod::parse(&s.value))
                            .transpose()
                            .map_err(fail)?,
                        ignore,
                        excludes: c.excludes.iter().map(|s| s.value.clone()).collect(),
                        parents: c.parents,
                        link: c.link,
                        keep_owners,
                        ..CopyOp::default()
                    };
                    copy(&op, &src_root, &root).map_err(fail)?;
                }
                Instruction::Add(a) => {
                    let op = CopyOp {
                        sources: a.files.sources.iter().map(|s| s.value.clone()).collect(),
                        heredocs: a
                            .files
                            .heredocs
                            .iter()
                            .map(|h| (h.name.clone(), h.content.clone()))
                            .collect(),
                        dest: resolve_dest(&state.workdir, &a.files.dest.value),
                        chown: a
                            .chown
                            .as_ref()
                            .map(|s| resolve_chown(&s.value, &root))
                            .transpose()
                            .map_err(fail)?,
                        chmod: a
                            .chmod
                            .as_ref()
                            .map(|s| chmod::parse(&s.value))
                            .transpose()
                            .map_err(fail)?,
                        ignore: ignore.clone(),
                        excludes: a.excludes.iter().map(|s| s.value.clone()).collect(),
                        add: true,
                        unpack_archives: a.unpack.unwrap_or(true),
                        link: a.link,
                        checksum: a.checksum.as_ref().map(|s| s.value.clone()),
                        ..CopyOp::default()
                    };
                    copy(&op, &ctx_root, &root).map_err(fail)?;
                }
                Instruction::Workdir(w) => {
                    let wd = resolve_dest(&state.workdir, &w.path.value);
                    let wd = if wd.len() > 1 {
                        wd.trim_end_matches('/').to_string()
                    } else {
                        wd
                    };
                    let owner = state
                        .user
                        .as_ref()
                        .map(|u| resolve_chown(u, &root))
                        .transpose()
                        .map_err(fail)?;
                    ensure_workdir(&root, &wd, owner).map_err(fail)?;
                    state.workdir = wd;
                }
                Instruction::User(u) => state.user = Some(u.user.value.clone()),
                _ => {}
            }
        }
        stages.insert(stage.index, state);
    }
    stages
        .get(&plan.target)
        .map(|s| s.dir.clone())
        .ok_or_else(|| "target not built".to_string())
}

/// Builds one target of one case and compares; `Ok(())` or a description of the differences.
fn check(
    case: &str,
    target: &str,
    tmp: &Path,
    busybox: &Path,
    base: &BTreeMap<String, String>,
) -> Result<(), String> {
    let case_dir = testdata().join("build").join(case);
    let name = if target == "-" { "final" } else { target };
    let work = tmp.join(format!("{case}-{name}"));
    std::fs::create_dir(&work).map_err(|e| e.to_string())?;
    let ctx = work.join("context");
    copy_tree(&case_dir.join("context"), &ctx)?;
    let setup = case_dir.join("setup.sh");
    if setup.exists() {
        run(Command::new("sh").arg(&setup).current_dir(&ctx))?;
    }
    let dir = build(
        &case_dir,
        &ctx,
        busybox,
        &work,
        (target != "-").then_some(target),
    )?;
    let root = Root::open(&dir).map_err(|e| e.to_string())?;
    let got = minus(&list_tree(&root).map_err(|e| e.to_string())?, base);
    let expected_path = case_dir.join("expected").join(format!("{name}.tree"));
    let expected: Vec<String> = std::fs::read_to_string(&expected_path)
        .map_err(|e| format!("{}: {e}", expected_path.display()))?
        .lines()
        .map(str::to_string)
        .collect();
    let excepted = |line: &str| {
        EXCEPTIONS
            .iter()
            .any(|(c, t, l, _)| *c == case && *t == name && *l == line)
    };
    let missing: Vec<&String> = expected
        .iter()
        .filter(|l| !got.contains(l) && !excepted(l))
        .collect();
    let extra: Vec<&String> = got
        .iter()
        .filter(|l| !expected.contains(l) && !excepted(l))
        .collect();
    if missing.is_empty() && extra.is_empty() {
        return Ok(());
    }
    let mut msg = String::new();
    for l in missing {
        msg.push_str(&format!("\n  - {l}"));
    }
    for l in extra {
        msg.push_str(&format!("\n  + {l}"));
    }
    Err(format!(
        "differs from BuildKit (- BuildKit only, + rbuild only):{msg}"
    ))
}

#[test]
fn buildkit_cases() -> Result<(), String> {
    if !am_root() {
        eprintln!("buildkit cases: skipped (owners need root)");
        return Ok(());
    }
    if !Path::new("/bin/busybox").exists() {
        return Err("needs /bin/busybox: apt-get install busybox-static".into());
    }
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let busybox = tmp.path().join("busybox-rootfs");
    run(Command::new("bash")
        .arg(testdata().join("base/make-busybox-rootfs.sh"))
        .arg(&busybox))?;
    let base =
        list_tree(&Root::open(&busybox).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let mut passed = 0;
    let mut failures = Vec::new();
    for case in CASES {
        let targets_file = testdata().join("build").join(case).join("targets");
        let targets: Vec<String> = match std::fs::read_to_string(&targets_file) {
            Ok(t) => t.split_whitespace().map(str::to_string).collect(),
            Err(_) => vec!["-".to_string()],
        };
        let mut case_ok = true;
        for target in &targets {
            if let Err(e) = check(case, target, tmp.path(), &busybox, &base) {
                case_ok = false;
                failures.push(format!("{case} (target {target}): {e}"));
            }
        }
        if case_ok {
            passed += 1;
        }
    }
    println!("buildkit cases: {passed} of {} pass", CASES.len());
    for (case, target, line, reason) in EXCEPTIONS {
        println!("  exception {case}/{target}: {line:?}: {reason}");
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}
