//! Fuzzes the whole Dockerfile parser: raw nodes, the BuildKit dump, typed instructions, and the
//! rendering of any error against the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = String::from_utf8_lossy(data);
    match rbuild_parser::raw::parse(&src) {
        Ok(raw) => {
            let _ = rbuild_parser::dump::dump(&raw);
        }
        Err(e) => {
            let _ = e.render("Dockerfile", &src);
        }
    }
    if let Err(e) = rbuild_parser::instruction::parse(&src) {
        let _ = e.render("Dockerfile", &src);
    }
});
