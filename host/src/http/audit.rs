//! The `/audit` route: the audit log, newest first, for admins.

use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{ApiError, AppState, ErrorBody};
use crate::audit::{AuditPage, AuditQuery, Decision};

/// Query of `GET /audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditParams {
    /// `allowed` or `refused`.
    decision: Option<String>,
    /// Only this user or service account.
    principal: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    since: Option<String>,
    /// Only entries before this time (RFC 3339).
    until: Option<String>,
    /// Only entries older than this one (the previous page's `next_before`).
    before: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
}

fn time_of(field: &str, v: Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    v.filter(|t| !t.is_empty())
        .map(|t| {
            DateTime::parse_from_rfc3339(&t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ApiError::invalid(format!(
                        "{field}: {t:?} is not an RFC 3339 time such as 2026-12-01T00:00:00Z ({e})"
                    ))
                })
        })
        .transpose()
}

/// The audit log: every request that changed something and every refusal (401, 403, 429), with
/// who asked, from where, the route, the decision and its reason. Newest first.
#[utoipa::path(get, path = "/audit", params(AuditParams),
    responses((status = 200, body = AuditPage), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn list(
    State(s): State<AppState>,
    q: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let decision = q
        .decision
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<Decision>())
        .transpose()
        .map_err(|e| ApiError::invalid(format!("decision: {e}")))?;
    if let Some(b) = q.before
        && b < 1
    {
        return Err(ApiError::invalid(format!(
            "before: {b} is not an entry's sequence number (they start at 1)"
        )));
    }
    let query = AuditQuery {
        decision,
        principal: q.principal.filter(|p| !p.is_empty()),
        since: time_of("since", q.since)?,
        until: time_of("until", q.until)?,
        before: q.before,
        limit: q.limit.unwrap_or(100),
    };
    Ok(Json(s.lake.audit().page(&query).await?))
}
