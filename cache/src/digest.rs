//! Content digests (`sha256:<hex>`) and the streaming adapters that compute and check them.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::error::StoreError;

const SHA256_PREFIX: &str = "sha256:";
const SHA256_HEX_LEN: usize = 64;
/// How much of a rejected string an [`StoreError::InvalidDigest`] keeps.
const INVALID_DIGEST_SHOWN_CHARS: usize = 100;

/// A sha256 content digest, `sha256:<64 lowercase hex>`.
///
/// Only this one canonical form exists: parsing rejects other algorithms, uppercase hex and
/// every other length, so two equal contents always have equal `Digest`s and the hex part is
/// always safe to use as a file name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Digest {
    /// Always `sha256:` followed by exactly 64 lowercase hex digits.
    text: String,
}

impl Digest {
    /// Parses the canonical form strictly.
    pub fn parse(s: &str) -> Result<Digest, StoreError> {
        let valid = s.strip_prefix(SHA256_PREFIX).is_some_and(|hex| {
            hex.len() == SHA256_HEX_LEN
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if valid {
            Ok(Digest { text: s.to_owned() })
        } else {
            Err(StoreError::InvalidDigest(
                s.chars().take(INVALID_DIGEST_SHOWN_CHARS).collect(),
            ))
        }
    }

    /// The digest whose sha256 value is `bytes`.
    pub fn from_sha256(bytes: [u8; 32]) -> Digest {
        let mut text = String::with_capacity(SHA256_PREFIX.len() + SHA256_HEX_LEN);
        text.push_str(SHA256_PREFIX);
        for b in bytes {
            text.push_str(&format!("{b:02x}"));
        }
        Digest { text }
    }

    /// The 32 bytes of the sha256 value (the inverse of [`Digest::from_sha256`]).
    pub fn sha256_bytes(&self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        // The constructors guarantee 64 lowercase hex digits.
        for (byte, pair) in bytes.iter_mut().zip(self.hex().as_bytes().chunks(2)) {
            let digit = |c: u8| match c {
                b'0'..=b'9' => c - b'0',
                _ => c.wrapping_sub(b'a').wrapping_add(10) & 0x0f,
            };
            *byte = pair.iter().fold(0, |acc, &c| (acc << 4) | digit(c));
        }
        bytes
    }

    /// The digest of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The 64 lowercase hex digits, without the `sha256:` prefix.
    pub fn hex(&self) -> &str {
        // The constructor guarantees the prefix, so this never falls back.
        self.text.strip_prefix(SHA256_PREFIX).unwrap_or(&self.text)
    }

    /// The algorithm name; always `sha256`.
    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }

    /// The full `sha256:<hex>` form.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub(crate) fn from_hasher(hasher: Sha256) -> Digest {
        const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";
        let hash = hasher.finalize();
        let mut text = String::with_capacity(SHA256_PREFIX.len() + SHA256_HEX_LEN);
        text.push_str(SHA256_PREFIX);
        for byte in hash {
            text.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
            text.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
        }
        Digest { text }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Digest {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Digest, StoreError> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(deserializer)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A `Write` adapter that counts the bytes written through it and computes their sha256.
///
/// Only the bytes the inner writer accepted are hashed, so the digest always describes what
/// actually reached `inner`.
pub struct DigestWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> DigestWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        DigestWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// The wrapped writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Returns the inner writer (not flushed), the digest and the byte count.
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, Digest::from_hasher(self.hasher), self.written)
    }
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let accepted = self.inner.write(buf)?;
        let Some(accepted_bytes) = buf.get(..accepted) else {
            return Err(io::Error::other(
                "inner writer reported more bytes than it was given",
            ));
        };
        self.hasher.update(accepted_bytes);
        self.written += accepted as u64;
        Ok(accepted)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> fmt::Debug for DigestWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestWriter")
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

/// A `Read` adapter that counts the bytes read through it and computes their sha256: the
/// reading twin of [`DigestWriter`], for content whose digest is learnt rather than checked
/// (for a check, see [`VerifiedReader`]).
pub struct DigestReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> DigestReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        DigestReader {
            inner,
            hasher: Sha256::new(),
            read: 0,
        }
    }

    /// Returns the inner reader, the digest of what was read and the byte count.
    pub fn finish(self) -> (R, Digest, u64) {
        (self.inner, Digest::from_hasher(self.hasher), self.read)
    }
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let Some(got) = buf.get(..n) else {
            return Err(io::Error::other(
                "inner reader reported more bytes than it was given room for",
            ));
        };
        self.hasher.update(got);
        self.read += n as u64;
        Ok(n)
    }
}

