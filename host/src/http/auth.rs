//! Who is asking, and whether they may: one middleware in front of every route.
//!
//! When the lake enforces tokens (`[auth]`, see `config::enforces_tokens`), a request presents
//! `Authorization: Bearer lake_<id>_<secret>` (or, with `mode = "oidc"`, the issuer's JWT). A
//! missing, malformed, unknown, expired or revoked token is 401 with `WWW-Authenticate: Bearer`;
//! a live one whose role lacks the route's right is 403 naming the right and the role it needs;
//! one that asks too often is 429 with `Retry-After`, and so is an address that fails to
//! authenticate too often. Which right a route needs is decided here, in [`right_of`], for every
//! route at once; the few rules that depend on the dataset (raw downloads, promotions beyond
//! processed, what a caller may see) are decided by the handler with [`Caller`], which calls the
//! same check. Health, metrics, the OpenAPI document and `/docs` are open.
//!
//! Every request that may change something, and every refusal, is appended to the audit log
//! (`crate::audit`) with the request's id, which the response carries as `x-request-id`.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::{ApiError, AppState, ErrorNote};
use crate::audit::{Decision, NewAuditEntry};
use crate::identity::{Right, Role, Visibility, check};
use crate::provenance::Actor;

/// The principal behind a request, for handlers and provenance.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user and the token (or session) they act through, when tokens are enforced.
    pub actor: Option<Actor>,
    /// What it may do (admin when tokens are not enforced: the lake is open on loopback).
    pub role: Role,
    policy: crate::identity::Policy,
}

impl Caller {
    /// Refuses (403) unless the caller holds `right`.
    pub fn require(&self, right: Right) -> Result<(), ApiError> {
        check(&self.policy, self.role, right).map_err(|r| {
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", r.to_string()).refusing(right)
        })
    }

    /// What the caller may see.
    pub fn visibility(&self) -> Visibility {
        Visibility::of(&self.policy, self.role)
    }

    /// Passes `dataset` on when the caller may see it; otherwise the same 404 as a dataset that
    /// does not exist.
    pub fn reveal(
        &self,
        dataset: crate::catalog::Dataset,
    ) -> Result<crate::catalog::Dataset, ApiError> {
        if self.visibility().sees(dataset.layer) {
            Ok(dataset)
        } else {
            Err(
                crate::lake::LakeError::NotFound(format!("dataset {} not found", dataset.id))
                    .into(),
            )
        }
    }
}

/// The right a route needs, by method and route pattern; `None` for the open routes.
pub fn right_of(method: &Method, route: &str) -> Option<Right> {
    match (method.as_str(), route) {
        (_, "/" | "/health" | "/metrics" | "/openapi.json" | "/docs" | "/docs/docs.css") => None,
        // The dashboard's sign-in and its assets; `/ui/sign-in` checks the token it is given.
        (
            _,
            "/ui/"
            | "/ui/sign-in"
            | "/ui/sign-in/oidc"
            | "/ui/sign-in/oidc/callback"
            | "/ui/sign-out"
            | "/ui/assets/{file}",
        ) => None,
        (_, r)
            if r.starts_with("/backup")
                || r.starts_with("/audit")
                || r.starts_with("/admin")
                || r.starts_with("/users")
                || r.starts_with("/ui/backups") =>
        {
            Some(Right::Administer)
        }
        // The admin page shows the caller's own tokens to anyone; the rest to admins.
        ("GET", "/ui/admin") | (_, "/ui/admin/tokens" | "/ui/admin/tokens/{id}/revoke") => {
            Some(Right::Read)
        }
        ("GET", "/ui/files") => Some(Right::DownloadRaw),
        ("GET", "/ui/datasets/{id}/download/{file}") => Some(Right::Download),
        ("POST", "/ui/layers/promote") => Some(Right::PromoteToProcessed),
        // Anyone signed in manages their own tokens; others' need an admin (decided by the
        // handler, through the same check).
        (_, "/tokens" | "/tokens/{id}") => Some(Right::Read),
        ("GET", "/catalog/{id}/download/{filename}") => Some(Right::Download),
        // Uploaded files are raw datasets.
        ("GET", "/files" | "/files/{id}") => Some(Right::DownloadRaw),
        // A merge computes a new table; saving it writes one.
        ("GET", "/files/merge") => Some(Right::Write),
        // An engine's scan report changes nothing.
        ("POST", "/iceberg/v1/namespaces/{namespace}/tables/{table}/metrics") => Some(Right::Read),
        ("GET" | "HEAD", _) => Some(Right::Read),
        ("DELETE", _) => Some(Right::Delete),
        ("POST", "/layers/promote") => Some(Right::PromoteToProcessed),
        _ => Some(Right::Write),
    }
}

