//! Versioned schema migrations, tracked in `PRAGMA user_version`.
//!
//! Migrations are append-only: a released step is never edited, because
//! databases in the field have already run it. Add a new step instead.

use rusqlite::{Connection, TransactionBehavior};

use super::DbResult;
use crate::error::StoreError;

struct Migration {
    /// The `user_version` the database has after this step.
    version: u32,
    sql: &'static str,
}

/// STRICT tables make SQLite reject values of the wrong type instead of
/// silently storing them, which keeps the file trustworthy for a future
/// export to another backend.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: r#"
CREATE TABLE tenants (
    id             TEXT PRIMARY KEY NOT NULL,
    name           TEXT NOT NULL UNIQUE,
    created_at     INTEGER NOT NULL,
    max_vcpus      INTEGER NOT NULL CHECK (max_vcpus >= 0),
    max_memory_mib INTEGER NOT NULL CHECK (max_memory_mib >= 0),
    max_disk_gib   INTEGER NOT NULL CHECK (max_disk_gib >= 0),
    max_vms        INTEGER NOT NULL CHECK (max_vms >= 0)
) STRICT;

CREATE TABLE api_tokens (
    id         TEXT PRIMARY KEY NOT NULL,
    tenant_id  TEXT REFERENCES tenants(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX api_tokens_by_tenant ON api_tokens(tenant_id);

-- RESTRICT: a tenant row must outlive its VMs, or the reconciler would find
-- machines nobody owns.
CREATE TABLE vms (
    id             TEXT PRIMARY KEY NOT NULL,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id) ON DELETE RESTRICT,
    name           TEXT NOT NULL,
    vcpus          INTEGER NOT NULL CHECK (vcpus > 0),
    memory_mib     INTEGER NOT NULL CHECK (memory_mib > 0),
    disk_gib       INTEGER NOT NULL CHECK (disk_gib > 0),
    image          TEXT NOT NULL,
    cmdline        TEXT,
    restart_policy TEXT NOT NULL,
    desired        TEXT NOT NULL,
    observed_state TEXT NOT NULL,
    observed_pid   INTEGER,
    observed_since INTEGER NOT NULL,
    last_exit      TEXT,
    restart_count  INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    generation     INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
) STRICT;

-- AUTOINCREMENT so sequence numbers are never reused, even after old
-- entries are pruned: clients page through the log by seq.
-- No foreign key on tenant_id: the trail must survive the tenant's deletion.
CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    tenant_id TEXT,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    error     TEXT
) STRICT;
CREATE INDEX audit_log_by_tenant ON audit_log(tenant_id, seq);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT;
"#,
    },
    Migration {
        version: 2,
        sql: r#"
-- Per-tenant virtual networks. RESTRICT on the tenant for the same reason as
-- vms: a network nobody owns would still be wired into the switch.
-- Addresses are stored as dotted text (subnet4 normalized to its network
-- address) so dumps are readable; ordering is done in Rust, not SQL.
CREATE TABLE networks (
    id         TEXT PRIMARY KEY NOT NULL,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE RESTRICT,
    name       TEXT NOT NULL,
    subnet4    TEXT NOT NULL,
    gateway4   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
) STRICT;

-- CASCADE on the VM: deleting a VM frees its addresses in the same commit.
-- RESTRICT on the network: it cannot vanish under attached VMs.
-- The UNIQUE constraints are the backstop that makes a double allocation
-- impossible even if the allocator had a bug.
CREATE TABLE vm_nics (
    vm_id      TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
    idx        INTEGER NOT NULL CHECK (idx >= 0),
    network_id TEXT NOT NULL REFERENCES networks(id) ON DELETE RESTRICT,
    mac        TEXT NOT NULL,
    ipv4       TEXT NOT NULL,
    PRIMARY KEY (vm_id, idx),
    UNIQUE (network_id, ipv4),
    UNIQUE (network_id, mac)
) STRICT;
"#,
    },
    Migration {
        version: 3,
        sql: r#"
-- Where a network's non-local traffic goes: 'none' (isolated) or 'tap' (a
-- TAP device in the host). Existing networks stay isolated.
ALTER TABLE networks ADD COLUMN uplink TEXT NOT NULL DEFAULT 'none'
    CHECK (uplink IN ('none', 'tap'));
