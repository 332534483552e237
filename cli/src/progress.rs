//! Build progress on standard error, in BuildKit's three looks: `tty` (a live view drawn with
//! indicatif: a `[+] Building 12.3s (5/9)` header, one line per step with its state and time,
//! and the last lines of the output of running steps), `plain` (ordered text lines:
//! `#3 [stage-0 3/9] COPY . /app` … `#3 DONE 0.1s`), `rawjson` (one JSON event per line, for CI
//! tools; the fields are documented in the README), or nothing with `-q`.
//!
//! The renderers are separate from where they write: `Plain` and `Json` write to any
//! `io::Write`, and the tty view is a pure function of its state (`View`), the time, and the
//! terminal's size (`frame`), which indicatif redraws on a steady tick.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
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
            "tty" if std::io::stderr().is_terminal() => ProgressMode::Tty,
            "tty" => bail!(
                "--progress=tty needs standard error to be a terminal: use --progress=plain or rawjson"
            ),
            "rawjson" => ProgressMode::RawJson,
            "quiet" => ProgressMode::Quiet,
            other => bail!("unknown --progress {other:?}: use auto, tty, plain, rawjson or quiet"),
        })
    }
}

/// A build event as the renderers see it (borrowed from a [`BuildEvent`]).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Event<'a> {
    Warning(&'a str),
    Started {
        stage: &'a str,
        step: usize,
        total: usize,
        text: &'a str,
    },
    Output {
        step: usize,
        line: &'a str,
    },
    Done {
        step: usize,
        elapsed: Duration,
    },
    Cached {
        step: usize,
    },
    Failed {
        step: usize,
        elapsed: Duration,
        error: &'a str,
    },
}

impl<'a> From<&'a BuildEvent> for Event<'a> {
    fn from(e: &'a BuildEvent) -> Event<'a> {
        match e {
            BuildEvent::Warning(w) => Event::Warning(w),
            BuildEvent::StepStarted {
                stage,
                step,
                total,
                text,
            } => Event::Started {
                stage,
                step: *step,
                total: *total,
                text,
            },
            BuildEvent::StepOutput { step, line } => Event::Output { step: *step, line },
            BuildEvent::StepDone { step, elapsed } => Event::Done {
                step: *step,
                elapsed: *elapsed,
            },
            BuildEvent::StepCached { step } => Event::Cached { step: *step },
            BuildEvent::StepFailed {
                step,
                elapsed,
                error,
            } => Event::Failed {
                step: *step,
                elapsed: *elapsed,
                error,
            },
        }
    }
}

/// Prints build events in the chosen mode. Steps of independent stages run side by side, so
/// everything is tracked by step number.
pub struct Progress {
    sink: Sink,
}

enum Sink {
    Quiet,
    Plain(Plain<io::Stderr>),
    Json(Json<io::Stderr>),
    Tty(Tty),
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Progress {
        let sink = match mode {
            ProgressMode::Quiet => Sink::Quiet,
            ProgressMode::Plain => Sink::Plain(Plain::new(io::stderr())),
            ProgressMode::RawJson => Sink::Json(Json::new(io::stderr())),
            ProgressMode::Tty => Sink::Tty(Tty::new()),
        };
        Progress { sink }
    }

    pub fn event(&mut self, e: &BuildEvent) {
        let e = Event::from(e);
        // Progress that cannot be written (a closed standard error) does not stop the build.
        let _ = match &mut self.sink {
            Sink::Quiet => Ok(()),
            Sink::Plain(p) => p.event(e),
            Sink::Json(j) => j.event(e, Instant::now()),
            Sink::Tty(t) => {
                t.event(e);
                Ok(())
            }
        };
    }

    /// Ends the output: steps still running are marked canceled, and the tty view leaves its
    /// final frame (every step with its time) on the terminal.
    pub fn finish(&mut self) {
        let _ = match &mut self.sink {
            Sink::Quiet => Ok(()),
            Sink::Plain(p) => p.finish(),
            Sink::Json(j) => j.finish(Instant::now()),
            Sink::Tty(t) => t.finish(),
        };
    }
}

/// `plain`: BuildKit's ordered lines, each prefixed with its step number.
struct Plain<W: Write> {
    out: W,
    /// Steps started and not yet ended.
    open: BTreeSet<usize>,
}

impl<W: Write> Plain<W> {
    fn new(out: W) -> Plain<W> {
        Plain {
            out,
            open: BTreeSet::new(),
        }
    }

    fn event(&mut self, e: Event) -> io::Result<()> {
        let text = match e {
            Event::Warning(w) => format!("WARNING: {w}"),
            Event::Started {
                stage,
                step,
                total,
                text,
            } => {
                self.open.insert(step);
                format!("#{step} {}", step_label(stage, step, total, text))
            }
            Event::Output { step, line } => format!("#{step} {line}"),
            Event::Done { step, elapsed } => {
                self.open.remove(&step);
                format!("#{step} DONE {:.1}s", elapsed.as_secs_f64())
            }
            Event::Cached { step } => {
                self.open.remove(&step);
                format!("#{step} CACHED")
            }
            Event::Failed { step, error, .. } => {
                self.open.remove(&step);
                // The first line says what failed; the output was printed already and the whole
                // error follows the progress.
                let first = error.lines().next().unwrap_or_default();
                format!("#{step} ERROR: {first}")
            }
        };
        self.out.write_all(format!("{text}\n").as_bytes())
    }

