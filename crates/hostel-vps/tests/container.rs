//! Real containers with runc on this host: a busybox VPS runs, `exec` works, root inside is
//! an unprivileged id outside, the limits hold while a neighbour stays responsive, the
//! dangerous operations fail, and a destroy leaves no process, cgroup, mount or TAP.
//! Skipped (with the reason) where the host lacks root, runc or busybox-static.

use hostel_types::MacAddr;
use hostel_vps::runc::Runc;
use hostel_vps::spec::{Resources, DEFAULT_PIDS};
use hostel_vps::{image, uid_base, NicSpec, Vps, VpsSpec, VpsStatus};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn skip_reason() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root");
    }
    if !Path::new("/usr/sbin/runc").exists() && !Path::new("/usr/bin/runc").exists() {
        return Some("needs runc (scripts/install-deps.sh)");
    }
    if !Path::new(image::BUSYBOX).exists() {
        return Some("needs busybox-static");
    }
    None
}

/// Destroys the VPS when the test ends, passed or failed: runc's state lives in the
/// temporary directory, so a container left behind would be unreachable afterwards.
struct Guard(Vps);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.destroy();
    }
}

impl std::ops::Deref for Guard {
    type Target = Vps;
    fn deref(&self) -> &Vps {
        &self.0
    }
}

struct Host {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    image: PathBuf,
    runc: Runc,
}

fn host() -> Option<Host> {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("busybox");
    image::build_busybox(&image).unwrap();
    let base = tmp.path().join("vps");
    std::fs::create_dir_all(&base).unwrap();
    let runc = Runc::new(tmp.path().join("runc"));
    Some(Host {
        base,
        image,
        runc,
        _tmp: tmp,
    })
}

/// A slot per test process and case, so parallel tests never share an id range.
fn slot(n: u32) -> u32 {
    1000 + (std::process::id() % 1000) * 8 + n
}

fn spec(id: &str, n: u32, pids: u32, nic: bool) -> VpsSpec {
    VpsSpec {
        id: id.into(),
        hostname: id.into(),
        uid_base: uid_base(slot(n)).unwrap(),
        resources: Resources {
            vcpus: 1,
            memory_mib: 64,
            pids,
            disk: None,
        },
        disk_gib: 1,
        args: vec!["/bin/sleep".into(), "100000".into()],
        nic: nic.then(|| NicSpec {
            tap: format!("hvt{}{n}", std::process::id() % 100000),
            mac: MacAddr([0x52, 0x54, 0x00, 0x99, (n & 0xff) as u8, 1]),
            ipv4: "10.77.0.2".parse().unwrap(),
            prefix_len: 24,
            gateway4: "10.77.0.1".parse().unwrap(),
        }),
    }
}

fn sh(v: &Vps, script: &str) -> (Option<i32>, String) {
    let t = Instant::now();
    let out = v
        .exec(
            &["/bin/sh".into(), "-c".into(), script.into()],
            Duration::from_secs(60),
        )
        .unwrap();
    eprintln!("{script}: {:?} in {:?}", out.code, t.elapsed());
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.code, text)
}

fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    ["cpu", "memory", "pids", "blkio", "devices", "freezer"]
        .iter()
        .map(|c| PathBuf::from(format!("/sys/fs/cgroup/{c}/hostel-vps/{id}")))
        .filter(|p| p.exists())
        .collect()
}

/// The process is gone (or a zombie its new parent has yet to reap): it runs no more.
fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return,
            Ok(s)
                if s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z')) =>
            {
                return
            }
            Ok(_) => {}
        }
        assert!(Instant::now() < deadline, "process {pid} still runs");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_busybox_vps_runs_execs_and_leaves_nothing_behind() {
    let Some(h) = host() else { return };
    let id = format!("bb{}", std::process::id());
    let v = Guard(Vps::new(spec(&id, 0, DEFAULT_PIDS, true), &h.base, h.runc.clone()).unwrap());
    v.prepare(&h.image).unwrap();
    v.plug().unwrap();
    let pid = v.start().unwrap();
    assert_eq!(v.status().unwrap(), VpsStatus::Running { pid });

    // Root inside, the VPS's own id outside.
    let (code, out) = sh(&v, "id -u; hostname; ip -o -4 addr show dev eth0");
    assert_eq!(code, Some(0), "{out}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("0"));
    assert_eq!(lines.next(), Some(id.as_str()));
    assert!(out.contains("10.77.0.2/24"), "{out}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.contains(&v.spec.uid_base.to_string()),
        "{uid_line}"
    );

    // It writes to its own layer; the image stays untouched.
    let (code, out) = sh(&v, "echo hi > /etc/motd && cat /etc/motd");
    assert_eq!((code, out.trim()), (Some(0), "hi"));
    assert!(!h.image.join("etc/motd").exists());

    // It sees its own processes only.
    let (_, out) = sh(&v, "ps -o pid | wc -l");
    let n: u32 = out.trim().parse().unwrap();
    assert!(n < 10, "sees {n} processes");

    assert!(!cgroup_dirs(&id).is_empty());
    v.destroy().unwrap();
    wait_gone(pid);
    assert!(cgroup_dirs(&id).is_empty(), "{:?}", cgroup_dirs(&id));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&id), "a mount is left");
    let tap = v.spec.nic.as_ref().unwrap().tap.clone();
    assert!(!Path::new("/sys/class/net").join(tap).exists());
    assert!(!v.paths.dir.exists());
}

