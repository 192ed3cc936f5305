//! Read-only views of a [`Store`] for the fleet view (`/swarms.json` and `/swarm/HEX.json`
//! on the tracker's HTTP port).
//!
//! Bounded by construction, so a tracker holding millions of peers never builds a huge
//! answer: a summary is per place (the number of racks, not of peers; built in one pass
//! over the torrent's peers, skipping the expired as the peer list does), and per-peer
//! detail is one torrent's, capped by the caller: when a torrent has more peers than the cap,
//! the downloading peers with the most left (the slowest) are kept first, then seeds. The
//! cost is one pass over that torrent's peers under the shard's lock (about a millisecond
//! per 100 000 peers) and memory proportional to the cap.

use std::collections::{BTreeMap, BinaryHeap};
use std::net::SocketAddr;

use super::{Entry, InfoHash, Place, Store, Torrent, LEFT_UNIT};

/// One place's peers in a torrent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlaceCounts {
    pub place: Place,
    pub seeders: u32,
    pub leechers: u32,
}

/// A torrent's live peers counted, in all and per place (peers past expiry that the sweep
/// has not removed yet are not counted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwarmSummary {
    pub info_hash: InfoHash,
    pub seeders: u32,
    pub leechers: u32,
    pub completed: u32,
    /// Sorted by place (dc, then rack).
    pub places: Vec<PlaceCounts>,
}

/// One stored peer as its announces showed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerView {
    pub addr: SocketAddr,
    pub place: Place,
    /// Bytes left at its last announce (rounded up to 16 KiB; 0 only for a seed).
    pub left: u64,
    /// Download rate between its last two announces, bytes/s.
    pub rate: u64,
    /// Seconds since its last announce.
    pub age_secs: u32,
}

impl PeerView {
    pub fn is_seed(&self) -> bool {
        self.left == 0
    }
}

/// Seconds since a peer's last announce; 0 when the wall clock stepped back past it (a
/// wrapping difference would read as a huge age and drop every peer).
fn age_secs(now32: u32, last: u32) -> u32 {
    now32.saturating_sub(last)
}

/// A group lists its seeds first; a peer that announced `left = 0` is one too.
fn is_seed(index: usize, seeds: u32, e: &Entry) -> bool {
    index < seeds as usize || e.left_units == 0
}

impl Store {
    fn torrent(&self, info_hash: &InfoHash) -> Option<&Torrent> {
        let slot = *self.index.get(info_hash)?;
        self.slots.get(slot as usize)?.as_ref()
    }