-- The network's IPv6 /64, if any; NIC addresses are derived from MACs (SLAAC).
ALTER TABLE networks ADD COLUMN subnet6 TEXT;
"#,
    },
    Migration {
        version: 4,
        sql: r#"
-- The stop or delete asked for and not yet done, so a daemon killed in the middle finishes it
-- at its next start; the deadline is when a graceful stop turns into a kill (unix millis).
ALTER TABLE vms ADD COLUMN intent TEXT CHECK (intent IN ('stop', 'kill', 'delete'));
ALTER TABLE vms ADD COLUMN intent_deadline INTEGER;
"#,
    },
    Migration {
        version: 5,
        sql: r#"
-- Network quotas. Tenants created before them get room for what a tenant
-- normally needs; one already above stays so (quotas only block growth).
ALTER TABLE tenants ADD COLUMN max_networks INTEGER NOT NULL DEFAULT 8
    CHECK (max_networks >= 0);
ALTER TABLE tenants ADD COLUMN max_uplinks INTEGER NOT NULL DEFAULT 2
    CHECK (max_uplinks >= 0);
"#,
    },
    Migration {
        version: 6,
        sql: r#"
-- Per-NIC rate limits, as JSON objects ({"total":{...},"flood":{...},"unknown":{...}}):
-- the operator's ceiling on the NIC (NULL: the tenant's default ceiling applies), the
-- tenant's own limits within it (NULL: none), and the tenant's default ceiling for NICs
-- without their own (NULL: unlimited). Existing NICs stay unlimited.
ALTER TABLE vm_nics ADD COLUMN ceiling TEXT;
ALTER TABLE vm_nics ADD COLUMN limits TEXT;
ALTER TABLE tenants ADD COLUMN nic_ceiling TEXT;
"#,
    },
    Migration {
        version: 7,
        sql: r#"
-- A tenant's intrusion detection: mode, overload behaviour, the networks it watches (a JSON
-- list of network ids, checked against the tenant's networks on every write; a deleted
-- network is left out when the switch's configuration is rendered) and its own rules.
CREATE TABLE ids_settings (
    tenant_id TEXT PRIMARY KEY NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    mode      TEXT NOT NULL CHECK (mode IN ('detect', 'prevent')),
    overload  TEXT NOT NULL CHECK (overload IN ('fail_open', 'fail_closed')),
    networks  TEXT NOT NULL,
    rules     TEXT NOT NULL
) STRICT;
"#,
    },
    Migration {
        version: 8,
        sql: r#"
-- The host's external network (one row): the operator's set-up as JSON
-- (interface, MAC, subnets, gateways, public address pools, conntrack limit).
CREATE TABLE external_network (
    id    INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    setup TEXT NOT NULL
) STRICT;

-- Public addresses tenants hold: each edge's own ('outside') and floating ones, the
-- latter attached to at most one VM NIC (and a NIC has at most one). Deleting the VM
-- detaches; deleting the tenant releases.
CREATE TABLE public_addresses (
    address    TEXT PRIMARY KEY NOT NULL,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('outside', 'floating')),
    vm_id      TEXT,
    nic_idx    INTEGER,
    created_at INTEGER NOT NULL,
    FOREIGN KEY (vm_id, nic_idx) REFERENCES vm_nics(vm_id, idx) ON DELETE SET NULL,
    UNIQUE (vm_id, nic_idx)
) STRICT;
CREATE INDEX public_addresses_by_tenant ON public_addresses(tenant_id);

-- Tenant networks attached to the external network.
CREATE TABLE network_edges (
    network_id TEXT PRIMARY KEY NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    snat       INTEGER NOT NULL CHECK (snat IN (0, 1)),
    routed     INTEGER NOT NULL DEFAULT 0 CHECK (routed IN (0, 1))
) STRICT;

-- Each tenant's firewall (rules, defaults, sets, groups) as one JSON document, replaced
-- whole: a rule change is one row.
CREATE TABLE firewalls (
    tenant_id TEXT PRIMARY KEY NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    doc       TEXT NOT NULL
) STRICT;

ALTER TABLE tenants ADD COLUMN max_public_addresses INTEGER NOT NULL DEFAULT 2
    CHECK (max_public_addresses >= 0);
"#,
    },
    Migration {
        version: 9,
        sql: r#"
-- The host's storage pool: the devices the operator added ('adding' from the record until
-- the storage process has formatted it), and the tenants' volumes ('creating' until the
-- pool has it, 'deleting' from a delete's start until the pool dropped it). The pool's own
-- metadata lives on its devices; these rows are the intents the reconciler completes.
CREATE TABLE storage_devices (
    path     TEXT PRIMARY KEY NOT NULL,
    state    TEXT NOT NULL CHECK (state IN ('adding', 'ready')),
    added_at INTEGER NOT NULL
) STRICT;

CREATE TABLE volumes (
    id         TEXT PRIMARY KEY NOT NULL,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    name       TEXT NOT NULL,
    size_bytes INTEGER NOT NULL CHECK (size_bytes > 0),
    copies     INTEGER NOT NULL CHECK (copies IN (1, 2)),
    vm_id      TEXT REFERENCES vms(id) ON DELETE SET NULL,
    state      TEXT NOT NULL CHECK (state IN ('creating', 'ready', 'deleting')),
    created_at INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
) STRICT;
CREATE INDEX volumes_by_vm ON volumes(vm_id);

