//! Fetching a torrent's info dictionary from one peer (BEP 9, over BEP 10), sans-I/O: the
//! handshake rules are the swarm's ([`check_handshake`]), the pieces are assembled and the
//! whole checked against the info-hash here; the caller moves the bytes.

use ringswarm_proto::extension::{self, ExtHandshake, MetadataMsg};
use ringswarm_proto::wire::{Handshake, Message};

use crate::ids::{InfoHash, PeerId};
use crate::out::Out;

/// The checks every handshake passes, for a download or a metadata fetch: it is for our
/// torrent and not from ourselves.
pub fn check_handshake(ours: InfoHash, our_id: PeerId, theirs: &Handshake) -> Result<(), String> {
    if theirs.info_hash != ours.0 {
        return Err(crate::reasons::OTHER_TORRENT.into());
    }
    if theirs.peer_id == our_id.0 {
        return Err("connected to ourselves".into());
    }
    Ok(())
}

/// Where a fetch stands.
#[derive(Debug)]
enum Stage {
    /// Our handshake is out; waiting for the peer's.
    Handshake,
    /// Our BEP 10 handshake is out; waiting for the peer's (it names its ut_metadata id
    /// and the size).
    ExtHandshake,
    /// Every piece is requested; `got` says which arrived.
    Pieces {
        buf: Vec<u8>,
        got: Vec<bool>,
    },
    Done,
}

/// One peer's answer to "what is the info dictionary of this info-hash".
#[derive(Debug)]
pub struct MetadataFetch {
    info_hash: InfoHash,
    our_id: PeerId,
    stage: Stage,
    out: Vec<Out>,
}

impl MetadataFetch {
    /// Starts a fetch: our handshake is the first message to send.
    pub fn new(info_hash: InfoHash, our_id: PeerId) -> MetadataFetch {
        MetadataFetch {
            info_hash,
            our_id,
            stage: Stage::Handshake,
            out: vec![Out::Handshake],
        }
    }

    /// The messages to send now (encode them with [`Out::encode`]).
    pub fn take_out(&mut self) -> Vec<Out> {
        std::mem::take(&mut self.out)
    }

    /// The peer's handshake.
    pub fn handshake(&mut self, theirs: &Handshake) -> Result<(), String> {
        if !matches!(self.stage, Stage::Handshake) {
            return Err("a second handshake".into());
        }
        check_handshake(self.info_hash, self.our_id, theirs)?;
        if !theirs.supports_extensions() {
            return Err("peer does not support the extension protocol (BEP 10)".into());
        }
        self.out.push(Out::ExtHandshake(Box::new(ExtHandshake {
            extensions: vec![("ut_metadata".into(), extension::OUR_UT_METADATA_ID)],
            client: Some(concat!("ringswarm ", env!("CARGO_PKG_VERSION")).into()),
            ..ExtHandshake::default()
        })));
        self.stage = Stage::ExtHandshake;
        Ok(())
    }

