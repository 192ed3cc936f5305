//! What operators see of a running (or stopped) fleet: `--version` with the git commit,
//! `ringswarm_build_info` on every daemon and `ringswarm_release_info` on agents, the
//! agent's progress lines, `status` with rate and ETA, and `status` without an agent.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

mod support;
use support::release::{http_get, metric, Agent, Fleet, TIMEOUT};
use support::{require, ringswarm, Guard};

/// The git hash `ringswarm --version` shows (`ringswarm 0.1.0 (git 0123456789ab)`).
fn version_hash() -> String {
    let out = Command::new(ringswarm()).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim()
        .strip_prefix(&format!("ringswarm {} (git ", env!("CARGO_PKG_VERSION")))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected --version: {text}"))
        .to_owned()
}

fn build_info_line() -> String {
    format!(
        "ringswarm_build_info{{version=\"{}\",git=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        version_hash()
    )
}

/// Checks the exposition's frame: build info, HELP/TYPE of it, the OpenMetrics end, and
/// help texts not doubled in their full stop.
fn assert_exposition(who: &str, text: &str) {
    let build = build_info_line();
    for line in [
        build.as_str(),
        "# TYPE ringswarm_build_info gauge",
        "# HELP ringswarm_build_info Version and git commit of this binary (always 1).",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{who}: no `{line}` in\n{text}"
        );
    }
    assert_eq!(text.lines().last(), Some("# EOF"), "{who}: {text}");
    assert!(!text.contains(".."), "{who}: {text}");
}

#[test]
fn version_names_the_git_commit() {
    let hash = version_hash();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let git = Command::new("git")
        .arg("-C")
        .arg(workspace)
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success());
    let Some(git) = git else {
        require(
            false,
            "version_names_the_git_commit",
            "git and a git checkout",
        );
        assert_eq!(hash, "unknown");
        return;
    };
    let head = String::from_utf8(git.stdout).unwrap().trim().to_owned();
    assert_eq!(hash.len(), 12, "{hash}");
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{hash}");
    assert_eq!(hash, head);
}

