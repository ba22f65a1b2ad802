//! `vm file push|pull`: files into and out of a guest through its agent's
//! `guest-file-open/read/write/close`, in chunks, so the daemon holds a few MiB whatever
//! the size.
//!
//! A push writes to a hidden temporary name in the target's directory and only renames it
//! over the target (`mv` through `guest-exec`, atomic within one filesystem) once every
//! byte is written, its mode and owner are set (QGA has no chmod or chown: `chmod` and
//! `chown` through `guest-exec`) and the guest's own `sha256sum` agrees with the daemon's
//! over what it sent; any failure removes the temporary file, so a failed push leaves the
//! target as it was. A pull asks the guest for the file's size and SHA-256 first, streams
//! it, and cuts the stream short if the bytes read do not hash to the guest's sum (the
//! file changed while it was read, or the channel lost bytes).

use super::agent::{AgentUse, Channel, GuestAgent, CALL_DEADLINE};
use super::DaemonError;
use hostel_api::{FilePull, FilePush, FileTransferView};
use hostel_engine::agent::{random_id, ExecRequest};
use hostel_state::TenantId;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Bytes per `guest-file-write`/`guest-file-read`: their base64 stays far under the agent
/// client's line cap and qemu-ga's token limit.
const CHUNK: usize = 1 << 20;
/// Pulled chunks queued for a slow HTTP client before reading from the guest waits.
pub const PULL_QUEUE: usize = 4;
/// The longest path accepted (Linux's PATH_MAX).
const MAX_PATH: usize = 4096;
/// A helper command in the guest (chmod, sha256sum, mv) gets this long, plus time for
/// hashing the file at a slow guest's pace.
const HELPER_BASE: Duration = Duration::from_secs(30);
const HASH_BYTES_PER_SEC: u64 = 20 << 20;

/// What the guest's helper script exits with, each a distinct failure.
const EXIT_NO_FILE: i32 = 20;
const EXIT_NOT_REGULAR: i32 = 21;
const EXIT_CHMOD: i32 = 22;
const EXIT_CHOWN: i32 = 23;
const EXIT_MISMATCH: i32 = 24;
const EXIT_MV: i32 = 25;

/// A push's checked parameters.
struct CheckedPush {
    path: String,
    dir: String,
    mode: Option<String>,
    owner: Option<String>,
}

/// An absolute path without NUL, `.` or `..` components, not a directory's (`/x/`).
pub fn check_path(path: &str) -> Result<(), DaemonError> {
    let bad = |why: &str| DaemonError::invalid("path", format!("{path:?}: {why}"));
    if path.contains('\0') {
        return Err(bad("contains NUL"));
    }
    if !path.starts_with('/') {
        return Err(bad("not absolute (it must start with /)"));
    }
    if path.len() > MAX_PATH {
        return Err(bad("longer than 4096 bytes"));
    }
    if path.ends_with('/') {
        return Err(bad("names a directory, not a file"));
    }
    if path.split('/').any(|c| c == "." || c == "..") {
        return Err(bad("has a . or .. component"));
    }
    Ok(())
}

fn check_push(p: &FilePush) -> Result<CheckedPush, DaemonError> {
    check_path(&p.path)?;
    let mode = match &p.mode {
        None => None,
        Some(m) => {
            let ok = !m.is_empty()
                && m.len() <= 5
                && u32::from_str_radix(m, 8).is_ok_and(|v| v <= 0o7777);
            if !ok {
                return Err(DaemonError::invalid(
                    "mode",
                    format!("{m:?} is not octal permission bits (0644, 755)"),
                ));
            }
            Some(m.clone())
        }
    };
    let owner = match (p.uid, p.gid) {
        (None, None) => None,
        (Some(u), None) => Some(u.to_string()),
        (None, Some(g)) => Some(format!(":{g}")),
        (Some(u), Some(g)) => Some(format!("{u}:{g}")),
    };
    // `check_path` leaves at least "/" before the last component.
    let cut = p.path.rfind('/').unwrap_or(0);
    let dir = if cut == 0 {
        "/".to_owned()
    } else {
        p.path[..cut].to_owned()
    };
    Ok(CheckedPush {
        path: p.path.clone(),
        dir,
        mode,
        owner,
    })
}

fn too_large(max: u64) -> DaemonError {
    DaemonError::TooLarge {
        field: "max_file_bytes",
        message: format!(
            "the file is larger than this tenant's limit of {max} bytes (tenant agent \
             setting `max_file_bytes`)"
        ),
    }
}

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A 64-hex-digit SHA-256 at the start of `sha256sum`'s output line.
fn parse_sum(out: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(out).ok()?;
    let sum = s.split_whitespace().next()?;
    (sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| sum.to_ascii_lowercase())
}

