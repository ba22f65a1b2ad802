//! The local control socket's server: JSON lines over a Unix stream socket, one thread per
//! client. The protocol itself (requests, responses, the blocking [`Client`]) is in
//! [`hostel_switch_proto::control`], re-exported here.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use hostel_switch_proto::control::{Client, Request, Response};

use crate::error::SwitchError;
use crate::switch::Switch;

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
        Request::SetPolicies { policies } => done(sw.set_policies(policies)),
        Request::Apply { config } => done(sw.apply(&config)),
        Request::SetFirewall { tenant, policy } => done(sw.set_firewall(&tenant, policy)),
        Request::FirewallLog { tenant } => match sw.firewall_log(&tenant) {
            Some(log) => Response {
                log: Some(log),
                ..Response::ok()
            },
            None => Response::err(format!("no edge for tenant {tenant:?}")),
        },
        Request::SetIds { tenant, ids } => match sw.set_ids(&tenant, ids) {
            Ok(report) => Response {
                ids_load: Some(report),
                ..Response::ok()
            },
            Err(e) => Response::err(e),
        },
        Request::IdsAlerts { tenant, after } => match sw.ids_alerts(&tenant, after) {
            Some(a) => Response {
                ids_alerts: Some(a),
                ..Response::ok()
            },
            None => Response::err(format!("no edge for tenant {tenant:?}")),
        },
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
