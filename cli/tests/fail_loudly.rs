//! Issue 13, item 1, against the real binary on loopback: peers that fail are named,
//! `get` gives up on a stall, every failure has its exit code, `-q` and `--json` events,
//! `send` listens before hashing, `--lock` checks RLIMIT_MEMLOCK first, a destination
//! holding other data is replaced only after saying so (or refused with `--no-clobber`),
//! and one `get` at a time per destination.
//!
//! Every child is a [`Guard`] (stopped on drop) and every wait is bounded.

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;
use support::{
    create_args, get_args, is_root, json, on_path, pattern, require, ringswarm, scratch, seed_args,
    send_args, Guard,
};

const TIMEOUT: Duration = Duration::from_secs(60);

fn cmd(cwd: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(ringswarm());
    c.args(args).current_dir(cwd).env_remove("RUST_LOG");
    c
}

/// Runs `c` to its end (bounded); returns status, stdout, stderr.
fn run_cmd(cwd: &Path, name: &str, c: Command) -> (ExitStatus, String, String) {
    let mut g = Guard::spawn(name, c, cwd);
    let Some(status) = g.wait_exit(TIMEOUT) else {
        g.fail(&[], "did not finish in time")
    };
    finish(&g, status)
}

fn run(cwd: &Path, name: &str, args: &[&str]) -> (ExitStatus, String, String) {
    run_cmd(cwd, name, cmd(cwd, args))
}

fn finish(g: &Guard, status: ExitStatus) -> (ExitStatus, String, String) {
    // Let the stdout reader thread drain the pipe into the log.
    std::thread::sleep(Duration::from_millis(50));
    let err = fs::read_to_string(&g.stderr_log).unwrap_or_default();
    (status, g.stdout(), err)
}

