//! Glue between planned steps and the executor's file operations: a COPY, ADD or WORKDIR step
//! turned into the executor's request, with the destination resolved against WORKDIR, `--chown`
//! resolved through the destination's `/etc/passwd` and `/etc/group`, and the source root chosen
//! (the build context with its `.dockerignore`, or another stage's root filesystem).

use rbuild_context::PatternMatcher;
use rbuild_executor::{
    copy, copy_journaled, ensure_workdir, resolve_chown, resolve_dest, CopyJournal, CopyOp,
};
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

/// Applies a COPY, ADD or WORKDIR step to `dest`; a COPY tells `journal` (when given) what it
/// copies (see [`copy_journaled`]).
pub fn apply_file_step(
    fs: &FileStep<'_>,
    source: &SourceRoot<'_>,
    dest: &Root,
    journal: Option<&mut dyn CopyJournal>,
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
            let chown = match &c.chown {
                Some(spec) => Some(resolve_chown(&spec.value, dest)?),
                None => None,
            };
            let op = step_copy_op(fs.step, fs.workdir, source, chown)?
                .ok_or(BuildError::Internal("COPY without a copy operation"))?;
            copy_journaled(&op, source_root(source), dest, journal)?;
            Ok(())
        }
        Instruction::Add(a) => {
            let chown = match &a.chown {
                Some(spec) => Some(resolve_chown(&spec.value, dest)?),
                None => None,
            };
            let op = step_copy_op(fs.step, fs.workdir, source, chown)?
                .ok_or(BuildError::Internal("ADD without a copy operation"))?;
            copy(&op, source_root(source), dest)?;
            Ok(())
        }
        _ => Err(BuildError::Internal(
            "a step without a file operation reached the file operations",
        )),
    }
}

/// The executor's operation for a COPY or ADD step (`None` for any other step), with `chown`
/// already resolved (or `None`: the files are owned by root, or by their source owners for
/// `--from`). `workdir` is the stage's WORKDIR before the step.
pub fn step_copy_op(
    step: &PlannedStep,
    workdir: &str,
    source: &SourceRoot<'_>,
    chown: Option<(u32, u32)>,
) -> Result<Option<CopyOp>, BuildError> {
    let op = match &step.step.instruction {
        Instruction::Copy(c) => {
            let op = copy_op(
                &c.files,
                workdir,
                chown,
                c.chmod.as_ref().map(|s| s.value.as_str()),
                source,
            )?;
            CopyOp {
                excludes: c.excludes.iter().map(|e| e.value.clone()).collect(),
                parents: c.parents,
                link: c.link,
                // BuildKit keeps owners for `COPY --from` another stage or image.
                keep_owners: matches!(source, SourceRoot::Stage { .. }),
                ..op
            }
        }
        Instruction::Add(a) => {
            let op = copy_op(
                &a.files,
                workdir,
                chown,
                a.chmod.as_ref().map(|s| s.value.as_str()),
                source,
            )?;
            CopyOp {
                excludes: a.excludes.iter().map(|e| e.value.clone()).collect(),
                link: a.link,
                add: true,
                unpack_archives: a.unpack.unwrap_or(true),
                checksum: a.checksum.as_ref().map(|c| c.value.clone()),
                ..op
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(op))
}

fn source_root<'a>(source: &'a SourceRoot<'a>) -> &'a Root {
    match source {
        SourceRoot::Context { root, .. } | SourceRoot::Stage { root } => root,
    }
}

fn copy_op(
    files: &SourcesAndDest,
    workdir: &str,
    chown: Option<(u32, u32)>,
    chmod: Option<&str>,
    source: &SourceRoot<'_>,
) -> Result<CopyOp, BuildError> {
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
