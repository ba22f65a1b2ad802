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

pub const GIB: u64 = 1 << 30;
/// Memory of an OS-image VM when the request names none: cloud-init and systemd need it.
pub const OS_DEFAULT_MEMORY_MIB: u64 = 1024;

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
        /// 0-100 across the whole build, the base image's included.
        percent: u8,
        message: String,
        /// This build had to build the image's base first.
        via_base: bool,
    },
    Failed {
        error: String,
    },
}

/// Of a template image's build that has to build its base first, the share of the bar the
/// base takes: a cold debian-12 takes minutes (debootstrap, the kernel, cloud-init), its
/// derived images seconds to a minute (one apt-get install on a copy).
const BASE_SHARE: u8 = 90;

/// One bar across the whole build of `name`: reports about its base image (built first when
/// missing) fill the first [`BASE_SHARE`] percent, with the base named in the message, and
/// `name`'s own the rest (all of it when no base had to be built). The bar never moves back.
/// Returns the percent, the message and whether this build went through a base.
fn overall(name: &str, p: &Progress, previous: Option<&BuildState>) -> (u8, String, bool) {
    let scaled = |pct: u8, lo: u8| lo + (u16::from(pct.min(100)) * u16::from(100 - lo) / 100) as u8;
    let (last, via_base) = match previous {
        Some(BuildState::Building {
            percent, via_base, ..
        }) => (*percent, *via_base),
        _ => (0, false),
    };
    if p.image != name {
        let pct = (u16::from(p.percent.min(100)) * u16::from(BASE_SHARE) / 100) as u8;
        return (pct.max(last), format!("{}: {}", p.image, p.message), true);
    }
    let pct = if via_base {
        scaled(p.percent, BASE_SHARE)
    } else {
        p.percent.min(100)
    };
    (pct.max(last), p.message.clone(), via_base)
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
                via_base: false,
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
        let mut builds = self.builds.lock().expect("builds lock");
        let (percent, message, via_base) = overall(name, p, builds.get(name));
        builds.insert(
            name.to_string(),
            BuildState::Building {
                phase,
                percent,
                message,
                via_base,
            },
        );
    }

    /// Ends the build of `name`: success forgets it (the image is in the store), failure keeps
    /// the error's message for whoever polls.
    pub fn finish_build<E: std::fmt::Display>(&self, name: &str, result: Result<(), E>) {
        let mut builds = self.builds.lock().expect("builds lock");
        match result {
            Ok(()) => {
                builds.remove(name);
            }
            Err(error) => {
                let error = error.to_string();
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

#[cfg(test)]
mod tests {
    use super::*;
    use hostel_images::Phase;

    fn report(
        reg: &ImageRegistry,
        name: &str,
        image: &str,
        phase: Phase,
        percent: u8,
    ) -> (u8, String) {
        reg.report(
            name,
            &Progress {
                image: image.into(),
                phase,
                percent,
                message: format!("step of {image}"),
            },
        );
        match reg.build_state(name) {
            Some(BuildState::Building {
                percent, message, ..
            }) => (percent, message),
            other => panic!("{other:?}"),
        }
    }

    fn registry() -> (tempfile::TempDir, ImageRegistry) {
        let dir = tempfile::tempdir().unwrap();
        let reg = ImageRegistry::discover(None, dir.path().join("images"));
        (dir, reg)
    }

    #[test]
    fn a_template_build_through_its_base_is_one_bar() {
        let (_dir, reg) = registry();
        let name = "debian-12-web";
        assert!(reg.begin_build(name));
        assert!(!reg.begin_build(name), "one build of a name at a time");
        assert_eq!(
            report(&reg, name, "debian-12", Phase::Bootstrap, 20),
            (18, "debian-12: step of debian-12".to_string())
        );
        assert_eq!(report(&reg, name, "debian-12", Phase::Done, 100).0, 90);
        // The image's own build starts at 0 of its share, not of the bar.
        let (pct, msg) = report(&reg, name, name, Phase::Prepare, 0);
        assert_eq!((pct, msg.as_str()), (90, "step of debian-12-web"));
        assert_eq!(report(&reg, name, name, Phase::Packages, 50).0, 95);
        assert_eq!(report(&reg, name, name, Phase::Done, 100).0, 100);
        reg.finish_build(name, Ok::<(), String>(()));
        assert_eq!(reg.build_state(name), None);
    }

    #[test]
    fn a_build_without_a_base_uses_the_whole_bar_and_never_goes_back() {
        let (_dir, reg) = registry();
        assert!(reg.begin_build("debian-12"));
        assert_eq!(
            report(&reg, "debian-12", "debian-12", Phase::Packages, 40).0,
            40
        );
        assert_eq!(
            report(&reg, "debian-12", "debian-12", Phase::Packages, 30).0,
            40
        );
        reg.finish_build("debian-12", Err::<(), _>("boom"));
        assert_eq!(
            reg.build_state("debian-12"),
            Some(BuildState::Failed {
                error: "boom".into()
            })
        );
    }
}
