//! Saving a merge result as a processed dataset, with `pipeline` provenance from both inputs.

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;

use crate::blob::{self, ByteStream};
use crate::catalog::{DatasetId, DatasetStatus, FileRecord, NewDataset};
use crate::lake::LakeError;
use crate::layers::Layer;
use crate::plugins::Table;
use crate::provenance::{FileFacts, NewProvenance, PipelineRecord};

use super::{Files, SOURCE, SaveFormat, SavedMerge, columns_of};

impl Files<'_> {
    /// Saves a merge result as a processed dataset with `pipeline` provenance from both inputs, and
    /// evicts it from the cache. An expired result is computed again from the inputs.
    pub async fn save_merged(
        &self,
        cache_key: &str,
        name: &str,
        format: SaveFormat,
    ) -> Result<SavedMerge, LakeError> {
        let state = &self.state.merges;
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
        crate::lake::check_file_name(name.trim())?;
        let stem = name.trim().replace(['.', ' '], "_");
        // Encoding and hashing a large result is seconds of CPU: off the async workers.
        let encoding = merged.clone();
        let (file_name, bytes, sha) = tokio::task::spawn_blocking(move || {
            let (file_name, bytes) = match format {
                SaveFormat::Parquet => (
                    format!("{stem}.parquet"),
                    crate::tables::write_parquet(&encoding.table)
                        .map(|(bytes, _)| bytes)
                        .map_err(LakeError::Invalid)?,
                ),
                SaveFormat::Csv => (format!("{stem}.csv"), write_csv(&encoding.table)?),
            };
            let sha = blob::Sha256::of(&bytes).to_hex();
            Ok::<_, LakeError>((file_name, bytes, sha))
        })
        .await
        .map_err(|e| LakeError::Unavailable(format!("writing the result: {e}")))??;
        let id = DatasetId::new();
        let bucket = self.bucket(Layer::Processed).to_owned();
        let prefix = format!("{SOURCE}/{id}/");
        let key = format!("{prefix}{file_name}");
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
        let mut invocation = merged.invocation.clone();
        invocation.plugin = Some(merged.manifest.name.clone());
        let record = PipelineRecord {
            cache_key: Some(cache_key.to_owned()),
            merge: serde_json::to_value(&merged.spec).ok(),
            ..PipelineRecord::succeeded(
                invocation,
                rows,
                columns,
                FileFacts {
                    name: file_name.clone(),
                    size,
                    sha256: sha.clone(),
                },
            )
        };
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
        let prov = NewProvenance::pipeline(merged.inputs.to_vec(), Some(id), &record);
        if let Err(e) = self
            .catalog()
            .insert_dataset(&new, std::slice::from_ref(&file), Some(&prov))
            .await
        {
            self.discard(&bucket, &key).await;
            return Err(e.into());
        }
        self.openlineage().emit(std::slice::from_ref(&prov));
        self.iceberg().publish(vec![id]);
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
