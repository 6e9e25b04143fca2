//! Identity and access: who may do what (roles and the one check every caller makes), what they
//! may see, the users and service accounts tokens act for, and bearer tokens (their shape, their
//! secrets, their digests).
//!
//! A token reads `lake_<id>_<secret>`: the id names its catalog row (`crate::catalog::Tokens`),
//! the secret is 256 random bits shown once, and the catalog keeps only the secret's SHA-256, which
//! [`Secret::matches`] compares in constant time. A token acts for a user and carries a [`Role`]
//! no higher than the user's; a disabled user's tokens stop working. [`check`] says whether a role
//! may take a [`Right`], and a refusal names the right and the role it needs; [`Visibility`] says
//! which datasets a role sees at all. Which requests need which right is decided in one place too,
//! not by each handler. With `[auth] mode = "oidc"` an issuer's JWTs are accepted as well
//! ([`oidc`]).

pub mod oidc;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::lake::LakeError;

/// What a principal may do, each role including the ones before it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads the catalog, provenance and non-raw data.
    Reader,
    /// Also adds data: register, upload, collect, run plugins, merge, promote raw to processed.
    Contributor,
    /// Also curates: promotes beyond processed and deletes non-raw datasets, with a reason.
    Curator,
    /// Also runs the lake: backups, restores, grants, users, others' tokens, the audit.
    Admin,
}

impl Role {
    /// Every role, least first.
    pub const ALL: [Role; 4] = [Role::Reader, Role::Contributor, Role::Curator, Role::Admin];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Contributor => "contributor",
            Role::Curator => "curator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s.trim())
            .ok_or_else(|| format!("unknown role {s:?} (reader, contributor, curator or admin)"))
    }
}

/// Whom a user record names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserKind {
    /// A person.
    Person,
    /// A service account: a pipeline, an instrument, a scheduler.
    Service,
}

impl UserKind {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            UserKind::Person => "person",
            UserKind::Service => "service",
        }
    }
}

impl FromStr for UserKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "person" => Ok(UserKind::Person),
            "service" => Ok(UserKind::Service),
            other => Err(format!("unknown user kind {other:?} (person or service)")),
        }
    }
}

/// The kinds of request the roles are defined over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Right {
    /// Read the catalog, stats, layers, plugins, runs, provenance.
    Read,
    /// Download a raw dataset's bytes (they may hold patient data).
    DownloadRaw,
    /// Download a processed, curated or archived dataset's bytes.
    Download,
    /// Register, upload, collect, run plugins, merge, save a merge.
    Write,
    /// Promote raw to processed.
    PromoteToProcessed,
    /// Promote processed to curated, or curated to archive.
    PromoteFurther,
    /// Delete a non-raw dataset.
    Delete,
    /// Backups, restores, plugin grants, users, other people's tokens, the audit.
    Administer,
}

impl Right {
    /// Its name in the audit log and the refusal counter.
    pub fn as_str(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::DownloadRaw => "download-raw",
            Right::Download => "download",
            Right::Write => "write",
            Right::PromoteToProcessed => "promote-to-processed",
            Right::PromoteFurther => "promote-further",
            Right::Delete => "delete",
            Right::Administer => "administer",
        }
    }

    /// What the right is called in a refusal.
    pub fn describe(self) -> &'static str {
        match self {
            Right::Read => "reading the catalog",
            Right::DownloadRaw => "downloading raw data",
            Right::Download => "downloading data",
            Right::Write => "adding data (register, upload, collect, run plugins, merge)",
            Right::PromoteToProcessed => "promoting raw data to processed",
            Right::PromoteFurther => "promoting beyond processed",
            Right::Delete => "deleting a dataset",
            Right::Administer => "administering the lake",
        }
    }
}

/// The access rules a lake is configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The least role that may download raw data (contributor by default).
    pub raw_download: Role,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            raw_download: Role::Contributor,
        }
    }
}

impl Policy {
    /// The least role that holds `right`.
    pub fn needs(&self, right: Right) -> Role {
        match right {
            Right::Read | Right::Download => Role::Reader,
            Right::DownloadRaw => self.raw_download,
            Right::Write | Right::PromoteToProcessed => Role::Contributor,
            Right::PromoteFurther | Right::Delete => Role::Curator,
            Right::Administer => Role::Admin,
        }
    }
}

