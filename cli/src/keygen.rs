//! `ringswarm keygen`: make the ed25519 key pair that signs the release feed.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use ringswarm_engine::feed::{encode_public_key, encode_secret_key, SigningKey, VerifyingKey};
use ringswarm_engine::fleet::generate_key;

use crate::output::Summary;
use crate::Ctx;

/// Make an ed25519 key pair for signing releases.
///
/// Writes PREFIX.key (the secret key, mode 0600: keep it on the build machine) and
/// PREFIX.pub (the public key, one base64 line: give it, or its file, to every agent's
/// --pubkey).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path prefix of the two files [default: ./release].
    #[arg(value_name = "PREFIX", default_value = "release")]
    pub prefix: PathBuf,

    /// Overwrite existing key files.
    #[arg(short, long)]
    pub force: bool,
}

pub fn run(ctx: Ctx, args: Args) -> Result<()> {
    let secret_path = args.prefix.with_extension("key");
    let public_path = args.prefix.with_extension("pub");
    for p in [&secret_path, &public_path] {
        if p.exists() && !args.force {
            bail!("`{}` exists; use --force to replace it", p.display());
        }
    }
    let key = generate_key();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&secret_path)
        .with_context(|| format!("writing `{}`", secret_path.display()))?;
    // `mode` applies only to a new file: an older one (--force) may be readable by others.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting `{}` to its owner", secret_path.display()))?;
    f.write_all(encode_secret_key(&key).as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing `{}`", secret_path.display()))?;
    let public = encode_public_key(&key.verifying_key());
    std::fs::write(&public_path, &public)
        .with_context(|| format!("writing `{}`", public_path.display()))?;
    ctx.out.line(format!(
        "secret key: {} (keep it private)\npublic key: {} ({})",
        secret_path.display(),
        public_path.display(),
        public.trim()
    ));
    let mut s = Summary::new("keygen");
    s.ok = true;
    s.dest = Some(public_path.display().to_string());
    ctx.out.summary(&s);
    Ok(())
}

/// Reads a secret key file.
pub fn load_secret(path: &std::path::Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading key `{}`", path.display()))?;
    ringswarm_engine::feed::decode_secret_key(&text)
        .with_context(|| format!("key `{}`", path.display()))
}

/// Reads a public key: a file, or the base64 key itself.
pub fn load_public(arg: &str) -> Result<VerifyingKey> {
    let path = std::path::Path::new(arg);
    let text = if path.exists() {
        std::fs::read_to_string(path).with_context(|| format!("reading key `{arg}`"))?
    } else {
        arg.to_owned()
    };
    ringswarm_engine::feed::decode_public_key(&text).with_context(|| {
        if path.exists() {
            format!("--pubkey `{arg}`")
        } else {
            format!("--pubkey `{arg}` (neither a file nor a base64 key)")
        }
    })
}
