//! The store's edge rendered for the switch: the external network (`ExternalConfig`) with
//! one `EdgeConfig` per tenant that has a network attached to it, each carrying the
//! tenant's floating addresses, source-NAT subnets and firewall policy.
//!
//! Names a tenant wrote are resolved here: a NIC-scoped rule's NIC to that NIC's addresses,
//! a VM group to its VMs' addresses. A rule whose NIC is gone (its VM deleted) keeps its
//! place with no address, so it matches nothing instead of failing the whole table.

use super::networking::port_id;
use hostel_state::{
    slaac_address, AddressKind, ExternalSetup, FirewallDoc, Network, NetworkEdge, NetworkId, Store,
    TenantId, VmId, VmNic,
};
use hostel_switch_proto::external::{EdgeConfig, ExternalConfig, FloatingIp};
use hostel_switch_proto::firewall::PolicySpec;
use hostel_types::Ipv6Cidr;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// The switch's name for a tenant's edge (and its firewall).
pub fn edge_id(tenant: &TenantId) -> String {
    tenant.to_string()
}

/// Every address of a NIC the switch admits: its IPv4 one and, on an IPv6 network, its
/// SLAAC one.
fn nic_addrs(nic: &VmNic, nets: &HashMap<NetworkId, Network>) -> Vec<IpAddr> {
    let mut v = vec![IpAddr::V4(nic.ipv4)];
    if let Some(p) = nets.get(&nic.network).and_then(|n| n.subnet6) {
        v.push(IpAddr::V6(slaac_address(&p, &nic.mac)));
    }
    v
}

/// The tenant's firewall as the switch takes it, names resolved.
pub fn policy_spec(
    store: &dyn Store,
    tenant: &TenantId,
    doc: &FirewallDoc,
) -> hostel_state::Result<PolicySpec> {
    use hostel_switch_proto::firewall::Scope;
    let nets: HashMap<NetworkId, Network> = store
        .list_networks(tenant)?
        .into_iter()
        .map(|n| (n.id, n))
        .collect();
    let vms = store.list_vms(tenant)?;
    let mut nics_of: HashMap<VmId, Vec<VmNic>> = HashMap::new();
    for vm in &vms {
        nics_of.insert(vm.id, store.list_nics_of_vm(&vm.id)?);
    }
    let mut nics: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for r in &doc.rules {
        if let Scope::Nic(port) = &r.scope {
            let addrs = nics_of
                .values()
                .flatten()
                .find(|n| port_id(&n.vm, n.idx) == *port)
                .map(|n| nic_addrs(n, &nets))
                .unwrap_or_default();
            nics.insert(port.clone(), addrs);
        }
    }
    let mut groups: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for (name, members) in &doc.groups {
        let mut addrs = Vec::new();
        for m in members {
            if let Some(vm) = vms.iter().find(|v| &v.name == m) {
                for n in nics_of.get(&vm.id).into_iter().flatten() {
                    addrs.extend(nic_addrs(n, &nets));
                }
            }
        }
        groups.insert(name.clone(), addrs);
    }
    Ok(PolicySpec {
        rules: doc.rules.clone(),
        default_ingress: doc.default_ingress,
        default_egress: doc.default_egress,
        sets: doc.sets.clone(),
        groups,
        nics,
    })
}

/// The external network with every tenant's edge; `None` until the operator sets it up.
pub fn external_config(store: &dyn Store) -> hostel_state::Result<Option<ExternalConfig>> {
    let Some(setup) = store.get_external()? else {
        return Ok(None);
    };
    let edges = store.list_network_edges()?;
    let addresses = store.list_public_addresses(None)?;
    let firewalls: HashMap<TenantId, FirewallDoc> = store.list_firewalls()?.into_iter().collect();
    let appliances = store.list_appliances()?;
    let mut by_tenant: BTreeMap<TenantId, Vec<&NetworkEdge>> = BTreeMap::new();
    for e in &edges {
        by_tenant.entry(e.tenant).or_default().push(e);
    }
    let mut out = Vec::new();
    for (tenant, nets) in by_tenant {
        let held: Vec<_> = addresses.iter().filter(|a| a.tenant == tenant).collect();
        let Some(outside) = held.iter().find(|a| a.kind == AddressKind::Outside) else {
            tracing::warn!(%tenant, "tenant edge without its own address; left out");
            continue;
        };
        let floating: Vec<_> = held
            .iter()
            .filter(|a| a.kind == AddressKind::Floating)
            .collect();
        let mut attached4 = Vec::new();
        for a in &floating {
            if let Some((vm, idx)) = a.attached {
                let nic = store
                    .list_nics_of_vm(&vm)?
                    .into_iter()
                    .find(|n| n.idx == idx);
                if let Some(nic) = nic {
                    attached4.push(FloatingIp {
                        public: a.address,
                        private: nic.ipv4,
                    });
                }
            }
        }
        let (mut snat4, mut routed4, mut routed6) = (Vec::new(), Vec::new(), Vec::new());
        for e in &nets {
            let net = store.get_network(&e.network)?;
            if e.routed {
                routed4.push(net.subnet4.into());
                let p6: Option<Ipv6Cidr> = net.subnet6.map(Into::into);
                if let Some(p) = p6.filter(|p| {
                    setup
                        .routed_pools6
                        .iter()
                        .any(|r| r.prefix <= p.prefix && r.contains(p.addr))
                }) {
                    routed6.push(p);
                }
            } else if e.snat {
                snat4.push(net.subnet4.into());
            }
        }
        // An IPv6 address on the wire only for an edge that routes IPv6.
        let outside6 = if routed6.is_empty() {
            None
        } else {
            setup.outside6(outside.address)
        };
        if outside6.is_none() {
            routed6.clear();
        }
        let doc = firewalls.get(&tenant).cloned().unwrap_or_default();
        // Security appliances of the attached networks: a designation whose VM is gone
        // stays, with no port, so the switch keeps that network's outside traffic stopped.
        let appliances = appliances
            .iter()
            .filter(|a| nets.iter().any(|e| e.network == a.network))
            .map(|a| hostel_switch_proto::ApplianceConfig {
                network: a.network.to_string(),
                port: a
                    .nic
                    .as_ref()
                    .map(|(vm, idx)| super::networking::port_id(vm, *idx)),
            })
            .collect();
        out.push(EdgeConfig {
            tenant: edge_id(&tenant),
            networks: nets.iter().map(|e| e.network.to_string()).collect(),
            outside4: outside.address,
            outside6,
            floating4: floating.iter().map(|a| a.address).collect(),
            routed4,
            routed6,
            attached4,
            snat4,
            policy: policy_spec(store, &tenant, &doc)?,
            conntrack_limit: setup.conntrack_limit,
            appliances,
        });
    }
    Ok(Some(to_config(&setup, out)))
}

/// The switch's form of the operator's set-up, with `edges`.
pub fn to_config(setup: &ExternalSetup, edges: Vec<EdgeConfig>) -> ExternalConfig {
    ExternalConfig {
        interface: setup.interface.clone(),
        mac: setup.mac,
        subnet4: setup.subnet4,
        gateway4: setup.gateway4,
        subnet6: setup.subnet6,
        gateway6: setup.gateway6,
        edges,
    }
}