ALTER TABLE tenants ADD COLUMN max_volume_bytes INTEGER NOT NULL DEFAULT 107374182400
    CHECK (max_volume_bytes >= 0);
ALTER TABLE tenants ADD COLUMN max_volume_allocated_bytes INTEGER NOT NULL
    DEFAULT 107374182400 CHECK (max_volume_allocated_bytes >= 0);
"#,
    },
    Migration {
        version: 10,
        sql: r#"
-- What the operator lets a tenant do through its VMs' guest agents (issue 22): run
-- commands, move files, and the largest file moved. No row: everything allowed, 1 GiB.
CREATE TABLE tenant_agent (
    tenant_id      TEXT PRIMARY KEY NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    exec           INTEGER NOT NULL CHECK (exec IN (0, 1)),
    files          INTEGER NOT NULL CHECK (files IN (0, 1)),
    max_file_bytes INTEGER NOT NULL CHECK (max_file_bytes > 0)
) STRICT;
"#,
    },
    Migration {
        version: 11,
        sql: r#"
-- VPSs (system containers) are instances in the same table as VMs: they share names,
-- quotas, NICs (addresses, MACs, limits, the switch's ports) and the intent columns, and
-- every VM query names its kind, so the VM machinery never sees a VPS. A VPS holds one slot
-- of host UID/GID ranges (its user namespace), unique on the host.
ALTER TABLE vms ADD COLUMN kind TEXT NOT NULL DEFAULT 'vm' CHECK (kind IN ('vm', 'vps'));
ALTER TABLE vms ADD COLUMN id_slot INTEGER CHECK (id_slot >= 0);
CREATE UNIQUE INDEX vms_by_id_slot ON vms(id_slot) WHERE id_slot IS NOT NULL;
"#,
    },
    Migration {
        version: 12,
        sql: r#"
-- Issue 16's rest: the networks whose traffic between the tenant's own VMs is inspected too
-- (a JSON list of network ids, each also in `networks`; empty: off, as before).
ALTER TABLE ids_settings ADD COLUMN intra_networks TEXT NOT NULL DEFAULT '[]';

-- A network's security appliance (at most one): a NIC of the same tenant on that network,
-- checked on write. Deleting its VM keeps the row with the NIC columns NULL, so the
-- network keeps failing closed until the tenant designates another or none.
CREATE TABLE security_appliances (
    network_id TEXT PRIMARY KEY NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    vm_id      TEXT,
    nic_idx    INTEGER,
    FOREIGN KEY (vm_id, nic_idx) REFERENCES vm_nics(vm_id, idx) ON DELETE SET NULL
) STRICT;
"#,
    },
];

/// The schema version this build writes.
pub const LATEST_VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

pub(crate) fn user_version(conn: &Connection) -> DbResult<u32> {
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    u32::try_from(v).map_err(|_| StoreError::Backend(format!("bad user_version {v}")).into())
}

/// Brings the database up to [`LATEST_VERSION`] in one IMMEDIATE transaction,
/// so a crash mid-upgrade leaves the old schema intact and two daemons
/// starting at once cannot both migrate. Returns the versions applied.
pub(crate) fn migrate(conn: &mut Connection) -> DbResult<Vec<u32>> {
    migrate_to(conn, LATEST_VERSION)
}

/// Applies the steps up to and including `target`. Only tests stop short of
/// [`LATEST_VERSION`], to build databases as an older release left them.
pub(crate) fn migrate_to(conn: &mut Connection, target: u32) -> DbResult<Vec<u32>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current = user_version(&tx)?;
    if current > LATEST_VERSION {
        return Err(StoreError::Backend(format!(
            "database schema version {current} is newer than this build supports \
             ({LATEST_VERSION}); refusing to touch it"
        ))
        .into());
    }
    let mut applied = Vec::new();
    for m in MIGRATIONS
        .iter()
        .filter(|m| m.version > current && m.version <= target)
    {
        tx.execute_batch(m.sql)?;
        // PRAGMA takes no bound parameters; the value is our own integer.
        tx.execute_batch(&format!("PRAGMA user_version = {}", m.version))?;
        applied.push(m.version);
    }
    tx.commit()?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_strictly_increasing() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
        assert_eq!(MIGRATIONS[0].version, 1);
    }

    #[test]
    fn migrate_twice_is_a_no_op() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(
            migrate(&mut conn).unwrap(),
            vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
        );
        assert!(migrate(&mut conn).unwrap().is_empty());
        assert_eq!(user_version(&conn).unwrap(), LATEST_VERSION);
    }
}
