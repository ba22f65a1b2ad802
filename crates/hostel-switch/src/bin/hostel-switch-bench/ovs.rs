//! Open vSwitch with its userspace datapath (`datapath_type=netdev`), started by hand: an
//! ovsdb-server and an ovs-vswitchd whose database, sockets, pid and log files all live in
//! a private directory (OVS_RUNDIR/OVS_DBDIR/OVS_LOGDIR/OVS_SYSCONFDIR), stopped and removed
//! on drop. Userspace TSO is on, so 64 KiB segments can cross unsegmented as they do through
//! the Linux bridge and hostel's switch.

use crate::error::BenchError;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

pub struct Ovs {
    dir: PathBuf,
    db: Child,
    vswitchd: Child,
}

fn cmd(dir: &Path, prog: &str) -> Command {
    let mut c = Command::new(prog);
    for var in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"] {
        c.env(var, dir);
    }
    c.stdin(Stdio::null());
    c
}

fn run(dir: &Path, prog: &str, args: &[&str]) -> Result<(), BenchError> {
    let out = cmd(dir, prog)
        .args(args)
        .output()
        .map_err(|source| spawn(prog, source))?;
    if !out.status.success() {
        return Err(BenchError::Failed {
            prog: prog.to_string(),
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn spawn(prog: &str, source: std::io::Error) -> BenchError {
    BenchError::Spawn {
        prog: prog.to_string(),
        source,
    }
}

impl Ovs {
    /// Starts both daemons (in the caller thread's network namespace) and builds bridge `br`
    /// with the existing interfaces `ports`; returns once ovs-vswitchd has applied it.
    pub fn start(dir: &Path, br: &str, ports: &[&str]) -> Result<Ovs, BenchError> {
        if !Path::new(SCHEMA).exists() {
            return Err(BenchError::NoOvsSchema(SCHEMA.into()));
        }
        std::fs::create_dir_all(dir).map_err(|source| BenchError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let p = |f: &str| dir.join(f).display().to_string();
        let db_path = p("conf.db");
        run(dir, "ovsdb-tool", &["create", &db_path, SCHEMA])?;
        let remote = format!("unix:{}", p("db.sock"));
        let db = cmd(dir, "ovsdb-server")
            .arg(&db_path)
            .arg(format!("--remote=p{remote}"))
            .arg(format!("--unixctl={}", p("ovsdb-server.ctl")))
            .arg(format!("--pidfile={}", p("ovsdb-server.pid")))
            .arg(format!("--log-file={}", p("ovsdb-server.log")))
            .args(["--no-chdir", "-vconsole:off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| spawn("ovsdb-server", source))?;
        let db_arg = format!("--db={remote}");
        let vswitchd = (|| {
            // --retry: wait for ovsdb-server's socket (bounded by --timeout).
            run(
                dir,
                "ovs-vsctl",
                &[&db_arg, "--retry", "--timeout=20", "--no-wait", "init"],
            )?;
            run(
                dir,
                "ovs-vsctl",
                &[
                    &db_arg,
                    "--no-wait",
                    "set",
                    "Open_vSwitch",
                    ".",
                    "other_config:userspace-tso-enable=true",
                ],
            )?;
            cmd(dir, "ovs-vswitchd")
                .arg(&remote)
                .arg(format!("--unixctl={}", p("ovs-vswitchd.ctl")))
                .arg(format!("--pidfile={}", p("ovs-vswitchd.pid")))
                .arg(format!("--log-file={}", p("ovs-vswitchd.log")))
                .args(["--no-chdir", "-vconsole:off"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|source| spawn("ovs-vswitchd", source))
        })();
        let mut db = db;
        let vswitchd = match vswitchd {
            Ok(v) => v,
            Err(e) => {
                let _ = db.kill();
                let _ = db.wait();
                return Err(e);
            }
        };
        // From here on, dropping `ovs` stops both daemons.
        let ovs = Ovs {
            dir: dir.to_path_buf(),
            db,
            vswitchd,
        };
        // Without --no-wait, ovs-vsctl returns once ovs-vswitchd has applied the change.
        let mut args = vec![
            db_arg.as_str(),
            "--timeout=30",
            "add-br",
            br,
            "--",
            "set",
            "bridge",
            br,
            "datapath_type=netdev",
        ];
        for port in ports {
            args.extend(["--", "add-port", br, port]);
        }
        run(dir, "ovs-vsctl", &args)?;
        // Ports must have an OpenFlow number (opened by the datapath) before traffic.
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in ports {
            loop {
                let out = cmd(dir, "ovs-vsctl")
                    .args([&db_arg, "get", "Interface", port, "ofport"])
                    .output()
                    .map_err(|source| spawn("ovs-vsctl", source))?;
                let ofport = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if ofport.parse::<i32>().is_ok_and(|n| n > 0) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(BenchError::PortDown {
                        port: port.to_string(),
                        ofport,
                        log: dir.join("ovs-vswitchd.log"),
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(ovs)
    }

    /// ovs-vswitchd's user + system CPU seconds so far, all threads (/proc/PID/stat).
    pub fn vswitchd_cpu(&self) -> f64 {
        proc_cpu(self.vswitchd.id()).unwrap_or(f64::NAN)
    }
}

/// utime + stime of a process from /proc/PID/stat, in seconds.
fn proc_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

impl Drop for Ovs {
    fn drop(&mut self) {
        for c in [&mut self.vswitchd, &mut self.db] {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
