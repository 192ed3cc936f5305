//! A peer's download rate and the request depth it earns: the requests kept outstanding
//! with a peer are its measured rate times a delay budget ([`REQUEST_HORIZON`]), so a fast
//! peer's pipe stays full and a slow one does not sit on requests (and the pieces they
//! tie up) that faster peers could serve.

use std::time::{Duration, Instant};

use ringswarm_proto::wire::BLOCK_SIZE;

/// Most blocks requested and not yet received, per connection: 8 MiB in flight covers
/// bandwidth × delay on a 25 GbE link with a couple of milliseconds of RTT, and keeps a
/// seeder's view a piece or two ahead so its disk reads overlap the sending (measured on
/// loopback, 1 GiB cold: 256 → 2.1 s, 512 → 1.5 s, 1024 → 1.55 s).
pub const MAX_REQUEST_DEPTH: u32 = 512;
/// The depth kept is the peer's measured rate times this horizon: enough to cover any
/// data-centre RTT many times over (we do not measure the RTT itself: at these rates the
/// horizon, not the RTT, sets the depth).
pub const REQUEST_HORIZON: Duration = Duration::from_millis(200);
/// Depth before the first rate sample.
pub const INITIAL_REQUEST_DEPTH: u32 = 128;
/// The least depth kept (512 KiB: a 1 ms RTT still allows 500 MB/s).
pub const MIN_REQUEST_DEPTH: u32 = 32;
/// Requests are topped up when this many have come back, so they leave in batches
/// rather than one small send per block.
pub const REQUEST_REFILL_BATCH: u32 = 32;
/// Samples shorter than this are folded into the next one.
const MIN_SAMPLE: Duration = Duration::from_millis(50);

/// A smoothed rate of payload bytes from one peer, sampled while requests are out.
#[derive(Clone, Debug)]
pub struct RateMeter {
    bytes: u64,
    since: Instant,
    rate: f64,
    depth: u32,
}

impl RateMeter {
    pub fn new(now: Instant) -> RateMeter {
        RateMeter {
            bytes: 0,
            since: now,
            rate: 0.0,
            depth: INITIAL_REQUEST_DEPTH,
        }
    }

    /// Payload bytes arrived.
    pub fn add(&mut self, bytes: u64) {
        self.bytes += bytes;
    }

    /// Bytes per second (0 before the first sample).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Requests to keep outstanding.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Folds the bytes since the last sample into the rate (only while requests were out:
    /// an idle peer is not a slow one) and resizes the depth.
    pub fn sample(&mut self, now: Instant, requests_out: u32) {
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < MIN_SAMPLE {
            return;
        }
        if self.rate == 0.0 && self.bytes == 0 {
            // Nothing has arrived yet (the first answers are a round trip away): no rate
            // to go by, so the initial depth stays.
            self.since = now;
            return;
        }
        if requests_out > 0 || self.bytes > 0 {
            let sample = self.bytes as f64 / elapsed.as_secs_f64();
            self.rate = if self.rate == 0.0 {
                sample
            } else {
                0.7 * self.rate + 0.3 * sample
            };
            let blocks = self.rate * REQUEST_HORIZON.as_secs_f64() / f64::from(BLOCK_SIZE);
            self.depth = (blocks.ceil() as u32).clamp(MIN_REQUEST_DEPTH, MAX_REQUEST_DEPTH);
        }
        self.bytes = 0;
        self.since = now;
    }
}

/// Whether requests should be topped up now: a batch's worth came back.
pub fn wants_refill(requests_out: u32, depth: u32) -> bool {
    let batch = REQUEST_REFILL_BATCH.min(depth / 4).max(1);
    requests_out + batch <= depth
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn depth_is_rate_times_the_horizon_within_bounds() {
        let t0 = Instant::now();
        let mut m = RateMeter::new(t0);
        assert_eq!(m.depth(), INITIAL_REQUEST_DEPTH);
        // 100 MiB/s for 100 ms: 0.2 s × 100 MiB = 1280 blocks → capped at 512.
        m.add(10 << 20);
        m.sample(t0 + ms(100), 10);
        assert_eq!(m.depth(), MAX_REQUEST_DEPTH);
        // 8 MiB/s: 0.2 s × 8 MiB = 102.4 blocks → 103 (after smoothing it falls toward that).
        let mut m = RateMeter::new(t0);
        m.add(800 << 10);
        m.sample(t0 + ms(100), 10);
        assert_eq!(m.depth(), 100);
        // A trickle: the floor.
        let mut m = RateMeter::new(t0);
        m.add(16 << 10);
        m.sample(t0 + ms(1000), 1);
        assert_eq!(m.depth(), MIN_REQUEST_DEPTH);
    }

    #[test]
    fn an_idle_peer_keeps_its_rate_and_short_samples_wait() {
        let t0 = Instant::now();
        let mut m = RateMeter::new(t0);
        m.add(1 << 20);
        m.sample(t0 + ms(10), 5);
        assert_eq!(m.rate(), 0.0, "10 ms is too short a sample");
        m.sample(t0 + ms(100), 5);
        let r = m.rate();
        assert!((r - 10.0 * f64::from(1 << 20)).abs() < 1.0, "{r}");
        m.sample(t0 + ms(1100), 0);
        assert_eq!(m.rate(), r, "no requests out, nothing received: not slower");
        m.sample(t0 + ms(2100), 3);
        assert!(m.rate() < r, "requests out and nothing came: slower");
    }

    #[test]
    fn refills_go_out_in_batches() {
        assert!(!wants_refill(100, 128), "only 28 came back");
        assert!(wants_refill(96, 128));
        assert!(wants_refill(24, 32), "a small depth refills at a quarter");
        assert!(!wants_refill(25, 32));
    }
}
