//! The post-verify mlock pass: lock a verified blob's pages in memory and hold them.
//! CONTRACT STUB — owned by the storage helper.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ResidencyError {
    /// The message says how to raise the limit.
    #[error(
        "cannot lock {need} bytes: RLIMIT_MEMLOCK is {limit} bytes; raise it with a memlock \
         entry in /etc/security/limits.d, LimitMEMLOCK=infinity in the systemd unit, or \
         grant CAP_IPC_LOCK"
    )]
    LimitTooLow { need: u64, limit: u64 },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Locked files; unlocked and unmapped on drop.
#[derive(Debug)]
pub struct LockedFiles {
    _private: (),
}

impl LockedFiles {
    pub fn locked_bytes(&self) -> u64 {
        todo!()
    }
}

/// Maps and locks every file whole; all or nothing (never a silent partial lock).
pub fn lock_files(paths: &[PathBuf]) -> Result<LockedFiles, ResidencyError> {
    let _ = paths;
    todo!()
}
