//! Whole-system tests on a small emulated fleet: network namespaces built by
//! `scripts/netns-fleet.sh` (an origin, hosts in racks, shaped host links and rack uplinks,
//! addresses in 198.18.0.0/15 only), with the real `ringswarm` binary in them.
//!
//! - `fleet_every_host_gets_the_verified_blob`: `ringswarm tracker` and `ringswarm seed` on
//!   the origin, `ringswarm get` on every host at once with peers from the tracker only.
//!   Every host's copy has the source's SHA-256, and each rack's uplink carried the blob
//!   into the rack about once (the veth byte counters, read before and after).
//! - `fleet_survives_a_host_killed_mid_transfer`: one host's `get` is SIGKILLed with part of
//!   the blob verified; the others still complete; the same command run again resumes
//!   (`resuming:`) and completes.
//! - `fleet_bans_a_corrupting_peer`: `scripts/bad_peer.py` on a spare host claims every
//!   piece and answers every request with garbage; every host still gets the right bytes,
//!   counts hash failures and bans it.
//!
//! Each test builds its own fleet under its own `RSF_PREFIX` (`rsft<N>-<pid>-`), so the tests
//! may run in parallel (threads or nextest processes), beside another run of this file and
//! beside `perf/fleet` (prefix `rsf-`): every fleet lives in its own namespaces, so they all
//! reuse the same 198.18 addresses without meeting. A fleet is torn down by a drop guard
//! (`netns-fleet.sh down`, which also kills whatever still runs inside), on panic too; a
//! fleet left behind by a killed run of this file is removed by the next one.
//!
//! Network namespaces need root: without it every test prints `skipped: ...` and returns
//! (CI runs as root). A missing tool (`ip netns`, `tc`, python3, `sha256sum`) also skips,
//! unless `CI=true`, which makes it a failure. Every wait has a deadline within the test's
//! [`TEST_LIMIT`]; nothing sleeps to synchronise.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

mod support;
use support::*;

const MIB: u64 = 1 << 20;
/// Every wait of one test ends within this budget (start-up, transfers, checks).
const TEST_LIMIT: Duration = Duration::from_secs(90);
/// The system interpreter (`scripts/bad_peer.py` needs only its standard library).
/// `netns-fleet.sh` puts the origin here.
const ORIGIN_IP: &str = "198.18.0.1";
const TRACKER_PORT: u16 = 6969;
const PEER_PORT: u16 = 6881;
const HOST_RATE: &str = "200mbit";
const UPLINK_RATE: &str = "200mbit";
/// The blob: deterministic pseudo-random bytes, 64 pieces of 256 KiB.
const BLOB_LEN: u64 = 16 * MIB;
const PIECE_SIZE: &str = "256K";
/// How often `get` prints a plain progress line (stderr), so a test can watch it.
const PROGRESS_EVERY: &str = "200ms";

// ---------------------------------------------------------------------------------------
// Prerequisites: skip with a message, or fail under CI.

/// True when a fleet can be built here; otherwise says why (skip) or panics (CI).
fn fleet_possible(test: &str) -> bool {
    if !is_root() {
        // Not a missing tool: network namespaces and tc need root (CI runs as root).
        skip_note(&format!(
            "skipped: {test}: needs root (network namespaces and tc for the emulated fleet)"
        ));
        return false;
    }
    require(
        runs_ok("ip", &["netns", "list"]),
        test,
        "`ip netns` (iproute2)",
    ) && require(on_path("tc"), test, "tc (iproute2)")
        && require(Path::new(PYTHON).is_file(), test, PYTHON)
        && require(on_path("sha256sum"), test, "sha256sum (coreutils)")
}

// ---------------------------------------------------------------------------------------
// Paths, data, checksums.

