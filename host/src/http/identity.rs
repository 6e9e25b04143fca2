//! The `/tokens` and `/users` routes: anyone signed in lists, issues and revokes their own tokens
//! (at most their user's role); an admin does so for anyone, and adds and disables users.

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::auth::Caller;
use super::{ApiError, ApiJson, AppState, ErrorBody};
use crate::catalog::{TokenRecord, UserRecord};
use crate::identity::{Issued, Right, Role, TokenRequest, UserKind};
use crate::lake::LakeError;

/// Whose tokens a request is about: the caller's own, or (for an admin) anyone's. An open lake
/// (no token asked, on loopback) has no caller, so it must name the owner.
fn owner_for(caller: &Caller, asked: Option<String>) -> Result<String, ApiError> {
    let me = caller.actor.as_ref().map(|a| a.user.clone());
    match (asked.filter(|o| !o.trim().is_empty()), me) {
        (Some(o), Some(me)) if o.trim() == me => Ok(me),
        (Some(o), _) => caller.require(Right::Administer).map(|()| o),
        (None, Some(me)) => Ok(me),
        (None, None) => Err(ApiError::invalid(
            "owner: this lake is open (no token asked), so name the user the token acts for",
        )),
    }
}

/// Query of `GET /tokens`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TokensQuery {
    /// Whose tokens (default: the caller's own; anyone's for an admin).
    owner: Option<String>,
}

/// Tokens, newest first (never their secrets): the caller's own, or an admin's pick.
#[utoipa::path(get, path = "/tokens", params(TokensQuery),
    responses((status = 200, body = Vec<TokenRecord>), (status = 403, body = ErrorBody)))]
pub(super) async fn list_tokens(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<TokensQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<TokenRecord>>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    // An admin (or the open lake) who names no owner sees every token.
    let owner = if q.owner.is_none() && caller.require(Right::Administer).is_ok() {
        None
    } else {
        Some(owner_for(&caller, q.owner)?)
    };
    Ok(Json(s.lake.access().tokens(owner.as_deref()).await?))
}

/// Body of `POST /tokens`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewTokenBody {
    /// What its holder calls it (`laptop`, `nightly-pipeline`).
    name: String,
    /// reader, contributor, curator or admin: at most the user's role (default: the user's role).
    role: Option<Role>,
    /// Days it lives (default 90, at most `[auth] max_token_days`).
    days: Option<u32>,
    /// The user it acts for (default: the caller; another user needs an admin).
    owner: Option<String>,
}

/// Issue a token: its text is in this answer and nowhere else.
#[utoipa::path(post, path = "/tokens", request_body = NewTokenBody,
    responses((status = 201, body = Issued), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn create_token(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<NewTokenBody>,
) -> Result<(StatusCode, Json<Issued>), ApiError> {
    let owner = owner_for(&caller, body.owner)?;
    let access = s.lake.access();
    // The user's role unless asked for less; an unknown user is refused by `issue`, which says so.
    let role = match (body.role, access.user(&owner).await) {
        (Some(r), _) => r,
        (None, Ok(u)) => u.role,
        (None, Err(LakeError::NotFound(_))) => Role::Reader,
        (None, Err(e)) => return Err(e.into()),
    };
    let issued = access
        .issue(TokenRequest {
            name: body.name,
            owner,
            role,
            days: body.days,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

/// Revoke a token: one's own, or (for an admin) anyone's; another's is not found.
#[utoipa::path(delete, path = "/tokens/{id}", params(("id" = String, Path, description = "Token id")),
    responses((status = 200, body = TokenRecord), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn revoke_token(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<TokenRecord>, ApiError> {
    let id = super::parse_uuid(id.trim_start_matches("lake_"), "token")?;
    let access = s.lake.access();
    let record = access.token(id).await?;
    let mine = caller
        .actor
        .as_ref()
        .is_some_and(|me| me.user == record.owner);
    // Someone else's token is not found for a caller who may not manage it: no hint it exists.
    if !mine && caller.require(Right::Administer).is_err() {
        return Err(LakeError::NotFound(format!("token {} not found", id.simple())).into());
    }
    Ok(Json(access.revoke(id).await?))
}

/// Users and service accounts, by name (admins).
#[utoipa::path(get, path = "/users", responses((status = 200, body = Vec<UserRecord>), (status = 403, body = ErrorBody)))]
pub(super) async fn list_users(
    State(s): State<AppState>,
) -> Result<Json<Vec<UserRecord>>, ApiError> {
    Ok(Json(s.lake.access().users().await?))
}

/// Body of `POST /users`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewUserBody {
    /// Its name, as tokens and provenance name it.
    name: String,
    /// The most its tokens may hold.
    role: Role,
    /// `person` (default) or `service` (a pipeline, an instrument).
    kind: Option<UserKind>,
}

/// Add a user or service account (admins).
#[utoipa::path(post, path = "/users", request_body = NewUserBody,
    responses((status = 201, body = UserRecord), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn add_user(
    State(s): State<AppState>,
    ApiJson(body): ApiJson<NewUserBody>,
) -> Result<(StatusCode, Json<UserRecord>), ApiError> {
    let kind = body.kind.unwrap_or(UserKind::Person);
    let user = s
        .lake
        .access()
        .add_user(&body.name, kind, body.role)
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Disable a user: their tokens stop working at once, on every replica (admins).
#[utoipa::path(post, path = "/users/{name}/disable", params(("name" = String, Path, description = "User name")),
    responses((status = 200, body = UserRecord), (status = 404, body = ErrorBody)))]
pub(super) async fn disable_user(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<UserRecord>, ApiError> {
    Ok(Json(s.lake.access().disable_user(&name).await?))
}
