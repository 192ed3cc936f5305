//! Payloads of BEP 10 extended messages: the extension handshake and BEP 9 `ut_metadata`.
//! Pure.
//!
//! The handshake is read tolerantly, as BEP 10 asks: unknown keys are skipped, and an
//! optional key of the wrong type or out of range reads as absent (a `metadata_size` above
//! [`MAX_METADATA_SIZE`] reads as "no metadata offered"). `ut_metadata` messages are read
//! strictly, since their sizes decide what we buffer: `total_size` must be in
//! 1..=[`MAX_METADATA_SIZE`], `piece` must lie inside it, and a data piece must have exactly
//! the length its index implies.

use crate::bencode::{self, Limits, Value};

/// The extended message id of the handshake itself (BEP 10).
pub const HANDSHAKE_ID: u8 = 0;
/// The id we ask peers to use when they send us `ut_metadata` messages.
pub const OUR_UT_METADATA_ID: u8 = 1;
/// ringswarm's own extension (BEP 10 name [`FETCHING`]): "I have started fetching this
/// piece from outside our rack", or "I gave that fetch up without the piece". A host tells
/// its rack peers, so that they leave the piece to it instead of each fetching it across
/// the rack uplink, and take it up again at once when it gives up.
pub const FETCHING: &str = "rs_fetching";
/// The id we ask peers to use when they send us [`FETCHING`] messages.
pub const OUR_FETCHING_ID: u8 = 2;

/// What a [`FETCHING`] message says about its piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchingWord {
    /// The sender started fetching the piece from outside its rack.
    Started(u32),
    /// The sender stopped fetching it without having it.
    Stopped(u32),
}

impl FetchingWord {
    pub fn piece(self) -> u32 {
        match self {
            FetchingWord::Started(p) | FetchingWord::Stopped(p) => p,
        }
    }
}

/// A [`FETCHING`] payload: the piece index, 4 bytes big-endian, then for a stopped fetch
/// one byte 0 (a started fetch has no fifth byte, so the first form of the message,
/// which had only the index, still reads the same).
pub fn encode_fetching(word: FetchingWord) -> Vec<u8> {
    let mut out = word.piece().to_be_bytes().to_vec();
    if let FetchingWord::Stopped(_) = word {
        out.push(0);
    }
    out
}

/// Reads a [`FETCHING`] payload (the piece's range is the caller's check).
pub fn decode_fetching(payload: &[u8]) -> Result<FetchingWord, ExtensionError> {
    let bad = || {
        invalid(
            "rs_fetching",
            format!(
                "{} bytes, not a 4-byte piece index with an optional 0 byte",
                payload.len()
            ),
        )
    };
    let index: [u8; 4] = payload
        .get(..4)
        .ok_or_else(bad)?
        .try_into()
        .map_err(|_| bad())?;
    let piece = u32::from_be_bytes(index);
    match payload[4..] {
        [] => Ok(FetchingWord::Started(piece)),
        [0] => Ok(FetchingWord::Stopped(piece)),
        _ => Err(bad()),
    }
}

/// BEP 9 metadata piece size.
pub const METADATA_PIECE_SIZE: usize = 16 * 1024;
/// Largest info dict we accept over BEP 9.
pub const MAX_METADATA_SIZE: u64 = 64 << 20;
/// Most metadata pieces a torrent can have under [`MAX_METADATA_SIZE`].
pub const MAX_METADATA_PIECES: u32 = (MAX_METADATA_SIZE / METADATA_PIECE_SIZE as u64) as u32;

