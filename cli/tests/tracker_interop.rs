//! Interop through our UDP tracker (BEP 15), `ringswarm tracker`, on loopback.
//!
//! Every test starts the real `ringswarm tracker --listen 127.0.0.1:0` and reads its address
//! from its `tracker listening on udp://ADDR` line. Peers learn about each other only
//! through it (no `--peer` anywhere), and the test itself checks the tracker's view with
//! its own small BEP 15 client (connect, scrape, announce over `std::net::UdpSocket`):
//!
//! - libtorrent seed + libtorrent leecher (`scripts/lt_peer.py`): the leecher finds the seed
//!   through the tracker and completes; scrape counts the seed and the completed download,
//!   and the leecher's `stopped` removes it again.
//! - Transmission 3 (`scripts/tr_peer.py announce-check`) announces over UDP and its RPC
//!   `trackerStats` shows a successful announce that returned the libtorrent seed; our
//!   tracker then lists Transmission's peer address. (Transmission never dials peers in
//!   127.0.0.0/8, so no download is asked of it here.)
//! - `ringswarm seed --tracker` → libtorrent leecher; libtorrent seed → `ringswarm get
//!   --tracker` (no `--peer`); libtorrent seed → `ringswarm get` using only the .torrent's
//!   announce URL.
//!
//! Every received file is compared byte for byte with its source. When a tool is missing a
//! test prints `skipped: ...` on stderr and returns; with `CI=true` it fails instead
//! (`scripts/test.sh` installs everything). Every child process sits in a guard that kills
//! it on drop, every wait has a deadline, and every test stays within [`TEST_LIMIT`].

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

mod support;
use support::*;

use ringswarm_engine::metainfo::Metainfo;

const MIB: usize = 1 << 20;
/// Upper bound for one whole test (child start-up, transfers, checks; not the cleanup).
const TEST_LIMIT: Duration = Duration::from_secs(60);

/// Small odd-sized files (pieces straddle file ends): the point is finding peers, not speed.
const FILES: &[(&str, usize)] = &[
    ("blob/a.bin", 3 * MIB + 12_345),
    ("blob/sub/b.bin", 4_097),
    ("blob/c.bin", 777_777),
];

// ---------------------------------------------------------------------------------------
// Deadlines (prerequisites, paths and data are in `support`).

/// The whole test's time budget: every wait takes the smaller of its own limit and what is
/// left of the budget.
struct Budget(Instant);

impl Budget {
    fn start() -> Budget {
        Budget(Instant::now() + TEST_LIMIT)
    }

    fn cap(&self, limit: Duration) -> Duration {
        limit.min(self.0.saturating_duration_since(Instant::now()))
    }
}

// ---------------------------------------------------------------------------------------
// Child processes.

/// The last stdout line of `g` that parses as a JSON object.
fn last_json(g: &Guard) -> serde_json::Value {
    g.stdout()
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| g.fail(&[], "no JSON summary line on stdout"))
}

// ---------------------------------------------------------------------------------------
// The tracker and a BEP 15 client to look at it.

/// `ringswarm tracker` on 127.0.0.1 (any free port), one worker.
struct Tracker {
    guard: Guard,
    addr: SocketAddr,
}

impl Tracker {
    fn start(logdir: &Path, budget: &Budget) -> Tracker {
        let mut c = Command::new(ringswarm());
        c.args(["tracker", "--listen", "127.0.0.1:0", "--cores", "1"]);
        let mut guard = Guard::spawn("tracker", c, logdir);
        // `tracker listening on udp://ADDR` (cli/src/tracker.rs).
        let rest = guard.wait_line(
            "tracker listening on udp://",
            budget.cap(Duration::from_secs(20)),
            &[],
        );
        let addr: SocketAddr = rest
            .parse()
            .unwrap_or_else(|e| panic!("tracker: bad address {rest:?}: {e}"));
        assert!(addr.ip().is_loopback(), "tracker listens on {addr}");
        Tracker { guard, addr }
    }

    fn url(&self) -> String {
        format!("udp://{}/announce", self.addr)
    }
}

/// Seeders, completed, leechers of one torrent, as a BEP 15 scrape reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counts {
    seeders: u32,
    completed: u32,
    leechers: u32,
}

