//! ringswarm's formats: pure functions over bytes, no I/O, no clocks, no randomness.
//!
//! - [`bencode`], [`metainfo`] (BEP 3, BEP 47 pad files), [`magnet`] (BEP 9);
//! - the peer wire: [`wire`] (BEP 3, BEP 6), [`extension`] (BEP 10, BEP 9), [`bitfield`];
//! - the tracker's packets: [`tracker`] (BEP 15, BEP 41 URL data) and the datacenter
//!   [`topology`] (CIDR → dc/rack), with [`hostaddr`] (what counts as one host);
//! - the release [`feed`] (ed25519-signed list of releases);
//! - [`sha`]: SHA-1 behind one small interface.
//!
//! Every decoder has limits (depth, lengths, counts) and returns an error naming what is
//! wrong; none panics on any input (property-tested here, fuzzed in `fuzz/`).

#![forbid(unsafe_code)]

pub mod bencode;
pub mod bitfield;
pub mod extension;
pub mod feed;
pub mod hostaddr;
pub mod magnet;
pub mod metainfo;
pub mod sha;
pub mod topology;
pub mod tracker;
pub mod units;
pub mod wire;

/// Formats bytes (a 20-byte hash) as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}
