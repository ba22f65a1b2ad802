//! `hostel vm console NAME --attach`: the VM's serial console, interactively.
//!
//! The daemon switches an HTTP/1.1 connection over to raw console bytes
//! (`Upgrade: hostel-console`). The blocking API client cannot do upgrades, so this writes
//! the one request itself, reads the response head, and then relays stdin to the socket and
//! the socket to stdout on two threads. Ctrl-] detaches; the guest keeps running.

use crate::console::{RawTerminal, ESCAPE};
use anyhow::Result;
use hostel_api::{ApiErrorBody, Client, ClientError};
use std::io::{IsTerminal, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

/// The `Upgrade` protocol the daemon's attach route speaks.
const PROTOCOL: &str = "hostel-console";
/// A response head longer than this is not from a hostel daemon.
const MAX_HEAD: usize = 64 * 1024;

/// Why the session ended.
enum End {
    /// Ctrl-] (or the end of stdin when it is not a terminal).
    Detached,
    /// The daemon closed the console: the VM stopped, or the daemon went away.
    Closed,
}

pub fn attach(client: &Client, tenant: Option<&str>, name: &str) -> Result<()> {
    let base = client.base_url();
    let transport = |reason: String| ClientError::Transport {
        url: base.to_string(),
        reason,
    };
    let (authority, prefix, tls) = split_url(base).map_err(|e| transport(e.to_string()))?;
    let mut path = format!("{prefix}/v1/vms/{name}/console/attach");
    if let Some(t) = tenant {
        path.push_str(&format!("?tenant={t}"));
    }
    let sock = connect(&authority, tls).map_err(|e| transport(e.to_string()))?;
    let _ = sock.set_nodelay(true);
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: {PROTOCOL}\r\n"
    );
    if let Some(t) = client.token() {
        request.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    request.push_str("\r\n");
    if tls {
        let trust = client.trust().ok_or_else(|| {
            transport("no certificate pinned for this https:// URL (`hostel remote add`)".into())
        })?;
        let sock = super::attach_tls::bridge(sock, &authority, trust, base)?;
        session(sock, &request, name, transport)
    } else {
        session(sock, &request, name, transport)
    }
}

/// What the relay needs of its connection: a second handle for the other thread, and a way
/// to end both directions. A TCP connection (plain HTTP), or the local end of the TLS bridge.
pub(super) trait Duplex: Read + Write + Send + Sized + 'static {
    fn try_clone(&self) -> std::io::Result<Self>;
    fn shutdown(&self, how: Shutdown) -> std::io::Result<()>;
}

impl Duplex for TcpStream {
    fn try_clone(&self) -> std::io::Result<Self> {
        TcpStream::try_clone(self)
    }
    fn shutdown(&self, how: Shutdown) -> std::io::Result<()> {
        TcpStream::shutdown(self, how)
    }
}

impl Duplex for std::os::unix::net::UnixStream {
    fn try_clone(&self) -> std::io::Result<Self> {
        std::os::unix::net::UnixStream::try_clone(self)
    }
    fn shutdown(&self, how: Shutdown) -> std::io::Result<()> {
        std::os::unix::net::UnixStream::shutdown(self, how)
    }
}

/// Sends the upgrade request, checks the answer, and relays.
fn session<S: Duplex>(
    mut sock: S,
    request: &str,
    name: &str,
    transport: impl Fn(String) -> ClientError,
) -> Result<()> {
    sock.write_all(request.as_bytes())
        .map_err(|e| transport(e.to_string()))?;
    let head = read_head(&mut sock).map_err(|e| transport(e.to_string()))?;
    if head.status != 101 {
        let body = read_body(&mut sock, &head).unwrap_or_default();
        return Err(api_error(head.status, &body).into());
    }
    if !head
        .header("upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case(PROTOCOL))
    {
        return Err(ClientError::Decode(format!(
            "the daemon switched to {:?}, not {PROTOCOL}",
            head.header("upgrade").unwrap_or("")
        ))
        .into());
    }

    eprintln!("hostel: attached to {name}'s console; Ctrl-] detaches");
    relay(sock)
}

/// Relays until Ctrl-], the end of stdin, or the daemon closing the connection. The
/// terminal is in raw mode (when it is one) only for the session.
fn relay<S: Duplex>(sock: S) -> Result<()> {
    let (tx, rx) = mpsc::channel();
    let mut from_console = sock.try_clone()?;
    let output = {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut out = std::io::stdout().lock();
            let mut buf = [0u8; 8192];
            loop {
                let n = match from_console.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
            let _ = tx.send(End::Closed);
        })
    };
    let raw = if std::io::stdin().is_terminal() {
        Some(RawTerminal::enter()?)
    } else {
        None
    };
    let mut to_console = sock.try_clone()?;
    // Not joined: it may sit in a read of stdin until the process exits.
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 1024];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if let Some(pos) = buf[..n].iter().position(|&b| b == ESCAPE) {
                let _ = to_console.write_all(&buf[..pos]);
                break;
            }
            if to_console.write_all(&buf[..n]).is_err() {
                return;
            }
        }
        let _ = tx.send(End::Detached);
    });
    let end = rx.recv().unwrap_or(End::Closed);
    // Ends the output thread's read, and tells the daemon we left.
    let _ = sock.shutdown(Shutdown::Both);
    let _ = output.join();
    // Still in raw mode (when a terminal), hence the explicit carriage returns.
    match end {
        End::Detached => eprint!("\r\nhostel: detached\r\n"),
        End::Closed => {
            eprint!("\r\nhostel: console closed (the VM stopped or the daemon went away)\r\n")
        }
    }
    drop(raw);
    Ok(())
}

