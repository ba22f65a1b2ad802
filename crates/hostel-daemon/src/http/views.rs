//! Store records → API views.

use hostel_api::{AuditView, QuotaBody, TenantView, UsageBody, VmView};
use hostel_state::{AuditEntry, AuditResult, Quota, Tenant, Usage, Vm};

pub fn quota_body(q: &Quota) -> QuotaBody {
    QuotaBody {
        vcpus: q.max_vcpus,
        memory_mib: q.max_memory_mib,
        disk_gib: q.max_disk_gib,
        vms: q.max_vms,
        networks: q.max_networks,
        uplinks: q.max_uplinks,
        public_addresses: q.max_public_addresses,
    }
}

pub fn quota(b: &QuotaBody) -> Quota {
    Quota {
        max_vcpus: b.vcpus,
        max_memory_mib: b.memory_mib,
        max_disk_gib: b.disk_gib,
        max_vms: b.vms,
        max_networks: b.networks,
        max_uplinks: b.uplinks,
        max_public_addresses: b.public_addresses,
    }
}

pub fn tenant(t: &Tenant, u: &Usage) -> TenantView {
    TenantView {
        id: t.id.to_string(),
        name: t.name.to_string(),
        created_at: t.created_at.to_string(),
        quota: quota_body(&t.quota),
        usage: UsageBody {
            vcpus: u.vcpus,
            memory_mib: u.memory_mib,
            disk_gib: u.disk_gib,
            vms: u.vms,
            networks: u.networks,
            uplinks: u.uplinks,
            public_addresses: u.public_addresses,
        },
    }
}

pub fn vm(v: &Vm, tenant: &str) -> VmView {
    VmView {
        id: v.id.to_string(),
        tenant: tenant.to_string(),
        name: v.name.to_string(),
        vcpus: v.spec.vcpus(),
        memory_mib: v.spec.memory_mib(),
        disk_gib: v.spec.disk_gib(),
        image: v.spec.image().to_string(),
        cmdline: v.spec.cmdline().map(str::to_string),
        restart_policy: v.spec.restart_policy().to_string(),
        desired: v.desired.to_string(),
        state: v.observed.state.to_string(),
        pid: v.observed.pid,
        since: v.observed.since.to_string(),
        last_exit: v.observed.last_exit.clone(),
        restart_count: v.observed.restart_count,
        created_at: v.created_at.to_string(),
        nics: Vec::new(),
    }
}

pub fn audit(e: &AuditEntry, tenant: Option<String>) -> AuditView {
    AuditView {
        seq: e.seq,
        at: e.at.to_string(),
        actor: e.actor.to_string(),
        tenant,
        action: e.action.clone(),
        target: e.target.clone(),
        result: match &e.result {
            AuditResult::Ok => "ok".into(),
            AuditResult::Error(m) => format!("error: {m}"),
        },
    }
}
