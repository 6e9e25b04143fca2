//! The Iceberg REST catalog under `/iceberg` (catalog URI `http://host:port/iceberg`), read-only,
//! as `rest-catalog-open-api.yaml` of apache/iceberg describes it: the config (advertising exactly
//! the endpoints below), namespaces (the layers), tables (`lake.iceberg()`), and scan metrics
//! reports, which are accepted and logged. Errors take the spec's `IcebergErrorResponse` shape
//! (`{"error": {"message", "type", "code"}}`), so engines raise their own exceptions
//! (`NoSuchTableException`); authentication and rights are the JSON API's (bearer tokens, the
//! spec's security scheme), and a role that does not see raw data does not see the `raw`
//! namespace.

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::auth::Caller;
use crate::lake::LakeError;

/// The endpoints this catalog serves, as `GET /v1/config` lists them.
const ENDPOINTS: &[&str] = &[
    "GET /v1/{prefix}/namespaces",
    "GET /v1/{prefix}/namespaces/{namespace}",
    "HEAD /v1/{prefix}/namespaces/{namespace}",
    "GET /v1/{prefix}/namespaces/{namespace}/tables",
    "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "HEAD /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}/metrics",
];

/// An error in the Iceberg REST spec's shape.
#[derive(Debug)]
pub struct IcebergError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl IcebergError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequestException", message)
    }

    /// A lake error, `missing` naming what was not found (`NoSuchTableException`).
    fn of(e: LakeError, missing: &'static str) -> Self {
        match e {
            LakeError::NotFound(m) => Self::new(StatusCode::NOT_FOUND, missing, m),
            LakeError::Invalid(m) => Self::bad_request(m),
            LakeError::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, "ForbiddenException", m),
            LakeError::Unavailable(m) => {
                tracing::error!(error = %m, "iceberg catalog");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailableException",
                    "the catalog or the store is unavailable; try again",
                )
            }
            other => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServerErrorException",
                other.to_string(),
            ),
        }
    }
}

impl IntoResponse for IcebergError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "code": self.status.as_u16(),
        }});
        (self.status, Json(body)).into_response()
    }
}

/// Paging of the list routes (the spec's names).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default)]
pub(super) struct PageQuery {
    /// Where the previous page ended.
    #[serde(rename = "pageToken")]
    page_token: Option<String>,
    /// Items per page (at most 1000; 100 when not given).
    #[serde(rename = "pageSize")]
    page_size: Option<String>,
    /// The parent namespace (namespaces are one level: only none is valid).
    parent: Option<String>,
}

fn page_size(q: &PageQuery) -> Result<u32, IcebergError> {
    match q.page_size.as_deref() {
        None | Some("") => Ok(100),
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                IcebergError::bad_request(format!(
                    "pageSize {s:?} must be a whole number from 1 to 1000"
                ))
            }),
    }
}

/// The catalog's configuration: no defaults or overrides of the client's own, and the
/// endpoints served.
#[utoipa::path(get, path = "/iceberg/v1/config", tag = "iceberg",
    responses((status = 200, description = "The Iceberg catalog's configuration and endpoints")))]
pub(super) async fn config() -> Json<Value> {
    Json(json!({"defaults": {}, "overrides": {}, "endpoints": ENDPOINTS}))
}

/// The namespaces: the layers the caller sees.
#[utoipa::path(get, path = "/iceberg/v1/namespaces", tag = "iceberg", params(PageQuery),
    responses((status = 200, description = "The layers, as one-level namespaces")))]
pub(super) async fn namespaces(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, IcebergError> {
    let Query(q) = q.map_err(|e| IcebergError::bad_request(e.body_text()))?;
    page_size(&q)?;
    if let Some(parent) = q.parent.as_deref().filter(|p| !p.is_empty()) {
        // Layers have no namespaces under them.
        s.lake
            .iceberg()
            .namespace(parent, caller.visibility())
            .map_err(|e| IcebergError::of(e, "NoSuchNamespaceException"))?;
        return Ok(Json(json!({"namespaces": []})));
    }
    let names: Vec<Value> = s
        .lake
        .iceberg()
        .namespaces(caller.visibility())
        .iter()
        .map(|l| json!([l.as_str()]))
        .collect();
    Ok(Json(json!({"namespaces": names})))
}

/// One namespace (layer) and its properties.
#[utoipa::path(get, path = "/iceberg/v1/namespaces/{namespace}", tag = "iceberg",
    params(("namespace" = String, Path, description = "A layer: raw, processed, curated, archive")),
    responses((status = 200, description = "The namespace"), (status = 404, description = "No such namespace")))]
pub(super) async fn namespace(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(ns): Path<String>,
) -> Result<Json<Value>, IcebergError> {
    let layer = s
        .lake
        .iceberg()
        .namespace(&ns, caller.visibility())
        .map_err(|e| IcebergError::of(e, "NoSuchNamespaceException"))?;
    Ok(Json(json!({
        "namespace": [layer.as_str()],
        "properties": {"comment": format!("the lake's {layer} layer"), "read-only": "true"},
    })))
}

/// Whether a namespace exists: 204 or 404, no body.
#[utoipa::path(head, path = "/iceberg/v1/namespaces/{namespace}", tag = "iceberg",
    params(("namespace" = String, Path, description = "A layer")),
    responses((status = 204, description = "It exists"), (status = 404, description = "It does not")))]
pub(super) async fn namespace_exists(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(ns): Path<String>,
) -> StatusCode {
    match s.lake.iceberg().namespace(&ns, caller.visibility()) {
        Ok(_) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::NOT_FOUND,
    }
}

