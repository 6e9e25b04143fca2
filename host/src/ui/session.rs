//! Signing in to the dashboard, and the CSRF token its forms carry.
//!
//! A person signs in with a lake token (or, with `mode = "oidc"`, an access token from the
//! issuer). It is checked exactly as a bearer token is (`http::auth::sign_in`: same limits on
//! failed attempts, same audit) and kept in the `lake_session` cookie: `HttpOnly` (no script
//! reads it), `SameSite=Lax` (no other site's form sends it), `Path=/ui` (only the dashboard's
//! routes read it; the JSON API never takes a credential a browser attaches on its own).
//!
//! Every request that changes something must also send the page's CSRF token in the
//! `x-csrf-token` header, equal to the `lake_csrf` cookie (a double-submit token, since a page
//! from another origin can neither read the cookie nor set the header); the dashboard's script
//! adds it to every htmx request. Otherwise the answer is 403 and nothing is done.

use axum::extract::{Form, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::http::{ApiError, AppState};

/// The cookie holding a signed-in browser's token.
pub const SESSION: &str = "lake_session";
/// The cookie holding the CSRF token.
pub const CSRF: &str = "lake_csrf";
/// How long a sign-in lasts in the browser.
const SESSION_SECS: u32 = 12 * 3600;

/// The request's CSRF token, for the page's forms.
#[derive(Debug, Clone)]
pub struct Csrf(pub String);

/// The value of cookie `name`, if the request sends it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

fn new_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The middleware on every `/ui` route: a CSRF token for the page (a new cookie when the browser
/// has none), and a refusal of any change that does not send it back.
pub async fn csrf(mut req: Request, next: Next) -> Response {
    let known = cookie(req.headers(), CSRF)
        .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned);
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    // Signing in and out are plain forms that work without script; a forged sign-in could only
    // sign the browser in as the forger, and a forged sign-out only signs it out.
    let exempt = matches!(req.uri().path(), "/ui/sign-in" | "/ui/sign-out");
    if !safe && !exempt {
        let sent = req
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok());
        let matches = match (&known, sent) {
            (Some(k), Some(s)) => crate::identity::constant_time_eq(k.as_bytes(), s.as_bytes()),
            _ => false,
        };
        if !matches {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "this form did not come from a page of this lake (or the page is stale); reload the page and try again",
            )
            .into_response();
        }
    }
    let fresh = known.is_none();
    let token = known.unwrap_or_else(new_token);
    req.extensions_mut().insert(Csrf(token.clone()));
    let mut resp = next.run(req).await;
    if fresh
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{CSRF}={token}; Path=/ui; HttpOnly; SameSite=Strict"
        ))
    {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// The sign-in page for a browser that wanted `next`, with why it is asked.
pub fn sign_in_response(next: &str, why: Option<&str>) -> Response {
    let why = why.map(|w| {
        w.split("; send Authorization")
            .next()
            .unwrap_or(w)
            .to_owned()
    });
    super::render(&super::pages::SignIn {
        next: safe_next(next).to_owned(),
        why,
    })
}

/// Where to go after signing in: a dashboard path, never another site.
fn safe_next(next: &str) -> &str {
    if next.starts_with("/ui") && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/ui"
    }
}

/// Query of `GET /ui/sign-in`.
#[derive(Debug, Deserialize)]
pub struct SignInQuery {
    next: Option<String>,
}

/// `GET /ui/sign-in`.
pub async fn sign_in_page(axum::extract::Query(q): axum::extract::Query<SignInQuery>) -> Response {
    sign_in_response(q.next.as_deref().unwrap_or("/ui"), None)
}

/// Body of `POST /ui/sign-in`.
#[derive(Debug, Deserialize)]
pub struct SignInForm {
    token: String,
    next: Option<String>,
}

/// `POST /ui/sign-in`: checks the token as the API would, keeps it in the session cookie and
/// goes on to the page that asked (303); the sign-in page again with why, otherwise (401).
pub async fn sign_in(State(s): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let form = match Form::<SignInForm>::from_request(Request::from_parts(parts.clone(), body), &())
        .await
    {
        Ok(Form(f)) => f,
        Err(e) => {
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                e.body_text(),
            )
            .into_response();
        }
    };
    let next = safe_next(form.next.as_deref().unwrap_or("/ui")).to_owned();
    if let Err(resp) = crate::http::sign_in(&s, &parts, &form.token).await {
        let status = resp.status();
        let why = resp
            .extensions()
            .get::<crate::http::ErrorNote>()
            .map(|n| n.message.clone());
        let mut page = sign_in_response(&next, why.as_deref());
        *page.status_mut() = status;
        for h in [header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
            if let Some(v) = resp.headers().get(&h) {
                page.headers_mut().insert(h, v.clone());
            }
        }
        return page;
    }
    let mut resp = axum::response::Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{SESSION}={}; Path=/ui; Max-Age={SESSION_SECS}; HttpOnly; SameSite=Lax",
        form.token.trim()
    )) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// `POST /ui/sign-out`: forgets the browser's token.
pub async fn sign_out() -> Response {
    let mut resp = axum::response::Redirect::to("/ui/sign-in").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("lake_session=; Path=/ui; Max-Age=0; HttpOnly; SameSite=Lax"),
    );
    resp
}

use axum::extract::FromRequest;
