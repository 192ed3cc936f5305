//! Issue 11, items 1 and 2, against the real binary on loopback: verification records
//! cannot be forged through a download (a torrent may not write `.ringswarm`, a record that
//! does not match the files on disk leads to a recheck), and nothing is written through a
//! symbolic link found in a destination.
//!
//! Every child is a [`Guard`] (stopped on drop) and every wait is bounded.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant, SystemTime};

mod support;
use support::{
    create_args, get_args, info_hash, json, pattern, ringswarm, scratch, seed_args, Guard,
};

const TIMEOUT: Duration = Duration::from_secs(60);
const PIECE: usize = 64 << 10;

fn cmd(cwd: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(ringswarm());
    c.args(args).current_dir(cwd).env_remove("RUST_LOG");
    c
}

/// Runs `ringswarm args` in `cwd` to its end (bounded); returns status, stdout, stderr.
fn run(cwd: &Path, name: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let mut g = Guard::spawn(name, cmd(cwd, args), cwd);
    let Some(status) = g.wait_exit(TIMEOUT) else {
        g.fail(&[], "did not finish in time")
    };
    // Let the stdout reader thread drain the pipe into the log.
    std::thread::sleep(Duration::from_millis(50));
    let err = fs::read_to_string(&g.stderr_log).unwrap_or_default();
    (status, g.stdout(), err)
}

