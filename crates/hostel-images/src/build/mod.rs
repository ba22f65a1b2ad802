//! Building images: a Debian base from the distribution's packages ([`debian`]) and images
//! derived from another by adding packages ([`derive`]). Both are cached by recipe key and
//! atomic (staged under `<store>/tmp`, renamed into place), and both block for minutes: call
//! them from a blocking thread (`tokio::task::spawn_blocking` in the daemon).

pub mod boot_initrd;
mod chroot;
mod debian;
mod derive;
mod guest_files;

pub(crate) use chroot::valid_package;
pub use guest_files::guest_files;

use crate::error::Result;
use crate::progress::{CancelToken, Phase, ProgressFn, Reporter};
use crate::recipe::{DebianRecipe, DerivedRecipe};
use crate::store::{Image, ImageStore};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Replace an image of the same name built from a different recipe. Off by default
    /// because VM disks use images as backing files.
    pub replace: bool,
    pub cancel: CancelToken,
}

#[derive(Debug, Clone)]
pub struct BuildOutcome {
    pub image: Image,
    /// True when the stored image already matched the recipe and nothing was built.
    pub cached: bool,
    pub elapsed: Duration,
}

impl ImageStore {
    /// Builds (or finds cached) a Debian image from `recipe`. Needs root and debootstrap.
    pub fn build_debian(
        &self,
        recipe: &DebianRecipe,
        opts: &BuildOptions,
        progress: ProgressFn<'_>,
    ) -> Result<BuildOutcome> {
        let key = recipe.key();
        self.build_with(&recipe.name, &key, opts, progress, |report| {
            debian::build(self, recipe, &key, opts, report)
        })
    }

    /// Builds (or finds cached) an image from its parent (which must exist) plus packages.
    pub fn build_derived(
        &self,
        recipe: &DerivedRecipe,
        opts: &BuildOptions,
        progress: ProgressFn<'_>,
    ) -> Result<BuildOutcome> {
        let parent = self.get(&recipe.parent)?;
        let key = recipe.key(&parent.manifest().key);
        self.build_with(&recipe.name, &key, opts, progress, |report| {
            derive::build(self, recipe, &parent, &key, opts, report)
        })
    }

    /// The cache check and lock every build shares.
    fn build_with(
        &self,
        name: &str,
        key: &str,
        opts: &BuildOptions,
        progress: ProgressFn<'_>,
        build: impl FnOnce(&Reporter<'_>) -> Result<Image>,
    ) -> Result<BuildOutcome> {
        let started = Instant::now();
        let report = Reporter::new(name, progress);
        report.start(Phase::Prepare, "waiting for the image lock");
        let _lock = self.lock(name)?;
        let report = report.with_log(self.open_build_log(name));
        match self.get(name) {
            Ok(img) if img.manifest().key == key => {
                report.report(Phase::Done, 1.0, "cached");
                tracing::info!(image = %name, "build cached");
                return Ok(BuildOutcome {
                    image: img,
                    cached: true,
                    elapsed: started.elapsed(),
                });
            }
            Ok(_) if !opts.replace => {
                return Err(crate::ImageError::Exists {
                    name: name.to_string(),
                })
            }
            _ => {}
        }
        if !crate::cmd::is_root() {
            return Err(crate::ImageError::NotRoot(
                "building images uses debootstrap, chroot and mounts",
            ));
        }
        tracing::info!(image = %name, key = %key, "building image");
        let image = build(&report).inspect_err(|e| {
            report.log_line(&format!("hostel: build failed: {e}"));
            tracing::warn!(image = %name, error = %e, log = %self.build_log_path(name).display(), "build failed");
        })?;
        report.report(Phase::Done, 1.0, "built");
        tracing::info!(image = %name, elapsed = ?started.elapsed(), "image built");
        Ok(BuildOutcome {
            image,
            cached: false,
            elapsed: started.elapsed(),
        })
    }
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
