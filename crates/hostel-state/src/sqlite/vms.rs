//! VM rows. Writers receive the IMMEDIATE transaction from the caller, so a
//! read-check-write sequence here (uniqueness, quota, generation) is atomic.

use rusqlite::{named_params, Connection, Row};

use super::convert::{is_unique_violation, opt_text, opt_uint, text, to_i64, uint};
use super::rows::{query_first, query_rows};
use super::{tenants, DbResult};
use crate::error::{EntityKind, StoreError};
use crate::ids::{TenantId, VmId, VmName};
use crate::model::tenant::Usage;
use crate::model::vm::{DesiredState, IntentOp, NewVm, ObservedStatus, Vm, VmIntent, VmSpecRecord};
use crate::quota;
use crate::time::Timestamp;

/// Whether a write must fit within the tenant's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum QuotaCheck {
    Enforce,
    Skip,
}

/// Column list of every VM query. Rows are read by position (see [`col`])
/// because name lookup dominated the cost of `list_all_vms`; the unit test
/// below pins the two together.
pub(super) const COLUMNS: &str =
    "id, tenant_id, name, vcpus, memory_mib, disk_gib, image, cmdline, \
    restart_policy, desired, observed_state, observed_pid, observed_since, last_exit, \
    restart_count, created_at, generation, intent, intent_deadline";

/// The columns an insert writes: a new VM has no intent, and an insert names only columns of
/// the first schema, so older-schema databases in upgrade tests take it too.
const INSERT_COLUMNS: &str = "id, tenant_id, name, vcpus, memory_mib, disk_gib, image, \
    cmdline, restart_policy, desired, observed_state, observed_pid, observed_since, last_exit, \
    restart_count, created_at, generation";

/// Positions in [`COLUMNS`].
mod col {
    pub const ID: usize = 0;
    pub const TENANT_ID: usize = 1;
    pub const NAME: usize = 2;
    pub const VCPUS: usize = 3;
    pub const MEMORY_MIB: usize = 4;
    pub const DISK_GIB: usize = 5;
    pub const IMAGE: usize = 6;
    pub const CMDLINE: usize = 7;
    pub const RESTART_POLICY: usize = 8;
    pub const DESIRED: usize = 9;
    pub const OBSERVED_STATE: usize = 10;
    pub const OBSERVED_PID: usize = 11;
    pub const OBSERVED_SINCE: usize = 12;
    pub const LAST_EXIT: usize = 13;
    pub const RESTART_COUNT: usize = 14;
    pub const CREATED_AT: usize = 15;
    pub const GENERATION: usize = 16;
    pub const INTENT: usize = 17;
    pub const INTENT_DEADLINE: usize = 18;
}

pub(super) fn from_row(row: &Row<'_>) -> DbResult<Vm> {
    let cmdline: Option<String> = row.get(col::CMDLINE)?;
    let spec = VmSpecRecord::new(
        uint(row, col::VCPUS)?,
        uint(row, col::MEMORY_MIB)?,
        uint(row, col::DISK_GIB)?,
        row.get::<_, String>(col::IMAGE)?,
    )
    .and_then(|s| s.with_cmdline(cmdline))
    .map_err(|e| StoreError::Backend(format!("corrupt vm spec: {e}")))?
    .with_restart_policy(text(row, col::RESTART_POLICY)?);
    Ok(Vm {
        id: text(row, col::ID)?,
        tenant: text(row, col::TENANT_ID)?,
        name: text(row, col::NAME)?,
        spec,
        desired: text(row, col::DESIRED)?,
        observed: ObservedStatus {
            state: text(row, col::OBSERVED_STATE)?,
            pid: opt_uint(row, col::OBSERVED_PID)?,
            since: Timestamp::from_unix_millis(row.get(col::OBSERVED_SINCE)?),
            last_exit: row.get(col::LAST_EXIT)?,
            restart_count: uint(row, col::RESTART_COUNT)?,
        },
        created_at: Timestamp::from_unix_millis(row.get(col::CREATED_AT)?),
        generation: uint(row, col::GENERATION)?,
        intent: match opt_text::<IntentOp, _>(row, col::INTENT)? {
            None => None,
            Some(op) => Some(VmIntent {
                op,
                deadline: Timestamp::from_unix_millis(
                    row.get::<_, Option<i64>>(col::INTENT_DEADLINE)?
                        .unwrap_or_default(),
                ),
            }),
        },
    })
}

