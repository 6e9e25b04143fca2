//! The file service (`/files`): a lab uploads a CSV or XLSX file, the lake keeps the bytes in the
//! raw layer and the table parsed from them as Parquet in the processed layer, and two such tables
//! can be merged (joined) in the bundled `merge` step plugin, with the result cached in memory and
//! saved on request.
//!
//! An upload streams into its final raw key while it is hashed; the format is read from the first
//! bytes (the extension only breaks ties); the parser plugin's batches stream into a Parquet object
//! as they come, so neither the file nor the table is ever whole in memory. Only then are both
//! datasets cataloged, in one transaction with their `registration` and `pipeline` provenance: a
//! failure before that leaves no row, and removes the objects it wrote. Content already uploaded is
//! not stored again (the earlier file is returned); a known name with new content is a new version.
//! A file that cannot be parsed stays cataloged in raw with the reason.
//!
//! Merge results are cached as Arrow under a key derived from the inputs' content hashes, the
//! parameters and the merge plugin's hash; `save_merged` recomputes an expired result from the
//! immutable inputs.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::blob::{self, ByteStream};
use crate::catalog::{
    Dataset, DatasetId, DatasetStatus, FileRecord, NewDataset, Page, SearchQuery,
};
use crate::lake::{Lake, LakeError, check_file_name};
use crate::layers::Layer;
use crate::plugins::{Invocation, InvokeError, Manifest, PluginErrorKind, Table};
use crate::provenance::{Action, NewProvenance};

/// The source name of uploaded files' datasets.
pub const SOURCE: &str = "files";
/// The bundled plugin that joins two tables.
pub const MERGE_PLUGIN: &str = "merge";

/// What the first bytes of an upload say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Delimited text.
    Csv,
    /// An Office Open XML workbook.
    Xlsx,
    /// Neither; the bytes are kept, no table is made.
    Unknown,
}

/// One column of a parsed table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Column {
    /// Name.
    pub name: String,
    /// Arrow type, e.g. `Int64`, `Utf8`, `Date32`.
    #[serde(rename = "type")]
    pub data_type: String,
    /// Whether it may hold nulls.
    pub nullable: bool,
}

/// Why there is no table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ParseFailure {
    /// A short code: `unsupported_format`, `invalid_input`, `timeout`, ...
    pub code: String,
    /// What a person needs to know.
    pub message: String,
}

/// An uploaded file: its bytes in raw, its table (if it parsed) in processed.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileInfo {
    /// The file's id: its raw dataset's id.
    #[schema(value_type = String, format = Uuid)]
    pub file_id: DatasetId,
    /// The (sanitised) file name.
    pub filename: String,
    /// 1 for the first upload of this name, then 2, 3, ... for new content under the same name.
    pub version: u32,
    /// The format read from the content.
    pub format: Format,
    /// How the text was wrapped, when it was: `gzip`, `bzip2`, `xz`, `zstd` or `utf-16` (the
    /// parser decoded it; the raw layer keeps the bytes as uploaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// When it was uploaded.
    pub created_at: DateTime<Utc>,
    /// The raw dataset (bytes) and, when the file parsed, the processed dataset (Parquet table).
    pub dataset_ids: DatasetIds,
    /// Rows of the table.
    pub rows: Option<u64>,
    /// Columns of the table.
    pub columns: Option<usize>,
    /// The table's columns.
    pub schema: Vec<Column>,
    /// Columns stored under another name than the file gives them: an empty header becomes
    /// `column_N`, a repeated one `name_2` (Parquet readers refuse both).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub renamed_columns: Vec<crate::tables::Renamed>,
    /// Why the file has no table, when it has none.
    pub parse_error: Option<ParseFailure>,
    /// True when these bytes were already in the lake: nothing new was stored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// The datasets of one file.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DatasetIds {
    /// The raw dataset holding the uploaded bytes.
    #[schema(value_type = String, format = Uuid)]
    pub raw: DatasetId,
    /// The processed dataset holding the parsed table as Parquet.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub table: Option<DatasetId>,
}

/// Join kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum How {
    /// Rows whose keys are in both tables.
    #[default]
    Inner,
    /// Every row of the first table.
    Left,
    /// Every row of the second table.
    Right,
    /// Every row of both.
    Outer,
}

/// A merge of two uploaded files' tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeSpec {
    /// The left file.
    pub file_id_1: DatasetId,
    /// The right file.
    pub file_id_2: DatasetId,
    /// Key columns, present in both tables.
    pub on: Vec<String>,
    /// Join kind.
    pub how: How,
    /// Suffixes for non-key columns whose names clash.
    pub suffixes: (String, String),
    /// Whether a null key matches a null key (by default it matches nothing).
    pub nulls_equal: bool,
}

/// What a merge request returns.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MergeOutcome {
    /// Pass to `POST /files/save_merged`.
    pub cache_key: String,
    /// True when the result came from the cache.
    pub cached: bool,
    /// Rows of the result.
    pub rows: u64,
    /// Columns of the result.
    pub columns: usize,
    /// The result's columns.
    pub schema: Vec<Column>,
    /// The first rows, as JSON objects.
    #[schema(value_type = Vec<Object>)]
    pub preview: Vec<serde_json::Value>,
}

/// What saving a merge result returns.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SavedMerge {
    /// The new processed dataset.
    #[schema(value_type = String, format = Uuid)]
    pub dataset_id: DatasetId,
    /// Its file.
    pub file: FileRecord,
    /// Rows written.
    pub rows: u64,
    /// Columns written.
    pub columns: usize,
    /// True when the cached result had expired and was computed again.
    pub recomputed: bool,
}

/// Output formats of `save_merged`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SaveFormat {
    /// Apache Parquet (Snappy).
    #[default]
    Parquet,
    /// CSV with a header row.
    Csv,
}

/// A cached merge result.
#[derive(Debug)]
struct Merged {
    spec: MergeSpec,
    table: Table,
    /// The input tables' datasets, for provenance.
    inputs: [DatasetId; 2],
    manifest: Manifest,
    details: serde_json::Value,
}

