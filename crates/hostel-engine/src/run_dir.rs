//! A VM's run directory: its sockets, pid file and logs, found again by path after a restart.

use crate::error::EngineError;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Creates the directory (0700: its sockets control the VM). Refuses a directory in which
    /// a QEMU still runs, so two VMs never share one.
    pub(crate) fn create(&self) -> Result<(), EngineError> {
        let io = |source| EngineError::RunDir {
            path: self.path.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .map_err(io)?;
        if let Some(pid) = self.read_pid() {
            // A live process under a reused pid is not ours and does not block the start.
            if crate::vm::process_alive(pid) && crate::vm::is_our_qemu(pid, self) {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("a QEMU (pid {pid}) already runs here"),
                )));
            }
        }
        for stale in [
            self.qmp_socket(),
            self.console_socket(),
            self.agent_socket(),
            self.pidfile(),
        ] {
            match std::fs::remove_file(&stale) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
                _ => {}
            }
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn qmp_socket(&self) -> PathBuf {
        self.path.join("qmp.sock")
    }
    /// The serial console; connect to it for an interactive session.
    pub fn console_socket(&self) -> PathBuf {
        self.path.join("console.sock")
    }
    /// The guest agent's virtio-serial port (`org.qemu.guest_agent.0`), QEMU's end of it.
    /// One client at a time: the daemon's agent client holds it for one call.
    pub fn agent_socket(&self) -> PathBuf {
        self.path.join("qga.sock")
    }
    pub fn default_console_log(&self) -> PathBuf {
        self.path.join("console.log")
    }
    pub fn pidfile(&self) -> PathBuf {
        self.path.join("qemu.pid")
    }
    pub fn stderr_log(&self) -> PathBuf {
        self.path.join("qemu.stderr")
    }

    pub fn read_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.pidfile())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Last lines of QEMU's error output, for failure messages.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(self.stderr_log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = &lines[lines.len().saturating_sub(3)..];
        tail.join("; ")
    }

    /// The console log opened at its last `n` bytes (`None` if the VM never had one): the log
    /// spans every boot and grows without bound, so readers start near its end.
    pub fn console_tail(&self, n: u64) -> std::io::Result<Option<std::fs::File>> {
        use std::io::{Seek, SeekFrom};
        let mut f = match std::fs::File::open(self.default_console_log()) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(n)))?;
        Ok(Some(f))
    }

    /// Removes the sockets and pid file of a stopped VM; logs stay for the post-mortem.
    pub fn remove_runtime_files(&self) {
        for f in [
            self.qmp_socket(),
            self.console_socket(),
            self.agent_socket(),
            self.pidfile(),
        ] {
            let _ = std::fs::remove_file(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn console_tail_reads_only_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        assert!(run.console_tail(4).unwrap().is_none());
        std::fs::write(run.default_console_log(), b"boot 1\nboot 2\n").unwrap();
        let mut text = String::new();
        let mut f = run.console_tail(7).unwrap().unwrap();
        f.read_to_string(&mut text).unwrap();
        assert_eq!(text, "boot 2\n");
        text.clear();
        let mut f = run.console_tail(1 << 20).unwrap().unwrap();
        f.read_to_string(&mut text).unwrap();
        assert_eq!(text, "boot 1\nboot 2\n");
    }
}
