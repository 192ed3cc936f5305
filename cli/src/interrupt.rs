//! Ctrl-C / SIGTERM.
//!
//! The handler only sets a flag; callers poll it (every [`crate::progress::poll_interval`])
//! and end cleanly: the last resume sync, the `--json` summary, the demo's clean-up.
//! Installing a handler also matters for background jobs of non-interactive shells, where
//! SIGINT starts out ignored.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// Returns the flag that turns true on Ctrl-C or SIGTERM. Installs the handler once; later
/// calls return the same flag.
pub fn install_interrupt_handler() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        if let Err(e) = ctrlc::set_handler(move || f.store(true, Ordering::SeqCst)) {
            tracing::warn!("cannot install the Ctrl-C handler: {e}");
        }
        flag
    })
    .clone()
}

/// True once an interrupt was asked for.
pub fn interrupted(flag: &AtomicBool) -> bool {
    flag.load(Ordering::SeqCst)
}
