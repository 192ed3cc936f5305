//! SIGINT (Ctrl-C), SIGTERM and SIGHUP.
//!
//! The first signal only sets a flag (and notes which signal came); callers poll it (every
//! [`crate::progress::poll_interval`], and inside the magnet metadata fetch) and end
//! cleanly: the last resume sync, the `--json` summary, the demo's clean-up. A second
//! signal, for a phase that does not poll the flag (a tracker lookup, hashing), exits at
//! once with the same code. A command stopped before it finished its job exits 130 for
//! SIGINT (128 + 2, as shells report a process killed by it) and 143 for SIGTERM
//! (128 + 15) and for SIGHUP alike (a hang-up asks to stop as SIGTERM does; not 129); a
//! command whose job is to serve until stopped (`seed`, `send --receivers 0`) exits 0.
//! Installing a handler also matters for background jobs of non-interactive shells, where
//! SIGINT starts out ignored.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::exit::{failure, Code};

struct Flags {
    stop: Arc<AtomicBool>,
    /// The number of the last signal received (0: none).
    signal: Arc<AtomicUsize>,
}

fn flags() -> &'static Flags {
    static FLAGS: OnceLock<Flags> = OnceLock::new();
    FLAGS.get_or_init(|| {
        let flags = Flags {
            stop: Arc::new(AtomicBool::new(false)),
            signal: Arc::new(AtomicUsize::new(0)),
        };
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            let number = usize::try_from(sig).unwrap_or(0);
            // Registered first, so it sees the flag as the previous signal left it: the
            // first signal sets it, a second one exits.
            let installed = signal_hook::flag::register_conditional_shutdown(
                sig,
                exit_code(sig).as_i32(),
                flags.stop.clone(),
            )
            .and_then(|_| signal_hook::flag::register_usize(sig, flags.signal.clone(), number))
            .and_then(|_| signal_hook::flag::register(sig, flags.stop.clone()));
            if let Err(e) = installed {
                tracing::warn!("cannot install a handler for signal {sig}: {e}");
            }
        }
        flags
    })
}

/// Returns the flag that turns true on SIGINT, SIGTERM or SIGHUP. Installs the handlers
/// once; later calls return the same flag.
pub fn install_interrupt_handler() -> Arc<AtomicBool> {
    flags().stop.clone()
}

/// True once an interrupt was asked for.
pub fn interrupted(flag: &AtomicBool) -> bool {
    flag.load(Ordering::SeqCst)
}

/// The exit code for being stopped by `sig`: 130 for SIGINT, 143 for SIGTERM and SIGHUP.
fn exit_code(sig: i32) -> Code {
    if sig == SIGTERM || sig == SIGHUP {
        Code::Terminated
    } else {
        Code::Interrupted
    }
}

/// The exit code for being stopped by the last signal received (see [`exit_code`]).
pub fn signal_code() -> Code {
    let last = flags().signal.load(Ordering::SeqCst);
    exit_code(i32::try_from(last).unwrap_or(SIGINT))
}

/// The error of a command stopped by a signal before it finished: `what` says where it
/// stood; the code is [`signal_code`]'s.
pub fn stopped_error(what: impl Into<String>) -> anyhow::Error {
    let code = signal_code();
    let by = match code {
        Code::Terminated => "terminated",
        _ => "interrupted",
    };
    failure(code, format!("{by} {}", what.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_signal_has_its_code() {
        assert_eq!(exit_code(SIGINT), Code::Interrupted);
        assert_eq!(exit_code(SIGTERM), Code::Terminated);
        assert_eq!(exit_code(SIGHUP), Code::Terminated);
    }
}
