//! What to ask a peer for: its own pieces' missing blocks first, then a new piece
//! ([`crate::picker`]: rarest first within the rack, the rack's share split by rank, dc
//! before remote), then, in the endgame, a hand in other pieces in progress here: their
//! missing blocks, then blocks requested from a much slower peer (work stealing: the first
//! copy wins, the other request is cancelled), then a duplicate of a piece another core is
//! slow to finish.
//!
//! The endgame starts when every missing piece is claimed somewhere (not before: a
//! duplicate costs download, and rack uplink when it comes from outside), so its rules do
//! not depend on how many cores run.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::assembly::{Assembly, Block};
use super::{PieceBuffers, Swarm};
use crate::ids::{BlockRef, PeerKey};
use crate::locality::Locality;
use crate::out::Out;
use crate::picker::{self, PickInput, RemoteRule};
use ringswarm_proto::extension::FetchingWord;

/// The last this many pieces: a remote peer may be asked beyond the rack's share (the
/// owners of the rest are not worth waiting for).
pub const TAIL_PIECES: u32 = 2;
/// A remote seed may serve any missing piece once at most 1/this of the pieces are missing.
pub const SEED_TAIL_FRACTION: u32 = 8;
/// No block from any rack peer for this long: pieces outside our share may come from
/// outside the rack (a rack-mate died or is slow, or the split views disagree).
pub const RACK_QUIET: Duration = Duration::from_secs(5);
/// How long a share owner in the rack has to fetch a piece that appeared outside the rack
/// (a remote HAVE) before the next host in rank order may, and so on
/// ([`crate::picker::Overdue`]): this share of the time the whole torrent takes at our
/// download rate, within the bounds below. In perf/fleet (256 MiB at 100 Mbit/s, ~21 s) a
/// 1.5 s grace for every host at once let 1.2-1.5 x the blob into a rack (owners were
/// merely queued) and 4 s kept it at 1.02-1.07 x; in `ringswarm sim` (300 hosts in racks
/// of 50, 16 GiB at 25 Gbit/s, ~5.5 s) a grace per place in the order of 0.2 s let 2.8 x
/// in, 1 s 1.6 x: both about a sixth of the download's time.
pub const SHARE_GRACE_OF_DOWNLOAD: f64 = 0.15;
pub const SHARE_GRACE_MIN: Duration = Duration::from_millis(250);
/// Also the grace before a rate is known.
pub const SHARE_GRACE_MAX: Duration = Duration::from_secs(4);

/// With every rack peer here telling what it fetches from outside (`rs_fetching`), the
/// wait per place in the order of [`crate::picker::Overdue`] is this share of the share
/// grace (a host's word then holds for the [`fetch_lease`]), and at least [`FETCHING_TURN_MIN`]:
/// the next host need not wait long for the owner, only for the owner's word to arrive.
/// That word queues behind the blocks already in its connection's send buffer (megabytes:
/// a third of a second at 100 Mbit/s), which `ringswarm sim` does not model: turns of 20
/// ms there gave 1.08 x the blob into a rack, in perf/fleet 1.51 x.
pub const FETCHING_TURN_OF_GRACE: u32 = 8;
pub const FETCHING_TURN_MIN: Duration = Duration::from_millis(20);

/// How long a rack peer's word that it fetches a piece from outside holds, as a multiple
/// of the share grace. The fetcher says it again every half grace while it fetches
/// ([`Swarm::renew_fetching_words`]), and the word ends sooner when it announces the
/// piece, says it stopped (it gave the piece up without it) or leaves. Measured in
/// `ringswarm sim`, 16 GiB at 25 Gbit/s:
/// - a fetch across a WAN waits behind the sender's other uploads: with 2 dcs of 4 racks
///   of 40, a word of one grace never renewed lapsed during such fetches and let 1.25 x
///   the blob into the second dc; renewed, 1.04 x (four graces unrenewed: 1.04 x too);
/// - a host that dies silently holds its pieces for the lease: 1 000 hosts with 1 % dead
///   and 1 % slow, the last healthy host came at 1.63 x the bound with one grace renewed,
///   1.81 x with two.
pub const FETCH_LEASE_OF_GRACE: u32 = 1;

/// The lease of a rack peer's `rs_fetching` word at a share grace of `grace`.
pub fn fetch_lease(grace: Duration) -> Duration {
    grace * FETCH_LEASE_OF_GRACE
}

