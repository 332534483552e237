//! The content checksum of a `COPY`/`ADD` source selection ([`rbuild_executor::checksum`]),
//! table-driven: every row builds a small context, takes the checksum of one instruction's
//! selection, changes the context, and checks whether the checksum changed — and, as a check of
//! the row itself, whether what `copy` actually produces (its `tree.py` listing, which leaves
//! out mtimes just as the checksum does) changed the same way. Then: identical selections in
//! different directories, the errors `copy` gives for missing sources, `ADD` URLs and archives,
//! and the persistent file index (an unchanged file is not read again; a rewrite with the same
//! size and mtime is).

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{am_root, op, Res, TestResult};
use rbuild_cache::{FileIndex, Store};
use rbuild_context::PatternMatcher;
use rbuild_executor::checksum::SETTLE_NS;
use rbuild_executor::tree::list_tree;
use rbuild_executor::{checksum, copy, CopyOp, FileDigests, FileKey, NoIndex, SourceChecksum};
use rbuild_fsutil::Root;

fn write(base: &Path, rel: &str, content: &str, mode: u32) -> Res<()> {
    let p = base.join(rel);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(&p, content)?;
    fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The context of the change rows.
fn context(base: &Path) -> Res<()> {
    write(base, "app/main.rs", "fn main() {}\n", 0o644)?;
    write(base, "app/lib.rs", "pub fn lib() {}\n", 0o644)?;
    write(base, "app/run.sh", "#!/bin/sh\n", 0o755)?;
    write(base, "app/sub/deep.txt", "deep\n", 0o640)?;
    write(base, "app/notes.md", "notes\n", 0o644)?;
    write(base, "app/secret.txt", "ignored by .dockerignore\n", 0o600)?;
    symlink("main.rs", base.join("app/link"))?;
    write(base, "top.txt", "top\n", 0o644)?;
    write(base, "build/out.bin", "ignored dir\n", 0o644)?;
    write(base, "x.log", "ignored\n", 0o644)?;
    write(base, "keep.log", "re-included\n", 0o644)?;
    write(base, "src/a.txt", "a\n", 0o644)?;
    write(base, "src/b.txt", "b\n", 0o644)?;
    write(base, "src/c.md", "c\n", 0o644)?;
    write(
        base,
        ".dockerignore",
        "app/secret.txt\nbuild\n*.log\n!keep.log\n",
        0o644,
    )?;
    Ok(())
}

fn ignore() -> Option<PatternMatcher> {
    PatternMatcher::new(&["app/secret.txt", "build", "*.log", "!keep.log"]).ok()
}

/// A context `COPY` (the `.dockerignore` applies).
fn ctx_op(sources: &[&str], dest: &str) -> CopyOp {
    CopyOp {
        ignore: ignore(),
        ..op(sources, dest)
    }
}

fn with(op: CopyOp, f: impl FnOnce(&mut CopyOp)) -> CopyOp {
    let mut op = op;
    f(&mut op);
    op
}

fn sum(base: &Path, op: &CopyOp) -> Result<SourceChecksum, Box<dyn std::error::Error>> {
    Ok(checksum(op, &Root::open(base)?, &NoIndex)?)
}

/// What `copy` makes of `op` from `base` in an empty root: its listing.
fn copied(base: &Path, op: &CopyOp) -> Res<Vec<String>> {
    let dest = tempfile::tempdir()?;
    let root = Root::open(dest.path())?;
    copy(op, &Root::open(base)?, &root)?;
    Ok(list_tree(&root)?.into_values().collect())
}

fn mknod(path: &Path, kind: rustix::fs::FileType, dev: u64) -> Res<()> {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        kind,
        rustix::fs::Mode::from_raw_mode(0o640),
        dev,
    )?;
    Ok(())
}

fn set_mtime(path: &Path, secs: u64) -> Res<()> {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    fs::File::options()
        .write(true)
        .open(path)?
        .set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))?;
    Ok(())
}

