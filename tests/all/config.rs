//! Configuration: the shipped file, precedence, unknown keys, every problem at once, secrets.

use lake_host::config::{self, CliOverrides, StorageBackend};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn shipped_lake_toml_parses_and_equals_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../lake.toml");
    let cfg = config::load(
        Some(std::path::Path::new(path)),
        &[],
        &CliOverrides::default(),
    )
    .expect("shipped lake.toml is valid");
    let defaults =
        config::from_parts(None, &[], &CliOverrides::default()).expect("defaults are valid");
    assert_eq!(
        cfg.to_redacted_toml(),
        defaults.to_redacted_toml(),
        "lake.toml must describe the embedded default"
    );
    assert_eq!(cfg.storage.backend, StorageBackend::Local);
    assert!(cfg.catalog.url.expose().starts_with("sqlite:"));
    assert_eq!(cfg.server.listen, "127.0.0.1:8080");
}

#[test]
fn every_shipped_key_has_a_comment_above_it() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../lake.toml"))
        .expect("read");
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        let is_key = !t.is_empty() && !t.starts_with('#') && !t.starts_with('[') && t.contains('=');
        if is_key {
            assert!(
                i > 0 && lines[i - 1].trim().starts_with('#'),
                "lake.toml line {}: `{t}` has no doc comment",
                i + 1
            );
        }
    }
}

#[test]
fn precedence_defaults_file_env_cli() {
    let file = "[server]\nlisten = \"127.0.0.1:1111\"\n[catalog]\nmax_connections = 3\n";
    let cfg = config::from_parts(Some(file), &[], &CliOverrides::default()).expect("valid");
    assert_eq!(
        (cfg.server.listen.as_str(), cfg.catalog.max_connections),
        ("127.0.0.1:1111", 3)
    );
    assert_eq!(
        cfg.server.presign_ttl_secs, 900,
        "untouched keys keep their defaults"
    );

    let e = env(&[
        ("LAKE_SERVER__LISTEN", "127.0.0.1:2222"),
        ("LAKE_CATALOG__MAX_CONNECTIONS", "7"),
    ]);
    let cfg = config::from_parts(Some(file), &e, &CliOverrides::default()).expect("valid");
    assert_eq!(
        (cfg.server.listen.as_str(), cfg.catalog.max_connections),
        ("127.0.0.1:2222", 7)
    );

    let cli = CliOverrides {
        listen: Some("127.0.0.1:3333".into()),
    };
    let cfg = config::from_parts(Some(file), &e, &cli).expect("valid");
    assert_eq!(cfg.server.listen, "127.0.0.1:3333");
}

#[test]
fn env_selects_postgres_and_s3() {
    let e = env(&[
        (
            "LAKE_CATALOG__URL",
            "postgres://postgres@127.0.0.1:5432/lake",
        ),
        ("LAKE_STORAGE__BACKEND", "s3"),
        ("LAKE_STORAGE__S3__ENDPOINT", "http://127.0.0.1:3900"),
        ("LAKE_STORAGE__S3__REGION", "garage"),
        ("LAKE_STORAGE__S3__ACCESS_KEY_ID", "GKabc"),
        ("LAKE_STORAGE__S3__SECRET_ACCESS_KEY", "s3cr3t-value"),
        ("LAKE_STORAGE__S3__FORCE_PATH_STYLE", "true"),
        (
            "LAKE_TEST_PG_URL",
            "ignored: test harness variables are not settings",
        ),
        (
            "LAKE_BENCH_DATA",
            "ignored: benchmark harness variables are not settings",
        ),
    ]);
    let cfg = config::from_parts(None, &e, &CliOverrides::default()).expect("valid");
    assert_eq!(cfg.storage.backend, StorageBackend::S3);
    assert_eq!(
        cfg.storage.s3.endpoint.as_deref(),
        Some("http://127.0.0.1:3900")
    );
    assert_eq!(
        cfg.storage.s3.secret().expect("secret").expose(),
        "s3cr3t-value"
    );
    // Secrets never show in Debug or in the printed configuration.
    let shown = format!("{cfg:?}\n{}", cfg.to_redacted_toml());
    assert!(!shown.contains("s3cr3t-value"), "secret leaked: {shown}");
    assert!(
        !shown.contains("postgres://postgres@"),
        "catalog URL leaked"
    );
    assert!(shown.contains("[redacted]"));
}

#[test]
fn secret_from_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("secret");
    std::fs::write(&f, "from-a-file\n").expect("write");
    let text = format!(
        "[storage]\nbackend = \"s3\"\n[storage.s3]\naccess_key_id = \"GK1\"\nsecret_access_key_file = \"{}\"\n",
        f.display()
    );
    let cfg = config::from_parts(Some(&text), &[], &CliOverrides::default()).expect("valid");
    assert_eq!(
        cfg.storage.s3.secret().expect("secret").expose(),
        "from-a-file"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
[server]
listen = "not an address"
lisen = "typo"
[catalog]
url = "mysql://nope"
[storage]
backend = "s3"
[storage.buckets]
raw = "Bad_Bucket"
processed = "lake-curated"
[layers]
promotion_parallelism = 0
[surprise]
x = 1
"#;
    let e = env(&[("LAKE_CATALOG_URL", "x")]);
    let err = config::from_parts(Some(text), &e, &CliOverrides::default()).expect_err("invalid");
    let all = err.0.join("\n");
    for needle in [
        "server.listen",
        "server.lisen",
        "catalog.url",
        "storage.s3.access_key_id",
        "storage.s3.secret_access_key",
        "storage.buckets.raw",
        "processed and curated",
        "layers.promotion_parallelism",
        "surprise",
        "LAKE_CATALOG_URL: names no setting (did you mean LAKE_CATALOG__URL?)",
    ] {
        assert!(
            all.contains(needle),
            "missing problem {needle:?} in:\n{all}"
        );
    }
    assert!(err.0.len() >= 10, "{all}");
}