/// A helper command's end in the guest.
struct Helper {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs `sh -c script` with `args` in the guest and waits for it (bounded by `deadline`;
/// its output is small and comes back in qemu-ga's own capture).
async fn helper(
    ch: &Channel,
    script: &str,
    args: &[&str],
    deadline: Duration,
) -> Result<Helper, DaemonError> {
    let mut argv = vec!["-c".to_owned(), script.to_owned(), "hostel-file".to_owned()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let pid = {
        let (_g, mut s) = ch.session().await?;
        s.exec(
            &ExecRequest {
                path: "/bin/sh",
                args: &argv,
                ..Default::default()
            },
            CALL_DEADLINE,
        )
        .await?
    };
    let end = Instant::now() + deadline;
    let mut poll = Duration::from_millis(10);
    loop {
        {
            let (_g, mut s) = ch.session().await?;
            let st = s.exec_status(pid, CALL_DEADLINE).await?;
            if st.exited {
                return Ok(Helper {
                    code: st.exit_code,
                    stdout: st.stdout,
                    stderr: st.stderr,
                });
            }
        }
        if Instant::now() >= end {
            return Err(DaemonError::Agent(
                hostel_engine::agent::AgentError::Timeout {
                    command: "guest-exec (file helper)",
                    deadline,
                },
            ));
        }
        tokio::time::sleep(poll).await;
        poll = (poll * 2).min(Duration::from_millis(250));
    }
}

fn helper_deadline(size: u64) -> Duration {
    HELPER_BASE + Duration::from_secs(size / HASH_BYTES_PER_SEC)
}

fn stderr_text(h: &Helper) -> String {
    let s = String::from_utf8_lossy(&h.stderr);
    s.trim().chars().take(500).collect()
}

/// Sets mode and owner, hashes, and renames over the target only when the hash is the
/// daemon's: `$1` temporary, `$2` target, `$3` mode, `$4` owner, `$5` the daemon's sum.
/// The temporary file is removed on every failure.
const FINISH_PUSH: &str = r#"t=$1; p=$2; m=$3; o=$4; want=$5
fail() { rm -f -- "$t"; exit "$1"; }
if [ -n "$m" ]; then chmod -- "$m" "$t" || fail 22; fi
if [ -n "$o" ]; then chown -- "$o" "$t" || fail 23; fi
if command -v sha256sum >/dev/null 2>&1; then
  s=$(sha256sum < "$t") || fail 24
  s=${s%% *}
  echo "$s"
  [ "$s" = "$want" ] || fail 24
fi
mv -f -- "$t" "$p" || fail 25"#;

/// `$1` must be a regular file: its size, then its SHA-256 if the guest can compute one.
const STAT_PULL: &str = r#"p=$1
[ -e "$p" ] || exit 20
[ -f "$p" ] || exit 21
stat -c %s -- "$p" || exit 21
if command -v sha256sum >/dev/null 2>&1; then sha256sum < "$p"; fi"#;

/// A pull under way: what the guest said of the file, and its content to stream.
pub struct PullRun {
    pub size: u64,
    pub guest_sha256: Option<String>,
    ch: Channel,
    handle: i64,
    max: u64,
}

impl GuestAgent<'_> {
    /// Pushes `body` (at most the tenant's `max_file_bytes`; `declared` is the request's
    /// Content-Length if it gave one) to `p.path` in VM `name`'s guest.
    pub async fn push<S, E>(
        &self,
        tenant: TenantId,
        name: &str,
        p: &FilePush,
        declared: Option<u64>,
        body: S,
    ) -> Result<FileTransferView, DaemonError>
    where
        S: futures_util::Stream<Item = Result<axum::body::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let checked = check_push(p)?;
        let (_, ch, settings) = self.channel(tenant, name, AgentUse::Files).await?;
        let max = settings.max_file_bytes;
        if declared.is_some_and(|n| n > max) {
            return Err(too_large(max));
        }
        let tmp = format!(
            "{}/.hostel-push-{:012x}.tmp",
            checked.dir.trim_end_matches('/'),
            random_id()
        );
        let handle = {
            let (_g, mut s) = ch.session().await?;
            s.file_open(&tmp, "w", CALL_DEADLINE).await?
        };
        let written = write_body(&ch, handle, body, max).await;
        let closed = match ch.session().await {
            Ok((_g, mut s)) => s
                .file_close(handle, CALL_DEADLINE)
                .await
                .map_err(Into::into),
            Err(e) => Err(e),
        };
        let (size, sum) = match (written, closed) {
            (Ok(w), Ok(())) => w,
            (Err(e), _) | (Ok(_), Err(e)) => {
                remove(&ch, &tmp).await;
                return Err(e);
            }
        };
        let h = helper(
            &ch,
            FINISH_PUSH,
            &[
                &tmp,
                &checked.path,
                checked.mode.as_deref().unwrap_or(""),
                checked.owner.as_deref().unwrap_or(""),
                &sum,
            ],
            helper_deadline(size),
        )
        .await;
        let h = match h {
            Ok(h) => h,
            Err(e) => {
                remove(&ch, &tmp).await;
                return Err(e);
            }
        };
        let guest_sha256 = parse_sum(&h.stdout);
        match h.code {
            Some(0) => {}
            Some(EXIT_CHMOD) => {
                return Err(DaemonError::invalid(
                    "mode",
                    format!("chmod in the guest failed: {}", stderr_text(&h)),
                ))
            }
            Some(EXIT_CHOWN) => {
                return Err(DaemonError::invalid(
                    "uid",
                    format!("chown in the guest failed: {}", stderr_text(&h)),
                ))
            }
            Some(EXIT_MISMATCH) => {
                return Err(DaemonError::conflict(
                    None,
                    format!(
                        "the guest's SHA-256 of the written file ({}) is not the daemon's \
                         ({sum}); the file was removed",
                        guest_sha256.as_deref().unwrap_or("none")
                    ),
                ))
            }
            Some(EXIT_MV) => {
                return Err(DaemonError::invalid(
                    "path",
                    format!(
                        "cannot rename the file into {:?} in the guest: {}",
                        checked.path,
                        stderr_text(&h)
                    ),
                ))
            }
            other => {
                remove(&ch, &tmp).await;
                return Err(DaemonError::conflict(
                    None,
                    format!(
                        "finishing the file in the guest failed (exit {other:?}): {}",
                        stderr_text(&h)
                    ),
                ));
            }
        }
        Ok(FileTransferView {
            path: checked.path,
            size,
            sha256: sum,
            guest_sha256,
            mode: checked.mode,
            uid: p.uid,
            gid: p.gid,
        })
    }

    /// Asks the guest for `p.path`'s size and SHA-256 and opens it for [`PullRun::run`].
    pub async fn pull_start(
        &self,
        tenant: TenantId,
        name: &str,
        p: &FilePull,
    ) -> Result<PullRun, DaemonError> {
        check_path(&p.path)?;
        let (_, ch, settings) = self.channel(tenant, name, AgentUse::Files).await?;
        let max = settings.max_file_bytes;
        let h = helper(&ch, STAT_PULL, &[&p.path], helper_deadline(max)).await?;
        match h.code {
            Some(0) => {}
            Some(EXIT_NO_FILE) => {
                return Err(DaemonError::NotFound {
                    kind: "file in the guest",
                    name: p.path.clone(),
                })
            }
            Some(EXIT_NOT_REGULAR) => {
                return Err(DaemonError::invalid(
                    "path",
                    format!("{:?} is not a regular file in the guest", p.path),
                ))
            }
            other => {
                return Err(DaemonError::conflict(
                    None,
                    format!(
                        "looking at the file in the guest failed (exit {other:?}): {}",
                        stderr_text(&h)
                    ),
                ))
            }
        }
        let out = String::from_utf8_lossy(&h.stdout);
        let mut lines = out.lines();
        let size: u64 = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| {
                DaemonError::conflict(None, "the guest's stat printed no size for the file")
            })?;
        if size > max {
            return Err(too_large(max));
        }
        let guest_sha256 = lines.next().and_then(|l| parse_sum(l.as_bytes()));
        let handle = {
            let (_g, mut s) = ch.session().await?;
            s.file_open(&p.path, "r", CALL_DEADLINE).await?
        };
        Ok(PullRun {
            size,
            guest_sha256,
            ch,
            handle,
            max,
        })
    }
}

