//! Identity: bearer tokens issued from the command line, kept as digests in the catalog, and
//! checked (unknown, wrong secret, revoked, expired) by the one authentication path.

use lake_host::identity::{Bearer, Role, TokenRequest};
use serde_json::{Value, json};

use crate::cli::lake;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn bootstrap_once_then_tokens_are_created_listed_and_revoked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (ok, out, err) = lake(d, &["admin", "bootstrap"]);
    assert!(ok, "{err}");
    let first = json(&out);
    let token = first["token"].as_str().expect("token text");
    assert!(token.starts_with("lake_"), "{first}");
    assert_eq!(
        (first["role"].as_str(), first["owner"].as_str()),
        (Some("admin"), Some("admin"))
    );
    assert!(
        first.get("digest").is_none(),
        "the digest never leaves the catalog: {first}"
    );
    // Shown once: not in the database file, not in any other file of the lake.
    let secret = token.rsplit('_').next().expect("secret");
    for entry in crate::architecture::files_under(d) {
        let bytes = std::fs::read(&entry).expect("read");
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds the secret",
            entry.display()
        );
    }
    // A second bootstrap is refused while an admin token lives.
    let (ok, _, err) = lake(d, &["admin", "bootstrap"]);
    assert!(!ok && err.contains("live admin token"), "{err}");

    // A token acts for a user, and holds at most the user's role.
    let (ok, _, err) = lake(
        d,
        &["token", "create", "--owner", "ana", "--role", "curator"],
    );
    assert!(!ok && err.contains("no user \"ana\""), "{err}");
    let (ok, out, err) = lake(d, &["user", "add", "ana", "--role", "curator"]);
    assert!(ok, "{err}");
    assert_eq!(json(&out)["kind"], "person");
    let (ok, _, err) = lake(d, &["user", "add", "ana", "--role", "reader"]);
    assert!(!ok && err.contains("ana"), "a name is taken once: {err}");
    let (ok, _, err) = lake(d, &["token", "create", "--owner", "ana", "--role", "admin"]);
    assert!(!ok && err.contains("is a curator"), "{err}");
    let (ok, out, err) = lake(
        d,
        &[
            "user",
            "add",
            "sequencer-3",
            "--role",
            "contributor",
            "--service",
        ],
    );
    assert!(ok && json(&out)["kind"] == "service", "{out} {err}");
    let (ok, out, err) = lake(d, &["user", "list"]);
    assert!(ok, "{err}");
    let names: Vec<String> = json(&out)
        .as_array()
        .map(|us| {
            us.iter()
                .filter_map(|u| u["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        names,
        ["admin", "ana", "sequencer-3"],
        "bootstrap added the admin user"
    );
    let (ok, out, err) = lake(
        d,
        &[
            "token", "create", "--owner", "ana", "--role", "curator", "--name", "laptop", "--days",
            "7",
        ],
    );
    assert!(ok, "{err}");
    let ana = json(&out);
    assert_eq!(ana["role"], "curator");
    let (ok, _, err) = lake(d, &["token", "create", "--owner", "ana", "--role", "boss"]);
    assert!(!ok && err.contains("unknown role"), "{err}");
    let (ok, _, err) = lake(
        d,
        &[
            "token", "create", "--owner", "ana", "--role", "reader", "--days", "9999",
        ],
    );
    assert!(!ok && err.contains("days"), "{err}");

    let (ok, out, err) = lake(d, &["token", "list", "--owner", "ana"]);
    assert!(ok, "{err}");
    let listed = json(&out);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert!(
        !out.contains(secret) && listed[0].get("token").is_none(),
        "{out}"
    );

    let id = ana["id"].as_str().expect("id");
    let (ok, out, err) = lake(d, &["token", "revoke", id]);
    assert!(ok, "{err}");
    assert!(json(&out)["revoked_at"].is_string(), "{out}");
    let (ok, _, err) = lake(d, &["token", "revoke", &uuid::Uuid::now_v7().to_string()]);
    assert!(!ok && err.contains("not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_live_token_with_its_own_secret_authenticates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = lake_host::config::Config::default();
    cfg.catalog.url = lake_host::config::Secret::new(format!(
        "sqlite://{}",
        dir.path().join("catalog.db").display()
    ));
    cfg.storage.local.root = dir.path().join("objects");
    let lake = lake_host::lake::Lake::open(&cfg).await.expect("lake");
    let access = lake.access();
    access
        .add_user(
            "sequencer-3",
            lake_host::identity::UserKind::Service,
            Role::Contributor,
        )
        .await
        .expect("user");
    access
        .add_user("ana", lake_host::identity::UserKind::Person, Role::Reader)
        .await
        .expect("user");
    let issued = access
        .issue(TokenRequest {
            name: "pipeline".into(),
            owner: "sequencer-3".into(),
            role: Role::Contributor,
            days: None,
        })
        .await
        .expect("issue");
    // The default lifetime: 90 days from issue (the row's time is taken a moment later).
    let minutes = (issued.record.expires_at - issued.record.created_at).num_minutes();
    assert!(
        (90 * 1440 - 1..=90 * 1440).contains(&minutes),
        "{minutes} minutes"
    );
    let ok = access
        .authenticate(&issued.token)
        .await
        .expect("authenticates");
    assert_eq!(
        (ok.user.as_str(), ok.role, ok.via.as_str()),
        (
            "sequencer-3",
            Role::Contributor,
            issued.record.id.simple().to_string().as_str()
        )
    );
    assert!(
        lake.catalog()
            .token(issued.record.id)
            .await
            .expect("get")
            .last_used_at
            .is_some()
    );

    // Another secret under the same id, a token never issued, and text that is no token.
    let forged = format!("lake_{}_{}", issued.record.id.simple(), "0".repeat(64));
    let stranger = Bearer::generate().reveal();
    for (presented, why) in [
        (forged.as_str(), "not known"),
        (stranger.as_str(), "not known"),
        ("Bearer abc", "lake_<id>_<secret>"),
    ] {
        let e = access
            .authenticate(presented)
            .await
            .err()
            .unwrap_or_default();
        assert!(e.contains(why), "{presented}: {e}");
    }

    // Expired and revoked tokens stop working.
    let old = Bearer::generate();
    lake.catalog()
        .insert_token(&lake_host::catalog::NewToken {
            id: old.id,
            name: "old".into(),
            owner: "ana".into(),
            role: Role::Reader,
            digest: old.secret.digest(),
            expires_at: chrono::Utc::now() - chrono::Duration::seconds(1),
        })
        .await
        .expect("insert");
    let e = access
        .authenticate(&old.reveal())
        .await
        .err()
        .unwrap_or_default();
    assert!(e.contains("expired"), "{e}");
    access.revoke(issued.record.id).await.expect("revoke");
    let e = access
        .authenticate(&issued.token)
        .await
        .err()
        .unwrap_or_default();
    assert!(e.contains("revoked"), "{e}");

    // Disabling a user stops their live tokens at once, and they get no new one.
    let live = access
        .issue(TokenRequest {
            name: "laptop".into(),
            owner: "ana".into(),
            role: Role::Reader,
            days: None,
        })
        .await
        .expect("issue");
    assert!(access.authenticate(&live.token).await.is_ok());
    let disabled = access.disable_user("ana").await.expect("disable");
    assert!(disabled.disabled_at.is_some());
    let e = access
        .authenticate(&live.token)
        .await
        .err()
        .unwrap_or_default();
    assert!(e.contains("disabled"), "{e}");
    let refused = access
        .issue(TokenRequest {
            name: "again".into(),
            owner: "ana".into(),
            role: Role::Reader,
            days: None,
        })
        .await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("disabled")),
        "{refused:?}"
    );
}

/// An OpenID Connect provider (`oidc-provider-mock`, from the test venv) on a loopback port:
/// dropping it ends that process.
pub(crate) struct Provider {
    child: std::process::Child,
    pub(crate) issuer: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Provider {
    /// A provider whose tokens live `max_age` seconds.
    pub(crate) async fn start(python: &str, max_age: u32) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = std::process::Command::new(python)
            .args(["-m", "oidc_provider_mock", "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg("--token-max-age")
            .arg(max_age.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start oidc-provider-mock");
        let p = Self {
            child,
            issuer: format!("http://127.0.0.1:{port}"),
        };
        let discovery = format!("{}/.well-known/openid-configuration", p.issuer);
        for _ in 0..300 {
            if reqwest::get(&discovery)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return p;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("oidc-provider-mock did not start on {}", p.issuer);
    }

    /// Signs `sub` in with these claims, as the lake's client (or another `client_id`), and
    /// returns the issuer's JWT (the id token: this provider's access tokens are opaque).
    async fn sign_in(&self, sub: &str, claims: Value, client_id: &str) -> String {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        self.set_claims(sub, claims).await;
        let redirect = "http://127.0.0.1/callback";
        let r = http
            .post(format!("{}/oauth2/authorize", self.issuer))
            .query(&[
                ("client_id", client_id),
                ("redirect_uri", redirect),
                ("response_type", "code"),
                ("scope", "openid"),
                ("state", "s"),
            ])
            .form(&[("sub", sub)])
            .send()
            .await
            .expect("authorize");
        assert_eq!(r.status(), 302, "the provider signs the user in");
        let location = r.headers()["location"]
            .to_str()
            .expect("location")
            .to_owned();
        let code = reqwest::Url::parse(&location)
            .expect("url")
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .expect("code");
        let tokens: Value = http
            .post(format!("{}/oauth2/token", self.issuer))
            .basic_auth(client_id, Some("secret"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect),
            ])
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("json");
        tokens["id_token"].as_str().expect("id_token").to_owned()
    }
}

impl Provider {
    /// The claims the provider puts in `sub`'s tokens.
    pub(crate) async fn set_claims(&self, sub: &str, claims: Value) {
        let r = reqwest::Client::new()
            .put(format!("{}/users/{sub}", self.issuer))
            .json(&claims)
            .send()
            .await
            .expect("claims");
        assert_eq!(r.status(), 204, "set claims");
    }
}

/// A lake that accepts `provider`'s JWTs (groups `lab-curators` and `lab-members`), with this
/// clock leeway.
pub(crate) fn oidc_lake(
    provider: &Provider,
    leeway_secs: u32,
) -> (crate::walkthrough::Server, String, [tempfile::TempDir; 2]) {
    let conf = tempfile::tempdir().expect("tempdir");
    let path = conf.path().join("lake.toml");
    std::fs::write(
        &path,
        format!(
            "[auth]\nmode = \"oidc\"\n\n[auth.oidc]\nissuer = \"{}\"\naudience = \"lake\"\n\
             leeway_secs = {leeway_secs}\nclient_secret = \"lake-secret\"\n\n\
             [auth.oidc.roles]\nlab-curators = \"curator\"\nlab-members = \"reader\"\n",
            provider.issuer
        ),
    )
    .expect("config");
    let envs = [("LAKE_CONFIG".to_owned(), path.display().to_string())];
    let (server, url, dir) = crate::walkthrough::start(&envs);
    (server, url, [dir, conf])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_sign_in_is_refused() {
    let Some(python) = crate::service_var("LAKE_TEST_PYTHON") else {
        return;
    };
    let provider = Provider::start(&python, 2).await;
    let (_server, url, _conf) = oidc_lake(&provider, 0);
    let jwt = provider
        .sign_in("rex", json!({"groups": ["lab-members"]}), "lake")
        .await;
    let get = || {
        reqwest::Client::new()
            .get(format!("{url}/catalog"))
            .bearer_auth(&jwt)
            .send()
    };
    let fresh = get().await.expect("request");
    assert_eq!(fresh.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let late = get().await.expect("request");
    assert_eq!(late.status(), 401);
    let v: Value = late.json().await.expect("json");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("expired"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_curator_signed_in_at_an_oidc_issuer_promotes_with_its_jwt() {
    let Some(python) = crate::service_var("LAKE_TEST_PYTHON") else {
        return;
    };
    let provider = Provider::start(&python, 600).await;
    let (_server, url, _conf) = oidc_lake(&provider, 60);
    let http = reqwest::Client::new();
    let call = |jwt: &str, method: reqwest::Method, route: &str, body: Option<Value>| {
        let mut req = http
            .request(method, format!("{url}{route}"))
            .bearer_auth(jwt);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let r = req.send().await.expect("request");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let carol = provider
        .sign_in(
            "carol",
            json!({"groups": ["lab-curators", "lab-members"]}),
            "lake",
        )
        .await;
    let (s, d) = call(
        &carol,
        reqwest::Method::POST,
        "/catalog",
        Some(json!({"name": "plate 7", "source": "lab"})),
    )
    .await;
    assert_eq!(s, 201, "{d}");
    let raw = d["id"].as_str().expect("id").to_owned();
    let (s, p) = call(
        &carol,
        reqwest::Method::POST,
        "/layers/promote",
        Some(json!({"dataset_id": raw, "target_layer": "processed"})),
    )
    .await;
    assert_eq!(s, 201, "{p}");
    let processed = p["dataset"]["id"].as_str().expect("id").to_owned();
    let (s, p) = call(
        &carol,
        reqwest::Method::POST,
        "/layers/promote",
        Some(json!({"dataset_id": processed, "target_layer": "curated", "reason": "QC passed"})),
    )
    .await;
    assert_eq!(s, 201, "a curator by group promotes to curated: {p}");
    let curated = p["dataset"]["id"].as_str().expect("id").to_owned();
    let (s, l) = call(
        &carol,
        reqwest::Method::GET,
        &format!("/provenance/{curated}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{l}");
    let promotion = l["entries"]
        .as_array()
        .and_then(|es| es.iter().rev().find(|e| e["action"] == "promotion"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(promotion["actor"], "carol", "{l}");
    assert_eq!(promotion["reason"], "QC passed", "{l}");
    assert!(
        promotion["actor_token"]
            .as_str()
            .is_some_and(|t| t.starts_with("oidc:") && !carol.contains(&t[5..])),
        "the session is named by a handle, never the token: {promotion}"
    );

    // A member is a reader; a user in no mapped group, a token for another client, and a
    // tampered one are refused, each saying why.
    let rex = provider
        .sign_in("rex", json!({"groups": ["lab-members"]}), "lake")
        .await;
    let (s, v) = call(&rex, reqwest::Method::GET, "/catalog", None).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(
        &rex,
        reqwest::Method::POST,
        "/catalog",
        Some(json!({"name": "x", "source": "lab"})),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    let visitor = provider
        .sign_in("vic", json!({"groups": ["visitors"]}), "lake")
        .await;
    let elsewhere = provider
        .sign_in("carol", json!({"groups": ["lab-curators"]}), "another-app")
        .await;
    // One symbol inside the signature changed (the last one carries padding bits, so changing it
    // may make the text invalid base64 rather than a wrong signature).
    let mut tampered = carol.clone().into_bytes();
    let i = tampered.len() - 10;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    for (jwt, why) in [
        (visitor.as_str(), "map to no role"),
        (elsewhere.as_str(), "another audience"),
        (tampered.as_str(), "signature"),
        ("e30.e30.e30", "neither a lake token nor a JWT"),
    ] {
        let (s, v) = call(jwt, reqwest::Method::GET, "/catalog", None).await;
        assert_eq!(s, 401, "{why}: {v}");
        let m = v["error"]["message"].as_str().unwrap_or("");
        assert!(m.contains(why), "{why}: {m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_caps_how_long_its_tokens_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = lake_host::config::Config::default();
    cfg.catalog.url = lake_host::config::Secret::new(format!(
        "sqlite://{}",
        dir.path().join("catalog.db").display()
    ));
    cfg.storage.local.root = dir.path().join("objects");
    cfg.auth.max_token_days = 30;
    let lake = lake_host::lake::Lake::open(&cfg).await.expect("lake");
    let access = lake.access();
    access
        .add_user("ana", lake_host::identity::UserKind::Person, Role::Reader)
        .await
        .expect("user");
    let ask = |days: Option<u32>| TokenRequest {
        name: "laptop".into(),
        owner: "ana".into(),
        role: Role::Reader,
        days,
    };
    // The 90-day default is cut to the lake's maximum; asking for more is refused.
    let issued = access.issue(ask(None)).await.expect("issue");
    let days = (issued.record.expires_at - issued.record.created_at).num_hours() as f64 / 24.0;
    assert!((29.9..=30.0).contains(&days), "{days} days");
    let refused = access.issue(ask(Some(31))).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("max_token_days")),
        "{refused:?}"
    );
    assert!(access.issue(ask(Some(30))).await.is_ok());
}
