//! Interop with standard BitTorrent clients, through the `ringswarm` binary, on loopback.
//!
//! - libtorrent (python3-libtorrent, driven by `scripts/lt_peer.py`) seeds torrents made by
//!   `mktorrent` (no pad files; multi-file and single-file, odd sizes) and by libtorrent's own
//!   `create_torrent` (BEP 47 pad files) → `ringswarm get` fetches them.
//! - `ringswarm seed` → libtorrent downloads, from a torrent made by `ringswarm create` and
//!   from one made by `mktorrent` (unaligned file spans on the seeding side).
//! - Transmission 3 (`transmission-daemon`, driven by `scripts/tr_peer.py`) seeds → `ringswarm
//!   get`; and `ringswarm seed` → Transmission downloads. Transmission never dials peers in
//!   127.0.0.0/8, so that direction runs inside a network namespace with 198.18.0.1 on its
//!   `lo` (root only; skipped with a message otherwise).
//!
//! Every received file is compared byte for byte with its source. When a tool is missing the
//! test says `skipped: ...` on stderr and returns; with `CI=true` a missing tool fails the
//! test instead. `scripts/test.sh` installs everything.
//!
//! Every child process sits in a guard that kills it on drop; every wait has a deadline.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod support;
use support::*;

const MIB: usize = 1 << 20;
/// Upper bound for one transfer (a few MiB/s would already be pathological).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(150);
/// Upper bound for a seeder to check its data and start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Tool discovery: skip with a message, or fail under CI.

fn have_mktorrent() -> bool {
    on_path("mktorrent")
}

// ---------------------------------------------------------------------------------------
// Paths and data.

// Odd sizes: not multiples of 4096 or of any piece size; a 1-byte file; a nested path.
const MULTI: &[(&str, usize)] = &[
    ("blob/a.bin", 13 * MIB + 12_345),
    ("blob/sub/b.bin", 4_097),
    ("blob/c.bin", 9 * MIB + 1),
    ("blob/d.bin", 1),
    ("blob/e.bin", 777_777),
];
const SINGLE: &[(&str, usize)] = &[("one.bin", 21 * MIB + 333)];
/// Transmission ramps up slowly on loopback; keep its transfers small.
const SMALL_MULTI: &[(&str, usize)] = &[
    ("blob/a.bin", 5 * MIB + 4_321),
    ("blob/b/c.bin", 1_234_567),
    ("blob/z.bin", 3),
];

// ---------------------------------------------------------------------------------------
// Torrent makers.

fn mktorrent(content: &Path, out: &Path, piece_log2: u32, logdir: &Path) {
    let mut c = Command::new("mktorrent");
    // No announce URL: peers are given directly.
    c.args(["-l", &piece_log2.to_string(), "-o"])
        .arg(out)
        .arg(content);
    run("mktorrent", c, Duration::from_secs(60), logdir);
}

fn lt_create(content: &Path, out: &Path, piece_size: usize, pad: bool, logdir: &Path) {
    let mut c = py("lt_peer.py");
    c.args(["create", "--path"])
        .arg(content)
        .arg("-o")
        .arg(out)
        .args(["--piece-size", &piece_size.to_string()]);
    if pad {
        c.arg("--pad");
    }
    run("lt-create", c, Duration::from_secs(60), logdir);
}

fn ringswarm_create(content: &Path, out: &Path, logdir: &Path) {
    let mut c = Command::new(ringswarm());
    c.arg("create").arg(content).arg("-o").arg(out);
    run("ringswarm-create", c, Duration::from_secs(60), logdir);
}

// ---------------------------------------------------------------------------------------
// Scenarios.

/// `ringswarm get TORRENT DST --peer ADDR`, itself listening on 127.0.0.1 only.
fn ringswarm_get(torrent: &Path, dst: &Path, peer: SocketAddr) -> Command {
    let mut c = Command::new(ringswarm());
    c.arg("get").arg(torrent).arg(dst).args([
        "--peer",
        &peer.to_string(),
        "--listen",
        "127.0.0.1:0",
    ]);
    c
}

