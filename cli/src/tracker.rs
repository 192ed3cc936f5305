//! `ringswarm tracker`: the fleet's UDP tracker (BEP 15), racks and datacenters aware.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ringswarm_engine::fleet::http::{HttpServer, Limits, Reply};
use ringswarm_engine::metrics::{as_gauge, Metrics};
use ringswarm_engine::tracker::server::{TrackerConfig, TrackerServer};
use ringswarm_engine::tracker::store::StoreConfig;
use ringswarm_engine::tracker::topology::Cidr;
use serde::Deserialize;
use std::sync::Arc;

use crate::args::{parse_listen, parse_metrics_addr, parse_size};
use crate::common::stop_flag;
use crate::config::{load, parsed};
use crate::interrupt::interrupted;
use crate::output::Summary;
use crate::Ctx;

/// Run a UDP tracker (BEP 15) until Ctrl-C.
///
/// Peer lists put the announcer's own rack first, then its datacenter, then the rest, each
/// shuffled; while the announcer's rack holds no complete copy, a few peers from other
/// racks are always included (--min-remote) so no rack starves. Places come from the
/// --topology file (`[[subnet]]` tables with `cidr`, `dc`, `rack`; the most specific prefix
/// wins), else from the announce's BEP 41 URL data (`?dc=..&rack=..`).
///
/// Prints `tracker listening on udp://ADDR` once it serves.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// UDP address to serve on [default: 0.0.0.0:6969].
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,

    /// TOML file mapping subnets to datacenters and racks, or an http:// URL of one (e.g.
    /// the origin's /topology.toml), read again every 60 s. The URL is plain HTTP and
    /// unsigned: placement is as trustworthy as the network to it.
    #[arg(long, value_name = "FILE")]
    pub topology: Option<PathBuf>,

    /// Seconds between a peer's announces [default: 300].
    #[arg(long, value_name = "SECS")]
    pub interval: Option<u32>,

    /// Seconds between the announces of a peer still downloading, when shorter than
    /// --interval: the fleet view sees a host's progress only when it announces
    /// (ringswarm's own client announces at most every 30 s) [default: 30].
    #[arg(long, value_name = "SECS")]
    pub leecher_interval: Option<u32>,

    /// Worker threads, one per core [default: all online CPUs].
    #[arg(long, value_name = "N")]
    pub cores: Option<usize>,

    /// Sources (CIDR) whose announce IP field is believed; for everyone else the packet's
    /// source address is the peer's address. Repeatable.
    #[arg(long, value_name = "CIDR")]
    pub trusted: Vec<String>,

    /// Torrents tracked at most [default: 100000].
    #[arg(long, value_name = "N")]
    pub max_torrents: Option<usize>,

    /// Peers per torrent at most (new peers of a full torrent are refused)
    /// [default: 250000].
    #[arg(long, value_name = "N")]
    pub max_peers_per_torrent: Option<usize>,

    /// Peers stored at most, over all torrents: the one cap on the tracker's memory
    /// (≤ 136 bytes a peer, ≈ 85 typical; see engine/src/tracker/store.rs) [default: 2000000].
    #[arg(long, value_name = "N")]
    pub max_peers: Option<usize>,

    /// Peers one address may hold in one torrent; more peer ids from it are refused. No
    /// address is exempt, loopback included [default: 8].
    #[arg(long, value_name = "N")]
    pub max_peers_per_address: Option<usize>,

    /// New torrents (info-hashes) one source address may create per minute [default: 256].
    #[arg(long, value_name = "N")]
    pub max_new_torrents_per_address: Option<usize>,

    /// New dc/rack names one source address may add through BEP 41 URL data (4096 in all)
    /// [default: 4].
    #[arg(long, value_name = "N")]
    pub max_url_names_per_address: Option<usize>,

    /// Peers from other racks always included while the announcer's rack has no seed (at
    /// most half of its numwant) [default: 16].
    #[arg(long, value_name = "N")]
    pub min_remote: Option<usize>,

    /// Receive buffer per socket, so a fleet announcing at once is queued, not dropped.
    /// Beyond net.core.rmem_max only as root [default: 8M].
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub recv_buffer: Option<u64>,

    /// Serve Prometheus metrics at http://ADDR/metrics, and the fleet view's JSON (the
    /// origin's `tracker_http`): /swarms.json (counts per dc and rack of the first 1000
    /// torrents) and /swarm/INFOHASH.json (one torrent: counts per place and at most 5000
    /// peers with place, bytes left and rate, the slowest first; each answer is kept 1 s).
    /// These list every peer's address: keep the port inside the fleet. A PORT alone
    /// means 127.0.0.1:PORT.
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
    pub metrics: Option<SocketAddr>,

    /// A TOML config file: keys as the long flags with `_` (listen, topology, interval,
    /// leecher_interval, cores, trusted, max_torrents, max_peers_per_torrent, max_peers,
    /// max_peers_per_address, max_new_torrents_per_address, max_url_names_per_address, min_remote, recv_buffer,
    /// metrics); flags win over the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    topology: Option<PathBuf>,
    interval: Option<u32>,
    leecher_interval: Option<u32>,
    cores: Option<usize>,
    #[serde(default)]
    trusted: Vec<String>,
    max_torrents: Option<usize>,
    max_peers_per_torrent: Option<usize>,
    max_peers: Option<usize>,
    max_peers_per_address: Option<usize>,
    max_new_torrents_per_address: Option<usize>,
    max_url_names_per_address: Option<usize>,
    min_remote: Option<usize>,
    recv_buffer: Option<String>,
    metrics: Option<String>,
}

