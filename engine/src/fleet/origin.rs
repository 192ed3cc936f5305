//! `origin`: the build machine's long-running role. It serves the feed over HTTP (the file
//! as `publish` wrote it, with an entity tag for conditional GETs) and seeds every release
//! the feed lists, picking up each publish within a fraction of a second. With the
//! tracker's HTTP address it also serves the fleet view (`/fleet.json`, the page at `/`
//! and `/fleet`; see [`super::view`]).
//!
//! Topology: the feed is the one place the operator gives it (`publish --topology`, signed
//! with the releases). The origin follows it: without a `--topology` of its own it places
//! itself and its peers by the feed's, and it serves the feed's copy at `/topology.toml`
//! (404 when the feed has none), so a tracker can take `--topology
//! http://ORIGIN/topology.toml` and the file lives nowhere else. When the feed's topology
//! moves the origin to another place, every release it seeds is announced again with it
//! (as the agent does).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::http::{Cached, HttpServer, HttpStats, Limits, Reply};
use super::publish::{source_path, Source, FEED_FILE, ORIGIN_LOCK};
use super::view::Poller;
use crate::feed::{Feed, Release};
use crate::metrics::{as_gauge, label, Metrics};
use crate::session::{
    announce_torrent, tracker_tiers, Session, SessionConfig, TorrentHandle, TorrentMode,
    TorrentSpec, TrackerPlace,
};
use crate::tracker::client::AnnouncerHandle;

/// How often the feed file is looked at.
const WATCH_EVERY: Duration = Duration::from_millis(200);
/// How soon a release that could not be seeded is tried again (doubling each time).
const RETRY_EVERY: Duration = Duration::from_secs(10);
const RETRY_MAX: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{0}: another origin already serves this directory")]
    Busy(PathBuf),
    #[error("starting the engine: {0}")]
    Session(#[from] crate::session::SessionError),
    #[error("serving HTTP on {addr}: {err}")]
    Http {
        addr: SocketAddr,
        err: std::io::Error,
    },
}

#[derive(Clone, Debug)]
pub struct OriginConfig {
    pub dir: PathBuf,
    /// Where the feed and `/metrics` are served.
    pub http: SocketAddr,
    /// What the feed server allows each client.
    pub http_limits: Limits,
    /// The engine; its `listen` is where peers reach the origin.
    pub session: SessionConfig,
    /// Trackers besides each torrent's own.
    pub trackers: Vec<String>,
    pub place: TrackerPlace,
    /// The tracker's HTTP address (`http://HOST:PORT`, its `--metrics` port) for the fleet
    /// view at `/fleet.json` and `/`; `None`: the view says it has no tracker.
    pub tracker_http: Option<String>,
}

struct Seeding {
    release: Release,
    handle: TorrentHandle,
    announcer: Option<AnnouncerHandle>,
}

#[derive(Default)]
struct Served {
    /// The feed with its validators, computed once per feed (not per request); each
    /// answer shares its bytes.
    feed: Cached,
    sequence: u64,
    /// The feed's topology text, as served at `/topology.toml`.
    topology: Option<Cached>,
}

#[derive(Default)]
struct HttpCounters {
    feed_full: AtomicU64,
    feed_not_modified: AtomicU64,
}

/// A running origin; stops (saying `stopped` to the trackers) when shut down or dropped.
pub struct Origin {
    stop: Arc<AtomicBool>,
    /// Beaten by the watch loop each turn, for the watchdog.
    heartbeat: Arc<crate::heartbeat::Heartbeat>,
    watcher: Option<JoinHandle<()>>,
    http: Option<HttpServer>,
    peer_addr: Option<SocketAddr>,
    state: Arc<Mutex<Vec<(Release, crate::session::TorrentStats)>>>,
    fleet_view: Option<Poller>,
}

