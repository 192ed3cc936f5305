use super::*;

const MIB: u64 = 1 << 20;

fn release(name: &str, version: &str, n: u8) -> Release {
    Release {
        name: name.into(),
        version: version.into(),
        info_hash: [n; 20],
        size: 100 * MIB,
        published_ms: u64::from(n) * 1000,
        metainfo: Vec::new(),
    }
}

fn peer(addr: &str, rack: &str, left: u64, rate: u64) -> PeerJson {
    PeerJson {
        addr: addr.into(),
        dc: "dc1".into(),
        rack: rack.into(),
        left,
        rate,
        age: 1,
    }
}

/// A swarm as the tracker would list it: counts per place from the peers.
fn swarm(peers: Vec<PeerJson>) -> SwarmJson {
    let mut places: BTreeMap<(String, String), PlaceJson> = BTreeMap::new();
    for p in &peers {
        let e = places
            .entry((p.dc.clone(), p.rack.clone()))
            .or_insert_with(|| PlaceJson {
                dc: p.dc.clone(),
                rack: p.rack.clone(),
                ..PlaceJson::default()
            });
        if p.left == 0 {
            e.seeders += 1;
        } else {
            e.leechers += 1;
        }
    }
    SwarmJson {
        seeders: peers.iter().filter(|p| p.left == 0).count() as u32,
        leechers: peers.iter().filter(|p| p.left > 0).count() as u32,
        places: places.into_values().collect(),
        peers_total: peers.len(),
        peers,
        ..SwarmJson::default()
    }
}

fn view_of(
    releases: &[Release],
    swarms: &HashMap<[u8; 20], SwarmJson>,
    memory: &mut Memory,
) -> FleetView {
    memory.note(releases, swarms, 1_000_000);
    aggregate(releases, swarms, memory, 1_000_000)
}

#[test]
fn counts_done_downloading_and_missing_per_rack() {
    let releases = [release("app", "1", 1), release("app", "2", 2)];
    let mut swarms = HashMap::new();
    // Version 1: three hosts. Version 2: one done, one at 25 %, host c not started.
    swarms.insert(
        [1; 20],
        swarm(vec![
            peer("a:1", "r1", 0, 0),
            peer("b:1", "r1", 0, 0),
            peer("c:1", "r2", 0, 0),
        ]),
    );
    swarms.insert(
        [2; 20],
        swarm(vec![
            peer("a:1", "r1", 0, 0),
            peer("b:1", "r1", 75 * MIB, 2 * MIB),
        ]),
    );
    let v = view_of(&releases, &swarms, &mut Memory::default());
    assert_eq!(v.releases.len(), 2);
    let new = &v.releases[1];
    assert_eq!((new.version.as_str(), new.newest), ("2", true));
    assert_eq!((new.done, new.downloading, new.missing), (1, 1, 1));
    assert_eq!(
        new.places,
        vec![
            PlaceView {
                dc: "dc1".into(),
                rack: "r1".into(),
                done: 1,
                downloading: 1,
                missing: 0
            },
            PlaceView {
                dc: "dc1".into(),
                rack: "r2".into(),
                done: 0,
                downloading: 0,
                missing: 1
            },
        ]
    );
    assert_eq!(new.rate, 2 * MIB);
    assert_eq!(v.throughput, 2 * MIB);
    assert_eq!(new.slowest.len(), 1);
    assert_eq!(new.slowest[0].addr, "b:1");
    assert!((new.slowest[0].progress - 0.25).abs() < 1e-9);
    // Hosts slowest first: downloading, missing, done.
    let order: Vec<(&str, HostState)> = new
        .hosts
        .iter()
        .map(|h| (h.addr.as_str(), h.state))
        .collect();
    assert_eq!(
        order,
        vec![
            ("b:1", HostState::Downloading),
            ("c:1", HostState::Missing),
            ("a:1", HostState::Done)
        ]
    );
    let old = &v.releases[0];
    assert_eq!((old.newest, old.done, old.missing), (false, 3, 0));
}

#[test]
fn an_old_release_no_host_runs_is_not_shown_and_the_newest_always_is() {
    let releases = [
        release("app", "1", 1),
        release("app", "2", 2),
        release("db", "7", 3),
    ];
    let mut swarms = HashMap::new();
    // Version 1: the origin alone (one seed) still seeds it.
    swarms.insert([1; 20], swarm(vec![peer("origin:1", "b1", 0, 0)]));
    swarms.insert([2; 20], swarm(vec![peer("a:1", "r1", 0, 0)]));
    let v = view_of(&releases, &swarms, &mut Memory::default());
    let shown: Vec<&str> = v.releases.iter().map(|r| r.version.as_str()).collect();
    assert_eq!(shown, vec!["2", "7"]);
    // A host downloading it, or a second seed, shows it.
    swarms.insert([1; 20], swarm(vec![peer("a:1", "r1", 5, 0)]));
    let v = view_of(&releases, &swarms, &mut Memory::default());
    assert_eq!(v.releases.len(), 3);
    assert_eq!(v.releases[2].done + v.releases[2].downloading, 0);
}

