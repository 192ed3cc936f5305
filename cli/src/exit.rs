//! Exit codes: one per kind of failure a script may want to tell apart, carried by a typed
//! error ([`Failure`]) through anyhow and mapped in `main`. The table below is printed by
//! `--help` and copied in the README.
//!
//! An error without a [`Failure`] in its chain is classified by its type, never by its
//! text: a storage error of the engine ([`StorageError`], also inside a [`SessionError`])
//! or an error marked [`OnStorage`] (the commands mark what they do to the destination)
//! is [`Code::Io`] when the disk failed (no space, EIO, permission, read-only); the data
//! not matching its torrent ([`SessionError::Mismatch`]) is [`Code::Unverifiable`];
//! anything else is [`Code::Other`], so a port that cannot be bound or an unreadable
//! .torrent or topology is not mistaken for a disk failure.

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
    /// read-only filesystem on the destination or the data being served; also `--lock`
    /// beyond RLIMIT_MEMLOCK.
    Io = 6,
    /// Stopped by SIGINT (Ctrl-C), as shells report 128 + 2.
    Interrupted = 130,
    /// Stopped by SIGTERM (128 + 15), or by SIGHUP (also 143: a hang-up asks to stop
    /// the same way, and one code is simpler to script against than 129).
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
  6    I/O error on the destination (or the data served): disk full (ENOSPC, EDQUOT),
       EIO, permission denied, read-only filesystem; --lock beyond RLIMIT_MEMLOCK
  130  interrupted by SIGINT (Ctrl-C) before done; a download resumes when run again;
       a second Ctrl-C exits at once, in any phase
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

/// Context marking an error as about the destination or the data's storage: a disk
/// error (see [`is_disk_error`]) below it exits [`Code::Io`]. Its text is the context line.
#[derive(Debug)]
pub struct OnStorage(pub String);

impl fmt::Display for OnStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `.storage_context(..)`: like anyhow's `with_context`, marking the error [`OnStorage`].
pub trait StorageContext<T> {
    fn storage_context(self, what: impl FnOnce() -> String) -> anyhow::Result<T>;
}

impl<T, E> StorageContext<T> for Result<T, E>
where
    E: Into<anyhow::Error>,
{
    fn storage_context(self, what: impl FnOnce() -> String) -> anyhow::Result<T> {
        self.map_err(|e| e.into().context(OnStorage(what())))
    }
}

/// The exit code for `e`: its [`Failure`]'s, else by the type of its causes (see above).
pub fn code_of(e: &anyhow::Error) -> Code {
    if let Some(f) = e.chain().find_map(|c| c.downcast_ref::<Failure>()) {
        return f.code;
    }
    let mut io = false;
    for cause in e.chain() {
        if let Some(s) = cause.downcast_ref::<SessionError>() {
            match s {
                SessionError::Storage(st) => io |= storage_is_disk(st),
                SessionError::Mismatch { .. } => return Code::Unverifiable,
                SessionError::Io { .. } | SessionError::Config(_) => {}
            }
        } else if let Some(st) = cause.downcast_ref::<StorageError>() {
            io |= storage_is_disk(st);
        }
    }
    let on_storage = e.downcast_ref::<OnStorage>().is_some()
        && e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(is_disk_error)
        });
    if io || on_storage {
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
        let e = Err::<(), _>(full)
            .storage_context(|| "writing x".into())
            .unwrap_err();
        assert_eq!(code_of(&e), Code::Io);
        let st = StorageError::NoSpace {
            path: "/x".into(),
            needed: 1,
        };
        let e = anyhow::Error::new(SessionError::Storage(st)).context("downloading");
        assert_eq!(code_of(&e), Code::Io);
        let gone = std::io::Error::from_raw_os_error(2);
        assert_eq!(code_of(&anyhow::Error::new(gone)), Code::Other);
    }

    #[test]
    fn only_errors_about_the_storage_are_io() {
        let denied = || std::io::Error::from_raw_os_error(13);
        // An unreadable .torrent or topology, a port that needs privileges: not the disk.
        let e = Err::<(), _>(denied())
            .context("reading torrent `t.torrent`")
            .unwrap_err();
        assert_eq!(code_of(&e), Code::Other);
        let bind = SessionError::Io {
            context: "listening on 0.0.0.0:80".into(),
            source: denied(),
        };
        assert_eq!(code_of(&anyhow::Error::new(bind)), Code::Other);
        // The same error where the destination is written: the disk refused us.
        let e = Err::<(), _>(denied())
            .storage_context(|| "creating destination directory `d`".into())
            .context("getting")
            .unwrap_err();
        assert_eq!(code_of(&e), Code::Io);
        assert_eq!(
            format!("{e:#}"),
            "getting: creating destination directory `d`: Permission denied (os error 13)"
        );
        // Marked, but not a disk error: still 1.
        let e = Err::<(), _>(std::io::Error::from_raw_os_error(2))
            .storage_context(|| "reading `d`".into())
            .unwrap_err();
        assert_eq!(code_of(&e), Code::Other);
        let mismatch = SessionError::Mismatch {
            path: "/d/x".into(),
            verified: 1,
            pieces: 2,
        };
        assert_eq!(
            code_of(&anyhow::Error::new(mismatch).context("seeding")),
            Code::Unverifiable
        );
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
