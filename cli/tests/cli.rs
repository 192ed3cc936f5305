//! End-to-end tests of the `ringswarm` binary on loopback: create → seed → get, send → get
//! with the printed magnet, the demo, resume after a kill, and clear errors on bad input.
//!
//! Every child process is owned by a [`Proc`] guard that kills it on drop, and every wait
//! is bounded by [`TIMEOUT`].

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod support;
use support::{create_args, get_args, json, pattern, seed_args, send_args};

use ringswarm_engine::tracker::client::{Cancel, RetryPolicy, TrackerClient};
use ringswarm_engine::tracker::proto::ScrapeEntry;

const TIMEOUT: Duration = Duration::from_secs(60);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ringswarm")
}

/// A directory on a real disk (O_DIRECT is refused by tmpfs).
fn scratch() -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tempfile::Builder::new()
        .prefix("rs-cli-")
        .tempdir_in(base)
        .unwrap()
}

fn write_tree(root: &Path, files: &[(&str, usize)]) {
    for (i, (name, len)) in files.iter().enumerate() {
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, pattern(*len, i as u64 + 11)).unwrap();
    }
}

fn assert_same_tree(a: &Path, b: &Path, files: &[(&str, usize)]) {
    for (name, len) in files {
        let x = std::fs::read(a.join(name)).unwrap();
        let y = std::fs::read(b.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(y.len(), *len, "{name}: length");
        assert!(x == y, "{name}: content differs");
    }
}

/// A running `ringswarm`, killed on drop. Its stdout and stderr are read by threads: stdout
/// line by line into a channel (and a transcript), stderr into a transcript.
struct Proc {
    name: String,
    child: Child,
    lines: Receiver<String>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Proc {
    fn spawn(cwd: &Path, args: &[&str]) -> Proc {
        Self::spawn_env(cwd, args, &[])
    }

    fn spawn_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {args:?}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out_pipe = child.stdout.take().unwrap();
        let err_pipe = child.stderr.take().unwrap();
        let transcript = stdout.clone();
        let r1 = std::thread::spawn(move || {
            for line in BufReader::new(out_pipe).lines() {
                let Ok(line) = line else { break };
                transcript.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        let transcript = stderr.clone();
        let r2 = std::thread::spawn(move || {
            let mut r = BufReader::new(err_pipe);
            let mut buf = [0u8; 4096];
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => transcript
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        });
        Proc {
            name: args.first().copied().unwrap_or("ringswarm").to_owned(),
            child,
            lines,
            stdout,
            stderr,
            readers: vec![r1, r2],
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// The first stdout line for which `f` gives Some, within [`TIMEOUT`].
    fn wait_line<T>(&mut self, what: &str, mut f: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(v) = f(&line) {
                        return v;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no {what} within {TIMEOUT:?}\nstdout:\n{}\nstderr:\n{}",
                    self.name,
                    self.stdout(),
                    self.stderr()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!(
                        "{}: exited ({status:?}) before printing {what}\nstdout:\n{}\nstderr:\n{}",
                        self.name,
                        self.stdout(),
                        self.stderr()
                    )
                }
            }
        }
    }

    /// Parses `listening on ADDR` from stdout.
    fn listen_addr(&mut self) -> String {
        self.wait_line("`listening on` line", |l| {
            l.strip_prefix("listening on ").map(str::to_owned)
        })
    }

    /// Waits for the exit within [`TIMEOUT`]; returns the status and the whole stdout and
    /// stderr.
    fn wait(mut self) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}: still running after {TIMEOUT:?}\nstdout:\n{}\nstderr:\n{}",
                    self.name,
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        (status, self.stdout(), self.stderr())
    }

    /// Kills the process (SIGKILL: a crash, no clean-up) and reaps it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `ringswarm args` to completion (bounded by [`TIMEOUT`]).
fn run(cwd: &Path, args: &[&str]) -> (ExitStatus, String, String) {
    Proc::spawn(cwd, args).wait()
}

/// Runs a command expected to succeed; returns its stdout.
fn run_ok(cwd: &Path, args: &[&str]) -> String {
    let (status, out, err) = run(cwd, args);
    assert!(
        status.success(),
        "{args:?} failed: {status}\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert_no_panic(&err);
    out
}

/// Runs a command expected to fail with exit 1 and one `ringswarm: error:` line; returns
/// that line.
fn run_err(cwd: &Path, args: &[&str]) -> String {
    let (status, out, err) = run(cwd, args);
    assert_eq!(
        status.code(),
        Some(1),
        "{args:?} should exit 1\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert_no_panic(&err);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: expected one error line, got:\n{err}"
    );
    assert!(
        lines[0].starts_with("ringswarm: error: "),
        "{args:?}: {}",
        lines[0]
    );
    lines[0].to_owned()
}

fn assert_no_panic(stderr: &str) {
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "panic:\n{stderr}"
    );
}

/// `create` for `path` with `piece_size`; returns the torrent's path.
fn create(dir: &Path, path: &str, piece_size: &str) -> PathBuf {
    let out = run_ok(dir, &create_args(path, piece_size, "t.torrent"));
    assert!(out.contains("info-hash: "), "{out}");
    assert!(out.contains("t.torrent"), "{out}");
    dir.join("t.torrent")
}

fn start_seed(dir: &Path, torrent: &str, data: &str) -> (Proc, String) {
    let mut seed = Proc::spawn(dir, &seed_args(torrent, data, "1"));
    let addr = seed.listen_addr();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    (seed, addr)
}

fn get_json(dir: &Path, source: &str, dest: &str, peer: Option<&str>) -> serde_json::Value {
    let mut args = vec![
        "--json",
        "get",
        source,
        dest,
        "--listen",
        "127.0.0.1:0",
        "--cores",
        "1",
        "--timeout",
        "50s",
    ];
    if let Some(p) = peer {
        args.extend(["--peer", p]);
    }
    let out = run_ok(dir, &args);
    let v = json(&out);
    assert_eq!(v["command"], "get", "{v}");
    assert_eq!(v["ok"], true, "{v}");
    v
}

#[test]
fn help_for_every_command() {
    let dir = scratch();
    let out = run_ok(dir.path(), &["--help"]);
    for cmd in ["create", "seed", "get", "send", "demo"] {
        assert!(out.contains(cmd), "{cmd} missing from --help:\n{out}");
        let help = run_ok(dir.path(), &[cmd, "--help"]);
        assert!(help.contains("Usage: ringswarm"), "{cmd} --help:\n{help}");
        assert!(help.contains("--json"), "{cmd} --help:\n{help}");
    }
}

#[test]
fn create_prints_what_it_made() {
    let dir = scratch();
    write_tree(dir.path(), &[("blob.bin", 100_000)]);
    let out = run_ok(dir.path(), &["--json", "create", "blob.bin"]);
    let v = json(&out);
    assert_eq!(v["ok"], true);
    assert_eq!(v["name"], "blob.bin");
    assert_eq!(v["bytes"], 100_000);
    assert_eq!(v["piece_count"], 1);
    assert_eq!(v["info_hash"].as_str().unwrap().len(), 40);
    assert!(
        dir.path().join("blob.bin.torrent").is_file(),
        "default output name"
    );
    // Refuses to overwrite without --force.
    let e = run_err(dir.path(), &["create", "blob.bin"]);
    assert!(e.contains("already exists"), "{e}");
    run_ok(dir.path(), &["create", "blob.bin", "--force"]);
}

#[test]
fn create_seed_get_multi_file() {
    let dir = scratch();
    let files = [
        ("tree/a.bin", 100_001),
        ("tree/empty", 0),
        ("tree/one", 1),
        ("tree/sub/b.bin", 4095),
        ("tree/sub/c.bin", 4097),
        ("tree/sub/deeper/d.bin", 3 * 65536 + 7),
        ("tree/z.bin", 1_000_000),
    ];
    write_tree(dir.path(), &files);
    create(dir.path(), "tree", "64K");
    let (_seed, addr) = start_seed(dir.path(), "t.torrent", ".");

    let v = get_json(dir.path(), "t.torrent", "dl", Some(&addr));
    let total: usize = files.iter().map(|f| f.1).sum();
    assert_eq!(v["bytes"], total as u64, "{v}");
    assert_eq!(v["hash_failures"], 0, "{v}");
    assert!(
        v["downloaded_bytes"].as_u64().unwrap() >= total as u64,
        "{v}"
    );
    assert_same_tree(dir.path(), &dir.path().join("dl"), &files);
}

#[test]
fn single_file_not_a_multiple_of_4096() {
    let dir = scratch();
    let files = [("data/blob.bin", 1_000_003)];
    write_tree(dir.path(), &files);
    create(dir.path(), "data/blob.bin", "16K");
    // The data path given as the file itself: its parent is used.
    let (_seed, addr) = start_seed(dir.path(), "t.torrent", "data/blob.bin");

    get_json(dir.path(), "t.torrent", "dl", Some(&addr));
    let a = std::fs::read(dir.path().join("data/blob.bin")).unwrap();
    let b = std::fs::read(dir.path().join("dl/blob.bin")).unwrap();
    assert_eq!(b.len(), a.len());
    assert!(a == b, "content differs");
}

#[test]
fn lock_and_seed_for() {
    let dir = scratch();
    let d = dir.path();
    let files = [("small.bin", 300_001)];
    write_tree(d, &files);
    create(d, "small.bin", "16K");
    let mut seed = Proc::spawn(
        d,
        &[&seed_args("t.torrent", ".", "1")[..], &["--lock"]].concat(),
    );
    let addr = seed.listen_addr();
    let locked = seed.wait_line("`locked` line", |l| {
        l.starts_with("locked ").then(|| l.to_owned())
    });
    assert!(locked.contains("in memory"), "{locked}");

    let started = Instant::now();
    let get = get_args("t.torrent", "dl", &addr, &["--lock", "--seed-for", "1s"]);
    let out = run_ok(d, &[&["--json"][..], &get].concat());
    assert!(started.elapsed() >= Duration::from_secs(1), "--seed-for 1s");
    let v = json(&out);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["locked_bytes"], 300_001, "{v}");
    assert_same_tree(d, &d.join("dl"), &files);
}

#[test]
fn malformed_torrent_is_one_clear_error() {
    let dir = scratch();
    let d = dir.path();
    std::fs::write(d.join("bad.torrent"), b"d8:announce3:abci1e").unwrap();
    std::fs::write(d.join("empty.torrent"), b"").unwrap();
    std::fs::write(d.join("noinfo.torrent"), b"d8:announce3:abce").unwrap();
    for t in ["bad.torrent", "empty.torrent", "noinfo.torrent"] {
        let e = run_err(d, &["get", t, "dl", "--peer", "127.0.0.1:1"]);
        assert!(e.contains(t), "error should name the file: {e}");
        let e = run_err(d, &["seed", t, ".", "--listen", "127.0.0.1:0"]);
        assert!(e.contains(t), "error should name the file: {e}");
    }
    // A truncated real torrent.
    write_tree(d, &[("blob", 50_000)]);
    create(d, "blob", "16K");
    let bytes = std::fs::read(d.join("t.torrent")).unwrap();
    std::fs::write(d.join("cut.torrent"), &bytes[..bytes.len() / 2]).unwrap();
    let e = run_err(d, &["get", "cut.torrent", "dl", "--peer", "127.0.0.1:1"]);
    assert!(e.contains("cut.torrent"), "{e}");
    // Missing file.
    let e = run_err(
        d,
        &["get", "missing.torrent", "dl", "--peer", "127.0.0.1:1"],
    );
    assert!(e.contains("missing.torrent"), "{e}");
    // --json: still one error line on stderr, and an ok:false object on stdout.
    let (status, out, err) = run(
        d,
        &[
            "--json",
            "get",
            "bad.torrent",
            "dl",
            "--peer",
            "127.0.0.1:1",
        ],
    );
    assert_eq!(status.code(), Some(1));
    assert_no_panic(&err);
    let v = json(&out);
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("bad.torrent"), "{v}");
}

#[test]
fn bad_magnet_is_one_clear_error() {
    let dir = scratch();
    for m in [
        "magnet:?xt=urn:btih:zzzz",
        "magnet:?dn=nothing",
        "magnet:",
        "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567&x.pe=nope",
    ] {
        let e = run_err(dir.path(), &["get", m, "dl"]);
        assert!(e.to_lowercase().contains("magnet"), "{m}: {e}");
    }
    // A valid magnet with no peer at all.
    let e = run_err(
        dir.path(),
        &[
            "get",
            "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567",
            "dl",
        ],
    );
    assert!(e.contains("peer"), "{e}");
}

#[test]
fn bad_arguments_are_clear_errors() {
    let dir = scratch();
    let d = dir.path();
    write_tree(d, &[("blob", 50_000), ("afile", 1)]);
    create(d, "blob", "16K");
    // The destination cannot be a directory: it is under a regular file.
    let e = run_err(
        d,
        &["get", "t.torrent", "afile/sub", "--peer", "127.0.0.1:1"],
    );
    assert!(e.contains("afile"), "{e}");
    // A peer that does not parse.
    let e = run_err(d, &["get", "t.torrent", "dl", "--peer", "localhost"]);
    assert!(e.contains("localhost"), "{e}");
    // Seed with data that is not there.
    let e = run_err(
        d,
        &["seed", "t.torrent", "nowhere", "--listen", "127.0.0.1:0"],
    );
    assert!(e.contains("nowhere"), "{e}");
    // create on a missing path.
    let e = run_err(d, &["create", "missing", "-o", "m.torrent"]);
    assert!(e.contains("missing"), "{e}");
    // Usage errors (clap): non-zero, no panic.
    for args in [
        &["create", "blob", "--piece-size", "3M"][..],
        &["create", "blob", "--piece-size", "4X"][..],
        &["get", "t.torrent", "dl", "--seed-for", "forever"][..],
        &["seed", "t.torrent", ".", "--listen", "nohost"][..],
        &["demo", "--receivers", "0"][..],
    ] {
        let (status, _, err) = run(d, args);
        assert!(!status.success(), "{args:?} should fail");
        assert_no_panic(&err);
    }
}

#[test]
fn send_then_get_with_the_printed_magnet() {
    let dir = scratch();
    let files = [("payload/x.bin", 777_777), ("payload/y/z.bin", 5)];
    write_tree(dir.path(), &files);
    let mut send = Proc::spawn(dir.path(), &send_args("payload", &[]));
    let magnet = send.wait_line("magnet link", |l| {
        l.starts_with("magnet:?").then(|| l.to_owned())
    });
    assert!(magnet.contains("x.pe="), "{magnet}");
    let cmd = send.wait_line("get command", |l| {
        l.trim_start()
            .starts_with("ringswarm get ")
            .then(|| l.to_owned())
    });
    assert!(cmd.contains(&magnet), "{cmd}");

    let v = get_json(dir.path(), &magnet, "dl", None);
    assert_eq!(v["name"], "payload");
    assert!(v["metadata_seconds"].is_number(), "{v}");
    assert_same_tree(dir.path(), &dir.path().join("dl"), &files);

    let (status, _, err) = send.wait();
    assert!(status.success(), "send: {status}\n{err}");
    assert_no_panic(&err);
}

#[test]
fn demo_small() {
    let dir = scratch();
    let work = dir.path().join("work");
    let out = run_ok(
        dir.path(),
        &[
            "--json",
            "demo",
            "--size",
            "8M",
            "--receivers",
            "2",
            "--dir",
            work.to_str().unwrap(),
        ],
    );
    let v = json(&out);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["bytes"], 8 << 20);
    let receivers = v["receivers"].as_array().unwrap();
    assert_eq!(receivers.len(), 2);
    for r in receivers {
        assert_eq!(r["verified"], true, "{r}");
    }
    let left: Vec<_> = std::fs::read_dir(&work).unwrap().collect();
    assert!(left.is_empty(), "the demo left files behind: {left:?}");
}

