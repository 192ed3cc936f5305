//! The send path: the blocks a peer asked for (its queue is the core's) are answered from
//! pieces (or parts of pieces) in memory; what is missing is read from disk, the requested
//! range and a read-ahead earned by the requests queued behind it
//! ([`readahead`](crate::session::readahead)).

use std::os::fd::AsRawFd;
use std::time::Instant;

use ringswarm_swarm::limits;

use super::{token, Ctx, Phase, Ring, K_SEND, READ_AHEAD_PIECES, SEND_BATCH_BYTES};
use crate::reactor::SendBlock;
use crate::session::readahead::{self, MAX_READ_AHEAD};
use crate::wire;

/// Queued requests looked at per pump (the read-ahead window).
const LOOKAHEAD: usize = 2048;

/// A range of a piece being read, or to read, for uploads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ReadRange {
    pub piece: u32,
    pub start: u32,
    pub end: u32,
}

impl ReadRange {
    pub fn covers(&self, piece: u32, begin: u32, len: u32) -> bool {
        self.piece == piece && self.start <= begin && begin + len <= self.end
    }
}

impl Ctx {
    pub(super) fn pump_dirty(&mut self, ring: &mut Ring) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for index in dirty.drain(..) {
            self.pump(ring, index);
        }
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Starts the next send on a connection: pending control bytes, then as many queued
    /// blocks as are in memory, in request order.
    fn pump(&mut self, ring: &mut Ring, index: usize) {
        let Some(conn) = self.conns.get(index).and_then(Option::as_ref) else {
            return;
        };
        if conn.sending || matches!(conn.phase, Phase::Connecting) {
            return;
        }
        let key = conn.key(index);
        let mut blocks = Vec::new();
        let mut bytes = 0usize;
        let mut need_read: Vec<ReadRange> = Vec::new();
        let mut hits: Vec<bool> = Vec::new();
        let torrent = conn.torrent;
        let queue = torrent.and_then(|t| self.torrents[t].core.uploads(key));
        // Under --max-upload-rate a batch is as large as the tokens we get.
        let allowance = match queue {
            Some(q) if !q.is_empty() => limits::take(
                self.upload_limit.as_deref(),
                SEND_BATCH_BYTES as u64,
                Instant::now(),
            ) as usize,
            _ => 0,
        };
        if let (Some(t), Some(queue)) = (torrent, queue) {
            self.clock += 1;
            let lt = &self.torrents[t];
            // Blocks leave in request order: the batch stops at the first block not in
            // memory. Further on, up to READ_AHEAD_PIECES missing ranges start loading now,
            // so the disk works while the socket drains.
            let mut batching = true;
            for r in queue.iter().take(LOOKAHEAD) {
                let cached = self
                    .cache
                    .iter_mut()
                    .find(|e| e.torrent == t && e.range.covers(r.piece, r.begin, r.len));
                if batching {
                    if let Some(e) =
                        cached.filter(|_| bytes + r.len as usize <= allowance && blocks.len() < 256)
                    {
                        e.last_used = self.clock;
                        hits.push(e.downloaded);
                        blocks.push(SendBlock {
                            header: wire::piece_header(r.piece, r.begin, r.len),
                            slot: e.slot,
                            offset: r.begin,
                            len: r.len,
                        });
                        bytes += r.len as usize;
                        continue;
                    }
                    batching = false;
                    if self
                        .cache
                        .iter()
                        .any(|e| e.torrent == t && e.range.covers(r.piece, r.begin, r.len))
                    {
                        continue;
                    }
                } else if cached.is_some() {
                    continue;
                }
                let covered = |x: &ReadRange| x.covers(r.piece, r.begin, r.len);
                if lt.reads.iter().any(covered) || need_read.iter().any(covered) {
                    continue;
                }
                let same_piece: Vec<(u32, u32)> = queue
                    .iter()
                    .filter(|q| q.piece == r.piece)
                    .map(|q| (q.begin, q.len))
                    .collect();
                let (start, end) = readahead::read_window(
                    lt.shared.meta.piece_size(r.piece),
                    r.begin,
                    r.len,
                    &same_piece,
                    MAX_READ_AHEAD,
                );
                need_read.push(ReadRange {
                    piece: r.piece,
                    start,
                    end,
                });
                if need_read.len() >= READ_AHEAD_PIECES {
                    break;
                }
            }
        }
        if let Some(l) = &self.upload_limit {
            l.give_back(allowance.saturating_sub(bytes) as u64);
        }
        if let Some(t) = torrent {
            for downloaded in hits {
                self.count_cache_use(t, downloaded);
            }
        }
        self.send_batch(ring, index, &blocks);
        // Only now, with the batch's slots pinned by the send, may a read evict cache.
        if let Some(t) = torrent {
            for range in need_read {
                self.start_upload_read(ring, t, range);
            }
        }
    }

    /// Reads a range of a piece from disk into the cache for uploads, unless that is
    /// under way. With no free slot, the tick retries.
    fn start_upload_read(&mut self, ring: &mut Ring, t: usize, range: ReadRange) {
        if self.torrents[t].reads.contains(&range) {
            return;
        }
        let size = self.torrents[t].shared.storage.piece_buffer_len();
        if let Some(slot) = self.acquire_slot(ring, size) {
            self.torrents[t].reads.push(range);
            let plan = self.torrents[t].shared.storage.read_plan(range.piece);
            let ops = readahead::clip_plan(plan, range.start, range.end);
            self.start_disk_job(
                ring,
                t,
                range.piece,
                slot,
                super::disk::DiskKind::Read(range),
                ops,
            );
        }
    }

    /// Sends pending control bytes and `blocks` (taken from the front of the queue).
    fn send_batch(&mut self, ring: &mut Ring, index: usize, blocks: &[SendBlock]) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if blocks.is_empty() && conn.ctrl_out.is_empty() {
            return;
        }
        if !blocks.is_empty() {
            if let Some(t) = conn.torrent {
                let uploaded: u64 = blocks.iter().map(|b| u64::from(b.len)).sum();
                self.torrents[t].core.blocks_sent(
                    Instant::now(),
                    conn.key(index),
                    blocks.len(),
                    uploaded,
                );
            }
        }
        let ctrl = std::mem::take(&mut conn.ctrl_out);
        conn.sending = true;
        conn.last_send = Instant::now();
        ring.send(
            &mut self.pool,
            conn.fd.as_raw_fd(),
            ctrl,
            blocks,
            token(K_SEND, conn.gen, index as u32),
        );
    }
}
