//! `hostel remote add|list|remove|switch`: named daemons, each with its URL, token and how its
//! TLS certificate is trusted (a pinned SHA-256 fingerprint, or a CA file), kept in the config
//! file; one of them is the default.
//!
//! `remote add` without `--fingerprint`/`--ca` trusts on first use: it connects, shows the
//! fingerprint the daemon presented (to compare with the one the daemon printed at start-up)
//! and pins it. Every later command checks that exact certificate and refuses another one,
//! naming both fingerprints (`ClientError::CertificateChanged`).

use super::config::{config_path, load_file, ConfigFile, Endpoint, DEFAULT_URL};
use super::output::{self, Format, Table};
use super::{GlobalArgs, Invalid};
use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use hostel_api::tls::{Fingerprint, Trust};
use hostel_api::Client;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// One `[remotes.NAME]` table of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Remote {
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// `AB:CD:…`, as the daemon prints it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

impl Remote {
    fn trust(&self, name: &str) -> Result<Option<Trust>> {
        match (&self.fingerprint, &self.ca) {
            (Some(fp), _) => Ok(Some(Trust::Pinned(
                Fingerprint::parse(fp)
                    .with_context(|| format!("remote {name} in the config file"))?,
            ))),
            (None, Some(ca)) => Ok(Some(Trust::Ca(ca.clone()))),
            (None, None) => Ok(None),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum RemoteCommand {
    /// Adds (or replaces) a daemon: `hostel remote add NAME URL --token T [--fingerprint FP |
    /// --ca FILE]`. Without either, shows the certificate's fingerprint and pins it.
    Add {
        name: String,
        /// `https://HOST:PORT` (`http://` only for a development loopback daemon).
        url: String,
    },
    /// The remotes, the default one marked.
    List,
    /// Forgets a remote (and its token).
    Remove { name: String },
    /// Makes a remote the default of commands without --url/--remote.
    Switch { name: String },
}

/// The trust `--fingerprint`/`--ca` (or `HOSTEL_FINGERPRINT`/`HOSTEL_CA`) ask for.
pub fn flag_trust(global: &GlobalArgs) -> Result<Option<Trust>> {
    let fp = global.fingerprint.as_deref().filter(|s| !s.is_empty());
    let ca = global.ca.as_ref().filter(|p| !p.as_os_str().is_empty());
    match (fp, ca) {
        (Some(_), Some(_)) => Err(Invalid {
            message: "give either --fingerprint or --ca, not both".into(),
            field: Some("fingerprint"),
        }
        .into()),
        (Some(fp), None) => Ok(Some(Trust::Pinned(Fingerprint::parse(fp).map_err(
            |e| Invalid {
                message: e.to_string(),
                field: Some("fingerprint"),
            },
        )?))),
        (None, Some(ca)) => Ok(Some(Trust::Ca(std::path::absolute(ca)?))),
        (None, None) => Ok(None),
    }
}

/// The endpoint: a named remote (`--remote`, whose URL wins over one given), else the URL given (trusted as the remote with
/// that URL, if any), else the default remote, else the file's `url`, else [`DEFAULT_URL`].
/// A token given wins over the one stored.
pub fn choose(
    url: Option<String>,
    token: Option<String>,
    remote: Option<String>,
    file: ConfigFile,
) -> Result<Endpoint> {
    let trim = |t: Option<String>| t.map(|t| t.trim().to_string());
    let named = |name: &str| -> Result<&Remote> {
        file.remotes.get(name).ok_or_else(|| {
            anyhow!("no remote named {name:?} in the config file (`hostel remote list` shows them)")
        })
    };
    if let Some(name) = remote.as_deref().or(if url.is_none() {
        file.remote.as_deref()
    } else {
        None
    }) {
        let r = named(name)?;
        return Ok(Endpoint {
            url: r.url.clone(),
            token: trim(token.or_else(|| r.token.clone())),
            trust: r.trust(name)?,
        });
    }
    if let Some(url) = url {
        let same = |r: &Remote| r.url.trim_end_matches('/') == url.trim_end_matches('/');
        if let Some((name, r)) = file.remotes.iter().find(|(_, r)| same(r)) {
            return Ok(Endpoint {
                token: trim(token.or_else(|| r.token.clone()).or(file.token)),
                trust: r.trust(name)?,
                url,
            });
        }
        return Ok(Endpoint {
            url,
            token: trim(token.or(file.token)),
            trust: None,
        });
    }
    Ok(Endpoint {
        url: file.url.unwrap_or_else(|| DEFAULT_URL.to_string()),
        token: trim(token.or(file.token)),
        trust: None,
    })
}

pub fn main(global: &GlobalArgs, cmd: RemoteCommand) -> Result<()> {
    let path = config_path().context("no config file location: set HOME or HOSTEL_CONFIG")?;
    let mut file = load_file()?;
    match cmd {
        RemoteCommand::Add { name, url } => {
            check_name(&name)?;
            let remote = add(global, &name, &url)?;
            if let Some(old) = file.remotes.insert(name.clone(), remote.clone()) {
                if old.fingerprint != remote.fingerprint || old.ca != remote.ca {
                    eprintln!(
                        "hostel: remote {name} replaced: it was {} trusting {}",
                        old.url,
                        old.fingerprint
                            .or(old.ca.map(|c| c.display().to_string()))
                            .unwrap_or_else(|| "no certificate".into())
                    );
                }
            }
            if file.remote.is_none() {
                file.remote = Some(name.clone());
                println!("{name} is the default remote");
            }
            save(&path, &file)?;
        }
        RemoteCommand::List => list(global.output, &file)?,
        RemoteCommand::Remove { name } => {
            if file.remotes.remove(&name).is_none() {
                bail!("no remote named {name:?}");
            }
            if file.remote.as_deref() == Some(name.as_str()) {
                file.remote = None;
            }
            save(&path, &file)?;
        }
        RemoteCommand::Switch { name } => {
            if !file.remotes.contains_key(&name) {
                bail!("no remote named {name:?} (`hostel remote list` shows them)");
            }
            file.remote = Some(name);
            save(&path, &file)?;
        }
    }
    Ok(())
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(Invalid {
            message: format!("remote name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'"),
            field: Some("name"),
        }
        .into());
    }
    Ok(())
}

/// Connects once (proving the URL, and learning the certificate on first use) and returns
/// what to store.
fn add(global: &GlobalArgs, name: &str, url: &str) -> Result<Remote> {
    let url = url.trim_end_matches('/').to_string();
    let token = global.token.clone().filter(|t| !t.is_empty());
    let given = flag_trust(global)?;
    let mut remote = Remote {
        url: url.clone(),
        token: token.clone(),
        fingerprint: None,
        ca: None,
    };
    if url.starts_with("http://") {
        if given.is_some() {
            bail!("{url} is plain HTTP: there is no certificate to pin");
        }
        Client::new(url.clone(), token).get_text("/openapi.json")?;
        eprintln!("hostel: warning: {url} is plain HTTP (a development loopback daemon)");
        return Ok(remote);
    }
    if !url.starts_with("https://") {
        return Err(Invalid {
            message: format!("URL {url:?}: expected https://HOST:PORT"),
            field: Some("url"),
        }
        .into());
    }
    let trust = given.unwrap_or(Trust::FirstUse);
    let client = Client::with_trust(url.clone(), token, trust.clone())?;
    client.get_text("/openapi.json")?;
    match trust {
        Trust::Pinned(fp) => remote.fingerprint = Some(fp.to_string()),
        Trust::Ca(ca) => remote.ca = Some(ca),
        Trust::FirstUse => {
            let fp = client
                .presented_fingerprint()
                .context("the daemon presented no certificate")?;
            println!(
                "{url} presented the certificate with SHA-256 fingerprint\n  {fp}\n\
                 Compare it with the one the daemon printed at start-up (`certificate SHA-256 \
                 fingerprint: …`); it is now pinned for remote {name}, and another \
                 certificate will be refused."
            );
            remote.fingerprint = Some(fp.to_string());
        }
    }
    Ok(remote)
}

#[derive(Serialize)]
struct Listed<'a> {
    name: &'a str,
    url: &'a str,
    fingerprint: Option<&'a str>,
    ca: Option<&'a Path>,
    default: bool,
}

fn list(format: Format, file: &ConfigFile) -> Result<()> {
    let rows: Vec<Listed> = file
        .remotes
        .iter()
        .map(|(name, r)| Listed {
            name,
            url: &r.url,
            fingerprint: r.fingerprint.as_deref(),
            ca: r.ca.as_deref(),
            default: file.remote.as_deref() == Some(name.as_str()),
        })
        .collect();
    if format == Format::Json {
        return output::json(&rows);
    }
    let mut t = Table::new(&["name", "url", "trust", "default"]);
    for r in rows {
        let trust = match (r.fingerprint, r.ca) {
            (Some(fp), _) => format!("sha256 {fp}"),
            (None, Some(ca)) => format!("ca {}", ca.display()),
            (None, None) => "-".into(),
        };
        let default = if r.default { "*" } else { "" };
        t.row(vec![r.name.into(), r.url.into(), trust, default.into()]);
    }
    t.print();
    Ok(())
}

/// Writes the config file (it holds tokens: 0600) through a temporary file, fsync and
/// rename, so an interrupted write leaves the old file, never half of the new one.
pub fn save(path: &Path, file: &ConfigFile) -> Result<()> {
    let text = toml::to_string_pretty(file).context("encoding the config file")?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow!("writing the config file {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn remote(url: &str, fp: Option<&str>) -> Remote {
        Remote {
            url: url.into(),
            token: Some("rtoken".into()),
            fingerprint: fp.map(str::to_string),
            ca: None,
        }
    }

    #[test]
    fn the_config_file_is_replaced_whole_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hostel/config.toml");
        let mut file = ConfigFile::default();
        file.remotes
            .insert("a".into(), remote("https://a:1", Some(&"AB:".repeat(31))));
        save(&path, &file).unwrap();
        let first = std::fs::metadata(&path).unwrap();
        assert_eq!(first.permissions().mode() & 0o777, 0o600);
        file.remote = Some("a".into());
        save(&path, &file).unwrap();
        let second = std::fs::metadata(&path).unwrap();
        // A rename puts a new inode in place; rewriting in place would keep the old one.
        assert_ne!(first.ino(), second.ino(), "replaced by rename");
        let back: ConfigFile = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back.remote.as_deref(), Some("a"));
        assert_eq!(back.remotes["a"], file.remotes["a"]);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("config.toml")]);
    }

    #[test]
    fn the_default_remote_and_a_matching_url_bring_their_pin() {
        let fp = Fingerprint::of(b"c").to_string();
        let mut file = ConfigFile::default();
        file.remotes
            .insert("prod".into(), remote("https://prod:7878", Some(&fp)));
        file.remote = Some("prod".into());
        let e = choose(None, None, None, file).unwrap();
        assert_eq!(e.url, "https://prod:7878");
        assert_eq!(e.token.as_deref(), Some("rtoken"));
        assert_eq!(
            e.trust,
            Some(Trust::Pinned(Fingerprint::parse(&fp).unwrap()))
        );

        let mut file = ConfigFile::default();
        file.remotes
            .insert("prod".into(), remote("https://prod:7878", Some(&fp)));
        let e = choose(
            Some("https://prod:7878/".into()),
            Some("t".into()),
            None,
            file,
        )
        .unwrap();
        assert_eq!(e.token.as_deref(), Some("t"), "a token given wins");
        assert!(matches!(e.trust, Some(Trust::Pinned(_))));

        let e = choose(None, None, Some("nope".into()), ConfigFile::default()).unwrap_err();
        assert!(e.to_string().contains("no remote named \"nope\""), "{e}");
    }

    #[test]
    fn remote_names_are_checked() {
        assert!(check_name("prod-1.eu").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
    }
}