/// Writes the body in [`CHUNK`]s; its size and SHA-256 (hex).
async fn write_body<S, E>(
    ch: &Channel,
    handle: i64,
    mut body: S,
    max: u64,
) -> Result<(u64, String), DaemonError>
where
    S: futures_util::Stream<Item = Result<axum::body::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    use futures_util::StreamExt;
    let mut hash = Sha256::new();
    let mut total = 0u64;
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
    loop {
        let next = body.next().await;
        let done = next.is_none();
        if let Some(part) = next {
            let part = part.map_err(|e| {
                DaemonError::invalid("body", format!("the upload was cut short: {e}"))
            })?;
            total += part.len() as u64;
            if total > max {
                return Err(too_large(max));
            }
            hash.update(&part);
            buf.extend_from_slice(&part);
        }
        // Whole chunks go out as they fill; the rest with the body's end.
        while buf.len() >= CHUNK || (done && !buf.is_empty()) {
            let n = buf.len().min(CHUNK);
            {
                let (_g, mut s) = ch.session().await?;
                s.file_write(handle, &buf[..n], CALL_DEADLINE).await?;
            }
            buf.drain(..n);
        }
        if done {
            return Ok((total, hex(hash.finalize())));
        }
    }
}

/// Best effort: a failure leaves a hidden `.hostel-push-*.tmp` in the guest, logged.
async fn remove(ch: &Channel, tmp: &str) {
    if let Err(e) = helper(ch, r#"rm -f -- "$1""#, &[tmp], HELPER_BASE).await {
        tracing::warn!(error = %e, file = tmp, "removing a failed push's file in the guest failed");
    }
}

