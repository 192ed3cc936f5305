//! `ringswarm get`: download a torrent (from a .torrent file or a magnet link).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ringswarm_engine::magnet::Magnet;
use ringswarm_engine::metadata_fetch::{fetch_metainfo, FetchError};
use ringswarm_engine::metainfo::{Metainfo, STATE_DIR};
use ringswarm_engine::session::{find_peers, tracker_tiers, Session, TorrentMode, TorrentSpec};
use ringswarm_engine::storage::survey::survey;
use ringswarm_engine::storage::Layout;
use serde_json::json;

use crate::args::{
    format_bytes, format_rate, parse_duration, parse_listen, parse_tracker_url, rate, resolve_peers,
};
use crate::common::{
    check_memlock, data_bytes, load_torrent, lock, serve, start_announcing, start_placed_session,
    stop_flag, upload_line, wait_complete, LimitArgs, PlaceArgs, WaitLimits, Waited,
};
use crate::exit::{failure, Code, StorageContext};
use crate::interrupt::stopped_error;
use crate::output::{Out, Summary};
use crate::progress::Progress;
use crate::Ctx;

/// How long to look for a magnet's metadata when neither --timeout nor --stall-timeout
/// bounds it.
const DEFAULT_METADATA_TIMEOUT: Duration = Duration::from_secs(60);

/// When the metadata phase (trackers, then peers) gives up, and the exit code then: the
/// earlier of --timeout (4) and --stall-timeout (3) from `now`; 60 s (3) when neither is set.
fn metadata_end(now: Instant, deadline: Option<Instant>, stall: Duration) -> (Instant, Code) {
    let stall_end = (!stall.is_zero()).then(|| now + stall);
    match (deadline, stall_end) {
        (Some(d), Some(s)) if d <= s => (d, Code::Timeout),
        (_, Some(s)) => (s, Code::NoPeer),
        (Some(d), None) => (d, Code::Timeout),
        (None, None) => (now + DEFAULT_METADATA_TIMEOUT, Code::NoPeer),
    }
}

/// Download a torrent into a directory.
///
/// SOURCE is a .torrent file or a magnet link (quote it in the shell). Peers come from
/// --peer, the magnet's x.pe addresses, and the trackers: --tracker and the torrent's (or
/// magnet's) own, udp:// only, announced to until the command exits. For a magnet, the
/// torrent's metadata is first fetched from those peers.
/// Files land at DEST/<name>. An interrupted download resumes where it stopped when run
/// again with the same DEST: only pieces not yet verified on disk are fetched (the record
/// in DEST/.ringswarm is trusted only for files unchanged since; others are hashed again).
/// Nothing is written through a symbolic link below DEST: one there is an error (DEST
/// itself may be a link). A file at DEST/<name> that holds other data is replaced piece by
/// piece, after a `replacing N of M pieces of FILE` warning (--no-clobber refuses instead).
/// One `get` at a time per DEST: a second one refuses (a lock in DEST/.ringswarm).
///
/// Gives up (exit 3) when no peer has been connected and nothing was verified for
/// --stall-timeout, naming each peer tried and why it failed; see `ringswarm --help` for
/// every exit code.
///
/// The command waits until every piece is verified and on disk (fsync), then:
///   - with --seed-for D, keeps serving the data to other peers for D, then exits;
///   - with --lock, locks the files in memory and holds the lock (and keeps serving)
///     until Ctrl-C, or for --seed-for if given: a lock lasts only while the process runs;
///   - otherwise exits at once.
#[derive(Debug, clap::Args)]
#[command(
    verbatim_doc_comment,
    about = "Download a torrent (a .torrent file or a magnet link) into a directory"
)]
pub struct Args {
    /// A .torrent file or a magnet link.
    #[arg(value_name = "FILE.torrent|MAGNET")]
    pub source: String,

    /// The directory to download into (created if missing).
    #[arg(value_name = "DEST-DIR")]
    pub dest: PathBuf,

