//! A connected peer as the core sees it: what it has, what we asked of it, what it asked
//! of us, how fast it is.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use ringswarm_proto::bitfield::Bitfield;

use crate::ids::{BlockRef, PeerId, PeerKey};
use crate::locality::{Locality, NamedPlace};
use crate::rate::{RateMeter, MAX_REQUEST_DEPTH};

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Connected, waiting for the peer's handshake.
    Handshaking,
    /// Handshakes exchanged: messages flow.
    Active,
}

/// Where the driver learned of the peer, and where it stands.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// We dialled it (it is dialled again if it drops).
    pub outgoing: bool,
    /// Which dial attempt this was (outgoing), for the back-off.
    pub attempt: u32,
    /// Our place as seen on this connection (from `--dc/--rack` or the topology and the
    /// connection's local address). Unknown: no rack preference at all.
    pub our_place: NamedPlace,
    /// The peer's place from the topology, when the topology places its address (what it
    /// states in its BEP 10 handshake then does not count).
    pub their_place: Option<NamedPlace>,
}

/// Most pieces a rack peer may say it fetches at once: more are ignored (a peer fetches a
/// few pieces from outside at a time; a hostile one must not freeze the rack's fetches).
pub const MAX_FETCHING: usize = 64;

#[derive(Debug)]
pub(crate) struct Peer {
    pub key: PeerKey,
    pub addr: SocketAddr,
    pub outgoing: bool,
    pub attempt: u32,
    pub phase: Phase,
    pub id: PeerId,
    pub fast: bool,
    pub ext: bool,
    pub their_metadata_id: Option<u8>,
    /// Its id for our `rs_fetching` messages (it speaks the extension).
    pub their_fetching_id: Option<u8>,
    /// Pieces it said it fetches from outside our rack and has not announced yet (a rack
    /// peer; at most [`MAX_FETCHING`]).
    pub fetching: Vec<u32>,
    pub am_choking: bool,
    /// When we last unchoked it, and its last REQUEST since (the idle-slot rule).
    pub unchoked_at: Instant,
    pub last_request: Option<Instant>,
    /// When it last started waiting for a slot (interested and choked).
    pub waiting_since: Instant,
    pub am_interested: bool,
    pub peer_choking: bool,
    pub peer_interested: bool,
    pub have: Bitfield,
    /// Counted in the torrent's availability (undone on close).
    pub counted: bool,
    /// Blocks requested from it and not yet received, cancelled or rejected.
    pub requests_out: u32,
    /// Pieces in progress here that it works on (its share of the blocks comes first).
    pub pieces: Vec<u32>,
    /// Blocks it asked of us, in order, waiting to be sent.
    pub uploads: VecDeque<BlockRef>,
    /// A BITFIELD, HAVE ALL or HAVE NONE came already: one per connection.
    pub got_bitfield: bool,
    /// It said it held every piece in that first message: a seed, never a receiver.
    pub opened_complete: bool,
    /// Its first BITFIELD (or HAVE ALL) held every piece: a seed from the start (set once;
    /// see `count_piece` for what it changes).
    pub seed_at_open: bool,
    /// A seed at open that we met while at least half the torrent was missing here: the
    /// origin, not a host that finished while we were downloading.
    pub seed_met_early: bool,
    /// Payload bytes we sent it.
    pub uploaded_to: u64,
    /// The last refill found no piece or no buffer: skip refills until the tick.
    pub refill_blocked: bool,
    /// Requests it accepts outstanding (its BEP 10 `reqq`, at most our depth).
    pub max_requests: u32,
    pub locality: Locality,
    /// Our place as seen on this connection (None: unknown, no rack preference).
    pub our_place: Option<Box<NamedPlace>>,
    pub placed_by_topology: bool,
    /// As a first seeder: pieces handed to this peer.
    pub granted: Bitfield,
    /// Pieces it refused to give us (BEP 6 REJECT), and since when.
    pub refused: Bitfield,
    pub refused_since: Option<Instant>,
    /// A piece it sent passed its hash check. Until then it fills one piece at a time and
    /// takes no part in others' pieces, so a peer sending garbage wastes little before it
    /// is banned, and a bad piece is blamed on it alone.
    pub proven: bool,
    pub meter: RateMeter,
    /// When a requested block last arrived (or the first request went out).
    pub last_block: Instant,
    /// Where its picks start, so peers with equal choices spread over the torrent.
    pub pick_start: u32,
    /// We asked the driver to close it: no more requests, slots or stall verdicts.
    pub closing: bool,
    /// We close it for stalling (it is then redialled with a back-off).
    pub stalled: bool,
    /// When a requested block last arrived (None: never); unlike `last_block`, not reset
    /// when requests start (the stall rule asks who actually delivers).
    pub delivered_at: Option<Instant>,
}

impl Peer {
    pub fn new(
        key: PeerKey,
        info: &PeerInfo,
        pieces: u32,
        block_len: u32,
        now: Instant,
        pick_start: u32,
    ) -> Peer {
        Peer {
            key,
            addr: info.addr,
            outgoing: info.outgoing,
            attempt: info.attempt,
            phase: Phase::Handshaking,
            id: PeerId::default(),
            fast: false,
            ext: false,
            their_metadata_id: None,
            their_fetching_id: None,
            fetching: Vec::new(),
            am_choking: true,
            unchoked_at: now,
            last_request: None,
            waiting_since: now,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            have: Bitfield::new(pieces),
            counted: false,
            requests_out: 0,
            pieces: Vec::new(),
            uploads: VecDeque::new(),
            got_bitfield: false,
            opened_complete: false,
            seed_at_open: false,
            seed_met_early: false,
            uploaded_to: 0,
            refill_blocked: false,
            max_requests: MAX_REQUEST_DEPTH,
            locality: Locality::Rack,
            our_place: None,
            placed_by_topology: info.their_place.is_some(),
            granted: Bitfield::new(pieces),
            refused: Bitfield::new(pieces),
            refused_since: None,
            proven: false,
            meter: RateMeter::new(now, block_len),
            last_block: now,
            pick_start,
            closing: false,
            stalled: false,
            delivered_at: None,
        }
    }

    pub fn active(&self) -> bool {
        self.phase == Phase::Active
    }

    /// Requests to keep in flight with this peer.
    pub fn depth(&self) -> u32 {
        self.meter.depth().min(self.max_requests)
    }

    pub fn rate(&self) -> f64 {
        self.meter.rate()
    }

    /// In another datacenter than ours (known: an unplaced peer does not count).
    pub fn in_other_dc(&self) -> bool {
        self.locality == Locality::Remote && self.our_place.is_some()
    }

    /// Requests out and no block of them for [`super::requests::STALLING`].
    pub fn stalling(&self, now: Instant) -> bool {
        self.requests_out > 0
            && now.saturating_duration_since(self.last_block) >= super::requests::STALLING
    }

    pub fn is_refusing(&self, piece: u32) -> bool {
        self.refused_since.is_some() && self.refused.get(piece)
    }
}
