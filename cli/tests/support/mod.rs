//! Helpers shared by the integration tests: prerequisites (skip with a printed reason, or
//! fail under `CI=true`), paths, test data, logs. Each test binary uses a subset.
#![allow(dead_code)]

pub mod release;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The interpreter Debian's python3-libtorrent is installed for (a pyenv `python3` on PATH
/// would not see it).
pub const PYTHON: &str = "/usr/bin/python3";

pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// Writes straight to fd 2, past the test harness's output capture: a skip must be seen.
pub fn skip_note(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

/// Returns true when `ok`; otherwise skips (prints why) or, under CI, panics.
pub fn require(ok: bool, test: &str, what: &str) -> bool {
    if ok {
        return true;
    }
    if in_ci() {
        panic!("{test}: {what} is missing, and CI=true forbids skipping (run scripts/test.sh to install)");
    }
    skip_note(&format!(
        "skipped: {test}: {what} is missing (run scripts/test.sh to install)"
    ));
    false
}

/// Whether `prog args` runs and exits 0 (output discarded).
pub fn runs_ok(prog: &str, args: &[&str]) -> bool {
    Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

pub fn is_root() -> bool {
    // The tests have no libc dependency; /proc tells us the effective uid.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

pub fn ringswarm() -> &'static str {
    env!("CARGO_BIN_EXE_ringswarm")
}

/// A file of the repository's `scripts/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts")
        .join(name)
}

/// Deterministic pseudo-random bytes (xorshift64), so failures reproduce.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The last `max` bytes of a log file (on a char boundary), or all of it.
pub fn read_tail(p: &Path, max: usize) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(p) {
        let _ = f.read_to_string(&mut s);
    }
    if s.len() > max {
        let mut cut = s.len() - max;
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        s = format!("[...]{}", &s[cut..]);
    }
    s
}

// ---------------------------------------------------------------------------------------
// Child processes: each in a guard that stops it on drop, every wait with a deadline.

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped. Its stdout lines
/// arrive on a channel; stdout and stderr are also kept in files for failure reports.
pub struct Guard {
    pub name: String,
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub stdout_log: PathBuf,
    pub stderr_log: PathBuf,
}

impl Guard {
    pub fn spawn(name: &str, mut cmd: Command, logdir: &Path) -> Guard {
        let stdout_log = logdir.join(format!("{name}.stdout"));
        let stderr_log = logdir.join(format!("{name}.stderr"));
        let err = fs::File::create(&stderr_log).unwrap();
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(err);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let log_path = stdout_log.clone();
        thread::spawn(move || {
            let mut log = fs::File::create(&log_path).ok();
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(f) = log.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
                // If the receiver is gone, keep draining so the child never blocks on a full pipe.
                let _ = tx.send(line);
            }
        });
        Guard {
            name: name.to_string(),
            child,
            lines,
            stdout_log,
            stderr_log,
        }
    }

    /// Waits for a stdout line starting with `prefix` (after leading blanks); returns the
    /// rest of that line. Panics (with the logs of `self` and `others`) on timeout or exit.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration, others: &[&Guard]) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.fail(others, &format!("no `{prefix}` line within {timeout:?}"));
            }
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(line) => {
                    if let Some(rest) = line.trim_start().strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(st)) = self.child.try_wait() {
                        self.fail(others, &format!("exited ({st}) before a `{prefix}` line"));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let st = self.wait_exit(Duration::from_secs(5));
                    self.fail(
                        others,
                        &format!("closed stdout before a `{prefix}` line (exit: {st:?})"),
                    );
                }
            }
        }
    }

    /// Waits for a `listening on IP:PORT` line.
    pub fn wait_listening(&mut self, timeout: Duration, others: &[&Guard]) -> SocketAddr {
        let rest = self.wait_line("listening on ", timeout, others);
        let addr = rest.split_whitespace().next().unwrap_or("");
        addr.parse()
            .unwrap_or_else(|e| panic!("{}: bad address in {rest:?}: {e}", self.name))
    }

    /// Waits for the process to exit; None on timeout (the process is left running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => return Some(st),
                Ok(None) if Instant::now() >= deadline => return None,
                Ok(None) => thread::sleep(Duration::from_millis(50)),
                Err(_) => return None,
            }
        }
    }

    /// Waits for a successful exit within `timeout`; panics (with logs) otherwise.
    pub fn expect_success(&mut self, timeout: Duration, others: &[&Guard]) {
        match self.wait_exit(timeout) {
            Some(st) if st.success() => {}
            Some(st) => self.fail(others, &format!("failed: {st}")),
            None => self.fail(others, &format!("did not finish within {timeout:?}")),
        }
    }

    /// Every stdout line so far (from the log file: the channel may have been read).
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout_log).unwrap_or_default()
    }

    pub fn fail(&self, others: &[&Guard], what: &str) -> ! {
        let mut all: Vec<&Guard> = vec![self];
        all.extend_from_slice(others);
        dump_logs(&all);
        panic!("{}: {what}", self.name);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SIGTERM first, so drivers can stop the daemons they started and clients can say
        // `stopped` to the tracker.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if self.wait_exit(Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.wait_exit(Duration::from_secs(5));
        }
    }
}

