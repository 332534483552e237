//! `rbuild check` and `rbuild debug parse`: reading a Dockerfile and showing what the parser makes of it.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::Context;
use rbuild_parser::{dump, instruction, raw, ParseError};

/// Reads a Dockerfile from a path, or from standard input for `-`. Invalid UTF-8 is replaced.
fn read_dockerfile(path: &str) -> anyhow::Result<(String, String)> {
    let mut bytes = Vec::new();
    if path == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading the Dockerfile from standard input")?;
        return Ok((
            "<stdin>".into(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .with_context(|| format!("reading {path}"))?;
    Ok((
        path.to_string(),
        String::from_utf8_lossy(&bytes).into_owned(),
    ))
}

fn report(name: &str, src: &str, err: &ParseError) -> ExitCode {
    eprint!("{}", err.render(name, src));
    ExitCode::FAILURE
}

/// `rbuild check FILE`: parse and type the file; print warnings and errors with their location.
pub fn check(path: &str) -> anyhow::Result<ExitCode> {
    let (name, src) = read_dockerfile(path)?;
    let file = match instruction::parse(&src) {
        Ok(f) => f,
        Err(e) => return Ok(report(&name, &src, &e)),
    };
    let index = rbuild_parser::LineIndex::new(&src);
    for w in &file.warnings {
        let pos = index.position(&src, w.span.start);
        eprintln!(
            "warning: {}\n --> {name}:{}:{}",
            w.message, pos.line, pos.column
        );
    }
    print_stdout(&format!(
        "{name}: OK ({} stage{}, {} instructions)\n",
        file.stages.len(),
        if file.stages.len() == 1 { "" } else { "s" },
        file.stages
            .iter()
            .map(|s| s.instructions.len() + 1)
            .sum::<usize>()
            + file.meta_args.len()
    ))
}

/// Writes to standard output; a closed pipe (`| head`) ends the command quietly.
fn print_stdout(text: &str) -> anyhow::Result<ExitCode> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(anyhow::Error::new(e).context("writing to standard output")),
    }
}

/// `rbuild debug parse [--dump] FILE`.
pub fn debug_parse(path: &str, buildkit_dump: bool) -> anyhow::Result<ExitCode> {
    let (name, src) = read_dockerfile(path)?;
    if buildkit_dump {
        return Ok(match raw::parse(&src) {
            Ok(file) => print_stdout(&dump::dump(&file))?,
            Err(e) => report(&name, &src, &e),
        });
    }
    Ok(match instruction::parse(&src) {
        Ok(file) => print_stdout(&format!("{file:#?}\n"))?,
        Err(e) => report(&name, &src, &e),
    })
}
