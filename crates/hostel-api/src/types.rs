//! Request and response bodies of the v1 API.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The names of tenants, VMs and networks: 1 to 63 of `a-z`, `0-9` and `-`, not starting
/// or ending with `-` (a DNS label). The daemon refuses anything else with 400; the
/// OpenAPI document carries the same pattern.
pub const NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

/// Quotas a tenant gets for networks when its quota does not name them.
pub const DEFAULT_MAX_NETWORKS: u32 = 4;
pub const DEFAULT_MAX_UPLINKS: u32 = 1;
/// Public (floating) addresses a tenant may hold when its quota does not say.
pub const DEFAULT_MAX_PUBLIC_ADDRESSES: u32 = 2;

fn default_max_public_addresses() -> u32 {
    DEFAULT_MAX_PUBLIC_ADDRESSES
}

fn default_max_networks() -> u32 {
    DEFAULT_MAX_NETWORKS
}

fn default_max_uplinks() -> u32 {
    DEFAULT_MAX_UPLINKS
}

/// A size in MiB, written as a number of MiB or as text like "512M" or "2G".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Size {
    Mib(u64),
    Text(String),
}

impl Size {
    /// MiB, or why the text is not a size.
    pub fn to_mib(&self) -> Result<u64, SizeError> {
        match self {
            Size::Mib(n) => Ok(*n),
            Size::Text(s) => parse_mib(s),
        }
    }
}

/// Why a text is not a size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("{0:?} is not a size (e.g. 512, 512M, 2G)")]
    NotANumber(String),
    #[error("{text:?}: unknown unit {unit:?} (use M, G or T)")]
    Unit { text: String, unit: String },
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// Parses `512`, `512M`, `2G`, `1GiB` into MiB; a bare number is MiB.
pub fn parse_mib(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| SizeError::NotANumber(s.to_string()))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => 1,
        "g" | "gb" | "gib" => 1024,
        "t" | "tb" | "tib" => 1024 * 1024,
        _ => {
            return Err(SizeError::Unit {
                text: s.to_string(),
                unit: unit.to_string(),
            })
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| SizeError::TooLarge(s.to_string()))
}

/// A tenant's limits; the API replaces a quota whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
pub struct QuotaBody {
    pub vcpus: u32,
    #[schema(maximum = 9_223_372_036_854_775_807_u64)]
    pub memory_mib: u64,
    #[schema(maximum = 9_223_372_036_854_775_807_u64)]
    pub disk_gib: u64,
    pub vms: u32,
    /// Networks (default 4).
    #[serde(default = "default_max_networks")]
    pub networks: u32,
    /// Networks with an uplink, each a device in the host (default 1).
    #[serde(default = "default_max_uplinks")]
    pub uplinks: u32,
    /// Floating public addresses on the external network (default 2).
    #[serde(default = "default_max_public_addresses")]
    pub public_addresses: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
pub struct UsageBody {
    pub vcpus: u64,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub vms: u64,
    #[serde(default)]
    pub networks: u64,
    #[serde(default)]
    pub uplinks: u64,
    #[serde(default)]
    pub public_addresses: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateTenant {
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// Defaults to a small quota (4 vCPUs, 4 GiB, 50 GiB disk, 4 VMs, 4 networks, 1 uplink).
    #[serde(default)]
    pub quota: Option<QuotaBody>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub quota: QuotaBody,
    pub usage: UsageBody,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Default)]
pub struct CreateToken {
    /// A label to recognise the token by (default `default`): 1 to 128 printable
    /// characters.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\x00-\\x1f\\x7f]*[^\\s\\x00-\\x1f\\x7f][^\\x00-\\x1f\\x7f]*$"
    )]
    pub name: Option<String>,
}

/// An API token as listed: never its secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    /// The tenant it acts as; none for the operator's token.
    pub tenant: Option<String>,
    pub name: String,
    pub created_at: String,
}

/// A new API token; `secret` is shown this once and never stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenIssued {
    pub id: String,
    pub tenant: Option<String>,
    pub name: String,
    pub secret: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Default)]
