//! The audit log: every request that changed something or was refused (401, 403, 429), with who
//! asked, from where, what for, the decision and its reason. Append-only like provenance: the
//! catalog refuses UPDATE and DELETE on it (`crate::catalog::AuditLog`).
//!
//! The HTTP layer appends one entry per such request (`crate::http::auth`); admins read them back
//! with `GET /audit` and `lake audit`, newest first, filtered by decision, principal and time.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::lake::LakeError;

/// Whether the request was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Authenticated and authorized (what the handler then answered is in the status).
    Allowed,
    /// Refused: not authenticated (401), not authorized (403) or over a limit (429).
    Refused,
}

impl Decision {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Refused => "refused",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Decision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "allowed" => Ok(Decision::Allowed),
            "refused" => Ok(Decision::Refused),
            other => Err(format!("unknown decision {other:?} (allowed or refused)")),
        }
    }
}

/// One request as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct NewAuditEntry {
    /// The request's id (also sent back as `x-request-id`).
    pub request_id: String,
    /// The user or service account, when authenticated.
    pub principal: Option<String>,
    /// The token or sign-in session, when authenticated.
    pub token_id: Option<String>,
    /// The client's address.
    pub client: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Route pattern (`/catalog/{id}`).
    pub route: String,
    /// The path asked for.
    pub resource: String,
    /// The right the request needed (`crate::identity::Right::as_str`).
    pub action: String,
    /// Let through or refused.
    pub decision: Decision,
    /// Why it was refused, or the error the handler answered with.
    pub reason: Option<String>,
    /// HTTP status answered.
    pub status: u16,
}

/// A recorded audit entry: the request, where it stands in the log and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Position in the log (newest highest); pages continue `before` it.
    pub seq: i64,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// The request.
    #[serde(flatten)]
    pub request: NewAuditEntry,
}

/// Which entries to read, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this decision.
    pub decision: Option<Decision>,
    /// Only this principal.
    pub principal: Option<String>,
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only entries before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only entries older than this `seq` (the previous page's `next_before`).
    pub before: Option<i64>,
    /// Page size (1 to [`MAX_PAGE`]).
    pub limit: u32,
}

/// The largest page of audit entries.
pub const MAX_PAGE: u32 = 1000;

impl Default for AuditQuery {
    fn default() -> Self {
        Self {
            decision: None,
            principal: None,
            since: None,
            until: None,
            before: None,
            limit: 100,
        }
    }
}

/// One page of audit entries.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Entries, newest first.
    pub items: Vec<AuditEntry>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_before: Option<i64>,
}

crate::lake::service! {
    /// The audit log: appended by the HTTP layer, read by admins.
    Audit, audit
}

impl Audit<'_> {
    /// Appends one entry. A log that cannot be written is reported, not hidden: the caller decides
    /// whether the request goes on.
    pub async fn record(&self, entry: &NewAuditEntry) -> Result<(), LakeError> {
        Ok(self.catalog.append_audit(entry).await?)
    }

    /// A page of entries, newest first.
    pub async fn page(&self, q: &AuditQuery) -> Result<AuditPage, LakeError> {
        if q.limit == 0 || q.limit > MAX_PAGE {
            return Err(LakeError::Invalid(format!(
                "limit: must be between 1 and {MAX_PAGE}"
            )));
        }
        if let (Some(s), Some(u)) = (q.since, q.until)
            && s >= u
        {
            return Err(LakeError::Invalid("since: must be before until".into()));
        }
        let mut items = self
            .catalog
            .audit_entries(&AuditQuery {
                limit: q.limit + 1,
                ..q.clone()
            })
            .await?;
        let more = items.len() > q.limit as usize;
        items.truncate(q.limit as usize);
        let next_before = more.then(|| items.last().map(|e| e.seq)).flatten();
        Ok(AuditPage { items, next_before })
    }
}
