//! Uploading a file: the bytes to raw (streamed, hashed), the parser's table to processed (streamed
//! Parquet), both cataloged in one transaction, or neither.

use arrow_schema::SchemaRef;
use chrono::Utc;
use futures::StreamExt;

use crate::blob::{self, ByteStream};
use crate::catalog::{DatasetId, DatasetStatus, FileRecord, NewDataset};
use crate::lake::{LakeError, check_file_name};
use crate::layers::Layer;
use crate::plugins::{Invocation, InvokeError};
use crate::provenance::{
    Action, FileFacts, InvocationRecord, NewProvenance, PipelineRecord, RegistrationRecord,
    UploadFacts, params_json,
};

use super::sniff::{csv_params, detect_format, read_head, table_file_name};
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
    /// How long storing the bytes (and parsing them meanwhile) took.
    stored_at: std::time::Duration,
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
        let started = std::time::Instant::now();
        let (raw, parse) = self.store_and_parse(&plugins, filename, name, body).await?;
        let stored_at = started.elapsed();
        // Known bytes: drop what was just written and answer with the file that has them.
        if let Some(existing) = self.file_with_sha(&raw.file.sha256).await? {
            self.discard_upload(&raw, &parse).await;
            return Ok(FileInfo {
                duplicate: true,
                ..existing
            });
        }

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
        // Where the time went: receiving, hashing and storing the bytes while the parser turns
        // them into the stored table (see "Parsed in segments" for the parse's parts), then the
        // catalog.
        let ms = |d: std::time::Duration| d.as_millis() as u64;
        tracing::info!(
            file = %info.file_id,
            bytes = raw.file.size,
            rows = parse.parsed.as_ref().map_or(0, |p| p.rows),
            store_and_parse_ms = ms(parse.stored_at),
            parse_tail_ms = ms(stored_at.saturating_sub(parse.stored_at)),
            commit_ms = ms(started.elapsed().saturating_sub(stored_at)),
            "File uploaded"
        );
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

    /// Streams an upload's bytes to their raw key, hashing them, and, when their first bytes tell
    /// a format a parser reads, through that parser into the table's Parquet object at the same
    /// time: the parse keeps pace with the bytes as they arrive, so little is left to do after
    /// the last one. The outer error is the store's or the request's (nothing is kept then); the
    /// parse outcome says why a file has no table.
    async fn store_and_parse(
        &self,
        plugins: &crate::plugins::Plugins,
        filename: &str,
        name: String,
        body: ByteStream,
    ) -> Result<(StoredRaw, ParseOutcome), LakeError> {
        let id = DatasetId::new();
        let bucket = self.bucket(Layer::Raw).to_owned();
        let prefix = format!("{SOURCE}/{id}/");
        let key = format!("{prefix}{name}");
        let (head, body) = read_head(body).await;
        let (body, hash) = blob::hashing(body, Some(self.settings().max_upload_bytes));
        let detected = detect_format(&head, &name);
        let (format, parser, params) = match &detected {
            Ok(Format::Csv) => (Format::Csv, "csv", csv_params(&head, &name)),
            Ok(Format::Xlsx) => (Format::Xlsx, "xlsx", Vec::new()),
            Ok(Format::Unknown) | Err(_) => (Format::Unknown, "", Vec::new()),
        };
        let table_id = DatasetId::new();
        let out_name = table_file_name(&name);
        let out_bucket = self.bucket(Layer::Processed).to_owned();
        let out_key = format!("{SOURCE}/{table_id}/{out_name}");
        let to = (out_bucket.as_str(), out_key.as_str());
        let rows = self.state.row_group_rows;
        let blobs = self.blobs().as_ref();
        let started = std::time::Instant::now();
        let (size, parsed) = if format == Format::Unknown {
            (blobs.put(&bucket, &key, body).await?, None)
        } else {
            let (body, copy) = tee(body);
            let parse = crate::tables::parse_into_store(
                plugins,
                blobs,
                parser,
                params.clone(),
                copy,
                to,
                rows,
                true,
            );
            match tokio::join!(blobs.put(&bucket, &key, body), parse) {
                (Ok(size), parsed) => (size, Some(parsed)),
                (Err(e), parsed) => {
                    // The bytes are not all there: whatever the parser made of them goes too.
                    if let Ok((_, Some(_))) = parsed {
                        self.discard(&out_bucket, &out_key).await;
                    }
                    return Err(e.into());
                }
            }
        };
        let (sha, _) = hash.finish();
        let raw = StoredRaw {
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
        };
        let stored_at = started.elapsed();
        let Some(mut parsed) = parsed else {
            let why = detected
                .err()
                .unwrap_or_else(|| "the format is not known".into());
            return Ok((
                raw,
                ParseOutcome {
                    format,
                    table_id,
                    parsed: Err(ParseFailure {
                        code: "unsupported_format".into(),
                        message: why,
                    }),
                    run: None,
                    stored_at,
                },
            ));
        };
        let from = (raw.bucket.as_str(), raw.key.as_str());
        let parse_stored = |params, split| {
            crate::tables::parse_stored(plugins, blobs, parser, params, from, to, rows, split)
        };
        // The parse kept pace with the client: over a slow link its time limit ran out while it
        // waited for bytes. Parse the stored bytes again, at the store's pace.
        if let Ok((inv, None)) = &parsed
            && matches!(inv.result, Err(InvokeError::Timeout(_)))
        {
            tracing::info!(
                parser,
                "A parse timed out while the upload arrived; parsing the stored bytes"
            );
            parsed = parse_stored(params.clone(), true).await;
        }
        if let Ok((inv, stored)) = &parsed
            && crate::tables::parse_again_serially(inv, stored)
        {
            parsed = parse_stored(params.clone(), false).await;
        }
        let (inv, stored) = match parsed {
            Ok(p) => p,
            Err(e) => {
                // No row will name the raw object: remove it (best effort; the store may be down).
                self.discard(&raw.bucket, &raw.key).await;
                return Err(e);
            }
        };
        let parsed = match stored {
            Some(stored) => Ok(Parsed {
                key: out_key,
                file: FileRecord {
                    name: out_name.clone(),
                    size: stored.size,
                    sha256: stored.sha256,
                    content_type: crate::lake::content_type_for(&out_name).to_owned(),
                    created_at: Utc::now(),
                },
                rows: stored.written.rows,
                schema: stored.written.schema,
                renamed: stored.written.renamed,
            }),
            None => Err(inv.result.as_ref().err().map_or_else(
                || ParseFailure {
                    code: "output".into(),
                    message: "the parser stored nothing".into(),
                },
                parse_failure,
            )),
        };
        Ok((
            raw,
            ParseOutcome {
                format,
                table_id,
                parsed,
                run: Some((inv, params)),
                stored_at,
            },
        ))
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
}

/// A stream and a copy of it for a second reader: each chunk goes to the copy (waiting while the
/// copy's reader is behind) and then on. A reader of the copy that stops taking chunks is no
/// longer waited for; the copy ends as soon as the stream does, and carries its error.
fn tee(inner: ByteStream) -> (ByteStream, ByteStream) {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(16);
    let teed = futures::stream::unfold((inner, Some(tx)), |(mut inner, mut tx)| async move {
        let chunk = inner.next().await?;
        if let Some(t) = &tx {
            let copy = match &chunk {
                Ok(c) => Ok(c.clone()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            };
            if t.send(copy).await.is_err() {
                tx = None;
            }
        }
        Some((chunk, (inner, tx)))
    });
    (Box::pin(teed.fuse()), blob::stream_of(rx))
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