const BEP15_MAGIC: u64 = 0x0417_2710_1980;
const ACTION_CONNECT: u32 = 0;
const ACTION_ANNOUNCE: u32 = 1;
const ACTION_SCRAPE: u32 = 2;
const ACTION_ERROR: u32 = 3;
const EVENT_STARTED: u32 = 2;
const EVENT_STOPPED: u32 = 3;

/// A minimal BEP 15 client, written from the BEP (not from our codec), with the BEP's
/// retransmissions (shortened: 1 s per try, on loopback).
struct Bep15 {
    sock: UdpSocket,
    connection_id: u64,
    next_tid: u32,
}

impl Bep15 {
    fn connect(tracker: SocketAddr) -> Bep15 {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind udp");
        sock.connect(tracker).expect("connect udp");
        sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut c = Bep15 {
            sock,
            connection_id: 0,
            next_tid: std::process::id() ^ nanos,
        };
        let tid = c.tid();
        let mut req = BEP15_MAGIC.to_be_bytes().to_vec();
        req.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
        req.extend_from_slice(&tid.to_be_bytes());
        let resp = c.exchange(&req, tid, ACTION_CONNECT);
        assert!(resp.len() >= 16, "connect response of {} bytes", resp.len());
        c.connection_id = u64::from_be_bytes(resp[8..16].try_into().unwrap());
        c
    }

    fn tid(&mut self) -> u32 {
        self.next_tid = self
            .next_tid
            .wrapping_mul(1_103_515_245)
            .wrapping_add(12_345);
        self.next_tid
    }

    /// The start of a request: connection id, action, a fresh transaction id.
    fn head(&mut self, action: u32) -> (Vec<u8>, u32) {
        let tid = self.tid();
        let mut req = self.connection_id.to_be_bytes().to_vec();
        req.extend_from_slice(&action.to_be_bytes());
        req.extend_from_slice(&tid.to_be_bytes());
        (req, tid)
    }

    /// Sends `req` and returns the answer carrying transaction id `tid`; up to 8 tries of
    /// 1 s. Panics on an error answer or one of another action.
    fn exchange(&mut self, req: &[u8], tid: u32, action: u32) -> Vec<u8> {
        let mut buf = [0u8; 2048];
        for _ in 0..8 {
            self.sock.send(req).expect("send to tracker");
            let end = Instant::now() + Duration::from_secs(1);
            while Instant::now() < end {
                let Ok(n) = self.sock.recv(&mut buf) else {
                    break;
                };
                if n < 8 || u32::from_be_bytes(buf[4..8].try_into().unwrap()) != tid {
                    continue;
                }
                let got = u32::from_be_bytes(buf[0..4].try_into().unwrap());
                if got == ACTION_ERROR {
                    panic!(
                        "tracker answered action {action} with an error: {:?}",
                        String::from_utf8_lossy(&buf[8..n])
                    );
                }
                assert_eq!(got, action, "tracker answered with the wrong action");
                return buf[..n].to_vec();
            }
        }
        panic!("tracker did not answer action {action} in 8 tries");
    }

    fn scrape(&mut self, info_hash: &[u8; 20]) -> Counts {
        let (mut req, tid) = self.head(ACTION_SCRAPE);
        req.extend_from_slice(info_hash);
        let resp = self.exchange(&req, tid, ACTION_SCRAPE);
        assert_eq!(resp.len(), 8 + 12, "scrape response for one info-hash");
        let at = |i: usize| u32::from_be_bytes(resp[i..i + 4].try_into().unwrap());
        Counts {
            seeders: at(8),
            completed: at(12),
            leechers: at(16),
        }
    }

