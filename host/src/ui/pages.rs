//! The dashboard's pages: one handler per page or action, each calling the services the JSON
//! API calls and handing what they return to its template.

use askama::Template;
use axum::Json;
use axum::extract::{Extension, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::session::Csrf;
use super::{Chrome, charts, partial, render};
use crate::catalog::{Dataset, DatasetId, DatasetStatus, FileRecord, SearchQuery};
use crate::http::{ApiError, AppState, Caller};
use crate::identity::Right;
use crate::layers::Layer;
use crate::provenance::{Direction, ProvenanceEntry};

type Page = Result<Response, ApiError>;

fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", m)
}

use crate::http::parse_id;

/// Bytes for people: `1.5 MB`.
pub fn human_bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n.max(0) as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A count for people: `25,004`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A time for people, in UTC to the second.
pub fn when(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A JSON value's text, strings without quotes.
fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------- errors and sign-in

/// The page of an error.
#[derive(Template)]
#[template(path = "ui/error.html")]
pub struct ErrorPage {
    pub status: u16,
    pub title: &'static str,
    pub message: String,
}

/// The message of an error in a partial update.
#[derive(Template)]
#[template(path = "ui/problem.html")]
pub struct Problem {
    pub message: String,
}

/// The sign-in page.
#[derive(Template)]
#[template(path = "ui/sign_in.html")]
pub struct SignIn {
    pub next: String,
    pub why: Option<String>,
    /// The link that starts a sign-in at the OpenID Connect issuer, and the issuer's URL.
    pub oidc: Option<(String, String)>,
}

impl SignIn {
    fn asset(&self, name: &str) -> &'static str {
        super::assets::url(name)
    }
}

impl ErrorPage {
    fn asset(&self, name: &str) -> &'static str {
        super::assets::url(name)
    }
}

// ---------------------------------------------------------------- overview

/// One line of the attention list.
pub struct Attention {
    what: String,
    link: String,
    when: String,
}

/// A job in a table.
pub struct JobRow {
    id: String,
    kind: String,
    status: String,
    what: String,
    error: String,
    created: String,
    finished: String,
}

impl JobRow {
    fn of(j: &crate::catalog::Job) -> Self {
        let what = match j.request.get("source") {
            Some(src) => text(src),
            None => j.kind.clone(),
        };
        JobRow {
            id: j.id.to_string(),
            kind: j.kind.clone(),
            status: format!("{:?}", j.status).to_lowercase(),
            what,
            error: j.error.clone().unwrap_or_default(),
            created: when(&j.created_at),
            finished: j.finished_at.as_ref().map(when).unwrap_or_default(),
        }
    }
}

/// A pipeline run in a table.
pub struct RunRow {
    id: String,
    status: String,
    plugin: String,
    version: String,
    sha256: String,
    params: String,
    usage: String,
    error: String,
    output: Option<String>,
    created: String,
}

