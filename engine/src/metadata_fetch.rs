//! Fetching a torrent's info dict from peers over BEP 9, for `get <magnet>`.
//! WORK IN PROGRESS — the signature below is the contract the CLI uses.

use std::net::SocketAddr;
use std::time::Duration;

use crate::metainfo::Metainfo;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no peer gave the metadata within {0:?} (tried {1} peers)")]
    NoPeerAnswered(Duration, usize),
}

/// Asks `peers` in turn for the info dict of `info_hash` and checks it against the hash.
pub fn fetch_metainfo(
    info_hash: [u8; 20],
    trackers: Vec<Vec<String>>,
    peers: &[SocketAddr],
    timeout: Duration,
) -> Result<Metainfo, FetchError> {
    let _ = (info_hash, trackers, peers, timeout);
    todo!()
}
