//! Source positions: byte spans into the Dockerfile text and their line/column form.

/// A half-open byte range `[start, end)` into the original Dockerfile source.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// A value together with where it was written.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Self {
        Spanned { value, span }
    }
}

/// Debug output stays compact: `"value" @12..15`.
impl<T: std::fmt::Debug> std::fmt::Debug for Spanned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.value.fmt(f)?;
        write!(f, " @{:?}", self.span)
    }
}

/// A 1-based line and column (column counted in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Maps byte offsets of one source text to line/column positions.
#[derive(Debug, Clone)]
pub struct LineIndex {
    /// Byte offset where each line starts.
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(src: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(
            src.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { starts }
    }

    /// The 1-based line number containing `offset`.
    pub fn line(&self, offset: usize) -> usize {
        match self.starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }

    /// Line and column of `offset` in `src` (the text this index was built from).
    pub fn position(&self, src: &str, offset: usize) -> Position {
        let line = self.line(offset);
        let start = self.starts[line - 1];
        let offset = offset.min(src.len());
        let column = src
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        Position { line, column }
    }

    /// The text of 1-based line `line`, without its line terminator.
    pub fn line_text<'a>(&self, src: &'a str, line: usize) -> &'a str {
        let Some(&start) = self.starts.get(line.wrapping_sub(1)) else {
            return "";
        };
        let end = self
            .starts
            .get(line)
            .map_or(src.len(), |e| e.saturating_sub(1));
        let text = src.get(start..end.max(start)).unwrap_or("");
        text.strip_suffix('\r').unwrap_or(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        let src = "FROM a\r\nRUN é x\nlast";
        let idx = LineIndex::new(src);
        assert_eq!(idx.position(src, 0), Position { line: 1, column: 1 });
        let x = src.find('x').unwrap_or(0);
        assert_eq!(idx.position(src, x), Position { line: 2, column: 7 });
        assert_eq!(idx.line_text(src, 1), "FROM a");
        assert_eq!(idx.line_text(src, 3), "last");
        assert_eq!(idx.line_text(src, 9), "");
    }
}