/// The per-process limits on how often a token may ask and an address may fail to authenticate.
#[derive(Debug)]
pub struct Guard {
    per_token: Option<DefaultKeyedRateLimiter<String>>,
    failed_auth: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl Guard {
    /// Limits from `[auth]` (0 turns one off).
    pub fn new(auth: &crate::config::AuthConfig) -> Self {
        fn keyed<K: std::hash::Hash + Eq + Clone>(
            per_minute: u32,
        ) -> Option<DefaultKeyedRateLimiter<K>> {
            NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n)))
        }
        Self {
            per_token: keyed(auth.requests_per_minute),
            failed_auth: keyed(auth.failed_auth_per_minute),
        }
    }

    /// How long `key` must wait, when `limiter` has no room for it now.
    fn wait<K: std::hash::Hash + Eq + Clone>(
        limiter: Option<&DefaultKeyedRateLimiter<K>>,
        key: &K,
    ) -> Option<Duration> {
        let limiter = limiter?;
        let over = limiter.check_key(key).err()?;
        // Keys of callers who stopped asking are dropped now and then.
        if limiter.len() > 10_000 {
            limiter.retain_recent();
        }
        Some(over.wait_time_from(limiter.clock().now()))
    }
}

/// A 401 that tells the client how to authenticate.
fn unauthorized(why: &str) -> Response {
    let mut r = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!("{why}; send Authorization: Bearer lake_<id>_<secret> (`lake token create`)"),
    )
    .into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// A 429 that says when to come back.
fn too_many(why: &str, wait: Duration) -> Response {
    let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    let mut r = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        format!("{why}; retry after {secs} s"),
    )
    .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// The bearer token a request presents, or why it presents none.
fn bearer(req: &Request) -> Result<&str, &'static str> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        // The dashboard's pages sign in once and send the token as a cookie, which only they
        // read: the JSON API never takes a credential the browser attaches on its own.
        if req.uri().path().starts_with("/ui") {
            return crate::ui::session::cookie(req.headers(), crate::ui::session::SESSION)
                .ok_or("sign in to use the dashboard");
        }
        return Err("this lake asks who you are");
    };
    let value = value
        .to_str()
        .map_err(|_| "the Authorization header is not a bearer token")?
        .trim();
    match value.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => Ok(t.trim()),
        _ => Err("the Authorization header is not a bearer token"),
    }
}

/// The client's address: the connection's, or the one a test's `MockConnectInfo` gives.
fn client_ip(req: &Request) -> Option<IpAddr> {
    client_ip_of(req.extensions())
}

fn client_ip_of(ext: &axum::http::Extensions) -> Option<IpAddr> {
    ext.get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .or_else(|| {
            ext.get::<axum::extract::connect_info::MockConnectInfo<SocketAddr>>()
                .map(|m| m.0.ip())
        })
}

/// The request as the audit log will record it, filled in as the middleware learns more.
struct Trail {
    entry: NewAuditEntry,
}

impl Trail {
    fn new(req: &Request, right: Right) -> Self {
        Self::of(req.method(), req.uri(), req.extensions(), right)
    }

    fn of(
        method: &Method,
        uri: &axum::http::Uri,
        ext: &axum::http::Extensions,
        right: Right,
    ) -> Self {
        let client = client_ip_of(ext).map(|ip| ip.to_string());
        let route = ext
            .get::<MatchedPath>()
            .map_or("", |p| p.as_str())
            .to_owned();
        Self {
            entry: NewAuditEntry {
                request_id: uuid::Uuid::now_v7().simple().to_string(),
                principal: None,
                token_id: None,
                client,
                method: method.as_str().to_owned(),
                route,
                resource: uri.path().chars().take(2048).collect(),
                action: right.as_str().to_owned(),
                decision: Decision::Allowed,
                reason: None,
                status: 0,
            },
        }
    }

