//! OS images: building one from the catalog (in the background), importing a host file,
//! deleting one no VM uses; and what a VM create needs of its image (which image, its
//! service template, the checks before anything is made).

use super::{blocking, image_error, DaemonError};
use crate::images::{BuildState, ImageBoot, ImageRegistry, GIB, OS_DEFAULT_MEMORY_MIB, ROOT_DISK};
use crate::Ctx;
use hostel_api::{CreateVm, ImportImage};
use hostel_images::{BuildOptions, ImportOptions, Progress, Template};
use hostel_state::{AuditResult, NewAuditEntry};
use std::path::PathBuf;
use std::sync::Arc;

pub struct Images<'a> {
    ctx: &'a Arc<Ctx>,
}

impl<'a> Images<'a> {
    pub fn new(ctx: &'a Arc<Ctx>) -> Self {
        Self { ctx }
    }

    /// Starts building `name` on a blocking thread; `audit` is committed with its outcome
    /// when it ends. `None`: a build of that name already runs. The receiver fires when the
    /// build ends ([`Images::build_outcome`] tells how).
    pub fn start_build(
        &self,
        name: &str,
        audit: NewAuditEntry,
    ) -> Result<Option<tokio::sync::oneshot::Receiver<()>>, DaemonError> {
        let images = &self.ctx.images;
        if !images.catalog().buildable().iter().any(|b| b == name) {
            return Err(DaemonError::invalid(
                "name",
                format!(
                    "no recipe builds an image named {name:?} (known: {})",
                    images.catalog().buildable().join(", ")
                ),
            ));
        }
        if images.store().is_none() {
            return Err(DaemonError::NoImageStore);
        }
        if !images.begin_build(name) {
            return Ok(None);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (ctx, name) = (self.ctx.clone(), name.to_string());
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let images = &ctx.images;
            let sink = |p: &Progress| images.report(&name, p);
            let result = match images.store() {
                Some(store) => images
                    .catalog()
                    .build(store, &name, &BuildOptions::default(), &sink)
                    .map_err(|e| image_error(e, &[])),
                None => Err(DaemonError::NoImageStore),
            };
            let outcome = match &result {
                Ok(out) => {
                    tracing::info!(image = %name, cached = out.cached, elapsed = ?out.elapsed, "image built");
                    // New standbys boot the image as it is now.
                    let (ctx, name, fresh) = (ctx.clone(), name.clone(), !out.cached);
                    rt.spawn(async move {
                        if fresh {
                            ctx.standby.forget_image(&ctx, &name).await;
                        }
                        ctx.standby.poke();
                    });
                    AuditResult::Ok
                }
                Err(e) => {
                    tracing::warn!(image = %name, error = %e, "image build failed");
                    AuditResult::Error(e.to_string())
                }
            };
            // Already off the async workers: the entry is written here, blocking.
            if let Err(e) = ctx.store.append_audit(&audit.with_result(outcome)) {
                tracing::error!(error = %e, "audit log write failed");
            }
            images.finish_build(&name, result.as_ref().map(|_| ()));
            let _ = tx.send(());
        });
        Ok(Some(rx))
    }

    /// How the last build of `name` ended: a failed one is its report.
    pub fn build_outcome(&self, name: &str) -> Result<(), DaemonError> {
        match self.ctx.images.build_state(name) {
            Some(BuildState::Failed { error }) => Err(DaemonError::BuildFailed(error)),
            _ => Ok(()),
        }
    }

    /// Imports a disk image (and its kernel and initrd) from files on the daemon's host.
    pub async fn import(&self, req: &ImportImage) -> Result<(), DaemonError> {
        let images = &self.ctx.images;
        hostel_images::validate_name(&req.name).map_err(|e| image_error(e, &[]))?;
        if images.is_builtin(&req.name) {
            return Err(DaemonError::conflict(
                Some("name"),
                format!("{:?} is a built-in image", req.name),
            ));
        }
        if matches!(
            images.build_state(&req.name),
            Some(BuildState::Building { .. })
        ) {
            return Err(DaemonError::conflict(
                Some("name"),
                format!("image {:?} is being built", req.name),
            ));
        }
        let host_path = |field: &str, p: &str| -> Result<PathBuf, DaemonError> {
            let p = PathBuf::from(p);
            if p.is_absolute() {
                Ok(p)
            } else {
                Err(DaemonError::invalid(
                    field,
                    format!("{p:?} is not an absolute path on the daemon's host"),
                ))
            }
        };
        let path = host_path("path", &req.path)?;
        let kernel = req
            .kernel
            .as_deref()
            .map(|k| host_path("kernel", k))
            .transpose()?;
        let initrd = req
            .initrd
            .as_deref()
            .map(|i| host_path("initrd", i))
            .transpose()?;
        let store = images.store().cloned().ok_or(DaemonError::NoImageStore)?;
        let (name, opts) = (
            req.name.clone(),
            ImportOptions {
                replace: false,
                kernel: kernel.clone(),
                initrd: initrd.clone(),
                cmdline: req.cmdline.clone(),
            },
        );
        let import_path = path.clone();
        let imported =
            tokio::task::spawn_blocking(move || store.import(&name, &import_path, &opts)).await?;
        let mut files = vec![("path", path.as_path())];
        files.extend(kernel.as_deref().map(|k| ("kernel", k)));
        files.extend(initrd.as_deref().map(|i| ("initrd", i)));
        imported.map_err(|e| image_error(e, &files))?;
        images.clear_failed(&req.name);
        self.ctx.standby.poke();
        Ok(())
    }

    /// Deletes an imported or built image no VM uses (standbys of it are stopped first).
    pub async fn delete(&self, name: &str) -> Result<(), DaemonError> {
        let images = &self.ctx.images;
        let not_found = || DaemonError::NotFound {
            kind: "image",
            name: name.to_string(),
        };
        if images.is_builtin(name) {
            return Err(DaemonError::conflict(
                None,
                format!("{name:?} is a built-in image"),
            ));
        }
        if matches!(images.build_state(name), Some(BuildState::Building { .. })) {
            return Err(DaemonError::conflict(
                None,
                format!("image {name:?} is being built"),
            ));
        }
        let store = images.store().cloned().ok_or_else(not_found)?;
        if !store.contains(name) {
            images.clear_failed(name);
            return Err(not_found());
        }
        // VM disks are overlays naming the image's file: it must outlive every one of them.
        let n = name.to_string();
        let users: Vec<String> = blocking(&self.ctx.store, move |db| {
            Ok::<_, DaemonError>(
                db.list_all_vms()?
                    .into_iter()
                    .filter(|v| v.spec.image() == n)
                    .map(|v| v.name.to_string())
                    .collect(),
            )
        })
        .await?;
        if !users.is_empty() {
            return Err(DaemonError::conflict(
                None,
                format!(
                    "image {name:?} is in use by VM(s) {} (delete them first)",
                    users.join(", ")
                ),
            ));
        }
        // Standbys boot overlays of the image too; they go first.
        self.ctx.standby.forget_image(self.ctx, name).await;
        let n = name.to_string();
        tokio::task::spawn_blocking(move || store.delete(&n))
            .await?
            .map_err(|e| image_error(e, &[]))?;
        images.clear_failed(name);
        Ok(())
    }
}

