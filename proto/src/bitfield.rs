//! Piece bitfields: the BEP 3 wire layout (high bit of byte 0 is piece 0) and an atomic
//! variant shared by worker cores.

use std::sync::atomic::{AtomicU64, Ordering};

/// A bitfield error: what a peer or a resume file sent does not fit the torrent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BitfieldError {
    #[error("bitfield is {got} bytes, expected {want} for {pieces} pieces")]
    WrongLength {
        got: usize,
        want: usize,
        pieces: u32,
    },
    #[error("bitfield has spare bits set past piece {pieces}")]
    SpareBitsSet { pieces: u32 },
}

/// A fixed-length set of piece indices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitfield {
    bytes: Vec<u8>,
    len: u32,
}

impl Bitfield {
    /// An empty bitfield for `len` pieces.
    pub fn new(len: u32) -> Self {
        Self {
            bytes: vec![0; len.div_ceil(8) as usize],
            len,
        }
    }

    /// A bitfield with every piece set.
    pub fn full(len: u32) -> Self {
        let mut b = Self::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    /// Parses the wire form; the length must match and spare bits must be clear (BEP 3).
    pub fn from_bytes(bytes: &[u8], len: u32) -> Result<Self, BitfieldError> {
        let want = len.div_ceil(8) as usize;
        if bytes.len() != want {
            return Err(BitfieldError::WrongLength {
                got: bytes.len(),
                want,
                pieces: len,
            });
        }
        if !len.is_multiple_of(8) {
            let spare_mask = 0xffu8 >> (len % 8);
            if bytes[want - 1] & spare_mask != 0 {
                return Err(BitfieldError::SpareBitsSet { pieces: len });
            }
        }
        Ok(Self {
            bytes: bytes.to_vec(),
            len,
        })
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, index: u32) -> bool {
        index < self.len && self.bytes[(index / 8) as usize] & (0x80 >> (index % 8)) != 0
    }

    pub fn set(&mut self, index: u32) {
        if index < self.len {
            self.bytes[(index / 8) as usize] |= 0x80 >> (index % 8);
        }
    }

    pub fn clear(&mut self, index: u32) {
        if index < self.len {
            self.bytes[(index / 8) as usize] &= !(0x80 >> (index % 8));
        }
    }

    pub fn count_ones(&self) -> u32 {
        self.bytes.iter().map(|b| b.count_ones()).sum()
    }

    pub fn is_complete(&self) -> bool {
        self.count_ones() == self.len
    }

    /// The wire form.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Indices of set pieces, ascending.
    pub fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.words()).flat_map(move |w| {
            let mut bits = self.word(w);
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let b = bits.trailing_zeros();
                    bits &= bits - 1;
                    w * 64 + b
                })
            })
        })
    }

    /// How many 64-bit words [`Bitfield::word`] numbers.
    pub fn words(&self) -> u32 {
        self.len.div_ceil(64)
    }

    /// Pieces `64 × w` to `64 × w + 63` as a word, piece `64 × w + k` in bit `k` (the
    /// layout of [`AtomicBitfield::word`]), so sets can be combined 64 pieces at a time.
    /// Bits past the end are clear.
    pub fn word(&self, w: u32) -> u64 {
        let start = w as usize * 8;
        let mut chunk = [0u8; 8];
        if let Some(bytes) = self.bytes.get(start..) {
            let n = bytes.len().min(8);
            chunk[..n].copy_from_slice(&bytes[..n]);
        }
        // Byte j's bit 0x80 >> t is piece 8j + t: big-endian puts it at bit 63 - 8j - t,
        // and reversing the word brings it to bit 8j + t.
        u64::from_be_bytes(chunk).reverse_bits()
    }
}

/// A bitfield shared between cores; updates are lock-free.
#[derive(Debug)]
pub struct AtomicBitfield {
    words: Box<[AtomicU64]>,
    len: u32,
}