    fn finish(&mut self) -> io::Result<()> {
        let mut text = String::new();
        for step in std::mem::take(&mut self.open) {
            text.push_str(&format!("#{step} CANCELED\n"));
        }
        self.out.write_all(text.as_bytes())?;
        self.out.flush()
    }
}

/// `rawjson`: one JSON object per line (see the README's "Progress output").
struct Json<W: Write> {
    out: W,
    /// Steps started and not yet ended, with when they started.
    open: BTreeMap<usize, Instant>,
}

impl<W: Write> Json<W> {
    fn new(out: W) -> Json<W> {
        Json {
            out,
            open: BTreeMap::new(),
        }
    }

    fn event(&mut self, e: Event, now: Instant) -> io::Result<()> {
        match e {
            Event::Started { step, .. } => {
                self.open.insert(step, now);
            }
            Event::Done { step, .. } | Event::Cached { step } | Event::Failed { step, .. } => {
                self.open.remove(&step);
            }
            Event::Warning(_) | Event::Output { .. } => {}
        }
        self.out
            .write_all(format!("{}\n", json_event(e)).as_bytes())
    }

    fn finish(&mut self, now: Instant) -> io::Result<()> {
        let mut text = String::new();
        for (step, started) in std::mem::take(&mut self.open) {
            let seconds = now.saturating_duration_since(started).as_secs_f64();
            let v = serde_json::json!({"type": "step-canceled", "step": step, "seconds": seconds});
            text.push_str(&format!("{v}\n"));
        }
        self.out.write_all(text.as_bytes())?;
        self.out.flush()
    }
}

/// `[stage 2/5] RUN make`; a step outside the numbered ones (`total` 0, such as pulling a
/// base image) is `[internal] pull NAME`, as BuildKit shows its internal steps.
fn step_label(stage: &str, step: usize, total: usize, text: &str) -> String {
    if total == 0 {
        format!("[{stage}] {text}")
    } else {
        format!("[{stage} {step}/{total}] {text}")
    }
}

/// One rawjson event: `{"type":"step-started",…}`.
fn json_event(e: Event) -> serde_json::Value {
    match e {
        Event::Warning(w) => serde_json::json!({"type": "warning", "message": w}),
        Event::Started {
            stage,
            step,
            total,
            text,
        } => serde_json::json!({
            "type": "step-started", "stage": stage, "step": step, "total": total, "name": text
        }),
        Event::Output { step, line } => {
            serde_json::json!({"type": "step-output", "step": step, "line": line})
        }
        Event::Done { step, elapsed } => serde_json::json!({
            "type": "step-completed", "step": step, "seconds": elapsed.as_secs_f64()
        }),
        Event::Cached { step } => serde_json::json!({"type": "step-cached", "step": step}),
        Event::Failed {
            step,
            elapsed,
            error,
        } => serde_json::json!({
            "type": "step-failed", "step": step, "seconds": elapsed.as_secs_f64(), "error": error
        }),
    }
}

/// Output lines shown under a running step.
const TAIL_LINES: usize = 6;
/// At most this many redraws a second.
const REDRAWS_PER_SEC: u8 = 10;
/// Columns of an output line kept (no terminal is wider).
const MAX_LINE_COLUMNS: usize = 1024;

/// `tty`: a live view redrawn by indicatif's ticker thread from the shared state; events only
/// update the state, so a chatty step costs no redraws.
struct Tty {
    view: Arc<Mutex<View>>,
    bar: ProgressBar,
    color: bool,
}

impl Tty {
    fn new() -> Tty {
        let view = Arc::new(Mutex::new(View::new(Instant::now())));
        let color = colors_wanted();
        let shared = Arc::clone(&view);
        let draw = move |_: &ProgressState, out: &mut dyn fmt::Write| {
            let (width, height) = terminal_size();
            let lines = frame(&lock(&shared), Instant::now(), width, Some(height));
            let _ = out.write_str(&paint_lines(&lines, color));
        };
        let style = ProgressStyle::with_template("{frame}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key("frame", draw);
        let bar = ProgressBar::with_draw_target(
            None,
            ProgressDrawTarget::stderr_with_hz(REDRAWS_PER_SEC),
        );
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(1000 / u64::from(REDRAWS_PER_SEC)));
        Tty { view, bar, color }
    }

    fn event(&mut self, e: Event) {
        lock(&self.view).apply(e, Instant::now());
    }

    /// Replaces the live view with the final frame, in full, then the warnings.
    fn finish(&mut self) -> io::Result<()> {
        lock(&self.view).end(Instant::now());
        // The view's lock is not held here: clearing draws a last time, which takes it.
        self.bar.finish_and_clear();
        let (width, _) = terminal_size();
        let text = final_text(&lock(&self.view), width, self.color);
        let mut err = io::stderr().lock();
        err.write_all(text.as_bytes())?;
        err.flush()
    }
}