    /// One message from the peer. `Ok(Some(info))` once the whole info dictionary is in and
    /// matches the info-hash; an error says why this peer cannot give it.
    pub fn message(&mut self, msg: &Message<'_>) -> Result<Option<Vec<u8>>, String> {
        let Message::Extended { id, payload } = *msg else {
            return Ok(None);
        };
        match (&mut self.stage, id) {
            (Stage::ExtHandshake, extension::HANDSHAKE_ID) => {
                let hs = ExtHandshake::decode(payload).map_err(|e| e.to_string())?;
                let their_id = hs
                    .id_of("ut_metadata")
                    .ok_or("peer does not offer ut_metadata")?;
                let size = hs
                    .metadata_size
                    .ok_or("peer did not say the metadata size")?;
                if size == 0 || size > extension::MAX_METADATA_SIZE {
                    return Err(format!("metadata size {size} out of range"));
                }
                let pieces = (size as usize).div_ceil(extension::METADATA_PIECE_SIZE);
                for piece in 0..pieces as u32 {
                    self.out.push(Out::Extended {
                        id: their_id,
                        payload: MetadataMsg::Request { piece }.encode(),
                    });
                }
                self.stage = Stage::Pieces {
                    buf: vec![0; size as usize],
                    got: vec![false; pieces],
                };
                Ok(None)
            }
            (Stage::Pieces { buf, got }, extension::OUR_UT_METADATA_ID) => {
                match MetadataMsg::decode(payload).map_err(|e| e.to_string())? {
                    MetadataMsg::Data { piece, data, .. } => {
                        let start = piece as usize * extension::METADATA_PIECE_SIZE;
                        let expected =
                            (buf.len() - start.min(buf.len())).min(extension::METADATA_PIECE_SIZE);
                        if start >= buf.len() || data.len() != expected {
                            return Err(format!("metadata piece {piece} has the wrong size"));
                        }
                        buf[start..start + data.len()].copy_from_slice(data);
                        got[piece as usize] = true;
                        if !got.iter().all(|&g| g) {
                            return Ok(None);
                        }
                        let info = std::mem::take(buf);
                        self.stage = Stage::Done;
                        if ringswarm_proto::sha::sha1(&info) != self.info_hash.0 {
                            return Err(crate::reasons::METADATA_MISMATCH.into());
                        }
                        Ok(Some(info))
                    }
                    MetadataMsg::Reject { piece } => {
                        Err(format!("peer rejected metadata piece {piece}"))
                    }
                    MetadataMsg::Request { .. } => Ok(None),
                }
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringswarm_proto::wire::Handshake;

    const HASH: InfoHash = InfoHash([7; 20]);
    const ME: PeerId = PeerId([1; 20]);

    fn theirs(hash: [u8; 20], id: u8) -> Handshake {
        Handshake::new(hash, [id; 20])
    }

    fn ext_hs(size: u64) -> Vec<u8> {
        ExtHandshake {
            extensions: vec![("ut_metadata".into(), 3)],
            metadata_size: Some(size),
            ..ExtHandshake::default()
        }
        .encode()
    }

    #[test]
    fn handshakes_for_another_torrent_or_from_ourselves_are_refused() {
        assert!(check_handshake(HASH, ME, &theirs([7; 20], 2)).is_ok());
        let e = check_handshake(HASH, ME, &theirs([8; 20], 2)).unwrap_err();
        assert!(e.contains("another torrent"), "{e}");
        let e = check_handshake(HASH, ME, &theirs([7; 20], 1)).unwrap_err();
        assert!(e.contains("ourselves"), "{e}");
    }

    #[test]
    fn fetches_every_piece_and_checks_the_hash() {
        let info: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        let hash = InfoHash(ringswarm_proto::sha::sha1(&info));
        let mut f = MetadataFetch::new(hash, ME);
        assert_eq!(f.take_out(), vec![Out::Handshake]);
        f.handshake(&theirs(hash.0, 2)).unwrap();
        assert!(matches!(f.take_out().as_slice(), [Out::ExtHandshake(_)]));
        let hs = ext_hs(info.len() as u64);
        let got = f
            .message(&Message::Extended {
                id: 0,
                payload: &hs,
            })
            .unwrap();
        assert_eq!(got, None);
        let requests = f.take_out();
        assert_eq!(requests.len(), 3, "40 000 bytes are 3 pieces of 16 KiB");
        let mut result = None;
        for piece in 0..3u32 {
            let start = piece as usize * extension::METADATA_PIECE_SIZE;
            let end = (start + extension::METADATA_PIECE_SIZE).min(info.len());
            let data = MetadataMsg::Data {
                piece,
                total_size: info.len() as u64,
                data: &info[start..end],
            }
            .encode();
            result = f
                .message(&Message::Extended {
                    id: extension::OUR_UT_METADATA_ID,
                    payload: &data,
                })
                .unwrap();
        }
        assert_eq!(result, Some(info));
    }

    #[test]
    fn metadata_that_does_not_match_the_hash_is_refused() {
        let mut f = MetadataFetch::new(HASH, ME);
        f.handshake(&theirs(HASH.0, 2)).unwrap();
        f.message(&Message::Extended {
            id: 0,
            payload: &ext_hs(5),
        })
        .unwrap();
        let data = MetadataMsg::Data {
            piece: 0,
            total_size: 5,
            data: b"hello",
        }
        .encode();
        let e = f
            .message(&Message::Extended {
                id: extension::OUR_UT_METADATA_ID,
                payload: &data,
            })
            .unwrap_err();
        assert!(e.contains("does not match"), "{e}");
    }

    #[test]
    fn a_peer_without_extensions_or_with_an_absurd_size_is_refused() {
        let mut f = MetadataFetch::new(HASH, ME);
        let mut hs = theirs(HASH.0, 2);
        hs.reserved = [0; 8];
        assert!(f.handshake(&hs).unwrap_err().contains("BEP 10"));
        let mut f = MetadataFetch::new(HASH, ME);
        f.handshake(&theirs(HASH.0, 2)).unwrap();
        let e = f
            .message(&Message::Extended {
                id: 0,
                payload: &ext_hs(extension::MAX_METADATA_SIZE + 1),
            })
            .unwrap_err();
        assert!(e.contains("size"), "{e}");
    }

    #[test]
    fn a_wrong_sized_piece_is_an_error() {
        let mut f = MetadataFetch::new(HASH, ME);
        f.handshake(&theirs(HASH.0, 2)).unwrap();
        f.message(&Message::Extended {
            id: 0,
            payload: &ext_hs(20_000),
        })
        .unwrap();
        let data = MetadataMsg::Data {
            piece: 1,
            total_size: 20_000,
            data: &[0; 100],
        }
        .encode();
        let e = f
            .message(&Message::Extended {
                id: extension::OUR_UT_METADATA_ID,
                payload: &data,
            })
            .unwrap_err();
        assert!(e.contains("piece 1"), "{e}");
    }

    fn ext(id: u8, payload: &[u8]) -> Message<'_> {
        Message::Extended { id, payload }
    }

    /// A fetch past the peer's handshake, waiting for its extension handshake.
    fn handshaken() -> MetadataFetch {
        let mut f = MetadataFetch::new(HASH, ME);
        f.handshake(&theirs(HASH.0, 2)).unwrap();
        f.take_out();
        f
    }

    /// A fetch whose peer announced `size` bytes of metadata, every piece requested.
    fn fetching(size: u64) -> MetadataFetch {
        let mut f = handshaken();
        assert_eq!(f.message(&ext(0, &ext_hs(size))).unwrap(), None);
        f.take_out();
        f
    }

    #[test]
    fn a_second_handshake_or_one_for_another_torrent_ends_the_fetch() {
        let mut f = MetadataFetch::new(HASH, ME);
        let e = f.handshake(&theirs([8; 20], 2)).unwrap_err();
        assert!(e.contains("another torrent"), "{e}");
        f.handshake(&theirs(HASH.0, 2)).unwrap();
        let e = f.handshake(&theirs(HASH.0, 2)).unwrap_err();
        assert!(e.contains("second handshake"), "{e}");
    }

    #[test]
    fn a_bad_or_incomplete_extension_handshake_ends_the_fetch() {
        assert!(handshaken().message(&ext(0, b"garbage")).is_err());
        let no_metadata = ExtHandshake {
            metadata_size: Some(100),
            ..ExtHandshake::default()
        }
        .encode();
        let e = handshaken().message(&ext(0, &no_metadata)).unwrap_err();
        assert!(e.contains("ut_metadata"), "{e}");
        let no_size = ExtHandshake {
            extensions: vec![("ut_metadata".into(), 3)],
            ..ExtHandshake::default()
        }
        .encode();
        let e = handshaken().message(&ext(0, &no_size)).unwrap_err();
        assert!(e.contains("did not say"), "{e}");
        let e = handshaken().message(&ext(0, &ext_hs(0))).unwrap_err();
        assert!(e.contains("out of range"), "{e}");
    }

    #[test]
    fn a_piece_that_does_not_fit_the_announced_size_ends_the_fetch() {
        // The extension handshake said 20 000 bytes (2 pieces); the pieces claim 40 000.
        let full = vec![0u8; extension::METADATA_PIECE_SIZE];
        let data = MetadataMsg::Data {
            piece: 1,
            total_size: 40_000,
            data: &full,
        }
        .encode();
        let e = fetching(20_000)
            .message(&ext(extension::OUR_UT_METADATA_ID, &data))
            .unwrap_err();
        assert!(e.contains("piece 1 has the wrong size"), "{e}");
        let past = MetadataMsg::Data {
            piece: 2,
            total_size: 40_000,
            data: &full[..40_000 - 2 * extension::METADATA_PIECE_SIZE],
        }
        .encode();
        let e = fetching(20_000)
            .message(&ext(extension::OUR_UT_METADATA_ID, &past))
            .unwrap_err();
        assert!(e.contains("piece 2 has the wrong size"), "{e}");
    }

    #[test]
    fn a_rejected_piece_ends_the_fetch_and_requests_from_the_peer_are_ignored() {
        let mut f = fetching(20_000);
        let req = MetadataMsg::Request { piece: 0 }.encode();
        assert_eq!(
            f.message(&ext(extension::OUR_UT_METADATA_ID, &req))
                .unwrap(),
            None
        );
        assert!(f.take_out().is_empty(), "we serve nothing while fetching");
        let rej = MetadataMsg::Reject { piece: 1 }.encode();
        let e = f
            .message(&ext(extension::OUR_UT_METADATA_ID, &rej))
            .unwrap_err();
        assert!(e.contains("rejected metadata piece 1"), "{e}");
    }

    #[test]
    fn messages_other_than_the_extension_message_awaited_are_ignored() {
        let mut f = handshaken();
        assert_eq!(f.message(&Message::Unchoke).unwrap(), None);
        assert_eq!(
            f.message(&ext(extension::OUR_UT_METADATA_ID, b"garbage"))
                .unwrap(),
            None,
            "a piece before the extension handshake"
        );
        assert_eq!(f.message(&ext(0, &ext_hs(20_000))).unwrap(), None);
        assert_eq!(f.take_out().len(), 2);
        assert_eq!(
            f.message(&ext(0, &ext_hs(20_000))).unwrap(),
            None,
            "a second extension handshake"
        );
        assert!(f.take_out().is_empty(), "nothing is requested twice");
    }
}
