//! The BuildKit AST dump: one `(keyword ["--flags"] "arg" …)` line per instruction, with Go's
//! `strconv.Quote` quoting. It is what BuildKit's own parser tests compare against.

use crate::node::{Node, RawDockerfile};

/// Renders a whole file: one line per instruction, each ending in `\n`.
pub fn dump(file: &RawDockerfile) -> String {
    let mut out = String::new();
    for node in &file.nodes {
        out.push('(');
        dump_node(node, &mut out);
        out.push_str(")\n");
    }
    out
}

/// Renders one node without its outer parentheses.
pub fn dump_node(node: &Node, out: &mut String) {
    out.push_str(&node.keyword);
    if !node.flags.is_empty() {
        out.push_str(" [");
        for (i, f) in node.flags.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            go_quote(&f.value, out);
        }
        out.push(']');
    }
    if let Some(inner) = &node.inner {
        out.push_str(" (");
        dump_node(inner, out);
        out.push(')');
    }
    for arg in &node.args {
        out.push(' ');
        go_quote(&arg.value, out);
    }
}

/// Go's `strconv.Quote`: `"`-delimited, with `\"`, `\\`, the C escapes, `\xNN` for other ASCII
/// control bytes and `\uNNNN` for non-printable non-ASCII characters.
pub fn go_quote(s: &str, out: &mut String) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_ascii() => out.push(c),
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) <= 0xffff => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
}

/// An approximation of Go's `unicode.IsPrint` for non-ASCII characters: everything but control
/// characters, non-ASCII spaces, format characters and the replacement-free private/unassigned ranges.
fn is_go_printable(c: char) -> bool {
    let u = c as u32;
    !(c.is_control()
        || (c.is_whitespace() && c != ' ')
        || matches!(u, 0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x206f | 0xfeff | 0xfff9..=0xfffb)
        || (0xd800..=0xdfff).contains(&u)
        || (0xe000..=0xf8ff).contains(&u)
        || u == 0xfffe
        || u == 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        let cases = [
            ("plain", r#""plain""#),
            ("a\"b\\c", r#""a\"b\\c""#),
            ("\0\u{1}\u{7f}", r#""\x00\x01\x7f""#),
            ("tab\tnl\n", r#""tab\tnl\n""#),
            ("é☃한국어", "\"é☃한국어\""),
            ("\u{a0}\u{200b}", r#""\u00a0\u200b""#),
        ];
        for (input, want) in cases {
            let mut out = String::new();
            go_quote(input, &mut out);
            assert_eq!(out, want);
        }
    }
}
