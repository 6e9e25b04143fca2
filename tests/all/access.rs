//! Access over HTTP with tokens enforced: every route as each role, and the refused tokens
//! (none, malformed, unknown secret, expired, revoked), against the roles table of the brief.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use lake_host::identity::{Bearer, Role, TokenRequest, UserKind};
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
    let owner = format!("{role}-user");
    if t.lake
        .access()
        .users()
        .await
        .expect("users")
        .iter()
        .all(|u| u.name != owner)
    {
        t.lake
            .access()
            .add_user(&owner, UserKind::Person, role)
            .await
            .expect("add user");
    }
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

/// The refusals a test met, to find again in the audit log.
#[derive(Default)]
struct Seen(Vec<(Method, String, StatusCode)>);

impl Seen {
    /// [`as_`], noting each 401, 403 and 429.
    async fn as_(
        &mut self,
        t: &TestLake,
        token: Option<&str>,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value, Option<String>) {
        let r = as_(t, token, method.clone(), uri, body).await;
        if matches!(
            r.0,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS
        ) {
            self.0.push((method, uri.to_owned(), r.0));
        }
        r
    }
}

/// The `<id>` of `lake_<id>_<secret>`.
fn token_id(token: &str) -> String {
    token.split('_').nth(1).unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_may_do_what_the_table_says_and_no_more() {
    let (t, _backups) = lake_with_tokens().await;
    let mut seen = Seen::default();
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
    let (s, raw, _) = seen
        .as_(
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
    let promote = |layer: &str, id: &str| json!({"dataset_id": id, "target_layer": layer, "reason": "reviewed by the lab"});
    for role in Role::ALL {
        let me = tok(role);
        let may = |least: Role| role >= least;
        let (s, v, _) = seen.as_(&t, Some(&me), Method::GET, "/catalog", None).await;
        assert_eq!(s, StatusCode::OK, "{role} reads the catalog: {v}");
        // Raw data may hold patient data: a role that may not download it does not see it.
        let sees_raw = may(Role::Contributor);
        let hidden = |ok: StatusCode| if sees_raw { ok } else { StatusCode::NOT_FOUND };
        let (s, _, _) = seen
            .as_(
                &t,
                Some(&me),
                Method::GET,
                &format!("/provenance/{raw}/graph"),
                None,
            )
            .await;
        assert_eq!(s, hidden(StatusCode::OK), "{role} reads raw provenance");
        let (s, v, _) = seen
            .as_(&t, Some(&me), Method::GET, &format!("/catalog/{raw}"), None)
            .await;
        assert_eq!(s, hidden(StatusCode::OK), "{role} reads a raw dataset: {v}");
        let (_, v, _) = seen
            .as_(&t, Some(&me), Method::GET, "/catalog?layer=raw", None)
            .await;
        let listed = v["items"].as_array().map_or(0, Vec::len);
        assert_eq!(listed > 0, sees_raw, "{role} lists raw datasets: {v}");
        let (s, v, _) = seen
            .as_(
                &t,
                Some(&me),
                Method::GET,
                &format!("/catalog/{raw}/download/a.csv"),
                None,
            )
            .await;
        assert_eq!(s, hidden(StatusCode::OK), "{role} downloads raw: {v}");
        if s == StatusCode::NOT_FOUND {
            // Exactly what a dataset that does not exist answers.
            let m = v["error"]["message"].as_str().unwrap_or("");
            assert_eq!(m, format!("dataset {raw} not found"));
        }
        let (s, v, _) = seen
            .as_(
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
            let (_, lineage, _) = seen
                .as_(
                    &t,
                    Some(&me),
                    Method::GET,
                    &format!("/provenance/{id}"),
                    None,
                )
                .await;
            let entry = &lineage["entries"][0];
            assert_eq!(entry["actor"], format!("{role}-user"), "{lineage}");
            assert_eq!(entry["actor_token"], token_id(&me), "{lineage}");
        }
        let (s, v, _) = seen
            .as_(&t, Some(&me), Method::POST, "/backup/trigger", None)
            .await;
        let want = if may(Role::Admin) {
            StatusCode::ACCEPTED
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(s, want, "{role} triggers a backup: {v}");
    }

    // Promotion: raw -> processed for contributors, further for curators; deletes for curators.
    let (s, p, _) = seen
        .as_(
            &t,
            Some(&tok(Role::Reader)),
            Method::POST,
            "/layers/promote",
            Some(promote("processed", &raw)),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{p}");
    let (s, p, _) = seen
        .as_(
            &t,
            Some(&tok(Role::Contributor)),
            Method::POST,
            "/layers/promote",
            Some(promote("processed", &raw)),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let processed = p["dataset"]["id"].as_str().expect("id").to_owned();
    let (s, p, _) = seen
        .as_(
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
    let (s, p, _) = seen
        .as_(
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
    let (_, lineage, _) = seen
        .as_(
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
    assert_eq!(entry["actor"], "curator-user", "{entry}");
    assert_eq!(
        entry["actor_token"],
        token_id(&tok(Role::Curator)),
        "{entry}"
    );
    assert_eq!(entry["reason"], "reviewed by the lab", "{entry}");
    let (s, _, _) = seen
        .as_(
            &t,
            Some(&tok(Role::Contributor)),
            Method::DELETE,
            &format!("/catalog/{curated}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A curator deletes, for a reason: none is 422 and deletes nothing.
    let (s, v, _) = seen
        .as_(
            &t,
            Some(&tok(Role::Curator)),
            Method::DELETE,
            &format!("/catalog/{curated}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("reason"),
        "{v}"
    );
    let (s, v, _) = seen
        .as_(
            &t,
            Some(&tok(Role::Curator)),
            Method::DELETE,
            &format!("/catalog/{curated}?reason=superseded%20by%20v2"),
            None,
        )
        .await;
    assert!(s.is_success(), "{v}");
    let (_, lineage, _) = seen
        .as_(
            &t,
            Some(&tok(Role::Curator)),
            Method::GET,
            &format!("/provenance/{curated}"),
            None,
        )
        .await;
    let deletion = lineage["entries"]
        .as_array()
        .and_then(|es| es.iter().find(|e| e["action"] == "deletion"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (&deletion["actor"], &deletion["reason"]),
        (&json!("curator-user"), &json!("superseded by v2")),
        "{lineage}"
    );

    // Every refusal met above is in the audit log with its reason, and only an admin reads it.
    let (s, _, _) = seen
        .as_(&t, Some(&tok(Role::Curator)), Method::GET, "/audit", None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, audit, _) = as_(
        &t,
        Some(&admin),
        Method::GET,
        "/audit?decision=refused&limit=1000",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{audit}");
    let entries = audit["items"].as_array().cloned().unwrap_or_default();
    assert!(!seen.0.is_empty());
    for (method, uri, status) in &seen.0 {
        let path = uri.split('?').next().unwrap_or_default();
        let found = entries.iter().any(|e| {
            e["method"] == method.as_str()
                && e["resource"] == path
                && e["status"] == status.as_u16()
                && e["decision"] == "refused"
                && e["reason"].as_str().is_some_and(|r| !r.is_empty())
                && e["principal"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("-user"))
        });
        assert!(
            found,
            "{method} {uri} ({status}) is not in the audit log: {audit}"
        );
    }
    // Allowed changes are there too, with the request id the response carried.
    let (s, all, _) = as_(
        &t,
        Some(&admin),
        Method::GET,
        "/audit?principal=curator-user",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        all["items"].as_array().is_some_and(|es| es.iter().any(|e| {
            e["decision"] == "allowed" && e["method"] == "DELETE" && e["status"] == 200
        })),
        "{all}"
    );
    let (s, v, _) = as_(&t, Some(&admin), Method::GET, "/audit?decision=maybe", None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    // Open routes need no token.
    for open in ["/health", "/openapi.json", "/docs"] {
        let (s, _, _) = seen.as_(&t, None, Method::GET, open, None).await;
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
    let (ok, _, err) = crate::cli::lake(d, &["user", "add", "ana", "--role", "contributor"]);
    assert!(ok, "{err}");
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
    // `lake audit` reads what the server recorded: the refused upload, with its address, and
    // ana's upload let through.
    let (ok, out, err) = crate::cli::lake(d, &["audit", "--refused", "--json"]);
    assert!(ok, "{err}");
    let refused: Value = serde_json::from_str(&out).expect("json");
    let first = refused["items"]
        .as_array()
        .and_then(|es| es.iter().find(|e| e["route"] == "/files/upload"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (&first["status"], &first["decision"], &first["client"]),
        (&json!(401), &json!("refused"), &json!("127.0.0.1")),
        "{refused}"
    );
    assert!(
        first["reason"]
            .as_str()
            .is_some_and(|r| r.contains("asks who you are")),
        "{first}"
    );
    let (ok, out, err) = crate::cli::lake(d, &["audit", "--principal", "ana"]);
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.contains("allowed") && l.contains("/files/upload") && l.contains("ana")),
        "{out}"
    );
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
    let (s, _, _) = as_(one, Some(&tok), Method::GET, "/catalog", None).await;
    assert_eq!(s, StatusCode::OK, "the first replica accepts it too");
    let id = tok.parse::<Bearer>().expect("token").id;
    one.lake.access().revoke(id).await.expect("revoke");
    // The replica that revoked it refuses it at once, its own recent record forgotten.
    let (s, v, _) = as_(one, Some(&tok), Method::GET, "/catalog", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "refused where revoked: {v}");
    // The other trusts its record of the token for `token_cache_ms` (1000) at most.
    let revoked = std::time::Instant::now();
    let v = loop {
        let (s, v, _) = as_(two, Some(&tok), Method::GET, "/catalog", None).await;
        if s == StatusCode::UNAUTHORIZED {
            break v;
        }
        assert_eq!(s, StatusCode::OK, "{v}");
        assert!(
            revoked.elapsed() < std::time::Duration::from_millis(1500),
            "the second replica still accepts a token revoked {:?} ago",
            revoked.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("revoked"),
        "revoked on the first, refused by the second: {v}"
    );
}

/// Reads a PROV-JSON document with the W3C PROV package, warnings as errors, and answers what
/// it found about agents, delegations and associations.
const PROV_READ: &str = r#"
import json, sys, warnings
import prov
from prov.model import (ProvAgent, ProvDelegation, ProvAssociation, ProvActivity, PROV,
    PROV_ATTR_DELEGATE, PROV_ATTR_RESPONSIBLE, PROV_ATTR_ACTIVITY, PROV_ATTR_AGENT)
with warnings.catch_warnings():
    warnings.simplefilter("error")
    doc = prov.read(sys.argv[1], format="json")
def one(rec, attr):
    v = rec.get_attribute(attr)
    return str(next(iter(v))) if v else None
out = {
    "agents": {str(a.identifier): sorted(str(t) for t in a.get_asserted_types()) for a in doc.get_records(ProvAgent)},
    "delegations": [[one(d, PROV_ATTR_DELEGATE), one(d, PROV_ATTR_RESPONSIBLE), one(d, PROV_ATTR_ACTIVITY)] for d in doc.get_records(ProvDelegation)],
    "associations": [[one(a, PROV_ATTR_ACTIVITY), one(a, PROV_ATTR_AGENT)] for a in doc.get_records(ProvAssociation)],
    "activities": {str(a.identifier): {str(k): str(v) for k, v in a.attributes} for a in doc.get_records(ProvActivity)},
}
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_curators_promotion_names_the_person_the_token_and_the_reason() {
    let (t, _backups) = lake_with_tokens().await;
    let admin = token(&t, Role::Admin).await;
    let curator = token(&t, Role::Curator).await;
    let reader = token(&t, Role::Reader).await;
    let contributor = token(&t, Role::Contributor).await;
    let (_, raw, _) = as_(
        &t,
        Some(&admin),
        Method::POST,
        "/catalog",
        Some(json!({"name": "patients-2026-cohort", "source": "clinic"})),
    )
    .await;
    let raw = raw["id"].as_str().expect("id").to_owned();
    let promote = |id: &str, layer: &str, reason: Option<&str>| json!({"dataset_id": id, "target_layer": layer, "reason": reason});
    let (s, p, _) = as_(
        &t,
        Some(&contributor),
        Method::POST,
        "/layers/promote",
        Some(promote(&raw, "processed", None)),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let processed = p["dataset"]["id"].as_str().expect("id").to_owned();
    // Beyond processed, a reason is required: none, or a blank one, is 422 and promotes nothing.
    for reason in [None, Some("  ")] {
        let (s, p, _) = as_(
            &t,
            Some(&curator),
            Method::POST,
            "/layers/promote",
            Some(promote(&processed, "curated", reason)),
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
        assert!(
            p["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("reason"),
            "{p}"
        );
    }
    let (s, p, _) = as_(
        &t,
        Some(&curator),
        Method::POST,
        "/layers/promote",
        Some(promote(
            &processed,
            "curated",
            Some("QC passed: 0 failed wells"),
        )),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let curated = p["dataset"]["id"].as_str().expect("id").to_owned();

    // The PROV-JSON names the person, the token acting for them, and associates both.
    let (s, doc, _) = as_(
        &t,
        Some(&curator),
        Method::GET,
        &format!("/provenance/{curated}/prov"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{doc}");
    let user = "lake:user/curator-user";
    let tok = format!("lake:token/{}", token_id(&curator));
    assert_eq!(doc["agent"][user]["prov:type"]["$"], "prov:Person", "{doc}");
    assert_eq!(
        doc["agent"][&tok]["prov:type"]["$"], "prov:SoftwareAgent",
        "{doc}"
    );
    let promotion = doc["activity"]
        .as_object()
        .and_then(|acts| {
            acts.iter()
                .find(|(_, a)| a["lake:reason"] == "QC passed: 0 failed wells")
                .map(|(id, _)| id.clone())
        })
        .expect("the promotion's activity carries its reason");
    if let Some(python) = crate::service_var("LAKE_TEST_PYTHON") {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("prov.json");
        std::fs::write(&path, doc.to_string()).expect("write");
        let out = std::process::Command::new(python)
            .args(["-c", PROV_READ])
            .arg(&path)
            .output()
            .expect("python");
        assert!(
            out.status.success(),
            "prov could not read the document (or warned): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let read: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(read["agents"][user], json!(["prov:Person"]), "{read}");
        assert_eq!(
            read["agents"][&tok],
            json!(["prov:SoftwareAgent"]),
            "{read}"
        );
        let delegations = read["delegations"].as_array().cloned().unwrap_or_default();
        assert!(
            delegations.contains(&json!([tok, user, promotion])),
            "the token acted on the curator's behalf in the promotion: {read}"
        );
        let associations = read["associations"].as_array().cloned().unwrap_or_default();
        for agent in [user, tok.as_str()] {
            assert!(
                associations.contains(&json!([promotion, agent])),
                "{promotion} is associated with {agent}: {read}"
            );
        }
        assert_eq!(
            read["activities"][&promotion]["lake:reason"], "QC passed: 0 failed wells",
            "{read}"
        );
    }

    // A reader's view of the same lineage passes through raw: placeholders, the count, no name.
    for route in ["graph", "prov", ""] {
        let uri = format!("/provenance/{curated}/{route}");
        let uri = uri.trim_end_matches('/');
        let (s, v, _) = as_(&t, Some(&reader), Method::GET, uri, None).await;
        assert_eq!(s, StatusCode::OK, "{uri}: {v}");
        // (The processed and curated copies keep the raw dataset's name: they may be seen.)
        let text = v.to_string();
        assert!(
            !text.contains(&raw),
            "{uri} shows the raw dataset to a reader: {text}"
        );
        let (_, full, _) = as_(&t, Some(&contributor), Method::GET, uri, None).await;
        assert!(
            full.to_string().contains(&raw),
            "{uri}: a contributor sees it: {full}"
        );
        match route {
            "graph" => {
                assert_eq!(v["hidden"], 1, "{v}");
                let placeholder = v["nodes"]
                    .as_array()
                    .and_then(|ns| ns.iter().find(|n| n["restricted"] == true))
                    .cloned()
                    .expect("a placeholder");
                assert_eq!(
                    (&placeholder["layer"], &placeholder["name"]),
                    (&json!("raw"), &json!("")),
                    "{v}"
                );
                // Its edge leads on to the processed dataset the reader may see.
                assert!(
                    v["edges"].as_array().is_some_and(|es| es
                        .iter()
                        .any(|e| e["from"] == placeholder["id"] && e["to"] == processed.as_str())),
                    "{v}"
                );
                assert_eq!(full["hidden"], 0);
            }
            "prov" => {
                let root = &v["entity"][format!("lake:dataset/{curated}")];
                assert_eq!(root["lake:hiddenDatasets"], 1, "{v}");
                assert!(
                    v["entity"]
                        .as_object()
                        .is_some_and(|es| es.values().any(|e| e["lake:restricted"] == true)),
                    "{v}"
                );
            }
            _ => {
                assert_eq!(v["hidden"], 1, "{v}");
                assert_eq!(v["ancestors"].as_array().map(Vec::len), Some(2), "{v}");
            }
        }
    }
    // The raw dataset itself is not found for the reader, exactly like one that does not exist.
    for uri in [
        format!("/catalog/{raw}"),
        format!("/catalog/{raw}/files"),
        format!("/provenance/{raw}"),
        format!("/provenance/{raw}/prov"),
    ] {
        let (s, v, _) = as_(&t, Some(&reader), Method::GET, &uri, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{uri}: {v}");
        assert_eq!(v["error"]["message"], format!("dataset {raw} not found"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limits_is_429_with_retry_after_and_audited() {
    use axum::extract::connect_info::MockConnectInfo;
    let mut s = settings(1 << 30);
    s.access.enforce = true;
    s.access.auth.requests_per_minute = 3;
    s.access.auth.failed_auth_per_minute = 2;
    s.access.cors_origins = vec!["https://notebook.lab.example".into()];
    let t = embedded_settings(s, None).await;
    let reader = token(&t, Role::Reader).await;
    let admin = token(&t, Role::Admin).await;
    for i in 0..3 {
        let (s, v, _) = as_(&t, Some(&reader), Method::GET, "/catalog", None).await;
        assert_eq!(s, StatusCode::OK, "request {i}: {v}");
    }
    let req = Request::builder()
        .uri("/catalog")
        .header(header::AUTHORIZATION, format!("Bearer {reader}"))
        .body(Body::empty())
        .expect("request");
    let resp = tower::ServiceExt::oneshot(t.app.clone(), req)
        .await
        .expect("infallible");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = resp
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&wait), "{wait}");
    // Another token is not held back by the first one's rate.
    let (s, _, _) = as_(&t, Some(&admin), Method::GET, "/catalog", None).await;
    assert_eq!(s, StatusCode::OK);

    // An address that keeps failing to authenticate is told to wait; another address is not.
    let from = |ip: [u8; 4]| {
        t.app
            .clone()
            .layer(MockConnectInfo(std::net::SocketAddr::from((ip, 40000))))
    };
    let bad = |app: axum::Router| async move {
        let req = Request::builder()
            .uri("/catalog")
            .header(header::AUTHORIZATION, "Bearer lake_nope")
            .body(Body::empty())
            .expect("request");
        let resp = tower::ServiceExt::oneshot(app, req)
            .await
            .expect("infallible");
        (
            resp.status(),
            resp.headers().contains_key(header::RETRY_AFTER),
        )
    };
    assert_eq!(
        bad(from([192, 0, 2, 7])).await,
        (StatusCode::UNAUTHORIZED, false)
    );
    assert_eq!(
        bad(from([192, 0, 2, 7])).await,
        (StatusCode::UNAUTHORIZED, false)
    );
    assert_eq!(
        bad(from([192, 0, 2, 7])).await,
        (StatusCode::TOO_MANY_REQUESTS, true)
    );
    assert_eq!(
        bad(from([192, 0, 2, 8])).await,
        (StatusCode::UNAUTHORIZED, false)
    );

    // Both kinds of 429 are in the audit log, the address with them.
    let (s, audit, _) = as_(
        &t,
        Some(&admin),
        Method::GET,
        "/audit?decision=refused",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{audit}");
    let items = audit["items"].as_array().cloned().unwrap_or_default();
    let count = |f: &dyn Fn(&Value) -> bool| items.iter().filter(|e| f(e)).count();
    assert_eq!(
        count(&|e| e["status"] == 429 && e["principal"] == "reader-user"),
        1,
        "{audit}"
    );
    assert_eq!(
        count(&|e| e["status"] == 429 && e["client"] == "192.0.2.7"),
        1,
        "{audit}"
    );
    assert_eq!(
        count(&|e| e["status"] == 401 && e["client"] == "192.0.2.8"),
        1,
        "{audit}"
    );

    // Browsers: the configured origin may call the API, another may not.
    for (origin, allowed) in [
        ("https://notebook.lab.example", true),
        ("https://elsewhere.example", false),
    ] {
        let req = Request::builder()
            .method(Method::OPTIONS)
            .uri("/catalog")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization")
            .body(Body::empty())
            .expect("request");
        let resp = tower::ServiceExt::oneshot(t.app.clone(), req)
            .await
            .expect("infallible");
        let echoed = resp
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert_eq!(
            echoed.as_deref() == Some(origin),
            allowed,
            "{origin}: {echoed:?}"
        );
    }
}

/// Every route of the API with the least role that may call it, from the brief's table (not from
/// the code's): `/openapi.json` must list no route missing here.
const ROUTES: &[(&str, &str, Role)] = &[
    ("GET", "/catalog", Role::Reader),
    ("POST", "/catalog", Role::Contributor),
    ("GET", "/catalog/stats", Role::Reader),
    ("GET", "/catalog/{id}", Role::Reader),
    ("DELETE", "/catalog/{id}", Role::Curator),
    ("GET", "/catalog/{id}/files", Role::Reader),
    ("PUT", "/catalog/{id}/files/{filename}", Role::Contributor),
    ("GET", "/catalog/{id}/download/{filename}", Role::Reader),
    ("GET", "/layers", Role::Reader),
    ("POST", "/layers/promote", Role::Contributor),
    ("GET", "/provenance/{id}", Role::Reader),
    ("GET", "/provenance/{id}/graph", Role::Reader),
    ("GET", "/provenance/{id}/prov", Role::Reader),
    ("GET", "/provenance/{id}/ro-crate", Role::Reader),
    ("POST", "/api/v1/lineage", Role::Contributor),
    // The Iceberg catalog reads; an engine's scan report changes nothing.
    ("GET", "/iceberg/v1/config", Role::Reader),
    ("GET", "/iceberg/v1/namespaces", Role::Reader),
    ("GET", "/iceberg/v1/namespaces/{namespace}", Role::Reader),
    ("HEAD", "/iceberg/v1/namespaces/{namespace}", Role::Reader),
    (
        "GET",
        "/iceberg/v1/namespaces/{namespace}/tables",
        Role::Reader,
    ),
    (
        "GET",
        "/iceberg/v1/namespaces/{namespace}/tables/{table}",
        Role::Reader,
    ),
    (
        "HEAD",
        "/iceberg/v1/namespaces/{namespace}/tables/{table}",
        Role::Reader,
    ),
    (
        "POST",
        "/iceberg/v1/namespaces/{namespace}/tables/{table}/metrics",
        Role::Reader,
    ),
    ("GET", "/plugins", Role::Reader),
    ("GET", "/plugins/{name}", Role::Reader),
    ("POST", "/pipelines/run", Role::Contributor),
    ("GET", "/pipelines/runs", Role::Reader),
    ("GET", "/pipelines/runs/{id}", Role::Reader),
    ("POST", "/files/upload", Role::Contributor),
    // Uploaded files are raw data: contributors and up see them.
    ("GET", "/files", Role::Contributor),
    ("GET", "/files/{id}", Role::Contributor),
    ("GET", "/files/merge", Role::Contributor),
    ("POST", "/files/save_merged", Role::Contributor),
    ("POST", "/collections", Role::Contributor),
    ("GET", "/collections", Role::Reader),
    ("GET", "/collections/{id}", Role::Reader),
    ("POST", "/backup/trigger", Role::Admin),
    ("GET", "/backup/jobs", Role::Admin),
    ("GET", "/backup/jobs/{id}", Role::Admin),
    ("GET", "/audit", Role::Admin),
    ("GET", "/admin/fsck", Role::Admin),
    ("POST", "/admin/fsck/repair", Role::Admin),
    // One's own tokens; others' need an admin (checked below).
    ("GET", "/tokens", Role::Reader),
    ("POST", "/tokens", Role::Reader),
    ("DELETE", "/tokens/{id}", Role::Reader),
    ("GET", "/users", Role::Admin),
    ("POST", "/users", Role::Admin),
    ("POST", "/users/{name}/disable", Role::Admin),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_as_every_role_and_without_a_token() {
    let (t, _backups) = lake_with_tokens().await;
    let (_, spec, _) = as_(&t, None, Method::GET, "/openapi.json", None).await;
    let open = ["/health", "/metrics", "/openapi.json", "/docs"];
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("methods").keys() {
            let m = method.to_uppercase();
            assert!(
                open.contains(&path.as_str())
                    || ROUTES.iter().any(|(rm, rp, _)| *rm == m && rp == path),
                "{m} {path} is served but not in this test's table"
            );
        }
    }
    let mut tokens = Vec::new();
    for role in Role::ALL {
        tokens.push((role, token(&t, role).await));
    }
    for (method, path, least) in ROUTES {
        // Ids that name nothing: a request let through is answered by its handler (404, 422,
        // 503 ...), never 401 or 403; one refused is refused before the handler looks.
        let uri = path
            .replace("{id}", &uuid::Uuid::now_v7().to_string())
            .replace("{filename}", "a.csv")
            .replace("{name}", "csv")
            .replace("{namespace}", "processed")
            .replace("{table}", "samples");
        let method: Method = method.parse().expect("method");
        let body = matches!(method, Method::POST | Method::PUT).then(|| json!({}));
        let (s, v, challenge) = as_(&t, None, method.clone(), &uri, body.clone()).await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "{method} {uri} without a token: {v}"
        );
        assert_eq!(challenge.as_deref(), Some("Bearer"));
        for (role, tok) in &tokens {
            let (s, v, _) = as_(&t, Some(tok), method.clone(), &uri, body.clone()).await;
            if role >= least {
                assert!(
                    s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN,
                    "{role} may {method} {path}: {s} {v}"
                );
            } else {
                assert_eq!(
                    s,
                    StatusCode::FORBIDDEN,
                    "{role} may not {method} {path}: {v}"
                );
                let m = v["error"]["message"].as_str().unwrap_or("");
                assert!(m.contains(&format!("needs the {least} role")), "{m}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_iceberg_catalog_hides_raw_from_who_may_not_read_raw() {
    let (t, _backups) = lake_with_tokens().await;
    let reader = token(&t, Role::Reader).await;
    let contributor = token(&t, Role::Contributor).await;
    let namespaces = |v: &Value| -> Vec<String> {
        v["namespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n[0].as_str().map(str::to_owned))
            .collect()
    };
    let (s, v, _) = as_(
        &t,
        Some(&contributor),
        Method::GET,
        "/iceberg/v1/namespaces",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(namespaces(&v), ["raw", "processed", "curated", "archive"]);
    let (s, v, _) = as_(
        &t,
        Some(&reader),
        Method::GET,
        "/iceberg/v1/namespaces",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(namespaces(&v), ["processed", "curated", "archive"]);
    for path in [
        "/iceberg/v1/namespaces/raw",
        "/iceberg/v1/namespaces/raw/tables",
        "/iceberg/v1/namespaces/raw/tables/anything",
    ] {
        let (s, v, _) = as_(&t, Some(&reader), Method::GET, path, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {v}");
        assert_eq!(
            v["error"]["type"], "NoSuchNamespaceException",
            "{path}: {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_manage_their_own_tokens_and_an_admin_everyones() {
    let (t, _backups) = lake_with_tokens().await;
    let admin = token(&t, Role::Admin).await;
    let reader = token(&t, Role::Reader).await;
    // A reader issues a second token of their own, at most their role, and sees only theirs.
    let (s, v, _) = as_(
        &t,
        Some(&reader),
        Method::POST,
        "/tokens",
        Some(json!({"name": "notebook"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (&v["owner"], &v["role"]),
        (&json!("reader-user"), &json!("reader")),
        "{v}"
    );
    let notebook = v["token"].as_str().expect("the text, once").to_owned();
    let (s, v, _) = as_(&t, Some(&notebook), Method::GET, "/catalog", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v, _) = as_(
        &t,
        Some(&reader),
        Method::POST,
        "/tokens",
        Some(json!({"name": "more", "role": "curator"})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v, _) = as_(
        &t,
        Some(&reader),
        Method::POST,
        "/tokens",
        Some(json!({"name": "theirs", "owner": "admin-user"})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v, _) = as_(&t, Some(&reader), Method::GET, "/tokens", None).await;
    assert_eq!(s, StatusCode::OK);
    let owners: Vec<&str> = v
        .as_array()
        .map(|ts| ts.iter().filter_map(|t| t["owner"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(owners, ["reader-user", "reader-user"], "{v}");
    assert!(
        v.to_string().find("lake_").is_none(),
        "no secret is listed: {v}"
    );
    // Revoking: one's own, yes; the admin's is not found; the admin revokes anyone's.
    let (s, _, _) = as_(
        &t,
        Some(&reader),
        Method::DELETE,
        &format!("/tokens/{}", token_id(&admin)),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v, _) = as_(
        &t,
        Some(&reader),
        Method::DELETE,
        &format!("/tokens/{}", token_id(&notebook)),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _, _) = as_(&t, Some(&notebook), Method::GET, "/catalog", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Users: an admin adds a service account and issues its token; disabling stops it.
    let (s, v, _) = as_(
        &t,
        Some(&admin),
        Method::POST,
        "/users",
        Some(json!({"name": "sequencer-3", "role": "contributor", "kind": "service"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v, _) = as_(
        &t,
        Some(&admin),
        Method::POST,
        "/users",
        Some(json!({"name": "sequencer-3", "role": "reader"})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, v, _) = as_(
        &t,
        Some(&admin),
        Method::POST,
        "/tokens",
        Some(json!({"name": "instrument", "owner": "sequencer-3"})),
    )
    .await;
    assert_eq!(
        (s, &v["role"]),
        (StatusCode::CREATED, &json!("contributor")),
        "{v}"
    );
    let sequencer = v["token"].as_str().expect("token").to_owned();
    let (s, _, _) = as_(
        &t,
        Some(&sequencer),
        Method::POST,
        "/catalog",
        Some(json!({"name": "run 7", "source": "sequencer"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v, _) = as_(
        &t,
        Some(&admin),
        Method::POST,
        "/users/sequencer-3/disable",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["disabled_at"].is_string(), "{v}");
    let (s, v, _) = as_(&t, Some(&sequencer), Method::GET, "/catalog", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("disabled"),
        "{v}"
    );
    let (s, v, _) = as_(&t, Some(&admin), Method::GET, "/tokens", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        v.as_array().is_some_and(|ts| ts.len() >= 4),
        "an admin sees every token: {v}"
    );
}
