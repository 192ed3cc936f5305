#![no_main]

use libfuzzer_sys::fuzz_target;
use ringswarm_engine::extension::{decode_fetching, encode_fetching, ExtHandshake, MetadataMsg};

fuzz_target!(|data: &[u8]| {
    if let Ok(hs) = ExtHandshake::decode(data) {
        let _ = hs.encode();
    }
    if let Ok(msg) = MetadataMsg::decode(data) {
        let _ = msg.encode();
    }
    if let Ok(word) = decode_fetching(data) {
        assert_eq!(encode_fetching(word), data);
    }
});
