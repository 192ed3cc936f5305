//! A piece being received on this core: which of its blocks are missing, requested (from
//! whom, since when) or in, and who wrote into its buffer.
//!
//! A block may be requested from two peers at once (block-level endgame, work stealing):
//! the first copy wins and the other request is cancelled.

use std::net::IpAddr;
use std::time::Instant;

use crate::ids::{BlockRef, BufId, PeerKey};

/// Peers a block may be requested from at once.
pub const MAX_REQUESTERS: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Block {
    Missing,
    /// Requested from `by[0]` (and `by[1]` when set) since `at` (the first request).
    Requested {
        by: [Option<PeerKey>; MAX_REQUESTERS],
        at: Instant,
    },
    Received,
}

impl Block {
    pub fn requested_by(&self, key: PeerKey) -> bool {
        matches!(self, Block::Requested { by, .. } if by.contains(&Some(key)))
    }

    pub fn requesters(&self) -> impl Iterator<Item = PeerKey> + '_ {
        let by: &[Option<PeerKey>] = match self {
            Block::Requested { by, .. } => by,
            _ => &[],
        };
        by.iter().flatten().copied()
    }

    /// Removes `key` from the requesters; the block is missing again when none is left.
    pub fn drop_requester(&mut self, key: PeerKey) -> bool {
        let Block::Requested { by, .. } = self else {
            return false;
        };
        let Some(slot) = by.iter_mut().find(|b| **b == Some(key)) else {
            return false;
        };
        *slot = None;
        if by.iter().all(Option::is_none) {
            *self = Block::Missing;
        }
        true
    }
}

#[derive(Debug)]
pub(crate) struct Assembly {
    pub piece: u32,
    pub buf: BufId,
    pub size: u32,
    /// Bytes per block (the last may be shorter): [`crate::Config::block_len`].
    pub block_len: u32,
    pub blocks: Vec<Block>,
    pub received: u32,
    /// We hold the piece's claim (false for an endgame duplicate of another core's piece).
    pub claimed: bool,
    /// Peers that wrote bytes into the buffer (a failed hash is blamed only on a sole one).
    pub writers: Vec<(PeerKey, IpAddr)>,
    /// A copy of this piece failed its hash with several writers: this one comes from a
    /// single peer, so a second failure has someone to blame.
    pub single_source: bool,
}

impl Assembly {
    pub fn new(piece: u32, size: u32, block_len: u32, buf: BufId, claimed: bool) -> Assembly {
        let block_len = block_len.max(1);
        let n = size.div_ceil(block_len).max(1) as usize;
        Assembly {
            piece,
            buf,
            size,
            block_len,
            blocks: vec![Block::Missing; n],
            received: 0,
            claimed,
            writers: Vec::new(),
            single_source: false,
        }
    }

    pub fn block_ref(&self, b: usize) -> BlockRef {
        let begin = b as u32 * self.block_len;
        BlockRef {
            piece: self.piece,
            begin,
            len: (self.size - begin).min(self.block_len),
        }
    }

    /// The block a (`begin`, `len`) names, when it is exactly one of ours.
    pub fn block_index(&self, begin: u32, len: u32) -> Option<usize> {
        if !begin.is_multiple_of(self.block_len) {
            return None;
        }
        let b = (begin / self.block_len) as usize;
        (b < self.blocks.len() && self.block_ref(b).len == len).then_some(b)
    }

    pub fn is_whole(&self) -> bool {
        self.received as usize == self.blocks.len()
    }

    /// Whether any peer has a request out in this piece.
    pub fn has_requests(&self) -> bool {
        self.blocks
            .iter()
            .any(|b| matches!(b, Block::Requested { .. }))
    }

    pub fn note_writer(&mut self, key: PeerKey, ip: IpAddr) {
        if !self.writers.iter().any(|(k, _)| *k == key) {
            self.writers.push((key, ip));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringswarm_proto::wire::BLOCK_SIZE;

    fn key(i: u32) -> PeerKey {
        PeerKey { index: i, gen: 0 }
    }

    #[test]
    fn a_short_last_block_is_named_exactly() {
        let a = Assembly::new(3, 2 * BLOCK_SIZE + 100, BLOCK_SIZE, BufId(0), true);
        assert_eq!(a.blocks.len(), 3);
        assert_eq!(
            a.block_ref(2),
            BlockRef {
                piece: 3,
                begin: 2 * BLOCK_SIZE,
                len: 100
            }
        );
        assert_eq!(a.block_index(2 * BLOCK_SIZE, 100), Some(2));
        assert_eq!(
            a.block_index(2 * BLOCK_SIZE, BLOCK_SIZE),
            None,
            "wrong length"
        );
        assert_eq!(a.block_index(1, BLOCK_SIZE), None, "unaligned");
        assert_eq!(a.block_index(3 * BLOCK_SIZE, 100), None, "past the end");
    }

    #[test]
    fn a_block_is_missing_again_when_its_last_requester_goes() {
        let t = Instant::now();
        let mut b = Block::Requested {
            by: [Some(key(1)), Some(key(2))],
            at: t,
        };
        assert!(b.requested_by(key(2)));
        assert!(b.drop_requester(key(1)));
        assert!(matches!(b, Block::Requested { .. }));
        assert!(!b.drop_requester(key(1)), "not a requester any more");
        assert!(b.drop_requester(key(2)));
        assert_eq!(b, Block::Missing);
    }
}