/// libtorrent seeds `torrent` from `src`; `ringswarm get` downloads into a fresh dir.
fn lt_seeds_ringswarm_gets(
    tag: &str,
    files: &[(&str, usize)],
    make: impl FnOnce(&Path, &Path, &Path),
) {
    let dir = scratch(tag);
    let (src, dst, torrent) = (
        dir.path().join("src"),
        dir.path().join("dst"),
        dir.path().join("t.torrent"),
    );
    write_tree(&src, files);
    let top = files[0].0.split('/').next().unwrap();
    make(&src.join(top), &torrent, dir.path());

    let mut seed_cmd = py("lt_peer.py");
    seed_cmd
        .args(["seed", "--port", "0", "--seconds", "300", "--torrent"])
        .arg(&torrent)
        .arg("--data-dir")
        .arg(&src);
    let mut seed = Guard::spawn("lt-seed", seed_cmd, dir.path());
    let addr = seed.wait_listening(READY_TIMEOUT, &[]);

    let get_cmd = ringswarm_get(&torrent, &dst, addr);
    let mut get = Guard::spawn("ringswarm-get", get_cmd, dir.path());
    get.expect_success(TRANSFER_TIMEOUT, &[&seed]);
    assert_same_tree(&src, &dst, files, &[&get, &seed]);
}

/// `ringswarm seed` serves `torrent` from `src`; libtorrent downloads and re-checks.
fn ringswarm_seeds_lt_gets(
    tag: &str,
    files: &[(&str, usize)],
    make: impl FnOnce(&Path, &Path, &Path),
) {
    let dir = scratch(tag);
    let (src, dst, torrent) = (
        dir.path().join("src"),
        dir.path().join("dst"),
        dir.path().join("t.torrent"),
    );
    write_tree(&src, files);
    let top = files[0].0.split('/').next().unwrap();
    make(&src.join(top), &torrent, dir.path());

    let mut seed_cmd = Command::new(ringswarm());
    seed_cmd
        .arg("seed")
        .arg(&torrent)
        .arg(&src)
        .args(["--listen", "127.0.0.1:0"]);
    let mut seed = Guard::spawn("ringswarm-seed", seed_cmd, dir.path());
    let addr = seed.wait_listening(READY_TIMEOUT, &[]);

    let mut get_cmd = py("lt_peer.py");
    get_cmd
        .args([
            "get",
            "--recheck",
            "--timeout",
            &TRANSFER_TIMEOUT.as_secs().to_string(),
            "--torrent",
        ])
        .arg(&torrent)
        .arg("--dest")
        .arg(&dst)
        .args(["--peer", &addr.to_string()]);
    let mut get = Guard::spawn("lt-get", get_cmd, dir.path());
    get.expect_success(TRANSFER_TIMEOUT + Duration::from_secs(30), &[&seed]);
    assert_same_tree(&src, &dst, files, &[&get, &seed]);
}

// (a) libtorrent seeds, ringswarm gets.

#[test]
fn lt_seeds_mktorrent_multi_file_ringswarm_gets() {
    let t = "lt_seeds_mktorrent_multi_file_ringswarm_gets";
    if !require(have_libtorrent(), t, "python3-libtorrent")
        || !require(have_mktorrent(), t, "mktorrent")
    {
        return;
    }
    // 256 KiB pieces, no pad files: pieces straddle file boundaries at odd offsets.
    lt_seeds_ringswarm_gets("lt-mk-multi", MULTI, |content, out, logs| {
        mktorrent(content, out, 18, logs)
    });
}

#[test]
fn lt_seeds_mktorrent_single_file_ringswarm_gets() {
    let t = "lt_seeds_mktorrent_single_file_ringswarm_gets";
    if !require(have_libtorrent(), t, "python3-libtorrent")
        || !require(have_mktorrent(), t, "mktorrent")
    {
        return;
    }
    // 1 MiB pieces; the last piece is short and its length is not a multiple of 4096.
    lt_seeds_ringswarm_gets("lt-mk-single", SINGLE, |content, out, logs| {
        mktorrent(content, out, 20, logs)
    });
}

#[test]
fn lt_seeds_libtorrent_made_padded_torrent_ringswarm_gets() {
    let t = "lt_seeds_libtorrent_made_padded_torrent_ringswarm_gets";
    if !require(have_libtorrent(), t, "python3-libtorrent") {
        return;
    }
    // libtorrent's create_torrent with BEP 47 pad files (canonical_files), 512 KiB pieces.
    lt_seeds_ringswarm_gets("lt-lt-pad", MULTI, |content, out, logs| {
        lt_create(content, out, 512 << 10, true, logs)
    });
}

// (b) ringswarm seeds, libtorrent gets.

#[test]
fn ringswarm_seeds_own_torrent_lt_gets() {
    let t = "ringswarm_seeds_own_torrent_lt_gets";
    if !require(have_libtorrent(), t, "python3-libtorrent") {
        return;
    }
    ringswarm_seeds_lt_gets("rs-own", MULTI, ringswarm_create);
}

