//! The tracker's swarm state, sans-I/O: one [`Store`] per worker core.
//!
//! No sockets, threads or clocks: the server glue passes the time in (`now`, whole seconds
//! from one clock shared by all cores, e.g. `CLOCK_MONOTONIC` or Unix time) and shards
//! torrents across cores by info-hash, so a `Store` is owned by one thread and needs no locks.
//!
//! # Calls the glue makes
//!
//! - connect: [`Store::connect`] → connection id; announce/scrape: [`Store::check_connection`]
//!   first (a bad id is counted and the packet dropped). [`ConnectionIds`] is a cheap clone,
//!   so every core can hold the same key and accept ids issued by another core.
//! - announce: [`Store::announce`] with an [`AnnounceIn`] and a reusable `Vec<SocketAddr>`
//!   the peers are written into (no allocation per announce once it has grown).
//! - scrape: [`Store::scrape`].
//! - every tick: [`Store::expire`] with a work budget.
//! - metrics: [`Store::counters`].
//!
//! # Peer address
//!
//! The packet's source address is the peer's address; the announce's IP field is used only
//! when the source lies in [`StoreConfig::trusted`] ([`Store::peer_addr`]). IPv4-mapped IPv6
//! addresses are treated as IPv4. The port is the announce's port field.
//!
//! # Peer list policy
//!
//! 1. The announcer is stored (or updated) first, then excluded from its own list; the
//!    counts in the answer include it.
//! 2. Family: IPv4 announcers get IPv4 peers, IPv6 announcers IPv6 peers (BEP 15 answers
//!    are per family).
//! 3. Classes, in this order: same rack, same dc (other racks), the rest. An announcer of
//!    unknown rack has no rack class; of unknown dc, no dc class. Unknown peers are in "the
//!    rest" for everyone.
//! 4. Shuffle without hot spots, at a cost independent of swarm size: a class is a set of
//!    rack groups; the groups are visited from a random start with a random stride coprime
//!    to their count, each giving about `need / groups left` peers, and inside a group the
//!    peers are taken from a random start with a random coprime stride. A second pass
//!    drains the visited groups when the first fell short. At most `max(64, 4·numwant)`
//!    groups are visited per class, so a swarm spread over thousands of racks still costs
//!    O(numwant) (the visit cap makes "seeds first" best-effort when seeds are rare across
//!    very many racks). Small swarms are stored flat and shuffled the same way over index
//!    lists (see *Storage*).
//! 5. Remote minimum: while the announcer's rack has no seed of its family ("no complete
//!    copy"), the rack class gives at most `numwant − min_remote` peers, so at least
//!    [`StoreConfig::min_remote`] (default 16; at most half of `numwant`, so an announcer
//!    asking for a few peers still meets its rack) come from other racks when other racks have
//!    peers. Likewise, while the announcer's dc has no seed, the rack and dc classes give
//!    at most `numwant − min_remote` peers between them, so at least `min_remote` come from
//!    other dcs when they have peers: a dc without the blob must meet the dcs that have it
//!    (with racks larger than `numwant`, the rack class alone would fill every answer and
//!    the dc would never learn of a peer outside it). If the other racks cannot fill their
//!    share, the rest comes from the own rack after all (appended at the end). A rack's
//!    hosts find the pieces their rack lacks through these peers (`ringswarm sim`, every
//!    host given its whole rack, policy 9): with 2, 20 racks of 80 hosts took 1.91 × the
//!    bound, with 8 1.81 ×, with 16 1.76 ×; 1 000 hosts in 3 dcs 1.87 × with 2, 1.69 ×
//!    with 16; 9 600 hosts in 3 dcs 3.13 × with 2, 2.21 × with 16. (With 16, a dead rack
//!    peer holding a rack's last piece once held a hundred healthy hosts 15 s: the
//!    endgame now lets a remote peer in against a stalling rack holder.)
//! 6. Seeds and leechers: an announcer that "has nothing yet" — `left > 0` and
//!    `downloaded == 0` (the tracker never learns the total size, and a restarted client
//!    with partial data says `downloaded == 0` too; giving it seeds first is harmless) — gets,
//!    within each class, seeds before leechers. A seed (`left == 0`) gets leechers only. Any
//!    other announcer gets seeds and leechers mixed.
//! 7. `numwant`: negative means [`StoreConfig::default_numwant`] (50); larger values are
//!    capped at [`StoreConfig::max_numwant`] (200). `0` gives no peers.
//! 8. Peers whose last announce is older than `interval + grace` are never handed out, even
//!    before the sweep has removed them.
//! 9. Whole rack: an announcer of known rack that asked for at least the default `numwant`
//!    gets every peer of its rack, beyond `numwant` when its rack is larger (up to
//!    `max_numwant` peers in all); the other classes get what they would have. A rack's
//!    hosts split what they fetch from outside it by what they tell each other
//!    (`rs_fetching`) and by turns over the rack peers they know: a host that knows only
//!    part of its rack fetches again what its unknown rack peers fetch (`ringswarm sim`,
//!    20 racks of 80 hosts, numwant 50: the busiest rack took in 1.47 × the blob; given
//!    the whole rack, 1.04 ×; at 10 000 hosts in racks of 80, 2.86 × and 1.04 ×).
//!
//! # Events and counts
//!
//! - `stopped` removes that peer (that address's entry of that peer id) from that torrent only and answers with no peers; a
//!   `stopped` for an unknown torrent creates nothing.
//! - `completed` increments the torrent's completed count once per transition to seed: a
//!   repeated `completed` from a peer already stored as a seed (a client retrying after a
//!   lost answer) is not counted again.
//! - Seeders/leechers are exact counts of the stored peers (`left == 0` is a seed).
//!   Peers past their expiry are counted until the sweep removes them.
//!
//! # What the fleet view reads
//!
//! Each entry keeps the peer's `left` (in 16 KiB units, rounded up so only a seed reads 0)
//! and its download rate between its last two announces (KiB/s); the read-only views in
//! `view` ([`Store::summary`], [`Store::peer_views`]) give counts per place and a capped
//! per-peer list, slowest first. A downloading peer (`left > 0`) is answered with
//! `min(interval, leecher_interval)` (default 30 s), seeds with `interval`: progress is
//! seen only at announces, and BEP 15 carries the interval per answer, so only the few
//! hosts still downloading announce more often.
//!
//! # Expiry
//!
//! A peer that does not re-announce within `interval + grace` seconds is removed by
//! [`Store::expire`], an incremental round-robin sweep: each call examines at most `budget`
//! entries (peers, groups or torrent slots), continuing where the last call stopped. Called
//! every tick with a budget that covers the store within a few seconds, a peer disappears
//! within `interval + grace + one sweep round`.
//!
//! # Who a peer is
//!
//! A peer entry is keyed by (address, peer id), the address being the stored peer address's
//! IP (the source's, see *Peer address*). The same peer id announced from another address
//! is another entry, subject to that address's own bounds: it can neither move, update,
//! complete nor stop the original (issue 11). A host that really changes address leaves
//! its old entry to expire.
//!
//! # Bounds and eviction
//!
//! No address is exempt (loopback included); a load generator that simulates many peers
//! from few addresses must raise the per-address bounds explicitly.
//!
//! - One address holds at most [`StoreConfig::max_peers_per_address`] (default 8) entries
//!   per torrent: a further *new* peer id from it is refused with
//!   [`AnnounceError::AddressFull`] (counted); its stored entries re-announce normally.
//!   This cap counts exact addresses, IPv6 too: a datacenter often gives a whole rack one
//!   /64, and each entry is a distinct endpoint peers will dial.
//! - One source host (an IPv4 address, an IPv6 /64: [`crate::hostaddr::host_group`]; so do
//!   the URL-name bounds of [`super::topology`]) creates at most [`StoreConfig::max_new_torrents_per_address`]
//!   (default 256) torrents per minute (`now / 60`, so at most twice that in any 60 s):
//!   [`AnnounceError::TooManyNewTorrents`] (counted); existing torrents are not limited.
//!   The budget is shared by every core ([`Limits`]); it remembers at most
//!   [`super::limits::MAX_CREATING_SOURCES`] sources a minute.
//! - At most [`StoreConfig::max_peers`] (default 2 000 000) peers in all, over every
//!   core's store ([`Limits`], one atomic counter touched only when a peer is added or
//!   removed): a new peer beyond it is refused with [`AnnounceError::TrackerFull`]
//!   (counted). This is the one memory cap: see *Memory per peer*.
//!
//! - At most [`StoreConfig::max_peers_per_torrent`] peers per torrent: a *new* peer of a
//!   full torrent is refused with [`AnnounceError::TorrentFull`] (counted); peers already
//!   stored keep re-announcing normally. Refusing rather than evicting means a flood of
//!   fresh peer ids cannot push out the real fleet; the flood itself expires after
//!   `interval + grace`.
//! - At most [`StoreConfig::max_torrents`] torrents: a new torrent takes the slot of a
//!   torrent that has no peers left (its completed count is forgotten; counted as
//!   `torrents_evicted`); if every torrent has peers, it is refused with
//!   [`AnnounceError::TooManyTorrents`] (counted). Empty torrents are otherwise kept, so
//!   their completed counts stay exact.
//! - Memory is therefore bounded by `max_torrents × (torrent overhead) + max_peers × (per-peer
//!   bytes)`, whatever the announce stream.
//!
//! # Storage
//!
//! Per torrent and family (IPv4/IPv6), one of two layouts:
//! - *flat* (at most [`StoreConfig::flat_max`] = 128 peers, the common small swarm): one
//!   dense `Vec<Entry>`; an answer scans it once, sequentially (a few KiB of contiguous
//!   memory), sorting candidates into (class, seed/leecher) index lists that are then read
//!   from random starts with random coprime strides;
//! - *grouped* (larger swarms): one dense `Vec<Entry>` per (dc, rack), the groups sorted by
//!   place so a dc's racks are contiguous (found by binary search). Classes are sampled as
//!   in the policy above, so a 100 000-peer swarm costs O(numwant), not O(peers).
//!
//! A side switches to grouped when it exceeds `flat_max` and back to flat below
//! `flat_max / 2` (hysteresis: the O(flat_max) rebuild is amortized). In both, seeds sit at
//! the front of their vector, so "does this rack hold a seed" is O(1) and insert/remove are
//! O(1) swap-removes; the torrent's `peer map` (keyed hash of the peer id → place, family,
//! index) is fixed up for the at most two entries a removal moves.
//!
//! Peer map keys are SipHash-2-4 under a random per-store key, truncated to 64 bits, of
//! the entry's address (4 or 16 bytes) for the *first* entry an address holds in the
//! torrent (a flag in the entry's padding), else of (address, peer id). An address holding
//! more than one entry (or one under a pair key) has a count record in the same map (key:
//! SipHash of the address and `#`, value: the count); an address with one entry needs
//! none, so a fleet (one peer per address) pays nothing for the per-address bound. The
//! entry holds the full peer id and address and is compared on every hit. A key held by
//! another peer (probability ≈ n / 2^64 per new peer, not steerable without the key) makes
//! the newcomer be refused with [`AnnounceError::PeerIdCollision`].
//!
//! # Memory per peer (target ≤ 136 bytes; `--max-peers` × 160 bytes bounds the total)
//!
//! - `Entry` = peer id 20 + address 16 + port 2 + place 4 + last-seen 4 + left 4 + rate 4
//!   (the fleet view's progress, issue 13) = 54 → **56 bytes** (4-byte alignment).
//!   Vectors grow by one entry up to 8, then by 25 %, never by doubling: ≤ 70 bytes, ≈ 58
//!   typical, exactly 56 for groups of up to 8.
//! - peer map slot = key 8 + `Loc` (place 4 + index/family 4) 8 = 16 bytes + 1 control byte
//!   = **17 bytes** per bucket; buckets are a power of two at 44–87.5 % load: 19–39 bytes
//!   per peer, 22 at 100 000 peers (131 072 buckets).
//! - grouped mode: a rack group is 32 bytes (place 4, seed count 4, `Vec` 24), shared by
//!   the rack's peers (worst case one peer per rack: +36 bytes per peer).
//! - per torrent: `Option<Torrent>` slot + info-hash index entry ≈ 200 bytes, over ≥ 1 peer
//!   (negligible for swarms of tens of peers; an empty torrent is evictable).
//!
//! Typical total ≈ 80–95 bytes. Worst case: grouped, every peer in its own rack, map just
//! grown: 56 + 34 + 39 + 1 ≈ 130 bytes; with bigger groups the entry slack (≤ 12) is more
//! than paid for by the shared group header. [`Store::approx_bytes`] adds up the allocated
//! capacities (not allocator rounding); the tests check ≤ 128 bytes per peer for a
//! 100 000-peer torrent in 100 racks and 2 000 torrents of 50 peers (76 each before the
//! 8 bytes of progress), and ≤ 136 for the worst case, 225 peers in 225 racks (134,
//! including the store's fixed overhead). The
//! criterion bench prints ≈ 85 bytes for 500 000 peers in 10 000 torrents and for
//! 1 000 000 peers (one of 100 000 + 18 000 of 50), peers spread over 100 racks.
//!
//! Per-address count records: one peer map slot (≤ 39 bytes) per address holding ≥ 2
//! entries of a torrent, so ≤ 20 bytes per entry; the test with 2 entries per address in
//! the worst-case layout measures ≤ 160 bytes per peer. Hence the documented figure:
//! **memory ≤ `max_peers` × 160 bytes + `max_torrents` × ≈ 200 bytes** (+ ≤ 12 MiB for the
//! creation budget and ≤ 4096 interned URL names), whatever the announce stream.
//!
//! # Cost per announce
//!
//! Two hash lookups (torrent: std SipHash with random keys, so chosen info-hashes cannot
//! flood a bucket; peer: one SipHash-2-4 of the address, a second one of (address, peer id)
//! for an address's further entries), O(1) update, a binary search over
//! the torrent's rack groups (grouped) or a scan of ≤ `flat_max` entries (flat), and
//! O(numwant) sampling. Nothing is proportional to the swarm size. Measured (criterion,
//! shared 2-core VM, numwant 50, topology on): ≈ 0.6–1.0 µs in the small-swarm world
//! (dominated by cache misses: 500 000 peers are far larger than the cache), ≈ 0.67 µs in
//! the 100 000-peer swarm. Peers past expiry that the sweep has not reached yet are skipped
//! when sampling, which costs a scan of them; the sweep keeps that bounded.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use std::sync::Arc;

