//! A running VM: launching QEMU for a spec, re-adopting one after a restart, controlling it
//! over QMP, and noticing when (and why) it ends.

use crate::accel::{self, AccelDecision, HostVirt};
use crate::error::EngineError;
use crate::exit::ExitReason;
use crate::preflight;
use crate::qemu_args::{self, NicAttachment, Plumbing};
use crate::qmp::{Qmp, QmpError, RunState};
use crate::run_dir::RunDir;
use crate::spec::{NicBackend, VmSpec};
use crate::tap;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// QEMU binary; `None` means `$HOSTEL_QEMU` or `qemu-system-x86_64` on PATH.
    pub qemu: Option<PathBuf>,
    pub run_dir: RunDir,
    /// Kill QEMU if the launching thread dies (a foreground `hostel run`). The daemon leaves
    /// this off so VMs outlive it. Launch from a thread that lives as long as the VM should.
    pub die_with_parent: bool,
    /// How long QEMU may take to open its monitor.
    pub startup_timeout: Duration,
}

impl LaunchOptions {
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        Self {
            qemu: None,
            run_dir: RunDir::new(run_dir),
            die_with_parent: false,
            startup_timeout: Duration::from_secs(30),
        }
    }
}

pub struct Vm {
    pid: i32,
    run_dir: RunDir,
    console_log: PathBuf,
    accel: Option<AccelDecision>,
    qmp: Arc<Qmp>,
    exit: watch::Receiver<Option<ExitReason>>,
}

impl Vm {
    /// Starts QEMU for `spec`, paused before the first guest instruction: the caller attaches
    /// what it wants (a console reader, say) and calls [`Vm::start`].
    pub async fn launch(spec: &VmSpec, opts: &LaunchOptions) -> Result<Vm, EngineError> {
        let accel = accel::choose(spec.accel(), &HostVirt::probe())?;
        let qemu = preflight::find_qemu(opts.qemu.as_deref())?;
        preflight::check_qemu(&qemu)?;
        let disk_formats = preflight::check_spec(spec)?;
        let mut taps = Vec::new();
        for nic in spec.nics() {
            match &nic.backend {
                NicBackend::Tap(name) => taps.push(tap::open_tap(name)?),
                NicBackend::VhostUser(path) => check_vhost_socket(path)?,
            }
        }
        for path in spec.vhost_disks() {
            check_vhost_socket(path)?;
        }
        opts.run_dir.create()?;
        let launched = spawn(spec, opts, &qemu, accel, &disk_formats, taps).await;
        if launched.is_err() {
            opts.run_dir.remove_runtime_files();
        }
        launched
    }

    /// Re-attaches to a QEMU that an earlier process launched in `run_dir`, found through its
    /// pid file.
    pub async fn adopt(run_dir: RunDir, console_log: PathBuf) -> Result<Vm, EngineError> {
        let pid = run_dir
            .read_pid()
            .ok_or_else(|| EngineError::NotRunning(run_dir.path().to_path_buf()))?;
        Self::adopt_pid(run_dir, pid, console_log).await
    }

