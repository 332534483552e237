//! Build progress on the terminal: `tty` (a live indicatif view), `plain` (ordered text lines,
//! BuildKit style: `#3 [2/5] COPY . /app` … `#3 DONE 0.1s`), `rawjson` (one JSON event per
//! line, for CI tools), or nothing with `-q`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::bail;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
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

/// Prints build events. Steps of independent stages run side by side, so steps are tracked by
/// number.
pub struct Progress {
    mode: ProgressMode,
    running: BTreeMap<usize, (String, Option<ProgressBar>)>,
    bars: MultiProgress,
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Progress {
        Progress {
            mode,
            running: BTreeMap::new(),
            bars: MultiProgress::new(),
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
                let bar = if mode == ProgressMode::Tty {
                    let bar = self.bars.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} #{prefix} {msg} {elapsed}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.set_prefix(step.to_string());
                    bar.set_message(label.clone());
                    bar.enable_steady_tick(Duration::from_millis(100));
                    Some(bar)
                } else {
                    eprintln!("#{step} {label}");
                    None
                };
                self.running.insert(*step, (label, bar));
            }
            (ProgressMode::Tty, BuildEvent::StepOutput { step, line }) => {
                if let Some((_, Some(bar))) = self.running.get(step) {
                    bar.println(format!("#{step} {line}"));
                } else {
                    self.line(format!("#{step} {line}"));
                }
            }
            (_, BuildEvent::StepOutput { step, line }) => eprintln!("#{step} {line}"),
            (_, BuildEvent::StepDone { step, elapsed }) => {
                let Some((label, bar)) = self.running.remove(step) else {
                    return;
                };
                let secs = elapsed.as_secs_f64();
                match bar {
                    Some(bar) => {
                        bar.finish_and_clear();
                        self.line(format!(" => #{step} {label} {secs:.1}s"));
                    }
                    None => eprintln!("#{step} DONE {secs:.1}s"),
                }
            }
        }
    }

    fn line(&self, text: String) {
        if self.mode == ProgressMode::Tty {
            let _ = self.bars.println(text);
        } else {
            eprintln!("{text}");
        }
    }

    /// Clears live views; in plain mode, marks the steps that were running when the build failed.
    pub fn finish(&mut self) {
        for (step, (label, bar)) in std::mem::take(&mut self.running) {
            match bar {
                Some(bar) => bar.finish_and_clear(),
                None if self.mode == ProgressMode::Plain => eprintln!("#{step} ERROR {label}"),
                None => {}
            }
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
        BuildEvent::StepOutput { step, line } => {
            serde_json::json!({"type": "step-output", "step": step, "line": line})
        }
        BuildEvent::StepDone { step, elapsed } => {
            serde_json::json!({"type": "step-completed", "step": step, "seconds": elapsed.as_secs_f64()})
        }
    };
    v.to_string()
}