use super::limits::{CreationRefusal, Limits};
use super::topology::{Cidr, Place};

mod view;
pub use view::{PeerView, PlaceCounts, SwarmSummary};

/// A torrent's info-hash.
pub type InfoHash = [u8; 20];
/// A peer's id.
pub type PeerId = [u8; 20];

/// The announce event (BEP 15 numbering: 0 none, 1 completed, 2 started, 3 stopped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Event {
    #[default]
    None,
    Completed,
    Started,
    Stopped,
}

impl Event {
    /// From the BEP 15 event number; unknown numbers are `None`.
    pub fn from_bep15(n: u32) -> Event {
        match n {
            1 => Event::Completed,
            2 => Event::Started,
            3 => Event::Stopped,
            _ => Event::None,
        }
    }
}

/// One announce, as the glue decoded it.
#[derive(Clone, Debug)]
pub struct AnnounceIn {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    /// The packet's source address.
    pub addr: SocketAddr,
    /// The announce's IP field (`None` for 0); used only from trusted sources.
    pub ip: Option<IpAddr>,
    /// The announce's port field: where the peer listens.
    pub port: u16,
    pub event: Event,
    pub left: u64,
    pub downloaded: u64,
    /// BEP 15 `num_want`: negative = default.
    pub numwant: i32,
    /// The announcer's place, from [`super::topology::Topology::resolve`].
    pub place: Place,
}

impl AnnounceIn {
    /// The store's view of a BEP 15 announce packet from `from`, placed at `place`.
    pub fn from_packet(a: &super::proto::AnnounceRequest, from: SocketAddr, place: Place) -> Self {
        AnnounceIn {
            info_hash: a.info_hash,
            peer_id: a.peer_id,
            addr: from,
            ip: (a.ip != 0).then(|| IpAddr::from(a.ip.to_be_bytes())),
            port: a.port,
            event: Event::from_bep15(a.event as u32),
            left: a.left,
            downloaded: a.downloaded,
            numwant: a.num_want,
            place,
        }
    }
}

/// The answer to an announce; the peers are in the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnounceOut {
    /// Seconds until the next announce.
    pub interval: u32,
    pub leechers: u32,
    pub seeders: u32,
}

/// Scrape counts of one torrent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ScrapeCounts {
    pub seeders: u32,
    /// Number of `completed` events (see the module doc for repeats).
    pub completed: u32,
    pub leechers: u32,
}

/// Why an announce was refused; the message is suitable for a BEP 15 error packet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceError {
    #[error(
        "torrent {} is full ({max} peers); try again later",
        crate::hex(info_hash)
    )]
    TorrentFull { info_hash: InfoHash, max: usize },
    #[error(
        "tracker is full ({max} torrents); torrent {} refused",
        crate::hex(info_hash)
    )]
    TooManyTorrents { info_hash: InfoHash, max: usize },
    #[error(
        "peer id hash collision in torrent {}; use another peer id",
        crate::hex(info_hash)
    )]
    PeerIdCollision { info_hash: InfoHash },
    #[error("announce from {source_addr} gives port 0")]
    PortZero { source_addr: SocketAddr },
    #[error(
        "address {ip} already holds {max} peers in torrent {}; stop one first",
        crate::hex(info_hash)
    )]
    AddressFull {
        info_hash: InfoHash,
        ip: IpAddr,
        max: usize,
    },
    #[error("address {ip} created {max} torrents this minute; try again later")]
    TooManyNewTorrents { ip: IpAddr, max: usize },
    #[error("too many addresses created torrents this minute; {ip} may try again later")]
    TooManyCreators { ip: IpAddr },
    #[error("tracker is full ({max} peers); try again later")]
    TrackerFull { max: usize },
}

/// Counters the glue can expose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub connects: u64,
    pub announces: u64,
    pub scrapes: u64,
    pub bad_connection_ids: u64,
    pub full_torrent_refusals: u64,
    pub torrent_limit_refusals: u64,
    pub bad_announces: u64,
    pub torrents_evicted: u64,
    pub expired_peers: u64,
    /// New peers refused because their address holds `max_peers_per_address` in the torrent.
    pub address_refusals: u64,
    /// New torrents refused by the per-address creation budget.
    pub creation_refusals: u64,
    /// New peers refused because the tracker holds `max_peers`.
    pub peer_limit_refusals: u64,
}

/// Tracker store configuration.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Announce interval handed to peers, seconds.
    pub interval: u32,
    /// Extra seconds after the interval before a silent peer expires.
    pub grace: u32,
    /// Interval handed to a downloading peer (`left > 0`) when shorter than `interval`:
    /// its progress is seen only at its announces, so the fleet view stays live while it
    /// downloads; seeds, the bulk of a fleet, keep the long interval (default 30 s, the
    /// shortest interval our own client honours: see `tracker::client`).
    pub leecher_interval: u32,
    pub max_torrents: usize,
    /// Clamped to 1..=2^31−1.
    pub max_peers_per_torrent: usize,
    /// Peers one address (the stored peer address's IP) may hold in one torrent; new peer
    /// ids beyond it are refused. Clamped to 1..=65535.
    pub max_peers_per_address: usize,
    /// Torrents one source address may create per minute (a new info-hash is refused
    /// beyond it; announcing to existing torrents is not limited).
    pub max_new_torrents_per_address: usize,
    /// Peers stored at most, over all torrents (and over every store sharing one
    /// [`Limits`]): the one cap that bounds the tracker's memory (see the module doc).
    pub max_peers: usize,
    /// New dc/rack names one source address may add from BEP 41 URL data (applied to the
    /// server's [`super::topology::Topology`]; the store itself does not use it).
    pub max_url_names_per_address: usize,
    /// Peers from other racks while the announcer's rack has no seed.
    pub min_remote: usize,
    pub default_numwant: usize,
    pub max_numwant: usize,
    /// Sources whose announce IP field is believed.
    pub trusted: Vec<Cidr>,
    /// Seed of the shuffling RNG and the peer-map key; `None` = random. (Tests fix it.)
    pub rng_seed: Option<u64>,
    /// A family of a torrent with at most this many peers is stored flat (one contiguous
    /// vector, scanned per answer); above it, grouped by rack. It goes back to flat below
    /// half of this. 0 = always grouped.
    pub flat_max: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            interval: 300,
            grace: 120,
            leecher_interval: 30,
            max_torrents: 100_000,
            max_peers_per_torrent: 250_000,
            max_peers_per_address: 8,
            max_new_torrents_per_address: 256,
            max_peers: 2_000_000,
            max_url_names_per_address: super::topology::DEFAULT_NAMES_PER_SOURCE,
            min_remote: 16,
            default_numwant: 50,
            max_numwant: 200,
            trusted: Vec::new(),
            rng_seed: None,
            flat_max: 128,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Connection ids

/// SipHash-2-4 (Aumasson & Bernstein) of `m` under the key (`k0`, `k1`).
pub fn siphash24(k0: u64, k1: u64, m: &[u8]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    #[inline(always)]
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let chunks = m.chunks_exact(8);
    let rem = chunks.remainder();
    for c in chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let mi = u64::from_le_bytes(w);
        v[3] ^= mi;
        round(&mut v);
        round(&mut v);
        v[0] ^= mi;
    }
    let mut b = (m.len() as u64) << 56;
    for (i, &x) in rem.iter().enumerate() {
        b |= u64::from(x) << (8 * i);
    }
    v[3] ^= b;
    round(&mut v);
    round(&mut v);
    v[0] ^= b;
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// Unforgeable BEP 15 connection ids: SipHash-2-4 under a random 128-bit key of (source
/// address, source port, `now / bucket_secs`). An id is accepted in its own bucket and the
/// next, so it lives `bucket_secs`..`2 × bucket_secs` (default 60..120 s). Clone it to every
/// core so ids issued on one are accepted on all.
#[derive(Clone)]
pub struct ConnectionIds {
    k0: u64,
    k1: u64,
    bucket_secs: u64,
}

impl std::fmt::Debug for ConnectionIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionIds")
            .field("bucket_secs", &self.bucket_secs)
            .finish_non_exhaustive()
    }
}

impl ConnectionIds {
    /// A fresh random key, 60-second buckets.
    pub fn new_random() -> ConnectionIds {
        ConnectionIds::with_key(rand::random(), 60)
    }

    /// A given key (tests, or a key shared between processes); `bucket_secs` ≥ 1.
    pub fn with_key(key: u128, bucket_secs: u64) -> ConnectionIds {
        ConnectionIds {
            k0: key as u64,
            k1: (key >> 64) as u64,
            bucket_secs: bucket_secs.max(1),
        }
    }

    fn hash(&self, addr: SocketAddr, bucket: u64) -> u64 {
        let mut m = [0u8; 26];
        m[..16].copy_from_slice(&ip_bytes(addr.ip()));
        m[16..18].copy_from_slice(&addr.port().to_le_bytes());
        m[18..26].copy_from_slice(&bucket.to_le_bytes());
        siphash24(self.k0, self.k1, &m)
    }

    /// The connection id for `addr` at `now` (seconds).
    pub fn issue(&self, addr: SocketAddr, now: u64) -> u64 {
        self.hash(addr, now / self.bucket_secs)
    }

    /// True when `id` was issued to `addr` in the current or the previous bucket.
    pub fn check(&self, id: u64, addr: SocketAddr, now: u64) -> bool {
        let b = now / self.bucket_secs;
        id == self.hash(addr, b) || (b > 0 && id == self.hash(addr, b - 1))
    }
}

// ---------------------------------------------------------------------------------------
// Per-torrent structure

const V6_BIT: u32 = 1 << 31;
const IDX_MASK: u32 = V6_BIT - 1;

/// Where a peer's entry is: its place (finds the group), family bit and index in the group.
#[derive(Clone, Copy, Debug)]
struct Loc {
    place: Place,
    slot: u32,
}

impl Loc {
    fn new(place: Place, v6: bool, idx: usize) -> Loc {
        Loc {
            place,
            slot: (idx as u32 & IDX_MASK) | if v6 { V6_BIT } else { 0 },
        }
    }
    fn v6(self) -> bool {
        self.slot & V6_BIT != 0
    }
    fn idx(self) -> usize {
        (self.slot & IDX_MASK) as usize
    }
}

/// The peer map's keys are already SipHash-2-4 under a random key: use them as they are.
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Keyed hash of the peer id → location of its entry.
type PeerMap = HashMap<u64, Loc, std::hash::BuildHasherDefault<KeyHasher>>;

/// One stored peer. IPv4 addresses use the first 4 bytes of `ip`.
#[derive(Clone, Copy, Debug)]
struct Entry {
    peer_id: PeerId,
    ip: [u8; 16],
    port: u16,
    place: Place,
    last: u32,
    /// `left` of its last announce in [`LEFT_UNIT`]s, rounded up, saturating (64 TiB):
    /// what the fleet view shows as progress.
    left_units: u32,
    /// Download rate between its last two announces, KiB/s (0: none seen yet).
    rate_kib: u32,
    /// Keyed by its address alone (the first entry its address made in the torrent, or the
    /// one that took that key back), else by (address, peer id). Fills padding: 56 bytes.
    first: bool,
}

/// The unit of a stored `left` (one block): rounding costs the view nothing.
pub const LEFT_UNIT: u64 = 16 << 10;

/// `left` in [`LEFT_UNIT`]s, rounded up so that only a seed reads 0.
fn left_units(left: u64) -> u32 {
    u32::try_from(left.div_ceil(LEFT_UNIT)).unwrap_or(u32::MAX)
}

/// The rate a peer downloaded at between two announces (KiB/s): the drop of `left` over
/// the seconds between them; the old rate when no time passed (two announces in one
/// second, e.g. `completed` right after a periodic one); 0 when `left` grew (a restart).
fn rate_between(old: &Entry, new_units: u32, now32: u32) -> u32 {
    let secs = now32.wrapping_sub(old.last);
    if secs == 0 || secs > u32::MAX / 2 {
        return old.rate_kib;
    }
    let fetched = u64::from(old.left_units.saturating_sub(new_units)) * (LEFT_UNIT >> 10);
    u32::try_from(fetched / u64::from(secs)).unwrap_or(u32::MAX)
}

impl Entry {
    fn addr(&self, v6: bool) -> SocketAddr {
        addr_of(self.ip, self.port, v6)
    }
}

/// The address bytes a key hashes: 4 for IPv4, 16 for IPv6 (the lengths keep the key kinds
/// and families apart: SipHash covers the length).
fn ip_key_bytes(ip: &[u8; 16], v6: bool) -> &[u8] {
    if v6 {
        ip
    } else {
        &ip[..4]
    }
}

