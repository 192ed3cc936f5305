//! Metainfo v1 (BEP 3), single- and multi-file, announce-list (BEP 12), pad files (BEP 47),
//! and path safety. Pure: no I/O. CONTRACT STUB — owned by the formats helper.

use std::path::PathBuf;

/// What is wrong with a torrent file, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum MetainfoError {
    #[error("torrent is not valid bencode: {0}")]
    Bencode(#[from] crate::bencode::BencodeError),
    #[error("torrent field `{field}` is missing")]
    Missing { field: &'static str },
    #[error("torrent field `{field}` is invalid: {reason}")]
    Invalid { field: String, reason: String },
    #[error("unsafe path in torrent field `{field}`: {reason}")]
    UnsafePath { field: String, reason: String },
}

/// One file of the torrent, in torrent order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Path components below the torrent's root; validated (no `..`, no separators,
    /// not empty, no NUL).
    pub path: Vec<String>,
    pub length: u64,
    /// Byte offset of the file in the torrent's concatenated data.
    pub offset: u64,
    /// A BEP 47 pad file (attr `p`): occupies piece space, never written to disk.
    pub pad: bool,
}

/// The info dictionary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// Root name: the file name (single-file) or directory name (multi-file); validated as
    /// one safe path component.
    pub name: String,
    pub piece_length: u64,
    pub pieces: Vec<[u8; 20]>,
    /// Single-file torrents have one entry whose path is empty (the file is `name` itself).
    pub files: Vec<FileEntry>,
    pub multi_file: bool,
    pub total_length: u64,
    pub private: bool,
}

/// A parsed torrent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metainfo {
    /// SHA-1 of the info dict's raw bytes as received.
    pub info_hash: [u8; 20],
    /// The info dict's raw bytes (served over BEP 9).
    pub info_bytes: Vec<u8>,
    pub announce: Option<String>,
    /// BEP 12 tiers; when the torrent has only `announce`, this is `[[announce]]`.
    pub announce_list: Vec<Vec<String>>,
    pub info: Info,
}

impl Metainfo {
    /// Parses a .torrent file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Metainfo, MetainfoError> {
        let _ = bytes;
        todo!()
    }

    /// Builds a metainfo from a bare info dict (fetched over BEP 9) plus trackers.
    pub fn from_info_bytes(
        info_bytes: &[u8],
        announce_list: Vec<Vec<String>>,
    ) -> Result<Metainfo, MetainfoError> {
        let _ = (info_bytes, announce_list);
        todo!()
    }

    /// Builds a metainfo from an [`Info`] (used by `create`): encodes the info dict
    /// canonically, hashes it, and sets announce/announce-list from the tiers.
    pub fn from_info(info: Info, announce_list: Vec<Vec<String>>) -> Metainfo {
        let _ = (info, announce_list);
        todo!()
    }

    /// The .torrent file bytes (canonical bencode; `info` is `info_bytes` verbatim).
    pub fn to_bytes(&self) -> Vec<u8> {
        todo!()
    }

    pub fn piece_count(&self) -> u32 {
        self.info.pieces.len() as u32
    }

    /// Length of piece `index` (the last one may be short).
    pub fn piece_size(&self, index: u32) -> u32 {
        let _ = index;
        todo!()
    }

    /// Where `file` lands below a destination directory: `name` for single-file,
    /// `name/a/b` for multi-file. Never escapes the destination (paths are validated).
    pub fn relative_path(&self, file: &FileEntry) -> PathBuf {
        let _ = file;
        todo!()
    }
}

/// Checks one path component from a torrent; `field` names it in the error.
pub fn check_component(component: &str, field: &str) -> Result<(), MetainfoError> {
    let _ = (component, field);
    todo!()
}
