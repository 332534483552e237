//! Instruction flags as BuildKit reads them: the leading `--name=value` words of an instruction,
//! checked against the flags that instruction declares.
//!
//! Rules (BuildKit's `BFlags`): a flag is `--name=value` or, for a boolean, a bare `--name`
//! (`--link`, `--link=true`, `--link=false`, value case-insensitive). There is no `--name value`
//! form: the next word is an argument. String flags need the `=` (the value may be empty) and may
//! be given once; string-list flags (`--mount`, `--exclude`, `--device`) may repeat. Names are
//! case-sensitive. An unknown flag is an error that lists the valid ones.

use crate::error::{ParseError, ParseErrorKind};
use crate::span::{Span, Spanned};

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    /// `--link`, `--link=true`, `--link=false`; at most once.
    Bool,
    /// `--from=x` (`=` required, value may be empty); at most once.
    String,
    /// `--mount=x`, repeatable; each occurrence needs `=`.
    Strings,
}

/// A flag an instruction accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagSpec {
    pub name: &'static str,
    pub kind: FlagKind,
}

impl FlagSpec {
    pub const fn bool(name: &'static str) -> Self {
        FlagSpec {
            name,
            kind: FlagKind::Bool,
        }
    }
    pub const fn string(name: &'static str) -> Self {
        FlagSpec {
            name,
            kind: FlagKind::String,
        }
    }
    pub const fn strings(name: &'static str) -> Self {
        FlagSpec {
            name,
            kind: FlagKind::Strings,
        }
    }
}

/// One flag word split at its first `=`, with the spans of both halves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFlag {
    /// The name without the leading `--`.
    pub name: Spanned<String>,
    /// The text after the first `=`, if there is one.
    pub value: Option<Spanned<String>>,
    /// The whole flag word.
    pub span: Span,
}

impl WrittenFlag {
    /// Splits `--name=value`. The word must start with `--` (the raw parser only hands such words over).
    pub fn split(flag: &Spanned<String>) -> Result<WrittenFlag, ParseError> {
        let Some(body) = flag.value.strip_prefix("--") else {
            return Err(ParseError::new(
                ParseErrorKind::InvalidFlag {
                    flag: flag.value.clone(),
                    reason: "is not a flag: flags start with `--`".into(),
                },
                flag.span,
            ));
        };
        let (name, value) = match body.split_once('=') {
            Some((name, value)) => {
                let value_start = 2 + name.len() + 1;
                let value_span = sub_span(flag, value_start, value_start + value.len());
                (name, Some(Spanned::new(value.to_string(), value_span)))
            }
            None => (body, None),
        };
        Ok(WrittenFlag {
            name: Spanned::new(name.to_string(), sub_span(flag, 2, 2 + name.len())),
            value,
            span: flag.span,
        })
    }
}

/// A parsed flag value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagValue {
    /// The span is the whole flag word.
    Bool(Spanned<bool>),
    /// The span is the value's (after `=`).
    String(Spanned<String>),
    /// Every occurrence, in order.
    Strings(Vec<Spanned<String>>),
}

/// The flags given to one instruction, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedFlags {
    values: Vec<(&'static str, FlagValue)>,
}

