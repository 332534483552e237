//! `rbuild build` (and the shorthand `rbuild [flags] CONTEXT`): `docker build`-compatible
//! flags, the `-o/--output` specs BuildKit understands, and what the build prints.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use rbuild_builder::build::{build, BuildEvent, BuildRequest, BuiltImage};
use rbuild_builder::run::{RunOptions, SecretSource};
use rbuild_cache::Store;
use rbuild_image::reference::Reference;
use rbuild_image::{Compression, LayerCompression, LayerOptions};
use rbuild_solver::{BuildOptions, Platform};

use crate::progress::{Progress, ProgressMode};

/// The flags of `rbuild build`, spelled as `docker build` spells them.
#[derive(Args, Debug, Default)]
pub struct BuildArgs {
    /// Name (and optionally tag) the image: `name:tag` (repeatable).
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile; `-` reads standard input).
    #[arg(short = 'f', long = "file")]
    pub file: Option<String>,
    /// A build-time variable: `NAME=VALUE`, or `NAME` to take its value from the environment.
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// The stage to build (default: the last one).
    #[arg(long)]
    pub target: Option<String>,
    /// A label for the image: `KEY=VALUE` (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// The platform to build for (only the host's, linux/amd64 here, until cross-platform builds).
    #[arg(long)]
    pub platform: Option<String>,
    /// Where the result goes: `type=image|registry|oci|docker|local|tar[,dest=PATH][,name=REF[,REF…]][,push=true][,compression=gzip|zstd|uncompressed][,compression-level=N][,force-compression=true]`,
    /// or a directory (local), or `-` (a tar on standard output). `type=registry` is
    /// `type=image,push=true`. The store keeps built layers uncompressed: `compression` (gzip
    /// by default) applies to what leaves it, a push or an OCI archive.
    #[arg(short = 'o', long = "output")]
    pub outputs: Vec<String>,
    /// Write the image ID to this file.
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Write build result metadata (JSON) to this file.
    #[arg(long = "metadata-file")]
    pub metadata_file: Option<PathBuf>,
    /// Progress output: auto, tty, plain or rawjson.
    #[arg(long, default_value = "auto")]
    pub progress: String,
    /// Print only the image ID.
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not use cached results: run every step (their results are still recorded).
    #[arg(long = "no-cache")]
    pub no_cache: bool,
    /// How many stages may run at once (default: every stage whose inputs are ready).
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    /// Do not use cached results for these stages (names or indexes; repeatable).
    #[arg(long = "no-cache-filter", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,
    /// A secret RUN steps can mount: `id=ID[,src=PATH|,env=VAR]` (`src` defaults to the
    /// environment variable ID when it is set; never stored in the image or its history).
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// An SSH agent RUN steps can use: `default` (SSH_AUTH_SOCK) or `ID=SOCKET`.
    #[arg(long = "ssh")]
    pub ssh: Vec<String>,
    /// The network of RUN steps: default (the host's network), none or host.
    #[arg(long, default_value = "default")]
    pub network: String,
    /// Extra privileges RUN steps may ask for: network.host, security.insecure.
    #[arg(long = "allow")]
    pub allow: Vec<String>,
    /// Memory limit of each RUN step (e.g. 512m, 2g).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// CPU CFS period of each RUN step in microseconds (with --cpu-quota).
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<u64>,
    /// CPU CFS quota of each RUN step in microseconds per period.
    #[arg(long = "cpu-quota")]
    pub cpu_quota: Option<u64>,
    /// A reproducible image: `created` in the config and history is this Unix time, and file
    /// mtimes in the layers newer than it are clamped to it (default: `--build-arg
    /// SOURCE_DATE_EPOCH`, then the SOURCE_DATE_EPOCH environment variable).
    #[arg(long = "source-date-epoch", value_name = "SECONDS", value_parser = clap::value_parser!(i64).range(0..))]
    pub source_date_epoch: Option<i64>,
    /// Export the build cache: `type=local,dest=DIR` (an OCI layout) or `type=registry,ref=REF`
    /// (the same artifact pushed to REF), `[,mode=min|max][,compression=gzip|zstd|uncompressed]`
    /// (`min`, the default, exports the final image's stages, `max` every step; layers are
    /// exported gzip unless `compression` says otherwise); or `type=inline` (the records inside
    /// the image's config).
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Option<String>,
    /// Use a cache a `--cache-to` wrote: `type=local,src=DIR`, `type=registry,ref=REF` or `REF`
    /// (a registry cache, or an image with an inline cache); repeatable.
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,
    /// Check every base image against its registry, even one the store has (only what is
    /// missing is downloaded).
    #[arg(long)]
    pub pull: bool,
    /// Push the image to the registry of each -t name after the build (`-o type=registry`).
    #[arg(long)]
    pub push: bool,
    #[command(flatten)]
    pub registry: crate::registry::RegistryFlags,
    /// The build context directory.
    pub context: Option<String>,
}

