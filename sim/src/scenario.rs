//! The scenario file of `ringswarm sim` (issue 14, item 1): a blob, an origin and one or
//! more datacenters of racks of hosts, with their link rates and delays, and the shares
//! of hosts that fail.
//!
//! ```toml
//! seed = 7
//! blob = "100GiB"
//! piece_size = "auto"            # as `create`, or a size
//! origin = { dc = "east", rate = "25Gbit" }
//! [[dc]]
//! name = "east"
//! racks = 40
//! hosts_per_rack = 80
//! host_rate = "25Gbit"           # each host link, both directions
//! rack_uplink = "400Gbit"        # each rack to the dc core, both directions
//! wan_rate = "100Gbit"           # the dc's link to the other dcs, both directions
//! delay = { host = "20us", rack = "100us", wan = "20ms" }   # one-way, per hop
//! [failures]
//! dead = 0.01                    # share of hosts that die at a random moment
//! slow = 0.01                    # share of hosts whose link runs at a quarter of its rate
//! late = 0.0                     # share of hosts that start up to half the bound late
//! ```
//!
//! Every table refuses unknown keys; a syntax error, an unknown key or a value that is not
//! a size, rate or duration names its line and column. `seed` defaults to 0, `piece_size`
//! to `"auto"`, `delay` to zero on every hop and `[failures]` to none. The meaning of the
//! delays (one-way, per link crossed) is in [`crate::net`].
//!
//! The origin is one more host of its datacenter (in its first rack), with links of its
//! own rate; [`Scenario::hosts`] counts the other hosts, the ones that download.

use serde::{Deserialize, Deserializer};

use crate::units::{parse_duration_ns, parse_rate, parse_size};

/// The smallest and largest piece sizes, as `ringswarm create` allows them.
pub const MIN_PIECE_SIZE: u64 = 16 << 10;
/// See [`MIN_PIECE_SIZE`].
pub const MAX_PIECE_SIZE: u64 = 256 << 20;

/// A scenario read from its file and checked ([`Scenario::parse`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub seed: u64,
    /// Bytes.
    pub blob: u64,
    /// Bytes: a power of two, [`MIN_PIECE_SIZE`]..=[`MAX_PIECE_SIZE`]; `"auto"` resolved.
    pub piece_size: u64,
    pub origin: Origin,
    /// At least one; names unique.
    pub dcs: Vec<Dc>,
    pub failures: Failures,
    pub model: Model,
}

