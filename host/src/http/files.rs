//! The `/files` routes: upload (multipart or a raw body), list, merge, save a merge.

use axum::Json;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use futures::TryStreamExt;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{ApiError, ApiJson, AppState, ErrorBody, parse_cursor, parse_id};
use crate::blob::ByteStream;
use crate::catalog::{DatasetId, Page};
use crate::files::{FileInfo, How, MergeOutcome, MergeSpec, SaveFormat, SavedMerge};

/// Multipart framing allowed on top of the file itself when checking `Content-Length`.
const MULTIPART_SLACK: u64 = 64 << 10;

/// Query of `POST /files/upload` for a raw body.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct UploadQuery {
    /// The file's name when the body is the file itself (else `X-Filename` or
    /// `Content-Disposition: attachment; filename=...`).
    filename: Option<String>,
}

/// Upload a CSV or XLSX file: multipart (`-F file=@plate.csv`) or the bytes as the body
/// (`--data-binary @plate.csv` with `?filename=plate.csv`). The bytes are kept in the raw layer and
/// the parsed table in the processed layer. 201 for a new file; 200 with `duplicate: true` when the
/// same bytes were uploaded before. A file that does not parse is still kept, with `parse_error`.
#[utoipa::path(post, path = "/files/upload", params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "multipart/form-data"),
    responses((status = 201, body = FileInfo), (status = 200, body = FileInfo),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn upload(
    State(s): State<AppState>,
    q: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Result<(StatusCode, Json<FileInfo>), ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let info = receive(&s, q.filename, req).await?;
    let status = if info.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(info)))
}

/// An upload received (multipart, or the file as the body named by `filename`, `X-Filename` or
/// `Content-Disposition`) and handed to the file service: the API's and the dashboard's.
pub(crate) async fn receive(
    s: &AppState,
    filename: Option<String>,
    req: Request,
) -> Result<FileInfo, ApiError> {
    let headers = req.headers().clone();
    let limit = s.lake.settings().max_upload_bytes;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let multipart = content_type.starts_with("multipart/form-data");
    // Refuse a declared oversize body before reading any of it.
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit + if multipart { MULTIPART_SLACK } else { 0 }
    {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the upload is {len} bytes; this lake accepts files of at most {limit} bytes"),
        ));
    }
    let info = if multipart {
        let mut form = Multipart::from_request(req, s)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.body_text()))?;
        let field = loop {
            match form.next_field().await {
                Ok(Some(f)) if f.file_name().is_some() || f.name() == Some("file") => break f,
                Ok(Some(_)) => continue,
                Ok(None) => {
                    return Err(ApiError::invalid(
                        "the form has no file; send it as the field `file` (curl -F file=@plate.csv)",
                    ));
                }
                Err(e) => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_body",
                        e.body_text(),
                    ));
                }
            }
        };
        let name = field
            .file_name()
            .map(str::to_owned)
            .or(filename)
            .ok_or_else(|| ApiError::invalid("the file part has no filename"))?;
        // The field borrows the form, so its bytes are passed on through a channel while the
        // upload consumes them, both in this task.
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
        let pump = async move {
            let mut field = field;
            loop {
                let next = match field.chunk().await {
                    Ok(Some(c)) => Ok(c),
                    Ok(None) => break,
                    Err(e) => Err(std::io::Error::other(e.body_text())),
                };
                let failed = next.is_err();
                if tx.send(next).await.is_err() || failed {
                    break;
                }
            }
        };
        let body: ByteStream = Box::pin(futures::stream::poll_fn({
            let mut rx = rx;
            move |cx| rx.poll_recv(cx)
        }));
        let body = crate::blob::idle_limited(body, s.lake.settings().body_idle);
        let files = s.lake.files();
        let upload = files.upload(&name, body);
        futures::pin_mut!(upload, pump);
        // The upload decides: once it ends (done, or failed on a client that went quiet), the
        // pump, which may be waiting on that client, is dropped with it.
        match futures::future::select(upload, pump).await {
            futures::future::Either::Left((info, _)) => info?,
            futures::future::Either::Right(((), upload)) => upload.await?,
        }
    } else {
        let name = filename
            .or_else(|| header_str(&headers, "x-filename"))
            .or_else(|| disposition_filename(&headers))
            .ok_or_else(|| {
                ApiError::invalid(
                    "name the file: ?filename=plate.csv, an X-Filename header, or a multipart form",
                )
            })?;
        let stream = req
            .into_body()
            .into_data_stream()
            .map_err(std::io::Error::other);
        let body = crate::blob::idle_limited(Box::pin(stream), s.lake.settings().body_idle);
        s.lake.files().upload(&name, body).await?
    };
    Ok(info)
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .map(str::to_owned)
}

/// `filename="..."` of a `Content-Disposition` header.
fn disposition_filename(headers: &HeaderMap) -> Option<String> {
    let v = header_str(headers, header::CONTENT_DISPOSITION.as_str())?;
    let at = v.find("filename=")?;
    let rest = v[at + "filename=".len()..].trim();
    let name = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?,
        None => rest.split(';').next()?.trim(),
    };
    (!name.is_empty()).then(|| name.to_owned())
}

