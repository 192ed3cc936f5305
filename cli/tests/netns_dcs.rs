//! The emulated fleet in datacenters (`scripts/netns-fleet.sh up --dcs N`): the dcs meet
//! through a WAN node where `perf/fleet.d/wan-delay.py` holds every frame for the one-way
//! delay and tbf shapes each dc's WAN link.
//!
//! - `two_dcs_delay_rate_and_teardown`: a 2-dc fleet of 4 hosts; the TCP handshake time
//!   (connect to a closed port: SYN out, RST back, one round trip) from a dc2 host to the
//!   origin (dc1) is at least 2 x the delay and within a sane bound, within dc1 it is far
//!   below the delay; a bulk TCP stream from dc2 to dc1 holds roughly the WAN rate and the
//!   per-dc counters see it leave dc2 and enter dc1; `topology` names each rack's dc; and
//!   `down` leaves no namespace, no state file and no forwarder process.
//! - `forwarder_ends_by_itself`: with `--wan-max-seconds 2` the forwarder exits on its own
//!   and writes its figures; bad `--dcs` values get one clear line.
//!
//! Needs root (network namespaces, tc) and iproute2, ethtool, /usr/bin/python3: without them
//! each test prints `skipped: ...` and returns (a failure under `CI=true` for a missing tool).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

mod support;
use support::*;

const ORIGIN_IP: &str = "198.18.0.1";
/// One-way delay between the dcs, and the WAN rate (each dc's link, both directions).
const WAN_DELAY_MS: f64 = 15.0;
const WAN_RATE_MBIT: f64 = 50.0;

fn dcs_possible(test: &str) -> bool {
    if !is_root() {
        skip_note(&format!(
            "skipped: {test}: needs root (network namespaces and tc for the emulated fleet)"
        ));
        return false;
    }
    require(
        runs_ok("ip", &["netns", "list"]),
        test,
        "`ip netns` (iproute2)",
    ) && require(on_path("tc"), test, "tc (iproute2)")
        && require(
            on_path("ethtool") || Path::new("/usr/sbin/ethtool").is_file(),
            test,
            "ethtool",
        )
        && require(Path::new(PYTHON).is_file(), test, PYTHON)
}

/// A fleet under its own prefix, torn down on drop (on panic too).
struct Fleet {
    prefix: String,
}

impl Fleet {
    fn new(tag: &str) -> Fleet {
        let fleet = Fleet {
            prefix: format!("{tag}-{}-", std::process::id()),
        };
        let _ = capture(fleet.cmd(&["down"]), Duration::from_secs(30));
        fleet
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("bash");
        c.arg(script("netns-fleet.sh"))
            .args(args)
            .env("RSF_PREFIX", &self.prefix);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        capture(self.cmd(args), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("netns-fleet.sh {}: {e}", args.join(" ")))
    }

    /// A python3 program run in `node`'s namespace; its stdout.
    fn python(&self, node: &str, code: &str, args: &[&str], timeout: Duration) -> String {
        let mut c = self.cmd(&["exec", node, PYTHON, "-c", code]);
        c.args(args);
        capture(c, timeout).unwrap_or_else(|e| panic!("python in {node}: {e}"))
    }

    fn counters(&self) -> HashMap<String, (u64, u64)> {
        self.run(&["counters"])
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                match f[..] {
                    [name, a, b] => Some((name.to_owned(), (a.parse().ok()?, b.parse().ok()?))),
                    _ => None,
                }
            })
            .collect()
    }

    fn forwarder_pid(&self) -> u32 {
        let p = format!("/run/{}wan-delay.pid", self.prefix);
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    fn namespaces(&self) -> Vec<String> {
        capture(
            {
                let mut c = Command::new("ip");
                c.args(["netns", "list"]);
                c
            },
            Duration::from_secs(10),
        )
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| ns.starts_with(&self.prefix))
        .map(str::to_owned)
        .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Err(e) = capture(self.cmd(&["down"]), Duration::from_secs(60)) {
            eprintln!("tearing down fleet {}: {e}", self.prefix);
        }
    }
}

/// Whether `pid` is a live wan-delay.py (a reused pid running something else is not).
fn forwarder_alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("wan-delay"))
        .unwrap_or(false)
}

