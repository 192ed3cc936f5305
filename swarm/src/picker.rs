//! Piece picking, sans-I/O: rarest-first over the pieces a peer has, claimed atomically so
//! that workers on different cores never fetch the same piece (outside endgame).
//!
//! Rack-local preference (DESIGN.md, "Topology and rack-local preference"): a peer in our
//! rack is asked for the piece rarest *within the rack*; a peer outside it only for pieces
//! no rack peer has ([`RemoteRule`]), and among those first for our [`Share`], so that the
//! hosts of one rack fetch different pieces across the uplink and each piece enters the
//! rack about once.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use ringswarm_proto::bitfield::{AtomicBitfield, Bitfield};

/// Which of the pieces missing from the rack this host fetches from outside it: piece `i`
/// when `i % members == rank`. `rank` is our position among the rack peers we know, by
/// peer id, so every host of the rack computes the same split from the same membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    pub rank: u32,
    pub members: u32,
}

impl Share {
    /// Alone in the rack: every piece is ours.
    pub const ALL: Share = Share {
        rank: 0,
        members: 1,
    };

    pub fn contains(self, piece: u32) -> bool {
        self.members <= 1 || piece % self.members == self.rank
    }
}

/// What a peer outside our rack may be asked for.
pub struct RemoteRule<'a> {
    /// The tail, from the origin: any piece, what the rack has too, except one a rack
    /// peer fetches from outside already.
    pub seed_tail: bool,
    /// How many rack peers have each piece: only pieces no rack peer has are eligible.
    pub rack_availability: &'a [AtomicU32],
    pub share: Share,
    /// Pieces outside our share may be fetched too (after them): the rack is starved of
    /// local blocks, or the download is at its tail.
    pub beyond_share: bool,
    /// Per piece, when a peer outside the rack announced it (HAVE), on the torrent's clock
    /// in ms + 1 (0: not yet). From then on, the rack's hosts may fetch it one after the
    /// other ([`Overdue`]).
    pub seen_outside: &'a [AtomicU64],
    pub overdue: Overdue,
    /// Per piece, when a rack peer said it started fetching it from outside (same clock,
    /// 0: nobody): such a piece is left to it for [`Overdue::fetch_lapse`].
    pub rack_fetching: &'a [AtomicU64],
    /// Set for a peer in another datacenter.
    pub other_dc: Option<OtherDc<'a>>,
}

/// When a piece outside our share may be fetched anyway: its owner had `grace` to fetch
/// it and has not (it may have no peer that has it, or be slow), so the next host of the
/// rack in rank order may, one `grace` later the one after, and so on. Each in turn, not
/// all at once: every host of a rack sees a piece appear outside at about the same time,
/// and letting them all fetch it after one grace brought 12 × the blob into a rack
/// (`ringswarm sim`, 300 hosts in racks of 50).
#[derive(Clone, Copy, Debug)]
pub struct Overdue {
    /// Now, on the `seen_outside` clock (ms + 1).
    pub now: u64,
    /// Per place in the order, in ms.
    pub grace: u64,
    /// From another dc: the least wait per rack between the owner rack and ours, in ms
    /// (a rack's turn is its hosts' turns, but at least this: the owner rack must have
    /// had time to fetch the piece across the WAN and hand it to our rack). With racks of
    /// 4 hosts and turns of 0.4 s, the next rack's turn came 1.6 s after the first
    /// announcement, before a piece crossing a busy 200 Mbit/s WAN had reached it.
    pub rack_grace: u64,
    /// How long a rack peer's word that it fetches a piece holds, in ms.
    pub fetch_lapse: u64,
}

/// Whether a rack peer's word that it fetches `piece` from outside (`rack_fetching`, on the
/// `seen_outside` clock) still holds at `now`: given less than `lapse` ms ago.
pub fn rack_peer_fetches(rack_fetching: &[AtomicU64], piece: u32, lapse: u64, now: u64) -> bool {
    rack_fetching
        .get(piece as usize)
        .map(|t| t.load(Ordering::Relaxed))
        .is_some_and(|t| t != 0 && t.saturating_add(lapse) > now)
}

