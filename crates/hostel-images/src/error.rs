//! Errors of the image library. Each variant carries what a user needs to act on it (the
//! image name, the file, the tool's own output) because most of them surface verbatim through
//! the daemon's API and CLI.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image name {0:?}: use 1-63 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit")]
    InvalidName(String),

    #[error("image {0:?} not found")]
    NotFound(String),

    #[error("image {name:?} already exists (built from a different recipe); delete it first or build with replace")]
    Exists { name: String },

    #[error("image {name:?} is busy: {why}")]
    Busy { name: String, why: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("`{program}` could not be started: {source} (is it installed? {hint})")]
    ToolMissing {
        program: String,
        hint: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("`{command}` failed ({status}): {output}")]
    CommandFailed {
        command: String,
        status: String,
        /// The tail of the tool's combined output: enough to see why, never megabytes.
        output: String,
    },

    #[error("this needs root: {0}")]
    NotRoot(&'static str),

    #[error("manifest {path}: {reason}")]
    BadManifest { path: PathBuf, reason: String },

    #[error("unsupported image {path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },

    #[error("corrupt image {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },

    #[error("truncated image {path}: {reason}")]
    Truncated { path: PathBuf, reason: String },

    #[error("disk size {requested} bytes is smaller than the image's {minimum} bytes")]
    DiskTooSmall { requested: u64, minimum: u64 },

    #[error("no recipe builds an image named {0:?} (known: {1})")]
    UnknownRecipe(String, String),

    #[error("invalid recipe: {0}")]
    InvalidRecipe(String),

    #[error("invalid seed configuration: {0}")]
    InvalidSeed(String),

    #[error("template {template}: {reason}")]
    Template { template: String, reason: String },

    #[error("build of {name:?} cancelled")]
    Cancelled { name: String },
}

impl ImageError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { path, source }
    }
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;
