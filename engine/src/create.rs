//! Making metainfo from a file or a directory: BEP 47 pad files so each file of a
//! multi-file torrent starts on a piece boundary; pieces hashed on all cores.
//! CONTRACT STUB — owned by the formats helper.

use std::path::Path;

use crate::metainfo::Metainfo;

/// Default piece size: 4 MiB.
pub const DEFAULT_PIECE_SIZE: u64 = 4 << 20;

#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// Power of two, ≥ 16 KiB.
    pub piece_size: u64,
    /// BEP 12 tiers; each `--tracker` is its own tier.
    pub trackers: Vec<Vec<String>>,
    /// Insert BEP 47 pad files in multi-file torrents (default true).
    pub pad_files: bool,
    /// Hashing threads (default: online CPUs).
    pub threads: usize,
}

impl Default for CreateOptions {
    fn default() -> Self {
        Self {
            piece_size: DEFAULT_PIECE_SIZE,
            trackers: Vec::new(),
            pad_files: true,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("piece size {0} is not a power of two of at least 16 KiB")]
    BadPieceSize(u64),
    #[error("{0}: nothing to share (no regular files)")]
    Empty(String),
    #[error("{path}: {reason}")]
    BadPath { path: String, reason: String },
}

/// Creates the metainfo for `path` (a file or a directory; symlinks are not followed,
/// entries sorted by name for a deterministic result).
pub fn create(path: &Path, options: &CreateOptions) -> Result<Metainfo, CreateError> {
    let _ = (path, options);
    todo!()
}
