//! The API's TCP listener over TLS: the daemon's key and certificate (made at first start and
//! kept in `<state>/tls/`, or the operator's own), the rustls acceptor, and the serve loop.
//!
//! Plain HTTP stays on the Unix socket (its file mode is the access control) and, for
//! development only, on a loopback TCP address behind `--insecure-http-loopback`.
//!
//! The self-signed certificate is trusted by its SHA-256 fingerprint (the client pins it, see
//! `hostel_api::tls`), so its names and dates matter little; it names `localhost`, the
//! loopback addresses and the host's name anyway, for tools that check them.

use axum::Router;
use hostel_api::tls::Fingerprint;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A client that has not finished its handshake after this long is dropped, so idle
/// connections cannot pile up tasks.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the TCP listener speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listener {
    /// HTTPS with the daemon's own self-signed certificate (`<state>/tls/`).
    SelfSigned,
    /// HTTPS with the operator's certificate chain and key (PEM files).
    Operator { cert: PathBuf, key: PathBuf },
    /// Plain HTTP, loopback addresses only (`--insecure-http-loopback`).
    InsecureHttpLoopback,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "--insecure-http-loopback serves plain HTTP, so it is refused for {listen} ({addr} is \
         not a loopback address); listen on 127.0.0.1 or ::1, or drop the flag to serve HTTPS"
    )]
    NotLoopback {
        listen: String,
        addr: std::net::IpAddr,
    },
    #[error("--listen {listen}: {source}")]
    Resolve {
        listen: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("{path}: not a PEM private key ({reason})")]
    BadKey { path: PathBuf, reason: String },
    #[error("{path}: not a PEM certificate ({reason})")]
    BadCertificate { path: PathBuf, reason: String },
    #[error(
        "the TLS key {key} does not belong to the certificate {cert} ({source}); give the \
         key the certificate was issued for"
    )]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("making the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The server side of TLS: what the acceptor uses and what the operator compares.
pub struct Identity {
    pub config: Arc<rustls::ServerConfig>,
    /// Of the end-entity certificate: what clients pin.
    pub fingerprint: Fingerprint,
    /// Where the certificate is, for the start-up message.
    pub cert_path: PathBuf,
}

/// Refuses `--insecure-http-loopback` unless every address `listen` names is loopback.
pub async fn check_loopback(listen: &str) -> Result<(), TlsError> {
    let addrs = tokio::net::lookup_host(listen)
        .await
        .map_err(|source| TlsError::Resolve {
            listen: listen.to_string(),
            source,
        })?;
    for a in addrs {
        if !a.ip().is_loopback() {
            return Err(TlsError::NotLoopback {
                listen: listen.to_string(),
                addr: a.ip(),
            });
        }
    }
    Ok(())
}

/// The self-signed key and certificate's directory in the state directory.
pub fn state_tls_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("tls")
}

/// Loads the operator's pair, or the daemon's own (making it on first start).
pub fn identity(state_dir: &Path, listener: &Listener) -> Result<Option<Identity>, TlsError> {
    let (cert, key) = match listener {
        Listener::InsecureHttpLoopback => return Ok(None),
        Listener::Operator { cert, key } => (cert.clone(), key.clone()),
        Listener::SelfSigned => ensure_self_signed(&state_tls_dir(state_dir))?,
    };
    load(&cert, &key).map(Some)
}

/// `<dir>/key.pem` (0600) and `<dir>/cert.pem`, made if missing. Each is written to a
/// temporary file, fsynced and renamed, the key first: a kill -9 leaves either no key, or a
/// whole key without a certificate (which is then issued for that key), never half a file.
fn ensure_self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let key_path = dir.join("key.pem");
    let cert_path = dir.join("cert.pem");
    if key_path.exists() && cert_path.exists() {
        return Ok((cert_path, key_path));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))?;
    let key = if key_path.exists() {
        let pem = std::fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
        rcgen::KeyPair::from_pem(&pem).map_err(|e| TlsError::BadKey {
            path: key_path.clone(),
            reason: e.to_string(),
        })?
    } else {
        let key = rcgen::KeyPair::generate()?;
        write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        key
    };
    let host = hostname();
    let mut names = vec!["localhost".to_string()];
    if let Some(h) = host.clone().filter(|h| h != "localhost") {
        names.push(h);
    }
    let mut params = rcgen::CertificateParams::new(names)?;
    for ip in [
        std::net::IpAddr::from([127, 0, 0, 1]),
        std::net::Ipv6Addr::LOCALHOST.into(),
    ] {
        params.subject_alt_names.push(rcgen::SanType::IpAddress(ip));
    }
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("hostel daemon {}", host.as_deref().unwrap_or("")).trim(),
    );
    let cert = params.self_signed(&key)?;
    write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(cert = %cert_path.display(), "made the daemon's self-signed TLS certificate");
    Ok((cert_path, key_path))
}

