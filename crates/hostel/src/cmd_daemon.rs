//! `hostel daemon`.

use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Where the database, tokens, disks and VM run directories live.
    #[arg(long, default_value = "/var/lib/hostel", env = "HOSTEL_STATE_DIR")]
    pub state_dir: PathBuf,
    /// TCP address of the API (HTTPS).
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: String,
    /// The API's TLS certificate chain (PEM), instead of the self-signed one the daemon
    /// makes at first start in <state-dir>/tls/. With --tls-key.
    #[arg(long, requires = "tls_key", conflicts_with = "insecure_http_loopback")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Development only: plain HTTP on --listen, which must be a loopback address. The Unix
    /// socket always speaks plain HTTP.
    #[arg(long)]
    pub insecure_http_loopback: bool,
    /// Unix socket of the API (default <state-dir>/hostel.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Directory with the busybox guest assets (vmlinux, initrd.img) from `make guest`.
    /// Default: the first of `target/guest` of the workspace the binary was built in,
    /// /usr/local/lib/hostel/guest and /usr/lib/hostel/guest that has them.
    #[arg(long, env = "HOSTEL_GUEST_DIR")]
    pub guest_dir: Option<PathBuf>,
    /// Print the operator token at start-up (development: `make run`).
    #[arg(long)]
    pub print_operator_token: bool,
    /// Keep COUNT (default 1) VMs of IMAGE booted ahead of the order: a create of the
    /// default shape (1 vCPU, the image's memory and disk, one network) takes one instead
    /// of booting. Repeatable, e.g. `--standby debian-12 --standby debian-12-web=2`.
    #[arg(
        long,
        value_name = "IMAGE[=COUNT]",
        env = "HOSTEL_STANDBY",
        value_delimiter = ','
    )]
    pub standby: Vec<hostel_daemon::standby::StandbyWanted>,
}

/// The files the built-in `busybox` image boots from.
const GUEST_FILES: [&str; 2] = ["vmlinux", "initrd.img"];
/// Where a package installs the guest assets.
const INSTALLED_GUEST_DIRS: [&str; 2] = ["/usr/local/lib/hostel/guest", "/usr/lib/hostel/guest"];

/// Where the busybox guest assets are, or why there are none: said at start-up, so a
/// newcomer learns it before a create fails.
fn guest_dir(given: Option<PathBuf>) -> Option<PathBuf> {
    let missing = |dir: &Path| -> Vec<&str> {
        GUEST_FILES
            .into_iter()
            .filter(|f| !dir.join(f).is_file())
            .collect()
    };
    if let Some(dir) = given {
        let lacking = missing(&dir);
        if !lacking.is_empty() {
            eprintln!(
                "hostel daemon: the busybox image is unavailable: {} has no {} \
                 (`make guest` builds them into target/guest)",
                dir.display(),
                lacking.join(" or ")
            );
        }
        return Some(dir);
    }
    let exe = std::env::current_exe().ok();
    let candidates = guest_dir_candidates(exe.as_deref());
    if let Some(found) = candidates.iter().find(|d| missing(d).is_empty()) {
        eprintln!(
            "hostel daemon: busybox guest assets from {}",
            found.display()
        );
        return Some(found.clone());
    }
    eprintln!(
        "hostel daemon: the busybox image is unavailable: no {} in any of {}; run `make \
         guest` in the hostel workspace (it builds them into target/guest) or pass \
         --guest-dir DIR",
        GUEST_FILES.join(" and "),
        candidates
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    None
}

/// `target/guest` of the workspace a binary in `target/<profile>/` was built in (or the
/// `guest` beside a custom target directory), then the installed locations.
fn guest_dir_candidates(exe: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    // target/release/hostel -> target/guest; target/release/deps/hostel-... -> the same.
    if let Some(bin_dir) = exe.and_then(Path::parent) {
        for target in bin_dir.ancestors().skip(1).take(2) {
            let guest = target.join("guest");
            if !dirs.contains(&guest) {
                dirs.push(guest);
            }
        }
    }
    dirs.extend(INSTALLED_GUEST_DIRS.iter().map(PathBuf::from));
    dirs
}

pub fn main(args: DaemonArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let guest_dir = guest_dir(args.guest_dir);
    rt.block_on(hostel_daemon::run(hostel_daemon::DaemonConfig {
        state_dir: args.state_dir,
        listen: args.listen,
        socket: args.socket,
        guest_dir,
        print_operator_token: args.print_operator_token,
        listener: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => hostel_daemon::tls::Listener::Operator { cert, key },
            _ if args.insecure_http_loopback => hostel_daemon::tls::Listener::InsecureHttpLoopback,
            _ => hostel_daemon::tls::Listener::SelfSigned,
        },
        standby: args.standby,
    }))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_assets_are_looked_for_where_make_and_packages_put_them() {
        let dirs = guest_dir_candidates(Some(Path::new("/src/hostel/target/release/hostel")));
        assert_eq!(dirs[0], Path::new("/src/hostel/target/guest"));
        assert!(dirs.contains(&PathBuf::from("/usr/lib/hostel/guest")));
        // A test binary sits one level deeper (target/debug/deps).
        let dirs = guest_dir_candidates(Some(Path::new("/w/target/debug/deps/daemon-1234")));
        assert!(dirs.contains(&PathBuf::from("/w/target/guest")), "{dirs:?}");

        let ws = tempfile::tempdir().unwrap();
        let guest = ws.path().join("target/guest");
        std::fs::create_dir_all(ws.path().join("target/release")).unwrap();
        std::fs::create_dir_all(&guest).unwrap();
        let exe = ws.path().join("target/release/hostel");
        let found = |exe: &Path| {
            guest_dir_candidates(Some(exe))
                .into_iter()
                .find(|d| GUEST_FILES.iter().all(|f| d.join(f).is_file()))
        };
        assert_eq!(found(&exe), None, "empty target/guest is not the assets");
        for f in GUEST_FILES {
            std::fs::write(guest.join(f), b"x").unwrap();
        }
        assert_eq!(found(&exe), Some(guest));
    }
}
