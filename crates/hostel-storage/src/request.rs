//! virtio-blk requests parsed from a descriptor chain: pure and bounded, so it can be fuzzed
//! (`fuzz/fuzz_targets/blk_request.rs`). Everything here comes from the guest; a request
//! that is wrong fails alone, with the status the spec asks for (IOERR for a bad request,
//! UNSUPP for an unknown or unsupported one) if the chain has somewhere to put a status.
//!
//! The chain is read as one byte stream, however the guest split it into descriptors: a
//! 16-byte device-readable header, then the data, then one device-writable status byte.

/// virtio-blk request types (virtio 1.2, 5.2.6).
pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
pub const T_DISCARD: u32 = 11;
pub const T_WRITE_ZEROES: u32 = 13;

pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

pub const SECTOR: u64 = 512;
/// Descriptors per chain: `SEG_MAX` data segments plus header and status (what we offer in
/// the config space; a longer chain is refused).
pub const SEG_MAX: u32 = 126;
pub const MAX_CHAIN: usize = SEG_MAX as usize + 2;
/// Largest data segment (`size_max` in the config).
pub const SIZE_MAX: u32 = 256 * 1024;
/// Largest IN/OUT request: what SEG_MAX segments of SIZE_MAX bytes can hold.
pub const MAX_IO_BYTES: u64 = SEG_MAX as u64 * SIZE_MAX as u64;
/// DISCARD / WRITE_ZEROES: segments per request and sectors per segment (config space).
pub const MAX_DISCARD_SEG: u32 = 16;
pub const MAX_DISCARD_SECTORS: u32 = 1 << 22;
/// GET_ID: the serial is at most this long.
pub const ID_BYTES: usize = 20;
const HEADER: u64 = 16;
const UNMAP: u32 = 1;

/// One descriptor as read from the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub writable: bool,
}

/// A byte range of guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
}

/// A sector range of a DISCARD or WRITE_ZEROES request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub sector: u64,
    pub sectors: u32,
    pub unmap: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read `bytes` at `sector` into `data`.
    In {
        sector: u64,
        bytes: u64,
    },
    /// Write `data` (`bytes`) at `sector`.
    Out {
        sector: u64,
        bytes: u64,
    },
    Flush,
    GetId,
    Discard(Vec<Range>),
    WriteZeroes(Vec<Range>),
}

/// A request the device can carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub op: Op,
    /// The data area, in order (device-writable for IN and GET_ID, readable otherwise).
    pub data: Vec<Buf>,
    /// Guest address of the status byte.
    pub status: u64,
}

/// What is wrong with a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    #[error("chain of {0} descriptors (at most {MAX_CHAIN})")]
    TooManyDescriptors(usize),
    #[error("chain shorter than a header and a status byte")]
    TooShort,
    #[error("header not device-readable, or status not device-writable")]
    Direction,
    #[error("data area of the wrong direction for request type {0}")]
    DataDirection(u32),
    #[error("data area mixes device-readable and device-writable descriptors")]
    MixedData,
    #[error("header or segments unreadable in guest memory")]
    Unreadable,
    #[error("data of {0} bytes: not whole sectors, or more than the device's maximum")]
    BadLength(u64),
    #[error("sectors {sector}+{sectors} past the end of the disk")]
    OutOfRange { sector: u64, sectors: u64 },
    #[error("discard/write-zeroes area of {0} bytes: not 1 to {MAX_DISCARD_SEG} segments")]
    BadSegments(u64),
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    #[error("unsupported flags {flags:#x} on request type {kind}")]
    UnsupportedFlags { kind: u32, flags: u32 },
}

impl BadRequest {
    /// The status the guest gets for it.
    pub fn status(self) -> u8 {
        match self {
            BadRequest::Unsupported(_) | BadRequest::UnsupportedFlags { .. } => S_UNSUPP,
            _ => S_IOERR,
        }
    }
}

