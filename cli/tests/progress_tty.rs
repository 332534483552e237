//! End-to-end tests of `rbuild build --progress=tty` on a real pty (100×30): the live view
//! (`[+] Building` header, step lines, the last output lines of a running step) is drawn while
//! the build runs and leaves its final frame (every step with its time, no output lines); a
//! rebuild shows `CACHED` steps, a failing step `ERROR`. Each test has its own store with a
//! `busybox` image built by rbuild from the shared busybox rootfs
//! (`testdata/base/make-busybox-rootfs.sh`).

mod common;

use std::process::{Output, Stdio};

use common::{run_on_pty, text, Fixture, PtyStreams};

const COLUMNS: u16 = 100;
const ROWS: u16 = 30;

impl Fixture {
    /// Runs rbuild with standard output and error on a new pty of `COLUMNS`×`ROWS`; returns
    /// its exit code and everything the terminal received.
    fn on_pty(&self, args: &[&str]) -> (Option<i32>, String) {
        let mut cmd = self.command(args);
        cmd.env("TERM", "xterm").env_remove("NO_COLOR");
        run_on_pty(cmd, PtyStreams::Output, Some((ROWS, COLUMNS)))
    }
}

/// The terminal's text without escape sequences (colours, cursor moves) and carriage returns.
fn strip_escapes(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.next_if_eq(&'[').is_some() {
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// The final frame: the last `[+] Building` header and the step lines under it.
fn final_frame(screen: &str) -> Vec<String> {
    let plain = strip_escapes(screen);
    let start = plain
        .rfind("[+] Building")
        .unwrap_or_else(|| panic!("no [+] Building header: {screen:?}"));
    let mut lines = plain[start..].lines().map(|l| l.trim_end().to_string());
    let header = lines.next().unwrap_or_default();
    std::iter::once(header)
        .chain(lines.take_while(|l| l.starts_with(" => ")))
        .collect()
}

/// `line` is a step line: the label then, at the right edge, a time like `1.6s`.
fn assert_step_line(line: &str, label: &str) {
    assert!(line.starts_with(label), "{line:?} is not {label:?}");
    let time = line.rsplit(' ').next().unwrap_or_default();
    assert!(
        time.ends_with('s') && time.trim_end_matches('s').parse::<f64>().is_ok(),
        "{line:?} ends with no time"
    );
    assert!(line.chars().count() <= usize::from(COLUMNS), "{line:?}");
}

#[test]
fn tty_progress_draws_a_live_view_and_leaves_the_final_frame() {
    let Some(fx) = Fixture::new("live") else {
        return;
    };
    let ctx = fx.context(
        "live",
        "FROM busybox\n\
         RUN for i in 1 2 3 4 5 6 7 8; do echo out-$i; done; printf 'bell\\007 \\033[31mred\\033[0m\\n'; sleep 2; echo the-end\n\
         RUN echo second-step-with-a-long-command-line-that-the-hundred-column-terminal-has-to-cut-somewhere-here\n",
        &[],
    );
    let (code, screen) = fx.on_pty(&[
        "build",
        "--progress=tty",
        "--build-arg",
        "UNUSED=1",
        "-t",
        "progress-live",
        &ctx,
    ]);
    assert_eq!(code, Some(0), "{screen}");
    // The live view, while the RUN step slept: the header, the step, its last six output lines
    // dimmed and escaped (the bell shows as ^G, the colours are gone).
    assert!(
        screen.matches("[+] Building").count() >= 2,
        "no live view: {screen:?}"
    );
    let plain = strip_escapes(&screen);
    assert!(plain.contains(" => [stage-0 2/3] RUN for i in"), "{plain}");
    assert!(plain.contains(" => => # out-8"), "{plain}");
    assert!(plain.contains(" => => # bell^G red"), "{plain}");
    assert!(screen.contains("\x1b[2m => => # out-8"), "{screen:?}");
    assert!(!screen.contains('\x07'), "the bell reached the terminal");

    // The final frame: every step with its time, no output lines, nothing wider than the
    // terminal, then the build's own messages.
    let frame = final_frame(&screen);
    assert_eq!(frame.len(), 4, "{frame:#?}");
    assert!(
        frame[0].starts_with("[+] Building ") && frame[0].ends_with(" (3/3) FINISHED"),
        "{frame:#?}"
    );
    assert_step_line(&frame[1], " => [stage-0 1/3] FROM busybox");
    assert_step_line(&frame[2], " => [stage-0 2/3] RUN for i in 1 2 3 4 5 6 7 8;");
    assert_step_line(
        &frame[3],
        " => [stage-0 3/3] RUN echo second-step-with-a-long-command-line",
    );
    assert_eq!(frame[3].chars().count(), usize::from(COLUMNS), "{frame:#?}");
    assert!(!frame[3].contains("somewhere-here"), "not cut: {frame:#?}");
    // The sleeping step took its two seconds.
    let secs: f64 = frame[2]
        .rsplit(' ')
        .next()
        .and_then(|t| t.trim_end_matches('s').parse().ok())
        .unwrap_or_default();
    assert!(secs >= 2.0, "{frame:#?}");
    // Then the warnings, then what the build says.
    let after = &plain[plain.rfind("[+] Building").unwrap_or_default()..];
    let warning = after
        .find("WARNING: one or more build-args")
        .unwrap_or_else(|| panic!("no warning after the final frame: {plain}"));
    let writing = after
        .find("writing image sha256:")
        .unwrap_or_else(|| panic!("no image after the final frame: {plain}"));
    assert!(warning < writing, "{after}");

    // A rebuild runs nothing: the steps show CACHED.
    let (code, screen) = fx.on_pty(&["build", "--progress=tty", "-t", "progress-live", &ctx]);
    assert_eq!(code, Some(0), "{screen}");
    let frame = final_frame(&screen);
    assert_eq!(frame.len(), 4, "{frame:#?}");
    assert!(frame[0].ends_with(" (3/3) FINISHED"), "{frame:#?}");
    assert_step_line(&frame[2], " => CACHED [stage-0 2/3] RUN for i in");
    assert_step_line(&frame[3], " => CACHED [stage-0 3/3] RUN echo second-step");
    assert!(
        !strip_escapes(&screen).contains(" => => # out-"),
        "{screen:?}"
    );
}

#[test]
fn tty_progress_marks_the_failed_step() {
    let Some(fx) = Fixture::new("fail") else {
        return;
    };
    let ctx = fx.context(
        "fail",
        "FROM busybox\nRUN echo fine\nRUN echo oops; exit 3\nRUN echo never\n",
        &[],
    );
    let (code, screen) = fx.on_pty(&["build", "--progress=tty", &ctx]);
    assert_eq!(code, Some(1), "{screen}");
    let frame = final_frame(&screen);
    assert_eq!(frame.len(), 4, "{frame:#?}");
    assert!(frame[0].ends_with(" (3/4) FINISHED"), "{frame:#?}");
    assert_step_line(&frame[1], " => [stage-0 1/4] FROM busybox");
    assert_step_line(&frame[2], " => [stage-0 2/4] RUN echo fine");
    assert_step_line(&frame[3], " => ERROR [stage-0 3/4] RUN echo oops; exit 3");
    // The error follows the frame, with the step's output.
    let plain = strip_escapes(&screen);
    let after = &plain[plain.rfind("[+] Building").unwrap_or_default()..];
    assert!(after.contains("exit code: 3"), "{plain}");
    assert!(after.contains("\noops\n"), "{plain}");
}

#[test]
fn tty_progress_needs_a_terminal() {
    let fx = Fixture::empty("notty");
    let ctx = fx.context("notty", "FROM scratch\n", &[]);
    let out: Output = fx
        .command(&["build", "--progress=tty", &ctx])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--progress=tty needs standard error to be a terminal"),
        "{}",
        text(&out.stderr)
    );
}