/// How the simulation approximates the real thing (`[model]`, every key optional): what
/// is not the fleet's shape but the simulator's grain, and the hosts' settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// Bytes per request in the simulation (the wire's are 16 KiB): `"auto"` is an eighth
    /// of a piece, at least 16 KiB. Larger blocks mean fewer events; a piece is still
    /// fetched from several peers and stolen block by block in the endgame.
    pub block: u64,
    /// The time step in nanoseconds: link rates are shared out again, and an idle
    /// connection with new blocks to send starts sending, on step boundaries.
    pub step_ns: u64,
    /// How often, in nanoseconds, the links are shared out again among all sending
    /// connections (max-min, [`crate::net::Network::allocate`]); between two runs a
    /// connection that starts sending takes what its links have left
    /// ([`crate::net::Network::fill_new`]). A multiple of the step.
    pub reshare_ns: u64,
    /// The most bytes one TCP connection keeps in flight (its window): the sender's socket
    /// buffer, `tcp_wmem`'s maximum (4 MiB on these machines).
    pub tcp_window: u64,
    /// Bytes per second one host hashes (SHA-1 with SHA-NI, about 1.9 GB/s on one core
    /// here); pieces hash in parallel, each taking piece ÷ rate.
    pub hash_rate: u64,
    /// Bytes per second a piece is written at (each write takes piece ÷ rate).
    pub disk_rate: u64,
    /// Upload slots per host (`ringswarm get`'s default,
    /// [`ringswarm_engine::session::DEFAULT_UPLOAD_SLOTS`]).
    pub upload_slots: u32,
    /// The share of a link's bytes that is payload: TCP over Ethernet with a 1500-byte
    /// MTU carries 1448 payload bytes (TCP timestamps on) in a 1514-byte frame (what
    /// `tc` and the veth counters count), 0.956. Links carry payload at this share of
    /// their rate.
    pub payload_share: f64,
    /// Peers a host asks the tracker for (the tracker's default answer: 50).
    pub numwant: u32,
    /// Virtual seconds after which the run stops, finished or not (`"auto"`: 10 × the
    /// lower bound + 120 s).
    pub max_time_ns: Option<u64>,
    /// Virtual time between two timeline samples (`"auto"`: the lower bound ÷ 200, at
    /// least the step).
    pub sample_ns: Option<u64>,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            block: 0,
            step_ns: 1_000_000,
            reshare_ns: 5_000_000,
            tcp_window: 4 << 20,
            hash_rate: 1_900_000_000,
            disk_rate: 4_000_000_000,
            upload_slots: ringswarm_engine::session::DEFAULT_UPLOAD_SLOTS as u32,
            payload_share: 1448.0 / 1514.0,
            numwant: 50,
            max_time_ns: None,
            sample_ns: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Origin {
    /// Index into [`Scenario::dcs`].
    pub dc: usize,
    /// Bytes per second, each direction.
    pub rate: u64,
    /// The origin sits among the hosts of its dc's first rack (`shares_rack = true`);
    /// by default it has a rack of its own (a build host's), linked to the dc core at its
    /// own rate, as in the namespace emulation.
    pub shares_rack: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Dc {
    pub name: String,
    /// ≥ 1.
    pub racks: u32,
    /// ≥ 1.
    pub hosts_per_rack: u32,
    /// Bytes per second, each direction, of each host's link.
    pub host_rate: u64,
    /// Bytes per second, each direction, of each rack's link to the dc core.
    pub rack_uplink: u64,
    /// Bytes per second, each direction, of the dc's link to the other dcs.
    pub wan_rate: u64,
    pub delay: Delay,
}

impl Dc {
    /// The hosts of this dc (the origin not counted).
    pub fn hosts(&self) -> u64 {
        u64::from(self.racks) * u64::from(self.hosts_per_rack)
    }
}

/// One-way delays in nanoseconds of each kind of link of a dc.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delay {
    #[serde(default, deserialize_with = "duration_ns")]
    pub host: u64,
    #[serde(default, deserialize_with = "duration_ns")]
    pub rack: u64,
    #[serde(default, deserialize_with = "duration_ns")]
    pub wan: u64,
}

/// Shares of the hosts (each in [0, 1]) that fail; what each failure means is in the
/// scenario example above. The driver draws which hosts from the seed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failures {
    #[serde(default)]
    pub dead: f64,
    #[serde(default)]
    pub slow: f64,
    #[serde(default)]
    pub late: f64,
}

/// Why a scenario was refused: one line.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScenarioError {
    /// TOML syntax, an unknown or missing key, a value of the wrong type or unit.
    #[error("line {line} column {column}: {message}")]
    At {
        line: usize,
        column: usize,
        message: String,
    },
    /// The same, where the TOML library knew no place.
    #[error("{0}")]
    Toml(String),
    /// The values parse but do not make a fleet.
    #[error("{0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    #[serde(default)]
    seed: u64,
    #[serde(deserialize_with = "size")]
    blob: u64,
    #[serde(default)]
    piece_size: RawPieceSize,
    origin: RawOrigin,
    #[serde(default)]
    dc: Vec<RawDc>,
    #[serde(default)]
    failures: Failures,
    #[serde(default)]
    model: RawModel,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    #[serde(default)]
    block: RawAuto<SizeValue>,
    #[serde(default, deserialize_with = "opt_duration_ns")]
    step: Option<u64>,
    #[serde(default, deserialize_with = "opt_duration_ns")]
    reshare: Option<u64>,
    #[serde(default, deserialize_with = "opt_size")]
    tcp_window: Option<u64>,
    #[serde(default, deserialize_with = "opt_rate")]
    hash_rate: Option<u64>,
    #[serde(default, deserialize_with = "opt_rate")]
    disk_rate: Option<u64>,
    upload_slots: Option<u32>,
    payload_share: Option<f64>,
    numwant: Option<u32>,
    #[serde(default)]
    max_time: RawAuto<DurationValue>,
    #[serde(default)]
    sample: RawAuto<DurationValue>,
}

