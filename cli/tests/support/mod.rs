//! Helpers shared by the integration tests: prerequisites (skip with a printed reason, or
//! fail under `CI=true`), paths, test data, logs. Each test binary uses a subset.
#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// Writes straight to fd 2, past the test harness's output capture: a skip must be seen.
pub fn skip_note(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

/// Returns true when `ok`; otherwise skips (prints why) or, under CI, panics.
pub fn require(ok: bool, test: &str, what: &str) -> bool {
    if ok {
        return true;
    }
    if in_ci() {
        panic!("{test}: {what} is missing, and CI=true forbids skipping (run scripts/test.sh to install)");
    }
    skip_note(&format!(
        "skipped: {test}: {what} is missing (run scripts/test.sh to install)"
    ));
    false
}

/// Whether `prog args` runs and exits 0 (output discarded).
pub fn runs_ok(prog: &str, args: &[&str]) -> bool {
    Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

pub fn is_root() -> bool {
    // The tests have no libc dependency; /proc tells us the effective uid.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

pub fn ringswarm() -> &'static str {
    env!("CARGO_BIN_EXE_ringswarm")
}

/// A file of the repository's `scripts/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts")
        .join(name)
}

/// Deterministic pseudo-random bytes (xorshift64), so failures reproduce.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
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

/// The last `max` bytes of a log file (on a char boundary), or all of it.
pub fn read_tail(p: &Path, max: usize) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(p) {
        let _ = f.read_to_string(&mut s);
    }
    if s.len() > max {
        let mut cut = s.len() - max;
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        s = format!("[...]{}", &s[cut..]);
    }
    s
}