/// The share grace at a download rate of `rate` bytes/s for a torrent of `total` bytes.
pub fn share_grace(total: u64, rate: f64) -> Duration {
    if rate <= 0.0 || !rate.is_finite() {
        return SHARE_GRACE_MAX;
    }
    let secs = total as f64 / rate * SHARE_GRACE_OF_DOWNLOAD;
    Duration::from_secs_f64(secs.min(SHARE_GRACE_MAX.as_secs_f64())).max(SHARE_GRACE_MIN)
}

/// A block is stolen from a peer if this peer is at least this many times faster...
pub const STEAL_SPEEDUP: f64 = 2.0;
/// ...and the block was requested at least this long ago (requests just sent are not
/// late; this is the request horizon, the time a request is meant to wait).
pub const STEAL_AFTER: Duration = crate::rate::REQUEST_HORIZON;
/// A peer that delivered nothing for this long is stalling (five request horizons).
pub const STALLING: Duration = Duration::from_secs(1);
/// A request outstanding this long (ten request horizons) is late whoever asks: any peer,
/// even one without a measured rate yet, may ask for the block too.
pub const LATE_REQUEST: Duration = Duration::from_secs(2);

impl Swarm {
    /// Keeps the peer's requests topped up to its depth.
    pub(super) fn fill(&mut self, now: Instant, key: PeerKey, bufs: &mut dyn PieceBuffers) {
        if self.stopped || self.shared.all_verified() {
            return;
        }
        let Some(peer) = self.peer(key) else { return };
        if peer.peer_choking || !peer.active() || peer.closing {
            return;
        }
        let depth = peer.depth();
        let was_idle = peer.requests_out == 0;
        let mut budget = depth.saturating_sub(peer.requests_out);
        if budget == 0 {
            return;
        }
        let mut blocked = false;
        // Under --max-download-rate, requests go out only as fast as the rate allows.
        let limit = self.cfg.download_limit.clone();
        if let Some(l) = &limit {
            let block = u64::from(self.cfg.block_len);
            let granted = l.take_at(u64::from(budget) * block, now);
            l.give_back(granted % block);
            let allowed = (granted / block) as u32;
            if allowed < budget {
                blocked = true;
            }
            budget = allowed;
        }
        let mut out: Vec<BlockRef> = Vec::new();
        // 1. The missing blocks of the pieces it works on.
        let pieces = peer.pieces.clone();
        for piece in pieces {
            if budget == 0 {
                break;
            }
            self.take_blocks(now, key, piece, &mut budget, &mut out, None);
        }
        // 2. New pieces (an unproven peer fills one at a time).
        while budget > 0 {
            let Some(peer) = self.peer(key) else { break };
            if !peer.proven && !peer.pieces.is_empty() {
                blocked = true;
                break;
            }
            let Some(piece) = self.pick_new(now, key) else {
                break;
            };
            if !self.start_piece(key, piece, true, bufs) {
                self.shared.claimed.clear(piece);
                blocked = true;
                break;
            }
            if self.peer(key).is_some_and(|p| p.locality != Locality::Rack) {
                self.say_fetching(now, piece);
            }
            self.take_blocks(now, key, piece, &mut budget, &mut out, None);
        }
        // 3. The endgame: a hand in the pieces in progress here, then a duplicate of a
        // piece another core is fetching.
        // An unproven peer lends a hand with one piece only, and only when it has none of
        // its own: it may be the one honest peer left to rescue a piece from a trickler.
        let (proven, idle) = self
            .peer(key)
            .map_or((false, false), |p| (p.proven, p.pieces.is_empty()));
        if budget > 0 && self.endgame() && (proven || idle) {
            let mut joinable = self.joinable(key, now);
            if !proven {
                joinable.truncate(1);
            }
            let slow = self.slower_than(key, now);
            for steal in [None, Some(slow.as_slice())] {
                for &piece in &joinable {
                    if budget == 0 {
                        break;
                    }
                    self.take_blocks(now, key, piece, &mut budget, &mut out, steal);
                }
            }
            while budget > 0 && proven {
                let Some(piece) = self.pick_duplicate(key, now) else {
                    break;
                };
                if !self.start_piece(key, piece, false, bufs) {
                    blocked = true;
                    break;
                }
                self.take_blocks(now, key, piece, &mut budget, &mut out, None);
            }
        }
        if budget > 0 && out.is_empty() {
            blocked = true;
        }
        if let Some(l) = &limit {
            l.give_back(u64::from(budget) * u64::from(self.cfg.block_len));
        }
        let sent = out.len() as u32;
        if let Some(peer) = self.peer_mut(key) {
            peer.requests_out += sent;
            peer.refill_blocked = blocked;
            if was_idle && sent > 0 {
                // The stall clock starts with the first request.
                peer.last_block = now;
            }
        }
        for b in out {
            self.send(key, Out::Request(b));
        }
    }

