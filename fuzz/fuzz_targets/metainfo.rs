#![no_main]

use libfuzzer_sys::fuzz_target;
use ringswarm_engine::metainfo::Metainfo;

fuzz_target!(|data: &[u8]| {
    if let Ok(meta) = Metainfo::from_bytes(data) {
        let _ = meta.piece_count();
        let _ = meta.to_bytes();
    }
});
