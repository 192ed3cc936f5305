//! A session: one BitTorrent peer serving and fetching torrents on a thread-per-core
//! io_uring engine.
//!
//! [`Session::start`] spawns one pinned worker per core (see [`worker`]), each with its own
//! ring and, when listening, its own `SO_REUSEPORT` listener. A torrent is known to every
//! worker; its connections live on whichever core accepted or opened them, and the cores
//! share only the small lock-free state in [`torrent`].

mod announce;
mod failures;
mod limits;
mod readahead;
mod torrent;
mod worker;

pub use announce::{announce_torrent, find_peers, tracker_tiers, TrackerPlace};
pub use failures::{PeerFailure, PeerFailureReason, PeerFailures};
pub use ringswarm_swarm::locality::{Locality, Locator, NamedPlace};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use ringswarm_swarm::limits::{RateLimiter, DEFAULT_BAN_DURATION};

use crate::bitfield::Bitfield;
use crate::metainfo::Metainfo;
use crate::reactor::{self, net, EventFd, HashPool};
use crate::storage::{Layout, OpenMode, Storage};
use torrent::TorrentShared;
use worker::{Command, Worker, WorkerConfig, WorkerLink};

/// Piece-buffer memory per worker core (pool of registered piece buffers).
const PIECE_MEMORY_PER_CORE: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("{0}")]
    Config(String),
    /// A `Seed`'s data is not the torrent's (typed, so callers need not read the text).
    #[error("{}: the data does not match the torrent ({verified} of {pieces} pieces verify)", path.display())]
    Mismatch {
        path: PathBuf,
        verified: u32,
        pieces: u32,
    },
}

/// Upload slots per torrent by default: enough for every peer a host meets in a fleet
/// (the tracker hands out at most 200), so no rack peer is left choked and a first
/// seeder's pieces go to hosts of every rack rather than to the 64 that came first,
/// whose racks then passed every piece to every other rack. TCP shares the link among
/// the slots, so more slots cost no bandwidth (`ringswarm sim`, 64 → 256 slots: 3 racks
/// of 80, last host 1.77 → 1.47 × the bound; 20 racks of 80, 1.86 → 1.66 ×; 1 000 hosts
/// in racks of 50, 1.53 → 1.47 ×; 6 racks of 50, 1.42 × both).
pub const DEFAULT_UPLOAD_SLOTS: usize = 256;

/// Session settings.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Worker threads, one per core; 0 means all online CPUs.
    pub cores: usize,
    /// Where to accept peers; None accepts none (a pure downloader).
    pub listen: Option<SocketAddr>,
    /// Our peer id; the default is `-RS0100-` and 12 random bytes.
    pub peer_id: [u8; 20],
    /// Peers unchoked at once per torrent (a trusted fleet: no tit-for-tat); the
    /// default is [`DEFAULT_UPLOAD_SLOTS`].
    pub upload_slots: usize,
    /// Places us and our peers (rack-local preference); the default places nobody.
    /// [`Session::set_locator`] replaces it while the session runs.
    pub locator: Arc<Locator>,
    /// Host-wide payload limits in bytes per second, over every torrent and core.
    pub max_upload_rate: Option<u64>,
    pub max_download_rate: Option<u64>,
    /// Peers at once, connecting or connected, over every torrent and core.
    pub max_peers: u32,
    /// Peers at once from or to one IPv4 address or IPv6 /64 (127.0.0.1 and ::1 exempt).
    pub max_peers_per_ip: u32,
    /// How long an address that sent corrupt data stays banned.
    pub ban_duration: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            cores: 0,
            listen: None,
            peer_id: random_peer_id(),
            upload_slots: DEFAULT_UPLOAD_SLOTS,
            locator: Arc::new(Locator::default()),
            max_upload_rate: None,
            max_download_rate: None,
            max_peers: 1000,
            max_peers_per_ip: 16,
            ban_duration: DEFAULT_BAN_DURATION,
        }
    }
}

/// `-RS0100-` followed by 12 random alphanumerics (the Azureus-style convention).
pub fn random_peer_id() -> [u8; 20] {
    use rand::Rng;
    let mut id = *b"-RS0100-000000000000";
    let mut rng = rand::rng();
    for b in &mut id[8..] {
        *b = rng.sample(rand::distr::Alphanumeric);
    }
    id
}

/// What a torrent is added for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TorrentMode {
    /// Fetch what is missing (resuming what is verified), then keep serving.
    Download,
    /// The data is all there: check it (or trust a complete resume file) and serve it.
    Seed,
}

