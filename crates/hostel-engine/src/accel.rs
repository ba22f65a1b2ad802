//! Choosing the accelerator. KVM only pays off with hardware virtualization: on hosts whose
//! `/dev/kvm` is PVM (`kvm_pvm`, no VT-x/AMD-V) a stock guest kernel stalls, so those get TCG.

use crate::spec::AccelChoice;
use std::fmt;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// What the host offers, read once from procfs/sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostVirt {
    pub hw_flags: bool,
    pub dev_kvm: bool,
    pub pvm: bool,
}

impl HostVirt {
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self::from_parts(
            &cpuinfo,
            Path::new("/dev/kvm").exists(),
            Path::new("/sys/module/kvm_pvm").exists(),
        )
    }

    pub fn from_parts(cpuinfo: &str, dev_kvm: bool, pvm: bool) -> Self {
        let hw_flags = cpuinfo
            .lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
        Self {
            hw_flags,
            dev_kvm,
            pvm,
        }
    }

    pub fn hardware_kvm(&self) -> bool {
        self.hw_flags && self.dev_kvm && !self.pvm
    }

    /// Why KVM is not usable, for the report.
    pub fn why_not_kvm(&self) -> Option<&'static str> {
        if !self.hw_flags {
            Some("the CPU has no VT-x/AMD-V")
        } else if !self.dev_kvm {
            Some("/dev/kvm is missing")
        } else if self.pvm {
            Some("/dev/kvm is kvm_pvm, which runs only PVM-built guest kernels")
        } else {
            None
        }
    }
}

/// The accelerator chosen and why, reported to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelDecision {
    pub accel: Accel,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("KVM was requested but {0}")]
pub struct KvmUnavailable(pub &'static str);

pub fn choose(choice: AccelChoice, host: &HostVirt) -> Result<AccelDecision, KvmUnavailable> {
    match (choice, host.why_not_kvm()) {
        (AccelChoice::Tcg, _) => Ok(AccelDecision {
            accel: Accel::Tcg,
            reason: "requested".into(),
        }),
        (AccelChoice::Kvm, Some(why)) => Err(KvmUnavailable(why)),
        (AccelChoice::Kvm, None) => Ok(AccelDecision {
            accel: Accel::Kvm,
            reason: "requested".into(),
        }),
        (AccelChoice::Auto, None) => Ok(AccelDecision {
            accel: Accel::Kvm,
            reason: "hardware virtualization available".into(),
        }),
        (AccelChoice::Auto, Some(why)) => Ok(AccelDecision {
            accel: Accel::Tcg,
            reason: format!("no hardware KVM: {why}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMX: &str = "processor : 0\nflags : fpu vme vmx sse\n";
    const NONE: &str = "processor : 0\nflags : fpu vme sse\n";

    #[test]
    fn auto_picks_kvm_only_with_real_hardware_support() {
        let kvm = HostVirt::from_parts(VMX, true, false);
        assert_eq!(choose(AccelChoice::Auto, &kvm).unwrap().accel, Accel::Kvm);
        let pvm = HostVirt::from_parts(VMX, true, true);
        assert_eq!(choose(AccelChoice::Auto, &pvm).unwrap().accel, Accel::Tcg);
        let plain = HostVirt::from_parts(NONE, true, false);
        let d = choose(AccelChoice::Auto, &plain).unwrap();
        assert_eq!(d.accel, Accel::Tcg);
        assert!(d.reason.contains("VT-x"));
    }

    #[test]
    fn forced_kvm_without_support_is_an_error() {
        let pvm = HostVirt::from_parts(NONE, true, true);
        assert!(choose(AccelChoice::Kvm, &pvm).is_err());
        assert_eq!(choose(AccelChoice::Tcg, &pvm).unwrap().accel, Accel::Tcg);
    }
}
