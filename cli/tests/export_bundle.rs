//! End-to-end test of `rbuild export-bundle IMAGE DIR` with the real binary and the real runc:
//! a busybox base image built by rbuild itself, an image on it with ENV, WORKDIR and CMD, its
//! bundle's `config.json` read back as an OCI runtime spec, and the bundle run by
//! `runc run --bundle DIR ID`, whose output shows the image's environment, working directory
//! and user. Also the refusals (a non-empty directory, an unknown image).
//!
//! Needs root and busybox-static (the base image) and runc; without them it says SKIPPED,
//! and under CI=true it fails instead.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{ok, skip, text, Base, Fixture};

/// The base image, `base`: the busybox rootfs with the CMD of Docker Hub's busybox.
const BASE: Base = Base {
    tag: "base",
    dockerfile: "FROM scratch\nCOPY . /\nCMD [\"/bin/sh\"]\n",
};

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
    let Some(fx) = Fixture::with_base("runc", &BASE) else {
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
