//! BEP 15 UDP tracker packets and BEP 41 URL data: a pure codec (no I/O, no clocks).
//!
//! Layouts (all integers big-endian), from BEP 15
//! (<https://www.bittorrent.org/beps/bep_0015.html>):
//!
//! | packet | layout |
//! |---|---|
//! | connect request | `protocol_id u64 = 0x41727101980`, `action u32 = 0`, `transaction_id u32` (16 bytes) |
//! | connect response | `action u32 = 0`, `transaction_id u32`, `connection_id u64` (16 bytes) |
//! | announce request | `connection_id u64`, `action u32 = 1`, `transaction_id u32`, `info_hash [20]`, `peer_id [20]`, `downloaded u64`, `left u64`, `uploaded u64`, `event u32`, `ip u32`, `key u32`, `num_want i32`, `port u16` (98 bytes), then BEP 41 options |
//! | announce response | `action u32 = 1`, `transaction_id u32`, `interval u32`, `leechers u32`, `seeders u32` (20 bytes), then peers: 6 bytes each (IPv4 address, port) or 18 bytes each (IPv6 address, port) |
//! | scrape request | `connection_id u64`, `action u32 = 2`, `transaction_id u32`, then up to 74 info-hashes of 20 bytes |
//! | scrape response | `action u32 = 2`, `transaction_id u32`, then per info-hash `seeders u32`, `completed u32`, `leechers u32` |
//! | error response | `action u32 = 3`, `transaction_id u32`, message (the rest of the packet) |
//!
//! Events: 0 none, 1 completed, 2 started, 3 stopped. BEP 15 (IPv6 section): the peer
//! entries of an announce response are 6 bytes when the announce reached the tracker over
//! IPv4 and 18 bytes over IPv6; nothing in the packet says which, so decoding takes the
//! [`Family`] of the transport. An IPv4-mapped IPv6 source (`::ffff:a.b.c.d`, a v4 client
//! on a dual-stack socket) counts as IPv4 ([`Family::of`]).
//!
//! BEP 41 (<https://www.bittorrent.org/beps/bep_0041.html>): options follow the 98-byte
//! announce request. Option type 0 is EndOfOptions and 1 is NOP (one byte each, no length);
//! every other type is followed by a length byte and that many bytes of data. Type 2 is
//! URLData, the path and query of the tracker URL; repeated URLData options are
//! concatenated (so URL data longer than 255 bytes is split over several). Parsing stops at
//! EndOfOptions or at the end of the packet. Options of unknown type are skipped; an option
//! whose length byte or data runs past the end of the packet is an error.
//!
//! Decoders never panic; trailing bytes after a fixed-size packet (connect) are ignored as
//! BEP 15 asks ("should not assume packets to be of a certain size"), but variable parts
//! (peer lists, scrape hashes and entries) must be whole entries.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// The magic `protocol_id` of a connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;
/// Most info-hashes in one scrape request (BEP 15).
pub const MAX_SCRAPE_HASHES: usize = 74;
/// Length of an announce request before BEP 41 options.
pub const ANNOUNCE_REQUEST_LEN: usize = 98;
/// Length of an announce response before the peers.
pub const ANNOUNCE_RESPONSE_HEADER_LEN: usize = 20;

const ACTION_CONNECT: u32 = 0;
const ACTION_ANNOUNCE: u32 = 1;
const ACTION_SCRAPE: u32 = 2;
const ACTION_ERROR: u32 = 3;

const OPTION_END: u8 = 0;
const OPTION_NOP: u8 = 1;
const OPTION_URL_DATA: u8 = 2;

/// Why a packet or URL was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("{what} too short: {len} bytes, need at least {need}")]
    TooShort {
        what: &'static str,
        len: usize,
        need: usize,
    },
    #[error("connect request with protocol id {0:#x}, expected 0x41727101980")]
    BadProtocolId(u64),
    #[error("unknown {direction} action {action}")]
    UnknownAction {
        direction: &'static str,
        action: u32,
    },
    #[error("unknown announce event {0} (BEP 15 knows 0..=3)")]
    UnknownEvent(u32),
    #[error("{what}: {len} bytes is not a whole number of {entry}-byte entries")]
    RaggedList {
        what: &'static str,
        len: usize,
        entry: usize,
    },
    #[error("scrape of {0} info-hashes; BEP 15 allows at most 74")]
    TooManyInfoHashes(usize),
    #[error("BEP 41 option of type {kind} at offset {offset} runs past the end of the packet")]
    TruncatedOption { kind: u8, offset: usize },
    #[error("bad tracker URL {url:?}: {reason}")]
    BadUrl { url: String, reason: &'static str },
}

/// The address family of the transport a packet travels on; it fixes the size of peer
/// entries in announce responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of a packet's source or destination address. IPv4-mapped IPv6 addresses
    /// (a v4 peer on a dual-stack socket) are IPv4.
    pub fn of(addr: &SocketAddr) -> Family {
        match addr {
            SocketAddr::V4(_) => Family::V4,
            SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_some() => Family::V4,
            SocketAddr::V6(_) => Family::V6,
        }
    }

    /// Bytes per peer entry in an announce response.
    pub fn peer_len(self) -> usize {
        match self {
            Family::V4 => 6,
            Family::V6 => 18,
        }
    }
}