/// Until `pid` is no longer a forwarder, at most `limit`.
fn wait_gone(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while forwarder_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Round trips in ms: TCP connects to a closed port (refused = SYN + RST), after one to
/// resolve ARP.
const HANDSHAKES: &str = r#"
import socket, sys, time
out = []
for i in range(int(sys.argv[2]) + 1):
    s = socket.socket(); s.settimeout(2); t = time.monotonic()
    try:
        s.connect((sys.argv[1], 9))
    except ConnectionRefusedError:
        pass
    out.append((time.monotonic() - t) * 1e3); s.close()
print(" ".join("%.3f" % x for x in out[1:]))
"#;

/// Bulk TCP for argv[3] seconds to argv[1]:argv[2]; prints bytes sent.
const SENDER: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
end = time.monotonic() + float(sys.argv[3]); buf = b"x" * 65536; n = 0
while time.monotonic() < end:
    n += s.send(buf)
s.close(); print(n)
"#;

/// Accepts one connection on argv[1], reads until EOF (at most argv[2] s); prints the rate
/// in Mbit/s over the second half of the stream (after TCP's ramp).
const SINK: &str = r#"
import socket, sys, time
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("0.0.0.0", int(sys.argv[1]))); ls.listen(1); ls.settimeout(float(sys.argv[2]))
print("ready", flush=True)
c, _ = ls.accept(); c.settimeout(float(sys.argv[2])); marks = []; n = 0
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    n += len(b); marks.append((time.monotonic(), n))
t0, t1 = marks[0][0], marks[-1][0]
half = [m for m in marks if m[0] >= (t0 + t1) / 2]
print("%.2f" % ((half[-1][1] - half[0][1]) * 8 / max(half[-1][0] - half[0][0], 1e-3) / 1e6))
"#;

fn parse_ms(s: &str) -> Vec<f64> {
    s.split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect()
}

