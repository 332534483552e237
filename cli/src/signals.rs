//! Ctrl-C during a build: the first SIGINT/SIGTERM/SIGHUP kills every running sandbox and lets
//! the build unwind (its overlays, temp dirs and locks are released on the way out); a second
//! one exits at once.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

/// Turns termination signals into [`rbuild_executor::sandbox::interrupt_all`] while it lives.
pub struct InterruptGuard {
    handle: Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InterruptGuard {
    pub fn install() -> anyhow::Result<InterruptGuard> {
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        let handle = signals.handle();
        let thread = std::thread::spawn(move || {
            let mut seen = 0;
            for _ in signals.forever() {
                seen += 1;
                if seen > 1 {
                    std::process::exit(130);
                }
                rbuild_executor::sandbox::interrupt_all();
            }
        });
        Ok(InterruptGuard {
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for InterruptGuard {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