pub(super) fn get(c: &Connection, id: &VmId) -> DbResult<Vm> {
    let sql = format!("SELECT {COLUMNS} FROM vms WHERE id = ?1");
    query_first(c, &sql, [id.to_string()], from_row)?
        .ok_or_else(|| StoreError::not_found(EntityKind::Vm, id).into())
}

pub(super) fn get_by_name(c: &Connection, tenant: &TenantId, name: &VmName) -> DbResult<Vm> {
    let sql =
        format!("SELECT {COLUMNS} FROM vms WHERE tenant_id = ?1 AND name = ?2 AND kind = 'vm'");
    query_first(c, &sql, (tenant.to_string(), name.as_str()), from_row)?
        .ok_or_else(|| StoreError::not_found(EntityKind::Vm, name).into())
}

pub(super) fn list_for_tenant(c: &Connection, tenant: &TenantId) -> DbResult<Vec<Vm>> {
    let sql =
        format!("SELECT {COLUMNS} FROM vms WHERE tenant_id = ?1 AND kind = 'vm' ORDER BY name");
    query_rows(c, &sql, [tenant.to_string()], from_row)
}

pub(super) fn list_all(c: &Connection) -> DbResult<Vec<Vm>> {
    let sql = format!("SELECT {COLUMNS} FROM vms WHERE kind = 'vm' ORDER BY tenant_id, name");
    query_rows(c, &sql, [], from_row)
}

pub(super) fn usage(c: &Connection, tenant: &TenantId) -> DbResult<Usage> {
    c.prepare_cached(
        "SELECT COALESCE(SUM(vcpus), 0), COALESCE(SUM(memory_mib), 0), \
         COALESCE(SUM(disk_gib), 0), COUNT(*) FROM vms WHERE tenant_id = ?1",
    )?
    .query_row([tenant.to_string()], |r| {
        Ok(Usage {
            vcpus: r.get::<_, i64>(0)?.max(0) as u64,
            memory_mib: r.get::<_, i64>(1)?.max(0) as u64,
            disk_gib: r.get::<_, i64>(2)?.max(0) as u64,
            vms: r.get::<_, i64>(3)?.max(0) as u64,
            // VM quota checks need only the VMs' share; `networks::add_usage` adds the rest.
            ..Usage::default()
        })
    })
    .map_err(Into::into)
}

pub(super) fn insert(
    c: &Connection,
    tenant: &TenantId,
    new: &NewVm,
    check: QuotaCheck,
) -> DbResult<Vm> {
    tenants::ensure_exists(c, tenant)?;
    let conflict = || {
        StoreError::conflict(
            EntityKind::Vm,
            &new.name,
            "name already in use in this tenant",
        )
    };
    let taken = c
        .prepare_cached("SELECT 1 FROM vms WHERE tenant_id = ?1 AND name = ?2")?
        .exists([tenant.to_string(), new.name.to_string()])?;
    if taken {
        return Err(conflict().into());
    }
    if check == QuotaCheck::Enforce {
        let quota = tenants::quota(c, tenant)?;
        quota::check_create(&quota, &usage(c, tenant)?, &new.spec)?;
    }
    let now = Timestamp::now();
    let vm = Vm {
        id: new.id.unwrap_or_else(VmId::new_random),
        tenant: *tenant,
        name: new.name.clone(),
        spec: new.spec.clone(),
        desired: new.desired,
        observed: ObservedStatus::creating(now),
        created_at: now,
        intent: None,
        generation: 1,
    };
    let sql = format!(
        "INSERT INTO vms ({INSERT_COLUMNS}) VALUES (:id, :tenant_id, :name, :vcpus, :memory_mib, \
         :disk_gib, :image, :cmdline, :restart_policy, :desired, :observed_state, :observed_pid, \
         :observed_since, :last_exit, :restart_count, :created_at, :generation)"
    );
    let spec = &vm.spec;
    c.prepare_cached(&sql)?
        .execute(named_params! {
            ":id": vm.id.to_string(),
            ":tenant_id": tenant.to_string(),
            ":name": vm.name.as_str(),
            ":vcpus": spec.vcpus(),
            ":memory_mib": to_i64("memory_mib", spec.memory_mib())?,
            ":disk_gib": to_i64("disk_gib", spec.disk_gib())?,
            ":image": spec.image(),
            ":cmdline": spec.cmdline(),
            ":restart_policy": spec.restart_policy().as_str(),
            ":desired": vm.desired.as_str(),
            ":observed_state": vm.observed.state.as_str(),
            ":observed_pid": vm.observed.pid,
            ":observed_since": vm.observed.since.unix_millis(),
            ":last_exit": vm.observed.last_exit,
            ":restart_count": vm.observed.restart_count,
            ":created_at": vm.created_at.unix_millis(),
            ":generation": 1i64,
        })
        .map_err(|e| {
            let e = e.into();
            if is_unique_violation(&e) {
                conflict().into()
            } else {
                e
            }
        })?;
    Ok(vm)
}

