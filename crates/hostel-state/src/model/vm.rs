//! VM records: what a tenant asked for (spec, desired) next to what the
//! engine last saw (observed), so a reconciler can diff the two.

use serde::{Deserialize, Serialize};

use super::word_enum;
use crate::error::StoreError;
use crate::ids::{TenantId, VmId, VmName};
use crate::time::Timestamp;

/// Sanity ceilings, far above any real host, that keep per-tenant sums well
/// inside a signed 64-bit integer so quota arithmetic can never overflow.
pub const MAX_VCPUS: u32 = 4096;
pub const MAX_MEMORY_MIB: u64 = 64 * 1024 * 1024; // 64 TiB
pub const MAX_DISK_GIB: u64 = 1024 * 1024; // 1 PiB
/// Longest image reference / kernel command line accepted; anything longer is
/// a mistake or an attack on whoever renders it.
pub const MAX_TEXT_LEN: usize = 4096;
/// `last_exit` is truncated, not rejected, beyond this: losing the tail of a
/// crash reason is better than failing to record the crash at all.
pub const MAX_LAST_EXIT_LEN: usize = 4096;

word_enum!(
    /// What the engine does when the VM's process exits on its own.
    RestartPolicy {
        Never => "never",
        OnFailure => "on_failure",
        Always => "always",
    }
);

word_enum!(
    /// The state the tenant wants; the reconciler drives `observed` towards it.
    DesiredState {
        Running => "running",
        Stopped => "stopped",
    }
);

word_enum!(
    /// Lifecycle state last reported by the engine.
    ObservedState {
        Creating => "creating",
        Stopped => "stopped",
        Starting => "starting",
        Running => "running",
        Stopping => "stopping",
        Crashed => "crashed",
        Failed => "failed",
    }
);

word_enum!(
    /// An operation asked for and not yet finished: the reconciler finishes it after a crash
    /// of the daemon, so an acknowledged stop or delete is never lost. `stop`: the power
    /// button, then a kill at the deadline; `kill`: at once; `delete`: a kill, then the disks,
    /// the run directory and the record go.
    IntentOp {
        Stop => "stop",
        Kill => "kill",
        Delete => "delete",
    }
);

/// The pending operation of a VM and when a graceful stop turns into a kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmIntent {
    pub op: IntentOp,
    pub deadline: Timestamp,
}

/// The shape of a VM. Fields are private so that every value in circulation
/// has passed [`VmSpecRecord::new`] (or the same checks on deserialization).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawSpec")]
pub struct VmSpecRecord {
    vcpus: u32,
    memory_mib: u64,
    image: String,
    disk_gib: u64,
    cmdline: Option<String>,
    restart_policy: RestartPolicy,
}

/// Unvalidated mirror of [`VmSpecRecord`], used only as a serde staging area.
#[derive(Deserialize)]
struct RawSpec {
    vcpus: u32,
    memory_mib: u64,
    image: String,
    disk_gib: u64,
    #[serde(default)]
    cmdline: Option<String>,
    #[serde(default = "default_restart_policy")]
    restart_policy: RestartPolicy,
}

fn default_restart_policy() -> RestartPolicy {
    RestartPolicy::Never
}

impl TryFrom<RawSpec> for VmSpecRecord {
    type Error = StoreError;
    fn try_from(r: RawSpec) -> Result<Self, StoreError> {
        VmSpecRecord::new(r.vcpus, r.memory_mib, r.disk_gib, r.image)?
            .with_cmdline(r.cmdline)
            .map(|s| s.with_restart_policy(r.restart_policy))
    }
}

fn check_text(field: &'static str, s: &str, allow_empty: bool) -> Result<(), StoreError> {
    if !allow_empty && s.trim().is_empty() {
        return Err(StoreError::invalid(field, "must not be empty"));
    }
    if s.len() > MAX_TEXT_LEN {
        return Err(StoreError::invalid(
            field,
            format!("longer than {MAX_TEXT_LEN} bytes"),
        ));
    }
    // NUL and other control characters would truncate or corrupt the QEMU
    // command line and terminal output built from these strings.
    if s.chars().any(char::is_control) {
        return Err(StoreError::invalid(field, "contains control characters"));
    }
    Ok(())
}

impl VmSpecRecord {
    /// A spec with no kernel command line and [`RestartPolicy::Never`].
    pub fn new(
        vcpus: u32,
        memory_mib: u64,
        disk_gib: u64,
        image: impl Into<String>,
    ) -> Result<Self, StoreError> {
        let image = image.into();
        check_sizes(vcpus, memory_mib, disk_gib)?;
        check_text("image", &image, false)?;
        Ok(VmSpecRecord {
            vcpus,
            memory_mib,
            image,
            disk_gib,
            cmdline: None,
            restart_policy: RestartPolicy::Never,
        })
    }

    pub fn with_cmdline(mut self, cmdline: Option<String>) -> Result<Self, StoreError> {
        if let Some(c) = &cmdline {
            check_text("cmdline", c, true)?;
        }
        self.cmdline = cmdline;
        Ok(self)
    }

    pub fn with_restart_policy(mut self, policy: RestartPolicy) -> Self {
        self.restart_policy = policy;
        self
    }

    /// The same spec with new sizes — what a resize request produces.
    pub fn resized(&self, vcpus: u32, memory_mib: u64, disk_gib: u64) -> Result<Self, StoreError> {
        check_sizes(vcpus, memory_mib, disk_gib)?;
        Ok(VmSpecRecord {
            vcpus,
            memory_mib,
            disk_gib,
            ..self.clone()
        })
    }