/// The announce event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u32)]
pub enum Event {
    #[default]
    None = 0,
    Completed = 1,
    Started = 2,
    Stopped = 3,
}

impl Event {
    fn from_u32(n: u32) -> Result<Event, ProtoError> {
        Ok(match n {
            0 => Event::None,
            1 => Event::Completed,
            2 => Event::Started,
            3 => Event::Stopped,
            n => return Err(ProtoError::UnknownEvent(n)),
        })
    }
}

/// An announce request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceRequest {
    pub connection_id: u64,
    pub transaction_id: u32,
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
    pub downloaded: u64,
    pub left: u64,
    pub uploaded: u64,
    pub event: Event,
    /// IPv4 address the peer asks to be listed under; 0 = the packet's source.
    pub ip: u32,
    pub key: u32,
    /// Peers wanted; -1 = the tracker's default.
    pub num_want: i32,
    pub port: u16,
    /// BEP 41 URL data (path and query of the tracker URL); `None` when no URLData option
    /// was present.
    pub url_data: Option<Vec<u8>>,
}

/// A packet from a client to a tracker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Connect {
        transaction_id: u32,
    },
    Announce(AnnounceRequest),
    Scrape {
        connection_id: u64,
        transaction_id: u32,
        info_hashes: Vec<[u8; 20]>,
    },
}

/// One torrent's counts in a scrape response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ScrapeEntry {
    pub seeders: u32,
    pub completed: u32,
    pub leechers: u32,
}

/// A packet from a tracker to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Connect {
        transaction_id: u32,
        connection_id: u64,
    },
    Announce {
        transaction_id: u32,
        /// Seconds until the next announce.
        interval: u32,
        leechers: u32,
        seeders: u32,
        peers: Vec<SocketAddr>,
    },
    Scrape {
        transaction_id: u32,
        entries: Vec<ScrapeEntry>,
    },
    Error {
        transaction_id: u32,
        message: String,
    },
}

/// A bounds-checked big-endian reader.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let end = self.pos.checked_add(N)?;
        let bytes: [u8; N] = self.buf.get(self.pos..end)?.try_into().ok()?;
        self.pos = end;
        Some(bytes)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_be_bytes)
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let b = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(b)
    }
    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }
}

fn need(what: &'static str, buf: &[u8], n: usize) -> Result<(), ProtoError> {
    if buf.len() < n {
        Err(ProtoError::TooShort {
            what,
            len: buf.len(),
            need: n,
        })
    } else {
        Ok(())
    }
}

/// Parses BEP 41 options (the bytes after the 98-byte announce request). Returns the
/// concatenated URLData, `None` if no URLData option was present.
pub fn parse_options(options: &[u8]) -> Result<Option<Vec<u8>>, ProtoError> {
    let mut r = Reader::new(options);
    let mut url: Option<Vec<u8>> = None;
    while let Some(kind) = r.u8() {
        match kind {
            OPTION_END => break,
            OPTION_NOP => continue,
            kind => {
                let offset = ANNOUNCE_REQUEST_LEN + r.pos - 1;
                let data = r
                    .u8()
                    .and_then(|len| r.bytes(usize::from(len)))
                    .ok_or(ProtoError::TruncatedOption { kind, offset })?;
                if kind == OPTION_URL_DATA {
                    url.get_or_insert_with(Vec::new).extend_from_slice(data);
                }
                // Other types: unknown to us, skipped.
            }
        }
    }
    Ok(url)
}

/// Appends URL data as BEP 41 URLData options of at most 255 bytes each (one empty option
/// for empty data), then EndOfOptions.
pub fn encode_url_data(url_data: &[u8], out: &mut Vec<u8>) {
    let mut chunks = url_data.chunks(255).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[OPTION_URL_DATA, 0]);
    }
    for chunk in chunks {
        out.push(OPTION_URL_DATA);
        out.push(chunk.len() as u8); // chunks(255): always fits
        out.extend_from_slice(chunk);
    }
    out.push(OPTION_END);
}

impl Request {
    /// The transaction id every request carries.
    pub fn transaction_id(&self) -> u32 {
        match self {
            Request::Connect { transaction_id } | Request::Scrape { transaction_id, .. } => {
                *transaction_id
            }
            Request::Announce(a) => a.transaction_id,
        }
    }

