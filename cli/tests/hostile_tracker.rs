//! Issue 11, item 4: a `ringswarm tracker` that cannot be hijacked or filled by one host.
//!
//! Every test starts the real `ringswarm tracker --listen 127.0.0.1:0` and talks BEP 15 to
//! it over `std::net::UdpSocket`s bound to different loopback addresses (127.0.0.x: Linux
//! routes all of 127/8 to `lo`), one of them hostile. The tracker's view is read back with
//! scrape and announce answers. Nothing here is exempt by address: loopback gets the same
//! bounds as anyone.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringswarm_engine::tracker::proto::{
    AnnounceRequest, Event, Family, Request, Response, ScrapeEntry,
};
use support::{ringswarm, scratch, Guard};

const TIMEOUT: Duration = Duration::from_secs(30);

/// `ringswarm tracker` on 127.0.0.1 with `extra` flags; returns it and its address.
fn start_tracker(dir: &std::path::Path, extra: &[&str]) -> (Guard, SocketAddr) {
    let mut cmd = Command::new(ringswarm());
    cmd.args(["tracker", "--listen", "127.0.0.1:0", "--interval", "600"])
        .args(extra);
    let mut g = Guard::spawn("tracker", cmd, dir);
    let addr = g
        .wait_line("tracker listening on udp://", TIMEOUT, &[])
        .parse()
        .expect("tracker address");
    (g, addr)
}

fn hash(n: u32) -> [u8; 20] {
    let mut h = [0x11u8; 20];
    h[..4].copy_from_slice(&n.to_be_bytes());
    h
}

fn peer_id(n: u32) -> [u8; 20] {
    let mut p = *b"-HX0001-............";
    p[8..12].copy_from_slice(&n.to_be_bytes());
    p
}

/// A BEP 15 client on its own loopback address.
struct Client {
    sock: UdpSocket,
    tracker: SocketAddr,
    connection_id: u64,
    tid: u32,
}

impl Client {
    fn new(ip: [u8; 4], tracker: SocketAddr) -> Client {
        let sock = UdpSocket::bind((Ipv4Addr::from(ip), 0)).expect("bind a loopback address");
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut c = Client {
            sock,
            tracker,
            connection_id: 0,
            tid: u32::from(ip[3]) << 24,
        };
        match c.exchange(&Request::Connect { transaction_id: 0 }) {
            Response::Connect { connection_id, .. } => c.connection_id = connection_id,
            other => panic!("connect answered with {other:?}"),
        }
        c
    }

    fn ip(&self) -> IpAddr {
        self.sock.local_addr().unwrap().ip()
    }

    /// Sends `req` (with a fresh transaction id) and returns the matching answer; up to 20
    /// tries of 300 ms.
    fn exchange(&mut self, req: &Request) -> Response {
        let mut req = req.clone();
        for _ in 0..20 {
            self.tid = self.tid.wrapping_add(1);
            match &mut req {
                Request::Connect { transaction_id } => *transaction_id = self.tid,
                Request::Announce(a) => a.transaction_id = self.tid,
                Request::Scrape { transaction_id, .. } => *transaction_id = self.tid,
            }
            let mut out = Vec::new();
            req.encode_into(&mut out).unwrap();
            self.sock.send_to(&out, self.tracker).unwrap();
            let end = Instant::now() + Duration::from_millis(300);
            let mut buf = [0u8; 2048];
            while Instant::now() < end {
                let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                    break;
                };
                let Ok(resp) = Response::decode(&buf[..n], Family::V4) else {
                    continue;
                };
                let tid = match &resp {
                    Response::Connect { transaction_id, .. }
                    | Response::Announce { transaction_id, .. }
                    | Response::Scrape { transaction_id, .. }
                    | Response::Error { transaction_id, .. } => *transaction_id,
                };
                if tid == self.tid {
                    return resp;
                }
            }
        }
        panic!("the tracker did not answer {req:?} in 20 tries");
    }

    fn announce_req(&self, torrent: u32, id: [u8; 20], port: u16, event: Event) -> Request {
        Request::Announce(AnnounceRequest {
            connection_id: self.connection_id,
            transaction_id: 0,
            info_hash: hash(torrent),
            peer_id: id,
            downloaded: 0,
            left: 1000,
            uploaded: 0,
            event,
            ip: 0,
            key: 0,
            num_want: 200,
            port,
            url_data: None,
        })
    }

    /// Announces; `Ok(peers)` or `Err(the tracker's error message)`.
    fn announce(
        &mut self,
        torrent: u32,
        id: [u8; 20],
        port: u16,
        event: Event,
    ) -> Result<Vec<SocketAddr>, String> {
        match self.exchange(&self.announce_req(torrent, id, port, event)) {
            Response::Announce { peers, .. } => Ok(peers),
            Response::Error { message, .. } => Err(message),
            other => panic!("announce answered with {other:?}"),
        }
    }

    fn scrape(&mut self, torrents: &[u32]) -> Vec<ScrapeEntry> {
        let mut all = Vec::new();
        for chunk in torrents.chunks(70) {
            let req = Request::Scrape {
                connection_id: self.connection_id,
                transaction_id: 0,
                info_hashes: chunk.iter().map(|&t| hash(t)).collect(),
            };
            match self.exchange(&req) {
                Response::Scrape { entries, .. } => all.extend(entries),
                other => panic!("scrape answered with {other:?}"),
            }
        }
        all
    }

    /// Peers the tracker holds in `torrent` (seeders + leechers).
    fn held(&mut self, torrent: u32) -> u32 {
        let e = self.scrape(&[torrent])[0];
        e.seeders + e.leechers
    }
}

