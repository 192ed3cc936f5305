//! `ringswarm demo`: a whole swarm in one process, on loopback.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ringswarm_engine::session::{
    announce_torrent, tracker_tiers, Session, TorrentHandle, TorrentMode, TorrentSpec, TrackerPlace,
};
use ringswarm_engine::tracker::client::AnnouncerHandle;
use ringswarm_engine::tracker::server::{TrackerConfig, TrackerServer};
use ringswarm_engine::tracker::store::StoreConfig;
use ringswarm_engine::verify::{Digest, Sha1Stream};

use crate::args::{format_bytes, format_rate, parse_nonzero_size, parse_piece_size, rate};
use crate::common::{start_session, stop_flag};
use crate::create::make_metainfo;
use crate::interrupt::interrupted;
use crate::output::{ReceiverSummary, Summary};
use crate::progress::{poll_interval, Progress};
use crate::Ctx;

/// The demo fails when no receiver makes progress for this long.
const STALL_LIMIT: Duration = Duration::from_secs(60);
/// The blob's file name.
const BLOB_NAME: &str = "demo.bin";
/// Seed of the blob's generator: the same size always gives the same bytes.
const BLOB_SEED: u64 = 0x5eed_b10b_2026_0001;

/// Run a swarm on this machine: a tracker, one seeder and N receivers, all in this process
/// on 127.0.0.1.
///
/// Writes a pseudo-random blob (deterministic), starts a UDP tracker, makes the blob's
/// torrent naming that tracker, starts a seeder and N receivers (each receiver also
/// serves; all of them find each other through the tracker alone, so they share pieces
/// with each other), waits for all, checks every copy
/// against the original (SHA-1 of the whole file), prints each receiver's time and
/// throughput and the total, and removes its working directory.
///
/// Exits non-zero if any copy differs.
#[derive(Debug, clap::Args)]
#[command(
    verbatim_doc_comment,
    about = "Run a whole swarm on this machine (one seeder, N receivers) and check every copy"
)]
pub struct Args {
    /// Size of the blob: 256M, 1G, 8MiB, 1048576...
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = parse_nonzero_size)]
    pub size: u64,

    /// Number of receivers.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub receivers: u32,

    /// Where to make the working directory (a fresh `ringswarm-demo-*` directory inside
    /// it, removed at the end) [default: the system temp dir, usually /tmp].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Worker threads per session (the seeder and each receiver is one session);
    /// 0: all online CPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cores: usize,

    /// Piece size: a power of two from 16K to 256M, or auto (about 1024 pieces, 1M to 16M).
    #[arg(long, value_name = "SIZE", default_value = "auto", value_parser = parse_piece_size)]
    pub piece_size: u64,

    /// Keep the working directory instead of removing it.
    #[arg(long)]
    pub keep: bool,
}

/// A working directory removed on drop (unless kept), on success and on failure alike.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    fn create(base: &Path, keep: bool) -> Result<WorkDir> {
        std::fs::create_dir_all(base).with_context(|| format!("creating `{}`", base.display()))?;
        for _ in 0..16 {
            let name = format!(
                "ringswarm-demo-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            );
            let path = base.join(name);
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(WorkDir { path, keep }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating `{}`", path.display())),
            }
        }
        bail!("could not make a fresh directory in `{}`", base.display())
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept {}", self.path.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!(
                "ringswarm: warning: could not remove `{}`: {e}",
                self.path.display()
            );
        }
    }
}

/// xorshift64*: fast, deterministic, good enough for incompressible test data.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }
}

/// Writes `size` pseudo-random bytes to `path`; returns their SHA-1.
pub fn write_blob(path: &Path, size: u64, seed: u64) -> Result<Digest> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating `{}`", path.display()))?;
    let mut rng = Prng(seed | 1);
    let mut hash = Sha1Stream::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        hash.update(&buf[..n]);
        f.write_all(&buf[..n])
            .with_context(|| format!("writing `{}`", path.display()))?;
        left -= n as u64;
    }
    f.sync_all()
        .with_context(|| format!("writing `{}`", path.display()))?;
    Ok(hash.finish())
}

/// SHA-1 and length of a file.
pub fn hash_file(path: &Path) -> Result<(Digest, u64)> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("opening `{}`", path.display()))?;
    let mut hash = Sha1Stream::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut len = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading `{}`", path.display()))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hash.finish(), len))
}

struct Receiver {
    session: Session,
    handle: TorrentHandle,
    announcer: AnnouncerHandle,
    dest: PathBuf,
    done_after: Option<Duration>,
}

