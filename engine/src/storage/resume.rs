//! Fast resume: the verified-piece bitfield, written atomically and only after the data it
//! records is durable (the caller runs [`super::Storage::sync`] first).
//!
//! File format (all integers little-endian):
//!
//! ```text
//! "RSRESUME"            8 bytes magic
//! version               u32 (1)
//! info_hash             20 bytes
//! piece count           u32
//! bitfield              ceil(piece count / 8) bytes, BEP 3 layout
//! checksum              SHA-1 of every preceding byte
//! ```

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::bitfield::Bitfield;

const MAGIC: &[u8; 8] = b"RSRESUME";
const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 20 + 4;
const CHECKSUM: usize = 20;

/// The directory below a destination that holds resume files.
pub const RESUME_DIR: &str = ".ringswarm";

/// `dest/.ringswarm/<info-hash hex>.resume`
pub fn resume_path(dest: &Path, info_hash: &[u8; 20]) -> PathBuf {
    dest.join(RESUME_DIR)
        .join(format!("{}.resume", crate::hex(info_hash)))
}

/// The bytes of a resume file for `verified`.
pub fn encode(info_hash: &[u8; 20], verified: &Bitfield) -> Vec<u8> {
    let bits = verified.as_bytes();
    let mut out = Vec::with_capacity(HEADER + bits.len() + CHECKSUM);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(info_hash);
    out.extend_from_slice(&verified.len().to_le_bytes());
    out.extend_from_slice(bits);
    let sum = crate::verify::sha1(&out);
    out.extend_from_slice(&sum);
    out
}

/// Why a resume file's bytes were not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Well formed, but for another torrent.
    OtherTorrent,
    /// Damaged, truncated, of another version or another piece count; the reason says which.
    Damaged(String),
}

/// Parses resume file bytes for the torrent `info_hash` with `piece_count` pieces.
pub fn decode(
    bytes: &[u8],
    info_hash: &[u8; 20],
    piece_count: u32,
) -> Result<Bitfield, DecodeError> {
    let damaged = |why: String| Err(DecodeError::Damaged(why));
    if bytes.len() < HEADER + CHECKSUM {
        return damaged(format!("{} bytes is too short", bytes.len()));
    }
    if &bytes[..8] != MAGIC {
        return damaged("bad magic".into());
    }
    let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM);
    if crate::verify::sha1(body)[..] != *sum {
        return damaged("checksum mismatch".into());
    }
    let version = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
    if version != VERSION {
        return damaged(format!("unknown version {version}"));
    }
    if &body[12..32] != info_hash {
        return Err(DecodeError::OtherTorrent);
    }
    let count = u32::from_le_bytes([body[32], body[33], body[34], body[35]]);
    if count != piece_count {
        return damaged(format!(
            "records {count} pieces, the torrent has {piece_count}"
        ));
    }
    Bitfield::from_bytes(&body[HEADER..], piece_count)
        .map_err(|e| DecodeError::Damaged(e.to_string()))
}

/// The recorded bitfield, or None when the file is absent, for another torrent, or
/// damaged (checksummed; a damaged file is logged and ignored).
pub fn load(path: &Path, info_hash: &[u8; 20], piece_count: u32) -> Option<Bitfield> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), err = %e, "cannot read resume file; rechecking instead");
            return None;
        }
    };
    // Never read more than a valid file for this torrent can hold (plus one byte to notice
    // a longer file).
    let want = HEADER + piece_count.div_ceil(8) as usize + CHECKSUM;
    let mut bytes = Vec::with_capacity(want + 1);
    if let Err(e) = file.take(want as u64 + 1).read_to_end(&mut bytes) {
        tracing::warn!(path = %path.display(), err = %e, "cannot read resume file; rechecking instead");
        return None;
    }
    match decode(&bytes, info_hash, piece_count) {
        Ok(bits) => Some(bits),
        Err(DecodeError::OtherTorrent) => {
            tracing::warn!(path = %path.display(), "resume file is for another torrent; ignored");
            None
        }
        Err(DecodeError::Damaged(why)) => {
            tracing::warn!(path = %path.display(), %why, "resume file is damaged; ignored");
            None
        }
    }
}