fn tracker_metrics(server: &TrackerServer) -> String {
    let c = server.counters();
    let (torrents, peers) = server.sizes();
    let mut e = Metrics::new();
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    e.counter(
        "ringswarm_tracker_packets_total",
        "Datagrams received.",
        n(&c.packets),
    );
    e.counter(
        "ringswarm_tracker_responses_total",
        "Answers sent.",
        n(&c.responses),
    );
    e.counter(
        "ringswarm_tracker_garbage_total",
        "Datagrams that are no valid request.",
        n(&c.garbage),
    );
    e.counter(
        "ringswarm_tracker_bad_connection_ids_total",
        "Requests with a connection id we did not issue.",
        n(&c.bad_connection_ids),
    );
    e.counter(
        "ringswarm_tracker_refused_total",
        "Announces refused by the bounds.",
        n(&c.refused),
    );
    e.gauge(
        "ringswarm_tracker_torrents",
        "Torrents tracked.",
        as_gauge(torrents as u64),
    );
    e.gauge(
        "ringswarm_peers",
        "Peers tracked, over all torrents.",
        as_gauge(peers as u64),
    );
    e.finish()
}

fn json_reply(value: &impl serde::Serialize) -> Reply {
    match serde_json::to_vec(value) {
        Ok(body) => Reply::json(body),
        Err(e) => Reply::text(500, format!("{e}\n")),
    }
}

/// `/swarm/HEX.json`: one torrent's places and peers (the fleet view's input).
fn swarm_reply(server: &TrackerServer, path: &str) -> Reply {
    let Some(hex) = path
        .strip_prefix("/swarm/")
        .and_then(|p| p.strip_suffix(".json"))
    else {
        return Reply::not_found();
    };
    let Some(info_hash) = ringswarm_engine::feed::parse_hash(hex) else {
        return Reply::text(400, "not a 40-digit hex info-hash\n");
    };
    match server.swarm_json(&info_hash) {
        Some(s) => json_reply(&s),
        None => Reply::text(404, "torrent not tracked\n"),
    }
}

