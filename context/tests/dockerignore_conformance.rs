//! moby/patternmatcher's `.dockerignore` tables run against [`rbuild_context`].
//!
//! The tables live outside the repository, in `shared/conformance/dockerignore/` next to it (their
//! format is described in `shared/conformance/README.md`, section 4). When that directory is
//! missing the tests are skipped, except when `CI=true`, where they fail.

use std::path::{Path, PathBuf};

use rbuild_context::{
    clean_path, matches_legacy, read_patterns, MatchInfo, Pattern, PatternKind, PatternMatcher,
};

const DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/conformance/dockerignore"
);

/// The file `name` of the corpus, or `None` (after saying so) when the corpus is absent outside CI.
fn corpus_file(name: &str) -> Option<PathBuf> {
    let dir = Path::new(DIR);
    if !dir.is_dir() {
        let message = format!("conformance corpus not found at {}", dir.display());
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{message} (required when CI=true)");
        }
        println!("{message}; skipping dockerignore/{name}");
        return None;
    }
    Some(dir.join(name))
}

fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn report(set: &str, passed: usize, total: usize, failures: &[String]) {
    println!("dockerignore/{set}: {passed} of {total} cases pass");
    assert!(total > 0, "dockerignore/{set}: no cases found");
    assert!(
        failures.is_empty(),
        "dockerignore/{set}: {} of {total} cases fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A TSV table (header dropped): each row with its 1-based line number. No quoting of any kind.
fn tsv_rows(text: &str, columns: usize, file: &str) -> Vec<(usize, Vec<String>)> {
    let mut rows = Vec::new();
    for (index, line) in text.split('\n').enumerate().skip(1) {
        if line.is_empty() {
            continue;
        }
        let fields: Vec<String> = line.split('\t').map(str::to_owned).collect();
        assert_eq!(
            fields.len(),
            columns,
            "{file}:{}: expected {columns} fields in {line:?}",
            index + 1
        );
        rows.push((index + 1, fields));
    }
    rows
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Match,
    NoMatch,
    Error,
}

fn expected_outcome(text: &str) -> Outcome {
    match text {
        "match" => Outcome::Match,
        "nomatch" => Outcome::NoMatch,
        "error" => Outcome::Error,
        other => panic!("unknown expectation {other:?}"),
    }
}

fn from_bool(matched: bool) -> Outcome {
    if matched {
        Outcome::Match
    } else {
        Outcome::NoMatch
    }
}

/// Walks `path`'s ancestors the way a directory walker (and upstream's test) does: the prefixes
/// of its cleaned parent directory, each given its parent's results, then `path` itself.
fn walk(matcher: &PatternMatcher, path: &str) -> bool {
    let parent = match path.rfind('/') {
        Some(i) => clean_path(&path[..=i]),
        None => ".".to_owned(),
    };
    let mut info = MatchInfo::default();
    if parent != "." {
        let segments: Vec<&str> = parent.split('/').collect();
        for n in 1..=segments.len() {
            let ancestor = segments[..n].join("/");
            info = matcher.matches_using_parent_results(&ancestor, &info).1;
        }
    }
    matcher.matches_using_parent_results(path, &info).0
}

/// Runs one row; `Err` describes a problem other than a wrong outcome.
fn evaluate(patterns: &[String], path: &str, api: &str) -> Result<(Outcome, String), String> {
    match api {
        "MatchesOrParentMatches" => {
            let matcher = match PatternMatcher::new(patterns) {
                Ok(m) => m,
                Err(e) => return Ok((Outcome::Error, e.to_string())),
            };
            let direct = matcher.matches(path);
            let walked = walk(&matcher, path);
            let (no_info, _) = matcher.matches_using_parent_results(path, &MatchInfo::default());
            if direct != walked || direct != no_info {
                return Err(format!(
                    "variants disagree: matches={direct}, parent-results walk={walked}, no parent info={no_info}"
                ));
            }
            Ok((from_bool(direct), String::new()))
        }
        "Matches" => match matches_legacy(path, patterns) {
            Ok(matched) => Ok((from_bool(matched), String::new())),
            Err(e) => Ok((Outcome::Error, e.to_string())),
        },
        other => Err(format!("unknown api {other:?}")),
    }
}

fn applies(platform: &str) -> bool {
    // rbuild uses Unix pattern semantics (`\` escapes) on every platform.
    matches!(platform, "all" | "unix")
}

/// Shared driver of `patterns.tsv` and `multi-patterns.tsv`.
fn run_table(file: &str, patterns_of: impl Fn(&str) -> Vec<String>) {
    let Some(path) = corpus_file(file) else {
        return;
    };
    let text = read_text(&path);
    let (mut total, mut passed) = (0, 0);
    let mut failures = Vec::new();
    for (line, fields) in tsv_rows(&text, 6, file) {
        let [first, path, expected, api, platform, origin] = &fields[..] else {
            unreachable!()
        };
        if !applies(platform) {
            continue;
        }
        total += 1;
        let patterns = patterns_of(first);
        let want = expected_outcome(expected);
        let case =
            format!("{file}:{line} ({origin}, {api}): patterns {patterns:?} vs path {path:?}");
        match evaluate(&patterns, path, api) {
            Ok((got, _)) if got == want => passed += 1,
            Ok((got, detail)) => {
                failures.push(format!("{case}: expected {want:?}, got {got:?} {detail}"))
            }
            Err(problem) => failures.push(format!("{case}: {problem}")),
        }
    }
    report(file, passed, total, &failures);
}

#[test]
fn patterns_tsv() {
    run_table("patterns.tsv", |pattern| vec![pattern.to_owned()]);
}

#[test]
fn multi_patterns_tsv() {
    run_table("multi-patterns.tsv", |json| {
        serde_json::from_str::<Vec<String>>(json)
            .unwrap_or_else(|e| panic!("bad JSON pattern list {json:?}: {e}"))
    });
}

/// `compile.tsv` is informative, but its `match_type` column is observable behaviour (a suffix
/// pattern matches differently from a glob), so the classification is checked too.
#[test]
fn compile_tsv_classification() {
    let Some(path) = corpus_file("compile.tsv") else {
        return;
    };
    let text = read_text(&path);
    let (mut total, mut passed) = (0, 0);
    let mut failures = Vec::new();
    for (line, fields) in tsv_rows(&text, 4, "compile.tsv") {
        total += 1;
        let (pattern, match_type) = (&fields[0], fields[1].as_str());
        let want = match match_type {
            "exact" => PatternKind::Exact,
            "prefix" => PatternKind::Prefix,
            "suffix" => PatternKind::Suffix,
            "regexp" => PatternKind::Glob,
            other => panic!("compile.tsv:{line}: unknown match_type {other:?}"),
        };
        match Pattern::parse(pattern) {
            Ok(Some(p)) if p.kind() == want => passed += 1,
            Ok(Some(p)) => failures.push(format!(
                "compile.tsv:{line}: {pattern:?}: expected {want:?}, got {:?}",
                p.kind()
            )),
            Ok(None) => failures.push(format!("compile.tsv:{line}: {pattern:?}: treated as empty")),
            Err(e) => failures.push(format!("compile.tsv:{line}: {pattern:?}: {e}")),
        }
    }
    report("compile.tsv", passed, total, &failures);
}

#[test]
fn readall() {
    let Some(input) = corpus_file("readall/input.dockerignore") else {
        return;
    };
    let expected = input.with_file_name("expected.txt");
    let file = std::fs::File::open(&input)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", input.display()));
    let got = read_patterns(file).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
    let want: Vec<String> = read_text(&expected).lines().map(str::to_owned).collect();

    let total = got.len().max(want.len());
    let mut passed = 0;
    let mut failures = Vec::new();
    for i in 0..total {
        match (got.get(i), want.get(i)) {
            (Some(g), Some(w)) if g == w => passed += 1,
            (g, w) => failures.push(format!(
                "readall pattern {}: expected {w:?}, got {g:?}",
                i + 1
            )),
        }
    }
    report("readall", passed, total, &failures);
    // The lone `!` survives reading but is rejected by the matcher.
    assert!(
        PatternMatcher::new(&got).is_err(),
        "a lone `!` must be rejected by the matcher"
    );
}
