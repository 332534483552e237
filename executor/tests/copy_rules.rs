//! `COPY`/`ADD` semantics, table-driven: where files land (destination rules), what wildcards
//! match, `--parents`, `--exclude`, `.dockerignore`, `--chmod`, `--chown`, owners, hardlinks,
//! heredocs and the errors for bad combinations. Each row copies from the same small context
//! into an empty root filesystem (after an optional setup of the destination) and compares the
//! destination's whole listing, or the error.

mod common;

use common::{am_root, digest, op, Env, Res, TestResult};
use rbuild_context::PatternMatcher;
use rbuild_executor::{chmod, CopyOp};
use std::os::unix::fs::MetadataExt;

/// The context every row copies from.
fn context(env: &Env) -> Res<()> {
    env.file("file.txt", "file\n", 0o644)?;
    env.file("other/b.txt", "b\n", 0o644)?;
    env.dir("dir", 0o755)?;
    env.file("dir/f1.txt", "f1\n", 0o644)?;
    env.file("dir/f2.txt", "f2\n", 0o600)?;
    env.dir("dir/sub", 0o750)?;
    env.file("dir/sub/deep.txt", "deep\n", 0o644)?;
    env.file("dir/notes.md", "md\n", 0o644)?;
    env.link("../file.txt", "dir/sub/uplink")?;
    env.link("file.txt", "link-to-file")?;
    env.link("dir", "link-to-dir")?;
    env.file("home.txt", "h\n", 0o644)?;
    env.file("home.md", "hm\n", 0o644)?;
    env.file("exec.sh", "#!/bin/sh\n", 0o755)?;
    env.file("a/b/c.txt", "c\n", 0o644)?;
    std::fs::set_permissions(
        env.src_path().join("a"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )?;
    env.file(".dockerignore", "*.md\n", 0o644)?;
    Ok(())
}

enum Want {
    /// The destination's whole listing.
    Tree(&'static [&'static str]),
    /// The error message contains this.
    Err(&'static str),
}

struct Row {
    name: &'static str,
    op: CopyOp,
    /// Prepares the destination first.
    pre: fn(&Env) -> Res<()>,
    want: Want,
}

fn nothing(_: &Env) -> Res<()> {
    Ok(())
}

fn with(op: CopyOp, f: impl FnOnce(&mut CopyOp)) -> CopyOp {
    let mut op = op;
    f(&mut op);
    op
}

fn f(path: &str, mode: &str, content: &str) -> String {
    format!("{path} file {mode} 0:0 {}", digest(content))
}

fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "file to a new path is that file",
            op: op(&["file.txt"], "/newname"),
            pre: nothing,
            want: Want::Tree(&["newname file 0644 0:0 FILE"]),
        },
        Row {
            name: "file to a path ending in / goes into a new directory",
            op: op(&["file.txt"], "/d/"),
            pre: nothing,
            want: Want::Tree(&["d dir 0755 0:0 -", "d/file.txt file 0644 0:0 FILE"]),
        },
        Row {
            name: "file to an existing directory without / goes into it",
            op: op(&["file.txt"], "/existing"),
            pre: |env| env.dest_dir("existing", 0o700),
            want: Want::Tree(&["existing dir 0700 0:0 -", "existing/file.txt file 0644 0:0 FILE"]),
        },
        Row {
            name: "file over an existing file replaces it",
            op: op(&["file.txt"], "/f"),
            pre: |env| env.dest_file("f", "old content", 0o600),
            want: Want::Tree(&["f file 0644 0:0 FILE"]),
        },
        Row {
            name: "missing parents are created 0755",
            op: op(&["file.txt"], "/a/b/c"),
            pre: nothing,
            want: Want::Tree(&["a dir 0755 0:0 -", "a/b dir 0755 0:0 -", "a/b/c file 0644 0:0 FILE"]),
        },
        Row {
            name: "directory copies its contents; the new destination is 0755",
            op: op(&["dir/sub"], "/x"),
            pre: nothing,
            want: Want::Tree(&[
                "x dir 0755 0:0 -",
                "x/deep.txt file 0644 0:0 DEEP",
                "x/uplink symlink 0777 0:0 ../file.txt",
            ]),
        },
        Row {
            name: "directory into an existing directory merges and keeps its metadata",
            op: op(&["dir/sub"], "/x/"),
            pre: |env| {
                env.dest_dir("x", 0o711)?;
                env.dest_file("x/keep", "k", 0o644)
            },
            want: Want::Tree(&[
                "x dir 0711 0:0 -",
                "x/deep.txt file 0644 0:0 DEEP",
                "x/keep file 0644 0:0 @{k}",
                "x/uplink symlink 0777 0:0 ../file.txt",
            ]),
        },
        Row {
            name: "nested directories take the source's metadata even when they exist",
            op: op(&["dir"], "/d"),
            pre: |env| env.dest_dir("d/sub", 0o777),
            want: Want::Tree(&[
                "d dir 0755 0:0 -",
                "d/f1.txt file 0644 0:0 F1",
                "d/f2.txt file 0600 0:0 F2",
                "d/notes.md file 0644 0:0 @{md\n}",
                "d/sub dir 0750 0:0 -",
                "d/sub/deep.txt file 0644 0:0 DEEP",
                "d/sub/uplink symlink 0777 0:0 ../file.txt",
            ]),
        },
        Row {
            name: "directory onto a file is an error",
            op: op(&["dir"], "/f"),
            pre: |env| env.dest_file("f", "x", 0o644),
            want: Want::Err("cannot copy to non-directory: \"/f\""),
        },
        Row {
            name: "file onto a directory at the target name is an error",
            op: op(&["file.txt"], "/d/"),
            pre: |env| env.dest_dir("d/file.txt", 0o755),
            want: Want::Err("cannot replace to directory \"/d/file.txt\" with file"),
        },
        Row {
            name: "a symlink at the target name is replaced, not followed",
            op: op(&["file.txt"], "/d/"),
            pre: |env| {
                env.dest_dir("d", 0o755)?;
                env.dest_file("victim", "v", 0o644)?;
                env.dest_link("../victim", "d/file.txt")
            },
            want: Want::Tree(&[
                "d dir 0755 0:0 -",
                "d/file.txt file 0644 0:0 FILE",
                "victim file 0644 0:0 @{v}",
            ]),
        },
        Row {
            name: "a symlink as the destination itself is followed inside the root",
            op: op(&["file.txt"], "/link"),
            pre: |env| {
                env.dest_dir("real", 0o755)?;
                env.dest_link("/real/f", "link")
            },
            want: Want::Tree(&[
                "link symlink 0777 0:0 /real/f",
                "real dir 0755 0:0 -",
                "real/f file 0644 0:0 FILE",
            ]),
        },
        Row {
            name: "two sources need a destination ending in /",
            op: op(&["file.txt", "other/b.txt"], "/multi"),
            pre: nothing,
            want: Want::Err("When using COPY with more than one source file, the destination must be a directory and end with a /"),
        },
        Row {
            name: "two sources into a directory",
            op: op(&["file.txt", "other/b.txt"], "/multi/"),
            pre: nothing,
            want: Want::Tree(&[
                "multi dir 0755 0:0 -",
                "multi/b.txt file 0644 0:0 @{b\n}",
                "multi/file.txt file 0644 0:0 FILE",
            ]),
        },
        Row {
            name: "a wildcard with several matches needs a directory",
            op: op(&["dir/f*.txt"], "/g"),
            pre: nothing,
            want: Want::Err("When using COPY with more than one source file"),
        },
        Row {
            name: "a wildcard with one match may name a file",
            op: op(&["dir/f1.*"], "/g"),
            pre: nothing,
            want: Want::Tree(&["g file 0644 0:0 F1"]),
        },
        Row {
            name: "wildcards: ?, classes, and a wildcard directory component",
            op: op(&["dir/f?.txt", "d[i]r/s*/deep.txt", "*/b.txt"], "/w/"),
            pre: nothing,
            want: Want::Tree(&[
                "w dir 0755 0:0 -",
                "w/b.txt file 0644 0:0 @{b\n}",
                "w/deep.txt file 0644 0:0 DEEP",
                "w/f1.txt file 0644 0:0 F1",
                "w/f2.txt file 0600 0:0 F2",
            ]),
        },
        Row {
            name: "a wildcard matching a directory copies its contents; symlinks match by name",
            op: op(&["link-to-*"], "/m/"),
            pre: nothing,
            want: Want::Tree(&[
                "m dir 0755 0:0 -",
                "m/f1.txt file 0644 0:0 F1",
                "m/f2.txt file 0600 0:0 F2",
                "m/link-to-file file 0644 0:0 FILE",
                "m/notes.md file 0644 0:0 @{md\n}",
                "m/sub dir 0750 0:0 -",
                "m/sub/deep.txt file 0644 0:0 DEEP",
                "m/sub/uplink symlink 0777 0:0 ../file.txt",
            ]),
        },
        Row {
            name: "a wildcard that matches nothing",
            op: op(&["nothing*"], "/n/"),
            pre: nothing,
            want: Want::Err("no source files were specified"),
        },
        Row {
            name: "a wildcard under a missing directory",
            op: op(&["missing/*.txt"], "/n/"),
            pre: nothing,
            want: Want::Err("file not found in build context"),
        },
        Row {
            name: "an empty wildcard next to a real source is fine",
            op: op(&["nothing*", "file.txt"], "/n/"),
            pre: nothing,
            want: Want::Tree(&["n dir 0755 0:0 -", "n/file.txt file 0644 0:0 FILE"]),
        },
        Row {
            name: "a missing source names itself",
            op: op(&["does-not-exist"], "/x"),
            pre: nothing,
            want: Want::Err("COPY failed: file not found in build context or excluded by .dockerignore: stat does-not-exist: file does not exist"),
        },
        Row {
            name: "a symlink source is followed and named after the link",
            op: op(&["link-to-file"], "/links/"),
            pre: nothing,
            want: Want::Tree(&["links dir 0755 0:0 -", "links/link-to-file file 0644 0:0 FILE"]),
        },
        Row {
            name: "a path through a symlinked directory",
            op: op(&["link-to-dir/f1.txt"], "/"),
            pre: nothing,
            want: Want::Tree(&["f1.txt file 0644 0:0 F1"]),
        },
        Row {
            name: ".. in a source stops at the context root",
            op: op(&["../../../file.txt"], "/up"),
            pre: nothing,
            want: Want::Tree(&["up file 0644 0:0 FILE"]),
        },
        Row {
            name: "--chmod octal on files and directories",
            op: with(op(&["dir/sub"], "/c/"), |o| o.chmod = Some(chmod::parse("0640").unwrap_or(rbuild_parser::instruction::Chmod::Octal(0)))),
            pre: nothing,
            want: Want::Tree(&[
                "c dir 0755 0:0 -",
                "c/deep.txt file 0640 0:0 DEEP",
                "c/uplink symlink 0777 0:0 ../file.txt",
            ]),
        },
        Row {
            name: "--chmod symbolic: X for directories and executables",
            op: with(op(&["dir", "exec.sh"], "/s/"), |o| o.chmod = Some(rbuild_parser::instruction::Chmod::Symbolic("u=rwX,go=rX".into()))),
            pre: nothing,
            want: Want::Tree(&[
                "s dir 0755 0:0 -",
                "s/exec.sh file 0755 0:0 @{#!/bin/sh\n}",
                "s/f1.txt file 0644 0:0 F1",
                "s/f2.txt file 0644 0:0 F2",
                "s/notes.md file 0644 0:0 @{md\n}",
                "s/sub dir 0755 0:0 -",
                "s/sub/deep.txt file 0644 0:0 DEEP",
                "s/sub/uplink symlink 0777 0:0 ../file.txt",
            ]),
        },
        Row {
            name: "--parents keeps the source's directories (with their modes)",
            op: with(op(&["a/b/c.txt", "dir/f1.txt"], "/p/"), |o| o.parents = true),
            pre: nothing,
            want: Want::Tree(&[
                "p dir 0755 0:0 -",
                "p/a dir 0700 0:0 -",
                "p/a/b dir 0755 0:0 -",
                "p/a/b/c.txt file 0644 0:0 @{c\n}",
                "p/dir dir 0755 0:0 -",
                "p/dir/f1.txt file 0644 0:0 F1",
            ]),
        },
        Row {
            name: "--parents with a ./ pivot and a wildcard",
            op: with(op(&["./a/./b/*.txt", "dir/./sub"], "/p/"), |o| o.parents = true),
            pre: nothing,
            want: Want::Tree(&[
                "p dir 0755 0:0 -",
                "p/b dir 0755 0:0 -",
                "p/b/c.txt file 0644 0:0 @{c\n}",
                "p/sub dir 0750 0:0 -",
                "p/sub/deep.txt file 0644 0:0 DEEP",
                "p/sub/uplink symlink 0777 0:0 ../file.txt",
            ]),
        },
        Row {
            name: "--exclude inside a directory, and for wildcard matches by name",
            op: with(op(&["dir", "hom*"], "/e/"), |o| o.excludes = vec!["*.md".into(), "sub".into()]),
            pre: nothing,
            want: Want::Tree(&[
                "e dir 0755 0:0 -",
                "e/f1.txt file 0644 0:0 F1",
                "e/f2.txt file 0600 0:0 F2",
                "e/home.txt file 0644 0:0 @{h\n}",
            ]),
        },
        Row {
            name: "--exclude with a re-include",
            op: with(op(&["dir"], "/e/"), |o| o.excludes = vec!["sub".into(), "!sub/deep.txt".into(), "f*".into()]),
            pre: nothing,
            want: Want::Tree(&[
                "e dir 0755 0:0 -",
                "e/notes.md file 0644 0:0 @{md\n}",
                "e/sub dir 0750 0:0 -",
                "e/sub/deep.txt file 0644 0:0 DEEP",
            ]),
        },
        Row {
            name: ".dockerignore hides files from every source form",
            op: with(op(&["dir", "*.md"], "/i/"), |o| o.ignore = PatternMatcher::new(&["*.md", "**/*.md", "dir/sub"]).ok()),
            pre: nothing,
            want: Want::Tree(&[
                "i dir 0755 0:0 -",
                "i/f1.txt file 0644 0:0 F1",
                "i/f2.txt file 0600 0:0 F2",
            ]),
        },
        Row {
            name: ".dockerignore: an ignored source is not found",
            op: with(op(&["dir/sub/deep.txt"], "/i/"), |o| o.ignore = PatternMatcher::new(&["dir/sub"]).ok()),
            pre: nothing,
            want: Want::Err("file not found in build context or excluded by .dockerignore: stat dir/sub/deep.txt"),
        },
        Row {
            name: ".dockerignore: a symlink into an ignored directory leads nowhere",
            op: with(op(&["link-to-dir/f1.txt"], "/i"), |o| o.ignore = PatternMatcher::new(&["dir"]).ok()),
            pre: nothing,
            want: Want::Err("file not found in build context"),
        },
        Row {
            name: "heredocs are 0644 files named after the delimiter",
            op: with(op(&[], "/h/"), |o| o.heredocs = vec![("script.sh".into(), "echo hi\n".into()), ("conf".into(), "x=1\n".into())]),
            pre: nothing,
            want: Want::Tree(&[
                "h dir 0755 0:0 -",
                "h/conf file 0644 0:0 @{x=1\n}",
                "h/script.sh file 0644 0:0 @{echo hi\n}",
            ]),
        },
        Row {
            name: "a URL in COPY is refused",
            op: op(&["http://127.0.0.1:9/x"], "/u"),
            pre: nothing,
            want: Want::Err("source can't be a URL for COPY"),
        },
        Row {
            name: "ADD of a Git repository is unsupported",
            op: with(op(&["https://github.com/moby/buildkit.git"], "/g/"), |o| o.add = true),
            pre: nothing,
            want: Want::Err("ADD from a Git repository"),
        },
        Row {
            name: "--checksum needs an HTTP source",
            op: with(op(&["file.txt"], "/c"), |o| {
                o.add = true;
                o.checksum = Some(format!("sha256:{}", "0".repeat(64)));
            }),
            pre: nothing,
            want: Want::Err("--checksum can only be used with HTTP(S) sources"),
        },
    ]
}

