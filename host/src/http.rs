//! The HTTP API (axum).
//!
//! Handlers parse and validate the request, call one operation of the [`Lake`] or one of its services and shape the answer; they
//! never touch a database driver or a blob client. Every failure leaves as one JSON shape,
//! `{"error": {"code", "message"}}`, with the status chosen in one table ([`ApiError`]). Internal
//! errors are logged once with their detail and answered with a generic message.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Extension, FromRequest, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures::TryStreamExt;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::{OpenApi, ToSchema};

use crate::catalog::{Dataset, DatasetId, DatasetStatus, FileRecord, Page, SearchQuery, Stats};
use crate::identity::{Right, Visibility};
use crate::lake::{Download, Lake, LakeError, LayerSummary, Lineage, RegisterRequest};
use crate::layers::Layer;
use crate::pipeline::{Run, RunOutcome, RunRequest};
use crate::plugins::{Limits, LoadState, Manifest, Plugins, Rejected};
use crate::promotion::PromoteRequest;
use crate::provenance::{Direction, LineageGraph};

mod audit;
mod auth;
mod backup;
mod collections;
mod docs;
mod files;
mod fsck;
mod iceberg;
mod identity;

pub use auth::Caller;
pub(crate) use auth::{refuse_sign_in, sign_in};
pub(crate) use files::{merge_spec, receive as receive_upload};

/// Shared state of the HTTP server.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The lake service.
    pub lake: Lake,
    /// Renders `/metrics`; `None` when no recorder is installed (tests).
    pub metrics: Option<PrometheusHandle>,
    /// How often a token may ask, and an address fail to authenticate.
    guard: std::sync::Arc<auth::Guard>,
    /// Uploads received at once.
    uploads: std::sync::Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// The state of a server over `lake`, its limits from the configuration the lake was opened
    /// with.
    pub fn new(lake: Lake, metrics: Option<PrometheusHandle>) -> Self {
        let access = &lake.settings().access;
        let guard = std::sync::Arc::new(auth::Guard::new(&access.auth));
        let uploads = std::sync::Arc::new(tokio::sync::Semaphore::new(
            access.max_concurrent_uploads as usize,
        ));
        Self {
            lake,
            metrics,
            guard,
            uploads,
        }
    }
}

/// The JSON error every route answers with.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    run_id: Option<uuid::Uuid>,
    refused: Option<Right>,
}

/// What an error response said, kept on the response for the audit log.
#[derive(Debug, Clone)]
pub struct ErrorNote {
    /// The message.
    pub message: String,
    /// The right refused, when the error is a refusal.
    pub refused: Option<Right>,
}

#[derive(Serialize, ToSchema)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_request`.
    code: String,
    /// What went wrong, for people.
    message: String,
    /// For a failed pipeline run: the recorded run (`GET /pipelines/runs/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    run_id: Option<uuid::Uuid>,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            run_id: None,
            refused: None,
        }
    }

    /// The same error, noting for the audit log that it refuses `right`.
    pub fn refusing(self, right: Right) -> Self {
        Self {
            refused: Some(right),
            ..self
        }
    }
    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }
}

impl From<LakeError> for ApiError {
    fn from(e: LakeError) -> Self {
        match e {
            LakeError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            LakeError::Invalid(m) => ApiError::invalid(m),
            LakeError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            LakeError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            LakeError::TooLarge(m) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", m)
            }
            LakeError::BadBody(m) => ApiError::new(StatusCode::BAD_REQUEST, "bad_body", m),
            LakeError::Unavailable(detail) => {
                // Logged once here with its detail; the client learns only that it may retry.
                tracing::error!(error = %detail, "Backing service failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "a storage or catalog service is unavailable; retry later",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let note = ErrorNote {
            message: self.message.clone(),
            refused: self.refused,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                run_id: self.run_id,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        resp.extensions_mut().insert(note);
        resp
    }
}

/// `Json` whose rejections use the API's error shape.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(r: axum::extract::rejection::JsonRejection) -> Self {
        use axum::extract::rejection::JsonRejection as J;
        match r {
            J::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ),
            J::JsonSyntaxError(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", r.body_text())
            }
            J::BytesRejection(_) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                r.body_text(),
            ),
            _ => ApiError::invalid(r.body_text()),
        }
    }
}

/// The furthest `offset` a page may start at: beyond it the cursor pages (an offset makes the
/// database read and drop every row before it).
pub(crate) const MAX_OFFSET: u64 = 1_000_000;

