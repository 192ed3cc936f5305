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

/// Pins the calling thread to the `index`-th CPU it may run on (wrapping), so worker `i`
/// of a process started under `taskset` or in a cpuset lands inside that set. Best effort:
/// a failure is logged and the thread runs unpinned.
pub fn pin_to_cpu(index: usize) {
    // SAFETY: cpu_set_t is plain data (all-zero is the empty set); sched_getaffinity and
    // sched_setaffinity read/write `size_of::<cpu_set_t>()` bytes of live locals, and
    // CPU_ISSET/CPU_SET stay inside the set for any cpu < CPU_SETSIZE.
    let rc = unsafe {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        let cpus: Vec<usize> = if libc::sched_getaffinity(0, size, &mut allowed) == 0 {
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &allowed))
                .collect()
        } else {
            Vec::new()
        };
        let cpu = if cpus.is_empty() {
            index
        } else {
            cpus[index % cpus.len()]
        };
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size, &set)
    };
    if rc != 0 {
        tracing::debug!(index, err = %std::io::Error::last_os_error(), "could not pin worker");
    }
}

/// Online CPUs.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
