//! The dashboard under `/ui`: the lab's window on the lake, rendered by the server.
//!
//! Pages are HTML from compile-checked templates (askama, `host/templates/ui/`) filled from the
//! same services the JSON API calls; a page never reads the catalog or the store another way.
//! Partial updates (the catalog's rows while typing, a promotion's answer) come from the same
//! handlers with `HX-Request` set, through the vendored htmx. Every asset is embedded in the
//! binary and served under a URL holding its hash ([`assets`]), so the dashboard works on a
//! machine with no internet and under a Content-Security-Policy that allows nothing but this
//! origin and no inline script.
//!
//! Authorization is the API's: the same middleware and the same `right_of` table decide every
//! `/ui` route, and the pages only hide the buttons the caller's role could not use anyway. A
//! browser signs in with a token, kept in an `HttpOnly; SameSite=Lax` cookie that only `/ui`
//! routes read; every form that changes something carries a CSRF token ([`session`]).

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::http::{AppState, Caller};
use crate::identity::{Right, Role};

pub mod assets;
mod charts;
mod pages;
pub mod session;

/// The dashboard's Content-Security-Policy: scripts, styles, images and requests from this origin
/// only, no inline script or style, no framing, forms only back here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Routes under `/ui`.
pub fn router(state: AppState) -> Router<AppState> {
    let upload = post(pages::upload).route_layer(middleware::from_fn_with_state(
        state,
        crate::http::one_of_the_uploads,
    ));
    Router::new()
        .route("/ui", get(pages::overview))
        .route("/ui/", get(|| async { Redirect::permanent("/ui") }))
        .route("/ui/catalog", get(pages::catalog))
        .route("/ui/datasets/{id}", get(pages::dataset))
        // A dataset as an RO-Crate names it (a directory-like id, with its slash).
        .route(
            "/ui/datasets/{id}/",
            get(
                |axum::extract::Path(id): axum::extract::Path<String>| async move {
                    crate::http::parse_id(&id)
                        .map(|id| Redirect::permanent(&format!("/ui/datasets/{id}")))
                },
            ),
        )
        .route("/ui/datasets/{id}/graph", get(pages::graph))
        .route("/ui/datasets/{id}/prov", get(pages::prov))
        .route("/ui/datasets/{id}/download/{file}", get(pages::download))
        .route("/ui/layers", get(pages::layers))
        .route("/ui/layers/promote", post(pages::promote))
        .route("/ui/runs", get(pages::runs))
        .route("/ui/collections", get(pages::collections))
        .route("/ui/collections/run", post(pages::collect))
        .route("/ui/collections/{entry}", get(pages::collection))
        .route("/ui/backups", get(pages::backups))
        .route("/ui/backups/trigger", post(pages::trigger_backup))
        .route("/ui/backups/jobs", get(pages::backup_jobs))
        .route("/ui/backups/{id}/verify", post(pages::verify_backup))
        .route("/ui/files", get(pages::files))
        .route("/ui/files/upload", upload)
        .route("/ui/files/merge", post(pages::merge))
        .route("/ui/files/save", post(pages::save))
        .route("/ui/admin", get(pages::admin))
        .route("/ui/admin/tokens", post(pages::create_token))
        .route("/ui/admin/tokens/{id}/revoke", post(pages::revoke_token))
        .route(
            "/ui/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/ui/sign-in/oidc", get(session::oidc_start))
        .route("/ui/sign-in/oidc/callback", get(session::oidc_callback))
        .route("/ui/sign-out", post(session::sign_out))
        .route("/ui/assets/{file}", get(assets::serve))
        .layer(middleware::from_fn(session::csrf))
}

/// What every page's frame needs: who is signed in, what they may do, the CSRF token, the page.
#[derive(Debug, Clone)]
pub struct Chrome {
    /// The page's key in the navigation.
    pub page: &'static str,
    /// Who is signed in (`None` on an open loopback lake).
    pub user: Option<String>,
    /// Their role.
    pub role: Role,
    /// What the role allows, for showing buttons.
    pub may: May,
    /// The CSRF token the page's forms send back.
    pub csrf: String,
}

/// The rights a page asks about to decide which controls to show.
#[derive(Debug, Clone, Copy)]
pub struct May {
    /// Upload, run, merge, save, collect.
    pub write: bool,
    /// Promote raw to processed.
    pub promote: bool,
    /// Promote beyond processed; delete.
    pub curate: bool,
    /// Download raw data.
    pub raw: bool,
    /// Backups, users, others' tokens, the audit.
    pub admin: bool,
}

impl Chrome {
    /// The frame of `page` for `caller`.
    pub fn new(page: &'static str, caller: &Caller, csrf: &session::Csrf) -> Self {
        let may = |r| caller.require(r).is_ok();
        Self {
            page,
            user: caller.actor.as_ref().map(|a| a.user.clone()),
            role: caller.role,
            may: May {
                write: may(Right::Write),
                promote: may(Right::PromoteToProcessed),
                curate: may(Right::PromoteFurther),
                raw: may(Right::DownloadRaw),
                admin: may(Right::Administer),
            },
            csrf: csrf.0.clone(),
        }
    }

    /// The hashed URL of an embedded asset.
    pub fn asset(&self, name: &str) -> &'static str {
        assets::url(name)
    }

    /// `"page"` when `key` is this page (for `aria-current`).
    pub fn current(&self, key: &str) -> &'static str {
        if self.page == key { "page" } else { "false" }
    }
}

/// Renders a template as a page with the dashboard's policy, or a 500 that says rendering failed.
pub fn render(t: &impl askama::Template) -> Response {
    match t.render() {
        Ok(html) => with_policy(Html(html).into_response()),
        Err(e) => {
            tracing::error!(error = %e, "Dashboard template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// The dashboard's security policy on a response.
pub fn with_policy(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    resp
}

/// Whether a request came from htmx (a partial update) rather than a page load.
pub fn partial(headers: &axum::http::HeaderMap) -> bool {
    headers.contains_key("hx-request")
}

/// Turns the API's JSON errors on `/ui` routes into something a person reads: a page (with the
/// sign-in form on 401) for a page load, a short HTML message for a partial update. The status
/// stays what the API decided.
pub async fn html_errors(
    axum::extract::State(s): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let is_ui = req.uri().path().starts_with("/ui");
    let hx = partial(req.headers());
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let resp = next.run(req).await;
    let status = resp.status();
    if !is_ui || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json {
        return resp;
    }
    let message = resp
        .extensions()
        .get::<crate::http::ErrorNote>()
        .map(|n| n.message.clone())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let retry = resp.headers().get(header::RETRY_AFTER).cloned();
    let note = resp.extensions().get::<crate::http::ErrorNote>().cloned();
    let mut out = if hx {
        let t = pages::Problem { message };
        match askama::Template::render(&t) {
            Ok(h) => (status, Html(h)).into_response(),
            Err(_) => status.into_response(),
        }
    } else if status == StatusCode::UNAUTHORIZED {
        let mut r = session::sign_in_response(&path, Some(&message), session::issuer(&s));
        *r.status_mut() = status;
        r
    } else {
        let t = pages::ErrorPage {
            status: status.as_u16(),
            title: status.canonical_reason().unwrap_or("Error"),
            message,
        };
        let mut r = render(&t);
        *r.status_mut() = status;
        r
    };
    if let Some(r) = retry {
        out.headers_mut().insert(header::RETRY_AFTER, r);
    }
    if let Some(n) = note {
        out.extensions_mut().insert(n);
    }
    with_policy(out)
}
