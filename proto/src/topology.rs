//! Fleet topology: which datacenter and rack an address lives in.
//!
//! The tracker loads a TOML file of `[[subnet]]` tables:
//!
//! ```toml
//! [[subnet]]
//! cidr = "10.1.0.0/16"
//! dc = "fra1"
//! rack = "r01"
//!
//! [[subnet]]
//! cidr = "2001:db8:1::/48"
//! dc = "fra1"
//! rack = "r01"
//! ```
//!
//! Rules:
//! - `cidr` is `address/prefix` (IPv4 prefix 0..=32, IPv6 0..=128). A bare address means a
//!   host route (`/32` or `/128`). **Host bits must be zero**: `10.1.2.3/16` is rejected,
//!   with the network it probably meant in the message. A typo in a topology file silently
//!   masked would put hosts in the wrong rack, which is worse than refusing to start.
//! - The same prefix twice is an error (which one should win is not knowable).
//! - Unknown keys are errors (a misspelt `rak` would otherwise be ignored).
//! - `dc` and `rack` are 1..=64 bytes without control characters or invisible format
//!   characters (bidi overrides, zero-width). Rack names are scoped by
//!   their dc: `r01` in `fra1` and `r01` in `ams2` are different racks.
//! - Lookup: the most specific prefix wins (longest-prefix match). IPv4-mapped IPv6
//!   addresses (`::ffff:a.b.c.d`, as a dual-stack socket reports them) are looked up as
//!   IPv4.
//!
//! Places are interned: a [`Place`] is two `u16` ids (dc, rack); id 0 means unknown. Rack ids
//! are unique across dcs, so equal non-zero rack ids mean the same rack.
//!
//! Lookup cost: one hash probe per distinct prefix length present in the file (at most 33
//! for IPv4, 129 for IPv6; real files have a handful), longest first, stopping at the first
//! hit; independent of the number of subnets.
//!
//! BEP 41 URL data fallback: an announcer whose address matches no subnet may state
//! `dc=`/`rack=`; [`Topology::place_from_url_data`] interns those names. Names the file
//! defines resolve to the file's ids; other names are added at run time up to a bound
//! ([`Topology::set_max_dynamic_names`], default 4096), after which they resolve to unknown,
//! so a flood of made-up names cannot grow memory; one source address adds at most
//! [`Topology::set_max_names_per_source`] of them (default [`DEFAULT_NAMES_PER_SOURCE`]), so
//! one host cannot use up the bound for everyone. The tracker's worker cores share one
//! `Topology` (an `Arc<RwLock<Topology>>`: lookups under the read lock, run-time names
//! added under the write lock), so every id, from the file or added at run time, means
//! the same place on every core.

use ipnet::IpNet;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;

use crate::hostaddr::host_group;

/// Longest accepted dc or rack name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Largest topology text accepted (a file, a URL's answer, or the feed's copy): 100 000
/// subnets of ~60 bytes fit with room to spare; a file far larger is a mistake, and every
/// agent would parse it on each new feed.
pub const MAX_TOPOLOGY_BYTES: usize = 16 << 20;

/// New dc and rack names one source address may add from URL data (a host states one dc
/// and one rack; a few more allow for moves).
pub const DEFAULT_NAMES_PER_SOURCE: usize = 4;

/// Where a peer lives: interned datacenter and rack ids. `0` means unknown.
///
/// Ordered by (dc, rack) so that all racks of one dc are contiguous when sorted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Place {
    /// Datacenter id; 0 = unknown.
    pub dc: u16,
    /// Rack id, unique across datacenters; 0 = unknown.
    pub rack: u16,
}

impl Place {
    /// Neither dc nor rack known.
    pub const UNKNOWN: Place = Place { dc: 0, rack: 0 };

    /// True when neither dc nor rack is known.
    pub fn is_unknown(self) -> bool {
        self == Place::UNKNOWN
    }

    /// Both ids packed in one `u32` (dc in the high half).
    pub fn to_u32(self) -> u32 {
        (u32::from(self.dc) << 16) | u32::from(self.rack)
    }

    /// Inverse of [`Place::to_u32`].
    pub fn from_u32(v: u32) -> Place {
        Place {
            dc: (v >> 16) as u16,
            rack: v as u16,
        }
    }
}

/// An IPv4 or IPv6 network: address and prefix length, host bits zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// Network bits; IPv4 in the low 32 bits.
    bits: u128,
    len: u8,
    v6: bool,
}

/// Why a CIDR string is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IPv4 or IPv6 address")]
    BadAddress(String),
    #[error("prefix {0:?} is not a number")]
    BadPrefix(String),
    #[error("prefix /{len} is out of range for {family} (0..={max})")]
    PrefixRange {
        len: u32,
        family: &'static str,
        max: u8,
    },
    #[error("host bits are set in {given}; the network is {network}")]
    HostBits { given: String, network: String },
}

