//! The fleet view: which host runs which release, per datacenter and rack.
//!
//! The tracker knows every peer of every torrent (its place, `left` and rate, see
//! `tracker::store::view`) and serves it as JSON on its HTTP port ([`SwarmJson`] at
//! `/swarm/HEX.json`, [`SwarmsJson`] at `/swarms.json`). The origin knows which torrent is
//! which release (its feed). [`Poller`] fetches the tracker's JSON for every release the
//! origin seeds every [`POLL_EVERY`]; [`aggregate`] (pure, unit-tested) joins the two into
//! a [`FleetView`], served as `/fleet.json` and drawn by the page at `/` ([`PAGE`]).
//!
//! # Definitions
//!
//! - A **host** is a peer address (`IP:port`) as the tracker stores it. The origin is one
//!   too: it counts as a done host in its own place.
//! - **Live releases**: of the releases the origin seeds (a release it cannot seed, its
//!   files missing say, is not polled and not shown), per name the newest (the last of
//!   them in the feed), and every older one while some host still announces it (a host besides the origin, which seeds its whole feed: a
//!   downloading peer, or at least two peers).
//! - **done**: the host announced `left = 0`; **downloading**: `left > 0` (progress is
//!   `1 − left / size`, `size` from the feed).
//! - **missing** (of the newest release R named N): a host seen by the tracker on any
//!   release of N within [`MISSING_WINDOW`] (remembered by the origin across polls,
//!   [`Memory`]) that is not on R now. A host gone from every release of N for longer is
//!   decommissioned and no longer listed. An older release has no missing hosts: a host
//!   that moved on to the newest, or joined after it, lacks nothing.
//! - **rate**: the drop of `left` between a host's last two announces over the time
//!   between them (the tracker answers downloading peers every 30 s, seeds every
//!   interval); throughput is the sum over downloading hosts.
//!
//! # Size
//!
//! The tracker lists at most [`TRACKER_MAX_PEERS`] peers of a torrent (the slowest first,
//! then seeds), so neither answer grows with a huge swarm; counts per place stay exact.
//! When a list was capped, `peers_truncated` says so and "missing" is counted per place
//! as known hosts minus listed ones. The view lists at most [`MAX_HOSTS_SHOWN`] hosts per
//! release (slowest first) and the [`SLOWEST_SHOWN`] slowest downloading hosts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::feed::Release;

/// The page at `/` and `/fleet`: one HTML file with its script and styles inlined at
/// build time (no CDN, no build step).
pub const PAGE: &str = concat!(
    include_str!("view/head.html"),
    "<style>\n",
    include_str!("view/page.css"),
    "</style>\n<script>\n",
    include_str!("view/page.js"),
    "</script>\n",
    include_str!("view/body.html"),
);

/// How often the origin asks the tracker.
pub const POLL_EVERY: Duration = Duration::from_secs(2);
/// How long a host that left every release of a name still counts as missing.
pub const MISSING_WINDOW: Duration = Duration::from_secs(600);
/// Peers of one torrent the tracker lists at most in one answer.
pub const TRACKER_MAX_PEERS: usize = 5000;
/// Torrents `/swarms.json` lists at most.
pub const TRACKER_MAX_TORRENTS: usize = 1000;
/// Hosts of one release listed in the view at most.
pub const MAX_HOSTS_SHOWN: usize = 200;
/// Slowest downloading hosts listed per release.
pub const SLOWEST_SHOWN: usize = 5;
/// Largest tracker answer the origin reads.
const MAX_ANSWER_BYTES: u64 = 16 << 20;

// ---------------------------------------------------------------------------------------
// The tracker's JSON

/// One place's peers in a torrent, as the tracker serves it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceJson {
    pub dc: String,
    pub rack: String,
    pub seeders: u32,
    pub leechers: u32,
}

/// One peer of a torrent, as the tracker serves it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerJson {
    pub addr: String,
    pub dc: String,
    pub rack: String,
    /// Bytes left at its last announce (0: done).
    pub left: u64,
    /// Bytes/s between its last two announces.
    pub rate: u64,
    /// Seconds since its last announce.
    pub age: u32,
}

