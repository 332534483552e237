//! End-to-end tests of the real `rbuild` binary's image commands and build outputs: images, tag,
//! rmi, inspect, history, save/load round trips, `-o` outputs checked by skopeo, umoci and
//! oci-image-tool, `--iidfile`/`--metadata-file`, `-f -`, and build errors with their location.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{ok, output_with_input, rbuild_command, text, tool, Base, Fixture};

/// `busybox:latest` with the CMD of Docker Hub's busybox.
const BUSYBOX_SH: Base = Base {
    tag: "busybox",
    dockerfile: "FROM scratch\nCOPY . /\nCMD [\"/bin/sh\"]\n",
};

fn rbuild_in(root: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    output_with_input(&mut rbuild_command(root, args), stdin)
}

#[test]
fn image_commands_round_trip() {
    let Some(fx) = Fixture::with_base("cmds", &BUSYBOX_SH) else {
        return;
    };
    let ctx = fx.context(
        "app",
        "FROM busybox\nLABEL app=1\nCOPY hello.txt /hello.txt\nCMD [\"cat\", \"/hello.txt\"]\n",
        &[("hello.txt", "hi\n")],
    );
    let iid = fx.dir.join("iid");
    let meta = fx.dir.join("meta.json");
    // The shorthand `rbuild [flags] CONTEXT`, with --iidfile and --metadata-file.
    let id = ok(&fx.rbuild(&[
        "-q",
        "-t",
        "app:1",
        "--iidfile",
        &iid.display().to_string(),
        "--metadata-file",
        &meta.display().to_string(),
        &ctx,
    ]));
    let id = id.trim().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    assert_eq!(std::fs::read_to_string(&iid).unwrap_or_default(), id);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta).unwrap_or_default())
            .unwrap_or_default();
    assert_eq!(meta["containerimage.config.digest"], id.as_str());
    assert_eq!(meta["image.name"], "docker.io/library/app:1");

    let images = ok(&fx.rbuild(&["images"]));
    assert!(
        images
            .lines()
            .any(|l| l.starts_with("app ") && l.contains(" 1 ") && l.contains(&id[7..19])),
        "{images}"
    );
    assert!(
        images
            .lines()
            .any(|l| l.starts_with("busybox ") && l.contains("latest")),
        "{images}"
    );

    ok(&fx.rbuild(&["tag", "app:1", "registry.example.com:5000/team/app:v2"]));
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&fx.rbuild(&["inspect", "app:1"]))).unwrap_or_default();
    assert_eq!(inspect[0]["Id"], id.as_str());
    let tags: Vec<&str> = inspect[0]["RepoTags"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    assert!(
        tags.contains(&"app:1") && tags.contains(&"registry.example.com:5000/team/app:v2"),
        "{tags:?}"
    );
    assert_eq!(inspect[0]["Config"]["Labels"]["app"], "1");
    assert_eq!(inspect[0]["Config"]["Cmd"][0], "cat");
    assert_eq!(inspect[0]["Os"], "linux");
    // By ID prefix too.
    let by_id: serde_json::Value =
        serde_json::from_str(&ok(&fx.rbuild(&["inspect", &id[7..19]]))).unwrap_or_default();
    assert_eq!(by_id[0]["Id"], id.as_str());

    let history = ok(&fx.rbuild(&["history", "app:1"]));
    assert!(
        history.contains("COPY hello.txt /hello.txt # buildkit") && history.contains("LABEL app=1"),
        "{history}"
    );

    // save → load into a second store gives the same image.
    let archive = fx.dir.join("app.tar");
    ok(&fx.rbuild(&["save", "-o", &archive.display().to_string(), "app:1"]));
    let other = fx.dir.join("other-store");
    let loaded = ok(&rbuild_in(
        &other,
        &["load", "-i", &archive.display().to_string()],
        None,
    ));
    assert!(loaded.contains("Loaded image: app:1"), "{loaded}");
    let again: serde_json::Value =
        serde_json::from_str(&ok(&rbuild_in(&other, &["inspect", "app:1"], None)))
            .unwrap_or_default();
    assert_eq!(again[0]["Id"], id.as_str());
    if tool("skopeo") {
        let out = Command::new("skopeo")
            .args(["inspect", &format!("docker-archive:{}", archive.display())])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "skopeo: {}", text(&out.stderr));
    }

    // `docker load` takes it where a Docker engine runs (not installed by the test suite).
    let docker_up = Command::new("/usr/bin/docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if docker_up {
        let out = Command::new("/usr/bin/docker")
            .arg("load")
            .arg("-i")
            .arg(&archive)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "docker load: {}", text(&out.stderr));
        let out = Command::new("/usr/bin/docker")
            .args(["image", "inspect", "--format", "{{.Id}}", "app:1"])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            text(&out.stdout).trim(),
            id,
            "docker's image ID for the loaded image"
        );
        let _ = Command::new("/usr/bin/docker")
            .args(["rmi", "app:1"])
            .output();
    } else {
        eprintln!("SKIPPED: no Docker engine running; docker load not checked");
    }

    // rmi removes one name; the image stays under the other.
    let out = ok(&fx.rbuild(&["rmi", "app:1"]));
    assert!(out.contains("Untagged: app:1"), "{out}");
    assert!(!fx.rbuild(&["inspect", "app:1"]).status.success());
    ok(&fx.rbuild(&["inspect", "registry.example.com:5000/team/app:v2"]));
    let err = text(&fx.rbuild(&["inspect", "nope"]).stderr);
    assert!(err.contains("no such image: nope"), "{err}");
}

