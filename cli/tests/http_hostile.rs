//! The HTTP servers under slow and hostile clients (issue 11 item 3), against real
//! processes on loopback: a `ringswarm origin` serving an 18 MB feed keeps answering other
//! clients quickly, with bounded memory, while hundreds of connections send half a request,
//! one sends an endless header line and four ask for the feed and never read it; connections
//! past the cap are refused at once; metrics bind to localhost unless told otherwise.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

mod support;
use support::release::{keygen, origin_command, TIMEOUT};
use support::{pattern, ringswarm, run, scratch, Guard};

/// The feed's size in the hostile test: the "18 MB feed".
const BIG_FEED: usize = 18_000_000;

/// An origin serving DIR/origin, with a signing key in DIR.
fn start_origin(dir: &Path, extra: &[&str]) -> (Guard, SocketAddr) {
    keygen(dir, "fleet");
    let mut cmd = origin_command(dir);
    cmd.args(extra);
    let mut origin = Guard::spawn("origin", cmd, dir);
    let url = origin.wait_line("serving the feed at http://", TIMEOUT, &[]);
    let addr = url
        .trim_end_matches("/feed.json")
        .parse()
        .unwrap_or_else(|e| panic!("origin address in {url:?}: {e}"));
    (origin, addr)
}

/// Publishes a small release, then pads the feed file with trailing blanks (still a valid
/// feed: JSON allows them) to `len` bytes, and waits until the origin serves it.
fn publish_big_feed(dir: &Path, addr: SocketAddr, origin: &Guard, len: usize) {
    let src = dir.join("build");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("blob.bin"), pattern(64 << 10, 7)).unwrap();
    let mut cmd = Command::new(ringswarm());
    cmd.arg("publish")
        .arg(src.join("blob.bin"))
        .args(["--name", "big", "--version", "v1", "--piece-size", "16K"])
        .arg("--key")
        .arg(dir.join("fleet.key"))
        .arg("--origin-dir")
        .arg(dir.join("origin"));
    run("publish", cmd, TIMEOUT, dir);
    let feed = dir.join("origin").join("feed.json");
    let mut bytes = std::fs::read(&feed).unwrap();
    assert!(
        bytes.len() < len,
        "the published feed is already {} bytes",
        bytes.len()
    );
    bytes.resize(len - 1, b' ');
    bytes.push(b'\n');
    let tmp = dir.join("origin").join("feed.json.pad");
    std::fs::write(&tmp, &bytes).unwrap();
    std::fs::rename(&tmp, &feed).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let last = match get(addr, "/feed.json", &[]) {
            Ok(r) if r.status == 200 && r.body.len() == len => return,
            Ok(r) => format!("{} with {} bytes", r.head, r.body.len()),
            Err(e) => e,
        };
        if Instant::now() > deadline {
            origin.fail(
                &[],
                &format!("the origin never served the padded feed: {last}"),
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One `Connection: close` request with `headers`; every step bounded by 5 s.
fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Response, String> {
    request(addr, "GET", path, headers)
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, String> {
    let step = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, step).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(step)).unwrap();
    s.set_write_timeout(Some(step)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of header in {} bytes", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let mut r = Response {
        status,
        head,
        body: raw[end + 4..].to_vec(),
    };
    if r.header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        r.body = dechunk(&r.body).ok_or("a bad chunked body")?;
    }
    Ok(r)
}

/// A chunked body's payload (`None` when malformed).
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = raw.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&raw[..eol]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Whether the server closed `s` (EOF or reset) before `deadline`; reads (and drops)
/// whatever it sent first, counted into `read`.
fn closed_by_server(s: &mut TcpStream, deadline: Instant, read: &mut u64) -> bool {
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => *read += n as u64,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// What the endless-header client saw: bytes sent, and whether the server cut it off.
struct Endless {
    sent: u64,
    cut_off: bool,
}

/// Sends a header line that never ends, until the server closes the connection, 64 MiB
/// went out, 30 s passed or a write stalled for 2 s (the server stopped reading).
fn endless_header(addr: SocketAddr) -> Endless {
    let mut out = Endless {
        sent: 0,
        cut_off: false,
    };
    let Ok(mut s) = TcpStream::connect(addr) else {
        return out;
    };
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    if s.write_all(b"GET /feed.json HTTP/1.1\r\nHost: origin\r\nX-Endless: ")
        .is_err()
    {
        out.cut_off = true;
        return out;
    }
    let chunk = vec![b'a'; 16 << 10];
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.sent < 64 << 20 && Instant::now() < deadline {
        match s.write(&chunk) {
            Ok(n) => out.sent += n as u64,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                out.cut_off = true;
                break;
            }
        }
    }
    out
}

