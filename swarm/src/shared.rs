//! What the per-core instances of one torrent on one host share.
//!
//! A host runs one [`Swarm`](crate::Swarm) per core per torrent; they meet here. The hot
//! state is lock-free (atomic bitsets for verified and claimed pieces, atomic availability
//! counters and statistics), so a core never waits for another; the mutex-guarded
//! [`PeerBook`] is touched only when a connection starts or ends or a piece fails its hash.
//! Under a simulator a host is one core and the atomics are uncontended: the same code runs
//! unchanged, and a host's share costs a few bytes per piece.
//!
//! Times are stored as milliseconds since the `epoch` given at creation (the caller's
//! clock, passed in like every time in the core).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ringswarm_proto::bitfield::{AtomicBitfield, Bitfield};

use crate::ids::PeerId;
use crate::limits::BanList;
use crate::picker::Share;

/// A first seeder's grant of a piece lapses after this long, and the piece may go to
/// another peer (the first taker is slow or stuck, or the swarm is slow to pass its copy
/// on).
pub const GRANT_LAPSE: Duration = Duration::from_secs(10);
/// ...and sooner, after this long without a block of the piece going to its taker: the
/// taker was choked, went silent, or died without a FIN, and the piece would be refused to
/// everyone else meanwhile. (`ringswarm sim`, 1 000 hosts with 1 % dead: a host that died
/// holding the grant of the fleet's last piece held every other host 7 s, to the lapse;
/// the healthy hosts took 2.74 × the bound.) Two late requests' time: a taker served
/// slowly still gets a block that often.
pub const GRANT_STALL: Duration = Duration::from_secs(2);

/// Hash failures from one address before it is banned.
pub const STRIKES_BEFORE_BAN: u32 = 2;

/// Peers as a host's cores see them together.
#[derive(Debug, Default)]
pub struct PeerBook {
    /// Connected peer ids (one connection per peer, over every core).
    pub connected: HashSet<PeerId>,
    /// Peers that finished a download from us (`send --receivers`).
    pub completed: HashSet<PeerId>,
    pub strikes: HashMap<IpAddr, u32>,
    pub banned: BanList,
    /// Connected peers of our rack (only when we know our rack): the rack's membership,
    /// from which every host of the rack computes the same [`Share`] split.
    pub rack_peers: BTreeSet<PeerId>,
}

/// Statistics, counted by the cores and read by the session.
#[derive(Debug, Default)]
pub struct Counters {
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
    /// Upload slots in use, over every core.
    pub unchoked: AtomicU32,
    /// Interested peers waiting for an upload slot, over every core (a tick behind).
    pub waiting: AtomicU32,
}

/// One torrent's state shared by a host's cores.
#[derive(Debug)]
pub struct Shared {
    piece_count: u32,
    /// Bytes of each piece but the last, and of the last.
    piece_len: u32,
    last_piece_len: u32,
    epoch: Instant,
    pub verified: AtomicBitfield,
    /// How many pieces `verified` holds (kept beside it: `missing` is asked on every
    /// refill and HAVE, and counting the bitset is O(pieces)).
    verified_count: AtomicU32,
    /// Pieces some core is fetching (outside endgame, at most one core fetches a piece).
    pub claimed: AtomicBitfield,
    /// How many connected peers announced each piece.
    pub availability: Box<[AtomicU32]>,
    /// Like `availability`, counting only peers of our rack.
    pub rack_availability: Box<[AtomicU32]>,
    /// Like `availability`, counting only peers of our datacenter (our rack's included).
    pub dc_availability: Box<[AtomicU32]>,
    /// Per piece, when a peer outside our rack first announced it: ms since the epoch + 1,
    /// 0 = not yet (see [`crate::picker::RemoteRule::seen_outside`]).
    pub seen_outside: Box<[AtomicU64]>,
    /// Per piece, when a rack peer last said it started fetching it from outside the rack
    /// (an `rs_fetching` message), on the `seen_outside` clock; 0 = nobody (see
    /// [`crate::picker::RemoteRule::rack_fetching`]).
    pub rack_fetching: Box<[AtomicU64]>,
    /// Our [`Share`] of the pieces fetched from outside the rack: `members << 32 | rank`.
    rack_share: AtomicU64,
    /// Our rack's [`Share`] of the pieces fetched from other datacenters, as
    /// `racks << 32 | rank`: the racks of our dc split them, each piece fetched by one
    /// rack and passed on inside the dc (see [`Shared::set_dc_share`]).
    dc_share: AtomicU64,
    /// When a block last came from a rack peer, ms since the epoch.
    last_rack_block_ms: AtomicU64,
    pub counters: Counters,
    /// We are the first seeder (the data was all here when the torrent was added): every
    /// piece goes to one peer before any goes to a second ([`Shared::grant`]).
    pub initial_seed: AtomicBool,
    /// Pieces handed to some peer (and not given back by its leaving), and when.
    granted: AtomicBitfield,
    granted_at: Box<[AtomicU64]>,
    /// When a block of each granted piece last went out, ms since the epoch.
    grant_progress: Box<[AtomicU64]>,
    /// Pieces some peer has announced holding (one copy is out), and how many.
    delivered: AtomicBitfield,
    delivered_count: AtomicU32,
    pub peers: Mutex<PeerBook>,
}