fn mask(len: u8, width: u8) -> u128 {
    if len == 0 {
        0
    } else {
        let all: u128 = if width == 128 {
            u128::MAX
        } else {
            (1u128 << width) - 1
        };
        all & (all << (width - len))
    }
}

fn v4_of(ip: IpAddr) -> Result<Ipv4Addr, Ipv6Addr> {
    match ip {
        IpAddr::V4(a) => Ok(a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => Ok(v4),
            None => Err(a),
        },
    }
}

impl Cidr {
    /// Parses `address/prefix` (or a bare address, meaning a host route). Host bits must be
    /// zero.
    ///
    /// The address and prefix are split here rather than by ipnet's parser so that the
    /// error names which half is wrong (ipnet's says only "invalid IP address syntax");
    /// ipnet does the network arithmetic.
    pub fn parse(s: &str) -> Result<Cidr, CidrError> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::BadAddress(addr.to_string()))?;
        let (width, family) = match ip {
            IpAddr::V4(_) => (32u8, "IPv4"),
            IpAddr::V6(_) => (128u8, "IPv6"),
        };
        let len: u32 = match prefix {
            None => u32::from(width),
            Some(p) => {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(CidrError::BadPrefix(p.to_string()));
                }
                p.parse().map_err(|_| CidrError::BadPrefix(p.to_string()))?
            }
        };
        let range = CidrError::PrefixRange {
            len,
            family,
            max: width,
        };
        let len = u8::try_from(len).map_err(|_| range.clone())?;
        let given = IpNet::new(ip, len).map_err(|_| range)?;
        let network = given.trunc();
        if network != given {
            return Err(CidrError::HostBits {
                given: s.to_string(),
                network: network.to_string(),
            });
        }
        let bits = match network.network() {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        Ok(Cidr {
            bits,
            len,
            v6: width == 128,
        })
    }

    /// Prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// True for an IPv6 network.
    pub fn is_ipv6(&self) -> bool {
        self.v6
    }

    fn net(&self) -> IpNet {
        let ip = if self.v6 {
            IpAddr::V6(Ipv6Addr::from(self.bits))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.bits as u32))
        };
        // The length was checked against the family when parsed.
        IpNet::new(ip, self.len).unwrap_or(IpNet::from(ip))
    }

    /// True when `ip` lies in this network. IPv4-mapped IPv6 addresses match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net(), ip) {
            (IpNet::V4(net), ip) => v4_of(ip).is_ok_and(|a| net.contains(&a)),
            (IpNet::V6(net), IpAddr::V6(a)) => net.contains(&a),
            (IpNet::V6(_), IpAddr::V4(_)) => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.net().fmt(f)
    }
}

/// Why a topology file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("topology {origin}: cannot read: {source}")]
    Io {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("topology {origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error(
        "topology {origin}: {bytes} bytes, more than the {} MiB a topology may be",
        MAX_TOPOLOGY_BYTES >> 20
    )]
    TooLarge { origin: String, bytes: usize },
    #[error("topology {origin}, line {line}, [[subnet]] #{entry} ({field} = {value:?}): {reason}")]
    Entry {
        origin: String,
        line: usize,
        /// 1-based index of the `[[subnet]]` table.
        entry: usize,
        field: &'static str,
        value: String,
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    subnet: Vec<FileSubnet>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSubnet {
    cidr: toml::Spanned<String>,
    dc: toml::Spanned<String>,
    rack: toml::Spanned<String>,
}

/// A multiplicative hasher for the prefix tables. Keys come from the operator's file, so
/// hash flooding is not a concern; lookups of arbitrary addresses only probe.
#[derive(Default, Clone, Copy)]
struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u128(&mut self, v: u128) {
        let x = (v as u64) ^ ((v >> 64) as u64).rotate_left(29);
        let m = u128::from(x ^ self.0) * 0x9e37_79b9_7f4a_7c15_u128;
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
}

type PrefixMap = HashMap<u128, Place, BuildHasherDefault<PrefixHasher>>;

/// Per family: one map per prefix length present, longest first.
#[derive(Clone, Default, Debug)]
struct PrefixTable {
    lens: Vec<u8>,
    maps: Vec<PrefixMap>,
}

impl PrefixTable {
    fn insert(&mut self, len: u8, bits: u128, place: Place) -> Option<Place> {
        let i = match self.lens.iter().position(|&l| l <= len) {
            Some(i) if self.lens[i] == len => i,
            Some(i) => {
                self.lens.insert(i, len);
                self.maps.insert(i, PrefixMap::default());
                i
            }
            None => {
                self.lens.push(len);
                self.maps.push(PrefixMap::default());
                self.lens.len() - 1
            }
        };
        self.maps[i].insert(bits, place)
    }

    fn lookup(&self, bits: u128, width: u8) -> Option<Place> {
        for (&len, map) in self.lens.iter().zip(&self.maps) {
            if let Some(p) = map.get(&(bits & mask(len, width))) {
                return Some(*p);
            }
        }
        None
    }

    fn len(&self) -> usize {
        self.maps.iter().map(|m| m.len()).sum()
    }
}

/// The CIDR → place map and the interned dc and rack names.
#[derive(Clone, Debug)]
pub struct Topology {
    v4: PrefixTable,
    v6: PrefixTable,
    /// Index = dc id; entry 0 is the unknown dc.
    dc_names: Vec<String>,
    /// Index = rack id; entry 0 is the unknown rack. (dc id, name).
    racks: Vec<(u16, String)>,
    dc_ids: HashMap<String, u16>,
    rack_ids: HashMap<(u16, String), u16>,
    /// Names interned from BEP 41 URL data so far, and the bound.
    dynamic_names: usize,
    max_dynamic_names: usize,
    /// Names each source address added from URL data, and the bound per source. Only
    /// sources that added a name are here, so it holds at most `max_dynamic_names` keys.
    names_by_source: HashMap<IpAddr, u32>,
    max_names_per_source: usize,
}

impl Default for Topology {
    fn default() -> Self {
        Topology::empty()
    }
}

fn check_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if s.len() > MAX_NAME_LEN {
        return Err(format!("is longer than {MAX_NAME_LEN} bytes"));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err("contains a control character".into());
    }
    if let Some(c) = s.chars().find(|&c| is_format_char(c)) {
        return Err(format!(
            "contains the invisible format character U+{:04X}",
            u32::from(c)
        ));
    }
    Ok(())
}

