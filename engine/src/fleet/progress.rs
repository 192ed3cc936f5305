//! A download's rate and time left, measured over a sliding window, for the agent's
//! status (`ringswarm status`, and the progress lines the `agent` command prints).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back the rate looks: long enough to smooth out piece-sized bursts, short
/// enough to follow a change of the swarm within a few lines.
const WINDOW: Duration = Duration::from_secs(10);

/// Samples of one download's received bytes.
#[derive(Debug, Default)]
pub struct RateMeter {
    samples: VecDeque<(Instant, u64)>,
}

impl RateMeter {
    /// Records `bytes` (received so far, growing) at `now`; samples older than the window
    /// go, but the newest of them stays as the window's start.
    pub fn sample(&mut self, now: Instant, bytes: u64) {
        self.samples.push_back((now, bytes));
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Bytes per second over the window (0 until two samples are some time apart).
    pub fn rate(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, b0)), Some((t1, b1))) => {
                let secs = t1.saturating_duration_since(*t0).as_secs_f64();
                if secs > 0.0 {
                    b1.saturating_sub(*b0) as f64 / secs
                } else {
                    0.0
                }
            }
            _ => 0.0,
        }
    }

    /// Seconds until `remaining` bytes are in at the current rate (None while nothing
    /// comes in).
    pub fn eta_secs(&self, remaining: u64) -> Option<u64> {
        let rate = self.rate();
        (rate >= 1.0).then(|| (remaining as f64 / rate).ceil() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_over_the_window_and_eta() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        assert_eq!(m.rate(), 0.0);
        m.sample(t0, 0);
        assert_eq!(m.eta_secs(100), None);
        m.sample(t0 + Duration::from_secs(1), 1000);
        assert_eq!(m.rate(), 1000.0);
        assert_eq!(m.eta_secs(2500), Some(3));
        // Past the window the old samples go: the rate follows the new pace.
        for s in 2..=30 {
            m.sample(t0 + Duration::from_secs(s), 1000 + (s - 1) * 100);
        }
        assert!((m.rate() - 100.0).abs() < 1e-9, "{}", m.rate());
        assert!(m.samples.len() <= 12, "{}", m.samples.len());
    }
}
