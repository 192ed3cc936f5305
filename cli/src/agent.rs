//! `ringswarm agent`: the daemon on every service host.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use ringswarm_engine::fleet::agent::{Agent, AgentConfig};
use serde::Deserialize;

use crate::args::{parse_duration, parse_metrics_addr, parse_size};
use crate::common::stop_flag;
use crate::config::{load, parsed, peer_settings, PeerArgs, PeerFile};
use crate::interrupt::interrupted;
use crate::keygen::load_public;
use crate::output::Summary;
use crate::progress::DownloadLines;
use crate::Ctx;

/// Keep this host on the newest release of every blob in the fleet's feed, until Ctrl-C.
///
/// Polls --feed (conditional GET, every --poll with jitter) and checks its signature with
/// --pubkey; a feed that does not verify is rejected, logged and counted, and the current
/// releases stay. Each new release is downloaded into DIR/.staging/, verified, fsynced,
/// renamed into DIR/releases/NAME/VERSION, then DIR/NAME/current is switched to it
/// atomically (a reader sees the old release or the new one, never a mix). Then the
/// --hook runs with a clean environment: PATH, RINGSWARM_RELEASE_NAME, _VERSION and _PATH,
/// and the --hook-env variables. It is journaled in DIR/.agent/hooks/ first, so a hook cut
/// short by a crash or restart runs again (keep it idempotent); past --hook-timeout its
/// process group is killed; the last 64 KiB of its output are kept, the last line shown by
/// `status`. A feed past its expiry (`publish --valid-for`) activates nothing: the agent
/// keeps its releases and reports "feed expired" (status, ringswarm_feed_expired). With
/// --lock the release is locked in memory before the switch and the old one unlocked
/// after it, within --lock-budget: a release that does not fit is switched in unlocked
/// and the error reported. Releases stay seeded; beyond the newest --keep they are
/// removed. An interrupted download resumes after a restart.
///
/// `ringswarm status` asks a running agent for its state; --metrics serves Prometheus
/// metrics. Every setting can come from --config FILE (TOML, keys as the long flags with
/// `_`: feed, pubkey, dir, lock, lock_budget, hook, hook_env, hook_timeout, keep, poll,
/// listen, trackers, topology,
/// dc, rack, cores, metrics, status_socket, max_upload_rate, max_download_rate,
/// progress_every); flags
/// win over the file.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The feed URL, e.g. http://origin:8470/feed.json.
    #[arg(long, value_name = "URL")]
    pub feed: Option<String>,

    /// The fleet's public key: a file from `ringswarm keygen`, or the key itself.
    #[arg(long, value_name = "KEY")]
    pub pubkey: Option<String>,

    /// The releases directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Lock each activated release in memory (mlock), unlocking the one it replaces.
    #[arg(long)]
    pub lock: bool,

    /// Most bytes held locked at once (e.g. 64G) [default: RLIMIT_MEMLOCK alone].
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub lock_budget: Option<u64>,

    /// A shell command run after each activation.
    #[arg(long, value_name = "CMD")]
    pub hook: Option<String>,

    /// An environment variable of the agent passed to the hook; repeat for more.
    #[arg(long = "hook-env", value_name = "NAME", value_parser = parse_env_name)]
    pub hook_env: Vec<String>,

    /// How long the hook may run before it (its process group) is killed [default: 10m].
    #[arg(long, value_name = "DURATION", value_parser = parse_hook_timeout)]
    pub hook_timeout: Option<Duration>,

    /// Releases kept (and seeded) per name, the current one included [default: 2].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub keep: Option<u64>,

    /// Time between feed polls, 100ms to 1h [default: 2s].
    #[arg(long, value_name = "DURATION", value_parser = parse_poll)]
    pub poll: Option<Duration>,

    #[command(flatten)]
    pub peer: PeerArgs,

    /// Serve Prometheus metrics at http://ADDR/metrics; a PORT alone means 127.0.0.1:PORT.
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
    pub metrics: Option<SocketAddr>,

    /// The status socket [default: DIR/.agent/status.sock].
    #[arg(long, value_name = "PATH")]
    pub status_socket: Option<PathBuf>,

    /// Time between a download's progress lines in the log (rate, ETA, verified of
    /// total, peers), 100ms to 1h [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_progress_every)]
    pub progress_every: Option<Duration>,

    /// A TOML config file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    feed: Option<String>,
    pubkey: Option<String>,
    dir: Option<PathBuf>,
    lock: Option<bool>,
    lock_budget: Option<String>,
    hook: Option<String>,
    #[serde(default)]
    hook_env: Vec<String>,
    hook_timeout: Option<String>,
    keep: Option<u64>,
    poll: Option<String>,
    listen: Option<String>,
    #[serde(default)]
    trackers: Vec<String>,
    topology: Option<PathBuf>,
    dc: Option<String>,
    rack: Option<String>,
    cores: Option<usize>,
    metrics: Option<String>,
    status_socket: Option<PathBuf>,
    max_upload_rate: Option<String>,
    max_download_rate: Option<String>,
    progress_every: Option<String>,
}