/// The largest right table an inner or left merge shares out among instances. Measured on 2 cores
/// (BENCHMARKS.md, 2026-12-01): 1M x 1M took 0.66-0.87 s in two instances against 0.92-1.26 s in
/// one; 5M x 5M took 5.8 s and 1.76 GB in two against 5.5 s and 1.28 GB in one.
const MERGE_SPLIT_MAX_RIGHT_ROWS: u64 = 2_000_000;

/// The service's own state inside [`Lake`].
#[derive(Debug)]
pub(crate) struct FileState {
    results: moka::future::Cache<String, Arc<Merged>>,
    /// Every merge asked for, by key, so an expired result can be computed again.
    specs: moka::sync::Cache<String, Arc<MergeSpec>>,
    /// Serialises the duplicate check with the insert it guards.
    commit: tokio::sync::Mutex<()>,
    preview_rows: usize,
    row_group_rows: usize,
    /// Instances an inner or left merge runs on.
    merge_workers: usize,
}

impl FileState {
    pub(crate) fn new(cfg: &crate::config::FilesConfig) -> Self {
        let results = moka::future::Cache::builder()
            .max_capacity(cfg.merge_cache_bytes.0)
            .weigher(|_k: &String, v: &Arc<Merged>| {
                u32::try_from(table_bytes(&v.table)).unwrap_or(u32::MAX)
            })
            .time_to_live(Duration::from_secs(cfg.merge_cache_ttl_secs))
            .build();
        let specs = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_idle(Duration::from_secs(30 * 86_400))
            .build();
        Self {
            results,
            specs,
            commit: tokio::sync::Mutex::new(()),
            preview_rows: cfg.preview_rows,
            row_group_rows: cfg.row_group_rows,
            merge_workers: crate::config::instances(cfg.merge_parallelism),
        }
    }
}

fn table_bytes(t: &Table) -> usize {
    t.batches
        .iter()
        .map(RecordBatch::get_array_memory_size)
        .sum()
}

/// The columns of a schema.
pub fn columns_of(schema: &SchemaRef) -> Vec<Column> {
    schema
        .fields()
        .iter()
        .map(|f| Column {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect()
}

/// Makes a client's file name safe to store: the last path segment, without control characters,
/// at most 255 bytes (the extension kept). `None` when nothing usable is left.
pub fn sanitise_file_name(raw: &str) -> Option<String> {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = last.chars().filter(|c| !c.is_control()).collect();
    let clean = clean.trim().trim_start_matches('.').trim().to_owned();
    if clean.is_empty() {
        return None;
    }
    if clean.len() <= 255 {
        return Some(clean);
    }
    let (stem, ext) = match clean.rsplit_once('.') {
        Some((s, e)) if e.len() <= 16 => (s, format!(".{e}")),
        _ => (clean.as_str(), String::new()),
    };
    let mut cut = 255 - ext.len();
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    Some(format!("{}{ext}", &stem[..cut]))
}

/// Reads the format from the first bytes of a file; the name only decides between plausible ones.
/// `Err` says why the bytes are neither CSV nor XLSX.
pub fn detect_format(head: &[u8], name: &str) -> Result<Format, String> {
    let lower = name.to_ascii_lowercase();
    if head.starts_with(b"PK\x03\x04") {
        let looks_like_workbook = head.windows(19).any(|w| w == b"[Content_Types].xml")
            || head.windows(3).any(|w| w == b"xl/");
        return if looks_like_workbook || lower.ends_with(".xlsx") || lower.ends_with(".xlsm") {
            Ok(Format::Xlsx)
        } else {
            Err("the file is a ZIP archive but not an XLSX workbook".into())
        };
    }
    if head.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        return Err(
            "the file is a legacy Excel (.xls) workbook; save it as .xlsx or CSV and upload that"
                .into(),
        );
    }
    // Compressed text and UTF-16 text are decoded by the csv parser, in the sandbox: the host only
    // recognises them (a table is what labs compress and what Excel's "Unicode text" writes).
    if crate::plugins::text_encoding(head).is_some() {
        return Ok(Format::Csv);
    }
    if head.starts_with(b"%PDF") {
        return Err("the file is a PDF, not a table".into());
    }
    if head.contains(&0) {
        return Err("the file holds binary data, neither CSV nor XLSX".into());
    }
    Ok(Format::Csv)
}

/// The name without a compression suffix: `samples.csv.gz` is a `samples.csv`.
fn without_compression(name: &str) -> &str {
    let lower = name.to_ascii_lowercase();
    [".gz", ".gzip", ".bz2", ".xz", ".zst", ".zstd"]
        .iter()
        .find(|ext| lower.ends_with(*ext))
        .map_or(name, |ext| &name[..name.len() - ext.len()])
}

/// The stem a file's table is named after: `samples.csv.gz` gives `samples`.
fn table_stem(name: &str) -> &str {
    let name = without_compression(name);
    name.rsplit_once('.').map_or(name, |(s, _)| s)
}

/// Parser parameters for a CSV file: the delimiter read from the first line (comma, tab or
/// semicolon; the extension decides for `.tsv`), and Latin-1 when the head is not UTF-8.
/// Compressed or UTF-16 bytes cannot be read here, so the parser is asked to sniff both itself
/// (`"auto"`) once it has decoded them.
fn csv_params(head: &[u8], name: &str) -> Vec<(String, String)> {
    if crate::plugins::text_encoding(head).is_some() {
        let lower = without_compression(name).to_ascii_lowercase();
        let delimiter = if lower.ends_with(".tsv") || lower.ends_with(".tab") {
            "\"\\t\""
        } else {
            "\"auto\""
        };
        return vec![
            ("delimiter".to_owned(), delimiter.to_owned()),
            ("encoding".to_owned(), "\"auto\"".to_owned()),
        ];
    }
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let line_end = text
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .unwrap_or(text.len());
    let line = &text[..line_end];
    let count = |c: u8| line.iter().filter(|&&b| b == c).count();
    let lower = name.to_ascii_lowercase();
    let delimiter = if lower.ends_with(".tsv") || lower.ends_with(".tab") {
        '\t'
    } else {
        let (comma, tab, semi) = (count(b','), count(b'\t'), count(b';'));
        if tab > comma && tab >= semi {
            '\t'
        } else if semi > comma && semi > tab {
            ';'
        } else {
            ','
        }
    };
    let mut params = Vec::new();
    if delimiter != ',' {
        params.push((
            "delimiter".to_owned(),
            serde_json::Value::from(delimiter.to_string()).to_string(),
        ));
    }
    // A cut in the middle of a multi-byte character at the end of the head is not an error.
    let valid_utf8 = match std::str::from_utf8(text) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    };
    if !valid_utf8 {
        params.push(("encoding".to_owned(), "\"latin-1\"".to_owned()));
    }
    params
}

