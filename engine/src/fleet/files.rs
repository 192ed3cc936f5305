//! Durable file replacement: a reader sees the old content or the new, never a mix, and
//! after a crash the new content is there whole or not at all.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// Fsyncs a directory, so entries created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory holding `path` ("." for a bare name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Replaces `path` with `bytes`: written to a temporary file beside it, fsynced, renamed
/// over it, and the directory fsynced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_of(path);
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    result
}

/// Points the symbolic link `link` at `target`, atomically: a new link is made beside it
/// and renamed over the old one (rename replaces a directory entry in one step), so a
/// path through `link` resolves to the old target or the new one, never to nothing.
pub fn replace_symlink(target: &Path, link: &Path) -> io::Result<()> {
    let dir = parent_of(link);
    let tmp = link.with_file_name(format!(
        ".{}.tmp.{}",
        link.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        std::process::id()
    ));
    std::fs::remove_file(&tmp).ok();
    std::os::unix::fs::symlink(target, &tmp)?;
    if let Err(e) = std::fs::rename(&tmp, link) {
        std::fs::remove_file(&tmp).ok();
        return Err(e);
    }
    sync_dir(dir)
}

/// Takes the exclusive lock of `path` (created if missing) without waiting: the file, held
/// for as long as the lock is, or None when another process holds it.
pub fn try_lock_file(path: &Path) -> io::Result<Option<File>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("feed.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_held_lock_is_refused_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let held = try_lock_file(&p).unwrap().expect("free at first");
        assert!(try_lock_file(&p).unwrap().is_none());
        drop(held);
        assert!(try_lock_file(&p).unwrap().is_some());
    }

    #[test]
    fn symlink_flip_replaces_the_link() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::create_dir(dir.path().join("b")).unwrap();
        let link = dir.path().join("current");
        replace_symlink(Path::new("a"), &link).unwrap();
        replace_symlink(Path::new("b"), &link).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("b"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }
}