    /// A rack peer (`them`) says it fetches `piece` from outside the rack, and so do we,
    /// not one block of it here yet: both picked it before the other's word arrived (the
    /// same HAVE reached both). The lower peer id keeps it; the other gives it up, so the
    /// rack takes it in once, and fetches it from that peer when it has it.
    pub(super) fn yield_fetch(
        &mut self,
        now: Instant,
        piece: u32,
        them: crate::ids::PeerId,
        bufs: &mut dyn PieceBuffers,
    ) {
        if them.0 >= self.cfg.our_id.0 {
            return;
        }
        let Some(a) = self.assemblies.get(&piece) else {
            return;
        };
        if a.received > 0 {
            return;
        }
        let mut fetchers: Vec<PeerKey> = a.blocks.iter().flat_map(|b| b.requesters()).collect();
        fetchers.sort_unstable();
        fetchers.dedup();
        let from_outside = !fetchers.is_empty()
            && fetchers
                .iter()
                .all(|&k| self.peer(k).is_some_and(|p| p.locality != Locality::Rack));
        if !from_outside {
            return;
        }
        self.give_up(piece);
        for k in fetchers {
            self.fill(now, k, bufs);
        }
    }

    /// Tells the rack peers of the whole host that this host started fetching `piece`
    /// from outside the rack (once: renewals are [`Swarm::renew_fetching_words`]'s).
    fn say_fetching(&mut self, now: Instant, piece: u32) {
        if self.told_fetching.insert(piece, (now, 0)).is_none() {
            self.tell_whole_rack(FetchingWord::Started(piece));
        }
    }

    /// Tells the rack peers here, and through the other cores theirs.
    fn tell_whole_rack(&mut self, word: FetchingWord) {
        self.tell_rack_fetching(word);
        self.actions
            .push_back(crate::out::Action::BroadcastFetching { word });
    }

    /// Says again, every half share grace, that we fetch a piece we said we fetch, when
    /// blocks of it came in since (or it is whole, and being hashed or written): the word
    /// holds for [`FETCH_LEASE_OF_GRACE`] graces, so a fetch that moves keeps its piece
    /// however long the sender queues it, while one from a peer that sends nothing (or a
    /// host that died without a FIN) loses it after one lease. Not renewed without new
    /// blocks: a trickling sender then cannot hold the rack's piece for longer than a
    /// lease beyond its last block.
    pub(super) fn renew_fetching_words(&mut self, now: Instant) {
        let every = self.share_grace / 2;
        let due: Vec<(u32, u32)> = self
            .told_fetching
            .iter()
            .filter(|(_, &(at, _))| now.saturating_duration_since(at) >= every)
            .filter_map(|(&p, &(_, then))| {
                let received = self.assemblies.get(&p).map_or(u32::MAX, |a| a.received);
                (received > then).then_some((p, received))
            })
            .collect();
        for (piece, received) in due {
            self.told_fetching.insert(piece, (now, received));
            self.tell_whole_rack(FetchingWord::Started(piece));
        }
    }

    /// We stopped fetching `piece` without it: rack peers we told we fetch it need not
    /// wait for it any longer.
    pub(super) fn fetch_stopped(&mut self, piece: u32) {
        if !self.shared.verified.get(piece) && self.told_fetching.remove(&piece).is_some() {
            self.tell_whole_rack(FetchingWord::Stopped(piece));
        }
    }

    /// Tells the rack peers on this core that speak `rs_fetching` what this host does
    /// about a piece it fetches from outside the rack.
    pub(super) fn tell_rack_fetching(&mut self, word: FetchingWord) {
        let piece = word.piece();
        let payload = ringswarm_proto::extension::encode_fetching(word);
        for k in self.order.clone() {
            let Some(id) = self
                .peer(k)
                .filter(|p| p.active() && p.locality == Locality::Rack && !p.have.get(piece))
                .and_then(|p| p.their_fetching_id)
            else {
                continue;
            };
            self.send(
                k,
                Out::Extended {
                    id,
                    payload: payload.clone(),
                },
            );
        }
    }

