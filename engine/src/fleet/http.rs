//! The feed and the metrics over HTTP: the server for the origin's feed and every daemon's
//! `/metrics` ([`HttpServer`], hyper on a small runtime of its own, with limits so slow
//! or hostile clients cost bounded time and memory), the pure request-to-reply logic it
//! calls, the agent's conditional GET of the feed, and the one bounded GET the origin's
//! fleet view, the tracker's topology URL and the CLI share ([`http_get_bounded`]) (ureq).

use std::time::{Duration, SystemTime};

use bytes::Bytes;

mod server;
pub use server::{HttpServer, HttpStats, Limits};

/// What the server needs of a request (GET or HEAD; other methods never reach a handler).
#[derive(Default)]
pub struct Request<'a> {
    pub path: &'a str,
    pub if_none_match: Option<&'a str>,
    pub if_modified_since: Option<&'a str>,
}

/// An answer: status, body, content type and, for cacheable bodies, its validators.
pub struct Reply {
    pub status: u16,
    /// Shared, not copied: a clone of the feed's `Bytes` is a reference count.
    pub body: Bytes,
    pub content_type: &'static str,
    pub etag: Option<String>,
    /// An HTTP date (`Last-Modified`).
    pub last_modified: Option<String>,
}

impl Reply {
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            body: Bytes::from(body.into()),
            content_type: "text/plain; charset=utf-8",
            etag: None,
            last_modified: None,
        }
    }

    pub fn not_found() -> Reply {
        Reply::text(404, "not found\n")
    }

    /// Prometheus exposition (OpenMetrics text, [`crate::metrics::Metrics`]).
    pub fn metrics(body: String) -> Reply {
        Reply {
            status: 200,
            body: Bytes::from(body),
            content_type: crate::metrics::CONTENT_TYPE,
            etag: None,
            last_modified: None,
        }
    }

    /// A JSON document (the fleet view's), never cached: it changes every poll.
    pub fn json(body: impl Into<Bytes>) -> Reply {
        Reply {
            status: 200,
            body: body.into(),
            content_type: "application/json",
            etag: None,
            last_modified: None,
        }
    }

    /// An HTML page.
    pub fn html(body: &'static str) -> Reply {
        Reply {
            status: 200,
            body: Bytes::from_static(body.as_bytes()),
            content_type: "text/html; charset=utf-8",
            etag: None,
            last_modified: None,
        }
    }

    /// A cacheable body with its entity tag ([`entity_tag`]) and modification time: 304
    /// without the body when the client has this version already ([`is_fresh`]).
    pub fn cached(req: &Request<'_>, body: &Cached, content_type: &'static str) -> Reply {
        let fresh = is_fresh(req, &body.etag, body.modified);
        Reply {
            status: if fresh { 304 } else { 200 },
            body: if fresh {
                Bytes::new()
            } else {
                body.body.clone()
            },
            content_type,
            etag: Some(body.etag.clone()),
            last_modified: body.modified.map(httpdate::fmt_http_date),
        }
    }
}

/// A body served with validators, computed once per body (not per request).
#[derive(Clone, Default)]
pub struct Cached {
    pub body: Bytes,
    pub etag: String,
    pub modified: Option<SystemTime>,
}

impl Cached {
    pub fn new(body: Bytes, modified: Option<SystemTime>) -> Cached {
        Cached {
            etag: entity_tag(&body),
            body,
            modified,
        }
    }
}

/// Whether the client's copy is current (RFC 9110 13.1): `If-None-Match` decides when
/// present (weak comparison, `*` matches); otherwise `If-Modified-Since`, to the second.
pub fn is_fresh(req: &Request<'_>, etag: &str, modified: Option<SystemTime>) -> bool {
    if let Some(tags) = req.if_none_match {
        let weak = |t: &str| t.trim().trim_start_matches("W/").to_owned();
        let ours = weak(etag);
        return tags.split(',').any(|t| t.trim() == "*" || weak(t) == ours);
    }
    match (req.if_modified_since, modified) {
        (Some(since), Some(modified)) => httpdate::parse_http_date(since).is_ok_and(|since| {
            // HTTP dates have whole seconds: compare at that precision.
            let secs = |t: SystemTime| {
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            };
            secs(modified) <= secs(since)
        }),
        _ => false,
    }
}