/// Unicode format characters (category Cf) that would make a name print as another: the
/// soft hyphen, zero-width characters, bidirectional embeddings, overrides and isolates,
/// invisible operators, the byte-order mark, and a few more of Cf.
fn is_format_char(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl Topology {
    /// A topology with no subnets: every address is unknown unless URL data names a place.
    pub fn empty() -> Topology {
        Topology {
            v4: PrefixTable::default(),
            v6: PrefixTable::default(),
            dc_names: vec![String::new()],
            racks: vec![(0, String::new())],
            dc_ids: HashMap::new(),
            rack_ids: HashMap::new(),
            dynamic_names: 0,
            max_dynamic_names: 4096,
            names_by_source: HashMap::new(),
            max_names_per_source: DEFAULT_NAMES_PER_SOURCE,
        }
    }

    /// Parses topology TOML; `origin` (usually the file name) is used in error messages.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Topology, TopologyError> {
        if text.len() > MAX_TOPOLOGY_BYTES {
            return Err(TopologyError::TooLarge {
                origin: origin.to_string(),
                bytes: text.len(),
            });
        }
        let doc: FileDoc = toml::from_str(text).map_err(|e| {
            let message = match e.span() {
                Some(sp) => format!("line {}: {}", line_of(text, sp.start), e.message()),
                None => e.message().to_string(),
            };
            TopologyError::Syntax {
                origin: origin.to_string(),
                message,
            }
        })?;
        let mut t = Topology::empty();
        let mut seen: HashMap<Cidr, usize> = HashMap::new();
        for (i, s) in doc.subnet.iter().enumerate() {
            let entry = i + 1;
            let err = |field: &'static str, sp: &toml::Spanned<String>, reason: String| {
                TopologyError::Entry {
                    origin: origin.to_string(),
                    line: line_of(text, sp.span().start),
                    entry,
                    field,
                    value: sp.get_ref().clone(),
                    reason,
                }
            };
            let cidr =
                Cidr::parse(s.cidr.get_ref()).map_err(|e| err("cidr", &s.cidr, e.to_string()))?;
            if let Some(prev) = seen.insert(cidr, entry) {
                return Err(err(
                    "cidr",
                    &s.cidr,
                    format!("the same network as [[subnet]] #{prev}"),
                ));
            }
            check_name(s.dc.get_ref()).map_err(|r| err("dc", &s.dc, r))?;
            check_name(s.rack.get_ref()).map_err(|r| err("rack", &s.rack, r))?;
            let dc = t
                .intern_dc(s.dc.get_ref())
                .ok_or_else(|| err("dc", &s.dc, "more than 65535 datacenters".into()))?;
            let rack = t
                .intern_rack(dc, s.rack.get_ref())
                .ok_or_else(|| err("rack", &s.rack, "more than 65535 racks".into()))?;
            let place = Place { dc, rack };
            if cidr.v6 {
                t.v6.insert(cidr.len, cidr.bits, place);
            } else {
                t.v4.insert(cidr.len, cidr.bits, place);
            }
        }
        Ok(t)
    }

    /// Takes the subnets of `newer` (a topology read again) in place of this one's, and
    /// keeps this one's names: a stored [`Place`] is a pair of ids into the name tables, so
    /// the ids places were given under this topology keep naming the same dc and rack (and
    /// the names learnt from URL data stay). `newer`'s names are interned here, new ones
    /// appended. Errs, changing nothing, when that would pass 65 535 names of a kind.
    pub fn take_subnets_from(&mut self, newer: &Topology) -> Result<(), String> {
        let mut names = Topology {
            v4: PrefixTable::default(),
            v6: PrefixTable::default(),
            dc_names: self.dc_names.clone(),
            racks: self.racks.clone(),
            dc_ids: self.dc_ids.clone(),
            rack_ids: self.rack_ids.clone(),
            dynamic_names: self.dynamic_names,
            max_dynamic_names: self.max_dynamic_names,
            names_by_source: self.names_by_source.clone(),
            max_names_per_source: self.max_names_per_source,
        };
        let mut remap: HashMap<Place, Place> = HashMap::new();
        for table in [&newer.v4, &newer.v6] {
            for map in &table.maps {
                for place in map.values() {
                    if remap.contains_key(place) {
                        continue;
                    }
                    let dc_name = &newer.dc_names[usize::from(place.dc)];
                    let (_, rack_name) = &newer.racks[usize::from(place.rack)];
                    let dc = names
                        .intern_dc(dc_name)
                        .ok_or("more than 65535 datacenters")?;
                    let rack = names
                        .intern_rack(dc, rack_name)
                        .ok_or("more than 65535 racks")?;
                    remap.insert(*place, Place { dc, rack });
                }
            }
        }
        for (into, from) in [(&mut names.v4, &newer.v4), (&mut names.v6, &newer.v6)] {
            for (&len, map) in from.lens.iter().zip(&from.maps) {
                for (&bits, place) in map {
                    into.insert(len, bits, remap[place]);
                }
            }
        }
        *self = names;
        Ok(())
    }

    fn intern_dc(&mut self, name: &str) -> Option<u16> {
        if let Some(&id) = self.dc_ids.get(name) {
            return Some(id);
        }
        let id = u16::try_from(self.dc_names.len()).ok()?;
        self.dc_names.push(name.to_string());
        self.dc_ids.insert(name.to_string(), id);
        Some(id)
    }

    fn intern_rack(&mut self, dc: u16, name: &str) -> Option<u16> {
        let key = (dc, name.to_string());
        if let Some(&id) = self.rack_ids.get(&key) {
            return Some(id);
        }
        let id = u16::try_from(self.racks.len()).ok()?;
        self.racks.push(key.clone());
        self.rack_ids.insert(key, id);
        Some(id)
    }

    /// Sets how many dc and rack names BEP 41 URL data may add at run time (default 4096).
    pub fn set_max_dynamic_names(&mut self, max: usize) {
        self.max_dynamic_names = max;
    }

    /// Sets how many new dc and rack names one source host (an IPv4 address, an IPv6 /64)
    /// may add from URL data
    /// (default [`DEFAULT_NAMES_PER_SOURCE`]); names already known cost nothing.
    pub fn set_max_names_per_source(&mut self, max: usize) {
        self.max_names_per_source = max;
    }

    /// Whether `source` may intern one more name from URL data.
    fn may_add_name(&self, source: Option<IpAddr>) -> bool {
        self.dynamic_names < self.max_dynamic_names
            && source.is_none_or(|ip| {
                let host = host_group(ip);
                self.names_by_source.get(&host).map_or(0, |&n| n as usize)
                    < self.max_names_per_source
            })
    }

    fn note_name(&mut self, source: Option<IpAddr>) {
        self.dynamic_names += 1;
        if let Some(ip) = source {
            *self.names_by_source.entry(host_group(ip)).or_insert(0) += 1;
        }
    }

    /// Number of subnets loaded.
    pub fn subnet_count(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// The most specific subnet containing `ip`, if any.
    pub fn lookup(&self, ip: IpAddr) -> Option<Place> {
        match v4_of(ip) {
            Ok(a) => self.v4.lookup(u128::from(u32::from(a)), 32),
            Err(a) => self.v6.lookup(u128::from(a), 128),
        }
    }

    /// The place an announcer states in BEP 41 URL data (`dc=`, `rack=`, already
    /// percent-decoded by the caller). Invalid names are ignored; a rack without a dc is a
    /// rack in the unknown dc. New names are interned up to the dynamic-name bound.
    pub fn place_from_url_data(&mut self, dc: Option<&str>, rack: Option<&str>) -> Place {
        self.place_from_url_data_of(None, dc, rack)
    }

    /// [`Topology::place_from_url_data`] for an announce from `source`: a source adds at
    /// most its per-source bound of new names; beyond it, new names resolve to unknown.
    pub fn place_from_url_data_of(
        &mut self,
        source: Option<IpAddr>,
        dc: Option<&str>,
        rack: Option<&str>,
    ) -> Place {
        let source = source.map(|ip| match v4_of(ip) {
            Ok(a) => IpAddr::V4(a),
            Err(a) => IpAddr::V6(a),
        });
        let dc = dc.filter(|n| check_name(n).is_ok());
        let rack = rack.filter(|n| check_name(n).is_ok());
        let dc_id = match dc {
            None => 0,
            Some(n) => match self.dc_ids.get(n) {
                Some(&id) => id,
                None if self.may_add_name(source) => match self.intern_dc(n) {
                    Some(id) => {
                        self.note_name(source);
                        id
                    }
                    None => 0,
                },
                None => 0,
            },
        };
        let rack_id = match rack {
            None => 0,
            Some(n) => match self.rack_ids.get(&(dc_id, n.to_string())) {
                Some(&id) => id,
                None if self.may_add_name(source) => match self.intern_rack(dc_id, n) {
                    Some(id) => {
                        self.note_name(source);
                        id
                    }
                    None => 0,
                },
                None => 0,
            },
        };
        Place {
            dc: dc_id,
            rack: rack_id,
        }
    }

    /// The announcer's place: the topology's match for `ip` wins; otherwise the BEP 41 URL
    /// data; otherwise [`Place::UNKNOWN`].
    pub fn resolve(&mut self, ip: IpAddr, url_dc: Option<&str>, url_rack: Option<&str>) -> Place {
        match self.lookup(ip) {
            Some(p) => p,
            None if url_dc.is_some() || url_rack.is_some() => {
                self.place_from_url_data_of(Some(ip), url_dc, url_rack)
            }
            None => Place::UNKNOWN,
        }
    }

    /// The name of a dc id (`None` for 0 or an unknown id).
    pub fn dc_name(&self, id: u16) -> Option<&str> {
        if id == 0 {
            return None;
        }
        self.dc_names.get(usize::from(id)).map(String::as_str)
    }

    /// The names of the racks of dc `dc`, sorted (each once): the order in which a dc's
    /// racks split the pieces they fetch from other dcs.
    pub fn racks_in_dc(&self, dc: &str) -> Vec<&str> {
        let mut racks: Vec<&str> = self
            .racks
            .iter()
            .skip(1)
            .filter(|(d, _)| self.dc_name(*d) == Some(dc))
            .map(|(_, name)| name.as_str())
            .collect();
        racks.sort_unstable();
        racks.dedup();
        racks
    }

    /// The (dc name, rack name) of a rack id (`None` for 0 or an unknown id).
    pub fn rack_name(&self, id: u16) -> Option<(&str, &str)> {
        if id == 0 {
            return None;
        }
        let (dc, name) = self.racks.get(usize::from(id))?;
        Some((self.dc_name(*dc).unwrap_or(""), name.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn racks_of_a_dc_sorted_by_name() {
        let text = "[[subnet]]\ncidr = \"10.0.2.0/24\"\ndc = \"d\"\nrack = \"r2\"\n\n\
                    [[subnet]]\ncidr = \"10.0.1.0/24\"\ndc = \"d\"\nrack = \"r1\"\n\n\
                    [[subnet]]\ncidr = \"10.0.3.0/24\"\ndc = \"d\"\nrack = \"r1\"\n\n\
                    [[subnet]]\ncidr = \"10.1.1.0/24\"\ndc = \"e\"\nrack = \"r1\"\n";
        let t = Topology::from_toml_str(text, "t").unwrap();
        assert_eq!(t.racks_in_dc("d"), ["r1", "r2"]);
        assert_eq!(t.racks_in_dc("e"), ["r1"]);
        assert!(t.racks_in_dc("x").is_empty());
    }

    #[test]
    fn a_topology_read_again_keeps_the_ids_places_were_given() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let old_text = "[[subnet]]\ncidr = \"10.0.1.0/24\"\ndc = \"d\"\nrack = \"r1\"\n\n[[subnet]]\ncidr = \"10.0.2.0/24\"\ndc = \"d\"\nrack = \"r2\"\n";
        let mut t = Topology::from_toml_str(old_text, "old").unwrap();
        let r2 = t.lookup(ip("10.0.2.7")).unwrap();
        let stated = t.place_from_url_data(Some("e"), Some("x9"));
        // The new file puts a rack first (its own ids shift) and moves 10.0.2.0/24 to r3.
        let new_text = "[[subnet]]\ncidr = \"10.0.0.0/24\"\ndc = \"d\"\nrack = \"r0\"\n\n[[subnet]]\ncidr = \"10.0.1.0/24\"\ndc = \"d\"\nrack = \"r1\"\n\n[[subnet]]\ncidr = \"10.0.2.0/24\"\ndc = \"d\"\nrack = \"r3\"\n";
        let newer = Topology::from_toml_str(new_text, "new").unwrap();
        t.take_subnets_from(&newer).unwrap();
        // Ids given before keep their names: a stored peer's place still says r2 / x9.
        assert_eq!(t.rack_name(r2.rack), Some(("d", "r2")));
        assert_eq!(t.rack_name(stated.rack), Some(("e", "x9")));
        // Lookups follow the new file.
        let name = |t: &Topology, a: &str| {
            t.rack_name(t.lookup(ip(a)).unwrap().rack)
                .unwrap()
                .1
                .to_owned()
        };
        assert_eq!(name(&t, "10.0.0.9"), "r0");
        assert_eq!(name(&t, "10.0.1.9"), "r1");
        assert_eq!(name(&t, "10.0.2.9"), "r3");
        assert_eq!(t.subnet_count(), 3);
    }
    use proptest::prelude::*;

    const FILE: &str = r#"
[[subnet]]
cidr = "10.0.0.0/8"
dc = "fra1"
rack = "spine"

[[subnet]]
cidr = "10.1.0.0/16"
dc = "fra1"
rack = "r01"

[[subnet]]
cidr = "10.1.2.0/24"
dc = "fra1"
rack = "r02"

[[subnet]]
cidr = "10.1.2.7/32"
dc = "ams2"
rack = "r01"

[[subnet]]
cidr = "2001:db8::/32"
dc = "ams2"
rack = "r09"

[[subnet]]
cidr = "2001:db8:1::/48"
dc = "ams2"
rack = "r10"
"#;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn names(t: &Topology, p: Place) -> (String, String) {
        let (dc, rack) = t.rack_name(p.rack).unwrap();
        assert_eq!(t.dc_name(p.dc), Some(dc));
        (dc.to_string(), rack.to_string())
    }

    #[test]
    fn cidr_parse() {
        assert_eq!(Cidr::parse("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().prefix_len(), 0);
        assert_eq!(Cidr::parse("::/0").unwrap().prefix_len(), 0);
        assert_eq!(Cidr::parse("10.1.2.3").unwrap().prefix_len(), 32);
        assert_eq!(Cidr::parse("2001:db8::1/128").unwrap().prefix_len(), 128);
        assert!(matches!(
            Cidr::parse("10.1.2.3/16"),
            Err(CidrError::HostBits { network, .. }) if network == "10.1.0.0/16"
        ));
        assert!(matches!(
            Cidr::parse("10.0.0.0/33"),
            Err(CidrError::PrefixRange { .. })
        ));
        assert!(matches!(
            Cidr::parse("::/129"),
            Err(CidrError::PrefixRange { .. })
        ));
        assert!(matches!(
            Cidr::parse("10.0.0.0/"),
            Err(CidrError::BadPrefix(_))
        ));
        assert!(matches!(
            Cidr::parse("10.0.0.0/-1"),
            Err(CidrError::BadPrefix(_))
        ));
        assert!(matches!(
            Cidr::parse("10.0.0.0/+8"),
            Err(CidrError::BadPrefix(_))
        ));
        assert!(matches!(
            Cidr::parse("10.0.0/8"),
            Err(CidrError::BadAddress(_))
        ));
        assert!(matches!(Cidr::parse("/8"), Err(CidrError::BadAddress(_))));
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains(ip("10.1.255.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(!c.contains(ip("2001:db8::1")));
    }

    #[test]
    fn longest_prefix_wins_v4_and_v6() {
        let t = Topology::from_toml_str(FILE, "test.toml").unwrap();
        assert_eq!(t.subnet_count(), 6);
        let at = |s: &str| names(&t, t.lookup(ip(s)).unwrap());
        assert_eq!(at("10.200.0.1"), ("fra1".into(), "spine".into()));
        assert_eq!(at("10.1.9.9"), ("fra1".into(), "r01".into()));
        assert_eq!(at("10.1.2.8"), ("fra1".into(), "r02".into()));
        assert_eq!(at("10.1.2.7"), ("ams2".into(), "r01".into()));
        assert_eq!(at("::ffff:10.1.2.7"), ("ams2".into(), "r01".into()));
        assert_eq!(at("2001:db8:ffff::1"), ("ams2".into(), "r09".into()));
        assert_eq!(at("2001:db8:1:2::1"), ("ams2".into(), "r10".into()));
        assert_eq!(t.lookup(ip("11.0.0.1")), None);
        assert_eq!(t.lookup(ip("2001:db9::1")), None);
        // r01 in fra1 and r01 in ams2 are different racks; same dc ids agree.
        let a = t.lookup(ip("10.1.9.9")).unwrap();
        let b = t.lookup(ip("10.1.2.7")).unwrap();
        let c = t.lookup(ip("2001:db8::1")).unwrap();
        assert_ne!(a.rack, b.rack);
        assert_ne!(a.dc, b.dc);
        assert_eq!(b.dc, c.dc);
        assert_eq!(Place::from_u32(a.to_u32()), a);
    }

    #[test]
    fn names_with_invisible_format_characters_are_refused() {
        for bad in [
            "r\u{202E}1",
            "r\u{200B}1",
            "\u{FEFF}r1",
            "r\u{00AD}1",
            "r\u{2066}1",
        ] {
            let text = format!("[[subnet]]\ncidr = \"10.0.0.0/8\"\ndc = \"d\"\nrack = \"{bad}\"\n");
            let (_, _, field, reason) = entry_err(&text);
            assert_eq!(field, "rack", "{bad:?}");
            assert!(reason.contains("format character U+"), "{reason}");
            let mut t = Topology::empty();
            assert_eq!(
                t.place_from_url_data(Some("d"), Some(bad)).rack,
                0,
                "{bad:?}"
            );
        }
        // Letters of any script are fine.
        let t = Topology::from_toml_str(
            "[[subnet]]\ncidr = \"10.0.0.0/8\"\ndc = \"zürich\"\nrack = \"ряд-1\"\n",
            "t",
        );
        assert!(t.is_ok());
    }

    #[test]
    fn default_route_and_host_route() {
        let t = Topology::from_toml_str(
            "[[subnet]]\ncidr = \"0.0.0.0/0\"\ndc = \"d\"\nrack = \"any\"\n\
             [[subnet]]\ncidr = \"192.0.2.1\"\ndc = \"d\"\nrack = \"one\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(names(&t, t.lookup(ip("8.8.8.8")).unwrap()).1, "any");
        assert_eq!(names(&t, t.lookup(ip("192.0.2.1")).unwrap()).1, "one");
        assert_eq!(t.lookup(ip("::1")), None);
    }

    fn entry_err(text: &str) -> (usize, usize, &'static str, String) {
        match Topology::from_toml_str(text, "fleet.toml") {
            Err(TopologyError::Entry {
                line,
                entry,
                field,
                reason,
                ..
            }) => (line, entry, field, reason),
            other => panic!("expected an entry error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_line_entry_and_problem() {
        let text = "[[subnet]]\ncidr = \"10.0.0.0/8\"\ndc = \"a\"\nrack = \"b\"\n\n\
                    [[subnet]]\ncidr = \"10.1.2.3/16\"\ndc = \"a\"\nrack = \"b\"\n";
        let (line, entry, field, reason) = entry_err(text);
        assert_eq!((line, entry, field), (7, 2, "cidr"));
        assert!(reason.contains("10.1.0.0/16"), "{reason}");
        let e = Topology::from_toml_str(text, "fleet.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("fleet.toml") && e.contains("line 7") && e.contains("#2"),
            "{e}"
        );

        let (line, entry, field, _) =
            entry_err("[[subnet]]\ncidr = \"10.0.0.0/40\"\ndc = \"a\"\nrack = \"b\"\n");
        assert_eq!((line, entry, field), (2, 1, "cidr"));
        let (_, entry, field, reason) = entry_err(
            "[[subnet]]\ncidr = \"10.0.0.0/8\"\ndc = \"a\"\nrack = \"b\"\n\
             [[subnet]]\ncidr = \"10.0.0.0/8\"\ndc = \"a\"\nrack = \"c\"\n",
        );
        assert_eq!((entry, field), (2, "cidr"));
        assert!(reason.contains("#1"));
        let (line, _, field, _) =
            entry_err("[[subnet]]\ncidr = \"10.0.0.0/8\"\ndc = \"\"\nrack = \"b\"\n");
        assert_eq!((line, field), (3, "dc"));

        for bad in [
            "[[subnet]]\ncidr = \"10.0.0.0/8\"\ndc = \"a\"\nrak = \"b\"\n",
            "[[subnet]]\ncidr = \"10.0.0.0/8\"\ndc = \"a\"\n",
            "[[subnet]]\ncidr = 10\ndc = \"a\"\nrack = \"b\"\n",
            "[[subnet]\n",
        ] {
            match Topology::from_toml_str(bad, "fleet.toml") {
                Err(TopologyError::Syntax { message, origin }) => {
                    assert_eq!(origin, "fleet.toml");
                    assert!(message.contains("line"), "{message}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert_eq!(Topology::from_toml_str("", "e").unwrap().subnet_count(), 0);
    }

    #[test]
    fn url_data_fallback_and_unknown() {
        let mut t = Topology::from_toml_str(FILE, "t").unwrap();
        let file_place = t.lookup(ip("10.1.9.9")).unwrap();
        // A match in the file wins over URL data.
        assert_eq!(t.resolve(ip("10.1.9.9"), Some("x"), Some("y")), file_place);
        // No match: URL data naming a known place gets the file's ids.
        assert_eq!(
            t.resolve(ip("192.0.2.1"), Some("fra1"), Some("r01")),
            file_place
        );
        // New names are interned and stable.
        let p = t.resolve(ip("192.0.2.1"), Some("lon3"), Some("r07"));
        assert!(p.dc != 0 && p.rack != 0);
        assert_eq!(t.resolve(ip("192.0.2.2"), Some("lon3"), Some("r07")), p);
        assert_eq!(names(&t, p), ("lon3".into(), "r07".into()));
        // Partial and invalid data.
        let d = t.resolve(ip("192.0.2.1"), Some("lon3"), None);
        assert_eq!(d, Place { dc: p.dc, rack: 0 });
        assert_eq!(
            t.resolve(ip("192.0.2.1"), Some(""), Some("\u{1}")),
            Place::UNKNOWN
        );
        assert_eq!(t.resolve(ip("192.0.2.1"), None, None), Place::UNKNOWN);
        assert!(t.resolve(ip("192.0.2.1"), None, None).is_unknown());
        // Bounded: after the limit, new names are unknown; known ones still resolve.
        t.set_max_dynamic_names(3);
        assert_eq!(t.place_from_url_data(Some("new1"), Some("q")).rack, 0);
        assert_eq!(t.place_from_url_data(Some("zzz"), None), Place::UNKNOWN);
        assert_eq!(t.place_from_url_data(Some("lon3"), Some("r07")), p);
    }

    #[test]
    fn one_source_adds_a_bounded_number_of_url_names() {
        let mut t = Topology::empty();
        t.set_max_names_per_source(4);
        let flood = ip("192.0.2.9");
        let mut places = std::collections::HashSet::new();
        for i in 0..1000 {
            let p = t.resolve(flood, Some(&format!("dc{i}")), Some(&format!("r{i}")));
            places.insert(p);
        }
        // dc0/r0, dc1/r1 and then unknown: four names.
        assert_eq!(t.dynamic_names, 4);
        assert_eq!(places.len(), 3, "{places:?}");
        // The IPv4-mapped form is the same source.
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 9).to_ipv6_mapped());
        assert_eq!(t.resolve(mapped, Some("other"), None), Place::UNKNOWN);
        // Known names still resolve for it; another source still adds its own.
        let p0 = t.resolve(flood, Some("dc0"), Some("r0"));
        assert!(p0.dc != 0 && p0.rack != 0);
        let p = t.resolve(ip("192.0.2.10"), Some("lon3"), Some("r07"));
        assert!(p.dc != 0 && p.rack != 0);
        assert_eq!(t.names_by_source.len(), 2);
    }

    #[test]
    fn an_ipv6_slash_64_rotating_addresses_is_one_source_of_url_names() {
        let mut t = Topology::empty();
        t.set_max_names_per_source(4);
        for i in 0..1000u32 {
            let rotating = ip(&format!("2001:db8:5:5::{:x}", i + 1));
            t.resolve(rotating, Some(&format!("dc{i}")), Some(&format!("r{i}")));
        }
        assert_eq!(t.dynamic_names, 4);
        assert_eq!(t.names_by_source.len(), 1);
    }

    #[test]
    fn many_subnets() {
        let mut text = String::new();
        for i in 0..4000u32 {
            let a = Ipv4Addr::from(0x0a00_0000 | (i << 8));
            text.push_str(&format!(
                "[[subnet]]\ncidr = \"{a}/24\"\ndc = \"dc{}\"\nrack = \"r{i}\"\n",
                i / 1000
            ));
        }
        let t = Topology::from_toml_str(&text, "big").unwrap();
        assert_eq!(t.subnet_count(), 4000);
        let p = t.lookup(ip("10.0.17.200")).unwrap();
        assert_eq!(names(&t, p), ("dc0".into(), "r17".into()));
    }

    proptest! {
        /// Longest-prefix lookup agrees with a linear scan over random networks.
        #[test]
        fn lookup_matches_linear_scan(
            nets in proptest::collection::vec((any::<u32>(), 0u8..=32), 0..40),
            probes in proptest::collection::vec(any::<u32>(), 1..40),
        ) {
            let mut text = String::new();
            let mut list: Vec<(Cidr, String)> = Vec::new();
            for (i, (a, len)) in nets.iter().enumerate() {
                let m = mask(*len, 32) as u32;
                let c = Cidr::parse(&format!("{}/{}", Ipv4Addr::from(a & m), len)).unwrap();
                if list.iter().any(|(x, _)| *x == c) { continue; }
                text.push_str(&format!("[[subnet]]\ncidr = \"{c}\"\ndc = \"d\"\nrack = \"r{i}\"\n"));
                list.push((c, format!("r{i}")));
            }
            let t = Topology::from_toml_str(&text, "p").unwrap();
            for p in probes {
                let a = IpAddr::V4(Ipv4Addr::from(p));
                let want = list.iter().filter(|(c, _)| c.contains(a)).max_by_key(|(c, _)| c.prefix_len()).map(|(_, r)| r.clone());
                let got = t.lookup(a).map(|pl| t.rack_name(pl.rack).unwrap().1.to_string());
                prop_assert_eq!(got, want);
            }
        }

        #[test]
        fn cidr_parse_never_panics(s in ".{0,60}") {
            let _ = Cidr::parse(&s);
        }
    }
}
