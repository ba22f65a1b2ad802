//! `bench-images`: one boot of the `debian-12` OS image to a working SSH login, either
//! through hostel (`hostel vm create --image debian-12` against a daemon the benchmark runs,
//! reached through the network's uplink) or through a plain QEMU command with the same
//! kernel, initramfs, image (a fresh qcow2 overlay) and NoCloud seed on a TAP. Both are
//! reached from a network namespace that holds the gateway's address, so the host's own
//! network is never touched.

use crate::api_daemon::Daemon;
use crate::images_report::{GuestClock, ImageSample};
use crate::marker::watch_file;
use anyhow::{bail, Context, Result};
use hostel_api::{Client, VmView};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A boot that has not given an SSH login by then is stuck (the slowest seen here: ~170 s
/// with the host's load at 7).
pub const SSH_TIMEOUT: Duration = Duration::from_secs(600);

/// How long the login prompt may still take once SSH works (getty starts after sshd; the
/// prompt is reported, not waited for by the measurement).
const PROMPT_GRACE: Duration = Duration::from_secs(30);

/// How often the console log file is polled for the login prompt, and port 22 is tried.
const POLL: Duration = Duration::from_millis(100);

/// The guest's network as both contenders see it.
pub const SUBNET: &str = "10.77.0.0/24";
pub const GATEWAY: &str = "10.77.0.1/24";
pub const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);