impl RunRow {
    fn of(r: &crate::pipeline::Run) -> Self {
        let c = crate::provenance::ComponentFacts::of(&r.details);
        let wall = c
            .usage
            .get("wall")
            .and_then(serde_json::Value::as_f64)
            .map(|s| format!("{:.0}", s * 1000.0));
        let mem = c
            .usage
            .get("peak_memory_bytes")
            .and_then(serde_json::Value::as_i64)
            .map(human_bytes);
        let usage = [
            wall.map(|w| format!("{w} ms")),
            mem.map(|m| format!("{m} peak")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        RunRow {
            id: r.id.to_string(),
            status: format!("{:?}", r.status).to_lowercase(),
            plugin: c.plugin.unwrap_or_default(),
            version: c.plugin_version.unwrap_or_default(),
            sha256: c.component_sha256.unwrap_or_default(),
            params: text(&c.params),
            usage,
            error: c.error.map(|e| e.message).unwrap_or_default(),
            output: r.output.map(|o| o.to_string()),
            created: when(&r.created_at),
        }
    }
}

#[derive(Template)]
#[template(path = "ui/overview.html")]
pub struct Overview {
    chrome: Chrome,
    datasets: i64,
    bytes: String,
    layer_counts: String,
    layer_bytes: String,
    source_counts: String,
    runs: Vec<RunRow>,
    collections: Vec<JobRow>,
    backups: Vec<JobRow>,
    attention: Vec<Attention>,
}

/// `GET /ui`: the lake at a glance.
pub async fn overview(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(csrf): Extension<Csrf>,
) -> Page {
    let chrome = Chrome::new("overview", &caller, &csrf);
    let stats = s.lake.stats().await?;
    let bar = |g: &crate::catalog::GroupStats, bytes: bool| charts::Bar {
        label: g.key.clone(),
        value: if bytes { g.bytes } else { g.datasets },
        shown: if bytes {
            human_bytes(g.bytes)
        } else {
            g.datasets.to_string()
        },
    };
    let layer_counts = charts::bars(
        "Datasets per layer",
        &stats
            .by_layer
            .iter()
            .map(|g| bar(g, false))
            .collect::<Vec<_>>(),
    );
    let layer_bytes = charts::bars(
        "Bytes per layer",
        &stats
            .by_layer
            .iter()
            .map(|g| bar(g, true))
            .collect::<Vec<_>>(),
    );
    let mut sources: Vec<_> = stats.by_source.iter().collect();
    sources.sort_by_key(|g| -g.datasets);
    let source_counts = charts::bars(
        "Datasets per source",
        &sources
            .iter()
            .take(12)
            .map(|g| bar(g, false))
            .collect::<Vec<_>>(),
    );
    let runs = s.lake.pipelines().runs(50).await?;
    let collections = s.lake.collections().list(20).await?;
    let backups = if chrome.may.admin {
        s.lake.backups().list_jobs(10).await?
    } else {
        Vec::new()
    };
    let mut attention = Vec::new();
    for r in runs
        .iter()
        .filter(|r| r.status == crate::provenance::RunStatus::Failed)
        .take(10)
    {
        attention.push(Attention {
            what: format!(
                "Run of {} failed",
                crate::provenance::ComponentFacts::of(&r.details)
                    .plugin
                    .unwrap_or_else(|| "a plugin".into())
            ),
            link: "/ui/runs".into(),
            when: when(&r.created_at),
        });
    }
    for j in collections
        .iter()
        .chain(&backups)
        .filter(|j| matches!(j.status, crate::catalog::JobStatus::Failed))
    {
        attention.push(Attention {
            what: format!(
                "{} job failed: {}",
                j.kind,
                j.error.clone().unwrap_or_default()
            ),
            link: if j.kind == "backup" {
                "/ui/backups".into()
            } else {
                "/ui/collections".into()
            },
            when: when(&j.created_at),
        });
    }
    if chrome.may.admin {
        let q = crate::audit::AuditQuery {
            decision: Some(crate::audit::Decision::Refused),
            since: Some(chrono::Utc::now() - chrono::Duration::days(1)),
            principal: None,
            until: None,
            before: None,
            limit: 100,
        };
        let refused = s.lake.audit().page(&q).await?;
        if !refused.items.is_empty() {
            attention.push(Attention {
                what: format!(
                    "{}{} refused requests in the last day",
                    refused.items.len(),
                    if refused.next_before.is_some() {
                        "+"
                    } else {
                        ""
                    }
                ),
                link: "/ui/admin".into(),
                when: refused
                    .items
                    .first()
                    .map(|e| when(&e.at))
                    .unwrap_or_default(),
            });
        }
    }
    Ok(render(&Overview {
        chrome,
        datasets: stats.total_datasets,
        bytes: human_bytes(stats.total_bytes),
        layer_counts,
        layer_bytes,
        source_counts,
        runs: runs.iter().take(8).map(RunRow::of).collect(),
        collections: collections.iter().take(8).map(JobRow::of).collect(),
        backups: backups.iter().take(5).map(JobRow::of).collect(),
        attention,
    }))
}

// ---------------------------------------------------------------- catalog

/// Query of `GET /ui/catalog`, kept in the URL so a view can be shared.
#[derive(Debug, Default, Deserialize)]
pub struct CatalogQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    layer: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    tag: String,
    /// Created on or after this day.
    #[serde(default)]
    from: String,
    /// Created on or before this day.
    #[serde(default)]
    to: String,
    #[serde(default)]
    cursor: String,
}

/// A dataset in the catalog's table.
pub struct Row {
    id: String,
    name: String,
    source: String,
    external_id: String,
    layer: String,
    files: i64,
    size: String,
    tags: Vec<String>,
    created: String,
}

impl Row {
    fn of(d: &Dataset) -> Self {
        Row {
            id: d.id.to_string(),
            name: d.name.clone(),
            source: d.source.clone(),
            external_id: d.external_id.clone().unwrap_or_default(),
            layer: d.layer.to_string(),
            files: d.file_count,
            size: human_bytes(d.total_size),
            tags: d.tags.clone(),
            created: when(&d.created_at),
        }
    }
}

#[derive(Template)]
#[template(path = "ui/catalog_rows.html")]
pub struct CatalogRows {
    rows: Vec<Row>,
    shown: i64,
    total: i64,
    total_shown: String,
    filtered: bool,
    next: Option<String>,
}

#[derive(Template)]
#[template(path = "ui/catalog.html")]
pub struct CatalogPage {
    chrome: Chrome,
    q: String,
    layer: String,
    source: String,
    tag: String,
    from: String,
    to: String,
    layers: Vec<String>,
    sources: Vec<String>,
    results: String,
}

/// A search's count stops here ("10,000+"), so a broad text search costs a bounded read; counts by
/// layer and source alone are exact at any size.
const COUNT_AT_MOST: i64 = 10_000;

/// `GET /ui/catalog`: search; with `HX-Request`, only the rows.
pub async fn catalog(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(csrf): Extension<Csrf>,
    headers: HeaderMap,
    q: Result<Query<CatalogQuery>, axum::extract::rejection::QueryRejection>,
) -> Page {
    let Query(q) = q.map_err(|e| invalid(e.body_text()))?;
    let layer = Some(q.layer.as_str())
        .filter(|l| !l.is_empty())
        .map(str::parse::<Layer>)
        .transpose()
        .map_err(|e| invalid(e.to_string()))?;
    let after = Some(q.cursor.as_str())
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse::<DatasetId>()
                .map_err(|_| invalid(format!("cursor {c:?} is not from a previous page")))
        })
        .transpose()?;
    let query = SearchQuery {
        layer,
        hidden_layers: caller.visibility().hidden_layers(),
        source: Some(q.source.clone()).filter(|s| !s.is_empty()),
        q: Some(q.q.trim().to_owned()).filter(|s| !s.is_empty()),
        tags: q
            .tag
            .split(',')
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect(),
        status: DatasetStatus::Ready,
        limit: 50,
        after,
        offset: 0,
        external_id: None,
        sha256: None,
        created_after: Some(q.from.as_str())
            .filter(|d| !d.is_empty())
            .map(|d| crate::http::parse_time("from", d))
            .transpose()?,
        // Through the whole of the `to` day.
        created_before: Some(q.to.as_str())
            .filter(|d| !d.is_empty())
            .map(|d| crate::http::parse_time("to", d).map(|t| t + chrono::Duration::days(1)))
            .transpose()?,
    };
    let page = s.lake.search(&query).await?;
    let total = s.lake.count(&query, COUNT_AT_MOST).await?;
    let filtered = query.layer.is_some()
        || query.source.is_some()
        || query.q.is_some()
        || !query.tags.is_empty()
        || query.created_after.is_some()
        || query.created_before.is_some()
        || after.is_some();
    let next = page.next_cursor.as_ref().map(|c| {
        let enc = |v: &str| {
            percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let mut u = String::from("/ui/catalog?");
        for (k, v) in [
            ("q", &q.q),
            ("layer", &q.layer),
            ("source", &q.source),
            ("tag", &q.tag),
            ("from", &q.from),
            ("to", &q.to),
        ] {
            if !v.is_empty() {
                u.push_str(&format!("{k}={}&", enc(v)));
            }
        }
        u.push_str(&format!("cursor={}", enc(c)));
        u
    });
    let results = CatalogRows {
        shown: page.items.len() as i64,
        rows: page.items.iter().map(Row::of).collect(),
        total: total.found,
        total_shown: format!(
            "{}{}",
            thousands(total.found),
            if total.more { "+" } else { "" }
        ),
        filtered,
        next,
    };
    if partial(&headers) {
        return Ok(render(&results));
    }
    // The filters' choices, only for a whole page (not for the rows updated while typing).
    let stats = s.lake.stats().await?;
    let vis = caller.visibility();
    let results = results.render().map_err(|e| {
        tracing::error!(error = %e, "Dashboard template failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the page could not be rendered",
        )
    })?;
    Ok(render(&CatalogPage {
        chrome: Chrome::new("catalog", &caller, &csrf),
        layers: Layer::ALL
            .iter()
            .filter(|l| vis.sees(**l))
            .map(ToString::to_string)
            .collect(),
        sources: stats.by_source.iter().map(|g| g.key.clone()).collect(),
        q: q.q,
        layer: q.layer,
        source: q.source,
        tag: q.tag,
        from: q.from,
        to: q.to,
        results,
    }))
}

