//! An operator's first contact, end to end: README-install.md's steps on loopback with
//! the shipped example configs, logs fit for a pipe or the journal, completions, manual
//! pages, and config errors that name their line and column.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{on_path, pattern, ringswarm, run, scratch, script, Guard};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The shipped example configs, copied as install.sh puts them in /etc/ringswarm.
fn shipped_configs(etc: &Path) {
    std::fs::create_dir_all(etc).unwrap();
    for name in ["tracker.toml", "origin.toml", "agent.toml", "topology.toml"] {
        std::fs::copy(script("systemd").join(name), etc.join(name)).unwrap();
    }
}

fn status(dir: &Path) -> serde_json::Value {
    let out = Command::new(ringswarm())
        .args(["status", "--json", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// README-install.md's steps, as the units run them (`-v DAEMON --config FILE`), each
/// daemon on the shipped example config. Flags override only what isolates this test from
/// other tests and from a real install: directories (state, the key, the topology file,
/// all under a scratch directory instead of /etc/ringswarm and /var/lib/ringswarm) and
/// ports (port 0 instead of 6969, 8470, 6881, 6882, 9469, 9470; so the origin's and the
/// agent's tracker URL and the agent's feed URL name the ports the daemons got).
#[test]
fn the_readme_steps_run_a_release_through_the_shipped_configs() {
    let dir = scratch("operator");
    let base = dir.path();
    let etc = base.join("etc/ringswarm");
    shipped_configs(&etc);
    let config = |name: &str| etc.join(name);

    // ringswarm keygen /etc/ringswarm/release
    let mut keygen = Command::new(ringswarm());
    keygen.arg("keygen").arg(etc.join("release"));
    run("keygen", keygen, TIMEOUT, base);

    let mut tracker = Command::new(ringswarm());
    tracker
        .args(["-v", "tracker", "--config"])
        .arg(config("tracker.toml"))
        .args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
        .arg("--topology")
        .arg(config("topology.toml"));
    let mut tracker = Guard::spawn("tracker", tracker, base);
    let tracker_url = format!(
        "udp://{}",
        tracker.wait_line("tracker listening on udp://", TIMEOUT, &[])
    );

    let origin_dir = base.join("var/lib/ringswarm/origin");
    let mut origin = Command::new(ringswarm());
    origin
        .args(["-v", "origin", "--config"])
        .arg(config("origin.toml"))
        .arg("--dir")
        .arg(&origin_dir)
        .args(["--http", "127.0.0.1:0", "--listen", "127.0.0.1:0"])
        .args(["--tracker", &tracker_url, "--topology"])
        .arg(config("topology.toml"));
    let mut origin = Guard::spawn("origin", origin, base);
    let feed_url = origin.wait_line("serving the feed at ", TIMEOUT, &[&tracker]);
    origin.wait_listening(TIMEOUT, &[&tracker]);

    let agent_dir = base.join("var/lib/ringswarm");
    let mut agent = Command::new(ringswarm());
    agent
        .args(["-v", "agent", "--config"])
        .arg(config("agent.toml"))
        .args(["--feed", &feed_url, "--pubkey"])
        .arg(etc.join("release.pub"))
        .arg("--dir")
        .arg(&agent_dir)
        .args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
        .args(["--tracker", &tracker_url]);
    let mut agent = Guard::spawn("agent", agent, base);
    agent.wait_line("status socket ", TIMEOUT, &[&tracker, &origin]);

    // ringswarm publish ./build/index --name index --version 1 --key ... --tracker ...
    let build = base.join("build/index");
    std::fs::create_dir_all(&build).unwrap();
    let data = pattern(3 << 20, 13);
    std::fs::write(build.join("blob.bin"), &data).unwrap();
    let mut publish = Command::new(ringswarm());
    publish
        .arg("publish")
        .arg(&build)
        .args(["--name", "index", "--version", "1", "--key"])
        .arg(etc.join("release.key"))
        .arg("--origin-dir")
        .arg(&origin_dir)
        .args(["--tracker", &tracker_url]);
    run("publish", publish, TIMEOUT, base);

    let start = Instant::now();
    let guards = [&tracker, &origin, &agent];
    loop {
        let s = status(&agent_dir);
        let current = s["releases"].as_array().is_some_and(|rs| {
            rs.iter()
                .any(|r| r["name"] == "index" && r["version"] == "1" && r["state"] == "current")
        });
        if current {
            break;
        }
        if start.elapsed() > TIMEOUT {
            support::dump_logs(&guards);
            panic!("release index 1 not current within {TIMEOUT:?}; status {s}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let current = agent_dir.join("index/current");
    let served = ["blob.bin", "index/blob.bin"]
        .iter()
        .find_map(|p| std::fs::read(current.join(p)).ok())
        .unwrap_or_else(|| {
            let listing: Vec<_> = walk(&current);
            panic!("no blob.bin under {}: {listing:?}", current.display())
        });
    assert!(
        served == data,
        "the activated release holds the published bytes"
    );
    // The daemons' logs went to files (as to the journal): no colour codes in them.
    for g in guards {
        let log = std::fs::read_to_string(&g.stderr_log).unwrap();
        assert!(
            !log.contains("\x1b["),
            "{}: ANSI codes in its log:\n{log}",
            g.name
        );
    }
}

/// Every path under `dir` (following its symlink).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// An agent whose feed refuses connections logs an error at once (the log line these
/// tests read), with `extra` arguments and environment; returns its stderr lines.
/// With `journal`, JOURNAL_STREAM names the pipe given as stderr, as systemd names the
/// journal's stream; otherwise it names something else.
fn agent_log_lines(tag: &str, extra: &[&str], journal: bool) -> Vec<String> {
    let dir = scratch(tag);
    support::release::keygen(dir.path(), "fleet");
    let mut cmd = Command::new(ringswarm());
    cmd.args(extra)
        .args([
            "agent",
            "--feed",
            "http://127.0.0.1:9/feed.json",
            "--poll",
            "200ms",
        ])
        .args(["--listen", "127.0.0.1:0", "--cores", "2", "--pubkey"])
        .arg(dir.path().join("fleet.pub"))
        .arg("--dir")
        .arg(dir.path().join("agent"))
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let (stderr, writer) = std::io::pipe().unwrap();
    let stream = {
        use std::os::unix::fs::MetadataExt;
        let fd = std::os::fd::OwnedFd::from(writer.try_clone().unwrap());
        let meta = std::fs::File::from(fd).metadata().unwrap();
        format!("{}:{}", meta.dev(), meta.ino())
    };
    cmd.env(
        "JOURNAL_STREAM",
        if journal { stream.as_str() } else { "1:1" },
    )
    .stderr(writer);
    let mut child = cmd.spawn().unwrap();
    drop(cmd); // the parent's copy of the pipe's write end: EOF when the child is gone
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first line, then whatever follows it closely.
    let mut lines: Vec<String> = rx.recv_timeout(TIMEOUT).into_iter().collect();
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
        lines.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(!lines.is_empty(), "{tag}: no log line within {TIMEOUT:?}");
    lines
}

#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    for line in agent_log_lines("log-pipe", &["-v"], false) {
        assert!(!line.contains('\x1b'), "{line:?}");
        assert!(line.contains("127.0.0.1:9"), "the feed's error: {line}");
    }
}

#[test]
fn log_format_json_gives_one_json_object_per_line() {
    for line in agent_log_lines("log-json", &["--log-format", "json"], false) {
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string(), "{line}");
        assert!(v["timestamp"].is_string(), "{line}");
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
}

fn starts_with_level(line: &str) -> bool {
    let first = line.split_whitespace().next().unwrap_or("");
    ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&first)
}

/// Under systemd (JOURNAL_STREAM naming our stderr) journald stamps each line: ours start
/// at the level. A JOURNAL_STREAM inherited with another stderr changes nothing.
#[test]
fn logs_to_the_journal_carry_no_timestamp_of_their_own() {
    for line in agent_log_lines("log-journal", &[], true) {
        assert!(starts_with_level(&line), "{line}");
    }
    for line in agent_log_lines("log-not-journal", &[], false) {
        assert!(!starts_with_level(&line), "a timestamp first: {line}");
    }
}

fn output(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(ringswarm()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn completions_name_the_subcommands() {
    let (ok, bash, err) = output(&["completions", "bash"]);
    assert!(ok, "{err}");
    for sub in [
        "agent",
        "origin",
        "tracker",
        "publish",
        "get",
        "completions",
    ] {
        assert!(bash.contains(sub), "bash completion lacks {sub}");
    }
    assert!(bash.contains("complete -F"), "a bash completion function");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let (ok, text, err) = output(&["completions", shell]);
        assert!(ok && text.contains("publish"), "{shell}: {err}");
    }
    let (ok, _, err) = output(&["completions", "tcsh"]);
    assert!(
        !ok && err.contains("tcsh"),
        "an unknown shell is named: {err}"
    );
}

#[test]
fn man_pages_parse() {
    let (ok, page, err) = output(&["man"]);
    assert!(ok, "{err}");
    assert!(page.contains(".TH ringswarm 1"), "{page}");
    let dir = scratch("man");
    let pages: PathBuf = dir.path().join("man1");
    let (ok, _, err) = output(&["man", "--dir", pages.to_str().unwrap()]);
    assert!(ok, "{err}");
    for name in ["ringswarm.1", "ringswarm-agent.1", "ringswarm-get.1"] {
        assert!(pages.join(name).is_file(), "{name}");
    }
    if !on_path("man") {
        support::skip_note("man_pages_parse: man(1) missing; checked the .TH headers only");
        return;
    }
    for name in ["ringswarm.1", "ringswarm-agent.1"] {
        let out = Command::new("man")
            .arg("-l")
            .arg(pages.join(name))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "man -l {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("NAME") && text.contains("ringswarm"),
            "{text}"
        );
    }
}

/// A bad config is one line naming the file, line and column of what is wrong.
#[test]
fn config_errors_name_line_and_column() {
    let dir = scratch("config");
    let cases = [
        // An unknown key on line 3: its column.
        (
            "tracker",
            "listen = \"127.0.0.1:0\"\ninterval = 2\n  intervall = 3\n",
            "line 3 column 3",
        ),
        // A value of the wrong type: the value's column.
        (
            "tracker",
            "# ok\ninterval = \"often\"\n",
            "line 2 column 12",
        ),
        // A value parsed after loading, like its flag.
        (
            "origin",
            "dir = \"/nonexistent\"\n\nmax_upload_rate = \"fast\"\n",
            "line 3 column 19",
        ),
    ];
    for (i, (daemon, text, place)) in cases.into_iter().enumerate() {
        let file = dir.path().join(format!("{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let (ok, _, err) = output(&[daemon, "--config", file.to_str().unwrap()]);
        assert!(!ok, "{daemon} accepted {text:?}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {err}");
        assert!(
            lines[0].contains(&format!("`{}` {place}", file.display())),
            "{text:?} should fail at {place}: {err}"
        );
    }
}

/// A warning every worker thread meets at once is printed once per host, not once per
/// core: piece buffers that cannot be registered (RLIMIT_MEMLOCK) on a 2-core demo run as
/// an unprivileged user (root's CAP_IPC_LOCK would lift the limit).
#[test]
fn a_warning_every_core_meets_is_printed_once() {
    let test = "a_warning_every_core_meets_is_printed_once";
    if !support::require(
        support::is_root(),
        test,
        "root (to run the demo as nobody with a small RLIMIT_MEMLOCK)",
    ) || !support::require(
        on_path("setpriv") && on_path("prlimit"),
        test,
        "setpriv and prlimit (Debian package util-linux)",
    ) {
        return;
    }
    let dir = scratch("once-per-host");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for d in [dir.path(), work.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    // Room for the rings (io_uring memory counts against the limit) but not for a 4 MiB
    // piece buffer.
    let out = Command::new("prlimit")
        .arg("--memlock=3000000")
        .args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .args(["--inh-caps=-all", ringswarm(), "demo", "--size", "16M"])
        .args(["--receivers", "1"])
        .env("TMPDIR", &work)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    let warned = stderr
        .lines()
        .filter(|l| l.contains("registering piece buffers failed"))
        .count();
    assert_eq!(warned, 1, "once per host:\n{stderr}");
}
