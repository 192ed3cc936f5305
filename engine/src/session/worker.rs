//! One worker per core: its ring, its connections, its piece buffers. A driver: every swarm
//! decision is the swarm core's ([`ringswarm_swarm::Swarm`], one per torrent on this core);
//! the worker turns the core's actions into ring submissions and completions into the
//! core's inputs.
//!
//! Receive path: multishot recv into a provided buffer → [`Framer`] → block data copied once
//! into the piece buffer the core names (a registered pool slot) → when whole: SHA-1 on the
//! hash pool → `WriteFixed` (O_DIRECT) → on completion the core marks it verified, HAVE goes
//! to every peer on every core, and the buffer stays in a small cache of recent pieces so
//! relaying reads nothing from disk ([`disk`]).
//!
//! Send path ([`uploads`]): the blocks a peer asked for are served from that cache, else
//! the piece is read with `ReadFixed` into a pool slot (and cached); blocks are gathered
//! into one `sendmsg` of header/data iovecs straight from the slot.

mod disk;
mod failed;
mod once_per_host;
mod uploads;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use io_uring::cqueue;
use ringswarm_swarm::limits::RateLimiter;
use ringswarm_swarm::{Action, Config, PeerId, PeerInfo, PeerKey, Swarm};

use super::failures::PeerFailureReason;
use super::limits::ConnectionLimits;
use super::torrent::TorrentShared;
use crate::reactor::{net, BufRing, Completion, EventFd, HashDone, HashPool, PiecePool, Ring};
use crate::wire::{self, Event, Framer, Handshake};
use disk::{CacheEntry, DiskJob, Hashing, Lender};
use once_per_host::OncePerHost;
use uploads::ReadRange;

