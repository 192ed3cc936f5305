//! ringswarm's swarm core: every decision a BitTorrent peer of a fleet makes, sans-I/O.
//!
//! No sockets, no io_uring, no clock read, no unseeded randomness: inputs (a peer
//! connected or closed, its handshake, each message, each block, a piece hashed or
//! written, news from the host's other cores, the timer) are method calls on a
//! [`Swarm`] with the current time; what to do comes out as [`Action`]s; the core says
//! when it wants the timer ([`Swarm::poll_timeout`]). The io_uring driver in the engine,
//! the in-memory tests here and the fleet simulator run the same code.
//!
//! - [`Swarm`] (`core/`): one torrent on one core; [`Shared`]: what a host's cores share;
//! - the rules it applies, each a pure function or small type with its own tests:
//!   [`picker`] (rarest first within the rack, the rack's share), [`choker`] (slots),
//!   [`rate`] (request depth), [`limits`] (rate limits, bans), [`locality`] (rack, dc,
//!   remote);
//! - [`metadata`]: fetching a torrent's info dictionary from a peer (BEP 9);
//! - [`ids`]: newtypes for what must not be confused; [`out`]: actions and messages.

#![forbid(unsafe_code)]
// Clocks, threads and I/O are refused by `swarm/clippy.toml`; tests start their virtual
// clock from a real instant.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod choker;
mod core;
pub mod ids;
pub mod limits;
pub mod locality;
pub mod metadata;
pub mod out;
pub mod picker;
pub mod rate;
pub mod reasons;
pub mod shared;

pub use crate::core::{
    counts_as_receiver, Config, PeerInfo, Phase, PieceBuffers, Swarm, MAX_PEER_REQUESTS,
    MAX_REQUESTERS,
};
pub use ids::{BlockRef, BufId, InfoHash, PeerId, PeerKey};
pub use out::{Action, Out};
pub use shared::Shared;
