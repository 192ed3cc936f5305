//! Piece storage: piece → file spans, O_DIRECT I/O of whole verified pieces, unaligned
//! tails, preallocation, durability, fast resume. CONTRACT STUB — owned by the storage
//! helper; the reactor submits the [`IoOp`]s of a plan as `WriteFixed`/`ReadFixed`.

pub mod aligned;
pub mod layout;
pub mod resume;

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

pub use aligned::AlignedBuf;
pub use layout::{FileSpec, Layout, Span};

/// O_DIRECT alignment for offsets, lengths and buffer addresses.
pub const ALIGN: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("not enough disk space for {path}: {needed} bytes needed")]
    NoSpace { path: PathBuf, needed: u64 },
    #[error("{path}: is {actual} bytes, the torrent says {expected}")]
    WrongSize { path: PathBuf, expected: u64, actual: u64 },
    #[error("{path}: a file of the torrent is missing")]
    Missing { path: PathBuf },
}

/// How files are opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Create missing files and directories, preallocate with `fallocate`, keep existing
    /// data (resume).
    Download,
    /// Existing files of the right sizes, opened read-only.
    Seed,
}

/// One I/O of a piece plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoOp {
    /// Index into the layout's files.
    pub file: usize,
    /// The descriptor to use: O_DIRECT when `direct`, else a buffered one.
    pub fd: RawFd,
    pub direct: bool,
    pub file_offset: u64,
    /// Offset of the data in the piece buffer.
    pub buf_offset: u32,
    /// Bytes to submit. For a direct op at a file's unaligned end this is rounded up to
    /// [`ALIGN`] (the piece buffer has room: its size is the piece length rounded up).
    pub len: u32,
    /// Bytes that are the file's real data (`<= len`); a read completes when at least
    /// this many came back.
    pub data_len: u32,
}

/// The open files of one torrent.
#[derive(Debug)]
pub struct Storage {
    _private: (),
}

impl Storage {
    /// Opens (and in `Download` mode creates and preallocates) every non-pad file below
    /// `root`. ENOSPC from `fallocate` is [`StorageError::NoSpace`].
    pub fn open(root: &Path, layout: Layout, mode: OpenMode) -> Result<Storage, StorageError> {
        let _ = (root, layout, mode);
        todo!()
    }

    pub fn layout(&self) -> &Layout {
        todo!()
    }

    /// Absolute paths of the non-pad files, in layout order.
    pub fn file_paths(&self) -> Vec<PathBuf> {
        todo!()
    }

    /// The writes that store piece `index` from a piece buffer.
    pub fn write_plan(&self, index: u32) -> Vec<IoOp> {
        let _ = index;
        todo!()
    }

    /// The reads that load piece `index` into a piece buffer.
    pub fn read_plan(&self, index: u32) -> Vec<IoOp> {
        let _ = index;
        todo!()
    }

    /// Blocking write of a verified piece (the plan, with `pwrite`).
    pub fn write_piece(&self, index: u32, buf: &AlignedBuf) -> Result<(), StorageError> {
        let _ = (index, buf);
        todo!()
    }

    /// Blocking read of a piece (the plan, with `pread`).
    pub fn read_piece(&self, index: u32, buf: &mut AlignedBuf) -> Result<(), StorageError> {
        let _ = (index, buf);
        todo!()
    }

    /// Makes everything written so far durable: `fdatasync` each file written since the
    /// last call, and drop the pages buffered writes left in the cache
    /// (`POSIX_FADV_DONTNEED`).
    pub fn sync(&self) -> Result<(), StorageError> {
        todo!()
    }

    /// After the last piece: truncate padded tails to the true lengths, `fsync` files and
    /// their directories.
    pub fn finish(&self) -> Result<(), StorageError> {
        todo!()
    }

    /// Hashes the data on disk and returns which pieces match `hashes` (resume without a
    /// resume file, and `seed` start-up), on `threads` threads.
    pub fn recheck(
        &self,
        hashes: &[[u8; 20]],
        threads: usize,
    ) -> Result<crate::bitfield::Bitfield, StorageError> {
        let _ = (hashes, threads);
        todo!()
    }
}
