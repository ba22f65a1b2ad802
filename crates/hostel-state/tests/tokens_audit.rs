//! API tokens, audit log and settings.

mod common;

use common::{big_quota, tenant};
use hostel_state::{
    Actor, AuditQuery, AuditResult, NewAuditEntry, SettingKey, Store, StoreError, TenantId,
    TokenHash,
};

#[test]
fn issued_token_is_found_by_hash_and_secret_is_not_stored() {
    let (dir, store) = common::open();
    let t = tenant(&store, "acme", big_quota());
    let issued = store
        .issue_token(Some(&t.id), "ci deploy", &common::audit())
        .unwrap();
    let secret = issued.secret.expose().to_owned();
    assert!(secret.starts_with("hst_"));
    assert_eq!(issued.token.hash, TokenHash::of_secret(&secret));

    let found = store
        .find_token_by_hash(&TokenHash::of_secret(&secret))
        .unwrap();
    assert_eq!(found, Some(issued.token.clone()));
    assert_eq!(
        store.authenticate(&secret).unwrap(),
        Some(issued.token.clone())
    );
    assert_eq!(store.authenticate("hst_wrong").unwrap(), None);

    // The secret never reaches disk (checkpoint first so the WAL is folded in).
    drop(store);
    let db = std::fs::read(dir.path().join("hostel.db")).unwrap();
    let needle = secret.as_bytes();
    assert!(!db.windows(needle.len()).any(|w| w == needle));
}

#[test]
fn operator_and_tenant_tokens_list_and_revoke() {
    let (_d, store) = common::open();
    let t = tenant(&store, "acme", big_quota());
    let op = store.issue_token(None, "root", &common::audit()).unwrap();
    let tt = store
        .issue_token(Some(&t.id), "ci", &common::audit())
        .unwrap();
    assert_eq!(op.token.tenant, None);
    assert_eq!(
        store.list_tokens(Some(&t.id)).unwrap(),
        vec![tt.token.clone()]
    );
    assert_eq!(store.list_tokens(None).unwrap().len(), 2);

    store.delete_token(&tt.token.id, &common::audit()).unwrap();
    assert_eq!(store.authenticate(tt.secret.expose()).unwrap(), None);
    assert!(matches!(
        store.delete_token(&tt.token.id, &common::audit()),
        Err(StoreError::NotFound { .. })
    ));
    assert!(store
        .issue_token(Some(&TenantId::new_random()), "x", &common::audit())
        .is_err());
    assert!(store.issue_token(None, "", &common::audit()).is_err());
}

fn entry(
    actor: Actor,
    tenant: Option<TenantId>,
    action: &str,
    result: AuditResult,
) -> NewAuditEntry {
    NewAuditEntry {
        actor,
        tenant,
        action: action.into(),
        target: "web".into(),
        result,
    }
}

#[test]
fn audit_is_newest_first_filtered_and_paged() {
    let (_d, store) = common::open();
    let a = tenant(&store, "a", big_quota());
    let b = tenant(&store, "b", big_quota());
    let tok = store
        .issue_token(Some(&a.id), "ci", &common::audit())
        .unwrap()
        .token
        .id;
    for i in 0..10 {
        let (tenant, actor) = if i % 2 == 0 {
            (a.id, Actor::Token(tok))
        } else {
            (b.id, Actor::Operator)
        };
        let result = if i == 9 {
            AuditResult::Error("quota exceeded".into())
        } else {
            AuditResult::Ok
        };
        store
            .append_audit(&entry(actor, Some(tenant), &format!("vm.step{i}"), result))
            .unwrap();
    }
    store
        .append_audit(&entry(Actor::System, None, "host.start", AuditResult::Ok))
        .unwrap();

    // The two tenants and the token were recorded as they were made.
    let all = store.list_audit(&AuditQuery::newest(100)).unwrap();
    assert_eq!(all.len(), 14);
    assert_eq!(all[0].action, "host.start");
    assert_eq!(all[1].result, AuditResult::Error("quota exceeded".into()));
    assert!(all.windows(2).all(|w| w[0].seq > w[1].seq));
    assert!(all.windows(2).all(|w| w[0].at >= w[1].at));

    let only_a = store
        .list_audit(&AuditQuery::newest(100).for_tenant(a.id))
        .unwrap();
    assert_eq!(only_a.len(), 5);
    assert!(only_a
        .iter()
        .all(|e| e.tenant == Some(a.id) && e.actor == Actor::Token(tok)));
    assert_eq!(only_a[0].action, "vm.step8");

    let page1 = store.list_audit(&AuditQuery::newest(4)).unwrap();
    let page2 = store
        .list_audit(&AuditQuery::newest(4).before(page1[3].seq))
        .unwrap();
    assert_eq!(page1.len(), 4);
    assert_eq!(page2[0].seq, page1[3].seq - 1);
    assert!(store.list_audit(&AuditQuery::newest(0)).unwrap().is_empty());
}

