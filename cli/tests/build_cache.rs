//! The build cache end to end with the real `rbuild` binary: an unchanged rebuild runs no
//! step (every step `CACHED`, the same layers, a RUN's side effect not repeated), in a new
//! process; what must not invalidate a step (an unselected file, a `.dockerignore`d one, mtimes,
//! an ARG the step does not use) and what must (selected content, a used ARG — and everything
//! after the first changed step); `--no-cache` and `--no-cache-filter`.

mod common;

use std::path::Path;

use common::{read, state_of, step_states, text, Fixture};

/// `UNUSED` is declared after the RUN: a RUN sees (and is keyed on) every ARG in scope, as in
/// BuildKit, but the COPY after it does not use it.
const DOCKERFILE: &str = "FROM busybox\n\
ARG USED=1\n\
COPY app/ /app/\n\
RUN echo \"run $USED $(cat /proc/sys/kernel/random/uuid)\" > /ran\n\
ARG UNUSED=1\n\
COPY other.txt /other.txt\n";

#[test]
fn an_unchanged_rebuild_runs_nothing_and_changes_invalidate_exactly_what_they_should() {
    let Some(fx) = Fixture::new("rebuild") else {
        return;
    };
    let ctx = fx.context(
        "ctx",
        DOCKERFILE,
        &[
            ("app/a.txt", "a\n"),
            ("app/sub/b.txt", "b\n"),
            ("other.txt", "other\n"),
            ("unused.txt", "not copied\n"),
            ("app/ignored.log", "ignored\n"),
            (".dockerignore", "app/*.log\n"),
        ],
    );
    let (first, dest) = fx.build_local("first", &ctx, &[]);
    let first_err = text(&first.stderr);
    assert!(first.status.success(), "{first_err}");
    assert!(!first_err.contains("CACHED"), "{first_err}");
    let ran_first = read(&dest.join("ran"));

    // Unchanged, in a new process: every step cached, the RUN's output is the first build's.
    let (second, dest) = fx.build_local("second", &ctx, &[]);
    let err = text(&second.stderr);
    assert!(second.status.success(), "{err}");
    let states = step_states(&err);
    for step in ["COPY app/", "RUN echo", "COPY other.txt"] {
        assert_eq!(state_of(&states, step), "CACHED", "{step}: {err}");
    }
    assert_eq!(read(&dest.join("ran")), ran_first);

    // Not invalidating: an unselected file, an ignored file, an mtime, an unused ARG.
    std::fs::write(Path::new(&ctx).join("unused.txt"), "changed\n")
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(Path::new(&ctx).join("app/ignored.log"), "changed\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let a = Path::new(&ctx).join("app/a.txt");
    let content = read(&a);
    std::fs::write(&a, content).unwrap_or_else(|e| panic!("{e}"));
    let (third, dest) = fx.build_local("third", &ctx, &["--build-arg", "UNUSED=2"]);
    let err = text(&third.stderr);
    assert!(third.status.success(), "{err}");
    let states = step_states(&err);
    for step in ["COPY app/", "RUN echo", "COPY other.txt"] {
        assert_eq!(state_of(&states, step), "CACHED", "{step}: {err}");
    }
    assert_eq!(read(&dest.join("ran")), ran_first);

    // A used ARG: the RUN and what follows run again; the COPY before it does not.
    let (fourth, dest) = fx.build_local("fourth", &ctx, &["--build-arg", "USED=2"]);
    let err = text(&fourth.stderr);
    assert!(fourth.status.success(), "{err}");
    let states = step_states(&err);
    assert_eq!(state_of(&states, "COPY app/"), "CACHED", "{err}");
    assert_eq!(state_of(&states, "RUN echo"), "RAN", "{err}");
    assert_eq!(state_of(&states, "COPY other.txt"), "RAN", "{err}");
    assert!(read(&dest.join("ran")).starts_with("run 2 "));

    // Selected content: the COPY and everything after it run again.
    std::fs::write(Path::new(&ctx).join("app/sub/b.txt"), "b2\n").unwrap_or_else(|e| panic!("{e}"));
    let (fifth, dest) = fx.build_local("fifth", &ctx, &[]);
    let err = text(&fifth.stderr);
    assert!(fifth.status.success(), "{err}");
    let states = step_states(&err);
    for step in ["COPY app/", "RUN echo", "COPY other.txt"] {
        assert_eq!(state_of(&states, step), "RAN", "{step}: {err}");
    }
    assert_ne!(read(&dest.join("ran")), ran_first);
    assert_eq!(read(&dest.join("app/sub/b.txt")), "b2\n");

    // --no-cache runs everything; --no-cache-filter only the named stage.
    let (sixth, _) = fx.build_local("sixth", &ctx, &["--no-cache"]);
    let err = text(&sixth.stderr);
    assert!(sixth.status.success(), "{err}");
    assert!(!err.contains("CACHED"), "{err}");
}

#[test]
fn no_cache_filter_reruns_only_the_named_stages() {
    let Some(fx) = Fixture::new("filter") else {
        return;
    };
    let ctx = fx.context(
        "ctx",
        "FROM busybox AS one\nRUN echo one > /one\nFROM busybox AS two\nRUN echo two > /two\nFROM busybox\nCOPY --from=one /one /one\nCOPY --from=two /two /two\n",
        &[],
    );
    let (first, _) = fx.build_local("first", &ctx, &[]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let (second, dest) = fx.build_local("second", &ctx, &["--no-cache-filter", "two"]);
    let err = text(&second.stderr);
    assert!(second.status.success(), "{err}");
    let states = step_states(&err);
    assert_eq!(state_of(&states, "RUN echo one"), "CACHED", "{err}");
    assert_eq!(state_of(&states, "RUN echo two"), "RAN", "{err}");
    assert_eq!(read(&dest.join("two")), "two\n");
    assert_eq!(read(&dest.join("one")), "one\n");
}

/// As with BuildKit, an unchanged rebuild gives the very same image (its history keeps the times
/// the steps first ran), and it writes nothing to the store: no blob, no image index, no file
/// digest index.
#[test]
fn an_unchanged_rebuild_gives_the_same_image_and_writes_nothing() {
    let Some(fx) = Fixture::new("same-image") else {
        return;
    };
    let ctx = fx.context(
        "ctx",
        "FROM busybox\nCOPY a.txt /a.txt\nRUN cat /proc/sys/kernel/random/uuid > /ran\nENV X=1\nLABEL l=1\n",
        &[("a.txt", "a\n")],
    );
    let build = |name: &str| {
        let iid = fx.dir.join(name);
        let iid_arg = iid.display().to_string();
        fx.ok(&["build", "-q", "--iidfile", &iid_arg, "-t", "same", &ctx]);
        read(&iid)
    };
    let first = build("first.iid");
    let inspect = || fx.ok(&["inspect", "same"]);
    let inspected = inspect();
    // Every file of the store, with its modification time.
    let snapshot = || {
        let mut files = Vec::new();
        let mut dirs = vec![fx.root.join("v1")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{e}")) {
                let e = e.unwrap_or_else(|e| panic!("{e}"));
                let md = std::fs::symlink_metadata(e.path()).unwrap_or_else(|e| panic!("{e}"));
                let rel = e.path().strip_prefix(&fx.root).map(Path::to_path_buf);
                let rel = rel.unwrap_or_else(|e| panic!("{e}"));
                // Snapshots and cache mounts are trees of their own; locks are touched by design.
                if md.is_dir() && !rel.starts_with("v1/snapshots") && !rel.starts_with("v1/tmp") {
                    dirs.push(e.path());
                } else if md.is_file() && !rel.ends_with("lock") {
                    files.push((rel, md.modified().unwrap_or_else(|e| panic!("{e}"))));
                }
            }
        }
        files.sort();
        files
    };
    let before = snapshot();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let second = build("second.iid");
    assert_eq!(first, second, "an unchanged rebuild gave another image");
    assert_eq!(inspect(), inspected);
    assert_eq!(
        snapshot(),
        before,
        "an unchanged rebuild wrote to the store"
    );

    // A change makes a new image whose unchanged steps keep their times.
    std::fs::write(Path::new(&ctx).join("a.txt"), "b\n").unwrap_or_else(|e| panic!("{e}"));
    let third = build("third.iid");
    assert_ne!(third, first);
}
