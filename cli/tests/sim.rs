//! `ringswarm sim` end to end: the shipped small scenario, its JSON and plot, and a bad
//! scenario's one-line error.

use std::process::Command;

mod support;
use support::{ringswarm, scratch};

fn scenario(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sim/scenarios")
        .join(name)
}

#[test]
fn json_report_and_plot_of_the_emulations_shape() {
    let dir = scratch("sim");
    let svg = dir.path().join("timeline.svg");
    let out = Command::new(ringswarm())
        .args(["--json", "sim"])
        .arg(scenario("emu-1dc.toml"))
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["event"], "summary");
    assert_eq!(v["command"], "sim");
    for key in [
        "hosts",
        "completed",
        "lower_bound_s",
        "last_host_s",
        "p50_host_s",
        "p99_host_s",
        "blob_bytes",
        "origin_sent_bytes",
        "dc_in_bytes",
        "rack_in_bytes_max",
        "wall_s",
        "peak_rss_bytes",
    ] {
        assert!(!v[key].is_null(), "{key} missing: {v}");
    }
    assert_eq!(v["hosts"], 12);
    assert_eq!(v["completed"], 12);
    let ratio = v["last_host_s"].as_f64().unwrap() / v["lower_bound_s"].as_f64().unwrap();
    assert!((1.0..2.0).contains(&ratio), "last host ÷ bound = {ratio}");
    let text = std::fs::read_to_string(&svg).expect("the plot was written");
    assert!(
        text.contains("<svg") && text.contains("hosts done"),
        "{}",
        &text[..200]
    );
}

#[test]
fn a_bad_scenario_is_one_line_naming_the_place() {
    let dir = scratch("sim-bad");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "blob = \"1GiB\"\norigin = { dc = \"a\", rate = \"1Gbit\" }\n[[dc]]\nname = \"a\"\nracks = 1\nhosts_per_rack = 2\nhost_rate = \"1Gbit\"\nrack_uplink = \"1Gbit\"\nwan_rate = \"1Gbit\"\nrakcs = 3\n",
    )
    .unwrap();
    let out = Command::new(ringswarm())
        .arg("sim")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("bad.toml") && stderr.contains("line 10") && stderr.contains("rakcs"),
        "{stderr}"
    );
}
