//! The BitTorrent peer wire: handshake, BEP 3 messages, BEP 6 fast extension, BEP 10
//! extended messages, and a streaming framer that hands out piece payloads in place so
//! the receive path copies each byte once. Pure. CONTRACT STUB — owned by the wire helper.

pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";
pub const HANDSHAKE_LEN: usize = 68;
/// Standard request size.
pub const BLOCK_SIZE: u32 = 16 * 1024;
/// Largest block we serve or accept in a REQUEST (BEP 3 clients use ≤ 16 KiB; 128 KiB is the
/// usual hard limit).
pub const MAX_BLOCK_SIZE: u32 = 128 * 1024;
/// Default largest frame (length prefix value) accepted by [`Framer`].
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;

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
        let _ = (info_hash, peer_id);
        todo!()
    }
    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        todo!()
    }
    pub fn decode(bytes: &[u8]) -> Result<Handshake, WireError> {
        let _ = bytes;
        todo!()
    }
    pub fn supports_extensions(&self) -> bool {
        todo!()
    }
    pub fn supports_fast(&self) -> bool {
        todo!()
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
    Have { index: u32 },
    Bitfield { bits: &'a [u8] },
    Request { index: u32, begin: u32, length: u32 },
    Piece { index: u32, begin: u32, data: &'a [u8] },
    Cancel { index: u32, begin: u32, length: u32 },
    Port { port: u16 },
    // BEP 6
    Suggest { index: u32 },
    HaveAll,
    HaveNone,
    Reject { index: u32, begin: u32, length: u32 },
    AllowedFast { index: u32 },
    // BEP 10
    Extended { id: u8, payload: &'a [u8] },
    /// An id we do not know: ignored, not an error (forward compatibility).
    Unknown { id: u8 },
}

impl<'a> Message<'a> {
    /// Appends the framed message (4-byte length prefix included).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let _ = out;
        todo!()
    }

    /// Decodes one frame body (id + payload, no length prefix); empty is KeepAlive.
    /// Checks fixed sizes per id.
    pub fn decode(frame: &'a [u8]) -> Result<Message<'a>, WireError> {
        let _ = frame;
        todo!()
    }
}

/// The 13 bytes before a block's data in a PIECE message (length prefix, id 7, index, begin).
pub fn piece_header(index: u32, begin: u32, data_len: u32) -> [u8; 13] {
    let _ = (index, begin, data_len);
    todo!()
}

/// What the framer found in the byte stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// Any message but PIECE.
    Message(Message<'a>),
    /// Part of a PIECE message's data: `data` belongs at `begin + offset` of piece `index`;
    /// the block is whole when `offset + data.len() == block_len`. A block arrives as one or
    /// more such events, in order; a zero-length block yields one event with empty data.
    Block { index: u32, begin: u32, block_len: u32, offset: u32, data: &'a [u8] },
}

/// A streaming decoder for the bytes after the handshake. Input may be cut anywhere.
/// Messages that lie whole inside one `feed` call are decoded in place; a message cut across
/// calls is reassembled in a small stash, except PIECE data, which is handed out in parts
/// and never stashed.
#[derive(Debug)]
pub struct Framer {
    _private: (),
}

impl Framer {
    pub fn new(max_frame: u32) -> Self {
        let _ = max_frame;
        todo!()
    }

    /// Feeds bytes, calling `on_event` for each event in order. The first malformed frame
    /// (or the first error from `on_event`) stops the feed and is returned; the framer must
    /// not be fed after an error.
    pub fn feed<E: From<WireError>>(
        &mut self,
        input: &[u8],
        on_event: impl FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let _ = (input, on_event);
        todo!()
    }
}
