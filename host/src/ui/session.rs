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

/// The sign-in page for a browser that wanted `next`, with why it is asked; with a button to sign
/// in at the issuer when `oidc` names one.
pub fn sign_in_response(next: &str, why: Option<&str>, oidc: Option<&str>) -> Response {
    let why = why.map(|w| {
        w.split("; send Authorization")
            .next()
            .unwrap_or(w)
            .to_owned()
    });
    let next = safe_next(next).to_owned();
    super::render(&super::pages::SignIn {
        oidc: oidc.map(|issuer| {
            (
                format!(
                    "/ui/sign-in/oidc?next={}",
                    percent_encoding::utf8_percent_encode(
                        &next,
                        percent_encoding::NON_ALPHANUMERIC
                    )
                ),
                issuer.to_owned(),
            )
        }),
        next,
        why,
    })
}

/// The issuer a person may sign in at, when `mode = "oidc"`.
pub fn issuer(s: &AppState) -> Option<&str> {
    s.lake.access().oidc().map(|v| v.issuer())
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
pub async fn sign_in_page(
    State(s): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<SignInQuery>,
) -> Response {
    sign_in_response(q.next.as_deref().unwrap_or("/ui"), None, issuer(&s))
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
        let why = note_of(&resp);
        let mut page = sign_in_response(&next, Some(&why), issuer(&s));
        *page.status_mut() = status;
        for h in [header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
            if let Some(v) = resp.headers().get(&h) {
                page.headers_mut().insert(h, v.clone());
            }
        }
        return page;
    }
    signed_in(&next, form.token.trim())
}

/// On to `next`, the session cookie holding `credential`.
fn signed_in(next: &str, credential: &str) -> Response {
    let mut resp = axum::response::Redirect::to(next).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{SESSION}={credential}; Path=/ui; Max-Age={SESSION_SECS}; HttpOnly; SameSite=Lax"
    )) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// The cookie that carries a sign-in at the issuer from its start to its return.
const OIDC_FLOW: &str = "lake_oidc";
/// How long a person has to sign in at the issuer.
const OIDC_FLOW_SECS: u32 = 600;

/// Where the issuer sends the browser back: `[auth.oidc] redirect_url`, else this lake's address
/// as the browser reached it.
fn redirect_uri(s: &AppState, headers: &HeaderMap) -> String {
    if let Some(configured) = s.lake.access().oidc().and_then(|v| v.redirect_url()) {
        return configured.to_owned();
    }
    format!(
        "{}/ui/sign-in/oidc/callback",
        crate::http::address_of(headers)
    )
}

/// `GET /ui/sign-in/oidc`: off to the issuer's sign-in (the authorization code flow with PKCE);
/// the state, nonce and verifier ride along in a short-lived cookie only this path reads.
pub async fn oidc_start(
    State(s): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<SignInQuery>,
) -> Response {
    let next = safe_next(q.next.as_deref().unwrap_or("/ui")).to_owned();
    let Some(verifier) = s.lake.access().oidc() else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this lake signs people in with tokens only ([auth] mode is not \"oidc\")",
        )
        .into_response();
    };
    let begun = match verifier.begin_sign_in(&redirect_uri(&s, &headers)).await {
        Ok(b) => b,
        Err(why) => {
            let mut page = sign_in_response(&next, Some(&why), None);
            *page.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return page;
        }
    };
    let flow = format!(
        "{}.{}.{}.{}",
        begun.state,
        begun.nonce,
        begun.verifier,
        percent_encoding::utf8_percent_encode(&next, percent_encoding::NON_ALPHANUMERIC)
    );
    let mut resp = axum::response::Redirect::to(&begun.url).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{OIDC_FLOW}={flow}; Path=/ui/sign-in/oidc; Max-Age={OIDC_FLOW_SECS}; HttpOnly; SameSite=Lax"
    )) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// Query of `GET /ui/sign-in/oidc/callback`, as the issuer sends the browser back.
#[derive(Debug, Default, Deserialize)]
pub struct OidcReturn {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /ui/sign-in/oidc/callback`: the issuer's answer. The state must be this browser's, the
/// code is redeemed with its verifier, and the ID token must carry its nonce and map to a role;
/// then the token is the session. A refusal is audited and counted like a failed token.
pub async fn oidc_callback(State(s): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let q = axum::extract::Query::<OidcReturn>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let flow = cookie(&parts.headers, OIDC_FLOW).map(|f| f.splitn(4, '.').collect::<Vec<_>>());
    let next = flow
        .as_ref()
        .and_then(|f| f.get(3))
        .and_then(|n| percent_encoding::percent_decode_str(n).decode_utf8().ok())
        .map(|n| safe_next(&n).to_owned())
        .unwrap_or_else(|| "/ui".to_owned());
    let refuse = |status: StatusCode, why: String| {
        let mut page = sign_in_response(&next, Some(&why), issuer(&s));
        *page.status_mut() = status;
        forget_flow(&mut page);
        page
    };
    let Some(verifier) = s.lake.access().oidc() else {
        return refuse(
            StatusCode::NOT_FOUND,
            "this lake signs people in with tokens only".into(),
        );
    };
    let begun = match flow.as_deref() {
        Some([state, nonce, code_verifier, _]) => crate::identity::oidc::SignInRequest {
            url: String::new(),
            state: (*state).to_owned(),
            nonce: (*nonce).to_owned(),
            verifier: (*code_verifier).to_owned(),
        },
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "this sign-in was not begun in this browser, or took more than ten minutes: \
                 sign in again"
                    .into(),
            );
        }
    };
    if q.state.as_deref() != Some(begun.state.as_str()) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the issuer's answer is not for this browser's sign-in (its state differs): sign in again"
                .into(),
        );
    }
    let outcome = match (q.code.as_deref(), q.error.as_deref()) {
        (Some(code), None) => {
            verifier
                .finish_sign_in(code, &redirect_uri(&s, &parts.headers), &begun)
                .await
        }
        (_, Some(e)) => Err(format!(
            "the issuer did not sign you in: {}",
            q.error_description.as_deref().unwrap_or(e)
        )),
        (None, None) => Err("the issuer's answer holds no code".into()),
    };
    match outcome {
        Ok((id_token, _)) => {
            let mut resp = signed_in(&next, &id_token);
            forget_flow(&mut resp);
            resp
        }
        Err(why) => {
            let resp = crate::http::refuse_sign_in(&s, &parts, why).await;
            let status = resp.status();
            let mut page = refuse(status, note_of(&resp));
            for h in [header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
                if let Some(v) = resp.headers().get(&h) {
                    page.headers_mut().insert(h, v.clone());
                }
            }
            page
        }
    }
}

/// The message of an API error response.
fn note_of(resp: &Response) -> String {
    resp.extensions()
        .get::<crate::http::ErrorNote>()
        .map(|n| n.message.clone())
        .unwrap_or_else(|| "the sign-in was refused".into())
}

/// Ends the sign-in flow's cookie.
fn forget_flow(resp: &mut Response) {
    resp.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "lake_oidc=; Path=/ui/sign-in/oidc; Max-Age=0; HttpOnly; SameSite=Lax",
        ),
    );
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