    /// Records the response when it changed something or refused, and hands it on with the
    /// request's id.
    async fn close(mut self, s: &AppState, mut resp: Response) -> Response {
        let status = resp.status();
        let refused = matches!(
            status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS
        );
        let mutating = !matches!(self.entry.method.as_str(), "GET" | "HEAD" | "OPTIONS");
        if let Some(note) = resp.extensions().get::<ErrorNote>() {
            self.entry.reason = Some(note.message.clone());
            if let Some(r) = note.refused {
                self.entry.action = r.as_str().to_owned();
            }
        }
        if let Ok(v) = HeaderValue::from_str(&self.entry.request_id) {
            resp.headers_mut().insert("x-request-id", v);
        }
        if refused {
            self.entry.decision = Decision::Refused;
            metrics::counter!("lake_refusals_total", "action" => self.entry.action.clone(), "status" => status.as_str().to_owned()).increment(1);
        }
        if refused || mutating {
            self.entry.status = status.as_u16();
            if let Err(e) = s.lake.audit().record(&self.entry).await {
                tracing::error!(request_id = %self.entry.request_id, error = %e, "Audit entry not recorded");
            }
        }
        resp
    }
}

/// A dashboard sign-in with `token`: the checks of a bearer token, with the same limit on failed
/// attempts per address and the same audit of a refusal (as a 401 of `POST /ui/sign-in`).
pub(crate) async fn sign_in(
    s: &AppState,
    parts: &axum::http::request::Parts,
    token: &str,
) -> Result<crate::identity::Principal, Response> {
    match s.lake.access().authenticate(token.trim()).await {
        Ok(p) => Ok(p),
        Err(why) => Err(refuse_sign_in(s, parts, why).await),
    }
}

/// The answer to a dashboard sign-in refused for `why` (a token that did not check, or an
/// issuer's sign-in that did not), counted against the address's failed attempts and audited.
pub(crate) async fn refuse_sign_in(
    s: &AppState,
    parts: &axum::http::request::Parts,
    why: String,
) -> Response {
    let mut trail = Trail::of(&parts.method, &parts.uri, &parts.extensions, Right::Read);
    let ip = client_ip_of(&parts.extensions);
    let resp = match ip.and_then(|ip| Guard::wait(s.guard.failed_auth.as_ref(), &ip)) {
        Some(wait) => too_many("too many failed authentications from this address", wait),
        None => unauthorized(&why),
    };
    trail.entry.reason = Some(why);
    trail.close(s, resp).await
}

