//! The release feed: the signed list of live releases that the build machine publishes
//! and every fleet agent polls. Pure: no I/O, no clocks.
//!
//! One file, `feed.json`, so any static web server can serve it and a reader never sees
//! a body from one publish with the signature of another:
//!
//! ```json
//! {"format": "ringswarm-feed/2", "body": "<base64>", "signature": "<base64>"}
//! ```
//!
//! `signature` is ed25519 over the exact bytes of the decoded `body`, which is JSON:
//! `{"sequence": N, "signed_ms": T, "expires_ms": E, "releases": [{"name", "version",
//! "info_hash", "size", "published_ms", "metainfo"}]}` with `metainfo` the base64 of the
//! .torrent file. Signing the bytes rather than a re-serialisation keeps verification
//! independent of JSON formatting.
//!
//! Decisions:
//! - `sequence` grows with every publish; an agent refuses a feed older than the newest it
//!   accepted, so a replayed (validly signed) old feed cannot roll the fleet back.
//! - A feed expires (`expires_ms`, `publish --valid-for`): an agent never activates from an
//!   expired feed, so a replayed old feed cannot hold a *new* agent (which has no sequence
//!   to compare with) on an old release for longer than the validity. A host whose clock is
//!   behind the build machine's accepts a feed a little longer: [`allowed_skew_ms`].
//! - Format 1 feeds (signed by older versions) carry no expiry: they are read (the origin
//!   serves them, `publish` extends them into format 2) but [`Feed::check_fresh`] refuses
//!   them as expired, with a message that says to publish again. Older agents refuse format
//!   2 by its `format` field: upgrade the agents first; they keep their releases meanwhile.
//! - A release's `info_hash` must be the SHA-1 of its metainfo's info dictionary and `size`
//!   its total length: the signature then covers the data itself, through the piece hashes.
//! - Names and versions become directory names on every host, so they are checked like
//!   torrent path components and limited to a conservative character set.
//! - The fleet's topology (the TOML of [`crate::topology`], CIDR → dc/rack) may ride in the
//!   body as `"topology": "<toml text>"`, so agents need no file of their own and the
//!   signature covers it. The field is optional: a body without it reads as before, and a
//!   feed published without a topology is byte-for-byte what older versions signed. Older
//!   agents refuse a body *with* it (unknown field): upgrade the agents before publishing a
//!   topology. It is kept as the operator's text (not re-serialised), at most
//!   [`MAX_TOPOLOGY_BYTES`], and must parse: a feed whose topology does not is refused
//!   whole, like a feed with a bad release.

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::metainfo::Metainfo;
use crate::topology::Topology;
pub use crate::topology::MAX_TOPOLOGY_BYTES;

/// The `format` of the envelope this code writes and reads.
pub const FORMAT: &str = "ringswarm-feed/2";
/// The format older versions wrote: no expiry, read but never fresh.
pub const FORMAT_V1: &str = "ringswarm-feed/1";
/// Most clock difference between the build machine and a host that is forgiven past a
/// feed's expiry (a tenth of the feed's validity, when that is shorter).
pub const MAX_CLOCK_SKEW_MS: u64 = 60_000;
/// A feed larger than this is refused before it is parsed.
pub const MAX_FEED_BYTES: usize = 64 << 20;
/// Longest release name or version.
pub const MAX_LABEL: usize = 128;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// What is wrong with a feed or a key, in one line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FeedError {
    #[error("feed is {0} bytes, more than the {MAX_FEED_BYTES} allowed")]
    TooLarge(usize),
    #[error("feed is not a ringswarm feed: {0}")]
    Malformed(String),
    #[error("feed format `{0}` is not {FORMAT}")]
    Format(String),
    #[error("feed signature does not verify with the fleet's public key")]
    BadSignature,
    #[error("feed release {index}: {reason}")]
    BadRelease { index: usize, reason: String },
    #[error("{0}")]
    BadTopology(String),
    #[error("key: {0}")]
    BadKey(String),
    #[error(
        "feed expired: sequence {sequence} was valid until {expires_ms} ms since the epoch, \
         {} s ago (publish again, or check this host's clock)",
        ago_ms / 1000
    )]
    Expired {
        sequence: u64,
        expires_ms: u64,
        ago_ms: u64,
    },
    #[error(
        "feed expired: sequence {0} carries no expiry (format {FORMAT_V1}, signed by an older \
         ringswarm); publish again with this version"
    )]
    NoExpiry(u64),
}

