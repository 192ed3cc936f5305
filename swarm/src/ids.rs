//! Names for the things a swarm juggles, so a peer id is never taken for an info-hash and a
//! connection handle never for a piece index.

use std::fmt;

/// A torrent's info-hash (SHA-1 of its info dictionary, BEP 3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHash(pub [u8; 20]);

/// A peer's 20-byte id from its handshake.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PeerId(pub [u8; 20]);

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&ringswarm_proto::hex(&self.0))
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&ringswarm_proto::hex(&self.0))
    }
}

/// The driver's handle on one connection: an index it chooses (small, reused) and a
/// generation that tells a reused index from the connection that had it before.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct PeerKey {
    pub index: u32,
    pub gen: u32,
}

/// The driver's handle on a piece buffer (its memory is the driver's; the core only says
/// which buffer a block goes into and when a buffer is done with).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct BufId(pub u32);

/// One block of a piece, as requested, cancelled, rejected or served.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct BlockRef {
    pub piece: u32,
    pub begin: u32,
    pub len: u32,
}
