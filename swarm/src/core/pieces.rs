//! A piece's life from its blocks to verified: each block into the buffer (the first copy
//! wins, the other request is cancelled), the hash, the write, the HAVE to every peer and
//! to the other cores; a bad piece is counted against the peer that sent it alone, and two
//! such strikes ban its address.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::assembly::Block;
use super::{HashJob, PieceBuffers, Swarm};
use crate::ids::{BufId, PeerKey};
use crate::locality::Locality;
use crate::out::{Action, Out};
use crate::rate;
use ringswarm_proto::extension::FetchingWord;

impl Swarm {
    /// Part of a block arrived from `key`: the buffer its bytes go into, or None when the
    /// block was not asked of this peer (or came in already): the bytes are dropped. Call
    /// for each part before copying it.
    pub fn block_fragment(
        &mut self,
        key: PeerKey,
        piece: u32,
        begin: u32,
        len: u32,
    ) -> Option<BufId> {
        let ip = self.peer(key)?.addr.ip();
        let a = self.assemblies.get_mut(&piece)?;
        let b = a.block_index(begin, len)?;
        if !a.blocks[b].requested_by(key) {
            return None;
        }
        a.note_writer(key, ip);
        Some(a.buf)
    }

    /// A whole block from `key` is in its buffer (every part went through
    /// [`Swarm::block_fragment`]). An error (a block outside the torrent) says why the peer
    /// must be dropped.
    pub fn block_received(
        &mut self,
        now: Instant,
        key: PeerKey,
        piece: u32,
        begin: u32,
        len: u32,
        bufs: &mut dyn PieceBuffers,
    ) -> Result<(), String> {
        let n = self.shared.piece_count();
        if piece >= n {
            return Err(format!("block for piece {piece} of {n}"));
        }
        let size = self.shared.piece_size(piece);
        if u64::from(begin) + u64::from(len) > u64::from(size) {
            return Err(format!(
                "block past the end of piece {piece}: begin {begin} length {len}"
            ));
        }
        let Some(a) = self.assemblies.get_mut(&piece) else {
            return Ok(()); // not (or no longer) wanted: a late block after a cancel
        };
        let Some(b) = a.block_index(begin, len) else {
            return Ok(());
        };
        let state = a.blocks[b];
        if !state.requested_by(key) {
            return Ok(()); // not asked of this peer, or another copy came first
        }
        a.blocks[b] = Block::Received;
        a.received += 1;
        let whole = a.is_whole();
        let block = a.block_ref(b);
        // The first copy wins: the other request is withdrawn.
        for other in state.requesters().filter(|&k| k != key) {
            if let Some(p) = self.peer_mut(other) {
                p.requests_out = p.requests_out.saturating_sub(1);
            }
            self.send(other, Out::Cancel(block));
        }
        let Some(peer) = self.peer_mut(key) else {
            return Ok(());
        };
        peer.requests_out = peer.requests_out.saturating_sub(1);
        peer.last_block = now;
        peer.delivered_at = Some(now);
        peer.meter.add(u64::from(len));
        let (outside, placed_rack) = (
            peer.locality != Locality::Rack,
            peer.locality == Locality::Rack && peer.our_place.is_some(),
        );
        let low = !peer.refill_blocked && rate::wants_refill(peer.requests_out, peer.depth());
        let counters = &self.shared.counters;
        counters
            .downloaded
            .fetch_add(u64::from(len), Ordering::Relaxed);
        if outside {
            counters
                .downloaded_outside_rack
                .fetch_add(u64::from(len), Ordering::Relaxed);
        } else if placed_rack {
            self.shared.note_rack_block(now);
        }
        if whole {
            self.piece_complete(piece);
        }
        if whole || low {
            self.fill(now, key, bufs);
        }
        Ok(())
    }

    /// Every block is in: hash it.
    fn piece_complete(&mut self, piece: u32) {
        let Some(a) = self.assemblies.remove(&piece) else {
            return;
        };
        for k in self.order.clone() {
            if let Some(p) = self.peer_mut(k) {
                p.pieces.retain(|&x| x != piece);
            }
        }
        if self.shared.verified.get(piece) {
            // An endgame duplicate lost the race.
            self.actions.push_back(Action::Discard { buf: a.buf });
            return;
        }
        self.hashing.insert(
            piece,
            HashJob {
                claimed: a.claimed,
                writers: a.writers,
            },
        );
        self.actions.push_back(Action::Hash { piece, buf: a.buf });
    }

