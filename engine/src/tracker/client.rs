//! Announcing to UDP trackers: BEP 15 exchanges, BEP 12 tiers, and a background announcer.
//!
//! Control traffic, not the data path: blocking [`std::net::UdpSocket`]s with timeouts.
//!
//! - [`TrackerClient`]: one tracker. A connect request obtains a connection id, which is
//!   reused for 60 s (BEP 15: "a connection ID can be used for multiple requests ... for
//!   one minute"). A request unanswered after `15 · 2^n` s is sent again with `n + 1`, for
//!   `n = 0..=8` (BEP 15); [`RetryPolicy`] makes the base and the last `n` configurable.
//!   After a timed-out announce or scrape the connection id is dropped and the retry starts
//!   with a new connect (the tracker may have restarted and forgotten it). Replies whose
//!   transaction id differs are ignored; the socket is connected to the tracker, so
//!   datagrams from anyone else never reach us, and an ICMP "port unreachable" ends the
//!   exchange at once ([`ClientError::Refused`]). BEP 15 error packets become
//!   [`ClientError::Tracker`], naming the tracker.
//! - [`Announcer`]: BEP 12 tiers (<https://www.bittorrent.org/beps/bep_0012.html>). Each
//!   tier is shuffled once; its trackers are tried in order and the one that answers moves
//!   to the front of its tier. We announce to every tier (the fleet's trackers do not share
//!   state). Only `udp://` URLs are used; others are skipped with a one-line warning. In a
//!   tier of several trackers one tracker is given up after `n = 2` (105 s with the BEP 15
//!   base) so the next is tried; a tracker alone in its tier gets the full schedule.
//! - [`spawn_announcer`]: one thread per tier announces `started`, re-announces on the
//!   tracker's interval, sends `completed` once when the download turns complete (never
//!   for a torrent that was complete from the start, as BEP 3 says), and `stopped` when the
//!   [`AnnouncerHandle`] is stopped or dropped, waiting at most
//!   [`AnnounceParams::stop_timeout`] (2 s).
//! - BEP 41 (<https://www.bittorrent.org/beps/bep_0041.html>): the URL's path and query are
//!   sent as URL data, with `dc=` / `rack=` appended when [`AnnounceParams`] names them.

use std::fmt::Write as _;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;

use super::proto::{
    self, AnnounceRequest, Event, Family, ProtoError, Request, Response, ScrapeEntry,
};

/// Largest datagram we accept (UDP's maximum payload).
const RECV_BUF: usize = 65_536;
/// How often a waiting exchange looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);
/// In a tier of several trackers, the last retransmission exponent before failing over.
const FAILOVER_MAX_N: u32 = 2;
/// Longest re-announce interval we honour (a tracker's larger value is capped).
const MAX_INTERVAL: Duration = Duration::from_secs(2 * 3600);
/// Longest wait after failed announces (the backoff doubles up to this).
const MAX_BACKOFF: Duration = Duration::from_secs(30 * 60);

/// Why talking to a tracker failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Url(#[from] ProtoError),
    #[error("tracker {url}: cannot resolve {host}: {source}")]
    Resolve {
        url: String,
        host: String,
        source: io::Error,
    },
    #[error("tracker {url}: {host} resolves to no address")]
    NoAddress { url: String, host: String },
    #[error("tracker {url} ({addr}): {context}: {source}")]
    Io {
        url: String,
        addr: SocketAddr,
        context: &'static str,
        source: io::Error,
    },
    #[error("tracker {url} ({addr}): no answer after {attempts} attempts in {waited:?}")]
    Timeout {
        url: String,
        addr: SocketAddr,
        attempts: u32,
        waited: Duration,
    },
    #[error("tracker {url} ({addr}): connection refused (nothing listening)")]
    Refused { url: String, addr: SocketAddr },
    #[error("tracker {url} ({addr}) answered with an error: {message}")]
    Tracker {
        url: String,
        addr: SocketAddr,
        message: String,
    },
    #[error("tracker {url} ({addr}): unexpected answer to {request}: {got}")]
    Unexpected {
        url: String,
        addr: SocketAddr,
        request: &'static str,
        got: &'static str,
    },
    #[error("tracker {url} ({addr}): cannot encode the request: {source}")]
    Encode {
        url: String,
        addr: SocketAddr,
        source: ProtoError,
    },
    #[error("tracker {url}: stopped")]
    Cancelled { url: String },
}

/// Why announcing to a tier failed.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    #[error("tier {tier}: no tier with that number")]
    NoSuchTier { tier: usize },
    #[error("tier {tier}: every tracker failed: {}", join_errors(.errors))]
    AllFailed {
        tier: usize,
        errors: Vec<ClientError>,
    },
    #[error("tier {tier}: stopped")]
    Cancelled { tier: usize },
}

fn join_errors(errors: &[ClientError]) -> String {
    let mut s = String::new();
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            s.push_str("; ");
        }
        let _ = write!(s, "{e}");
    }
    s
}

/// The BEP 15 retransmission schedule: wait `base · 2^n` for an answer, `n = 0..=max_n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// 15 s in BEP 15.
    pub base: Duration,
    /// 8 in BEP 15 (so 9 attempts, the last waiting 3840 s).
    pub max_n: u32,
    /// How long a connection id is reused: 60 s in BEP 15.
    pub connection_id_ttl: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(15),
            max_n: 8,
            connection_id_ttl: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    fn timeout(&self, n: u32) -> Duration {
        self.base.saturating_mul(1u32 << n.min(20))
    }
}

/// When to give up early: a stop flag (checked every 50 ms) and/or a deadline.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cancel<'a> {
    pub stop: Option<&'a AtomicBool>,
    pub deadline: Option<Instant>,
}