/// A value or `"auto"` (None).
struct RawAuto<T>(Option<u64>, std::marker::PhantomData<T>);

impl<T> Default for RawAuto<T> {
    fn default() -> Self {
        RawAuto(None, std::marker::PhantomData)
    }
}

/// How a [`RawAuto`] reads its value.
trait AutoValue {
    fn parse(s: &str) -> Result<u64, String>;
}
struct SizeValue;
struct DurationValue;
impl AutoValue for SizeValue {
    fn parse(s: &str) -> Result<u64, String> {
        parse_size(s)
    }
}
impl AutoValue for DurationValue {
    fn parse(s: &str) -> Result<u64, String> {
        parse_duration_ns(s)
    }
}

impl<'de, T: AutoValue> Deserialize<'de> for RawAuto<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(Self::default());
        }
        let n = T::parse(&s).map_err(|e| serde::de::Error::custom(format!("{e}, or auto")))?;
        Ok(RawAuto(Some(n), std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrigin {
    dc: String,
    #[serde(deserialize_with = "rate")]
    rate: u64,
    #[serde(default)]
    shares_rack: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDc {
    name: String,
    racks: u32,
    hosts_per_rack: u32,
    #[serde(deserialize_with = "rate")]
    host_rate: u64,
    #[serde(deserialize_with = "rate")]
    rack_uplink: u64,
    #[serde(deserialize_with = "rate")]
    wan_rate: u64,
    #[serde(default)]
    delay: Delay,
}

/// `None`: "auto".
#[derive(Default)]
struct RawPieceSize(Option<u64>);

impl<'de> Deserialize<'de> for RawPieceSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(Self(None));
        }
        let n = parse_size(&s).map_err(|e| serde::de::Error::custom(format!("{e}, or auto")))?;
        if !n.is_power_of_two() || !(MIN_PIECE_SIZE..=MAX_PIECE_SIZE).contains(&n) {
            return Err(serde::de::Error::custom(format!(
                "piece size `{s}` ({n} bytes) is not a power of two from 16KiB to 256MiB"
            )));
        }
        Ok(Self(Some(n)))
    }
}

// The value parsers run inside the TOML deserializer, so their errors carry its span.
fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    parse_size(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn rate<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    parse_rate(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn duration_ns<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    parse_duration_ns(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn opt_duration_ns<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    duration_ns(d).map(Some)
}

fn opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    size(d).map(Some)
}

fn opt_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    rate(d).map(Some)
}