impl ParsedFlags {
    fn get(&self, name: &str) -> Option<&FlagValue> {
        self.values.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Whether the flag was written at all.
    pub fn was_given(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// A boolean flag's value; `false` when absent.
    pub fn bool(&self, name: &str) -> bool {
        self.bool_given(name).is_some_and(|b| b.value)
    }

    /// A boolean flag's value, or `None` when it was not written.
    pub fn bool_given(&self, name: &str) -> Option<Spanned<bool>> {
        match self.get(name) {
            Some(FlagValue::Bool(b)) => Some(b.clone()),
            _ => None,
        }
    }

    /// A string flag's value, or `None` when it was not written.
    pub fn string(&self, name: &str) -> Option<&Spanned<String>> {
        match self.get(name) {
            Some(FlagValue::String(s)) => Some(s),
            _ => None,
        }
    }

    /// Every value of a string-list flag, in order (empty when not written).
    pub fn strings(&self, name: &str) -> &[Spanned<String>] {
        match self.get(name) {
            Some(FlagValue::Strings(v)) => v,
            _ => &[],
        }
    }
}

/// Parses `flags` (as written, `--name[=value]`) against the flags `instruction` accepts.
pub fn parse_flags(
    instruction: &str,
    specs: &[FlagSpec],
    flags: &[Spanned<String>],
) -> Result<ParsedFlags, ParseError> {
    let mut parsed = ParsedFlags::default();
    for flag in flags {
        let written = WrittenFlag::split(flag)?;
        let Some(spec) = specs.iter().find(|s| s.name == written.name.value) else {
            let kind = if specs.is_empty() {
                ParseErrorKind::FlagsNotAccepted {
                    instruction: instruction.to_string(),
                    flag: written.name.value.clone(),
                }
            } else {
                ParseErrorKind::UnknownFlag {
                    instruction: instruction.to_string(),
                    flag: written.name.value.clone(),
                    valid: specs
                        .iter()
                        .map(|s| format!("--{}", s.name))
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            };
            return Err(ParseError::new(kind, written.name.span.to(flag.span)));
        };
        let invalid = |reason: String, span: Span| {
            ParseError::new(
                ParseErrorKind::InvalidFlag {
                    flag: spec.name.to_string(),
                    reason,
                },
                span,
            )
        };
        if spec.kind != FlagKind::Strings && parsed.was_given(spec.name) {
            return Err(invalid("may only be given once".into(), flag.span));
        }
        match spec.kind {
            FlagKind::Bool => {
                let value = match &written.value {
                    None => true,
                    Some(v) => match v.value.to_ascii_lowercase().as_str() {
                        "" | "true" => true,
                        "false" => false,
                        _ => {
                            return Err(invalid(
                                format!("expects true or false, not {:?}", v.value),
                                v.span,
                            ))
                        }
                    },
                };
                parsed
                    .values
                    .push((spec.name, FlagValue::Bool(Spanned::new(value, flag.span))));
            }
            FlagKind::String | FlagKind::Strings => {
                let Some(value) = written.value else {
                    return Err(invalid(
                        format!("needs a value: write --{}=<value>", spec.name),
                        flag.span,
                    ));
                };
                if spec.kind == FlagKind::String {
                    parsed.values.push((spec.name, FlagValue::String(value)));
                } else if let Some((_, FlagValue::Strings(list))) =
                    parsed.values.iter_mut().find(|(n, _)| *n == spec.name)
                {
                    list.push(value);
                } else {
                    parsed
                        .values
                        .push((spec.name, FlagValue::Strings(vec![value])));
                }
            }
        }
    }
    Ok(parsed)
}

/// The span of bytes `start..end` of `word`'s text, when the text is exactly what the source
/// holds at `word.span` (no quotes or continuations were removed); otherwise the whole word.
pub(crate) fn sub_span(word: &Spanned<String>, start: usize, end: usize) -> Span {
    let verbatim = word.span.end.checked_sub(word.span.start) == Some(word.value.len());
    if verbatim && start <= end && end <= word.value.len() {
        Span::new(word.span.start + start, word.span.start + end)
    } else {
        word.span
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const COPY_FLAGS: &[FlagSpec] = &[
        FlagSpec::string("from"),
        FlagSpec::bool("link"),
        FlagSpec::strings("exclude"),
    ];

    /// Flags laid out as if written one after another from offset 100, separated by one space.
    fn words(flags: &[&str]) -> Vec<Spanned<String>> {
        let mut at = 100;
        flags
            .iter()
            .map(|f| {
                let w = Spanned::new(f.to_string(), Span::new(at, at + f.len()));
                at += f.len() + 1;
                w
            })
            .collect()
    }

    /// Flags written, then the expected `--from`, `--link` and `--exclude` values.
    type AcceptedCase<'a> = (&'a [&'a str], Option<&'a str>, bool, &'a [&'a str]);

    #[test]
    fn accepted_forms() {
        let cases: &[AcceptedCase] = &[
            (&[], None, false, &[]),
            (&["--from=builder"], Some("builder"), false, &[]),
            (&["--from="], Some(""), false, &[]),
            (&["--from=a=b"], Some("a=b"), false, &[]),
            (&["--link"], None, true, &[]),
            (&["--link=true"], None, true, &[]),
            (&["--link=TRUE"], None, true, &[]),
            (&["--link=false"], None, false, &[]),
            (&["--link="], None, true, &[]),
            (
                &["--exclude=*.md", "--exclude=*.txt"],
                None,
                false,
                &["*.md", "*.txt"],
            ),
        ];
        for (flags, from, link, excludes) in cases {
            let parsed = parse_flags("COPY", COPY_FLAGS, &words(flags))
                .unwrap_or_else(|e| panic!("{flags:?}: {e}"));
            assert_eq!(
                parsed.string("from").map(|s| s.value.as_str()),
                *from,
                "{flags:?}"
            );
            assert_eq!(parsed.bool("link"), *link, "{flags:?}");
            let got: Vec<&str> = parsed
                .strings("exclude")
                .iter()
                .map(|s| s.value.as_str())
                .collect();
            assert_eq!(&got, excludes, "{flags:?}");
        }
    }

    #[test]
    fn rejected_forms() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--form=x"],
                "unknown flag: --form (valid flags for COPY: --from, --link, --exclude)",
            ),
            (&["--FROM=x"], "unknown flag: --FROM"),
            (
                &["--from"],
                "flag --from needs a value: write --from=<value>",
            ),
            (&["--exclude"], "flag --exclude needs a value"),
            (
                &["--from=a", "--from=b"],
                "flag --from may only be given once",
            ),
            (
                &["--link", "--link=false"],
                "flag --link may only be given once",
            ),
            (
                &["--link=yes"],
                "flag --link expects true or false, not \"yes\"",
            ),
            (&["--=x"], "unknown flag: -- "),
            (&["-x"], "is not a flag"),
        ];
        for (flags, want) in cases {
            let err = parse_flags("COPY", COPY_FLAGS, &words(flags))
                .expect_err(&format!("{flags:?} should fail"));
            assert!(
                err.to_string().contains(want),
                "{flags:?}: got {:?}, want {want:?}",
                err.to_string()
            );
        }
    }

