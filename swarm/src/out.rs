//! What the core asks the driver to do: [`Action`]s, and the peer-wire messages it sends
//! ([`Out`]), kept structured so an in-memory harness or a simulator can deliver them
//! without encoding, and the driver encodes them in one place ([`Out::encode`]).

use std::net::SocketAddr;

use ringswarm_proto::bitfield::Bitfield;
use ringswarm_proto::extension::{self, ExtHandshake};
use ringswarm_proto::wire::{Handshake, Message};

use crate::ids::{BlockRef, BufId, InfoHash, PeerId, PeerKey};

/// A message for one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Out {
    /// Our handshake (BEP 3; the fast and extension bits set).
    Handshake,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(u32),
    Bitfield(Bitfield),
    HaveAll,
    HaveNone,
    Request(BlockRef),
    Cancel(BlockRef),
    Reject(BlockRef),
    /// A BEP 10 handshake.
    ExtHandshake(Box<ExtHandshake>),
    /// A BEP 10 message: `id` is the peer's id for the extension, `payload` the encoded body.
    Extended {
        id: u8,
        payload: Vec<u8>,
    },
}

impl Out {
    /// Appends the message's wire bytes to `buf`.
    pub fn encode(&self, info_hash: InfoHash, our_id: PeerId, buf: &mut Vec<u8>) {
        match self {
            Out::Handshake => {
                buf.extend_from_slice(&Handshake::new(info_hash.0, our_id.0).encode())
            }
            Out::Choke => Message::Choke.encode(buf),
            Out::Unchoke => Message::Unchoke.encode(buf),
            Out::Interested => Message::Interested.encode(buf),
            Out::NotInterested => Message::NotInterested.encode(buf),
            Out::Have(index) => Message::Have { index: *index }.encode(buf),
            Out::Bitfield(bits) => Message::Bitfield {
                bits: bits.as_bytes(),
            }
            .encode(buf),
            Out::HaveAll => Message::HaveAll.encode(buf),
            Out::HaveNone => Message::HaveNone.encode(buf),
            Out::Request(b) => Message::Request {
                index: b.piece,
                begin: b.begin,
                length: b.len,
            }
            .encode(buf),
            Out::Cancel(b) => Message::Cancel {
                index: b.piece,
                begin: b.begin,
                length: b.len,
            }
            .encode(buf),
            Out::Reject(b) => Message::Reject {
                index: b.piece,
                begin: b.begin,
                length: b.len,
            }
            .encode(buf),
            Out::ExtHandshake(hs) => Message::Extended {
                id: extension::HANDSHAKE_ID,
                payload: &hs.encode(),
            }
            .encode(buf),
            Out::Extended { id, payload } => Message::Extended { id: *id, payload }.encode(buf),
        }
    }
}

/// One step for the driver, in the order the core decided them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send `msg` to `peer` (after whatever was queued for it before).
    Send { peer: PeerKey, msg: Out },
    /// `peer`'s upload queue ([`crate::Swarm::uploads`]) has blocks to send.
    Serve { peer: PeerKey },
    /// Every block of `piece` is in `buf`: hash it, then call
    /// [`crate::Swarm::piece_hashed`].
    Hash { piece: u32, buf: BufId },
    /// `piece` in `buf` passed its hash: write it, then call
    /// [`crate::Swarm::piece_written`]. The buffer is the driver's from now on (its
    /// recent-piece cache may keep it).
    Write { piece: u32, buf: BufId },
    /// The core is done with `buf` (a piece abandoned, failed, or finished elsewhere).
    Discard { buf: BufId },
    /// Close the connection; then call [`crate::Swarm::peer_closed`].
    Close { peer: PeerKey, reason: String },
    /// Connect to `addr` (this is attempt number `attempt`); on success call
    /// [`crate::Swarm::peer_connected`], on failure [`crate::Swarm::dial_failed`].
    Dial { addr: SocketAddr, attempt: u32 },
    /// `piece` is verified and written here: tell the host's other cores
    /// ([`crate::Swarm::verified_elsewhere`] on each).
    Broadcast { piece: u32 },
    /// This core started (or stopped, without the piece) fetching a piece from outside
    /// the rack: tell the host's other cores ([`crate::Swarm::fetching_elsewhere`] on
    /// each), so that they tell their rack peers.
    BroadcastFetching {
        word: ringswarm_proto::extension::FetchingWord,
    },
}
