//! A Linux bridge made with the bridge ioctls (no `ip` binary needed), in the caller's
//! network namespace.

const SIOCBRADDBR: libc::c_ulong = 0x89a0;
const SIOCBRADDIF: libc::c_ulong = 0x89a2;

fn ifreq_name(name: &str) -> [u8; 40] {
    let mut r = [0u8; 40];
    r[..name.len()].copy_from_slice(name.as_bytes());
    r
}

/// Creates bridge `br`, enslaves `ports` and sets it up.
pub fn bridge_up(br: &str, ports: &[&str]) -> std::io::Result<()> {
    // SAFETY: plain socket for interface ioctls, owned below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh fd.
    let _guard = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(s) };
    let name = std::ffi::CString::new(br).map_err(std::io::Error::other)?;
    // SAFETY: SIOCBRADDBR takes a NUL-terminated name.
    if unsafe { libc::ioctl(s, SIOCBRADDBR as _, name.as_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    for p in ports {
        let pname = std::ffi::CString::new(*p).map_err(std::io::Error::other)?;
        // SAFETY: valid C string.
        let idx = unsafe { libc::if_nametoindex(pname.as_ptr()) } as i32;
        let mut req = ifreq_name(br);
        req[16..20].copy_from_slice(&idx.to_ne_bytes());
        // SAFETY: req is an ifreq-sized buffer with name and ifindex set.
        if unsafe { libc::ioctl(s, SIOCBRADDIF as _, req.as_mut_ptr()) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let mut req = ifreq_name(br);
    // SAFETY: as above, SIOCGIFFLAGS fills the flags of an ifreq-sized buffer.
    unsafe { libc::ioctl(s, libc::SIOCGIFFLAGS as _, req.as_mut_ptr()) };
    let flags = i16::from_ne_bytes([req[16], req[17]]) | libc::IFF_UP as i16;
    req[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: SIOCSIFFLAGS reads the same ifreq-sized buffer.
    if unsafe { libc::ioctl(s, libc::SIOCSIFFLAGS as _, req.as_mut_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