    /// Every missing piece is claimed by some core (or nearly nothing is missing).
    pub(super) fn endgame(&self) -> bool {
        let missing = self.shared.missing();
        missing > 0
            && (missing <= TAIL_PIECES
                || self.shared.verified.count_neither(&self.shared.claimed) == 0)
    }

    /// Starts receiving `piece` here with `key` working on it; false when no buffer.
    fn start_piece(
        &mut self,
        key: PeerKey,
        piece: u32,
        claimed: bool,
        bufs: &mut dyn PieceBuffers,
    ) -> bool {
        let Some(buf) = bufs.reserve(piece) else {
            return false;
        };
        let size = self.shared.piece_size(piece);
        let mut a = Assembly::new(piece, size, self.cfg.block_len, buf, claimed);
        a.single_source = self.single_source.remove(&piece);
        self.assemblies.insert(piece, a);
        if let Some(peer) = self.peer_mut(key) {
            peer.pieces.push(piece);
        }
        true
    }

    /// Requests blocks of `piece` from `key`: missing ones, or (`steal`) ones requested
    /// from a peer much slower than it. A block merely late (its requester's rate unknown
    /// or not much lower) is asked again only of a rack peer: a duplicate from outside the
    /// rack crosses its uplink, and is worth it only against a peer known to be slow
    /// (perf/fleet: the worst rack took in 1.14 × the blob with late duplicates from
    /// outside, 1.11 × before the block-level endgame).
    fn take_blocks(
        &mut self,
        now: Instant,
        key: PeerKey,
        piece: u32,
        budget: &mut u32,
        out: &mut Vec<BlockRef>,
        steal: Option<&[PeerKey]>,
    ) {
        let local = self.peer(key).is_some_and(|p| p.locality == Locality::Rack);
        let Some(a) = self.assemblies.get_mut(&piece) else {
            return;
        };
        let mut joined = false;
        // Requesters pushed out of a block (both places were taken by late or slow peers).
        let mut evicted: Vec<(PeerKey, BlockRef)> = Vec::new();
        for b in 0..a.blocks.len() {
            if *budget == 0 {
                break;
            }
            let state = a.blocks[b];
            let take = match state {
                Block::Missing => true,
                Block::Requested { by, at } => steal.is_some_and(|slow| {
                    !by.contains(&Some(key))
                        && ((local && now.saturating_duration_since(at) >= LATE_REQUEST)
                            || (now.saturating_duration_since(at) >= STEAL_AFTER
                                && by.iter().flatten().all(|k| slow.contains(k))))
                }),
                _ => false,
            };
            if !take {
                continue;
            }
            a.blocks[b] = match state {
                // Into the free place: the other may be the one left (the first went).
                // With both taken (two late or slow peers), the first gives its place up:
                // two tricklers must not hold a block between them. The time is the
                // newest request's: a block just asked of a peer is not late for another.
                Block::Requested { mut by, .. } => {
                    match by.iter_mut().find(|k| k.is_none()) {
                        Some(free) => *free = Some(key),
                        None => {
                            if let Some(out) = by[0].replace(key) {
                                evicted.push((out, a.block_ref(b)));
                            }
                        }
                    }
                    Block::Requested { by, at: now }
                }
                _ => Block::Requested {
                    by: [Some(key), None],
                    at: now,
                },
            };
            out.push(a.block_ref(b));
            *budget -= 1;
            joined = true;
        }
        if joined {
            if let Some(peer) = self.peer_mut(key) {
                if !peer.pieces.contains(&piece) {
                    peer.pieces.push(piece);
                }
            }
        }
        for (out, block) in evicted {
            if let Some(p) = self.peer_mut(out) {
                p.requests_out = p.requests_out.saturating_sub(1);
            }
            self.send(out, Out::Cancel(block));
        }
    }

