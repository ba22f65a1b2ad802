//! Configuration files written into every Debian image. They are part of the recipe key, so
//! editing one here makes cached images stale.

/// `(path inside the guest, content)`, written before the packages are installed so that
/// package scripts (initramfs generation, dpkg path filters) already see them.
pub fn guest_files() -> &'static [(&'static str, &'static str)] {
    &[
        // The image is a bare ext4 filesystem on the VM's first disk. No fsck pass: the root is
        // mounted rw by the kernel and a clone is fresh; x-systemd.growfs grows it to the disk
        // even when cloud-init is disabled.
        (
            "/etc/fstab",
            "# hostel: the root disk is a bare ext4 filesystem (no partition table)\n\
             /dev/vda / ext4 defaults,discard,x-systemd.growfs 0 0\n",
        ),
        // Debian's default MODULES=most would work but triples the initramfs TCG has to unpack;
        // dep cannot see virtio from a chroot. The list itself is written from the recipe.
        (
            "/etc/initramfs-tools/conf.d/hostel.conf",
            "MODULES=list\nCOMPRESS=zstd\n",
        ),
        // Guests never read documentation and cannot reach a mirror: keep images small.
        (
            "/etc/dpkg/dpkg.cfg.d/90-hostel-nodoc",
            "path-exclude=/usr/share/doc/*\npath-include=/usr/share/doc/*/copyright\n\
             path-exclude=/usr/share/man/*\npath-exclude=/usr/share/info/*\n\
             path-exclude=/usr/share/locale/*\npath-include=/usr/share/locale/locale.alias\n",
        ),
        (
            "/etc/apt/apt.conf.d/90-hostel",
            "APT::Install-Recommends \"false\";\nAPT::Install-Suggests \"false\";\n",
        ),
        (
            "/etc/network/interfaces",
            "# hostel: cloud-init writes the NICs' configuration to interfaces.d\n\
             source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n",
        ),
        ("/etc/hostname", "debian\n"),
        (
            "/etc/hosts",
            "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n",
        ),
        // Configuration comes only from the NoCloud seed disk (label cidata): probing the
        // other datasources costs seconds under TCG and could trust a metadata service on
        // the tenant network. Key-only SSH; no RSA host key (generating one takes many seconds
        // under TCG). The locale module needs the locales package, which the image lacks:
        // it is disabled with the string 'false', which the module accepts and, unlike the
        // boolean, cloud-init's config schema does too (no schema warning at every boot).
        (
            "/etc/cloud/cloud.cfg.d/90-hostel.cfg",
            "# hostel: NoCloud seed disk only, key-only SSH, bare ext4 root grown with resize2fs\n\
             datasource_list: [NoCloud, None]\n\
             ssh_pwauth: false\n\
             disable_root: true\n\
             ssh_deletekeys: true\n\
             ssh_genkeytypes: [ed25519, ecdsa]\n\
             resize_rootfs: true\n\
             growpart:\n  mode: 'off'\n\
             locale: 'false'\n\
             manage_etc_hosts: true\n\
             # Debian's module lists less those that can do nothing here (no GRUB; snap, fan and\n\
             # landscape are Ubuntu's; EC2 metadata; IBM RMC; RightScale): each costs an import\n\
             # and a check under TCG while sshd takes its first logins.\n\
             cloud_config_modules: [ssh-import-id, keyboard, locale, set-passwords,\n  \
             apt-pipelining, apt-configure, ntp, timezone, runcmd, byobu]\n\
             cloud_final_modules: [package-update-upgrade-install, lxd, write-files-deferred,\n  \
             puppet, chef, mcollective, salt-minion, scripts-vendor, scripts-per-once,\n  \
             scripts-per-boot, scripts-per-instance, scripts-user, ssh-authkey-fingerprints,\n  \
             keys-to-console, install-hotplug, phone-home, final-message, power-state-change]\n",
        ),
        (
            "/etc/ssh/sshd_config.d/90-hostel.conf",
            "# hostel: keys only\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nUseDNS no\n",
        ),
        // cloud-init's last two stages (set-passwords, runcmd, packages, scripts) run beside
        // sshd's start and the customer's first logins; on a small VM (and on every TCG VM)
        // they would take the vCPU from them. A low weight lets a login go first and costs
        // nothing when the vCPU is otherwise idle.
        (
            "/etc/systemd/system/cloud-config.service.d/90-hostel.conf",
            "[Service]\nCPUWeight=20\n",
        ),
        (
            "/etc/systemd/system/cloud-final.service.d/90-hostel.conf",
            "[Service]\nCPUWeight=20\n",
        ),
        // A pre-booted ("standby") VM boots this far before anyone orders it, then waits for
        // its seed: hostel boots it with `hostel.seed=<disk>` naming an empty seed disk, and
        // when a customer's create takes it, fills that disk and grows it from 0 bytes. Only
        // then does cloud-init look for its datasource and configure the instance (host
        // name, keys, network, SSH host keys). Bash builtins only while waiting: under TCG a
        // process costs ~45 ms, and a standby may wait for hours. Cold boots (no
        // `hostel.seed=`) skip the unit.
        (
            "/usr/local/lib/hostel/wait-for-seed",
            "# hostel: a pre-booted VM waits here until the platform hands it its seed\n\
             read -r cmdline < /proc/cmdline || exit 0\n\
             dev=\n\
             for arg in $cmdline; do\n  \
             case $arg in hostel.seed=*) dev=${arg#hostel.seed=} ;; esac\n\
             done\n\
             case $dev in ''|*/*|.*) exit 0 ;; esac\n\
             size=/sys/class/block/$dev/size\n\
             if read -r n < \"$size\" && [ \"$n\" != 0 ]; then exit 0; fi\n\
             echo \"hostel-standby: waiting for the seed on /dev/$dev\"\n\
             fifo=/run/hostel-wait-for-seed\n\
             [ -p $fifo ] || mkfifo $fifo\n\
             exec 3<> $fifo\n\
             until read -r n < \"$size\" && [ \"$n\" != 0 ]; do\n  \
             read -r -t 0.1 -u 3 _ || true\n\
             done\n\
             echo \"hostel-standby: seed received ($n sectors)\"\n",
        ),
        (
            "/etc/systemd/system/hostel-wait-for-seed.service",
            "[Unit]\nDescription=hostel: wait for a pre-booted VM's cloud-init seed\n\
             DefaultDependencies=no\nConditionKernelCommandLine=hostel.seed\n\
             Before=cloud-init-local.service\n\n\
             [Service]\nType=oneshot\nRemainAfterExit=yes\n\
             ExecStart=/bin/bash /usr/local/lib/hostel/wait-for-seed\n\
             StandardOutput=journal+console\nTimeoutStartSec=infinity\n",
        ),
        (
            "/etc/systemd/system/cloud-init-local.service.d/90-hostel-seed.conf",
            "[Unit]\nWants=hostel-wait-for-seed.service\nAfter=hostel-wait-for-seed.service\n",
        ),
        // The serial console is the only console; a long journal on it slows TCG boots.
        (
            "/etc/systemd/journald.conf.d/90-hostel.conf",
            "[Journal]\nForwardToConsole=no\nSystemMaxUse=64M\n",
        ),
    ]
}
