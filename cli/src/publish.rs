//! `ringswarm publish`: on the build machine, add a blob to the signed release feed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use ringswarm_engine::fleet::publish::{publish, refresh, PublishSpec, TopologyChange};

use crate::args::{format_bytes, parse_duration, parse_piece_size, parse_tracker_url};
use crate::keygen::load_secret;
use crate::output::Summary;
use crate::Ctx;

/// Publish a blob as a new release of the fleet's feed.
///
/// Hashes PATH (a file or a directory) into a torrent that names the fleet's --tracker,
/// adds the release (name, version, info-hash, size, time, torrent) to ORIGIN-DIR's feed,
/// signs the feed with --key, and writes it atomically. The `ringswarm origin` serving
/// ORIGIN-DIR picks it up within a second: it serves the new feed and seeds the data in
/// place (keep PATH where it is while the release is live). Agents notice on their next poll.
///
/// Releases of NAME beyond the newest --keep leave the feed (agents keep theirs on disk
/// until their own --keep removes them).
///
/// The feed is valid for --valid-for: past that (plus a tenth of it, at most a minute, for
/// clocks that disagree) agents activate nothing from it and report "feed expired", so
/// publish at least that often. Its sequence is above the last one and at least the time
/// in ms, so it grows even when ORIGIN-DIR was lost. With nothing new to publish,
/// `publish --refresh` signs the same feed again with a new sequence and expiry.
///
/// --topology puts the fleet's topology (CIDR → dc/rack, the tracker's TOML) into the
/// signed feed: agents then need no topology file, and the origin serves it at
/// /topology.toml for the tracker. Given once, it stays in every later feed until another
/// --topology (with --refresh: without publishing a release) or --no-topology.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The blob: a file or a directory.
    #[arg(required_unless_present = "refresh")]
    pub path: Option<PathBuf>,

    /// The release name (a directory name on every host: letters, digits, - _ . +).
    #[arg(long, required_unless_present = "refresh")]
    pub name: Option<String>,

    /// The version [default: the UTC time, e.g. 20261124T231500Z].
    #[arg(long)]
    pub version: Option<String>,

    /// Publish nothing new: sign ORIGIN-DIR's feed again (new sequence, new expiry).
    #[arg(long, conflicts_with_all = ["path", "name", "version"])]
    pub refresh: bool,

    /// The secret key file from `ringswarm keygen`.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,

    /// The origin's directory (the feed, and where each release's data lies).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/ringswarm/origin")]
    pub origin_dir: PathBuf,

    /// The fleet's tracker, udp://HOST:PORT, written into the torrent; repeat for more.
    #[arg(long = "tracker", value_name = "URL", value_parser = parse_tracker_url)]
    pub trackers: Vec<String>,

    /// Piece size (power of two, 16K to 256M) or auto.
    #[arg(long, value_name = "SIZE", default_value = "auto", value_parser = parse_piece_size)]
    pub piece_size: u64,

    /// Releases of this name kept in the feed.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub keep: u64,

    /// The fleet's topology, a file or an http:// URL, signed into the feed
    /// [default: the previous feed's].
    #[arg(long, value_name = "FILE|URL")]
    pub topology: Option<PathBuf>,

    /// Drop the topology from the feed.
    #[arg(long, conflicts_with = "topology")]
    pub no_topology: bool,

    /// How long agents act on this feed, 1s to 365d (e.g. 12h, 7d).
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_valid_for)]
    pub valid_for: Duration,
}

/// A feed validity: from a second (tests) to a year (a replayed feed must end some time).
fn parse_valid_for(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if !(Duration::from_secs(1)..=Duration::from_secs(365 * 86_400)).contains(&d) {
        return Err(format!("`{s}`: the validity must be from 1s to 365d"));
    }
    Ok(d)
}

/// The UTC time as a version label: 20261124T231500Z.
fn time_version() -> String {
    let secs = ringswarm_engine::fleet::now_ms() / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// What the publish does to the feed's topology, with a line saying so.
fn topology_change(args: &Args) -> Result<(TopologyChange, Option<String>)> {
    if args.no_topology {
        return Ok((
            TopologyChange::Clear,
            Some("the feed carries no topology".into()),
        ));
    }
    let Some(source) = &args.topology else {
        return Ok((TopologyChange::Keep, None));
    };
    let (text, topology) = ringswarm_engine::tracker::read_topology(source)
        .with_context(|| format!("--topology `{}`", source.display()))?;
    let line = format!(
        "the feed carries the topology of {} ({} subnets)",
        source.display(),
        topology.subnet_count()
    );
    Ok((TopologyChange::Set(text), Some(line)))
}

pub fn run(ctx: Ctx, args: Args) -> Result<()> {
    let key = load_secret(&args.key)?;
    let (topology, topology_line) = topology_change(&args)?;
    let (Some(path), Some(name)) = (args.path.clone(), args.name.clone()) else {
        let feed = refresh(&args.origin_dir, &key, args.valid_for, &topology)
            .with_context(|| format!("refreshing the feed of `{}`", args.origin_dir.display()))?;
        if let Some(line) = topology_line {
            ctx.out.line(line);
        }
        ctx.out.line(format!(
            "refreshed the feed ({} releases) as feed sequence {}, valid for {}",
            feed.releases.len(),
            feed.sequence,
            humantime::format_duration(args.valid_for)
        ));
        let mut s = Summary::new("publish");
        s.ok = true;
        ctx.out.summary(&s);
        return Ok(());
    };
    let version = args.version.clone().unwrap_or_else(time_version);
    if args.trackers.is_empty() {
        eprintln!("ringswarm: warning: no --tracker: agents can only find peers they are told of");
    }
    let published = publish(&PublishSpec {
        data: path.clone(),
        name,
        version,
        key,
        origin_dir: args.origin_dir.clone(),
        trackers: args.trackers.clone(),
        piece_size: args.piece_size,
        keep: usize::try_from(args.keep).unwrap_or(usize::MAX),
        valid_for: args.valid_for,
        topology,
    })
    .with_context(|| format!("publishing `{}`", path.display()))?;
    if let Some(line) = topology_line {
        ctx.out.line(line);
    }
    let r = &published.release;
    let hash = ringswarm_engine::hex(&r.info_hash);
    ctx.out.line(format!(
        "published {} ({}, {hash}) as feed sequence {}, valid for {}",
        r.label(),
        format_bytes(r.size),
        published.sequence,
        humantime::format_duration(args.valid_for)
    ));
    for old in &published.retired {
        ctx.out.line(format!("{old} left the feed"));
    }
    if !published.origin_running {
        eprintln!(
            "ringswarm: warning: no `ringswarm origin` serves {}: the release is in the feed \
             but nobody seeds it yet",
            args.origin_dir.display()
        );
    }
    let mut s = Summary::new("publish");
    s.ok = true;
    s.info_hash = Some(hash);
    s.name = Some(r.name.clone());
    s.version = Some(r.version.clone());
    s.bytes = Some(r.size);
    ctx.out.summary(&s);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn time_version_is_a_valid_label() {
        let v = super::time_version();
        assert_eq!(v.len(), 16, "{v}");
        assert!(v.starts_with("20"), "{v}");
        ringswarm_engine::feed::check_label(&v, "version").unwrap();
    }

    #[test]
    fn the_validity_is_bounded() {
        assert_eq!(
            super::parse_valid_for("7d").unwrap(),
            std::time::Duration::from_secs(7 * 86_400)
        );
        assert!(super::parse_valid_for("0").is_err());
        assert!(super::parse_valid_for("500ms").is_err());
        assert!(super::parse_valid_for("400d").is_err());
    }
}
