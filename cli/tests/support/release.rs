//! The release-flow harness shared by the fleet tests (`release`, `release_trust`,
//! `hostile_releases`, `http_hostile`): a signing key, a `tracker`, an `origin`,
//! `publish`, and `agent`s read through `status`. Real processes on loopback; every wait
//! bounded by [`TIMEOUT`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{dump_logs, pattern, ringswarm, run, scratch, Guard};

pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A tracker and an origin, with a signing key, in one scratch directory.
pub struct Fleet {
    dir: tempfile::TempDir,
    pub tracker_url: String,
    pub feed_url: String,
    pub guards: Vec<Guard>,
}

impl Fleet {
    pub fn start(tag: &str) -> Fleet {
        let dir = scratch(tag);
        let base = dir.path();
        keygen(base, "fleet");
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
        let mut origin = Guard::spawn("origin", origin_command(base), base);
        let feed_url = origin.wait_line("serving the feed at ", TIMEOUT, &[&tracker]);
        origin.wait_listening(TIMEOUT, &[&tracker]);
        Fleet {
            dir,
            tracker_url,
            feed_url,
            guards: vec![tracker, origin],
        }
    }

    pub fn base(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `data` as `build/NAME/VERSION/blob.bin`; returns that file.
    fn build(&self, name: &str, version: &str, data: &[u8]) -> PathBuf {
        let src = self.base().join("build").join(name).join(version);
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("blob.bin"), data).unwrap();
        src.join("blob.bin")
    }

    /// Writes a blob of `len` bytes from `seed` and publishes it as `name version` (its
    /// output logged as `publish-VERSION`).
    pub fn publish(&self, name: &str, version: &str, len: usize, seed: u64) -> Vec<u8> {
        let data = pattern(len, seed);
        let blob = self.build(name, version, &data);
        let mut cmd = Command::new(ringswarm());
        cmd.arg("publish")
            .arg(blob)
            .args(["--name", name, "--version", version, "--piece-size", "256K"])
            .args(["--tracker", &self.tracker_url])
            .arg("--key")
            .arg(self.base().join("fleet.key"))
            .arg("--origin-dir")
            .arg(self.base().join("origin"));
        run(&format!("publish-{version}"), cmd, TIMEOUT, self.base());
        data
    }