    /// A peer to fetch from, HOST:PORT (names are resolved); repeat for more.
    #[arg(long = "peer", value_name = "HOST:PORT")]
    pub peers: Vec<String>,

    /// Address to accept peers on, so other receivers can fetch from this one
    /// (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:0", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// A UDP tracker to find peers through, udp://HOST:PORT[/PATH], besides the torrent's
    /// (or the magnet's) own; repeat for more (each is a tier of its own).
    #[arg(long = "tracker", value_name = "URL", value_parser = parse_tracker_url)]
    pub trackers: Vec<String>,

    /// After the download, keep serving it for this long (e.g. 30s, 10m, 1h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub seed_for: Option<Duration>,

    /// After the download, lock the files in memory (mlock) and hold them; see above.
    /// RLIMIT_MEMLOCK is checked first: a limit below the torrent's size (without
    /// CAP_IPC_LOCK) fails before anything is downloaded.
    #[arg(long)]
    pub lock: bool,

    /// Refuse (exit 1) when a file of the torrent already exists in DEST holding other
    /// data, instead of replacing it.
    #[arg(long)]
    pub no_clobber: bool,

    /// Give up (exit 3) after this long with no connected peer and no piece verified,
    /// naming each peer tried and why it failed; 0 never gives up. Also bounds a
    /// magnet's metadata phase (trackers, then peers), with --timeout if sooner.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub stall_timeout: Duration,

    #[command(flatten)]
    pub place: PlaceArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    /// Worker threads, one per core [default: all online CPUs].
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub cores: usize,

    /// Give up (exit 4) if the download (metadata included) is not complete within this
    /// time [default: no limit; a magnet's metadata is looked for --stall-timeout at
    /// most, 60s when that is 0].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

/// True when `source` is a magnet link rather than a file name.
pub fn is_magnet(source: &str) -> bool {
    source
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("magnet:"))
}

/// What SOURCE names, read before anything is started.
enum Wanted {
    Torrent(Metainfo),
    Magnet(Magnet),
}

fn parse_source(source: &str) -> Result<Wanted> {
    if is_magnet(source) {
        Ok(Wanted::Magnet(
            Magnet::parse(source).context("invalid magnet link")?,
        ))
    } else {
        Ok(Wanted::Torrent(load_torrent(Path::new(source))?))
    }
}

/// The torrent and the peers to fetch it from.
struct Source {
    meta: Metainfo,
    peers: Vec<SocketAddr>,
    metadata_seconds: Option<f64>,
}