/// A strong entity tag for a body: its SHA-1, quoted.
pub fn entity_tag(body: &[u8]) -> String {
    format!("\"{}\"", crate::hex(&crate::verify::sha1(body)))
}

pub type Handler = std::sync::Arc<dyn Fn(&Request<'_>) -> Reply + Send + Sync>;

/// Why a bounded GET got no body.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// The body is longer than the limit: reading stopped there.
    #[error("GET {url}: the answer is over {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    /// No connection, a timeout, a status other than 200 (or 304 when asked), a broken body.
    #[error("GET {url}: {message}")]
    Failed { url: String, message: String },
}

/// What a conditional GET got.
#[derive(Debug, PartialEq, Eq)]
pub enum Got {
    /// 304: the copy named by the entity tag sent is current.
    NotModified,
    /// 200: the body, and its entity tag if the server sent one.
    Body { body: Vec<u8>, etag: Option<String> },
}

/// GETs `url` within `timeout` in all, reading at most `limit` bytes of body: the body of
/// a 200, else one line naming the URL and what went wrong.
pub fn http_get_bounded(url: &str, timeout: Duration, limit: u64) -> Result<Vec<u8>, GetError> {
    match http_get_if_changed(url, timeout, limit, None)? {
        Got::Body { body, .. } => Ok(body),
        Got::NotModified => Err(GetError::Failed {
            url: url.to_owned(),
            message: "HTTP status 304 to a request that was not conditional".into(),
        }),
    }
}