/// One published blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    pub name: String,
    pub version: String,
    pub info_hash: [u8; 20],
    /// Bytes of data (the torrent's total length).
    pub size: u64,
    /// When it was published, in ms since the Unix epoch (for publish-to-activation time).
    pub published_ms: u64,
    /// The .torrent file.
    pub metainfo: Vec<u8>,
}

impl Release {
    /// Builds a release from a torrent file's bytes (checked like a received one).
    pub fn new(
        name: &str,
        version: &str,
        metainfo: Vec<u8>,
        published_ms: u64,
    ) -> Result<Release, FeedError> {
        let meta = Metainfo::from_bytes(&metainfo)
            .map_err(|e| FeedError::Malformed(format!("metainfo: {e}")))?;
        let release = Release {
            name: name.to_owned(),
            version: version.to_owned(),
            info_hash: meta.info_hash,
            size: meta.info.total_length,
            published_ms,
            metainfo,
        };
        release
            .check()
            .map_err(|reason| FeedError::BadRelease { index: 0, reason })?;
        Ok(release)
    }

    /// The parsed metainfo (checked when the feed was decoded).
    pub fn parse_metainfo(&self) -> Result<Metainfo, FeedError> {
        Metainfo::from_bytes(&self.metainfo)
            .map_err(|e| FeedError::Malformed(format!("metainfo of {}: {e}", self.label())))
    }

    /// `name version`, for messages.
    pub fn label(&self) -> String {
        format!("{} {}", self.name, self.version)
    }

    fn check(&self) -> Result<(), String> {
        check_label(&self.name, "name")?;
        check_label(&self.version, "version")?;
        let meta = Metainfo::from_bytes(&self.metainfo).map_err(|e| format!("metainfo: {e}"))?;
        if meta.info_hash != self.info_hash {
            return Err(format!(
                "info_hash {} is not the metainfo's ({})",
                crate::hex(&self.info_hash),
                crate::hex(&meta.info_hash)
            ));
        }
        if meta.info.total_length != self.size {
            return Err(format!(
                "size {} is not the metainfo's total length {}",
                self.size, meta.info.total_length
            ));
        }
        Ok(())
    }
}