/// Finds the metainfo and the first peers. A magnet without peer addresses asks its
/// trackers (and --tracker) for some first, then fetches the metadata, both bounded by
/// [`metadata_end`] and stopped by `stop`; a .torrent needs peers or a tracker.
fn resolve_source(
    args: &Args,
    wanted: Wanted,
    session: &Session,
    deadline: Option<Instant>,
    stop: &AtomicBool,
) -> Result<Source> {
    match wanted {
        Wanted::Magnet(magnet) => {
            let mut names = magnet.peers.clone();
            names.extend(args.peers.iter().cloned());
            let mut peers = resolve_peers(&names)?;
            let started = Instant::now();
            let (end, end_code) = metadata_end(started, deadline, args.stall_timeout);
            // Past `end` a failure is the bound's (4 for --timeout); before it, no peer (3).
            let code_at_end = || {
                if Instant::now() >= end {
                    end_code
                } else {
                    Code::NoPeer
                }
            };
            let trackers: Vec<Vec<String>> =
                magnet.trackers.iter().map(|t| vec![t.clone()]).collect();
            if peers.is_empty() {
                let mut tiers: Vec<Vec<String>> =
                    args.trackers.iter().map(|t| vec![t.clone()]).collect();
                tiers.extend(trackers.iter().cloned());
                if tiers.is_empty() {
                    bail!(
                        "the magnet link names no peer (x.pe) and no tracker (tr): \
                     give one with --peer HOST:PORT or --tracker URL"
                    );
                }
                let port = session.listen_addr().map_or(0, |a| a.port());
                peers = find_peers(
                    tiers,
                    magnet.info_hash,
                    session.peer_id(),
                    port,
                    &args.place.tracker_place(),
                    end,
                )
                .map_err(|e| {
                    if crate::interrupt::interrupted(stop) {
                        return stopped_error("while asking the trackers for peers");
                    }
                    failure(
                        code_at_end(),
                        format!("no peer to fetch the metadata from: {e}"),
                    )
                })?;
            }
            let hash = ringswarm_engine::hex(&magnet.info_hash);
            let left = end.saturating_duration_since(Instant::now());
            let meta =
                fetch_metainfo(magnet.info_hash, trackers, &peers, left, stop).map_err(|e| {
                    let code = match &e {
                        FetchError::Stopped => {
                            return stopped_error(format!("while fetching the metadata of {hash}"))
                        }
                        FetchError::BadMetadata(_) | FetchError::Mismatch(_) => Code::Unverifiable,
                        _ => code_at_end(),
                    };
                    failure(code, format!("fetching the metadata of {hash}: {e}"))
                })?;
            Ok(Source {
                meta,
                peers,
                metadata_seconds: Some(started.elapsed().as_secs_f64()),
            })
        }
        Wanted::Torrent(meta) => {
            let peers = resolve_peers(&args.peers)?;
            if peers.is_empty() && tracker_tiers(&meta, &args.trackers).is_empty() {
                bail!(
                    "no peer to download from: the torrent names no tracker; \
                 give one with --peer HOST:PORT or --tracker URL"
                );
            }
            Ok(Source {
                meta,
                peers,
                metadata_seconds: None,
            })
        }
    }
}

fn prepare_dest(dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest)
        .storage_context(|| format!("creating destination directory `{}`", dest.display()))?;
    let m =
        std::fs::metadata(dest).storage_context(|| format!("destination `{}`", dest.display()))?;
    if !m.is_dir() {
        bail!("destination `{}` is not a directory", dest.display());
    }
    Ok(())
}

/// Takes the destination's lock (`DEST/.ringswarm/get.lock`, an exclusive `flock`), held
/// while the returned file is open: a second `get` into the same DEST refuses at once
/// rather than racing the first over the same files and record. None when the state
/// directory is not a plain directory (a link): opening the storage refuses that with its
/// own message, and nothing is written through the link here.
fn lock_dest(dest: &Path) -> Result<Option<File>> {
    let state = dest.join(STATE_DIR);
    match std::fs::symlink_metadata(&state) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::create_dir(&state) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e).storage_context(|| format!("creating `{}`", state.display()));
            }
        },
        Err(e) => return Err(e).storage_context(|| format!("`{}`", state.display())),
    }
    let path = state.join("get.lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .storage_context(|| format!("opening the lock `{}`", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            // Who holds it, for the message of the one refused.
            let _ = file.set_len(0);
            let _ = writeln!(file, "{}", std::process::id());
            Ok(Some(file))
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => String::new(),
                pid => format!(" (pid {pid})"),
            };
            bail!(
                "destination `{}` is in use by another `ringswarm get`{holder}: it holds `{}`; \
                 wait for it to finish or choose another destination",
                dest.display(),
                path.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).storage_context(|| format!("locking `{}`", path.display()))
        }
    }
}

/// Says which existing files a download would overwrite (`replacing N of M pieces of
/// FILE`), before it does; with --no-clobber, refuses instead.
fn check_existing(out: &Out, args: &Args, meta: &Metainfo) -> Result<()> {
    let layout = Layout::from_metainfo(meta);
    let found = survey(&args.dest, &meta.info_hash, &layout, &meta.info.pieces)
        .storage_context(|| format!("reading what `{}` holds", args.dest.display()))?;
    for f in found.iter().filter(|f| f.differing > 0) {
        let path = f.path.display();
        if args.no_clobber {
            bail!(
                "`{path}` already exists with other data ({} of {} pieces differ from the \
                 torrent); --no-clobber refuses to replace it",
                f.differing,
                f.pieces
            );
        }
        out.warn(format!(
            "replacing {} of {} pieces of {path}",
            f.differing, f.pieces
        ));
        out.event(
            "replacing",
            json!({"path": path.to_string(), "pieces": f.differing, "of": f.pieces}),
        );
    }
    Ok(())
}

