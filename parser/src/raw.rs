//! Text → raw nodes, as BuildKit's Dockerfile parser reads it: parser directives, the escape
//! character, line continuations (with comment and blank lines inside), heredoc bodies, instruction
//! flags, and each instruction's arguments in JSON or shell form.
//!
//! Every node and every argument keeps the byte span it came from, so later errors can point at it.

use nom::bytes::complete::{tag, take_while, take_while_m_n};
use nom::character::complete::char as chr;
use nom::combinator::{all_consuming, opt, recognize};
use nom::sequence::{pair, tuple};
use nom::IResult;

use crate::error::{ParseError, ParseErrorKind};
use crate::heredoc;
use crate::node::{Directives, Node, RawDockerfile, Warning};
use crate::span::{Span, Spanned};

/// The longest physical line BuildKit accepts.
pub const MAX_LINE_LEN: usize = 65535;

/// Instructions whose arguments may start heredocs.
const HEREDOC_INSTRUCTIONS: &[&str] = &["run", "copy", "add"];

/// One physical line of the source.
#[derive(Clone, Copy)]
struct PhysLine<'a> {
    /// The text without its line terminator.
    text: &'a str,
    /// Byte offset of `text` in the source.
    start: usize,
    /// Byte offset just past the line terminator.
    end: usize,
}

/// Splits the source into physical lines (`\n`; a `\r` before it is dropped).
fn physical_lines(src: &str) -> Vec<PhysLine<'_>> {
    let mut lines = Vec::new();
    let mut start = 0;
    while start < src.len() {
        let (text_end, end) = match src[start..].find('\n') {
            Some(i) => (start + i, start + i + 1),
            None => (src.len(), src.len()),
        };
        let text = src[start..text_end].trim_end_matches(['\r', '\n']);
        lines.push(PhysLine { text, start, end });
        start = end;
    }
    lines
}

/// A logical line: continuations joined. Remembers where each piece came from in the source.
#[derive(Default)]
struct LogicalLine {
    text: String,
    /// `(offset in text, offset in source)` for the start of each appended piece.
    pieces: Vec<(usize, usize)>,
}

impl LogicalLine {
    fn push(&mut self, piece: &str, src_offset: usize) {
        self.pieces.push((self.text.len(), src_offset));
        self.text.push_str(piece);
    }

    /// The source offset of a byte offset into `text`.
    fn source_offset(&self, offset: usize) -> usize {
        let i = self
            .pieces
            .partition_point(|(l, _)| *l <= offset)
            .saturating_sub(1);
        match self.pieces.get(i) {
            Some((l, s)) => s + (offset - l),
            None => offset,
        }
    }

    fn span(&self, start: usize, end: usize) -> Span {
        if end <= start {
            let s = self.source_offset(start);
            return Span::new(s, s);
        }
        // The end maps through the last byte so a span never runs into a skipped line.
        Span::new(self.source_offset(start), self.source_offset(end - 1) + 1)
    }
}

/// The state of directive parsing at the top of the file.
struct DirectiveReader {
    done: bool,
    seen: Vec<String>,
}

/// `# name = value` (name starts with a letter). Returns the name and the value (trimmed).
fn directive_line(line: &str) -> IResult<&str, (&str, &str)> {
    let ws = || take_while(char::is_whitespace);
    let name = recognize(pair(
        take_while_m_n(1, 1, |c: char| c.is_ascii_alphabetic()),
        take_while(|c: char| c.is_ascii_alphanumeric()),
    ));
    let (value, (_, _, name, _, _, _)) = tuple((chr('#'), ws(), name, ws(), chr('='), ws()))(line)?;
    Ok(("", (name, value.trim_end())))
}

