use super::*;

/// Debian 12 cloud kernel's lines for the modules the root disk needs, plus one unrelated.
const DEP: &str = "\
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
";

fn names(order: &[Module]) -> Vec<&str> {
    order.iter().map(|m| m.name.as_str()).collect()
}

#[test]
fn modules_load_after_their_dependencies_once_each() {
    let order = load_order(DEP, "kernel/fs/ext4/ext4.ko\n", ROOT_MODULES).unwrap();
    assert_eq!(
        names(&order),
        ["virtio_ring", "virtio", "virtio_mmio", "virtio_blk"]
    );
    assert_eq!(order[3].path, "kernel/drivers/block/virtio_blk.ko");
}

#[test]
fn built_in_modules_are_skipped_and_dashes_match_underscores() {
    let order = load_order(DEP, "kernel/fs/ext4/ext4.ko\n", &["ext4", "virtio-ring"]).unwrap();
    assert_eq!(names(&order), ["virtio_ring"]);
}

#[test]
fn missing_compressed_and_cyclic_modules_are_refused_by_name() {
    let e = load_order(DEP, "", &["nvme"]).unwrap_err();
    assert_eq!(e, ModuleOrderError::Unknown("nvme".into()));
    let e = load_order("kernel/x/a.ko.xz:\n", "", &["a"]).unwrap_err();
    assert_eq!(e, ModuleOrderError::Compressed("kernel/x/a.ko.xz".into()));
    let e = load_order(
        "kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n",
        "",
        &["a"],
    )
    .unwrap_err();
    assert!(matches!(e, ModuleOrderError::Cycle(_)), "{e}");
}

#[test]
fn only_static_x86_64_programs_pass() {
    // A minimal ELF64 header with one program header of the given type.
    let elf = |p_type: u32| {
        let mut b = vec![0u8; 64 + 56];
        b[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1]);
        b[18..20].copy_from_slice(&62u16.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        b[64..68].copy_from_slice(&p_type.to_le_bytes());
        b
    };
    assert!(is_static_elf(&elf(1)));
    assert!(!is_static_elf(&elf(3)), "PT_INTERP: dynamically linked");
    assert!(!is_static_elf(b"#!/bin/sh\n"));
    let mut truncated = elf(1);
    truncated.truncate(70);
    assert!(!is_static_elf(&truncated));
}

#[test]
fn archive_holds_init_busybox_console_and_modules_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mods = dir.path().join("6.1.0-test");
    for m in [
        "drivers/virtio/virtio_mmio",
        "drivers/virtio/virtio",
        "drivers/virtio/virtio_ring",
        "drivers/block/virtio_blk",
    ] {
        let p = mods.join(format!("kernel/{m}.ko"));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, format!("module {m}")).unwrap();
    }
    fs::write(mods.join("modules.dep"), DEP).unwrap();
    fs::write(mods.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
    let out = dir.path().join(FILE);
    let busybox = Path::new(BUSYBOX);
    if !busybox.is_file() {
        eprintln!("SKIPPED: no {BUSYBOX} (busybox-static) on this host");
        return;
    }
    write(&mods, busybox, &out).unwrap();

    let bytes = fs::read(&out).unwrap();
    let mut rest = &bytes[..];
    let mut seen = HashMap::new();
    loop {
        let mut r = cpio::NewcReader::new(rest).unwrap();
        if r.entry().is_trailer() {
            break;
        }
        let (name, mode, rdev) = (
            r.entry().name().to_string(),
            r.entry().mode(),
            (r.entry().rdev_major(), r.entry().rdev_minor()),
        );
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut r, &mut data).unwrap();
        seen.insert(name, (mode, rdev, data));
        rest = r.finish().unwrap();
    }
    let (mode, _, init) = &seen["init"];
    assert_eq!(mode & 0o170777, libc::S_IFREG | 0o755);
    assert!(String::from_utf8_lossy(init).contains("switch_root"));
    assert_eq!(seen["dev/console"].0 & 0o170000, libc::S_IFCHR);
    assert_eq!(seen["dev/console"].1, (5, 1));
    assert_eq!(seen["bin/sh"].2, b"busybox");
    assert_eq!(
        seen["lib/modules/virtio_blk.ko"].2,
        b"module drivers/block/virtio_blk"
    );
    assert_eq!(
        String::from_utf8_lossy(&seen["modules"].2),
        "virtio_ring\nvirtio\nvirtio_mmio\nvirtio_blk\n"
    );
}

#[test]
fn a_dynamic_busybox_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mods = dir.path().join("k");
    fs::create_dir_all(mods.join("kernel/drivers/virtio")).unwrap();
    fs::create_dir_all(mods.join("kernel/drivers/block")).unwrap();
    fs::write(mods.join("modules.dep"), DEP).unwrap();
    let fake = dir.path().join("busybox");
    fs::write(&fake, b"#!/bin/sh\necho not a program\n").unwrap();
    let out = dir.path().join(FILE);
    let e = write(&mods, &fake, &out).unwrap_err().to_string();
    assert!(e.contains("busybox-static"), "{e}");
    assert!(!out.exists());
}
