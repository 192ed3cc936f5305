//! Helpers shared by the commands: loading torrents, starting sessions, waiting on a
//! torrent, locking files, and naming this host.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ringswarm_engine::metainfo::Metainfo;
use ringswarm_engine::residency::{
    check_limit, has_cap_ipc_lock, lock_files, memlock_limit, pinned_size, LockedFiles,
};
use ringswarm_engine::session::{
    announce_torrent, tracker_tiers, Locator, NamedPlace, PeerFailure, Session, SessionConfig,
    TorrentHandle, TorrentStats, TrackerPlace,
};
use ringswarm_engine::tracker::client::AnnouncerHandle;

use crate::args::{parse_duration, parse_place_name, parse_rate};
use crate::exit::{failure, Code};
use crate::interrupt::interrupted;
use crate::output::Out;
use crate::progress::{poll_interval, Progress};

/// A .torrent larger than this is surely not one (e.g. the blob given by mistake).
const MAX_TORRENT_FILE: u64 = 64 << 20;

/// Reads and parses a .torrent file; errors name the file.
pub fn load_torrent(path: &Path) -> Result<Metainfo> {
    load_torrent_bytes(path).map(|(meta, _)| meta)
}

/// [`load_torrent`], with the file's bytes (`info` shows fields the metainfo leaves out).
/// The read itself is bounded: a device or a pipe (`/dev/zero`) has no size to check.
pub fn load_torrent_bytes(path: &Path) -> Result<(Metainfo, Vec<u8>)> {
    use std::io::Read;
    let shown = path.display();
    let meta = std::fs::metadata(path).with_context(|| format!("reading torrent `{shown}`"))?;
    if meta.is_dir() {
        bail!("reading torrent `{shown}`: is a directory, not a .torrent file");
    }
    if meta.len() > MAX_TORRENT_FILE {
        bail!(
            "reading torrent `{shown}`: {} bytes is too large for a .torrent file",
            meta.len()
        );
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_TORRENT_FILE + 1).read_to_end(&mut bytes))
        .with_context(|| format!("reading torrent `{shown}`"))?;
    if bytes.len() as u64 > MAX_TORRENT_FILE {
        bail!(
            "reading torrent `{shown}`: more than {} MiB is too large for a .torrent file",
            MAX_TORRENT_FILE >> 20
        );
    }
    let meta = Metainfo::from_bytes(&bytes)
        .with_context(|| format!("`{shown}` is not a valid torrent"))?;
    Ok((meta, bytes))
}

/// Bytes of file data in the torrent (pad files left out).
pub fn data_bytes(meta: &Metainfo) -> u64 {
    meta.info
        .files
        .iter()
        .filter(|f| !f.pad)
        .map(|f| f.length)
        .sum()
}

/// Host-wide limits: payload rates and peers.
#[derive(Clone, Debug, clap::Args)]
pub struct LimitArgs {
    /// Most bytes per second sent to peers, all torrents and cores together: 50M, 50MiB/s
    /// (binary bytes) or 800Mbit (decimal bits).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub max_upload_rate: Option<u64>,

    /// Most bytes per second fetched from peers (same units).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub max_download_rate: Option<u64>,

    /// Most peers at once, connecting or connected, all torrents together.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_peers: u32,

    /// Most peers at once from or to one IPv4 address or IPv6 /64 (127.0.0.1 and ::1
    /// exempt).
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_peers_per_ip: u32,

    /// How long an address that sent corrupt data stays banned (30m, 1h, 1d).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub ban_duration: Duration,

    /// Peers served at once per torrent (upload slots; a peer that asks for nothing
    /// loses its slot). The default covers every peer a tracker hands out, so every
    /// rack peer is served.
    #[arg(long, value_name = "N",
          default_value_t = ringswarm_engine::session::DEFAULT_UPLOAD_SLOTS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub upload_slots: u32,
}

