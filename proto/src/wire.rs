//! The BitTorrent peer wire: handshake, BEP 3 messages, BEP 6 fast extension, BEP 10
//! extended messages, and a streaming framer that hands out piece payloads in place so
//! the receive path copies each byte once. Pure: no I/O, no clocks, no `unsafe`, and no
//! input can make it panic.
//!
//! # Framing
//!
//! After the 68-byte [`Handshake`], the stream is a sequence of frames: a 4-byte big-endian
//! length, then that many bytes of body (`id` + payload); a zero length is a keep-alive.
//! [`Message::encode`] writes whole frames; [`Message::decode`] reads one body.
//!
//! [`Framer`] is the receive hot path. It is fed whatever a `recv` returned and reports
//! [`Event`]s through a callback:
//!
//! - a frame lying wholly inside the current input is decoded in place (the event borrows
//!   the input, nothing is copied);
//! - a non-PIECE frame cut across inputs is gathered in a small stash whose allocation is
//!   reused, then decoded from there;
//! - PIECE data is never gathered: each contiguous part is reported as an [`Event::Block`]
//!   as soon as it arrives, so the caller copies it once, straight into the piece buffer.
//!   Only the 8-byte index/begin header of a PIECE can be held back, when it is itself cut.

/// The protocol string of the handshake.
pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";
pub const HANDSHAKE_LEN: usize = 68;
/// Standard request size.
pub const BLOCK_SIZE: u32 = 16 * 1024;
/// Largest block we serve or accept in a REQUEST (BEP 3 clients use ≤ 16 KiB; 128 KiB is the
/// usual hard limit).
pub const MAX_BLOCK_SIZE: u32 = 128 * 1024;
/// Default largest frame (length prefix value) accepted by [`Framer`].
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;

/// Bytes of a PIECE frame body before the block data: id, index, begin.
const PIECE_BODY_HEADER: u32 = 9;
/// A stash grown past this by one large message is released once that message is decoded.
const STASH_KEEP: usize = 64 * 1024;

const PIECE_TOO_SHORT: WireError = WireError::Malformed {
    id: ID_PIECE,
    reason: "piece shorter than its 8-byte index/begin header",
};

const ID_CHOKE: u8 = 0;
const ID_UNCHOKE: u8 = 1;
const ID_INTERESTED: u8 = 2;
const ID_NOT_INTERESTED: u8 = 3;
const ID_HAVE: u8 = 4;
const ID_BITFIELD: u8 = 5;
const ID_REQUEST: u8 = 6;
const ID_PIECE: u8 = 7;
const ID_CANCEL: u8 = 8;
const ID_PORT: u8 = 9;
const ID_SUGGEST: u8 = 0x0D;
const ID_HAVE_ALL: u8 = 0x0E;
const ID_HAVE_NONE: u8 = 0x0F;
const ID_REJECT: u8 = 0x10;
const ID_ALLOWED_FAST: u8 = 0x11;
const ID_EXTENDED: u8 = 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("handshake: {0}")]
    BadHandshake(&'static str),
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLong { len: u32, max: u32 },
    #[error("message id {id}: {reason}")]
    Malformed { id: u8, reason: &'static str },
}

/// The 68-byte handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub reserved: [u8; 8],
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
}

impl Handshake {
    /// Ours: sets the BEP 10 extension bit (reserved[5] & 0x10) and the BEP 6 fast bit
    /// (reserved[7] & 0x04).
    pub fn new(info_hash: [u8; 20], peer_id: [u8; 20]) -> Self {
        let mut reserved = [0u8; 8];
        reserved[5] |= 0x10;
        reserved[7] |= 0x04;
        Handshake {
            reserved,
            info_hash,
            peer_id,
        }
    }

    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        out[0] = PROTOCOL.len() as u8;
        out[1..20].copy_from_slice(PROTOCOL);
        out[20..28].copy_from_slice(&self.reserved);
        out[28..48].copy_from_slice(&self.info_hash);
        out[48..68].copy_from_slice(&self.peer_id);
        out
    }

    /// Decodes the handshake at the start of `bytes`, which must hold at least
    /// [`HANDSHAKE_LEN`] bytes; anything after the first 68 (the peer's first messages, read
    /// in the same `recv`) is ignored and left to the caller.
    pub fn decode(bytes: &[u8]) -> Result<Handshake, WireError> {
        const SHORT: WireError = WireError::BadHandshake("shorter than 68 bytes");
        let mut r = bytes;
        let [pstrlen] = take::<1>(&mut r).ok_or(SHORT)?;
        if usize::from(pstrlen) != PROTOCOL.len() {
            return Err(WireError::BadHandshake("protocol string length is not 19"));
        }
        let pstr = take::<19>(&mut r).ok_or(SHORT)?;
        if &pstr != PROTOCOL {
            return Err(WireError::BadHandshake(
                "protocol string is not \"BitTorrent protocol\"",
            ));
        }
        Ok(Handshake {
            reserved: take(&mut r).ok_or(SHORT)?,
            info_hash: take(&mut r).ok_or(SHORT)?,
            peer_id: take(&mut r).ok_or(SHORT)?,
        })
    }

    pub fn supports_extensions(&self) -> bool {
        self.reserved[5] & 0x10 != 0
    }

    pub fn supports_fast(&self) -> bool {
        self.reserved[7] & 0x04 != 0
    }
}

/// A peer message. `Piece` borrows its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have {
        index: u32,
    },
    Bitfield {
        bits: &'a [u8],
    },
    Request {
        index: u32,
        begin: u32,
        length: u32,
    },
    Piece {
        index: u32,
        begin: u32,
        data: &'a [u8],
    },
    Cancel {
        index: u32,
        begin: u32,
        length: u32,
    },
    Port {
        port: u16,
    },
    // BEP 6
    Suggest {
        index: u32,
    },
    HaveAll,
    HaveNone,
    Reject {
        index: u32,
        begin: u32,
        length: u32,
    },
    AllowedFast {
        index: u32,
    },
    // BEP 10
    Extended {
        id: u8,
        payload: &'a [u8],
    },
    /// An id we do not know: ignored, not an error (forward compatibility).
    Unknown {
        id: u8,
    },
}

/// Takes the next `N` bytes off the front of `r`.
#[inline]
fn take<const N: usize>(r: &mut &[u8]) -> Option<[u8; N]> {
    let (head, tail) = r.split_first_chunk::<N>()?;
    *r = tail;
    Some(*head)
}

