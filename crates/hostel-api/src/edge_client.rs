//! The client's edge calls: the external network, public addresses, firewall rules.

use crate::client::{Client, Result};
use crate::edge::*;
use crate::types::NetworkView;

fn q(tenant: Option<&str>) -> String {
    tenant.map(|t| format!("?tenant={t}")).unwrap_or_default()
}

impl Client {
    pub fn set_external(&self, body: &ExternalSetupBody) -> Result<ExternalView> {
        self.send("PUT", "/v1/external", body)
    }
    pub fn external(&self) -> Result<ExternalView> {
        self.get("/v1/external")
    }
    pub fn attach_network_external(
        &self,
        tenant: Option<&str>,
        network: &str,
        body: &AttachExternal,
    ) -> Result<NetworkView> {
        self.send(
            "PUT",
            &format!("/v1/networks/{network}/external{}", q(tenant)),
            body,
        )
    }
    pub fn detach_network_external(&self, tenant: Option<&str>, network: &str) -> Result<()> {
        self.delete(&format!("/v1/networks/{network}/external{}", q(tenant)))
    }
    pub fn set_appliance(
        &self,
        tenant: Option<&str>,
        network: &str,
        body: &SetAppliance,
    ) -> Result<NetworkView> {
        self.send(
            "PUT",
            &format!("/v1/networks/{network}/appliance{}", q(tenant)),
            body,
        )
    }
    pub fn clear_appliance(&self, tenant: Option<&str>, network: &str) -> Result<()> {
        self.delete(&format!("/v1/networks/{network}/appliance{}", q(tenant)))
    }
    pub fn allocate_address(
        &self,
        tenant: Option<&str>,
        body: &AllocateAddress,
    ) -> Result<AddressView> {
        self.send("POST", &format!("/v1/addresses{}", q(tenant)), body)
    }
    pub fn list_addresses(&self, tenant: Option<&str>) -> Result<Vec<AddressView>> {
        self.get(&format!("/v1/addresses{}", q(tenant)))
    }
    pub fn attach_address(
        &self,
        tenant: Option<&str>,
        address: &str,
        body: &AttachAddress,
    ) -> Result<AddressView> {
        self.send(
            "POST",
            &format!("/v1/addresses/{address}/attach{}", q(tenant)),
            body,
        )
    }
    pub fn detach_address(&self, tenant: Option<&str>, address: &str) -> Result<AddressView> {
        self.send(
            "POST",
            &format!("/v1/addresses/{address}/detach{}", q(tenant)),
            &serde_json::json!({}),
        )
    }
    pub fn release_address(&self, tenant: Option<&str>, address: &str) -> Result<()> {
        self.delete(&format!("/v1/addresses/{address}{}", q(tenant)))
    }
    pub fn firewall(&self, tenant: Option<&str>) -> Result<FirewallView> {
        self.get(&format!("/v1/firewall{}", q(tenant)))
    }
    pub fn add_firewall_rule(
        &self,
        tenant: Option<&str>,
        body: &FirewallRuleBody,
    ) -> Result<FirewallRuleView> {
        self.send("POST", &format!("/v1/firewall/rules{}", q(tenant)), body)
    }
    pub fn list_firewall_rules(&self, tenant: Option<&str>) -> Result<Vec<FirewallRuleView>> {
        self.get(&format!("/v1/firewall/rules{}", q(tenant)))
    }
    pub fn delete_firewall_rule(&self, tenant: Option<&str>, id: u32) -> Result<()> {
        self.delete(&format!("/v1/firewall/rules/{id}{}", q(tenant)))
    }
    pub fn set_firewall_defaults(
        &self,
        tenant: Option<&str>,
        body: &FirewallDefaults,
    ) -> Result<FirewallView> {
        self.send("PUT", &format!("/v1/firewall/defaults{}", q(tenant)), body)
    }
    pub fn set_address_set(
        &self,
        tenant: Option<&str>,
        name: &str,
        body: &AddressSetBody,
    ) -> Result<FirewallView> {
        self.send(
            "PUT",
            &format!("/v1/firewall/sets/{name}{}", q(tenant)),
            body,
        )
    }
    pub fn delete_address_set(&self, tenant: Option<&str>, name: &str) -> Result<()> {
        self.delete(&format!("/v1/firewall/sets/{name}{}", q(tenant)))
    }
    pub fn set_vm_group(
        &self,
        tenant: Option<&str>,
        name: &str,
        body: &VmGroupBody,
    ) -> Result<FirewallView> {
        self.send(
            "PUT",
            &format!("/v1/firewall/groups/{name}{}", q(tenant)),
            body,
        )
    }
    pub fn delete_vm_group(&self, tenant: Option<&str>, name: &str) -> Result<()> {
        self.delete(&format!("/v1/firewall/groups/{name}{}", q(tenant)))
    }
    pub fn firewall_log(&self, tenant: Option<&str>) -> Result<Vec<FirewallLogView>> {
        self.get(&format!("/v1/firewall/log{}", q(tenant)))
    }
}