    /// Decodes a datagram a tracker received.
    pub fn decode(buf: &[u8]) -> Result<Request, ProtoError> {
        need("request", buf, 16)?;
        let mut r = Reader::new(buf);
        let connection_id = r.u64().unwrap_or_default();
        let action = r.u32().unwrap_or_default();
        let transaction_id = r.u32().unwrap_or_default();
        match action {
            ACTION_CONNECT => {
                if connection_id != PROTOCOL_ID {
                    return Err(ProtoError::BadProtocolId(connection_id));
                }
                Ok(Request::Connect { transaction_id })
            }
            ACTION_ANNOUNCE => {
                need("announce request", buf, ANNOUNCE_REQUEST_LEN)?;
                let short = || ProtoError::TooShort {
                    what: "announce request",
                    len: buf.len(),
                    need: ANNOUNCE_REQUEST_LEN,
                };
                let info_hash = r.take::<20>().ok_or_else(short)?;
                let peer_id = r.take::<20>().ok_or_else(short)?;
                let downloaded = r.u64().ok_or_else(short)?;
                let left = r.u64().ok_or_else(short)?;
                let uploaded = r.u64().ok_or_else(short)?;
                let event = Event::from_u32(r.u32().ok_or_else(short)?)?;
                let ip = r.u32().ok_or_else(short)?;
                let key = r.u32().ok_or_else(short)?;
                let num_want = r.i32().ok_or_else(short)?;
                let port = r.u16().ok_or_else(short)?;
                let url_data = parse_options(r.rest())?;
                Ok(Request::Announce(AnnounceRequest {
                    connection_id,
                    transaction_id,
                    info_hash,
                    peer_id,
                    downloaded,
                    left,
                    uploaded,
                    event,
                    ip,
                    key,
                    num_want,
                    port,
                    url_data,
                }))
            }
            ACTION_SCRAPE => {
                let rest = r.rest();
                if !rest.len().is_multiple_of(20) {
                    return Err(ProtoError::RaggedList {
                        what: "scrape request info-hashes",
                        len: rest.len(),
                        entry: 20,
                    });
                }
                let n = rest.len() / 20;
                if n > MAX_SCRAPE_HASHES {
                    return Err(ProtoError::TooManyInfoHashes(n));
                }
                let info_hashes = rest
                    .chunks_exact(20)
                    .filter_map(|c| <[u8; 20]>::try_from(c).ok())
                    .collect();
                Ok(Request::Scrape {
                    connection_id,
                    transaction_id,
                    info_hashes,
                })
            }
            action => Err(ProtoError::UnknownAction {
                direction: "request",
                action,
            }),
        }
    }

    /// Appends the encoded request to `out`. Fails only for a scrape of more than 74
    /// info-hashes (nothing is appended then).
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        match self {
            Request::Connect { transaction_id } => {
                out.extend_from_slice(&PROTOCOL_ID.to_be_bytes());
                out.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
            }
            Request::Announce(a) => {
                out.reserve(ANNOUNCE_REQUEST_LEN);
                out.extend_from_slice(&a.connection_id.to_be_bytes());
                out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
                out.extend_from_slice(&a.transaction_id.to_be_bytes());
                out.extend_from_slice(&a.info_hash);
                out.extend_from_slice(&a.peer_id);
                out.extend_from_slice(&a.downloaded.to_be_bytes());
                out.extend_from_slice(&a.left.to_be_bytes());
                out.extend_from_slice(&a.uploaded.to_be_bytes());
                out.extend_from_slice(&(a.event as u32).to_be_bytes());
                out.extend_from_slice(&a.ip.to_be_bytes());
                out.extend_from_slice(&a.key.to_be_bytes());
                out.extend_from_slice(&a.num_want.to_be_bytes());
                out.extend_from_slice(&a.port.to_be_bytes());
                if let Some(url) = &a.url_data {
                    encode_url_data(url, out);
                }
            }
            Request::Scrape {
                connection_id,
                transaction_id,
                info_hashes,
            } => {
                if info_hashes.len() > MAX_SCRAPE_HASHES {
                    return Err(ProtoError::TooManyInfoHashes(info_hashes.len()));
                }
                out.extend_from_slice(&connection_id.to_be_bytes());
                out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
                for h in info_hashes {
                    out.extend_from_slice(h);
                }
            }
        }
        Ok(())
    }
}

impl Response {
    /// The transaction id every response carries.
    pub fn transaction_id(&self) -> u32 {
        match self {
            Response::Connect { transaction_id, .. }
            | Response::Announce { transaction_id, .. }
            | Response::Scrape { transaction_id, .. }
            | Response::Error { transaction_id, .. } => *transaction_id,
        }
    }

    /// Decodes a datagram a client received over a transport of `family`.
    pub fn decode(buf: &[u8], family: Family) -> Result<Response, ProtoError> {
        need("response", buf, 8)?;
        let mut r = Reader::new(buf);
        let action = r.u32().unwrap_or_default();
        let transaction_id = r.u32().unwrap_or_default();
        match action {
            ACTION_CONNECT => {
                let connection_id = r.u64().ok_or(ProtoError::TooShort {
                    what: "connect response",
                    len: buf.len(),
                    need: 16,
                })?;
                Ok(Response::Connect {
                    transaction_id,
                    connection_id,
                })
            }
            ACTION_ANNOUNCE => {
                need("announce response", buf, ANNOUNCE_RESPONSE_HEADER_LEN)?;
                let interval = r.u32().unwrap_or_default();
                let leechers = r.u32().unwrap_or_default();
                let seeders = r.u32().unwrap_or_default();
                let rest = r.rest();
                let entry = family.peer_len();
                if !rest.len().is_multiple_of(entry) {
                    return Err(ProtoError::RaggedList {
                        what: "announce response peers",
                        len: rest.len(),
                        entry,
                    });
                }
                let peers = rest
                    .chunks_exact(entry)
                    .filter_map(|c| decode_peer(c, family))
                    .collect();
                Ok(Response::Announce {
                    transaction_id,
                    interval,
                    leechers,
                    seeders,
                    peers,
                })
            }
            ACTION_SCRAPE => {
                let rest = r.rest();
                if !rest.len().is_multiple_of(12) {
                    return Err(ProtoError::RaggedList {
                        what: "scrape response entries",
                        len: rest.len(),
                        entry: 12,
                    });
                }
                let mut entries = Vec::with_capacity(rest.len() / 12);
                let mut e = Reader::new(rest);
                while let (Some(seeders), Some(completed), Some(leechers)) =
                    (e.u32(), e.u32(), e.u32())
                {
                    entries.push(ScrapeEntry {
                        seeders,
                        completed,
                        leechers,
                    });
                }
                Ok(Response::Scrape {
                    transaction_id,
                    entries,
                })
            }
            ACTION_ERROR => Ok(Response::Error {
                transaction_id,
                message: String::from_utf8_lossy(r.rest()).into_owned(),
            }),
            action => Err(ProtoError::UnknownAction {
                direction: "response",
                action,
            }),
        }
    }

