//! The fleet's own UDP tracker (BEP 15) and its client.
//!
//! - [`proto`]: BEP 15 packets and BEP 41 URL data; pure.
//! - [`client`]: announcing to trackers (BEP 15 retry schedule, BEP 12 tiers).
//! - [`topology`]: CIDR → datacenter/rack map from TOML.
//! - [`server`]: the tracker on the io_uring reactor, one worker per core.
//! - [`limits`]: the tracker-wide peer cap and per-source torrent creation budget,
//!   shared by every core's store.
//! - [`store`]: the tracker's swarm state (sans-I/O): peers, expiry, bounds, scrape
//!   counts, connection ids, and topology-ordered peer lists.

pub mod client;
pub mod limits;
pub use ringswarm_proto::tracker as proto;
pub mod server;
pub mod store;
pub use ringswarm_proto::topology;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long fetching a topology URL may take, connection and body together.
const TOPOLOGY_FETCH_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a tracker given a topology URL reads it again ([`TopologyRefresh`]).
pub const TOPOLOGY_REFRESH_EVERY: Duration = Duration::from_secs(60);

/// Reads and parses a topology: a file, or an `http://` URL (the format is [`topology`]'s;
/// the reading is here, the formats do no I/O). A file is read once, at start; a URL is
/// read again every [`TOPOLOGY_REFRESH_EVERY`] by a running tracker ([`TopologyRefresh`]).
///
/// A URL is fetched over plain HTTP, unsigned: the placement it gives is trusted because
/// the network between the tracker and the origin is, as for the download of the feed
/// itself (whose releases are signed; its topology is signed in the feed, but this copy
/// of it is not checked against the key).
pub fn load_topology(
    path: &std::path::Path,
) -> Result<topology::Topology, topology::TopologyError> {
    read_topology(path).map(|(_, t)| t)
}

/// [`load_topology`], with the text as read (what `publish` puts into the feed).
pub fn read_topology(
    path: &std::path::Path,
) -> Result<(String, topology::Topology), topology::TopologyError> {
    let origin = path.display().to_string();
    let text = match topology_url(path) {
        Some(url) => fetch_topology(url, None)?
            .map(|(text, _)| text)
            .ok_or_else(|| topology::TopologyError::Io {
                origin: origin.clone(),
                source: std::io::Error::other("HTTP status 304 to an unconditional GET"),
            })?,
        None => read_topology_file(path)?,
    };
    let topology = topology::Topology::from_toml_str(&text, &origin)?;
    Ok((text, topology))
}