/// Writes atomically: temp file, fsync, rename, fsync of the directory.
pub fn save(path: &Path, info_hash: &[u8; 20], verified: &Bitfield) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let created = !dir.exists();
    fs::create_dir_all(&dir)?;
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "resume path has no file name")
    })?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(&encode(info_hash, verified))?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        fs::File::open(&dir)?.sync_all()?;
        if created {
            // The new directory's own entry must be durable too.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::File::open(parent)?.sync_all()?;
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    fn sample(n: u32) -> Bitfield {
        let mut b = Bitfield::new(n);
        for i in (0..n).filter(|i| i % 3 == 0) {
            b.set(i);
        }
        b
    }

    #[test]
    fn path_is_below_dot_ringswarm() {
        let p = resume_path(Path::new("/data/x"), &[0xab; 20]);
        assert_eq!(
            p,
            Path::new("/data/x/.ringswarm").join(format!("{}.resume", "ab".repeat(20)))
        );
    }

    #[test]
    fn save_then_load() {
        let d = dir();
        let hash = [7u8; 20];
        let path = resume_path(d.path(), &hash);
        assert_eq!(load(&path, &hash, 21), None);
        let bits = sample(21);
        save(&path, &hash, &bits).unwrap();
        assert_eq!(load(&path, &hash, 21), Some(bits.clone()));
        // Overwrite with a newer state.
        let full = Bitfield::full(21);
        save(&path, &hash, &full).unwrap();
        assert_eq!(load(&path, &hash, 21), Some(full));
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
        // Zero pieces is valid.
        save(&path, &hash, &Bitfield::new(0)).unwrap();
        assert_eq!(load(&path, &hash, 0), Some(Bitfield::new(0)));
    }

    #[test]
    fn mismatches_and_damage_are_ignored() {
        let d = dir();
        let hash = [1u8; 20];
        let path = resume_path(d.path(), &hash);
        save(&path, &hash, &sample(40)).unwrap();
        assert_eq!(load(&path, &[2u8; 20], 40), None);
        assert_eq!(load(&path, &hash, 41), None);
        assert_eq!(load(&path, &hash, 39), None);

        let good = fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            fs::write(&path, &bad).unwrap();
            assert_eq!(load(&path, &hash, 40), None, "flipped byte {i}");
        }
        for cut in 0..good.len() {
            fs::write(&path, &good[..cut]).unwrap();
            assert_eq!(load(&path, &hash, 40), None, "cut at {cut}");
        }
        let mut long = good.clone();
        long.push(0);
        fs::write(&path, &long).unwrap();
        assert_eq!(load(&path, &hash, 40), None);
        fs::write(&path, &good).unwrap();
        assert_eq!(load(&path, &hash, 40), Some(sample(40)));
    }

    #[test]
    fn decode_reports_reasons() {
        let hash = [3u8; 20];
        let bytes = encode(&hash, &sample(9));
        assert_eq!(
            decode(&bytes, &[4u8; 20], 9),
            Err(DecodeError::OtherTorrent)
        );
        assert!(matches!(
            decode(&bytes, &hash, 10),
            Err(DecodeError::Damaged(_))
        ));
        assert!(matches!(
            decode(b"short", &hash, 9),
            Err(DecodeError::Damaged(_))
        ));
        // Spare bits set, with a valid checksum.
        let mut body = bytes[..bytes.len() - 20].to_vec();
        *body.last_mut().unwrap() |= 0x01;
        let sum = crate::verify::sha1(&body);
        body.extend_from_slice(&sum);
        assert!(matches!(
            decode(&body, &hash, 9),
            Err(DecodeError::Damaged(_))
        ));
    }
}
