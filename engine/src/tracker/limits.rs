//! Bounds shared by every core's [`super::store::Store`]: the tracker-wide peer cap
//! (`--max-peers`) and the per-source budget of new torrents per minute.
//!
//! Torrents are sharded across cores by info-hash, so a source's torrents and the total
//! peer count span every shard: these two bounds cannot live in one shard. The peer count
//! is one atomic (touched only when a peer is added or removed, not on re-announces); the
//! creation budget is a small map behind a mutex, locked only when a new info-hash arrives.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::hostaddr::host_group;

/// Sources remembered per minute by the creation budget: beyond this many distinct sources
/// creating torrents in one minute, further new sources are refused until the minute ends
/// (keeps the map bounded: ≈ 50 bytes a source, ≈ 12 MiB at most).
pub const MAX_CREATING_SOURCES: usize = 262_144;

/// Why the creation budget refused a new torrent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreationRefusal {
    /// This source created its allowance this minute.
    SourceBudget,
    /// Too many distinct sources created torrents this minute.
    TooManySources,
}

/// Torrents created per source host in the current minute (`now / 60`), pure. A host is an
/// IPv4 address or an IPv6 /64 ([`host_group`]), so rotating through a /64 gains nothing.
#[derive(Debug)]
pub struct CreationBudget {
    per_minute: usize,
    max_sources: usize,
    minute: u64,
    counts: HashMap<IpAddr, u32>,
}

impl CreationBudget {
    /// At most `per_minute` creations per source and minute, `max_sources` sources a minute.
    pub fn new(per_minute: usize, max_sources: usize) -> CreationBudget {
        CreationBudget {
            per_minute,
            max_sources,
            minute: 0,
            counts: HashMap::new(),
        }
    }

    fn roll(&mut self, now: u64) {
        let minute = now / 60;
        if minute != self.minute {
            self.minute = minute;
            self.counts.clear();
            if self.counts.capacity() > 1024 {
                self.counts.shrink_to(1024);
            }
        }
    }

    /// Whether `source` may create one more torrent at `now` (seconds); nothing is recorded.
    pub fn check(&mut self, source: IpAddr, now: u64) -> Result<(), CreationRefusal> {
        self.roll(now);
        match self.counts.get(&host_group(source)) {
            Some(&n) if n as usize >= self.per_minute => Err(CreationRefusal::SourceBudget),
            Some(_) => Ok(()),
            None if self.per_minute == 0 => Err(CreationRefusal::SourceBudget),
            None if self.counts.len() >= self.max_sources => Err(CreationRefusal::TooManySources),
            None => Ok(()),
        }
    }

    /// Records one creation by `source` at `now` (after [`CreationBudget::check`] passed).
    pub fn record(&mut self, source: IpAddr, now: u64) {
        self.roll(now);
        let n = self.counts.entry(host_group(source)).or_insert(0);
        *n = n.saturating_add(1);
    }

    /// Sources remembered this minute.
    pub fn sources(&self) -> usize {
        self.counts.len()
    }
}

/// The bounds every store of one tracker shares (clone the `Arc` into each).
#[derive(Debug)]
pub struct Limits {
    peers: AtomicUsize,
    max_peers: usize,
    creations: Mutex<CreationBudget>,
}

impl Limits {
    /// At most `max_peers` peers in all; `new_torrents_per_minute` per source address.
    pub fn new(max_peers: usize, new_torrents_per_minute: usize) -> Limits {
        Limits {
            peers: AtomicUsize::new(0),
            max_peers,
            creations: Mutex::new(CreationBudget::new(
                new_torrents_per_minute,
                MAX_CREATING_SOURCES,
            )),
        }
    }

    pub fn max_peers(&self) -> usize {
        self.max_peers
    }

    /// Peers stored, over every store sharing these limits.
    pub fn peers(&self) -> usize {
        self.peers.load(Ordering::Relaxed)
    }

    /// Takes one peer slot; false when `max_peers` are stored.
    pub fn take_peer(&self) -> bool {
        self.peers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_peers).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives `n` peer slots back.
    pub fn release_peers(&self, n: usize) {
        if n > 0 {
            let _ = self
                .peers
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                    Some(c.saturating_sub(n))
                });
        }
    }

    /// See [`CreationBudget::check`]; a poisoned lock refuses.
    pub fn check_creation(&self, source: IpAddr, now: u64) -> Result<(), CreationRefusal> {
        match self.creations.lock() {
            Ok(mut b) => b.check(source, now),
            Err(_) => Err(CreationRefusal::TooManySources),
        }
    }

    /// See [`CreationBudget::record`].
    pub fn record_creation(&self, source: IpAddr, now: u64) {
        if let Ok(mut b) = self.creations.lock() {
            b.record(source, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn creation_budget_is_per_source_and_per_minute() {
        let mut b = CreationBudget::new(3, 100);
        let (a, c) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let t = 6000;
        for _ in 0..3 {
            assert_eq!(b.check(a, t), Ok(()));
            b.record(a, t);
        }
        assert_eq!(b.check(a, t + 59), Err(CreationRefusal::SourceBudget));
        // Another source is not affected.
        assert_eq!(b.check(c, t), Ok(()));
        // The next minute starts afresh.
        assert_eq!(b.check(a, t + 60), Ok(()));
        assert_eq!(b.sources(), 0);
    }

    #[test]
    fn creation_budget_counts_an_ipv6_slash_64_as_one_source() {
        let mut b = CreationBudget::new(2, 100);
        b.record(ip("2001:db8:7:7::1"), 0);
        b.record(ip("2001:db8:7:7::2"), 0);
        assert_eq!(
            b.check(ip("2001:db8:7:7:ffff::3"), 0),
            Err(CreationRefusal::SourceBudget),
            "a new address in the same /64 is the same host"
        );
        assert_eq!(b.check(ip("2001:db8:7:8::1"), 0), Ok(()));
        assert_eq!(b.sources(), 1);
    }

    #[test]
    fn creation_budget_remembers_a_bounded_number_of_sources() {
        let mut b = CreationBudget::new(5, 2);
        b.record(ip("10.0.0.1"), 0);
        b.record(ip("10.0.0.2"), 0);
        assert_eq!(
            b.check(ip("10.0.0.3"), 0),
            Err(CreationRefusal::TooManySources)
        );
        assert_eq!(b.check(ip("10.0.0.1"), 0), Ok(()));
        let mut zero = CreationBudget::new(0, 2);
        assert_eq!(
            zero.check(ip("10.0.0.1"), 0),
            Err(CreationRefusal::SourceBudget)
        );
    }

    #[test]
    fn peer_slots_are_capped_and_given_back() {
        let l = Limits::new(2, 1);
        assert!(l.take_peer());
        assert!(l.take_peer());
        assert!(!l.take_peer());
        assert_eq!(l.peers(), 2);
        l.release_peers(1);
        assert!(l.take_peer());
        l.release_peers(10);
        assert_eq!(l.peers(), 0);
    }
}