/// A page's `offset`, at most [`MAX_OFFSET`].
pub(crate) fn offset_of(offset: Option<u64>) -> Result<u64, ApiError> {
    match offset.unwrap_or(0) {
        n if n <= MAX_OFFSET => Ok(n),
        n => Err(ApiError::invalid(format!(
            "offset: {n} is past {MAX_OFFSET}; page further with the cursor (next_cursor)"
        ))),
    }
}

/// A dataset id from a path; a malformed one is as not found as an unknown one.
pub(crate) fn parse_id(s: &str) -> Result<DatasetId, ApiError> {
    s.parse().map_err(|e: String| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no dataset {s:?}: {e}"),
        )
    })
}

/// Builds the router over a lake.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi_json))
        .route("/catalog", get(list_catalog).post(create_dataset))
        .route("/catalog/stats", get(catalog_stats))
        .route("/catalog/{id}", get(get_dataset).delete(delete_dataset))
        .route("/catalog/{id}/files", get(list_files))
        .route(
            "/catalog/{id}/files/{filename}",
            put(upload_file).layer(middleware::from_fn_with_state(
                state.clone(),
                one_of_the_uploads,
            )),
        )
        .route("/catalog/{id}/download/{filename}", get(download))
        .route("/layers", get(layers))
        .route("/layers/promote", post(promote))
        .route("/provenance/{id}", get(provenance))
        .route("/provenance/{id}/graph", get(graph))
        .route("/provenance/{id}/prov", get(prov))
        .route("/provenance/{id}/ro-crate", get(ro_crate))
        .route("/api/v1/lineage", post(lineage_event))
        .route("/iceberg/v1/config", get(iceberg::config))
        .route("/iceberg/v1/namespaces", get(iceberg::namespaces))
        .route(
            "/iceberg/v1/namespaces/{namespace}",
            get(iceberg::namespace).head(iceberg::namespace_exists),
        )
        .route(
            "/iceberg/v1/namespaces/{namespace}/tables",
            get(iceberg::tables),
        )
        .route(
            "/iceberg/v1/namespaces/{namespace}/tables/{table}",
            get(iceberg::load_table).head(iceberg::table_exists),
        )
        .route(
            "/iceberg/v1/namespaces/{namespace}/tables/{table}/metrics",
            post(iceberg::report_metrics),
        )
        .route("/plugins", get(list_plugins))
        .route("/plugins/{name}", get(get_plugin))
        .route("/pipelines/run", post(run_pipeline))
        .route("/pipelines/runs", get(list_runs))
        .route("/pipelines/runs/{id}", get(get_run))
        .route(
            "/files/upload",
            post(files::upload)
                .layer(axum::extract::DefaultBodyLimit::disable())
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    one_of_the_uploads,
                )),
        )
        .route("/backup/trigger", post(backup::trigger))
        .route("/backup/jobs", get(backup::list))
        .route("/backup/jobs/{id}", get(backup::get_one))
        .route(
            "/collections",
            get(collections::list).post(collections::start),
        )
        .route("/collections/{id}", get(collections::get_one))
        .route("/files", get(files::list))
        .route("/files/merge", get(files::merge))
        .route("/files/save_merged", post(files::save_merged))
        .route("/files/{id}", get(files::get_one))
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/docs", get(docs::page))
        .route("/docs/docs.css", get(docs::stylesheet))
        .route("/audit", get(audit::list))
        .route("/admin/fsck", get(fsck::check))
        .route("/admin/fsck/repair", post(fsck::repair))
        .route(
            "/tokens",
            get(identity::list_tokens).post(identity::create_token),
        )
        .route(
            "/tokens/{id}",
            axum::routing::delete(identity::revoke_token),
        )
        .route("/users", get(identity::list_users).post(identity::add_user))
        .route("/users/{name}/disable", post(identity::disable_user))
        .merge(crate::ui::router(state.clone()))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route; see /docs",
            )
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::ui::html_errors,
        ))
        .layer(middleware::from_fn(track_metrics))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        // Every response: no sniffing, no framing, no referrer; a page with its own policy (the
        // docs) keeps it, and JSON answers may load nothing at all.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        ))
        .layer(cors(&state.lake.settings().access.cors_origins))
        .with_state(state)
}

/// Not found (404, exactly as a dataset that does not exist) when the caller may not see dataset
/// `id`. Only a caller who may not see every layer costs a look at the dataset's.
async fn visible(s: &AppState, caller: &auth::Caller, id: DatasetId) -> Result<(), ApiError> {
    if caller.visibility() != Visibility::ALL {
        caller.reveal(s.lake.get_dataset(id).await?)?;
    }
    Ok(())
}