/// Where this host stands, for rack-local preference (`--topology`, `--dc`, `--rack`).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct PlaceArgs {
    /// A topology placing this host and its peers in racks, as a file or an http:// URL
    /// (read once, at start): the tracker's TOML (`[[subnet]]` tables with `cidr`, `dc`,
    /// `rack`). Peers in our rack are asked first; peers outside it only for pieces no rack
    /// peer has. An agent without it takes the topology of the signed feed.
    #[arg(long, value_name = "FILE|URL")]
    pub topology: Option<PathBuf>,

    /// Our datacenter (wins over the topology); told to trackers (BEP 41) and peers.
    #[arg(long, value_name = "NAME", value_parser = parse_place_name)]
    pub dc: Option<String>,

    /// Our rack (wins over the topology); told to trackers (BEP 41) and peers.
    #[arg(long, value_name = "NAME", value_parser = parse_place_name)]
    pub rack: Option<String>,
}

impl PlaceArgs {
    pub fn locator(&self) -> Result<Locator> {
        let topology = match &self.topology {
            Some(path) => Some(
                ringswarm_engine::tracker::load_topology(path)
                    .with_context(|| format!("--topology `{}`", path.display()))?,
            ),
            None => None,
        };
        Ok(Locator::new(
            topology,
            NamedPlace {
                dc: self.dc.clone(),
                rack: self.rack.clone(),
            },
        ))
    }

    /// What the trackers are told in BEP 41 URL data.
    pub fn tracker_place(&self) -> TrackerPlace {
        TrackerPlace {
            dc: self.dc.clone(),
            rack: self.rack.clone(),
        }
    }
}

/// Starts a session with `cores` workers (0: all online CPUs) listening on `listen`.
pub fn start_session(cores: usize, listen: Option<SocketAddr>) -> Result<Session> {
    let defaults = SessionConfig::default();
    let limits = LimitArgs {
        max_upload_rate: None,
        max_download_rate: None,
        max_peers: defaults.max_peers,
        max_peers_per_ip: defaults.max_peers_per_ip,
        ban_duration: defaults.ban_duration,
        upload_slots: defaults.upload_slots as u32,
    };
    start_placed_session(cores, listen, Locator::default(), &limits)
}

/// [`start_session`], placing us and our peers with `locator`, within `rates`.
pub fn start_placed_session(
    cores: usize,
    listen: Option<SocketAddr>,
    locator: Locator,
    limits: &LimitArgs,
) -> Result<Session> {
    let config = SessionConfig {
        cores,
        listen,
        locator: Arc::new(locator),
        max_upload_rate: limits.max_upload_rate,
        max_download_rate: limits.max_download_rate,
        max_peers: limits.max_peers,
        max_peers_per_ip: limits.max_peers_per_ip,
        ban_duration: limits.ban_duration,
        upload_slots: limits.upload_slots as usize,
        ..SessionConfig::default()
    };
    Session::start(config).with_context(|| match listen {
        Some(a) => format!("starting the engine (listening on {a})"),
        None => "starting the engine".to_owned(),
    })
}

/// Starts announcing the torrent to `--tracker` URLs and the metainfo's trackers (see
/// [`tracker_tiers`]); None when there is none. Trackers that are not `udp://` are skipped
/// with a warning; stop the handle (or drop it) to send `stopped`.
pub fn start_announcing(
    out: &Out,
    session: &Session,
    handle: &TorrentHandle,
    meta: &Metainfo,
    extra: &[String],
    place: &TrackerPlace,
) -> Option<AnnouncerHandle> {
    let tiers = tracker_tiers(meta, extra);
    if tiers.is_empty() {
        return None;
    }
    let own = session.listen_addr()?;
    let urls: Vec<String> = tiers.iter().flatten().cloned().collect();
    let announcer = announce_torrent(handle, tiers, session.peer_id(), own, place);
    match announcer.tiers() {
        0 => {
            out.warn(format!(
                "no usable tracker among {} (only udp:// is supported)",
                urls.join(", ")
            ));
            None
        }
        n => {
            out.line(format!(
                "announcing to {} ({n} tier{})",
                urls.join(", "),
                if n == 1 { "" } else { "s" }
            ));
            Some(announcer)
        }
    }
}