impl<R> fmt::Debug for DigestReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestReader")
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

/// Where a [`VerifiedReader`] is in its life.
#[derive(Debug)]
enum Verdict {
    /// End of input not reached yet.
    Reading(Sha256),
    /// End of input reached and the content matched.
    Verified,
    /// End of input reached and the content did not match.
    Mismatch(Digest),
}

/// A `Read` adapter that hashes everything read through it and, when the inner reader reaches
/// end of input, checks the result against the expected digest.
///
/// On a mismatch the final read returns an `io::Error` of kind [`io::ErrorKind::InvalidData`]
/// (carrying a [`StoreError::DigestMismatch`]) instead of `Ok(0)`, and so does every later read,
/// so a consumer that reads to the end can never mistake corrupt content for good content.
/// A consumer that stops before the end gets no verification: read to EOF (for example with
/// [`io::copy`]) before trusting the data.
pub struct VerifiedReader<R> {
    inner: R,
    expected: Digest,
    read: u64,
    verdict: Verdict,
}

impl<R: Read> VerifiedReader<R> {
    /// Wraps `inner`, whose whole content must hash to `expected`.
    pub fn new(inner: R, expected: Digest) -> Self {
        VerifiedReader {
            inner,
            expected,
            read: 0,
            verdict: Verdict::Reading(Sha256::new()),
        }
    }

    /// The digest the content must have.
    pub fn expected(&self) -> &Digest {
        &self.expected
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Whether end of input was reached and the content matched.
    pub fn is_verified(&self) -> bool {
        matches!(self.verdict, Verdict::Verified)
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Returns the wrapped reader, giving up verification.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn mismatch_error(&self, actual: &Digest) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            StoreError::DigestMismatch {
                expected: self.expected.clone(),
                actual: actual.clone(),
            },
        )
    }
}

impl<R: Read> Read for VerifiedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.verdict {
            Verdict::Verified => return Ok(0),
            Verdict::Mismatch(actual) => return Err(self.mismatch_error(actual)),
            Verdict::Reading(_) => {}
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let count = self.inner.read(buf)?;
        if count > 0 {
            let Some(read_bytes) = buf.get(..count) else {
                return Err(io::Error::other(
                    "inner reader reported more bytes than fit the buffer",
                ));
            };
            if let Verdict::Reading(hasher) = &mut self.verdict {
                hasher.update(read_bytes);
            }
            self.read += count as u64;
            return Ok(count);
        }
        let Verdict::Reading(hasher) = std::mem::replace(&mut self.verdict, Verdict::Verified)
        else {
            return Ok(0);
        };
        let actual = Digest::from_hasher(hasher);
        if actual == self.expected {
            Ok(0)
        } else {
            let error = self.mismatch_error(&actual);
            self.verdict = Verdict::Mismatch(actual);
            Err(error)
        }
    }
}

