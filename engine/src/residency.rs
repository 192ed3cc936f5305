//! The post-verify mlock pass: lock a verified blob's pages in memory and hold them, as
//! `vmtouch -l` would.
//!
//! Locking is all or nothing: the budget (`RLIMIT_MEMLOCK`, unless the process has
//! `CAP_IPC_LOCK`) is checked before anything is locked, and a failure part-way unlocks
//! and unmaps what was done. The check counts the memory the process already has locked
//! (`VmLck`, e.g. the previous release still held while the new one is locked), because the
//! kernel does.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ResidencyError {
    /// The message says how to raise the limit.
    #[error(
        "cannot lock {need} bytes: RLIMIT_MEMLOCK is {limit} bytes; raise it with a memlock \
         entry in /etc/security/limits.d, LimitMEMLOCK=infinity in the systemd unit, or \
         grant CAP_IPC_LOCK"
    )]
    LimitTooLow { need: u64, limit: u64 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One locked mapping of a whole file.
#[derive(Debug)]
struct Mapping {
    addr: *mut libc::c_void,
    len: usize,
    path: PathBuf,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `addr`/`len` describe a mapping this struct created with mmap and owns
        // alone; nothing references its memory (it is never read through).
        unsafe {
            libc::munlock(self.addr, self.len);
            libc::munmap(self.addr, self.len);
        }
    }
}

/// Locked files; unlocked and unmapped on drop.
#[derive(Debug)]
pub struct LockedFiles {
    maps: Vec<Mapping>,
    locked_bytes: u64,
    pinned_bytes: u64,
}

// SAFETY: the raw mapping addresses are only used by Drop (munlock/munmap), which needs no
// thread affinity; the memory is never read or written through them.
unsafe impl Send for LockedFiles {}
// SAFETY: `&LockedFiles` exposes only sizes and paths, never the mapped memory.
unsafe impl Sync for LockedFiles {}

impl LockedFiles {
    /// The sum of the locked files' sizes (the kernel locks whole pages, so slightly more
    /// memory is pinned: see [`page_size`]).
    pub fn locked_bytes(&self) -> u64 {
        self.locked_bytes
    }

    /// The memory pinned: each file's size rounded up to whole pages (what the kernel and
    /// `RLIMIT_MEMLOCK` count).
    pub fn pinned_bytes(&self) -> u64 {
        self.pinned_bytes
    }

    /// The locked files (empty files are not mapped and not listed).
    pub fn paths(&self) -> impl Iterator<Item = &Path> + '_ {
        self.maps.iter().map(|m| m.path.as_path())
    }
}

/// Maps and locks every file whole; all or nothing (never a silent partial lock).
pub fn lock_files(paths: &[PathBuf]) -> Result<LockedFiles, ResidencyError> {
    let files = open_all(paths)?;
    let need = files.need.saturating_add(locked_now());
    let limit = memlock_limit();
    check_limit(need, limit, has_cap_ipc_lock())?;
    lock_opened(files, need, limit)
}

/// Files opened for locking, with their sizes.
struct Opened<'a> {
    files: Vec<(&'a PathBuf, File, u64)>,
    /// Sum of the sizes.
    total: u64,
    /// Sum of the sizes rounded up to whole pages (what mlock counts).
    need: u64,
}

fn open_all(paths: &[PathBuf]) -> Result<Opened<'_>, ResidencyError> {
    let page = page_size();
    let mut opened = Opened {
        files: Vec::with_capacity(paths.len()),
        total: 0,
        need: 0,
    };
    for path in paths {
        let f = File::open(path).map_err(|e| io_err(path, e))?;
        let len = f.metadata().map_err(|e| io_err(path, e))?.len();
        opened.total = opened.total.saturating_add(len);
        opened.need = opened
            .need
            .saturating_add(len.div_ceil(page).saturating_mul(page));
        opened.files.push((path, f, len));
    }
    Ok(opened)
}

