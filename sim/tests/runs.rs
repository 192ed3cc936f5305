//! Whole runs of the simulator on small fleets: determinism, completion, bytes per dc.

use ringswarm_sim::scenario::Scenario;

/// Two dcs of two racks of three hosts, 1 Gbit/s hosts, a 10 ms WAN each way (20 ms
/// between the dcs), 64 MiB in 64 pieces: seconds of virtual time, well under a second of
/// CPU.
const TWO_DCS: &str = r#"
seed = 3
blob = "64MiB"
origin = { dc = "east", rate = "1Gbit" }
[[dc]]
name = "east"
racks = 2
hosts_per_rack = 3
host_rate = "1Gbit"
rack_uplink = "2Gbit"
wan_rate = "2Gbit"
delay = { host = "20us", rack = "100us", wan = "10ms" }
[[dc]]
name = "west"
racks = 2
hosts_per_rack = 3
host_rate = "1Gbit"
rack_uplink = "2Gbit"
wan_rate = "2Gbit"
delay = { host = "20us", rack = "100us", wan = "10ms" }
"#;

fn run(text: &str) -> ringswarm_sim::report::Report {
    let s = Scenario::parse(text).expect("the scenario parses");
    ringswarm_sim::run(&s).expect("the scenario runs")
}

#[test]
fn every_host_finishes_and_each_byte_crosses_as_the_bound_allows() {
    let r = run(TWO_DCS);
    assert_eq!((r.hosts, r.completed), (12, 12), "{}", r.summary());
    let last = r.last_host_s.expect("every host finished");
    assert!(last >= r.lower_bound_s, "{}", r.summary());
    assert!(last <= 3.0 * r.lower_bound_s, "{}", r.summary());
    let blob = r.blob_bytes as f64;
    // The other dc takes the blob in over its WAN link at least once, and not many times.
    let west = r.dc_in_bytes[1].bytes as f64 / blob;
    assert!(
        (1.0..=2.5).contains(&west),
        "west took {west} blobs: {}",
        r.summary()
    );
    // Each rack takes the blob in at least once (no host starts with any of it).
    for rack in r
        .rack_in_bytes
        .iter()
        .filter(|r| !r.name.ends_with("/origin"))
    {
        assert!(rack.bytes as f64 >= blob, "{}: {}", rack.name, rack.bytes);
    }
    assert!(r.origin_sent_bytes as f64 >= blob);
    assert_eq!(r.hash_failures, 0);
    assert!(!r.timeline.samples.is_empty());
    assert_eq!(r.timeline.samples.last().map(|s| s.hosts_done), Some(12));
}

#[test]
fn a_run_is_a_function_of_the_scenario_and_the_seed() {
    let a = run(TWO_DCS);
    let b = run(TWO_DCS);
    let strip = |mut r: ringswarm_sim::report::Report| {
        r.wall_s = 0.0;
        r.peak_rss_bytes = 0;
        r
    };
    let (a, b) = (strip(a), strip(b));
    assert_eq!(a, b, "the same scenario twice");
    let c = strip(run(&TWO_DCS.replace("seed = 3", "seed = 4")));
    assert_ne!(
        (a.last_host_s, a.events),
        (c.last_host_s, c.events),
        "another seed, another run"
    );
}

#[test]
fn dead_hosts_are_reported_and_the_others_finish() {
    let text = format!("{TWO_DCS}\n[failures]\ndead = 0.25\nslow = 0.25\n");
    let r = run(&text);
    assert!(r.dead > 0 && r.slow > 0, "{}", r.summary());
    assert_eq!(r.completed + r.dead, r.hosts, "{}", r.summary());
    assert!(r.last_healthy_host_s.is_some(), "{}", r.summary());
    assert_eq!(r.last_host_s, None, "a dead host never finishes");
}