/// Extension messages are small dicts; these keep a hostile one cheap to reject.
const LIMITS: Limits = Limits {
    max_depth: 16,
    max_bytes_len: 1 << 20,
    max_items: 4096,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExtensionError {
    #[error("extension message is not valid bencode: {0}")]
    Bencode(#[from] crate::bencode::BencodeError),
    #[error("extension message field `{field}` is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ExtensionError {
    ExtensionError::Invalid {
        field,
        reason: reason.into(),
    }
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
        let value = bencode::decode_with(payload, &LIMITS)?;
        let d = value
            .as_dict()
            .ok_or_else(|| invalid("handshake", "not a dictionary"))?;
        let int = |key: &[u8]| d.get(key).and_then(Value::as_int);
        let text = |key: &[u8]| d.get(key).and_then(Value::as_str).map(str::to_owned);
        let extensions = d
            .get(b"m")
            .and_then(Value::as_dict)
            .map(|m| {
                m.entries
                    .iter()
                    .filter_map(|(name, id)| {
                        let name = std::str::from_utf8(name).ok()?;
                        let id = u8::try_from(id.as_int()?).ok()?;
                        Some((name.to_owned(), id))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(ExtHandshake {
            extensions,
            metadata_size: int(b"metadata_size")
                .and_then(|n| u64::try_from(n).ok())
                .filter(|&n| n <= MAX_METADATA_SIZE),
            listen_port: int(b"p")
                .and_then(|n| u16::try_from(n).ok())
                .filter(|&p| p != 0),
            // Client names are for display: keep them even when not quite UTF-8.
            client: d
                .get(b"v")
                .and_then(Value::as_bytes)
                .map(|v| String::from_utf8_lossy(v).into_owned()),
            request_queue: int(b"reqq").and_then(|n| u32::try_from(n).ok()),
            dc: text(b"dc"),
            rack: text(b"rack"),
        })
    }

    /// The bencoded dict. A name repeated in `extensions` is written once (its first id).
    pub fn encode(&self) -> Vec<u8> {
        let mut m: Vec<(&[u8], Value<'_>)> = Vec::with_capacity(self.extensions.len());
        for (name, id) in &self.extensions {
            if !m.iter().any(|(k, _)| *k == name.as_bytes()) {
                m.push((name.as_bytes(), Value::Int(i64::from(*id))));
            }
        }
        let mut d: Vec<(&[u8], Value<'_>)> = vec![(b"m", bencode::dict(m))];
        if let Some(n) = self.metadata_size {
            d.push((
                b"metadata_size",
                Value::Int(i64::try_from(n).unwrap_or(i64::MAX)),
            ));
        }
        if let Some(p) = self.listen_port {
            d.push((b"p", Value::Int(i64::from(p))));
        }
        if let Some(v) = &self.client {
            d.push((b"v", Value::Bytes(v.as_bytes())));
        }
        if let Some(q) = self.request_queue {
            d.push((b"reqq", Value::Int(i64::from(q))));
        }
        if let Some(dc) = &self.dc {
            d.push((b"dc", Value::Bytes(dc.as_bytes())));
        }
        if let Some(rack) = &self.rack {
            d.push((b"rack", Value::Bytes(rack.as_bytes())));
        }
        bencode::encode(&bencode::dict(d))
    }

    /// The id for `name` in `m`, when enabled (non-zero).
    pub fn id_of(&self, name: &str) -> Option<u8> {
        self.extensions
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
            .filter(|&id| id != 0)
    }
}

/// A BEP 9 message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataMsg<'a> {
    Request {
        piece: u32,
    },
    Data {
        piece: u32,
        total_size: u64,
        data: &'a [u8],
    },
    Reject {
        piece: u32,
    },
}

/// Number of BEP 9 pieces for an info dict of `total_size` bytes.
pub fn metadata_piece_count(total_size: u64) -> u32 {
    u32::try_from(total_size.div_ceil(METADATA_PIECE_SIZE as u64)).unwrap_or(u32::MAX)
}

/// Length of BEP 9 piece `piece` of an info dict of `total_size` bytes (0 past the end).
pub fn metadata_piece_len(total_size: u64, piece: u32) -> usize {
    let start = u64::from(piece).saturating_mul(METADATA_PIECE_SIZE as u64);
    let len = total_size
        .saturating_sub(start)
        .min(METADATA_PIECE_SIZE as u64);
    // At most METADATA_PIECE_SIZE, so it fits.
    usize::try_from(len).unwrap_or(METADATA_PIECE_SIZE)
}

impl<'a> MetadataMsg<'a> {
    pub fn decode(payload: &'a [u8]) -> Result<MetadataMsg<'a>, ExtensionError> {
        let (value, used) = bencode::decode_prefix(payload, &LIMITS)?;
        let d = value
            .as_dict()
            .ok_or_else(|| invalid("ut_metadata", "not a dictionary"))?;
        let rest = payload.get(used..).unwrap_or_default();
        let int = |key: &'static str| match d.get(key.as_bytes()) {
            None => Err(invalid(key, "missing")),
            Some(v) => v.as_int().ok_or_else(|| invalid(key, "not an integer")),
        };
        let msg_type = int("msg_type")?;
        let piece = int("piece")?;
        let piece = u32::try_from(piece)
            .ok()
            .filter(|&p| p < MAX_METADATA_PIECES)
            .ok_or_else(|| invalid("piece", format!("{piece} is out of range")))?;
        if msg_type != 1 && !rest.is_empty() {
            return Err(invalid(
                "msg_type",
                format!("{} bytes after a message that carries no data", rest.len()),
            ));
        }
        match msg_type {
            0 => Ok(MetadataMsg::Request { piece }),
            2 => Ok(MetadataMsg::Reject { piece }),
            1 => {
                let total = int("total_size")?;
                let total_size = u64::try_from(total)
                    .ok()
                    .filter(|&t| t > 0 && t <= MAX_METADATA_SIZE)
                    .ok_or_else(|| {
                        invalid(
                            "total_size",
                            format!("{total} is not between 1 and {MAX_METADATA_SIZE}"),
                        )
                    })?;
                if piece >= metadata_piece_count(total_size) {
                    return Err(invalid(
                        "piece",
                        format!("{piece} is past the end of {total_size} bytes of metadata"),
                    ));
                }
                let want = metadata_piece_len(total_size, piece);
                if rest.len() != want {
                    return Err(invalid(
                        "data",
                        format!("{} bytes where piece {piece} has {want}", rest.len()),
                    ));
                }
                Ok(MetadataMsg::Data {
                    piece,
                    total_size,
                    data: rest,
                })
            }
            n => Err(invalid("msg_type", format!("unknown type {n}"))),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let (msg_type, piece) = match self {
            MetadataMsg::Request { piece } => (0, piece),
            MetadataMsg::Data { piece, .. } => (1, piece),
            MetadataMsg::Reject { piece } => (2, piece),
        };
        let mut d: Vec<(&[u8], Value<'_>)> = vec![
            (b"msg_type", Value::Int(msg_type)),
            (b"piece", Value::Int(i64::from(*piece))),
        ];
        if let MetadataMsg::Data { total_size, .. } = self {
            d.push((
                b"total_size",
                Value::Int(i64::try_from(*total_size).unwrap_or(i64::MAX)),
            ));
        }
        let mut out = bencode::encode(&bencode::dict(d));
        if let MetadataMsg::Data { data, .. } = self {
            out.extend_from_slice(data);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetching_message_is_a_4_byte_piece_index_and_a_0_byte_when_stopped() {
        for word in [FetchingWord::Started(70_000), FetchingWord::Stopped(70_000)] {
            assert_eq!(decode_fetching(&encode_fetching(word)), Ok(word));
        }
        assert_eq!(encode_fetching(FetchingWord::Started(1)), [0, 0, 0, 1]);
        assert_eq!(encode_fetching(FetchingWord::Stopped(1)), [0, 0, 0, 1, 0]);
        for bad in [
            &[][..],
            &[0, 0, 1][..],
            &[0, 0, 0, 1, 2][..],
            &[0, 0, 0, 1, 0, 0][..],
        ] {
            let err = decode_fetching(bad).unwrap_err().to_string();
            assert!(err.contains("rs_fetching"), "{err}");
        }
    }
    use proptest::prelude::*;

    #[test]
    fn handshake_decodes_known_keys() {
        let payload = b"d2:dc3:fra1:md11:ut_metadatai3e6:ut_pexi0ee13:metadata_sizei31235e\
            1:pi6881e4:racki7e4:reqqi500e1:v16:libtorrent 2.0.66:yourip4:\x7f\0\0\x01e";
        let h = ExtHandshake::decode(payload).unwrap();
        assert_eq!(
            h.extensions,
            vec![("ut_metadata".into(), 3), ("ut_pex".into(), 0)]
        );
        assert_eq!(h.id_of("ut_metadata"), Some(3));
        assert_eq!(h.id_of("ut_pex"), None);
        assert_eq!(h.id_of("lt_donthave"), None);
        assert_eq!(h.metadata_size, Some(31235));
        assert_eq!(h.listen_port, Some(6881));
        assert_eq!(h.client.as_deref(), Some("libtorrent 2.0.6"));
        assert_eq!(h.request_queue, Some(500));
        assert_eq!(h.dc.as_deref(), Some("fra"));
        // `rack` was an integer: ignored.
        assert_eq!(h.rack, None);
    }

    #[test]
    fn handshake_ignores_wrong_types_and_ranges() {
        let payload = b"d2:dci1e1:mi5e13:metadata_sizei-1e1:pi70000e4:reqq1:x1:v1:\xffe";
        let h = ExtHandshake::decode(payload).unwrap();
        assert!(h.extensions.is_empty());
        assert_eq!(h.metadata_size, None);
        assert_eq!(h.listen_port, None);
        assert_eq!(h.request_queue, None);
        assert_eq!(h.dc, None);
        assert_eq!(h.client.as_deref(), Some("\u{fffd}"));
        let big = format!("d13:metadata_sizei{}ee", MAX_METADATA_SIZE + 1);
        assert_eq!(
            ExtHandshake::decode(big.as_bytes()).unwrap().metadata_size,
            None
        );
        let m = b"d1:md1:ai300e1:bi-1e1:c1:x1:di2eee";
        let h = ExtHandshake::decode(m).unwrap();
        assert_eq!(h.extensions, vec![("d".into(), 2)]);
        assert_eq!(
            ExtHandshake::decode(b"de").unwrap(),
            ExtHandshake::default()
        );
    }

    #[test]
    fn handshake_rejects_non_dicts_and_bad_bencode() {
        assert!(matches!(
            ExtHandshake::decode(b"li1ee"),
            Err(ExtensionError::Invalid {
                field: "handshake",
                ..
            })
        ));
        assert!(matches!(
            ExtHandshake::decode(b"d1:m"),
            Err(ExtensionError::Bencode(_))
        ));
        assert!(matches!(
            ExtHandshake::decode(b"dei1e"),
            Err(ExtensionError::Bencode(_))
        ));
    }

    #[test]
    fn handshake_encode_dedups_names() {
        let h = ExtHandshake {
            extensions: vec![("a".into(), 1), ("a".into(), 2)],
            ..ExtHandshake::default()
        };
        assert_eq!(h.encode(), b"d1:md1:ai1eee");
    }

    #[test]
    fn metadata_messages() {
        assert_eq!(
            MetadataMsg::decode(b"d8:msg_typei0e5:piecei0ee").unwrap(),
            MetadataMsg::Request { piece: 0 }
        );
        assert_eq!(
            MetadataMsg::decode(b"d8:msg_typei2e5:piecei7ee").unwrap(),
            MetadataMsg::Reject { piece: 7 }
        );
        let data = vec![9u8; 100];
        let mut payload = b"d8:msg_typei1e5:piecei1e10:total_sizei16484ee".to_vec();
        payload.extend_from_slice(&data);
        assert_eq!(
            MetadataMsg::decode(&payload).unwrap(),
            MetadataMsg::Data {
                piece: 1,
                total_size: 16484,
                data: &data
            }
        );
        assert_eq!(
            MetadataMsg::Data {
                piece: 1,
                total_size: 16484,
                data: &data
            }
            .encode(),
            payload
        );
    }

    fn field(payload: &[u8]) -> &'static str {
        match MetadataMsg::decode(payload) {
            Err(ExtensionError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn metadata_sizes_are_checked() {
        assert_eq!(field(b"d5:piecei0ee"), "msg_type");
        assert_eq!(field(b"d8:msg_type1:0e"), "msg_type");
        assert_eq!(field(b"d8:msg_typei9e5:piecei0ee"), "msg_type");
        assert_eq!(field(b"d8:msg_typei0ee"), "piece");
        assert_eq!(field(b"d8:msg_typei0e5:piecei-1ee"), "piece");
        assert_eq!(field(b"d8:msg_typei0e5:piecei4096ee"), "piece");
        assert_eq!(field(b"d8:msg_typei0e5:piecei0eextra"), "msg_type");
        assert_eq!(field(b"d8:msg_typei1e5:piecei0ee"), "total_size");
        assert_eq!(
            field(b"d8:msg_typei1e5:piecei0e10:total_sizei0ee"),
            "total_size"
        );
        let too_big = format!(
            "d8:msg_typei1e5:piecei0e10:total_sizei{}ee",
            MAX_METADATA_SIZE + 1
        );
        assert_eq!(field(too_big.as_bytes()), "total_size");
        assert_eq!(
            field(b"d8:msg_typei1e5:piecei1e10:total_sizei16384ee"),
            "piece"
        );
        // Short, long and missing data.
        assert_eq!(
            field(b"d8:msg_typei1e5:piecei0e10:total_sizei3eeab"),
            "data"
        );
        assert_eq!(
            field(b"d8:msg_typei1e5:piecei0e10:total_sizei3eeabcd"),
            "data"
        );
        let mut full = b"d8:msg_typei1e5:piecei0e10:total_sizei99999ee".to_vec();
        full.extend_from_slice(&[0u8; METADATA_PIECE_SIZE + 1]);
        assert_eq!(field(&full), "data");
        assert_eq!(field(b"i1e"), "ut_metadata");
    }

    #[test]
    fn piece_arithmetic() {
        assert_eq!(MAX_METADATA_PIECES, 4096);
        assert_eq!(metadata_piece_count(1), 1);
        assert_eq!(metadata_piece_count(16384), 1);
        assert_eq!(metadata_piece_count(16385), 2);
        assert_eq!(metadata_piece_len(16385, 0), 16384);
        assert_eq!(metadata_piece_len(16385, 1), 1);
        assert_eq!(metadata_piece_len(16385, 2), 0);
        assert_eq!(metadata_piece_len(u64::MAX, u32::MAX), 16384);
    }

    fn arb_handshake() -> impl Strategy<Value = ExtHandshake> {
        (
            proptest::collection::btree_map("[a-z_]{1,12}", any::<u8>(), 0..5),
            proptest::option::of(0..=MAX_METADATA_SIZE),
            proptest::option::of(1u16..),
            proptest::option::of(".{0,20}"),
            proptest::option::of(any::<u32>()),
            proptest::option::of(".{0,8}"),
            proptest::option::of(".{0,8}"),
        )
            .prop_map(
                |(m, metadata_size, listen_port, client, request_queue, dc, rack)| ExtHandshake {
                    extensions: m.into_iter().collect(),
                    metadata_size,
                    listen_port,
                    client,
                    request_queue,
                    dc,
                    rack,
                },
            )
    }

    proptest! {
        #[test]
        fn handshake_round_trip(h in arb_handshake()) {
            prop_assert_eq!(ExtHandshake::decode(&h.encode()).unwrap(), h);
        }

        #[test]
        fn metadata_round_trip(
            kind in 0u8..3,
            total_size in 1..=MAX_METADATA_SIZE,
            piece in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let piece = piece.index(metadata_piece_count(total_size) as usize) as u32;
            let data = vec![byte; metadata_piece_len(total_size, piece)];
            let msg = match kind {
                0 => MetadataMsg::Request { piece },
                1 => MetadataMsg::Data { piece, total_size, data: &data },
                _ => MetadataMsg::Reject { piece },
            };
            let bytes = msg.encode();
            prop_assert_eq!(MetadataMsg::decode(&bytes).unwrap(), msg);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = ExtHandshake::decode(&bytes);
            let _ = MetadataMsg::decode(&bytes);
            let mut prefixed = b"d8:msg_typei1e5:piecei0e10:total_sizei".to_vec();
            prefixed.extend_from_slice(&bytes);
            let _ = MetadataMsg::decode(&prefixed);
        }
    }
}