pub struct CreateVm {
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 255)]
    pub vcpus: Option<u32>,
    /// MiB as a number, or text such as "512M".
    #[serde(default)]
    pub memory: Option<Size>,
    /// Defaults to `busybox`.
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_048_576)]
    pub disk_gib: Option<u64>,
    /// Extra kernel command line for direct-boot images.
    #[serde(default)]
    pub cmdline: Option<String>,
    /// `never` (default), `on_failure` or `always`.
    #[serde(default)]
    #[schema(pattern = "^(never|on_failure|always)$")]
    pub restart_policy: Option<String>,
    /// Start it right away (default true).
    #[serde(default)]
    pub start: Option<bool>,
    /// Network cards, in order (eth0, eth1, ...), each on one of the tenant's networks.
    #[serde(default)]
    pub networks: Vec<NicRequest>,
    /// OS images: the guest's host name (defaults to the VM's name).
    #[serde(default)]
    pub hostname: Option<String>,
    /// OS images: SSH public keys (`ssh-ed25519 AAAA... me@laptop`) for the default user.
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// OS images: cloud-init user-data (any format cloud-init reads), passed through as given.
    #[serde(default)]
    pub user_data: Option<String>,
    /// OS images: a service template (`web`, `database`); its image is the VM's image.
    #[serde(default)]
    pub service: Option<String>,
    /// The service template's parameters.
    #[serde(default)]
    pub service_params: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NicRequest {
    /// The tenant's network, by name.
    pub network: String,
    /// A fixed address in its subnet; allocated when absent.
    #[serde(default)]
    #[schema(format = Ipv4)]
    pub ip: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NicView {
    pub network: String,
    pub mac: String,
    pub ipv4: Option<String>,
    /// The SLAAC address the guest takes on an IPv6 network.
    #[serde(default)]
    pub ipv6: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateNetwork {
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// IPv4 subnet in CIDR notation, e.g. "10.0.0.0/24".
    pub subnet: String,
    /// The switch's address on it; defaults to the first host address.
    #[serde(default)]
    #[schema(format = Ipv4)]
    pub gateway: Option<String>,
    /// Give the network an uplink: a TAP device in the host (named in the network's view)
    /// that carries traffic for addresses no VM of the network owns, untranslated. Without
    /// one the network reaches only its own VMs.
    #[serde(default)]
    pub uplink: bool,
    /// IPv6 prefix, a /64 (e.g. "fd00:1::/64"): the switch advertises it and each VM
    /// configures its own address by SLAAC, shown in the ports' `ipv6`.
    #[serde(default)]
    pub subnet6: Option<String>,
}

/// A network's uplink as the host sees it, with the switch's counters for it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UplinkView {
    /// The TAP device's name in the host (at most 15 bytes).
    pub interface: String,
    /// Whether the switch has the device open right now.
    pub attached: bool,
    /// Frames the switch delivered from the host into the network.
    pub from_host_packets: u64,
    /// Frames the switch sent out to the host.
    pub to_host_packets: u64,
    pub drops: std::collections::BTreeMap<String, u64>,
}

/// One port of a network: a VM's NIC, its address and the switch's counters for it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PortView {
    pub vm: String,
    pub nic: u32,
    pub mac: String,
    pub ipv4: Option<String>,
    #[serde(default)]
    pub ipv6: Option<String>,
    /// Whether the VM's NIC is attached to the switch right now.
    pub connected: bool,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Dropped frames by reason (e.g. `spoofed_src_ip`).
    pub drops: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NetworkView {
    pub id: String,
    pub name: String,
    pub subnet: String,
    pub gateway: String,
    #[serde(default)]
    pub subnet6: Option<String>,
    #[serde(default)]
    pub uplink: Option<UplinkView>,
    /// Its attachment to the host's external network, if any.
    #[serde(default)]
    pub external: Option<crate::edge::NetworkExternalView>,
    /// Its security appliance, if one is designated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appliance: Option<crate::edge::ApplianceView>,
    pub ports: Vec<PortView>,
}

/// New shape for a VM; takes effect at its next start.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Default)]
pub struct ResizeVm {
    #[serde(default)]
    #[schema(minimum = 1, maximum = 255)]
    pub vcpus: Option<u32>,
    #[serde(default)]
    pub memory: Option<Size>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_048_576)]
    pub disk_gib: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Default)]
