//! Output: human lines, `--json` events and summary, `-q`.
//!
//! With `--json`, stdout carries only JSON, one object per line, printed as things happen
//! (`{"event":"listening",...}`, `{"event":"magnet",...}`, `{"event":"peer_failed",...}`,
//! `{"event":"complete",...}`), and the [`Summary`] (`"event":"summary"`) last, also on
//! failure with `ok: false` and `error`. The human lines that normally go to stdout
//! (listen address, magnet, results) go to stderr instead. `-q` drops the human lines,
//! warnings and progress: stderr gets errors only (stdout still gets `--json`).
//!
//! The read-only commands (`info`, `feed show`, `fleet`, `status`, `man`, `completions`)
//! print through [`write_stdout`] and print their `--json` result through [`Out::result`]:
//! a summary like every command's, with the command's own fields beside `ok`.
//!
//! A reader that closes stdout early (`ringswarm info x.torrent --all | head -1`) ends the
//! run quietly with exit 0: Rust ignores SIGPIPE, so the write fails with EPIPE; the
//! writer turns that into a [`StdoutClosed`] error and `main` exits 0 on it without a
//! word (the reader asked for no more; `| head` is no failure of ours).

use std::borrow::Cow;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

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
            print_line(msg);
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

    /// Prints a read-only command's `--json` result: `{"event":"summary","command":...,
    /// "ok":...}` followed by `fields`' own (an object; anything else goes under `value`),
    /// on one line. With `ok: false`, also `exit_code` and `error`, as `main` prints them
    /// for a failure. The caller returns the failure afterwards; `main` sees that the
    /// summary was printed and does not print a second one.
    pub fn result(
        &self,
        command: &str,
        fields: serde_json::Value,
        failed: Option<(i32, &str)>,
    ) -> std::io::Result<()> {
        let mut object = serde_json::Map::new();
        object.insert("event".into(), "summary".into());
        object.insert("command".into(), command.into());
        object.insert("ok".into(), failed.is_none().into());
        if let Some((code, error)) = failed {
            object.insert("error".into(), error.into());
            object.insert("exit_code".into(), code.into());
        }
        match fields {
            serde_json::Value::Object(rest) => {
                for (key, value) in rest {
                    // The summary's own keys win over a same-named field of the payload.
                    object.entry(key).or_insert(value);
                }
            }
            other => {
                object.insert("value".into(), other);
            }
        }
        SUMMARY_PRINTED.store(true, Ordering::Relaxed);
        let mut line = serde_json::Value::Object(object).to_string();
        line.push('\n');
        write_stdout(line.as_bytes())
    }
}

/// Set once a summary was printed: `main` prints none more on failure.
static SUMMARY_PRINTED: AtomicBool = AtomicBool::new(false);

/// True when this run already printed its `--json` summary.
pub fn summary_printed() -> bool {
    SUMMARY_PRINTED.load(Ordering::Relaxed)
}

/// The reader of stdout closed it (EPIPE): see the module's doc.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed by its reader")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes `bytes` to stdout and flushes: the one way results reach stdout. A closed pipe
/// is an `io::Error` of kind `BrokenPipe` carrying [`StdoutClosed`] (so a broken pipe to a
/// peer is never mistaken for it).
pub fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, StdoutClosed)
            } else {
                e
            }
        })
}

/// True when `e` comes from [`write_stdout`] finding stdout closed.
pub fn is_stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause.is::<StdoutClosed>()
            || cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<StdoutClosed>())
    })
}

/// Lines for stdout, written at once by [`Text::print`]: commands build their whole
/// output (it is small), so a closed pipe is one error in one place.
#[derive(Default)]
pub struct Text(String);

impl Text {
    pub fn new() -> Text {
        Text::default()
    }

    /// Appends one line.
    pub fn line(&mut self, line: impl AsRef<str>) {
        self.0.push_str(line.as_ref());
        self.0.push('\n');
    }

    /// Appends text as it is.
    pub fn push(&mut self, text: &str) {
        self.0.push_str(text);
    }

    pub fn print(&self) -> std::io::Result<()> {
        write_stdout(self.0.as_bytes())
    }
}

/// `text` fit for a terminal: control characters (ESC, CR, BEL, ...) and Unicode format
/// characters (bidirectional overrides such as U+202E, zero-width characters) become `?`,
/// so text from a file or a server cannot move the cursor, recolour the terminal or
/// reorder what is shown.
pub fn printable(text: &str) -> Cow<'_, str> {
    if text.chars().any(unprintable) {
        Cow::Owned(
            text.chars()
                .map(|c| if unprintable(c) { '?' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

/// Control characters, and the Unicode format characters (general category Cf) that
/// change how text around them is shown.
fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061C}'
                | '\u{06DD}'
                | '\u{070F}'
                | '\u{0890}'..='\u{0891}'
                | '\u{08E2}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{110BD}'
                | '\u{110CD}'
                | '\u{13430}'..='\u{1343F}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0001}'
                | '\u{E0020}'..='\u{E007F}'
        )
}

fn print_line(text: &str) {
    // Events and summaries of long-running commands: a reader gone from stdout must not
    // stop a transfer, so errors are dropped here.
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    line.push('\n');
    let _ = write_stdout(line.as_bytes());
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

    #[test]
    fn printable_defuses_escapes_and_direction_marks_only() {
        assert_eq!(printable("plain é ü 東京"), "plain é ü 東京");
        assert!(matches!(printable("plain"), Cow::Borrowed(_)));
        assert_eq!(printable("a\x1b[2Jb\r\n\x07"), "a?[2Jb???");
        assert_eq!(printable("x\u{202e}y\u{200b}z\u{feff}\u{2066}"), "x?y?z??");
        assert_eq!(printable("\u{9b}31m"), "?31m", "C1 CSI");
    }

    #[test]
    fn a_stdout_closed_error_is_told_from_other_broken_pipes() {
        let closed = std::io::Error::new(std::io::ErrorKind::BrokenPipe, StdoutClosed);
        let e = anyhow::Error::new(closed).context("writing the result");
        assert!(is_stdout_closed(&e));
        let peer = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(!is_stdout_closed(&anyhow::Error::new(peer)));
    }
}