    /// Appends the encoded response for a client reached over `family` to `out`.
    ///
    /// Peers of an announce response: over IPv4, IPv6 peers that are not IPv4-mapped are
    /// left out (they cannot be written in 6 bytes); over IPv6, IPv4 peers are written as
    /// IPv4-mapped IPv6 addresses.
    pub fn encode_into(&self, family: Family, out: &mut Vec<u8>) {
        match self {
            Response::Connect {
                transaction_id,
                connection_id,
            } => {
                out.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
                out.extend_from_slice(&connection_id.to_be_bytes());
            }
            Response::Announce {
                transaction_id,
                interval,
                leechers,
                seeders,
                peers,
            } => {
                out.reserve(ANNOUNCE_RESPONSE_HEADER_LEN + peers.len() * family.peer_len());
                out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
                out.extend_from_slice(&interval.to_be_bytes());
                out.extend_from_slice(&leechers.to_be_bytes());
                out.extend_from_slice(&seeders.to_be_bytes());
                for p in peers {
                    encode_peer(p, family, out);
                }
            }
            Response::Scrape {
                transaction_id,
                entries,
            } => {
                out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
                for e in entries {
                    out.extend_from_slice(&e.seeders.to_be_bytes());
                    out.extend_from_slice(&e.completed.to_be_bytes());
                    out.extend_from_slice(&e.leechers.to_be_bytes());
                }
            }
            Response::Error {
                transaction_id,
                message,
            } => {
                out.extend_from_slice(&ACTION_ERROR.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
                out.extend_from_slice(message.as_bytes());
            }
        }
    }

    /// [`Response::encode_into`] for a client reached over IPv4.
    pub fn encode_v4(&self, out: &mut Vec<u8>) {
        self.encode_into(Family::V4, out)
    }

    /// [`Response::encode_into`] for a client reached over IPv6.
    pub fn encode_v6(&self, out: &mut Vec<u8>) {
        self.encode_into(Family::V6, out)
    }
}

fn decode_peer(c: &[u8], family: Family) -> Option<SocketAddr> {
    let mut r = Reader::new(c);
    Some(match family {
        Family::V4 => {
            let ip = Ipv4Addr::from(r.take::<4>()?);
            SocketAddr::V4(SocketAddrV4::new(ip, r.u16()?))
        }
        Family::V6 => {
            let ip = Ipv6Addr::from(r.take::<16>()?);
            SocketAddr::V6(SocketAddrV6::new(ip, r.u16()?, 0, 0))
        }
    })
}

fn encode_peer(p: &SocketAddr, family: Family, out: &mut Vec<u8>) {
    match family {
        Family::V4 => {
            let ip = match p.ip() {
                IpAddr::V4(ip) => ip,
                IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                    Some(ip) => ip,
                    None => return,
                },
            };
            out.extend_from_slice(&ip.octets());
        }
        Family::V6 => {
            let ip = match p.ip() {
                IpAddr::V4(ip) => ip.to_ipv6_mapped(),
                IpAddr::V6(ip) => ip,
            };
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&p.port().to_be_bytes());
}

/// A parsed `udp://host:port/path?query` tracker URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpTrackerUrl {
    /// Host name or IP literal (IPv6 without the brackets).
    pub host: String,
    pub port: u16,
    /// BEP 41 URL data: the path and query, as written (empty when the URL has neither).
    pub url_data: Vec<u8>,
}

