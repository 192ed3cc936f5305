//! The daemons' TOML config files (`--config FILE`): every key is optional, and a flag
//! given on the command line wins over the file.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use ringswarm_engine::session::SessionConfig;
use serde::de::DeserializeOwned;

use crate::args::{parse_listen, parse_rate, parse_tracker_url};
use crate::common::{LimitArgs, PlaceArgs};

/// Reads a config file; no file gives the defaults (every key absent). Unknown keys are
/// an error, so a misspelt key is not silently ignored. Errors name the file, the line and
/// the column of the offending key or value.
///
/// Values kept as strings in the file structs are parsed later, like their flags
/// (`parsed`); so that their errors also name a line and column, `load` remembers where
/// each top-level key's value is, for this thread (a daemon loads one file, on its main
/// thread, and resolves its settings there).
pub fn load<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T> {
    LOADED.with(|l| l.borrow_mut().take());
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config `{}`", path.display()))?;
    let values = toml::from_str(&text).map_err(|e| {
        let msg = e.message().trim_end().to_owned();
        match e.span() {
            Some(span) => {
                let (line, col) = line_col(&text, span.start);
                anyhow::anyhow!(
                    "config `{}` line {line} column {col}: {msg}",
                    path.display()
                )
            }
            None => anyhow::anyhow!("config `{}`: {msg}", path.display()),
        }
    })?;
    let places = toml::from_str::<BTreeMap<String, toml::Spanned<toml::Value>>>(&text)
        .map(|keys| {
            keys.into_iter()
                .map(|(key, value)| (key, line_col(&text, value.span().start)))
                .collect()
        })
        .unwrap_or_default();
    LOADED.with(|l| {
        *l.borrow_mut() = Some(Loaded {
            path: path.to_owned(),
            places,
        })
    });
    Ok(values)
}

/// Where the keys of the config file last loaded on this thread are.
struct Loaded {
    path: PathBuf,
    /// Each top-level key's value: line and column, from 1.
    places: BTreeMap<String, (usize, usize)>,
}

thread_local! {
    static LOADED: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

/// Line and column (from 1; the column counts characters) of a byte offset into `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// An error about the value of config key `key`, naming the file, line and column when
/// the file was loaded by `load`.
pub fn key_error(key: &str, message: impl std::fmt::Display) -> anyhow::Error {
    LOADED.with(|l| match &*l.borrow() {
        Some(loaded) => match loaded.places.get(key) {
            Some((line, col)) => anyhow::anyhow!(
                "config `{}` line {line} column {col}: key `{key}`: {message}",
                loaded.path.display()
            ),
            None => anyhow::anyhow!("config `{}`: key `{key}`: {message}", loaded.path.display()),
        },
        None => anyhow::anyhow!("config key `{key}`: {message}"),
    })
}

/// A value from a string in the config file, parsed like the flag.
pub fn parsed<T>(
    key: &str,
    value: Option<&str>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>> {
    value
        .map(|v| parse(v).map_err(|e| key_error(key, e)))
        .transpose()
}

/// The peer settings the origin and the agent share, on the command line.
#[derive(Debug, clap::Args)]
pub struct PeerArgs {
    /// Where peers reach this host [default: 0.0.0.0:6881].
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,

    /// A tracker besides each torrent's own; repeatable.
    #[arg(long = "tracker", value_name = "URL", value_parser = parse_tracker_url)]
    pub trackers: Vec<String>,

    #[command(flatten)]
    pub place: PlaceArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    /// Worker threads, one per core [default: all online CPUs].
    #[arg(long, value_name = "N")]
    pub cores: Option<usize>,
}

/// The same settings as config-file keys (each daemon's file struct hands them over).
#[derive(Debug, Default)]
pub struct PeerFile {
    pub listen: Option<String>,
    pub trackers: Vec<String>,
    pub topology: Option<PathBuf>,
    pub dc: Option<String>,
    pub rack: Option<String>,
    pub cores: Option<usize>,
    pub max_upload_rate: Option<String>,
    pub max_download_rate: Option<String>,
}

/// The peer settings resolved: each flag, else its config key, else the default.
pub struct PeerSettings {
    pub session: SessionConfig,
    pub trackers: Vec<String>,
    pub place: PlaceArgs,
}

pub fn peer_settings(args: &PeerArgs, file: PeerFile) -> Result<PeerSettings> {
    let listen = match args.listen {
        Some(a) => a,
        None => parsed("listen", file.listen.as_deref(), parse_listen)?
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 6881))),
    };
    let trackers = if args.trackers.is_empty() {
        file.trackers
            .iter()
            .map(|t| parse_tracker_url(t).map_err(|e| key_error("trackers", e)))
            .collect::<Result<Vec<_>>>()?
    } else {
        args.trackers.clone()
    };
    let mut place = args.place.clone();
    place.topology = place.topology.or(file.topology);
    place.dc = place.dc.or(file.dc);
    place.rack = place.rack.or(file.rack);
    let upload = match args.limits.max_upload_rate {
        Some(r) => Some(r),
        None => parsed(
            "max_upload_rate",
            file.max_upload_rate.as_deref(),
            parse_rate,
        )?,
    };
    let download = match args.limits.max_download_rate {
        Some(r) => Some(r),
        None => parsed(
            "max_download_rate",
            file.max_download_rate.as_deref(),
            parse_rate,
        )?,
    };
    let session = SessionConfig {
        cores: args.cores.or(file.cores).unwrap_or(0),
        listen: Some(listen),
        locator: Arc::new(place.locator()?),
        max_upload_rate: upload,
        max_download_rate: download,
        max_peers: args.limits.max_peers,
        max_peers_per_ip: args.limits.max_peers_per_ip,
        ban_duration: args.limits.ban_duration,
        upload_slots: args.limits.upload_slots as usize,
        ..SessionConfig::default()
    };
    Ok(PeerSettings {
        session,
        trackers,
        place,
    })
}

