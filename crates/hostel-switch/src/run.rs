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
    let sw = Switch::new();
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
