//! Image routes: listing, building from the catalog (in the background, with progress),
//! importing a host file, deleting one no VM uses; and what a VM create needs of its image
//! (the OS image, a service template, its CoW root disk and cloud-init seed).

use super::ApiPath;
use super::{ApiJson, AppState, Auth, Operator};
use crate::error::{ApiError, ApiResult};
use crate::images::{BuildState, Image, ImageBoot, ROOT_DISK, SEED_DISK};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hostel_api::{BuildImage, CreateVm, ImageView, ImportImage};
use hostel_images::{BuildOptions, ImageError, ImportOptions, Origin, Progress, Template};
use hostel_state::Vm;
use std::path::PathBuf;
use std::time::Duration;

/// How long a build request waits before answering 202: a cached build is done by then.
const BUILD_ANSWER_WAIT: Duration = Duration::from_secs(2);
use crate::images::{GIB, OS_DEFAULT_MEMORY_MIB};

fn conflict(field: Option<&str>, message: impl Into<String>) -> ApiError {
    let e = ApiError::new(StatusCode::CONFLICT, "conflict", message);
    match field {
        Some(f) => e.with_field(f),
        None => e,
    }
}

/// An image library error as an API error; `files` maps host paths of the request to the
/// fields that named them, so a bad file is a 400 naming its field.
fn image_error(e: ImageError, files: &[(&str, &std::path::Path)]) -> ApiError {
    let field_of = |p: &std::path::Path| files.iter().find(|(_, f)| *f == p).map(|(n, _)| *n);
    let message = e.to_string();
    match &e {
        ImageError::InvalidName(_) | ImageError::UnknownRecipe(..) => {
            ApiError::invalid("name", message)
        }
        ImageError::NotFound(n) => ApiError::not_found("image", n),
        ImageError::Exists { .. } => conflict(Some("name"), message),
        ImageError::Busy { .. } => conflict(None, message),
        ImageError::Io { path, .. }
        | ImageError::Unsupported { path, .. }
        | ImageError::Corrupt { path, .. }
        | ImageError::Truncated { path, .. } => match field_of(path) {
            Some(field) => ApiError::invalid(field, message),
            None if files.is_empty() => ApiError::internal(message),
            // Checks run on the store's copy of the file: still the file's fault.
            None if !matches!(e, ImageError::Io { .. }) => ApiError::invalid(files[0].0, message),
            None => ApiError::internal(message),
        },
        ImageError::InvalidRecipe(_) if !files.is_empty() => ApiError::invalid("kernel", message),
        ImageError::DiskTooSmall { .. } => ApiError::invalid("disk_gib", message),
        ImageError::NotRoot(_)
        | ImageError::ToolMissing { .. }
        | ImageError::CommandFailed { .. } => ApiError::engine(message),
        _ => ApiError::internal(message),
    }
}

fn joined(e: tokio::task::JoinError) -> ApiError {
    ApiError::internal(format!("image task failed: {e}"))
}

/// Bytes a directory's files take on disk (sparse files count what is allocated).
fn stored_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let entries = std::fs::read_dir(dir).ok()?;
    Some(
        entries
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.blocks() * 512)
            .sum(),
    )
}

fn ready_view(img: &Image) -> ImageView {
    let mut v = ImageView {
        name: img.name.clone(),
        description: img.description.clone(),
        state: "ready".into(),
        kind: "builtin".into(),
        ..Default::default()
    };
    if let ImageBoot::Os(os) = &img.boot {
        v.kind = match os.manifest().origin {
            Origin::Built { .. } => "built",
            Origin::Derived { .. } => "derived",
            Origin::Imported { .. } => "imported",
        }
        .into();
        v.size_bytes = Some(os.manifest().disk.virtual_size);
        v.stored_bytes = stored_bytes(os.dir());
    }
    v
}

fn build_view(name: &str, b: &BuildState) -> ImageView {
    let mut v = ImageView {
        name: name.to_string(),
        description: String::new(),
        ..Default::default()
    };
    match b {
        BuildState::Building {
            phase,
            percent,
            message,
            ..
        } => {
            v.state = "building".into();
            v.phase = Some(phase.clone());
            v.percent = Some(*percent);
            v.message = Some(message.clone());
        }
        BuildState::Failed { error } => {
            v.state = "failed".into();
            v.error = Some(error.clone());
        }
    }
    v
}

