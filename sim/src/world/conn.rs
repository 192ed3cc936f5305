//! A simulated TCP connection between two hosts: its two ends (each a [`PeerKey`] in its
//! host's core once the core knows it), and its two directions of data, each a flow of
//! the network while it has blocks to send ([`Dir`]).

use ringswarm_proto::extension;
use ringswarm_proto::wire::Message;
use ringswarm_swarm::{Out, PeerKey, PieceBuffers, Swarm};
use std::time::Instant;

use crate::net::FlowId;

/// A connection: its slot and the slot's generation (a reused slot is another connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub index: u32,
    pub gen: u32,
}

/// An end of a connection: the dialer or the acceptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Dialer = 0,
    Acceptor = 1,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Dialer => Side::Acceptor,
            Side::Acceptor => Side::Dialer,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Debug)]
pub struct End {
    pub host: u32,
    /// Its key in its host's core: the dialer's from the connect, the acceptor's from the
    /// dialer's handshake; None before, and after this end closed.
    pub key: Option<PeerKey>,
    /// This end has closed (its core was told).
    pub closed: bool,
}

/// One direction of a connection: the data its sender sends.
#[derive(Clone, Debug)]
pub struct Dir {
    /// The network flow, while the direction is sending (its block on the wire and the
    /// rest are in `transfer::Sending` meanwhile).
    pub flow: Option<FlowId>,
    /// The sender's congestion window in bytes (see `transfer`), as of its last stop.
    pub cwnd: f64,
    /// When it last sent a byte (ns), for the restart after idle, as of its last stop.
    pub last_sent: u64,
    /// The sender's core asked to serve (a `Serve` action) since the last step.
    pub wants: bool,
}

impl Dir {
    pub fn new(initial_window: f64) -> Dir {
        Dir {
            flow: None,
            cwnd: initial_window,
            last_sent: 0,
            wants: false,
        }
    }
}

pub struct Conn {
    pub gen: u32,
    pub ends: [End; 2],
    /// Data sent by each side: `dirs[Side::Dialer]` flows from dialer to acceptor.
    pub dirs: [Dir; 2],
    pub delay_ns: u64,
    pub rtt_ns: u64,
    /// The dial's attempt number (the dialer's core counts its back-off).
    pub attempt: u32,
}

impl Conn {
    pub fn end(&self, side: Side) -> &End {
        &self.ends[side.index()]
    }

    pub fn end_mut(&mut self, side: Side) -> &mut End {
        &mut self.ends[side.index()]
    }
}

/// Hands one message the peer sent to the core, as the driver's decoder would.
pub fn deliver(
    swarm: &mut Swarm,
    now: Instant,
    key: PeerKey,
    msg: &Out,
    bufs: &mut dyn PieceBuffers,
) -> Result<(), String> {
    let ext;
    let m = match msg {
        Out::Handshake => return Err("a second handshake".into()),
        Out::Choke => Message::Choke,
        Out::Unchoke => Message::Unchoke,
        Out::Interested => Message::Interested,
        Out::NotInterested => Message::NotInterested,
        Out::Have(index) => Message::Have { index: *index },
        Out::Bitfield(b) => Message::Bitfield { bits: b.as_bytes() },
        Out::HaveAll => Message::HaveAll,
        Out::HaveNone => Message::HaveNone,
        Out::Request(b) => Message::Request {
            index: b.piece,
            begin: b.begin,
            length: b.len,
        },
        Out::Cancel(b) => Message::Cancel {
            index: b.piece,
            begin: b.begin,
            length: b.len,
        },
        Out::Reject(b) => Message::Reject {
            index: b.piece,
            begin: b.begin,
            length: b.len,
        },
        Out::ExtHandshake(hs) => {
            ext = hs.encode();
            Message::Extended {
                id: extension::HANDSHAKE_ID,
                payload: &ext,
            }
        }
        Out::Extended { id, payload } => Message::Extended { id: *id, payload },
    };
    swarm.message(now, key, &m, bufs)
}