/// Peer-map key of the address's "first" entry.
fn first_key(key: [u64; 2], ip: &[u8; 16], v6: bool) -> u64 {
    siphash24(key[0], key[1], ip_key_bytes(ip, v6))
}

/// Peer-map key of the address's entry count (present when it is not implied, see
/// [`Torrent::address_count`]).
fn count_key(key: [u64; 2], ip: &[u8; 16], v6: bool) -> u64 {
    let mut m = [0u8; 17];
    let b = ip_key_bytes(ip, v6);
    m[..b.len()].copy_from_slice(b);
    m[b.len()] = b'#';
    siphash24(key[0], key[1], &m[..b.len() + 1])
}

/// Peer-map key of a further entry of an address: (address, peer id).
fn pair_key(key: [u64; 2], ip: &[u8; 16], v6: bool, id: &PeerId) -> u64 {
    let mut m = [0u8; 36];
    let b = ip_key_bytes(ip, v6);
    m[..b.len()].copy_from_slice(b);
    m[b.len()..b.len() + 20].copy_from_slice(id);
    siphash24(key[0], key[1], &m[..b.len() + 20])
}

fn entry_key(key: [u64; 2], e: &Entry, v6: bool) -> u64 {
    if e.first {
        first_key(key, &e.ip, v6)
    } else {
        pair_key(key, &e.ip, v6, &e.peer_id)
    }
}

/// An entry's address from its stored bytes (IPv4 in the first 4).
fn addr_of(ip: [u8; 16], port: u16, v6: bool) -> SocketAddr {
    if v6 {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)
    } else {
        let [a, b, c, d, ..] = ip;
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port)
    }
}

/// Peers of one place (grouped mode) or all peers of a family (flat mode): seeds in
/// `peers[..seeds]`, leechers after.
#[derive(Debug)]
struct Group {
    place: Place,
    seeds: u32,
    peers: Vec<Entry>,
}

/// One family's peers of a torrent. Flat mode (at most `flat_max` peers): one group holding
/// every peer, contiguous in memory, so a small swarm costs a few cache lines per answer.
/// Grouped mode: one group per place, sorted by place, so one dc's racks are contiguous.
#[derive(Debug)]
struct Side {
    groups: Vec<Group>,
    count: usize,
    flat: bool,
}

impl Side {
    fn new(flat: bool) -> Side {
        Side {
            groups: Vec::new(),
            count: 0,
            flat,
        }
    }

    fn find(&self, place: Place) -> Result<usize, usize> {
        if self.flat {
            if self.groups.is_empty() {
                Err(0)
            } else {
                Ok(0)
            }
        } else {
            self.groups.binary_search_by(|g| g.place.cmp(&place))
        }
    }
}

#[derive(Debug)]
struct Torrent {
    info_hash: InfoHash,
    key: [u64; 2],
    peers: PeerMap,
    sides: [Side; 2],
    seeders: u32,
    leechers: u32,
    completed: u32,
    listed_empty: bool,
}

fn fix(peers: &mut PeerMap, key: [u64; 2], e: &Entry, v6: bool, idx: usize) {
    if let Some(l) = peers.get_mut(&entry_key(key, e, v6)) {
        *l = Loc::new(e.place, v6, idx);
    }
}

impl Torrent {
    fn new(info_hash: InfoHash, key: [u64; 2], flat: bool) -> Torrent {
        Torrent {
            info_hash,
            key,
            peers: PeerMap::default(),
            sides: [Side::new(flat), Side::new(flat)],
            seeders: 0,
            leechers: 0,
            completed: 0,
            listed_empty: false,
        }
    }

    /// Peers stored (the peer map also holds address counts).
    fn len(&self) -> usize {
        self.sides[0].count + self.sides[1].count
    }

    /// Entries the address holds in this torrent: the count record when present, else 1
    /// when its first key is taken, else 0. The record exists exactly when the count is ≥ 2,
    /// or 1 held under a pair key (the first-keyed entry left before the others).
    fn address_count(&self, ip: &[u8; 16], v6: bool) -> usize {
        match self.peers.get(&count_key(self.key, ip, v6)) {
            Some(l) => l.slot as usize,
            None => usize::from(self.peers.contains_key(&first_key(self.key, ip, v6))),
        }
    }

    /// Sets the address's count to `n` after a peer of it was added or removed (see
    /// [`Torrent::address_count`] for when a record is kept).
    fn set_address_count(&mut self, ip: &[u8; 16], v6: bool, n: usize) {
        let ck = count_key(self.key, ip, v6);
        let first_taken = self.peers.contains_key(&first_key(self.key, ip, v6));
        if n == 0 || (n == 1 && first_taken) {
            self.peers.remove(&ck);
        } else {
            self.peers.insert(
                ck,
                Loc {
                    place: Place::UNKNOWN,
                    slot: n as u32,
                },
            );
        }
    }

    /// Finds the entry of (`ip`, `id`): `Ok(Some(loc, (group, index, is seed)))`, `Ok(None)`
    /// when absent, `Err` when a key it needs is held by another peer (a 64-bit keyed-hash
    /// collision, ≈ n/2^64 per new peer, not steerable without the key).
    #[allow(clippy::type_complexity)]
    fn find_peer(
        &self,
        ip: &[u8; 16],
        v6: bool,
        id: &PeerId,
    ) -> Result<Option<(Loc, (usize, usize, bool))>, ()> {
        let fk = first_key(self.key, ip, v6);
        if let Some(&loc) = self.peers.get(&fk) {
            let (g, idx, seed, e) = self.locate(loc).ok_or(())?;
            if e.ip != *ip || loc.v6() != v6 {
                return Err(());
            }
            if e.peer_id == *id {
                return Ok(Some((loc, (g, idx, seed))));
            }
        }
        match self.peers.get(&pair_key(self.key, ip, v6, id)) {
            None => Ok(None),
            Some(&loc) => match self.locate(loc) {
                Some((g, idx, seed, e)) if e.peer_id == *id && e.ip == *ip && loc.v6() == v6 => {
                    Ok(Some((loc, (g, idx, seed))))
                }
                _ => Err(()),
            },
        }
    }

    /// The (group, index, is seed, entry) `loc` points at.
    fn locate(&self, loc: Loc) -> Option<(usize, usize, bool, Entry)> {
        let side = &self.sides[usize::from(loc.v6())];
        let g = side.find(loc.place).ok()?;
        let grp = side.groups.get(g)?;
        let idx = loc.idx();
        let e = grp.peers.get(idx)?;
        Some((g, idx, idx < grp.seeds as usize, *e))
    }

    /// Stores `e`; switches the side to grouped mode when it outgrows `flat_max`.
    fn insert(&mut self, e: Entry, v6: bool, seed: bool, flat_max: usize) -> (usize, usize) {
        let key = self.key;
        let side = &mut self.sides[usize::from(v6)];
        let g = match side.find(e.place) {
            Ok(g) => g,
            Err(g) => {
                if side.groups.len() == side.groups.capacity() {
                    side.groups.reserve_exact((side.groups.len() / 8).max(1));
                }
                let place = if side.flat { Place::UNKNOWN } else { e.place };
                side.groups.insert(
                    g,
                    Group {
                        place,
                        seeds: 0,
                        peers: Vec::new(),
                    },
                );
                g
            }
        };
        let Some(grp) = side.groups.get_mut(g) else {
            return (0, 0);
        };
        if grp.peers.len() == grp.peers.capacity() {
            // Grow by 25 %, not 100 %: keeps slack (memory per peer) low.
            grp.peers.reserve_exact((grp.peers.len() / 4).max(1));
        }
        grp.peers.push(e);
        let mut idx = grp.peers.len() - 1;
        if seed {
            let s = grp.seeds as usize;
            if s != idx {
                grp.peers.swap(s, idx);
                fix(&mut self.peers, key, &grp.peers[idx], v6, idx);
            }
            idx = s;
            grp.seeds += 1;
            self.seeders += 1;
        } else {
            self.leechers += 1;
        }
        side.count += 1;
        let k = entry_key(key, &e, v6);
        self.peers.insert(k, Loc::new(e.place, v6, idx));
        if side.flat && side.count > flat_max {
            self.regroup(v6, false, flat_max);
            let found = self.peers.get(&k).copied().and_then(|l| self.locate(l));
            return found.map_or((0, 0), |(g, i, _, _)| (g, i));
        }
        (g, idx)
    }

    /// Removes the peer at group `g`, index `idx` of family `v6`, and its map entry;
    /// switches the side to flat mode when it shrinks below `flat_max / 2`.
    fn remove_at(&mut self, v6: bool, g: usize, idx: usize, flat_max: usize) -> Option<Entry> {
        let key = self.key;
        let side = &mut self.sides[usize::from(v6)];
        let grp = side.groups.get_mut(g)?;
        let e = *grp.peers.get(idx)?;
        let s = grp.seeds as usize;
        if idx < s {
            let ls = s - 1;
            if idx != ls {
                grp.peers.swap(idx, ls);
                fix(&mut self.peers, key, &grp.peers[idx], v6, idx);
            }
            grp.seeds -= 1;
            grp.peers.swap_remove(ls);
            if let Some(m) = grp.peers.get(ls) {
                fix(&mut self.peers, key, m, v6, ls);
            }
            self.seeders = self.seeders.saturating_sub(1);
        } else {
            grp.peers.swap_remove(idx);
            if let Some(m) = grp.peers.get(idx) {
                fix(&mut self.peers, key, m, v6, idx);
            }
            self.leechers = self.leechers.saturating_sub(1);
        }
        let len = grp.peers.len();
        if len == 0 {
            side.groups.remove(g);
        } else if grp.peers.capacity() > 16 && len < grp.peers.capacity() / 2 {
            grp.peers.shrink_to(len + len / 4);
        }
        side.count = side.count.saturating_sub(1);
        self.peers.remove(&entry_key(key, &e, v6));
        if !side.flat && side.count < flat_max / 2 {
            self.regroup(v6, true, flat_max);
        }
        Some(e)
    }

    /// Rebuilds one side in flat or grouped mode (O(peers of that side), bounded by
    /// `flat_max`, and amortized by the hysteresis between the two thresholds).
    fn regroup(&mut self, v6: bool, flat: bool, flat_max: usize) {
        let side = &mut self.sides[usize::from(v6)];
        let groups = std::mem::take(&mut side.groups);
        side.flat = flat;
        side.count = 0;
        for grp in groups {
            let s = grp.seeds as usize;
            for (i, e) in grp.peers.into_iter().enumerate() {
                if i < s {
                    self.seeders = self.seeders.saturating_sub(1);
                } else {
                    self.leechers = self.leechers.saturating_sub(1);
                }
                self.insert(e, v6, i < s, flat_max);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sampling

/// wyrand: tiny and fast; only shuffles peer lists, needs no cryptographic strength.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        (t >> 64) as u64 ^ t as u64
    }
    /// Uniform-ish in `0..n` (0 when n is 0).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
    /// A stride in `1..n` coprime to `n` (1 when n ≤ 2), so stepping visits every position.
    fn stride(&mut self, n: usize) -> usize {
        if n <= 2 {
            return 1;
        }
        for _ in 0..8 {
            let t = 1 + self.below(n - 1);
            if gcd(t, n) == 1 {
                return t;
            }
        }
        1
    }
}

/// Binary (Stein's) gcd: no divisions.
fn gcd(mut a: usize, mut b: usize) -> usize {
    if a == 0 || b == 0 {
        return a | b;
    }
    let shift = (a | b).trailing_zeros();
    a >>= a.trailing_zeros();
    while b != 0 {
        b >>= b.trailing_zeros();
        if a > b {
            std::mem::swap(&mut a, &mut b);
        }
        b -= a;
    }
    a << shift
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Region {
    Seeds,
    Leechers,
    All,
}

fn region_of(grp: &Group, r: Region) -> (usize, usize) {
    let s = (grp.seeds as usize).min(grp.peers.len());
    match r {
        Region::Seeds => (0, s),
        Region::Leechers => (s, grp.peers.len() - s),
        Region::All => (0, grp.peers.len()),
    }
}

/// A walk through one group's region: positions `lo + (start + i·stride) mod len`.
#[derive(Clone, Copy, Debug, Default)]
struct Walk {
    g: u32,
    lo: u32,
    len: u32,
    start: u32,
    stride: u32,
    next: u32,
}

/// What every take needs besides the walk.
struct Ctx<'a> {
    groups: &'a [Group],
    v6: bool,
    /// The announcer's own (group, index): never handed out.
    skip: (usize, usize),
    now: u32,
    ttl: u32,
}

impl Ctx<'_> {
    /// Continues `w`, pushing up to `k` live peers; returns how many.
    ///
    /// The walk jumps around a group of up to thousands of entries, so nearly every entry
    /// is a cache miss. It goes in batches: first the batch's positions and the fields
    /// needed, in a loop whose loads do not depend on each other (the CPU overlaps the
    /// misses), then the filtering and pushing from those copies.
    fn take(&self, w: &mut Walk, k: usize, out: &mut Vec<SocketAddr>) -> usize {
        const BATCH: usize = 16;
        let Some(grp) = self.groups.get(w.g as usize) else {
            return 0;
        };
        let len = w.len as u64;
        if len == 0 {
            return 0;
        }
        let mut pos = (u64::from(w.start) + u64::from(w.next) * u64::from(w.stride)) % len;
        let mut taken = 0;
        let mut batch = [(0usize, 0u32, [0u8; 16], 0u16); BATCH];
        while w.next < w.len && taken < k {
            let n = (k - taken).min((w.len - w.next) as usize).min(BATCH);
            for slot in batch.iter_mut().take(n) {
                let p = w.lo as usize + pos as usize;
                *slot = match grp.peers.get(p) {
                    Some(e) => (p, e.last, e.ip, e.port),
                    None => (usize::MAX, 0, [0; 16], 0),
                };
                pos += u64::from(w.stride);
                if pos >= len {
                    pos -= len;
                }
            }
            w.next += n as u32;
            for &(p, last, ip, port) in batch.iter().take(n) {
                if p != usize::MAX
                    && (w.g as usize, p) != self.skip
                    && self.now.wrapping_sub(last) <= self.ttl
                {
                    out.push(addr_of(ip, port, self.v6));
                    taken += 1;
                }
            }
        }
        taken
    }

    fn walk(&self, g: usize, r: Region, rng: &mut Rng) -> Walk {
        let (lo, len) = self.groups.get(g).map_or((0, 0), |grp| region_of(grp, r));
        Walk {
            g: g as u32,
            lo: lo as u32,
            len: len as u32,
            start: rng.below(len) as u32,
            stride: rng.stride(len) as u32,
            next: 0,
        }
    }

    /// Takes up to `want` peers from the groups in `ranges` (half-open index ranges).
    fn class(
        &self,
        ranges: [(usize, usize); 2],
        r: Region,
        want: usize,
        rng: &mut Rng,
        scratch: &mut Vec<Walk>,
        out: &mut Vec<SocketAddr>,
    ) -> usize {
        let n0 = ranges[0].1.saturating_sub(ranges[0].0);
        let n1 = ranges[1].1.saturating_sub(ranges[1].0);
        let total = n0 + n1;
        if total == 0 || want == 0 {
            return 0;
        }
        scratch.clear();
        let visits = total.min(want.saturating_mul(4).max(64));
        let mut vi = rng.below(total);
        let step = rng.stride(total);
        let mut taken = 0;
        for k in 0..visits {
            if taken >= want {
                break;
            }
            let g = if vi < n0 {
                ranges[0].0 + vi
            } else {
                ranges[1].0 + (vi - n0)
            };
            let mut w = self.walk(g, r, rng);
            if w.len > 0 {
                let per = (want - taken).div_ceil(visits - k);
                taken += self.take(&mut w, per, out);
                if w.next < w.len {
                    scratch.push(w);
                }
            }
            vi += step;
            if vi >= total {
                vi -= total;
            }
        }
        for w in scratch.iter_mut() {
            if taken >= want {
                break;
            }
            taken += self.take(w, want - taken, out);
        }
        taken
    }
}

// ---------------------------------------------------------------------------------------
// The store

fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(a),
        },
        v4 => v4,
    }
}

