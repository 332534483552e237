//! Variable expansion of typed instructions, as BuildKit's Dockerfile frontend does it: which
//! arguments the builder itself expands, and how.
//!
//! Expanded by the builder (one word each, quotes removed, no field splitting):
//! `FROM` image and `--platform` (with the meta ARGs only — the caller passes that env),
//! `ENV` and `LABEL` keys and values, `ARG` names and defaults, `USER`, `WORKDIR`, `VOLUME`,
//! `STOPSIGNAL`, `COPY`/`ADD` sources, destination, `--chown`, `--chmod`, `--checksum`,
//! `--exclude`, every `RUN --mount` option value and `--device` name. `EXPOSE` words are expanded
//! *with* field splitting (one word may give several ports). Heredoc bodies of `COPY`/`ADD` with an
//! unquoted delimiter are expanded with quotes left alone.
//!
//! Not expanded: `RUN`, `CMD`, `ENTRYPOINT` and `HEALTHCHECK` commands (the shell does it),
//! `SHELL`, `MAINTAINER`, stage names, `RUN --network`/`--security`, and `ONBUILD` triggers (the
//! downstream build expands them when they run). `COPY --from` and `RUN --mount=from=` name a stage,
//! and the stage graph is fixed before variables are known, so a variable there is a parse error
//! (as in BuildKit); the mount's `from` still goes through quote removal.
//!
//! Every value of an instruction is expanded against the same environment: the variables in scope
//! *before* the instruction (`ENV a=1 b=$a` sees the previous `a`).

use std::collections::BTreeSet;

use crate::error::{ParseError, ParseErrorKind};
use crate::instruction::{
    check_checksum, check_signal, parse_chmod, AddInstruction, ArgDecl, ArgInstruction,
    CopyInstruction, ExposeInstruction, FromInstruction, Instruction, KeyValue, RunInstruction,
    SourcesAndDest, VolumeInstruction,
};
use crate::shell::{EnvLookup, Lexer};
use crate::span::{Span, Spanned};

/// Which variables an expansion referenced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VariableUse {
    /// Referenced and set.
    pub used: BTreeSet<String>,
    /// Referenced but unset (they expanded to nothing, or to their `${x:-default}`).
    pub unset: BTreeSet<String>,
}

impl VariableUse {
    pub fn merge(&mut self, other: VariableUse) {
        self.used.extend(other.used);
        self.unset.extend(other.unset);
    }

    /// Expands one word (quote removal, no field splitting) and records the variables it used.
    pub(crate) fn expand_word(
        &mut self,
        lexer: &Lexer,
        env: &dyn EnvLookup,
        word: &str,
        span: Span,
    ) -> Result<String, ParseError> {
        let expansion = lexer
            .process_word_with_matches(word, env)
            .map_err(|error| {
                ParseError::new(
                    ParseErrorKind::Expansion {
                        word: word.to_string(),
                        error,
                    },
                    span,
                )
            })?;
        self.used.extend(expansion.matched);
        self.unset.extend(expansion.unmatched);
        Ok(expansion.value)
    }

    fn expand_in_place(
        &mut self,
        lexer: &Lexer,
        env: &dyn EnvLookup,
        word: &mut Spanned<String>,
    ) -> Result<(), ParseError> {
        word.value = self.expand_word(lexer, env, &word.value, word.span)?;
        Ok(())
    }

    /// Expands an optional flag value; an empty result means "not given", as in BuildKit.
    fn expand_optional(
        &mut self,
        lexer: &Lexer,
        env: &dyn EnvLookup,
        word: &mut Option<Spanned<String>>,
    ) -> Result<(), ParseError> {
        if let Some(w) = word {
            self.expand_in_place(lexer, env, w)?;
            if w.value.is_empty() {
                *word = None;
            }
        }
        Ok(())
    }

    /// Expands one word with field splitting: it may become several words (or none).
    fn expand_words(
        &mut self,
        lexer: &Lexer,
        env: &dyn EnvLookup,
        word: &Spanned<String>,
    ) -> Result<Vec<Spanned<String>>, ParseError> {
        // The matches come from single-word processing of the same text.
        self.expand_word(lexer, env, &word.value, word.span)?;
        let words = lexer.process_words(&word.value, env).map_err(|error| {
            ParseError::new(
                ParseErrorKind::Expansion {
                    word: word.value.clone(),
                    error,
                },
                word.span,
            )
        })?;
        Ok(words
            .into_iter()
            .map(|w| Spanned::new(w, word.span))
            .collect())
    }
}