#[test]
fn outputs_are_valid_for_real_tools() {
    let Some(fx) = Fixture::with_base("outputs", &BUSYBOX_SH) else {
        return;
    };
    let ctx = fx.context(
        "app",
        "FROM busybox\nCOPY a.txt /srv/a.txt\n",
        &[("a.txt", "a\n")],
    );
    let oci = fx.dir.join("app.oci.tar");
    ok(&fx.rbuild(&[
        "build",
        "-q",
        "-t",
        "app:oci",
        "-o",
        &format!("type=oci,dest={},compression=zstd", oci.display()),
        &ctx,
    ]));
    let docker = fx.dir.join("app.docker.tar");
    ok(&fx.rbuild(&[
        "build",
        "-q",
        "-t",
        "app:docker",
        "-o",
        &format!("type=docker,dest={}", docker.display()),
        &ctx,
    ]));
    let local = fx.dir.join("rootfs");
    ok(&fx.rbuild(&["build", "-q", "-o", &local.display().to_string(), &ctx]));
    assert_eq!(
        std::fs::read_to_string(local.join("srv/a.txt")).unwrap_or_default(),
        "a\n"
    );
    assert!(local.join("bin/busybox").is_file());
    // `-o -`: a tar of the root filesystem on standard output.
    let out = fx.rbuild(&["build", "-q", "-o", "-", &ctx]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut names = Vec::new();
    for entry in tar::Archive::new(&out.stdout[..])
        .entries()
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
    {
        names.push(
            entry
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        );
    }
    assert!(
        names
            .iter()
            .any(|n| n.trim_start_matches("./") == "srv/a.txt"),
        "{names:?}"
    );

    if tool("skopeo") {
        for spec in [
            format!("oci-archive:{}:oci", oci.display()),
            format!("docker-archive:{}", docker.display()),
        ] {
            let out = Command::new("skopeo")
                .args(["inspect", &spec])
                .output()
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                out.status.success(),
                "skopeo inspect {spec}: {}",
                text(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            assert_eq!(v["Layers"].as_array().map(Vec::len), Some(2), "{spec}: {v}");
        }
    }
    if tool("umoci") {
        let layout = fx.dir.join("layout");
        std::fs::create_dir_all(&layout).unwrap_or_else(|e| panic!("{e}"));
        assert!(Command::new("tar")
            .arg("-xf")
            .arg(&oci)
            .arg("-C")
            .arg(&layout)
            .status()
            .is_ok_and(|s| s.success()));
        let out = Command::new("umoci")
            .args(["stat", "--image", &format!("{}:oci", layout.display())])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "umoci stat: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("COPY a.txt /srv/a.txt"),
            "{}",
            text(&out.stdout)
        );
    }
    if tool("oci-image-tool") {
        // oci-image-tool predates zstd layers: validate a gzip export.
        let gz = fx.dir.join("gz.oci.tar");
        ok(&fx.rbuild(&[
            "build",
            "-q",
            "-t",
            "app:gz",
            "-o",
            &format!("type=oci,dest={}", gz.display()),
            &ctx,
        ]));
        let layout = fx.dir.join("gz-layout");
        std::fs::create_dir_all(&layout).unwrap_or_else(|e| panic!("{e}"));
        assert!(Command::new("tar")
            .arg("-xf")
            .arg(&gz)
            .arg("-C")
            .arg(&layout)
            .status()
            .is_ok_and(|s| s.success()));
        let out = Command::new("oci-image-tool")
            .args([
                "validate",
                "--type",
                "image",
                "--ref",
                "name=gz",
                &layout.display().to_string(),
            ])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success() && said.contains("Validation succeeded"),
            "oci-image-tool: {said}"
        );
    }
}

