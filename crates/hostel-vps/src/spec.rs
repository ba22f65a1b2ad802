//! The OCI bundle's `config.json` for one VPS: every namespace (the user and network ones
//! joined from the host's persistent pair, see `ns.rs`, the others new per run), cgroup v1
//! limits, the seccomp allowlist, only the standard devices, masked and read-only `/proc`
//! and `/sys` paths, no new privileges.

use crate::{seccomp, VpsError, ID_RANGE};
use serde_json::{json, Value};
use std::path::Path;

/// The most PIDs one VPS may hold (threads count): a fork bomb stops here, far below the
/// host's `pid_max`, while a Debian system container with a few services needs some hundreds.
pub const DEFAULT_PIDS: u32 = 1024;
/// The CFS period the CPU cap is expressed in (µs).
const CPU_PERIOD_US: u64 = 100_000;
/// Shares per vCPU: the kernel's default weight of one cgroup, so a 2-vCPU VPS weighs twice
/// a 1-vCPU one under contention.
const SHARES_PER_VCPU: u64 = 1024;

/// The limits of one VPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// The CPU cap (quota = vcpus × period) and weight (shares).
    pub vcpus: u32,
    /// The memory limit, swap included (the container gets no swap of its own).
    pub memory_mib: u64,
    /// The most tasks.
    pub pids: u32,
    /// The VPS's own block device (its loop device: major, minor) and the throttle on it.
    /// This host's blkio controller has no weight file (no BFQ), so the fairness tool left
    /// is a throttle on each VPS's own device.
    pub disk: Option<DiskThrottle>,
}

/// Block I/O throttle on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskThrottle {
    pub major: u64,
    pub minor: u64,
    pub bytes_per_sec: u64,
    pub iops: u64,
}

/// The NIC as the container sees it, configured by the host inside the VPS's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    /// The host-side TAP name (at most 15 bytes) the switch attaches before it is moved.
    pub tap: String,
    pub mac: hostel_types::MacAddr,
    pub ipv4: std::net::Ipv4Addr,
    pub prefix_len: u8,
    pub gateway4: std::net::Ipv4Addr,
}

/// What a VPS is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpsSpec {
    /// The container id in runc, also the directory names: lowercase letters, digits and `-`.
    pub id: String,
    pub hostname: String,
    /// The host's first id of this VPS's range: root inside is this uid outside.
    pub uid_base: u32,
    pub resources: Resources,
    /// The size of the writable layer's disk.
    pub disk_gib: u64,
    /// PID 1 and its arguments (an image's init, or a command for a minimal VPS).
    pub args: Vec<String>,
    pub nic: Option<NicSpec>,
}

impl VpsSpec {
    /// Refuses what would be unsafe to put in a path, a command line or the config.
    pub fn validate(&self) -> Result<(), VpsError> {
        let ok_id = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok_id {
            return Err(invalid("id", "lowercase letters, digits and '-', 1 to 64"));
        }
        let ok_host = !self.hostname.is_empty()
            && self.hostname.len() <= 63
            && self
                .hostname
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok_host {
            return Err(invalid("hostname", "letters, digits and '-', 1 to 63"));
        }
        if u64::from(self.uid_base) + u64::from(ID_RANGE) > u64::from(u32::MAX)
            || self.uid_base == 0
        {
            return Err(invalid("uid_base", "outside the host's id space"));
        }
        let r = &self.resources;
        if r.vcpus == 0 || r.vcpus > 1024 {
            return Err(invalid("vcpus", "1 to 1024"));
        }
        if r.memory_mib < 16 || r.memory_mib > 1 << 26 {
            return Err(invalid("memory_mib", "16 MiB to 64 TiB"));
        }
        if r.pids < 16 {
            return Err(invalid("pids", "at least 16"));
        }
        if self.disk_gib == 0 || self.disk_gib > 1 << 16 {
            return Err(invalid("disk_gib", "1 GiB to 64 TiB"));
        }
        if self.args.is_empty() || self.args.iter().any(|a| a.contains('\0')) {
            return Err(invalid("args", "a program and its arguments, no NUL"));
        }
        if let Some(nic) = &self.nic {
            if nic.tap.is_empty()
                || nic.tap.len() > 15
                || !nic.tap.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return Err(invalid("nic.tap", "1 to 15 letters and digits"));
            }
            if nic.prefix_len == 0 || nic.prefix_len > 32 {
                return Err(invalid("nic.prefix_len", "1 to 32"));
            }
        }
        Ok(())
    }
}

fn invalid(field: &'static str, reason: &str) -> VpsError {
    VpsError::Invalid {
        field,
        reason: reason.to_string(),
    }
}

/// The cgroup path of a VPS (relative to each v1 hierarchy's root; runc makes the
/// directories and removes them at `delete`).
pub fn cgroup_path(id: &str) -> String {
    format!("/hostel-vps/{id}")
}

/// Docker's default capability set, plus NET_ADMIN: root in the VPS keeps what a service
/// manager needs for its own processes, and configures its own interfaces (the network
/// namespace is the VPS's own, owned by its user namespace; the switch's anti-spoofing
/// decides what leaves it). None of the host-wide powers (they would be bounded by the user
/// namespace anyway).
const CAPS: &[&str] = &[
    "CAP_NET_ADMIN",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/sys/kernel",
    "/sys/fs/cgroup",
];

const READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The standard devices and nothing else (runc creates these nodes; this is the cgroup's
/// allowlist, so a node made by other means still cannot be opened).
fn devices() -> Value {
    let c = |major: i64, minor: i64| json!({"allow": true, "type": "c", "major": major, "minor": minor, "access": "rwm"});
    json!([
        {"allow": false, "access": "rwm"},
        c(1, 3),   // null
        c(1, 5),   // zero
        c(1, 7),   // full
        c(1, 8),   // random
        c(1, 9),   // urandom
        c(5, 0),   // tty
        c(5, 1),   // console
        c(5, 2),   // ptmx
        {"allow": true, "type": "c", "major": 136, "access": "rwm"} // pts
    ])
}

/// Renders `config.json`. `rootfs` is the prepared overlay, `userns`/`netns` the persistent
/// namespace files of the VPS.
pub fn config(spec: &VpsSpec, rootfs: &Path, userns: &Path, netns: &Path) -> Value {
    let r = &spec.resources;
    let mut resources = json!({
        "devices": devices(),
        "memory": {
            "limit": mib(r.memory_mib),
            "swap": mib(r.memory_mib),
        },
        "cpu": {
            "shares": u64::from(r.vcpus) * SHARES_PER_VCPU,
            "quota": u64::from(r.vcpus) * CPU_PERIOD_US,
            "period": CPU_PERIOD_US,
        },
        "pids": {"limit": r.pids},
    });
    if let Some(d) = r.disk {
        let dev = |rate: u64| json!([{"major": d.major, "minor": d.minor, "rate": rate}]);
        resources["blockIO"] = json!({
            "throttleReadBpsDevice": dev(d.bytes_per_sec),
            "throttleWriteBpsDevice": dev(d.bytes_per_sec),
            "throttleReadIOPSDevice": dev(d.iops),
            "throttleWriteIOPSDevice": dev(d.iops),
        });
    }
    let caps: Vec<&str> = CAPS.to_vec();
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": spec.args,
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "container=hostel",
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": [],
            },
            "noNewPrivileges": true,
        },
        "root": {"path": rootfs, "readonly": false},
        "hostname": spec.hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=755", "size=65536k"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777", "size=262144k"]},
        ],
        "linux": {
            "uidMappings": [{"containerID": 0, "hostID": spec.uid_base, "size": ID_RANGE}],
            "gidMappings": [{"containerID": 0, "hostID": spec.uid_base, "size": ID_RANGE}],
            "namespaces": [
                {"type": "pid"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
                {"type": "cgroup"},
                {"type": "user", "path": userns},
                {"type": "network", "path": netns},
            ],
            "cgroupsPath": cgroup_path(&spec.id),
            "resources": resources,
            "seccomp": seccomp::profile(),
            "maskedPaths": MASKED,
            "readonlyPaths": READONLY,
        },
    })
}

fn mib(m: u64) -> u64 {
    m.saturating_mul(1024 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VpsSpec {
        VpsSpec {
            id: "vps-1".into(),
            hostname: "web".into(),
            uid_base: crate::FIRST_ID,
            resources: Resources {
                vcpus: 2,
                memory_mib: 256,
                pids: DEFAULT_PIDS,
                disk: None,
            },
            disk_gib: 1,
            args: vec!["/sbin/init".into()],
            nic: None,
        }
    }

    #[test]
    fn the_config_isolates_and_limits() {
        let c = config(
            &spec(),
            Path::new("/r"),
            Path::new("/n/user"),
            Path::new("/n/net"),
        );
        let ns: Vec<&str> = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        for t in ["pid", "ipc", "uts", "mount", "cgroup", "user", "network"] {
            assert!(ns.contains(&t), "{t} missing");
        }
        assert_eq!(c["linux"]["uidMappings"][0]["hostID"], crate::FIRST_ID);
        assert_eq!(c["linux"]["uidMappings"][0]["size"], ID_RANGE);
        assert_eq!(c["linux"]["resources"]["memory"]["limit"], 256u64 << 20);
        assert_eq!(c["linux"]["resources"]["cpu"]["quota"], 200_000);
        assert_eq!(c["linux"]["resources"]["pids"]["limit"], DEFAULT_PIDS);
        assert_eq!(c["process"]["noNewPrivileges"], true);
        assert_eq!(c["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        let devs = c["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(devs[0]["allow"], false);
        // /dev/kvm is 10:232: never allowed.
        assert!(devs.iter().all(|d| d["major"] != 10));
    }

    #[test]
    fn hostile_fields_are_refused() {
        let mut s = spec();
        s.id = "../etc".into();
        assert!(s.validate().is_err());
        let mut s = spec();
        s.hostname = "a b".into();
        assert!(s.validate().is_err());
        let mut s = spec();
        s.uid_base = u32::MAX - 10;
        assert!(s.validate().is_err());
        let mut s = spec();
        s.resources.vcpus = 0;
        assert!(s.validate().is_err());
        assert!(spec().validate().is_ok());
    }
}
