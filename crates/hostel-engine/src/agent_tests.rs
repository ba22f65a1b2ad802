//! The agent client against a fake guest side on a Unix socket (a mock: the real agent runs
//! in Debian guests, tested in the daemon's tests). A hostile guest: garbage, floods,
//! silence, overlong lines, stale replies.

use super::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixListener;

/// What the fake agent does after reading a command.
#[derive(Clone, Copy)]
enum Guest {
    /// Answers like qemu-ga, with garbage and a stale reply before the sync's delimiter.
    Honest,
    /// Reads and never answers.
    Silent,
    /// Writes garbage without end and never a delimiter.
    Flood,
    /// Syncs, then answers a command with one endless line.
    LongLine,
    /// Syncs, then answers a command with something that is not JSON.
    Malformed,
    /// Syncs, then never answers a command.
    SilentAfterSync,
}

fn start(guest: Guest) -> (tempfile::TempDir, Agent) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qga.sock");
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s, guest));
        }
    });
    (
        dir,
        Agent::new(path).with_sync_deadline(Duration::from_millis(500)),
    )
}

async fn serve(s: UnixStream, guest: Guest) {
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        line.retain(|&b| b != 0xFF);
        let cmd: Value = match serde_json::from_slice(&line) {
            Ok(v) => v,
            Err(_) => continue,
        };
        let name = cmd["execute"].as_str().unwrap_or_default().to_owned();
        let out: Vec<u8> = match (guest, name.as_str()) {
            (Guest::Silent, _) => continue,
            (Guest::Flood, _) => loop {
                if w.write_all(&[b'x'; 65536]).await.is_err() {
                    return;
                }
            },
            (_, "guest-sync-delimited") => {
                let id = &cmd["arguments"]["id"];
                let mut v = b"garbage{\"return\": 1}\n".to_vec();
                v.push(0xFF);
                v.extend_from_slice(b"{\"return\": 42}\n");
                v.extend_from_slice(format!("{{\"return\": {id}}}\n").as_bytes());
                v
            }
            (Guest::LongLine, _) => loop {
                if w.write_all(&[b'{'; 65536]).await.is_err() {
                    return;
                }
            },
            (Guest::Malformed, _) => b"{not json\n".to_vec(),
            (Guest::SilentAfterSync, _) => continue,
            (Guest::Honest, "guest-ping") => b"{\"return\": {}}\n".to_vec(),
            (Guest::Honest, "guest-exec") => b"{\"return\": {\"pid\": 7}}\n".to_vec(),
            (Guest::Honest, "guest-exec-status") => {
                b"{\"return\": {\"exited\": true, \"exitcode\": 7, \"out-data\": \"aGk=\"}}\n"
                    .to_vec()
            }
            (Guest::Honest, _) => {
                b"{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"no\"}}\n".to_vec()
            }
        };
        if w.write_all(&out).await.is_err() {
            return;
        }
    }
}

const D: Duration = Duration::from_millis(500);

#[tokio::test]
async fn an_honest_agent_answers_after_garbage_and_stale_replies() {
    let (_d, agent) = start(Guest::Honest);
    let mut s = agent.session().await.unwrap();
    s.ping(D).await.unwrap();
    let pid = s
        .exec(
            &ExecRequest {
                path: "/bin/sh",
                args: &["-c".into(), "exit 7".into()],
                ..Default::default()
            },
            D,
        )
        .await
        .unwrap();
    assert_eq!(pid, 7);
    let st = s.exec_status(pid, D).await.unwrap();
    assert_eq!((st.exited, st.exit_code), (true, Some(7)));
    assert_eq!(st.stdout, b"hi");
    match s.fsfreeze_status(D).await {
        Err(AgentError::Refused { class, .. }) => assert_eq!(class, "CommandNotFound"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_silent_guest_is_no_agent_within_the_sync_deadline() {
    let (_d, agent) = start(Guest::Silent);
    let t = Instant::now();
    let e = agent.session().await.err().unwrap();
    assert!(matches!(e, AgentError::NoAgent(_)), "{e:?}");
    assert!(e.to_string().contains("no guest agent answers in this VM"));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[tokio::test]
async fn a_flood_is_refused_after_a_bounded_amount() {
    let (_d, agent) = start(Guest::Flood);
    let e = agent.session().await.err().unwrap();
    // Either the cap or the deadline ends it, never an unbounded read.
    assert!(
        matches!(e, AgentError::Flood { .. } | AgentError::NoAgent(_)),
        "{e:?}"
    );
}

#[tokio::test]
async fn an_endless_line_is_cut_at_the_cap_or_the_deadline() {
    let (_d, agent) = start(Guest::LongLine);
    let mut s = agent.session().await.unwrap();
    let e = s.ping(Duration::from_secs(5)).await.err().unwrap();
    assert!(
        matches!(
            e,
            AgentError::LineTooLong { .. } | AgentError::Timeout { .. }
        ),
        "{e:?}"
    );
    assert!(s.buf.len() <= MAX_LINE + 64 * 1024);
}

#[tokio::test]
async fn malformed_and_missing_replies_are_errors_that_name_the_command() {
    let (_d, agent) = start(Guest::Malformed);
    let mut s = agent.session().await.unwrap();
    let e = s.ping(D).await.err().unwrap();
    assert!(matches!(e, AgentError::Malformed { .. }), "{e:?}");
    assert!(e.to_string().contains("guest-ping"));

    let (_d, agent) = start(Guest::SilentAfterSync);
    let mut s = agent.session().await.unwrap();
    let t = Instant::now();
    let e = s.info(D).await.err().unwrap();
    assert!(matches!(e, AgentError::Timeout { .. }), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_missing_channel_says_so() {
    let agent = Agent::new("/nonexistent/qga.sock");
    let e = agent.session().await.err().unwrap();
    assert!(matches!(e, AgentError::Channel { .. }), "{e:?}");
}
