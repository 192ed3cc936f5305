//! Interop with aria2 (Debian's `aria2`), through the `ringswarm` binary, on loopback.
//!
//! - aria2 seeds a torrent made by `mktorrent` → `ringswarm get` fetches it.
//! - `ringswarm seed` serves a torrent made by `ringswarm create` (BEP 47 pad files) →
//!   aria2 downloads it. aria2 opens with HAVE NONE and sends a BITFIELD later; ringswarm
//!   read that as a protocol violation and dropped it until it took a late BITFIELD as a
//!   set of HAVEs. aria2 has no way to be given a peer address, so it finds the seed
//!   through a real `ringswarm tracker` (UDP, BEP 15). aria2 speaks UDP trackers only with
//!   its DHT on: the DHT runs with no entry point and a fresh routing-table file, so it
//!   contacts nobody (aria2 logs "No DHT entry point specified").
//!
//! Every received file is compared byte for byte with its source. When aria2 is missing the
//! test says `skipped: ...` on stderr and returns (it fails under `CI=true`).

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

mod support;
use support::*;

const MIB: usize = 1 << 20;
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);
const READY_TIMEOUT: Duration = Duration::from_secs(60);

const FILES: &[(&str, usize)] = &[
    ("blob/a.bin", 6 * MIB + 4_321),
    ("blob/b/c.bin", 1_234_567),
    ("blob/z.bin", 3),
];

fn have_aria2() -> bool {
    on_path("aria2c")
}

/// A loopback port nothing listens on right now (aria2 cannot be told to pick one and say
/// which).
fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port")
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

/// Waits until something accepts TCP connections on `addr`.
fn wait_accepting(addr: SocketAddr, guard: &mut Guard) {
    let deadline = Instant::now() + READY_TIMEOUT;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() >= deadline {
            guard.fail(
                &[],
                &format!("not listening on {addr} within {READY_TIMEOUT:?}"),
            );
        }
        if let Some(st) = guard.wait_exit(Duration::ZERO) {
            guard.fail(&[], &format!("exited before listening: {st}"));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// aria2 with everything that could reach past loopback turned off (no LPD, no PEX) and its
/// state kept in `home`.
fn aria2(home: &Path, listen_port: u16) -> Command {
    let mut c = Command::new("aria2c");
    c.env("HOME", home).args([
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--enable-dht6=false",
        "--console-log-level=warn",
        "--summary-interval=0",
        "--check-certificate=false",
        &format!("--listen-port={listen_port}"),
    ]);
    c.arg(format!("--log={}", home.join("aria2.log").display()))
        .arg("--log-level=info");
    c
}

#[test]
fn aria2_seeds_ringswarm_gets() {
    let t = "aria2_seeds_ringswarm_gets";
    if !require(have_aria2(), t, "aria2c (Debian package aria2)")
        || !require(on_path("mktorrent"), t, "mktorrent")
    {
        return;
    }
    let dir = scratch("aria2-seed");
    let (src, dst, torrent, home) = (
        dir.path().join("src"),
        dir.path().join("dst"),
        dir.path().join("t.torrent"),
        dir.path().join("home"),
    );
    std::fs::create_dir_all(&home).unwrap();
    write_tree(&src, FILES);
    let mut mk = Command::new("mktorrent");
    mk.args(["-l", "18", "-o"])
        .arg(&torrent)
        .arg(src.join("blob"));
    run("mktorrent", mk, Duration::from_secs(60), dir.path());

    let port = free_tcp_port();
    let mut seed_cmd = aria2(&home, port);
    seed_cmd
        .args([
            "--enable-dht=false",
            "--check-integrity=true",
            "--seed-ratio=0.0",
            "--seed-time=10",
        ])
        .arg(format!("--dir={}", src.display()))
        .arg(&torrent);
    let mut seed = Guard::spawn("aria2-seed", seed_cmd, dir.path());
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_accepting(addr, &mut seed);

    let mut get_cmd = Command::new(ringswarm());
    get_cmd.arg("get").arg(&torrent).arg(&dst).args([
        "--peer",
        &addr.to_string(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let mut get = Guard::spawn("ringswarm-get", get_cmd, dir.path());
    get.expect_success(TRANSFER_TIMEOUT, &[&seed]);
    assert_same_tree(&src, &dst, FILES, &[&get, &seed]);
}

#[test]
fn ringswarm_seeds_aria2_gets_through_the_tracker() {
    let t = "ringswarm_seeds_aria2_gets_through_the_tracker";
    if !require(have_aria2(), t, "aria2c (Debian package aria2)") {
        return;
    }
    let dir = scratch("aria2-get");
    let (src, dst, torrent, home) = (
        dir.path().join("src"),
        dir.path().join("dst"),
        dir.path().join("t.torrent"),
        dir.path().join("home"),
    );
    std::fs::create_dir_all(&home).unwrap();
    write_tree(&src, FILES);

    let mut tracker_cmd = Command::new(ringswarm());
    tracker_cmd.args(["tracker", "--listen", "127.0.0.1:0"]);
    let mut tracker = Guard::spawn("ringswarm-tracker", tracker_cmd, dir.path());
    let url = tracker.wait_line("tracker listening on ", READY_TIMEOUT, &[]);
    let url = url.split_whitespace().next().unwrap().to_owned();

    let mut create = Command::new(ringswarm());
    create
        .arg("create")
        .arg(src.join("blob"))
        .arg("-o")
        .arg(&torrent)
        .args(["--tracker", &url]);
    run(
        "ringswarm-create",
        create,
        Duration::from_secs(60),
        dir.path(),
    );

    let mut seed_cmd = Command::new(ringswarm());
    seed_cmd
        .arg("seed")
        .arg(&torrent)
        .arg(&src)
        .args(["--listen", "127.0.0.1:0"]);
    let mut seed = Guard::spawn("ringswarm-seed", seed_cmd, dir.path());
    seed.wait_listening(READY_TIMEOUT, &[&tracker]);

    let mut get_cmd = aria2(&home, free_tcp_port());
    get_cmd
        .args([
            "--enable-dht=true",
            &format!("--dht-listen-port={}", free_udp_port()),
            "--seed-time=0",
            "--bt-stop-timeout=100",
        ])
        .arg(format!(
            "--dht-file-path={}",
            home.join("dht.dat").display()
        ))
        .arg(format!("--dir={}", dst.display()))
        .arg(&torrent);
    let mut get = Guard::spawn("aria2-get", get_cmd, dir.path());
    get.expect_success(TRANSFER_TIMEOUT, &[&seed, &tracker]);
    // aria2 writes BEP 47 pad files as real files; compare the torrent's own files only.
    assert_same_tree(&src, &dst, FILES, &[&get, &seed, &tracker]);
    let log = std::fs::read_to_string(home.join("aria2.log")).unwrap_or_default();
    assert!(
        log.contains("No DHT entry point specified"),
        "aria2's DHT must have had no entry point"
    );
}