    /// Publishes 1 MiB from `seed` as `name version` with `extra` flags; returns the data
    /// and the feed sequence `publish` printed.
    pub fn publish_with(
        &self,
        name: &str,
        version: &str,
        seed: u64,
        extra: &[&str],
    ) -> (Vec<u8>, u64) {
        let data = pattern(1 << 20, seed);
        let blob = self.build(name, version, &data);
        let seq = publish_into(
            self.base(),
            &blob,
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

    /// An agent on the origin's feed, polling every 200 ms, with `extra` flags.
    pub fn agent(&self, host: &str, extra: &[&str]) -> Agent {
        self.agent_in(&self.base().join(host), extra)
    }

    /// [`Fleet::agent`] with its directory at `dir`.
    pub fn agent_in(&self, dir: &Path, extra: &[&str]) -> Agent {
        self.agent_on(dir, &self.feed_url, extra, &[])
    }

    /// An agent on `feed` (polling every 200 ms) with `extra` flags and environment.
    pub fn agent_with(
        &self,
        host: &str,
        feed: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        self.agent_on(&self.base().join(host), feed, extra, env)
    }

    fn agent_on(&self, dir: &Path, feed: &str, extra: &[&str], env: &[(&str, &str)]) -> Agent {
        let dir = dir.to_path_buf();
        let host = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut cmd = Command::new(ringswarm());
        cmd.args(["-v", "agent", "--feed", feed, "--poll", "200ms"])
            .args(["--listen", "127.0.0.1:0", "--cores", "1", "--pubkey"])
            .arg(self.base().join("fleet.pub"))
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .envs(env.iter().copied());
        let mut guard = Guard::spawn(&host, cmd, self.base());
        guard.wait_line("status socket ", TIMEOUT, &self.others());
        Agent { dir, guard }
    }

    pub fn others(&self) -> Vec<&Guard> {
        self.guards.iter().collect()
    }
}

/// `ringswarm keygen BASE/NAME` (logged as `keygen-NAME`).
pub fn keygen(base: &Path, name: &str) {
    let mut cmd = Command::new(ringswarm());
    cmd.arg("keygen").arg(base.join(name));
    run(&format!("keygen-{name}"), cmd, TIMEOUT, base);
}

/// `ringswarm -v origin` on free loopback ports, one core, serving `DIR/origin`.
pub fn origin_command(dir: &Path) -> Command {
    let mut cmd = Command::new(ringswarm());
    cmd.args([
        "-v",
        "origin",
        "--http",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
    ])
    .args(["--cores", "1", "--dir"])
    .arg(dir.join("origin"));
    cmd
}

/// Runs `publish` (key `base/fleet.key`) and returns the sequence it printed.
pub fn publish_into(base: &Path, data: &Path, origin: &Path, args: &[&str], extra: &[&str]) -> u64 {
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

/// python3's http.server (no entity tags, Last-Modified only) serving `dir` on a free
/// loopback port; returns it and the port.
pub fn http_server(name: &str, dir: &Path, logdir: &Path) -> (Guard, u16) {
    let mut server = Command::new("python3");
    server
        .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
        .arg("--directory")
        .arg(dir);
    let mut server = Guard::spawn(name, server, logdir);
    let line = server.wait_line("Serving HTTP on 127.0.0.1 port ", TIMEOUT, &[]);
    let port: u16 = line.split_whitespace().next().unwrap().parse().unwrap();
    (server, port)
}

/// GET http://ADDR/PATH with a bare HTTP/1.0 request; the body.
pub fn http_get(addr: &str, path: &str) -> String {
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

/// The value of an unlabelled sample (or the first with `labels`) in Prometheus text.
pub fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&key).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// A running agent and its directory.
pub struct Agent {
    pub dir: PathBuf,
    pub guard: Guard,
}

impl Agent {
    pub fn status(&self) -> Value {
        let out = Command::new(ringswarm())
            .args(["status", "--json", "--dir"])
            .arg(&self.dir)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// The status entry of `name version`, if listed.
    pub fn release(&self, name: &str, version: &str) -> Option<Value> {
        self.status()["releases"]
            .as_array()?
            .iter()
            .find(|r| r["name"] == name && r["version"] == version)
            .cloned()
    }

    /// Waits until `cond` holds of the status; fails with the logs otherwise.
    pub fn wait_for(&self, what: &str, fleet: &Fleet, cond: impl Fn(&Value) -> bool) -> Value {
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

    /// Waits until `name version` is current; its status entry.
    pub fn wait_current(&self, name: &str, version: &str, fleet: &Fleet) -> Value {
        self.wait_for(&format!("on {name} {version}"), fleet, |s| {
            s["releases"].as_array().is_some_and(|rs| {
                rs.iter().any(|r| {
                    r["name"] == name && r["version"] == version && r["state"] == "current"
                })
            })
        });
        self.release(name, version).unwrap()
    }

    pub fn current_file(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("current").join("blob.bin")
    }

    /// The address of the agent's metrics (it must run with --metrics; the line comes
    /// before the `status socket` line the start waited for).
    pub fn metrics_addr(&self) -> String {
        let out = self.guard.stdout();
        out.lines()
            .find_map(|l| l.strip_prefix("metrics at http://"))
            .unwrap_or_else(|| panic!("no metrics line in {out}"))
            .trim_end_matches("/metrics")
            .to_owned()
    }

    /// The agent's Prometheus text (it must run with --metrics).
    pub fn metrics(&self) -> String {
        http_get(&self.metrics_addr(), "/metrics")
    }
}