/// The one `ringswarm: error:` line of a run that exited with `code`.
fn error_line(code: i32, status: ExitStatus, out: &str, err: &str) -> String {
    assert_eq!(
        status.code(),
        Some(code),
        "expected exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(!err.contains("panicked"), "panic:\n{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("ringswarm: error: "))
        .collect();
    assert_eq!(lines.len(), 1, "expected one error line:\n{err}");
    lines[0].to_owned()
}

/// `src/blob.bin` of `size` bytes and `t.torrent` for it (64 KiB pieces).
fn blob(d: &Path, size: usize) {
    fs::create_dir_all(d.join("src")).unwrap();
    fs::write(d.join("src/blob.bin"), pattern(size, 7)).unwrap();
    let (status, out, err) = run(
        d,
        "create",
        &create_args("src/blob.bin", "64K", "t.torrent"),
    );
    assert!(status.success(), "create: {status}\n{out}\n{err}");
}

/// `seed t.torrent src` on a free loopback port; returns it and its address.
fn seed(d: &Path) -> (Guard, String) {
    let mut g = Guard::spawn("seed", cmd(d, &seed_args("t.torrent", "src", "1")), d);
    let addr = g.wait_listening(TIMEOUT, &[]);
    (g, addr.to_string())
}

/// A loopback port nothing listens on (bound, then closed).
fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A listener that accepts connections and never says a word, until dropped.
struct Mute {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Mute {
    fn start() -> Mute {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            let until = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                if let Ok((s, _)) = l.accept() {
                    held.push(s);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Mute { addr, stop }
    }
}

impl Drop for Mute {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// The error line names `peer` with `reason`, and the log warned of it exactly once (not
/// once per redial, not once per core).
fn named_once(line: &str, err: &str, peer: &str, reason: &str) {
    assert!(line.contains(&format!("{peer} {reason}")), "{line}");
    assert_eq!(
        count(err, &format!("peer {peer} {reason}")),
        1,
        "one warning for the peer, not one per redial:\n{err}"
    );
}

#[test]
fn help_lists_the_exit_codes() {
    let d = scratch("fl-help");
    let (status, out, _) = run(d.path(), "help", &["--help"]);
    assert!(status.success());
    assert!(out.contains("Exit codes:"), "{out}");
    for code in ["  3 ", "  4 ", "  5 ", "  6 ", "  130 ", "  143 "] {
        assert!(
            out.contains(code),
            "exit code {code} missing from --help:\n{out}"
        );
    }
}

/// A peer that refuses: `get` gives up after --stall-timeout with exit 3, naming the peer
/// and why; the warning is printed once although the peer is dialled again and again;
/// `--json` gets a `peer_failed` event.
#[test]
fn get_against_a_closed_port_exits_3_naming_the_peer() {
    let dir = scratch("fl-closed");
    let d = dir.path();
    blob(d, 200_000);
    let peer = closed_port().to_string();
    let started = Instant::now();
    let (status, out, err) = run(
        d,
        "get",
        &[
            "--json",
            "get",
            "t.torrent",
            "dl",
            "--peer",
            &peer,
            "--listen",
            "127.0.0.1:0",
            "--cores",
            "2",
            "--stall-timeout",
            "3s",
        ],
    );
    let line = error_line(3, status, &out, &err);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert!(line.contains("no peer for 3s"), "{line}");
    named_once(&line, &err, &peer, "refused the connection");
    let events: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "peer_failed" && e["peer"] == peer.as_str()),
        "{out}"
    );
    let summary = json(&out);
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["ok"], false);
    assert_eq!(summary["exit_code"], 3);
}

/// A listener that accepts and never handshakes is named with that reason.
#[test]
fn a_peer_that_never_handshakes_is_named() {
    let dir = scratch("fl-mute");
    let d = dir.path();
    blob(d, 200_000);
    let mute = Mute::start();
    let peer = mute.addr.to_string();
    let (status, out, err) = run(
        d,
        "get",
        &get_args("t.torrent", "dl", &peer, &["--stall-timeout", "13s"]),
    );
    let line = error_line(3, status, &out, &err);
    named_once(&line, &err, &peer, "sent no handshake in time");
}

/// `--peer NAME:PORT` tries every address of the name: with NAME resolving to both
/// 127.0.0.1 and ::1, a seed listening on only one of them is found, whichever it is. The
/// name comes from a hosts file bind-mounted over /etc/hosts in a mount namespace of the
/// `get` alone (root and `unshare` needed).
#[test]
fn every_address_of_a_peer_name_is_tried() {
    let test = "every_address_of_a_peer_name_is_tried";
    if !require(is_root(), test, "root (to bind-mount a hosts file)")
        || !require(on_path("unshare"), test, "unshare (util-linux)")
    {
        return;
    }
    let dir = scratch("fl-dual");
    let d = dir.path();
    blob(d, 200_000);
    fs::write(
        d.join("hosts"),
        "127.0.0.1 rs-dual-stack\n::1 rs-dual-stack\n",
    )
    .unwrap();
    for (i, listen) in ["127.0.0.1:0", "[::1]:0"].into_iter().enumerate() {
        let mut seed = Guard::spawn(
            "seed",
            cmd(
                d,
                &[
                    "seed",
                    "t.torrent",
                    "src",
                    "--listen",
                    listen,
                    "--cores",
                    "1",
                ],
            ),
            d,
        );
        let port = seed.wait_listening(TIMEOUT, &[]).port();
        let dest = format!("dl{i}");
        let peer = format!("rs-dual-stack:{port}");
        let mut c = Command::new("unshare");
        c.args(["--mount", "sh", "-c"])
            .arg(r#"mount --bind "$0" /etc/hosts && exec "$@""#)
            .arg(d.join("hosts"))
            .arg(ringswarm())
            .args(get_args("t.torrent", &dest, &peer, &["--timeout", "40s"]))
            .current_dir(d)
            .env_remove("RUST_LOG");
        let (status, out, err) = run_cmd(d, "get", c);
        let cannot_mount =
            i == 0 && err.contains("mount") && !status.success() && !err.contains("ringswarm");
        // Skipped with its reason, but under CI=true that is a failure (as a missing tool).
        if !require(
            !cannot_mount,
            test,
            &format!("a bind mount of a hosts file ({})", err.trim()),
        ) {
            return;
        }
        assert!(status.success(), "{listen}: {status}\n{out}\n{err}");
        assert!(
            out.contains("from 2 peers"),
            "{listen}: both addresses should be dialled:\n{out}"
        );
        assert_eq!(
            fs::read(d.join(&dest).join("blob.bin")).unwrap(),
            pattern(200_000, 7)
        );
    }
}

#[test]
fn timeout_exits_4() {
    let dir = scratch("fl-timeout");
    let d = dir.path();
    blob(d, 200_000);
    let peer = closed_port().to_string();
    let (status, out, err) = run(
        d,
        "get",
        &get_args(
            "t.torrent",
            "dl",
            &peer,
            &["--timeout", "2s", "--stall-timeout", "0"],
        ),
    );
    let line = error_line(4, status, &out, &err);
    assert!(line.contains("timed out after 2s"), "{line}");
}

/// SIGINT while downloading exits 130; SIGTERM exits 143.
#[test]
fn signals_exit_130_and_143() {
    let dir = scratch("fl-sig");
    let d = dir.path();
    blob(d, 200_000);
    let mute = Mute::start();
    let peer = mute.addr.to_string();
    for (sig, code, word) in [("-INT", 130, "interrupted"), ("-TERM", 143, "terminated")] {
        let dest = format!("dl{code}");
        let mut g = Guard::spawn("get", cmd(d, &get_args("t.torrent", &dest, &peer, &[])), d);
        g.wait_line("getting ", TIMEOUT, &[]);
        let _ = Command::new("kill")
            .args([sig, &g.child.id().to_string()])
            .status();
        let Some(status) = g.wait_exit(TIMEOUT) else {
            g.fail(&[], "did not stop on the signal")
        };
        let (status, out, err) = finish(&g, status);
        let line = error_line(code, status, &out, &err);
        assert!(line.contains(word) && line.contains("resume"), "{line}");
    }
}

/// A destination on a full filesystem (a 1 MiB tmpfs) exits 6.
#[test]
fn disk_full_exits_6() {
    if !require(
        is_root(),
        "disk_full_exits_6",
        "root (to mount a small tmpfs)",
    ) {
        return;
    }
    let dir = scratch("fl-full");
    let d = dir.path();
    blob(d, 4 << 20);
    let small = d.join("small");
    fs::create_dir_all(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if !require(
        mounted,
        "disk_full_exits_6",
        "a tmpfs mount (mount -t tmpfs)",
    ) {
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&small);
    let peer = closed_port().to_string();
    let (status, out, err) = run(
        d,
        "get",
        &get_args("t.torrent", "small/dl", &peer, &["--timeout", "30s"]),
    );
    let line = error_line(6, status, &out, &err);
    assert!(line.contains("space"), "{line}");
}

/// `send --json`: the listening event comes first, the magnet event as soon as the hashing
/// is done (while send still waits for its receiver), the summary last.
#[test]
fn send_json_streams_events_as_they_happen() {
    let dir = scratch("fl-send");
    let d = dir.path();
    fs::write(d.join("blob.bin"), pattern(300_000, 3)).unwrap();
    let mut send = Guard::spawn(
        "send",
        cmd(d, &[&["--json"][..], &send_args("blob.bin", &[])].concat()),
        d,
    );
    let first = send.wait_line("{", TIMEOUT, &[]);
    let first: serde_json::Value = serde_json::from_str(&format!("{{{first}")).unwrap();
    assert_eq!(first["event"], "listening", "{first}");
    let second = send.wait_line("{", TIMEOUT, &[]);
    let second: serde_json::Value = serde_json::from_str(&format!("{{{second}")).unwrap();
    assert_eq!(second["event"], "magnet", "{second}");
    assert!(
        send.wait_exit(Duration::ZERO).is_none(),
        "send printed its magnet only at the end"
    );
    let magnet = second["magnet"].as_str().unwrap().to_owned();
    let (status, out, err) = run(
        d,
        "get",
        &[
            "get",
            &magnet,
            "dl",
            "--listen",
            "127.0.0.1:0",
            "--cores",
            "1",
            "--timeout",
            "40s",
        ],
    );
    assert!(status.success(), "{status}\n{out}\n{err}");
    send.expect_success(TIMEOUT, &[]);
    let all = send.stdout();
    let last = all.lines().last().unwrap_or_default();
    let summary: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(summary["event"], "summary", "{all}");
    assert_eq!(summary["ok"], true);
}

/// `send` on a busy port fails before hashing (it never says `hashing`).
#[test]
fn send_checks_its_port_before_hashing() {
    let dir = scratch("fl-busy");
    let d = dir.path();
    fs::write(d.join("blob.bin"), pattern(100_000, 3)).unwrap();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().to_string();
    let (status, out, err) = run(
        d,
        "send",
        &["send", "blob.bin", "--listen", &port, "--cores", "1"],
    );
    let line = error_line(1, status, &out, &err);
    assert!(line.contains(&port), "{line}");
    assert!(
        !out.contains("hashing") && !err.contains("hashing"),
        "{out}\n{err}"
    );
}

/// `-q`: nothing at all on a successful download.
#[test]
fn quiet_prints_nothing_on_success() {
    let dir = scratch("fl-quiet");
    let d = dir.path();
    blob(d, 300_000);
    let (_seed, addr) = seed(d);
    let (status, out, err) = run(
        d,
        "get",
        &[
            &["-q"][..],
            &get_args("t.torrent", "dl", &addr, &["--timeout", "40s"]),
        ]
        .concat(),
    );
    assert!(status.success(), "{status}\n{out}\n{err}");
    assert_eq!(out, "", "stdout under -q");
    assert_eq!(err, "", "stderr under -q");
    assert_eq!(
        fs::read(d.join("dl/blob.bin")).unwrap(),
        pattern(300_000, 7)
    );
}

/// `--lock` with RLIMIT_MEMLOCK below the torrent's size fails (exit 6) before anything
/// is downloaded, naming the limit. As root the child runs without CAP_IPC_LOCK (which
/// would bypass the limit).
#[test]
fn lock_checks_memlock_before_downloading() {
    if !require(
        on_path("prlimit"),
        "lock_checks_memlock",
        "prlimit (util-linux)",
    ) {
        return;
    }
    if is_root()
        && !require(
            on_path("setpriv"),
            "lock_checks_memlock",
            "setpriv (util-linux)",
        )
    {
        return;
    }
    let dir = scratch("fl-lock");
    let d = dir.path();
    blob(d, 1 << 20);
    let (_seed, addr) = seed(d);
    let mut c = if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--inh-caps=-ipc_lock",
            "--bounding-set=-ipc_lock",
            "prlimit",
            "--memlock=65536:65536",
        ]);
        c
    } else {
        let mut c = Command::new("prlimit");
        c.arg("--memlock=65536:65536");
        c
    };
    c.arg(ringswarm())
        .args(get_args(
            "t.torrent",
            "dl",
            &addr,
            &["--lock", "--timeout", "30s"],
        ))
        .current_dir(d)
        .env_remove("RUST_LOG");
    let (status, out, err) = run_cmd(d, "get-lock", c);
    let line = error_line(6, status, &out, &err);
    assert!(line.contains("RLIMIT_MEMLOCK is 65536"), "{line}");
    assert!(line.contains("--lock"), "{line}");
    assert!(
        !d.join("dl/blob.bin").exists(),
        "the download started before the check"
    );
}