/// The URL, when `--topology` names one rather than a file.
pub fn topology_url(path: &std::path::Path) -> Option<&str> {
    let s = path.to_str()?;
    let scheme = s.split_once("://")?.0;
    (!scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+'))
    .then_some(s)
}

fn too_large(origin: &std::path::Path, bytes: u64) -> topology::TopologyError {
    topology::TopologyError::TooLarge {
        origin: origin.display().to_string(),
        bytes: usize::try_from(bytes).unwrap_or(usize::MAX),
    }
}

fn read_topology_file(path: &std::path::Path) -> Result<String, topology::TopologyError> {
    use std::io::Read as _;
    let io = |source| topology::TopologyError::Io {
        origin: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let limit = topology::MAX_TOPOLOGY_BYTES as u64;
    if len > limit {
        return Err(too_large(path, len));
    }
    // Read at most one byte past the bound: a file growing meanwhile is still refused.
    let mut text = String::new();
    file.take(limit + 1).read_to_string(&mut text).map_err(io)?;
    if text.len() as u64 > limit {
        return Err(too_large(path, text.len() as u64));
    }
    Ok(text)
}

/// GETs a topology over plain HTTP, within a timeout and the size bound; with `etag`, a
/// conditional GET: `None` when the copy named by it is current. Else the text and its
/// entity tag, if the server sent one.
fn fetch_topology(
    url: &str,
    etag: Option<&str>,
) -> Result<Option<(String, Option<String>)>, topology::TopologyError> {
    use crate::fleet::http::{http_get_if_changed, GetError, Got};
    let io = |message: String| topology::TopologyError::Io {
        origin: url.to_owned(),
        source: std::io::Error::other(message),
    };
    if !url.starts_with("http://") {
        return Err(io("only http:// URLs are supported (or give a file)".into()));
    }
    let limit = topology::MAX_TOPOLOGY_BYTES as u64;
    match http_get_if_changed(url, TOPOLOGY_FETCH_TIMEOUT, limit, etag) {
        Ok(Got::NotModified) => Ok(None),
        Ok(Got::Body { body, etag }) => String::from_utf8(body)
            .map(|text| Some((text, etag)))
            .map_err(|_| io("the answer is not UTF-8 text".into())),
        Err(GetError::TooLarge { .. }) => Err(too_large(std::path::Path::new(url), limit + 1)),
        Err(GetError::Failed { message, .. }) => Err(io(message)),
    }
}

/// A running tracker's re-reading of its topology URL: every `every`, a conditional GET
/// (`If-None-Match` when the server gave an entity tag); a changed topology that parses is
/// swapped into the topology the workers share. On any error the topology in use stays,
/// and the error is logged once (until a read succeeds again). Stops when dropped.
///
/// The URL is plain HTTP and unsigned (see [`load_topology`]): placement is trusted as
/// far as the network between the tracker and the origin is.
pub struct TopologyRefresh {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TopologyRefresh {
    /// Starts re-reading `url` into `shared`, which holds the topology of `current_text`
    /// (as read at start); every new topology gets `max_names_per_source`, as at start.
    pub fn start(
        url: String,
        current_text: &str,
        every: Duration,
        shared: Arc<RwLock<topology::Topology>>,
        max_names_per_source: usize,
    ) -> std::io::Result<TopologyRefresh> {
        let applied = Some(crate::verify::sha1(current_text.as_bytes()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("rs-topology".into())
                .spawn(move || {
                    let mut state = RefreshState {
                        applied,
                        ..RefreshState::default()
                    };
                    loop {
                        // Sleep in slices so a shutdown waits at most one.
                        let slice = (every / 20)
                            .clamp(Duration::from_millis(10), Duration::from_millis(200));
                        let started = std::time::Instant::now();
                        while started.elapsed() < every {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                            std::thread::sleep(slice.min(every));
                        }
                        state.refresh(&url, &shared, max_names_per_source);
                    }
                })?
        };
        Ok(TopologyRefresh {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for TopologyRefresh {
    /// Stops the thread. It is joined only if it ends within half a second: one caught in
    /// a fetch (15 s timeout) is left to finish alone, so a tracker stops promptly.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let deadline = std::time::Instant::now() + Duration::from_millis(500);
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                t.join().ok();
            }
        }
    }
}

/// What the refresher remembers between reads.
#[derive(Default)]
struct RefreshState {
    etag: Option<String>,
    /// SHA-1 of the text swapped in last: an unchanged text is not swapped again (a swap
    /// keeps the names in use, so it is cheap but not free).
    applied: Option<[u8; 20]>,
    failing: bool,
}

impl RefreshState {
    fn refresh(
        &mut self,
        url: &str,
        shared: &RwLock<topology::Topology>,
        max_names_per_source: usize,
    ) {
        let read = fetch_topology(url, self.etag.as_deref()).and_then(|got| match got {
            None => Ok(None),
            Some((text, etag)) => topology::Topology::from_toml_str(&text, url)
                .map(|t| Some((crate::verify::sha1(text.as_bytes()), t, etag))),
        });
        match read {
            Ok(None) => {}
            Ok(Some((hash, mut t, etag))) => {
                self.etag = etag;
                if self.applied != Some(hash) {
                    self.applied = Some(hash);
                    t.set_max_names_per_source(max_names_per_source);
                    // The stored peers' places are ids into the names in use: the new
                    // subnets come in under those names, so the ids keep their meaning.
                    let taken = match shared.write() {
                        Ok(mut shared) => shared.take_subnets_from(&t),
                        Err(_) => Err("the topology lock is poisoned".into()),
                    };
                    match taken {
                        Ok(()) => {
                            tracing::info!(url, "topology changed; placing peers by the new one")
                        }
                        Err(e) => tracing::warn!(url, "{e}; keeping the topology in use"),
                    }
                }
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!("{e}; keeping the topology in use");
                }
                self.failing = true;
                return;
            }
        }
        if self.failing {
            tracing::info!(url, "topology read again");
        }
        self.failing = false;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_topology_file_is_an_io_error_naming_it() {
        let e = super::load_topology(std::path::Path::new("/nonexistent/fleet.toml"));
        match e {
            Err(super::topology::TopologyError::Io { origin, .. }) => {
                assert_eq!(origin, "/nonexistent/fleet.toml")
            }
            other => panic!("{other:?}"),
        }
    }

    /// Serves one HTTP answer per connection from a thread: `status` and `body`.
    fn serve(status: &'static str, body: Vec<u8>) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut conn, _)) = listener.accept() {
                conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                    .ok();
                let mut req = [0u8; 4096];
                let _ = conn.read(&mut req);
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&body);
            }
        });
        format!("http://{addr}/topology.toml")
    }

    const TOPOLOGY: &str = "[[subnet]]\ncidr = \"127.0.1.0/24\"\ndc = \"lo\"\nrack = \"r1\"\n";

    #[test]
    fn a_topology_is_fetched_from_an_http_url() {
        let url = serve("200 OK", TOPOLOGY.into());
        let (text, t) = super::read_topology(std::path::Path::new(&url)).unwrap();
        assert_eq!(text, TOPOLOGY);
        assert!(t.lookup("127.0.1.7".parse().unwrap()).is_some());
    }

    #[test]
    fn a_bad_answer_is_one_line_naming_the_url() {
        let url = serve("404 Not Found", b"no".to_vec());
        let e = super::load_topology(std::path::Path::new(&url)).unwrap_err();
        let e = e.to_string();
        assert!(e.contains(&url) && e.contains("404"), "{e}");
        assert!(!e.contains('\n'), "{e}");

        let url = serve("200 OK", b"[[subnet]]\ncidr = 1\n".to_vec());
        let e = super::load_topology(std::path::Path::new(&url)).unwrap_err();
        assert!(e.to_string().contains(&url), "{e}");

        let e = super::load_topology(std::path::Path::new("https://example.invalid/t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("only http://"), "{e}");
        // Nobody listens on port 1: a refused connection, named.
        let url = "http://127.0.0.1:1/topology.toml";
        let e = super::load_topology(std::path::Path::new(url)).unwrap_err();
        assert!(e.to_string().contains(url), "{e}");
    }

    #[test]
    fn a_running_tracker_follows_a_changed_topology_url_and_keeps_it_on_errors() {
        use crate::fleet::http::{Cached, HttpServer, Limits, Reply};
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::{Arc, Mutex, RwLock};
        use std::time::{Duration, Instant};
        // None: the server answers 500.
        let served: Arc<Mutex<Option<Cached>>> =
            Arc::new(Mutex::new(Some(Cached::new(TOPOLOGY.into(), None))));
        let not_modified = Arc::new(AtomicU64::new(0));
        let server = {
            let served = served.clone();
            let not_modified = not_modified.clone();
            HttpServer::start(
                "127.0.0.1:0".parse().unwrap(),
                Limits::metrics(),
                Arc::new(move |req| match served.lock().unwrap().as_ref() {
                    Some(c) => {
                        let reply = Reply::cached(req, c, "application/toml");
                        if reply.status == 304 {
                            not_modified.fetch_add(1, Ordering::Relaxed);
                        }
                        reply
                    }
                    None => Reply::text(500, "down\n"),
                }),
            )
            .unwrap()
        };
        let url = format!("http://{}/topology.toml", server.local_addr());
        let (text, t) = super::read_topology(std::path::Path::new(&url)).unwrap();
        let shared = Arc::new(RwLock::new(t));
        let _refresh =
            super::TopologyRefresh::start(url, &text, Duration::from_millis(50), shared.clone(), 4)
                .unwrap();
        let rack_of = |ip: &str| {
            let t = shared.read().unwrap();
            t.lookup(ip.parse().unwrap())
                .and_then(|p| t.rack_name(p.rack).map(|(_, r)| r.to_owned()))
        };
        let wait_for = |what: &str, ok: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !ok() {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        assert_eq!(rack_of("127.0.1.7").as_deref(), Some("r1"));
        // Unchanged: conditional GETs answered 304.
        wait_for("a 304", &|| not_modified.load(Ordering::Relaxed) >= 2);
        let moved = TOPOLOGY.replace("r1", "r2");
        *served.lock().unwrap() = Some(Cached::new(moved.into(), None));
        wait_for("the new rack", &|| {
            rack_of("127.0.1.7").as_deref() == Some("r2")
        });
        // Errors (a 500, then a topology that does not parse) keep the one in use.
        *served.lock().unwrap() = None;
        std::thread::sleep(Duration::from_millis(200));
        *served.lock().unwrap() = Some(Cached::new("[[subnet]]\ncidr = 1\n".into(), None));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(rack_of("127.0.1.7").as_deref(), Some("r2"));
    }

    #[test]
    fn a_topology_over_the_bound_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.toml");
        // 100 MiB, sparse: refused by its length before a byte is read.
        std::fs::File::create(&path)
            .unwrap()
            .set_len(100 << 20)
            .unwrap();
        let e = super::load_topology(&path).unwrap_err().to_string();
        assert!(
            e.contains("huge.toml") && e.contains("more than the 16 MiB"),
            "{e}"
        );

        let url = serve(
            "200 OK",
            vec![b' '; super::topology::MAX_TOPOLOGY_BYTES + 10],
        );
        let e = super::load_topology(std::path::Path::new(&url)).unwrap_err();
        assert!(e.to_string().contains("more than the 16 MiB"), "{e}");
    }
}