/// Parses a size with an optional binary unit suffix (`b`, `k`, `m`, `g`), as docker does.
pub fn parse_bytes(s: &str) -> anyhow::Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix('b')
        .filter(|r| !r.is_empty() && r.ends_with(['k', 'm', 'g']))
        .unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('b') => (&t[..t.len() - 1], 1),
        _ => (t, 1),
    };
    let n: f64 = num.parse().map_err(|_| {
        anyhow::anyhow!("invalid size {s:?}: want a number with an optional b, k, m or g suffix")
    })?;
    if !(n.is_finite() && n >= 0.0) {
        anyhow::bail!("invalid size {s:?}");
    }
    Ok((n * mult as f64) as u64)
}

/// Parses `--network`.
pub fn parse_network(s: &str) -> anyhow::Result<rbuild_executor::sandbox::Network> {
    use rbuild_executor::sandbox::Network;
    Ok(match s {
        "default" | "bridge" | "" => Network::Default,
        "none" => Network::None,
        "host" => Network::Host,
        other => anyhow::bail!("unsupported network {other:?}: use default, none or host"),
    })
}

/// The RUN options from the flags.
fn run_options(args: &BuildArgs) -> anyhow::Result<RunOptions> {
    let mut opts = RunOptions {
        network: parse_network(&args.network)?,
        ..RunOptions::default()
    };
    for a in &args.allow {
        match a.as_str() {
            "network.host" => opts.allow_host_network = true,
            "security.insecure" => opts.allow_insecure = true,
            other => anyhow::bail!(
                "unknown --allow entitlement {other:?}: use network.host or security.insecure"
            ),
        }
    }
    for s in &args.secrets {
        let mut id = None;
        let mut source = None;
        for field in s.split(',') {
            match field.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => source = Some(SecretSource::File(PathBuf::from(v))),
                Some(("env", v)) => source = Some(SecretSource::Env(v.to_string())),
                Some(("type", "file")) => {}
                Some(("type", "env")) => {}
                _ => anyhow::bail!("invalid --secret {s:?}: want id=ID[,src=PATH|,env=VAR]"),
            }
        }
        let id = id.ok_or_else(|| anyhow::anyhow!("invalid --secret {s:?}: id= is required"))?;
        let source = source.unwrap_or_else(|| SecretSource::Env(id.clone()));
        opts.secrets.insert(id, source);
    }
    for s in &args.ssh {
        let (id, path) = match s.split_once('=') {
            Some((id, path)) => (id.to_string(), PathBuf::from(path)),
            None => {
                let sock = std::env::var_os("SSH_AUTH_SOCK").ok_or_else(|| {
                    anyhow::anyhow!(
                        "--ssh {s}: SSH_AUTH_SOCK is not set; give the socket as --ssh {s}=PATH"
                    )
                })?;
                (s.clone(), PathBuf::from(sock))
            }
        };
        opts.ssh.insert(id, path);
    }
    if let Some(m) = &args.memory {
        opts.limits.memory = Some(parse_bytes(m)?);
    }
    if let Some(q) = args.cpu_quota {
        let period = args.cpu_period.unwrap_or(100_000).max(1);
        opts.limits.cpus = Some(q as f64 / period as f64);
    }
    Ok(opts)
}

/// One `-o` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Into the local image store (the default), named `names` (besides the -t tags), and
    /// pushed under every name when `push`.
    Image {
        names: Vec<String>,
        push: bool,
    },
    Oci {
        dest: String,
    },
    Docker {
        dest: String,
    },
    Local {
        dest: PathBuf,
    },
    Tar {
        dest: String,
    },
}

/// The comma-separated fields of an `-o` value; a field in double quotes may hold commas
/// (`"name=a,b"`), as buildx's CSV allows.
fn split_csv(spec: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    for c in spec.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// Parses one `-o` value, with how its layers are compressed when they leave the store (a push,
/// an OCI archive): `compression` (gzip by default), `compression-level`, and
/// `force-compression=true` to recompress layers compressed otherwise too.
pub fn parse_output(spec: &str) -> anyhow::Result<(Output, LayerCompression)> {
    if !spec.contains('=') {
        return Ok((
            if spec == "-" {
                Output::Tar { dest: "-".into() }
            } else {
                Output::Local {
                    dest: PathBuf::from(spec),
                }
            },
            LayerCompression::default(),
        ));
    }
    let mut fields = BTreeMap::new();
    let mut names: Vec<String> = Vec::new();
    let mut last_key = String::new();
    for part in split_csv(spec) {
        let Some((k, v)) = part.split_once('=') else {
            // `name=a,b`: further names of the image.
            if last_key == "name" && !part.trim().is_empty() {
                names.push(part.trim().to_string());
                continue;
            }
            bail!("invalid output field {part:?} in {spec:?}: expected key=value");
        };
        last_key = k.trim().to_string();
        if last_key == "name" {
            names.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_string),
            );
            continue;
        }
        fields.insert(last_key.clone(), v.trim().to_string());
    }
    let kind = fields.remove("type").unwrap_or_else(|| "local".into());
    let dest = fields.remove("dest");
    let need_dest =
        |d: Option<String>| d.with_context(|| format!("output type {kind} needs dest=PATH"));
    let compression = match fields.remove("compression").as_deref() {
        None | Some("gzip") => Compression::Gzip,
        Some("zstd") => Compression::Zstd,
        Some("uncompressed") => Compression::None,
        Some(other) => bail!("unknown compression {other:?}: use gzip, zstd or uncompressed"),
    };
    let force = match fields.remove("force-compression").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => bail!("invalid force-compression={other:?} in {spec:?}: use true or false"),
    };
    let level = match fields.remove("compression-level") {
        None => None,
        Some(l) => Some(
            l.parse::<i32>()
                .with_context(|| format!("invalid compression-level {l:?}"))?,
        ),
    };
    fields.remove("oci-mediatypes");
    let push = match fields.remove("push").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => bail!("invalid push={other:?} in {spec:?}: use true or false"),
    };
    if !names.is_empty() && !matches!(kind.as_str(), "image" | "registry" | "oci" | "docker") {
        bail!("output type {kind} takes no name=");
    }
    if push && kind != "image" {
        bail!("push=true goes with type=image (type=registry always pushes)");
    }
    let output = match kind.as_str() {
        "image" => Output::Image { names, push },
        "registry" => Output::Image { names, push: true },
        "oci" => Output::Oci {
            dest: need_dest(dest)?,
        },
        "docker" => Output::Docker {
            dest: need_dest(dest)?,
        },
        "local" => Output::Local {
            dest: PathBuf::from(need_dest(dest)?),
        },
        "tar" => Output::Tar {
            dest: need_dest(dest)?,
        },
        other => {
            bail!("unknown output type {other:?}: use image, registry, oci, docker, local or tar")
        }
    };
    if let Some(k) = fields.keys().next() {
        bail!("unknown output option {k:?} for type {kind}");
    }
    Ok((
        output,
        LayerCompression {
            compression,
            level,
            force,
        },
    ))
}