#[test]
fn every_daemon_reports_build_info_and_agents_their_current_releases() {
    let fleet = Fleet::start("build-info");
    fleet.publish("index", "v1", 1 << 20, 41);
    fleet.publish("tools", "t1", 256 << 10, 42);
    let a = fleet.agent("host", &["--metrics", "127.0.0.1:0"]);
    a.wait_current("index", "v1", &fleet);
    a.wait_current("tools", "t1", &fleet);
    let text = wait_metric(
        &a,
        "ringswarm_release_info",
        "name=\"tools\",version=\"t1\"",
    );
    assert_exposition("agent", &text);
    assert_eq!(
        metric(
            &text,
            "ringswarm_release_info",
            "name=\"index\",version=\"v1\""
        ),
        Some(1.0),
        "{text}"
    );
    // Counters keep their names on the wire; the family is named without `_total`.
    assert!(
        text.contains("# TYPE ringswarm_bytes_in counter\n"),
        "{text}"
    );
    assert!(metric(&text, "ringswarm_bytes_in_total", "class=\"local\"").is_some());
    assert!(
        text.contains("# TYPE ringswarm_release_info gauge\n"),
        "{text}"
    );

    // A new release replaces the old one's sample.
    fleet.publish("index", "v2", 1 << 20, 43);
    a.wait_current("index", "v2", &fleet);
    let text = wait_metric(
        &a,
        "ringswarm_release_info",
        "name=\"index\",version=\"v2\"",
    );
    assert!(
        !text.contains("name=\"index\",version=\"v1\""),
        "v1 is no longer active:\n{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("ringswarm_release_info{"))
            .count(),
        2,
        "{text}"
    );

    let origin = fleet
        .feed_url
        .trim_start_matches("http://")
        .trim_end_matches("/feed.json")
        .to_owned();
    let text = http_get(&origin, "/metrics");
    assert_exposition("origin", &text);
    assert!(
        metric(
            &text,
            "ringswarm_http_connections_total",
            "outcome=\"accepted\""
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(!text.contains("ringswarm_release_info"), "{text}");

    let mut tracker = Command::new(ringswarm());
    tracker.args(["tracker", "--listen", "127.0.0.1:0", "--cores", "1"]);
    tracker.args(["--metrics", "127.0.0.1:0"]);
    let mut tracker = Guard::spawn("tracker-build-info", tracker, fleet.base());
    let addr = tracker.wait_line("metrics at http://", TIMEOUT, &[]);
    let text = http_get(addr.trim_end_matches("/metrics"), "/metrics");
    assert_exposition("tracker", &text);
    assert!(
        text.contains("# TYPE ringswarm_tracker_packets counter\n")
            && metric(&text, "ringswarm_tracker_packets_total", "").is_some(),
        "{text}"
    );
}

/// The agent's metrics once `name{labels}` is in them (they are rendered each tick).
fn wait_metric(a: &Agent, name: &str, labels: &str) -> String {
    let start = Instant::now();
    loop {
        let text = a.metrics();
        if metric(&text, name, labels).is_some() {
            return text;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "no {name}{{{labels}}} in\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_agent_prints_progress_and_status_shows_rate_and_eta() {
    let fleet = Fleet::start("progress");
    // 6 MiB at 2 MiB/s: about 3 s of download, several lines at 300 ms.
    fleet.publish("index", "v1", 6 << 20, 44);
    let a = fleet.agent(
        "host",
        &["--max-download-rate", "2M", "--progress-every", "300ms"],
    );
    let during = a.wait_for("downloading with a rate and an ETA", &fleet, |s| {
        s["releases"].as_array().is_some_and(|rs| {
            rs.iter().any(|r| {
                r["state"] == "downloading"
                    && r["rate_bytes_per_sec"].as_f64().is_some_and(|v| v > 0.0)
                    && r["eta_secs"].as_u64().is_some()
            })
        })
    });
    let text = Command::new(ringswarm())
        .args(["status", "--dir"])
        .arg(&a.dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    // The download may have ended between the two looks; then there is no ETA to show.
    if text.contains("downloading") {
        let line = text.lines().find(|l| l.starts_with("downloading")).unwrap();
        assert!(
            line.contains("/s, ETA ") || line.contains("/s, ETA unknown"),
            "{line} (status was {during})"
        );
    }
    a.wait_current("index", "v1", &fleet);
    let out = a.guard.stdout();
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("downloading index v1: "))
        .collect();
    assert!(!lines.is_empty(), "no progress line in\n{out}");
    for l in &lines {
        assert!(
            l.contains(" MiB verified (")
                && l.contains("%), ")
                && l.contains("/s, ETA ")
                && l.contains(" peer"),
            "{l}"
        );
    }
    // One line per period, not one per tick: the download takes about 3 s.
    assert!(lines.len() <= 30, "{}", lines.len());
}

/// Every path below `root` with its size and modification time.
fn snapshot(root: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                todo.push(e.path());
            }
            out.push((e.path(), m.len(), m.modified().ok()));
        }
    }
    out.sort();
    out
}

#[test]
fn status_without_an_agent_lists_the_releases_on_disk() {
    let fleet = Fleet::start("status-offline");
    fleet.publish("index", "v1", 1 << 20, 45);
    let a = fleet.agent("host", &[]);
    a.wait_current("index", "v1", &fleet);
    fleet.publish("index", "v2", 1 << 20, 46);
    a.wait_current("index", "v2", &fleet);
    let Agent { dir, guard } = a;
    drop(guard); // SIGTERM: the agent stops and its socket goes

    let before = snapshot(&dir);
    let out = Command::new(ringswarm())
        .args(["status", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert!(
        stderr.contains("warning: the agent is not running"),
        "{stderr}"
    );
    let line = |state: &str, version: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(state) && l.contains(&format!(" index {version} ")))
            .unwrap_or_else(|| panic!("no {state} index {version} in\n{stdout}"))
            .to_owned()
    };
    let current = line("current", "v2");
    assert!(
        current.contains("1.00 MiB (4/4 pieces verified, complete, activated 20"),
        "{current}"
    );
    let kept = line("kept", "v1");
    assert!(kept.contains("4/4 pieces verified, complete"), "{kept}");

    let out = Command::new(ringswarm())
        .args(["status", "--json", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["agent_running"], false, "{json}");
    let releases = json["releases"].as_array().unwrap();
    assert_eq!(releases.len(), 2, "{json}");
    assert!(releases
        .iter()
        .any(|r| r["version"] == "v2" && r["state"] == "current" && r["verified_pieces"] == 4));
    // Read-only: nothing below the directory was created, removed or written.
    assert_eq!(snapshot(&dir), before);

    // Not an agent directory: one clear line, exit 1.
    let empty = fleet.base().join("nothing-here");
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(ringswarm())
        .args(["status", "--dir"])
        .arg(&empty)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no releases/ nor .staging/ here"),
        "{stderr}"
    );
}

#[test]
fn status_of_a_killed_agent_shows_its_unfinished_download() {
    let fleet = Fleet::start("status-killed");
    fleet.publish("model", "v1", 12 << 20, 47);
    let mut a = fleet.agent("host", &["--max-download-rate", "3M"]);
    a.wait_for("part-way", &fleet, |s| {
        s["releases"].as_array().is_some_and(|rs| {
            rs.iter().any(|r| {
                r["state"] == "downloading" && r["verified_bytes"].as_u64().unwrap_or(0) >= 4 << 20
            })
        })
    });
    a.guard.child.kill().unwrap();
    a.guard.wait_exit(TIMEOUT);
    // SIGKILL leaves the socket behind: nothing listens on it (refused, not absent).
    assert!(a.dir.join(".agent/status.sock").exists());

    let out = Command::new(ringswarm())
        .args(["status", "--dir"])
        .arg(&a.dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert!(stderr.contains("the agent is not running"), "{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("staged") && l.contains(" model v1 12.00 MiB ("))
        .unwrap_or_else(|| panic!("no staged model v1 in\n{stdout}"));
    assert!(line.contains("/48 pieces verified"), "{line}");
    assert!(!line.contains("complete"), "{line}");
    assert!(!stdout.contains("current"), "{stdout}");
}