struct Row {
    name: &'static str,
    op: CopyOp,
    /// Added to the context first.
    setup: Option<fn(&Path) -> Res<()>>,
    change: fn(&Path) -> Res<()>,
    /// Whether the checksum must change.
    changes: bool,
    /// Needs root (changes owners).
    root: bool,
    /// Whether `copy`'s listing shows the change (it leaves out xattrs).
    visible_in_listing: bool,
}

fn row(name: &'static str, op: CopyOp, change: fn(&Path) -> Res<()>, changes: bool) -> Row {
    Row {
        name,
        op,
        setup: None,
        change,
        changes,
        root: false,
        visible_in_listing: true,
    }
}

fn rows() -> Vec<Row> {
    let app = || ctx_op(&["app"], "/app/");
    let all = || ctx_op(&["."], "/");
    let mut rows = vec![
        // What must change the checksum.
        row(
            "content of a copied file",
            app(),
            |b| write(b, "app/main.rs", "fn main() { }\n", 0o644),
            true,
        ),
        row(
            "content of a copied file, same size and mtime",
            app(),
            |b| {
                write(b, "app/lib.rs", "pub fn lib() {]\n", 0o644)?;
                set_mtime(&b.join("app/lib.rs"), 1_600_000_000)?;
                Ok(())
            },
            true,
        ),
        row(
            "mode of a copied file",
            app(),
            |b| {
                Ok(fs::set_permissions(
                    b.join("app/lib.rs"),
                    fs::Permissions::from_mode(0o600),
                )?)
            },
            true,
        ),
        row(
            "mode of a copied directory",
            app(),
            |b| {
                Ok(fs::set_permissions(
                    b.join("app/sub"),
                    fs::Permissions::from_mode(0o700),
                )?)
            },
            true,
        ),
        row(
            "symlink target",
            app(),
            |b| {
                fs::remove_file(b.join("app/link"))?;
                Ok(symlink("lib.rs", b.join("app/link"))?)
            },
            true,
        ),
        row(
            "a new file inside a copied directory",
            app(),
            |b| write(b, "app/sub/new.txt", "", 0o644),
            true,
        ),
        row(
            "a new empty directory inside a copied directory",
            app(),
            |b| Ok(fs::create_dir(b.join("app/empty"))?),
            true,
        ),
        row(
            "a copied file removed",
            app(),
            |b| Ok(fs::remove_file(b.join("app/run.sh"))?),
            true,
        ),
        row(
            "rename inside a copied directory",
            app(),
            |b| Ok(fs::rename(b.join("app/lib.rs"), b.join("app/lib2.rs"))?),
            true,
        ),
        row(
            "a file becomes a hardlink of another",
            app(),
            |b| {
                fs::remove_file(b.join("app/sub/deep.txt"))?;
                Ok(fs::hard_link(
                    b.join("app/main.rs"),
                    b.join("app/sub/deep.txt"),
                )?)
            },
            true,
        ),
        row(
            "a single file source's content",
            ctx_op(&["top.txt"], "/t"),
            |b| write(b, "top.txt", "TOP\n", 0o644),
            true,
        ),
        row(
            "a new wildcard match",
            ctx_op(&["src/*.txt"], "/s/"),
            |b| write(b, "src/d.txt", "d\n", 0o644),
            true,
        ),
        row(
            "a re-included file of an ignored pattern",
            all(),
            |b| write(b, "keep.log", "changed\n", 0o644),
            true,
        ),
        row(
            "--parents: mode of a kept parent directory",
            with(ctx_op(&["app/sub/deep.txt"], "/p/"), |o| o.parents = true),
            |b| {
                Ok(fs::set_permissions(
                    b.join("app/sub"),
                    fs::Permissions::from_mode(0o711),
                )?)
            },
            true,
        ),
        row(
            "ADD (unpacking) of a local file that is not an archive",
            with(ctx_op(&["top.txt"], "/d/"), |o| {
                o.add = true;
                o.unpack_archives = true
            }),
            |b| write(b, "top.txt", "toP\n", 0o644),
            true,
        ),
        // What must not.
        row(
            "mtime of a copied file",
            app(),
            |b| set_mtime(&b.join("app/main.rs"), 1_500_000_000),
            false,
        ),
        row(
            "mtime of a copied directory",
            app(),
            |b| {
                let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_400_000_000);
                Ok(fs::File::open(b.join("app/sub"))?.set_modified(t)?)
            },
            false,
        ),
        row(
            "a file not selected",
            app(),
            |b| write(b, "top.txt", "changed\n", 0o644),
            false,
        ),
        row(
            "a new file outside the copied directory",
            app(),
            |b| write(b, "new/file.txt", "new\n", 0o644),
            false,
        ),
        row(
            "an ignored file",
            all(),
            |b| write(b, "app/secret.txt", "changed secret\n", 0o644),
            false,
        ),
        row(
            "a file in an ignored directory",
            all(),
            |b| write(b, "build/out.bin", "rebuilt\n", 0o755),
            false,
        ),
        row(
            "a new file in an ignored directory",
            all(),
            |b| write(b, "build/deeper/more.o", "o\n", 0o644),
            false,
        ),
        row(
            "an ignored pattern's file",
            all(),
            |b| write(b, "x.log", "more log\n", 0o644),
            false,
        ),
        row(
            "an --exclude'd file",
            with(app(), |o| o.excludes = vec!["*.md".into()]),
            |b| write(b, "app/notes.md", "other notes\n", 0o644),
            false,
        ),
        row(
            "an --exclude'd wildcard match",
            with(ctx_op(&["src/*"], "/s/"), |o| {
                o.excludes = vec!["*.md".into()]
            }),
            |b| write(b, "src/c.md", "cc\n", 0o644),
            false,
        ),
        row(
            "a file beside a wildcard's matches",
            ctx_op(&["src/*.txt"], "/s/"),
            |b| write(b, "src/c.md", "changed\n", 0o644),
            false,
        ),
        row(
            "a new file beside a wildcard's matches",
            ctx_op(&["src/*.txt"], "/s/"),
            |b| write(b, "src/e.md", "e\n", 0o644),
            false,
        ),
        row(
            "a mode --chmod replaces",
            with(app(), |o| {
                o.chmod = Some(rbuild_parser::instruction::Chmod::Octal(0o640))
            }),
            |b| {
                Ok(fs::set_permissions(
                    b.join("app/lib.rs"),
                    fs::Permissions::from_mode(0o604),
                )?)
            },
            false,
        ),
        row(
            "a file replaced by an identical one",
            app(),
            |b| {
                fs::remove_file(b.join("app/main.rs"))?;
                write(b, "app/main.rs", "fn main() {}\n", 0o644)
            },
            false,
        ),
    ];
    rows.push(Row {
        name: "an extended attribute of a copied file",
        op: app(),
        setup: None,
        change: |b| {
            rustix::fs::setxattr(
                b.join("app/lib.rs"),
                "user.rbuild-test",
                b"v",
                rustix::fs::XattrFlags::empty(),
            )?;
            Ok(())
        },
        changes: true,
        root: false,
        visible_in_listing: false,
    });
    rows.push(row(
        "a new FIFO inside a copied directory",
        app(),
        |b| mknod(&b.join("app/fifo"), rustix::fs::FileType::Fifo, 0),
        true,
    ));
    rows.push(Row {
        name: "a device's numbers",
        op: app(),
        setup: Some(|b| {
            let dev = rustix::fs::makedev(1, 3);
            mknod(
                &b.join("app/sub/dev"),
                rustix::fs::FileType::CharacterDevice,
                dev,
            )
        }),
        change: |b| {
            fs::remove_file(b.join("app/sub/dev"))?;
            let dev = rustix::fs::makedev(1, 5);
            mknod(
                &b.join("app/sub/dev"),
                rustix::fs::FileType::CharacterDevice,
                dev,
            )
        },
        changes: true,
        root: true,
        visible_in_listing: true,
    });
    for (name, op, changes) in [
        ("owner of a copied file, context copy", app(), false),
        (
            "owner of a copied file, copy keeping owners",
            with(app(), |o| o.keep_owners = true),
            true,
        ),
        (
            "owner of a copied file, --chown",
            with(app(), |o| {
                o.keep_owners = true;
                o.chown = Some((10, 20))
            }),
            false,
        ),
    ] {
        rows.push(Row {
            name,
            op,
            setup: None,
            change: |b| {
                Ok(std::os::unix::fs::chown(
                    b.join("app/lib.rs"),
                    Some(1234),
                    Some(99),
                )?)
            },
            changes,
            root: true,
            visible_in_listing: true,
        });
    }
    rows
}