/// What a peer in another datacenter may be asked for: only pieces no peer of our dc has
/// (those come from inside the dc), and first those of our rack's [`Share`] of the dc
/// (`dc_share`: the dc's racks split the pieces that cross the WAN, as a rack's hosts split
/// those that cross its uplink), split again among our rack's hosts. So each piece enters
/// the dc about once, then each rack once, then spreads in the rack.
pub struct OtherDc<'a> {
    /// How many peers of our dc (our rack's included) have each piece.
    pub dc_availability: &'a [AtomicU32],
    pub dc_share: Share,
}

impl RemoteRule<'_> {
    /// Whether `piece` is ours to fetch from this peer before the rest: in our share of
    /// the rack's pieces or, from another dc, in our share of our rack's share of the dc's.
    fn in_share(&self, piece: u32) -> bool {
        match &self.other_dc {
            None => self.share.contains(piece),
            Some(dc) => {
                dc.dc_share.contains(piece)
                    && self.share.contains(piece / dc.dc_share.members.max(1))
            }
        }
    }

    /// How long after its first announcement outside we may fetch `piece` from this
    /// peer, in ms: at once for its owner, then a turn later for each next rank of its
    /// rack, then (from another dc) a rack's turn later for each next rack.
    fn wait_in_order(&self, piece: u32) -> u64 {
        let after = |share: Share, i: u32| {
            let m = share.members.max(1);
            u64::from((share.rank % m + m - i % m) % m)
        };
        let turn = self.overdue.grace;
        match &self.other_dc {
            None => after(self.share, piece) * turn,
            Some(dc) => {
                let racks = dc.dc_share.members.max(1);
                let rack_turn =
                    (u64::from(self.share.members.max(1)) * turn).max(self.overdue.rack_grace);
                after(dc.dc_share, piece) * rack_turn + after(self.share, piece / racks) * turn
            }
        }
    }

    fn a_rack_peer_fetches(&self, piece: u32) -> bool {
        rack_peer_fetches(
            self.rack_fetching,
            piece,
            self.overdue.fetch_lapse,
            self.overdue.now,
        )
    }

    fn beyond_share_allowed(&self, piece: u32) -> bool {
        self.beyond_share
            || self
                .seen_outside
                .get(piece as usize)
                .map(|t| t.load(Ordering::Relaxed))
                .is_some_and(|t| {
                    t != 0 && t.saturating_add(self.wait_in_order(piece)) <= self.overdue.now
                })
    }
}

/// What a pick looks at.
pub struct PickInput<'a> {
    /// Pieces the peer has.
    pub peer_has: &'a Bitfield,
    /// Pieces verified here.
    pub verified: &'a AtomicBitfield,
    /// Pieces some worker is fetching.
    pub claimed: &'a AtomicBitfield,
    /// How many peers have each piece: the rarity a pick minimises (counted within the
    /// rack for a rack peer, over every peer for a remote one).
    pub availability: &'a [AtomicU32],
    /// Where the scan starts, so peers with equal choices spread over the torrent.
    pub start: u32,
    /// Pieces this peer refused lately (BEP 6 REJECT): not asked again for now.
    pub refused: Option<&'a Bitfield>,
    /// Pieces this core is still receiving, hashing or writing (an endgame duplicate whose
    /// claim another core gave up): not started twice here.
    pub in_progress: Option<&'a dyn Fn(u32) -> bool>,
    /// Set for a peer outside our rack.
    pub remote: Option<RemoteRule<'a>>,
}

