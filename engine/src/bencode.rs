//! Bencode (BEP 3): a decoder that borrows from its input, with limits, and a canonical
//! encoder. CONTRACT STUB — owned by the formats helper; the public API below is fixed.

use std::collections::BTreeMap;

/// Decoder limits: input from the network or a file must not make us recurse or allocate
/// without bound.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Deepest nesting of lists and dicts.
    pub max_depth: usize,
    /// Longest byte string.
    pub max_bytes_len: usize,
    /// Most items in one list or dict.
    pub max_items: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_depth: 64, max_bytes_len: 64 << 20, max_items: 1 << 20 }
    }
}

/// A decode error with the byte offset where it happened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bencode: {kind} at byte {offset}")]
pub struct BencodeError {
    pub offset: usize,
    pub kind: ErrorKind,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ErrorKind {
    #[error("unexpected end of input")]
    UnexpectedEof,
    #[error("unexpected byte {0:#04x}")]
    UnexpectedByte(u8),
    #[error("invalid integer")]
    InvalidInteger,
    #[error("invalid string length")]
    InvalidLength,
    #[error("nesting deeper than the limit")]
    TooDeep,
    #[error("string longer than the limit")]
    TooLong,
    #[error("more items than the limit")]
    TooManyItems,
    #[error("duplicate dictionary key")]
    DuplicateKey,
    #[error("dictionary key is not a byte string")]
    NonStringKey,
    #[error("trailing bytes after the value")]
    TrailingBytes,
}

/// A decoded value borrowing from the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    Dict(Dict<'a>),
}

/// A dictionary: keys in input order, plus the exact bytes it was decoded from
/// (the info-hash is the SHA-1 of the info dict's raw bytes as received).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Dict<'a> {
    pub entries: Vec<(&'a [u8], Value<'a>)>,
    /// The raw encoded bytes, `d...e`; empty for dicts built in code.
    pub raw: &'a [u8],
}

impl<'a> Dict<'a> {
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        let _ = key;
        todo!()
    }
}

impl<'a> Value<'a> {
    pub fn as_int(&self) -> Option<i64> {
        todo!()
    }
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        todo!()
    }
    /// UTF-8 text.
    pub fn as_str(&self) -> Option<&'a str> {
        todo!()
    }
    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        todo!()
    }
    pub fn as_dict(&self) -> Option<&Dict<'a>> {
        todo!()
    }
}

/// Decodes exactly one value that spans all of `input`.
pub fn decode(input: &[u8]) -> Result<Value<'_>, BencodeError> {
    decode_with(input, &Limits::default())
}

pub fn decode_with<'a>(input: &'a [u8], limits: &Limits) -> Result<Value<'a>, BencodeError> {
    let _ = (input, limits);
    todo!()
}

/// Decodes one value at the start of `input`; returns it and the bytes consumed
/// (BEP 9 data messages carry raw bytes after the dict).
pub fn decode_prefix<'a>(
    input: &'a [u8],
    limits: &Limits,
) -> Result<(Value<'a>, usize), BencodeError> {
    let _ = (input, limits);
    todo!()
}

/// Canonical encoding: dict keys sorted as raw bytes.
pub fn encode(value: &Value<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(value, &mut out);
    out
}

pub fn encode_into(value: &Value<'_>, out: &mut Vec<u8>) {
    let _ = (value, out);
    todo!()
}

/// Builds a dict value from (key, value) pairs; `encode` sorts keys.
pub fn dict<'a>(entries: impl IntoIterator<Item = (&'a [u8], Value<'a>)>) -> Value<'a> {
    Value::Dict(Dict { entries: entries.into_iter().collect(), raw: &[] })
}

#[allow(dead_code)]
type _Unused<'a> = BTreeMap<&'a [u8], Value<'a>>;
