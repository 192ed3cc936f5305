//! Output: human lines, `--json` events and summary, `-q`.
//!
//! With `--json`, stdout carries only JSON, one object per line, printed as things happen
//! (`{"event":"listening",...}`, `{"event":"magnet",...}`, `{"event":"peer_failed",...}`,
//! `{"event":"complete",...}`), and the [`Summary`] (`"event":"summary"`) last, also on
//! failure with `ok: false` and `error`. The human lines that normally go to stdout
//! (listen address, magnet, results) go to stderr instead. `-q` drops the human lines,
//! warnings and progress: stderr gets errors only (stdout still gets `--json`).

use std::io::Write;

use serde::Serialize;

/// Where human-readable results go.
#[derive(Clone, Copy, Debug)]
pub struct Out {
    pub json: bool,
    pub quiet: bool,
}

impl Out {
    /// Prints a result line: stdout normally, stderr under `--json`, nowhere under `-q`.
    /// Flushed at once, so a script reading the pipe (e.g. for `listening on ...`) sees it
    /// immediately.
    pub fn line(&self, msg: impl AsRef<str>) {
        let msg = msg.as_ref();
        if self.quiet {
            return;
        }
        if self.json {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{msg}");
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{msg}");
            let _ = out.flush();
        }
    }

    /// A warning on stderr (`ringswarm: warning: ...`), unless `-q`.
    pub fn warn(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("ringswarm: warning: {}", msg.as_ref());
        }
    }

    /// Under `--json`, prints `{"event": NAME, ...fields}` on stdout at once.
    pub fn event(&self, name: &str, fields: serde_json::Value) {
        if !self.json {
            return;
        }
        let mut object = serde_json::Map::new();
        object.insert("event".into(), name.into());
        if let serde_json::Value::Object(rest) = fields {
            object.extend(rest);
        }
        print_line(&serde_json::Value::Object(object).to_string());
    }

    /// Prints the summary when `--json` is on; does nothing otherwise.
    pub fn summary(&self, summary: &Summary) {
        if self.json {
            print_json(summary);
        }
    }
}

fn print_line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// Prints one JSON object on its own line on stdout.
pub fn print_json(summary: &Summary) {
    let text = serde_json::to_string(summary)
        .unwrap_or_else(|e| format!("{{\"ok\":false,\"error\":\"serializing summary: {e}\"}}"));
    print_line(&text);
}

/// The machine-readable summary of one command. Fields that do not apply to a command are
/// left out.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Always `summary` (the last line of a `--json` run; events come before it).
    pub event: String,
    /// `create`, `seed`, `get`, `send` or `demo`.
    pub command: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info_hash: Option<String>,
    /// The torrent's root name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `publish`: the release version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The torrent's total size (including pad files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub piece_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub piece_size: Option<u64>,
    /// `create`: the .torrent file written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The directory holding the torrent's root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub magnet: Option<String>,
    /// Wall time of the transfer (get: from adding the torrent to completion; seed/send:
    /// time served; demo: until every receiver completed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// get: payload bytes received per second of `seconds`; send/seed: bytes sent per
    /// second; demo: bytes delivered to all receivers per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throughput_bytes_per_sec: Option<f64>,
    /// get: seconds spent fetching the metadata of a magnet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_seconds: Option<f64>,
    /// Connected peers at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<u32>,
    /// Distinct peers seen with a full copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers_completed: Option<u32>,
    /// Payload bytes received by this run (a resumed run counts only what it fetched).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downloaded_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uploaded_bytes: Option<u64>,
    /// get: bytes already verified on disk when this run started (resume).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_failures: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub banned_peers: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_hits: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_misses: Option<u64>,
    /// Payload bytes from / to peers outside our rack (known only with a place).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downloaded_outside_rack_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uploaded_outside_rack_bytes: Option<u64>,
    /// The exit code (only on failure; see `ringswarm --help`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Bytes locked in memory with `--lock`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked_bytes: Option<u64>,
    /// demo: one entry per receiver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receivers: Option<Vec<ReceiverSummary>>,
}

impl Summary {
    pub fn new(command: &str) -> Summary {
        Summary {
            event: "summary".to_owned(),
            command: command.to_owned(),
            ..Summary::default()
        }
    }

    /// Copies the counters of a torrent's stats.
    pub fn set_stats(&mut self, s: &ringswarm_engine::session::TorrentStats) {
        self.bytes = Some(s.total_bytes);
        self.piece_count = Some(s.piece_count);
        self.peers = Some(s.connected_peers);
        self.peers_completed = Some(s.peers_completed);
        self.downloaded_bytes = Some(s.downloaded_bytes);
        self.uploaded_bytes = Some(s.uploaded_bytes);
        self.hash_failures = Some(s.hash_failures);
        self.banned_peers = Some(s.banned_peers);
        self.cache_hits = Some(s.cache_hits);
        self.cache_misses = Some(s.cache_misses);
        self.downloaded_outside_rack_bytes = Some(s.downloaded_outside_rack_bytes);
        self.uploaded_outside_rack_bytes = Some(s.uploaded_outside_rack_bytes);
    }
}

/// demo: how one receiver did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReceiverSummary {
    pub index: usize,
    pub seconds: f64,
    pub throughput_bytes_per_sec: f64,
    pub downloaded_bytes: u64,
    pub uploaded_bytes: u64,
    pub hash_failures: u32,
    /// The copy's SHA-1 equals the original's.
    pub verified: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_leaves_out_what_does_not_apply() {
        let mut s = Summary::new("get");
        s.ok = true;
        s.downloaded_bytes = Some(42);
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        let o = v.as_object().unwrap();
        assert_eq!(o["command"], "get");
        assert_eq!(o["event"], "summary");
        assert_eq!(o["ok"], true);
        assert_eq!(o["downloaded_bytes"], 42);
        assert!(!o.contains_key("locked_bytes"));
        assert!(!o.contains_key("error"));
    }
}
