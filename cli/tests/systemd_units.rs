//! The shipped systemd units (scripts/systemd/) run with least privilege: each is rated
//! better than 5.0 by `systemd-analyze security` (offline: no running systemd needed), and
//! each keeps what its service needs (its directory writable, CAP_IPC_LOCK for the agent);
//! they pass `systemd-analyze verify`; the daemons speak `Type=notify` (readiness and
//! watchdog); the example configs fit together; scripts/install.sh puts it all in place.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

mod support;
use support::{on_path, require, script, Guard};

const UNITS: [&str; 3] = [
    "ringswarm-agent.service",
    "ringswarm-origin.service",
    "ringswarm-tracker.service",
];

fn unit_path(name: &str) -> PathBuf {
    script("systemd").join(name)
}

/// The values of `key=` in a unit file (every line that sets it, in order).
fn values(unit: &str, key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(unit_path(unit)).unwrap();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
        .collect()
}

/// The `dir` key of an example config beside the units.
fn config_dir(config: &str) -> String {
    let text = std::fs::read_to_string(script("systemd").join(config)).unwrap();
    let table: toml::Table = text.parse().unwrap();
    table["dir"].as_str().unwrap().to_owned()
}

#[test]
fn every_unit_is_rated_better_than_5_by_systemd_analyze_security() {
    if !require(
        on_path("systemd-analyze"),
        "every_unit_is_rated_better_than_5_by_systemd_analyze_security",
        "systemd-analyze (Debian package systemd)",
    ) {
        return;
    }
    let mut scores = Vec::new();
    for unit in UNITS {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(unit_path(unit))
            .env("SYSTEMD_COLORS", "0")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| l.split_once(&format!("Overall exposure level for {unit}: ")))
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "{unit}: no exposure level in the output of systemd-analyze: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        scores.push(format!("{unit} {score}"));
        assert!(score < 5.0, "{unit} is rated {score}:\n{text}");
    }
    support::skip_note(&format!("systemd-analyze security: {}", scores.join(", ")));
}

#[test]
fn the_units_keep_what_their_services_need() {
    // The agent writes its --dir and may lock releases in memory.
    let agent = "ringswarm-agent.service";
    let dir = config_dir("agent.toml");
    assert!(
        values(agent, "ReadWritePaths").iter().any(|p| p == &dir),
        "{agent}: {dir} (agent.toml's dir) is not writable"
    );
    assert_eq!(values(agent, "CapabilityBoundingSet"), ["CAP_IPC_LOCK"]);
    assert_eq!(values(agent, "LimitMEMLOCK"), ["infinity"]);
    assert_eq!(values(agent, "ProtectSystem"), ["strict"]);
    // The origin writes its directory only.
    let origin = "ringswarm-origin.service";
    let dir = config_dir("origin.toml");
    assert!(
        values(origin, "ReadWritePaths").iter().any(|p| p == &dir),
        "{origin}: {dir} (origin.toml's dir) is not writable"
    );
    assert_eq!(values(origin, "CapabilityBoundingSet"), [""]);
    for unit in UNITS {
        assert_eq!(values(unit, "NoNewPrivileges"), ["yes"], "{unit}");
        assert_eq!(values(unit, "ProtectSystem"), ["strict"], "{unit}");
        // io_uring is in @system-service (@aio) as of systemd 252: it must stay allowed.
        assert!(
            values(unit, "SystemCallFilter").contains(&"@system-service".to_owned()),
            "{unit}"
        );
    }
}

/// The units as installed with the binary at `binary`, in a fresh directory.
fn units_pointing_at(binary: &str, dir: &std::path::Path) -> Vec<PathBuf> {
    UNITS
        .iter()
        .map(|unit| {
            let text = std::fs::read_to_string(unit_path(unit)).unwrap();
            let path = dir.join(unit);
            std::fs::write(&path, text.replace("/usr/local/bin/ringswarm", binary)).unwrap();
            path
        })
        .collect()
}

