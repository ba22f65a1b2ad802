//! One thread per disk socket: accept a frontend, serve it until it disconnects, repeat, so
//! QEMU's `reconnect=` finds the disk again after either side restarts. Each connection goes
//! through the switch's vhost-user relay (`hostel_switch::vhost::proxy`), which vets every
//! descriptor the frontend hands over (sealed memory inside its file, real non-semaphore
//! eventfds) before the library maps or polls it.

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

use crate::backend::{BlkBackend, Disk, MAX_QUEUES};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("listening on {path}: {source}")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("queues: {0} (1 to {MAX_QUEUES})")]
    Queues(u16),
    #[error("volume: {0}")]
    Volume(#[from] hostel_pool::PoolError),
    #[error("spawning the listener thread: {0}")]
    Thread(#[source] std::io::Error),
}

struct Shared {
    stop: AtomicBool,
    conn: Mutex<Option<ShutdownHandle>>,
}

/// A disk's socket and the thread serving it.
pub struct DiskServer {
    path: PathBuf,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl DiskServer {
    /// Binds `path` (replacing a stale socket file) and serves `disk` on it.
    pub fn start(disk: Disk, path: &Path) -> Result<DiskServer, ServeError> {
        if disk.queues == 0 || disk.queues > MAX_QUEUES {
            return Err(ServeError::Queues(disk.queues));
        }
        disk.pool.volume_size(&disk.volume)?;
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(|source| ServeError::Listen {
            path: path.to_path_buf(),
            source,
        })?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            conn: Mutex::new(None),
        });
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("vu-blk".into())
            .spawn(move || serve(disk, listener, &sh))
            .map_err(ServeError::Thread)?;
        Ok(DiskServer {
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

impl Drop for DiskServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shutdown();
        }
    }
}

static NEXT_INNER: AtomicU64 = AtomicU64::new(0);

fn inner_pair(volume: &str) -> std::io::Result<(Listener, UnixStream)> {
    let name = format!(
        "hostel-storage/{}/{volume}/{}",
        std::process::id(),
        NEXT_INNER.fetch_add(1, Ordering::Relaxed)
    );
    let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
    let l = UnixListener::bind_addr(&addr)?;
    let c = UnixStream::connect_addr(&addr)?;
    Ok((Listener::from(l), c))
}

fn serve(disk: Disk, public: UnixListener, sh: &Shared) {
    // Back-off after failing to get resources (fd limit, memory), doubling to a second.
    let mut delay = Duration::from_millis(10);
    while !sh.stop.load(Ordering::Acquire) {
        let front = match public.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(volume = %disk.volume, error = %e, "accept failed; retrying");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        if sh.stop.load(Ordering::Acquire) {
            break;
        }
        match session(&disk, front, sh) {
            Ok(()) => delay = Duration::from_millis(10),
            Err(e) => {
                tracing::warn!(volume = %disk.volume, error = %e, "vhost-user session failed");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("creating the relay socket: {0}")]
    Relay(#[source] std::io::Error),
    #[error("vhost-user daemon: {0}")]
    Daemon(vhost_user_backend::Error),
    #[error("spawning the relay thread: {0}")]
    Thread(#[source] std::io::Error),
}

fn session(disk: &Disk, front: UnixStream, sh: &Shared) -> Result<(), SessionError> {
    let (mut inner, back) = inner_pair(&disk.volume).map_err(SessionError::Relay)?;
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let backend = BlkBackend::new(disk.clone(), mem.clone());
    let result = run_daemon(disk, &backend, mem, &mut inner, front, back, sh);
    backend.close_exit_events();
    result
}

fn run_daemon(
    disk: &Disk,
    backend: &BlkBackend,
    mem: crate::backend::Mem,
    inner: &mut Listener,
    front: UnixStream,
    back: UnixStream,
    sh: &Shared,
) -> Result<(), SessionError> {
    let mut daemon = VhostUserDaemon::new(format!("vu-blk-{}", disk.volume), backend.clone(), mem)
        .map_err(SessionError::Daemon)?;
    daemon.start(inner).map_err(SessionError::Daemon)?;
    let id = disk.volume.clone();
    let relay = std::thread::Builder::new()
        .name("vu-relay".into())
        .spawn(move || hostel_switch::vhost::proxy::relay(front, back, &id));
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
        tracing::info!(volume = %disk.volume, error = %e, "vhost-user session ended");
    }
    *sh.conn.lock().unwrap_or_else(PoisonError::into_inner) = None;
    let _ = relay.join();
    for h in daemon.get_epoll_handlers() {
        h.send_exit_event();
    }
    // What the guest wrote is made durable when it goes, flushed or not.
    if let Err(e) = disk.pool.flush() {
        tracing::warn!(volume = %disk.volume, error = %e, "flush at disconnect failed");
    }
    Ok(())
}
