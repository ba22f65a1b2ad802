//! The daemon's link to the host's switch process: starts it when it is not running, keeps
//! its tables equal to the store's networks and NICs, and notices a restart (the switch then
//! comes back empty and gets the whole table again, while the VMs' NICs reconnect).

use hostel_switch_proto::control::{Request, Response};
use hostel_switch_proto::{SwitchConfig, SwitchStats};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

pub struct SwitchLink {
    dir: PathBuf,
    paths: SwitchPaths,
    exe: PathBuf,
    /// One conversation at a time: the switch handles one request per line, in order.
    lock: tokio::sync::Mutex<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("switch control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("switch refused the request: {0}")]
    Refused(String),
    #[error("switch did not come up within {0:?}")]
    NoStart(Duration),
}

/// The paths of the switch's sockets under the state directory.
#[derive(Clone, Debug)]
pub struct SwitchPaths {
    dir: PathBuf,
}

impl SwitchPaths {
    /// Where the vhost-user socket of a port lives.
    pub fn port_socket(&self, port_id: &str) -> PathBuf {
        self.dir.join("ports").join(format!("{port_id}.sock"))
    }
}

/// One switch process, told apart from a later one by its control socket's identity (an
/// inode number can be reused after the old socket is removed; its change time too makes
/// a mix-up need both within one clock tick).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SwitchInstance {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

impl SwitchInstance {
    /// The instance as text, to record it in a file (a VPS's TAP attached by this switch).
    pub fn key(&self) -> String {
        format!(
            "{}:{}:{}.{}",
            self.dev, self.ino, self.ctime.0, self.ctime.1
        )
    }
}

const START_DEADLINE: Duration = Duration::from_secs(10);

impl SwitchLink {
    pub fn new(dir: PathBuf) -> Self {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("hostel"));
        Self {
            paths: SwitchPaths { dir: dir.clone() },
            dir,
            exe,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// Where the vhost-user socket of NIC `idx` of a VM lives.
    pub fn port_socket(&self, port_id: &str) -> PathBuf {
        self.paths.port_socket(port_id)
    }

    /// The paths ports get, for code that renders tables off the async workers.
    pub fn paths(&self) -> SwitchPaths {
        self.paths.clone()
    }

    /// Which switch process serves the control socket now: a switch binds a new socket
    /// when it starts, so a restarted one (by the watchdog or by hand) is a new instance.
    /// `None` when there is no socket.
    pub fn instance(&self) -> Option<SwitchInstance> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(self.control_socket()).ok()?;
        Some(SwitchInstance {
            dev: m.dev(),
            ino: m.ino(),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    pub(crate) async fn request(&self, req: &Request) -> Result<Response, LinkError> {
        let path = self.control_socket();
        let io = |source| LinkError::Io {
            path: path.clone(),
            source,
        };
        let stream = UnixStream::connect(&path).await.map_err(io)?;
        let (rd, mut wr) = stream.into_split();
        let mut line = serde_json::to_string(req).map_err(|e| io(e.into()))?;
        line.push('\n');
        wr.write_all(line.as_bytes()).await.map_err(io)?;
        let mut reply = String::new();
        let mut rd = BufReader::new(rd);
        let read = rd.read_line(&mut reply);
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .map_err(|_| io(std::io::ErrorKind::TimedOut.into()))?
            .map_err(io)?;
        let resp: Response = serde_json::from_str(&reply).map_err(|e| io(e.into()))?;
        if resp.ok {
            Ok(resp)
        } else {
            Err(LinkError::Refused(resp.error.unwrap_or_default()))
        }
    }

    /// True when a switch answers on the control socket.
    pub async fn alive(&self) -> bool {
        self.request(&Request::ShowConfig).await.is_ok()
    }

    /// Starts the switch process unless one answers already. It runs in its own session,
    /// like the VMs, so a daemon restart leaves the datapath untouched.
    pub async fn ensure_running(&self) -> Result<(), LinkError> {
        if self.alive().await {
            return Ok(());
        }
        let io = |source| LinkError::Io {
            path: self.dir.clone(),
            source,
        };
        std::fs::create_dir_all(self.dir.join("ports")).map_err(io)?;
        let _ = std::fs::remove_file(self.control_socket());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("switch.log"))
            .map_err(io)?;
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("switch")
            .arg("--control")
            .arg(self.control_socket())
            .stdin(Stdio::null())
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
        tracing::info!(pid = child.id(), "started the switch");
        // Reap it when it ends; a later daemon finds a new one through the socket.
        tokio::spawn(async move {
            let status = child.wait().await;
            tracing::warn!(?status, "switch process exited");
        });
        // Its control socket appears once it serves; poll it with a deadline.
        let deadline = Instant::now() + START_DEADLINE;
        while Instant::now() < deadline {
            if self.alive().await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(LinkError::NoStart(START_DEADLINE))
    }

    /// Makes the switch's tables exactly `config`.
    pub async fn apply(&self, config: SwitchConfig) -> Result<(), LinkError> {
        let _one = self.lock.lock().await;
        self.ensure_running().await?;
        self.request(&Request::Apply { config }).await.map(|_| ())
    }

    /// The tables the running switch holds.
    pub async fn show_config(&self) -> Result<SwitchConfig, LinkError> {
        let resp = self.request(&Request::ShowConfig).await?;
        Ok(resp.config.unwrap_or_default())
    }

    /// A tenant firewall's log entries written since the last read (each is read once).
    pub async fn firewall_log(
        &self,
        tenant: &str,
    ) -> Result<Vec<hostel_switch_proto::FirewallLogEntry>, LinkError> {
        let resp = self
            .request(&Request::FirewallLog {
                tenant: tenant.to_string(),
            })
            .await?;
        Ok(resp.log.unwrap_or_default())
    }

    pub async fn stats(&self) -> Result<SwitchStats, LinkError> {
        let resp = self.request(&Request::Stats).await?;
        Ok(resp.stats.unwrap_or_default())
    }
}

/// A stable locally-administered MAC for a network's gateway, derived from its id.
pub fn gateway_mac(network_id: &str) -> hostel_types::MacAddr {
    hostel_types::MacAddr::derived(network_id, usize::MAX)
}
