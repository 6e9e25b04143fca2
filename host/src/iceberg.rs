//! The Iceberg catalog: the lake's tables as Apache Iceberg tables, for engines (Spark, Trino,
//! DuckDB, PyIceberg) that speak the Iceberg REST catalog (`/iceberg`, `http/iceberg.rs`).
//!
//! Namespaces are the four layers. A table is a chain of versions: the datasets of one layer
//! that share a source and a name and each hold one Parquet file (`files.csv` uploaded three
//! times is one table with three versions; a promoted table is the same chain one layer up). Each
//! chain gets a readable name, unique in its layer, the first time the catalog sees it
//! (`samples` for `samples.csv (table)`; `files_samples`, then `files_samples_2`, when the name is
//! taken), kept for good in the catalog (`TableNames`).
//!
//! A table describes every ready version as a snapshot (sequence numbers by position in the
//! chain, deleted versions left out), tagged `version-N`, the newest current. The files that say
//! so are written by `lake-iceberg` and stored next to the data, under the version's own prefix
//! (`{prefix}metadata/`): a manifest and a manifest list per version, and a metadata JSON per set
//! of versions (its key holds a digest of the versions' ids). They are written when a version is
//! made (`publish`, from a task of its own after the commit that records it), or else the first
//! time that set of versions is loaded (a table made before the catalog existed, a task that did
//! not finish), and from then on only read. Every one of them is derived from
//! immutable data, so writing one twice (two replicas at once) writes the same bytes. The data
//! files are referenced where they are; engines read them with their own credentials, told the
//! store's endpoint in the table's config.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::blob::BlobError;
use crate::catalog::{CatalogError, Constraint, Dataset, DatasetStatus, TableName};
use crate::identity::Visibility;
use crate::lake::LakeError;
use crate::layers::Layer;

crate::lake::service! {
    /// The Iceberg catalog: the lake's table chains as read-only Iceberg tables.
    Iceberg, iceberg
}

/// What `LoadTable` answers.
#[derive(Debug, Clone)]
pub struct LoadedTable {
    /// Where the metadata JSON is stored (`file://`, `s3://`).
    pub metadata_location: String,
    /// The table metadata.
    pub metadata: Value,
    /// What an engine needs to read the files (the S3 endpoint, region, addressing).
    pub config: BTreeMap<String, String>,
}

/// A page of a layer's tables.
#[derive(Debug, Clone)]
pub struct TablePage {
    /// Table names, in order.
    pub names: Vec<String>,
    /// The token of the next page, if there is one.
    pub next: Option<String>,
}

/// Chains named per round while naming new tables.
const NAMING_ROUND: u32 = 500;

/// Where the Iceberg catalog keeps the files describing the dataset version at `prefix`: the
/// one place that spells the layout (writers here, the delete that takes them along, fsck).
pub fn metadata_prefix(prefix: &str) -> String {
    format!("{prefix}{METADATA_DIR}")
}

/// The dataset prefix whose Iceberg files live under `prefix`, if `prefix` is such a place.
pub fn described_prefix(prefix: &str) -> Option<&str> {
    prefix
        .strip_suffix(METADATA_DIR)
        .filter(|parent| !parent.is_empty())
}

/// The directory under a dataset's prefix holding its Iceberg files.
const METADATA_DIR: &str = "metadata/";

/// A chain's readable name: the dataset name without the lake's ` (table)` and the file's
/// extensions, in lower case, letters and digits joined by `_` (`GSE1_series matrix.txt.gz
/// (table)` is `gse1_series_matrix`), never empty, never starting with a digit, at most 64
/// characters.
pub fn readable_name(dataset_name: &str) -> String {
    let text = dataset_name.replace(" (table)", "");
    let (base, rest) = match text.find(" (") {
        Some(i) => (&text[..i], &text[i..]),
        None => (text.as_str(), ""),
    };
    let mut base = base;
    while let Some((stem, ext)) = base.rsplit_once('.') {
        let is_extension = ext.len() <= 8
            && ext.chars().all(|c| c.is_ascii_alphanumeric())
            && ext.chars().any(|c| c.is_ascii_alphabetic());
        if !is_extension || stem.is_empty() {
            break;
        }
        base = stem;
    }
    let mut out = String::new();
    for c in format!("{base}{rest}").chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let mut out = out.trim_matches('_').to_owned();
    if out.is_empty() {
        out = "table".into();
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "t_");
    }
    out.truncate(64);
    out.trim_end_matches('_').to_owned()
}

/// The names a chain may take, in order of preference.
fn candidate_names(source: &str, dataset_name: &str) -> impl Iterator<Item = String> {
    let own = readable_name(dataset_name);
    let qualified = format!("{}_{own}", readable_name(source));
    [own, qualified.clone()]
        .into_iter()
        .chain((2..).map(move |n| format!("{qualified}_{n}")))
}

