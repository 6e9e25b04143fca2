//! `lake ingest`: runs lake.toml's `[[sources]]` now, in this process, each as a recorded
//! collection job, with a progress bar per source; `--dry-run` shows the plans without a request.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::catalog::JobStatus;
use crate::collect::{CollectRequest, Progress};
use crate::config::Config;
use crate::lake::Lake;

/// Runs the configured sources (or one); prints one JSON line per source.
pub async fn ingest(
    lake: &Lake,
    cfg: &Config,
    only: Option<&str>,
    dry_run: bool,
) -> Result<ExitCode> {
    if cfg.sources.is_empty() {
        eprintln!("error: lake.toml has no [[sources]]; see examples/ingest.toml");
        return Ok(ExitCode::from(2));
    }
    let sources: Vec<_> = cfg
        .sources
        .iter()
        .filter(|s| only.is_none_or(|n| n == s.name))
        .collect();
    if sources.is_empty() {
        let names: Vec<&str> = cfg.sources.iter().map(|s| s.name.as_str()).collect();
        eprintln!(
            "error: no source named {:?}; lake.toml has: {}",
            only.unwrap_or(""),
            names.join(", ")
        );
        return Ok(ExitCode::from(2));
    }
    let bars = MultiProgress::new();
    let style =
        ProgressStyle::with_template("{spinner} {prefix:.bold} {msg} {bytes} ({bytes_per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let mut failed = false;
    for src in sources {
        let req = CollectRequest {
            source: src.name.clone(),
            ..CollectRequest::default()
        };
        let plan = match lake.collections().plan(&req).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: source {:?}: {e}", src.name);
                return Ok(ExitCode::from(2));
            }
        };
        if dry_run {
            let hosts = cfg
                .plugins
                .overrides
                .get(&plan.plugin)
                .map(|o| o.hosts.clone())
                .unwrap_or_default();
            let line = serde_json::json!({
                "source": src.name,
                "plugin": plan.plugin,
                "external_id": plan.external_id,
                "params": plan.params,
                "parse": plan.parse,
                "tags": plan.tags,
                "schedule": src.schedule,
                "hosts_granted": hosts,
            });
            if hosts.is_empty() {
                eprintln!(
                    "warning: source {:?}: [plugins.overrides.{}] grants no hosts, so every request would be refused",
                    src.name, plan.plugin
                );
            }
            println!("{line}");
            continue;
        }
        let bar = bars.add(ProgressBar::new_spinner());
        bar.set_style(style.clone());
        bar.set_prefix(src.name.clone());
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        let b = bar.clone();
        let progress: crate::collect::ProgressFn = Arc::new(move |p| match p {
            Progress::Object(name) => b.set_message(name),
            Progress::Bytes(n) => b.inc(n),
            Progress::Parsing { file, plugin } => {
                b.set_message(format!("parsing {file} ({plugin})"))
            }
        });
        let job = lake
            .collections()
            .run_now(&req, Some(progress))
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let ok = job.status == JobStatus::Succeeded;
        let result = job.result.clone().unwrap_or_default();
        let parse_failed = result["parsed"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["status"] == "failed"));
        failed |= !ok || parse_failed;
        bar.finish_with_message(match (&job.error, result["outcome"].as_str()) {
            (Some(e), _) => format!("failed: {e}"),
            (None, Some(o)) => o.to_owned(),
            (None, None) => "done".to_owned(),
        });
        let line = serde_json::json!({
            "source": src.name,
            "job_id": job.id,
            "status": job.status,
            "error": job.error,
            "result": result,
        });
        println!("{line}");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
