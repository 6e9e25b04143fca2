//! The `/backup` routes: trigger a backup (asynchronous, a job) and follow backup jobs.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use super::{ApiError, AppState, ErrorBody};
use crate::catalog::Job;

/// Start a backup now: the catalog snapshot and every object not yet backed up. Answers at once
/// with the job; `GET /backup/jobs/{id}` follows it.
#[utoipa::path(post, path = "/backup/trigger", responses((status = 202, body = Job)))]
pub(super) async fn trigger(
    State(s): State<AppState>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(s.lake.backups().trigger().await?),
    ))
}

/// Backup jobs, newest first: status, kind, times, objects and bytes copied, errors.
#[utoipa::path(get, path = "/backup/jobs", params(super::LimitQuery), responses((status = 200, body = Vec<Job>)))]
pub(super) async fn list(
    State(s): State<AppState>,
    q: Result<Query<super::LimitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<Job>>, ApiError> {
    Ok(Json(s.lake.backups().list_jobs(super::limit_of(q)?).await?))
}

/// One backup job.
#[utoipa::path(get, path = "/backup/jobs/{id}", params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody)))]
pub(super) async fn get_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(
        s.lake
            .backups()
            .job(super::parse_uuid(&id, "backup job")?)
            .await?,
    ))
}
