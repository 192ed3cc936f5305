//! One worker per core: its ring, its connections, its piece buffers.
//!
//! Receive path: multishot recv into a provided buffer → [`Framer`] → block data copied once
//! into the piece buffer (a registered pool slot) → when whole: SHA-1 on this core →
//! `WriteFixed` (O_DIRECT) → on completion: verified, HAVE to every peer on every core, and
//! the buffer stays in a small cache of recent pieces so relaying reads nothing from disk.
//!
//! Send path: a REQUEST is served from that cache, else the piece is read whole with
//! `ReadFixed` into a pool slot (and cached); blocks are gathered into one `sendmsg` of
//! header/data iovecs straight from the slot.

mod slots;
mod uploads;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use io_uring::cqueue;

use super::limits::{self, ConnectionLimits, RateLimiter};
use super::locality::{locality, Locality, Locator, NamedPlace};
use super::torrent::{counts_as_receiver, TorrentShared, STRIKES_BEFORE_BAN};
use crate::bitfield::Bitfield;
use crate::extension::{self, ExtHandshake, MetadataMsg};
use crate::picker::{self, PickInput, RemoteRule};
use crate::reactor::{
    net, BufRing, Completion, EventFd, HashDone, HashPool, PiecePool, Ring, SendBlock, SlotId,
};
use crate::storage::IoOp;
use crate::wire::{self, Event, Framer, Handshake, Message, BLOCK_SIZE};
use uploads::ReadRange;

/// Most blocks requested and not yet received, per connection: 8 MiB in flight covers
/// bandwidth × delay on a 25 GbE link with a couple of milliseconds of RTT, and keeps a
/// seeder's view a piece or two ahead so its disk reads overlap the sending (measured on
/// loopback, 1 GiB cold: 256 → 2.1 s, 512 → 1.5 s, 1024 → 1.55 s).
const REQUEST_QUEUE_DEPTH: u32 = 512;
/// The depth actually kept is the peer's measured rate times this horizon: enough to
/// cover any data-centre RTT many times over, while a slow peer does not hold megabytes
/// of requests (and the pieces they claim) that faster peers could serve at the tail.
const REQUEST_HORIZON: Duration = Duration::from_millis(200);
/// Depth before the first rate sample, and the least kept (512 KiB: a 1 ms RTT still
/// allows 500 MB/s).
const INITIAL_REQUEST_DEPTH: u32 = 128;
const MIN_REQUEST_DEPTH: u32 = 32;
/// Requests are topped up when this many have come back, so they leave in batches rather
/// than one small send per block.
const REQUEST_REFILL_BATCH: u32 = 32;
/// Uncached ranges a connection's queue may start reading at once.
const READ_AHEAD_PIECES: usize = 4;
/// Requests a peer may queue with us before we refuse more.
const MAX_PEER_REQUESTS: usize = 2048;
/// Bytes gathered into one sendmsg.
const SEND_BATCH_BYTES: usize = 1 << 20;
/// Recent pieces kept per worker for uploads: at least this many, and as many more as fit
/// in half of the worker's piece memory (the other half stays for pieces in flight). A
/// piece verified here is asked for by its rack peers and the other racks' owners over
/// the next second or two: the more of that window the cache covers, the fewer relays
/// read the disk.
const CACHE_PIECES_MIN: usize = 8;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A send that makes no progress this long means the peer stopped reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Control bytes queued behind a stuck send before the peer is dropped (a peer that
/// never reads must not make us buffer without bound).
const MAX_CTRL_BACKLOG: usize = 1 << 20;
/// Connections per worker core.
const MAX_CONNS_PER_CORE: usize = 1024;
const STALL_TIMEOUT: Duration = Duration::from_secs(20);
const KEEPALIVE_EVERY: Duration = Duration::from_secs(90);
const TICK: Duration = Duration::from_millis(100);
/// A remote seed may serve any missing piece once at most 1/this of the pieces are missing.
const SEED_TAIL_FRACTION: u32 = 8;
const MAX_CONNECT_ATTEMPTS: u32 = 30;
/// No block from any rack peer for this long: pieces outside our share may come from
/// outside the rack (a rack-mate died or is slow, or the split views disagree).
const RACK_QUIET: Duration = Duration::from_secs(5);
/// How long after a piece appears outside the rack (a remote HAVE) its share owner in the
/// rack has to fetch it before any rack host may, so one slow owner holds the rack back by
/// this much, not until the whole rack goes quiet. Long enough that a busy but healthy
/// owner wins: in perf/fleet a 1.5 s grace let 1.2-1.5 x the blob into a rack (owners
/// were merely queued), 4 s keeps it at 1.02-1.07 x, the same as no grace at all.
const SHARE_GRACE: Duration = Duration::from_secs(4);
/// How long pieces a peer refused (BEP 6 REJECT) are not asked of it again.
const REFUSAL_MEMORY: Duration = Duration::from_secs(2);

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
    /// Stop serving a torrent: close its peers, let its disk and hash work finish, free
    /// its buffers, forget it, then say so on `done` (the files close with the last
    /// reference to its storage).
    RemoveTorrent {
        info_hash: [u8; 20],
        done: Sender<()>,
    },
    Shutdown,
}

/// Why a peer is dropped (logged).
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

