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
        // The lexer target reads its mode from the first byte; try every mode on the rest.
        let word = String::from_utf8_lossy(bytes.get(1..).unwrap_or_default());
        let env: Vec<(String, String)> = vec![
            ("PWD".into(), "/home".into()),
            ("EMPTY".into(), String::new()),
            ("SPACED".into(), "a  b c".into()),
        ];
        for mode in 0u8..16 {
            let mut lexer = Lexer::new(if mode & 1 == 0 { '\\' } else { '`' });
            lexer.raw_quotes = mode & 2 != 0;
            lexer.skip_unset_env = mode & 4 != 0;
            lexer.skip_process_quotes = mode & 8 != 0;
            let _ = lexer.process_word_with_matches(&word, &env);
            let _ = lexer.process_words(&word, &env);
            let _ = lexer.process_words(&src, &EmptyEnv);
        }
        count += 1;
    }
    println!("fuzz-regressions: {count} inputs replayed");
}