    pub fn vcpus(&self) -> u32 {
        self.vcpus
    }
    pub fn memory_mib(&self) -> u64 {
        self.memory_mib
    }
    pub fn disk_gib(&self) -> u64 {
        self.disk_gib
    }
    pub fn image(&self) -> &str {
        &self.image
    }
    pub fn cmdline(&self) -> Option<&str> {
        self.cmdline.as_deref()
    }
    pub fn restart_policy(&self) -> RestartPolicy {
        self.restart_policy
    }
}

fn check_sizes(vcpus: u32, memory_mib: u64, disk_gib: u64) -> Result<(), StoreError> {
    if !(1..=MAX_VCPUS).contains(&vcpus) {
        return Err(StoreError::invalid(
            "vcpus",
            format!("must be between 1 and {MAX_VCPUS}"),
        ));
    }
    if !(1..=MAX_MEMORY_MIB).contains(&memory_mib) {
        return Err(StoreError::invalid(
            "memory_mib",
            format!("must be between 1 and {MAX_MEMORY_MIB}"),
        ));
    }
    if !(1..=MAX_DISK_GIB).contains(&disk_gib) {
        return Err(StoreError::invalid(
            "disk_gib",
            format!("must be between 1 and {MAX_DISK_GIB}"),
        ));
    }
    Ok(())
}

/// What the engine last saw of the VM's process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedStatus {
    pub state: ObservedState,
    pub pid: Option<u32>,
    /// When `state` was entered, as reported by the engine.
    pub since: Timestamp,
    /// Why the process last exited, e.g. "exit status 1" or "killed by SIGKILL".
    pub last_exit: Option<String>,
    pub restart_count: u32,
}

impl ObservedStatus {
    /// The status of a VM that has been recorded but not yet touched by the engine.
    pub fn creating(at: Timestamp) -> Self {
        ObservedStatus {
            state: ObservedState::Creating,
            pid: None,
            since: at,
            last_exit: None,
            restart_count: 0,
        }
    }

    /// Caps `last_exit` (see [`MAX_LAST_EXIT_LEN`]) on a char boundary.
    pub(crate) fn normalized(&self) -> ObservedStatus {
        let mut s = self.clone();
        if let Some(text) = &mut s.last_exit {
            if text.len() > MAX_LAST_EXIT_LEN {
                let mut cut = MAX_LAST_EXIT_LEN;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
        }
        s
    }
}

/// Input to VM creation: everything the caller chooses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewVm {
    /// `None`: the store picks a new random id. `Some`: the id of a VM the host booted ahead
    /// of the order (a standby), whose run directory and NIC MACs already derive from it.
    #[serde(default)]
    pub id: Option<VmId>,
    pub name: VmName,
    pub spec: VmSpecRecord,
    pub desired: DesiredState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vm {
    pub id: VmId,
    pub tenant: TenantId,
    pub name: VmName,
    pub spec: VmSpecRecord,
    pub desired: DesiredState,
    pub observed: ObservedStatus,
    pub created_at: Timestamp,
    /// The stop or delete under way, if any (see [`IntentOp`]).
    #[serde(default)]
    pub intent: Option<VmIntent>,
    /// Bumped on every change (spec, desired or observed); lets API clients
    /// do compare-and-set updates and lets watchers detect missed changes.
    pub generation: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_validation() {
        assert!(VmSpecRecord::new(2, 2048, 10, "debian-12").is_ok());
        assert!(VmSpecRecord::new(0, 2048, 10, "debian-12").is_err());
        assert!(VmSpecRecord::new(1, 0, 10, "debian-12").is_err());
        assert!(VmSpecRecord::new(1, 1, 0, "debian-12").is_err());
        assert!(VmSpecRecord::new(1, 1, 1, "  ").is_err());
        assert!(VmSpecRecord::new(1, 1, 1, "a\0b").is_err());
        let s = VmSpecRecord::new(1, 1, 1, "img").unwrap();
        assert!(s.clone().with_cmdline(Some("console=ttyS0".into())).is_ok());
        assert!(s.with_cmdline(Some("x\ny".into())).is_err());
    }

    #[test]
    fn spec_serde_validates() {
        let ok = r#"{"vcpus":2,"memory_mib":512,"image":"alpine","disk_gib":4}"#;
        let spec: VmSpecRecord = serde_json::from_str(ok).unwrap();
        assert_eq!(spec.restart_policy(), RestartPolicy::Never);
        let bad = r#"{"vcpus":0,"memory_mib":512,"image":"alpine","disk_gib":4}"#;
        assert!(serde_json::from_str::<VmSpecRecord>(bad).is_err());
        let round = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<VmSpecRecord>(&round).unwrap(), spec);
    }

    #[test]
    fn enums_round_trip_as_words() {
        for s in ObservedState::ALL {
            assert_eq!(s.as_str().parse::<ObservedState>().unwrap(), *s);
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{s}\""));
        }
        assert_eq!(RestartPolicy::OnFailure.as_str(), "on_failure");
    }

    #[test]
    fn last_exit_is_capped_on_char_boundary() {
        let mut st = ObservedStatus::creating(Timestamp::from_unix_millis(0));
        st.last_exit = Some("é".repeat(MAX_LAST_EXIT_LEN));
        let n = st.normalized();
        let text = n.last_exit.unwrap();
        assert!(text.len() <= MAX_LAST_EXIT_LEN && text.len() >= MAX_LAST_EXIT_LEN - 1);
    }
}

/// A VPS: its instance record (kind `vps`) and its slot of host UID/GID ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpsRecord {
    pub vm: Vm,
    pub slot: u32,
}