/// Why a pull's stream was cut short.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Agent(#[from] DaemonError),
    #[error("the file grew over the tenant's limit of {0} bytes while it was read")]
    TooLarge(u64),
    #[error(
        "the bytes read ({read} bytes, SHA-256 {got}) are not the file the guest hashed \
         (SHA-256 {want}): it changed while it was read"
    )]
    Mismatch {
        read: u64,
        got: String,
        want: String,
    },
}

impl PullRun {
    /// Reads the file into `tx` chunk by chunk; the last item is an error if the content
    /// does not check out. A closed `tx` (the client left) stops the reading.
    pub async fn run(self, tx: mpsc::Sender<Result<axum::body::Bytes, PullError>>) {
        let r = self.read(&tx).await;
        if let Ok((_g, mut s)) = self.ch.session().await {
            let _ = s.file_close(self.handle, CALL_DEADLINE).await;
        }
        if let Err(e) = r {
            tracing::warn!(error = %e, "a file pull was cut short");
            let _ = tx.send(Err(e)).await;
        }
    }

    async fn read(
        &self,
        tx: &mpsc::Sender<Result<axum::body::Bytes, PullError>>,
    ) -> Result<(), PullError> {
        let mut hash = Sha256::new();
        let mut total = 0u64;
        loop {
            let chunk = {
                let (_g, mut s) = self.ch.session().await?;
                s.file_read(self.handle, CHUNK, CALL_DEADLINE)
                    .await
                    .map_err(DaemonError::from)?
            };
            total += chunk.data.len() as u64;
            if total > self.max {
                return Err(PullError::TooLarge(self.max));
            }
            let last = chunk.eof || chunk.data.is_empty();
            if !chunk.data.is_empty() {
                hash.update(&chunk.data);
                if tx.send(Ok(chunk.data.into())).await.is_err() {
                    return Ok(());
                }
            }
            if last {
                break;
            }
        }
        let got = hex(hash.finalize());
        match &self.guest_sha256 {
            Some(want) if *want != got => Err(PullError::Mismatch {
                read: total,
                got,
                want: want.clone(),
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(r: Result<CheckedPush, DaemonError>) -> String {
        match r {
            Err(DaemonError::Invalid { field, .. }) => field,
            other => panic!("{:?}", other.map(|c| c.path)),
        }
    }

    #[test]
    fn bad_paths_and_modes_name_their_field() {
        let push = |path: &str, mode: Option<&str>| FilePush {
            path: path.into(),
            mode: mode.map(Into::into),
            ..Default::default()
        };
        for bad in [
            "",
            "relative/file",
            "/a\0b",
            "/dir/",
            "/a/../etc/passwd",
            "/a/./b",
        ] {
            assert_eq!(field(check_push(&push(bad, None))), "path", "{bad:?}");
        }
        assert_eq!(
            field(check_push(&push(&format!("/{}", "x".repeat(5000)), None))),
            "path"
        );
        for bad in ["", "9", "0o644", "77777", "-1", "abc", "10000"] {
            assert_eq!(field(check_push(&push("/f", Some(bad)))), "mode", "{bad:?}");
        }
        let ok = check_push(&FilePush {
            path: "/etc/motd".into(),
            mode: Some("0640".into()),
            uid: Some(1000),
            gid: Some(100),
        })
        .unwrap();
        assert_eq!(ok.dir, "/etc");
        assert_eq!(ok.owner.as_deref(), Some("1000:100"));
        assert_eq!(check_push(&push("/top", None)).unwrap().dir, "/");
        let gid_only = FilePush {
            gid: Some(5),
            ..push("/f", None)
        };
        assert_eq!(check_push(&gid_only).unwrap().owner.as_deref(), Some(":5"));
    }

    #[test]
    fn sums_are_parsed_only_when_they_are_sums() {
        let s = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            parse_sum(format!("{s}  -\n").as_bytes()).as_deref(),
            Some(s)
        );
        assert_eq!(parse_sum(s.to_uppercase().as_bytes()).as_deref(), Some(s));
        for bad in ["", "abc  -", "zz", &s[..63], &format!("{s}0")] {
            assert_eq!(parse_sum(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(parse_sum(&[0xff, 0xfe]), None);
        assert_eq!(hex(Sha256::digest(b"")), s);
    }
}