/// Uncached ranges a connection's queue may start reading at once.
const READ_AHEAD_PIECES: usize = 4;
/// Bytes gathered into one sendmsg.
const SEND_BATCH_BYTES: usize = 1 << 20;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A send that makes no progress this long means the peer stopped reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Control bytes queued behind a stuck send before the peer is dropped (a peer that
/// never reads must not make us buffer without bound).
const MAX_CTRL_BACKLOG: usize = 1 << 20;
/// Connections per worker core.
const MAX_CONNS_PER_CORE: usize = 1024;
const KEEPALIVE_EVERY: Duration = Duration::from_secs(90);
/// The driver's own housekeeping (timeouts, keep-alives, accept re-arm); the cores' timers
/// come from their `poll_timeout`.
const TICK: Duration = Duration::from_millis(100);

const RECV_GROUP: u16 = 0;

// Token layout: kind in the top byte, a sub-sequence in bits 32..56, an index below.
const K_ACCEPT: u64 = 1;
const K_EVENTFD: u64 = 2;
const K_CONNECT: u64 = 3;
const K_RECV: u64 = 4;
const K_SEND: u64 = 5;
const K_CANCEL: u64 = 6;
const K_DISK: u64 = 7;

fn token(kind: u64, seq: u32, index: u32) -> u64 {
    (kind << 56) | ((u64::from(seq) & 0xff_ffff) << 32) | u64::from(index)
}

fn token_parts(t: u64) -> (u64, u32, u32) {
    (t >> 56, ((t >> 32) & 0xff_ffff) as u32, t as u32)
}

/// Messages from the session or other workers.
pub(crate) enum Command {
    AddTorrent(Arc<TorrentShared>),
    Connect {
        info_hash: [u8; 20],
        addr: SocketAddr,
    },
    /// Another core verified a piece.
    Have {
        info_hash: [u8; 20],
        piece: u32,
    },
    /// Another core started or stopped fetching a piece from outside the rack.
    Fetching {
        info_hash: [u8; 20],
        word: ringswarm_proto::extension::FetchingWord,
    },
    /// Stop serving a torrent: close its peers, let its disk and hash work finish, free
    /// its buffers, forget it, then say so on `done` (the files close with the last
    /// reference to its storage).
    RemoveTorrent {
        info_hash: [u8; 20],
        done: Sender<()>,
    },
    Shutdown,
}

/// Why a peer is dropped (logged): a malformed frame or the core's verdict.
struct DropPeer(String);

impl From<wire::WireError> for DropPeer {
    fn from(e: wire::WireError) -> Self {
        DropPeer(format!("malformed message: {e}"))
    }
}

impl From<String> for DropPeer {
    fn from(s: String) -> Self {
        DropPeer(s)
    }
}

/// How a worker reaches another.
#[derive(Clone)]
pub(crate) struct WorkerLink {
    pub tx: Sender<Command>,
    pub wake: Arc<EventFd>,
}

impl WorkerLink {
    pub fn send(&self, cmd: Command) {
        if self.tx.send(cmd).is_ok() {
            self.wake.wake();
        }
    }
}

pub(crate) struct WorkerConfig {
    pub index: usize,
    pub cpu: Option<usize>,
    pub peer_id: [u8; 20],
    pub listener: Option<OwnedFd>,
    pub listen_port: Option<u16>,
    /// The specific IP we listen on (outgoing connections leave from it), if any.
    pub source_ip: Option<IpAddr>,
    pub upload_slots: u32,
    pub piece_memory: usize,
    pub links: Arc<Vec<WorkerLink>>,
    pub rx: Receiver<Command>,
    pub wake: Arc<EventFd>,
    pub hasher: Arc<HashPool>,
    pub locator: super::SharedLocator,
    pub upload_limit: Option<Arc<RateLimiter>>,
    pub download_limit: Option<Arc<RateLimiter>>,
    pub conn_limits: Arc<ConnectionLimits>,
}

/// The worker-local side of a torrent: its swarm core and its upload reads.
struct LocalTorrent {
    shared: Arc<TorrentShared>,
    core: Swarm,
    /// Ranges of pieces being read from disk for uploads.
    reads: Vec<ReadRange>,
    /// Being removed: no new peers; told on this channel once forgotten.
    removing: Option<Sender<()>>,
}

enum Phase {
    Connecting,
    Handshaking { got: Vec<u8> },
    Active,
}

struct Conn {
    fd: OwnedFd,
    addr: SocketAddr,
    gen: u32,
    attempt: u32,
    /// We dialled it (its address is the one we were given, worth reporting on).
    outgoing: bool,
    phase: Phase,
    torrent: Option<usize>,
    /// The torrent's core knows this connection (it must hear when it closes).
    registered: bool,
    framer: Option<Framer>,
    ctrl_out: Vec<u8>,
    sending: bool,
    last_send: Instant,
    started: Instant,
}

impl Conn {
    fn key(&self, index: usize) -> PeerKey {
        PeerKey {
            index: index as u32,
            gen: self.gen,
        }
    }
}

pub(crate) struct Worker {
    // The ring is declared first so it is dropped before the memory its ops refer to.
    ring: Ring,
    recv_bufs: BufRing,
    ctx: Ctx,
}

/// Everything but the receive buffers, so a handler can borrow received bytes and the rest
/// of the worker at once.
struct Ctx {
    index: usize,
    peer_id: [u8; 20],
    listen_port: Option<u16>,
    source_ip: Option<IpAddr>,
    upload_slots: u32,
    listener: Option<OwnedFd>,
    pool: PiecePool,
    torrents: Vec<LocalTorrent>,
    /// Recent pieces kept for uploads, of every torrent.
    cache: Vec<CacheEntry>,
    conns: Vec<Option<Conn>>,
    gens: Vec<u32>,
    free_conns: Vec<usize>,
    disk_jobs: Vec<Option<DiskJob>>,
    links: Arc<Vec<WorkerLink>>,
    rx: Receiver<Command>,
    wake: Arc<EventFd>,
    hasher: Arc<HashPool>,
    hash_tx: Sender<HashDone>,
    hash_rx: Receiver<HashDone>,
    /// Pieces out for hashing, by job tag.
    hashing: HashMap<u64, Hashing>,
    next_hash_tag: u64,
    clock: u64,
    shutting_down: bool,
    /// The multishot accept stopped for lack of descriptors; re-armed at the next tick.
    accept_paused: bool,
    /// Connections whose send queue may have work (pumped once per loop turn).
    dirty: Vec<usize>,
    locator: super::SharedLocator,
    upload_limit: Option<Arc<RateLimiter>>,
    download_limit: Option<Arc<RateLimiter>>,
    conn_limits: Arc<ConnectionLimits>,
}

impl Worker {
    pub fn new(cfg: WorkerConfig) -> std::io::Result<Worker> {
        if let Some(cpu) = cfg.cpu {
            crate::reactor::pin_to_cpu(cpu);
        }
        let ring = Ring::new(1024)?;
        let recv_bufs = BufRing::new(&ring, RECV_GROUP, 256, 64 * 1024)?;
        let (hash_tx, hash_rx) = crossbeam_channel::unbounded();
        let ctx = Ctx {
            hasher: cfg.hasher,
            hash_tx,
            hash_rx,
            hashing: HashMap::new(),
            next_hash_tag: 0,
            index: cfg.index,
            peer_id: cfg.peer_id,
            listen_port: cfg.listen_port,
            source_ip: cfg.source_ip,
            upload_slots: cfg.upload_slots,
            listener: cfg.listener,
            pool: PiecePool::new(cfg.piece_memory),
            torrents: Vec::new(),
            cache: Vec::new(),
            conns: Vec::new(),
            gens: Vec::new(),
            free_conns: Vec::new(),
            disk_jobs: Vec::new(),
            links: cfg.links,
            rx: cfg.rx,
            wake: cfg.wake,
            clock: 0,
            shutting_down: false,
            accept_paused: false,
            dirty: Vec::new(),
            locator: cfg.locator,
            upload_limit: cfg.upload_limit,
            download_limit: cfg.download_limit,
            conn_limits: cfg.conn_limits,
        };
        Ok(Worker {
            ring,
            recv_bufs,
            ctx,
        })
    }

    pub fn run(mut self) {
        let ring = &mut self.ring;
        let ctx = &mut self.ctx;
        if let Some(l) = &ctx.listener {
            ring.accept_multi(l.as_raw_fd(), token(K_ACCEPT, 0, 0));
        }
        ring.read_eventfd(ctx.wake.fd(), token(K_EVENTFD, 0, 0));
        let mut completions = Vec::with_capacity(256);
        let mut next_tick = Instant::now() + TICK;
        let mut shutdown_deadline: Option<Instant> = None;
        loop {
            let wake_at = ctx
                .next_core_timeout()
                .map_or(next_tick, |t| t.min(next_tick));
            let wait = wake_at.saturating_duration_since(Instant::now());
            if let Err(e) = ring.submit_and_wait(wait.max(Duration::from_micros(1))) {
                tracing::error!(worker = ctx.index, err = %e, "io_uring wait failed");
                std::thread::sleep(Duration::from_millis(10));
            }
            ring.reap(&mut ctx.pool, &mut completions);
            for c in completions.drain(..) {
                ctx.on_completion(ring, &mut self.recv_bufs, c);
            }
            ctx.drain_commands(ring);
            ctx.drain_hashes(ring);
            ctx.run_core_timers(ring);
            ctx.pump_dirty(ring);
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + TICK;
                ctx.tick(ring);
                ctx.pump_dirty(ring);
            }
            if ctx.shutting_down {
                let deadline = *shutdown_deadline
                    .get_or_insert_with(|| Instant::now() + Duration::from_secs(2));
                // Hash jobs read pool memory and always finish quickly: wait for them.
                if !ctx.hashing.is_empty() {
                    continue;
                }
                if ring.in_flight() == 0 {
                    break;
                }
                if Instant::now() >= deadline {
                    // The kernel still has ops on our buffers: leak them rather than free
                    // memory it may yet write.
                    tracing::warn!(
                        worker = ctx.index,
                        ops = ring.in_flight(),
                        "ops still in flight at exit; leaking their buffers"
                    );
                    let Worker {
                        ring,
                        recv_bufs,
                        ctx,
                    } = self;
                    ring.leak_in_flight();
                    std::mem::forget(recv_bufs);
                    std::mem::forget(ctx.pool);
                    return;
                }
            }
        }
    }
}