/// Replaces the placeholders of file details: `FILE`, `DEEP`, `F1`, `F2` (context files) and
/// `@{CONTENT}` (any content).
fn expand(line: &str) -> String {
    let mut out = line
        .replace("0:0 FILE", &format!("0:0 {}", digest("file\n")))
        .replace("0:0 DEEP", &format!("0:0 {}", digest("deep\n")))
        .replace("0:0 F1", &format!("0:0 {}", digest("f1\n")))
        .replace("0:0 F2", &format!("0:0 {}", digest("f2\n")));
    while let Some(start) = out.find("@{") {
        let Some(len) = out[start..].find('}') else {
            break;
        };
        let content = out[start + 2..start + len].to_string();
        out.replace_range(start..start + len + 1, &digest(&content));
    }
    out
}

#[test]
fn copy_rules_table() -> TestResult {
    if !am_root() {
        eprintln!("skipped: owners need root");
        return Ok(());
    }
    let mut failures = Vec::new();
    for row in rows() {
        let env = Env::new()?;
        context(&env)?;
        (row.pre)(&env)?;
        let result = env.copy(&row.op);
        match (&row.want, result) {
            (Want::Tree(lines), Ok(_)) => {
                let got = env.listing()?;
                let want: Vec<String> = lines.iter().map(|l| expand(l)).collect();
                if got != want {
                    failures.push(format!("{}:\n  want {want:#?}\n  got  {got:#?}", row.name));
                }
            }
            (Want::Tree(_), Err(e)) => failures.push(format!("{}: unexpected error {e}", row.name)),
            (Want::Err(msg), Ok(_)) => {
                failures.push(format!("{}: expected an error with {msg:?}", row.name))
            }
            (Want::Err(msg), Err(e)) => {
                if !e.to_string().contains(msg) {
                    failures.push(format!("{}: error {e:?} lacks {msg:?}", row.name));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[test]
fn owners_times_hardlinks_and_specials() -> TestResult {
    if !am_root() {
        eprintln!("skipped: owners need root");
        return Ok(());
    }
    let env = Env::new()?;
    env.dir("d", 0o755)?;
    env.file("d/a.txt", "a\n", 0o644)?;
    std::fs::hard_link(
        env.src_path().join("d/a.txt"),
        env.src_path().join("d/b.txt"),
    )?;
    std::os::unix::fs::chown(env.src_path().join("d/a.txt"), Some(1000), Some(1001))?;
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    let file = std::fs::File::options()
        .write(true)
        .open(env.src_path().join("d/a.txt"))?;
    file.set_modified(old)?;
    drop(file);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        env.src_path().join("d/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )?;

    // Context copy: owners become 0:0, hardlinks stay, the FIFO is recreated (not read).
    env.copy(&op(&["d"], "/ctx/"))?;
    // A copy from another stage keeps owners; --chown overrides and owns created parents.
    env.copy(&with(op(&["d"], "/stage/"), |o| o.keep_owners = true))?;
    env.copy(&with(op(&["d/b.txt"], "/owned/deep/b.txt"), |o| {
        o.chown = Some((7, 8))
    }))?;
    // One file of a hardlinked pair alone is a plain file.
    env.copy(&op(&["d/b.txt"], "/single"))?;
    let got = env.listing()?;
    let want: Vec<String> = [
        "ctx dir 0755 0:0 -".to_string(),
        f("ctx/a.txt", "0644", "a\n"),
        "ctx/b.txt hardlink 0644 0:0 ctx/a.txt".to_string(),
        "ctx/fifo fifo 0640 0:0 -".to_string(),
        "owned dir 0755 7:8 -".to_string(),
        "owned/deep dir 0755 7:8 -".to_string(),
        format!("owned/deep/b.txt file 0644 7:8 {}", digest("a\n")),
        f("single", "0644", "a\n"),
        "stage dir 0755 0:0 -".to_string(),
        format!("stage/a.txt file 0644 1000:1001 {}", digest("a\n")),
        "stage/b.txt hardlink 0644 1000:1001 stage/a.txt".to_string(),
        "stage/fifo fifo 0640 0:0 -".to_string(),
    ]
    .to_vec();
    assert_eq!(got, want);
    let md = std::fs::metadata(env.dest_path().join("ctx/a.txt"))?;
    assert_eq!(md.mtime(), 1_000_000_000, "mtime kept");
    Ok(())
}
