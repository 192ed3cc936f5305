//! Announcing a session's torrent to its trackers, and feeding the peers they return to
//! the torrent.
//!
//! The tracker list is `--tracker` URLs first, each a tier of its own, then the metainfo's
//! announce-list tiers (BEP 12), or its `announce` when there is no list; a URL already
//! listed is not listed again. Every tier is announced to (the fleet's trackers do not
//! share state), by [`crate::tracker::client::spawn_announcer`].
//!
//! A tracker repeats most of its list on every re-announce. Connecting again to a peer we
//! already hold costs a TCP handshake before the duplicate is noticed, so an address is
//! handed to the torrent again only after [`REOFFER_AFTER`]: often enough to re-dial a peer
//! whose connection died, rarely enough to cost nothing in a stable swarm.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::TorrentHandle;
use crate::metainfo::Metainfo;
use crate::tracker::client::{
    spawn_announcer, AnnounceArgs, AnnounceParams, Announcer, AnnouncerHandle, Cancel, RetryPolicy,
};
use crate::tracker::proto::Event;

/// How long before an address a tracker returned again is dialled again.
const REOFFER_AFTER: Duration = Duration::from_secs(300);
/// Remembered addresses beyond which old entries are forgotten.
const REMEMBERED: usize = 16_384;

/// Where this host stands, sent to the trackers as BEP 41 URL data (`dc=`, `rack=`) so a
/// tracker without a topology entry for our address can still place us.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackerPlace {
    pub dc: Option<String>,
    pub rack: Option<String>,
}

/// The tiers to announce to: `extra` URLs first (a tier each), then the metainfo's.
pub fn tracker_tiers(meta: &Metainfo, extra: &[String]) -> Vec<Vec<String>> {
    let mut seen = std::collections::HashSet::new();
    let mut tiers: Vec<Vec<String>> = Vec::new();
    let from_meta = if meta.announce_list.is_empty() {
        meta.announce.iter().map(|a| vec![a.clone()]).collect()
    } else {
        meta.announce_list.clone()
    };
    let extra_tiers = extra.iter().map(|u| vec![u.clone()]);
    for tier in extra_tiers.chain(from_meta) {
        let kept: Vec<String> = tier
            .into_iter()
            .filter(|u| !u.is_empty() && seen.insert(u.clone()))
            .collect();
        if !kept.is_empty() {
            tiers.push(kept);
        }
    }
    tiers
}

/// Starts announcing `handle`'s torrent to `tiers`, as a peer listening on `port` with
/// `peer_id`; the peers returned are dialled (see the module doc). The announces stop,
/// with a `stopped` event, when the returned handle is stopped or dropped.
///
/// `own` is our listening address, never dialled.
pub fn announce_torrent(
    handle: &TorrentHandle,
    tiers: Vec<Vec<String>>,
    peer_id: [u8; 20],
    own: SocketAddr,
    place: &TrackerPlace,
) -> AnnouncerHandle {
    let mut params = AnnounceParams::new(handle.info_hash(), peer_id, own.port());
    params.dc = place.dc.clone();
    params.rack = place.rack.clone();
    let intake = Mutex::new(PeerIntake::new(own));
    let dial = handle.clone();
    let stats = handle.clone();
    spawn_announcer(
        params,
        tiers,
        move |peers| {
            let fresh = intake
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .fresh(&peers, Instant::now());
            if !fresh.is_empty() {
                tracing::debug!(peers = fresh.len(), "dialling peers from the tracker");
                dial.add_peers(&fresh);
            }
        },
        move || {
            let s = stats.stats();
            let left = s.total_bytes.saturating_sub(s.verified_bytes);
            (s.downloaded_bytes, s.uploaded_bytes, left, s.complete)
        },
    )
}

