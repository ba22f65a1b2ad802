//! One thread per port socket: accept a frontend, serve it until it disconnects, repeat.
//! Looping on the same listener is what lets QEMU's `reconnect=` find the switch again after
//! either side restarts.
//!
//! Each accepted connection is relayed ([`crate::vhost::proxy`]) to the vhost-user library
//! through a private abstract-namespace socket that exists only for the handshake.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use vhost::vhost_user::Listener;
use vhost_user_backend::{ShutdownHandle, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::datapath::port::PortRuntime;
use crate::datapath::Core;
use crate::error::SwitchError;
use crate::vhost::backend::NicBackend;
use crate::vhost::proxy;

struct Shared {
    stop: AtomicBool,
    conn: Mutex<Option<ShutdownHandle>>,
}

/// Handle to a port's listener thread.
pub struct PortServer {
    path: PathBuf,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl PortServer {
    /// Binds `path` (replacing a stale socket file) and starts serving it.
    pub fn start(
        core: Arc<Core>,
        port: Arc<PortRuntime>,
        path: &Path,
    ) -> Result<PortServer, SwitchError> {
        let err = |source| SwitchError::VhostListen {
            path: path.to_path_buf(),
            source,
        };
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(err)?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            conn: Mutex::new(None),
        });
        let name = format!("vu-{}", port.id);
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || serve(core, port, listener, &sh))
            .map_err(|source| SwitchError::Thread { name, source })?;
        Ok(PortServer {
            path: path.to_path_buf(),
            shared,
            thread: Some(thread),
        })
    }

    /// Disconnects the guest (if any), stops the thread and removes the socket.
    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(h) = self
            .shared
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            h.shutdown();
        }
        // Wake a thread blocked in accept().
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

static NEXT_INNER: AtomicU64 = AtomicU64::new(0);

/// A fresh private listener plus a connected client end for the relay.
fn inner_pair(port: &PortRuntime) -> std::io::Result<(Listener, UnixStream)> {
    let name = format!(
        "hostel-switch/{}/{}/{}",
        std::process::id(),
        port.key,
        NEXT_INNER.fetch_add(1, Ordering::Relaxed)
    );
    let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
    let l = UnixListener::bind_addr(&addr)?;
    let c = UnixStream::connect_addr(&addr)?;
    Ok((Listener::from(l), c))
}

fn serve(core: Arc<Core>, port: Arc<PortRuntime>, public: UnixListener, sh: &Shared) {
    loop {
        let front = match public.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(port = %port.id, error = %e, "accept failed");
                continue;
            }
        };
        if sh.stop.load(Ordering::Acquire) {
            break;
        }
        let (mut inner, back) = match inner_pair(&port) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(port = %port.id, error = %e, "cannot create relay socket");
                continue;
            }
        };
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let backend = NicBackend::new(core.clone(), port.clone(), mem.clone());
        let mut daemon = match VhostUserDaemon::new(format!("vu-{}", port.id), backend, mem) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(port = %port.id, error = %e, "cannot create vhost-user daemon");
                return;
            }
        };
        if let Err(e) = daemon.start(&mut inner) {
            tracing::warn!(port = %port.id, error = %e, "vhost-user start failed");
            continue;
        }
        drop(inner);
        let relay = std::thread::spawn(move || proxy::relay(front, back));
        *sh.conn.lock().unwrap_or_else(PoisonError::into_inner) = daemon.shutdown_handle();
        if sh.stop.load(Ordering::Acquire) {
            daemon.request_shutdown();
        }
        if let Err(e) = daemon.wait() {
            tracing::info!(port = %port.id, error = %e, "vhost-user session ended");
        }
        *sh.conn.lock().unwrap_or_else(PoisonError::into_inner) = None;
        let _ = relay.join();
        port.set_rx(None);
        for h in daemon.get_epoll_handlers() {
            h.send_exit_event();
        }
        tracing::info!(port = %port.id, "guest NIC disconnected");
        if sh.stop.load(Ordering::Acquire) {
            break;
        }
    }
}