fn invalid(instruction: &str, reason: String, span: Span) -> ParseError {
    ParseError::new(
        ParseErrorKind::InvalidArguments {
            instruction: instruction.into(),
            reason,
        },
        span,
    )
}

impl Instruction {
    /// Expands the arguments BuildKit expands for this instruction (see the module docs), with
    /// `lexer` (configured with the Dockerfile's escape character) in `env`, then re-checks the
    /// values that have a format. Returns the variables referenced.
    pub fn expand(
        &mut self,
        lexer: &Lexer,
        env: &dyn EnvLookup,
    ) -> Result<VariableUse, ParseError> {
        let mut usage = VariableUse::default();
        match self {
            Instruction::From(from) => usage.merge(from.expand(lexer, env)?),
            Instruction::Run(run) => usage.merge(run.expand(lexer, env)?),
            Instruction::Env(env_instruction) => {
                expand_key_values(&mut usage, lexer, env, &mut env_instruction.vars, "ENV")?
            }
            Instruction::Label(label) => {
                expand_key_values(&mut usage, lexer, env, &mut label.labels, "LABEL")?
            }
            Instruction::Expose(expose) => usage.merge(expose.expand(lexer, env)?),
            Instruction::Add(add) => usage.merge(add.expand(lexer, env)?),
            Instruction::Copy(copy) => usage.merge(copy.expand(lexer, env)?),
            Instruction::Volume(volume) => usage.merge(volume.expand(lexer, env)?),
            Instruction::User(user) => usage.expand_in_place(lexer, env, &mut user.user)?,
            Instruction::Workdir(workdir) => {
                usage.expand_in_place(lexer, env, &mut workdir.path)?
            }
            Instruction::Arg(arg) => usage.merge(arg.expand(lexer, env)?),
            Instruction::Stopsignal(stop) => {
                usage.expand_in_place(lexer, env, &mut stop.signal)?;
                check_signal(&stop.signal.value)
                    .map_err(|reason| invalid("STOPSIGNAL", reason, stop.signal.span))?;
            }
            Instruction::Cmd(_)
            | Instruction::Entrypoint(_)
            | Instruction::Shell(_)
            | Instruction::Maintainer(_)
            | Instruction::Onbuild(_)
            | Instruction::Healthcheck(_) => {}
        }
        Ok(usage)
    }
}

impl FromInstruction {
    /// Expands the image and `--platform`; `env` should hold only the meta ARGs (plus the
    /// automatic platform ARGs). An empty platform after expansion means the default.
    pub fn expand(
        &mut self,
        lexer: &Lexer,
        env: &dyn EnvLookup,
    ) -> Result<VariableUse, ParseError> {
        let mut usage = VariableUse::default();
        let written = self.image.value.clone();
        usage.expand_in_place(lexer, env, &mut self.image)?;
        if self.image.value.is_empty() {
            return Err(invalid(
                "FROM",
                format!("the base image {written:?} expands to an empty name"),
                self.image.span,
            ));
        }
        usage.expand_optional(lexer, env, &mut self.platform)?;
        Ok(usage)
    }
}

impl RunInstruction {
    /// Expands the mount options and device names (the command is left to the shell).
    pub fn expand(
        &mut self,
        lexer: &Lexer,
        env: &dyn EnvLookup,
    ) -> Result<VariableUse, ParseError> {
        let mut usage = VariableUse::default();
        for mount in &mut self.mounts {
            usage.merge(mount.expand(lexer, env)?);
        }
        for device in &mut self.devices {
            usage.merge(device.expand(lexer, env)?);
        }
        Ok(usage)
    }
}

fn expand_key_values(
    usage: &mut VariableUse,
    lexer: &Lexer,
    env: &dyn EnvLookup,
    pairs: &mut [KeyValue],
    instruction: &str,
) -> Result<(), ParseError> {
    for pair in pairs {
        usage.expand_in_place(lexer, env, &mut pair.key)?;
        if pair.key.value.is_empty() {
            return Err(invalid(
                instruction,
                "a name expands to an empty string".into(),
                pair.key.span,
            ));
        }
        usage.expand_in_place(lexer, env, &mut pair.value)?;
    }
    Ok(())
}

impl ExposeInstruction {
    /// Expands each port word, splitting `$PORTS` into several ports.
    pub fn expand(
        &mut self,
        lexer: &Lexer,
        env: &dyn EnvLookup,
    ) -> Result<VariableUse, ParseError> {
        let mut usage = VariableUse::default();
        let mut ports = Vec::with_capacity(self.ports.len());
        for port in &self.ports {
            ports.extend(usage.expand_words(lexer, env, port)?);
        }
        self.ports = ports;
        Ok(usage)
    }
}