/// A destination file holding other data: `--no-clobber` refuses naming it (and leaves
/// it); without it, the download says `replacing N of M pieces of FILE` and goes on.
#[test]
fn replacing_other_data_is_said_and_no_clobber_refuses() {
    let dir = scratch("fl-clobber");
    let d = dir.path();
    blob(d, 5 * 65536);
    let (_seed, addr) = seed(d);
    fs::create_dir_all(d.join("dl")).unwrap();
    // Pieces 0 and 1 right, 2 and 3 other data, 4 missing (short file).
    let mut other = pattern(5 * 65536, 7)[..4 * 65536].to_vec();
    other[2 * 65536..].fill(0x5a);
    fs::write(d.join("dl/blob.bin"), &other).unwrap();

    let (status, out, err) = run(
        d,
        "get",
        &get_args(
            "t.torrent",
            "dl",
            &addr,
            &["--no-clobber", "--timeout", "30s"],
        ),
    );
    let line = error_line(1, status, &out, &err);
    assert!(
        line.contains("dl/blob.bin") && line.contains("--no-clobber"),
        "{line}"
    );
    assert_eq!(fs::read(d.join("dl/blob.bin")).unwrap(), other, "touched");

    let (status, out, err) = run(
        d,
        "get",
        &get_args("t.torrent", "dl", &addr, &["--timeout", "30s"]),
    );
    assert!(status.success(), "{status}\n{out}\n{err}");
    assert!(
        err.contains("replacing 2 of 5 pieces of dl/blob.bin"),
        "{err}"
    );
    assert_eq!(
        fs::read(d.join("dl/blob.bin")).unwrap(),
        pattern(5 * 65536, 7)
    );
    // Resuming our own complete download replaces nothing.
    let (status, out, err) = run(
        d,
        "get",
        &get_args(
            "t.torrent",
            "dl",
            &addr,
            &["--timeout", "30s", "--no-clobber"],
        ),
    );
    assert!(status.success(), "{status}\n{out}\n{err}");
    assert!(!err.contains("replacing"), "{err}");
}

