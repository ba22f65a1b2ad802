//! Image routes: listing, building from the catalog (in the background, with progress),
//! importing a host file, deleting one no VM uses. The operations are
//! [`crate::service::images`]'s; this file parses, calls and maps to views.

use super::ApiPath;
use super::{ApiJson, AppState, Auth, Operator};
use crate::error::{ApiError, ApiResult};
use crate::images::{BuildState, Image, ImageBoot};
use crate::service::images::Images;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hostel_api::{BuildImage, ImageView, ImportImage};
use hostel_images::Origin;
use std::time::Duration;

/// How long a build request waits before answering 202: a cached build is done by then.
const BUILD_ANSWER_WAIT: Duration = Duration::from_secs(2);

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
    let images = Images::new(&state.ctx);
    let entry = hostel_state::NewAuditEntry::ok(auth.actor, None, "image.build", &name);
    let started = images.start_build(&name, entry).map_err(ApiError::from);
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
    images.build_outcome(&name)?;
    Ok((StatusCode::OK, Json(view_of(&state, &name)?)))
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
    let result = match Images::new(&state.ctx).import(&body).await {
        Ok(()) => view_of(&state, &body.name),
        Err(e) => Err(e.into()),
    };
    state
        .audit_async(&auth, None, "image.import", &body.name, &result)
        .await;
    Ok((StatusCode::CREATED, Json(result?)))
}

#[utoipa::path(delete, path = "/v1/images/{name}",
    responses((status = 204), (status = 404, body = hostel_api::ApiErrorBody),
              (status = 409, body = hostel_api::ApiErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Operator(auth): Operator,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let result = Images::new(&state.ctx)
        .delete(&name)
        .await
        .map_err(ApiError::from);
    state
        .audit_async(&auth, None, "image.delete", &name, &result)
        .await;
    result.map(|()| StatusCode::NO_CONTENT)
}