    /// Re-attaches to QEMU `pid`, launched in `run_dir` (found by [`crate::scan::find_qemus`]
    /// when it never wrote its pid file). The process must still be that QEMU.
    pub async fn adopt_pid(
        run_dir: RunDir,
        pid: i32,
        console_log: PathBuf,
    ) -> Result<Vm, EngineError> {
        let not_running = || EngineError::NotRunning(run_dir.path().to_path_buf());
        // The pidfd first: from here on the pid cannot be reused under us.
        let pidfd = crate::scan::pidfd_open(pid).map_err(|_| not_running())?;
        if !process_alive(pid) || !is_our_qemu(pid, &run_dir) {
            return Err(not_running());
        }
        let stream = tokio::net::UnixStream::connect(run_dir.qmp_socket())
            .await
            .map_err(|e| EngineError::Qmp(QmpError::Io(e.to_string())))?;
        let qmp = Arc::new(Qmp::handshake(stream, Duration::from_secs(10)).await?);
        let (tx, exit) = watch::channel(None);
        let (q, dir) = (qmp.clone(), run_dir.clone());
        tokio::spawn(async move {
            crate::scan::wait_pidfd(pidfd, None).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), q.closed()).await;
            let reason = ExitReason::classify(None, q.last_shutdown(), String::new);
            dir.remove_runtime_files();
            let _ = tx.send(Some(reason));
        });
        Ok(Vm {
            pid,
            run_dir,
            console_log,
            accel: None,
            qmp,
            exit,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }
    pub fn run_dir(&self) -> &RunDir {
        &self.run_dir
    }
    pub fn console_log(&self) -> &Path {
        &self.console_log
    }
    /// The accelerator chosen at launch (unknown for an adopted VM).
    pub fn accel(&self) -> Option<&AccelDecision> {
        self.accel.as_ref()
    }
    pub fn qmp(&self) -> &Qmp {
        &self.qmp
    }

    /// Lets the guest run (first start, or after [`Vm::pause`]).
    pub async fn start(&self) -> Result<(), EngineError> {
        self.qmp.execute("cont", None).await?;
        Ok(())
    }
    pub async fn pause(&self) -> Result<(), EngineError> {
        self.qmp.execute("stop", None).await?;
        Ok(())
    }
    pub async fn resume(&self) -> Result<(), EngineError> {
        self.start().await
    }
    pub async fn status(&self) -> Result<RunState, EngineError> {
        Ok(self.qmp.query_status().await?)
    }
    /// Grows disk `index` (0-based, in spec order) of the running VM to `bytes`; see
    /// [`crate::live_disk::grow`].
    pub async fn grow_disk(
        &self,
        index: usize,
        format: crate::DiskFormat,
        bytes: u64,
        read_only: bool,
    ) -> Result<(), EngineError> {
        crate::live_disk::grow(&self.qmp, index, format.as_qemu(), bytes, read_only).await
    }

    /// Presses the ACPI power button; the guest decides how to shut down.
    pub async fn powerdown(&self) -> Result<(), EngineError> {
        self.qmp.execute("system_powerdown", None).await?;
        Ok(())
    }

    /// Graceful stop: the power button, then after `grace` a clean QEMU quit, then SIGKILL.
    pub async fn stop(&self, grace: Duration) -> ExitReason {
        if self.powerdown().await.is_ok() {
            if let Some(r) = self.wait_timeout(grace).await {
                return r;
            }
        }
        tracing::info!(pid = self.pid, "guest ignored power-off; quitting QEMU");
        let _ = self.qmp.execute("quit", None).await;
        if let Some(r) = self.wait_timeout(Duration::from_secs(5)).await {
            return r;
        }
        self.kill();
        self.wait().await
    }

    /// Forced stop: SIGKILL to QEMU, no questions asked.
    pub fn kill(&self) {
        if self.exit.borrow().is_none() {
            // SAFETY: plain kill(2) on the pid we launched or adopted (its exit not yet seen).
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }

    /// Waits for QEMU to end and says why.
    pub async fn wait(&self) -> ExitReason {
        let mut rx = self.exit.clone();
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(r) => r.clone(),
            Err(_) => None,
        };
        reason.unwrap_or(ExitReason::Vanished)
    }

    pub async fn wait_timeout(&self, t: Duration) -> Option<ExitReason> {
        tokio::time::timeout(t, self.wait()).await.ok()
    }

    /// A receiver that turns `Some` when QEMU ends; owned, so a caller can wait on it without
    /// borrowing the handle.
    pub fn exit_watch(&self) -> watch::Receiver<Option<ExitReason>> {
        self.exit.clone()
    }

    /// The exit reason if QEMU has already ended.
    pub fn exited(&self) -> Option<ExitReason> {
        self.exit.borrow().clone()
    }
}

