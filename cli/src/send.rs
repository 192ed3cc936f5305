//! `ringswarm send`: share a file or directory in one step and print the magnet link.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use ringswarm_engine::magnet::Magnet;
use ringswarm_engine::session::{TorrentMode, TorrentSpec};
use serde_json::json;

use crate::args::{format_bytes, parse_listen, parse_piece_size, parse_tracker_url, rate};
use crate::common::{
    data_bytes, reachable_addr, resolves, serve, start_announcing, start_placed_session, stop_flag,
    LimitArgs, PlaceArgs,
};
use crate::create::make_metainfo;
use crate::interrupt::stopped_error;
use crate::output::Summary;
use crate::progress::Progress;
use crate::Ctx;

/// Share a file or directory now: make its torrent in memory, serve it, and print the
/// magnet link and the exact `ringswarm get` command to run on each receiver.
///
/// The magnet carries this host's address (x.pe), so receivers need nothing else. When
/// listening on a specific IP, that IP is printed; when listening on 0.0.0.0 or [::],
/// this host's name is printed (from /proc/sys/kernel/hostname), unless --advertise says
/// otherwise.
///
/// It listens first (a busy port fails at once, before a big file is hashed), then hashes,
/// then prints the magnet. Under --json, stdout gets `{"event":"listening",...}` at once
/// and `{"event":"magnet",...}` as soon as the hashing is done.
///
/// Exits once --receivers peers hold a full copy (exit 0), or on Ctrl-C / SIGTERM (exit
/// 130 / 143 while receivers are still awaited; 0 with --receivers 0).
#[derive(Debug, clap::Args)]
#[command(
    verbatim_doc_comment,
    about = "Share a file or directory now and print the magnet link receivers need"
)]
pub struct Args {
    /// The file or directory to send.
    pub path: PathBuf,

    /// Address to accept peers on (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:6881", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// Host name or IP receivers should dial, put in the magnet
    /// [default: the listen IP, or this host's name when listening on all addresses].
    #[arg(long, value_name = "HOST")]
    pub advertise: Option<String>,

    /// A UDP tracker, udp://HOST:PORT[/PATH], to put in the torrent and the magnet and to
    /// announce to; repeat for more.
    #[arg(long = "tracker", value_name = "URL", value_parser = parse_tracker_url)]
    pub trackers: Vec<String>,

    /// Exit once this many peers hold a full copy; 0 serves until Ctrl-C.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub receivers: u32,

    /// Piece size: a power of two from 16K to 256M (4M, 4MiB, 16K, 1048576), or auto:
    /// about 1024 pieces, 1M to 16M.
    #[arg(long, value_name = "SIZE", default_value = "auto", value_parser = parse_piece_size)]
    pub piece_size: u64,

    #[command(flatten)]
    pub place: PlaceArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    /// Worker threads, one per core [default: all online CPUs].
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub cores: usize,
}