/// Lets an upload in while fewer than `[server] max_concurrent_uploads` are being received; 429
/// with Retry-After otherwise.
pub(crate) async fn one_of_the_uploads(
    State(s): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Ok(permit) = s.uploads.clone().try_acquire_owned() else {
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            format!(
                "{} uploads are being received already; retry after 5 s",
                s.lake.settings().access.max_concurrent_uploads
            ),
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        // A client waiting for `100 Continue` has sent no body and will send none.
        if !req.headers().contains_key(header::EXPECT) {
            drain(req).await;
        }
        return r;
    };
    let resp = next.run(req).await;
    drop(permit);
    resp
}

/// Bytes of a refused request's body read and dropped before answering.
const DRAIN_MAX: usize = 64 << 20;

/// Reads and drops what a refused request is still sending (up to [`DRAIN_MAX`], while it keeps
/// coming): a client busy writing its body reads the answer only once the body is sent, and a
/// server that answered and closed without reading would reset its connection instead.
async fn drain(req: Request) {
    use futures::StreamExt;
    let mut body = req.into_body().into_data_stream();
    let mut left = DRAIN_MAX;
    while let Ok(Some(Ok(chunk))) =
        tokio::time::timeout(std::time::Duration::from_secs(5), body.next()).await
    {
        left = left.saturating_sub(chunk.len());
        if left == 0 {
            break;
        }
    }
}

/// Browsers may call the API from the origins `[server] cors_origins` lists, and from no other.
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed))
        .allow_methods([
            axum::http::Method::GET,
            axum::http::Method::HEAD,
            axum::http::Method::POST,
            axum::http::Method::PUT,
            axum::http::Method::DELETE,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([axum::http::HeaderName::from_static("x-request-id")])
        .max_age(std::time::Duration::from_secs(600))
}

async fn track_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = req.method().to_string();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("lake_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("lake_http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    resp
}

#[derive(Serialize, ToSchema)]
struct Health {
    status: &'static str,
    catalog: &'static str,
    storage: &'static str,
}

/// Liveness and catalog reachability.
#[utoipa::path(get, path = "/health", responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
async fn health(State(s): State<AppState>) -> Result<Json<Health>, ApiError> {
    s.lake.ready().await?;
    Ok(Json(Health {
        status: "ok",
        catalog: s.lake.catalog().kind(),
        storage: s.lake.blobs().kind(),
    }))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
async fn metrics_text(State(s): State<AppState>) -> Response {
    let body = s
        .metrics
        .as_ref()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Query of `GET /catalog`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct CatalogQuery {
    /// Only this layer.
    layer: Option<String>,
    /// Only this source.
    source: Option<String>,
    /// Free text over name, external id and metadata.
    q: Option<String>,
    /// Comma-separated tags; datasets must carry all of them.
    tags: Option<String>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Results to skip (seed-style; prefer `cursor`).
    offset: Option<u64>,
    /// Seed alias of `offset`.
    skip: Option<u64>,
    /// `ready` (default), `deleted`, `pending` or `failed`.
    status: Option<String>,
    /// Only datasets with this exact upstream accession.
    external_id: Option<String>,
    /// Only datasets holding a file with this SHA-256 (hex).
    sha256: Option<String>,
    /// Only datasets created at or after this time (RFC 3339, or a day `2026-12-01`, UTC).
    created_after: Option<String>,
    /// Only datasets created before this time (RFC 3339, or a day, UTC).
    created_before: Option<String>,
}

/// A time as a query gives it: RFC 3339 (`2026-12-01T08:00:00Z`) or a day (`2026-12-01`, its
/// start in UTC).
pub(crate) fn parse_time(field: &str, v: &str) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    let v = v.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "{field}: {v:?} is not a time (2026-12-01T08:00:00Z) or a day (2026-12-01)"
            ))
        })
}

/// The `after` id of a `cursor` parameter (`next_cursor` of an earlier page).
fn parse_cursor(cursor: Option<&str>) -> Result<Option<DatasetId>, ApiError> {
    cursor
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse::<DatasetId>().map_err(|_| {
                ApiError::invalid(format!("cursor {c:?} is not a cursor from a previous page"))
            })
        })
        .transpose()
}

/// Search the catalog.
#[utoipa::path(get, path = "/catalog", params(CatalogQuery),
    responses((status = 200, body = inline(Page<Dataset>)), (status = 422, body = ErrorBody)))]