async fn spawn(
    spec: &VmSpec,
    opts: &LaunchOptions,
    qemu: &Path,
    accel: AccelDecision,
    disk_formats: &[crate::spec::DiskFormat],
    taps: Vec<std::fs::File>,
) -> Result<Vm, EngineError> {
    let dir = &opts.run_dir;
    let io = |source| EngineError::RunDir {
        path: dir.path().to_path_buf(),
        source,
    };
    // hostel makes the monitor and console listeners and hands them to QEMU, so it can
    // connect at once: no polling for a socket to appear.
    let qmp_listener = std::os::unix::net::UnixListener::bind(dir.qmp_socket()).map_err(io)?;
    let console_listener =
        std::os::unix::net::UnixListener::bind(dir.console_socket()).map_err(io)?;
    let agent_listener = std::os::unix::net::UnixListener::bind(dir.agent_socket()).map_err(io)?;
    let console_log = spec
        .serial_log()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.default_console_log());
    let pidfile = dir.pidfile();
    let mut tap_iter = taps.iter();
    let nics = spec
        .nics()
        .iter()
        .map(|n| match &n.backend {
            NicBackend::Tap(_) => {
                NicAttachment::TapFd(tap_iter.next().map_or(-1, |f| f.as_raw_fd()))
            }
            NicBackend::VhostUser(p) => NicAttachment::VhostUser(p),
        })
        .collect();
    let plumbing = Plumbing {
        qmp_listener: qmp_listener.as_raw_fd(),
        console_listener: console_listener.as_raw_fd(),
        agent_listener: agent_listener.as_raw_fd(),
        console_log: &console_log,
        pidfile: &pidfile,
        disk_formats,
        nics,
    };
    let argv = qemu_args::build(spec, accel.accel, &plumbing);
    tracing::debug!(qemu = %qemu.display(), ?argv, "starting QEMU");
    let stderr = std::fs::File::create(dir.stderr_log()).map_err(io)?;

    let mut inherit: Vec<RawFd> = vec![
        qmp_listener.as_raw_fd(),
        console_listener.as_raw_fd(),
        agent_listener.as_raw_fd(),
    ];
    inherit.extend(taps.iter().map(|f| f.as_raw_fd()));
    let die_with_parent = opts.die_with_parent;
    let mut cmd = tokio::process::Command::new(qemu);
    cmd.args(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // A file, not a pipe: QEMU must be able to write after its launcher is gone.
        .stderr(stderr);
    let child_setup = move || {
        // SAFETY: setsid has no memory preconditions and is async-signal-safe.
        unsafe { libc::setsid() };
        for &fd in &inherit {
            // SAFETY: clears FD_CLOEXEC on a descriptor the parent holds open across the fork.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if die_with_parent {
            // SAFETY: PR_SET_PDEATHSIG takes a signal number; no memory is involved.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        }
        Ok(())
    };
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (setsid, fcntl, prctl) on a pre-built slice; it allocates nothing.
    unsafe { cmd.pre_exec(child_setup) };
    let mut child = cmd.spawn().map_err(EngineError::Spawn)?;
    // QEMU holds its own copies now; ours would keep a dead QEMU's sockets connectable.
    drop((qmp_listener, console_listener, agent_listener, taps));
    let pid = child.id().map_or(-1, |p| p as i32);

    let handshake = async {
        let stream = tokio::net::UnixStream::connect(dir.qmp_socket())
            .await
            .map_err(|e| QmpError::Io(e.to_string()))?;
        Qmp::handshake(stream, opts.startup_timeout).await
    };
    let qmp = match handshake.await {
        Ok(q) => Arc::new(q),
        Err(e) => {
            let status = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
                Ok(s) => s.ok(),
                Err(_) => {
                    let _ = child.kill().await;
                    None
                }
            };
            return Err(startup_failure(spec, dir, status, e));
        }
    };

    let (tx, exit) = watch::channel(None);
    let (q, d) = (qmp.clone(), dir.clone());
    tokio::spawn(async move {
        let status = child.wait().await.ok();
        // The reader sees EOF only after every line before it, so the SHUTDOWN event (if
        // any) has been recorded once `closed` resolves.
        let _ = tokio::time::timeout(Duration::from_secs(2), q.closed()).await;
        let reason = ExitReason::classify(status, q.last_shutdown(), || d.stderr_tail());
        d.remove_runtime_files();
        let _ = tx.send(Some(reason));
    });
    Ok(Vm {
        pid,
        run_dir: dir.clone(),
        console_log,
        accel: Some(accel),
        qmp,
        exit,
    })
}

/// Turns QEMU's startup complaint into the error a user can act on.
fn startup_failure(
    spec: &VmSpec,
    dir: &RunDir,
    status: Option<std::process::ExitStatus>,
    qmp_error: QmpError,
) -> EngineError {
    let stderr = std::fs::read_to_string(dir.stderr_log()).unwrap_or_default();
    if stderr.contains("\"write\" lock") {
        if let Some(disk) = spec
            .disks()
            .iter()
            .find(|d| stderr.contains(&*d.path.to_string_lossy()))
        {
            return EngineError::DiskInUse(disk.path.clone());
        }
    }
    let tail = dir.stderr_tail();
    match (status, tail.is_empty()) {
        (Some(_), false) => EngineError::QemuFailed(tail),
        (Some(st), true) => EngineError::QemuFailed(format!("exited with {st} before starting")),
        (None, _) => EngineError::Qmp(qmp_error),
    }
}

fn check_vhost_socket(path: &Path) -> Result<(), EngineError> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_socket() => Ok(()),
        Ok(_) => Err(EngineError::BadFile {
            what: "vhost-user socket",
            path: path.to_path_buf(),
            reason: "not a socket".into(),
        }),
        Err(e) => Err(EngineError::BadFile {
            what: "vhost-user socket",
            path: path.to_path_buf(),
            reason: format!("{e} (is the backend running?)"),
        }),
    }
}

/// True if `pid` exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the command name's closing parenthesis.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Guards against pid reuse: the process must be a QEMU started with this run directory.
pub(crate) fn is_our_qemu(pid: i32, dir: &RunDir) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let needle = dir.pidfile();
    let needle = needle.as_os_str().as_encoded_bytes();
    cmdline.windows(needle.len()).any(|w| w == needle)
}
