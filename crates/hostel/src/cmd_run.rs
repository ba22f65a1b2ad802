//! `hostel run`: one VM in the foreground, for people and for tests.

use crate::console::Relay;
use anyhow::{Context, Result};
use clap::Args;
use hostel_api::parse_mib;
use hostel_engine::{AccelChoice, DiskSpec, LaunchOptions, NicSpec, Vm, VmSpecInput};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// A spec file (TOML, or JSON by extension); flags given too override it.
    #[arg(long)]
    spec: Option<PathBuf>,
    #[arg(long)]
    name: Option<String>,
    /// Kernel to boot directly (bzImage or ELF vmlinux).
    #[arg(long)]
    kernel: Option<PathBuf>,
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line (hostel adds the platform's console and timing arguments).
    #[arg(long)]
    cmdline: Option<String>,
    #[arg(long)]
    vcpus: Option<u32>,
    /// Memory size: 512, 512M, 2G.
    #[arg(long, value_parser = parse_mib)]
    memory: Option<u64>,
    /// PATH[,readonly][,format=raw|qcow2]; repeatable.
    #[arg(long = "disk")]
    disks: Vec<DiskSpec>,
    /// tap=IFNAME[,mac=MAC] or vhost-user=SOCKET[,mac=MAC]; repeatable.
    #[arg(long = "net")]
    nics: Vec<NicSpec>,
    /// Boot the first disk through firmware instead of a kernel.
    #[arg(long)]
    boot_from_disk: bool,
    /// auto (KVM with hardware virtualization, else TCG), kvm or tcg.
    #[arg(long)]
    accel: Option<AccelChoice>,
    /// Also write the console to this file.
    #[arg(long)]
    serial_log: Option<PathBuf>,
    /// QEMU binary (default: $HOSTEL_QEMU or qemu-system-x86_64 on PATH).
    #[arg(long)]
    qemu: Option<PathBuf>,
    /// Where the VM's sockets and pid file live (default: a temporary directory).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Seconds the guest gets to power off on Ctrl-] or SIGTERM before QEMU is stopped.
    #[arg(long, default_value_t = 10)]
    grace: u64,
}

impl RunArgs {
    fn spec_input(&self) -> Result<VmSpecInput> {
        let mut input = match &self.spec {
            Some(path) => read_spec_file(path)?,
            None => VmSpecInput::default(),
        };
        macro_rules! take {
            ($($f:ident => $g:ident),*) => { $( if let Some(v) = &self.$f { input.$g = Some(v.clone()); } )* };
        }
        take!(name => name, kernel => kernel, initrd => initrd, cmdline => cmdline,
              vcpus => vcpus, memory => memory_mib, serial_log => serial_log);
        if let Some(a) = self.accel {
            input.accel = a;
        }
        input.disks.extend(self.disks.iter().cloned());
        input.nics.extend(self.nics.iter().cloned());
        input.boot_from_disk |= self.boot_from_disk;
        Ok(input)
    }
}

fn read_spec_file(path: &Path) -> Result<VmSpecInput> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("spec file {}", path.display()))?;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{e}"))
    } else {
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{e}"))
    };
    parsed.with_context(|| format!("spec file {}", path.display()))
}

pub fn main(args: RunArgs) -> Result<ExitCode> {
    // One thread: QEMU dies with the thread that launched it (PR_SET_PDEATHSIG), and this
    // one lives exactly as long as the run.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: RunArgs) -> Result<ExitCode> {
    let spec = args.spec_input()?.validate()?;
    let tmp = tempfile::Builder::new().prefix("hostel-run-").tempdir()?;
    let run_dir = args
        .run_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let mut opts = LaunchOptions::new(&run_dir);
    opts.qemu = args.qemu.clone();
    opts.die_with_parent = true;

    let vm = Vm::launch(&spec, &opts).await?;
    if let Some(a) = vm.accel() {
        eprintln!(
            "hostel: {} ({} vCPU, {} MiB) on {} ({}); Ctrl-] stops it",
            spec.name(),
            spec.vcpus(),
            spec.memory_mib(),
            a.accel,
            a.reason
        );
    }
    let console = tokio::net::UnixStream::connect(vm.run_dir().console_socket())
        .await
        .context("console socket")?;
    let relay = Relay::start(console);
    vm.start().await?;

    let grace = Duration::from_secs(args.grace);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let reason = tokio::select! {
        r = vm.wait() => r,
        _ = relay.escape_pressed() => vm.stop(grace).await,
        _ = tokio::signal::ctrl_c() => vm.stop(grace).await,
        _ = term.recv() => vm.stop(grace).await,
    };
    let reported = relay.finish().await;
    if reason.is_clean() {
        // The guest's own report of its command is the most useful status to pass on.
        Ok(ExitCode::from(
            reported.map_or(0, |s| s.clamp(0, 255) as u8),
        ))
    } else {
        eprintln!("\nhostel: {}: {reason}", spec.name());
        Ok(ExitCode::FAILURE)
    }
}
