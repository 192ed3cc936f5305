//! Registered piece buffers. A slot is a 4096-aligned buffer the size of a piece, registered
//! with the ring at the table index equal to its slot id. Ops pin the slots they point
//! into; a pinned slot is never handed out for writing, reused, or freed.

use super::ring::FIXED_TABLE_SIZE;
use super::Ring;
use crate::storage::AlignedBuf;

pub type SlotId = u16;

struct Slot {
    buf: AlignedBuf,
    /// In-flight ops pointing into the buffer.
    pins: u32,
    in_use: bool,
    registered: bool,
}

/// Piece buffers of one worker, within a byte budget.
pub struct PiecePool {
    slots: Vec<Option<Slot>>,
    budget: usize,
    allocated: usize,
}

impl PiecePool {
    pub fn new(budget_bytes: usize) -> PiecePool {
        PiecePool {
            slots: Vec::new(),
            budget: budget_bytes,
            allocated: 0,
        }
    }

    /// A free slot of at least `len` bytes (rounded up to 4096), or None when the budget is
    /// spent and no free slot fits.
    pub fn acquire(&mut self, ring: &mut Ring, len: usize) -> Option<SlotId> {
        let size = len.div_ceil(4096) * 4096;
        if let Some(id) = self.slots.iter().position(|s| {
            s.as_ref()
                .is_some_and(|s| !s.in_use && s.pins == 0 && s.buf.len() == size)
        }) {
            self.slots[id].as_mut()?.in_use = true;
            return Some(id as SlotId);
        }
        // Make room: free idle slots of other sizes first.
        while self.allocated + size > self.budget {
            let victim = self.slots.iter().position(|s| {
                s.as_ref()
                    .is_some_and(|s| !s.in_use && s.pins == 0 && s.buf.len() != size)
            })?;
            if let Some(s) = self.slots[victim].take() {
                self.allocated -= s.buf.len();
            }
        }
        let id = match self.slots.iter().position(Option::is_none) {
            Some(id) => id,
            None if self.slots.len() < FIXED_TABLE_SIZE as usize => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => return None,
        };
        let buf = AlignedBuf::new(size);
        let registered = ring.fixed_buffers() && register(ring, id as SlotId, &buf);
        self.allocated += size;
        self.slots[id] = Some(Slot {
            buf,
            pins: 0,
            in_use: true,
            registered,
        });
        Some(id as SlotId)
    }

    /// Returns a slot to the free list. Its memory stays allocated (and registered) for reuse.
    pub fn release(&mut self, id: SlotId) {
        if let Some(Some(s)) = self.slots.get_mut(usize::from(id)) {
            s.in_use = false;
        }
    }

    /// The byte budget.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Makes the budget at least `bytes` (a torrent with huge pieces needs a few of them).
    pub fn raise_budget(&mut self, bytes: usize) {
        self.budget = self.budget.max(bytes);
    }

    /// Bytes allocated for piece buffers.
    pub fn allocated_bytes(&self) -> usize {
        self.allocated
    }

    /// Whether a new slot of `len` bytes could be had now.
    pub fn can_acquire(&self, len: usize) -> bool {
        let size = len.div_ceil(4096) * 4096;
        self.slots
            .iter()
            .flatten()
            .any(|s| !s.in_use && s.pins == 0)
            || self.allocated + size <= self.budget
    }

    /// The buffer for reading (hashing, sending checks).
    pub fn data(&self, id: SlotId) -> &[u8] {
        match self.slots.get(usize::from(id)) {
            Some(Some(s)) => s.buf.as_slice(),
            _ => &[],
        }
    }

    /// The buffer for filling; None while ops are in flight on it.
    pub fn data_mut(&mut self, id: SlotId) -> Option<&mut [u8]> {
        match self.slots.get_mut(usize::from(id)) {
            Some(Some(s)) if s.pins == 0 => Some(s.buf.as_mut_slice()),
            _ => None,
        }
    }

    pub fn is_pinned(&self, id: SlotId) -> bool {
        matches!(self.slots.get(usize::from(id)), Some(Some(s)) if s.pins > 0)
    }

    pub(crate) fn is_registered(&self, id: SlotId) -> bool {
        matches!(self.slots.get(usize::from(id)), Some(Some(s)) if s.registered)
    }

    /// Pointer to `len` bytes at `offset` of slot `id`, when that range lies inside it.
    pub(crate) fn data_ptr(&self, id: SlotId, offset: u32, len: u32) -> Option<*const u8> {
        let s = self.slots.get(usize::from(id))?.as_ref()?;
        let end = (offset as usize).checked_add(len as usize)?;
        if end > s.buf.len() {
            return None;
        }
        // SAFETY: offset + len <= buffer length, checked above.
        Some(unsafe { s.buf.as_ptr().add(offset as usize) })
    }

    pub(crate) fn pin(&mut self, id: SlotId) {
        if let Some(Some(s)) = self.slots.get_mut(usize::from(id)) {
            s.pins += 1;
        }
    }

    pub(crate) fn unpin(&mut self, id: SlotId) {
        if let Some(Some(s)) = self.slots.get_mut(usize::from(id)) {
            s.pins = s.pins.saturating_sub(1);
        }
    }
}

fn register(ring: &mut Ring, id: SlotId, buf: &AlignedBuf) -> bool {
    let iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut _,
        iov_len: buf.len(),
    };
    // SAFETY: the buffer is owned by the pool, which the worker keeps alive for as long as
    // the ring; a slot's buffer is only replaced (re-registered at the same index) when no
    // op is pinned on it.
    match unsafe {
        ring.submitter()
            .register_buffers_update(u32::from(id), &[iov], None)
    } {
        Ok(()) => true,
        Err(e) => {
            // Every worker meets the same limit: say it once per process, not per core.
            static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(err = %e, "registering piece buffers failed (RLIMIT_MEMLOCK?); using unregistered I/O");
            }
            ring.disable_fixed_buffers();
            false
        }
    }
}
