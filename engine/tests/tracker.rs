//! The UDP tracker over real sockets on loopback: BEP 15 exchanges, forged connection ids,
//! garbage, `stopped`, scrape counts, and rack-first peer lists from the topology file.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use ringswarm_engine::tracker::proto::{AnnounceRequest, Event, Family, Request, Response};
use ringswarm_engine::tracker::server::{TrackerConfig, TrackerServer};
use ringswarm_engine::tracker::store::StoreConfig;

const HASH: [u8; 20] = [7; 20];

fn start(topology: Option<&str>) -> (TrackerServer, Option<tempfile::NamedTempFile>) {
    let file = topology.map(|t| {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), t).unwrap();
        f
    });
    let server = TrackerServer::start(TrackerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        topology: file.as_ref().map(|f| f.path().to_path_buf()),
        cores: 1,
        recv_buffer: 1 << 20,
        store: StoreConfig {
            rng_seed: Some(1),
            ..StoreConfig::default()
        },
    })
    .unwrap();
    (server, file)
}

/// A client socket on its own loopback address.
struct Client {
    sock: UdpSocket,
    tracker: SocketAddr,
    connection_id: u64,
}

impl Client {
    fn new(ip: &str, tracker: SocketAddr) -> Client {
        let sock = UdpSocket::bind((ip, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut c = Client {
            sock,
            tracker,
            connection_id: 0,
        };
        match c.exchange(&Request::Connect { transaction_id: 1 }) {
            Some(Response::Connect {
                transaction_id: 1,
                connection_id,
            }) => c.connection_id = connection_id,
            other => panic!("no connect answer: {other:?}"),
        }
        c
    }

    fn exchange(&self, req: &Request) -> Option<Response> {
        let mut out = Vec::new();
        req.encode_into(&mut out).unwrap();
        self.sock.send_to(&out, self.tracker).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = self.sock.recv_from(&mut buf).ok()?;
        Some(Response::decode(&buf[..n], Family::V4).unwrap())
    }

    fn announce(&self, port: u16, left: u64, event: Event, num_want: i32) -> Option<Response> {
        self.exchange(&Request::Announce(AnnounceRequest {
            connection_id: self.connection_id,
            transaction_id: 2,
            info_hash: HASH,
            peer_id: [port as u8; 20],
            downloaded: 0,
            left,
            uploaded: 0,
            event,
            ip: 0,
            key: 0,
            num_want,
            port,
            url_data: None,
        }))
    }

    fn peers(&self, port: u16, num_want: i32) -> Vec<SocketAddr> {
        match self.announce(port, 100, Event::None, num_want) {
            Some(Response::Announce { peers, .. }) => peers,
            other => panic!("no announce answer: {other:?}"),
        }
    }
}

#[test]
fn announces_scrapes_and_stopped() {
    let (server, _) = start(None);
    let a = Client::new("127.0.0.1", server.local_addr());
    let b = Client::new("127.0.0.2", server.local_addr());
    assert_eq!(a.peers(7001, 50), vec![]);
    assert_eq!(b.peers(7002, 50), vec!["127.0.0.1:7001".parse().unwrap()]);
    assert_eq!(a.peers(7001, 50), vec!["127.0.0.2:7002".parse().unwrap()]);
    // A seed finishing counts as completed; scrape is exact.
    assert!(a.announce(7001, 0, Event::Completed, 50).is_some());
    let scrape = a.exchange(&Request::Scrape {
        connection_id: a.connection_id,
        transaction_id: 3,
        info_hashes: vec![HASH, [9; 20]],
    });
    match scrape {
        Some(Response::Scrape { entries, .. }) => {
            assert_eq!(
                (
                    entries[0].seeders,
                    entries[0].leechers,
                    entries[0].completed
                ),
                (1, 1, 1)
            );
            assert_eq!(
                (
                    entries[1].seeders,
                    entries[1].leechers,
                    entries[1].completed
                ),
                (0, 0, 0)
            );
        }
        other => panic!("no scrape answer: {other:?}"),
    }
    // `stopped` removes b from this torrent.
    assert!(b.announce(7002, 100, Event::Stopped, 50).is_some());
    assert_eq!(a.peers(7001, 50), vec![]);
    assert_eq!(server.sizes(), (1, 1));
}

#[test]
fn forged_connection_ids_and_garbage_are_dropped_and_counted() {
    let (server, _) = start(None);
    let mut a = Client::new("127.0.0.1", server.local_addr());
    a.connection_id ^= 0x5a5a;
    assert!(
        a.announce(7001, 100, Event::Started, 50).is_none(),
        "a forged id must get no answer"
    );
    // An id issued to another address is no good here either.
    let other = Client::new("127.0.0.3", server.local_addr());
    a.connection_id = other.connection_id;
    assert!(a.announce(7001, 100, Event::Started, 50).is_none());
    for junk in [&b"hello"[..], &[0u8; 16][..], &[0xffu8; 98][..], &[][..]] {
        a.sock.send_to(junk, server.local_addr()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let c = server.counters();
    assert_eq!(
        c.bad_connection_ids
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    assert!(
        c.garbage.load(std::sync::atomic::Ordering::Relaxed) >= 3,
        "{c:?}"
    );
    // Still serving.
    let fresh = Client::new("127.0.0.1", server.local_addr());
    assert_eq!(fresh.peers(7005, 50), vec![]);
}

#[test]
fn peer_lists_put_the_own_rack_first_and_keep_a_remote_minimum() {
    let topology = r#"
[[subnet]]
cidr = "127.0.1.0/24"
dc = "east"
rack = "r1"

[[subnet]]
cidr = "127.0.2.0/24"
dc = "east"
rack = "r2"

[[subnet]]
cidr = "127.0.3.0/24"
dc = "west"
rack = "r3"
"#;
    let (server, _f) = start(Some(topology));
    let mut clients = Vec::new();
    for rack in 1..=3 {
        for host in 1..=4 {
            let ip = format!("127.0.{rack}.{host}");
            let c = Client::new(&ip, server.local_addr());
            let port = 7000 + rack * 10 + host;
            c.announce(port, 100, Event::Started, 0).unwrap();
            clients.push((ip, port, c));
        }
    }
    // A leecher in rack r1 asks for 5: no seed in its rack, so at least 2 come from other
    // racks of its dc, and no seed in its dc, so at least 2 from other dcs; the rest are
    // its rack-mates, and they come first, then its dc.
    let (_, port, me) = &clients[0];
    let peers = me.peers(*port, 5);
    assert_eq!(peers.len(), 5, "{peers:?}");
    let rack_of = |p: &SocketAddr| match p.ip() {
        std::net::IpAddr::V4(v4) => v4.octets()[2],
        _ => 0,
    };
    let racks: Vec<u8> = peers.iter().map(rack_of).collect();
    assert_eq!(racks, [1, 2, 2, 3, 3], "{peers:?}");
    // Asking for everything: rack r1, then the same dc (r2), then the rest (r3).
    let all: Vec<u8> = me.peers(*port, 50).iter().map(rack_of).collect();
    assert_eq!(all.len(), 11);
    let first_r2 = all.iter().position(|&r| r == 2).unwrap();
    let first_r3 = all.iter().position(|&r| r == 3).unwrap();
    assert!(all[..3].iter().all(|&r| r == 1), "{all:?}");
    assert!(
        first_r2 < first_r3 && all[first_r3..].iter().all(|&r| r == 3),
        "{all:?}"
    );
}