/// Appends a length prefix and id.
///
/// # Panics
/// If `body_len` does not fit the 32-bit length prefix (a message of 4 GiB): encoding is
/// of our own data, never of input, so this is a caller bug.
#[inline]
fn put_head(out: &mut Vec<u8>, body_len: usize, id: u8) {
    let len = u32::try_from(body_len).expect("peer message longer than the 32-bit length prefix");
    out.extend_from_slice(&len.to_be_bytes());
    out.push(id);
}

#[inline]
fn put_triple(out: &mut Vec<u8>, id: u8, a: u32, b: u32, c: u32) {
    put_head(out, 13, id);
    out.extend_from_slice(&a.to_be_bytes());
    out.extend_from_slice(&b.to_be_bytes());
    out.extend_from_slice(&c.to_be_bytes());
}

#[inline]
fn put_index(out: &mut Vec<u8>, id: u8, index: u32) {
    put_head(out, 5, id);
    out.extend_from_slice(&index.to_be_bytes());
}

const EMPTY: &str = "payload must be empty";
const TWO: &str = "payload must be 2 bytes";
const FOUR: &str = "payload must be 4 bytes";
const TWELVE: &str = "payload must be 12 bytes";

/// The payload size of a fixed-size message id, and the complaint when it is wrong.
fn fixed_payload(id: u8) -> Option<(u32, &'static str)> {
    match id {
        ID_CHOKE | ID_UNCHOKE | ID_INTERESTED | ID_NOT_INTERESTED | ID_HAVE_ALL | ID_HAVE_NONE => {
            Some((0, EMPTY))
        }
        ID_PORT => Some((2, TWO)),
        ID_HAVE | ID_SUGGEST | ID_ALLOWED_FAST => Some((4, FOUR)),
        ID_REQUEST | ID_CANCEL | ID_REJECT => Some((12, TWELVE)),
        _ => None,
    }
}

/// The payload of a fixed-size message, checked to be exactly `N` bytes.
#[inline]
fn fixed<const N: usize>(
    id: u8,
    payload: &[u8],
    reason: &'static str,
) -> Result<[u8; N], WireError> {
    <[u8; N]>::try_from(payload).map_err(|_| WireError::Malformed { id, reason })
}

#[inline]
fn be32(b: [u8; 4]) -> u32 {
    u32::from_be_bytes(b)
}

/// Splits 12 bytes into three big-endian integers.
#[inline]
fn triple(p: [u8; 12]) -> (u32, u32, u32) {
    let [a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3] = p;
    (
        be32([a0, a1, a2, a3]),
        be32([b0, b1, b2, b3]),
        be32([c0, c1, c2, c3]),
    )
}

/// Splits 8 bytes into two big-endian integers.
#[inline]
fn pair(p: [u8; 8]) -> (u32, u32) {
    let [a0, a1, a2, a3, b0, b1, b2, b3] = p;
    (be32([a0, a1, a2, a3]), be32([b0, b1, b2, b3]))
}

impl<'a> Message<'a> {
    /// Appends the framed message (4-byte length prefix included).
    ///
    /// `Unknown { id }` is written as a bare id with no payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Message::KeepAlive => out.extend_from_slice(&[0; 4]),
            Message::Choke => put_head(out, 1, ID_CHOKE),
            Message::Unchoke => put_head(out, 1, ID_UNCHOKE),
            Message::Interested => put_head(out, 1, ID_INTERESTED),
            Message::NotInterested => put_head(out, 1, ID_NOT_INTERESTED),
            Message::Have { index } => put_index(out, ID_HAVE, index),
            Message::Bitfield { bits } => {
                out.reserve(5 + bits.len());
                put_head(out, 1 + bits.len(), ID_BITFIELD);
                out.extend_from_slice(bits);
            }
            Message::Request {
                index,
                begin,
                length,
            } => put_triple(out, ID_REQUEST, index, begin, length),
            Message::Piece { index, begin, data } => {
                out.reserve(13 + data.len());
                put_head(out, 9 + data.len(), ID_PIECE);
                out.extend_from_slice(&index.to_be_bytes());
                out.extend_from_slice(&begin.to_be_bytes());
                out.extend_from_slice(data);
            }
            Message::Cancel {
                index,
                begin,
                length,
            } => put_triple(out, ID_CANCEL, index, begin, length),
            Message::Port { port } => {
                put_head(out, 3, ID_PORT);
                out.extend_from_slice(&port.to_be_bytes());
            }
            Message::Suggest { index } => put_index(out, ID_SUGGEST, index),
            Message::HaveAll => put_head(out, 1, ID_HAVE_ALL),
            Message::HaveNone => put_head(out, 1, ID_HAVE_NONE),
            Message::Reject {
                index,
                begin,
                length,
            } => put_triple(out, ID_REJECT, index, begin, length),
            Message::AllowedFast { index } => put_index(out, ID_ALLOWED_FAST, index),
            Message::Extended { id, payload } => {
                out.reserve(6 + payload.len());
                put_head(out, 2 + payload.len(), ID_EXTENDED);
                out.push(id);
                out.extend_from_slice(payload);
            }
            Message::Unknown { id } => put_head(out, 1, id),
        }
    }

    /// The number of bytes [`Message::encode`] appends (length prefix included).
    pub fn encoded_len(&self) -> usize {
        4 + match *self {
            Message::KeepAlive => 0,
            Message::Choke
            | Message::Unchoke
            | Message::Interested
            | Message::NotInterested
            | Message::HaveAll
            | Message::HaveNone
            | Message::Unknown { .. } => 1,
            Message::Have { .. } | Message::Suggest { .. } | Message::AllowedFast { .. } => 5,
            Message::Bitfield { bits } => 1 + bits.len(),
            Message::Request { .. } | Message::Cancel { .. } | Message::Reject { .. } => 13,
            Message::Piece { data, .. } => 9 + data.len(),
            Message::Port { .. } => 3,
            Message::Extended { payload, .. } => 2 + payload.len(),
        }
    }

    /// Decodes one frame body (id + payload, no length prefix); empty is KeepAlive.
    /// Checks fixed sizes per id.
    pub fn decode(frame: &'a [u8]) -> Result<Message<'a>, WireError> {
        let Some((&id, p)) = frame.split_first() else {
            return Ok(Message::KeepAlive);
        };
        Ok(match id {
            ID_CHOKE => fixed::<0>(id, p, EMPTY).map(|_| Message::Choke)?,
            ID_UNCHOKE => fixed::<0>(id, p, EMPTY).map(|_| Message::Unchoke)?,
            ID_INTERESTED => fixed::<0>(id, p, EMPTY).map(|_| Message::Interested)?,
            ID_NOT_INTERESTED => fixed::<0>(id, p, EMPTY).map(|_| Message::NotInterested)?,
            ID_HAVE_ALL => fixed::<0>(id, p, EMPTY).map(|_| Message::HaveAll)?,
            ID_HAVE_NONE => fixed::<0>(id, p, EMPTY).map(|_| Message::HaveNone)?,
            ID_HAVE => Message::Have {
                index: be32(fixed(id, p, FOUR)?),
            },
            ID_SUGGEST => Message::Suggest {
                index: be32(fixed(id, p, FOUR)?),
            },
            ID_ALLOWED_FAST => Message::AllowedFast {
                index: be32(fixed(id, p, FOUR)?),
            },
            ID_BITFIELD => Message::Bitfield { bits: p },
            ID_REQUEST | ID_CANCEL | ID_REJECT => {
                let (index, begin, length) = triple(fixed(id, p, TWELVE)?);
                match id {
                    ID_REQUEST => Message::Request {
                        index,
                        begin,
                        length,
                    },
                    ID_CANCEL => Message::Cancel {
                        index,
                        begin,
                        length,
                    },
                    _ => Message::Reject {
                        index,
                        begin,
                        length,
                    },
                }
            }
            ID_PIECE => {
                let Some((head, data)) = p.split_first_chunk::<8>() else {
                    return Err(PIECE_TOO_SHORT);
                };
                let (index, begin) = pair(*head);
                Message::Piece { index, begin, data }
            }
            ID_PORT => Message::Port {
                port: u16::from_be_bytes(fixed(id, p, TWO)?),
            },
            ID_EXTENDED => {
                let Some((&ext, payload)) = p.split_first() else {
                    return Err(WireError::Malformed {
                        id,
                        reason: "extended message without an extension id",
                    });
                };
                Message::Extended { id: ext, payload }
            }
            _ => Message::Unknown { id },
        })
    }
}