/// `/swarm/HEX.json` (with `peers`) and the entries of `/swarms.json` (without).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmJson {
    pub info_hash: String,
    pub seeders: u32,
    pub leechers: u32,
    pub completed: u32,
    #[serde(default)]
    pub places: Vec<PlaceJson>,
    #[serde(default)]
    pub peers: Vec<PeerJson>,
    /// Live peers in all; more than `peers.len()` when the list was capped.
    #[serde(default)]
    pub peers_total: usize,
    #[serde(default)]
    pub peers_truncated: bool,
}

/// `/swarms.json`: the torrents tracked (at most [`TRACKER_MAX_TORRENTS`], by info-hash).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmsJson {
    pub torrents: Vec<SwarmJson>,
    pub torrents_total: usize,
    pub truncated: bool,
}

// ---------------------------------------------------------------------------------------
// The view

/// `/fleet.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetView {
    pub generated_ms: u64,
    /// The tracker's HTTP address asked, if any.
    pub tracker: Option<String>,
    /// Why the tracker could not be read (the view is then empty or stale).
    pub error: Option<String>,
    /// Bytes/s over every downloading host of every release.
    pub throughput: u64,
    pub releases: Vec<ReleaseView>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReleaseView {
    pub name: String,
    pub version: String,
    pub info_hash: String,
    pub size: u64,
    pub published_ms: u64,
    /// The newest release of its name.
    pub newest: bool,
    pub done: u32,
    pub downloading: u32,
    pub missing: u32,
    /// Bytes/s over its downloading hosts.
    pub rate: u64,
    pub places: Vec<PlaceView>,
    /// The slowest downloading hosts (least progress, then lowest rate).
    pub slowest: Vec<HostView>,
    /// Hosts, slowest first: downloading, missing, done (at most [`MAX_HOSTS_SHOWN`]).
    pub hosts: Vec<HostView>,
    pub hosts_truncated: bool,
    /// The tracker capped its peer list: counts per place stay exact, `hosts` is partial.
    pub peers_truncated: bool,
    /// Why this release's swarm could not be fetched this round. The counts shown are
    /// then those of `swarm_fetched_ms` (none when it was never fetched), and no host is
    /// counted missing: a swarm not fetched says nothing of who left it.
    #[serde(default)]
    pub error: Option<String>,
    /// When the swarm shown was fetched, when that was not this round.
    #[serde(default)]
    pub swarm_fetched_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceView {
    pub dc: String,
    pub rack: String,
    pub done: u32,
    pub downloading: u32,
    pub missing: u32,
}

/// Ordered as listed: slowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostState {
    Downloading,
    Missing,
    Done,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    pub addr: String,
    pub dc: String,
    pub rack: String,
    pub state: HostState,
    /// 0..=1 (0 for a missing host).
    pub progress: f64,
    pub rate: u64,
    pub left: u64,
}

/// What the poller keeps across rounds: the hosts seen per release name ((name, address)
/// → (dc, rack, last seen ms)), and each release's last swarm fetched (with when), shown
/// while the tracker cannot be read.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    seen: HashMap<(String, String), (String, String, u64)>,
    last_swarms: HashMap<[u8; 20], (SwarmJson, u64)>,
}

impl Memory {
    /// Notes every peer of every release in `swarms` at `now_ms`, and forgets hosts not
    /// seen on any release of their name for [`MISSING_WINDOW`].
    pub fn note(
        &mut self,
        releases: &[Release],
        swarms: &HashMap<[u8; 20], SwarmJson>,
        now_ms: u64,
    ) {
        for r in releases {
            let Some(s) = swarms.get(&r.info_hash) else {
                continue;
            };
            for p in &s.peers {
                self.seen.insert(
                    (r.name.clone(), p.addr.clone()),
                    (p.dc.clone(), p.rack.clone(), now_ms),
                );
            }
        }
        let window = MISSING_WINDOW.as_millis() as u64;
        self.seen
            .retain(|_, (_, _, last)| now_ms.saturating_sub(*last) <= window);
        for (hash, s) in swarms {
            self.last_swarms.insert(*hash, (s.clone(), now_ms));
        }
        self.last_swarms
            .retain(|hash, _| releases.iter().any(|r| &r.info_hash == hash));
    }