/// What a caller may see of the lake: raw datasets may hold patient data, so a role that may not
/// download them does not see them at all (not in searches, not by id, and only as placeholders
/// in lineage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visibility {
    raw_hidden: bool,
}

impl Visibility {
    /// Everything: the open lake on loopback, and the command line.
    pub const ALL: Visibility = Visibility { raw_hidden: false };

    /// What `role` sees under `policy`.
    pub fn of(policy: &Policy, role: Role) -> Self {
        Self {
            raw_hidden: check(policy, role, Right::DownloadRaw).is_err(),
        }
    }

    /// Whether datasets of `layer` are visible.
    pub fn sees(self, layer: crate::layers::Layer) -> bool {
        !(self.raw_hidden && layer == crate::layers::Layer::Raw)
    }

    /// The layers hidden.
    pub fn hidden_layers(self) -> Vec<crate::layers::Layer> {
        crate::layers::Layer::ALL
            .into_iter()
            .filter(|l| !self.sees(*l))
            .collect()
    }
}

/// A right refused: which, the role it needs, and the role the caller has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} needs the {needs} role; this token's role is {has}", right.describe())]
pub struct Refusal {
    /// What was asked.
    pub right: Right,
    /// The least role that may.
    pub needs: Role,
    /// The caller's role.
    pub has: Role,
}

/// The one check: whether `role` holds `right` under `policy`.
pub fn check(policy: &Policy, role: Role, right: Right) -> Result<(), Refusal> {
    let needs = policy.needs(right);
    if role >= needs {
        Ok(())
    } else {
        Err(Refusal {
            right,
            needs,
            has: role,
        })
    }
}

/// The prefix every lake token starts with.
pub const TOKEN_PREFIX: &str = "lake_";

/// A token's secret part, as presented or as just made.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// 256 fresh random bits, as 64 hex digits.
    pub fn generate() -> Self {
        // Two v4 UUIDs are 244 random bits from the OS generator; hashing them spreads those bits
        // over the whole secret without another dependency.
        let seed = [
            uuid::Uuid::new_v4().into_bytes(),
            uuid::Uuid::new_v4().into_bytes(),
        ]
        .concat();
        Secret(crate::blob::Sha256::of(&seed).to_hex())
    }

    /// The digest the catalog keeps: SHA-256 of the secret, hex.
    pub fn digest(&self) -> String {
        crate::blob::Sha256::of(self.0.as_bytes()).to_hex()
    }

    /// Whether this secret's digest is `digest`, compared in constant time.
    pub fn matches(&self, digest: &str) -> bool {
        constant_time_eq(self.digest().as_bytes(), digest.as_bytes())
    }
}

/// Whether two secrets are equal, in a time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A token as its holder presents it: `lake_<id>_<secret>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bearer {
    /// Its catalog row.
    pub id: uuid::Uuid,
    /// Its secret.
    pub secret: Secret,
}

impl Bearer {
    /// A new token's id and secret.
    pub fn generate() -> Self {
        Self {
            id: uuid::Uuid::now_v7(),
            secret: Secret::generate(),
        }
    }

    /// The text the holder keeps (shown once).
    pub fn reveal(&self) -> String {
        format!("{TOKEN_PREFIX}{}_{}", self.id.simple(), self.secret.0)
    }
}

impl FromStr for Bearer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || "a lake token reads lake_<id>_<secret>".to_owned();
        let rest = s.trim().strip_prefix(TOKEN_PREFIX).ok_or_else(bad)?;
        let (id, secret) = rest.split_once('_').ok_or_else(bad)?;
        let id = uuid::Uuid::try_parse(id).map_err(|_| bad())?;
        if secret.len() != 64 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Bearer {
            id,
            secret: Secret(secret.to_ascii_lowercase()),
        })
    }
}

/// How long a token lives unless asked otherwise.
pub const DEFAULT_TOKEN_DAYS: u32 = 90;
/// The longest a token may live unless `[auth] max_token_days` says otherwise.
pub const MAX_TOKEN_DAYS: u32 = 366;