#[test]
fn what_changes_the_checksum_and_what_does_not() -> TestResult {
    let mut failures = Vec::new();
    for row in rows() {
        if row.root && !am_root() {
            eprintln!("skipping {:?}: needs root", row.name);
            continue;
        }
        let tmp = tempfile::tempdir()?;
        let base = tmp.path();
        context(base)?;
        if let Some(setup) = row.setup {
            setup(base)?;
        }
        let before = sum(base, &row.op)?;
        let listing_before = copied(base, &row.op)?;
        // The checksum does not depend on when it is taken.
        assert_eq!(sum(base, &row.op)?, before, "{}: not stable", row.name);
        (row.change)(base)?;
        let after = sum(base, &row.op)?;
        let listing_after = copied(base, &row.op)?;
        if (before.digest != after.digest) != row.changes {
            failures.push(format!(
                "{}: checksum {} (want {})",
                row.name,
                if row.changes {
                    "did not change"
                } else {
                    "changed"
                },
                if row.changes { "a change" } else { "none" },
            ));
        }
        if row.visible_in_listing && (listing_before != listing_after) != row.changes {
            failures.push(format!(
                "{}: copy's result {} — the row is wrong",
                row.name,
                if row.changes {
                    "did not change"
                } else {
                    "changed"
                },
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    Ok(())
}

#[test]
fn identical_selections_in_different_directories_agree() -> TestResult {
    let ops = [
        ctx_op(&["."], "/"),
        ctx_op(&["app"], "/app/"),
        ctx_op(&["src/*.txt", "top.txt"], "/d/"),
        with(ctx_op(&["app/./sub", "src/a.txt"], "/p/"), |o| {
            o.parents = true
        }),
        with(ctx_op(&["app"], "/a/"), |o| {
            o.excludes = vec!["**/*.rs".into()];
            o.chown = Some((5, 6))
        }),
        with(ctx_op(&["app"], "/a/"), |o| {
            o.chmod = Some(rbuild_parser::instruction::Chmod::Octal(0o600))
        }),
        with(ctx_op(&["top.txt"], "/t/"), |o| {
            o.heredocs = vec![("h.sh".into(), "echo hi\n".into())]
        }),
    ];
    let one = tempfile::tempdir()?;
    let two = tempfile::tempdir()?;
    let b = two.path().join("nested/deeper");
    context(one.path())?;
    context(&b)?;
    // Different mtimes, inodes and parent paths: none of them count.
    set_mtime(&b.join("app/main.rs"), 1_000_000_000)?;
    set_mtime(&b.join("src/a.txt"), 1_000_000_000)?;
    let mut seen = Vec::new();
    for op in &ops {
        let a = sum(one.path(), op)?;
        assert_eq!(a, sum(&b, op)?, "{:?}", op.sources);
        assert!(a.stats.entries > 0, "{:?}: {:?}", op.sources, a.stats);
        seen.push(a.digest);
    }
    // And different selections differ (the destination itself is not part of the checksum:
    // the caller's key has it).
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), ops.len());
    Ok(())
}

#[test]
fn the_listing_counts_what_copy_copies() -> TestResult {
    let tmp = tempfile::tempdir()?;
    context(tmp.path())?;
    fs::hard_link(
        tmp.path().join("app/main.rs"),
        tmp.path().join("app/hard.rs"),
    )?;
    let all = sum(tmp.path(), &ctx_op(&["."], "/"))?;
    // Everything but app/secret.txt, build/ and x.log; hardlinks are one file read once.
    let listing = copied(tmp.path(), &ctx_op(&["."], "/"))?;
    assert_eq!(all.stats.entries, listing.len() as u64, "{listing:#?}");
    let files = listing.iter().filter(|l| l.contains(" file ")).count() as u64;
    assert_eq!(all.stats.files, files, "{listing:#?}");
    assert_eq!(all.stats.files_read, files);
    let bytes: u64 = listing
        .iter()
        .filter(|l| l.contains(" file "))
        .map(|l| {
            l.split(' ')
                .nth(4)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(all.stats.bytes_read, bytes);
    Ok(())
}

#[test]
fn missing_sources_and_bad_ops_fail_as_copy_does() -> TestResult {
    let tmp = tempfile::tempdir()?;
    context(tmp.path())?;
    let cases = [
        ctx_op(&["missing.txt"], "/d/"),
        ctx_op(&["top.txt", "missing.txt"], "/d/"),
        ctx_op(&["app/secret.txt"], "/d/"),
        ctx_op(&["build/out.bin"], "/d/"),
        ctx_op(&["nomatch*.txt"], "/d/"),
        ctx_op(&["missingdir/*.txt"], "/d/"),
        ctx_op(&["top.txt", "src/a.txt"], "/not-a-dir"),
        ctx_op(&["src/*.txt"], "/not-a-dir"),
        ctx_op(&["https://example.invalid/x"], "/d/"),
        with(ctx_op(&["git@github.com:a/b.git"], "/d/"), |o| o.add = true),
        with(ctx_op(&["top.txt"], "/d/"), |o| {
            o.checksum = Some("sha256:00".into())
        }),
        with(ctx_op(&["app"], "/d/"), |o| o.excludes = vec!["[".into()]),
        with(ctx_op(&[], "/d/"), |o| {
            o.heredocs = vec![("".into(), "x".into())]
        }),
    ];
    for op in cases {
        let want = copy(
            &op,
            &Root::open(tmp.path())?,
            &Root::open(tempfile::tempdir()?.path())?,
        )
        .err()
        .map(|e| e.to_string());
        let got = checksum(&op, &Root::open(tmp.path())?, &NoIndex)
            .err()
            .map(|e| e.to_string());
        assert!(want.is_some(), "{:?}: copy succeeded", op.sources);
        assert_eq!(got, want, "{:?}", op.sources);
    }
    Ok(())
}

#[test]
fn add_urls_are_returned_not_fetched_and_heredocs_count() -> TestResult {
    let tmp = tempfile::tempdir()?;
    context(tmp.path())?;
    // `.invalid` never resolves: fetching would fail the checksum.
    let url = "https://example.invalid/archive.tar.gz";
    let add = with(ctx_op(&[url, "top.txt"], "/d/"), |o| o.add = true);
    let got = sum(tmp.path(), &add)?;
    assert_eq!(got.remote_urls, vec![url.to_string()]);
    let without = sum(
        tmp.path(),
        &with(ctx_op(&["top.txt"], "/d/"), |o| o.add = true),
    )?;
    assert!(without.remote_urls.is_empty());

    let heredoc = |content: &str, name: &str| {
        with(ctx_op(&[], "/h/"), |o| {
            o.heredocs = vec![(name.into(), content.into())]
        })
    };
    let base = sum(tmp.path(), &heredoc("echo 1\n", "a.sh"))?;
    assert_eq!(base, sum(tmp.path(), &heredoc("echo 1\n", "a.sh"))?);
    assert_ne!(
        base.digest,
        sum(tmp.path(), &heredoc("echo 2\n", "a.sh"))?.digest
    );
    assert_ne!(
        base.digest,
        sum(tmp.path(), &heredoc("echo 1\n", "b.sh"))?.digest
    );
    assert_eq!(base.stats.entries, 1);
    assert_eq!(
        base.digest_string().len(),
        "sha256:".len() + 64,
        "{}",
        base.digest_string()
    );
    Ok(())
}

/// A [`FileDigests`] that counts what it is asked, over the real persistent index.
struct Counting<'a> {
    inner: &'a FileIndex,
    hits: std::sync::atomic::AtomicU64,
    puts: std::sync::atomic::AtomicU64,
}

impl<'a> Counting<'a> {
    fn new(inner: &'a FileIndex) -> Self {
        Counting {
            inner,
            hits: 0.into(),
            puts: 0.into(),
        }
    }

    fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.hits.load(Relaxed), self.puts.load(Relaxed))
    }
}

impl FileDigests for Counting<'_> {
    fn get(&self, key: &FileKey) -> Option<[u8; 32]> {
        let got = self.inner.get(key);
        if got.is_some() {
            self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        got
    }

    fn put(&self, key: FileKey, digest: [u8; 32]) {
        self.puts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.put(key, digest)
    }
}

#[test]
fn the_file_index_spares_reading_unchanged_files() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let store = Store::open(&tmp.path().join("store"))?;
    let ctx = tmp.path().join("ctx");
    context(&ctx)?;
    for i in 0..50 {
        write(
            &ctx,
            &format!("app/many/f{i:02}.txt"),
            &format!("file {i}\n"),
            0o644,
        )?;
    }
    let op = ctx_op(&["."], "/");
    let reference = sum(&ctx, &op)?;
    let files = reference.stats.files;
    assert!(files > 50, "{:?}", reference.stats);

    // Files changed less than SETTLE_NS ago are hashed but not recorded: their timestamps could
    // still be shared by a next write.
    let index = FileIndex::load(&store, &ctx);
    let counting = Counting::new(&index);
    let fresh = checksum(&op, &Root::open(&ctx)?, &counting)?;
    assert_eq!(fresh.digest, reference.digest);
    assert_eq!(fresh.stats.files_read, files);
    assert_eq!(counting.counts(), (0, 0));

    std::thread::sleep(Duration::from_nanos(SETTLE_NS as u64 + 100_000_000));

    // Cold: every file read and recorded.
    let index = FileIndex::load(&store, &ctx);
    let counting = Counting::new(&index);
    let cold = checksum(&op, &Root::open(&ctx)?, &counting)?;
    assert_eq!(cold.digest, reference.digest);
    assert_eq!(cold.stats.files_read, files);
    assert_eq!(counting.counts(), (0, files));
    index.save()?;

    // Warm, in a new process's view of the index: nothing read.
    let index = FileIndex::load(&store, &ctx);
    let counting = Counting::new(&index);
    let warm = checksum(&op, &Root::open(&ctx)?, &counting)?;
    assert_eq!(warm.digest, reference.digest);
    assert_eq!((warm.stats.files_read, warm.stats.bytes_read), (0, 0));
    assert_eq!(counting.counts(), (files, 0));
    index.save()?;

    // One file rewritten with the same size and mtime: only it is read, and the checksum
    // follows its new content.
    let path = ctx.join("app/many/f07.txt");
    let mtime = fs::metadata(&path)?.modified()?;
    fs::write(&path, "FILE 7\n")?;
    fs::File::options()
        .write(true)
        .open(&path)?
        .set_modified(mtime)?;
    let index = FileIndex::load(&store, &ctx);
    let counting = Counting::new(&index);
    let changed = checksum(&op, &Root::open(&ctx)?, &counting)?;
    assert_eq!(changed.stats.files_read, 1);
    assert_eq!(changed.stats.bytes_read, 7);
    assert_ne!(changed.digest, reference.digest);
    assert_eq!(changed.digest, sum(&ctx, &op)?.digest);
    // Just changed, so not recorded: the next run reads it again (and only it).
    assert_eq!(counting.counts(), (files - 1, 0));
    index.save()?;
    let index = FileIndex::load(&store, &ctx);
    let again = checksum(&op, &Root::open(&ctx)?, &index)?;
    assert_eq!(again.digest, changed.digest);
    assert_eq!(again.stats.files_read, 1);
    Ok(())
}

