//! What a torrent's files look like on disk (inode, size, mtime and ctime of each), so a
//! complete verification can be trusted on a later start while the files are unchanged:
//! `seed` of a 100 GiB blob then starts at once instead of hashing it again. Any write
//! changes mtime and ctime, and ctime cannot be set from user space.

use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::resume::RESUME_DIR;
use crate::verify::Sha1Stream;

/// `dest/.ringswarm/<info-hash hex>.verified`
pub fn fingerprint_path(dest: &Path, info_hash: &[u8; 20]) -> PathBuf {
    dest.join(RESUME_DIR)
        .join(format!("{}.verified", crate::hex(info_hash)))
}

/// SHA-1 over each file's (path, device, inode, size, mtime, ctime), in order.
pub fn fingerprint(paths: &[PathBuf]) -> io::Result<[u8; 20]> {
    let mut h = Sha1Stream::new();
    for p in paths {
        let m = std::fs::metadata(p)?;
        h.update(p.as_os_str().as_encoded_bytes());
        for v in [m.dev(), m.ino(), m.size()] {
            h.update(&v.to_le_bytes());
        }
        for v in [m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()] {
            h.update(&v.to_le_bytes());
        }
    }
    Ok(h.finish())
}

/// Records that `paths` were verified complete as they are now (best effort: a lost
/// record only costs a recheck).
pub fn save(record: &Path, paths: &[PathBuf]) -> io::Result<()> {
    let fp = fingerprint(paths)?;
    if let Some(dir) = record.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = record.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(crate::hex(&fp).as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, record)
}

/// Whether `paths` still look as they did when `record` was saved.
pub fn matches(record: &Path, paths: &[PathBuf]) -> bool {
    match (std::fs::read(record), fingerprint(paths)) {
        (Ok(saved), Ok(now)) => saved == crate::hex(&now).as_bytes(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_breaks_the_match() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("data");
        std::fs::write(&f, b"hello").unwrap();
        let record = fingerprint_path(dir.path(), &[7; 20]);
        let paths = vec![f.clone()];
        assert!(!matches(&record, &paths));
        save(&record, &paths).unwrap();
        assert!(matches(&record, &paths));
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(&f, b"hellp").unwrap();
        assert!(!matches(&record, &paths));
    }
}
