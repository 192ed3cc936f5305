//! `agent`: the daemon on every service host. It polls the signed feed, downloads the
//! newest release of each name into staging, and once every piece is verified and durable
//! moves it into `releases/`, locks it in memory if asked, flips `NAME/current` to it,
//! runs the hook, lets go of the old release, and keeps seeding what it holds. See
//! [`super::releases`] for the directory.
//!
//! Decisions:
//! - A feed that does not verify, or is older (by sequence) than the newest accepted, is
//!   rejected, logged once and counted; the releases on disk stay as they are.
//! - The newest release of a name wins: a download that a newer publish overtakes is
//!   dropped (staging removed).
//! - A release is switched in only after the engine reports it complete (every piece
//!   verified, written and fsynced); the staging directory is renamed, never copied.
//! - The torrent keeps seeding across the rename: its open files move with it.
//! - With `--lock` a download is written through the page cache and its pages are kept
//!   ([`crate::storage::Storage::open_resident`]): the release is about to be locked, so
//!   this takes no memory the lock would not, and the lock pass reads nothing back from
//!   disk (measured: 1.3-1.8 s for 256 MiB when it did, with 12 hosts on one disk).
//! - Lock budget: locking the new release must fit the budget with the old release still
//!   locked. When it does not, but the new one alone fits, the old lock is dropped first;
//!   when the new one alone does not fit, the release is switched in unlocked and the
//!   error is reported (a service is better served by new data without a lock than by
//!   old data). The agent never exceeds the budget.
//! - The feed is the truth: `NAME/current` is kept on the feed's newest release of NAME
//!   (checked every tick), so a hand-made switch is switched back. Roll back by publishing.
//! - A failed download (a full disk, say) keeps its staging directory, so a retry after
//!   [`RETRY_FAILED`] resumes it; the current release is untouched.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use super::files::write_atomic;
use super::hook::{HookSettings, Hooks};
use super::http::{FeedFetcher, Fetched, HttpServer, Reply};
use super::progress::RateMeter;
use super::releases::{read_release, write_record, AgentDir};
use super::{data_paths, now_ms};
use crate::feed::{Feed, Release};
use crate::residency::{lock_files, LockedFiles};
use crate::session::{
    announce_torrent, tracker_tiers, Session, SessionConfig, TorrentHandle, TorrentMode,
    TorrentSpec, TorrentStats, TrackerPlace,
};
use crate::tracker::client::AnnouncerHandle;

mod metrics;
mod topology;
pub use metrics::write_transfer_metrics;
pub use topology::PlaceStatus;

/// How often the agent looks at its downloads.
const TICK: Duration = Duration::from_millis(100);
/// How soon a failed download is tried again.
const RETRY_FAILED: Duration = Duration::from_secs(30);
/// The first retry after a failed feed request (doubling with each failure).
const RETRY_FIRST: Duration = Duration::from_millis(250);
/// How soon a `current` switch that failed is tried again.
const RETRY_FLIP: Duration = Duration::from_secs(5);
/// How long one feed request may take.
const FEED_TIMEOUT: Duration = Duration::from_secs(10);
/// A release name that would collide with the agent's own `releases/` directory.
const RESERVED_NAME: &str = "releases";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{0}: another agent already runs on this directory")]
    Busy(PathBuf),
    #[error("starting the engine: {0}")]
    Session(#[from] crate::session::SessionError),
    #[error("serving metrics on {addr}: {err}")]
    Http {
        addr: SocketAddr,
        err: std::io::Error,
    },
}

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub feed_url: String,
    pub pubkey: VerifyingKey,
    pub dir: PathBuf,
    /// Lock each activated release in memory (and unlock the one it replaces).
    pub lock: bool,
    /// Bytes the agent may hold locked at once (None: only `RLIMIT_MEMLOCK` limits).
    pub lock_budget: Option<u64>,
    /// Run with `sh -c` after each activation, with `RINGSWARM_RELEASE_NAME`,
    /// `RINGSWARM_RELEASE_VERSION` and `RINGSWARM_RELEASE_PATH` set (see [`super::hook`]).
    pub hook: Option<String>,
    /// Variables of the agent's environment passed to the hook (besides PATH).
    pub hook_env: Vec<String>,
    /// How long a hook may run before its process group is killed.
    pub hook_timeout: Duration,
    /// Releases kept on disk (and seeded) per name, the current one included.
    pub keep: usize,
    /// Time between feed polls (each jittered by ±10 %).
    pub poll: Duration,
    pub session: SessionConfig,
    /// Trackers besides each torrent's own.
    pub trackers: Vec<String>,
    pub place: TrackerPlace,
    /// Where `/metrics` is served, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// The status socket (default `DIR/.agent/status.sock`).
    pub status_socket: Option<PathBuf>,
}

/// What `ringswarm status` shows: one snapshot of the agent.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct AgentStatus {
    pub feed_url: String,
    pub feed_sequence: u64,
    pub feed_errors: u64,
    pub last_feed_error: Option<String>,
    /// The newest feed is expired (or has no expiry): nothing is activated from it.
    #[serde(default)]
    pub feed_expired: bool,
    /// When the accepted feed expires, in ms since the Unix epoch.
    #[serde(default)]
    pub feed_expires_ms: Option<u64>,
    pub locked_bytes: u64,
    pub peers: u32,
    pub releases: Vec<ReleaseStatus>,
    /// Where this host stands, and which topology says so.
    #[serde(default)]
    pub place: PlaceStatus,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct ReleaseStatus {
    pub name: String,
    pub version: String,
    pub info_hash: String,
    /// `downloading`, `failed`, `current` or `kept` (an older release still seeded).
    pub state: String,
    pub total_bytes: u64,
    pub verified_bytes: u64,
    pub peers: u32,
    pub downloaded_bytes: u64,
    pub uploaded_bytes: u64,
    pub locked: bool,
    pub error: Option<String>,
    /// The hook's last outcome for this release.
    pub hook: Option<String>,
    /// Why the release is not locked although `--lock` asked for it.
    pub lock_error: Option<String>,
    /// Publish to activation, for an activated release.
    pub activation_ms: Option<u64>,
    /// While downloading: bytes per second received, over the last seconds.
    #[serde(default)]
    pub rate_bytes_per_sec: f64,
    /// While downloading: seconds left at that rate (None while nothing comes in).
    #[serde(default)]
    pub eta_secs: Option<u64>,
}

