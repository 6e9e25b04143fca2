//! Hostile components against the sandbox: an infinite loop, a memory bomb, a panic, a file read and
//! a socket. Each fails with its own clear error within its limit, and the host keeps serving.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lake_host::config::{ByteSize, PluginOverride, PluginsConfig};
use lake_host::plugins::{InvokeError, Plugins};

const FEATURES: [&str; 5] = ["spin", "membomb", "panic", "readfile", "socket"];

/// Builds every test component once per test run (a file lock serialises the test processes) and
/// returns the directory holding `hostile-<feature>.wasm` and the `fetch.wasm` connector.
pub fn components() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let out = tmp.join("hostile");
    std::fs::create_dir_all(&out).expect("output dir");
    let lock = std::fs::File::create(tmp.join("hostile.lock")).expect("lock file");
    lock.lock().expect("lock");
    let build = |package: &str, feature: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            package,
        ]);
        if let Some(f) = feature {
            cmd.args(["--features", f]);
        }
        let status = cmd
            .arg("--manifest-path")
            .arg(root.join("tests/components/Cargo.toml"))
            .arg("--target-dir")
            .arg(tmp.join("hostile-target"))
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .expect("run cargo");
        assert!(
            status.success(),
            "building the test component {package} {feature:?} failed"
        );
        tmp.join(format!(
            "hostile-target/wasm32-wasip2/release/{package}.wasm"
        ))
    };
    for f in FEATURES {
        std::fs::copy(
            build("hostile", Some(f)),
            out.join(format!("hostile-{f}.wasm")),
        )
        .expect("copy");
    }
    std::fs::copy(build("fetch", None), out.join("fetch.wasm")).expect("copy");
    lock.unlock().expect("unlock");
    out
}

fn registry(grants: &[(&str, &str)]) -> (Plugins, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in FEATURES {
        std::fs::copy(
            components().join(format!("hostile-{f}.wasm")),
            dir.path().join(format!("hostile-{f}.wasm")),
        )
        .expect("copy");
    }
    let mut overrides = BTreeMap::new();
    overrides.insert(
        "hostile-spin".to_owned(),
        PluginOverride {
            timeout_secs: Some(1.0),
            ..Default::default()
        },
    );
    overrides.insert(
        "hostile-membomb".to_owned(),
        PluginOverride {
            memory: Some(ByteSize(64 << 20)),
            ..Default::default()
        },
    );
    for (name, grant) in grants {
        overrides
            .entry((*name).to_owned())
            .or_default()
            .grants
            .push((*grant).to_owned());
    }
    let cfg = PluginsConfig {
        dir: dir.path().to_path_buf(),
        cache_dir: crate::plugins::shared_cache(),
        overrides,
        ..PluginsConfig::default()
    };
    (Plugins::open(&cfg).expect("runtime"), dir)
}

fn one_chunk() -> lake_host::blob::ByteStream {
    Box::pin(futures::stream::once(async {
        Ok(bytes::Bytes::from_static(b"a,b\n1,2\n"))
    }))
}

async fn run(
    p: &Plugins,
    name: &str,
) -> (Result<lake_host::plugins::Table, InvokeError>, Duration) {
    let t = Instant::now();
    let inv = p.parse(name, Vec::new(), one_chunk()).await;
    (inv.result, t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_times_out_while_others_keep_working() {
    let (p, _dir) = registry(&[]);
    let spinning = tokio::spawn({
        let p = p.clone();
        async move { run(&p, "hostile-spin").await }
    });
    // While the loop spins on its blocking thread, other invocations still complete.
    let iris = crate::plugins::parse(
        &p,
        &crate::plugins::shared().join("fixtures/csv/iris.csv"),
        serde_json::json!({}),
    )
    .await
    .expect("csv while spinning");
    assert_eq!(iris.num_rows(), 150);
    assert!(!spinning.is_finished(), "the loop should still be running");
    let (result, took) = spinning.await.expect("join");
    let err = result.expect_err("must not finish");
    assert!(matches!(err, InvokeError::Timeout(_)), "{err}");
    assert_eq!(err.code(), "timeout");
    assert!(
        took < Duration::from_secs(5),
        "stopped near its 1 s limit, not {took:?}"
    );
}

#[tokio::test]
async fn memory_bomb_hits_its_limit() {
    let (p, _dir) = registry(&[]);
    let (result, _) = run(&p, "hostile-membomb").await;
    let err = result.expect_err("must not finish");
    assert!(matches!(err, InvokeError::MemoryLimit(_)), "{err}");
    assert!(err.to_string().contains("64 MiB"), "names the limit: {err}");
}

#[tokio::test]
async fn panic_reports_its_message() {
    let (p, _dir) = registry(&[]);
    let (result, _) = run(&p, "hostile-panic").await;
    let err = result.expect_err("must not finish");
    assert!(matches!(err, InvokeError::Panic(_)), "{err}");
    assert!(
        err.to_string()
            .contains("hostile plugin gave up on a chunk of 8 bytes"),
        "{err}"
    );
    // The runtime is unharmed: the next invocation of the same component gets a fresh instance.
    let (again, _) = run(&p, "hostile-panic").await;
    assert!(matches!(again, Err(InvokeError::Panic(_))));
}

#[tokio::test]
async fn file_and_socket_imports_are_refused_unless_granted() {
    let (p, _dir) = registry(&[]);
    let rejected = p.rejected();
    for (name, iface) in [
        ("hostile-readfile", "wasi:filesystem"),
        ("hostile-socket", "wasi:sockets"),
    ] {
        assert!(
            p.get(name).is_none(),
            "{name} must not load without a grant"
        );
        let r = rejected
            .iter()
            .find(|r| r.source.ends_with(&format!("{name}.wasm")))
            .unwrap_or_else(|| panic!("{name} not listed as rejected: {rejected:?}"));
        assert!(
            r.reason.contains("capability denied") && r.reason.contains(iface),
            "{r:?}"
        );
        let (result, _) = run(&p, name).await;
        assert!(matches!(result, Err(InvokeError::Unknown(_))), "{result:?}");
    }
    // Even granted, the sandbox has no directories and no network to offer.
    let (p, _dir) = registry(&[
        ("hostile-readfile", "wasi:filesystem/"),
        ("hostile-socket", "wasi:filesystem/"),
        ("hostile-socket", "wasi:sockets/"),
    ]);
    let (result, _) = run(&p, "hostile-readfile").await;
    let err = result.expect_err("no preopened directories");
    assert_eq!(err.code(), "internal", "{err}");
    assert!(
        err.to_string().contains("reading /etc/passwd failed"),
        "{err}"
    );
    let (result, _) = run(&p, "hostile-socket").await;
    let err = result.expect_err("sockets are denied");
    assert!(
        err.to_string()
            .contains("connecting to 127.0.0.1:5432 failed"),
        "{err}"
    );
}
