//! What hostel's integration tests share: locating the guest assets (`make guest`), building
//! `hostel.run=` command lines, network namespaces that clean up after themselves, and
//! waiting for console output with a deadline instead of sleeping.

pub mod daemon;

use base64::Engine as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The guest kernel and initramfs built by `make guest`.
pub struct GuestAssets {
    pub vmlinux: PathBuf,
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
}

/// Finds the guest assets, or explains why the calling test is skipped. Under `make test`
/// (`HOSTEL_REQUIRE_GUEST=1`) missing assets are a failure, never a silent pass.
pub fn guest_assets() -> Option<GuestAssets> {
    let dir = std::env::var_os("HOSTEL_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/guest"));
    let assets = GuestAssets {
        vmlinux: dir.join("vmlinux"),
        vmlinuz: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
    };
    let qemu = which("qemu-system-x86_64");
    if assets.vmlinux.is_file() && assets.initrd.is_file() && qemu {
        return Some(assets);
    }
    let why = if qemu {
        format!(
            "guest assets missing in {} (run `make guest`)",
            dir.display()
        )
    } else {
        "qemu-system-x86_64 is not installed".to_string()
    };
    if std::env::var_os("HOSTEL_REQUIRE_GUEST").is_some() {
        panic!("{why}");
    }
    eprintln!("SKIPPED: {why}");
    None
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// `hostel.run=<base64>` for a shell command the guest init runs before powering off.
pub fn run_arg(script: &str) -> String {
    format!(
        "hostel.run={}",
        base64::engine::general_purpose::STANDARD.encode(script)
    )
}

/// True when this process may create namespaces and TAP devices.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A network namespace for one test, deleted (with everything in it) on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(tag: &str) -> Self {
        let name = format!("hostel-t-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        sh(&format!("ip netns add {name}"));
        sh(&format!("ip -n {name} link set lo up"));
        NetNs { name }
    }

    /// Runs a shell command inside the namespace, panicking with its output on failure.
    pub fn exec(&self, cmd: &str) {
        sh(&format!("ip netns exec {} sh -c '{}'", self.name, cmd));
    }

    /// Runs `f` on a thread that has entered this namespace (sockets it opens live there).
    pub fn spawn_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open netns");
            use std::os::fd::AsRawFd;
            // SAFETY: setns on a namespace fd affects only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs a shell command on the host, panicking with its output if it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A throwaway ed25519 SSH key pair in `dir` (`id_ed25519`, no passphrase, `comment` as its
/// comment): the private key's path and the public key's line. The one key helper of the
/// tests.
pub fn ssh_keypair(dir: &std::path::Path, comment: &str) -> (std::path::PathBuf, String) {
    let key = dir.join("id_ed25519");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen (openssh-client)");
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
    (key, public.trim().to_string())
}

/// Collects lines from a stream on a thread so a test can wait for one with a deadline: the
/// one console wait of the tests. A prompt (`login: `) never ends its line, so
/// [`LineWatcher::wait_for_prompt`] also looks at the text after the last newline.
pub struct LineWatcher {
    rx: mpsc::Receiver<Vec<u8>>,
    /// Bytes after the last newline so far.
    partial: Vec<u8>,
    /// Complete lines received but not yet looked at.
    pending: std::collections::VecDeque<String>,
    pub seen: Vec<String>,
}

impl LineWatcher {
    pub fn new(mut stream: impl Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        LineWatcher {
            rx,
            partial: Vec::new(),
            pending: Default::default(),
            seen: Vec::new(),
        }
    }

    /// Waits until a line containing `needle` arrives; returns it, or `None` at the deadline
    /// or the end of the stream.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait(needle, timeout, false)
    }

    /// [`LineWatcher::wait_for`], where the text after the last newline counts too: for a
    /// prompt, which waits on its own line for input. Returns that text as it is so far.
    pub fn wait_for_prompt(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait(needle, timeout, true)
    }

    fn wait(&mut self, needle: &str, timeout: Duration, prompt: bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut ended = false;
        loop {
            while let Some(line) = self.pending.pop_front() {
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return Some(line);
                }
            }
            let tail = String::from_utf8_lossy(&self.partial).replace('\r', "");
            if prompt && tail.contains(needle) {
                return Some(tail);
            }
            if ended {
                return None;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.rx.recv_timeout(left) {
                Ok(chunk) => self.partial.extend_from_slice(&chunk),
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                // The stream ended: its last line has no newline.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    ended = true;
                    if !self.partial.is_empty() {
                        self.partial.push(b'\n');
                    }
                }
            }
            while let Some(i) = self.partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.partial.drain(..=i).collect();
                let text = String::from_utf8_lossy(&line[..i]);
                self.pending
                    .push_back(text.trim_end_matches('\r').to_string());
            }
        }
    }

    /// Everything seen so far, for assertion messages.
    pub fn transcript(&self) -> String {
        let mut t = self.seen.join("\n");
        t.push('\n');
        t.push_str(&String::from_utf8_lossy(&self.partial));
        t
    }
}

/// Boot deadline for one TCG guest on a loaded 2-core machine.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn lines_are_whole_and_a_prompt_is_found_without_its_newline() {
        let (mut guest, host) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut w = LineWatcher::new(host);
        guest.write_all(b"boot\r\nHOSTEL-MARK ho").unwrap();
        guest.write_all(b"st=x\r\ndeb login: ").unwrap();
        let mark = w.wait_for("HOSTEL-MARK", Duration::from_secs(10));
        assert_eq!(mark.as_deref(), Some("HOSTEL-MARK host=x"));
        // A line-wait never returns a line before its end.
        assert_eq!(w.wait_for("login:", Duration::from_millis(200)), None);
        let prompt = w.wait_for_prompt("login:", Duration::from_secs(10));
        assert_eq!(prompt.as_deref(), Some("deb login: "));
        // At the end of the stream its last, unterminated line is a line.
        drop(guest);
        assert_eq!(
            w.wait_for("deb", Duration::from_secs(10)).as_deref(),
            Some("deb login: ")
        );
        assert_eq!(w.wait_for("more", Duration::from_secs(10)), None);
    }
}