fn ip_bytes(ip: IpAddr) -> [u8; 16] {
    match normalize(ip) {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    }
}

fn map_bytes<K, V, S>(m: &HashMap<K, V, S>) -> usize {
    let cap = m.capacity();
    if cap == 0 {
        return 0;
    }
    let buckets = if cap < 8 {
        (cap + 1).next_power_of_two()
    } else {
        (cap * 8 / 7).next_power_of_two()
    };
    buckets * (std::mem::size_of::<(K, V)>() + 1) + 16
}

/// Where the expiry sweep continues.
#[derive(Debug, Default, Clone, Copy)]
struct Sweep {
    slot: usize,
    v6: bool,
    group: usize,
    idx: usize,
}

/// The swarm state of the torrents one core owns.
#[derive(Debug)]
pub struct Store {
    config: StoreConfig,
    ids: ConnectionIds,
    index: HashMap<InfoHash, u32>,
    slots: Vec<Option<Torrent>>,
    free: Vec<u32>,
    /// Slots of torrents that became empty (checked again when popped).
    empties: Vec<u32>,
    peer_total: usize,
    sweep: Sweep,
    rng: Rng,
    /// SipHash key for the peer maps' keys.
    key: [u64; 2],
    scratch: Vec<Walk>,
    lists: [Vec<u32>; 6],
    counters: Counters,
    /// The tracker-wide peer cap and creation budget (shared by every core's store).
    limits: Arc<Limits>,
}

impl Store {
    /// A store with `config`, accepting connection ids of `ids`, with its own [`Limits`]
    /// from `config.max_peers` and `config.max_new_torrents_per_address`.
    pub fn new(config: StoreConfig, ids: ConnectionIds) -> Store {
        let limits = Arc::new(Limits::new(
            config.max_peers,
            config.max_new_torrents_per_address,
        ));
        Store::with_limits(config, ids, limits)
    }

    /// A store sharing `limits` with the other cores' stores (their `max_peers` and
    /// creation budget apply; `config`'s copies of those are ignored).
    pub fn with_limits(mut config: StoreConfig, ids: ConnectionIds, limits: Arc<Limits>) -> Store {
        config.max_peers_per_torrent = config.max_peers_per_torrent.clamp(1, IDX_MASK as usize);
        config.max_peers_per_address = config.max_peers_per_address.clamp(1, u16::MAX as usize);
        let seed = config.rng_seed.unwrap_or_else(rand::random);
        let mut rng = Rng(seed);
        let key = [rng.next_u64(), rng.next_u64()];
        Store {
            config,
            ids,
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            empties: Vec::new(),
            peer_total: 0,
            sweep: Sweep::default(),
            rng,
            key,
            scratch: Vec::new(),
            lists: Default::default(),
            counters: Counters::default(),
            limits,
        }
    }

    /// The limits this store shares.
    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Number of torrents stored (including empty ones kept for their completed count).
    pub fn torrent_count(&self) -> usize {
        self.index.len()
    }

    /// Number of peers stored, all torrents.
    pub fn peer_count(&self) -> usize {
        self.peer_total
    }

    /// Answers a BEP 15 connect: the connection id for `source`.
    pub fn connect(&mut self, source: SocketAddr, now: u64) -> u64 {
        self.counters.connects += 1;
        self.ids.issue(source, now)
    }

    /// Checks the connection id of an announce or scrape; a bad one is counted (drop the
    /// packet).
    pub fn check_connection(&mut self, id: u64, source: SocketAddr, now: u64) -> bool {
        let ok = self.ids.check(id, source, now);
        if !ok {
            self.counters.bad_connection_ids += 1;
        }
        ok
    }

    /// True when announces from `ip` may set their address with the IP field.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = normalize(ip);
        self.config.trusted.iter().any(|c| c.contains(ip))
    }

    /// The address a peer is stored under: the source IP, or the announce's IP field when
    /// the source is trusted and the field is set; the announce's port.
    pub fn peer_addr(&self, source: SocketAddr, ip_field: Option<IpAddr>, port: u16) -> SocketAddr {
        let ip = match ip_field {
            Some(ip) if !ip.is_unspecified() && self.is_trusted(source.ip()) => normalize(ip),
            _ => normalize(source.ip()),
        };
        SocketAddr::new(ip, port)
    }

    fn ttl(&self) -> u32 {
        self.config.interval.saturating_add(self.config.grace)
    }

    fn answer(&self, t: Option<&Torrent>) -> AnnounceOut {
        AnnounceOut {
            interval: self.config.interval,
            leechers: t.map_or(0, |t| t.leechers),
            seeders: t.map_or(0, |t| t.seeders),
        }
    }

    fn note_if_empty(&mut self, slot: usize) {
        if let Some(Some(t)) = self.slots.get_mut(slot) {
            if t.len() == 0 {
                t.peers.shrink_to_fit();
                t.sides[0].groups.shrink_to_fit();
                t.sides[1].groups.shrink_to_fit();
                if !t.listed_empty {
                    t.listed_empty = true;
                    self.empties.push(slot as u32);
                }
            }
        }
    }

    fn new_torrent(
        &mut self,
        info_hash: InfoHash,
        source: IpAddr,
        now: u64,
    ) -> Result<usize, AnnounceError> {
        if let Err(why) = self.limits.check_creation(source, now) {
            self.counters.creation_refusals += 1;
            return Err(match why {
                CreationRefusal::SourceBudget => AnnounceError::TooManyNewTorrents {
                    ip: source,
                    max: self.config.max_new_torrents_per_address,
                },
                CreationRefusal::TooManySources => AnnounceError::TooManyCreators { ip: source },
            });
        }
        if self.index.len() >= self.config.max_torrents {
            let mut evicted = false;
            while let Some(s) = self.empties.pop() {
                let s = s as usize;
                let Some(Some(t)) = self.slots.get_mut(s) else {
                    continue;
                };
                t.listed_empty = false;
                if t.len() == 0 {
                    let ih = t.info_hash;
                    self.slots[s] = None;
                    self.index.remove(&ih);
                    self.free.push(s as u32);
                    self.counters.torrents_evicted += 1;
                    evicted = true;
                    break;
                }
            }
            if !evicted {
                self.counters.torrent_limit_refusals += 1;
                return Err(AnnounceError::TooManyTorrents {
                    info_hash,
                    max: self.config.max_torrents,
                });
            }
        }
        let t = Some(Torrent::new(info_hash, self.key, self.config.flat_max > 0));
        let slot = match self.free.pop() {
            Some(s) if (s as usize) < self.slots.len() => {
                self.slots[s as usize] = t;
                s as usize
            }
            _ => {
                self.slots.push(t);
                self.slots.len() - 1
            }
        };
        self.index.insert(info_hash, slot as u32);
        self.limits.record_creation(source, now);
        Ok(slot)
    }

    /// Handles one announce at `now` (seconds): stores, updates or removes the peer and
    /// writes the peer list into `peers` (cleared first; keep and reuse the buffer).
    pub fn announce(
        &mut self,
        req: &AnnounceIn,
        now: u64,
        peers: &mut Vec<SocketAddr>,
    ) -> Result<AnnounceOut, AnnounceError> {
        peers.clear();
        self.counters.announces += 1;
        let addr = self.peer_addr(req.addr, req.ip, req.port);
        if addr.port() == 0 {
            self.counters.bad_announces += 1;
            return Err(AnnounceError::PortZero {
                source_addr: req.addr,
            });
        }
        let v6 = addr.is_ipv6();
        let now32 = now as u32;
        let source = normalize(req.addr.ip());
        let slot = match self.index.get(&req.info_hash) {
            Some(&s) => s as usize,
            None if req.event == Event::Stopped => return Ok(self.answer(None)),
            None => self.new_torrent(req.info_hash, source, now)?,
        };
        let (g, idx) = match self.update_peer(slot, req, addr, now32) {
            Ok(Some(at)) => at,
            Ok(None) => {
                // `stopped`, of a stored peer or not: no peers in the answer.
                let out = self.answer(self.slots[slot].as_ref());
                self.note_if_empty(slot);
                return Ok(out);
            }
            Err(e) => {
                // A torrent this announce just created stays empty: make it evictable.
                self.note_if_empty(slot);
                return Err(e);
            }
        };
        let seed = req.left == 0;
        let want = if req.numwant < 0 {
            self.config.default_numwant
        } else {
            req.numwant as usize
        }
        .min(self.config.max_numwant);
        // How far the rack class may go past `want` (policy 9): not for an announcer that
        // asked for fewer peers than the default.
        let want_max = if req.numwant < 0 || req.numwant as usize >= self.config.default_numwant {
            self.config.max_numwant.max(want)
        } else {
            want
        };
        let region_passes: &[Region] = if seed {
            &[Region::Leechers]
        } else if req.downloaded == 0 {
            &[Region::Seeds, Region::Leechers]
        } else {
            &[Region::All]
        };
        let ttl = self.ttl();
        let Store {
            slots,
            rng,
            scratch,
            lists,
            config,
            ..
        } = self;
        let Some(t) = slots.get(slot).and_then(Option::as_ref) else {
            return Ok(AnnounceOut {
                interval: config.interval,
                leechers: 0,
                seeders: 0,
            });
        };
        let side = &t.sides[usize::from(v6)];
        let ctx = Ctx {
            groups: &side.groups,
            v6,
            skip: (g, idx),
            now: now32,
            ttl,
        };
        if side.flat {
            fill_flat(
                &ctx,
                req.place,
                region_passes,
                Want {
                    want,
                    max: want_max,
                },
                config.min_remote,
                rng,
                lists,
                peers,
            );
        } else {
            fill(
                &ctx,
                side.count,
                req.place,
                g,
                region_passes,
                Want {
                    want,
                    max: want_max,
                },
                config.min_remote,
                rng,
                scratch,
                peers,
            );
        }
        Ok(AnnounceOut {
            interval: if seed {
                config.interval
            } else {
                config.interval.min(config.leecher_interval.max(1))
            },
            leechers: t.leechers,
            seeders: t.seeders,
        })
    }

    /// Stores, updates or (on `stopped`) removes the announcer's entry in torrent `slot`.
    /// `Ok(Some((group, index)))`: where the entry now is; `Ok(None)`: `stopped` (whether
    /// or not the peer was stored). Entries are keyed by (address, peer id): the same peer
    /// id from another address is another entry and can neither move nor stop this one.
    fn update_peer(
        &mut self,
        slot: usize,
        req: &AnnounceIn,
        addr: SocketAddr,
        now32: u32,
    ) -> Result<Option<(usize, usize)>, AnnounceError> {
        let max_peers = self.config.max_peers_per_torrent;
        let per_address = self.config.max_peers_per_address;
        let flat_max = self.config.flat_max;
        let Some(t) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(None);
        };
        let v6 = addr.is_ipv6();
        let seed = req.left == 0;
        let ip = ip_bytes(addr.ip());
        let mut entry = Entry {
            peer_id: req.peer_id,
            ip,
            port: addr.port(),
            place: req.place,
            last: now32,
            left_units: left_units(req.left),
            rate_kib: 0,
            first: false,
        };
        let found = match t.find_peer(&ip, v6, &req.peer_id) {
            Ok(f) => f,
            Err(()) => {
                self.counters.bad_announces += 1;
                return Err(AnnounceError::PeerIdCollision {
                    info_hash: req.info_hash,
                });
            }
        };
        let Some((loc, (g, idx, was_seed))) = found else {
            if req.event == Event::Stopped {
                return Ok(None);
            }
            if t.len() >= max_peers {
                self.counters.full_torrent_refusals += 1;
                return Err(AnnounceError::TorrentFull {
                    info_hash: req.info_hash,
                    max: max_peers,
                });
            }
            let held = t.address_count(&ip, v6);
            if held >= per_address {
                self.counters.address_refusals += 1;
                return Err(AnnounceError::AddressFull {
                    info_hash: req.info_hash,
                    ip: addr.ip(),
                    max: per_address,
                });
            }
            if !self.limits.take_peer() {
                self.counters.peer_limit_refusals += 1;
                return Err(AnnounceError::TrackerFull {
                    max: self.limits.max_peers(),
                });
            }
            entry.first = !t.peers.contains_key(&first_key(t.key, &ip, v6));
            if req.event == Event::Completed {
                t.completed = t.completed.saturating_add(1);
            }
            let at = t.insert(entry, v6, seed, flat_max);
            t.set_address_count(&ip, v6, held + 1);
            self.peer_total += 1;
            return Ok(Some(at));
        };
        let old = t.locate(loc).map(|(_, _, _, e)| e);
        let old_first = old.is_some_and(|e| e.first);
        if let Some(old) = old {
            entry.rate_kib = rate_between(&old, entry.left_units, now32);
        }
        if req.event == Event::Stopped {
            self.remove_peer(slot, loc.v6(), g, idx);
            return Ok(None);
        }
        if req.event == Event::Completed && !was_seed {
            t.completed = t.completed.saturating_add(1);
        }
        entry.first = old_first;
        if loc.place == req.place && loc.v6() == v6 && was_seed == seed {
            if let Some(e) = t.sides[usize::from(v6)]
                .groups
                .get_mut(g)
                .and_then(|grp| grp.peers.get_mut(idx))
            {
                *e = entry;
            }
            Ok(Some((g, idx)))
        } else {
            t.remove_at(loc.v6(), g, idx, flat_max);
            Ok(Some(t.insert(entry, v6, seed, flat_max)))
        }
    }

    /// Removes a stored peer for good (`stopped` or expiry): its address count and its peer
    /// slot go with it.
    fn remove_peer(&mut self, slot: usize, v6: bool, g: usize, idx: usize) -> bool {
        let flat_max = self.config.flat_max;
        let Some(t) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return false;
        };
        let Some(e) = t.remove_at(v6, g, idx, flat_max) else {
            return false;
        };
        let held = t.address_count(&e.ip, v6);
        t.set_address_count(&e.ip, v6, held.saturating_sub(1));
        self.peer_total = self.peer_total.saturating_sub(1);
        self.limits.release_peers(1);
        true
    }

    /// Scrape counts of one torrent (zeros when unknown).
    pub fn scrape(&mut self, info_hash: &InfoHash) -> ScrapeCounts {
        self.counters.scrapes += 1;
        self.index
            .get(info_hash)
            .and_then(|&s| self.slots.get(s as usize)?.as_ref())
            .map_or(ScrapeCounts::default(), |t| ScrapeCounts {
                seeders: t.seeders,
                completed: t.completed,
                leechers: t.leechers,
            })
    }

    /// Removes peers silent for more than `interval + grace` seconds, examining at most
    /// `budget` entries (peers, groups, torrent slots) and continuing where the last call
    /// stopped; at most two rounds per call. Returns how many peers it removed.
    pub fn expire(&mut self, now: u64, budget: usize) -> usize {
        let now32 = now as u32;
        let ttl = self.ttl();
        let mut work = 0;
        let mut removed = 0;
        let mut wraps = 0;
        let mut c = self.sweep;
        while work < budget {
            work += 1;
            if c.slot >= self.slots.len() {
                c = Sweep::default();
                wraps += 1;
                if wraps > 2 || self.slots.is_empty() {
                    break;
                }
                continue;
            }
            let Some(t) = self.slots[c.slot].as_mut() else {
                c = Sweep {
                    slot: c.slot + 1,
                    ..Sweep::default()
                };
                continue;
            };
            let side = &t.sides[usize::from(c.v6)];
            let Some(grp) = side.groups.get(c.group) else {
                c = if c.v6 {
                    Sweep {
                        slot: c.slot + 1,
                        ..Sweep::default()
                    }
                } else {
                    Sweep {
                        slot: c.slot,
                        v6: true,
                        group: 0,
                        idx: 0,
                    }
                };
                continue;
            };
            let Some(e) = grp.peers.get(c.idx) else {
                c.group += 1;
                c.idx = 0;
                continue;
            };
            if now32.wrapping_sub(e.last) > ttl {
                let groups_before = side.groups.len();
                if self.remove_peer(c.slot, c.v6, c.group, c.idx) {
                    removed += 1;
                    let (groups_after, empty) = self.slots[c.slot]
                        .as_ref()
                        .map_or((0, true), |t| (side_len(t, c.v6), t.len() == 0));
                    if groups_after < groups_before {
                        // The group vanished; the next one now sits at `c.group`.
                        c.idx = 0;
                    }
                    if empty {
                        self.note_if_empty(c.slot);
                    }
                } else {
                    c.idx += 1;
                }
            } else {
                c.idx += 1;
            }
        }
        self.sweep = c;
        self.counters.expired_peers += removed as u64;
        removed
    }

    /// Approximate heap + inline bytes of the whole store: allocated capacities of every
    /// vector and hash map (hash maps: buckets × (entry + 1 control byte)). Allocator
    /// rounding is not counted.
    pub fn approx_bytes(&self) -> usize {
        use std::mem::size_of;
        let mut n = size_of::<Store>()
            + map_bytes(&self.index)
            + self.slots.capacity() * size_of::<Option<Torrent>>()
            + (self.free.capacity() + self.empties.capacity()) * size_of::<u32>()
            + self.scratch.capacity() * size_of::<Walk>();
        for t in self.slots.iter().flatten() {
            n += map_bytes(&t.peers);
            for side in &t.sides {
                n += side.groups.capacity() * size_of::<Group>();
                for g in &side.groups {
                    n += g.peers.capacity() * size_of::<Entry>();
                }
            }
        }
        n
    }
}

