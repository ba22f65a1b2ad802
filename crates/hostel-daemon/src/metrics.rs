//! `/metrics` in Prometheus text format: per-VM state and size, the host CPU time and
//! resident memory of each VM's QEMU, and per-tenant usage against quota.

use hostel_state::{ObservedState, Store};
use std::fmt::Write;

/// CPU seconds and resident bytes of a process, from procfs.
pub fn process_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command name: state is field 3, utime 14, stime 15, rss 24 (1-based).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let rss_pages: u64 = fields.get(21)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    Some(((utime + stime) as f64 / tck, rss_pages * page))
}

/// Reads the store and procfs, so it blocks: callers run it off the async workers.
pub fn render(store: &dyn Store) -> Result<String, hostel_state::StoreError> {
    let tenants = store.list_tenants()?;
    let names: std::collections::HashMap<_, _> =
        tenants.iter().map(|t| (t.id, t.name.to_string())).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP hostel_vm_state 1 for the state each VM is in.\n# TYPE hostel_vm_state gauge"
    );
    let vms = store.list_all_vms()?;
    for vm in &vms {
        let tenant = names.get(&vm.tenant).map(String::as_str).unwrap_or("");
        for s in ObservedState::ALL {
            let _ = writeln!(
                out,
                "hostel_vm_state{{tenant=\"{tenant}\",vm=\"{}\",state=\"{s}\"}} {}",
                vm.name,
                u8::from(*s == vm.observed.state)
            );
        }
    }
    let _ = writeln!(out, "# TYPE hostel_vm_vcpus gauge\n# TYPE hostel_vm_memory_bytes gauge\n# TYPE hostel_vm_restarts_total counter\n# TYPE hostel_vm_cpu_seconds_total counter\n# TYPE hostel_vm_resident_bytes gauge");
    for vm in &vms {
        let tenant = names.get(&vm.tenant).map(String::as_str).unwrap_or("");
        let labels = format!("tenant=\"{tenant}\",vm=\"{}\"", vm.name);
        let _ = writeln!(out, "hostel_vm_vcpus{{{labels}}} {}", vm.spec.vcpus());
        let _ = writeln!(
            out,
            "hostel_vm_memory_bytes{{{labels}}} {}",
            vm.spec.memory_mib() << 20
        );
        let _ = writeln!(
            out,
            "hostel_vm_restarts_total{{{labels}}} {}",
            vm.observed.restart_count
        );
        if let Some((cpu, rss)) = vm.observed.pid.and_then(process_usage) {
            let _ = writeln!(out, "hostel_vm_cpu_seconds_total{{{labels}}} {cpu}");
            let _ = writeln!(out, "hostel_vm_resident_bytes{{{labels}}} {rss}");
        }
    }
    let _ = writeln!(
        out,
        "# TYPE hostel_tenant_usage gauge\n# TYPE hostel_tenant_quota gauge"
    );
    for t in &tenants {
        let u = store.tenant_usage(&t.id)?;
        for (res, used, quota) in [
            ("vcpus", u.vcpus, u64::from(t.quota.max_vcpus)),
            ("memory_mib", u.memory_mib, t.quota.max_memory_mib),
            ("disk_gib", u.disk_gib, t.quota.max_disk_gib),
            ("vms", u.vms, u64::from(t.quota.max_vms)),
            (
                "public_addresses",
                u.public_addresses,
                u64::from(t.quota.max_public_addresses),
            ),
        ] {
            let _ = writeln!(
                out,
                "hostel_tenant_usage{{tenant=\"{}\",resource=\"{res}\"}} {used}",
                t.name
            );
            let _ = writeln!(
                out,
                "hostel_tenant_quota{{tenant=\"{}\",resource=\"{res}\"}} {quota}",
                t.name
            );
        }
    }
    Ok(out)
}

/// The tenants' edges: per-rule hits, conntrack occupancy, drops by reason (the firewall's
/// and the external port's).
pub fn edge(
    store: &dyn Store,
    stats: &hostel_switch_proto::SwitchStats,
) -> Result<String, hostel_state::StoreError> {
    let mut out = String::new();
    let names: std::collections::HashMap<String, String> = store
        .list_tenants()?
        .into_iter()
        .map(|t| (crate::adapters::edge::edge_id(&t.id), t.name.to_string()))
        .collect();
    let _ = writeln!(
        out,
        "# HELP hostel_firewall_rule_hits_total Packets each firewall rule matched (rule=\"default\": no rule).\n\
         # TYPE hostel_firewall_rule_hits_total counter\n\
         # TYPE hostel_firewall_rule_bytes_total counter\n\
         # TYPE hostel_firewall_conntrack gauge\n\
         # TYPE hostel_firewall_conntrack_limit gauge\n\
         # TYPE hostel_firewall_accepted_total counter\n\
         # TYPE hostel_firewall_drops_total counter"
    );
    for (edge, fw) in &stats.firewalls {
        let Some(tenant) = names.get(edge) else {
            continue;
        };
        for h in &fw.rules {
            let rule = h
                .rule
                .map_or_else(|| "default".to_string(), |r| r.to_string());
            let dir = match h.direction {
                hostel_switch_proto::firewall::Direction::Ingress => "ingress",
                hostel_switch_proto::firewall::Direction::Egress => "egress",
            };
            let labels = format!("tenant=\"{tenant}\",rule=\"{rule}\",direction=\"{dir}\"");
            let _ = writeln!(
                out,
                "hostel_firewall_rule_hits_total{{{labels}}} {}",
                h.packets
            );
            let _ = writeln!(
                out,
                "hostel_firewall_rule_bytes_total{{{labels}}} {}",
                h.bytes
            );
        }
        let _ = writeln!(
            out,
            "hostel_firewall_conntrack{{tenant=\"{tenant}\"}} {}",
            fw.conntrack
        );
        let _ = writeln!(
            out,
            "hostel_firewall_conntrack_limit{{tenant=\"{tenant}\"}} {}",
            fw.conntrack_limit
        );
        let _ = writeln!(
            out,
            "hostel_firewall_accepted_total{{tenant=\"{tenant}\"}} {}",
            fw.accepted
        );
        for (reason, n) in &fw.drops {
            let _ = writeln!(
                out,
                "hostel_firewall_drops_total{{tenant=\"{tenant}\",reason=\"{reason}\"}} {n}"
            );
        }
    }
    if let Some(x) = &stats.external {
        let _ = writeln!(out, "# TYPE hostel_external_drops_total counter");
        for (reason, n) in &x.drops {
            let _ = writeln!(
                out,
                "hostel_external_drops_total{{reason=\"{reason}\"}} {n}"
            );
        }
    }
    Ok(out)
}

