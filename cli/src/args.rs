//! Parsing of command-line values: sizes (`4M`, `4MiB`, `16K`, `1048576`), durations
//! (`30s`, `1h 30m`, or bare seconds), listen addresses, and peer addresses.
//!
//! Size units are powers of two whatever their spelling: `K`, `KB`, `KiB` all mean 1024.
//! Data sizes in this tool are always binary (piece sizes must be powers of two), and
//! accepting `MB` as 10^6 would turn `--piece-size 4MB` into an error for no gain.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Smallest piece size a torrent may have (one 16 KiB block).
pub const MIN_PIECE_SIZE: u64 = 16 << 10;
/// Largest piece size we create (piece buffers are allocated whole).
pub const MAX_PIECE_SIZE: u64 = 256 << 20;

/// Checks a `--tracker` URL: ringswarm speaks the UDP tracker protocol (BEP 15) only.
pub fn parse_tracker_url(s: &str) -> Result<String, String> {
    ringswarm_engine::tracker::proto::parse_udp_url(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("{e} (only udp:// trackers are supported)"))
}

/// Parses a rate: a size per second in bytes (`50M`, `50MiB/s`: binary units, as sizes)
/// or in bits with decimal units (`800Mbit`, `10Gbit/s`, `100kbit`), as links are quoted.
/// One parser with the simulator's scenarios: [`ringswarm_engine::units`].
pub fn parse_rate(s: &str) -> Result<u64, String> {
    ringswarm_engine::units::parse_rate(s)
}

/// Checks a `--dc` / `--rack` name: 1 to 64 bytes, no control characters.
pub fn parse_place_name(s: &str) -> Result<String, String> {
    let max = ringswarm_engine::tracker::topology::MAX_NAME_LEN;
    if s.is_empty() || s.len() > max || s.chars().any(char::is_control) {
        return Err(format!(
            "`{s}` is not a place name (1 to {max} bytes, no control characters)"
        ));
    }
    Ok(s.to_owned())
}

/// Parses a byte count: digits, then an optional unit `B`, `K`/`KB`/`KiB`, `M`/`MB`/`MiB`,
/// `G`/`GB`/`GiB`, `T`/`TB`/`TiB` (case-insensitive, powers of 1024). Spaces between the
/// number and the unit are allowed. One parser with the simulator's scenarios.
pub fn parse_size(s: &str) -> Result<u64, String> {
    ringswarm_engine::units::parse_size(s)
}

/// A size that must not be zero (`demo --size`).
pub fn parse_nonzero_size(s: &str) -> Result<u64, String> {
    match parse_size(s)? {
        0 => Err(format!("`{s}`: size must be greater than zero")),
        n => Ok(n),
    }
}

/// A piece size: a power of two between 16 KiB and 256 MiB, or `auto` (0: chosen from the
/// total size, `create::auto_piece_size`).
pub fn parse_piece_size(s: &str) -> Result<u64, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(ringswarm_engine::create::AUTO_PIECE_SIZE);
    }
    let n = parse_size(s).map_err(|e| format!("{e}, or auto"))?;
    if !n.is_power_of_two() {
        return Err(format!("`{s}` ({n} bytes) is not a power of two"));
    }
    if !(MIN_PIECE_SIZE..=MAX_PIECE_SIZE).contains(&n) {
        return Err(format!(
            "`{s}` is out of range: piece size must be between 16K and 256M"
        ));
    }
    Ok(n)
}

/// A duration: humantime syntax (`30s`, `5m`, `1h 30m`, `250ms`), or a bare number of
/// seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = t.parse().map_err(|_| format!("`{s}`: number too large"))?;
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("`{s}` is not a duration ({e}); examples: 30s, 5m, 1h 30m"))
}

/// A listen address `IP:PORT` (port 0 picks a free port).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!("`{s}` is not a listen address (expected IP:PORT, e.g. 0.0.0.0:6881 or [::]:6881)")
    })
}

/// A metrics address: IP:PORT, or a PORT alone, which binds to 127.0.0.1 (metrics stay
/// on the host unless an address says otherwise).
pub fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    match s.trim().parse::<u16>() {
        Ok(port) => Ok(SocketAddr::from(([127, 0, 0, 1], port))),
        Err(_) => parse_listen(s).map_err(|_| {
            format!("`{s}` is not a metrics address (expected PORT for 127.0.0.1:PORT, or IP:PORT)")
        }),
    }
}