impl Origin {
    pub fn start(config: OriginConfig) -> Result<Origin, OriginError> {
        let dir = config.dir.clone();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |err| OriginError::Io { path, err }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let lock_path = dir.join(ORIGIN_LOCK);
        let Some(lock) = super::files::try_lock_file(&lock_path).map_err(io(&lock_path))? else {
            return Err(OriginError::Busy(dir));
        };
        let session = Session::start(config.session.clone())?;
        let peer_addr = session.listen_addr();
        let served = Arc::new(Mutex::new(Served::default()));
        let state: Arc<Mutex<Vec<(Release, crate::session::TorrentStats)>>> =
            Arc::new(Mutex::new(Vec::new()));
        let counters = Arc::new(HttpCounters::default());
        // The server starts before its stats exist to hand to the handler: they come in here.
        let http_stats: Arc<OnceLock<Arc<HttpStats>>> = Arc::default();
        let fleet_view = {
            let state = state.clone();
            Poller::start(config.tracker_http.clone(), move || {
                state
                    .lock()
                    .map(|s| s.iter().map(|(r, _)| r.clone()).collect())
                    .unwrap_or_default()
            })
            .map_err(io(&dir))?
        };
        let http = {
            let fleet_json = fleet_view.latest_handle();
            let served = served.clone();
            let state = state.clone();
            let counters = counters.clone();
            let http_stats = http_stats.clone();
            HttpServer::start(
                config.http,
                config.http_limits,
                Arc::new(move |req| match req.path {
                    "/feed.json" => {
                        let feed = served.lock().map(|s| s.feed.clone()).unwrap_or_default();
                        if feed.body.is_empty() {
                            return Reply::text(404, "nothing published yet\n");
                        }
                        let reply = Reply::cached(req, &feed, "application/json");
                        let c = if reply.status == 304 {
                            &counters.feed_not_modified
                        } else {
                            &counters.feed_full
                        };
                        c.fetch_add(1, Ordering::Relaxed);
                        reply
                    }
                    "/topology.toml" => match served.lock().ok().and_then(|s| s.topology.clone()) {
                        Some(t) => Reply::cached(req, &t, "application/toml"),
                        None => Reply::text(404, "the feed carries no topology\n"),
                    },
                    "/metrics" => Reply::metrics(origin_metrics(
                        &served,
                        &state,
                        &counters,
                        http_stats.get().map(|s| &**s),
                    )),
                    "/fleet.json" => {
                        let body = fleet_json.lock().map(|b| b.clone()).unwrap_or_default();
                        if body.is_empty() {
                            return Reply::text(503, "the fleet view is not ready yet\n");
                        }
                        Reply::json(body)
                    }
                    "/" | "/fleet" => Reply::html(super::view::PAGE),
                    _ => Reply::not_found(),
                }),
            )
            .map_err(|err| OriginError::Http {
                addr: config.http,
                err,
            })?
        };
        let _ = http_stats.set(http.stats());
        let stop = Arc::new(AtomicBool::new(false));
        let heartbeat = Arc::new(crate::heartbeat::Heartbeat::default());
        let watcher = {
            let stop = stop.clone();
            let state = state.clone();
            let beat = heartbeat.clone();
            std::thread::Builder::new()
                .name("rs-origin".into())
                .spawn(move || {
                    let _lock = lock;
                    watch(&config, session, &served, &state, &stop, &beat);
                })
                .map_err(io(&dir))?
        };
        Ok(Origin {
            stop,
            heartbeat,
            watcher: Some(watcher),
            http: Some(http),
            peer_addr,
            state,
            fleet_view: Some(fleet_view),
        })
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpServer::local_addr)
    }

    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// The watch loop's heartbeat, for the watchdog.
    pub fn heartbeat(&self) -> &crate::heartbeat::Heartbeat {
        &self.heartbeat
    }

    /// The releases seeded now, with their transfer counters.
    pub fn seeding(&self) -> Vec<(Release, crate::session::TorrentStats)> {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.watcher.take() {
            w.join().ok();
        }
        self.http.take();
        self.fleet_view.take();
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// The feed file's identity: a rewrite (rename over it) changes the inode.
fn stamp(path: &Path) -> Option<(u64, u64, i64, i64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
}

/// The feed file's bytes and modification time, both of the same file (a publish may
/// rename a new one over it at any moment).
fn read_feed(path: &Path) -> Result<(Vec<u8>, Option<std::time::SystemTime>), String> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let modified = file.metadata().and_then(|m| m.modified()).ok();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    Ok((bytes, modified))
}

