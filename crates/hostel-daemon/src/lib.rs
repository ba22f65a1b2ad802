//! The hostel daemon: the REST API (TCP and a Unix socket), the state store, and one
//! supervisor task per VM. VMs are separate QEMU processes in their own sessions, so the
//! daemon can crash, restart or upgrade under them; at start-up it re-adopts them.
//!
//! Module map:
//! - [`layout`]: the state directory, its lock and the operator token file.
//! - [`images`]: the image registry (what `image` names and how it boots; OS image builds).
//! - [`seed`]: the cloud-init seed of a VM booted from an OS image.
//! - [`admission`]: host capacity checks and overcommit settings.
//! - [`supervisor`] / [`actor`] / [`launch`]: VM lifecycle, restart policy, bounded waits.
//! - [`reconcile`]: at start-up, finds every QEMU of the state directory and drives each VM
//!   toward its desired state, finishing or undoing what a crash cut.
//! - [`http`]: routes, authentication, tenant scoping, audit, OpenAPI.
//! - [`adapters`]: the host's switch process and its tables, kept equal to the store's
//!   networks and NICs (behind a trait, so services can be tested with a fake).
//! - [`service`]: domain operations (networks so far), free of HTTP, with one error type.
//! - [`standby`]: VMs booted ahead of the order, taken by a create of their shape.
//! - [`metrics`]: the Prometheus endpoint.
//! - [`tls`]: the TCP listener's HTTPS (its key and certificate, the serve loop).

pub mod actor;
pub mod adapters;
pub mod admission;
pub mod error;
pub mod failpoint;
pub mod http;
pub mod images;
pub mod launch;
pub mod layout;
pub mod metrics;
pub mod reconcile;
pub mod seed;
pub mod service;
pub mod standby;
pub mod supervisor;
pub mod tls;

use anyhow::Context;
use hostel_state::{SqliteStore, Store, StoreError};
use std::future::IntoFuture;
use std::path::PathBuf;
use std::sync::Arc;

/// What every part of the daemon shares.
pub struct Ctx {
    pub store: Arc<dyn Store>,
    pub layout: layout::Layout,
    pub images: images::ImageRegistry,
    pub switch: adapters::switch_link::SwitchLink,
    /// What the switch was last given, and by which generation.
    pub tables: adapters::networking::Tables,
    pub standby: Arc<standby::StandbyPool>,
    /// The host's storage process (pool, volumes, vhost-user-blk sockets).
    pub storage: adapters::storage_link::StorageLink,
    /// Which storage process serves the attached volumes.
    pub served: adapters::storage::Served,
}

impl Ctx {
    /// Runs `f` with the store on tokio's blocking pool and waits for it; see
    /// [`service::blocking`].
    pub async fn db<T, E>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        service::blocking(&self.store, f).await
    }
}

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub state_dir: PathBuf,
    pub listen: String,
    pub socket: Option<PathBuf>,
    pub guest_dir: Option<PathBuf>,
    pub print_operator_token: bool,
    /// HTTPS (self-signed or the operator's pair) or, in development, loopback plain HTTP.
    pub listener: tls::Listener,
    /// Standbys to keep booted, per image.
    pub standby: Vec<standby::StandbyWanted>,
}