/// A directory on a real disk (O_DIRECT is refused by tmpfs; /tmp may be one). Kept, and
/// its path printed, when the test fails (or with `FLEET_TEST_KEEP=1`), for the logs in it.
struct Scratch(Option<tempfile::TempDir>);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(&format!("rs-fleet-{tag}-"))
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("scratch dir");
        Scratch(Some(dir))
    }

    fn path(&self) -> &Path {
        self.0.as_ref().expect("scratch dir").path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if thread::panicking() || std::env::var_os("FLEET_TEST_KEEP").is_some() {
            if let Some(d) = self.0.take() {
                eprintln!("logs and data kept in {}", d.keep().display());
            }
        }
    }
}

fn sha256(path: &Path) -> String {
    let mut c = Command::new("sha256sum");
    c.arg(path);
    let out = capture(c, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    out.split_whitespace().next().unwrap_or_default().to_owned()
}

/// The time left until `deadline` (zero once it passed).
fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

// ---------------------------------------------------------------------------------------
// The fleet.

/// Link byte counters from `netns-fleet.sh counters`: name -> (first, second) column.
type Counters = HashMap<String, (u64, u64)>;

/// One emulated fleet, torn down (`netns-fleet.sh down`) on drop.
struct Fleet {
    prefix: String,
    /// (node, ip, rack) from `netns-fleet.sh hosts`, the origin first.
    nodes: Vec<(String, String, String)>,
}

impl Fleet {
    /// Brings up an origin and `hosts` hosts in `racks` racks under the prefix
    /// `<tag>-<pid>-`, after removing fleets of dead earlier runs with the same tag.
    fn up(tag: &str, hosts: u32, racks: u32) -> Fleet {
        remove_stale_fleets(tag);
        let mut fleet = Fleet {
            prefix: format!("{tag}-{}-", std::process::id()),
            nodes: Vec::new(),
        };
        // The guard exists before `up`: a half-built fleet is torn down too.
        let (h, r) = (hosts.to_string(), racks.to_string());
        fleet.run(&[
            "up",
            "--hosts",
            &h,
            "--racks",
            &r,
            "--host-rate",
            HOST_RATE,
            "--uplink-rate",
            UPLINK_RATE,
        ]);
        for line in fleet.run(&["hosts"]).lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [node, _netns, ip, rack] = f[..] {
                fleet
                    .nodes
                    .push((node.to_owned(), ip.to_owned(), rack.to_owned()));
            }
        }
        assert_eq!(
            fleet.nodes.len(),
            hosts as usize + 1,
            "netns-fleet.sh hosts: {:?}",
            fleet.nodes
        );
        fleet
    }

    fn script_cmd(prefix: &str) -> Command {
        let mut c = Command::new("bash");
        c.arg(script("netns-fleet.sh")).env("RSF_PREFIX", prefix);
        c
    }

    fn down_cmd(prefix: &str) -> Command {
        let mut c = Fleet::script_cmd(prefix);
        c.arg("down");
        c
    }

    /// Runs a `netns-fleet.sh` subcommand; panics on failure; returns its stdout.
    fn run(&self, args: &[&str]) -> String {
        let mut c = Fleet::script_cmd(&self.prefix);
        c.args(args);
        capture(c, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("netns-fleet.sh {}: {e}", args.join(" ")))
    }

    /// `prog` run inside `node`'s namespace (`netns-fleet.sh exec`, which execs, so the
    /// child's pid is the program's own).
    fn exec(&self, node: &str, prog: &str) -> Command {
        let mut c = Fleet::script_cmd(&self.prefix);
        c.args(["exec", node, prog]);
        c
    }

    fn ip(&self, node: &str) -> &str {
        self.nodes
            .iter()
            .find(|(n, _, _)| n == node)
            .map(|(_, ip, _)| ip.as_str())
            .unwrap_or_else(|| panic!("no node {node} in {:?}", self.nodes))
    }

    fn rack(&self, node: &str) -> &str {
        self.nodes
            .iter()
            .find(|(n, _, _)| n == node)
            .map(|(_, _, rack)| rack.as_str())
            .unwrap_or_else(|| panic!("no node {node} in {:?}", self.nodes))
    }

    fn counters(&self) -> Counters {
        self.run(&["counters"])
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                match f[..] {
                    [name, a, b] => Some((name.to_owned(), (a.parse().ok()?, b.parse().ok()?))),
                    _ => None,
                }
            })
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Err(e) = capture(Fleet::down_cmd(&self.prefix), Duration::from_secs(60)) {
            eprintln!("tearing down fleet {}: {e}", self.prefix);
        }
    }
}

