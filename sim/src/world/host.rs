//! A simulated host: the real swarm core ([`Swarm`]) for the blob, its share of the
//! torrent's state, the handles of its connections, and what the driver keeps for it
//! (its announces, its failures, when it finished).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use ringswarm_proto::metainfo::{FileEntry, Info, Metainfo};
use ringswarm_swarm::locality::NamedPlace;
use ringswarm_swarm::{BufId, Config, PeerId, PeerKey, PieceBuffers, Shared, Swarm};

use super::conn::{ConnId, Side};
use crate::scenario::Scenario;

/// The port every simulated host listens on.
pub const PORT: u16 = 6881;

/// Where the fleet's addresses start: 198.18.0.0/15 (RFC 2544, benchmark space), as the
/// namespace emulation uses. Nothing is ever sent to them: they only name hosts to the
/// core and the tracker store.
const BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);
/// Racks have a /24 each, from 198.18.1.0/24 on: at most 511 racks in the /15.
pub const MAX_RACKS: usize = 511;
/// Hosts .1 to .253 of the rack's /24; the origin is .254 of its rack's.
pub const MAX_HOSTS_PER_RACK: u32 = 253;

/// The /24 of rack `rack` (global index).
pub fn rack_net(rack: u32) -> Ipv4Addr {
    Ipv4Addr::from(BASE + ((rack + 1) << 8))
}

/// Host `i` (0-based) of rack `rack`; `None` is the origin.
pub fn host_ip(rack: u32, i: Option<u32>) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(rack_net(rack)) + i.map_or(254, |i| i + 1))
}

/// Host `index`'s peer id: printable, unique, fixed.
pub fn peer_id(index: u32) -> PeerId {
    let mut id = *b"-RS0100-000000000000";
    let digits = format!("{index:012}");
    id[8..].copy_from_slice(digits.as_bytes());
    PeerId(id)
}

/// The blob's metainfo: the real torrent's shape (one file, the scenario's pieces) with
/// placeholder hashes (pieces are not hashed in a simulation: a hash takes its time and
/// passes).
pub fn metainfo(s: &Scenario) -> Arc<Metainfo> {
    let pieces = s.pieces() as usize;
    let info = Info {
        name: "blob".into(),
        piece_length: s.piece_size,
        pieces: vec![[0; 20]; pieces],
        files: vec![FileEntry {
            path: vec![],
            length: s.blob,
            offset: 0,
            pad: false,
        }],
        multi_file: false,
        total_length: s.blob,
        private: false,
    };
    Arc::new(Metainfo::from_info(info, vec![]))
}

/// Piece buffers: the simulation carries no bytes, so a buffer is only a name.
#[derive(Default)]
pub struct Buffers {
    next: u32,
}

impl PieceBuffers for Buffers {
    fn reserve(&mut self, _piece: u32) -> Option<BufId> {
        self.next = self.next.wrapping_add(1);
        Some(BufId(self.next))
    }
}

/// What happens to a host in this run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fate {
    /// Dies at this time (ns).
    pub dies_at: Option<u64>,
    /// Its link runs at a quarter of its rate.
    pub slow: bool,
    /// Starts at this time (ns) rather than at 0.
    pub starts_at: u64,
}