#[test]
fn origin_serves_the_feed_to_others_while_hostile_clients_hold_connections() {
    let dir = scratch("http-hostile");
    let base = dir.path();
    let (origin, addr) = start_origin(base, &[]);
    publish_big_feed(base, addr, &origin, BIG_FEED);
    let pid = origin.child.id();
    // The steady state: the feed read in and served whole a few times.
    let whole = get(addr, "/feed.json", &[]).unwrap();
    let etag = whole.header("etag").expect("an ETag").to_owned();
    for _ in 0..2 {
        assert_eq!(get(addr, "/feed.json", &[]).unwrap().body.len(), BIG_FEED);
    }
    let baseline = rss_kib(pid);

    let started = Instant::now();
    let mut half_sent = Vec::new();
    for i in 0..300 {
        let mut s = TcpStream::connect(addr).unwrap_or_else(|e| {
            origin.fail(&[], &format!("half-sent connection {i}: {e}"));
        });
        s.write_all(b"GET /feed.json HTTP/1.1\r\nHost: origin\r\nUser-Agent: slow")
            .unwrap();
        half_sent.push(s);
    }
    let endless = thread::spawn(move || endless_header(addr));
    // Each asks three times at once (pipelined): 54 MB of answers fit in no socket buffers
    // (loopback's may take 18 MB), so the server's writes to them stall.
    let mut non_readers = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&b"GET /feed.json HTTP/1.1\r\nHost: origin\r\n\r\n".repeat(3))
            .unwrap();
        non_readers.push(s);
    }
    // Let the server take them all in and fill the non-readers' socket buffers.
    thread::sleep(Duration::from_secs(1));

    let mut peak = rss_kib(pid);
    for round in 0..5 {
        let t = Instant::now();
        let r = get(addr, "/feed.json", &[]).unwrap_or_else(|e| {
            origin.fail(&[], &format!("round {round}: GET /feed.json: {e}"));
        });
        let took = t.elapsed();
        assert_eq!(r.status, 200, "round {round}: {}", r.head);
        assert_eq!(r.body.len(), BIG_FEED, "round {round}");
        assert!(
            took < Duration::from_secs(1),
            "round {round}: GET /feed.json took {took:?} with hostile clients connected"
        );
        let t = Instant::now();
        let r = get(addr, "/feed.json", &[("If-None-Match", &etag)]).unwrap();
        assert_eq!(r.status, 304, "round {round}: {}", r.head);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "round {round}: 304 took {:?}",
            t.elapsed()
        );
        peak = peak.max(rss_kib(pid));
    }
    let grew = peak.saturating_sub(baseline);
    assert!(
        grew < 32 << 10,
        "the origin's RSS grew by {grew} KiB ({baseline} KiB before the hostile clients, {peak} KiB at most after)"
    );
    eprintln!("RSS {baseline} KiB before, {peak} KiB at most with hostile clients (+{grew} KiB)");

    // The server gives up on each of them in bounded time: the header line is cut off at
    // its size limit, half-sent requests and unread answers at their timeouts.
    let endless = endless.join().unwrap();
    assert!(
        endless.cut_off && endless.sent < 16 << 20,
        "an endless header line was not cut off: {} bytes sent, cut off: {}",
        endless.sent,
        endless.cut_off
    );
    let deadline = started + Duration::from_secs(30);
    let mut read = 0;
    let mut open = 0;
    for s in &mut half_sent {
        if !closed_by_server(s, deadline, &mut read) {
            open += 1;
        }
    }
    assert_eq!(
        open, 0,
        "{open} of 300 half-sent requests still open after 30 s"
    );
    // Still not reading 25 s after asking: the server must have given up on them by now.
    thread::sleep((started + Duration::from_secs(25)).saturating_duration_since(Instant::now()));
    for (i, s) in non_readers.iter_mut().enumerate() {
        let mut got = 0;
        assert!(
            closed_by_server(s, Instant::now() + Duration::from_secs(5), &mut got),
            "non-reader {i} still open after 25 s"
        );
        assert!(
            got < 3 * BIG_FEED as u64,
            "non-reader {i} got all three answers ({got} bytes) after stalling"
        );
    }
    // And the origin still answers.
    assert_eq!(get(addr, "/feed.json", &[]).unwrap().body.len(), BIG_FEED);
}

