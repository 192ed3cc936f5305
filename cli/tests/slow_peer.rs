//! Issue 12: a peer that holds every piece but sends one genuine block every few seconds
//! must not hold a download hostage, even with `get --cores 1`.
//!
//! The scenario, on loopback with the real binary: a 16 MiB random file; an honest
//! `ringswarm seed` limited to 4 MiB/s upload; `scripts/trickle_seed.py`, which has every
//! piece and answers each request with the real block, one block every 3 s. First the
//! honest seed alone serves a `get --cores 1` (about 4 s); then a second `get --cores 1`
//! is given both peers, the trickler listed first so it is dialled first and is asked for
//! pieces. The second get must finish with the right bytes in a bound that still proves
//! "not a hostage": 3 × the alone time, at least 20 s. A hostage takes minutes: every block
//! queued at the trickler costs 3 s, and a piece claimed by it waits for all of them.
//! The target (≤ 1.3 × the alone time) is measured by `perf/hostage`, not here.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod support;
use support::{create_args, get_args, info_hash, py, ringswarm, scratch, Guard};

const MIB: usize = 1 << 20;

fn rs(args: &[&str], dir: &Path) -> Command {
    let mut c = Command::new(ringswarm());
    c.current_dir(dir).args(args);
    c
}

/// `create blob.bin` with PIECE_SIZE (`auto`: the CLI's default) into `t.torrent`;
/// returns the piece size the torrent got, in bytes.
fn create(dir: &Path, piece_size: &str) -> u64 {
    let out = rs(&create_args("blob.bin", piece_size, "t.torrent"), dir)
        .output()
        .expect("run create");
    assert!(out.status.success(), "create: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    info_hash(&stdout);
    // `pieces:    16 of 1.00 MiB`
    let line = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("pieces:"))
        .unwrap_or_else(|| panic!("no pieces line in:\n{stdout}"));
    let mut words = line.split_whitespace();
    let count: u64 = words.next().and_then(|w| w.parse().ok()).unwrap();
    ((16 * MIB) as u64).div_ceil(count)
}

/// A `get --cores 1` of `t.torrent` into `dest` from `peers` (dialled in this order).
/// Returns how long it took, or None if it was not done within `bound` (it is then
/// stopped). Panics (with logs) if it fails.
fn timed_get(
    dir: &Path,
    dest: &str,
    peers: &[&str],
    bound: Duration,
    others: &[&Guard],
) -> Option<Duration> {
    let mut extra = Vec::new();
    for p in &peers[1..] {
        extra.extend_from_slice(&["--peer", p]);
    }
    extra.extend_from_slice(&["--timeout", "300s"]);
    let started = Instant::now();
    let mut get = Guard::spawn(
        dest,
        rs(&get_args("t.torrent", dest, peers[0], &extra), dir),
        dir,
    );
    match get.wait_exit(bound) {
        None => None,
        Some(st) if st.success() => Some(started.elapsed()),
        Some(st) => get.fail(others, &format!("failed: {st}")),
    }
}

fn hostage_case(tag: &str, piece_size: &str) {
    let dir = scratch(tag);
    let d = dir.path();
    std::fs::write(d.join("blob.bin"), support::pattern(16 * MIB, 12)).unwrap();
    let piece = create(d, piece_size);

    let mut seed = Guard::spawn(
        "seed",
        rs(
            &[
                "seed",
                "t.torrent",
                ".",
                "--listen",
                "127.0.0.1:0",
                "--cores",
                "1",
                "--max-upload-rate",
                "4M",
            ],
            d,
        ),
        d,
    );
    let seed_addr = seed
        .wait_listening(Duration::from_secs(60), &[])
        .to_string();

    let alone = timed_get(
        d,
        "alone",
        &[&seed_addr],
        Duration::from_secs(120),
        &[&seed],
    )
    .unwrap_or_else(|| seed.fail(&[], "the honest seed alone took over 120 s"));

    let mut c = py("trickle_seed.py");
    c.current_dir(d)
        .args(["--torrent", "t.torrent", "--data", "blob.bin"])
        .args(["--every", "3", "--seconds", "300"]);
    let mut trickle = Guard::spawn("trickle", c, d);
    let trickle_addr = trickle
        .wait_listening(Duration::from_secs(60), &[&seed])
        .to_string();

    // Generous for a loaded 2-core CI machine; a hostage takes minutes.
    let bound = (alone * 3).max(Duration::from_secs(20));
    let both = timed_get(
        d,
        "both",
        &[&trickle_addr, &seed_addr],
        bound,
        &[&seed, &trickle],
    );
    // The scenario tests something only if the trickler was asked for a block (it is
    // dialled first; a `get` that never asks it would pass without proving anything).
    trickle.wait_line(
        "trickle_seed: first request",
        Duration::from_secs(5),
        &[&seed],
    );
    let Some(both) = both else {
        support::dump_logs(&[&seed, &trickle]);
        panic!(
            "{tag} ({piece} B pieces): get with a trickling peer not done within {bound:?} \
             (the honest seed alone: {alone:?}): held hostage"
        );
    };
    let got = std::fs::read(d.join("both/blob.bin")).unwrap();
    assert!(
        got == std::fs::read(d.join("blob.bin")).unwrap(),
        "{tag}: downloaded bytes differ from the source"
    );
    eprintln!(
        "16 MiB get --cores 1, {piece} B pieces: the honest seed alone {alone:?}, \
         with a trickling peer {both:?} (ratio {:.2})",
        both.as_secs_f64() / alone.as_secs_f64()
    );
}

/// The CLI's default piece size (auto: 1 MiB for 16 MiB). Before the block-level endgame
/// (bb87c55) a 1 MiB piece claimed by the trickler waited for its 64 blocks, 3 s each:
/// 189 s.
#[test]
fn a_trickling_peer_does_not_hold_a_get_hostage() {
    hostage_case("hostage-auto", "auto");
}

/// 256 KiB pieces: 16 blocks each (45 s before the block-level endgame).
#[test]
fn a_trickling_peer_does_not_hold_a_get_hostage_256k_pieces() {
    hostage_case("hostage-256k", "256K");
}