/// Counters that only grow, for `/metrics`.
#[derive(Default)]
struct Counters {
    feed_errors: AtomicU64,
    activations: AtomicU64,
    lock_failures: AtomicU64,
    download_failures: AtomicU64,
}

/// A running agent; stops (saying `stopped` to the trackers, unlocking) when shut down.
pub struct Agent {
    stop: Arc<AtomicBool>,
    /// Beaten by the main loop each turn (hooks run on their own thread, so a hook of
    /// minutes does not stop it).
    heartbeat: Arc<crate::heartbeat::Heartbeat>,
    main: Option<JoinHandle<()>>,
    status: Arc<Mutex<AgentStatus>>,
    metrics: Option<HttpServer>,
    status_socket: PathBuf,
}

impl Agent {
    pub fn start(config: AgentConfig) -> Result<Agent, AgentError> {
        let dir = AgentDir::new(&config.dir);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |err| AgentError::Io { path, err }
        };
        dir.create().map_err(io(dir.root()))?;
        let lock_path = dir.state_dir().join("agent.lock");
        let Some(lock) = super::files::try_lock_file(&lock_path).map_err(io(&lock_path))? else {
            return Err(AgentError::Busy(config.dir.clone()));
        };
        let session = Session::start(config.session.clone())?;
        let status = Arc::new(Mutex::new(AgentStatus {
            feed_url: config.feed_url.clone(),
            ..AgentStatus::default()
        }));
        let metrics_text = Arc::new(Mutex::new(String::new()));
        let metrics = match config.metrics {
            Some(addr) => {
                let text = metrics_text.clone();
                Some(
                    HttpServer::start(
                        addr,
                        super::http::Limits::metrics(),
                        Arc::new(move |req| match req.path {
                            "/metrics" => {
                                Reply::metrics(text.lock().map(|t| t.clone()).unwrap_or_default())
                            }
                            _ => Reply::not_found(),
                        }),
                    )
                    .map_err(|err| AgentError::Http { addr, err })?,
                )
            }
            None => None,
        };
        let status_socket = config
            .status_socket
            .clone()
            .unwrap_or_else(|| dir.state_dir().join("status.sock"));
        std::fs::remove_file(&status_socket).ok();
        let listener = UnixListener::bind(&status_socket).map_err(io(&status_socket))?;
        listener.set_nonblocking(true).map_err(io(&status_socket))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (feeds_tx, feeds_rx) = crossbeam_channel::bounded(4);
        let poller = {
            let stop = stop.clone();
            let url = config.feed_url.clone();
            let key = config.pubkey;
            let every = config.poll;
            std::thread::Builder::new()
                .name("rs-feed".into())
                .spawn(move || poll_feed(&url, &key, every, &feeds_tx, &stop))
                .map_err(io(dir.root()))?
        };
        let heartbeat = Arc::new(crate::heartbeat::Heartbeat::default());
        let main = {
            let stop = stop.clone();
            let status = status.clone();
            let heartbeat = heartbeat.clone();
            std::thread::Builder::new()
                .name("rs-agent".into())
                .spawn(move || {
                    let _lock = lock;
                    let mut state = State::new(config, dir, session, status, metrics_text);
                    state.heartbeat = heartbeat;
                    state.restore();
                    state.run(&feeds_rx, &listener, &stop);
                    // The poller may be blocked handing over a feed: let it go.
                    drop(feeds_rx);
                    poller.join().ok();
                    state.finish();
                })
                .map_err(io(&lock_path))?
        };
        Ok(Agent {
            stop,
            heartbeat,
            main: Some(main),
            status,
            metrics,
            status_socket,
        })
    }

    pub fn status(&self) -> AgentStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(HttpServer::local_addr)
    }

    /// The main loop's heartbeat, for the watchdog.
    pub fn heartbeat(&self) -> &crate::heartbeat::Heartbeat {
        &self.heartbeat
    }

    pub fn status_socket(&self) -> &Path {
        &self.status_socket
    }

    /// Whether the agent still runs (it stops on its own only on a fatal error).
    pub fn is_running(&self) -> bool {
        self.main.as_ref().is_some_and(|m| !m.is_finished())
    }

    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(m) = self.main.take() {
            m.join().ok();
        }
        self.metrics.take();
        std::fs::remove_file(&self.status_socket).ok();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// What the poller hands the agent.
enum FeedEvent {
    Accepted(Feed),
    Rejected(String),
}

/// Polls the feed every `every` (±10 %), verifying each new body. Runs until `stop`.
fn poll_feed(
    url: &str,
    key: &VerifyingKey,
    every: Duration,
    out: &crossbeam_channel::Sender<FeedEvent>,
    stop: &AtomicBool,
) {
    let mut fetcher = FeedFetcher::new(url, FEED_TIMEOUT);
    let mut failures = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let fetched = fetcher.fetch();
        failures = if fetched.is_err() { failures + 1 } else { 0 };
        let event = match fetched {
            Ok(Fetched::NotModified) => None,
            Ok(Fetched::New(bytes)) => Some(match Feed::verify(&bytes, key) {
                Ok(feed) => FeedEvent::Accepted(feed),
                Err(e) => FeedEvent::Rejected(format!("feed from {url} rejected: {e}")),
            }),
            Err(e) => Some(FeedEvent::Rejected(e)),
        };
        if let Some(event) = event {
            if out.send(event).is_err() {
                return;
            }
        }
        // After a failed request, try again soon (a lost packet on a busy link is the usual
        // cause), backing off to the poll interval if the server stays unreachable.
        let wait = match failures {
            0 => every.mul_f64(rand::random_range(0.9..1.1)),
            n => RETRY_FIRST.saturating_mul(1 << (n - 1).min(8)).min(every),
        };
        let until = Instant::now() + wait;
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20).min(every));
        }
    }
}

