//! Helpers shared by the engine's integration tests (each test binary uses a subset).
#![allow(dead_code)]

use std::path::Path;

/// A directory on a real disk (O_DIRECT is refused by tmpfs).
pub fn scratch(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("rs-{tag}-"))
        .tempdir_in(Path::new(env!("CARGO_TARGET_TMPDIR")))
        .unwrap()
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
