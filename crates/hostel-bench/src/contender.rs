//! The two ways of booting the same guest that `bench-boot` compares.

use crate::memory::GuestRam;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Guest RAM of every benchmarked VM: the size hostel's tests use, and the issue's.
pub const GUEST_MIB: u64 = 128;

/// What the guest runs (through `hostel.run`) in every boot, both contenders alike.
///
/// It reports its uptime (so the host can tell the time before the guest's clock started
/// from the guest's own boot), then holds still for a second while the host samples memory
/// between the two markers; the host subtracts that pause from the time to exit.
pub const GUEST_SCRIPT: &str = "echo HOSTEL-BENCH-UPTIME $(cut -d' ' -f1 /proc/uptime); \
     echo HOSTEL-BENCH-SAMPLE; sleep 1; echo HOSTEL-BENCH-RESUME";

/// One way of starting a VM.
#[derive(Debug, Clone)]
pub enum Contender {
    /// `hostel run`, with the uncompressed vmlinux as hostel's users boot it.
    Hostel { binary: PathBuf },
    /// The plain QEMU command a typical tool uses: q35 with its default devices, the
    /// compressed bzImage and TCG.
    PlainQemu { binary: PathBuf },
}

impl Contender {
    pub fn label(&self) -> &'static str {
        match self {
            Contender::Hostel { .. } => "hostel run",
            Contender::PlainQemu { .. } => "plain QEMU (q35)",
        }
    }

    /// The argv that boots `guest_dir`'s assets with `run_b64` as `hostel.run`. `run_dir` is
    /// where hostel keeps its sockets and QEMU's pid file.
    pub fn argv(&self, guest_dir: &Path, run_b64: &str, run_dir: &Path) -> Vec<String> {
        let g = |f: &str| guest_dir.join(f).display().to_string();
        let mem = format!("{GUEST_MIB}M");
        match self {
            Contender::Hostel { binary } => vec![
                binary.display().to_string(),
                "run".into(),
                "--kernel".into(),
                g("vmlinux"),
                "--initrd".into(),
                g("initrd.img"),
                "--cmdline".into(),
                format!("quiet hostel.run={run_b64}"),
                "--run-dir".into(),
                run_dir.display().to_string(),
                "--vcpus".into(),
                "1".into(),
                "--memory".into(),
                mem,
            ],
            Contender::PlainQemu { binary } => vec![
                binary.display().to_string(),
                "-M".into(),
                "q35".into(),
                "-m".into(),
                mem,
                "-smp".into(),
                "1".into(),
                "-accel".into(),
                "tcg".into(),
                "-kernel".into(),
                g("vmlinuz"),
                "-initrd".into(),
                g("initrd.img"),
                "-append".into(),
                format!("console=ttyS0 hostel.run={run_b64}"),
                "-serial".into(),
                "stdio".into(),
                "-display".into(),
                "none".into(),
            ],
        }
    }

    pub fn command(&self, guest_dir: &Path, run_b64: &str, run_dir: &Path) -> Command {
        let argv = self.argv(guest_dir, run_b64, run_dir);
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    }

    /// The mapping in QEMU's smaps that is the guest's RAM.
    pub fn guest_ram(&self) -> GuestRam {
        match self {
            // hostel's QEMU args: `memory-backend-memfd,id=mem`, named after the object.
            Contender::Hostel { .. } => GuestRam::Memfd("/memfd:memory-backend-memfd".into()),
            Contender::PlainQemu { .. } => GuestRam::anonymous_mib(GUEST_MIB),
        }
    }

    /// Whether the spawned process is QEMU itself (else QEMU's pid is in the run dir).
    pub fn spawns_qemu_directly(&self) -> bool {
        matches!(self, Contender::PlainQemu { .. })
    }

    /// The argv for the documentation, with a placeholder for the base64 script.
    pub fn display_command(&self, guest_dir: &Path) -> String {
        self.argv(guest_dir, "<base64 script>", Path::new("<tmpdir>"))
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,".contains(c))
    {
        s.to_owned()
    } else {
        format!("\"{s}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_boot_the_same_script_and_memory() {
        let h = Contender::Hostel {
            binary: "hostel".into(),
        };
        let q = Contender::PlainQemu {
            binary: "qemu-system-x86_64".into(),
        };
        let (hg, qg) = (
            h.argv(Path::new("g"), "QUJD", Path::new("r")).join(" "),
            q.argv(Path::new("g"), "QUJD", Path::new("r")).join(" "),
        );
        assert!(hg.contains("hostel.run=QUJD") && qg.contains("hostel.run=QUJD"));
        assert!(hg.contains("--memory 128M") && qg.contains("-m 128M"));
        assert!(hg.contains("g/vmlinux") && qg.contains("g/vmlinuz"));
        assert_eq!(
            q.display_command(Path::new("target/guest")),
            "qemu-system-x86_64 -M q35 -m 128M -smp 1 -accel tcg -kernel target/guest/vmlinuz \
             -initrd target/guest/initrd.img -append \"console=ttyS0 hostel.run=<base64 script>\" \
             -serial stdio -display none"
        );
    }
}