/// A create's image, checked before anything is made.
pub struct VmImage {
    pub name: String,
    pub os: Option<OsPlan>,
}

/// An OS-image VM: the store image to clone and the service template to configure.
pub struct OsPlan {
    pub image: hostel_images::Image,
    pub template: Option<Template>,
}

impl VmImage {
    pub fn default_memory_mib(&self) -> u64 {
        if self.os.is_some() {
            OS_DEFAULT_MEMORY_MIB
        } else {
            128
        }
    }

    /// The image's own size for OS images (rounded up to GiB), 1 GiB for a data disk.
    pub fn default_disk_gib(&self) -> u64 {
        self.os
            .as_ref()
            .map_or(1, |os| os.image.manifest().disk.virtual_size.div_ceil(GIB))
    }

    pub fn check_disk(&self, gib: u64) -> Result<(), DaemonError> {
        let Some(os) = &self.os else { return Ok(()) };
        let minimum = os.image.manifest().disk.virtual_size;
        if gib.saturating_mul(GIB) < minimum {
            return Err(DaemonError::invalid(
                "disk_gib",
                format!(
                    "{gib} GiB is smaller than image {:?} ({} GiB)",
                    self.name,
                    minimum.div_ceil(GIB)
                ),
            ));
        }
        Ok(())
    }
}

/// Which image a create boots, with its service template; refuses what cannot work.
pub fn resolve_for_vm(images: &ImageRegistry, body: &CreateVm) -> Result<VmImage, DaemonError> {
    let template = match &body.service {
        None if !body.service_params.is_empty() => {
            return Err(DaemonError::invalid(
                "service_params",
                "parameters given without a service",
            ))
        }
        None => None,
        Some(s) => Some(images.catalog().template(s).cloned().ok_or_else(|| {
            let known: Vec<_> = images
                .catalog()
                .templates()
                .iter()
                .map(|t| t.name.as_str())
                .collect();
            DaemonError::invalid(
                "service",
                format!("unknown service {s:?} (available: {})", known.join(", ")),
            )
        })?),
    };
    let name = match (&body.image, &template) {
        (Some(i), Some(t)) if *i != t.image => {
            return Err(DaemonError::invalid(
                "image",
                format!(
                    "service {:?} runs on image {:?}, not {i:?}",
                    t.name, t.image
                ),
            ))
        }
        (Some(i), _) => i.clone(),
        (None, Some(t)) => t.image.clone(),
        (None, None) => "busybox".into(),
    };
    let Some(image) = images.get(&name) else {
        if let Some(t) = &template {
            return Err(DaemonError::invalid(
                "service",
                format!(
                    "service {:?} needs image {name:?}, which is not built (hostel image build {name})",
                    t.name
                ),
            ));
        }
        let known: Vec<_> = images.list().into_iter().map(|i| i.name).collect();
        return Err(DaemonError::invalid(
            "image",
            format!("unknown image {name:?} (available: {})", known.join(", ")),
        ));
    };
    match image.boot {
        ImageBoot::Kernel { .. } => {
            let os_only = [
                ("ssh_keys", !body.ssh_keys.is_empty()),
                ("user_data", body.user_data.is_some()),
                ("hostname", body.hostname.is_some()),
            ];
            if let Some((field, _)) = os_only.iter().find(|(_, given)| *given) {
                return Err(DaemonError::invalid(
                    *field,
                    format!("needs an OS image (image {name:?} has no cloud-init)"),
                ));
            }
            Ok(VmImage { name, os: None })
        }
        ImageBoot::Os(img) => {
            // An image that cannot boot (a bare filesystem imported without a kernel).
            img.boot_input(std::path::Path::new(ROOT_DISK), None)
                .map_err(|e| DaemonError::invalid("image", e))?;
            crate::seed::check(body, template.as_ref())?;
            Ok(VmImage {
                name,
                os: Some(OsPlan {
                    image: *img,
                    template,
                }),
            })
        }
    }
}
