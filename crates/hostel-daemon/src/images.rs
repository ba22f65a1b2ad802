//! The image registry: what a VM's `image` names and how to boot it. Only `busybox` (the
//! kernel and initramfs from `make guest`) exists until OS images arrive; each image says how
//! it boots, so others slot in without touching the supervisor.

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Image {
    pub name: String,
    pub description: String,
    pub boot: ImageBoot,
}

#[derive(Debug, Clone)]
pub enum ImageBoot {
    /// Direct kernel boot; the VM's disk is a blank data disk.
    Kernel {
        kernel: PathBuf,
        initrd: PathBuf,
        cmdline: String,
    },
}

#[derive(Debug, Clone, Default)]
pub struct ImageRegistry {
    images: Vec<Image>,
}

impl ImageRegistry {
    /// The built-in images found on this host.
    pub fn discover(guest_dir: Option<PathBuf>) -> Self {
        let mut images = Vec::new();
        if let Some(dir) = guest_dir {
            let (kernel, initrd) = (dir.join("vmlinux"), dir.join("initrd.img"));
            if kernel.is_file() && initrd.is_file() {
                images.push(Image {
                    name: "busybox".into(),
                    description: "Debian cloud kernel with a busybox initramfs".into(),
                    boot: ImageBoot::Kernel {
                        kernel,
                        initrd,
                        cmdline: "quiet".into(),
                    },
                });
            } else {
                tracing::warn!(dir = %dir.display(), "no busybox guest assets (run `make guest`)");
            }
        }
        Self { images }
    }

    pub fn get(&self, name: &str) -> Option<&Image> {
        self.images.iter().find(|i| i.name == name)
    }

    pub fn list(&self) -> &[Image] {
        &self.images
    }
}