fn watch(
    config: &OriginConfig,
    session: Session,
    served: &Mutex<Served>,
    state: &Mutex<Vec<(Release, crate::session::TorrentStats)>>,
    stop: &AtomicBool,
    beat: &crate::heartbeat::Heartbeat,
) {
    let feed_path = config.dir.join(FEED_FILE);
    let mut seen = None;
    let mut topology = OriginTopology::new(config);
    let mut live: Vec<Release> = Vec::new();
    let mut seeding: HashMap<[u8; 20], Seeding> = HashMap::new();
    // Releases that could not be seeded: when, and how many times in a row.
    let mut failed: HashMap<[u8; 20], (Instant, u32)> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        beat.beat();
        let now = stamp(&feed_path);
        if now != seen {
            seen = now;
            match read_feed(&feed_path).and_then(|(b, modified)| {
                Feed::read_unverified_with_topology(&b)
                    .map(|f| (b, modified, f))
                    .map_err(|e| e.to_string())
            }) {
                Ok((bytes, modified, (feed, parsed))) => {
                    tracing::info!(
                        sequence = feed.sequence,
                        releases = feed.releases.len(),
                        "feed changed"
                    );
                    let cached = Cached::new(bytes.into(), modified);
                    let topology_text = feed
                        .topology
                        .as_ref()
                        .map(|t| Cached::new(t.clone().into_bytes().into(), modified));
                    if let Ok(mut s) = served.lock() {
                        s.feed = cached;
                        s.sequence = feed.sequence;
                        s.topology = topology_text;
                    }
                    let text = feed.topology.as_deref();
                    if topology.follow(config, &session, text.zip(parsed)) {
                        reannounce(config, &session, &mut seeding, &topology.place);
                    }
                    live = feed.releases;
                    failed.clear();
                }
                Err(e) if seen.is_some() => {
                    tracing::error!(path = %feed_path.display(), err = %e, "cannot read the feed; serving the previous one")
                }
                Err(_) => {}
            }
        }
        // Seed what the feed lists; stop seeding what left it.
        let gone: Vec<[u8; 20]> = seeding
            .keys()
            .filter(|h| !live.iter().any(|r| &r.info_hash == *h))
            .copied()
            .collect();
        for hash in gone {
            if let Some(s) = seeding.remove(&hash) {
                tracing::info!(release = %s.release.label(), "left the feed; no longer seeded");
                drop(s);
                session.remove_torrent(hash, Duration::from_secs(10));
            }
        }
        for release in &live {
            // A mismatch is rechecked (read whole) on each try: back off, up to 10 minutes.
            let retry_due = failed.get(&release.info_hash).is_none_or(|(at, n)| {
                at.elapsed() >= RETRY_EVERY.saturating_mul(1 << (*n).min(6)).min(RETRY_MAX)
            });
            if seeding.contains_key(&release.info_hash) || !retry_due {
                continue;
            }
            // Checking the release's data may outlast the watchdog: a long step.
            beat.long_step(release.size);
            match start_seeding(config, &session, release, &topology.place) {
                Ok(s) => {
                    tracing::info!(release = %release.label(), "seeding");
                    failed.remove(&release.info_hash);
                    seeding.insert(release.info_hash, s);
                }
                Err(e) => {
                    tracing::error!(release = %release.label(), "cannot seed: {e}");
                    let tries = failed.get(&release.info_hash).map_or(0, |f| f.1 + 1);
                    failed.insert(release.info_hash, (Instant::now(), tries));
                }
            }
        }
        if let Ok(mut st) = state.lock() {
            *st = live
                .iter()
                .filter_map(|r| seeding.get(&r.info_hash))
                .map(|s| (s.release.clone(), s.handle.stats()))
                .collect();
        }
        std::thread::sleep(WATCH_EVERY);
    }
    seeding.clear();
    session.shutdown();
}

/// The origin's place: from its own flags, else from the feed's topology.
struct OriginTopology {
    applied: Option<String>,
    /// What the trackers are told.
    place: TrackerPlace,
}

impl OriginTopology {
    fn new(config: &OriginConfig) -> OriginTopology {
        OriginTopology {
            applied: None,
            place: config.place.clone(),
        }
    }

