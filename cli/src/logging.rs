//! Logging to stderr: human text or JSON lines, colour only on a terminal.
//!
//! When stderr is the journal (systemd sets `JOURNAL_STREAM` to its device:inode; a
//! child of a service inherits the variable with another stderr, so it is compared) the
//! text format drops its timestamp, since journald stamps every line itself; JSON lines
//! keep theirs, as a log shipper reading them may not be journald.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing_subscriber::EnvFilter;

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human line per event.
    #[default]
    Text,
    /// One JSON object per event (timestamp, level, target, fields).
    Json,
}

/// Whether log lines may carry ANSI colour: only to a terminal, and never with `NO_COLOR`
/// set to anything non-empty (https://no-color.org).
pub fn colour_wanted(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Whether `journal_stream` (`JOURNAL_STREAM`: "DEVICE:INODE") names this stderr.
fn stderr_is_journal(journal_stream: Option<&std::ffi::OsStr>) -> bool {
    let Some((dev, ino)) = journal_stream
        .and_then(|v| v.to_str())
        .and_then(|v| v.split_once(':'))
    else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

fn filter(verbose: u8) -> EnvFilter {
    match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(v).unwrap_or_else(|e| {
            eprintln!("ringswarm: warning: ignoring RUST_LOG: {e}");
            EnvFilter::new("warn")
        }),
        _ => EnvFilter::new(match verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }),
    }
}

pub fn init_logging(verbose: u8, format: LogFormat) {
    let ansi = colour_wanted(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let under_journald = stderr_is_journal(std::env::var_os("JOURNAL_STREAM").as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(verbose))
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text if under_journald => builder.without_time().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some(OsStr::new(""))));
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        assert!(!colour_wanted(false, None));
    }

    #[test]
    fn only_a_journal_stream_naming_this_stderr_counts() {
        assert!(!stderr_is_journal(None));
        assert!(!stderr_is_journal(Some(OsStr::new("garbage"))));
        assert!(!stderr_is_journal(Some(OsStr::new("0:0"))));
    }
}