#[derive(Clone, Debug)]
pub struct TorrentSpec {
    pub metainfo: Arc<Metainfo>,
    /// The destination directory; files land at `dest/<relative_path>`.
    pub dest: PathBuf,
    pub mode: TorrentMode,
    /// Peers to connect to.
    pub peers: Vec<SocketAddr>,
    /// The data is to be locked in memory once complete: write and read it through the page
    /// cache and leave it there (see [`Storage::open_resident`]), instead of `O_DIRECT`.
    pub resident: bool,
}

/// A snapshot of a torrent's progress.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TorrentStats {
    pub piece_count: u32,
    pub verified_pieces: u32,
    pub total_bytes: u64,
    pub verified_bytes: u64,
    /// Payload bytes received, including any that failed verification.
    pub downloaded_bytes: u64,
    pub uploaded_bytes: u64,
    /// Payload bytes from / to peers outside our rack (0 while we do not know our rack).
    pub downloaded_outside_rack_bytes: u64,
    pub uploaded_outside_rack_bytes: u64,
    pub connected_peers: u32,
    /// Every piece verified, written, and made durable (fsync).
    pub complete: bool,
    /// A fatal error (disk full, storage failure): the torrent stopped.
    pub error: Option<String>,
    pub hash_failures: u32,
    pub banned_peers: u32,
    /// Distinct remote peers that received data from us and then announced every piece
    /// (a peer claiming every piece from the start is not counted).
    pub peers_completed: u32,
    /// Upload requests served from the per-core recent-piece cache vs from disk.
    pub cache_hits: u64,
    pub cache_misses: u64,
}

/// A running session.
pub struct Session {
    links: Arc<Vec<WorkerLink>>,
    workers: Vec<JoinHandle<()>>,
    listen_addr: Option<SocketAddr>,
    torrents: Mutex<Vec<Arc<TorrentShared>>>,
    next_worker: Arc<AtomicUsize>,
    cores: usize,
    peer_id: [u8; 20],
    ban_duration: Duration,
    locator: SharedLocator,
}

/// The session's [`Locator`], replaceable while it runs (an agent's newer feed brings a new
/// topology). Workers read it once per new connection: a peer keeps the places it was
/// given when it connected, new connections get the new ones. A lock rather than an
/// atomic swap: it is read once per connection, never per message.
#[derive(Clone, Debug, Default)]
pub(crate) struct SharedLocator(Arc<std::sync::RwLock<Arc<Locator>>>);

impl SharedLocator {
    fn new(locator: Arc<Locator>) -> SharedLocator {
        SharedLocator(Arc::new(std::sync::RwLock::new(locator)))
    }

    /// The locator now.
    pub(crate) fn load(&self) -> Arc<Locator> {
        self.0
            .read()
            .map_or_else(|e| e.into_inner().clone(), |l| l.clone())
    }

