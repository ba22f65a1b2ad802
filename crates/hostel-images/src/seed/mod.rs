//! cloud-init NoCloud seeds: a typed [`SeedConfig`] becomes `meta-data`, `user-data` and
//! `network-config` ([`SeedConfig::render`]) on a small vfat disk labelled `cidata`
//! ([`SeedConfig::write_disk`]) that the guest finds by label.
//!
//! Everything is emitted as JSON, which YAML parsers (cloud-init's included) read as YAML:
//! customer-supplied strings are escaped by serde_json instead of by hand-written YAML
//! quoting, so no parameter can inject configuration.

mod disk;
mod network;
mod validate;

pub use network::{Addressing, IpCidr, NicConfig, SeedNetwork};

use crate::error::{ImageError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// A command for cloud-init's `runcmd`: argv lists run without a shell (safe with
/// parameters in them), strings run with `sh -c`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RunCmd {
    Argv(Vec<String>),
    Shell(String),
}

/// An extra login user (besides the image's default user, who gets
/// [`SeedConfig::ssh_authorized_keys`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedUser {
    pub name: String,
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// Passwordless sudo.
    #[serde(default)]
    pub sudo: bool,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeedConfig {
    /// cloud-init runs its once-per-instance modules again when this changes.
    pub instance_id: String,
    pub hostname: String,
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    #[serde(default)]
    pub users: Vec<SeedUser>,
    /// Installed at first boot: needs a reachable mirror (templates bake theirs in instead).
    #[serde(default)]
    pub packages: Vec<String>,
    #[serde(default)]
    pub runcmd: Vec<RunCmd>,
    #[serde(default)]
    pub network: SeedNetwork,
    /// Further cloud-config (a rendered template's): merged in, lists appended.
    #[serde(default)]
    pub cloud_config: Map<String, Value>,
    /// The customer's own user-data (any cloud-init format), passed through as a second part
    /// of a MIME multipart archive after hostel's cloud-config.
    #[serde(default)]
    pub user_data: Option<String>,
}

/// The seed's files, as the guest will read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedFiles {
    pub meta_data: String,
    pub user_data: String,
    /// `None`: no file, cloud-init's default (DHCP on the first NIC).
    pub network_config: Option<String>,
}

/// Keys hostel's policy sets last, so no merged fragment can turn password SSH back on.
const ENFORCED: &[(&str, bool)] = &[("ssh_pwauth", false), ("disable_root", true)];

impl SeedConfig {
    /// Validates the configuration and renders the seed files.
    pub fn render(&self) -> Result<SeedFiles> {
        validate::config(self)?;
        let meta = json!({
            "instance-id": self.instance_id,
            "local-hostname": self.hostname,
        });
        let mut cc = Map::new();
        cc.insert("hostname".into(), json!(self.hostname));
        cc.insert("preserve_hostname".into(), json!(false));
        cc.insert("manage_etc_hosts".into(), json!(true));
        if !self.ssh_authorized_keys.is_empty() {
            cc.insert(
                "ssh_authorized_keys".into(),
                json!(self.ssh_authorized_keys),
            );
        }
        if !self.users.is_empty() {
            let mut users = vec![json!("default")];
            users.extend(self.users.iter().map(user_entry));
            cc.insert("users".into(), Value::Array(users));
        }
        if !self.packages.is_empty() {
            cc.insert("packages".into(), json!(self.packages));
        }
        if !self.runcmd.is_empty() {
            cc.insert("runcmd".into(), json!(self.runcmd));
        }
        merge(&mut cc, &self.cloud_config);
        for (k, v) in ENFORCED {
            cc.insert((*k).into(), json!(v));
        }
        let cloud_config = format!("#cloud-config\n{}\n", pretty(&Value::Object(cc)));
        let user_data = match &self.user_data {
            None => cloud_config,
            Some(raw) => multipart(&cloud_config, raw),
        };
        Ok(SeedFiles {
            meta_data: format!("{}\n", pretty(&meta)),
            user_data,
            network_config: network::render(&self.network).map(|v| format!("{}\n", pretty(&v))),
        })
    }

    /// Writes the seed as a vfat disk image labelled `cidata` at `path` (replaced
    /// atomically). Attach it to the VM as a second, read-only raw disk.
    pub fn write_disk(&self, path: &std::path::Path) -> Result<()> {
        let files = self.render()?;
        disk::write_vfat(&files, path)
    }
}

fn user_entry(u: &SeedUser) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(u.name));
    m.insert("shell".into(), json!("/bin/bash"));
    m.insert("lock_passwd".into(), json!(true));
    if !u.ssh_authorized_keys.is_empty() {
        m.insert("ssh_authorized_keys".into(), json!(u.ssh_authorized_keys));
    }
    if u.sudo {
        m.insert("sudo".into(), json!("ALL=(ALL) NOPASSWD:ALL"));
    }
    if !u.groups.is_empty() {
        m.insert("groups".into(), json!(u.groups.join(",")));
    }
    Value::Object(m)
}

/// Merges `extra` into `base`: objects recursively, lists appended, anything else replaced.
pub fn merge(base: &mut Map<String, Value>, extra: &Map<String, Value>) {
    for (k, v) in extra {
        match (base.get_mut(k), v) {
            (Some(Value::Array(a)), Value::Array(b)) => a.extend(b.iter().cloned()),
            (Some(Value::Object(a)), Value::Object(b)) => merge(a, b),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// cloud-init's MIME multipart user-data: hostel's cloud-config, then the customer's part
/// with the content type its first line announces.
fn multipart(cloud_config: &str, raw: &str) -> String {
    let first = raw.lines().next().unwrap_or("");
    let ctype = if first.starts_with("#cloud-config") {
        "text/cloud-config"
    } else if first.starts_with("#!") {
        "text/x-shellscript"
    } else if first.starts_with("#cloud-boothook") {
        "text/cloud-boothook"
    } else if first.starts_with("#include") {
        "text/x-include-url"
    } else {
        "text/plain"
    };
    // The boundary must not occur in either part; extend it until it does not.
    let mut boundary = String::from("==hostel-boundary==");
    while cloud_config.contains(&boundary) || raw.contains(&boundary) {
        boundary.push('x');
    }
    format!(
        "Content-Type: multipart/mixed; boundary=\"{b}\"\nMIME-Version: 1.0\n\n\
         --{b}\nContent-Type: text/cloud-config; charset=\"utf-8\"\nMIME-Version: 1.0\n\
         Content-Disposition: attachment; filename=\"hostel.cfg\"\n\n{cloud_config}\n\
         --{b}\nContent-Type: {ctype}; charset=\"utf-8\"\nMIME-Version: 1.0\n\
         Content-Disposition: attachment; filename=\"user-data\"\n\n{raw}\n--{b}--\n",
        b = boundary
    )
}

pub(crate) fn invalid(msg: impl Into<String>) -> ImageError {
    ImageError::InvalidSeed(msg.into())
}

#[cfg(test)]
mod tests;
