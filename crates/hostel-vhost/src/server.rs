//! One thread per vhost-user socket: accept a frontend, serve it until it disconnects,
//! repeat. Looping on the same listener is what lets QEMU's `reconnect=` find the backend
//! again after either side restarts.
//!
//! Each accepted connection is relayed ([`crate::proxy`]) to the vhost-user library through
//! a private abstract-namespace socket that exists only for the handshake, so the library
//! only ever sees descriptors the relay has vetted.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use vhost::vhost_user::Listener;
use vhost_user_backend::{ShutdownHandle, VhostUserBackend, VhostUserDaemon, VringMutex};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::exit_events::ExitEvents;
use crate::proxy;

/// Guest memory as both backends map it (no dirty-page bitmap).
pub type Mem = GuestMemoryAtomic<GuestMemoryMmap<()>>;

/// What one socket serves: a guest NIC, a guest disk.
pub trait Device: Send + Sync + 'static {
    /// The library backend made afresh for each connection.
    type Backend: VhostUserBackend<Bitmap = (), Vring = VringMutex<Mem>> + Clone + 'static;

    /// Names the device in logs, thread names and the relay's private socket.
    fn id(&self) -> &str;

    /// A backend for a new connection, over that connection's guest memory.
    fn backend(&self, mem: Mem) -> Self::Backend;

    /// The exit events `backend` handed out, closed when its session ends.
    fn exit_events(backend: &Self::Backend) -> &ExitEvents;

    /// Called once a session is over (the frontend gone, the worker threads told to exit):
    /// what the device does when its guest goes (detach a NIC's receive path, make a disk's
    /// writes durable).
    fn session_ended(&self, _backend: &Self::Backend) {}
}

/// Why a socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("listening on {path}: {source}")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spawning the listener thread {name}: {source}")]
    Thread {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

struct Shared {
    stop: AtomicBool,
    conn: Mutex<Option<ShutdownHandle>>,
}

/// A socket and the thread serving it; dropping it stops both.
pub struct Server {
    path: PathBuf,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `path` (replacing a stale socket file) and serves `device` on it.
    pub fn start<D: Device>(device: Arc<D>, path: &Path) -> Result<Server, ServerError> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(|source| ServerError::Listen {
            path: path.to_path_buf(),
            source,
        })?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            conn: Mutex::new(None),
        });
        let name = format!("vu-{}", device.id());
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            // Linux keeps 15 bytes of a thread's name.
            .name(name.chars().take(15).collect())
            .spawn(move || serve(&*device, listener, &sh))
            .map_err(|source| ServerError::Thread { name, source })?;
        Ok(Server {
            path: path.to_path_buf(),
            shared,
            thread: Some(thread),
        })
    }

    /// Disconnects the guest (if any), stops the thread and removes the socket.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
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
        // Wakes a thread blocked in accept().
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shutdown();
        }
    }
}

static NEXT_INNER: AtomicU64 = AtomicU64::new(0);

/// A fresh private listener plus a connected client end for the relay.
/// The name holds no device id: abstract names are limited to 107 bytes, and the counter
/// alone makes it unique within the process.
fn inner_pair() -> std::io::Result<(Listener, UnixStream)> {
    let name = format!(
        "hostel-vhost/{}/{}",
        std::process::id(),
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

    fn failed(&mut self, device: &str, what: &str, e: &dyn std::fmt::Display) {
        if !self.failing {
            tracing::warn!(device, error = %e, "{what}; retrying with back-off");
            self.failing = true;
        }
        std::thread::sleep(self.delay);
        self.delay = (self.delay * 2).min(Self::MAX);
    }

    fn succeeded(&mut self, device: &str) {
        if self.failing {
            tracing::info!(device, "vhost-user listener recovered");
        }
        *self = Backoff::new();
    }
}

fn serve<D: Device>(device: &D, public: UnixListener, sh: &Shared) {
    let mut backoff = Backoff::new();
    while !sh.stop.load(Ordering::Acquire) {
        let front = match public.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // EMFILE and friends: the connection waits in the backlog meanwhile.
                backoff.failed(device.id(), "accepting a vhost-user connection failed", &e);
                continue;
            }
        };
        if sh.stop.load(Ordering::Acquire) {
            break;
        }
        match session(device, front, sh) {
            Ok(()) => backoff.succeeded(device.id()),
            Err(e) => backoff.failed(device.id(), "setting up a vhost-user session failed", &e),
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
fn session<D: Device>(device: &D, front: UnixStream, sh: &Shared) -> Result<(), SessionError> {
    let (mut inner, back) = inner_pair().map_err(SessionError::Relay)?;
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let backend = device.backend(mem.clone());
    let result = run_daemon(device, &backend, mem, &mut inner, front, back, sh);
    // The daemon is gone (its worker threads told to exit): close what the library leaked.
    D::exit_events(&backend).close_all();
    result
}

fn run_daemon<D: Device>(
    device: &D,
    backend: &D::Backend,
    mem: Mem,
    inner: &mut Listener,
    front: UnixStream,
    back: UnixStream,
    sh: &Shared,
) -> Result<(), SessionError> {
    let mut daemon = VhostUserDaemon::new(format!("vu-{}", device.id()), backend.clone(), mem)
        .map_err(SessionError::Daemon)?;
    daemon.start(inner).map_err(SessionError::Start)?;
    let id = device.id().to_owned();
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
        tracing::info!(device = device.id(), error = %e, "vhost-user session ended");
    }
    *sh.conn.lock().unwrap_or_else(PoisonError::into_inner) = None;
    let _ = relay.join();
    for h in daemon.get_epoll_handlers() {
        h.send_exit_event();
    }
    device.session_ended(backend);
    tracing::info!(device = device.id(), "frontend disconnected");
    Ok(())
}