/// Bytes of an upload read to tell its format.
const HEAD_BYTES: usize = 64 << 10;

/// Keeps the first [`HEAD_BYTES`] of a stream as it passes.
fn keep_head(inner: ByteStream) -> (ByteStream, Arc<std::sync::Mutex<Vec<u8>>>) {
    let head = Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = head.clone();
    let stream = inner.map(move |chunk| {
        if let Ok(c) = &chunk {
            let mut h = h.lock().unwrap_or_else(|p| p.into_inner());
            if h.len() < HEAD_BYTES {
                let take = (HEAD_BYTES - h.len()).min(c.len());
                h.extend_from_slice(&c[..take]);
            }
        }
        chunk
    });
    (Box::pin(stream), head)
}

/// A `Write` that hands its bytes to an async consumer in pieces of about 1 MiB.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

const PIECE: usize = 1 << 20;

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE)));
        self.tx
            .blocking_send(Ok(piece))
            .map_err(|_| std::io::Error::other("the store stopped taking the table"))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PIECE {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Writes parsed batches as Parquet into a channel; shared between the parse thread and its caller.
struct ParquetSink {
    /// The writer's end of the channel, until the first schema creates the writer.
    tx: Option<tokio::sync::mpsc::Sender<std::io::Result<Bytes>>>,
    /// A second end, to break the stream when the parse fails (the store then keeps nothing).
    control: Option<tokio::sync::mpsc::Sender<std::io::Result<Bytes>>>,
    writer: Option<parquet::arrow::ArrowWriter<ChannelWriter>>,
    rows: u64,
    row_group_rows: usize,
    /// The schema written: the parser's, with unique column names ([`crate::tables`]).
    written: Option<SchemaRef>,
    /// Columns renamed on the way.
    renamed: Vec<crate::tables::Renamed>,
}

impl ParquetSink {
    fn new(tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>, row_group_rows: usize) -> Self {
        Self {
            control: Some(tx.clone()),
            tx: Some(tx),
            writer: None,
            rows: 0,
            row_group_rows,
            written: None,
            renamed: Vec::new(),
        }
    }

    fn take(&mut self, schema: &SchemaRef, batch: Option<RecordBatch>) -> Result<(), String> {
        if self.writer.is_none() {
            let tx = self
                .tx
                .take()
                .ok_or_else(|| "the table's output was already closed".to_owned())?;
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::SNAPPY)
                .set_max_row_group_row_count(Some(self.row_group_rows))
                .build();
            let w = ChannelWriter {
                tx,
                buf: Vec::with_capacity(PIECE),
            };
            let written = match crate::tables::unique_names(schema) {
                Some((written, renamed)) => {
                    self.renamed = renamed;
                    written
                }
                None => schema.clone(),
            };
            self.writer = Some(
                parquet::arrow::ArrowWriter::try_new(w, written.clone(), Some(props))
                    .map_err(|e| format!("the table cannot be written as Parquet: {e}"))?,
            );
            self.written = Some(written);
        }
        if let (Some(b), Some(w)) = (batch, self.writer.as_mut()) {
            self.rows += b.num_rows() as u64;
            match (&self.written, self.renamed.is_empty()) {
                (Some(schema), false) => w.write(&crate::tables::rename_batch(&b, schema)?),
                _ => w.write(&b),
            }
            .map_err(|e| format!("writing Parquet: {e}"))?;
        }
        Ok(())
    }

    /// Ends the Parquet file (footer included) and the stream; after a failed parse, breaks the
    /// stream instead, so the store discards the partial object.
    fn close(&mut self, ok: bool) -> Result<(), String> {
        let control = self.control.take();
        let writer = self.writer.take();
        self.tx = None;
        if !ok {
            if let Some(c) = control {
                let _ = c.blocking_send(Err(std::io::Error::other("the parse failed")));
            }
            return Ok(());
        }
        drop(control);
        match writer {
            Some(w) => {
                let mut inner = w
                    .into_inner()
                    .map_err(|e| format!("finishing Parquet: {e}"))?;
                inner.send().map_err(|e| e.to_string())
            }
            None => Err("the parser returned no schema".into()),
        }
    }
}

/// A parsed upload, stored but not yet cataloged.
struct Parsed {
    key: String,
    file: FileRecord,
    rows: u64,
    /// The schema as stored (unique column names).
    schema: SchemaRef,
    renamed: Vec<crate::tables::Renamed>,
}

impl Lake {
    fn file_state(&self) -> &FileState {
        &self.files
    }

