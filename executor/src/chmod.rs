//! `--chmod`: the mode a copied file or directory gets.
//!
//! * Octal (`755`, `0640`, `4755`): the given bits replace the permission bits and the
//!   setuid/setgid/sticky bits.
//! * Symbolic, chmod(1) syntax (`u=rwX,go=rX`, `+x`, `g=u`, `o-w`): clauses separated by `,`,
//!   each `[ugoa]*` followed by one or more `[+-=]` operations with `[rwxXst]*` or one of
//!   `u`/`g`/`o` (copy that class's current bits). No "who" means `a`; there is no umask (a
//!   build has none). `X` sets execute only on directories and on files that already have an
//!   execute bit (as the mode stands when the clause applies). `s` is setuid for `u` and
//!   setgid for `g`; `t` is the sticky bit (with `o` or `a`).
//!
//! Modes here are the low 12 bits (`0o7777`); the file type is never touched.

use rbuild_parser::instruction::Chmod;

use crate::error::ExecError;

const SETUID: u32 = 0o4000;
const SETGID: u32 = 0o2000;
const STICKY: u32 = 0o1000;

/// Parses a `--chmod` value (octal or symbolic) with the parser's rules.
pub fn parse(spec: &str) -> Result<Chmod, ExecError> {
    rbuild_parser::instruction::parse_chmod(spec).map_err(|reason| ExecError::InvalidChmod {
        spec: spec.to_string(),
        reason,
    })
}

/// The mode an entry whose current mode is `mode` gets under `chmod`. `is_dir` matters for
/// `X`.
pub fn apply(chmod: &Chmod, mode: u32, is_dir: bool) -> Result<u32, ExecError> {
    match chmod {
        Chmod::Octal(bits) => Ok(bits & 0o7777),
        Chmod::Symbolic(spec) => apply_symbolic(spec, mode & 0o7777, is_dir),
    }
}

fn apply_symbolic(spec: &str, mut mode: u32, is_dir: bool) -> Result<u32, ExecError> {
    let bad = |reason: &str| ExecError::InvalidChmod {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    for clause in spec.split(',') {
        let bytes = clause.as_bytes();
        let mut i = 0;
        let (mut u, mut g, mut o) = (false, false, false);
        while let Some(&c) = bytes.get(i) {
            match c {
                b'u' => u = true,
                b'g' => g = true,
                b'o' => o = true,
                b'a' => (u, g, o) = (true, true, true),
                _ => break,
            }
            i += 1;
        }
        if !(u || g || o) {
            (u, g, o) = (true, true, true);
        }
        // The bits of the classes named: permission bits and their special bit.
        let mut who = 0;
        if u {
            who |= 0o700 | SETUID;
        }
        if g {
            who |= 0o070 | SETGID;
        }
        if o {
            who |= 0o007 | STICKY;
        }
        if i >= bytes.len() {
            return Err(bad("a clause needs an operator (+, - or =)"));
        }
        while i < bytes.len() {
            let op = bytes[i];
            if !matches!(op, b'+' | b'-' | b'=') {
                return Err(bad("expected +, - or ="));
            }
            i += 1;
            let mut bits = 0;
            match bytes.get(i) {
                Some(&src @ (b'u' | b'g' | b'o')) => {
                    let shift = match src {
                        b'u' => 6,
                        b'g' => 3,
                        _ => 0,
                    };
                    let rwx = (mode >> shift) & 0o7;
                    bits = rwx * 0o111;
                    i += 1;
                }
                _ => {
                    while let Some(&c) = bytes.get(i) {
                        match c {
                            b'r' => bits |= 0o444,
                            b'w' => bits |= 0o222,
                            b'x' => bits |= 0o111,
                            b'X' => {
                                if is_dir || mode & 0o111 != 0 {
                                    bits |= 0o111;
                                }
                            }
                            b's' => bits |= SETUID | SETGID,
                            b't' => bits |= STICKY,
                            _ => break,
                        }
                        i += 1;
                    }
                }
            }
            let bits = bits & who;
            mode = match op {
                b'+' => mode | bits,
                b'-' => mode & !bits,
                _ => (mode & !who) | bits,
            };
        }
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chmod_table() -> Result<(), ExecError> {
        // (spec, current mode, is_dir, expected)
        let cases: &[(&str, u32, bool, u32)] = &[
            ("755", 0o600, false, 0o755),
            ("0640", 0o777, true, 0o640),
            ("4755", 0o644, false, 0o4755),
            ("0", 0o4755, false, 0o000),
            ("u=rwX,go=rX", 0o600, false, 0o644),
            ("u=rwX,go=rX", 0o700, false, 0o755),
            ("u=rwX,go=rX", 0o600, true, 0o755),
            ("u=rwX,go=rX", 0o4700, false, 0o755),
            ("+x", 0o644, false, 0o755),
            ("a+x", 0o600, false, 0o711),
            ("-w", 0o666, false, 0o444),
            ("o-rwx", 0o777, true, 0o770),
            ("g=u", 0o640, false, 0o660),
            ("go=u", 0o750, false, 0o777),
            ("u+s", 0o755, false, 0o4755),
            ("g+s", 0o755, true, 0o2755),
            ("+t", 0o777, true, 0o1777),
            ("u+t", 0o777, true, 0o777),
            ("=", 0o777, false, 0o000),
            ("u=rw,g=r,o=", 0o777, false, 0o640),
            ("+X", 0o644, false, 0o644),
            ("+X", 0o644, true, 0o755),
            ("+X", 0o744, false, 0o755),
            ("u+x,+X", 0o644, false, 0o755),
            ("ug+rw-x", 0o711, false, 0o661),
            ("a=r,u+w", 0o000, false, 0o644),
        ];
        for (spec, mode, is_dir, want) in cases {
            let c = parse(spec)?;
            let got = apply(&c, *mode, *is_dir)?;
            assert_eq!(
                got, *want,
                "{spec:?} on {mode:o} (dir: {is_dir}) gave {got:o}, want {want:o}"
            );
        }
        Ok(())
    }

    #[test]
    fn bad_specs_are_refused() {
        for spec in ["u+q", "999", "", "u", "x+r", "+r,"] {
            assert!(parse(spec).is_err(), "{spec:?} should be refused");
        }
    }
}
