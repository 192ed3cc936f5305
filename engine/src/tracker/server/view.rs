//! The fleet view's JSON of a running tracker (`/swarms.json`, `/swarm/HEX.json` on its
//! HTTP port; the format and the caps are `fleet::view`'s).
//!
//! Building one torrent's answer walks its peers under its shard's lock (the workers wait
//! meanwhile), so each answer is kept for [`ANSWER_TTL`] ([`AnswerCache`]): a page or a
//! few origins polling every second cost one walk a second per torrent, not one per
//! request. The answers list every peer's address: the port must stay inside the fleet.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// How long an answer is served again before it is built anew.
pub const ANSWER_TTL: Duration = Duration::from_secs(1);
/// Answers kept at most (one per torrent asked about, and the `/swarms.json` one).
const CACHED_ANSWERS: usize = 64;

/// The tracker's recent fleet-view answers.
#[derive(Default)]
pub struct Answers {
    swarm: AnswerCache<InfoHash, SwarmJson>,
    swarms: AnswerCache<(), SwarmsJson>,
}

/// Recent answers by key, each with when it was built; bounded, the oldest dropped first.
struct AnswerCache<K, T> {
    answers: Mutex<HashMap<K, (Instant, T)>>,
}

impl<K, T> Default for AnswerCache<K, T> {
    fn default() -> Self {
        AnswerCache {
            answers: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Copy + Eq + std::hash::Hash, T: Clone> AnswerCache<K, T> {
    /// The answer for `key` built within [`ANSWER_TTL`] of `now`, else `build`'s (kept when
    /// `Some`). `build` runs without the cache's lock held.
    fn get_or_build(&self, key: K, now: Instant, build: impl FnOnce() -> Option<T>) -> Option<T> {
        let fresh = |at: Instant| now.saturating_duration_since(at) < ANSWER_TTL;
        if let Ok(answers) = self.answers.lock() {
            if let Some((at, answer)) = answers.get(&key) {
                if fresh(*at) {
                    return Some(answer.clone());
                }
            }
        }
        let answer = build()?;
        if let Ok(mut answers) = self.answers.lock() {
            answers.retain(|_, (at, _)| fresh(*at));
            if answers.len() >= CACHED_ANSWERS {
                let oldest = answers
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(k, _)| *k);
                if let Some(oldest) = oldest {
                    answers.remove(&oldest);
                }
            }
            answers.insert(key, (now, answer.clone()));
        }
        Some(answer)
    }
}

impl TrackerServer {
    /// One torrent: counts per place and at most [`TRACKER_MAX_PEERS`] peers (the slowest
    /// downloading first, then seeds); `None` when it is not tracked. Kept for
    /// [`ANSWER_TTL`].
    pub fn swarm_json(&self, info_hash: &InfoHash) -> Option<SwarmJson> {
        self.answers
            .swarm
            .get_or_build(*info_hash, Instant::now(), || {
                self.build_swarm_json(info_hash)
            })
    }

    fn build_swarm_json(&self, info_hash: &InfoHash) -> Option<SwarmJson> {
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
    /// info-hash. Kept for [`ANSWER_TTL`].
    pub fn swarms_json(&self) -> SwarmsJson {
        self.answers
            .swarms
            .get_or_build((), Instant::now(), || Some(self.build_swarms_json()))
            .unwrap_or_default()
    }

    fn build_swarms_json(&self) -> SwarmsJson {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_built_once_a_second_and_the_cache_is_bounded() {
        let cache: AnswerCache<[u8; 20], u32> = AnswerCache::default();
        let builds = std::cell::Cell::new(0);
        let build = |n: u32| {
            builds.set(builds.get() + 1);
            Some(n)
        };
        let t0 = Instant::now();
        assert_eq!(cache.get_or_build([1; 20], t0, || build(1)), Some(1));
        let soon = t0 + ANSWER_TTL / 2;
        assert_eq!(cache.get_or_build([1; 20], soon, || build(2)), Some(1));
        assert_eq!(builds.get(), 1, "served from the cache");
        let later = t0 + ANSWER_TTL;
        assert_eq!(cache.get_or_build([1; 20], later, || build(3)), Some(3));
        // A torrent not tracked is not kept: asked again, it is looked up again.
        assert_eq!(cache.get_or_build([2; 20], later, || None), None);
        assert_eq!(cache.get_or_build([2; 20], later, || build(4)), Some(4));
        for i in 0..=CACHED_ANSWERS as u8 {
            cache.get_or_build([i + 10; 20], later, || build(5));
        }
        assert!(cache.answers.lock().unwrap().len() <= CACHED_ANSWERS);
    }
}
