//! A daemon's proof of life for systemd's watchdog: the loop doing the daemon's real work
//! beats once per turn, and the process pings the watchdog only while that beat is fresh,
//! so a loop that hangs stops the pings and systemd restarts the service. A step known to
//! take long (locking or checking a release of many gigabytes) first says how long it may
//! take; it is still bounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The slowest a long step is expected to read: a step over `bytes` may take
/// `bytes / LONG_STEP_RATE` on top of [`LONG_STEP_BASE`].
const LONG_STEP_RATE: u64 = 20 << 20;
const LONG_STEP_BASE: Duration = Duration::from_secs(60);

/// The last beat of one loop (lock-free: a store per turn).
#[derive(Debug)]
pub struct Heartbeat {
    epoch: Instant,
    /// Milliseconds since `epoch` at the last beat.
    last_ms: AtomicU64,
    /// Milliseconds since `epoch` until which a long step vouches for the loop.
    long_until_ms: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat::new(Instant::now())
    }
}

impl Heartbeat {
    /// A heartbeat that beat at `now`.
    pub fn new(now: Instant) -> Heartbeat {
        Heartbeat {
            epoch: now,
            last_ms: AtomicU64::new(0),
            long_until_ms: AtomicU64::new(0),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Called by the loop once per turn.
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    /// A beat also ends a long step: the loop is back, and a hang after it must be seen
    /// within the watchdog's time, not the step's allowance.
    pub fn beat_at(&self, now: Instant) {
        self.last_ms.store(self.ms(now), Ordering::Relaxed);
        self.long_until_ms.store(0, Ordering::Relaxed);
    }

    /// Before a step over `bytes` of data that may outlast the watchdog: the loop counts
    /// as alive for [`LONG_STEP_BASE`] plus `bytes` at [`LONG_STEP_RATE`] from now.
    pub fn long_step(&self, bytes: u64) {
        self.long_step_at(Instant::now(), bytes);
    }

    pub fn long_step_at(&self, now: Instant, bytes: u64) {
        self.beat_at(now);
        let allowance = LONG_STEP_BASE + Duration::from_secs(bytes / LONG_STEP_RATE);
        self.long_until_ms
            .store(self.ms(now + allowance), Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self, now: Instant) -> Duration {
        let since = self
            .ms(now)
            .saturating_sub(self.last_ms.load(Ordering::Relaxed));
        Duration::from_millis(since)
    }

    /// Whether the loop is alive at `now`: it beat less than `max_age` ago, or a long step
    /// it announced is still within its allowance.
    pub fn is_fresh(&self, now: Instant, max_age: Duration) -> bool {
        self.age(now) < max_age || self.ms(now) < self.long_until_ms.load(Ordering::Relaxed)
    }
}

/// Whether every heartbeat of `beats` is fresh (a daemon with several loops, such as the
/// tracker's workers, is alive only while each of them is).
pub fn all_fresh<'a>(
    beats: impl IntoIterator<Item = &'a Heartbeat>,
    now: Instant,
    max_age: Duration,
) -> bool {
    beats.into_iter().all(|b| b.is_fresh(now, max_age))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_only_while_the_loop_beats() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let max = Duration::from_secs(15);
        let b = Heartbeat::new(t0);
        assert!(b.is_fresh(at(14_999), max));
        assert!(
            !b.is_fresh(at(15_000), max),
            "a loop silent for 15 s is hung"
        );
        b.beat_at(at(20_000));
        assert!(b.is_fresh(at(34_000), max));
        assert_eq!(b.age(at(34_000)), Duration::from_secs(14));
        assert!(!b.is_fresh(at(36_000), max));
    }

    #[test]
    fn a_long_step_is_allowed_its_size_and_no_more() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let max = Duration::from_secs(15);
        let b = Heartbeat::new(t0);
        // 20 GiB at 20 MiB/s: 1024 s, plus the base minute.
        b.long_step_at(t0, 20 << 30);
        assert!(b.is_fresh(at(1083), max));
        assert!(!b.is_fresh(at(1085), max), "a long step is bounded too");
        b.beat_at(at(1100));
        assert!(b.is_fresh(at(1110), max));
    }

    #[test]
    fn a_beat_ends_a_long_step() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let max = Duration::from_secs(15);
        let b = Heartbeat::new(t0);
        b.long_step_at(t0, 20 << 30);
        // The step took 5 s; the loop beat, then hung: seen after 15 s, not 1084 s.
        b.beat_at(at(5));
        assert!(b.is_fresh(at(19), max));
        assert!(!b.is_fresh(at(21), max));
    }

    #[test]
    fn several_loops_are_alive_only_together() {
        let t0 = Instant::now();
        let max = Duration::from_secs(15);
        let (a, b) = (Heartbeat::new(t0), Heartbeat::new(t0));
        a.beat_at(t0 + Duration::from_secs(20));
        let now = t0 + Duration::from_secs(21);
        assert!(!all_fresh([&a, &b], now, max));
        b.beat_at(now);
        assert!(all_fresh([&a, &b], now, max));
    }
}