/// The kind of a `--cache-to`/`--cache-from` spec and its other fields. A spec without `=` is
/// an image reference: a registry cache, as for docker (`type=registry,ref=SPEC`).
fn cache_spec_fields(flag: &str, spec: &str) -> anyhow::Result<(String, BTreeMap<String, String>)> {
    if !spec.contains('=') {
        let fields = BTreeMap::from([("ref".to_string(), spec.trim().to_string())]);
        return Ok(("registry".to_string(), fields));
    }
    let mut fields = BTreeMap::new();
    for part in spec.split(',') {
        let (k, v) = part.split_once('=').with_context(|| {
            format!("invalid {flag} field {part:?} in {spec:?}: expected key=value")
        })?;
        fields.insert(k.trim().to_string(), v.trim().to_string());
    }
    match fields.remove("type").as_deref() {
        Some(kind @ ("local" | "registry" | "inline")) => Ok((kind.to_string(), fields)),
        Some(kind @ ("gha" | "s3" | "azblob")) => {
            bail!("{flag} type={kind} is not supported: rbuild has type=local, registry and inline")
        }
        Some(other) => bail!("unknown {flag} type {other:?}: use local, registry or inline"),
        None => bail!("{flag} {spec:?} needs a type: type=local, registry or inline"),
    }
}

/// The `ref=` of a registry cache spec.
fn cache_ref(flag: &str, spec: &str, value: Option<String>) -> anyhow::Result<Reference> {
    let value = value.filter(|r| !r.is_empty()).with_context(|| {
        format!("{flag} {spec:?} needs ref=IMAGE (e.g. registry.example.com/app:buildcache)")
    })?;
    Reference::parse(&value).with_context(|| format!("{flag}: invalid cache reference {value:?}"))
}

/// Parses `--cache-to type=local,dest=DIR|type=registry,ref=REF[,mode=min|max][,compression=gzip|zstd|uncompressed]`,
/// `type=inline`, or a bare `REF` (a registry cache).
pub fn parse_cache_to(spec: &str) -> anyhow::Result<rbuild_builder::cachekey::CacheExport> {
    use rbuild_builder::cachekey::{CacheExport, CacheMode, CacheTarget};
    let (kind, mut fields) = cache_spec_fields("--cache-to", spec)?;
    let mode = match fields.remove("mode").as_deref() {
        None | Some("min") => CacheMode::Min,
        Some("max") if kind == "inline" => {
            bail!("--cache-to type=inline supports mode=min only (the image holds only its own layers)")
        }
        Some("max") => CacheMode::Max,
        Some(other) => bail!("invalid --cache-to mode {other:?}: use min or max"),
    };
    let compression = match fields.remove("compression").as_deref() {
        None => None,
        Some(_) if kind == "inline" => {
            bail!("--cache-to type=inline takes no compression: its layers are the image's (use -o compression=…)")
        }
        Some("gzip") => Some(Compression::Gzip),
        Some("zstd") => Some(Compression::Zstd),
        Some("uncompressed") => Some(Compression::None),
        Some(other) => {
            bail!("invalid --cache-to compression {other:?}: use gzip, zstd or uncompressed")
        }
    };
    if kind == "registry" {
        // What BuildKit's registry cache options ask for is what rbuild always writes.
        for (k, always) in [("oci-mediatypes", "true"), ("image-manifest", "true")] {
            if let Some(v) = fields.remove(k).filter(|v| v != always) {
                bail!("--cache-to {k}={v} is not supported: rbuild's registry cache is an OCI image manifest");
            }
        }
    }
    let target = match kind.as_str() {
        "local" => {
            let dest = fields.remove("dest").filter(|d| !d.is_empty());
            let dest = dest.with_context(|| format!("--cache-to {spec:?} needs dest=DIR"))?;
            CacheTarget::Local(PathBuf::from(dest))
        }
        "registry" => CacheTarget::Registry(cache_ref("--cache-to", spec, fields.remove("ref"))?),
        _ => CacheTarget::Inline,
    };
    if let Some(k) = fields.keys().next() {
        let known = match kind.as_str() {
            "local" => "dest, mode and compression",
            "registry" => "ref, mode and compression",
            _ => "no other option",
        };
        bail!("unknown --cache-to option {k:?} for type={kind}: it takes {known}");
    }
    Ok(CacheExport {
        target,
        mode,
        compression,
    })
}