/// Query of `GET /files`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct FilesQuery {
    /// Page size, 1 to 500 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Results to skip (prefer `cursor`).
    offset: Option<u64>,
}

/// Uploaded files, newest first: format, size, SHA-256, rows, columns, created time.
#[utoipa::path(get, path = "/files", params(FilesQuery),
    responses((status = 200, body = inline(Page<FileInfo>)), (status = 422, body = ErrorBody)))]
pub(super) async fn list(
    State(s): State<AppState>,
    q: Result<Query<FilesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<FileInfo>>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit: must be between 1 and 500"));
    }
    let after = parse_cursor(q.cursor.as_deref())?;
    Ok(Json(
        s.lake
            .files()
            .list_uploads(limit, after, super::offset_of(q.offset)?)
            .await?,
    ))
}

/// One uploaded file.
#[utoipa::path(get, path = "/files/{id}", params(("id" = String, Path, description = "File id")),
    responses((status = 200, body = FileInfo), (status = 404, body = ErrorBody)))]
pub(super) async fn get_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<FileInfo>, ApiError> {
    Ok(Json(s.lake.files().file(parse_file_id(&id, "id")?).await?))
}

fn parse_file_id(s: &str, field: &str) -> Result<DatasetId, ApiError> {
    parse_id(s).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{field}: no file with id {s:?} (file ids are UUIDs from /files)"),
        )
    })
}

/// Query of `GET /files/merge`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct MergeQuery {
    /// The left file.
    file_id_1: String,
    /// The right file.
    file_id_2: String,
    /// Key column(s), comma-separated: `sample_id` or `sample_id,visit`.
    on: String,
    /// `inner` (default), `left`, `right` or `outer`.
    how: Option<String>,
    /// Suffixes for clashing column names, comma-separated (default `_x,_y`).
    suffixes: Option<String>,
    /// Rows to return as a preview (default from `[files] preview_rows`, at most 10000).
    preview: Option<usize>,
    /// `true` makes a null key match a null key; by default nulls match nothing.
    nulls_equal: Option<bool>,
}

/// Join two uploaded files' tables in the bundled `merge` plugin. The result is cached (keyed by
/// the inputs' content, the parameters and the plugin) and returned as a cache key, counts, schema
/// and a preview. Null keys match nothing unless `nulls_equal=true`.
#[utoipa::path(get, path = "/files/merge", params(MergeQuery),
    responses((status = 200, body = MergeOutcome), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub(super) async fn merge(
    State(s): State<AppState>,
    q: Result<Query<MergeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<MergeOutcome>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let spec = merge_spec(
        &q.file_id_1,
        &q.file_id_2,
        &q.on,
        q.how.as_deref(),
        q.suffixes.as_deref(),
        q.nulls_equal.unwrap_or(false),
    )?;
    Ok(Json(s.lake.files().merge(spec, q.preview).await?))
}

/// A merge as the API's query (or the dashboard's form) states it.
pub(crate) fn merge_spec(
    file_id_1: &str,
    file_id_2: &str,
    on: &str,
    how: Option<&str>,
    suffixes: Option<&str>,
    nulls_equal: bool,
) -> Result<MergeSpec, ApiError> {
    let how = match how.map(str::trim) {
        None | Some("") | Some("inner") => How::Inner,
        Some("left") => How::Left,
        Some("right") => How::Right,
        Some("outer") | Some("full") => How::Outer,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "how: {other:?} is not a join kind; use inner, left, right or outer"
            )));
        }
    };
    let suffixes = match suffixes {
        None | Some("") => ("_x".to_owned(), "_y".to_owned()),
        Some(s) => match s.split_once(',') {
            Some((a, b)) if a != b => (a.to_owned(), b.to_owned()),
            _ => {
                return Err(ApiError::invalid(
                    "suffixes: two different suffixes, comma-separated, such as _left,_right",
                ));
            }
        },
    };
    Ok(MergeSpec {
        file_id_1: parse_file_id(file_id_1, "file_id_1")?,
        file_id_2: parse_file_id(file_id_2, "file_id_2")?,
        on: on.split(',').map(|c| c.trim().to_owned()).collect(),
        how,
        suffixes,
        nulls_equal,
    })
}

/// Body of `POST /files/save_merged`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SaveMergedBody {
    /// From `GET /files/merge`.
    cache_key: String,
    /// The new dataset's name.
    name: String,
    /// `parquet` (default) or `csv`.
    #[serde(default)]
    format: SaveFormat,
}

/// Save a merge result as a processed dataset with `pipeline` provenance from both inputs; the
/// cache entry is evicted. An expired result is computed again from the immutable inputs.
#[utoipa::path(post, path = "/files/save_merged", request_body = SaveMergedBody,
    responses((status = 201, body = SavedMerge), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn save_merged(
    State(s): State<AppState>,
    ApiJson(body): ApiJson<SaveMergedBody>,
) -> Result<(StatusCode, Json<SavedMerge>), ApiError> {
    let saved = s
        .lake
        .files()
        .save_merged(body.cache_key.trim(), &body.name, body.format)
        .await?;
    Ok((StatusCode::CREATED, Json(saved)))
}