/// A namespace's tables, in name order, a page at a time.
#[utoipa::path(get, path = "/iceberg/v1/namespaces/{namespace}/tables", tag = "iceberg",
    params(("namespace" = String, Path, description = "A layer"), PageQuery),
    responses((status = 200, description = "Table identifiers and the next page's token"),
        (status = 404, description = "No such namespace")))]
pub(super) async fn tables(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(ns): Path<String>,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, IcebergError> {
    let Query(q) = q.map_err(|e| IcebergError::bad_request(e.body_text()))?;
    let size = page_size(&q)?;
    let iceberg = s.lake.iceberg();
    let layer = iceberg
        .namespace(&ns, caller.visibility())
        .map_err(|e| IcebergError::of(e, "NoSuchNamespaceException"))?;
    let page = iceberg
        .tables(layer, q.page_token.as_deref(), size)
        .await
        .map_err(|e| IcebergError::of(e, "NoSuchNamespaceException"))?;
    let identifiers: Vec<Value> = page
        .names
        .iter()
        .map(|n| json!({"namespace": [layer.as_str()], "name": n}))
        .collect();
    let mut body = json!({"identifiers": identifiers});
    if let Some(next) = page.next {
        body["next-page-token"] = next.into();
    }
    Ok(Json(body))
}

/// Query of `LoadTable`.
#[derive(Debug, Default, Deserialize, Serialize, utoipa::IntoParams)]
#[serde(default)]
pub(super) struct LoadQuery {
    /// `all` (default) or `refs`: every snapshot is a tagged version, so both are every snapshot.
    snapshots: Option<String>,
}

/// Loads a table: its metadata (each version a snapshot, tagged `version-N`), where that
/// metadata is stored, and what an engine needs to read the files.
#[utoipa::path(get, path = "/iceberg/v1/namespaces/{namespace}/tables/{table}", tag = "iceberg",
    params(("namespace" = String, Path, description = "A layer"), ("table" = String, Path, description = "A table name"), LoadQuery),
    responses((status = 200, description = "LoadTableResult: metadata-location, metadata, config"),
        (status = 404, description = "No such table or namespace")))]
pub(super) async fn load_table(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((ns, table)): Path<(String, String)>,
    q: Result<Query<LoadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, IcebergError> {
    let Query(q) = q.map_err(|e| IcebergError::bad_request(e.body_text()))?;
    if let Some(mode) = q.snapshots.as_deref()
        && !matches!(mode, "all" | "refs")
    {
        return Err(IcebergError::bad_request(format!(
            "snapshots {mode:?} must be all or refs"
        )));
    }
    let iceberg = s.lake.iceberg();
    let layer = iceberg
        .namespace(&ns, caller.visibility())
        .map_err(|e| IcebergError::of(e, "NoSuchNamespaceException"))?;
    let loaded = iceberg
        .load(layer, &table)
        .await
        .map_err(|e| IcebergError::of(e, "NoSuchTableException"))?;
    Ok(Json(json!({
        "metadata-location": loaded.metadata_location,
        "metadata": loaded.metadata,
        "config": loaded.config,
    })))
}

/// Whether a table exists: 204 or 404, no body.
#[utoipa::path(head, path = "/iceberg/v1/namespaces/{namespace}/tables/{table}", tag = "iceberg",
    params(("namespace" = String, Path, description = "A layer"), ("table" = String, Path, description = "A table name")),
    responses((status = 204, description = "It exists"), (status = 404, description = "It does not")))]
pub(super) async fn table_exists(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((ns, table)): Path<(String, String)>,
) -> Result<StatusCode, IcebergError> {
    let iceberg = s.lake.iceberg();
    let Ok(layer) = iceberg.namespace(&ns, caller.visibility()) else {
        return Ok(StatusCode::NOT_FOUND);
    };
    match iceberg.exists(layer, &table).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Ok(StatusCode::NOT_FOUND),
        Err(e) => Err(IcebergError::of(e, "NoSuchTableException")),
    }
}

/// Takes an engine's scan report (`ReportMetricsRequest`): logged, not stored.
#[utoipa::path(post, path = "/iceberg/v1/namespaces/{namespace}/tables/{table}/metrics", tag = "iceberg",
    params(("namespace" = String, Path, description = "A layer"), ("table" = String, Path, description = "A table name")),
    responses((status = 204, description = "Received"), (status = 400, description = "Not a metrics report"),
        (status = 404, description = "No such table")))]
pub(super) async fn report_metrics(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((ns, table)): Path<(String, String)>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, IcebergError> {
    let Json(report) = body.map_err(|e| IcebergError::bad_request(e.body_text()))?;
    let Some(kind) = report.get("report-type").and_then(Value::as_str) else {
        return Err(IcebergError::bad_request(
            "a metrics report needs report-type (scan-report or commit-report)",
        ));
    };
    let iceberg = s.lake.iceberg();
    let layer = iceberg
        .namespace(&ns, caller.visibility())
        .map_err(|e| IcebergError::of(e, "NoSuchNamespaceException"))?;
    if !iceberg
        .exists(layer, &table)
        .await
        .map_err(|e| IcebergError::of(e, "NoSuchTableException"))?
    {
        return Err(IcebergError::new(
            StatusCode::NOT_FOUND,
            "NoSuchTableException",
            format!("no table {table:?} in namespace {layer}"),
        ));
    }
    tracing::info!(
        table = %format!("{layer}.{table}"),
        report_type = kind,
        snapshot_id = report.get("snapshot-id").and_then(serde_json::Value::as_i64),
        metrics = %report.get("metrics").unwrap_or(&serde_json::Value::Null),
        "iceberg scan metrics"
    );
    Ok(StatusCode::NO_CONTENT)
}
