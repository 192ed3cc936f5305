//! The hook the agent runs after each activation (`agent --hook`).
//!
//! Decisions:
//! - Journaled: before a hook is queued, a small record `DIR/.agent/hooks/NAME@VERSION.json`
//!   is written and fsynced; it is removed once the hook finished (or was skipped for a
//!   newer activation of the name). An agent killed meanwhile finds the record on restart
//!   and runs the hook again for that activation, if the release is still current: hooks
//!   run at least once per activation, so they must be idempotent (a reload is).
//! - A clean environment: `PATH` (the agent's), the `RINGSWARM_RELEASE_*` variables, and
//!   only the variables named by `--hook-env` (the agent's values). Nothing else of the
//!   agent's environment (credentials, say) reaches the hook.
//! - A timeout (`--hook-timeout`): past it the hook's whole process group is killed
//!   (SIGKILL) and the hook reported as timed out. The hook starts its own process group.
//! - Its output (stdout and stderr, one pipe) is read as it comes and only the last
//!   [`OUTPUT_CAP`] bytes are kept, so a hook printing gigabytes costs no memory; the
//!   status shows the last line.
//! - Hooks run one at a time, in activation order, so a service never hears of an older
//!   release after a newer one. When several activations of one name are waiting, only
//!   the newest one's hook runs.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::files::{sync_dir, write_atomic};
use crate::feed::Release;

/// Output bytes of a hook kept (the tail).
pub const OUTPUT_CAP: usize = 64 << 10;
/// The longest last line shown in the status.
const LAST_LINE_CAP: usize = 300;
/// PATH for a hook when the agent has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long the output of an exited hook is still read (a process it left in the
/// background may hold the pipe open for ever).
const OUTPUT_GRACE: Duration = Duration::from_millis(500);
/// The hook's outcome when it succeeded.
pub const HOOK_OK: &str = "hook ok";

/// What every hook run shares.
#[derive(Clone, Debug)]
pub struct HookSettings {
    /// Run with `sh -c`.
    pub cmd: String,
    /// Names of the agent's environment variables passed on.
    pub env: Vec<String>,
    pub timeout: Duration,
}

/// Hook outcomes, for `/metrics`.
#[derive(Default, Debug)]
pub struct HookCounters {
    pub failures: AtomicU64,
    pub timeouts: AtomicU64,
}

/// The journal record of a hook that is due.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub name: String,
    pub version: String,
    pub info_hash: String,
}

/// Checks a `--hook-env` name: a plain variable name, not one the agent sets itself.
pub fn check_env_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(format!(
            "`{}` is not an environment variable name (letters, digits, _)",
            name.escape_default()
        ));
    }
    if name == "PATH" || name.starts_with("RINGSWARM_") {
        return Err(format!("{name} is always passed to the hook"));
    }
    Ok(())
}

/// The hook's environment: PATH, the `--hook-env` variables the agent has, and the
/// release. `agent_env` looks a variable up in the agent's environment.
pub fn hook_environment(
    settings: &HookSettings,
    release: &Release,
    path: &Path,
    agent_env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Vec<(String, std::ffi::OsString)> {
    let mut env = vec![(
        "PATH".to_owned(),
        agent_env("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
    )];
    for name in &settings.env {
        if let Some(v) = agent_env(name) {
            env.push((name.clone(), v));
        }
    }
    env.push(("RINGSWARM_RELEASE_NAME".into(), release.name.clone().into()));
    env.push((
        "RINGSWARM_RELEASE_VERSION".into(),
        release.version.clone().into(),
    ));
    env.push(("RINGSWARM_RELEASE_PATH".into(), path.as_os_str().to_owned()));
    env
}

/// The last non-empty line of `output`, printable and at most [`LAST_LINE_CAP`] chars.
pub fn last_line(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("");
    let chars: Vec<char> = line.chars().filter(|c| !c.is_control()).collect();
    let start = chars.len().saturating_sub(LAST_LINE_CAP);
    chars[start..].iter().collect()
}

/// Appends `chunk` to `tail`, keeping only the last `cap` bytes (trimmed in batches so
/// appending stays cheap).
pub fn keep_tail(tail: &mut Vec<u8>, chunk: &[u8], cap: usize) {
    if chunk.len() >= cap {
        tail.clear();
        tail.extend_from_slice(&chunk[chunk.len() - cap..]);
        return;
    }
    tail.extend_from_slice(chunk);
    if tail.len() > 2 * cap {
        tail.drain(..tail.len() - cap);
    }
}

/// The journal's directory in the agent's state directory.
pub fn journal_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("hooks")
}

fn journal_path(dir: &Path, name: &str, version: &str) -> PathBuf {
    // Names and versions are letters, digits and - _ . +: `@` cannot be part of either.
    dir.join(format!("{name}@{version}.json"))
}

/// The hooks due after a restart (records that do not parse are removed).
pub fn pending(dir: &Path) -> Vec<(Pending, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Pending>(&b).map_err(|e| e.to_string()))
        {
            Ok(p) => out.push((p, path)),
            Err(e) => {
                tracing::warn!(path = %path.display(), err = %e, "not a hook record; removed");
                std::fs::remove_file(&path).ok();
            }
        }
    }
    out
}

