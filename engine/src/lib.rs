//! ringswarm engine: everything but the command line.
//!
//! Layers (see `shared/DESIGN.md`), from the bottom up:
//! - formats, pure functions over bytes: [`bencode`], [`metainfo`], [`magnet`], [`wire`],
//!   [`extension`], [`bitfield`];
//! - swarm logic, sans-I/O state machines: [`picker`];
//! - [`reactor`]: thread-per-core io_uring, the only code that talks to the kernel for sockets;
//! - [`storage`] (O_DIRECT piece I/O, resume) and [`verify`] (SHA-1);
//! - [`residency`]: the post-verify mlock pass;
//! - [`tracker`]: the UDP tracker (BEP 15) with datacenter topology, and its client;
//! - roles built from the layers: [`session`] (a peer serving and fetching torrents),
//!   [`create`] (making metainfo), [`metadata_fetch`] (BEP 9 for magnets);
//! - the release flow: [`feed`] (the signed release list, a pure format), [`fleet`]
//!   (publish, origin, agent), [`metrics`] (Prometheus text).
//!
//! `unsafe` lives only in `reactor`, `storage` and `residency`.

pub mod bencode;
pub mod bitfield;
pub mod create;
pub mod extension;
pub mod feed;
pub mod fleet;
pub mod hostaddr;
pub mod magnet;
pub mod metadata_fetch;
pub mod metainfo;
pub mod metrics;
pub mod picker;
pub mod reactor;
pub mod residency;
pub mod session;
pub mod storage;
pub mod tracker;
pub mod verify;
pub mod wire;

/// Formats a 20-byte hash as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}