/// The storage pool: each device's size, free space and health, each volume's allocation
/// and degraded clusters (copies short of what it wants), re-mirroring's progress.
pub fn storage(
    pool: &hostel_storage_proto::PoolInfo,
    volumes: &[hostel_state::Volume],
    tenant_names: &std::collections::HashMap<String, String>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP hostel_storage_degraded 1 when some volume has data short of its copies.\n\
         # TYPE hostel_storage_degraded gauge\n\
         hostel_storage_degraded {}\n\
         # TYPE hostel_storage_device_bytes gauge\n\
         # TYPE hostel_storage_device_free_bytes gauge\n\
         # TYPE hostel_storage_device_failed gauge",
        u8::from(pool.degraded())
    );
    for d in &pool.devices {
        let path = d.path.as_deref().unwrap_or("(missing)");
        let labels = format!("device=\"{}\",path=\"{path}\"", d.uuid);
        let _ = writeln!(out, "hostel_storage_device_bytes{{{labels}}} {}", d.bytes);
        let _ = writeln!(
            out,
            "hostel_storage_device_free_bytes{{{labels}}} {}",
            d.free_bytes
        );
        let failed = d.failed || d.path.is_none();
        let _ = writeln!(
            out,
            "hostel_storage_device_failed{{{labels}}} {}",
            u8::from(failed)
        );
    }
    let _ = writeln!(
        out,
        "# TYPE hostel_storage_remirror_to_do gauge\nhostel_storage_remirror_to_do {}\n\
         # TYPE hostel_storage_remirror_done gauge\nhostel_storage_remirror_done {}",
        pool.remirror.to_do, pool.remirror.done
    );
    let _ = writeln!(
        out,
        "# TYPE hostel_volume_size_bytes gauge\n\
         # TYPE hostel_volume_allocated_bytes gauge\n\
         # TYPE hostel_volume_degraded_clusters gauge"
    );
    for v in volumes {
        let Some(p) = pool.volumes.iter().find(|p| p.name == v.pool_name()) else {
            continue;
        };
        let tenant = tenant_names
            .get(&v.tenant.to_string())
            .map(String::as_str)
            .unwrap_or("");
        let labels = format!("tenant=\"{tenant}\",volume=\"{}\"", v.name);
        let _ = writeln!(out, "hostel_volume_size_bytes{{{labels}}} {}", p.size);
        let _ = writeln!(
            out,
            "hostel_volume_allocated_bytes{{{labels}}} {}",
            p.allocated
        );
        let _ = writeln!(
            out,
            "hostel_volume_degraded_clusters{{{labels}}} {}",
            p.degraded_clusters
        );
    }
    out
}

/// Per-VPS gauges: its recorded state, and what its cgroups say it uses now (memory, tasks,
/// CPU time). Reads the store and cgroupfs, so it blocks.
pub fn vps(store: &dyn Store) -> Result<String, hostel_state::StoreError> {
    let names: std::collections::HashMap<_, _> = store
        .list_tenants()?
        .into_iter()
        .map(|t| (t.id, t.name.to_string()))
        .collect();
    let mut out = String::from(
        "# HELP hostel_vps_running 1 for a VPS recorded running.\n# TYPE hostel_vps_running gauge\n\
         # TYPE hostel_vps_memory_bytes gauge\n# TYPE hostel_vps_tasks gauge\n\
         # TYPE hostel_vps_cpu_seconds_total counter\n",
    );
    let read = |ctrl: &str, id: &hostel_state::VmId, file: &str| -> Option<u64> {
        let path = format!("/sys/fs/cgroup/{ctrl}/hostel-vps/{id}/{file}");
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    };
    for rec in store.list_all_vpss()? {
        let vm = &rec.vm;
        let tenant = names.get(&vm.tenant).map(String::as_str).unwrap_or("");
        let labels = format!("tenant=\"{tenant}\",vps=\"{}\"", vm.name);
        let running = u8::from(vm.observed.state == ObservedState::Running);
        let _ = writeln!(out, "hostel_vps_running{{{labels}}} {running}");
        if let Some(m) = read("memory", &vm.id, "memory.usage_in_bytes") {
            let _ = writeln!(out, "hostel_vps_memory_bytes{{{labels}}} {m}");
        }
        if let Some(p) = read("pids", &vm.id, "pids.current") {
            let _ = writeln!(out, "hostel_vps_tasks{{{labels}}} {p}");
        }
        if let Some(ns) = read("cpuacct", &vm.id, "cpuacct.usage") {
            let _ = writeln!(
                out,
                "hostel_vps_cpu_seconds_total{{{labels}}} {}",
                ns as f64 / 1e9
            );
        }
    }
    Ok(out)
}