impl VolumeInstruction {
    pub fn expand(
        &mut self,
        lexer: &Lexer,
        env: &dyn EnvLookup,
    ) -> Result<VariableUse, ParseError> {
        let mut usage = VariableUse::default();
        for path in &mut self.paths {
            usage.expand_in_place(lexer, env, path)?;
            if path.value.trim().is_empty() {
                return Err(invalid(
                    "VOLUME",
                    "a volume path expands to an empty string".into(),
                    path.span,
                ));
            }
        }
        Ok(usage)
    }
}

impl ArgInstruction {
    /// Expands every declaration against the same `env`. To let a default see an earlier
    /// declaration of the same line, expand the [`ArgDecl`]s one by one instead.
    pub fn expand(
        &mut self,
        lexer: &Lexer,
        env: &dyn EnvLookup,
    ) -> Result<VariableUse, ParseError> {
        let mut usage = VariableUse::default();
        for decl in &mut self.args {
            usage.merge(decl.expand(lexer, env)?);
        }
        Ok(usage)
    }
}

impl ArgDecl {
    /// Expands the name and the default value.
    pub fn expand(
        &mut self,
        lexer: &Lexer,
        env: &dyn EnvLookup,
    ) -> Result<VariableUse, ParseError> {
        let mut usage = VariableUse::default();
        usage.expand_in_place(lexer, env, &mut self.name)?;
        if self.name.value.is_empty() {
            return Err(invalid(
                "ARG",
                "a name expands to an empty string".into(),
                self.name.span,
            ));
        }
        if let Some(default) = &mut self.default {
            usage.expand_in_place(lexer, env, default)?;
        }
        Ok(usage)
    }
}

impl SourcesAndDest {
    /// Expands source paths, the destination and the bodies of heredocs with unquoted delimiters
    /// (those with quotes left in place, as a shell would for a heredoc).
    pub fn expand(
        &mut self,
        lexer: &Lexer,
        env: &dyn EnvLookup,
    ) -> Result<VariableUse, ParseError> {
        let mut usage = VariableUse::default();
        for source in &mut self.sources {
            usage.expand_in_place(lexer, env, source)?;
        }
        usage.expand_in_place(lexer, env, &mut self.dest)?;
        let mut body_lexer = lexer.clone();
        body_lexer.skip_process_quotes = true;
        for heredoc in self.heredocs.iter_mut().filter(|h| h.expand) {
            heredoc.content =
                usage.expand_word(&body_lexer, env, &heredoc.content, heredoc.span)?;
        }
        Ok(usage)
    }
}

fn expand_chmod(
    usage: &mut VariableUse,
    lexer: &Lexer,
    env: &dyn EnvLookup,
    chmod: &mut Option<Spanned<String>>,
) -> Result<(), ParseError> {
    usage.expand_optional(lexer, env, chmod)?;
    if let Some(c) = chmod {
        parse_chmod(&c.value).map_err(|reason| {
            ParseError::new(
                ParseErrorKind::InvalidFlag {
                    flag: "chmod".into(),
                    reason,
                },
                c.span,
            )
        })?;
    }
    Ok(())
}

impl CopyInstruction {
    pub fn expand(
        &mut self,
        lexer: &Lexer,
        env: &dyn EnvLookup,
    ) -> Result<VariableUse, ParseError> {
        let mut usage = self.files.expand(lexer, env)?;
        usage.expand_optional(lexer, env, &mut self.chown)?;
        expand_chmod(&mut usage, lexer, env, &mut self.chmod)?;
        for exclude in &mut self.excludes {
            usage.expand_in_place(lexer, env, exclude)?;
        }
        Ok(usage)
    }
}

impl AddInstruction {
    pub fn expand(
        &mut self,
        lexer: &Lexer,
        env: &dyn EnvLookup,
    ) -> Result<VariableUse, ParseError> {
        let mut usage = self.files.expand(lexer, env)?;
        usage.expand_optional(lexer, env, &mut self.chown)?;
        expand_chmod(&mut usage, lexer, env, &mut self.chmod)?;
        usage.expand_optional(lexer, env, &mut self.checksum)?;
        if let Some(c) = &self.checksum {
            check_checksum(&c.value).map_err(|reason| {
                ParseError::new(
                    ParseErrorKind::InvalidFlag {
                        flag: "checksum".into(),
                        reason,
                    },
                    c.span,
                )
            })?;
        }
        for exclude in &mut self.excludes {
            usage.expand_in_place(lexer, env, exclude)?;
        }
        Ok(usage)
    }
}