impl<R> fmt::Debug for VerifiedReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedReader")
            .field("expected", &self.expected)
            .field("read", &self.read)
            .field("verdict", &self.verdict)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_reader_hashes_what_it_reads_and_bytes_round_trip() {
        let content = b"some layer bytes".repeat(1000);
        let mut reader = DigestReader::new(&content[..]);
        let mut out = Vec::new();
        io::copy(&mut reader, &mut out).unwrap();
        let (_, digest, n) = reader.finish();
        assert_eq!(out, content);
        assert_eq!(n, content.len() as u64);
        assert_eq!(digest, Digest::of_bytes(&content));
        let raw: [u8; 32] = Sha256::digest(&content).into();
        assert_eq!(digest.sha256_bytes(), raw);
        assert_eq!(Digest::from_sha256(raw), digest);
    }

    #[test]
    fn parse_table() {
        let valid = format!("sha256:{EMPTY_SHA256}");
        let cases: Vec<(&str, String, bool)> = vec![
            ("valid", valid.clone(), true),
            ("all digits", format!("sha256:{}", "0".repeat(64)), true),
            (
                "uppercase hex",
                format!("sha256:{}", EMPTY_SHA256.to_uppercase()),
                false,
            ),
            (
                "uppercase algorithm",
                format!("SHA256:{EMPTY_SHA256}"),
                false,
            ),
            (
                "one short",
                format!("sha256:{}", &EMPTY_SHA256[..63]),
                false,
            ),
            ("one long", format!("sha256:{EMPTY_SHA256}0"), false),
            ("empty hex", "sha256:".to_owned(), false),
            (
                "sha512",
                format!("sha512:{EMPTY_SHA256}{EMPTY_SHA256}"),
                false,
            ),
            ("no algorithm", EMPTY_SHA256.to_owned(), false),
            ("empty", String::new(), false),
            (
                "non-hex letter",
                format!("sha256:{}g", &EMPTY_SHA256[..63]),
                false,
            ),
            ("leading space", format!(" {valid}"), false),
            ("trailing newline", format!("{valid}\n"), false),
            (
                "path traversal",
                format!("sha256:../{}", &EMPTY_SHA256[..61]),
                false,
            ),
            (
                "multibyte",
                format!("sha256:{}é", &EMPTY_SHA256[..62]),
                false,
            ),
            ("junk", "not a digest at all".to_owned(), false),
        ];
        for (name, input, ok) in cases {
            let parsed = Digest::parse(&input);
            assert_eq!(parsed.is_ok(), ok, "{name}: {input:?} -> {parsed:?}");
            if let Ok(digest) = parsed {
                assert_eq!(digest.to_string(), input, "{name}");
                assert_eq!(digest.hex().len(), 64, "{name}");
                assert_eq!(input.parse::<Digest>().unwrap(), digest, "{name}");
            } else {
                assert!(
                    matches!(parsed, Err(StoreError::InvalidDigest(_))),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn invalid_digest_error_is_bounded() {
        let huge = "x".repeat(1 << 20);
        let Err(StoreError::InvalidDigest(shown)) = Digest::parse(&huge) else {
            panic!("junk accepted");
        };
        assert!(shown.len() <= INVALID_DIGEST_SHOWN_CHARS);
    }

    #[test]
    fn of_bytes_known_values() {
        assert_eq!(Digest::of_bytes(b"").hex(), EMPTY_SHA256);
        assert_eq!(
            Digest::of_bytes(b"abc").to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn serde_uses_the_string_form() {
        let digest = Digest::of_bytes(b"abc");
        let json = serde_json::to_string(&digest).unwrap();
        assert_eq!(json, format!("\"{digest}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), digest);
        assert!(serde_json::from_str::<Digest>("\"sha256:abc\"").is_err());
        assert!(serde_json::from_str::<Digest>("42").is_err());
    }

    #[test]
    fn digest_writer_counts_and_hashes() {
        let mut writer = DigestWriter::new(Vec::new());
        writer.write_all(b"ab").unwrap();
        writer.write_all(b"c").unwrap();
        let (inner, digest, size) = writer.finish();
        assert_eq!(inner, b"abc");
        assert_eq!(size, 3);
        assert_eq!(digest, Digest::of_bytes(b"abc"));
    }

    #[test]
    fn verified_reader_accepts_matching_content() {
        let mut reader = VerifiedReader::new(&b"abc"[..], Digest::of_bytes(b"abc"));
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc");
        assert!(reader.is_verified());
        assert_eq!(reader.bytes_read(), 3);
    }

    #[test]
    fn verified_reader_rejects_other_content_at_eof() {
        let mut reader = VerifiedReader::new(&b"abd"[..], Digest::of_bytes(b"abc"));
        let mut out = Vec::new();
        let error = reader.read_to_end(&mut out).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        let inner = error.get_ref().and_then(|e| e.downcast_ref::<StoreError>());
        assert!(
            matches!(inner, Some(StoreError::DigestMismatch { .. })),
            "{error:?}"
        );
        // It keeps failing; it never turns into a clean EOF.
        let again = reader.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::InvalidData);
        assert!(!reader.is_verified());
    }
}
