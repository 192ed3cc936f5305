//! The agent's directory:
//!
//! ```text
//! DIR/.staging/<info-hash>/      a download in progress (resumable after a restart)
//! DIR/releases/NAME/VERSION/     a verified release; the data is at VERSION/<torrent name>
//! DIR/NAME/current               symbolic link to ../releases/NAME/VERSION
//! DIR/.agent/                    the agent's own state (feed sequence, status socket)
//! ```
//!
//! A staging or release directory keeps, in its `.ringswarm/` folder, the engine's resume
//! records and the agent's `release.json` + `release.torrent`, so a restart knows every
//! release on disk without the feed. Staging and releases are on one filesystem, so moving
//! a verified download into `releases/` is one rename. The resume record moves with it and
//! stays valid: it is bound to the files' identity (device, inode, size, mtime, ctime), not
//! to their paths, so it is never rewritten for the move; a file changed since makes a
//! restart hash it again (`storage::fingerprint`). No torrent can write into `.ringswarm/`
//! (the name is refused in torrents).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::files::{replace_symlink, sync_dir};
use crate::feed::Release;
use crate::storage::beneath::Dir;
use crate::storage::resume::RESUME_DIR;
use crate::storage::StorageError;

const RECORD: &str = "release.json";
const TORRENT: &str = "release.torrent";

/// What the agent remembers of a release, beside its data.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRecord {
    pub name: String,
    pub version: String,
    pub info_hash: String,
    pub size: u64,
    pub published_ms: u64,
    /// When it was switched in here (None while staged).
    #[serde(default)]
    pub activated_ms: Option<u64>,
}

/// The paths of an agent directory.
#[derive(Clone, Debug)]
pub struct AgentDir {
    root: PathBuf,
}

impl AgentDir {
    pub fn new(root: &Path) -> AgentDir {
        AgentDir {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn staging_root(&self) -> PathBuf {
        self.root.join(".staging")
    }

    pub fn staging(&self, info_hash: &[u8; 20]) -> PathBuf {
        self.staging_root().join(crate::hex(info_hash))
    }

    pub fn releases_root(&self) -> PathBuf {
        self.root.join("releases")
    }

    pub fn release(&self, name: &str, version: &str) -> PathBuf {
        self.releases_root().join(name).join(version)
    }

    pub fn current_link(&self, name: &str) -> PathBuf {
        self.root.join(name).join("current")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.join(".agent")
    }

    /// Creates the directories the agent writes to.
    pub fn create(&self) -> io::Result<()> {
        for d in [self.staging_root(), self.releases_root(), self.state_dir()] {
            std::fs::create_dir_all(d)?;
        }
        Ok(())
    }

    /// The version `NAME/current` points at, if any.
    pub fn current_version(&self, name: &str) -> Option<String> {
        let target = std::fs::read_link(self.current_link(name)).ok()?;
        target
            .file_name()
            .and_then(|v| v.to_str())
            .map(str::to_owned)
    }

    /// Points `NAME/current` at `releases/NAME/VERSION`, atomically (a relative link, so
    /// the directory can be moved or mounted elsewhere).
    pub fn flip_current(&self, name: &str, version: &str) -> io::Result<()> {
        let link = self.current_link(name);
        if let Some(dir) = link.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let target = Path::new("..").join("releases").join(name).join(version);
        replace_symlink(&target, &link)
    }

    /// Moves a finished download into `releases/NAME/VERSION` (one rename; both
    /// directories fsynced). A leftover directory of the same version that is not current
    /// (an activation cut short) is replaced.
    pub fn promote(&self, info_hash: &[u8; 20], name: &str, version: &str) -> io::Result<PathBuf> {
        let from = self.staging(info_hash);
        let to = self.release(name, version);
        let parent = self.releases_root().join(name);
        std::fs::create_dir_all(&parent)?;
        let current = self.current_version(name).as_deref() == Some(version);
        if to.exists() && current {
            // The current release's directory did not verify (it was not taken back after
            // a restart): swap the good copy in, in one step, so `current` never leads to
            // nothing; readers with files open keep reading the old ones.
            crate::storage::exchange_paths(&from, &to)?;
            std::fs::remove_dir_all(&from).ok();
        } else {
            if to.exists() {
                std::fs::remove_dir_all(&to)?;
            }
            std::fs::rename(&from, &to)?;
        }
        // The data is verified and now here: a failed directory sync must not make the
        // caller believe it is still in staging (it would fetch it again and delete this).
        for dir in [parent.as_path(), self.staging_root().as_path()] {
            if let Err(e) = sync_dir(dir) {
                tracing::error!(dir = %dir.display(), err = %e, "cannot fsync after moving a release; the move may not survive a crash");
            }
        }
        Ok(to)
    }

    /// The releases on disk: `(record, directory)` for every `releases/NAME/VERSION` with a
    /// readable record.
    pub fn scan_releases(&self) -> Vec<(ReleaseRecord, PathBuf)> {
        let mut out = Vec::new();
        let Ok(names) = std::fs::read_dir(self.releases_root()) else {
            return out;
        };
        for name in names.flatten() {
            let Ok(versions) = std::fs::read_dir(name.path()) else {
                continue;
            };
            for v in versions.flatten() {
                let dir = v.path();
                match read_record(&dir) {
                    Ok(r) => out.push((r, dir)),
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), err = %e, "not a release; left alone")
                    }
                }
            }
        }
        out
    }

    /// The staging directories: `(info-hash hex, path)`.
    pub fn scan_staging(&self) -> Vec<(String, PathBuf)> {
        std::fs::read_dir(self.staging_root())
            .map(|rd| {
                rd.flatten()
                    .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The largest `release.json` read back.
const MAX_RECORD: u64 = 64 << 10;
/// The largest `release.torrent` read back: the largest info dictionary accepted, plus
/// room for the rest of the file.
const MAX_TORRENT: u64 = crate::extension::MAX_METADATA_SIZE + (1 << 20);

/// Opens `dir/.ringswarm` (created when `create`, with `dir`) without following links:
/// `dir` and `.ringswarm` must not be symbolic links (refused with an error naming the
/// link); the parent of `dir` is the agent's own (`.staging` or `releases/NAME`).
fn open_meta_dir(dir: &Path, create: bool) -> io::Result<Dir> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a release directory", dir.display()),
        ));
    };
    if create {
        std::fs::create_dir_all(parent)?;
    }
    Dir::open(parent)
        .and_then(|p| p.open_dir(&Path::new(name).join(RESUME_DIR), create))
        .map_err(StorageError::into_io)
}