/// A release being fetched into staging.
struct Download {
    release: Release,
    handle: TorrentHandle,
    announcer: Option<AnnouncerHandle>,
    staging: PathBuf,
}

/// A release in `releases/`, seeded.
struct Held {
    release: Release,
    dir: PathBuf,
    activated_ms: u64,
    handle: Option<TorrentHandle>,
    announcer: Option<AnnouncerHandle>,
    locked: Option<LockedFiles>,
    lock_error: Option<String>,
    hook: Arc<Mutex<Option<String>>>,
    activation_ms: Option<u64>,
}

struct State {
    config: AgentConfig,
    dir: AgentDir,
    session: Session,
    status: Arc<Mutex<AgentStatus>>,
    metrics_text: Arc<Mutex<String>>,
    counters: Arc<Counters>,
    sequence: u64,
    last_feed_error: Option<String>,
    /// The newest release of each name in the accepted feed.
    wanted: Vec<Release>,
    /// Whether a feed was accepted since the start (until then staging is not cleaned).
    have_feed: bool,
    downloads: HashMap<[u8; 20], Download>,
    /// Downloads that failed, with the error and when.
    failed: HashMap<[u8; 20], (String, Instant, Release)>,
    /// Releases on disk, by name, oldest activation first.
    held: BTreeMap<String, Vec<Held>>,
    /// The last publish-to-activation latency, by name.
    latency: BTreeMap<String, u64>,
    /// Names whose `current` could not be switched, and when (retried after a while).
    flip_failed: HashMap<String, Instant>,
    /// Releases already reported as republished with other data.
    warned: std::collections::HashSet<String>,
    /// The hook runner, with `--hook`.
    hooks: Option<Hooks>,
    /// When the accepted feed expires, with its allowance for clock skew (ms).
    feed_expiry: Option<(u64, u64)>,
    /// Why the agent activates nothing now: the newest feed is expired (None: fresh).
    expired: Option<String>,
    /// The newest feed, refused as expired by this host's clock: the poller will not see it
    /// as new again (same entity tag), so it is looked at again each tick, in case this
    /// host's clock was wrong and has been set right.
    refused_as_expired: Option<Feed>,
    /// The feed's topology, and our place in it.
    topology: topology::FeedTopology,
    /// Each download's rate, for the progress lines and the status.
    meters: HashMap<[u8; 20], RateMeter>,
    /// Beaten each turn of [`State::run`], for the watchdog.
    heartbeat: Arc<crate::heartbeat::Heartbeat>,
}