impl DirectiveReader {
    /// Looks at one line (already left-trimmed) while directives are still possible.
    fn read(&mut self, line: &str, span: Span, d: &mut Directives) -> Result<(), ParseError> {
        if self.done {
            return Ok(());
        }
        let Ok((_, (name, value))) = directive_line(line) else {
            self.done = true;
            return Ok(());
        };
        if value.is_empty() {
            self.done = true;
            return Ok(());
        }
        let name = name.to_ascii_lowercase();
        if !matches!(name.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(());
        }
        if self.seen.contains(&name) {
            return Err(ParseError::new(
                ParseErrorKind::InvalidDirective(format!(
                    "only one {name} parser directive can be used"
                )),
                span,
            ));
        }
        self.seen.push(name.clone());
        let value_span = span;
        match name.as_str() {
            "escape" => {
                d.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    other => {
                        return Err(ParseError::new(
                            ParseErrorKind::InvalidDirective(format!(
                                "invalid escape token '{other}' does not match ` or \\"
                            )),
                            value_span,
                        ))
                    }
                }
            }
            "syntax" => d.syntax = Some(Spanned::new(value.to_string(), value_span)),
            _ => d.check = Some(Spanned::new(value.to_string(), value_span)),
        }
        Ok(())
    }
}

/// BuildKit's `isComment`: the line, left-trimmed, starts with `#`.
fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Removes a trailing continuation (escape char, then only spaces/tabs) from `line`.
/// Returns the line without it and whether the line continues. An escaped escape char
/// (`\\` at the end) is not a continuation.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    let Some(before) = trimmed.strip_suffix(escape) else {
        return (line, false);
    };
    if before.is_empty() || !before.ends_with(escape) {
        (before, true)
    } else {
        (line, false)
    }
}

/// Parses a Dockerfile into raw nodes.
pub fn parse(src: &str) -> Result<RawDockerfile, ParseError> {
    let lines = physical_lines(src);
    let mut directives = Directives::default();
    let mut reader = DirectiveReader {
        done: false,
        seen: Vec::new(),
    };
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();

    let mut i = 0;
    while i < lines.len() {
        let first = lines[i];
        i += 1;
        check_length(&first)?;
        let mut text = first.text;
        let mut start = first.start;
        if first.start == 0 {
            if let Some(t) = text.strip_prefix('\u{feff}') {
                text = t;
                start += '\u{feff}'.len_utf8();
            }
        }
        let trimmed = text.trim_start();
        start += text.len() - trimmed.len();
        reader.read(
            trimmed,
            Span::new(start, start + trimmed.len()),
            &mut directives,
        )?;
        let escape = directives.escape;
        let content = if trimmed.starts_with('#') {
            ""
        } else {
            trimmed
        };
        let (piece, mut continues) = trim_continuation(content, escape);
        if !continues && piece.is_empty() {
            continue;
        }
        let mut logical = LogicalLine::default();
        logical.push(piece, start);
        let mut last = first;
        let mut empty_continuation = false;
        while continues && i < lines.len() {
            let line = lines[i];
            i += 1;
            check_length(&line)?;
            last = line;
            reader.read(
                line.text.trim_start(),
                Span::new(line.start, line.end),
                &mut directives,
            )?;
            if is_comment(line.text) {
                continue;
            }
            if line.text.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (piece, more) = trim_continuation(line.text, escape);
            logical.push(piece, line.start);
            continues = more;
        }
        let start_line = count_lines_before(&lines, first.start);
        let mut node = node_from_line(&logical, 0, logical.text.len(), escape, false)?;
        if empty_continuation {
            warnings.push(Warning {
                message: "empty continuation line found in instruction: empty continuation lines will become errors in a future release".into(),
                span: logical.span(0, logical.text.len()),
            });
        }

        if can_contain_heredoc(&node) && logical.text.contains("<<") {
            let found = heredoc::heredocs_from_line(&logical.text).map_err(|e| {
                ParseError::new(
                    ParseErrorKind::InvalidHeredoc(e.to_string()),
                    node.keyword_span.to(node.span),
                )
            })?;
            for mut doc in found {
                let body_start = lines.get(i).map_or(src.len(), |l| l.start);
                let mut terminated = false;
                while i < lines.len() {
                    let line = lines[i];
                    i += 1;
                    last = line;
                    let candidate = if doc.chomp {
                        line.text.trim_start_matches('\t')
                    } else {
                        line.text
                    };
                    if candidate == doc.name {
                        terminated = true;
                        break;
                    }
                    // The body keeps each line's own terminator (`\n` or `\r\n`), as BuildKit does.
                    doc.content.push_str(&src[line.start..line.end]);
                }
                if !terminated {
                    return Err(ParseError::new(
                        ParseErrorKind::UnterminatedHeredoc { name: doc.name },
                        node.span,
                    ));
                }
                doc.span = Span::new(body_start, last.end);
                node.heredocs.push(doc);
            }
        }
        node.span = Span::new(node.span.start, last.start + last.text.len());
        node.start_line = start_line;
        node.end_line = count_lines_before(&lines, last.start);
        nodes.push(node);
    }

    if nodes.is_empty() {
        return Err(ParseError::new(
            ParseErrorKind::EmptyDockerfile,
            Span::new(0, 0),
        ));
    }
    Ok(RawDockerfile {
        directives,
        nodes,
        warnings,
    })
}

