//! Incremental context `COPY` end to end with the real `rbuild` binary: after each change to
//! the context, a rebuild that starts its `COPY` steps from their earlier results (unchanged
//! files hardlinked from the earlier snapshot) gives exactly the image a copy from scratch
//! (`--no-cache`) gives — the same image ID under `SOURCE_DATE_EPOCH`, which covers every
//! layer's content, modes, owners, mtimes, symlinks, hardlinks and extended attributes — and
//! the earlier image is left as it was. The changes are a table: content (same and other
//! size), new and removed files and directories, a file turned into a directory and back,
//! mode, mtime, owner, symlink target, a new hardlink, an extended attribute, a source
//! directory reached through a symlink that now points elsewhere, `.dockerignore`;
//! with each, a file that `COPY . /src` selects changes too, so that the step runs again.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{text, Fixture};

/// Four context COPYs: the whole context, a directory with `--chown`/`--chmod`, one file, and
/// a directory reached through a symlink.
const DOCKERFILE: &str = "FROM busybox\n\
WORKDIR /src\n\
COPY . /src\n\
COPY --chown=7:8 --chmod=640 app/ /app/\n\
COPY app/a.txt /one.txt\n\
COPY sel/ /sel/\n";

/// Every source's mtime, older than [`EPOCH`] so that mtimes reach the layers unclamped.
const OLD_MTIME: &str = "@978307200";
/// `SOURCE_DATE_EPOCH` of every build: the times the builds themselves make are clamped.
const EPOCH: &str = "1577836800";

type Change = fn(&Path);

fn write(path: &Path, content: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
    }
    std::fs::write(path, content).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn sh(script: &str, dir: &Path) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("sh: {e}"));
    assert!(out.status.success(), "{script}: {}", text(&out.stderr));
}

/// Gives `paths` (relative to `ctx`) the old mtime, symlinks themselves included.
fn age(ctx: &Path, paths: &str) {
    sh(&format!("touch -h -d {OLD_MTIME} {paths}"), ctx);
}