    /// Announces a peer that has nothing yet (`left` = 1, `downloaded` = 0) with `event`;
    /// returns (leechers, seeders, peers).
    fn announce(
        &mut self,
        info_hash: &[u8; 20],
        peer_id: &[u8; 20],
        event: u32,
        port: u16,
    ) -> (u32, u32, Vec<SocketAddrV4>) {
        let (mut req, tid) = self.head(ACTION_ANNOUNCE);
        req.extend_from_slice(info_hash);
        req.extend_from_slice(peer_id);
        req.extend_from_slice(&0u64.to_be_bytes()); // downloaded
        req.extend_from_slice(&1u64.to_be_bytes()); // left
        req.extend_from_slice(&0u64.to_be_bytes()); // uploaded
        req.extend_from_slice(&event.to_be_bytes());
        req.extend_from_slice(&0u32.to_be_bytes()); // ip: the packet's source
        req.extend_from_slice(&0x5eed_u32.to_be_bytes()); // key
        req.extend_from_slice(&50i32.to_be_bytes()); // num_want
        req.extend_from_slice(&port.to_be_bytes());
        assert_eq!(req.len(), 98);
        let resp = self.exchange(&req, tid, ACTION_ANNOUNCE);
        assert!(
            resp.len() >= 20,
            "announce response of {} bytes",
            resp.len()
        );
        assert_eq!((resp.len() - 20) % 6, 0, "IPv4 peer list of ragged length");
        let at = |i: usize| u32::from_be_bytes(resp[i..i + 4].try_into().unwrap());
        let peers = resp[20..]
            .chunks(6)
            .map(|p| {
                SocketAddrV4::new(
                    Ipv4Addr::new(p[0], p[1], p[2], p[3]),
                    u16::from_be_bytes([p[4], p[5]]),
                )
            })
            .collect();
        (at(12), at(16), peers)
    }
}

/// Peers the tracker hands to a newcomer; the probing peer is removed again (`stopped`).
fn peers_listed(tracker: &Tracker, info_hash: &[u8; 20]) -> Vec<SocketAddrV4> {
    let mut c = Bep15::connect(tracker.addr);
    let peer_id = *b"-RSTEST-probe0000000";
    // Port 9: discard; nobody will be able to connect to the probe, and it leaves at once.
    let (_, _, peers) = c.announce(info_hash, &peer_id, EVENT_STARTED, 9);
    c.announce(info_hash, &peer_id, EVENT_STOPPED, 9);
    peers
}