/// Checks a daemon's example config in `scripts/systemd/` against its file struct, and
/// that an unknown key is refused with its line.
#[cfg(test)]
pub fn check_example<T: DeserializeOwned + Default + std::fmt::Debug>(name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/systemd")
        .join(name);
    let _: T = load(Some(&path)).unwrap();
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "no_such_key = 1\n").unwrap();
    let e = load::<T>(Some(bad.path())).unwrap_err();
    assert!(format!("{e:#}").contains("line 1 column 1"), "{e:#}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        cores: Option<usize>,
        max_upload_rate: Option<String>,
    }

    fn load_text(text: &str) -> (tempfile::NamedTempFile, Result<Sample>) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        let loaded = load::<Sample>(Some(file.path()));
        (file, loaded)
    }

    #[test]
    fn lines_and_columns_count_from_one() {
        assert_eq!(line_col("a = 1\nbb = 2\n", 0), (1, 1));
        assert_eq!(line_col("a = 1\nbb = 2\n", 6), (2, 1));
        assert_eq!(line_col("a = 1\nbb = 2\n", 11), (2, 6));
        assert_eq!(line_col("é = 1", 2), (1, 2), "columns count characters");
        assert_eq!(line_col("ab", 99), (1, 3));
    }

    #[test]
    fn an_unknown_key_is_named_at_its_line_and_column() {
        let (_f, e) = load_text("# a comment\ncores = 2\n  speling = 3\n");
        let e = format!("{:#}", e.unwrap_err());
        assert!(e.contains("line 3 column 3"), "{e}");
        assert!(e.contains("speling"), "{e}");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_at_the_value() {
        let (_f, e) = load_text("\n\ncores = \"two\"\n");
        let e = format!("{:#}", e.unwrap_err());
        assert!(e.contains("line 3 column 9"), "{e}");
    }

    #[test]
    fn a_value_parsed_later_is_named_at_its_line_and_column() {
        let (_f, loaded) = load_text("cores = 1\n\nmax_upload_rate   = \"fast\"\n");
        let sample = loaded.unwrap();
        assert_eq!(sample.cores, Some(1));
        let e = parsed(
            "max_upload_rate",
            sample.max_upload_rate.as_deref(),
            crate::args::parse_rate,
        )
        .unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("line 3 column 21: key `max_upload_rate`"), "{e}");
        assert!(e.contains("`fast` is not a"), "{e}");
    }
}
