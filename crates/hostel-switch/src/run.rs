//! The blocking entry point behind `hostel switch`.

use std::path::PathBuf;

use crate::config::SwitchConfig;
use crate::error::SwitchError;
use crate::switch::Switch;

/// Options of [`run`].
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Unix socket for the JSON-lines control protocol ([`crate::control`]).
    pub control_socket: PathBuf,
    /// Optional JSON [`SwitchConfig`] applied before the control socket opens, so a
    /// supervisor can restart the switch with its last known tables.
    pub config: Option<PathBuf>,
}

/// Runs the switch until a `shutdown` control request, then tears down every port socket
/// and uplink.
pub fn run(opts: RunOptions) -> Result<(), SwitchError> {
    raise_fd_limit();
    // Every tenant edge runs its firewall (rules and translations from the config's edges).
    let sw = Switch::with_edge_filters(
        crate::datapath::pipeline::Pipeline::new(),
        crate::datapath::firewall::firewall_filters(),
    );
    if let Some(path) = &opts.config {
        let text = std::fs::read_to_string(path).map_err(|source| SwitchError::ReadConfig {
            path: path.clone(),
            source,
        })?;
        let cfg: SwitchConfig =
            serde_json::from_str(&text).map_err(|source| SwitchError::ParseConfig {
                path: path.clone(),
                source,
            })?;
        sw.apply(&cfg)?;
    }
    tracing::info!(control = %opts.control_socket.display(), "hostel-switch running");
    let r = crate::control::serve(sw.clone(), &opts.control_socket);
    sw.shutdown();
    r
}

/// Every connected NIC holds a dozen descriptors (socket, relay, epoll, eventfds, guest
/// memory files): the default soft limit of 1024 would cap a host at a few dozen VMs, so the
/// switch takes all the host allows.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the live struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the fd limit");
        return;
    }
    if lim.rlim_cur >= lim.rlim_max {
        return;
    }
    let old = lim.rlim_cur;
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot raise the fd limit");
        return;
    }
    tracing::info!(from = old, to = lim.rlim_max, "raised the open-file limit");
}

#[cfg(test)]
mod tests {
    fn soft_and_hard() -> (u64, u64) {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into the live struct it is given.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        (lim.rlim_cur, lim.rlim_max)
    }

    /// A switch left at a soft limit below the hard one serves fewer VMs than the host
    /// allows; before the fix it stayed at whatever it inherited.
    #[test]
    fn the_fd_limit_is_raised_to_the_hard_limit() {
        let (_, hard) = soft_and_hard();
        let low = libc::rlimit {
            rlim_cur: 1024.min(hard),
            rlim_max: hard,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
        super::raise_fd_limit();
        assert_eq!(soft_and_hard(), (hard, hard));
    }
}