    /// Uploads one file: bytes to raw (streamed, hashed), table to processed (streamed Parquet).
    /// Returns the file; `duplicate` is set when the same bytes were uploaded before.
    pub async fn upload(&self, filename: &str, body: ByteStream) -> Result<FileInfo, LakeError> {
        let plugins = self.running_plugins()?.clone();
        let name = sanitise_file_name(filename).ok_or_else(|| {
            LakeError::Invalid(format!(
                "invalid file name {filename:?}: nothing is left of it once path and control characters are removed"
            ))
        })?;
        check_file_name(&name)?;
        let raw_id = DatasetId::new();
        let raw_bucket = self.bucket(Layer::Raw).to_owned();
        let raw_prefix = format!("{SOURCE}/{raw_id}/");
        let raw_key = format!("{raw_prefix}{name}");

        let (stream, head) = keep_head(body);
        let (stream, hash) = blob::hashing(stream, Some(self.settings().max_upload_bytes));
        let size = self.blobs().put(&raw_bucket, &raw_key, stream).await?;
        let (sha, _) = hash.finish();
        let sha = sha.to_hex();
        let head = std::mem::take(&mut *head.lock().unwrap_or_else(|p| p.into_inner()));

        // Known bytes: drop the copy just written and answer with the file that has them.
        if let Some(existing) = self.file_with_sha(&sha).await? {
            self.discard(&raw_bucket, &raw_key).await;
            return Ok(FileInfo {
                duplicate: true,
                ..existing
            });
        }
        let raw_file = FileRecord {
            name: name.clone(),
            size,
            sha256: sha.clone(),
            content_type: crate::lake::content_type_for(&name).to_owned(),
            created_at: Utc::now(),
        };

        let detected = detect_format(&head, &name);
        let (format, parser, params) = match &detected {
            Ok(Format::Csv) => (Format::Csv, "csv", csv_params(&head, &name)),
            Ok(Format::Xlsx) => (Format::Xlsx, "xlsx", Vec::new()),
            Ok(Format::Unknown) | Err(_) => (Format::Unknown, "", Vec::new()),
        };
        let table_id = DatasetId::new();
        let (parsed, run) = if format == Format::Unknown {
            let why = detected
                .err()
                .unwrap_or_else(|| "the format is not known".into());
            (
                Err(ParseFailure {
                    code: "unsupported_format".into(),
                    message: why,
                }),
                None,
            )
        } else {
            let run = self
                .parse_upload(
                    &plugins,
                    parser,
                    params.clone(),
                    &raw_bucket,
                    &raw_key,
                    &name,
                    table_id,
                )
                .await;
            match run {
                Ok((parsed, inv)) => (parsed, Some((inv, params))),
                Err(e) => {
                    // No row will name the raw object: remove it (best effort; the store may be down).
                    self.discard(&raw_bucket, &raw_key).await;
                    return Err(e);
                }
            }
        };

        // Catalog both datasets (or the raw one alone) with their provenance, in one transaction.
        let _guard = self.file_state().commit.lock().await;
        if let Some(existing) = self.file_with_sha(&sha).await? {
            // The same bytes finished uploading meanwhile.
            self.discard(&raw_bucket, &raw_key).await;
            if let Ok(p) = &parsed {
                self.discard(self.bucket(Layer::Processed), &p.key).await;
            }
            return Ok(FileInfo {
                duplicate: true,
                ..existing
            });
        }
        let version = self.next_version(&name).await?;
        let info = FileInfo {
            file_id: raw_id,
            filename: name.clone(),
            version,
            format,
            encoding: crate::plugins::text_encoding(&head).map(str::to_owned),
            size,
            sha256: sha.clone(),
            created_at: raw_file.created_at,
            dataset_ids: DatasetIds {
                raw: raw_id,
                table: parsed.as_ref().ok().map(|_| table_id),
            },
            rows: parsed.as_ref().ok().map(|p| p.rows),
            columns: parsed.as_ref().ok().map(|p| p.schema.fields().len()),
            schema: parsed
                .as_ref()
                .map(|p| columns_of(&p.schema))
                .unwrap_or_default(),
            renamed_columns: parsed
                .as_ref()
                .map(|p| p.renamed.clone())
                .unwrap_or_default(),
            parse_error: parsed.as_ref().err().cloned(),
            duplicate: false,
        };
        let today = Utc::now().format("%Y-%m-%d").to_string();
        let raw = NewDataset {
            id: raw_id,
            name: name.clone(),
            source: SOURCE.into(),
            external_id: Some(name.clone()),
            layer: Layer::Raw,
            bucket: raw_bucket.clone(),
            prefix: raw_prefix,
            metadata: serde_json::json!({
                "source": SOURCE, "date": today, "version": version.to_string(), "file": info,
            }),
            tags: vec![],
            status: DatasetStatus::Ready,
            promoted_from: None,
        };
        let mut datasets = vec![(raw, vec![raw_file.clone()])];
        let mut provenance = vec![NewProvenance {
            action: Action::Registration,
            inputs: vec![],
            outputs: vec![raw_id],
            parameters: serde_json::json!({
                "upload": {"filename": filename, "stored_as": name, "version": version},
                "files": [{"name": name, "sha256": sha, "size": size}],
            }),
            notes: None,
            actor: None,
        }];
        if let Some((inv, params)) = &run {
            let mut details = run_details(inv, params_json(params), Some(&name), Layer::Processed);
            match &parsed {
                Ok(p) => {
                    details["status"] = "succeeded".into();
                    details["rows"] = p.rows.into();
                    details["columns"] = p.schema.fields().len().into();
                    details["output_file"] = serde_json::json!({"name": p.file.name, "size": p.file.size, "sha256": p.file.sha256});
                    let table = NewDataset {
                        id: table_id,
                        name: format!("{name} (table)"),
                        source: SOURCE.into(),
                        external_id: Some(name.clone()),
                        layer: Layer::Processed,
                        bucket: self.bucket(Layer::Processed).to_owned(),
                        prefix: format!("{SOURCE}/{table_id}/"),
                        metadata: serde_json::json!({
                            "source": SOURCE, "date": today, "version": version.to_string(),
                            "file_id": raw_id, "rows": p.rows, "columns": columns_of(&p.schema),
                        }),
                        tags: vec![],
                        status: DatasetStatus::Ready,
                        promoted_from: None,
                    };
                    datasets.push((table, vec![p.file.clone()]));
                    provenance.push(NewProvenance {
                        action: Action::Pipeline,
                        inputs: vec![raw_id],
                        outputs: vec![table_id],
                        parameters: details,
                        notes: None,
                        actor: None,
                    });
                }
                Err(f) => {
                    details["status"] = "failed".into();
                    details["error"] = serde_json::json!({"code": f.code, "message": f.message});
                    provenance.push(NewProvenance {
                        action: Action::Pipeline,
                        inputs: vec![raw_id],
                        outputs: vec![],
                        parameters: details,
                        notes: None,
                        actor: None,
                    });
                }
            }
        }
        if let Err(e) = self.catalog().insert_datasets(&datasets, &provenance).await {
            self.discard(&raw_bucket, &raw_key).await;
            if let Ok(p) = &parsed {
                self.discard(self.bucket(Layer::Processed), &p.key).await;
            }
            return Err(e.into());
        }
        metrics::counter!("lake_files_uploaded_total", "format" => match format {
            Format::Csv => "csv",
            Format::Xlsx => "xlsx",
            Format::Unknown => "unknown",
        })
        .increment(1);
        Ok(info)
    }

