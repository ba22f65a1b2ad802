//! `--attach` to an `https://` daemon. The console relay is blocking, with one thread per
//! direction on clones of one socket; a TLS session is a single state machine that cannot be
//! cloned. So a thread runs the session (tokio-rustls, the client's trust) between the
//! daemon's connection and one end of a Unix socket pair, and the relay gets the other end,
//! unchanged.

use hostel_api::tls::{client_config, Presented, Trust};
use hostel_api::ClientError;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use tokio_rustls::rustls::pki_types::{InvalidDnsNameError, ServerName};

/// Why the TLS bridge could not be set up.
#[derive(Debug, thiserror::Error)]
enum BridgeError {
    #[error("{host:?} is not a TLS server name: {source}")]
    ServerName {
        host: String,
        #[source]
        source: InvalidDnsNameError,
    },
    /// The socket pair, the runtime, or handing a socket to it.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The handshake (certificate checks included) failed.
    #[error("{0}")]
    Handshake(#[source] std::io::Error),
}

/// Completes the TLS handshake on `tcp` (checking the pin or CA as every API call does) and
/// returns the local end of the bridge.
pub fn bridge(
    tcp: TcpStream,
    authority: &str,
    trust: &Trust,
    url: &str,
) -> Result<UnixStream, ClientError> {
    let transport = |reason: String| ClientError::Transport {
        url: url.to_string(),
        reason,
    };
    let presented = Presented::default();
    let config = client_config(trust, &presented)?;
    let name = server_name(authority).map_err(|e| transport(e.to_string()))?;
    let (near, far) = UnixStream::pair().map_err(|e| transport(e.to_string()))?;
    let (tx, rx) = std::sync::mpsc::channel::<Result<(), BridgeError>>();
    std::thread::spawn(move || {
        let ready = tx.clone();
        let run = async move {
            let tcp = tcp
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpStream::from_std(tcp))?;
            let mut tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(BridgeError::Handshake)?;
            let mut far = far
                .set_nonblocking(true)
                .and_then(|()| tokio::net::UnixStream::from_std(far))?;
            let _ = ready.send(Ok(()));
            // Ends when both sides have closed; errors are the connection ending.
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut far).await;
            Ok::<(), BridgeError>(())
        };
        let outcome = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BridgeError::from)
            .and_then(|rt| rt.block_on(run));
        if let Err(e) = outcome {
            // The receiver is gone only if the handshake already succeeded.
            let _ = tx.send(Err(e));
        }
    });
    match rx.recv() {
        Ok(Ok(())) => Ok(near),
        Ok(Err(reason)) => Err(match (trust, presented.get()) {
            (Trust::Pinned(expected), Some(got)) if *expected != got => {
                ClientError::CertificateChanged {
                    url: url.to_string(),
                    expected: *expected,
                    presented: got,
                }
            }
            _ => transport(reason.to_string()),
        }),
        Err(_) => Err(transport("the TLS thread ended without a handshake".into())),
    }
}

/// The TLS server name of `host[:port]` (`[v6]:port` included).
fn server_name(authority: &str) -> Result<ServerName<'static>, BridgeError> {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    ServerName::try_from(host.to_string()).map_err(|source| BridgeError::ServerName {
        host: host.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_authority() {
        for (a, want) in [
            ("127.0.0.1:7878", "127.0.0.1"),
            ("[::1]:7878", "::1"),
            ("host.example:1", "host.example"),
            ("host.example", "host.example"),
        ] {
            let n = server_name(a).unwrap();
            assert_eq!(n.to_str(), want, "{a}");
        }
    }
}