/// Maps and locks opened files; on a failure, unlocks and unmaps what was done. `need` and
/// `limit` are reported when the kernel refuses for lack of budget.
fn lock_opened(
    opened: Opened<'_>,
    need: u64,
    limit: Option<u64>,
) -> Result<LockedFiles, ResidencyError> {
    let mut locked = LockedFiles {
        maps: Vec::with_capacity(opened.files.len()),
        locked_bytes: 0,
        pinned_bytes: 0,
    };
    for (path, f, len) in opened.files {
        if len == 0 {
            continue;
        }
        let Ok(len) = usize::try_from(len) else {
            return Err(io_err(path, io::Error::from_raw_os_error(libc::EFBIG)));
        };
        let map = map_file(&f, len).map_err(|e| io_err(path, e))?;
        let map = Mapping {
            addr: map,
            len,
            path: path.clone(),
        };
        // SAFETY: `map.addr`/`map.len` are a live mapping created just above.
        if unsafe { libc::mlock(map.addr, map.len) } != 0 {
            let e = io::Error::last_os_error();
            // `map` and every earlier mapping are unlocked and unmapped when dropped.
            drop(map);
            drop(locked);
            return Err(match e.raw_os_error() {
                Some(libc::ENOMEM) | Some(libc::EPERM) => ResidencyError::LimitTooLow {
                    need,
                    limit: limit.unwrap_or(u64::MAX),
                },
                _ => io_err(path, e),
            });
        }
        locked.maps.push(map);
    }
    locked.locked_bytes = opened.total;
    locked.pinned_bytes = opened.need;
    Ok(locked)
}

/// Memory that locking files of these lengths pins: each rounded up to whole pages.
pub fn pinned_size(lengths: impl IntoIterator<Item = u64>) -> u64 {
    let page = page_size();
    lengths.into_iter().fold(0u64, |sum, len| {
        sum.saturating_add(len.div_ceil(page).saturating_mul(page))
    })
}

/// The pure budget check: `need` bytes (page-rounded, including what is already locked)
/// against the soft `RLIMIT_MEMLOCK` (`None` is unlimited); `CAP_IPC_LOCK` bypasses it.
pub fn check_limit(need: u64, limit: Option<u64>, has_cap: bool) -> Result<(), ResidencyError> {
    match limit {
        Some(limit) if !has_cap && need > limit => Err(ResidencyError::LimitTooLow { need, limit }),
        _ => Ok(()),
    }
}

