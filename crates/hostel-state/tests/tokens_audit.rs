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
    let issued = store.issue_token(Some(&t.id), "ci deploy").unwrap();
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
    let op = store.issue_token(None, "root").unwrap();
    let tt = store.issue_token(Some(&t.id), "ci").unwrap();
    assert_eq!(op.token.tenant, None);
    assert_eq!(
        store.list_tokens(Some(&t.id)).unwrap(),
        vec![tt.token.clone()]
    );
    assert_eq!(store.list_tokens(None).unwrap().len(), 2);

    store.delete_token(&tt.token.id).unwrap();
    assert_eq!(store.authenticate(tt.secret.expose()).unwrap(), None);
    assert!(matches!(
        store.delete_token(&tt.token.id),
        Err(StoreError::NotFound { .. })
    ));
    assert!(store
        .issue_token(Some(&TenantId::new_random()), "x")
        .is_err());
    assert!(store.issue_token(None, "").is_err());
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
    let tok = store.issue_token(Some(&a.id), "ci").unwrap().token.id;
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

    let all = store.list_audit(&AuditQuery::newest(100)).unwrap();
    assert_eq!(all.len(), 11);
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
