//! The values of `RUN`'s own flags: `--mount` (typed [`Mount`]s), `--network`, `--security` and
//! `--device`.
//!
//! A `--mount` value is one CSV record (`type=cache,target=/root/.cache,"source=a,b"`), split with
//! Go `encoding/csv` quoting rules as BuildKit does. Each `key[=value]` option is checked against an
//! allow-list for the mount's type: an unknown key, or a key that means nothing for that type
//! (`size` on a bind mount), is an error, never silently ignored (Buildah CVE-2024-9407).
//!
//! Option values may hold variables (`target=$HOME/.cache`). At parse time only values without
//! `$`, quotes or escapes are checked for their type; [`Mount::expand`] expands every value
//! (BuildKit expands them all) and checks the whole mount again.

use crate::error::{ParseError, ParseErrorKind};
use crate::expand::VariableUse;
use crate::flags::sub_span;
use crate::instruction::did_you_mean;
use crate::shell::{EnvLookup, Lexer};
use crate::span::{Span, Spanned};

/// What a `--mount` mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MountType {
    /// A directory of the build context, a stage, an image or a named context (read-only by default).
    Bind,
    /// A persistent cache directory (read-write by default).
    Cache,
    /// An empty in-memory file system.
    Tmpfs,
    /// A build secret, as a file and/or an environment variable.
    Secret,
    /// An SSH agent socket.
    Ssh,
}

impl MountType {
    pub const ALL: [MountType; 5] = [
        MountType::Bind,
        MountType::Cache,
        MountType::Tmpfs,
        MountType::Secret,
        MountType::Ssh,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }

    /// Case-insensitive, as BuildKit.
    pub fn parse(s: &str) -> Option<MountType> {
        MountType::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }

    /// The options this type of mount accepts.
    fn allowed(self) -> &'static [Key] {
        use Key::*;
        match self {
            MountType::Bind => &[Type, Target, Source, From, ReadOnly, ReadWrite],
            MountType::Cache => &[
                Type, Target, Source, From, ReadOnly, ReadWrite, Id, Sharing, Mode, Uid, Gid,
            ],
            MountType::Tmpfs => &[Type, Target, Size, ReadOnly, ReadWrite],
            MountType::Secret => &[Type, Target, Id, Source, Env, Required, Mode, Uid, Gid],
            MountType::Ssh => &[Type, Target, Id, Required, Mode, Uid, Gid],
        }
    }
}

