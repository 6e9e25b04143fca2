//! Identity: bearer tokens issued from the command line, kept as digests in the catalog, and
//! checked (unknown, wrong secret, revoked, expired) by the one authentication path.

use lake_host::identity::{Bearer, Role, TokenRequest};

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
        (ok.owner.as_str(), ok.role),
        ("sequencer-3", Role::Contributor)
    );
    assert!(
        lake.catalog()
            .token(ok.id)
            .await
            .expect("get")
            .last_used_at
            .is_some()
    );

    // Another secret under the same id, a token never issued, and text that is no token.
    let forged = format!("lake_{}_{}", ok.id.simple(), "0".repeat(64));
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
    access.revoke(ok.id).await.expect("revoke");
    let e = access
        .authenticate(&issued.token)
        .await
        .err()
        .unwrap_or_default();
    assert!(e.contains("revoked"), "{e}");
}