pub struct StopVm {
    /// Skip the guest's graceful shutdown.
    #[serde(default)]
    pub force: bool,
    /// Seconds the guest gets to power off before QEMU is stopped (default 30, at most 300).
    #[serde(default)]
    #[schema(maximum = 300)]
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VmView {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub image: String,
    pub cmdline: Option<String>,
    pub restart_policy: String,
    /// What the tenant asked for: `running` or `stopped`.
    pub desired: String,
    /// What the host last saw: `creating`, `starting`, `running`, `stopping`, `stopped`, `crashed`, `failed`.
    pub state: String,
    pub pid: Option<u32>,
    pub since: String,
    pub last_exit: Option<String>,
    pub restart_count: u32,
    pub created_at: String,
    #[serde(default)]
    pub nics: Vec<NicView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditView {
    pub seq: u64,
    pub at: String,
    pub actor: String,
    pub tenant: Option<String>,
    pub action: String,
    pub target: String,
    pub result: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Default)]
pub struct ImageView {
    pub name: String,
    pub description: String,
    /// `ready`, `building` or `failed` (a failed build registers nothing; its error stays
    /// visible here until the next build of the name).
    #[serde(default)]
    pub state: String,
    /// `builtin` (busybox), `built`, `derived` (a service template's) or `imported`.
    #[serde(default)]
    pub kind: String,
    /// Guest-visible disk size (the smallest disk a VM of it can have).
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// Space the image takes on the host.
    #[serde(default)]
    pub stored_bytes: Option<u64>,
    /// While building: the phase (`prepare`, `bootstrap`, `packages`, ...) and 0-100.
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub percent: Option<u8>,
    #[serde(default)]
    pub message: Option<String>,
    /// Why the last build failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// Build an image of the catalog (`debian-12`, `debian-12-web`, `debian-12-database`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Default)]
pub struct BuildImage {
    pub name: String,
}

/// Import a raw or qcow2 disk file lying on the daemon's host.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Default)]
pub struct ImportImage {
    pub name: String,
    /// Absolute path on the daemon's host.
    pub path: String,
    /// For a bare filesystem image: a kernel and initramfs to boot it directly (host paths).
    #[serde(default)]
    pub kernel: Option<String>,
    #[serde(default)]
    pub initrd: Option<String>,
    /// Guest command line for direct boot (default `root=/dev/vda rw`).
    #[serde(default)]
    pub cmdline: Option<String>,
}

/// How far the host may promise more than it has.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostSettings {
    /// Sum of running VMs' memory may reach host memory times this.
    pub memory_overcommit: f64,
    /// Sum of running VMs' vCPUs may reach host CPUs times this.
    pub cpu_overcommit: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HostView {
    pub cpus: u32,
    pub memory_mib: u64,
    pub settings: HostSettings,
    pub committed_vcpus: u64,
    pub committed_memory_mib: u64,
    pub accelerator: String,
    /// VMs booted ahead of the order, per image (`hostel daemon --standby`).
    #[serde(default)]
    pub standby: Vec<StandbyView>,
}

/// The standbys of one image: a create of their shape takes a ready one instead of booting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StandbyView {
    pub image: String,
    /// How many the operator asked to keep.
    pub wanted: u32,
    /// Booted as far as they go without a seed, waiting for a create.
    pub ready: u32,
    /// Still booting towards that point.
    pub booting: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `invalid`, `not_found`, `quota_exceeded`.
    pub code: String,
    pub message: String,
    /// The request field at fault, when there is one.
    #[serde(default)]
    pub field: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiErrorBody {
    pub error: ErrorBody,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_from_numbers_and_text() {
        assert_eq!(Size::Mib(256).to_mib().unwrap(), 256);
        assert_eq!(Size::Text("2G".into()).to_mib().unwrap(), 2048);
        assert!(Size::Text("lots".into()).to_mib().is_err());
        let v: CreateVm = serde_json::from_str(r#"{"name":"a","memory":"512M"}"#).unwrap();
        assert_eq!(v.memory.unwrap().to_mib().unwrap(), 512);
        let v: CreateVm = serde_json::from_str(r#"{"name":"a","memory":64}"#).unwrap();
        assert_eq!(v.memory.unwrap().to_mib().unwrap(), 64);
    }
}
