//! Magnet URIs (BEP 9): `xt=urn:btih:` in hex or base32, `dn`, `tr`, `x.pe`. Pure.
//!
//! Parameter values are percent-decoded (`+` means a space in `dn` only: in tracker URLs it
//! is a literal `+`). Numbered forms (`xt.1`, `tr.2`) are read like the plain ones; other
//! unknown parameters and non-BitTorrent `xt` (e.g. `urn:btmh:`) are ignored. Empty `tr`
//! and `x.pe` values are skipped.

use data_encoding::{BASE32_NOPAD, HEXLOWER_PERMISSIVE};
use percent_encoding::{percent_decode_str, utf8_percent_encode};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MagnetError {
    #[error("magnet: not a magnet URI (must start with `magnet:?`)")]
    NotMagnet,
    #[error("magnet: no `xt=urn:btih:` parameter")]
    MissingInfoHash,
    #[error("magnet: invalid `{param}`: {reason}")]
    Invalid { param: String, reason: String },
}

fn invalid(param: &str, reason: impl Into<String>) -> MagnetError {
    MagnetError::Invalid {
        param: param.to_owned(),
        reason: reason.into(),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Magnet {
    pub info_hash: [u8; 20],
    /// `dn`
    pub display_name: Option<String>,
    /// `tr`, in order.
    pub trackers: Vec<String>,
    /// `x.pe`: `host:port` or `[v6]:port`, validated syntactically, not resolved.
    pub peers: Vec<String>,
}

impl Magnet {
    pub fn parse(uri: &str) -> Result<Magnet, MagnetError> {
        let query = uri
            .get(..8)
            .filter(|scheme| scheme.eq_ignore_ascii_case("magnet:?"))
            .and_then(|_| uri.get(8..))
            .ok_or(MagnetError::NotMagnet)?;
        let mut info_hash = None;
        let mut display_name = None;
        let mut trackers = Vec::new();
        let mut peers = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let key = base_key(key);
            match key {
                "xt" => {
                    let value = percent_decode(raw, false, key)?;
                    let Some(hash) = strip_prefix_ignore_case(&value, "urn:btih:") else {
                        continue;
                    };
                    let hash = parse_info_hash(hash)?;
                    match info_hash {
                        Some(h) if h != hash => {
                            return Err(invalid("xt", "two different info-hashes"));
                        }
                        _ => info_hash = Some(hash),
                    }
                }
                "dn" => {
                    let value = percent_decode(raw, true, key)?;
                    display_name.get_or_insert(value);
                }
                "tr" => {
                    let value = percent_decode(raw, false, key)?;
                    if !value.is_empty() {
                        trackers.push(value);
                    }
                }
                "x.pe" => {
                    let value = percent_decode(raw, false, key)?;
                    if !value.is_empty() {
                        check_peer(&value)
                            .map_err(|reason| invalid("x.pe", format!("`{value}`: {reason}")))?;
                        peers.push(value);
                    }
                }
                _ => {}
            }
        }
        Ok(Magnet {
            info_hash: info_hash.ok_or(MagnetError::MissingInfoHash)?,
            display_name,
            trackers,
            peers,
        })
    }

    /// The URI form (hex info-hash, percent-encoded values).
    pub fn to_uri(&self) -> String {
        let mut uri = format!("magnet:?xt=urn:btih:{}", crate::hex(&self.info_hash));
        if let Some(dn) = &self.display_name {
            uri.push_str("&dn=");
            percent_encode(dn, &mut uri);
        }
        for tr in &self.trackers {
            uri.push_str("&tr=");
            percent_encode(tr, &mut uri);
        }
        for pe in &self.peers {
            uri.push_str("&x.pe=");
            percent_encode(pe, &mut uri);
        }
        uri
    }
}

/// `xt.1` → `xt`, `tr.2` → `tr`; other keys unchanged (`x.pe` keeps its dot).
fn base_key(key: &str) -> &str {
    match key.split_once('.') {
        Some((base @ ("xt" | "tr" | "dn"), n))
            if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) =>
        {
            base
        }
        _ => key,
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

fn parse_info_hash(s: &str) -> Result<[u8; 20], MagnetError> {
    let decoded = match s.len() {
        40 => hex_decode(s),
        32 => base32_decode(s),
        n => {
            return Err(invalid(
                "xt",
                format!("info-hash must be 40 hex or 32 base32 characters, got {n}"),
            ))
        }
    };
    decoded.ok_or_else(|| invalid("xt", format!("`{s}` is not a valid info-hash")))
}

fn hex_decode(s: &str) -> Option<[u8; 20]> {
    HEXLOWER_PERMISSIVE
        .decode(s.as_bytes())
        .ok()?
        .try_into()
        .ok()
}

/// RFC 4648 base32, no padding (32 characters carry exactly 160 bits), either case.
fn base32_decode(s: &str) -> Option<[u8; 20]> {
    BASE32_NOPAD
        .decode(s.to_ascii_uppercase().as_bytes())
        .ok()?
        .try_into()
        .ok()
}

/// Strict, unlike URL parsers in general: a `%` without two hex digits is refused rather
/// than kept, as a magnet with one is mangled (the check is ours, the decoding is the
/// percent-encoding crate's).
fn percent_decode(s: &str, plus_is_space: bool, param: &str) -> Result<String, MagnetError> {
    let bytes = s.as_bytes();
    for (i, _) in bytes.iter().enumerate().filter(|(_, &c)| c == b'%') {
        let hex = |k: usize| bytes.get(i + k).is_some_and(u8::is_ascii_hexdigit);
        if !(hex(1) && hex(2)) {
            return Err(invalid(
                param,
                format!("bad percent-escape at character {i}"),
            ));
        }
    }
    let spaced;
    let s = if plus_is_space {
        spaced = s.replace('+', " ");
        spaced.as_str()
    } else {
        s
    };
    percent_decode_str(s)
        .decode_utf8()
        .map(|v| v.into_owned())
        .map_err(|_| invalid(param, "not UTF-8 after percent-decoding"))
}

/// Everything but RFC 3986 unreserved characters is escaped.
fn percent_encode(s: &str, out: &mut String) {
    out.extend(utf8_percent_encode(s, crate::tracker::UNRESERVED));
}

/// `host:port` or `[v6]:port`, port 1..=65535.
fn check_peer(peer: &str) -> Result<(), &'static str> {
    let (host, port) = peer.rsplit_once(':').ok_or("missing `:port`")?;
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err("port is not a number");
    }
    match port.parse::<u32>() {
        Ok(1..=65535) => {}
        _ => return Err("port must be 1..65535"),
    }
    if let Some(inner) = host.strip_prefix('[') {
        let v6 = inner.strip_suffix(']').ok_or("`[` without `]`")?;
        v6.parse::<std::net::Ipv6Addr>()
            .map_err(|_| "not an IPv6 address inside `[]`")?;
        return Ok(());
    }
    if host.is_empty() {
        return Err("empty host");
    }
    if host.contains(':') {
        return Err("IPv6 addresses must be in brackets: `[addr]:port`");
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err("host has characters not allowed in a name or address");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEX: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";

    fn hash() -> [u8; 20] {
        hex_decode(HEX).unwrap()
    }

    fn param_of(e: MagnetError) -> String {
        match e {
            MagnetError::Invalid { param, .. } => param,
            other => panic!("not Invalid: {other:?}"),
        }
    }

    #[test]
    fn hex_and_base32() {
        let m = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}")).unwrap();
        assert_eq!(m.info_hash, hash());
        let upper = Magnet::parse(&format!("MAGNET:?xt=URN:BTIH:{}", HEX.to_uppercase())).unwrap();
        assert_eq!(upper.info_hash, hash());
        // RFC 4648 base32 of the same 20 bytes, both cases.
        let b32 = "YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK";
        assert_eq!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{b32}"))
                .unwrap()
                .info_hash,
            hash()
        );
        assert_eq!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{}", b32.to_lowercase()))
                .unwrap()
                .info_hash,
            hash()
        );
    }

    #[test]
    fn base32_matches_rfc4648_vectors() {
        // "foobar" padded to 20 bytes with zeros, encoded by hand from RFC 4648's table.
        let mut want = [0u8; 20];
        want[..6].copy_from_slice(b"foobar");
        assert_eq!(
            base32_decode("MZXW6YTBOIAAAAAAAAAAAAAAAAAAAAAA"),
            Some(want)
        );
        assert_eq!(base32_decode("MZXW6YTBOIAAAAAAAAAAAAAAAAAAAAA1"), None);
        assert_eq!(base32_decode("MZXW6YTBOIAAAAAAAAAAAAAAAAAAAAA"), None);
    }

    #[test]
    fn bad_info_hashes() {
        for bad in [
            "abc",
            &HEX[..39],
            "g12fe1c06bba254a9dc9f519b335aa7c1367a88a",
            "YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKE1",
            "YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKE=",
        ] {
            let e = Magnet::parse(&format!("magnet:?xt=urn:btih:{bad}")).unwrap_err();
            assert_eq!(param_of(e), "xt", "{bad}");
        }
        let e = Magnet::parse(&format!(
            "magnet:?xt=urn:btih:{HEX}&xt.1=urn:btih:{}",
            "0".repeat(40)
        ))
        .unwrap_err();
        assert_eq!(param_of(e), "xt");
        assert_eq!(
            Magnet::parse("magnet:?dn=x"),
            Err(MagnetError::MissingInfoHash)
        );
        assert_eq!(
            Magnet::parse("magnet:?xt=urn:btmh:1220abcd"),
            Err(MagnetError::MissingInfoHash)
        );
        assert_eq!(Magnet::parse("http://x"), Err(MagnetError::NotMagnet));
        assert_eq!(Magnet::parse("magnet:"), Err(MagnetError::NotMagnet));
        assert_eq!(Magnet::parse("é"), Err(MagnetError::NotMagnet));
    }

    #[test]
    fn all_params() {
        let uri = format!(
            "magnet:?xt=urn:btih:{HEX}&dn=my+blob%20v2%2B&tr=http%3A%2F%2Ft1%2Fa%3Fx%3D1+2\
             &tr=udp://t2:80&x.pe=10.0.0.1:6881&x.pe=%5B%3A%3A1%5D%3A7000&x.pe=host-a.example:1\
             &foo=bar&&novalue&tr.1=http://t3/"
        );
        let m = Magnet::parse(&uri).unwrap();
        assert_eq!(m.display_name.as_deref(), Some("my blob v2+"));
        assert_eq!(
            m.trackers,
            ["http://t1/a?x=1+2", "udp://t2:80", "http://t3/"]
        );
        assert_eq!(m.peers, ["10.0.0.1:6881", "[::1]:7000", "host-a.example:1"]);
        assert_eq!(Magnet::parse(&m.to_uri()).unwrap(), m);
        assert!(m
            .to_uri()
            .starts_with(&format!("magnet:?xt=urn:btih:{HEX}&dn=my%20blob")));
    }

    #[test]
    fn bad_values_name_the_param() {
        let base = format!("magnet:?xt=urn:btih:{HEX}");
        for (extra, param) in [
            ("dn=%zz", "dn"),
            ("dn=%4", "dn"),
            ("dn=%ff", "dn"),
            ("tr=%", "tr"),
            ("x.pe=host", "x.pe"),
            ("x.pe=host:0", "x.pe"),
            ("x.pe=host:65536", "x.pe"),
            ("x.pe=host:-1", "x.pe"),
            ("x.pe=host:", "x.pe"),
            ("x.pe=:80", "x.pe"),
            ("x.pe=::1:80", "x.pe"),
            ("x.pe=[::1:80", "x.pe"),
            ("x.pe=[zz]:80", "x.pe"),
            ("x.pe=a/b:80", "x.pe"),
            ("x.pe=h:999999", "x.pe"),
        ] {
            let e = Magnet::parse(&format!("{base}&{extra}")).unwrap_err();
            assert_eq!(param_of(e), param, "{extra}");
        }
    }

    fn arb_peer() -> impl Strategy<Value = String> {
        prop_oneof![
            ("[a-z0-9.-]{1,12}", 1u16..).prop_map(|(h, p)| format!("{h}:{p}")),
            (any::<[u16; 8]>(), 1u16..)
                .prop_map(|(a, p)| { format!("[{}]:{p}", std::net::Ipv6Addr::from(a)) }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(
            info_hash in any::<[u8; 20]>(),
            display_name in proptest::option::of(".{0,20}"),
            trackers in proptest::collection::vec(".{1,30}", 0..3),
            peers in proptest::collection::vec(arb_peer(), 0..3),
        ) {
            let m = Magnet { info_hash, display_name, trackers, peers };
            prop_assert_eq!(Magnet::parse(&m.to_uri()).unwrap(), m);
        }

        #[test]
        fn never_panics(s in ".{0,80}", tail in "[%&=+:.\\[\\]a-zA-Z0-9]{0,60}") {
            let _ = Magnet::parse(&s);
            let _ = Magnet::parse(&format!("magnet:?{s}"));
            let _ = Magnet::parse(&format!("magnet:?xt=urn:btih:{tail}"));
            let _ = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&{tail}"));
        }
    }
}