/// What stays on the terminal once the build is over: the final frame, all of it, then the
/// warnings (whole: nothing redraws them).
fn final_text(view: &View, width: usize, color: bool) -> String {
    let end = view.end.unwrap_or(view.start);
    let mut text = paint_lines(&frame(view, end, width, None), color);
    text.push('\n');
    for w in &view.warnings {
        text.push_str(&format!("WARNING: {w}\n"));
    }
    text
}

fn lock(view: &Mutex<View>) -> std::sync::MutexGuard<'_, View> {
    // A panic elsewhere leaves a usable view: it is plain data.
    view.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Standard error's size in columns and rows, 80×24 when unknown (as indicatif assumes).
fn terminal_size() -> (usize, usize) {
    match rustix::termios::tcgetwinsize(io::stderr()) {
        Ok(ws) if ws.ws_row > 0 && ws.ws_col > 0 => {
            (usize::from(ws.ws_col), usize::from(ws.ws_row))
        }
        _ => (80, 24),
    }
}

/// Colours, unless `NO_COLOR` is set or the terminal is dumb.
fn colors_wanted() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Done(Duration),
    Cached(Duration),
    Failed(Duration),
    /// Still running when the build stopped.
    Canceled(Duration),
}

#[derive(Debug)]
struct StepView {
    /// `[stage step/total] INSTRUCTION`, control characters escaped.
    label: String,
    started: Instant,
    state: State,
    /// The last output lines (escaped), while the step runs.
    tail: VecDeque<String>,
}

/// What the tty view shows: steps by number, so parallel stages interleave in step order.
#[derive(Debug)]
struct View {
    start: Instant,
    /// When the build ended (set by `finish`).
    end: Option<Instant>,
    total: usize,
    steps: BTreeMap<usize, StepView>,
    /// Shown after the final frame.
    warnings: Vec<String>,
}

