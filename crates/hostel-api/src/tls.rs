//! How a client trusts a daemon's TLS certificate: a pinned SHA-256 fingerprint of the
//! certificate itself (the daemon's self-signed one, learned on first use or given), or a CA
//! that signed it (an operator's own certificate).
//!
//! A pin trusts exactly one certificate, so names and validity dates do not matter: the
//! daemon's self-signed certificate names no address the client may use to reach it (an IP,
//! a NAT'd name), and an operator who renews it re-pins. The handshake's signature is still
//! verified against the pinned certificate's key, so presenting a copy of the certificate
//! without its key fails.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The SHA-256 of a certificate's DER encoding, shown as `openssl x509 -fingerprint -sha256`
/// does (`AB:CD:…`, 32 bytes), so the two can be compared by eye.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

#[derive(Debug, thiserror::Error)]
#[error("not a SHA-256 certificate fingerprint ({0}); expected 32 hex bytes, e.g. AB:CD:… as the daemon prints it")]
pub struct FingerprintError(String);

impl Fingerprint {
    pub fn of(der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(der).into())
    }

    /// Accepts the daemon's and openssl's form (`AB:CD:…`), lower case, no colons, and an
    /// optional `sha256:` / `SHA256 Fingerprint=` prefix.
    pub fn parse(s: &str) -> Result<Self, FingerprintError> {
        let s = s.trim();
        let s = s
            .rsplit_once('=')
            .map(|(_, fp)| fp)
            .or_else(|| s.strip_prefix("sha256:"))
            .unwrap_or(s);
        let hex: String = s.chars().filter(|c| *c != ':').collect();
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(FingerprintError(format!("{} hex digits", hex.len())));
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|e| FingerprintError(e.to_string()))?;
        }
        Ok(Fingerprint(out))
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = FingerprintError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fingerprint::parse(s)
    }
}

/// What an `https://` daemon URL is trusted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Exactly the certificate with this fingerprint.
    Pinned(Fingerprint),
    /// Any certificate, whose fingerprint is recorded (`hostel remote add` without a
    /// fingerprint: trust on first use, shown to the operator and then pinned).
    FirstUse,
    /// Certificates a CA in this PEM file signed, for the name in the URL.
    Ca(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("CA file {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("TLS set-up: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The certificate the daemon presented last, for [`Trust::FirstUse`] and for naming both
/// fingerprints when a pin fails.
#[derive(Debug, Clone, Default)]
pub struct Presented(Arc<Mutex<Option<Fingerprint>>>);

impl Presented {
    pub fn get(&self) -> Option<Fingerprint> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn set(&self, fp: Fingerprint) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(fp);
    }
}

/// The pin failed: both fingerprints, for the client's error message.
#[derive(Debug, thiserror::Error)]
#[error("certificate fingerprint {presented} is not the pinned {expected}")]
pub struct PinMismatch {
    pub expected: Fingerprint,
    pub presented: Fingerprint,
}

#[derive(Debug)]
struct PinVerifier {
    expected: Option<Fingerprint>,
    presented: Presented,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of(end_entity.as_ref());
        self.presented.set(presented);
        match self.expected {
            Some(expected) if expected != presented => Err(rustls::Error::InvalidCertificate(
                CertificateError::Other(OtherError(Arc::new(PinMismatch {
                    expected,
                    presented,
                }))),
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The one rustls crypto provider of hostel (daemon and client): *ring*. Its post-quantum key
/// exchange is missing (hence rustls' deprecation note), but it builds with nothing beyond a
/// C compiler, where aws-lc-rs needs cmake and minutes of C++ on every clean build.
#[allow(deprecated)]
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for `trust`; `presented` records what the server showed.
pub fn client_config(
    trust: &Trust,
    presented: &Presented,
) -> Result<Arc<rustls::ClientConfig>, TrustError> {
    let provider = crypto_provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = match trust {
        Trust::Pinned(_) | Trust::FirstUse => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier {
                expected: match trust {
                    Trust::Pinned(fp) => Some(*fp),
                    _ => None,
                },
                presented: presented.clone(),
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        Trust::Ca(path) => builder
            .with_root_certificates(load_roots(path)?)
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TrustError> {
    use rustls::pki_types::pem::PemObject;
    let err = |reason: String| TrustError::Ca {
        path: path.to_path_buf(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| err(e.to_string()))? {
        roots
            .add(cert.map_err(|e| err(e.to_string()))?)
            .map_err(|e| err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("no PEM certificate in it".into()));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_round_trip_in_every_accepted_spelling() {
        let fp = Fingerprint::of(b"certificate");
        let shown = fp.to_string();
        assert_eq!(shown.len(), 32 * 3 - 1);
        assert_eq!(Fingerprint::parse(&shown).unwrap(), fp);
        assert_eq!(Fingerprint::parse(&shown.to_lowercase()).unwrap(), fp);
        assert_eq!(Fingerprint::parse(&shown.replace(':', "")).unwrap(), fp);
        assert_eq!(
            Fingerprint::parse(&format!("sha256 Fingerprint={shown}")).unwrap(),
            fp
        );
        assert_eq!(Fingerprint::parse(&format!("sha256:{shown}")).unwrap(), fp);
        assert!(Fingerprint::parse(&shown[3..]).is_err(), "31 bytes");
        assert!(Fingerprint::parse(&shown.replace('A', "G")).is_err() || !shown.contains('A'));
        assert!(Fingerprint::parse("").is_err());
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not pem").unwrap();
        let e = client_config(&Trust::Ca(path.clone()), &Presented::default()).unwrap_err();
        assert!(e.to_string().contains("ca.pem"), "{e}");
    }
}