/// The 13 bytes before a block's data in a PIECE message (length prefix, id 7, index, begin).
///
/// `data_len` must be at most `u32::MAX - 9` (blocks are ≤ [`MAX_BLOCK_SIZE`]); a larger value
/// wraps the length prefix.
pub fn piece_header(index: u32, begin: u32, data_len: u32) -> [u8; 13] {
    let mut h = [0u8; 13];
    h[0..4].copy_from_slice(&data_len.wrapping_add(PIECE_BODY_HEADER).to_be_bytes());
    h[4] = ID_PIECE;
    h[5..9].copy_from_slice(&index.to_be_bytes());
    h[9..13].copy_from_slice(&begin.to_be_bytes());
    h
}

/// What the framer found in the byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// Any message but PIECE.
    Message(Message<'a>),
    /// Part of a PIECE message's data: `data` belongs at `begin + offset` of piece `index`;
    /// the block is whole when `offset + data.len() == block_len`. A block arrives as one or
    /// more such events, in order; a zero-length block yields one event with empty data.
    Block {
        index: u32,
        begin: u32,
        block_len: u32,
        offset: u32,
        data: &'a [u8],
    },
}

/// Where the framer is in the stream.
#[derive(Clone, Copy, Debug)]
enum State {
    /// Between frames (`have == 0`) or inside a length prefix, `have` bytes of which are in
    /// `buf`.
    Len { buf: [u8; 4], have: u8 },
    /// The length prefix (`len` ≥ 1) is read; the id byte has not arrived yet.
    Id { len: u32 },
    /// A non-PIECE frame body of `len` bytes is being gathered in the stash.
    Body { len: u32 },
    /// A PIECE's index/begin header is cut: `have` of its 8 bytes are in `buf`.
    PieceHeader {
        block_len: u32,
        buf: [u8; 8],
        have: u8,
    },
    /// A PIECE's data is streaming; `offset` bytes of `block_len` have been handed out.
    PieceData {
        index: u32,
        begin: u32,
        block_len: u32,
        offset: u32,
    },
}

const BETWEEN_FRAMES: State = State::Len {
    buf: [0; 4],
    have: 0,
};

/// Moves bytes from `rest` into the partly filled `buf`; true once `buf` is full.
#[inline]
fn fill<const N: usize>(buf: &mut [u8; N], have: &mut u8, rest: &mut &[u8]) -> bool {
    let start = usize::from(*have);
    let n = N.saturating_sub(start).min(rest.len());
    let (src, tail) = rest.split_at(n);
    if let Some(dst) = buf.get_mut(start..start + n) {
        dst.copy_from_slice(src);
    }
    *rest = tail;
    let filled = start + n;
    *have = u8::try_from(filled).unwrap_or(u8::MAX);
    filled >= N
}