/// How long a SIGTERM lets requests in flight finish before the daemon exits regardless.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs the daemon until SIGINT/SIGTERM, then drains (see [`DRAIN_TIMEOUT`]). VMs keep
/// running after it returns.
pub async fn run(config: DaemonConfig) -> anyhow::Result<()> {
    failpoint::announce();
    if config.listener == tls::Listener::InsecureHttpLoopback {
        tls::check_loopback(&config.listen).await?;
    }
    let layout = layout::Layout::open(&config.state_dir)
        .with_context(|| format!("state directory {}", config.state_dir.display()))?;
    let state_dir = layout.root().to_path_buf();
    let _lock = layout::DaemonLock::acquire(&layout)?;
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&state_dir).context("opening the state database")?);
    ensure_operator_token(store.as_ref(), &layout)?;
    let tls = tls::identity(&state_dir, &config.listener)?;
    let ctx = Arc::new(Ctx {
        store,
        layout: layout.clone(),
        images: images::ImageRegistry::discover(config.guest_dir.clone(), state_dir.join("images")),
        switch: adapters::switch_link::SwitchLink::new(layout.switch_dir()),
        tables: Default::default(),
        standby: Arc::new(standby::StandbyPool::new(config.standby.clone())),
        storage: adapters::storage_link::StorageLink::new(layout.storage_dir()),
        served: Default::default(),
    });
    standby::clean_stale(&ctx).await;
    // The switch first: VMs with NICs need their ports before QEMU connects to them.
    if let Err(e) = adapters::networking::sync(&ctx).await {
        tracing::error!(error = %e, "switch not available; VMs with networks cannot start");
    }
    tokio::spawn(adapters::networking::watchdog(ctx.clone()));
    // The pool before the VMs too: a VM with volumes connects to their sockets at launch.
    service::volume_reconcile::reconcile(&ctx).await;
    if let Err(e) = adapters::storage::sync(&ctx).await {
        tracing::error!(error = %e, "storage process not available; VMs with volumes cannot start");
    }
    tokio::spawn(adapters::storage::watchdog(ctx.clone()));
    tokio::spawn(service::ids_eve::run(ctx.clone()));
    let supervisor = supervisor::Supervisor::new(ctx.clone());
    reconcile::at_startup(&ctx, &supervisor).await;
    service::vps::Vpss::new(&ctx).reconcile().await;
    if let Some(every) = reconcile::sweep::interval_from_env() {
        tokio::spawn(reconcile::sweep::run(ctx.clone(), every));
    }
    tokio::spawn(ctx.standby.clone().run(ctx.clone()));

    let state = http::AppState::new(ctx.clone(), supervisor);
    tokio::spawn(service::agent_freeze::thaw_interrupted(
        ctx.store.clone(),
        ctx.layout.clone(),
        state.agents.clone(),
    ));
    let app = http::router(state);
    let tcp = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let socket_path = config.socket.clone().unwrap_or_else(|| layout.socket());
    let _ = std::fs::remove_file(&socket_path);
    let unix = tokio::net::UnixListener::bind(&socket_path)
        .with_context(|| format!("listening on {}", socket_path.display()))?;
    let addr = tcp.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!(
        "hostel daemon listening on {scheme}://{addr} and {}",
        socket_path.display()
    );
    // Not secret, and what a client pins: always shown (and logged).
    if let Some(id) = &tls {
        println!("certificate SHA-256 fingerprint: {}", id.fingerprint);
        tracing::info!(fingerprint = %id.fingerprint, cert = %id.cert_path.display(), "TLS certificate");
    }
    if config.print_operator_token {
        let token = std::fs::read_to_string(layout.operator_token())?;
        println!("operator token: {}", token.trim());
    }
    tracing::info!(%addr, socket = %socket_path.display(), "daemon ready");

    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    // On SIGTERM both listeners stop accepting and the calls in flight finish (a create or
    // start gets to `cont`, a delete to its end), at most DRAIN_TIMEOUT; VMs keep running.
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let drained = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|d| *d).await;
    };
    let tcp_server: std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>,
    > = match tls {
        Some(id) => Box::pin(tls::serve(tcp, id.config, app.clone(), drain_rx.clone())),
        None => Box::pin(
            axum::serve(tcp, app.clone())
                .with_graceful_shutdown(drained(drain_rx.clone()))
                .into_future(),
        ),
    };
    let unix_server = axum::serve(unix, app)
        .with_graceful_shutdown(drained(drain_rx))
        .into_future();
    let servers = async { tokio::try_join!(tcp_server, unix_server) };
    tokio::pin!(servers);
    tokio::select! {
        r = &mut servers => { r?; }
        _ = shutdown => {
            tracing::info!("shutting down: no new requests; finishing the ones in flight");
            let _ = drain_tx.send(true);
            match tokio::time::timeout(DRAIN_TIMEOUT, &mut servers).await {
                Ok(r) => { r?; }
                Err(_) => tracing::warn!(
                    timeout = ?DRAIN_TIMEOUT,
                    "requests still in flight at the drain deadline; exiting anyway"
                ),
            }
            tracing::info!("shut down; VMs keep running");
        }
    }
    let _ = std::fs::remove_file(&socket_path);
    ctx.standby.shutdown(&ctx).await;
    Ok(())
}

/// On first start, issues the operator token and writes its secret (0600) for the operator.
fn ensure_operator_token(store: &dyn Store, layout: &layout::Layout) -> anyhow::Result<()> {
    let path = layout.operator_token();
    if let Ok(secret) = std::fs::read_to_string(&path) {
        if store.authenticate(secret.trim())?.is_some() {
            return Ok(());
        }
        tracing::warn!("operator.token does not match the database; issuing a new one");
    }
    let audit = hostel_state::NewAuditEntry::ok(
        hostel_state::Actor::System,
        None,
        "token.create",
        "operator",
    );
    let issued = store.issue_token(None, "operator", &audit)?;
    layout::write_secret(&path, issued.secret.expose())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
