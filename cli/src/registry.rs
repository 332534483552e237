//! The registry commands: `pull`, `push`, `login` and `logout`, over `rbuild-registry`, with
//! `docker pull`/`docker push`-like progress (a bar per layer on a terminal, a line per layer
//! state otherwise) and the registry flags every command that talks to a registry shares
//! ([`RegistryFlags`]: `--insecure-registry HOST`, `--registry-ca FILE` or
//! `$RBUILD_REGISTRY_CA`). `$RBUILD_REGISTRY_CHUNK_SIZE` (bytes) sets the upload chunk size.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rbuild_cache::Digest;
use rbuild_image::reference::Reference;
use rbuild_image::{compressed_image, LayerCompression, Platform};
use rbuild_registry::{
    BlobKind, Client, ClientOptions, Credentials, DockerConfig, Event, PlatformChoice, PullOptions,
};

use crate::images::{find, open};

/// The environment variable naming an extra CA file for registries.
const REGISTRY_CA_ENV: &str = "RBUILD_REGISTRY_CA";
/// The environment variable setting the upload chunk size in bytes.
const CHUNK_SIZE_ENV: &str = "RBUILD_REGISTRY_CHUNK_SIZE";

/// How to reach registries; shared by every command that talks to one.
#[derive(Args, Clone, Debug, Default)]
pub struct RegistryFlags {
    /// Speak plain HTTP to this registry (`host:port`, or `host` for every port); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
    /// Trust the CA certificates in this PEM file for registries, besides the system's
    /// (default: $RBUILD_REGISTRY_CA).
    #[arg(long = "registry-ca", value_name = "FILE")]
    pub registry_ca: Option<PathBuf>,
}

impl RegistryFlags {
    /// The client options these flags (and the environment) ask for.
    pub fn client_options(&self) -> anyhow::Result<ClientOptions> {
        let extra_ca = self.registry_ca.clone().or_else(|| {
            std::env::var_os(REGISTRY_CA_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        let mut options = ClientOptions {
            insecure_registries: self.insecure_registries.clone(),
            extra_ca,
            ..ClientOptions::default()
        };
        if let Ok(size) = std::env::var(CHUNK_SIZE_ENV) {
            options.chunk_size = size
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|s| *s > 0)
                .with_context(|| format!("${CHUNK_SIZE_ENV} must be a positive number of bytes"))?;
        }
        Ok(options)
    }

    /// A registry client with these flags.
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(self.client_options()?)?)
    }
}