    /// The hosts known for `name`: address → (dc, rack).
    fn hosts_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a str, &'a str, &'a str)> {
        self.seen
            .iter()
            .filter(move |((n, _), _)| n == name)
            .map(|((_, a), (dc, rack, _))| (a.as_str(), dc.as_str(), rack.as_str()))
    }
}

type Places = BTreeMap<(String, String), PlaceView>;

fn place_entry<'a>(places: &'a mut Places, dc: &str, rack: &str) -> &'a mut PlaceView {
    places
        .entry((dc.to_owned(), rack.to_owned()))
        .or_insert_with(|| PlaceView {
            dc: dc.to_owned(),
            rack: rack.to_owned(),
            ..PlaceView::default()
        })
}

fn progress(size: u64, left: u64) -> f64 {
    if size == 0 {
        return 1.0;
    }
    1.0 - left.min(size) as f64 / size as f64
}

/// The releases shown: per name the newest of `releases` (the last listed: the poller
/// lists the releases the origin seeds, in feed order), and older ones while a
/// host announces them: a downloading one, or a second seed besides the origin (which
/// seeds every release of its feed). In feed order.
fn live<'a>(
    releases: &'a [Release],
    swarms: &HashMap<[u8; 20], SwarmJson>,
) -> Vec<(&'a Release, bool)> {
    let newest: HashMap<&str, &[u8; 20]> = releases
        .iter()
        .map(|r| (r.name.as_str(), &r.info_hash))
        .collect();
    releases
        .iter()
        .filter_map(|r| {
            let is_newest = newest.get(r.name.as_str()) == Some(&&r.info_hash);
            // The origin seeds every release of its feed: it alone does not count.
            let running = swarms
                .get(&r.info_hash)
                .is_some_and(|s| s.peers_total > 1 || s.leechers > 0);
            (is_newest || running).then_some((r, is_newest))
        })
        .collect()
}

/// Joins the feed's releases with the tracker's swarms (and the hosts remembered) into the
/// view. Pure: the caller fetches, remembers ([`Memory::note`] first) and times. Every
/// swarm is taken as fetched this round; see [`aggregate_with_failures`].
pub fn aggregate(
    releases: &[Release],
    swarms: &HashMap<[u8; 20], SwarmJson>,
    memory: &Memory,
    now_ms: u64,
) -> FleetView {
    aggregate_with_failures(releases, swarms, &HashMap::new(), memory, now_ms)
}

/// A release whose swarm could not be fetched this round: why, and when the swarm in
/// hand (if any) was.
#[derive(Clone, Debug)]
pub struct NotFetched {
    pub error: String,
    pub fetched_ms: Option<u64>,
}

