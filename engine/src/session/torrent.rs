//! A torrent's state shared by every worker core, and its durability thread.
//!
//! The swarm state the cores share (lock-free on the hot path) is the swarm core's
//! [`Shared`]; here are the storage, the error, and the thread that makes written pieces
//! durable.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ringswarm_swarm::limits::BanList;
use ringswarm_swarm::Shared;

use super::failures::PeerFailures;
use super::TorrentStats;
use crate::metainfo::Metainfo;
use crate::storage::{resume, Storage};

/// Bytes verified since the last sync that trigger an early sync (besides the 1 s timer).
const SYNC_EVERY_BYTES: u64 = 256 << 20;

pub(crate) struct TorrentShared {
    pub meta: Arc<Metainfo>,
    pub storage: Arc<Storage>,
    pub dest: PathBuf,
    /// What the swarm cores of this torrent share (verified and claimed pieces,
    /// availability, grants, the peer book, counters).
    pub swarm: Arc<Shared>,
    pub complete: AtomicBool,
    pub error: Mutex<Option<String>>,
    /// Why dialled peers failed, per address (host-wide: every core records here).
    pub failures: PeerFailures,
    unsynced_bytes: AtomicU64,
    sync_tx: Mutex<Option<Sender<()>>>,
    syncer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl TorrentShared {
    pub fn new(
        meta: Arc<Metainfo>,
        storage: Arc<Storage>,
        dest: PathBuf,
        ban_duration: Duration,
    ) -> TorrentShared {
        let n = meta.piece_count();
        let piece_len = meta.piece_size(0);
        let last = meta.piece_size(n.saturating_sub(1));
        let swarm =
            Shared::new(n, piece_len, last, Instant::now()).with_bans(BanList::new(ban_duration));
        TorrentShared {
            swarm: Arc::new(swarm),
            complete: AtomicBool::new(false),
            error: Mutex::new(None),
            failures: PeerFailures::default(),
            unsynced_bytes: AtomicU64::new(0),
            sync_tx: Mutex::new(None),
            syncer: Mutex::new(None),
            meta,
            storage,
            dest,
        }
    }

    pub fn info_hash(&self) -> [u8; 20] {
        self.meta.info_hash
    }

    pub fn piece_count(&self) -> u32 {
        self.meta.piece_count()
    }

    pub fn all_verified(&self) -> bool {
        self.swarm.all_verified()
    }

    pub fn failed(&self) -> bool {
        self.error.lock().map(|e| e.is_some()).unwrap_or(true)
    }

    /// Records a fatal error; the first one wins.
    pub fn fail(&self, message: String) {
        if let Ok(mut e) = self.error.lock() {
            if e.is_none() {
                tracing::error!(torrent = %crate::hex(&self.info_hash()), "{message}");
                *e = Some(message);
            }
        }
    }

    /// Called by a worker after a verified piece is written.
    pub fn note_piece_stored(&self, bytes: u64) {
        let pending = self.unsynced_bytes.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if pending >= SYNC_EVERY_BYTES || self.all_verified() {
            self.unsynced_bytes.store(0, Ordering::Release);
            self.request_sync();
        }
    }

    pub fn request_sync(&self) {
        if let Ok(tx) = self.sync_tx.lock() {
            if let Some(tx) = tx.as_ref() {
                tx.try_send(()).ok();
            }
        }
    }

    /// Stops the durability thread and waits for its last sync.
    pub fn stop_syncer(&self) {
        if let Ok(mut tx) = self.sync_tx.lock() {
            tx.take();
        }
        let handle = self.syncer.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            h.join().ok();
        }
    }

    pub fn stats(&self) -> TorrentStats {
        let meta = &self.meta;
        let verified_pieces = self.swarm.verified.count_ones();
        let verified_bytes = self.swarm.counters.verified_bytes.load(Ordering::Relaxed);
        let c = &self.swarm.counters;
        let (banned, completed) = self
            .swarm
            .peers
            .lock()
            .map(|p| {
                (
                    p.banned.count(Instant::now()) as u32,
                    p.completed.len() as u32,
                )
            })
            .unwrap_or((0, 0));
        TorrentStats {
            piece_count: meta.piece_count(),
            verified_pieces,
            total_bytes: meta.info.total_length,
            verified_bytes,
            downloaded_bytes: c.downloaded.load(Ordering::Relaxed),
            uploaded_bytes: c.uploaded.load(Ordering::Relaxed),
            downloaded_outside_rack_bytes: c.downloaded_outside_rack.load(Ordering::Relaxed),
            uploaded_outside_rack_bytes: c.uploaded_outside_rack.load(Ordering::Relaxed),
            connected_peers: c.connected.load(Ordering::Relaxed),
            complete: self.complete.load(Ordering::Acquire),
            error: self.error.lock().ok().and_then(|e| e.clone()),
            hash_failures: c.hash_failures.load(Ordering::Relaxed),
            banned_peers: banned,
            peers_completed: completed,
            cache_hits: c.cache_hits.load(Ordering::Relaxed),
            cache_misses: c.cache_misses.load(Ordering::Relaxed),
        }
    }
}

/// Starts the thread that makes written pieces durable and records them in the resume
/// file: every second while pieces arrive (or sooner after [`SYNC_EVERY_BYTES`]), it takes
/// a snapshot of the verified set (a piece is marked verified only after its write
/// completed), fdatasyncs the files, and only then saves the snapshot. After the last
/// piece it truncates padded tails, fsyncs, and marks the torrent complete.
pub(crate) fn start_syncer(shared: &Arc<TorrentShared>) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    if let Ok(mut slot) = shared.sync_tx.lock() {
        *slot = Some(tx);
    }
    let weak = Arc::downgrade(shared);
    let name = format!("rs-sync-{}", &crate::hex(&shared.info_hash())[..8]);
    match std::thread::Builder::new()
        .name(name)
        .spawn(move || syncer(weak, rx))
    {
        Ok(h) => {
            if let Ok(mut slot) = shared.syncer.lock() {
                *slot = Some(h);
            }
        }
        Err(e) => shared.fail(format!("cannot start the sync thread: {e}")),
    }
}

fn syncer(weak: std::sync::Weak<TorrentShared>, rx: Receiver<()>) {
    let mut saved: Option<u32> = None;
    loop {
        let stop = matches!(
            rx.recv_timeout(Duration::from_secs(1)),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected)
        );
        let Some(t) = weak.upgrade() else { return };
        if t.failed() {
            return;
        }
        let snapshot = t.swarm.verified.snapshot();
        let count = snapshot.count_ones();
        let complete = count == t.piece_count();
        if saved != Some(count) {
            if complete {
                // Said here, by the one syncer, not by the core whose write came last (two
                // cores finishing together both saw every piece verified).
                tracing::info!(torrent = %crate::hex(&t.info_hash()), "every piece verified and written; making it durable");
            }
            let result = t
                .storage
                .sync()
                .and_then(|()| if complete { t.storage.finish() } else { Ok(()) })
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    t.storage
                        .save_resume(&t.info_hash(), &snapshot)
                        .map_err(|e| {
                            let path = resume::resume_path(&t.dest, &t.info_hash());
                            format!("writing resume file {}: {e}", path.display())
                        })
                });
            if let Err(e) = result {
                t.fail(e);
                return;
            }
            saved = Some(count);
        }
        if complete {
            t.complete.store(true, Ordering::Release);
            tracing::info!(torrent = %crate::hex(&t.info_hash()), "complete: verified and durable");
            return;
        }
        if stop {
            return;
        }
    }
}
