//! The v1 REST API: routing and authentication. Handlers live in one file per resource;
//! the steps they share (tenant scope, finding by name, audit, store access off the async
//! workers) are in [`scoped`].

mod addresses;
mod agent;
mod agent_files;
mod backups;
mod console;
mod doc;
mod external;
mod firewall;
mod host;
mod ids;
mod images;
mod json;
mod networks;
mod nic_limits;
mod scoped;
mod tenants;
mod tokens;
mod views;
mod vms;
mod volumes;
mod vps;

use crate::adapters::engine::QemuEngine;
use crate::error::{ApiError, ApiResult};
use crate::service::vms::Vms;
use crate::supervisor::Supervisor;
use crate::Ctx;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::routing::{get, post, put};
use axum::Router;
use doc::Security;
use hostel_state::{Actor, TenantId};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::OpenApi;

pub use json::{ApiJson, ApiPath, ApiQuery};
pub use scoped::Named;

#[derive(Clone)]
pub struct AppState {
    pub ctx: Arc<Ctx>,
    pub supervisor: Arc<Supervisor>,
    /// The engine as the services see it (the supervisor, the standby pool).
    pub engine: Arc<QemuEngine>,
    /// VMs whose serial console has an interactive client (one at a time).
    pub consoles: Arc<console::AttachedConsoles>,
    /// Each VM's guest agent channel, one call at a time (`service/agent.rs`).
    pub agents: Arc<crate::service::agent::AgentChannels>,
}

impl AppState {
    pub fn new(ctx: Arc<Ctx>, supervisor: Arc<Supervisor>) -> Self {
        Self {
            engine: Arc::new(QemuEngine::new(ctx.clone(), supervisor.clone())),
            ctx,
            supervisor,
            consoles: Default::default(),
            agents: Default::default(),
        }
    }

