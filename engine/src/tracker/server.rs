//! The tracker server: BEP 15 over UDP on the io_uring reactor, one pinned worker per core.
//!
//! Each worker has its own SO_REUSEPORT socket, a multishot `recvmsg` into provided
//! buffers, and answers encoded in place into reusable reply slots, sent as
//! `IORING_OP_SEND` ops submitted together once per loop turn; a busy worker wakes once per
//! batch of datagrams (io_uring's minimum-batch wait). The
//! kernel spreads datagrams by source address, not by torrent, so the swarm state is
//! sharded by info-hash into one [`Store`] per core behind a mutex: a worker locks the shard
//! of the torrent it serves (uncontended with one core, briefly contended with several).
//! Connection ids need no shared state: every worker checks them with the same key.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::limits::Limits;
use super::proto::{self, Request, Response};
use super::store::{AnnounceIn, ConnectionIds, Store, StoreConfig};
use super::topology::Topology;
use crate::heartbeat::Heartbeat;
use crate::reactor::{self, udp, BufRing, PiecePool, Ring};

mod view;

const RECV_GROUP: u16 = 0;
const TOKEN_RECV: u64 = 1;
const TOKEN_SEND: u64 = 2 << 56;
const TOKEN_REPLY: u64 = 3 << 56;
/// Largest datagram we read: a scrape of 74 hashes is 16 + 74 × 20 = 1496 bytes; BEP 41
/// options may add up to 255 more.
const DATAGRAM_BUF: u32 = 2048;
const TICK: Duration = Duration::from_millis(100);
/// Peers examined for expiry per shard per tick.
const EXPIRE_BUDGET: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Topology(#[from] super::topology::TopologyError),
    #[error("{0}")]
    Config(String),
}

/// `ringswarm tracker` settings.
#[derive(Clone, Debug)]
pub struct TrackerConfig {
    pub listen: SocketAddr,
    pub topology: Option<PathBuf>,
    /// Worker threads; 0 = online CPUs.
    pub cores: usize,
    /// Receive buffer asked for on each socket, bytes (see `udp::grow_receive_buffer`).
    pub recv_buffer: usize,
    pub store: StoreConfig,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            listen: "0.0.0.0:6969".parse().expect("a valid literal"),
            topology: None,
            cores: 0,
            recv_buffer: 8 << 20,
            store: StoreConfig::default(),
        }
    }
}

/// Counters over all workers.
#[derive(Debug, Default)]
pub struct ServerCounters {
    pub packets: AtomicU64,
    pub responses: AtomicU64,
    /// Datagrams that are not a valid request: ignored.
    pub garbage: AtomicU64,
    /// Announces and scrapes with a connection id we did not issue: dropped.
    pub bad_connection_ids: AtomicU64,
    pub refused: AtomicU64,
}

/// A running tracker.
pub struct TrackerServer {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// One per worker, beaten each turn of its loop, for the watchdog.
    heartbeats: Vec<Arc<Heartbeat>>,
    workers: Vec<JoinHandle<()>>,
    counters: Arc<ServerCounters>,
    shards: Arc<Vec<Mutex<Store>>>,
    /// For the names of places in the fleet view ([`view`]).
    topology: Arc<RwLock<Topology>>,
    _topology_refresh: Option<super::TopologyRefresh>,
    /// The fleet view's recent answers ([`view`]).
    answers: view::Answers,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let context = context.into();
    move |source| ServerError::Io { context, source }
}

/// Seconds since the epoch (the store's clock).
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn shard_of(info_hash: &[u8; 20], shards: usize) -> usize {
    let mut h = [0u8; 8];
    h.copy_from_slice(&info_hash[..8]);
    (u64::from_le_bytes(h) % shards.max(1) as u64) as usize
}