const CHANGES: &[(&str, Change)] = &[
    ("content, same size", |c| {
        write(&c.join("app/a.txt"), "A\n");
        age(c, "app/a.txt");
    }),
    ("content, other size", |c| {
        write(
            &c.join("app/sub/b.txt"),
            "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n",
        );
        age(c, "app/sub/b.txt");
    }),
    ("a new file and a new directory", |c| {
        write(&c.join("app/new.txt"), "new\n");
        write(&c.join("fresh/deep/x.txt"), "x\n");
        age(c, "app/new.txt fresh fresh/deep fresh/deep/x.txt app");
    }),
    ("a removed file", |c| {
        std::fs::remove_file(c.join("lib/two.txt")).unwrap_or_else(|e| panic!("{e}"));
        age(c, "lib");
    }),
    ("a removed directory", |c| {
        std::fs::remove_dir_all(c.join("fresh")).unwrap_or_else(|e| panic!("{e}"));
        age(c, ".");
    }),
    ("a file turned into a directory", |c| {
        std::fs::remove_file(c.join("lib/one.txt")).unwrap_or_else(|e| panic!("{e}"));
        write(&c.join("lib/one.txt/inner.txt"), "inner\n");
        age(c, "lib lib/one.txt lib/one.txt/inner.txt");
    }),
    ("a directory turned into a file", |c| {
        std::fs::remove_dir_all(c.join("lib/one.txt")).unwrap_or_else(|e| panic!("{e}"));
        write(&c.join("lib/one.txt"), "one again\n");
        age(c, "lib lib/one.txt");
    }),
    ("a mode", |c| {
        let p = c.join("tool.sh");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("{e}"));
    }),
    ("an mtime alone", |c| {
        sh("touch -h -d @1000000000 lib/three.txt", c);
    }),
    ("an owner", |c| {
        sh("chown 1234:5678 lib/three.txt", c);
    }),
    ("a symlink target", |c| {
        std::fs::remove_file(c.join("link")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("lib/three.txt", c.join("link"))
            .unwrap_or_else(|e| panic!("{e}"));
        age(c, "link");
    }),
    ("a new hardlink", |c| {
        std::fs::hard_link(c.join("app/sub/b.txt"), c.join("lib/b-again.txt"))
            .unwrap_or_else(|e| panic!("{e}"));
        age(c, "lib");
    }),
    ("an extended attribute", |c| {
        rustix::fs::lsetxattr(
            c.join("app/sub/c.txt"),
            "user.rbuild.test",
            b"yes",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap_or_else(|e| panic!("setting an xattr: {e}"));
    }),
    ("a source symlink pointing elsewhere", |c| {
        // `sel/x.txt` turns from a file into a directory, `sel/z/` is no longer there.
        std::fs::remove_file(c.join("sel")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("sel-b", c.join("sel")).unwrap_or_else(|e| panic!("{e}"));
        age(c, "sel");
    }),
    (".dockerignore", |c| {
        write(&c.join(".dockerignore"), "*.log\nlib/three.txt\n");
        age(c, ".dockerignore");
    }),
];

/// Files of the store's snapshots that share their inode with another path.
fn shared_inodes(root: &Path) -> usize {
    let out = Command::new("find")
        .arg(root.join("v1/snapshots"))
        .args(["-type", "f", "-links", "+1"])
        .output()
        .unwrap_or_else(|e| panic!("find: {e}"));
    text(&out.stdout).lines().count()
}

fn build(fx: &Fixture, ctx: &str, name: &str, extra: &[&str]) -> String {
    let iid = fx.dir.join(format!("{name}.iid"));
    let iid_arg = iid.display().to_string();
    let mut args = vec![
        "build",
        "--progress=plain",
        "--source-date-epoch",
        EPOCH,
        "--iidfile",
        &iid_arg,
        "-t",
        name,
    ];
    args.extend_from_slice(extra);
    args.push(ctx);
    let out = fx.rbuild(&args);
    assert!(out.status.success(), "{name}: {}", text(&out.stderr));
    std::fs::read_to_string(&iid).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_copy_started_from_its_earlier_result_gives_the_image_a_full_copy_gives() {
    let Some(fx) = Fixture::new("incremental-copy") else {
        return;
    };
    let ctx = fx.context(
        "ctx",
        DOCKERFILE,
        &[
            ("app/a.txt", "a\n"),
            ("app/sub/b.txt", "b\n"),
            ("app/sub/c.txt", "c\n"),
            ("lib/one.txt", "one\n"),
            ("lib/two.txt", "two\n"),
            ("lib/three.txt", "three\n"),
            ("tool.sh", "#!/bin/sh\necho tool\n"),
            ("debug.log", "ignored\n"),
            (".dockerignore", "*.log\n"),
            ("sel-a/x.txt", "x\n"),
            ("sel-a/y.txt", "y\n"),
            ("sel-a/z/w.txt", "w\n"),
            ("sel-b/x.txt/inner.txt", "inner\n"),
            ("sel-b/y.txt", "y\n"),
        ],
    );
    let c = Path::new(&ctx);
    std::os::unix::fs::symlink("sel-a", c.join("sel")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir(c.join("empty")).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink("app/a.txt", c.join("link")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::hard_link(c.join("lib/one.txt"), c.join("lib/one-link.txt"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(c.join("tool.sh"), std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("{e}"));
    sh(&format!("find . -exec touch -h -d {OLD_MTIME} {{}} +"), c);
    // Files changed within the last two seconds are never taken over (racy timestamps).
    std::thread::sleep(std::time::Duration::from_millis(2100));
    build(&fx, &ctx, "first", &[]);
    let first_tree = fx.ok(&[
        "run",
        "--rm",
        "first",
        "sh",
        "-c",
        "cat /src/app/a.txt /one.txt",
    ]);

    for (i, (what, change)) in CHANGES.iter().enumerate() {
        change(c);
        // Some changes alone keep every key (an mtime, a source owner that `COPY` replaces):
        // this file makes `COPY . /src` run again whatever the change.
        write(&c.join("trigger.txt"), &format!("{i}\n"));
        age(c, "trigger.txt");
        let shared_before = shared_inodes(&fx.root);
        let incremental = build(&fx, &ctx, &format!("inc{i}"), &[]);
        let shared_after = shared_inodes(&fx.root);
        assert!(
            shared_after > shared_before,
            "{what}: nothing was taken over from the earlier result ({shared_before} -> {shared_after} shared inodes)"
        );
        let full = build(&fx, &ctx, &format!("full{i}"), &["--no-cache"]);
        if incremental != full {
            let tree = |image: &str| {
                fx.ok(&[
                    "run",
                    "--rm",
                    image,
                    "sh",
                    "-c",
                    "find /src /app /sel /one.txt | sort | xargs ls -ld --full-time",
                ])
            };
            panic!(
                "{what}: the incremental COPY differs from a full one\n--- incremental\n{}\n--- full\n{}",
                tree(&format!("inc{i}")),
                tree(&format!("full{i}"))
            );
        }
    }
    // The first image still has what it had: its snapshot files were linked, never written.
    assert_eq!(
        fx.ok(&[
            "run",
            "--rm",
            "first",
            "sh",
            "-c",
            "cat /src/app/a.txt /one.txt"
        ]),
        first_tree
    );
    assert_eq!(first_tree, "a\na\n");
}