pub fn run(ctx: Ctx, args: Args) -> Result<()> {
    let out = ctx.out;
    let stop = stop_flag();
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = WorkDir::create(&base, args.keep)?;
    let seed_dir = work.path.join("seed");
    std::fs::create_dir(&seed_dir).with_context(|| format!("creating `{}`", seed_dir.display()))?;
    let blob = seed_dir.join(BLOB_NAME);

    let t = Instant::now();
    let original = write_blob(&blob, args.size, BLOB_SEED)?;
    out.line(format!(
        "wrote a {} blob in {:.2}s: {}",
        format_bytes(args.size),
        t.elapsed().as_secs_f64(),
        blob.display()
    ));

    let loopback: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let tracker = TrackerServer::start(TrackerConfig {
        listen: loopback,
        topology: None,
        cores: 1,
        // Every receiver announces from 127.0.0.1: raise the per-address bound (8).
        store: StoreConfig {
            max_peers_per_address: 128,
            ..StoreConfig::default()
        },
        ..TrackerConfig::default()
    })
    .context("starting the demo's tracker")?;
    let tracker_url = format!("udp://{}/announce", tracker.local_addr());
    out.line(format!("tracker listening on {tracker_url}"));

    let t = Instant::now();
    let meta = Arc::new(make_metainfo(
        &blob,
        args.piece_size,
        std::slice::from_ref(&tracker_url),
    )?);
    let tiers = tracker_tiers(&meta, &[]);
    let hash = ringswarm_engine::hex(&meta.info_hash);
    out.line(format!(
        "made its torrent in {:.2}s: {} pieces of {}, info-hash {hash}",
        t.elapsed().as_secs_f64(),
        meta.piece_count(),
        format_bytes(meta.info.piece_length)
    ));

    let seeder = start_session(args.cores, Some(loopback))?;
    let seeder_handle = seeder
        .add_torrent(TorrentSpec {
            metainfo: meta.clone(),
            dest: seed_dir.clone(),
            mode: TorrentMode::Seed,
            peers: Vec::new(),
            resident: false,
        })
        .context("starting the seeder")?;
    let seeder_addr = seeder
        .listen_addr()
        .context("the seeder did not report its listen address")?;
    out.line(format!("seeder listening on {seeder_addr}"));
    let seeder_announcer = announce_torrent(
        &seeder_handle,
        tiers.clone(),
        seeder.peer_id(),
        seeder_addr,
        &TrackerPlace::default(),
    );

    let started = Instant::now();
    let mut receivers: Vec<Receiver> = Vec::new();
    for i in 0..args.receivers as usize {
        let dest = work.path.join(format!("receiver-{}", i + 1));
        std::fs::create_dir(&dest).with_context(|| format!("creating `{}`", dest.display()))?;
        let session = start_session(args.cores, Some(loopback))
            .with_context(|| format!("starting receiver {}", i + 1))?;
        let handle = session
            .add_torrent(TorrentSpec {
                metainfo: meta.clone(),
                dest: dest.clone(),
                mode: TorrentMode::Download,
                peers: Vec::new(),
                resident: false,
            })
            .with_context(|| format!("starting receiver {}", i + 1))?;
        let addr = session
            .listen_addr()
            .with_context(|| format!("receiver {} did not report its address", i + 1))?;
        let announcer = announce_torrent(
            &handle,
            tiers.clone(),
            session.peer_id(),
            addr,
            &TrackerPlace::default(),
        );
        receivers.push(Receiver {
            session,
            handle,
            announcer,
            dest,
            done_after: None,
        });
    }
    out.line(format!(
        "{} receiver{} started",
        receivers.len(),
        if receivers.len() == 1 { "" } else { "s" }
    ));

    let total = meta.info.total_length * receivers.len() as u64;
    let mut progress = Progress::transfer(ctx.style, "demo", total);
    let waited = wait_all(&mut receivers, &mut progress, &stop, started, total);
    progress.finish();
    waited?;
    let elapsed = started.elapsed();

    let final_stats: Vec<_> = receivers.iter().map(|r| r.handle.stats()).collect();
    let seeder_stats = seeder_handle.stats();
    let mut dests = Vec::new();
    for r in receivers {
        r.announcer.stop();
        r.session.shutdown();
        dests.push((r.dest, r.done_after.unwrap_or(elapsed)));
    }
    seeder_announcer.stop();
    seeder.shutdown();
    tracker.shutdown();

    let mut summaries = Vec::new();
    let mut bad = Vec::new();
    for (i, ((dest, took), stats)) in dests.iter().zip(&final_stats).enumerate() {
        let copy = dest.join(BLOB_NAME);
        let (digest, len) = hash_file(&copy)?;
        let verified = digest == original && len == args.size;
        if !verified {
            bad.push(i + 1);
        }
        out.line(format!(
            "receiver {}: {:.2}s, {}, received {} ({} sent to others), {} hash failure{}: {}",
            i + 1,
            took.as_secs_f64(),
            format_rate(rate(args.size, *took)),
            format_bytes(stats.downloaded_bytes),
            format_bytes(stats.uploaded_bytes),
            stats.hash_failures,
            if stats.hash_failures == 1 { "" } else { "s" },
            if verified {
                "copy identical"
            } else {
                "COPY DIFFERS"
            }
        ));
        summaries.push(ReceiverSummary {
            index: i + 1,
            seconds: took.as_secs_f64(),
            throughput_bytes_per_sec: rate(args.size, *took),
            downloaded_bytes: stats.downloaded_bytes,
            uploaded_bytes: stats.uploaded_bytes,
            hash_failures: stats.hash_failures,
            verified,
        });
    }
    let delivered = args.size * summaries.len() as u64;
    out.line(format!(
        "total: {} cop{} of {} in {:.2}s, {} aggregate; the seeder sent {}",
        summaries.len(),
        if summaries.len() == 1 { "y" } else { "ies" },
        format_bytes(args.size),
        elapsed.as_secs_f64(),
        format_rate(rate(delivered, elapsed)),
        format_bytes(seeder_stats.uploaded_bytes)
    ));

    let mut s = Summary::new("demo");
    s.ok = bad.is_empty();
    s.info_hash = Some(hash);
    s.name = Some(meta.info.name.clone());
    s.bytes = Some(args.size);
    s.piece_count = Some(meta.piece_count());
    s.piece_size = Some(meta.info.piece_length);
    s.listen = Some(seeder_addr.to_string());
    s.seconds = Some(elapsed.as_secs_f64());
    s.throughput_bytes_per_sec = Some(rate(delivered, elapsed));
    s.peers = Some(summaries.len() as u32);
    s.downloaded_bytes = Some(final_stats.iter().map(|x| x.downloaded_bytes).sum());
    s.uploaded_bytes = Some(seeder_stats.uploaded_bytes);
    s.hash_failures = Some(final_stats.iter().map(|x| x.hash_failures).sum());
    s.banned_peers = Some(final_stats.iter().map(|x| x.banned_peers).sum());
    s.receivers = Some(summaries);
    if !bad.is_empty() {
        let which: Vec<String> = bad.iter().map(ToString::to_string).collect();
        bail!(
            "the copy of receiver {} differs from the original",
            which.join(", ")
        );
    }
    out.summary(&s);
    Ok(())
}