impl TrackerServer {
    pub fn start(config: TrackerConfig) -> Result<TrackerServer, ServerError> {
        let cores = if config.cores == 0 {
            reactor::online_cpus()
        } else {
            config.cores
        };
        let (text, mut topology) = match &config.topology {
            Some(p) => super::read_topology(p)?,
            None => (String::new(), Topology::empty()),
        };
        topology.set_max_names_per_source(config.store.max_url_names_per_address);
        let topology = Arc::new(RwLock::new(topology));
        // A topology URL is read again while the tracker runs (the origin's copy follows
        // the feed); a file is read once.
        let topology_refresh = match config.topology.as_deref().and_then(super::topology_url) {
            Some(url) => Some(
                super::TopologyRefresh::start(
                    url.to_owned(),
                    &text,
                    super::TOPOLOGY_REFRESH_EVERY,
                    topology.clone(),
                    config.store.max_url_names_per_address,
                )
                .map_err(io_err("spawning the topology refresher"))?,
            ),
            None => None,
        };
        // One key for every shard: a connect answered by one core is valid on all.
        let key: u128 = rand::random();
        // One peer cap and one creation budget for every shard: torrents are sharded by
        // info-hash, so one source's torrents and the total span every shard.
        let limits = Arc::new(Limits::new(
            config.store.max_peers,
            config.store.max_new_torrents_per_address,
        ));
        let shards: Arc<Vec<Mutex<Store>>> = Arc::new(
            (0..cores)
                .map(|_| {
                    Mutex::new(Store::with_limits(
                        config.store.clone(),
                        ConnectionIds::with_key(key, 60),
                        limits.clone(),
                    ))
                })
                .collect(),
        );
        let ids = ConnectionIds::with_key(key, 60);
        crate::reactor::net::ensure_udp_port_free(config.listen)
            .map_err(io_err(format!("listening on udp {}", config.listen)))?;
        let first = udp::udp_socket(config.listen, true)
            .map_err(io_err(format!("listening on udp {}", config.listen)))?;
        let local_addr = socket2::SockRef::from(&first)
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .ok_or_else(|| ServerError::Config("cannot read the bound address".into()))?;
        let mut sockets = vec![first];
        for _ in 1..cores {
            sockets.push(
                udp::udp_socket(local_addr, true)
                    .map_err(io_err(format!("listening on udp {local_addr}")))?,
            );
        }
        for s in &sockets {
            let got = udp::grow_receive_buffer(s, config.recv_buffer);
            tracing::debug!(
                asked = config.recv_buffer,
                got,
                "tracker socket receive buffer"
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(ServerCounters::default());
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(cores);
        let mut workers = Vec::new();
        let mut heartbeats = Vec::new();
        for (index, socket) in sockets.into_iter().enumerate() {
            let heartbeat = Arc::new(Heartbeat::default());
            heartbeats.push(heartbeat.clone());
            let w = TrackerWorker {
                index,
                socket,
                shards: shards.clone(),
                ids: ids.clone(),
                topology: topology.clone(),
                stop: stop.clone(),
                counters: counters.clone(),
                peers: Vec::with_capacity(256),
                next_send: 0,
                heartbeat,
            };
            let ready = ready_tx.clone();
            let online = reactor::online_cpus();
            let h = std::thread::Builder::new()
                .name(format!("rs-tracker-{index}"))
                .spawn(move || {
                    if cores <= online {
                        reactor::pin_to_cpu(index);
                    }
                    w.run(ready)
                })
                .map_err(io_err("spawning a tracker worker"))?;
            workers.push(h);
        }
        let server = TrackerServer {
            local_addr,
            stop,
            heartbeats,
            workers,
            counters,
            shards,
            topology,
            _topology_refresh: topology_refresh,
            answers: view::Answers::default(),
        };
        for _ in 0..cores {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(ServerError::Io {
                        context: "setting up io_uring".into(),
                        source: e,
                    })
                }
                Err(_) => return Err(ServerError::Config("a tracker worker died at start".into())),
            }
        }
        Ok(server)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether every worker's loop turned within `max_age` (see [`crate::heartbeat`]).
    pub fn workers_fresh(&self, max_age: Duration) -> bool {
        crate::heartbeat::all_fresh(
            self.heartbeats.iter().map(|h| &**h),
            Instant::now(),
            max_age,
        )
    }

    pub fn counters(&self) -> &ServerCounters {
        &self.counters
    }

    /// Torrents and peers tracked, over all shards.
    pub fn sizes(&self) -> (usize, usize) {
        self.shards
            .iter()
            .filter_map(|s| s.lock().ok())
            .fold((0, 0), |(t, p), s| {
                (t + s.torrent_count(), p + s.peer_count())
            })
    }

    /// Stops the workers and waits for them (within a tick).
    pub fn shutdown(mut self) {
        self.stop_workers();
    }

    fn stop_workers(&mut self) {
        self.stop.store(true, Ordering::Release);
        for w in self.workers.drain(..) {
            w.join().ok();
        }
    }
}

impl Drop for TrackerServer {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

struct TrackerWorker {
    index: usize,
    socket: OwnedFd,
    shards: Arc<Vec<Mutex<Store>>>,
    ids: ConnectionIds,
    /// Shared: places named in URL data are interned at run time, and every core must
    /// give a name the same id. Subnet lookups take the read lock only.
    topology: Arc<RwLock<Topology>>,
    stop: Arc<AtomicBool>,
    counters: Arc<ServerCounters>,
    /// Reused peer-list buffer.
    peers: Vec<SocketAddr>,
    /// Token counter of replies sent from owned buffers (when every slot is in flight).
    next_send: u64,
    heartbeat: Arc<Heartbeat>,
}

/// Replies in flight per worker; beyond this (a reap of thousands) replies fall back to an
/// owned buffer each.
const REPLY_SLOTS: usize = 4096;
/// A typical answer (50 IPv4 peers) is 320 bytes; bigger ones grow their slot once.
const REPLY_CAPACITY: usize = 512;
/// Once a datagram is waiting, wait this long for a batch of them: a busy tracker wakes
/// once per batch instead of once per datagram; an idle one answers within it.
const BATCH: usize = 32;
const BATCH_WAIT: Duration = Duration::from_micros(50);

impl TrackerWorker {
    fn run(mut self, ready: crossbeam_channel::Sender<std::io::Result<()>>) {
        let setup = Ring::new(4096).and_then(|ring| {
            let bufs = BufRing::new(&ring, RECV_GROUP, 4096, DATAGRAM_BUF)?;
            Ok((ring, bufs))
        });
        let (mut ring, mut bufs) = match setup {
            Ok(x) => {
                ready.send(Ok(())).ok();
                x
            }
            Err(e) => {
                ready.send(Err(e)).ok();
                return;
            }
        };
        let mut pool = PiecePool::new(0);
        let mut replies = udp::ReplySlots::new(REPLY_SLOTS, REPLY_CAPACITY, TOKEN_REPLY);
        let fd = self.socket.as_raw_fd();
        ring.recvmsg_multi(fd, RECV_GROUP, TOKEN_RECV);
        let mut done = Vec::with_capacity(4096);
        let mut next_tick = Instant::now() + TICK;
        while !self.stop.load(Ordering::Acquire) {
            self.heartbeat.beat();
            let wait = next_tick
                .saturating_duration_since(Instant::now())
                .max(Duration::from_micros(1));
            if let Err(e) = ring.submit_and_wait_batch(BATCH, BATCH_WAIT, wait) {
                tracing::error!(worker = self.index, err = %e, "io_uring wait failed");
                std::thread::sleep(Duration::from_millis(10));
            }
            ring.reap(&mut pool, &mut done);
            let now = now_secs();
            let (mut packets, mut answered) = (0u64, 0u64);
            for c in done.drain(..) {
                if c.token != TOKEN_RECV {
                    // A send finished: its slot (or owned buffer) is free again.
                    replies.complete(c.token);
                    continue;
                }
                let bid = io_uring::cqueue::buffer_select(c.flags);
                if let (true, Some(bid)) = (c.result > 0, bid) {
                    if let Some((from, payload)) =
                        udp::parse_datagram(bufs.get(bid, c.result as usize))
                    {
                        packets += 1;
                        match replies.buffer() {
                            Some(out) => {
                                if self.handle(from, payload, now, out) {
                                    replies.send(&mut ring, fd, from);
                                    answered += 1;
                                }
                            }
                            None => {
                                let mut out = Vec::with_capacity(REPLY_CAPACITY);
                                if self.handle(from, payload, now, &mut out) {
                                    self.next_send =
                                        self.next_send.wrapping_add(1) & ((1 << 56) - 1);
                                    ring.send_to(fd, from, out, TOKEN_SEND | self.next_send);
                                    answered += 1;
                                }
                            }
                        }
                    }
                }
                if let Some(bid) = bid {
                    bufs.recycle(bid);
                }
                if !io_uring::cqueue::more(c.flags) && !self.stop.load(Ordering::Acquire) {
                    ring.recvmsg_multi(fd, RECV_GROUP, TOKEN_RECV);
                }
            }
            self.counters.packets.fetch_add(packets, Ordering::Relaxed);
            self.counters
                .responses
                .fetch_add(answered, Ordering::Relaxed);
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + TICK;
                if let Some(Ok(mut shard)) = self.shards.get(self.index).map(|s| s.lock()) {
                    shard.expire(now, EXPIRE_BUDGET);
                }
            }
        }
        // Ops still in flight point at `bufs` and the reply slots: stop receiving, then give
        // the kernel a moment before letting go; if it does not finish, leak.
        // On an unconnected UDP socket shutdown(2) says ENOTCONN but still ends pending
        // receives, which is all we want.
        crate::reactor::net::shutdown(&self.socket);
        let deadline = Instant::now() + Duration::from_secs(1);
        while ring.in_flight() > 0 && Instant::now() < deadline {
            ring.submit_and_wait(Duration::from_millis(10)).ok();
            ring.reap(&mut pool, &mut done);
            for c in done.drain(..) {
                replies.complete(c.token);
                if let Some(bid) = io_uring::cqueue::buffer_select(c.flags) {
                    bufs.recycle(bid);
                }
            }
        }
        if ring.in_flight() > 0 {
            ring.leak_in_flight();
            std::mem::forget(bufs);
            std::mem::forget(replies);
        }
    }

