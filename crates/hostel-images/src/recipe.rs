//! Recipes: everything that determines an image's content, hashed into its cache key. Two
//! builds with equal keys produce equivalent images, so the second returns the first.

use crate::build::guest_files;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Bumped whenever the build steps change in a way the recipe fields do not show.
const BUILDER_REVISION: u32 = 7;

pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
pub const DEFAULT_SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";

/// A Debian image bootstrapped from the distribution's packages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DebianRecipe {
    pub name: String,
    /// Debian suite (codename), e.g. "bookworm".
    pub suite: String,
    pub mirror: String,
    /// `None` leaves the security archive out (air-gapped mirrors).
    pub security_mirror: Option<String>,
    /// Installed with apt on top of debootstrap's minbase (no Recommends).
    pub packages: Vec<String>,
    /// Modules the initramfs must carry to find the root disk (MODULES=list).
    pub initramfs_modules: Vec<String>,
    /// Size of the sparse ext4 image; VM disks can be bigger, never smaller.
    pub disk_size_bytes: u64,
    /// Guest policy arguments for direct boot (the engine adds the platform's).
    pub cmdline: String,
}

impl DebianRecipe {
    /// Debian 12 with systemd, cloud-init (ifupdown networking, NoCloud), OpenSSH and the
    /// cloud kernel: the base every hostel template derives from.
    pub fn debian_12() -> Self {
        let packages = [
            "systemd-sysv",
            "udev",
            "dbus",
            "linux-image-cloud-amd64",
            "initramfs-tools",
            "e2fsprogs",
            "cloud-init",
            // cloud-init's ENI renderer drives ifupdown; resolvconf applies dns-nameservers.
            "ifupdown",
            "isc-dhcp-client",
            "resolvconf",
            "iproute2",
            "netbase",
            "openssh-server",
            // `hostel vm exec`, file transfer, guest-reported addresses: its unit starts when
            // udev sees the `org.qemu.guest_agent.0` port every hostel VM has.
            "qemu-guest-agent",
            "sudo",
            "procps",
            "iputils-ping",
            "ca-certificates",
        ];
        DebianRecipe {
            name: "debian-12".into(),
            suite: "bookworm".into(),
            mirror: DEFAULT_MIRROR.into(),
            security_mirror: Some(DEFAULT_SECURITY_MIRROR.into()),
            packages: packages.iter().map(|s| s.to_string()).collect(),
            initramfs_modules: [
                "virtio_mmio",
                "virtio_pci",
                "virtio_blk",
                "virtio_net",
                "ext4",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            disk_size_bytes: 2 << 30,
            cmdline: "root=/dev/vda rw rootfstype=ext4 quiet".into(),
        }
    }

    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!("debian/{BUILDER_REVISION}\n"));
        h.update(serde_json::to_vec(self).unwrap_or_default());
        for (path, content) in guest_files() {
            h.update(path.as_bytes());
            h.update(content.as_bytes());
        }
        hex(&h.finalize())
    }
}

/// An image made from a parent image by installing packages (a template's image).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DerivedRecipe {
    pub name: String,
    pub parent: String,
    pub packages: Vec<String>,
}

impl DerivedRecipe {
    /// The key covers the parent's key: a rebuilt parent makes its children stale.
    pub fn key(&self, parent_key: &str) -> String {
        let mut h = Sha256::new();
        h.update(format!("derived/{BUILDER_REVISION}\n{parent_key}\n"));
        h.update(serde_json::to_vec(self).unwrap_or_default());
        hex(&h.finalize())
    }
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_stable_and_changes_with_the_recipe() {
        let a = DebianRecipe::debian_12();
        assert_eq!(a.key(), DebianRecipe::debian_12().key());
        let mut b = a.clone();
        b.packages.push("vim".into());
        assert_ne!(a.key(), b.key());
        let d = DerivedRecipe {
            name: "x".into(),
            parent: "debian-12".into(),
            packages: vec!["nginx-light".into()],
        };
        assert_ne!(d.key("p1"), d.key("p2"));
    }
}
