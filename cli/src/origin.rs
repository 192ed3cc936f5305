//! `ringswarm origin`: serve the release feed over HTTP and seed every live release.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use ringswarm_engine::fleet::http::Limits;
use ringswarm_engine::fleet::origin::{Origin, OriginConfig};
use serde::Deserialize;

use crate::args::{format_bytes, parse_listen};
use crate::common::stop_flag;
use crate::config::{load, parsed, peer_settings, PeerArgs, PeerFile};
use crate::interrupt::interrupted;
use crate::output::Summary;
use crate::Ctx;

/// Serve the release feed over HTTP and seed every release it lists, until Ctrl-C.
///
/// The feed is DIR/feed.json as `ringswarm publish` writes it, served at
/// http://HTTP/feed.json with an entity tag (agents poll it with conditional GETs);
/// Prometheus metrics are at http://HTTP/metrics (the same port: they show counters, no
/// secret). Each publish is picked up within a
/// second. Any static web server can serve DIR/feed.json instead; the origin is still
/// what seeds the data.
///
/// Every setting can come from --config FILE (TOML, keys as the long flags with `_`:
/// dir, http, http_max_connections, listen, trackers, topology, dc, rack, cores,
/// max_upload_rate, max_download_rate, tracker_http); flags win over the file.
///
/// The HTTP server stays up under slow or hostile clients: past --http-max-connections a
/// connection gets a 503 at once; a request header over 16 KiB gets a 431; a request not
/// complete 10 s after the connection opened or the previous answer went out (so an idle
/// keep-alive connection lasts 10 s), or an answer the client does not take for 10 s,
/// closes the connection.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The origin directory [default: /var/lib/ringswarm/origin].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Where the feed and /metrics are served [default: 0.0.0.0:8470].
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub http: Option<SocketAddr>,

    /// Most HTTP connections open at once [default: 16384].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub http_max_connections: Option<u64>,

    /// The tracker's HTTP address (its --metrics port), e.g. http://127.0.0.1:9469: the
    /// origin joins the tracker's peers with its feed and serves the fleet view at
    /// http://HTTP/fleet.json and the page at http://HTTP/ (config key `tracker_http`).
    #[arg(long, value_name = "URL")]
    pub tracker_http: Option<String>,

    #[command(flatten)]
    pub peer: PeerArgs,

    /// A TOML config file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    dir: Option<PathBuf>,
    http: Option<String>,
    http_max_connections: Option<u64>,
    listen: Option<String>,
    #[serde(default)]
    trackers: Vec<String>,
    topology: Option<PathBuf>,
    dc: Option<String>,
    rack: Option<String>,
    cores: Option<usize>,
    max_upload_rate: Option<String>,
    max_download_rate: Option<String>,
    tracker_http: Option<String>,
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
    let dir = args
        .dir
        .or(file.dir)
        .unwrap_or_else(|| PathBuf::from("/var/lib/ringswarm/origin"));
    let http = match args.http {
        Some(a) => a,
        None => parsed("http", file.http.as_deref(), parse_listen)?
            .unwrap_or_else(|| "0.0.0.0:8470".parse().expect("a valid address")),
    };
    let defaults = Limits::default();
    let http_limits = Limits {
        max_connections: args
            .http_max_connections
            .or(file.http_max_connections)
            .map_or(defaults.max_connections, |n| {
                usize::try_from(n.max(1)).unwrap_or(usize::MAX)
            }),
        ..defaults
    };
    let stop = stop_flag();
    let origin = Origin::start(OriginConfig {
        dir: dir.clone(),
        http,
        http_limits,
        session: peer.session,
        trackers: peer.trackers,
        place: peer.place.tracker_place(),
        tracker_http: args.tracker_http.or(file.tracker_http),
    })
    .with_context(|| format!("starting the origin on `{}`", dir.display()))?;
    let out = ctx.out;
    if let Some(a) = origin.http_addr() {
        out.line(format!("serving the feed at http://{a}/feed.json"));
    }
    if let Some(a) = origin.peer_addr() {
        out.line(format!("listening on {a}"));
    }
    crate::notify::ready("serving the feed and seeding");
    let mut watchdog = crate::notify::Watchdog::from_env();
    let mut shown = Vec::new();
    while !interrupted(&stop) {
        // Fed only while the origin's watch loop turns.
        watchdog.tick(|max_age| {
            origin
                .heartbeat()
                .is_fresh(std::time::Instant::now(), max_age)
        });
        std::thread::sleep(Duration::from_millis(200));
        let now: Vec<String> = origin.seeding().iter().map(|(r, _)| r.label()).collect();
        for label in now.iter().filter(|l| !shown.contains(*l)) {
            out.line(format!("seeding {label}"));
            crate::notify::status(&format!("seeding {label}"));
        }
        shown = now;
    }
    crate::notify::stopping();
    let seeding = origin.seeding();
    let uploaded: u64 = seeding.iter().map(|(_, s)| s.uploaded_bytes).sum();
    origin.shutdown();
    out.line(format!("stopped; sent {}", format_bytes(uploaded)));
    let mut s = Summary::new("origin");
    s.ok = true;
    s.uploaded_bytes = Some(uploaded);
    out.summary(&s);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        crate::config::check_example::<FileConfig>("origin.toml");
    }
}