impl std::fmt::Display for MountType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How concurrent builds share one cache mount (`sharing=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CacheSharing {
    /// Concurrent writers use the same directory.
    #[default]
    Shared,
    /// A second concurrent writer gets a fresh directory.
    Private,
    /// A second writer waits until the first releases the mount.
    Locked,
}

impl CacheSharing {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheSharing::Shared => "shared",
            CacheSharing::Private => "private",
            CacheSharing::Locked => "locked",
        }
    }

    fn parse(s: &str) -> Option<CacheSharing> {
        [
            CacheSharing::Shared,
            CacheSharing::Private,
            CacheSharing::Locked,
        ]
        .into_iter()
        .find(|c| c.as_str().eq_ignore_ascii_case(s))
    }
}

/// One `key[=value]` option of a `--mount`, as written (key lower-cased, CSV quotes removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOption {
    pub key: String,
    pub value: Option<String>,
    /// The option inside the flag (the whole flag when the source text was quoted).
    pub span: Span,
}

/// A typed `RUN --mount`.
///
/// Until [`Mount::expand`] has run, string fields hold the values as written (variables
/// unexpanded) and typed fields whose value holds a variable keep their defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: MountType,
    /// `target`, `dst`, `destination`: where it is mounted (relative paths are relative to WORKDIR).
    pub target: Option<String>,
    /// `source`, `src`: the path inside `from` (bind, cache), or the secret id (secret).
    pub source: Option<String>,
    /// `from`: a stage, image or named context (bind: root of the source; cache: its seed).
    pub from: Option<String>,
    /// From `readonly`/`ro`/`readwrite`/`rw`, else the type's default (bind, secret, ssh: true).
    pub read_only: bool,
    /// `id`: the cache id, secret id or SSH agent id.
    pub id: Option<String>,
    /// `sharing` (cache only).
    pub sharing: CacheSharing,
    /// `mode`, octal (cache, secret, ssh).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// `size` of a tmpfs in bytes (`64m`, `1g`, `1.5GiB`: binary units).
    pub size: Option<u64>,
    /// `required` (secret, ssh): fail when the secret or agent is missing.
    pub required: bool,
    /// `env` (secret): also expose the secret as this environment variable.
    pub env: Option<String>,
    /// The options as written, in order (what [`Mount::expand`] works from).
    pub options: Vec<MountOption>,
    /// The whole `--mount=…` value.
    pub span: Span,
}

impl Mount {
    fn new(kind: MountType, options: Vec<MountOption>, span: Span) -> Mount {
        Mount {
            kind,
            target: None,
            source: None,
            from: None,
            read_only: matches!(kind, MountType::Bind | MountType::Secret | MountType::Ssh),
            id: None,
            sharing: CacheSharing::Shared,
            mode: None,
            uid: None,
            gid: None,
            size: None,
            required: false,
            env: None,
            options,
            span,
        }
    }

    /// Parses the value of one `--mount=` flag. `escape` is the Dockerfile's escape character
    /// (values containing it are only checked after expansion).
    pub fn parse(value: &Spanned<String>, escape: char) -> Result<Mount, ParseError> {
        let fields = split_csv(&value.value).map_err(|e| mount_error(e, value.span))?;
        let options = fields
            .into_iter()
            .map(|f| {
                let span = sub_span(value, f.range.start, f.range.end);
                match f.text.split_once('=') {
                    Some((k, v)) => MountOption {
                        key: k.to_ascii_lowercase(),
                        value: Some(v.to_string()),
                        span,
                    },
                    None => MountOption {
                        key: f.text.to_ascii_lowercase(),
                        value: None,
                        span,
                    },
                }
            })
            .collect();
        resolve(options, value.span, Phase::Written { escape })
    }

    /// Expands every option value with `lexer` in `env` and re-checks the mount with the results.
    pub fn expand(
        &mut self,
        lexer: &Lexer,
        env: &dyn EnvLookup,
    ) -> Result<VariableUse, ParseError> {
        let mut usage = VariableUse::default();
        let mut expanded = self.options.clone();
        for option in &mut expanded {
            if let Some(value) = &option.value {
                option.value = Some(usage.expand_word(lexer, env, value, option.span)?);
            }
        }
        let mut mount = resolve(expanded, self.span, Phase::Expanded)?;
        mount.options = std::mem::take(&mut self.options);
        *self = mount;
        Ok(usage)
    }
}

/// Whether values are final (expanded) or as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Written { escape: char },
    Expanded,
}

impl Phase {
    /// Whether `value` is what it will be after expansion, so its type can be checked now.
    fn is_final(self, value: &str) -> bool {
        match self {
            Phase::Expanded => true,
            Phase::Written { escape } => is_literal(value, escape),
        }
    }
}

/// No variable, quote or escape: expansion leaves the word unchanged.
pub(crate) fn is_literal(word: &str, escape: char) -> bool {
    !word
        .chars()
        .any(|c| c == '$' || c == '\'' || c == '"' || c == escape)
}

/// The option names BuildKit knows, each with its accepted spellings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Type,
    Target,
    Source,
    From,
    ReadOnly,
    ReadWrite,
    Id,
    Sharing,
    Mode,
    Uid,
    Gid,
    Size,
    Required,
    Env,
}

const KEY_SPELLINGS: &[(&str, Key)] = &[
    ("type", Key::Type),
    ("target", Key::Target),
    ("dst", Key::Target),
    ("destination", Key::Target),
    ("source", Key::Source),
    ("src", Key::Source),
    ("from", Key::From),
    ("readonly", Key::ReadOnly),
    ("ro", Key::ReadOnly),
    ("readwrite", Key::ReadWrite),
    ("rw", Key::ReadWrite),
    ("id", Key::Id),
    ("sharing", Key::Sharing),
    ("mode", Key::Mode),
    ("uid", Key::Uid),
    ("gid", Key::Gid),
    ("size", Key::Size),
    ("required", Key::Required),
    ("env", Key::Env),
];

impl Key {
    fn lookup(key: &str) -> Option<Key> {
        KEY_SPELLINGS
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    /// All spellings of this key, e.g. `target (dst, destination)`.
    fn describe(self) -> String {
        let spellings: Vec<&str> = KEY_SPELLINGS
            .iter()
            .filter(|(_, k)| *k == self)
            .map(|(s, _)| *s)
            .collect();
        match spellings.split_first() {
            Some((first, [])) => first.to_string(),
            Some((first, rest)) => format!("{first} ({})", rest.join(", ")),
            None => String::new(),
        }
    }
}

fn describe_allowed(kind: MountType) -> String {
    kind.allowed()
        .iter()
        .map(|k| k.describe())
        .collect::<Vec<_>>()
        .join(", ")
}

fn mount_error(message: String, span: Span) -> ParseError {
    ParseError::new(ParseErrorKind::InvalidMount(message), span)
}

/// Builds a [`Mount`] from its options, checking every key against the type's allow-list.
fn resolve(options: Vec<MountOption>, span: Span, phase: Phase) -> Result<Mount, ParseError> {
    // Every key known, none repeated (`ro` and `rw` count as one setting).
    let mut keyed: Vec<(Key, usize)> = Vec::with_capacity(options.len());
    for (index, option) in options.iter().enumerate() {
        if option.key.is_empty() {
            let what = if option.value.is_some() {
                "an option with no name"
            } else {
                "an empty option (check for doubled or trailing commas)"
            };
            return Err(mount_error(what.to_string(), option.span));
        }
        let Some(key) = Key::lookup(&option.key) else {
            let spellings: Vec<&str> = KEY_SPELLINGS.iter().map(|(s, _)| *s).collect();
            let hint = did_you_mean(&option.key, &spellings)
                .map(|s| format!(" (did you mean {s}?)"))
                .unwrap_or_default();
            return Err(mount_error(
                format!("unknown option `{}`{hint}", option.key),
                option.span,
            ));
        };
        let group = |k: Key| {
            if k == Key::ReadWrite {
                Key::ReadOnly
            } else {
                k
            }
        };
        if let Some((_, earlier)) = keyed.iter().find(|(k, _)| group(*k) == group(key)) {
            let earlier = options.get(*earlier).map_or("", |o| o.key.as_str());
            let message = if earlier == option.key {
                format!("option `{}` is given more than once", option.key)
            } else {
                format!(
                    "options `{earlier}` and `{}` set the same thing; give only one",
                    option.key
                )
            };
            return Err(mount_error(message, option.span));
        }
        keyed.push((key, index));
    }

    // The type decides which other options are allowed; it is `bind` when not given.
    let mut kind = Some(MountType::Bind);
    if let Some(option) = keyed
        .iter()
        .find(|(k, _)| *k == Key::Type)
        .and_then(|(_, i)| options.get(*i))
    {
        let Some(value) = &option.value else {
            return Err(mount_error(
                "`type` needs a value: type=bind|cache|tmpfs|secret|ssh".into(),
                option.span,
            ));
        };
        kind = if phase.is_final(value) {
            let parsed = MountType::parse(value).ok_or_else(|| {
                let names: Vec<&str> = MountType::ALL.iter().map(|t| t.as_str()).collect();
                let hint = did_you_mean(&value.to_ascii_lowercase(), &names)
                    .map(|s| format!(" (did you mean {s}?)"))
                    .unwrap_or_default();
                mount_error(
                    format!("unsupported mount type {value:?}{hint}; use bind, cache, tmpfs, secret or ssh"),
                    option.span,
                )
            })?;
            Some(parsed)
        } else {
            None // `type=$VAR`: checked after expansion
        };
    }

    let mut mount = Mount::new(kind.unwrap_or(MountType::Bind), Vec::new(), span);
    let mut read_only_set = false;
    for (key, index) in &keyed {
        let Some(option) = options.get(*index) else {
            continue;
        };
        if let Some(kind) = kind {
            if !kind.allowed().contains(key) {
                return Err(mount_error(
                    format!(
                        "option `{}` does not apply to a {kind} mount (a {kind} mount accepts: {})",
                        option.key,
                        describe_allowed(kind)
                    ),
                    option.span,
                ));
            }
        }
        let value = match (&option.value, key) {
            (None, Key::ReadOnly | Key::ReadWrite | Key::Required) => None,
            (None, _) => {
                return Err(mount_error(
                    format!("option `{0}` needs a value: {0}=<value>", option.key),
                    option.span,
                ));
            }
            (Some(v), _) => Some(v.as_str()),
        };
        let invalid = |what: &str| {
            mount_error(
                format!(
                    "invalid value {:?} for `{}`: {what}",
                    value.unwrap_or(""),
                    option.key
                ),
                option.span,
            )
        };
        // String options are kept as written; typed ones are checked once their value is final.
        match key {
            Key::Type => {}
            Key::Target => mount.target = value.map(str::to_string),
            Key::Source => mount.source = value.map(str::to_string),
            Key::From => {
                // As BuildKit: the stage graph is fixed before variables are known.
                if let (Phase::Written { .. }, Some(v)) = (phase, value) {
                    if v.find('$').is_some_and(|i| i + 1 < v.len()) {
                        return Err(mount_error(
                            "`from` does not support variables: declare the image with a global ARG, add a stage \
                             `FROM ${IMAGE} AS <name>` and use from=<name>"
                                .into(),
                            option.span,
                        ));
                    }
                }
                mount.from = value.map(str::to_string);
            }
            Key::Id => mount.id = value.map(str::to_string),
            Key::Env => mount.env = value.map(str::to_string),
            _ => {
                let Some(value) = value else {
                    // A bare `ro`, `rw` or `required`.
                    match key {
                        Key::ReadOnly => mount.read_only = true,
                        Key::ReadWrite => mount.read_only = false,
                        _ => mount.required = true,
                    }
                    read_only_set |= matches!(key, Key::ReadOnly | Key::ReadWrite);
                    continue;
                };
                if !phase.is_final(value) {
                    read_only_set |= matches!(key, Key::ReadOnly | Key::ReadWrite);
                    continue;
                }
                match key {
                    Key::ReadOnly | Key::ReadWrite => {
                        let b = parse_go_bool(value)
                            .ok_or_else(|| invalid("expected true or false"))?;
                        mount.read_only = if *key == Key::ReadOnly { b } else { !b };
                        read_only_set = true;
                    }
                    Key::Required => {
                        mount.required = parse_go_bool(value)
                            .ok_or_else(|| invalid("expected true or false"))?;
                    }
                    Key::Sharing => {
                        mount.sharing = CacheSharing::parse(value)
                            .ok_or_else(|| invalid("expected shared, private or locked"))?;
                    }
                    Key::Mode => {
                        let mode = parse_octal_mode(value)
                            .ok_or_else(|| invalid("expected an octal file mode such as 0755"))?;
                        mount.mode = Some(mode);
                    }
                    Key::Uid => {
                        mount.uid = Some(
                            value
                                .parse::<u32>()
                                .map_err(|_| invalid("expected a numeric user id"))?,
                        )
                    }
                    Key::Gid => {
                        mount.gid = Some(
                            value
                                .parse::<u32>()
                                .map_err(|_| invalid("expected a numeric group id"))?,
                        )
                    }
                    Key::Size => {
                        mount.size = Some(parse_size(value).ok_or_else(|| {
                            invalid("expected a size such as 64m, 1g or 1048576")
                        })?);
                    }
                    _ => {}
                }
            }
        }
    }
    if !read_only_set {
        mount.read_only = matches!(
            mount.kind,
            MountType::Bind | MountType::Secret | MountType::Ssh
        );
    }
    if kind == Some(MountType::Secret) {
        if mount.source.is_some() && mount.id.is_some() {
            return Err(mount_error(
                "a secret mount takes `id` or `source`, not both".into(),
                span,
            ));
        }
        if mount.source.is_none() && mount.id.is_none() && mount.target.is_none() {
            return Err(mount_error(
                "a secret mount needs `id` (or a `target` whose file name is the id), e.g. type=secret,id=npmrc".into(),
                span,
            ));
        }
    }
    mount.options = options;
    Ok(mount)
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// An octal permission (`755`, `0755`), at most `07777`.
pub(crate) fn parse_octal_mode(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o7777)
}

/// A size in bytes as Docker's `units.RAMInBytes` reads it: a decimal number, an optional space,
/// then an optional binary unit `k`, `m`, `g`, `t` or `p` with optional `i` and `b` (any case).
pub(crate) fn parse_size(s: &str) -> Option<u64> {
    let number_len = s
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (number, rest) = s.split_at_checked(number_len)?;
    let well_formed = number.bytes().next().is_some_and(|b| b.is_ascii_digit())
        && !number.ends_with('.')
        && number.bytes().filter(|b| *b == b'.').count() <= 1;
    if !well_formed {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let mut rest = rest.strip_prefix(' ').unwrap_or(rest).chars().peekable();
    let mut multiplier: u64 = 1;
    if let Some(c) = rest.peek().copied() {
        let shift = match c.to_ascii_lowercase() {
            'k' => Some(10),
            'm' => Some(20),
            'g' => Some(30),
            't' => Some(40),
            'p' => Some(50),
            _ => None,
        };
        if let Some(shift) = shift {
            multiplier = 1u64 << shift;
            rest.next();
        }
    }
    if rest.peek().is_some_and(|c| c.eq_ignore_ascii_case(&'i')) {
        rest.next();
    }
    if rest.peek().is_some_and(|c| c.eq_ignore_ascii_case(&'b')) {
        rest.next();
    }
    if rest.next().is_some() {
        return None;
    }
    let bytes = value * multiplier as f64;
    (bytes.is_finite() && bytes < 9.2e18).then_some(bytes as u64)
}

/// One CSV field: its text after quote removal and its byte range in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CsvField {
    pub text: String,
    pub range: std::ops::Range<usize>,
}

/// Splits one CSV record as Go's `encoding/csv` does (no lazy quotes): fields separated by `,`;
/// a field starting with `"` is quoted, `""` inside it is one `"`, and the closing quote must end
/// the field; a `"` inside an unquoted field is an error.
pub(crate) fn split_csv(input: &str) -> Result<Vec<CsvField>, String> {
    if input.is_empty() {
        return Err("the value is empty".into());
    }
    let mut fields = Vec::new();
    let mut chars = input.char_indices().peekable();
    loop {
        let start = chars.peek().map_or(input.len(), |(i, _)| *i);
        let mut text = String::new();
        if chars.peek().is_some_and(|(_, c)| *c == '"') {
            chars.next();
            loop {
                match chars.next() {
                    None => {
                        return Err(format!(
                            "unterminated quoted field starting at byte {start}"
                        ))
                    }
                    Some((_, '"')) => {
                        if chars.peek().is_some_and(|(_, c)| *c == '"') {
                            chars.next();
                            text.push('"');
                        } else {
                            break;
                        }
                    }
                    Some((_, c)) => text.push(c),
                }
            }
            match chars.peek() {
                None | Some((_, ',')) => {}
                Some((i, _)) => {
                    return Err(format!(
                        "unexpected text after the closing quote at byte {i}"
                    ))
                }
            }
        } else {
            while let Some((i, c)) = chars.peek().copied() {
                match c {
                    ',' => break,
                    '"' => {
                        return Err(format!(
                            "a `\"` inside an unquoted field at byte {i} (quote the whole field)"
                        ))
                    }
                    '\n' | '\r' => return Err("a line break inside the value".into()),
                    _ => {
                        text.push(c);
                        chars.next();
                    }
                }
            }
        }
        let end = chars.peek().map_or(input.len(), |(i, _)| *i);
        fields.push(CsvField {
            text,
            range: start..end,
        });
        match chars.next() {
            Some((_, ',')) => continue,
            _ => break,
        }
    }
    Ok(fields)
}

/// `RUN --network=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NetworkMode {
    /// The build's default network.
    #[default]
    Default,
    /// Only a private loopback interface.
    None,
    /// The host's network (needs the `network.host` entitlement).
    Host,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Default => "default",
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
        }
    }

    pub fn parse(s: &str) -> Option<NetworkMode> {
        [NetworkMode::Default, NetworkMode::None, NetworkMode::Host]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// `RUN --security=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SecurityMode {
    /// The normal sandbox.
    #[default]
    Sandbox,
    /// Privileged (needs the `security.insecure` entitlement).
    Insecure,
}