#[test]
fn type_errors_name_their_section() {
    let err = config::from_parts(
        Some("[server]\npresign_ttl_secs = \"soon\"\n[log]\nlevel = 5\n"),
        &[],
        &CliOverrides::default(),
    )
    .expect_err("invalid");
    let all = err.0.join("\n");
    assert!(all.contains("[server]") && all.contains("[log]"), "{all}");
}

#[test]
fn sizes_accept_units() {
    assert_eq!(config::ByteSize::parse("16MiB").expect("size").0, 16 << 20);
    assert_eq!(
        config::ByteSize::parse("10 GB").expect("size").0,
        10_000_000_000
    );
    assert_eq!(config::ByteSize::parse("123").expect("size").0, 123);
    assert!(config::ByteSize::parse("12 parsecs").is_err());
    let cfg = config::from_parts(
        None,
        &env(&[("LAKE_SERVER__MAX_UPLOAD_BYTES", "1MiB")]),
        &CliOverrides::default(),
    )
    .expect("valid");
    assert_eq!(cfg.server.max_upload_bytes.0, 1 << 20);
}

#[test]
fn lake_config_check_prints_all_problems_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"nowhere\"\n[catalog]\nurl = \"ftp://x\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lake"))
        .args([
            "--config",
            bad.to_str().expect("utf-8 path"),
            "config",
            "check",
        ])
        .env_remove("LAKE_CONFIG")
        .output()
        .expect("run lake");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.listen") && stderr.contains("catalog.url"),
        "{stderr}"
    );

    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_lake"))
        .args(["config", "check"])
        .current_dir(dir.path())
        .env_remove("LAKE_CONFIG")
        .output()
        .expect("run lake");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("[catalog]"));
}

#[test]
fn auth_off_is_refused_off_loopback_and_auto_asks_for_tokens_there() {
    use lake_host::config::{AuthMode, enforces_tokens, is_loopback, validate};
    let mut cfg = lake_host::config::Config::default();
    assert!(
        !enforces_tokens(&cfg.auth, &cfg.server.listen),
        "open on the loopback default"
    );
    for (listen, loopback) in [
        ("127.0.0.1:8080", true),
        ("[::1]:8080", true),
        ("localhost:8080", true),
        ("0.0.0.0:8080", false),
        ("192.168.1.20:8080", false),
        ("[::]:8080", false),
    ] {
        assert_eq!(is_loopback(listen), loopback, "{listen}");
    }
    cfg.server.listen = "0.0.0.0:8080".into();
    assert!(
        enforces_tokens(&cfg.auth, &cfg.server.listen),
        "auto asks off loopback"
    );
    assert!(validate(&cfg).is_empty(), "{:?}", validate(&cfg));
    cfg.auth.mode = AuthMode::Off;
    let problems = validate(&cfg);
    assert!(
        problems.iter().any(|p| p.starts_with("auth.mode")
            && p.contains("loopback")
            && p.contains("0.0.0.0:8080")),
        "{problems:?}"
    );
    cfg.server.listen = "127.0.0.1:8080".into();
    assert!(validate(&cfg).is_empty());
    cfg.auth.mode = AuthMode::Tokens;
    assert!(
        enforces_tokens(&cfg.auth, &cfg.server.listen),
        "tokens asks everywhere"
    );
}

#[test]
fn oidc_needs_an_issuer_roles_and_https_off_this_machine() {
    use lake_host::config::{AuthMode, validate};
    let mut cfg = lake_host::config::Config::default();
    cfg.auth.mode = AuthMode::Oidc;
    let problems = validate(&cfg);
    for key in ["auth.oidc.issuer", "auth.oidc.roles"] {
        assert!(
            problems.iter().any(|p| p.starts_with(key)),
            "{key}: {problems:?}"
        );
    }
    cfg.auth
        .oidc
        .roles
        .insert("lab-curators".into(), lake_host::identity::Role::Curator);
    for (issuer, ok) in [
        ("https://login.lab.example/realms/lab", true),
        ("http://127.0.0.1:9400", true),
        ("http://localhost:9400/realms/lab", true),
        ("http://login.lab.example/realms/lab", false),
        ("login.lab.example", false),
    ] {
        cfg.auth.oidc.issuer = issuer.into();
        let problems = validate(&cfg);
        assert_eq!(problems.is_empty(), ok, "{issuer}: {problems:?}");
        if !ok {
            assert!(problems[0].starts_with("auth.oidc.issuer"), "{problems:?}");
        }
    }
    assert!(enforces(&cfg), "oidc asks for a bearer token");
}

fn enforces(cfg: &lake_host::config::Config) -> bool {
    lake_host::config::enforces_tokens(&cfg.auth, &cfg.server.listen)
}
