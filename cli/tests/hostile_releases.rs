//! Issue 11, item 1 for the fleet agent: a release's verification record vouches only for
//! data that was verified, bound to the files' identity. A release made of data already
//! held (hard links of another release's files) gets no record, so data changed behind the
//! agent's back is hashed again after a restart instead of trusted.
//!
//! Real processes on loopback (tracker, origin, publish, agent); every wait bounded.

use std::time::{Duration, Instant};

mod support;
use support::release::{Fleet, TIMEOUT};

/// v1 is tampered with on disk while the agent runs; v2, the same bytes, is then linked
/// from v1 (not downloaded). After a restart the agent must not take v2's data as
/// verified: it hashes it, finds it wrong, fetches it again. (Before issue 11 the agent
/// recorded linked data as verified as it found it, so the restart trusted it.)
#[test]
fn linked_data_is_not_recorded_as_verified() {
    let fleet = Fleet::start("hr-linked");
    let data = fleet.publish("index", "v1", 2 << 20, 21);
    let a = fleet.agent("host", &[]);
    a.wait_current("index", "v1", &fleet);

    // A stray write into the held release, behind the agent's back (same size).
    let v1 = a.dir.join("releases/index/v1/blob.bin");
    let mut bytes = std::fs::read(&v1).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&v1, &bytes).unwrap();

    assert_eq!(fleet.publish("index", "v2", 2 << 20, 21), data);
    a.wait_current("index", "v2", &fleet);
    let log = std::fs::read_to_string(&a.guard.stderr_log).unwrap_or_default();
    assert!(log.contains("linked, not downloaded"), "{log}");
    let dir = a.dir.clone();
    drop(a);

    let a = fleet.agent_in(&dir, &[]);
    let r = a.wait_for("v2 current after the restart", &fleet, |s| {
        s["releases"].as_array().is_some_and(|rs| {
            rs.iter()
                .any(|r| r["version"] == "v2" && r["state"] == "current")
        })
    });
    // Let a recheck and a fetch run their course (bounded), then compare the bytes.
    let deadline = Instant::now() + TIMEOUT;
    while std::fs::read(a.current_file("index")).unwrap_or_default() != data
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        std::fs::read(a.current_file("index")).unwrap() == data,
        "the changed bytes were taken as verified after the restart: {r}"
    );
}

/// v2 is linked from v1 (the same bytes, both verified); while the agent is down a file of
/// v2 is replaced by another file (a new inode, wrong bytes, same size). After the restart
/// v2 is no longer v1's files, so it is not taken as verified: the agent fetches it again
/// and `current` ends with the right bytes. (Before, a restart held v2 as v1's twin and
/// kept serving the replaced file as the current release.)
#[test]
fn a_linked_release_whose_file_was_replaced_is_not_trusted_after_a_restart() {
    let fleet = Fleet::start("hr-twin");
    let data = fleet.publish("index", "v1", 2 << 20, 22);
    let a = fleet.agent("host", &[]);
    a.wait_current("index", "v1", &fleet);
    assert_eq!(fleet.publish("index", "v2", 2 << 20, 22), data);
    a.wait_current("index", "v2", &fleet);
    let dir = a.dir.clone();
    drop(a);

    let v2 = dir.join("releases/index/v2/blob.bin");
    let mut bytes = std::fs::read(&v2).unwrap();
    bytes[4096] ^= 0xff;
    let replacement = v2.with_extension("new");
    std::fs::write(&replacement, &bytes).unwrap();
    std::fs::rename(&replacement, &v2).unwrap();

    let a = fleet.agent_in(&dir, &[]);
    let deadline = Instant::now() + TIMEOUT;
    while std::fs::read(a.current_file("index")).unwrap_or_default() != data
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(&a.guard.stderr_log).unwrap_or_default();
    assert!(
        std::fs::read(a.current_file("index")).unwrap() == data,
        "the replaced file is still the current release after the restart\n{log}"
    );
}
