//! A disk's vhost-user socket: [`hostel_vhost::Server`] serving a volume with a fresh
//! [`BlkBackend`] per frontend connection. The shared server loops on the socket (QEMU's
//! `reconnect=` finds the disk again after either side restarts) and passes every connection
//! through the vetting relay (sealed memory inside its file, real non-semaphore eventfds)
//! before the library maps or polls what the frontend hands over.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hostel_vhost::{Device, ExitEvents, Server, ServerError};

use crate::backend::{BlkBackend, Disk, Mem, MAX_QUEUES};

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
    #[error("spawning the listener thread {name}: {source}")]
    Thread {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

struct DiskDevice(Disk);

impl Device for DiskDevice {
    type Backend = BlkBackend;

    fn id(&self) -> &str {
        &self.0.volume
    }

    fn backend(&self, mem: Mem) -> BlkBackend {
        BlkBackend::new(self.0.clone(), mem)
    }

    fn exit_events(backend: &BlkBackend) -> &ExitEvents {
        backend.exit_events()
    }

    fn session_ended(&self, _backend: &BlkBackend) {
        // What the guest wrote is made durable when it goes, flushed or not.
        if let Err(e) = self.0.pool.flush() {
            tracing::warn!(volume = %self.0.volume, error = %e, "flush at disconnect failed");
        }
    }
}

/// A disk's socket and the thread serving it; dropping it stops both.
pub struct DiskServer(Server);

impl DiskServer {
    /// Binds `path` (replacing a stale socket file) and serves `disk` on it.
    pub fn start(disk: Disk, path: &Path) -> Result<DiskServer, ServeError> {
        if disk.queues == 0 || disk.queues > MAX_QUEUES {
            return Err(ServeError::Queues(disk.queues));
        }
        disk.pool.volume_size(&disk.volume)?;
        Server::start(Arc::new(DiskDevice(disk)), path)
            .map(DiskServer)
            .map_err(|e| match e {
                ServerError::Listen { path, source } => ServeError::Listen { path, source },
                ServerError::Thread { name, source } => ServeError::Thread { name, source },
            })
    }

    /// Disconnects the guest (if any), stops the thread and removes the socket.
    pub fn stop(self) {
        self.0.stop();
    }
}