    fn store(&self, locator: Locator) {
        let mut slot = self.0.write().unwrap_or_else(|e| e.into_inner());
        *slot = Arc::new(locator);
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SessionError {
    let context = context.into();
    move |source| SessionError::Io { context, source }
}

impl Session {
    pub fn start(config: SessionConfig) -> Result<Session, SessionError> {
        let cores = if config.cores == 0 {
            reactor::online_cpus()
        } else {
            config.cores
        };
        let online = reactor::online_cpus();
        let mut listeners = Vec::new();
        let mut listen_addr = None;
        if let Some(addr) = config.listen {
            net::ensure_port_free(addr).map_err(io_err(format!("listening on {addr}")))?;
            let first = net::listener(addr).map_err(io_err(format!("listening on {addr}")))?;
            let bound = net::local_addr(&first).map_err(io_err("reading the listen address"))?;
            listeners.push(Some(first));
            for _ in 1..cores {
                let l = net::listener(bound).map_err(io_err(format!("listening on {bound}")))?;
                listeners.push(Some(l));
            }
            listen_addr = Some(bound);
        }
        let mut receivers = Vec::new();
        let mut links = Vec::new();
        for _ in 0..cores {
            let (tx, rx) = crossbeam_channel::unbounded();
            let wake = Arc::new(EventFd::new().map_err(io_err("creating an eventfd"))?);
            links.push(WorkerLink { tx, wake });
            receivers.push(rx);
        }
        let links = Arc::new(links);
        let limiter = |rate: Option<u64>| {
            rate.filter(|&r| r > 0)
                .map(|r| Arc::new(RateLimiter::new(r, std::time::Instant::now())))
        };
        let upload_limit = limiter(config.max_upload_rate);
        let download_limit = limiter(config.max_download_rate);
        let conn_limits = Arc::new(limits::ConnectionLimits::new(
            config.max_peers,
            config.max_peers_per_ip,
        ));
        let hasher = Arc::new(HashPool::new(cores).map_err(io_err("spawning hashing threads"))?);
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(cores);
        let locator = SharedLocator::new(config.locator.clone());
        let mut workers = Vec::new();
        for (index, rx) in receivers.into_iter().enumerate() {
            let cfg = WorkerConfig {
                index,
                cpu: (cores <= online).then_some(index),
                peer_id: config.peer_id,
                listener: listeners.get_mut(index).and_then(Option::take),
                listen_port: listen_addr.map(|a| a.port()),
                source_ip: listen_addr
                    .map(|a| a.ip())
                    .filter(|ip| !ip.is_unspecified()),
                upload_slots: config.upload_slots as u32,
                piece_memory: PIECE_MEMORY_PER_CORE,
                links: links.clone(),
                rx,
                wake: links[index].wake.clone(),
                hasher: hasher.clone(),
                locator: locator.clone(),
                upload_limit: upload_limit.clone(),
                download_limit: download_limit.clone(),
                conn_limits: conn_limits.clone(),
            };
            let ready = ready_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("rs-worker-{index}"))
                .spawn(move || match Worker::new(cfg) {
                    Ok(w) => {
                        ready.send(Ok(())).ok();
                        w.run();
                    }
                    Err(e) => {
                        ready.send(Err(e)).ok();
                    }
                })
                .map_err(io_err("spawning a worker thread"))?;
            workers.push(handle);
        }
        let session = Session {
            links,
            workers,
            listen_addr,
            torrents: Mutex::new(Vec::new()),
            next_worker: Arc::new(AtomicUsize::new(0)),
            cores,
            peer_id: config.peer_id,
            ban_duration: config.ban_duration,
            locator,
        };
        for _ in 0..cores {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(SessionError::Io {
                        context: "setting up io_uring (is /proc/sys/kernel/io_uring_disabled 0?)"
                            .into(),
                        source: e,
                    })
                }
                Err(_) => return Err(SessionError::Config("a worker thread died at start".into())),
            }
        }
        Ok(session)
    }

    /// Our peer id, as sent in handshakes and announces.
    pub fn peer_id(&self) -> [u8; 20] {
        self.peer_id
    }

    /// The locator that places new connections now.
    pub fn locator(&self) -> Arc<Locator> {
        self.locator.load()
    }

    /// Places new connections with `locator` from now on (connected peers keep theirs).
    pub fn set_locator(&self, locator: Locator) {
        self.locator.store(locator);
    }

    /// The bound listening address (with the real port when 0 was asked for).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen_addr
    }

    /// Adds a torrent: opens its storage (a `Seed` checks the data first) and starts
    /// connecting to its peers.
    pub fn add_torrent(&self, spec: TorrentSpec) -> Result<TorrentHandle, SessionError> {
        let meta = spec.metainfo;
        let info_hash = meta.info_hash;
        if self
            .torrents
            .lock()
            .is_ok_and(|t| t.iter().any(|t| t.info_hash() == info_hash))
        {
            return Err(SessionError::Config(format!(
                "torrent {} is already added",
                crate::hex(&info_hash)
            )));
        }
        let layout = Layout::from_metainfo(&meta);
        let mode = match spec.mode {
            TorrentMode::Download => OpenMode::Download,
            TorrentMode::Seed => OpenMode::Seed,
        };
        let storage = Arc::new(if spec.resident {
            Storage::open_resident(&spec.dest, layout, mode)?
        } else {
            Storage::open(&spec.dest, layout, mode)?
        });
        let n = meta.piece_count();
        // The resume record where it still matches the files, a recheck elsewhere.
        let verified =
            storage.verified_at_start(&info_hash, &meta.info.pieces, self.cores.max(1))?;
        if spec.mode == TorrentMode::Seed && !verified.is_complete() {
            return Err(SessionError::Mismatch {
                path: spec.dest.join(meta.relative_path(&meta.info.files[0])),
                verified: verified.count_ones(),
                pieces: n,
            });
        }
        let shared = Arc::new(TorrentShared::new(
            meta,
            storage,
            spec.dest,
            self.ban_duration,
        ));
        for i in verified.ones() {
            shared.swarm.mark_verified(i);
        }
        match spec.mode {
            TorrentMode::Seed => {
                shared.complete.store(true, Ordering::Release);
                shared.swarm.initial_seed.store(true, Ordering::Release);
            }
            TorrentMode::Download => torrent::start_syncer(&shared),
        }
        if let Ok(mut t) = self.torrents.lock() {
            t.push(shared.clone());
        }
        for link in self.links.iter() {
            link.send(Command::AddTorrent(shared.clone()));
        }
        let handle = TorrentHandle {
            shared,
            links: self.links.clone(),
            next_worker: self.next_worker.clone(),
        };
        handle.add_peers(&spec.peers);
        Ok(handle)
    }

    /// Stops serving a torrent and forgets it: its peers are closed, its buffers freed, and
    /// its files closed once the last [`TorrentHandle`] (and announcer) of it is dropped.
    /// Waits up to `timeout` for every core to let go of it; false if one did not.
    pub fn remove_torrent(&self, info_hash: [u8; 20], timeout: Duration) -> bool {
        let shared = self.torrents.lock().ok().and_then(|mut list| {
            let at = list.iter().position(|t| t.info_hash() == info_hash)?;
            Some(list.swap_remove(at))
        });
        let Some(shared) = shared else {
            return true;
        };
        shared.stop_syncer();
        drop(shared);
        let (done_tx, done_rx) = crossbeam_channel::bounded(self.links.len());
        for link in self.links.iter() {
            link.send(Command::RemoveTorrent {
                info_hash,
                done: done_tx.clone(),
            });
        }
        let deadline = std::time::Instant::now() + timeout;
        (0..self.links.len()).all(|_| done_rx.recv_deadline(deadline).is_ok())
    }

    /// The info-hashes of the torrents added and not removed.
    pub fn torrent_hashes(&self) -> Vec<[u8; 20]> {
        self.torrents
            .lock()
            .map(|list| list.iter().map(|t| t.info_hash()).collect())
            .unwrap_or_default()
    }

    /// Stops every worker and waits for them; each torrent makes a last sync.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for link in self.links.iter() {
            link.send(Command::Shutdown);
        }
        for w in self.workers.drain(..) {
            w.join().ok();
        }
        if let Ok(torrents) = self.torrents.lock() {
            for t in torrents.iter() {
                t.stop_syncer();
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            self.stop();
        }
    }
}