impl SecurityMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityMode::Sandbox => "sandbox",
            SecurityMode::Insecure => "insecure",
        }
    }

    pub fn parse(s: &str) -> Option<SecurityMode> {
        [SecurityMode::Sandbox, SecurityMode::Insecure]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// `RUN --device=name[,required[=bool]]`: a CDI device requested for the step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// `vendor.com/class`, `vendor.com/class=name`, `vendor.com/class=*` or an annotation class.
    pub name: String,
    pub required: bool,
    pub span: Span,
}

impl Device {
    pub fn parse(value: &Spanned<String>) -> Result<Device, ParseError> {
        let error = |m: String, span: Span| ParseError::new(ParseErrorKind::InvalidDevice(m), span);
        let fields = split_csv(&value.value).map_err(|e| error(e, value.span))?;
        let mut fields = fields.into_iter();
        let name = fields.next().map(|f| f.text).unwrap_or_default();
        if name.is_empty() {
            return Err(error(
                "the device name is empty: --device=<name>[,required]".into(),
                value.span,
            ));
        }
        let mut required = false;
        for field in fields {
            let span = sub_span(value, field.range.start, field.range.end);
            required = match field.text.split_once('=') {
                None if field.text.eq_ignore_ascii_case("required") => true,
                Some((k, v)) if k.eq_ignore_ascii_case("required") => {
                    parse_go_bool(v).ok_or_else(|| {
                        error(
                            format!("invalid value {v:?} for `required`: expected true or false"),
                            span,
                        )
                    })?
                }
                _ => {
                    return Err(error(
                        format!(
                            "unknown option `{}`: only `required` may follow the device name",
                            field.text
                        ),
                        span,
                    ))
                }
            };
        }
        Ok(Device {
            name,
            required,
            span: value.span,
        })
    }

