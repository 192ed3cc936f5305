//! The fleet view's JSON of a running tracker (`/swarms.json`, `/swarm/HEX.json` on its
//! HTTP port; the format and the caps are `fleet::view`'s).

use super::{now_secs, shard_of, TrackerServer};
use crate::fleet::view::{
    PeerJson, PlaceJson, SwarmJson, SwarmsJson, TRACKER_MAX_PEERS, TRACKER_MAX_TORRENTS,
};
use crate::tracker::store::{InfoHash, SwarmSummary};
use crate::tracker::topology::{Place, Topology};

fn names(t: Option<&Topology>, p: Place) -> (String, String) {
    let dc = t.and_then(|t| t.dc_name(p.dc)).unwrap_or("");
    let rack = t.and_then(|t| t.rack_name(p.rack)).map_or("", |(_, r)| r);
    (dc.to_owned(), rack.to_owned())
}

fn summary_json(t: Option<&Topology>, s: &SwarmSummary) -> SwarmJson {
    SwarmJson {
        info_hash: crate::hex(&s.info_hash),
        seeders: s.seeders,
        leechers: s.leechers,
        completed: s.completed,
        places: s
            .places
            .iter()
            .map(|c| {
                let (dc, rack) = names(t, c.place);
                PlaceJson {
                    dc,
                    rack,
                    seeders: c.seeders,
                    leechers: c.leechers,
                }
            })
            .collect(),
        ..SwarmJson::default()
    }
}

impl TrackerServer {
    /// One torrent: counts per place and at most [`TRACKER_MAX_PEERS`] peers (the slowest
    /// downloading first, then seeds); `None` when it is not tracked.
    pub fn swarm_json(&self, info_hash: &InfoHash) -> Option<SwarmJson> {
        let shard = self.shards.get(shard_of(info_hash, self.shards.len()))?;
        let mut peers = Vec::new();
        let (summary, total) = {
            let store = shard.lock().ok()?;
            let now = now_secs();
            let summary = store.summary(info_hash, now)?;
            let total = store.peer_views(info_hash, now, TRACKER_MAX_PEERS, &mut peers);
            (summary, total)
        };
        let topology = self.topology.read().ok();
        let t = topology.as_deref();
        let mut json = summary_json(t, &summary);
        json.peers = peers
            .iter()
            .map(|p| {
                let (dc, rack) = names(t, p.place);
                PeerJson {
                    addr: p.addr.to_string(),
                    dc,
                    rack,
                    left: p.left,
                    rate: p.rate,
                    age: p.age_secs,
                }
            })
            .collect();
        json.peers_total = total;
        json.peers_truncated = total > json.peers.len();
        Some(json)
    }

    /// Counts per place of the tracked torrents: the first [`TRACKER_MAX_TORRENTS`] by
    /// info-hash.
    pub fn swarms_json(&self) -> SwarmsJson {
        let mut hashes: Vec<InfoHash> = Vec::new();
        for shard in self.shards.iter() {
            if let Ok(s) = shard.lock() {
                hashes.extend(s.info_hashes().copied());
            }
        }
        let total = hashes.len();
        hashes.sort_unstable();
        hashes.truncate(TRACKER_MAX_TORRENTS);
        let now = now_secs();
        let summaries: Vec<SwarmSummary> = hashes
            .iter()
            .filter_map(|h| {
                let shard = self.shards.get(shard_of(h, self.shards.len()))?;
                shard.lock().ok()?.summary(h, now)
            })
            .collect();
        let topology = self.topology.read().ok();
        SwarmsJson {
            torrents: summaries
                .iter()
                .map(|s| summary_json(topology.as_deref(), s))
                .collect(),
            torrents_total: total,
            truncated: total > TRACKER_MAX_TORRENTS,
        }
    }
}