async fn list_catalog(
    State(s): State<AppState>,
    Extension(caller): Extension<auth::Caller>,
    q: Result<Query<CatalogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<Dataset>>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let layer = q
        .layer
        .as_deref()
        .filter(|l| !l.is_empty())
        .map(str::parse::<Layer>)
        .transpose()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit: must be between 1 and 500"));
    }
    let after = parse_cursor(q.cursor.as_deref())?;
    let status = match q.status.as_deref() {
        None | Some("") => DatasetStatus::Ready,
        Some(s) => s.parse().map_err(ApiError::invalid)?,
    };
    let query = SearchQuery {
        layer,
        hidden_layers: caller.visibility().hidden_layers(),
        source: q.source.filter(|s| !s.is_empty()),
        q: q.q,
        tags: q
            .tags
            .map(|t| {
                t.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        status,
        limit,
        after,
        offset: offset_of(q.offset.or(q.skip))?,
        external_id: q.external_id.filter(|s| !s.is_empty()),
        sha256: q.sha256.filter(|s| !s.is_empty()),
        created_after: q
            .created_after
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|v| parse_time("created_after", v))
            .transpose()?,
        created_before: q
            .created_before
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|v| parse_time("created_before", v))
            .transpose()?,
    };
    Ok(Json(s.lake.search(&query).await?))
}

/// Body of `POST /catalog`: the seed's and the collector's shapes both fit.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateDataset {
    /// Human name.
    name: String,
    /// Source (`geo`, `uniprot`, `upload`, ...).
    source: String,
    /// Upstream identifier.
    external_id: Option<String>,
    /// Layer (default `raw`).
    layer: Option<String>,
    /// Seed field: the bucket holding the objects: the layer's bucket, by its configured name or
    /// by the layer's name (`raw`).
    minio_bucket: Option<String>,
    /// Seed field: a key prefix in the layer's bucket; what is there is registered, and an empty
    /// prefix gives an empty dataset to upload into.
    minio_prefix: Option<String>,
    /// Existing objects to register, which must exist (422 otherwise): `{bucket}/{key}`,
    /// `s3://{bucket}/{key}` or a bare key, naming one object or a prefix.
    object_path: Option<String>,
    /// Free-form metadata (a JSON object); `metadata_` is the seed's spelling.
    #[serde(alias = "metadata_")]
    #[schema(value_type = Object)]
    metadata: Option<serde_json::Value>,
    /// Tags.
    tags: Option<Vec<String>>,
}

/// Register a dataset (and any objects already at its path).
#[utoipa::path(post, path = "/catalog", request_body = CreateDataset,
    responses((status = 201, body = Dataset), (status = 422, body = ErrorBody)))]
async fn create_dataset(
    State(s): State<AppState>,
    ApiJson(body): ApiJson<CreateDataset>,
) -> Result<(StatusCode, Json<Dataset>), ApiError> {
    let layer = match body.layer.as_deref() {
        None | Some("") => Layer::Raw,
        Some(l) => l
            .parse()
            .map_err(|e: crate::layers::UnknownLayer| ApiError::invalid(e.to_string()))?,
    };
    let req = RegisterRequest {
        name: body.name,
        source: body.source,
        external_id: body.external_id,
        layer,
        bucket: body.minio_bucket,
        object_path: body.object_path,
        prefix: body.minio_prefix,
        metadata: body.metadata.unwrap_or(serde_json::Value::Null),
        tags: body.tags.unwrap_or_default(),
        action: None,
    };
    let d = s.lake.register(req).await?;
    Ok((StatusCode::CREATED, Json(d)))
}

/// Datasets and bytes per layer and per source.
#[utoipa::path(get, path = "/catalog/stats", responses((status = 200, body = Stats)))]
async fn catalog_stats(State(s): State<AppState>) -> Result<Json<Stats>, ApiError> {
    Ok(Json(s.lake.stats().await?))
}

/// One dataset.
#[utoipa::path(get, path = "/catalog/{id}", params(("id" = String, Path, description = "Dataset id")),
    responses((status = 200, body = Dataset), (status = 404, body = ErrorBody)))]
async fn get_dataset(
    State(s): State<AppState>,
    Extension(caller): Extension<auth::Caller>,
    Path(id): Path<String>,
) -> Result<Json<Dataset>, ApiError> {
    Ok(Json(
        caller.reveal(s.lake.get_dataset(parse_id(&id)?).await?)?,
    ))
}

#[derive(Serialize, ToSchema)]
struct Deleted {
    #[schema(value_type = String, format = Uuid)]
    id: DatasetId,
    deleted: bool,
}

/// Query of `DELETE /catalog/{id}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DeleteQuery {
    /// Why the dataset goes (required; kept in provenance).
    reason: Option<String>,
}