/// `systemd-analyze verify` checks each unit's syntax, its values and that ExecStart's
/// binary exists. The shipped units name /usr/local/bin/ringswarm; here each is copied
/// with that path rewritten to the binary under test (as scripts/install.sh does for
/// another --prefix). Warnings count as failures: verify exits 0 on a value it ignores.
#[test]
fn every_unit_passes_systemd_analyze_verify() {
    if !require(
        on_path("systemd-analyze"),
        "every_unit_passes_systemd_analyze_verify",
        "systemd-analyze (Debian package systemd)",
    ) {
        return;
    }
    let dir = support::scratch("verify");
    for unit in units_pointing_at(support::ringswarm(), dir.path()) {
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&unit)
            .env("SYSTEMD_COLORS", "0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let name = unit.file_name().unwrap().to_string_lossy().into_owned();
        let about_unit: Vec<&str> = stderr.lines().filter(|l| l.contains(&name)).collect();
        assert!(
            out.status.success() && about_unit.is_empty(),
            "{name}: systemd-analyze verify: {}\n{stderr}",
            out.status
        );
    }
}

#[test]
fn the_units_wait_for_readiness_and_keep_a_watchdog() {
    for unit in UNITS {
        assert_eq!(values(unit, "Type"), ["notify"], "{unit}");
        assert_eq!(values(unit, "NotifyAccess"), ["main"], "{unit}");
        let watchdog = values(unit, "WatchdogSec");
        assert_eq!(watchdog.len(), 1, "{unit}: one WatchdogSec=");
        assert_eq!(
            values(unit, "Restart"),
            ["always"],
            "{unit}: a watchdog kill restarts"
        );
    }
}

/// A config key's string value.
fn config_str(config: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(script("systemd").join(config)).unwrap();
    let table: toml::Table = text.parse().unwrap();
    table.get(key).map(|v| v.as_str().unwrap().to_owned())
}

