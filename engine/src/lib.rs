//! ringswarm engine: everything but the command line.
//!
//! Layers (see `shared/DESIGN.md`), from the bottom up:
//! - formats, pure functions over bytes: [`bencode`], [`metainfo`], [`magnet`], [`wire`],
//!   [`extension`], [`bitfield`];
//! - the swarm core, sans-I/O (crate `ringswarm-swarm`): every swarm decision;
//! - [`reactor`]: thread-per-core io_uring, the only code that talks to the kernel for sockets;
//! - [`storage`] (O_DIRECT piece I/O, resume) and [`verify`] (SHA-1);
//! - [`residency`]: the post-verify mlock pass;
//! - [`tracker`]: the UDP tracker (BEP 15) with datacenter topology, and its client;
//! - roles built from the layers: [`session`] (a peer serving and fetching torrents),
//!   [`create`] (making metainfo), [`metadata_fetch`] (BEP 9 for magnets);
//! - the release flow: [`feed`] (the signed release list, a pure format), [`fleet`]
//!   (publish, origin, agent), [`metrics`] (Prometheus text).
//!
//! `unsafe` lives only in `reactor`, `storage` and `residency` (denied everywhere else).

#![deny(unsafe_code)]

// The formats live in `ringswarm-proto`; they are re-exported under their old paths.
pub use ringswarm_proto::{
    bencode, bitfield, extension, feed, hex, hostaddr, magnet, metainfo, sha as verify, units, wire,
};

pub mod create;
pub mod fleet;
pub mod heartbeat;
pub mod metadata_fetch;
pub mod metrics;
#[allow(unsafe_code)]
pub mod reactor;
#[allow(unsafe_code)]
pub mod residency;
pub mod session;
#[allow(unsafe_code)]
pub mod storage;
pub mod tracker;