#[test]
fn resume_after_kill() {
    const SIZE: usize = 64 << 20;
    let dir = scratch();
    let d = dir.path();
    write_tree(d, &[("big.bin", SIZE)]);
    create(d, "big.bin", "1M");
    let (_seed, addr) = start_seed(d, "t.torrent", ".");

    // First run: watch its progress lines and kill it (SIGKILL) once some bytes are verified.
    let mut first = Proc::spawn_env(
        d,
        &[
            "get",
            "t.torrent",
            "dl",
            "--peer",
            &addr,
            "--listen",
            "127.0.0.1:0",
            "--cores",
            "1",
        ],
        &[("RINGSWARM_PROGRESS_INTERVAL", "20ms")],
    );
    let deadline = Instant::now() + TIMEOUT;
    let partial;
    loop {
        let err = first.stderr();
        // Lines look like `get big.bin: 12.00 MiB / 64.00 MiB (18.8%), ...`.
        let progressed = err
            .lines()
            .any(|l| l.starts_with("get big.bin: ") && !l.contains(": 0 B /"));
        if progressed || first.stdout().contains("done: ") {
            first.kill();
            let err = first.stderr();
            partial = !err.contains("(100.0%)") && !first.stdout().contains("done: ");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no progress from the first get:\n{err}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    if !partial {
        eprintln!("note: the first run finished before it could be killed midway");
    }

    // Second run: completes, and fetches less than the whole blob.
    let v = get_json(d, "t.torrent", "dl", Some(&addr));
    let downloaded = v["downloaded_bytes"].as_u64().unwrap();
    assert!(
        downloaded < SIZE as u64,
        "the restarted get downloaded {downloaded} bytes of {SIZE}: {v}"
    );
    assert!(v["resumed_bytes"].as_u64().unwrap() > 0, "{v}");
    let a = std::fs::read(d.join("big.bin")).unwrap();
    let b = std::fs::read(d.join("dl/big.bin")).unwrap();
    assert_eq!(a.len(), b.len());
    assert!(a == b, "content differs after resume");
}

/// `ringswarm tracker` on a free loopback port; returns it and its `udp://` URL.
fn start_tracker(dir: &Path) -> (Proc, String) {
    let mut tracker = Proc::spawn(
        dir,
        &[
            "tracker",
            "--listen",
            "127.0.0.1:0",
            "--cores",
            "1",
            "--interval",
            "30",
        ],
    );
    let url = tracker.wait_line("`tracker listening on` line", |l| {
        l.strip_prefix("tracker listening on ").map(str::to_owned)
    });
    (tracker, url)
}

/// The tracker's scrape entry for `info_hash` (hex), through the engine's client.
fn scrape(url: &str, info_hash: &str) -> ScrapeEntry {
    let mut hash = [0u8; 20];
    for (i, b) in hash.iter_mut().enumerate() {
        *b = u8::from_str_radix(&info_hash[2 * i..2 * i + 2], 16).unwrap();
    }
    let policy = RetryPolicy {
        base: Duration::from_millis(500),
        max_n: 3,
        ..RetryPolicy::default()
    };
    let mut client = TrackerClient::new(url, policy).unwrap();
    client.scrape(&[hash], &Cancel::none()).unwrap()[0]
}

#[test]
fn swarm_through_the_tracker_alone() {
    let dir = scratch();
    let d = dir.path();
    write_tree(d, &[("blob", 3_000_001)]);
    let (_tracker, url) = start_tracker(d);
    let announce = format!("{url}/announce");
    let out = run_ok(
        d,
        &[
            "create",
            "blob",
            "--piece-size",
            "256K",
            "-o",
            "t.torrent",
            "--tracker",
            &announce,
        ],
    );
    let hash = out
        .lines()
        .find_map(|l| l.strip_prefix("info-hash: "))
        .unwrap()
        .trim()
        .to_owned();
    // The seed learns the tracker from the torrent; nobody is told a peer address.
    let (mut seed, _) = start_seed(d, "t.torrent", "blob");
    seed.wait_line("`announcing to` line", |l| {
        l.starts_with("announcing to udp://").then_some(())
    });
    let deadline = Instant::now() + TIMEOUT;
    while scrape(&url, &hash).seeders < 1 {
        assert!(Instant::now() < deadline, "the seed never announced");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A .torrent with a tracker and no --peer.
    let v = get_json(d, "t.torrent", "dl1", None);
    assert_eq!(v["bytes"], 3_000_001, "{v}");
    assert_same_tree(d, &d.join("dl1"), &[("blob", 3_000_001)]);
    // A magnet naming only the tracker: the metadata comes from the peers it returns.
    let magnet = format!("magnet:?xt=urn:btih:{hash}&tr={announce}");
    let v = get_json(d, &magnet, "dl2", None);
    assert!(v["metadata_seconds"].is_number(), "{v}");
    assert_same_tree(d, &d.join("dl2"), &[("blob", 3_000_001)]);

    // Both downloads said `completed` and then `stopped`; the seed is still there.
    let s = scrape(&url, &hash);
    assert_eq!(
        (s.seeders, s.completed, s.leechers),
        (1, 2, 0),
        "scrape after two downloads: {s:?}"
    );
    // Seed stops cleanly on SIGINT: `stopped` removes it.
    let status = Command::new("kill")
        .args(["-INT", &seed.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (status, _, err) = seed.wait();
    assert!(status.success(), "seed: {status}\n{err}");
    assert_eq!(scrape(&url, &hash).seeders, 0);
}

#[test]
fn tracker_urls_are_checked() {
    let dir = scratch();
    let d = dir.path();
    write_tree(d, &[("blob", 10_000)]);
    create(d, "blob", "16K");
    for bad in [
        "http://127.0.0.1:1/announce",
        "udp://127.0.0.1/announce",
        "udp://",
    ] {
        let (status, _, err) = run(d, &["get", "t.torrent", "dl", "--tracker", bad]);
        assert_eq!(status.code(), Some(2), "{bad}: usage error expected\n{err}");
        assert!(err.contains("--tracker"), "{bad}: {err}");
        assert_no_panic(&err);
    }
    // A torrent without trackers and no --peer: one clear line.
    let e = run_err(d, &["get", "t.torrent", "dl"]);
    assert!(e.contains("--peer") && e.contains("--tracker"), "{e}");
}
