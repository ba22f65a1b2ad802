//! A tenant's firewall: rules, default policies, address sets and VM groups, kept as one
//! document per tenant. A change is made to a copy, the whole policy is resolved (NICs,
//! groups) and validated with `hostel-firewall` (a refusal names the rule's field and
//! stores nothing), written with its audit entry in one transaction, then given to the
//! switch, whose firewall swaps the compiled policy atomically between two packets.

use super::{blocking, DaemonError};
use crate::adapters::edge::policy_spec;
use crate::adapters::SwitchAdapter;
use hostel_firewall::rule::Validate;
use hostel_state::{EntityKind, FirewallDoc, NewAuditEntry, Store, StoreError, TenantId};
use hostel_switch_proto::firewall::RuleSpec;
use std::sync::Arc;

/// The daemon's firewall changes run one at a time, so two concurrent rule adds both land
/// (the store's revision check is the backstop against another process).
static CHANGES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Most rules a tenant may have.
pub const MAX_RULES: usize = 1024;

/// Names of address sets and VM groups: 1 to 63 of `a-z`, `0-9`, `-`, `_`.
pub fn check_name(field: &str, name: &str) -> Result<(), DaemonError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(DaemonError::invalid(
            field,
            format!("{name:?}: 1 to 63 of a-z, 0-9, '-' and '_'"),
        ))
    }
}

pub struct Firewall<'a, S> {
    store: &'a Arc<dyn Store>,
    switch: &'a S,
}

impl<'a, S: SwitchAdapter> Firewall<'a, S> {
    pub fn new(store: &'a Arc<dyn Store>, switch: &'a S) -> Self {
        Self { store, switch }
    }

    /// Applies `edit` to the tenant's firewall, validates the result and stores it with
    /// `audit`, then syncs the switch. `edit`'s error, or a validation failure, stores
    /// nothing and leaves the switch alone.
    pub async fn change<T: Send + 'static>(
        &self,
        tenant: TenantId,
        audit: NewAuditEntry,
        edit: impl FnOnce(&dyn Store, &mut FirewallDoc) -> Result<T, DaemonError> + Send + 'static,
    ) -> Result<(T, FirewallDoc), DaemonError> {
        let _one = CHANGES.lock().await;
        let out = blocking(self.store, move |store| {
            let mut doc = store.get_firewall(&tenant)?;
            let out = edit(store, &mut doc)?;
            if doc.rules.len() > MAX_RULES {
                return Err(DaemonError::invalid(
                    "rules",
                    format!("at most {MAX_RULES} rules per tenant"),
                ));
            }
            let spec = policy_spec(store, &tenant, &doc)?;
            spec.validate().map_err(|e| DaemonError::Invalid {
                field: e.field.clone(),
                reason: e.problem.to_string(),
            })?;
            let doc = store.put_firewall(&tenant, &doc, &audit)?;
            Ok((out, doc))
        })
        .await?;
        self.switch.sync().await?;
        Ok(out)
    }

    /// Adds a rule (its `id` is assigned here) and returns it.
    pub async fn add_rule(
        &self,
        tenant: TenantId,
        mut rule: RuleSpec,
        audit: NewAuditEntry,
    ) -> Result<RuleSpec, DaemonError> {
        let (rule, _) = self
            .change(tenant, audit, move |_, doc| {
                rule.id = doc.next_id;
                doc.next_id = doc.next_id.checked_add(1).ok_or_else(|| {
                    DaemonError::invalid("id", "this tenant has used up its rule ids")
                })?;
                doc.rules.push(rule.clone());
                Ok(rule)
            })
            .await?;
        Ok(rule)
    }

    pub async fn delete_rule(
        &self,
        tenant: TenantId,
        id: u32,
        audit: NewAuditEntry,
    ) -> Result<(), DaemonError> {
        self.change(tenant, audit, move |_, doc| {
            let before = doc.rules.len();
            doc.rules.retain(|r| r.id != id);
            if doc.rules.len() == before {
                return Err(StoreError::NotFound {
                    kind: EntityKind::Firewall,
                    name: format!("rule {id}"),
                }
                .into());
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::edge::tests::{entry, fixture, tenant};
    use hostel_switch_proto::firewall::{Action, Direction, PortSpec, ProtocolSpec, Scope};

    fn rule(proto: &str, port: u32) -> RuleSpec {
        RuleSpec {
            id: 0,
            priority: 1000,
            direction: Direction::Ingress,
            action: Action::Allow,
            protocol: ProtocolSpec::Name(proto.into()),
            source: vec![],
            destination: vec![],
            source_ports: vec![],
            destination_ports: vec![PortSpec::One(port)],
            icmp_type: None,
            icmp_code: None,
            scope: Scope::Edge,
            stateless: false,
            log: false,
        }
    }

    #[tokio::test]
    async fn bad_rules_name_the_field_store_nothing_and_leave_the_switch_alone() {
        let f = fixture();
        let t = tenant(&f, "acme", 1);
        let svc = Firewall::new(&f.store, &f.switch);
        let ok = svc
            .add_rule(t, rule("tcp", 22), entry("firewall.rule.add"))
            .await
            .unwrap();
        assert_eq!(ok.id, 1);
        let mut icmp_on_tcp = rule("tcp", 22);
        icmp_on_tcp.icmp_type = Some(8);
        let mut cidr33 = rule("tcp", 22);
        cidr33.source = vec!["10.0.0.0/33".into()];
        for (bad, field) in [
            (rule("tcp", 70_000), "destination_ports"),
            (rule("bogus", 22), "protocol"),
            (icmp_on_tcp, "icmp_type"),
            (cidr33, "source[0]"),
        ] {
            match svc.add_rule(t, bad, entry("firewall.rule.add")).await {
                Err(DaemonError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected a refusal, got {other:?}"),
            }
        }
        let doc = f.store.get_firewall(&t).unwrap();
        assert_eq!(doc.rules.len(), 1, "only the good rule is stored");
        assert_eq!(f.switch.syncs(), 1);
        svc.delete_rule(t, 1, entry("firewall.rule.delete"))
            .await
            .unwrap();
        let err = svc
            .delete_rule(t, 1, entry("firewall.rule.delete"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, DaemonError::Store(StoreError::NotFound { .. })),
            "{err:?}"
        );
        // Ids are not reused: counters stay with their rule.
        let again = svc
            .add_rule(t, rule("udp", 53), entry("firewall.rule.add"))
            .await
            .unwrap();
        assert_eq!(again.id, 2);
    }
}
