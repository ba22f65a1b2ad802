//! `hostel-storage`: a pool's devices, its volumes, and serving volumes to VMs over
//! vhost-user-blk sockets until SIGTERM. The daemon will start and supervise it (next step);
//! until then it is run by hand and by tests.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use hostel_pool::{BlockDevice, CreateOptions, FileDevice, Pool};
use hostel_storage::{Disk, DiskServer};

#[derive(Parser)]
#[command(
    name = "hostel-storage",
    about = "hostel's storage pool and vhost-user-blk backend"
)]
struct Cli {
    /// A device of the pool (block device or file), in any order and under any path.
    #[arg(long = "device", required = true)]
    devices: Vec<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Formats the devices as a new pool (destroying what they hold).
    PoolCreate,
    /// Creates a thin volume of SIZE bytes (suffixes K, M, G, T).
    VolumeCreate {
        name: String,
        size: String,
        #[arg(long, default_value_t = 2)]
        copies: u8,
    },
    /// Prints the pool's devices and volumes.
    Status,
    /// Serves volumes until SIGTERM or SIGINT: `--disk NAME=SOCKET`, repeatable.
    Serve {
        #[arg(long = "disk", required = true)]
        disks: Vec<String>,
        /// Queues per disk (the VM's vCPUs).
        #[arg(long, default_value_t = 1)]
        queues: u16,
    },
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("device {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pool(#[from] hostel_pool::PoolError),
    #[error(transparent)]
    Serve(#[from] hostel_storage::ServeError),
    #[error("size {0:?}: a number of bytes with an optional K, M, G or T suffix")]
    Size(String),
    #[error("--disk {0:?}: expected NAME=SOCKET")]
    DiskArg(String),
    #[error("starting the re-mirror thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("waiting for a signal: {0}")]
    Signal(#[source] std::io::Error),
}

fn parse_size(s: &str) -> Result<u64, CliError> {
    let bad = || CliError::Size(s.to_string());
    let (num, shift) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(bad()),
            };
            (&s[..i], shift)
        }
        _ => (s, 0),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

fn open_devices(paths: &[PathBuf]) -> Result<Vec<Box<dyn BlockDevice>>, CliError> {
    paths
        .iter()
        .map(|p| {
            FileDevice::open(p)
                .map(|d| Box::new(d) as Box<dyn BlockDevice>)
                .map_err(|source| CliError::Open {
                    path: p.clone(),
                    source,
                })
        })
        .collect()
}

/// Blocks SIGTERM and SIGINT in every thread (call before spawning any), so that
/// `wait_for_stop` receives them.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it below.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    // SAFETY: as above, with a valid signal number.
    unsafe { libc::sigaddset(&mut set, libc::SIGTERM) };
    // SAFETY: as above.
    unsafe { libc::sigaddset(&mut set, libc::SIGINT) };
    // SAFETY: blocks the signals in `set` for this thread (inherited by threads it spawns).
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    set
}

fn wait_for_stop(set: &libc::sigset_t) -> Result<i32, CliError> {
    let mut sig = 0;
    // SAFETY: waits for one of the (blocked) signals in `set`, writing its number to `sig`.
    let r = unsafe { libc::sigwait(set, &mut sig) };
    if r != 0 {
        return Err(CliError::Signal(std::io::Error::from_raw_os_error(r)));
    }
    Ok(sig)
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.cmd {
        Cmd::PoolCreate => {
            let pool = Pool::create(open_devices(&cli.devices)?, CreateOptions::default())?;
            println!("pool {}", pool.uuid());
            pool.close()?;
        }
        Cmd::VolumeCreate { name, size, copies } => {
            let size = parse_size(&size)?;
            let pool = Pool::open(open_devices(&cli.devices)?)?;
            // Closed whatever the outcome: an unclosed pool reads as a crash at the next open.
            let r = pool.create_volume(&name, size, copies);
            pool.close()?;
            r?;
        }
        Cmd::Status => {
            let pool = Pool::open(open_devices(&cli.devices)?)?;
            println!("pool {} generation {}", pool.uuid(), pool.generation());
            for d in pool.devices() {
                println!(
                    "device {} {} failed={} clusters={} free={}",
                    d.uuid,
                    d.name.as_deref().unwrap_or("(missing)"),
                    d.failed,
                    d.clusters,
                    d.free_clusters
                );
            }
            for v in pool.volumes() {
                println!(
                    "volume {} size={} allocated={} copies={} degraded_clusters={} snapshots={}",
                    v.name,
                    v.size,
                    v.allocated,
                    v.copies,
                    v.degraded_clusters,
                    v.snapshots.join(",")
                );
            }
            pool.close()?;
        }
        Cmd::Serve { disks, queues } => {
            let set = block_stop_signals();
            let mut parsed = Vec::new();
            for d in &disks {
                let (name, sock) = d
                    .split_once('=')
                    .ok_or_else(|| CliError::DiskArg(d.clone()))?;
                parsed.push((name.to_string(), PathBuf::from(sock)));
            }
            let pool = Arc::new(Pool::open(open_devices(&cli.devices)?)?);
            // Copies a failed device held get a new home while the disks are served.
            let remirror =
                hostel_pool::RemirrorWorker::spawn(pool.clone()).map_err(CliError::Thread)?;
            let mut servers = Vec::new();
            let mut started = Ok(());
            for (name, sock) in parsed {
                let disk = Disk {
                    pool: pool.clone(),
                    serial: name.chars().take(20).collect(),
                    volume: name,
                    queues,
                };
                match DiskServer::start(disk, &sock) {
                    Ok(s) => servers.push(s),
                    Err(e) => {
                        started = Err(e);
                        break;
                    }
                }
            }
            let stopped = match started {
                Ok(()) => {
                    println!("serving {} disk(s)", servers.len());
                    wait_for_stop(&set).map(|sig| tracing::info!(signal = sig, "stopping"))
                }
                Err(e) => Err(e.into()),
            };
            for s in servers {
                s.stop();
            }
            drop(remirror);
            match Arc::try_unwrap(pool) {
                Ok(p) => p.close()?,
                Err(p) => p.flush()?,
            }
            stopped?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostel-storage: {e}");
            ExitCode::FAILURE
        }
    }
}
