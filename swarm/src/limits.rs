//! Limits the core applies: payload rates (`--max-upload-rate`, `--max-download-rate`)
//! and bans.
//!
//! Rates: one token bucket per direction, shared by every core of a host. Uploads take
//! tokens before a batch of blocks is sent; downloads before requests are sent, so the
//! peers' answers arrive at the limited rate without us having to stall reading sockets
//! (which would back up the peers' other traffic too). A core that gets no tokens tries
//! again at its next tick (100 ms), so the bucket holds a tenth of a second's worth, at
//! least 256 KiB, as burst. The time is passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Smallest burst: a few blocks, so a low rate still moves whole batches.
const MIN_BURST: f64 = 256.0 * 1024.0;

#[derive(Debug)]
pub struct RateLimiter {
    bytes_per_sec: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    /// A limiter of `bytes_per_sec` (> 0), starting full.
    pub fn new(bytes_per_sec: u64, now: Instant) -> RateLimiter {
        let rate = bytes_per_sec.max(1) as f64;
        let burst = (rate / 10.0).max(MIN_BURST);
        RateLimiter {
            bytes_per_sec: rate,
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                refilled: now,
            }),
        }
    }

    /// Takes up to `want` bytes' worth of tokens at `now`; returns how many were granted.
    pub fn take_at(&self, want: u64, now: Instant) -> u64 {
        let mut b = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(b.refilled).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.bytes_per_sec).min(self.burst);
        b.refilled = now;
        let granted = (want as f64).min(b.tokens.max(0.0)).floor();
        b.tokens -= granted;
        granted as u64
    }

    /// Gives back tokens taken but not used.
    pub fn give_back(&self, bytes: u64) {
        let mut b = self.state.lock().unwrap_or_else(|e| e.into_inner());
        b.tokens = (b.tokens + bytes as f64).min(self.burst);
    }
}

/// Takes `want` from `limiter` at `now`, or all of it when there is no limit.
pub fn take(limiter: Option<&RateLimiter>, want: u64, now: Instant) -> u64 {
    limiter.map_or(want, |l| l.take_at(want, now))
}

/// How long a ban lasts by default: long enough to stop a peer sending bad data, short
/// enough that a host fixed (or an address reused) is served again.
pub const DEFAULT_BAN_DURATION: Duration = Duration::from_secs(3600);

/// Banned addresses, each until its ban expires.
#[derive(Debug)]
pub struct BanList {
    duration: Duration,
    until: HashMap<IpAddr, Instant>,
}

impl Default for BanList {
    fn default() -> Self {
        BanList::new(DEFAULT_BAN_DURATION)
    }
}

impl BanList {
    pub fn new(duration: Duration) -> BanList {
        BanList {
            duration,
            until: HashMap::new(),
        }
    }

    /// Bans `ip` from `now` for the ban duration.
    pub fn ban(&mut self, ip: IpAddr, now: Instant) {
        self.until.insert(ip, now + self.duration);
    }

    /// Whether `ip` is banned at `now`; forgets expired bans.
    pub fn is_banned(&mut self, ip: IpAddr, now: Instant) -> bool {
        match self.until.get(&ip) {
            Some(&until) if now < until => true,
            Some(_) => {
                self.until.remove(&ip);
                false
            }
            None => false,
        }
    }

    /// Bans in force at `now`.
    pub fn count(&self, now: Instant) -> usize {
        self.until.values().filter(|&&u| now < u).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_expire_after_the_ban_duration() {
        let t0 = Instant::now();
        let ip: IpAddr = "198.18.0.9".parse().unwrap();
        let mut bans = BanList::default();
        bans.ban(ip, t0);
        assert!(bans.is_banned(ip, t0 + Duration::from_secs(3599)));
        assert_eq!(bans.count(t0 + Duration::from_secs(3599)), 1);
        assert!(
            !bans.is_banned(ip, t0 + Duration::from_secs(3600)),
            "an hour by default"
        );
        assert_eq!(bans.count(t0 + Duration::from_secs(3600)), 0);
        let mut bans = BanList::new(Duration::from_secs(5));
        bans.ban(ip, t0);
        assert!(bans.is_banned(ip, t0 + Duration::from_secs(4)));
        assert!(
            !bans.is_banned(ip, t0 + Duration::from_secs(5)),
            "configurable"
        );
        assert!(!bans.is_banned("198.18.0.10".parse().unwrap(), t0));
    }

    #[test]
    fn grants_the_rate_over_time_with_a_bounded_burst() {
        let l = RateLimiter::new(10 << 20, Instant::now()); // 10 MiB/s: burst 1 MiB
        let t0 = Instant::now();
        assert_eq!(l.take_at(u64::MAX, t0), 1 << 20);
        assert_eq!(l.take_at(1000, t0), 0);
        // 50 ms later: half a MiB more.
        let half = l.take_at(u64::MAX, t0 + Duration::from_millis(50));
        assert!((half as i64 - (512 << 10)).abs() < 1024, "{half}");
        // A long idle time still refills only the burst.
        assert_eq!(l.take_at(u64::MAX, t0 + Duration::from_secs(60)), 1 << 20);
        l.give_back(4096);
        assert_eq!(l.take_at(u64::MAX, t0 + Duration::from_secs(60)), 4096);
        // Total over 10 s ≈ 10 s × rate + the initial burst.
        let l = RateLimiter::new(1 << 20, t0);
        let mut got = 0;
        for ms in (0..10_000).step_by(100) {
            got += l.take_at(u64::MAX, t0 + Duration::from_millis(ms));
        }
        let expected = 10 << 20;
        assert!(
            got <= expected + (256 << 10) && got >= expected - (256 << 10),
            "{got}"
        );
    }

    #[test]
    fn take_without_a_limiter_grants_everything_and_with_one_what_the_bucket_holds() {
        let t0 = Instant::now();
        assert_eq!(take(None, 5 << 30, t0), 5 << 30);
        let l = RateLimiter::new(1 << 20, t0); // burst 256 KiB
        assert_eq!(take(Some(&l), 1 << 30, t0), 256 << 10);
        assert_eq!(take(Some(&l), 1, t0), 0);
    }

    #[test]
    fn a_limiter_whose_lock_was_poisoned_keeps_limiting() {
        let t0 = Instant::now();
        let l = RateLimiter::new(1 << 20, t0);
        std::thread::scope(|s| {
            let poisoner = s.spawn(|| {
                let _held = l.state.lock().unwrap();
                panic!("poisoning the bucket on purpose");
            });
            assert!(poisoner.join().is_err());
        });
        assert!(l.state.is_poisoned());
        assert_eq!(l.take_at(1 << 30, t0), 256 << 10);
        l.give_back(4096);
        assert_eq!(l.take_at(1 << 30, t0), 4096);
    }
}