    /// The other peers here that `key` is at least [`STEAL_SPEEDUP`] times faster than.
    /// For a peer outside our rack, only those that also delivered nothing for
    /// [`STALLING`]: its copy crosses the rack uplink, worth it against a stalling peer,
    /// not against one merely slower.
    fn slower_than(&self, key: PeerKey, now: Instant) -> Vec<PeerKey> {
        let Some(me) = self.peer(key) else {
            return Vec::new();
        };
        let (my_rate, remote) = (me.rate(), me.locality != Locality::Rack);
        self.order
            .iter()
            .filter(|&&k| k != key)
            .filter(|&&k| {
                self.peer(k).is_some_and(|p| {
                    p.rate() * STEAL_SPEEDUP < my_rate
                        && (!remote
                            || p.delivered_at
                                .is_none_or(|at| now.saturating_duration_since(at) >= STALLING))
                })
            })
            .copied()
            .collect()
    }

    /// Pieces in progress here that `key` may lend a hand with in the endgame: it has them,
    /// has not refused them, they take several sources, and a remote peer only joins what
    /// no rack peer has or could fetch. The ones with the fewest blocks in first (closest to
    /// done).
    fn joinable(&self, key: PeerKey, now: Instant) -> Vec<u32> {
        let Some(peer) = self.peer(key) else {
            return Vec::new();
        };
        let remote = peer.locality != Locality::Rack;
        let mut v: Vec<(u32, u32)> = self
            .assemblies
            .values()
            .filter(|a| !a.single_source && peer.have.get(a.piece) && !peer.is_refusing(a.piece))
            .filter(|a| !remote || self.rack_cannot_serve(a.piece, now))
            .map(|a| (a.blocks.len() as u32 - a.received, a.piece))
            .collect();
        v.sort_unstable();
        v.into_iter().map(|(_, p)| p).collect()
    }

    /// In the endgame, a remote peer may lend a hand with `piece` when no rack peer could:
    /// none has it, or every rack peer here that has it is choking us, refusing it, being
    /// closed or stalling (a slow remote peer holding the piece would otherwise hold the
    /// download). A rack peer that has it on another core of this host counts as able: the
    /// availability says it is there, and that core fetches it (perf/fleet: letting remote
    /// peers in whenever no rack peer *here* had it took 1.14-1.18 × the blob into a rack).
    ///
    /// Stalling (requests out, no block for [`STALLING`]) is what a holder that died
    /// without a FIN looks like: its connection stays open and unchoked until the stall
    /// limit, and with nothing else left to fetch that limit is [`super::timers::STALL_CEILING`]
    /// (`ringswarm sim`, 300 hosts in racks of 50 with 1 % dead and 1 % slow: a rack
    /// whose only holder of its last piece died waited 14 s for it, the last healthy host
    /// at 4.52 × the bound).
    fn rack_cannot_serve(&self, piece: u32, now: Instant) -> bool {
        if self.rack_lacks(piece, now) {
            return true;
        }
        let mut holders = self
            .order
            .iter()
            .filter_map(|&k| self.peer(k))
            .filter(|p| p.locality == Locality::Rack && p.have.get(piece))
            .peekable();
        holders.peek().is_some()
            && holders
                .all(|p| p.peer_choking || p.closing || p.is_refusing(piece) || p.stalling(now))
    }

    /// Once our share of the rack's pieces is fetched, stamps as seen outside now the
    /// pieces the rack lacks that a peer outside has but never announced in a HAVE (the
    /// origin's, and those in other peers' first BITFIELDs): the rack's hosts then take
    /// their turns at them ([`picker::Overdue`]) as at a piece a HAVE announced. Shares are
    /// ranks among the rack peers each host knows; where views differ (a rack larger than
    /// the tracker's answers, hosts that started late), some pieces are nobody's share,
    /// and without a stamp they waited for [`RACK_QUIET`] (`ringswarm sim`, 2 racks of 160
    /// knowing about 145 rack peers each: every host stalled 5 s, twice, with a fifth of
    /// the pieces at the origin only; the last host at 4.5 × the bound).
    pub(super) fn stamp_unannounced(&self, now: Instant) {
        let shared = &self.shared;
        let share = shared.share();
        if share.members <= 1 || shared.missing() == 0 {
            return;
        }
        let lacking = |p: u32| {
            shared
                .rack_availability
                .get(p as usize)
                .is_some_and(|a| a.load(Ordering::Relaxed) == 0)
        };
        if shared
            .verified
            .zeros()
            .any(|p| share.contains(p) && lacking(p))
        {
            return;
        }
        for p in shared.verified.zeros() {
            let held_outside = shared
                .availability
                .get(p as usize)
                .is_some_and(|a| a.load(Ordering::Relaxed) > 0);
            if held_outside && lacking(p) {
                shared.note_seen_outside(p, now);
            }
        }
    }