/// The middleware: authenticates, checks the route's right and the caller's rate, hands the
/// [`Caller`] on, and appends to the audit log.
pub async fn authorize(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let rules = &s.lake.settings().access;
    let right = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| right_of(req.method(), p.as_str()));
    // Open routes, and no route at all (the router answers 404 whoever asks).
    let Some(right) = right else {
        return next.run(req).await;
    };
    let mut trail = Trail::new(&req, right);
    let caller = if rules.enforce {
        let principal = match bearer(&req) {
            Ok(token) => s.lake.access().authenticate(token).await,
            Err(why) => Err(why.to_owned()),
        };
        match principal {
            Ok(p) => Caller {
                actor: Some(Actor {
                    user: p.user,
                    via: Some(p.via),
                }),
                role: p.role,
                policy: rules.policy,
            },
            Err(why) => {
                let ip = client_ip(&req);
                let resp = match ip.and_then(|ip| Guard::wait(s.guard.failed_auth.as_ref(), &ip)) {
                    Some(wait) => {
                        too_many("too many failed authentications from this address", wait)
                    }
                    None => unauthorized(&why),
                };
                return trail.close(&s, resp).await;
            }
        }
    } else {
        Caller {
            actor: None,
            role: Role::Admin,
            policy: rules.policy,
        }
    };
    if let Some(a) = &caller.actor {
        trail.entry.principal = Some(a.user.clone());
        trail.entry.token_id = a.via.clone();
        let key = a.via.clone().unwrap_or_else(|| a.user.clone());
        if let Some(wait) = Guard::wait(s.guard.per_token.as_ref(), &key) {
            let resp = too_many("this token has made too many requests", wait);
            return trail.close(&s, resp).await;
        }
    }
    if let Err(e) = caller.require(right) {
        return trail.close(&s, e.into_response()).await;
    }
    let actor = caller.actor.clone();
    req.extensions_mut().insert(caller);
    let resp = crate::provenance::acting_as(actor, next.run(req)).await;
    trail.close(&s, resp).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_needs_the_right_the_roles_table_gives_it() {
        let get = Method::GET;
        assert_eq!(right_of(&get, "/health"), None);
        assert_eq!(right_of(&get, "/docs"), None);
        assert_eq!(right_of(&get, "/catalog"), Some(Right::Read));
        assert_eq!(right_of(&get, "/provenance/{id}/prov"), Some(Right::Read));
        assert_eq!(
            right_of(&get, "/catalog/{id}/download/{filename}"),
            Some(Right::Download)
        );
        assert_eq!(right_of(&get, "/files"), Some(Right::DownloadRaw));
        assert_eq!(right_of(&get, "/files/merge"), Some(Right::Write));
        assert_eq!(right_of(&get, "/backup/jobs"), Some(Right::Administer));
        assert_eq!(right_of(&get, "/audit"), Some(Right::Administer));
        assert_eq!(
            right_of(&Method::POST, "/backup/trigger"),
            Some(Right::Administer)
        );
        assert_eq!(right_of(&Method::POST, "/catalog"), Some(Right::Write));
        assert_eq!(
            right_of(&Method::PUT, "/catalog/{id}/files/{filename}"),
            Some(Right::Write)
        );
        assert_eq!(
            right_of(&Method::POST, "/layers/promote"),
            Some(Right::PromoteToProcessed)
        );
        assert_eq!(
            right_of(&Method::DELETE, "/catalog/{id}"),
            Some(Right::Delete)
        );
        // The dashboard's routes, by the same table.
        assert_eq!(right_of(&get, "/ui/sign-in"), None);
        assert_eq!(right_of(&get, "/ui/sign-in/oidc/callback"), None);
        assert_eq!(right_of(&get, "/ui/assets/{file}"), None);
        assert_eq!(right_of(&get, "/ui"), Some(Right::Read));
        assert_eq!(right_of(&get, "/ui/datasets/{id}"), Some(Right::Read));
        assert_eq!(
            right_of(&get, "/ui/datasets/{id}/download/{file}"),
            Some(Right::Download)
        );
        assert_eq!(right_of(&get, "/ui/files"), Some(Right::DownloadRaw));
        assert_eq!(right_of(&get, "/ui/backups"), Some(Right::Administer));
        assert_eq!(
            right_of(&Method::POST, "/ui/backups/trigger"),
            Some(Right::Administer)
        );
        assert_eq!(
            right_of(&Method::POST, "/ui/layers/promote"),
            Some(Right::PromoteToProcessed)
        );
        assert_eq!(
            right_of(&Method::POST, "/ui/files/merge"),
            Some(Right::Write)
        );
        assert_eq!(
            right_of(&Method::POST, "/ui/admin/tokens"),
            Some(Right::Read)
        );
    }

    #[test]
    fn a_limited_key_waits_and_others_do_not() {
        let guard = Guard::new(&crate::config::AuthConfig {
            requests_per_minute: 2,
            ..Default::default()
        });
        let key = "t1".to_owned();
        assert!(Guard::wait(guard.per_token.as_ref(), &key).is_none());
        assert!(Guard::wait(guard.per_token.as_ref(), &key).is_none());
        let wait = Guard::wait(guard.per_token.as_ref(), &key);
        assert!(
            wait.is_some_and(|w| w > Duration::ZERO && w <= Duration::from_secs(30)),
            "the third request waits: {wait:?}"
        );
        assert!(Guard::wait(guard.per_token.as_ref(), &"t2".to_owned()).is_none());
        let off = Guard::new(&crate::config::AuthConfig {
            requests_per_minute: 0,
            ..Default::default()
        });
        assert!((0..100).all(|_| Guard::wait(off.per_token.as_ref(), &key).is_none()));
    }
}
