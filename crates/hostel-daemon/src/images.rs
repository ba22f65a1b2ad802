//! The image registry: what a VM's `image` names and how to boot it. Two kinds exist:
//! `busybox` (the kernel and initramfs from `make guest`, built in, booted with a blank data
//! disk) and OS images in an [`ImageStore`] at `<state-dir>/images` (built from the catalog or
//! imported), which VMs boot from a copy-on-write clone plus a cloud-init seed.
//!
//! Builds run on blocking threads; their progress is kept here, by image name, so the API can
//! show it. A build that fails leaves nothing in the store, only its status (with the error)
//! until the next build of that name.

use hostel_images::{Catalog, ImageStore, Progress};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// A VM's root disk (qcow2 overlay of its OS image) inside its disk directory.
pub const ROOT_DISK: &str = "root.qcow2";
/// A VM's cloud-init seed (vfat, read-only) inside its disk directory.
pub const SEED_DISK: &str = "seed.img";

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
    /// An OS image of the store: the VM boots a CoW clone of it with a cloud-init seed.
    Os(Box<hostel_images::Image>),
}

impl Image {
    fn from_store(img: hostel_images::Image) -> Self {
        use hostel_images::Origin;
        let description = match &img.manifest().origin {
            Origin::Built {
                distribution,
                suite,
                ..
            } => format!("{distribution} {suite}"),
            Origin::Derived {
                parent, packages, ..
            } => format!("{parent} + {}", packages.join(" ")),
            Origin::Imported { source } => format!("imported from {source}"),
        };
        Image {
            name: img.name().to_string(),
            description,
            boot: ImageBoot::Os(Box::new(img)),
        }
    }

    /// The store image behind an OS image (`None` for built-ins).
    pub fn os(&self) -> Option<&hostel_images::Image> {
        match &self.boot {
            ImageBoot::Os(img) => Some(img),
            ImageBoot::Kernel { .. } => None,
        }
    }
}

/// Where a build of one image name stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildState {
    Building {
        phase: String,
        percent: u8,
        message: String,
    },
    Failed {
        error: String,
    },
}

pub struct ImageRegistry {
    builtin: Vec<Image>,
    store: Option<ImageStore>,
    catalog: Catalog,
    builds: Mutex<BTreeMap<String, BuildState>>,
}

impl ImageRegistry {
    /// The built-in images found on this host and the OS image store at `store_dir`.
    pub fn discover(guest_dir: Option<PathBuf>, store_dir: PathBuf) -> Self {
        let mut builtin = Vec::new();
        if let Some(dir) = guest_dir {
            let (kernel, initrd) = (dir.join("vmlinux"), dir.join("initrd.img"));
            if kernel.is_file() && initrd.is_file() {
                builtin.push(Image {
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
        let store = ImageStore::open(&store_dir)
            .inspect_err(
                |e| tracing::error!(dir = %store_dir.display(), error = %e, "no OS image store"),
            )
            .ok();
        Self {
            builtin,
            store,
            catalog: Catalog::builtin(),
            builds: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn get(&self, name: &str) -> Option<Image> {
        if let Some(i) = self.builtin.iter().find(|i| i.name == name) {
            return Some(i.clone());
        }
        let store = self.store.as_ref()?;
        store.get(name).ok().map(Image::from_store)
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.iter().any(|i| i.name == name)
    }

    /// Every usable image: the built-ins, then the store's, sorted by name.
    pub fn list(&self) -> Vec<Image> {
        let mut out = self.builtin.clone();
        if let Some(store) = &self.store {
            match store.list() {
                Ok(images) => out.extend(images.into_iter().map(Image::from_store)),
                Err(e) => tracing::error!(error = %e, "listing the image store"),
            }
        }
        out
    }

    pub fn store(&self) -> Option<&ImageStore> {
        self.store.as_ref()
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Builds in progress and failed ones, by image name.
    pub fn builds(&self) -> BTreeMap<String, BuildState> {
        self.builds.lock().expect("builds lock").clone()
    }

    pub fn build_state(&self, name: &str) -> Option<BuildState> {
        self.builds.lock().expect("builds lock").get(name).cloned()
    }

    /// Marks `name` as building; false if a build of it already runs.
    pub fn begin_build(&self, name: &str) -> bool {
        let mut builds = self.builds.lock().expect("builds lock");
        if matches!(builds.get(name), Some(BuildState::Building { .. })) {
            return false;
        }
        builds.insert(
            name.to_string(),
            BuildState::Building {
                phase: "prepare".into(),
                percent: 0,
                message: "queued".into(),
            },
        );
        true
    }

    /// Records a progress report of the build of `name` (which may be about its parent image).
    pub fn report(&self, name: &str, p: &Progress) {
        let phase = serde_json::to_value(p.phase)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{:?}", p.phase));
        let (phase, message) = if p.image == name {
            (phase, p.message.clone())
        } else {
            // Building the base first: say so, and keep the bar at 0 for the image asked for.
            (phase, format!("{}: {}", p.image, p.message))
        };
        let percent = if p.image == name { p.percent } else { 0 };
        self.builds.lock().expect("builds lock").insert(
            name.to_string(),
            BuildState::Building {
                phase,
                percent,
                message,
            },
        );
    }

    /// Ends the build of `name`: success forgets it (the image is in the store), failure keeps
    /// the error for whoever polls.
    pub fn finish_build(&self, name: &str, result: Result<(), String>) {
        let mut builds = self.builds.lock().expect("builds lock");
        match result {
            Ok(()) => {
                builds.remove(name);
            }
            Err(error) => {
                builds.insert(name.to_string(), BuildState::Failed { error });
            }
        }
    }

    /// Forgets a failed build's status (the image was imported or deleted meanwhile).
    pub fn clear_failed(&self, name: &str) {
        let mut builds = self.builds.lock().expect("builds lock");
        if matches!(builds.get(name), Some(BuildState::Failed { .. })) {
            builds.remove(name);
        }
    }
}