    /// Expands the device name.
    pub fn expand(
        &mut self,
        lexer: &Lexer,
        env: &dyn EnvLookup,
    ) -> Result<VariableUse, ParseError> {
        let mut usage = VariableUse::default();
        self.name = usage.expand_word(lexer, env, &self.name, self.span)?;
        Ok(usage)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn spanned(s: &str) -> Spanned<String> {
        Spanned::new(s.to_string(), Span::new(1000, 1000 + s.len()))
    }

    fn mount(s: &str) -> Result<Mount, ParseError> {
        Mount::parse(&spanned(s), '\\')
    }

    #[test]
    fn csv_splitting() {
        let cases: &[(&str, Result<&[&str], &str>)] = &[
            ("a,b,c", Ok(&["a", "b", "c"])),
            ("a", Ok(&["a"])),
            ("a,", Ok(&["a", ""])),
            (",a", Ok(&["", "a"])),
            ("\"a,b\",c", Ok(&["a,b", "c"])),
            ("\"a\"\"b\"", Ok(&["a\"b"])),
            ("\"\"", Ok(&[""])),
            (
                "\"target=/a b\",type=cache",
                Ok(&["target=/a b", "type=cache"]),
            ),
            (" a , b", Ok(&[" a ", " b"])),
            ("", Err("empty")),
            ("a\"b", Err("unquoted")),
            ("\"ab", Err("unterminated")),
            ("\"a\"b", Err("after the closing quote")),
            ("a\nb", Err("line break")),
        ];
        for (input, want) in cases {
            let got = split_csv(input).map(|f| f.into_iter().map(|f| f.text).collect::<Vec<_>>());
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{input:?}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{input:?}: {got}"),
                (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
        let fields = split_csv("ab,\"c,d\",e").unwrap();
        let ranges: Vec<_> = fields.iter().map(|f| f.range.clone()).collect();
        assert_eq!(ranges, vec![0..2, 3..8, 9..10]);
    }

    #[test]
    fn accepted_mounts() {
        let m = mount(
            "type=cache,target=/root/.cache,id=go,sharing=locked,mode=0700,uid=1000,gid=1000",
        )
        .unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        assert_eq!(m.id.as_deref(), Some("go"));
        assert_eq!(m.sharing, CacheSharing::Locked);
        assert_eq!(
            (m.mode, m.uid, m.gid),
            (Some(0o700), Some(1000), Some(1000))
        );
        assert!(!m.read_only);

        let m = mount("target=/src").unwrap();
        assert_eq!(m.kind, MountType::Bind, "type defaults to bind");
        assert!(m.read_only, "bind mounts are read-only by default");

        let m = mount("type=bind,source=.,target=/src,rw").unwrap();
        assert!(!m.read_only);
        let m = mount("type=bind,target=/src,readwrite=true").unwrap();
        assert!(!m.read_only);
        let m = mount("type=cache,target=/c,ro").unwrap();
        assert!(m.read_only);
        let m = mount("type=cache,target=/c,readonly=false").unwrap();
        assert!(!m.read_only);
        let m = mount("TYPE=Cache,DST=/c").unwrap();
        assert_eq!(
            (m.kind, m.target.as_deref()),
            (MountType::Cache, Some("/c"))
        );
        let m = mount("destination=/d,from=builder,src=/out").unwrap();
        assert_eq!(
            (m.target.as_deref(), m.from.as_deref(), m.source.as_deref()),
            (Some("/d"), Some("builder"), Some("/out"))
        );

        let m = mount("type=tmpfs,target=/tmp,size=64m").unwrap();
        assert_eq!(m.size, Some(64 << 20));
        assert!(!m.read_only);

        let m = mount("type=secret,id=npmrc,target=/root/.npmrc,required,mode=0444").unwrap();
        assert_eq!(
            (m.kind, m.id.as_deref(), m.required, m.mode),
            (MountType::Secret, Some("npmrc"), true, Some(0o444))
        );
        let m = mount("type=secret,id=API_KEY,env=API_KEY,required=false").unwrap();
        assert_eq!((m.env.as_deref(), m.required), (Some("API_KEY"), false));
        let m = mount("type=secret,target=/run/secrets/token").unwrap();
        assert_eq!(m.target.as_deref(), Some("/run/secrets/token"));

        let m = mount("type=ssh").unwrap();
        assert_eq!((m.kind, m.read_only), (MountType::Ssh, true));
        let m = mount("type=ssh,id=github,required=true,target=/run/ssh").unwrap();
        assert!(m.required);

        let m = mount("\"target=/a,b\",type=cache").unwrap();
        assert_eq!(m.target.as_deref(), Some("/a,b"));
    }

    #[test]
    fn rejected_mounts() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("type=cache,,target=/c", "empty option"),
            ("type=cache,target=/c,", "empty option"),
            ("=x", "no name"),
            ("type=cache,target=/c,foo=bar", "unknown option `foo`"),
            (
                "type=cache,traget=/c",
                "unknown option `traget` (did you mean target?)",
            ),
            (
                "type=cache,target=/c,propagation=shared",
                "unknown option `propagation`",
            ),
            (
                "type=bind,target=/c,bind-propagation=rshared",
                "unknown option",
            ),
            ("type=nfs,target=/c", "unsupported mount type \"nfs\""),
            ("type=cahce,target=/c", "did you mean cache?"),
            ("type", "`type` needs a value"),
            ("target", "`target` needs a value"),
            (
                "type=bind,target=/c,size=10m",
                "option `size` does not apply to a bind mount",
            ),
            (
                "type=bind,target=/c,id=x",
                "`id` does not apply to a bind mount",
            ),
            (
                "type=bind,target=/c,sharing=locked",
                "`sharing` does not apply",
            ),
            ("type=bind,target=/c,mode=0755", "`mode` does not apply"),
            ("type=bind,target=/c,required", "`required` does not apply"),
            (
                "type=cache,target=/c,size=1g",
                "`size` does not apply to a cache mount",
            ),
            ("type=cache,target=/c,env=X", "`env` does not apply"),
            (
                "type=tmpfs,target=/t,from=img",
                "`from` does not apply to a tmpfs mount",
            ),
            ("type=tmpfs,target=/t,uid=1", "`uid` does not apply"),
            (
                "type=secret,id=a,from=builder",
                "`from` does not apply to a secret mount",
            ),
            (
                "type=secret,id=a,sharing=shared",
                "`sharing` does not apply",
            ),
            ("type=secret,id=a,rw", "`rw` does not apply"),
            (
                "type=ssh,source=/x",
                "`source` does not apply to a ssh mount",
            ),
            ("type=ssh,env=X", "`env` does not apply"),
            (
                "type=cache,target=/a,target=/b",
                "`target` is given more than once",
            ),
            (
                "type=cache,target=/a,dst=/b",
                "`target` and `dst` set the same thing",
            ),
            (
                "type=cache,target=/a,ro,rw",
                "`ro` and `rw` set the same thing",
            ),
            (
                "type=cache,type=bind,target=/a",
                "`type` is given more than once",
            ),
            (
                "type=cache,target=/c,sharing=exclusive",
                "invalid value \"exclusive\" for `sharing`",
            ),
            (
                "type=cache,target=/c,mode=0999",
                "invalid value \"0999\" for `mode`",
            ),
            ("type=cache,target=/c,mode=u+rwx", "for `mode`"),
            ("type=cache,target=/c,mode=17777", "for `mode`"),
            ("type=cache,target=/c,mode=", "for `mode`"),
            ("type=cache,target=/c,uid=-1", "for `uid`"),
            ("type=cache,target=/c,uid=root", "for `uid`"),
            ("type=cache,target=/c,gid=4294967296", "for `gid`"),
            ("type=tmpfs,target=/t,size=lots", "for `size`"),
            ("type=tmpfs,target=/t,size=10x", "for `size`"),
            ("type=tmpfs,target=/t,size=1.2.3m", "for `size`"),
            ("type=cache,target=/c,ro=maybe", "for `ro`"),
            ("type=secret,id=a,required=yes", "for `required`"),
            ("type=secret", "a secret mount needs `id`"),
            ("type=secret,env=TOKEN", "a secret mount needs `id`"),
            ("type=secret,id=a,source=b", "`id` or `source`, not both"),
            ("target=/a\"b", "unquoted field"),
            (
                "type=bind,target=/a,from=$STAGE",
                "`from` does not support variables",
            ),
            (
                "type=cache,target=/a,from=img:${TAG}",
                "`from` does not support variables",
            ),
        ];
        for (input, want) in cases {
            match mount(input) {
                Ok(m) => panic!("{input:?} should fail, got {m:?}"),
                Err(e) => {
                    assert!(
                        matches!(e.kind, ParseErrorKind::InvalidMount(_)),
                        "{input:?}: {e:?}"
                    );
                    assert!(
                        e.to_string().contains(want),
                        "{input:?}: got {:?}, want {want:?}",
                        e.to_string()
                    );
                }
            }
        }
    }

    #[test]
    fn error_span_points_at_the_option() {
        let value = spanned("type=cache,target=/c,foo=bar");
        let err = Mount::parse(&value, '\\').unwrap_err();
        assert_eq!(err.span, Span::new(1000 + 21, 1000 + 28));
    }

    #[test]
    fn variables_defer_type_checks_until_expansion() {
        // `mode=$MODE` cannot be checked before expansion; the key is still checked.
        let m = mount("type=cache,target=$HOME/.cache,mode=$MODE").unwrap();
        assert_eq!((m.target.as_deref(), m.mode), (Some("$HOME/.cache"), None));
        assert!(mount("type=cache,target=/c,bogus=$X").is_err());
        // `type=$T` defers the per-type allow-list too.
        let m = mount("type=$T,target=/t,size=1g").unwrap();
        assert_eq!(m.size, Some(1 << 30));
    }

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("1048576", Some(1 << 20)),
            ("64m", Some(64 << 20)),
            ("64M", Some(64 << 20)),
            ("64mb", Some(64 << 20)),
            ("64MiB", Some(64 << 20)),
            ("1g", Some(1 << 30)),
            ("1.5k", Some(1536)),
            ("2 GB", Some(2 << 30)),
            ("10b", Some(10)),
            ("", None),
            ("m", None),
            (".5m", None),
            ("5.m", None),
            ("-1m", None),
            ("1 ", Some(1)),
            ("1  ", None),
            ("1mm", None),
            ("99999999999p", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_size(input), *want, "{input:?}");
        }
    }

    #[test]
    fn network_security_device() {
        assert_eq!(NetworkMode::parse("none"), Some(NetworkMode::None));
        assert_eq!(NetworkMode::parse("host"), Some(NetworkMode::Host));
        assert_eq!(NetworkMode::parse("bridge"), None);
        assert_eq!(
            SecurityMode::parse("insecure"),
            Some(SecurityMode::Insecure)
        );
        assert_eq!(SecurityMode::parse("INSECURE"), None);

        let d = Device::parse(&spanned("vendor1.com/device=foo,required")).unwrap();
        assert_eq!(
            (d.name.as_str(), d.required),
            ("vendor1.com/device=foo", true)
        );
        let d = Device::parse(&spanned("class1")).unwrap();
        assert!(!d.required);
        assert!(Device::parse(&spanned("")).is_err());
        assert!(Device::parse(&spanned("x,optional")).is_err());
        assert!(Device::parse(&spanned("x,required=maybe")).is_err());
    }
}