impl View {
    fn new(start: Instant) -> View {
        View {
            start,
            end: None,
            total: 0,
            steps: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    /// A step's entry; one never announced is shown by its number.
    fn step(&mut self, step: usize, now: Instant) -> &mut StepView {
        self.steps.entry(step).or_insert_with(|| StepView {
            label: format!("#{step}"),
            started: now,
            state: State::Running,
            tail: VecDeque::new(),
        })
    }

    /// Ends a step: its output is no longer shown.
    fn close(&mut self, step: usize, now: Instant, state: impl FnOnce(Duration) -> State) {
        let s = self.step(step, now);
        s.state = state(now.saturating_duration_since(s.started));
        s.tail = VecDeque::new();
    }

    fn apply(&mut self, e: Event, now: Instant) {
        match e {
            Event::Warning(w) => self.warnings.push(sanitize(w)),
            Event::Started {
                stage,
                step,
                total,
                text,
            } => {
                self.total = self.total.max(total);
                self.steps.insert(
                    step,
                    StepView {
                        label: sanitize(&step_label(stage, step, total, text)),
                        started: now,
                        state: State::Running,
                        tail: VecDeque::new(),
                    },
                );
            }
            Event::Output { step, line } => {
                let s = self.step(step, now);
                if s.state == State::Running {
                    if s.tail.len() == TAIL_LINES {
                        s.tail.pop_front();
                    }
                    s.tail.push_back(fit(&sanitize(line), MAX_LINE_COLUMNS));
                }
            }
            Event::Done { step, elapsed } => self.close(step, now, |_| State::Done(elapsed)),
            Event::Cached { step } => self.close(step, now, State::Cached),
            Event::Failed { step, elapsed, .. } => {
                self.close(step, now, |_| State::Failed(elapsed))
            }
        }
    }

    /// The build stopped: steps still running were canceled.
    fn end(&mut self, now: Instant) {
        self.end = Some(now);
        let running: Vec<usize> = self
            .steps
            .iter()
            .filter(|(_, s)| s.state == State::Running)
            .map(|(n, _)| *n)
            .collect();
        for step in running {
            self.close(step, now, State::Canceled);
        }
    }
}

/// How a line of the frame is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tone {
    Normal,
    /// Finished steps, and the header once the build is over.
    Blue,
    Red,
    Yellow,
    /// Output lines.
    Dim,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    text: String,
    tone: Tone,
}

/// `[+] Building 12.3s (5/9)`, with ` FINISHED` once the build is over.
fn header(elapsed: Duration, completed: usize, total: usize, finished: bool) -> String {
    let secs = elapsed.as_secs_f64();
    let end = if finished { " FINISHED" } else { "" };
    format!("[+] Building {secs:.1}s ({completed}/{total}){end}")
}

/// ` => [stage 2/5] RUN make        3.4s`: the step's state and label, its time at the right
/// edge of `width` columns; a label too long is cut.
fn step_line(label: &str, state: State, running_for: Duration, width: usize) -> Line {
    let (mark, elapsed, tone) = match state {
        State::Running => ("", running_for, Tone::Normal),
        State::Done(d) => ("", d, Tone::Blue),
        State::Cached(d) => ("CACHED ", d, Tone::Blue),
        State::Failed(d) => ("ERROR ", d, Tone::Red),
        State::Canceled(d) => ("CANCELED ", d, Tone::Yellow),
    };
    let left = format!(" => {mark}{label}");
    let time = format!("{:.1}s", elapsed.as_secs_f64());
    let time_width = time.len();
    let text = if width < time_width + 8 {
        // Too narrow for both: the label wins.
        fit(&left, width)
    } else {
        let left = fit(&left, width - time_width - 1);
        let pad = width - time_width - text_width(&left);
        format!("{left}{}{time}", " ".repeat(pad))
    };
    Line { text, tone }
}

/// ` => => # LINE`: one output line of a running step (already escaped), cut to `width`.
fn output_line(line: &str, width: usize) -> Line {
    Line {
        text: fit(&format!(" => => # {line}"), width),
        tone: Tone::Dim,
    }
}

/// The frame at `now` for a terminal `width` columns wide. With a `height` (the live view), the
/// frame fits in it: finished steps scroll away first (lowest numbers first), then output
/// tails shorten, then the earliest running steps go. Without one (the final frame) every step
/// is shown.
fn frame(view: &View, now: Instant, width: usize, height: Option<usize>) -> Vec<Line> {
    let now = view.end.unwrap_or(now);
    let completed = view
        .steps
        .values()
        .filter(|s| s.state != State::Running)
        .count();
    let total = view.total.max(view.steps.len());
    let failed = view
        .steps
        .values()
        .any(|s| matches!(s.state, State::Failed(_)));
    let header_tone = match (view.end.is_some(), failed) {
        (false, _) => Tone::Normal,
        (true, false) => Tone::Blue,
        (true, true) => Tone::Red,
    };
    // The steps shown, with how many output lines of each.
    let mut shown: Vec<(usize, &StepView, usize)> = view
        .steps
        .iter()
        .map(|(n, s)| (*n, s, s.tail.len()))
        .collect();
    if let Some(height) = height {
        let budget = height.saturating_sub(1);
        let lines = |shown: &[(usize, &StepView, usize)]| -> usize {
            shown.iter().map(|(_, _, tail)| 1 + tail).sum()
        };
        while lines(&shown) > budget {
            let Some(i) = shown.iter().position(|(_, s, _)| s.state != State::Running) else {
                break;
            };
            shown.remove(i);
        }
        while lines(&shown) > budget {
            let longest = shown.iter().map(|(_, _, t)| *t).max().unwrap_or(0);
            if longest == 0 {
                break;
            }
            for (_, _, tail) in &mut shown {
                *tail = (*tail).min(longest - 1);
            }
        }
        while lines(&shown) > budget && !shown.is_empty() {
            shown.remove(0);
        }
    }
    let mut out = vec![Line {
        text: fit(
            &header(
                now.saturating_duration_since(view.start),
                completed,
                total,
                view.end.is_some(),
            ),
            width,
        ),
        tone: header_tone,
    }];
    for (_, s, tail) in shown {
        out.push(step_line(
            &s.label,
            s.state,
            now.saturating_duration_since(s.started),
            width,
        ));
        let skip = s.tail.len() - tail;
        out.extend(s.tail.iter().skip(skip).map(|l| output_line(l, width)));
    }
    out
}

/// The lines, coloured unless `color` is off, joined by newlines.
fn paint_lines(lines: &[Line], color: bool) -> String {
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let code = match line.tone {
            _ if !color => None,
            Tone::Normal => None,
            Tone::Blue => Some("34"),
            Tone::Red => Some("31"),
            Tone::Yellow => Some("33"),
            Tone::Dim => Some("2"),
        };
        match code {
            Some(code) => out.push_str(&format!("\x1b[{code}m{}\x1b[0m", line.text)),
            None => out.push_str(&line.text),
        }
    }
    out
}

/// Makes text from a step safe to show on a terminal: what a `\r` overwrote is dropped, escape
/// sequences (colours, cursor moves, titles) are removed, other control characters are shown
/// as `cat -v` does (`^G`, `^?`, `M-^[`), and tabs become spaces up to the next tab stop.
fn sanitize(text: &str) -> String {
    let text = text.trim_end_matches(['\r', '\n']);
    let text = text.rsplit('\r').next().unwrap_or(text);
    let mut out = String::with_capacity(text.len());
    let mut column = 0;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\t' => {
                let spaces = 8 - column % 8;
                out.extend(std::iter::repeat_n(' ', spaces));
                column += spaces;
            }
            '\x1b' => skip_escape(&mut chars),
            '\0'..='\x1f' => {
                out.push('^');
                out.push(char::from(c as u8 + 0x40));
                column += 2;
            }
            '\x7f' => {
                out.push_str("^?");
                column += 2;
            }
            '\u{80}'..='\u{9f}' => {
                out.push_str("M-^");
                out.push(char::from(c as u8 - 0x40));
                column += 4;
            }
            c => {
                out.push(c);
                column += char_width(c);
            }
        }
    }
    out
}