/// The one `ringswarm: error:` line of a failed run.
fn error_line(status: ExitStatus, out: &str, err: &str) -> String {
    assert_eq!(
        status.code(),
        Some(1),
        "expected a failure\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(!err.contains("panicked"), "panic:\n{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("ringswarm: error: "))
        .collect();
    assert_eq!(lines.len(), 1, "expected one error line:\n{err}");
    lines[0].to_owned()
}

/// `create SRC -o OUT`; returns the info-hash (hex).
fn create(cwd: &Path, src: &str, out: &str) -> String {
    let (status, stdout, err) = run(cwd, "create", &create_args(src, "64K", out));
    assert!(status.success(), "create {src}: {status}\n{stdout}\n{err}");
    info_hash(&stdout)
}

/// `seed TORRENT DATA` on a free loopback port; returns it and its address.
fn seed(cwd: &Path, name: &str, torrent: &str, data: &str) -> (Guard, String) {
    let mut g = Guard::spawn(name, cmd(cwd, &seed_args(torrent, data, "1")), cwd);
    let addr = g.wait_listening(TIMEOUT, &[]);
    (g, addr.to_string())
}

/// `get TORRENT DEST --peer PEER` with `--json`, bounded by `--timeout`.
fn get(cwd: &Path, torrent: &str, dest: &str, peer: &str) -> (ExitStatus, String, String) {
    let args = [
        &["--json"][..],
        &get_args(torrent, dest, peer, &["--timeout", "30s"]),
    ]
    .concat();
    run(cwd, "get", &args)
}

fn get_ok(cwd: &Path, torrent: &str, dest: &str, peer: &str) -> serde_json::Value {
    let (status, out, err) = get(cwd, torrent, dest, peer);
    assert!(status.success(), "get failed: {status}\n{out}\n{err}");
    let v = json(&out);
    assert_eq!(v["ok"], true, "{v}");
    v
}

fn unhex(s: &str) -> [u8; 20] {
    let mut out = [0u8; 20];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// A resume record as versions before issue 11 wrote it (format 1: no file identity),
/// claiming the pieces in `claimed`.
fn old_resume_record(info_hash: &[u8; 20], pieces: u32, claimed: impl Fn(u32) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"RSRESUME");
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(info_hash);
    out.extend_from_slice(&pieces.to_le_bytes());
    let mut bits = vec![0u8; pieces.div_ceil(8) as usize];
    for p in (0..pieces).filter(|&p| claimed(p)) {
        bits[(p / 8) as usize] |= 0x80 >> (p % 8);
    }
    out.extend_from_slice(&bits);
    let sum = ringswarm_engine::verify::sha1(&out);
    out.extend_from_slice(&sum);
    out
}

// ---------------------------------------------------------------------------------------
// A minimal bencoder, to build torrents the binary's own `create` refuses to make.

enum B {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<B>),
    Dict(Vec<(&'static str, B)>),
}

fn benc(v: &B, out: &mut Vec<u8>) {
    match v {
        B::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
        B::Bytes(b) => {
            out.extend_from_slice(format!("{}:", b.len()).as_bytes());
            out.extend_from_slice(b);
        }
        B::List(l) => {
            out.push(b'l');
            l.iter().for_each(|x| benc(x, out));
            out.push(b'e');
        }
        B::Dict(d) => {
            let mut d: Vec<&(&str, B)> = d.iter().collect();
            d.sort_by_key(|(k, _)| *k);
            out.push(b'd');
            for (k, x) in d {
                benc(&B::Bytes(k.as_bytes().to_vec()), out);
                benc(x, out);
            }
            out.push(b'e');
        }
    }
}

fn s(text: &str) -> B {
    B::Bytes(text.as_bytes().to_vec())
}

/// A multi-file torrent `name` holding `files` (path components, content).
fn multi_file_torrent(name: &str, files: &[(&[&str], Vec<u8>)]) -> Vec<u8> {
    let stream: Vec<u8> = files.iter().flat_map(|(_, d)| d.clone()).collect();
    let pieces: Vec<u8> = stream
        .chunks(PIECE)
        .flat_map(|c| ringswarm_engine::verify::sha1(c).to_vec())
        .collect();
    let list = files
        .iter()
        .map(|(path, data)| {
            B::Dict(vec![
                ("length", B::Int(data.len() as i64)),
                ("path", B::List(path.iter().map(|p| s(p)).collect())),
            ])
        })
        .collect();
    let info = B::Dict(vec![
        ("name", s(name)),
        ("piece length", B::Int(PIECE as i64)),
        ("pieces", B::Bytes(pieces)),
        ("files", B::List(list)),
    ]);
    let mut out = Vec::new();
    benc(&B::Dict(vec![("info", info)]), &mut out);
    out
}

// ---------------------------------------------------------------------------------------
// Item 1: records cannot be forged through a download.

/// A torrent named `.ringswarm` (it would land in DEST/.ringswarm, beside the resume
/// records) or with a `.ringswarm` path component anywhere (DEST/pkg/.ringswarm is the
/// state directory of a later download into DEST/pkg) is refused with one clear line, by
/// `get` and `seed`; nothing is written into DEST.
#[test]
fn a_torrent_that_would_write_into_a_state_directory_is_refused() {
    let dir = scratch("hs-reserved");
    let d = dir.path();
    let record = old_resume_record(&[7; 20], 40, |_| true);
    let evil: [(&str, Vec<u8>); 2] = [
        (
            ".ringswarm",
            multi_file_torrent(".ringswarm", &[(&["0707.resume"], record.clone())]),
        ),
        (
            "pkg",
            multi_file_torrent(
                "pkg",
                &[
                    (&["a.bin"], pattern(10_000, 3)),
                    (&[".ringswarm", "0707.resume"], record),
                ],
            ),
        ),
    ];
    for (i, (name, torrent)) in evil.iter().enumerate() {
        let file = format!("evil{i}.torrent");
        fs::write(d.join(&file), torrent).unwrap();
        let dest = format!("dest{i}");
        // No peer serves it: a refusal must come before any transfer (the timeout bounds
        // a binary that accepts it).
        let (status, out, err) = run(
            d,
            "get-evil",
            &get_args(&file, &dest, "127.0.0.1:9", &["--timeout", "5s"]),
        );
        let line = error_line(status, &out, &err);
        assert!(
            line.contains(".ringswarm") && line.contains("reserved"),
            "torrent {name}: the error should say `.ringswarm` is reserved: {line}"
        );
        assert!(
            !d.join(&dest)
                .join(".ringswarm")
                .join("0707.resume")
                .exists()
                && !d.join(&dest).join("pkg").exists(),
            "torrent {name}: something was written"
        );
        fs::create_dir_all(d.join("data").join(name).join(".ringswarm")).unwrap();
        let (status, out, err) = run(
            d,
            "seed-evil",
            &["seed", &file, "data", "--listen", "127.0.0.1:0"],
        );
        let line = error_line(status, &out, &err);
        assert!(line.contains("reserved"), "seed of {name}: {line}");
    }
}

/// A resume record left in DEST/.ringswarm by an older version (or planted there by a
/// download before this fix) has no file identity: it is not trusted. The stale data it
/// vouches for is rechecked, and the honest `get` ends with every byte right.
#[test]
fn a_planted_resume_record_is_not_trusted() {
    let dir = scratch("hs-planted");
    let d = dir.path();
    let size = 32 * PIECE + 1000;
    let good = pattern(size, 1);
    fs::create_dir_all(d.join("src")).unwrap();
    fs::write(d.join("src/blob.bin"), &good).unwrap();
    let hash = create(&d.join("src"), "blob.bin", "../t.torrent");
    let pieces = size.div_ceil(PIECE) as u32;

    // DEST holds other bytes of the same size and a record claiming all but the last
    // piece (a partial record: older versions trusted those without any check).
    let dest = d.join("dest");
    fs::create_dir_all(dest.join(".ringswarm")).unwrap();
    fs::write(dest.join("blob.bin"), pattern(size, 99)).unwrap();
    fs::write(
        dest.join(".ringswarm").join(format!("{hash}.resume")),
        old_resume_record(&unhex(&hash), pieces, |p| p + 1 < pieces),
    )
    .unwrap();

    let (_seed, addr) = seed(d, "seed", "t.torrent", "src");
    let v = get_ok(d, "t.torrent", "dest", &addr);
    let got = fs::read(dest.join("blob.bin")).unwrap();
    assert!(
        got == good,
        "the forged record was trusted: wrong bytes reported done ({v})"
    );
    assert_eq!(v["resumed_bytes"], 0, "{v}");
}

/// Reads the `get NAME: X / Y` progress lines of a running `get`: true once some bytes
/// are verified.
fn has_progress(stderr_log: &Path, name: &str) -> bool {
    fs::read_to_string(stderr_log)
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with(&format!("get {name}: ")) && !l.contains(": 0 B /"))
}

/// A download stopped midway leaves a record of the pieces it verified. Those bytes are
/// then changed on disk behind its back (same size; the mtime is even put back): the next
/// `get` must not trust the record for that file, so it fetches the changed pieces again
/// and ends with every byte right.
#[test]
fn bytes_changed_behind_a_partial_record_are_fetched_again() {
    let dir = scratch("hs-changed");
    let d = dir.path();
    let size = 256 * PIECE;
    let good = pattern(size, 5);
    fs::create_dir_all(d.join("src")).unwrap();
    fs::write(d.join("src/blob.bin"), &good).unwrap();
    let hash = create(&d.join("src"), "blob.bin", "../t.torrent");
    let (_seed, addr) = seed(d, "seed", "t.torrent", "src");

    // A slow first run, interrupted (Ctrl-C) once its record shows progress.
    let mut slow = cmd(
        d,
        &get_args(
            "t.torrent",
            "dest",
            &addr,
            &["--max-download-rate", "2MiB/s"],
        ),
    );
    slow.env("RINGSWARM_PROGRESS_INTERVAL", "100ms");
    let mut first = Guard::spawn("get-slow", slow, d);
    let record = d.join("dest/.ringswarm").join(format!("{hash}.resume"));
    let deadline = Instant::now() + TIMEOUT;
    while !(record.exists() && has_progress(&first.stderr_log, "blob.bin")) {
        if Instant::now() > deadline || first.wait_exit(Duration::ZERO).is_some() {
            first.fail(&[], "no progress and no resume record");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill")
        .args(["-INT", &first.child.id().to_string()])
        .status();
    if first.wait_exit(TIMEOUT).is_none() {
        first.fail(&[], "did not stop on SIGINT");
    }

    // Flip one byte in every piece, in place, and put the mtime back.
    let path = d.join("dest/blob.bin");
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    let mut bytes = fs::read(&path).unwrap();
    assert_eq!(bytes.len(), size);
    for p in 0..size / PIECE {
        bytes[p * PIECE + 17] ^= 0x5a;
    }
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&bytes, 0).unwrap();
        f.sync_all().unwrap();
        f.set_modified(mtime).unwrap();
    }

    let v = get_ok(d, "t.torrent", "dest", &addr);
    let got = fs::read(&path).unwrap();
    assert!(
        got == good,
        "changed bytes behind the record were trusted ({v})"
    );
    assert_eq!(
        v["resumed_bytes"], 0,
        "no piece verifies after the change: {v}"
    );
}

// ---------------------------------------------------------------------------------------
// Item 2: no write through symbolic links in a destination.

/// A file outside every destination, with a known content and an old mtime.
struct Outside {
    path: PathBuf,
    content: Vec<u8>,
    mtime: SystemTime,
}

impl Outside {
    fn new(path: PathBuf) -> Outside {
        let content = b"precious bytes that no download may touch\n".to_vec();
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, &content).unwrap();
        let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        Outside {
            path,
            content,
            mtime,
        }
    }

    fn assert_untouched(&self, what: &str) {
        let m = fs::symlink_metadata(&self.path).unwrap();
        assert!(m.is_file(), "{what}: {} replaced", self.path.display());
        assert_eq!(
            fs::read(&self.path).unwrap(),
            self.content,
            "{what}: content changed"
        );
        assert_eq!(m.modified().unwrap(), self.mtime, "{what}: mtime changed");
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn assert_refused_naming(d: &Path, torrent: &str, dest: &str, peer: &str, link: &Path) {
    let (status, out, err) = get(d, torrent, dest, peer);
    let line = error_line(status, &out, &err);
    let shown = link.display().to_string();
    assert!(
        line.contains(&format!("{shown}: is a symbolic link")),
        "the error should name {shown}: {line}"
    );
}

#[test]
fn symlinks_in_a_destination_are_refused_and_their_targets_untouched() {
    let dir = scratch("hs-links");
    let d = dir.path();
    let size = 8 * PIECE + 123;
    let good = pattern(size, 7);
    fs::create_dir_all(d.join("src/pkg/sub")).unwrap();
    fs::write(d.join("src/blob.bin"), &good).unwrap();
    fs::write(d.join("src/pkg/sub/a.bin"), pattern(3 * PIECE, 8)).unwrap();
    fs::write(d.join("src/pkg/b.bin"), pattern(PIECE + 5, 9)).unwrap();
    create(&d.join("src"), "blob.bin", "../single.torrent");
    create(&d.join("src"), "pkg", "../multi.torrent");
    let (_s1, single) = seed(d, "seed-single", "single.torrent", "src");
    let (_s2, multi) = seed(d, "seed-multi", "multi.torrent", "src");
    let outside = d.join("outside");
    let victim = Outside::new(outside.join("victim.bin"));
    let listing = entries(&outside);
    let link = |target: &Path, at: &Path| {
        fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, at).unwrap();
    };

    // DEST/blob.bin -> an outside file.
    let at = d.join("d1/blob.bin");
    link(&victim.path, &at);
    assert_refused_naming(d, "single.torrent", "d1", &single, Path::new("d1/blob.bin"));
    victim.assert_untouched("DEST/blob.bin -> file");

    // DEST/blob.bin -> a missing outside file: not created.
    link(&outside.join("new.bin"), &d.join("d2/blob.bin"));
    assert_refused_naming(d, "single.torrent", "d2", &single, Path::new("d2/blob.bin"));

    // DEST/pkg -> an outside directory.
    link(&outside, &d.join("d3/pkg"));
    assert_refused_naming(d, "multi.torrent", "d3", &multi, Path::new("d3/pkg"));

    // DEST/pkg/sub -> an outside directory.
    link(&outside, &d.join("d4/pkg/sub"));
    assert_refused_naming(d, "multi.torrent", "d4", &multi, Path::new("d4/pkg/sub"));

    // DEST/.ringswarm (the state directory) -> an outside directory.
    link(&outside, &d.join("d5/.ringswarm"));
    assert_refused_naming(
        d,
        "single.torrent",
        "d5",
        &single,
        Path::new("d5/.ringswarm"),
    );

    victim.assert_untouched("after every refusal");
    assert_eq!(entries(&outside), listing, "something was created outside");

    // DEST itself may be a link to a real directory.
    fs::create_dir_all(d.join("real")).unwrap();
    link(&d.join("real"), &d.join("d6"));
    get_ok(d, "single.torrent", "d6", &single);
    assert!(fs::read(d.join("real/blob.bin")).unwrap() == good);
    get_ok(d, "multi.torrent", "d6", &multi);
    assert!(fs::read(d.join("real/pkg/sub/a.bin")).unwrap() == pattern(3 * PIECE, 8));
}
