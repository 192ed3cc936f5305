//! `ringswarm seed`: serve a torrent's data until Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ringswarm_engine::metainfo::Metainfo;
use ringswarm_engine::session::{TorrentMode, TorrentSpec};
use serde_json::json;

use crate::args::{format_bytes, parse_listen, parse_tracker_url, rate};
use crate::common::{
    absolute, check_memlock, data_bytes, load_torrent, lock, serve, start_announcing,
    start_placed_session, stop_flag, upload_line, LimitArgs, PlaceArgs,
};
use crate::output::Summary;
use crate::progress::Progress;
use crate::Ctx;

/// Serve a torrent's data to peers until Ctrl-C.
///
/// PATH is the directory that contains the torrent's root, so the data is at PATH/<name>
/// (as `get` leaves it). The root itself is accepted too: when PATH/<name> does not exist
/// but PATH is named <name>, PATH's parent is used. The data is checked against the
/// torrent before serving (skipped when a complete resume file from `get` vouches for it).
///
/// Prints `listening on ADDR` once it serves. Announces to each --tracker and to the
/// torrent's own trackers (udp:// only), and dials the peers they return.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The .torrent file.
    #[arg(value_name = "FILE.torrent")]
    pub torrent: PathBuf,

    /// The directory holding the torrent's root (or the root itself).
    pub path: PathBuf,

    /// Address to accept peers on (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:6881", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// Lock the files in memory (mlock) while seeding, like `vmtouch -l`. RLIMIT_MEMLOCK
    /// is checked first, before the data is: too low (without CAP_IPC_LOCK) exits 6.
    #[arg(long)]
    pub lock: bool,

    /// A UDP tracker to announce to, udp://HOST:PORT[/PATH], besides the torrent's own;
    /// repeat for more (each is a tier of its own).
    #[arg(long = "tracker", value_name = "URL", value_parser = parse_tracker_url)]
    pub trackers: Vec<String>,

    #[command(flatten)]
    pub place: PlaceArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    /// Worker threads, one per core [default: all online CPUs].
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub cores: usize,
}

/// Finds the directory holding the torrent's root (`dest`, with files at dest/<name>...).
///
/// Rules, in order:
/// 1. `path/<name>` exists with the right kind (a file for a single-file torrent, a
///    directory for a multi-file one): `path` is the destination.
/// 2. `path` itself is named `<name>` and has the right kind: its parent is.
///
/// Anything else is an error that says what was looked for.
pub fn resolve_data_dir(path: &Path, meta: &Metainfo) -> Result<PathBuf> {
    let name = &meta.info.name;
    let want_dir = meta.info.multi_file;
    let kind = if want_dir { "directory" } else { "file" };
    let right_kind = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| if want_dir { m.is_dir() } else { m.is_file() })
            .unwrap_or(false)
    };
    if !path.exists() {
        std::fs::metadata(path).with_context(|| format!("data path `{}`", path.display()))?;
    }
    let inside = path.join(name);
    if right_kind(&inside) {
        return Ok(path.to_path_buf());
    }
    let abs = absolute(path);
    if abs.file_name().is_some_and(|n| n == name.as_str()) && right_kind(&abs) {
        if let Some(parent) = abs.parent() {
            return Ok(parent.to_path_buf());
        }
    }
    bail!(
        "data path `{}`: the torrent's {kind} `{name}` is neither `{}` nor `{}` itself",
        path.display(),
        inside.display(),
        path.display()
    )
}