/// Checks a release name or version: it names a directory on every host.
pub fn check_label(label: &str, what: &str) -> Result<(), String> {
    if label.is_empty() || label.len() > MAX_LABEL {
        return Err(format!("{what} must be 1 to {MAX_LABEL} characters"));
    }
    if label.starts_with('.') {
        return Err(format!("{what} `{label}` must not start with a dot"));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+')))
    {
        return Err(format!(
            "{what} `{}` has `{}`; use letters, digits and - _ . +",
            label.escape_default(),
            c.escape_default()
        ));
    }
    Ok(())
}

/// The signed list of live releases.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Feed {
    pub sequence: u64,
    /// When it was signed, in ms since the Unix epoch (0 in a format 1 feed).
    pub signed_ms: u64,
    /// When it stops being fresh (None: a format 1 feed, never fresh).
    pub expires_ms: Option<u64>,
    pub releases: Vec<Release>,
    /// The fleet's topology, as the operator wrote it (TOML, see [`crate::topology`]);
    /// checked to parse when the feed is decoded.
    pub topology: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    format: String,
    body: String,
    signature: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    sequence: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signed_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_ms: Option<u64>,
    releases: Vec<BodyRelease>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    topology: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BodyRelease {
    name: String,
    version: String,
    info_hash: String,
    size: u64,
    published_ms: u64,
    metainfo: String,
}

impl Feed {
    /// The newest release of each name (the last listed wins), in feed order.
    pub fn newest_per_name(&self) -> Vec<&Release> {
        let mut out: Vec<&Release> = Vec::new();
        for r in &self.releases {
            match out.iter_mut().find(|o| o.name == r.name) {
                Some(slot) => *slot = r,
                None => out.push(r),
            }
        }
        out
    }

    /// Whether an agent may act on the feed at `now_ms`: an expired feed (or one without
    /// an expiry) is an error saying so.
    pub fn check_fresh(&self, now_ms: u64) -> Result<(), FeedError> {
        let Some(expires_ms) = self.expires_ms else {
            return Err(FeedError::NoExpiry(self.sequence));
        };
        let skew = allowed_skew_ms(self.signed_ms, expires_ms);
        if now_ms > expires_ms.saturating_add(skew) {
            return Err(FeedError::Expired {
                sequence: self.sequence,
                expires_ms,
                ago_ms: now_ms - expires_ms,
            });
        }
        Ok(())
    }

    /// Signs the feed (format 2, with `signed_ms` and `expires_ms`; a feed without an
    /// expiry is signed as expiring when signed): the bytes of `feed.json`.
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        let body = Body {
            sequence: self.sequence,
            signed_ms: Some(self.signed_ms),
            expires_ms: Some(self.expires_ms.unwrap_or(self.signed_ms)),
            releases: self
                .releases
                .iter()
                .map(|r| BodyRelease {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    info_hash: crate::hex(&r.info_hash),
                    size: r.size,
                    published_ms: r.published_ms,
                    metainfo: B64.encode(&r.metainfo),
                })
                .collect(),
            topology: self.topology.clone(),
        };
        // Serialising plain strings and integers cannot fail.
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let signature = key.sign(&body);
        let envelope = Envelope {
            format: FORMAT.to_owned(),
            body: B64.encode(&body),
            signature: B64.encode(signature.to_bytes()),
        };
        let mut out = serde_json::to_vec_pretty(&envelope).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// The parsed topology, if the feed carries one (it parsed when the feed was decoded;
    /// a feed built in memory is checked here).
    pub fn parsed_topology(&self) -> Result<Option<Topology>, FeedError> {
        self.topology.as_deref().map(parse_topology).transpose()
    }

    /// Checks the signature, then every release. Nothing of an unsigned feed is parsed
    /// beyond the envelope.
    pub fn verify(bytes: &[u8], key: &VerifyingKey) -> Result<Feed, FeedError> {
        let (format, body) = open_envelope(bytes, Some(key))?;
        parse_body(&body, format)
    }

    /// Reads a feed without checking its signature: for the origin, which reads the feed
    /// it wrote itself to learn what to seed.
    pub fn read_unverified(bytes: &[u8]) -> Result<Feed, FeedError> {
        Feed::read_unverified_with_topology(bytes).map(|(feed, _)| feed)
    }

    /// [`Feed::read_unverified`], with the topology as parsed while checking the feed (so a
    /// caller that uses it does not parse it again).
    pub fn read_unverified_with_topology(
        bytes: &[u8],
    ) -> Result<(Feed, Option<Topology>), FeedError> {
        let (format, body) = open_envelope(bytes, None)?;
        parse_body_with_topology(&body, format)
    }
}

/// How long past its expiry a feed is still taken, for clocks that disagree: a tenth of
/// the feed's validity, at most [`MAX_CLOCK_SKEW_MS`] (a feed made to live 2 s is meant
/// to be strict; one made to live a week forgives a minute).
pub fn allowed_skew_ms(signed_ms: u64, expires_ms: u64) -> u64 {
    (expires_ms.saturating_sub(signed_ms) / 10).min(MAX_CLOCK_SKEW_MS)
}

/// The envelope's format version.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Version {
    V1,
    V2,
}

fn malformed(e: impl std::fmt::Display) -> FeedError {
    FeedError::Malformed(e.to_string())
}

fn open_envelope(
    bytes: &[u8],
    key: Option<&VerifyingKey>,
) -> Result<(Version, Vec<u8>), FeedError> {
    if bytes.len() > MAX_FEED_BYTES {
        return Err(FeedError::TooLarge(bytes.len()));
    }
    let envelope: Envelope = serde_json::from_slice(bytes).map_err(malformed)?;
    let version = match envelope.format.as_str() {
        FORMAT => Version::V2,
        FORMAT_V1 => Version::V1,
        _ => return Err(FeedError::Format(envelope.format)),
    };
    let body = B64
        .decode(envelope.body.as_bytes())
        .map_err(|e| malformed(format!("body: {e}")))?;
    if let Some(key) = key {
        let sig = B64
            .decode(envelope.signature.as_bytes())
            .map_err(|e| malformed(format!("signature: {e}")))?;
        let sig: [u8; 64] = sig
            .try_into()
            .map_err(|_| malformed("signature: not 64 bytes"))?;
        key.verify_strict(&body, &Signature::from_bytes(&sig))
            .map_err(|_| FeedError::BadSignature)?;
    }
    Ok((version, body))
}

