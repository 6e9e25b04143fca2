//! `lake plugin run`: one plugin invocation on local files, outside the catalog, for plugin authors
//! and quick checks.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{InvokeError, Kind, Part, Plugins, Usage, params_from_json};

impl Plugins {
    /// One invocation on local files (`lake plugin run`), with the same limits and sandbox as the
    /// server: a parser reads one file, a step reads Parquet files, a connector writes its objects
    /// under `out`. Returns a summary (manifest, usage, limits, result or error) and the error.
    pub async fn run_local(
        &self,
        name: &str,
        inputs: &[PathBuf],
        params: &serde_json::Value,
        out: Option<&Path>,
    ) -> anyhow::Result<(serde_json::Value, Option<InvokeError>)> {
        let plugins = self;
        let params = params_from_json(params).map_err(|e| anyhow::anyhow!(e))?;
        let manifest = plugins
            .manifest(name)
            .await
            .ok_or_else(|| anyhow::anyhow!("no plugin named {name:?} (see lake plugin list)"))?;
        let summary = |usage: &Usage, result: serde_json::Value| {
            serde_json::json!({
                "plugin": manifest.name, "version": manifest.version, "kind": manifest.kind,
                "sha256": manifest.sha256, "usage": usage, "limits": plugins.limits_for(name),
                "result": result,
            })
        };
        let failed = |e: InvokeError, usage: &Usage| {
            let s = summary(
                usage,
                serde_json::json!({"error": {"code": e.code(), "message": e.to_string()}}),
            );
            Ok((s, Some(e)))
        };
        let (table, usage) = match manifest.kind {
            Kind::Parser => {
                let [input] = inputs else {
                    anyhow::bail!("a parser reads exactly one input file");
                };
                let file = tokio::fs::File::open(input)
                    .await
                    .with_context(|| format!("opening {}", input.display()))?;
                let stream: crate::blob::ByteStream =
                    Box::pin(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
                let inv = plugins.parse(name, params, stream).await;
                (inv.result, inv.usage)
            }
            Kind::Step => {
                let mut tables = Vec::new();
                for input in inputs {
                    let bytes = tokio::fs::read(input)
                        .await
                        .with_context(|| format!("reading {}", input.display()))?;
                    tables.push(
                        crate::tables::read_parquet(bytes.into())
                            .map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?
                            .into(),
                    );
                }
                let inv = plugins.step(name, params, tables).await;
                (inv.result, inv.usage)
            }
            Kind::Connector => {
                anyhow::ensure!(inputs.is_empty(), "a connector takes no input files");
                let dir = out
                    .ok_or_else(|| anyhow::anyhow!("a connector needs --out DIR for its objects"))?
                    .to_path_buf();
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let (tx, mut rx) = tokio::sync::mpsc::channel::<Part>(4);
                let writer = tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let mut objects = Vec::new();
                    let mut open: Option<(tokio::fs::File, u64)> = None;
                    while let Some(p) = rx.recv().await {
                        let path = dir.join(&p.name);
                        if open.is_none() {
                            if let Some(parent) = path.parent() {
                                tokio::fs::create_dir_all(parent).await?;
                            }
                            open = Some((tokio::fs::File::create(&path).await?, 0));
                        }
                        if let Some((f, n)) = open.as_mut() {
                            f.write_all(&p.bytes).await?;
                            *n += p.bytes.len() as u64;
                        }
                        if p.last
                            && let Some((mut f, n)) = open.take()
                        {
                            f.flush().await?;
                            objects.push(serde_json::json!({
                                "name": p.name, "bytes": n, "path": path,
                                "content_type": p.content_type,
                                "facts": p.facts.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                            }));
                        }
                    }
                    Ok::<_, std::io::Error>(objects)
                });
                let inv = plugins.collect(name, params, tx).await;
                let objects = writer.await.context("writing objects")??;
                return match inv.result {
                    Ok(fetches) => Ok((
                        summary(
                            &inv.usage,
                            serde_json::json!({"objects": objects, "fetches": fetches}),
                        ),
                        None,
                    )),
                    Err(e) => failed(e, &inv.usage),
                };
            }
        };
        let table = match table {
            Ok(t) => t,
            Err(e) => return failed(e, &usage),
        };
        let columns: Vec<serde_json::Value> = table
            .schema
            .fields()
            .iter()
            .map(|f| serde_json::json!({"name": f.name(), "type": f.data_type().to_string()}))
            .collect();
        if let Some(out) = out {
            let (bytes, _) =
                crate::tables::write_parquet(&table).map_err(|e| anyhow::anyhow!(e))?;
            std::fs::write(out, bytes).with_context(|| format!("writing {}", out.display()))?;
        }
        Ok((
            summary(
                &usage,
                serde_json::json!({"rows": table.num_rows(), "columns": columns, "out": out}),
            ),
            None,
        ))
    }
}