/// Skips the rest of an escape sequence whose ESC was just read: CSI (`ESC [` … final byte),
/// OSC, DCS, SOS, PM and APC (up to BEL or `ESC \`), or a short escape (`ESC 7`, `ESC ( B`).
fn skip_escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.peek() {
        Some('[') => {
            chars.next();
            for c in chars.by_ref() {
                if ('\x40'..='\x7e').contains(&c) {
                    break;
                }
                if !('\x20'..='\x3f').contains(&c) {
                    // Not a well-formed sequence: it ends here.
                    break;
                }
            }
        }
        Some(']' | 'P' | 'X' | '^' | '_') => {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '\x07' {
                    break;
                }
                if c == '\x1b' {
                    if chars.peek() == Some(&'\\') {
                        chars.next();
                    }
                    break;
                }
            }
        }
        Some(_) => {
            // Intermediate bytes (`ESC ( B` picks a character set), then the final one.
            while chars.next_if(|c| ('\x20'..='\x2f').contains(c)).is_some() {}
            chars.next_if(|c| ('\x30'..='\x7e').contains(c));
        }
        None => {}
    }
}

/// Columns a character takes on a terminal: 2 for East Asian wide characters and emoji, 0 for
/// combining marks and zero-width characters, else 1 (an approximation of wcwidth).
fn char_width(c: char) -> usize {
    match u32::from(c) {
        0x0300..=0x036f
        | 0x1ab0..=0x1aff
        | 0x1dc0..=0x1dff
        | 0x200b..=0x200f
        | 0x20d0..=0x20ff
        | 0xfe00..=0xfe0f
        | 0xfe20..=0xfe2f
        | 0xfeff => 0,
        0x1100..=0x115f
        | 0x2e80..=0x303e
        | 0x3041..=0x33ff
        | 0x3400..=0x4dbf
        | 0x4e00..=0x9fff
        | 0xa000..=0xa4cf
        | 0xac00..=0xd7a3
        | 0xf900..=0xfaff
        | 0xfe30..=0xfe4f
        | 0xff00..=0xff60
        | 0xffe0..=0xffe6
        | 0x1f300..=0x1f64f
        | 0x1f900..=0x1f9ff
        | 0x20000..=0x2fffd
        | 0x30000..=0x3fffd => 2,
        _ => 1,
    }
}

fn text_width(text: &str) -> usize {
    text.chars().map(char_width).sum()
}