/// Delete a non-raw dataset, for a reason (refused for raw, for everyone).
#[utoipa::path(delete, path = "/catalog/{id}", params(("id" = String, Path, description = "Dataset id"), DeleteQuery),
    responses((status = 200, body = Deleted), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn delete_dataset(
    State(s): State<AppState>,
    Extension(caller): Extension<auth::Caller>,
    Path(id): Path<String>,
    q: Result<Query<DeleteQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Deleted>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let id = parse_id(&id)?;
    visible(&s, &caller, id).await?;
    s.lake.delete(id, q.reason.as_deref()).await?;
    Ok(Json(Deleted { id, deleted: true }))
}

/// A dataset's files with size and SHA-256.
#[utoipa::path(get, path = "/catalog/{id}/files", params(("id" = String, Path, description = "Dataset id")),
    responses((status = 200, body = Vec<FileRecord>), (status = 404, body = ErrorBody)))]
async fn list_files(
    State(s): State<AppState>,
    Extension(caller): Extension<auth::Caller>,
    Path(id): Path<String>,
) -> Result<Json<Vec<FileRecord>>, ApiError> {
    let id = parse_id(&id)?;
    visible(&s, &caller, id).await?;
    Ok(Json(s.lake.dataset_files(id).await?))
}

/// Stream a new file into a dataset (the body is the file's bytes).
#[utoipa::path(put, path = "/catalog/{id}/files/{filename}",
    params(("id" = String, Path, description = "Dataset id"), ("filename" = String, Path, description = "File name")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = Dataset), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn upload_file(
    State(s): State<AppState>,
    Path((id, filename)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Dataset>), ApiError> {
    let id = parse_id(&id)?;
    let limit = s.lake.settings().max_upload_bytes;
    // Refuse a declared oversize body before reading any of it.
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit
    {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the upload is {len} bytes; this lake accepts at most {limit}"),
        ));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|c| *c != "application/x-www-form-urlencoded");
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    // A client that goes quiet mid-body is cut off, so its name's claim and temp file go too.
    let body = crate::blob::idle_limited(Box::pin(stream), s.lake.settings().body_idle);
    let d = s.lake.put_file(id, &filename, content_type, body).await?;
    Ok((StatusCode::CREATED, Json(d)))
}

/// Download a file: a redirect to a presigned URL on S3, the bytes on the local store.
#[utoipa::path(get, path = "/catalog/{id}/download/{filename}",
    params(("id" = String, Path, description = "Dataset id"), ("filename" = String, Path, description = "File name")),
    responses((status = 200, description = "The file's bytes"), (status = 307, description = "Redirect to a presigned URL"), (status = 404, body = ErrorBody)))]
async fn download(
    State(s): State<AppState>,
    Extension(caller): Extension<auth::Caller>,
    Path((id, filename)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    visible(&s, &caller, id).await?;
    download_response(&s, id, &filename).await
}

/// A file of a dataset the caller may see, as the answer to a download: a redirect to a
/// presigned URL on S3, the bytes on the local store.
pub(crate) async fn download_response(
    s: &AppState,
    id: DatasetId,
    filename: &str,
) -> Result<Response, ApiError> {
    match s.lake.download(id, filename).await? {
        Download::Redirect(url) => Ok(Redirect::temporary(&url).into_response()),
        Download::Stream {
            body,
            size,
            content_type,
        } => {
            let disposition = format!(
                "attachment; filename=\"{}\"",
                filename.replace(['"', '\\'], "_")
            );
            let mut resp = Body::from_stream(body).into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            if let Ok(v) = HeaderValue::from_str(&content_type) {
                h.insert(header::CONTENT_TYPE, v);
            }
            if let Ok(v) = HeaderValue::from_str(&disposition) {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
            Ok(resp)
        }
    }
}

/// Per-layer counts, bytes and whether immutability is enforced by storage or by the host.
#[utoipa::path(get, path = "/layers", responses((status = 200, body = Vec<LayerSummary>)))]
async fn layers(State(s): State<AppState>) -> Result<Json<Vec<LayerSummary>>, ApiError> {
    Ok(Json(s.lake.layers().await?))
}

/// Body of `POST /layers/promote`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    /// The dataset to promote.
    dataset_id: String,
    /// The next layer after the dataset's own.
    target_layer: String,
    /// Kept on the promotion's provenance edge.
    notes: Option<String>,
    /// Why (required to promote to curated or archive); kept in provenance.
    reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct PromoteResponse {
    /// The new dataset in the target layer.
    dataset: Dataset,
    /// The promoted dataset, untouched.
    #[schema(value_type = String, format = Uuid)]
    source_id: DatasetId,
    /// False when an earlier identical promotion is returned.
    created: bool,
}

/// Promote a dataset to the adjacent layer (a server-side copy; the source stays).
#[utoipa::path(post, path = "/layers/promote", request_body = PromoteBody,
    responses((status = 201, body = PromoteResponse), (status = 200, body = PromoteResponse, description = "Already promoted"),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn promote(
    State(s): State<AppState>,
    Extension(caller): Extension<auth::Caller>,
    ApiJson(body): ApiJson<PromoteBody>,
) -> Result<(StatusCode, Json<PromoteResponse>), ApiError> {
    let dataset_id = parse_id(&body.dataset_id)?;
    let target_layer: Layer = body
        .target_layer
        .parse()
        .map_err(|e: crate::layers::UnknownLayer| ApiError::invalid(e.to_string()))?;
    if target_layer != Layer::Processed {
        caller.require(Right::PromoteFurther)?;
    }
    visible(&s, &caller, dataset_id).await?;
    let p = s
        .lake
        .promotions()
        .promote(PromoteRequest {
            dataset_id,
            target_layer,
            notes: body.notes,
            reason: body.reason,
        })
        .await?;
    let status = if p.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(PromoteResponse {
            dataset: p.target,
            source_id: dataset_id,
            created: p.created,
        }),
    ))
}

/// Linear lineage: the dataset's ancestors and every provenance entry on the way.
#[utoipa::path(get, path = "/provenance/{id}", params(("id" = String, Path, description = "Dataset id")),
    responses((status = 200, body = Lineage), (status = 404, body = ErrorBody)))]
