//! Issue 11, release flow: fresh feeds (expiry, sequences that never go back), hooks that
//! survive crashes and hostile output, and a `current` link that must be the agent's own.
//! Real processes on loopback: `keygen`, `tracker`, `origin`, `publish`, `agent`, `status`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::release::{http_server, keygen, metric, publish_into, Agent, Fleet, TIMEOUT};
use support::{dump_logs, pattern, ringswarm, scratch, Guard};

/// Status queries and waits only these tests make.
impl Agent {
    fn status_text(&self) -> String {
        let out = Command::new(ringswarm())
            .args(["status", "--dir"])
            .arg(&self.dir)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn currents(&self) -> Vec<String> {
        self.status()["releases"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .filter(|r| r["state"] == "current")
                    .map(|r| format!("{} {}", r["name"], r["version"]))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn wait_hook(&self, name: &str, version: &str, fleet: &Fleet, what: &str) -> String {
        let s = self.wait_for(what, fleet, |s| {
            s["releases"].as_array().is_some_and(|rs| {
                rs.iter().any(|r| {
                    r["name"] == name
                        && r["version"] == version
                        && r["hook"]
                            .as_str()
                            .is_some_and(|h| h != "hook running" && !h.is_empty())
                })
            })
        });
        let r = s["releases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name && r["version"] == version)
            .unwrap();
        r["hook"].as_str().unwrap().to_owned()
    }
}

fn feed_expired(s: &Value) -> bool {
    s["feed_expired"] == true
        && s["last_feed_error"]
            .as_str()
            .is_some_and(|e| e.contains("feed expired"))
}

// ---- item 6: fresh feeds --------------------------------------------------------------

#[test]
fn an_expired_feed_activates_nothing_and_says_so() {
    let fleet = Fleet::start("expired");
    fleet.publish_with("index", "v1", 1, &["--valid-for", "2s"]);
    // 2 s of validity and its 0.2 s allowance for clock skew are over.
    std::thread::sleep(Duration::from_millis(2600));
    let a = fleet.agent_with("host", &fleet.feed_url, &["--metrics", "127.0.0.1:0"], &[]);
    a.wait_for("reporting the expired feed", &fleet, feed_expired);
    // The release is fully available from the origin: give it the time to come, were it taken.
    std::thread::sleep(Duration::from_secs(2));
    assert!(a.currents().is_empty(), "{}", a.status());
    assert!(!a.dir.join("index/current").exists());
    assert!(
        a.status_text().contains("FEED EXPIRED"),
        "{}",
        a.status_text()
    );
    let text = a.metrics();
    assert_eq!(
        metric(&text, "ringswarm_feed_expired", ""),
        Some(1.0),
        "{text}"
    );

    // A fresh feed is taken at once; when it expires in turn, the agent keeps its release.
    fleet.publish_with("index", "v2", 2, &["--valid-for", "10s"]);
    a.wait_current("index", "v2", &fleet);
    let s = a.status();
    assert_eq!(s["feed_expired"], false, "{s}");
    assert_eq!(
        metric(&a.metrics(), "ringswarm_feed_expired", ""),
        Some(0.0)
    );
    a.wait_for("reporting the feed expired", &fleet, feed_expired);
    assert_eq!(a.currents(), ["\"index\" \"v2\""], "{}", a.status());
    assert_eq!(
        metric(&a.metrics(), "ringswarm_feed_expired", ""),
        Some(1.0)
    );
}

#[test]
fn a_replayed_expired_feed_does_not_move_a_new_agent() {
    let fleet = Fleet::start("replay");
    fleet.publish_with("index", "v1", 3, &["--valid-for", "2s"]);
    // The attacker keeps a copy of the feed signed for v1 and serves it later, while the
    // origin (still seeding v1) has moved on to v2.
    let replay = fleet.base().join("replay");
    std::fs::create_dir_all(&replay).unwrap();
    std::fs::copy(
        fleet.base().join("origin/feed.json"),
        replay.join("feed.json"),
    )
    .unwrap();
    fleet.publish_with("index", "v2", 4, &[]);
    std::thread::sleep(Duration::from_millis(2600));
    let (_server, port) = http_server("replay-server", &replay, fleet.base());
    let feed = format!("http://127.0.0.1:{port}/feed.json");
    let a = fleet.agent_with("newhost", &feed, &[], &[]);
    a.wait_for("refusing the replayed feed", &fleet, feed_expired);
    std::thread::sleep(Duration::from_secs(2));
    assert!(a.currents().is_empty(), "{}", a.status());
    assert!(a.release("index", "v1").is_none(), "{}", a.status());
    assert_eq!(a.status()["feed_sequence"], 0);
}

#[test]
fn a_refreshed_feed_is_fresh_again_with_a_higher_sequence() {
    let fleet = Fleet::start("refresh");
    let (v1, first) = fleet.publish_with("index", "v1", 12, &["--valid-for", "2s"]);
    std::thread::sleep(Duration::from_millis(2600));
    let a = fleet.agent_with("host", &fleet.feed_url, &[], &[]);
    a.wait_for("reporting the expired feed", &fleet, feed_expired);
    // Nothing new to publish: the same feed, signed again.
    let out = Command::new(ringswarm())
        .args(["publish", "--refresh", "--key"])
        .arg(fleet.base().join("fleet.key"))
        .arg("--origin-dir")
        .arg(fleet.base().join("origin"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seq: u64 = text
        .split("as feed sequence ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(seq > first, "{seq} after {first}");
    a.wait_current("index", "v1", &fleet);
    let s = a.status();
    assert_eq!(s["feed_expired"], false, "{s}");
    assert_eq!(s["feed_sequence"], seq, "{s}");
    assert!(std::fs::read(a.dir.join("index/current/blob.bin")).unwrap() == v1);
}

#[test]
fn publishing_into_a_lost_origin_dir_still_raises_the_sequence() {
    let dir = scratch("sequence");
    let base = dir.path();
    keygen(base, "fleet");
    let data = base.join("blob.bin");
    std::fs::write(&data, pattern(64 << 10, 5)).unwrap();
    let origin = base.join("origin");
    let first = publish_into(
        base,
        &data,
        &origin,
        &["--name", "a", "--version", "v1"],
        &[],
    );
    let second = publish_into(
        base,
        &data,
        &origin,
        &["--name", "a", "--version", "v2"],
        &[],
    );
    assert!(second > first, "{second} after {first}");
    // The origin directory is lost: a new one, the same key.
    let lost = base.join("origin-rebuilt");
    let third = publish_into(base, &data, &lost, &["--name", "a", "--version", "v3"], &[]);
    assert!(
        third > second,
        "{third} after {second}: a sequence went back"
    );
}

// ---- item 7: hooks --------------------------------------------------------------------

#[test]
fn a_hook_gets_only_path_its_release_and_the_variables_passed() {
    let fleet = Fleet::start("hookenv");
    fleet.publish_with("index", "v1", 6, &[]);
    let out = fleet.base().join("hook.env");
    let hook = format!("tr '\\0' '\\n' < /proc/$$/environ > '{}'", out.display());
    let a = fleet.agent_with(
        "host",
        &fleet.feed_url,
        &["--hook", &hook, "--hook-env", "KEEP_ME"],
        &[("KEEP_ME", "kept"), ("SECRET_TOKEN", "s3cret")],
    );
    assert_eq!(
        a.wait_hook("index", "v1", &fleet, "running the hook"),
        "hook ok"
    );
    let env = std::fs::read_to_string(&out).unwrap();
    let mut names: Vec<&str> = env
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('=').next().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "KEEP_ME",
            "PATH",
            "RINGSWARM_RELEASE_NAME",
            "RINGSWARM_RELEASE_PATH",
            "RINGSWARM_RELEASE_VERSION"
        ],
        "{env}"
    );
    assert!(env.contains("KEEP_ME=kept\n"), "{env}");
    assert!(env.contains("RINGSWARM_RELEASE_VERSION=v1\n"), "{env}");
}

fn alive(pid: &str) -> bool {
    // A zombie (exited, not yet reaped) is not alive.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().to_owned()))
        .is_some_and(|r| !r.starts_with('Z'))
}

#[test]
fn a_hook_past_its_timeout_is_killed_with_its_children_and_reported() {
    let fleet = Fleet::start("hooktimeout");
    fleet.publish_with("index", "v1", 7, &[]);
    let base = fleet.base().display().to_string();
    let hook = format!(
        "echo $$ > '{base}/sh.pid'; sleep 120 & echo $! > '{base}/bg.pid'; \
         echo waiting for ever; sleep 120"
    );
    let a = fleet.agent_with(
        "host",
        &fleet.feed_url,
        &[
            "--hook",
            &hook,
            "--hook-timeout",
            "1s",
            "--metrics",
            "127.0.0.1:0",
        ],
        &[],
    );
    let started = Instant::now();
    let text = a.wait_hook("index", "v1", &fleet, "timing the hook out");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        text.starts_with("hook timed out after 1s and was killed")
            && text.ends_with("waiting for ever"),
        "{text}"
    );
    let m = a.metrics();
    assert_eq!(
        metric(&m, "ringswarm_hook_timeouts_total", ""),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "ringswarm_hook_failures_total", ""),
        Some(1.0),
        "{m}"
    );
    // The whole process group went: the shell and what it left in the background.
    for f in ["sh.pid", "bg.pid"] {
        let pid = std::fs::read_to_string(fleet.base().join(f)).unwrap();
        let pid = pid.trim().to_owned();
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(&pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(&pid) {
            Command::new("kill").args(["-KILL", &pid]).status().ok();
            panic!("{f} ({pid}) still runs after the hook timed out");
        }
    }
    // The release stays active.
    assert_eq!(a.release("index", "v1").unwrap()["state"], "current");
}

#[test]
fn a_hook_cut_short_by_a_killed_agent_runs_again_after_the_restart() {
    let fleet = Fleet::start("hookcrash");
    fleet.publish_with("index", "v1", 8, &[]);
    let base = fleet.base().display().to_string();
    let slow = fleet.base().join("slow");
    std::fs::write(&slow, "").unwrap();
    let runs = fleet.base().join("runs.log");
    let hook = format!(
        "echo \"$RINGSWARM_RELEASE_VERSION $$\" >> '{base}/runs.log'; \
         if [ -e '{base}/slow' ]; then exec sleep 120; fi"
    );
    let mut a = fleet.agent_with("host", &fleet.feed_url, &["--hook", &hook], &[]);
    a.wait_current("index", "v1", &fleet);
    let deadline = Instant::now() + TIMEOUT;
    let first = loop {
        let log = std::fs::read_to_string(&runs).unwrap_or_default();
        if let Some(line) = log.lines().next() {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "the hook did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    // The agent dies while its hook runs (the hook outlives it here; stop it too).
    a.guard.child.kill().unwrap();
    a.guard.child.wait().unwrap();
    let hook_pid = first.split_whitespace().nth(1).unwrap().to_owned();
    Command::new("kill")
        .args(["-KILL", &hook_pid])
        .status()
        .unwrap();
    std::fs::remove_file(&slow).unwrap();
    drop(a);

    let a = fleet.agent_with("host", &fleet.feed_url, &["--hook", &hook], &[]);
    let text = a.wait_hook("index", "v1", &fleet, "running the hook again");
    assert_eq!(text, "hook ok");
    let log = std::fs::read_to_string(&runs).unwrap();
    let versions: Vec<&str> = log
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(versions, ["v1", "v1"], "{log}");
    // Finished: it does not run a third time after another restart.
    drop(a);
    let a = fleet.agent_with("host", &fleet.feed_url, &["--hook", &hook], &[]);
    a.wait_current("index", "v1", &fleet);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(std::fs::read_to_string(&runs).unwrap().lines().count(), 2);
}

/// Peak resident memory of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[test]
fn a_hook_printing_100_mb_costs_the_agent_no_memory() {
    let fleet = Fleet::start("hookflood");
    fleet.publish_with("index", "v1", 9, &[]);
    let hook = "head -c 100000000 /dev/zero | tr '\\0' x; echo; echo >&2 the last line; exit 4";
    let a = fleet.agent_with("host", &fleet.feed_url, &["--hook", hook], &[]);
    let text = a.wait_hook("index", "v1", &fleet, "running the noisy hook");
    assert!(
        text.starts_with("hook failed (exit status: 4)") && text.ends_with("the last line"),
        "{text}"
    );
    let peak = peak_rss(a.guard.child.id());
    support::skip_note(&format!(
        "a_hook_printing_100_mb: the agent peaked at {} MiB resident",
        peak >> 20
    ));
    assert!(
        peak < 80 << 20,
        "the agent peaked at {} MiB resident",
        peak >> 20
    );
}

// ---- item 7: `current` must be the agent's own ------------------------------------------

#[test]
fn a_current_link_to_another_tree_with_the_same_version_is_switched_back() {
    let fleet = Fleet::start("elsewhere");
    let (v1, _) = fleet.publish_with("index", "v1", 10, &[]);
    let a = fleet.agent_with("host", &fleet.feed_url, &[], &[]);
    a.wait_current("index", "v1", &fleet);
    // Another tree with the same last components, and other data.
    let elsewhere = fleet.base().join("elsewhere/releases/index/v1");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("blob.bin"), b"not the release").unwrap();
    let link = a.dir.join("index/current");
    let tmp = a.dir.join("index/.current.test");
    std::os::unix::fs::symlink(&elsewhere, &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap();
    let own = Path::new("../releases/index/v1");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_link(&link).unwrap() != own {
        if Instant::now() > deadline {
            dump_logs(&[&a.guard]);
            panic!(
                "`current` still leads to {} (the agent took it for its own v1)",
                std::fs::read_link(&link).unwrap().display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(std::fs::read(link.join("blob.bin")).unwrap() == v1);
    assert_eq!(a.release("index", "v1").unwrap()["state"], "current");
}

// ---- item 10: what the agent's unit leaves it is enough ---------------------------------

#[test]
fn the_agent_locks_a_release_with_cap_ipc_lock_as_its_only_capability() {
    let test = "the_agent_locks_a_release_with_cap_ipc_lock_as_its_only_capability";
    if !support::is_root() {
        support::skip_note(&format!(
            "skipped: {test}: needs root (to drop capabilities)"
        ));
        return;
    }
    if !support::require(
        support::on_path("setpriv") && support::on_path("prlimit"),
        test,
        "setpriv and prlimit (util-linux)",
    ) {
        return;
    }
    let fleet = Fleet::start("caps");
    fleet.publish_with("index", "v1", 11, &[]);
    // As ringswarm-agent.service: root, bounding set CAP_IPC_LOCK, no new privileges; and a
    // 64 KiB RLIMIT_MEMLOCK, so locking the 1 MiB release takes the capability.
    let dir = fleet.base().join("host");
    let mut cmd = Command::new("prlimit");
    cmd.args(["--memlock=65536:65536", "--", "setpriv", "--no-new-privs"])
        .args([
            "--bounding-set",
            "-all,+ipc_lock",
            "--inh-caps",
            "-all",
            "--",
        ])
        .arg(ringswarm())
        .args(["-v", "agent", "--feed", &fleet.feed_url, "--poll", "200ms"])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--cores",
            "1",
            "--lock",
            "--pubkey",
        ])
        .arg(fleet.base().join("fleet.pub"))
        .arg("--dir")
        .arg(&dir);
    let mut guard = Guard::spawn("host", cmd, fleet.base());
    guard.wait_line("status socket ", TIMEOUT, &fleet.others());
    let caps = std::fs::read_to_string(format!("/proc/{}/status", guard.child.id())).unwrap();
    assert!(caps.contains("CapBnd:\t0000000000004000"), "{caps}");
    let a = Agent { dir, guard };
    a.wait_current("index", "v1", &fleet);
    let r = a.release("index", "v1").unwrap();
    assert_eq!(r["locked"], true, "{r}");
    assert!(a.status()["locked_bytes"].as_u64().unwrap() >= 1 << 20);
}