/// The example configs work together on one machine, as shipped: the agent's feed is the
/// origin's HTTP address, the origin announces to the tracker, nothing listens twice on one
/// port, the agent names no topology file (its place comes from the tracker's), and every
/// file they name is shipped beside them or made by `ringswarm keygen` as the README says.
#[test]
fn the_example_configs_work_together_as_shipped() {
    let origin_http = config_str("origin.toml", "http").unwrap();
    assert_eq!(
        config_str("agent.toml", "feed").unwrap(),
        format!("http://{origin_http}/feed.json")
    );
    let tracker_listen = config_str("tracker.toml", "listen").unwrap();
    let text = std::fs::read_to_string(script("systemd").join("origin.toml")).unwrap();
    let origin: toml::Table = text.parse().unwrap();
    let trackers: Vec<&str> = origin["trackers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(trackers, [format!("udp://{tracker_listen}")]);
    assert_eq!(
        config_str("origin.toml", "tracker_http").unwrap(),
        format!("http://{}", config_str("tracker.toml", "metrics").unwrap()),
        "the fleet page reads the tracker's HTTP port"
    );
    let text = std::fs::read_to_string(script("systemd").join("agent.toml")).unwrap();
    let agent: toml::Table = text.parse().unwrap();
    assert_eq!(
        agent["trackers"].as_array().unwrap()[0].as_str(),
        Some(trackers[0])
    );
    let mut ports = vec![
        origin_http,
        config_str("origin.toml", "listen").unwrap(),
        config_str("agent.toml", "listen").unwrap(),
        config_str("agent.toml", "metrics").unwrap(),
        config_str("tracker.toml", "metrics").unwrap(),
    ];
    ports.sort();
    let before = ports.len();
    ports.dedup();
    assert_eq!(
        ports.len(),
        before,
        "two daemons on one TCP port: {ports:?}"
    );
    assert_eq!(config_str("agent.toml", "topology"), None);
    assert_eq!(
        config_str("agent.toml", "pubkey").unwrap(),
        "/etc/ringswarm/release.pub",
        "where `ringswarm keygen /etc/ringswarm/release` writes it (README-install.md)"
    );
    // Every /etc/ringswarm/ file a config or unit names is shipped (or is the key pair).
    let shipped: Vec<String> = std::fs::read_dir(script("systemd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for entry in std::fs::read_dir(script("systemd")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for named in text.split("/etc/ringswarm/").skip(1) {
            let file: String = named
                .chars()
                .take_while(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-'))
                .collect();
            let file = file.trim_end_matches('.');
            if file.is_empty() || file.starts_with("release") {
                continue;
            }
            assert!(
                shipped.iter().any(|s| s == file),
                "{}: names /etc/ringswarm/{file}, which is not shipped",
                path.display()
            );
        }
    }
}

/// What a daemon sent to its NOTIFY_SOCKET within `within`: stops early once READY=1 and
/// `pings` WATCHDOG=1 have arrived.
fn notifications(socket: &UnixDatagram, within: Duration, pings: usize) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let ready = got
            .iter()
            .any(|m: &String| m.lines().any(|l| l == "READY=1"));
        let watchdogs = got
            .iter()
            .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
            .count();
        let left = deadline.saturating_duration_since(Instant::now());
        if (ready && watchdogs >= pings) || left.is_zero() {
            return got;
        }
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

/// Each daemon under `Type=notify`: READY=1 once it serves, then WATCHDOG=1 at half of
/// WATCHDOG_USEC (2 s here: a ping about every second), over a socket the test binds as
/// systemd would.
#[test]
fn each_daemon_says_ready_and_pings_the_watchdog() {
    let dir = support::scratch("notify");
    let base = dir.path();
    support::release::keygen(base, "fleet");
    let mut tracker = Command::new(support::ringswarm());
    tracker.args(["tracker", "--listen", "127.0.0.1:0", "--cores", "1"]);
    let mut agent = Command::new(support::ringswarm());
    agent
        .args(["agent", "--feed", "http://127.0.0.1:9/feed.json"])
        .args(["--listen", "127.0.0.1:0", "--cores", "1", "--pubkey"])
        .arg(base.join("fleet.pub"))
        .arg("--dir")
        .arg(base.join("agent"));
    let daemons = [
        ("tracker", tracker, "tracker listening on "),
        (
            "origin",
            support::release::origin_command(base),
            "listening on ",
        ),
        ("agent", agent, "status socket "),
    ];
    for (name, mut cmd, serving) in daemons {
        let socket_path = base.join(format!("{name}.notify"));
        let socket = UnixDatagram::bind(&socket_path).unwrap();
        cmd.env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "2000000");
        let mut daemon = Guard::spawn(name, cmd, base);
        daemon.wait_line(serving, Duration::from_secs(60), &[]);
        let got = notifications(&socket, Duration::from_secs(8), 3);
        let ready = got.iter().position(|m| m.lines().any(|l| l == "READY=1"));
        let pings = got
            .iter()
            .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
            .count();
        if ready.is_none() || pings < 3 {
            daemon.fail(&[], &format!("READY=1 and 3 WATCHDOG=1 expected: {got:?}"));
        }
        assert!(
            got[ready.unwrap()]
                .lines()
                .any(|l| l.starts_with("STATUS=")),
            "{name}: a status line with READY=1: {got:?}"
        );
    }
}

/// scripts/install.sh into a --dest-root: the binary, the units (ExecStart naming the
/// installed binary), the example configs, completions and manual pages; run again over an
/// operator's edited config, it keeps that and puts the example beside it, saying so.
#[test]
fn install_sh_puts_everything_in_place_and_keeps_existing_configs() {
    let dir = support::scratch("install");
    let root = dir.path().join("root");
    let install = |prefix: &str| {
        let out = Command::new("bash")
            .arg(script("install.sh"))
            .args(["--prefix", prefix, "--binary", support::ringswarm()])
            .arg("--dest-root")
            .arg(&root)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "install.sh failed: {text}");
        text
    };
    install("/opt/rs");
    let bin = root.join("opt/rs/bin/ringswarm");
    let version = Command::new(&bin).arg("--version").output().unwrap();
    assert!(version.status.success(), "the installed binary runs");
    for unit in UNITS {
        let text = std::fs::read_to_string(root.join("etc/systemd/system").join(unit)).unwrap();
        assert!(
            text.contains("ExecStart=/opt/rs/bin/ringswarm "),
            "{unit} names the installed binary:\n{text}"
        );
    }
    for config in ["tracker.toml", "origin.toml", "agent.toml", "topology.toml"] {
        assert_eq!(
            std::fs::read_to_string(root.join("etc/ringswarm").join(config)).unwrap(),
            std::fs::read_to_string(script("systemd").join(config)).unwrap(),
            "{config}"
        );
    }
    let bash =
        std::fs::read_to_string(root.join("opt/rs/share/bash-completion/completions/ringswarm"))
            .unwrap();
    assert!(bash.contains("agent") && bash.contains("publish"), "{bash}");
    assert!(root
        .join("opt/rs/share/zsh/site-functions/_ringswarm")
        .is_file());
    assert!(root
        .join("opt/rs/share/fish/vendor_completions.d/ringswarm.fish")
        .is_file());
    let man =
        std::fs::read_to_string(root.join("opt/rs/share/man/man1/ringswarm-agent.1")).unwrap();
    assert!(man.contains(".TH ringswarm-agent 1"), "{man}");

    // The operator's own config survives a second install.
    let agent = root.join("etc/ringswarm/agent.toml");
    std::fs::write(&agent, "dir = \"/srv/mine\"\n").unwrap();
    let said = install("/opt/rs");
    assert_eq!(
        std::fs::read_to_string(&agent).unwrap(),
        "dir = \"/srv/mine\"\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/ringswarm/agent.toml.example")).unwrap(),
        std::fs::read_to_string(script("systemd").join("agent.toml")).unwrap()
    );
    assert!(
        said.contains("kept your /etc/ringswarm/agent.toml") && said.contains("agent.toml.example"),
        "{said}"
    );
    assert!(
        !root.join("etc/ringswarm/origin.toml.example").exists(),
        "only where one existed"
    );
}