async fn provenance(
    State(s): State<AppState>,
    Extension(caller): Extension<auth::Caller>,
    Path(id): Path<String>,
) -> Result<Json<Lineage>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(s.lake.lineage(id, caller.visibility()).await?))
}

/// Query of the graph routes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct GraphQuery {
    /// Steps to walk each way, 1 to 100000 (default 50).
    depth: Option<u32>,
    /// `ancestors`, `descendants` or `both` (default).
    direction: Option<Direction>,
}

fn depth_of(q: &GraphQuery) -> Result<u32, ApiError> {
    let d = q.depth.unwrap_or(50);
    if !(1..=100_000).contains(&d) {
        return Err(ApiError::invalid("depth: must be between 1 and 100000"));
    }
    Ok(d)
}

/// Lineage graph: ancestors and descendants up to a depth.
#[utoipa::path(get, path = "/provenance/{id}/graph", params(("id" = String, Path, description = "Dataset id"), GraphQuery),
    responses((status = 200, body = LineageGraph), (status = 404, body = ErrorBody)))]
async fn graph(
    State(s): State<AppState>,
    Extension(caller): Extension<auth::Caller>,
    Path(id): Path<String>,
    q: Result<Query<GraphQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LineageGraph>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let id = parse_id(&id)?;
    Ok(Json(
        s.lake
            .graph(
                id,
                depth_of(&q)?,
                q.direction.unwrap_or_default(),
                caller.visibility(),
            )
            .await?,
    ))
}

/// Lineage as W3C PROV-JSON.
#[utoipa::path(get, path = "/provenance/{id}/prov", params(("id" = String, Path, description = "Dataset id"), GraphQuery),
    responses((status = 200, description = "PROV-JSON document"), (status = 404, body = ErrorBody)))]
async fn prov(
    State(s): State<AppState>,
    Extension(caller): Extension<auth::Caller>,
    Path(id): Path<String>,
    q: Result<Query<GraphQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let id = parse_id(&id)?;
    let doc = s
        .lake
        .prov_json(id, depth_of(&q)?, caller.visibility())
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], Json(doc)).into_response())
}

/// OpenLineage in: an engine's or scheduler's RunEvent (the endpoint Marquez and every
/// OpenLineage integration post to). A run's end (COMPLETE, FAIL, ABORT) is recorded as an
/// `external` provenance entry between the lake datasets it read and wrote (201; a retried event
/// answers the entry recorded the first time, 200); outputs the engine wrote into a layer's bucket
/// are registered as new datasets; START and RUNNING are acknowledged (200).
#[utoipa::path(post, path = "/api/v1/lineage", request_body = crate::openlineage::RunEvent,
    responses((status = 201, body = crate::openlineage::Received, description = "Recorded"),
        (status = 200, body = crate::openlineage::Received, description = "Acknowledged, not recorded"),
        (status = 422, body = ErrorBody)))]
async fn lineage_event(
    State(s): State<AppState>,
    Extension(caller): Extension<auth::Caller>,
    ApiJson(event): ApiJson<crate::openlineage::RunEvent>,
) -> Result<(StatusCode, Json<crate::openlineage::Received>), ApiError> {
    let vis = caller.visibility();
    let got = s
        .lake
        .openlineage()
        .receive(&event, |d| vis.sees(d.layer))
        .await?;
    let status = if got.recorded && !got.repeated {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(got)))
}

