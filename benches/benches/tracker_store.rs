//! Tracker store: cost of one announce (store update + topology-ordered peer list of 50),
//! in a small-swarm world (10 000 torrents × 50 peers) and a large one (one torrent of
//! 100 000 peers plus 18 000 torrents × 50 peers: 1 000 000 peers in all), and the cost of
//! issuing and checking a connection id (runs on every packet).
//!
//! Peers are spread over 4 dcs × 25 racks; every announcer has a place, so topology
//! ordering is on. Each iteration is a re-announce of an existing peer (the steady state of
//! a fleet), cycling through 4096 pre-built requests over different torrents and racks.

#![forbid(unsafe_code)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringswarm_engine::tracker::store::{
    AnnounceIn, ConnectionIds, Event, InfoHash, Store, StoreConfig,
};
use ringswarm_engine::tracker::topology::Place;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

const DCS: u32 = 4;
const RACKS_PER_DC: u32 = 25;

fn ih(n: u32) -> InfoHash {
    let mut h = [0u8; 20];
    h[..4].copy_from_slice(&n.to_be_bytes());
    h[4] = 0x5a;
    h
}

fn request(torrent: u32, peer: u32) -> AnnounceIn {
    let mut peer_id = [0u8; 20];
    peer_id[..4].copy_from_slice(&peer.to_le_bytes());
    peer_id[4..8].copy_from_slice(&torrent.to_le_bytes());
    let rack = peer % (DCS * RACKS_PER_DC);
    AnnounceIn {
        info_hash: ih(torrent),
        peer_id,
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | peer)), 40000),
        ip: None,
        port: 6881,
        event: Event::None,
        // every tenth peer a seed
        left: u64::from(!peer.is_multiple_of(10)) * 1_000_000,
        downloaded: 1,
        numwant: -1,
        place: Place {
            dc: (rack / RACKS_PER_DC + 1) as u16,
            rack: (rack + 1) as u16,
        },
    }
}

fn store() -> Store {
    let config = StoreConfig {
        max_torrents: 1_000_000,
        max_peers_per_torrent: 1_000_000,
        max_peers: 2_000_000,
        // The worlds are built by one "source" creating every torrent.
        max_new_torrents_per_address: usize::MAX,
        interval: 1800,
        ..StoreConfig::default()
    };
    Store::new(config, ConnectionIds::new_random())
}

/// xorshift: picks which pre-built requests to replay.
fn picks(n: usize, range: u32) -> Vec<u32> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x % range
        })
        .collect()
}

fn small_world() -> (Store, Vec<AnnounceIn>) {
    let mut s = store();
    let mut out = Vec::with_capacity(200);
    for t in 0..10_000u32 {
        for i in 0..50u32 {
            s.announce(&request(t, t * 50 + i), 0, &mut out).unwrap();
        }
    }
    let reqs = picks(4096, 500_000)
        .into_iter()
        .map(|p| request(p / 50, p))
        .collect();
    (s, reqs)
}

fn large_world() -> (Store, Vec<AnnounceIn>) {
    let mut s = store();
    let mut out = Vec::with_capacity(200);
    for i in 0..100_000u32 {
        s.announce(&request(0, i), 0, &mut out).unwrap();
    }
    for t in 1..=18_000u32 {
        for i in 0..50u32 {
            s.announce(&request(t, 100_000 + t * 50 + i), 0, &mut out)
                .unwrap();
        }
    }
    assert_eq!(s.peer_count(), 1_000_000);
    let reqs = picks(4096, 100_000)
        .into_iter()
        .map(|p| request(0, p))
        .collect();
    (s, reqs)
}

fn bench_world(c: &mut Criterion, name: &str, (mut s, reqs): (Store, Vec<AnnounceIn>)) {
    eprintln!(
        "{name}: {} peers, {} torrents, ~{:.1} bytes per peer",
        s.peer_count(),
        s.torrent_count(),
        s.approx_bytes() as f64 / s.peer_count() as f64
    );
    let mut g = c.benchmark_group("tracker_announce");
    g.throughput(Throughput::Elements(1));
    g.sample_size(30);
    let mut out = Vec::with_capacity(200);
    let mut i = 0usize;
    // Fixed time: every stored peer stays live (announced at 0, expiry after 1920 s), as in
    // a steady-state fleet whose peers keep re-announcing.
    let now = 1u64;
    g.bench_function(name, |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            let r = s.announce(black_box(&reqs[i]), now, &mut out);
            black_box((&r, out.len()));
        })
    });
    g.finish();
}

fn announce_small(c: &mut Criterion) {
    bench_world(c, "small_10k_torrents_x50", small_world());
}

fn announce_large(c: &mut Criterion) {
    bench_world(c, "large_100k_swarm_1M_total", large_world());
}

fn connection_ids(c: &mut Criterion) {
    let ids = ConnectionIds::new_random();
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), 40000);
    let id = ids.issue(addr, 1000);
    let mut g = c.benchmark_group("tracker_connection_id");
    g.throughput(Throughput::Elements(1));
    g.bench_function("issue", |b| {
        b.iter(|| ids.issue(black_box(addr), black_box(1000)))
    });
    // Worst case for check: a bad id (both buckets are hashed).
    g.bench_function("check_bad", |b| {
        b.iter(|| ids.check(black_box(id ^ 1), black_box(addr), black_box(1000)))
    });
    g.finish();
}

criterion_group!(benches, connection_ids, announce_small, announce_large);
criterion_main!(benches);