/// The measurement of issue 5's context walk: a `big-context`-like tree (20,000 small files in
/// 200 directories, three 50 MiB files), checksummed cold (empty index) and warm (index saved
/// and reloaded), with times and the process's peak RSS. Run it with
/// `cargo test --release -p rbuild-executor --test checksum -- --ignored --nocapture big_context`
/// (`BIG_CONTEXT_DIR=…` to use an existing tree, e.g. the shared workload's `ctx/`;
/// `BIG_CONTEXT_WARM_RUNS=N` for more warm runs than 3).
#[test]
#[ignore = "a measurement: writes ~170 MB and prints timings"]
fn big_context_cold_and_warm() -> TestResult {
    use std::time::Instant;
    let tmp = tempfile::tempdir()?;
    let ctx = match std::env::var_os("BIG_CONTEXT_DIR") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => {
            let ctx = tmp.path().join("ctx");
            let t = Instant::now();
            generate(&ctx)?;
            eprintln!("generated in {:?}", t.elapsed());
            std::thread::sleep(Duration::from_nanos(SETTLE_NS as u64 + 100_000_000));
            ctx
        }
    };
    let store = Store::open(&tmp.path().join("store"))?;
    let op = ctx_op(&["."], "/src/");
    eprintln!("peak RSS before: {} kB", peak_rss_kb()?);

    let t = Instant::now();
    let cpu = cpu_time();
    let index = FileIndex::load(&store, &ctx);
    let cold = checksum(&op, &Root::open(&ctx)?, &index)?;
    let cold_time = t.elapsed();
    let cold_cpu = cpu_time() - cpu;
    index.save()?;
    let cold_total = t.elapsed();
    eprintln!(
        "cold: {cold_time:?} (CPU {cold_cpu:?}; with index save {cold_total:?}); {} entries, {} files read, {} MiB; peak RSS {} kB",
        cold.stats.entries,
        cold.stats.files_read,
        cold.stats.bytes_read >> 20,
        peak_rss_kb()?
    );
    drop(index);

    let runs: u32 = std::env::var("BIG_CONTEXT_WARM_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for run in 1..=runs {
        let t = Instant::now();
        let cpu = cpu_time();
        let index = FileIndex::load(&store, &ctx);
        let loaded = t.elapsed();
        let warm = checksum(&op, &Root::open(&ctx)?, &index)?;
        let walked = t.elapsed();
        let walked_cpu = cpu_time() - cpu;
        index.save()?;
        let total = t.elapsed();
        assert_eq!(warm.digest, cold.digest);
        assert_eq!(warm.stats.files_read, 0, "{:?}", warm.stats);
        eprintln!(
            "warm {run}: {walked:?} (CPU {walked_cpu:?}; index load {loaded:?}, with save {total:?}); {} files read; peak RSS {} kB",
            warm.stats.files_read,
            peak_rss_kb()?
        );
    }
    Ok(())
}

