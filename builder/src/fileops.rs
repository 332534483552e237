//! Glue between planned steps and the executor's file operations: a COPY, ADD or WORKDIR step
//! turned into the executor's request, with the destination resolved against WORKDIR, `--chown`
//! resolved through the destination's `/etc/passwd` and `/etc/group`, and the source root chosen
//! (the build context with its `.dockerignore`, or another stage's root filesystem).

use rbuild_context::PatternMatcher;
use rbuild_executor::{copy, ensure_workdir, resolve_chown, resolve_dest, CopyOp};
use rbuild_fsutil::Root;
use rbuild_parser::instruction::{parse_chmod, Instruction, SourcesAndDest};
use rbuild_solver::PlannedStep;

use crate::error::BuildError;

/// Where a file step reads its sources.
pub enum SourceRoot<'a> {
    /// The build context; `.dockerignore`d files are invisible.
    Context {
        root: &'a Root,
        ignore: Option<&'a PatternMatcher>,
    },
    /// Another stage's (or an image's) root filesystem, for `COPY --from`.
    Stage { root: &'a Root },
}

/// One file step and the stage state it runs in.
pub struct FileStep<'a> {
    pub step: &'a PlannedStep,
    /// The stage's working directory (absolute).
    pub workdir: &'a str,
    /// The stage's USER (WORKDIR creates its directory owned by it).
    pub user: &'a str,
}

/// Applies a COPY, ADD or WORKDIR step to `dest`.
pub fn apply_file_step(
    fs: &FileStep<'_>,
    source: &SourceRoot<'_>,
    dest: &Root,
) -> Result<(), BuildError> {
    match &fs.step.step.instruction {
        Instruction::Workdir(_) => {
            // The config already holds the resolved path: `fs.workdir` is after this step.
            let owner = match fs.user {
                "" => None,
                user => Some(resolve_chown(user, dest)?),
            };
            ensure_workdir(dest, fs.workdir, owner)?;
            Ok(())
        }
        Instruction::Copy(c) => {
            let op = copy_op(
                &c.files,
                fs.workdir,
                c.chown.as_ref().map(|s| s.value.as_str()),
                c.chmod.as_ref().map(|s| s.value.as_str()),
                source,
                dest,
            )?;
            let op = CopyOp {
                excludes: c.excludes.iter().map(|e| e.value.clone()).collect(),
                parents: c.parents,
                link: c.link,
                // BuildKit keeps owners for `COPY --from` another stage or image.
                keep_owners: matches!(source, SourceRoot::Stage { .. }),
                ..op
            };
            copy(&op, source_root(source), dest)?;
            Ok(())
        }
        Instruction::Add(a) => {
            let op = copy_op(
                &a.files,
                fs.workdir,
                a.chown.as_ref().map(|s| s.value.as_str()),
                a.chmod.as_ref().map(|s| s.value.as_str()),
                source,
                dest,
            )?;
            let op = CopyOp {
                excludes: a.excludes.iter().map(|e| e.value.clone()).collect(),
                link: a.link,
                add: true,
                unpack_archives: a.unpack.unwrap_or(true),
                checksum: a.checksum.as_ref().map(|c| c.value.clone()),
                ..op
            };
            copy(&op, source_root(source), dest)?;
            Ok(())
        }
        _ => Err(BuildError::Internal(
            "a step without a file operation reached the file operations",
        )),
    }
}

fn source_root<'a>(source: &'a SourceRoot<'a>) -> &'a Root {
    match source {
        SourceRoot::Context { root, .. } | SourceRoot::Stage { root } => root,
    }
}

fn copy_op(
    files: &SourcesAndDest,
    workdir: &str,
    chown: Option<&str>,
    chmod: Option<&str>,
    source: &SourceRoot<'_>,
    dest: &Root,
) -> Result<CopyOp, BuildError> {
    let chown = match chown {
        Some(spec) => Some(resolve_chown(spec, dest)?),
        None => None,
    };
    let chmod = match chmod {
        Some(spec) => Some(parse_chmod(spec).map_err(|reason| BuildError::Instruction {
            span: files.dest.span,
            reason,
        })?),
        None => None,
    };
    let ignore = match source {
        SourceRoot::Context { ignore, .. } => ignore.cloned(),
        SourceRoot::Stage { .. } => None,
    };
    Ok(CopyOp {
        sources: files.sources.iter().map(|s| s.value.clone()).collect(),
        heredocs: files
            .heredocs
            .iter()
            .map(|h| (h.name.clone(), h.content.clone()))
            .collect(),
        dest: resolve_dest(workdir, &files.dest.value),
        chown,
        chmod,
        ignore,
        ..CopyOp::default()
    })
}