#[test]
fn a_host_that_left_is_missing_until_the_window_passes() {
    let releases = [release("app", "1", 1)];
    let mut memory = Memory::default();
    let mut swarms = HashMap::new();
    swarms.insert(
        [1; 20],
        swarm(vec![peer("a:1", "r1", 0, 0), peer("b:1", "r1", 0, 0)]),
    );
    memory.note(&releases, &swarms, 0);
    swarms.insert([1; 20], swarm(vec![peer("a:1", "r1", 0, 0)]));
    memory.note(&releases, &swarms, 60_000);
    let v = aggregate(&releases, &swarms, &memory, 60_000);
    assert_eq!((v.releases[0].done, v.releases[0].missing), (1, 1));
    let later = MISSING_WINDOW.as_millis() as u64 + 1000;
    memory.note(&releases, &swarms, later);
    let v = aggregate(&releases, &swarms, &memory, later);
    assert_eq!((v.releases[0].done, v.releases[0].missing), (1, 0));
}

#[test]
fn hosts_of_another_name_are_not_missing() {
    let releases = [release("app", "1", 1), release("db", "1", 2)];
    let mut swarms = HashMap::new();
    swarms.insert([1; 20], swarm(vec![peer("a:1", "r1", 0, 0)]));
    swarms.insert([2; 20], swarm(vec![peer("z:1", "r9", 0, 0)]));
    let v = view_of(&releases, &swarms, &mut Memory::default());
    assert!(v.releases.iter().all(|r| r.missing == 0 && r.done == 1));
}

#[test]
fn a_capped_tracker_list_keeps_exact_counts_and_counts_missing_per_place() {
    let releases = [release("app", "1", 1), release("app", "2", 2)];
    let mut swarms = HashMap::new();
    swarms.insert(
        [1; 20],
        swarm(vec![
            peer("a:1", "r1", 0, 0),
            peer("b:1", "r1", 0, 0),
            peer("c:1", "r1", 0, 0),
        ]),
    );
    // Version 2: two peers in r1, only one of them listed.
    let mut capped = swarm(vec![peer("a:1", "r1", 10 * MIB, 0)]);
    capped.places[0].seeders = 1;
    capped.peers_total = 2;
    capped.peers_truncated = true;
    swarms.insert([2; 20], capped);
    let v = view_of(&releases, &swarms, &mut Memory::default());
    let new = &v.releases[1];
    assert!(new.peers_truncated);
    assert_eq!((new.done, new.downloading, new.missing), (1, 1, 1));
    assert_eq!(new.hosts.len(), 1);
}

#[test]
fn the_host_list_is_capped() {
    let releases = [release("app", "1", 1)];
    let peers = (0..MAX_HOSTS_SHOWN + 10)
        .map(|i| peer(&format!("h{i}:1"), "r1", (i as u64 + 1) * (100 << 10), 0))
        .collect();
    let mut swarms = HashMap::new();
    swarms.insert([1; 20], swarm(peers));
    let v = view_of(&releases, &swarms, &mut Memory::default());
    let r = &v.releases[0];
    assert_eq!(r.downloading as usize, MAX_HOSTS_SHOWN + 10);
    assert_eq!(r.hosts.len(), MAX_HOSTS_SHOWN);
    assert!(r.hosts_truncated);
    assert_eq!(r.slowest.len(), SLOWEST_SHOWN);
    // Least progress first: the most left.
    assert_eq!(
        r.slowest[0].left,
        (MAX_HOSTS_SHOWN as u64 + 10) * (100 << 10)
    );
}

#[test]
fn without_a_tracker_the_view_says_why() {
    let releases = [release("app", "1", 1)];
    let v = poll_once(None, &releases, &mut Memory::default(), 5);
    assert!(v.error.unwrap().contains("tracker_http"));
    assert_eq!(v.releases.len(), 1);
    let v = poll_once(
        Some("http://127.0.0.1:1"),
        &releases,
        &mut Memory::default(),
        5,
    );
    assert!(v.error.unwrap().contains("127.0.0.1:1"));
}

#[test]
fn the_page_is_self_contained() {
    assert!(PAGE.contains("fleet.json"));
    assert!(!PAGE.contains("http://") && !PAGE.contains("https://"));
}

