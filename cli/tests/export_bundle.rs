//! End-to-end test of `rbuild export-bundle IMAGE DIR` with the real binary and the real runc:
//! a busybox base image built by rbuild itself, an image on it with ENV, WORKDIR and CMD, its
//! bundle's `config.json` read back as an OCI runtime spec, and the bundle run by
//! `runc run --bundle DIR ID`, whose output shows the image's environment, working directory
//! and user. Also the refusals (a non-empty directory, an unknown image).
//!
//! Needs root and busybox-static (the base image) and runc; without them it says SKIPPED,
//! and under CI=true it fails instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn under_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn skip(why: &str) {
    assert!(
        !under_ci(),
        "{why} under CI=true (scripts/install-test-deps.sh installs what the tests need)"
    );
    eprintln!("SKIPPED: {why}");
}

/// A scratch directory and store with `base` (busybox) built in it; removed on drop.
struct Fixture {
    dir: PathBuf,
    root: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Fixture {
    fn new(name: &str) -> Option<Fixture> {
        if !rustix::process::geteuid().is_root() || !Path::new("/bin/busybox").exists() {
            skip("needs root and /bin/busybox");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("rbuild-bundle-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let fx = Fixture {
            root: dir.join("store"),
            dir,
        };
        // The base image as the other e2e tests make it: FROM scratch + COPY of the rootfs
        // that testdata/base/make-busybox-rootfs.sh makes.
        let rootfs = fx.dir.join("busybox");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/base/make-busybox-rootfs.sh");
        assert!(Command::new(script)
            .arg(&rootfs)
            .status()
            .is_ok_and(|s| s.success()));
        let dockerfile = fx.dir.join("base.Dockerfile");
        std::fs::write(&dockerfile, "FROM scratch\nCOPY . /\nCMD [\"/bin/sh\"]\n")
            .unwrap_or_else(|e| panic!("{e}"));
        ok(&fx.rbuild(&[
            "build",
            "-q",
            "-t",
            "base",
            "-f",
            &dockerfile.display().to_string(),
            &rootfs.display().to_string(),
        ]));
        Some(fx)
    }

    fn rbuild(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running rbuild: {e}"))
    }

    /// Builds `dockerfile` (an empty context) as `tag`.
    fn build(&self, tag: &str, dockerfile: &str) {
        let ctx = self.dir.join(format!("ctx-{tag}"));
        std::fs::create_dir_all(&ctx).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap_or_else(|e| panic!("{e}"));
        ok(&self.rbuild(&["build", "-q", "-t", tag, &ctx.display().to_string()]));
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "rbuild failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

const RUNC: &str = "/usr/sbin/runc";

/// runc with its state kept in the fixture, and the container deleted on drop.
struct Container<'a> {
    state: &'a Path,
    id: String,
}

impl Container<'_> {
    fn runc(&self, args: &[&str]) -> Output {
        Command::new(RUNC)
            .arg("--root")
            .arg(self.state)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running runc: {e}"))
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.runc(&["delete", "-f", &self.id]);
    }
}

#[test]
fn exported_bundle_runs_under_runc() {
    let Some(fx) = Fixture::new("runc") else {
        return;
    };
    fx.build(
        "img",
        "FROM base\nENV GREETING=hi\nWORKDIR /w\nCMD [\"sh\",\"-c\",\"echo $GREETING from $(pwd) as $(id -u)\"]\n",
    );
    let bundle = fx.dir.join("bundle");
    let out = ok(&fx.rbuild(&["export-bundle", "img", &bundle.display().to_string()]));
    assert!(
        out.contains("Exported img") && out.contains("config.json") && out.contains("rootfs"),
        "{out}"
    );

    let spec = oci_spec::runtime::Spec::load(bundle.join("config.json"))
        .unwrap_or_else(|e| panic!("config.json is not a runtime spec: {e}"));
    assert_eq!(spec.version(), "1.0.2");
    assert_eq!(
        spec.root().as_ref().map(|r| r.path().clone()),
        Some(PathBuf::from("rootfs"))
    );
    let process = spec.process().clone().unwrap_or_default();
    assert_eq!(
        process.args().clone().unwrap_or_default(),
        ["sh", "-c", "echo $GREETING from $(pwd) as $(id -u)"]
    );
    let env = process.env().clone().unwrap_or_default();
    assert!(env.iter().any(|e| e == "GREETING=hi"), "{env:?}");
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");
    assert_eq!(process.cwd(), Path::new("/w"));
    assert_eq!((process.user().uid(), process.user().gid()), (0, 0));
    assert!(bundle.join("rootfs/bin/busybox").is_file());
    assert!(bundle.join("rootfs/w").is_dir());

    // The same directory again is refused (it is no longer empty), as is an unknown image.
    let again = fx.rbuild(&["export-bundle", "img", &bundle.display().to_string()]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("not empty"),
        "{}",
        text(&again.stderr)
    );
    let missing = fx.rbuild(&[
        "export-bundle",
        "nosuchimage",
        &fx.dir.join("other").display().to_string(),
    ]);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("no such image: nosuchimage"),
        "{}",
        text(&missing.stderr)
    );

    if !Path::new(RUNC).exists() {
        skip("runc not installed");
        return;
    }
    let state = fx.dir.join("runc-state");
    let container = Container {
        state: &state,
        id: format!("rbuild-bundle-test-{}", std::process::id()),
    };
    let run = container.runc(&[
        "run",
        "--bundle",
        &bundle.display().to_string(),
        &container.id,
    ]);
    assert!(
        run.status.success(),
        "runc run failed ({}):\n{}{}",
        run.status,
        text(&run.stdout),
        text(&run.stderr)
    );
    assert_eq!(text(&run.stdout).trim(), "hi from /w as 0");
    // `runc delete -f` runs when `container` drops (runc run removes a container that exited
    // by itself; the delete covers one left behind by a failure above).
}
