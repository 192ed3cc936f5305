//! Piece memory, hashing and disk I/O of a worker: the pool slots the core borrows for its
//! pieces ([`Lender`]), the recent-piece cache, hash jobs, and the O_DIRECT reads and
//! writes of whole pieces.

use std::sync::atomic::Ordering;
use std::time::Instant;

use ringswarm_swarm::{BufId, PieceBuffers};

use super::uploads::ReadRange;
use super::{token, Ctx, K_DISK};
use crate::reactor::{HashPool, PiecePool, Ring, SlotId};
use crate::session::torrent::TorrentShared;
use crate::storage::IoOp;

/// Recent pieces kept per worker for uploads: at least this many, and as many more as fit
/// in half of the worker's piece memory (the other half stays for pieces in flight). A
/// piece verified here is asked for by its rack peers and the other racks' owners over
/// the next second or two: the more of that window the cache covers, the fewer relays
/// read the disk.
const CACHE_PIECES_MIN: usize = 8;

/// A verified or freshly read piece kept in memory for uploads.
pub(super) struct CacheEntry {
    pub torrent: usize,
    /// The bytes of the piece in the slot (at their offsets in the piece).
    pub range: ReadRange,
    pub slot: SlotId,
    pub last_used: u64,
    /// Came from our own download (a relay serves it without touching the disk).
    pub downloaded: bool,
}

/// A received piece waiting for its hash.
pub(super) struct Hashing {
    pub torrent: usize,
    pub piece: u32,
}

pub(super) enum DiskKind {
    Write,
    Read(ReadRange),
}

pub(super) struct DiskJob {
    pub torrent: usize,
    piece: u32,
    slot: SlotId,
    kind: DiskKind,
    ops: Vec<IoOp>,
    pending: usize,
    error: Option<String>,
}

/// Lends pool slots to a torrent's core for its pieces, evicting cached pieces when the
/// pool is full.
pub(super) struct Lender<'a> {
    ring: &'a mut Ring,
    pool: &'a mut PiecePool,
    cache: &'a mut Vec<CacheEntry>,
    len: usize,
}

impl<'a> Lender<'a> {
    pub fn new(
        ring: &'a mut Ring,
        pool: &'a mut PiecePool,
        cache: &'a mut Vec<CacheEntry>,
        shared: &TorrentShared,
    ) -> Lender<'a> {
        Lender {
            ring,
            pool,
            cache,
            len: shared.storage.piece_buffer_len(),
        }
    }
}

impl PieceBuffers for Lender<'_> {
    fn reserve(&mut self, _piece: u32) -> Option<BufId> {
        acquire_slot(self.ring, self.pool, self.cache, self.len).map(|s| BufId(u32::from(s)))
    }
}

/// A slot of `len` bytes, evicting the least recently used unpinned cached pieces (of any
/// torrent) until one fits.
fn acquire_slot(
    ring: &mut Ring,
    pool: &mut PiecePool,
    cache: &mut Vec<CacheEntry>,
    len: usize,
) -> Option<SlotId> {
    loop {
        if let Some(s) = pool.acquire(ring, len) {
            return Some(s);
        }
        let victim = cache
            .iter()
            .enumerate()
            .filter(|(_, e)| !pool.is_pinned(e.slot))
            .min_by_key(|(_, e)| e.last_used)
            .map(|(i, _)| i)?;
        let e = cache.swap_remove(victim);
        pool.release(e.slot);
    }
}

impl Ctx {
    pub(super) fn acquire_slot(&mut self, ring: &mut Ring, len: usize) -> Option<SlotId> {
        acquire_slot(ring, &mut self.pool, &mut self.cache, len)
    }

    /// Hashes a whole piece on the hash pool (or here, when the pool is busy).
    pub(super) fn start_hash(&mut self, ring: &mut Ring, t: usize, piece: u32, slot: SlotId) {
        let size = self.torrents[t].shared.meta.piece_size(piece) as usize;
        let tag = self.next_hash_tag;
        self.next_hash_tag += 1;
        if self
            .hasher
            .submit(&mut self.pool, slot, size, tag, &self.hash_tx, &self.wake)
        {
            self.hashing.insert(tag, Hashing { torrent: t, piece });
        } else {
            let digest = crate::verify::sha1(&self.pool.data(slot)[..size]);
            self.on_hashed(ring, t, piece, slot, digest);
        }
    }

