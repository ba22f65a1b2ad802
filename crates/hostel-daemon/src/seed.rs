//! The cloud-init seed of a VM booted from an OS image: who the guest is (instance id = VM
//! id, host name), who may log in (SSH keys), its network exactly as the platform assigned it
//! (static addresses matched by MAC), the customer's user-data, and a service template's
//! configuration. Written once at create into the VM's disk directory and kept.

use crate::service::DaemonError;
use hostel_api::CreateVm;
use hostel_images::{Addressing, IpCidr, NicConfig, SeedConfig, SeedNetwork, Template};
use hostel_state::{slaac_address, Store, Vm};
use std::net::IpAddr;

/// Checks the customer's seed fields before anything is created, naming the field at fault.
pub fn check(body: &CreateVm, template: Option<&Template>) -> Result<(), DaemonError> {
    let mut seed = SeedConfig {
        instance_id: "i-check".into(),
        hostname: hostname(body),
        ..Default::default()
    };
    let invalid = |field: &str, e: hostel_images::ImageError| DaemonError::invalid(field, e);
    seed.render().map_err(|e| invalid("hostname", e))?;
    seed.ssh_authorized_keys = body.ssh_keys.iter().map(|k| k.trim().to_string()).collect();
    seed.render().map_err(|e| invalid("ssh_keys", e))?;
    if let Some(t) = template {
        t.apply(&body.service_params, &mut seed)
            .map_err(|e| invalid("service_params", e))?;
    }
    seed.user_data = body.user_data.clone();
    seed.render().map_err(|e| invalid("user_data", e))?;
    Ok(())
}

fn hostname(body: &CreateVm) -> String {
    body.hostname.clone().unwrap_or_else(|| body.name.clone())
}

/// The full seed of `vm` (created, with its NICs allocated).
pub fn config(
    store: &dyn Store,
    vm: &Vm,
    body: &CreateVm,
    template: Option<&Template>,
) -> Result<SeedConfig, DaemonError> {
    let mut nics = Vec::new();
    for nic in store.list_nics_of_vm(&vm.id)? {
        let net = store.get_network(&nic.network)?;
        let mac = nic.mac;
        let mut addresses = vec![IpCidr {
            addr: IpAddr::V4(nic.ipv4),
            prefix: net.subnet4.prefix(),
        }];
        // The SLAAC address the switch expects; written out too, so a guest configured
        // statically (router advertisements off) still takes the same one.
        if let Some(v6) = net.subnet6.map(|p| slaac_address(&p, &nic.mac)) {
            addresses.push(IpCidr {
                addr: IpAddr::V6(v6),
                prefix: 64,
            });
        }
        nics.push(NicConfig {
            mac,
            name: format!("eth{}", nic.idx),
            addressing: Addressing::Static {
                addresses,
                gateway: Some(IpAddr::V4(net.gateway4)),
                dns: Vec::new(),
                search: Vec::new(),
            },
        });
    }
    let mut seed = SeedConfig {
        instance_id: vm.id.to_string(),
        hostname: hostname(body),
        ssh_authorized_keys: body.ssh_keys.iter().map(|k| k.trim().to_string()).collect(),
        // No NIC: tell cloud-init so, rather than have it wait for DHCP on nothing.
        network: if nics.is_empty() {
            SeedNetwork::Disabled
        } else {
            SeedNetwork::Nics(nics)
        },
        user_data: body.user_data.clone(),
        ..Default::default()
    };
    if let Some(t) = template {
        t.apply(&body.service_params, &mut seed)
            .map_err(|e| DaemonError::invalid("service_params", e))?;
    }
    Ok(seed)
}