fn check_length(line: &PhysLine<'_>) -> Result<(), ParseError> {
    if line.text.len() > MAX_LINE_LEN {
        return Err(ParseError::new(
            ParseErrorKind::LineTooLong,
            Span::new(line.start, line.start + 1),
        ));
    }
    Ok(())
}

/// The 1-based line number of the physical line starting at `offset`.
fn count_lines_before(lines: &[PhysLine<'_>], offset: usize) -> usize {
    lines.partition_point(|l| l.start < offset) + 1
}

fn can_contain_heredoc(node: &Node) -> bool {
    let node = match (&node.keyword[..], &node.inner) {
        ("onbuild", Some(inner)) => inner,
        _ => node,
    };
    HEREDOC_INSTRUCTIONS.contains(&node.keyword.as_str()) && !node.json
}

/// Go's `unicode.IsSpace` for the characters BuildKit splits commands on (`[\t\v\f\r ]`).
fn is_split_space(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Builds a node from `text[from..to]` of a logical line (BuildKit's `newNodeFromLine`).
///
/// `nested` is true for the instruction an ONBUILD wraps: an ONBUILD inside it is not parsed further
/// (the typed layer rejects it), so hostile input cannot make the recursion deep.
fn node_from_line(
    line: &LogicalLine,
    from: usize,
    to: usize,
    escape: char,
    nested: bool,
) -> Result<Node, ParseError> {
    let full = &line.text[from..to];
    let trimmed_start = full.len() - full.trim_start().len();
    let body = full.trim();
    let body_off = from + trimmed_start;
    let kw_len = body.find(is_split_space).unwrap_or(body.len());
    let keyword = &body[..kw_len];
    let after_kw = body[kw_len..].trim_start_matches(is_split_space);
    let after_off = body_off + (body.len() - after_kw.len());

    let (flags, args_rel) = extract_flags(after_kw);
    let flags = flags
        .into_iter()
        .map(|(f, s, e)| Spanned::new(f, line.span(after_off + s, after_off + e)))
        .collect();
    let args_trim = after_kw[args_rel..].trim();
    let args_off = after_off
        + args_rel
        + (after_kw[args_rel..].len() - after_kw[args_rel..].trim_start().len());
    let lower = keyword.to_ascii_lowercase();
    let span = line.span(body_off, body_off + body.len());
    let mut node = Node {
        keyword: lower.clone(),
        keyword_span: line.span(body_off, body_off + kw_len),
        flags,
        args: Vec::new(),
        json: false,
        inner: None,
        heredocs: Vec::new(),
        original: body.to_string(),
        span,
        start_line: 0,
        end_line: 0,
    };
    let arg = |s: &str, a: usize, b: usize| {
        Spanned::new(s.to_string(), line.span(args_off + a, args_off + b))
    };
    let whole = |node: &mut Node, s: &str| {
        if !s.is_empty() {
            node.args.push(arg(s, 0, s.len()));
        }
    };
    match lower.as_str() {
        "add" | "copy" | "volume" => match parse_json(args_trim) {
            JsonForm::Array(items) => {
                node.json = true;
                node.args = items
                    .into_iter()
                    .map(|s| arg(&s, 0, args_trim.len()))
                    .collect();
            }
            JsonForm::NotStrings(msg) => {
                return Err(ParseError::new(
                    ParseErrorKind::BadJson(msg),
                    line.span(args_off, args_off + args_trim.len()),
                ))
            }
            JsonForm::ShellForm => {
                node.args = split_whitespace(args_trim)
                    .map(|(w, a, b)| arg(w, a, b))
                    .collect()
            }
        },
        "run" | "cmd" | "entrypoint" | "shell" => {
            if !args_trim.is_empty() {
                maybe_json(&mut node, args_trim, args_off, line)?;
            }
        }
        "from" | "expose" => {
            node.args = split_whitespace(args_trim)
                .map(|(w, a, b)| arg(w, a, b))
                .collect()
        }
        "maintainer" | "user" | "workdir" | "stopsignal" => whole(&mut node, args_trim),
        "env" | "label" => {
            let words = parse_words(args_trim, escape);
            if let Some((w0, _, _)) = words.first() {
                if !w0.contains('=') {
                    // Legacy form: KEY value…
                    let Some(k_end) = args_trim.find(is_split_space) else {
                        return Err(ParseError::new(
                            ParseErrorKind::MissingArguments {
                                instruction: keyword.to_ascii_uppercase(),
                                what: "two arguments (a name and a value), or name=value pairs"
                                    .into(),
                            },
                            span,
                        ));
                    };
                    let value = args_trim[k_end..].trim_start_matches(is_split_space);
                    let v_off = args_trim.len() - value.len();
                    node.args.push(arg(&args_trim[..k_end], 0, k_end));
                    node.args.push(arg(value, v_off, args_trim.len()));
                    node.args.push(arg("", v_off, v_off));
                } else {
                    for (w, a, b) in words {
                        let Some((k, v)) = w.split_once('=') else {
                            return Err(ParseError::new(
                                ParseErrorKind::InvalidArguments {
                                    instruction: keyword.to_ascii_uppercase(),
                                    reason: format!("syntax error - can't find = in {w:?}. Must be of the form: name=value"),
                                },
                                line.span(args_off + a, args_off + b),
                            ));
                        };
                        node.args.push(arg(k, a, b));
                        node.args.push(arg(v, a, b));
                        node.args.push(arg("=", a, b));
                    }
                }
            }
        }
        "arg" => {
            node.args = parse_words(args_trim, escape)
                .into_iter()
                .map(|(w, a, b)| arg(&w, a, b))
                .collect()
        }
        "healthcheck" => {
            let first_len = args_trim
                .find(char::is_whitespace)
                .unwrap_or(args_trim.len());
            if first_len > 0 {
                node.args.push(arg(&args_trim[..first_len], 0, first_len));
                let cmd = args_trim[first_len..].trim_start();
                let cmd_off = args_off + args_trim.len() - cmd.len();
                if !cmd.is_empty() {
                    maybe_json(&mut node, cmd, cmd_off, line)?;
                }
            }
        }
        "onbuild" if nested => whole(&mut node, args_trim),
        "onbuild" => {
            if !args_trim.is_empty() {
                let inner =
                    node_from_line(line, args_off, args_off + args_trim.len(), escape, true)?;
                node.inner = Some(Box::new(inner));
            }
        }
        _ => node.args.push(arg("", 0, args_trim.len())),
    }
    Ok(node)
}

/// JSON (exec) form if `text` is a JSON array of strings, else one shell-form string.
fn maybe_json(
    node: &mut Node,
    text: &str,
    off: usize,
    line: &LogicalLine,
) -> Result<(), ParseError> {
    let span = line.span(off, off + text.len());
    match parse_json(text) {
        JsonForm::Array(items) => {
            node.json = true;
            node.args
                .extend(items.into_iter().map(|s| Spanned::new(s, span)));
        }
        JsonForm::NotStrings(msg) => {
            return Err(ParseError::new(ParseErrorKind::BadJson(msg), span))
        }
        JsonForm::ShellForm => node.args.push(Spanned::new(text.to_string(), span)),
    }
    Ok(())
}

/// What the text after an instruction's flags is, as JSON.
enum JsonForm {
    Array(Vec<String>),
    /// Valid JSON array with a non-string element: an error, not shell form.
    NotStrings(String),
    ShellForm,
}

fn parse_json(text: &str) -> JsonForm {
    let t = text.trim_start();
    if !t.starts_with('[') {
        return JsonForm::ShellForm;
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(t) {
        Ok(values) => {
            let mut out = Vec::with_capacity(values.len());
            for v in values {
                match v {
                    serde_json::Value::String(s) => out.push(s),
                    _ => {
                        return JsonForm::NotStrings("the JSON array must hold only strings".into())
                    }
                }
            }
            JsonForm::Array(out)
        }
        Err(_) => JsonForm::ShellForm,
    }
}

/// Splits on runs of `[\t\v\f\r ]`, giving each word with its byte range.
fn split_whitespace(text: &str) -> impl Iterator<Item = (&str, usize, usize)> {
    let base = text.as_ptr() as usize;
    text.split(is_split_space)
        .filter(|w| !w.is_empty())
        .map(move |w| {
            let a = w.as_ptr() as usize - base;
            (w, a, a + w.len())
        })
}

/// ASCII whitespace as Go's `unicode.IsSpace` sees it (vertical tab included).
fn is_flag_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// BuildKit's `extractBuilderFlags`: leading `--flag` words with quote processing.
/// Returns the flags with their ranges and where the remaining arguments start.
fn extract_flags(line: &str) -> (Vec<(String, usize, usize)>, usize) {
    let b = line.as_bytes();
    let mut flags = Vec::new();
    let mut pos = 0;
    loop {
        while pos < b.len() && is_flag_space(b[pos]) {
            pos += 1;
        }
        if pos >= b.len() {
            return (flags, b.len());
        }
        if !(b[pos] == b'-' && b.get(pos + 1) == Some(&b'-')) {
            return (flags, pos);
        }
        let start = pos;
        let mut word: Vec<u8> = Vec::new();
        let mut blank_ok = false;
        let mut quote: Option<u8> = None;
        while pos < b.len() {
            let c = b[pos];
            match quote {
                None if is_flag_space(c) => break,
                None if c == b'\'' || c == b'"' => {
                    quote = Some(c);
                    blank_ok = true;
                }
                Some(q) if c == q => quote = None,
                _ if c == b'\\' => {
                    pos += 1;
                    if let Some(&n) = b.get(pos) {
                        word.push(n);
                    }
                }
                _ => word.push(c),
            }
            pos += 1;
        }
        let end = pos.min(b.len());
        if word == b"--" {
            return (flags, end);
        }
        if blank_ok || !word.is_empty() {
            flags.push((String::from_utf8_lossy(&word).into_owned(), start, end));
        }
    }
}

/// BuildKit's `parseWords`: whitespace-separated words where quotes group (and are kept) and the
/// escape character is kept together with the character it escapes.
pub(crate) fn parse_words(text: &str, escape: char) -> Vec<(String, usize, usize)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut start = 0;
    let mut in_word = false;
    let mut blank_ok = false;
    let mut quote: Option<char> = None;
    let mut it = text.char_indices().peekable();
    while let Some((pos, ch)) = it.next() {
        if !in_word {
            if ch.is_whitespace() {
                continue;
            }
            in_word = true;
            start = pos;
        }
        match quote {
            None => {
                if ch.is_whitespace() {
                    if blank_ok || !word.is_empty() {
                        words.push((std::mem::take(&mut word), start, pos));
                    }
                    word.clear();
                    blank_ok = false;
                    in_word = false;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                    blank_ok = true;
                }
                if ch == escape {
                    match it.next() {
                        None => continue,
                        Some((_, n)) => {
                            word.push(ch);
                            word.push(n);
                            continue;
                        }
                    }
                }
                word.push(ch);
            }
            Some(q) => {
                if ch == q {
                    quote = None;
                }
                if ch == escape && q != '\'' {
                    match it.next() {
                        None => {
                            quote = None;
                            continue;
                        }
                        Some((_, n)) => {
                            word.push(ch);
                            word.push(n);
                            continue;
                        }
                    }
                }
                word.push(ch);
            }
        }
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push((word, start, text.len()));
    }
    words
}

/// `[digits]<<[-][spaces]rest` — the shape of a heredoc word; `rest` has no `<`.
pub(crate) fn heredoc_marker(word: &str) -> Option<(u32, bool, &str)> {
    let parsed: IResult<&str, (&str, &str, Option<char>, &str, &str)> = all_consuming(tuple((
        take_while(|c: char| c.is_ascii_digit()),
        tag("<<"),
        opt(chr('-')),
        take_while(char::is_whitespace),
        take_while(|c: char| c != '<'),
    )))(word);
    let (_, (fd, _, dash, _, rest)) = parsed.ok()?;
    let fd = if fd.is_empty() { 0 } else { fd.parse().ok()? };
    Some((fd, dash.is_some(), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_rules() {
        let cases: &[(&str, &str, bool)] = &[
            ("echo \\", "echo ", true),
            ("echo \\  \t", "echo ", true),
            ("\\", "", true),
            ("a\\\\", "a\\\\", false),
            ("plain", "plain", false),
        ];
        for (input, out, cont) in cases {
            assert_eq!(trim_continuation(input, '\\'), (*out, *cont), "{input:?}");
        }
        assert_eq!(trim_continuation("x `", '`'), ("x ", true));
    }

    #[test]
    fn flags_are_extracted_with_quotes_removed() {
        let (flags, rest) = extract_flags("--from=\"x y\" --link -- foo bar");
        let names: Vec<_> = flags.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(names, ["--from=x y", "--link"]);
        assert_eq!(&"--from=\"x y\" --link -- foo bar"[rest..], " foo bar");
    }

    #[test]
    fn heredoc_markers() {
        assert_eq!(heredoc_marker("<<EOF"), Some((0, false, "EOF")));
        assert_eq!(heredoc_marker("3<<-EOF"), Some((3, true, "EOF")));
        assert_eq!(heredoc_marker("<< -EOF"), Some((0, false, "-EOF")));
        assert_eq!(heredoc_marker("<EOF"), None);
        assert_eq!(heredoc_marker("<<<EOF"), None);
        assert_eq!(heredoc_marker("99999999999999<<X"), None);
    }

    #[test]
    fn spans_cross_continuations() {
        let src = "FROM a\nRUN echo \\\n  hi\n";
        let raw = parse(src).unwrap_or_else(|e| panic!("{e}"));
        let run = &raw.nodes[1];
        assert_eq!(run.start_line, 2);
        assert_eq!(run.end_line, 3);
        assert_eq!(&src[run.keyword_span.start..run.keyword_span.end], "RUN");
        assert_eq!(run.args[0].value, "echo   hi");
    }

    #[test]
    fn errors() {
        type KindCheck = fn(&ParseErrorKind) -> bool;
        let cases: &[(&str, KindCheck)] = &[
            ("", |k| matches!(k, ParseErrorKind::EmptyDockerfile)),
            ("# only\n\n", |k| {
                matches!(k, ParseErrorKind::EmptyDockerfile)
            }),
            ("FROM a\nENV PATH\n", |k| {
                matches!(k, ParseErrorKind::MissingArguments { .. })
            }),
            ("FROM a\nCMD [\"a\", [1]]\n", |k| {
                matches!(k, ParseErrorKind::BadJson(_))
            }),
            ("FROM a\nRUN <<EOF\nhi\n", |k| {
                matches!(k, ParseErrorKind::UnterminatedHeredoc { .. })
            }),
            ("# escape=x\nFROM a\n", |k| {
                matches!(k, ParseErrorKind::InvalidDirective(_))
            }),
            ("# escape=`\n# escape=`\nFROM a\n", |k| {
                matches!(k, ParseErrorKind::InvalidDirective(_))
            }),
            ("FROM a\nENV a=b c\n", |k| {
                matches!(k, ParseErrorKind::InvalidArguments { .. })
            }),
        ];
        for (src, check) in cases {
            match parse(src) {
                Ok(_) => panic!("{src:?} parsed"),
                Err(e) => assert!(check(&e.kind), "{src:?}: {e:?}"),
            }
        }
        let long = format!("FROM a\nRUN {}\n", "x".repeat(MAX_LINE_LEN));
        assert!(matches!(
            parse(&long).map_err(|e| e.kind),
            Err(ParseErrorKind::LineTooLong)
        ));
    }
}