/// Claims the best piece the peer has that is neither verified nor claimed (and, for a
/// remote peer, that its [`RemoteRule`] allows): our share before the rest, then the
/// rarest. Ties go to the first such piece at or after `start` (wrapping).
pub fn pick_and_claim(input: &PickInput<'_>) -> Option<u32> {
    let n = input.peer_has.len();
    if n == 0 {
        return None;
    }
    let load = |counts: &[AtomicU32], i: u32| {
        counts
            .get(i as usize)
            .map_or(u32::MAX, |a| a.load(Ordering::Relaxed))
    };
    // A claim can race with another core; retry a bounded number of times.
    for _ in 0..8 {
        // (outside our share, availability): lower is better.
        let mut best: Option<(u32, (bool, u32))> = None;
        let start = input.start % n;
        // From `start` to the end, then from 0 to `start`; 64 pieces at a time, so that
        // pieces the peer lacks, or that are verified or claimed, cost nothing each (a
        // pick runs on every HAVE and every refill: 6 400 pieces scanned bit by bit took
        // half of a 200-host simulation's time).
        'scan: for (lo, hi) in [(start, n), (0, start)] {
            let mut i = lo;
            while i < hi {
                let w = i / 64;
                let mut candidates =
                    input.peer_has.word(w) & !input.verified.word(w) & !input.claimed.word(w);
                if let Some(r) = input.refused {
                    candidates &= !r.word(w);
                }
                candidates &= u64::MAX << (i % 64);
                let word_end = (w + 1) * 64;
                if hi < word_end {
                    candidates &= (1u64 << (hi % 64)) - 1;
                }
                while candidates != 0 {
                    let i = w * 64 + candidates.trailing_zeros();
                    candidates &= candidates - 1;
                    let outside = match &input.remote {
                        None => false,
                        Some(rule) if rule.seed_tail => {
                            if rule.a_rack_peer_fetches(i) {
                                continue;
                            }
                            false
                        }
                        Some(rule) => {
                            if load(rule.rack_availability, i) > 0
                                || rule
                                    .other_dc
                                    .as_ref()
                                    .is_some_and(|d| load(d.dc_availability, i) > 0)
                                || rule.a_rack_peer_fetches(i)
                            {
                                continue;
                            }
                            let outside = !rule.in_share(i);
                            if outside && !rule.beyond_share_allowed(i) {
                                continue;
                            }
                            outside
                        }
                    };
                    let key = (outside, load(input.availability, i));
                    // Asked only of a would-be best: it looks pieces up in maps.
                    if best.is_none_or(|(_, b)| key < b)
                        && !input.in_progress.is_some_and(|busy| busy(i))
                    {
                        best = Some((i, key));
                        if key <= (false, 1) {
                            break 'scan;
                        }
                    }
                }
                i = word_end;
            }
        }
        let (piece, _) = best?;
        if input.claimed.set(piece) {
            return Some(piece);
        }
    }
    None
}

