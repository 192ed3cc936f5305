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

/// How long fetching a topology URL may take, connection and body together.
const TOPOLOGY_FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Reads and parses a topology: a file, or an `http://` URL (the format is [`topology`]'s;
/// the reading is here, the formats do no I/O). Loaded once, at start: a command re-reads
/// it only when restarted (agents follow the feed's copy instead, see `fleet::agent`).
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
        Some(url) => fetch_topology(url),
        None => read_topology_file(path),
    }
    .map_err(|source| topology::TopologyError::Io {
        origin: origin.clone(),
        source,
    })?;
    let topology = topology::Topology::from_toml_str(&text, &origin)?;
    Ok((text, topology))
}

/// The URL, when `--topology` names one rather than a file.
fn topology_url(path: &std::path::Path) -> Option<&str> {
    let s = path.to_str()?;
    let scheme = s.split_once("://")?.0;
    (!scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+'))
    .then_some(s)
}

fn too_large(bytes: u64) -> std::io::Error {
    std::io::Error::other(format!(
        "{bytes} bytes or more, more than the {} MiB a topology may be",
        topology::MAX_TOPOLOGY_BYTES >> 20
    ))
}

fn read_topology_file(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > topology::MAX_TOPOLOGY_BYTES as u64 {
        return Err(too_large(len));
    }
    // Read at most one byte past the bound: a file growing meanwhile is still refused.
    let mut text = String::new();
    file.take(topology::MAX_TOPOLOGY_BYTES as u64 + 1)
        .read_to_string(&mut text)?;
    if text.len() > topology::MAX_TOPOLOGY_BYTES {
        return Err(too_large(text.len() as u64));
    }
    Ok(text)
}

/// GETs a topology over plain HTTP, within a timeout and the size bound.
fn fetch_topology(url: &str) -> std::io::Result<String> {
    if !url.starts_with("http://") {
        return Err(std::io::Error::other(
            "only http:// URLs are supported (or give a file)",
        ));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TOPOLOGY_FETCH_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let resp = agent.get(url).call().map_err(std::io::Error::other)?;
    let status = resp.status();
    if status.as_u16() != 200 {
        return Err(std::io::Error::other(format!("HTTP status {status}")));
    }
    let limit = topology::MAX_TOPOLOGY_BYTES as u64;
    let body = resp
        .into_body()
        .with_config()
        .limit(limit + 1)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => too_large(limit + 1),
            e => std::io::Error::other(e),
        })?;
    if body.len() as u64 > limit {
        return Err(too_large(body.len() as u64));
    }
    String::from_utf8(body).map_err(|_| std::io::Error::other("the answer is not UTF-8 text"))
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