    /// The info-hashes of the torrents stored here, in no particular order.
    pub fn info_hashes(&self) -> impl Iterator<Item = &InfoHash> + '_ {
        self.index.keys()
    }

    /// Counts of one torrent at `now`, per place; `None` when it is not stored. Peers
    /// past their time to live (not swept yet) are not counted, as [`Store::peer_views`]
    /// does not list them: the two agree, so the view counts no host twice. O(peers).
    pub fn summary(&self, info_hash: &InfoHash, now: u64) -> Option<SwarmSummary> {
        let t = self.torrent(info_hash)?;
        let now32 = now as u32;
        let ttl = self.ttl();
        let mut places: BTreeMap<Place, (u32, u32)> = BTreeMap::new();
        for side in &t.sides {
            for grp in &side.groups {
                for (i, e) in grp.peers.iter().enumerate() {
                    if age_secs(now32, e.last) > ttl {
                        continue;
                    }
                    let place = if side.flat { e.place } else { grp.place };
                    let c = places.entry(place).or_default();
                    if is_seed(i, grp.seeds, e) {
                        c.0 += 1;
                    } else {
                        c.1 += 1;
                    }
                }
            }
        }
        let seeders = places.values().map(|c| c.0).sum();
        let leechers = places.values().map(|c| c.1).sum();
        Some(SwarmSummary {
            info_hash: *info_hash,
            seeders,
            leechers,
            completed: t.completed,
            places: places
                .into_iter()
                .map(|(place, (seeders, leechers))| PlaceCounts {
                    place,
                    seeders,
                    leechers,
                })
                .collect(),
        })
    }

    /// Up to `max` live peers of one torrent into `out` (cleared first): every peer when
    /// they fit; else the downloading peers with the most left first, then seeds. Returns
    /// the number of live peers (so `out.len() < total` means the list was capped).
    pub fn peer_views(
        &self,
        info_hash: &InfoHash,
        now: u64,
        max: usize,
        out: &mut Vec<PeerView>,
    ) -> usize {
        out.clear();
        let Some(t) = self.torrent(info_hash) else {
            return 0;
        };
        let now32 = now as u32;
        let ttl = self.ttl();
        // The `max` leechers with the most left: a min-heap on `left` of at most `max`.
        let mut slowest: BinaryHeap<std::cmp::Reverse<(u64, u64, usize)>> = BinaryHeap::new();
        let mut leechers: Vec<PeerView> = Vec::new();
        let mut seeds: Vec<PeerView> = Vec::new();
        let mut total = 0;
        for (v6, side) in [false, true].into_iter().zip(&t.sides) {
            for grp in &side.groups {
                for (i, e) in grp.peers.iter().enumerate() {
                    let age = age_secs(now32, e.last);
                    if age > ttl {
                        continue;
                    }
                    total += 1;
                    let view = PeerView {
                        addr: e.addr(v6),
                        place: e.place,
                        left: u64::from(e.left_units) * LEFT_UNIT,
                        rate: u64::from(e.rate_kib) << 10,
                        age_secs: age,
                    };
                    if is_seed(i, grp.seeds, e) {
                        if seeds.len() < max {
                            seeds.push(view);
                        }
                        continue;
                    }
                    if max == 0 {
                        continue;
                    }
                    let key = (view.left, u64::MAX - view.rate);
                    if slowest.len() < max {
                        slowest.push(std::cmp::Reverse((key.0, key.1, leechers.len())));
                        leechers.push(view);
                    } else if let Some(std::cmp::Reverse(low)) = slowest.peek().copied() {
                        if (key.0, key.1) > (low.0, low.1) {
                            slowest.pop();
                            leechers[low.2] = view;
                            slowest.push(std::cmp::Reverse((key.0, key.1, low.2)));
                        }
                    }
                }
            }
        }
        leechers.sort_by(|a, b| b.left.cmp(&a.left).then(a.rate.cmp(&b.rate)));
        out.extend(leechers);
        let room = max.saturating_sub(out.len());
        out.extend(seeds.into_iter().take(room));
        total
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;

    fn store() -> Store {
        Store::new(
            StoreConfig {
                rng_seed: Some(1),
                interval: 100,
                grace: 10,
                ..StoreConfig::default()
            },
            ConnectionIds::with_key(1, 60),
        )
    }

    fn announce(s: &mut Store, peer: u8, rack: u16, left: u64, now: u64) -> AnnounceOut {
        let req = AnnounceIn {
            info_hash: [7; 20],
            peer_id: [peer; 20],
            addr: SocketAddr::from(([10, 0, 0, peer], 5000)),
            ip: None,
            port: 6881,
            event: Event::None,
            left,
            downloaded: 1,
            numwant: 0,
            place: Place { dc: 1, rack },
        };
        s.announce(&req, now, &mut Vec::new()).unwrap()
    }

    #[test]
    fn summary_counts_seeds_and_leechers_per_place() {
        for flat_max in [0, 128] {
            let mut s = store();
            s.config.flat_max = flat_max;
            announce(&mut s, 1, 1, 0, 1000);
            announce(&mut s, 2, 1, 5 << 20, 1000);
            announce(&mut s, 3, 2, 0, 1000);
            let sum = s.summary(&[7; 20], 1000).unwrap();
            assert_eq!((sum.seeders, sum.leechers), (2, 1));
            assert_eq!(
                sum.places,
                vec![
                    PlaceCounts {
                        place: Place { dc: 1, rack: 1 },
                        seeders: 1,
                        leechers: 1
                    },
                    PlaceCounts {
                        place: Place { dc: 1, rack: 2 },
                        seeders: 1,
                        leechers: 0
                    },
                ],
                "flat_max {flat_max}"
            );
            assert!(s.summary(&[8; 20], 1000).is_none());
        }
    }

    #[test]
    fn a_peer_keeps_its_left_and_the_rate_between_its_announces() {
        let mut s = store();
        announce(&mut s, 1, 1, 100 << 20, 1000);
        announce(&mut s, 1, 1, 60 << 20, 1010); // 40 MiB in 10 s
        let mut out = Vec::new();
        assert_eq!(s.peer_views(&[7; 20], 1012, 10, &mut out), 1);
        assert_eq!(out[0].left, 60 << 20);
        assert_eq!(out[0].rate, 4 << 20);
        assert_eq!(out[0].age_secs, 2);
        // Two announces in one second keep the rate; completion reads left 0.
        announce(&mut s, 1, 1, 0, 1010);
        s.peer_views(&[7; 20], 1012, 10, &mut out);
        assert!(out[0].is_seed());
        assert_eq!(out[0].rate, 4 << 20);
        // A stalled peer reads rate 0; a few bytes left still read as not done.
        announce(&mut s, 2, 1, 1, 1000);
        announce(&mut s, 2, 1, 1, 1005);
        s.peer_views(&[7; 20], 1012, 10, &mut out);
        let p2 = out
            .iter()
            .find(|p| p.addr.ip() == std::net::Ipv4Addr::new(10, 0, 0, 2))
            .unwrap();
        assert_eq!((p2.left, p2.rate), (LEFT_UNIT, 0));
    }

    #[test]
    fn a_capped_list_keeps_the_slowest_leechers_then_seeds_and_skips_the_expired() {
        let mut s = store();
        for p in 1..=20u8 {
            announce(&mut s, p, 1, u64::from(p) << 20, 1000);
        }
        announce(&mut s, 30, 1, 0, 1000);
        announce(&mut s, 31, 1, 7 << 20, 800); // past interval + grace at 1000
        let mut out = Vec::new();
        assert_eq!(s.peer_views(&[7; 20], 1000, 5, &mut out), 21);
        let lefts: Vec<u64> = out.iter().map(|p| p.left >> 20).collect();
        assert_eq!(lefts, vec![20, 19, 18, 17, 16]);
        assert_eq!(s.peer_views(&[7; 20], 1000, 100, &mut out), 21);
        assert_eq!(out.len(), 21);
        assert!(out.last().unwrap().is_seed());
        assert_eq!(s.peer_views(&[7; 20], 1000, 0, &mut out), 21);
        assert!(out.is_empty());
    }

    #[test]
    fn an_expired_peer_is_neither_counted_nor_listed() {
        for flat_max in [0, 128] {
            let mut s = store();
            s.config.flat_max = flat_max;
            announce(&mut s, 1, 1, 0, 1000);
            announce(&mut s, 2, 1, 5 << 20, 1000);
            announce(&mut s, 3, 2, 0, 900); // ttl 110: expired at 1020, not swept
            let mut out = Vec::new();
            assert_eq!(s.peer_views(&[7; 20], 1020, 10, &mut out), 2);
            let sum = s.summary(&[7; 20], 1020).unwrap();
            assert_eq!((sum.seeders, sum.leechers), (1, 1), "flat_max {flat_max}");
            assert_eq!(sum.places.len(), 1, "rack 2's only peer expired");
            let counted: u32 = sum.places.iter().map(|p| p.seeders + p.leechers).sum();
            assert_eq!(counted as usize, out.len());
        }
    }

    #[test]
    fn a_wall_clock_stepping_back_keeps_the_peers() {
        let mut s = store();
        announce(&mut s, 1, 1, 5 << 20, 1000);
        let mut out = Vec::new();
        assert_eq!(s.peer_views(&[7; 20], 990, 10, &mut out), 1);
        assert_eq!(out[0].age_secs, 0);
        assert_eq!(s.summary(&[7; 20], 990).unwrap().leechers, 1);
    }

    #[test]
    fn downloading_peers_get_the_shorter_interval() {
        let mut s = store();
        s.config.interval = 300;
        s.config.leecher_interval = 30;
        assert_eq!(announce(&mut s, 1, 1, 5, 1000).interval, 30);
        assert_eq!(announce(&mut s, 2, 1, 0, 1000).interval, 300);
        s.config.interval = 10;
        assert_eq!(announce(&mut s, 1, 1, 5, 1001).interval, 10);
    }
}
