//! Quota arithmetic, kept backend-independent so every backend refuses
//! exactly the same requests with exactly the same messages. Backends are
//! responsible for calling these inside the transaction that does the write.

use crate::error::{QuotaResource, QuotaViolation, StoreError};
use crate::model::tenant::{Quota, Usage};
use crate::model::vm::VmSpecRecord;

/// One dimension: `requested` more on top of `in_use` must fit in `limit`.
fn check(
    resource: QuotaResource,
    requested: u64,
    in_use: u64,
    limit: u64,
) -> Result<(), StoreError> {
    // Saturating: an in_use already above a lowered limit must still refuse.
    if requested.saturating_add(in_use) > limit {
        return Err(StoreError::QuotaExceeded(QuotaViolation {
            resource,
            requested,
            in_use,
            limit,
        }));
    }
    Ok(())
}

/// Whether a new VM of `spec` fits next to the tenant's current `usage`.
/// Dimensions are checked in a fixed order so the reported limit is stable.
pub(crate) fn check_create(
    quota: &Quota,
    usage: &Usage,
    spec: &VmSpecRecord,
) -> Result<(), StoreError> {
    check(QuotaResource::Vms, 1, usage.vms, u64::from(quota.max_vms))?;
    check(
        QuotaResource::Vcpus,
        u64::from(spec.vcpus()),
        usage.vcpus,
        u64::from(quota.max_vcpus),
    )?;
    check(
        QuotaResource::MemoryMib,
        spec.memory_mib(),
        usage.memory_mib,
        quota.max_memory_mib,
    )?;
    check(
        QuotaResource::DiskGib,
        spec.disk_gib(),
        usage.disk_gib,
        quota.max_disk_gib,
    )
}

/// Whether one more network (with an uplink or not) fits next to the tenant's `usage`.
pub(crate) fn check_network(quota: &Quota, usage: &Usage, uplink: bool) -> Result<(), StoreError> {
    check(
        QuotaResource::Networks,
        1,
        usage.networks,
        u64::from(quota.max_networks),
    )?;
    if uplink {
        check(
            QuotaResource::Uplinks,
            1,
            usage.uplinks,
            u64::from(quota.max_uplinks),
        )?;
    }
    Ok(())
}

/// Whether one more floating public address fits next to the tenant's `usage`.
pub(crate) fn check_public_address(quota: &Quota, usage: &Usage) -> Result<(), StoreError> {
    check(
        QuotaResource::PublicAddresses,
        1,
        usage.public_addresses,
        u64::from(quota.max_public_addresses),
    )
}

/// Whether changing one VM from `old` to `new` fits. `usage` includes `old`;
/// the message reports usage of the *other* VMs, which is what the tenant can
/// act on. Only growing dimensions are checked, so shrinking is always
/// possible even for a tenant already over a lowered quota.
pub(crate) fn check_resize(
    quota: &Quota,
    usage: &Usage,
    old: &VmSpecRecord,
    new: &VmSpecRecord,
) -> Result<(), StoreError> {
    let dims = [
        (
            QuotaResource::Vcpus,
            u64::from(old.vcpus()),
            u64::from(new.vcpus()),
            usage.vcpus,
            u64::from(quota.max_vcpus),
        ),
        (
            QuotaResource::MemoryMib,
            old.memory_mib(),
            new.memory_mib(),
            usage.memory_mib,
            quota.max_memory_mib,
        ),
        (
            QuotaResource::DiskGib,
            old.disk_gib(),
            new.disk_gib(),
            usage.disk_gib,
            quota.max_disk_gib,
        ),
    ];
    for (resource, old, new, in_use, limit) in dims {
        if new > old {
            check(resource, new, in_use.saturating_sub(old), limit)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota() -> Quota {
        Quota {
            max_vcpus: 8,
            max_memory_mib: 8192,
            max_disk_gib: 100,
            max_vms: 3,
            max_networks: 2,
            max_uplinks: 1,
            max_public_addresses: 1,
        }
    }

    fn spec(vcpus: u32, mem: u64, disk: u64) -> VmSpecRecord {
        VmSpecRecord::new(vcpus, mem, disk, "img").unwrap()
    }

    #[test]
    fn create_reports_first_exceeded_limit_with_numbers() {
        let usage = Usage {
            vcpus: 4,
            memory_mib: 1024,
            disk_gib: 10,
            vms: 1,
            ..Usage::default()
        };
        assert!(check_create(&quota(), &usage, &spec(4, 1024, 10)).is_ok());
        let err = check_create(&quota(), &usage, &spec(6, 1024, 10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "quota exceeded: vcpus: 6 requested + 4 in use > quota 8"
        );
        let full = Usage { vms: 3, ..usage };
        let err = check_create(&quota(), &full, &spec(1, 1, 1)).unwrap_err();
        assert!(err
            .to_string()
            .contains("vms: 1 requested + 3 in use > quota 3"));
    }

    #[test]
    fn resize_counts_other_vms_and_allows_shrinking() {
        // This VM: 4 vcpus; another VM: 2 vcpus.
        let usage = Usage {
            vcpus: 6,
            memory_mib: 2048,
            disk_gib: 20,
            vms: 2,
            ..Usage::default()
        };
        let old = spec(4, 1024, 10);
        assert!(check_resize(&quota(), &usage, &old, &spec(6, 1024, 10)).is_ok());
        let err = check_resize(&quota(), &usage, &old, &spec(7, 1024, 10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "quota exceeded: vcpus: 7 requested + 2 in use > quota 8"
        );
        // Over a lowered quota, shrinking memory still works.
        let tight = Quota {
            max_vcpus: 1,
            ..quota()
        };
        assert!(check_resize(&tight, &usage, &old, &spec(4, 512, 10)).is_ok());
    }

    #[test]
    fn networks_and_uplinks_are_counted_separately() {
        let mut usage = Usage {
            networks: 1,
            uplinks: 1,
            ..Usage::default()
        };
        assert!(check_network(&quota(), &usage, false).is_ok());
        let err = check_network(&quota(), &usage, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "quota exceeded: uplinks: 1 requested + 1 in use > quota 1"
        );
        usage.networks = 2;
        let err = check_network(&quota(), &usage, false).unwrap_err();
        assert!(err.to_string().contains("networks: 1 requested + 2 in use"));
    }
}
