//! Build progress on the terminal: `tty` (a live indicatif view), `plain` (ordered text lines,
//! BuildKit style: `#3 [2/5] COPY . /app` … `#3 DONE 0.1s`), `rawjson` (one JSON event per
//! line, for CI tools), or nothing with `-q`.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};
use rbuild_builder::build::BuildEvent;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Tty,
    Plain,
    RawJson,
    Quiet,
}

impl ProgressMode {
    /// `auto` is `tty` on a terminal, else `plain`; `-q` silences all.
    pub fn parse(s: &str, quiet: bool) -> anyhow::Result<ProgressMode> {
        if quiet {
            return Ok(ProgressMode::Quiet);
        }
        Ok(match s {
            "auto" if std::io::stderr().is_terminal() => ProgressMode::Tty,
            "auto" | "plain" => ProgressMode::Plain,
            "tty" => ProgressMode::Tty,
            "rawjson" => ProgressMode::RawJson,
            "quiet" => ProgressMode::Quiet,
            other => bail!("unknown --progress {other:?}: use auto, tty, plain, rawjson or quiet"),
        })
    }
}

/// Prints build events.
pub struct Progress {
    mode: ProgressMode,
    current: Option<(usize, String)>,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Progress {
        Progress {
            mode,
            current: None,
            bar: None,
        }
    }

    pub fn event(&mut self, e: &BuildEvent) {
        match (self.mode, e) {
            (ProgressMode::Quiet, _) => {}
            (ProgressMode::RawJson, e) => eprintln!("{}", raw_json(e)),
            (_, BuildEvent::Warning(w)) => self.line(format!("WARNING: {w}")),
            (
                mode,
                BuildEvent::StepStarted {
                    stage,
                    step,
                    total,
                    text,
                },
            ) => {
                let label = format!("[{stage} {step}/{total}] {text}");
                self.current = Some((*step, label.clone()));
                if mode == ProgressMode::Tty {
                    let bar = ProgressBar::new_spinner();
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.set_message(label);
                    bar.enable_steady_tick(Duration::from_millis(100));
                    self.bar = Some(bar);
                } else {
                    eprintln!("#{step} {label}");
                }
            }
            (mode, BuildEvent::StepDone { elapsed }) => {
                let Some((step, label)) = self.current.take() else {
                    return;
                };
                let secs = elapsed.as_secs_f64();
                if mode == ProgressMode::Tty {
                    if let Some(bar) = self.bar.take() {
                        bar.finish_and_clear();
                    }
                    eprintln!(" => {label} {secs:.1}s");
                } else {
                    eprintln!("#{step} DONE {secs:.1}s");
                }
            }
        }
    }

    fn line(&self, text: String) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    /// Clears a live view left by a failed step.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if let (Some((step, label)), ProgressMode::Plain) = (self.current.take(), self.mode) {
            eprintln!("#{step} ERROR {label}");
        }
    }
}

/// One rawjson event: `{"type":"step-started",…}` (documented in the README).
fn raw_json(e: &BuildEvent) -> String {
    let v = match e {
        BuildEvent::Warning(w) => serde_json::json!({"type": "warning", "message": w}),
        BuildEvent::StepStarted {
            stage,
            step,
            total,
            text,
        } => {
            serde_json::json!({"type": "step-started", "stage": stage, "step": step, "total": total, "name": text})
        }
        BuildEvent::StepDone { elapsed } => {
            serde_json::json!({"type": "step-completed", "seconds": elapsed.as_secs_f64()})
        }
    };
    v.to_string()
}