/// Tears down fleets named `<tag>-<pid>-*` whose process is gone (a run killed before its
/// drop guards ran). Fleets of live processes, this one's included, are left alone.
fn remove_stale_fleets(tag: &str) {
    let Ok(list) = capture(
        {
            let mut c = Command::new("ip");
            c.args(["netns", "list"]);
            c
        },
        Duration::from_secs(10),
    ) else {
        return;
    };
    let mut stale: Vec<String> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|ns| ns.strip_prefix(&format!("{tag}-")))
        .filter_map(|rest| rest.split_once('-').map(|(pid, _)| pid.to_owned()))
        .filter(|pid| pid.parse::<u32>().is_ok())
        .filter(|pid| !Path::new("/proc").join(pid).exists())
        .collect();
    stale.sort();
    stale.dedup();
    for pid in stale {
        let prefix = format!("{tag}-{pid}-");
        eprintln!("removing the fleet {prefix} left behind by a dead run");
        let _ = capture(Fleet::down_cmd(&prefix), Duration::from_secs(60));
    }
}

// ---------------------------------------------------------------------------------------
// Child processes.

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped. Its stdout and
/// stderr lines arrive on channels and are also kept in files for failure reports.
struct Proc {
    name: String,
    child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
    stdout_log: PathBuf,
    stderr_log: PathBuf,
}

