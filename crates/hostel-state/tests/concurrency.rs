//! The store is shared across threads (`Arc<dyn Store>`): readers run on
//! pooled connections alongside the writer and always see whole commits.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{big_quota, new_vm, spec, tenant};
use hostel_state::{SqliteStore, Store};

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync + ?Sized>() {}
    check::<SqliteStore>();
    check::<dyn Store>();
}

#[test]
fn readers_see_consistent_growing_snapshots_during_writes() {
    let (_d, store) = common::open();
    let t = tenant(&store, "acme", big_quota());
    let store: Arc<dyn Store> = Arc::new(store);
    let done = Arc::new(AtomicBool::new(false));

    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (store, done) = (store.clone(), done.clone());
            std::thread::spawn(move || {
                let mut last = 0;
                let mut reads = 0;
                while !done.load(Ordering::Relaxed) || reads == 0 {
                    let vms = store.list_vms(&t.id).unwrap();
                    let usage = store.tenant_usage(&t.id).unwrap();
                    assert!(vms.len() >= last, "a committed VM disappeared");
                    // Usage is read after the list, so it can only be ahead.
                    assert!(usage.vms as usize >= vms.len());
                    assert!(vms.iter().all(|v| v.generation == 1 && v.tenant == t.id));
                    last = vms.len();
                    reads += 1;
                }
                reads
            })
        })
        .collect();

    for i in 0..200 {
        store
            .create_vm(&t.id, &new_vm(&format!("vm-{i}"), spec(1, 128, 1)))
            .unwrap();
    }
    done.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert_eq!(store.list_vms(&t.id).unwrap().len(), 200);
}
