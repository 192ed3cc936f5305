//! Fast resume: the verified-piece bitfield, written atomically and only after the data it
//! records is durable. CONTRACT STUB — owned by the storage helper.

use std::path::{Path, PathBuf};

use crate::bitfield::Bitfield;

/// `dest/.ringswarm/<info-hash hex>.resume`
pub fn resume_path(dest: &Path, info_hash: &[u8; 20]) -> PathBuf {
    let _ = (dest, info_hash);
    todo!()
}

/// The recorded bitfield, or None when the file is absent, for another torrent, or
/// damaged (checksummed; a damaged file is logged and ignored).
pub fn load(path: &Path, info_hash: &[u8; 20], piece_count: u32) -> Option<Bitfield> {
    let _ = (path, info_hash, piece_count);
    todo!()
}

/// Writes atomically: temp file, fsync, rename, fsync of the directory.
pub fn save(path: &Path, info_hash: &[u8; 20], verified: &Bitfield) -> std::io::Result<()> {
    let _ = (path, info_hash, verified);
    todo!()
}