/// The piece size `ringswarm create --piece-size auto` chooses for `total` bytes
/// (`engine::create::auto_piece_size`, the same rule): about 1 024 pieces — the total
/// ÷ 1 024 rounded up to a power of two — but no smaller than 1 MiB and no larger than
/// 16 MiB.
pub fn auto_piece_size(total: u64) -> u64 {
    ringswarm_engine::create::auto_piece_size(total)
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

impl Scenario {
    /// Reads and checks a scenario from the text of its file.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| {
            let message = e.message().trim_end().replace('\n', " ");
            match e.span() {
                Some(span) => {
                    let (line, column) = line_col(text, span.start);
                    ScenarioError::At {
                        line,
                        column,
                        message,
                    }
                }
                None => ScenarioError::Toml(message),
            }
        })?;
        Self::check(raw)
    }

    fn check(raw: RawScenario) -> Result<Self, ScenarioError> {
        let invalid = |m: String| Err(ScenarioError::Invalid(m));
        if raw.dc.is_empty() {
            return invalid("no datacenter: add at least one [[dc]] table".into());
        }
        let mut dcs = Vec::with_capacity(raw.dc.len());
        for d in raw.dc {
            if d.name.is_empty() {
                return invalid("a [[dc]] has an empty name".into());
            }
            if dcs.iter().any(|o: &Dc| o.name == d.name) {
                return invalid(format!("dc `{}` is named twice", d.name));
            }
            if d.racks == 0 {
                return invalid(format!("dc `{}`: racks must be at least 1", d.name));
            }
            if d.hosts_per_rack == 0 {
                return invalid(format!(
                    "dc `{}`: hosts_per_rack must be at least 1",
                    d.name
                ));
            }
            dcs.push(Dc {
                name: d.name,
                racks: d.racks,
                hosts_per_rack: d.hosts_per_rack,
                host_rate: d.host_rate,
                rack_uplink: d.rack_uplink,
                wan_rate: d.wan_rate,
                delay: d.delay,
            });
        }
        let Some(origin_dc) = dcs.iter().position(|d| d.name == raw.origin.dc) else {
            let names: Vec<&str> = dcs.iter().map(|d| d.name.as_str()).collect();
            return invalid(format!(
                "the origin's dc `{}` is not a [[dc]] (there are: {})",
                raw.origin.dc,
                names.join(", ")
            ));
        };
        let f = raw.failures;
        for (name, share) in [("dead", f.dead), ("slow", f.slow), ("late", f.late)] {
            if !(0.0..=1.0).contains(&share) {
                return invalid(format!(
                    "failures.{name} = {share} is not a share between 0 and 1"
                ));
            }
        }
        if raw.blob == 0 {
            return invalid("blob must not be empty".into());
        }
        let piece_size = raw
            .piece_size
            .0
            .unwrap_or_else(|| auto_piece_size(raw.blob));
        let model = Self::check_model(raw.model, piece_size)?;
        Ok(Self {
            seed: raw.seed,
            blob: raw.blob,
            piece_size,
            origin: Origin {
                dc: origin_dc,
                rate: raw.origin.rate,
                shares_rack: raw.origin.shares_rack,
            },
            dcs,
            failures: f,
            model,
        })
    }

    fn check_model(raw: RawModel, piece_size: u64) -> Result<Model, ScenarioError> {
        let invalid = |m: String| Err(ScenarioError::Invalid(m));
        let d = Model::default();
        let block = raw.block.0.unwrap_or((piece_size / 8).max(MIN_PIECE_SIZE));
        if block == 0 || block > piece_size || !piece_size.is_multiple_of(block) {
            return invalid(format!(
                "model.block = {block} bytes must divide the piece size ({piece_size} bytes)"
            ));
        }
        let step_ns = raw.step.unwrap_or(d.step_ns);
        if !(1_000..=1_000_000_000).contains(&step_ns) {
            return invalid(format!(
                "model.step = {step_ns} ns is not between 1us and 1s"
            ));
        }
        let reshare_ns = raw.reshare.unwrap_or(d.reshare_ns.max(step_ns));
        if reshare_ns < step_ns || reshare_ns > 1_000_000_000 {
            return invalid(format!(
                "model.reshare = {reshare_ns} ns is not between the step ({step_ns} ns) and 1s"
            ));
        }
        let upload_slots = raw.upload_slots.unwrap_or(d.upload_slots);
        if upload_slots == 0 {
            return invalid("model.upload_slots must be at least 1".into());
        }
        let payload_share = raw.payload_share.unwrap_or(d.payload_share);
        if !(payload_share > 0.0 && payload_share <= 1.0) {
            return invalid(format!(
                "model.payload_share = {payload_share} is not a share in (0, 1]"
            ));
        }
        let numwant = raw.numwant.unwrap_or(d.numwant);
        if numwant == 0 {
            return invalid("model.numwant must be at least 1".into());
        }
        Ok(Model {
            block,
            step_ns,
            reshare_ns,
            tcp_window: raw.tcp_window.unwrap_or(d.tcp_window).max(1),
            hash_rate: raw.hash_rate.unwrap_or(d.hash_rate),
            disk_rate: raw.disk_rate.unwrap_or(d.disk_rate),
            upload_slots,
            payload_share,
            numwant,
            max_time_ns: raw.max_time.0,
            sample_ns: raw.sample.0,
        })
    }

    /// The hosts that download, in all dcs (the origin not counted).
    pub fn hosts(&self) -> u64 {
        self.dcs.iter().map(Dc::hosts).sum()
    }

    /// The pieces of the blob (the last one may be short).
    pub fn pieces(&self) -> u64 {
        self.blob.div_ceil(self.piece_size)
    }

    /// The lower bound on the last host's time, in seconds: the largest of
    ///
    /// - blob ÷ host rate, for the slowest `host_rate` of any dc (each host must take in the
    ///   whole blob over its own down link);
    /// - blob ÷ origin rate (every byte leaves the origin at least once);
    /// - blob ÷ WAN rate, for each dc other than the origin's (every byte enters that dc at
    ///   least once over its WAN link).
    ///
    /// Delays, piece granularity, rack uplinks and failures are not counted: a rack uplink
    /// never binds when each piece enters each rack once, slow hosts are excused from the
    /// targets, and a delay adds milliseconds to a bound of seconds. The targets of issue 14
    /// are multiples of this number.
    pub fn lower_bound(&self) -> f64 {
        let blob = self.blob as f64;
        let mut bound = blob / self.origin.rate as f64;
        for (i, d) in self.dcs.iter().enumerate() {
            bound = bound.max(blob / d.host_rate as f64);
            if i != self.origin.dc {
                bound = bound.max(blob / d.wan_rate as f64);
            }
        }
        bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14's example, as written there.
    const ISSUE_EXAMPLE: &str = r#"
seed = 7
blob = "100GiB"
piece_size = "auto"            # as `create`, or a size
origin = { dc = "east", rate = "25Gbit" }
[[dc]]
name = "east"
racks = 40
hosts_per_rack = 80
host_rate = "25Gbit"           # each host link, both directions
rack_uplink = "400Gbit"        # each rack to the dc core, both directions
wan_rate = "100Gbit"           # the dc's link to the other dcs, both directions
delay = { host = "20us", rack = "100us", wan = "20ms" }   # one-way, per hop
[failures]
dead = 0.01                    # share of hosts that die at a random moment
slow = 0.01                    # share of hosts whose link runs at a quarter of its rate
late = 0.0                     # share of hosts that start up to half the bound late
"#;

    fn err(text: &str) -> String {
        Scenario::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_issue_example_parses() {
        let s = Scenario::parse(ISSUE_EXAMPLE).unwrap();
        assert_eq!(s.seed, 7);
        assert_eq!(s.blob, 100 << 30);
        assert_eq!(
            s.piece_size,
            16 << 20,
            "auto: 100 GiB / 1024 = 100 MiB, capped at 16"
        );
        assert_eq!(s.pieces(), 6400);
        assert_eq!(
            s.origin,
            Origin {
                dc: 0,
                rate: 3_125_000_000,
                shares_rack: false,
            }
        );
        assert_eq!(s.dcs.len(), 1);
        let d = &s.dcs[0];
        assert_eq!(
            (d.name.as_str(), d.racks, d.hosts_per_rack),
            ("east", 40, 80)
        );
        assert_eq!(d.host_rate, 3_125_000_000);
        assert_eq!(d.rack_uplink, 50_000_000_000);
        assert_eq!(d.wan_rate, 12_500_000_000);
        assert_eq!(
            d.delay,
            Delay {
                host: 20_000,
                rack: 100_000,
                wan: 20_000_000
            }
        );
        assert_eq!(
            s.failures,
            Failures {
                dead: 0.01,
                slow: 0.01,
                late: 0.0
            }
        );
        assert_eq!(s.hosts(), 3200);
    }

    #[test]
    fn the_example_file_parses() {
        let text = include_str!("../examples/fleet-3dc.toml");
        let s = Scenario::parse(text).unwrap();
        assert_eq!(s.dcs.len(), 3);
        assert_eq!(s.hosts(), 9600);
        assert!(text.contains(ISSUE_EXAMPLE.lines().nth(13).unwrap()));
    }

    #[test]
    fn defaults() {
        let s = Scenario::parse(
            r#"
blob = "3MiB"
origin = { dc = "a", rate = "1Gbit" }
[[dc]]
name = "a"
racks = 1
hosts_per_rack = 2
host_rate = "1Gbit"
rack_uplink = "1Gbit"
wan_rate = "1Gbit"
"#,
        )
        .unwrap();
        assert_eq!(s.seed, 0);
        assert_eq!(s.piece_size, 1 << 20);
        assert_eq!(s.pieces(), 3);
        assert_eq!(s.dcs[0].delay, Delay::default());
        assert_eq!(s.failures, Failures::default());
    }

    #[test]
    fn unknown_keys_name_their_line_and_column() {
        let e = err(&ISSUE_EXAMPLE.replace("racks = 40", "racks = 40\n  rakcs = 3"));
        assert!(e.starts_with("line 9 column 3:"), "{e}");
        assert!(e.contains("rakcs"), "{e}");
        let e = err(&ISSUE_EXAMPLE.replace("late = 0.0", "late = 0.0\nlost = 0.1"));
        assert!(
            e.starts_with("line 18 column 1:") && e.contains("lost"),
            "{e}"
        );
        let e = err(&format!("colour = \"red\"\n{ISSUE_EXAMPLE}"));
        assert!(e.starts_with("line 1 column 1:"), "{e}");
        let e = err(&ISSUE_EXAMPLE.replace("wan = \"20ms\"", "wan = \"20ms\", lan = \"1us\""));
        assert!(e.starts_with("line 13 column ") && e.contains("lan"), "{e}");
    }

    #[test]
    fn bad_values_name_their_line() {
        let e = err(&ISSUE_EXAMPLE.replace("\"25Gbit\"           #", "\"25 parsecs\" #"));
        assert!(
            e.starts_with("line 10 column 13:") && e.contains("25 parsecs"),
            "{e}"
        );
        let e = err(&ISSUE_EXAMPLE.replace("\"100us\"", "\"100\""));
        assert!(
            e.starts_with("line 13 column ") && e.contains("duration"),
            "{e}"
        );
        let e = err(&ISSUE_EXAMPLE.replace("\"auto\"", "\"3MiB\""));
        assert!(
            e.starts_with("line 4 column 14:") && e.contains("power of two"),
            "{e}"
        );
        for size in ["8KiB", "512MiB", "1000"] {
            let e = err(&ISSUE_EXAMPLE.replace("\"auto\"", &format!("\"{size}\"")));
            assert!(e.starts_with("line 4 column 14:"), "{e}");
        }
        let e = err(&ISSUE_EXAMPLE.replace("racks = 40", "racks = -1"));
        assert!(e.starts_with("line 8 column 9:"), "{e}");
        let e = err("blob = [");
        assert!(e.starts_with("line 1 column "), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn piece_sizes_at_the_limits() {
        for (text, n) in [
            ("16KiB", 16 << 10),
            ("256MiB", 256 << 20),
            ("AUTO", 16 << 20),
        ] {
            let s = Scenario::parse(&ISSUE_EXAMPLE.replace("\"auto\"", &format!("\"{text}\"")))
                .unwrap();
            assert_eq!(s.piece_size, n, "{text}");
        }
    }

    #[test]
    fn invalid_fleets() {
        let no_dc = "blob = \"1GiB\"\norigin = { dc = \"a\", rate = \"1Gbit\" }\n";
        assert_eq!(err(no_dc), "no datacenter: add at least one [[dc]] table");
        assert_eq!(
            err(&ISSUE_EXAMPLE.replace("dc = \"east\"", "dc = \"west\"")),
            "the origin's dc `west` is not a [[dc]] (there are: east)"
        );
        assert_eq!(
            err(&ISSUE_EXAMPLE.replace("racks = 40", "racks = 0")),
            "dc `east`: racks must be at least 1"
        );
        assert_eq!(
            err(&ISSUE_EXAMPLE.replace("hosts_per_rack = 80", "hosts_per_rack = 0")),
            "dc `east`: hosts_per_rack must be at least 1"
        );
        assert_eq!(
            err(&ISSUE_EXAMPLE.replace("slow = 0.01", "slow = 1.5")),
            "failures.slow = 1.5 is not a share between 0 and 1"
        );
        assert_eq!(
            err(&ISSUE_EXAMPLE.replace("dead = 0.01", "dead = -0.1")),
            "failures.dead = -0.1 is not a share between 0 and 1"
        );
        assert!(err(&ISSUE_EXAMPLE.replace("late = 0.0", "late = nan")).contains("late"));
        assert_eq!(
            err(&ISSUE_EXAMPLE.replace("\"100GiB\"", "\"0\"")),
            "blob must not be empty"
        );
        let twice = ISSUE_EXAMPLE.replace("[failures]", &two_dcs("east", "20Gbit"));
        assert_eq!(err(&twice), "dc `east` is named twice");
    }

    /// A `[[dc]]` table, for appending before `[failures]`.
    fn two_dcs(name: &str, wan: &str) -> String {
        format!(
            "[[dc]]\nname = \"{name}\"\nracks = 2\nhosts_per_rack = 3\nhost_rate = \"10Gbit\"\n\
             rack_uplink = \"40Gbit\"\nwan_rate = \"{wan}\"\n[failures]"
        )
    }

    /// The figures `ringswarm create` gives (engine/src/create.rs's own test states the
    /// same ones): 1 MiB up to 1 GiB, then doubling with the blob, 16 MiB from 8 GiB on.
    #[test]
    fn auto_piece_sizes_are_creates() {
        assert_eq!(auto_piece_size(0), 1 << 20);
        assert_eq!(auto_piece_size(1), 1 << 20);
        assert_eq!(auto_piece_size(256 << 20), 1 << 20);
        assert_eq!(auto_piece_size(1 << 30), 1 << 20);
        assert_eq!(auto_piece_size((1 << 30) + 1), 2 << 20);
        assert_eq!(auto_piece_size(4 << 30), 4 << 20);
        assert_eq!(auto_piece_size(8 << 30), 8 << 20);
        assert_eq!(auto_piece_size((8 << 30) + 1), 16 << 20);
        assert_eq!(auto_piece_size(100 << 30), 16 << 20);
        assert_eq!(auto_piece_size(1 << 40), 16 << 20);
    }

    #[test]
    fn lower_bound_of_one_dc_is_the_host_or_origin_link() {
        let s = Scenario::parse(ISSUE_EXAMPLE).unwrap();
        // 100 GiB at 25 Gbit/s (3.125e9 B/s): 107374182400 / 3.125e9 = 34.359738368 s.
        // One dc: its WAN is not in the bound.
        assert!(
            (s.lower_bound() - 34.359738368).abs() < 1e-9,
            "{}",
            s.lower_bound()
        );
        let slow_origin = ISSUE_EXAMPLE.replace("rate = \"25Gbit\" }", "rate = \"10Gbit\" }");
        let s = Scenario::parse(&slow_origin).unwrap();
        assert!(
            (s.lower_bound() - 85.89934592).abs() < 1e-9,
            "{}",
            s.lower_bound()
        );
        let tiny_wan = ISSUE_EXAMPLE.replace("\"100Gbit\"", "\"1Gbit\"");
        let s = Scenario::parse(&tiny_wan).unwrap();
        assert!(
            (s.lower_bound() - 34.359738368).abs() < 1e-9,
            "origin's own WAN not counted"
        );
    }

    #[test]
    fn lower_bound_counts_other_dcs_wan_and_slowest_host() {
        // A second dc with 10 Gbit hosts and a 20 Gbit WAN: host 100 GiB / 1.25e9 B/s.
        let two = ISSUE_EXAMPLE.replace("[failures]", &two_dcs("west", "20Gbit"));
        let s = Scenario::parse(&two).unwrap();
        assert_eq!(s.hosts(), 3206);
        assert!(
            (s.lower_bound() - 85.89934592).abs() < 1e-9,
            "{}",
            s.lower_bound()
        );
        // Its WAN at 5 Gbit (6.25e8 B/s) binds: 171.79869184 s.
        let two = ISSUE_EXAMPLE.replace("[failures]", &two_dcs("west", "5Gbit"));
        let s = Scenario::parse(&two).unwrap();
        assert!(
            (s.lower_bound() - 171.79869184).abs() < 1e-9,
            "{}",
            s.lower_bound()
        );
    }
}
