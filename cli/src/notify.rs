//! systemd's service notifications (`Type=notify`): READY=1 once a daemon serves,
//! WATCHDOG=1 from its main loop, STATUS= lines for `systemctl status`.
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

/// Pings the watchdog at half its interval, from the loop that calls `tick`: a loop that
/// hangs stops the pings, and systemd restarts the service.
pub struct Watchdog {
    every: Option<Duration>,
    last: Option<Instant>,
}

impl Watchdog {
    pub fn from_env() -> Self {
        let every = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
        )
        .map(|d| d / 2);
        Watchdog { every, last: None }
    }

    /// Call once per loop turn (turns shorter than the interval): pings when half the
    /// interval has passed since the last ping.
    pub fn tick(&mut self) {
        let Some(every) = self.every else { return };
        let now = Instant::now();
        if self.last.is_none_or(|at| now.duration_since(at) >= every) {
            self.last = Some(now);
            send(&[NotifyState::Watchdog]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