    /// Parses a stored upload with `parser`, streaming the table as Parquet into the processed
    /// layer. The outer error is the store's; the inner one is why the file has no table.
    #[allow(clippy::too_many_arguments)]
    async fn parse_upload(
        &self,
        plugins: &crate::plugins::Plugins,
        parser: &str,
        params: Vec<(String, String)>,
        bucket: &str,
        key: &str,
        name: &str,
        table_id: DatasetId,
    ) -> Result<(Result<Parsed, ParseFailure>, Invocation<SchemaRef>), LakeError> {
        let input = self.blobs().get(bucket, key).await?;
        let out_name = format!("{}.parquet", table_stem(name));
        let out_bucket = self.bucket(Layer::Processed).to_owned();
        let out_key = format!("{SOURCE}/{table_id}/{out_name}");
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        let sink = Arc::new(std::sync::Mutex::new(ParquetSink::new(
            tx,
            self.file_state().row_group_rows,
        )));
        let (out_stream, out_hash) = blob::hashing(Box::pin(tokio_stream_of(rx)), None);

        let writer = sink.clone();
        let parse = async {
            let inv = plugins
                .parse_into(parser, params, input, move |schema, batch| {
                    writer
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take(schema, batch)
                })
                .await;
            let ok = inv.result.is_ok();
            let closer = sink.clone();
            let closed = tokio::task::spawn_blocking(move || {
                closer.lock().unwrap_or_else(|p| p.into_inner()).close(ok)
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
            (inv, closed)
        };
        let put = self.blobs().put(&out_bucket, &out_key, out_stream);
        let ((inv, closed), put) = tokio::join!(parse, put);
        let (rows, written, renamed) = {
            let mut sink = sink.lock().unwrap_or_else(|p| p.into_inner());
            (
                sink.rows,
                sink.written.take(),
                std::mem::take(&mut sink.renamed),
            )
        };

        let schema = match (&inv.result, closed, put) {
            // The store failed (reading the upload back or taking the table): not the file's fault.
            (Err(InvokeError::Sink(e) | InvokeError::Input(e)), _, put) => {
                self.discard(&out_bucket, &out_key).await;
                return Err(match put {
                    Err(pe) => pe.into(),
                    Ok(_) => LakeError::Unavailable(format!("storing the parsed table: {e}")),
                });
            }
            (Err(e), _, put) => {
                // The broken stream made the put fail, so nothing is stored; make sure of it.
                if put.is_ok() {
                    self.discard(&out_bucket, &out_key).await;
                }
                let failure = parse_failure(e);
                return Ok((Err(failure), inv));
            }
            (Ok(_), Err(e), _) => {
                self.discard(&out_bucket, &out_key).await;
                return Err(LakeError::Unavailable(format!(
                    "writing the parsed table: {e}"
                )));
            }
            (Ok(_), Ok(()), Err(e)) => return Err(e.into()),
            (Ok(schema), Ok(()), Ok(size)) => (written.unwrap_or_else(|| schema.clone()), size),
        };
        let (schema, size) = schema;
        let (sha, _) = out_hash.finish();
        Ok((
            Ok(Parsed {
                key: out_key,
                file: FileRecord {
                    name: out_name.clone(),
                    size,
                    sha256: sha.to_hex(),
                    content_type: crate::lake::content_type_for(&out_name).to_owned(),
                    created_at: Utc::now(),
                },
                rows,
                schema,
                renamed,
            }),
            inv,
        ))
    }

    async fn discard(&self, bucket: &str, key: &str) {
        if let Err(e) = self.blobs().delete(bucket, key).await {
            tracing::warn!(bucket, key, error = %e, "An uncataloged object was left behind");
        }
    }

    /// Uploaded files (raw datasets of source `files`) matching `q`, newest first.
    async fn uploads(&self, q: SearchQuery) -> Result<Page<FileInfo>, LakeError> {
        let page = self
            .catalog()
            .search(&SearchQuery {
                layer: Some(Layer::Raw),
                source: Some(SOURCE.into()),
                ..q
            })
            .await?;
        Ok(Page {
            items: page.items.iter().filter_map(file_info).collect(),
            next_cursor: page.next_cursor,
        })
    }

    /// The uploaded file holding these bytes, if any.
    async fn file_with_sha(&self, sha: &str) -> Result<Option<FileInfo>, LakeError> {
        let page = self
            .uploads(SearchQuery {
                sha256: Some(sha.to_owned()),
                limit: 1,
                ..SearchQuery::default()
            })
            .await?;
        Ok(page.items.into_iter().next())
    }

    /// The version a new upload named `name` gets: one more than the newest upload of that name.
    async fn next_version(&self, name: &str) -> Result<u32, LakeError> {
        let page = self
            .uploads(SearchQuery {
                external_id: Some(name.to_owned()),
                limit: 1,
                ..SearchQuery::default()
            })
            .await?;
        Ok(page.items.first().map_or(0, |f| f.version) + 1)
    }

    /// One uploaded file.
    pub async fn file(&self, id: DatasetId) -> Result<FileInfo, LakeError> {
        let d = self.get_dataset(id).await.map_err(|e| match e {
            LakeError::NotFound(_) => LakeError::NotFound(format!("no file with id {id}")),
            other => other,
        })?;
        file_info(&d).ok_or_else(|| {
            LakeError::NotFound(format!(
                "no file with id {id} (dataset {id} exists but was not uploaded through /files)"
            ))
        })
    }

    /// Uploaded files, newest first.
    pub async fn list_uploads(
        &self,
        limit: u32,
        after: Option<DatasetId>,
        offset: u64,
    ) -> Result<Page<FileInfo>, LakeError> {
        self.uploads(SearchQuery {
            limit,
            after,
            offset,
            ..SearchQuery::default()
        })
        .await
    }

    /// The table of an uploaded file, or why there is none.
    async fn file_table(&self, f: &FileInfo) -> Result<(Dataset, String), LakeError> {
        let Some(table_id) = f.dataset_ids.table else {
            let why = f
                .parse_error
                .as_ref()
                .map_or_else(|| "it was not parsed".to_owned(), |e| e.message.clone());
            return Err(LakeError::Invalid(format!(
                "file {} ({}) has no table to merge: {why}",
                f.file_id, f.filename
            )));
        };
        let d = self.get_dataset(table_id).await?;
        let files = self.catalog().list_files(table_id).await?;
        let sha = files
            .iter()
            .find(|f| f.name.ends_with(".parquet"))
            .map(|f| f.sha256.clone())
            .ok_or_else(|| LakeError::Invalid(format!("dataset {table_id} holds no table")))?;
        Ok((d, sha))
    }

    /// Joins two uploaded files' tables in the `merge` plugin, or serves the result from the cache.
    pub async fn merge(
        &self,
        spec: MergeSpec,
        preview: Option<usize>,
    ) -> Result<MergeOutcome, LakeError> {
        if spec.on.is_empty() || spec.on.iter().any(|c| c.trim().is_empty()) {
            return Err(LakeError::Invalid(
                "on: name at least one key column (several: on=a,b)".into(),
            ));
        }
        let preview = preview.unwrap_or(self.file_state().preview_rows);
        if preview > 10_000 {
            return Err(LakeError::Invalid("preview: at most 10000 rows".into()));
        }
        let (left, right) = tokio::try_join!(self.file(spec.file_id_1), self.file(spec.file_id_2))?;
        for (side, f) in [("file_id_1", &left), ("file_id_2", &right)] {
            for key in &spec.on {
                if !f.schema.is_empty() && !f.schema.iter().any(|c| &c.name == key) {
                    let names: Vec<&str> = f.schema.iter().map(|c| c.name.as_str()).collect();
                    return Err(LakeError::Invalid(format!(
                        "no column {key:?} in {side} ({}); its columns are {names:?}",
                        f.filename
                    )));
                }
            }
        }
        let (cache_key, inputs) = self.merge_key(&spec, &left, &right).await?;
        let state = self.file_state();
        state
            .specs
            .insert(cache_key.clone(), Arc::new(spec.clone()));
        // Concurrent requests for one uncached merge share a single computation.
        let computed = std::sync::atomic::AtomicBool::new(false);
        let merged = state
            .results
            .try_get_with(cache_key.clone(), async {
                computed.store(true, std::sync::atomic::Ordering::Relaxed);
                self.compute_merge(&spec, inputs).await.map(Arc::new)
            })
            .await
            .map_err(|e: Arc<LakeError>| (*e).clone())?;
        let cached = !computed.load(std::sync::atomic::Ordering::Relaxed);
        Ok(MergeOutcome {
            cache_key,
            cached,
            rows: merged.table.num_rows() as u64,
            columns: merged.table.schema.fields().len(),
            schema: columns_of(&merged.table.schema),
            preview: preview_rows(&merged.table, preview)?,
        })
    }

    async fn merge_key(
        &self,
        spec: &MergeSpec,
        left: &FileInfo,
        right: &FileInfo,
    ) -> Result<(String, [(Dataset, String); 2]), LakeError> {
        let plugins = self.running_plugins()?;
        let manifest = plugins.manifest(MERGE_PLUGIN).await.ok_or_else(|| {
            LakeError::Unavailable("the bundled merge plugin is not loaded".into())
        })?;
        let (l, r) = tokio::try_join!(self.file_table(left), self.file_table(right))?;
        let key_input = serde_json::json!({
            "v": 1,
            "inputs": [l.1, r.1],
            "on": spec.on, "how": spec.how, "suffixes": spec.suffixes, "nulls_equal": spec.nulls_equal,
            "plugin": manifest.sha256,
        });
        let key = blob::Sha256::of(key_input.to_string().as_bytes()).to_hex();
        Ok((key, [l, r]))
    }

    async fn compute_merge(
        &self,
        spec: &MergeSpec,
        inputs: [(Dataset, String); 2],
    ) -> Result<Merged, LakeError> {
        let plugins = self.running_plugins()?;
        let [(l, _), (r, _)] = inputs;
        let started = std::time::Instant::now();
        let (lt, rt) = tokio::try_join!(self.read_table(&l), self.read_table(&r))?;
        let read = started.elapsed();
        let params = merge_params(spec);
        // Each left batch's rows depend on it and the right table alone in an inner or left join,
        // so its batches can be shared out among instances that each index the right table.
        // Right and outer joins also need every left row to know which right rows went unmatched.
        // Each instance indexes its own copy of the right table: past MERGE_SPLIT_MAX_RIGHT_ROWS
        // the copies cost more memory than the second core saves time.
        let small_right = rt.rows.is_some_and(|n| n <= MERGE_SPLIT_MAX_RIGHT_ROWS);
        let workers = match spec.how {
            How::Inner | How::Left if small_right => self.file_state().merge_workers,
            _ => 1,
        };
        let inv = plugins
            .step_split(MERGE_PLUGIN, params.clone(), vec![rt], lt, workers)
            .await;
        tracing::info!(
            read_s = read.as_secs_f64(),
            plugin_s = inv.usage.wall.as_secs_f64(),
            total_s = started.elapsed().as_secs_f64(),
            peak_memory = inv.usage.peak_memory_bytes,
            "merge computed"
        );
        let manifest = inv.manifest.clone().ok_or_else(|| {
            LakeError::Unavailable("the bundled merge plugin is not loaded".into())
        })?;
        let details = run_details(&inv, params_json(&params), None, Layer::Processed);
        match inv.result {
            Ok(table) => Ok(Merged {
                spec: spec.clone(),
                table,
                inputs: [l.id, r.id],
                manifest,
                details,
            }),
            Err(InvokeError::Plugin {
                kind: PluginErrorKind::InvalidParams | PluginErrorKind::InvalidInput,
                message,
            }) => Err(LakeError::Invalid(message)),
            Err(InvokeError::MemoryLimit(m)) => Err(LakeError::TooLarge(format!(
                "the merge needs more memory than the merge plugin is granted ({m}); raise [plugins.overrides.merge] memory"
            ))),
            Err(InvokeError::Timeout(t)) => Err(LakeError::TooLarge(format!(
                "the merge did not finish within the merge plugin's time limit ({t:?}); raise [plugins.overrides.merge] timeout_secs"
            ))),
            Err(e) => Err(LakeError::Unavailable(format!("the merge failed: {e}"))),
        }
    }

    /// Saves a merge result as a processed dataset with `pipeline` provenance from both inputs, and
    /// evicts it from the cache. An expired result is computed again from the inputs.
    pub async fn save_merged(
        &self,
        cache_key: &str,
        name: &str,
        format: SaveFormat,
    ) -> Result<SavedMerge, LakeError> {
        let state = self.file_state();
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(LakeError::Invalid(
                "name: must be 1 to 200 characters".into(),
            ));
        }
        let (merged, recomputed) = match state.results.get(cache_key).await {
            Some(m) => (m, false),
            None => {
                let spec = state.specs.get(cache_key).ok_or_else(|| {
                    LakeError::NotFound(format!(
                        "no merge with cache key {cache_key:?} is known here; run GET /files/merge again"
                    ))
                })?;
                let (left, right) =
                    tokio::try_join!(self.file(spec.file_id_1), self.file(spec.file_id_2))?;
                let (key, inputs) = self.merge_key(&spec, &left, &right).await?;
                if key != cache_key {
                    return Err(LakeError::Conflict(format!(
                        "the merge behind {cache_key:?} can no longer be reproduced (the merge plugin changed); run GET /files/merge again"
                    )));
                }
                (Arc::new(self.compute_merge(&spec, inputs).await?), true)
            }
        };
        let stem = sanitise_file_name(name)
            .map(|n| n.replace(['.', ' '], "_"))
            .unwrap_or_else(|| "merged".into());
        let (file_name, bytes) = match format {
            SaveFormat::Parquet => (
                format!("{stem}.parquet"),
                crate::pipeline::write_parquet(&merged.table).map_err(LakeError::Invalid)?,
            ),
            SaveFormat::Csv => (format!("{stem}.csv"), write_csv(&merged.table)?),
        };
        let id = DatasetId::new();
        let bucket = self.bucket(Layer::Processed).to_owned();
        let prefix = format!("{SOURCE}/{id}/");
        let key = format!("{prefix}{file_name}");
        let sha = blob::Sha256::of(&bytes).to_hex();
        let size = bytes.len() as u64;
        let body: ByteStream = Box::pin(futures::stream::once(async move {
            Ok::<_, std::io::Error>(Bytes::from(bytes))
        }));
        self.blobs().put(&bucket, &key, body).await?;
        let file = FileRecord {
            name: file_name.clone(),
            size,
            sha256: sha.clone(),
            content_type: crate::lake::content_type_for(&file_name).to_owned(),
            created_at: Utc::now(),
        };
        let rows = merged.table.num_rows() as u64;
        let columns = merged.table.schema.fields().len();
        let mut details = merged.details.clone();
        details["status"] = "succeeded".into();
        details["rows"] = rows.into();
        details["columns"] = columns.into();
        details["cache_key"] = cache_key.into();
        details["merge"] = serde_json::to_value(&merged.spec).unwrap_or_default();
        details["output_file"] =
            serde_json::json!({"name": file_name, "size": size, "sha256": sha});
        details["plugin"] = merged.manifest.name.clone().into();
        let new = NewDataset {
            id,
            name: name.to_owned(),
            source: SOURCE.into(),
            external_id: None,
            layer: Layer::Processed,
            bucket: bucket.clone(),
            prefix,
            metadata: serde_json::json!({
                "source": SOURCE, "date": Utc::now().format("%Y-%m-%d").to_string(), "version": "1",
                "rows": rows, "columns": columns_of(&merged.table.schema),
                "merge": {"cache_key": cache_key, "file_ids": [merged.spec.file_id_1, merged.spec.file_id_2]},
            }),
            tags: vec![],
            status: DatasetStatus::Ready,
            promoted_from: None,
        };
        let prov = NewProvenance {
            action: Action::Pipeline,
            inputs: merged.inputs.to_vec(),
            outputs: vec![id],
            parameters: details,
            notes: None,
            actor: None,
        };
        if let Err(e) = self
            .catalog()
            .insert_dataset(&new, std::slice::from_ref(&file), Some(&prov))
            .await
        {
            self.discard(&bucket, &key).await;
            return Err(e.into());
        }
        state.results.invalidate(cache_key).await;
        Ok(SavedMerge {
            dataset_id: id,
            file,
            rows,
            columns,
            recomputed,
        })
    }
}

/// The file an uploaded-file dataset describes.
fn file_info(d: &Dataset) -> Option<FileInfo> {
    let mut info: FileInfo = serde_json::from_value(d.metadata.get("file")?.clone()).ok()?;
    info.file_id = d.id;
    Some(info)
}

fn parse_failure(e: &InvokeError) -> ParseFailure {
    let code = match e {
        InvokeError::Plugin { kind, .. } => kind.as_str(),
        other => other.code(),
    };
    let message = match e {
        InvokeError::Plugin { message, .. } => message.clone(),
        other => other.to_string(),
    };
    ParseFailure {
        code: code.to_owned(),
        message,
    }
}

fn merge_params(spec: &MergeSpec) -> Vec<(String, String)> {
    let how = match spec.how {
        How::Inner => "inner",
        How::Left => "left",
        How::Right => "right",
        How::Outer => "outer",
    };
    vec![
        ("on".into(), serde_json::json!(spec.on).to_string()),
        ("how".into(), serde_json::json!(how).to_string()),
        (
            "suffixes".into(),
            serde_json::json!([spec.suffixes.0, spec.suffixes.1]).to_string(),
        ),
        ("nulls_equal".into(), spec.nulls_equal.to_string()),
        // The inputs go in as (right, left): the plugin indexes the right table, then joins each
        // left batch as it arrives and hands its rows back at once, so neither the whole left
        // table nor the whole result sits in the plugin's memory.
        ("right_first".into(), "true".into()),
    ]
}

/// Plugin parameters as the JSON object provenance records: each value parsed as JSON where it
/// is JSON, else kept as a string.
fn params_json(params: &[(String, String)]) -> serde_json::Value {
    params
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.clone())),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// What a `pipeline` provenance entry says about an invocation, before its outcome.
pub(crate) fn run_details<T>(
    inv: &Invocation<T>,
    params: serde_json::Value,
    input_file: Option<&str>,
    target_layer: Layer,
) -> serde_json::Value {
    let m = inv.manifest.as_ref();
    serde_json::json!({
        "plugin": m.map(|m| m.name.clone()),
        "plugin_version": m.map(|m| m.version.clone()),
        "component_sha256": m.map(|m| m.sha256.clone()),
        "wit_version": m.map(|m| m.wit_version.clone()),
        "kind": m.map(|m| m.kind),
        "params": params,
        "input_file": input_file,
        "target_layer": target_layer,
        "limits": inv.limits,
        "usage": inv.usage,
    })
}

