//! `/admin/fsck`: the integrity check over HTTP, for admins, streamed as it runs.
//!
//! `GET /admin/fsck` checks; `POST /admin/fsck/repair` checks and repairs what is safe (recorded
//! in provenance, the request in the audit log). Both answer `application/x-ndjson`: one line per
//! problem the moment it is found, then one `{"summary": ...}` line (or `{"error": ...}` when the
//! catalog or the store stopped answering part-way). A check of a large lake takes minutes; the
//! lines arrive as it goes, and nothing of the whole lake is held for the answer.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use super::{ApiError, AppState, ErrorBody};
use crate::fsck::{Finding, FsckOptions};
use crate::lake::Lake;

/// The longest grace period accepted: a week.
const MAX_GRACE_SECS: u64 = 7 * 24 * 3600;

/// Query of `GET /admin/fsck`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct FsckParams {
    /// Hash every ready object and compare it with its recorded SHA-256 (reads every byte).
    verify: Option<bool>,
    /// Seconds before an uncataloged object, a claim or a pending promotion counts as abandoned
    /// rather than in flight (default 3600, at most a week).
    grace_secs: Option<u64>,
}

/// Body of `POST /admin/fsck/repair`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RepairBody {
    /// As for `GET /admin/fsck`.
    #[serde(default)]
    verify: bool,
    /// As for `GET /admin/fsck`.
    grace_secs: Option<u64>,
}

fn options(verify: bool, grace_secs: Option<u64>, repair: bool) -> Result<FsckOptions, ApiError> {
    let grace = match grace_secs {
        Some(s) if s > MAX_GRACE_SECS => {
            return Err(ApiError::invalid(format!(
                "grace_secs: {s} is more than a week ({MAX_GRACE_SECS})"
            )));
        }
        Some(s) => Duration::from_secs(s),
        None => FsckOptions::default().grace,
    };
    Ok(FsckOptions {
        verify,
        repair,
        grace,
    })
}

/// Checks the catalog against the store: every ready file has its object of the recorded size
/// (and SHA-256 with `verify`), every object has its row, no claim, pending promotion or job is
/// past its lease, provenance names only datasets that exist. Streams one JSON line per problem,
/// then a `summary` line.
#[utoipa::path(get, path = "/admin/fsck", params(FsckParams),
    responses((status = 200, description = "NDJSON: one Finding per line, then {\"summary\": FsckSummary}", content_type = "application/x-ndjson", body = Finding),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn check(
    State(s): State<AppState>,
    q: Result<Query<FsckParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let opts = options(q.verify.unwrap_or(false), q.grace_secs, false)?;
    Ok(stream(s.lake.clone(), opts))
}

/// The check of `GET /admin/fsck`, repairing what is safe as it goes: uncataloged objects past the
/// grace period and a deleted dataset's leftovers are deleted, stale claims dropped, stopped
/// promotions resumed, abandoned jobs failed, each recorded as a `repair` provenance entry.
/// Missing or altered objects are only reported.
#[utoipa::path(post, path = "/admin/fsck/repair", request_body = RepairBody,
    responses((status = 200, description = "NDJSON, as GET /admin/fsck, each line saying what was repaired", content_type = "application/x-ndjson", body = Finding),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn repair(
    State(s): State<AppState>,
    body: Result<Json<RepairBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) = body.map_err(|e| ApiError::invalid(e.body_text()))?;
    let opts = options(b.verify, b.grace_secs, true)?;
    Ok(stream(s.lake.clone(), opts))
}

/// Runs the check on a task of its own (it finishes, repairs recorded, even if the client goes
/// away) and streams its findings as lines.
fn stream(lake: Lake, opts: FsckOptions) -> Response {
    let (tx, rx) = mpsc::channel::<Finding>(64);
    let (done_tx, done_rx) = oneshot::channel();
    let actor = crate::provenance::current_actor();
    tokio::spawn(crate::provenance::acting_as(actor, async move {
        let result = lake.fsck().run(&opts, &tx).await;
        drop(tx);
        let _ = done_tx.send(result);
    }));
    let mut rx = rx;
    let findings = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(|f| line(&f));
    let end = futures::stream::once(async move {
        match done_rx.await {
            Ok(Ok(summary)) => line(&serde_json::json!({ "summary": summary })),
            Ok(Err(e)) => line(&serde_json::json!({ "error": e.to_string() })),
            Err(_) => line(&serde_json::json!({ "error": "the check stopped" })),
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(findings.chain(end)),
    )
        .into_response()
}

fn line(v: &impl serde::Serialize) -> Result<bytes::Bytes, std::io::Error> {
    let mut out = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    out.push(b'\n');
    Ok(out.into())
}
