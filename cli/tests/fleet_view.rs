//! Seeing the fleet (issue 13): the tracker's per-peer JSON, the origin's `/fleet.json` and
//! page (rendered by a real headless Chromium), `ringswarm fleet`, `feed show` and `info`.
//! Real processes on loopback; every wait bounded.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::release::{http_get, keygen, origin_command, publish_into, Agent, TIMEOUT};
use support::{dump_logs, on_path, pattern, require, ringswarm, scratch, Guard};

fn rs(args: &[&str]) -> Output {
    Command::new(ringswarm()).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err_text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A tracker (with its HTTP port), an origin asking it, agents placed in racks.
struct ViewFleet {
    dir: tempfile::TempDir,
    tracker_url: String,
    tracker_http: String,
    origin_http: String,
    feed_url: String,
    guards: Vec<Guard>,
}

impl ViewFleet {
    fn start(tag: &str) -> ViewFleet {
        let dir = scratch(tag);
        let base = dir.path().to_path_buf();
        keygen(&base, "fleet");
        let mut tracker = Command::new(ringswarm());
        tracker.args(["tracker", "--listen", "127.0.0.1:0", "--interval", "2"]);
        // Every peer announces from 127.0.0.1 and names its place in URL data.
        tracker.args(["--cores", "1", "--metrics", "127.0.0.1:0"]);
        tracker.args(["--max-url-names-per-address", "32"]);
        let mut tracker = Guard::spawn("tracker", tracker, &base);
        let metrics = tracker.wait_line("metrics at http://", TIMEOUT, &[]);
        let tracker_http = format!("http://{}", metrics.trim_end_matches("/metrics"));
        let tracker_url = format!(
            "udp://{}",
            tracker.wait_line("tracker listening on udp://", TIMEOUT, &[])
        );
        let mut origin = origin_command(&base);
        origin.args([
            "--tracker-http",
            &tracker_http,
            "--dc",
            "build",
            "--rack",
            "b1",
        ]);
        origin.args(["--tracker", &tracker_url]);
        let mut origin = Guard::spawn("origin", origin, &base);
        let feed_url = origin.wait_line("serving the feed at ", TIMEOUT, &[&tracker]);
        origin.wait_listening(TIMEOUT, &[&tracker]);
        let origin_http = feed_url.trim_end_matches("/feed.json").to_owned();
        ViewFleet {
            dir,
            tracker_url,
            tracker_http,
            origin_http,
            feed_url,
            guards: vec![tracker, origin],
        }
    }

    fn base(&self) -> &Path {
        self.dir.path()
    }

    fn publish(&self, name: &str, version: &str, seed: u64) {
        let src = self.base().join("build").join(version);
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("blob.bin"), pattern(1 << 20, seed)).unwrap();
        publish_into(
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
            &[],
        );
    }

    fn agent(&self, host: &str, dc: &str, rack: &str) -> Agent {
        self.agent_with(host, dc, rack, &[])
    }

    fn agent_with(&self, host: &str, dc: &str, rack: &str, extra: &[&str]) -> Agent {
        let dir = self.base().join(host);
        let mut cmd = Command::new(ringswarm());
        cmd.args(["-v", "agent", "--feed", &self.feed_url, "--poll", "200ms"])
            .args([
                "--listen",
                "127.0.0.1:0",
                "--cores",
                "1",
                "--dc",
                dc,
                "--rack",
                rack,
            ])
            .arg("--pubkey")
            .arg(self.base().join("fleet.pub"))
            .arg("--dir")
            .arg(&dir)
            .args(extra);
        let mut guard = Guard::spawn(host, cmd, self.base());
        guard.wait_line("status socket ", TIMEOUT, &self.others());
        Agent { dir, guard }
    }

    fn others(&self) -> Vec<&Guard> {
        self.guards.iter().collect()
    }

    fn fleet_json(&self) -> Value {
        let addr = self.origin_http.trim_start_matches("http://");
        serde_json::from_str(&http_get(addr, "/fleet.json")).unwrap_or(Value::Null)
    }

    /// Waits until the view satisfies `cond`; fails with the logs and the view otherwise.
    fn wait_view(&self, what: &str, agents: &[&Agent], cond: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let v = self.fleet_json();
            if cond(&v) {
                return v;
            }
            if start.elapsed() > TIMEOUT {
                let mut all = self.others();
                all.extend(agents.iter().map(|a| &a.guard));
                dump_logs(&all);
                panic!("fleet view: not {what} within {TIMEOUT:?}: {v:#}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn release<'a>(view: &'a Value, version: &str) -> Option<&'a Value> {
    view["releases"]
        .as_array()?
        .iter()
        .find(|r| r["version"] == version)
}

fn counts(r: &Value) -> (u64, u64, u64) {
    let n = |k: &str| r[k].as_u64().unwrap_or(u64::MAX);
    (n("done"), n("downloading"), n("missing"))
}

/// (done, downloading, missing) of one dc/rack of a release.
fn place(r: &Value, dc: &str, rack: &str) -> Option<(u64, u64, u64)> {
    r["places"]
        .as_array()?
        .iter()
        .find(|p| p["dc"] == dc && p["rack"] == rack)
        .map(counts)
}

/// The cells of the dc/rack row of a rendered release section.
fn row_cells(section: &str, dc: &str, rack: &str) -> Vec<String> {
    let row = section
        .split("<tr")
        .find(|r| {
            r.contains(&format!("data-dc=\"{dc}\"")) && r.contains(&format!("data-rack=\"{rack}\""))
        })
        .unwrap_or_else(|| panic!("no {dc}/{rack} row: {section}"));
    row.split("<td")
        .skip(1)
        .filter_map(|c| {
            c.split_once('>')
                .and_then(|(_, rest)| rest.split('<').next())
        })
        .map(str::to_owned)
        .collect()
}

/// Runs headless Chromium on `url` and returns the DOM after the page's scripts ran.
fn chromium_dom(url: &str, logdir: &Path) -> String {
    let profile = logdir.join("chromium-profile");
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--virtual-time-budget=10000",
        "--dump-dom",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(url)
    .env("HOME", logdir);
    let mut browser = Guard::spawn("chromium", cmd, logdir);
    match browser.wait_exit(TIMEOUT) {
        Some(st) if st.success() => {}
        other => browser.fail(&[], &format!("chromium did not render the page: {other:?}")),
    }
    browser.stdout()
}

#[test]
fn the_fleet_view_shows_done_downloading_and_missing_hosts_per_rack_in_json_terminal_and_browser() {
    let fleet = ViewFleet::start("fleet-view");
    fleet.publish("app", "1.0", 1);
    let a = fleet.agent("host-a", "dc1", "r1");
    let b = fleet.agent("host-b", "dc1", "r2");
    let c = fleet.agent("host-c", "dc2", "r3");
    // Every host and the origin on 1.0: four done hosts.
    fleet.wait_view("4 hosts done on 1.0", &[&a, &b, &c], |v| {
        release(v, "1.0").is_some_and(|r| counts(r) == (4, 0, 0))
    });
    let c_addr = {
        let v = fleet.fleet_json();
        let r = release(&v, "1.0").unwrap();
        let host = r["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["dc"] == "dc2")
            .unwrap_or_else(|| panic!("no dc2 host in {r:#}"));
        host["addr"].as_str().unwrap().to_owned()
    };
    // Host c goes away (its agent says `stopped`); 1.1 is published; a and b take it.
    drop(c);
    fleet.publish("app", "1.1", 2);
    let v = fleet.wait_view("1.1 done on a and b, c missing", &[&a, &b], |v| {
        release(v, "1.1").is_some_and(|r| counts(r) == (3, 0, 1))
            && release(v, "1.0").is_some_and(|r| counts(r) == (3, 0, 0))
    });
    let new = release(&v, "1.1").unwrap();
    assert_eq!(new["name"], "app");
    assert_eq!(new["newest"], true);
    assert_eq!(place(new, "dc1", "r1"), Some((1, 0, 0)), "{new:#}");
    assert_eq!(place(new, "dc1", "r2"), Some((1, 0, 0)), "{new:#}");
    assert_eq!(place(new, "dc2", "r3"), Some((0, 0, 1)), "{new:#}");
    assert_eq!(place(new, "build", "b1"), Some((1, 0, 0)), "{new:#}");
    let missing: Vec<&Value> = new["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["state"] == "missing")
        .collect();
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0]["addr"], c_addr.as_str());
    // 1.0 is still shown: a and b still seed it (the old release while hosts run it). Only
    // the newest release has missing hosts: c is missing from 1.1, not from 1.0 as well.
    let old = release(&v, "1.0").unwrap();
    assert_eq!(old["newest"], false);
    assert!(
        place(old, "dc2", "r3").is_none_or(|p| p == (0, 0, 0)),
        "{old:#}"
    );

    // The tracker's own JSON: places and peers with what is left.
    let tracker_addr = fleet.tracker_http.trim_start_matches("http://");
    let swarms: Value = serde_json::from_str(&http_get(tracker_addr, "/swarms.json")).unwrap();
    assert_eq!(
        swarms["torrents"].as_array().map(Vec::len),
        Some(2),
        "{swarms:#}"
    );
    let hash = new["info_hash"].as_str().unwrap();
    let swarm: Value =
        serde_json::from_str(&http_get(tracker_addr, &format!("/swarm/{hash}.json"))).unwrap();
    assert_eq!(swarm["seeders"], 3, "{swarm:#}");
    assert!(swarm["peers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["left"] == 0 && p["dc"].is_string()));
    assert!(http_get(tracker_addr, "/swarm/nothex.json").contains("hex"));

    // Host d joins in rack r4, slowly (1 MiB at 32 KiB/s): downloading for half a minute,
    // long enough to see it so in the terminal and the browser.
    let d = fleet.agent_with("host-d", "dc2", "r4", &["--max-download-rate", "32K"]);
    let v = fleet.wait_view("d downloading 1.1", &[&a, &b, &d], |v| {
        release(v, "1.1").is_some_and(|r| counts(r) == (3, 1, 1))
    });
    let new = release(&v, "1.1").unwrap().clone();
    assert_eq!(place(&new, "dc2", "r4"), Some((0, 1, 0)), "{new:#}");
    let slow = &new["slowest"][0];
    assert_eq!(
        (slow["dc"].as_str(), slow["rack"].as_str()),
        (Some("dc2"), Some("r4"))
    );
    assert_eq!(slow["state"], "downloading");
    let d_addr = slow["addr"].as_str().unwrap().to_owned();

    // The terminal: the same counts, per rack.
    let out = rs(&["fleet", "--origin", &fleet.origin_http]);
    assert!(out.status.success(), "{}", err_text(&out));
    let table = text(&out);
    assert!(table.contains("app 1.1"), "{table}");
    assert!(
        table.contains("3 done, 1 downloading, 1 missing"),
        "{table}"
    );
    assert!(table.contains(&format!("missing: {c_addr}")), "{table}");
    let r3 = table
        .lines()
        .find(|l| l.contains("dc2") && l.contains("r3"))
        .unwrap_or_else(|| panic!("no dc2/r3 row: {table}"));
    assert_eq!(
        r3.split_whitespace().collect::<Vec<_>>(),
        ["dc2", "r3", "0", "0", "1"]
    );
    let out = rs(&["--json", "fleet", "--origin", &fleet.origin_http]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(release(&json, "1.1").map(counts), Some((3, 1, 1)));

    // The page, as a real browser renders it.
    if !require(on_path("chromium"), "fleet view page", "chromium") {
        return;
    }
    let dom = chromium_dom(&format!("{}/", fleet.origin_http), fleet.base());
    let section = |version: &str| {
        let start = dom
            .find(&format!("data-version=\"{version}\""))
            .unwrap_or_else(|| panic!("no section of {version} in the page: {dom}"));
        let end = dom[start..]
            .find("</section>")
            .map_or(dom.len(), |e| start + e);
        dom[start..end].to_owned()
    };
    let s11 = section("1.1");
    assert!(dom.contains("data-name=\"app\""), "{dom}");
    assert!(
        s11.contains("data-done=\"3\"") && s11.contains("data-missing=\"1\""),
        "{s11}"
    );
    assert!(s11.contains("data-downloading=\"1\""), "{s11}");
    assert!(
        s11.contains("3 done") && s11.contains("1 downloading") && s11.contains("1 missing"),
        "{s11}"
    );
    assert!(s11.contains("slowest hosts"), "{s11}");
    // The rows of r3 (c missing) and r4 (d downloading).
    assert_eq!(row_cells(&s11, "dc2", "r3"), ["dc2", "r3", "0", "0", "1"]);
    assert_eq!(row_cells(&s11, "dc2", "r4"), ["dc2", "r4", "0", "1", "0"]);
    assert!(
        s11.contains(&format!(
            "class=\"host downloading\" data-addr=\"{d_addr}\""
        )),
        "{s11}"
    );
    // Every host is listed, with its state.
    for h in new["hosts"].as_array().unwrap() {
        let addr = h["addr"].as_str().unwrap();
        assert!(
            s11.contains(&format!("data-addr=\"{addr}\"")),
            "{addr} not in {s11}"
        );
    }
    assert!(s11.contains(&format!("data-addr=\"{c_addr}\"")));
    assert!(section("1.0").contains("(previous)"));
}

#[test]
fn fleet_names_a_bad_origin_in_one_line() {
    let out = rs(&["fleet", "--origin", "ftp://x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err_text(&out).contains("expected an http:// URL"),
        "{}",
        err_text(&out)
    );
    // A closed port: refused, at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = rs(&["fleet", "--origin", &format!("http://127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(1));
    let e = err_text(&out);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("fleet.json"), "{e}");
}

#[test]
fn feed_show_lists_the_releases_and_says_whether_the_signature_was_checked() {
    let dir = scratch("feed-show");
    let base = dir.path();
    keygen(base, "fleet");
    keygen(base, "other");
    let blob = base.join("blob.bin");
    std::fs::write(&blob, pattern(300_000, 9)).unwrap();
    let origin = base.join("origin");
    publish_into(
        base,
        &blob,
        &origin,
        &["--name", "index", "--version", "v7"],
        &[],
    );
    let feed = origin.join("feed.json");
    let feed = feed.to_str().unwrap();

    let out = rs(&["feed", "show", feed]);
    assert!(out.status.success(), "{}", err_text(&out));
    let t = text(&out);
    assert!(t.contains("signature: unchecked"), "{t}");
    assert!(t.contains("(fresh)"), "{t}");
    let row = t.lines().find(|l| l.contains("index")).unwrap();
    assert!(row.contains("v7") && row.contains("292.97 KiB"), "{row}");

    let pubkey = base.join("fleet.pub");
    let out = rs(&["feed", "show", feed, "--pubkey", pubkey.to_str().unwrap()]);
    assert!(text(&out).contains("signature: good"), "{}", err_text(&out));

    let out = rs(&["--json", "feed", "show", feed]);
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["signature"], "unchecked");
    assert_eq!(j["releases"][0]["name"], "index");
    assert_eq!(j["releases"][0]["size"], 300_000);
    assert_eq!(
        j["releases"][0]["info_hash"].as_str().map(str::len),
        Some(40)
    );

    // The wrong key: an error, one line, non-zero.
    let other = base.join("other.pub");
    let out = rs(&["feed", "show", feed, "--pubkey", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let e = err_text(&out);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("signature"), "{e}");
    // Not a feed.
    let out = rs(&["feed", "show", blob.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(err_text(&out).contains("blob.bin"), "{}", err_text(&out));
}

#[test]
fn info_describes_a_torrent_and_a_magnet() {
    let dir = scratch("info");
    let base = dir.path();
    let data = base.join("set");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    for i in 0..25 {
        std::fs::write(
            data.join("sub").join(format!("f{i:02}")),
            pattern(1000 + i, i as u64),
        )
        .unwrap();
    }
    let torrent = base.join("set.torrent");
    let out = Command::new(ringswarm())
        .arg("create")
        .arg(&data)
        .args([
            "--piece-size",
            "16K",
            "--tracker",
            "udp://127.0.0.1:6969",
            "-o",
        ])
        .arg(&torrent)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", err_text(&out));
    let t = torrent.to_str().unwrap();

    let out = rs(&["info", t]);
    assert!(out.status.success(), "{}", err_text(&out));
    let s = text(&out);
    assert!(s.contains("name:        set"), "{s}");
    assert!(s.contains("udp://127.0.0.1:6969"), "{s}");
    assert!(s.contains("private:     no"), "{s}");
    assert!(s.contains("created by:  ringswarm"), "{s}");
    assert!(s.contains("files:       25"), "{s}");
    assert!(s.contains("5 more (--all lists them)"), "{s}");
    assert!(!s.contains("f24"), "{s}");
    let all = text(&rs(&["info", t, "--all"]));
    assert!(all.contains("sub/f24"), "{all}");

    let j: Value = serde_json::from_slice(&rs(&["--json", "info", t]).stdout).unwrap();
    let total: u64 = (0..25).map(|i| 1000 + i).sum();
    assert_eq!(j["files"].as_array().map(Vec::len), Some(25));
    assert_eq!(
        j["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["size"].as_u64().unwrap())
            .sum::<u64>(),
        total
    );
    assert_eq!(j["piece_size"], 16384);
    let hash = j["info_hash"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 40);

    let magnet = format!("magnet:?xt=urn:btih:{hash}&dn=set&tr=udp%3A%2F%2F127.0.0.1%3A6969");
    let out = rs(&["info", &magnet]);
    assert!(out.status.success(), "{}", err_text(&out));
    let s = text(&out);
    assert!(s.contains(&hash) && s.contains("name:        set"), "{s}");
    assert!(s.contains("udp://127.0.0.1:6969"), "{s}");
    let j: Value = serde_json::from_slice(&rs(&["--json", "info", &magnet]).stdout).unwrap();
    assert_eq!(j["kind"], "magnet");
    assert_eq!(j["info_hash"], hash.as_str());

    for bad in [
        "magnet:?dn=x",
        base.join("missing.torrent").to_str().unwrap(),
    ] {
        let out = rs(&["info", bad]);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert_eq!(err_text(&out).lines().count(), 1, "{}", err_text(&out));
    }
}

/// One BEP 15 announce from a fresh socket on 127.0.0.1: (interval, the answer).
fn announce_once(tracker: std::net::SocketAddr, peer: u8, left: u64, dc: &str, rack: &str) -> u32 {
    use ringswarm_engine::tracker::proto::{AnnounceRequest, Event, Family, Request, Response};
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let exchange = |req: &Request| -> Response {
        let mut out = Vec::new();
        req.encode_into(&mut out).unwrap();
        for _ in 0..10 {
            sock.send_to(&out, tracker).unwrap();
            let mut buf = [0u8; 2048];
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                return Response::decode(&buf[..n], Family::V4).unwrap();
            }
        }
        panic!("the tracker did not answer {req:?}");
    };
    let Response::Connect { connection_id, .. } = exchange(&Request::Connect { transaction_id: 1 })
    else {
        panic!("no connect answer");
    };
    let req = Request::Announce(AnnounceRequest {
        connection_id,
        transaction_id: 2,
        info_hash: [0x42; 20],
        peer_id: [peer; 20],
        downloaded: 1,
        left,
        uploaded: 0,
        event: Event::Started,
        ip: 0,
        key: 0,
        num_want: 10,
        port: 7000 + u16::from(peer),
        url_data: Some(format!("/announce?dc={dc}&rack={rack}").into_bytes()),
    });
    match exchange(&req) {
        Response::Announce { interval, .. } => interval,
        other => panic!("announce answered with {other:?}"),
    }
}

#[test]
fn the_tracker_asks_downloading_peers_back_sooner_and_serves_their_progress() {
    let dir = scratch("tracker-view");
    let mut cmd = Command::new(ringswarm());
    cmd.args(["tracker", "--listen", "127.0.0.1:0", "--interval", "600"])
        .args([
            "--leecher-interval",
            "20",
            "--cores",
            "1",
            "--metrics",
            "127.0.0.1:0",
        ])
        .args(["--max-url-names-per-address", "16"]);
    let mut tracker = Guard::spawn("tracker", cmd, dir.path());
    let http = tracker
        .wait_line("metrics at http://", TIMEOUT, &[])
        .trim_end_matches("/metrics")
        .to_owned();
    let udp: std::net::SocketAddr = tracker
        .wait_line("tracker listening on udp://", TIMEOUT, &[])
        .parse()
        .unwrap();
    assert_eq!(announce_once(udp, 1, 5 << 20, "east", "e1"), 20);
    assert_eq!(announce_once(udp, 2, 0, "east", "e2"), 600);
    assert_eq!(announce_once(udp, 3, 1, "west", "w1"), 20);

    let hash = "42".repeat(20);
    let swarm: Value =
        serde_json::from_str(&http_get(&http, &format!("/swarm/{hash}.json"))).unwrap();
    assert_eq!(
        (swarm["seeders"].as_u64(), swarm["leechers"].as_u64()),
        (Some(1), Some(2))
    );
    let places: Vec<(String, u64, u64)> = swarm["places"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                format!(
                    "{}/{}",
                    p["dc"].as_str().unwrap(),
                    p["rack"].as_str().unwrap()
                ),
                p["seeders"].as_u64().unwrap(),
                p["leechers"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        places,
        [
            ("east/e1".into(), 0, 1),
            ("east/e2".into(), 1, 0),
            ("west/w1".into(), 0, 1)
        ]
    );
    // The slowest first: the most left (rounded up to 16 KiB, so 1 byte is not done).
    let peers: Vec<(u64, &str)> = swarm["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["left"].as_u64().unwrap(), p["rack"].as_str().unwrap()))
        .collect();
    assert_eq!(peers, [(5 << 20, "e1"), (16384, "w1"), (0, "e2")]);
    assert_eq!(swarm["peers_truncated"], false);

    let all: Value = serde_json::from_str(&http_get(&http, "/swarms.json")).unwrap();
    assert_eq!(all["torrents_total"], 1);
    assert_eq!(all["torrents"][0]["info_hash"], hash.as_str());
    assert!(http_get(&http, &format!("/swarm/{}.json", "00".repeat(20))).contains("not tracked"));
}

#[test]
fn an_origin_without_a_tracker_says_so_and_watch_redraws() {
    let dir = scratch("fleet-no-tracker");
    let base = dir.path();
    keygen(base, "fleet");
    let blob = base.join("blob.bin");
    std::fs::write(&blob, pattern(100_000, 3)).unwrap();
    publish_into(
        base,
        &blob,
        &base.join("origin"),
        &["--name", "db", "--version", "9"],
        &[],
    );
    let mut origin = Guard::spawn("origin", origin_command(base), base);
    let feed = origin.wait_line("serving the feed at ", TIMEOUT, &[]);
    let url = feed.trim_end_matches("/feed.json").to_owned();
    let start = Instant::now();
    let table = loop {
        // The view lists the releases the origin seeds, a moment after it starts.
        let out = rs(&["fleet", "--origin", &url]);
        if out.status.success() && text(&out).contains("db 9") {
            break text(&out);
        }
        assert!(start.elapsed() < TIMEOUT, "{}", err_text(&out));
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        table.contains("tracker: no tracker_http configured"),
        "{table}"
    );
    assert!(table.contains("db 9"), "{table}");
    assert!(
        table.contains("0 done, 0 downloading, 0 missing"),
        "{table}"
    );

    let mut cmd = Command::new(ringswarm());
    cmd.args(["fleet", "--watch", "--origin", &url]);
    let mut watch = Guard::spawn("watch", cmd, base);
    watch.wait_line("\x1b[2J\x1b[Htracker: no tracker_http", TIMEOUT, &[&origin]);
    watch.wait_line("\x1b[2J\x1b[Htracker: no tracker_http", TIMEOUT, &[&origin]);
}