/// A network namespace owned by the benchmark, deleted (with its devices) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(tag: &str) -> Result<Self> {
        let name = format!("hostel-bench-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let ns = Netns { name };
        sh(&["ip", "netns", "add", &ns.name])?;
        sh(&["ip", "-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `program` run inside the namespace (`ip netns exec` execs it: same pid).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Gives `dev` (already inside) the gateway's address and brings it up.
    pub fn gateway_on(&self, dev: &str) -> Result<()> {
        sh(&["ip", "-n", &self.name, "addr", "add", GATEWAY, "dev", dev])?;
        sh(&["ip", "-n", &self.name, "link", "set", dev, "up"])
    }

    /// Forgets the previous VM's MAC: every boot reuses the address with a new MAC, and a
    /// stale neighbour entry would send the first SYNs to the old one for seconds.
    pub fn flush_neighbours(&self) -> Result<()> {
        sh(&["ip", "-n", &self.name, "neigh", "flush", "all"])
    }

    /// Runs `f` on a thread inside the namespace (its sockets live there).
    pub fn run_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let path = format!("/run/netns/{}", self.name);
        let handle = std::thread::spawn(move || -> Result<T> {
            let ns = std::fs::File::open(&path).with_context(|| path.clone())?;
            // SAFETY: setns on a namespace fd changes only this thread's namespace.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns {path}: {}", std::io::Error::last_os_error());
            }
            f()
        });
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs a command to completion; an error carries its output.
pub fn sh(argv: &[&str]) -> Result<()> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .with_context(|| format!("running {}", argv[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}{}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A throwaway SSH key pair in `dir`: (private key, public key file).
pub fn ssh_keypair(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let key = dir.join("id_ed25519");
    let key_s = key.display().to_string();
    sh(&["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", &key_s])?;
    Ok((key, dir.join("id_ed25519.pub")))
}

/// Waits, from inside `ns`, for port 22 to accept and then for an SSH login with `key` to
/// succeed; returns both instants.
pub fn wait_ssh(ns: &Netns, key: &Path, deadline: Instant) -> Result<(Instant, Instant)> {
    let addr = SocketAddr::from((GUEST_IP, 22));
    let port_at = ns.run_in(move || loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("port 22 of {GUEST_IP} did not open in time");
        }
        std::thread::sleep(POLL);
    })?;
    let mut last = String::new();
    while Instant::now() < deadline {
        let out = ssh(ns, key, "true").output().context("running ssh")?;
        if out.status.success() {
            return Ok((port_at, Instant::now()));
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        std::thread::sleep(POLL);
    }
    bail!("no SSH login before the deadline; last attempt: {last}")
}

/// `ssh debian@GUEST_IP CMD` with `key` from inside `ns`, never prompting.
pub fn ssh(ns: &Netns, key: &Path, cmd: &str) -> Command {
    let mut c = ns.command("ssh");
    c.arg("-i")
        .arg(key)
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
        .args([
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
        ])
        .args(["-o", "LogLevel=ERROR"])
        .arg(format!("debian@{GUEST_IP}"))
        .arg(cmd)
        .stdin(Stdio::null());
    c
}

/// What the guest says about its boot (`--analyze`): first, read at the first login, how
/// its vCPU spent the boot (`/proc/stat`, pressure) and when its RNG was seeded; then, once
/// the boot is over, systemd's critical chain to sshd, the slowest units and the
/// kernel/initrd/userspace split.
const ANALYZE: &str = "echo at-ssh; cat /proc/uptime; head -n 1 /proc/stat; \
    cat /proc/pressure/cpu /proc/pressure/io 2>/dev/null; sudo -n dmesg | grep -m1 'crng init'; \
    timeout 300 systemctl is-system-running --wait; systemd-analyze; \
    systemd-analyze critical-chain ssh.service; systemd-analyze blame | head -n 40; \
    sudo -n cloud-init analyze blame | head -n 60; cat /proc/cmdline";

fn analyze(ns: &Netns, key: &Path) -> String {
    match ssh(ns, key, ANALYZE).output() {
        Ok(out) => format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => format!("ssh: {e}"),
    }
}

/// One measured boot: the numbers, the serial console, and systemd's analysis if asked for.
#[derive(Debug, Clone)]
pub struct Boot {
    pub sample: ImageSample,
    pub console: String,
    pub analysis: Option<String>,
}

fn secs(t0: Instant, at: Instant) -> f64 {
    at.saturating_duration_since(t0).as_secs_f64()
}

/// What watching one boot saw, hostel's or plain QEMU's alike (so the two columns are
/// measured the same way): port 22 and the first SSH login, the login prompt, the console.
struct Watched {
    /// Port 22 accepted, then an SSH login succeeded; or why not before the deadline.
    ssh: Result<(Instant, Instant)>,
    /// The console's `login:` prompt, if it came by then or within `PROMPT_GRACE` after.
    prompt_at: Option<Instant>,
    console: String,
}

/// Waits from inside `ns` for SSH while watching the console log file for the login prompt;
/// `t0` is when the command that starts the VM was run.
fn watch_to_ssh(ns: &Netns, key: &Path, console: &Path, t0: Instant) -> Watched {
    let stop = Arc::new(AtomicBool::new(false));
    let prompt = watch_file(console.to_path_buf(), b"login:", POLL, stop.clone());
    let ssh = wait_ssh(ns, key, t0 + SSH_TIMEOUT);
    let prompt_at = ssh
        .is_ok()
        .then(|| prompt.recv_timeout(PROMPT_GRACE).ok())
        .flatten();
    stop.store(true, Ordering::Relaxed);
    Watched {
        ssh,
        prompt_at,
        console: read_console(console),
    }
}

impl Watched {
    /// The sample, in seconds from `t0`, and the console transcript; if SSH never worked, the
    /// error names the VM (`what`) and ends with the console's last lines.
    fn into_sample(
        self,
        t0: Instant,
        created_at: Option<Instant>,
        what: impl FnOnce() -> String,
    ) -> Result<(ImageSample, String)> {
        let Watched {
            ssh,
            prompt_at,
            console,
        } = self;
        let (port_at, ssh_at) =
            ssh.with_context(|| format!("{}; console tail:\n{}", what(), tail(&console)))?;
        let sample = ImageSample {
            created_s: created_at.map(|at| secs(t0, at)),
            login_prompt_s: prompt_at.map(|at| secs(t0, at)),
            port_s: secs(t0, port_at),
            ssh_s: secs(t0, ssh_at),
            guest: GuestClock::parse(&console),
        };
        Ok((sample, console))
    }
}

/// The seed a plain QEMU boot reuses: hostel's, with the MAC its network config matches.
#[derive(Debug, Clone)]
pub struct Seed {
    pub path: PathBuf,
    pub mac: String,
}

/// What the plain QEMU command boots: the image's files.
#[derive(Debug, Clone)]
pub struct PlainSetup {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The image's own command line (root device...); the serial console is added.
    pub cmdline: String,
    /// The image's raw disk, the overlay's backing file.
    pub image_disk: PathBuf,
    pub disk_bytes: u64,
    pub memory_mib: u64,
    pub vcpus: u32,
    /// Ask systemd how the boot went after the measurement.
    pub analyze: bool,
}

impl PlainSetup {
    /// The QEMU command line; `dir` holds the overlay, the console log and the pid file.
    pub fn argv(&self, dir: &Path, seed: &Seed, tap: &str) -> Vec<String> {
        let p = |f: &str| dir.join(f).display().to_string();
        vec![
            self.qemu.display().to_string(),
            "-M".into(),
            "q35".into(),
            "-accel".into(),
            "tcg".into(),
            "-m".into(),
            self.memory_mib.to_string(),
            "-smp".into(),
            self.vcpus.to_string(),
            "-kernel".into(),
            self.kernel.display().to_string(),
            "-initrd".into(),
            self.initrd.display().to_string(),
            "-append".into(),
            format!("console=ttyS0 {}", self.cmdline),
            "-drive".into(),
            format!("file={},format=qcow2,if=virtio", p("root.qcow2")),
            "-drive".into(),
            format!(
                "file={},format=raw,if=virtio,readonly=on",
                seed.path.display()
            ),
            "-netdev".into(),
            format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
            "-device".into(),
            format!("virtio-net-pci,netdev=n0,mac={}", seed.mac),
            "-serial".into(),
            format!("file:{}", p("console.log")),
            "-display".into(),
            "none".into(),
            "-pidfile".into(),
            p("qemu.pid"),
        ]
    }
}

/// A running QEMU that is killed (and reaped) however the measurement ends.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One plain QEMU boot in `dir` (inside the stray-QEMU sweep's tree): a fresh overlay, QEMU
/// on `tap` in `ns`, then SSH; QEMU is killed afterwards.
pub fn plain_once(
    s: &PlainSetup,
    seed: &Seed,
    ns: &Netns,
    tap: &str,
    key: &Path,
    dir: &Path,
) -> Result<Boot> {
    let console = dir.join("console.log");
    ns.flush_neighbours()?;
    let t0 = Instant::now();
    let overlay = dir.join("root.qcow2").display().to_string();
    let backing = s.image_disk.display().to_string();
    let size = s.disk_bytes.to_string();
    sh(&[
        "qemu-img", "create", "-q", "-f", "qcow2", "-b", &backing, "-F", "raw", &overlay, &size,
    ])?;
    let argv = s.argv(dir, seed, tap);
    let child = ns
        .command(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("qemu.stderr"))?)
        .spawn()
        .context("spawning QEMU")?;
    let mut qemu = Qemu(child);
    let watched = watch_to_ssh(ns, key, &console, t0);
    let exited = qemu.0.try_wait()?;
    let (sample, transcript) = watched.into_sample(t0, None, || {
        let stderr = std::fs::read_to_string(dir.join("qemu.stderr")).unwrap_or_default();
        format!("plain QEMU (exited: {exited:?}; stderr: {stderr})")
    })?;
    let analysis = s.analyze.then(|| analyze(ns, key));
    drop(qemu);
    Ok(Boot {
        sample,
        console: transcript,
        analysis,
    })
}

fn read_console(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).replace('\r', "")
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// The hostel side: a tenant's token and a network whose uplink TAP sits in `ns`.
pub struct HostelSide {
    pub hostel: PathBuf,
    pub url: String,
    pub token: String,
    pub network: String,
    pub ns: Netns,
    pub public_key: PathBuf,
    /// Ask systemd how the boot went after the measurement.
    pub analyze: bool,
}

impl HostelSide {
    /// The `hostel vm create` argv of VM `name`.
    pub fn create_argv(&self, name: &str) -> Vec<String> {
        vec![
            self.hostel.display().to_string(),
            "-o".into(),
            "json".into(),
            "vm".into(),
            "create".into(),
            name.into(),
            "--image".into(),
            "debian-12".into(),
            "--network".into(),
            format!("{}={GUEST_IP}", self.network),
            "--ssh-key".into(),
            self.public_key.display().to_string(),
        ]
    }

    /// One boot: `hostel vm create`, then SSH through the uplink. The VM's seed is copied to
    /// `seed_copy` (for plain QEMU) before the VM is deleted.
    pub fn once(
        &self,
        daemon: &Daemon,
        name: &str,
        key: &Path,
        seed_copy: &Path,
    ) -> Result<(Boot, Seed)> {
        let argv = self.create_argv(name);
        self.ns.flush_neighbours()?;
        let t0 = Instant::now();
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .env("HOSTEL_URL", &self.url)
            .env("HOSTEL_TOKEN", &self.token)
            .stdin(Stdio::null())
            .output()
            .context("running hostel vm create")?;
        let created_at = Instant::now();
        if !out.status.success() {
            bail!(
                "hostel vm create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let vm: VmView = serde_json::from_slice(&out.stdout).context("vm create's JSON")?;
        let client = Client::new(self.url.clone(), Some(self.token.clone()));
        let result = self.measure(daemon, &vm, key, t0, created_at, seed_copy);
        let deleted = client.vms(None).delete(name);
        let r = result?;
        deleted.with_context(|| format!("deleting {name}"))?;
        Ok(r)
    }

    fn measure(
        &self,
        daemon: &Daemon,
        vm: &VmView,
        key: &Path,
        t0: Instant,
        created_at: Instant,
        seed_copy: &Path,
    ) -> Result<(Boot, Seed)> {
        let console = daemon.console_log(&vm.id);
        let (sample, transcript) =
            watch_to_ssh(&self.ns, key, &console, t0)
                .into_sample(t0, Some(created_at), || format!("hostel VM {}", vm.name))?;
        let seed = find_seed(&daemon.state_dir(), &vm.id)?;
        std::fs::copy(&seed, seed_copy).with_context(|| format!("copying {}", seed.display()))?;
        let mac = vm
            .nics
            .first()
            .map(|n| n.mac.clone())
            .context("the VM has no NIC")?;
        let analysis = self.analyze.then(|| analyze(&self.ns, key));
        Ok((
            Boot {
                sample,
                console: transcript,
                analysis,
            },
            Seed {
                path: seed_copy.to_path_buf(),
                mac,
            },
        ))
    }
}

/// `disks/<tenant>/<vm-id>/seed.img` in the daemon's state directory.
fn find_seed(state: &Path, vm_id: &str) -> Result<PathBuf> {
    let disks = state.join("disks");
    for tenant in std::fs::read_dir(&disks).with_context(|| disks.display().to_string())? {
        let seed = tenant?.path().join(vm_id).join("seed.img");
        if seed.is_file() {
            return Ok(seed);
        }
    }
    bail!("no seed.img of VM {vm_id} under {}", disks.display())
}

/// Makes the hostel side ready on `daemon`: the `debian-12` image imported from the built
/// one (the same files plain QEMU boots), a tenant and its token, and a network with an
/// uplink whose TAP is moved into a namespace of its own with the gateway's address.
pub fn setup_hostel(
    daemon: &Daemon,
    hostel: &Path,
    image: &hostel_images::Image,
    public_key: &Path,
) -> Result<HostelSide> {
    let op = daemon.operator_client();
    let (kernel, initrd, cmdline) = image
        .kernel_boot()
        .context("the debian-12 image has no kernel")?;
    let path = |p: &Path| p.display().to_string();
    op.import_image(&hostel_api::ImportImage {
        name: "debian-12".into(),
        path: path(&image.disk_path()),
        kernel: Some(path(&kernel)),
        initrd: Some(path(&initrd)),
        cmdline: Some(cmdline.to_string()),
    })
    .context("importing debian-12 into the daemon")?;
    op.create_tenant(&hostel_api::CreateTenant {
        name: "bench".into(),
        quota: None,
    })?;
    let token = op
        .create_token(
            "bench",
            &hostel_api::CreateToken {
                name: Some("bench".into()),
            },
        )?
        .secret;
    let tenant = Client::new(daemon.url.clone(), Some(token.clone()));
    // JSON, so fields the API gains later (all optional) keep their defaults.
    let body = serde_json::from_value(serde_json::json!({
        "name": "lan",
        "subnet": SUBNET,
        "uplink": true,
    }))
    .context("a CreateNetwork body with an uplink (does hostel-api have the field yet?)")?;
    let net = tenant.create_network(None, &body)?;
    let Some(uplink) = net.uplink else {
        bail!(
            "the daemon created network lan without an uplink: it cannot be reached from the host"
        );
    };
    let ns = Netns::create("up")?;
    sh(&[
        "ip",
        "link",
        "set",
        "dev",
        &uplink.interface,
        "netns",
        &ns.name,
    ])?;
    ns.gateway_on(&uplink.interface)?;
    Ok(HostelSide {
        hostel: hostel.to_path_buf(),
        url: daemon.url.clone(),
        token,
        network: "lan".into(),
        ns,
        public_key: public_key.to_path_buf(),
        analyze: false,
    })
}

/// A namespace with a TAP holding the gateway's address, for plain QEMU.
pub fn setup_plain_network() -> Result<(Netns, String)> {
    let ns = Netns::create("plain")?;
    let tap = "hbtap0".to_string();
    sh(&[
        "ip", "-n", &ns.name, "tuntap", "add", "dev", &tap, "mode", "tap",
    ])?;
    ns.gateway_on(&tap)?;
    Ok((ns, tap))
}
