//! Why the bench could not run (bad arguments) or could not set up a comparison point (the
//! TAP/bridge namespace, Open vSwitch's daemons).

use std::path::PathBuf;

use hostel_switch::SwitchError;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{flag} needs a value")]
    MissingValue { flag: String },
    #[error("{flag}: {value:?} is not a number")]
    BadNumber { flag: &'static str, value: String },
    #[error("unknown argument {0}")]
    UnknownArgument(String),
    #[error("unshare(CLONE_NEWNET): {0}")]
    Unshare(std::io::Error),
    #[error("opening the namespace: {0}")]
    Netns(std::io::Error),
    #[error("TAP device: {0}")]
    Tap(#[from] SwitchError),
    #[error("bridge {name}: {source}")]
    Bridge {
        name: &'static str,
        source: std::io::Error,
    },
    #[error("the namespace set-up thread panicked")]
    SetupPanicked,
    #[error("{} missing (apt-get install openvswitch-switch)", .0.display())]
    NoOvsSchema(PathBuf),
    #[error("{}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{prog}: {source}")]
    Spawn {
        prog: String,
        source: std::io::Error,
    },
    #[error("{prog} {args}: {stderr}")]
    Failed {
        prog: String,
        args: String,
        stderr: String,
    },
    #[error("port {port} never came up (ofport {ofport}); see {}", log.display())]
    PortDown {
        port: String,
        ofport: String,
        log: PathBuf,
    },
}
