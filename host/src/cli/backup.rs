//! `lake backup run|list|verify` and `lake restore --from ID`, in this process, with progress bars.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use crate::catalog::JobStatus;
use crate::lake::Lake;

/// Backup commands.
#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// Back up now: the catalog snapshot and every object not yet in the backup target.
    Run {
        /// `manual`, `daily` or `weekly` (retention keeps daily and weekly backups apart).
        #[arg(long, default_value = "manual")]
        kind: String,
    },
    /// Complete backups at the target, newest first.
    List,
    /// Re-read a backup and check every object's SHA-256 against its manifest.
    Verify {
        /// The backup's id.
        id: String,
    },
}

fn bar(what: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix:.bold} {bar:30} {pos}/{len} objects {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(what.to_owned());
    bar
}

fn progress_of(bar: &ProgressBar) -> crate::backup::ProgressFn {
    let b = bar.clone();
    Arc::new(move |done, total| {
        b.set_length(total);
        b.set_position(done);
    })
}

fn backup_id(s: &str) -> Result<uuid::Uuid> {
    uuid::Uuid::parse_str(s)
        .with_context(|| format!("{s:?} is not a backup id (lake backup list shows them)"))
}

/// Runs a backup command; prints JSON.
pub async fn backup(lake: &Lake, cmd: BackupCmd) -> Result<ExitCode> {
    match cmd {
        BackupCmd::Run { kind } => {
            if !matches!(kind.as_str(), "manual" | "daily" | "weekly") {
                eprintln!("error: --kind must be manual, daily or weekly, not {kind:?}");
                return Ok(ExitCode::from(2));
            }
            let b = bar("backup");
            let job = lake
                .backups()
                .run_now(&kind, Some(progress_of(&b)))
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            b.finish_and_clear();
            println!("{}", serde_json::to_string_pretty(&job)?);
            Ok(if job.status == JobStatus::Succeeded {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        BackupCmd::List => {
            let list = lake
                .backups()
                .list()
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            println!("{}", serde_json::to_string_pretty(&list)?);
            Ok(ExitCode::SUCCESS)
        }
        BackupCmd::Verify { id } => {
            let b = bar("verify");
            let report = lake
                .backups()
                .verify(backup_id(&id)?, Some(progress_of(&b)))
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            b.finish_and_clear();
            println!("{}", serde_json::to_string_pretty(&report)?);
            if report.problems.is_empty() {
                eprintln!("backup {id}: {} objects verified", report.objects_checked);
                Ok(ExitCode::SUCCESS)
            } else {
                for p in &report.problems {
                    eprintln!(
                        "backup {id}: {} ({}) at {}: {}",
                        p.name,
                        p.dataset_id
                            .map(|d| format!("dataset {d}"))
                            .unwrap_or_else(|| "catalog".into()),
                        p.key,
                        p.problem
                    );
                }
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

/// `lake restore --from ID`: into this (empty) lake.
pub async fn restore(lake: &Lake, from: &str) -> Result<ExitCode> {
    let b = bar("restore");
    let report = lake
        .backups()
        .restore(backup_id(from)?, Some(progress_of(&b)))
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    b.finish_and_clear();
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}