#[test]
fn dockerfile_from_stdin_base_images_and_onbuild() {
    let Some(fx) = Fixture::with_base("stdin", &BUSYBOX_SH) else {
        return;
    };
    // A base image with an ONBUILD trigger, then a build on it from a Dockerfile on stdin.
    let base = fx.context(
        "base",
        "FROM busybox\nONBUILD COPY trigger.txt /from-trigger.txt\n",
        &[],
    );
    ok(&fx.rbuild(&["build", "-q", "-t", "withtrigger", &base]));
    let ctx = fx.context("child", "", &[("trigger.txt", "t\n"), ("x.txt", "x\n")]);
    let out = rbuild_in(
        &fx.root,
        &[
            "build",
            "-q",
            "-t",
            "child",
            "-f",
            "-",
            "-o",
            &format!("type=local,dest={}/out", fx.dir.display()),
            &ctx,
        ],
        Some("FROM withtrigger\nCOPY --from=busybox /etc/group /copied-group\nCOPY x.txt /\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out_dir = fx.dir.join("out");
    assert_eq!(
        std::fs::read_to_string(out_dir.join("from-trigger.txt")).unwrap_or_default(),
        "t\n"
    );
    assert!(std::fs::read_to_string(out_dir.join("copied-group"))
        .unwrap_or_default()
        .contains("nogroup"));
    assert_eq!(
        std::fs::read_to_string(out_dir.join("x.txt")).unwrap_or_default(),
        "x\n"
    );
}

#[test]
fn build_errors_name_the_location() {
    let Some(fx) = Fixture::with_base("errors", &BUSYBOX_SH) else {
        return;
    };
    // (Dockerfile, what stderr must contain)
    let cases: &[(&str, &[&str])] = &[
        (
            "FROM busybox\nRUN echo hi; exit 3\n",
            &[
                "process \"/bin/sh -c echo hi; exit 3\" did not complete successfully: exit code: 3",
                "--> ",
                ":2:1",
                "2 | RUN echo hi; exit 3",
                "^^^",
            ],
        ),
        (
            "FROM busybox\nCOPY missing.txt /\n",
            &["missing.txt", ":2:1", "2 | COPY missing.txt /"],
        ),
        (
            "FROM nosuchimage\n",
            &["nosuchimage", "not in the local image store", ":1:"],
        ),
        (
            "FROM busybox\nCOPY --chown=nobodyhere a /\n",
            &["nobodyhere", ":2:1"],
        ),
        (
            "FROM busybox\nRUNN x\n",
            &["unknown instruction: RUNN (did you mean RUN?)", ":2:1"],
        ),
    ];
    for (i, (dockerfile, wants)) in cases.iter().enumerate() {
        let ctx = fx.context(&format!("err{i}"), dockerfile, &[("a", "a")]);
        let out = fx.rbuild(&["build", "--progress=plain", &ctx]);
        assert_eq!(out.status.code(), Some(1), "{dockerfile:?} should fail");
        let err = text(&out.stderr);
        for want in *wants {
            assert!(
                err.contains(want),
                "{dockerfile:?}: stderr lacks {want:?}:\n{err}"
            );
        }
    }
    let err = text(
        &fx.rbuild(&[
            "build",
            "--platform",
            "linux/s390x",
            &fx.dir.display().to_string(),
        ])
        .stderr,
    );
    assert!(
        err.contains("--platform linux/s390x is not supported yet"),
        "{err}"
    );
    let err = text(
        &fx.rbuild(&[
            "build",
            "-o",
            "type=registry",
            &fx.dir.display().to_string(),
        ])
        .stderr,
    );
    assert!(err.contains("pushing needs a name for the image"), "{err}");
}
