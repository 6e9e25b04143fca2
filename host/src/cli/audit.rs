//! `lake audit`: the audit log, newest first, read from the catalog (every replica's requests).

use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::Args;

use crate::audit::{AuditQuery, Decision};
use crate::lake::Lake;

/// Which entries to show.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only refusals (401, 403, 429).
    #[arg(long, conflicts_with = "decision")]
    refused: bool,
    /// Only `allowed` or `refused` entries.
    #[arg(long)]
    decision: Option<Decision>,
    /// Only this user or service account.
    #[arg(long)]
    principal: Option<String>,
    /// Only entries at or after this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
    #[arg(long)]
    since: Option<DateTime<Utc>>,
    /// Only entries before this time.
    #[arg(long)]
    until: Option<DateTime<Utc>>,
    /// How many entries.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// JSON, one page object, instead of lines.
    #[arg(long)]
    json: bool,
}

/// Prints the audit log.
pub async fn audit(lake: &Lake, args: AuditArgs) -> Result<ExitCode> {
    let page = lake
        .audit()
        .page(&AuditQuery {
            decision: args.refused.then_some(Decision::Refused).or(args.decision),
            principal: args.principal,
            since: args.since,
            until: args.until,
            before: None,
            limit: args.limit,
        })
        .await
        .context("reading the audit log")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(ExitCode::SUCCESS);
    }
    for e in &page.items {
        let r = &e.request;
        println!(
            "{}  {:<8} {}  {:<20} {:<6} {}{}",
            e.at.format("%Y-%m-%d %H:%M:%S"),
            r.decision,
            r.status,
            r.principal.as_deref().unwrap_or("-"),
            r.method,
            r.resource,
            r.reason
                .as_deref()
                .map(|r| format!("  ({r})"))
                .unwrap_or_default(),
        );
    }
    if page.items.is_empty() {
        eprintln!("no audit entries match");
    }
    Ok(ExitCode::SUCCESS)
}