/// Peers an announcer asked for, and how many its whole rack may make them (policy 9).
#[derive(Clone, Copy, Debug)]
struct Want {
    want: usize,
    max: usize,
}

impl Want {
    /// `want`, the rack and dc classes' `dc_quota` and the rack class's `quota`, raised
    /// by the rack peers `quota` leaves out (`rack` of them in all), up to `max` in all.
    fn with_whole_rack(self, dc_quota: usize, quota: usize, rack: usize) -> (usize, usize, usize) {
        let extra = rack
            .saturating_sub(quota)
            .min(self.max.saturating_sub(self.want));
        (self.want + extra, dc_quota + extra, quota + extra)
    }
}

/// Builds the peer list of a flat side: one sequential scan sorts the live candidates into
/// (class, seed/leecher) index lists, which are then read in policy order, each from a
/// random start with a random coprime stride. O(peers of the side) ≤ `flat_max`, on
/// contiguous memory.
#[allow(clippy::too_many_arguments)]
fn fill_flat(
    ctx: &Ctx<'_>,
    place: Place,
    passes: &[Region],
    wanted: Want,
    min_remote: usize,
    rng: &mut Rng,
    lists: &mut [Vec<u32>; 6],
    out: &mut Vec<SocketAddr>,
) {
    let Some(grp) = ctx.groups.first() else {
        return;
    };
    let len = grp.peers.len();
    let want = wanted.want;
    if want == 0 || len == 0 {
        return;
    }
    let min_remote = min_remote.min(want / 2);
    for l in lists.iter_mut() {
        l.clear();
    }
    let seeds = grp.seeds as usize;
    let split = passes.len() == 2;
    let only_leechers = passes == [Region::Leechers];
    let mut rack_seed = false;
    let mut dc_seed = false;
    // Sequential scan: contiguous memory, prefetched; the shuffle happens on the lists.
    for (here, e) in grp.peers.iter().enumerate() {
        let is_seed = here < seeds;
        let class = if place.rack != 0 && e.place.rack == place.rack {
            0
        } else if place.dc != 0 && e.place.dc == place.dc {
            1
        } else {
            2
        };
        rack_seed |= class == 0 && is_seed;
        dc_seed |= class <= 1 && is_seed;
        if (0, here) == ctx.skip
            || ctx.now.wrapping_sub(e.last) > ctx.ttl
            || (only_leechers && is_seed)
        {
            continue;
        }
        lists[class * 2 + usize::from(split && !is_seed)].push(here as u32);
    }
    let others: usize = lists[2..].iter().map(Vec::len).sum();
    let other_dcs: usize = lists[4..].iter().map(Vec::len).sum();
    // Room kept for other dcs (see the module doc, 5), then for other racks.
    let dc_keep = if place.dc != 0 && !dc_seed {
        min_remote.min(want).min(other_dcs)
    } else {
        0
    };
    let dc_quota = want - dc_keep;
    let quota = if place.rack != 0 && !rack_seed {
        dc_quota - min_remote.min(dc_quota).min(others - dc_keep)
    } else {
        dc_quota
    };
    let (want, dc_quota, quota) = if place.rack != 0 {
        wanted.with_whole_rack(dc_quota, quota, lists[0].len() + lists[1].len())
    } else {
        (want, dc_quota, quota)
    };
    // Each list is read from a random start with a random coprime stride.
    let mut walks = [(0usize, 1usize, 0usize); 6];
    for (w, l) in walks.iter_mut().zip(lists.iter()) {
        *w = (rng.below(l.len()), rng.stride(l.len()), 0);
    }
    let mut emit = |b: usize, upto: usize, out: &mut Vec<SocketAddr>| {
        let list = &lists[b];
        let (pos, stride, used) = &mut walks[b];
        while out.len() < upto && *used < list.len() {
            if let Some(e) = list.get(*pos).and_then(|&i| grp.peers.get(i as usize)) {
                out.push(e.addr(ctx.v6));
            }
            *used += 1;
            *pos += *stride;
            if *pos >= list.len() {
                *pos -= list.len();
            }
        }
    };
    emit(0, quota, out);
    emit(1, quota, out);
    emit(2, dc_quota, out);
    emit(3, dc_quota, out);
    for b in [4, 5, 2, 3] {
        emit(b, want, out);
    }
    emit(0, want, out);
    emit(1, want, out);
}

fn side_len(t: &Torrent, v6: bool) -> usize {
    t.sides[usize::from(v6)].groups.len()
}

