//! `ringswarm origin`: serve the release feed over HTTP and seed every live release.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use ringswarm_engine::fleet::origin::{Origin, OriginConfig};
use ringswarm_engine::session::SessionConfig;
use serde::Deserialize;

use crate::args::{format_bytes, parse_listen, parse_rate, parse_tracker_url};
use crate::common::{stop_flag, LimitArgs, PlaceArgs};
use crate::config::{load, parsed};
use crate::interrupt::interrupted;
use crate::output::Summary;
use crate::Ctx;

/// Serve the release feed over HTTP and seed every release it lists, until Ctrl-C.
///
/// The feed is DIR/feed.json as `ringswarm publish` writes it, served at
/// http://HTTP/feed.json with an entity tag (agents poll it with conditional GETs);
/// Prometheus metrics are at http://HTTP/metrics. Each publish is picked up within a
/// second. Any static web server can serve DIR/feed.json instead; the origin is still
/// what seeds the data.
///
/// Every setting can come from --config FILE (TOML, keys as the long flags with `_`:
/// dir, http, listen, trackers, topology, dc, rack, cores, max_upload_rate,
/// max_download_rate); flags win over the file.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The origin directory [default: /var/lib/ringswarm/origin].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Where the feed and /metrics are served [default: 0.0.0.0:8470].
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub http: Option<SocketAddr>,

    /// Where peers reach the origin [default: 0.0.0.0:6881].
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,

    /// A tracker besides each torrent's own; repeatable.
    #[arg(long = "tracker", value_name = "URL", value_parser = parse_tracker_url)]
    pub trackers: Vec<String>,

    #[command(flatten)]
    pub place: PlaceArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    /// Worker threads, one per core [default: all online CPUs].
    #[arg(long, value_name = "N")]
    pub cores: Option<usize>,

    /// A TOML config file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    dir: Option<PathBuf>,
    http: Option<String>,
    listen: Option<String>,
    #[serde(default)]
    trackers: Vec<String>,
    topology: Option<PathBuf>,
    dc: Option<String>,
    rack: Option<String>,
    cores: Option<usize>,
    max_upload_rate: Option<String>,
    max_download_rate: Option<String>,
}

pub fn run(ctx: Ctx, args: Args) -> Result<()> {
    let file: FileConfig = load(args.config.as_deref())?;
    let dir = args
        .dir
        .or(file.dir)
        .unwrap_or_else(|| PathBuf::from("/var/lib/ringswarm/origin"));
    let http = match args.http {
        Some(a) => a,
        None => parsed("http", file.http.as_deref(), parse_listen)?
            .unwrap_or_else(|| "0.0.0.0:8470".parse().expect("a valid address")),
    };
    let listen = match args.listen {
        Some(a) => a,
        None => parsed("listen", file.listen.as_deref(), parse_listen)?
            .unwrap_or_else(|| "0.0.0.0:6881".parse().expect("a valid address")),
    };
    let trackers = if args.trackers.is_empty() {
        file.trackers
            .iter()
            .map(|t| {
                parse_tracker_url(t).map_err(|e| anyhow::anyhow!("config key `trackers`: {e}"))
            })
            .collect::<Result<Vec<_>>>()?
    } else {
        args.trackers.clone()
    };
    let mut place = args.place.clone();
    place.topology = place.topology.or(file.topology);
    place.dc = place.dc.or(file.dc);
    place.rack = place.rack.or(file.rack);
    let mut limits = args.limits.clone();
    if limits.max_upload_rate.is_none() {
        limits.max_upload_rate = parsed(
            "max_upload_rate",
            file.max_upload_rate.as_deref(),
            parse_rate,
        )?;
    }
    if limits.max_download_rate.is_none() {
        limits.max_download_rate = parsed(
            "max_download_rate",
            file.max_download_rate.as_deref(),
            parse_rate,
        )?;
    }
    let session = SessionConfig {
        cores: args.cores.or(file.cores).unwrap_or(0),
        listen: Some(listen),
        locator: Arc::new(place.locator()?),
        max_upload_rate: limits.max_upload_rate,
        max_download_rate: limits.max_download_rate,
        max_peers: limits.max_peers,
        max_peers_per_ip: limits.max_peers_per_ip,
        ..SessionConfig::default()
    };
    let stop = stop_flag();
    let origin = Origin::start(OriginConfig {
        dir: dir.clone(),
        http,
        session,
        trackers,
        place: place.tracker_place(),
    })
    .with_context(|| format!("starting the origin on `{}`", dir.display()))?;
    let out = ctx.out;
    if let Some(a) = origin.http_addr() {
        out.line(format!("serving the feed at http://{a}/feed.json"));
    }
    if let Some(a) = origin.peer_addr() {
        out.line(format!("listening on {a}"));
    }
    let mut shown = Vec::new();
    while !interrupted(&stop) {
        std::thread::sleep(Duration::from_millis(200));
        let now: Vec<String> = origin.seeding().iter().map(|(r, _)| r.label()).collect();
        for label in now.iter().filter(|l| !shown.contains(*l)) {
            out.line(format!("seeding {label}"));
        }
        shown = now;
    }
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
        let path = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/systemd/origin.toml"
        ));
        let _: FileConfig = load(Some(path)).unwrap();
        let bad = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(bad.path(), "no_such_key = 1\n").unwrap();
        let e = load::<FileConfig>(Some(bad.path())).unwrap_err();
        assert!(format!("{e:#}").contains("line 1"), "{e:#}");
    }
}
