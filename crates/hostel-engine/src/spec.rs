//! The VM specification: what a machine is made of. A [`VmSpec`] can only be built through
//! [`VmSpec::new`] / [`VmSpecInput::validate`], so one that exists is internally consistent;
//! what depends on the host (files, memory, TAP devices) is checked at launch by `preflight`.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::str::FromStr;

/// A spec field that failed validation, named the way the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct SpecError {
    pub field: String,
    pub reason: String,
}

impl SpecError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// QEMU's limit for x86 machines with the default topology.
pub const MAX_VCPUS: u32 = 255;
/// Below this a stock kernel cannot unpack its initramfs.
pub const MIN_MEMORY_MIB: u64 = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    /// KVM when the host has hardware virtualization, TCG otherwise.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl FromStr for AccelChoice {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s {
            "auto" => Ok(Self::Auto),
            "kvm" => Ok(Self::Kvm),
            "tcg" => Ok(Self::Tcg),
            other => Err(SpecError::new(
                "accel",
                format!("unknown accelerator {other:?} (expected auto, kvm or tcg)"),
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    pub fn as_qemu(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
        }
    }
}

impl FromStr for DiskFormat {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s {
            "raw" => Ok(Self::Raw),
            "qcow2" => Ok(Self::Qcow2),
            other => Err(SpecError::new(
                "disk.format",
                format!("unknown disk format {other:?} (expected raw or qcow2)"),
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    pub path: PathBuf,
    /// `None`: detected from the file's header at launch.
    #[serde(default)]
    pub format: Option<DiskFormat>,
    #[serde(default)]
    pub readonly: bool,
}

impl FromStr for DiskSpec {
    type Err = SpecError;
    /// `PATH[,readonly][,format=raw|qcow2]`, the `--disk` flag's syntax.
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let mut parts = s.split(',');
        let path = parts
            .next()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| SpecError::new("disk", "expected PATH[,readonly][,format=raw|qcow2]"))?;
        let mut disk = DiskSpec {
            path: PathBuf::from(path),
            format: None,
            readonly: false,
        };
        for opt in parts {
            match opt.split_once('=') {
                None if opt == "readonly" || opt == "ro" => disk.readonly = true,
                Some(("format", f)) => disk.format = Some(f.parse()?),
                _ => {
                    return Err(SpecError::new(
                        "disk",
                        format!("unknown option {opt:?} in {s:?}"),
                    ))
                }
            }
        }
        Ok(disk)
    }
}

/// The MAC type is hostel's one ([`hostel_types::MacAddr`]); a NIC's must be unicast,
/// which [`nic_mac`] and [`VmSpecInput::validate`] check.
pub use hostel_types::MacAddr;

/// A NIC's MAC from its text form: six hex bytes, and unicast (a frame to a group address
/// reaches every port, so no NIC may own one).
pub fn nic_mac(s: &str) -> Result<MacAddr, SpecError> {
    let mac: MacAddr = s
        .parse()
        .map_err(|_| SpecError::new("net.mac", format!("{s:?} is not a MAC address")))?;
    check_unicast(&mac)?;
    Ok(mac)
}

fn check_unicast(mac: &MacAddr) -> Result<(), SpecError> {
    if mac.is_multicast() {
        return Err(SpecError::new(
            "net.mac",
            format!("{mac} is a multicast address; a NIC needs a unicast one"),
        ));
    }
    Ok(())
}

/// A Linux interface name: 1-15 bytes, no '/', whitespace or ':'.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IfName(String);

impl IfName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IfName {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Self, SpecError> {
        let ok = !s.is_empty()
            && s.len() < libc::IFNAMSIZ
            && s != "."
            && s != ".."
            && !s
                .bytes()
                .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
        if ok {
            Ok(IfName(s))
        } else {
            Err(SpecError::new(
                "net.tap",
                format!(
                    "{s:?} is not a valid interface name (1-15 characters, no '/', ':' or spaces)"
                ),
            ))
        }
    }
}

impl From<IfName> for String {
    fn from(n: IfName) -> String {
        n.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NicBackend {
    /// A host TAP device; hostel opens it and hands QEMU the descriptor.
    Tap(IfName),
    /// A vhost-user-net backend (hostel's switch) listening on this socket.
    VhostUser(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicSpec {
    #[serde(flatten)]
    pub backend: NicBackend,
    #[serde(default)]
    pub mac: Option<MacAddr>,
}

impl FromStr for NicSpec {
    type Err = SpecError;
    /// `tap=IFNAME[,mac=MAC]` or `vhost-user=SOCKET[,mac=MAC]`, the `--net` flag's syntax.
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let mut backend = None;
        let mut mac = None;
        for opt in s.split(',') {
            match opt.split_once('=') {
                Some(("tap", name)) => backend = Some(NicBackend::Tap(name.to_string().try_into()?)),
                Some(("vhost-user", path)) if !path.is_empty() => {
                    backend = Some(NicBackend::VhostUser(PathBuf::from(path)))
                }
                Some(("mac", m)) => mac = Some(nic_mac(m)?),
                _ => {
                    return Err(SpecError::new(
                        "net",
                        format!("unknown option {opt:?} in {s:?} (expected tap=IFNAME or vhost-user=SOCKET, mac=MAC)"),
                    ))
                }
            }
        }
        let backend = backend.ok_or_else(|| {
            SpecError::new(
                "net",
                format!("{s:?} names no backend (tap=IFNAME or vhost-user=SOCKET)"),
            )
        })?;
        Ok(NicSpec { backend, mac })
    }
}

/// How the machine finds its operating system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "from")]
pub enum Boot {
    /// Direct kernel boot (microvm): no firmware, fastest start.
    Kernel {
        kernel: PathBuf,
        #[serde(default)]
        initrd: Option<PathBuf>,
        #[serde(default)]
        cmdline: String,
    },
    /// Firmware boots the first disk (q35): for whole-disk images with their own bootloader.
    Disk,
}

/// The spec as a user writes it (flags, a TOML/JSON file, the API): unvalidated.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpecInput {
    pub name: Option<String>,
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    #[serde(default)]
    pub boot_from_disk: bool,
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    #[serde(default)]
    pub nics: Vec<NicSpec>,
    /// vhost-user-blk sockets (pool volumes served by the storage process), after `disks`.
    #[serde(default)]
    pub vhost_disks: Vec<PathBuf>,
    pub serial_log: Option<PathBuf>,
    #[serde(default)]
    pub accel: AccelChoice,
}

/// Volumes (vhost-user-blk disks) a VM may have: virtio-mmio slots on microvm are few.
pub const MAX_VHOST_DISKS: usize = 8;

/// A validated VM specification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmSpec {
    name: String,
    vcpus: u32,
    memory_mib: u64,
    boot: Boot,
    disks: Vec<DiskSpec>,
    nics: Vec<NicSpec>,
    vhost_disks: Vec<PathBuf>,
    serial_log: Option<PathBuf>,
    accel: AccelChoice,
}

impl VmSpecInput {
    pub fn validate(self) -> Result<VmSpec, SpecError> {
        let name = self.name.unwrap_or_else(|| "vm".to_string());
        if name.is_empty()
            || name.len() > 63
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(SpecError::new(
                "name",
                format!("{name:?} must be 1-63 characters of letters, digits, '-', '_' or '.'"),
            ));
        }
        let vcpus = self.vcpus.unwrap_or(1);
        if vcpus == 0 || vcpus > MAX_VCPUS {
            return Err(SpecError::new(
                "vcpus",
                format!("{vcpus} is out of range (1-{MAX_VCPUS})"),
            ));
        }
        let memory_mib = self.memory_mib.unwrap_or(128);
        if memory_mib < MIN_MEMORY_MIB {
            return Err(SpecError::new(
                "memory",
                format!("{memory_mib} MiB is below the minimum of {MIN_MEMORY_MIB} MiB"),
            ));
        }
        let boot = match (self.kernel, self.boot_from_disk) {
            (Some(_), true) => {
                return Err(SpecError::new(
                    "kernel",
                    "a kernel and boot-from-disk exclude each other",
                ))
            }
            (Some(kernel), false) => Boot::Kernel {
                kernel,
                initrd: self.initrd,
                cmdline: self.cmdline.unwrap_or_default(),
            },
            (None, true) => {
                if self.disks.is_empty() {
                    return Err(SpecError::new(
                        "disks",
                        "boot from disk needs at least one disk",
                    ));
                }
                if self.initrd.is_some() || self.cmdline.is_some() {
                    return Err(SpecError::new(
                        "initrd",
                        "an initrd or kernel command line needs --kernel",
                    ));
                }
                Boot::Disk
            }
            (None, false) => {
                return Err(SpecError::new(
                    "kernel",
                    "no kernel given (use --kernel, or boot from a disk)",
                ))
            }
        };
        if let Boot::Kernel { cmdline, .. } = &boot {
            if cmdline.len() > 2048 {
                return Err(SpecError::new(
                    "cmdline",
                    format!(
                        "{} bytes exceeds the kernel's 2048-byte limit",
                        cmdline.len()
                    ),
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for d in &self.disks {
            if !seen.insert(&d.path) {
                return Err(SpecError::new(
                    "disks",
                    format!("{} is attached twice", d.path.display()),
                ));
            }
        }
        if self.vhost_disks.len() > MAX_VHOST_DISKS {
            return Err(SpecError::new(
                "vhost_disks",
                format!("at most {MAX_VHOST_DISKS} volumes per VM"),
            ));
        }
        let mut nics = self.nics;
        for (i, nic) in nics.iter_mut().enumerate() {
            check_unicast(nic.mac.get_or_insert_with(|| MacAddr::derived(&name, i)))?;
        }
        Ok(VmSpec {
            name,
            vcpus,
            memory_mib,
            boot,
            disks: self.disks,
            nics,
            vhost_disks: self.vhost_disks,
            serial_log: self.serial_log,
            accel: self.accel,
        })
    }
}

impl VmSpec {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn vcpus(&self) -> u32 {
        self.vcpus
    }
    pub fn memory_mib(&self) -> u64 {
        self.memory_mib
    }
    pub fn boot(&self) -> &Boot {
        &self.boot
    }
    pub fn disks(&self) -> &[DiskSpec] {
        &self.disks
    }
    pub fn nics(&self) -> &[NicSpec] {
        &self.nics
    }
    pub fn vhost_disks(&self) -> &[PathBuf] {
        &self.vhost_disks
    }
    pub fn serial_log(&self) -> Option<&std::path::Path> {
        self.serial_log.as_deref()
    }
    pub fn accel(&self) -> AccelChoice {
        self.accel
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> VmSpecInput {
        VmSpecInput {
            kernel: Some("/k".into()),
            ..Default::default()
        }
    }

    #[test]
    fn zero_vcpus_is_refused_naming_the_field() {
        let err = VmSpecInput {
            vcpus: Some(0),
            ..base()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field, "vcpus");
    }

    #[test]
    fn tiny_memory_is_refused() {
        let err = VmSpecInput {
            memory_mib: Some(4),
            ..base()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field, "memory");
    }

    #[test]
    fn disk_flag_parses_options_and_rejects_unknown_format() {
        let d: DiskSpec = "/x.img,readonly,format=qcow2".parse().unwrap();
        assert!(d.readonly);
        assert_eq!(d.format, Some(DiskFormat::Qcow2));
        let err = "/x.img,format=vmdk".parse::<DiskSpec>().unwrap_err();
        assert!(err.reason.contains("unknown disk format"), "{err}");
    }

    #[test]
    fn nic_flag_parses_and_gets_a_stable_mac() {
        let n: NicSpec = "tap=tap0,mac=52:54:00:12:34:56".parse().unwrap();
        assert_eq!(n.mac.unwrap().to_string(), "52:54:00:12:34:56");
        assert!("tap=this-name-is-way-too-long".parse::<NicSpec>().is_err());
        assert!("mac=01:00:00:00:00:01,tap=t".parse::<NicSpec>().is_err());
        let spec = VmSpecInput {
            nics: vec!["tap=t0".parse().unwrap()],
            ..base()
        }
        .validate()
        .unwrap();
        let again = VmSpecInput {
            nics: vec!["tap=t0".parse().unwrap()],
            ..base()
        }
        .validate()
        .unwrap();
        assert_eq!(spec.nics()[0].mac, again.nics()[0].mac);
    }

    #[test]
    fn same_disk_twice_is_refused() {
        let d: DiskSpec = "/a.img".parse().unwrap();
        let err = VmSpecInput {
            disks: vec![d.clone(), d],
            ..base()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field, "disks");
    }
}