fn parse_body(body: &[u8], version: Version) -> Result<Feed, FeedError> {
    parse_body_with_topology(body, version).map(|(feed, _)| feed)
}

fn parse_body_with_topology(
    body: &[u8],
    version: Version,
) -> Result<(Feed, Option<Topology>), FeedError> {
    let body: Body = serde_json::from_slice(body).map_err(|e| malformed(format!("body: {e}")))?;
    let (signed_ms, expires_ms) = match version {
        // Whatever a format 1 body says, it is read as having no expiry.
        Version::V1 => (0, None),
        Version::V2 => match (body.signed_ms, body.expires_ms) {
            (Some(s), Some(e)) => (s, Some(e)),
            _ => return Err(malformed("body: no signed_ms or expires_ms")),
        },
    };
    let mut releases = Vec::with_capacity(body.releases.len());
    for (index, r) in body.releases.into_iter().enumerate() {
        let bad = |reason: String| FeedError::BadRelease { index, reason };
        let info_hash =
            parse_hash(&r.info_hash).ok_or_else(|| bad("info_hash is not 40 hex digits".into()))?;
        let metainfo = B64
            .decode(r.metainfo.as_bytes())
            .map_err(|e| bad(format!("metainfo: {e}")))?;
        let release = Release {
            name: r.name,
            version: r.version,
            info_hash,
            size: r.size,
            published_ms: r.published_ms,
            metainfo,
        };
        release.check().map_err(bad)?;
        if releases
            .iter()
            .any(|o: &Release| o.name == release.name && o.version == release.version)
        {
            return Err(bad(format!("{} is listed twice", release.label())));
        }
        releases.push(release);
    }
    let topology = body.topology.as_deref().map(parse_topology).transpose()?;
    Ok((
        Feed {
            sequence: body.sequence,
            signed_ms,
            expires_ms,
            releases,
            topology: body.topology,
        },
        topology,
    ))
}

/// Parses the feed's topology text; errors say what is wrong in it.
pub fn parse_topology(text: &str) -> Result<Topology, FeedError> {
    Topology::from_toml_str(text, "in the feed").map_err(|e| FeedError::BadTopology(e.to_string()))
}

/// Parses 40 hex digits.
pub fn parse_hash(s: &str) -> Option<[u8; 20]> {
    if s.len() != 40 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

// ---- keys ------------------------------------------------------------------------------

/// First line of a secret key file; the base64 seed follows on the second.
const SECRET_HEADER: &str = "ringswarm ed25519 secret key";

/// The text of a secret key file (keep it 0600).
pub fn encode_secret_key(key: &SigningKey) -> String {
    format!("{SECRET_HEADER}\n{}\n", B64.encode(key.to_bytes()))
}

/// The text of a public key: one base64 line, usable as a file or inline.
pub fn encode_public_key(key: &VerifyingKey) -> String {
    format!("{}\n", B64.encode(key.to_bytes()))
}

pub fn decode_secret_key(text: &str) -> Result<SigningKey, FeedError> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some(SECRET_HEADER) {
        return Err(FeedError::BadKey(format!(
            "not a secret key (the first line is not `{SECRET_HEADER}`)"
        )));
    }
    let seed = decode_32(lines.next().unwrap_or_default())?;
    Ok(SigningKey::from_bytes(&seed))
}

pub fn decode_public_key(text: &str) -> Result<VerifyingKey, FeedError> {
    let text = text.trim();
    if text.starts_with(SECRET_HEADER) {
        return Err(FeedError::BadKey(
            "this is the secret key; give the public one (.pub)".into(),
        ));
    }
    let bytes = decode_32(text)?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| FeedError::BadKey("not a valid ed25519 public key".into()))
}

fn decode_32(b64: &str) -> Result<[u8; 32], FeedError> {
    let bytes = B64
        .decode(b64.trim().as_bytes())
        .map_err(|e| FeedError::BadKey(format!("not base64: {e}")))?;
    bytes
        .try_into()
        .map_err(|v: Vec<u8>| FeedError::BadKey(format!("{} bytes, not 32", v.len())))
}