#[test]
fn connections_past_the_cap_are_refused_at_once_and_the_server_recovers() {
    let dir = scratch("http-cap");
    let base = dir.path();
    let (origin, addr) = start_origin(base, &["--http-max-connections", "32"]);
    // 32 idle connections fill the cap.
    let idle: Vec<TcpStream> = (0..32).map(|_| TcpStream::connect(addr).unwrap()).collect();
    thread::sleep(Duration::from_millis(300));
    for i in 0..8 {
        let t = Instant::now();
        match get(addr, "/feed.json", &[]) {
            Ok(r) => assert_eq!(r.status, 503, "extra connection {i}: {}", r.head),
            Err(e) => assert!(
                !e.contains("timed out") && !e.contains("Resource temporarily"),
                "extra connection {i} was left hanging: {e}"
            ),
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "extra connection {i} took {:?} to be refused",
            t.elapsed()
        );
    }
    drop(idle);
    // Freed slots are reused (the server notices the closes at once).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match get(addr, "/metrics", &[]) {
            Ok(r) if r.status == 200 => {
                let text = String::from_utf8_lossy(&r.body);
                let refused = text
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("ringswarm_http_connections_total{outcome=\"refused\"} ")
                    })
                    .and_then(|v| v.trim().parse::<f64>().ok());
                assert!(refused >= Some(8.0), "refusals not counted: {text}");
                break;
            }
            other if Instant::now() > deadline => origin.fail(
                &[],
                &format!(
                    "no 200 after the idle connections closed: {:?}",
                    other.map(|r| r.head)
                ),
            ),
            _ => thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[test]
fn origin_answers_head_conditional_and_other_methods() {
    let dir = scratch("http-methods");
    let base = dir.path();
    let (origin, addr) = start_origin(base, &[]);
    publish_big_feed(base, addr, &origin, 100_000);
    let whole = get(addr, "/feed.json", &[]).unwrap();
    assert_eq!(whole.body.len(), 100_000);
    let etag = whole.header("etag").unwrap().to_owned();
    let modified = whole
        .header("last-modified")
        .expect("Last-Modified")
        .to_owned();
    let head = request(addr, "HEAD", "/feed.json", &[]).unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some("100000"));
    assert_eq!(
        get(addr, "/feed.json", &[("If-None-Match", &etag)])
            .unwrap()
            .status,
        304
    );
    assert_eq!(
        get(addr, "/feed.json", &[("If-Modified-Since", &modified)])
            .unwrap()
            .status,
        304
    );
    // A validator that does not match wins over a date that does.
    assert_eq!(
        get(
            addr,
            "/feed.json",
            &[
                ("If-None-Match", "\"other\""),
                ("If-Modified-Since", &modified)
            ]
        )
        .unwrap()
        .status,
        200
    );
    let post = request(addr, "POST", "/feed.json", &[("Content-Length", "0")]).unwrap();
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(get(addr, "/nope", &[]).unwrap().status, 404);
}

#[test]
fn metrics_given_a_port_alone_bind_to_localhost() {
    let dir = scratch("http-metrics-local");
    let base = dir.path();
    // Find a free port, then give only the port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(ringswarm());
    cmd.args(["tracker", "--listen", "127.0.0.1:0", "--cores", "1"])
        .args(["--metrics", &port.to_string()]);
    let mut tracker = Guard::spawn("tracker", cmd, base);
    let at = tracker.wait_line("metrics at http://", TIMEOUT, &[]);
    assert_eq!(at, format!("127.0.0.1:{port}/metrics"));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let r = get(addr, "/metrics", &[]).unwrap();
    assert_eq!(r.status, 200);
}