/// Reports one whole frame body, in place.
#[inline]
fn emit_whole<E: From<WireError>>(
    body: &[u8],
    on_event: &mut impl FnMut(Event<'_>) -> Result<(), E>,
) -> Result<(), E> {
    match Message::decode(body)? {
        Message::Piece { index, begin, data } => on_event(Event::Block {
            index,
            begin,
            // ≤ the frame length, which is a u32.
            block_len: u32::try_from(data.len()).unwrap_or(u32::MAX),
            offset: 0,
            data,
        }),
        msg => on_event(Event::Message(msg)),
    }
}

/// A streaming decoder for the bytes after the handshake. Input may be cut anywhere.
/// Messages that lie whole inside one `feed` call are decoded in place; a message cut across
/// calls is reassembled in a small stash, except PIECE data, which is handed out in parts
/// and never stashed.
#[derive(Debug)]
pub struct Framer {
    max_frame: u32,
    state: State,
    /// The body of a non-PIECE frame cut across feeds; cleared, not freed, between uses.
    stash: Vec<u8>,
}

impl Default for Framer {
    /// A framer accepting frames up to [`DEFAULT_MAX_FRAME`].
    fn default() -> Self {
        Framer::new(DEFAULT_MAX_FRAME)
    }
}

impl Framer {
    pub fn new(max_frame: u32) -> Self {
        Framer {
            max_frame,
            state: BETWEEN_FRAMES,
            stash: Vec::new(),
        }
    }

    /// The largest frame length accepted.
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// True when every byte fed so far belongs to a complete frame (nothing is pending:
    /// the stream could end here cleanly).
    pub fn at_frame_boundary(&self) -> bool {
        matches!(self.state, State::Len { have: 0, .. })
    }

    #[inline]
    fn check_len(&self, len: u32) -> Result<(), WireError> {
        if len > self.max_frame {
            Err(WireError::TooLong {
                len,
                max: self.max_frame,
            })
        } else {
            Ok(())
        }
    }

    /// Feeds bytes, calling `on_event` for each event in order. The first malformed frame
    /// (or the first error from `on_event`) stops the feed and is returned; the framer must
    /// not be fed after an error.
    pub fn feed<E: From<WireError>>(
        &mut self,
        input: &[u8],
        mut on_event: impl FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut rest = input;
        'feed: loop {
            match self.state {
                State::Len { mut buf, mut have } => {
                    if have == 0 {
                        // Fast path: frames lying whole in the input, decoded in place.
                        while let Some((prefix, after)) = rest.split_first_chunk::<4>() {
                            let len = u32::from_be_bytes(*prefix);
                            self.check_len(len)?;
                            let Some((body, next)) = after.split_at_checked(len as usize) else {
                                // Cut (so len ≥ 1: an empty body always fits).
                                rest = after;
                                self.state = State::Id { len };
                                continue 'feed;
                            };
                            emit_whole(body, &mut on_event)?;
                            rest = next;
                        }
                        if rest.is_empty() {
                            return Ok(());
                        }
                    }
                    // Fewer than 4 bytes of a length prefix are available.
                    if !fill(&mut buf, &mut have, &mut rest) {
                        self.state = State::Len { buf, have };
                        return Ok(());
                    }
                    let len = u32::from_be_bytes(buf);
                    self.check_len(len)?;
                    if len == 0 {
                        self.state = BETWEEN_FRAMES;
                        on_event(Event::Message(Message::KeepAlive))?;
                    } else {
                        self.state = State::Id { len };
                    }
                }
                State::Id { len } => {
                    let Some((&id, after_id)) = rest.split_first() else {
                        return Ok(());
                    };
                    if id == ID_PIECE {
                        let block_len =
                            len.checked_sub(PIECE_BODY_HEADER).ok_or(PIECE_TOO_SHORT)?;
                        rest = after_id;
                        self.state = State::PieceHeader {
                            block_len,
                            buf: [0; 8],
                            have: 0,
                        };
                    } else if let Some((body, next)) = rest.split_at_checked(len as usize) {
                        // The prefix was cut but the body is whole here.
                        self.state = BETWEEN_FRAMES;
                        emit_whole(body, &mut on_event)?;
                        rest = next;
                    } else {
                        // Refuse a wrong-sized fixed message now, not after stashing it.
                        if let Some((size, reason)) = fixed_payload(id) {
                            if len != size + 1 {
                                return Err(WireError::Malformed { id, reason }.into());
                            }
                        }
                        self.stash.clear();
                        self.stash.extend_from_slice(rest);
                        self.state = State::Body { len };
                        return Ok(());
                    }
                }
                State::Body { len } => {
                    let need = (len as usize).saturating_sub(self.stash.len());
                    let (part, tail) = rest.split_at(need.min(rest.len()));
                    self.stash.extend_from_slice(part);
                    rest = tail;
                    if self.stash.len() < len as usize {
                        return Ok(());
                    }
                    self.state = BETWEEN_FRAMES;
                    emit_whole(&self.stash, &mut on_event)?;
                    if self.stash.capacity() > STASH_KEEP {
                        self.stash = Vec::new();
                    }
                }
                State::PieceHeader {
                    block_len,
                    mut buf,
                    mut have,
                } => {
                    if !fill(&mut buf, &mut have, &mut rest) {
                        self.state = State::PieceHeader {
                            block_len,
                            buf,
                            have,
                        };
                        return Ok(());
                    }
                    let (index, begin) = pair(buf);
                    self.state = State::PieceData {
                        index,
                        begin,
                        block_len,
                        offset: 0,
                    };
                }
                State::PieceData {
                    index,
                    begin,
                    block_len,
                    offset,
                } => {
                    let remaining = block_len.saturating_sub(offset) as usize;
                    if remaining == 0 {
                        // Only a zero-length block gets here: one empty event.
                        self.state = BETWEEN_FRAMES;
                        on_event(Event::Block {
                            index,
                            begin,
                            block_len,
                            offset,
                            data: &[],
                        })?;
                        continue;
                    }
                    if rest.is_empty() {
                        return Ok(());
                    }
                    let (data, tail) = rest.split_at(remaining.min(rest.len()));
                    rest = tail;
                    // data.len() ≤ remaining ≤ block_len, a u32.
                    let next = offset.saturating_add(data.len() as u32);
                    self.state = if next >= block_len {
                        BETWEEN_FRAMES
                    } else {
                        State::PieceData {
                            index,
                            begin,
                            block_len,
                            offset: next,
                        }
                    };
                    on_event(Event::Block {
                        index,
                        begin,
                        block_len,
                        offset,
                        data,
                    })?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An owned mirror of [`Message`] (with `Piece` standing for a whole reassembled block).
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Owned {
        KeepAlive,
        Choke,
        Unchoke,
        Interested,
        NotInterested,
        Have(u32),
        Bitfield(Vec<u8>),
        Request(u32, u32, u32),
        Piece(u32, u32, Vec<u8>),
        Cancel(u32, u32, u32),
        Port(u16),
        Suggest(u32),
        HaveAll,
        HaveNone,
        Reject(u32, u32, u32),
        AllowedFast(u32),
        Extended(u8, Vec<u8>),
        Unknown(u8),
    }

    impl Owned {
        fn msg(&self) -> Message<'_> {
            match *self {
                Owned::KeepAlive => Message::KeepAlive,
                Owned::Choke => Message::Choke,
                Owned::Unchoke => Message::Unchoke,
                Owned::Interested => Message::Interested,
                Owned::NotInterested => Message::NotInterested,
                Owned::Have(index) => Message::Have { index },
                Owned::Bitfield(ref bits) => Message::Bitfield { bits },
                Owned::Request(index, begin, length) => Message::Request {
                    index,
                    begin,
                    length,
                },
                Owned::Piece(index, begin, ref data) => Message::Piece { index, begin, data },
                Owned::Cancel(index, begin, length) => Message::Cancel {
                    index,
                    begin,
                    length,
                },
                Owned::Port(port) => Message::Port { port },
                Owned::Suggest(index) => Message::Suggest { index },
                Owned::HaveAll => Message::HaveAll,
                Owned::HaveNone => Message::HaveNone,
                Owned::Reject(index, begin, length) => Message::Reject {
                    index,
                    begin,
                    length,
                },
                Owned::AllowedFast(index) => Message::AllowedFast { index },
                Owned::Extended(id, ref payload) => Message::Extended { id, payload },
                Owned::Unknown(id) => Message::Unknown { id },
            }
        }

        fn from_msg(m: &Message<'_>) -> Owned {
            match *m {
                Message::KeepAlive => Owned::KeepAlive,
                Message::Choke => Owned::Choke,
                Message::Unchoke => Owned::Unchoke,
                Message::Interested => Owned::Interested,
                Message::NotInterested => Owned::NotInterested,
                Message::Have { index } => Owned::Have(index),
                Message::Bitfield { bits } => Owned::Bitfield(bits.to_vec()),
                Message::Request {
                    index,
                    begin,
                    length,
                } => Owned::Request(index, begin, length),
                Message::Piece { index, begin, data } => Owned::Piece(index, begin, data.to_vec()),
                Message::Cancel {
                    index,
                    begin,
                    length,
                } => Owned::Cancel(index, begin, length),
                Message::Port { port } => Owned::Port(port),
                Message::Suggest { index } => Owned::Suggest(index),
                Message::HaveAll => Owned::HaveAll,
                Message::HaveNone => Owned::HaveNone,
                Message::Reject {
                    index,
                    begin,
                    length,
                } => Owned::Reject(index, begin, length),
                Message::AllowedFast { index } => Owned::AllowedFast(index),
                Message::Extended { id, payload } => Owned::Extended(id, payload.to_vec()),
                Message::Unknown { id } => Owned::Unknown(id),
            }
        }
    }

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..max)
    }

    /// Block data of varied sizes, cheap to generate: a seeded pattern.
    fn block_data() -> impl Strategy<Value = Vec<u8>> {
        let len = prop_oneof![
            3 => 0usize..64,
            2 => Just(BLOCK_SIZE as usize),
            2 => 0usize..40_000,
        ];
        (len, any::<u8>()).prop_map(|(n, seed)| {
            (0..n)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                .collect()
        })
    }

    fn unknown_id() -> impl Strategy<Value = u8> {
        prop_oneof![10u8..13, 18u8..20, 21u8..=255]
    }

    fn owned() -> impl Strategy<Value = Owned> {
        let t = || (any::<u32>(), any::<u32>(), any::<u32>());
        let piece =
            (any::<u32>(), any::<u32>(), block_data()).prop_map(|(a, b, d)| Owned::Piece(a, b, d));
        let others = prop_oneof![
            Just(Owned::KeepAlive),
            Just(Owned::Choke),
            Just(Owned::Unchoke),
            Just(Owned::Interested),
            Just(Owned::NotInterested),
            any::<u32>().prop_map(Owned::Have),
            bytes(300).prop_map(Owned::Bitfield),
            t().prop_map(|(a, b, c)| Owned::Request(a, b, c)),
            t().prop_map(|(a, b, c)| Owned::Cancel(a, b, c)),
            any::<u16>().prop_map(Owned::Port),
            any::<u32>().prop_map(Owned::Suggest),
            Just(Owned::HaveAll),
            Just(Owned::HaveNone),
            t().prop_map(|(a, b, c)| Owned::Reject(a, b, c)),
            any::<u32>().prop_map(Owned::AllowedFast),
            (any::<u8>(), bytes(300)).prop_map(|(id, p)| Owned::Extended(id, p)),
            unknown_id().prop_map(Owned::Unknown),
        ];
        // Pieces dominate a real stream.
        prop_oneof![3 => others, 1 => piece]
    }

    fn enc(m: &Message<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        m.encode(&mut out);
        out
    }

    /// Encodes, checks the length prefix, decodes the body.
    fn round_trip(m: &Message<'_>) -> Owned {
        let bytes = enc(m);
        assert_eq!(bytes.len(), m.encoded_len());
        let (prefix, body) = bytes.split_at(4);
        assert_eq!(
            u32::from_be_bytes(prefix.try_into().unwrap()) as usize,
            body.len()
        );
        Owned::from_msg(&Message::decode(body).unwrap())
    }

    /// Fields are read only through `Debug`, in failure messages.
    #[allow(dead_code)]
    #[derive(Debug)]
    enum TestErr {
        Wire(WireError),
        Check(String),
    }

    impl From<WireError> for TestErr {
        fn from(e: WireError) -> Self {
            TestErr::Wire(e)
        }
    }

    /// Collects a framer's events, joining block parts and checking their order.
    #[derive(Default)]
    struct Collector {
        out: Vec<Owned>,
        pending: Option<(u32, u32, u32, Vec<u8>)>,
    }

    impl Collector {
        fn on(&mut self, ev: Event<'_>) -> Result<(), TestErr> {
            let check = |ok: bool, what: &str| {
                if ok {
                    Ok(())
                } else {
                    Err(TestErr::Check(what.to_string()))
                }
            };
            match ev {
                Event::Message(m) => {
                    check(self.pending.is_none(), "message inside a block")?;
                    check(
                        !matches!(m, Message::Piece { .. }),
                        "piece as a message event",
                    )?;
                    self.out.push(Owned::from_msg(&m));
                }
                Event::Block {
                    index,
                    begin,
                    block_len,
                    offset,
                    data,
                } => {
                    let (i, b, l, mut buf) = match self.pending.take() {
                        None => {
                            check(offset == 0, "first part not at offset 0")?;
                            (index, begin, block_len, Vec::new())
                        }
                        Some(p) => p,
                    };
                    check(
                        (i, b, l) == (index, begin, block_len),
                        "part of another block",
                    )?;
                    check(offset as usize == buf.len(), "gap or overlap")?;
                    check(
                        !data.is_empty() || block_len == 0,
                        "empty part of a non-empty block",
                    )?;
                    buf.extend_from_slice(data);
                    check(buf.len() <= block_len as usize, "block overflow")?;
                    if buf.len() == block_len as usize {
                        self.out.push(Owned::Piece(index, begin, buf));
                    } else {
                        self.pending = Some((i, b, l, buf));
                    }
                }
            }
            Ok(())
        }
    }

    fn feed_chunks<'c>(
        framer: &mut Framer,
        chunks: impl IntoIterator<Item = &'c [u8]>,
    ) -> Result<Vec<Owned>, TestErr> {
        let mut c = Collector::default();
        for chunk in chunks {
            framer.feed(chunk, |ev| c.on(ev))?;
        }
        if c.pending.is_some() {
            return Err(TestErr::Check("unfinished block".into()));
        }
        Ok(c.out)
    }

    // ---- handshake ----

    #[test]
    fn handshake_round_trip_and_bits() {
        let h = Handshake::new([1; 20], [2; 20]);
        assert!(h.supports_extensions());
        assert!(h.supports_fast());
        assert_eq!(h.reserved, [0, 0, 0, 0, 0, 0x10, 0, 0x04]);
        let b = h.encode();
        assert_eq!(b[0], 19);
        assert_eq!(&b[1..20], PROTOCOL);
        assert_eq!(&b[28..48], &[1; 20]);
        assert_eq!(&b[48..68], &[2; 20]);
        assert_eq!(Handshake::decode(&b), Ok(h));
        // Trailing bytes (the peer's first messages) are left alone.
        let mut longer = b.to_vec();
        longer.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(Handshake::decode(&longer), Ok(h));

        let plain = Handshake {
            reserved: [0; 8],
            ..h
        };
        assert!(!plain.supports_extensions());
        assert!(!plain.supports_fast());
    }

    #[test]
    fn handshake_rejects_bad_input() {
        let b = Handshake::new([1; 20], [2; 20]).encode();
        assert!(matches!(
            Handshake::decode(&b[..67]),
            Err(WireError::BadHandshake(_))
        ));
        assert!(Handshake::decode(&[]).is_err());
        let mut bad_len = b;
        bad_len[0] = 18;
        assert!(Handshake::decode(&bad_len).is_err());
        let mut bad_str = b;
        bad_str[1] = b'b';
        assert!(Handshake::decode(&bad_str).is_err());
    }

    // ---- messages ----

    #[test]
    fn encodings_are_exact() {
        let cases: Vec<(Message<'_>, Vec<u8>)> = vec![
            (Message::KeepAlive, vec![0, 0, 0, 0]),
            (Message::Choke, vec![0, 0, 0, 1, 0]),
            (Message::Unchoke, vec![0, 0, 0, 1, 1]),
            (Message::Interested, vec![0, 0, 0, 1, 2]),
            (Message::NotInterested, vec![0, 0, 0, 1, 3]),
            (
                Message::Have { index: 0x01020304 },
                vec![0, 0, 0, 5, 4, 1, 2, 3, 4],
            ),
            (
                Message::Bitfield {
                    bits: &[0xff, 0x80],
                },
                vec![0, 0, 0, 3, 5, 0xff, 0x80],
            ),
            (
                Message::Request {
                    index: 1,
                    begin: 0x4000,
                    length: 0x4000,
                },
                vec![0, 0, 0, 13, 6, 0, 0, 0, 1, 0, 0, 0x40, 0, 0, 0, 0x40, 0],
            ),
            (
                Message::Piece {
                    index: 2,
                    begin: 3,
                    data: b"xy",
                },
                vec![0, 0, 0, 11, 7, 0, 0, 0, 2, 0, 0, 0, 3, b'x', b'y'],
            ),
            (
                Message::Cancel {
                    index: 1,
                    begin: 2,
                    length: 3,
                },
                vec![0, 0, 0, 13, 8, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3],
            ),
            (
                Message::Port { port: 6881 },
                vec![0, 0, 0, 3, 9, 0x1a, 0xe1],
            ),
            (
                Message::Suggest { index: 7 },
                vec![0, 0, 0, 5, 0x0d, 0, 0, 0, 7],
            ),
            (Message::HaveAll, vec![0, 0, 0, 1, 0x0e]),
            (Message::HaveNone, vec![0, 0, 0, 1, 0x0f]),
            (
                Message::Reject {
                    index: 1,
                    begin: 2,
                    length: 3,
                },
                vec![0, 0, 0, 13, 0x10, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3],
            ),
            (
                Message::AllowedFast { index: 9 },
                vec![0, 0, 0, 5, 0x11, 0, 0, 0, 9],
            ),
            (
                Message::Extended {
                    id: 0,
                    payload: b"de",
                },
                vec![0, 0, 0, 4, 20, 0, b'd', b'e'],
            ),
            (Message::Unknown { id: 0x42 }, vec![0, 0, 0, 1, 0x42]),
        ];
        for (msg, want) in cases {
            assert_eq!(enc(&msg), want, "{msg:?}");
            assert_eq!(msg.encoded_len(), want.len(), "{msg:?}");
            assert_eq!(Message::decode(&want[4..]), Ok(msg.clone()), "{msg:?}");
        }
    }

    #[test]
    fn empty_body_is_keepalive() {
        assert_eq!(Message::decode(&[]), Ok(Message::KeepAlive));
    }

    #[test]
    fn fixed_sizes_are_enforced() {
        let sized: [(u8, usize); 14] = [
            (0, 0),
            (1, 0),
            (2, 0),
            (3, 0),
            (4, 4),
            (6, 12),
            (8, 12),
            (9, 2),
            (0x0d, 4),
            (0x0e, 0),
            (0x0f, 0),
            (0x10, 12),
            (0x11, 4),
            (0x11, 4),
        ];
        for (id, size) in sized {
            let ok = [vec![id], vec![0; size]].concat();
            assert!(Message::decode(&ok).is_ok(), "id {id}");
            for wrong in [size + 1, size.wrapping_sub(1)] {
                if wrong > 20 {
                    continue;
                }
                let bad = [vec![id], vec![0; wrong]].concat();
                match Message::decode(&bad) {
                    Err(WireError::Malformed { id: got, reason }) => {
                        assert_eq!(got, id);
                        assert!(!reason.is_empty());
                    }
                    other => panic!("id {id} with {wrong} bytes: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn fixed_payload_table_matches_decode() {
        for id in 0..=255u8 {
            let Some((size, reason)) = fixed_payload(id) else {
                continue;
            };
            let ok = [vec![id], vec![0; size as usize]].concat();
            assert!(Message::decode(&ok).is_ok(), "id {id}");
            let bad = [vec![id], vec![0; size as usize + 1]].concat();
            assert_eq!(
                Message::decode(&bad),
                Err(WireError::Malformed { id, reason })
            );
        }
    }

    #[test]
    fn wrong_sized_fixed_message_is_refused_before_its_body() {
        // A HAVE claiming 1000 bytes: refused on seeing its id, nothing stashed.
        let mut framer = Framer::default();
        let r = framer.feed(&[0, 0, 3, 0xe8, 4, 0, 0], |_| Ok::<(), WireError>(()));
        assert!(matches!(r, Err(WireError::Malformed { id: 4, .. })));
        assert_eq!(framer.stash.capacity(), 0);
    }

    #[test]
    fn piece_and_extended_minimums() {
        for n in 0..8 {
            let body = [vec![7u8], vec![0; n]].concat();
            assert!(matches!(
                Message::decode(&body),
                Err(WireError::Malformed { id: 7, .. })
            ));
        }
        assert_eq!(
            Message::decode(&[7, 0, 0, 0, 1, 0, 0, 0, 2]),
            Ok(Message::Piece {
                index: 1,
                begin: 2,
                data: &[]
            })
        );
        assert!(matches!(
            Message::decode(&[20]),
            Err(WireError::Malformed { id: 20, .. })
        ));
        assert_eq!(
            Message::decode(&[20, 3]),
            Ok(Message::Extended {
                id: 3,
                payload: &[]
            })
        );
        assert_eq!(Message::decode(&[5]), Ok(Message::Bitfield { bits: &[] }));
    }

    #[test]
    fn unknown_ids_are_not_errors() {
        assert_eq!(
            Message::decode(&[0x42, 1, 2, 3]),
            Ok(Message::Unknown { id: 0x42 })
        );
        assert_eq!(Message::decode(&[10]), Ok(Message::Unknown { id: 10 }));
        assert_eq!(Message::decode(&[255]), Ok(Message::Unknown { id: 255 }));
    }

    #[test]
    fn piece_header_matches_encode() {
        let data = vec![9u8; 100];
        let full = enc(&Message::Piece {
            index: 5,
            begin: 16384,
            data: &data,
        });
        assert_eq!(&piece_header(5, 16384, 100)[..], &full[..13]);
        assert_eq!(piece_header(0, 0, 0)[..5], [0, 0, 0, 9, 7]);
    }

    // ---- framer ----

    #[test]
    fn whole_frames_are_decoded_in_place() {
        let data = vec![7u8; 1000];
        let mut stream = Vec::new();
        Message::Bitfield { bits: &[1, 2, 3] }.encode(&mut stream);
        Message::Piece {
            index: 1,
            begin: 0,
            data: &data,
        }
        .encode(&mut stream);
        let range = stream.as_ptr_range();
        let mut framer = Framer::default();
        let mut seen = 0;
        framer
            .feed(&stream, |ev| {
                let slice = match ev {
                    Event::Message(Message::Bitfield { bits }) => bits,
                    Event::Block { data, .. } => data,
                    other => panic!("{other:?}"),
                };
                assert!(range.contains(&slice.as_ptr()), "copied, not borrowed");
                seen += 1;
                Ok::<(), WireError>(())
            })
            .unwrap();
        assert_eq!(seen, 2);
        assert!(framer.at_frame_boundary());
    }

    #[test]
    fn block_parts_borrow_input_and_header_may_be_cut() {
        let data: Vec<u8> = (0..=255).collect();
        let stream = enc(&Message::Piece {
            index: 3,
            begin: 32,
            data: &data,
        });
        // Cut inside the length prefix, inside the index/begin header, and inside the data.
        let cuts = [2usize, 7, 10, 100, 200];
        let mut framer = Framer::new(1 << 16);
        let mut got = Vec::new();
        let mut start = 0;
        for end in cuts.into_iter().chain([stream.len()]) {
            let chunk = &stream[start..end];
            let range = chunk.as_ptr_range();
            framer
                .feed(chunk, |ev| {
                    let Event::Block {
                        index,
                        begin,
                        block_len,
                        offset,
                        data,
                    } = ev
                    else {
                        panic!("{ev:?}");
                    };
                    assert_eq!((index, begin, block_len), (3, 32, 256));
                    assert_eq!(offset as usize, got.len());
                    assert!(range.contains(&data.as_ptr()));
                    got.extend_from_slice(data);
                    Ok::<(), WireError>(())
                })
                .unwrap();
            assert_eq!(framer.at_frame_boundary(), end == stream.len());
            start = end;
        }
        assert_eq!(got, data);
    }

    #[test]
    fn zero_length_block_yields_one_empty_event() {
        let stream = enc(&Message::Piece {
            index: 1,
            begin: 2,
            data: &[],
        });
        for cut in 0..=stream.len() {
            let mut framer = Framer::default();
            let mut events = Vec::new();
            for chunk in [&stream[..cut], &stream[cut..]] {
                framer
                    .feed(chunk, |ev| {
                        events.push(format!("{ev:?}"));
                        Ok::<(), WireError>(())
                    })
                    .unwrap();
            }
            assert_eq!(
                events,
                [format!(
                    "{:?}",
                    Event::Block {
                        index: 1,
                        begin: 2,
                        block_len: 0,
                        offset: 0,
                        data: &[]
                    }
                )],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn byte_by_byte_matches_whole() {
        let msgs = vec![
            Owned::KeepAlive,
            Owned::Have(3),
            Owned::Piece(1, 2, vec![5; 40]),
            Owned::Bitfield(vec![0xaa; 10]),
            Owned::KeepAlive,
            Owned::Extended(1, b"d1:ai1ee".to_vec()),
            Owned::Piece(0, 0, vec![]),
            Owned::Unknown(99),
            Owned::Reject(1, 2, 3),
        ];
        let stream: Vec<u8> = msgs.iter().flat_map(|m| enc(&m.msg())).collect();
        let whole = feed_chunks(&mut Framer::default(), [&stream[..]]).unwrap();
        assert_eq!(whole, msgs);
        let mut framer = Framer::default();
        let bytewise = feed_chunks(&mut framer, stream.chunks(1)).unwrap();
        assert_eq!(bytewise, msgs);
        assert!(framer.at_frame_boundary());
    }

    #[test]
    fn stash_allocation_is_reused() {
        let have = enc(&Message::Have { index: 1 });
        let mut framer = Framer::default();
        let mut cap = None;
        for _ in 0..10 {
            feed_chunks(&mut framer, [&have[..6], &have[6..]]).unwrap();
            let now = framer.stash.capacity();
            assert!(now > 0);
            assert_eq!(*cap.get_or_insert(now), now);
        }
    }

    #[test]
    fn oversize_frames_are_rejected_before_the_body() {
        let mut framer = Framer::new(100);
        let err = framer
            .feed(&101u32.to_be_bytes(), |_| Ok::<(), WireError>(()))
            .unwrap_err();
        assert_eq!(err, WireError::TooLong { len: 101, max: 100 });

        // The prefix itself cut across feeds.
        let mut framer = Framer::new(100);
        let prefix = u32::MAX.to_be_bytes();
        framer
            .feed(&prefix[..3], |_| Ok::<(), WireError>(()))
            .unwrap();
        let err = framer
            .feed(&prefix[3..], |_| Ok::<(), WireError>(()))
            .unwrap_err();
        assert_eq!(
            err,
            WireError::TooLong {
                len: u32::MAX,
                max: 100
            }
        );

        // Exactly the limit is fine.
        let mut framer = Framer::new(5);
        let got = feed_chunks(&mut framer, [&enc(&Message::Have { index: 4 })[..]]).unwrap();
        assert_eq!(got, [Owned::Have(4)]);
        // A PIECE longer than the limit is refused too.
        let big = enc(&Message::Piece {
            index: 0,
            begin: 0,
            data: &[0; 100],
        });
        let mut framer = Framer::new(100);
        assert!(matches!(
            framer.feed(&big[..], |_| Ok::<(), WireError>(())),
            Err(WireError::TooLong { len: 109, .. })
        ));
    }

    #[test]
    fn malformed_frames_stop_the_feed() {
        // A HAVE with 3 bytes of payload, then a valid CHOKE that must not be reported.
        let stream = [0, 0, 0, 4, 4, 0, 0, 1, 0, 0, 0, 1, 0];
        for cut in 0..=stream.len() {
            let mut framer = Framer::default();
            let mut events = 0;
            let r = framer
                .feed(&stream[..cut], |_| {
                    events += 1;
                    Ok::<(), WireError>(())
                })
                .and_then(|()| {
                    framer.feed(&stream[cut..], |_| {
                        events += 1;
                        Ok(())
                    })
                });
            assert!(
                matches!(r, Err(WireError::Malformed { id: 4, .. })),
                "{r:?}"
            );
            assert_eq!(events, 0);
        }
        // A PIECE frame too short for its header, the length prefix cut from the id.
        let mut framer = Framer::default();
        framer
            .feed(&[0, 0, 0, 5], |_| Ok::<(), WireError>(()))
            .unwrap();
        assert!(matches!(
            framer.feed(&[7, 0, 0, 0, 0], |_| Ok::<(), WireError>(())),
            Err(WireError::Malformed { id: 7, .. })
        ));
    }

    #[test]
    fn callback_errors_stop_the_feed() {
        #[derive(Debug, PartialEq)]
        enum MyErr {
            Wire,
            Stop,
        }
        impl From<WireError> for MyErr {
            fn from(_: WireError) -> Self {
                MyErr::Wire
            }
        }
        let stream: Vec<u8> = [Message::Choke, Message::Unchoke, Message::Interested]
            .iter()
            .flat_map(enc)
            .collect();
        let mut framer = Framer::default();
        let mut n = 0;
        let r = framer.feed(&stream, |_| {
            n += 1;
            if n == 2 {
                Err(MyErr::Stop)
            } else {
                Ok(())
            }
        });
        assert_eq!(r, Err(MyErr::Stop));
        assert_eq!(n, 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn prop_round_trip(m in owned()) {
            prop_assert_eq!(round_trip(&m.msg()), m);
        }

        #[test]
        fn prop_handshake_round_trip(
            reserved in any::<[u8; 8]>(),
            info_hash in any::<[u8; 20]>(),
            peer_id in any::<[u8; 20]>(),
        ) {
            let h = Handshake { reserved, info_hash, peer_id };
            prop_assert_eq!(Handshake::decode(&h.encode()), Ok(h));
        }

        #[test]
        fn prop_stream_cut_anywhere(
            msgs in prop::collection::vec(owned(), 0..24),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
        ) {
            let mut stream = Vec::new();
            for m in &msgs {
                m.msg().encode(&mut stream);
            }
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            points.push(0);
            points.push(stream.len());
            points.sort_unstable();
            points.dedup();
            let chunks = points.windows(2).map(|w| &stream[w[0]..w[1]]);
            let mut framer = Framer::new(64 * 1024);
            let got = feed_chunks(&mut framer, chunks);
            prop_assert!(got.is_ok(), "{:?}", got.err());
            prop_assert_eq!(got.unwrap(), msgs);
            prop_assert!(framer.at_frame_boundary());
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic(
            data in bytes(2048),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            max_frame in prop_oneof![0u32..64, Just(DEFAULT_MAX_FRAME), Just(u32::MAX)],
        ) {
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
            points.push(0);
            points.push(data.len());
            points.sort_unstable();
            points.dedup();
            let mut framer = Framer::new(max_frame);
            for w in points.windows(2) {
                let r = framer.feed(&data[w[0]..w[1]], |ev| {
                    if let Event::Block { block_len, offset, data, .. } = ev {
                        assert!(offset as usize + data.len() <= block_len as usize);
                    }
                    Ok::<(), WireError>(())
                });
                if r.is_err() {
                    break;
                }
            }
            let _ = Message::decode(&data);
            let _ = Handshake::decode(&data);
        }

        #[test]
        fn prop_valid_prefix_then_garbage(
            msgs in prop::collection::vec(owned(), 1..6),
            garbage in bytes(512),
            cut in any::<prop::sample::Index>(),
        ) {
            // Valid frames are reported exactly before the garbage is reached.
            let mut stream = Vec::new();
            for m in &msgs {
                m.msg().encode(&mut stream);
            }
            let valid_len = stream.len();
            stream.extend_from_slice(&garbage);
            let at = cut.index(stream.len() + 1);
            let mut framer = Framer::default();
            let mut c = Collector::default();
            for chunk in [&stream[..at], &stream[at..]] {
                if framer.feed(chunk, |ev| c.on(ev)).is_err() {
                    break;
                }
            }
            prop_assert!(c.out.len() >= msgs.len() || valid_len > at);
            prop_assert_eq!(&c.out[..msgs.len().min(c.out.len())], &msgs[..msgs.len().min(c.out.len())]);
        }
    }
}