#[cfg(test)]
mod tests {
    /// A distinct key per call (the formats take no randomness; keys come from the caller).
    fn generate_key() -> SigningKey {
        use std::sync::atomic::{AtomicU8, Ordering};
        static NEXT: AtomicU8 = AtomicU8::new(1);
        SigningKey::from_bytes(&[NEXT.fetch_add(1, Ordering::Relaxed); 32])
    }

    use super::*;
    use crate::metainfo::{FileEntry, Info};

    /// A one-file torrent of `len` bytes named `name`.
    fn torrent(name: &str, len: u64) -> Vec<u8> {
        Metainfo::from_info(
            Info {
                name: name.into(),
                piece_length: 16384,
                pieces: vec![[7; 20]; len.div_ceil(16384) as usize],
                files: vec![FileEntry {
                    path: vec![],
                    length: len,
                    offset: 0,
                    pad: false,
                }],
                multi_file: false,
                total_length: len,
                private: false,
            },
            vec![vec!["udp://127.0.0.1:6969".into()]],
        )
        .to_bytes()
    }

    fn feed() -> Feed {
        Feed {
            sequence: 3,
            signed_ms: 10_000,
            expires_ms: Some(20_000),
            releases: vec![
                Release::new("index", "v1", torrent("blob", 40000), 1000).unwrap(),
                Release::new("model", "2026.11.24", torrent("m", 5), 2000).unwrap(),
                Release::new("index", "v2", torrent("blob", 50000), 3000).unwrap(),
            ],
            topology: None,
        }
    }

    #[test]
    fn sign_and_verify_round_trip() {
        let key = generate_key();
        let bytes = feed().sign(&key);
        let back = Feed::verify(&bytes, &key.verifying_key()).unwrap();
        assert_eq!(back, feed());
        let newest: Vec<String> = back.newest_per_name().iter().map(|r| r.label()).collect();
        assert_eq!(newest, ["index v2", "model 2026.11.24"]);
    }

    #[test]
    fn a_feed_is_fresh_until_its_expiry_plus_a_bounded_skew() {
        let f = feed(); // signed at 10 s, valid 10 s: 1 s of skew forgiven
        assert_eq!(allowed_skew_ms(10_000, 20_000), 1_000);
        f.check_fresh(0).unwrap();
        f.check_fresh(21_000).unwrap();
        let e = f.check_fresh(21_001).unwrap_err();
        assert!(e.to_string().starts_with("feed expired: sequence 3"), "{e}");
        // A week-long feed forgives a minute, no more.
        assert_eq!(allowed_skew_ms(0, 7 * 86_400_000), MAX_CLOCK_SKEW_MS);
        // A feed without an expiry is never fresh.
        let old = Feed {
            expires_ms: None,
            ..feed()
        };
        let e = old.check_fresh(0).unwrap_err();
        assert_eq!(e, FeedError::NoExpiry(3));
        assert!(e.to_string().contains("feed expired"), "{e}");
    }

    #[test]
    fn a_format_1_feed_is_read_without_an_expiry() {
        let key = generate_key();
        let body = serde_json::json!({"sequence": 5, "expires_ms": u64::MAX, "releases": []});
        let body = body.to_string().into_bytes();
        let env = serde_json::json!({"format": FORMAT_V1, "body": B64.encode(&body),
            "signature": B64.encode(key.sign(&body).to_bytes())});
        let f = Feed::verify(env.to_string().as_bytes(), &key.verifying_key()).unwrap();
        assert_eq!((f.sequence, f.expires_ms), (5, None));
        assert!(f.check_fresh(0).is_err());
        // Format 2 must say when it expires.
        let env = serde_json::json!({"format": FORMAT, "body": B64.encode(&body),
            "signature": B64.encode(key.sign(&body).to_bytes())});
        assert!(Feed::verify(env.to_string().as_bytes(), &key.verifying_key()).is_err());
    }