/// A poll interval: a duration from 100 ms to an hour (a tight loop would hammer the
/// origin; a longer one is a stopped agent).
fn parse_poll(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&d) {
        return Err(format!("`{s}`: the poll interval must be from 100ms to 1h"));
    }
    Ok(d)
}

/// A progress period: 100 ms to an hour.
fn parse_progress_every(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&d) {
        return Err(format!(
            "`{s}`: the progress period must be from 100ms to 1h"
        ));
    }
    Ok(d)
}

/// A hook timeout: 1 s to a day.
fn parse_hook_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&d) {
        return Err(format!("`{s}`: the hook timeout must be from 1s to 24h"));
    }
    Ok(d)
}

fn parse_env_name(s: &str) -> Result<String, String> {
    ringswarm_engine::fleet::hook::check_env_name(s)?;
    Ok(s.to_owned())
}

fn required<T>(value: Option<T>, flag: &str) -> Result<T> {
    value.with_context(|| format!("{flag} is required (on the command line or in --config)"))
}

impl FileConfig {
    /// The peer settings among the keys (moved out).
    fn peer(&mut self) -> PeerFile {
        PeerFile {
            listen: self.listen.take(),
            trackers: std::mem::take(&mut self.trackers),
            topology: self.topology.take(),
            dc: self.dc.take(),
            rack: self.rack.take(),
            cores: self.cores.take(),
            max_upload_rate: self.max_upload_rate.take(),
            max_download_rate: self.max_download_rate.take(),
        }
    }
}