impl Shared {
    /// The shared state of a torrent of `piece_count` pieces of `piece_len` bytes (the
    /// last `last_piece_len`), with times counted from `epoch`.
    pub fn new(piece_count: u32, piece_len: u32, last_piece_len: u32, epoch: Instant) -> Shared {
        let n = piece_count;
        Shared {
            piece_count: n,
            piece_len,
            last_piece_len,
            epoch,
            verified: AtomicBitfield::new(n),
            verified_count: AtomicU32::new(0),
            claimed: AtomicBitfield::new(n),
            availability: (0..n).map(|_| AtomicU32::new(0)).collect(),
            rack_availability: (0..n).map(|_| AtomicU32::new(0)).collect(),
            dc_availability: (0..n).map(|_| AtomicU32::new(0)).collect(),
            seen_outside: (0..n).map(|_| AtomicU64::new(0)).collect(),
            rack_fetching: (0..n).map(|_| AtomicU64::new(0)).collect(),
            rack_share: AtomicU64::new(1 << 32),
            dc_share: AtomicU64::new(1 << 32),
            last_rack_block_ms: AtomicU64::new(0),
            counters: Counters::default(),
            initial_seed: AtomicBool::new(false),
            granted: AtomicBitfield::new(n),
            granted_at: (0..n).map(|_| AtomicU64::new(0)).collect(),
            grant_progress: (0..n).map(|_| AtomicU64::new(0)).collect(),
            delivered: AtomicBitfield::new(n),
            delivered_count: AtomicU32::new(0),
            peers: Mutex::new(PeerBook::default()),
        }
    }

    /// Uses `bans` (with its own duration) for this torrent's banned addresses.
    pub fn with_bans(self, bans: BanList) -> Shared {
        if let Ok(mut book) = self.peers.lock() {
            book.banned = bans;
        }
        self
    }

    pub fn piece_count(&self) -> u32 {
        self.piece_count
    }