#[test]
fn ringswarm_seeds_mktorrent_torrent_lt_gets() {
    let t = "ringswarm_seeds_mktorrent_torrent_lt_gets";
    if !require(have_libtorrent(), t, "python3-libtorrent")
        || !require(have_mktorrent(), t, "mktorrent")
    {
        return;
    }
    // No pad files: the seeder reads unaligned spans that cross file boundaries.
    ringswarm_seeds_lt_gets("rs-mk", MULTI, |content, out, logs| {
        mktorrent(content, out, 18, logs)
    });
}

// (c) Transmission.

#[test]
fn transmission_seeds_ringswarm_gets() {
    let t = "transmission_seeds_ringswarm_gets";
    if !require(have_transmission(), t, "transmission-daemon")
        || !require(have_mktorrent(), t, "mktorrent")
    {
        return;
    }
    let dir = scratch("tr-seed");
    let (src, dst, torrent) = (
        dir.path().join("src"),
        dir.path().join("dst"),
        dir.path().join("t.torrent"),
    );
    write_tree(&src, SMALL_MULTI);
    mktorrent(&src.join("blob"), &torrent, 18, dir.path());

    // Transmission accepts incoming connections from 127.0.0.1 (it only refuses to dial it).
    let mut seed_cmd = py("tr_peer.py");
    seed_cmd
        .args(["seed", "--port", "0", "--seconds", "300", "--torrent"])
        .arg(&torrent)
        .arg("--data-dir")
        .arg(&src);
    let mut seed = Guard::spawn("tr-seed", seed_cmd, dir.path());
    let addr = seed.wait_listening(READY_TIMEOUT, &[]);

    let get_cmd = ringswarm_get(&torrent, &dst, addr);
    let mut get = Guard::spawn("ringswarm-get", get_cmd, dir.path());
    get.expect_success(TRANSFER_TIMEOUT, &[&seed]);
    assert_same_tree(&src, &dst, SMALL_MULTI, &[&get, &seed]);
}

/// A network namespace with 198.18.0.1 on its loopback, deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("rs-interop-{}", std::process::id());
        let ip = |args: &[&str]| {
            let st = Command::new("ip").args(args).stdin(Stdio::null()).status();
            assert!(
                matches!(st, Ok(s) if s.success()),
                "ip {args:?} failed: {st:?}"
            );
        };
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ip(&["-n", &ns.0, "addr", "add", "198.18.0.1/32", "dev", "lo"]);
        ns
    }

    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, prog]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn ringswarm_seeds_transmission_gets_in_netns() {
    let t = "ringswarm_seeds_transmission_gets_in_netns";
    if !require(have_transmission(), t, "transmission-daemon") {
        return;
    }
    if !is_root() || !runs_ok("ip", &["netns", "list"]) {
        // Not a missing tool: network namespaces need root (CI runs as root).
        skip_note(&format!(
            "skipped: {t}: needs root and `ip netns` (Transmission never dials 127.0.0.0/8)"
        ));
        return;
    }
    let dir = scratch("tr-get");
    let (src, dst, torrent) = (
        dir.path().join("src"),
        dir.path().join("dst"),
        dir.path().join("t.torrent"),
    );
    write_tree(&src, SMALL_MULTI);
    ringswarm_create(&src.join("blob"), &torrent, dir.path());

    let ns = Netns::new();
    // Drop order: the guards (declared after `ns`) stop before the namespace goes.
    let mut seed_cmd = ns.cmd(ringswarm());
    seed_cmd
        .arg("seed")
        .arg(&torrent)
        .arg(&src)
        .args(["--listen", "198.18.0.1:0"]);
    let mut seed = Guard::spawn("ringswarm-seed", seed_cmd, dir.path());
    let addr = seed.wait_listening(READY_TIMEOUT, &[]);

    let mut get_cmd = ns.cmd(PYTHON);
    get_cmd
        .arg(script("tr_peer.py"))
        .args([
            "get",
            "--recheck",
            "--ip",
            "198.18.0.1",
            "--timeout",
            &TRANSFER_TIMEOUT.as_secs().to_string(),
        ])
        .arg("--torrent")
        .arg(&torrent)
        .arg("--dest")
        .arg(&dst)
        .args(["--peer", &addr.to_string()]);
    let mut get = Guard::spawn("tr-get", get_cmd, dir.path());
    get.expect_success(TRANSFER_TIMEOUT + Duration::from_secs(30), &[&seed]);
    // Transmission 3 writes BEP 47 pad files as real files under `.pad/`; compare real files only.
    assert_same_tree(&src, &dst, SMALL_MULTI, &[&get, &seed]);
}
