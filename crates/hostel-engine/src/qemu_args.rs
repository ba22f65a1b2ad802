//! The QEMU command line for a spec. Only what the VM needs is asked for (`-nodefaults`):
//! every default device costs boot time and host memory on every VM of a packed host.

use crate::accel::Accel;
use crate::spec::{Boot, DiskFormat, VmSpec};
use std::os::fd::RawFd;
use std::path::Path;

/// TCG's translation-block cache. QEMU's default (1 GiB) grows to hundreds of MiB resident per
/// VM over a guest's life; a bound keeps a packed host's memory predictable. At 24 MiB the
/// busybox boot re-translates a little and is no slower within noise, and a VM's private
/// overhead is 0.46x plain QEMU's (BENCHMARKS.md). `HOSTEL_TCG_TB_MIB` overrides the choice
/// for the whole host.
pub const TCG_TB_CACHE_MIB: u32 = 24;

/// Guests this big run a whole distribution (systemd, cloud-init's Python, sshd): a Debian 12
/// boot to its login prompt translates ~560 MiB of host code (QEMU's `info jit`: 1.08 M
/// blocks), so 24 MiB would be flushed some twenty times and every process's code translated
/// again: 74 s to SSH instead of 45 s. A quarter of the guest's RAM (256 MiB for the 1 GiB
/// default of an OS image), at most 512 MiB, boots within noise of QEMU's own 1 GiB.
const OS_GUEST_MIB: u64 = 512;
const TCG_TB_CACHE_MAX_MIB: u64 = 512;

/// The translation cache for a guest of `memory_mib`.
pub fn tcg_tb_cache_mib(memory_mib: u64) -> u32 {
    if let Some(m) = std::env::var("HOSTEL_TCG_TB_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&m| (8..=4096).contains(&m))
    {
        return m;
    }
    if memory_mib < OS_GUEST_MIB {
        return TCG_TB_CACHE_MIB;
    }
    // Bounded above, so the cast cannot truncate.
    (memory_mib / 4).clamp(u64::from(TCG_TB_CACHE_MIB), TCG_TB_CACHE_MAX_MIB) as u32
}

/// Kernel arguments that describe the virtual platform, not the guest's policy: the serial
/// console is ttyS0, microvm has no PCI bus, and the emulated TSC needs no calibration. The
/// two skipped initcalls are a kprobe-tracing set-up and a crypto self-test that
/// `cryptomgr.notests` misses: 0.37 s of every TCG boot (BENCHMARKS.md), and neither serves
/// a guest.
pub const PLATFORM_CMDLINE: &str =
    "console=ttyS0 tsc=reliable no_timer_check rcupdate.rcu_expedited=1 \
     cryptomgr.notests initcall_blacklist=init_kprobe_trace,crypto_kdf108_init";
const MICROVM_CMDLINE: &str = "pci=off";

/// The virtual CPU under TCG, named rather than left to QEMU's default so that it is the same
/// on every host a VM may migrate to. Without SVM: hostel offers no nested virtualization on
/// an emulated CPU (a hypervisor inside TCG would crawl), and a CPU that advertises SVM has
/// every Linux guest load `kvm` and `kvm_amd` at each boot, 0.6-1 s of the one vCPU under TCG
/// (BENCHMARKS.md).
pub const TCG_CPU_MODEL: &str = "qemu64,-svm";

/// How each network card reaches QEMU, resolved by launch (descriptors are opened by then).
#[derive(Debug, Clone)]
pub enum NicAttachment<'a> {
    TapFd(RawFd),
    VhostUser(&'a Path),
}

/// Descriptors and paths launch prepared for this QEMU process.
#[derive(Debug, Clone)]
pub struct Plumbing<'a> {
    pub qmp_listener: RawFd,
    pub console_listener: RawFd,
    /// The guest agent's channel (QEMU serves it; the daemon connects per call).
    pub agent_listener: RawFd,
    pub console_log: &'a Path,
    pub pidfile: &'a Path,
    pub disk_formats: &'a [DiskFormat],
    pub nics: Vec<NicAttachment<'a>>,
}

/// Queues a volume gets at most (the storage process offers this many per socket).
pub const VHOST_DISK_QUEUES: u32 = 4;

