//! The local control socket: JSON lines over a Unix stream socket.
//!
//! Each request is one JSON object on one line; each gets exactly one response line.
//!
//! | request | response |
//! |---|---|
//! | `{"op":"add_network","network":{NetworkConfig}}` | `{"ok":true}` |
//! | `{"op":"remove_network","id":"net1"}` | `{"ok":true}` |
//! | `{"op":"add_port","port":{PortConfig}}` | `{"ok":true}` |
//! | `{"op":"remove_port","id":"vm1-0"}` | `{"ok":true}` |
//! | `{"op":"set_limits","id":"vm1-0","limits":{PortLimits}}` | `{"ok":true}` (guest stays connected) |
//! | `{"op":"apply","config":{SwitchConfig}}` | `{"ok":true}` (replace everything) |
//! | `{"op":"show_config"}` | `{"ok":true,"config":{SwitchConfig}}` |
//! | `{"op":"stats"}` | `{"ok":true,"stats":{SwitchStats}}` |
//! | `{"op":"shutdown"}` | `{"ok":true}`, then [`crate::run()`] returns |
//!
//! Failures answer `{"ok":false,"error":"..."}` and change nothing.
//!
//! A port's `limits` (in `add_port`, `apply` and `set_limits`) look like
//! `{"total":{"packets_per_sec":100000,"bytes_per_sec":125000000},
//! "flood":{"packets_per_sec":1000,"burst_packets":200},"unknown":{"packets_per_sec":20000}}`;
//! every class and field is optional (absent = unlimited, see [`crate::config::PortLimits`]),
//! and a field name the switch does not know is an error. `apply` changing nothing but a
//! port's limits keeps its guest connected, as `set_limits` does.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{NetworkConfig, PortConfig, PortLimits, SwitchConfig};
use crate::error::SwitchError;
use crate::switch::{Switch, SwitchStats};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    AddNetwork { network: NetworkConfig },
    RemoveNetwork { id: String },
    AddPort { port: PortConfig },
    RemovePort { id: String },
    SetLimits { id: String, limits: PortLimits },
    Apply { config: SwitchConfig },
    ShowConfig,
    Stats,
    Shutdown,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<SwitchConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<SwitchStats>,
}

impl Response {
    fn ok() -> Self {
        Response {
            ok: true,
            ..Default::default()
        }
    }
    fn err(e: impl std::fmt::Display) -> Self {
        Response {
            ok: false,
            error: Some(e.to_string()),
            ..Default::default()
        }
    }
}

/// Executes one request against the switch.
pub fn handle(sw: &Switch, req: Request, stop: &AtomicBool) -> Response {
    let done = |r: Result<(), SwitchError>| match r {
        Ok(()) => Response::ok(),
        Err(e) => Response::err(e),
    };
    match req {
        Request::AddNetwork { network } => done(sw.add_network(network)),
        Request::RemoveNetwork { id } => done(sw.remove_network(&id)),
        Request::AddPort { port } => done(sw.add_port(port)),
        Request::RemovePort { id } => done(sw.remove_port(&id)),
        Request::SetLimits { id, limits } => done(sw.set_port_limits(&id, limits)),
        Request::Apply { config } => done(sw.apply(&config)),
        Request::ShowConfig => Response {
            config: Some(sw.config()),
            ..Response::ok()
        },
        Request::Stats => Response {
            stats: Some(sw.stats()),
            ..Response::ok()
        },
        Request::Shutdown => {
            stop.store(true, Ordering::Release);
            Response::ok()
        }
    }
}

fn serve_client(sw: &Switch, stream: UnixStream, stop: &AtomicBool) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    for line in BufReader::new(stream).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let resp = match serde_json::from_str::<Request>(&line) {
            Ok(req) => handle(sw, req, stop),
            Err(e) => Response::err(format!("bad request: {e}")),
        };
        let mut text = serde_json::to_string(&resp).unwrap_or_else(|_| "{\"ok\":false}".into());
        text.push('\n');
        out.write_all(text.as_bytes())?;
        if stop.load(Ordering::Acquire) {
            break;
        }
    }
    Ok(())
}

/// Serves the control socket until a `shutdown` request. Each client gets its own thread so
/// a stuck client cannot block the daemon's reconnect.
pub fn serve(sw: Arc<Switch>, path: &Path) -> Result<(), SwitchError> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|source| SwitchError::ControlListen {
        path: path.to_path_buf(),
        source,
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    for conn in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let Ok(stream) = conn else { continue };
        let (sw, stop2, wake) = (sw.clone(), stop.clone(), path.to_path_buf());
        std::thread::spawn(move || {
            if let Err(e) = serve_client(&sw, stream, &stop2) {
                tracing::debug!(error = %e, "control client error");
            }
            if stop2.load(Ordering::Acquire) {
                // Unblock accept() so serve() can return.
                let _ = UnixStream::connect(&wake);
            }
        });
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// A minimal blocking client, for tests, the bench tool and the daemon.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    pub fn connect(path: &Path) -> std::io::Result<Client> {
        let s = UnixStream::connect(path)?;
        Ok(Client {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    pub fn call(&mut self, req: &Request) -> std::io::Result<Response> {
        let line = serde_json::to_string(req).map_err(std::io::Error::other)?;
        let resp = self.call_raw(&line)?;
        serde_json::from_str(&resp).map_err(std::io::Error::other)
    }

    /// Sends one raw line and returns the raw response line.
    pub fn call_raw(&mut self, line: &str) -> std::io::Result<String> {
        self.writer.write_all(line.as_bytes())?;
        self.writer.write_all(b"\n")?;
        let mut resp = String::new();
        self.reader.read_line(&mut resp)?;
        Ok(resp)
    }
}
