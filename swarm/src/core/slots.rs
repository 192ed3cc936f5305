//! Upload slots and what a peer may be served: the single choke path, unchoking (first
//! come, no tit-for-tat), the per-tick rechoke that applies the [`crate::choker`] rules,
//! and the checks on each REQUEST (the first seeder's grants among them).

use std::sync::atomic::Ordering;
use std::time::Instant;

use ringswarm_proto::wire;

use super::{Swarm, MAX_PEER_REQUESTS};
use crate::choker::{self, Holder};
use crate::ids::{BlockRef, PeerKey};
use crate::out::{Action, Out};

impl Swarm {
    /// A REQUEST: queued when it is valid, we have the piece, the peer is unchoked and (as
    /// a first seeder) the piece is granted to it; else refused (BEP 6 REJECT, or silently
    /// without the fast extension).
    pub(super) fn on_request(
        &mut self,
        now: Instant,
        key: PeerKey,
        block: BlockRef,
    ) -> Result<(), String> {
        let shared = self.shared.clone();
        let n = shared.piece_count();
        let max_len = wire::MAX_BLOCK_SIZE.max(self.cfg.block_len);
        let peer = self.peer_mut(key).ok_or("unknown connection")?;
        let BlockRef { piece, begin, len } = block;
        let ok = piece < n
            && len > 0
            && len <= max_len
            && u64::from(begin) + u64::from(len) <= u64::from(shared.piece_size(piece));
        peer.last_request = Some(now);
        if !ok {
            return Err(format!(
                "bad request: piece {piece} begin {begin} length {len}"
            ));
        }
        let have = shared.verified.get(piece);
        // A first seeder refuses pieces it has handed to another peer (without the fast
        // extension a refusal cannot be said: it serves them anyway).
        let refuse =
            peer.am_choking || !have || (peer.fast && !shared.grant(piece, &mut peer.granted, now));
        if refuse {
            if peer.fast {
                self.send(key, Out::Reject(block));
            }
            return Ok(());
        }
        if peer.uploads.len() >= MAX_PEER_REQUESTS {
            return Err("too many queued requests".into());
        }
        peer.uploads.push_back(block);
        self.actions.push_back(Action::Serve { peer: key });
        Ok(())
    }

    /// The driver sent the first `count` blocks of the peer's upload queue (`bytes` of
    /// payload).
    pub fn blocks_sent(&mut self, now: Instant, key: PeerKey, count: usize, bytes: u64) {
        let shared = self.shared.clone();
        let Some(peer) = self.peer_mut(key) else {
            return;
        };
        let count = count.min(peer.uploads.len());
        for b in peer.uploads.drain(..count) {
            if peer.granted.get(b.piece) {
                shared.note_grant_progress(b.piece, now);
            }
        }
        peer.uploaded_to += bytes;
        shared.counters.uploaded.fetch_add(bytes, Ordering::Relaxed);
        if peer.locality != crate::locality::Locality::Rack {
            shared
                .counters
                .uploaded_outside_rack
                .fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Unchokes an interested peer when an upload slot is free (slots are shared by the
    /// torrent's peers on every core); when none is, it waits its turn. A nearer peer does
    /// not take a farther one's slot: what a peer outside the rack asks for is what its
    /// rack or dc lacks, and the requester's rules already keep that to about one copy.
    /// Taking such slots starved a second dc: the peers of the other dc were unchoked and
    /// choked again in the same rechoke, every rechoke (`ringswarm sim`, 2 dcs of 4 racks
    /// of 40: last host 2.17 x the bound, 1.87 x the blob into the second dc; without it
    /// 1.55 x and 1.25 x, and in one dc of 6 racks of 50, 1.47 x → 1.42 x).
    pub(super) fn try_unchoke(&mut self, now: Instant, key: PeerKey) {
        let slots = self.cfg.upload_slots;
        let Some(peer) = self.peer(key) else { return };
        if self.stopped
            || !peer.am_choking
            || !peer.peer_interested
            || !peer.active()
            || peer.closing
        {
            return;
        }
        let unchoked = &self.shared.counters.unchoked;
        if unchoked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u < slots).then_some(u + 1)
            })
            .is_ok()
        {
            self.unchoke(now, key);
        }
    }

    /// Gives a peer the slot already counted for it.
    fn unchoke(&mut self, now: Instant, key: PeerKey) {
        if let Some(peer) = self.peer_mut(key) {
            peer.am_choking = false;
            peer.unchoked_at = now;
            peer.last_request = None;
            self.send(key, Out::Unchoke);
        }
    }

    /// Chokes an unchoked peer, freeing its upload slot; its queued requests are dropped
    /// (with a REJECT each under the fast extension, as BEP 6 asks), so nothing queued goes
    /// out after the CHOKE. The one path every choke takes.
    pub(super) fn choke(&mut self, now: Instant, key: PeerKey) {
        let Some(peer) = self.peer_mut(key) else {
            return;
        };
        if peer.am_choking {
            return;
        }
        peer.am_choking = true;
        peer.waiting_since = now;
        let fast = peer.fast;
        let dropped = std::mem::take(&mut peer.uploads);
        self.send(key, Out::Choke);
        if fast {
            for r in dropped {
                self.send(key, Out::Reject(r));
            }
        }
        self.shared.counters.unchoked.fetch_sub(1, Ordering::AcqRel);
    }

    /// Once a tick: idle peers lose their slots, slots rotate while peers wait, and free
    /// slots go to the peers waiting longest.
    pub(super) fn rechoke(&mut self, now: Instant) {
        let mut holders = Vec::new();
        let mut waiters = Vec::new();
        for (i, &k) in self.order.iter().enumerate() {
            let Some(p) = self.peer(k).filter(|p| p.active() && !p.closing) else {
                continue;
            };
            if !p.am_choking {
                holders.push(Holder {
                    key: i,
                    unchoked_at: p.unchoked_at,
                    last_request: p.last_request,
                    queued: !p.uploads.is_empty(),
                });
            } else if p.peer_interested {
                waiters.push((i, p.waiting_since));
            }
        }
        // Waiting peers are counted over every core; only those beyond the free slots
        // need room made.
        let counters = &self.shared.counters;
        let mine = waiters.len() as u32;
        counters
            .waiting
            .fetch_add(mine.wrapping_sub(self.waiting_published), Ordering::AcqRel);
        self.waiting_published = mine;
        let waiting = counters.waiting.load(Ordering::Acquire);
        let free = self
            .cfg
            .upload_slots
            .saturating_sub(counters.unchoked.load(Ordering::Acquire));
        let need = waiting.saturating_sub(free) as usize;
        let order = self.order.clone();
        for (i, _reason) in choker::to_choke(&choker::SlotRules::default(), &holders, need, now) {
            self.choke(now, order[i]);
        }
        choker::unchoke_order(&mut waiters);
        for (i, _) in waiters {
            self.try_unchoke(now, order[i]);
        }
    }

    /// Takes this core's waiting peers out of the torrent's count (the core is going away).
    pub fn unpublish_waiting(&mut self) {
        self.shared
            .counters
            .waiting
            .fetch_sub(self.waiting_published, Ordering::AcqRel);
        self.waiting_published = 0;
    }
}