/// Waits until every receiver is complete, noting when each one finished.
fn wait_all(
    receivers: &mut [Receiver],
    progress: &mut Progress,
    stop: &std::sync::atomic::AtomicBool,
    started: Instant,
    total: u64,
) -> Result<()> {
    let mut last_done = 0u64;
    let mut last_change = Instant::now();
    loop {
        let mut done = 0u64;
        let mut peers = 0u32;
        let mut all = true;
        for (i, r) in receivers.iter_mut().enumerate() {
            let s = r.handle.stats();
            if let Some(e) = &s.error {
                bail!("receiver {} failed: {e}", i + 1);
            }
            done += s.verified_bytes;
            peers += s.connected_peers;
            if s.complete {
                r.done_after.get_or_insert_with(|| started.elapsed());
            } else {
                all = false;
            }
        }
        progress.update_transfer(done, total, peers);
        if all {
            return Ok(());
        }
        if interrupted(stop) {
            bail!("interrupted");
        }
        if done != last_done {
            last_done = done;
            last_change = Instant::now();
        } else if last_change.elapsed() > STALL_LIMIT {
            bail!(
                "no progress for {}s ({} of {} bytes verified across receivers)",
                STALL_LIMIT.as_secs(),
                done,
                total
            );
        }
        std::thread::sleep(poll_interval());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_is_deterministic_and_hash_matches() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        let ha = write_blob(&a, 1_000_003, 7).unwrap();
        let hb = write_blob(&b, 1_000_003, 7).unwrap();
        assert_eq!(ha, hb);
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(hash_file(&a).unwrap(), (ha, 1_000_003));
        let hc = write_blob(&b, 1_000_003, 8).unwrap();
        assert_ne!(ha, hc);
    }

    #[test]
    fn workdir_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let path = {
            let w = WorkDir::create(tmp.path(), false).unwrap();
            std::fs::write(w.path.join("x"), b"x").unwrap();
            w.path.clone()
        };
        assert!(!path.exists());
    }
}
