//! Fetching a torrent's info dict from peers over BEP 9, for `get <magnet>`.
//!
//! This runs once, before the transfer, on plain blocking sockets with timeouts: it moves a
//! few KiB, so it gains nothing from the io_uring data path, and keeping it apart keeps the
//! workers free of a "torrent without metadata" state. What to send and what to accept is
//! the swarm core's [`MetadataFetch`]; this file moves the bytes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringswarm_swarm::metadata::MetadataFetch;
use ringswarm_swarm::{InfoHash, PeerId};

use crate::metainfo::{Metainfo, MetainfoError};
use crate::session::{PeerFailureReason, PeerFailures};
use crate::wire::{self, Handshake, Message};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The last failure of each peer tried, in the order tried.
    #[error("no peer gave the metadata within {0:?}: {1}")]
    NoPeerAnswered(Duration, String),
    /// Every peer sent metadata that does not hash to the info-hash.
    #[error("no peer sent metadata matching the info-hash: {0}")]
    Mismatch(String),
    #[error("no peer to ask for the metadata: give one with --peer or x.pe in the magnet")]
    NoPeers,
    #[error("metadata from the peers does not describe a valid torrent: {0}")]
    BadMetadata(#[from] MetainfoError),
    /// `stop` turned true (the command was asked to stop).
    #[error("stopped while fetching the metadata")]
    Stopped,
}

/// How often a wait on a peer looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Asks `peers` in turn for the info dict of `info_hash` and checks it against the hash,
/// for `timeout` at most; ends within [`STOP_POLL`] of `stop` turning true (a connect in
/// progress may take up to its own timeout, 5 s at most).
pub fn fetch_metainfo(
    info_hash: [u8; 20],
    trackers: Vec<Vec<String>>,
    peers: &[SocketAddr],
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<Metainfo, FetchError> {
    if peers.is_empty() {
        return Err(FetchError::NoPeers);
    }
    let deadline = Instant::now() + timeout;
    // Each peer's failure is reported once per reason, and named when we give up.
    let failures = PeerFailures::default();
    // Peers may still be starting: go round the list until the deadline.
    'rounds: for round in 0u32.. {
        for addr in peers {
            if stop.load(Ordering::Relaxed) {
                return Err(FetchError::Stopped);
            }
            if Instant::now() >= deadline {
                break 'rounds;
            }
            match fetch_from(*addr, info_hash, deadline, stop) {
                Ok(info) => return Ok(Metainfo::from_info_bytes(&info, trackers)?),
                Err(_) if stop.load(Ordering::Relaxed) => return Err(FetchError::Stopped),
                Err(reason) => {
                    tracing::debug!(peer = %addr, round, "metadata not fetched: {reason}");
                    let (line, warns) = (reason.to_string(), reason.warns());
                    if failures.record(*addr, reason) && warns {
                        tracing::warn!("metadata: peer {addr} {line}");
                    }
                }
            }
        }
        std::thread::sleep(
            Duration::from_millis(200).min(deadline.saturating_duration_since(Instant::now())),
        );
    }
    let all = failures.snapshot();
    let tried: Vec<String> = peers
        .iter()
        .map(|a| match all.iter().find(|f| f.addr == *a) {
            Some(f) => f.to_string(),
            None => format!("{a} was not reached in time"),
        })
        .collect();
    let mismatch = !all.is_empty()
        && all.len() == peers.len()
        && all
            .iter()
            .all(|f| f.reason == PeerFailureReason::BadMetadata);
    if mismatch {
        Err(FetchError::Mismatch(tried.join("; ")))
    } else {
        Err(FetchError::NoPeerAnswered(timeout, tried.join("; ")))
    }
}

/// Why one peer gave no metadata.
fn io_reason(e: &std::io::Error, before_handshake: bool) -> PeerFailureReason {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof if before_handshake => {
            PeerFailureReason::ClosedBeforeHandshake
        }
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock if before_handshake => {
            PeerFailureReason::NoHandshake
        }
        _ => PeerFailureReason::from_io(e),
    }
}

