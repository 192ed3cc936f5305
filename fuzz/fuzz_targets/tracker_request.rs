#![no_main]
//! Server side of the UDP tracker: any datagram through `Request::decode`; what decodes
//! must encode and decode to the same request, and an announce is then applied to a small
//! real `Store` (bounds, per-address counts, expiry) with a source address and clock taken
//! from the input, so the store's bookkeeping sees hostile values too.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use ringswarm_engine::tracker::proto::{self, Request};
use ringswarm_engine::tracker::store::{AnnounceIn, ConnectionIds, Store, StoreConfig};
use ringswarm_engine::tracker::topology::{Cidr, Place, Topology};

struct World {
    store: Store,
    topology: Topology,
    peers: Vec<SocketAddr>,
    now: u64,
}

thread_local! {
    static WORLD: RefCell<World> = RefCell::new(World {
        store: Store::new(
            StoreConfig {
                interval: 60,
                grace: 10,
                max_torrents: 16,
                max_peers_per_torrent: 64,
                max_peers_per_address: 3,
                max_new_torrents_per_address: 8,
                max_peers: 200,
                flat_max: 4,
                rng_seed: Some(1),
                trusted: vec![Cidr::parse("10.9.0.0/16").expect("a valid cidr")],
                ..StoreConfig::default()
            },
            ConnectionIds::with_key(7, 60),
        ),
        topology: {
            let mut t = Topology::empty();
            t.set_max_dynamic_names(64);
            t.set_max_names_per_source(4);
            t
        },
        peers: Vec::new(),
        now: 1_000_000,
    });
}

fn source(sel: u8) -> SocketAddr {
    let ip = match sel % 6 {
        0 => IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
        1 => IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
        2 => IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1)),
        3 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        4 => IpAddr::V6(Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped()),
        _ => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(sel))),
    };
    SocketAddr::new(ip, 40000 + u16::from(sel))
}

fuzz_target!(|data: &[u8]| {
    let Ok(req) = Request::decode(data) else {
        return;
    };
    let mut out = Vec::new();
    if req.encode_into(&mut out).is_ok() {
        assert_eq!(Request::decode(&out).as_ref(), Ok(&req));
    }
    let Request::Announce(a) = req else {
        return;
    };
    let sel = a.key as u8;
    let from = source(sel);
    WORLD.with(|w| {
        let mut w = w.borrow_mut();
        let w = &mut *w;
        // The clock moves by up to 255 s per input; sometimes the sweep runs.
        w.now += u64::from((a.key >> 8) as u8);
        if a.key & (1 << 16) != 0 {
            w.store.expire(w.now, 64);
        }
        let (dc, rack) = a
            .url_data
            .as_deref()
            .map(proto::place_from_url_data)
            .unwrap_or_default();
        let place: Place = w
            .topology
            .resolve(from.ip(), dc.as_deref(), rack.as_deref());
        let req = AnnounceIn::from_packet(&a, from, place);
        let now = w.now;
        if w.store.announce(&req, now, &mut w.peers).is_ok() {
            assert!(w.peers.len() <= 200);
        }
        assert!(w.store.peer_count() <= 200);
        assert!(w.store.torrent_count() <= 16);
        assert_eq!(w.store.limits().peers(), w.store.peer_count());
    });
});
