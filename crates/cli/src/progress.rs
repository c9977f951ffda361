//! Progress bars for long work, shown only when stderr is a terminal.

use indicatif::{ProgressBar, ProgressStyle};

/// The layout of a bar that counts bytes.
const BYTES: &str = "{msg:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";

/// An indicatif bar behind the format crate's [`avail_format::Progress`].
pub struct Bar(ProgressBar);

impl Bar {
    /// A byte-counting bar with a message; hidden when stderr is not a terminal.
    pub fn new(message: &str) -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(BYTES)
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(message.to_owned());
        Bar(bar)
    }

    /// Shows `done` of `total` (bytes, or items when `bytes` is false) and
    /// what is being done (progress the client daemon reports).
    pub fn set(&self, done: u64, total: u64, bytes: bool, message: &str) {
        let template = if bytes {
            BYTES
        } else {
            "{msg:>10} [{bar:40}] {pos}/{len}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            self.0.set_style(style.progress_chars("=> "));
        }
        self.0.set_length(total);
        self.0.set_position(done);
        self.0.set_message(message.to_owned());
    }

    /// Remove the bar from the terminal.
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl avail_format::Progress for Bar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
    }

    fn advance(&self, done: u64) {
        self.0.inc(done);
    }
}
