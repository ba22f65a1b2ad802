//! The daemon's link to the host's storage process (`hostel storage-backend`): starts it
//! with the pool's devices when it is not running, talks to it over its JSON-lines control
//! socket, and tells a restarted one from the one before (its control socket's identity,
//! as for the switch). The process runs in a session of its own and outlives the daemon.

use hostel_storage_proto::{ErrorKind, PoolStatus, Request, Response};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Queues each disk socket offers; QEMU uses as many as the VM has vCPUs, up to this.
pub const DISK_QUEUES: u16 = 4;

/// How long a control request may take: a volume create or a snapshot commits the pool's
/// metadata on every device; a backup export reads a whole volume.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
const START_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StorageLinkError {
    #[error("storage control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("storage process refused the request: {message}")]
    Refused { kind: ErrorKind, message: String },
    #[error("storage process did not come up within {0:?}")]
    NoStart(Duration),
}

impl StorageLinkError {
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            StorageLinkError::Refused { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// One storage process, told apart from a later one by its control socket's identity.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct StorageInstance {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

pub struct StorageLink {
    dir: PathBuf,
    exe: PathBuf,
    /// One starter at a time: two requests finding no process must not start two.
    start: tokio::sync::Mutex<()>,
}

impl StorageLink {
    pub fn new(dir: PathBuf) -> Self {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("hostel"));
        Self {
            dir,
            exe,
            start: tokio::sync::Mutex::new(()),
        }
    }

    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// Where a pool volume's vhost-user socket lives.
    pub fn disk_socket(&self, pool_name: &str) -> PathBuf {
        self.dir.join("disks").join(format!("{pool_name}.sock"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Which storage process serves the control socket now; `None` without one.
    pub fn instance(&self) -> Option<StorageInstance> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(self.control_socket()).ok()?;
        Some(StorageInstance {
            dev: m.dev(),
            ino: m.ino(),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    pub async fn request(&self, req: &Request) -> Result<Response, StorageLinkError> {
        let path = self.control_socket();
        let io = |source| StorageLinkError::Io {
            path: path.clone(),
            source,
        };
        let stream = UnixStream::connect(&path).await.map_err(io)?;
        let (rd, mut wr) = stream.into_split();
        let mut line = serde_json::to_string(req).map_err(|e| io(e.into()))?;
        line.push('\n');
        wr.write_all(line.as_bytes()).await.map_err(io)?;
        let mut reply = String::new();
        // Bounded: a reply is one line of at most a few megabytes (every volume's status).
        let mut rd = BufReader::new(rd).take(16 << 20);
        let read = rd.read_line(&mut reply);
        tokio::time::timeout(REQUEST_TIMEOUT, read)
            .await
            .map_err(|_| io(std::io::ErrorKind::TimedOut.into()))?
            .map_err(io)?;
        let resp: Response = serde_json::from_str(&reply).map_err(|e| io(e.into()))?;
        if resp.ok {
            Ok(resp)
        } else {
            Err(StorageLinkError::Refused {
                kind: resp.kind.unwrap_or(ErrorKind::Other),
                message: resp.error.unwrap_or_default(),
            })
        }
    }

    pub async fn status(&self) -> Result<PoolStatus, StorageLinkError> {
        Ok(self
            .request(&Request::Status)
            .await?
            .status
            .unwrap_or_default())
    }

    pub async fn alive(&self) -> bool {
        self.request(&Request::Status).await.is_ok()
    }

    /// Starts the storage process on `devices` unless one answers already.
    pub async fn ensure_running(&self, devices: &[PathBuf]) -> Result<(), StorageLinkError> {
        if self.alive().await {
            return Ok(());
        }
        let _one = self.start.lock().await;
        if self.alive().await {
            return Ok(());
        }
        let io = |source| StorageLinkError::Io {
            path: self.dir.clone(),
            source,
        };
        std::fs::create_dir_all(self.dir.join("disks")).map_err(io)?;
        let _ = std::fs::remove_file(self.control_socket());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("storage.log"))
            .map_err(io)?;
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("storage-backend")
            .arg("--control")
            .arg(self.control_socket());
        for d in devices {
            cmd.arg("--device").arg(d);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .env(
                "HOSTEL_LOG",
                std::env::var("HOSTEL_LOG").unwrap_or_else(|_| "info".into()),
            );
        let child_setup = || {
            // SAFETY: setsid has no memory preconditions and touches only the child.
            unsafe { libc::setsid() };
            Ok(())
        };
        // SAFETY: the closure only calls setsid, which is async-signal-safe.
        unsafe { cmd.pre_exec(child_setup) };
        let mut child = cmd.spawn().map_err(io)?;
        tracing::info!(
            pid = child.id(),
            devices = devices.len(),
            "started the storage process"
        );
        tokio::spawn(async move {
            let status = child.wait().await;
            tracing::warn!(?status, "storage process exited");
        });
        // Its control socket appears once the pool is open; poll it with a deadline.
        let deadline = Instant::now() + START_DEADLINE;
        while Instant::now() < deadline {
            if self.alive().await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(StorageLinkError::NoStart(START_DEADLINE))
    }
}
