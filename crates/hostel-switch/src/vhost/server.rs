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
use std::time::Duration;

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

/// Waits after a failure to get resources (the fd limit, memory), doubling up to a second,
/// and says so once per episode: a listener never gives up, nor floods the log.
struct Backoff {
    delay: Duration,
    failing: bool,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn new() -> Backoff {
        Backoff {
            delay: Self::FIRST,
            failing: false,
        }
    }

    fn failed(&mut self, port: &str, what: &str, e: &dyn std::fmt::Display) {
        if !self.failing {
            tracing::warn!(port, error = %e, "{what}; retrying with back-off");
            self.failing = true;
        }
        std::thread::sleep(self.delay);
        self.delay = (self.delay * 2).min(Self::MAX);
    }

    fn succeeded(&mut self, port: &str) {
        if self.failing {
            tracing::info!(port, "vhost-user listener recovered");
        }
        *self = Backoff::new();
    }
}

fn serve(core: Arc<Core>, port: Arc<PortRuntime>, public: UnixListener, sh: &Shared) {
    let mut backoff = Backoff::new();
    while !sh.stop.load(Ordering::Acquire) {
        let front = match public.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // EMFILE and friends: the connection waits in the backlog meanwhile.
                backoff.failed(&port.id, "accepting a vhost-user connection failed", &e);
                continue;
            }
        };
        if sh.stop.load(Ordering::Acquire) {
            break;
        }
        match session(&core, &port, front, sh) {
            Ok(()) => backoff.succeeded(&port.id),
            Err(e) => backoff.failed(&port.id, "setting up a vhost-user session failed", &e),
        }
    }
}

/// What a session could not get; the connection is dropped and the next one accepted.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("creating the relay socket: {0}")]
    Relay(#[source] std::io::Error),
    #[error("creating the vhost-user daemon: {0}")]
    Daemon(vhost_user_backend::Error),
    #[error("starting the vhost-user daemon: {0}")]
    Start(vhost_user_backend::Error),
    #[error("spawning the relay thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Serves one frontend connection until it ends. Everything it opened is closed when it
/// returns, whichever way.
fn session(
    core: &Arc<Core>,
    port: &Arc<PortRuntime>,
    front: UnixStream,
    sh: &Shared,
) -> Result<(), SessionError> {
    let (mut inner, back) = inner_pair(port).map_err(SessionError::Relay)?;
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let backend = NicBackend::new(core.clone(), port.clone(), mem.clone());
    let result = run_daemon(port, &backend, mem, &mut inner, front, back, sh);
    // The daemon is gone (its worker threads joined): close what the library leaked.
    backend.close_exit_events();
    result
}

fn run_daemon(
    port: &Arc<PortRuntime>,
    backend: &NicBackend,
    mem: crate::datapath::port::Mem,
    inner: &mut Listener,
    front: UnixStream,
    back: UnixStream,
    sh: &Shared,
) -> Result<(), SessionError> {
    let mut daemon = VhostUserDaemon::new(format!("vu-{}", port.id), backend.clone(), mem)
        .map_err(SessionError::Daemon)?;
    daemon.start(inner).map_err(SessionError::Start)?;
    let id = port.id.clone();
    let relay = std::thread::Builder::new()
        .name("vu-relay".into())
        .spawn(move || proxy::relay(front, back, &id));
    let relay = match relay {
        Ok(r) => r,
        Err(e) => {
            daemon.request_shutdown();
            let _ = daemon.wait();
            for h in daemon.get_epoll_handlers() {
                h.send_exit_event();
            }
            return Err(SessionError::Thread(e));
        }
    };
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
    Ok(())
}
