//! The periodic work: rates sampled, stalled peers dropped, forgotten refusals, requests
//! topped up (a buffer may have freed), slots rechoked, redials made.
//!
//! A stall is judged against the swarm: a peer with requests out and no block for
//! [`stall_limit`] is dropped, and the limit is short ([`STALL_FLOOR`]) while other peers
//! of this torrent deliver (the requests are better placed with them), long
//! ([`STALL_CEILING`]) when nobody does (the whole path may be slow; dropping the only
//! source would not help).

use std::time::{Duration, Instant};

use ringswarm_proto::bitfield::Bitfield;

use super::{PieceBuffers, Swarm};
use crate::ids::PeerKey;
use crate::out::Action;

pub const TICK: Duration = Duration::from_millis(100);
/// How long pieces a peer refused (BEP 6 REJECT) are not asked of it again.
pub const REFUSAL_MEMORY: Duration = Duration::from_secs(2);
/// No requested block for this long while other peers deliver: stalled.
pub const STALL_FLOOR: Duration = Duration::from_secs(5);
/// No requested block for this long: stalled, whatever the others do.
pub const STALL_CEILING: Duration = Duration::from_secs(20);
/// Another peer "delivers" when its last block is at most this old.
const DELIVERING: Duration = Duration::from_secs(1);

/// How long a peer may go without a requested block before it is dropped, given whether
/// another peer of the torrent delivered lately.
pub fn stall_limit(others_deliver: bool) -> Duration {
    if others_deliver {
        STALL_FLOOR
    } else {
        STALL_CEILING
    }
}

impl Swarm {
    /// The timer from [`Swarm::poll_timeout`] fired (calling early or late is harmless).
    pub fn handle_timeout(&mut self, now: Instant, bufs: &mut dyn PieceBuffers) {
        let due: Vec<_> = {
            let (due, later) = std::mem::take(&mut self.redials)
                .into_iter()
                .partition(|r| r.due <= now);
            self.redials = later;
            due
        };
        for r in due {
            if !self.stopped && !self.shared.is_banned(r.addr.ip(), now) {
                self.actions.push_back(Action::Dial {
                    addr: r.addr,
                    attempt: r.attempt,
                });
            }
        }
        if self.next_tick.is_some_and(|t| now < t) {
            return;
        }
        self.next_tick = (!self.order.is_empty()).then(|| now + TICK);
        let keys = self.order.clone();
        let mut rate = 0.0;
        for &k in &keys {
            let Some(p) = self.peer_mut(k).filter(|p| p.active()) else {
                continue;
            };
            rate += p.rate();
            let requests_out = p.requests_out;
            p.meter.sample(now, requests_out);
            if p.refused_since
                .is_some_and(|at| now.saturating_duration_since(at) >= REFUSAL_MEMORY)
            {
                p.refused_since = None;
                p.refused = Bitfield::new(p.refused.len());
            }
        }
        self.share_grace = super::requests::share_grace(self.meta.info.total_length, rate);
        self.renew_fetching_words(now);
        self.stamp_unannounced(now);
        let mut rack = self
            .order
            .iter()
            .filter_map(|&k| self.peer(k))
            .filter(|p| p.active() && p.locality == crate::locality::Locality::Rack)
            .peekable();
        self.rack_says_fetching =
            rack.peek().is_some() && rack.all(|p| p.their_fetching_id.is_some());
        // Who delivered a requested block within the last second (counted once per tick).
        let delivering = keys.iter().filter(|&&k| self.delivering(k, now)).count();
        for &k in &keys {
            let others_deliver = delivering > usize::from(self.delivering(k, now));
            if let Some(limit) = self.stalled(k, now, others_deliver) {
                let secs = limit.as_secs();
                if let Some(p) = self.peer_mut(k) {
                    p.stalled = true;
                }
                self.close(k, format!("stalled: no requested block for {secs} s"));
            }
        }
        // Keep every downloading peer busy.
        for &k in &keys {
            if let Some(p) = self.peer_mut(k).filter(|p| p.active()) {
                p.refill_blocked = false;
                if !p.peer_choking {
                    self.fill(now, k, bufs);
                }
            }
        }
        self.rechoke(now);
    }

    /// Whether `key` has requests out and delivered one of them lately.
    fn delivering(&self, key: PeerKey, now: Instant) -> bool {
        self.peer(key).is_some_and(|p| {
            p.requests_out > 0
                && p.delivered_at
                    .is_some_and(|at| now.saturating_duration_since(at) <= DELIVERING)
        })
    }

    /// The stall limit `key` passed, if it did.
    fn stalled(&self, key: PeerKey, now: Instant, others_deliver: bool) -> Option<Duration> {
        let p = self
            .peer(key)
            .filter(|p| p.active() && !p.closing && p.requests_out > 0)?;
        let limit = stall_limit(others_deliver);
        (now.saturating_duration_since(p.last_block) > limit).then_some(limit)
    }
}