/// A tracker on loopback that answers `/swarm/HEX.json` from `swarms` (404 for the rest).
fn tracker(swarms: HashMap<[u8; 20], SwarmJson>) -> crate::fleet::http::HttpServer {
    use crate::fleet::http::{HttpServer, Limits, Reply};
    let answers: HashMap<String, Vec<u8>> = swarms
        .iter()
        .map(|(h, s)| {
            (
                format!("/swarm/{}.json", crate::hex(h)),
                serde_json::to_vec(s).unwrap(),
            )
        })
        .collect();
    HttpServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Limits::metrics(),
        Arc::new(move |req| match answers.get(req.path) {
            Some(body) => Reply::json(body.clone()),
            None => Reply::not_found(),
        }),
    )
    .unwrap()
}

#[test]
fn a_failed_fetch_keeps_the_last_swarm_and_counts_nobody_missing() {
    let releases = [release("app", "1", 1), release("app", "2", 2)];
    let mut swarms = HashMap::new();
    swarms.insert(
        [1; 20],
        swarm(vec![peer("a:1", "r1", 0, 0), peer("b:1", "r1", 0, 0)]),
    );
    swarms.insert([2; 20], swarm(vec![peer("a:1", "r1", 0, 0)]));
    let mut memory = Memory::default();
    let good = tracker(swarms.clone());
    let url = format!("http://{}", good.local_addr());
    let v = poll_once(Some(&url), &releases, &mut memory, 1000);
    assert_eq!(v.error, None);
    assert_eq!(v.releases[1].missing, 1, "b is not on version 2");
    drop(good);

    // The tracker is gone: every release keeps its last counts, nobody becomes missing.
    let v = poll_once(Some("http://127.0.0.1:1"), &releases, &mut memory, 3000);
    assert!(v.error.as_deref().unwrap().contains("127.0.0.1:1"));
    assert_eq!(v.releases.len(), 2);
    for r in &v.releases {
        assert_eq!(r.missing, 0, "{}", r.version);
        assert!(r.error.is_some());
        assert_eq!(r.swarm_fetched_ms, Some(1000));
        assert!(r.hosts.iter().all(|h| h.state != HostState::Missing));
    }
    assert_eq!((v.releases[0].done, v.releases[1].done), (2, 1));

    // Version 1 fails (404), version 2 is read: only version 1 is marked.
    let partial = tracker(HashMap::from([(
        [2; 20],
        swarm(vec![peer("a:1", "r1", 0, 0)]),
    )]));
    let url = format!("http://{}", partial.local_addr());
    let v = poll_once(Some(&url), &releases, &mut memory, 5000);
    assert!(v.error.as_deref().unwrap().contains("404"));
    let (old, new) = (&v.releases[0], &v.releases[1]);
    assert!(old.error.is_some() && new.error.is_none());
    assert_eq!((old.done, old.missing), (2, 0));
    assert_eq!((new.done, new.missing, new.swarm_fetched_ms), (1, 1, None));
}

#[test]
fn a_release_never_fetched_counts_nobody_missing() {
    let releases = [release("app", "1", 1)];
    let mut memory = Memory::default();
    let mut swarms = HashMap::new();
    swarms.insert([9; 20], swarm(vec![peer("a:1", "r1", 0, 0)]));
    // Host a is known for the name (from another release), release 1 was never read.
    memory.note(&[release("app", "0", 9)], &swarms, 0);
    let v = poll_once(Some("http://127.0.0.1:1"), &releases, &mut memory, 10);
    let r = &v.releases[0];
    assert_eq!((r.missing, r.swarm_fetched_ms), (0, None));
    assert!(r.error.is_some());
}

#[test]
fn only_the_newest_release_has_missing_hosts() {
    // a and b hold version 1 and 2; c joined after 2 was published and holds only 2.
    let releases = [release("app", "1", 1), release("app", "2", 2)];
    let mut memory = Memory::default();
    let mut swarms = HashMap::new();
    swarms.insert(
        [1; 20],
        swarm(vec![peer("a:1", "r1", 0, 0), peer("b:1", "r1", 0, 0)]),
    );
    swarms.insert(
        [2; 20],
        swarm(vec![peer("a:1", "r1", 0, 0), peer("c:1", "r2", 100, 5)]),
    );
    memory.note(&releases, &swarms, 0);
    let v = aggregate(&releases, &swarms, &memory, 0);
    let (old, new) = (&v.releases[0], &v.releases[1]);
    assert_eq!((old.version.as_str(), old.newest), ("1", false));
    assert_eq!((old.done, old.downloading, old.missing), (2, 0, 0));
    assert!(old.hosts.iter().all(|h| h.state != HostState::Missing));
    assert_eq!(
        (new.done, new.downloading, new.missing),
        (1, 1, 1),
        "b is not on 2"
    );
}