/// The first `n` rows as JSON objects.
fn preview_rows(table: &Table, n: usize) -> Result<Vec<serde_json::Value>, LakeError> {
    let mut left = n;
    let mut out = Vec::new();
    for b in &table.batches {
        if left == 0 {
            break;
        }
        let take = left.min(b.num_rows());
        let slice = b.slice(0, take);
        let mut w = arrow_json::ArrayWriter::new(Vec::new());
        w.write(&slice)
            .and_then(|()| w.finish())
            .map_err(|e| LakeError::Invalid(format!("the preview cannot be shown as JSON: {e}")))?;
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&w.into_inner())
            .map_err(|e| LakeError::Invalid(format!("the preview cannot be shown as JSON: {e}")))?;
        out.extend(rows);
        left -= take;
    }
    Ok(out)
}

fn write_csv(table: &Table) -> Result<Vec<u8>, LakeError> {
    let mut buf = Vec::new();
    {
        let mut w = arrow_csv::WriterBuilder::new()
            .with_header(true)
            .build(&mut buf);
        for b in &table.batches {
            w.write(b).map_err(|e| {
                LakeError::Invalid(format!("the result cannot be written as CSV: {e}"))
            })?;
        }
    }
    if table.batches.is_empty() {
        let names: Vec<&str> = table
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        buf.extend_from_slice(names.join(",").as_bytes());
        buf.push(b'\n');
    }
    Ok(buf)
}

