//! Host-wide limits, shared by every worker core: payload rates and connections.
//!
//! Rates (`--max-upload-rate`, `--max-download-rate`): one token bucket per direction.
//! Uploads take tokens before a batch of blocks is sent; downloads before requests are
//! sent, so the peers' answers arrive at the limited rate without us having to stall
//! reading sockets (which would back up the peers' other traffic too). A worker that gets
//! no tokens tries again at its next tick (100 ms), so the bucket holds a tenth of a
//! second's worth, at least 256 KiB, as burst.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

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
    pub fn new(bytes_per_sec: u64) -> RateLimiter {
        let rate = bytes_per_sec.max(1) as f64;
        let burst = (rate / 10.0).max(MIN_BURST);
        RateLimiter {
            bytes_per_sec: rate,
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                refilled: Instant::now(),
            }),
        }
    }

    /// Takes up to `want` bytes' worth of tokens now; returns how many were granted.
    pub fn take(&self, want: u64) -> u64 {
        self.take_at(want, Instant::now())
    }

    fn take_at(&self, want: u64, now: Instant) -> u64 {
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

/// Takes `want` from `limiter`, or all of it when there is no limit.
pub fn take(limiter: Option<&RateLimiter>, want: u64) -> u64 {
    limiter.map_or(want, |l| l.take(want))
}

/// Connections: at most `max_total` peers at once (connecting or connected, every torrent
/// and core), and at most `max_per_ip` from or to one address, so one host cannot take
/// every slot. Loopback addresses are exempt from the per-address cap: they are this host,
/// where every local peer shares 127.0.0.1.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: u32,
    max_per_ip: u32,
    counts: Mutex<(u32, HashMap<IpAddr, u32>)>,
}

impl ConnectionLimits {
    pub fn new(max_total: u32, max_per_ip: u32) -> ConnectionLimits {
        ConnectionLimits {
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            counts: Mutex::new((0, HashMap::new())),
        }
    }

    /// Takes a slot for a connection with `ip`; false when a limit is reached.
    pub fn acquire(&self, ip: IpAddr) -> bool {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *c;
        if *total >= self.max_total {
            return false;
        }
        if !ip.is_loopback() {
            let n = per_ip.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                return false;
            }
            *n += 1;
        }
        *total += 1;
        true
    }

    /// Gives back the slot of a connection with `ip`.
    pub fn release(&self, ip: IpAddr) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *c;
        *total = total.saturating_sub(1);
        if !ip.is_loopback() {
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn connection_limits_total_and_per_address() {
        let l = ConnectionLimits::new(4, 2);
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        let b: IpAddr = "198.18.0.2".parse().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(l.acquire(a) && l.acquire(a));
        assert!(!l.acquire(a), "per-address cap");
        assert!(
            l.acquire(lo) && l.acquire(lo),
            "loopback is exempt from the per-address cap"
        );
        assert!(!l.acquire(b), "total cap");
        l.release(a);
        assert!(l.acquire(b));
        assert!(!l.acquire(a));
        l.release(lo);
        l.release(b);
        assert!(l.acquire(a));
    }

    #[test]
    fn grants_the_rate_over_time_with_a_bounded_burst() {
        let l = RateLimiter::new(10 << 20); // 10 MiB/s: burst 1 MiB
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
        let l = RateLimiter::new(1 << 20);
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
}