#[test]
fn two_dcs_delay_rate_and_teardown() {
    let test = "two_dcs_delay_rate_and_teardown";
    if !dcs_possible(test) {
        return;
    }
    let started = Instant::now();
    let fleet = Fleet::new("rsdc");
    let wan_rate = format!("{}mbit", WAN_RATE_MBIT as u32);
    let wan_delay = format!("{}ms", WAN_DELAY_MS as u32);
    fleet.run(&[
        "up",
        "--hosts",
        "4",
        "--racks",
        "2",
        "--dcs",
        "2",
        "--host-rate",
        "200mbit",
        "--uplink-rate",
        "200mbit",
        "--wan-rate",
        &wan_rate,
        "--wan-delay",
        &wan_delay,
    ]);
    let topology = fleet.run(&["topology"]);
    assert!(
        topology.contains("cidr = \"198.18.2.0/24\"\ndc = \"dc2\"\nrack = \"r2\""),
        "rack 2 is in dc2:\n{topology}"
    );
    assert!(
        topology.contains("cidr = \"198.18.1.0/24\"\ndc = \"dc1\"\nrack = \"r1\""),
        "rack 1 is in dc1:\n{topology}"
    );
    let pid = fleet.forwarder_pid();
    assert!(forwarder_alive(pid), "the forwarder {pid} runs");

    // Between dcs: every round trip crosses the WAN twice.
    let hosts = fleet.run(&["hosts"]);
    assert!(
        hosts.contains("h3 ") && hosts.contains(" 198.18.2.3 2"),
        "{hosts}"
    );
    let far = parse_ms(&fleet.python("h3", HANDSHAKES, &[ORIGIN_IP, "5"], Duration::from_secs(15)));
    let near =
        parse_ms(&fleet.python("h1", HANDSHAKES, &[ORIGIN_IP, "5"], Duration::from_secs(15)));
    assert_eq!(far.len(), 5, "{far:?}");
    let rtt = 2.0 * WAN_DELAY_MS;
    let min_far = far.iter().cloned().fold(f64::MAX, f64::min);
    let mut sorted = far.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    assert!(
        min_far >= rtt,
        "RTT between dcs {far:?} ms: below 2 x {WAN_DELAY_MS} ms"
    );
    assert!(
        sorted[2] <= rtt + 20.0,
        "RTT between dcs {far:?} ms: median far above 2 x {WAN_DELAY_MS} ms"
    );
    let max_near = near.iter().cloned().fold(0.0, f64::max);
    assert!(
        max_near < WAN_DELAY_MS / 2.0,
        "RTT inside dc1 {near:?} ms: the WAN delay leaked into the dc"
    );

    // The WAN rate: a stream from dc2 to the origin, for 3 s.
    let before = fleet.counters();
    let mut sink = fleet.cmd(&["exec", "origin", PYTHON, "-u", "-c", SINK, "5001", "20"]);
    sink.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut sink = sink.spawn().expect("spawn the sink");
    let mut sink_out = sink.stdout.take().expect("sink stdout");
    let mut ready = [0u8; 6];
    sink_out.read_exact(&mut ready).expect("the sink is ready");
    let sent: u64 = fleet
        .python(
            "h3",
            SENDER,
            &[ORIGIN_IP, "5001", "3"],
            Duration::from_secs(20),
        )
        .trim()
        .parse()
        .expect("bytes sent");
    let mut rest = String::new();
    let _ = sink_out.read_to_string(&mut rest);
    let _ = sink.wait();
    let mbit: f64 = rest.trim().parse().unwrap_or(0.0);
    assert!(
        (0.6 * WAN_RATE_MBIT..=1.05 * WAN_RATE_MBIT).contains(&mbit),
        "a stream across the WAN ran at {mbit} Mbit/s, not about {WAN_RATE_MBIT}"
    );
    let after = fleet.counters();
    let delta = |k: &str, i: usize| {
        let (a, b) = (after[k], before[k]);
        if i == 0 {
            a.0 - b.0
        } else {
            a.1 - b.1
        }
    };
    let dc2_out = delta("dc2", 0);
    let dc1_in = delta("dc1", 1);
    assert!(
        dc2_out >= sent && dc1_in >= sent,
        "the {sent} bytes sent left dc2 ({dc2_out}) and entered dc1 ({dc1_in})"
    );
    assert!(
        dc1_in as f64 <= dc2_out as f64 * 1.01 + 10_000.0,
        "dc1 took in {dc1_in} bytes, dc2 sent {dc2_out}: more than crossed"
    );

    // Down: nothing left.
    fleet.run(&["down"]);
    assert!(
        wait_gone(pid, Duration::from_secs(5)),
        "forwarder {pid} still runs after down"
    );
    assert_eq!(
        fleet.namespaces(),
        Vec::<String>::new(),
        "namespaces left after down"
    );
    for f in ["fleet.env", "wan-delay.pid", "wan-delay.log"] {
        let p = format!("/run/{}{f}", fleet.prefix);
        assert!(!Path::new(&p).exists(), "{p} left after down");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn forwarder_ends_by_itself() {
    let test = "forwarder_ends_by_itself";
    if !dcs_possible(test) {
        return;
    }
    let fleet = Fleet::new("rsdx");
    let bad = capture(
        fleet.cmd(&["up", "--hosts", "2", "--racks", "2", "--dcs", "3"]),
        Duration::from_secs(30),
    )
    .expect_err("3 dcs over 2 racks is refused");
    assert!(bad.contains("--dcs must be 1..min(racks"), "{bad}");
    assert!(
        fleet.namespaces().is_empty(),
        "a refused up built {:?}",
        fleet.namespaces()
    );
    let bad = capture(
        fleet.cmd(&[
            "up",
            "--hosts",
            "2",
            "--racks",
            "2",
            "--dcs",
            "2",
            "--wan-delay",
            "soon",
        ]),
        Duration::from_secs(30),
    )
    .expect_err("a delay that is no duration is refused");
    assert!(bad.contains("duration must be like 20ms"), "{bad}");

    fleet.run(&[
        "up",
        "--hosts",
        "2",
        "--racks",
        "2",
        "--dcs",
        "2",
        "--wan-max-seconds",
        "2",
    ]);
    let pid = fleet.forwarder_pid();
    assert!(
        wait_gone(pid, Duration::from_secs(8)),
        "the forwarder {pid} outlived --wan-max-seconds 2"
    );
    let stats = format!("/run/{}wan-delay.stats", fleet.prefix);
    let line = std::fs::read_to_string(&stats).unwrap_or_else(|e| panic!("{stats}: {e}"));
    assert!(line.starts_with("wan-delay: exit after"), "{line}");
    fleet.run(&["down"]);
    assert!(!Path::new(&stats).exists(), "{stats} left after down");
}
