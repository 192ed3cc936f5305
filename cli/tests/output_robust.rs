//! The read-only commands (`info`, `feed show`, `fleet`, `status`) on hostile or odd input
//! and odd outputs: times past year 9999, an origin sending terminal escapes and non-ASCII
//! hashes, a reader closing stdout early, https URLs, `/dev/zero` as a torrent, `-q` and
//! `--json` shapes. Loopback only; every wait bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::{ringswarm, scratch};

const TIMEOUT: Duration = Duration::from_secs(30);

fn rs(args: &[&str]) -> Output {
    Command::new(ringswarm()).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The one JSON line of a `--json` run (asserting there is exactly one).
fn one_json_line(o: &Output) -> Value {
    let text = stdout(o);
    assert_eq!(text.lines().count(), 1, "not one line: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Bencode, just enough for a hand-made torrent (keys given in sorted order).
enum B {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<B>),
    Dict(Vec<(&'static str, B)>),
}

fn bencode(v: &B, out: &mut Vec<u8>) {
    match v {
        B::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
        B::Bytes(b) => {
            out.extend_from_slice(format!("{}:", b.len()).as_bytes());
            out.extend_from_slice(b);
        }
        B::List(items) => {
            out.push(b'l');
            items.iter().for_each(|i| bencode(i, out));
            out.push(b'e');
        }
        B::Dict(entries) => {
            out.push(b'd');
            for (k, v) in entries {
                bencode(&B::Bytes(k.as_bytes().to_vec()), out);
                bencode(v, out);
            }
            out.push(b'e');
        }
    }
}

fn s(text: &str) -> B {
    B::Bytes(text.as_bytes().to_vec())
}

/// A torrent of `files` one-byte files, each under a long directory name (so `info --all`
/// prints far more than a pipe holds), with the given top-level `created by` and
/// `creation date`.
fn torrent(files: usize, created_by: &str, creation_date: i64) -> Vec<u8> {
    let long = "d".repeat(120);
    let list = (0..files)
        .map(|i| {
            B::Dict(vec![
                ("length", B::Int(1)),
                ("path", B::List(vec![s(&long), s(&format!("f{i:05}"))])),
            ])
        })
        .collect();
    let piece_length = 16384;
    let pieces = (files as u64).div_ceil(piece_length as u64) as usize;
    let info = B::Dict(vec![
        ("files", B::List(list)),
        ("name", s("set")),
        ("piece length", B::Int(piece_length)),
        ("pieces", B::Bytes(vec![7; 20 * pieces])),
    ]);
    let mut out = Vec::new();
    bencode(
        &B::Dict(vec![
            ("created by", s(created_by)),
            ("creation date", B::Int(creation_date)),
            ("info", info),
        ]),
        &mut out,
    );
    out
}

#[test]
fn info_shows_a_creation_date_past_year_9999_as_a_number() {
    let dir = scratch("info-far-date");
    let t = dir.path().join("far.torrent");
    std::fs::write(&t, torrent(3, "maker\x1b[31m\u{202e}x", 1_000_000_000_000)).unwrap();
    let t = t.to_str().unwrap();

    let out = rs(&["info", t]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("created:     1000000000000 s since 1970"),
        "{text}"
    );
    // The creator string is the file's: no escape reaches the terminal.
    assert!(text.contains("created by:  maker?[31m?x"), "{text}");
    assert!(
        !text.contains('\x1b') && !text.contains('\u{202e}'),
        "{text}"
    );

    let j = one_json_line(&rs(&["--json", "info", t]));
    assert_eq!(j["event"], "summary", "{j}");
    assert_eq!(j["command"], "info", "{j}");
    assert_eq!(j["ok"], true, "{j}");
    assert_eq!(j["creation_date"], 1_000_000_000_000i64, "{j}");
    assert_eq!(j["files"].as_array().map(Vec::len), Some(3), "{j}");
}

#[test]
fn feed_show_prints_times_past_year_9999_as_numbers() {
    use ringswarm_engine::feed::{Feed, Release, SigningKey};
    let dir = scratch("feed-far-times");
    let release = Release::new("index", "v1", torrent(2, "x", 0), u64::MAX).unwrap();
    let feed = Feed {
        sequence: 9,
        signed_ms: 100_000_000_000_000_000,
        expires_ms: Some(u64::MAX),
        releases: vec![release],
        topology: None,
    };
    let path = dir.path().join("feed.json");
    std::fs::write(&path, feed.sign(&SigningKey::from_bytes(&[5; 32]))).unwrap();
    let path = path.to_str().unwrap();

    let out = rs(&["feed", "show", path]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("signed: 100000000000000000 ms since 1970"),
        "{text}"
    );
    assert!(
        text.contains(&format!("expires: {} ms since 1970", u64::MAX)),
        "{text}"
    );
    let row = text.lines().find(|l| l.contains("index")).unwrap();
    assert!(row.contains(&u64::MAX.to_string()), "{row}");

    let j = one_json_line(&rs(&["--json", "feed", "show", path]));
    assert_eq!(
        (&j["event"], &j["command"], &j["ok"]),
        (&"summary".into(), &"feed".into(), &true.into()),
        "{j}"
    );
    assert_eq!(j["signed_ms"], 100_000_000_000_000_000u64, "{j}");
}

/// An "origin" on 127.0.0.1 answering every GET with `body` as JSON, for `requests`
/// requests or until `TIMEOUT`.
fn crafted_origin(body: String, requests: usize) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let start = Instant::now();
        let mut served = 0;
        while served < requests && start.elapsed() < TIMEOUT {
            let Ok((mut conn, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            conn.set_nonblocking(false).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(body.as_bytes());
            served += 1;
        }
    });
    (url, server)
}

#[test]
fn fleet_shows_a_hostile_origin_without_escapes_or_panics() {
    let host = |addr: &str, state: &str| {
        serde_json::json!({
            "addr": addr, "dc": "dc\u{1b}[2J", "rack": "r\u{202e}1", "state": state,
            "progress": 0.5, "rate": 1, "left": 1,
        })
    };
    let view = serde_json::json!({
        "generated_ms": 1,
        "tracker": "http://t",
        "error": "tracker\u{1b}]0;owned\u{7}",
        "throughput": 0,
        "releases": [{
            "name": "app\u{1b}[31m",
            "version": "1\u{200f}.0",
            // Non-ASCII: byte 12 falls inside a character.
            "info_hash": "ééééééééééééééé",
            "size": 1,
            "published_ms": 1,
            "newest": true,
            "done": 0, "downloading": 1, "missing": 1,
            "rate": 0,
            "places": [{"dc": "dc\u{1b}[2J", "rack": "r\u{202e}1", "done": 0, "downloading": 1, "missing": 1}],
            "slowest": [host("\u{1b}[1A10.0.0.1:1", "downloading")],
            "hosts": [host("\u{1b}[1A10.0.0.1:1", "downloading"), host("10.0.0.2:1\r", "missing")],
            "hosts_truncated": false,
            "peers_truncated": false,
            "from_a_newer_origin": {"kept": true},
        }],
    });
    // Pretty-printed, as an origin might send it: --json must still be one line.
    let (url, server) = crafted_origin(serde_json::to_string_pretty(&view).unwrap(), 3);

    let out = rs(&["fleet", "--origin", &url, "--timeout", "5s"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for bad in ['\x1b', '\x07', '\r', '\u{202e}', '\u{200f}'] {
        assert!(
            !text.contains(bad),
            "{bad:?} reached the terminal: {text:?}"
        );
    }
    assert!(text.contains("app?[31m 1?.0"), "{text}");
    assert!(text.contains("éééééééééééé…"), "{text}");
    assert!(text.contains("tracker: tracker?]0;owned?"), "{text}");
    assert!(text.contains("missing: 10.0.0.2:1?"), "{text}");

    let j = one_json_line(&rs(&[
        "--json",
        "fleet",
        "--origin",
        &url,
        "--timeout",
        "5",
    ]));
    assert_eq!(
        (&j["event"], &j["command"], &j["ok"]),
        (&"summary".into(), &"fleet".into(), &true.into()),
        "{j}"
    );
    // The origin's JSON, every field kept (its escapes are JSON's own).
    assert_eq!(j["releases"][0]["name"], "app\u{1b}[31m", "{j}");
    assert_eq!(j["releases"][0]["from_a_newer_origin"]["kept"], true, "{j}");

    // --timeout is a duration like get's; a bad one is a usage error.
    let out = rs(&["fleet", "--origin", &url, "--timeout", "soon"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a duration"), "{}", stderr(&out));
    let out = rs(&["fleet", "--origin", &url, "--timeout", "2s"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    server.join().unwrap();

    // --watch | head -1: one view event, then the next redraw finds the pipe closed and
    // the watch ends quietly instead of polling forever.
    let (url, server) = crafted_origin(serde_json::to_string_pretty(&view).unwrap(), 2);
    let (code, err, first) =
        with_stdout_closed_after_one_line(&["--json", "fleet", "--watch", "--origin", &url]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
    let j: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(j["event"], "view", "{j}");
    assert_eq!(j["releases"][0]["version"], "1\u{200f}.0", "{j}");
    server.join().unwrap();
}

#[test]
fn https_urls_are_refused_up_front_in_one_line() {
    for args in [
        &["fleet", "--origin", "https://127.0.0.1:1"][..],
        &["feed", "show", "HTTPS://127.0.0.1:1/feed.json"][..],
    ] {
        let out = rs(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let e = stderr(&out);
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(
            e.contains("https is not supported")
                && e.contains("its signature is what agents trust"),
            "{e}"
        );
    }
}

/// Runs `args` with stdout a pipe that is closed after the first line; the exit status,
/// stderr and that line.
fn with_stdout_closed_after_one_line(args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = Command::new(ringswarm())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty(), "no output at all");
    // The reader is dropped: the pipe is closed with most of the output unread.
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            panic!("{args:?} still runs {TIMEOUT:?} after its reader left");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), err, first)
}

#[test]
fn a_reader_closing_stdout_early_ends_info_quietly() {
    let dir = scratch("info-pipe");
    let t = dir.path().join("many.torrent");
    // 2000 lines of about 140 bytes: several times what a pipe buffers.
    std::fs::write(&t, torrent(2000, "x", 1)).unwrap();
    let t = t.to_str().unwrap();
    for args in [&["info", t, "--all"][..], &["--json", "info", t][..]] {
        let (code, err, _) = with_stdout_closed_after_one_line(args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?} said something: {err}");
    }
}

#[test]
fn info_refuses_an_endless_file_and_knows_magnets_as_get_does() {
    if Path::new("/dev/zero").exists() {
        let start = Instant::now();
        let out = rs(&["info", "/dev/zero"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let e = stderr(&out);
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.contains("too large for a .torrent file"), "{e}");
        assert!(start.elapsed() < TIMEOUT);
    }
    // A name that only looks like a magnet is a file (get's rule): a missing file.
    let out = rs(&["info", "magnet.torrent"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("reading torrent `magnet.torrent`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn status_without_an_agent_is_quiet_under_q_and_one_summary_under_json() {
    let dir = scratch("status-quiet");
    std::fs::create_dir_all(dir.path().join("releases")).unwrap();
    let d = dir.path().to_str().unwrap();

    let out = rs(&["-q", "status", "--dir", d]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let e = stderr(&out);
    assert_eq!(e.lines().count(), 1, "-q: the error only: {e}");
    assert!(
        e.starts_with("ringswarm: error: the agent is not running"),
        "{e}"
    );
    assert!(stdout(&out).contains("no releases"), "{}", stdout(&out));

    let out = rs(&["status", "--dir", d]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("warning: the agent is not running"),
        "{}",
        stderr(&out)
    );

    let out = rs(&["--json", "status", "--dir", d]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let j = one_json_line(&out);
    assert_eq!(j["event"], "summary", "{j}");
    assert_eq!(j["command"], "status", "{j}");
    assert_eq!(j["ok"], false, "{j}");
    assert_eq!(j["exit_code"], 3, "{j}");
    assert_eq!(j["agent_running"], false, "{j}");
    assert!(j["error"].as_str().unwrap().contains("not running"), "{j}");
}
