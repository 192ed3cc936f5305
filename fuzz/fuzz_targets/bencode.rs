#![no_main]

use libfuzzer_sys::fuzz_target;
use ringswarm_engine::bencode;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = bencode::decode(data) {
        // Whatever decodes must encode again, and the canonical form must decode.
        let again = bencode::encode(&value);
        let _ = bencode::decode(&again);
    }
    let _ = bencode::decode_prefix(data, &bencode::Limits::default());
});