    /// No rack peer has `piece`, and none said lately it fetches it from outside.
    fn rack_lacks(&self, piece: u32, now: Instant) -> bool {
        let shared = &self.shared;
        !picker::rack_peer_fetches(
            &shared.rack_fetching,
            piece,
            fetch_lease(self.share_grace).as_millis() as u64,
            shared.seen_outside_clock(now),
        ) && shared
            .rack_availability
            .get(piece as usize)
            .is_some_and(|a| a.load(Ordering::Relaxed) == 0)
    }

    /// A new piece to fetch from `key`, claimed for this core.
    fn pick_new(&self, now: Instant, key: PeerKey) -> Option<u32> {
        let peer = self.peer(key)?;
        let shared = &self.shared;
        let missing = shared.missing();
        let rack = peer.locality == Locality::Rack;
        // The last eighth, from a seed of our dc that we met as one early on (the origin):
        // it has sent every piece once and its uplink would idle while rack peers hand the
        // newest pieces on one upload at a time. It may be asked for what rack peers have
        // too, rarest over the swarm first: a few pieces cross the rack uplink twice. Not
        // from a host of another rack that finished and dialled us late in our download:
        // every rack's tail from every such host took 1.06 × the blob more into the racks
        // (`ringswarm sim`, 300 hosts in racks of 50).
        let seed_tail = !rack
            && (peer.locality == Locality::Dc || peer.our_place.is_none())
            && peer.seed_met_early
            && peer.have.is_complete()
            && missing.saturating_mul(SEED_TAIL_FRACTION) <= shared.piece_count();
        let input = PickInput {
            peer_has: &peer.have,
            verified: &shared.verified,
            claimed: &shared.claimed,
            // Rarest first counted within the rack for a rack peer.
            availability: if rack {
                &shared.rack_availability
            } else {
                &shared.availability
            },
            start: peer.pick_start,
            refused: peer.refused_since.is_some().then_some(&peer.refused),
            in_progress: Some(&|p| self.in_progress(p)),
            remote: (!rack).then(|| RemoteRule {
                seed_tail,
                rack_availability: &shared.rack_availability,
                share: shared.share(),
                beyond_share: missing <= TAIL_PIECES || shared.rack_quiet_for(RACK_QUIET, now),
                seen_outside: &shared.seen_outside,
                overdue: picker::Overdue {
                    now: shared.seen_outside_clock(now),
                    grace: if self.rack_says_fetching {
                        (self.share_grace / FETCHING_TURN_OF_GRACE)
                            .max(FETCHING_TURN_MIN)
                            .as_millis() as u64
                    } else {
                        self.share_grace.as_millis() as u64
                    },
                    fetch_lapse: fetch_lease(self.share_grace).as_millis() as u64,
                    rack_grace: self.share_grace.as_millis() as u64,
                },
                rack_fetching: &shared.rack_fetching,
                other_dc: peer.in_other_dc().then(|| picker::OtherDc {
                    dc_availability: &shared.dc_availability,
                    dc_share: shared.dc_share(),
                }),
            }),
        };
        picker::pick_and_claim(&input)
    }

    /// A piece another core is fetching, to fetch here too (the first copy wins).
    fn pick_duplicate(&self, key: PeerKey, now: Instant) -> Option<u32> {
        let peer = self.peer(key)?;
        let shared = &self.shared;
        let rack = peer.locality == Locality::Rack;
        picker::pick_endgame(
            &peer.have,
            &shared.verified,
            &shared.claimed,
            peer.pick_start,
            |p| {
                self.in_progress(p)
                    || peer.is_refusing(p)
                    || self.single_source.contains(&p)
                    || (!rack && !self.rack_cannot_serve(p, now))
            },
        )
    }

    /// Withdraws every request of `key` (it choked us, or is leaving): blocks nobody else
    /// asked for are missing again, and pieces nobody works on any more are given up.
    pub(super) fn drop_requests(&mut self, key: PeerKey) {
        let Some(peer) = self.peer_mut(key) else {
            return;
        };
        peer.requests_out = 0;
        let pieces = std::mem::take(&mut peer.pieces);
        for piece in pieces {
            self.leave_piece(piece, key, false);
        }
    }

