//! Hostile peers against the real `ringswarm` binary on loopback (issue 11, items 5, 8, 9):
//! idle peers that hold upload slots, many connections from one address, a peer trickling
//! its handshake to stretch a metadata fetch, a peer claiming every piece to end a `send`,
//! and a peer asking one block of each large piece to make a seed read whole pieces.
//! The hostile side is `scripts/hostile_peers.py`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod support;
use support::{
    create_args, get_args, info_hash, py, ringswarm, scratch, seed_args, send_args, skip_note,
    Guard,
};

const MIB: usize = 1 << 20;

fn rs(args: &[&str], dir: &Path) -> Command {
    let mut c = Command::new(ringswarm());
    c.current_dir(dir).args(args);
    c
}

/// `create` PATH with PIECE_SIZE into `t.torrent`; returns the info-hash (hex).
fn create(dir: &Path, path: &str, piece_size: &str) -> String {
    let out = rs(&create_args(path, piece_size, "t.torrent"), dir)
        .output()
        .expect("run create");
    assert!(out.status.success(), "create: {out:?}");
    info_hash(&String::from_utf8_lossy(&out.stdout))
}

fn write_blob(dir: &Path, name: &str, len: usize) {
    std::fs::write(dir.join(name), support::pattern(len, 7)).unwrap();
}

fn start_seed(dir: &Path, cores: &str) -> (Guard, String) {
    start_seed_with(dir, cores, &[])
}

/// [`start_seed`], with `extra` arguments.
fn start_seed_with(dir: &Path, cores: &str, extra: &[&str]) -> (Guard, String) {
    let mut args = seed_args("t.torrent", ".", cores).to_vec();
    args.extend_from_slice(extra);
    let mut seed = Guard::spawn("seed", rs(&args, dir), dir);
    let addr = seed.wait_listening(Duration::from_secs(60), &[]);
    (seed, addr.to_string())
}

/// A timed `get` of the torrent from `peer` into `dest`; panics (with logs) if it fails.
fn timed_get(dir: &Path, dest: &str, peer: &str, timeout: &str, others: &[&Guard]) -> Duration {
    let started = Instant::now();
    let mut get = Guard::spawn(
        dest,
        rs(
            &get_args("t.torrent", dest, peer, &["--timeout", timeout]),
            dir,
        ),
        dir,
    );
    get.expect_success(Duration::from_secs(90), others);
    started.elapsed()
}

/// `scripts/hostile_peers.py MODE --torrent t.torrent --target TARGET`, run in `dir`.
fn hostile(dir: &Path, mode: &str, target: &str) -> Command {
    let mut c = py("hostile_peers.py");
    c.current_dir(dir)
        .args([mode, "--torrent", "t.torrent", "--target", target]);
    c
}

fn idle_peers(dir: &Path, target: &str, sources: &str, conns: usize, name: &str) -> Guard {
    let mut c = hostile(dir, "idle", target);
    c.args(["--sources", sources, "--conns", &conns.to_string()])
        .args(["--seconds", "90"]);
    Guard::spawn(name, c, dir)
}

/// "N accepted, M refused" from the idle peers' ready line.
fn accepted_refused(line: &str) -> (usize, usize) {
    let n: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[1])
}

/// Item 5: 70 peers (from ten addresses, under the per-address cap) say INTERESTED and
/// never request, against a seed with 64 upload slots. Today's main gives them all 64
/// slots for good and never unchokes a real getter; now the idle peers lose their slots
/// and the getter runs at full speed.
#[test]
fn idle_interested_peers_do_not_starve_a_seed() {
    let dir = scratch("idle");
    let d = dir.path();
    write_blob(d, "blob.bin", 8 * MIB);
    create(d, "blob.bin", "1M");
    let (seed, addr) = start_seed_with(d, "2", &["--upload-slots", "64"]);
    let alone = timed_get(d, "alone", &addr, "60s", &[&seed]);

    let sources: Vec<String> = (2..12).map(|i| format!("127.0.0.{i}")).collect();
    let mut idle = idle_peers(d, &addr, &sources.join(","), 70, "idle");
    let ready = idle.wait_line("idle: ready", Duration::from_secs(60), &[&seed]);
    let (accepted, refused) = accepted_refused(&ready);
    assert_eq!((accepted, refused), (70, 0), "{ready}");
    // The idle peers hold the slots for a while, as in a real attack.
    std::thread::sleep(Duration::from_secs(2));

    let crowded = timed_get(d, "crowded", &addr, "20s", &[&seed, &idle]);
    // Generous for a loaded 2-core CI machine; main never finishes (its 20 s timeout).
    let bound = alone * 2 + Duration::from_secs(3);
    assert!(
        crowded <= bound,
        "get with 70 idle peers took {crowded:?}, alone {alone:?} (bound {bound:?})"
    );
    assert_eq!(
        std::fs::read(d.join("crowded/blob.bin")).unwrap(),
        std::fs::read(d.join("blob.bin")).unwrap()
    );
    eprintln!("8 MiB get: alone {alone:?}, with 70 idle peers {crowded:?}");
}

