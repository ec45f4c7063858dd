//! Progress bars on stderr (indicatif): one per file, with bytes, speed and
//! ETA. When nobody watches (`--quiet`, `--json`, stderr not a terminal) the
//! bars are hidden, and notes (retries) go to stderr as plain lines unless
//! `--quiet` asks for silence.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
pub struct Progress {
    multi: MultiProgress,
    visible: bool,
    notes: bool,
}

impl Progress {
    /// Bars when `visible`; notes when `notes` (always with the bars).
    pub fn new(visible: bool, notes: bool) -> Progress {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Progress {
            multi: MultiProgress::with_draw_target(target),
            visible,
            notes,
        }
    }

    /// A bar of `len` bytes labelled `name`.
    pub fn bar(&self, name: &str, len: u64) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(len));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:.bold} {msg:10} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(name.to_owned());
        if self.visible {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        bar
    }

    /// Runs `print` (which writes results to stdout or errors to stderr)
    /// with the bars cleared, so that a redraw cannot overwrite its lines.
    pub fn suspend<R>(&self, print: impl FnOnce() -> R) -> R {
        self.multi.suspend(print)
    }

    /// A line for the person or the log (a retry notice, say): above the
    /// bars when they are drawn, else a plain line on stderr.
    pub fn note(&self, line: &str) {
        if self.visible {
            let _ = self.multi.println(line);
        } else if self.notes {
            eprintln!("tranche: {line}");
        }
    }
}

/// Starts a new phase on `bar`: its label, its length and position.
pub fn phase(bar: &ProgressBar, label: &'static str, len: u64, pos: u64) {
    bar.set_message(label);
    bar.set_length(len);
    bar.set_position(pos);
    bar.reset_eta();
}