/// Writes a release's record and torrent into `dir/.ringswarm/`, atomically and without
/// following symbolic links (a link at `dir` or `dir/.ringswarm` is refused).
pub fn write_record(dir: &Path, release: &Release, activated_ms: Option<u64>) -> io::Result<()> {
    let meta_dir = open_meta_dir(dir, true)?;
    meta_dir.write_atomic(TORRENT, &release.metainfo)?;
    let record = ReleaseRecord {
        name: release.name.clone(),
        version: release.version.clone(),
        info_hash: crate::hex(&release.info_hash),
        size: release.size,
        published_ms: release.published_ms,
        activated_ms,
    };
    let text = serde_json::to_vec_pretty(&record).unwrap_or_default();
    meta_dir.write_atomic(RECORD, &text)
}

/// Reads `dir/.ringswarm/release.json` (no link followed, a FIFO not waited on).
pub fn read_record(dir: &Path) -> io::Result<ReleaseRecord> {
    let bytes = open_meta_dir(dir, false)?.read_regular(RECORD, MAX_RECORD)?;
    serde_json::from_slice(&bytes).map_err(io::Error::other)
}

/// The release a directory holds: its record and torrent, checked against each other.
pub fn read_release(dir: &Path) -> io::Result<(Release, Option<u64>)> {
    let meta_dir = open_meta_dir(dir, false)?;
    let record: ReleaseRecord = serde_json::from_slice(&meta_dir.read_regular(RECORD, MAX_RECORD)?)
        .map_err(io::Error::other)?;
    let torrent = meta_dir.read_regular(TORRENT, MAX_TORRENT)?;
    let release = Release::new(&record.name, &record.version, torrent, record.published_ms)
        .map_err(io::Error::other)?;
    if crate::hex(&release.info_hash) != record.info_hash {
        return Err(io::Error::other(
            "release.json and release.torrent disagree",
        ));
    }
    Ok((release, record.activated_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::time::Duration;

    fn release() -> Release {
        use crate::metainfo::{FileEntry, Info, Metainfo};
        let len = 5000;
        let torrent = Metainfo::from_info(
            Info {
                name: "blob".into(),
                piece_length: 16384,
                pieces: vec![[7; 20]],
                files: vec![FileEntry {
                    path: vec![],
                    length: len,
                    offset: 0,
                    pad: false,
                }],
                multi_file: false,
                total_length: len,
                private: false,
            },
            vec![vec!["udp://127.0.0.1:6969".into()]],
        )
        .to_bytes();
        Release::new("index", "v1", torrent, 1000).unwrap()
    }

    fn listing(dir: &Path) -> Vec<std::ffi::OsString> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_record_is_written_and_read_back() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join(".staging").join("abc");
        let r = release();
        write_record(&dir, &r, Some(7)).unwrap();
        write_record(&dir, &r, Some(8)).unwrap();
        assert_eq!(read_release(&dir).unwrap(), (r, Some(8)));
        assert_eq!(
            listing(&dir.join(RESUME_DIR)),
            vec![RECORD.into(), TORRENT.into()] as Vec<std::ffi::OsString>
        );
    }

    #[test]
    fn links_in_a_release_directory_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), b"keep").unwrap();
        let r = release();

        // `.ringswarm` planted as a link to a directory outside.
        let dir = t.path().join("staging").join("a");
        std::fs::create_dir_all(&dir).unwrap();
        symlink(outside.path(), dir.join(RESUME_DIR)).unwrap();
        let e = write_record(&dir, &r, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: is a symbolic link; refusing to write through it",
                dir.join(RESUME_DIR).display()
            )
        );
        assert!(read_release(&dir).is_err());

        // The release directory itself a link.
        let linked = t.path().join("staging").join("b");
        symlink(outside.path(), &linked).unwrap();
        let e = write_record(&linked, &r, None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}: is a symbolic link", linked.display())),
            "{e}"
        );

        // Links at the temp name and at the record: removed or replaced, never written
        // through.
        let dir = t.path().join("staging").join("c");
        let meta = dir.join(RESUME_DIR);
        std::fs::create_dir_all(&meta).unwrap();
        let tmp = format!("{RECORD}.tmp.{}", std::process::id());
        symlink(outside.path().join("victim"), meta.join(&tmp)).unwrap();
        symlink(outside.path().join("victim"), meta.join(TORRENT)).unwrap();
        write_record(&dir, &r, None).unwrap();
        assert!(!std::fs::symlink_metadata(meta.join(TORRENT))
            .unwrap()
            .is_symlink());
        assert_eq!(read_release(&dir).unwrap().0, r);

        // A record that is a link is not read through.
        std::fs::remove_file(meta.join(RECORD)).unwrap();
        std::fs::copy(meta.join(TORRENT), outside.path().join("t")).unwrap();
        symlink(outside.path().join("t"), meta.join(RECORD)).unwrap();
        assert!(read_release(&dir).is_err());

        assert_eq!(
            std::fs::read(outside.path().join("victim")).unwrap(),
            b"keep"
        );
        assert_eq!(
            listing(outside.path()),
            vec!["t".into(), "victim".into()] as Vec<std::ffi::OsString>
        );
    }

    #[test]
    fn a_fifo_in_place_of_a_record_does_not_hang() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("releases").join("index").join("v1");
        write_record(&dir, &release(), Some(1)).unwrap();
        for name in [RECORD, TORRENT] {
            let path = dir.join(RESUME_DIR).join(name);
            std::fs::remove_file(&path).unwrap();
            let made = std::process::Command::new("mkfifo")
                .arg(&path)
                .status()
                .unwrap();
            assert!(made.success());
            let (tx, rx) = std::sync::mpsc::channel();
            let d = dir.clone();
            std::thread::spawn(move || tx.send(read_release(&d).map(|_| ())));
            let got = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("read_release hung");
            let e = got.unwrap_err();
            assert!(e.to_string().contains("not a regular file"), "{e}");
            std::fs::remove_file(&path).unwrap();
            write_record(&dir, &release(), Some(1)).unwrap();
        }
    }
}
