//! The shipped systemd units (scripts/systemd/) run with least privilege: each is rated
//! better than 5.0 by `systemd-analyze security` (offline: no running systemd needed), and
//! each keeps what its service needs (its directory writable, CAP_IPC_LOCK for the agent).

use std::path::PathBuf;
use std::process::Command;

mod support;
use support::{on_path, require, script};

const UNITS: [&str; 3] = [
    "ringswarm-agent.service",
    "ringswarm-origin.service",
    "ringswarm-tracker.service",
];

fn unit_path(name: &str) -> PathBuf {
    script("systemd").join(name)
}

/// The values of `key=` in a unit file (every line that sets it, in order).
fn values(unit: &str, key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(unit_path(unit)).unwrap();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
        .collect()
}

/// The `dir` key of an example config beside the units.
fn config_dir(config: &str) -> String {
    let text = std::fs::read_to_string(script("systemd").join(config)).unwrap();
    let table: toml::Table = text.parse().unwrap();
    table["dir"].as_str().unwrap().to_owned()
}

#[test]
fn every_unit_is_rated_better_than_5_by_systemd_analyze_security() {
    if !require(
        on_path("systemd-analyze"),
        "every_unit_is_rated_better_than_5_by_systemd_analyze_security",
        "systemd-analyze (Debian package systemd)",
    ) {
        return;
    }
    let mut scores = Vec::new();
    for unit in UNITS {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(unit_path(unit))
            .env("SYSTEMD_COLORS", "0")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| l.split_once(&format!("Overall exposure level for {unit}: ")))
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "{unit}: no exposure level in the output of systemd-analyze: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        scores.push(format!("{unit} {score}"));
        assert!(score < 5.0, "{unit} is rated {score}:\n{text}");
    }
    support::skip_note(&format!("systemd-analyze security: {}", scores.join(", ")));
}

#[test]
fn the_units_keep_what_their_services_need() {
    // The agent writes its --dir and may lock releases in memory.
    let agent = "ringswarm-agent.service";
    let dir = config_dir("agent.toml");
    assert!(
        values(agent, "ReadWritePaths").iter().any(|p| p == &dir),
        "{agent}: {dir} (agent.toml's dir) is not writable"
    );
    assert_eq!(values(agent, "CapabilityBoundingSet"), ["CAP_IPC_LOCK"]);
    assert_eq!(values(agent, "LimitMEMLOCK"), ["infinity"]);
    assert_eq!(values(agent, "ProtectSystem"), ["strict"]);
    // The origin writes its directory only.
    let origin = "ringswarm-origin.service";
    let dir = config_dir("origin.toml");
    assert!(
        values(origin, "ReadWritePaths").iter().any(|p| p == &dir),
        "{origin}: {dir} (origin.toml's dir) is not writable"
    );
    assert_eq!(values(origin, "CapabilityBoundingSet"), [""]);
    for unit in UNITS {
        assert_eq!(values(unit, "NoNewPrivileges"), ["yes"], "{unit}");
        assert_eq!(values(unit, "ProtectSystem"), ["strict"], "{unit}");
        // io_uring is in @system-service (@aio) as of systemd 252: it must stay allowed.
        assert!(
            values(unit, "SystemCallFilter").contains(&"@system-service".to_owned()),
            "{unit}"
        );
    }
}