/// A receiver as a stream.
pub(crate) fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_lose_their_paths_and_controls() -> Result<(), String> {
        let cases = [
            ("../../etc/passwd", Some("passwd")),
            ("C:\\Users\\me\\plate 1.csv", Some("plate 1.csv")),
            ("a\u{0}b\nc.csv", Some("abc.csv")),
            ("..", None),
            ("/", None),
            ("  .hidden.csv ", Some("hidden.csv")),
        ];
        for (raw, want) in cases {
            let got = sanitise_file_name(raw);
            if got.as_deref() != want {
                return Err(format!("{raw:?}: got {got:?}, want {want:?}"));
            }
        }
        let long = format!("{}.xlsx", "x".repeat(400));
        let cut = sanitise_file_name(&long).ok_or("long name vanished")?;
        if cut.len() != 255 || !cut.ends_with(".xlsx") {
            return Err(format!("long name cut badly: {} bytes", cut.len()));
        }
        Ok(())
    }

    #[test]
    fn formats_come_from_content() -> Result<(), String> {
        let zip_xlsx = b"PK\x03\x04\x14\x00\x00\x00[Content_Types].xml";
        let checks: [(&[u8], &str, Result<Format, ()>); 7] = [
            (b"a,b\n1,2\n", "data.xlsx", Ok(Format::Csv)),
            (zip_xlsx, "data.csv", Ok(Format::Xlsx)),
            (b"PK\x03\x04plain zip", "x.zip", Err(())),
            (b"PK\x03\x04plain zip", "x.xlsx", Ok(Format::Xlsx)),
            (
                &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1, 0],
                "old.xls",
                Err(()),
            ),
            (&[0x1F, 0x8B, 8, 0], "t.csv.gz", Ok(Format::Csv)),
            (b"ab\0cd", "t.csv", Err(())),
        ];
        for (head, name, want) in checks {
            let got = detect_format(head, name).map_err(|_| ());
            if got != want {
                return Err(format!("{name}: got {got:?}, want {want:?}"));
            }
        }
        Ok(())
    }

    #[test]
    fn csv_delimiter_and_encoding_are_sniffed() -> Result<(), String> {
        let p = |head: &[u8], name: &str| csv_params(head, name);
        if !p(b"a,b,c\n1,2,3", "x.csv").is_empty() {
            return Err("plain CSV needs no parameters".into());
        }
        if p(b"a\tb\tc\n", "x.txt") != vec![("delimiter".to_owned(), "\"\\t\"".to_owned())] {
            return Err(format!("tabs: {:?}", p(b"a\tb\tc\n", "x.txt")));
        }
        if p(b"a;b;c\n1,5;2;3", "x.csv")[0].1 != "\";\"" {
            return Err("semicolons".into());
        }
        if !p(b"name\ncaf\xe9\n", "x.csv")
            .iter()
            .any(|(k, v)| k == "encoding" && v == "\"latin-1\"")
        {
            return Err("latin-1 not detected".into());
        }
        // A head that ends inside a UTF-8 character is still UTF-8.
        if !p(b"name\ncaf\xc3", "x.csv").is_empty() {
            return Err("a cut character is not Latin-1".into());
        }
        Ok(())
    }
}
