//! Magnet URIs (BEP 9): `xt=urn:btih:` in hex or base32, `dn`, `tr`, `x.pe`.
//! Pure. CONTRACT STUB — owned by the formats helper.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MagnetError {
    #[error("magnet: not a magnet URI (must start with `magnet:?`)")]
    NotMagnet,
    #[error("magnet: no `xt=urn:btih:` parameter")]
    MissingInfoHash,
    #[error("magnet: invalid `{param}`: {reason}")]
    Invalid { param: String, reason: String },
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
        let _ = uri;
        todo!()
    }

    /// The URI form (hex info-hash, percent-encoded values).
    pub fn to_uri(&self) -> String {
        todo!()
    }
}
