//! A provided-buffer ring (IORING_REGISTER_PBUF_RING) for multishot receives: the kernel
//! picks a free buffer per completion, so idle connections hold no receive memory.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use super::Ring;
use crate::storage::AlignedBuf;

/// The kernel's `struct io_uring_buf` (16 bytes). In entry 0 the last field is the ring's
/// tail (the kernel's `io_uring_buf_ring` overlays it); in the others it is reserved.
#[repr(C)]
struct RingEntry {
    addr: u64,
    len: u32,
    bid: u16,
    tail: u16,
}

const _: () = assert!(std::mem::size_of::<RingEntry>() == 16);

/// Receive buffers shared by every connection of one worker.
pub struct BufRing {
    /// The ring of entries the kernel reads; page-aligned.
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
        let entries = AlignedBuf::new(usize::from(count) * std::mem::size_of::<RingEntry>());
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

    fn base(&self) -> *mut RingEntry {
        self.entries.as_ptr() as *mut RingEntry
    }

    fn push_entry(&mut self, bid: u16) {
        let index = self.tail & (self.count - 1);
        // SAFETY: bid < count, so the address lies inside `data`.
        let addr = unsafe {
            self.data
                .as_ptr()
                .add(usize::from(bid) * self.size as usize)
        };
        // SAFETY: index < count, inside the `entries` allocation. The fields are written
        // through raw pointers, never a reference: entry 0's reserved word is the tail the
        // kernel reads concurrently. The kernel reads only entries between its head and
        // our published tail, and this one is past the tail.
        unsafe {
            let entry = self.base().add(usize::from(index));
            std::ptr::addr_of_mut!((*entry).addr).write(addr as u64);
            std::ptr::addr_of_mut!((*entry).len).write(self.size);
            std::ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field lives in the first entry's reserved word, inside `entries`;
        // the kernel reads it concurrently, hence the atomic release store.
        unsafe {
            let tail = std::ptr::addr_of!((*self.base()).tail) as *const AtomicU16;
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
        // SAFETY: [start, start + len) lies inside `data` (checked above) and is buffer
        // `bid`, which the kernel handed to us and does not write until it is recycled.
        // Only that range is borrowed: the kernel may be filling the other buffers.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr().add(start), len) }
    }

    /// Gives buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        if bid < self.count {
            self.push_entry(bid);
            self.publish();
        }
    }
}