pub fn run(ctx: Ctx, args: Args) -> Result<()> {
    let out = ctx.out;
    let stop = stop_flag();
    let deadline = args.timeout.map(|t| Instant::now() + t);
    let wanted = parse_source(&args.source)?;
    // --lock beyond RLIMIT_MEMLOCK fails before anything starts (a magnet's size is known
    // only once its metadata is fetched: it is checked then, still before downloading).
    if let (true, Wanted::Torrent(meta)) = (args.lock, &wanted) {
        check_memlock(meta)?;
    }
    // The destination is taken before any peer or tracker is asked, so a second `get`
    // into it refuses at once, even while the first still fetches a magnet's metadata.
    prepare_dest(&args.dest)?;
    // Held until the process exits.
    let _dest_lock = lock_dest(&args.dest)?;

    // Listening first, so a magnet's tracker announce can give our real port.
    let session = start_placed_session(
        args.cores,
        Some(args.listen),
        args.place.locator()?,
        &args.limits,
    )?;
    if let Some(a) = session.listen_addr() {
        out.event("listening", json!({"listen": a.to_string()}));
    }
    let source = resolve_source(&args, wanted, &session, deadline, &stop)?;
    let meta = Arc::new(source.meta);
    let hash = ringswarm_engine::hex(&meta.info_hash);
    if args.lock {
        check_memlock(&meta)?;
    }
    check_existing(&out, &args, &meta)?;
    // A first signal during the survey of DEST is seen here (a second one exits at once).
    if crate::interrupt::interrupted(&stop) {
        session.shutdown();
        return Err(stopped_error("before the download started"));
    }
    let root = args.dest.join(&meta.info.name);

    let started = Instant::now();
    let handle = session
        .add_torrent(TorrentSpec {
            metainfo: meta.clone(),
            dest: args.dest.clone(),
            mode: TorrentMode::Download,
            peers: source.peers.clone(),
            // --lock locks the files once complete: keep their pages as they are written.
            resident: args.lock,
        })
        .with_context(|| format!("downloading into `{}`", root.display()))?;
    let resumed = handle.stats().verified_bytes;
    let listen = session.listen_addr();
    out.line(format!(
        "getting {} ({}, {hash}) into {} from {} peer{}{}",
        meta.info.name,
        format_bytes(data_bytes(&meta)),
        root.display(),
        source.peers.len(),
        if source.peers.len() == 1 { "" } else { "s" },
        listen.map_or(String::new(), |a| format!("; listening on {a}"))
    ));
    let announcer = start_announcing(
        &out,
        &session,
        &handle,
        &meta,
        &args.trackers,
        &args.place.tracker_place(),
    );
    out.event(
        "started",
        json!({
            "info_hash": hash,
            "name": meta.info.name,
            "bytes": data_bytes(&meta),
            "dest": args.dest.display().to_string(),
            "peers": source.peers.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "resumed_bytes": resumed,
        }),
    );
    if source.peers.is_empty() && announcer.is_none() {
        bail!(
            "no peer to download from: none of the torrent's trackers is usable (udp:// only); \
             give a peer with --peer HOST:PORT"
        );
    }
    if resumed > 0 {
        out.line(format!(
            "resuming: {} already verified",
            format_bytes(resumed)
        ));
    }

    let mut progress = Progress::transfer(
        ctx.style,
        &format!("get {}", meta.info.name),
        meta.info.total_length,
    );
    let limits = WaitLimits {
        deadline: deadline.zip(args.timeout),
        stall: Some(args.stall_timeout).filter(|d| !d.is_zero()),
    };
    let waited = wait_complete(&out, &handle, &mut progress, &stop, limits);
    progress.finish();
    let (how, stats) = waited?;
    if how == Waited::Interrupted {
        drop(announcer);
        session.shutdown();
        return Err(stopped_error(format!(
            "with {} of {} verified; run the same command again to resume",
            format_bytes(stats.verified_bytes),
            format_bytes(stats.total_bytes)
        )));
    }
    let took = started.elapsed();
    out.event(
        "complete",
        json!({"seconds": took.as_secs_f64(), "downloaded_bytes": stats.downloaded_bytes}),
    );
    out.line(format!(
        "done: {} in {:.1}s ({}), {} received, {} hash failure{}",
        root.display(),
        took.as_secs_f64(),
        format_rate(rate(stats.downloaded_bytes, took)),
        format_bytes(stats.downloaded_bytes),
        stats.hash_failures,
        if stats.hash_failures == 1 { "" } else { "s" }
    ));

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

    let mut final_stats = stats;
    let seed_until = match (args.seed_for, args.lock) {
        (Some(d), _) => Some(Some(Instant::now() + d)),
        (None, true) => Some(None),
        (None, false) => None,
    };
    if let Some(until) = seed_until {
        match args.seed_for {
            Some(d) => out.line(format!("seeding for {}", humantime::format_duration(d))),
            None => out.line("holding the lock and seeding until Ctrl-C"),
        }
        let mut progress = Progress::seeding(ctx.style, &format!("seed {}", meta.info.name));
        let served = serve(&handle, &mut progress, &stop, until, |_| false);
        progress.finish();
        final_stats = served?;
    }
    if let Some(a) = announcer {
        a.stop();
    }
    session.shutdown();
    if final_stats.uploaded_bytes > 0 || final_stats.downloaded_outside_rack_bytes > 0 {
        out.line(upload_line(&final_stats));
    }

    let mut s = Summary::new("get");
    s.ok = true;
    s.info_hash = Some(hash);
    s.name = Some(meta.info.name.clone());
    s.piece_size = Some(meta.info.piece_length);
    s.dest = Some(args.dest.display().to_string());
    s.listen = listen.map(|a| a.to_string());
    s.set_stats(&final_stats);
    s.bytes = Some(data_bytes(&meta));
    s.resumed_bytes = Some(resumed);
    s.seconds = Some(took.as_secs_f64());
    s.throughput_bytes_per_sec = Some(rate(final_stats.downloaded_bytes, took));
    s.metadata_seconds = source.metadata_seconds;
    s.locked_bytes = locked.as_ref().map(|l| l.locked_bytes());
    out.summary(&s);
    drop(locked);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_phase_ends_at_the_first_bound() {
        let now = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(
            metadata_end(now, Some(now + s(7200)), s(60)),
            (now + s(60), Code::NoPeer),
            "--timeout 2h with the default stall: the stall bounds it"
        );
        assert_eq!(
            metadata_end(now, Some(now + s(2)), s(60)),
            (now + s(2), Code::Timeout)
        );
        assert_eq!(
            metadata_end(now, Some(now + s(5)), Duration::ZERO),
            (now + s(5), Code::Timeout)
        );
        assert_eq!(metadata_end(now, None, s(3)), (now + s(3), Code::NoPeer));
        assert_eq!(
            metadata_end(now, None, Duration::ZERO),
            (now + DEFAULT_METADATA_TIMEOUT, Code::NoPeer)
        );
    }

    #[test]
    fn magnet_detection() {
        assert!(is_magnet("magnet:?xt=urn:btih:abc"));
        assert!(is_magnet("MAGNET:?xt"));
        assert!(!is_magnet("magnet.torrent"));
        assert!(!is_magnet("./magnet:x"));
        assert!(!is_magnet("m"));
        assert!(!is_magnet("ma\u{e9}gnet:"), "non-ASCII must not panic");
    }
}