    pub fn piece_size(&self, piece: u32) -> u32 {
        if piece + 1 == self.piece_count {
            self.last_piece_len
        } else {
            self.piece_len
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Marks a piece verified; false when it already was.
    pub fn mark_verified(&self, piece: u32) -> bool {
        let new = self.verified.set(piece);
        if new {
            self.verified_count.fetch_add(1, Ordering::AcqRel);
            let size = u64::from(self.piece_size(piece));
            self.counters
                .verified_bytes
                .fetch_add(size, Ordering::Relaxed);
        }
        new
    }

    pub fn missing(&self) -> u32 {
        self.piece_count
            .saturating_sub(self.verified_count.load(Ordering::Acquire))
    }

    pub fn all_verified(&self) -> bool {
        self.missing() == 0
    }

    /// Whether a first seeder serves `piece` to a peer asking for it: yes for the first
    /// peer to ask, and for anyone once every piece is out (some peer announced it); until
    /// then a piece handed to another peer is refused, even once that peer announced it,
    /// so the seeder's upload feeds the swarm one whole copy before it repeats any piece,
    /// and the others get it from that peer (a grant lapses, so a piece still goes out
    /// again at most once per [`GRANT_LAPSE`]). Serving an announced piece to anyone let
    /// the origin send 1.35 × the blob and the last host finish at 1.49 × the bound,
    /// refusing it 1.28 × and 1.45 × (`ringswarm sim`, 300 hosts in 6 racks).
    /// `ours` are the pieces already granted to this peer.
    pub fn grant(&self, piece: u32, ours: &mut Bitfield, now: Instant) -> bool {
        if !self.initial_seed.load(Ordering::Relaxed) || ours.get(piece) {
            return true;
        }
        if self.delivered_count.load(Ordering::Relaxed) >= self.piece_count {
            return true;
        }
        let now = self.ms(now);
        let (Some(at), Some(progress)) = (
            self.granted_at.get(piece as usize),
            self.grant_progress.get(piece as usize),
        ) else {
            return false;
        };
        if self.granted.set(piece) {
            at.store(now, Ordering::Relaxed);
            progress.store(now, Ordering::Relaxed);
            ours.set(piece);
            return true;
        }
        // A lapsed grant is taken over (one peer at a time wins the exchange).
        let then = at.load(Ordering::Relaxed);
        let lapsed = now.saturating_sub(then) >= GRANT_LAPSE.as_millis() as u64
            || now.saturating_sub(progress.load(Ordering::Relaxed))
                >= GRANT_STALL.as_millis() as u64;
        if lapsed
            && at
                .compare_exchange(then, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            progress.store(now, Ordering::Relaxed);
            ours.set(piece);
            return true;
        }
        false
    }

    /// A block of `piece` went out to a peer it is granted to: the grant holds on
    /// ([`GRANT_STALL`]).
    pub fn note_grant_progress(&self, piece: u32, now: Instant) {
        if !self.initial_seed.load(Ordering::Relaxed) {
            return;
        }
        if let Some(p) = self.grant_progress.get(piece as usize) {
            p.store(self.ms(now), Ordering::Relaxed);
        }
    }

    /// A peer announced `piece`: that copy is out of the first seeder.
    pub fn note_delivered(&self, piece: u32) {
        if self.initial_seed.load(Ordering::Relaxed) && self.delivered.set(piece) {
            self.delivered_count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A peer left: the pieces granted to it that are not out yet go to the next asker.
    pub fn release_grants(&self, ours: &Bitfield) {
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

    /// Our rack's share of the pieces fetched from other datacenters ([`Share::ALL`] until
    /// set: every rack may fetch any).
    pub fn dc_share(&self) -> Share {
        let v = self.dc_share.load(Ordering::Relaxed);
        Share {
            rank: v as u32,
            members: ((v >> 32) as u32).max(1),
        }
    }

    /// Sets our rack's share of the remote-dc pieces: our rack's rank among the racks of
    /// our dc, as the topology names them (the driver knows the topology; every host of
    /// the dc computes the same split from the same file).
    pub fn set_dc_share(&self, share: Share) {
        let members = u64::from(share.members.max(1));
        let rank = u64::from(share.rank.min(share.members.saturating_sub(1)));
        self.dc_share
            .store((members << 32) | rank, Ordering::Relaxed);
    }

    /// Adds or removes a rack peer and recomputes our share: our rank among the rack's
    /// peer ids and ours.
    pub fn set_rack_peer(&self, peer: PeerId, present: bool, ours: PeerId) {
        let Ok(mut book) = self.peers.lock() else {
            return;
        };
        let changed = if present {
            book.rack_peers.insert(peer)
        } else {
            book.rack_peers.remove(&peer)
        };
        if changed {
            let rank = book.rack_peers.range(..ours).count() as u64;
            let members = book.rack_peers.len() as u64 + 1;
            self.rack_share
                .store((members << 32) | rank, Ordering::Relaxed);
        }
    }

    pub fn note_rack_block(&self, now: Instant) {
        self.last_rack_block_ms
            .store(self.ms(now), Ordering::Relaxed);
    }

    /// A peer outside the rack announced `piece`: the first time starts its clock.
    pub fn note_seen_outside(&self, piece: u32, now: Instant) {
        if let Some(t) = self.seen_outside.get(piece as usize) {
            t.compare_exchange(0, self.ms(now) + 1, Ordering::Relaxed, Ordering::Relaxed)
                .ok();
        }
    }

    /// A rack peer started fetching `piece` from outside the rack (`now`), or left while
    /// fetching it (`None`).
    pub fn note_rack_fetching(&self, piece: u32, now: Option<Instant>) {
        if let Some(t) = self.rack_fetching.get(piece as usize) {
            t.store(now.map_or(0, |now| self.ms(now) + 1), Ordering::Relaxed);
        }
    }

    /// `now` as a `seen_outside` stamp.
    pub fn seen_outside_clock(&self, now: Instant) -> u64 {
        self.ms(now) + 1
    }

    /// No block from a rack peer for `quiet` (counted from the epoch at first).
    pub fn rack_quiet_for(&self, quiet: Duration, now: Instant) -> bool {
        let last = self.last_rack_block_ms.load(Ordering::Relaxed);
        self.ms(now).saturating_sub(last) >= quiet.as_millis() as u64
    }

    /// Whether `ip` is banned at `now`.
    pub fn is_banned(&self, ip: IpAddr, now: Instant) -> bool {
        self.peers
            .lock()
            .map_or(true, |mut book| book.banned.is_banned(ip, now))
    }

    /// Counts a hash failure against `ip`; true when that bans it (the strikes then start
    /// over, so after the ban expires it takes as many again).
    pub fn strike(&self, ip: IpAddr, now: Instant) -> bool {
        let Ok(mut book) = self.peers.lock() else {
            return false;
        };
        let strikes = book.strikes.entry(ip).or_insert(0);
        *strikes += 1;
        if *strikes >= STRIKES_BEFORE_BAN {
            book.strikes.remove(&ip);
            book.banned.ban(ip, now);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(n: u32) -> (Shared, Instant) {
        let t0 = Instant::now();
        (Shared::new(n, 1 << 20, 1000, t0), t0)
    }

    #[test]
    fn a_first_seeder_grants_each_piece_to_one_peer_until_it_is_out() {
        let (s, t0) = shared(3);
        s.initial_seed.store(true, Ordering::Relaxed);
        let mut a = Bitfield::new(3);
        let mut b = Bitfield::new(3);
        assert!(s.grant(0, &mut a, t0));
        assert!(s.grant(0, &mut a, t0), "a peer keeps its own grant");
        assert!(!s.grant(0, &mut b, t0), "another peer is refused it");
        assert!(s.grant(1, &mut b, t0), "and given a distinct piece");
        s.note_delivered(0);
        assert!(
            !s.grant(0, &mut b, t0),
            "a copy out is fetched from its holder"
        );
        s.note_delivered(1);
        s.note_delivered(2);
        assert!(
            s.grant(0, &mut b, t0),
            "once every piece is out, anyone may have any"
        );
    }

    #[test]
    fn a_grant_lapses_when_its_taker_never_announces_the_piece() {
        let (s, t0) = shared(2);
        s.initial_seed.store(true, Ordering::Relaxed);
        let mut a = Bitfield::new(2);
        let mut b = Bitfield::new(2);
        assert!(s.grant(1, &mut a, t0));
        // Its blocks go out: the grant holds to the lapse.
        let step = GRANT_STALL - Duration::from_millis(1);
        let mut t = t0;
        while t + step < t0 + GRANT_LAPSE {
            t += step;
            s.note_grant_progress(1, t);
            assert!(!s.grant(1, &mut b, t));
        }
        assert!(!s.grant(1, &mut b, t0 + GRANT_LAPSE - Duration::from_millis(1)));
        assert!(s.grant(1, &mut b, t0 + GRANT_LAPSE));
    }

    #[test]
    fn a_grant_lapses_early_when_no_block_of_it_goes_out() {
        let (s, t0) = shared(2);
        s.initial_seed.store(true, Ordering::Relaxed);
        let mut a = Bitfield::new(2);
        let mut b = Bitfield::new(2);
        let mut c = Bitfield::new(2);
        assert!(s.grant(0, &mut a, t0));
        s.note_grant_progress(0, t0 + Duration::from_millis(500));
        let quiet = t0 + Duration::from_millis(500) + GRANT_STALL;
        assert!(!s.grant(0, &mut b, quiet - Duration::from_millis(1)));
        // Its taker went quiet (choked, silent or dead): the next asker takes it over,
        // and holds it as the first did.
        assert!(s.grant(0, &mut b, quiet));
        assert!(!s.grant(0, &mut c, quiet + Duration::from_millis(1)));
    }

    #[test]
    fn a_leaving_peer_gives_back_the_grants_not_yet_out() {
        let (s, t0) = shared(2);
        s.initial_seed.store(true, Ordering::Relaxed);
        let mut a = Bitfield::new(2);
        let mut b = Bitfield::new(2);
        assert!(s.grant(0, &mut a, t0) && s.grant(1, &mut a, t0));
        s.note_delivered(1);
        s.release_grants(&a);
        assert!(s.grant(0, &mut b, t0), "piece 0 is free again");
    }

    #[test]
    fn not_a_first_seeder_serves_everyone() {
        let (s, t0) = shared(1);
        let mut a = Bitfield::new(1);
        let mut b = Bitfield::new(1);
        assert!(s.grant(0, &mut a, t0) && s.grant(0, &mut b, t0));
    }

    #[test]
    fn the_rack_share_is_our_rank_among_the_rack_peer_ids() {
        let (s, _) = shared(1);
        let me = PeerId([5; 20]);
        assert_eq!(s.share(), Share::ALL);
        s.set_rack_peer(PeerId([1; 20]), true, me);
        s.set_rack_peer(PeerId([9; 20]), true, me);
        assert_eq!(
            s.share(),
            Share {
                rank: 1,
                members: 3
            }
        );
        s.set_rack_peer(PeerId([1; 20]), false, me);
        assert_eq!(
            s.share(),
            Share {
                rank: 0,
                members: 2
            }
        );
    }

    #[test]
    fn two_strikes_ban_an_address_and_the_ban_expires() {
        let t0 = Instant::now();
        let s = Shared::new(1, 1, 1, t0).with_bans(BanList::new(Duration::from_secs(60)));
        let ip: IpAddr = "198.18.0.7".parse().unwrap();
        assert!(!s.strike(ip, t0));
        assert!(!s.is_banned(ip, t0));
        assert!(s.strike(ip, t0));
        assert!(s.is_banned(ip, t0 + Duration::from_secs(59)));
        assert!(!s.is_banned(ip, t0 + Duration::from_secs(60)));
        assert!(
            !s.strike(ip, t0 + Duration::from_secs(61)),
            "strikes start over"
        );
    }

    #[test]
    fn seen_outside_keeps_the_first_announcement_on_its_own_clock() {
        let (s, t0) = shared(2);
        s.note_seen_outside(1, t0 + Duration::from_millis(100));
        s.note_seen_outside(1, t0 + Duration::from_millis(900));
        let stamp = s.seen_outside[1].load(Ordering::Relaxed);
        assert_eq!(stamp, 101);
        assert_eq!(s.seen_outside_clock(t0 + Duration::from_millis(100)), stamp);
        assert!(s.rack_quiet_for(Duration::from_secs(5), t0 + Duration::from_secs(5)));
        s.note_rack_block(t0 + Duration::from_secs(5));
        assert!(!s.rack_quiet_for(Duration::from_secs(5), t0 + Duration::from_secs(9)));
    }

    /// Poisons the peer book: a thread panics holding its lock.
    fn poison(s: &Shared) {
        std::thread::scope(|sc| {
            let poisoner = sc.spawn(|| {
                let _held = s.peers.lock().unwrap();
                panic!("poisoning the peer book on purpose");
            });
            assert!(poisoner.join().is_err());
        });
        assert!(s.peers.is_poisoned());
    }

    #[test]
    fn a_poisoned_peer_book_bans_everyone_strikes_nobody_and_keeps_the_share() {
        let (s, t0) = shared(2);
        let ip: IpAddr = "198.18.0.7".parse().unwrap();
        poison(&s);
        assert!(s.is_banned(ip, t0), "fails closed: nobody is let in");
        assert!(!s.strike(ip, t0));
        s.set_rack_peer(PeerId([1; 20]), true, PeerId([5; 20]));
        assert_eq!(s.share(), Share::ALL);
        let s = s.with_bans(BanList::new(Duration::from_secs(1)));
        assert!(s.is_banned(ip, t0 + Duration::from_secs(2)));
    }

    #[test]
    fn a_grant_or_a_seen_outside_stamp_for_a_piece_outside_the_torrent_is_refused() {
        let (s, t0) = shared(2);
        s.initial_seed.store(true, Ordering::Relaxed);
        let mut a = Bitfield::new(2);
        assert!(!s.grant(2, &mut a, t0));
        assert_eq!(a.count_ones(), 0);
        s.note_seen_outside(2, t0);
        assert!(s
            .seen_outside
            .iter()
            .all(|t| t.load(Ordering::Relaxed) == 0));
    }
}
