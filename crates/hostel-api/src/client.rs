//! The typed API client. Blocking (ureq): the CLI makes one call at a time.

use crate::limits::*;
use crate::types::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::Read;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error; `message` is its reason.
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        field: Option<String>,
    },
    #[error("cannot reach the hostel daemon at {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("unexpected response: {0}")]
    Decode(String),
    /// The daemon presented another certificate than the one pinned for it.
    #[error(
        "refusing {url}: it presented the TLS certificate with SHA-256 fingerprint {presented}, \
         but {expected} is pinned for it. The daemon's certificate changed, or someone is in \
         between. If its operator replaced the certificate, compare the new fingerprint with \
         the one the daemon prints at start-up and pin it: `hostel remote add NAME {url} \
         --token … --fingerprint {presented}`"
    )]
    CertificateChanged {
        url: String,
        expected: crate::tls::Fingerprint,
        presented: crate::tls::Fingerprint,
    },
    #[error(transparent)]
    Trust(#[from] crate::tls::TrustError),
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    trust: Option<crate::tls::Trust>,
    presented: crate::tls::Presented,
}

impl Client {
    pub fn new(base: impl Into<String>, token: Option<String>) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .build();
        Client {
            base: base.into().trim_end_matches('/').to_string(),
            token,
            agent,
            trust: None,
            presented: Default::default(),
        }
    }

    /// A client of an `https://` daemon trusted by `trust` (see [`crate::tls`]).
    pub fn with_trust(
        base: impl Into<String>,
        token: Option<String>,
        trust: crate::tls::Trust,
    ) -> Result<Self> {
        let presented = crate::tls::Presented::default();
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .tls_config(crate::tls::client_config(&trust, &presented)?)
            .build();
        Ok(Client {
            base: base.into().trim_end_matches('/').to_string(),
            token,
            agent,
            trust: Some(trust),
            presented,
        })
    }

    /// How an `https://` daemon's certificate is trusted (`None`: plain HTTP, or the
    /// default roots of [`Client::new`]).
    pub fn trust(&self) -> Option<&crate::tls::Trust> {
        self.trust.as_ref()
    }

    /// The fingerprint of the certificate the daemon presented last (HTTPS only).
    pub fn presented_fingerprint(&self) -> Option<crate::tls::Fingerprint> {
        self.presented.get()
    }

    /// The daemon URL this client talks to, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The API token presented, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let mut req = self
            .agent
            .request(method, &format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        req
    }

    fn handle(
        &self,
        r: std::result::Result<ureq::Response, ureq::Error>,
    ) -> Result<ureq::Response> {
        match r {
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(status, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                Err(match serde_json::from_str::<ApiErrorBody>(&text) {
                    Ok(b) => ClientError::Api {
                        status,
                        code: b.error.code,
                        message: b.error.message,
                        field: b.error.field,
                    },
                    Err(_) => ClientError::Api {
                        status,
                        code: "http".into(),
                        message: format!("HTTP {status}: {}", text.trim()),
                        field: None,
                    },
                })
            }
            Err(e) => Err(match (&self.trust, self.presented.get()) {
                (Some(crate::tls::Trust::Pinned(expected)), Some(presented))
                    if *expected != presented =>
                {
                    ClientError::CertificateChanged {
                        url: self.base.clone(),
                        expected: *expected,
                        presented,
                    }
                }
                _ => ClientError::Transport {
                    url: self.base.clone(),
                    reason: e.to_string(),
                },
            }),
        }
    }

    fn decode<T: DeserializeOwned>(resp: ureq::Response) -> Result<T> {
        resp.into_json()
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        Self::decode(self.handle(self.request("GET", path).call())?)
    }

    pub fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> Result<T> {
        Self::decode(self.handle(self.request(method, path).send_json(body))?)
    }

    pub fn delete(&self, path: &str) -> Result<()> {
        self.handle(self.request("DELETE", path).call()).map(|_| ())
    }

    /// A streaming GET (console follow): the body as a reader.
    pub fn stream(&self, path: &str) -> Result<Box<dyn Read + Send + Sync + 'static>> {
        let resp = self.handle(self.request("GET", path).call())?;
        Ok(resp.into_reader())
    }

    /// A POST whose answer streams (exec's NDJSON): the body as a reader.
    pub fn post_stream<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Box<dyn Read + Send + Sync + 'static>> {
        let resp = self.handle(self.request("POST", path).send_json(body))?;
        Ok(resp.into_reader())
    }

    /// Plain-text GET (console log, metrics).
    pub fn get_text(&self, path: &str) -> Result<String> {
        self.handle(self.request("GET", path).call())?
            .into_string()
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    // --- typed calls ---

    pub fn create_tenant(&self, body: &CreateTenant) -> Result<TenantView> {
        self.send("POST", "/v1/tenants", body)
    }
    pub fn list_tenants(&self) -> Result<Vec<TenantView>> {
        self.get("/v1/tenants")
    }
    pub fn set_quota(&self, tenant: &str, quota: &QuotaBody) -> Result<TenantView> {
        self.send("PUT", &format!("/v1/tenants/{tenant}/quota"), quota)
    }
    pub fn create_token(&self, tenant: &str, body: &CreateToken) -> Result<TokenIssued> {
        self.send("POST", &format!("/v1/tenants/{tenant}/tokens"), body)
    }
    /// Tokens: the operator's call lists every tenant's (or `tenant`'s), a tenant's its own.
    pub fn list_tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenView>> {
        self.get(&format!("/v1/tokens{}", Self::tenant_query(tenant)))
    }
    /// Revokes a token by id: the next call presenting its secret is unauthorized.
    pub fn delete_token(&self, id: &str) -> Result<()> {
        self.delete(&format!("/v1/tokens/{id}"))
    }
    pub fn audit(&self, tenant: Option<&str>, limit: u32) -> Result<Vec<AuditView>> {
        let mut path = format!("/v1/audit?limit={limit}");
        if let Some(t) = tenant {
            path.push_str(&format!("&tenant={t}"));
        }
        self.get(&path)
    }
    pub fn list_images(&self) -> Result<Vec<ImageView>> {
        self.get("/v1/images")
    }
    /// One image, or the build of one (`state` building/failed).
    pub fn show_image(&self, name: &str) -> Result<ImageView> {
        self.get(&format!("/v1/images/{name}"))
    }
    /// Starts a build; answers at once (state `building`, or `ready` when cached).
    pub fn build_image(&self, body: &BuildImage) -> Result<ImageView> {
        self.send("POST", "/v1/images/build", body)
    }
    pub fn import_image(&self, body: &ImportImage) -> Result<ImageView> {
        self.send("POST", "/v1/images/import", body)
    }
    pub fn delete_image(&self, name: &str) -> Result<()> {
        self.delete(&format!("/v1/images/{name}"))
    }
    pub fn host(&self) -> Result<HostView> {
        self.get("/v1/host")
    }
    pub fn set_host(&self, s: &HostSettings) -> Result<HostView> {
        self.send("PUT", "/v1/host/settings", s)
    }

    /// A tenant's default NIC ceiling (operator only).
    pub fn tenant_nic_ceiling(&self, tenant: &str) -> Result<TenantNicCeilingView> {
        self.get(&format!("/v1/tenants/{tenant}/nic_ceiling"))
    }
    pub fn set_tenant_nic_ceiling(
        &self,
        tenant: &str,
        ceiling: &NicLimitsBody,
    ) -> Result<TenantNicCeilingView> {
        self.send("PUT", &format!("/v1/tenants/{tenant}/nic_ceiling"), ceiling)
    }
    pub fn clear_tenant_nic_ceiling(&self, tenant: &str) -> Result<()> {
        self.delete(&format!("/v1/tenants/{tenant}/nic_ceiling"))
    }

    /// What a tenant may do through its VMs' guest agents (operator only).
    pub fn tenant_agent(&self, tenant: &str) -> Result<crate::TenantAgentView> {
        self.get(&format!("/v1/tenants/{tenant}/agent"))
    }
    pub fn set_tenant_agent(
        &self,
        tenant: &str,
        body: &crate::SetTenantAgent,
    ) -> Result<crate::TenantAgentView> {
        self.send("PUT", &format!("/v1/tenants/{tenant}/agent"), body)
    }

    fn tenant_query(tenant: Option<&str>) -> String {
        tenant.map(|t| format!("?tenant={t}")).unwrap_or_default()
    }
    pub fn create_network(
        &self,
        tenant: Option<&str>,
        body: &CreateNetwork,
    ) -> Result<NetworkView> {
        self.send(
            "POST",
            &format!("/v1/networks{}", Self::tenant_query(tenant)),
            body,
        )
    }
    pub fn list_networks(&self, tenant: Option<&str>) -> Result<Vec<NetworkView>> {
        self.get(&format!("/v1/networks{}", Self::tenant_query(tenant)))
    }
    pub fn show_network(&self, tenant: Option<&str>, name: &str) -> Result<NetworkView> {
        self.get(&format!(
            "/v1/networks/{name}{}",
            Self::tenant_query(tenant)
        ))
    }
    pub fn delete_network(&self, tenant: Option<&str>, name: &str) -> Result<()> {
        self.delete(&format!(
            "/v1/networks/{name}{}",
            Self::tenant_query(tenant)
        ))
    }

    /// VM routes; `tenant` is needed only with the operator token.
    pub fn vms(&self, tenant: Option<&str>) -> VmClient<'_> {
        VmClient {
            client: self,
            base: "/v1/vms",
            query: tenant.map(|t| format!("?tenant={t}")).unwrap_or_default(),
        }
    }

    /// VPS routes: the same calls as VMs' (create, list, show, start, stop, restart,
    /// delete, console) under `/v1/vpss`, plus [`VmClient::vps_exec`].
    pub fn vpss(&self, tenant: Option<&str>) -> VmClient<'_> {
        VmClient {
            client: self,
            base: "/v1/vpss",
            query: tenant.map(|t| format!("?tenant={t}")).unwrap_or_default(),
        }
    }
}