impl From<&str> for DropPeer {
    fn from(s: &str) -> Self {
        DropPeer(s.to_string())
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
    pub locator: Arc<Locator>,
    pub upload_limit: Option<Arc<RateLimiter>>,
    pub download_limit: Option<Arc<RateLimiter>>,
    pub conn_limits: Arc<ConnectionLimits>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum BlockState {
    Missing,
    Requested,
    Received,
}

/// A piece being received into a pool slot.
struct Assembly {
    slot: SlotId,
    owner: ConnRef,
    blocks: Vec<BlockState>,
    received: u32,
    /// We hold the piece's claim (false for an endgame duplicate).
    claimed: bool,
}

/// A verified or freshly read piece kept in memory for uploads.
struct CacheEntry {
    /// The bytes of the piece in the slot (at their offsets in the piece).
    range: ReadRange,
    slot: SlotId,
    last_used: u64,
    /// Came from our own download (a relay serves it without touching the disk).
    downloaded: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct BlockReq {
    piece: u32,
    begin: u32,
    len: u32,
}

/// The worker-local side of a torrent.
struct LocalTorrent {
    shared: Arc<TorrentShared>,
    assemblies: HashMap<u32, Assembly>,
    cache: Vec<CacheEntry>,
    /// Ranges of pieces being read from disk for uploads.
    reads: Vec<ReadRange>,
    conns: Vec<usize>,
    /// Our peers waiting for an upload slot, as last added to the torrent's count.
    waiting_published: u32,
    /// Being removed: no new peers; told on this channel once forgotten.
    removing: Option<Sender<()>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct ConnRef {
    index: usize,
    gen: u32,
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
    outgoing: bool,
    phase: Phase,
    torrent: Option<usize>,
    framer: Option<Framer>,
    peer_id: [u8; 20],
    fast: bool,
    ext: bool,
    their_metadata_id: Option<u8>,
    am_choking: bool,
    /// When we last unchoked it, and its last REQUEST since (the idle-slot rule).
    unchoked_at: Instant,
    last_request: Option<Instant>,
    /// When it last started waiting for a slot (interested and choked): slots go to the
    /// peers waiting longest.
    waiting_since: Instant,
    am_interested: bool,
    peer_choking: bool,
    peer_interested: bool,
    have: Bitfield,
    /// Counted in the torrent's availability (undone on close).
    counted: bool,
    requests_out: u32,
    owned_pieces: Vec<u32>,
    upload_queue: VecDeque<BlockReq>,
    ctrl_out: Vec<u8>,
    sending: bool,
    last_recv: Instant,
    last_send: Instant,
    started: Instant,
    pick_start: u32,
    /// Which connection attempt this is (outgoing), for the reconnect back-off.
    attempt: u32,
    /// When a requested block last arrived (stall detection; keep-alives do not count).
    last_block: Instant,
    /// A BITFIELD, HAVE ALL or HAVE NONE came already: one per connection.
    got_bitfield: bool,
    /// It said it held every piece in that first message: a seed, never a receiver.
    opened_complete: bool,
    /// Payload bytes we sent it.
    uploaded_to: u64,
    /// The last refill found no piece or no buffer: skip refills until the tick.
    refill_blocked: bool,
    /// Requests we keep outstanding with this peer (its `reqq`, at most our depth).
    max_requests: u32,
    /// How far the peer is; counted in the rack availability while `Rack`.
    locality: Locality,
    /// Our place as seen on this connection (None: unknown, no rack preference).
    our_place: Option<Box<NamedPlace>>,
    /// As a first seeder: pieces handed to this peer.
    granted: Bitfield,
    /// Pieces the peer refused to give us, and since when (forgotten after a while).
    refused: Bitfield,
    refused_since: Option<Instant>,
    /// A piece from this peer has passed its hash check. Until then it fills one piece
    /// at a time, so a peer sending garbage wastes little before it is banned.
    proven: bool,
    /// Requests we keep outstanding now: rate × [`REQUEST_HORIZON`], within
    /// [`MIN_REQUEST_DEPTH`] and `max_requests`.
    depth: u32,
    /// Payload bytes received since `rate_since`, and the smoothed rate (bytes/s).
    rate_bytes: u64,
    rate_since: Instant,
    rate: f64,
}

impl Conn {
    /// Requests to keep in flight with this peer.
    fn request_depth(&self) -> u32 {
        self.depth.min(self.max_requests)
    }

    /// Folds the bytes received since the last sample into the rate (only while we had
    /// requests out: an idle peer is not a slow one) and resizes the request depth.
    fn sample_rate(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.rate_since).as_secs_f64();
        if elapsed < 0.05 {
            return;
        }
        if self.requests_out > 0 || self.rate_bytes > 0 {
            let sample = self.rate_bytes as f64 / elapsed;
            self.rate = if self.rate == 0.0 {
                sample
            } else {
                0.7 * self.rate + 0.3 * sample
            };
            let blocks = self.rate * REQUEST_HORIZON.as_secs_f64() / f64::from(BLOCK_SIZE);
            self.depth = (blocks.ceil() as u32).clamp(MIN_REQUEST_DEPTH, REQUEST_QUEUE_DEPTH);
        }
        self.rate_bytes = 0;
        self.rate_since = now;
    }
}

/// A received piece waiting for its hash.
struct Hashing {
    torrent: usize,
    piece: u32,
    claimed: bool,
    from: PieceSource,
}

/// The connection a piece came from, and its address (strikes outlive the connection).
#[derive(Clone, Copy, Debug)]
struct PieceSource {
    index: usize,
    gen: u32,
    addr: SocketAddr,
}

struct RetryConnect {
    due: Instant,
    info_hash: [u8; 20],
    addr: SocketAddr,
    attempt: u32,
}

enum DiskKind {
    Write,
    Read(ReadRange),
}

struct DiskJob {
    torrent: usize,
    piece: u32,
    slot: SlotId,
    kind: DiskKind,
    ops: Vec<IoOp>,
    pending: usize,
    error: Option<String>,
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
    conns: Vec<Option<Conn>>,
    gens: Vec<u32>,
    free_conns: Vec<usize>,
    disk_jobs: Vec<Option<DiskJob>>,
    retries: Vec<RetryConnect>,
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
    locator: Arc<Locator>,
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
            conns: Vec::new(),
            gens: Vec::new(),
            free_conns: Vec::new(),
            disk_jobs: Vec::new(),
            retries: Vec::new(),
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
            let wait = next_tick.saturating_duration_since(Instant::now());
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
                let alive = matches!(self.conns.get(index), Some(Some(conn)) if conn.gen & 0xff_ffff == seq);
                if alive {
                    if c.result > 0 {
                        let data = bid.map_or(&[][..], |b| recv_bufs.get(b, c.result as usize));
                        self.on_data(ring, index, data);
                    } else if c.result == 0 {
                        self.close(ring, index, "peer closed the connection");
                    } else if c.result != -libc::ENOBUFS {
                        let err = std::io::Error::from_raw_os_error(-c.result);
                        self.close(ring, index, &format!("receive failed: {err}"));
                    }
                }
                if let Some(b) = bid {
                    recv_bufs.recycle(b);
                }
                let still_alive = matches!(self.conns.get(index), Some(Some(conn)) if conn.gen & 0xff_ffff == seq);
                if still_alive && !cqueue::more(c.flags) {
                    let fd = self.conns[index].as_ref().map(|c| c.fd.as_raw_fd());
                    if let Some(fd) = fd {
                        ring.recv_multi(fd, recv_bufs.group(), c.token);
                    }
                }
            }
            K_SEND => {
                if let Some(Some(conn)) = self.conns.get_mut(index) {
                    if conn.gen & 0xff_ffff == seq {
                        conn.sending = false;
                        if c.result < 0 {
                            let err = std::io::Error::from_raw_os_error(-c.result);
                            self.close(ring, index, &format!("send failed: {err}"));
                        } else {
                            self.dirty.push(index);
                        }
                    }
                }
            }
            K_DISK => self.on_disk(ring, index, seq as usize, c.result),
            _ => {}
        }
    }

    // ---- connections -------------------------------------------------------------------

    fn new_conn(&mut self, fd: OwnedFd, addr: SocketAddr, outgoing: bool, phase: Phase) -> usize {
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
            outgoing,
            phase,
            torrent: None,
            framer: Some(Framer::new(wire::DEFAULT_MAX_FRAME)),
            peer_id: [0; 20],
            fast: false,
            ext: false,
            their_metadata_id: None,
            am_choking: true,
            unchoked_at: now,
            last_request: None,
            waiting_since: now,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            have: Bitfield::new(0),
            counted: false,
            requests_out: 0,
            owned_pieces: Vec::new(),
            upload_queue: VecDeque::new(),
            ctrl_out: Vec::new(),
            sending: false,
            last_recv: now,
            last_send: now,
            started: now,
            pick_start: rand::random(),
            attempt: 1,
            last_block: now,
            got_bitfield: false,
            opened_complete: false,
            uploaded_to: 0,
            refill_blocked: false,
            max_requests: REQUEST_QUEUE_DEPTH,
            locality: Locality::Rack,
            our_place: None,
            granted: Bitfield::new(0),
            refused: Bitfield::new(0),
            refused_since: None,
            proven: false,
            depth: INITIAL_REQUEST_DEPTH,
            rate_bytes: 0,
            rate_since: now,
            rate: 0.0,
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
                    tracing::warn!(err = %std::io::Error::from_raw_os_error(-c.result), "accept failed; pausing");
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
        if self.torrents.iter().any(|t| {
            t.shared
                .peers
                .lock()
                .is_ok_and(|mut p| p.banned.is_banned(addr.ip(), Instant::now()))
        }) {
            tracing::debug!(%addr, "refused a banned peer");
            return;
        }
        net::tune_accepted(&fd);
        let raw = fd.as_raw_fd();
        let index = self.new_conn(
            fd,
            addr,
            false,
            Phase::Handshaking {
                got: Vec::with_capacity(68),
            },
        );
        let gen = self.gens[index];
        ring.recv_multi(raw, RECV_GROUP, token(K_RECV, gen, index as u32));
        tracing::debug!(worker = self.index, %addr, "accepted");
    }

    fn connect(&mut self, ring: &mut Ring, info_hash: [u8; 20], addr: SocketAddr, attempt: u32) {
        let Some(t) = self.torrent_index(&info_hash) else {
            return;
        };
        if !self.conn_limits.acquire(addr.ip()) {
            tracing::debug!(%addr, "peer limit reached; not dialling");
            return;
        }
        let fd = match net::stream_for(&addr, self.source_ip) {
            Ok(fd) => fd,
            Err(e) => {
                self.conn_limits.release(addr.ip());
                tracing::warn!(%addr, err = %e, "cannot create a socket");
                return;
            }
        };
        let raw = fd.as_raw_fd();
        let index = self.new_conn(fd, addr, true, Phase::Connecting);
        if let Some(conn) = self.conns[index].as_mut() {
            conn.torrent = Some(t);
            conn.attempt = attempt;
        }
        let gen = self.gens[index];
        ring.connect(raw, addr, token(K_CONNECT, gen, index as u32));
    }