fn fetch_from(
    addr: SocketAddr,
    info_hash: [u8; 20],
    deadline: Instant,
    stop: &AtomicBool,
) -> Result<Vec<u8>, PeerFailureReason> {
    let left = |d: Instant| {
        d.saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let s = TcpStream::connect_timeout(&addr, left(deadline).min(Duration::from_secs(5))).map_err(
        |e| match e.kind() {
            std::io::ErrorKind::TimedOut => PeerFailureReason::ConnectTimedOut,
            _ => PeerFailureReason::from_io(&e),
        },
    )?;
    // Every read and write may take only the time left, so a peer trickling a byte at a
    // time cannot stretch the deadline (a per-read timeout restarts with each byte).
    let mut s = DeadlineStream { s, deadline, stop };
    s.s.set_nodelay(true).ok();
    // The decisions (handshake rules, which pieces, the hash check) are the swarm core's;
    // this moves the bytes.
    let (hash, our_id) = (
        InfoHash(info_hash),
        PeerId(crate::session::random_peer_id()),
    );
    let mut fetch = MetadataFetch::new(hash, our_id);
    let send = |s: &mut DeadlineStream, fetch: &mut MetadataFetch| {
        let mut out = Vec::new();
        for msg in fetch.take_out() {
            msg.encode(hash, our_id, &mut out);
        }
        s.write_all(&out)
            .map_err(|e| PeerFailureReason::from_io(&e))
    };
    send(&mut s, &mut fetch)?;
    let mut hs = [0u8; wire::HANDSHAKE_LEN];
    s.read_exact(&mut hs).map_err(|e| io_reason(&e, true))?;
    let theirs = Handshake::decode(&hs)
        .map_err(|e| PeerFailureReason::Protocol(format!("bad handshake: {e}")))?;
    fetch
        .handshake(&theirs)
        .map_err(|e| PeerFailureReason::from_handshake_error(&e))?;
    send(&mut s, &mut fetch)?;
    let mut frame = Vec::new();
    loop {
        if Instant::now() >= deadline {
            return Err(PeerFailureReason::Other("no metadata in time".into()));
        }
        read_frame(&mut s, &mut frame)?;
        let Ok(msg) = Message::decode(&frame) else {
            continue;
        };
        let got = fetch.message(&msg).map_err(|e| {
            if e == ringswarm_swarm::reasons::METADATA_MISMATCH {
                PeerFailureReason::BadMetadata
            } else {
                PeerFailureReason::Protocol(e)
            }
        })?;
        if let Some(info) = got {
            return Ok(info);
        }
        send(&mut s, &mut fetch)?;
    }
}

/// A socket whose reads and writes fail with `TimedOut` once `deadline` has passed, or
/// with `Interrupted` once `stop` is set: each waits in slices of [`STOP_POLL`] at most,
/// never past the time left.
struct DeadlineStream<'a> {
    s: TcpStream,
    deadline: Instant,
    stop: &'a AtomicBool,
}

impl DeadlineStream<'_> {
    /// The next slice to wait, or why not to wait any more.
    fn slice(&self) -> std::io::Result<Duration> {
        if self.stop.load(Ordering::Relaxed) {
            // Not `Interrupted`: `read_exact` would retry that.
            return Err(std::io::Error::other("stopped"));
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "deadline passed",
            ));
        }
        Ok(left.min(STOP_POLL))
    }

    /// Runs `op` with a timeout of one slice at a time until it is done or fails otherwise.
    fn in_slices(
        &mut self,
        set: fn(&TcpStream, Option<Duration>) -> std::io::Result<()>,
        mut op: impl FnMut(&mut TcpStream) -> std::io::Result<usize>,
    ) -> std::io::Result<usize> {
        loop {
            let slice = self.slice()?;
            set(&self.s, Some(slice))?;
            match op(&mut self.s) {
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                done => return done,
            }
        }
    }
}

impl Read for DeadlineStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.in_slices(TcpStream::set_read_timeout, |s| s.read(buf))
    }
}

impl Write for DeadlineStream<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.in_slices(TcpStream::set_write_timeout, |s| s.write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.s.flush()
    }
}

/// Reads one length-prefixed frame body into `frame` (empty for a keep-alive).
fn read_frame(s: &mut impl Read, frame: &mut Vec<u8>) -> Result<(), PeerFailureReason> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).map_err(|e| io_reason(&e, false))?;
    let len = u32::from_be_bytes(len);
    if len > wire::DEFAULT_MAX_FRAME {
        return Err(PeerFailureReason::Protocol(format!(
            "message of {len} bytes exceeds the limit"
        )));
    }
    frame.resize(len as usize, 0);
    s.read_exact(frame).map_err(|e| io_reason(&e, false))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_trickling_peer_cannot_stretch_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // One byte of a handshake every 100 ms: each read gets a byte well within
            // any per-read timeout; the whole answer would take 6.8 s.
            for _ in 0..30 {
                if s.write_all(&[19]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let started = Instant::now();
        let got = fetch_metainfo(
            [7; 20],
            Vec::new(),
            &[addr],
            Duration::from_millis(700),
            &AtomicBool::new(false),
        );
        let took = started.elapsed();
        assert!(
            matches!(got, Err(FetchError::NoPeerAnswered(..))),
            "{got:?}"
        );
        assert!(took < Duration::from_millis(1500), "took {took:?}");
        peer.join().unwrap();
    }

    #[test]
    fn a_stop_ends_the_wait_on_a_mute_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopper = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // Accepted, never answered.
                let held = listener.accept();
                std::thread::sleep(Duration::from_millis(300));
                stop.store(true, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(500));
                drop(held);
            })
        };
        let started = Instant::now();
        let got = fetch_metainfo([7; 20], Vec::new(), &[addr], Duration::from_secs(20), &stop);
        let took = started.elapsed();
        assert!(matches!(got, Err(FetchError::Stopped)), "{got:?}");
        assert!(took < Duration::from_millis(700), "took {took:?}");
        stopper.join().unwrap();
    }

    #[test]
    fn the_error_names_each_peer_and_why() {
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let got = fetch_metainfo(
            [7; 20],
            Vec::new(),
            &[closed],
            Duration::from_millis(600),
            &AtomicBool::new(false),
        );
        let e = got.unwrap_err();
        assert!(matches!(e, FetchError::NoPeerAnswered(..)), "{e:?}");
        assert!(
            e.to_string()
                .contains(&format!("{closed} refused the connection")),
            "{e}"
        );
    }
}