#[test]
fn limits_hold_and_root_cannot_escape() {
    let Some(h) = host() else { return };
    let id = format!("lim{}", std::process::id());
    let nid = format!("nb{}", std::process::id());
    let v = Guard(Vps::new(spec(&id, 1, 64, false), &h.base, h.runc.clone()).unwrap());
    let n = Guard(Vps::new(spec(&nid, 2, DEFAULT_PIDS, false), &h.base, h.runc.clone()).unwrap());
    for x in [&v, &n] {
        x.prepare(&h.image).unwrap();
        x.start().unwrap();
    }

    // A fork bomb stops at the pids limit while the neighbour answers.
    // In the background: the shell that meets the limit may keep retrying its forks.
    sh(&v, "(bomb() { bomb | bomb & }; bomb) >/dev/null 2>&1 &");
    let events_path = format!("/sys/fs/cgroup/pids/hostel-vps/{id}/pids.events");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&events_path)
        .unwrap()
        .contains("max 0")
    {
        assert!(
            Instant::now() < deadline,
            "the fork bomb never reached the limit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let current: u32 =
        std::fs::read_to_string(format!("/sys/fs/cgroup/pids/hostel-vps/{id}/pids.current"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    assert!(current <= 64, "{current} tasks");
    let events =
        std::fs::read_to_string(format!("/sys/fs/cgroup/pids/hostel-vps/{id}/pids.events"))
            .unwrap();
    assert!(
        !events.contains("max 0"),
        "the limit was never hit: {events}"
    );
    let t = Instant::now();
    let (code, _) = sh(&n, "true");
    assert_eq!(code, Some(0));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "neighbour slow: {:?}",
        t.elapsed()
    );
    v.stop(Duration::from_secs(1)).unwrap();
    v.start().unwrap();

    // A memory hog is killed at the memory limit; the neighbour answers.
    let (code, _) = sh(&v, "awk 'BEGIN { s = \"x\"; while (1) s = s s }'");
    assert_ne!(code, Some(0));
    let mem = |f: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/memory/hostel-vps/{id}/{f}")).unwrap()
    };
    let oom = mem("memory.oom_control");
    assert!(
        !oom.contains("oom_kill 0"),
        "the memory limit was never hit: {oom} max {}",
        mem("memory.max_usage_in_bytes")
    );
    assert_eq!(sh(&n, "true").0, Some(0));

    // The disk limit holds: the writable layer fills at its 1 GiB, the host's file with it.
    let (code, out) = sh(&v, "dd if=/dev/zero of=/fill bs=1M count=1500 2>&1; sync");
    assert!(out.contains("No space left"), "{code:?} {out}");
    let used = std::fs::metadata(&v.paths.fs.disk)
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .unwrap();
    assert!(used <= 1 << 30, "disk file uses {used} bytes");

    // Root in the VPS cannot load a module, mount, reach /dev/kvm or see the neighbour.
    // A file that is no module: the kernel would say ENOEXEC, seccomp says EPERM first.
    let (code, out) = sh(&v, "echo x > /tmp/m.ko; insmod /tmp/m.ko; echo rc=$?");
    assert!(out.contains("Operation not permitted"), "{code:?} {out}");
    let (_, out) = sh(
        &v,
        "mount -t tmpfs x /mnt; echo rc=$?; mount /dev/vda /mnt; echo rc=$?",
    );
    assert!(!out.contains("rc=0"), "{out}");
    let (_, out) = sh(
        &v,
        "mknod /tmp/kvm c 10 232; cat /tmp/kvm; echo rc=$?; ls /dev/kvm; echo rc=$?",
    );
    assert!(!out.contains("rc=0"), "{out}");
    assert_eq!(sh(&n, "echo NEIGHBOUR-SECRET > /secret-file").0, Some(0));
    let (_, out) = sh(
        &v,
        "cat /proc/*/root/secret-file 2>/dev/null; find / -xdev -name secret-file 2>/dev/null",
    );
    assert!(
        !out.contains("NEIGHBOUR-SECRET") && !out.contains("/secret-file\n"),
        "{out}"
    );
    let (_, out) = sh(&v, "ps -o args | grep -cx '/bin/sleep 100000'");
    assert_eq!(out.trim(), "1", "sees another VPS's PID 1");

    for x in [&v, &n] {
        x.destroy().unwrap();
    }
    assert!(cgroup_dirs(&id).is_empty());
}