/// `rbuild pull`.
#[derive(Args)]
pub struct PullArgs {
    /// Pull the image for this platform (`os/arch[/variant]`) from a multi-platform image;
    /// `all` pulls every platform (default: the host's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Print only the image's name.
    #[arg(short, long)]
    pub quiet: bool,
    /// The image (`name[:tag]` or `name@digest`).
    pub reference: String,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

/// `rbuild push`.
#[derive(Args)]
pub struct PushArgs {
    /// Print only the pushed digest.
    #[arg(short, long)]
    pub quiet: bool,
    /// The local image to push, named as it is pushed (`registry/name[:tag]`).
    pub reference: String,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

/// `rbuild login`.
#[derive(Args)]
pub struct LoginArgs {
    /// The user name (asked for on a terminal if not given).
    #[arg(short, long)]
    pub username: Option<String>,
    /// The password (prefer --password-stdin: command lines are visible to other users).
    #[arg(short, long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// The registry (default: Docker Hub).
    pub server: Option<String>,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

/// `rbuild logout`.
#[derive(Args)]
pub struct LogoutArgs {
    /// The registry (default: Docker Hub).
    pub server: Option<String>,
}

/// `rbuild pull`: the image into the store, tagged with its full name.
pub fn pull(root: &Path, args: &PullArgs) -> anyhow::Result<()> {
    let reference = Reference::parse(&args.reference)
        .with_context(|| format!("invalid reference {:?}", args.reference))?;
    let platform = match args.platform.as_deref() {
        None => PlatformChoice::Host,
        Some("all") => PlatformChoice::All,
        Some(text) => PlatformChoice::Only(Platform::parse(text)?),
    };
    let store = open(root)?;
    let _lock = store.lock_shared()?;
    let client = args.registry.client()?;
    if !args.quiet {
        println!(
            "{}: Pulling from {}",
            reference.tag().or(reference.digest()).unwrap_or("latest"),
            reference.familiar_name()
        );
    }
    let display = Display::new(Verb::Pull, args.quiet);
    let sink = |event: Event| display.show(event);
    let pulled = client
        .pull(&store, &reference, &PullOptions { platform }, &sink)
        .with_context(|| format!("pulling {}", reference.familiar()));
    let transferred = display.transferred();
    drop(display);
    let pulled = pulled?;
    if !args.quiet {
        println!("Digest: {}", pulled.image.resolved);
        let status = if transferred {
            "Downloaded newer image for"
        } else {
            "Image is up to date for"
        };
        println!("Status: {status} {}", reference.familiar());
    }
    println!("{reference}");
    Ok(())
}

/// `rbuild push`: a local image (or index) to the registry its name names, as it leaves the
/// store: layers the store keeps uncompressed (those rbuild built) are pushed gzip-compressed
/// (compressed once; see `rbuild_image::compressed_layers`), the others as they are. The
/// digest shown is the pushed manifest's.
pub fn push(root: &Path, args: &PushArgs) -> anyhow::Result<()> {
    let reference = Reference::parse(&args.reference)
        .with_context(|| format!("invalid reference {:?}", args.reference))?;
    let store = open(root)?;
    let _lock = store.lock_shared()?;
    let record = find(&store, &reference.to_string()).with_context(|| {
        format!(
            "an image does not exist locally with the tag: {}",
            reference.familiar()
        )
    })?;
    let client = args.registry.client()?;
    if !args.quiet {
        println!(
            "The push refers to repository [{}]",
            reference.familiar_name()
        );
    }
    let on_compress = |diff_id: &Digest| {
        if !args.quiet {
            println!("{}: Compressing (gzip)", short(diff_id));
        }
    };
    let how = LayerCompression::default();
    let sent = compressed_image(&store, &record.manifest, &how, &on_compress)
        .with_context(|| format!("compressing the layers of {}", reference.familiar()))?;
    let display = Display::new(Verb::Push, args.quiet);
    let sink = |event: Event| display.show(event);
    let pushed = client
        .push(&store, &sent.digest, &reference, &sink)
        .with_context(|| format!("pushing {}", reference.familiar()));
    drop(display);
    let pushed = pushed?;
    if args.quiet {
        println!("{}", pushed.digest);
    } else {
        println!(
            "{}: digest: {} size: {}",
            pushed.reference, pushed.digest, pushed.size
        );
    }
    Ok(())
}

/// `rbuild login`: checks the credentials with the registry, then saves them in Docker's
/// config (or its credential helper), as `docker login` does.
pub fn login(args: &LoginArgs) -> anyhow::Result<()> {
    let (server, config) = login_target(args.server.as_deref())?;
    let username = match &args.username {
        Some(username) => username.clone(),
        None => prompt("Username: ", true)?,
    };
    if username.is_empty() {
        bail!("a user name is required (-u USER)");
    }
    let password = if args.password_stdin {
        let mut input = String::new();
        std::io::stdin()
            .read_to_string(&mut input)
            .context("reading the password from standard input")?;
        input.trim_end_matches(['\n', '\r']).to_owned()
    } else if let Some(password) = &args.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        password.clone()
    } else {
        prompt("Password: ", false)?
    };
    if password.is_empty() {
        bail!("a password is required (--password-stdin or -p)");
    }
    let credentials = Credentials::Basic {
        username: username.clone(),
        password: password.clone(),
    };
    args.registry
        .client()?
        .verify_login(&server, credentials)
        .with_context(|| format!("login to {server} failed"))?;
    config
        .store_login(&server, &username, &password)
        .with_context(|| format!("saving the login in {}", config.path().display()))?;
    println!("Login Succeeded");
    Ok(())
}

/// `rbuild logout`: forgets the saved login.
pub fn logout(args: &LogoutArgs) -> anyhow::Result<()> {
    let (server, config) = login_target(args.server.as_deref())?;
    if config.remove_login(&server)? {
        println!("Removing login credentials for {server}");
    } else {
        println!("Not logged in to {server}");
    }
    Ok(())
}

/// The server a login is for (Docker Hub by default) and the config file it is kept in.
fn login_target(server: Option<&str>) -> anyhow::Result<(String, DockerConfig)> {
    let config = DockerConfig::from_env()
        .context("no Docker config location: set $DOCKER_CONFIG or $HOME")?;
    Ok((server.unwrap_or("docker.io").to_owned(), config))
}

/// Asks for a line on the terminal (without echo for a secret).
fn prompt(question: &str, echo: bool) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!(
            "{} not given and standard input is not a terminal",
            question.trim_end_matches([':', ' '])
        );
    }
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let saved = if echo {
        None
    } else {
        let saved = rustix::termios::tcgetattr(&stdin).ok();
        if let Some(mut quiet) = saved.clone() {
            quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
            let _ =
                rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet);
        }
        saved
    };
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(saved) = saved {
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &saved);
        eprintln!();
    }
    read.context("reading from the terminal")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Which way blobs go, for the words shown.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verb {
    Pull,
    Push,
}

