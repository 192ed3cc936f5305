//! Exit codes: one per kind of failure a script may want to tell apart, carried by a typed
//! error ([`Failure`]) through anyhow and mapped in `main`. The table below is printed by
//! `--help` and copied in the README.
//!
//! An error without a [`Failure`] in its chain is classified by what caused it: an I/O
//! error of the disk (no space, EIO, permission, read-only) is [`Code::Io`]; anything else
//! is [`Code::Other`].

use std::fmt;

use ringswarm_engine::session::SessionError;
use ringswarm_engine::storage::StorageError;

/// The process's exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Any error not listed below (bad input, a torrent that is not one, no peer or
    /// tracker given at all, ...).
    Other = 1,
    /// No peer answered: the trackers gave none, or no connected peer and no progress for
    /// `--stall-timeout` (every peer refused, reset, never handshook, ...).
    NoPeer = 3,
    /// `--timeout` passed before the download (metadata included) completed.
    Timeout = 4,
    /// The data cannot be verified: every peer tried was banned for corrupt data, a
    /// magnet's metadata from the peers does not describe a valid torrent, or `seed`'s
    /// data does not match its torrent.
    Unverifiable = 5,
    /// The disk failed us: no space (ENOSPC, EDQUOT), EIO, permission denied or a
    /// read-only filesystem on the destination; also `--lock` beyond RLIMIT_MEMLOCK.
    Io = 6,
    /// Stopped by SIGINT (Ctrl-C), as shells report 128 + 2.
    Interrupted = 130,
    /// Stopped by SIGTERM (128 + 15).
    Terminated = 143,
    /// `status`: no agent is running (what is on disk is shown). Exits 3 like [`Code::NoPeer`]
    /// (LSB's "program is not running", as `systemctl status` uses it); a distinct variant
    /// because an enum cannot give two variants one value.
    NotRunning,
}

impl Code {
    pub fn as_i32(self) -> i32 {
        match self {
            Code::NotRunning => 3,
            other => other as i32,
        }
    }
}

/// The table shown at the end of `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success
  1    any other error (bad input, unreadable torrent, no --peer and no tracker given,
       destination in use, --no-clobber)
  2    usage error (bad command line)
  3    no peer: the trackers gave none, or none connected and no progress for
       --stall-timeout (the error names each peer tried and why it failed);
       `status`: no agent is running (what is on disk is shown)
  4    --timeout passed
  5    verification impossible: every peer tried sent corrupt data (banned), a magnet's
       metadata is not a valid torrent, or seed's data does not match its torrent
  6    I/O error: disk full (ENOSPC, EDQUOT), EIO, permission denied, read-only
       filesystem; --lock beyond RLIMIT_MEMLOCK
  130  interrupted by SIGINT (Ctrl-C) before done; a download resumes when run again
  143  terminated by SIGTERM (or SIGHUP) before done
       (seed, and send --receivers 0, serve until stopped: a signal ends them with 0)";

/// An error with its exit code; its message is the error line.
#[derive(Debug)]
pub struct Failure {
    pub code: Code,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// An error that exits with `code`.
pub fn failure(code: Code, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure {
        code,
        message: message.into(),
    })
}

/// The exit code for `e`: its [`Failure`]'s, else an I/O code for a disk error, else 1.
pub fn code_of(e: &anyhow::Error) -> Code {
    if let Some(f) = e.chain().find_map(|c| c.downcast_ref::<Failure>()) {
        return f.code;
    }
    let disk = e.chain().any(|cause| {
        if let Some(s) = cause.downcast_ref::<SessionError>() {
            match s {
                SessionError::Storage(st) => storage_is_disk(st),
                SessionError::Io { source, .. } => is_disk_error(source),
                SessionError::Config(_) => false,
            }
        } else if let Some(st) = cause.downcast_ref::<StorageError>() {
            storage_is_disk(st)
        } else {
            cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(is_disk_error)
        }
    });
    if disk {
        Code::Io
    } else {
        Code::Other
    }
}

fn storage_is_disk(e: &StorageError) -> bool {
    match e {
        StorageError::NoSpace { .. } => true,
        StorageError::Io { source, .. } => is_disk_error(source),
        _ => false,
    }
}

/// Errors of the disk itself or of the right to write on it (not of a bad path or input).
pub fn is_disk_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc_errno::ENOSPC)
            | Some(libc_errno::EDQUOT)
            | Some(libc_errno::EIO)
            | Some(libc_errno::EACCES)
            | Some(libc_errno::EPERM)
            | Some(libc_errno::EROFS)
    ) || e.kind() == std::io::ErrorKind::StorageFull
}

/// A torrent's fatal error text (`TorrentStats::error`) that comes from the disk: the
/// engine keeps it as text, so it is recognised by the system's wording.
pub fn is_disk_error_text(text: &str) -> bool {
    [
        "No space left on device",
        "Disk quota exceeded",
        "Input/output error",
        "Permission denied",
        "Read-only file system",
        "not enough disk space",
    ]
    .iter()
    .any(|w| text.contains(w))
}

/// Linux errno values (the CLI has no libc dependency).
mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const EIO: i32 = 5;
    pub const EACCES: i32 = 13;
    pub const ENOSPC: i32 = 28;
    pub const EROFS: i32 = 30;
    pub const EDQUOT: i32 = 122;
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn a_failure_keeps_its_code_under_context() {
        let e = Err::<(), _>(failure(Code::NoPeer, "no peer for 60s"))
            .context("downloading")
            .unwrap_err();
        assert_eq!(code_of(&e), Code::NoPeer);
        assert_eq!(code_of(&anyhow::anyhow!("plain")), Code::Other);
    }

    #[test]
    fn disk_errors_are_io() {
        let full = std::io::Error::from_raw_os_error(28);
        let e = anyhow::Error::new(full).context("writing x");
        assert_eq!(code_of(&e), Code::Io);
        let st = StorageError::NoSpace {
            path: "/x".into(),
            needed: 1,
        };
        let e = anyhow::Error::new(SessionError::Storage(st)).context("downloading");
        assert_eq!(code_of(&e), Code::Io);
        let gone = std::io::Error::from_raw_os_error(2);
        assert_eq!(code_of(&anyhow::Error::new(gone)), Code::Other);
        assert!(is_disk_error_text(
            "writing a: No space left on device (os error 28)"
        ));
        assert!(!is_disk_error_text("peer went away"));
    }

    #[test]
    fn codes_are_distinct_and_in_the_table() {
        let all = [
            Code::Other,
            Code::NoPeer,
            Code::Timeout,
            Code::Unverifiable,
            Code::Io,
            Code::Interrupted,
            Code::Terminated,
        ];
        for (i, c) in all.iter().enumerate() {
            assert!(all[..i].iter().all(|o| o.as_i32() != c.as_i32()));
            let row = format!("\n  {:<4} ", c.as_i32());
            assert!(
                EXIT_CODES_HELP.contains(&row),
                "{c:?} missing from the table"
            );
        }
    }

    #[test]
    fn not_running_is_3_as_the_table_says() {
        assert_eq!(Code::NotRunning.as_i32(), 3);
        assert!(EXIT_CODES_HELP.contains("`status`: no agent is running"));
        let e = failure(Code::NotRunning, "the agent is not running");
        assert_eq!(code_of(&e).as_i32(), 3);
    }
}
