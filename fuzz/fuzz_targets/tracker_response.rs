#![no_main]
//! Client side of the UDP tracker: any datagram through `Response::decode` for both
//! families; what decodes must encode and decode to the same response.

use libfuzzer_sys::fuzz_target;
use ringswarm_engine::tracker::proto::{Family, Response};

fuzz_target!(|data: &[u8]| {
    for family in [Family::V4, Family::V6] {
        if let Ok(resp) = Response::decode(data, family) {
            let mut out = Vec::new();
            resp.encode_into(family, &mut out);
            assert_eq!(Response::decode(&out, family).as_ref(), Ok(&resp));
        }
    }
});
