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

use super::files::{replace_symlink, sync_dir, write_atomic};
use crate::feed::Release;
use crate::storage::resume::RESUME_DIR;

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

/// Writes a release's record and torrent into `dir/.ringswarm/`.
pub fn write_record(dir: &Path, release: &Release, activated_ms: Option<u64>) -> io::Result<()> {
    let meta_dir = dir.join(RESUME_DIR);
    std::fs::create_dir_all(&meta_dir)?;
    write_atomic(&meta_dir.join(TORRENT), &release.metainfo)?;
    let record = ReleaseRecord {
        name: release.name.clone(),
        version: release.version.clone(),
        info_hash: crate::hex(&release.info_hash),
        size: release.size,
        published_ms: release.published_ms,
        activated_ms,
    };
    let text = serde_json::to_vec_pretty(&record).unwrap_or_default();
    write_atomic(&meta_dir.join(RECORD), &text)
}

pub fn read_record(dir: &Path) -> io::Result<ReleaseRecord> {
    let bytes = std::fs::read(dir.join(RESUME_DIR).join(RECORD))?;
    serde_json::from_slice(&bytes).map_err(io::Error::other)
}

/// The release a directory holds: its record and torrent, checked against each other.
pub fn read_release(dir: &Path) -> io::Result<(Release, Option<u64>)> {
    let record = read_record(dir)?;
    let torrent = std::fs::read(dir.join(RESUME_DIR).join(TORRENT))?;
    let release = Release::new(&record.name, &record.version, torrent, record.published_ms)
        .map_err(io::Error::other)?;
    if crate::hex(&release.info_hash) != record.info_hash {
        return Err(io::Error::other(
            "release.json and release.torrent disagree",
        ));
    }
    Ok((release, record.activated_ms))
}