fn view_of(state: &AppState, name: &str) -> ApiResult<ImageView> {
    let images = &state.ctx.images;
    match (images.build_state(name), images.get(name)) {
        (Some(b @ BuildState::Building { .. }), _) => Ok(build_view(name, &b)),
        (_, Some(img)) => Ok(ready_view(&img)),
        (Some(b), None) => Ok(build_view(name, &b)),
        (None, None) => Err(ApiError::not_found("image", name)),
    }
}

#[utoipa::path(get, path = "/v1/images", responses((status = 200, body = [ImageView])))]
pub async fn list(State(state): State<AppState>, _auth: Auth) -> Json<Vec<ImageView>> {
    let images = &state.ctx.images;
    let mut out: Vec<ImageView> = images.list().iter().map(ready_view).collect();
    // Builds in progress show up too; failed ones registered nothing and are not listed.
    for (name, b) in images.builds() {
        if matches!(b, BuildState::Building { .. }) {
            out.retain(|v| v.name != name);
            out.push(build_view(&name, &b));
        }
    }
    Json(out)
}

#[utoipa::path(get, path = "/v1/images/{name}",
    responses((status = 200, body = ImageView), (status = 404, body = hostel_api::ApiErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    _auth: Auth,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<ImageView>> {
    Ok(Json(view_of(&state, &name)?))
}

#[utoipa::path(post, path = "/v1/images/build", request_body = BuildImage,
    responses((status = 202, body = ImageView), (status = 200, body = ImageView),
              (status = 400, body = hostel_api::ApiErrorBody),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the build failed, or the host lacks what builds need")))]
pub async fn build(
    State(state): State<AppState>,
    Operator(auth): Operator,
    ApiJson(body): ApiJson<BuildImage>,
) -> ApiResult<(StatusCode, Json<ImageView>)> {
    let name = body.name.clone();
    let started = start_build(&state, &auth, &name);
    if let Err(e) = &started {
        let failed = Err::<(), _>(e.clone());
        state
            .audit_async(&auth, None, "image.build", &name, &failed)
            .await;
    }
    let Some(done) = started? else {
        // Already building: the build in progress is the answer.
        return Ok((StatusCode::ACCEPTED, Json(view_of(&state, &name)?)));
    };
    if tokio::time::timeout(BUILD_ANSWER_WAIT, done).await.is_err() {
        return Ok((StatusCode::ACCEPTED, Json(view_of(&state, &name)?)));
    }
    match state.ctx.images.build_state(&name) {
        Some(BuildState::Failed { error }) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "build_failed",
            error,
        )),
        _ => Ok((StatusCode::OK, Json(view_of(&state, &name)?))),
    }
}

/// Starts a build on a blocking thread. `None`: one of that name already runs. The receiver
/// fires when the build ends (its outcome is in the registry's build state).
fn start_build(
    state: &AppState,
    auth: &Auth,
    name: &str,
) -> ApiResult<Option<tokio::sync::oneshot::Receiver<()>>> {
    let images = &state.ctx.images;
    if !images.catalog().buildable().iter().any(|b| b == name) {
        return Err(ApiError::invalid(
            "name",
            format!(
                "no recipe builds an image named {name:?} (known: {})",
                images.catalog().buildable().join(", ")
            ),
        ));
    }
    if images.store().is_none() {
        return Err(ApiError::internal("the OS image store is not available"));
    }
    if !images.begin_build(name) {
        return Ok(None);
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (state, auth, name) = (state.clone(), auth.clone(), name.to_string());
    tokio::task::spawn_blocking(move || {
        let images = &state.ctx.images;
        let sink = |p: &Progress| images.report(&name, p);
        let store = images.store().expect("checked above");
        let result = images
            .catalog()
            .build(store, &name, &BuildOptions::default(), &sink)
            .map_err(|e| image_error(e, &[]));
        match &result {
            Ok(out) => {
                tracing::info!(image = %name, cached = out.cached, elapsed = ?out.elapsed, "image built");
                // New standbys boot the image as it is now.
                let (ctx, name, fresh) = (state.ctx.clone(), name.clone(), !out.cached);
                tokio::spawn(async move {
                    if fresh {
                        ctx.standby.forget_image(&ctx, &name).await;
                    }
                    ctx.standby.poke();
                });
            }
            Err(e) => tracing::warn!(image = %name, error = %e, "image build failed"),
        }
        state.audit(&auth, None, "image.build", &name, &result);
        images.finish_build(&name, result.map(|_| ()).map_err(|e| e.message));
        let _ = tx.send(());
    });
    Ok(Some(rx))
}

#[utoipa::path(post, path = "/v1/images/import", request_body = ImportImage,
    responses((status = 201, body = ImageView), (status = 400, body = hostel_api::ApiErrorBody),
              (status = 409, body = hostel_api::ApiErrorBody),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the host lacks a tool the import needs")))]
pub async fn import(
    State(state): State<AppState>,
    Operator(auth): Operator,
    ApiJson(body): ApiJson<ImportImage>,
) -> ApiResult<(StatusCode, Json<ImageView>)> {
    let result = import_image(&state, &body).await;
    state
        .audit_async(&auth, None, "image.import", &body.name, &result)
        .await;
    Ok((StatusCode::CREATED, Json(result?)))
}

async fn import_image(state: &AppState, body: &ImportImage) -> ApiResult<ImageView> {
    let images = &state.ctx.images;
    hostel_images::validate_name(&body.name).map_err(|e| image_error(e, &[]))?;
    if images.is_builtin(&body.name) {
        return Err(conflict(
            Some("name"),
            format!("{:?} is a built-in image", body.name),
        ));
    }
    if matches!(
        images.build_state(&body.name),
        Some(BuildState::Building { .. })
    ) {
        return Err(conflict(
            Some("name"),
            format!("image {:?} is being built", body.name),
        ));
    }
    let host_path = |field: &str, p: &str| -> ApiResult<PathBuf> {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            Ok(p)
        } else {
            Err(ApiError::invalid(
                field,
                format!("{p:?} is not an absolute path on the daemon's host"),
            ))
        }
    };
    let path = host_path("path", &body.path)?;
    let kernel = body
        .kernel
        .as_deref()
        .map(|k| host_path("kernel", k))
        .transpose()?;
    let initrd = body
        .initrd
        .as_deref()
        .map(|i| host_path("initrd", i))
        .transpose()?;
    let store = images
        .store()
        .cloned()
        .ok_or_else(|| ApiError::internal("the OS image store is not available"))?;
    let (name, opts) = (
        body.name.clone(),
        ImportOptions {
            replace: false,
            kernel: kernel.clone(),
            initrd: initrd.clone(),
            cmdline: body.cmdline.clone(),
        },
    );
    let import_path = path.clone();
    let imported = tokio::task::spawn_blocking(move || store.import(&name, &import_path, &opts))
        .await
        .map_err(joined)?;
    let mut files = vec![("path", path.as_path())];
    files.extend(kernel.as_deref().map(|k| ("kernel", k)));
    files.extend(initrd.as_deref().map(|i| ("initrd", i)));
    imported.map_err(|e| image_error(e, &files))?;
    images.clear_failed(&body.name);
    state.ctx.standby.poke();
    view_of(state, &body.name)
}

#[utoipa::path(delete, path = "/v1/images/{name}",
    responses((status = 204), (status = 404, body = hostel_api::ApiErrorBody),
              (status = 409, body = hostel_api::ApiErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Operator(auth): Operator,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let result = delete_image(&state, &name).await;
    state
        .audit_async(&auth, None, "image.delete", &name, &result)
        .await;
    result.map(|()| StatusCode::NO_CONTENT)
}

async fn delete_image(state: &AppState, name: &str) -> ApiResult<()> {
    let images = &state.ctx.images;
    if images.is_builtin(name) {
        return Err(conflict(None, format!("{name:?} is a built-in image")));
    }
    if matches!(images.build_state(name), Some(BuildState::Building { .. })) {
        return Err(conflict(None, format!("image {name:?} is being built")));
    }
    let store = images
        .store()
        .cloned()
        .ok_or_else(|| ApiError::not_found("image", name))?;
    if !store.contains(name) {
        images.clear_failed(name);
        return Err(ApiError::not_found("image", name));
    }
    // VM disks are overlays naming the image's file: it must outlive every one of them.
    let users: Vec<String> = state
        .ctx
        .store
        .list_all_vms()?
        .into_iter()
        .filter(|v| v.spec.image() == name)
        .map(|v| v.name.to_string())
        .collect();
    if !users.is_empty() {
        return Err(conflict(
            None,
            format!(
                "image {name:?} is in use by VM(s) {} (delete them first)",
                users.join(", ")
            ),
        ));
    }
    // Standbys boot overlays of the image too; they go first.
    state.ctx.standby.forget_image(&state.ctx, name).await;
    let n = name.to_string();
    tokio::task::spawn_blocking(move || store.delete(&n))
        .await
        .map_err(joined)?
        .map_err(|e| image_error(e, &[]))?;
    images.clear_failed(name);
    Ok(())
}

/// A create's image, checked before anything is made.
pub(super) struct VmImage {
    pub name: String,
    pub os: Option<OsPlan>,
}

/// An OS-image VM: the store image to clone and the service template to configure.
pub(super) struct OsPlan {
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

    pub fn check_disk(&self, gib: u64) -> ApiResult<()> {
        let Some(os) = &self.os else { return Ok(()) };
        let minimum = os.image.manifest().disk.virtual_size;
        if gib.saturating_mul(GIB) < minimum {
            return Err(ApiError::invalid(
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
pub(super) fn resolve_for_vm(state: &AppState, body: &CreateVm) -> ApiResult<VmImage> {
    let images = &state.ctx.images;
    let template = match &body.service {
        None if !body.service_params.is_empty() => {
            return Err(ApiError::invalid(
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
            ApiError::invalid(
                "service",
                format!("unknown service {s:?} (available: {})", known.join(", ")),
            )
        })?),
    };
    let name = match (&body.image, &template) {
        (Some(i), Some(t)) if *i != t.image => {
            return Err(ApiError::invalid(
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
            return Err(ApiError::invalid(
                "service",
                format!(
                    "service {:?} needs image {name:?}, which is not built (hostel image build {name})",
                    t.name
                ),
            ));
        }
        let known: Vec<_> = images.list().into_iter().map(|i| i.name).collect();
        return Err(ApiError::invalid(
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
                return Err(ApiError::invalid(
                    field,
                    format!("needs an OS image (image {name:?} has no cloud-init)"),
                ));
            }
            Ok(VmImage { name, os: None })
        }
        ImageBoot::Os(img) => {
            // An image that cannot boot (a bare filesystem imported without a kernel).
            img.boot_input(std::path::Path::new(ROOT_DISK), None)
                .map_err(|e| ApiError::invalid("image", e.to_string()))?;
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

/// Makes an OS-image VM's disks: the CoW clone of its image and its seed. The caller removes
/// the VM (record and disk directory) if this fails.
pub(super) async fn make_vm_disks(
    state: &AppState,
    vm: &Vm,
    body: &CreateVm,
    os: &OsPlan,
) -> ApiResult<()> {
    let dir = state.ctx.layout.vm_disk_dir(&vm.tenant, &vm.id);
    let image = os.image.clone();
    let size = vm.spec.disk_gib().saturating_mul(GIB);
    let store = std::sync::Arc::clone(&state.ctx.store);
    let (vm, body, template) = (vm.clone(), body.clone(), os.template.clone());
    tokio::task::spawn_blocking(move || {
        let seed = crate::seed::config(store.as_ref(), &vm, &body, template.as_ref())?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| ApiError::internal(format!("{}: {e}", dir.display())))?;
        image
            .create_vm_disk(&dir.join(ROOT_DISK), Some(size))
            .map_err(|e| image_error(e, &[]))?;
        seed.write_disk(&dir.join(SEED_DISK)).map_err(|e| match e {
            ImageError::InvalidSeed(m) => ApiError::invalid("user_data", m),
            other => image_error(other, &[]),
        })
    })
    .await
    .map_err(joined)?
}
