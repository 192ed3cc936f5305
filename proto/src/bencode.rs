//! Bencode (BEP 3): a decoder that borrows from its input, with limits, and a canonical
//! encoder.
//!
//! The decoder is iterative (an explicit stack of open lists and dicts), so nesting costs
//! heap rather than call stack, and [`Limits::max_depth`] bounds it. It is strict where two
//! readings of the same bytes could disagree (integers, string lengths, duplicate keys) and
//! tolerant where real torrents are sloppy (unsorted dict keys). Every length prefix is
//! checked against the limit and against the bytes actually left before anything is sliced.

use std::collections::BTreeSet;

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
        Self {
            max_depth: 64,
            max_bytes_len: 64 << 20,
            max_items: 1 << 20,
        }
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
    /// The value under `key`. Decoded dicts have unique keys; for dicts built in code with a
    /// repeated key, the first wins.
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        self.entries.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

impl<'a> Value<'a> {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
    /// UTF-8 text.
    pub fn as_str(&self) -> Option<&'a str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }
    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }
    pub fn as_dict(&self) -> Option<&Dict<'a>> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }
}

/// Decodes exactly one value that spans all of `input`.
pub fn decode(input: &[u8]) -> Result<Value<'_>, BencodeError> {
    decode_with(input, &Limits::default())
}

pub fn decode_with<'a>(input: &'a [u8], limits: &Limits) -> Result<Value<'a>, BencodeError> {
    let (value, used) = decode_prefix(input, limits)?;
    if used != input.len() {
        return Err(BencodeError {
            offset: used,
            kind: ErrorKind::TrailingBytes,
        });
    }
    Ok(value)
}

/// Decodes one value at the start of `input`; returns it and the bytes consumed
/// (BEP 9 data messages carry raw bytes after the dict).
pub fn decode_prefix<'a>(
    input: &'a [u8],
    limits: &Limits,
) -> Result<(Value<'a>, usize), BencodeError> {
    let mut decoder = Decoder {
        input,
        pos: 0,
        limits,
    };
    let value = decoder.value()?;
    Ok((value, decoder.pos))
}

/// Canonical encoding: dict keys sorted as raw bytes.
pub fn encode(value: &Value<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(value, &mut out);
    out
}

pub fn encode_into(value: &Value<'_>, out: &mut Vec<u8>) {
    match value {
        Value::Int(i) => write_int(out, *i),
        Value::Bytes(b) => write_bytes(out, b),
        Value::List(items) => {
            out.push(b'l');
            for item in items {
                encode_into(item, out);
            }
            out.push(b'e');
        }
        Value::Dict(d) => {
            let mut entries: Vec<&(&[u8], Value<'_>)> = d.entries.iter().collect();
            // Stable, so a key repeated in a code-built dict keeps its order.
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'd');
            for (k, v) in entries {
                write_bytes(out, k);
                encode_into(v, out);
            }
            out.push(b'e');
        }
    }
}

/// Appends `i<n>e`: for writers that splice pre-encoded parts (e.g. a verbatim info dict).
pub fn write_int(out: &mut Vec<u8>, n: i64) {
    out.push(b'i');
    out.extend_from_slice(n.to_string().as_bytes());
    out.push(b'e');
}

/// Appends `<len>:<bytes>`.
pub fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

/// Builds a dict value from (key, value) pairs; `encode` sorts keys.
pub fn dict<'a>(entries: impl IntoIterator<Item = (&'a [u8], Value<'a>)>) -> Value<'a> {
    Value::Dict(Dict {
        entries: entries.into_iter().collect(),
        raw: &[],
    })
}

/// An open list or dict on the decoder's stack.
enum Frame<'a> {
    List {
        items: Vec<Value<'a>>,
    },
    Dict {
        /// Offset of the `d`, for `Dict::raw`.
        start: usize,
        entries: Vec<(&'a [u8], Value<'a>)>,
        /// The key whose value is being decoded.
        key: Option<&'a [u8]>,
        /// Set of keys, built only once keys arrive out of order: sorted input (the common
        /// case) is checked for duplicates against the last key alone.
        seen: Option<BTreeSet<&'a [u8]>>,
    },
}