/// Two `get`s into one destination at once: the second refuses at once, naming it.
#[test]
fn a_second_get_into_the_same_destination_refuses() {
    let dir = scratch("fl-twice");
    let d = dir.path();
    blob(d, 200_000);
    let mute = Mute::start();
    let peer = mute.addr.to_string();
    let mut first = Guard::spawn("get1", cmd(d, &get_args("t.torrent", "dl", &peer, &[])), d);
    first.wait_line("getting ", TIMEOUT, &[]);
    let (status, out, err) = run(d, "get2", &get_args("t.torrent", "dl", &peer, &[]));
    let line = error_line(1, status, &out, &err);
    assert!(
        line.contains("`dl` is in use by another `ringswarm get`"),
        "{line}"
    );
    let mut pid = String::new();
    fs::File::open(d.join("dl/.ringswarm/get.lock"))
        .unwrap()
        .read_to_string(&mut pid)
        .unwrap();
    assert!(line.contains(&format!("pid {}", pid.trim())), "{line}");
    assert!(
        first.wait_exit(Duration::ZERO).is_none(),
        "the first get must go on"
    );
}

/// `seed` of data that is not the torrent's: verification impossible, exit 5.
#[test]
fn seeding_data_that_does_not_verify_exits_5() {
    let dir = scratch("fl-unverifiable");
    let d = dir.path();
    blob(d, 200_000);
    fs::create_dir_all(d.join("other")).unwrap();
    fs::write(d.join("other/blob.bin"), pattern(200_000, 99)).unwrap();
    let (status, out, err) = run(
        d,
        "seed",
        &["seed", "t.torrent", "other", "--listen", "127.0.0.1:0"],
    );
    let line = error_line(5, status, &out, &err);
    assert!(line.contains("does not match the torrent"), "{line}");
}

