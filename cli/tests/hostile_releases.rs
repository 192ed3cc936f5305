//! Issue 11, item 1 for the fleet agent: a release's verification record vouches only for
//! data that was verified, bound to the files' identity. A release made of data already
//! held (hard links of another release's files) gets no record, so data changed behind the
//! agent's back is hashed again after a restart instead of trusted.
//!
//! Real processes on loopback (tracker, origin, publish, agent); every wait bounded.

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
        let mut keygen = Command::new(ringswarm());
        keygen.arg("keygen").arg(base.join("fleet"));
        run("keygen", keygen, TIMEOUT, base);
        let mut tracker = Command::new(ringswarm());
        tracker.args([
            "tracker",
            "--listen",
            "127.0.0.1:0",
            "--interval",
            "2",
            "--cores",
            "1",
        ]);
        let mut tracker = Guard::spawn("tracker", tracker, base);
        let tracker_url = format!(
            "udp://{}",
            tracker
                .wait_line("tracker listening on udp://", TIMEOUT, &[])
                .trim()
        );
        let mut origin = Command::new(ringswarm());
        origin
            .args([
                "-v",
                "origin",
                "--http",
                "127.0.0.1:0",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--cores", "1", "--dir"])
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

    /// Writes a blob of `len` bytes from `seed` and publishes it as `name version`.
    fn publish(&self, name: &str, version: &str, len: usize, seed: u64) -> Vec<u8> {
        let data = pattern(len, seed);
        let src = self.base().join("build").join(name).join(version);
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("blob.bin"), &data).unwrap();
        let mut cmd = Command::new(ringswarm());
        cmd.arg("publish")
            .arg(src.join("blob.bin"))
            .args(["--name", name, "--version", version, "--piece-size", "256K"])
            .args(["--tracker", &self.tracker_url])
            .arg("--key")
            .arg(self.base().join("fleet.key"))
            .arg("--origin-dir")
            .arg(self.base().join("origin"));
        run(&format!("publish-{version}"), cmd, TIMEOUT, self.base());
        data
    }

    /// An agent polling every 200 ms, with `extra` flags.
    fn agent(&self, host: &str, extra: &[&str]) -> Agent {
        self.agent_in(&self.base().join(host), extra)
    }

    fn agent_in(&self, dir: &Path, extra: &[&str]) -> Agent {
        let dir = dir.to_path_buf();
        let host = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut cmd = Command::new(ringswarm());
        cmd.args(["-v", "agent", "--feed", &self.feed_url, "--poll", "200ms"])
            .args(["--listen", "127.0.0.1:0", "--cores", "1", "--pubkey"])
            .arg(self.base().join("fleet.pub"))
            .arg("--dir")
            .arg(&dir)
            .args(extra);
        let mut guard = Guard::spawn(&host, cmd, self.base());
        guard.wait_line("status socket ", TIMEOUT, &self.others());
        Agent { dir, guard }
    }

    fn others(&self) -> Vec<&Guard> {
        self.guards.iter().collect()
    }
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

    /// The status entry of `name version`, if listed.
    fn release(&self, name: &str, version: &str) -> Option<Value> {
        self.status()["releases"]
            .as_array()?
            .iter()
            .find(|r| r["name"] == name && r["version"] == version)
            .cloned()
    }

    /// Waits until `cond` holds of the status; fails with the logs otherwise.
    fn wait_for(&self, what: &str, fleet: &Fleet, cond: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let s = self.status();
            if cond(&s) {
                return s;
            }
            if start.elapsed() > TIMEOUT {
                let mut all = fleet.others();
                all.push(&self.guard);
                dump_logs(&all);
                panic!(
                    "{}: not {what} within {TIMEOUT:?}; status {s}",
                    self.guard.name
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_current(&self, name: &str, version: &str, fleet: &Fleet) -> Value {
        self.wait_for(&format!("on {name} {version}"), fleet, |s| {
            s["releases"].as_array().is_some_and(|rs| {
                rs.iter().any(|r| {
                    r["name"] == name && r["version"] == version && r["state"] == "current"
                })
            })
        });
        self.release(name, version).unwrap()
    }

    fn current_file(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("current").join("blob.bin")
    }
}

/// v1 is tampered with on disk while the agent runs; v2, the same bytes, is then linked
/// from v1 (not downloaded). After a restart the agent must not take v2's data as
/// verified: it hashes it, finds it wrong, fetches it again. (Before issue 11 the agent
/// recorded linked data as verified as it found it, so the restart trusted it.)
#[test]
fn linked_data_is_not_recorded_as_verified() {
    let fleet = Fleet::start("hr-linked");
    let data = fleet.publish("index", "v1", 2 << 20, 21);
    let a = fleet.agent("host", &[]);
    a.wait_current("index", "v1", &fleet);

    // A stray write into the held release, behind the agent's back (same size).
    let v1 = a.dir.join("releases/index/v1/blob.bin");
    let mut bytes = std::fs::read(&v1).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&v1, &bytes).unwrap();

    assert_eq!(fleet.publish("index", "v2", 2 << 20, 21), data);
    a.wait_current("index", "v2", &fleet);
    let log = std::fs::read_to_string(&a.guard.stderr_log).unwrap_or_default();
    assert!(log.contains("linked, not downloaded"), "{log}");
    let dir = a.dir.clone();
    drop(a);

    let a = fleet.agent_in(&dir, &[]);
    let r = a.wait_for("v2 current after the restart", &fleet, |s| {
        s["releases"].as_array().is_some_and(|rs| {
            rs.iter()
                .any(|r| r["version"] == "v2" && r["state"] == "current")
        })
    });
    // Let a recheck and a fetch run their course (bounded), then compare the bytes.
    let deadline = Instant::now() + TIMEOUT;
    while std::fs::read(a.current_file("index")).unwrap_or_default() != data
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        std::fs::read(a.current_file("index")).unwrap() == data,
        "the changed bytes were taken as verified after the restart: {r}"
    );
}