impl Fate {
    pub fn healthy(&self) -> bool {
        self.dies_at.is_none() && !self.slow && self.starts_at == 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Life {
    NotStarted,
    Running,
    Dead,
}

pub struct Host {
    pub addr: SocketAddr,
    pub id: PeerId,
    pub swarm: Swarm,
    pub shared: Arc<Shared>,
    pub bufs: Buffers,
    /// Its place, as its connections tell the core.
    pub place: NamedPlace,
    pub life: Life,
    pub fate: Fate,
    /// When it held every piece verified and written (ns).
    pub done_at: Option<u64>,
    /// The core's timer as scheduled (ns): a timer event at another time is stale.
    pub timer_at: Option<u64>,
    /// Connections by the index of their [`PeerKey`] (with the path's one-way delay, so
    /// that sending a message needs no look at the connection), and the next generation.
    pub keys: Vec<Option<(ConnId, Side, u64)>>,
    free_keys: Vec<u32>,
    next_gen: u32,
    /// Addresses the tracker gave and when they were handed to the core (ns): an address
    /// is handed again only after [`REOFFER_AFTER_NS`], as `session::announce` does.
    pub offered: HashMap<SocketAddr, u64>,
}

/// As `engine::session::announce::REOFFER_AFTER`.
pub const REOFFER_AFTER_NS: u64 = 300_000_000_000;

impl Host {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        index: u32,
        ip: Ipv4Addr,
        place: NamedPlace,
        meta: &Arc<Metainfo>,
        scenario: &Scenario,
        epoch: Instant,
        seed: bool,
        fate: Fate,
    ) -> Host {
        let count = meta.piece_count();
        let piece_len = scenario.piece_size as u32;
        let last = (scenario.blob - (u64::from(count) - 1) * scenario.piece_size) as u32;
        let shared = Arc::new(Shared::new(count, piece_len, last, epoch));
        if seed {
            for i in 0..count {
                shared.mark_verified(i);
            }
            shared.initial_seed.store(true, Ordering::Release);
        }
        let id = peer_id(index);
        let mut cfg = Config::new(id);
        cfg.listen_port = Some(PORT);
        cfg.upload_slots = scenario.model.upload_slots;
        cfg.seed = scenario
            .seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(u64::from(index) + 1);
        cfg.block_len = scenario.model.block as u32;
        let swarm = Swarm::new(cfg, meta.clone(), shared.clone());
        Host {
            addr: SocketAddr::new(IpAddr::V4(ip), PORT),
            id,
            swarm,
            shared,
            bufs: Buffers::default(),
            place,
            life: Life::NotStarted,
            fate,
            done_at: seed.then_some(0),
            timer_at: None,
            keys: Vec::new(),
            free_keys: Vec::new(),
            next_gen: 0,
            offered: HashMap::new(),
        }
    }

    /// A key for a new connection.
    pub fn new_key(&mut self, conn: ConnId, side: Side, delay_ns: u64) -> PeerKey {
        self.next_gen = self.next_gen.wrapping_add(1);
        let index = match self.free_keys.pop() {
            Some(i) => i,
            None => {
                self.keys.push(None);
                (self.keys.len() - 1) as u32
            }
        };
        self.keys[index as usize] = Some((conn, side, delay_ns));
        PeerKey {
            index,
            gen: self.next_gen,
        }
    }

    pub fn free_key(&mut self, key: PeerKey) {
        if let Some(slot) = self.keys.get_mut(key.index as usize) {
            if slot.take().is_some() {
                self.free_keys.push(key.index);
            }
        }
    }

    pub fn conn_of(&self, key: PeerKey) -> Option<(ConnId, Side)> {
        self.route(key).map(|(c, side, _)| (c, side))
    }

    /// The connection of `key`, this host's end of it, and its one-way delay.
    pub fn route(&self, key: PeerKey) -> Option<(ConnId, Side, u64)> {
        self.keys.get(key.index as usize).copied().flatten()
    }

    pub fn running(&self) -> bool {
        self.life == Life::Running
    }

    /// Bytes still missing (the tracker's `left`).
    pub fn left(&self, blob: u64) -> u64 {
        let have = self.shared.counters.verified_bytes.load(Ordering::Relaxed);
        blob.saturating_sub(have)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_in_the_benchmark_space_and_distinct() {
        assert_eq!(rack_net(0), Ipv4Addr::new(198, 18, 1, 0));
        assert_eq!(host_ip(0, Some(0)), Ipv4Addr::new(198, 18, 1, 1));
        assert_eq!(host_ip(0, None), Ipv4Addr::new(198, 18, 1, 254));
        assert_eq!(host_ip(300, Some(252)), Ipv4Addr::new(198, 19, 45, 253));
        let last = host_ip(MAX_RACKS as u32 - 1, None);
        assert_eq!(last, Ipv4Addr::new(198, 19, 255, 254));
    }

    #[test]
    fn peer_ids_are_unique() {
        assert_ne!(peer_id(1), peer_id(10));
        assert_eq!(&peer_id(42).0, b"-RS0100-000000000042");
    }
}
