//! Who is asking, and whether they may: one middleware in front of every route.
//!
//! When the lake enforces tokens (`[auth]`, see `config::enforces_tokens`), a request presents
//! `Authorization: Bearer lake_<id>_<secret>`. A missing, malformed, unknown, expired or revoked
//! token is 401 with `WWW-Authenticate: Bearer`; a live one whose role lacks the route's right is
//! 403 naming the right and the role it needs. Which right a route needs is decided here, in
//! [`right_of`], for every route at once; the few rules that depend on the dataset (raw downloads,
//! promotions beyond processed) are decided by the handler with [`Caller::require`], which calls
//! the same check. Health, metrics, the OpenAPI document and `/docs` are open.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::identity::{Right, Role, check};

/// The principal behind a request, for handlers and provenance.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user or service account, when tokens are enforced.
    pub owner: Option<String>,
    /// The token that authenticated the request.
    pub token: Option<uuid::Uuid>,
    /// What it may do (admin when tokens are not enforced: the lake is open on loopback).
    pub role: Role,
    policy: crate::identity::Policy,
}

impl Caller {
    /// Who acted, as provenance records it: the token's owner and the token
    /// (`ana (token 0190...)`); `None` when tokens are not enforced.
    pub fn actor(&self) -> Option<String> {
        match (&self.owner, self.token) {
            (Some(o), Some(t)) => Some(format!("{o} (token {})", t.simple())),
            (Some(o), None) => Some(o.clone()),
            _ => None,
        }
    }

    /// Refuses (403) unless the caller holds `right`.
    pub fn require(&self, right: Right) -> Result<(), ApiError> {
        check(&self.policy, self.role, right)
            .map_err(|r| ApiError::new(StatusCode::FORBIDDEN, "forbidden", r.to_string()))
    }
}

/// The right a route needs, by method and route pattern; `None` for the open routes.
pub fn right_of(method: &Method, route: &str) -> Option<Right> {
    match (method.as_str(), route) {
        (_, "/" | "/health" | "/metrics" | "/openapi.json" | "/docs" | "/docs/docs.css") => None,
        (_, r) if r.starts_with("/backup") => Some(Right::Administer),
        ("GET", "/catalog/{id}/download/{filename}") => Some(Right::Download),
        // A merge computes a new table; saving it writes one.
        ("GET", "/files/merge") => Some(Right::Write),
        ("GET" | "HEAD", _) => Some(Right::Read),
        ("DELETE", _) => Some(Right::Delete),
        ("POST", "/layers/promote") => Some(Right::PromoteToProcessed),
        _ => Some(Right::Write),
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

/// The middleware: authenticates, checks the route's right, and hands the [`Caller`] on.
pub async fn authorize(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let rules = s.lake.settings().access;
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let right = match &route {
        Some(r) => right_of(req.method(), r),
        // No route matched: the router answers 404 whoever asks.
        None => None,
    };
    let caller = if rules.enforce {
        let Some(right) = right else {
            return next.run(req).await;
        };
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        let token = match presented {
            None => return unauthorized("this lake asks who you are"),
            Some(v) => match v.split_once(' ') {
                Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
                _ => return unauthorized("the Authorization header is not a bearer token"),
            },
        };
        let record = match s.lake.access().authenticate(token).await {
            Ok(r) => r,
            Err(why) => return unauthorized(&why),
        };
        let caller = Caller {
            owner: Some(record.owner),
            token: Some(record.id),
            role: record.role,
            policy: rules.policy,
        };
        if let Err(e) = caller.require(right) {
            return e.into_response();
        }
        caller
    } else {
        Caller {
            owner: None,
            token: None,
            role: Role::Admin,
            policy: rules.policy,
        }
    };
    let actor = caller.actor();
    req.extensions_mut().insert(caller);
    crate::provenance::acting_as(actor, next.run(req)).await
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
        assert_eq!(right_of(&get, "/files/merge"), Some(Right::Write));
        assert_eq!(right_of(&get, "/backup/jobs"), Some(Right::Administer));
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
    }
}