/// Removes a journal record (durably: a hook that finished is not run again).
pub fn forget(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                sync_dir(dir).ok();
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), err = %e, "cannot remove a hook record"),
    }
}

/// One hook to run after an activation.
struct HookJob {
    release: Release,
    path: PathBuf,
    outcome: Arc<Mutex<Option<String>>>,
    journal: PathBuf,
}

/// Queues hooks and runs them on their own thread (started when first needed).
pub struct Hooks {
    settings: Arc<HookSettings>,
    journal: PathBuf,
    counters: Arc<HookCounters>,
    jobs: Option<crossbeam_channel::Sender<HookJob>>,
}

impl Hooks {
    pub fn new(settings: HookSettings, journal: PathBuf) -> Hooks {
        Hooks {
            settings: Arc::new(settings),
            journal,
            counters: Arc::new(HookCounters::default()),
            jobs: None,
        }
    }

    pub fn counters(&self) -> &HookCounters {
        &self.counters
    }

    pub fn journal(&self) -> &Path {
        &self.journal
    }

    /// Journals the hook of `release`'s activation, durably, and returns the record's path.
    /// Called before `current` is flipped, so no crash can leave an activation without its
    /// record (a record whose release did not become current is dropped at restart).
    pub fn record_activation(&self, release: &Release) -> PathBuf {
        let journal = journal_path(&self.journal, &release.name, &release.version);
        let record = Pending {
            name: release.name.clone(),
            version: release.version.clone(),
            info_hash: crate::hex(&release.info_hash),
        };
        let text = serde_json::to_vec(&record).unwrap_or_default();
        if let Err(e) = write_atomic(&journal, &text) {
            tracing::error!(path = %journal.display(), err = %e, "cannot journal the hook; a crash now would not run it again");
        }
        journal
    }

    /// Queues the hook of `release` (moved into `path`), journaled in `journal` (see
    /// [`Hooks::record_activation`]); its outcome lands in `outcome`.
    pub fn queue(
        &mut self,
        release: &Release,
        path: &Path,
        outcome: Arc<Mutex<Option<String>>>,
        journal: PathBuf,
    ) {
        if self.jobs.is_none() {
            let (tx, rx) = crossbeam_channel::unbounded();
            let counters = self.counters.clone();
            let settings = self.settings.clone();
            match std::thread::Builder::new()
                .name("rs-hook".into())
                .spawn(move || hook_runner(&rx, &settings, &counters))
            {
                Ok(_) => self.jobs = Some(tx),
                Err(e) => {
                    tracing::error!("cannot start the hook thread (tried again next time): {e}")
                }
            }
        }
        let job = HookJob {
            release: release.clone(),
            path: path.to_path_buf(),
            outcome: outcome.clone(),
            journal,
        };
        let sent = self.jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok());
        if !sent {
            // The record stays: a restart runs it.
            *outcome.lock().unwrap_or_else(|p| p.into_inner()) =
                Some("hook not run: no hook thread".into());
        }
    }
}

fn set(outcome: &Mutex<Option<String>>, text: String) {
    *outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
}

/// Runs hooks one at a time, in activation order. Ends when the agent drops the sender.
fn hook_runner(
    jobs: &crossbeam_channel::Receiver<HookJob>,
    settings: &HookSettings,
    counters: &HookCounters,
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        batch.extend(jobs.try_iter());
        let mut keep: Vec<HookJob> = Vec::new();
        for job in batch {
            if let Some(at) = keep.iter().position(|k| k.release.name == job.release.name) {
                let old = keep.remove(at);
                set(
                    &old.outcome,
                    format!("hook skipped: {} came first", job.release.label()),
                );
                if old.journal != job.journal {
                    forget(&old.journal);
                }
            }
            keep.push(job);
        }
        for job in keep {
            set(&job.outcome, "hook running".into());
            let ran = run_hook(settings, &job.release, &job.path);
            if ran.timed_out {
                counters.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            if ran.text != HOOK_OK {
                counters.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(release = %job.release.label(), "{}", ran.text);
            } else {
                tracing::info!(release = %job.release.label(), "hook ran");
            }
            forget(&job.journal);
            set(&job.outcome, ran.text);
        }
    }
}

