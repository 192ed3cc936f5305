//! Piece picking, sans-I/O: rarest-first over the pieces a peer has, claimed atomically so
//! that workers on different cores never fetch the same piece (outside endgame).

use std::sync::atomic::{AtomicU32, Ordering};

use crate::bitfield::{AtomicBitfield, Bitfield};

/// What a pick looks at.
pub struct PickInput<'a> {
    /// Pieces the peer has.
    pub peer_has: &'a Bitfield,
    /// Pieces verified here.
    pub verified: &'a AtomicBitfield,
    /// Pieces some worker is fetching.
    pub claimed: &'a AtomicBitfield,
    /// How many connected peers have each piece.
    pub availability: &'a [AtomicU32],
    /// Where the scan starts, so peers with equal choices spread over the torrent.
    pub start: u32,
}

/// Claims the rarest piece the peer has that is neither verified nor claimed. Ties go to
/// the first such piece at or after `start` (wrapping).
pub fn pick_and_claim(input: &PickInput<'_>) -> Option<u32> {
    let n = input.peer_has.len();
    if n == 0 {
        return None;
    }
    // A claim can race with another core; retry a bounded number of times.
    for _ in 0..8 {
        let mut best: Option<(u32, u32)> = None;
        for k in 0..n {
            let i = (input.start % n + k) % n;
            if !input.peer_has.get(i) || input.verified.get(i) || input.claimed.get(i) {
                continue;
            }
            let avail = input
                .availability
                .get(i as usize)
                .map_or(u32::MAX, |a| a.load(Ordering::Relaxed));
            if best.is_none_or(|(_, b)| avail < b) {
                best = Some((i, avail));
                if avail <= 1 {
                    break;
                }
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
    (0..n)
        .map(|k| (start % n.max(1) + k) % n.max(1))
        .find(|&i| peer_has.get(i) && claimed.get(i) && !verified.get(i) && !skip(i))
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
        };
        assert_eq!(pick_and_claim(&input), Some(2));
        assert_eq!(pick_and_claim(&input), None);
        assert_eq!(
            pick_endgame(&has, &verified, &claimed, 0, |_| false),
            Some(2)
        );
        assert_eq!(pick_endgame(&has, &verified, &claimed, 0, |p| p == 2), None);
    }
}
