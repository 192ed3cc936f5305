//! Upload slots: the single choke path, unchoking, and the per-tick rechoke that applies
//! the [`choker`](crate::session::choker) rules to this core's peers.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{Ctx, Phase};
use crate::session::choker::{self, ChokeReason, Holder};
use crate::wire::Message;

impl Ctx {
    /// Unchokes an interested peer when an upload slot is free (slots are shared by the
    /// torrent's peers on every core).
    pub(super) fn try_unchoke(&mut self, index: usize) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let Some(t) = conn.torrent else { return };
        if !conn.am_choking || !conn.peer_interested || !matches!(conn.phase, Phase::Active) {
            return;
        }
        let slots = self.upload_slots;
        let locality = conn.locality;
        let unchoked = &self.torrents[t].shared.counters.unchoked;
        if unchoked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u < slots).then_some(u + 1)
            })
            .is_ok()
        {
            self.unchoke(index);
            return;
        }
        // Slots full: a nearer peer takes the slot of the farthest unchoked one on this core.
        let farthest = self.torrents[t]
            .conns
            .iter()
            .copied()
            .filter(|&i| i != index)
            .filter_map(|i| Some((i, self.conns.get(i)?.as_ref()?)))
            .filter(|(_, c)| !c.am_choking && c.locality > locality)
            .max_by_key(|(_, c)| c.locality)
            .map(|(i, _)| i);
        if let Some(victim) = farthest {
            self.choke(victim);
            // The freed slot goes to the nearer peer at once.
            self.torrents[t]
                .shared
                .counters
                .unchoked
                .fetch_add(1, Ordering::AcqRel);
            self.unchoke(index);
        }
    }

    /// Gives a peer the slot already counted for it.
    fn unchoke(&mut self, index: usize) {
        if let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) {
            conn.am_choking = false;
            conn.unchoked_at = Instant::now();
            conn.last_request = None;
            Message::Unchoke.encode(&mut conn.ctrl_out);
            self.dirty.push(index);
        }
    }

    /// Chokes an unchoked peer, freeing its upload slot; its queued requests are dropped
    /// (with a REJECT each under the fast extension, as BEP 6 asks), so nothing queued
    /// goes out after the CHOKE. The one path every choke takes.
    pub(super) fn choke(&mut self, index: usize) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let Some(t) = conn.torrent else { return };
        if conn.am_choking {
            return;
        }
        conn.am_choking = true;
        conn.waiting_since = Instant::now();
        Message::Choke.encode(&mut conn.ctrl_out);
        for r in std::mem::take(&mut conn.upload_queue) {
            if conn.fast {
                Message::Reject {
                    index: r.piece,
                    begin: r.begin,
                    length: r.len,
                }
                .encode(&mut conn.ctrl_out);
            }
        }
        self.torrents[t]
            .shared
            .counters
            .unchoked
            .fetch_sub(1, Ordering::AcqRel);
        self.dirty.push(index);
    }

    /// Once a tick, per torrent: idle peers lose their slots, slots rotate while peers
    /// wait, and free slots go to the peers waiting longest.
    pub(super) fn rechoke(&mut self, t: usize, now: Instant) {
        let mut holders = Vec::new();
        let mut waiters = Vec::new();
        for &i in &self.torrents[t].conns {
            let Some(c) = self.conns.get(i).and_then(Option::as_ref) else {
                continue;
            };
            if !matches!(c.phase, Phase::Active) {
                continue;
            }
            if !c.am_choking {
                holders.push(Holder {
                    key: i,
                    unchoked_at: c.unchoked_at,
                    last_request: c.last_request,
                    queued: !c.upload_queue.is_empty(),
                });
            } else if c.peer_interested {
                waiters.push((i, c.waiting_since));
            }
        }
        // Waiting peers are counted over every core; only those beyond the free slots
        // need room made.
        let lt = &mut self.torrents[t];
        let counters = &lt.shared.counters;
        let mine = waiters.len() as u32;
        counters
            .waiting
            .fetch_add(mine.wrapping_sub(lt.waiting_published), Ordering::AcqRel);
        lt.waiting_published = mine;
        let waiting = counters.waiting.load(Ordering::Acquire);
        let free = self
            .upload_slots
            .saturating_sub(counters.unchoked.load(Ordering::Acquire));
        let need = waiting.saturating_sub(free) as usize;
        let rules = choker::SlotRules::default();
        for (i, reason) in choker::to_choke(&rules, &holders, need, now) {
            if let Some(c) = self.conns.get(i).and_then(Option::as_ref) {
                let why = match reason {
                    ChokeReason::Idle => "idle",
                    ChokeReason::Rotated => "rotated",
                };
                tracing::debug!(addr = %c.addr, why, "choking");
            }
            self.choke(i);
        }
        choker::unchoke_order(&mut waiters);
        for (i, _) in waiters {
            self.try_unchoke(i);
        }
    }
}