struct Decoder<'a, 'l> {
    input: &'a [u8],
    pos: usize,
    limits: &'l Limits,
}

impl<'a> Decoder<'a, '_> {
    fn err<T>(&self, offset: usize, kind: ErrorKind) -> Result<T, BencodeError> {
        Err(BencodeError { offset, kind })
    }

    fn value(&mut self) -> Result<Value<'a>, BencodeError> {
        let mut stack: Vec<Frame<'a>> = Vec::new();
        loop {
            let at = self.pos;
            let Some(&byte) = self.input.get(at) else {
                return self.err(at, ErrorKind::UnexpectedEof);
            };
            let expecting_key = matches!(stack.last(), Some(Frame::Dict { key: None, .. }));

            let done = if byte == b'e' {
                match stack.pop() {
                    // A dict key without its value, or an `e` outside any container.
                    None | Some(Frame::Dict { key: Some(_), .. }) => {
                        return self.err(at, ErrorKind::UnexpectedByte(byte));
                    }
                    Some(Frame::List { items }) => {
                        self.pos += 1;
                        Value::List(items)
                    }
                    Some(Frame::Dict { start, entries, .. }) => {
                        self.pos += 1;
                        let raw = self.input.get(start..self.pos).unwrap_or_default();
                        Value::Dict(Dict { entries, raw })
                    }
                }
            } else if expecting_key {
                if !byte.is_ascii_digit() {
                    let kind = match byte {
                        b'i' | b'l' | b'd' => ErrorKind::NonStringKey,
                        _ => ErrorKind::UnexpectedByte(byte),
                    };
                    return self.err(at, kind);
                }
                if let Some(Frame::Dict { entries, .. }) = stack.last() {
                    if entries.len() >= self.limits.max_items {
                        return self.err(at, ErrorKind::TooManyItems);
                    }
                }
                let k = self.bytes()?;
                if let Some(Frame::Dict {
                    entries, key, seen, ..
                }) = stack.last_mut()
                {
                    if !note_key(entries, seen, k) {
                        return self.err(at, ErrorKind::DuplicateKey);
                    }
                    *key = Some(k);
                }
                continue;
            } else {
                if let Some(Frame::List { items }) = stack.last() {
                    if items.len() >= self.limits.max_items {
                        return self.err(at, ErrorKind::TooManyItems);
                    }
                }
                match byte {
                    b'i' => Value::Int(self.int()?),
                    b'0'..=b'9' => Value::Bytes(self.bytes()?),
                    b'l' | b'd' => {
                        if stack.len() >= self.limits.max_depth {
                            return self.err(at, ErrorKind::TooDeep);
                        }
                        self.pos += 1;
                        stack.push(if byte == b'l' {
                            Frame::List { items: Vec::new() }
                        } else {
                            Frame::Dict {
                                start: at,
                                entries: Vec::new(),
                                key: None,
                                seen: None,
                            }
                        });
                        continue;
                    }
                    _ => return self.err(at, ErrorKind::UnexpectedByte(byte)),
                }
            };

            // Hand the finished value to its container, or return it at the top level.
            match stack.last_mut() {
                None => return Ok(done),
                Some(Frame::List { items }) => items.push(done),
                Some(Frame::Dict { entries, key, .. }) => match key.take() {
                    Some(k) => entries.push((k, done)),
                    // Not reachable: a dict only takes a value after a key.
                    None => return self.err(at, ErrorKind::NonStringKey),
                },
            }
        }
    }

    /// `i<digits>e` at `self.pos`.
    fn int(&mut self) -> Result<i64, BencodeError> {
        let start = self.pos;
        let mut p = start + 1;
        let negative = self.input.get(p) == Some(&b'-');
        if negative {
            p += 1;
        }
        let digits_start = p;
        while self.input.get(p).is_some_and(u8::is_ascii_digit) {
            p += 1;
        }
        match self.input.get(p) {
            None => return self.err(self.input.len(), ErrorKind::UnexpectedEof),
            Some(b'e') => {}
            Some(&b) => return self.err(p, ErrorKind::UnexpectedByte(b)),
        }
        let digits = self.input.get(digits_start..p).unwrap_or_default();
        // Exactly one spelling per number: no empty, no leading zeros, no `-0`.
        let canonical = match digits {
            [] => false,
            [b'0'] => !negative,
            [b'0', ..] => false,
            _ => true,
        };
        if !canonical {
            return self.err(start, ErrorKind::InvalidInteger);
        }
        let mut n: i64 = 0;
        for &d in digits {
            let d = i64::from(d - b'0');
            // Accumulate toward the sign so that i64::MIN parses.
            let next = n.checked_mul(10).and_then(|n| {
                if negative {
                    n.checked_sub(d)
                } else {
                    n.checked_add(d)
                }
            });
            match next {
                Some(v) => n = v,
                None => return self.err(start, ErrorKind::InvalidInteger),
            }
        }
        self.pos = p + 1;
        Ok(n)
    }

    /// `<len>:<bytes>` at `self.pos` (which holds a digit).
    fn bytes(&mut self) -> Result<&'a [u8], BencodeError> {
        let start = self.pos;
        let mut p = start;
        let mut len: usize = 0;
        while let Some(&b) = self.input.get(p) {
            if !b.is_ascii_digit() {
                break;
            }
            // Saturate: any overflowing length is over every limit anyway.
            len = len.saturating_mul(10).saturating_add(usize::from(b - b'0'));
            p += 1;
        }
        match self.input.get(p) {
            None => return self.err(self.input.len(), ErrorKind::UnexpectedEof),
            Some(b':') => {}
            Some(&b) => return self.err(p, ErrorKind::UnexpectedByte(b)),
        }
        let digits = p - start;
        if digits == 0 || (digits > 1 && self.input.get(start) == Some(&b'0')) {
            return self.err(start, ErrorKind::InvalidLength);
        }
        if len > self.limits.max_bytes_len {
            return self.err(start, ErrorKind::TooLong);
        }
        let data_start = p + 1;
        let data = data_start
            .checked_add(len)
            .and_then(|end| self.input.get(data_start..end));
        match data {
            Some(data) => {
                self.pos = data_start + len;
                Ok(data)
            }
            None => self.err(self.input.len(), ErrorKind::UnexpectedEof),
        }
    }
}