/// A pull's answer: the body is the file's content.
pub struct PulledFile {
    pub size: Option<u64>,
    /// The guest's own SHA-256 of the file (hex), when it has `sha256sum`.
    pub guest_sha256: Option<String>,
    pub body: Box<dyn Read + Send + Sync + 'static>,
}

pub struct VmClient<'a> {
    client: &'a Client,
    /// `/v1/vms` or `/v1/vpss`.
    base: &'static str,
    query: String,
}

impl VmClient<'_> {
    fn path(&self, rest: &str) -> String {
        format!("{}{rest}{}", self.base, self.query)
    }
    fn with(&self, rest: &str, extra: &str) -> String {
        let sep = if self.query.is_empty() { "?" } else { "&" };
        format!("{}{rest}{}{sep}{extra}", self.base, self.query)
    }
    pub fn create(&self, body: &CreateVm) -> Result<VmView> {
        self.client.send("POST", &self.path(""), body)
    }
    pub fn list(&self) -> Result<Vec<VmView>> {
        self.client.get(&self.path(""))
    }
    pub fn show(&self, name: &str) -> Result<VmView> {
        self.client.get(&self.path(&format!("/{name}")))
    }
    pub fn start(&self, name: &str) -> Result<VmView> {
        self.client
            .send("POST", &self.path(&format!("/{name}/start")), &())
    }
    pub fn stop(&self, name: &str, body: &StopVm) -> Result<VmView> {
        self.client
            .send("POST", &self.path(&format!("/{name}/stop")), body)
    }
    pub fn restart(&self, name: &str) -> Result<VmView> {
        self.client
            .send("POST", &self.path(&format!("/{name}/restart")), &())
    }
    pub fn resize(&self, name: &str, body: &ResizeVm) -> Result<VmView> {
        self.client
            .send("PATCH", &self.path(&format!("/{name}")), body)
    }
    pub fn delete(&self, name: &str) -> Result<()> {
        self.client.delete(&self.path(&format!("/{name}")))
    }
    /// Runs a command in the guest: the answer's NDJSON lines ([`crate::ExecEvent`]).
    pub fn exec(
        &self,
        name: &str,
        body: &crate::ExecVm,
    ) -> Result<Box<dyn Read + Send + Sync + 'static>> {
        self.client
            .post_stream(&self.path(&format!("/{name}/exec")), body)
    }
    /// Runs a command in a VPS (runc exec) and returns its output when it has ended.
    pub fn vps_exec(&self, name: &str, body: &crate::ExecVps) -> Result<crate::ExecVpsResult> {
        self.client
            .send("POST", &self.path(&format!("/{name}/exec")), body)
    }
    /// Pushes `len` bytes from `body` to `push.path` in the guest (streamed, never held).
    pub fn push_file(
        &self,
        name: &str,
        push: &crate::FilePush,
        body: impl Read,
        len: u64,
    ) -> Result<crate::FileTransferView> {
        let mut req = self
            .client
            .request("PUT", &self.path(&format!("/{name}/files")))
            .query("path", &push.path)
            .set("Content-Type", "application/octet-stream")
            .set("Content-Length", &len.to_string());
        if let Some(m) = &push.mode {
            req = req.query("mode", m);
        }
        if let Some(u) = push.uid {
            req = req.query("uid", &u.to_string());
        }
        if let Some(g) = push.gid {
            req = req.query("gid", &g.to_string());
        }
        Client::decode(self.client.handle(req.send(body))?)
    }
    /// Pulls `path` from the guest: its size, the guest's SHA-256 and the content.
    pub fn pull_file(&self, name: &str, path: &str) -> Result<PulledFile> {
        let resp = self.client.handle(
            self.client
                .request("GET", &self.path(&format!("/{name}/files")))
                .query("path", path)
                .call(),
        )?;
        let size = resp
            .header(crate::FILE_SIZE_HEADER)
            .and_then(|v| v.parse().ok());
        let guest_sha256 = resp.header(crate::FILE_SHA256_HEADER).map(str::to_owned);
        Ok(PulledFile {
            size,
            guest_sha256,
            body: resp.into_reader(),
        })
    }
    /// What the guest's agent reports.
    pub fn guest(&self, name: &str) -> Result<crate::GuestView> {
        self.client.get(&self.path(&format!("/{name}/guest")))
    }
    pub fn console(&self, name: &str) -> Result<String> {
        self.client
            .get_text(&self.path(&format!("/{name}/console")))
    }
    /// NIC `nic`'s rate limits.
    pub fn nic_limits(&self, name: &str, nic: u32) -> Result<NicLimitsView> {
        self.client
            .get(&self.path(&format!("/{name}/nics/{nic}/limits")))
    }
    /// Sets the tenant's own limits on NIC `nic` (within the operator's ceiling).
    pub fn set_nic_limits(
        &self,
        name: &str,
        nic: u32,
        limits: &NicLimitsBody,
    ) -> Result<NicLimitsView> {
        self.client.send(
            "PUT",
            &self.path(&format!("/{name}/nics/{nic}/limits")),
            limits,
        )
    }
    /// The operator's ceiling on NIC `nic`.
    pub fn set_nic_ceiling(
        &self,
        name: &str,
        nic: u32,
        ceiling: &NicLimitsBody,
    ) -> Result<NicLimitsView> {
        self.client.send(
            "PUT",
            &self.path(&format!("/{name}/nics/{nic}/limits/ceiling")),
            ceiling,
        )
    }
    /// Drops the NIC's own ceiling: the tenant's default applies again.
    pub fn clear_nic_ceiling(&self, name: &str, nic: u32) -> Result<()> {
        self.client
            .delete(&self.path(&format!("/{name}/nics/{nic}/limits/ceiling")))
    }
    pub fn console_follow(&self, name: &str) -> Result<Box<dyn Read + Send + Sync + 'static>> {
        self.client
            .stream(&self.with(&format!("/{name}/console"), "follow=true"))
    }
}
