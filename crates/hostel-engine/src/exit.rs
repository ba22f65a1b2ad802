//! Why a VM stopped, from what the engine saw: the process's wait status and the last
//! `SHUTDOWN` event QEMU sent before closing QMP.

use crate::qmp::ShutdownEvent;
use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ExitReason {
    /// The guest powered itself off (or answered the ACPI power button).
    GuestPoweroff,
    /// The guest kernel panicked.
    GuestPanic,
    /// The host ended it cleanly: QMP `quit`, or SIGTERM/SIGINT to QEMU.
    HostStop { cause: String },
    /// QEMU was killed by a signal it could not handle.
    Killed { signal: i32 },
    /// QEMU failed: a non-zero exit, with the tail of its error output.
    Failed { code: i32, detail: String },
    /// The process vanished while no parent was watching (after a daemon restart) and sent no
    /// SHUTDOWN event: killed or crashed.
    Vanished,
}

impl ExitReason {
    pub(crate) fn classify(
        status: Option<std::process::ExitStatus>,
        shutdown: Option<ShutdownEvent>,
        stderr_tail: impl FnOnce() -> String,
    ) -> Self {
        use std::os::unix::process::ExitStatusExt;
        let from_event = |ev: &ShutdownEvent| match ev.reason.as_str() {
            "guest-panic" => ExitReason::GuestPanic,
            _ if ev.guest => ExitReason::GuestPoweroff,
            cause => ExitReason::HostStop {
                cause: cause.to_string(),
            },
        };
        match (status, shutdown) {
            (Some(st), ev) if st.signal().is_some() => match ev {
                Some(ev) => from_event(&ev),
                None => ExitReason::Killed {
                    signal: st.signal().unwrap_or(0),
                },
            },
            (Some(st), ev) if st.code() != Some(0) => match ev {
                Some(ev) if ev.reason == "guest-panic" => ExitReason::GuestPanic,
                _ => ExitReason::Failed {
                    code: st.code().unwrap_or(-1),
                    detail: stderr_tail(),
                },
            },
            (_, Some(ev)) => from_event(&ev),
            (Some(_), None) => ExitReason::HostStop {
                cause: "exited".into(),
            },
            (None, None) => ExitReason::Vanished,
        }
    }

    /// A stop that loses nothing: what the guest or the operator asked for.
    pub fn is_clean(&self) -> bool {
        matches!(
            self,
            ExitReason::GuestPoweroff | ExitReason::HostStop { .. }
        )
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::GuestPoweroff => f.write_str("guest powered off"),
            ExitReason::GuestPanic => f.write_str("guest kernel panicked"),
            ExitReason::HostStop { cause } => write!(f, "stopped by the host ({cause})"),
            ExitReason::Killed { signal } => {
                let name = nix::sys::signal::Signal::try_from(*signal)
                    .map(|s| s.as_str())
                    .unwrap_or("unknown signal");
                write!(f, "QEMU killed by signal {signal} ({name})")
            }
            ExitReason::Failed { code, detail } => {
                write!(f, "QEMU failed with status {code}: {detail}")
            }
            ExitReason::Vanished => {
                f.write_str("QEMU disappeared without a shutdown event (killed or crashed)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    fn ev(guest: bool, reason: &str) -> Option<ShutdownEvent> {
        Some(ShutdownEvent {
            guest,
            reason: reason.into(),
        })
    }

    #[test]
    fn classifies_the_usual_endings() {
        let ok = Some(ExitStatus::from_raw(0));
        let killed = Some(ExitStatus::from_raw(9));
        let failed = Some(ExitStatus::from_raw(1 << 8));
        let none = String::new;
        assert_eq!(
            ExitReason::classify(ok, ev(true, "guest-shutdown"), none),
            ExitReason::GuestPoweroff
        );
        assert_eq!(
            ExitReason::classify(killed, None, none),
            ExitReason::Killed { signal: 9 }
        );
        assert!(matches!(
            ExitReason::classify(failed, None, || "boom".into()),
            ExitReason::Failed { code: 1, .. }
        ));
        assert_eq!(
            ExitReason::classify(ok, ev(false, "host-qmp-quit"), none),
            ExitReason::HostStop {
                cause: "host-qmp-quit".into()
            }
        );
        assert_eq!(ExitReason::classify(None, None, none), ExitReason::Vanished);
        assert!(ExitReason::Killed { signal: 9 }
            .to_string()
            .contains("SIGKILL"));
    }
}