/// Quotes `s` for a POSIX shell (single quotes; a `'` becomes `'\''`).
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub fn run(ctx: Ctx, args: Args) -> Result<()> {
    let out = ctx.out;
    let stop = stop_flag();
    // Absolute, so `send .` and `send dir/` name the torrent after the directory.
    let path =
        std::fs::canonicalize(&args.path).with_context(|| format!("`{}`", args.path.display()))?;
    let dest = path
        .parent()
        .with_context(|| format!("`{}`: cannot send the root directory", path.display()))?
        .to_path_buf();

    // Listening first: a busy port is found before hashing a big file, not after.
    let session = start_placed_session(
        args.cores,
        Some(args.listen),
        args.place.locator()?,
        &args.limits,
    )?;
    let listen = session
        .listen_addr()
        .context("the engine did not report its listen address")?;
    out.line(format!("listening on {listen}"));
    out.event("listening", json!({"listen": listen.to_string()}));

    out.line(format!("hashing {}", path.display()));
    let meta = Arc::new(make_metainfo(&path, args.piece_size, &args.trackers)?);
    // A first signal during the hashing is seen here (a second one exits at once).
    if crate::interrupt::interrupted(&stop) {
        session.shutdown();
        return Err(stopped_error(format!("while hashing `{}`", path.display())));
    }
    let hash = ringswarm_engine::hex(&meta.info_hash);

    let handle = session
        .add_torrent(TorrentSpec {
            metainfo: meta.clone(),
            dest: dest.clone(),
            mode: TorrentMode::Seed,
            peers: Vec::new(),
            resident: false,
        })
        .with_context(|| format!("serving `{}`", path.display()))?;
    let reachable = reachable_addr(listen, args.advertise.as_deref());
    if !resolves(&reachable) {
        out.warn(format!("`{reachable}` does not resolve on this host; use --advertise HOST if receivers cannot reach it"));
    }
    let magnet = Magnet {
        info_hash: meta.info_hash,
        display_name: Some(meta.info.name.clone()),
        trackers: args.trackers.clone(),
        peers: vec![reachable.clone()],
    }
    .to_uri();
    out.event(
        "magnet",
        json!({
            "magnet": magnet,
            "info_hash": hash,
            "name": meta.info.name,
            "bytes": data_bytes(&meta),
        }),
    );
    // The trackers are in the metainfo already.
    let announcer = start_announcing(
        &out,
        &session,
        &handle,
        &meta,
        &[],
        &args.place.tracker_place(),
    );
    out.line(format!(
        "sending {} ({}, {} pieces, {hash})",
        meta.info.name,
        format_bytes(data_bytes(&meta)),
        meta.piece_count()
    ));
    out.line(&magnet);
    out.line("on each receiver, run:");
    out.line(format!("  ringswarm get {} DEST-DIR", shell_quote(&magnet)));
    match args.receivers {
        0 => out.line("serving until Ctrl-C"),
        n => out.line(format!(
            "waiting for {n} receiver{} to complete (Ctrl-C to stop)",
            if n == 1 { "" } else { "s" }
        )),
    }

    let started = Instant::now();
    let mut progress = Progress::seeding(ctx.style, &format!("send {}", meta.info.name));
    let want = args.receivers;
    let served = serve(&handle, &mut progress, &stop, None, |s| {
        want > 0 && s.peers_completed >= want
    });
    progress.finish();
    let stats = served?;
    let elapsed = started.elapsed();
    let interrupted = want > 0 && stats.peers_completed < want;
    if let Some(a) = announcer {
        a.stop();
    }
    session.shutdown();
    if interrupted {
        return Err(stopped_error(format!(
            "with {} of {want} receiver{} complete (sent {})",
            stats.peers_completed,
            if want == 1 { "" } else { "s" },
            format_bytes(stats.uploaded_bytes)
        )));
    }
    out.event(
        "complete",
        json!({"peers_completed": stats.peers_completed}),
    );
    out.line(format!(
        "done: {} peer{} with a full copy, sent {} in {:.1}s",
        stats.peers_completed,
        if stats.peers_completed == 1 { "" } else { "s" },
        format_bytes(stats.uploaded_bytes),
        elapsed.as_secs_f64()
    ));

    let mut s = Summary::new("send");
    s.ok = true;
    s.info_hash = Some(hash);
    s.name = Some(meta.info.name.clone());
    s.piece_size = Some(meta.info.piece_length);
    s.dest = Some(dest.display().to_string());
    s.listen = Some(listen.to_string());
    s.magnet = Some(magnet);
    s.set_stats(&stats);
    s.bytes = Some(data_bytes(&meta));
    s.seconds = Some(elapsed.as_secs_f64());
    s.throughput_bytes_per_sec = Some(rate(stats.uploaded_bytes, elapsed));
    out.summary(&s);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("magnet:?xt=a&dn=b"), "'magnet:?xt=a&dn=b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
