//! SIGINT (Ctrl-C), SIGTERM and SIGHUP.
//!
//! The handler only sets a flag (and notes which signal came); callers poll it (every
//! [`crate::progress::poll_interval`]) and end cleanly: the last resume sync, the `--json`
//! summary, the demo's clean-up. A command stopped before it finished its job exits with
//! 128 + the signal's number, as shells report a process killed by it (130 for SIGINT,
//! 143 for SIGTERM); a command whose job is to serve until stopped (`seed`, `send
//! --receivers 0`) exits 0. Installing a handler also matters for background jobs of
//! non-interactive shells, where SIGINT starts out ignored.

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
            let installed = signal_hook::flag::register_usize(sig, flags.signal.clone(), number)
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

/// The exit code for being stopped by the last signal received: 128 + its number.
pub fn signal_code() -> Code {
    match flags().signal.load(Ordering::SeqCst) {
        n if n == SIGTERM as usize || n == SIGHUP as usize => Code::Terminated,
        _ => Code::Interrupted,
    }
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