/// A peer that accepts and hangs up without reading our handshake (so the kernel resets
/// the connection) is named with that reason.
#[test]
fn a_peer_that_resets_is_named() {
    let dir = scratch("fl-hangup");
    let d = dir.path();
    blob(d, 200_000);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = l.local_addr().unwrap().to_string();
    l.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let hangup = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(60);
        while !flag.load(Ordering::Relaxed) && Instant::now() < until {
            if let Ok((s, _)) = l.accept() {
                drop(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let (status, out, err) = run(
        d,
        "get",
        &get_args("t.torrent", "dl", &peer, &["--stall-timeout", "3s"]),
    );
    stop.store(true, Ordering::Relaxed);
    let _ = hangup.join();
    let line = error_line(3, status, &out, &err);
    assert!(
        line.contains(&format!("{peer} reset the connection")),
        "{line}"
    );
}

/// Every peer tried sent corrupt data and was banned: nothing can verify the download,
/// exit 5 (after --stall-timeout), naming the peer and the ban.
#[test]
fn only_corrupting_peers_exit_5() {
    if !require(
        Path::new(support::PYTHON).exists(),
        "only_corrupting_peers_exit_5",
        "python3",
    ) {
        return;
    }
    let dir = scratch("fl-corrupt");
    let d = dir.path();
    blob(d, 8 * 65536);
    let mut bad = Command::new(support::PYTHON);
    bad.arg(support::script("bad_peer.py"))
        .args([
            "--torrent",
            "t.torrent",
            "--ip",
            "127.0.0.1",
            "--seconds",
            "60",
        ])
        .current_dir(d);
    let mut bad = Guard::spawn("bad_peer", bad, d);
    let addr = bad.wait_listening(TIMEOUT, &[]).to_string();
    let (status, out, err) = run(
        d,
        "get",
        &get_args("t.torrent", "dl", &addr, &["--stall-timeout", "3s"]),
    );
    let line = error_line(5, status, &out, &err);
    assert!(
        line.contains(&format!("{addr} is banned (it sent corrupt data)")),
        "{line}"
    );
}

/// A magnet whose only peer refuses: the metadata phase names the peer and why too (here
/// bounded by --timeout: exit 4).
#[test]
fn a_magnet_whose_peer_refuses_names_it() {
    let dir = scratch("fl-magnet");
    let d = dir.path();
    let peer = closed_port().to_string();
    let magnet =
        format!("magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567&x.pe={peer}");
    let (status, out, err) = run(
        d,
        "get",
        &[
            "get",
            &magnet,
            "dl",
            "--listen",
            "127.0.0.1:0",
            "--cores",
            "1",
            "--timeout",
            "2s",
        ],
    );
    let line = error_line(4, status, &out, &err);
    named_once(&line, &err, &peer, "refused the connection");
}

/// `send` stopped while it still waits for its receivers exits 130; with --receivers 0
/// (serving until stopped) a signal is its normal end: exit 0.
#[test]
fn send_exits_130_only_while_receivers_are_awaited() {
    let dir = scratch("fl-send-sig");
    let d = dir.path();
    fs::write(d.join("blob.bin"), pattern(100_000, 3)).unwrap();
    for (receivers, code) in [("1", 130), ("0", 0)] {
        let mut args = send_args("blob.bin", &[]);
        let at = args.iter().position(|a| *a == "--receivers").unwrap();
        args[at + 1] = receivers;
        let mut g = Guard::spawn("send", cmd(d, &args), d);
        g.wait_line("magnet:", TIMEOUT, &[]);
        let _ = Command::new("kill")
            .args(["-INT", &g.child.id().to_string()])
            .status();
        let Some(status) = g.wait_exit(TIMEOUT) else {
            g.fail(&[], "did not stop on SIGINT")
        };
        let (status, out, err) = finish(&g, status);
        if code == 0 {
            assert!(status.success(), "--receivers 0: {status}\n{out}\n{err}");
        } else {
            let line = error_line(code, status, &out, &err);
            assert!(line.contains("interrupted with 0 of 1 receiver"), "{line}");
        }
    }
}

/// A UDP socket that takes every datagram and answers none: a tracker that never answers.
fn silent_tracker() -> (std::net::UdpSocket, String) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let url = format!("udp://{}", s.local_addr().unwrap());
    (s, url)
}

fn magnet_of(peer: Option<&str>, tracker: Option<&str>) -> String {
    let mut m = "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567".to_owned();
    if let Some(p) = peer {
        m.push_str(&format!("&x.pe={p}"));
    }
    if let Some(t) = tracker {
        m.push_str(&format!("&tr={t}"));
    }
    m
}

fn magnet_get<'a>(magnet: &'a str, dest: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "get",
        magnet,
        dest,
        "--listen",
        "127.0.0.1:0",
        "--cores",
        "1",
    ];
    a.extend_from_slice(extra);
    a
}