impl Cancel<'_> {
    /// Never cancelled: the retry schedule alone bounds the exchange.
    pub fn none() -> Cancel<'static> {
        Cancel {
            stop: None,
            deadline: None,
        }
    }

    fn stopped(&self) -> bool {
        self.stop.is_some_and(|s| s.load(Ordering::Acquire))
    }
}

/// What we tell a tracker in an announce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceArgs {
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
    pub downloaded: u64,
    pub left: u64,
    pub uploaded: u64,
    pub event: Event,
    pub key: u32,
    /// -1 = the tracker's default.
    pub num_want: i32,
    /// Our listen port.
    pub port: u16,
}

/// A tracker's answer to an announce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceReply {
    /// Seconds until the next announce.
    pub interval: u32,
    pub leechers: u32,
    pub seeders: u32,
    pub peers: Vec<SocketAddr>,
}

/// One UDP tracker.
pub struct TrackerClient {
    url: String,
    addr: SocketAddr,
    url_data: Vec<u8>,
    socket: UdpSocket,
    policy: RetryPolicy,
    /// The connection id and when its connect request was sent.
    connection: Option<(u64, Instant)>,
    out: Vec<u8>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for TrackerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackerClient")
            .field("url", &self.url)
            .field("addr", &self.addr)
            .field("connected", &self.connection.is_some())
            .finish()
    }
}

