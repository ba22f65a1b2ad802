//! API tokens. Only a SHA-256 of each secret is stored, so a leaked database
//! (or backup) cannot be replayed against the API. A fast unsalted hash is
//! enough here because secrets are 256 random bits, not human passwords.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::StoreError;
use crate::ids::{TenantId, TokenId};
use crate::time::Timestamp;

/// Every secret starts with this, so leaked tokens are easy to spot in logs
/// and by secret scanners.
pub const SECRET_PREFIX: &str = "hst_";

/// Lowercase hex SHA-256 of a token secret: the only form the store keeps.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TokenHash(String);

impl TokenHash {
    pub fn of_secret(secret: &str) -> Self {
        let digest = Sha256::digest(secret.as_bytes());
        TokenHash(hex(&digest))
    }

    /// Accepts an already-computed hash (e.g. imported from another store).
    pub fn from_hex(s: impl Into<String>) -> Result<Self, StoreError> {
        let s = s.into();
        let ok = s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return Err(StoreError::invalid(
                "token hash",
                "must be 64 lowercase hex digits",
            ));
        }
        Ok(TokenHash(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Shortened so hashes in debug logs can be correlated but not harvested.
impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", &self.0[..8])
    }
}

impl TryFrom<String> for TokenHash {
    type Error = StoreError;
    fn try_from(s: String) -> Result<Self, StoreError> {
        TokenHash::from_hex(s)
    }
}

impl From<TokenHash> for String {
    fn from(h: TokenHash) -> String {
        h.0
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// A token secret as handed to its owner. Deliberately not `Serialize` and
/// redacted in `Debug`, so it cannot end up in a log line or stored record by
/// accident; read it with [`TokenSecret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(String);

impl TokenSecret {
    /// `hst_` followed by 64 hex digits of OS randomness (256 bits).
    pub fn generate() -> Result<Self, StoreError> {
        let mut buf = [0u8; 32];
        getrandom::fill(&mut buf)
            .map_err(|e| StoreError::Backend(format!("no OS randomness: {e}")))?;
        Ok(TokenSecret(format!("{SECRET_PREFIX}{}", hex(&buf))))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash::of_secret(&self.0)
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(<redacted>)")
    }
}

/// Token names are free text for humans ("ci deploy key"), bounded so they
/// render in a table.
pub(crate) fn validate_token_name(name: &str) -> Result<(), StoreError> {
    if name.trim().is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            "token name",
            "must be 1 to 128 printable characters",
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: TokenId,
    /// `None` marks an operator token, which may act on every tenant.
    pub tenant: Option<TenantId>,
    pub name: String,
    pub hash: TokenHash,
    pub created_at: Timestamp,
}

/// Result of issuing a token: the stored record plus the secret, which is
/// returned exactly once and cannot be recovered later.
#[derive(Debug)]
pub struct IssuedToken {
    pub token: ApiToken,
    pub secret: TokenSecret,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_hex() {
        // Known vector: SHA-256("abc").
        assert_eq!(
            TokenHash::of_secret("abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn secrets_are_prefixed_random_and_redacted() {
        let a = TokenSecret::generate().unwrap();
        let b = TokenSecret::generate().unwrap();
        assert_ne!(a, b);
        assert!(a.expose().starts_with("hst_"));
        assert_eq!(a.expose().len(), 4 + 64);
        assert!(!format!("{a:?}").contains(a.expose()));
        assert_eq!(a.hash(), TokenHash::of_secret(a.expose()));
    }

    #[test]
    fn hash_parsing() {
        assert!(TokenHash::from_hex("A".repeat(64)).is_err());
        assert!(TokenHash::from_hex("a".repeat(63)).is_err());
        assert!(TokenHash::from_hex("a".repeat(64)).is_ok());
    }
}