/// This lake's address as the client reached it (its `Host`), for URLs handed back to it.
pub fn address_of(headers: &axum::http::HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// Query of `GET /provenance/{id}/ro-crate`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct CrateQuery {
    /// Steps back to describe, 1 to 100 (default 10).
    depth: Option<u32>,
    /// `zip` (default: the crate as it travels) or `json` (its `ro-crate-metadata.json`).
    format: Option<String>,
}

/// A dataset and how it was made, as an RO-Crate (Process Run Crate profile): its files with
/// their checksums, the datasets it was made from, and each run with its component and person.
#[utoipa::path(get, path = "/provenance/{id}/ro-crate", params(("id" = String, Path, description = "Dataset id"), CrateQuery),
    responses((status = 200, description = "The crate: a zip holding ro-crate-metadata.json, or that JSON-LD"),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn ro_crate(
    State(s): State<AppState>,
    Extension(caller): Extension<auth::Caller>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    q: Result<Query<CrateQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let id = parse_id(&id)?;
    let depth = q.depth.unwrap_or(10);
    if !(1..=100).contains(&depth) {
        return Err(ApiError::invalid("depth: must be between 1 and 100"));
    }
    let zip = match q.format.as_deref().unwrap_or("zip") {
        "zip" => true,
        "json" => false,
        other => {
            return Err(ApiError::invalid(format!(
                "format: {other:?} is neither \"zip\" nor \"json\""
            )));
        }
    };
    // The files' ids are the URLs that download them, from this lake as the client reached it.
    let doc = s
        .lake
        .ro_crate(id, depth, caller.visibility(), &address_of(&headers))
        .await?;
    let json = serde_json::to_vec_pretty(&doc)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    if !zip {
        return Ok(([(header::CONTENT_TYPE, "application/ld+json")], json).into_response());
    }
    let disposition = format!("attachment; filename=\"{id}.crate.zip\"");
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        crate::rocrate::zip_of("ro-crate-metadata.json", &json),
    )
        .into_response())
}

#[derive(Serialize, ToSchema)]
struct PluginList {
    /// Loaded plugins.
    plugins: Vec<Manifest>,
    /// Components that were refused at load, and why.
    rejected: Vec<Rejected>,
    /// How far loading has come: on a first start the components compile in the background, and
    /// `loading.pending` names the bundled plugins not yet ready.
    loading: LoadState,
}

fn plugins_of(s: &AppState) -> Result<&Plugins, ApiError> {
    s.lake.plugins().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the plugin runtime is not running",
        )
    })
}

/// Loaded plugins with their manifests, and components refused at load.
#[utoipa::path(get, path = "/plugins", responses((status = 200, body = PluginList)))]
async fn list_plugins(State(s): State<AppState>) -> Result<Json<PluginList>, ApiError> {
    let p = plugins_of(&s)?;
    Ok(Json(PluginList {
        plugins: p.list(),
        rejected: p.rejected(),
        loading: p.load_state(),
    }))
}

#[derive(Serialize, ToSchema)]
struct PluginDetail {
    #[serde(flatten)]
    manifest: Manifest,
    /// Limits its invocations get.
    limits: Limits,
}

/// One plugin's manifest and limits.
#[utoipa::path(get, path = "/plugins/{name}", params(("name" = String, Path, description = "Plugin name")),
    responses((status = 200, body = PluginDetail), (status = 404, body = ErrorBody)))]
async fn get_plugin(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<PluginDetail>, ApiError> {
    let p = plugins_of(&s)?;
    let manifest = p.manifest(&name).await.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no plugin named {name:?}"),
        )
    })?;
    Ok(Json(PluginDetail {
        limits: p.limits_for(&name),
        manifest,
    }))
}

/// Run a plugin over datasets; the table lands as Parquet in a new dataset, and every invocation
/// is recorded in provenance.
#[utoipa::path(post, path = "/pipelines/run", request_body = RunRequest,
    responses((status = 201, body = Run), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody, description = "Invalid request, or the plugin failed (the failure is recorded; see run_id)")))]
async fn run_pipeline(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<RunRequest>,
) -> Result<(StatusCode, Json<Run>), ApiError> {
    match s.lake.pipelines().run(req).await? {
        RunOutcome::Succeeded(run) => Ok((StatusCode::CREATED, Json(run))),
        RunOutcome::Failed(f) => {
            let mut e = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                f.error.code(),
                f.error.to_string(),
            );
            e.run_id = Some(f.run_id);
            Err(e)
        }
    }
}