fn v4(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn a_peer_id_reused_from_another_address_neither_replaces_nor_stops_the_original() {
    let dir = scratch("hostile-tracker-hijack");
    let (_tracker, addr) = start_tracker(dir.path(), &["--cores", "1"]);
    let mut real = Client::new([127, 0, 0, 1], addr);
    let mut hijacker = Client::new([127, 0, 0, 2], addr);
    let mut observer = Client::new([127, 0, 0, 3], addr);
    let id = peer_id(1);
    real.announce(1, id, 7001, Event::Started).unwrap();

    // Same peer id, other address: a new port, a stop, a "completed", another stop.
    let _ = hijacker.announce(1, id, 9999, Event::Started);
    let _ = hijacker.announce(1, id, 9999, Event::Stopped);
    let _ = hijacker.announce(1, id, 9998, Event::Completed);
    let _ = hijacker.announce(1, id, 9998, Event::Stopped);

    let peers = observer
        .announce(1, peer_id(3), 7003, Event::Started)
        .unwrap();
    assert!(
        peers.contains(&v4("127.0.0.1:7001")),
        "the original entry is gone or moved: {peers:?}"
    );
    assert!(
        !peers.iter().any(|p| p.ip() == hijacker.ip()),
        "the hijacker is listed: {peers:?}"
    );
    let e = observer.scrape(&[1])[0];
    assert_eq!(
        (e.seeders, e.leechers),
        (0, 2),
        "the original must still be a leecher"
    );

    // The original's own `stopped` still works.
    real.announce(1, id, 7001, Event::Stopped).unwrap();
    assert_eq!(observer.held(1), 1);
}

#[test]
fn one_address_announcing_1000_peer_ids_holds_at_most_the_cap() {
    let dir = scratch("hostile-tracker-cap");
    let (_tracker, addr) = start_tracker(dir.path(), &["--cores", "1"]);
    let mut flood = Client::new([127, 0, 0, 4], addr);
    let mut refused = 0;
    for i in 0..1000u32 {
        if let Err(msg) = flood.announce(7, peer_id(i), 20000 + i as u16, Event::Started) {
            assert!(msg.contains("127.0.0.4"), "{msg}");
            refused += 1;
        }
    }
    let mut real = Client::new([127, 0, 0, 5], addr);
    assert_eq!(
        real.held(7),
        8,
        "default cap: 8 peers per address and torrent"
    );
    assert_eq!(refused, 992);
    // The real host is admitted and sees at most 8 of the flood.
    let peers = real
        .announce(7, peer_id(5000), 7005, Event::Started)
        .unwrap();
    assert_eq!(peers.len(), 8);

    // The cap is a flag.
    let dir = scratch("hostile-tracker-cap-flag");
    let (_tracker, addr) = start_tracker(
        dir.path(),
        &["--cores", "1", "--max-peers-per-address", "20"],
    );
    let mut flood = Client::new([127, 0, 0, 4], addr);
    for i in 0..100u32 {
        let _ = flood.announce(7, peer_id(i), 20000 + i as u16, Event::Started);
    }
    assert_eq!(flood.held(7), 20);
}

#[test]
fn one_address_creates_a_bounded_number_of_torrents_per_minute() {
    let dir = scratch("hostile-tracker-create");
    let (_tracker, addr) = start_tracker(dir.path(), &["--cores", "2"]);
    let mut flood = Client::new([127, 0, 0, 6], addr);
    let torrents: Vec<u32> = (1000..1600).collect();
    for &t in &torrents {
        let _ = flood.announce(t, peer_id(t), 7006, Event::Started);
    }
    let mut real = Client::new([127, 0, 0, 7], addr);
    let created = real
        .scrape(&torrents)
        .iter()
        .filter(|e| e.leechers > 0)
        .count();
    // Default 256 a minute; the loop may straddle one minute boundary.
    assert!(
        (256..=512).contains(&created),
        "{created} of 600 torrents created from one address"
    );
    // Another address still creates torrents; the flooder still announces to its own.
    real.announce(5000, peer_id(1), 7007, Event::Started)
        .unwrap();
    flood
        .announce(torrents[0], peer_id(torrents[0]), 7006, Event::None)
        .unwrap();
}

#[test]
fn max_peers_bounds_the_whole_tracker_across_cores() {
    let dir = scratch("hostile-tracker-max-peers");
    let (_tracker, addr) = start_tracker(dir.path(), &["--cores", "2", "--max-peers", "50"]);
    let mut refused = 0;
    for host in 1..=40u8 {
        let mut c = Client::new([127, 0, 1, host], addr);
        for t in 0..5u32 {
            match c.announce(100 + t, peer_id(u32::from(host)), 7000, Event::Started) {
                Ok(_) => {}
                Err(msg) => {
                    assert!(msg.contains("full"), "{msg}");
                    refused += 1;
                }
            }
        }
    }
    let mut observer = Client::new([127, 0, 0, 8], addr);
    let total: u32 = observer
        .scrape(&(100..105).collect::<Vec<_>>())
        .iter()
        .map(|e| e.seeders + e.leechers)
        .sum();
    assert_eq!(total, 50, "--max-peers 50 over 200 announces");
    assert_eq!(refused, 150);
    // A stop frees room for someone else.
    let mut c = Client::new([127, 0, 1, 1], addr);
    c.announce(100, peer_id(1), 7000, Event::Stopped).unwrap();
    observer
        .announce(100, peer_id(8), 7008, Event::Started)
        .unwrap();
}

#[test]
fn a_real_host_keeps_getting_answers_while_one_address_floods() {
    let dir = scratch("hostile-tracker-flood");
    let (_tracker, addr) = start_tracker(dir.path(), &["--cores", "1"]);
    let mut a = Client::new([127, 0, 0, 10], addr);
    let mut b = Client::new([127, 0, 0, 11], addr);
    a.announce(9, peer_id(10), 7010, Event::Started).unwrap();
    b.announce(9, peer_id(11), 7011, Event::Started).unwrap();

    // The flood: fresh peer ids on the real hosts' torrent and fresh torrents, as fast as
    // one thread sends, for at most 4 s / 400 000 packets.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flooder = {
        let stop = stop.clone();
        let sent = sent.clone();
        let flood = Client::new([127, 0, 0, 66], addr);
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(4);
            let mut out = Vec::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) && Instant::now() < end && i < 400_000 {
                let torrent = if i.is_multiple_of(2) { 9 } else { 10_000 + i };
                out.clear();
                flood
                    .announce_req(torrent, peer_id(100_000 + i), 9000, Event::Started)
                    .encode_into(&mut out)
                    .unwrap();
                let _ = flood.sock.send_to(&out, flood.tracker);
                i += 1;
            }
            sent.store(u64::from(i), Ordering::Relaxed);
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut c = Client::new([127, 0, 0, 12], addr);
    let mut answers = 0;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(2) {
        let peers = c.announce(9, peer_id(12), 7012, Event::None).unwrap();
        assert!(
            peers.contains(&v4("127.0.0.10:7010")) && peers.contains(&v4("127.0.0.11:7011")),
            "the real peers are missing: {peers:?}"
        );
        assert!(peers.len() <= 2 + 8, "{} peers listed", peers.len());
        answers += 1;
    }
    stop.store(true, Ordering::Relaxed);
    flooder.join().unwrap();
    eprintln!(
        "{answers} answers to the real host while the flood sent {} packets",
        sent.load(Ordering::Relaxed)
    );
    assert!(answers > 0);
    assert!(c.held(9) <= 3 + 8);
}