/// Sends `sig` to the child of `g`.
fn kill(g: &Guard, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &g.child.id().to_string()])
        .status();
}

/// Waits until `path` exists (bounded).
fn wait_for_file(path: &Path) {
    let until = Instant::now() + TIMEOUT;
    while !path.exists() {
        assert!(Instant::now() < until, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ctrl-C while a magnet's metadata is fetched from a peer that never answers: the fetch
/// looks at the stop flag, so the first SIGINT ends it at once with 130.
#[test]
fn sigint_during_a_magnet_metadata_fetch_exits_130_promptly() {
    let dir = scratch("fl-sig-meta");
    let d = dir.path();
    let mute = Mute::start();
    let magnet = magnet_of(Some(&mute.addr.to_string()), None);
    let mut g = Guard::spawn(
        "get",
        cmd(d, &magnet_get(&magnet, "dl", &["--timeout", "2h"])),
        d,
    );
    // The destination is locked before the fetch starts; then give it time to connect.
    wait_for_file(&d.join("dl/.ringswarm/get.lock"));
    std::thread::sleep(Duration::from_millis(700));
    let sent = Instant::now();
    kill(&g, "-INT");
    let Some(status) = g.wait_exit(Duration::from_secs(20)) else {
        g.fail(&[], "did not stop on SIGINT")
    };
    let took = sent.elapsed();
    let (status, out, err) = finish(&g, status);
    let line = error_line(130, status, &out, &err);
    assert!(
        line.contains("interrupted while fetching the metadata"),
        "{line}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?} to stop");
}

/// SIGHUP stops a download like SIGTERM: exit 143 (as documented in the exit table).
#[test]
fn sighup_exits_143() {
    let dir = scratch("fl-sighup");
    let d = dir.path();
    blob(d, 200_000);
    let mute = Mute::start();
    let peer = mute.addr.to_string();
    let mut g = Guard::spawn("get", cmd(d, &get_args("t.torrent", "dl", &peer, &[])), d);
    g.wait_line("getting ", TIMEOUT, &[]);
    kill(&g, "-HUP");
    let Some(status) = g.wait_exit(TIMEOUT) else {
        g.fail(&[], "did not stop on SIGHUP")
    };
    let (status, out, err) = finish(&g, status);
    let line = error_line(143, status, &out, &err);
    assert!(line.contains("terminated"), "{line}");
}

/// A phase that does not look at the stop flag (asking a silent tracker for peers): a
/// second Ctrl-C exits 130 at once.
#[test]
fn a_second_sigint_exits_at_once() {
    let dir = scratch("fl-sig-twice");
    let d = dir.path();
    let (_tracker, url) = silent_tracker();
    let magnet = magnet_of(None, Some(&url));
    let mut g = Guard::spawn(
        "get",
        cmd(d, &magnet_get(&magnet, "dl", &["--timeout", "2h"])),
        d,
    );
    wait_for_file(&d.join("dl/.ringswarm/get.lock"));
    std::thread::sleep(Duration::from_millis(500));
    kill(&g, "-INT");
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    kill(&g, "-INT");
    let Some(status) = g.wait_exit(Duration::from_secs(20)) else {
        g.fail(&[], "did not stop on the second SIGINT")
    };
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "took {:?}",
        sent.elapsed()
    );
    assert_eq!(status.code(), Some(130), "{status}");
}

/// --stall-timeout bounds a magnet's metadata phase even with a long --timeout: a peer
/// that never answers gives up after the stall (exit 3), not after 2 h.
#[test]
fn the_stall_timeout_bounds_the_metadata_phase() {
    let dir = scratch("fl-meta-stall");
    let d = dir.path();
    let mute = Mute::start();
    let peer = mute.addr.to_string();
    let magnet = magnet_of(Some(&peer), None);
    let started = Instant::now();
    let (status, out, err) = run(
        d,
        "get",
        &magnet_get(&magnet, "dl", &["--timeout", "2h", "--stall-timeout", "2s"]),
    );
    let line = error_line(3, status, &out, &err);
    assert!(line.contains("fetching the metadata"), "{line}");
    assert!(line.contains(&peer), "{line}");
    assert!(started.elapsed() < Duration::from_secs(15), "{line}");
}

/// An expired --timeout while the trackers are asked for a magnet's peers exits 4.
#[test]
fn a_timeout_while_asking_the_trackers_exits_4() {
    let dir = scratch("fl-meta-timeout");
    let d = dir.path();
    let (_tracker, url) = silent_tracker();
    let magnet = magnet_of(None, Some(&url));
    let (status, out, err) = run(d, "get", &magnet_get(&magnet, "dl", &["--timeout", "2s"]));
    let line = error_line(4, status, &out, &err);
    assert!(
        line.contains("no peer to fetch the metadata from"),
        "{line}"
    );
}

/// The destination is locked before a magnet's metadata is fetched: a second `get` into
/// it refuses at once while the first still waits for the metadata.
#[test]
fn a_second_magnet_get_refuses_before_fetching() {
    let dir = scratch("fl-meta-twice");
    let d = dir.path();
    let mute = Mute::start();
    let magnet = magnet_of(Some(&mute.addr.to_string()), None);
    let mut first = Guard::spawn("get1", cmd(d, &magnet_get(&magnet, "dl", &[])), d);
    wait_for_file(&d.join("dl/.ringswarm/get.lock"));
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (status, out, err) = run(d, "get2", &magnet_get(&magnet, "dl", &[]));
    let line = error_line(1, status, &out, &err);
    assert!(
        line.contains("`dl` is in use by another `ringswarm get`"),
        "{line}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        first.wait_exit(Duration::ZERO).is_none(),
        "the first get must go on"
    );
}

/// `c`, run as an unprivileged user when we are root (root reads and writes anything), so
/// that file modes deny what they say.
fn unprivileged(d: &Path, args: &[&str]) -> Option<Command> {
    if !is_root() {
        return Some(cmd(d, args));
    }
    if !require(
        on_path("setpriv"),
        "unprivileged",
        "setpriv (util-linux), to drop root",
    ) {
        return None;
    }
    // The user must reach the scratch directory.
    let mut p = d.to_path_buf();
    use std::os::unix::fs::PermissionsExt;
    while p.starts_with(env!("CARGO_TARGET_TMPDIR")) {
        let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o755));
        if !p.pop() {
            break;
        }
    }
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        ringswarm(),
    ])
    .args(args)
    .current_dir(d)
    .env_remove("RUST_LOG");
    Some(c)
}

