//! The VPS's NIC: a TAP the host makes (persistent, with the NIC's MAC and vnet headers,
//! as the switch's TAP ports expect), the switch attaches by name in the host's namespace,
//! and the host then moves into the VPS's network namespace as `eth0` with its address —
//! the switch keeps its descriptor, so DHCP, anti-spoofing and limits apply as to a VM's.

use crate::ns::NsPaths;
use crate::spec::NicSpec;
use crate::{cmd, VpsError};
use std::path::Path;

/// The TAP's name for a VPS: stable, at most 15 bytes.
pub fn tap_name(vps_key: &str) -> String {
    let clean: String = vps_key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let start = clean.len().saturating_sub(12);
    format!("hv{}", &clean[start..])
}

/// The TAP is in the host's namespace (not yet moved, or never moved).
pub fn in_host(tap: &str) -> bool {
    Path::new("/sys/class/net").join(tap).exists()
}

/// Makes the TAP in the host's namespace, unless it exists there.
pub fn create_tap(nic: &NicSpec) -> Result<(), VpsError> {
    if !in_host(&nic.tap) {
        cmd::run(
            "ip",
            &["tuntap", "add", "dev", &nic.tap, "mode", "tap", "vnet_hdr"],
        )?;
    }
    let mac = nic.mac.to_string();
    cmd::run(
        "ip",
        &["link", "set", "dev", &nic.tap, "address", &mac, "up"],
    )?;
    Ok(())
}

/// Moves the TAP into the VPS's namespace as `eth0` and gives it its address and route.
/// Nothing to do if it is there already.
pub fn plug(ns: &NsPaths, nic: &NicSpec) -> Result<(), VpsError> {
    if in_host(&nic.tap) {
        let net = ns.net.to_string_lossy().into_owned();
        cmd::run("ip", &["link", "set", "dev", &nic.tap, "netns", &net])?;
        ns.run_in_net("ip", &["link", "set", "dev", &nic.tap, "name", "eth0"])?;
    }
    let addr = format!("{}/{}", nic.ipv4, nic.prefix_len);
    ns.run_in_net("ip", &["addr", "replace", &addr, "dev", "eth0"])?;
    ns.run_in_net("ip", &["link", "set", "dev", "eth0", "up"])?;
    ns.run_in_net("ip", &["link", "set", "dev", "lo", "up"])?;
    let gw = nic.gateway4.to_string();
    ns.run_in_net(
        "ip",
        &["route", "replace", "default", "via", &gw, "dev", "eth0"],
    )?;
    Ok(())
}

/// Removes the TAP if it is still in the host's namespace (moved, it goes with the VPS's
/// network namespace).
pub fn remove_tap(tap: &str) -> Result<(), VpsError> {
    if in_host(tap) {
        cmd::run("ip", &["link", "del", "dev", tap])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tap_names_fit_ifnamsiz() {
        let n = super::tap_name("0123456789abcdef0123456789abcdef");
        assert!(n.len() <= 15);
        assert_eq!(n, "hv456789abcdef");
        assert_eq!(super::tap_name("a/b"), "hvab");
    }
}
