//! Running the host tools images are made with (debootstrap, chroot, mkfs, qemu-img...).
//! Every failure names the command and carries the tail of its output, because "exit status 1"
//! from a 10-minute build is useless without it.

use crate::error::{ImageError, Result};
use crate::progress::CancelToken;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Lines of output kept for an error message.
const TAIL_LINES: usize = 25;

/// Apt packages that provide each tool, for the "is it installed?" hint.
fn package_hint(program: &str) -> &'static str {
    match program {
        "debootstrap" => "apt-get install debootstrap",
        "qemu-img" => "apt-get install qemu-utils",
        "mkfs.ext4" | "e2fsck" | "resize2fs" => "apt-get install e2fsprogs",
        "mkfs.vfat" => "apt-get install dosfstools",
        "mcopy" => "apt-get install mtools",
        "unshare" | "mount" | "umount" => "apt-get install util-linux mount",
        _ => "see scripts/install-deps.sh",
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    if s.len() > 300 {
        s.truncate(300);
        s.push_str("...");
    }
    s
}

fn spawn_error(cmd: &Command, source: std::io::Error) -> ImageError {
    let program = cmd.get_program().to_string_lossy().into_owned();
    ImageError::ToolMissing {
        hint: package_hint(&program),
        program,
        source,
    }
}

/// Runs `cmd` to completion and returns its stdout; a non-zero exit is an error carrying stderr.
pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let what = describe(cmd);
    tracing::debug!(command = %what, "running");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(cmd, e))?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        if text.trim().is_empty() {
            text = String::from_utf8_lossy(&out.stdout).into_owned();
        }
        return Err(ImageError::CommandFailed {
            command: what,
            status: out.status.to_string(),
            output: tail(&text),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with its stdout and stderr merged, handing each line to `on_line` as it comes
/// (build progress is read from tool output).
pub(crate) fn stream(
    cmd: &mut Command,
    cancel: &CancelToken,
    mut on_line: impl FnMut(&str),
) -> Result<()> {
    let what = describe(cmd);
    tracing::debug!(command = %what, "running");
    let (reader, writer) = pipe().map_err(|e| spawn_error(cmd, e))?;
    let writer2 = writer.try_clone().map_err(|e| spawn_error(cmd, e))?;
    let mut child = cmd
        .stdin(Stdio::null())
        // Its own process group, so cancelling kills the tool and everything it started.
        .process_group(0)
        .stdout(writer)
        .stderr(writer2)
        .spawn()
        .map_err(|e| spawn_error(cmd, e))?;
    // The Command still holds the write ends; without dropping them the read never ends.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut last: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
    for line in BufReader::new(reader).split(b'\n') {
        let Ok(line) = line else { break };
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end();
        tracing::trace!(target: "hostel_images::tool", "{line}");
        if cancel.is_cancelled() {
            // SAFETY: signalling the process group we created.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            return Err(ImageError::Cancelled { name: what });
        }
        on_line(line);
        if last.len() == TAIL_LINES {
            last.pop_front();
        }
        last.push_back(line.to_string());
    }
    let status = child.wait().map_err(|e| spawn_error(cmd, e))?;
    if !status.success() {
        return Err(ImageError::CommandFailed {
            command: what,
            status: status.to_string(),
            output: last.into_iter().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(())
}

fn pipe() -> std::io::Result<(std::fs::File, std::fs::File)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    use std::os::fd::FromRawFd;
    // SAFETY: a fresh descriptor owned by nothing else.
    let read = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    // SAFETY: as above.
    let write = unsafe { std::fs::File::from_raw_fd(fds[1]) };
    Ok((read, write))
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    lines[start..].join("\n")
}

/// True when this process runs as root (debootstrap, chroot and mounts need it).
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
