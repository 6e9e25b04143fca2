//! `lake fsck`: the integrity check run in-process against the lake's catalog and store (the
//! same check as `GET /admin/fsck`), printing each problem as it is found.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use tokio::sync::mpsc;

use crate::fsck::{Finding, FsckOptions};
use crate::lake::Lake;

/// What to check.
#[derive(Debug, Args)]
pub struct FsckArgs {
    /// Hash every ready object and compare it with its recorded SHA-256 (reads every byte).
    #[arg(long)]
    verify: bool,
    /// Repair what is safe (uncataloged objects past the grace period, a deleted dataset's
    /// leftovers, stale claims, stopped promotions, abandoned jobs), each recorded in provenance.
    #[arg(long)]
    repair: bool,
    /// Seconds before an uncataloged object, a claim or a pending promotion counts as abandoned
    /// rather than in flight. Lower it only when no server is running.
    #[arg(long, default_value_t = 3600)]
    grace_secs: u64,
    /// One JSON object per line (each problem, then `{"summary": ...}`) instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs the check; exits 1 when a problem is left unrepaired.
pub async fn fsck(lake: &Lake, args: FsckArgs) -> Result<ExitCode> {
    let opts = FsckOptions {
        verify: args.verify,
        repair: args.repair,
        grace: Duration::from_secs(args.grace_secs),
    };
    let (tx, mut rx) = mpsc::channel::<Finding>(64);
    let json = args.json;
    let printer = tokio::spawn(async move {
        let mut left = 0u64;
        while let Some(f) = rx.recv().await {
            if f.repaired.is_none() {
                left += 1;
            }
            if json {
                if let Ok(line) = serde_json::to_string(&f) {
                    println!("{line}");
                }
                continue;
            }
            let place = match (&f.bucket, &f.key) {
                (Some(b), Some(k)) => format!("{b}/{k}"),
                _ => String::new(),
            };
            let dataset = f
                .dataset
                .map(|d| format!(" dataset {d}"))
                .unwrap_or_default();
            let fix = match &f.repaired {
                Some(done) => format!("  -> repaired: {done}"),
                None if f.safe_to_repair => "  (--repair fixes this)".to_owned(),
                None => String::new(),
            };
            println!(
                "{:<19} {place}{dataset}: {}{fix}",
                f.problem.as_str(),
                f.detail
            );
        }
        left
    });
    let summary = lake.fsck().run(&opts, &tx).await;
    drop(tx);
    let left = printer.await.context("printing the findings")?;
    let summary = summary.context("checking the lake")?;
    if json {
        println!("{}", serde_json::json!({ "summary": summary }));
    } else {
        eprintln!(
            "checked {} files ({} bytes hashed) and {} objects in {:.1} s: {} problems, {} repaired, {} in flight",
            summary.files,
            summary.bytes_verified,
            summary.objects,
            summary.millis as f64 / 1000.0,
            summary.problems,
            summary.repaired,
            summary.in_flight
        );
    }
    Ok(if left == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