fn hostname() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let h = h.trim();
    (!h.is_empty()).then(|| h.to_string())
}

/// Temporary file, fsync, rename, fsync of the directory: the file is whole or absent.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<(), TlsError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(content)
        .and_then(|()| f.sync_all())
        .map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn load(cert_path: &Path, key_path: &Path) -> Result<Identity, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| TlsError::BadCertificate {
            path: cert_path.to_path_buf(),
            reason: e.to_string(),
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: cert_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let Some(end_entity) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    };
    let fingerprint = Fingerprint::of(end_entity.as_ref());
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::BadKey {
        path: key_path.to_path_buf(),
        reason: e.to_string(),
    })?;
    // `with_single_cert` checks that the key's public half is the certificate's.
    let mut config =
        rustls::ServerConfig::builder_with_provider(hostel_api::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
            .map_err(|source| TlsError::KeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
                source,
            })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Identity {
        config: Arc::new(config),
        fingerprint,
        cert_path: cert_path.to_path_buf(),
    })
}

/// Serves `app` over TLS on `listener` until `drain` turns true; then stops accepting and
/// lets every connection finish its requests in flight (the caller bounds the wait).
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: Router,
    mut drain: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut connections = tokio::task::JoinSet::new();
    let each = drain.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: axum::serve waits a second too.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                connections.spawn(connection(acceptor.clone(), tcp, peer, app.clone(), each.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = drained(&mut drain) => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Returns once draining starts (or the sender is gone), holding no borrow of the value.
async fn drained(drain: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = drain.wait_for(|d| *d).await;
}

async fn connection(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    app: Router,
    mut drain: tokio::sync::watch::Receiver<bool>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let service = hyper_util::service::TowerToHyperService::new(app);
    let conn = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            return;
        }
        _ = drained(&mut drain) => {}
    }
    // Draining: finish the request in flight, refuse the next one on this connection.
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_self_signed_pair_is_made_once_with_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let first = identity(dir.path(), &Listener::SelfSigned)
            .unwrap()
            .unwrap();
        let key = state_tls_dir(dir.path()).join("key.pem");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "key mode {mode:o}");
        let again = identity(dir.path(), &Listener::SelfSigned)
            .unwrap()
            .unwrap();
        assert_eq!(
            first.fingerprint, again.fingerprint,
            "restart keeps the certificate"
        );
        assert!(!state_tls_dir(dir.path()).join("key.tmp").exists());
    }

    #[test]
    fn a_key_without_its_certificate_gets_one_for_that_key() {
        // What a kill -9 between the two renames leaves.
        let dir = tempfile::tempdir().unwrap();
        identity(dir.path(), &Listener::SelfSigned).unwrap();
        let tls = state_tls_dir(dir.path());
        let key_before = std::fs::read(tls.join("key.pem")).unwrap();
        std::fs::remove_file(tls.join("cert.pem")).unwrap();
        identity(dir.path(), &Listener::SelfSigned)
            .unwrap()
            .unwrap();
        assert_eq!(std::fs::read(tls.join("key.pem")).unwrap(), key_before);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_naming_both_files() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        identity(a.path(), &Listener::SelfSigned).unwrap();
        identity(b.path(), &Listener::SelfSigned).unwrap();
        let listener = Listener::Operator {
            cert: state_tls_dir(a.path()).join("cert.pem"),
            key: state_tls_dir(b.path()).join("key.pem"),
        };
        let e = identity(a.path(), &listener)
            .err()
            .expect("mismatch refused");
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("does not belong") && msg.contains("cert.pem"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn plain_http_is_refused_off_loopback() {
        check_loopback("127.0.0.1:0").await.unwrap();
        check_loopback("[::1]:0").await.unwrap();
        let e = check_loopback("0.0.0.0:7878").await.unwrap_err();
        assert!(e.to_string().contains("not a loopback address"), "{e}");
    }
}