enum Job<'a> {
    Announce(&'a AnnounceArgs),
    Scrape(&'a [[u8; 20]]),
}

impl TrackerClient {
    /// Parses a `udp://host:port/path?query` URL, resolves the host (the first address
    /// wins) and opens a socket connected to it. The path and query are sent as BEP 41 URL
    /// data.
    pub fn new(url: &str, policy: RetryPolicy) -> Result<TrackerClient, ClientError> {
        let parsed = proto::parse_udp_url(url)?;
        let addr = resolve(url, &parsed.host, parsed.port)?;
        TrackerClient::with_addr(url, addr, parsed.url_data, policy)
    }

    /// A client for a tracker at a known address; `url` only names it in errors.
    pub fn with_addr(
        url: &str,
        addr: SocketAddr,
        url_data: Vec<u8>,
        policy: RetryPolicy,
    ) -> Result<TrackerClient, ClientError> {
        let io = |context| {
            let url = url.to_string();
            move |source| ClientError::Io {
                url,
                addr,
                context,
                source,
            }
        };
        let local: SocketAddr = match addr {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).map_err(io("binding a UDP socket"))?;
        socket
            .connect(addr)
            .map_err(io("connecting the UDP socket"))?;
        Ok(TrackerClient {
            url: url.to_string(),
            addr,
            url_data,
            socket,
            policy,
            connection: None,
            out: Vec::with_capacity(256),
            buf: vec![0; RECV_BUF],
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the BEP 41 URL data sent with announces (empty: none).
    pub fn set_url_data(&mut self, url_data: Vec<u8>) {
        self.url_data = url_data;
    }

    /// Announces; blocks until the tracker answers, the retry schedule runs out, or
    /// `cancel` says stop.
    pub fn announce(
        &mut self,
        args: &AnnounceArgs,
        cancel: &Cancel<'_>,
    ) -> Result<AnnounceReply, ClientError> {
        match self.exchange(Job::Announce(args), cancel)? {
            Response::Announce {
                interval,
                leechers,
                seeders,
                peers,
                ..
            } => Ok(AnnounceReply {
                interval,
                leechers,
                seeders,
                peers,
            }),
            other => Err(self.unexpected("announce", &other)),
        }
    }

    /// Scrapes up to 74 torrents.
    pub fn scrape(
        &mut self,
        info_hashes: &[[u8; 20]],
        cancel: &Cancel<'_>,
    ) -> Result<Vec<ScrapeEntry>, ClientError> {
        match self.exchange(Job::Scrape(info_hashes), cancel)? {
            Response::Scrape { entries, .. } => Ok(entries),
            other => Err(self.unexpected("scrape", &other)),
        }
    }

    fn unexpected(&self, request: &'static str, got: &Response) -> ClientError {
        ClientError::Unexpected {
            url: self.url.clone(),
            addr: self.addr,
            request,
            got: match got {
                Response::Connect { .. } => "a connect response",
                Response::Announce { .. } => "an announce response",
                Response::Scrape { .. } => "a scrape response",
                Response::Error { .. } => "an error",
            },
        }
    }

    /// Connect if needed, then the request; retransmits on the BEP 15 schedule.
    fn exchange(&mut self, job: Job<'_>, cancel: &Cancel<'_>) -> Result<Response, ClientError> {
        let started = Instant::now();
        let mut n = 0u32;
        let mut attempts = 0u32;
        // An id that has just been obtained is used once whatever its lifetime, so a short
        // `connection_id_ttl` cannot turn into endless connects.
        let mut just_connected = false;
        loop {
            let timeout = self.policy.timeout(n);
            attempts += 1;
            let fresh = self.connection.filter(|(_, at)| {
                std::mem::take(&mut just_connected) || at.elapsed() < self.policy.connection_id_ttl
            });
            let answer = match fresh {
                None => {
                    let sent = Instant::now();
                    let transaction_id = rand::random();
                    match self.round_trip(&Request::Connect { transaction_id }, timeout, cancel)? {
                        Some(Response::Connect { connection_id, .. }) => {
                            self.connection = Some((connection_id, sent));
                            just_connected = true;
                            // The connect answered: the request itself starts afresh.
                            attempts -= 1;
                            continue;
                        }
                        Some(Response::Error { message, .. }) => {
                            return Err(self.tracker_error(message))
                        }
                        Some(other) => return Err(self.unexpected("connect", &other)),
                        None => None,
                    }
                }
                Some((connection_id, _)) => {
                    let transaction_id = rand::random();
                    let request = match job {
                        Job::Announce(a) => Request::Announce(AnnounceRequest {
                            connection_id,
                            transaction_id,
                            info_hash: a.info_hash,
                            peer_id: a.peer_id,
                            downloaded: a.downloaded,
                            left: a.left,
                            uploaded: a.uploaded,
                            event: a.event,
                            ip: 0,
                            key: a.key,
                            num_want: a.num_want,
                            port: a.port,
                            url_data: (!self.url_data.is_empty()).then(|| self.url_data.clone()),
                        }),
                        Job::Scrape(hashes) => Request::Scrape {
                            connection_id,
                            transaction_id,
                            info_hashes: hashes.to_vec(),
                        },
                    };
                    self.round_trip(&request, timeout, cancel)?
                }
            };
            match answer {
                Some(Response::Error { message, .. }) => {
                    self.connection = None;
                    return Err(self.tracker_error(message));
                }
                Some(response) => return Ok(response),
                None => {
                    // Timed out: retransmit (with a new connect) or give up.
                    self.connection = None;
                    let deadline_passed = cancel.deadline.is_some_and(|d| Instant::now() >= d);
                    if n >= self.policy.max_n || deadline_passed {
                        return Err(ClientError::Timeout {
                            url: self.url.clone(),
                            addr: self.addr,
                            attempts,
                            waited: started.elapsed(),
                        });
                    }
                    n += 1;
                }
            }
        }
    }

    fn tracker_error(&self, message: String) -> ClientError {
        ClientError::Tracker {
            url: self.url.clone(),
            addr: self.addr,
            message: message.chars().take(500).collect(),
        }
    }

    /// Sends `request` and waits up to `timeout` for the response with its transaction id;
    /// `None` on timeout.
    fn round_trip(
        &mut self,
        request: &Request,
        timeout: Duration,
        cancel: &Cancel<'_>,
    ) -> Result<Option<Response>, ClientError> {
        if cancel.stopped() {
            return Err(ClientError::Cancelled {
                url: self.url.clone(),
            });
        }
        self.out.clear();
        request
            .encode_into(&mut self.out)
            .map_err(|source| ClientError::Encode {
                url: self.url.clone(),
                addr: self.addr,
                source,
            })?;
        if let Err(e) = self.socket.send(&self.out) {
            return Err(self.io_error(e, "sending"));
        }
        let now = Instant::now();
        let mut until = now.checked_add(timeout).unwrap_or(now + STOP_POLL);
        if let Some(d) = cancel.deadline {
            until = until.min(d);
        }
        let family = Family::of(&self.addr);
        loop {
            if cancel.stopped() {
                return Err(ClientError::Cancelled {
                    url: self.url.clone(),
                });
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let slice = if cancel.stop.is_some() {
                left.min(STOP_POLL)
            } else {
                left
            };
            // A zero read timeout means "block forever": keep it at least 1 ms.
            if let Err(e) = self
                .socket
                .set_read_timeout(Some(slice.max(Duration::from_millis(1))))
            {
                return Err(self.io_error(e, "setting the read timeout"));
            }
            match self.socket.recv(&mut self.buf) {
                Ok(len) => {
                    let Some(packet) = self.buf.get(..len) else {
                        continue;
                    };
                    match Response::decode(packet, family) {
                        Ok(r) if r.transaction_id() == request.transaction_id() => {
                            return Ok(Some(r))
                        }
                        Ok(_) => {} // a late answer to an earlier attempt
                        Err(e) => {
                            tracing::debug!(tracker = %self.url, err = %e, "ignoring a bad packet");
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(self.io_error(e, "receiving")),
            }
        }
    }

    fn io_error(&self, e: io::Error, context: &'static str) -> ClientError {
        if e.kind() == io::ErrorKind::ConnectionRefused {
            ClientError::Refused {
                url: self.url.clone(),
                addr: self.addr,
            }
        } else {
            ClientError::Io {
                url: self.url.clone(),
                addr: self.addr,
                context,
                source: e,
            }
        }
    }
}

fn resolve(url: &str, host: &str, port: u16) -> Result<SocketAddr, ClientError> {
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|source| ClientError::Resolve {
            url: url.to_string(),
            host: host.to_string(),
            source,
        })?;
    addrs.next().ok_or_else(|| ClientError::NoAddress {
        url: url.to_string(),
        host: host.to_string(),
    })
}

#[derive(Debug)]
struct TierTracker {
    url: String,
    url_data: Vec<u8>,
    client: Option<TrackerClient>,
}

/// A tracker answer, naming the tracker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierAnswer {
    pub tracker: String,
    pub reply: AnnounceReply,
}

/// BEP 12 tiers of UDP trackers.
#[derive(Debug)]
pub struct Announcer {
    tiers: Vec<Vec<TierTracker>>,
    policy: RetryPolicy,
}

impl Announcer {
    /// Keeps the `udp://` URLs that parse (others are skipped with a warning), drops empty
    /// tiers, and shuffles each tier once.
    pub fn new(tiers: Vec<Vec<String>>, policy: RetryPolicy) -> Announcer {
        Announcer::with_place(tiers, policy, None, None)
    }

    /// [`Announcer::new`], with `dc=` / `rack=` added to every tracker's URL data.
    pub fn with_place(
        tiers: Vec<Vec<String>>,
        policy: RetryPolicy,
        dc: Option<&str>,
        rack: Option<&str>,
    ) -> Announcer {
        let mut rng = rand::rng();
        let tiers = tiers
            .into_iter()
            .map(|tier| {
                let mut kept: Vec<TierTracker> = tier
                    .into_iter()
                    .filter_map(|url| match proto::parse_udp_url(&url) {
                        Ok(p) => Some(TierTracker {
                            url_data: proto::url_data_with_place(&p.url_data, dc, rack),
                            url,
                            client: None,
                        }),
                        Err(e) => {
                            tracing::warn!(
                                "skipping tracker: {e}; only udp:// trackers are supported"
                            );
                            None
                        }
                    })
                    .collect();
                kept.shuffle(&mut rng);
                kept
            })
            .filter(|t| !t.is_empty())
            .collect();
        Announcer { tiers, policy }
    }

    pub fn tier_count(&self) -> usize {
        self.tiers.len()
    }

    /// The tracker URLs, tier by tier, in their current order.
    pub fn tiers(&self) -> Vec<Vec<String>> {
        self.tiers
            .iter()
            .map(|t| t.iter().map(|e| e.url.clone()).collect())
            .collect()
    }

    /// Announces to one tier: its trackers in order until one answers, which then moves to
    /// the front of the tier.
    pub fn announce_tier(
        &mut self,
        tier: usize,
        args: &AnnounceArgs,
        cancel: &Cancel<'_>,
    ) -> Result<TierAnswer, TierError> {
        let mut policy = self.policy.clone();
        let trackers = self
            .tiers
            .get_mut(tier)
            .ok_or(TierError::NoSuchTier { tier })?;
        if trackers.len() > 1 {
            policy.max_n = policy.max_n.min(FAILOVER_MAX_N);
        }
        let mut errors = Vec::new();
        for i in 0..trackers.len() {
            let Some(entry) = trackers.get_mut(i) else {
                break;
            };
            if cancel.stopped() || cancel.deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(TierError::Cancelled { tier });
            }
            let client = match &mut entry.client {
                Some(c) => c,
                slot @ None => match TrackerClient::new(&entry.url, policy.clone()) {
                    Ok(mut c) => {
                        c.set_url_data(entry.url_data.clone());
                        slot.insert(c)
                    }
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                },
            };
            match client.announce(args, cancel) {
                Ok(reply) => {
                    let tracker = entry.url.clone();
                    if let Some(front) = trackers.get_mut(..=i) {
                        front.rotate_right(1);
                    }
                    return Ok(TierAnswer { tracker, reply });
                }
                Err(ClientError::Cancelled { .. }) => return Err(TierError::Cancelled { tier }),
                Err(e) => {
                    // Resolve afresh next time.
                    entry.client = None;
                    errors.push(e);
                }
            }
        }
        Err(TierError::AllFailed { tier, errors })
    }

    /// Announces to every tier in turn.
    pub fn announce_each_tier(
        &mut self,
        args: &AnnounceArgs,
        cancel: &Cancel<'_>,
    ) -> Vec<Result<TierAnswer, TierError>> {
        (0..self.tiers.len())
            .map(|t| self.announce_tier(t, args, cancel))
            .collect()
    }

    /// One announcer per tier.
    fn split(self) -> Vec<Announcer> {
        let policy = self.policy;
        self.tiers
            .into_iter()
            .map(|t| Announcer {
                tiers: vec![t],
                policy: policy.clone(),
            })
            .collect()
    }
}

/// Settings of [`spawn_announcer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceParams {
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
    /// Our listen port.
    pub port: u16,
    /// BEP 15 `key`: random per process by default.
    pub key: u32,
    /// -1 = the tracker's default.
    pub num_want: i32,
    /// Our datacenter and rack, sent as BEP 41 URL data `dc=` / `rack=`.
    pub dc: Option<String>,
    pub rack: Option<String>,
    pub retry: RetryPolicy,
    /// Re-announce no more often than this, whatever the tracker says (30 s).
    pub min_interval: Duration,
    /// Wait after a round where every tracker of a tier failed; doubles up to 30 min (15 s).
    pub failure_backoff: Duration,
    /// How often the stats are read to notice completion (1 s).
    pub poll: Duration,
    /// Longest wait for the `stopped` announces when stopping (2 s).
    pub stop_timeout: Duration,
}

impl AnnounceParams {
    pub fn new(info_hash: [u8; 20], peer_id: [u8; 20], port: u16) -> AnnounceParams {
        AnnounceParams {
            info_hash,
            peer_id,
            port,
            key: rand::random(),
            num_want: -1,
            dc: None,
            rack: None,
            retry: RetryPolicy::default(),
            min_interval: Duration::from_secs(30),
            failure_backoff: Duration::from_secs(15),
            poll: Duration::from_secs(1),
            stop_timeout: Duration::from_secs(2),
        }
    }
}

/// A stop flag with a condition variable to wake sleepers.
#[derive(Default)]
struct StopSignal {
    flag: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

impl StopSignal {
    fn set(&self) {
        self.flag.store(true, Ordering::Release);
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.cv.notify_all();
    }

    fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Sleeps up to `d`; true if stopped.
    fn wait(&self, d: Duration) -> bool {
        let deadline = Instant::now().checked_add(d);
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.is_set() {
                return true;
            }
            let left = match deadline {
                Some(t) => t.saturating_duration_since(Instant::now()),
                None => d,
            };
            if left.is_zero() {
                return false;
            }
            guard = match self.cv.wait_timeout(guard, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

/// Stops the announcer threads when dropped (sending `stopped`, waiting at most
/// [`AnnounceParams::stop_timeout`] plus a little).
pub struct AnnouncerHandle {
    stop: Arc<StopSignal>,
    done: mpsc::Receiver<()>,
    threads: usize,
    stop_timeout: Duration,
    stopped: bool,
}

impl std::fmt::Debug for AnnouncerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnouncerHandle")
            .field("tiers", &self.threads)
            .finish()
    }
}

impl AnnouncerHandle {
    /// Tiers being announced to (0: no usable tracker).
    pub fn tiers(&self) -> usize {
        self.threads
    }

    /// Sends `stopped` to every tier and waits (bounded) for the threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        self.stop.set();
        let now = Instant::now();
        let grace = self.stop_timeout.saturating_add(Duration::from_millis(250));
        let deadline = now.checked_add(grace).unwrap_or(now);
        for _ in 0..self.threads {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.done.recv_timeout(left).is_err() {
                tracing::debug!("announcer threads still busy at the stop deadline; leaving them");
                break;
            }
        }
    }
}

impl Drop for AnnouncerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Tells the handle a thread ended, however it ended.
struct DoneGuard(mpsc::Sender<()>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

type PeersFn = Arc<Mutex<dyn Fn(Vec<SocketAddr>) + Send>>;
type StatsFn = Arc<Mutex<dyn Fn() -> (u64, u64, u64, bool) + Send>>;

/// Announces in the background, one thread per tier (see the module doc).
///
/// `on_peers` gets each non-empty peer list; `stats` returns
/// `(downloaded, uploaded, left, complete)`. Only `udp://` trackers are used; check
/// [`AnnouncerHandle::tiers`] to see whether any was usable.
pub fn spawn_announcer(
    params: AnnounceParams,
    tiers: Vec<Vec<String>>,
    on_peers: impl Fn(Vec<SocketAddr>) + Send + 'static,
    stats: impl Fn() -> (u64, u64, u64, bool) + Send + 'static,
) -> AnnouncerHandle {
    let announcer = Announcer::with_place(
        tiers,
        params.retry.clone(),
        params.dc.as_deref(),
        params.rack.as_deref(),
    );
    let on_peers: PeersFn = Arc::new(Mutex::new(on_peers));
    let stats: StatsFn = Arc::new(Mutex::new(stats));
    let stop = Arc::new(StopSignal::default());
    let (done_tx, done) = mpsc::channel();
    let mut threads = 0;
    for (index, tier) in announcer.split().into_iter().enumerate() {
        let worker = TierWorker {
            announcer: tier,
            params: params.clone(),
            on_peers: on_peers.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
        };
        let guard = DoneGuard(done_tx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("rs-announce-{index}"))
            .spawn(move || {
                let _guard = guard;
                worker.run();
            });
        match spawned {
            Ok(_) => threads += 1,
            Err(e) => tracing::warn!("cannot start the announcer of tier {index}: {e}"),
        }
    }
    AnnouncerHandle {
        stop,
        done,
        threads,
        stop_timeout: params.stop_timeout,
        stopped: false,
    }
}

struct TierWorker {
    announcer: Announcer,
    params: AnnounceParams,
    on_peers: PeersFn,
    stats: StatsFn,
    stop: Arc<StopSignal>,
}

impl TierWorker {
    fn stats(&self) -> (u64, u64, u64, bool) {
        let f = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        (*f)()
    }

    fn args(&self, event: Event) -> AnnounceArgs {
        let (downloaded, uploaded, left, _) = self.stats();
        AnnounceArgs {
            info_hash: self.params.info_hash,
            peer_id: self.params.peer_id,
            downloaded,
            left,
            uploaded,
            event,
            key: self.params.key,
            num_want: self.params.num_want,
            port: self.params.port,
        }
    }

    fn run(mut self) {
        let mut started = false;
        let mut seen_incomplete = false;
        let mut completed_due = false;
        let mut completed_sent = false;
        let mut next = Instant::now();
        let mut backoff = self.params.failure_backoff;
        loop {
            if self.stop.is_set() {
                break;
            }
            // Bytes downloaded in this run count as having been incomplete: a small `get`
            // can finish before this thread first looks.
            let (downloaded, _, _, complete) = self.stats();
            if !complete || downloaded > 0 {
                seen_incomplete = true;
            }
            if complete && seen_incomplete && !completed_due {
                completed_due = true;
                if started {
                    next = Instant::now();
                }
            }
            let now = Instant::now();
            if now >= next {
                let event = if !started {
                    Event::Started
                } else if completed_due && !completed_sent {
                    Event::Completed
                } else {
                    Event::None
                };
                let args = self.args(event);
                let cancel = Cancel {
                    stop: Some(&self.stop.flag),
                    deadline: None,
                };
                match self.announcer.announce_tier(0, &args, &cancel) {
                    Ok(answer) => {
                        match event {
                            Event::Started => {
                                started = true;
                                if completed_due {
                                    next = Instant::now();
                                }
                            }
                            Event::Completed => completed_sent = true,
                            _ => {}
                        }
                        tracing::debug!(
                            tracker = %answer.tracker,
                            peers = answer.reply.peers.len(),
                            interval = answer.reply.interval,
                            ?event,
                            "announced"
                        );
                        backoff = self.params.failure_backoff;
                        let interval = Duration::from_secs(u64::from(answer.reply.interval)).clamp(
                            self.params.min_interval,
                            MAX_INTERVAL.max(self.params.min_interval),
                        );
                        if !(event == Event::Started && completed_due) {
                            next = Instant::now().checked_add(interval).unwrap_or(now);
                        }
                        if !answer.reply.peers.is_empty() {
                            let f = self.on_peers.lock().unwrap_or_else(|e| e.into_inner());
                            (*f)(answer.reply.peers);
                        }
                    }
                    Err(TierError::Cancelled { .. }) => break,
                    Err(e) => {
                        tracing::warn!("announce failed: {e}");
                        next = Instant::now().checked_add(backoff).unwrap_or(now);
                        backoff = backoff.saturating_mul(2).min(MAX_BACKOFF);
                    }
                }
                continue;
            }
            let wait = next.saturating_duration_since(now).min(self.params.poll);
            if self.stop.wait(wait) {
                break;
            }
        }
        if started {
            let now = Instant::now();
            let deadline = now.checked_add(self.params.stop_timeout).unwrap_or(now);
            let cancel = Cancel {
                stop: None,
                deadline: Some(deadline),
            };
            // A download that completed since the last poll (a `get` that exits as soon as
            // it is done) still says `completed` first, so the tracker's count is exact.
            let (downloaded, _, _, complete) = self.stats();
            if complete && (seen_incomplete || downloaded > 0) && !completed_sent {
                let args = self.args(Event::Completed);
                if let Err(e) = self.announcer.announce_tier(0, &args, &cancel) {
                    tracing::debug!("completed announce not delivered: {e}");
                }
            }
            let args = self.args(Event::Stopped);
            match self.announcer.announce_tier(0, &args, &cancel) {
                Ok(a) => tracing::debug!(tracker = %a.tracker, "announced stopped"),
                Err(e) => tracing::debug!("stopped announce not delivered: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, AtomicU64};

    #[derive(Default)]
    struct FakeConfig {
        /// Drop this many requests before answering any.
        drop_first: u32,
        /// Answer nothing after this many announces (None: always answer).
        mute_after_announces: Option<usize>,
        error: Option<String>,
        interval: u32,
        peers: Vec<SocketAddr>,
    }

    /// A tiny UDP tracker on 127.0.0.1 recording what it receives.
    struct Fake {
        addr: SocketAddr,
        log: Arc<Mutex<Vec<Request>>>,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Fake {
        fn start(config: FakeConfig) -> Fake {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let addr = socket.local_addr().unwrap();
            let log = Arc::new(Mutex::new(Vec::new()));
            let stop = Arc::new(AtomicBool::new(false));
            let (log2, stop2) = (log.clone(), stop.clone());
            let thread = std::thread::spawn(move || {
                let next_id = AtomicU64::new(1000);
                let dropped = AtomicU32::new(0);
                let mut buf = vec![0u8; 4096];
                let mut out = Vec::new();
                let mut announces = 0;
                while !stop2.load(Ordering::Acquire) {
                    let Ok((len, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    let Ok(req) = Request::decode(&buf[..len]) else {
                        continue;
                    };
                    log2.lock().unwrap().push(req.clone());
                    if dropped.load(Ordering::Relaxed) < config.drop_first {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if config.mute_after_announces.is_some_and(|m| announces >= m) {
                        continue;
                    }
                    let resp = match (&req, &config.error) {
                        (Request::Connect { transaction_id }, _) => Response::Connect {
                            transaction_id: *transaction_id,
                            connection_id: next_id.fetch_add(1, Ordering::Relaxed),
                        },
                        (r, Some(message)) => Response::Error {
                            transaction_id: r.transaction_id(),
                            message: message.clone(),
                        },
                        (Request::Announce(a), None) => {
                            announces += 1;
                            Response::Announce {
                                transaction_id: a.transaction_id,
                                interval: config.interval,
                                leechers: 1,
                                seeders: 2,
                                peers: config.peers.clone(),
                            }
                        }
                        (
                            Request::Scrape {
                                transaction_id,
                                info_hashes,
                                ..
                            },
                            None,
                        ) => Response::Scrape {
                            transaction_id: *transaction_id,
                            entries: vec![ScrapeEntry::default(); info_hashes.len()],
                        },
                    };
                    out.clear();
                    resp.encode_into(Family::of(&from), &mut out);
                    socket.send_to(&out, from).unwrap();
                }
            });
            Fake {
                addr,
                log,
                stop,
                thread: Some(thread),
            }
        }

        fn url(&self, path: &str) -> String {
            format!("udp://{}{path}", self.addr)
        }

        fn requests(&self) -> Vec<Request> {
            self.log.lock().unwrap().clone()
        }

        fn announces(&self) -> Vec<AnnounceRequest> {
            self.requests()
                .into_iter()
                .filter_map(|r| match r {
                    Request::Announce(a) => Some(a),
                    _ => None,
                })
                .collect()
        }

        fn connects(&self) -> usize {
            self.requests()
                .iter()
                .filter(|r| matches!(r, Request::Connect { .. }))
                .count()
        }

        /// Waits (up to 5 s) for an announce matching `f`.
        fn wait_for(&self, f: impl Fn(&AnnounceRequest) -> bool) -> bool {
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until {
                if self.announces().iter().any(&f) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            false
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Release);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(50),
            max_n: 3,
            connection_id_ttl: Duration::from_secs(60),
        }
    }

    fn args(event: Event) -> AnnounceArgs {
        AnnounceArgs {
            info_hash: [7; 20],
            peer_id: [8; 20],
            downloaded: 10,
            left: 20,
            uploaded: 30,
            event,
            key: 99,
            num_want: 50,
            port: 6881,
        }
    }

    /// A 127.0.0.1 port with nothing listening.
    fn dead_port() -> u16 {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn peers() -> Vec<SocketAddr> {
        vec![
            "127.0.0.1:7001".parse().unwrap(),
            "127.0.0.1:7002".parse().unwrap(),
        ]
    }

    #[test]
    fn connect_and_announce() {
        let fake = Fake::start(FakeConfig {
            interval: 900,
            peers: peers(),
            ..Default::default()
        });
        let mut c = TrackerClient::new(&fake.url("/announce?x=1"), fast()).unwrap();
        let reply = c.announce(&args(Event::Started), &Cancel::none()).unwrap();
        assert_eq!(
            reply,
            AnnounceReply {
                interval: 900,
                leechers: 1,
                seeders: 2,
                peers: peers()
            }
        );
        let log = fake.requests();
        assert!(matches!(log[0], Request::Connect { .. }));
        let Request::Announce(a) = &log[1] else {
            panic!("{log:?}")
        };
        assert_eq!(a.connection_id, 1000);
        assert_eq!(a.event, Event::Started);
        assert_eq!(
            (a.info_hash, a.peer_id, a.port, a.num_want, a.key),
            ([7; 20], [8; 20], 6881, 50, 99)
        );
        assert_eq!((a.downloaded, a.left, a.uploaded, a.ip), (10, 20, 30, 0));
        assert_eq!(a.url_data.as_deref(), Some(&b"/announce?x=1"[..]));
        let entries = c.scrape(&[[1; 20], [2; 20]], &Cancel::none()).unwrap();
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn connection_id_is_reused_within_its_lifetime() {
        let fake = Fake::start(FakeConfig {
            interval: 900,
            ..Default::default()
        });
        let mut c = TrackerClient::new(&fake.url(""), fast()).unwrap();
        for _ in 0..3 {
            c.announce(&args(Event::None), &Cancel::none()).unwrap();
        }
        assert_eq!(fake.connects(), 1);
        let announces = fake.announces();
        assert_eq!(announces.len(), 3);
        assert!(announces.iter().all(|a| a.connection_id == 1000));
        assert!(announces.iter().all(|a| a.url_data.is_none()));
        // An expired id means a new connect.
        let mut policy = fast();
        policy.connection_id_ttl = Duration::ZERO;
        let mut c = TrackerClient::new(&fake.url(""), policy).unwrap();
        c.announce(&args(Event::None), &Cancel::none()).unwrap();
        c.announce(&args(Event::None), &Cancel::none()).unwrap();
        assert_eq!(fake.connects(), 3);
    }

    #[test]
    fn retransmits_after_a_dropped_packet() {
        let fake = Fake::start(FakeConfig {
            drop_first: 1,
            interval: 900,
            ..Default::default()
        });
        let mut c = TrackerClient::new(&fake.url(""), fast()).unwrap();
        let t = Instant::now();
        c.announce(&args(Event::None), &Cancel::none()).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert_eq!(fake.connects(), 2);
        assert_eq!(fake.announces().len(), 1);
    }

    #[test]
    fn gives_up_after_the_schedule() {
        let fake = Fake::start(FakeConfig {
            drop_first: u32::MAX,
            ..Default::default()
        });
        let policy = RetryPolicy {
            base: Duration::from_millis(10),
            max_n: 2,
            ..fast()
        };
        let mut c = TrackerClient::new(&fake.url(""), policy).unwrap();
        let err = c.announce(&args(Event::None), &Cancel::none()).unwrap_err();
        // 10 + 20 + 40 ms.
        assert!(
            matches!(err, ClientError::Timeout { attempts: 3, waited, .. } if waited >= Duration::from_millis(70)),
            "{err}"
        );
        assert_eq!(fake.connects(), 3);
    }

    #[test]
    fn stop_flag_ends_a_wait() {
        let fake = Fake::start(FakeConfig {
            drop_first: u32::MAX,
            ..Default::default()
        });
        let mut c = TrackerClient::new(&fake.url(""), RetryPolicy::default()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            s.store(true, Ordering::Release);
        });
        let start = Instant::now();
        let cancel = Cancel {
            stop: Some(&stop),
            deadline: None,
        };
        let err = c.announce(&args(Event::None), &cancel).unwrap_err();
        assert!(matches!(err, ClientError::Cancelled { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
        t.join().unwrap();
    }

    #[test]
    fn error_response_is_surfaced() {
        let fake = Fake::start(FakeConfig {
            error: Some("torrent not allowed".into()),
            ..Default::default()
        });
        let url = fake.url("/announce");
        let mut c = TrackerClient::new(&url, fast()).unwrap();
        let err = c.announce(&args(Event::None), &Cancel::none()).unwrap_err();
        assert!(
            matches!(&err, ClientError::Tracker { message, .. } if message == "torrent not allowed")
        );
        let text = err.to_string();
        assert!(
            text.contains(&url) && text.contains("torrent not allowed"),
            "{text}"
        );
    }

    #[test]
    fn refused_port_fails_fast() {
        let url = format!("udp://127.0.0.1:{}", dead_port());
        let mut c = TrackerClient::new(&url, RetryPolicy::default()).unwrap();
        let t = Instant::now();
        let err = c.announce(&args(Event::None), &Cancel::none()).unwrap_err();
        assert!(matches!(err, ClientError::Refused { .. }), "{err}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn tier_failover_moves_the_answering_tracker_first() {
        let fake = Fake::start(FakeConfig {
            interval: 900,
            peers: peers(),
            ..Default::default()
        });
        let live = fake.url("/announce");
        let dead = format!("udp://127.0.0.1:{}/announce", dead_port());
        for _ in 0..4 {
            let mut a = Announcer::new(
                vec![vec![
                    dead.clone(),
                    live.clone(),
                    "http://x:1/announce".into(),
                ]],
                fast(),
            );
            assert_eq!(a.tiers()[0].len(), 2);
            let answer = a
                .announce_tier(0, &args(Event::None), &Cancel::none())
                .unwrap();
            assert_eq!(answer.tracker, live);
            assert_eq!(answer.reply.peers, peers());
            assert_eq!(a.tiers()[0][0], live);
        }
        // A tier where nothing answers names every tracker.
        let mut a = Announcer::new(vec![vec![dead.clone()]], fast());
        let err = a
            .announce_tier(0, &args(Event::None), &Cancel::none())
            .unwrap_err();
        assert!(err.to_string().contains(&dead), "{err}");
    }

    #[test]
    fn each_tier_is_announced_and_others_skipped() {
        let (f1, f2) = (
            Fake::start(FakeConfig {
                interval: 900,
                ..Default::default()
            }),
            Fake::start(FakeConfig {
                interval: 900,
                ..Default::default()
            }),
        );
        let mut a = Announcer::with_place(
            vec![
                vec![f1.url("/a")],
                vec!["wss://tracker:1".into()],
                vec![f2.url("")],
            ],
            fast(),
            Some("lon3"),
            Some("r07"),
        );
        assert_eq!(a.tier_count(), 2);
        let results = a.announce_each_tier(&args(Event::Started), &Cancel::none());
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        assert_eq!(
            f1.announces()[0].url_data.as_deref(),
            Some(&b"/a?dc=lon3&rack=r07"[..])
        );
        assert_eq!(
            f2.announces()[0].url_data.as_deref(),
            Some(&b"?dc=lon3&rack=r07"[..])
        );
        assert!(matches!(
            a.announce_tier(5, &args(Event::None), &Cancel::none()),
            Err(TierError::NoSuchTier { tier: 5 })
        ));
    }

    fn params() -> AnnounceParams {
        let mut p = AnnounceParams::new([7; 20], [8; 20], 6881);
        p.retry = fast();
        p.min_interval = Duration::ZERO;
        p.failure_backoff = Duration::from_millis(50);
        p.poll = Duration::from_millis(20);
        p.stop_timeout = Duration::from_millis(500);
        p.dc = Some("lon3".into());
        p
    }

    #[test]
    fn background_announcer_lifecycle() {
        let fake = Fake::start(FakeConfig {
            interval: 1,
            peers: peers(),
            ..Default::default()
        });
        let complete = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let c = complete.clone();
        let handle = spawn_announcer(
            params(),
            vec![vec![fake.url("/announce")], vec!["http://x:1/a".into()]],
            move |p| {
                let _ = tx.send(p);
            },
            move || {
                let done = c.load(Ordering::Acquire);
                (5, 6, if done { 0 } else { 100 }, done)
            },
        );
        assert_eq!(handle.tiers(), 1);
        assert!(fake.wait_for(|a| a.event == Event::Started));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), peers());
        let first = &fake.announces()[0];
        assert_eq!(first.left, 100);
        assert_eq!(first.url_data.as_deref(), Some(&b"/announce?dc=lon3"[..]));
        complete.store(true, Ordering::Release);
        assert!(fake.wait_for(|a| a.event == Event::Completed && a.left == 0));
        // Re-announces on the 1 s interval, without repeating `completed`.
        let n = fake.announces().len();
        assert!(fake.wait_for(|_| fake.announces().len() > n));
        let t = Instant::now();
        drop(handle);
        assert!(t.elapsed() < Duration::from_secs(2));
        let events: Vec<Event> = fake.announces().iter().map(|a| a.event).collect();
        assert_eq!(events.iter().filter(|e| **e == Event::Started).count(), 1);
        assert_eq!(
            events.iter().filter(|e| **e == Event::Completed).count(),
            1,
            "{events:?}"
        );
        assert_eq!(events.last(), Some(&Event::Stopped), "{events:?}");
        assert!(events.contains(&Event::None), "{events:?}");
    }

    #[test]
    fn completion_just_before_stop_is_announced_before_stopped() {
        let fake = Fake::start(FakeConfig {
            interval: 3600,
            ..Default::default()
        });
        let complete = Arc::new(AtomicBool::new(false));
        let c = complete.clone();
        let mut p = params();
        // The poll never notices the completion: only the stop path can announce it.
        p.poll = Duration::from_secs(3600);
        let handle = spawn_announcer(
            p,
            vec![vec![fake.url("")]],
            |_| {},
            move || {
                let done = c.load(Ordering::Acquire);
                (5, 0, if done { 0 } else { 100 }, done)
            },
        );
        assert!(fake.wait_for(|a| a.event == Event::Started));
        complete.store(true, Ordering::Release);
        handle.stop();
        let events: Vec<Event> = fake.announces().iter().map(|a| a.event).collect();
        assert_eq!(
            events,
            vec![Event::Started, Event::Completed, Event::Stopped],
            "{events:?}"
        );
    }

    #[test]
    fn seed_never_sends_completed_and_stop_is_bounded() {
        // The tracker answers `started`, then goes silent: `stopped` cannot be delivered.
        let fake = Fake::start(FakeConfig {
            interval: 3600,
            mute_after_announces: Some(1),
            ..Default::default()
        });
        let handle = spawn_announcer(
            params(),
            vec![vec![fake.url("")]],
            |_| {},
            || (0, 0, 0, true),
        );
        assert!(fake.wait_for(|a| a.event == Event::Started));
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        handle.stop();
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        let events: Vec<Event> = fake.announces().iter().map(|a| a.event).collect();
        assert!(!events.contains(&Event::Completed), "{events:?}");
        assert!(events.contains(&Event::Stopped), "{events:?}");
    }

    #[test]
    fn no_usable_tracker() {
        let handle = spawn_announcer(
            params(),
            vec![vec!["http://a:1/announce".into()], vec![]],
            |_| {},
            || (0, 0, 0, false),
        );
        assert_eq!(handle.tiers(), 0);
        let t = Instant::now();
        drop(handle);
        assert!(t.elapsed() < Duration::from_millis(100));
    }
}