/// Loads the VM and enforces the caller's compare-and-set precondition.
fn load_checked(c: &Connection, id: &VmId, expected: Option<u64>) -> DbResult<Vm> {
    let vm = get(c, id)?;
    if let Some(want) = expected {
        if want != vm.generation {
            return Err(StoreError::conflict(
                EntityKind::Vm,
                &vm.name,
                format!(
                    "generation mismatch: expected {want}, current {}",
                    vm.generation
                ),
            )
            .into());
        }
    }
    Ok(vm)
}

pub(super) fn update_spec(
    c: &Connection,
    id: &VmId,
    spec: &VmSpecRecord,
    expected: Option<u64>,
    check: QuotaCheck,
) -> DbResult<Vm> {
    let mut vm = load_checked(c, id, expected)?;
    if vm.spec == *spec {
        return Ok(vm);
    }
    if check == QuotaCheck::Enforce {
        let quota = tenants::quota(c, &vm.tenant)?;
        quota::check_resize(&quota, &usage(c, &vm.tenant)?, &vm.spec, spec)?;
    }
    c.prepare_cached(
        "UPDATE vms SET vcpus = :vcpus, memory_mib = :memory_mib, disk_gib = :disk_gib, \
         image = :image, cmdline = :cmdline, restart_policy = :restart_policy, generation = generation + 1 WHERE id = :id",
    )?
    .execute(named_params! {
        ":id": id.to_string(),
        ":vcpus": spec.vcpus(),
        ":memory_mib": to_i64("memory_mib", spec.memory_mib())?,
        ":disk_gib": to_i64("disk_gib", spec.disk_gib())?,
        ":image": spec.image(),
        ":cmdline": spec.cmdline(),
        ":restart_policy": spec.restart_policy().as_str(),
    })?;
    vm.spec = spec.clone();
    vm.generation += 1;
    Ok(vm)
}

pub(super) fn set_desired(
    c: &Connection,
    id: &VmId,
    desired: DesiredState,
    expected: Option<u64>,
) -> DbResult<Vm> {
    let mut vm = load_checked(c, id, expected)?;
    if vm.desired == desired {
        return Ok(vm);
    }
    c.prepare_cached("UPDATE vms SET desired = ?2, generation = generation + 1 WHERE id = ?1")?
        .execute([id.to_string(), desired.as_str().to_owned()])?;
    vm.desired = desired;
    vm.generation += 1;
    Ok(vm)
}

/// Desired state and pending operation in one write: a stop or delete is durable before any
/// of it is done.
pub(super) fn set_intent(
    c: &Connection,
    id: &VmId,
    desired: DesiredState,
    intent: Option<&VmIntent>,
) -> DbResult<Vm> {
    let mut vm = get(c, id)?;
    if vm.desired == desired && vm.intent.as_ref() == intent {
        return Ok(vm);
    }
    c.prepare_cached(
        "UPDATE vms SET desired = :desired, intent = :intent, intent_deadline = :deadline, \
         generation = generation + 1 WHERE id = :id",
    )?
    .execute(named_params! {
        ":id": id.to_string(),
        ":desired": desired.as_str(),
        ":intent": intent.map(|i| i.op.as_str()),
        ":deadline": intent.map(|i| i.deadline.unix_millis()),
    })?;
    vm.desired = desired;
    vm.intent = intent.copied();
    vm.generation += 1;
    Ok(vm)
}

