//! The HTTP/1.1 server: hyper on a tokio current-thread runtime in one thread of its own
//! (the control plane, not the data path), with limits so no client can hold more than a
//! connection slot and a small buffer for a bounded time:
//!
//! - at most [`Limits::max_connections`] connections; one past the cap gets a `503` and is
//!   closed at once, so the others keep being served;
//! - a request header larger than [`Limits::max_header_bytes`] gets a `431` and the
//!   connection is closed (an endless header line costs that much, once);
//! - a request header not complete within [`Limits::header_read_timeout`] of the
//!   connection's start or of the previous answer closes the connection (half-sent
//!   requests, one byte at a time or none, and idle keep-alive connections);
//! - a connection whose answer makes no write progress for [`Limits::write_stall_timeout`]
//!   (a client that does not read), or that moves no byte for [`Limits::idle_timeout`] (a
//!   backstop), is closed;
//! - writes never block: a slow reader holds its socket buffer and a reference to the
//!   shared body ([`bytes::Bytes`]), never a copy of it, and never the thread.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Semaphore};
use tokio::time::Instant;

use super::{Handler, Reply, Request};
use crate::metrics::{as_gauge, label, Metrics};

/// What one server allows each client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    /// The request line and headers together (hyper's read buffer; at least 8 KiB).
    pub max_header_bytes: usize,
    /// From the connection's start, or the previous answer, to the request's last header
    /// (hyper's timer): also how long an idle keep-alive connection is kept.
    pub header_read_timeout: Duration,
    /// No byte in or out, whatever the state (our watchdog, a backstop to hyper's timer).
    pub idle_timeout: Duration,
    /// No byte of an answer taken by the client.
    pub write_stall_timeout: Duration,
}

impl Default for Limits {
    /// The origin's feed: 10 000 agents polling every 2 s keep about as many connections.
    fn default() -> Limits {
        Limits {
            max_connections: 16_384,
            max_header_bytes: 16 << 10,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            write_stall_timeout: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// A daemon's `/metrics`: a scraper or two.
    pub fn metrics() -> Limits {
        Limits {
            max_connections: 64,
            ..Limits::default()
        }
    }
}

/// Connection counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct HttpStats {
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    /// Refused at the connection cap.
    pub refused: AtomicU64,
    /// Closed for a stalled write or an idle connection.
    pub timed_out: AtomicU64,
}

impl HttpStats {
    pub fn write_metrics(&self, e: &mut Metrics) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        // Not `ringswarm_http_connections`: OpenMetrics names the counter's family so, and
        // one name cannot be both a gauge and a counter.
        e.gauge(
            "ringswarm_http_connections_open",
            "HTTP connections open.",
            as_gauge(get(&self.open)),
        );
        e.counter_family(
            "ringswarm_http_connections_total",
            "HTTP connections by how they were handled.",
            &[
                (label("outcome", "accepted"), get(&self.accepted)),
                (label("outcome", "refused"), get(&self.refused)),
                (label("outcome", "timed_out"), get(&self.timed_out)),
            ],
        );
    }
}

