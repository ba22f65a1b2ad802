//! Identifiers and names as distinct types.
//!
//! Separate newtypes stop a `VmId` from being passed where a `TenantId` is
//! expected — in a multi-tenant store that mix-up is a data leak, not a typo.
//! Names are validated once at construction (and on deserialization), so every
//! layer after the API boundary can trust them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::StoreError;

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident, $field:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh random (v4) id; random rather than sequential so ids
            /// reveal nothing about other tenants' activity.
            pub fn new_random() -> Self {
                $name(Uuid::new_v4())
            }

            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                $name(u)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = StoreError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s)
                    .map($name)
                    .map_err(|e| StoreError::invalid($field, e.to_string()))
            }
        }
    };
}

uuid_id!(
    /// Identifies a tenant; stable across renames.
    TenantId,
    "tenant_id"
);
uuid_id!(
    /// Identifies a VM globally (not just within its tenant).
    VmId,
    "vm_id"
);
uuid_id!(
    /// Identifies a tenant's virtual network globally, so NIC rows and switch
    /// tables can reference it without carrying the tenant along.
    NetworkId,
    "network_id"
);
uuid_id!(
    /// Identifies a tenant's storage volume globally; the pool knows it by this id, so two
    /// tenants' volumes of one name never meet in the pool.
    VolumeId,
    "volume_id"
);
uuid_id!(
    /// Identifies an API token, so it can be revoked and named in the audit
    /// log without ever exposing its secret.
    TokenId,
    "token_id"
);

/// Checks the DNS-label rule shared by tenant and VM names: these end up in
/// hostnames, tap device names and file paths, so they must be safe in all.
fn validate_label(field: &'static str, s: &str) -> Result<(), StoreError> {
    if s.is_empty() || s.len() > 63 {
        return Err(StoreError::invalid(
            field,
            "must be 1 to 63 characters long",
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(StoreError::invalid(
            field,
            format!("character {c:?} not allowed; use a-z, 0-9 and '-'"),
        ));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(StoreError::invalid(field, "must not start or end with '-'"));
    }
    Ok(())
}

macro_rules! label_name {
    ($(#[$meta:meta])* $name:ident, $field:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Result<Self, StoreError> {
                let s = s.into();
                validate_label($field, &s)?;
                Ok($name(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = StoreError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                $name::new(s)
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl FromStr for $name {
            type Err = StoreError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

label_name!(
    /// Tenant name, unique across the host: `[a-z0-9-]{1,63}`, no leading or
    /// trailing `-`.
    TenantName,
    "tenant name"
);
label_name!(
    /// VM name, unique within its tenant; same rules as [`TenantName`].
    VmName,
    "vm name"
);

label_name!(
    /// Volume name, unique within its tenant; same rules as [`TenantName`].
    VolumeName,
    "volume name"
);

label_name!(
    /// Network name, unique within its tenant; same rules as [`TenantName`]
    /// because it ends up in bridge/port names and CLI arguments.
    NetworkName,
    "network name"
);

/// Key of a host-wide setting, e.g. `host.cpu_overcommit_ratio`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SettingKey(String);

impl SettingKey {
    /// Keys are `[a-z0-9._-]{1,128}` so they are safe to use as config-file
    /// keys or URL path segments without escaping.
    pub fn new(s: impl Into<String>) -> Result<Self, StoreError> {
        let s = s.into();
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
        if s.is_empty() || s.len() > 128 || !s.chars().all(ok_char) {
            return Err(StoreError::invalid(
                "setting key",
                "must be 1 to 128 characters of a-z, 0-9, '.', '_' and '-'",
            ));
        }
        Ok(SettingKey(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SettingKey {
    type Error = StoreError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        SettingKey::new(s)
    }
}

impl FromStr for SettingKey {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SettingKey::new(s)
    }
}

impl From<SettingKey> for String {
    fn from(k: SettingKey) -> String {
        k.0
    }
}

impl fmt::Display for SettingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_rules() {
        for ok in ["a", "web-1", "0", &"x".repeat(63)] {
            assert!(TenantName::new(ok).is_ok(), "{ok}");
            assert!(VmName::new(ok).is_ok(), "{ok}");
            assert!(NetworkName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Web", "a_b", "a.b", "é", &"x".repeat(64)] {
            assert!(
                matches!(TenantName::new(bad), Err(StoreError::Invalid { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn names_validate_on_deserialize() {
        assert!(serde_json::from_str::<VmName>("\"ok-name\"").is_ok());
        assert!(serde_json::from_str::<VmName>("\"Bad Name\"").is_err());
    }

    #[test]
    fn ids_round_trip() {
        let id = VmId::new_random();
        assert_eq!(id.to_string().parse::<VmId>().unwrap(), id);
        assert!("nope".parse::<TenantId>().is_err());
    }

    #[test]
    fn setting_keys() {
        assert!(SettingKey::new("host.cpu_overcommit_ratio").is_ok());
        assert!(SettingKey::new("Host Ratio").is_err());
        assert!(SettingKey::new("").is_err());
    }
}
