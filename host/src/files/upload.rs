//! Uploading a file: the bytes to raw (streamed, hashed), the parser's table to processed (streamed
//! Parquet), both cataloged in one transaction, or neither.

use std::sync::Arc;

use arrow_schema::SchemaRef;
use chrono::Utc;

use crate::blob::{self, ByteStream};
use crate::catalog::{DatasetId, DatasetStatus, FileRecord, NewDataset};
use crate::lake::{LakeError, check_file_name};
use crate::layers::Layer;
use crate::plugins::{Invocation, InvokeError};
use crate::provenance::{
    Action, FileFacts, InvocationRecord, NewProvenance, PipelineRecord, RegistrationRecord,
    UploadFacts, params_json,
};

use super::sniff::{csv_params, detect_format, keep_head, table_file_name};
use super::{DatasetIds, FileInfo, Files, Format, ParseFailure, SOURCE, columns_of};

/// An upload's bytes at their raw key, not yet cataloged.
struct StoredRaw {
    /// The name the client gave.
    filename: String,
    /// The raw dataset they will be.
    id: DatasetId,
    bucket: String,
    prefix: String,
    key: String,
    /// The file as it will be recorded (the sanitised name, size, SHA-256).
    file: FileRecord,
    /// The first bytes, which tell the format.
    head: Vec<u8>,
}

/// What parsing an upload came to.
struct ParseOutcome {
    format: Format,
    /// The table's dataset, when it parsed.
    table_id: DatasetId,
    parsed: Result<Parsed, ParseFailure>,
    /// The invocation and its parameters, when a parser ran.
    run: Option<ParserRun>,
}

/// A parser's invocation and the parameters it was given.
type ParserRun = (Invocation<SchemaRef>, Vec<(String, String)>);