/// A running HTTP server; stops when dropped (open connections are closed).
pub struct HttpServer {
    addr: SocketAddr,
    stats: Arc<HttpStats>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Serves GET and HEAD requests on `addr` with `handler`.
    pub fn start(addr: SocketAddr, limits: Limits, handler: Handler) -> io::Result<HttpServer> {
        let listener = listen(addr)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let stats = Arc::new(HttpStats::default());
        let (stop, stopped) = oneshot::channel();
        let thread = {
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("rs-http".into())
                .spawn(move || {
                    runtime.block_on(accept(listener, limits, handler, stats, stopped));
                    // Dropping the runtime drops every connection task: their sockets close.
                })?
        };
        Ok(HttpServer {
            addr,
            stats,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> Arc<HttpStats> {
        self.stats.clone()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().ok();
        }
    }
}

/// Connections the kernel queues before they are accepted: thousands of agents may poll
/// at once after an origin restart (the kernel caps it at `net.core.somaxconn`).
const LISTEN_BACKLOG: i32 = 4096;

fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As std's bind does: a restarted server gets its port back at once.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// What a client past the connection cap is told before its connection is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 22\r\n\r\ntoo many connections\r\n";

async fn accept(
    listener: std::net::TcpListener,
    limits: Limits,
    handler: Handler,
    stats: Arc<HttpStats>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(err = %e, "HTTP server cannot use its socket");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors or memory: wait for connections to close rather than
                // spin on a listener that stays readable.
                tracing::warn!(err = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            // Best effort, never waiting: an empty socket buffer takes the whole answer.
            let _ = stream.try_write(BUSY);
            continue;
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let handler = handler.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            if !serve(stream, limits, handler).await {
                stats.timed_out.fetch_add(1, Ordering::Relaxed);
            }
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
}

/// Serves one connection until it closes (true) or the watchdog gives up on it (false).
async fn serve(stream: TcpStream, limits: Limits, handler: Handler) -> bool {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = hyper::service::service_fn(move |req| {
        let reply = respond(&handler, &req);
        async move { Ok::<_, Infallible>(reply) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::select! {
        done = conn => {
            if let Err(e) = done {
                tracing::debug!(err = %e, "HTTP connection ended");
            }
            true
        }
        () = watchdog(&activity, limits) => false,
    }
}

fn respond(handler: &Handler, req: &hyper::Request<hyper::body::Incoming>) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = response(Reply::text(405, "only GET and HEAD\n"));
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let headers = req.headers();
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    response(handler(&Request {
        path: req.uri().path(),
        if_none_match: text(header::IF_NONE_MATCH),
        if_modified_since: text(header::IF_MODIFIED_SINCE),
    }))
}

type Response = hyper::Response<Full<Bytes>>;

fn response(reply: Reply) -> Response {
    let mut resp = hyper::Response::new(Full::new(reply.body));
    *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    let values = [
        (header::ETAG, reply.etag),
        (header::LAST_MODIFIED, reply.last_modified),
    ];
    for (name, value) in values {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            h.insert(name, v);
        }
    }
    resp
}

/// When a connection last moved a byte, and whether an answer is waiting for the client.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    write_blocked: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            write_blocked: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn progressed(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }
}

/// How long a connection may stay quiet: a write the client does not take has the stall
/// limit, anything else (between requests, or a request still coming in, which hyper's
/// own header timeout usually ends first) the idle limit.
fn quiet_limit(write_blocked: bool, limits: &Limits) -> Duration {
    if write_blocked {
        limits.write_stall_timeout
    } else {
        limits.idle_timeout
    }
}

/// How long the watchdog may sleep after seeing a connection quiet for `quiet`, or None
/// when it has been quiet too long. A write may block meanwhile without waking the
/// watchdog, so it looks again at least every shortest limit.
fn next_look(quiet: Duration, write_blocked: bool, limits: &Limits) -> Option<Duration> {
    let left = quiet_limit(write_blocked, limits).checked_sub(quiet)?;
    if left.is_zero() {
        return None;
    }
    Some(left.min(limits.write_stall_timeout.min(limits.idle_timeout)))
}

/// Ends when the connection has been quiet for longer than its limit.
async fn watchdog(activity: &Activity, limits: Limits) {
    loop {
        let last = activity.start + Duration::from_millis(activity.last_ms.load(Ordering::Relaxed));
        let quiet = Instant::now().saturating_duration_since(last);
        let blocked = activity.write_blocked.load(Ordering::Relaxed);
        match next_look(quiet, blocked, &limits) {
            Some(wait) => tokio::time::sleep(wait).await,
            None => return,
        }
    }
}

/// The socket, noting each byte moved in [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    fn wrote(&self, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Ready(Ok(n)) if *n > 0 => {
                self.activity.progressed();
                self.activity.write_blocked.store(false, Ordering::Relaxed);
            }
            // The stall is timed from the first write that could not go out.
            Poll::Pending if !self.activity.write_blocked.swap(true, Ordering::Relaxed) => {
                self.activity.progressed();
            }
            _ => {}
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.progressed();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&r);
        r
    }

    /// True for a TCP socket: hyper then queues a body's `Bytes` instead of copying it
    /// into its write buffer.
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_that_blocks_while_idle_is_seen_within_the_stall_limit() {
        let limits = Limits {
            write_stall_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(30),
            ..Limits::default()
        };
        let s = Duration::from_secs;
        // Idle for 1 s: look again in 3 s (a write may block meanwhile), not in 29 s.
        assert_eq!(next_look(s(1), false, &limits), Some(s(3)));
        assert_eq!(next_look(s(28), false, &limits), Some(s(2)));
        assert_eq!(next_look(s(30), false, &limits), None);
        // Blocked for 2 s: 1 s left.
        assert_eq!(next_look(s(2), true, &limits), Some(s(1)));
        assert_eq!(next_look(s(3), true, &limits), None);
        assert_eq!(next_look(s(4), true, &limits), None);
    }

    #[test]
    fn the_busy_answer_is_well_formed() {
        let text = std::str::from_utf8(BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
