//! A torrent's state shared by every worker core, and its durability thread.
//!
//! Hot-path state is lock-free: atomic bitsets for verified and claimed pieces, atomic
//! availability counters and statistics. The mutex-guarded peer book is touched only when a
//! connection starts or ends, or a piece fails its hash.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::TorrentStats;
use crate::bitfield::AtomicBitfield;
use crate::metainfo::Metainfo;
use crate::picker::Share;
use crate::storage::{resume, Storage};

/// Hash failures from one address before it is banned.
pub(crate) const STRIKES_BEFORE_BAN: u32 = 2;

/// A first seeder's grant of a piece that no peer has announced after this long lapses,
/// and the piece may go to another peer (the first taker is slow, or stuck).
const GRANT_LAPSE: Duration = Duration::from_secs(10);

/// Bytes verified since the last sync that trigger an early sync (besides the 1 s timer).
const SYNC_EVERY_BYTES: u64 = 256 << 20;

/// Whether a peer counts as a receiver of ours (`send --receivers`, `peers_completed`): it
/// holds every piece by its own announcements, we sent it payload, and it did not open by
/// claiming every piece (HAVE ALL or a full BITFIELD at once is a seed, or a liar).
pub(crate) fn counts_as_receiver(
    opened_complete: bool,
    uploaded_to: u64,
    have: &crate::bitfield::Bitfield,
) -> bool {
    !opened_complete && uploaded_to > 0 && have.is_complete()
}

#[derive(Default)]
pub(crate) struct PeerBook {
    pub connected: HashSet<[u8; 20]>,
    pub completed: HashSet<[u8; 20]>,
    pub strikes: HashMap<IpAddr, u32>,
    pub banned: super::limits::BanList,
    /// Connected peers of our rack, by peer id (only when we know our rack).
    pub rack_peers: BTreeSet<[u8; 20]>,
}

#[derive(Default)]
pub(crate) struct Counters {
    /// Bytes of verified pieces (kept here so `stats` is O(1)).
    pub verified_bytes: AtomicU64,
    pub downloaded: AtomicU64,
    pub uploaded: AtomicU64,
    /// Of those, to or from peers outside our rack (bytes that crossed the rack uplink).
    pub downloaded_outside_rack: AtomicU64,
    pub uploaded_outside_rack: AtomicU64,
    pub hash_failures: AtomicU32,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub connected: AtomicU32,
    pub unchoked: AtomicU32,
    /// Interested peers waiting for an upload slot, over every core (a tick behind).
    pub waiting: AtomicU32,
}

