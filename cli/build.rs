//! Stamps the binary with the git commit it is built from (`ringswarm --version`,
//! `ringswarm_build_info`): `git rev-parse --short=12 HEAD` when the workspace is a git
//! checkout of its own, else `RINGSWARM_GIT_HASH` from the environment (for packagers
//! building from a tarball), else `unknown` (e.g. `cargo install` of a published crate).
//!
//! No `-dirty` suffix: it could not be kept true, as cargo reruns this script only when
//! HEAD or the branch's ref moves, not on every edit of a tracked file, so a binary built
//! after an edit would carry whatever the last run saw.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=RINGSWARM_GIT_HASH");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let workspace = manifest.parent().unwrap_or(&manifest).to_path_buf();
    let hash = own_checkout(&workspace)
        .and_then(|()| git(&workspace, &["rev-parse", "--short=12", "HEAD"]))
        .filter(|h| h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .or_else(|| std::env::var("RINGSWARM_GIT_HASH").ok())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=RINGSWARM_GIT_HASH={hash}");
}

/// Ok when `workspace` is the top of a git work tree (not a copy of the sources inside some
/// other repository); asks cargo to rerun when HEAD or the branch it names moves.
fn own_checkout(workspace: &Path) -> Option<()> {
    let top = git(workspace, &["rev-parse", "--show-toplevel"])?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same(Path::new(&top), workspace) {
        return None;
    }
    let absolute = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            workspace.join(p)
        }
    };
    // A worktree's HEAD is in its own git dir; branches are in the common one.
    let git_dir = absolute(git(workspace, &["rev-parse", "--git-dir"])?);
    let common = git(workspace, &["rev-parse", "--git-common-dir"])
        .map_or_else(|| git_dir.clone(), absolute);
    println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
    println!(
        "cargo:rerun-if-changed={}",
        common.join("packed-refs").display()
    );
    if let Some(branch) = git(workspace, &["symbolic-ref", "-q", "HEAD"]) {
        println!("cargo:rerun-if-changed={}", common.join(branch).display());
    }
    Some(())
}