    fn on_connected(&mut self, ring: &mut Ring, index: usize, seq: u32, result: i32) {
        let Some(Some(conn)) = self.conns.get_mut(index) else {
            return;
        };
        if conn.gen != seq {
            return;
        }
        let attempt = conn.attempt;
        if result < 0 {
            let err = std::io::Error::from_raw_os_error(-result);
            let (addr, t) = (conn.addr, conn.torrent);
            tracing::debug!(%addr, err = %err, attempt, "connect failed");
            self.release_conn(index);
            if let Some(t) = t {
                self.schedule_retry(t, addr, attempt + 1);
            }
            return;
        }
        let Some(t) = conn.torrent else { return };
        let info_hash = self.torrents[t].shared.info_hash();
        conn.phase = Phase::Handshaking {
            got: Vec::with_capacity(68),
        };
        conn.ctrl_out
            .extend_from_slice(&Handshake::new(info_hash, self.peer_id).encode());
        let raw = conn.fd.as_raw_fd();
        ring.recv_multi(raw, RECV_GROUP, token(K_RECV, seq, index as u32));
        self.dirty.push(index);
    }

    fn schedule_retry(&mut self, t: usize, addr: SocketAddr, attempt: u32) {
        let Some(lt) = self.torrents.get(t) else {
            return;
        };
        let shared = &lt.shared;
        let banned = shared
            .peers
            .lock()
            .map_or(true, |mut p| p.banned.is_banned(addr.ip(), Instant::now()));
        if self.shutting_down
            || banned
            || shared.all_verified()
            || shared.failed()
            || attempt > MAX_CONNECT_ATTEMPTS
        {
            return;
        }
        let backoff = Duration::from_millis(250 * u64::from(attempt.min(20)));
        self.retries.push(RetryConnect {
            due: Instant::now() + backoff,
            info_hash: shared.info_hash(),
            addr,
            attempt,
        });
    }