    /// The guest agent's operations.
    pub fn agent(&self) -> crate::service::agent::GuestAgent<'_> {
        crate::service::agent::GuestAgent::new(&self.ctx.store, &self.ctx.layout, &self.agents)
    }

    /// The VM operations, over the real engine and switch.
    pub fn vms(&self) -> Vms<'_, QemuEngine, Ctx> {
        Vms::new(
            &self.ctx.store,
            &self.ctx.layout,
            &self.ctx.images,
            &self.engine,
            &self.ctx,
        )
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(host::metrics))
        .route("/v1/health", get(|| async { "ok" }))
        .route("/v1/host", get(host::show))
        .route("/v1/host/settings", put(host::set_settings))
        .route("/v1/images", get(images::list))
        .route("/v1/images/build", post(images::build))
        .route("/v1/images/import", post(images::import))
        .route(
            "/v1/images/{name}",
            get(images::show).delete(images::delete),
        )
        .route("/v1/audit", get(host::audit))
        .route("/v1/tenants", post(tenants::create).get(tenants::list))
        .route("/v1/tenants/{tenant}", get(tenants::show))
        .route("/v1/tenants/{tenant}/quota", put(tenants::set_quota))
        .route("/v1/tenants/{tenant}/tokens", post(tenants::create_token))
        .route(
            "/v1/tenants/{tenant}/agent",
            get(agent_files::show_tenant).put(agent_files::set_tenant),
        )
        .route(
            "/v1/tenants/{tenant}/nic_ceiling",
            get(nic_limits::show_tenant)
                .put(nic_limits::set_tenant)
                .delete(nic_limits::clear_tenant),
        )
        .route("/v1/ids", get(ids::show).put(ids::set))
        .route("/v1/ids/rules", put(ids::set_rules))
        .route("/v1/ids/alerts", get(ids::alerts))
        .route("/v1/tokens", get(tokens::list))
        .route("/v1/tokens/{id}", axum::routing::delete(tokens::delete))
        .route("/v1/networks", post(networks::create).get(networks::list))
        .route(
            "/v1/networks/{name}",
            get(networks::show).delete(networks::delete),
        )
        .route("/v1/external", get(external::show).put(external::set))
        .route(
            "/v1/networks/{name}/external",
            put(external::attach).delete(external::detach),
        )
        .route(
            "/v1/networks/{name}/appliance",
            put(external::set_appliance).delete(external::clear_appliance),
        )
        .route(
            "/v1/addresses",
            post(addresses::allocate).get(addresses::list),
        )
        .route(
            "/v1/addresses/{address}",
            axum::routing::delete(addresses::release),
        )
        .route("/v1/addresses/{address}/attach", post(addresses::attach))
        .route("/v1/addresses/{address}/detach", post(addresses::detach))
        .route("/v1/firewall", get(firewall::show))
        .route(
            "/v1/firewall/rules",
            get(firewall::list_rules).post(firewall::add_rule),
        )
        .route(
            "/v1/firewall/rules/{id}",
            axum::routing::delete(firewall::delete_rule),
        )
        .route("/v1/firewall/defaults", put(firewall::set_defaults))
        .route(
            "/v1/firewall/sets/{name}",
            put(firewall::set_set).delete(firewall::delete_set),
        )
        .route(
            "/v1/firewall/groups/{name}",
            put(firewall::set_group).delete(firewall::delete_group),
        )
        .route("/v1/firewall/log", get(firewall::log))
        .route("/v1/vpss", post(vps::create).get(vps::list))
        .route("/v1/vpss/{name}", get(vps::show).delete(vps::delete))
        .route("/v1/vpss/{name}/start", post(vps::start))
        .route("/v1/vpss/{name}/stop", post(vps::stop))
        .route("/v1/vpss/{name}/restart", post(vps::restart))
        .route("/v1/vpss/{name}/exec", post(vps::exec))
        .route("/v1/vpss/{name}/console", get(vps::console))
        .route("/v1/vms", post(vms::create).get(vms::list))
        .route(
            "/v1/vms/{name}",
            get(vms::show).patch(vms::resize).delete(vms::delete),
        )
        .route("/v1/vms/{name}/start", post(vms::start))
        .route("/v1/vms/{name}/stop", post(vms::stop))
        .route("/v1/vms/{name}/restart", post(vms::restart))
        .route("/v1/vms/{name}/console", get(vms::console))
        .route("/v1/vms/{name}/console/attach", get(console::attach))
        .route("/v1/vms/{name}/exec", post(agent::exec))
        .route("/v1/vms/{name}/guest", get(agent::guest))
        .route(
            "/v1/vms/{name}/files",
            put(agent_files::push).get(agent_files::pull),
        )
        .route(
            "/v1/vms/{name}/nics/{index}/limits",
            get(nic_limits::show).put(nic_limits::set),
        )
        .route(
            "/v1/vms/{name}/nics/{index}/limits/ceiling",
            put(nic_limits::set_ceiling).delete(nic_limits::clear_ceiling),
        )
        .route(
            "/v1/storage/devices",
            post(volumes::add_device).get(volumes::list_devices),
        )
        .route("/v1/storage/devices/remove", post(volumes::remove_device))
        .route("/v1/volumes", post(volumes::create).get(volumes::list))
        .route(
            "/v1/volumes/{name}",
            get(volumes::show).delete(volumes::delete),
        )
        .route(
            "/v1/vms/{name}/snapshots",
            post(volumes::create_vm_snapshot),
        )
        .route(
            "/v1/vms/{name}/snapshots/{snapshot}",
            axum::routing::delete(volumes::delete_vm_snapshot),
        )
        .route(
            "/v1/vms/{name}/snapshots/{snapshot}/restore",
            post(volumes::restore_vm_snapshot),
        )
        .route("/v1/volumes/{name}/backups", post(backups::create_backup))
        .route("/v1/backups", get(backups::list_backups))
        .route(
            "/v1/tenants/{tenant}/storage_quota",
            get(backups::storage_quota).put(backups::set_storage_quota),
        )
        .route(
            "/v1/backups/{name}",
            axum::routing::delete(backups::delete_backup),
        )
        .route("/v1/backups/{name}/restore", post(backups::restore_backup))
        .route("/v1/volumes/{name}/attach", post(volumes::attach))
        .route("/v1/volumes/{name}/detach", post(volumes::detach))
        .route("/v1/volumes/{name}/resize", post(volumes::resize))
        .route(
            "/v1/volumes/{name}/snapshots",
            post(volumes::create_snapshot),
        )
        .route(
            "/v1/volumes/{name}/snapshots/{snapshot}",
            axum::routing::delete(volumes::delete_snapshot),
        )
        .route(
            "/v1/volumes/{name}/snapshots/{snapshot}/restore",
            post(volumes::restore_snapshot),
        )
        .fallback(|| async { ApiError::no_route() })
        .layer(axum::middleware::from_fn(run_changes_to_completion))
        .with_state(state)
}

