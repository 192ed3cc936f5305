//! A heap buffer aligned for O_DIRECT. CONTRACT STUB — owned by the storage helper.

/// A zeroed buffer whose address and length are multiples of [`super::ALIGN`].
#[derive(Debug)]
pub struct AlignedBuf {
    _private: (),
}

impl AlignedBuf {
    /// `len` is rounded up to a multiple of [`super::ALIGN`].
    pub fn new(len: usize) -> Self {
        let _ = len;
        todo!()
    }
    pub fn len(&self) -> usize {
        todo!()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn as_ptr(&self) -> *const u8 {
        todo!()
    }
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        todo!()
    }
    pub fn as_slice(&self) -> &[u8] {
        todo!()
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        todo!()
    }
}