/// As root and without --binary, install.sh refuses to build (sudo's PATH has no cargo,
/// and a root-owned target/ would stay behind) with one line saying what to run instead;
/// it never reaches cargo (a `cargo` that fails loudly is first on PATH), and leaves no
/// file behind.
#[test]
fn install_sh_does_not_build_as_root() {
    let test = "install_sh_does_not_build_as_root";
    let root_user = support::is_root();
    if !root_user && !require(on_path("unshare"), test, "unshare (util-linux)") {
        return;
    }
    let dir = support::scratch("install-root");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("cargo");
    std::fs::write(&fake, "#!/bin/sh\necho 'cargo was run' >&2\nexit 42\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let target = dir.path().join("root");
    let mut c = if root_user {
        Command::new("bash")
    } else {
        // uid 0 in a user namespace of our own: `id -u` says 0 as under sudo.
        let mut c = Command::new("unshare");
        c.args(["--map-root-user", "bash"]);
        c
    };
    let out = c
        .arg(script("install.sh"))
        .arg("--dest-root")
        .arg(&target)
        .env("PATH", path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if !root_user && err.contains("unshare") {
        require(false, test, "an unprivileged user namespace (unshare -r)");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("cargo was run"), "{err}");
    assert!(
        err.contains("not building as root")
            && err.contains("sudo scripts/install.sh --binary target/release/ringswarm"),
        "{err}"
    );
    assert!(!target.exists(), "nothing installed");
}