/// A handle on a torrent of a running session.
#[derive(Clone)]
pub struct TorrentHandle {
    shared: Arc<TorrentShared>,
    links: Arc<Vec<WorkerLink>>,
    next_worker: Arc<AtomicUsize>,
}

impl TorrentHandle {
    pub fn info_hash(&self) -> [u8; 20] {
        self.shared.info_hash()
    }

    pub fn stats(&self) -> TorrentStats {
        self.shared.stats()
    }

    /// The pieces verified so far.
    pub fn verified_pieces(&self) -> Bitfield {
        self.shared.swarm.verified.snapshot()
    }

    /// Connects to more peers, spread over the worker cores.
    pub fn add_peers(&self, peers: &[SocketAddr]) {
        for &addr in peers {
            let w = self.next_worker.fetch_add(1, Ordering::Relaxed) % self.links.len().max(1);
            if let Some(link) = self.links.get(w) {
                link.send(Command::Connect {
                    info_hash: self.info_hash(),
                    addr,
                });
            }
        }
    }

    /// Why each peer we dialled failed last (address, reason, failures since it last
    /// connected), sorted by address; a peer that connected since is not listed.
    pub fn peer_failures(&self) -> Vec<PeerFailure> {
        self.shared.failures.snapshot()
    }

    /// Changes whenever [`TorrentHandle::peer_failures`] may have changed.
    pub fn peer_failures_generation(&self) -> u64 {
        self.shared.failures.generation()
    }

    /// Absolute paths of the torrent's files (for the mlock pass).
    pub fn file_paths(&self) -> Vec<PathBuf> {
        self.shared.storage.file_paths()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_locator_places_new_connections_and_leaves_loaded_ones() {
        let shared = SharedLocator::new(Arc::new(Locator::default()));
        let before = shared.load();
        assert!(before.is_blind());
        let topology = crate::tracker::topology::Topology::from_toml_str(
            "[[subnet]]\ncidr = \"127.0.1.0/24\"\ndc = \"lo\"\nrack = \"r1\"\n",
            "test",
        )
        .unwrap();
        shared.store(Locator::new(Some(topology), NamedPlace::default()));
        let ip = "127.0.1.4".parse().unwrap();
        let after = shared.load();
        assert_eq!(after.peer_place(ip, None).rack.as_deref(), Some("r1"));
        // What a worker loaded before (a connected peer's places) is unchanged.
        assert!(before.is_blind() && !before.places(ip));
        // Every clone (each worker's) sees the new one.
        assert!(shared.clone().load().places(ip));
    }
}