/// The soft `RLIMIT_MEMLOCK` in bytes; None when unlimited (or unreadable).
pub fn memlock_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the valid, exclusively borrowed `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return None;
    }
    (lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// Whether the calling thread's effective capabilities include `CAP_IPC_LOCK` (bit 14 of
/// `CapEff` in /proc/thread-self/status; credentials are per thread, though normally the
/// same in every thread of a process).
pub fn has_cap_ipc_lock() -> bool {
    std::fs::read_to_string("/proc/thread-self/status")
        .or_else(|_| std::fs::read_to_string("/proc/self/status"))
        .ok()
        .and_then(|s| status_field(&s, "CapEff:").and_then(|v| u64::from_str_radix(v, 16).ok()))
        .is_some_and(|caps| caps & (1 << 14) != 0)
}

/// Bytes this process has locked now (`VmLck` in /proc/self/status); 0 when unknown.
fn locked_now() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let v = status_field(&s, "VmLck:")?;
            v.strip_suffix("kB")?.trim().parse::<u64>().ok()
        })
        .map_or(0, |kb| kb.saturating_mul(1024))
}

fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
}

/// The system page size.
pub fn page_size() -> u64 {
    // SAFETY: sysconf only reads its integer argument.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// Bytes of `path` that are in the page cache now (`mincore` over a read-only mapping,
/// which itself faults nothing in). Counts whole pages, capped at the file's size.
pub fn resident_bytes(path: &Path) -> io::Result<u64> {
    let f = File::open(path)?;
    let size = f.metadata()?.len();
    if size == 0 {
        return Ok(0);
    }
    let len = usize::try_from(size).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    let addr = map_file(&f, len)?;
    let page = page_size();
    let pages = size.div_ceil(page) as usize;
    let mut vec = vec![0u8; pages];
    // SAFETY: `addr`/`len` are the mapping created above; `vec` has one byte per page of
    // it, as mincore requires.
    let r = unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) };
    let err = io::Error::last_os_error();
    // SAFETY: unmapping the mapping created above; nothing references it.
    unsafe { libc::munmap(addr, len) };
    if r != 0 {
        return Err(err);
    }
    let resident = vec.iter().filter(|&&b| b & 1 != 0).count() as u64;
    Ok(resident.saturating_mul(page).min(size))
}

/// `mmap(PROT_READ, MAP_SHARED)` of the first `len` bytes of `f`.
fn map_file(f: &File, len: usize) -> io::Result<*mut libc::c_void> {
    // SAFETY: a fresh read-only shared mapping chosen by the kernel (addr NULL); it aliases
    // no Rust memory, and the descriptor is valid for the call (the mapping outlives it).
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(addr)
}

fn io_err(path: &Path, source: io::Error) -> ResidencyError {
    ResidencyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_dir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("ringswarm-residency-")
            .tempdir_in("/var/tmp")
            .or_else(|_| {
                tempfile::Builder::new()
                    .prefix("ringswarm-residency-")
                    .tempdir()
            })
            .expect("a temporary directory")
    }

    #[test]
    fn check_limit_is_all_or_nothing() {
        assert!(check_limit(100, Some(100), false).is_ok());
        assert!(check_limit(100, None, false).is_ok());
        assert!(check_limit(1 << 40, Some(100), true).is_ok());
        let err = check_limit(101, Some(100), false).unwrap_err();
        assert!(matches!(
            err,
            ResidencyError::LimitTooLow {
                need: 101,
                limit: 100
            }
        ));
        assert!(err.to_string().contains("LimitMEMLOCK=infinity"));
    }

    #[test]
    fn parses_status_fields() {
        let s = "Name:\tx\nVmLck:\t      12 kB\nCapEff:\t0000000000004000\n";
        assert_eq!(status_field(s, "VmLck:"), Some("12 kB"));
        assert_eq!(status_field(s, "CapEff:"), Some("0000000000004000"));
        assert_eq!(status_field(s, "Nope:"), None);
    }

    #[test]
    fn locks_a_small_file_and_unlocks_on_drop() {
        let dir = test_dir();
        let a = dir.path().join("a");
        let b = dir.path().join("empty");
        std::fs::write(&a, vec![5u8; 3 * 4096 + 10]).unwrap();
        std::fs::write(&b, []).unwrap();
        let need = (3 * 4096 + 10u64).div_ceil(page_size()) * page_size();
        if let Err(e) = check_limit(need + locked_now(), memlock_limit(), has_cap_ipc_lock()) {
            eprintln!("skipping: {e} (run as root or raise the limit)");
            return;
        }
        let before = locked_now();
        let locked = lock_files(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(locked.locked_bytes(), 3 * 4096 + 10);
        assert_eq!(resident_bytes(&a).unwrap(), 3 * 4096 + 10);
        assert_eq!(resident_bytes(&b).unwrap(), 0);
        assert_eq!(locked.paths().collect::<Vec<_>>(), vec![a.as_path()]);
        // Other tests may lock concurrently; ours alone accounts for at least `need`.
        if before == 0 {
            assert!(locked_now() >= need);
        }
        drop(locked);
        assert!(lock_files(&[dir.path().join("missing")]).is_err());
        assert!(lock_files(&[]).unwrap().locked_bytes() == 0);
    }

    const CHILD_ENV: &str = "RINGSWARM_MEMLOCK_CHILD";
    const CHILD_OK: &str = "memlock child: refused as expected";

    #[test]
    fn refuses_before_locking_when_the_limit_is_too_low() {
        assert!(matches!(
            check_limit(2 * page_size(), Some(page_size()), false),
            Err(ResidencyError::LimitTooLow { .. })
        ));
        // The live path runs in a child process (this test binary, running only
        // `memlock_child`): lowering RLIMIT_MEMLOCK and dropping CAP_IPC_LOCK here would
        // affect the other tests of this process.
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "residency::tests::memlock_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
        if stdout.contains("skipping") {
            eprintln!(
                "{}",
                stdout
                    .lines()
                    .find(|l| l.contains("skipping"))
                    .unwrap_or("")
            );
            return;
        }
        assert!(
            stdout.contains(CHILD_OK),
            "child did not run:\n{stdout}\n{stderr}"
        );
    }

    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: libc::c_int,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }

    /// Drops CAP_IPC_LOCK from the effective set of this (child) process.
    fn drop_cap_ipc_lock() -> io::Result<()> {
        const VERSION_3: u32 = 0x2008_0522;
        let mut hdr = CapHeader {
            version: VERSION_3,
            pid: 0,
        };
        let mut data = [CapData::default(); 2];
        // SAFETY: capget writes one header and two data structs (version 3 layout) into
        // the valid, exclusively borrowed `hdr` and `data`.
        if unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        data[0].effective &= !(1 << 14);
        // SAFETY: capset reads the same valid structs.
        if unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Runs only in the child started by `refuses_before_locking_when_the_limit_is_too_low`.
    #[test]
    fn memlock_child() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        if has_cap_ipc_lock() {
            if let Err(e) = drop_cap_ipc_lock() {
                println!("skipping the live refusal: cannot drop CAP_IPC_LOCK: {e}");
                return;
            }
            assert!(!has_cap_ipc_lock());
        }
        let page = page_size();
        let limit = 4 * page;
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit read or write one valid `rlimit`.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim), 0);
            lim.rlim_cur = limit;
            assert_eq!(libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim), 0);
        }
        assert_eq!(memlock_limit(), Some(limit));
        let base = locked_now();
        let dir = test_dir();
        let small = dir.path().join("small");
        let big = dir.path().join("big");
        std::fs::write(&small, vec![1u8; 2 * page as usize]).unwrap();
        std::fs::write(&big, vec![2u8; 16 * page as usize]).unwrap();
        let paths = [small.clone(), big.clone()];

        // The budget check refuses before anything is locked.
        let err = lock_files(&paths).unwrap_err();
        assert!(
            matches!(err, ResidencyError::LimitTooLow { need, limit: l } if need >= 18 * page && l == limit),
            "{err}"
        );
        assert_eq!(locked_now(), base);

        // Past the check, the kernel refuses the second file: the first is unlocked again.
        let opened = open_all(&paths).unwrap();
        let err = lock_opened(opened, 18 * page, Some(limit)).unwrap_err();
        assert!(matches!(err, ResidencyError::LimitTooLow { .. }), "{err}");
        assert_eq!(locked_now(), base);

        // Within the limit it works.
        let ok = lock_files(std::slice::from_ref(&small)).unwrap();
        assert_eq!(ok.locked_bytes(), 2 * page);
        assert!(locked_now() >= base + 2 * page);
        drop(ok);
        assert_eq!(locked_now(), base);
        println!("{CHILD_OK}");
    }

    #[test]
    fn resident_bytes_sees_the_page_cache() {
        let dir = test_dir();
        let a = dir.path().join("a");
        std::fs::write(&a, vec![3u8; 8192]).unwrap();
        // Just written through the page cache: resident (unless memory pressure evicted it,
        // so only check the bound).
        assert!(resident_bytes(&a).unwrap() <= 8192);
        assert!(resident_bytes(&dir.path().join("missing")).is_err());
    }
}
