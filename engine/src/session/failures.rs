//! Why each peer we dialled could not be used: the last failure per address, kept once per
//! torrent on the host (every core records into the same book), so an operator is told
//! once per peer and reason, not by every core at every redial, and `get` can say whom it
//! tried when it gives up.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Why a dialled peer could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerFailureReason {
    /// Nothing listens there (ECONNREFUSED).
    Refused,
    /// The connection was reset (ECONNRESET, EPIPE).
    Reset,
    /// The connect did not complete in time (no answer to SYN).
    ConnectTimedOut,
    /// No route, network down, host unreachable.
    Unreachable(String),
    /// Connected, but no handshake came in time.
    NoHandshake,
    /// Connected, but the peer closed before its handshake.
    ClosedBeforeHandshake,
    /// The peer's handshake named another torrent.
    WrongInfoHash,
    /// The peer is banned (it sent corrupt data).
    Banned,
    /// The peer sent a torrent's metadata that does not hash to the info-hash.
    BadMetadata,
    /// The peer broke the protocol (a bad handshake, a malformed message).
    Protocol(String),
    /// Anything else, said as the system said it.
    Other(String),
}

impl PeerFailureReason {
    /// The reason for a failed connect, send or receive, from its errno.
    pub fn from_io(err: &std::io::Error) -> PeerFailureReason {
        match err.raw_os_error() {
            Some(libc::ECONNREFUSED) => PeerFailureReason::Refused,
            Some(libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED) => PeerFailureReason::Reset,
            Some(libc::ETIMEDOUT) => PeerFailureReason::ConnectTimedOut,
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::ENETDOWN | libc::EHOSTDOWN) => {
                PeerFailureReason::Unreachable(err.to_string())
            }
            _ => PeerFailureReason::Other(err.to_string()),
        }
    }

    /// What a refused handshake (the driver's or the swarm core's reason) says about the
    /// peer we dialled.
    pub fn from_handshake_error(reason: &str) -> PeerFailureReason {
        if ringswarm_swarm::reasons::is_other_torrent(reason) {
            PeerFailureReason::WrongInfoHash
        } else if ringswarm_swarm::reasons::is_banned(reason) {
            PeerFailureReason::Banned
        } else {
            PeerFailureReason::Protocol(reason.to_owned())
        }
    }

    /// Whether an operator is told at `warn`: a peer closing before its handshake is most
    /// often a healthy one dropping a duplicate connection (both sides dialled at once) or
    /// full up, so that one is told at `info` only (it is still recorded and named when a
    /// download gives up).
    pub fn warns(&self) -> bool {
        !matches!(self, PeerFailureReason::ClosedBeforeHandshake)
    }

    /// True when the peer itself proved unusable for this torrent's data (as opposed to
    /// unreachable): it is banned for corrupt data.
    pub fn is_banned(&self) -> bool {
        matches!(self, PeerFailureReason::Banned)
    }
}

impl fmt::Display for PeerFailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerFailureReason::Refused => f.write_str("refused the connection"),
            PeerFailureReason::Reset => f.write_str("reset the connection"),
            PeerFailureReason::ConnectTimedOut => f.write_str("did not answer (connect timed out)"),
            PeerFailureReason::Unreachable(e) => write!(f, "is unreachable ({e})"),
            PeerFailureReason::NoHandshake => f.write_str("sent no handshake in time"),
            PeerFailureReason::ClosedBeforeHandshake => {
                f.write_str("closed the connection before its handshake")
            }
            PeerFailureReason::WrongInfoHash => {
                f.write_str("answered for another torrent (handshake with a wrong info-hash)")
            }
            PeerFailureReason::Banned => f.write_str("is banned (it sent corrupt data)"),
            PeerFailureReason::BadMetadata => {
                f.write_str("sent metadata that does not match the info-hash")
            }
            PeerFailureReason::Protocol(e) => write!(f, "broke the protocol ({e})"),
            PeerFailureReason::Other(e) => write!(f, "failed: {e}"),
        }
    }
}

/// The last failure of one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerFailure {
    pub addr: SocketAddr,
    pub reason: PeerFailureReason,
    /// Failures of this address since it last connected (any reason).
    pub attempts: u32,
}

impl fmt::Display for PeerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.addr, self.reason)?;
        if self.attempts > 1 {
            write!(f, " ({} attempts)", self.attempts)?;
        }
        Ok(())
    }
}

/// Addresses a torrent's book keeps at most: a tracker (or a hostile one) naming ever new
/// addresses to a long-running seed cannot grow it without bound. Past it, the address
/// whose last failure is the oldest is forgotten (and reported again if it fails again).
pub const MAX_FAILURES_KEPT: usize = 1024;

/// The failures of one torrent's dialled peers, shared by the host's cores.
#[derive(Debug, Default)]
pub struct PeerFailures {
    /// Each address's last failure, with the sequence number of that failure (for
    /// forgetting the least recent when full).
    book: Mutex<HashMap<SocketAddr, (PeerFailure, u64)>>,
    /// Bumped on every change, so a poller copies the book only when it changed.
    generation: AtomicU64,
}