/// Asks the trackers for peers once, before the torrent's metadata is known (a magnet
/// without peer addresses). Tiers are asked in order until one returns peers; each gets an
/// equal share of the time left before `deadline`, at least 5 s. The announce says
/// `started` with nothing downloaded, so the tracker hands out seeds first.
pub fn find_peers(
    tiers: Vec<Vec<String>>,
    info_hash: [u8; 20],
    peer_id: [u8; 20],
    port: u16,
    place: &TrackerPlace,
    deadline: Instant,
) -> Result<Vec<SocketAddr>, String> {
    let mut announcer = Announcer::with_place(
        tiers,
        RetryPolicy::default(),
        place.dc.as_deref(),
        place.rack.as_deref(),
    );
    let count = announcer.tier_count();
    if count == 0 {
        return Err("no usable (udp://) tracker".into());
    }
    let args = AnnounceArgs {
        info_hash,
        peer_id,
        downloaded: 0,
        // Unknown before the metadata; any non-zero value says "not a seed".
        left: 1,
        uploaded: 0,
        event: Event::Started,
        key: rand::random(),
        num_want: -1,
        port,
    };
    let mut failures = Vec::new();
    for tier in 0..count {
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        if left.is_zero() {
            failures.push(format!("tier {tier}: no time left"));
            break;
        }
        let share = (left / (count - tier) as u32).max(Duration::from_secs(5));
        let cancel = Cancel {
            stop: None,
            deadline: Some(now + share.min(left)),
        };
        match announcer.announce_tier(tier, &args, &cancel) {
            Ok(answer) if !answer.reply.peers.is_empty() => return Ok(answer.reply.peers),
            Ok(answer) => failures.push(format!("{} knows no peer yet", answer.tracker)),
            Err(e) => failures.push(e.to_string()),
        }
    }
    Err(failures.join("; "))
}

/// Which tracker-supplied addresses to dial now.
struct PeerIntake {
    own: SocketAddr,
    offered: HashMap<SocketAddr, Instant>,
}

impl PeerIntake {
    fn new(own: SocketAddr) -> PeerIntake {
        PeerIntake {
            own,
            offered: HashMap::new(),
        }
    }

    /// The addresses of `peers` not offered within [`REOFFER_AFTER`], now marked offered.
    fn fresh(&mut self, peers: &[SocketAddr], now: Instant) -> Vec<SocketAddr> {
        if self.offered.len() >= REMEMBERED {
            self.offered
                .retain(|_, at| now.saturating_duration_since(*at) < REOFFER_AFTER);
            if self.offered.len() >= REMEMBERED {
                self.offered.clear();
            }
        }
        let mut out = Vec::new();
        for &addr in peers {
            if addr == self.own || addr.port() == 0 || addr.ip().is_unspecified() {
                continue;
            }
            let due = self
                .offered
                .get(&addr)
                .is_none_or(|at| now.saturating_duration_since(*at) >= REOFFER_AFTER);
            if due {
                self.offered.insert(addr, now);
                out.push(addr);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::{FileEntry, Info};

    fn meta(announce_list: Vec<Vec<String>>) -> Metainfo {
        Metainfo::from_info(
            Info {
                name: "x".into(),
                piece_length: 16384,
                pieces: vec![[0; 20]],
                files: vec![FileEntry {
                    path: vec![],
                    length: 1,
                    offset: 0,
                    pad: false,
                }],
                multi_file: false,
                total_length: 1,
                private: false,
            },
            announce_list,
        )
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn extra_trackers_come_first_each_a_tier_without_repeats() {
        let m = meta(vec![s(&["udp://a:1", "udp://b:1"]), s(&["udp://c:1"])]);
        let tiers = tracker_tiers(&m, &s(&["udp://z:1", "udp://a:1"]));
        assert_eq!(
            tiers,
            vec![
                s(&["udp://z:1"]),
                s(&["udp://a:1"]),
                s(&["udp://b:1"]),
                s(&["udp://c:1"])
            ]
        );
        assert!(tracker_tiers(&meta(vec![]), &[]).is_empty());
        assert_eq!(
            tracker_tiers(&meta(vec![s(&["udp://a:1"])]), &[]),
            vec![s(&["udp://a:1"])]
        );
    }

    #[test]
    fn intake_skips_ourselves_and_recent_offers() {
        let own: SocketAddr = "127.0.0.1:6881".parse().unwrap();
        let a: SocketAddr = "127.0.0.2:6881".parse().unwrap();
        let b: SocketAddr = "127.0.0.3:6881".parse().unwrap();
        let mut intake = PeerIntake::new(own);
        let t0 = Instant::now();
        assert_eq!(intake.fresh(&[own, a, a], t0), vec![a]);
        assert_eq!(intake.fresh(&[a, b], t0 + Duration::from_secs(30)), vec![b]);
        assert_eq!(intake.fresh(&[a, b], t0 + REOFFER_AFTER), vec![a]);
        let zero: SocketAddr = "127.0.0.4:0".parse().unwrap();
        assert!(intake.fresh(&[zero], t0).is_empty());
    }

    #[test]
    fn intake_memory_is_bounded() {
        let own: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut intake = PeerIntake::new(own);
        let t0 = Instant::now();
        let many: Vec<SocketAddr> = (0..REMEMBERED as u32 + 10)
            .map(|i| SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 7000)))
            .collect();
        assert_eq!(intake.fresh(&many, t0).len(), many.len());
        intake.fresh(&many[..1], t0);
        assert!(intake.offered.len() <= REMEMBERED);
    }
}
