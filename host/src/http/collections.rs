//! The `/collections` routes: start a collection (asynchronous, a job), list and follow jobs.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use super::{ApiError, ApiJson, AppState, ErrorBody};
use crate::catalog::Job;
use crate::collect::CollectRequest;

/// Collect from an upstream source: a `[[sources]]` name from lake.toml, or a connector with its
/// parameters. Answers at once with the job; `GET /collections/{id}` follows it.
#[utoipa::path(post, path = "/collections", request_body = CollectRequest,
    responses((status = 202, body = Job), (status = 404, body = ErrorBody, description = "No such source or connector"),
        (status = 422, body = ErrorBody)))]
pub(super) async fn start(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<CollectRequest>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(s.lake.collections().submit(req).await?),
    ))
}

/// Collection jobs, newest first.
#[utoipa::path(get, path = "/collections", params(super::LimitQuery), responses((status = 200, body = Vec<Job>)))]
pub(super) async fn list(
    State(s): State<AppState>,
    q: Result<Query<super::LimitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<Job>>, ApiError> {
    Ok(Json(s.lake.collections().list(super::limit_of(q)?).await?))
}

/// One collection job: its status, and once finished the dataset, files, requests and parses.
#[utoipa::path(get, path = "/collections/{id}", params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody)))]
pub(super) async fn get_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(
        s.lake
            .collections()
            .get(super::parse_uuid(&id, "collection")?)
            .await?,
    ))
}