/// [`http_get_bounded`], conditional on `etag` (`If-None-Match`) when given.
pub fn http_get_if_changed(
    url: &str,
    timeout: Duration,
    limit: u64,
    etag: Option<&str>,
) -> Result<Got, GetError> {
    let failed = |message: String| GetError::Failed {
        url: url.to_owned(),
        message,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(url);
    if let Some(tag) = etag {
        req = req.header("If-None-Match", tag);
    }
    let resp = req.call().map_err(|e| failed(e.to_string()))?;
    match resp.status().as_u16() {
        304 if etag.is_some() => Ok(Got::NotModified),
        200 => {
            let etag = resp
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            // One byte past the limit tells a body of exactly `limit` from a longer one.
            let body = resp
                .into_body()
                .with_config()
                .limit(limit.saturating_add(1))
                .read_to_vec()
                .map_err(|e| match e {
                    ureq::Error::BodyExceedsLimit(_) => GetError::TooLarge {
                        url: url.to_owned(),
                        limit,
                    },
                    e => failed(e.to_string()),
                })?;
            if body.len() as u64 > limit {
                return Err(GetError::TooLarge {
                    url: url.to_owned(),
                    limit,
                });
            }
            Ok(Got::Body { body, etag })
        }
        _ => Err(failed(format!("HTTP status {}", resp.status()))),
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
    use std::sync::{Arc, Mutex};

    use super::*;

    fn req<'a>(inm: Option<&'a str>, ims: Option<&'a str>) -> Request<'a> {
        Request {
            path: "/feed.json",
            if_none_match: inm,
            if_modified_since: ims,
        }
    }

    #[test]
    fn freshness_follows_the_validators() {
        let tag = "\"abc\"";
        let modified = httpdate::parse_http_date("Sun, 06 Dec 2026 10:00:00 GMT").unwrap();
        let at = Some(modified + Duration::from_millis(700));
        assert!(!is_fresh(&req(None, None), tag, at));
        assert!(is_fresh(&req(Some("\"abc\""), None), tag, at));
        assert!(is_fresh(&req(Some("\"x\", W/\"abc\""), None), tag, at));
        assert!(is_fresh(&req(Some("*"), None), tag, at));
        assert!(!is_fresh(&req(Some("\"x\""), None), tag, at));
        let same = "Sun, 06 Dec 2026 10:00:00 GMT";
        let before = "Sun, 06 Dec 2026 09:59:59 GMT";
        assert!(is_fresh(&req(None, Some(same)), tag, at));
        assert!(!is_fresh(&req(None, Some(before)), tag, at));
        assert!(!is_fresh(&req(None, Some("yesterday")), tag, at));
        assert!(!is_fresh(&req(None, Some(same)), tag, None));
        // A tag that does not match wins over a date that does.
        assert!(!is_fresh(&req(Some("\"x\""), Some(same)), tag, at));
    }

    #[test]
    fn a_fresh_reply_has_no_body_and_shares_the_stale_one() {
        let cached = Cached::new(Bytes::from_static(b"{}"), None);
        let whole = Reply::cached(&req(None, None), &cached, "application/json");
        assert_eq!(whole.status, 200);
        assert_eq!(whole.body.as_ptr(), cached.body.as_ptr(), "not copied");
        let again = Reply::cached(&req(Some(&cached.etag), None), &cached, "application/json");
        assert_eq!(again.status, 304);
        assert!(again.body.is_empty());
        assert_eq!(again.etag.as_deref(), Some(cached.etag.as_str()));
    }

    #[test]
    fn a_bounded_get_stops_at_its_limit_and_follows_the_entity_tag() {
        let cached = Cached::new(Bytes::from(vec![b'x'; 100]), None);
        let served = cached.clone();
        let server = HttpServer::start(
            "127.0.0.1:0".parse().unwrap(),
            Limits::metrics(),
            Arc::new(move |req| match req.path {
                "/t" => Reply::cached(req, &served, "text/plain"),
                _ => Reply::not_found(),
            }),
        )
        .unwrap();
        let url = format!("http://{}/t", server.local_addr());
        let t = Duration::from_secs(5);
        assert_eq!(http_get_bounded(&url, t, 100).unwrap().len(), 100);
        let e = http_get_bounded(&url, t, 99).unwrap_err();
        assert!(matches!(e, GetError::TooLarge { limit: 99, .. }), "{e}");
        let Got::Body { etag, .. } = http_get_if_changed(&url, t, 100, None).unwrap() else {
            panic!("a body first");
        };
        assert_eq!(etag.as_deref(), Some(cached.etag.as_str()));
        assert_eq!(
            http_get_if_changed(&url, t, 100, etag.as_deref()).unwrap(),
            Got::NotModified
        );
        let missing = format!("http://{}/nope", server.local_addr());
        let e = http_get_bounded(&missing, t, 100).unwrap_err().to_string();
        assert!(
            e.contains(&missing) && e.contains("404") && !e.contains('\n'),
            "{e}"
        );
    }

    #[test]
    fn conditional_get_round_trip() {
        let body = Arc::new(Mutex::new(Cached::new(Bytes::from_static(b"v1"), None)));
        let served = body.clone();
        let server = HttpServer::start(
            "127.0.0.1:0".parse().unwrap(),
            Limits::metrics(),
            Arc::new(move |req| match req.path {
                "/feed.json" => Reply::cached(req, &served.lock().unwrap(), "application/json"),
                _ => Reply::not_found(),
            }),
        )
        .unwrap();
        let base = format!("http://{}", server.local_addr());
        let mut f = FeedFetcher::new(&format!("{base}/feed.json"), Duration::from_secs(5));
        assert_eq!(f.fetch().unwrap(), Fetched::New(b"v1".to_vec()));
        assert_eq!(f.fetch().unwrap(), Fetched::NotModified);
        *body.lock().unwrap() = Cached::new(Bytes::from_static(b"v2"), None);
        assert_eq!(f.fetch().unwrap(), Fetched::New(b"v2".to_vec()));
        let mut missing = FeedFetcher::new(&format!("{base}/nope"), Duration::from_secs(5));
        assert!(missing.fetch().unwrap_err().contains("404"));
        drop(server);
        assert!(f.fetch().is_err(), "a stopped server answers nothing");
    }
}