// ---------------------------------------------------------------- dataset

/// A step in a dataset's history.
pub struct Step {
    action: String,
    who: String,
    via: String,
    when: String,
    reason: String,
    notes: String,
    plugin: String,
    sha256: String,
    limits: String,
    usage: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl Step {
    fn of(e: &ProvenanceEntry) -> Self {
        let c = e.component();
        let plugin = match (c.plugin, c.plugin_version) {
            (Some(n), Some(v)) => format!("{n} {v}"),
            (Some(n), None) => n,
            _ => String::new(),
        };
        Step {
            action: e.action.to_string(),
            who: e.actor.clone().unwrap_or_else(|| "(not recorded)".into()),
            via: e.actor_token.clone().unwrap_or_default(),
            when: when(&e.created_at),
            reason: e.reason.clone().unwrap_or_default(),
            notes: e.notes.clone().unwrap_or_default(),
            plugin,
            sha256: c.component_sha256.unwrap_or_default(),
            limits: text(&c.limits),
            usage: text(&c.usage),
            inputs: e.inputs.iter().map(ToString::to_string).collect(),
            outputs: e.outputs.iter().map(ToString::to_string).collect(),
        }
    }
}

/// A node of the lineage table (the graph's fallback).
pub struct NodeRow {
    id: String,
    name: String,
    layer: String,
    distance: i64,
    restricted: bool,
}

/// The first rows of a table, read from its Parquet.
pub struct Preview {
    columns: Vec<(String, String)>,
    rows: Vec<Vec<String>>,
    total_rows: Option<i64>,
    note: Option<String>,
}

#[derive(Template)]
#[template(path = "ui/dataset.html")]
pub struct DatasetPage {
    chrome: Chrome,
    d: Row,
    location: String,
    immutable: String,
    promoted_from: Option<String>,
    metadata: Vec<(String, String)>,
    files: Vec<FileRecord>,
    file_sizes: Vec<String>,
    preview: Option<Preview>,
    steps: Vec<Step>,
    hidden: usize,
    nodes: Vec<NodeRow>,
    table_file: Option<String>,
    base: String,
    next_layer: Option<String>,
}

/// How many steps back a dataset's page shows its history (the PROV-JSON export has it all).
const HISTORY_DEPTH: u32 = 5;

/// How many cells a preview shows at most, and rows.
const PREVIEW_CELLS: usize = 2_000;
const PREVIEW_ROWS: usize = 20;

/// The first rows of a dataset's table, read by range from its Parquet (footer, page index and
/// the first pages), whatever the table's size.
async fn preview(s: &AppState, d: &Dataset, files: &[FileRecord]) -> Option<Preview> {
    let f = files.iter().find(|f| f.name.ends_with(".parquet"))?;
    // At most PREVIEW_ROWS rows are read; the cell budget trims them for a wide table below.
    let read = crate::tables::first_rows(
        s.lake.blobs().clone(),
        &d.bucket,
        &format!("{}{}", d.prefix, f.name),
        f.size,
        PREVIEW_ROWS,
    )
    .await;
    match read {
        Ok(first) => {
            let columns: Vec<(String, String)> = first
                .schema
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().to_string()))
                .collect();
            let per_row = columns.len().max(1);
            let want = PREVIEW_ROWS.min(PREVIEW_CELLS / per_row).max(1);
            let mut rows = Vec::new();
            let opts = arrow_cast::display::FormatOptions::default().with_null("");
            for batch in &first.batches {
                let formatters: Vec<_> = batch
                    .columns()
                    .iter()
                    .filter_map(|c| {
                        arrow_cast::display::ArrayFormatter::try_new(c.as_ref(), &opts).ok()
                    })
                    .collect();
                for i in 0..batch.num_rows() {
                    if rows.len() >= want {
                        break;
                    }
                    rows.push(
                        formatters
                            .iter()
                            .map(|f| {
                                let mut v = f.value(i).to_string();
                                if v.chars().count() > 80 {
                                    v = v.chars().take(79).collect::<String>() + "…";
                                }
                                v
                            })
                            .collect(),
                    );
                }
            }
            tracing::debug!(
                dataset = %d.id,
                bytes_read = first.bytes_read,
                size = f.size,
                "Preview read"
            );
            Some(Preview {
                columns,
                rows,
                total_rows: i64::try_from(first.total_rows).ok(),
                note: None,
            })
        }
        Err(e) => Some(Preview {
            columns: Vec::new(),
            rows: Vec::new(),
            total_rows: None,
            note: Some(format!("{} could not be read: {e}", f.name)),
        }),
    }
}