    #[test]
    fn another_key_or_a_changed_body_is_refused() {
        let key = generate_key();
        let bytes = feed().sign(&key);
        let other = generate_key();
        assert_eq!(
            Feed::verify(&bytes, &other.verifying_key()),
            Err(FeedError::BadSignature)
        );

        // Re-encode a body with one byte changed under the original signature.
        let mut envelope: Envelope = serde_json::from_slice(&bytes).unwrap();
        let mut body = B64.decode(&envelope.body).unwrap();
        let at = body.windows(2).position(|w| w == b"v1").unwrap();
        body[at + 1] = b'9';
        envelope.body = B64.encode(&body);
        let tampered = serde_json::to_vec(&envelope).unwrap();
        assert_eq!(
            Feed::verify(&tampered, &key.verifying_key()),
            Err(FeedError::BadSignature)
        );
        // The origin's unverified read still parses it (it is a well-formed feed).
        assert!(Feed::read_unverified(&tampered).is_ok());
    }

    #[test]
    fn a_release_must_match_its_metainfo() {
        let key = generate_key();
        let mut f = feed();
        f.releases[0].size += 1;
        let e = Feed::verify(&f.sign(&key), &key.verifying_key()).unwrap_err();
        assert!(e.to_string().contains("size 40001"), "{e}");

        let mut f = feed();
        f.releases[1].info_hash = [1; 20];
        let e = Feed::verify(&f.sign(&key), &key.verifying_key()).unwrap_err();
        assert!(
            e.to_string().starts_with("feed release 1: info_hash"),
            "{e}"
        );

        let mut f = feed();
        f.releases[2].version = "v1".into();
        let e = Feed::verify(&f.sign(&key), &key.verifying_key()).unwrap_err();
        assert!(e.to_string().contains("listed twice"), "{e}");
    }

