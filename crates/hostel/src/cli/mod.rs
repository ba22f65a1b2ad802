//! The API client commands (`hostel tenant|token|quota|vm|audit|image|host ...`).
//!
//! Every command is one or two calls through [`hostel_api::Client`]; this module only turns
//! arguments into request bodies and responses into tables or JSON. Validation is the
//! daemon's job (so API users and CLI users get the same answers): sizes and counts are passed
//! through as typed, and the server's refusal is printed as it gave it.
//!
//! Exit status: 0 on success; 2 when the request itself was bad (a usage error, a value the
//! CLI cannot parse, or the daemon answering 400/422 — e.g. 0 vCPUs, an unknown image);
//! 1 for every other failure (not found, quota exceeded, conflict, daemon unreachable, ...).

mod address;
mod admin;
mod attach;
mod attach_tls;
mod config;
mod exec;
mod external;
mod file;
mod firewall;
mod ids;
mod image;
mod network;
mod nic_limits;
mod output;
mod remote;
pub mod scan;
mod tenant;
mod vm;
mod volume;
mod vps;

use clap::{Args, Subcommand};
use hostel_api::{Client, ClientError};
use output::Format;
use std::process::ExitCode;

/// Where the daemon is and who we are: flags, then HOSTEL_URL / HOSTEL_TOKEN, then
/// ~/.config/hostel/config.toml (its remotes: `hostel remote`).
#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Daemon URL (default: the default remote, else https://127.0.0.1:7878).
    #[arg(long, global = true, env = "HOSTEL_URL")]
    pub url: Option<String>,
    /// A remote of the config file (`hostel remote list`) instead of the default one; its
    /// URL wins over --url/HOSTEL_URL.
    #[arg(long, global = true, env = "HOSTEL_REMOTE")]
    pub remote: Option<String>,
    /// The SHA-256 fingerprint of the daemon's certificate (`AB:CD:…`, as the daemon prints
    /// it): only that certificate is accepted.
    #[arg(long, global = true, env = "HOSTEL_FINGERPRINT")]
    pub fingerprint: Option<String>,
    /// A CA certificate file (PEM) that signed the daemon's certificate (an operator's own).
    #[arg(long, global = true, env = "HOSTEL_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// API token (the operator's, or a tenant's).
    #[arg(long, global = true, env = "HOSTEL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// `table` for people, `json` for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value = "table")]
    pub output: Format,
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Create and list tenants (operator).
    #[command(subcommand)]
    Tenant(tenant::TenantCommand),
    /// API tokens: issue one for a tenant (operator), list and revoke them.
    #[command(subcommand)]
    Token(tenant::TokenCommand),
    /// Change a tenant's quota (operator).
    #[command(subcommand)]
    Quota(tenant::QuotaCommand),
    /// Create, inspect and control VMs.
    Vm(vm::VmArgs),
    /// Create, inspect and control VPSs (system containers).
    Vps(vps::VpsArgs),
    /// A tenant's virtual networks.
    Network(network::NetworkArgs),
    /// A tenant's volumes in the host's storage pool, and their snapshots.
    Volume(volume::VolumeArgs),
    /// The host's storage pool: its devices (operator).
    #[command(subcommand)]
    Storage(volume::StorageCommand),
    /// A tenant's public addresses: allocate, attach to a VM NIC, detach, release, list.
    Address(address::AddressArgs),
    /// A tenant's firewall at its edge: rules, defaults, sets, groups, log.
    Firewall(firewall::FirewallArgs),
    /// The host's external network: set-up, pools, usage (operator).
    #[command(subcommand)]
    External(external::ExternalCommand),
    /// The audit log: who did what, newest first (operator).
    Audit(admin::AuditArgs),
    /// The images VMs can boot: list, build, import, delete (changes: operator).
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// The host's capacity and overcommit settings.
    #[command(subcommand)]
    Host(admin::HostCommand),
    /// Named daemons and their pinned certificates: add, list, remove, switch.
    #[command(subcommand)]
    Remote(remote::RemoteCommand),
    /// Intrusion detection: a tenant's rules, watched networks and alerts; offline replay.
    #[command(subcommand)]
    Ids(ids::IdsCommand),
}