    /// Answers one datagram into `out`; false when there is nothing to send.
    fn handle(&mut self, from: SocketAddr, payload: &[u8], now: u64, out: &mut Vec<u8>) -> bool {
        out.clear();
        let request = match Request::decode(payload) {
            Ok(r) => r,
            Err(_) => {
                self.counters.garbage.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        };
        let family = proto::Family::of(&from);
        let response = match request {
            Request::Connect { transaction_id } => Response::Connect {
                transaction_id,
                connection_id: self.ids.issue(from, now),
            },
            Request::Announce(a) => {
                if !self.ids.check(a.connection_id, from, now) {
                    self.counters
                        .bad_connection_ids
                        .fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                let (url_dc, url_rack) = a
                    .url_data
                    .as_deref()
                    .map(proto::place_from_url_data)
                    .unwrap_or_default();
                let known = self.topology.read().ok().and_then(|t| t.lookup(from.ip()));
                let place = match known {
                    Some(p) => p,
                    None => match self.topology.write() {
                        Ok(mut t) => t.resolve(from.ip(), url_dc.as_deref(), url_rack.as_deref()),
                        Err(_) => return false,
                    },
                };
                let req = AnnounceIn::from_packet(&a, from, place);
                let shard = shard_of(&a.info_hash, self.shards.len());
                let result = match self.shards[shard].lock() {
                    Ok(mut store) => store.announce(&req, now, &mut self.peers),
                    Err(_) => return false,
                };
                match result {
                    Ok(out) => Response::Announce {
                        transaction_id: a.transaction_id,
                        interval: out.interval,
                        leechers: out.leechers,
                        seeders: out.seeders,
                        peers: std::mem::take(&mut self.peers),
                    },
                    Err(e) => {
                        self.counters.refused.fetch_add(1, Ordering::Relaxed);
                        Response::Error {
                            transaction_id: a.transaction_id,
                            message: e.to_string(),
                        }
                    }
                }
            }
            Request::Scrape {
                connection_id,
                transaction_id,
                info_hashes,
            } => {
                if !self.ids.check(connection_id, from, now) {
                    self.counters
                        .bad_connection_ids
                        .fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                let entries = info_hashes
                    .iter()
                    .map(|h| {
                        let shard = shard_of(h, self.shards.len());
                        let c = self.shards[shard]
                            .lock()
                            .map(|mut s| s.scrape(h))
                            .unwrap_or_default();
                        proto::ScrapeEntry {
                            seeders: c.seeders,
                            completed: c.completed,
                            leechers: c.leechers,
                        }
                    })
                    .collect();
                Response::Scrape {
                    transaction_id,
                    entries,
                }
            }
        };
        response.encode_into(family, out);
        if let Response::Announce { peers, .. } = response {
            self.peers = peers; // keep the allocation
        }
        true
    }
}
