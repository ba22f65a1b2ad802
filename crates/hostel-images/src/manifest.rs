//! `manifest.json`: what an image is and how to boot it. Written last into the staging
//! directory, so an image directory without one was never completed.

use hostel_engine::DiskFormat;
use serde::{Deserialize, Serialize};

/// Bumped when the manifest's meaning changes incompatibly.
pub const MANIFEST_VERSION: u32 = 1;

pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub name: String,
    /// Identifies the content: the recipe key of a built image, the SHA-256 of an imported
    /// file. A build whose key matches the stored one is a cache hit.
    pub key: String,
    pub origin: Origin,
    pub disk: DiskInfo,
    pub boot: ImageBoot,
    /// Seconds since the Unix epoch.
    pub created_unix: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Origin {
    /// Bootstrapped from a distribution's packages.
    Built {
        distribution: String,
        suite: String,
        packages: Vec<String>,
    },
    /// A copy of another image with packages added (a service template's image).
    Derived {
        parent: String,
        parent_key: String,
        packages: Vec<String>,
    },
    /// A disk file a user brought.
    Imported { source: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// File name inside the image directory.
    pub file: String,
    pub format: DiskFormat,
    /// Guest-visible size in bytes; a VM disk cloned from the image is at least this big.
    pub virtual_size: u64,
    /// What the disk holds, for choosing how to boot and grow it.
    pub layout: DiskLayout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskLayout {
    /// A bare ext4 filesystem (no partition table): root=/dev/vda, grown with resize2fs.
    Ext4,
    /// A partitioned disk (MBR or GPT), e.g. a distribution's cloud image.
    Partitioned,
    /// Neither of those (a qcow2 import holding something else: a data disk, say).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "from")]
pub enum ImageBoot {
    /// Direct kernel boot with files stored next to the disk.
    Kernel {
        kernel: String,
        /// The image's own initramfs (the distribution's), for booting it anywhere.
        initrd: String,
        /// Guest policy arguments (root device...); the engine adds the platform ones.
        cmdline: String,
        kernel_version: String,
        /// hostel's minimal initramfs made from the image's own modules
        /// (`build::boot_initrd`), booted instead of `initrd` when present: images built
        /// by hostel have one, imported ones do not.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hostel_initrd: Option<String>,
    },
    /// Firmware boots the disk's own bootloader (imported whole-disk images).
    Disk,
}