pub fn run(ctx: Ctx, args: Args) -> Result<()> {
    let meta = Arc::new(load_torrent(&args.torrent)?);
    let dest = resolve_data_dir(&args.path, &meta)?;
    let root = dest.join(&meta.info.name);
    let hash = ringswarm_engine::hex(&meta.info_hash);
    let out = ctx.out;
    let stop = stop_flag();
    if args.lock {
        check_memlock(&meta)?;
    }

    let session = start_placed_session(
        args.cores,
        Some(args.listen),
        args.place.locator()?,
        &args.limits,
    )?;
    out.line(format!(
        "checking {} ({}) against {hash}",
        root.display(),
        format_bytes(data_bytes(&meta))
    ));
    let handle = session
        .add_torrent(TorrentSpec {
            metainfo: meta.clone(),
            dest: dest.clone(),
            mode: TorrentMode::Seed,
            peers: Vec::new(),
            resident: false,
        })
        // Typed: data that is not the torrent's exits 5, a storage failure 6 (exit.rs).
        .with_context(|| format!("seeding `{}`", root.display()))?;
    let listen = session
        .listen_addr()
        .context("the engine did not report its listen address")?;
    out.line(format!("listening on {listen}"));
    out.event("listening", json!({"listen": listen.to_string()}));
    let announcer = start_announcing(
        &out,
        &session,
        &handle,
        &meta,
        &args.trackers,
        &args.place.tracker_place(),
    );

    let locked = if args.lock {
        let l = lock(&handle)?;
        out.line(format!(
            "locked {} in memory",
            format_bytes(l.locked_bytes())
        ));
        Some(l)
    } else {
        None
    };

    let started = Instant::now();
    let mut progress = Progress::seeding(ctx.style, &format!("seed {}", meta.info.name));
    let result = serve(&handle, &mut progress, &stop, None, |_| false);
    progress.finish();
    let stats = result?;
    let elapsed = started.elapsed();
    if let Some(a) = announcer {
        a.stop();
    }
    session.shutdown();

    out.line(format!(
        "stopped: sent {} to {} peer{} with a full copy",
        format_bytes(stats.uploaded_bytes),
        stats.peers_completed,
        if stats.peers_completed == 1 { "" } else { "s" }
    ));
    if stats.uploaded_bytes > 0 {
        out.line(upload_line(&stats));
    }
    let mut s = Summary::new("seed");
    s.ok = true;
    s.info_hash = Some(hash);
    s.name = Some(meta.info.name.clone());
    s.piece_size = Some(meta.info.piece_length);
    s.dest = Some(dest.display().to_string());
    s.listen = Some(listen.to_string());
    s.set_stats(&stats);
    s.bytes = Some(data_bytes(&meta));
    s.seconds = Some(elapsed.as_secs_f64());
    s.throughput_bytes_per_sec = Some(rate(stats.uploaded_bytes, elapsed));
    s.locked_bytes = locked.as_ref().map(|l| l.locked_bytes());
    out.summary(&s);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringswarm_engine::metainfo::{FileEntry, Info};

    fn meta(name: &str, multi_file: bool) -> Metainfo {
        let files = if multi_file {
            vec![FileEntry {
                path: vec!["a".into()],
                length: 5,
                offset: 0,
                pad: false,
            }]
        } else {
            vec![FileEntry {
                path: vec![],
                length: 5,
                offset: 0,
                pad: false,
            }]
        };
        Metainfo::from_info(
            Info {
                name: name.into(),
                piece_length: 16384,
                pieces: vec![[0; 20]],
                files,
                multi_file,
                total_length: 5,
                private: false,
            },
            vec![],
        )
    }

    #[test]
    fn data_dir_resolution() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        std::fs::write(base.join("blob"), b"hello").unwrap();
        std::fs::create_dir(base.join("tree")).unwrap();
        std::fs::write(base.join("tree/a"), b"hello").unwrap();

        let single = meta("blob", false);
        assert_eq!(resolve_data_dir(base, &single).unwrap(), base);
        assert_eq!(resolve_data_dir(&base.join("blob"), &single).unwrap(), base);

        let multi = meta("tree", true);
        assert_eq!(resolve_data_dir(base, &multi).unwrap(), base);
        assert_eq!(resolve_data_dir(&base.join("tree"), &multi).unwrap(), base);

        // Wrong kind: a directory named like a single-file torrent is not its data.
        let wrong = meta("tree", false);
        let e = resolve_data_dir(base, &wrong).unwrap_err();
        assert!(format!("{e:#}").contains("file `tree`"), "{e:#}");

        let e = resolve_data_dir(&base.join("missing"), &single).unwrap_err();
        assert!(format!("{e:#}").contains("missing"), "{e:#}");
        let other = meta("other", false);
        assert!(resolve_data_dir(base, &other).is_err());
    }
}
