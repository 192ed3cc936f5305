//! The feed and the metrics over HTTP: a small server (tiny_http) for the origin's feed
//! and every daemon's `/metrics`, and the agent's conditional GET of the feed (ureq).

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// What the server needs of a request.
pub struct Request<'a> {
    pub path: &'a str,
    pub if_none_match: Option<&'a str>,
}

/// An answer: status, body, content type and (for cacheable bodies) an entity tag.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub content_type: &'static str,
    pub etag: Option<String>,
}

impl Reply {
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            body: body.into().into_bytes(),
            content_type: "text/plain; charset=utf-8",
            etag: None,
        }
    }

    pub fn not_found() -> Reply {
        Reply::text(404, "not found\n")
    }

    /// Prometheus text exposition.
    pub fn metrics(body: String) -> Reply {
        Reply {
            status: 200,
            body: body.into_bytes(),
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            etag: None,
        }
    }

    /// A cacheable body with its entity tag ([`entity_tag`]): 304 without the body when
    /// the client has this version already, so the body is only copied for a 200.
    pub fn cached(req: &Request<'_>, etag: &str, body: &[u8], content_type: &'static str) -> Reply {
        let fresh = req
            .if_none_match
            .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
        Reply {
            status: if fresh { 304 } else { 200 },
            body: if fresh { Vec::new() } else { body.to_vec() },
            content_type,
            etag: Some(etag.to_owned()),
        }
    }
}

/// A strong entity tag for a body: its SHA-1, quoted.
pub fn entity_tag(body: &[u8]) -> String {
    format!("\"{}\"", crate::hex(&crate::verify::sha1(body)))
}

pub type Handler = Arc<dyn Fn(&Request<'_>) -> Reply + Send + Sync>;

/// A running HTTP server; stops when dropped.
pub struct HttpServer {
    server: Arc<tiny_http::Server>,
    threads: Vec<JoinHandle<()>>,
    addr: SocketAddr,
}

impl HttpServer {
    /// Serves GET requests on `addr` with `threads` threads.
    pub fn start(
        addr: SocketAddr,
        threads: usize,
        handler: Handler,
    ) -> std::io::Result<HttpServer> {
        let server = tiny_http::Server::http(addr).map_err(std::io::Error::other)?;
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| std::io::Error::other("the HTTP server is not on an IP address"))?;
        let server = Arc::new(server);
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let server = server.clone();
            let handler = handler.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("rs-http-{i}"))
                    .spawn(move || serve(&server, &*handler))?,
            );
        }
        Ok(HttpServer {
            server,
            threads: handles,
            addr: bound,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        for _ in &self.threads {
            self.server.unblock();
        }
        for t in self.threads.drain(..) {
            t.join().ok();
        }
    }
}

fn serve(server: &tiny_http::Server, handler: &(dyn Fn(&Request<'_>) -> Reply + Send + Sync)) {
    // `recv` ends with an error once the server is unblocked.
    while let Ok(req) = server.recv() {
        let reply = if *req.method() != tiny_http::Method::Get
            && *req.method() != tiny_http::Method::Head
        {
            Reply::text(405, "only GET\n")
        } else {
            let inm = req
                .headers()
                .iter()
                .find(|h| h.field.equiv("If-None-Match"))
                .map(|h| h.value.as_str().to_owned());
            let path = req.url().split('?').next().unwrap_or("/").to_owned();
            handler(&Request {
                path: &path,
                if_none_match: inm.as_deref(),
            })
        };
        let mut resp = tiny_http::Response::from_data(reply.body).with_status_code(reply.status);
        if let Ok(h) = tiny_http::Header::from_bytes("Content-Type", reply.content_type) {
            resp.add_header(h);
        }
        if let Some(tag) = reply.etag {
            if let Ok(h) = tiny_http::Header::from_bytes("ETag", tag) {
                resp.add_header(h);
            }
        }
        if let Err(e) = req.respond(resp) {
            tracing::debug!(err = %e, "HTTP client went away");
        }
    }
}

/// Longest wait for a TCP connection to the feed server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What a feed poll found.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    /// The same feed as last time (304).
    NotModified,
    New(Vec<u8>),
}

/// Polls one feed URL with conditional GETs (`If-None-Match`, `If-Modified-Since`), so an
/// unchanged feed costs a few hundred bytes.
pub struct FeedFetcher {
    agent: ureq::Agent,
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
}

impl FeedFetcher {
    pub fn new(url: &str, timeout: Duration) -> FeedFetcher {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            // A lost SYN costs a 1 s retransmission, then 3 s: on a busy origin link a
            // fresh connection is the quicker way through.
            .timeout_connect(Some(CONNECT_TIMEOUT.min(timeout)))
            .http_status_as_error(false)
            .build();
        FeedFetcher {
            agent: config.into(),
            url: url.to_owned(),
            etag: None,
            last_modified: None,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Forgets the validators: the next poll fetches the feed whole.
    pub fn forget(&mut self) {
        self.etag = None;
        self.last_modified = None;
    }

    pub fn fetch(&mut self) -> Result<Fetched, String> {
        let mut req = self.agent.get(&self.url);
        if let Some(tag) = &self.etag {
            req = req.header("If-None-Match", tag);
        }
        if let Some(lm) = &self.last_modified {
            req = req.header("If-Modified-Since", lm);
        }
        let resp = req.call().map_err(|e| format!("GET {}: {e}", self.url))?;
        match resp.status().as_u16() {
            304 => Ok(Fetched::NotModified),
            200 => {
                let header = |name: &str| {
                    resp.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let etag = header("etag");
                let last_modified = header("last-modified");
                let body = resp
                    .into_body()
                    .with_config()
                    .limit(crate::feed::MAX_FEED_BYTES as u64)
                    .read_to_vec()
                    .map_err(|e| format!("GET {}: {e}", self.url))?;
                self.etag = etag;
                self.last_modified = last_modified;
                Ok(Fetched::New(body))
            }
            s => {
                // Read the (small) body, so the connection is kept for the next poll.
                let _ = resp.into_body().with_config().limit(64 << 10).read_to_vec();
                Err(format!("GET {}: HTTP status {s}", self.url))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditional_get_round_trip() {
        let body = Arc::new(std::sync::Mutex::new(b"v1".to_vec()));
        let served = body.clone();
        let server = HttpServer::start(
            "127.0.0.1:0".parse().unwrap(),
            1,
            Arc::new(move |req| match req.path {
                "/feed.json" => {
                    let body = served.lock().unwrap().clone();
                    Reply::cached(req, &entity_tag(&body), &body, "application/json")
                }
                _ => Reply::not_found(),
            }),
        )
        .unwrap();
        let base = format!("http://{}", server.local_addr());
        let mut f = FeedFetcher::new(&format!("{base}/feed.json"), Duration::from_secs(5));
        assert_eq!(f.fetch().unwrap(), Fetched::New(b"v1".to_vec()));
        assert_eq!(f.fetch().unwrap(), Fetched::NotModified);
        *body.lock().unwrap() = b"v2".to_vec();
        assert_eq!(f.fetch().unwrap(), Fetched::New(b"v2".to_vec()));
        let mut missing = FeedFetcher::new(&format!("{base}/nope"), Duration::from_secs(5));
        assert!(missing.fetch().unwrap_err().contains("404"));
        drop(server);
        assert!(f.fetch().is_err(), "a stopped server answers nothing");
    }
}