/// Permission denied on the .torrent is bad input (exit 1), not a disk failure.
#[test]
fn an_unreadable_torrent_exits_1() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("fl-unreadable");
    let d = dir.path();
    blob(d, 100_000);
    fs::set_permissions(d.join("t.torrent"), fs::Permissions::from_mode(0o000)).unwrap();
    let peer = closed_port().to_string();
    let Some(c) = unprivileged(d, &get_args("t.torrent", "dl", &peer, &[])) else {
        return;
    };
    let (status, out, err) = run_cmd(d, "get", c);
    let line = error_line(1, status, &out, &err);
    assert!(
        line.contains("reading torrent `t.torrent`") && line.contains("Permission denied"),
        "{line}"
    );
}

/// Permission denied on the destination is the destination's I/O: exit 6.
#[test]
fn a_destination_without_permission_exits_6() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("fl-denied");
    let d = dir.path();
    blob(d, 100_000);
    fs::set_permissions(d.join("t.torrent"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::create_dir(d.join("ro")).unwrap();
    fs::set_permissions(d.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    let peer = closed_port().to_string();
    let Some(c) = unprivileged(d, &get_args("t.torrent", "ro/dl", &peer, &[])) else {
        return;
    };
    let (status, out, err) = run_cmd(d, "get", c);
    let line = error_line(6, status, &out, &err);
    assert!(
        line.contains("creating destination directory `ro/dl`")
            && line.contains("Permission denied"),
        "{line}"
    );
}
