//! End-to-end tests of the `rbuild` binary's parser commands, driving the real executable.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{output_with_input, text, RBUILD};

fn rbuild(args: &[&str], stdin: Option<&str>) -> Output {
    output_with_input(Command::new(RBUILD).args(args), stdin)
}

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(rel)
}

#[test]
fn check_accepts_the_example() {
    let path = testdata("examples/hello/Dockerfile");
    let out = rbuild(&["check", path.to_str().unwrap_or_default()], None);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("OK (2 stages"),
        "stdout: {}",
        text(&out.stdout)
    );
}

/// Each bad Dockerfile under `testdata/parser-errors/NAME.Dockerfile` has `NAME.expected`: the exact
/// error output (with `FILE` standing for the path) that `rbuild check` must print.
#[test]
fn check_reports_errors_with_location_and_caret() {
    let dir = testdata("parser-errors");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "Dockerfile"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for case in &cases {
        let file = case.to_str().unwrap_or_default();
        let out = rbuild(&["check", file], None);
        let expected = std::fs::read_to_string(case.with_extension("expected"))
            .unwrap_or_else(|e| panic!("{}: {e}", case.display()))
            .replace("FILE", file);
        let got = text(&out.stderr);
        if out.status.code() != Some(1) || got != expected {
            failures.push(format!(
                "{file}: exit {:?}\n got:\n{got}\n want:\n{expected}",
                out.status.code()
            ));
        }
    }
    println!(
        "parser-errors: {} of {} cases pass",
        cases.len() - failures.len(),
        cases.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn debug_parse_dump_reads_stdin() {
    let out = rbuild(
        &["debug", "parse", "--dump", "-"],
        Some("FROM a AS b\nCOPY --from=b [\"x\", \"/y\"]\nENV k=\"v w\"\n"),
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "(from \"a\" \"AS\" \"b\")\n(copy [\"--from=b\"] \"x\" \"/y\")\n(env \"k\" \"\\\"v w\\\"\" \"=\")\n");
}

#[test]
fn debug_parse_prints_typed_tree() {
    let out = rbuild(
        &["debug", "parse", "-"],
        Some("FROM busybox\nRUN --network=none echo hi\n"),
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("busybox") && stdout.contains("echo hi"),
        "{stdout}"
    );
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = rbuild(&["check", "/nonexistent/Dockerfile"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("reading /nonexistent/Dockerfile"),
        "{}",
        text(&out.stderr)
    );
}
