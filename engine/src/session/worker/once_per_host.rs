//! Log lines that every worker of a host would print at once, said once per host.

use std::time::{Duration, Instant};

/// A log line every core of the host would print at once (the same limit met by every
/// worker): the first core to get there says it, at most once per interval.
pub(super) struct OncePerHost {
    /// When it was last said, in milliseconds since `EPOCH` plus one (0: never).
    last_ms: std::sync::atomic::AtomicU64,
}

static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

impl OncePerHost {
    pub(super) const fn new() -> Self {
        OncePerHost {
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// True for the caller that should print now.
    pub(super) fn due(&self, every: Duration) -> bool {
        use std::sync::atomic::Ordering;
        let epoch = *EPOCH.get_or_init(Instant::now);
        let now = u64::try_from(epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last_ms.load(Ordering::Relaxed);
        let every = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        (last == 0 || now.saturating_sub(last) >= every)
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_caller_in_an_interval_prints() {
        let said = OncePerHost::new();
        assert!(said.due(Duration::from_secs(60)));
        assert!(!said.due(Duration::from_secs(60)));
        assert!(said.due(Duration::ZERO), "a zero interval always prints");
    }
}