/// `GET /ui/datasets/{id}`: a dataset, its files, a preview, its history and lineage.
pub async fn dataset(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(csrf): Extension<Csrf>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    let id = parse_id(&id)?;
    let d = caller.reveal(s.lake.get_dataset(id).await?)?;
    let files = s.lake.dataset_files(id).await?;
    let vis = caller.visibility();
    let graph = s.lake.graph(id, 2, Direction::Both, vis).await?;
    let (history, hidden) = s.lake.history(id, HISTORY_DEPTH, vis).await?;
    let immutable = s.lake.immutability(d.layer).to_owned();
    let metadata = match &d.metadata {
        serde_json::Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), text(v))).collect(),
        serde_json::Value::Null => Vec::new(),
        other => vec![("value".into(), other.to_string())],
    };
    let mut steps: Vec<Step> = history.iter().map(Step::of).collect();
    steps.reverse();
    let mut nodes: Vec<NodeRow> = graph
        .nodes
        .iter()
        .map(|n| NodeRow {
            id: n.id.to_string(),
            name: n.name.clone(),
            layer: n.layer.to_string(),
            distance: n.distance,
            restricted: n.restricted,
        })
        .collect();
    nodes.sort_by_key(|n| n.distance);
    let table_file = files
        .iter()
        .find(|f| f.name.ends_with(".parquet"))
        .map(|f| f.name.clone());
    let preview = preview(&s, &d, &files).await;
    let base = crate::http::address_of(&headers);
    let next_layer = d.layer.next().map(|l| l.to_string());
    Ok(render(&DatasetPage {
        chrome: Chrome::new("catalog", &caller, &csrf),
        location: d.location.clone(),
        immutable,
        promoted_from: d.promoted_from.map(|p| p.to_string()),
        metadata,
        file_sizes: files.iter().map(|f| human_bytes(f.size as i64)).collect(),
        files,
        preview,
        steps,
        hidden: hidden.max(graph.hidden),
        nodes,
        table_file,
        base,
        next_layer,
        d: Row::of(&d),
    }))
}

/// Query of the lineage graph's data.
#[derive(Debug, Deserialize)]
pub struct GraphQuery {
    depth: Option<u32>,
}

/// `GET /ui/datasets/{id}/graph?depth=N`: the lineage around a dataset, both ways, as JSON for
/// the page's graph (the same graph `/provenance/{id}/graph` gives).
pub async fn graph(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<GraphQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<crate::provenance::LineageGraph>, ApiError> {
    let Query(q) = q.map_err(|e| invalid(e.body_text()))?;
    let depth = q.depth.unwrap_or(2);
    if !(1..=10).contains(&depth) {
        return Err(invalid("depth: must be between 1 and 10"));
    }
    let id = parse_id(&id)?;
    caller.reveal(s.lake.get_dataset(id).await?)?;
    Ok(Json(
        s.lake
            .graph(id, depth, Direction::Both, caller.visibility())
            .await?,
    ))
}

/// `GET /ui/datasets/{id}/prov`: the dataset's PROV-JSON, as a download.
pub async fn prov(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Page {
    let id = parse_id(&id)?;
    caller.reveal(s.lake.get_dataset(id).await?)?;
    let doc = s.lake.prov_json(id, 10, caller.visibility()).await?;
    let mut resp = Json(doc).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{id}.prov.json\"")) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// `GET /ui/datasets/{id}/download/{file}`: a file, as `GET /catalog/{id}/download/{file}` gives
/// it, for a signed-in browser.
pub async fn download(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, file)): Path<(String, String)>,
) -> Page {
    let id = parse_id(&id)?;
    caller.reveal(s.lake.get_dataset(id).await?)?;
    crate::http::download_response(&s, id, &file).await
}

// ---------------------------------------------------------------- layers and promotion