/// Shows a pull's or push's events: on a terminal a bar per layer, else a line per state.
struct Display {
    verb: Verb,
    quiet: bool,
    bars: Option<MultiProgress>,
    state: Mutex<DisplayState>,
}

#[derive(Default)]
struct DisplayState {
    /// The layers shown (configs are not, as Docker does not show them).
    layers: HashMap<Digest, Option<ProgressBar>>,
    /// Whether any blob was transferred.
    transferred: bool,
}

impl Display {
    fn new(verb: Verb, quiet: bool) -> Display {
        let bars = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Display {
            verb,
            quiet,
            bars,
            state: Mutex::new(DisplayState::default()),
        }
    }

    fn transferred(&self) -> bool {
        self.state().transferred
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DisplayState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn show(&self, event: Event) {
        let mut state = self.state();
        match event {
            Event::BlobQueued {
                digest,
                size,
                kind: BlobKind::Layer,
            } => {
                let bar = self.bars.as_ref().map(|multi| {
                    let bar = multi.add(ProgressBar::new(size));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix}: {msg} {wide_bar} {bytes}/{total_bytes}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    bar.set_prefix(short(&digest));
                    bar
                });
                let first = match self.verb {
                    Verb::Pull => "Pulling fs layer",
                    Verb::Push => "Preparing",
                };
                state.layers.insert(digest.clone(), bar);
                self.line(&state, &digest, first);
            }
            Event::BlobProgress { digest, done, .. } => {
                if let Some(Some(bar)) = state.layers.get(&digest) {
                    bar.set_position(done);
                    bar.set_message(match self.verb {
                        Verb::Pull => "Downloading",
                        Verb::Push => "Pushing",
                    });
                }
            }
            Event::BlobExists { digest } => {
                let word = match self.verb {
                    Verb::Pull => "Already exists",
                    Verb::Push => "Layer already exists",
                };
                self.end(&state, &digest, word);
            }
            Event::BlobMounted { digest, from } => {
                state.transferred = true;
                self.end(&state, &digest, &format!("Mounted from {from}"));
            }
            Event::BlobDone { digest } => {
                state.transferred = true;
                let word = match self.verb {
                    Verb::Pull => "Pull complete",
                    Verb::Push => "Pushed",
                };
                self.end(&state, &digest, word);
            }
            Event::BlobSkipped { digest } => {
                self.line(&state, &digest, "Skipping non-distributable layer");
            }
            Event::Resolved { .. } | Event::ManifestPushed { .. } | Event::BlobQueued { .. } => {}
        }
    }

    /// Shows `word` as the layer's state, as a line when there are no bars.
    fn line(&self, state: &DisplayState, digest: &Digest, word: &str) {
        if self.quiet {
            return;
        }
        match state.layers.get(digest) {
            Some(Some(bar)) => bar.set_message(word.to_owned()),
            Some(None) => println!("{}: {word}", short(digest)),
            None => {}
        }
    }

    /// Shows `word` as the layer's final state.
    fn end(&self, state: &DisplayState, digest: &Digest, word: &str) {
        match state.layers.get(digest) {
            Some(Some(bar)) => bar.finish_with_message(word.to_owned()),
            _ => self.line(state, digest, word),
        }
    }
}

impl Drop for Display {
    /// Ends the bars' last line, so that what is printed next starts on a line of its own.
    fn drop(&mut self) {
        if self.bars.is_some() && !self.state().layers.is_empty() {
            eprintln!();
        }
    }
}

/// The first 12 hex digits of a digest, as Docker shows layers.
fn short(digest: &Digest) -> String {
    digest.hex().chars().take(12).collect()
}