/// What every command needs: the client and how to print.
pub struct Ctx {
    pub client: Client,
    pub format: Format,
}

/// A request the CLI refuses before sending it (exit status 2), worded like the server's.
#[derive(Debug)]
pub struct Invalid {
    pub message: String,
    pub field: Option<&'static str>,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Invalid {}

/// An [`Invalid`] as an `anyhow::Error`.
pub fn invalid(field: Option<&'static str>, message: impl std::fmt::Display) -> anyhow::Error {
    Invalid {
        message: message.to_string(),
        field,
    }
    .into()
}

pub fn main(global: GlobalArgs, cmd: ClientCommand) -> anyhow::Result<ExitCode> {
    // Rust ignores SIGPIPE, which turns `hostel vm list | head -1` into a panic or an
    // error message; a client command should end quietly like any other Unix filter.
    // SAFETY: setting a signal's disposition to the default has no preconditions, and this
    // process runs nothing else that relies on SIGPIPE being ignored.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if let ClientCommand::Ids(ids::IdsCommand::Replay { args }) = cmd {
        return Ok(hostel_ids::cli::replay_main(args));
    }
    if let ClientCommand::Remote(c) = cmd {
        return Ok(match remote::main(&global, c) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => report(&e),
        });
    }
    let result = config::resolve(&global).and_then(|endpoint| {
        let client = match endpoint.trust {
            Some(trust) => Client::with_trust(endpoint.url, endpoint.token, trust)?,
            None => Client::new(endpoint.url, endpoint.token),
        };
        let ctx = Ctx {
            client,
            format: global.output,
        };
        match cmd {
            ClientCommand::Tenant(c) => tenant::tenant(&ctx, c),
            ClientCommand::Token(c) => tenant::token(&ctx, c),
            ClientCommand::Quota(c) => tenant::quota(&ctx, c),
            ClientCommand::Vm(a) => vm::main(&ctx, a),
            ClientCommand::Vps(a) => vps::main(&ctx, a),
            ClientCommand::Network(a) => network::main(&ctx, a),
            ClientCommand::Volume(a) => volume::main(&ctx, a),
            ClientCommand::Storage(c) => volume::storage_main(&ctx, c),
            ClientCommand::Address(a) => address::main(&ctx, a),
            ClientCommand::Firewall(a) => firewall::main(&ctx, a),
            ClientCommand::External(c) => external::main(&ctx, c),
            ClientCommand::Audit(a) => admin::audit(&ctx, a),
            ClientCommand::Image(c) => image::main(&ctx, c),
            ClientCommand::Host(c) => admin::host(&ctx, c),
            ClientCommand::Ids(c) => ids::main(&ctx, c),
            ClientCommand::Remote(_) => unreachable!("handled before connecting"),
        }
    });
    Ok(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    })
}

/// Prints `hostel: error: <reason> [(field: X)]` and picks the exit status.
fn report(e: &anyhow::Error) -> ExitCode {
    let (message, field, status) = if let Some(ClientError::Api {
        status,
        message,
        field,
        ..
    }) = e.downcast_ref::<ClientError>()
    {
        let bad_request = matches!(status, 400 | 422);
        (
            message.clone(),
            field.clone(),
            if bad_request { 2 } else { 1 },
        )
    } else if let Some(inv) = e.downcast_ref::<Invalid>() {
        (inv.message.clone(), inv.field.map(str::to_string), 2)
    } else {
        (format!("{e:#}"), None, 1)
    };
    match field {
        Some(f) => eprintln!("hostel: error: {message} (field: {f})"),
        None => eprintln!("hostel: error: {message}"),
    }
    ExitCode::from(status)
}
