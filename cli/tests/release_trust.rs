//! Issue 11, release flow: fresh feeds (expiry, sequences that never go back), hooks that
//! survive crashes and hostile output, and a `current` link that must be the agent's own.
//! Real processes on loopback: `keygen`, `tracker`, `origin`, `publish`, `agent`, `status`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::{dump_logs, pattern, ringswarm, run, scratch, Guard};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A tracker and an origin, with a signing key, in one scratch directory.
struct Fleet {
    dir: tempfile::TempDir,
    tracker_url: String,
    feed_url: String,
    guards: Vec<Guard>,
}

impl Fleet {
    fn start(tag: &str) -> Fleet {
        let dir = scratch(tag);
        let base = dir.path();
        keygen(base, "fleet");
        let mut tracker = Command::new(ringswarm());
        tracker.args(["tracker", "--listen", "127.0.0.1:0", "--interval", "2"]);
        tracker.args(["--cores", "1"]);
        let mut tracker = Guard::spawn("tracker", tracker, base);
        let tracker_url = format!(
            "udp://{}",
            tracker
                .wait_line("tracker listening on udp://", TIMEOUT, &[])
                .trim()
        );
        let mut origin = Command::new(ringswarm());
        origin
            .args(["-v", "origin", "--http", "127.0.0.1:0"])
            .args(["--listen", "127.0.0.1:0", "--cores", "1", "--dir"])
            .arg(base.join("origin"));
        let mut origin = Guard::spawn("origin", origin, base);
        let feed_url = origin.wait_line("serving the feed at ", TIMEOUT, &[&tracker]);
        origin.wait_listening(TIMEOUT, &[&tracker]);
        Fleet {
            dir,
            tracker_url,
            feed_url,
            guards: vec![tracker, origin],
        }
    }

    fn base(&self) -> &Path {
        self.dir.path()
    }

    /// Publishes `len` bytes from `seed` as `name version` with `extra` flags; returns the
    /// data and the feed sequence `publish` printed.
    fn publish(&self, name: &str, version: &str, seed: u64, extra: &[&str]) -> (Vec<u8>, u64) {
        let data = pattern(1 << 20, seed);
        let src = self.base().join("build").join(name).join(version);
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("blob.bin"), &data).unwrap();
        let seq = publish_into(
            self.base(),
            &src.join("blob.bin"),
            &self.base().join("origin"),
            &[
                "--name",
                name,
                "--version",
                version,
                "--tracker",
                &self.tracker_url,
            ],
            extra,
        );
        (data, seq)
    }

    /// An agent on `feed` (polling every 200 ms) with `extra` flags and environment.
    fn agent(&self, host: &str, feed: &str, extra: &[&str], env: &[(&str, &str)]) -> Agent {
        let dir = self.base().join(host);
        let mut cmd = Command::new(ringswarm());
        cmd.args(["-v", "agent", "--feed", feed, "--poll", "200ms"])
            .args(["--listen", "127.0.0.1:0", "--cores", "1", "--pubkey"])
            .arg(self.base().join("fleet.pub"))
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .envs(env.iter().copied());
        let mut guard = Guard::spawn(host, cmd, self.base());
        guard.wait_line("status socket ", TIMEOUT, &self.others());
        Agent { dir, guard }
    }

    fn others(&self) -> Vec<&Guard> {
        self.guards.iter().collect()
    }
}

fn keygen(base: &Path, name: &str) {
    let mut cmd = Command::new(ringswarm());
    cmd.arg("keygen").arg(base.join(name));
    run(&format!("keygen-{name}"), cmd, TIMEOUT, base);
}

/// Runs `publish` (key `base/fleet.key`) and returns the sequence it printed.
fn publish_into(base: &Path, data: &Path, origin: &Path, args: &[&str], extra: &[&str]) -> u64 {
    let out = Command::new(ringswarm())
        .arg("publish")
        .arg(data)
        .args(["--piece-size", "256K", "--key"])
        .arg(base.join("fleet.key"))
        .arg("--origin-dir")
        .arg(origin)
        .args(args)
        .args(extra)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "publish failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.split("as feed sequence ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no sequence in {text}"))
}

struct Agent {
    dir: PathBuf,
    guard: Guard,
}

