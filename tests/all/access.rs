//! Access over HTTP with tokens enforced: every route as each role, and the refused tokens
//! (none, malformed, unknown secret, expired, revoked), against the roles table of the brief.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use lake_host::identity::{Bearer, Role, TokenRequest};
use serde_json::{Value, json};

use crate::http_api::{TestLake, embedded_settings, settings};

/// A lake that asks for tokens; its backups (an admin may trigger one) go to a directory of the
/// test's own.
async fn lake_with_tokens() -> (TestLake, tempfile::TempDir) {
    let backups = tempfile::tempdir().expect("tempdir");
    let mut s = settings(1 << 30);
    s.access.enforce = true;
    s.backup = lake_host::config::BackupConfig {
        target: lake_host::config::BackupTarget::Dir,
        dir: backups.path().to_path_buf(),
        ..lake_host::config::BackupConfig::default()
    };
    (embedded_settings(s, None).await, backups)
}

async fn token(t: &TestLake, role: Role) -> String {
    t.lake
        .access()
        .issue(TokenRequest {
            name: format!("{role} test"),
            owner: format!("{role}-user"),
            role,
            days: None,
        })
        .await
        .expect("issue")
        .token
}

async fn as_(
    t: &TestLake,
    token: Option<&str>,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value, Option<String>) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(tok) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {tok}"));
    }
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let resp = tower::ServiceExt::oneshot(t.app.clone(), req.body(body).expect("request"))
        .await
        .expect("infallible");
    let status = resp.status();
    let challenge = resp
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, v, challenge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_may_do_what_the_table_says_and_no_more() {
    let (t, _backups) = lake_with_tokens().await;
    let tokens: Vec<(Role, String)> = {
        let mut v = Vec::new();
        for role in Role::ALL {
            v.push((role, token(&t, role).await));
        }
        v
    };
    let tok = |role: Role| {
        tokens
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, t)| t.clone())
            .unwrap_or_default()
    };
    // An admin registers datasets to work on: raw (with a file) and processed.
    let admin = tok(Role::Admin);
    let (s, raw, _) = as_(
        &t,
        Some(&admin),
        Method::POST,
        "/catalog",
        Some(json!({"name": "plate", "source": "lab"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{raw}");
    let raw = raw["id"].as_str().expect("id").to_owned();
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("/catalog/{raw}/files/a.csv"))
        .header(header::AUTHORIZATION, format!("Bearer {admin}"))
        .body(Body::from("a,b\n1,2\n"))
        .expect("request");
    assert_eq!(t.send(req).await.0, StatusCode::CREATED);

    // (route, method, body, least role that may) — one row per right of the table.
    let promote = |layer: &str, id: &str| json!({"dataset_id": id, "target_layer": layer});
    for role in Role::ALL {
        let me = tok(role);
        let may = |least: Role| role >= least;
        let (s, v, _) = as_(&t, Some(&me), Method::GET, "/catalog", None).await;
        assert_eq!(s, StatusCode::OK, "{role} reads the catalog: {v}");
        let (s, _, _) = as_(
            &t,
            Some(&me),
            Method::GET,
            &format!("/provenance/{raw}/graph"),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{role} reads provenance");
        let (s, v, _) = as_(
            &t,
            Some(&me),
            Method::GET,
            &format!("/catalog/{raw}/download/a.csv"),
            None,
        )
        .await;
        let want = if may(Role::Contributor) {
            StatusCode::OK
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(s, want, "{role} downloads raw: {v}");
        if s == StatusCode::FORBIDDEN {
            let m = v["error"]["message"].as_str().unwrap_or("");
            assert!(
                m.contains("downloading raw data needs the contributor role"),
                "{m}"
            );
        }
        let (s, v, _) = as_(
            &t,
            Some(&me),
            Method::POST,
            "/catalog",
            Some(json!({"name": format!("{role} data"), "source": "lab"})),
        )
        .await;
        let want = if may(Role::Contributor) {
            StatusCode::CREATED
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(s, want, "{role} registers: {v}");
        if let Some(id) = v["id"].as_str() {
            // The registration records who did it.
            let (_, lineage, _) = as_(
                &t,
                Some(&me),
                Method::GET,
                &format!("/provenance/{id}"),
                None,
            )
            .await;
            let actor = lineage["entries"][0]["actor"].as_str().unwrap_or("");
            assert!(
                actor.starts_with(&format!("{role}-user (token ")),
                "{lineage}"
            );
        }
        let (s, v, _) = as_(&t, Some(&me), Method::POST, "/backup/trigger", None).await;
        let want = if may(Role::Admin) {
            StatusCode::ACCEPTED
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(s, want, "{role} triggers a backup: {v}");
    }

    // Promotion: raw -> processed for contributors, further for curators; deletes for curators.
    let (s, p, _) = as_(
        &t,
        Some(&tok(Role::Reader)),
        Method::POST,
        "/layers/promote",
        Some(promote("processed", &raw)),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{p}");
    let (s, p, _) = as_(
        &t,
        Some(&tok(Role::Contributor)),
        Method::POST,
        "/layers/promote",
        Some(promote("processed", &raw)),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let processed = p["dataset"]["id"].as_str().expect("id").to_owned();
    let (s, p, _) = as_(
        &t,
        Some(&tok(Role::Contributor)),
        Method::POST,
        "/layers/promote",
        Some(promote("curated", &processed)),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{p}");
    assert!(
        p["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("curator"),
        "{p}"
    );
    let (s, p, _) = as_(
        &t,
        Some(&tok(Role::Curator)),
        Method::POST,
        "/layers/promote",
        Some(promote("curated", &processed)),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let curated = p["dataset"]["id"].as_str().expect("id").to_owned();
    // The promotion records who did it: the curator, through their token.
    let (_, lineage, _) = as_(
        &t,
        Some(&tok(Role::Reader)),
        Method::GET,
        &format!("/provenance/{curated}"),
        None,
    )
    .await;
    let entry = lineage["entries"]
        .as_array()
        .and_then(|es| es.iter().rev().find(|e| e["action"] == "promotion"))
        .cloned()
        .unwrap_or_default();
    let actor = entry["actor"].as_str().unwrap_or("");
    assert!(actor.starts_with("curator-user (token "), "{entry}");
    let (s, _, _) = as_(
        &t,
        Some(&tok(Role::Contributor)),
        Method::DELETE,
        &format!("/catalog/{curated}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v, _) = as_(
        &t,
        Some(&tok(Role::Curator)),
        Method::DELETE,
        &format!("/catalog/{curated}"),
        None,
    )
    .await;
    assert!(s.is_success(), "{v}");

    // Open routes need no token.
    for open in ["/health", "/openapi.json", "/docs"] {
        let (s, _, _) = as_(&t, None, Method::GET, open, None).await;
        assert_eq!(s, StatusCode::OK, "{open}");
    }
    // Every answer, refusals included, carries the security headers; the docs keep their policy.
    for (uri, token) in [
        ("/catalog", Some(tok(Role::Reader))),
        ("/catalog", None),
        ("/docs", None),
    ] {
        let mut req = Request::builder().uri(uri);
        if let Some(tok) = &token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {tok}"));
        }
        let resp =
            tower::ServiceExt::oneshot(t.app.clone(), req.body(Body::empty()).expect("request"))
                .await
                .expect("infallible");
        let h = resp.headers();
        assert_eq!(
            h.get(header::X_CONTENT_TYPE_OPTIONS).map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{uri}"
        );
        assert_eq!(
            h.get(header::X_FRAME_OPTIONS).map(|v| v.as_bytes()),
            Some(&b"DENY"[..]),
            "{uri}"
        );
        assert_eq!(
            h.get(header::REFERRER_POLICY).map(|v| v.as_bytes()),
            Some(&b"no-referrer"[..]),
            "{uri}"
        );
        let csp = h
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(csp.starts_with("default-src 'none'"), "{uri}: {csp}");
        if uri == "/docs" {
            assert!(
                csp.contains("style-src 'self'"),
                "the docs keep their own policy: {csp}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_are_401_with_a_bearer_challenge() {
    let (t, _backups) = lake_with_tokens().await;
    let good = token(&t, Role::Reader).await;
    let revoked = token(&t, Role::Admin).await;
    let revoked_id: Bearer = revoked.parse().expect("token");
    t.lake.access().revoke(revoked_id.id).await.expect("revoke");
    let expired = Bearer::generate();
    t.lake
        .catalog()
        .insert_token(&lake_host::catalog::NewToken {
            id: expired.id,
            name: "old".into(),
            owner: "ana".into(),
            role: Role::Admin,
            digest: expired.secret.digest(),
            expires_at: chrono::Utc::now() - chrono::Duration::seconds(1),
        })
        .await
        .expect("insert");
    let forged = format!(
        "lake_{}_{}",
        good.split('_').nth(1).unwrap_or(""),
        "0".repeat(64)
    );
    let cases: [(Option<&str>, &str); 6] = [
        (None, "asks who you are"),
        (Some("not-a-token"), "lake_<id>_<secret>"),
        (Some(&forged), "not known"),
        (Some(&Bearer::generate().reveal()), "not known"),
        (Some(&expired.reveal()), "expired"),
        (Some(&revoked), "revoked"),
    ];
    for (presented, why) in cases {
        let (s, v, challenge) = as_(&t, presented, Method::GET, "/catalog", None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{presented:?}: {v}");
        assert_eq!(challenge.as_deref(), Some("Bearer"), "{presented:?}");
        let m = v["error"]["message"].as_str().unwrap_or("");
        assert!(m.contains(why), "{presented:?}: {m}");
    }
    // A non-bearer scheme is refused too; the good token works.
    let req = Request::builder()
        .uri("/catalog")
        .header(header::AUTHORIZATION, "Basic YWxhZGRpbjpvcGVuc2VzYW1l")
        .body(Body::empty())
        .expect("request");
    assert_eq!(t.send(req).await.0, StatusCode::UNAUTHORIZED);
    let (s, _, _) = as_(&t, Some(&good), Method::GET, "/catalog", None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_presents_its_token_to_a_lake_that_asks() {
    let envs = [("LAKE_AUTH__MODE".to_owned(), "tokens".to_owned())];
    let (_server, url, dir) = crate::walkthrough::start(&envs);
    let d = dir.path();
    let (ok, out, err) = crate::cli::lake(d, &["admin", "bootstrap"]);
    assert!(ok, "{err}");
    let admin: Value = serde_json::from_str(&out).expect("json");
    let admin = admin["token"].as_str().expect("token").to_owned();
    let (ok, out, err) = crate::cli::lake(
        d,
        &["token", "create", "--owner", "ana", "--role", "contributor"],
    );
    assert!(ok, "{err}");
    let ana: Value = serde_json::from_str(&out).expect("json");
    let ana = ana["token"].as_str().expect("token").to_owned();
    std::fs::write(d.join("plate.csv"), "well,od\nA1,0.5\n").expect("write");

    let (ok, _, err) = crate::cli::lake(d, &["upload", "plate.csv", "--server", &url]);
    assert!(
        !ok && err.contains("401") && err.contains("asks who you are"),
        "{err}"
    );
    let (ok, out, err) = crate::cli::lake(
        d,
        &["upload", "plate.csv", "--server", &url, "--token", &ana],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("\"rows\":1") || out.contains("\"rows\": 1"),
        "{out}"
    );
    // The same bytes again, as another user: the lake answers with the file it has.
    let (ok, out, err) = crate::cli::lake(
        d,
        &["upload", "plate.csv", "--server", &url, "--token", &admin],
    );
    assert!(ok && out.contains("duplicate"), "{out} {err}");
    // The OpenAPI document declares the scheme the server asks for.
    let spec: Value = reqwest::get(format!("{url}/openapi.json"))
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"], "bearer",
        "{}",
        spec["components"]["securitySchemes"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_made_on_one_replica_works_on_the_other_until_revoked_there() {
    use lake_host::catalog::postgres::PostgresCatalog;
    use lake_host::catalog::prelude::*;
    let Some(url) = crate::scratch_pg().await else {
        return;
    };
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let c = PostgresCatalog::connect(&url, 4).await.expect("connect");
        c.migrate().await.expect("migrate");
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = lake_host::blob::local::LocalStore::open(dir.path().join("objects"))
            .await
            .expect("store");
        let mut s = settings(1 << 30);
        s.access.enforce = true;
        replicas.push(
            crate::http_api::assemble(
                std::sync::Arc::new(c),
                std::sync::Arc::new(blobs),
                s,
                Some(dir),
            )
            .await,
        );
    }
    let (one, two) = (&replicas[0], &replicas[1]);
    let tok = token(one, Role::Reader).await;
    let (s, v, _) = as_(two, Some(&tok), Method::GET, "/catalog", None).await;
    assert_eq!(s, StatusCode::OK, "the other replica accepts it: {v}");
    let id = tok.parse::<Bearer>().expect("token").id;
    one.lake.access().revoke(id).await.expect("revoke");
    let (s, v, _) = as_(two, Some(&tok), Method::GET, "/catalog", None).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "revoked on the first, refused by the second: {v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("revoked"),
        "{v}"
    );
}