/// When waiting for a download gives up.
#[derive(Clone, Copy, Debug, Default)]
pub struct WaitLimits {
    /// `--timeout`: the instant, and the duration it came from (for the message).
    pub deadline: Option<(Instant, Duration)>,
    /// `--stall-timeout`: no connected peer and no verified byte gained for this long.
    pub stall: Option<Duration>,
}

/// Tracks how long a download has had no connected peer and no progress.
#[derive(Debug)]
pub struct StallWatch {
    limit: Duration,
    since: Instant,
    verified: u64,
}

impl StallWatch {
    pub fn new(limit: Duration, now: Instant, verified: u64) -> StallWatch {
        StallWatch {
            limit,
            since: now,
            verified,
        }
    }

    /// True when the limit passed with no connected peer and no verified byte gained;
    /// a connected peer or progress starts the clock again.
    pub fn stalled(&mut self, now: Instant, connected: u32, verified: u64) -> bool {
        if connected > 0 || verified > self.verified {
            self.since = now;
            self.verified = verified;
            return false;
        }
        now.duration_since(self.since) >= self.limit
    }
}

/// The error of a stalled download: whom it tried and why each failed. Exit code 3, or 5
/// when every peer tried was banned for corrupt data (nothing left could verify it).
pub fn stall_error(limit: Duration, failures: &[PeerFailure]) -> anyhow::Error {
    let took = humantime::format_duration(limit);
    if failures.is_empty() {
        return failure(
            Code::NoPeer,
            format!(
                "no peer for {took}: none was found to try (the trackers gave none); \
                 give one with --peer HOST:PORT"
            ),
        );
    }
    let list: Vec<String> = failures.iter().map(ToString::to_string).collect();
    let code = if failures.iter().all(|f| f.reason.is_banned()) {
        Code::Unverifiable
    } else {
        Code::NoPeer
    };
    failure(code, format!("no peer for {took}: {}", list.join("; ")))
}

/// Reports each peer failure that is news (a new address or reason) as a `peer_failed`
/// event under `--json` (the engine logs the same at `warn`).
#[derive(Debug, Default)]
pub struct FailureEvents {
    generation: Option<u64>,
    told: HashMap<SocketAddr, String>,
}

impl FailureEvents {
    pub fn poll(&mut self, out: &Out, handle: &TorrentHandle) {
        if !out.json {
            return;
        }
        let generation = handle.peer_failures_generation();
        if self.generation == Some(generation) {
            return;
        }
        self.generation = Some(generation);
        for f in handle.peer_failures() {
            let reason = f.reason.to_string();
            if self.told.get(&f.addr) != Some(&reason) {
                out.event(
                    "peer_failed",
                    serde_json::json!({
                        "peer": f.addr.to_string(),
                        "reason": reason,
                        "attempts": f.attempts,
                    }),
                );
                self.told.insert(f.addr, reason);
            }
        }
    }
}

/// How waiting for a download ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited {
    Complete,
    Interrupted,
}