#[derive(Clone, Copy)]
enum Stream {
    Out,
    Err,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, logdir: &Path) -> Proc {
        let stdout_log = logdir.join(format!("{name}.stdout"));
        let stderr_log = logdir.join(format!("{name}.stderr"));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let pump = |r: Box<dyn Read + Send>, path: PathBuf| {
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                let mut log = fs::File::create(&path).ok();
                for line in BufReader::new(r).lines() {
                    let Ok(line) = line else { break };
                    if let Some(f) = log.as_mut() {
                        use std::io::Write;
                        let _ = writeln!(f, "{line}");
                    }
                    // If the receiver is gone, keep draining so the child never blocks.
                    let _ = tx.send(line);
                }
            });
            rx
        };
        let out = pump(Box::new(child.stdout.take().unwrap()), stdout_log.clone());
        let err = pump(Box::new(child.stderr.take().unwrap()), stderr_log.clone());
        Proc {
            name: name.to_owned(),
            child,
            out,
            err,
            stdout_log,
            stderr_log,
        }
    }

    /// Waits for a line on `stream` for which `pick` gives Some, and returns that. Lines
    /// before it are consumed. Panics (with logs) at `deadline` or when the stream ends.
    fn wait_for<T>(
        &mut self,
        stream: Stream,
        what: &str,
        deadline: Instant,
        others: &[&Proc],
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> T {
        loop {
            let rx = match stream {
                Stream::Out => &self.out,
                Stream::Err => &self.err,
            };
            let wait = left(deadline);
            if wait.is_zero() {
                self.fail(others, &format!("no {what} before the deadline"));
            }
            match rx.recv_timeout(wait.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(v) = pick(&line) {
                        return v;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let st = self.wait_exit(Instant::now() + Duration::from_secs(5));
                    self.fail(others, &format!("ended (exit: {st:?}) before {what}"));
                }
            }
        }
    }

    /// Waits for the process to exit until `deadline`; None if it still runs.
    fn wait_exit(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => return Some(st),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                _ => return None,
            }
        }
    }

    /// Waits for a successful exit until `deadline`; panics (with logs) otherwise.
    fn expect_success(&mut self, deadline: Instant, others: &[&Proc]) {
        match self.wait_exit(deadline) {
            Some(st) if st.success() => {}
            Some(st) => self.fail(others, &format!("failed: {st}")),
            None => self.fail(others, "did not finish before the deadline"),
        }
    }

    /// After the exit: the last JSON object on stdout (`--json` summary).
    fn json_summary(&mut self, deadline: Instant) -> serde_json::Value {
        let mut last = None;
        loop {
            match self
                .out
                .recv_timeout(left(deadline).max(Duration::from_millis(1)))
            {
                Ok(line) => {
                    if line.trim_start().starts_with('{') {
                        last = Some(line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.fail(&[], "stdout still open after the deadline")
                }
            }
        }
        let Some(line) = last else {
            self.fail(&[], "no JSON summary on stdout")
        };
        serde_json::from_str(&line)
            .unwrap_or_else(|e| self.fail(&[], &format!("bad JSON summary {line:?}: {e}")))
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn fail(&self, others: &[&Proc], what: &str) -> ! {
        let mut all = vec![self];
        all.extend_from_slice(others);
        dump_logs(&all);
        panic!("{}: {what}", self.name);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        self.signal("-TERM");
        if self
            .wait_exit(Instant::now() + Duration::from_secs(5))
            .is_none()
        {
            let _ = self.child.kill();
            let _ = self.wait_exit(Instant::now() + Duration::from_secs(5));
        }
    }
}

fn dump_logs(procs: &[&Proc]) {
    for p in procs {
        eprintln!(
            "----- {} stdout -----\n{}",
            p.name,
            read_tail(&p.stdout_log, 3000)
        );
        eprintln!(
            "----- {} stderr -----\n{}",
            p.name,
            read_tail(&p.stderr_log, 5000)
        );
    }
}

/// The percentage in a plain progress line of `get`
/// (`get NAME: 3.00 MiB / 16.00 MiB (18.8%), ...`).
fn progress_percent(line: &str) -> Option<f64> {
    if !line.starts_with("get ") || !line.contains(" / ") {
        return None;
    }
    let start = line.find(" (")? + 2;
    let end = start + line[start..].find("%)")?;
    line[start..end].parse().ok()
}

fn json_u64(v: &serde_json::Value, key: &str) -> u64 {
    v.get(key)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("JSON summary without `{key}`: {v}"))
}

fn json_f64(v: &serde_json::Value, key: &str) -> f64 {
    v.get(key)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or_else(|| panic!("JSON summary without `{key}`: {v}"))
}

// ---------------------------------------------------------------------------------------
// A swarm: the fleet, a blob and its torrent, the tracker and the seeder on the origin.

struct Swarm {
    // Dropped in this order: the processes, then the fleet, then the files.
    seed: Proc,
    tracker: Proc,
    fleet: Fleet,
    scratch: Scratch,
    torrent: PathBuf,
    topology: PathBuf,
    sha256: String,
    deadline: Instant,
}

impl Swarm {
    /// Fleet `tag` with `hosts` hosts in `racks` racks; `ringswarm tracker` and `ringswarm
    /// seed` running on the origin, the seed listening.
    fn start(tag: &str, hosts: u32, racks: u32) -> Swarm {
        let deadline = Instant::now() + TEST_LIMIT;
        let scratch = Scratch::new(tag);
        let dir = scratch.path().to_path_buf();
        let fleet = Fleet::up(tag, hosts, racks);

        let src = dir.join("src");
        fs::create_dir_all(&src).unwrap();
        let blob = src.join("blob.bin");
        fs::write(
            &blob,
            pattern(usize::try_from(BLOB_LEN).expect("blob fits in memory"), 4),
        )
        .unwrap();
        let sha256 = sha256(&blob);
        let topology = dir.join("topology.toml");
        fs::write(&topology, fleet.run(&["topology"])).unwrap();

        let torrent = dir.join("blob.torrent");
        let mut c = Command::new(ringswarm());
        c.arg("create")
            .arg(&blob)
            .arg("-o")
            .arg(&torrent)
            .args(["--piece-size", PIECE_SIZE, "--tracker"])
            .arg(format!("udp://{ORIGIN_IP}:{TRACKER_PORT}/announce"));
        capture(c, left(deadline)).unwrap_or_else(|e| panic!("ringswarm create: {e}"));

        let mut c = fleet.exec("origin", ringswarm());
        c.arg("tracker")
            .args(["--listen", &format!("{ORIGIN_IP}:{TRACKER_PORT}")])
            .arg("--topology")
            .arg(&topology)
            .args(["--cores", "1"]);
        let mut tracker = Proc::spawn("tracker", c, &dir);
        let url = tracker.wait_for(Stream::Out, "`tracker listening on`", deadline, &[], |l| {
            l.strip_prefix("tracker listening on ")
                .map(|u| u.trim().to_owned())
        });
        assert_eq!(url, format!("udp://{ORIGIN_IP}:{TRACKER_PORT}"));

        let mut c = fleet.exec("origin", ringswarm());
        c.arg("seed")
            .arg(&torrent)
            .arg(&src)
            .args(["--listen", &format!("{ORIGIN_IP}:{PEER_PORT}")])
            .arg("--topology")
            .arg(&topology)
            .args(["--cores", "1"]);
        let mut seed = Proc::spawn("seed", c, &dir);
        let addr = seed.wait_for(Stream::Out, "`listening on`", deadline, &[&tracker], |l| {
            l.strip_prefix("listening on ").map(|a| a.trim().to_owned())
        });
        assert_eq!(addr, format!("{ORIGIN_IP}:{PEER_PORT}"));

        Swarm {
            seed,
            tracker,
            fleet,
            scratch,
            torrent,
            topology,
            sha256,
            deadline,
        }
    }

    fn dir(&self) -> &Path {
        self.scratch.path()
    }

    fn dest(&self, host: &str) -> PathBuf {
        self.dir().join("dst").join(host)
    }

    /// `ringswarm --json get T DEST --listen 0.0.0.0:PORT --topology FILE --cores 1 EXTRA`
    /// on `host`; peers from the torrent's tracker (plus any `--peer` in `extra`).
    fn get_cmd(&self, host: &str, extra: &[&str]) -> Command {
        let mut c = self.fleet.exec(host, ringswarm());
        c.args(["--json", "get"])
            .arg(&self.torrent)
            .arg(self.dest(host))
            .args(["--listen", &format!("0.0.0.0:{PEER_PORT}")])
            .arg("--topology")
            .arg(&self.topology)
            .args(["--cores", "1"])
            .args(extra)
            .env("RINGSWARM_PROGRESS_INTERVAL", PROGRESS_EVERY);
        c
    }

    fn spawn_get(&self, host: &str, extra: &[&str]) -> Proc {
        Proc::spawn(
            &format!("get-{host}"),
            self.get_cmd(host, extra),
            self.dir(),
        )
    }

    /// Panics (with logs) unless `host`'s copy has the source's SHA-256.
    fn assert_copy(&self, host: &str, logs: &[&Proc]) {
        let file = self.dest(host).join("blob.bin");
        let len = fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let got = sha256(&file);
        if len != BLOB_LEN || got != self.sha256 {
            dump_logs(logs);
            panic!(
                "{host}: {} has {len} bytes with sha256 {got}, the source {BLOB_LEN} bytes with {}",
                file.display(),
                self.sha256
            );
        }
    }

    /// Checks a `get` summary (ok, the blob's size) and prints one line about it.
    fn check_summary(&self, host: &str, s: &serde_json::Value, logs: &[&Proc]) {
        if s.get("ok") != Some(&serde_json::Value::Bool(true))
            || s.get("bytes").and_then(serde_json::Value::as_u64) != Some(BLOB_LEN)
        {
            dump_logs(logs);
            panic!("{host}: unexpected summary {s}");
        }
        eprintln!(
            "{host} (rack {}): {:.1} s, got {:.1} MiB ({:.1} MiB from outside the rack), \
             sent {:.1} MiB, resumed {:.1} MiB, {} hash failures, {} banned",
            self.fleet.rack(host),
            json_f64(s, "seconds"),
            json_u64(s, "downloaded_bytes") as f64 / MIB as f64,
            json_u64(s, "downloaded_outside_rack_bytes") as f64 / MIB as f64,
            json_u64(s, "uploaded_bytes") as f64 / MIB as f64,
            json_u64(s, "resumed_bytes") as f64 / MIB as f64,
            json_u64(s, "hash_failures"),
            json_u64(s, "banned_peers"),
        );
    }
}

// ---------------------------------------------------------------------------------------
// The tests.

/// Origin + 4 hosts in 2 racks, peers only from the tracker: every host ends with the
/// verified blob, and each rack's uplink carries it in about once.
#[test]
fn fleet_every_host_gets_the_verified_blob() {
    let t = "fleet_every_host_gets_the_verified_blob";
    if !fleet_possible(t) {
        return;
    }
    let started = Instant::now();
    let swarm = Swarm::start("rsft1", 4, 2);
    let deadline = swarm.deadline;
    let hosts = ["h1", "h2", "h3", "h4"];
    let before = swarm.fleet.counters();

    let mut gets: Vec<Proc> = hosts
        .iter()
        .map(|h| swarm.spawn_get(h, &["--seed-for", "20s"]))
        .collect();
    for i in 0..gets.len() {
        let (g, rest) = gets.split_at_mut(i + 1);
        let others: Vec<&Proc> = rest.iter().chain([&swarm.seed, &swarm.tracker]).collect();
        g[i].expect_success(deadline, &others);
    }
    let after = swarm.fleet.counters();
    let summaries: Vec<_> = gets.iter_mut().map(|g| g.json_summary(deadline)).collect();
    let all: Vec<&Proc> = gets.iter().chain([&swarm.seed]).collect();
    for (h, s) in hosts.iter().zip(&summaries) {
        swarm.check_summary(h, s, &all);
        assert_eq!(json_u64(s, "hash_failures"), 0, "{h}: {s}");
        assert_eq!(json_u64(s, "resumed_bytes"), 0, "{h}: {s}");
    }
    for h in hosts {
        swarm.assert_copy(h, &all);
    }

    // Each piece should enter a rack about once (the engine aims at 1.25 x the blob); the
    // slack covers TCP/IP and Ethernet overhead, tracker and handshake traffic.
    let limit = BLOB_LEN as f64 * 1.5 + 2.0 * MIB as f64;
    let mut over = Vec::new();
    for (r, rack) in ["rack1", "rack2"].into_iter().enumerate() {
        let inbound = after[rack].1 - before[rack].1;
        let outbound = after[rack].0 - before[rack].0;
        // What the rack's hosts say they received from outside it (payload only).
        let told: u64 = hosts
            .iter()
            .zip(&summaries)
            .filter(|(h, _)| swarm.fleet.rack(h) == (r + 1).to_string())
            .map(|(_, s)| json_u64(s, "downloaded_outside_rack_bytes"))
            .sum();
        eprintln!(
            "{rack}: {:.2} MiB in over its uplink = {:.2} x the blob (payload per the hosts' \
             summaries: {:.2} MiB; {:.2} MiB out); limit {:.2} MiB",
            inbound as f64 / MIB as f64,
            inbound as f64 / BLOB_LEN as f64,
            told as f64 / MIB as f64,
            outbound as f64 / MIB as f64,
            limit / MIB as f64
        );
        // No host of the rack had the blob: at least one copy must have come in. (Fewer
        // bytes would mean the counters are not what this test thinks they are.)
        assert!(
            inbound >= BLOB_LEN,
            "{rack}: only {inbound} bytes in over the uplink, less than the blob: counters? {after:?}"
        );
        if inbound as f64 > limit {
            over.push(format!(
                "{rack} took in {inbound} bytes = {:.2} x the blob",
                inbound as f64 / BLOB_LEN as f64
            ));
        }
    }
    let origin_up = after["origin"].0 - before["origin"].0;
    eprintln!(
        "origin sent {:.2} MiB = {:.2} x the blob; test took {:.1} s",
        origin_up as f64 / MIB as f64,
        origin_up as f64 / BLOB_LEN as f64,
        started.elapsed().as_secs_f64()
    );
    if !over.is_empty() {
        dump_logs(&all);
        panic!("rack uplinks carried too much: {}", over.join("; "));
    }
}

/// One host's `get` is SIGKILLed with part of the blob verified: the others complete, and
/// the same command run again resumes and completes.
#[test]
fn fleet_survives_a_host_killed_mid_transfer() {
    let t = "fleet_survives_a_host_killed_mid_transfer";
    if !fleet_possible(t) {
        return;
    }
    let started = Instant::now();
    let swarm = Swarm::start("rsft2", 4, 2);
    let deadline = swarm.deadline;
    let hosts = ["h1", "h2", "h3", "h4"];
    let victim = "h2";
    // 4 MiB/s per host: the blob takes at least 4 s, so there is time to kill mid-way.
    let args = ["--max-download-rate", "4M", "--seed-for", "10s"];

    let mut gets: Vec<Proc> = hosts.iter().map(|h| swarm.spawn_get(h, &args)).collect();
    let v = hosts.iter().position(|h| *h == victim).unwrap();

    // Kill the victim once its progress shows part, but not all, of the blob verified.
    let pct = gets[v].wait_for(
        Stream::Err,
        "progress line between 25 % and 75 %",
        deadline,
        &[],
        |l| progress_percent(l).filter(|p| (25.0..75.0).contains(p)),
    );
    gets[v].child.kill().expect("SIGKILL");
    let st = gets[v].wait_exit(deadline);
    eprintln!(
        "{victim}: SIGKILLed at {pct:.1} % verified ({:.1} s into the test), exit {st:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(st.is_some(), "{victim} survived SIGKILL");

    // The others complete (verified and fsync'd: the `done:` line) without it.
    for (i, h) in hosts.iter().enumerate() {
        if i == v {
            continue;
        }
        let secs = gets[i].wait_for(Stream::Err, "`done:`", deadline, &[&swarm.seed], |l| {
            l.starts_with("done: ").then(|| l.to_owned())
        });
        eprintln!("{h}: {secs}");
        swarm.assert_copy(h, &[&gets[i]]);
    }

    // The same command again, into the same destination: it resumes.
    let old = std::mem::replace(&mut gets[v], {
        let c = swarm.get_cmd(victim, &args);
        Proc::spawn(&format!("get-{victim}-again"), c, swarm.dir())
    });
    drop(old);
    let resuming = gets[v].wait_for(Stream::Err, "`resuming:`", deadline, &[&swarm.seed], |l| {
        l.starts_with("resuming: ").then(|| l.to_owned())
    });
    eprintln!("{victim} (restarted): {resuming}");

    for i in 0..gets.len() {
        let (g, rest) = gets.split_at_mut(i + 1);
        let others: Vec<&Proc> = rest.iter().chain([&swarm.seed]).collect();
        g[i].expect_success(deadline, &others);
    }
    let summaries: Vec<_> = gets.iter_mut().map(|g| g.json_summary(deadline)).collect();
    let all: Vec<&Proc> = gets.iter().chain([&swarm.seed]).collect();
    for (h, s) in hosts.iter().zip(&summaries) {
        swarm.check_summary(h, s, &all);
        assert_eq!(json_u64(s, "hash_failures"), 0, "{h}: {s}");
    }
    for h in hosts {
        swarm.assert_copy(h, &all);
    }
    let s = &summaries[v];
    let (resumed, fetched) = (
        json_u64(s, "resumed_bytes"),
        json_u64(s, "downloaded_bytes"),
    );
    assert!(
        resumed > 0 && resumed < BLOB_LEN,
        "{victim}: resumed_bytes {resumed} should be part of the blob: {s}"
    );
    assert!(
        fetched < BLOB_LEN && fetched + resumed >= BLOB_LEN,
        "{victim}: after resuming {resumed} bytes it fetched {fetched}: {s}"
    );
    eprintln!("test took {:.1} s", started.elapsed().as_secs_f64());
}

/// A peer that claims every piece and sends garbage for each request: every host still
/// ends with the right bytes, counts hash failures, and bans it.
#[test]
fn fleet_bans_a_corrupting_peer() {
    let t = "fleet_bans_a_corrupting_peer";
    if !fleet_possible(t) {
        return;
    }
    let started = Instant::now();
    // h1-h3 in rack 1, h4-h5 in rack 2; the corrupting peer takes h3, so it is a rack
    // peer of h1 and h2 (asked first) and a remote one for h4 and h5.
    let swarm = Swarm::start("rsft3", 5, 2);
    let deadline = swarm.deadline;
    let bad_node = "h3";
    let hosts = ["h1", "h2", "h4", "h5"];

    let bad_ip = swarm.fleet.ip(bad_node).to_owned();
    let mut c = swarm.fleet.exec(bad_node, PYTHON);
    c.arg(script("bad_peer.py"))
        .arg("--torrent")
        .arg(&swarm.torrent)
        .args(["--ip", &bad_ip, "--port", &PEER_PORT.to_string()])
        .args(["--seconds", &TEST_LIMIT.as_secs().to_string()]);
    let mut bad = Proc::spawn("bad-peer", c, swarm.dir());
    let bad_addr = bad.wait_for(Stream::Out, "`listening on`", deadline, &[], |l| {
        l.strip_prefix("listening on ").map(|a| a.trim().to_owned())
    });
    assert_eq!(bad_addr, format!("{bad_ip}:{PEER_PORT}"));

    let args = ["--peer", &bad_addr, "--seed-for", "5s"];
    let mut gets: Vec<Proc> = hosts.iter().map(|h| swarm.spawn_get(h, &args)).collect();
    for i in 0..gets.len() {
        let (g, rest) = gets.split_at_mut(i + 1);
        let others: Vec<&Proc> = rest.iter().chain([&swarm.seed, &bad]).collect();
        g[i].expect_success(deadline, &others);
    }
    // Stop the corrupting peer; it prints what it did.
    bad.signal("-TERM");
    let bad_said = bad.wait_for(
        Stream::Out,
        "`bad_peer:` summary line",
        deadline,
        &[],
        |l| l.starts_with("bad_peer: ").then(|| l.to_owned()),
    );
    eprintln!("{bad_said}");

    let summaries: Vec<_> = gets.iter_mut().map(|g| g.json_summary(deadline)).collect();
    let all: Vec<&Proc> = gets.iter().chain([&swarm.seed, &bad]).collect();
    let (mut failures, mut banned) = (Vec::new(), Vec::new());
    for (h, s) in hosts.iter().zip(&summaries) {
        swarm.check_summary(h, s, &all);
        failures.push(json_u64(s, "hash_failures"));
        banned.push(json_u64(s, "banned_peers"));
    }
    for h in hosts {
        swarm.assert_copy(h, &all);
    }
    if !failures.iter().any(|&f| f >= 1) || !banned.iter().any(|&b| b >= 1) {
        dump_logs(&all);
        panic!(
            "the corrupting peer went unnoticed: hash_failures {failures:?}, banned_peers {banned:?} \
             (hosts {hosts:?})"
        );
    }
    eprintln!("test took {:.1} s", started.elapsed().as_secs_f64());
}