/// Records `k` as the next key of a dict; false when it repeats an earlier key.
fn note_key<'a>(
    entries: &[(&'a [u8], Value<'a>)],
    seen: &mut Option<BTreeSet<&'a [u8]>>,
    k: &'a [u8],
) -> bool {
    if let Some(set) = seen {
        return set.insert(k);
    }
    match entries.last() {
        None => true,
        // Keys so far are sorted, so a key past the last one is new.
        Some((last, _)) if k > *last => true,
        Some(_) => {
            let mut set: BTreeSet<&'a [u8]> = entries.iter().map(|(k, _)| *k).collect();
            let fresh = set.insert(k);
            *seen = Some(set);
            fresh
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn kind(input: &[u8]) -> ErrorKind {
        decode(input).unwrap_err().kind
    }

    fn err(input: &[u8]) -> BencodeError {
        decode(input).unwrap_err()
    }

    #[test]
    fn scalars() {
        assert_eq!(decode(b"i0e").unwrap(), Value::Int(0));
        assert_eq!(decode(b"i-42e").unwrap(), Value::Int(-42));
        assert_eq!(
            decode(b"i9223372036854775807e").unwrap(),
            Value::Int(i64::MAX)
        );
        assert_eq!(
            decode(b"i-9223372036854775808e").unwrap(),
            Value::Int(i64::MIN)
        );
        assert_eq!(decode(b"0:").unwrap(), Value::Bytes(b""));
        assert_eq!(decode(b"4:spam").unwrap(), Value::Bytes(b"spam"));
    }

    #[test]
    fn strings_borrow_from_the_input() {
        let input = b"l4:spame".to_vec();
        let v = decode(&input).unwrap();
        let s = v.as_list().unwrap()[0].as_bytes().unwrap();
        assert_eq!(s.as_ptr(), input[3..].as_ptr());
    }

    #[test]
    fn strict_integers() {
        for bad in [
            &b"ie"[..],
            b"i-e",
            b"i-0e",
            b"i00e",
            b"i01e",
            b"i-01e",
            b"i9223372036854775808e",
            b"i-9223372036854775809e",
            b"i99999999999999999999999999e",
        ] {
            assert_eq!(
                err(bad),
                BencodeError {
                    offset: 0,
                    kind: ErrorKind::InvalidInteger
                },
                "{bad:?}"
            );
        }
        assert_eq!(kind(b"i1"), ErrorKind::UnexpectedEof);
        assert_eq!(kind(b"i"), ErrorKind::UnexpectedEof);
        assert_eq!(
            err(b"i1x"),
            BencodeError {
                offset: 2,
                kind: ErrorKind::UnexpectedByte(b'x')
            }
        );
        assert_eq!(kind(b"i+1e"), ErrorKind::UnexpectedByte(b'+'));
        assert_eq!(kind(b"i1.5e"), ErrorKind::UnexpectedByte(b'.'));
    }

    #[test]
    fn string_lengths_are_checked_before_slicing() {
        assert_eq!(kind(b"5:abc"), ErrorKind::UnexpectedEof);
        assert_eq!(kind(b"03:abc"), ErrorKind::InvalidLength);
        assert_eq!(kind(b"3abc"), ErrorKind::UnexpectedByte(b'a'));
        assert_eq!(kind(b"3"), ErrorKind::UnexpectedEof);
        assert_eq!(kind(b"99999999999999999999999999999:x"), ErrorKind::TooLong);
        assert_eq!(kind(b"18446744073709551615:x"), ErrorKind::TooLong);
        let tight = Limits {
            max_bytes_len: 3,
            ..Limits::default()
        };
        assert!(decode_with(b"3:abc", &tight).is_ok());
        assert_eq!(
            decode_with(b"4:abcd", &tight).unwrap_err(),
            BencodeError {
                offset: 0,
                kind: ErrorKind::TooLong
            }
        );
        let huge = Limits {
            max_bytes_len: usize::MAX,
            ..Limits::default()
        };
        assert_eq!(
            decode_with(b"18446744073709551615:x", &huge)
                .unwrap_err()
                .kind,
            ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn lists_and_dicts() {
        let v = decode(b"d3:cow3:moo4:spaml1:ai7eee").unwrap();
        let d = v.as_dict().unwrap();
        assert_eq!(d.get(b"cow").unwrap().as_str(), Some("moo"));
        let l = d.get(b"spam").unwrap().as_list().unwrap();
        assert_eq!(l, &[Value::Bytes(b"a"), Value::Int(7)]);
        assert_eq!(d.raw, b"d3:cow3:moo4:spaml1:ai7eee");
        assert!(d.get(b"nope").is_none());
        assert_eq!(decode(b"le").unwrap(), Value::List(vec![]));
        assert_eq!(decode(b"de").unwrap().as_dict().unwrap().entries.len(), 0);
    }

    #[test]
    fn raw_is_the_exact_input_of_nested_dicts() {
        let input = b"d1:ad1:zi1e1:yi2ee1:bi3ee";
        let v = decode(input).unwrap();
        let inner = v.as_dict().unwrap().get(b"a").unwrap().as_dict().unwrap();
        // Unsorted keys kept in input order, raw verbatim (not re-encoded).
        assert_eq!(inner.raw, b"d1:zi1e1:yi2ee");
        assert_eq!(inner.entries[0].0, b"z");
        assert_eq!(encode(&Value::Dict(inner.clone())), b"d1:yi2e1:zi1ee");
    }

    #[test]
    fn duplicate_keys_are_rejected_sorted_or_not() {
        assert_eq!(
            err(b"d1:ai1e1:ai2ee"),
            BencodeError {
                offset: 7,
                kind: ErrorKind::DuplicateKey
            }
        );
        assert_eq!(kind(b"d1:bi1e1:ai2e1:bi3ee"), ErrorKind::DuplicateKey);
        assert_eq!(kind(b"d1:bi1e1:ai2e1:ci3e1:ai4ee"), ErrorKind::DuplicateKey);
        assert!(decode(b"d1:bi1e1:ai2e1:ci3ee").is_ok());
    }

    #[test]
    fn dict_structure_errors() {
        assert_eq!(kind(b"di1ei2ee"), ErrorKind::NonStringKey);
        assert_eq!(kind(b"dle1:ae"), ErrorKind::NonStringKey);
        assert_eq!(kind(b"d1:ae"), ErrorKind::UnexpectedByte(b'e'));
        assert_eq!(kind(b"d1:a"), ErrorKind::UnexpectedEof);
        assert_eq!(kind(b"d"), ErrorKind::UnexpectedEof);
        assert_eq!(kind(b"l"), ErrorKind::UnexpectedEof);
        assert_eq!(kind(b"e"), ErrorKind::UnexpectedByte(b'e'));
        assert_eq!(kind(b""), ErrorKind::UnexpectedEof);
        assert_eq!(kind(b"x"), ErrorKind::UnexpectedByte(b'x'));
        assert_eq!(kind(b"lxe"), ErrorKind::UnexpectedByte(b'x'));
    }

    #[test]
    fn trailing_bytes_and_prefix() {
        assert_eq!(
            err(b"i1ei2e"),
            BencodeError {
                offset: 3,
                kind: ErrorKind::TrailingBytes
            }
        );
        let (v, used) = decode_prefix(b"d1:ai1eeRAW", &Limits::default()).unwrap();
        assert_eq!(used, 8);
        assert_eq!(v.as_dict().unwrap().get(b"a").unwrap().as_int(), Some(1));
    }

    #[test]
    fn depth_limit() {
        let limits = Limits {
            max_depth: 3,
            ..Limits::default()
        };
        assert!(decode_with(b"llleee", &limits).is_ok());
        assert_eq!(
            decode_with(b"lllleeee", &limits).unwrap_err(),
            BencodeError {
                offset: 3,
                kind: ErrorKind::TooDeep
            }
        );
        let zero = Limits {
            max_depth: 0,
            ..Limits::default()
        };
        assert_eq!(
            decode_with(b"de", &zero).unwrap_err().kind,
            ErrorKind::TooDeep
        );
        assert!(decode_with(b"i1e", &zero).is_ok());
        // Deep input does not touch the call stack.
        let deep = [vec![b'l'; 100_000], vec![b'e'; 100_000]].concat();
        assert_eq!(kind(&deep), ErrorKind::TooDeep);
    }

    #[test]
    fn item_limit() {
        let limits = Limits {
            max_items: 2,
            ..Limits::default()
        };
        assert!(decode_with(b"li1ei2ee", &limits).is_ok());
        assert_eq!(
            decode_with(b"li1ei2ei3ee", &limits).unwrap_err(),
            BencodeError {
                offset: 7,
                kind: ErrorKind::TooManyItems
            }
        );
        assert!(decode_with(b"d1:ai1e1:bi2ee", &limits).is_ok());
        assert_eq!(
            decode_with(b"d1:ai1e1:bi2e1:ci3ee", &limits)
                .unwrap_err()
                .kind,
            ErrorKind::TooManyItems
        );
    }

    #[test]
    fn accessors() {
        let v = Value::Bytes(b"\xff");
        assert_eq!(v.as_bytes(), Some(&b"\xff"[..]));
        assert_eq!(v.as_str(), None);
        assert_eq!(v.as_int(), None);
        assert_eq!(v.as_list(), None);
        assert_eq!(v.as_dict(), None);
        assert_eq!(Value::Int(3).as_int(), Some(3));
    }

    #[test]
    fn encode_is_canonical() {
        let v = dict([
            (&b"zz"[..], Value::Int(-3)),
            (b"a", Value::List(vec![Value::Bytes(b"x"), Value::Int(0)])),
            (b"m", dict([])),
        ]);
        assert_eq!(encode(&v), b"d1:al1:xi0ee1:mde2:zzi-3ee");
    }

    /// An owned mirror of `Value` for generating test data.
    #[derive(Clone, Debug, PartialEq)]
    enum Owned {
        Int(i64),
        Bytes(Vec<u8>),
        List(Vec<Owned>),
        Dict(BTreeMap<Vec<u8>, Owned>),
    }

    fn borrow(o: &Owned) -> Value<'_> {
        match o {
            Owned::Int(i) => Value::Int(*i),
            Owned::Bytes(b) => Value::Bytes(b),
            Owned::List(l) => Value::List(l.iter().map(borrow).collect()),
            Owned::Dict(d) => dict(d.iter().map(|(k, v)| (&k[..], borrow(v)))),
        }
    }

    fn own(v: &Value<'_>) -> Owned {
        match v {
            Value::Int(i) => Owned::Int(*i),
            Value::Bytes(b) => Owned::Bytes(b.to_vec()),
            Value::List(l) => Owned::List(l.iter().map(own).collect()),
            Value::Dict(d) => Owned::Dict(
                d.entries
                    .iter()
                    .map(|(k, v)| (k.to_vec(), own(v)))
                    .collect(),
            ),
        }
    }

    fn arb_owned() -> impl Strategy<Value = Owned> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Owned::Int),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(Owned::Bytes),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Owned::List),
                proptest::collection::btree_map(
                    proptest::collection::vec(any::<u8>(), 0..6),
                    inner,
                    0..6
                )
                .prop_map(Owned::Dict),
            ]
        })
    }

    fn check_raw(v: &Value<'_>) {
        match v {
            Value::Dict(d) => {
                // Canonical input: raw equals the re-encoding.
                assert_eq!(d.raw, &encode(v)[..]);
                d.entries.iter().for_each(|(_, v)| check_raw(v));
            }
            Value::List(l) => l.iter().for_each(check_raw),
            _ => {}
        }
    }

    proptest! {
        #[test]
        fn round_trip(o in arb_owned()) {
            let bytes = encode(&borrow(&o));
            let decoded = decode(&bytes).unwrap();
            prop_assert_eq!(own(&decoded), o);
            prop_assert_eq!(encode(&decoded), bytes.clone());
            check_raw(&decoded);
            let mut extended = bytes.clone();
            extended.extend_from_slice(b"tail");
            let (v, used) = decode_prefix(&extended, &Limits::default()).unwrap();
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(v, decoded);
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
            let _ = decode_prefix(&bytes, &Limits { max_depth: 4, max_bytes_len: 8, max_items: 4 });
        }

        #[test]
        fn never_panics_on_mutated_encodings(
            o in arb_owned(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = encode(&borrow(&o));
            for (i, b) in flips {
                let i = i.index(bytes.len());
                bytes[i] = b;
            }
            let _ = decode(&bytes);
            let _ = decode(&bytes[..cut.index(bytes.len() + 1)]);
        }
    }
}