/// Polls scrapes until `ok(counts)` (returns them) or `timeout` (panics with the last counts
/// and the logs).
fn scrape_until(
    tracker: &Tracker,
    info_hash: &[u8; 20],
    timeout: Duration,
    what: &str,
    ok: impl Fn(Counts) -> bool,
    logs: &[&Guard],
) -> Counts {
    let deadline = Instant::now() + timeout;
    let mut c = Bep15::connect(tracker.addr);
    loop {
        let counts = c.scrape(info_hash);
        if ok(counts) {
            return counts;
        }
        if Instant::now() >= deadline {
            let mut all: Vec<&Guard> = vec![&tracker.guard];
            all.extend_from_slice(logs);
            dump_logs(&all);
            panic!("tracker scrape: {what} not reached within {timeout:?}; last: {counts:?}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn info_hash(torrent: &Path) -> [u8; 20] {
    let bytes = fs::read(torrent).unwrap();
    Metainfo::from_bytes(&bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", torrent.display()))
        .info_hash
}

// ---------------------------------------------------------------------------------------
// Torrents and peers.

/// libtorrent's `create_torrent` (v1, 256 KiB pieces), announcing to `trackers`.
fn lt_create(content: &Path, out: &Path, trackers: &[String], logdir: &Path, budget: &Budget) {
    let mut c = py("lt_peer.py");
    c.args(["create", "--path"])
        .arg(content)
        .arg("-o")
        .arg(out)
        .args(["--piece-size", &(256 << 10).to_string()]);
    for t in trackers {
        c.args(["--tracker", t]);
    }
    run("lt-create", c, budget.cap(Duration::from_secs(30)), logdir);
}

/// `ringswarm create`, announcing to `trackers`.
fn ringswarm_create(
    content: &Path,
    out: &Path,
    trackers: &[String],
    logdir: &Path,
    budget: &Budget,
) {
    let mut c = Command::new(ringswarm());
    c.arg("create")
        .arg(content)
        .arg("-o")
        .arg(out)
        .args(["--piece-size", "256K"]);
    for t in trackers {
        c.args(["--tracker", t]);
    }
    run(
        "ringswarm-create",
        c,
        budget.cap(Duration::from_secs(30)),
        logdir,
    );
}

/// A libtorrent seed of `torrent` from `src`; `lt_peer.py seed` prints `listening on` only
/// after a tracker has answered its announce as a seed.
fn lt_seed(torrent: &Path, src: &Path, extra_tracker: Option<&str>) -> Command {
    let mut c = py("lt_peer.py");
    c.args(["seed", "--port", "0", "--seconds", "120", "--torrent"])
        .arg(torrent)
        .arg("--data-dir")
        .arg(src)
        .args(["--announce-timeout", "30"]);
    if let Some(t) = extra_tracker {
        c.args(["--tracker", t]);
    }
    c
}

/// A libtorrent leecher with no `--peer`: it can only find peers through the tracker(s).
fn lt_get(torrent: &Path, dst: &Path, extra_tracker: Option<&str>, timeout: Duration) -> Command {
    let mut c = py("lt_peer.py");
    c.args(["get", "--recheck", "--announce-timeout", "10", "--timeout"])
        .arg(timeout.as_secs().max(1).to_string())
        .arg("--torrent")
        .arg(torrent)
        .arg("--dest")
        .arg(dst);
    if let Some(t) = extra_tracker {
        c.args(["--tracker", t]);
    }
    c
}

fn localhost(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
}

// ---------------------------------------------------------------------------------------
// 1. libtorrent ↔ libtorrent through our tracker only.

#[test]
fn lt_seed_lt_get_via_tracker() {
    let t = "lt_seed_lt_get_via_tracker";
    if !require(have_libtorrent(), t, "python3-libtorrent") {
        return;
    }
    let budget = Budget::start();
    let dir = scratch("lt-lt");
    let (src, dst, torrent) = (
        dir.path().join("src"),
        dir.path().join("dst"),
        dir.path().join("t.torrent"),
    );
    write_tree(&src, FILES);
    let tracker = Tracker::start(dir.path(), &budget);
    lt_create(
        &src.join("blob"),
        &torrent,
        &[tracker.url()],
        dir.path(),
        &budget,
    );
    let ih = info_hash(&torrent);

    let mut seed = Guard::spawn("lt-seed", lt_seed(&torrent, &src, None), dir.path());
    let seed_addr = seed.wait_listening(budget.cap(Duration::from_secs(40)), &[&tracker.guard]);
    let before = scrape_until(
        &tracker,
        &ih,
        budget.cap(Duration::from_secs(5)),
        "the libtorrent seed counted",
        |c| c.seeders >= 1,
        &[&seed],
    );
    assert_eq!(before.leechers, 0, "no leecher yet: {before:?}");
    let listed = peers_listed(&tracker, &ih);
    assert!(
        listed.contains(&localhost(seed_addr.port())),
        "the tracker should hand out the seed {seed_addr}; it gave {listed:?}"
    );

    let get_limit = budget.cap(Duration::from_secs(40));
    let mut get = Guard::spawn(
        "lt-get",
        lt_get(&torrent, &dst, None, get_limit),
        dir.path(),
    );
    get.expect_success(
        budget.cap(get_limit + Duration::from_secs(5)),
        &[&seed, &tracker.guard],
    );
    assert_same_tree(&src, &dst, FILES, &[&get, &seed]);
    let summary = last_json(&get);
    assert!(
        summary["tracker_peers"].as_u64().unwrap_or(0) >= 1,
        "the leecher's peers came from the tracker: {summary}"
    );

    // The leecher announced `completed`, then `stopped` when it quit: the seed remains.
    scrape_until(
        &tracker,
        &ih,
        budget.cap(Duration::from_secs(10)),
        "completed = 1, the seed alone",
        |c| c.completed == 1 && c.seeders == 1 && c.leechers == 0,
        &[&seed, &get],
    );
    // And the seed's `stopped` when it quits empties the swarm (the completed count stays).
    drop(seed);
    scrape_until(
        &tracker,
        &ih,
        budget.cap(Duration::from_secs(10)),
        "an empty swarm",
        |c| c.completed == 1 && c.seeders == 0 && c.leechers == 0,
        &[&get],
    );
}

// ---------------------------------------------------------------------------------------
// 2. Transmission announces over UDP and gets its peers.

#[test]
fn transmission_announces_to_tracker() {
    let t = "transmission_announces_to_tracker";
    if !require(have_libtorrent(), t, "python3-libtorrent")
        || !require(have_transmission(), t, "transmission-daemon")
    {
        return;
    }
    let budget = Budget::start();
    let dir = scratch("tr");
    let (src, dst, torrent) = (
        dir.path().join("src"),
        dir.path().join("dst"),
        dir.path().join("t.torrent"),
    );
    write_tree(&src, FILES);
    let tracker = Tracker::start(dir.path(), &budget);
    lt_create(
        &src.join("blob"),
        &torrent,
        &[tracker.url()],
        dir.path(),
        &budget,
    );
    let ih = info_hash(&torrent);

    // A seed registers first, so Transmission's announce has someone to hear about.
    let mut seed = Guard::spawn("lt-seed", lt_seed(&torrent, &src, None), dir.path());
    let seed_addr = seed.wait_listening(budget.cap(Duration::from_secs(40)), &[&tracker.guard]);

    // Transmission announces to the .torrent's udp:// tracker (nothing rewritten).
    let mut tr_cmd = py("tr_peer.py");
    tr_cmd
        .args(["announce-check", "--min-peers", "1", "--seconds", "120"])
        .args([
            "--timeout",
            &budget.cap(Duration::from_secs(40)).as_secs().to_string(),
        ])
        .arg("--torrent")
        .arg(&torrent)
        .arg("--dest")
        .arg(&dst);
    let mut tr = Guard::spawn("tr-announce", tr_cmd, dir.path());
    let stats = tr.wait_line(
        "announced ",
        budget.cap(Duration::from_secs(45)),
        &[&seed, &tracker.guard],
    );
    let stats: serde_json::Value = serde_json::from_str(&stats)
        .unwrap_or_else(|e| panic!("tr_peer.py announce-check: bad JSON {stats:?}: {e}"));
    assert_eq!(stats["announce"], tracker.url().as_str(), "{stats}");
    assert_eq!(stats["lastAnnounceSucceeded"], true, "{stats}");
    assert!(
        stats["lastAnnouncePeerCount"].as_i64().unwrap_or(0) >= 1,
        "Transmission's last announce should have returned the seed: {stats}"
    );
    assert!(
        stats["seederCount"].as_i64().unwrap_or(0) >= 1,
        "Transmission should see the seed in the announce counts: {stats}"
    );
    let tr_port = stats["peer_port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("no peer_port in {stats}"));

    // Our tracker counts Transmission as a leecher and hands its address out.
    let counts = scrape_until(
        &tracker,
        &ih,
        budget.cap(Duration::from_secs(5)),
        "Transmission counted as a leecher",
        |c| c.seeders >= 1 && c.leechers >= 1,
        &[&seed, &tr],
    );
    assert_eq!(counts.leechers, 1, "{counts:?}");
    let listed = peers_listed(&tracker, &ih);
    for (who, addr) in [
        ("Transmission", localhost(tr_port)),
        ("the seed", localhost(seed_addr.port())),
    ] {
        assert!(
            listed.contains(&addr),
            "the tracker should hand out {who} at {addr}; it gave {listed:?}"
        );
    }

    // Stopping Transmission sends `stopped`: it leaves the swarm.
    drop(tr);
    scrape_until(
        &tracker,
        &ih,
        budget.cap(Duration::from_secs(10)),
        "Transmission gone after `stopped`",
        |c| c.leechers == 0 && c.seeders >= 1,
        &[&seed],
    );
}

// ---------------------------------------------------------------------------------------
// 3. ringswarm through the tracker, with libtorrent on the other side.

#[test]
fn ringswarm_seed_via_tracker_lt_gets() {
    let t = "ringswarm_seed_via_tracker_lt_gets";
    if !require(have_libtorrent(), t, "python3-libtorrent") {
        return;
    }
    let budget = Budget::start();
    let dir = scratch("rs-seed");
    let (src, dst, torrent) = (
        dir.path().join("src"),
        dir.path().join("dst"),
        dir.path().join("t.torrent"),
    );
    write_tree(&src, FILES);
    let tracker = Tracker::start(dir.path(), &budget);
    // No announce URL in the .torrent: both sides get the tracker on their command line.
    ringswarm_create(&src.join("blob"), &torrent, &[], dir.path(), &budget);
    let ih = info_hash(&torrent);

    let mut seed_cmd = Command::new(ringswarm());
    seed_cmd.arg("seed").arg(&torrent).arg(&src).args([
        "--listen",
        "127.0.0.1:0",
        "--tracker",
        &tracker.url(),
    ]);
    let mut seed = Guard::spawn("ringswarm-seed", seed_cmd, dir.path());
    let seed_addr = seed.wait_listening(budget.cap(Duration::from_secs(30)), &[&tracker.guard]);
    // `listening on` may come before the first announce is answered: poll for it.
    scrape_until(
        &tracker,
        &ih,
        budget.cap(Duration::from_secs(15)),
        "ringswarm seed counted as a seed",
        |c| c.seeders >= 1,
        &[&seed],
    );
    let listed = peers_listed(&tracker, &ih);
    assert!(
        listed.contains(&localhost(seed_addr.port())),
        "the tracker should hand out the ringswarm seed {seed_addr}; it gave {listed:?}"
    );

    let get_limit = budget.cap(Duration::from_secs(40));
    let get_cmd = lt_get(&torrent, &dst, Some(&tracker.url()), get_limit);
    let mut get = Guard::spawn("lt-get", get_cmd, dir.path());
    get.expect_success(
        budget.cap(get_limit + Duration::from_secs(5)),
        &[&seed, &tracker.guard],
    );
    assert_same_tree(&src, &dst, FILES, &[&get, &seed]);
    scrape_until(
        &tracker,
        &ih,
        budget.cap(Duration::from_secs(10)),
        "completed = 1, the ringswarm seed alone",
        |c| c.completed == 1 && c.seeders == 1 && c.leechers == 0,
        &[&seed, &get],
    );
    // `ringswarm seed` says `stopped` when it quits (SIGTERM).
    drop(seed);
    scrape_until(
        &tracker,
        &ih,
        budget.cap(Duration::from_secs(10)),
        "an empty swarm after the ringswarm seed quit",
        |c| c.seeders == 0 && c.leechers == 0,
        &[&get],
    );
}

/// libtorrent seeds (its tracker given on its command line or in the .torrent); `ringswarm
/// get` with no `--peer` downloads, finding the seed through the tracker.
fn lt_seeds_ringswarm_gets_via_tracker(tag: &str, in_metainfo: bool) {
    let budget = Budget::start();
    let dir = scratch(tag);
    let (src, dst, torrent) = (
        dir.path().join("src"),
        dir.path().join("dst"),
        dir.path().join("t.torrent"),
    );
    write_tree(&src, FILES);
    let tracker = Tracker::start(dir.path(), &budget);
    let url = tracker.url();
    let (in_torrent, on_cli): (Vec<String>, Option<&str>) = if in_metainfo {
        (vec![url.clone()], None)
    } else {
        (vec![], Some(&url))
    };
    ringswarm_create(
        &src.join("blob"),
        &torrent,
        &in_torrent,
        dir.path(),
        &budget,
    );
    let ih = info_hash(&torrent);

    let mut seed = Guard::spawn("lt-seed", lt_seed(&torrent, &src, on_cli), dir.path());
    seed.wait_listening(budget.cap(Duration::from_secs(40)), &[&tracker.guard]);

    let get_limit = budget.cap(Duration::from_secs(40));
    let mut get_cmd = Command::new(ringswarm());
    get_cmd
        .arg("get")
        .arg(&torrent)
        .arg(&dst)
        .args(["--listen", "127.0.0.1:0"])
        .args(["--timeout", &format!("{}s", get_limit.as_secs().max(1))]);
    if let Some(u) = on_cli {
        get_cmd.args(["--tracker", u]);
    }
    let mut get = Guard::spawn("ringswarm-get", get_cmd, dir.path());
    get.expect_success(
        budget.cap(get_limit + Duration::from_secs(5)),
        &[&seed, &tracker.guard],
    );
    assert_same_tree(&src, &dst, FILES, &[&get, &seed]);
    // `ringswarm get` announced `completed`, then `stopped` when it exited.
    scrape_until(
        &tracker,
        &ih,
        budget.cap(Duration::from_secs(10)),
        "completed = 1, the libtorrent seed alone",
        |c| c.completed == 1 && c.seeders == 1 && c.leechers == 0,
        &[&seed, &get],
    );
}

#[test]
fn lt_seeds_ringswarm_gets_via_tracker_flag() {
    let t = "lt_seeds_ringswarm_gets_via_tracker_flag";
    if !require(have_libtorrent(), t, "python3-libtorrent") {
        return;
    }
    lt_seeds_ringswarm_gets_via_tracker("rs-get-flag", false);
}

#[test]
fn lt_seeds_ringswarm_gets_via_metainfo_announce() {
    let t = "lt_seeds_ringswarm_gets_via_metainfo_announce";
    if !require(have_libtorrent(), t, "python3-libtorrent") {
        return;
    }
    lt_seeds_ringswarm_gets_via_tracker("rs-get-meta", true);
}