/// Resolves a peer `HOST:PORT` (or `[v6]:PORT`) to every address of the name (IPv4 and
/// IPv6: a peer listening on only one of them is still found). Done at run time, not at
/// argument parsing, so a name that does not resolve is reported like any error.
pub fn resolve_peer(peer: &str) -> Result<Vec<SocketAddr>> {
    if let Ok(addr) = peer.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    if !peer.contains(':') {
        bail!("peer `{peer}`: expected HOST:PORT");
    }
    let mut all: Vec<SocketAddr> = Vec::new();
    for a in peer
        .to_socket_addrs()
        .with_context(|| format!("resolving peer `{peer}`"))?
    {
        if !all.contains(&a) {
            all.push(a);
        }
    }
    if all.is_empty() {
        bail!("resolving peer `{peer}`: no address found");
    }
    Ok(all)
}

/// Resolves every peer (every address of each); the first failure is an error naming the
/// peer.
pub fn resolve_peers<S: AsRef<str>>(peers: &[S]) -> Result<Vec<SocketAddr>> {
    let mut out = Vec::with_capacity(peers.len());
    for p in peers {
        for a in resolve_peer(p.as_ref())? {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    Ok(out)
}

/// Formats a byte count with binary units: `0 B`, `1.50 KiB`, `256.00 MiB` (bytesize's
/// IEC form at two decimals: the same text the progress lines always had, which scripts
/// and tests parse).
pub fn format_bytes(n: u64) -> String {
    format!("{:.2}", bytesize::ByteSize(n).display().iec())
}

/// Formats a rate in bytes per second with binary units.
pub fn format_rate(bytes_per_sec: f64) -> String {
    if !bytes_per_sec.is_finite() || bytes_per_sec <= 0.0 {
        return "0 B/s".into();
    }
    format!("{}/s", format_bytes(bytes_per_sec.round() as u64))
}

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z): humantime's formatter fails
/// past it, and `SystemTime` arithmetic may overflow long before `u64::MAX` ms.
const LAST_RFC3339_SECOND: u64 = 253_402_300_799;

/// A time in ms since the Unix epoch as RFC 3339 (`2026-12-06T16:31:13Z`); a time past
/// year 9999 (from a hand-made feed or torrent) as the raw number, so it is shown, not a
/// panic.
pub fn format_time(ms: u64) -> String {
    if ms / 1000 > LAST_RFC3339_SECOND {
        return format!("{ms} ms since 1970 (beyond year 9999)");
    }
    let at = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// A time in seconds since the Unix epoch (a .torrent's `creation date`), as
/// [`format_time`]; a negative one as the raw number.
pub fn format_time_secs(secs: i64) -> String {
    match u64::try_from(secs) {
        Ok(s) if s <= LAST_RFC3339_SECOND => format_time(s * 1000),
        _ => format!("{secs} s since 1970 (out of range)"),
    }
}

/// Bytes per second, 0 when no time has passed.
pub fn rate(bytes: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        bytes as f64 / secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("50M"), Ok(50 << 20));
        assert_eq!(parse_rate("50MiB/s"), Ok(50 << 20));
        assert_eq!(parse_rate("800Mbit"), Ok(100_000_000));
        assert_eq!(parse_rate("10Gbit/s"), Ok(1_250_000_000));
        assert_eq!(parse_rate("100kbit"), Ok(12_500));
        assert_eq!(parse_rate("8bit"), Ok(1));
        for bad in [
            "0",
            "fast",
            "Mbit",
            "-1M",
            "0Mbit",
            "99999999999999999999Gbit",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("4mib"), Ok(4 << 20));
        assert_eq!(parse_size("4MB"), Ok(4 << 20));
        assert_eq!(parse_size("16K"), Ok(16 << 10));
        assert_eq!(parse_size("16k"), Ok(16 << 10));
        assert_eq!(parse_size("16 KiB"), Ok(16 << 10));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size(" 8M "), Ok(8 << 20));
    }

    #[test]
    fn bad_sizes() {
        for s in [
            "", "M", "-1", "4X", "4MiBs", "1.5M", "4 M B", "0x10", "four",
        ] {
            assert!(parse_size(s).is_err(), "{s:?} should be rejected");
        }
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("17179869184T").is_err(), "overflow");
        assert!(parse_nonzero_size("0").is_err());
        assert_eq!(parse_nonzero_size("1"), Ok(1));
    }

    #[test]
    fn piece_sizes() {
        assert_eq!(parse_piece_size("16K"), Ok(16 << 10));
        assert_eq!(parse_piece_size("4M"), Ok(4 << 20));
        assert_eq!(parse_piece_size("4194304"), Ok(4 << 20));
        assert_eq!(parse_piece_size("256M"), Ok(256 << 20));
        assert!(parse_piece_size("3M").is_err(), "not a power of two");
        assert!(parse_piece_size("1000000").is_err(), "not a power of two");
        assert!(parse_piece_size("8K").is_err(), "too small");
        assert!(parse_piece_size("512M").is_err(), "too large");
        assert!(parse_piece_size("0").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for s in ["", "s", "forever", "-5s", "1x"] {
            assert!(parse_duration(s).is_err(), "{s:?} should be rejected");
        }
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen("0.0.0.0:6881"),
            Ok("0.0.0.0:6881".parse().unwrap())
        );
        assert_eq!(parse_listen("[::1]:0"), Ok("[::1]:0".parse().unwrap()));
        assert!(parse_listen("localhost:6881").is_err());
        assert!(parse_listen("6881").is_err());
        assert!(parse_listen("1.2.3.4:70000").is_err());
    }

    #[test]
    fn peers() {
        assert_eq!(
            resolve_peer("127.0.0.1:6881").unwrap(),
            vec!["127.0.0.1:6881".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            resolve_peer("[::1]:7").unwrap(),
            vec!["[::1]:7".parse::<SocketAddr>().unwrap()]
        );
        let local = resolve_peer("localhost:6881").unwrap();
        assert!(local
            .iter()
            .all(|a| a.port() == 6881 && a.ip().is_loopback()));
        assert!(resolve_peer("localhost").is_err());
        assert!(resolve_peer("127.0.0.1:notaport").is_err());
        let all = resolve_peers(&["127.0.0.1:1", "127.0.0.1:1", "127.0.0.1:2"]).unwrap();
        assert_eq!(all.len(), 2, "duplicates dropped");
    }

    #[test]
    fn formatting() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1536), "1.50 KiB");
        assert_eq!(format_bytes(256 << 20), "256.00 MiB");
        assert_eq!(format_rate(0.0), "0 B/s");
        assert_eq!(format_rate(f64::NAN), "0 B/s");
        assert_eq!(format_rate(2.0 * 1048576.0), "2.00 MiB/s");
        assert_eq!(rate(10, Duration::ZERO), 0.0);
        assert_eq!(rate(10, Duration::from_secs(2)), 5.0);
    }

    #[test]
    fn times_out_of_rfc3339_range_are_numbers() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_500), "1970-01-01T00:00:01Z");
        assert_eq!(
            format_time(LAST_RFC3339_SECOND * 1000 + 999),
            "9999-12-31T23:59:59Z"
        );
        let past = (LAST_RFC3339_SECOND + 1) * 1000;
        assert!(format_time(past).starts_with(&past.to_string()));
        assert!(format_time(u64::MAX).starts_with(&u64::MAX.to_string()));
        assert_eq!(format_time_secs(86_400), "1970-01-02T00:00:00Z");
        assert!(format_time_secs(1_000_000_000_000).starts_with("1000000000000 s"));
        assert!(format_time_secs(-1).starts_with("-1 s"));
        assert!(format_time_secs(i64::MAX).starts_with(&i64::MAX.to_string()));
    }

    #[test]
    fn a_metrics_port_alone_is_on_localhost() {
        assert_eq!(
            parse_metrics_addr("9470"),
            Ok("127.0.0.1:9470".parse().unwrap())
        );
        assert_eq!(
            parse_metrics_addr("0.0.0.0:9470"),
            Ok("0.0.0.0:9470".parse().unwrap())
        );
        assert!(parse_metrics_addr("host:9470")
            .unwrap_err()
            .contains("not a metrics address"));
    }
}
