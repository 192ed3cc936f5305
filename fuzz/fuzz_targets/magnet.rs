#![no_main]

use libfuzzer_sys::fuzz_target;
use ringswarm_engine::magnet::Magnet;

fuzz_target!(|data: &[u8]| {
    let uri = String::from_utf8_lossy(data);
    if let Ok(magnet) = Magnet::parse(&uri) {
        let _ = magnet.to_uri();
    }
});
