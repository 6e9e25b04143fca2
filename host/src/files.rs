//! The file service (`/files`, `lake.files()`): a lab uploads a CSV or XLSX file, the lake keeps
//! the bytes in the raw layer and the table parsed from them as Parquet in the processed layer, and
//! two such tables can be merged (joined) in the bundled `merge` step plugin, with the result cached
//! in memory and saved on request.
//!
//! One room per noun: `files/sniff.rs` reads what an upload is (format, CSV dialect, a safe name);
//! `files/upload.rs` stores and parses it; `files/merge.rs` joins two tables and keeps the result
//! cache; `files/save.rs` saves a result as a dataset. This file holds the service's types, its
//! state and the reads of uploaded files.
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

mod merge;
mod save;
mod sniff;
mod upload;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{Dataset, DatasetId, FileRecord, Page, SearchQuery};
use crate::lake::LakeError;
use crate::layers::Layer;

pub use crate::tables::{Column, columns_of};
pub use sniff::detect_format;

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
    /// Memory the result holds in the merge cache, bytes (what counts against
    /// `[files] merge_cache_bytes`).
    pub bytes: u64,
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

/// The file service's own state inside [`crate::lake::Lake`]: the merge cache, the upload commit lock, and the
/// settings it reads on every request.
#[derive(Debug)]
pub(crate) struct FileState {
    merges: merge::MergeCache,
    /// Serialises the duplicate check with the insert it guards.
    commit: tokio::sync::Mutex<()>,
    preview_rows: usize,
    /// Rows per Parquet row group of every table the lake writes.
    pub(crate) row_group_rows: usize,
    /// Instances an inner or left merge runs on.
    merge_workers: usize,
}

impl FileState {
    pub(crate) fn new(cfg: &crate::config::FilesConfig) -> Self {
        Self {
            merges: merge::MergeCache::new(cfg),
            commit: tokio::sync::Mutex::new(()),
            preview_rows: cfg.preview_rows,
            row_group_rows: cfg.row_group_rows,
            merge_workers: crate::config::instances(cfg.merge_parallelism),
        }
    }
}

crate::lake::service! {
    /// The file service: uploads, merges, saved merges.
    Files, files, FileState = files
}

impl Files<'_> {
    /// Deletes an object no row names (best effort: the store may be down).
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
}

/// The file an uploaded-file dataset describes.
fn file_info(d: &Dataset) -> Option<FileInfo> {
    let mut info: FileInfo = serde_json::from_value(d.metadata.get("file")?.clone()).ok()?;
    info.file_id = d.id;
    Some(info)
}