/// A client that hangs up must not cut a state-changing call in half (a VM recorded but
/// never started, a network in the store but not in the switch, a missing audit entry):
/// calls other than GET/HEAD run on a task of their own, which finishes whether or not
/// anyone is still waiting for the answer.
async fn run_changes_to_completion(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::Method;
    use axum::response::IntoResponse;
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    match tokio::spawn(next.run(req)).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::error!(error = %e, "API handler task failed");
            ApiError::internal("the request's handler failed; see the daemon log").into_response()
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hostel",
        description = "Multi-tenant virtualization platform API"
    ),
    paths(
        host::show,
        host::set_settings,
        images::list,
        images::show,
        images::build,
        images::import,
        images::delete,
        host::audit,
        host::metrics,
        tenants::create,
        tenants::list,
        tenants::show,
        tenants::set_quota,
        tenants::create_token,
        tokens::list,
        tokens::delete,
        vps::create,
        vps::list,
        vps::show,
        vps::start,
        vps::stop,
        vps::restart,
        vps::delete,
        vps::exec,
        vps::console,
        vms::create,
        vms::list,
        vms::show,
        vms::resize,
        vms::delete,
        vms::start,
        vms::stop,
        vms::restart,
        vms::console,
        console::attach,
        agent::exec,
        agent::guest,
        agent_files::push,
        agent_files::pull,
        agent_files::show_tenant,
        agent_files::set_tenant,
        networks::create,
        networks::list,
        networks::show,
        networks::delete,
        nic_limits::show,
        nic_limits::set,
        nic_limits::set_ceiling,
        nic_limits::clear_ceiling,
        nic_limits::show_tenant,
        nic_limits::set_tenant,
        nic_limits::clear_tenant,
        ids::show,
        ids::set,
        ids::set_rules,
        ids::alerts,
        external::set,
        external::show,
        external::attach,
        external::detach,
        external::set_appliance,
        external::clear_appliance,
        addresses::allocate,
        addresses::list,
        addresses::attach,
        addresses::detach,
        addresses::release,
        firewall::show,
        firewall::list_rules,
        firewall::add_rule,
        firewall::delete_rule,
        firewall::set_defaults,
        firewall::set_set,
        firewall::delete_set,
        firewall::set_group,
        firewall::delete_group,
        firewall::log,
        volumes::add_device,
        volumes::list_devices,
        volumes::remove_device,
        volumes::create,
        volumes::list,
        volumes::show,
        volumes::delete,
        volumes::attach,
        volumes::detach,
        volumes::resize,
        volumes::create_snapshot,
        volumes::restore_snapshot,
        volumes::delete_snapshot,
        volumes::create_vm_snapshot,
        volumes::restore_vm_snapshot,
        volumes::delete_vm_snapshot,
        backups::create_backup,
        backups::list_backups,
        backups::delete_backup,
        backups::restore_backup,
        backups::storage_quota,
        backups::set_storage_quota,
    ),
    components(schemas(hostel_api::ApiErrorBody)),
    modifiers(&Security)
)]
struct ApiDoc;

async fn openapi() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

/// Who is calling: the operator, or one tenant.
#[derive(Debug, Clone)]
pub struct Auth {
    pub actor: Actor,
    pub tenant: Option<TenantId>,
}

impl Auth {
    /// Operator-only routes answer tenants with 404: a customer cannot even learn they exist.
    pub fn operator(&self) -> ApiResult<()> {
        match self.tenant {
            None => Ok(()),
            Some(_) => Err(ApiError::no_route()),
        }
    }
}

/// The caller of an operator-only route. A tenant's token gets the answer of an unknown
/// route before anything else of its request is read: its body, malformed or not, and
/// its parameters would otherwise draw a 400 that tells the route exists.
#[derive(Debug, Clone)]
pub struct Operator(pub Auth);

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let auth = Auth::from_request_parts(parts, state).await?;
        auth.operator()?;
        Ok(Operator(auth))
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let secret = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(ApiError::unauthorized)?;
        let secret = secret.trim().to_owned();
        let token = state
            .db(move |store| Ok(store.authenticate(&secret)?))
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        Ok(Auth {
            actor: match token.tenant {
                None => Actor::Operator,
                Some(_) => Actor::Token(token.id),
            },
            tenant: token.tenant,
        })
    }
}

/// The tenant a call acts for. Tenants leave it out (their token says); the operator
/// names one on every tenant-scoped route.
/// (Declared in the OpenAPI document by `doc.rs`, on every tenant-scoped route.)
#[derive(Debug, Deserialize, Default)]
pub struct TenantQuery {
    /// The tenant to act for (operator only; a tenant naming another tenant finds
    /// nothing).
    pub tenant: Option<String>,
}