/// Waits until the torrent is complete, showing progress and telling `--json` of peer
/// failures; fails on a torrent error (exit 6: its storage failed), when the deadline
/// passes (4), or when the download stalls (3, see [`stall_error`]).
pub fn wait_complete(
    out: &Out,
    handle: &TorrentHandle,
    progress: &mut Progress,
    stop: &AtomicBool,
    limits: WaitLimits,
) -> Result<(Waited, TorrentStats)> {
    let first = handle.stats();
    let mut stall = limits
        .stall
        .map(|limit| StallWatch::new(limit, Instant::now(), first.verified_bytes));
    let mut events = FailureEvents::default();
    loop {
        let s = handle.stats();
        progress.update_transfer(s.verified_bytes, s.total_bytes, s.connected_peers);
        events.poll(out, handle);
        if let Some(e) = &s.error {
            // A torrent's fatal error is, by the engine's contract, its storage failing
            // (writing, syncing, the resume record): the destination's I/O.
            return Err(failure(Code::Io, format!("download failed: {e}")));
        }
        if s.complete {
            return Ok((Waited::Complete, s));
        }
        if interrupted(stop) {
            return Ok((Waited::Interrupted, s));
        }
        let now = Instant::now();
        if let Some((_, timeout)) = limits.deadline.filter(|(at, _)| now >= *at) {
            return Err(failure(
                Code::Timeout,
                format!(
                    "timed out after {} with {} of {} bytes verified ({} peers connected)",
                    humantime::format_duration(timeout),
                    s.verified_bytes,
                    s.total_bytes,
                    s.connected_peers
                ),
            ));
        }
        if let Some(w) = stall.as_mut() {
            if w.stalled(now, s.connected_peers, s.verified_bytes) {
                return Err(stall_error(w.limit, &handle.peer_failures()));
            }
        }
        // Completion is noticed within 10 ms (stats are cheap), progress shown as usual.
        std::thread::sleep(poll_interval().min(Duration::from_millis(10)));
    }
}

/// Keeps serving until `until` (None: until interrupted), showing seeding progress;
/// fails on a torrent error. `done` may end it early (e.g. enough receivers completed).
pub fn serve(
    handle: &TorrentHandle,
    progress: &mut Progress,
    stop: &AtomicBool,
    until: Option<Instant>,
    mut done: impl FnMut(&TorrentStats) -> bool,
) -> Result<TorrentStats> {
    loop {
        let s = handle.stats();
        progress.update_seeding(&s);
        if let Some(e) = &s.error {
            return Err(failure(Code::Io, format!("seeding failed: {e}")));
        }
        if done(&s) || interrupted(stop) || until.is_some_and(|u| Instant::now() >= u) {
            return Ok(s);
        }
        std::thread::sleep(poll_interval());
    }
}

/// One line on what was uploaded, how much of it crossed the rack boundary, and how much
/// was served from memory (pieces verified a moment ago) rather than from disk.
pub fn upload_line(s: &TorrentStats) -> String {
    let served = s.cache_hits + s.cache_misses;
    let mut line = format!("uploaded {}", crate::args::format_bytes(s.uploaded_bytes));
    if s.uploaded_outside_rack_bytes > 0 || s.downloaded_outside_rack_bytes > 0 {
        line.push_str(&format!(
            " ({} outside the rack; {} received from outside)",
            crate::args::format_bytes(s.uploaded_outside_rack_bytes),
            crate::args::format_bytes(s.downloaded_outside_rack_bytes)
        ));
    }
    if served > 0 {
        line.push_str(&format!(
            "; {:.0}% of blocks relayed from memory",
            100.0 * s.cache_hits as f64 / served as f64
        ));
    }
    line
}

/// `--lock` will need the torrent's `bytes` locked: fails now (exit 6), before anything is
/// downloaded or checked, when RLIMIT_MEMLOCK is lower and CAP_IPC_LOCK is missing.
pub fn check_memlock(meta: &Metainfo) -> Result<()> {
    let lengths = meta.info.files.iter().filter(|f| !f.pad).map(|f| f.length);
    check_limit(pinned_size(lengths), memlock_limit(), has_cap_ipc_lock()).map_err(|e| {
        failure(
            Code::Io,
            format!(
                "--lock: {e} (the torrent holds {})",
                crate::args::format_bytes(data_bytes(meta))
            ),
        )
    })
}

/// Locks the torrent's files in memory (`--lock`).
pub fn lock(handle: &TorrentHandle) -> Result<LockedFiles> {
    let paths = handle.file_paths();
    lock_files(&paths).map_err(|e| {
        let code = match e {
            ringswarm_engine::residency::ResidencyError::LimitTooLow { .. } => Code::Io,
            _ => Code::Other,
        };
        failure(code, format!("locking the files in memory (--lock): {e}"))
    })
}