/// Parses `--cache-from type=local,src=DIR`, `type=registry,ref=REF` or a bare `REF` (a
/// registry cache, or an image with an inline cache).
pub fn parse_cache_from(spec: &str) -> anyhow::Result<rbuild_builder::cachekey::CacheSource> {
    use rbuild_builder::cachekey::CacheSource;
    let (kind, mut fields) = cache_spec_fields("--cache-from", spec)?;
    let source = match kind.as_str() {
        "local" => {
            let src = fields.remove("src").filter(|d| !d.is_empty());
            let src = src.with_context(|| format!("--cache-from {spec:?} needs src=DIR"))?;
            CacheSource::Local(PathBuf::from(src))
        }
        "registry" => CacheSource::Registry(cache_ref("--cache-from", spec, fields.remove("ref"))?),
        _ => bail!("--cache-from type=inline: give the image instead (type=registry,ref=IMAGE or IMAGE): its inline cache is read from its config"),
    };
    if let Some(k) = fields.keys().next() {
        let known = if kind == "local" { "src" } else { "ref" };
        bail!("unknown --cache-from option {k:?} for type={kind}: use {known}");
    }
    Ok(source)
}

/// The build arg (and environment variable) that sets the reproducible-build timestamp.
const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// The build's `SOURCE_DATE_EPOCH`: `--source-date-epoch`, else `--build-arg
/// SOURCE_DATE_EPOCH=…` (BuildKit's way), else the environment variable. An empty value counts
/// as unset; anything but a non-negative integer number of seconds is an error.
fn resolve_source_date_epoch(
    flag: Option<i64>,
    build_arg: Option<&str>,
    env: Option<&str>,
) -> anyhow::Result<Option<i64>> {
    if flag.is_some() {
        return Ok(flag);
    }
    for (value, from) in [
        (build_arg, "--build-arg SOURCE_DATE_EPOCH"),
        (env, "the SOURCE_DATE_EPOCH environment variable"),
    ] {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            continue;
        };
        return match value.parse::<i64>() {
            Ok(secs) if secs >= 0 => Ok(Some(secs)),
            _ => bail!("invalid {from} {value:?}: want a Unix time in seconds (e.g. $(git log -1 --format=%ct))"),
        };
    }
    Ok(None)
}

/// Whether the Dockerfile declares `ARG name` (globally or in a stage). A Dockerfile that does
/// not parse declares nothing here (the build reports its error).
fn declares_arg(dockerfile: &str, name: &str) -> bool {
    use rbuild_parser::instruction::Instruction;
    let Ok(file) = rbuild_parser::instruction::parse(dockerfile) else {
        return false;
    };
    let named = |a: &rbuild_parser::instruction::ArgInstruction| {
        a.args.iter().any(|d| d.name.value == name)
    };
    file.meta_args.iter().any(|a| named(&a.value))
        || file.stages.iter().any(|s| {
            s.instructions
                .iter()
                .any(|i| matches!(&i.instruction, Instruction::Arg(a) if named(a)))
        })
}