/// A token just issued: its record, and the text shown to its holder once.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Issued {
    /// `lake_<id>_<secret>`; the lake keeps only the secret's digest, so this is the only copy.
    pub token: String,
    /// Its record.
    #[serde(flatten)]
    pub record: crate::catalog::TokenRecord,
}

/// What a token request asks for.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// What its holder calls it.
    pub name: String,
    /// The user or service account it acts for.
    pub owner: String,
    /// Its role.
    pub role: Role,
    /// Days it lives (default [`DEFAULT_TOKEN_DAYS`] or the maximum when that is less, at most
    /// `[auth] max_token_days`).
    pub days: Option<u32>,
}

/// Who a request's credentials name: the user, the token or sign-in session, the role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user or service account.
    pub user: String,
    /// The token's id, or `oidc:<handle>` for an issuer's sign-in.
    pub via: String,
    /// What they may do.
    pub role: Role,
}

/// What the access service keeps: the OpenID Connect verifier, when `mode = "oidc"`.
#[derive(Debug, Default)]
pub struct AccessState {
    oidc: Option<oidc::Verifier>,
    /// Token records read in the last `[auth] token_cache_ms`, by id, so a busy token costs no
    /// catalog read per request. A revocation or a disabled user on this replica clears its
    /// entries at once; on another replica it takes effect when the entry ages out.
    recent: Option<moka::sync::Cache<uuid::Uuid, crate::catalog::TokenRecord>>,
}

impl AccessState {
    /// The state `[auth]` asks for.
    pub fn new(auth: &crate::config::AuthConfig) -> Self {
        Self {
            oidc: (auth.mode == crate::config::AuthMode::Oidc)
                .then(|| oidc::Verifier::new(auth.oidc.clone())),
            recent: (auth.token_cache_ms > 0).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(std::time::Duration::from_millis(auth.token_cache_ms))
                    .build()
            }),
        }
    }

    fn forget(&self, id: Option<uuid::Uuid>) {
        if let Some(recent) = &self.recent {
            match id {
                Some(id) => recent.invalidate(&id),
                None => recent.invalidate_all(),
            }
        }
    }
}

crate::lake::service! {
    /// Access: tokens issued, listed, revoked, and the first admin's; credentials checked.
    Access, access, AccessState = access
}

/// A user's name as given: 1 to 256 characters, no control characters.
fn user_name(name: &str, field: &str) -> Result<String, LakeError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(LakeError::Invalid(format!(
            "{field}: must be 1 to 256 characters without control characters"
        )));
    }
    Ok(name.to_owned())
}

impl<'a> Access<'a> {
    /// The OpenID Connect issuer's verifier, when `mode = "oidc"`: the dashboard's sign-in there.
    pub fn oidc(&self) -> Option<&'a oidc::Verifier> {
        self.state.oidc.as_ref()
    }
}

