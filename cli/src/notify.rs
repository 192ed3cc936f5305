//! systemd's service notifications (`Type=notify`): READY=1 once a daemon serves,
//! WATCHDOG=1 while the loop doing its work turns (see [`Watchdog`]), STATUS= lines for
//! `systemctl status`.
//!
//! Without `NOTIFY_SOCKET` (not under systemd) every call does nothing. A failed send is
//! logged once at debug level and otherwise ignored: the daemon's work matters more than
//! its report.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!("sd_notify: {e}");
    }
}

/// Tells systemd the daemon is up (`READY=1`), with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A new `STATUS=` line for `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Tells systemd the daemon is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// The watchdog interval systemd asks for: `WATCHDOG_USEC`, for this process only when
/// `WATCHDOG_PID` is set (as sd_watchdog_enabled(3) reads them).
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// The freshness rule: the daemon's work loop vouches for it while its last heartbeat
/// (`ringswarm_engine::heartbeat`) is younger than half the watchdog interval.
pub fn max_beat_age(interval: Duration) -> Duration {
    interval / 2
}

/// Pings the watchdog every half interval, but only while the daemon's work loop is alive
/// (its heartbeat fresh by [`max_beat_age`]): the CLI thread that calls `tick` only sleeps,
/// so its own turns prove nothing. A hung work loop stops the pings, and systemd restarts
/// the service.
pub struct Watchdog {
    interval: Option<Duration>,
    last: Option<Instant>,
    /// Whether the missing heartbeat was logged (once until it beats again).
    told_stale: bool,
}

impl Watchdog {
    pub fn from_env() -> Self {
        let interval = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
        );
        Watchdog::new(interval)
    }

    fn new(interval: Option<Duration>) -> Self {
        Watchdog {
            interval,
            last: None,
            told_stale: false,
        }
    }

    /// Call once per turn of the CLI's loop (turns shorter than the interval). `fresh`
    /// says whether the work loop beat within the age it is given.
    pub fn tick(&mut self, fresh: impl FnOnce(Duration) -> bool) {
        if self.due(Instant::now(), fresh) {
            send(&[NotifyState::Watchdog]);
        }
    }

    /// Whether to ping at `now`: half the interval passed since the last ping, and the work
    /// loop is fresh.
    fn due(&mut self, now: Instant, fresh: impl FnOnce(Duration) -> bool) -> bool {
        let Some(interval) = self.interval else {
            return false;
        };
        if self
            .last
            .is_some_and(|at| now.duration_since(at) < interval / 2)
        {
            return false;
        }
        let max_age = max_beat_age(interval);
        if !fresh(max_age) {
            if !self.told_stale {
                self.told_stale = true;
                tracing::error!(
                    "the work loop has not turned for {}; the watchdog is no longer fed \
                     (systemd restarts the service once WatchdogSec passes)",
                    humantime::format_duration(max_age)
                );
            }
            return false;
        }
        self.told_stale = false;
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_fed_only_while_the_work_loop_is_fresh() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut w = Watchdog::new(Some(Duration::from_secs(30)));
        let mut asked = Duration::ZERO;
        assert!(w.due(at(0), |age| {
            asked = age;
            true
        }));
        assert_eq!(
            asked,
            Duration::from_secs(15),
            "fresh means younger than 15 s"
        );
        assert!(!w.due(at(14_000), |_| true), "not yet half the interval");
        assert!(
            !w.due(at(15_000), |_| false),
            "a stale loop is not vouched for"
        );
        assert!(!w.due(at(16_000), |_| false));
        assert!(w.due(at(17_000), |_| true), "fed again once it beats");
        assert!(!w.due(at(20_000), |_| true));
        let mut off = Watchdog::new(None);
        assert!(!off.due(at(0), |_| true), "no watchdog asked for");
    }

    #[test]
    fn the_watchdog_interval_is_read_as_systemd_sets_it() {
        let me = std::process::id().to_string();
        assert_eq!(
            watchdog_interval(Some("2000000"), None),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            watchdog_interval(Some("2000000"), Some(&me)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(watchdog_interval(Some("2000000"), Some("1")), None);
        assert_eq!(watchdog_interval(Some("0"), None), None);
        assert_eq!(watchdog_interval(Some("soon"), None), None);
        assert_eq!(watchdog_interval(None, None), None);
    }
}
