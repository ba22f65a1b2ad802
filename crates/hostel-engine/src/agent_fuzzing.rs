//! The body of the `qga_reply` fuzz target (`fuzz/fuzz_targets/qga_reply.rs`), here so the
//! same code also runs on pseudo-random inputs in `tests/fuzz_smoke.rs` on stable.
//!
//! The input is everything a hostile guest sends on its agent channel: the first byte
//! picks what the daemon asks, the rest is the guest's side of a real [`Session`] over a
//! socket pair (closed after it, so every read ends). Whatever the bytes, the client must
//! return (no panic, no hang) and every value it accepts must be within its bounds.

use super::*;

/// The most input a run takes: it is written into the socket pair's buffer before the
/// session reads, which must hold it without the writer blocking.
pub const MAX_INPUT: usize = 64 * 1024;

/// The sync id the fuzzer's sync answers must carry (a real session's is random).
pub const FUZZ_SYNC_ID: u64 = 1;

/// Returns how many of the calls it made the client accepted (the smoke test checks that
/// valid replies are accepted, so the harness really drives the parser).
pub fn qga_reply(data: &[u8]) -> usize {
    let Some((&which, guest)) = data.split_first() else {
        return 0;
    };
    let guest = &guest[..guest.len().min(MAX_INPUT)];
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return 0;
    };
    rt.block_on(async move {
        let Ok((ours, mut theirs)) = UnixStream::pair() else {
            return 0;
        };
        // The guest's whole output, then its end: a read past it is `Closed`, not a wait.
        if theirs.write_all(guest).await.is_err() {
            return 0;
        }
        let _ = theirs.shutdown().await;
        let mut s = Session {
            stream: ours,
            buf: Vec::new(),
        };
        // Generous: the input is all there; only a bug would make a call wait.
        let d = Duration::from_secs(5);
        let mut ok = 0usize;
        let mut count = |accepted: bool| ok += usize::from(accepted);
        match which % 10 {
            0 => {
                count(s.sync(b"{}\n", FUZZ_SYNC_ID).await.is_ok());
            }
            1 => {
                if let Ok(st) = s.exec_status(1, d).await {
                    count(true);
                    assert!(st.stdout.len() <= MAX_LINE && st.stderr.len() <= MAX_LINE);
                }
            }
            2 => {
                let n = 1 + usize::from(which / 10) * 97;
                if let Ok(c) = s.file_read(1, n, d).await {
                    count(true);
                    assert!(c.data.len() <= n, "more bytes than asked for");
                }
            }
            3 => {
                if let Ok(v) = s.info(d).await {
                    count(true);
                    assert!(v.len() <= 100);
                }
                if let Ok(h) = s.host_name(d).await {
                    count(true);
                    assert!(h.len() <= 255);
                }
            }
            4 => {
                if let Ok(o) = s.os_info(d).await {
                    count(true);
                    assert!(o.pretty_name.is_none_or(|p| p.len() <= 200));
                    assert!(o.kernel_release.is_none_or(|p| p.len() <= 200));
                    assert!(o.id.is_none_or(|p| p.len() <= 64));
                }
            }
            5 => {
                if let Ok(ifs) = s.interfaces(d).await {
                    count(true);
                    assert!(ifs.len() <= 64);
                    assert!(ifs.iter().all(|i| i.ip_addresses.len() <= 64));
                }
            }
            6 => {
                let pid = s
                    .exec(
                        &ExecRequest {
                            path: "/bin/true",
                            ..Default::default()
                        },
                        d,
                    )
                    .await;
                count(pid.is_ok());
                count(s.file_open("/tmp/x", "r", d).await.is_ok());
            }
            7 => {
                count(s.fsfreeze_status(d).await.is_ok());
                count(s.fsfreeze_freeze(d).await.is_ok());
                let _ = s.fsfreeze_thaw(d).await;
            }
            8 => {
                count(s.file_write(1, b"data", d).await.is_ok());
                count(s.file_close(1, d).await.is_ok());
                let _ = s.ping(d).await;
            }
            // A sync, then the calls one operation makes over the same session.
            _ => {
                if s.sync(b"{}\n", FUZZ_SYNC_ID).await.is_ok() {
                    count(true);
                    count(s.exec(&ExecRequest::default(), d).await.is_ok());
                    count(s.exec_status(1, d).await.is_ok());
                    count(s.file_read(1, 4096, d).await.is_ok());
                }
            }
        }
        ok
    })
}