#[derive(Template)]
#[template(path = "ui/layers.html")]
pub struct LayersPage {
    chrome: Chrome,
    cards: Vec<LayerCard>,
    history: Vec<PromotionRow>,
    preset: String,
    targets: Vec<(String, &'static str)>,
}

/// One promotion, from its provenance entry.
pub struct PromotionRow {
    id: String,
    name: String,
    to_layer: String,
    from_layer: String,
    /// The source dataset's id, empty where the caller may not see its layer.
    from: String,
    who: String,
    note: String,
    when: String,
}

/// A layer's card.
pub struct LayerCard {
    name: String,
    datasets: i64,
    bytes: String,
    immutability: String,
    deletes_refused: bool,
    implies: &'static str,
}

/// What moving data into a layer means, said before it happens.
pub fn implies(layer: Layer) -> &'static str {
    match layer {
        Layer::Raw => {
            "Raw data is kept as it arrived: it can never be changed or deleted, and may hold patient data."
        }
        Layer::Processed => {
            "Processed data is derived and reproducible; it can be deleted later by a curator, with a reason."
        }
        Layer::Curated => {
            "Curated data is what the lab vouches for: a curator promotes it, with a reason that is kept in its history."
        }
        Layer::Archive => {
            "Archived data is kept for the long term and read rarely; a curator promotes it, with a reason."
        }
    }
}

/// Query of `GET /ui/layers`.
#[derive(Debug, Default, Deserialize)]
pub struct LayersQuery {
    #[serde(default)]
    dataset: String,
}

/// `GET /ui/layers`: a card per layer, the promotion form and recent promotions.
pub async fn layers(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(csrf): Extension<Csrf>,
    Query(q): Query<LayersQuery>,
) -> Page {
    let layers = s.lake.layers().await?;
    let cards = layers
        .iter()
        .map(|l| LayerCard {
            name: l.layer.to_string(),
            datasets: l.datasets,
            bytes: human_bytes(l.bytes),
            immutability: l.immutability.to_owned(),
            deletes_refused: l.deletes_refused,
            implies: implies(l.layer),
        })
        .collect();
    let vis = caller.visibility();
    let mut history = Vec::new();
    for (e, record) in s.lake.recent_promotions(30, vis).await? {
        let Some(&made) = e.outputs.first() else {
            continue;
        };
        // A promoted dataset deleted since is named by its id.
        let name = match s.lake.get_dataset(made).await {
            Ok(d) => d.name,
            Err(_) => made.to_string(),
        };
        history.push(PromotionRow {
            id: made.to_string(),
            name,
            to_layer: record.to_layer.to_string(),
            from_layer: record.from_layer.to_string(),
            from: e
                .inputs
                .first()
                .filter(|_| vis.sees(record.from_layer))
                .map(ToString::to_string)
                .unwrap_or_default(),
            who: e.actor.clone().unwrap_or_else(|| "(not recorded)".into()),
            note: e.reason.clone().or(e.notes.clone()).unwrap_or_default(),
            when: when(&e.created_at),
        });
    }
    let chrome = Chrome::new("layers", &caller, &csrf);
    let targets = [Layer::Processed, Layer::Curated, Layer::Archive]
        .into_iter()
        .filter(|l| *l == Layer::Processed || chrome.may.curate)
        .map(|l| (l.to_string(), implies(l)))
        .collect();
    Ok(render(&LayersPage {
        chrome,
        targets,
        cards,
        history,
        preset: q.dataset,
    }))
}

/// Body of `POST /ui/layers/promote`.
#[derive(Debug, Deserialize)]
pub struct PromoteForm {
    dataset_id: String,
    target_layer: String,
    note: String,
}

#[derive(Template)]
#[template(path = "ui/promoted.html")]
pub struct Promoted {
    id: String,
    name: String,
    layer: String,
    created: bool,
}

/// `POST /ui/layers/promote`: a promotion with its note (required), recorded as its reason.
pub async fn promote(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(f): Form<PromoteForm>,
) -> Page {
    let dataset_id = parse_id(f.dataset_id.trim())?;
    let target_layer: Layer = f
        .target_layer
        .parse()
        .map_err(|e: crate::layers::UnknownLayer| invalid(e.to_string()))?;
    let note = f.note.trim();
    if note.is_empty() {
        return Err(invalid(
            "note: say why this dataset moves; it is kept in its history",
        ));
    }
    if target_layer != Layer::Processed {
        caller.require(Right::PromoteFurther)?;
    }
    caller.reveal(s.lake.get_dataset(dataset_id).await?)?;
    let p = s
        .lake
        .promotions()
        .promote(crate::promotion::PromoteRequest {
            dataset_id,
            target_layer,
            notes: Some(note.to_owned()),
            reason: Some(note.to_owned()),
        })
        .await?;
    let status = if p.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut r = render(&Promoted {
        id: p.target.id.to_string(),
        name: p.target.name.clone(),
        layer: p.target.layer.to_string(),
        created: p.created,
    });
    *r.status_mut() = status;
    Ok(r)
}

// ---------------------------------------------------------------- runs and plugins

#[derive(Template)]
#[template(path = "ui/runs.html")]
pub struct RunsPage {
    chrome: Chrome,
    runs: Vec<RunRow>,
    plugins: Vec<crate::plugins::Manifest>,
    rejected: Vec<crate::plugins::Rejected>,
    loading: bool,
}

