//! BuildKit's shell-lexer tables (`envVarTest`, `wordsTest`) run against [`rbuild_parser::shell`].
//!
//! The tables live outside the repository, in `shared/conformance/buildkit-shell/` next to it
//! (their format is described in `shared/conformance/README.md`, section 3). When that directory
//! is missing the tests are skipped, except when `CI=true`, where they fail.

mod common;

use rbuild_parser::shell::Lexer;

/// The table `name`, or `None` (after saying so) when the corpus is absent outside CI.
fn read_table(name: &str) -> Option<String> {
    common::conformance_dir("buildkit-shell").map(|dir| common::read(&dir.join(name)))
}

/// Lines as Go's `bufio.ScanLines` yields them (a trailing `\r` is dropped), numbered from 1.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.strip_suffix('\r').unwrap_or(line)))
}

fn report(table: &str, passed: usize, total: usize, failures: &[String]) {
    assert_eq!(
        passed + failures.len(),
        total,
        "buildkit-shell/{table}: miscounted"
    );
    common::report(&format!("buildkit-shell/{table}"), total, failures);
}

#[test]
fn env_var_test() {
    let Some(text) = read_table("envVarTest") else {
        return;
    };
    let env: Vec<(String, String)> = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let lexer = Lexer::new('\\');

    let (mut total, mut passed) = (0, 0);
    let mut failures = Vec::new();
    for (number, line) in lines(&text) {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.trim().split('|').collect();
        let [platform, input, expected] = fields.as_slice() else {
            failures.push(format!("line {number}: expected 3 fields: {line:?}"));
            continue;
        };
        let (platform, input, expected) = (platform.trim(), input.trim(), expected.trim());
        match platform {
            "W" => continue,
            "A" | "U" => {}
            other => {
                failures.push(format!("line {number}: unknown platform {other:?}"));
                continue;
            }
        }
        total += 1;
        let got = lexer.process_word(input, &env);
        let ok = match &got {
            Ok(value) => expected != "error" && value == expected,
            Err(_) => expected == "error",
        };
        if ok {
            passed += 1;
        } else {
            failures.push(format!(
                "line {number}: {input:?}: expected {expected:?}, got {got:?}"
            ));
        }
    }
    report("envVarTest", passed, total, &failures);
}

#[test]
fn words_test() {
    let Some(text) = read_table("wordsTest") else {
        return;
    };
    let lexer = Lexer::new('\\');

    let mut env: Vec<(String, String)> = Vec::new();
    let (mut total, mut passed) = (0, 0);
    let mut failures = Vec::new();
    for (number, line) in lines(&text) {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            // Trailing spaces of the value are significant.
            let entry = rest.trim_start_matches(' ');
            let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
            env.push((name.to_owned(), value.to_owned()));
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        let [input, expected] = fields.as_slice() else {
            failures.push(format!("line {number}: expected exactly one '|': {line:?}"));
            continue;
        };
        let input = input.trim();
        let expected: Vec<&str> = expected.trim_start_matches(' ').split(',').collect();
        total += 1;
        let got = match lexer.process_words(input, &env) {
            Ok(words) => words,
            Err(_) => vec!["error".to_owned()],
        };
        if got == expected {
            passed += 1;
        } else {
            failures.push(format!(
                "line {number}: {input:?}: expected {expected:?}, got {got:?}"
            ));
        }
    }
    report("wordsTest", passed, total, &failures);
}
