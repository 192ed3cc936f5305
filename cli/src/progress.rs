//! Progress on stderr: an indicatif bar when stderr is a terminal, else a plain line every
//! few seconds (logs, CI, `--json`: stdout stays clean either way, and `--json` never gets
//! a bar).
//!
//! `RINGSWARM_PROGRESS_INTERVAL` (a duration, e.g. `500ms`) changes how often plain lines
//! are printed; the integration tests use it to watch a download's progress closely.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use ringswarm_engine::fleet::agent::ReleaseStatus;
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
        }
    }

    /// Removes the bar (the caller prints the result).
    pub fn finish(self) {
        if let Kind::Bar(bar) = &self.kind {
            bar.finish_and_clear();
        }
    }
}

/// Seconds left as `1h02m03s`, `4m05s` or `7s`; `unknown` while nothing comes in.
pub fn format_eta(secs: Option<u64>) -> String {
    let Some(secs) = secs else {
        return "unknown".to_owned();
    };
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// A download's progress as the agent prints it and `status` shows it: `3.00 MiB / 16.00
/// MiB verified (18.8%), 1.00 MiB/s, ETA 13s, 4 peers`.
pub fn download_line(r: &ReleaseStatus) -> String {
    let pct = if r.total_bytes > 0 {
        r.verified_bytes as f64 * 100.0 / r.total_bytes as f64
    } else {
        100.0
    };
    format!(
        "{} / {} verified ({pct:.1}%), {}, ETA {}, {} peer{}",
        format_bytes(r.verified_bytes),
        format_bytes(r.total_bytes),
        format_rate(r.rate_bytes_per_sec),
        format_eta(r.eta_secs),
        r.peers,
        plural(r.peers)
    )
}

/// When the agent last printed each download's progress line: one line per download every
/// period (plain lines, not a bar: the agent runs under systemd, its stderr is a log).
pub struct DownloadLines {
    every: Duration,
    last: HashMap<String, Instant>,
}

impl DownloadLines {
    pub fn new(every: Duration) -> DownloadLines {
        DownloadLines {
            every,
            last: HashMap::new(),
        }
    }

    /// The lines due at `now` for the releases in `releases` being downloaded; the first
    /// comes a period after a download starts, so a quick one prints none.
    pub fn due(&mut self, now: Instant, releases: &[ReleaseStatus]) -> Vec<String> {
        let downloading: Vec<&ReleaseStatus> = releases
            .iter()
            .filter(|r| r.state == "downloading")
            .collect();
        self.last
            .retain(|key, _| downloading.iter().any(|r| release_key(r) == *key));
        let mut lines = Vec::new();
        for r in downloading {
            let last = self.last.entry(release_key(r)).or_insert(now);
            if now.saturating_duration_since(*last) >= self.every {
                *last = now;
                lines.push(format!(
                    "downloading {} {}: {}",
                    r.name,
                    r.version,
                    download_line(r)
                ));
            }
        }
        lines
    }
}

fn release_key(r: &ReleaseStatus) -> String {
    format!("{} {}", r.name, r.version)
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn downloading(verified: u64, rate: f64, eta: Option<u64>) -> ReleaseStatus {
        ReleaseStatus {
            name: "index".into(),
            version: "v1".into(),
            state: "downloading".into(),
            total_bytes: 16 << 20,
            verified_bytes: verified,
            peers: 4,
            rate_bytes_per_sec: rate,
            eta_secs: eta,
            ..ReleaseStatus::default()
        }
    }

    #[test]
    fn download_lines_read_well() {
        assert_eq!(
            download_line(&downloading(3 << 20, 1048576.0, Some(13))),
            "3.00 MiB / 16.00 MiB verified (18.8%), 1.00 MiB/s, ETA 13s, 4 peers"
        );
        assert_eq!(
            download_line(&downloading(0, 0.0, None)),
            "0 B / 16.00 MiB verified (0.0%), 0 B/s, ETA unknown, 4 peers"
        );
        assert_eq!(format_eta(Some(245)), "4m05s");
        assert_eq!(format_eta(Some(3723)), "1h02m03s");
    }

    #[test]
    fn one_line_per_download_per_period() {
        let t0 = Instant::now();
        let every = Duration::from_secs(5);
        let mut lines = DownloadLines::new(every);
        let releases = [downloading(0, 0.0, None)];
        assert!(lines.due(t0, &releases).is_empty());
        assert!(lines.due(t0 + Duration::from_secs(4), &releases).is_empty());
        let due = lines.due(t0 + every, &releases);
        assert_eq!(due.len(), 1);
        assert!(
            due[0].starts_with("downloading index v1: 0 B / 16.00 MiB"),
            "{due:?}"
        );
        assert!(lines.due(t0 + Duration::from_secs(9), &releases).is_empty());
        // A finished download is forgotten.
        assert!(lines.due(t0 + Duration::from_secs(20), &[]).is_empty());
        assert!(lines.last.is_empty());
    }
}
