//! Payloads of BEP 10 extended messages: the extension handshake and BEP 9 `ut_metadata`.
//! Pure. CONTRACT STUB — owned by the formats helper.

/// The extended message id of the handshake itself (BEP 10).
pub const HANDSHAKE_ID: u8 = 0;
/// The id we ask peers to use when they send us `ut_metadata` messages.
pub const OUR_UT_METADATA_ID: u8 = 1;
/// BEP 9 metadata piece size.
pub const METADATA_PIECE_SIZE: usize = 16 * 1024;
/// Largest info dict we accept over BEP 9.
pub const MAX_METADATA_SIZE: u64 = 64 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExtensionError {
    #[error("extension message is not valid bencode: {0}")]
    Bencode(#[from] crate::bencode::BencodeError),
    #[error("extension message field `{field}` is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// BEP 10 handshake dict. `dc`/`rack` are ringswarm's own keys (topology, issue 4).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtHandshake {
    /// `m`: extension name → id the sender wants to receive it as (0 = disabled).
    pub extensions: Vec<(String, u8)>,
    pub metadata_size: Option<u64>,
    /// `p`
    pub listen_port: Option<u16>,
    /// `v`
    pub client: Option<String>,
    /// `reqq`
    pub request_queue: Option<u32>,
    pub dc: Option<String>,
    pub rack: Option<String>,
}

impl ExtHandshake {
    pub fn decode(payload: &[u8]) -> Result<ExtHandshake, ExtensionError> {
        let _ = payload;
        todo!()
    }
    pub fn encode(&self) -> Vec<u8> {
        todo!()
    }
    /// The id for `name` in `m`, when enabled (non-zero).
    pub fn id_of(&self, name: &str) -> Option<u8> {
        let _ = name;
        todo!()
    }
}

/// A BEP 9 message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataMsg<'a> {
    Request { piece: u32 },
    Data { piece: u32, total_size: u64, data: &'a [u8] },
    Reject { piece: u32 },
}

impl<'a> MetadataMsg<'a> {
    pub fn decode(payload: &'a [u8]) -> Result<MetadataMsg<'a>, ExtensionError> {
        let _ = payload;
        todo!()
    }
    pub fn encode(&self) -> Vec<u8> {
        todo!()
    }
}