/// Endgame: a piece the peer has that is claimed elsewhere but not yet verified, and that
/// `skip` does not exclude (pieces this worker already fetches).
pub fn pick_endgame(
    peer_has: &Bitfield,
    verified: &AtomicBitfield,
    claimed: &AtomicBitfield,
    start: u32,
    skip: impl Fn(u32) -> bool,
) -> Option<u32> {
    let n = peer_has.len();
    if n == 0 {
        return None;
    }
    let start = start % n;
    for (lo, hi) in [(start, n), (0, start)] {
        let mut i = lo;
        while i < hi {
            let w = i / 64;
            let mut candidates = peer_has.word(w) & claimed.word(w) & !verified.word(w);
            candidates &= u64::MAX << (i % 64);
            let word_end = (w + 1) * 64;
            if hi < word_end {
                candidates &= (1u64 << (hi % 64)) - 1;
            }
            while candidates != 0 {
                let piece = w * 64 + candidates.trailing_zeros();
                candidates &= candidates - 1;
                if !skip(piece) {
                    return Some(piece);
                }
            }
            i = word_end;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avail(v: &[u32]) -> Vec<AtomicU32> {
        v.iter().map(|&x| AtomicU32::new(x)).collect()
    }

    #[test]
    fn picks_rarest_and_claims_it() {
        let has = Bitfield::full(4);
        let verified = AtomicBitfield::new(4);
        let claimed = AtomicBitfield::new(4);
        let a = avail(&[3, 2, 5, 2]);
        let input = PickInput {
            peer_has: &has,
            verified: &verified,
            claimed: &claimed,
            availability: &a,
            start: 0,
            refused: None,
            in_progress: None,
            remote: None,
        };
        assert_eq!(pick_and_claim(&input), Some(1));
        assert_eq!(pick_and_claim(&input), Some(3));
        assert_eq!(pick_and_claim(&input), Some(0));
        assert_eq!(pick_and_claim(&input), Some(2));
        assert_eq!(pick_and_claim(&input), None);
    }

    #[test]
    fn skips_verified_and_pieces_the_peer_lacks() {
        let mut has = Bitfield::new(5);
        has.set(1);
        has.set(2);
        let verified = AtomicBitfield::new(5);
        verified.set(1);
        let claimed = AtomicBitfield::new(5);
        let a = avail(&[1; 5]);
        let input = PickInput {
            peer_has: &has,
            verified: &verified,
            claimed: &claimed,
            availability: &a,
            start: 3,
            refused: None,
            in_progress: None,
            remote: None,
        };
        assert_eq!(pick_and_claim(&input), Some(2));
        assert_eq!(pick_and_claim(&input), None);
        assert_eq!(
            pick_endgame(&has, &verified, &claimed, 0, |_| false),
            Some(2)
        );
        assert_eq!(pick_endgame(&has, &verified, &claimed, 0, |p| p == 2), None);
    }

    #[test]
    fn remote_peers_get_only_what_the_rack_lacks_our_share_first() {
        let has = Bitfield::full(8);
        let verified = AtomicBitfield::new(8);
        let claimed = AtomicBitfield::new(8);
        let global = avail(&[1; 8]);
        // Rack peers hold pieces 0 and 5.
        let rack = avail(&[1, 0, 0, 0, 0, 1, 0, 0]);
        // Our share: pieces 1, 4, 7.
        let share = Share {
            rank: 1,
            members: 3,
        };
        // Piece 6 was announced outside the rack at ms 100 (stored + 1), piece 3 at 900.
        let fetching: Vec<AtomicU64> = (0..8).map(|_| AtomicU64::new(0)).collect();
        let seen: Vec<AtomicU64> = [0, 0, 0, 901, 0, 0, 101, 0]
            .into_iter()
            .map(AtomicU64::new)
            .collect();
        let remote = |beyond_share, now| PickInput {
            peer_has: &has,
            verified: &verified,
            claimed: &claimed,
            availability: &global,
            start: 0,
            refused: None,
            in_progress: None,
            remote: Some(RemoteRule {
                seed_tail: false,
                rack_availability: &rack,
                share,
                beyond_share,
                seen_outside: &seen,
                overdue: Overdue {
                    now,
                    grace: 400,
                    fetch_lapse: 1000,
                    rack_grace: 0,
                },
                rack_fetching: &fetching,
                other_dc: None,
            }),
        };
        assert_eq!(pick_and_claim(&remote(false, 0)), Some(1));
        assert_eq!(pick_and_claim(&remote(false, 0)), Some(4));
        assert_eq!(pick_and_claim(&remote(false, 0)), Some(7));
        assert_eq!(pick_and_claim(&remote(false, 0)), None);
        // Overdue: announced outside a grace ago (we are next after its owner, rank 0).
        assert_eq!(pick_and_claim(&remote(false, 600)), Some(6));
        assert_eq!(pick_and_claim(&remote(false, 600)), None);
        claimed.clear(6);
        // Starved: the rest of what the rack lacks, never what it has.
        let mut got = Vec::new();
        while let Some(p) = pick_and_claim(&remote(true, 0)) {
            got.push(p);
        }
        got.sort_unstable();
        assert_eq!(got, vec![2, 3, 6]);
        // A rack peer is asked for pieces the rack has too.
        let local = PickInput {
            peer_has: &has,
            verified: &verified,
            claimed: &claimed,
            availability: &rack,
            start: 0,
            refused: None,
            in_progress: None,
            remote: None,
        };
        let mut got = Vec::new();
        while let Some(p) = pick_and_claim(&local) {
            got.push(p);
        }
        got.sort_unstable();
        assert_eq!(got, vec![0, 5]);
    }

    /// Piece 8 of 12, which only the remote peer has, seen outside at ms 0 (stored + 1);
    /// we are a rank of a rack of 4, turns 100 ms apart.
    struct Piece8 {
        has: Bitfield,
        verified: AtomicBitfield,
        claimed: AtomicBitfield,
        none: Vec<AtomicU32>,
        fetching: Vec<AtomicU64>,
        seen: Vec<AtomicU64>,
    }

    impl Piece8 {
        fn new() -> Piece8 {
            let mut has = Bitfield::new(12);
            has.set(8);
            Piece8 {
                has,
                verified: AtomicBitfield::new(12),
                claimed: AtomicBitfield::new(12),
                none: avail(&[0; 12]),
                fetching: (0..12).map(|_| AtomicU64::new(0)).collect(),
                seen: (0..12)
                    .map(|i| AtomicU64::new(if i == 8 { 1 } else { 0 }))
                    .collect(),
            }
        }

        /// Whether rank `rank` may fetch piece 8 at `now` (from another dc when `dc_share`
        /// is set, with that `rack_grace`).
        fn may_fetch(&self, rank: u32, now: u64, dc_share: Option<Share>, rack_grace: u64) -> bool {
            let input = PickInput {
                peer_has: &self.has,
                verified: &self.verified,
                claimed: &self.claimed,
                availability: &self.none,
                start: 0,
                refused: None,
                in_progress: None,
                remote: Some(RemoteRule {
                    seed_tail: false,
                    rack_availability: &self.none,
                    share: Share { rank, members: 4 },
                    beyond_share: false,
                    seen_outside: &self.seen,
                    overdue: Overdue {
                        now,
                        grace: 100,
                        fetch_lapse: 1000,
                        rack_grace,
                    },
                    rack_fetching: &self.fetching,
                    other_dc: dc_share.map(|dc_share| OtherDc {
                        dc_availability: &self.none,
                        dc_share,
                    }),
                }),
            };
            let got = pick_and_claim(&input);
            self.claimed.clear(8);
            got == Some(8)
        }
    }

    #[test]
    fn an_overdue_piece_goes_to_the_hosts_after_its_owner_one_grace_apart() {
        // Owned by rank 0 of 4 (8 % 4).
        let t = Piece8::new();
        let may_fetch = |rank, now| t.may_fetch(rank, now, None, 0);
        assert!(may_fetch(0, 1), "its owner at once");
        for rank in 1..4 {
            let due = 1 + 100 * u64::from(rank);
            assert!(!may_fetch(rank, due - 1), "rank {rank} before its turn");
            assert!(may_fetch(rank, due), "rank {rank} on its turn");
        }
        // A rack peer said at ms 500 that it fetches the piece: left to it, even for its
        // owner, until the word lapses (1 s).
        t.fetching[8].store(501, Ordering::Relaxed);
        assert!(!may_fetch(0, 600));
        assert!(!may_fetch(3, 1500));
        assert!(may_fetch(3, 1501));
    }

    #[test]
    fn from_another_dc_the_next_rack_waits_at_least_the_rack_grace() {
        // With 2 racks in our dc piece 8 belongs to rack 0 (8 % 2), and in that rack to
        // rank 0 of 4 (8 / 2 % 4). We are rack 1: one rack after it.
        let t = Piece8::new();
        let rack_1 = Some(Share {
            rank: 1,
            members: 2,
        });
        // A rack's turn is its 4 hosts' turns (400 ms) when the rack grace is shorter...
        assert!(!t.may_fetch(0, 400, rack_1, 300));
        assert!(t.may_fetch(0, 401, rack_1, 300));
        // ...and the rack grace when it is longer; our next ranks follow a turn apart.
        assert!(!t.may_fetch(0, 1000, rack_1, 1000));
        assert!(t.may_fetch(0, 1001, rack_1, 1000));
        assert!(!t.may_fetch(1, 1100, rack_1, 1000));
        assert!(t.may_fetch(1, 1101, rack_1, 1000));
    }

    #[test]
    fn share_split() {
        assert!((0..10).all(|p| Share::ALL.contains(p)));
        let shares: Vec<Share> = (0..4).map(|rank| Share { rank, members: 4 }).collect();
        for p in 0..100 {
            assert_eq!(shares.iter().filter(|s| s.contains(p)).count(), 1);
        }
    }

    #[test]
    fn an_empty_torrent_has_nothing_to_pick() {
        let none = Bitfield::new(0);
        let verified = AtomicBitfield::new(0);
        let claimed = AtomicBitfield::new(0);
        let input = PickInput {
            peer_has: &none,
            verified: &verified,
            claimed: &claimed,
            availability: &[],
            start: 5,
            refused: None,
            in_progress: None,
            remote: None,
        };
        assert_eq!(pick_and_claim(&input), None);
        assert_eq!(pick_endgame(&none, &verified, &claimed, 5, |_| false), None);
    }

    #[test]
    fn a_peer_in_another_dc_serves_only_what_our_dc_lacks_in_our_racks_share() {
        // 24 pieces; our dc has 2 racks (we are rank 1), our rack 2 hosts (we are rank 0).
        // Our rack's dc share: odd pieces; ours among them: i / 2 even, so 1, 5, 9, ...
        let has = Bitfield::full(24);
        let verified = AtomicBitfield::new(24);
        let claimed = AtomicBitfield::new(24);
        let global = avail(&[1; 24]);
        let rack = avail(&[0; 24]);
        let mut in_dc = vec![0; 24];
        in_dc[5] = 1; // another rack of our dc has piece 5: fetched inside the dc
        let dc = avail(&in_dc);
        let seen: Vec<AtomicU64> = (0..24).map(|_| AtomicU64::new(0)).collect();
        let fetching: Vec<AtomicU64> = (0..24).map(|_| AtomicU64::new(0)).collect();
        let input = |beyond_share| PickInput {
            peer_has: &has,
            verified: &verified,
            claimed: &claimed,
            availability: &global,
            start: 0,
            refused: None,
            in_progress: None,
            remote: Some(RemoteRule {
                seed_tail: false,
                rack_availability: &rack,
                share: Share {
                    rank: 0,
                    members: 2,
                },
                beyond_share,
                seen_outside: &seen,
                overdue: Overdue {
                    now: 0,
                    grace: 400,
                    fetch_lapse: 1000,
                    rack_grace: 0,
                },
                rack_fetching: &fetching,
                other_dc: Some(OtherDc {
                    dc_availability: &dc,
                    dc_share: Share {
                        rank: 1,
                        members: 2,
                    },
                }),
            }),
        };
        let mut got = Vec::new();
        while let Some(p) = pick_and_claim(&input(false)) {
            got.push(p);
        }
        assert_eq!(got, [1, 9, 13, 17, 21]);
        // Starved or at the tail: the rest, still never what our dc has.
        let mut rest = Vec::new();
        while let Some(p) = pick_and_claim(&input(true)) {
            rest.push(p);
        }
        assert_eq!(rest.len(), 24 - 5 - 1);
        assert!(!rest.contains(&5));
    }
}
