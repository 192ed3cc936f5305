//! `ringswarm tracker`: the fleet's UDP tracker (BEP 15), racks and datacenters aware.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ringswarm_engine::tracker::server::{TrackerConfig, TrackerServer};
use ringswarm_engine::tracker::store::StoreConfig;
use ringswarm_engine::tracker::topology::Cidr;

use crate::args::{parse_listen, parse_size};
use crate::common::stop_flag;
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
    /// UDP address to serve on.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:6969", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// TOML file mapping subnets to datacenters and racks.
    #[arg(long, value_name = "FILE")]
    pub topology: Option<PathBuf>,

    /// Seconds between a peer's announces.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub interval: u32,

    /// Worker threads, one per core (default: all online CPUs).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub cores: usize,

    /// Sources (CIDR) whose announce IP field is believed; for everyone else the packet's
    /// source address is the peer's address. Repeatable.
    #[arg(long, value_name = "CIDR")]
    pub trusted: Vec<String>,

    /// Torrents tracked at most.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub max_torrents: usize,

    /// Peers per torrent at most (new peers of a full torrent are refused).
    #[arg(long, value_name = "N", default_value_t = 250_000)]
    pub max_peers_per_torrent: usize,

    /// Peers from other racks always included while the announcer's rack has no seed.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub min_remote: usize,

    /// Receive buffer per socket (e.g. 8M), so a fleet announcing at once is queued, not
    /// dropped. Beyond net.core.rmem_max only as root.
    #[arg(long, value_name = "BYTES", default_value = "8M", value_parser = parse_size)]
    pub recv_buffer: u64,
}

pub fn run(ctx: Ctx, args: Args) -> Result<()> {
    let out = ctx.out;
    let stop = stop_flag();
    let trusted = args
        .trusted
        .iter()
        .map(|c| Cidr::parse(c).with_context(|| format!("--trusted {c}")))
        .collect::<Result<Vec<_>>>()?;
    let store = StoreConfig {
        interval: args.interval.max(1),
        max_torrents: args.max_torrents,
        max_peers_per_torrent: args.max_peers_per_torrent,
        min_remote: args.min_remote,
        trusted,
        ..StoreConfig::default()
    };
    let server = TrackerServer::start(TrackerConfig {
        listen: args.listen,
        topology: args.topology.clone(),
        cores: args.cores,
        recv_buffer: usize::try_from(args.recv_buffer).unwrap_or(usize::MAX),
        store,
    })
    .context("starting the tracker")?;
    out.line(format!(
        "tracker listening on udp://{}",
        server.local_addr()
    ));
    let started = Instant::now();
    let mut last_report = Instant::now();
    while !interrupted(&stop) {
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
    let (_, peers) = server.sizes();
    let answers = server.counters().responses.load(Ordering::Relaxed);
    let listen = server.local_addr();
    server.shutdown();
    out.line(format!("stopped after {answers} answers"));
    let mut s = Summary::new("tracker");
    s.ok = true;
    s.listen = Some(format!("udp://{listen}"));
    s.peers = Some(u32::try_from(peers).unwrap_or(u32::MAX));
    s.seconds = Some(started.elapsed().as_secs_f64());
    out.summary(&s);
    Ok(())
}
