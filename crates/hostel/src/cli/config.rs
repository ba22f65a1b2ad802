//! Where the daemon is and which token to present.
//!
//! Precedence is flag, then environment (`HOSTEL_URL`, `HOSTEL_TOKEN`, merged into the flags
//! by clap), then the config file, then the default URL. The file is read only when a flag or
//! variable leaves something unset, so a broken file never stands in the way of an explicit
//! flag.

use anyhow::{Context, Result};
use hostel_api::tls::Trust;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The daemon's default listen address (`hostel daemon --listen`).
pub const DEFAULT_URL: &str = "https://127.0.0.1:7878";

/// `~/.config/hostel/config.toml`: every key optional. `url`/`token` are the endpoint used
/// when no remote is chosen; `remotes` are what `hostel remote add` stores, `remote` the
/// default one (see `remote.rs`).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub remotes: BTreeMap<String, super::remote::Remote>,
}

/// The endpoint and credentials a command talks to.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: String,
    pub token: Option<String>,
    /// How an `https://` URL's certificate is trusted; `None` for `http://`.
    pub trust: Option<Trust>,
}

/// The config file's path: `$HOSTEL_CONFIG` (so tests and scripts can point elsewhere), else
/// `$XDG_CONFIG_HOME/hostel/config.toml`, else `~/.config/hostel/config.toml`.
pub fn config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HOSTEL_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|p| !p.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("hostel").join("config.toml"))
}

/// Reads the config file; a missing file is an empty config, a malformed one is an error
/// (silently ignoring it would send requests to the wrong place or with no token).
pub fn load_file() -> Result<ConfigFile> {
    let Some(path) = config_path() else {
        return Ok(ConfigFile::default());
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        Err(e) => Err(e).with_context(|| format!("config file {}", path.display())),
    }
}

/// Fills what the flags and environment left unset from the config file.
pub fn resolve(global: &super::GlobalArgs) -> Result<Endpoint> {
    let url = global.url.clone().filter(|s| !s.is_empty());
    let token = global.token.clone().filter(|s| !s.is_empty());
    let flag_trust = super::remote::flag_trust(global)?;
    let remote = global.remote.clone().filter(|s| !s.is_empty());
    let file = if url.is_none() || token.is_none() || flag_trust.is_none() || remote.is_some() {
        load_file()?
    } else {
        ConfigFile::default()
    };
    let endpoint = super::remote::choose(url, token, remote, file)?;
    let trust = flag_trust.or(endpoint.trust.clone());
    if endpoint.url.starts_with("https://") && trust.is_none() {
        anyhow::bail!(
            "no certificate is pinned for {}: `hostel remote add NAME {} --token …` shows the \
             daemon's certificate fingerprint and pins it (compare it with the one the daemon \
             printed at start-up), or pass --fingerprint FP (HOSTEL_FINGERPRINT) or --ca FILE",
            endpoint.url,
            endpoint.url
        );
    }
    Ok(Endpoint { trust, ..endpoint })
}

#[cfg(test)]
fn merge(url: Option<String>, token: Option<String>, file: ConfigFile) -> Endpoint {
    super::remote::choose(url, token, None, file).expect("no remote named")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file = || ConfigFile {
            url: Some("http://file:1".into()),
            token: Some("file-token\n".into()),
            ..Default::default()
        };
        let e = merge(Some("http://flag:2".into()), None, file());
        assert_eq!(e.url, "http://flag:2");
        assert_eq!(e.token.as_deref(), Some("file-token"));
        let e = merge(None, Some("t".into()), file());
        assert_eq!(e.url, "http://file:1");
        assert_eq!(e.token.as_deref(), Some("t"));
        let e = merge(None, None, ConfigFile::default());
        assert_eq!(e.url, DEFAULT_URL);
        assert!(e.token.is_none());
    }

    #[test]
    fn config_file_parses_and_rejects_typos() {
        let c: ConfigFile = toml::from_str("url = \"http://x\"\ntoken = \"abc\"\n").unwrap();
        assert_eq!(c.url.as_deref(), Some("http://x"));
        assert!(toml::from_str::<ConfigFile>("tokne = \"abc\"").is_err());
    }
}
