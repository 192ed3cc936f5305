//! Piece → file spans. Pure. CONTRACT STUB — owned by the storage helper.

use std::path::PathBuf;

/// A file as storage sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpec {
    /// Relative to the destination root (already validated by metainfo).
    pub path: PathBuf,
    pub length: u64,
    /// BEP 47 pad file: takes piece space, never on disk.
    pub pad: bool,
}

/// A part of a piece that lies in one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub file: usize,
    pub file_offset: u64,
    pub piece_offset: u32,
    pub len: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    _private: (),
}

impl Layout {
    pub fn new(piece_length: u64, files: Vec<FileSpec>) -> Layout {
        let _ = (piece_length, files);
        todo!()
    }
    /// From a torrent: paths from `Metainfo::relative_path`.
    pub fn from_metainfo(meta: &crate::metainfo::Metainfo) -> Layout {
        let _ = meta;
        todo!()
    }
    pub fn piece_length(&self) -> u64 {
        todo!()
    }
    pub fn total_length(&self) -> u64 {
        todo!()
    }
    pub fn piece_count(&self) -> u32 {
        todo!()
    }
    pub fn piece_size(&self, index: u32) -> u32 {
        let _ = index;
        todo!()
    }
    pub fn files(&self) -> &[FileSpec] {
        todo!()
    }
    /// The spans of piece `index` in non-pad files, in order; zero-length files have none.
    pub fn spans(&self, index: u32) -> Vec<Span> {
        let _ = index;
        todo!()
    }
}
