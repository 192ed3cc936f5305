//! Rack-local preference on loopback: hosts on their own 127.0.x.y addresses, placed in
//! racks by a topology file, fetch from one origin. Each piece should enter each rack
//! about once (the bytes the hosts of a rack receive from outside it stay near one copy),
//! the origin should send about one copy in all, and once that copy is out the swarm
//! finishes without the origin.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringswarm_engine::create::{create, CreateOptions};
use ringswarm_engine::metainfo::Metainfo;
use ringswarm_engine::session::{
    Locator, NamedPlace, Session, SessionConfig, TorrentHandle, TorrentMode, TorrentSpec,
};
use ringswarm_engine::tracker::topology::Topology;

mod support;
use support::{pattern, scratch};

const TIMEOUT: Duration = Duration::from_secs(60);

const TOPOLOGY: &str = r#"
[[subnet]]
cidr = "127.0.1.0/24"
dc = "east"
rack = "r1"

[[subnet]]
cidr = "127.0.2.0/24"
dc = "east"
rack = "r2"

[[subnet]]
cidr = "127.0.9.0/24"
dc = "east"
rack = "origin"
"#;

fn placed_session(ip: &str, locator: &Arc<Locator>) -> Session {
    limited_session(ip, locator, None)
}

fn limited_session(ip: &str, locator: &Arc<Locator>, download_rate: Option<u64>) -> Session {
    Session::start(SessionConfig {
        cores: 1,
        listen: Some(format!("{ip}:0").parse().unwrap()),
        locator: locator.clone(),
        max_download_rate: download_rate,
        ..SessionConfig::default()
    })
    .unwrap()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn make_blob(dir: &Path, len: usize) -> (Vec<u8>, Arc<Metainfo>) {
    let blob = pattern(len, 11);
    std::fs::write(dir.join("blob"), &blob).unwrap();
    let meta = create(
        &dir.join("blob"),
        &CreateOptions {
            piece_size: 128 << 10,
            ..CreateOptions::default()
        },
    )
    .unwrap();
    (blob, Arc::new(meta))
}

struct Host {
    rack: &'static str,
    session: Session,
    handle: TorrentHandle,
    dir: tempfile::TempDir,
}

#[test]
fn each_piece_enters_each_rack_about_once() {
    let topology = Topology::from_toml_str(TOPOLOGY, "test topology").unwrap();
    let locator = Arc::new(Locator::new(Some(topology), NamedPlace::default()));
    let src = scratch("racks");
    let (blob, meta) = make_blob(src.path(), 24 << 20);

    // Hosts first, all connected to each other, with nothing to share yet.
    let plan = [
        ("127.0.1.1", "r1"),
        ("127.0.1.2", "r1"),
        ("127.0.1.3", "r1"),
        ("127.0.2.1", "r2"),
        ("127.0.2.2", "r2"),
    ];
    let mut hosts: Vec<Host> = Vec::new();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for (ip, rack) in plan {
        let session = placed_session(ip, &locator);
        let addr = session.listen_addr().unwrap();
        let dir = scratch("racks");
        let handle = session
            .add_torrent(TorrentSpec {
                metainfo: meta.clone(),
                dest: dir.path().into(),
                mode: TorrentMode::Download,
                peers: addrs.clone(),
                resident: false,
            })
            .unwrap();
        addrs.push(addr);
        hosts.push(Host {
            rack,
            session,
            handle,
            dir,
        });
    }
    let others = plan.len() as u32 - 1;
    wait_until("the hosts to connect to each other", || {
        hosts
            .iter()
            .all(|h| h.handle.stats().connected_peers >= others)
    });

    // Then the origin, in a rack of its own, dials every host.
    let origin = placed_session("127.0.9.1", &locator);
    let origin_handle = origin
        .add_torrent(TorrentSpec {
            metainfo: meta.clone(),
            dest: src.path().into(),
            mode: TorrentMode::Seed,
            peers: addrs.clone(),
            resident: false,
        })
        .unwrap();
    wait_until("every host to complete", || {
        hosts.iter().all(|h| {
            let s = h.handle.stats();
            assert!(s.error.is_none(), "{:?}", s.error);
            s.complete
        })
    });

    let size = blob.len() as u64;
    let mut report = String::new();
    for rack in ["r1", "r2"] {
        let entered: u64 = hosts
            .iter()
            .filter(|h| h.rack == rack)
            .map(|h| h.handle.stats().downloaded_outside_rack_bytes)
            .sum();
        report.push_str(&format!(
            "{rack}: {:.2} copies entered; ",
            entered as f64 / size as f64
        ));
        // Nobody in the rack had the blob: at least one copy had to come in.
        assert!(
            entered >= size,
            "rack {rack} took only {entered} bytes from outside ({report})"
        );
        assert!(
            entered <= size + size / 4,
            "rack {rack} took {entered} bytes from outside for a {size}-byte blob ({report})"
        );
    }
    let sent = origin_handle.stats().uploaded_bytes;
    eprintln!(
        "{report}origin sent {:.2} copies",
        sent as f64 / size as f64
    );
    assert!(
        sent <= size + size / 2,
        "the origin sent {sent} bytes for a {size}-byte blob ({report})"
    );
    for h in &hosts {
        let got = std::fs::read(h.dir.path().join("blob")).unwrap();
        assert!(got == blob, "a host's copy differs");
    }
    for h in hosts {
        h.session.shutdown();
    }
    origin.shutdown();
}

#[test]
fn the_swarm_finishes_when_the_origin_and_a_host_die_after_one_copy_is_out() {
    let topology = Topology::from_toml_str(TOPOLOGY, "test topology").unwrap();
    let locator = Arc::new(Locator::new(Some(topology), NamedPlace::default()));
    let src = scratch("racks");
    let (blob, meta) = make_blob(src.path(), 16 << 20);
    let origin = placed_session("127.0.9.1", &locator);
    let origin_addr = origin.listen_addr().unwrap();
    origin
        .add_torrent(TorrentSpec {
            metainfo: meta.clone(),
            dest: src.path().into(),
            mode: TorrentMode::Seed,
            peers: vec![],
            resident: false,
        })
        .unwrap();
    let mut hosts: Vec<Host> = Vec::new();
    let mut addrs = vec![origin_addr];
    for (ip, rack) in [
        ("127.0.1.11", "r1"),
        ("127.0.1.12", "r1"),
        ("127.0.2.11", "r2"),
        ("127.0.2.12", "r2"),
    ] {
        // The host that will die (the first) is fast; the survivors need at least two
        // seconds for 16 MiB, so they hold one copy between them long before any is done.
        let rate = (!hosts.is_empty()).then_some(8 << 20);
        let session = limited_session(ip, &locator, rate);
        let dir = scratch("racks");
        let handle = session
            .add_torrent(TorrentSpec {
                metainfo: meta.clone(),
                dest: dir.path().into(),
                mode: TorrentMode::Download,
                peers: addrs.clone(),
                resident: false,
            })
            .unwrap();
        addrs.push(session.listen_addr().unwrap());
        hosts.push(Host {
            rack,
            session,
            handle,
            dir,
        });
    }
    // Once the hosts that stay hold every piece between them, the origin and one host go.
    let n = meta.piece_count();
    wait_until("one copy among the surviving hosts", || {
        let mut union = ringswarm_engine::bitfield::Bitfield::new(n);
        for h in &hosts[1..] {
            for p in h.handle.verified_pieces().ones() {
                union.set(p);
            }
        }
        union.is_complete()
    });
    assert!(
        hosts[1..].iter().any(|h| !h.handle.stats().complete),
        "every survivor was done before the origin left: the test proves nothing"
    );
    origin.shutdown();
    let gone = hosts.remove(0);
    assert_eq!(gone.rack, "r1");
    gone.session.shutdown();
    wait_until("the surviving hosts to complete", || {
        hosts.iter().all(|h| {
            let s = h.handle.stats();
            assert!(s.error.is_none(), "{:?}", s.error);
            s.complete
        })
    });
    for h in hosts {
        let got = std::fs::read(h.dir.path().join("blob")).unwrap();
        assert!(got == blob, "a surviving host's copy differs");
        h.session.shutdown();
    }
}