impl Ctx {
    fn torrent_index(&self, info_hash: &[u8; 20]) -> Option<usize> {
        self.torrents
            .iter()
            .position(|t| t.removing.is_none() && &t.shared.info_hash() == info_hash)
    }

    fn alive(&self, index: usize, gen: u32) -> bool {
        matches!(self.conns.get(index), Some(Some(c)) if c.gen == gen)
    }

    fn on_completion(&mut self, ring: &mut Ring, recv_bufs: &mut BufRing, c: Completion) {
        let (kind, seq, index) = token_parts(c.token);
        let index = index as usize;
        match kind {
            K_ACCEPT => self.on_accept(ring, c),
            K_EVENTFD if !self.shutting_down => {
                ring.read_eventfd(self.wake.fd(), token(K_EVENTFD, 0, 0))
            }
            K_CONNECT => self.on_connected(ring, index, seq, c.result),
            K_RECV => {
                let bid = cqueue::buffer_select(c.flags);
                if self.alive(index, seq) {
                    if c.result > 0 {
                        let data = bid.map_or(&[][..], |b| recv_bufs.get(b, c.result as usize));
                        self.on_data(ring, index, data);
                    } else if c.result == 0 {
                        if self.conns[index]
                            .as_ref()
                            .is_some_and(|c| matches!(c.phase, Phase::Handshaking { .. }))
                        {
                            self.peer_failed(index, PeerFailureReason::ClosedBeforeHandshake);
                        }
                        self.close(ring, index, "peer closed the connection");
                    } else if c.result != -libc::ENOBUFS {
                        let err = std::io::Error::from_raw_os_error(-c.result);
                        self.peer_failed(index, PeerFailureReason::from_io(&err));
                        self.close(ring, index, &format!("receive failed: {err}"));
                    }
                }
                if let Some(b) = bid {
                    recv_bufs.recycle(b);
                }
                if self.alive(index, seq) && !cqueue::more(c.flags) {
                    if let Some(conn) = self.conns[index].as_ref() {
                        ring.recv_multi(conn.fd.as_raw_fd(), recv_bufs.group(), c.token);
                    }
                }
            }
            K_SEND => {
                if !self.alive(index, seq) {
                    return;
                }
                if let Some(conn) = self.conns[index].as_mut() {
                    conn.sending = false;
                }
                if c.result < 0 {
                    let err = std::io::Error::from_raw_os_error(-c.result);
                    self.peer_failed(index, PeerFailureReason::from_io(&err));
                    self.close(ring, index, &format!("send failed: {err}"));
                } else {
                    self.dirty.push(index);
                }
            }
            K_DISK => self.on_disk(ring, index, seq as usize, c.result),
            _ => {}
        }
    }