pub fn dump_logs(guards: &[&Guard]) {
    for g in guards {
        eprintln!(
            "----- {} stdout -----\n{}",
            g.name,
            read_tail(&g.stdout_log, 4000)
        );
        eprintln!(
            "----- {} stderr -----\n{}",
            g.name,
            read_tail(&g.stderr_log, 4000)
        );
    }
}

/// Runs a command to success within `timeout` (its output logged under `logdir`).
pub fn run(name: &str, cmd: Command, timeout: Duration, logdir: &Path) {
    Guard::spawn(name, cmd, logdir).expect_success(timeout, &[]);
}

/// A command that runs one of `scripts/` with [`PYTHON`].
pub fn py(script_name: &str) -> Command {
    let mut c = Command::new(PYTHON);
    c.arg(script(script_name));
    c
}

// ---------------------------------------------------------------------------------------
// Test data and tools shared by the interop tests.

pub fn have_libtorrent() -> bool {
    runs_ok(PYTHON, &["-c", "import libtorrent"])
}

pub fn have_transmission() -> bool {
    on_path("transmission-daemon")
}

/// A directory on a real disk (O_DIRECT is refused by tmpfs; /tmp may be one).
pub fn scratch(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("rs-{tag}-"))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("scratch dir")
}

/// Writes `files` (relative path, length) under `root`.
pub fn write_tree(root: &Path, files: &[(&str, usize)]) {
    for (i, (name, len)) in files.iter().enumerate() {
        let p = root.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, pattern(*len, i as u64 + 11)).unwrap();
    }
}

/// Byte-compares every file of `files` under `src` and `dst`.
pub fn assert_same_tree(src: &Path, dst: &Path, files: &[(&str, usize)], logs: &[&Guard]) {
    for (name, len) in files {
        let (a, b) = (src.join(name), dst.join(name));
        let got = match fs::read(&b) {
            Ok(v) => v,
            Err(e) => {
                dump_logs(logs);
                panic!("{}: {e}", b.display());
            }
        };
        assert_eq!(got.len(), *len, "{}: length", b.display());
        let want = fs::read(&a).unwrap();
        if got != want {
            let at = got.iter().zip(&want).position(|(x, y)| x != y).unwrap_or(0);
            dump_logs(logs);
            panic!(
                "{}: content differs from the source, first at byte {at}",
                b.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// The one-shot commands' arguments, and what they print.

/// `create PATH --piece-size SIZE -o OUT`.
pub fn create_args<'a>(path: &'a str, piece_size: &'a str, out: &'a str) -> [&'a str; 6] {
    ["create", path, "--piece-size", piece_size, "-o", out]
}

/// `seed TORRENT DATA` on a free loopback port, with `cores` cores.
pub fn seed_args<'a>(torrent: &'a str, data: &'a str, cores: &'a str) -> [&'a str; 7] {
    [
        "seed",
        torrent,
        data,
        "--listen",
        "127.0.0.1:0",
        "--cores",
        cores,
    ]
}

/// `get TORRENT DEST --peer PEER` on a free loopback port, one core, then `extra`.
pub fn get_args<'a>(
    torrent: &'a str,
    dest: &'a str,
    peer: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "get",
        torrent,
        dest,
        "--peer",
        peer,
        "--listen",
        "127.0.0.1:0",
        "--cores",
        "1",
    ];
    args.extend_from_slice(extra);
    args
}

/// `send PATH` on a free loopback port until one receiver has it, one core, then `extra`.
pub fn send_args<'a>(path: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "send",
        path,
        "--listen",
        "127.0.0.1:0",
        "--receivers",
        "1",
        "--cores",
        "1",
    ];
    args.extend_from_slice(extra);
    args
}

/// The info-hash (hex) that `create` printed.
pub fn info_hash(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("info-hash: "))
        .unwrap_or_else(|| panic!("no info-hash in:\n{stdout}"))
        .trim()
        .to_owned()
}

/// Parses the one JSON object `--json` prints on stdout.
pub fn json(stdout: &str) -> serde_json::Value {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON on stdout:\n{stdout}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON ({e}): {line}"))
}

/// Runs `cmd` to completion within `timeout`; Ok(stdout) on success, else Err(what went
/// wrong, with its output). The child is killed on timeout.
pub fn capture(mut cmd: Command, timeout: Duration) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("{shown}: {e}"))?;
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let out = thread::spawn(move || {
        let mut s = String::new();
        if let Some(r) = out_pipe.as_mut() {
            let _ = r.read_to_string(&mut s);
        }
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        if let Some(r) = err_pipe.as_mut() {
            let _ = r.read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{shown}: did not finish within {timeout:?}"));
            }
        }
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    if status.success() {
        Ok(out)
    } else {
        Err(format!("{shown}: {status}\n{out}{err}"))
    }
}
