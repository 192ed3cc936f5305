//! The daemons' TOML config files (`--config FILE`): every key is optional, and a flag
//! given on the command line wins over the file.

use std::path::Path;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;

/// Reads a config file; no file gives the defaults (every key absent). Unknown keys are
/// an error, so a misspelt key is not silently ignored.
pub fn load<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config `{}`", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let msg = e.message().to_owned();
        let at = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        match at {
            Some(line) => anyhow::anyhow!("config `{}` line {line}: {msg}", path.display()),
            None => anyhow::anyhow!("config `{}`: {msg}", path.display()),
        }
    })
}

/// A value from a string in the config file, parsed like the flag.
pub fn parsed<T>(
    key: &str,
    value: Option<&str>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>> {
    value
        .map(|v| parse(v).map_err(|e| anyhow::anyhow!("config key `{key}`: {e}")))
        .transpose()
}