    /// The hash of `piece` in `buf` is known: write it, or discard it and count a strike.
    pub fn piece_hashed(
        &mut self,
        now: Instant,
        piece: u32,
        buf: BufId,
        good: bool,
        bufs: &mut dyn PieceBuffers,
    ) {
        let Some(job) = self.hashing.remove(&piece) else {
            self.actions.push_back(Action::Discard { buf });
            return;
        };
        let shared = self.shared.clone();
        if self.stopped || shared.verified.get(piece) {
            self.actions.push_back(Action::Discard { buf });
            if job.claimed && !shared.verified.get(piece) {
                shared.claimed.clear(piece);
            }
            return;
        }
        if !good {
            self.actions.push_back(Action::Discard { buf });
            if job.claimed {
                shared.claimed.clear(piece);
            }
            self.fetch_stopped(piece);
            shared
                .counters
                .hash_failures
                .fetch_add(1, Ordering::Relaxed);
            // A sole writer is to blame. Among several, an unproven peer alone is the
            // suspect (it may have joined the endgame with garbage); otherwise nobody can
            // be blamed, and the next copy comes from one peer.
            let unproven: Vec<(PeerKey, std::net::IpAddr)> = job
                .writers
                .iter()
                .filter(|(k, _)| self.peer(*k).is_some_and(|p| !p.proven))
                .copied()
                .collect();
            let blamed = match (job.writers.as_slice(), unproven.as_slice()) {
                ([one], _) | (_, [one]) => Some(*one),
                _ => None,
            };
            if job.writers.len() > 1 {
                self.single_source.insert(piece);
            }
            if let Some((key, ip)) = blamed {
                if shared.strike(ip, now) && self.peer(key).is_some() {
                    self.close(key, crate::reasons::BANNED_CORRUPT);
                }
            }
            return;
        }
        self.writing.insert(piece, job.claimed);
        self.actions.push_back(Action::Write { piece, buf });
        for (key, _) in job.writers {
            if let Some(p) = self.peer_mut(key).filter(|p| !p.proven) {
                p.proven = true;
                p.refill_blocked = false;
                self.fill(now, key, bufs);
            }
        }
    }

    /// The write of `piece` finished: it is verified (and every peer hears so), or the
    /// write failed (the driver fails the torrent) and the piece is fetched again.
    pub fn piece_written(&mut self, piece: u32, ok: bool) {
        let Some(claimed) = self.writing.remove(&piece) else {
            return;
        };
        if ok && self.assemblies.contains_key(&piece) {
            // Never expected (a piece in progress here is not started again), but a
            // second copy of a verified piece must not go on being fetched.
            self.give_up(piece);
        }
        if !ok {
            if claimed {
                self.shared.claimed.clear(piece);
            }
            return;
        }
        if !self.shared.mark_verified(piece) {
            // Another core's copy was written first and announced everywhere.
            return;
        }
        self.announce(piece);
        self.actions.push_back(Action::Broadcast { piece });
    }

    /// Another core of this host started, still fetches, or stopped fetching a piece from
    /// outside the rack ([`Action::BroadcastFetching`]): our rack peers hear of it too.
    pub fn fetching_elsewhere(&mut self, word: FetchingWord) {
        self.tell_rack_fetching(word);
    }

    /// Another core of this host verified `piece`: our copy in progress, if any, is
    /// dropped, and our peers hear of it.
    pub fn verified_elsewhere(&mut self, piece: u32) {
        if self.assemblies.contains_key(&piece) {
            self.give_up(piece);
        }
        self.announce(piece);
    }

    /// Sends HAVE for a new piece to every peer here (seeds too: a sender counts finished
    /// receivers by them), and NOT INTERESTED once nothing is missing.
    fn announce(&mut self, piece: u32) {
        // Our HAVE ends what we said about fetching it.
        self.told_fetching.remove(&piece);
        let complete = self.shared.all_verified();
        for k in self.order.clone() {
            let Some(p) = self.peer_mut(k).filter(|p| p.active()) else {
                continue;
            };
            let lose_interest = complete && p.am_interested;
            if lose_interest {
                p.am_interested = false;
            }
            self.send(k, Out::Have(piece));
            if lose_interest {
                self.send(k, Out::NotInterested);
            }
        }
    }
}