impl AtomicBitfield {
    pub fn new(len: u32) -> Self {
        let words = (0..len.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        Self { words, len }
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn slot(index: u32) -> (usize, u64) {
        ((index / 64) as usize, 1u64 << (index % 64))
    }

    pub fn get(&self, index: u32) -> bool {
        if index >= self.len {
            return false;
        }
        let (w, m) = Self::slot(index);
        self.words[w].load(Ordering::Acquire) & m != 0
    }

    /// Sets the bit; returns true when this call changed it (it was clear before).
    pub fn set(&self, index: u32) -> bool {
        if index >= self.len {
            return false;
        }
        let (w, m) = Self::slot(index);
        self.words[w].fetch_or(m, Ordering::AcqRel) & m == 0
    }

    /// Clears the bit; returns true when this call changed it.
    pub fn clear(&self, index: u32) -> bool {
        if index >= self.len {
            return false;
        }
        let (w, m) = Self::slot(index);
        self.words[w].fetch_and(!m, Ordering::AcqRel) & m != 0
    }

    pub fn count_ones(&self) -> u32 {
        self.words
            .iter()
            .map(|w| w.load(Ordering::Acquire).count_ones())
            .sum()
    }

    /// Bits `64 × w` to `64 × w + 63` (bit `k` is index `64 × w + k`); 0 past the end.
    pub fn word(&self, w: u32) -> u64 {
        self.words
            .get(w as usize)
            .map_or(0, |x| x.load(Ordering::Acquire))
    }

    /// Indices of clear bits, ascending (each word read once, as the walk reaches it).
    pub fn zeros(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len.div_ceil(64)).flat_map(move |w| {
            let mut bits = !self.word(w);
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let b = bits.trailing_zeros();
                    bits &= bits - 1;
                    w * 64 + b
                })
            })
            .take_while(move |&i| i < self.len)
        })
    }

    /// Positions set in neither `self` nor `other` (of the same length).
    pub fn count_neither(&self, other: &AtomicBitfield) -> u32 {
        let full_words = (self.len / 64) as usize;
        let tail_mask = (1u64 << (self.len % 64)).wrapping_sub(1);
        self.words
            .iter()
            .zip(other.words.iter())
            .enumerate()
            .map(|(i, (a, b))| {
                let neither = !(a.load(Ordering::Acquire) | b.load(Ordering::Acquire));
                let mask = if i < full_words { u64::MAX } else { tail_mask };
                (neither & mask).count_ones()
            })
            .sum()
    }

    /// A snapshot in wire form.
    pub fn snapshot(&self) -> Bitfield {
        let mut b = Bitfield::new(self.len);
        for i in 0..self.len {
            if self.get(i) {
                b.set(i);
            }
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn words_and_ones_agree_with_get(len in 0u32..300, picks in proptest::collection::vec(0u32..300, 0..80)) {
            let mut b = Bitfield::new(len);
            let a = AtomicBitfield::new(len);
            for &i in &picks {
                b.set(i);
                a.set(i);
            }
            let want: Vec<u32> = (0..len).filter(|&i| b.get(i)).collect();
            prop_assert_eq!(b.ones().collect::<Vec<_>>(), want);
            let clear: Vec<u32> = (0..len).filter(|&i| !b.get(i)).collect();
            prop_assert_eq!(a.zeros().collect::<Vec<_>>(), clear);
            for w in 0..b.words() + 1 {
                prop_assert_eq!(b.word(w), a.word(w), "word {}", w);
                for k in 0..64 {
                    prop_assert_eq!(b.word(w) >> k & 1 == 1, b.get(w * 64 + k));
                }
            }
        }
    }

    #[test]
    fn wire_layout_is_high_bit_first() {
        let mut b = Bitfield::new(10);
        b.set(0);
        b.set(9);
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
    }

    #[test]
    fn rejects_wrong_length_and_spare_bits() {
        assert!(matches!(
            Bitfield::from_bytes(&[0], 10),
            Err(BitfieldError::WrongLength { .. })
        ));
        assert_eq!(
            Bitfield::from_bytes(&[0, 0x20], 10),
            Err(BitfieldError::SpareBitsSet { pieces: 10 })
        );
    }

    proptest! {
        #[test]
        fn count_neither_matches_a_scan(len in 0u32..300, a in any::<u64>(), b in any::<u64>()) {
            let (x, y) = (AtomicBitfield::new(len), AtomicBitfield::new(len));
            for i in 0..len {
                if a.rotate_left(i % 64) & 1 == 1 { x.set(i); }
                if (b.rotate_left(i % 64) ^ u64::from(i % 3)) & 1 == 1 { y.set(i); }
            }
            let scan = (0..len).filter(|&i| !x.get(i) && !y.get(i)).count() as u32;
            prop_assert_eq!(x.count_neither(&y), scan);
        }

        #[test]
        fn round_trip(len in 0u32..300, seed in any::<u64>()) {
            let mut b = Bitfield::new(len);
            for i in 0..len {
                if (seed.rotate_left(i % 64) ^ u64::from(i)) & 1 == 1 { b.set(i); }
            }
            let back = Bitfield::from_bytes(b.as_bytes(), len).unwrap();
            prop_assert_eq!(&back, &b);
            let a = AtomicBitfield::new(len);
            for i in b.ones() { prop_assert!(a.set(i)); }
            prop_assert_eq!(a.snapshot(), b.clone());
            prop_assert_eq!(a.count_ones(), b.count_ones());
        }
    }
}