    #[test]
    fn no_flags_accepted() {
        let err = parse_flags("ENV", &[], &words(&["--foo=bar"])).expect_err("ENV takes no flags");
        assert!(
            matches!(err.kind, ParseErrorKind::FlagsNotAccepted { .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with("ENV does not accept flags"),
            "{err}"
        );
    }

    #[test]
    fn error_spans_point_at_the_flag() {
        let flags = words(&["--from=a", "--lnk"]);
        let err = parse_flags("COPY", COPY_FLAGS, &flags).expect_err("unknown");
        assert_eq!(err.span, flags[1].span);
        let flags = words(&["--link=maybe"]);
        let err = parse_flags("COPY", COPY_FLAGS, &flags).expect_err("bad bool");
        // The span covers the value only: `maybe`.
        assert_eq!(err.span, Span::new(107, 112));
    }

    #[test]
    fn value_span_is_exact_when_verbatim_and_whole_otherwise() {
        let verbatim = Spanned::new("--from=abc".to_string(), Span::new(10, 20));
        let split = WrittenFlag::split(&verbatim).expect("flag");
        assert_eq!(split.name.span, Span::new(12, 16));
        assert_eq!(split.value.map(|v| v.span), Some(Span::new(17, 20)));
        // `--from="abc"` after quote removal is shorter than the source text.
        let quoted = Spanned::new("--from=abc".to_string(), Span::new(10, 22));
        let split = WrittenFlag::split(&quoted).expect("flag");
        assert_eq!(split.value.map(|v| v.span), Some(Span::new(10, 22)));
    }
}