/// [`aggregate`], where the swarms of the releases in `failed` are not this round's (an
/// older one, or none): they are shown with the error, and count no host missing.
pub fn aggregate_with_failures(
    releases: &[Release],
    swarms: &HashMap<[u8; 20], SwarmJson>,
    failed: &HashMap<[u8; 20], NotFetched>,
    memory: &Memory,
    now_ms: u64,
) -> FleetView {
    let empty = SwarmJson::default();
    let mut view = FleetView {
        generated_ms: now_ms,
        ..FleetView::default()
    };
    for (r, newest) in live(releases, swarms) {
        let swarm = swarms.get(&r.info_hash).unwrap_or(&empty);
        let not_fetched = failed.get(&r.info_hash);
        let mut places = Places::new();
        for p in &swarm.places {
            let v = place_entry(&mut places, &p.dc, &p.rack);
            v.done += p.seeders;
            v.downloading += p.leechers;
        }
        let mut hosts: Vec<HostView> = swarm
            .peers
            .iter()
            .map(|p| HostView {
                addr: p.addr.clone(),
                dc: p.dc.clone(),
                rack: p.rack.clone(),
                state: if p.left == 0 {
                    HostState::Done
                } else {
                    HostState::Downloading
                },
                progress: progress(r.size, p.left),
                rate: if p.left == 0 { 0 } else { p.rate },
                left: p.left,
            })
            .collect();
        let listed: HashSet<&str> = swarm.peers.iter().map(|p| p.addr.as_str()).collect();
        let known: Vec<(&str, &str, &str)> = memory.hosts_of(&r.name).collect();
        if not_fetched.is_some() {
            // Who left a swarm not seen this round is not known: nobody is missing.
        } else if !newest {
            // A host not on an older release is on the newest one or on its way there.
        } else if swarm.peers_truncated {
            // Not every host on the release is listed: per place, known minus counted.
            let mut known_per_place: HashMap<(&str, &str), u32> = HashMap::new();
            for (_, dc, rack) in &known {
                *known_per_place.entry((dc, rack)).or_default() += 1;
            }
            for ((dc, rack), n) in known_per_place {
                let v = place_entry(&mut places, dc, rack);
                v.missing = n.saturating_sub(v.done + v.downloading);
            }
        } else {
            for (addr, dc, rack) in known.into_iter().filter(|(a, _, _)| !listed.contains(a)) {
                place_entry(&mut places, dc, rack).missing += 1;
                hosts.push(HostView {
                    addr: addr.to_owned(),
                    dc: dc.to_owned(),
                    rack: rack.to_owned(),
                    state: HostState::Missing,
                    progress: 0.0,
                    rate: 0,
                    left: r.size,
                });
            }
        }
        hosts.sort_by(|a, b| {
            a.state
                .cmp(&b.state)
                .then(a.progress.total_cmp(&b.progress))
                .then(a.rate.cmp(&b.rate))
                .then(a.addr.cmp(&b.addr))
        });
        let places: Vec<PlaceView> = places.into_values().collect();
        let rate: u64 = hosts
            .iter()
            .filter(|h| h.state == HostState::Downloading)
            .map(|h| h.rate)
            .sum();
        view.throughput += rate;
        let slowest = hosts
            .iter()
            .filter(|h| h.state == HostState::Downloading)
            .take(SLOWEST_SHOWN)
            .cloned()
            .collect();
        let hosts_truncated = hosts.len() > MAX_HOSTS_SHOWN;
        hosts.truncate(MAX_HOSTS_SHOWN);
        view.releases.push(ReleaseView {
            name: r.name.clone(),
            version: r.version.clone(),
            info_hash: crate::hex(&r.info_hash),
            size: r.size,
            published_ms: r.published_ms,
            newest,
            done: places.iter().map(|p| p.done).sum(),
            downloading: places.iter().map(|p| p.downloading).sum(),
            missing: places.iter().map(|p| p.missing).sum(),
            rate,
            places,
            slowest,
            hosts,
            hosts_truncated,
            peers_truncated: swarm.peers_truncated,
            error: not_fetched.map(|f| f.error.clone()),
            swarm_fetched_ms: not_fetched.and_then(|f| f.fetched_ms),
        });
    }
    view
}

// ---------------------------------------------------------------------------------------
// Fetching

/// GETs `url` (a body of at most 16 MiB, `timeout` in all): the body of a 200, else an
/// error line ([`super::http::http_get_bounded`]).
pub fn http_get(url: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    super::http::http_get_bounded(url, timeout, MAX_ANSWER_BYTES).map_err(|e| e.to_string())
}

/// Longest a round spends asking the tracker: past it, the releases not asked yet keep
/// their last swarm (a tracker that accepts but never answers costs one timeout a round,
/// not one per release).
const ROUND_BUDGET: Duration = Duration::from_secs(4);

