//! Issue 13, item 3: the fleet's topology given once, at `publish`, and carried by the
//! signed feed. Real processes on loopback: two racks are two /24s of 127/8 (Linux routes
//! all of it to `lo`), agents listen on an address in each and carry no topology flag.

mod support;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use ringswarm_engine::tracker::proto::{AnnounceRequest, Event, Family, Request, Response};
use serde_json::Value;
use support::release::{http_get, Agent, Fleet, TIMEOUT};
use support::{dump_logs, ringswarm, Guard};

const TOPOLOGY: &str = r#"
[[subnet]]
cidr = "127.0.0.0/24"
dc = "lo"
rack = "origin"

[[subnet]]
cidr = "127.0.1.0/24"
dc = "lo"
rack = "r1"

[[subnet]]
cidr = "127.0.2.0/24"
dc = "lo"
rack = "r2"
"#;

/// A free TCP port on `ip` (bound, read, released: the agent binds it right after).
fn free_port(ip: [u8; 4]) -> u16 {
    TcpListener::bind((Ipv4Addr::from(ip), 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An agent on the fleet's feed listening on `ip:port`, with `extra` flags.
fn agent_at(fleet: &Fleet, host: &str, listen: SocketAddr, extra: &[&str]) -> Agent {
    agent_on(fleet, &fleet.feed_url, host, listen, extra)
}

/// [`agent_at`] on the feed at `feed`.
fn agent_on(fleet: &Fleet, feed: &str, host: &str, listen: SocketAddr, extra: &[&str]) -> Agent {
    let dir = fleet.base().join(host);
    let mut cmd = Command::new(ringswarm());
    cmd.args(["-v", "agent", "--feed", feed, "--poll", "200ms"])
        .args(["--listen", &listen.to_string(), "--cores", "1", "--pubkey"])
        .arg(fleet.base().join("fleet.pub"))
        .arg("--dir")
        .arg(&dir)
        .args(extra);
    let mut guard = Guard::spawn(host, cmd, fleet.base());
    guard.wait_line("status socket ", TIMEOUT, &fleet.others());
    Agent { dir, guard }
}

/// The agent's place in its status, once it has one.
fn wait_place(agent: &Agent, fleet: &Fleet, rack: &str) -> Value {
    let s = agent.wait_for(&format!("placed in rack {rack}"), fleet, |s| {
        s["place"]["rack"] == rack
    });
    s["place"].clone()
}

/// Announces `info_hash` to the tracker as a peer stating rack `rack` of dc `lo` (BEP 41
/// URL data) and returns the peers it answers, in its order.
fn peers_for_rack(tracker: SocketAddr, info_hash: [u8; 20], rack: &str) -> Vec<SocketAddr> {
    let sock = UdpSocket::bind("127.0.0.9:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let exchange = |req: &Request, tid: u32| -> Response {
        for _ in 0..20 {
            let mut out = Vec::new();
            req.encode_into(&mut out).unwrap();
            sock.send_to(&out, tracker).unwrap();
            let mut buf = [0u8; 2048];
            let end = Instant::now() + Duration::from_millis(300);
            while Instant::now() < end {
                let Ok((n, _)) = sock.recv_from(&mut buf) else {
                    break;
                };
                match Response::decode(&buf[..n], Family::V4) {
                    Ok(r @ Response::Connect { transaction_id, .. })
                    | Ok(r @ Response::Announce { transaction_id, .. })
                        if transaction_id == tid =>
                    {
                        return r
                    }
                    _ => {}
                }
            }
        }
        panic!("the tracker did not answer {req:?}");
    };
    let Response::Connect { connection_id, .. } =
        exchange(&Request::Connect { transaction_id: 7 }, 7)
    else {
        unreachable!()
    };
    let announce = Request::Announce(AnnounceRequest {
        connection_id,
        transaction_id: 8,
        info_hash,
        peer_id: *b"-PROBE0-............",
        downloaded: 0,
        left: 1,
        uploaded: 0,
        event: Event::Started,
        ip: 0,
        key: 0,
        num_want: 50,
        port: 9,
        url_data: Some(format!("/announce?dc=lo&rack={rack}").into_bytes()),
    });
    match exchange(&announce, 8) {
        Response::Announce { peers, .. } => peers,
        other => panic!("announce answered with {other:?}"),
    }
}

fn hash_of(hex: &str) -> [u8; 20] {
    ringswarm_engine::feed::parse_hash(hex).expect("an info-hash in the status")
}

#[test]
fn agents_without_a_topology_flag_take_their_rack_from_the_feed() {
    let fleet = Fleet::start("topology-feed");
    let topology = fleet.base().join("fleet-topology.toml");
    std::fs::write(&topology, TOPOLOGY).unwrap();
    let topology_arg = topology.to_str().unwrap();
    fleet.publish_with("index", "v1", 1, &["--topology", topology_arg]);

    let a1: SocketAddr = (Ipv4Addr::new(127, 0, 1, 5), free_port([127, 0, 1, 5])).into();
    let a2: SocketAddr = (Ipv4Addr::new(127, 0, 2, 5), free_port([127, 0, 2, 5])).into();
    let agent1 = agent_at(&fleet, "host-r1", a1, &[]);
    let agent2 = agent_at(&fleet, "host-r2", a2, &[]);
    let p1 = wait_place(&agent1, &fleet, "r1");
    let p2 = wait_place(&agent2, &fleet, "r2");
    for (p, addr) in [(&p1, a1), (&p2, a2)] {
        assert_eq!(p["dc"], "lo", "{p}");
        assert_eq!(p["topology"], "feed", "{p}");
        assert_eq!(p["address"], addr.ip().to_string(), "{p}");
    }
    let v1 = agent1.wait_current("index", "v1", &fleet);
    agent2.wait_current("index", "v1", &fleet);

    // The tracker (no topology of its own) placed each agent by its announce's URL data:
    // a peer of rack r1 hears of agent 1 first, a peer of rack r2 of agent 2.
    let tracker: SocketAddr = fleet
        .tracker_url
        .trim_start_matches("udp://")
        .parse()
        .unwrap();
    let info_hash = hash_of(v1["info_hash"].as_str().unwrap());
    // The origin (no --topology either) follows the feed's too.
    let origin: SocketAddr = fleet.guards[1]
        .stdout()
        .lines()
        .find_map(|l| l.trim().strip_prefix("listening on "))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("the origin's listening line");
    for (rack, own, other) in [("r1", a1, a2), ("r2", a2, a1), ("origin", origin, a1)] {
        // Shuffled within a class: asked a few times, the rack peer is always first.
        for _ in 0..4 {
            let peers = peers_for_rack(tracker, info_hash, rack);
            let ports: Vec<u16> = peers.iter().map(|p| p.port()).collect();
            if ports.first() != Some(&own.port()) || !ports.contains(&other.port()) {
                dump_logs(&[&agent1.guard, &agent2.guard]);
                panic!("rack {rack}: the tracker answered {peers:?}; {own} should lead");
            }
        }
    }

    // The origin serves the feed's topology for trackers; a later publish without
    // --topology keeps it in the feed.
    let http = fleet
        .feed_url
        .trim_start_matches("http://")
        .trim_end_matches("/feed.json")
        .to_owned();
    assert_eq!(http_get(&http, "/topology.toml"), TOPOLOGY);
    fleet.publish_with("index", "v2", 2, &[]);
    let v2 = agent1.wait_current("index", "v2", &fleet);
    let feed = std::fs::read(fleet.base().join("origin/feed.json")).unwrap();
    let feed = ringswarm_engine::feed::Feed::read_unverified(&feed).unwrap();
    assert_eq!(feed.topology.as_deref(), Some(TOPOLOGY));
    assert_eq!(wait_place(&agent1, &fleet, "r1")["topology"], "feed");

    // A newer feed with another topology moves the agent (its session places new
    // connections by it): the racks swap subnets.
    let swapped = fleet.base().join("swapped.toml");
    // The origin's subnet gets another rack name too.
    let swapped_text = TOPOLOGY
        .replace("r1", "rx")
        .replace("r2", "r1")
        .replace("\"origin\"", "\"origin2\"");
    std::fs::write(&swapped, swapped_text).unwrap();
    let out = Command::new(ringswarm())
        .args(["publish", "--refresh", "--key"])
        .arg(fleet.base().join("fleet.key"))
        .arg("--origin-dir")
        .arg(fleet.base().join("origin"))
        .arg("--topology")
        .arg(&swapped)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("carries the topology of"));
    wait_place(&agent1, &fleet, "rx");
    wait_place(&agent2, &fleet, "r1");
    // ... and their announces say so: the tracker puts agent 2 first for a peer of rack r1
    // (while it held agent 1 there, agent 1 always came first), agent 1 for rack rx.
    let deadline = Instant::now() + TIMEOUT;
    let info_hash = hash_of(v2["info_hash"].as_str().unwrap());
    loop {
        let first = |rack| {
            peers_for_rack(tracker, info_hash, rack)
                .first()
                .map(|p| p.port())
        };
        let (r1, rx) = (first("r1"), first("rx"));
        if r1 == Some(a2.port()) && rx == Some(a1.port()) {
            break;
        }
        if Instant::now() > deadline {
            dump_logs(&[&agent1.guard, &agent2.guard]);
            panic!("after the swap the tracker leads with ports {r1:?} (r1), {rx:?} (rx)");
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // The origin announces the release it already seeded again with its new rack: for a
    // peer of rack origin2 it leads every answer (its old rack would shuffle it among the
    // dc's peers).
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let leads = (0..6).all(|_| {
            peers_for_rack(tracker, info_hash, "origin2")
                .first()
                .map(|p| p.port())
                == Some(origin.port())
        });
        if leads {
            break;
        }
        if Instant::now() > deadline {
            dump_logs(&[&fleet.guards[1]]);
            panic!("after the swap the origin is not announced in rack origin2");
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // --topology takes an http:// URL: here the origin's copy (the newest feed's, swapped).
    let url = format!("http://{http}/topology.toml");
    let a3: SocketAddr = (Ipv4Addr::new(127, 0, 2, 6), free_port([127, 0, 2, 6])).into();
    let agent3 = agent_at(&fleet, "host-url", a3, &["--topology", &url]);
    let p3 = wait_place(&agent3, &fleet, "r1");
    assert_eq!(p3["topology"], "--topology", "{p3}");

    // Stated --dc/--rack win over the feed's topology.
    let a4: SocketAddr = (Ipv4Addr::new(127, 0, 1, 6), free_port([127, 0, 1, 6])).into();
    let agent4 = agent_at(&fleet, "host-stated", a4, &["--rack", "mine"]);
    let p4 = wait_place(&agent4, &fleet, "mine");
    assert_eq!(
        (p4["dc"].as_str(), p4["topology"].as_str()),
        (Some("lo"), Some("feed"))
    );

    // Restarted while the feed cannot be had, an agent keeps the last feed's topology.
    drop(agent1);
    let dead_feed = "http://127.0.0.1:1/feed.json";
    let agent1 = agent_on(&fleet, dead_feed, "host-r1", a1, &[]);
    let p1 = wait_place(&agent1, &fleet, "rx");
    assert_eq!(p1["topology"], "feed", "{p1}");
}

#[test]
fn a_topology_url_that_answers_404_is_one_clear_line() {
    let fleet = Fleet::start("topology-404");
    let http = fleet
        .feed_url
        .trim_start_matches("http://")
        .trim_end_matches("/feed.json")
        .to_owned();
    // Nothing published with a topology: the origin answers 404.
    let url = format!("http://{http}/topology.toml");
    let out = Command::new(ringswarm())
        .args(["publish", "--refresh", "--key"])
        .arg(fleet.base().join("fleet.key"))
        .arg("--origin-dir")
        .arg(fleet.base().join("origin"))
        .args(["--topology", &url])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "publish succeeded: {err}");
    assert!(err.contains(&url) && err.contains("404"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let out = Command::new(ringswarm())
        .args(["tracker", "--listen", "127.0.0.1:0", "--topology", &url])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the tracker started: {err}");
    assert!(err.contains(&url) && err.contains("404"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // A 100 MiB topology is refused at publish, with its size.
    let huge = fleet.base().join("huge.toml");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    let out = Command::new(ringswarm())
        .args(["publish", "--refresh", "--key"])
        .arg(fleet.base().join("fleet.key"))
        .arg("--origin-dir")
        .arg(fleet.base().join("origin"))
        .arg("--topology")
        .arg(&huge)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("huge.toml") && err.contains("more than the 16 MiB"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