    /// `key` stops working on `piece`: its requests there are withdrawn (with a CANCEL
    /// when `cancel`: the peer is still there and may yet send them). A piece left with no
    /// request and nobody working on it is given up: its claim released, its buffer
    /// discarded.
    pub(super) fn leave_piece(&mut self, piece: u32, key: PeerKey, cancel: bool) {
        let Some(a) = self.assemblies.get_mut(&piece) else {
            return;
        };
        let mut cancels = Vec::new();
        for b in 0..a.blocks.len() {
            if a.blocks[b].drop_requester(key) {
                cancels.push(a.block_ref(b));
            }
        }
        let orphan = !a.has_requests();
        if let Some(peer) = self.peer_mut(key) {
            peer.pieces.retain(|&p| p != piece);
            if cancel {
                peer.requests_out = peer.requests_out.saturating_sub(cancels.len() as u32);
            }
        }
        if cancel {
            for b in cancels {
                self.send(key, Out::Cancel(b));
            }
        }
        if orphan && !self.order.iter().any(|&k| self.works_on(k, piece)) {
            self.give_up(piece);
        }
    }

    fn works_on(&self, key: PeerKey, piece: u32) -> bool {
        self.peer(key).is_some_and(|p| p.pieces.contains(&piece))
    }

    /// Forgets an assembly: outstanding requests are cancelled, the claim released, the
    /// buffer discarded.
    pub(super) fn give_up(&mut self, piece: u32) {
        let Some(a) = self.assemblies.remove(&piece) else {
            return;
        };
        if a.claimed && !self.shared.verified.get(piece) {
            self.shared.claimed.clear(piece);
        }
        self.fetch_stopped(piece);
        for b in 0..a.blocks.len() {
            let block = a.block_ref(b);
            for k in a.blocks[b].requesters() {
                if let Some(peer) = self.peer_mut(k) {
                    peer.requests_out = peer.requests_out.saturating_sub(1);
                }
                self.send(k, Out::Cancel(block));
            }
        }
        for k in self.order.clone() {
            if let Some(peer) = self.peer_mut(k) {
                peer.pieces.retain(|&p| p != piece);
            }
        }
        self.actions
            .push_back(crate::out::Action::Discard { buf: a.buf });
    }

    /// The peer will not give us `piece` now (BEP 6 REJECT: it is choking us, lacks it, or
    /// as a first seeder has handed it to another peer): fetch it elsewhere, and do not ask
    /// this peer for it again for a while.
    pub(super) fn on_reject(
        &mut self,
        now: Instant,
        key: PeerKey,
        block: BlockRef,
        bufs: &mut dyn PieceBuffers,
    ) {
        let piece = block.piece;
        // The rejected request is answered: withdrawn here, not cancelled below. Only a
        // REJECT naming exactly a block we asked for counts.
        let requested = self.assemblies.get_mut(&piece).is_some_and(|a| {
            a.block_index(block.begin, block.len)
                .is_some_and(|b| a.blocks[b].drop_requester(key))
        });
        if !requested {
            return;
        }
        if let Some(peer) = self.peer_mut(key) {
            peer.requests_out = peer.requests_out.saturating_sub(1);
            peer.refused.set(piece);
            peer.refused_since.get_or_insert(now);
        }
        self.leave_piece(piece, key, true);
        self.fill(now, key, bufs);
    }
}

#[cfg(test)]
mod grace_tests {
    use super::*;

    #[test]
    fn the_share_grace_is_a_share_of_the_download_time_within_bounds() {
        let gib16 = 16u64 << 30;
        // 16 GiB at 3 GB/s: ~5.7 s, of which 0.15.
        let g = share_grace(gib16, 3e9);
        assert!(
            g > Duration::from_millis(800) && g < Duration::from_millis(900),
            "{g:?}"
        );
        assert_eq!(share_grace(gib16, 1e6), SHARE_GRACE_MAX, "slow: capped");
        assert_eq!(share_grace(1 << 20, 3e9), SHARE_GRACE_MIN, "tiny: floored");
        assert_eq!(share_grace(gib16, 0.0), SHARE_GRACE_MAX, "no rate yet");
        assert_eq!(share_grace(gib16, f64::NAN), SHARE_GRACE_MAX);
    }
}
