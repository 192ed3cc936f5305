//! Opening files and directories below a destination without following symbolic links.
//!
//! A download writes only below its destination directory `DEST`, and never through a
//! symbolic link found there: `DEST/dir -> /etc` or `DEST/file -> /tmp/x` planted before
//! (or during) a download must not make it create, truncate or write anything outside
//! `DEST`. `DEST` itself is opened normally and may be a link; everything below it is
//! resolved relative to that open directory with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` (Linux 5.6). Where that syscall is missing (ENOSYS), and to create
//! missing directories or to name the offending link in an error, each component is
//! opened in turn with `openat(O_NOFOLLOW)` relative to the previous one (and created
//! with `mkdirat`), so no step can be redirected by a link swapped in between steps.
//!
//! A link is refused with [`StorageError::Symlink`], naming the link's path. Hard links
//! are not links here: they name a file inside `DEST`.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::StorageError;

/// Set once `openat2` answered ENOSYS: every later open walks.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// An open directory that files are opened beneath.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// How it is shown in errors.
    path: PathBuf,
}

impl Dir {
    /// Opens `path` as a directory, following links: a destination may itself be a link.
    pub fn open(path: &Path) -> Result<Dir, StorageError> {
        let c = cstring(path.as_os_str()).map_err(|e| StorageError::io(path, e))?;
        let fd = openat(libc::AT_FDCWD, &c, libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .map_err(|e| StorageError::io(path, e))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The path it was opened as (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file `rel` below this directory with `flags` (`O_NOFOLLOW` and
    /// `O_CLOEXEC` are added; `mode` applies with `O_CREAT`), creating missing directories
    /// on the way when `create_dirs`. No component may be a symbolic link.
    pub fn open_file(
        &self,
        rel: &Path,
        flags: i32,
        mode: u32,
        create_dirs: bool,
    ) -> Result<File, StorageError> {
        self.open_file_with(rel, flags, mode, create_dirs, true)
    }

    /// [`Dir::open_file`]; `try_openat2: false` always walks (tests of the fallback).
    pub(crate) fn open_file_with(
        &self,
        rel: &Path,
        flags: i32,
        mode: u32,
        create_dirs: bool,
        try_openat2: bool,
    ) -> Result<File, StorageError> {
        let comps = components(rel).map_err(|e| StorageError::io(&self.path.join(rel), e))?;
        let Some((last, parents)) = comps.split_last() else {
            return Err(StorageError::io(
                &self.path,
                io::Error::new(io::ErrorKind::InvalidInput, "empty file path"),
            ));
        };
        let mode = if flags & libc::O_CREAT != 0 { mode } else { 0 };
        let flags = flags | libc::O_NOFOLLOW;
        if try_openat2 && !NO_OPENAT2.load(Ordering::Relaxed) {
            let c = cstring(rel.as_os_str()).map_err(|e| StorageError::io(rel, e))?;
            match openat2_beneath(self.fd.as_raw_fd(), &c, flags, mode) {
                Ok(fd) => return Ok(File::from(fd)),
                Err(e) => match e.raw_os_error() {
                    Some(libc::ENOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
                    // A link (ELOOP, EXDEV), a missing directory to create, or a refusal
                    // (seccomp's EPERM, O_DIRECT's EINVAL): the walk says which, precisely.
                    Some(
                        libc::ELOOP
                        | libc::EXDEV
                        | libc::ENOENT
                        | libc::ENOTDIR
                        | libc::EPERM
                        | libc::EINVAL
                        | libc::EAGAIN,
                    ) => {}
                    _ => return Err(StorageError::io(&self.path.join(rel), e)),
                },
            }
        }
        let (parent, shown) = self.walk(parents, create_dirs)?;
        let shown = shown.join(last);
        let name = cstring(last).map_err(|e| StorageError::io(&shown, e))?;
        let base = parent
            .as_ref()
            .map_or(self.fd.as_raw_fd(), AsRawFd::as_raw_fd);
        openat(base, &name, flags, mode)
            .map(File::from)
            .map_err(|e| refusal(base, &name, &shown, e))
    }

    /// Opens (and when `create`, creates) the directory `rel` below this one; no component
    /// may be a symbolic link. An empty `rel` is this directory again.
    pub fn open_dir(&self, rel: &Path, create: bool) -> Result<Dir, StorageError> {
        let comps = components(rel).map_err(|e| StorageError::io(&self.path.join(rel), e))?;
        let (fd, path) = self.walk(&comps, create)?;
        let fd = match fd {
            Some(fd) => fd,
            None => self
                .fd
                .try_clone()
                .map_err(|e| StorageError::io(&self.path, e))?,
        };
        Ok(Dir { fd, path })
    }

    /// `fsync` of the directory (its entries become durable).
    pub fn sync(&self) -> io::Result<()> {
        // SAFETY: fsync only reads its integer argument, a descriptor owned by `self`.
        if unsafe { libc::fsync(self.fd.as_raw_fd()) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `renameat` of two names in this directory (a link at `to` is replaced, not
    /// followed).
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        let (f, t) = (cstring(from)?, cstring(to)?);
        let fd = self.fd.as_raw_fd();
        // SAFETY: both names are NUL-terminated strings that outlive the call; `fd` is a
        // directory descriptor owned by `self`.
        if unsafe { libc::renameat(fd, f.as_ptr(), fd, t.as_ptr()) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `unlinkat` of a file in this directory (a link is removed, not followed).
    pub fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        let n = cstring(name)?;
        // SAFETY: `n` is a NUL-terminated string that outlives the call; the descriptor is
        // owned by `self`.
        if unsafe { libc::unlinkat(self.fd.as_raw_fd(), n.as_ptr(), 0) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Writes `bytes` as the file `name` in this directory, atomically and without
    /// following links: a new temp file (`O_CREAT | O_EXCL | O_NOFOLLOW`), fsync,
    /// `renameat` over `name` (a link there is replaced, not followed), fsync of the
    /// directory.
    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = format!("{name}.tmp.{}", std::process::id());
        // A temp file left by a crash (or anything planted there) is removed, not followed;
        // O_EXCL refuses whatever appears there again.
        let _ = self.remove_file(tmp.as_ref());
        let result = (|| {
            let mut f = self
                .open_file(
                    Path::new(&tmp),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                    0o644,
                    false,
                )
                .map_err(StorageError::into_io)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            drop(f);
            self.rename(tmp.as_ref(), name.as_ref())?;
            self.sync()
        })();
        if result.is_err() {
            let _ = self.remove_file(tmp.as_ref());
        }
        result
    }

    /// Reads the regular file `name` in this directory without following a link (refused
    /// as [`StorageError::Symlink`]) and without blocking (`O_NONBLOCK`: a FIFO in its
    /// place is refused, not waited on); a file longer than `max` bytes is an error.
    pub fn read_regular(&self, name: &str, max: u64) -> io::Result<Vec<u8>> {
        let path = self.path.join(name);
        let file = self
            .open_file(Path::new(name), libc::O_RDONLY | libc::O_NONBLOCK, 0, false)
            .map_err(StorageError::into_io)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a regular file", path.display()),
            ));
        }
        let mut bytes = Vec::new();
        file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: larger than {max} bytes", path.display()),
            ));
        }
        Ok(bytes)
    }

    /// Opens each of `comps` as a directory, from this one, without following links
    /// (creating missing ones when `create`). Returns the last one (None when `comps` is
    /// empty) and its path for messages.
    fn walk(
        &self,
        comps: &[&OsStr],
        create: bool,
    ) -> Result<(Option<OwnedFd>, PathBuf), StorageError> {
        let mut cur: Option<OwnedFd> = None;
        let mut shown = self.path.clone();
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        for c in comps {
            shown.push(c);
            let name = cstring(c).map_err(|e| StorageError::io(&shown, e))?;
            let base = cur.as_ref().map_or(self.fd.as_raw_fd(), AsRawFd::as_raw_fd);
            let fd = match openat(base, &name, flags, 0) {
                Ok(fd) => fd,
                Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {
                    // SAFETY: `name` is a NUL-terminated string that outlives the call;
                    // `base` is a directory descriptor we hold open.
                    if unsafe { libc::mkdirat(base, name.as_ptr(), 0o755) } != 0 {
                        let e = io::Error::last_os_error();
                        // Someone made it meanwhile: the open below decides what it is.
                        if e.raw_os_error() != Some(libc::EEXIST) {
                            return Err(refusal(base, &name, &shown, e));
                        }
                    }
                    openat(base, &name, flags, 0).map_err(|e| refusal(base, &name, &shown, e))?
                }
                Err(e) => return Err(refusal(base, &name, &shown, e)),
            };
            cur = Some(fd);
        }
        Ok((cur, shown))
    }
}

/// The error for a failed open of `name` in `base`: [`StorageError::Symlink`] when it is a
/// symbolic link, else the I/O error.
fn refusal(base: RawFd, name: &CStr, shown: &Path, e: io::Error) -> StorageError {
    let maybe_link = matches!(
        e.raw_os_error(),
        Some(libc::ELOOP | libc::ENOTDIR | libc::EEXIST | libc::EXDEV)
    );
    if maybe_link && is_symlink_at(base, name) {
        StorageError::Symlink {
            path: shown.to_path_buf(),
        }
    } else {
        StorageError::io(shown, e)
    }
}

fn is_symlink_at(base: RawFd, name: &CStr) -> bool {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is NUL-terminated and outlives the call; fstatat writes one `stat`
    // into `st`, which is read only when it succeeded.
    let r = unsafe {
        libc::fstatat(
            base,
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    // SAFETY: fstatat returned 0, so it filled `st`.
    r == 0 && unsafe { st.assume_init() }.st_mode & libc::S_IFMT == libc::S_IFLNK
}

/// The components of a relative path below a directory: plain names only.
fn components(rel: &Path) -> io::Result<Vec<&OsStr>> {
    rel.components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a plain relative path",
            )),
        })
        .collect()
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))
}

