//! Progress reporting: the core calls the [`Progress`] trait; only this file knows indicatif.
//! Bars go to stderr, and only when stderr is a terminal and neither `--json` nor `--quiet`
//! was given.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub trait Progress: Sync {
    /// Starts a phase of `total` bytes.
    fn begin(&self, label: &str, total: u64);
    fn advance(&self, bytes: u64);
    fn finish(&self);
}

pub struct Silent;

impl Progress for Silent {
    fn begin(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

pub struct Bar(ProgressBar);

impl Progress for Bar {
    fn begin(&self, label: &str, total: u64) {
        self.0.reset();
        self.0.set_length(total);
        self.0.set_message(label.to_string());
        self.0.enable_steady_tick(Duration::from_millis(200));
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// A bar when a person is watching, otherwise nothing.
pub fn for_run(json: bool, quiet: bool) -> Box<dyn Progress> {
    if json || quiet || !std::io::stderr().is_terminal() {
        return Box::new(Silent);
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    Box::new(Bar(bar))
}