/// `?limit=` of the newest-first lists (runs, collections, backup jobs).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LimitQuery {
    /// How many, newest first (1 to 500, default 50).
    limit: Option<u32>,
}

/// The limit a list was asked for, checked.
fn limit_of(
    q: Result<Query<LimitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<u32, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit: must be between 1 and 500"));
    }
    Ok(limit)
}

/// Recorded pipeline runs, newest first.
#[utoipa::path(get, path = "/pipelines/runs", params(LimitQuery), responses((status = 200, body = Vec<Run>)))]
async fn list_runs(
    State(s): State<AppState>,
    q: Result<Query<LimitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<Run>>, ApiError> {
    Ok(Json(s.lake.pipelines().runs(limit_of(q)?).await?))
}

/// One recorded run.
#[utoipa::path(get, path = "/pipelines/runs/{id}", params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = Run), (status = 404, body = ErrorBody)))]
async fn get_run(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Run>, ApiError> {
    Ok(Json(s.lake.pipelines().get(parse_uuid(&id, "run")?).await?))
}

/// A run's or job's id from the path; anything else names nothing (404).
fn parse_uuid(s: &str, what: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(s).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {what} {s:?}"),
        )
    })
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "The lake",
        description = "A governed data lake for biomedical research labs."
    ),
    modifiers(&BearerScheme),
    security(("bearer" = [])),
    paths(
        health,
        metrics_text,
        list_catalog,
        create_dataset,
        catalog_stats,
        get_dataset,
        delete_dataset,
        list_files,
        upload_file,
        download,
        layers,
        promote,
        provenance,
        graph,
        prov,
        ro_crate,
        lineage_event,
        iceberg::config,
        iceberg::namespaces,
        iceberg::namespace,
        iceberg::namespace_exists,
        iceberg::tables,
        iceberg::load_table,
        iceberg::table_exists,
        iceberg::report_metrics,
        list_plugins,
        get_plugin,
        run_pipeline,
        list_runs,
        get_run,
        backup::trigger,
        backup::list,
        backup::get_one,
        collections::start,
        collections::list,
        collections::get_one,
        files::upload,
        files::list,
        files::get_one,
        files::merge,
        files::save_merged,
        audit::list,
        fsck::check,
        fsck::repair,
        identity::list_tokens,
        identity::create_token,
        identity::revoke_token,
        identity::list_users,
        identity::add_user,
        identity::disable_user
    ),
    components(schemas(
        crate::openlineage::RunEvent,
        crate::openlineage::EventRun,
        crate::openlineage::EventJob,
        crate::openlineage::EventDataset,
        crate::openlineage::Received,
        crate::files::FileInfo,
        crate::tables::Renamed,
        crate::files::DatasetIds,
        crate::files::Column,
        crate::files::ParseFailure,
        crate::files::Format,
        crate::files::MergeOutcome,
        crate::files::SavedMerge,
        crate::files::SaveFormat,
        files::SaveMergedBody,
        ErrorBody,
        ErrorDetail,
        Dataset,
        FileRecord,
        Stats,
        LayerSummary,
        Lineage,
        LineageGraph,
        CreateDataset,
        PromoteBody,
        PromoteResponse,
        Deleted,
        Health,
        PluginList,
        PluginDetail,
        Manifest,
        Rejected,
        LoadState,
        Limits,
        RunRequest,
        Run,
        crate::provenance::RunStatus,
        crate::catalog::Job,
        crate::catalog::JobStatus,
        crate::collect::CollectRequest,
        crate::collect::Collected,
        crate::collect::CollectedFile,
        crate::collect::ParsedFile,
        crate::collect::CollectionOutcome,
        crate::collect::ParseStatus,
        crate::backup::BackupResult,
        crate::audit::AuditEntry,
        crate::audit::NewAuditEntry,
        crate::audit::AuditPage,
        crate::audit::Decision,
        crate::fsck::Finding,
        crate::fsck::FsckSummary,
        crate::fsck::Problem,
        crate::catalog::TokenRecord,
        crate::catalog::UserRecord,
        crate::identity::Issued,
        crate::identity::Role,
        crate::identity::UserKind,
        identity::NewTokenBody,
        identity::NewUserBody
    ))
)]
struct ApiDoc;

/// Declares the bearer scheme every route but health, metrics and the reference uses when the lake
/// asks for tokens (`[auth]`).
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("lake_<id>_<secret>")
                    .description(Some(
                        "A lake token (`lake token create`); asked for on any address but loopback by default",
                    ))
                    .build(),
            ),
        );
    }
}
