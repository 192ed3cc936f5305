//! The daemons' TOML config files (`--config FILE`): every key is optional, and a flag
//! given on the command line wins over the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use ringswarm_engine::session::SessionConfig;
use serde::de::DeserializeOwned;

use crate::args::{parse_listen, parse_rate, parse_tracker_url};
use crate::common::{LimitArgs, PlaceArgs};

/// Reads a config file; no file gives the defaults (every key absent). Unknown keys are
/// an error, so a misspelt key is not silently ignored.
pub fn load<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config `{}`", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let msg = e.message().to_owned();
        let at = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        match at {
            Some(line) => anyhow::anyhow!("config `{}` line {line}: {msg}", path.display()),
            None => anyhow::anyhow!("config `{}`: {msg}", path.display()),
        }
    })
}

/// A value from a string in the config file, parsed like the flag.
pub fn parsed<T>(
    key: &str,
    value: Option<&str>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>> {
    value
        .map(|v| parse(v).map_err(|e| anyhow::anyhow!("config key `{key}`: {e}")))
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
            .map(|t| {
                parse_tracker_url(t).map_err(|e| anyhow::anyhow!("config key `trackers`: {e}"))
            })
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
    assert!(format!("{e:#}").contains("line 1"), "{e:#}");
}
