//! Heredoc detection: which words of an instruction line start here-documents (`<<EOF`,
//! `<<-EOF`, `3<<'EOF'`), their delimiter names, and whether their bodies are expanded.

use crate::node::Heredoc;
use crate::raw::heredoc_marker;
use crate::shell::{EmptyEnv, Lexer, ShellError};
use crate::span::Span;

/// Splits an instruction line into words the way BuildKit's heredoc detector sees them: quotes and
/// escapes kept verbatim, and `<<` (or `<<-`) swallowing the whitespace that follows it, so that
/// `<< EOF` stays one word. Returns `None` for an unbalanced quote (then nothing is a heredoc).
fn heredoc_words(line: &str) -> Option<Vec<&str>> {
    let b = line.as_bytes();
    let mut words = Vec::new();
    let mut start: Option<usize> = None;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) => {
                if c == b'\\' && q == b'"' {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
            }
            None if c.is_ascii_whitespace() => {
                if let Some(s) = start.take() {
                    words.push(&line[s..i]);
                }
            }
            None => {
                start.get_or_insert(i);
                match c {
                    b'\'' | b'"' => quote = Some(c),
                    b'\\' => i += 1,
                    b'<' if b.get(i + 1) == Some(&b'<') => {
                        i += 2;
                        if b.get(i) == Some(&b'-') {
                            i += 1;
                        }
                        while i < b.len() && b[i].is_ascii_whitespace() {
                            i += 1;
                        }
                        continue;
                    }
                    _ => {}
                }
            }
        }
        i += 1;
    }
    if quote.is_some() {
        return None;
    }
    if let Some(s) = start {
        words.push(&line[s.min(line.len())..]);
    }
    Some(words)
}

/// Parses one word as a heredoc start (BuildKit's `ParseHeredoc`). `Ok(None)`: not a heredoc.
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, ShellError> {
    let Some((fd, chomp, rest)) = heredoc_marker(word) else {
        return Ok(None);
    };
    if rest.is_empty() {
        return Ok(None);
    }
    let mut lexer = Lexer::new('\\');
    lexer.skip_unset_env = true;
    let words = lexer.process_words(rest, &EmptyEnv)?;
    let [name] = words.as_slice() else {
        return Ok(None);
    };
    lexer.raw_quotes = true;
    let raw = lexer.process_words(rest, &EmptyEnv)?;
    let quotes = |s: &str| s.chars().filter(|c| matches!(c, '\'' | '"')).count();
    let expand = raw.first().is_some_and(|r| quotes(r) == quotes(name));
    Ok(Some(Heredoc {
        name: name.clone(),
        file_descriptor: fd,
        expand,
        chomp,
        content: String::new(),
        span: Span::default(),
    }))
}

/// The heredocs an instruction's first line starts, in order.
pub fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, ShellError> {
    let Some(words) = heredoc_words(line) else {
        return Ok(Vec::new());
    };
    let mut docs = Vec::new();
    for word in words {
        if let Some(doc) = parse_heredoc(word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_quotes_and_join_heredoc_markers() {
        let cases: &[(&str, Option<&[&str]>)] = &[
            ("RUN <<EOF", Some(&["RUN", "<<EOF"])),
            ("RUN << -EOF", Some(&["RUN", "<< -EOF"])),
            ("RUN <<- EOF x", Some(&["RUN", "<<- EOF", "x"])),
            ("RUN '<<EOF' \"a b\"", Some(&["RUN", "'<<EOF'", "\"a b\""])),
            ("RUN 'open", None),
        ];
        for (line, want) in cases {
            assert_eq!(heredoc_words(line).as_deref(), *want, "{line:?}");
        }
    }
}