/// The file record of an upload about to be cataloged as `version`.
fn file_info_of(raw: &StoredRaw, parse: &ParseOutcome, version: u32) -> FileInfo {
    let parsed = parse.parsed.as_ref();
    FileInfo {
        file_id: raw.id,
        filename: raw.file.name.clone(),
        version,
        format: parse.format,
        encoding: crate::plugins::text_encoding(&raw.head).map(str::to_owned),
        size: raw.file.size,
        sha256: raw.file.sha256.clone(),
        created_at: raw.file.created_at,
        dataset_ids: DatasetIds {
            raw: raw.id,
            table: parsed.ok().map(|_| parse.table_id),
        },
        rows: parsed.ok().map(|p| p.rows),
        columns: parsed.ok().map(|p| p.schema.fields().len()),
        schema: parsed.map(|p| columns_of(&p.schema)).unwrap_or_default(),
        renamed_columns: parsed.map(|p| p.renamed.clone()).unwrap_or_default(),
        parse_error: parsed.err().cloned(),
        duplicate: false,
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

impl Files<'_> {
    /// Uploads one file: bytes to raw (streamed, hashed), table to processed (streamed Parquet).
    /// Returns the file; `duplicate` is set when the same bytes were uploaded before.
    pub async fn upload(&self, filename: &str, body: ByteStream) -> Result<FileInfo, LakeError> {
        let plugins = self.running_plugins()?.clone();
        // The name is the client's, kept as given (trimmed): one that is a path, hidden, too long
        // or made to read as another is refused, never quietly changed into a different name.
        let name = filename.trim().to_owned();
        check_file_name(&name)?;
        if name.starts_with('.') {
            return Err(LakeError::Invalid(format!(
                "invalid file name {name:?}: must not start with '.'"
            )));
        }
        let raw = self.store_raw(filename, name, body).await?;
        // Known bytes: drop the copy just written and answer with the file that has them.
        if let Some(existing) = self.file_with_sha(&raw.file.sha256).await? {
            self.discard(&raw.bucket, &raw.key).await;
            return Ok(FileInfo {
                duplicate: true,
                ..existing
            });
        }
        let parse = match self.parse_stored(&plugins, &raw).await {
            Ok(p) => p,
            Err(e) => {
                // No row will name the raw object: remove it (best effort; the store may be down).
                self.discard(&raw.bucket, &raw.key).await;
                return Err(e);
            }
        };

        // Catalog both datasets (or the raw one alone) with their provenance, in one transaction.
        let _guard = self.state.commit.lock().await;
        if let Some(existing) = self.file_with_sha(&raw.file.sha256).await? {
            // The same bytes finished uploading meanwhile.
            self.discard_upload(&raw, &parse).await;
            return Ok(FileInfo {
                duplicate: true,
                ..existing
            });
        }
        let version = self.next_version(&raw.file.name).await?;
        let info = file_info_of(&raw, &parse, version);
        let (datasets, provenance) = self.records(&raw, &parse, &info);
        if let Err(e) = self.catalog().insert_datasets(&datasets, &provenance).await {
            self.discard_upload(&raw, &parse).await;
            return Err(e.into());
        }
        self.openlineage().emit(&provenance);
        self.iceberg().publish(
            datasets
                .iter()
                .filter(|(_, files)| files.iter().any(|f| f.name.ends_with(".parquet")))
                .map(|(d, _)| d.id)
                .collect(),
        );
        metrics::counter!("lake_files_uploaded_total", "format" => match parse.format {
            Format::Csv => "csv",
            Format::Xlsx => "xlsx",
            Format::Unknown => "unknown",
        })
        .increment(1);
        Ok(info)
    }

    /// Streams an upload's bytes to their raw key, hashing them and keeping their head.
    async fn store_raw(
        &self,
        filename: &str,
        name: String,
        body: ByteStream,
    ) -> Result<StoredRaw, LakeError> {
        let id = DatasetId::new();
        let bucket = self.bucket(Layer::Raw).to_owned();
        let prefix = format!("{SOURCE}/{id}/");
        let key = format!("{prefix}{name}");
        let (stream, head) = keep_head(body);
        let (stream, hash) = blob::hashing(stream, Some(self.settings().max_upload_bytes));
        let size = self.blobs().put(&bucket, &key, stream).await?;
        let (sha, _) = hash.finish();
        let head = std::mem::take(&mut *head.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(StoredRaw {
            filename: filename.to_owned(),
            id,
            bucket,
            prefix,
            key,
            file: FileRecord {
                content_type: crate::lake::content_type_for(&name).to_owned(),
                name,
                size,
                sha256: sha.to_hex(),
                created_at: Utc::now(),
            },
            head,
        })
    }

    /// Parses stored bytes with the parser their format calls for; the format's own failure when
    /// none does.
    async fn parse_stored(
        &self,
        plugins: &crate::plugins::Plugins,
        raw: &StoredRaw,
    ) -> Result<ParseOutcome, LakeError> {
        let name = &raw.file.name;
        let detected = detect_format(&raw.head, name);
        let (format, parser, params) = match &detected {
            Ok(Format::Csv) => (Format::Csv, "csv", csv_params(&raw.head, name)),
            Ok(Format::Xlsx) => (Format::Xlsx, "xlsx", Vec::new()),
            Ok(Format::Unknown) | Err(_) => (Format::Unknown, "", Vec::new()),
        };
        let table_id = DatasetId::new();
        if format == Format::Unknown {
            let why = detected
                .err()
                .unwrap_or_else(|| "the format is not known".into());
            return Ok(ParseOutcome {
                format,
                table_id,
                parsed: Err(ParseFailure {
                    code: "unsupported_format".into(),
                    message: why,
                }),
                run: None,
            });
        }
        let (parsed, inv) = self
            .parse_upload(plugins, parser, params.clone(), raw, table_id)
            .await?;
        Ok(ParseOutcome {
            format,
            table_id,
            parsed,
            run: Some((inv, params)),
        })
    }

    /// Deletes what an upload stored when nothing will catalog it.
    async fn discard_upload(&self, raw: &StoredRaw, parse: &ParseOutcome) {
        self.discard(&raw.bucket, &raw.key).await;
        if let Ok(p) = &parse.parsed {
            self.discard(self.bucket(Layer::Processed), &p.key).await;
        }
    }

    /// The raw dataset and, when the file parsed, the table's, with their `registration` and
    /// `pipeline` entries.
    fn records(
        &self,
        raw: &StoredRaw,
        parse: &ParseOutcome,
        info: &FileInfo,
    ) -> (Vec<(NewDataset, Vec<FileRecord>)>, Vec<NewProvenance>) {
        let name = &raw.file.name;
        let version = info.version;
        let today = Utc::now().format("%Y-%m-%d").to_string();
        let raw_dataset = NewDataset {
            id: raw.id,
            name: name.clone(),
            source: SOURCE.into(),
            external_id: Some(name.clone()),
            layer: Layer::Raw,
            bucket: raw.bucket.clone(),
            prefix: raw.prefix.clone(),
            metadata: serde_json::json!({
                "source": SOURCE, "date": today, "version": version.to_string(), "file": info,
            }),
            tags: vec![],
            status: DatasetStatus::Ready,
            promoted_from: None,
        };
        let mut datasets = vec![(raw_dataset, vec![raw.file.clone()])];
        let mut provenance = vec![NewProvenance::registration(
            Action::Registration,
            raw.id,
            &RegistrationRecord::Upload {
                upload: UploadFacts {
                    filename: raw.filename.clone(),
                    stored_as: name.clone(),
                    version,
                },
                files: vec![FileFacts {
                    name: name.clone(),
                    size: raw.file.size,
                    sha256: raw.file.sha256.clone(),
                }],
            },
        )];
        let Some((inv, params)) = &parse.run else {
            return (datasets, provenance);
        };
        let invocation =
            InvocationRecord::of(inv, params_json(params), Some(name), Layer::Processed);
        match &parse.parsed {
            Ok(p) => {
                let table_id = parse.table_id;
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
                        "file_id": raw.id, "rows": p.rows, "columns": columns_of(&p.schema),
                    }),
                    tags: vec![],
                    status: DatasetStatus::Ready,
                    promoted_from: None,
                };
                datasets.push((table, vec![p.file.clone()]));
                let record = PipelineRecord::succeeded(
                    invocation,
                    p.rows,
                    p.schema.fields().len(),
                    FileFacts {
                        name: p.file.name.clone(),
                        size: p.file.size,
                        sha256: p.file.sha256.clone(),
                    },
                );
                provenance.push(NewProvenance::pipeline(
                    vec![raw.id],
                    Some(table_id),
                    &record,
                ));
            }
            Err(f) => {
                let record = PipelineRecord::failed(invocation, &f.code, f.message.clone());
                provenance.push(NewProvenance::pipeline(vec![raw.id], None, &record));
            }
        }
        (datasets, provenance)
    }

    /// Parses a stored upload with `parser`, streaming the table as Parquet into the processed
    /// layer. The outer error is the store's; the inner one is why the file has no table.
    async fn parse_upload(
        &self,
        plugins: &crate::plugins::Plugins,
        parser: &str,
        params: Vec<(String, String)>,
        raw: &StoredRaw,
        table_id: DatasetId,
    ) -> Result<(Result<Parsed, ParseFailure>, Invocation<SchemaRef>), LakeError> {
        let input = self.blobs().get(&raw.bucket, &raw.key).await?;
        let name = &raw.file.name;
        let out_name = table_file_name(name);
        let out_bucket = self.bucket(Layer::Processed).to_owned();
        let out_key = format!("{SOURCE}/{table_id}/{out_name}");
        let (sink, out_stream) = crate::tables::ParquetSink::new(self.state.row_group_rows);
        let sink = Arc::new(std::sync::Mutex::new(sink));
        let (out_stream, out_hash) = blob::hashing(out_stream, None);

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
            (Ok(_), Ok(_), Err(e)) => return Err(e.into()),
            (Ok(_), Ok(written), Ok(size)) => (written, size),
        };
        let (written, size) = schema;
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
                rows: written.rows,
                schema: written.schema,
                renamed: written.renamed,
            }),
            inv,
        ))
    }
}

/// Why a parse gave no table, as the file record says it: the error's kind, and the plugin's own
/// message when the plugin refused the file.
fn parse_failure(e: &InvokeError) -> ParseFailure {
    let message = match e {
        InvokeError::Plugin { message, .. } => message.clone(),
        other => other.to_string(),
    };
    ParseFailure {
        code: e.kind().as_str().to_owned(),
        message,
    }
}
