//! The release flow end to end, with real processes on loopback: `keygen`, a `tracker`,
//! an `origin`, `publish`, and `agent`s, checked through `status` and the files.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;
use support::release::{http_get, http_server, keygen, metric, Agent, Fleet, TIMEOUT};
use support::{is_root, pattern, ringswarm, run, skip_note, Guard};

#[test]
fn every_agent_activates_each_release_and_readers_never_see_a_mix() {
    let fleet = Fleet::start("release");
    let v1 = fleet.publish("index", "v1", 3 << 20, 1);
    let hook = "echo \"$RINGSWARM_RELEASE_NAME $RINGSWARM_RELEASE_VERSION $RINGSWARM_RELEASE_PATH\" >> \"$RINGSWARM_RELEASE_PATH/../../../hook.log\"";
    let agents: Vec<Agent> = (0..3)
        .map(|i| {
            let keep = if i == 0 { "1" } else { "2" };
            fleet.agent(&format!("host{i}"), &["--hook", hook, "--keep", keep])
        })
        .collect();
    for a in &agents {
        a.wait_current("index", "v1", &fleet);
        assert!(
            std::fs::read(a.current_file("index")).unwrap() == v1,
            "{}: v1 differs",
            a.guard.name
        );
    }

    // Readers stream the current release on every host while v2 is published.
    let stop = Arc::new(AtomicBool::new(false));
    let v2 = pattern(3 << 20, 2);
    let readers: Vec<_> = agents
        .iter()
        .map(|a| {
            let (path, stop, v1, v2) = (
                a.current_file("index"),
                stop.clone(),
                v1.clone(),
                v2.clone(),
            );
            let seen = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
            let counts = seen.clone();
            let handle = std::thread::spawn(move || {
                let deadline = Instant::now() + TIMEOUT * 2;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let got =
                        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    if got == v1 {
                        counts[0].fetch_add(1, Ordering::Relaxed);
                    } else if got == v2 {
                        counts[1].fetch_add(1, Ordering::Relaxed);
                    } else {
                        panic!(
                            "{}: neither v1 nor v2 ({} bytes)",
                            path.display(),
                            got.len()
                        );
                    }
                }
            });
            (handle, seen)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fleet.publish("index", "v2", 3 << 20, 2), v2);
    for a in &agents {
        let r = a.wait_current("index", "v2", &fleet);
        assert!(r["activation_ms"].as_u64().is_some(), "{r}");
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for (handle, seen) in readers {
        handle.join().expect("a reader saw a mix of releases");
        assert!(seen[0].load(Ordering::Relaxed) > 0 && seen[1].load(Ordering::Relaxed) > 0);
    }
    for a in &agents {
        assert!(std::fs::read(a.current_file("index")).unwrap() == v2);
        // The hook ran once per activation, with the release in its environment.
        let log = std::fs::read_to_string(a.dir.join("hook.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 2, "{log}");
        assert!(lines[1].starts_with("index v2 "), "{log}");
        assert!(lines[1].ends_with("releases/index/v2"), "{log}");
        assert!(
            a.dir.join(".staging").read_dir().unwrap().next().is_none(),
            "staging left over"
        );
    }
    // --keep 1 removed v1 on host0; the others keep (and seed) it.
    assert!(!agents[0].dir.join("releases/index/v1").exists());
    assert!(agents[1].dir.join("releases/index/v1/blob.bin").exists());
    assert_eq!(agents[1].release("index", "v1").unwrap()["state"], "kept");
}

#[test]
fn a_feed_with_a_bad_signature_or_an_old_sequence_is_rejected() {
    let fleet = Fleet::start("tamper");
    let v1 = fleet.publish("index", "v1", 1 << 20, 3);
    let a = fleet.agent("host", &[]);
    a.wait_current("index", "v1", &fleet);
    let feed_path = fleet.base().join("origin/feed.json");
    let signed_v1 = std::fs::read(&feed_path).unwrap();

    // A version is never published twice, even with the same data.
    let again = Command::new(ringswarm())
        .arg("publish")
        .arg(fleet.base().join("build/index/v1/blob.bin"))
        .args(["--name", "index", "--version", "v1", "--key"])
        .arg(fleet.base().join("fleet.key"))
        .arg("--origin-dir")
        .arg(fleet.base().join("origin"))
        .output()
        .unwrap();
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("published already"), "{err}");

    // A feed signed by another key: publish into a second origin dir, put its feed in place.
    keygen(fleet.base(), "intruder");
    let evil_dir = fleet.base().join("evil");
    std::fs::create_dir_all(&evil_dir).unwrap();
    std::fs::write(evil_dir.join("blob.bin"), pattern(1 << 20, 99)).unwrap();
    let mut publish = Command::new(ringswarm());
    publish
        .arg("publish")
        .arg(evil_dir.join("blob.bin"))
        .args(["--name", "index", "--version", "evil", "--key"])
        .arg(fleet.base().join("intruder.key"))
        .arg("--origin-dir")
        .arg(&evil_dir);
    run("publish-evil", publish, TIMEOUT, fleet.base());
    // Publishing with the wrong key into the real origin is refused.
    let refused = Command::new(ringswarm())
        .arg("publish")
        .arg(evil_dir.join("blob.bin"))
        .args(["--name", "index", "--version", "evil", "--key"])
        .arg(fleet.base().join("intruder.key"))
        .arg("--origin-dir")
        .arg(fleet.base().join("origin"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("signature"), "{err}");

    std::fs::copy(evil_dir.join("feed.json"), &feed_path).unwrap();
    let s = a.wait_for("rejecting the forged feed", &fleet, |s| {
        s["last_feed_error"]
            .as_str()
            .is_some_and(|e| e.contains("signature"))
    });
    assert!(s["feed_errors"].as_u64().unwrap() >= 1);
    std::thread::sleep(Duration::from_millis(600));
    assert!(a.release("index", "evil").is_none(), "{}", a.status());
    assert_eq!(a.release("index", "v1").unwrap()["state"], "current");

    // A validly signed but older feed (a replay) is refused too.
    std::fs::write(&feed_path, &signed_v1).unwrap();
    fleet.publish("index", "v2", 1 << 20, 4);
    a.wait_current("index", "v2", &fleet);
    std::fs::write(&feed_path, &signed_v1).unwrap();
    a.wait_for("rejecting the replayed feed", &fleet, |s| {
        s["last_feed_error"]
            .as_str()
            .is_some_and(|e| e.contains("older"))
    });
    assert_eq!(a.release("index", "v2").unwrap()["state"], "current");
    assert!(std::fs::read(a.current_file("index")).unwrap() != v1);
}

#[test]
fn an_agent_killed_mid_download_resumes_without_fetching_verified_pieces_again() {
    let fleet = Fleet::start("resume");
    let size = 12usize << 20;
    let data = fleet.publish("model", "v1", size, 5);
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
    let dir = a.dir.clone();
    drop(a);
    assert!(
        !dir.join("model").exists(),
        "activated before it was complete"
    );

    let a = fleet.agent("host", &[]);
    let r = a.wait_current("model", "v1", &fleet);
    assert!(std::fs::read(a.current_file("model")).unwrap() == data);
    let fetched = r["downloaded_bytes"].as_u64().unwrap();
    assert!(
        fetched <= (size as u64) - (3 << 20),
        "fetched {fetched} of {size} bytes again after the restart"
    );
}

#[test]
fn the_lock_budget_is_kept_and_a_release_beyond_it_is_activated_unlocked() {
    let fleet = Fleet::start("lock");
    fleet.publish("small", "v1", 1 << 20, 6);
    fleet.publish("large", "v1", 3 << 20, 7);
    let hook = "echo \"no service for $RINGSWARM_RELEASE_NAME\" >&2; exit 3";
    let a = fleet.agent("host", &["--lock", "--lock-budget", "2M", "--hook", hook]);
    let small = a.wait_current("small", "v1", &fleet);
    let large = a.wait_current("large", "v1", &fleet);
    let small = a.release("small", "v1").unwrap_or(small);
    assert_eq!(small["locked"], true, "{small}");
    assert_eq!(large["locked"], false, "{large}");
    let why = large["lock_error"].as_str().unwrap_or_default();
    assert!(why.contains("--lock-budget"), "{large}");
    assert_eq!(a.status()["locked_bytes"].as_u64(), Some(1 << 20));
    // A failing hook is reported with its last line of stderr; the release stays active.
    let r = a.wait_for("reporting the hook's failure", &fleet, |s| {
        s["releases"].as_array().is_some_and(|rs| {
            rs.iter().any(|r| {
                r["name"] == "small" && r["hook"].as_str().is_some_and(|h| h.contains("failed"))
            })
        })
    });
    let small = a.release("small", "v1").unwrap();
    let hook = small["hook"].as_str().unwrap();
    assert!(
        hook.contains("exit status: 3") && hook.ends_with("no service for small"),
        "{r}"
    );
    assert_eq!(small["state"], "current");
}

#[test]
fn a_full_disk_in_staging_leaves_the_current_release_untouched() {
    if !is_root() {
        skip_note("skipped: a_full_disk_in_staging_leaves_the_current_release_untouched: mounting a small tmpfs needs root");
        return;
    }
    let fleet = Fleet::start("full");
    let v1 = fleet.publish("index", "v1", 4 << 20, 8);
    let mount = fleet.base().join("small-disk");
    std::fs::create_dir_all(&mount).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=12m", "tmpfs"])
        .arg(&mount)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mount tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.clone());
    // The agent's directory is on the small disk.
    let a = fleet.agent_in(&mount.join("host"), &[]);
    a.wait_current("index", "v1", &fleet);
    fleet.publish("index", "v2", 10 << 20, 9);
    let s = a.wait_for("reporting the full disk", &fleet, |s| {
        s["releases"].as_array().is_some_and(|rs| {
            rs.iter()
                .any(|r| r["version"] == "v2" && r["state"] == "failed")
        })
    });
    let v2 = a.release("index", "v2").unwrap();
    let err = v2["error"].as_str().unwrap_or_default();
    assert!(err.contains("space"), "{s}");
    assert_eq!(a.release("index", "v1").unwrap()["state"], "current");
    assert!(std::fs::read(a.current_file("index")).unwrap() == v1);
}

#[test]
fn a_release_of_data_already_held_is_linked_not_downloaded() {
    let fleet = Fleet::start("same");
    let data = fleet.publish("index", "v1", 2 << 20, 10);
    let a = fleet.agent("host", &["--keep", "1"]);
    a.wait_current("index", "v1", &fleet);
    // The same bytes again, as v2 (same torrent, so the same info-hash).
    assert_eq!(fleet.publish("index", "v2", 2 << 20, 10), data);
    let v2 = a.wait_current("index", "v2", &fleet);
    assert!(std::fs::read(a.current_file("index")).unwrap() == data);
    assert_eq!(v2["downloaded_bytes"], 0, "{v2}");
    // --keep 1 removed v1's directory; v2's files are links of the same data.
    assert!(!a.dir.join("releases/index/v1").exists());
    let log = std::fs::read_to_string(&a.guard.stderr_log).unwrap_or_default();
    assert!(log.contains("linked, not downloaded"), "{log}");
}

#[test]
fn agent_origin_and_tracker_serve_metrics() {
    let fleet = Fleet::start("metrics");
    fleet.publish("index", "v1", 1 << 20, 12);
    let a = fleet.agent("host", &["--metrics", "127.0.0.1:0"]);
    // Printed before the `status socket` line the start waited for.
    let addr = a.metrics_addr();
    a.wait_current("index", "v1", &fleet);
    let text = http_get(&addr, "/metrics");
    assert_eq!(
        metric(&text, "ringswarm_activations_total", ""),
        Some(1.0),
        "{text}"
    );
    // The sequence is the one `publish` printed (at least the publish time in ms).
    let published = std::fs::read_to_string(fleet.base().join("publish-v1.stdout")).unwrap();
    let sequence: f64 = published
        .split("as feed sequence ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sequence in {published}"));
    assert_eq!(
        metric(&text, "ringswarm_feed_sequence", ""),
        Some(sequence),
        "{text}"
    );
    let local = metric(&text, "ringswarm_bytes_in_total", "class=\"local\"").unwrap();
    let remote = metric(&text, "ringswarm_bytes_in_total", "class=\"remote\"").unwrap();
    assert!(local + remote >= f64::from(1 << 20), "{text}");
    assert!(
        metric(
            &text,
            "ringswarm_publish_to_activation_seconds",
            "name=\"index\""
        )
        .is_some(),
        "{text}"
    );
    assert!(
        text.contains("# TYPE ringswarm_locked_bytes gauge"),
        "{text}"
    );

    let origin = fleet
        .feed_url
        .trim_start_matches("http://")
        .trim_end_matches("/feed.json")
        .to_owned();
    let text = http_get(&origin, "/metrics");
    assert_eq!(
        metric(&text, "ringswarm_releases_seeded", ""),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric(&text, "ringswarm_bytes_out_total", "class=\"local\"").unwrap()
            >= f64::from(1 << 20),
        "{text}"
    );
    assert!(
        metric(
            &text,
            "ringswarm_feed_requests_total",
            "answer=\"not_modified\""
        )
        .is_some(),
        "{text}"
    );

    let mut tracker = Command::new(ringswarm());
    tracker.args([
        "tracker",
        "--listen",
        "127.0.0.1:0",
        "--cores",
        "1",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let mut tracker = Guard::spawn("tracker-metrics", tracker, fleet.base());
    let addr = tracker.wait_line("metrics at http://", TIMEOUT, &[]);
    let text = http_get(addr.trim_end_matches("/metrics"), "/metrics");
    assert_eq!(
        metric(&text, "ringswarm_tracker_torrents", ""),
        Some(0.0),
        "{text}"
    );
}

#[test]
fn a_static_web_server_can_serve_the_feed() {
    let fleet = Fleet::start("static");
    let data = fleet.publish("index", "v1", 1 << 20, 13);
    // python3's http.server: no entity tags, Last-Modified only.
    let (_server, port) = http_server("http.server", &fleet.base().join("origin"), fleet.base());
    let feed = format!("http://127.0.0.1:{port}/feed.json");
    let a = fleet.agent_with("host", &feed, &[], &[]);
    a.wait_current("index", "v1", &fleet);
    assert!(std::fs::read(a.current_file("index")).unwrap() == data);
}

#[test]
fn a_current_release_that_no_longer_verifies_is_fetched_again_and_swapped_in() {
    let fleet = Fleet::start("rot");
    let data = fleet.publish("index", "v1", 2 << 20, 14);
    let a = fleet.agent("host", &[]);
    a.wait_current("index", "v1", &fleet);
    let dir = a.dir.clone();
    drop(a);
    // Bit rot (or a stray write) in the current release while the agent is down.
    let file = dir.join("releases/index/v1/blob.bin");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();

    let a = fleet.agent("host", &[]);
    let r = a.wait_for("fetching v1 again", &fleet, |s| {
        s["releases"].as_array().is_some_and(|rs| {
            rs.iter().any(|r| {
                r["version"] == "v1"
                    && r["state"] == "current"
                    && r["downloaded_bytes"].as_u64().unwrap_or(0) > 0
            })
        })
    });
    assert!(
        std::fs::read(a.current_file("index")).unwrap() == data,
        "{r}"
    );
    let log = std::fs::read_to_string(&a.guard.stderr_log).unwrap_or_default();
    assert!(log.contains("does not verify"), "{log}");
    assert!(
        dir.join(".staging").read_dir().unwrap().next().is_none(),
        "staging left over"
    );
}
