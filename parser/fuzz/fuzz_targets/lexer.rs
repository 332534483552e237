//! Fuzzes the shell-word lexer in every mode with a small fixed environment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rbuild_parser::shell::Lexer;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Ok(word) = std::str::from_utf8(rest) else { return };
    let env: Vec<(String, String)> = vec![
        ("PWD".into(), "/home".into()),
        ("EMPTY".into(), String::new()),
        ("SPACED".into(), "a  b c".into()),
    ];
    let mut lexer = Lexer::new(if mode & 1 == 0 { '\\' } else { '`' });
    lexer.raw_quotes = mode & 2 != 0;
    lexer.skip_unset_env = mode & 4 != 0;
    lexer.skip_process_quotes = mode & 8 != 0;
    let _ = lexer.process_word_with_matches(word, &env);
    let _ = lexer.process_words(word, &env);
});