/// A version's snapshot id: the low 63 bits of its dataset id (UUIDv7's random part), never 0.
fn snapshot_id(d: &Dataset) -> i64 {
    let bytes = d.id.0.as_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[8..]);
    let id = i64::from_be_bytes(low) & i64::MAX;
    id.max(1)
}

fn unavailable(e: BlobError) -> LakeError {
    LakeError::Unavailable(e.to_string())
}

impl Iceberg<'_> {
    /// The namespaces (layers) a caller sees.
    pub fn namespaces(&self, visibility: Visibility) -> Vec<Layer> {
        Layer::ALL
            .into_iter()
            .filter(|l| visibility.sees(*l))
            .collect()
    }

    /// A layer by its namespace name, if the caller sees it.
    pub fn namespace(&self, name: &str, visibility: Visibility) -> Result<Layer, LakeError> {
        let layer = name
            .parse::<Layer>()
            .ok()
            .filter(|l| l.as_str() == name && visibility.sees(*l))
            .ok_or_else(|| {
                LakeError::NotFound(format!(
                    "no namespace {name:?}: the namespaces are the layers {}",
                    self.namespaces(visibility)
                        .iter()
                        .map(|l| l.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        Ok(layer)
    }

    /// Names the layer's chains that have no name yet (oldest first, so the oldest keeps the
    /// plain name).
    async fn name_new_tables(&self, layer: Layer) -> Result<(), LakeError> {
        loop {
            let chains = self.catalog().unnamed_tables(layer, NAMING_ROUND).await?;
            if chains.is_empty() {
                return Ok(());
            }
            let mut named = 0;
            for (source, dataset_name) in &chains {
                if self
                    .name_chain(layer, source, dataset_name)
                    .await?
                    .is_some()
                {
                    named += 1;
                }
            }
            if named == 0 {
                return Err(LakeError::Unavailable(format!(
                    "no name could be given to {} tables of {layer}",
                    chains.len()
                )));
            }
        }
    }

    /// Gives one chain its name (the first of its candidates not taken in the layer), or finds
    /// the one another replica gave it meanwhile; `None` when every candidate is taken.
    async fn name_chain(
        &self,
        layer: Layer,
        source: &str,
        dataset_name: &str,
    ) -> Result<Option<TableName>, LakeError> {
        for name in candidate_names(source, dataset_name).take(1000) {
            let t = TableName {
                layer,
                name,
                source: source.to_owned(),
                dataset_name: dataset_name.to_owned(),
            };
            match self.catalog().name_table(&t).await {
                Ok(()) => return Ok(Some(t)),
                Err(CatalogError::Conflict(c)) if c.constraint == Constraint::TableName => {}
                // Another replica named it meanwhile.
                Err(CatalogError::Conflict(c)) if c.constraint == Constraint::TableChain => {
                    return Ok(self
                        .catalog()
                        .table_name_of(layer, source, dataset_name)
                        .await?);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// A page of a layer's table names, after `page_token` (the last name of the previous page).
    /// The first page names the chains not named yet; the pages after it only read names, so
    /// paging through 10,000 tables does not look for new chains ten times.
    pub async fn tables(
        &self,
        layer: Layer,
        page_token: Option<&str>,
        page_size: u32,
    ) -> Result<TablePage, LakeError> {
        if page_token.is_none_or(str::is_empty) {
            self.name_new_tables(layer).await?;
        }
        let size = page_size.clamp(1, 1000);
        let mut names: Vec<String> = self
            .catalog()
            .table_names(layer, page_token.unwrap_or(""), size + 1)
            .await?
            .into_iter()
            .map(|t| t.name)
            .collect();
        let next = if names.len() > size as usize {
            names.truncate(size as usize);
            names.last().cloned()
        } else {
            None
        };
        Ok(TablePage { names, next })
    }

    /// A table's name record, naming new chains first when it is not known yet.
    async fn find(&self, layer: Layer, name: &str) -> Result<TableName, LakeError> {
        if let Some(t) = self.catalog().table_name(layer, name).await? {
            return Ok(t);
        }
        self.name_new_tables(layer).await?;
        self.catalog()
            .table_name(layer, name)
            .await?
            .ok_or_else(|| LakeError::NotFound(format!("no table {name:?} in namespace {layer}")))
    }

    /// The chain's versions: (sequence number, dataset) of each ready one-file dataset.
    async fn versions(&self, t: &TableName) -> Result<Vec<(i64, Dataset)>, LakeError> {
        let all = self.catalog().table_versions(t).await?;
        Ok(all
            .into_iter()
            .enumerate()
            .filter(|(_, d)| d.status == DatasetStatus::Ready && d.file_count == 1)
            .map(|(i, d)| (i as i64 + 1, d))
            .collect())
    }

    /// A table's current version (its newest ready dataset), if the table exists.
    pub async fn current(&self, layer: Layer, name: &str) -> Result<Option<Dataset>, LakeError> {
        match self.find(layer, name).await {
            Ok(t) => Ok(self.versions(&t).await?.pop().map(|(_, d)| d)),
            Err(LakeError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Describes new versions for engines ahead of their first load, from a task of its own:
    /// each of `ids` that is a table version gets its chain named and its metadata written, so
    /// the files exist as soon as the version does. A failure is logged; the first load writes
    /// what is missing.
    pub fn publish(&self, ids: Vec<crate::catalog::DatasetId>) {
        let lake = self.lake.clone();
        tokio::spawn(async move {
            for id in ids {
                if let Err(e) = lake.iceberg().publish_one(id).await {
                    tracing::warn!(dataset = %id, error = %e, "Iceberg metadata not written yet; the first load writes it");
                }
            }
        });
    }

    async fn publish_one(&self, id: crate::catalog::DatasetId) -> Result<(), LakeError> {
        let d = self.catalog().get_dataset(id).await?;
        if d.status != DatasetStatus::Ready || d.file_count != 1 {
            return Ok(());
        }
        let files = self.catalog().list_files(id).await?;
        if !files.iter().any(|f| f.name.ends_with(".parquet")) {
            return Ok(());
        }
        // This chain alone: a new version must not look through the whole layer.
        let known = self
            .catalog()
            .table_name_of(d.layer, &d.source, &d.name)
            .await?;
        let t = match known {
            Some(t) => t,
            None => match self.name_chain(d.layer, &d.source, &d.name).await? {
                Some(t) => t,
                None => return Ok(()),
            },
        };
        self.load(t.layer, &t.name).await.map(drop)
    }

    /// Whether a table exists (and has a version).
    pub async fn exists(&self, layer: Layer, name: &str) -> Result<bool, LakeError> {
        match self.find(layer, name).await {
            Ok(t) => Ok(!self.versions(&t).await?.is_empty()),
            Err(LakeError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A table's metadata, written to the store the first time its set of versions is loaded.
    pub async fn load(&self, layer: Layer, name: &str) -> Result<LoadedTable, LakeError> {
        let t = self.find(layer, name).await?;
        let versions = self.versions(&t).await?;
        let Some((_, newest)) = versions.last() else {
            return Err(LakeError::NotFound(format!(
                "table {name:?} in namespace {layer} has no version left"
            )));
        };
        let ids: Vec<String> = versions.iter().map(|(_, d)| d.id.to_string()).collect();
        let digest = crate::blob::Sha256::of(ids.join(",").as_bytes()).to_hex();
        let key = format!(
            "{}{:05}-{}.metadata.json",
            metadata_prefix(&newest.prefix),
            versions.len(),
            &digest[..16]
        );
        let bucket = newest.bucket.clone();
        let location = self.blobs().uri(&bucket, &key);
        let config = self.settings().engine_storage.clone();
        match self.read_json(&bucket, &key).await {
            Ok(metadata) => {
                return Ok(LoadedTable {
                    metadata_location: location,
                    metadata,
                    config,
                });
            }
            Err(LakeError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let metadata = self.write_metadata(&t, &versions, &bucket, &key).await?;
        Ok(LoadedTable {
            metadata_location: location,
            metadata,
            config,
        })
    }

    async fn read_json(&self, bucket: &str, key: &str) -> Result<Value, LakeError> {
        let bytes = match crate::blob::read_all(self.blobs().as_ref(), bucket, key).await {
            Ok(b) => b,
            Err(BlobError::NotFound { .. }) => return Err(LakeError::NotFound(key.to_owned())),
            Err(e) => return Err(unavailable(e)),
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| LakeError::Unavailable(format!("{bucket}/{key} is not JSON: {e}")))
    }

    /// Stores `bytes` at `bucket/key` unless it is there already; its size either way.
    async fn put_once(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<u64, LakeError> {
        match self.blobs().head(bucket, key).await {
            Ok(info) => return Ok(info.size),
            Err(BlobError::NotFound { .. }) => {}
            Err(e) => return Err(unavailable(e)),
        }
        self.blobs()
            .put(bucket, key, crate::blob::body_of(bytes))
            .await
            .map_err(unavailable)
    }

    /// Reads each version's footer, writes its manifest and manifest list where missing, then
    /// the metadata JSON at `bucket/key`.
    async fn write_metadata(
        &self,
        t: &TableName,
        versions: &[(i64, Dataset)],
        bucket: &str,
        key: &str,
    ) -> Result<Value, LakeError> {
        let mut described = Vec::with_capacity(versions.len());
        for (seq, d) in versions {
            let files = self.catalog().list_files(d.id).await?;
            let Some(file) = files.iter().find(|f| f.name.ends_with(".parquet")) else {
                continue;
            };
            let file_key = format!("{}{}", d.prefix, file.name);
            let (schema, rows) =
                crate::tables::footer(Arc::clone(self.blobs()), &d.bucket, &file_key, file.size)
                    .await
                    .map_err(|e| {
                        LakeError::Unavailable(format!(
                            "the footer of version {seq} of {}.{} (dataset {}): {e}",
                            t.layer, t.name, d.id
                        ))
                    })?;
            let mut facts = BTreeMap::from([("dataset-id".to_owned(), d.id.to_string())]);
            if let Some(v) = d.metadata.get("version").and_then(Value::as_str) {
                facts.insert("version".into(), v.to_owned());
            }
            described.push((
                d,
                lake_iceberg::Version {
                    snapshot_id: snapshot_id(d),
                    sequence_number: *seq,
                    timestamp_ms: d.created_at.timestamp_millis(),
                    file: lake_iceberg::DataFile {
                        uri: self.blobs().uri(&d.bucket, &file_key),
                        size: file.size,
                        rows,
                    },
                    schema,
                    tag: format!("version-{seq}"),
                    facts,
                },
            ));
        }
        let datasets: Vec<&Dataset> = described.iter().map(|(d, _)| *d).collect();
        let plan = lake_iceberg::Plan::new(described.into_iter().map(|(_, v)| v).collect())
            .map_err(|e| LakeError::Invalid(format!("{}.{}: {e}", t.layer, t.name)))?;
        let mut lists = Vec::with_capacity(plan.len());
        for (i, d) in datasets.iter().enumerate() {
            let manifest_key = format!("{}{}-m0.avro", metadata_prefix(&d.prefix), d.id);
            let manifest_len = self
                .put_once(&d.bucket, &manifest_key, plan.manifest(i))
                .await?;
            let manifest_uri = self.blobs().uri(&d.bucket, &manifest_key);
            let list_key = format!("{}snap-{}.avro", metadata_prefix(&d.prefix), snapshot_id(d));
            self.put_once(
                &d.bucket,
                &list_key,
                plan.manifest_list(i, &manifest_uri, manifest_len),
            )
            .await?;
            lists.push(self.blobs().uri(&d.bucket, &list_key));
        }
        let Some(first) = datasets.first() else {
            return Err(LakeError::NotFound(format!(
                "table {:?} in namespace {} has no Parquet version",
                t.name, t.layer
            )));
        };
        let Some(newest) = datasets.last() else {
            return Err(LakeError::NotFound(format!("table {:?}", t.name)));
        };
        let properties = BTreeMap::from([
            ("lake.source".to_owned(), t.source.clone()),
            ("lake.dataset-name".to_owned(), t.dataset_name.clone()),
            ("lake.current-dataset-id".to_owned(), newest.id.to_string()),
            ("comment".to_owned(), t.dataset_name.clone()),
        ]);
        let location = self
            .blobs()
            .uri(&newest.bucket, newest.prefix.trim_end_matches('/'));
        let metadata = plan.metadata(&first.id.to_string(), &location, &lists, properties);
        let text = serde_json::to_vec(&metadata)
            .map_err(|e| LakeError::Unavailable(format!("table metadata: {e}")))?;
        self.put_once(bucket, key, text).await?;
        Ok(metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_place_and_its_dataset_name_each_other() {
        let prefix = "files/0190aaaa-0000-7000-8000-00000000beef/";
        assert_eq!(described_prefix(&metadata_prefix(prefix)), Some(prefix));
        assert_eq!(described_prefix("metadata/"), None);
        assert_eq!(described_prefix(prefix), None);
    }

    #[test]
    fn names_are_readable_and_safe() {
        for (dataset, want) in [
            ("samples.csv (table)", "samples"),
            ("GSE1_series matrix.txt.gz (table)", "gse1_series_matrix"),
            ("samples.csv (table) (select)", "samples_select"),
            ("2024 runs.xlsx (table)", "t_2024_runs"),
            ("merged", "merged"),
            ("ünïcode.csv (table)", "n_code"),
            ("...", "table"),
            ("v1.2.final", "v1_2"),
        ] {
            assert_eq!(readable_name(dataset), want, "{dataset}");
        }
        assert!(readable_name(&"x".repeat(200)).len() <= 64);
        let names: Vec<String> = candidate_names("files", "a.csv (table)").take(3).collect();
        assert_eq!(names, ["a", "files_a", "files_a_2"]);
    }
}