/// The address receivers should dial to reach `bound`: the bound IP when it is a specific
/// one, else (bound to 0.0.0.0 or ::) `advertise` if given, else this host's name.
pub fn reachable_addr(bound: SocketAddr, advertise: Option<&str>) -> String {
    let port = bound.port();
    if let Some(host) = advertise {
        return join_host_port(host, port);
    }
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    match hostname() {
        Some(h) => join_host_port(&h, port),
        None => SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port).to_string(),
    }
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// This host's name (Linux: /proc/sys/kernel/hostname; else $HOSTNAME).
pub fn hostname() -> Option<String> {
    let from_proc = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let name = from_proc
        .or_else(|| std::env::var("HOSTNAME").ok())?
        .trim()
        .to_owned();
    (!name.is_empty()).then_some(name)
}

/// True when `host:port` resolves here (a hint that receivers can resolve it too).
pub fn resolves(host_port: &str) -> bool {
    host_port
        .to_socket_addrs()
        .map(|mut a| a.next().is_some())
        .unwrap_or(false)
}

/// Makes `path` absolute without requiring it to exist.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Shared state for commands that stop on Ctrl-C.
pub fn stop_flag() -> Arc<AtomicBool> {
    crate::interrupt::install_interrupt_handler()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringswarm_engine::session::PeerFailureReason;

    #[test]
    fn a_stall_needs_no_peer_and_no_progress_for_the_whole_limit() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut w = StallWatch::new(Duration::from_secs(10), t0, 0);
        assert!(!w.stalled(s(9), 0, 0));
        assert!(!w.stalled(s(10), 1, 0), "a connected peer");
        assert!(!w.stalled(s(19), 0, 0));
        assert!(w.stalled(s(20), 0, 0));
        assert!(!w.stalled(s(21), 0, 5), "progress");
        assert!(!w.stalled(s(30), 0, 5));
        assert!(w.stalled(s(31), 0, 5));
    }

    #[test]
    fn a_stall_names_the_peers_and_why() {
        let f = |addr: &str, reason| PeerFailure {
            addr: addr.parse().unwrap(),
            reason,
            attempts: 2,
        };
        let e = stall_error(
            Duration::from_secs(60),
            &[
                f("127.0.0.1:1", PeerFailureReason::Refused),
                f("[::1]:1", PeerFailureReason::NoHandshake),
            ],
        );
        assert_eq!(crate::exit::code_of(&e), Code::NoPeer);
        assert_eq!(
            e.to_string(),
            "no peer for 1m: 127.0.0.1:1 refused the connection (2 attempts); \
             [::1]:1 sent no handshake in time (2 attempts)"
        );
        let e = stall_error(
            Duration::from_secs(5),
            &[f("127.0.0.1:1", PeerFailureReason::Banned)],
        );
        assert_eq!(crate::exit::code_of(&e), Code::Unverifiable);
        let e = stall_error(Duration::from_secs(5), &[]);
        assert_eq!(crate::exit::code_of(&e), Code::NoPeer);
    }

    #[test]
    fn reachable_address() {
        let lo: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(reachable_addr(lo, None), "127.0.0.1:7000");
        let any: SocketAddr = "0.0.0.0:7000".parse().unwrap();
        assert_eq!(reachable_addr(any, Some("build1")), "build1:7000");
        assert_eq!(reachable_addr(any, Some("fd00::1")), "[fd00::1]:7000");
        assert!(reachable_addr(any, None).ends_with(":7000"));
        let v6: SocketAddr = "[::1]:7000".parse().unwrap();
        assert_eq!(reachable_addr(v6, None), "[::1]:7000");
    }

    #[test]
    fn torrent_errors_name_the_file() {
        let dir = std::env::temp_dir();
        let e = load_torrent(&dir.join("no-such-file.torrent")).unwrap_err();
        assert!(format!("{e:#}").contains("no-such-file.torrent"), "{e:#}");
        let e = load_torrent(&dir).unwrap_err();
        assert!(format!("{e:#}").contains("is a directory"), "{e:#}");
    }
}