/// `text` cut to at most `width` columns.
fn fit(text: &str, width: usize) -> String {
    let mut used = 0;
    let mut out = String::new();
    for c in text.chars() {
        let w = char_width(c);
        if used + w > width {
            break;
        }
        used += w;
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(stage: &str, step: usize, total: usize, text: &str) -> BuildEvent {
        BuildEvent::StepStarted {
            stage: stage.into(),
            step,
            total,
            text: text.into(),
        }
    }

    fn output(step: usize, line: &str) -> BuildEvent {
        BuildEvent::StepOutput {
            step,
            line: line.into(),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Two stages side by side: a cached COPY, a step that fails while another still runs.
    fn build_events() -> Vec<BuildEvent> {
        vec![
            BuildEvent::Warning("JSONArgsRecommended: use JSON arguments".into()),
            started("stage-0", 1, 6, "FROM busybox"),
            BuildEvent::StepDone {
                step: 1,
                elapsed: ms(10),
            },
            started("stage-0", 2, 6, "COPY . /app"),
            BuildEvent::StepCached { step: 2 },
            started("build", 4, 6, "FROM busybox"),
            started("stage-0", 3, 6, "RUN make"),
            BuildEvent::StepDone {
                step: 4,
                elapsed: ms(1200),
            },
            started("build", 5, 6, "RUN sleep 9"),
            output(3, "compiling a.c"),
            output(5, "sleeping"),
            BuildEvent::StepFailed {
                step: 3,
                elapsed: ms(3400),
                error: "process \"/bin/sh -c make\" did not complete successfully: exit code: 2\n--- last lines of its output ---\ncompiling a.c".into(),
            },
        ]
    }

    #[test]
    fn plain_prints_ordered_lines_and_cancels_what_still_runs() {
        let mut plain = Plain::new(Vec::new());
        for e in &build_events() {
            plain
                .event(Event::from(e))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        plain.finish().unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8(plain.out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            text,
            "WARNING: JSONArgsRecommended: use JSON arguments\n\
             #1 [stage-0 1/6] FROM busybox\n\
             #1 DONE 0.0s\n\
             #2 [stage-0 2/6] COPY . /app\n\
             #2 CACHED\n\
             #4 [build 4/6] FROM busybox\n\
             #3 [stage-0 3/6] RUN make\n\
             #4 DONE 1.2s\n\
             #5 [build 5/6] RUN sleep 9\n\
             #3 compiling a.c\n\
             #5 sleeping\n\
             #3 ERROR: process \"/bin/sh -c make\" did not complete successfully: exit code: 2\n\
             #5 CANCELED\n"
        );
    }

    #[test]
    fn rawjson_prints_one_object_per_event() {
        let t0 = Instant::now();
        let mut json = Json::new(Vec::new());
        for e in &build_events() {
            json.event(Event::from(e), t0)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        json.finish(t0 + ms(1500)).unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8(json.out).unwrap_or_else(|e| panic!("{e}"));
        let got: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect();
        use serde_json::json;
        let error = "process \"/bin/sh -c make\" did not complete successfully: exit code: 2\n--- last lines of its output ---\ncompiling a.c";
        assert_eq!(
            got,
            [
                json!({"type": "warning", "message": "JSONArgsRecommended: use JSON arguments"}),
                json!({"type": "step-started", "stage": "stage-0", "step": 1, "total": 6, "name": "FROM busybox"}),
                json!({"type": "step-completed", "step": 1, "seconds": 0.01}),
                json!({"type": "step-started", "stage": "stage-0", "step": 2, "total": 6, "name": "COPY . /app"}),
                json!({"type": "step-cached", "step": 2}),
                json!({"type": "step-started", "stage": "build", "step": 4, "total": 6, "name": "FROM busybox"}),
                json!({"type": "step-started", "stage": "stage-0", "step": 3, "total": 6, "name": "RUN make"}),
                json!({"type": "step-completed", "step": 4, "seconds": 1.2}),
                json!({"type": "step-started", "stage": "build", "step": 5, "total": 6, "name": "RUN sleep 9"}),
                json!({"type": "step-output", "step": 3, "line": "compiling a.c"}),
                json!({"type": "step-output", "step": 5, "line": "sleeping"}),
                json!({"type": "step-failed", "step": 3, "seconds": 3.4, "error": error}),
                json!({"type": "step-canceled", "step": 5, "seconds": 1.5}),
            ]
        );
        // One object per line, nothing else.
        assert_eq!(text.lines().count(), got.len());
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn header_counts_steps_and_says_when_finished() {
        assert_eq!(header(ms(12_340), 5, 9, false), "[+] Building 12.3s (5/9)");
        assert_eq!(
            header(ms(12_340), 9, 9, true),
            "[+] Building 12.3s (9/9) FINISHED"
        );
        assert_eq!(header(ms(0), 0, 0, false), "[+] Building 0.0s (0/0)");
    }

    #[test]
    fn step_lines_show_state_and_time_at_the_right_edge() {
        let label = "[stage-0 2/5] RUN make";
        let line = |state| step_line(label, state, ms(3400), 40);
        assert_eq!(
            line(State::Running),
            Line {
                text: " => [stage-0 2/5] RUN make          3.4s".into(),
                tone: Tone::Normal
            }
        );
        assert_eq!(
            line(State::Done(ms(1200))),
            Line {
                text: " => [stage-0 2/5] RUN make          1.2s".into(),
                tone: Tone::Blue
            }
        );
        assert_eq!(
            line(State::Cached(ms(0))),
            Line {
                text: " => CACHED [stage-0 2/5] RUN make   0.0s".into(),
                tone: Tone::Blue
            }
        );
        assert_eq!(
            line(State::Failed(ms(500))),
            Line {
                text: " => ERROR [stage-0 2/5] RUN make    0.5s".into(),
                tone: Tone::Red
            }
        );
        assert_eq!(
            line(State::Canceled(ms(2000))),
            Line {
                text: " => CANCELED [stage-0 2/5] RUN make 2.0s".into(),
                tone: Tone::Yellow
            }
        );
        for state in [State::Running, State::Cached(ms(0))] {
            assert_eq!(text_width(&line(state).text), 40);
        }
    }

    #[test]
    fn lines_are_cut_to_the_terminal_width() {
        let label = "[stage-0 2/5] RUN ./configure --prefix=/usr && make -j8";
        // The label is cut, the time stays at the right edge.
        assert_eq!(
            step_line(label, State::Running, ms(61_000), 30).text,
            " => [stage-0 2/5] RUN ./ 61.0s"
        );
        // Too narrow for both: only the label.
        assert_eq!(
            step_line(label, State::Running, ms(1000), 10).text,
            " => [stage"
        );
        assert_eq!(
            output_line("a long line of compiler output", 20),
            Line {
                text: " => => # a long line".into(),
                tone: Tone::Dim
            }
        );
        assert_eq!(output_line("short", 80).text, " => => # short");
        // Wide characters take two columns and are never split.
        assert_eq!(fit("日本語", 5), "日本");
        assert_eq!(text_width(&fit("日本語", 5)), 4);
        assert_eq!(fit("e\u{301}t\u{e9}", 2), "e\u{301}t");
        let header_line = &frame(&View::new(Instant::now()), Instant::now(), 12, None)[0];
        assert_eq!(header_line.text, "[+] Building");
    }

    #[test]
    fn control_characters_are_escaped_or_dropped() {
        // Colours and cursor moves go; the text stays.
        assert_eq!(sanitize("\x1b[1;31merror\x1b[0m: x"), "error: x");
        assert_eq!(sanitize("\x1b[2K\x1b[1Gdone"), "done");
        // Titles and hyperlinks (OSC, ended by BEL or ST).
        assert_eq!(sanitize("\x1b]0;pwned\x07after"), "after");
        assert_eq!(
            sanitize("\x1b]8;;http://x/\x1b\\link\x1b]8;;\x1b\\"),
            "link"
        );
        // Short escapes, with intermediate bytes; a lone ESC at the end.
        assert_eq!(sanitize("\x1b(Bx\x1b7y\x1b"), "xy");
        // A carriage return overwrites: only the last version of the line shows.
        assert_eq!(sanitize(" 10%\r 55%\r100%"), "100%");
        assert_eq!(sanitize("crlf\r"), "crlf");
        // Other controls are shown as `cat -v` shows them; C1 controls too (U+009B is a CSI).
        assert_eq!(
            sanitize("bell\x07 nul\0 bs\x08 del\x7f"),
            "bell^G nul^@ bs^H del^?"
        );
        assert_eq!(sanitize("\u{9b}2J\u{85}"), "M-^[2JM-^E");
        // Tabs expand to the next tab stop.
        assert_eq!(sanitize("a\tb"), "a       b");
        assert_eq!(sanitize("12345678\tx"), "12345678        x");
        assert_eq!(sanitize("日本\tx"), "日本    x");
        // Nothing that could drive the terminal is left.
        let hostile = sanitize("\x1b[?1049h\x1b[H\x1bc\x1bP+q\x1b\\\u{9b}6n ok");
        assert!(!hostile.chars().any(|c| c.is_control()), "{hostile:?}");
        assert!(hostile.ends_with(" ok"), "{hostile:?}");
    }

    /// The tty view's frames, without a terminal: feeds events at given times and renders.
    #[test]
    fn tty_frames_follow_the_build() {
        let t0 = Instant::now();
        let at = |n: u64| t0 + ms(n);
        let mut view = View::new(t0);
        let width = 48;
        let text =
            |lines: Vec<Line>| -> Vec<String> { lines.into_iter().map(|l| l.text).collect() };
        view.apply(
            Event::from(&started("stage-0", 1, 4, "FROM busybox")),
            at(0),
        );
        view.apply(
            Event::from(&BuildEvent::StepDone {
                step: 1,
                elapsed: ms(100),
            }),
            at(100),
        );
        // Step 3 (another stage) starts before step 2: the view orders them by number.
        view.apply(Event::from(&started("b", 3, 4, "RUN build")), at(200));
        view.apply(Event::from(&started("stage-0", 2, 4, "COPY . .")), at(300));
        for i in 1..=8 {
            view.apply(Event::from(&output(3, &format!("line {i}\t|"))), at(400));
        }
        assert_eq!(
            text(frame(&view, at(1500), width, Some(40))),
            [
                "[+] Building 1.5s (1/4)",
                " => [stage-0 1/4] FROM busybox              0.1s",
                " => [stage-0 2/4] COPY . .                  1.2s",
                " => [b 3/4] RUN build                       1.3s",
                // The last six lines of output, tab expanded.
                " => => # line 3  |",
                " => => # line 4  |",
                " => => # line 5  |",
                " => => # line 6  |",
                " => => # line 7  |",
                " => => # line 8  |",
            ]
        );
        let tones: Vec<Tone> = frame(&view, at(1500), width, Some(40))
            .iter()
            .map(|l| l.tone)
            .collect();
        assert_eq!(
            tones,
            [
                Tone::Normal,
                Tone::Blue,
                Tone::Normal,
                Tone::Normal,
                Tone::Dim,
                Tone::Dim,
                Tone::Dim,
                Tone::Dim,
                Tone::Dim,
                Tone::Dim
            ]
        );
        // A short terminal: finished steps scroll away first, then tails shorten.
        assert_eq!(
            text(frame(&view, at(1500), width, Some(6))),
            [
                "[+] Building 1.5s (1/4)",
                " => [stage-0 2/4] COPY . .                  1.2s",
                " => [b 3/4] RUN build                       1.3s",
                " => => # line 6  |",
                " => => # line 7  |",
                " => => # line 8  |",
            ]
        );
        assert_eq!(
            text(frame(&view, at(1500), width, Some(2))),
            [
                "[+] Building 1.5s (1/4)",
                " => [b 3/4] RUN build                       1.3s",
            ]
        );
        // A step's output goes when it ends; a cached step says so.
        view.apply(Event::from(&BuildEvent::StepCached { step: 2 }), at(1600));
        view.apply(
            Event::from(&BuildEvent::StepDone {
                step: 3,
                elapsed: ms(1420),
            }),
            at(1650),
        );
        view.apply(
            Event::from(&started("stage-0", 4, 4, "RUN false")),
            at(1700),
        );
        view.apply(Event::from(&output(4, "\x1b[31mno\x1b[0m")), at(1800));
        assert_eq!(
            text(frame(&view, at(2000), width, Some(40))),
            [
                "[+] Building 2.0s (3/4)",
                " => [stage-0 1/4] FROM busybox              0.1s",
                " => CACHED [stage-0 2/4] COPY . .           1.3s",
                " => [b 3/4] RUN build                       1.4s",
                " => [stage-0 4/4] RUN false                 0.3s",
                " => => # no",
            ]
        );
        view.apply(
            Event::from(&BuildEvent::StepFailed {
                step: 4,
                elapsed: ms(320),
                error: "exit code: 1".into(),
            }),
            at(2050),
        );
        // The final frame: every step, the time frozen at the end, however late it is drawn.
        view.end(at(2100));
        let last = frame(&view, at(9000), width, None);
        assert_eq!(
            text(last.clone()),
            [
                "[+] Building 2.1s (4/4) FINISHED",
                " => [stage-0 1/4] FROM busybox              0.1s",
                " => CACHED [stage-0 2/4] COPY . .           1.3s",
                " => [b 3/4] RUN build                       1.4s",
                " => ERROR [stage-0 4/4] RUN false           0.3s",
            ]
        );
        assert_eq!(last[0].tone, Tone::Red);
        assert_eq!(last[4].tone, Tone::Red);
    }

    #[test]
    fn the_end_cancels_running_steps() {
        let t0 = Instant::now();
        let mut view = View::new(t0);
        view.apply(Event::from(&started("a", 1, 2, "RUN sleep 9")), t0);
        view.apply(Event::from(&output(1, "zzz")), t0 + ms(100));
        view.end(t0 + ms(2500));
        let lines = frame(&view, t0 + ms(2500), 40, None);
        assert_eq!(
            lines,
            [
                Line {
                    text: "[+] Building 2.5s (1/2) FINISHED".into(),
                    tone: Tone::Blue
                },
                Line {
                    text: " => CANCELED [a 1/2] RUN sleep 9    2.5s".into(),
                    tone: Tone::Yellow
                },
            ]
        );
    }

    #[test]
    fn the_final_text_is_every_step_then_the_warnings() {
        let t0 = Instant::now();
        let mut view = View::new(t0);
        view.apply(
            Event::Warning("one or more build-args [X] were not consumed"),
            t0,
        );
        for step in 1..=40 {
            let text = format!("RUN echo {step}");
            view.apply(Event::from(&started("s", step, 40, &text)), t0);
            view.apply(
                Event::from(&BuildEvent::StepDone {
                    step,
                    elapsed: ms(100),
                }),
                t0 + ms(100),
            );
        }
        view.end(t0 + ms(4000));
        let text = final_text(&view, 30, false);
        let lines: Vec<&str> = text.lines().collect();
        // Taller than any terminal, yet nothing is left out.
        assert_eq!(lines.len(), 42, "{text}");
        assert_eq!(lines[0], "[+] Building 4.0s (40/40) FINI");
        assert_eq!(lines[1], " => [s 1/40] RUN echo 1   0.1s");
        assert_eq!(lines[40], " => [s 40/40] RUN echo 40 0.1s");
        assert_eq!(
            lines[41],
            "WARNING: one or more build-args [X] were not consumed"
        );
        assert!(text.ends_with("consumed\n"));
        // The live view of the same build fits a 10-row terminal: the latest steps.
        let live = frame(&view, t0 + ms(4000), 30, Some(10));
        assert_eq!(live.len(), 10);
        assert_eq!(live[1].text, " => [s 32/40] RUN echo 32 0.1s");
    }

    #[test]
    fn painting_colours_lines_unless_told_not_to() {
        let lines = [
            Line {
                text: "head".into(),
                tone: Tone::Normal,
            },
            Line {
                text: "done".into(),
                tone: Tone::Blue,
            },
            Line {
                text: "out".into(),
                tone: Tone::Dim,
            },
        ];
        assert_eq!(
            paint_lines(&lines, true),
            "head\n\x1b[34mdone\x1b[0m\n\x1b[2mout\x1b[0m"
        );
        assert_eq!(paint_lines(&lines, false), "head\ndone\nout");
    }

    #[test]
    fn labels_and_warnings_are_escaped_in_the_view() {
        let t0 = Instant::now();
        let mut view = View::new(t0);
        view.apply(Event::from(&started("s", 1, 1, "RUN echo \x1b[2J")), t0);
        view.apply(Event::Warning("bad\x07"), t0);
        assert_eq!(view.steps[&1].label, "[s 1/1] RUN echo ");
        assert_eq!(view.warnings, ["bad^G"]);
        // Output of a step never announced shows under its number; output of an ended step
        // is not shown.
        view.apply(Event::from(&output(7, "x")), t0);
        assert_eq!(view.steps[&7].label, "#7");
        view.apply(
            Event::from(&BuildEvent::StepDone {
                step: 1,
                elapsed: ms(1),
            }),
            t0,
        );
        view.apply(Event::from(&output(1, "late")), t0);
        assert!(view.steps[&1].tail.is_empty());
    }
}