#[test]
fn audit_rejects_bad_action() {
    let (_d, store) = common::open();
    let err = store
        .append_audit(&entry(Actor::System, None, "Bad Action", AuditResult::Ok))
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }));
}

#[test]
fn settings_round_trip() {
    let (_d, store) = common::open();
    let key = SettingKey::new("host.cpu_overcommit_ratio").unwrap();
    assert_eq!(store.get_setting(&key).unwrap(), None);
    store.set_setting(&key, "4.0").unwrap();
    store.set_setting(&key, "2.5").unwrap();
    assert_eq!(store.get_setting(&key).unwrap().as_deref(), Some("2.5"));
    let other = SettingKey::new("a.first").unwrap();
    store.set_setting(&other, "x").unwrap();
    assert_eq!(
        store.list_settings().unwrap(),
        vec![(other.clone(), "x".into()), (key.clone(), "2.5".into())]
    );
    assert!(store.delete_setting(&key).unwrap());
    assert!(!store.delete_setting(&key).unwrap());
    assert!(store.set_setting(&other, &"x".repeat(70_000)).is_err());
}

/// Issue 14 (5): a change and its audit entry commit together. A write whose change is
/// refused leaves no entry; a write whose entry cannot be written leaves no change.
#[test]
fn changes_and_their_audit_entries_commit_together() {
    let (_d, store) = common::open();
    let entry =
        |action: &str, target: &str| NewAuditEntry::ok(Actor::Operator, None, action, target);
    let t = store
        .create_tenant(
            &hostel_state::TenantName::new("acme").unwrap(),
            big_quota(),
            &entry("tenant.create", "acme"),
        )
        .unwrap();
    let log = |store: &dyn Store| store.list_audit(&AuditQuery::newest(100)).unwrap();
    let first = log(&store);
    assert_eq!(first.len(), 1);
    assert_eq!(
        (first[0].action.as_str(), first[0].target.as_str()),
        ("tenant.create", "acme")
    );

    // Refused change (name taken): no entry either.
    let taken = store.create_tenant(
        &hostel_state::TenantName::new("acme").unwrap(),
        big_quota(),
        &entry("tenant.create", "acme"),
    );
    assert!(matches!(taken, Err(StoreError::Conflict { .. })));
    assert_eq!(log(&store).len(), 1, "a refused change has no entry");

    // An entry the log cannot take (bad action) takes its change down with it.
    let bad = entry("NOT AN ACTION", "ci");
    assert!(store.issue_token(Some(&t.id), "ci", &bad).is_err());
    assert!(store.list_tokens(Some(&t.id)).unwrap().is_empty());
    assert_eq!(log(&store).len(), 1);

    // Revocation is recorded with it, and reports what it removed.
    let issued = store
        .issue_token(Some(&t.id), "ci", &entry("token.create", "ci"))
        .unwrap();
    let gone = store
        .delete_token(&issued.token.id, &entry("token.delete", "ci"))
        .unwrap();
    assert_eq!(gone, issued.token);
    let actions: Vec<String> = log(&store).into_iter().map(|e| e.action).collect();
    assert_eq!(actions, ["token.delete", "token.create", "tenant.create"]);
    assert!(matches!(
        store.get_token(&issued.token.id),
        Err(StoreError::NotFound { .. })
    ));

    // Several settings: all with one entry, or none.
    let key = |k: &str| SettingKey::new(k).unwrap();
    store
        .set_settings(
            &[(key("a.x"), "1".into()), (key("a.y"), "2".into())],
            &entry("host.settings", "host"),
        )
        .unwrap();
    let too_long = "x".repeat(70 * 1024);
    assert!(store
        .set_settings(
            &[(key("a.x"), "3".into()), (key("a.y"), too_long)],
            &entry("host.settings", "host"),
        )
        .is_err());
    assert_eq!(
        store.get_setting(&key("a.x")).unwrap().as_deref(),
        Some("1")
    );
    assert_eq!(log(&store).len(), 4);
}