/// Why a daemon URL cannot be attached to.
#[derive(Debug, thiserror::Error)]
enum UrlError {
    #[error("--attach needs an https:// or http:// daemon URL (got {0:?})")]
    Scheme(String),
    #[error("no host in {0:?}")]
    NoHost(String),
}

/// `http(s)://host:port/prefix` → (`host:port`, `/prefix`, https?).
fn split_url(url: &str) -> std::result::Result<(String, String, bool), UrlError> {
    let (rest, tls) = if let Some(rest) = url.strip_prefix("https://") {
        (rest, true)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (rest, false)
    } else {
        return Err(UrlError::Scheme(url.to_string()));
    };
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(UrlError::NoHost(url.to_string()));
    }
    Ok((authority.to_string(), prefix.to_string(), tls))
}

/// Connects to `host[:port]` (port 443 or 80 when none is given).
fn connect(authority: &str, tls: bool) -> std::io::Result<TcpStream> {
    let has_port = match authority.rfind(':') {
        // `[::1]` has colons but no port; `[::1]:7878` and `host:7878` have one.
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    let addr = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{}", if tls { 443 } else { 80 })
    };
    use std::net::ToSocketAddrs;
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("{authority}: no address"))))
}

/// A response's status line and headers.
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads up to the blank line ending the head, a byte at a time so that nothing after it
/// (the first console bytes) is consumed here.
fn read_head(sock: &mut impl Read) -> std::io::Result<Head> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        if sock.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection without answering",
            ));
        }
        raw.push(byte[0]);
        if raw.len() > MAX_HEAD {
            return Err(std::io::Error::other("response head too long"));
        }
    }
    parse_head(&String::from_utf8_lossy(&raw))
}

fn parse_head(text: &str) -> std::io::Result<Head> {
    let bad = || std::io::Error::other(format!("not an HTTP response: {:?}", text.trim()));
    let mut lines = text.split("\r\n");
    let status_line = lines.next().ok_or_else(bad)?;
    let mut parts = status_line.split_whitespace();
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(bad());
    }
    let status = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Head { status, headers })
}

/// The body of a refusal: by Content-Length, chunked, or up to the end of the connection.
fn read_body(sock: &mut impl Read, head: &Head) -> std::io::Result<Vec<u8>> {
    const LIMIT: u64 = 1 << 20;
    let mut body = Vec::new();
    if let Some(len) = head.header("content-length") {
        let len: u64 = len.parse().map_err(std::io::Error::other)?;
        sock.take(len.min(LIMIT)).read_to_end(&mut body)?;
    } else if head
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        let mut r = std::io::BufReader::new(sock.take(LIMIT));
        loop {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut r, &mut line)?;
            let size = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size, 16).map_err(std::io::Error::other)?;
            if size == 0 {
                break;
            }
            let mut chunk = vec![0u8; size + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        sock.take(LIMIT).read_to_end(&mut body)?;
    }
    Ok(body)
}

/// The server's refusal as the API client would report it (`hostel: error: <message>`).
fn api_error(status: u16, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ApiErrorBody>(body) {
        Ok(b) => ClientError::Api {
            status,
            code: b.error.code,
            message: b.error.message,
            field: b.error.field,
        },
        Err(_) => ClientError::Api {
            status,
            code: "http".into(),
            message: format!("HTTP {status}: {}", String::from_utf8_lossy(body).trim()),
            field: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_prefix() {
        assert_eq!(
            split_url("http://127.0.0.1:7878").unwrap(),
            ("127.0.0.1:7878".into(), String::new(), false)
        );
        assert_eq!(
            split_url("http://h/api/").unwrap(),
            ("h".into(), "/api".into(), false)
        );
        assert_eq!(
            split_url("https://h:1").unwrap(),
            ("h:1".into(), String::new(), true)
        );
        assert!(matches!(split_url("ftp://h"), Err(UrlError::Scheme(_))));
        assert!(matches!(split_url("http:///x"), Err(UrlError::NoHost(_))));
    }

    #[test]
    fn refusals_are_read_whole_and_decoded() {
        let head = parse_head(
            "HTTP/1.1 409 Conflict\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        )
        .unwrap();
        assert_eq!(head.status, 409);
        let json =
            br#"{"error":{"code":"console_busy","message":"console is attached elsewhere"}}"#;
        let mut wire = format!("{:x}\r\n", json.len()).into_bytes();
        wire.extend_from_slice(json);
        wire.extend_from_slice(b"\r\n0\r\n\r\n");
        let body = read_body(&mut &wire[..], &head).unwrap();
        let e = api_error(head.status, &body);
        assert_eq!(e.to_string(), "console is attached elsewhere");
        assert_eq!(e.status(), Some(409));
    }
}