impl Access<'_> {
    /// Adds a user or service account whose tokens may hold at most `role`.
    pub async fn add_user(
        &self,
        name: &str,
        kind: UserKind,
        role: Role,
    ) -> Result<crate::catalog::UserRecord, LakeError> {
        let name = user_name(name, "name")?;
        let added = self
            .catalog
            .insert_user(&crate::catalog::UserRecord {
                name: name.clone(),
                kind,
                role,
                created_at: chrono::Utc::now(),
                disabled_at: None,
            })
            .await;
        match added {
            Err(crate::catalog::CatalogError::Conflict(c))
                if c.constraint == crate::catalog::Constraint::UserName =>
            {
                Err(LakeError::Conflict(format!(
                    "a user {name:?} exists already"
                )))
            }
            other => Ok(other?),
        }
    }

    /// One user.
    pub async fn user(&self, name: &str) -> Result<crate::catalog::UserRecord, LakeError> {
        Ok(self.catalog.user(name.trim()).await?)
    }

    /// One token's record (never its secret).
    pub async fn token(&self, id: uuid::Uuid) -> Result<crate::catalog::TokenRecord, LakeError> {
        Ok(self.catalog.token(id).await?)
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<crate::catalog::UserRecord>, LakeError> {
        Ok(self.catalog.list_users().await?)
    }

    /// Disables a user: their tokens stop working at once, on every replica.
    pub async fn disable_user(&self, name: &str) -> Result<crate::catalog::UserRecord, LakeError> {
        let user = self.catalog.disable_user(name.trim()).await?;
        self.state.forget(None);
        Ok(user)
    }

    /// Issues a token for a live user, at most their role; its text is in the answer and nowhere
    /// else.
    pub async fn issue(&self, req: TokenRequest) -> Result<Issued, LakeError> {
        let name = req.name.trim();
        let owner = user_name(&req.owner, "owner")?;
        let owner = owner.as_str();
        if name.is_empty() || name.len() > 128 {
            return Err(LakeError::Invalid(
                "name: must be 1 to 128 characters".into(),
            ));
        }
        let user = match self.catalog.user(owner).await {
            Ok(u) => u,
            Err(crate::catalog::CatalogError::NotFound(_)) => {
                return Err(LakeError::Invalid(format!(
                    "owner: no user {owner:?}; add one with `lake user add {owner} --role ROLE`"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        if user.disabled_at.is_some() {
            return Err(LakeError::Invalid(format!(
                "owner: the user {owner:?} is disabled"
            )));
        }
        if req.role > user.role {
            return Err(LakeError::Invalid(format!(
                "role: {owner:?} is a {}; their tokens may hold that role or less, not {}",
                user.role, req.role
            )));
        }
        let max = self.settings.access.auth.max_token_days;
        let days = req.days.unwrap_or(DEFAULT_TOKEN_DAYS.min(max));
        if days == 0 || days > max {
            return Err(LakeError::Invalid(format!(
                "days: must be between 1 and {max} ([auth] max_token_days)"
            )));
        }
        let bearer = Bearer::generate();
        let record = self
            .catalog
            .insert_token(&crate::catalog::NewToken {
                id: bearer.id,
                name: name.to_owned(),
                owner: owner.to_owned(),
                role: req.role,
                digest: bearer.secret.digest(),
                expires_at: chrono::Utc::now() + chrono::Duration::days(i64::from(days)),
            })
            .await?;
        Ok(Issued {
            token: bearer.reveal(),
            record,
        })
    }

    /// Tokens, newest first, of one owner or of everyone.
    pub async fn tokens(
        &self,
        owner: Option<&str>,
    ) -> Result<Vec<crate::catalog::TokenRecord>, LakeError> {
        Ok(self.catalog.list_tokens(owner).await?)
    }

    /// Revokes a token by its id (the `<id>` of `lake_<id>_<secret>`).
    pub async fn revoke(&self, id: uuid::Uuid) -> Result<crate::catalog::TokenRecord, LakeError> {
        let token = self.catalog.revoke_token(id).await?;
        self.state.forget(Some(id));
        Ok(token)
    }

    /// The first admin token of a lake that has no live admin token yet.
    pub async fn bootstrap(&self) -> Result<Issued, LakeError> {
        let now = chrono::Utc::now();
        let live_admin = self
            .catalog
            .list_tokens(None)
            .await?
            .into_iter()
            .any(|t| t.role == Role::Admin && t.revoked_at.is_none() && t.expires_at > now);
        if live_admin {
            return Err(LakeError::Conflict(
                "this lake has a live admin token already; an admin issues further tokens with `lake token create`".into(),
            ));
        }
        match self.catalog.user("admin").await {
            Ok(u) if u.role == Role::Admin && u.disabled_at.is_none() => {}
            Ok(_) => {
                return Err(LakeError::Conflict(
                    "the user \"admin\" is disabled or not an admin; add an admin with `lake user add NAME --role admin` and issue their token with `lake token create`".into(),
                ));
            }
            Err(crate::catalog::CatalogError::NotFound(_)) => {
                self.add_user("admin", UserKind::Person, Role::Admin)
                    .await?;
            }
            Err(e) => return Err(e.into()),
        }
        self.issue(TokenRequest {
            name: "bootstrap".into(),
            owner: "admin".into(),
            role: Role::Admin,
            days: None,
        })
        .await
    }

    /// The principal a request's bearer token names: a lake token that is known, live and whose
    /// secret matches, or (with `mode = "oidc"`) the issuer's JWT; why not otherwise (the text of
    /// a 401).
    pub async fn authenticate(&self, presented: &str) -> Result<Principal, String> {
        match &self.state.oidc {
            Some(v) if !presented.starts_with(TOKEN_PREFIX) => v.verify(presented).await,
            _ => self.lake_token(presented).await.map(|t| Principal {
                user: t.owner,
                via: t.id.simple().to_string(),
                role: t.role,
            }),
        }
    }

    /// The lake token presented, if it is known, live and its secret matches.
    async fn lake_token(&self, presented: &str) -> Result<crate::catalog::TokenRecord, String> {
        let bearer: Bearer = presented.parse()?;
        let unknown = || "the token is not known to this lake".to_owned();
        let cached = self.state.recent.as_ref().and_then(|c| c.get(&bearer.id));
        let fresh = cached.is_none();
        let mut record = match cached {
            Some(r) => r,
            None => match self.catalog.token(bearer.id).await {
                Ok(r) => r,
                Err(crate::catalog::CatalogError::NotFound(_)) => return Err(unknown()),
                Err(e) => return Err(format!("the token cannot be checked now: {e}")),
            },
        };
        if !bearer.secret.matches(&record.digest) {
            return Err(unknown());
        }
        if record.revoked_at.is_some() {
            return Err("the token was revoked".into());
        }
        if record.owner_disabled_at.is_some() {
            return Err(format!("the token's user {:?} is disabled", record.owner));
        }
        if record.expires_at <= chrono::Utc::now() {
            return Err("the token has expired".into());
        }
        // Last use to the minute: one write a minute per token, not one per request.
        let recorded = record
            .last_used_at
            .is_some_and(|t| chrono::Utc::now() - t < chrono::Duration::seconds(60));
        if !recorded {
            match self.catalog.touch_token(record.id).await {
                Ok(()) => record.last_used_at = Some(chrono::Utc::now()),
                Err(e) => tracing::warn!(token = %record.id, error = %e, "Token use not recorded"),
            }
        }
        if let Some(recent) = &self.state.recent
            && (fresh || !recorded)
        {
            recent.insert(record.id, record.clone());
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_holds_what_the_table_gives_it() {
        let p = Policy::default();
        let allowed = |role, right| check(&p, role, right).is_ok();
        for role in Role::ALL {
            assert!(allowed(role, Right::Read) && allowed(role, Right::Download));
        }
        assert!(!allowed(Role::Reader, Right::DownloadRaw));
        assert!(allowed(Role::Contributor, Right::DownloadRaw));
        assert!(!allowed(Role::Reader, Right::Write));
        assert!(allowed(Role::Contributor, Right::PromoteToProcessed));
        assert!(!allowed(Role::Contributor, Right::PromoteFurther));
        assert!(!allowed(Role::Contributor, Right::Delete));
        assert!(
            allowed(Role::Curator, Right::PromoteFurther) && allowed(Role::Curator, Right::Delete)
        );
        assert!(!allowed(Role::Curator, Right::Administer));
        assert!(allowed(Role::Admin, Right::Administer));
        // Raw downloads can be kept to curators.
        let strict = Policy {
            raw_download: Role::Curator,
        };
        assert!(check(&strict, Role::Contributor, Right::DownloadRaw).is_err());
    }

    #[test]
    fn a_refusal_names_the_right_and_the_role_it_needs() {
        let e = check(&Policy::default(), Role::Contributor, Right::Delete).err();
        assert_eq!(
            e.map(|e| e.to_string()),
            Some(
                "deleting a dataset needs the curator role; this token's role is contributor"
                    .into()
            )
        );
    }

    #[test]
    fn tokens_read_back_and_only_their_own_secret_matches() -> Result<(), String> {
        let t = Bearer::generate();
        let text = t.reveal();
        assert!(
            text.starts_with("lake_") && text.len() == 5 + 32 + 1 + 64,
            "{text}"
        );
        let back: Bearer = text.parse()?;
        assert_eq!(back, t);
        let digest = t.secret.digest();
        assert!(back.secret.matches(&digest));
        assert!(!Bearer::generate().secret.matches(&digest));
        assert_ne!(Secret::generate(), Secret::generate());
        for bad in [
            "",
            "lake_",
            "bearer xyz",
            "lake_nothex_00",
            &text[..text.len() - 1],
            &text.replace("lake_", "lakes_"),
        ] {
            assert!(bad.parse::<Bearer>().is_err(), "{bad:?} parsed");
        }
        Ok(())
    }
}
