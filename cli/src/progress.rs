//! Progress on stderr: an indicatif bar when stderr is a terminal, else a plain line every
//! few seconds (logs, CI, `--json`: stdout stays clean either way, and `--json` never gets
//! a bar).
//!
//! `RINGSWARM_PROGRESS_INTERVAL` (a duration, e.g. `500ms`) changes how often plain lines
//! are printed; the integration tests use it to watch a download's progress closely.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use ringswarm_engine::session::TorrentStats;

use crate::args::{format_bytes, format_rate, rate};

/// How often a plain progress line is printed by default.
pub const LINE_EVERY: Duration = Duration::from_secs(3);

/// The plain-line interval: `RINGSWARM_PROGRESS_INTERVAL` if set and valid, else
/// [`LINE_EVERY`].
fn line_every() -> Duration {
    static EVERY: OnceLock<Duration> = OnceLock::new();
    *EVERY.get_or_init(|| {
        std::env::var("RINGSWARM_PROGRESS_INTERVAL")
            .ok()
            .and_then(|v| crate::args::parse_duration(&v).ok())
            .unwrap_or(LINE_EVERY)
    })
}
/// How often commands poll the engine for stats, by default.
pub const POLL: Duration = Duration::from_millis(100);

/// How often commands poll the engine: [`POLL`], or more often when plain lines are asked
/// for more often.
pub fn poll_interval() -> Duration {
    POLL.min(line_every())
}

/// Which progress display to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Bar,
    Lines,
    /// `-q`: no progress at all.
    Off,
}

impl Style {
    /// A bar only on a terminal and never with `--json`.
    pub fn detect(json: bool) -> Style {
        if !json && std::io::stderr().is_terminal() {
            Style::Bar
        } else {
            Style::Lines
        }
    }
}

enum Kind {
    Bar(ProgressBar),
    Lines { last: Instant, last_bytes: u64 },
    Off,
}

/// One progress display (a transfer or a seeding phase).
pub struct Progress {
    kind: Kind,
    label: String,
}

impl Progress {
    /// A transfer towards `total` bytes.
    pub fn transfer(style: Style, label: &str, total: u64) -> Progress {
        let kind = match style {
            Style::Bar => {
                let bar = ProgressBar::new(total);
                let template = "{prefix:.bold} [{bar:30.cyan/blue}] {bytes}/{total_bytes} \
                                {binary_bytes_per_sec} ETA {eta} {msg}";
                if let Ok(st) = ProgressStyle::with_template(template) {
                    bar.set_style(st.progress_chars("=> "));
                }
                bar.set_prefix(label.to_owned());
                bar.enable_steady_tick(Duration::from_millis(200));
                Kind::Bar(bar)
            }
            Style::Lines => Kind::Lines {
                last: Instant::now(),
                last_bytes: 0,
            },
            Style::Off => Kind::Off,
        };
        Progress {
            kind,
            label: label.to_owned(),
        }
    }

    /// A seeding phase: no total, shows what was sent.
    pub fn seeding(style: Style, label: &str) -> Progress {
        let kind = match style {
            Style::Bar => {
                let bar = ProgressBar::new_spinner();
                if let Ok(st) = ProgressStyle::with_template("{spinner} {prefix:.bold} {msg}") {
                    bar.set_style(st);
                }
                bar.set_prefix(label.to_owned());
                bar.enable_steady_tick(Duration::from_millis(200));
                Kind::Bar(bar)
            }
            Style::Lines => Kind::Lines {
                last: Instant::now(),
                last_bytes: 0,
            },
            Style::Off => Kind::Off,
        };
        Progress {
            kind,
            label: label.to_owned(),
        }
    }

    /// Updates a transfer: `done` of `total` bytes verified, with `peers` connected.
    pub fn update_transfer(&mut self, done: u64, total: u64, peers: u32) {
        match &mut self.kind {
            Kind::Bar(bar) => {
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message(format!("{peers} peer{}", plural(peers)));
            }
            Kind::Lines { last, last_bytes } => {
                if last.elapsed() < line_every() {
                    return;
                }
                let r = rate(done.saturating_sub(*last_bytes), last.elapsed());
                let pct = if total > 0 {
                    done as f64 * 100.0 / total as f64
                } else {
                    100.0
                };
                eprintln!(
                    "{}: {} / {} ({pct:.1}%), {}, {peers} peer{}",
                    self.label,
                    format_bytes(done),
                    format_bytes(total),
                    format_rate(r),
                    plural(peers)
                );
                *last = Instant::now();
                *last_bytes = done;
            }
            Kind::Off => {}
        }
    }

    /// Updates a seeding phase from the torrent's stats.
    pub fn update_seeding(&mut self, s: &TorrentStats) {
        let text = |r: f64| {
            format!(
                "sent {} ({}), {} peer{}, {} with a full copy",
                format_bytes(s.uploaded_bytes),
                format_rate(r),
                s.connected_peers,
                plural(s.connected_peers),
                s.peers_completed
            )
        };
        match &mut self.kind {
            Kind::Bar(bar) => {
                // The spinner has no rate of its own: show the mean since the start.
                let r = rate(s.uploaded_bytes, bar.elapsed());
                bar.set_message(text(r));
            }
            Kind::Lines { last, last_bytes } => {
                if last.elapsed() < line_every() {
                    return;
                }
                let r = rate(s.uploaded_bytes.saturating_sub(*last_bytes), last.elapsed());
                eprintln!("{}: {}", self.label, text(r));
                *last = Instant::now();
                *last_bytes = s.uploaded_bytes;
            }
            Kind::Off => {}
        }
    }

    /// Removes the bar (the caller prints the result).
    pub fn finish(self) {
        if let Kind::Bar(bar) = &self.kind {
            bar.finish_and_clear();
        }
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