impl State {
    fn new(
        config: AgentConfig,
        dir: AgentDir,
        session: Session,
        status: Arc<Mutex<AgentStatus>>,
        metrics_text: Arc<Mutex<String>>,
    ) -> State {
        let sequence = std::fs::read_to_string(dir.state_dir().join("sequence"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let hooks = config.hook.clone().map(|cmd| {
            let settings = HookSettings {
                cmd,
                env: config.hook_env.clone(),
                timeout: config.hook_timeout,
            };
            Hooks::new(settings, super::hook::journal_dir(&dir.state_dir()))
        });
        let topology = topology::FeedTopology::new(&config, &session, &dir.state_dir());
        State {
            topology,
            config,
            dir,
            session,
            status,
            metrics_text,
            counters: Arc::new(Counters::default()),
            sequence,
            last_feed_error: None,
            wanted: Vec::new(),
            have_feed: false,
            downloads: HashMap::new(),
            failed: HashMap::new(),
            held: BTreeMap::new(),
            latency: BTreeMap::new(),
            flip_failed: HashMap::new(),
            warned: std::collections::HashSet::new(),
            hooks,
            feed_expiry: None,
            expired: None,
            refused_as_expired: None,
            meters: HashMap::new(),
            heartbeat: Arc::default(),
        }
    }

    /// Seeds the releases found on disk again (their verification record spares a
    /// recheck) and locks the current ones when asked.
    fn restore(&mut self) {
        let mut found = self.dir.scan_releases();
        found.sort_by_key(|(r, _)| r.activated_ms.unwrap_or(0));
        for (_, dir) in found {
            let (release, activated) = match read_release(&dir) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), err = %e, "not a release; left alone");
                    continue;
                }
            };
            let mut held = Held {
                release: release.clone(),
                dir: dir.clone(),
                activated_ms: activated.unwrap_or(0),
                handle: None,
                announcer: None,
                locked: None,
                lock_error: None,
                hook: Arc::new(Mutex::new(None)),
                activation_ms: None,
            };
            // A release linked from another one (same data) shares that one's torrent, but
            // only while its files are still that verified release's files (hard links):
            // a file replaced behind the agent's back was never verified.
            let twin = self
                .held
                .values()
                .flatten()
                .find(|h| h.release.info_hash == release.info_hash)
                .map(|h| h.dir.clone());
            if let Some(twin) = &twin {
                if !same_files(&release, twin, &dir) {
                    tracing::error!(release = %release.label(), dir = %dir.display(), twin = %twin.display(), "the release on disk is not the verified release it was linked from; not used");
                    continue;
                }
            }
            if twin.is_none() {
                match self.seed(&release, &dir, TorrentMode::Seed) {
                    Ok((handle, announcer)) => {
                        held.handle = Some(handle);
                        held.announcer = announcer;
                    }
                    Err(e) => {
                        // Not verified: never switched to nor linked from. The directory
                        // is left for a look; a feed that wants the release fetches it
                        // again (and replaces the directory, unless it is current).
                        tracing::error!(release = %release.label(), dir = %dir.display(), "the release on disk does not verify; not used: {e}");
                        continue;
                    }
                }
            }
            tracing::info!(release = %release.label(), dir = %dir.display(), "release on disk");
            self.held
                .entry(release.name.clone())
                .or_default()
                .push(held);
        }
        if self.config.lock {
            let names: Vec<String> = self.held.keys().cloned().collect();
            for name in names {
                let Some(version) = self.current_version(&name) else {
                    continue;
                };
                if let Some(i) = self.held_index(&name, &version) {
                    self.lock_held(&name, i, false);
                }
            }
        }
        self.rerun_pending_hooks();
        self.publish_status();
    }

    /// Runs again the hooks a crash or restart interrupted, for the releases still current.
    fn rerun_pending_hooks(&mut self) {
        let journal = super::hook::journal_dir(&self.dir.state_dir());
        for (p, path) in super::hook::pending(&journal) {
            let label = format!("{} {}", p.name, p.version);
            let index = self
                .held_index(&p.name, &p.version)
                .filter(|&i| crate::hex(&self.held[&p.name][i].release.info_hash) == p.info_hash);
            let current = self.current_version(&p.name).as_deref() == Some(p.version.as_str());
            match index {
                Some(i) if current && self.hooks.is_some() => {
                    tracing::warn!(release = %label, "the hook of this activation did not finish before the agent stopped; running it again");
                    self.run_hook(&p.name, i, path);
                }
                _ => {
                    tracing::info!(release = %label, "an unfinished hook is not run again: the release is no longer current (or there is no --hook)");
                    super::hook::forget(&path);
                }
            }
        }
    }

    /// The version `NAME/current` leads to, when it leads to this agent's own
    /// `releases/NAME/VERSION` (a link to `/elsewhere/releases/NAME/VERSION` is not).
    fn current_version(&self, name: &str) -> Option<String> {
        let link = self.dir.current_link(name);
        let target = std::fs::read_link(&link).ok()?;
        own_version(&link, &target, &self.dir.releases_root().join(name))
    }

    fn run(
        &mut self,
        feeds: &Receiver<FeedEvent>,
        status_listener: &UnixListener,
        stop: &AtomicBool,
    ) {
        while !stop.load(Ordering::Relaxed) {
            self.heartbeat.beat();
            match feeds.recv_timeout(TICK) {
                Ok(FeedEvent::Accepted(feed)) => self.on_feed(feed),
                Ok(FeedEvent::Rejected(e)) => self.feed_error(e),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(TICK),
            }
            if let Some(feed) = self
                .refused_as_expired
                .take_if(|f| f.check_fresh(now_ms()).is_ok())
            {
                tracing::info!(
                    sequence = feed.sequence,
                    "the feed refused as expired is fresh by this host's clock now"
                );
                self.on_feed(feed);
            }
            self.check_expiry();
            self.check_downloads();
            self.retry_failed();
            self.sample_progress();
            if self.have_feed && self.expired.is_none() {
                // Cheap (a few map lookups and a readlink per name); it retries what did
                // not happen on the feed event: a flip that failed, a shared download.
                self.reconcile();
            }
            self.publish_status();
            answer_status(status_listener, &self.status);
        }
    }

    /// Stops seeding (trackers hear `stopped`) and unlocks.
    fn finish(mut self) {
        self.downloads.clear();
        for list in self.held.values_mut() {
            for h in list.iter_mut() {
                h.announcer.take();
                h.locked.take();
            }
        }
        self.session.shutdown();
    }

    /// Marks the accepted feed expired once its time (and skew allowance) is past: from then
    /// on nothing is activated or switched until a fresh feed comes.
    fn check_expiry(&mut self) {
        let Some((expires_ms, skew)) = self.feed_expiry else {
            return;
        };
        let now = now_ms();
        if self.expired.is_none() && now > expires_ms.saturating_add(skew) {
            let e = crate::feed::FeedError::Expired {
                sequence: self.sequence,
                expires_ms,
                ago_ms: now - expires_ms,
            }
            .to_string();
            self.expired = Some(e.clone());
            self.feed_error(e);
        }
    }

    fn feed_error(&mut self, e: String) {
        self.counters.feed_errors.fetch_add(1, Ordering::Relaxed);
        if self.last_feed_error.as_deref() != Some(e.as_str()) {
            tracing::error!("{e}; keeping the current releases");
        }
        self.last_feed_error = Some(e);
    }

    fn on_feed(&mut self, feed: Feed) {
        if feed.sequence < self.sequence {
            self.feed_error(format!(
                "feed sequence {} is older than the {} already accepted (a replayed feed?)",
                feed.sequence, self.sequence
            ));
            return;
        }
        if let Err(e) = feed.check_fresh(now_ms()) {
            // Nothing of it is taken, not even its sequence: a fresh feed of the same
            // sequence (the same publish, served late) must still be accepted.
            let e = e.to_string();
            self.expired = Some(e.clone());
            self.feed_error(e);
            self.refused_as_expired = Some(feed);
            return;
        }
        self.refused_as_expired = None;
        self.last_feed_error = None;
        self.expired = None;
        self.feed_expiry = feed
            .expires_ms
            .map(|e| (e, crate::feed::allowed_skew_ms(feed.signed_ms, e)));
        if feed.sequence != self.sequence {
            let path = self.dir.state_dir().join("sequence");
            if let Err(e) = write_atomic(&path, format!("{}\n", feed.sequence).as_bytes()) {
                tracing::warn!(path = %path.display(), err = %e, "cannot record the feed sequence");
            }
            self.sequence = feed.sequence;
        }
        if self
            .topology
            .follow(&self.session, feed.topology.as_deref())
        {
            self.reannounce();
        }
        let mut wanted = Vec::new();
        for r in feed.newest_per_name() {
            if r.name == RESERVED_NAME {
                self.feed_error(format!(
                    "release name `{RESERVED_NAME}` is reserved (it is the agent's own directory); {} ignored",
                    r.label()
                ));
                continue;
            }
            wanted.push(r.clone());
        }
        tracing::debug!(
            sequence = feed.sequence,
            wanted = wanted.len(),
            "feed accepted"
        );
        self.wanted = wanted;
        self.have_feed = true;
        self.reconcile();
        self.clean_staging();
    }

    /// Starts what the feed wants and drops downloads it no longer wants.
    fn reconcile(&mut self) {
        let stale: Vec<[u8; 20]> = self
            .downloads
            .keys()
            .filter(|h| !self.wanted.iter().any(|w| &w.info_hash == *h))
            .copied()
            .collect();
        for hash in stale {
            if let Some(d) = self.downloads.remove(&hash) {
                tracing::info!(release = %d.release.label(), "superseded; download dropped");
                self.drop_download(d, true);
            }
        }
        let unwanted: Vec<[u8; 20]> = self
            .failed
            .keys()
            .filter(|h| !self.wanted.iter().any(|w| &w.info_hash == *h))
            .copied()
            .collect();
        for hash in unwanted {
            // Its staging (allocated in full) would keep the disk full for the next one.
            self.failed.remove(&hash);
            std::fs::remove_dir_all(self.dir.staging(&hash)).ok();
        }
        // Runs every tick: the releases (torrents inside) are cloned only to start one.
        for k in 0..self.wanted.len() {
            let w = &self.wanted[k];
            if self.downloads.contains_key(&w.info_hash) || self.failed.contains_key(&w.info_hash) {
                continue;
            }
            if let Some(i) = self.held_index(&w.name, &w.version) {
                let (name, version) = (w.name.clone(), w.version.clone());
                if self.held[&name][i].release.info_hash != w.info_hash {
                    let label = w.label();
                    if self.warned.insert(label.clone()) {
                        tracing::error!(release = %label, "republished with other data; keeping the one on disk");
                    }
                    continue;
                }
                let current = self.current_version(&name);
                let due = self
                    .flip_failed
                    .get(&name)
                    .is_none_or(|at| at.elapsed() >= RETRY_FLIP);
                if current.as_deref() != Some(version.as_str()) && due {
                    // Rolled back (or forward) to a release still on disk, or a flip that
                    // failed before.
                    self.switch_to(&name, i, None);
                }
                continue;
            }
            let same_data = self
                .held
                .values()
                .flatten()
                .find(|h| h.release.info_hash == w.info_hash)
                .map(|h| h.dir.clone());
            let w = w.clone();
            match same_data {
                Some(from) => self.adopt(w, &from),
                None => self.start_download(w),
            }
        }
    }

    /// A release whose data another held release already has (the same info-hash under a
    /// new name or version): its files are hard-linked into staging and switched in as if
    /// downloaded. The torrent, shared, keeps seeding.
    fn adopt(&mut self, release: Release, from: &Path) {
        let staging = self.dir.staging(&release.info_hash);
        let linked = (|| -> std::io::Result<PathBuf> {
            let meta = release.parse_metainfo().map_err(std::io::Error::other)?;
            std::fs::remove_dir_all(&staging).ok();
            for (src, dst) in data_paths(&meta, from)
                .into_iter()
                .zip(data_paths(&meta, &staging))
            {
                if let Some(parent) = dst.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::hard_link(&src, &dst)?;
            }
            write_record(&staging, &release, None)?;
            self.dir
                .promote(&release.info_hash, &release.name, &release.version)
        })();
        let dir = match linked {
            Ok(dir) => dir,
            Err(e) => {
                self.download_failed(
                    &release,
                    format!("linking the data of {}: {e}", from.display()),
                );
                return;
            }
        };
        tracing::info!(release = %release.label(), from = %from.display(), "same data as a release on disk; linked, not downloaded");
        self.hold(release, dir, None, None);
    }

    fn held_index(&self, name: &str, version: &str) -> Option<usize> {
        self.held
            .get(name)?
            .iter()
            .position(|h| h.release.version == version)
    }

    /// Removes staging directories no wanted release uses.
    fn clean_staging(&self) {
        for (hex, path) in self.dir.scan_staging() {
            if !self.wanted.iter().any(|w| crate::hex(&w.info_hash) == hex) {
                tracing::info!(dir = %path.display(), "removing a stale staging directory");
                std::fs::remove_dir_all(&path).ok();
            }
        }
    }

    fn seed(
        &self,
        release: &Release,
        dest: &Path,
        mode: TorrentMode,
    ) -> Result<(TorrentHandle, Option<AnnouncerHandle>), String> {
        // Adding a torrent may check its data (or survey staging): a long step.
        self.heartbeat.long_step(release.size);
        let meta = Arc::new(release.parse_metainfo().map_err(|e| e.to_string())?);
        let handle = self
            .session
            .add_torrent(TorrentSpec {
                metainfo: meta.clone(),
                dest: dest.to_path_buf(),
                mode,
                peers: Vec::new(),
                // A download is locked once complete: keep its pages as they are written.
                // (Seeding what is on disk reads through O_DIRECT as usual.)
                resident: self.config.lock && mode == TorrentMode::Download,
            })
            .map_err(|e| e.to_string())?;
        let tiers = tracker_tiers(&meta, &self.config.trackers);
        let announcer = match self.session.listen_addr() {
            Some(own) if !tiers.is_empty() => Some(announce_torrent(
                &handle,
                tiers,
                self.session.peer_id(),
                own,
                &self.topology.place,
            )),
            _ => None,
        };
        Ok((handle, announcer))
    }

    fn start_download(&mut self, release: Release) {
        let staging = self.dir.staging(&release.info_hash);
        if let Err(e) = write_record(&staging, &release, None) {
            self.download_failed(&release, format!("{}: {e}", staging.display()));
            return;
        }
        match self.seed(&release, &staging, TorrentMode::Download) {
            Ok((handle, announcer)) => {
                let s = handle.stats();
                tracing::info!(
                    release = %release.label(),
                    resumed = s.verified_bytes,
                    size = s.total_bytes,
                    "downloading"
                );
                self.downloads.insert(
                    release.info_hash,
                    Download {
                        release,
                        handle,
                        announcer,
                        staging,
                    },
                );
            }
            Err(e) => self.download_failed(&release, e),
        }
    }

    fn download_failed(&mut self, release: &Release, error: String) {
        self.counters
            .download_failures
            .fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            release = %release.label(),
            "download failed: {error}; the current release stays, retrying in {}s",
            RETRY_FAILED.as_secs()
        );
        self.failed
            .insert(release.info_hash, (error, Instant::now(), release.clone()));
    }

    /// Stops a download's torrent (and announcer); removes its staging when asked.
    fn drop_download(&mut self, d: Download, remove_staging: bool) {
        let Download {
            release,
            handle,
            announcer,
            staging,
        } = d;
        drop(announcer);
        drop(handle);
        // Removing a torrent joins its syncer, whose last fsync of a buffered (`--lock`)
        // download may outlast the watchdog: a step over the release's size.
        self.heartbeat.long_step(release.size);
        self.session
            .remove_torrent(release.info_hash, Duration::from_secs(10));
        self.heartbeat.beat();
        if remove_staging {
            std::fs::remove_dir_all(&staging).ok();
        }
    }

    /// Forgets failures that are due for a retry: the next reconcile starts them again
    /// (a download, or a link when the data is held meanwhile).
    fn retry_failed(&mut self) {
        self.failed
            .retain(|_, (_, at, _)| at.elapsed() < RETRY_FAILED);
    }

    fn check_downloads(&mut self) {
        let done: Vec<[u8; 20]> = self
            .downloads
            .iter()
            .filter(|(_, d)| {
                let s = d.handle.stats();
                // From an expired feed nothing is activated: a finished download waits
                // (seeding) for a fresh feed.
                (s.complete && self.expired.is_none()) || s.error.is_some()
            })
            .map(|(h, _)| *h)
            .collect();
        for hash in done {
            let Some(d) = self.downloads.remove(&hash) else {
                continue;
            };
            let stats = d.handle.stats();
            if let Some(e) = stats.error {
                let release = d.release.clone();
                self.drop_download(d, false);
                self.download_failed(&release, e);
                continue;
            }
            self.activate(d);
        }
    }

    /// Moves a complete download into `releases/` and switches it in.
    fn activate(&mut self, d: Download) {
        let label = d.release.label();
        let dir = match self
            .dir
            .promote(&d.release.info_hash, &d.release.name, &d.release.version)
        {
            Ok(dir) => dir,
            Err(e) => {
                // Still in staging, verified: the retry resumes with every piece there.
                let release = d.release.clone();
                self.drop_download(d, false);
                self.download_failed(&release, format!("moving {label} into releases/: {e}"));
                return;
            }
        };
        let Download {
            release,
            handle,
            announcer,
            ..
        } = d;
        self.hold(release, dir, Some(handle), announcer);
    }

    /// Takes a release moved into `releases/` into the held set and switches it in.
    fn hold(
        &mut self,
        release: Release,
        dir: PathBuf,
        handle: Option<TorrentHandle>,
        announcer: Option<AnnouncerHandle>,
    ) {
        // Record the release beside its data. The download's resume record moved with the
        // directory and still holds (it is bound to the files' identity, not their paths),
        // so a restart seeds them without hashing again; nothing here vouches for data it
        // did not verify (linked data is hashed again after a restart). A failure here
        // costs a recheck or a download after a restart, never the data.
        let recorded = write_record(&dir, &release, Some(now_ms()));
        if let Err(e) = recorded {
            tracing::error!(release = %release.label(), dir = %dir.display(), err = %e, "cannot record the release; a restart will not know it");
        }
        let latency = now_ms().saturating_sub(release.published_ms);
        let name = release.name.clone();
        let held = Held {
            release,
            dir,
            activated_ms: now_ms(),
            handle,
            announcer,
            locked: None,
            lock_error: None,
            hook: Arc::new(Mutex::new(None)),
            activation_ms: Some(latency),
        };
        let list = self.held.entry(name.clone()).or_default();
        list.push(held);
        let index = list.len() - 1;
        self.switch_to(&name, index, Some(latency));
    }

    /// Locks (when asked) and switches `NAME/current` to `held[name][index]`, runs the
    /// hook, unlocks the release it replaces, and removes releases beyond `keep`.
    fn switch_to(&mut self, name: &str, index: usize, latency: Option<u64>) {
        let old_version = self.current_version(name);
        let old_index = old_version
            .as_deref()
            .and_then(|v| self.held_index(name, v));
        let mut unlock_old_first = false;
        if self.config.lock {
            let new_size = pinned_size_of(&self.held[name][index].release);
            let old_locked = old_index
                .and_then(|i| self.held[name][i].locked.as_ref())
                .map_or(0, LockedFiles::pinned_bytes);
            if let Some(budget) = self.config.lock_budget {
                let others = self.locked_bytes();
                if others.saturating_add(new_size) > budget
                    && others.saturating_sub(old_locked).saturating_add(new_size) <= budget
                {
                    unlock_old_first = true;
                }
            }
            if !unlock_old_first {
                self.lock_held(name, index, true);
            }
        }
        let version = self.held[name][index].release.version.clone();
        // Journaled before the flip: a crash right after it must still run the hook.
        let journal = self
            .hooks
            .as_ref()
            .map(|h| h.record_activation(&self.held[name][index].release));
        if let Err(e) = self.dir.flip_current(name, &version) {
            if let Some(j) = &journal {
                super::hook::forget(j);
            }
            tracing::error!(release = %self.held[name][index].release.label(), err = %e, "cannot switch `current`; trying again in {}s", RETRY_FLIP.as_secs());
            self.flip_failed.insert(name.to_owned(), Instant::now());
            // Not current: its lock would hold budget the next release may need.
            if let Some(h) = self.held.get_mut(name).and_then(|l| l.get_mut(index)) {
                h.locked.take();
            }
            return;
        }
        self.flip_failed.remove(name);
        let held = &self.held[name][index];
        self.counters.activations.fetch_add(1, Ordering::Relaxed);
        if let Some(ms) = latency {
            self.latency.insert(name.to_owned(), ms);
        }
        tracing::info!(
            release = %held.release.label(),
            dir = %held.dir.display(),
            publish_to_activation_ms = latency,
            locked = held.locked.is_some(),
            "activated"
        );
        if let Some(j) = journal {
            self.run_hook(name, index, j);
        }
        if let Some(i) = old_index.filter(|&i| i != index) {
            if let Some(l) = self.held.get_mut(name).and_then(|l| l.get_mut(i)) {
                l.locked.take();
            }
        }
        if unlock_old_first {
            self.lock_held(name, index, true);
        }
        self.collect_garbage(name);
    }

    /// Bytes locked by the agent now.
    fn locked_bytes(&self) -> u64 {
        self.held
            .values()
            .flatten()
            .filter_map(|h| h.locked.as_ref())
            .map(LockedFiles::pinned_bytes)
            .sum()
    }

    /// The mlock pass over one held release, within the budget.
    fn lock_held(&mut self, name: &str, index: usize, count: bool) {
        let locked_now = self.locked_bytes();
        let Some(held) = self.held.get_mut(name).and_then(|l| l.get_mut(index)) else {
            return;
        };
        if held.locked.is_some() {
            return;
        }
        let size = pinned_size_of(&held.release);
        let label = held.release.label();
        if let Some(budget) = self.config.lock_budget {
            if locked_now.saturating_add(size) > budget {
                let e = format!(
                    "not locking {label}: its {size} bytes and the {locked_now} bytes locked \
                     already exceed --lock-budget {budget}; it is active unlocked"
                );
                tracing::error!("{e}");
                held.lock_error = Some(e);
                if count {
                    self.counters.lock_failures.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        }
        let meta = match held.release.parse_metainfo() {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(release = %label, "cannot lock: {e}");
                return;
            }
        };
        let started = Instant::now();
        self.heartbeat.long_step(size);
        match lock_files(&data_paths(&meta, &held.dir)) {
            Ok(l) => {
                tracing::info!(release = %label, bytes = l.locked_bytes(), ms = started.elapsed().as_millis() as u64, "locked in memory");
                held.locked = Some(l);
                held.lock_error = None;
            }
            Err(e) => {
                let e = format!("not locking {label}: {e}; it is active unlocked");
                tracing::error!("{e}");
                held.lock_error = Some(e);
                if count {
                    self.counters.lock_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Queues the hook for this activation; its outcome shows in the status and metrics.
    fn run_hook(&mut self, name: &str, index: usize, journal: PathBuf) {
        let Some(hooks) = self.hooks.as_mut() else {
            return;
        };
        let held = &self.held[name][index];
        hooks.queue(&held.release, &held.dir, held.hook.clone(), journal);
    }

    /// Removes the oldest releases of `name` beyond `keep` (never the current one).
    fn collect_garbage(&mut self, name: &str) {
        let current = self.current_version(name);
        let keep = self.config.keep.max(1);
        let Some(list) = self.held.get_mut(name) else {
            return;
        };
        list.sort_by_key(|h| h.activated_ms);
        let mut removable: Vec<usize> = (0..list.len())
            .filter(|&i| Some(&list[i].release.version) != current.as_ref())
            .collect();
        let excess = list.len().saturating_sub(keep);
        removable.truncate(excess);
        let mut gone = Vec::new();
        for &i in removable.iter().rev() {
            gone.push(list.remove(i));
        }
        for mut h in gone {
            h.announcer.take();
            h.locked.take();
            h.handle.take();
            let shared = self
                .held
                .values()
                .flatten()
                .any(|o| o.release.info_hash == h.release.info_hash)
                || self.downloads.contains_key(&h.release.info_hash);
            if !shared {
                self.session
                    .remove_torrent(h.release.info_hash, Duration::from_secs(10));
            }
            match std::fs::remove_dir_all(&h.dir) {
                Ok(()) => tracing::info!(release = %h.release.label(), "removed (beyond --keep)"),
                Err(e) => {
                    tracing::warn!(dir = %h.dir.display(), err = %e, "cannot remove an old release")
                }
            }
        }
    }

    /// Samples each download's received bytes, for its rate and ETA in the status.
    fn sample_progress(&mut self) {
        let now = Instant::now();
        let downloads = &self.downloads;
        self.meters.retain(|hash, _| downloads.contains_key(hash));
        for (hash, d) in &self.downloads {
            let meter = self.meters.entry(*hash).or_default();
            meter.sample(now, d.handle.stats().downloaded_bytes);
        }
    }

    fn publish_status(&self) {
        let mut releases = Vec::new();
        let mut all_stats = Vec::new();
        for w in &self.wanted {
            if let Some(d) = self.downloads.get(&w.info_hash) {
                let s = d.handle.stats();
                let meter = self.meters.get(&w.info_hash);
                releases.push(ReleaseStatus {
                    rate_bytes_per_sec: meter.map_or(0.0, RateMeter::rate),
                    eta_secs: meter
                        .and_then(|m| m.eta_secs(s.total_bytes.saturating_sub(s.verified_bytes))),
                    ..release_status(&d.release, "downloading", &s, false, None, None)
                });
                all_stats.push(s);
            } else if let Some((e, _, r)) = self.failed.get(&w.info_hash) {
                releases.push(ReleaseStatus {
                    error: Some(e.clone()),
                    ..release_status(r, "failed", &TorrentStats::default(), false, None, None)
                });
            }
        }
        for (name, list) in &self.held {
            let current = self.current_version(name);
            for h in list.iter().rev() {
                let s = h
                    .handle
                    .as_ref()
                    .map(TorrentHandle::stats)
                    .unwrap_or_default();
                let state = if current.as_ref() == Some(&h.release.version) {
                    "current"
                } else {
                    "kept"
                };
                let hook = h.hook.lock().ok().and_then(|o| o.clone());
                releases.push(ReleaseStatus {
                    lock_error: h.lock_error.clone(),
                    ..release_status(
                        &h.release,
                        state,
                        &s,
                        h.locked.is_some(),
                        hook,
                        h.activation_ms,
                    )
                });
                all_stats.push(s);
            }
        }
        let status = AgentStatus {
            feed_url: self.config.feed_url.clone(),
            feed_sequence: self.sequence,
            feed_errors: self.counters.feed_errors.load(Ordering::Relaxed),
            last_feed_error: self.last_feed_error.clone(),
            feed_expired: self.expired.is_some(),
            feed_expires_ms: self.feed_expiry.map(|(e, _)| e),
            locked_bytes: self.locked_bytes(),
            peers: all_stats.iter().map(|s| s.connected_peers).sum(),
            releases,
            place: self.topology.status(),
        };
        let metrics = self.render_metrics(&status, &all_stats);
        if let Ok(mut m) = self.metrics_text.lock() {
            *m = metrics;
        }
        if let Ok(mut s) = self.status.lock() {
            *s = status;
        }
    }
}

fn release_status(
    r: &Release,
    state: &str,
    s: &TorrentStats,
    locked: bool,
    hook: Option<String>,
    activation_ms: Option<u64>,
) -> ReleaseStatus {
    ReleaseStatus {
        name: r.name.clone(),
        version: r.version.clone(),
        info_hash: crate::hex(&r.info_hash),
        state: state.to_owned(),
        total_bytes: r.size,
        verified_bytes: s.verified_bytes,
        peers: s.connected_peers,
        downloaded_bytes: s.downloaded_bytes,
        uploaded_bytes: s.uploaded_bytes,
        locked,
        error: s.error.clone(),
        hook,
        lock_error: None,
        activation_ms,
        rate_bytes_per_sec: 0.0,
        eta_secs: None,
    }
}

/// The version a `current` link names when its whole target, resolved from the link's
/// directory, is `releases_of_name/VERSION` (compared lexically: no link is followed).
fn own_version(link: &Path, target: &Path, releases_of_name: &Path) -> Option<String> {
    let resolved = lexical_normal(&link.parent()?.join(target));
    let version = resolved.file_name()?.to_str()?.to_owned();
    (resolved.parent()? == lexical_normal(releases_of_name)).then_some(version)
}

/// `path` with `.` dropped and `..` taken back (as the kernel would, were no component a
/// symbolic link).
fn lexical_normal(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Whether every data file of `release` in `dir` is the same file (device and inode, not
/// a symbolic link) as in `verified`: how a release linked from a verified one stays
/// verified across restarts.
fn same_files(release: &Release, verified: &Path, dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = release.parse_metainfo() else {
        return false;
    };
    data_paths(&meta, verified)
        .into_iter()
        .zip(data_paths(&meta, dir))
        .all(
            |(a, b)| match (std::fs::symlink_metadata(&a), std::fs::symlink_metadata(&b)) {
                (Ok(a), Ok(b)) => b.is_file() && a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            },
        )
}

/// Memory that locking a release pins (its files page-rounded).
fn pinned_size_of(release: &Release) -> u64 {
    match release.parse_metainfo() {
        Ok(meta) => crate::residency::pinned_size(
            meta.info.files.iter().filter(|f| !f.pad).map(|f| f.length),
        ),
        Err(_) => release.size,
    }
}

/// Status clients answered per turn of the loop at most: a flood of them must not keep
/// the loop from its work (and from feeding the watchdog); the rest wait a turn.
const STATUS_ANSWERS_PER_TURN: usize = 16;

/// Answers waiting status clients (at most [`STATUS_ANSWERS_PER_TURN`]) with the snapshot
/// as one JSON line.
fn answer_status(listener: &UnixListener, status: &Mutex<AgentStatus>) {
    for _ in 0..STATUS_ANSWERS_PER_TURN {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let json = status
            .lock()
            .ok()
            .and_then(|s| serde_json::to_vec(&*s).ok())
            .unwrap_or_default();
        stream.set_nonblocking(false).ok();
        stream.set_write_timeout(Some(Duration::from_secs(1))).ok();
        let _ = stream
            .write_all(&json)
            .and_then(|()| stream.write_all(b"\n"));
    }
}

/// Asks the agent behind `socket` for its status.
pub fn query_status(socket: &Path) -> std::io::Result<AgentStatus> {
    use std::io::Read as _;
    let stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    stream.take(16 << 20).read_to_end(&mut buf)?;
    serde_json::from_slice(&buf).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_is_the_whole_target_not_its_last_component() {
        let link = Path::new("/srv/rs/index/current");
        let own = Path::new("/srv/rs/releases/index");
        let v = |t: &str| own_version(link, Path::new(t), own);
        assert_eq!(v("../releases/index/v1").as_deref(), Some("v1"));
        assert_eq!(v("/srv/rs/releases/index/v1").as_deref(), Some("v1"));
        assert_eq!(v("./../releases/./index/v2").as_deref(), Some("v2"));
        assert_eq!(v("/elsewhere/releases/index/v1"), None);
        assert_eq!(v("../releases/other/v1"), None);
        assert_eq!(v("../releases/index/v1/.."), None);
        assert_eq!(v("../../rs/releases/index/v1").as_deref(), Some("v1"));
        assert_eq!(v("v1"), None);
    }
}
