//! BuildKit's parser conformance sets, read from `../shared/conformance/`: the AST dumps of
//! `buildkit-parser/` and the heredoc tables of `buildkit-heredoc/`. (The `real-world/` corpus is
//! parsed through the typed layer in `typed.rs`.)

mod common;

use common::{conformance_dir, read, report, subdirs};
use rbuild_parser::{dump::dump, heredoc, raw};

#[test]
fn buildkit_parser_positive_cases_dump_exactly() {
    let Some(dir) = conformance_dir("buildkit-parser/testfiles") else {
        return;
    };
    let cases = subdirs(&dir);
    let mut failures = Vec::new();
    for case in &cases {
        let src = read(&case.join("Dockerfile"));
        let want = read(&case.join("result"));
        match raw::parse(&src) {
            Ok(file) => {
                let got = dump(&file);
                if got != want {
                    failures.push(format!("{}:\n got:\n{got}\n want:\n{want}", case.display()));
                }
            }
            Err(e) => failures.push(format!(
                "{}: {}",
                case.display(),
                e.render("Dockerfile", &src)
            )),
        }
    }
    report("buildkit-parser/testfiles", cases.len(), &failures);
}

#[test]
fn buildkit_parser_negative_cases_are_rejected() {
    let Some(dir) = conformance_dir("buildkit-parser/testfiles-negative") else {
        return;
    };
    let cases = subdirs(&dir);
    let failures: Vec<String> = cases
        .iter()
        .filter(|case| raw::parse(&read(&case.join("Dockerfile"))).is_ok())
        .map(|case| format!("{}: parsed, but must be rejected", case.display()))
        .collect();
    report("buildkit-parser/testfiles-negative", cases.len(), &failures);
}

#[test]
fn buildkit_parser_line_numbers() {
    let Some(dir) = conformance_dir("buildkit-parser/testfile-line") else {
        return;
    };
    let file = raw::parse(&read(&dir.join("Dockerfile"))).unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<(usize, usize)> = file
        .nodes
        .iter()
        .map(|n| (n.start_line, n.end_line))
        .collect();
    assert_eq!(lines, [(5, 5), (11, 12), (17, 31)]);
    let first = file.nodes.first().map(|n| n.start_line);
    let last = file.nodes.last().map(|n| n.end_line);
    assert_eq!((first, last), (Some(5), Some(31)));
    report("buildkit-parser/testfile-line", 1, &[]);
}

#[derive(serde::Deserialize)]
struct ExpectedDoc {
    name: String,
    file_descriptor: u32,
    expand: bool,
    chomp: bool,
    content: String,
}

#[derive(serde::Deserialize)]
struct ExpectedChild {
    child_index: usize,
    heredocs: Option<Vec<ExpectedDoc>>,
}

#[test]
fn buildkit_heredoc_extracts() {
    let Some(dir) = conformance_dir("buildkit-heredoc") else {
        return;
    };
    let mut failures = Vec::new();
    let mut total = 0;
    for set in ["extracts", "json-form"] {
        let src = read(&dir.join(set).join("Dockerfile"));
        let expected: Vec<ExpectedChild> =
            serde_json::from_str(&read(&dir.join(set).join("expected.json")))
                .unwrap_or_else(|e| panic!("{set}: {e}"));
        let file = match raw::parse(&src) {
            Ok(f) => f,
            Err(e) => panic!("{set}: {}", e.render("Dockerfile", &src)),
        };
        for child in expected {
            total += 1;
            let Some(node) = file.nodes.get(child.child_index) else {
                failures.push(format!("{set} #{}: no such instruction", child.child_index));
                continue;
            };
            let got: Vec<_> = node
                .heredocs
                .iter()
                .map(|d| {
                    (
                        d.name.clone(),
                        d.file_descriptor,
                        d.expand,
                        d.chomp,
                        d.content.clone(),
                    )
                })
                .collect();
            let want: Vec<_> = child
                .heredocs
                .unwrap_or_default()
                .into_iter()
                .map(|d| (d.name, d.file_descriptor, d.expand, d.chomp, d.content))
                .collect();
            if got != want {
                failures.push(format!(
                    "{set} #{} `{}`:\n got  {got:?}\n want {want:?}",
                    child.child_index, node.original
                ));
            }
        }
    }
    report("buildkit-heredoc/extracts+json-form", total, &failures);
}

/// Rows of a header-first TSV file.
fn tsv_rows(path: &std::path::Path) -> Vec<Vec<String>> {
    read(path)
        .lines()
        .skip(1)
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[test]
fn buildkit_heredoc_words() {
    let Some(dir) = conformance_dir("buildkit-heredoc") else {
        return;
    };
    let rows = tsv_rows(&dir.join("heredoc-words.tsv"));
    let mut failures = Vec::new();
    for row in &rows {
        let (word, want) = (&row[0], row.get(1).map_or("", String::as_str));
        let got = match heredoc::parse_heredoc(word) {
            Ok(Some(d)) => d.name,
            Ok(None) => "!none".into(),
            Err(_) => "!error".into(),
        };
        if got != want {
            failures.push(format!("{word:?}: got {got:?}, want {want:?}"));
        }
    }
    report("buildkit-heredoc/heredoc-words.tsv", rows.len(), &failures);
}

#[test]
fn buildkit_heredoc_lines() {
    let Some(dir) = conformance_dir("buildkit-heredoc") else {
        return;
    };
    let rows = tsv_rows(&dir.join("heredoc-lines.tsv"));
    let mut failures = Vec::new();
    for row in &rows {
        let want: Vec<String> =
            serde_json::from_str(&row[1]).unwrap_or_else(|e| panic!("{row:?}: {e}"));
        let got: Vec<String> = match heredoc::heredocs_from_line(&row[0]) {
            Ok(docs) => docs.into_iter().map(|d| d.name).collect(),
            Err(e) => vec![format!("error: {e}")],
        };
        if got != want {
            failures.push(format!("{:?}: got {got:?}, want {want:?}", row[0]));
        }
    }
    report("buildkit-heredoc/heredoc-lines.tsv", rows.len(), &failures);
}