/// Builds the peer list (policy in the module doc).
#[allow(clippy::too_many_arguments)]
fn fill(
    ctx: &Ctx<'_>,
    side_count: usize,
    place: Place,
    own_g: usize,
    passes: &[Region],
    wanted: Want,
    min_remote: usize,
    rng: &mut Rng,
    scratch: &mut Vec<Walk>,
    out: &mut Vec<SocketAddr>,
) {
    let want = wanted.want;
    if want == 0 {
        return;
    }
    let min_remote = min_remote.min(want / 2);
    let groups = ctx.groups;
    let n = groups.len();
    let own = groups.get(own_g);
    // Rack class: the announcer's own group, when its rack is known.
    let rack_class = place.rack != 0 && own.is_some();
    let (dlo, dhi) = if place.dc != 0 {
        (
            groups.partition_point(|g| g.place.dc < place.dc),
            groups.partition_point(|g| g.place.dc <= place.dc),
        )
    } else {
        (0, 0)
    };
    let excl = |lo: usize, hi: usize| -> [(usize, usize); 2] {
        if rack_class && (lo..hi).contains(&own_g) {
            [(lo, own_g), (own_g + 1, hi)]
        } else {
            [(lo, hi), (0, 0)]
        }
    };
    let dc_ranges = excl(dlo, dhi);
    let rest_ranges = if dhi > dlo {
        [(0, dlo), (dhi, n)]
    } else {
        excl(0, n)
    };

    // Room kept for other dcs while ours has no seed (see the module doc, 5).
    let dc_seed = (dlo..dhi).any(|g| groups.get(g).is_some_and(|g| g.seeds > 0));
    let elsewhere: usize = groups[..dlo.min(n)]
        .iter()
        .chain(groups.get(dhi..).unwrap_or(&[]))
        .map(|g| g.peers.len())
        .sum();
    let dc_keep = if place.dc != 0 && dhi > dlo && !dc_seed {
        min_remote.min(want).min(elsewhere)
    } else {
        0
    };
    let dc_quota = want - dc_keep;
    let (want, dc_quota, quota) = match (rack_class, own) {
        (true, Some(own)) => {
            let own_len = own.peers.len();
            let others = side_count.saturating_sub(own_len);
            let quota = if own.seeds == 0 {
                dc_quota - min_remote.min(dc_quota).min(others.saturating_sub(dc_keep))
            } else {
                dc_quota
            };
            // The announcer's own entry is in its group.
            wanted.with_whole_rack(dc_quota, quota, own_len.saturating_sub(1))
        }
        _ => (want, dc_quota, 0),
    };
    let mut rack_walks = [Walk::default(); 2];
    if rack_class {
        for (i, &r) in passes.iter().enumerate().take(2) {
            rack_walks[i] = ctx.walk(own_g, r, rng);
            let k = quota.saturating_sub(out.len());
            ctx.take(&mut rack_walks[i], k, out);
        }
    }
    for (ranges, upto) in [(dc_ranges, dc_quota), (rest_ranges, want)] {
        for &r in passes {
            let need = upto.saturating_sub(out.len());
            if need == 0 {
                continue;
            }
            ctx.class(ranges, r, need, rng, scratch, out);
        }
    }
    if out.len() >= want {
        return;
    }
    // Other dcs could not fill the room kept for them: top up from our dc. A second walk
    // may meet peers the first gave, so it asks for that many more and skips them.
    if dc_keep > 0 {
        for &r in passes {
            let need = want.saturating_sub(out.len());
            if need == 0 {
                return;
            }
            let mut more = Vec::new();
            ctx.class(dc_ranges, r, need + out.len(), rng, scratch, &mut more);
            for a in more {
                if out.len() < want && !out.contains(&a) {
                    out.push(a);
                }
            }
        }
    }
    // Other racks could not fill their share: top up from the own rack.
    if rack_class {
        for w in rack_walks.iter_mut() {
            let need = want.saturating_sub(out.len());
            if need == 0 {
                return;
            }
            ctx.take(w, need, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    const T0: u64 = 1_000_000;

    fn store() -> Store {
        store_with(StoreConfig::default())
    }

    fn store_fm(flat_max: usize) -> Store {
        store_with(StoreConfig {
            flat_max,
            ..StoreConfig::default()
        })
    }

    fn store_with(mut c: StoreConfig) -> Store {
        c.rng_seed.get_or_insert(7);
        Store::new(
            c,
            ConnectionIds::with_key(0x1234_5678_9abc_def0_0fed_cba9_8765_4321, 60),
        )
    }

    fn pid(n: u32) -> PeerId {
        let mut p = [0u8; 20];
        p[..4].copy_from_slice(&n.to_le_bytes());
        p[19] = 0xaa;
        p
    }

    fn ih(n: u32) -> InfoHash {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(&n.to_be_bytes());
        h
    }

    fn v4(n: u32) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n)), 40000)
    }

    fn v6(n: u32) -> SocketAddr {
        SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0,
                0,
                0,
                0,
                (n >> 16) as u16,
                n as u16,
            )),
            40000,
        )
    }

    fn place(dc: u16, rack: u16) -> Place {
        Place { dc, rack }
    }

    fn req(t: u32, p: u32, addr: SocketAddr, pl: Place, left: u64) -> AnnounceIn {
        AnnounceIn {
            info_hash: ih(t),
            peer_id: pid(p),
            addr,
            ip: None,
            port: 6881,
            event: Event::Started,
            left,
            downloaded: 1,
            numwant: -1,
            place: pl,
        }
    }

    fn ann(s: &mut Store, r: &AnnounceIn, now: u64) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        s.announce(r, now, &mut out).unwrap();
        out
    }

    fn at(addr: SocketAddr) -> SocketAddr {
        SocketAddr::new(addr.ip(), 6881)
    }

    #[test]
    fn gcd_and_strides() {
        assert_eq!(gcd(12, 18), 6);
        assert_eq!(gcd(0, 5), 5);
        assert_eq!(gcd(7, 0), 7);
        assert_eq!(gcd(1000, 999), 1);
        let mut r = Rng(3);
        for n in 0..300 {
            let t = r.stride(n);
            assert!(t >= 1 && (n <= 2 || (t < n && gcd(t, n) == 1)), "{n} {t}");
        }
    }

    #[test]
    fn siphash_reference_vectors() {
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        assert_eq!(siphash24(k0, k1, &[]), 0x726f_db47_dd0e_0e31);
        let m: Vec<u8> = (0..15).collect();
        assert_eq!(siphash24(k0, k1, &m), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn connection_ids_cannot_be_forged_and_expire() {
        let ids = ConnectionIds::with_key(42, 60);
        let a = v4(1);
        let id = ids.issue(a, T0);
        assert!(ids.check(id, a, T0));
        assert!(ids.check(id, a, T0 + 60)); // previous bucket still good
        assert!(!ids.check(id, a, T0 + 121)); // two buckets later: expired
        assert!(!ids.check(id, v4(2), T0)); // other address
        assert!(!ids.check(id, SocketAddr::new(a.ip(), 40001), T0)); // other port
        assert!(!ids.check(id ^ 1, a, T0)); // forged
        assert!(!ids.check(id, a, T0 - 120)); // from the future
        let other_key = ConnectionIds::with_key(43, 60);
        assert!(!other_key.check(id, a, T0));
        // Clones share the key (other cores).
        assert!(ids.clone().check(id, a, T0));
        let mut s = store();
        let id = s.connect(a, T0);
        assert!(s.check_connection(id, a, T0 + 30));
        assert!(!s.check_connection(id.wrapping_add(1), a, T0));
        assert!(!s.check_connection(0, a, T0));
        assert_eq!(s.counters().bad_connection_ids, 2);
        assert_eq!(s.counters().connects, 1);
    }

    #[test]
    fn trusted_ip_field() {
        let mut c = StoreConfig::default();
        c.trusted.push(Cidr::parse("192.168.0.0/16").unwrap());
        let s = store_with(c);
        let claimed: IpAddr = "10.9.9.9".parse().unwrap();
        let trusted_src: SocketAddr = "192.168.1.1:5555".parse().unwrap();
        let untrusted_src: SocketAddr = "172.16.0.1:5555".parse().unwrap();
        assert_eq!(
            s.peer_addr(trusted_src, Some(claimed), 6881),
            SocketAddr::new(claimed, 6881)
        );
        assert_eq!(
            s.peer_addr(untrusted_src, Some(claimed), 6881),
            SocketAddr::new(untrusted_src.ip(), 6881)
        );
        assert_eq!(
            s.peer_addr(trusted_src, None, 6881),
            SocketAddr::new(trusted_src.ip(), 6881)
        );
        let mapped: SocketAddr = "[::ffff:192.168.1.1]:5555".parse().unwrap();
        assert!(s.is_trusted(mapped.ip()));
        assert_eq!(s.peer_addr(mapped, None, 7).ip(), trusted_src.ip());
    }

    fn ordering_rack_then_dc_then_rest_in(flat_max: usize) {
        let mut s = store_fm(flat_max);
        // dc 1: rack 1 (5 peers, ids 0..5), rack 2 (5 peers); dc 2: rack 3 (5 peers); unknown: 5.
        let layout = [place(1, 1), place(1, 2), place(2, 3), Place::UNKNOWN];
        for (k, pl) in layout.iter().enumerate() {
            for i in 0..5 {
                let n = (k * 5 + i) as u32;
                // seeds everywhere so the remote minimum is off
                ann(&mut s, &req(1, n, v4(n), *pl, 0), T0);
            }
        }
        let me = req(1, 100, v4(100), place(1, 1), 10);
        let got = ann(&mut s, &me, T0);
        let class = |a: &SocketAddr| -> usize {
            let n = match a.ip() {
                IpAddr::V4(v) => u32::from(v) & 0xffff,
                _ => unreachable!(),
            };
            (n / 5) as usize
        };
        assert_eq!(got.len(), 20);
        let classes: Vec<usize> = got.iter().map(class).collect();
        let mut sorted = classes.clone();
        sorted.sort();
        assert_eq!(&classes[..5], &[0; 5]);
        assert_eq!(&classes[5..10], &[1; 5]);
        assert!(classes[10..].iter().all(|&c| c >= 2));
        assert_eq!(classes.iter().filter(|&&c| c == 2).count(), 5);
        assert!(!got.contains(&at(v4(100))));
        let uniq: HashSet<_> = got.iter().collect();
        assert_eq!(uniq.len(), 20);
        // numwant honoured, rack first.
        let mut few = me.clone();
        few.numwant = 3;
        let got = ann(&mut s, &few, T0);
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|a| class(a) == 0));
        few.numwant = 0;
        assert!(ann(&mut s, &few, T0).is_empty());
        few.numwant = 100_000;
        assert_eq!(ann(&mut s, &few, T0).len(), 20);
    }

    #[test]
    fn ordering_rack_then_dc_then_rest() {
        for fm in [0, 3, 128] {
            ordering_rack_then_dc_then_rest_in(fm);
        }
    }

    fn shuffled_within_class_in(flat_max: usize) {
        let mut s = store_fm(flat_max);
        for i in 0..100 {
            ann(&mut s, &req(1, i, v4(i), place(1, 1), 0), T0);
        }
        let me = req(1, 1000, v4(1000), place(1, 1), 10);
        let mut firsts = HashSet::new();
        let mut me2 = me.clone();
        me2.numwant = 10;
        for _ in 0..50 {
            firsts.insert(ann(&mut s, &me2, T0)[0]);
        }
        assert!(
            firsts.len() > 10,
            "first peer should vary: {}",
            firsts.len()
        );
    }

    #[test]
    fn shuffled_within_class() {
        for fm in [0, 3, 128] {
            shuffled_within_class_in(fm);
        }
    }

    fn store_min_remote_2(flat_max: usize) -> Store {
        store_with(StoreConfig {
            min_remote: 2,
            flat_max,
            ..StoreConfig::default()
        })
    }

    fn remote_minimum_while_rack_has_no_seed_in(flat_max: usize) {
        let mut s = store_min_remote_2(flat_max);
        // My rack: 60 leechers. Other racks: 10 peers (same dc) and 10 (other dc).
        for i in 0..60 {
            ann(&mut s, &req(1, i, v4(i), place(1, 1), 5), T0);
        }
        for i in 100..110 {
            ann(&mut s, &req(1, i, v4(i), place(1, 2), 5), T0);
        }
        for i in 200..210 {
            ann(&mut s, &req(1, i, v4(i), place(2, 3), 5), T0);
        }
        let me = req(1, 1000, v4(1000), place(1, 1), 10);
        let rack_of = |a: &SocketAddr| match a.ip() {
            IpAddr::V4(v) => (u32::from(v) & 0xffff) / 100,
            _ => 9,
        };
        let got = ann(&mut s, &me, T0);
        // The whole rack (policy 9), and no seed in my rack nor in my dc: 2 from other
        // racks of my dc, 2 from other dcs.
        assert_eq!(got.len(), 64);
        let remote = got.iter().filter(|a| rack_of(a) != 0).count();
        assert_eq!(remote, 4, "{got:?}");
        assert_eq!(got.iter().filter(|a| rack_of(a) == 2).count(), 2, "{got:?}");
        assert!(got[..60].iter().all(|a| rack_of(a) == 0));
        // min_remote configurable.
        let c = StoreConfig {
            min_remote: 5,
            flat_max,
            ..StoreConfig::default()
        };
        let mut s5 = store_with(c);
        for i in (0..60).chain(100..110) {
            let pl = if i < 100 { place(1, 1) } else { place(1, 2) };
            ann(&mut s5, &req(1, i, v4(i), pl, 5), T0);
        }
        let got = ann(&mut s5, &me, T0);
        assert_eq!(got.iter().filter(|a| rack_of(a) != 0).count(), 5);

        // Once my rack has a seed: rack only (my dc has one too).
        ann(&mut s, &req(1, 59, v4(59), place(1, 1), 0), T0);
        let got = ann(&mut s, &me, T0);
        assert_eq!(got.len(), 60);
        assert!(got.iter().all(|a| rack_of(a) == 0), "{got:?}");
        // A seed in another rack of my dc: other racks still, other dcs no more.
        let mut s3 = store_min_remote_2(flat_max);
        for i in 0..60 {
            ann(&mut s3, &req(1, i, v4(i), place(1, 1), 5), T0);
        }
        ann(&mut s3, &req(1, 100, v4(100), place(1, 2), 0), T0);
        for i in 200..210 {
            ann(&mut s3, &req(1, i, v4(i), place(2, 3), 5), T0);
        }
        let got = ann(&mut s3, &me, T0);
        assert_eq!(got.iter().filter(|a| rack_of(a) == 1).count(), 1, "{got:?}");
        assert_eq!(
            got.iter().filter(|a| rack_of(a) == 2).count(),
            1,
            "only to fill the rack's room for other racks: {got:?}"
        );
        // A seed elsewhere does not count for my rack.
        let mut s2 = store_min_remote_2(flat_max);
        for i in 0..60 {
            ann(&mut s2, &req(1, i, v4(i), place(1, 1), 5), T0);
        }
        ann(&mut s2, &req(1, 100, v4(100), place(1, 2), 0), T0);
        let got = ann(&mut s2, &me, T0);
        assert_eq!(got.iter().filter(|a| rack_of(a) != 0).count(), 1);
    }

    #[test]
    fn remote_minimum_while_rack_has_no_seed() {
        for fm in [0, 3, 128] {
            remote_minimum_while_rack_has_no_seed_in(fm);
        }
    }

    fn a_rack_larger_than_numwant_is_given_whole_in(flat_max: usize) {
        let mut s = store_fm(flat_max);
        // My rack: 80 leechers (79 besides me); another rack of my dc: 20.
        for i in 0..80 {
            ann(&mut s, &req(1, i, v4(i), place(1, 1), 5), T0);
        }
        for i in 100..120 {
            ann(&mut s, &req(1, i, v4(i), place(1, 2), 5), T0);
        }
        let rack_of = |a: &SocketAddr| match a.ip() {
            IpAddr::V4(v) => (u32::from(v) & 0xffff) / 100,
            _ => 9,
        };
        let mut me = req(1, 79, v4(79), place(1, 1), 10);
        let got = ann(&mut s, &me, T0);
        let distinct: HashSet<_> = got.iter().collect();
        assert_eq!(distinct.len(), got.len(), "{got:?}");
        assert_eq!(
            got.iter().filter(|a| rack_of(a) == 0).count(),
            79,
            "{got:?}"
        );
        // The room kept for other racks (min_remote, 16 of the default numwant 50) is kept.
        assert_eq!(
            got.iter().filter(|a| rack_of(a) == 1).count(),
            16,
            "{got:?}"
        );
        // An announcer that asks for fewer than the default gets what it asked for.
        me.numwant = 10;
        assert_eq!(ann(&mut s, &me, T0).len(), 10);
        // The whole answer stays within max_numwant.
        me.numwant = -1;
        let small = StoreConfig {
            max_numwant: 60,
            flat_max,
            ..StoreConfig::default()
        };
        let mut s60 = store_with(small);
        for i in 0..80 {
            ann(&mut s60, &req(1, i, v4(i), place(1, 1), 5), T0);
        }
        assert_eq!(ann(&mut s60, &me, T0).len(), 60);
    }

    #[test]
    fn a_rack_larger_than_numwant_is_given_whole() {
        for fm in [0, 3, 128] {
            a_rack_larger_than_numwant_is_given_whole_in(fm);
        }
    }

    fn remote_shortfall_is_filled_from_own_rack_in(flat_max: usize) {
        let mut s = store_fm(flat_max);
        for i in 0..10 {
            ann(&mut s, &req(1, i, v4(i), place(1, 1), 5), T0);
        }
        // One remote seed; I am a seed too... no: one remote leecher only.
        ann(&mut s, &req(1, 100, v4(100), place(1, 2), 5), T0);
        let mut me = req(1, 1000, v4(1000), place(1, 1), 10);
        me.numwant = 5;
        let got = ann(&mut s, &me, T0);
        assert_eq!(got.len(), 5);
        assert_eq!(got.iter().filter(|a| **a == at(v4(100))).count(), 1);
    }

    #[test]
    fn remote_shortfall_is_filled_from_own_rack() {
        for fm in [0, 3, 128] {
            remote_shortfall_is_filled_from_own_rack_in(fm);
        }
    }

    fn seeds_first_for_an_empty_peer_and_leechers_only_for_a_seed_in(flat_max: usize) {
        let mut s = store_fm(flat_max);
        for i in 0..30 {
            let left = if i % 3 == 0 { 0 } else { 7 };
            ann(&mut s, &req(1, i, v4(i), place(1, 1), left), T0);
        }
        let is_seed = |a: &SocketAddr| match a.ip() {
            IpAddr::V4(v) => (u32::from(v) & 0xffff) % 3 == 0,
            _ => false,
        };
        let mut empty = req(1, 500, v4(500), place(1, 1), 100);
        empty.downloaded = 0;
        let got = ann(&mut s, &empty, T0);
        assert_eq!(got.len(), 30);
        assert!(got[..10].iter().all(is_seed), "{got:?}");
        assert!(got[10..].iter().all(|a| !is_seed(a)));
        empty.numwant = 4;
        assert!(ann(&mut s, &empty, T0).iter().all(is_seed));
        let seed = req(1, 501, v4(501), place(1, 1), 0);
        let got = ann(&mut s, &seed, T0);
        assert_eq!(got.len(), 21); // 20 leechers + the empty peer
        assert!(got.iter().all(|a| !is_seed(a)));
        assert_eq!(s.scrape(&ih(1)).seeders, 11);
    }

    #[test]
    fn seeds_first_for_an_empty_peer_and_leechers_only_for_a_seed() {
        for fm in [0, 3, 128] {
            seeds_first_for_an_empty_peer_and_leechers_only_for_a_seed_in(fm);
        }
    }

    fn families_are_separate_in(flat_max: usize) {
        let mut s = store_fm(flat_max);
        for i in 0..5 {
            ann(&mut s, &req(1, i, v4(i), place(1, 1), 5), T0);
            ann(&mut s, &req(1, 100 + i, v6(i), place(1, 1), 5), T0);
        }
        let got = ann(&mut s, &req(1, 999, v6(999), place(1, 1), 5), T0);
        assert_eq!(got.len(), 5);
        assert!(got.iter().all(|a| a.is_ipv6()));
        let got = ann(&mut s, &req(1, 998, v4(998), place(1, 1), 5), T0);
        assert_eq!(got.len(), 5);
        assert!(got.iter().all(|a| a.is_ipv4()));
        // IPv4-mapped source is IPv4.
        let mapped: SocketAddr = "[::ffff:10.0.3.3]:1".parse().unwrap();
        let got = ann(&mut s, &req(1, 997, mapped, place(1, 1), 5), T0);
        assert!(got.iter().all(|a| a.is_ipv4()));
        // A peer id announcing from another address (here another family) is another
        // entry: it gets peers of its family, and the original entry stays (issue 11: an
        // address cannot take over another's peer id).
        let got = ann(&mut s, &req(1, 0, v6(77), place(1, 1), 5), T0);
        assert!(got.iter().all(|a| a.is_ipv6()));
        assert_eq!(s.scrape(&ih(1)).leechers, 14);
    }

    #[test]
    fn families_are_separate() {
        for fm in [0, 3, 128] {
            families_are_separate_in(fm);
        }
    }

    fn stopped_removes_from_that_torrent_only_in(flat_max: usize) {
        let mut s = store_fm(flat_max);
        for t in 1..=2 {
            for i in 0..3 {
                ann(&mut s, &req(t, i, v4(i), place(1, 1), 5), T0);
            }
        }
        let mut stop = req(1, 0, v4(0), place(1, 1), 5);
        stop.event = Event::Stopped;
        let mut out = vec![v4(9)];
        let a = s.announce(&stop, T0, &mut out).unwrap();
        assert!(out.is_empty());
        assert_eq!(a.leechers, 2);
        assert_eq!(s.scrape(&ih(1)).leechers, 2);
        assert_eq!(s.scrape(&ih(2)).leechers, 3);
        let got = ann(&mut s, &req(1, 1, v4(1), place(1, 1), 5), T0);
        assert_eq!(got, vec![at(v4(2))]);
        let got = ann(&mut s, &req(2, 1, v4(1), place(1, 1), 5), T0);
        assert_eq!(got.len(), 2);
        // Stopped for an unknown torrent creates nothing; stopped twice is harmless.
        stop.info_hash = ih(77);
        s.announce(&stop, T0, &mut out).unwrap();
        assert_eq!(s.torrent_count(), 2);
        stop.info_hash = ih(1);
        s.announce(&stop, T0, &mut out).unwrap();
        assert_eq!(s.peer_count(), 5);
    }

    #[test]
    fn stopped_removes_from_that_torrent_only() {
        for fm in [0, 3, 128] {
            stopped_removes_from_that_torrent_only_in(fm);
        }
    }

    fn expiry_after_interval_plus_grace_in(flat_max: usize) {
        let c = StoreConfig {
            interval: 100,
            grace: 20,
            flat_max,
            ..StoreConfig::default()
        };
        let mut s = store_with(c);
        for i in 0..50 {
            ann(
                &mut s,
                &req(i % 5, i, v4(i), place(1, (i % 3) as u16 + 1), i as u64 % 2),
                T0,
            );
        }
        // Half re-announce later.
        for i in 0..25 {
            ann(
                &mut s,
                &req(i % 5, i, v4(i), place(1, (i % 3) as u16 + 1), i as u64 % 2),
                T0 + 60,
            );
        }
        assert_eq!(s.expire(T0 + 120, usize::MAX), 0);
        // Stale peers are not handed out even before the sweep.
        let got = ann(&mut s, &req(0, 0, v4(0), place(1, 1), 1), T0 + 121);
        assert!(got.iter().all(|a| (u32::from(match a.ip() {
            IpAddr::V4(v) => v,
            _ => unreachable!(),
        }) & 0xff)
            < 25));
        // Bounded work per call: sweep in small steps.
        let mut total = 0;
        for _ in 0..1000 {
            total += s.expire(T0 + 121, 7);
        }
        assert_eq!(total, 25);
        assert_eq!(s.peer_count(), 25);
        assert_eq!(s.counters().expired_peers, 25);
        let sum: u32 = (0..5)
            .map(|t| {
                let c = s.scrape(&ih(t));
                c.seeders + c.leechers
            })
            .sum();
        assert_eq!(sum, 25);
        assert_eq!(s.expire(T0 + 242, usize::MAX), 25);
        assert_eq!(s.peer_count(), 0);
        assert_eq!(s.expire(T0 + 1000, usize::MAX), 0);
    }

    #[test]
    fn expiry_after_interval_plus_grace() {
        for fm in [0, 3, 128] {
            expiry_after_interval_plus_grace_in(fm);
        }
    }

    #[test]
    fn bounded_under_a_flood_of_fresh_peer_ids() {
        let c = StoreConfig {
            max_torrents: 10,
            max_peers_per_torrent: 100,
            ..StoreConfig::default()
        };
        let mut s = store_with(c);
        let mut out = Vec::new();
        let mut refused = 0;
        for i in 0..10_000u32 {
            let r = req(i % 20, i, v4(i), place(1, 1), 5);
            if s.announce(&r, T0, &mut out).is_err() {
                refused += 1;
            }
        }
        assert_eq!(s.torrent_count(), 10);
        assert_eq!(s.peer_count(), 1000);
        assert_eq!(refused, 9000);
        let c = *s.counters();
        assert_eq!(c.torrent_limit_refusals + c.full_torrent_refusals, 9000);
        let bytes = s.approx_bytes();
        // Existing peers still announce.
        assert!(s
            .announce(&req(0, 0, v4(0), place(1, 1), 5), T0, &mut out)
            .is_ok());
        // The refusal is a message for the error packet.
        let e = s
            .announce(&req(0, 99_999, v4(1), place(1, 1), 5), T0, &mut out)
            .unwrap_err();
        assert!(e.to_string().contains("full"), "{e}");
        // After expiry, the flood is gone and empty torrents make room for new ones.
        s.expire(T0 + 1000, usize::MAX);
        assert_eq!(s.peer_count(), 0);
        for i in 0..10_000u32 {
            let _ = s.announce(
                &req(100 + i % 20, i, v4(i), place(1, 1), 5),
                T0 + 1000,
                &mut out,
            );
        }
        assert_eq!(s.torrent_count(), 10);
        assert!(s.counters().torrents_evicted >= 10);
        assert!(
            s.approx_bytes() <= bytes + bytes / 4,
            "{} vs {bytes}",
            s.approx_bytes()
        );
        // Port zero is refused.
        let mut r = req(100, 5, v4(5), place(1, 1), 5);
        r.port = 0;
        assert!(matches!(
            s.announce(&r, T0, &mut out),
            Err(AnnounceError::PortZero { .. })
        ));
    }

    #[test]
    fn a_peer_id_from_another_address_neither_replaces_nor_stops_the_original() {
        for fm in [0, 128] {
            let mut s = store_fm(fm);
            let real = req(1, 1, v4(1), place(1, 1), 5);
            ann(&mut s, &real, T0);
            let mut hijack = req(1, 1, v4(2), place(1, 2), 0);
            hijack.port = 9999;
            ann(&mut s, &hijack, T0);
            hijack.event = Event::Stopped;
            ann(&mut s, &hijack, T0);
            // The original is listed, at its own port, and still a leecher.
            let got = ann(&mut s, &req(1, 3, v4(3), place(1, 1), 5), T0);
            assert_eq!(got, vec![at(v4(1))], "flat_max {fm}");
            assert_eq!(s.scrape(&ih(1)).leechers, 2);
            // Its own `stopped` still works.
            let mut stop = real.clone();
            stop.event = Event::Stopped;
            ann(&mut s, &stop, T0);
            assert!(ann(&mut s, &req(1, 3, v4(3), place(1, 1), 5), T0).is_empty());
        }
    }

    #[test]
    fn one_address_holds_at_most_max_peers_per_address_per_torrent() {
        for fm in [0, 3, 128] {
            let mut s = store_with(StoreConfig {
                flat_max: fm,
                ..StoreConfig::default()
            });
            let mut out = Vec::new();
            let mut refused = 0;
            for i in 0..1000u32 {
                let mut r = req(1, i, v4(7), place(1, (i % 5) as u16 + 1), 5);
                r.port = 1000 + i as u16;
                match s.announce(&r, T0, &mut out) {
                    Ok(_) => {}
                    Err(AnnounceError::AddressFull { max: 8, .. }) => refused += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(s.peer_count(), 8, "flat_max {fm}");
            assert_eq!(refused, 992);
            assert_eq!(s.counters().address_refusals, 992);
            // Another torrent and another address are not affected.
            ann(&mut s, &req(2, 5000, v4(7), place(1, 1), 5), T0);
            ann(&mut s, &req(1, 5001, v4(8), place(1, 1), 5), T0);
            // The stored ones re-announce; stopping one (the first-keyed one) frees a place.
            ann(&mut s, &req(1, 3, v4(7), place(1, 1), 5), T0);
            let mut stop = req(1, 0, v4(7), place(1, 1), 5);
            stop.event = Event::Stopped;
            ann(&mut s, &stop, T0);
            ann(&mut s, &req(1, 900, v4(7), place(1, 1), 5), T0);
            assert!(s
                .announce(&req(1, 901, v4(7), place(1, 1), 5), T0, &mut out)
                .is_err());
            // After expiry the address starts from zero again.
            s.expire(T0 + 1000, usize::MAX);
            assert_eq!(s.peer_count(), 0);
            for i in 0..8 {
                ann(&mut s, &req(1, 2000 + i, v4(7), place(1, 1), 5), T0 + 1000);
            }
            assert!(s
                .announce(&req(1, 3000, v4(7), place(1, 1), 5), T0 + 1000, &mut out)
                .is_err());
        }
    }

    #[test]
    fn one_address_creates_a_bounded_number_of_torrents_per_minute() {
        let mut s = store_with(StoreConfig {
            max_new_torrents_per_address: 10,
            ..StoreConfig::default()
        });
        let mut out = Vec::new();
        let t = 60 * 1000;
        let mut made = 0;
        for i in 0..100u32 {
            match s.announce(&req(i, i, v4(1), place(1, 1), 5), t, &mut out) {
                Ok(_) => made += 1,
                Err(e) => {
                    assert!(matches!(
                        e,
                        AnnounceError::TooManyNewTorrents { max: 10, .. }
                    ));
                    assert!(e.to_string().contains("10.0.0.1"), "{e}");
                }
            }
        }
        assert_eq!(made, 10);
        assert_eq!(s.torrent_count(), 10);
        assert_eq!(s.counters().creation_refusals, 90);
        // Existing torrents still take announces, other addresses still create.
        ann(&mut s, &req(0, 500, v4(1), place(1, 1), 5), t + 1);
        ann(&mut s, &req(0, 501, v4(2), place(1, 1), 5), t + 1);
        ann(&mut s, &req(200, 502, v4(2), place(1, 1), 5), t + 1);
        // Next minute: ten more.
        for i in 100..120u32 {
            let _ = s.announce(&req(i, i, v4(1), place(1, 1), 5), t + 60, &mut out);
        }
        assert_eq!(s.torrent_count(), 21);
    }

    #[test]
    fn max_peers_caps_every_store_sharing_the_limits() {
        let c = StoreConfig {
            max_peers: 100,
            rng_seed: Some(3),
            ..StoreConfig::default()
        };
        let limits = Arc::new(Limits::new(c.max_peers, 1000));
        let ids = || ConnectionIds::with_key(5, 60);
        let mut a = Store::with_limits(c.clone(), ids(), limits.clone());
        let mut b = Store::with_limits(c, ids(), limits.clone());
        let mut out = Vec::new();
        let mut full = 0;
        for i in 0..1000u32 {
            let s = if i % 2 == 0 { &mut a } else { &mut b };
            match s.announce(&req(i % 37, i, v4(i), place(1, 1), 5), T0, &mut out) {
                Ok(_) => {}
                Err(AnnounceError::TrackerFull { max: 100 }) => full += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(a.peer_count() + b.peer_count(), 100);
        assert_eq!(limits.peers(), 100);
        assert_eq!(full, 900);
        // Stored peers re-announce; a stop or expiry gives room back.
        ann(&mut a, &req(0, 0, v4(0), place(1, 1), 5), T0);
        let mut stop = req(0, 0, v4(0), place(1, 1), 5);
        stop.event = Event::Stopped;
        ann(&mut a, &stop, T0);
        assert_eq!(limits.peers(), 99);
        ann(&mut b, &req(5, 7777, v4(7777), place(1, 1), 5), T0);
        a.expire(T0 + 1000, usize::MAX);
        b.expire(T0 + 1000, usize::MAX);
        assert_eq!(limits.peers(), 0);
    }

    #[test]
    fn completed_counted_once_per_transition() {
        let mut s = store();
        let mut r = req(1, 1, v4(1), place(1, 1), 5);
        ann(&mut s, &r, T0);
        r.event = Event::Completed;
        r.left = 0;
        ann(&mut s, &r, T0);
        ann(&mut s, &r, T0); // retry
        assert_eq!(
            s.scrape(&ih(1)),
            ScrapeCounts {
                seeders: 1,
                completed: 1,
                leechers: 0
            }
        );
        assert_eq!(s.counters().scrapes, 1);
        assert_eq!(s.scrape(&ih(9)), ScrapeCounts::default());
    }

    fn per_peer(s: &Store) -> f64 {
        s.approx_bytes() as f64 / s.peer_count() as f64
    }

    #[test]
    fn memory_per_peer_large_swarm() {
        let mut s = store();
        let mut out = Vec::with_capacity(200);
        for i in 0..100_000u32 {
            let pl = place((i % 4) as u16 + 1, (i % 100) as u16 + 1);
            let left = u64::from(i % 10 != 0);
            s.announce(&req(1, i, v4(i), pl, left), T0, &mut out)
                .unwrap();
        }
        assert_eq!(s.peer_count(), 100_000);
        let b = per_peer(&s);
        eprintln!("large swarm: {b:.1} bytes per peer");
        assert!(b <= 128.0, "{b} bytes per peer");
    }

    #[test]
    fn memory_per_peer_small_swarms() {
        let mut s = store();
        let mut out = Vec::with_capacity(200);
        for t in 0..2000u32 {
            for i in 0..50u32 {
                let n = t * 50 + i;
                let pl = place((i % 2) as u16 + 1, (i % 5) as u16 + 1);
                s.announce(&req(t, n, v4(n), pl, 5), T0, &mut out).unwrap();
            }
        }
        let b = per_peer(&s);
        eprintln!("small swarms: {b:.1} bytes per peer");
        assert!(b <= 128.0, "{b} bytes per peer");
    }

    #[test]
    fn memory_per_peer_worst_case_one_peer_per_rack() {
        let mut s = store();
        let mut out = Vec::new();
        for i in 0..225u32 {
            let pl = place((i % 4) as u16 + 1, i as u16 + 1);
            s.announce(&req(1, i, v4(i), pl, 5), T0, &mut out).unwrap();
        }
        let b = per_peer(&s);
        eprintln!("one peer per rack: {b:.1} bytes per peer");
        assert!(b <= 136.0, "{b} bytes per peer");
    }

    #[test]
    fn memory_per_peer_with_two_peers_per_address_worst_layout() {
        let mut s = store();
        let mut out = Vec::new();
        for i in 0..225u32 {
            let pl = place((i % 4) as u16 + 1, i as u16 + 1);
            s.announce(&req(1, i, v4(i / 2), pl, 5), T0, &mut out)
                .unwrap();
        }
        assert_eq!(s.peer_count(), 225);
        let b = per_peer(&s);
        eprintln!("two peers per address, one peer per rack: {b:.1} bytes per peer");
        assert!(b <= 160.0, "{b} bytes per peer");
    }

    #[test]
    fn entry_sizes() {
        assert_eq!(std::mem::size_of::<Entry>(), 56);
        assert_eq!(std::mem::size_of::<(u64, Loc)>(), 16);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Address counts stay exact through adds, stops, moves between racks and families
        /// and expiry: an address is refused a new peer exactly when the model says it
        /// holds the cap.
        #[test]
        fn address_counts_match_a_model(
            ops in proptest::collection::vec((0u32..3, 0u32..6, 0u8..5, 0u16..3), 1..300),
            flat_max in prop_oneof![Just(0usize), Just(2), Just(128)],
        ) {
            let cap = 3;
            let mut s = store_with(StoreConfig {
                max_peers_per_address: cap,
                interval: 100,
                grace: 0,
                flat_max,
                ..StoreConfig::default()
            });
            // (address, peer) → last announce
            let mut model: HashMap<(u32, u32), u64> = HashMap::new();
            let mut now = T0;
            let mut out = Vec::new();
            for (a, p, op, rack) in ops {
                let addr = if a == 2 { v6(1) } else { v4(a) };
                match op {
                    0 => {
                        now += 60;
                        s.expire(now, usize::MAX);
                        model.retain(|_, last| now - *last <= 100);
                    }
                    1 => {
                        let mut r = req(1, p, addr, place(1, rack), 5);
                        r.event = Event::Stopped;
                        s.announce(&r, now, &mut out).unwrap();
                        model.remove(&(a, p));
                    }
                    _ => {
                        let r = req(1, p, addr, place(1, rack), u64::from(op == 2));
                        let held = model.keys().filter(|k| k.0 == a).count();
                        let known = model.contains_key(&(a, p));
                        let res = s.announce(&r, now, &mut out);
                        if known || held < cap {
                            prop_assert!(res.is_ok(), "{:?}", res);
                            model.insert((a, p), now);
                        } else {
                            let refused = matches!(res, Err(AnnounceError::AddressFull { .. }));
                            prop_assert!(refused, "{:?}", res);
                        }
                    }
                }
                prop_assert_eq!(s.peer_count(), model.len());
                prop_assert_eq!(s.limits().peers(), model.len());
                let c = s.scrape(&ih(1));
                prop_assert_eq!((c.seeders + c.leechers) as usize, model.len());
            }
        }
    }

    // ---- model check -------------------------------------------------------------------

    #[derive(Debug, Clone)]
    enum Op {
        Announce {
            t: u32,
            p: u32,
            ev: u8,
            seed: bool,
            empty: bool,
            rack: u16,
            numwant: i32,
        },
        Advance(u64),
        Sweep(usize),
        Scrape(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0u32..3, 0u32..12, 0u8..4, any::<bool>(), any::<bool>(), 0u16..4, -1i32..20)
                .prop_map(|(t, p, ev, seed, empty, rack, numwant)| Op::Announce { t, p, ev, seed, empty, rack, numwant }),
            1 => (1u64..200).prop_map(Op::Advance),
            1 => (1usize..50).prop_map(Op::Sweep),
            2 => (0u32..4).prop_map(Op::Scrape),
        ]
    }

    /// peer → (seed, last announce, IPv6), and the completed count.
    type ModelTorrent = (HashMap<u32, (bool, u64, bool)>, u32);

    #[derive(Default)]
    struct Model {
        /// torrent → peer → (seed, last, v6)
        t: HashMap<u32, ModelTorrent>,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn scrape_and_lists_match_a_reference_model(
            ops in proptest::collection::vec(op(), 1..200),
            flat_max in prop_oneof![Just(0usize), Just(2), Just(5), Just(128)],
        ) {
            let c = StoreConfig {
                interval: 100,
                grace: 10,
                flat_max,
                ..StoreConfig::default()
            };
            let ttl = 110;
            let mut s = store_with(c);
            let mut m = Model::default();
            let mut now = T0;
            let mut out = Vec::new();
            for o in ops {
                match o {
                    Op::Announce { t, p, ev, seed, empty, rack, numwant } => {
                        let is_v6 = p % 3 == 0;
                        let addr = if is_v6 { v6(p) } else { v4(p) };
                        let mut r = req(t, p, addr, place(u16::from(rack > 0), rack), if seed { 0 } else { 9 });
                        r.event = Event::from_bep15(u32::from(ev));
                        r.downloaded = u64::from(!empty);
                        r.numwant = numwant;
                        let res = s.announce(&r, now, &mut out).unwrap();
                        let stopped = r.event == Event::Stopped;
                        if stopped {
                            if let Some((peers, _)) = m.t.get_mut(&t) {
                                peers.remove(&p);
                            }
                        } else {
                            let (peers, completed) = m.t.entry(t).or_default();
                            let was_seed = peers.get(&p).is_some_and(|x| x.0);
                            if r.event == Event::Completed && !was_seed {
                                *completed += 1;
                            }
                            peers.insert(p, (seed, now, is_v6));
                        }
                        if let Some((peers, _)) = m.t.get(&t) {
                            let seeders = peers.values().filter(|x| x.0).count() as u32;
                            prop_assert_eq!(res.seeders, seeders);
                            prop_assert_eq!(res.leechers, peers.len() as u32 - seeders);
                        }
                        // Peer list: right family, live, not me, no duplicates, full count.
                        let uniq: HashSet<_> = out.iter().collect();
                        prop_assert_eq!(uniq.len(), out.len());
                        if stopped {
                            prop_assert!(out.is_empty());
                        } else {
                            let peers = &m.t[&t].0;
                            let avail: HashSet<SocketAddr> = peers.iter()
                                .filter(|(q, x)| **q != p && x.2 == is_v6 && now - x.1 <= ttl && !(seed && x.0))
                                .map(|(q, _)| at(if is_v6 { v6(*q) } else { v4(*q) }))
                                .collect();
                            let want = if numwant < 0 { 50 } else { numwant as usize };
                            prop_assert_eq!(out.len(), want.min(avail.len()));
                            for a in &out {
                                prop_assert!(avail.contains(a), "{:?} not available", a);
                            }
                        }
                    }
                    Op::Advance(d) => now += d,
                    Op::Sweep(budget) => {
                        // A full round is enough when the budget is large; otherwise partial.
                        let removed = s.expire(now, budget.saturating_mul(1000));
                        let mut model_removed = 0;
                        for (peers, _) in m.t.values_mut() {
                            let before = peers.len();
                            peers.retain(|_, x| now - x.1 <= ttl);
                            model_removed += before - peers.len();
                        }
                        prop_assert_eq!(removed, model_removed);
                    }
                    Op::Scrape(t) => {
                        let got = s.scrape(&ih(t));
                        let want = m.t.get(&t).map_or(ScrapeCounts::default(), |(peers, completed)| {
                            let seeders = peers.values().filter(|x| x.0).count() as u32;
                            ScrapeCounts { seeders, completed: *completed, leechers: peers.len() as u32 - seeders }
                        });
                        prop_assert_eq!(got, want);
                    }
                }
            }
        }
    }
}