/// A chain's outcome: a request, or a failure with (when the chain has one) where to put
/// its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    Ok(Request),
    Fail {
        why: BadRequest,
        status: Option<u64>,
    },
}

/// Parses a chain for a disk of `capacity` sectors. `read` copies guest memory at an address
/// into a buffer (false if it is not guest memory).
pub fn parse(descs: &[Desc], capacity: u64, read: &dyn Fn(u64, &mut [u8]) -> bool) -> Parsed {
    // The status byte is the chain's last byte, in a writable descriptor.
    let status = match descs.last() {
        Some(d) if d.writable && d.len > 0 => Some(d.addr.wrapping_add(u64::from(d.len) - 1)),
        _ => None,
    };
    match parse_inner(descs, capacity, read) {
        Ok(r) => Parsed::Ok(r),
        Err(why) => Parsed::Fail { why, status },
    }
}

fn parse_inner(
    descs: &[Desc],
    capacity: u64,
    read: &dyn Fn(u64, &mut [u8]) -> bool,
) -> Result<Request, BadRequest> {
    if descs.len() > MAX_CHAIN {
        return Err(BadRequest::TooManyDescriptors(descs.len()));
    }
    let total: u64 = descs.iter().map(|d| u64::from(d.len)).sum();
    if total < HEADER + 1 {
        return Err(BadRequest::TooShort);
    }
    let last = descs.last().ok_or(BadRequest::TooShort)?;
    if !last.writable || last.len == 0 {
        return Err(BadRequest::Direction);
    }
    let status = last.addr.wrapping_add(u64::from(last.len) - 1);
    // Split the stream: [0, 16) header, [16, total - 1) data, the last byte status.
    let mut header = [0u8; HEADER as usize];
    let mut data = Vec::new();
    let mut data_writable = None;
    let mut pos = 0u64;
    for d in descs {
        let (start, end) = (pos, pos + u64::from(d.len));
        pos = end;
        // Header part of this descriptor.
        if start < HEADER {
            let n = end.min(HEADER) - start;
            if n > 0 {
                if d.writable {
                    return Err(BadRequest::Direction);
                }
                let dst = &mut header[start as usize..(start + n) as usize];
                if !read(d.addr, dst) {
                    return Err(BadRequest::Unreadable);
                }
            }
        }
        // Data part: between the header and the status byte.
        let (ds, de) = (start.max(HEADER), end.min(total - 1));
        if ds < de {
            match data_writable {
                None => data_writable = Some(d.writable),
                Some(w) if w != d.writable => return Err(BadRequest::MixedData),
                Some(_) => {}
            }
            data.push(Buf {
                addr: d.addr.wrapping_add(ds - start),
                len: (de - ds) as u32,
            });
        }
    }
    let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let sector = u64::from_le_bytes([
        header[8], header[9], header[10], header[11], header[12], header[13], header[14],
        header[15],
    ]);
    let bytes = total - HEADER - 1;
    let want_writable = match kind {
        T_IN | T_GET_ID => Some(true),
        T_OUT | T_DISCARD | T_WRITE_ZEROES => Some(false),
        T_FLUSH => None,
        other => return Err(BadRequest::Unsupported(other)),
    };
    if let (Some(want), Some(got)) = (want_writable, data_writable) {
        if want != got {
            return Err(BadRequest::DataDirection(kind));
        }
    }
    let in_range = |sector: u64, sectors: u64| match sector.checked_add(sectors) {
        Some(end) if end <= capacity => Ok(()),
        _ => Err(BadRequest::OutOfRange { sector, sectors }),
    };
    let op = match kind {
        T_IN | T_OUT => {
            if bytes % SECTOR != 0 || bytes > MAX_IO_BYTES {
                return Err(BadRequest::BadLength(bytes));
            }
            in_range(sector, bytes / SECTOR)?;
            if kind == T_IN {
                Op::In { sector, bytes }
            } else {
                Op::Out { sector, bytes }
            }
        }
        T_FLUSH => Op::Flush,
        T_GET_ID => Op::GetId,
        _ => {
            let n = bytes / 16;
            if bytes % 16 != 0 || n == 0 || n > u64::from(MAX_DISCARD_SEG) {
                return Err(BadRequest::BadSegments(bytes));
            }
            let mut raw = vec![0u8; bytes as usize];
            let mut at = 0usize;
            for b in &data {
                if !read(b.addr, &mut raw[at..at + b.len as usize]) {
                    return Err(BadRequest::Unreadable);
                }
                at += b.len as usize;
            }
            let mut ranges = Vec::with_capacity(n as usize);
            for s in raw.chunks_exact(16) {
                let sector = u64::from_le_bytes(s[0..8].try_into().unwrap_or_default());
                let sectors = u32::from_le_bytes(s[8..12].try_into().unwrap_or_default());
                let flags = u32::from_le_bytes(s[12..16].try_into().unwrap_or_default());
                // DISCARD takes no flags; WRITE_ZEROES may allow unmapping.
                let allowed = if kind == T_DISCARD { 0 } else { UNMAP };
                if flags & !allowed != 0 {
                    return Err(BadRequest::UnsupportedFlags { kind, flags });
                }
                if sectors > MAX_DISCARD_SECTORS {
                    return Err(BadRequest::BadLength(u64::from(sectors) * SECTOR));
                }
                in_range(sector, u64::from(sectors))?;
                ranges.push(Range {
                    sector,
                    sectors,
                    unmap: flags & UNMAP != 0,
                });
            }
            if kind == T_DISCARD {
                Op::Discard(ranges)
            } else {
                Op::WriteZeroes(ranges)
            }
        }
    };
    Ok(Request { op, data, status })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guest memory for tests: 64 KiB at address 0.
    fn mem_reader(mem: &[u8]) -> impl Fn(u64, &mut [u8]) -> bool + '_ {
        move |addr, out| {
            let Some(end) = (addr as usize).checked_add(out.len()) else {
                return false;
            };
            match mem.get(addr as usize..end) {
                Some(s) => {
                    out.copy_from_slice(s);
                    true
                }
                None => false,
            }
        }
    }

    fn header(mem: &mut [u8], at: usize, kind: u32, sector: u64) {
        mem[at..at + 4].copy_from_slice(&kind.to_le_bytes());
        mem[at + 8..at + 16].copy_from_slice(&sector.to_le_bytes());
    }

    fn d(addr: u64, len: u32, writable: bool) -> Desc {
        Desc {
            addr,
            len,
            writable,
        }
    }

    #[test]
    fn a_read_split_any_way_parses_the_same() {
        let mut mem = vec![0u8; 65536];
        header(&mut mem, 0, T_IN, 8);
        let r = mem_reader(&mem);
        let a = parse(
            &[d(0, 16, false), d(4096, 4096, true), d(100, 1, true)],
            100,
            &r,
        );
        let Parsed::Ok(a) = a else { panic!("{a:?}") };
        assert_eq!(
            a.op,
            Op::In {
                sector: 8,
                bytes: 4096
            }
        );
        assert_eq!(a.status, 100);
        // Data and status in one descriptor.
        let b = parse(&[d(0, 16, false), d(4096, 4097, true)], 100, &r);
        let Parsed::Ok(b) = b else { panic!("{b:?}") };
        assert_eq!(b.op, a.op);
        assert_eq!(
            b.data,
            vec![Buf {
                addr: 4096,
                len: 4096
            }]
        );
        assert_eq!(b.status, 4096 + 4096);
    }

    #[test]
    fn bad_requests_fail_with_the_right_status() {
        let mut mem = vec![0u8; 65536];
        header(&mut mem, 0, T_OUT, 99);
        header(&mut mem, 16, 77, 0);
        header(&mut mem, 32, T_IN, 0);
        let r = mem_reader(&mem);
        let fail = |p: Parsed| match p {
            Parsed::Fail { why, status } => (why, status),
            Parsed::Ok(r) => panic!("accepted {r:?}"),
        };
        // Past the end.
        let (why, st) = fail(parse(
            &[d(0, 16, false), d(4096, 1024, false), d(9, 1, true)],
            100,
            &r,
        ));
        assert_eq!(
            why,
            BadRequest::OutOfRange {
                sector: 99,
                sectors: 2
            }
        );
        assert_eq!((why.status(), st), (S_IOERR, Some(9)));
        // Unknown type.
        let (why, _) = fail(parse(&[d(16, 16, false), d(9, 1, true)], 100, &r));
        assert_eq!(why.status(), S_UNSUPP);
        // A read whose data is device-readable.
        let (why, _) = fail(parse(
            &[d(32, 16, false), d(4096, 512, false), d(9, 1, true)],
            100,
            &r,
        ));
        assert_eq!(why, BadRequest::DataDirection(T_IN));
        // Not whole sectors.
        let (why, _) = fail(parse(
            &[d(32, 16, false), d(4096, 100, true), d(9, 1, true)],
            100,
            &r,
        ));
        assert_eq!(why, BadRequest::BadLength(100));
        // No status byte: nowhere to report.
        let (_, st) = fail(parse(
            &[d(32, 16, false), d(4096, 512, true), d(9, 1, false)],
            100,
            &r,
        ));
        assert_eq!(st, None);
        // Header outside guest memory.
        let (why, _) = fail(parse(&[d(u64::MAX - 3, 16, false), d(9, 1, true)], 100, &r));
        assert_eq!(why, BadRequest::Unreadable);
        // Data partly readable, partly writable.
        let (why, _) = fail(parse(
            &[
                d(32, 16, false),
                d(4096, 512, true),
                d(8192, 512, false),
                d(9, 1, true),
            ],
            100,
            &r,
        ));
        assert_eq!(why, BadRequest::MixedData);
        // Too many descriptors.
        let many = vec![d(32, 1, false); MAX_CHAIN + 1];
        assert_eq!(
            fail(parse(&many, 100, &r)).0,
            BadRequest::TooManyDescriptors(MAX_CHAIN + 1)
        );
    }

    #[test]
    fn discard_segments_are_checked() {
        let mut mem = vec![0u8; 65536];
        header(&mut mem, 0, T_DISCARD, 0);
        let seg = |mem: &mut [u8], at: usize, sector: u64, n: u32, flags: u32| {
            mem[at..at + 8].copy_from_slice(&sector.to_le_bytes());
            mem[at + 8..at + 12].copy_from_slice(&n.to_le_bytes());
            mem[at + 12..at + 16].copy_from_slice(&flags.to_le_bytes());
        };
        seg(&mut mem, 1000, 8, 16, 0);
        seg(&mut mem, 2000, 8, 16, UNMAP);
        seg(&mut mem, 3000, u64::MAX, 16, 0);
        let r = mem_reader(&mem);
        let p = parse(
            &[d(0, 16, false), d(1000, 16, false), d(9, 1, true)],
            100,
            &r,
        );
        assert!(matches!(p, Parsed::Ok(Request { op: Op::Discard(ref v), .. }) if v.len() == 1));
        let p = parse(
            &[d(0, 16, false), d(2000, 16, false), d(9, 1, true)],
            100,
            &r,
        );
        assert!(matches!(
            p,
            Parsed::Fail {
                why: BadRequest::UnsupportedFlags { .. },
                ..
            }
        ));
        let p = parse(
            &[d(0, 16, false), d(3000, 16, false), d(9, 1, true)],
            100,
            &r,
        );
        assert!(matches!(
            p,
            Parsed::Fail {
                why: BadRequest::OutOfRange { .. },
                ..
            }
        ));
        let p = parse(
            &[d(0, 16, false), d(1000, 15, false), d(9, 1, true)],
            100,
            &r,
        );
        assert!(matches!(
            p,
            Parsed::Fail {
                why: BadRequest::BadSegments(15),
                ..
            }
        ));
    }
}
