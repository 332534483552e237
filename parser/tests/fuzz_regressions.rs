//! Replays every input under `tests/fuzz-regressions/` (crashes the fuzzers once found) through the
//! whole parser and the lexer: each must finish without a panic, and any error must render.

use rbuild_parser::shell::{EmptyEnv, Lexer};

#[test]
fn fuzz_regressions_do_not_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let src = String::from_utf8_lossy(&bytes);
        if let Err(e) = rbuild_parser::raw::parse(&src) {
            assert!(!e.render("Dockerfile", &src).is_empty());
        }
        if let Err(e) = rbuild_parser::instruction::parse(&src) {
            assert!(!e.render("Dockerfile", &src).is_empty());
        }
        let lexer = Lexer::new('\\');
        let _ = lexer.process_words(&src, &EmptyEnv);
        let _ = lexer.process_word(&src, &EmptyEnv);
        count += 1;
    }
    println!("fuzz-regressions: {count} inputs replayed");
}