/// `GET /ui/runs`: pipeline runs, the plugins loaded and those refused.
pub async fn runs(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(csrf): Extension<Csrf>,
) -> Page {
    let runs = s.lake.pipelines().runs(100).await?;
    let (plugins, rejected, loading) = match s.lake.plugins() {
        Some(p) => (p.list(), p.rejected(), !p.load_state().done),
        None => (Vec::new(), Vec::new(), false),
    };
    Ok(render(&RunsPage {
        chrome: Chrome::new("runs", &caller, &csrf),
        runs: runs.iter().map(RunRow::of).collect(),
        plugins,
        rejected,
        loading,
    }))
}

// ---------------------------------------------------------------- collections

#[derive(Template)]
#[template(path = "ui/collections.html")]
pub struct CollectionsPage {
    chrome: Chrome,
    sources: Vec<(String, String, String)>,
    jobs: Vec<JobRow>,
    outcomes: Vec<String>,
    /// Each job's collection entry and how many requests it made.
    requests: Vec<(String, String)>,
}

/// `GET /ui/collections`: the configured sources and the collection jobs.
pub async fn collections(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(csrf): Extension<Csrf>,
) -> Page {
    let jobs = s.lake.collections().list(50).await?;
    let sources = s
        .lake
        .settings()
        .sources
        .iter()
        .map(|src| {
            (
                src.name.clone(),
                src.plugin.clone(),
                src.external_id.clone().unwrap_or_default(),
            )
        })
        .collect();
    let field = |j: &crate::catalog::Job, k: &str| {
        j.result
            .as_ref()
            .and_then(|r| r.get(k))
            .filter(|v| !v.is_null())
            .map(text)
            .unwrap_or_default()
    };
    let outcomes = jobs.iter().map(|j| field(j, "outcome")).collect();
    let requests = jobs
        .iter()
        .map(|j| (field(j, "entry_id"), field(j, "requests")))
        .collect();
    Ok(render(&CollectionsPage {
        chrome: Chrome::new("collections", &caller, &csrf),
        sources,
        jobs: jobs.iter().map(JobRow::of).collect(),
        outcomes,
        requests,
    }))
}

#[derive(Template)]
#[template(path = "ui/collection.html")]
pub struct CollectionPage {
    chrome: Chrome,
    entry: String,
    external_id: String,
    source: String,
    plugin: String,
    status: String,
    who: String,
    when: String,
    outputs: Vec<String>,
    requests: Vec<crate::plugins::Fetch>,
}

/// `GET /ui/collections/{entry}`: one collection's record: every request its connector made,
/// with the answer (or why it was refused).
pub async fn collection(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(csrf): Extension<Csrf>,
    Path(entry): Path<String>,
) -> Page {
    let id = uuid::Uuid::parse_str(entry.trim())
        .map_err(|_| invalid(format!("{entry:?} is not a collection's entry id")))?;
    let (e, record) = s.lake.collections().recorded(id).await?;
    let requests: Vec<crate::plugins::Fetch> = serde_json::from_value(record.requests.clone())
        .map_err(|err| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("the collection's requests are recorded unreadably: {err}"),
            )
        })?;
    let vis = caller.visibility();
    Ok(render(&CollectionPage {
        chrome: Chrome::new("collections", &caller, &csrf),
        entry: e.id.to_string(),
        external_id: record.external_id.clone(),
        source: record.source.clone().unwrap_or_default(),
        plugin: e.component().plugin.unwrap_or_default(),
        status: serde_json::to_value(record.status)
            .map(|v| text(&v))
            .unwrap_or_default(),
        who: e.actor.clone().unwrap_or_else(|| "(not recorded)".into()),
        when: when(&e.created_at),
        // Collections write raw datasets; a caller who may not see raw gets no links to them.
        outputs: if vis.sees(Layer::Raw) {
            e.outputs.iter().map(ToString::to_string).collect()
        } else {
            Vec::new()
        },
        requests,
    }))
}

/// Body of `POST /ui/collections/run`.
#[derive(Debug, Deserialize)]
pub struct CollectForm {
    source: String,
}

/// `POST /ui/collections/run`: a configured source collected now, as a job.
pub async fn collect(State(s): State<AppState>, Form(f): Form<CollectForm>) -> Page {
    let job = s
        .lake
        .collections()
        .submit(crate::collect::CollectRequest {
            source: f.source,
            external_id: None,
            params: serde_json::Value::Null,
            parse: None,
            tags: Vec::new(),
        })
        .await?;
    let mut r = render(&Problem {
        message: format!(
            "Collection job {} queued; this page shows its state.",
            job.id
        ),
    });
    *r.status_mut() = StatusCode::ACCEPTED;
    r.headers_mut()
        .insert("hx-refresh", HeaderValue::from_static("true"));
    Ok(r)
}

// ---------------------------------------------------------------- backups

#[derive(Template)]
#[template(path = "ui/backups.html")]
pub struct BackupsPage {
    chrome: Chrome,
    jobs_html: String,
    backups: Vec<(String, String, String, usize, usize, String)>,
    target: String,
}

#[derive(Template)]
#[template(path = "ui/backup_jobs.html")]
pub struct BackupJobs {
    jobs: Vec<JobRow>,
    running: bool,
}

async fn backup_jobs_of(s: &AppState) -> Result<BackupJobs, ApiError> {
    let jobs = s.lake.backups().list_jobs(20).await?;
    let running = jobs.iter().any(|j| {
        matches!(
            j.status,
            crate::catalog::JobStatus::Queued | crate::catalog::JobStatus::Running
        )
    });
    Ok(BackupJobs {
        jobs: jobs.iter().map(JobRow::of).collect(),
        running,
    })
}