pub(crate) struct TorrentShared {
    pub meta: Arc<Metainfo>,
    pub storage: Arc<Storage>,
    pub dest: PathBuf,
    pub verified: AtomicBitfield,
    pub claimed: AtomicBitfield,
    pub availability: Box<[AtomicU32]>,
    /// Like `availability`, counting only peers of our rack.
    pub rack_availability: Box<[AtomicU32]>,
    /// Our [`Share`] of the pieces fetched from outside the rack: `members << 32 | rank`.
    rack_share: AtomicU64,
    /// When a block last came from a rack peer, in ms since `epoch`.
    last_rack_block_ms: AtomicU64,
    /// Per piece, when a peer outside our rack first announced it with HAVE: ms since
    /// `epoch` + 1, 0 = not yet (see `picker::RemoteRule::seen_outside`).
    pub seen_outside: Box<[AtomicU64]>,
    epoch: Instant,
    pub counters: Counters,
    /// We are the first seeder (the data was all here when the torrent was added): every
    /// piece goes to one peer before any goes to a second ([`TorrentShared::grant`]).
    pub initial_seed: AtomicBool,
    /// Pieces handed to some peer (and not given back by its leaving).
    granted: AtomicBitfield,
    /// When each grant was made, in ms since `epoch`.
    granted_at: Box<[AtomicU64]>,
    /// Pieces some peer has announced holding (one copy is out), and how many.
    delivered: AtomicBitfield,
    delivered_count: AtomicU32,
    pub peers: Mutex<PeerBook>,
    pub complete: AtomicBool,
    pub error: Mutex<Option<String>>,
    unsynced_bytes: AtomicU64,
    sync_tx: Mutex<Option<Sender<()>>>,
    syncer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl TorrentShared {
    pub fn new(meta: Arc<Metainfo>, storage: Arc<Storage>, dest: PathBuf) -> TorrentShared {
        let n = meta.piece_count();
        TorrentShared {
            verified: AtomicBitfield::new(n),
            claimed: AtomicBitfield::new(n),
            availability: (0..n).map(|_| AtomicU32::new(0)).collect(),
            rack_availability: (0..n).map(|_| AtomicU32::new(0)).collect(),
            rack_share: AtomicU64::new(1 << 32),
            last_rack_block_ms: AtomicU64::new(0),
            seen_outside: (0..n).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
            counters: Counters::default(),
            initial_seed: AtomicBool::new(false),
            granted: AtomicBitfield::new(n),
            granted_at: (0..n).map(|_| AtomicU64::new(0)).collect(),
            delivered: AtomicBitfield::new(n),
            delivered_count: AtomicU32::new(0),
            peers: Mutex::new(PeerBook::default()),
            complete: AtomicBool::new(false),
            error: Mutex::new(None),
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

    /// Marks a piece verified; false when it already was.
    pub fn mark_verified(&self, piece: u32) -> bool {
        let new = self.verified.set(piece);
        if new {
            let size = u64::from(self.meta.piece_size(piece));
            self.counters
                .verified_bytes
                .fetch_add(size, Ordering::Relaxed);
        }
        new
    }

    /// Whether a first seeder serves `piece` to a peer asking for it: yes for the first
    /// peer to ask, and for anyone once every piece is out (some peer announced it); until
    /// then a piece handed to another peer is refused, so the seeder's upload feeds the
    /// swarm one whole copy before it repeats any piece, and the others get it from that
    /// peer. `ours` are the pieces already granted to this peer.
    pub fn grant(&self, piece: u32, ours: &mut crate::bitfield::Bitfield) -> bool {
        if !self.initial_seed.load(Ordering::Relaxed) || ours.get(piece) {
            return true;
        }
        if self.delivered_count.load(Ordering::Relaxed) >= self.piece_count()
            || self.delivered.get(piece)
        {
            return true;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let at = &self.granted_at[piece as usize];
        if self.granted.set(piece) {
            at.store(now, Ordering::Relaxed);
            ours.set(piece);
            return true;
        }
        // A lapsed grant is taken over (one peer at a time wins the exchange).
        let then = at.load(Ordering::Relaxed);
        let lapsed = now.saturating_sub(then) >= GRANT_LAPSE.as_millis() as u64;
        if lapsed
            && at
                .compare_exchange(then, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            ours.set(piece);
            return true;
        }
        false
    }

    /// A peer announced `piece`: that copy is out of the first seeder.
    pub fn note_delivered(&self, piece: u32) {
        if self.initial_seed.load(Ordering::Relaxed) && self.delivered.set(piece) {
            self.delivered_count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A peer left: the pieces granted to it that are not out yet go to the next asker.
    pub fn release_grants(&self, ours: &crate::bitfield::Bitfield) {
        if !self.initial_seed.load(Ordering::Relaxed) {
            return;
        }
        for piece in ours.ones() {
            if !self.delivered.get(piece) {
                self.granted.clear(piece);
            }
        }
    }

    /// Our share of the pieces missing from the rack.
    pub fn share(&self) -> Share {
        let v = self.rack_share.load(Ordering::Relaxed);
        Share {
            rank: v as u32,
            members: ((v >> 32) as u32).max(1),
        }
    }

    /// Adds or removes a rack peer and recomputes our share: our rank among the rack's
    /// peer ids and ours.
    pub fn set_rack_peer(&self, peer_id: [u8; 20], present: bool, our_id: &[u8; 20]) {
        let Ok(mut book) = self.peers.lock() else {
            return;
        };
        let changed = if present {
            book.rack_peers.insert(peer_id)
        } else {
            book.rack_peers.remove(&peer_id)
        };
        if changed {
            let rank = book.rack_peers.range(..*our_id).count() as u64;
            let members = book.rack_peers.len() as u64 + 1;
            self.rack_share
                .store((members << 32) | rank, Ordering::Relaxed);
        }
    }

    pub fn note_rack_block(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_rack_block_ms.store(ms, Ordering::Relaxed);
    }

    /// A peer outside the rack announced `piece` (HAVE): the first time starts its clock.
    pub fn note_seen_outside(&self, piece: u32) {
        if let Some(t) = self.seen_outside.get(piece as usize) {
            let ms = self.epoch.elapsed().as_millis() as u64 + 1;
            t.compare_exchange(0, ms, Ordering::Relaxed, Ordering::Relaxed)
                .ok();
        }
    }

    /// The `seen_outside` stamp at or before which a piece is `grace` overdue.
    pub fn overdue_since(&self, grace: Duration) -> u64 {
        (self.epoch.elapsed().as_millis() as u64 + 1).saturating_sub(grace.as_millis() as u64)
    }

    /// No block from a rack peer for `quiet` (counted from the start at first).
    pub fn rack_quiet_for(&self, quiet: Duration) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.last_rack_block_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= quiet.as_millis() as u64
    }

    pub fn all_verified(&self) -> bool {
        self.verified.count_ones() == self.piece_count()
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
        let verified_pieces = self.verified.count_ones();
        let verified_bytes = self.counters.verified_bytes.load(Ordering::Relaxed);
        let c = &self.counters;
        let (banned, completed) = self
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
        let snapshot = t.verified.snapshot();
        let count = snapshot.count_ones();
        let complete = count == t.piece_count();
        if saved != Some(count) {
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

#[cfg(test)]
mod tests {
    use super::counts_as_receiver;
    use crate::bitfield::Bitfield;

    #[test]
    fn a_receiver_got_data_from_us_and_announced_every_piece() {
        let mut have = Bitfield::new(3);
        assert!(!counts_as_receiver(false, 1 << 20, &have), "holds nothing");
        have.set(0);
        have.set(1);
        assert!(!counts_as_receiver(false, 1 << 20, &have), "holds 2 of 3");
        have.set(2);
        assert!(counts_as_receiver(false, 1 << 20, &have));
        assert!(!counts_as_receiver(false, 0, &have), "we sent it nothing");
        let all = Bitfield::full(3);
        assert!(
            !counts_as_receiver(true, 1 << 20, &all),
            "HAVE ALL up front is a seed, not a receiver"
        );
    }
}