/// `NAME=VALUE` or `NAME` (value from the environment; skipped when unset, as docker does).
fn parse_build_args(args: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            Some(_) => bail!("invalid --build-arg {a:?}: expected NAME=VALUE"),
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

/// Runs a build from the command line.
pub fn run(store_root: &Path, args: &BuildArgs) -> anyhow::Result<ExitCode> {
    let Some(context) = &args.context else {
        bail!("rbuild build needs a context directory, e.g. `rbuild build -t app .`")
    };
    let context_dir = PathBuf::from(context);
    if context == "-" || context.contains("://") {
        bail!("context {context:?} is not supported yet: give a local directory");
    }
    if !context_dir.is_dir() {
        bail!("the build context {context:?} is not a directory");
    }
    let platform = match &args.platform {
        None => Platform::default(),
        Some(p) => {
            let parsed = Platform::parse(p).map_err(anyhow::Error::msg)?;
            if parsed != Platform::default() {
                bail!("--platform {parsed} is not supported yet: rbuild builds for the host platform ({}) until cross-platform builds arrive", Platform::default());
            }
            parsed
        }
    };
    let mut outputs = args
        .outputs
        .iter()
        .map(|spec| parse_output(spec))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if outputs.is_empty() {
        let image = Output::Image {
            names: Vec::new(),
            push: false,
        };
        outputs.push((image, LayerCompression::default()));
    }
    if args.push {
        // `--push` is `-o type=registry`: the image outputs push (one is added if none).
        let mut any = false;
        for (output, _) in &mut outputs {
            if let Output::Image { push, .. } = output {
                *push = true;
                any = true;
            }
        }
        if !any {
            let image = Output::Image {
                names: Vec::new(),
                push: true,
            };
            outputs.push((image, LayerCompression::default()));
        }
    }
    for (output, _) in &outputs {
        let Output::Image { names, push } = output else {
            continue;
        };
        for name in names {
            Reference::parse(name).with_context(|| format!("invalid image name {name:?}"))?;
        }
        if *push && names.is_empty() && args.tags.is_empty() {
            bail!("pushing needs a name for the image: give -t REGISTRY/NAME[:TAG] or -o type=registry,name=REGISTRY/NAME[:TAG]");
        }
    }
    let (dockerfile, dockerfile_name, dockerfile_path) =
        read_dockerfile(&context_dir, args.file.as_deref())?;
    let tags: Vec<Reference> = args
        .tags
        .iter()
        .map(|t| Reference::parse(t).with_context(|| format!("invalid tag {t:?}")))
        .collect::<anyhow::Result<_>>()?;
    let labels = args
        .labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .unwrap_or_else(|| (l.clone(), String::new()))
        })
        .collect();
    let mut build_args = parse_build_args(&args.build_args)?;
    let source_date_epoch = resolve_source_date_epoch(
        args.source_date_epoch,
        build_args.get(SOURCE_DATE_EPOCH).map(String::as_str),
        std::env::var(SOURCE_DATE_EPOCH).ok().as_deref(),
    )?;
    // As buildx does, the epoch is also the value of `ARG SOURCE_DATE_EPOCH` (only passed when
    // declared, so that no "build-arg not consumed" warning appears).
    if let Some(epoch) = source_date_epoch {
        if !build_args.contains_key(SOURCE_DATE_EPOCH)
            && declares_arg(&dockerfile, SOURCE_DATE_EPOCH)
        {
            build_args.insert(SOURCE_DATE_EPOCH.to_string(), epoch.to_string());
        }
    }
    let registry_client = std::sync::Arc::new(crate::build_registry::LazyClient::new(
        args.registry.clone(),
    ));
    let mut req = BuildRequest {
        context_dir: context_dir.clone(),
        dockerfile: dockerfile.clone(),
        dockerfile_path,
        options: BuildOptions {
            build_args,
            target: args.target.clone(),
            platform: platform.clone(),
            build_platform: Platform::default(),
        },
        labels,
        // Built layers are stored uncompressed: the outputs' compression applies when the
        // image leaves the store (see `export`).
        layer_options: LayerOptions::default(),
        created: Some(now_rfc3339()),
        source_date_epoch,
        run: run_options(args)?,
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        jobs: args.jobs,
        cache_from: args
            .cache_from
            .iter()
            .map(|s| parse_cache_from(s))
            .collect::<anyhow::Result<_>>()?,
        cache_to: args.cache_to.as_deref().map(parse_cache_to).transpose()?,
        cache_registry: None,
        image_source: Some(std::sync::Arc::new(
            crate::build_registry::RegistrySource::new(registry_client.clone()),
        )),
        pull: args.pull,
    };
    // Registry caches use the build's registry client (made now only if there is one).
    let registry_cache = req
        .cache_from
        .iter()
        .any(|c| matches!(c, rbuild_builder::cachekey::CacheSource::Registry(_)))
        || req.cache_to.as_ref().is_some_and(|c| {
            matches!(c.target, rbuild_builder::cachekey::CacheTarget::Registry(_))
        });
    if registry_cache {
        let client = registry_client.get().map_err(anyhow::Error::msg)?;
        req.cache_registry = Some(rbuild_builder::remote_cache::SharedClient(client));
    }
    let store = Store::open(store_root)
        .with_context(|| format!("opening the image store {}", store_root.display()))?;
    // What a killed rbuild left in the store's tmp/ goes, when no other rbuild uses the store.
    if let Some(lock) = store.try_lock_exclusive()? {
        store.remove_stale_temporaries(&lock)?;
    }
    let _lock = store.lock_shared()?;
    let mode = ProgressMode::parse(&args.progress, args.quiet)?;
    let mut progress = Progress::new(mode);
    let interrupts = crate::signals::InterruptGuard::install()?;
    let result = build(&store, &req, &mut |e: BuildEvent| progress.event(&e));
    progress.finish();
    drop(interrupts);
    if let Err(rbuild_builder::BuildError::Interrupted) = &result {
        eprintln!("interrupted");
        return Ok(ExitCode::from(130));
    }
    let image = match result {
        Ok(image) => image,
        Err(e) => {
            let span = e.span();
            // Wrapping errors that display their source already are not repeated.
            let mut parts: Vec<String> = Vec::new();
            for c in anyhow::Error::new(e).chain() {
                let t = c.to_string();
                if !parts.last().is_some_and(|p| p.ends_with(&t)) {
                    parts.push(t);
                }
            }
            let message = parts.join(": ");
            match span {
                Some(span) => eprint!(
                    "{}",
                    rbuild_parser::error::render_at(&message, span, &dockerfile_name, &dockerfile)
                ),
                None => eprintln!("error: {message}"),
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    export(&store, &image, &outputs, &tags, args, &registry_client)?;
    Ok(ExitCode::SUCCESS)
}

/// The Dockerfile's text, the name errors show, and its path relative to the context.
fn read_dockerfile(
    context: &Path,
    file: Option<&str>,
) -> anyhow::Result<(String, String, Option<PathBuf>)> {
    match file {
        Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the Dockerfile from standard input")?;
            Ok((s, "<stdin>".into(), None))
        }
        Some(f) => {
            let path = PathBuf::from(f);
            let text =
                std::fs::read(&path).with_context(|| format!("reading the Dockerfile {f}"))?;
            let rel = path
                .strip_prefix(context)
                .map(Path::to_path_buf)
                .unwrap_or(path.clone());
            Ok((
                String::from_utf8_lossy(&text).into_owned(),
                f.to_string(),
                Some(rel),
            ))
        }
        None => {
            let path = context.join("Dockerfile");
            let text = std::fs::read(&path)
                .with_context(|| format!("reading the Dockerfile {}", path.display()))?;
            Ok((
                String::from_utf8_lossy(&text).into_owned(),
                path.display().to_string(),
                Some(PathBuf::from("Dockerfile")),
            ))
        }
    }
}

/// Writes the outputs, then pushes. Layers leave the store compressed as the output that sends
/// them says (an OCI archive, a push); `--metadata-file`'s `containerimage.digest` is the
/// digest of the manifest the first such output sent (as BuildKit's exporters report theirs),
/// else that of the image in the store.
fn export(
    store: &Store,
    image: &BuiltImage,
    outputs: &[(Output, LayerCompression)],
    tags: &[Reference],
    args: &BuildArgs,
    registry: &crate::build_registry::LazyClient,
) -> anyhow::Result<()> {
    let names: Vec<(String, rbuild_cache::Digest)> = tags
        .iter()
        .map(|t| (t.to_string(), image.manifest.digest.clone()))
        .collect();
    // What is pushed once the outputs are written: each name with the manifest it gets.
    let mut to_push: Vec<(Reference, rbuild_cache::Digest)> = Vec::new();
    // The manifest the first output that sends the image sent.
    let mut sent_first: Option<rbuild_cache::Digest> = None;
    for (output, compression) in outputs {
        match output {
            Output::Image { names: extra, push } => {
                let mut named = tags.to_vec();
                for name in extra {
                    let reference = Reference::parse(name)
                        .with_context(|| format!("invalid image name {name:?}"))?;
                    if !named.contains(&reference) {
                        named.push(reference);
                    }
                }
                for name in &named {
                    rbuild_image::tag_image(store, &name.to_string(), &image.manifest.digest)
                        .with_context(|| format!("naming the image {name}"))?;
                }
                if *push {
                    let sent = outgoing(store, image, compression, args.quiet)?;
                    sent_first.get_or_insert_with(|| sent.clone());
                    for name in named {
                        if !to_push.iter().any(|(pushed, _)| *pushed == name) {
                            to_push.push((name, sent.clone()));
                        }
                    }
                }
            }
            Output::Oci { dest } => {
                let sent = outgoing(store, image, compression, args.quiet)?;
                sent_first.get_or_insert_with(|| sent.clone());
                let named: Vec<(String, rbuild_cache::Digest)> = names_or_id(&names, image)
                    .into_iter()
                    .map(|(name, _)| (name, sent.clone()))
                    .collect();
                with_dest(dest, |w| {
                    Ok(rbuild_image::export_oci_archive(store, &named, w)?)
                })?;
            }
            Output::Docker { dest } => {
                // A docker-archive holds uncompressed layers, whatever the compression.
                with_dest(dest, |w| {
                    Ok(rbuild_image::export_docker_archive(
                        store,
                        &names_or_id(&names, image),
                        w,
                    )?)
                })?;
            }
            Output::Local { dest } => {
                rbuild_builder::export::export_local(store, &image.layers, dest)?
            }
            Output::Tar { dest } => with_dest(dest, |w| {
                Ok(rbuild_builder::export::export_tar(store, &image.layers, w)?)
            })?,
        }
    }
    let id = image.config_digest.to_string();
    if let Some(path) = &args.iidfile {
        std::fs::write(path, &id).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.metadata_file {
        let digest = sent_first.as_ref().unwrap_or(&image.manifest.digest);
        let meta = serde_json::json!({
            "containerimage.digest": digest.to_string(),
            "containerimage.config.digest": id,
            "image.name": tags.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(","),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&meta)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.quiet {
        println!("{id}");
    } else {
        eprintln!("writing image {id}");
        for t in tags {
            eprintln!("naming to {t}");
        }
    }
    if !to_push.is_empty() {
        crate::build_registry::push_image(store, registry, &to_push, args.quiet)?;
    }
    Ok(())
}

/// The built image as it leaves the store compressed as `how` says (see
/// `rbuild_image::compressed_layers`): its manifest's digest. Says on standard error which
/// layers are compressed now, unless `quiet`.
fn outgoing(
    store: &Store,
    image: &BuiltImage,
    how: &LayerCompression,
    quiet: bool,
) -> anyhow::Result<rbuild_cache::Digest> {
    let on_compress = |diff_id: &rbuild_cache::Digest| {
        if !quiet {
            eprintln!(
                "compressing layer {diff_id} ({})",
                compression_name(how.compression)
            );
        }
    };
    let sent = rbuild_image::compressed_image(store, &image.manifest.digest, how, &on_compress)
        .context("compressing the image's layers")?;
    Ok(sent.digest)
}

/// The name an output's `compression=` gives `compression`.
fn compression_name(compression: Compression) -> &'static str {
    match compression {
        Compression::None => "uncompressed",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    }
}

fn names_or_id(
    names: &[(String, rbuild_cache::Digest)],
    image: &BuiltImage,
) -> Vec<(String, rbuild_cache::Digest)> {
    if names.is_empty() {
        vec![(String::new(), image.manifest.digest.clone())]
    } else {
        names.to_vec()
    }
}

/// Writes to a file, or to standard output for `-` (refusing a terminal).
fn with_dest(
    dest: &str,
    write: impl FnOnce(&mut (dyn Write + Send)) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if dest == "-" {
        let stdout = std::io::stdout();
        if stdout.is_terminal() {
            bail!("refusing to write a tar archive to a terminal: redirect standard output or give dest=FILE");
        }
        let mut out = std::io::BufWriter::new(stdout);
        write(&mut out)?;
        out.flush()?;
        return Ok(());
    }
    let file = std::fs::File::create(dest).with_context(|| format!("creating {dest}"))?;
    let mut w = std::io::BufWriter::new(file);
    write(&mut w)?;
    w.flush().with_context(|| format!("writing {dest}"))?;
    Ok(())
}

/// The current time, RFC 3339 with nanoseconds, UTC (the build replaces it with
/// `SOURCE_DATE_EPOCH` when that is set).
fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rbuild_image::config::format_rfc3339_nano(
        i64::try_from(d.as_secs()).unwrap_or(0),
        d.subsec_nanos(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_specs() {
        let ok = |s: &str| parse_output(s).unwrap_or_else(|e| panic!("{s}: {e}")).0;
        assert_eq!(
            ok("type=oci,dest=out.tar"),
            Output::Oci {
                dest: "out.tar".into()
            }
        );
        assert_eq!(
            ok("type=docker,dest=-"),
            Output::Docker { dest: "-".into() }
        );
        assert_eq!(
            ok("type=local,dest=dir"),
            Output::Local { dest: "dir".into() }
        );
        assert_eq!(ok("dir"), Output::Local { dest: "dir".into() });
        assert_eq!(ok("-"), Output::Tar { dest: "-".into() });
        let image = |names: &[&str], push: bool| Output::Image {
            names: names.iter().map(|n| n.to_string()).collect(),
            push,
        };
        assert_eq!(ok("type=image,name=x"), image(&["x"], false));
        assert_eq!(ok("type=image"), image(&[], false));
        assert_eq!(
            ok("type=image,name=r/a:1,r/b:2,push=true"),
            image(&["r/a:1", "r/b:2"], true)
        );
        assert_eq!(
            ok("type=image,\"name=r/a,r/b\",push=false"),
            image(&["r/a", "r/b"], false)
        );
        assert_eq!(ok("type=registry,name=r/a"), image(&["r/a"], true));
        let compression = |s: &str| parse_output(s).unwrap_or_else(|e| panic!("{s}: {e}")).1;
        let with = |compression, level, force| LayerCompression {
            compression,
            level,
            force,
        };
        assert_eq!(
            compression("type=oci,dest=x,compression=zstd,compression-level=9"),
            with(Compression::Zstd, Some(9), false)
        );
        assert_eq!(
            compression("type=oci,dest=x"),
            with(Compression::Gzip, None, false)
        );
        assert_eq!(
            compression("type=registry,name=r/a,compression-level=1,force-compression=true"),
            with(Compression::Gzip, Some(1), true)
        );
        assert_eq!(
            compression("type=image,compression=uncompressed"),
            with(Compression::None, None, false)
        );
        for bad in [
            "type=oci",
            "type=bogus,dest=x",
            "type=oci,dest=x,compression=lz4",
            "type=oci,dest=x,force-compression=yes",
            "type=oci,dest=x,frob=1",
            "type=image,push=yes",
            "type=oci,dest=x,push=true",
            "type=local,dest=x,name=y",
            "type=oci,dest",
        ] {
            assert!(parse_output(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cache_specs() {
        use rbuild_builder::cachekey::{CacheExport, CacheMode, CacheSource, CacheTarget};
        let to = |s: &str| parse_cache_to(s).map_err(|e| e.to_string());
        let reference = |r: &str| Reference::parse(r).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            to("type=local,dest=/c"),
            Ok(CacheExport {
                target: CacheTarget::Local("/c".into()),
                mode: CacheMode::Min,
                compression: None,
            })
        );
        assert_eq!(
            to("type=local,dest=c,mode=max,compression=zstd"),
            Ok(CacheExport {
                target: CacheTarget::Local("c".into()),
                mode: CacheMode::Max,
                compression: Some(Compression::Zstd),
            })
        );
        assert_eq!(
            to("type=registry,ref=127.0.0.1:5000/app:cache,mode=max,oci-mediatypes=true"),
            Ok(CacheExport {
                target: CacheTarget::Registry(reference("127.0.0.1:5000/app:cache")),
                mode: CacheMode::Max,
                compression: None,
            })
        );
        assert_eq!(
            to("example.com/app:cache"),
            Ok(CacheExport {
                target: CacheTarget::Registry(reference("example.com/app:cache")),
                mode: CacheMode::Min,
                compression: None,
            })
        );
        assert_eq!(
            to("type=inline"),
            Ok(CacheExport {
                target: CacheTarget::Inline,
                mode: CacheMode::Min,
                compression: None,
            })
        );
        assert_eq!(
            parse_cache_from("type=local,src=/c").map_err(|e| e.to_string()),
            Ok(CacheSource::Local("/c".into()))
        );
        assert_eq!(
            parse_cache_from("type=registry,ref=r.example/app:c").map_err(|e| e.to_string()),
            Ok(CacheSource::Registry(reference("r.example/app:c")))
        );
        assert_eq!(
            parse_cache_from("r.example/app:1").map_err(|e| e.to_string()),
            Ok(CacheSource::Registry(reference("r.example/app:1")))
        );
        for (bad, says) in [
            ("type=registry", "needs ref=IMAGE"),
            (
                "type=registry,ref=r/c,dest=x",
                "unknown --cache-to option \"dest\"",
            ),
            (
                "type=registry,ref=r/c,compression=lz4",
                "use gzip, zstd or uncompressed",
            ),
            (
                "type=registry,ref=r/c,image-manifest=false",
                "not supported",
            ),
            ("type=inline,mode=max", "mode=min only"),
            ("type=inline,compression=zstd", "takes no compression"),
            ("type=inline,ref=x", "unknown --cache-to option"),
            ("type=gha", "not supported"),
            ("type=bogus,dest=x", "unknown --cache-to type"),
            ("type=local", "needs dest=DIR"),
            ("type=local,dest=", "needs dest=DIR"),
            ("type=local,dest=x,mode=all", "use min or max"),
            ("type=local,dest=x,frob=1", "unknown --cache-to option"),
            ("type=local,src=x", "needs dest=DIR"),
            ("dest=x", "needs a type"),
        ] {
            let err = to(bad).err().unwrap_or_default();
            assert!(err.contains(says), "{bad}: {err:?}");
        }
        for (bad, says) in [
            ("type=local", "needs src=DIR"),
            ("type=local,dest=x", "needs src=DIR"),
            (
                "type=local,src=x,ref=y",
                "unknown --cache-from option \"ref\"",
            ),
            ("type=registry,src=x", "needs ref=IMAGE"),
            ("type=inline", "give the image instead"),
            ("bad//ref", "invalid cache reference"),
        ] {
            let err = parse_cache_from(bad)
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
            assert!(err.contains(says), "{bad}: {err:?}");
        }
    }

    #[test]
    fn source_date_epoch_sources() {
        let r = resolve_source_date_epoch;
        // The flag wins, then the build arg, then the environment; empty is unset.
        assert_eq!(r(Some(5), Some("6"), Some("7")).ok(), Some(Some(5)));
        assert_eq!(r(None, Some("6"), Some("7")).ok(), Some(Some(6)));
        assert_eq!(r(None, None, Some(" 7\n")).ok(), Some(Some(7)));
        assert_eq!(r(None, Some(""), Some("7")).ok(), Some(Some(7)));
        assert_eq!(r(None, None, Some("")).ok(), Some(None));
        assert_eq!(r(None, None, None).ok(), Some(None));
        for bad in ["yesterday", "-1", "1.5", "1e9"] {
            let err = r(None, None, Some(bad)).err().map(|e| e.to_string());
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.contains("environment variable")),
                "{bad}: {err:?}"
            );
            let err = r(None, Some(bad), None).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains("--build-arg")),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn declared_args() {
        let d = |text: &str| declares_arg(text, "SOURCE_DATE_EPOCH");
        assert!(d("ARG SOURCE_DATE_EPOCH\nFROM scratch\n"));
        assert!(d("FROM scratch\nARG A=1 SOURCE_DATE_EPOCH\n"));
        assert!(!d(
            "FROM scratch\nARG SOURCE_DATE_EPOCHS\nRUN echo $SOURCE_DATE_EPOCH\n"
        ));
        assert!(!d("FROM scratch\nENV SOURCE_DATE_EPOCH=1\n"));
        assert!(!d("FROM\n"));
    }

    #[test]
    fn build_args() {
        std::env::set_var("RBUILD_TEST_FROM_ENV", "env-value");
        let got = parse_build_args(&[
            "A=1".into(),
            "B=".into(),
            "RBUILD_TEST_FROM_ENV".into(),
            "RBUILD_TEST_UNSET_X".into(),
        ])
        .unwrap_or_default();
        assert_eq!(got.get("A").map(String::as_str), Some("1"));
        assert_eq!(got.get("B").map(String::as_str), Some(""));
        assert_eq!(
            got.get("RBUILD_TEST_FROM_ENV").map(String::as_str),
            Some("env-value")
        );
        assert!(!got.contains_key("RBUILD_TEST_UNSET_X"));
        assert!(parse_build_args(&["=x".into()]).is_err());
    }
}