/// `GET /ui/backups`: backup jobs and the backups kept.
pub async fn backups(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(csrf): Extension<Csrf>,
) -> Page {
    let jobs = backup_jobs_of(&s).await?;
    let backups = match s.lake.backups().list().await {
        Ok(b) => b
            .iter()
            .map(|b| {
                (
                    b.backup_id.to_string(),
                    b.kind.clone(),
                    when(&b.created_at),
                    b.datasets,
                    b.objects,
                    human_bytes(b.bytes as i64),
                )
            })
            .collect(),
        Err(crate::lake::LakeError::Invalid(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let b = &s.lake.settings().backup;
    let target = match (b.target, &b.s3) {
        (crate::config::BackupTarget::Archive, _) => "the archive layer's bucket".to_owned(),
        (crate::config::BackupTarget::Dir, _) => format!("the directory {}", b.dir.display()),
        (_, Some(_)) | (crate::config::BackupTarget::S3, _) => {
            format!("the bucket {}, under {:?}", b.bucket, b.prefix)
        }
        (crate::config::BackupTarget::Auto, None) => match s.lake.blobs().kind() {
            "s3" => format!("the bucket {} on the lake's store", b.bucket),
            _ => format!("the directory {}", b.dir.display()),
        },
    };
    Ok(render(&BackupsPage {
        chrome: Chrome::new("backups", &caller, &csrf),
        jobs_html: jobs.render().map_err(|e| {
            tracing::error!(error = %e, "Dashboard template failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the page could not be rendered",
            )
        })?,
        backups,
        target,
    }))
}

/// `GET /ui/backups/jobs`: the jobs table alone (the page polls it while a job runs).
pub async fn backup_jobs(State(s): State<AppState>) -> Page {
    Ok(render(&backup_jobs_of(&s).await?))
}

#[derive(Template)]
#[template(path = "ui/verified.html")]
pub struct Verified {
    id: String,
    objects: usize,
    bytes: String,
    problems: Vec<(String, String)>,
}

/// `POST /ui/backups/{id}/verify`: every object of a backup read back and checked against its
/// SHA-256.
pub async fn verify_backup(State(s): State<AppState>, Path(id): Path<String>) -> Page {
    let id: uuid::Uuid = id
        .parse()
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such backup"))?;
    let r = s.lake.backups().verify(id, None).await?;
    Ok(render(&Verified {
        id: r.backup_id.to_string(),
        objects: r.objects_checked,
        bytes: human_bytes(r.bytes_checked as i64),
        problems: r
            .problems
            .iter()
            .map(|p| (p.key.clone(), p.problem.clone()))
            .collect(),
    }))
}

/// `POST /ui/backups/trigger`: a backup now, as a job.
pub async fn trigger_backup(State(s): State<AppState>) -> Page {
    s.lake.backups().trigger().await?;
    let mut r = render(&backup_jobs_of(&s).await?);
    *r.status_mut() = StatusCode::ACCEPTED;
    Ok(r)
}

// ---------------------------------------------------------------- files

#[derive(Template)]
#[template(path = "ui/files.html")]
pub struct FilesPage {
    chrome: Chrome,
    files: Vec<crate::files::FileInfo>,
    sizes: Vec<String>,
    formats: Vec<String>,
}

/// `GET /ui/files`: uploaded files, the upload form, and the merge form.
pub async fn files(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(csrf): Extension<Csrf>,
) -> Page {
    let files = s.lake.files().list_uploads(200, None, 0).await?.items;
    Ok(render(&FilesPage {
        chrome: Chrome::new("files", &caller, &csrf),
        sizes: files.iter().map(|f| human_bytes(f.size as i64)).collect(),
        formats: files
            .iter()
            .map(|f| text(&serde_json::to_value(f.format).unwrap_or_default()))
            .collect(),
        files,
    }))
}

/// `POST /ui/files/upload`: a multipart upload, as `POST /files/upload` takes it.
pub async fn upload(State(s): State<AppState>, req: axum::extract::Request) -> Page {
    let info = crate::http::receive_upload(&s, None, req).await?;
    let mut r = render(&Problem {
        message: format!(
            "{} uploaded (version {}, {} rows).",
            info.filename,
            info.version,
            info.rows
                .map(|r| r.to_string())
                .unwrap_or_else(|| "no".into())
        ),
    });
    *r.status_mut() = StatusCode::CREATED;
    r.headers_mut()
        .insert("hx-refresh", HeaderValue::from_static("true"));
    Ok(r)
}

/// Body of `POST /ui/files/merge`.
#[derive(Debug, Deserialize)]
pub struct MergeForm {
    left: String,
    right: String,
    on: String,
    #[serde(default)]
    how: String,
}

#[derive(Template)]
#[template(path = "ui/merged.html")]
pub struct Merged {
    cache_key: String,
    rows: u64,
    columns: Vec<String>,
    preview: Vec<Vec<String>>,
    cached: bool,
}

/// `POST /ui/files/merge`: two uploaded files joined, with a preview and a form to save it.
pub async fn merge(State(s): State<AppState>, Form(f): Form<MergeForm>) -> Page {
    let spec = crate::http::merge_spec(&f.left, &f.right, &f.on, Some(&f.how), None, false)?;
    let out = s.lake.files().merge(spec, Some(20)).await?;
    let columns: Vec<String> = out.schema.iter().map(|c| c.name.clone()).collect();
    let preview = out
        .preview
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| row.get(c).map(text).unwrap_or_default())
                .collect()
        })
        .collect();
    Ok(render(&Merged {
        cache_key: out.cache_key,
        rows: out.rows,
        columns,
        preview,
        cached: out.cached,
    }))
}

