//! The `web` template end to end: its image (debian-12 + nginx, derived and cached), a VM
//! seeded with the template's cloud-config and the customer's page, and the page served over
//! HTTP on the template's port to a client in the test network.

mod common;

use common::*;
use hostel_engine::MacAddr;
use hostel_images::{Addressing, Catalog, NicConfig, SeedConfig, SeedNetwork};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

#[test]
fn web_template_serves_the_customers_page() {
    let Some(store) = cached_store() else { return };
    let catalog = Catalog::builtin();
    let web = catalog.template("web").expect("web template").clone();
    let out = build(&store, &web.image);
    eprintln!(
        "{}: cached={} in {:.1?}",
        web.image, out.cached, out.elapsed
    );

    let page = format!("<h1>Customer page {}</h1>\n", std::process::id());
    let mut seed = SeedConfig {
        instance_id: format!("web-{}", std::process::id()),
        hostname: "hostel-web-test".into(),
        network: SeedNetwork::Nics(vec![NicConfig {
            mac: MacAddr([0x52, 0x54, 0x00, 0xab, 0xcd, 0x03]),
            name: "eth0".into(),
            addressing: Addressing::Static {
                addresses: vec!["10.0.0.2/24".parse().unwrap()],
                gateway: None,
                dns: vec![],
                search: vec![],
            },
        }]),
        ..Default::default()
    };
    let params = BTreeMap::from([("index_html".to_string(), page.clone())]);
    web.apply(&params, &mut seed).unwrap();
    let port = web.ports[0].port;

    let (ns, tap) = network("web");
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_path_buf();
    let nic = format!("tap={tap},mac=52:54:00:ab:cd:03").parse().unwrap();
    let image = web.image.clone();
    let (ok, body, transcript) = ns
        .spawn_in(move || {
            runtime().block_on(async move {
                let mut g = boot(&store, &image, &seed, &dir_path, Some(nic), 2 << 30).await;
                g.expect("hostel-web-test login:");
                let url = format!("http://10.0.0.2:{port}/");
                let (ok, body) = retry(
                    &mut || {
                        let mut c = Command::new("curl");
                        c.args(["-sS", "--max-time", "10", &url]);
                        c
                    },
                    Duration::from_secs(120),
                );
                let transcript = g.transcript();
                g.save_transcript("boot_web");
                g.vm.stop(Duration::from_secs(30)).await;
                (ok, body, transcript)
            })
        })
        .join()
        .expect("guest thread");
    assert!(ok, "no HTTP answer: {body}\n{transcript}");
    assert_eq!(body, page, "served page differs\n{transcript}");
}