/// Removes a VM whose delete is on record (intent `delete`).
pub(super) fn finish_delete(c: &Connection, id: &VmId) -> DbResult<Vm> {
    let vm = get(c, id)?;
    if vm.intent.map(|i| i.op) != Some(IntentOp::Delete) {
        return Err(
            StoreError::conflict(EntityKind::Vm, &vm.name, "no delete of it is on record").into(),
        );
    }
    c.prepare_cached("DELETE FROM vms WHERE id = ?1")?
        .execute([id.to_string()])?;
    Ok(vm)
}

/// Clears the pending operation if it is still `op`: a stop that finished must not wipe a
/// delete asked for meanwhile.
pub(super) fn clear_intent(c: &Connection, id: &VmId, op: IntentOp) -> DbResult<Vm> {
    let mut vm = get(c, id)?;
    if vm.intent.map(|i| i.op) != Some(op) {
        return Ok(vm);
    }
    c.prepare_cached(
        "UPDATE vms SET intent = NULL, intent_deadline = NULL, generation = generation + 1 \
         WHERE id = ?1",
    )?
    .execute([id.to_string()])?;
    vm.intent = None;
    vm.generation += 1;
    Ok(vm)
}

pub(super) fn set_observed(c: &Connection, id: &VmId, observed: &ObservedStatus) -> DbResult<Vm> {
    let mut vm = get(c, id)?;
    let observed = observed.normalized();
    if vm.observed == observed {
        return Ok(vm);
    }
    c.prepare_cached(
        "UPDATE vms SET observed_state = :state, observed_pid = :pid, observed_since = :since, \
         last_exit = :last_exit, restart_count = :restart_count, \
         generation = generation + 1 WHERE id = :id",
    )?
    .execute(named_params! {
        ":id": id.to_string(),
        ":state": observed.state.as_str(),
        ":pid": observed.pid,
        ":since": observed.since.unix_millis(),
        ":last_exit": observed.last_exit,
        ":restart_count": observed.restart_count,
    })?;
    vm.observed = observed;
    vm.generation += 1;
    Ok(vm)
}

pub(super) fn delete(c: &Connection, id: &VmId, expected: Option<u64>) -> DbResult<Vm> {
    let vm = load_checked(c, id, expected)?;
    c.prepare_cached("DELETE FROM vms WHERE id = ?1")?
        .execute([id.to_string()])?;
    Ok(vm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_positions_match_column_list() {
        let names: Vec<&str> = COLUMNS.split(',').map(str::trim).collect();
        let positions = [
            (col::ID, "id"),
            (col::TENANT_ID, "tenant_id"),
            (col::NAME, "name"),
            (col::VCPUS, "vcpus"),
            (col::MEMORY_MIB, "memory_mib"),
            (col::DISK_GIB, "disk_gib"),
            (col::IMAGE, "image"),
            (col::CMDLINE, "cmdline"),
            (col::RESTART_POLICY, "restart_policy"),
            (col::DESIRED, "desired"),
            (col::OBSERVED_STATE, "observed_state"),
            (col::OBSERVED_PID, "observed_pid"),
            (col::OBSERVED_SINCE, "observed_since"),
            (col::LAST_EXIT, "last_exit"),
            (col::RESTART_COUNT, "restart_count"),
            (col::CREATED_AT, "created_at"),
            (col::GENERATION, "generation"),
            (col::INTENT, "intent"),
            (col::INTENT_DEADLINE, "intent_deadline"),
        ];
        assert_eq!(names.len(), positions.len());
        assert!(COLUMNS.starts_with(INSERT_COLUMNS));
        for (i, name) in positions {
            assert_eq!(names[i], name);
        }
    }
}
