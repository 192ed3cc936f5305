//! A heap buffer aligned for O_DIRECT: address and length are multiples of [`ALIGN`], and
//! the memory starts zeroed.

use std::alloc::{self, Layout};
use std::fmt;
use std::ptr::NonNull;

use super::ALIGN;

/// A zeroed buffer whose address and length are multiples of [`super::ALIGN`].
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively (like a Box<[u8]>); the raw pointer is
// never shared outside of borrows tied to `&self`/`&mut self`.
unsafe impl Send for AlignedBuf {}
// SAFETY: `&AlignedBuf` only gives out shared reads (`as_slice`, `as_ptr`); mutation needs
// `&mut self`, so sharing references across threads is as safe as for `Box<[u8]>`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `len` is rounded up to a multiple of [`super::ALIGN`].
    ///
    /// Panics only when the rounded length does not fit the address space (like
    /// `Vec::with_capacity`); use [`AlignedBuf::try_new`] for untrusted sizes.
    pub fn new(len: usize) -> Self {
        match Self::try_new(len) {
            Some(buf) => buf,
            None => panic!("AlignedBuf: {len} bytes cannot be allocated"),
        }
    }

    /// Like [`AlignedBuf::new`], but None when `len` is too large to lay out. (An
    /// out-of-memory condition still aborts, as for every std allocation.)
    pub fn try_new(len: usize) -> Option<Self> {
        let rounded = len.checked_next_multiple_of(ALIGN)?;
        if rounded == 0 {
            return Some(AlignedBuf {
                ptr: dangling(),
                len: 0,
            });
        }
        let layout = Layout::from_size_align(rounded, ALIGN).ok()?;
        // SAFETY: `layout` has a non-zero size (checked above) and a valid power-of-two
        // alignment, as `alloc_zeroed` requires.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout);
        };
        Some(AlignedBuf { ptr, len: rounded })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `len` initialised (zeroed at allocation) bytes, or is a
        // non-null aligned dangling pointer with `len == 0`; the borrow is tied to `&self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` guarantees the slice is the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

/// A non-null, [`ALIGN`]-aligned pointer for empty buffers (never dereferenced).
fn dangling() -> NonNull<u8> {
    NonNull::new(std::ptr::without_provenance_mut::<u8>(ALIGN)).unwrap_or(NonNull::dangling())
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        // The layout was valid when the buffer was allocated with these exact values.
        if let Ok(layout) = Layout::from_size_align(self.len, ALIGN) {
            // SAFETY: `ptr` was returned by `alloc_zeroed` with this same layout and has
            // not been freed (Drop runs once).
            unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_up_aligns_and_zeroes() {
        for len in [1usize, 100, 4095, 4096, 4097, 3 * 4096 + 5] {
            let mut b = AlignedBuf::new(len);
            assert_eq!(b.len(), len.next_multiple_of(ALIGN));
            assert_eq!(b.as_ptr() as usize % ALIGN, 0);
            assert!(b.as_slice().iter().all(|&x| x == 0));
            b.as_mut_slice()[len - 1] = 7;
            assert_eq!(b[len - 1], 7);
        }
    }

    #[test]
    fn empty_buffer_is_valid() {
        let mut b = AlignedBuf::new(0);
        assert!(b.is_empty());
        assert_eq!(b.as_slice(), &[] as &[u8]);
        assert_eq!(b.as_mut_slice().len(), 0);
        assert_eq!(b.as_ptr() as usize % ALIGN, 0);
    }

    #[test]
    fn too_large_is_none() {
        assert!(AlignedBuf::try_new(usize::MAX).is_none());
        assert!(AlignedBuf::try_new(isize::MAX as usize).is_none());
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<AlignedBuf>();
    }
}