pub fn run(ctx: Ctx, args: Args) -> Result<()> {
    let mut file: FileConfig = load(args.config.as_deref())?;
    let peer = peer_settings(&args.peer, file.peer())?;
    let feed_url = required(args.feed.or(file.feed), "--feed")?;
    let pubkey = load_public(&required(args.pubkey.or(file.pubkey), "--pubkey")?)?;
    let dir = required(args.dir.or(file.dir), "--dir")?;
    let lock_budget = match args.lock_budget {
        Some(b) => Some(b),
        None => parsed("lock_budget", file.lock_budget.as_deref(), parse_size)?,
    };
    let poll = match args.poll {
        Some(p) => p,
        None => {
            parsed("poll", file.poll.as_deref(), parse_duration)?.unwrap_or(Duration::from_secs(2))
        }
    };
    let hook_timeout = match args.hook_timeout {
        Some(t) => t,
        None => parsed(
            "hook_timeout",
            file.hook_timeout.as_deref(),
            parse_hook_timeout,
        )?
        .unwrap_or(Duration::from_secs(600)),
    };
    let hook_env = if args.hook_env.is_empty() {
        for name in &file.hook_env {
            parse_env_name(name).map_err(|e| crate::config::key_error("hook_env", e))?;
        }
        file.hook_env
    } else {
        args.hook_env
    };
    let metrics = match args.metrics {
        Some(a) => Some(a),
        None => parsed("metrics", file.metrics.as_deref(), parse_metrics_addr)?,
    };
    let progress_every = match args.progress_every {
        Some(d) => d,
        None => parsed(
            "progress_every",
            file.progress_every.as_deref(),
            parse_progress_every,
        )?
        .unwrap_or(Duration::from_secs(10)),
    };
    let config = AgentConfig {
        feed_url: feed_url.clone(),
        pubkey,
        dir: dir.clone(),
        lock: args.lock || file.lock.unwrap_or(false),
        lock_budget,
        hook: args.hook.or(file.hook),
        hook_env,
        hook_timeout,
        keep: usize::try_from(args.keep.or(file.keep).unwrap_or(2).max(1)).unwrap_or(usize::MAX),
        poll,
        session: peer.session,
        trackers: peer.trackers,
        place: peer.place.tracker_place(),
        metrics,
        status_socket: args.status_socket.or(file.status_socket),
    };
    let stop = stop_flag();
    let agent = Agent::start(config)
        .with_context(|| format!("starting the agent on `{}`", dir.display()))?;
    let out = ctx.out;
    out.line(format!("agent on {} following {feed_url}", dir.display()));
    if let Some(a) = agent.metrics_addr() {
        out.line(format!("metrics at http://{a}/metrics"));
    }
    out.line(format!("status socket {}", agent.status_socket().display()));
    crate::notify::ready(&format!("following {feed_url}"));
    let mut watchdog = crate::notify::Watchdog::from_env();
    let mut current: Vec<String> = Vec::new();
    let mut progress = DownloadLines::new(progress_every);
    while !interrupted(&stop) && agent.is_running() {
        // Fed only while the agent's own loop turns (a hook runs on a thread of its own).
        watchdog.tick(|max_age| {
            agent
                .heartbeat()
                .is_fresh(std::time::Instant::now(), max_age)
        });
        std::thread::sleep(Duration::from_millis(100));
        let status = agent.status();
        for line in progress.due(std::time::Instant::now(), &status.releases) {
            out.line(line);
        }
        let now: Vec<String> = status
            .releases
            .iter()
            .filter(|r| r.state == "current")
            .map(|r| format!("{} {}", r.name, r.version))
            .collect();
        for label in now.iter().filter(|l| !current.contains(*l)) {
            out.line(format!("active: {label}"));
            crate::notify::status(&format!("active: {label}"));
        }
        current = now;
    }
    crate::notify::stopping();
    let crashed = !agent.is_running() && !interrupted(&stop);
    agent.shutdown();
    if crashed {
        anyhow::bail!("the agent stopped on its own (see the log above)");
    }
    let mut s = Summary::new("agent");
    s.ok = true;
    s.dest = Some(dir.display().to_string());
    out.summary(&s);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        crate::config::check_example::<FileConfig>("agent.toml");
    }

    #[test]
    fn the_poll_interval_is_bounded() {
        assert_eq!(parse_poll("2s").unwrap(), Duration::from_secs(2));
        assert!(parse_poll("0").is_err());
        assert!(parse_poll("10ms").is_err());
        assert!(parse_poll("18446744073709551615").is_err());
    }

    #[test]
    fn the_progress_period_is_bounded() {
        assert_eq!(
            parse_progress_every("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert!(parse_progress_every("0").is_err());
        assert!(parse_progress_every("10ms").is_err());
        assert!(parse_progress_every("2h").is_err());
    }

    #[test]
    fn the_hook_timeout_and_env_names_are_checked() {
        assert_eq!(parse_hook_timeout("10m").unwrap(), Duration::from_secs(600));
        assert!(parse_hook_timeout("0").is_err());
        assert!(parse_hook_timeout("2d").is_err());
        assert!(parse_env_name("HOME").is_ok());
        assert!(parse_env_name("A=B").is_err());
    }
}
