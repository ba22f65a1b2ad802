//! What can be wrong with a guest's ring or chain. Device crates map these to their own
//! reasons (the switch to its per-port drop counters).

/// A descriptor chain or ring the device refuses. Each names what the guest got wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("descriptor index {index} outside a table of {size}")]
    IndexOutOfRange { index: u16, size: u16 },
    #[error("chain longer than its table (a loop) or than {max} descriptors", max = crate::MAX_CHAIN_DESCS)]
    ChainTooLong,
    #[error("indirect descriptor of {len} bytes (nested, empty or not whole descriptors)")]
    BadIndirect { len: u32 },
    #[error("buffer at {addr:#x} of {len} bytes is not inside guest memory")]
    OutsideMemory { addr: u64, len: u64 },
    #[error("descriptor writable by the device where a readable one was expected, or the reverse")]
    WrongDirection,
    #[error("chain splits into more than {max} segments", max = crate::MAX_SEGS)]
    TooManySegments,
    #[error("chain holds more than {max} bytes")]
    TooLong { max: usize },
    #[error("queue not ready, of invalid size, or its rings not inside aligned guest memory")]
    BadRing,
}

/// A dirty-page log that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(
        "log of {size} bytes at offset {offset}: offset must be 8-byte aligned and size non-zero"
    )]
    BadLayout { size: u64, offset: u64 },
    #[error("log file of {file_len} bytes is shorter than the {needed} bytes to map")]
    FileTooShort { file_len: u64, needed: u64 },
    #[error("log file not sealed against shrinking (F_SEAL_SHRINK): it could fault the device")]
    NotSealed,
    #[error("inspecting the log file: {0}")]
    Io(#[from] std::io::Error),
    #[error("mapping the log: {0}")]
    Map(#[from] vm_memory::mmap::MmapRegionError),
}