/// `openat` (with `O_CLOEXEC`), retried on EINTR.
fn openat(dir: RawFd, name: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: `name` is NUL-terminated and outlives the call; a returned descriptor is
        // new and owned by nobody else.
        let fd = unsafe {
            libc::openat(
                dir,
                name.as_ptr(),
                flags | libc::O_CLOEXEC,
                libc::c_uint::from(mode),
            )
        };
        if fd >= 0 {
            // SAFETY: `fd` was just opened and is not owned elsewhere.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// `openat2(dir, path, flags, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, retried on EINTR.
fn openat2_beneath(dir: RawFd, path: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: `open_how` is plain integers; all zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u32 as u64;
    how.mode = u64::from(mode);
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS;
    loop {
        // SAFETY: `path` is NUL-terminated and `how` is a valid `open_how` of the size
        // passed; both outlive the call. A returned descriptor is new and unowned.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir,
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if r >= 0 {
            let Ok(fd) = RawFd::try_from(r) else {
                return Err(io::Error::other("openat2 returned a bad descriptor"));
            };
            // SAFETY: `fd` was just opened and is not owned elsewhere.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn both(f: impl Fn(bool)) {
        f(true);
        f(false);
    }

    const RW_CREATE: i32 = libc::O_RDWR | libc::O_CREAT;

    #[test]
    fn creates_directories_and_files_below() {
        both(|openat2| {
            let t = tempfile::tempdir().unwrap();
            let root = Dir::open(t.path()).unwrap();
            let f = root
                .open_file_with(Path::new("a/b/c.bin"), RW_CREATE, 0o644, true, openat2)
                .unwrap();
            drop(f);
            assert!(t.path().join("a/b/c.bin").is_file());
            // Existing: opened again without creating.
            root.open_file_with(Path::new("a/b/c.bin"), libc::O_RDONLY, 0, false, openat2)
                .unwrap();
            let e = root
                .open_file_with(Path::new("x/y"), libc::O_RDONLY, 0, false, openat2)
                .unwrap_err();
            assert!(matches!(e, StorageError::Io { .. }), "{e}");
        });
    }

    #[test]
    fn links_are_refused_naming_them() {
        both(|openat2| {
            let t = tempfile::tempdir().unwrap();
            let outside = tempfile::tempdir().unwrap();
            let dest = t.path().join("dest");
            std::fs::create_dir_all(dest.join("real")).unwrap();
            std::fs::write(outside.path().join("victim"), b"keep").unwrap();
            symlink(outside.path(), dest.join("dir")).unwrap();
            symlink(outside.path().join("victim"), dest.join("file")).unwrap();
            symlink(outside.path().join("new"), dest.join("real/dangling")).unwrap();
            let root = Dir::open(&dest).unwrap();
            for (rel, link) in [
                ("dir/x.bin", "dir"),
                ("dir/deeper/x.bin", "dir"),
                ("file", "file"),
                ("real/dangling", "real/dangling"),
            ] {
                for create in [true, false] {
                    let e = root
                        .open_file_with(Path::new(rel), RW_CREATE, 0o644, create, openat2)
                        .unwrap_err();
                    let want = dest.join(link);
                    assert!(
                        matches!(&e, StorageError::Symlink { path } if *path == want),
                        "{rel} (openat2 {openat2}, create {create}): {e}"
                    );
                    assert_eq!(
                        e.to_string(),
                        format!(
                            "{}: is a symbolic link; refusing to write through it",
                            want.display()
                        )
                    );
                }
            }
            let e = root.open_dir(Path::new("dir"), true).unwrap_err();
            assert!(matches!(e, StorageError::Symlink { .. }), "{e}");
            assert_eq!(
                std::fs::read(outside.path().join("victim")).unwrap(),
                b"keep"
            );
            let mut left: Vec<_> = std::fs::read_dir(outside.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            left.sort();
            assert_eq!(left, vec![std::ffi::OsString::from("victim")]);
        });
    }

    #[test]
    fn the_root_itself_may_be_a_link() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("real")).unwrap();
        symlink(t.path().join("real"), t.path().join("dest")).unwrap();
        let root = Dir::open(&t.path().join("dest")).unwrap();
        root.open_file(Path::new("a/f"), RW_CREATE, 0o644, true)
            .unwrap();
        assert!(t.path().join("real/a/f").is_file());
    }

    #[test]
    fn only_plain_relative_paths() {
        let t = tempfile::tempdir().unwrap();
        let root = Dir::open(t.path()).unwrap();
        for bad in ["../x", "/etc/passwd", "a/../../x", ""] {
            assert!(
                root.open_file(Path::new(bad), RW_CREATE, 0o644, true)
                    .is_err(),
                "{bad}"
            );
        }
    }
}