/// Body of `POST /ui/files/save`.
#[derive(Debug, Deserialize)]
pub struct SaveForm {
    cache_key: String,
    name: String,
    #[serde(default)]
    format: String,
}

/// `POST /ui/files/save`: a merge result saved as a processed dataset.
pub async fn save(State(s): State<AppState>, Form(f): Form<SaveForm>) -> Page {
    let format = match f.format.as_str() {
        "" | "parquet" => crate::files::SaveFormat::Parquet,
        "csv" => crate::files::SaveFormat::Csv,
        other => return Err(invalid(format!("format: {other:?} is not parquet or csv"))),
    };
    let saved = s
        .lake
        .files()
        .save_merged(f.cache_key.trim(), &f.name, format)
        .await?;
    let d = s.lake.get_dataset(saved.dataset_id).await?;
    let mut r = render(&Promoted {
        id: d.id.to_string(),
        name: d.name.clone(),
        layer: d.layer.to_string(),
        created: true,
    });
    *r.status_mut() = StatusCode::CREATED;
    Ok(r)
}

// ---------------------------------------------------------------- admin

#[derive(Template)]
#[template(path = "ui/admin.html")]
pub struct AdminPage {
    chrome: Chrome,
    users: Vec<crate::catalog::UserRecord>,
    kinds: Vec<String>,
    tokens: Vec<crate::catalog::TokenRecord>,
    audit: Vec<crate::audit::AuditEntry>,
    issued: Option<String>,
}

/// `GET /ui/admin`: tokens (the caller's own; everyone's for admins), users and refused
/// requests (admins).
pub async fn admin(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(csrf): Extension<Csrf>,
) -> Page {
    let chrome = Chrome::new("admin", &caller, &csrf);
    admin_page(&s, &caller, chrome, None).await
}

async fn admin_page(s: &AppState, caller: &Caller, chrome: Chrome, issued: Option<String>) -> Page {
    let access = s.lake.access();
    let owner = if chrome.may.admin {
        None
    } else {
        caller.actor.as_ref().map(|a| a.user.clone())
    };
    let tokens = if chrome.may.admin || owner.is_some() {
        access.tokens(owner.as_deref()).await?
    } else {
        Vec::new()
    };
    let (users, audit) = if chrome.may.admin {
        let q = crate::audit::AuditQuery {
            decision: Some(crate::audit::Decision::Refused),
            principal: None,
            since: None,
            until: None,
            before: None,
            limit: 50,
        };
        (access.users().await?, s.lake.audit().page(&q).await?.items)
    } else {
        (Vec::new(), Vec::new())
    };
    let kinds = users
        .iter()
        .map(|u| text(&serde_json::to_value(u.kind).unwrap_or_default()))
        .collect();
    Ok(render(&AdminPage {
        chrome,
        kinds,
        users,
        tokens,
        audit,
        issued,
    }))
}

/// Body of `POST /ui/admin/tokens`.
#[derive(Debug, Deserialize)]
pub struct TokenForm {
    name: String,
    role: String,
    #[serde(default)]
    owner: String,
    days: Option<u32>,
}

/// `POST /ui/admin/tokens`: a new token, shown once on the page that answers.
pub async fn create_token(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(csrf): Extension<Csrf>,
    Form(f): Form<TokenForm>,
) -> Page {
    let role: crate::identity::Role = f.role.parse().map_err(invalid)?;
    let me = caller.actor.as_ref().map(|a| a.user.clone());
    let owner = match (f.owner.trim(), &me) {
        ("", Some(me)) => me.clone(),
        ("", None) => "admin".to_owned(),
        (o, Some(me)) if o == me => me.clone(),
        (o, _) => {
            caller.require(Right::Administer)?;
            o.to_owned()
        }
    };
    let issued = s
        .lake
        .access()
        .issue(crate::identity::TokenRequest {
            name: f.name,
            owner,
            role,
            days: f.days,
        })
        .await?;
    let chrome = Chrome::new("admin", &caller, &csrf);
    let mut r = admin_page(&s, &caller, chrome, Some(issued.token)).await?;
    *r.status_mut() = StatusCode::CREATED;
    Ok(r)
}

/// `POST /ui/admin/tokens/{id}/revoke`: a token revoked (one's own; anyone's for admins).
pub async fn revoke_token(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(csrf): Extension<Csrf>,
    Path(id): Path<String>,
) -> Page {
    let id: uuid::Uuid = id
        .parse()
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such token"))?;
    let access = s.lake.access();
    let token = access.token(id).await?;
    let mine = caller.actor.as_ref().is_some_and(|a| a.user == token.owner);
    if !mine && caller.require(Right::Administer).is_err() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such token",
        ));
    }
    access.revoke(id).await?;
    let chrome = Chrome::new("admin", &caller, &csrf);
    admin_page(&s, &caller, chrome, None).await
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(25_004), "25,004");
        assert_eq!(thousands(10_000_000), "10,000,000");
        assert_eq!(thousands(-1_234), "-1,234");
    }
}
