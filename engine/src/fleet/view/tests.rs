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