    #[test]
    fn labels_are_safe_directory_names() {
        for ok in ["index", "v1.2.3", "2026-11-24T23", "a_b+c"] {
            check_label(ok, "version").unwrap();
        }
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "a b", "é", "a\0b"] {
            assert!(check_label(bad, "name").is_err(), "{bad:?}");
        }
        assert!(check_label(&"x".repeat(MAX_LABEL + 1), "name").is_err());
        assert!(Release::new("../etc", "v1", torrent("b", 1), 0).is_err());
    }

    #[test]
    fn keys_round_trip_and_are_told_apart() {
        let key = generate_key();
        let secret = encode_secret_key(&key);
        let public = encode_public_key(&key.verifying_key());
        assert_eq!(
            decode_secret_key(&secret).unwrap().to_bytes(),
            key.to_bytes()
        );
        assert_eq!(decode_public_key(&public).unwrap(), key.verifying_key());
        assert!(decode_public_key(&secret)
            .unwrap_err()
            .to_string()
            .contains("secret key"));
        assert!(decode_secret_key(&public).is_err());
        assert!(decode_public_key("abcd").is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let key = generate_key().verifying_key();
        for bad in [
            &b""[..],
            b"{}",
            b"null",
            b"{\"format\":\"x\",\"body\":\"\",\"signature\":\"\"}",
            b"{\"format\":\"ringswarm-feed/1\",\"body\":\"!!\",\"signature\":\"\"}",
            b"{\"format\":\"ringswarm-feed/1\",\"body\":\"e30=\",\"signature\":\"AA==\"}",
        ] {
            assert!(Feed::verify(bad, &key).is_err());
            let _ = Feed::read_unverified(bad);
        }
        assert_eq!(
            Feed::verify(&vec![b' '; MAX_FEED_BYTES + 1], &key),
            Err(FeedError::TooLarge(MAX_FEED_BYTES + 1))
        );
    }

    const TOPOLOGY: &str = "[[subnet]]\ncidr = \"127.0.1.0/24\"\ndc = \"lo\"\nrack = \"r1\"\n";

    #[test]
    fn the_topology_rides_signed_and_is_optional() {
        let key = generate_key();
        // Without one, the body is what older versions signed: no `topology` key at all.
        let plain = feed().sign(&key);
        let envelope: Envelope = serde_json::from_slice(&plain).unwrap();
        let body = B64.decode(&envelope.body).unwrap();
        assert!(!String::from_utf8(body).unwrap().contains("topology"));
        assert_eq!(
            Feed::verify(&plain, &key.verifying_key()).unwrap().topology,
            None
        );

        let with = Feed {
            topology: Some(TOPOLOGY.into()),
            ..feed()
        };
        let back = Feed::verify(&with.sign(&key), &key.verifying_key()).unwrap();
        assert_eq!(back, with);
        let topo = back.parsed_topology().unwrap().unwrap();
        let place = topo.lookup("127.0.1.9".parse().unwrap()).unwrap();
        assert_eq!(topo.rack_name(place.rack), Some(("lo", "r1")));
        // Read with the topology parsed once, on the way.
        let (read, parsed) = Feed::read_unverified_with_topology(&with.sign(&key)).unwrap();
        assert_eq!(read, with);
        let parsed = parsed.unwrap();
        assert_eq!(parsed.lookup("127.0.1.9".parse().unwrap()), Some(place));
        let (_, none) = Feed::read_unverified_with_topology(&plain).unwrap();
        assert!(none.is_none());
    }

    #[test]
    fn a_tampered_topology_fails_verification() {
        let key = generate_key();
        let bytes = Feed {
            topology: Some(TOPOLOGY.into()),
            ..feed()
        }
        .sign(&key);
        let mut envelope: Envelope = serde_json::from_slice(&bytes).unwrap();
        let body = String::from_utf8(B64.decode(&envelope.body).unwrap()).unwrap();
        // Move the rack to another subnet, keeping the JSON well-formed.
        let moved = body.replace("127.0.1.0/24", "127.0.2.0/24");
        assert_ne!(moved, body);
        envelope.body = B64.encode(&moved);
        let tampered = serde_json::to_vec(&envelope).unwrap();
        assert_eq!(
            Feed::verify(&tampered, &key.verifying_key()),
            Err(FeedError::BadSignature)
        );
    }

    #[test]
    fn a_malformed_or_oversized_topology_is_refused_with_one_line() {
        let key = generate_key();
        let bad = Feed {
            topology: Some("[[subnet]]\ncidr = \"10.1.2.3/16\"\ndc = \"a\"\nrack = \"b\"\n".into()),
            ..feed()
        };
        let e = Feed::verify(&bad.sign(&key), &key.verifying_key()).unwrap_err();
        let e = e.to_string();
        assert!(e.starts_with("topology in the feed, line 2"), "{e}");
        assert!(e.contains("host bits") && !e.contains('\n'), "{e}");

        let huge = Feed {
            topology: Some(" ".repeat(MAX_TOPOLOGY_BYTES + 1)),
            ..feed()
        };
        let e = huge.parsed_topology().unwrap_err().to_string();
        assert!(e.contains("more than the 16 MiB"), "{e}");
    }

    #[test]
    fn a_topology_of_100_000_subnets_fits_in_a_feed() {
        let mut text = String::new();
        for i in 0..100_000u32 {
            let net = std::net::Ipv4Addr::from(0x0a00_0000 | (i << 8));
            text.push_str(&format!(
                "[[subnet]]\ncidr = \"{net}/24\"\ndc = \"dc{}\"\nrack = \"r{}\"\n",
                i / 10_000,
                i / 40
            ));
        }
        assert!(text.len() < MAX_TOPOLOGY_BYTES);
        let key = generate_key();
        let f = Feed {
            topology: Some(text),
            ..feed()
        };
        let bytes = f.sign(&key);
        assert!(bytes.len() < MAX_FEED_BYTES, "{}", bytes.len());
        let back = Feed::verify(&bytes, &key.verifying_key()).unwrap();
        assert_eq!(
            back.parsed_topology().unwrap().unwrap().subnet_count(),
            100_000
        );
    }

    proptest::proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let key = SigningKey::from_bytes(&[9; 32]).verifying_key();
            let _ = Feed::verify(&bytes, &key);
            let _ = Feed::read_unverified(&bytes);
        }

        #[test]
        fn unverified_body_fields_never_panic(seq in 0u64.., name in ".{0,20}", hash in ".{0,45}", mi in ".{0,40}") {
            let body = serde_json::json!({"sequence": seq, "releases": [{
                "name": name, "version": "v", "info_hash": hash, "size": 1,
                "published_ms": 0, "metainfo": mi}]});
            let env = serde_json::json!({"format": FORMAT,
                "body": B64.encode(body.to_string()), "signature": ""});
            let _ = Feed::read_unverified(env.to_string().as_bytes());
        }
    }
}
