//! `--attach` to an `https://` daemon. The console relay is blocking, with one thread per
//! direction on clones of one socket; a TLS session is a single state machine that cannot be
//! cloned. So a thread runs the session (tokio-rustls, the client's trust) between the
//! daemon's connection and one end of a Unix socket pair, and the relay gets the other end,
//! unchanged.

use hostel_api::tls::{client_config, Presented, Trust};
use hostel_api::ClientError;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;

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
    let name = server_name(authority).map_err(transport)?;
    let (near, far) = UnixStream::pair().map_err(|e| transport(e.to_string()))?;
    let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
    std::thread::spawn(move || {
        let ready = tx.clone();
        let run = async move {
            let tcp = tcp
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpStream::from_std(tcp))
                .map_err(|e| e.to_string())?;
            let mut tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            let mut far = far
                .set_nonblocking(true)
                .and_then(|()| tokio::net::UnixStream::from_std(far))
                .map_err(|e| e.to_string())?;
            let _ = ready.send(Ok(()));
            // Ends when both sides have closed; errors are the connection ending.
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut far).await;
            Ok::<(), String>(())
        };
        let outcome = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
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
            _ => transport(reason),
        }),
        Err(_) => Err(transport("the TLS thread ended without a handshake".into())),
    }
}

/// The TLS server name of `host[:port]` (`[v6]:port` included).
fn server_name(
    authority: &str,
) -> Result<tokio_rustls::rustls::pki_types::ServerName<'static>, String> {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} is not a TLS server name: {e}"))
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