pub fn build(spec: &VmSpec, accel: Accel, p: &Plumbing<'_>) -> Vec<String> {
    let mut a = Args::default();
    let direct = matches!(spec.boot(), Boot::Kernel { .. });
    let mem = spec.memory_mib();
    a.push(["-nodefaults", "-no-user-config", "-display", "none", "-S"]);
    a.push(["-name", &format!("{},debug-threads=on", spec.name())]);
    // Shared memfd: vhost-user backends (switch, storage) map the guest's RAM directly.
    a.push([
        "-object",
        &format!("memory-backend-memfd,id=mem,size={mem}M,share=on"),
    ]);
    a.push(["-m", &format!("{mem}M")]);
    if direct {
        a.push([
            "-machine",
            "microvm,acpi=on,pcie=off,rtc=on,memory-backend=mem",
        ]);
        // QEMU's microvm defaults to legacy virtio-mmio, which vhost-user backends refuse.
        a.push(["-global", "virtio-mmio.force-legacy=false"]);
    } else {
        a.push(["-machine", "q35,memory-backend=mem"]);
    }
    a.push(["-smp", &spec.vcpus().to_string()]);
    match accel {
        Accel::Kvm => a.push(["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg => a.push([
            "-accel",
            &format!("tcg,thread=multi,tb-size={}", tcg_tb_cache_mib(mem)),
            "-cpu",
            TCG_CPU_MODEL,
        ]),
    }
    // The guest is hostile and QEMU is its first target: forbid what QEMU never needs here.
    a.push([
        "-sandbox",
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
    ]);
    if let Boot::Kernel {
        kernel,
        initrd,
        cmdline,
    } = spec.boot()
    {
        a.push(["-kernel", &kernel.display().to_string()]);
        if let Some(initrd) = initrd {
            a.push(["-initrd", &initrd.display().to_string()]);
        }
        let tsc = match (accel, crate::tsc::host_tsc_khz()) {
            (Accel::Tcg, Some(khz)) => format!(" tsc_early_khz={khz}"),
            _ => String::new(),
        };
        let full = format!("{PLATFORM_CMDLINE}{tsc} {MICROVM_CMDLINE} {cmdline}");
        a.push(["-append", full.trim_end()]);
    }
    a.push([
        "-chardev",
        &format!(
            "socket,id=console,fd={},server=on,wait=off,logfile={},logappend=on",
            p.console_listener,
            p.console_log.display()
        ),
    ]);
    a.push(["-serial", "chardev:console"]);
    a.push([
        "-chardev",
        &format!("socket,id=qmp,fd={},server=on,wait=off", p.qmp_listener),
    ]);
    a.push(["-mon", "chardev=qmp,mode=control"]);
    // QEMU writes (and on exit removes) its own pid file: the record a restarted daemon
    // finds the process by.
    a.push(["-pidfile", &p.pidfile.display().to_string()]);

    let (blk, net, serial) = if direct {
        (
            "virtio-blk-device",
            "virtio-net-device",
            "virtio-serial-device",
        )
    } else {
        ("virtio-blk-pci", "virtio-net-pci", "virtio-serial-pci")
    };
    // The guest agent's port, under the name qemu-guest-agent looks for. A guest without an
    // agent leaves it closed; QEMU then drops what the daemon writes and the daemon's call
    // ends at its deadline (adapters/agent in the daemon says how quickly).
    a.push([
        "-chardev",
        &format!("socket,id=qga,fd={},server=on,wait=off", p.agent_listener),
    ]);
    a.push(["-device", &format!("{serial},id=vser0,max_ports=2")]);
    a.push([
        "-device",
        "virtserialport,bus=vser0.0,chardev=qga,name=org.qemu.guest_agent.0",
    ]);
    for (i, (disk, format)) in spec.disks().iter().zip(p.disk_formats).enumerate() {
        a.push([
            "-blockdev",
            &format!(
                "driver={},node-name=disk{i},read-only={},discard=unmap,file.driver=file,file.node-name=disk{i}-file,file.filename={}",
                format.as_qemu(),
                on_off(disk.readonly),
                escape_opt(&disk.path.display().to_string()),
            ),
        ]);
        let boot = if !direct && i == 0 {
            ",bootindex=0"
        } else {
            ""
        };
        a.push(["-device", &format!("{blk},drive=disk{i}{boot}")]);
    }
    // Pool volumes: the storage process's sockets. `reconnect=1`: a restarted storage
    // process is found again and the guest's requests carry on (QEMU replays the rings).
    let vhost_blk = if direct {
        "vhost-user-blk"
    } else {
        "vhost-user-blk-pci"
    };
    let queues = spec.vcpus().clamp(1, VHOST_DISK_QUEUES);
    for (i, sock) in spec.vhost_disks().iter().enumerate() {
        a.push([
            "-chardev",
            &format!(
                "socket,id=vdisk{i},path={},reconnect=1",
                escape_opt(&sock.display().to_string())
            ),
        ]);
        a.push([
            "-device",
            &format!("{vhost_blk},id=vdisk{i}-dev,chardev=vdisk{i},num-queues={queues}"),
        ]);
    }
    for (i, (nic, attach)) in spec.nics().iter().zip(&p.nics).enumerate() {
        match attach {
            NicAttachment::TapFd(fd) => {
                a.push(["-netdev", &format!("tap,id=net{i},fd={fd},vhost=off")])
            }
            NicAttachment::VhostUser(path) => {
                a.push([
                    "-chardev",
                    &format!(
                        "socket,id=netsock{i},path={},reconnect=1",
                        escape_opt(&path.display().to_string())
                    ),
                ]);
                a.push([
                    "-netdev",
                    &format!("vhost-user,id=net{i},chardev=netsock{i}"),
                ]);
            }
        }
        let mac = nic.mac.map(|m| format!(",mac={m}")).unwrap_or_default();
        a.push(["-device", &format!("{net},netdev=net{i}{mac}")]);
    }
    a.0
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// QEMU option values escape ',' by doubling it.
fn escape_opt(s: &str) -> String {
    s.replace(',', ",,")
}

#[derive(Default)]
struct Args(Vec<String>);

impl Args {
    fn push<const N: usize>(&mut self, items: [&str; N]) {
        self.0.extend(items.iter().map(|s| s.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::VmSpecInput;

    fn spec(boot_from_disk: bool) -> VmSpec {
        VmSpecInput {
            kernel: (!boot_from_disk).then(|| "/boot/vmlinux".into()),
            boot_from_disk,
            cmdline: (!boot_from_disk).then(|| "quiet".into()),
            vcpus: Some(2),
            memory_mib: Some(256),
            disks: vec![crate::spec::DiskSpec {
                path: "/d/a,b.img".into(),
                format: None,
                readonly: true,
            }],
            nics: vec!["tap=tap0".parse().unwrap()],
            ..Default::default()
        }
        .validate()
        .unwrap()
    }

    fn plumbing() -> Plumbing<'static> {
        Plumbing {
            qmp_listener: 5,
            console_listener: 6,
            agent_listener: 8,
            console_log: Path::new("/run/x/console.log"),
            pidfile: Path::new("/run/x/qemu.pid"),
            disk_formats: &[DiskFormat::Raw],
            nics: vec![NicAttachment::TapFd(7)],
        }
    }

    #[test]
    fn direct_boot_uses_microvm_with_shared_memory_and_no_defaults() {
        let args = build(&spec(false), Accel::Tcg, &plumbing()).join(" ");
        assert!(args.contains("-nodefaults"));
        assert!(args.contains("microvm,acpi=on"));
        assert!(args.contains("memory-backend-memfd,id=mem,size=256M,share=on"));
        assert!(args.contains("virtio-mmio.force-legacy=false"));
        assert!(args.contains("tb-size="));
        assert!(args.contains("-cpu qemu64,-svm"), "{args}");
        assert!(args.contains("read-only=on"));
        assert!(args.contains("file.filename=/d/a,,b.img"), "{args}");
        assert!(args.contains("tap,id=net0,fd=7,vhost=off"));
        assert!(args.contains("virtio-net-device,netdev=net0,mac=52:54:"));
        assert!(args.contains("pci=off quiet"));
        assert!(
            args.contains("socket,id=qga,fd=8,server=on,wait=off"),
            "{args}"
        );
        assert!(args.contains("virtio-serial-device,id=vser0"), "{args}");
        assert!(args.contains("name=org.qemu.guest_agent.0"), "{args}");
    }

    #[test]
    fn translation_cache_grows_with_os_sized_guests_only() {
        if std::env::var_os("HOSTEL_TCG_TB_MIB").is_some() {
            return;
        }
        assert_eq!(tcg_tb_cache_mib(128), TCG_TB_CACHE_MIB);
        assert_eq!(tcg_tb_cache_mib(256), TCG_TB_CACHE_MIB);
        assert_eq!(tcg_tb_cache_mib(1024), 256);
        assert_eq!(tcg_tb_cache_mib(8192), 512);
        let args = build(&spec(false), Accel::Tcg, &plumbing()).join(" ");
        assert!(args.contains("tb-size=24"), "{args}");
    }

    #[test]
    fn disk_boot_uses_q35_and_pci_devices() {
        let args = build(&spec(true), Accel::Kvm, &plumbing()).join(" ");
        assert!(args.contains("q35,memory-backend=mem"));
        assert!(args.contains("-accel kvm -cpu host"));
        assert!(args.contains("virtio-blk-pci,drive=disk0,bootindex=0"));
        assert!(!args.contains("-kernel"));
    }
}