impl Agent {
    fn status(&self) -> Value {
        let out = Command::new(ringswarm())
            .args(["status", "--json", "--dir"])
            .arg(&self.dir)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn status_text(&self) -> String {
        let out = Command::new(ringswarm())
            .args(["status", "--dir"])
            .arg(&self.dir)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn release(&self, name: &str, version: &str) -> Option<Value> {
        self.status()["releases"]
            .as_array()?
            .iter()
            .find(|r| r["name"] == name && r["version"] == version)
            .cloned()
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

    /// Waits (at most `within`) until `cond` holds of the status; fails with the logs.
    fn wait_for(
        &self,
        what: &str,
        fleet: &Fleet,
        within: Duration,
        cond: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let s = self.status();
            if cond(&s) {
                return s;
            }
            if start.elapsed() > within {
                let mut all = fleet.others();
                all.push(&self.guard);
                dump_logs(&all);
                panic!(
                    "{}: not {what} within {within:?}; status {s}",
                    self.guard.name
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_current(&self, name: &str, version: &str, fleet: &Fleet) {
        self.wait_for(&format!("on {name} {version}"), fleet, TIMEOUT, |s| {
            s["releases"].as_array().is_some_and(|rs| {
                rs.iter().any(|r| {
                    r["name"] == name && r["version"] == version && r["state"] == "current"
                })
            })
        });
    }

    fn wait_hook(&self, name: &str, version: &str, fleet: &Fleet, what: &str) -> String {
        let s = self.wait_for(what, fleet, TIMEOUT, |s| {
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

    /// The agent's Prometheus text (it must run with --metrics).
    fn metrics(&self) -> String {
        let out = self.guard.stdout();
        let addr = out
            .lines()
            .find_map(|l| l.strip_prefix("metrics at http://"))
            .unwrap_or_else(|| panic!("no metrics line in {out}"))
            .trim_end_matches("/metrics")
            .to_owned();
        http_get(&addr, "/metrics")
    }
}

/// GET http://ADDR/PATH with a bare HTTP/1.0 request; the body.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// The value of an unlabelled sample in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
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
    fleet.publish("index", "v1", 1, &["--valid-for", "2s"]);
    // 2 s of validity and its 0.2 s allowance for clock skew are over.
    std::thread::sleep(Duration::from_millis(2600));
    let a = fleet.agent("host", &fleet.feed_url, &["--metrics", "127.0.0.1:0"], &[]);
    a.wait_for("reporting the expired feed", &fleet, TIMEOUT, feed_expired);
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
    assert_eq!(metric(&text, "ringswarm_feed_expired"), Some(1.0), "{text}");

    // A fresh feed is taken at once; when it expires in turn, the agent keeps its release.
    fleet.publish("index", "v2", 2, &["--valid-for", "10s"]);
    a.wait_current("index", "v2", &fleet);
    let s = a.status();
    assert_eq!(s["feed_expired"], false, "{s}");
    assert_eq!(metric(&a.metrics(), "ringswarm_feed_expired"), Some(0.0));
    a.wait_for("reporting the feed expired", &fleet, TIMEOUT, feed_expired);
    assert_eq!(a.currents(), ["\"index\" \"v2\""], "{}", a.status());
    assert_eq!(metric(&a.metrics(), "ringswarm_feed_expired"), Some(1.0));
}

#[test]
fn a_replayed_expired_feed_does_not_move_a_new_agent() {
    let fleet = Fleet::start("replay");
    fleet.publish("index", "v1", 3, &["--valid-for", "2s"]);
    // The attacker keeps a copy of the feed signed for v1 and serves it later, while the
    // origin (still seeding v1) has moved on to v2.
    let replay = fleet.base().join("replay");
    std::fs::create_dir_all(&replay).unwrap();
    std::fs::copy(
        fleet.base().join("origin/feed.json"),
        replay.join("feed.json"),
    )
    .unwrap();
    fleet.publish("index", "v2", 4, &[]);
    std::thread::sleep(Duration::from_millis(2600));
    let mut server = Command::new("python3");
    server
        .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
        .arg("--directory")
        .arg(&replay);
    let mut server = Guard::spawn("replay-server", server, fleet.base());
    let line = server.wait_line("Serving HTTP on 127.0.0.1 port ", TIMEOUT, &[]);
    let port: u16 = line.split_whitespace().next().unwrap().parse().unwrap();
    let feed = format!("http://127.0.0.1:{port}/feed.json");
    let a = fleet.agent("newhost", &feed, &[], &[]);
    a.wait_for("refusing the replayed feed", &fleet, TIMEOUT, feed_expired);
    std::thread::sleep(Duration::from_secs(2));
    assert!(a.currents().is_empty(), "{}", a.status());
    assert!(a.release("index", "v1").is_none(), "{}", a.status());
    assert_eq!(a.status()["feed_sequence"], 0);
}

#[test]
fn a_refreshed_feed_is_fresh_again_with_a_higher_sequence() {
    let fleet = Fleet::start("refresh");
    let (v1, first) = fleet.publish("index", "v1", 12, &["--valid-for", "2s"]);
    std::thread::sleep(Duration::from_millis(2600));
    let a = fleet.agent("host", &fleet.feed_url, &[], &[]);
    a.wait_for("reporting the expired feed", &fleet, TIMEOUT, feed_expired);
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
    fleet.publish("index", "v1", 6, &[]);
    let out = fleet.base().join("hook.env");
    let hook = format!("tr '\\0' '\\n' < /proc/$$/environ > '{}'", out.display());
    let a = fleet.agent(
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
    fleet.publish("index", "v1", 7, &[]);
    let base = fleet.base().display().to_string();
    let hook = format!(
        "echo $$ > '{base}/sh.pid'; sleep 120 & echo $! > '{base}/bg.pid'; \
         echo waiting for ever; sleep 120"
    );
    let a = fleet.agent(
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
        metric(&m, "ringswarm_hook_timeouts_total"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "ringswarm_hook_failures_total"),
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
    fleet.publish("index", "v1", 8, &[]);
    let base = fleet.base().display().to_string();
    let slow = fleet.base().join("slow");
    std::fs::write(&slow, "").unwrap();
    let runs = fleet.base().join("runs.log");
    let hook = format!(
        "echo \"$RINGSWARM_RELEASE_VERSION $$\" >> '{base}/runs.log'; \
         if [ -e '{base}/slow' ]; then exec sleep 120; fi"
    );
    let mut a = fleet.agent("host", &fleet.feed_url, &["--hook", &hook], &[]);
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

    let a = fleet.agent("host", &fleet.feed_url, &["--hook", &hook], &[]);
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
    let a = fleet.agent("host", &fleet.feed_url, &["--hook", &hook], &[]);
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
    fleet.publish("index", "v1", 9, &[]);
    let hook = "head -c 100000000 /dev/zero | tr '\\0' x; echo; echo >&2 the last line; exit 4";
    let a = fleet.agent("host", &fleet.feed_url, &["--hook", hook], &[]);
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
    let (v1, _) = fleet.publish("index", "v1", 10, &[]);
    let a = fleet.agent("host", &fleet.feed_url, &[], &[]);
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
    fleet.publish("index", "v1", 11, &[]);
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
