//! `bench-images` results: what one boot of an OS image measured, the guest's own clock read
//! off its serial console, and the BENCHMARKS.md section.

use crate::machine::Machine;
use crate::stats::Summary;
use crate::table::{hostel_vs_plain, Row};

pub const BEGIN: &str = "<!-- bench-images:begin -->";
pub const END: &str = "<!-- bench-images:end -->";

/// The goal for hostel's time to SSH, as a fraction of plain QEMU's.
pub const GOAL: f64 = 0.8;

/// Where the time goes, from the console transcripts the benchmark keeps
/// (target/bench-images/); printed under the table.
pub const NOTES: &str = "\
**Where the time goes** (`bench-images --analyze`: `systemd-analyze`, `cloud-init analyze`, \
`/proc/stat` at the first login; per-unit CPU time and QEMU's `info jit` from boots to the \
login prompt by hand):

- The guest is busy all the time: at the first SSH login its vCPU has been idle or waiting \
for I/O under 1% of the boot (user ~60%, kernel ~38%), so only less work shortens a boot. \
Both sides run the same guest doing the same work, and sshd is late in it: Debian's \
`cloud-init.service` orders itself before `sysinit.target`, so sshd waits for both of \
cloud-init's early stages. By CPU time at the login prompt (one boot, 96 s busy): \
cloud-init's four Python stages 53 s, sshd 16 s (with a restart and the first login), \
systemd itself 15 s, udev 9 s, ifupdown and resolvconf 10 s. A Python stage is mostly \
Python starting and importing cloud-init (requests, jsonschema, jinja2: 5.4 s even once the \
guest is up) with nothing translated yet: under TCG a boot is mostly translating code seen \
for the first time (~1.1 M translation blocks, 560–610 MiB of host code by the login \
prompt), and every new process maps its libraries at new random addresses, so their code \
is translated again.
- **What is hostel's alone** is the platform: microvm without firmware or PCI, direct boot, \
the tuned command line, a named CPU model without SVM (a CPU that advertises it has Linux \
load `kvm` and `kvm_amd` at every boot, 0.6–1 s of the vCPU under TCG; hostel offers no \
nested virtualization on an emulated CPU) and hostel's own initramfs (a static busybox, the \
image's virtio-mmio and virtio-blk modules and a script that mounts `root=` and \
`switch_root`s, instead of initramfs-tools starting udev and replaying every device event to \
find the one disk, which the real root's udev then does again). `systemd-analyze` puts \
kernel + initramfs at 1.9–2.7 s for hostel against 6.6–9.5 s for plain QEMU's q35 with the \
Debian initramfs (which also runs SeaBIOS before the guest clock starts); cloud-init's \
`init-local` starts 13–20 s earlier on hostel (table). Once systemd runs, the services cost \
the same on both sides: two paired hand boots read every cgroup's `cpu.stat` at sshd's \
start, and `system.slice` had used 56–58 s of CPU on hostel against 56–63 s on plain QEMU; \
the 9–14 s hostel saves is the kernel's share (initramfs, firmware, devices). An entropy \
device (virtio-rng: the guest's RNG ready at 2.3 s instead of 17 s) was tried and withdrawn \
after one unexplained boot stall in CI (BENCHMARKS' investigation).
- **In the image** (both sides boot it, so it shortens both columns by the same seconds, \
and hostel's lead becomes a larger share): units with nothing to do in a hostel VM are \
disabled or masked (`e2scrub_reap`, which ran 13–26 s beside `cloud-init-local`; \
`systemd-pstore`; `modprobe@dm_mod`, `@drm`, `@efi_pstore`; `dpkg-db-backup.timer`); \
cloud-init modules that cannot apply are left out (`grub-dpkg` ~1 s, snap, fan, landscape, \
EC2, IBM RMC, RightScale); `datasource_list` is pinned to NoCloud and SSH host keys are \
ed25519 and ECDSA only. Since 2026-12-01: `sshd_config` already says \
`PasswordAuthentication no`, so cloud-init's `set-passwords` no longer restarts sshd in the \
middle of the first logins, and `cloud-config`/`cloud-final` (which start beside sshd) run \
with `CPUWeight=20`, so a login goes first: port 22 to a working login fell from 7–8 s to \
3–5 s on both sides.
- **Fixed: TCG's translation cache.** hostel gave every VM 24 MiB (right for the busybox \
guest, BENCHMARKS' bench-boot); a Debian boot flushed it some twenty times and took 74 s to \
SSH against 45 s with QEMU's 1 GiB. The engine gives guests of 512 MiB or more a quarter of \
their RAM (256 MiB for the 1 GiB default, at most 512 MiB), no slower than 512 MiB or 1 GiB \
within noise; busybox-sized guests keep 24 MiB.
- Tried and not kept (hand boots to the login prompt): QEMU 10.0 from bookworm-backports \
(86 s and 86 s against 84 s and 80 s for 7.2: no faster); `norandmaps` (70 s against \
80–84 s: the re-translation above, but it switches off the tenant's ASLR); `-cpu max` \
(slower); `init_on_alloc=0 mitigations=off` (no difference, and they too weaken the guest); \
anonymous guest RAM with THP instead of the shared memfd (no difference); QEMU without \
`-sandbox` (seven pairs: +6.4 to −1.2 s, not conclusive).
- The host is shared (other engineers' VMs and builds; load averages are in the header) and \
its speed drifts: on 2026-12-01 the same boot took 65–120 s at different hours. Single boots \
of one configuration vary by ±25%, so the medians of a few runs move by several seconds \
between runs; the rounds alternate so that both sides see the same drift.";

/// One boot, host times in seconds from the command that starts it (`hostel vm create` or
/// spawning QEMU), guest times in seconds of the guest's uptime.
#[derive(Debug, Clone, Default)]
pub struct ImageSample {
    /// `hostel vm create` returned (the VM is running); `None` for plain QEMU.
    pub created_s: Option<f64>,
    /// The serial console showed the getty's `login:` prompt.
    pub login_prompt_s: Option<f64>,
    /// A TCP connection to port 22 was accepted.
    pub port_s: f64,
    /// `ssh -i KEY debian@ADDR true` succeeded: the measured figure.
    pub ssh_s: f64,
    pub guest: GuestClock,
}

/// Milestones on the guest's clock, from cloud-init's console lines ("Up N seconds").
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GuestClock {
    /// `init-local` started: kernel, initramfs and systemd's early boot are behind.
    pub init_local: Option<f64>,
    /// `init` (network stage) started: the NICs are configured.
    pub init: Option<f64>,
    /// `modules:config` started.
    pub config: Option<f64>,
    /// `modules:final` started.
    pub final_start: Option<f64>,
    /// cloud-init's final message: everything it was given has run.
    pub finished: Option<f64>,
}

impl GuestClock {
    /// Reads cloud-init's stage lines out of a console transcript.
    pub fn parse(console: &str) -> Self {
        let mut g = GuestClock::default();
        for line in console.lines() {
            let Some(up) = up_seconds(line) else { continue };
            let slot = if line.contains("running 'init-local'") {
                &mut g.init_local
            } else if line.contains("running 'init'") {
                &mut g.init
            } else if line.contains("running 'modules:config'") {
                &mut g.config
            } else if line.contains("running 'modules:final'") {
                &mut g.final_start
            } else if line.contains(" finished at ") {
                &mut g.finished
            } else {
                continue;
            };
            slot.get_or_insert(up);
        }
        g
    }
}

/// The N of "Up N seconds" in a cloud-init line.
fn up_seconds(line: &str) -> Option<f64> {
    let rest = line.split("Up ").last()?;
    let n = rest.split_whitespace().next()?;
    n.parse().ok()
}

/// Everything one `bench-images` run produced.
#[derive(Debug, Clone, Default)]
pub struct ImageResults {
    pub hostel: Vec<ImageSample>,
    pub plain: Vec<ImageSample>,
    pub hostel_failures: usize,
    pub plain_failures: usize,
}

/// Host times are tenths of a second apart at best (port 22 and the console are polled every
/// 100 ms), and boots take tens of seconds.
const DIGITS: usize = 1;

const ROWS: &[Row<ImageSample>] = &[
    Row {
        label: "**Time to SSH login** (`ssh -i KEY debian@ADDR true` succeeds, s)",
        get: |s| Some(s.ssh_s),
        digits: DIGITS,
        goal: Some(GOAL),
        plain_has: true,
    },
    Row {
        label: "↳ `hostel vm create` returned, VM running (s)",
        get: |s| s.created_s,
        digits: DIGITS,
        goal: None,
        plain_has: true,
    },
    Row {
        label: "↳ port 22 accepts a connection (s)",
        get: |s| Some(s.port_s),
        digits: DIGITS,
        goal: None,
        plain_has: true,
    },
    Row {
        label: "↳ `login:` prompt on the serial console (s)",
        get: |s| s.login_prompt_s,
        digits: DIGITS,
        goal: None,
        plain_has: true,
    },
    Row {
        label: "guest clock: cloud-init `init-local` starts (kernel, initramfs, early systemd; s)",
        get: |s| s.guest.init_local,
        digits: DIGITS,
        goal: None,
        plain_has: true,
    },
    Row {
        label: "guest clock: cloud-init `init` (network, SSH host keys) starts (s)",
        get: |s| s.guest.init,
        digits: DIGITS,
        goal: None,
        plain_has: true,
    },
];

/// The markdown table: hostel and plain QEMU side by side, with the ratio of medians.
pub fn table(r: &ImageResults) -> String {
    hostel_vs_plain("hostel (daemon, `vm create`)", ROWS, &r.hostel, &r.plain)
}

/// The rounds side by side. The ratio of medians is the figure; the per-round ratios show how
/// far the shared host's drift moves it. Only complete runs pair up: a failed boot would
/// shift every later round.
pub fn per_round(r: &ImageResults) -> String {
    let paired = r.hostel_failures == 0 && r.plain_failures == 0;
    if !paired || r.hostel.len() != r.plain.len() || r.hostel.is_empty() {
        return "Per round: not paired (a boot failed), so only the medians compare.".into();
    }
    let (rounds, ratios): (Vec<String>, Vec<f64>) = r
        .hostel
        .iter()
        .zip(&r.plain)
        .map(|(h, p)| {
            let q = h.ssh_s / p.ssh_s;
            (format!("{:.1} / {:.1} ({q:.2})", h.ssh_s, p.ssh_s), q)
        })
        .unzip();
    let median = Summary::of(&ratios).map_or(f64::NAN, |s| s.median);
    format!(
        "Per round, time to SSH login (hostel / plain QEMU, s): {}; the median of the \
per-round ratios is {median:.2}.",
        rounds.join(", ")
    )
}

/// Inputs of the section besides the results.
pub struct SectionInfo<'a> {
    pub invocation: &'a str,
    pub machine: &'a Machine,
    pub load_after: &'a str,
    pub runs: usize,
    /// Whether plain QEMU had its unmeasured first boot too (hostel always has one: it makes
    /// the seed).
    pub warm_up: bool,
    pub accelerator: &'a str,
    pub hostel_command: &'a str,
    pub plain_command: &'a str,
    /// Whether hostel's VMs came from a standby (`hostel daemon --standby debian-12`).
    pub standby: bool,
    /// What was found about where the time goes (written by hand, kept in the code).
    pub notes: &'a str,
}

/// The whole `bench-images` section, markers included.
pub fn section(r: &ImageResults, i: &SectionInfo<'_>) -> String {
    let m = i.machine;
    format!(
        "{BEGIN}\n\
## bench-images: a Debian 12 VM to SSH, hostel vs plain QEMU\n\n\
- Command: `make bench-images`, i.e. `{invocation}`\n\
- Machine: {host}, \
accelerator {accel}; shared with other builds (load average {load_before} before, \
{load_after} after)\n\
- Runs: {runs} boots each, alternating (who goes first swaps every round), after {warm}; \
failed boots: hostel {hf}, plain {pf}\n\
- Both boot the `debian-12` image (systemd, cloud-init, OpenSSH; the very files: the \
daemon's copy, imported from the built image) from a fresh qcow2 overlay with the same \
NoCloud seed (the hostel VM's, copied: host name, the benchmark's SSH key, a static address) \
and the image's kernel, 1 vCPU, 1 GiB; first boot every time (new SSH host keys, root \
filesystem grown). The initramfs differs: hostel boots its own (`initrd-hostel.img`, made \
from the image's modules at build time), plain QEMU the image's Debian one (`initrd.img`), \
as anyone booting the image by hand would\n\
- hostel: `{hostel}` through a daemon the benchmark starts, the NIC on a network with an \
uplink whose TAP sits in a namespace with the gateway's address. {mode}\n\
- Plain QEMU: `{plain}`, the TAP in a namespace with the gateway's address\n\n\
{table}\n\
{per_round}\n\n\
Host times run from the command that starts the VM to the event, observed from the network \
namespace: port 22 by a TCP connect every 100 ms, then `ssh` logins until one succeeds. The \
console prompt is seen by polling the serial console's log file. Guest-clock rows are \
cloud-init's own \"Up N seconds\" on the console.\n\n\
{notes}\n\
{END}\n",
        invocation = i.invocation,
        host = m.describe(),
        accel = i.accelerator,
        load_before = m.loadavg,
        load_after = i.load_after,
        runs = i.runs,
        warm = if i.warm_up {
            "one unmeasured warm-up boot each"
        } else {
            "one unmeasured hostel boot (`--no-warm-up`: none for plain QEMU)"
        },
        hf = r.hostel_failures,
        pf = r.plain_failures,
        hostel = i.hostel_command,
        mode = if i.standby {
            "The daemon keeps one standby of debian-12 (`--standby debian-12`): the create \
takes it, a VM booted as far as cloud-init's search for its seed before the order, and \
cloud-init then configures it from this VM's seed as on a first boot (guest-clock rows \
therefore count from the standby's boot). Every boot of either side starts only once the \
pool holds a ready standby again, so no standby boots beside a measurement"
        } else {
            "Every VM boots cold (`--cold`: no standby)"
        },
        plain = i.plain_command,
        table = table(r),
        per_round = per_round(r),
        notes = i.notes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "\
[   26.374789] cloud-init[272]: Cloud-init v. 22.4.2 running 'init-local' at Mon, 23 Nov 2026 11:25:07 +0000. Up 26.00 seconds.
[   40.444854] cloud-init[344]: Cloud-init v. 22.4.2 running 'init' at Mon, 23 Nov 2026 11:25:21 +0000. Up 39.93 seconds.
hostel-db-test login: [   76.215697] cloud-init[414]: Cloud-init v. 22.4.2 running 'modules:config' at Mon, 23 Nov 2026 11:25:57 +0000. Up 75.52 seconds.
[   86.027652] cloud-init[442]: Cloud-init v. 22.4.2 running 'modules:final' at Mon, 23 Nov 2026 11:26:07 +0000. Up 85.40 seconds.
[  101.260455] cloud-init[442]: Cloud-init v. 22.4.2 finished at Mon, 23 Nov 2026 11:26:22 +0000. Datasource DataSourceNoCloud [seed=/dev/vdb][dsmode=net].  Up 101.04 seconds
";

    #[test]
    fn guest_clock_from_cloud_init_lines() {
        let g = GuestClock::parse(CONSOLE);
        assert_eq!(g.init_local, Some(26.0));
        assert_eq!(g.init, Some(39.93));
        assert_eq!(g.config, Some(75.52));
        assert_eq!(g.final_start, Some(85.40));
        assert_eq!(g.finished, Some(101.04));
        assert_eq!(
            GuestClock::parse("no cloud-init here"),
            GuestClock::default()
        );
    }

    #[test]
    fn table_compares_medians_against_the_goal() {
        let s = |ssh: f64, created: Option<f64>| ImageSample {
            ssh_s: ssh,
            port_s: ssh - 1.0,
            created_s: created,
            ..Default::default()
        };
        let r = ImageResults {
            hostel: vec![s(40.0, Some(0.5)), s(44.0, Some(0.7))],
            plain: vec![s(60.0, None), s(60.0, None)],
            ..Default::default()
        };
        let t = table(&r);
        let ssh = t.lines().find(|l| l.contains("Time to SSH")).unwrap();
        assert!(ssh.contains("42.0 (40.0–44.0)"), "{ssh}");
        assert!(ssh.contains("| 0.70 |") && ssh.contains("met"), "{ssh}");
        let created = t.lines().find(|l| l.contains("create` returned")).unwrap();
        assert!(created.contains("0.6 (0.5–0.7) | — | —"), "{created}");
        let r = ImageResults {
            hostel: vec![s(55.0, None)],
            plain: vec![s(60.0, None)],
            ..Default::default()
        };
        assert!(table(&r).contains("**missed**"));
    }

    #[test]
    fn rounds_pair_up_only_when_no_boot_failed() {
        let s = |ssh: f64| ImageSample {
            ssh_s: ssh,
            ..Default::default()
        };
        let mut r = ImageResults {
            hostel: vec![s(40.0), s(60.0), s(45.0)],
            plain: vec![s(50.0), s(60.0), s(90.0)],
            ..Default::default()
        };
        let line = per_round(&r);
        assert!(line.contains("40.0 / 50.0 (0.80), 60.0 / 60.0 (1.00), 45.0 / 90.0 (0.50)"));
        assert!(line.ends_with("ratios is 0.80."), "{line}");
        r.plain_failures = 1;
        assert!(per_round(&r).contains("not paired"));
    }
}
