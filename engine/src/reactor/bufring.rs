//! A provided-buffer ring (IORING_REGISTER_PBUF_RING) for multishot receives: the kernel
//! picks a free buffer per completion, so idle connections hold no receive memory.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

use super::Ring;
use crate::storage::AlignedBuf;

/// Receive buffers shared by every connection of one worker.
pub struct BufRing {
    /// The ring of `BufRingEntry` the kernel reads; page-aligned.
    entries: AlignedBuf,
    /// The buffers themselves, `count * size` bytes.
    data: AlignedBuf,
    count: u16,
    size: u32,
    group: u16,
    /// Our copy of the tail; published to the kernel after each recycle.
    tail: u16,
}

impl BufRing {
    /// Registers `count` (a power of two) buffers of `size` bytes as group `group`.
    pub fn new(ring: &Ring, group: u16, count: u16, size: u32) -> io::Result<BufRing> {
        if !count.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer count must be a power of two",
            ));
        }
        let entries = AlignedBuf::new(usize::from(count) * std::mem::size_of::<BufRingEntry>());
        let data = AlignedBuf::new(usize::from(count) * size as usize);
        let mut ring_bufs = BufRing {
            entries,
            data,
            count,
            size,
            group,
            tail: 0,
        };
        // SAFETY: `entries` is a page-aligned allocation of `count` entries owned by this
        // BufRing, which the worker keeps alive for as long as the ring exists.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                ring_bufs.entries.as_ptr() as u64,
                count,
                group,
                0,
            )?;
        }
        for bid in 0..count {
            ring_bufs.push_entry(bid);
        }
        ring_bufs.publish();
        Ok(ring_bufs)
    }

    pub fn group(&self) -> u16 {
        self.group
    }

    fn base(&self) -> *mut BufRingEntry {
        self.entries.as_ptr() as *mut BufRingEntry
    }

    fn push_entry(&mut self, bid: u16) {
        let index = self.tail & (self.count - 1);
        // SAFETY: index < count, inside the `entries` allocation; the kernel only reads
        // entries between its head and our published tail, and this one is past the tail.
        let entry = unsafe { &mut *self.base().add(usize::from(index)) };
        // SAFETY: bid < count, so the address lies inside `data`.
        let addr = unsafe {
            self.data
                .as_ptr()
                .add(usize::from(bid) * self.size as usize)
        };
        entry.set_addr(addr as u64);
        entry.set_len(self.size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field lives in the first entry's reserved word, inside `entries`;
        // the kernel reads it concurrently, hence the atomic release store.
        unsafe {
            let tail = BufRingEntry::tail(self.base()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// The bytes a completion delivered in buffer `bid`; empty for an id or length that
    /// does not belong to this ring (never trust a completion blindly).
    pub fn get(&self, bid: u16, len: usize) -> &[u8] {
        if bid >= self.count || len > self.size as usize {
            return &[];
        }
        let start = usize::from(bid) * self.size as usize;
        &self.data.as_slice()[start..start + len]
    }

    /// Gives buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        if bid < self.count {
            self.push_entry(bid);
            self.publish();
        }
    }
}