/// One round: fetches each release's swarm from the tracker at `tracker` (`http://HOST:PORT`),
/// notes the hosts, and builds the view. A release whose fetch fails keeps its last swarm
/// (with the error and its age) and counts nobody missing; the view's `error` is the first
/// failure.
pub fn poll_once(
    tracker: Option<&str>,
    releases: &[Release],
    memory: &mut Memory,
    now_ms: u64,
) -> FleetView {
    let mut swarms = HashMap::new();
    let mut failed: HashMap<[u8; 20], NotFetched> = HashMap::new();
    let mut error = None;
    let started = std::time::Instant::now();
    // Newest first (the feed lists it last): when a slow tracker ends the round early, the
    // release with the missing hosts is the one asked.
    for r in releases.iter().rev() {
        let fetched = match tracker {
            None => Err("no tracker_http configured: the origin cannot see the hosts".to_owned()),
            Some(_) if started.elapsed() > ROUND_BUDGET => Err(format!(
                "not asked: the tracker took over {} s this round",
                ROUND_BUDGET.as_secs()
            )),
            Some(base) => {
                let url = format!(
                    "{}/swarm/{}.json",
                    base.trim_end_matches('/'),
                    crate::hex(&r.info_hash)
                );
                http_get(&url, POLL_EVERY).and_then(|b| {
                    serde_json::from_slice::<SwarmJson>(&b).map_err(|e| format!("{url}: {e}"))
                })
            }
        };
        match fetched {
            Ok(s) => {
                swarms.insert(r.info_hash, s);
            }
            Err(e) => {
                error.get_or_insert_with(|| e.clone());
                failed.insert(
                    r.info_hash,
                    NotFetched {
                        error: e,
                        fetched_ms: None,
                    },
                );
            }
        }
    }
    memory.note(releases, &swarms, now_ms);
    for (hash, f) in &mut failed {
        if let Some((s, at)) = memory.last_swarms.get(hash) {
            swarms.insert(*hash, s.clone());
            f.fetched_ms = Some(*at);
        }
    }
    let mut view = aggregate_with_failures(releases, &swarms, &failed, memory, now_ms);
    view.tracker = tracker.map(str::to_owned);
    if tracker.is_none() {
        error = Some("no tracker_http configured: the origin cannot see the hosts".into());
    }
    view.error = error;
    view
}

/// The origin's background poller: every [`POLL_EVERY`] it reads the releases from
/// `releases`, asks the tracker, and keeps the view's JSON for `/fleet.json`.
pub struct Poller {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    latest: Arc<Mutex<Bytes>>,
}

impl Poller {
    pub fn start(
        tracker: Option<String>,
        releases: impl Fn() -> Vec<Release> + Send + 'static,
    ) -> std::io::Result<Poller> {
        let stop = Arc::new(AtomicBool::new(false));
        let latest = Arc::new(Mutex::new(Bytes::new()));
        let thread = {
            let stop = stop.clone();
            let latest = latest.clone();
            std::thread::Builder::new()
                .name("rs-fleet-view".into())
                .spawn(move || {
                    let mut memory = Memory::default();
                    while !stop.load(Ordering::Relaxed) {
                        let view = poll_once(
                            tracker.as_deref(),
                            &releases(),
                            &mut memory,
                            super::now_ms(),
                        );
                        let json = serde_json::to_vec(&view).unwrap_or_default();
                        if let Ok(mut l) = latest.lock() {
                            *l = Bytes::from(json);
                        }
                        // Sleep in slices so a shutdown waits at most one.
                        for _ in 0..20 {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            std::thread::sleep(POLL_EVERY / 20);
                        }
                    }
                })?
        };
        Ok(Poller {
            stop,
            thread: Some(thread),
            latest,
        })
    }

    /// The latest view as JSON (empty before the first round).
    pub fn latest(&self) -> Bytes {
        self.latest.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// A handle on the latest JSON, for an HTTP handler.
    pub fn latest_handle(&self) -> Arc<Mutex<Bytes>> {
        self.latest.clone()
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().ok();
        }
    }
}

#[cfg(test)]
mod tests;
