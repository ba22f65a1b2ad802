//! Checks on a seed's customer-supplied fields. JSON escaping already makes injection
//! impossible; these checks turn values cloud-init would reject or misapply at boot (where
//! nobody sees the error) into an error at VM creation.

use super::network::{Addressing, SeedNetwork};
use super::{invalid, SeedConfig};
use crate::error::Result;

pub(super) fn config(c: &SeedConfig) -> Result<()> {
    if c.instance_id.is_empty()
        || c.instance_id.len() > 128
        || !c.instance_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(invalid(format!(
            "instance_id {:?} must be 1-128 printable characters without spaces",
            c.instance_id
        )));
    }
    hostname(&c.hostname)?;
    for k in &c.ssh_authorized_keys {
        ssh_key(k)?;
    }
    let mut names = std::collections::HashSet::new();
    for u in &c.users {
        user_name(&u.name)?;
        if !names.insert(&u.name) {
            return Err(invalid(format!("user {:?} is listed twice", u.name)));
        }
        for k in &u.ssh_authorized_keys {
            ssh_key(k)?;
        }
        for g in &u.groups {
            user_name(g).map_err(|_| invalid(format!("{g:?} is not a group name")))?;
        }
    }
    for p in &c.packages {
        if !crate::build::valid_package(p) {
            return Err(invalid(format!("{p:?} is not a Debian package name")));
        }
    }
    if let SeedNetwork::Nics(nics) = &c.network {
        let mut seen = std::collections::HashSet::new();
        for nic in nics {
            if !seen.insert(nic.mac) || !seen_name_ok(&nic.name) {
                return Err(invalid(format!(
                    "NIC {} ({:?}): duplicate MAC or bad interface name",
                    nic.mac, nic.name
                )));
            }
            if let Addressing::Static {
                addresses, search, ..
            } = &nic.addressing
            {
                if addresses.is_empty() {
                    return Err(invalid(format!(
                        "NIC {}: static without addresses",
                        nic.mac
                    )));
                }
                for s in search {
                    hostname(s)?;
                }
            }
        }
    }
    Ok(())
}

fn seen_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// RFC 1123 host name (labels of letters, digits and '-', at most 253 characters).
pub(crate) fn hostname(h: &str) -> Result<()> {
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("{h:?} is not a valid host name")))
    }
}

/// One OpenSSH public key line: a known type, base64 data, optional comment.
pub(crate) fn ssh_key(k: &str) -> Result<()> {
    let mut parts = k.split_whitespace();
    let kind = parts.next().unwrap_or("");
    let data = parts.next().unwrap_or("");
    let known = kind.starts_with("ssh-")
        || kind.starts_with("ecdsa-sha2-")
        || kind.starts_with("sk-ssh-")
        || kind.starts_with("sk-ecdsa-");
    let b64 = !data.is_empty()
        && data
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
    if known && b64 && !k.contains('\n') && !k.contains('\r') {
        Ok(())
    } else {
        let shown: String = k.chars().take(40).collect();
        Err(invalid(format!(
            "{shown:?}... is not an OpenSSH public key"
        )))
    }
}

/// Login names as Debian's adduser accepts them; root is the image's, not the customer's.
fn user_name(n: &str) -> Result<()> {
    let ok = !n.is_empty()
        && n.len() <= 32
        && n != "root"
        && n.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("{n:?} is not an allowed user name")))
    }
}
