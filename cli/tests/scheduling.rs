//! How stages are scheduled, with the real `rbuild` binary: a failure stops the stages still
//! running at their next step and is reported with every other failure that happened; `--jobs 1`
//! runs one stage at a time.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{text, Fixture};

impl Fixture {
    /// `rbuild build EXTRA… -f DOCKERFILE CTX`.
    fn build_file(&self, dockerfile: &Path, ctx: &Path, extra: &[&str]) -> Output {
        self.command(&["build"])
            .args(extra)
            .arg("-f")
            .arg(dockerfile)
            .arg(ctx)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn dockerfile(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
        p
    }
}

#[test]
fn a_failure_stops_the_other_stages_and_all_failures_are_reported() {
    let Some(fx) = Fixture::new("fail") else {
        return;
    };
    let ctx = fx.dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap_or_else(|e| panic!("{e}"));
    // `a` fails at once; `b` is in its sleep then and must not start its next step; `c`
    // fails too while `a` fails (both failures are reported).
    let df = fx.dockerfile(
        "Dockerfile",
        "FROM busybox AS a\nRUN exit 3\n\
         FROM busybox AS b\nRUN sleep 1\nRUN echo never-started\n\
         FROM busybox AS c\nRUN exit 4\n\
         FROM busybox\nCOPY --from=a / /a\nCOPY --from=b / /b\nCOPY --from=c / /c\n",
    );
    let out = fx.build_file(&df, &ctx, &["--progress=plain"]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains("RUN echo never-started"), "{err}");
    assert!(err.contains("exit code: 3"), "{err}");
    assert!(err.contains("exit code: 4"), "{err}");
}

#[test]
fn jobs_1_runs_one_stage_at_a_time() {
    let Some(fx) = Fixture::new("jobs") else {
        return;
    };
    let ctx = fx.dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap_or_else(|e| panic!("{e}"));
    let df = fx.dockerfile(
        "Dockerfile",
        "FROM busybox AS a\nRUN echo a1\nRUN echo a2\n\
         FROM busybox AS b\nRUN echo b1\nRUN echo b2\n\
         FROM busybox\nCOPY --from=a /bin/busybox /a\nCOPY --from=b /bin/busybox /b\n",
    );
    let out = fx.build_file(
        &df,
        &ctx,
        &["--progress=plain", "--jobs", "1", "--no-cache"],
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    // The stages' step lines never interleave: one stage's block, then the other's.
    let stages: Vec<char> = err
        .lines()
        .filter_map(|l| l.split_once(" [").map(|(_, r)| r))
        .filter_map(|r| r.chars().next())
        .filter(|c| *c == 'a' || *c == 'b')
        .collect();
    let switches = stages.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(switches, 1, "{stages:?}\n{err}");
}