    /// Takes the feed's topology (its text, and the topology parsed from it when the feed
    /// was read). Returns whether the origin's place changed.
    fn follow(
        &mut self,
        config: &OriginConfig,
        session: &Session,
        topology: Option<(&str, crate::tracker::topology::Topology)>,
    ) -> bool {
        let configured = &config.session.locator;
        let text = topology.as_ref().map(|(t, _)| *t);
        if configured.topology().is_some() || self.applied.as_deref() == text {
            return false;
        }
        self.applied = text.map(str::to_owned);
        let before = self.place.clone();
        let Some((_, topology)) = topology else {
            session.set_locator((**configured).clone());
            self.place = config.place.clone();
            return self.place != before;
        };
        let targets: Vec<String> = config
            .trackers
            .iter()
            .filter_map(|u| super::place::url_host_port(u))
            .collect();
        let found = super::place::own_ip(session.listen_addr(), &targets)
            .map(|ip| super::place::place_of(&topology, ip))
            .unwrap_or_default();
        self.place = super::place::tracker_place(&config.place, &found);
        tracing::info!(
            dc = self.place.dc.as_deref().unwrap_or("-"),
            rack = self.place.rack.as_deref().unwrap_or("-"),
            "placed by the feed's topology"
        );
        session.set_locator(crate::session::Locator::new(
            Some(topology),
            configured.stated().clone(),
        ));
        self.place != before
    }
}

/// Announces every seeded release again with `place`. The old announcers say `stopped`
/// first (all at once, each within its stop timeout): a tracker that heard `stopped` after
/// the new `started` would forget the origin.
fn reannounce(
    config: &OriginConfig,
    session: &Session,
    seeding: &mut HashMap<[u8; 20], Seeding>,
    place: &TrackerPlace,
) {
    if seeding.is_empty() {
        return;
    }
    let old: Vec<AnnouncerHandle> = seeding
        .values_mut()
        .filter_map(|s| s.announcer.take())
        .collect();
    std::thread::scope(|scope| {
        for a in old {
            scope.spawn(move || a.stop());
        }
    });
    for s in seeding.values_mut() {
        s.announcer = announcer(config, session, &s.release, &s.handle, place);
    }
    tracing::info!(
        releases = seeding.len(),
        "announced again with the new place"
    );
}

/// Announces `handle` to its trackers and the configured ones as `place` (None: no tracker
/// or no listening address).
fn announcer(
    config: &OriginConfig,
    session: &Session,
    release: &Release,
    handle: &TorrentHandle,
    place: &TrackerPlace,
) -> Option<AnnouncerHandle> {
    let meta = release.parse_metainfo().ok()?;
    let tiers = tracker_tiers(&meta, &config.trackers);
    let own = session.listen_addr()?;
    (!tiers.is_empty()).then(|| announce_torrent(handle, tiers, session.peer_id(), own, place))
}

fn start_seeding(
    config: &OriginConfig,
    session: &Session,
    release: &Release,
    place: &TrackerPlace,
) -> Result<Seeding, String> {
    let meta = Arc::new(release.parse_metainfo().map_err(|e| e.to_string())?);
    let source_file = source_path(&config.dir, &release.info_hash);
    let source: Source = std::fs::read(&source_file)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| format!("{}: {e}", source_file.display()))?;
    let handle = session
        .add_torrent(TorrentSpec {
            metainfo: meta.clone(),
            dest: source.dest,
            mode: TorrentMode::Seed,
            peers: Vec::new(),
            resident: false,
        })
        .map_err(|e| e.to_string())?;
    Ok(Seeding {
        announcer: announcer(config, session, release, &handle, place),
        release: release.clone(),
        handle,
    })
}

fn origin_metrics(
    served: &Mutex<Served>,
    state: &Mutex<Vec<(Release, crate::session::TorrentStats)>>,
    counters: &HttpCounters,
    http: Option<&HttpStats>,
) -> String {
    let mut e = Metrics::new();
    let sequence = served.lock().map(|s| s.sequence).unwrap_or(0);
    e.gauge(
        "ringswarm_feed_sequence",
        "Sequence number of the feed served.",
        as_gauge(sequence),
    );
    e.counter_family(
        "ringswarm_feed_requests_total",
        "Feed requests answered, whole or not modified.",
        &[
            (
                label("answer", "full"),
                counters.feed_full.load(Ordering::Relaxed),
            ),
            (
                label("answer", "not_modified"),
                counters.feed_not_modified.load(Ordering::Relaxed),
            ),
        ],
    );
    let stats: Vec<_> = state.lock().map(|s| s.clone()).unwrap_or_default();
    super::agent::write_transfer_metrics(&mut e, stats.iter().map(|(_, s)| s));
    e.gauge(
        "ringswarm_releases_seeded",
        "Releases being seeded.",
        as_gauge(stats.len() as u64),
    );
    if let Some(http) = http {
        http.write_metrics(&mut e);
    }
    e.finish()
}
