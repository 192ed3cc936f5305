//! Thread-per-core io_uring reactor: the only code that talks to the kernel for sockets.
//!
//! Each worker thread owns one [`Ring`], one [`BufRing`] of provided buffers for multishot
//! receives, and one [`PiecePool`] of registered 4096-aligned piece buffers. The session
//! logic above never touches raw pointers: it names buffers by [`SlotId`] and ops by a
//! `u64` token of its own, and the ring keeps every piece of memory the kernel may still
//! read (socket addresses, send iovecs, pinned piece buffers) until the op completes.

pub mod bufring;
pub mod hasher;
pub mod net;
pub mod pool;
mod ring;
pub mod udp;

pub use bufring::BufRing;
pub use hasher::{HashDone, HashPool};
pub use net::EventFd;
pub use pool::{PiecePool, SlotId};
pub use ring::{Completion, Ring, SendBlock};

/// Pins the calling thread to one CPU. Best effort: a failure (a cpuset without that CPU)
/// is logged and the thread runs unpinned.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write inside it; sched_setaffinity
    // reads `size_of::<cpu_set_t>()` bytes from a live local.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        tracing::debug!(cpu, err = %std::io::Error::last_os_error(), "could not pin worker");
    }
}

/// Online CPUs.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