pub fn run(ctx: Ctx, args: Args) -> Result<()> {
    let out = ctx.out;
    let stop = stop_flag();
    let file: FileConfig = load(args.config.as_deref())?;
    let listen = match args.listen {
        Some(a) => a,
        None => parsed("listen", file.listen.as_deref(), parse_listen)?
            .unwrap_or_else(|| "0.0.0.0:6969".parse().expect("a valid address")),
    };
    let metrics_addr = match args.metrics {
        Some(a) => Some(a),
        None => parsed("metrics", file.metrics.as_deref(), parse_metrics_addr)?,
    };
    let recv_buffer = match args.recv_buffer {
        Some(b) => b,
        None => parsed("recv_buffer", file.recv_buffer.as_deref(), parse_size)?.unwrap_or(8 << 20),
    };
    let trusted_list = if args.trusted.is_empty() {
        &file.trusted
    } else {
        &args.trusted
    };
    let trusted = trusted_list
        .iter()
        .map(|c| Cidr::parse(c).with_context(|| format!("--trusted {c}")))
        .collect::<Result<Vec<_>>>()?;
    let defaults = StoreConfig::default();
    let store = StoreConfig {
        interval: args.interval.or(file.interval).unwrap_or(300).max(1),
        leecher_interval: args
            .leecher_interval
            .or(file.leecher_interval)
            .unwrap_or(defaults.leecher_interval)
            .max(1),
        max_torrents: args.max_torrents.or(file.max_torrents).unwrap_or(100_000),
        max_peers_per_torrent: args
            .max_peers_per_torrent
            .or(file.max_peers_per_torrent)
            .unwrap_or(250_000),
        max_peers: args
            .max_peers
            .or(file.max_peers)
            .unwrap_or(defaults.max_peers),
        max_peers_per_address: args
            .max_peers_per_address
            .or(file.max_peers_per_address)
            .unwrap_or(defaults.max_peers_per_address),
        max_new_torrents_per_address: args
            .max_new_torrents_per_address
            .or(file.max_new_torrents_per_address)
            .unwrap_or(defaults.max_new_torrents_per_address),
        max_url_names_per_address: args
            .max_url_names_per_address
            .or(file.max_url_names_per_address)
            .unwrap_or(defaults.max_url_names_per_address),
        min_remote: args
            .min_remote
            .or(file.min_remote)
            .unwrap_or(StoreConfig::default().min_remote),
        trusted,
        ..defaults
    };
    let server = TrackerServer::start(TrackerConfig {
        listen,
        topology: args.topology.clone().or(file.topology),
        cores: args.cores.or(file.cores).unwrap_or(0),
        recv_buffer: usize::try_from(recv_buffer).unwrap_or(usize::MAX),
        store,
    })
    .context("starting the tracker")?;
    let server = Arc::new(server);
    let metrics = match metrics_addr {
        Some(addr) => {
            let s = server.clone();
            let http = HttpServer::start(
                addr,
                Limits::metrics(),
                Arc::new(move |req| match req.path {
                    "/metrics" => Reply::metrics(tracker_metrics(&s)),
                    "/swarms.json" => json_reply(&s.swarms_json()),
                    path => swarm_reply(&s, path),
                }),
            )
            .with_context(|| format!("serving metrics on {addr}"))?;
            out.line(format!("metrics at http://{}/metrics", http.local_addr()));
            Some(http)
        }
        None => None,
    };
    out.line(format!(
        "tracker listening on udp://{}",
        server.local_addr()
    ));
    crate::notify::ready(&format!("serving udp://{}", server.local_addr()));
    let mut watchdog = crate::notify::Watchdog::from_env();
    let started = Instant::now();
    let mut last_report = Instant::now();
    while !interrupted(&stop) {
        // Fed only while every worker's loop turns.
        watchdog.tick(|max_age| server.workers_fresh(max_age));
        std::thread::sleep(Duration::from_millis(100));
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            let c = server.counters();
            let (torrents, peers) = server.sizes();
            out.line(format!(
                "{torrents} torrents, {peers} peers; {} packets, {} answers, {} bad connection ids, {} garbage",
                c.packets.load(Ordering::Relaxed),
                c.responses.load(Ordering::Relaxed),
                c.bad_connection_ids.load(Ordering::Relaxed),
                c.garbage.load(Ordering::Relaxed),
            ));
        }
    }
    crate::notify::stopping();
    let (_, peers) = server.sizes();
    let answers = server.counters().responses.load(Ordering::Relaxed);
    let listen = server.local_addr();
    drop(metrics);
    match Arc::try_unwrap(server) {
        Ok(server) => server.shutdown(),
        Err(_) => tracing::warn!("the metrics server still held the tracker at exit"),
    }
    out.line(format!("stopped after {answers} answers"));
    let mut s = Summary::new("tracker");
    s.ok = true;
    s.listen = Some(format!("udp://{listen}"));
    s.peers = Some(u32::try_from(peers).unwrap_or(u32::MAX));
    s.seconds = Some(started.elapsed().as_secs_f64());
    out.summary(&s);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        crate::config::check_example::<FileConfig>("tracker.toml");
    }
}