    pub(super) fn drain_hashes(&mut self, ring: &mut Ring) {
        while let Ok(done) = self.hash_rx.try_recv() {
            HashPool::finished(&mut self.pool, &done);
            if let Some(h) = self.hashing.remove(&done.tag) {
                self.on_hashed(ring, h.torrent, h.piece, done.slot, done.digest);
            }
        }
    }

    fn on_hashed(&mut self, ring: &mut Ring, t: usize, piece: u32, slot: SlotId, digest: [u8; 20]) {
        let lt = &mut self.torrents[t];
        let good = lt.shared.meta.info.pieces.get(piece as usize) == Some(&digest);
        if !good {
            if let Some(w) = lt.core.writers_of(piece) {
                tracing::warn!(piece, peers = ?w, "piece failed its hash check; fetching it again");
            }
        }
        let mut lender = super::Lender::new(ring, &mut self.pool, &mut self.cache, &lt.shared);
        lt.core.piece_hashed(
            Instant::now(),
            piece,
            BufId(u32::from(slot)),
            good,
            &mut lender,
        );
        self.run_actions(ring, t);
    }

    pub(super) fn start_disk_job(
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

    pub(super) fn on_disk(
        &mut self,
        ring: &mut Ring,
        job_index: usize,
        op_index: usize,
        result: i32,
    ) {
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
        let t = job.torrent;
        let shared = self.torrents[t].shared.clone();
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
                self.torrents[t].core.piece_written(job.piece, false);
                self.run_actions(ring, t);
            }
            (DiskKind::Write, None) => {
                for op in &job.ops {
                    shared.storage.note_written(op.file);
                }
                // The core marks it verified (only now: the resume record is written from
                // the verified set once the data is durable).
                self.torrents[t].core.piece_written(job.piece, true);
                shared.note_piece_stored(u64::from(shared.meta.piece_size(job.piece)));
                let whole = ReadRange {
                    piece: job.piece,
                    start: 0,
                    end: shared.meta.piece_size(job.piece),
                };
                self.cache_insert(t, whole, job.slot, true);
                self.run_actions(ring, t);
            }
            (DiskKind::Read(range), Some(e)) => {
                self.torrents[t].reads.retain(|r| *r != range);
                self.pool.release(job.slot);
                tracing::error!(piece = job.piece, err = %e, "reading a piece to upload failed");
                let waiting: Vec<usize> = (0..self.conns.len())
                    .filter(|&c| {
                        self.conns[c].as_ref().is_some_and(|conn| {
                            conn.torrent == Some(t)
                                && self.torrents[t]
                                    .core
                                    .uploads(conn.key(c))
                                    .is_some_and(|q| q.iter().any(|r| r.piece == job.piece))
                        })
                    })
                    .collect();
                for c in waiting {
                    self.close(ring, c, "cannot read the piece it asked for");
                }
            }
            (DiskKind::Read(range), None) => {
                self.torrents[t].reads.retain(|r| *r != range);
                // Pad-file ranges are never read; a padded tail read may have left bytes there.
                if let Some(buf) = self.pool.data_mut(job.slot) {
                    shared.storage.zero_gaps(job.piece, buf);
                }
                self.cache_insert(t, range, job.slot, false);
                let ours = (0..self.conns.len())
                    .filter(|&c| self.conns[c].as_ref().is_some_and(|x| x.torrent == Some(t)));
                self.dirty.extend(ours);
            }
        }
    }

    pub(super) fn cache_insert(
        &mut self,
        t: usize,
        range: ReadRange,
        slot: SlotId,
        downloaded: bool,
    ) {
        self.clock += 1;
        self.cache.push(CacheEntry {
            torrent: t,
            range,
            slot,
            last_used: self.clock,
            downloaded,
        });
        let piece_len = self.torrents[t].shared.storage.piece_buffer_len().max(1);
        let limit = CACHE_PIECES_MIN.max(self.pool.budget() / 2 / piece_len);
        while self.cache.iter().filter(|e| e.torrent == t).count() > limit {
            let victim = self
                .cache
                .iter()
                .enumerate()
                .filter(|(_, e)| e.torrent == t && !self.pool.is_pinned(e.slot))
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i);
            match victim {
                Some(i) => {
                    let e = self.cache.swap_remove(i);
                    self.pool.release(e.slot);
                }
                None => break,
            }
        }
    }

    /// Counts a block served from the cache (a relay's own download) or from a disk read.
    pub(super) fn count_cache_use(&self, t: usize, downloaded: bool) {
        let c = &self.torrents[t].shared.swarm.counters;
        let counter = if downloaded {
            &c.cache_hits
        } else {
            &c.cache_misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