/// Parses a `udp://` tracker URL (BEP 41 takes its path and query as URL data). The port
/// is required; a fragment is dropped.
pub fn parse_udp_url(url: &str) -> Result<UdpTrackerUrl, ProtoError> {
    let bad = |reason| ProtoError::BadUrl {
        url: url.chars().take(200).collect(),
        reason,
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
    if !scheme.eq_ignore_ascii_case("udp") {
        return Err(bad("not a udp:// URL"));
    }
    let rest = rest.split('#').next().unwrap_or_default();
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, url_data) = rest.split_at(split);
    if authority.contains('@') {
        return Err(bad("user info is not supported"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(bad("bad IPv6 address"));
        }
        let port = after.strip_prefix(':').ok_or_else(|| bad("no port"))?;
        (host, port)
    } else {
        authority.rsplit_once(':').ok_or_else(|| bad("no port"))?
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if host.contains(':') && !authority.starts_with('[') {
        return Err(bad("IPv6 address without brackets"));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
    {
        return Err(bad("bad host name"));
    }
    let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
    if port == 0 {
        return Err(bad("port 0"));
    }
    Ok(UdpTrackerUrl {
        host: host.to_string(),
        port,
        url_data: url_data.as_bytes().to_vec(),
    })
}

/// What a query value keeps unescaped: RFC 3986's unreserved characters.
pub const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-decodes a query value; `None` if the result is not UTF-8. A `%` not followed
/// by two hex digits is kept as is.
fn percent_decode(v: &[u8]) -> Option<String> {
    percent_encoding::percent_decode(v)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters).
pub fn percent_encode(v: &str) -> String {
    utf8_percent_encode(v, UNRESERVED).to_string()
}

/// The `dc=` and `rack=` values of the query in BEP 41 URL data (`/path?dc=..&rack=..`),
/// percent-decoded; the first occurrence of each wins; empty or non-UTF-8 values are
/// `None`.
pub fn place_from_url_data(url_data: &[u8]) -> (Option<String>, Option<String>) {
    let Some(q) = url_data.iter().position(|&b| b == b'?') else {
        return (None, None);
    };
    let query = url_data.get(q + 1..).unwrap_or_default();
    let (mut dc, mut rack) = (None, None);
    for pair in query.split(|&b| b == b'&') {
        let eq = pair.iter().position(|&b| b == b'=');
        let (k, v) = match eq {
            Some(i) => (&pair[..i], pair.get(i + 1..).unwrap_or_default()),
            None => continue,
        };
        let slot = match k {
            b"dc" => &mut dc,
            b"rack" => &mut rack,
            _ => continue,
        };
        if slot.is_none() {
            *slot = percent_decode(v).filter(|s| !s.is_empty());
        }
    }
    (dc, rack)
}

/// URL data with `dc=` and `rack=` added to the query of `base` (a URL's path and query).
pub fn url_data_with_place(base: &[u8], dc: Option<&str>, rack: Option<&str>) -> Vec<u8> {
    let mut out = base.to_vec();
    for (k, v) in [("dc", dc), ("rack", rack)] {
        let Some(v) = v else { continue };
        out.push(if out.contains(&b'?') { b'&' } else { b'?' });
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(percent_encode(v).as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn announce() -> AnnounceRequest {
        AnnounceRequest {
            connection_id: 0x0102_0304_0506_0708,
            transaction_id: 0xdead_beef,
            info_hash: [0xaa; 20],
            peer_id: [0xbb; 20],
            downloaded: 1,
            left: 2,
            uploaded: 3,
            event: Event::Started,
            ip: 0,
            key: 0x1122_3344,
            num_want: -1,
            port: 6881,
            url_data: None,
        }
    }

    #[test]
    fn connect_request_layout() {
        let mut out = Vec::new();
        Request::Connect {
            transaction_id: 0x0a0b_0c0d,
        }
        .encode_into(&mut out)
        .unwrap();
        assert_eq!(
            out,
            [0, 0, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 0x0a, 0x0b, 0x0c, 0x0d]
        );
        assert_eq!(
            Request::decode(&out).unwrap(),
            Request::Connect {
                transaction_id: 0x0a0b_0c0d
            }
        );
        // Extra bytes are ignored.
        out.extend_from_slice(b"xyz");
        assert!(Request::decode(&out).is_ok());
    }

    #[test]
    fn connect_request_bad_magic() {
        let mut b = vec![0u8; 16];
        b[7] = 1;
        assert_eq!(Request::decode(&b), Err(ProtoError::BadProtocolId(1)));
    }

    #[test]
    fn announce_request_layout() {
        let mut expect = Vec::new();
        expect.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        expect.extend_from_slice(&[0, 0, 0, 1]);
        expect.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        expect.extend_from_slice(&[0xaa; 20]);
        expect.extend_from_slice(&[0xbb; 20]);
        expect.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
        expect.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2]);
        expect.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 3]);
        expect.extend_from_slice(&[0, 0, 0, 2]); // started
        expect.extend_from_slice(&[0, 0, 0, 0]); // ip
        expect.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
        expect.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]); // -1
        expect.extend_from_slice(&[0x1a, 0xe1]); // 6881
        assert_eq!(expect.len(), 98);
        let mut out = Vec::new();
        Request::Announce(announce()).encode_into(&mut out).unwrap();
        assert_eq!(out, expect);
        assert_eq!(
            Request::decode(&expect).unwrap(),
            Request::Announce(announce())
        );
        // 97 bytes: too short.
        assert!(matches!(
            Request::decode(&expect[..97]),
            Err(ProtoError::TooShort { need: 98, .. })
        ));
        // An unknown event.
        let mut bad = expect.clone();
        bad[83] = 4;
        assert_eq!(Request::decode(&bad), Err(ProtoError::UnknownEvent(4)));
    }

    #[test]
    fn announce_request_with_url_data_layout() {
        let mut a = announce();
        a.url_data = Some(b"/announce?dc=x".to_vec());
        let mut out = Vec::new();
        Request::Announce(a.clone()).encode_into(&mut out).unwrap();
        let mut tail = vec![2, 14];
        tail.extend_from_slice(b"/announce?dc=x");
        tail.push(0);
        assert_eq!(&out[98..], &tail[..]);
        assert_eq!(Request::decode(&out).unwrap(), Request::Announce(a));
    }

    fn with_options(opts: &[u8]) -> Result<Option<Vec<u8>>, ProtoError> {
        let mut out = Vec::new();
        Request::Announce(announce()).encode_into(&mut out).unwrap();
        out.extend_from_slice(opts);
        match Request::decode(&out)? {
            Request::Announce(a) => Ok(a.url_data),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bep41_options() {
        // Split URLData with NOPs between, then EndOfOptions and junk after it.
        let opts = [
            &[1u8, 2, 5][..],
            b"/anno",
            &[1, 1, 2, 4],
            b"unce",
            &[2, 0, 0, 2, 200, 9],
        ]
        .concat();
        assert_eq!(with_options(&opts).unwrap(), Some(b"/announce".to_vec()));
        // No options; NOP only; EndOfOptions only.
        assert_eq!(with_options(&[]).unwrap(), None);
        assert_eq!(with_options(&[1, 1, 1]).unwrap(), None);
        assert_eq!(with_options(&[0]).unwrap(), None);
        // Old clients' two zero bytes ("extensions") read as EndOfOptions.
        assert_eq!(with_options(&[0, 0]).unwrap(), None);
        // An unknown option is skipped by its length.
        assert_eq!(
            with_options(&[9, 2, 7, 7, 2, 1, b'/']).unwrap(),
            Some(b"/".to_vec())
        );
        // Truncated: no length byte; data short.
        assert_eq!(
            with_options(&[1, 2]),
            Err(ProtoError::TruncatedOption {
                kind: 2,
                offset: 99
            })
        );
        assert!(matches!(
            with_options(&[2, 5, b'a', b'b']),
            Err(ProtoError::TruncatedOption { kind: 2, .. })
        ));
        assert!(matches!(
            with_options(&[9, 3]),
            Err(ProtoError::TruncatedOption { kind: 9, .. })
        ));
    }

    #[test]
    fn long_url_data_is_split() {
        let url: Vec<u8> = (0..600u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut out = Vec::new();
        encode_url_data(&url, &mut out);
        assert_eq!(out[0..2], [2, 255]);
        assert_eq!(out[257..259], [2, 255]);
        assert_eq!(out[514..516], [2, 90]);
        assert_eq!(out.len(), 3 * 2 + 600 + 1);
        assert_eq!(parse_options(&out).unwrap(), Some(url));
    }

    #[test]
    fn scrape_request_layout() {
        let r = Request::Scrape {
            connection_id: 7,
            transaction_id: 9,
            info_hashes: vec![[1; 20], [2; 20]],
        };
        let mut out = Vec::new();
        r.encode_into(&mut out).unwrap();
        let expect = [
            &[0u8, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 2, 0, 0, 0, 9][..],
            &[1; 20],
            &[2; 20],
        ]
        .concat();
        assert_eq!(out, expect);
        assert_eq!(Request::decode(&out).unwrap(), r);
        assert!(matches!(
            Request::decode(&out[..35]),
            Err(ProtoError::RaggedList { .. })
        ));
        let many = Request::Scrape {
            connection_id: 7,
            transaction_id: 9,
            info_hashes: vec![[1; 20]; 75],
        };
        let mut out = Vec::new();
        assert_eq!(
            many.encode_into(&mut out),
            Err(ProtoError::TooManyInfoHashes(75))
        );
        assert!(out.is_empty());
        let mut raw = expect[..16].to_vec();
        raw.extend_from_slice(&[3; 20 * 75]);
        assert_eq!(
            Request::decode(&raw),
            Err(ProtoError::TooManyInfoHashes(75))
        );
    }

    #[test]
    fn unknown_actions_and_short_packets() {
        let mut b = vec![0u8; 16];
        b[11] = 5;
        assert!(matches!(
            Request::decode(&b),
            Err(ProtoError::UnknownAction { action: 5, .. })
        ));
        assert!(matches!(
            Request::decode(&b[..15]),
            Err(ProtoError::TooShort { .. })
        ));
        assert!(matches!(
            Response::decode(&[0, 0, 0, 9, 0, 0, 0, 0], Family::V4),
            Err(ProtoError::UnknownAction { action: 9, .. })
        ));
        assert!(matches!(
            Response::decode(&[0, 0, 0, 0, 0, 0, 0], Family::V4),
            Err(ProtoError::TooShort { .. })
        ));
        assert!(matches!(
            Response::decode(&[0, 0, 0, 0, 0, 0, 0, 0, 1], Family::V4),
            Err(ProtoError::TooShort { need: 16, .. })
        ));
        assert!(matches!(
            Response::decode(&[0, 0, 0, 1, 0, 0, 0, 0, 1], Family::V4),
            Err(ProtoError::TooShort { need: 20, .. })
        ));
    }

    #[test]
    fn connect_response_layout() {
        let r = Response::Connect {
            transaction_id: 0x0102_0304,
            connection_id: 0x1112_1314_1516_1718,
        };
        let mut out = Vec::new();
        r.encode_v4(&mut out);
        assert_eq!(
            out,
            [0, 0, 0, 0, 1, 2, 3, 4, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]
        );
        assert_eq!(Response::decode(&out, Family::V6).unwrap(), r);
    }

    #[test]
    fn announce_response_layout_v4_and_v6() {
        let v4: SocketAddr = "10.1.2.3:6881".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:51413".parse().unwrap();
        let r = Response::Announce {
            transaction_id: 5,
            interval: 1800,
            leechers: 2,
            seeders: 3,
            peers: vec![v4, v6],
        };
        let head = [
            0u8, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0x07, 0x08, 0, 0, 0, 2, 0, 0, 0, 3,
        ];
        let mut out = Vec::new();
        r.encode_v4(&mut out);
        // The IPv6 peer cannot be written in 6 bytes: left out.
        assert_eq!(out, [&head[..], &[10, 1, 2, 3, 0x1a, 0xe1]].concat());
        match Response::decode(&out, Family::V4).unwrap() {
            Response::Announce { peers, .. } => assert_eq!(peers, vec![v4]),
            other => panic!("{other:?}"),
        }
        // The 6-byte list is not a whole number of 18-byte entries.
        assert!(matches!(
            Response::decode(&out, Family::V6),
            Err(ProtoError::RaggedList { entry: 18, .. })
        ));
        let mut out = Vec::new();
        r.encode_v6(&mut out);
        let mut mapped = vec![0u8; 10];
        mapped.extend_from_slice(&[0xff, 0xff, 10, 1, 2, 3, 0x1a, 0xe1]);
        let mut six = vec![0x20, 0x01, 0x0d, 0xb8];
        six.extend_from_slice(&[0; 11]);
        six.extend_from_slice(&[1, 0xc8, 0xd5]);
        assert_eq!(out, [&head[..], &mapped, &six].concat());
        assert!(matches!(
            Response::decode(&out[..out.len() - 1], Family::V6),
            Err(ProtoError::RaggedList { .. })
        ));
    }

    #[test]
    fn scrape_and_error_response_layout() {
        let r = Response::Scrape {
            transaction_id: 1,
            entries: vec![ScrapeEntry {
                seeders: 1,
                completed: 2,
                leechers: 3,
            }],
        };
        let mut out = Vec::new();
        r.encode_v4(&mut out);
        assert_eq!(
            out,
            [0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]
        );
        assert_eq!(Response::decode(&out, Family::V4).unwrap(), r);
        assert!(Response::decode(&out[..19], Family::V4).is_err());
        let e = Response::Error {
            transaction_id: 2,
            message: "no".into(),
        };
        let mut out = Vec::new();
        e.encode_v6(&mut out);
        assert_eq!(out, [0, 0, 0, 3, 0, 0, 0, 2, b'n', b'o']);
        assert_eq!(Response::decode(&out, Family::V4).unwrap(), e);
    }

    #[test]
    fn family_of_mapped_is_v4() {
        assert_eq!(
            Family::of(&"[::ffff:10.0.0.1]:1".parse().unwrap()),
            Family::V4
        );
        assert_eq!(Family::of(&"[::1]:1".parse().unwrap()), Family::V6);
        assert_eq!(Family::of(&"1.2.3.4:1".parse().unwrap()), Family::V4);
    }

    #[test]
    fn udp_urls() {
        let u = parse_udp_url("udp://tracker.example:6969/announce?dc=lon3&rack=r07").unwrap();
        assert_eq!(u.host, "tracker.example");
        assert_eq!(u.port, 6969);
        assert_eq!(u.url_data, b"/announce?dc=lon3&rack=r07");
        let u = parse_udp_url("UDP://[::1]:80?x=1#frag").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 80));
        assert_eq!(u.url_data, b"?x=1");
        let u = parse_udp_url("udp://10.0.0.1:1").unwrap();
        assert!(u.url_data.is_empty());
        for bad in [
            "http://a:1/announce",
            "udp://a/announce",
            "udp://:1",
            "udp://a:0",
            "udp://a:70000",
            "udp://[::1/x",
            "udp://::1:80",
            "udp://u@a:1",
            "udp://a b:1",
            "tracker",
        ] {
            assert!(parse_udp_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn place_in_url_data() {
        assert_eq!(
            place_from_url_data(b"/announce?x=1&dc=lon%333&rack=r07&dc=other"),
            (Some("lon33".into()), Some("r07".into()))
        );
        assert_eq!(place_from_url_data(b"/announce"), (None, None));
        assert_eq!(place_from_url_data(b"/dc=x"), (None, None));
        assert_eq!(place_from_url_data(b"?dc=&rack"), (None, None));
        assert_eq!(place_from_url_data(b"?dc=%ff"), (None, None));
        assert_eq!(place_from_url_data(b"?rack=a%"), (None, Some("a%".into())));
        let d = url_data_with_place(b"/announce", Some("lon 3"), Some("r&7"));
        assert_eq!(d, b"/announce?dc=lon%203&rack=r%267");
        assert_eq!(
            place_from_url_data(&d),
            (Some("lon 3".into()), Some("r&7".into()))
        );
        assert_eq!(
            url_data_with_place(b"/a?k=v", None, Some("r")),
            b"/a?k=v&rack=r"
        );
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::None),
            Just(Event::Completed),
            Just(Event::Started),
            Just(Event::Stopped)
        ]
    }

    fn arb_announce() -> impl Strategy<Value = AnnounceRequest> {
        (
            (
                any::<u64>(),
                any::<u32>(),
                any::<[u8; 20]>(),
                any::<[u8; 20]>(),
            ),
            (any::<u64>(), any::<u64>(), any::<u64>(), arb_event()),
            (any::<u32>(), any::<u32>(), any::<i32>(), any::<u16>()),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..700)),
        )
            .prop_map(
                |(
                    (connection_id, transaction_id, info_hash, peer_id),
                    (downloaded, left, uploaded, event),
                    (ip, key, num_want, port),
                    url_data,
                )| AnnounceRequest {
                    connection_id,
                    transaction_id,
                    info_hash,
                    peer_id,
                    downloaded,
                    left,
                    uploaded,
                    event,
                    ip,
                    key,
                    num_want,
                    port,
                    url_data,
                },
            )
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        prop_oneof![
            any::<u32>().prop_map(|transaction_id| Request::Connect { transaction_id }),
            arb_announce().prop_map(Request::Announce),
            (
                any::<u64>(),
                any::<u32>(),
                proptest::collection::vec(any::<[u8; 20]>(), 0..=MAX_SCRAPE_HASHES)
            )
                .prop_map(|(connection_id, transaction_id, info_hashes)| {
                    Request::Scrape {
                        connection_id,
                        transaction_id,
                        info_hashes,
                    }
                }),
        ]
    }

    fn arb_peer(family: Family) -> BoxedStrategy<SocketAddr> {
        match family {
            Family::V4 => (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::from((Ipv4Addr::from(ip), port)))
                .boxed(),
            Family::V6 => (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::from((Ipv6Addr::from(ip), port)))
                .boxed(),
        }
    }

    fn arb_response(family: Family) -> impl Strategy<Value = Response> {
        let entry = (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
            |(seeders, completed, leechers)| ScrapeEntry {
                seeders,
                completed,
                leechers,
            },
        );
        prop_oneof![
            (any::<u32>(), any::<u64>()).prop_map(|(transaction_id, connection_id)| {
                Response::Connect {
                    transaction_id,
                    connection_id,
                }
            }),
            (
                (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()),
                proptest::collection::vec(arb_peer(family), 0..100)
            )
                .prop_map(|((transaction_id, interval, leechers, seeders), peers)| {
                    Response::Announce {
                        transaction_id,
                        interval,
                        leechers,
                        seeders,
                        peers,
                    }
                }),
            (any::<u32>(), proptest::collection::vec(entry, 0..80)).prop_map(
                |(transaction_id, entries)| Response::Scrape {
                    transaction_id,
                    entries
                }
            ),
            (any::<u32>(), ".{0,100}").prop_map(|(transaction_id, message)| Response::Error {
                transaction_id,
                message
            }),
        ]
    }

    proptest! {
        #[test]
        fn request_round_trip(r in arb_request()) {
            let mut out = vec![0xee]; // appends, keeps what is there
            r.encode_into(&mut out).unwrap();
            prop_assert_eq!(out[0], 0xee);
            prop_assert_eq!(Request::decode(&out[1..]).unwrap(), r);
        }

        #[test]
        fn response_round_trip_v4(r in arb_response(Family::V4)) {
            let mut out = Vec::new();
            r.encode_v4(&mut out);
            prop_assert_eq!(Response::decode(&out, Family::V4).unwrap(), r);
        }

        #[test]
        fn response_round_trip_v6(r in arb_response(Family::V6)) {
            let mut out = Vec::new();
            r.encode_v6(&mut out);
            prop_assert_eq!(Response::decode(&out, Family::V6).unwrap(), r);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = Request::decode(&bytes);
            let _ = Response::decode(&bytes, Family::V4);
            let _ = Response::decode(&bytes, Family::V6);
            let _ = parse_options(&bytes);
            let _ = place_from_url_data(&bytes);
            let _ = parse_udp_url(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn decode_never_panics_near_valid(
            r in arb_request(),
            cut in any::<prop::sample::Index>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let mut out = Vec::new();
            r.encode_into(&mut out).unwrap();
            let _ = Request::decode(&out[..cut.index(out.len() + 1)]);
            let i = flip.0.index(out.len());
            out[i] ^= flip.1;
            let _ = Request::decode(&out);
            let _ = Response::decode(&out, Family::V4);
            let _ = Response::decode(&out, Family::V6);
        }

        #[test]
        fn place_round_trip(dc in ".{1,20}", rack in ".{1,20}", base in "(/[a-z]{0,8})?(\\?[x-z]{1,3}=[a-z]{0,3})?") {
            let d = url_data_with_place(base.as_bytes(), Some(&dc), Some(&rack));
            prop_assert_eq!(place_from_url_data(&d), (Some(dc), Some(rack)));
        }
    }
}
