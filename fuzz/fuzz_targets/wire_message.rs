#![no_main]

use libfuzzer_sys::fuzz_target;
use ringswarm_engine::wire::{Handshake, Message};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Message::decode(data) {
        // A decoded message encodes to a frame whose body decodes to the same message
        // (Unknown drops its payload, so compare only known ids).
        let mut out = Vec::new();
        msg.encode(&mut out);
        assert_eq!(out.len(), msg.encoded_len());
        if !matches!(msg, Message::Unknown { .. }) {
            assert_eq!(Message::decode(&out[4..]), Ok(msg));
        }
    }
    let _ = Handshake::decode(data);
});