    /// Drops a connection slot without protocol cleanup (used before the handshake).
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
        if let Some(t) = conn.torrent {
            let lt = &mut self.torrents[t];
            lt.conns.retain(|&c| c != index);
            let shared = lt.shared.clone();
            if matches!(conn.phase, Phase::Active) {
                shared.counters.connected.fetch_sub(1, Ordering::Relaxed);
                if let Ok(mut p) = shared.peers.lock() {
                    p.connected.remove(&conn.peer_id);
                }
                if !conn.am_choking {
                    shared.counters.unchoked.fetch_sub(1, Ordering::Relaxed);
                }
            }
            if conn.counted {
                let rack = conn.locality == Locality::Rack;
                for i in conn.have.ones() {
                    if let Some(a) = shared.availability.get(i as usize) {
                        a.fetch_sub(1, Ordering::Relaxed);
                    }
                    if let Some(a) = shared.rack_availability.get(i as usize).filter(|_| rack) {
                        a.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
            if conn.our_place.is_some()
                && conn.locality == Locality::Rack
                && matches!(conn.phase, Phase::Active)
            {
                shared.set_rack_peer(conn.peer_id, false, &self.peer_id);
            }
            shared.release_grants(&conn.granted);
            let owner = ConnRef {
                index,
                gen: conn.gen,
            };
            for piece in conn.owned_pieces {
                self.abandon(t, piece, owner);
            }
            if conn.outgoing {
                // A peer that was serving us starts over; one that failed early backs off.
                let attempt = if matches!(conn.phase, Phase::Active) {
                    1
                } else {
                    conn.attempt + 1
                };
                self.schedule_retry(t, conn.addr, attempt);
            }
        }
        self.free_conns.push(index);
        // The descriptor stays open until the cancel of its ops completes, so nothing
        // queued for it can reach a reused descriptor number; late completions carry a
        // stale generation and are ignored.
        ring.cancel_and_close(conn.fd, token(K_CANCEL, conn.gen, index as u32));
    }

    /// Gives up an assembly: its slot returns to the pool and its claim is released.
    /// When the owning peer is still connected, its requests for the piece are cancelled.
    fn abandon(&mut self, t: usize, piece: u32, owner: ConnRef) {
        let lt = &mut self.torrents[t];
        if lt.assemblies.get(&piece).is_none_or(|a| a.owner != owner) {
            return;
        }
        let Some(a) = lt.assemblies.remove(&piece) else {
            return;
        };
        self.pool.release(a.slot);
        if a.claimed {
            lt.shared.claimed.clear(piece);
        }
        let size = lt.shared.meta.piece_size(piece);
        if let Some(Some(conn)) = self.conns.get_mut(owner.index) {
            if conn.gen != owner.gen {
                return;
            }
            conn.owned_pieces.retain(|&p| p != piece);
            for (b, state) in a.blocks.iter().enumerate() {
                if *state == BlockState::Requested {
                    let begin = b as u32 * BLOCK_SIZE;
                    let length = (size - begin).min(BLOCK_SIZE);
                    Message::Cancel {
                        index: piece,
                        begin,
                        length,
                    }
                    .encode(&mut conn.ctrl_out);
                    conn.requests_out = conn.requests_out.saturating_sub(1);
                }
            }
            self.dirty.push(owner.index);
        }
    }

    // ---- receiving ---------------------------------------------------------------------

    fn on_data(&mut self, ring: &mut Ring, index: usize, mut data: &[u8]) {
        let Some(conn) = self.conns[index].as_mut() else {
            return;
        };
        conn.last_recv = Instant::now();
        if let Phase::Handshaking { got } = &mut conn.phase {
            let take = (wire::HANDSHAKE_LEN - got.len()).min(data.len());
            got.extend_from_slice(&data[..take]);
            data = &data[take..];
            if got.len() < wire::HANDSHAKE_LEN {
                return;
            }
            let hs = Handshake::decode(got);
            match hs {
                Ok(hs) => {
                    if let Err(reason) = self.on_handshake(index, hs) {
                        self.drop_peer(ring, index, &reason);
                        return;
                    }
                }
                Err(e) => {
                    self.drop_peer(ring, index, &format!("bad handshake: {e}"));
                    return;
                }
            }
        }
        if data.is_empty() {
            return;
        }
        let Some(mut framer) = self.conns[index].as_mut().and_then(|c| c.framer.take()) else {
            return;
        };
        let gen = self.gens[index];
        let result = framer.feed(data, |ev| self.on_event(ring, index, ev));
        match result {
            Ok(()) => {
                if let Some(Some(conn)) = self.conns.get_mut(index) {
                    if conn.gen == gen {
                        conn.framer = Some(framer);
                    }
                }
            }
            Err(DropPeer(reason)) => {
                if matches!(self.conns.get(index), Some(Some(c)) if c.gen == gen) {
                    self.drop_peer(ring, index, &reason);
                }
            }
        }
    }

    fn on_handshake(&mut self, index: usize, hs: Handshake) -> Result<(), String> {
        let t = self
            .torrent_index(&hs.info_hash)
            .ok_or("handshake for a torrent we do not have")?;
        if hs.peer_id == self.peer_id {
            return Err("connected to ourselves".into());
        }
        let shared = self.torrents[t].shared.clone();
        {
            let mut book = shared.peers.lock().map_err(|_| "peer book poisoned")?;
            let ip = self.conns[index]
                .as_ref()
                .map(|c| c.addr.ip())
                .ok_or("gone")?;
            if book.banned.is_banned(ip, Instant::now()) {
                return Err("banned peer".into());
            }
            if !book.connected.insert(hs.peer_id) {
                return Err("already connected to this peer".into());
            }
        }
        let ours = Handshake::new(hs.info_hash, self.peer_id);
        let conn = self.conns[index].as_mut().ok_or("gone")?;
        if let Some(expected) = conn.torrent {
            if expected != t {
                if let Ok(mut b) = shared.peers.lock() {
                    b.connected.remove(&hs.peer_id);
                }
                return Err("peer answered for another torrent".into());
            }
        } else {
            // Incoming: answer with our handshake.
            conn.ctrl_out.extend_from_slice(&ours.encode());
        }
        conn.torrent = Some(t);
        conn.peer_id = hs.peer_id;
        conn.fast = hs.supports_fast() && ours.supports_fast();
        conn.ext = hs.supports_extensions() && ours.supports_extensions();
        conn.phase = Phase::Active;
        conn.have = Bitfield::new(shared.piece_count());
        conn.granted = Bitfield::new(shared.piece_count());
        conn.refused = Bitfield::new(shared.piece_count());
        shared.counters.connected.fetch_add(1, Ordering::Relaxed);
        let our_place = if self.locator.is_blind() {
            NamedPlace::default()
        } else {
            let local = net::local_addr(&conn.fd).ok().map(|a| a.ip());
            self.locator.our_place(local)
        };
        if !our_place.is_unknown() {
            let theirs = self.locator.peer_place(conn.addr.ip(), None);
            conn.locality = locality(&our_place, &theirs);
            if conn.locality == Locality::Rack {
                shared.set_rack_peer(hs.peer_id, true, &self.peer_id);
            }
        }
        if conn.ext {
            let hs = ExtHandshake {
                extensions: vec![("ut_metadata".into(), extension::OUR_UT_METADATA_ID)],
                metadata_size: Some(shared.meta.info_bytes.len() as u64),
                listen_port: self.listen_port,
                client: Some(concat!("ringswarm ", env!("CARGO_PKG_VERSION")).into()),
                request_queue: Some(MAX_PEER_REQUESTS as u32),
                dc: our_place.dc.clone(),
                rack: our_place.rack.clone(),
            };
            Message::Extended {
                id: extension::HANDSHAKE_ID,
                payload: &hs.encode(),
            }
            .encode(&mut conn.ctrl_out);
        }
        let ours_have = shared.verified.snapshot();
        let count = ours_have.count_ones();
        if conn.fast && count == ours_have.len() {
            Message::HaveAll.encode(&mut conn.ctrl_out);
        } else if conn.fast && count == 0 {
            Message::HaveNone.encode(&mut conn.ctrl_out);
        } else if count > 0 {
            Message::Bitfield {
                bits: ours_have.as_bytes(),
            }
            .encode(&mut conn.ctrl_out);
        }
        if !our_place.is_unknown() {
            conn.our_place = Some(Box::new(our_place));
        }
        self.torrents[t].conns.push(index);
        tracing::debug!(worker = self.index, addr = %conn.addr, locality = ?conn.locality, "peer active");
        self.dirty.push(index);
        Ok(())
    }

    fn on_event(&mut self, ring: &mut Ring, index: usize, ev: Event<'_>) -> Result<(), DropPeer> {
        let result = match ev {
            Event::Message(m) => self.on_message(ring, index, m),
            Event::Block {
                index: piece,
                begin,
                block_len,
                offset,
                data,
            } => self.on_block(ring, index, piece, begin, block_len, offset, data),
        };
        result.map_err(DropPeer)
    }

    fn on_message(
        &mut self,
        ring: &mut Ring,
        index: usize,
        msg: Message<'_>,
    ) -> Result<(), String> {
        let conn = self.conns[index].as_mut().ok_or("gone")?;
        let t = conn.torrent.ok_or("message before handshake")?;
        let shared = self.torrents[t].shared.clone();
        let n = shared.piece_count();
        match msg {
            Message::KeepAlive
            | Message::Port { .. }
            | Message::Suggest { .. }
            | Message::AllowedFast { .. } => {}
            Message::Unknown { id } => tracing::trace!(id, "ignored unknown message"),
            Message::Choke => {
                // Our requests are void (dropped, or rejected under BEP 6): give the
                // pieces back so other peers can fetch them.
                conn.peer_choking = true;
                conn.requests_out = 0;
                let owned = std::mem::take(&mut conn.owned_pieces);
                let me = ConnRef {
                    index,
                    gen: conn.gen,
                };
                for p in owned {
                    self.abandon(t, p, me);
                }
            }
            Message::Unchoke => {
                conn.peer_choking = false;
                self.fill_requests(ring, index);
            }
            Message::Interested => {
                if !conn.peer_interested {
                    conn.waiting_since = Instant::now();
                }
                conn.peer_interested = true;
                self.try_unchoke(index);
            }
            Message::NotInterested => {
                conn.peer_interested = false;
                self.choke(index);
            }
            Message::Have { index: piece } => {
                if piece >= n {
                    return Err(format!("HAVE for piece {piece} of {n}"));
                }
                if !conn.have.get(piece) {
                    conn.have.set(piece);
                    conn.counted = true;
                    shared.availability[piece as usize].fetch_add(1, Ordering::Relaxed);
                    if conn.locality == Locality::Rack {
                        shared.rack_availability[piece as usize].fetch_add(1, Ordering::Relaxed);
                    } else {
                        shared.note_seen_outside(piece);
                    }
                    shared.note_delivered(piece);
                    self.after_peer_has(ring, index, t, Some(piece));
                }
            }
            Message::Bitfield { .. } | Message::HaveAll | Message::HaveNone
                if conn.got_bitfield =>
            {
                return Err("a second BITFIELD / HAVE ALL / HAVE NONE".into());
            }
            Message::Bitfield { bits } => {
                conn.got_bitfield = true;
                let field =
                    Bitfield::from_bytes(bits, n).map_err(|e| format!("bad bitfield: {e}"))?;
                conn.opened_complete = field.is_complete();
                self.set_peer_pieces(ring, index, t, field);
            }
            Message::HaveAll => {
                if !conn.fast {
                    return Err("HAVE ALL without the fast extension".into());
                }
                conn.got_bitfield = true;
                conn.opened_complete = true;
                self.set_peer_pieces(ring, index, t, Bitfield::full(n));
            }
            Message::HaveNone => {
                if !conn.fast {
                    return Err("HAVE NONE without the fast extension".into());
                }
                conn.got_bitfield = true;
            }
            Message::Request {
                index: piece,
                begin,
                length,
            } => {
                let ok = piece < n
                    && length > 0
                    && length <= wire::MAX_BLOCK_SIZE
                    && u64::from(begin) + u64::from(length)
                        <= u64::from(shared.meta.piece_size(piece));
                conn.last_request = Some(Instant::now());
                if !ok {
                    return Err(format!(
                        "bad request: piece {piece} begin {begin} length {length}"
                    ));
                }
                let have = shared.verified.get(piece);
                // A first seeder refuses pieces it has handed to another peer (without the
                // fast extension a refusal cannot be said: it serves them anyway).
                let refuse = conn.am_choking
                    || !have
                    || (conn.fast && !shared.grant(piece, &mut conn.granted));
                if refuse {
                    if conn.fast {
                        Message::Reject {
                            index: piece,
                            begin,
                            length,
                        }
                        .encode(&mut conn.ctrl_out);
                        self.dirty.push(index);
                    }
                    return Ok(());
                }
                if conn.upload_queue.len() >= MAX_PEER_REQUESTS {
                    return Err("too many queued requests".into());
                }
                conn.upload_queue.push_back(BlockReq {
                    piece,
                    begin,
                    len: length,
                });
                self.dirty.push(index);
            }
            Message::Cancel {
                index: piece,
                begin,
                length,
            } => {
                let want = BlockReq {
                    piece,
                    begin,
                    len: length,
                };
                conn.upload_queue.retain(|r| *r != want);
            }
            Message::Reject {
                index: piece,
                begin,
                ..
            } => {
                if !conn.fast {
                    return Err("REJECT without the fast extension".into());
                }
                let me = ConnRef {
                    index,
                    gen: conn.gen,
                };
                // The peer will not give us this piece now (it is choking us, lacks it, or
                // as a first seeder has handed it to another peer): fetch it elsewhere, and
                // do not ask this peer for it again for a while.
                let mut refused = false;
                if let Some(a) = self.torrents[t].assemblies.get_mut(&piece) {
                    let b = (begin / BLOCK_SIZE) as usize;
                    if a.owner == me && a.blocks.get(b) == Some(&BlockState::Requested) {
                        a.blocks[b] = BlockState::Missing;
                        conn.requests_out = conn.requests_out.saturating_sub(1);
                        refused = true;
                    }
                }
                if refused && piece < n {
                    conn.refused.set(piece);
                    conn.refused_since.get_or_insert_with(Instant::now);
                    self.abandon(t, piece, me);
                    self.fill_requests(ring, index);
                }
            }
            Message::Piece { .. } => {}
            Message::Extended { id, payload } => self.on_extended(index, t, id, payload)?,
        }
        Ok(())
    }

    fn on_extended(
        &mut self,
        index: usize,
        t: usize,
        id: u8,
        payload: &[u8],
    ) -> Result<(), String> {
        let conn = self.conns[index].as_mut().ok_or("gone")?;
        if id == extension::HANDSHAKE_ID {
            let hs = ExtHandshake::decode(payload)
                .map_err(|e| format!("bad extension handshake: {e}"))?;
            conn.their_metadata_id = hs.id_of("ut_metadata");
            conn.max_requests = hs
                .request_queue
                .map_or(REQUEST_QUEUE_DEPTH, |q| q.clamp(16, REQUEST_QUEUE_DEPTH));
            // The place a peer states counts only where the topology does not place it.
            if let Some(ours) = conn.our_place.as_deref() {
                if !self.locator.places(conn.addr.ip()) {
                    let stated = NamedPlace {
                        dc: hs.dc.clone(),
                        rack: hs.rack.clone(),
                    };
                    let now = locality(ours, &stated);
                    self.set_locality(index, t, now);
                }
            }
            return Ok(());
        }
        if id != extension::OUR_UT_METADATA_ID {
            return Ok(());
        }
        let msg =
            MetadataMsg::decode(payload).map_err(|e| format!("bad ut_metadata message: {e}"))?;
        if let (MetadataMsg::Request { piece }, Some(their_id)) = (msg, conn.their_metadata_id) {
            if conn.ctrl_out.len() > MAX_CTRL_BACKLOG {
                return Err("metadata requests faster than it reads the answers".into());
            }
            let info = &self.torrents[t].shared.meta.info_bytes;
            let start = piece as usize * extension::METADATA_PIECE_SIZE;
            let reply = if start < info.len() {
                let end = (start + extension::METADATA_PIECE_SIZE).min(info.len());
                MetadataMsg::Data {
                    piece,
                    total_size: info.len() as u64,
                    data: &info[start..end],
                }
                .encode()
            } else {
                MetadataMsg::Reject { piece }.encode()
            };
            Message::Extended {
                id: their_id,
                payload: &reply,
            }
            .encode(&mut conn.ctrl_out);
            self.dirty.push(index);
        }
        Ok(())
    }

    /// Moves a peer to another locality (its BEP 10 handshake placed it): its pieces move in
    /// or out of the rack availability, and the rack membership (our share) follows.
    fn set_locality(&mut self, index: usize, t: usize, now: Locality) {
        let Some(conn) = self.conns[index].as_mut() else {
            return;
        };
        let was = conn.locality;
        if was == now {
            return;
        }
        let shared = &self.torrents[t].shared;
        let into_rack = now == Locality::Rack;
        if conn.counted && (was == Locality::Rack || into_rack) {
            for i in conn.have.ones() {
                let a = &shared.rack_availability[i as usize];
                if into_rack {
                    a.fetch_add(1, Ordering::Relaxed);
                } else {
                    a.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        if was == Locality::Rack || into_rack {
            shared.set_rack_peer(conn.peer_id, into_rack, &self.peer_id);
        }
        conn.locality = now;
        tracing::debug!(addr = %conn.addr, locality = ?now, "peer placed by its handshake");
    }

    fn set_peer_pieces(&mut self, ring: &mut Ring, index: usize, t: usize, field: Bitfield) {
        let Some(conn) = self.conns[index].as_mut() else {
            return;
        };
        let shared = &self.torrents[t].shared;
        let rack = conn.locality == Locality::Rack;
        if conn.counted {
            for i in conn.have.ones() {
                shared.availability[i as usize].fetch_sub(1, Ordering::Relaxed);
                if rack {
                    shared.rack_availability[i as usize].fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        for i in field.ones() {
            shared.availability[i as usize].fetch_add(1, Ordering::Relaxed);
            if rack {
                shared.rack_availability[i as usize].fetch_add(1, Ordering::Relaxed);
            }
            shared.note_delivered(i);
        }
        conn.have = field;
        conn.counted = true;
        self.after_peer_has(ring, index, t, None);
    }

    /// After the peer gained pieces: note a complete peer, become interested if it has
    /// something we lack, and ask for it.
    /// `new` is the piece a HAVE announced; None after a whole bitfield.
    fn after_peer_has(&mut self, ring: &mut Ring, index: usize, t: usize, new: Option<u32>) {
        let Some(conn) = self.conns[index].as_mut() else {
            return;
        };
        let shared = &self.torrents[t].shared;
        if counts_as_receiver(conn.opened_complete, conn.uploaded_to, &conn.have) {
            if let Ok(mut book) = shared.peers.lock() {
                book.completed.insert(conn.peer_id);
            }
        }
        if !conn.am_interested && !shared.all_verified() {
            let wants = match new {
                Some(i) => !shared.verified.get(i),
                None => conn.have.ones().any(|i| !shared.verified.get(i)),
            };
            if wants {
                conn.am_interested = true;
                Message::Interested.encode(&mut conn.ctrl_out);
                self.dirty.push(index);
            }
        }
        conn.refill_blocked = false;
        self.fill_requests(ring, index);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_block(
        &mut self,
        ring: &mut Ring,
        index: usize,
        piece: u32,
        begin: u32,
        block_len: u32,
        offset: u32,
        data: &[u8],
    ) -> Result<(), String> {
        let conn = self.conns[index].as_ref().ok_or("gone")?;
        let t = conn.torrent.ok_or("block before handshake")?;
        let me = ConnRef {
            index,
            gen: conn.gen,
        };
        let lt = &mut self.torrents[t];
        let n = lt.shared.piece_count();
        if piece >= n {
            return Err(format!("block for piece {piece} of {n}"));
        }
        let size = lt.shared.meta.piece_size(piece);
        if u64::from(begin) + u64::from(block_len) > u64::from(size) {
            return Err(format!(
                "block past the end of piece {piece}: begin {begin} length {block_len}"
            ));
        }
        let Some(a) = lt.assemblies.get_mut(&piece) else {
            return Ok(()); // not (or no longer) wanted: a late block after a cancel
        };
        let b = (begin / BLOCK_SIZE) as usize;
        let expected_len = (size - begin).min(BLOCK_SIZE);
        if a.owner != me
            || !begin.is_multiple_of(BLOCK_SIZE)
            || block_len != expected_len
            || a.blocks.get(b) != Some(&BlockState::Requested)
        {
            return Ok(()); // not requested from this peer: ignore the bytes
        }
        let Some(buf) = self.pool.data_mut(a.slot) else {
            return Ok(());
        };
        let at = (begin + offset) as usize;
        buf[at..at + data.len()].copy_from_slice(data);
        if offset as usize + data.len() < block_len as usize {
            return Ok(());
        }
        a.blocks[b] = BlockState::Received;
        let now = Instant::now();
        a.received += 1;
        lt.shared
            .counters
            .downloaded
            .fetch_add(u64::from(block_len), Ordering::Relaxed);
        let whole = a.received as usize == a.blocks.len();
        if let Some(conn) = self.conns[index].as_mut() {
            conn.requests_out = conn.requests_out.saturating_sub(1);
            conn.last_block = now;
            conn.rate_bytes += u64::from(block_len);
            if conn.locality == Locality::Rack && conn.our_place.is_some() {
                lt.shared.note_rack_block();
            } else if conn.locality != Locality::Rack {
                lt.shared
                    .counters
                    .downloaded_outside_rack
                    .fetch_add(u64::from(block_len), Ordering::Relaxed);
            }
        }
        if whole {
            self.on_piece_received(ring, t, piece, index);
        }
        let low = self.conns[index].as_ref().is_some_and(|c| {
            let depth = c.request_depth();
            let batch = REQUEST_REFILL_BATCH.min(depth / 4).max(1);
            !c.refill_blocked && c.requests_out + batch <= depth
        });
        if whole || low {
            self.fill_requests(ring, index);
        }
        Ok(())
    }

    /// Every block of a piece is in: verify it and write it.
    fn on_piece_received(&mut self, ring: &mut Ring, t: usize, piece: u32, from: usize) {
        let lt = &mut self.torrents[t];
        let Some(a) = lt.assemblies.remove(&piece) else {
            return;
        };
        if let Some(Some(conn)) = self.conns.get_mut(from) {
            conn.owned_pieces.retain(|&p| p != piece);
        }
        let shared = lt.shared.clone();
        let size = shared.meta.piece_size(piece) as usize;
        if shared.verified.get(piece) {
            // An endgame duplicate lost the race.
            self.pool.release(a.slot);
            return;
        }
        // Called while handling this connection's data, so it is alive.
        let addr = self.conns[from]
            .as_ref()
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.addr);
        let from_ref = PieceSource {
            index: from,
            gen: self.gens[from],
            addr,
        };
        let tag = self.next_hash_tag;
        self.next_hash_tag += 1;
        if self
            .hasher
            .submit(&mut self.pool, a.slot, size, tag, &self.hash_tx, &self.wake)
        {
            self.hashing.insert(
                tag,
                Hashing {
                    torrent: t,
                    piece,
                    claimed: a.claimed,
                    from: from_ref,
                },
            );
        } else {
            let digest = crate::verify::sha1(&self.pool.data(a.slot)[..size]);
            self.on_piece_hashed(ring, t, piece, a.slot, a.claimed, from_ref, digest);
        }
    }

    fn drain_hashes(&mut self, ring: &mut Ring) {
        while let Ok(done) = self.hash_rx.try_recv() {
            HashPool::finished(&mut self.pool, &done);
            if let Some(h) = self.hashing.remove(&done.tag) {
                self.on_piece_hashed(
                    ring,
                    h.torrent,
                    h.piece,
                    done.slot,
                    h.claimed,
                    h.from,
                    done.digest,
                );
            }
        }
    }

    /// A received piece's hash is known: store it, or discard it and count a strike.
    #[allow(clippy::too_many_arguments)]
    fn on_piece_hashed(
        &mut self,
        ring: &mut Ring,
        t: usize,
        piece: u32,
        slot: SlotId,
        claimed: bool,
        from: PieceSource,
        digest: [u8; 20],
    ) {
        let shared = self.torrents[t].shared.clone();
        if self.shutting_down || shared.verified.get(piece) || shared.failed() {
            self.pool.release(slot);
            if claimed && !shared.verified.get(piece) {
                shared.claimed.clear(piece);
            }
            return;
        }
        if digest != shared.meta.info.pieces[piece as usize] {
            self.pool.release(slot);
            if claimed {
                shared.claimed.clear(piece);
            }
            shared
                .counters
                .hash_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(piece, peer = %from.addr, "piece failed its hash check; fetching it again");
            {
                let addr = from.addr;
                let banned = shared.peers.lock().is_ok_and(|mut book| {
                    let strikes = book.strikes.entry(addr.ip()).or_insert(0);
                    *strikes += 1;
                    if *strikes >= STRIKES_BEFORE_BAN {
                        // Once the ban expires, it takes as many strikes again.
                        book.strikes.remove(&addr.ip());
                        book.banned.ban(addr.ip(), Instant::now());
                        true
                    } else {
                        false
                    }
                });
                let alive =
                    matches!(self.conns.get(from.index), Some(Some(c)) if c.gen == from.gen);
                if banned && alive {
                    tracing::warn!(%addr, "peer banned after repeated bad pieces");
                    self.close(ring, from.index, "banned: sent corrupt data");
                }
            }
            return;
        }
        // The write first: until it is queued, nothing shows this piece in progress, and a
        // refill below could pick it again as an endgame duplicate.
        let ops = shared.storage.write_plan(piece);
        self.start_disk_job(ring, t, piece, slot, DiskKind::Write, ops);
        if let Some(Some(c)) = self.conns.get_mut(from.index) {
            if c.gen == from.gen && !c.proven {
                c.proven = true;
                c.refill_blocked = false;
                self.fill_requests(ring, from.index);
            }
        }
    }

    // ---- disk --------------------------------------------------------------------------

    fn start_disk_job(
        &mut self,
        ring: &mut Ring,
        t: usize,
        piece: u32,
        slot: SlotId,
        kind: DiskKind,
        ops: Vec<IoOp>,
    ) {
        let job_index = match self.disk_jobs.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.disk_jobs.push(None);
                self.disk_jobs.len() - 1
            }
        };
        let write = matches!(kind, DiskKind::Write);
        let mut submitted = 0;
        let mut error = None;
        for (seq, op) in ops.iter().enumerate() {
            if ring.file_io(
                &mut self.pool,
                slot,
                op,
                write,
                token(K_DISK, seq as u32, job_index as u32),
            ) {
                submitted += 1;
            } else {
                error = Some(format!("piece {piece}: I/O plan outside the piece buffer"));
            }
        }
        self.disk_jobs[job_index] = Some(DiskJob {
            torrent: t,
            piece,
            slot,
            kind,
            ops,
            pending: submitted,
            error,
        });
        if submitted == 0 {
            self.finish_disk_job(ring, job_index);
        }
    }

    fn on_disk(&mut self, ring: &mut Ring, job_index: usize, op_index: usize, result: i32) {
        let Some(Some(job)) = self.disk_jobs.get_mut(job_index) else {
            return;
        };
        job.pending = job.pending.saturating_sub(1);
        // A write must move its whole (aligned) length; a read of a padded tail may stop at
        // the end of the file, but must bring at least the file's real bytes.
        let need = job.ops.get(op_index).map_or(0, |op| match job.kind {
            DiskKind::Write => op.len,
            DiskKind::Read(_) => op.data_len,
        });
        if result < 0 {
            let err = std::io::Error::from_raw_os_error(-result);
            job.error
                .get_or_insert_with(|| format!("piece {}: {err}", job.piece));
        } else if (result as u32) < need {
            job.error.get_or_insert_with(|| {
                format!(
                    "piece {}: short transfer ({result} of {need} bytes)",
                    job.piece
                )
            });
        }
        if job.pending == 0 {
            self.finish_disk_job(ring, job_index);
        }
    }

    fn finish_disk_job(&mut self, ring: &mut Ring, job_index: usize) {
        let Some(job) = self.disk_jobs.get_mut(job_index).and_then(Option::take) else {
            return;
        };
        let lt = &mut self.torrents[job.torrent];
        let shared = lt.shared.clone();
        match (job.kind, job.error) {
            (DiskKind::Write, Some(e)) => {
                self.pool.release(job.slot);
                let files: Vec<String> = job
                    .ops
                    .iter()
                    .map(|op| {
                        shared.storage.layout().files()[op.file]
                            .path
                            .display()
                            .to_string()
                    })
                    .collect();
                shared.fail(format!("writing {}: {e}", files.join(", ")));
            }
            (DiskKind::Write, None) => {
                for op in &job.ops {
                    shared.storage.note_written(op.file);
                }
                shared.mark_verified(job.piece);
                if shared.all_verified() {
                    tracing::info!(torrent = %crate::hex(&shared.info_hash()), "every piece verified and written; making it durable");
                }
                shared.note_piece_stored(u64::from(shared.meta.piece_size(job.piece)));
                let whole = ReadRange {
                    piece: job.piece,
                    start: 0,
                    end: shared.meta.piece_size(job.piece),
                };
                self.cache_insert(job.torrent, whole, job.slot, true);
                self.announce_piece(job.torrent, job.piece);
                for link in self
                    .links
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != self.index)
                    .map(|(_, l)| l)
                {
                    link.send(Command::Have {
                        info_hash: shared.info_hash(),
                        piece: job.piece,
                    });
                }
            }
            (DiskKind::Read(range), Some(e)) => {
                lt.reads.retain(|r| *r != range);
                self.pool.release(job.slot);
                tracing::error!(piece = job.piece, err = %e, "reading a piece to upload failed");
                let waiting: Vec<usize> = lt.conns.clone();
                for c in waiting {
                    let serves = self.conns[c]
                        .as_ref()
                        .is_some_and(|c| c.upload_queue.iter().any(|r| r.piece == job.piece));
                    if serves {
                        self.close(ring, c, "cannot read the piece it asked for");
                    }
                }
            }
            (DiskKind::Read(range), None) => {
                lt.reads.retain(|r| *r != range);
                // Pad-file ranges are never read; a padded tail read may have left bytes there.
                if let Some(buf) = self.pool.data_mut(job.slot) {
                    shared.storage.zero_gaps(job.piece, buf);
                }
                self.cache_insert(job.torrent, range, job.slot, false);
                let conns = self.torrents[job.torrent].conns.clone();
                self.dirty.extend(conns);
            }
        }
    }

    fn cache_insert(&mut self, t: usize, range: ReadRange, slot: SlotId, downloaded: bool) {
        self.clock += 1;
        let lt = &mut self.torrents[t];
        lt.cache.push(CacheEntry {
            range,
            slot,
            last_used: self.clock,
            downloaded,
        });
        let piece_len = lt.shared.storage.piece_buffer_len().max(1);
        let limit = CACHE_PIECES_MIN.max(self.pool.budget() / 2 / piece_len);
        while lt.cache.len() > limit {
            let victim = lt
                .cache
                .iter()
                .enumerate()
                .filter(|(_, e)| !self.pool.is_pinned(e.slot))
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i);
            match victim {
                Some(i) => {
                    let e = lt.cache.swap_remove(i);
                    self.pool.release(e.slot);
                }
                None => break,
            }
        }
    }

    /// Frees the least recently used unpinned cached piece of any torrent.
    fn evict_one(&mut self) -> bool {
        let mut best: Option<(usize, usize, u64)> = None;
        for (t, lt) in self.torrents.iter().enumerate() {
            for (i, e) in lt.cache.iter().enumerate() {
                if !self.pool.is_pinned(e.slot) && best.is_none_or(|(_, _, u)| e.last_used < u) {
                    best = Some((t, i, e.last_used));
                }
            }
        }
        let Some((t, i, _)) = best else { return false };
        let e = self.torrents[t].cache.swap_remove(i);
        self.pool.release(e.slot);
        true
    }

    fn acquire_slot(&mut self, ring: &mut Ring, len: usize) -> Option<SlotId> {
        loop {
            if let Some(s) = self.pool.acquire(ring, len) {
                return Some(s);
            }
            if !self.evict_one() {
                return None;
            }
        }
    }

    /// Sends HAVE for a new piece to this core's peers of the torrent.
    fn announce_piece(&mut self, t: usize, piece: u32) {
        let lt = &self.torrents[t];
        let complete = lt.shared.all_verified();
        for &c in &lt.conns {
            if let Some(conn) = self.conns[c].as_mut() {
                // Every peer hears it, seeds too: a sender counts finished receivers by them.
                Message::Have { index: piece }.encode(&mut conn.ctrl_out);
                if complete && conn.am_interested {
                    conn.am_interested = false;
                    Message::NotInterested.encode(&mut conn.ctrl_out);
                }
                self.dirty.push(c);
            }
        }
    }

    // ---- requesting ----------------------------------------------------------------------

    /// Keeps up to `max_requests` blocks in flight from this peer.
    fn fill_requests(&mut self, ring: &mut Ring, index: usize) {
        let Some(conn) = self.conns[index].as_ref() else {
            return;
        };
        let Some(t) = conn.torrent else { return };
        if conn.peer_choking || !matches!(conn.phase, Phase::Active) || self.shutting_down {
            return;
        }
        let shared = self.torrents[t].shared.clone();
        if shared.failed() || shared.all_verified() {
            return;
        }
        let me = ConnRef {
            index,
            gen: conn.gen,
        };
        let depth = conn.request_depth();
        let was_idle = conn.requests_out == 0;
        let mut budget = depth.saturating_sub(conn.requests_out);
        let mut blocked = false;
        // Under --max-download-rate, requests go out only as fast as the rate allows.
        let limit = self.download_limit.clone();
        if let Some(l) = &limit {
            let block = u64::from(BLOCK_SIZE);
            let granted = l.take(u64::from(budget) * block);
            l.give_back(granted % block);
            let allowed = (granted / block) as u32;
            if allowed < budget {
                blocked = true;
            }
            budget = allowed;
        }
        let budget_taken = budget;
        let mut out = Vec::new();
        let mut owned = conn.owned_pieces.clone();
        let mut i = 0;
        while budget > 0 {
            // Next missing block of the pieces this peer is filling.
            if let Some(&piece) = owned.get(i) {
                if let Some(a) = self.torrents[t].assemblies.get_mut(&piece) {
                    let size = shared.meta.piece_size(piece);
                    for (b, state) in a.blocks.iter_mut().enumerate() {
                        if budget == 0 {
                            break;
                        }
                        if *state == BlockState::Missing {
                            *state = BlockState::Requested;
                            let begin = b as u32 * BLOCK_SIZE;
                            let length = (size - begin).min(BLOCK_SIZE);
                            Message::Request {
                                index: piece,
                                begin,
                                length,
                            }
                            .encode(&mut out);
                            budget -= 1;
                        }
                    }
                }
                i += 1;
                continue;
            }
            // Start a new piece (an unproven peer fills one at a time).
            if !self.conns[index].as_ref().is_some_and(|c| c.proven) && !owned.is_empty() {
                blocked = true;
                break;
            }
            let Some((piece, claimed)) = self.pick(t, index) else {
                blocked = true;
                break;
            };
            let size = shared.meta.piece_size(piece) as usize;
            let Some(slot) = self.acquire_slot(ring, shared.storage.piece_buffer_len()) else {
                if claimed {
                    shared.claimed.clear(piece);
                }
                blocked = true;
                break;
            };
            let blocks = (size as u32).div_ceil(BLOCK_SIZE).max(1) as usize;
            self.torrents[t].assemblies.insert(
                piece,
                Assembly {
                    slot,
                    owner: me,
                    blocks: vec![BlockState::Missing; blocks],
                    received: 0,
                    claimed,
                },
            );
            owned.push(piece);
        }
        if let Some(l) = &limit {
            l.give_back(u64::from(budget) * u64::from(BLOCK_SIZE));
        }
        if let Some(conn) = self.conns[index].as_mut() {
            conn.requests_out += budget_taken - budget;
            conn.owned_pieces = owned;
            conn.refill_blocked = blocked;
            if was_idle {
                // The stall clock starts with the first request.
                conn.last_block = Instant::now();
            }
            if !out.is_empty() {
                conn.ctrl_out.extend_from_slice(&out);
                self.dirty.push(index);
            }
        }
    }

    /// A piece to fetch from this peer, and whether we hold its claim (false in endgame,
    /// where another peer is already fetching it).
    fn pick(&self, t: usize, index: usize) -> Option<(u32, bool)> {
        let conn = self.conns[index].as_ref()?;
        let lt = &self.torrents[t];
        let shared = &lt.shared;
        let missing = shared.piece_count() - shared.verified.count_ones();
        // The last few pieces: a remote peer may be asked beyond the rack's share.
        let tail = missing as usize <= self.links.len().max(1);
        let rack = conn.locality == Locality::Rack;
        // The last eighth, from a remote seed (the origin): it has sent every piece once
        // and its uplink would idle while rack peers hand the newest pieces on one upload
        // at a time. It may be asked for what rack peers have too, rarest over the swarm
        // first: a few pieces cross the rack uplink twice.
        let seed_tail = !rack
            && conn.have.is_complete()
            && missing.saturating_mul(SEED_TAIL_FRACTION) <= shared.piece_count();
        let input = PickInput {
            peer_has: &conn.have,
            verified: &shared.verified,
            claimed: &shared.claimed,
            // Rarest first counted within the rack for a rack peer.
            availability: if rack {
                &shared.rack_availability
            } else {
                &shared.availability
            },
            start: conn.pick_start,
            refused: (conn.refused_since.is_some()).then_some(&conn.refused),
            remote: (!rack && !seed_tail).then(|| RemoteRule {
                rack_availability: &shared.rack_availability,
                share: shared.share(),
                beyond_share: tail || shared.rack_quiet_for(RACK_QUIET),
                seen_outside: &shared.seen_outside,
                overdue_since: shared.overdue_since(SHARE_GRACE),
            }),
        };
        if let Some(p) = picker::pick_and_claim(&input) {
            return Some((p, true));
        }
        // Endgame: once every missing piece is claimed, fetch the stragglers another core
        // is fetching (pieces in progress here, down to their write, are not duplicated).
        // Not before: a duplicate costs a piece of download, and of rack uplink when it
        // comes from outside, so a remote peer only duplicates what no rack peer has.
        if missing > 0 && shared.verified.count_neither(&shared.claimed) == 0 {
            return picker::pick_endgame(
                &conn.have,
                &shared.verified,
                &shared.claimed,
                conn.pick_start,
                |p| {
                    self.in_progress(t, p)
                        || conn.refused.get(p)
                        || (!rack
                            && shared
                                .rack_availability
                                .get(p as usize)
                                .is_some_and(|a| a.load(Ordering::Relaxed) > 0))
                },
            )
            .map(|p| (p, false));
        }
        None
    }

    /// Whether this worker is receiving, hashing or writing piece `piece` of torrent `t`.
    fn in_progress(&self, t: usize, piece: u32) -> bool {
        self.torrents[t].assemblies.contains_key(&piece)
            || self
                .hashing
                .values()
                .any(|h| h.torrent == t && h.piece == piece)
            || self
                .disk_jobs
                .iter()
                .flatten()
                .any(|j| j.torrent == t && j.piece == piece && matches!(j.kind, DiskKind::Write))
    }

    // ---- commands and housekeeping -------------------------------------------------------

    fn drain_commands(&mut self, ring: &mut Ring) {
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Command::AddTorrent(shared) => {
                    // Room for a few pieces of this torrent however large they are.
                    self.pool
                        .raise_budget(8 * shared.storage.piece_buffer_len());
                    self.torrents.push(LocalTorrent {
                        shared,
                        assemblies: HashMap::new(),
                        cache: Vec::new(),
                        reads: Vec::new(),
                        conns: Vec::new(),
                        waiting_published: 0,
                        removing: None,
                    });
                }
                Command::RemoveTorrent { info_hash, done } => {
                    self.begin_removal(ring, info_hash, done)
                }
                Command::Connect { info_hash, addr } => self.connect(ring, info_hash, addr, 1),
                Command::Have { info_hash, piece } => {
                    if let Some(t) = self.torrent_index(&info_hash) {
                        // An endgame duplicate of a piece another core finished is dropped.
                        if let Some(owner) =
                            self.torrents[t].assemblies.get(&piece).map(|a| a.owner)
                        {
                            self.abandon(t, piece, owner);
                        }
                        self.announce_piece(t, piece);
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
        self.retries.retain(|r| r.info_hash != info_hash);
        self.torrents[t].removing = Some(done);
        // Every connection of the torrent, also those still connecting or handshaking
        // (they are in `lt.conns` only once active).
        let ours: Vec<usize> = (0..self.conns.len())
            .filter(|&i| self.conns[i].as_ref().is_some_and(|c| c.torrent == Some(t)))
            .collect();
        for c in ours {
            self.close(ring, c, "torrent removed");
        }
        // Closing queued reconnects to a peer that was serving us.
        self.retries.retain(|r| r.info_hash != info_hash);
        self.finish_removals();
    }

    /// Forgets removed torrents whose disk and hash work is over and whose buffers are
    /// no longer under a send. The index of every later torrent shifts down by one, in
    /// the three places that hold torrent indices (connections, hash jobs, disk jobs).
    fn finish_removals(&mut self) {
        let mut t = 0;
        while t < self.torrents.len() {
            let lt = &self.torrents[t];
            let busy = lt.removing.is_none()
                || !lt.conns.is_empty()
                || self.conns.iter().flatten().any(|c| c.torrent == Some(t))
                || !lt.reads.is_empty()
                || self.hashing.values().any(|h| h.torrent == t)
                || self.disk_jobs.iter().flatten().any(|j| j.torrent == t)
                || lt
                    .cache
                    .iter()
                    .map(|e| e.slot)
                    .chain(lt.assemblies.values().map(|a| a.slot))
                    .any(|s| self.pool.is_pinned(s));
            if busy {
                t += 1;
                continue;
            }
            let lt = self.torrents.remove(t);
            for slot in lt.cache.iter().map(|e| e.slot) {
                self.pool.release(slot);
            }
            for (piece, a) in lt.assemblies {
                if a.claimed {
                    lt.shared.claimed.clear(piece);
                }
                self.pool.release(a.slot);
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
            if let Some(done) = lt.removing {
                done.send(()).ok();
            }
        }
    }

    fn begin_shutdown(&mut self, ring: &mut Ring) {
        self.shutting_down = true;
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

    fn tick(&mut self, ring: &mut Ring) {
        let now = Instant::now();
        // Reconnects that are due.
        let due: Vec<RetryConnect> = {
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retries)
                .into_iter()
                .partition(|r| r.due <= now);
            self.retries = later;
            due
        };
        for r in due {
            self.connect(ring, r.info_hash, r.addr, r.attempt);
        }
        // Timeouts and keep-alives.
        for i in 0..self.conns.len() {
            let Some(conn) = self.conns[i].as_mut() else {
                continue;
            };
            match conn.phase {
                Phase::Connecting | Phase::Handshaking { .. } => {
                    if now.duration_since(conn.started) > HANDSHAKE_TIMEOUT {
                        self.close(ring, i, "handshake timed out");
                    }
                }
                Phase::Active => {
                    conn.sample_rate(now);
                    if conn
                        .refused_since
                        .is_some_and(|at| now.duration_since(at) >= REFUSAL_MEMORY)
                    {
                        conn.refused_since = None;
                        conn.refused = Bitfield::new(conn.refused.len());
                    }
                    if conn.requests_out > 0 && now.duration_since(conn.last_block) > STALL_TIMEOUT
                    {
                        self.drop_peer(ring, i, "stalled: no requested block for 20 s");
                    } else if conn.sending && now.duration_since(conn.last_send) > SEND_TIMEOUT {
                        self.drop_peer(ring, i, "not reading what we send");
                    } else if conn.ctrl_out.len() > MAX_CTRL_BACKLOG {
                        self.drop_peer(ring, i, "too much unsent data queued");
                    } else if now.duration_since(conn.last_send) > KEEPALIVE_EVERY {
                        Message::KeepAlive.encode(&mut conn.ctrl_out);
                        self.dirty.push(i);
                    } else if !conn.upload_queue.is_empty() {
                        // A read that found no free buffer earlier.
                        self.dirty.push(i);
                    }
                }
            }
        }
        // Keep every downloading peer busy (a buffer may have freed up).
        for i in 0..self.conns.len() {
            let Some(conn) = self.conns[i].as_mut() else {
                continue;
            };
            if !matches!(conn.phase, Phase::Active) {
                continue;
            }
            conn.refill_blocked = false;
            if !conn.peer_choking {
                self.fill_requests(ring, i);
            }
        }
        // Idle peers lose their slots, slots rotate, waiting peers get free ones.
        for t in 0..self.torrents.len() {
            self.rechoke(t, now);
        }
        if self.accept_paused && !self.shutting_down {
            self.accept_paused = false;
            if let Some(l) = &self.listener {
                ring.accept_multi(l.as_raw_fd(), token(K_ACCEPT, 0, 0));
            }
        }
        self.finish_removals();
        // Stop a failed torrent's transfers.
        for t in 0..self.torrents.len() {
            if self.torrents[t].shared.failed() {
                let conns = self.torrents[t].conns.clone();
                for c in conns {
                    self.close(ring, c, "torrent stopped after an error");
                }
            }
        }
    }
}
