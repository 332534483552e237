//! JSON written byte for byte as Go's `encoding/json` writes it, so the digests of configs,
//! manifests and indexes match those Docker and BuildKit compute for the same content.
//!
//! Two differences from `serde_json`'s defaults matter: Go escapes `<`, `>`, `&`, U+2028 and
//! U+2029 inside strings (`\u003c` …), and BuildKit writes manifests and indexes with
//! `json.MarshalIndent(v, "", "  ")` but configs compact. Key order is the order of the serde
//! fields (Go's struct order), and maps are `BTreeMap`s (Go sorts map keys bytewise).
//! Also the bounded reading of untrusted JSON lives here.

use std::io;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::ser::{CompactFormatter, Formatter, PrettyFormatter};

use crate::error::ImageError;

/// Limit for manifests and indexes read from untrusted sources (the distribution spec's
/// registries use 4 MiB too).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Limit for image configs (long histories make them larger than manifests).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// Limit for small metadata files (`oci-layout`, `repositories`, legacy `json`).
pub const MAX_SMALL_JSON_BYTES: u64 = 1 << 20;

/// A formatter that delegates layout to `F` and escapes strings as Go does.
struct GoFormatter<F> {
    inner: F,
}

impl<F: Formatter> Formatter for GoFormatter<F> {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escaped: &[u8] = match c {
                '<' => b"\\u003c",
                '>' => b"\\u003e",
                '&' => b"\\u0026",
                '\u{2028}' => b"\\u2028",
                '\u{2029}' => b"\\u2029",
                _ => continue,
            };
            writer.write_all(fragment.as_bytes().get(start..i).unwrap_or_default())?;
            writer.write_all(escaped)?;
            start = i + c.len_utf8();
        }
        writer.write_all(fragment.as_bytes().get(start..).unwrap_or_default())
    }

    fn begin_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.inner.begin_array(writer)
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.inner.end_array(writer)
    }

    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.inner.begin_array_value(writer, first)
    }

    fn end_array_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.inner.end_array_value(writer)
    }

    fn begin_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.inner.begin_object(writer)
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.inner.end_object(writer)
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.inner.begin_object_key(writer, first)
    }

    fn end_object_key<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.inner.end_object_key(writer)
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.inner.begin_object_value(writer)
    }

    fn end_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.inner.end_object_value(writer)
    }
}

/// Go's `json.Marshal`: compact.
pub fn to_go_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut out,
        GoFormatter {
            inner: CompactFormatter,
        },
    );
    value
        .serialize(&mut ser)
        .map_err(|e| ImageError::json("serialising", e))?;
    Ok(out)
}

/// Go's `json.MarshalIndent(v, "", "  ")`: two-space indent, no trailing newline.
pub fn to_go_json_indent<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    let formatter = GoFormatter {
        inner: PrettyFormatter::with_indent(b"  "),
    };
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    value
        .serialize(&mut ser)
        .map_err(|e| ImageError::json("serialising", e))?;
    Ok(out)
}

/// Parses untrusted JSON already bounded in size by the caller.
pub fn parse<T: DeserializeOwned>(
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::json(what(), e))
}

/// Reads at most `limit` bytes from `reader`; more is an [`ImageError::TooLarge`].
pub(crate) fn read_bounded(
    reader: impl io::Read,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    let mut limited = reader.take(limit.saturating_add(1));
    io::Read::read_to_end(&mut limited, &mut out).map_err(|e| ImageError::io(what, e))?;
    if out.len() as u64 > limit {
        return Err(ImageError::TooLarge {
            what: what.to_owned(),
            limit,
        });
    }
    Ok(out)
}

/// Deserialises `null` as the type's default, as Go does for slices, maps and strings.
pub(crate) fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// For `skip_serializing_if`: Go's `omitempty` on a bool.
pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// For `skip_serializing_if`: Go's `omitempty` on an integer.
pub(crate) fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn escapes_like_go() {
        let v = vec!["a && b <c> \u{2028}\u{2029} \"q\" \\ \n\t\u{1} é"];
        assert_eq!(
            String::from_utf8(to_go_json(&v).unwrap()).unwrap(),
            r#"["a \u0026\u0026 b \u003cc\u003e \u2028\u2029 \"q\" \\ \n\t\u0001 é"]"#
        );
    }

    #[test]
    fn indent_like_go() {
        let mut m = BTreeMap::new();
        m.insert("b", vec![1, 2]);
        m.insert("a", vec![]);
        assert_eq!(
            String::from_utf8(to_go_json_indent(&m).unwrap()).unwrap(),
            "{\n  \"a\": [],\n  \"b\": [\n    1,\n    2\n  ]\n}"
        );
    }

    #[test]
    fn bounded_read() {
        assert_eq!(read_bounded(&b"abc"[..], 3, "x").unwrap(), b"abc");
        assert!(matches!(
            read_bounded(&b"abcd"[..], 3, "x"),
            Err(ImageError::TooLarge { .. })
        ));
    }
}
