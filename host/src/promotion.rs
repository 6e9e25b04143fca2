//! Promotion: a dataset copied to the next layer.
//!
//! Promotion copies a dataset's objects server-side into the next layer's bucket and catalogs the
//! copy as a new dataset linked to its source by a `promotion` provenance edge. The source dataset
//! and its bytes are never touched. A `pending` target is inserted first (unique per source and
//! layer, which makes retries idempotent), the copies run with bounded parallelism, and the target
//! turns `ready` in the same transaction that records its files and the edge.

use futures::{StreamExt, TryStreamExt};

use crate::catalog::{
    CatalogError, Constraint, Dataset, DatasetId, DatasetStatus, FileRecord, NewDataset,
};
use crate::lake::LakeError;
use crate::layers::Layer;
use crate::provenance::{NewProvenance, PromotionRecord};

/// What a caller asks for when promoting.
#[derive(Debug, Clone)]
pub struct PromoteRequest {
    /// The dataset to promote.
    pub dataset_id: DatasetId,
    /// Must be the layer right after the dataset's own.
    pub target_layer: Layer,
    /// Free text kept on the promotion's provenance edge.
    pub notes: Option<String>,
    /// Why: required beyond processed (curated, archive), kept with the edge.
    pub reason: Option<String>,
}

/// The outcome of a promotion.
#[derive(Debug, Clone)]
pub struct Promotion {
    /// The dataset in the target layer.
    pub target: crate::catalog::Dataset,
    /// False when an earlier promotion had already completed and its target is returned again.
    pub created: bool,
}

crate::lake::service! {
    /// The promotion service: datasets to the next layer.
    Promotions, promotions
}

impl Promotions<'_> {
    /// Promotes a dataset to the adjacent layer.
    ///
    /// Idempotent: the catalog allows one promotion target per (source, layer), so a retry after a
    /// completed promotion returns the existing target, and a retry after a failure resumes the
    /// pending target. The target becomes `ready` only in the same transaction that records its files
    /// and the provenance edge, so a failure part-way never leaves a target visible as ready.
    pub async fn promote(&self, req: PromoteRequest) -> Result<Promotion, LakeError> {
        let source = self.get_dataset(req.dataset_id).await?;
        check_adjacent(&source, req.target_layer)?;
        let reason = match req.target_layer {
            Layer::Raw | Layer::Processed => req
                .reason
                .as_deref()
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned),
            further => Some(
                crate::provenance::required_reason(
                    req.reason.as_deref(),
                    &format!("promoting to {further}"),
                )
                .map_err(LakeError::Invalid)?,
            ),
        };
        let target = match self.target(&source, req.target_layer).await? {
            Target::Done(target) => {
                return Ok(Promotion {
                    target,
                    created: false,
                });
            }
            Target::Pending(target) => target,
        };
        let copied = match self.copy_files(&source, &target).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(source = %source.id, target = %target.id, error = %e, "Promotion failed part-way");
                let _ = self
                    .catalog
                    .set_status(target.id, DatasetStatus::Failed)
                    .await;
                return Err(e);
            }
        };
        let prov = NewProvenance::promotion(
            source.id,
            target.id,
            &PromotionRecord {
                from_layer: source.layer,
                to_layer: req.target_layer,
                files: copied.len(),
            },
            req.notes.clone(),
            reason,
        );
        let done = self
            .catalog
            .commit(target.id, &copied, DatasetStatus::Ready, Some(&prov))
            .await?;
        self.openlineage().emit(std::slice::from_ref(&prov));
        self.iceberg().publish(vec![done.id]);
        metrics::counter!("lake_promotions_total", "to" => req.target_layer.as_str()).increment(1);
        Ok(Promotion {
            target: done,
            created: true,
        })
    }

    /// The promotion target of `source` in `layer`: one already done, or a pending one to fill (an
    /// earlier attempt's, or a new one).
    async fn target(&self, source: &Dataset, layer: Layer) -> Result<Target, LakeError> {
        if let Some(t) = self.catalog.find_promotion(source.id, layer).await? {
            return Ok(Target::of(t));
        }
        let id = DatasetId::new();
        let mut metadata = source.metadata.clone();
        if let Some(obj) = metadata.as_object_mut() {
            obj.insert("promoted_from".into(), serde_json::json!(source.id));
        }
        let new = NewDataset {
            id,
            name: source.name.clone(),
            source: source.source.clone(),
            external_id: source.external_id.clone(),
            layer,
            bucket: self.bucket(layer).to_owned(),
            prefix: format!("{}/{}/", source.source, id),
            metadata,
            tags: source.tags.clone(),
            status: DatasetStatus::Pending,
            promoted_from: Some(source.id),
        };
        match self.catalog.insert_dataset(&new, &[], None).await {
            Ok(d) => Ok(Target::Pending(d)),
            // A concurrent promotion of the same dataset won the race: resume or return it.
            Err(CatalogError::Conflict(c)) if c.constraint == Constraint::PromotionTarget => self
                .catalog
                .find_promotion(source.id, layer)
                .await?
                .map(Target::of)
                .ok_or_else(|| LakeError::Conflict("a concurrent promotion is in progress".into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Copies the source's files into the target, server-side and a few at a time, checking each
    /// copy's size so a truncated copy never becomes ready.
    async fn copy_files(
        &self,
        source: &Dataset,
        target: &Dataset,
    ) -> Result<Vec<FileRecord>, LakeError> {
        let files = self.catalog.list_files(source.id).await?;
        futures::stream::iter(files)
            .map(|f| {
                let src_key = format!("{}{}", source.prefix, f.name);
                let dst_key = format!("{}{}", target.prefix, f.name);
                async move {
                    self.blobs
                        .copy(&source.bucket, &src_key, &target.bucket, &dst_key)
                        .await?;
                    let info = self.blobs.head(&target.bucket, &dst_key).await?;
                    if info.size != f.size {
                        return Err(LakeError::Unavailable(format!(
                            "copy of {} has {} bytes, expected {}",
                            f.name, info.size, f.size
                        )));
                    }
                    Ok(f)
                }
            })
            .buffer_unordered(self.settings.promotion_parallelism)
            .try_collect()
            .await
    }
}

/// A promotion's target.
enum Target {
    /// Ready: an earlier promotion completed.
    Done(Dataset),
    /// To fill.
    Pending(Dataset),
}

impl Target {
    fn of(d: Dataset) -> Self {
        if d.status == DatasetStatus::Ready {
            Target::Done(d)
        } else {
            Target::Pending(d)
        }
    }
}

/// Data moves one layer at a time.
fn check_adjacent(source: &Dataset, to: Layer) -> Result<(), LakeError> {
    let allowed = source.layer.next();
    if allowed == Some(to) {
        return Ok(());
    }
    Err(LakeError::Invalid(match allowed {
        Some(next) => format!(
            "dataset {} is in {}; it can only be promoted to the adjacent layer {next}, not {to}",
            source.id, source.layer
        ),
        None => format!(
            "dataset {} is in archive, the last layer; it cannot be promoted",
            source.id
        ),
    }))
}
