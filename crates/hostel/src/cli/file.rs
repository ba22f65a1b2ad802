//! `hostel vm file push|pull`: files into and out of a guest through its agent, streamed
//! both ways, each checked against the guest's own SHA-256; and `hostel tenant agent`, the
//! operator's per-tenant switch for exec and file transfer.

use super::output::{self, Format};
use super::{invalid, Ctx};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use hostel_api::{parse_mib, FilePush, SetTenantAgent, VmClient};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum FileCommand {
    /// Copy a local file into the guest: NAME:/absolute/path. It appears whole or not at
    /// all (written under a temporary name, renamed once the guest's SHA-256 agrees).
    Push {
        local: PathBuf,
        // Not `remote`: that is the global `--remote`'s id, whose value clap would share.
        #[arg(value_name = "NAME:/PATH")]
        guest: String,
        /// Octal permission bits in the guest (0644, 755).
        #[arg(long)]
        mode: Option<String>,
        /// Owner's numeric user id in the guest.
        #[arg(long)]
        uid: Option<u32>,
        /// Owner's numeric group id in the guest.
        #[arg(long)]
        gid: Option<u32>,
    },
    /// Copy a file out of the guest: NAME:/absolute/path to LOCAL (written under a
    /// temporary name beside it, renamed once the guest's SHA-256 agrees).
    Pull {
        #[arg(value_name = "NAME:/PATH")]
        guest: String,
        local: PathBuf,
    },
}

/// `NAME:/path` split at the first colon.
fn split_guest(s: &str) -> Result<(&str, &str)> {
    match s.split_once(':') {
        Some((n, p)) if !n.is_empty() && !p.is_empty() => Ok((n, p)),
        _ => Err(invalid(
            Some("path"),
            format!("{s:?} is not NAME:/path (the VM's name, a colon, the guest's path)"),
        )),
    }
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    n: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

pub fn main(ctx: &Ctx, vms: &VmClient<'_>, cmd: FileCommand) -> Result<()> {
    match cmd {
        FileCommand::Push {
            local,
            guest,
            mode,
            uid,
            gid,
        } => {
            let (name, path) = split_guest(&guest)?;
            let f = std::fs::File::open(&local)
                .with_context(|| format!("cannot open {}", local.display()))?;
            let len = f.metadata()?.len();
            let mut reader = Hashing {
                inner: f,
                hash: Sha256::new(),
                n: 0,
            };
            let push = FilePush {
                path: path.to_owned(),
                mode,
                uid,
                gid,
            };
            let v = vms.push_file(name, &push, &mut reader, len)?;
            let ours = hex(reader.hash.finalize());
            // The daemon hashed what it received; this side what it sent. They must agree.
            if v.sha256 != ours || v.size != reader.n {
                anyhow::bail!(
                    "the daemon received {} bytes with SHA-256 {}, but {} bytes with SHA-256 \
                     {ours} were sent",
                    v.size,
                    v.sha256,
                    reader.n
                );
            }
            if ctx.format == Format::Json {
                return output::json(&v);
            }
            let check = match &v.guest_sha256 {
                Some(_) => "the guest's sha256sum agrees",
                None => "the guest has no sha256sum: not checked in the guest",
            };
            eprintln!(
                "pushed {} bytes to {name}:{}, sha256 {} ({check})",
                v.size, v.path, v.sha256
            );
            Ok(())
        }
        FileCommand::Pull { guest, local } => {
            let (name, path) = split_guest(&guest)?;
            let pulled = vms.pull_file(name, path)?;
            let dir = match local.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let mut tmp = tempfile::NamedTempFile::new_in(&dir)
                .with_context(|| format!("cannot write in {}", dir.display()))?;
            let mut reader = Hashing {
                inner: pulled.body,
                hash: Sha256::new(),
                n: 0,
            };
            std::io::copy(&mut reader, tmp.as_file_mut())
                .context("the pull was cut short (the daemon ends it when the bytes read do not hash to the guest's sum)")?;
            let ours = hex(reader.hash.finalize());
            if pulled.size.is_some_and(|s| s != reader.n) {
                anyhow::bail!(
                    "received {} bytes, the guest's file has {}: nothing written",
                    reader.n,
                    pulled.size.unwrap_or_default()
                );
            }
            if let Some(want) = &pulled.guest_sha256 {
                if *want != ours {
                    anyhow::bail!(
                        "received SHA-256 {ours}, the guest's sha256sum said {want}: nothing \
                         written"
                    );
                }
            }
            tmp.as_file_mut().flush()?;
            tmp.as_file().sync_all()?;
            persist(tmp, &local)?;
            if ctx.format == Format::Json {
                return output::json(&serde_json::json!({
                    "path": path,
                    "local": local,
                    "size": reader.n,
                    "sha256": ours,
                    "guest_sha256": pulled.guest_sha256,
                }));
            }
            let check = match &pulled.guest_sha256 {
                Some(_) => "the guest's sha256sum agrees",
                None => "the guest has no sha256sum: not checked against the guest",
            };
            eprintln!(
                "pulled {} bytes from {name}:{path} to {}, sha256 {ours} ({check})",
                reader.n,
                local.display()
            );
            Ok(())
        }
    }
}

/// Renames the temporary file over `local` with the usual mode of a new file.
fn persist(tmp: tempfile::NamedTempFile, local: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // NamedTempFile is 0600; a pulled file gets what `cp` would give it under the umask
    // (read from /proc: umask(2) can only be read by setting it).
    let mask = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022);
    let mode = 0o666 & !mask;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))?;
    tmp.persist(local)
        .with_context(|| format!("cannot write {}", local.display()))?;
    Ok(())
}

#[derive(Args, Debug)]
pub struct TenantAgentArgs {
    tenant: String,
    /// Allow `vm exec` in the tenant's VMs (on) or refuse it with 403 (off).
    #[arg(long, value_name = "on|off", value_parser = on_off)]
    exec: Option<bool>,
    /// Allow `vm file push|pull` (on) or refuse it with 403 (off).
    #[arg(long, value_name = "on|off", value_parser = on_off)]
    files: Option<bool>,
    /// The largest file a push or pull moves (512M, 2G; a bare number is MiB).
    #[arg(long, value_name = "SIZE")]
    max_file_size: Option<String>,
}

fn on_off(s: &str) -> Result<bool, super::vm::ShapeError> {
    match s {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(super::vm::ShapeError::new(s, "on or off")),
    }
}

/// Shows, or with flags changes, what a tenant may do through its VMs' guest agents.
pub fn tenant_agent(ctx: &Ctx, a: TenantAgentArgs) -> Result<()> {
    let v = if a.exec.is_none() && a.files.is_none() && a.max_file_size.is_none() {
        ctx.client.tenant_agent(&a.tenant)?
    } else {
        let max_file_bytes = match &a.max_file_size {
            Some(s) => Some(
                parse_mib(s)
                    .map_err(|e| invalid(Some("max_file_bytes"), e))?
                    .saturating_mul(1 << 20),
            ),
            None => None,
        };
        ctx.client.set_tenant_agent(
            &a.tenant,
            &SetTenantAgent {
                exec: a.exec,
                files: a.files,
                max_file_bytes,
            },
        )?
    };
    if ctx.format == Format::Json {
        return output::json(&v);
    }
    let on = |b: bool| if b { "on" } else { "off" };
    println!(
        "exec: {}\nfiles: {}\nmax file size: {} MiB",
        on(v.exec),
        on(v.files),
        v.max_file_bytes >> 20
    );
    Ok(())
}
