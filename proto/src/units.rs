//! Sizes, rates and durations as the command line (`--size`, `--max-upload-rate`, ...) and
//! a simulator scenario write them; one parser for both:
//!
//! - a **size** is digits and an optional unit `B`, `K`/`KB`/`KiB`, `M`/`MB`/`MiB`,
//!   `G`/`GB`/`GiB`, `T`/`TB`/`TiB` (case-insensitive, powers of 1024);
//! - a **rate** is bits per second in decimal units (`800Mbit`, `25Gbit`, `400Gbit`,
//!   `1Tbit`; `bps` is the same as `bit`; an optional `/s`), or bytes per second written as
//!   a size with an optional `/s` (`50MiB/s`, `50M`). It is returned in bytes per second,
//!   rounded down, and must be above zero;
//! - a **duration** is a number (an optional decimal fraction) and a unit `ns`, `us` (or
//!   `µs`), `ms` or `s`; `0` alone is zero. It is returned in nanoseconds, exactly.

/// Parses a byte count (see the module docs).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!(
            "`{s}` is not a size (a number with an optional unit, e.g. 4M, 16KiB, 100GiB, 1048576)"
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}`: number too large"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(format!(
                "`{s}`: unknown unit `{other}` (use K, M, G or T, optionally followed by iB or B)"
            ))
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{s}`: size too large"))
}

/// Parses a rate into bytes per second (see the module docs).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("/s")
        .or_else(|| t.strip_suffix("/S"))
        .unwrap_or(t);
    let lower = t.to_ascii_lowercase();
    let rate = if let Some(num) = lower
        .strip_suffix("bit")
        .or_else(|| lower.strip_suffix("bps"))
    {
        let num = num.trim_end();
        let (digits, scale) = match num.chars().last() {
            Some('k') => (&num[..num.len() - 1], 1_000u64),
            Some('m') => (&num[..num.len() - 1], 1_000_000),
            Some('g') => (&num[..num.len() - 1], 1_000_000_000),
            Some('t') => (&num[..num.len() - 1], 1_000_000_000_000),
            _ => (num, 1),
        };
        let n: u64 = digits
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a rate (e.g. 50M, 50MiB/s, 800Mbit, 25Gbit)"))?;
        n.checked_mul(scale)
            .map(|bits| bits / 8)
            .ok_or_else(|| format!("`{s}`: rate too large"))?
    } else {
        parse_size(t)
            .map_err(|_| format!("`{s}` is not a rate (e.g. 50M, 50MiB/s, 800Mbit, 25Gbit)"))?
    };
    if rate == 0 {
        return Err(format!("`{s}`: a rate must be above zero"));
    }
    Ok(rate)
}

/// Parses a duration into nanoseconds (see the module docs).
pub fn parse_duration_ns(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(0);
    }
    let bad = || format!("`{s}` is not a duration (e.g. 20us, 100us, 20ms, 1.5s)");
    let num_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (num, unit) = t.split_at(num_end);
    let scale: u64 = match unit.trim() {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        _ => return Err(bad()),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() || frac.contains('.') || (num.contains('.') && frac.is_empty()) {
        return Err(bad());
    }
    let too_large = || format!("`{s}`: duration too large");
    let mut ns = int
        .parse::<u64>()
        .map_err(|_| too_large())?
        .checked_mul(scale)
        .ok_or_else(too_large)?;
    // The fraction, digit by digit: each digit is worth a tenth of the one before.
    let mut place = scale;
    for d in frac.bytes() {
        place /= 10;
        if place == 0 {
            return Err(format!("`{s}`: finer than a nanosecond"));
        }
        ns = ns
            .checked_add(u64::from(d - b'0') * place)
            .ok_or_else(too_large)?;
    }
    Ok(ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100GiB"), Ok(100 << 30));
        assert_eq!(parse_size("16KiB"), Ok(16 << 10));
        assert_eq!(parse_size("4m"), Ok(4 << 20));
        assert_eq!(parse_size("1 TB"), Ok(1 << 40));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in ["", "GiB", "10 parsecs", "1.5G", "99999999999T", "-1"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_in_bits_are_decimal() {
        assert_eq!(parse_rate("25Gbit"), Ok(3_125_000_000));
        assert_eq!(parse_rate("400Gbit"), Ok(50_000_000_000));
        assert_eq!(parse_rate("100Gbit"), Ok(12_500_000_000));
        assert_eq!(parse_rate("800Mbit/s"), Ok(100_000_000));
        assert_eq!(parse_rate("1Tbit"), Ok(125_000_000_000));
        assert_eq!(parse_rate("10 Gbps"), Ok(1_250_000_000));
        assert_eq!(parse_rate("12bit"), Ok(1), "rounded down to whole bytes");
    }

    #[test]
    fn rates_in_bytes_are_sizes_per_second() {
        assert_eq!(parse_rate("50MiB/s"), Ok(50 << 20));
        assert_eq!(parse_rate("50M"), Ok(50 << 20));
        assert_eq!(parse_rate("1G/s"), Ok(1 << 30));
    }

    #[test]
    fn bad_rates() {
        for bad in [
            "0", "0Gbit", "7bit", "fast", "Gbit", "25Xbit", "1.5Gbit", "-1M",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ns("20us"), Ok(20_000));
        assert_eq!(parse_duration_ns("100us"), Ok(100_000));
        assert_eq!(parse_duration_ns("20ms"), Ok(20_000_000));
        assert_eq!(parse_duration_ns("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration_ns("0.25ms"), Ok(250_000));
        assert_eq!(parse_duration_ns("7µs"), Ok(7_000));
        assert_eq!(parse_duration_ns("3ns"), Ok(3));
        assert_eq!(parse_duration_ns("0"), Ok(0));
        assert_eq!(parse_duration_ns("0ms"), Ok(0));
        for bad in [
            "",
            "20",
            "ms",
            "1.ms",
            ".5ms",
            "1.2.3s",
            "20 minutes",
            "1.5ns",
            "-1ms",
            "99999999999s",
        ] {
            assert!(parse_duration_ns(bad).is_err(), "{bad}");
        }
    }
}
