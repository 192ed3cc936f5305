//! SHA-1 of received pieces on helper threads, so the worker that owns a connection keeps
//! receiving while the previous piece is hashed (on two cores this overlaps the copy out
//! of the socket with the hash instead of doing them one after the other).
//!
//! A job names a pinned pool slot: a pinned slot is never handed out for writing, reused
//! or freed, which is what makes reading it from another thread sound. The worker unpins
//! it when the result comes back, and does not exit while jobs are out.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::pool::{PiecePool, SlotId};
use super::EventFd;

/// A finished hash, delivered to the submitting worker's channel.
#[derive(Debug)]
pub struct HashDone {
    pub tag: u64,
    pub slot: SlotId,
    pub digest: [u8; 20],
}

struct Job {
    ptr: *const u8,
    len: usize,
    tag: u64,
    slot: SlotId,
    reply: Sender<HashDone>,
    wake: Arc<EventFd>,
}

// SAFETY: `ptr` points into a pool slot pinned until the worker receives the reply; the
// memory is neither written nor freed while pinned, so reading it from another thread is
// a plain shared read.
unsafe impl Send for Job {}

/// Hashing threads shared by the workers of a session.
pub struct HashPool {
    tx: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl HashPool {
    pub fn new(threads: usize) -> std::io::Result<HashPool> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let rx: Receiver<Job> = rx.clone();
            let h = std::thread::Builder::new()
                .name(format!("rs-hash-{i}"))
                .spawn(move || {
                    for job in rx {
                        // SAFETY: see `Job`: the range lies inside a pinned slot (checked by
                        // `PiecePool::data_ptr` when the job was made).
                        let data = unsafe { std::slice::from_raw_parts(job.ptr, job.len) };
                        let digest = crate::verify::sha1(data);
                        if job
                            .reply
                            .send(HashDone {
                                tag: job.tag,
                                slot: job.slot,
                                digest,
                            })
                            .is_ok()
                        {
                            job.wake.wake();
                        }
                    }
                })?;
            handles.push(h);
        }
        Ok(HashPool {
            tx: Some(tx),
            threads: handles,
        })
    }

    /// Hashes the first `len` bytes of `slot`, pinning it until the worker calls
    /// [`HashPool::finished`] with the reply. False when the range is not inside the slot.
    pub fn submit(
        &self,
        pool: &mut PiecePool,
        slot: SlotId,
        len: usize,
        tag: u64,
        reply: &Sender<HashDone>,
        wake: &Arc<EventFd>,
    ) -> bool {
        let Some(ptr) = u32::try_from(len)
            .ok()
            .and_then(|l| pool.data_ptr(slot, 0, l))
        else {
            return false;
        };
        let Some(tx) = &self.tx else { return false };
        pool.pin(slot);
        let job = Job {
            ptr,
            len,
            tag,
            slot,
            reply: reply.clone(),
            wake: wake.clone(),
        };
        if tx.send(job).is_err() {
            pool.unpin(slot);
            return false;
        }
        true
    }

    /// Unpins the slot of a finished job.
    pub fn finished(pool: &mut PiecePool, done: &HashDone) {
        pool.unpin(done.slot);
    }
}

impl Drop for HashPool {
    fn drop(&mut self) {
        self.tx.take();
        for t in self.threads.drain(..) {
            t.join().ok();
        }
    }
}