impl PeerFailures {
    /// Records a failure of `addr`; true when it is news (the first failure of this
    /// address, or a reason other than its last one): the caller reports it then, and a
    /// redial that fails the same way again stays quiet.
    pub fn record(&self, addr: SocketAddr, reason: PeerFailureReason) -> bool {
        let Ok(mut book) = self.book.lock() else {
            return false;
        };
        let seq = self.generation.fetch_add(1, Ordering::Release);
        match book.get_mut(&addr) {
            Some((f, last)) => {
                *last = seq;
                f.attempts = f.attempts.saturating_add(1);
                if f.reason == reason {
                    false
                } else {
                    f.reason = reason;
                    true
                }
            }
            None => {
                if book.len() >= MAX_FAILURES_KEPT {
                    let oldest = book
                        .iter()
                        .min_by_key(|(_, (_, last))| *last)
                        .map(|(a, _)| *a);
                    if let Some(oldest) = oldest {
                        book.remove(&oldest);
                    }
                }
                book.insert(
                    addr,
                    (
                        PeerFailure {
                            addr,
                            reason,
                            attempts: 1,
                        },
                        seq,
                    ),
                );
                true
            }
        }
    }

    /// `addr` completed a handshake: its past failures are forgotten, so a later one is
    /// reported again.
    pub fn connected(&self, addr: SocketAddr) {
        if let Ok(mut book) = self.book.lock() {
            if book.remove(&addr).is_some() {
                self.generation.fetch_add(1, Ordering::Release);
            }
        }
    }

    /// Changes with every record; equal values mean an unchanged book.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Every address's last failure, sorted by address.
    pub fn snapshot(&self) -> Vec<PeerFailure> {
        let mut all: Vec<PeerFailure> = self
            .book
            .lock()
            .map(|b| b.values().map(|(f, _)| f.clone()).collect())
            .unwrap_or_default();
        all.sort_by_key(|f| f.addr);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_same_failure_again_is_not_news() {
        let book = PeerFailures::default();
        let a = addr("127.0.0.1:1");
        assert!(book.record(a, PeerFailureReason::Refused));
        assert!(!book.record(a, PeerFailureReason::Refused));
        assert!(!book.record(a, PeerFailureReason::Refused));
        assert!(
            book.record(a, PeerFailureReason::NoHandshake),
            "a new reason"
        );
        assert!(book.record(a, PeerFailureReason::Refused), "changed back");
        let all = book.snapshot();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].attempts, 5);
        assert_eq!(
            all[0].to_string(),
            "127.0.0.1:1 refused the connection (5 attempts)"
        );
    }

    #[test]
    fn addresses_are_apart_and_a_connection_forgets() {
        let book = PeerFailures::default();
        let (a, b) = (addr("127.0.0.1:1"), addr("[::1]:1"));
        assert!(book.record(a, PeerFailureReason::Refused));
        assert!(book.record(b, PeerFailureReason::Refused));
        let g = book.generation();
        book.connected(a);
        assert_ne!(book.generation(), g);
        assert_eq!(book.snapshot().len(), 1);
        assert!(
            book.record(a, PeerFailureReason::Refused),
            "news after a connection"
        );
    }

    #[test]
    fn the_book_is_bounded_and_forgets_the_least_recent() {
        let book = PeerFailures::default();
        let at = |i: usize| SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 1));
        for i in 0..MAX_FAILURES_KEPT {
            assert!(book.record(at(i), PeerFailureReason::Refused));
        }
        // Address 0 fails again: now the most recent; address 1 is the oldest.
        assert!(!book.record(at(0), PeerFailureReason::Refused));
        for i in MAX_FAILURES_KEPT..MAX_FAILURES_KEPT * 3 {
            book.record(at(i), PeerFailureReason::Refused);
            assert!(book.snapshot().len() <= MAX_FAILURES_KEPT);
            if i == MAX_FAILURES_KEPT {
                let kept = book.snapshot();
                assert!(kept.iter().any(|f| f.addr == at(0)), "recent kept");
                assert!(!kept.iter().any(|f| f.addr == at(1)), "oldest forgotten");
            }
        }
        assert_eq!(book.snapshot().len(), MAX_FAILURES_KEPT);
        assert!(
            book.record(at(1), PeerFailureReason::Refused),
            "a forgotten address is news again"
        );
    }

    #[test]
    fn handshake_reasons() {
        use PeerFailureReason as R;
        assert_eq!(
            R::from_handshake_error("peer answered for another torrent"),
            R::WrongInfoHash
        );
        assert_eq!(
            R::from_handshake_error("handshake for a torrent we do not have"),
            R::WrongInfoHash
        );
        assert_eq!(R::from_handshake_error("banned peer"), R::Banned);
        assert_eq!(
            R::from_handshake_error("bad handshake: x").to_string(),
            "broke the protocol (bad handshake: x)"
        );
    }

    #[test]
    fn errno_reasons() {
        let e = |n| std::io::Error::from_raw_os_error(n);
        assert_eq!(
            PeerFailureReason::from_io(&e(libc::ECONNREFUSED)),
            PeerFailureReason::Refused
        );
        assert_eq!(
            PeerFailureReason::from_io(&e(libc::ECONNRESET)),
            PeerFailureReason::Reset
        );
        assert_eq!(
            PeerFailureReason::from_io(&e(libc::ETIMEDOUT)),
            PeerFailureReason::ConnectTimedOut
        );
        assert!(matches!(
            PeerFailureReason::from_io(&e(libc::ENETUNREACH)),
            PeerFailureReason::Unreachable(_)
        ));
    }
}