/// How a hook run ended.
pub struct HookRun {
    /// [`HOOK_OK`], or why not with the output's last line.
    pub text: String,
    pub timed_out: bool,
}

/// Runs the hook for `release` at `path`: clean environment, own process group, output
/// tail kept, killed past the timeout.
pub fn run_hook(settings: &HookSettings, release: &Release, path: &Path) -> HookRun {
    let failed = |text: String| HookRun {
        text,
        timed_out: false,
    };
    let (mut reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return failed(format!("hook could not run: pipe: {e}")),
    };
    let writer2 = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return failed(format!("hook could not run: pipe: {e}")),
    };
    let env = hook_environment(settings, release, path, |k| std::env::var_os(k));
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&settings.cmd)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer2);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let spawned = cmd.spawn();
    // The command holds the pipe's write ends: let go of them so the reader sees the end.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return failed(format!("hook could not run: {e}")),
    };
    let tail = Arc::new(Mutex::new(Vec::new()));
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
    {
        let tail = tail.clone();
        let spawned = std::thread::Builder::new()
            .name("rs-hook-out".into())
            .spawn(move || {
                let mut buf = vec![0u8; 16 << 10];
                loop {
                    match reader.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                            keep_tail(&mut t, &buf[..n], OUTPUT_CAP);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                done_tx.send(()).ok();
            });
        if let Err(e) = spawned {
            // Without a reader the hook would block on a full pipe: stop it now.
            kill_group(&child);
            child.wait().ok();
            return failed(format!("hook not run: cannot read its output: {e}"));
        }
    }
    let deadline = Instant::now() + settings.timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Ok(st),
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                kill_group(&child);
                break child.wait();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => break Err(e),
        }
    };
    done_rx.recv_timeout(OUTPUT_GRACE).ok();
    let last = last_line(&tail.lock().unwrap_or_else(|p| p.into_inner()));
    let with_last = |head: String| {
        if last.is_empty() {
            head
        } else {
            format!("{head}: {last}")
        }
    };
    let text = match status {
        _ if timed_out => with_last(format!(
            "hook timed out after {} and was killed",
            humanize(settings.timeout)
        )),
        Ok(st) if st.success() => HOOK_OK.to_owned(),
        Ok(st) => with_last(format!("hook failed ({st})")),
        Err(e) => format!("hook could not be waited for: {e}"),
    };
    HookRun { text, timed_out }
}

/// Kills the hook's process group (the hook and whatever it started).
fn kill_group(child: &std::process::Child) {
    let pid = rustix::process::Pid::from_child(child);
    if let Err(e) = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL) {
        tracing::warn!(pid = child.id(), err = %e, "cannot kill the hook's process group");
    }
}

fn humanize(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_tail_is_capped() {
        let mut tail = Vec::new();
        for i in 0..1000u32 {
            keep_tail(&mut tail, &[(i % 251) as u8; 1000], 4096);
            assert!(tail.len() <= 2 * 4096);
        }
        keep_tail(&mut tail, b"", 4096);
        assert!(tail.len() >= 4096);
        keep_tail(&mut tail, &vec![7; 10_000], 4096);
        assert_eq!(tail, vec![7; 4096]);
    }

    #[test]
    fn the_last_line_is_printable_and_short() {
        assert_eq!(last_line(b"one\ntwo\n\n  \n"), "two");
        assert_eq!(last_line(b""), "");
        assert_eq!(last_line(b"a\x1b[31mred\r\n"), "a[31mred");
        assert_eq!(last_line(&vec![b'x'; 5000]).len(), LAST_LINE_CAP);
    }

    #[test]
    fn env_names_are_checked() {
        check_env_name("HOME").unwrap();
        check_env_name("_X1").unwrap();
        for bad in ["", "1A", "A-B", "A=B", "PATH", "RINGSWARM_X"] {
            assert!(check_env_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_environment_is_path_the_release_and_the_named_variables() {
        let release = Release {
            name: "index".into(),
            version: "v1".into(),
            info_hash: [0; 20],
            size: 0,
            published_ms: 0,
            metainfo: Vec::new(),
        };
        let settings = HookSettings {
            cmd: "true".into(),
            env: vec!["KEEP".into(), "ABSENT".into()],
            timeout: Duration::from_secs(1),
        };
        let agent = |k: &str| match k {
            "KEEP" => Some("yes".into()),
            "SECRET" => Some("no".into()),
            _ => None,
        };
        let env = hook_environment(&settings, &release, Path::new("/r/index/v1"), agent);
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "PATH",
                "KEEP",
                "RINGSWARM_RELEASE_NAME",
                "RINGSWARM_RELEASE_VERSION",
                "RINGSWARM_RELEASE_PATH"
            ]
        );
        assert_eq!(env[0].1, DEFAULT_PATH);
    }
}