    // ---- connections -------------------------------------------------------------------

    fn new_conn(&mut self, fd: OwnedFd, addr: SocketAddr, phase: Phase) -> usize {
        let index = self.free_conns.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.gens.push(0);
            self.conns.len() - 1
        });
        self.gens[index] = self.gens[index].wrapping_add(1) & 0xff_ffff;
        let now = Instant::now();
        self.conns[index] = Some(Conn {
            fd,
            addr,
            gen: self.gens[index],
            attempt: 1,
            outgoing: false,
            phase,
            torrent: None,
            registered: false,
            framer: Some(Framer::new(wire::DEFAULT_MAX_FRAME)),
            ctrl_out: Vec::new(),
            sending: false,
            last_send: now,
            started: now,
        });
        index
    }

    fn on_accept(&mut self, ring: &mut Ring, c: Completion) {
        if c.result < 0 {
            if !self.shutting_down && !cqueue::more(c.flags) {
                if matches!(
                    -c.result,
                    libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
                ) {
                    // Out of descriptors: try again at the next tick, not in a busy loop.
                    // Every core runs out at once: one line per host every 10 s.
                    static SAID: OncePerHost = OncePerHost::new();
                    if SAID.due(Duration::from_secs(10)) {
                        tracing::warn!(err = %std::io::Error::from_raw_os_error(-c.result), "accept failed; pausing");
                    }
                    self.accept_paused = true;
                } else if let Some(l) = &self.listener {
                    ring.accept_multi(l.as_raw_fd(), token(K_ACCEPT, 0, 0));
                }
            }
            return;
        }
        let fd = net::adopt(c.result);
        if !cqueue::more(c.flags) && !self.shutting_down {
            if let Some(l) = &self.listener {
                ring.accept_multi(l.as_raw_fd(), token(K_ACCEPT, 0, 0));
            }
        }
        if self.shutting_down {
            return;
        }
        if self.conns.len() - self.free_conns.len() >= MAX_CONNS_PER_CORE {
            tracing::debug!("connection limit reached; refusing a peer");
            return;
        }
        let Ok(addr) = net::peer_addr(&fd) else {
            return;
        };
        if !self.conn_limits.acquire(addr.ip()) {
            tracing::debug!(%addr, "peer limit reached; refusing a peer");
            return;
        }
        let now = Instant::now();
        if self
            .torrents
            .iter()
            .any(|t| t.shared.swarm.is_banned(addr.ip(), now))
        {
            self.conn_limits.release(addr.ip());
            tracing::debug!(%addr, "refused a banned peer");
            return;
        }
        net::tune_accepted(&fd);
        let raw = fd.as_raw_fd();
        let phase = Phase::Handshaking {
            got: Vec::with_capacity(68),
        };
        let index = self.new_conn(fd, addr, phase);
        let gen = self.gens[index];
        ring.recv_multi(raw, RECV_GROUP, token(K_RECV, gen, index as u32));
        tracing::debug!(worker = self.index, %addr, "accepted");
    }

    /// Dials `addr` for torrent `t` (the core asked for it).
    fn connect(&mut self, ring: &mut Ring, t: usize, addr: SocketAddr, attempt: u32) {
        if self.shutting_down || self.torrents[t].removing.is_some() {
            return;
        }
        let failed = |ctx: &mut Ctx, ring: &mut Ring| {
            ctx.torrents[t]
                .core
                .dial_failed(Instant::now(), addr, attempt);
            ctx.run_actions(ring, t);
        };
        if !self.conn_limits.acquire(addr.ip()) {
            tracing::debug!(%addr, "peer limit reached; not dialling");
            return failed(self, ring);
        }
        let fd = match net::stream_for(&addr, self.source_ip) {
            Ok(fd) => fd,
            Err(e) => {
                self.conn_limits.release(addr.ip());
                self.note_failure(t, addr, PeerFailureReason::Other(e.to_string()));
                return failed(self, ring);
            }
        };
        let raw = fd.as_raw_fd();
        let index = self.new_conn(fd, addr, Phase::Connecting);
        if let Some(conn) = self.conns[index].as_mut() {
            conn.torrent = Some(t);
            conn.attempt = attempt;
            conn.outgoing = true;
        }
        let gen = self.gens[index];
        ring.connect(raw, addr, token(K_CONNECT, gen, index as u32));
    }

    fn on_connected(&mut self, ring: &mut Ring, index: usize, seq: u32, result: i32) {
        if !self.alive(index, seq) {
            return;
        }
        let Some(conn) = self.conns[index].as_mut() else {
            return;
        };
        let (addr, attempt, torrent) = (conn.addr, conn.attempt, conn.torrent);
        let Some(t) = torrent else { return };
        if result < 0 {
            let err = std::io::Error::from_raw_os_error(-result);
            tracing::debug!(%addr, err = %err, attempt, "connect failed");
            self.note_failure(t, addr, PeerFailureReason::from_io(&err));
            self.release_conn(index);
            self.torrents[t]
                .core
                .dial_failed(Instant::now(), addr, attempt);
            self.run_actions(ring, t);
            return;
        }
        conn.phase = Phase::Handshaking {
            got: Vec::with_capacity(68),
        };
        conn.registered = true;
        let key = conn.key(index);
        let raw = conn.fd.as_raw_fd();
        let info = self.peer_info(index, true, attempt);
        self.note_dc_share(t, &info);
        ring.recv_multi(raw, RECV_GROUP, token(K_RECV, seq, index as u32));
        self.torrents[t]
            .core
            .peer_connected(Instant::now(), key, info);
        self.run_actions(ring, t);
    }

    /// Our rack's share of the pieces our dc fetches from other dcs, from the topology and
    /// our place as this connection shows it (kept current as the topology is reloaded).
    fn note_dc_share(&self, t: usize, info: &PeerInfo) {
        if !info.our_place.is_unknown() {
            let share = self.locator.load().dc_share(&info.our_place, &[]);
            self.torrents[t].shared.swarm.set_dc_share(share);
        }
    }

    /// What the core is told of a new connection: its address and both ends' places.
    fn peer_info(&self, index: usize, outgoing: bool, attempt: u32) -> PeerInfo {
        let conn = self.conns[index].as_ref();
        let addr = conn.map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.addr);
        // Read once: both places come from the same topology, even while it is replaced.
        let locator = self.locator.load();
        let our_place = match conn {
            Some(c) if !locator.is_blind() => {
                let local = net::local_addr(&c.fd).ok().map(|a| a.ip());
                locator.our_place(local)
            }
            _ => Default::default(),
        };
        let their_place = locator
            .places(addr.ip())
            .then(|| locator.peer_place(addr.ip(), None));
        PeerInfo {
            addr,
            outgoing,
            attempt,
            our_place,
            their_place,
        }
    }

    /// Drops a connection slot the core does not know of (failed dial, early close).
    fn release_conn(&mut self, index: usize) {
        if let Some(conn) = self.conns.get_mut(index).and_then(Option::take) {
            net::shutdown(&conn.fd);
            self.conn_limits.release(conn.addr.ip());
            self.free_conns.push(index);
        }
    }

    /// Closes a connection for breaking the protocol, saying why where operators see it.
    fn drop_peer(&mut self, ring: &mut Ring, index: usize, reason: &str) {
        if let Some(conn) = self.conns.get(index).and_then(Option::as_ref) {
            tracing::info!(addr = %conn.addr, "dropping peer: {reason}");
        }
        self.close(ring, index, reason);
    }

    fn close(&mut self, ring: &mut Ring, index: usize, reason: &str) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::take) else {
            return;
        };
        tracing::debug!(worker = self.index, addr = %conn.addr, reason, "closing peer");
        net::shutdown(&conn.fd);
        self.conn_limits.release(conn.addr.ip());
        self.free_conns.push(index);
        let key = conn.key(index);
        // The descriptor stays open until the cancel of its ops completes, so nothing
        // queued for it can reach a reused descriptor number; late completions carry a
        // stale generation and are ignored.
        ring.cancel_and_close(conn.fd, token(K_CANCEL, conn.gen, index as u32));
        match (conn.torrent, conn.registered, &conn.phase) {
            (Some(t), true, _) => {
                self.torrents[t].core.peer_closed(Instant::now(), key);
                self.run_actions(ring, t);
            }
            // A dial that never connected (timed out): the core tries again later.
            (Some(t), false, Phase::Connecting) => {
                self.torrents[t]
                    .core
                    .dial_failed(Instant::now(), conn.addr, conn.attempt);
                self.run_actions(ring, t);
            }
            _ => {}
        }
    }

    // ---- receiving ---------------------------------------------------------------------

    fn on_data(&mut self, ring: &mut Ring, index: usize, mut data: &[u8]) {
        let Some(conn) = self.conns[index].as_mut() else {
            return;
        };
        if let Phase::Handshaking { got } = &mut conn.phase {
            let take = (wire::HANDSHAKE_LEN - got.len()).min(data.len());
            got.extend_from_slice(&data[..take]);
            data = &data[take..];
            if got.len() < wire::HANDSHAKE_LEN {
                return;
            }
            let result = Handshake::decode(got)
                .map_err(|e| format!("bad handshake: {e}"))
                .and_then(|hs| self.on_handshake(ring, index, &hs));
            if let Err(reason) = result {
                self.peer_failed(index, PeerFailureReason::from_handshake_error(&reason));
                self.drop_peer(ring, index, &reason);
                return;
            }
        }
        if data.is_empty() {
            return;
        }
        let Some(mut framer) = self.conns[index].as_mut().and_then(|c| c.framer.take()) else {
            return;
        };
        let gen = self.gens[index];
        let result = framer.feed(data, |ev| self.on_event(ring, index, gen, ev));
        match result {
            Ok(()) => {
                if let Some(Some(conn)) = self.conns.get_mut(index) {
                    if conn.gen == gen {
                        conn.framer = Some(framer);
                    }
                }
            }
            Err(DropPeer(reason)) => {
                if self.alive(index, gen) {
                    self.drop_peer(ring, index, &reason);
                }
            }
        }
    }

    fn on_handshake(
        &mut self,
        ring: &mut Ring,
        index: usize,
        hs: &Handshake,
    ) -> Result<(), String> {
        let t = self
            .torrent_index(&hs.info_hash)
            .ok_or(ringswarm_swarm::reasons::UNKNOWN_TORRENT)?;
        let conn = self.conns[index].as_mut().ok_or("gone")?;
        if conn.torrent.is_some_and(|expected| expected != t) {
            return Err(ringswarm_swarm::reasons::OTHER_TORRENT.into());
        }
        conn.torrent = Some(t);
        conn.phase = Phase::Active;
        let key = conn.key(index);
        let (addr, outgoing) = (conn.addr, conn.outgoing);
        let now = Instant::now();
        if !conn.registered {
            conn.registered = true;
            let info = self.peer_info(index, false, 1);
            self.note_dc_share(t, &info);
            self.torrents[t].core.peer_connected(now, key, info);
        }
        let result = self.torrents[t].core.handshake(now, key, hs);
        if result.is_ok() && outgoing {
            self.torrents[t].shared.failures.connected(addr);
        }
        self.run_actions(ring, t);
        result
    }

    fn on_event(
        &mut self,
        ring: &mut Ring,
        index: usize,
        gen: u32,
        ev: Event<'_>,
    ) -> Result<(), DropPeer> {
        // A connection closed by an earlier event of the same read: the rest is dropped.
        let conn = self.conns[index].as_ref().filter(|c| c.gen == gen);
        let (t, key) = match conn {
            Some(c) => match c.torrent {
                Some(t) => (t, c.key(index)),
                None => return Err(DropPeer("message before handshake".into())),
            },
            None => return Err(DropPeer("closed".into())),
        };
        let now = Instant::now();
        let result = match ev {
            Event::Message(m) => {
                let lt = &mut self.torrents[t];
                let mut lender = Lender::new(ring, &mut self.pool, &mut self.cache, &lt.shared);
                lt.core.message(now, key, &m, &mut lender)
            }
            Event::Block {
                index: piece,
                begin,
                block_len,
                offset,
                data,
            } => {
                let lt = &mut self.torrents[t];
                if let Some(buf) = lt.core.block_fragment(key, piece, begin, block_len) {
                    if let Some(dst) = self.pool.data_mut(buf.0 as u16) {
                        let at = (begin + offset) as usize;
                        if let Some(dst) = dst.get_mut(at..at + data.len()) {
                            dst.copy_from_slice(data);
                        }
                    }
                }
                if offset as usize + data.len() < block_len as usize {
                    return Ok(());
                }
                let mut lender = Lender::new(ring, &mut self.pool, &mut self.cache, &lt.shared);
                lt.core
                    .block_received(now, key, piece, begin, block_len, &mut lender)
            }
        };
        self.run_actions(ring, t);
        result.map_err(DropPeer)
    }

    // ---- the core's actions --------------------------------------------------------------

    /// Carries out what torrent `t`'s core decided, in order.
    fn run_actions(&mut self, ring: &mut Ring, t: usize) {
        let info_hash = ringswarm_swarm::InfoHash(self.torrents[t].shared.info_hash());
        let our_id = PeerId(self.peer_id);
        while let Some(action) = self.torrents[t].core.poll_action() {
            match action {
                Action::Send { peer, msg } => {
                    let index = peer.index as usize;
                    if let Some(conn) = self.conns[index].as_mut().filter(|c| c.gen == peer.gen) {
                        msg.encode(info_hash, our_id, &mut conn.ctrl_out);
                        self.dirty.push(index);
                        // A peer that asks (for metadata, say) faster than it reads the
                        // answers must not make us buffer without bound.
                        if conn.ctrl_out.len() > MAX_CTRL_BACKLOG {
                            self.drop_peer(ring, index, "too much unsent data queued");
                        }
                    }
                }
                Action::Serve { peer } => self.dirty.push(peer.index as usize),
                Action::Hash { piece, buf } => self.start_hash(ring, t, piece, buf.0 as u16),
                Action::Write { piece, buf } => {
                    let ops = self.torrents[t].shared.storage.write_plan(piece);
                    self.start_disk_job(ring, t, piece, buf.0 as u16, disk::DiskKind::Write, ops);
                }
                Action::Discard { buf } => self.pool.release(buf.0 as u16),
                Action::Close { peer, reason } => {
                    if self.alive(peer.index as usize, peer.gen) {
                        if ringswarm_swarm::reasons::is_banned(&reason) {
                            self.peer_failed(peer.index as usize, PeerFailureReason::Banned);
                        }
                        self.drop_peer(ring, peer.index as usize, &reason);
                    }
                }
                Action::Dial { addr, attempt } => self.connect(ring, t, addr, attempt),
                Action::Broadcast { piece } => self.to_other_cores(|| Command::Have {
                    info_hash: info_hash.0,
                    piece,
                }),
                Action::BroadcastFetching { word } => self.to_other_cores(|| Command::Fetching {
                    info_hash: info_hash.0,
                    word,
                }),
            }
        }
    }

    fn to_other_cores(&self, command: impl Fn() -> Command) {
        for (i, link) in self.links.iter().enumerate() {
            if i != self.index {
                link.send(command());
            }
        }
    }

    fn next_core_timeout(&self) -> Option<Instant> {
        self.torrents
            .iter()
            .filter_map(|t| t.core.poll_timeout())
            .min()
    }

    /// Runs the timers of the cores whose time has come.
    fn run_core_timers(&mut self, ring: &mut Ring) {
        let now = Instant::now();
        for t in 0..self.torrents.len() {
            if self.torrents[t]
                .core
                .poll_timeout()
                .is_some_and(|at| at <= now)
            {
                let lt = &mut self.torrents[t];
                let mut lender = Lender::new(ring, &mut self.pool, &mut self.cache, &lt.shared);
                lt.core.handle_timeout(now, &mut lender);
                self.run_actions(ring, t);
            }
        }
    }

    // ---- commands and housekeeping -------------------------------------------------------

    fn drain_commands(&mut self, ring: &mut Ring) {
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Command::AddTorrent(shared) => {
                    // Room for a few pieces of this torrent however large they are.
                    self.pool
                        .raise_budget(8 * shared.storage.piece_buffer_len());
                    let mut cfg = Config::new(PeerId(self.peer_id));
                    cfg.listen_port = self.listen_port;
                    cfg.upload_slots = self.upload_slots;
                    cfg.seed = rand::random();
                    cfg.download_limit = self.download_limit.clone();
                    let core = Swarm::new(cfg, shared.meta.clone(), shared.swarm.clone());
                    self.torrents.push(LocalTorrent {
                        shared,
                        core,
                        reads: Vec::new(),
                        removing: None,
                    });
                }
                Command::RemoveTorrent { info_hash, done } => {
                    self.begin_removal(ring, info_hash, done)
                }
                Command::Connect { info_hash, addr } => {
                    if let Some(t) = self.torrent_index(&info_hash) {
                        self.torrents[t].core.add_peer_address(Instant::now(), addr);
                        self.run_actions(ring, t);
                    }
                }
                Command::Have { info_hash, piece } => {
                    if let Some(t) = self.torrent_index(&info_hash) {
                        self.torrents[t].core.verified_elsewhere(piece);
                        self.run_actions(ring, t);
                    }
                }
                Command::Fetching { info_hash, word } => {
                    if let Some(t) = self.torrent_index(&info_hash) {
                        self.torrents[t].core.fetching_elsewhere(word);
                        self.run_actions(ring, t);
                    }
                }
                Command::Shutdown => self.begin_shutdown(ring),
            }
        }
    }

    fn begin_removal(&mut self, ring: &mut Ring, info_hash: [u8; 20], done: Sender<()>) {
        let Some(t) = self.torrent_index(&info_hash) else {
            done.send(()).ok();
            return;
        };
        self.torrents[t].removing = Some(done);
        self.torrents[t].core.stop("torrent removed");
        self.torrents[t].core.unpublish_waiting();
        self.run_actions(ring, t);
        // Connections the core does not know yet (still connecting or handshaking).
        let ours: Vec<usize> = (0..self.conns.len())
            .filter(|&i| self.conns[i].as_ref().is_some_and(|c| c.torrent == Some(t)))
            .collect();
        for c in ours {
            self.close(ring, c, "torrent removed");
        }
        self.finish_removals();
    }

    /// Forgets removed torrents whose disk and hash work is over and whose buffers are
    /// no longer under a send. The index of every later torrent shifts down by one, in
    /// the places that hold torrent indices (connections, hash and disk jobs, the cache).
    fn finish_removals(&mut self) {
        let mut t = 0;
        while t < self.torrents.len() {
            let lt = &self.torrents[t];
            let busy = lt.removing.is_none()
                || lt.core.peer_count() > 0
                || lt.core.busy()
                || self.conns.iter().flatten().any(|c| c.torrent == Some(t))
                || !lt.reads.is_empty()
                || self.hashing.values().any(|h| h.torrent == t)
                || self.disk_jobs.iter().flatten().any(|j| j.torrent == t)
                || self
                    .cache
                    .iter()
                    .any(|e| e.torrent == t && self.pool.is_pinned(e.slot));
            if busy {
                t += 1;
                continue;
            }
            let mut lt = self.torrents.remove(t);
            // Pieces still assembling hold buffers: the core gives them up.
            lt.core.forget_pieces();
            while let Some(a) = lt.core.poll_action() {
                if let Action::Discard { buf } = a {
                    self.pool.release(buf.0 as u16);
                }
            }
            let mut i = 0;
            while i < self.cache.len() {
                if self.cache[i].torrent == t {
                    let e = self.cache.swap_remove(i);
                    self.pool.release(e.slot);
                } else {
                    i += 1;
                }
            }
            let shift = |i: &mut usize| {
                if *i > t {
                    *i -= 1;
                }
            };
            for conn in self.conns.iter_mut().flatten() {
                if let Some(i) = conn.torrent.as_mut() {
                    shift(i);
                }
            }
            for h in self.hashing.values_mut() {
                shift(&mut h.torrent);
            }
            for j in self.disk_jobs.iter_mut().flatten() {
                shift(&mut j.torrent);
            }
            for e in self.cache.iter_mut() {
                shift(&mut e.torrent);
            }
            if let Some(done) = lt.removing {
                done.send(()).ok();
            }
        }
    }

    fn begin_shutdown(&mut self, ring: &mut Ring) {
        self.shutting_down = true;
        for t in 0..self.torrents.len() {
            self.torrents[t].core.stop("shutting down");
            self.run_actions(ring, t);
        }
        let live: Vec<usize> = (0..self.conns.len())
            .filter(|&i| self.conns[i].is_some())
            .collect();
        for i in live {
            self.close(ring, i, "shutting down");
        }
        if let Some(l) = self.listener.take() {
            // Ends the multishot accept; the descriptor closes once that is confirmed.
            net::shutdown(&l);
            ring.cancel_and_close(l, token(K_CANCEL, 0xff_ffff, u32::MAX));
        }
        // Completes our pending eventfd read; it is not re-armed while shutting down.
        self.wake.wake();
    }

    /// Connection housekeeping: handshake and send timeouts, backlogs, keep-alives; a
    /// failed torrent stops; the accept is re-armed.
    fn tick(&mut self, ring: &mut Ring) {
        let now = Instant::now();
        for i in 0..self.conns.len() {
            let Some(conn) = self.conns[i].as_mut() else {
                continue;
            };
            match conn.phase {
                Phase::Connecting | Phase::Handshaking { .. } => {
                    if now.duration_since(conn.started) > HANDSHAKE_TIMEOUT {
                        let reason = match conn.phase {
                            Phase::Connecting => PeerFailureReason::ConnectTimedOut,
                            _ => PeerFailureReason::NoHandshake,
                        };
                        self.peer_failed(i, reason);
                        self.close(ring, i, "handshake timed out");
                    }
                }
                Phase::Active => {
                    if conn.sending && now.duration_since(conn.last_send) > SEND_TIMEOUT {
                        self.drop_peer(ring, i, "not reading what we send");
                    } else if conn.ctrl_out.len() > MAX_CTRL_BACKLOG {
                        self.drop_peer(ring, i, "too much unsent data queued");
                    } else if now.duration_since(conn.last_send) > KEEPALIVE_EVERY {
                        wire::Message::KeepAlive.encode(&mut conn.ctrl_out);
                        self.dirty.push(i);
                    } else if let Some(t) = conn.torrent {
                        // Queued uploads whose read found no free buffer earlier.
                        let key = conn.key(i);
                        if self.torrents[t]
                            .core
                            .uploads(key)
                            .is_some_and(|q| !q.is_empty())
                        {
                            self.dirty.push(i);
                        }
                    }
                }
            }
        }
        for t in 0..self.torrents.len() {
            if self.torrents[t].shared.failed() && !self.torrents[t].core.is_stopped() {
                self.torrents[t].core.stop("torrent stopped after an error");
                self.run_actions(ring, t);
            }
        }
        if self.accept_paused && !self.shutting_down {
            self.accept_paused = false;
            if let Some(l) = &self.listener {
                ring.accept_multi(l.as_raw_fd(), token(K_ACCEPT, 0, 0));
            }
        }
        self.finish_removals();
    }
}