/// 20,000 files of 64 B..4 KiB in `src/dNNN/`, three 50 MiB files in `assets/`.
fn generate(ctx: &Path) -> Res<()> {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for d in 0..200 {
        let dir = ctx.join(format!("src/d{d:03}"));
        fs::create_dir_all(&dir)?;
        for f in 0..100 {
            let len = 64 + (next() % 4032) as usize;
            let body: String = format!("// file {d}/{f}\n")
                .chars()
                .chain((0..len).map(|i| (b'a' + (i % 26) as u8) as char))
                .take(len)
                .collect();
            fs::write(dir.join(format!("f{f:03}.txt")), body)?;
        }
    }
    fs::create_dir_all(ctx.join("assets"))?;
    let mut chunk = vec![0u8; 1 << 20];
    for b in 0..3 {
        let mut out = fs::File::create(ctx.join(format!("assets/blob-{b}.bin")))?;
        for _ in 0..50 {
            for w in chunk.chunks_mut(8) {
                w.copy_from_slice(&next().to_le_bytes());
            }
            std::io::Write::write_all(&mut out, &chunk)?;
        }
    }
    write(ctx, "app/version.txt", "1.0.0\n", 0o644)
}

/// CPU time of the process's live threads so far (the rayon pool's threads live on), from
/// `/proc/self/task/*/schedstat`.
fn cpu_time() -> Duration {
    let mut ns = 0u64;
    if let Ok(tasks) = fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(stat) = fs::read_to_string(task.path().join("schedstat")) {
                ns += stat
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Duration::from_nanos(ns)
}

fn peak_rss_kb() -> Res<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0))
}
