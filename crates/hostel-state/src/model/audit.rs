//! Audit log records: who did what to which object, and how it ended.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::ids::{TenantId, TokenId};
use crate::time::Timestamp;

/// Longest error text kept per entry; longer text is truncated because a
/// failed action must still be recorded.
pub const MAX_AUDIT_TEXT_LEN: usize = 4096;

/// Who performed an action. Serialized as `"operator"`, `"system"` or
/// `"token:<uuid>"`, which is also how backends store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Actor {
    /// The host operator acting without a token (e.g. local CLI over a unix socket).
    Operator,
    /// The daemon itself, e.g. a restart triggered by a restart policy.
    System,
    Token(TokenId),
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Operator => f.write_str("operator"),
            Actor::System => f.write_str("system"),
            Actor::Token(id) => write!(f, "token:{id}"),
        }
    }
}

impl FromStr for Actor {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        match s {
            "operator" => Ok(Actor::Operator),
            "system" => Ok(Actor::System),
            _ => match s.strip_prefix("token:") {
                Some(id) => Ok(Actor::Token(id.parse()?)),
                None => Err(StoreError::invalid("actor", format!("unknown actor {s:?}"))),
            },
        }
    }
}

impl Serialize for Actor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Actor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Outcome of an audited action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditResult {
    Ok,
    Error(String),
}

/// An entry to append; the store assigns its sequence number and time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    pub actor: Actor,
    /// The tenant the action concerned, so tenants can be shown their own trail.
    pub tenant: Option<TenantId>,
    /// Dotted verb such as `vm.create` or `token.revoke`.
    pub action: String,
    /// What was acted on, e.g. a VM name or id.
    pub target: String,
    pub result: AuditResult,
}

impl NewAuditEntry {
    /// An entry for a successful action, to commit with the change it describes.
    pub fn ok(
        actor: Actor,
        tenant: Option<TenantId>,
        action: impl Into<String>,
        target: impl Into<String>,
    ) -> Self {
        NewAuditEntry {
            actor,
            tenant,
            action: action.into(),
            target: target.into(),
            result: AuditResult::Ok,
        }
    }

    /// The same action with another outcome.
    pub fn with_result(mut self, result: AuditResult) -> Self {
        self.result = result;
        self
    }

    /// Validates `action`/`target` and truncates over-long text instead of
    /// refusing it: dropping an audit record would be worse than shortening it.
    pub(crate) fn normalized(&self) -> Result<NewAuditEntry, StoreError> {
        let ok_action = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
        if self.action.is_empty() || self.action.len() > 64 || !self.action.chars().all(ok_action) {
            return Err(StoreError::invalid(
                "audit action",
                "must be 1 to 64 characters of a-z, 0-9, '.', '_' and '-'",
            ));
        }
        let mut e = self.clone();
        truncate(&mut e.target, 512);
        if let AuditResult::Error(text) = &mut e.result {
            truncate(text, MAX_AUDIT_TEXT_LEN);
        }
        Ok(e)
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Strictly increasing in append order. Ordering uses this rather than
    /// `at`, because wall clocks can step backwards.
    pub seq: u64,
    pub at: Timestamp,
    pub actor: Actor,
    pub tenant: Option<TenantId>,
    pub action: String,
    pub target: String,
    pub result: AuditResult,
}

/// A page of the audit log, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    /// Maximum entries returned; capped at [`AuditQuery::MAX_LIMIT`].
    pub limit: u32,
    /// Only entries about this tenant.
    pub tenant: Option<TenantId>,
    /// Only entries with `seq` below this (pagination cursor: pass the last
    /// `seq` of the previous page).
    pub before_seq: Option<u64>,
}

impl AuditQuery {
    pub const MAX_LIMIT: u32 = 10_000;

    pub fn newest(limit: u32) -> Self {
        AuditQuery {
            limit,
            tenant: None,
            before_seq: None,
        }
    }

    pub fn for_tenant(mut self, tenant: TenantId) -> Self {
        self.tenant = Some(tenant);
        self
    }

    pub fn before(mut self, seq: u64) -> Self {
        self.before_seq = Some(seq);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_text_round_trip() {
        for a in [
            Actor::Operator,
            Actor::System,
            Actor::Token(TokenId::new_random()),
        ] {
            assert_eq!(a.to_string().parse::<Actor>().unwrap(), a);
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(serde_json::from_str::<Actor>(&json).unwrap(), a);
        }
        assert!("root".parse::<Actor>().is_err());
    }

    #[test]
    fn normalizes_entries() {
        let e = NewAuditEntry {
            actor: Actor::System,
            tenant: None,
            action: "vm.create".into(),
            target: "x".repeat(1000),
            result: AuditResult::Error("y".repeat(10_000)),
        };
        let n = e.normalized().unwrap();
        assert_eq!(n.target.len(), 512);
        assert_eq!(n.result, AuditResult::Error("y".repeat(MAX_AUDIT_TEXT_LEN)));
        let bad = NewAuditEntry {
            action: "VM create".into(),
            ..e
        };
        assert!(bad.normalized().is_err());
    }
}