/// Item 5: the per-address cap (16 by default) covers 127.0.0.2 like any address; only
/// this host's own 127.0.0.1 is exempt. Today's main exempts all of 127.0.0.0/8.
#[test]
fn the_per_address_cap_refuses_the_excess_from_one_address() {
    let dir = scratch("cap");
    let d = dir.path();
    write_blob(d, "blob.bin", MIB);
    create(d, "blob.bin", "256K");
    let (seed, addr) = start_seed(d, "1");
    let mut idle = idle_peers(d, &addr, "127.0.0.2", 24, "one-address");
    let ready = idle.wait_line("idle: ready", Duration::from_secs(60), &[&seed]);
    assert_eq!(accepted_refused(&ready), (16, 8), "{ready}");
    // Another address still gets in.
    let mut other = idle_peers(d, &addr, "127.0.0.3", 2, "other-address");
    let ready = other.wait_line("idle: ready", Duration::from_secs(60), &[&seed]);
    assert_eq!(accepted_refused(&ready), (2, 0), "{ready}");
}

/// Item 8: a peer that answers the metadata fetch's handshake one byte every 2 s cannot
/// stretch `get --timeout 5s` (today's main restarts a 10 s read timeout at each byte).
#[test]
fn get_timeout_bounds_a_trickled_metadata_fetch() {
    let dir = scratch("trickle");
    let d = dir.path();
    write_blob(d, "blob.bin", 100_000);
    let hash = create(d, "blob.bin", "16K");
    let mut c = py("hostile_peers.py");
    c.current_dir(d)
        .args(["trickle", "--torrent", "t.torrent", "--every", "2"])
        .args(["--seconds", "60"]);
    let mut trickle = Guard::spawn("trickle", c, d);
    let addr = trickle.wait_listening(Duration::from_secs(20), &[]);
    let magnet = format!("magnet:?xt=urn:btih:{hash}");
    let started = Instant::now();
    let out = rs(
        &get_args(&magnet, "dl", &addr.to_string(), &["--timeout", "5s"]),
        d,
    )
    .output()
    .expect("run get");
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "get succeeded?\n{err}");
    assert!(
        took <= Duration::from_secs(9),
        "get --timeout 5s took {took:?}\n{err}"
    );
    assert!(err.contains("metadata"), "unclear error: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Item 8: `send --receivers 1` does not stop for peers that claim every piece up front
/// (HAVE ALL, or a full BITFIELD) without receiving anything; it stops for a real `get`.
#[test]
fn send_counts_only_receivers_that_got_the_data() {
    let dir = scratch("send");
    let d = dir.path();
    write_blob(d, "blob.bin", 2 * MIB);
    let mut send = Guard::spawn(
        "send",
        rs(&send_args("blob.bin", &["--piece-size", "256K"]), d),
        d,
    );
    let addr = send.wait_listening(Duration::from_secs(60), &[]);
    let magnet = send.wait_line("magnet:?", Duration::from_secs(20), &[]);
    let magnet = format!("magnet:?{magnet}");
    // The liars need the torrent file: make the same one (same piece size, same name).
    let hash = create(d, "blob.bin", "256K");
    assert!(magnet.contains(&hash), "{magnet} vs {hash}");
    let mut liars = Vec::new();
    for (name, extra) in [("haveall", None), ("bitfield", Some("--bitfield"))] {
        let mut c = hostile(d, "haveall", &addr.to_string());
        c.args(["--seconds", "60"]);
        c.args(extra);
        let mut g = Guard::spawn(name, c, d);
        g.wait_line("haveall: ready", Duration::from_secs(20), &[&send]);
        assert!(
            send.wait_exit(Duration::from_secs(2)).is_none(),
            "send exited for a peer that received nothing ({name}): {}",
            send.stdout()
        );
        liars.push(g);
    }
    let mut get = Guard::spawn(
        "get",
        rs(
            &[
                "get",
                &magnet,
                "dl",
                "--listen",
                "127.0.0.1:0",
                "--cores",
                "1",
                "--timeout",
                "60s",
            ],
            d,
        ),
        d,
    );
    get.expect_success(Duration::from_secs(90), &[&send]);
    send.expect_success(Duration::from_secs(30), &[&get]);
    assert!(
        send.stdout().contains("done: 1 peer with a full copy"),
        "{}",
        send.stdout()
    );
}

/// Item 9: a peer asking one 16 KiB block of each 16 MiB piece makes the seed read about
/// what it asked (today: each request reads its whole piece, 1024 times as much).
#[test]
fn seed_reads_follow_the_requests() {
    let dir = scratch("reads");
    let d = dir.path();
    let pieces = 8;
    write_blob(d, "blob.bin", pieces * 16 * MIB);
    create(d, "blob.bin", "16M");
    let (seed, addr) = start_seed(d, "1");
    let pid = seed.child.id();
    let read_bytes = || -> Option<u64> {
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
        io.lines()
            .find_map(|l| l.strip_prefix("read_bytes: "))?
            .trim()
            .parse()
            .ok()
    };
    let Some(before) = read_bytes() else {
        skip_note("seed_reads_follow_the_requests: /proc/PID/io is not readable here");
        return;
    };
    let mut c = hostile(d, "sparse", &addr);
    c.args(["--pieces", &pieces.to_string(), "--seconds", "60"]);
    let mut sparse = Guard::spawn("sparse", c, d);
    let line = sparse.wait_line("sparse: ", Duration::from_secs(60), &[&seed]);
    let requested = (pieces * 16 * 1024) as u64;
    assert!(
        line.starts_with(&format!("{pieces} blocks, {requested} bytes")),
        "{line}"
    );
    let read = read_bytes().unwrap_or(0) - before;
    if read == 0 {
        // O_DIRECT reads are counted at the block layer; a filesystem answering from
        // elsewhere (e.g. tmpfs refusing O_DIRECT, served from the page cache) shows 0.
        skip_note("seed_reads_follow_the_requests: read_bytes did not move (no block I/O)");
        return;
    }
    eprintln!("requested {requested} bytes, the seed read {read} bytes from disk");
    assert!(
        read <= requested * 4,
        "the seed read {read} bytes for {requested} requested"
    );
}

/// Item 5: a choke drops the peer's queued requests, with a REJECT each under the fast
/// extension; nothing is sent after the CHOKE. Today's main chokes a peer that says
/// NOT_INTERESTED on a side path that keeps its queue, and the blocks still go out.
#[test]
fn nothing_queued_goes_out_after_a_choke() {
    let dir = scratch("greedy");
    let d = dir.path();
    write_blob(d, "blob.bin", MIB);
    create(d, "blob.bin", "256K");
    let (seed, addr) = start_seed(d, "1");
    let mut c = hostile(d, "greedy", &addr);
    c.args(["--pieces", "4", "--seconds", "30"]);
    let mut greedy = Guard::spawn("greedy", c, d);
    let line = greedy.wait_line("greedy: ", Duration::from_secs(30), &[&seed]);
    let n: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let (before, after, rejects, requested) = (n[0], n[1], n[2], n[3]);
    assert_eq!(requested, 64, "{line}");
    assert_eq!(after, 0, "blocks sent after the CHOKE: {line}");
    assert_eq!(
        before + rejects,
        requested,
        "every request answered: {line}"
    );
    assert!(rejects > 0, "{line}");
}
