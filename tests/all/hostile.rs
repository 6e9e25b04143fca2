//! Hostile components against the sandbox: an infinite loop, a memory bomb, a panic, a file read and
//! a socket, floods of logs, progress and output. Each fails with its own clear error within its
//! limit, and the host keeps serving. Components that lie about themselves (kind, name, interface
//! version) and files that are no component are refused at load with the reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lake_host::config::{ByteSize, PluginOverride, PluginsConfig};
use lake_host::plugins::{InvokeError, Plugins};

const FEATURES: [&str; 23] = [
    "spin",
    "membomb",
    "panic",
    "readfile",
    "socket",
    "logflood",
    "bigdesc",
    "badname",
    "loud",
    "describepanic",
    "outflood",
    "zerocols",
    "sleep",
    "schemaflip",
    "badipc",
    "progressflood",
    "shadow",
    "emptyname",
    "longname",
    "ctrlname",
    "kindlie",
    "witlie",
    "otherwit",
];

/// Builds every test component once for the sources they are built from (a file lock serialises
/// the test processes; a stamp of the sources lets the next process skip the builds) and returns
/// the directory holding `hostile-<feature>.wasm` and the `fetch.wasm` connector.
pub fn components() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let out = tmp.join("hostile");
    std::fs::create_dir_all(&out).expect("output dir");
    let lock = std::fs::File::create(tmp.join("hostile.lock")).expect("lock file");
    lock.lock().expect("lock");
    let stamp = out.join("sources.stamp");
    let sources = sources_stamp(&root);
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == sources) {
        lock.unlock().expect("unlock");
        return out;
    }
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
    std::fs::write(&stamp, sources).expect("stamp");
    lock.unlock().expect("unlock");
    out
}

/// What the test components are built from, as one line per file (path, length, modification
/// time) and the feature list: equal stamps mean the built components are current.
fn sources_stamp(root: &Path) -> String {
    fn walk(dir: &Path, lines: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if e.file_name() == "target" {
                continue;
            }
            let Ok(meta) = e.metadata() else {
                continue;
            };
            if meta.is_dir() {
                walk(&path, lines);
            } else {
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                lines.push(format!("{} {} {modified}", path.display(), meta.len()));
            }
        }
    }
    let mut lines = vec![FEATURES.join(",")];
    for dir in ["tests/components", "sdk", "wit"] {
        walk(&root.join(dir), &mut lines);
    }
    lines.sort();
    lines.join("\n")
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
        "hostile-sleep".to_owned(),
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
        // hostile-outflood returns 200 batches (16 MB) for one chunk.
        max_output_batches: 100,
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

/// A component that says the wrong things of itself is refused at load with the reason, and the
/// server's registry keeps the rest: a name that is not an identifier, a description of 1 MiB,
/// and a second component taking a name already loaded (which would inherit its grants).
#[tokio::test]
async fn components_that_misdescribe_themselves_are_refused_at_load() {
    let (_, dir) = registry(&[]);
    // The same component again under a later file name: it declares a name already taken.
    std::fs::copy(
        components().join("hostile-panic.wasm"),
        dir.path().join("zz-panic-again.wasm"),
    )
    .expect("copy");
    let cfg = PluginsConfig {
        dir: dir.path().to_path_buf(),
        cache_dir: crate::plugins::shared_cache(),
        ..PluginsConfig::default()
    };
    let p = Plugins::open(&cfg).expect("runtime");
    let rejected = p.rejected();
    let reason_of = |file: &str| refusal(&p, file);
    assert!(
        reason_of("hostile-badname.wasm").contains("its name"),
        "{rejected:?}"
    );
    assert!(
        reason_of("hostile-bigdesc.wasm").contains("description is longer than 4096"),
        "{rejected:?}"
    );
    assert!(
        reason_of("zz-panic-again.wasm").contains("is taken by"),
        "{rejected:?}"
    );
    let first = p.get("hostile-panic").expect("the first keeps its name");
    assert!(
        first.source.ends_with("hostile-panic.wasm"),
        "{}",
        first.source
    );
    // The rest load and run as before.
    let (result, _) = run(&p, "hostile-panic").await;
    assert!(matches!(result, Err(InvokeError::Panic(_))));
    assert!(p.list().iter().all(|m| !m.name.contains('/')));
}

/// Files in the plugin directory that are not components, or not files at all, are listed as
/// refused with the reason and the rest load, whether the registry loads them before returning
/// (`lake plugin list`) or on its own thread while the server answers (`lake serve`): an empty
/// file, a truncated component, random bytes, a file past the 256 MiB a component may be (sparse,
/// and never read), a FIFO (whose read would block start for ever), a link to `/dev/zero` (which
/// would grow memory without end).
#[cfg(unix)]
#[tokio::test]
async fn odd_files_in_the_plugin_directory_are_refused_and_start_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        components().join("hostile-panic.wasm"),
        dir.path().join("hostile-panic.wasm"),
    )
    .expect("copy");
    let whole = std::fs::read(components().join("hostile-spin.wasm")).expect("read");
    std::fs::write(dir.path().join("cut.wasm"), &whole[..whole.len() / 2]).expect("write");
    std::fs::write(dir.path().join("empty.wasm"), b"").expect("write");
    // 64 KiB of a fixed pseudo-random sequence (xorshift), so every run sees the same bytes.
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let noise: Vec<u8> = (0..64 << 10)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8
        })
        .collect();
    std::fs::write(dir.path().join("noise.wasm"), &noise).expect("write");
    // One byte past the limit, as a sparse file: it costs no disk, and the host must not read it.
    let huge = std::fs::File::create(dir.path().join("huge.wasm")).expect("create");
    huge.set_len((256 << 20) + 1).expect("set_len");
    drop(huge);
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.wasm")).expect("link");
    let fifo = dir.path().join("fifo.wasm");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let cfg = PluginsConfig {
        dir: dir.path().to_path_buf(),
        cache_dir: crate::plugins::shared_cache(),
        ..PluginsConfig::default()
    };
    let check = |p: &Plugins| {
        let rejected = p.rejected();
        let reason_of = |file: &str| refusal(p, file);
        for file in ["cut.wasm", "noise.wasm"] {
            let why = reason_of(file);
            assert!(
                why.starts_with("plugin failed to load: not a valid component: "),
                "{file}: {why}"
            );
        }
        assert_eq!(reason_of("empty.wasm"), "empty file");
        assert_eq!(
            reason_of("huge.wasm"),
            "268435457 bytes, larger than the 256 MiB a component may be"
        );
        for file in ["zero.wasm", "fifo.wasm"] {
            assert_eq!(
                reason_of(file),
                "not a regular file (a link, FIFO or device is never read)",
                "{file}"
            );
        }
        assert_eq!(rejected.len(), 6, "only the odd files: {rejected:?}");
        assert!(p.get("hostile-panic").is_some(), "the good component loads");
        assert!(p.get("csv").is_some(), "the bundled ones load");
    };
    let p = Plugins::open(&cfg).expect("runtime");
    check(&p);
    let started = Plugins::start(&cfg).expect("runtime");
    started.loaded().await;
    check(&started);
}

/// A component whose `describe` says it is a connector while it exports the parser world is
/// refused at load with both kinds named (it would otherwise be handed a connector's grants and
/// run as what it is not), and the others load.
#[tokio::test]
async fn a_component_lying_about_its_kind_is_refused_at_load() {
    let (cfg, _dir) = with_only(&["kindlie", "panic"]);
    let p = Plugins::open(&cfg).expect("runtime");
    assert_eq!(
        refusal(&p, "hostile-kindlie.wasm"),
        "plugin failed to load: the component says it is a connector but exports the parser world"
    );
    assert!(p.get("hostile-kindlie").is_none());
    assert_eq!(p.rejected().len(), 1, "{:?}", p.rejected());
    let (result, _) = run(&p, "hostile-panic").await;
    assert!(matches!(result, Err(InvokeError::Panic(_))), "{result:?}");
}

/// A third-party component calling itself `csv` is refused at load (it would take the bundled
/// parser's uploads and grants), whether loaded before returning or by `lake serve`'s loader;
/// the bundled `csv` keeps its name and still parses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_taking_a_bundled_plugins_name_is_refused_and_the_bundled_one_keeps_it() {
    let (cfg, _dir) = with_only(&["shadow"]);
    let p = Plugins::open(&cfg).expect("runtime");
    let started = Plugins::start(&cfg).expect("runtime");
    started.loaded().await;
    for p in [&p, &started] {
        assert_eq!(
            refusal(p, "hostile-shadow.wasm"),
            "the name csv belongs to a bundled plugin"
        );
        let csv = p.get("csv").expect("the bundled csv stays");
        assert_eq!(csv.source, "bundled");
        assert_eq!(p.list().iter().filter(|m| m.name == "csv").count(), 1);
        let iris = crate::plugins::parse(
            p,
            &crate::plugins::shared().join("fixtures/csv/iris.csv"),
            serde_json::json!({}),
        )
        .await
        .expect("the bundled csv parses");
        assert_eq!(iris.num_rows(), 150);
    }
}

/// A component built against another version of the interface is refused at load with the
/// version it was built against and the one this lake speaks: one truly built against
/// `lake:plugin@0.2.0` (its exports name that version), and one exporting 0.1.0 whose `describe`
/// claims 0.2.0.
#[tokio::test]
async fn a_component_of_another_interface_version_is_refused_at_load() {
    use lake_host::plugins::WIT_VERSION;
    let (cfg, _dir) = with_only(&["otherwit", "witlie", "panic"]);
    let p = Plugins::open(&cfg).expect("runtime");
    assert_eq!(
        refusal(&p, "hostile-otherwit.wasm"),
        format!(
            "plugin failed to load: built against lake:plugin@0.2.0, this lake speaks {WIT_VERSION}"
        )
    );
    assert_eq!(
        refusal(&p, "hostile-witlie.wasm"),
        format!("built against lake:plugin@0.2.0, this lake speaks {WIT_VERSION}")
    );
    assert!(p.get("hostile-otherwit").is_none() && p.get("hostile-witlie").is_none());
    assert_eq!(p.rejected().len(), 2, "{:?}", p.rejected());
    assert!(p.get("hostile-panic").is_some(), "the others load");
}

/// Plugin names that are empty, 10 KiB long, or hold a bell and a newline (which would forge log
/// lines) are refused at load; the refusal shows the name escaped and cut to 80 characters, so the
/// listing of refused plugins carries no control character and no 10 KiB.
#[tokio::test]
async fn names_that_are_empty_huge_or_hold_control_characters_are_refused_at_load() {
    let (cfg, _dir) = with_only(&["emptyname", "longname", "ctrlname"]);
    let p = Plugins::open(&cfg).expect("runtime");
    let rule = "is not 1 to 64 letters, digits, '-', '_' or '.' starting with a letter or digit";
    assert_eq!(
        refusal(&p, "hostile-emptyname.wasm"),
        format!("its name \"\" {rule}")
    );
    assert_eq!(
        refusal(&p, "hostile-longname.wasm"),
        format!("its name \"{}\" {rule}", "a".repeat(80))
    );
    assert_eq!(
        refusal(&p, "hostile-ctrlname.wasm"),
        format!("its name \"hostile\\u{{7}}ctrl\\nname\" {rule}")
    );
    let rejected = p.rejected();
    assert_eq!(rejected.len(), 3, "{rejected:?}");
    for r in &rejected {
        assert!(!r.reason.chars().any(char::is_control), "{r:?}");
        assert!(
            r.reason.len() < 300,
            "{} bytes: {}",
            r.reason.len(),
            r.source
        );
    }
    assert!(
        p.list().iter().all(|m| m.source == "bundled"),
        "none of them loads"
    );
}

/// Why the component in `file` was refused; fails the test when it was not.
fn refusal(p: &Plugins, file: &str) -> String {
    let rejected = p.rejected();
    rejected
        .iter()
        .find(|r| r.source.ends_with(file))
        .map(|r| r.reason.clone())
        .unwrap_or_else(|| panic!("{file} was not refused: {rejected:?}"))
}

/// A component whose `describe` writes to stderr and sleeps, or panics, is loaded or refused
/// like any other, from inside a running server's runtime of either kind: loading never takes
/// the process down ("Cannot start a runtime from within a runtime").
fn loud_and_panicking_registry() -> (PluginsConfig, tempfile::TempDir) {
    with_only(&["loud", "describepanic", "panic"])
}

/// A plugin directory holding only the hostile components of `features`, and the default
/// configuration reading it.
fn with_only(features: &[&str]) -> (PluginsConfig, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in features {
        std::fs::copy(
            components().join(format!("hostile-{f}.wasm")),
            dir.path().join(format!("hostile-{f}.wasm")),
        )
        .expect("copy");
    }
    let cfg = PluginsConfig {
        dir: dir.path().to_path_buf(),
        cache_dir: crate::plugins::shared_cache(),
        ..PluginsConfig::default()
    };
    (cfg, dir)
}

fn check_loud_and_panicking(p: &Plugins) {
    assert!(p.get("hostile-loud").is_some(), "{:?}", p.rejected());
    assert!(p.get("hostile-panic").is_some(), "{:?}", p.rejected());
    let refused = p
        .rejected()
        .into_iter()
        .find(|r| r.source.ends_with("hostile-describepanic.wasm"))
        .expect("the panicking describe is refused");
    assert!(refused.reason.contains("describe"), "{}", refused.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_describe_that_talks_sleeps_or_panics_never_stops_the_server() {
    let (cfg, _dir) = loud_and_panicking_registry();
    let p = Plugins::open(&cfg).expect("runtime");
    check_loud_and_panicking(&p);
    // As `lake serve` loads them: on a thread of its own while the server answers.
    let started = Plugins::start(&cfg).expect("runtime");
    // The last file in name order: once it is loaded, every file has been tried.
    let last = started.manifest("hostile-panic").await;
    assert!(last.is_some(), "{:?}", started.rejected());
    check_loud_and_panicking(&started);
}

#[tokio::test(flavor = "current_thread")]
async fn a_describe_that_talks_is_loaded_from_a_single_threaded_runtime() {
    let (cfg, _dir) = loud_and_panicking_registry();
    let p = Plugins::open(&cfg).expect("runtime");
    check_loud_and_panicking(&p);
}

/// A plugin that logs without end is cut off at the invocation's budget (the rest counted as
/// dropped in its usage) and fails only with its own error.
#[tokio::test]
async fn a_log_flood_is_capped_per_invocation() {
    let (p, _dir) = registry(&[]);
    let inv = p.parse("hostile-logflood", Vec::new(), one_chunk()).await;
    let err = inv.result.expect_err("the plugin fails by itself");
    assert!(err.to_string().contains("logged 100000 lines"), "{err}");
    assert_eq!(inv.usage.logs_dropped, 100_000 - 1000, "{:?}", inv.usage);
    // The next invocation has a budget of its own.
    let again = p.parse("hostile-logflood", Vec::new(), one_chunk()).await;
    assert_eq!(again.usage.logs_dropped, 100_000 - 1000);
}

/// A plugin that reports progress a million times, with the largest values the interface
/// carries (`done` of `u64::MAX`, past a `total` of zero, or with no total), costs the host
/// nothing that grows with the calls (it keeps only the last report): the invocation succeeds
/// with its own empty table, nothing counts against the log budget, and the process's resident
/// memory does not grow with the calls (measured when the test has its process to itself, under
/// nextest). A flood without end stops at the time limit like any loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_flood_is_bounded_by_the_invocation() {
    let (cfg, _dir) = with_only(&["progressflood", "loud"]);
    let p = Plugins::open(&cfg).expect("runtime");
    // A first, small flood, so what every invocation allocates once is resident before measuring.
    let warm = flood(&p, "1000").await;
    assert_eq!(warm.result.expect("1000 reports").num_rows(), 0);
    let before = resident_bytes();
    let t = Instant::now();
    let inv = flood(&p, "1000000").await;
    let took = t.elapsed();
    let grew = resident_bytes().saturating_sub(before);
    println!(
        "1,000,000 progress reports: {took:?}, resident memory +{} KiB",
        grew >> 10
    );
    let table = inv.result.expect("a million progress reports are no error");
    assert_eq!(table.num_rows(), 0);
    assert_eq!(inv.usage.logs_dropped, 0, "{:?}", inv.usage);
    assert!(took < Duration::from_secs(120), "{took:?}");
    if std::env::var_os("NEXTEST").is_some() {
        // Keeping each report (24 bytes or more) would be 24 MB here.
        assert!(grew < 16 << 20, "resident memory grew {grew} bytes");
    }
    // Without end: stopped at its limit, and the host serves on.
    let short = Plugins::open(&PluginsConfig {
        timeout_secs: 1.0,
        ..cfg
    })
    .expect("runtime");
    let t = Instant::now();
    let inv = flood(&short, "forever").await;
    let err = inv.result.expect_err("an endless flood must not finish");
    assert!(matches!(err, InvokeError::Timeout(_)), "{err}");
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    let (result, _) = run(&short, "hostile-loud").await;
    assert!(result.is_ok(), "{result:?}");
}

/// One invocation of `hostile-progressflood` reporting progress `calls` times.
async fn flood(p: &Plugins, calls: &str) -> lake_host::plugins::Invocation {
    p.parse(
        "hostile-progressflood",
        vec![("calls".to_owned(), calls.to_owned())],
        one_chunk(),
    )
    .await
}

/// The process's resident memory (`VmRSS`), in bytes; 0 where `/proc` does not tell.
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib << 10)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_output_past_its_bounds_fails_the_invocation() {
    let (p, _dir) = registry(&[]);
    let (result, _) = run(&p, "hostile-outflood").await;
    match result {
        Err(InvokeError::Output(m)) => assert!(m.contains("more than 100 batches"), "{m}"),
        other => panic!("200 batches under a bound of 100 must fail: {other:?}"),
    }
    // The same bound in bytes.
    let (cfg, _dir) = with_only(&["outflood"]);
    let cfg = PluginsConfig {
        max_output_bytes: ByteSize(1 << 20),
        ..cfg
    };
    let small = Plugins::open(&cfg).expect("runtime");
    let (result, _) = run(&small, "hostile-outflood").await;
    match result {
        Err(InvokeError::Output(m)) => assert!(m.contains("more than 1048576 bytes"), "{m}"),
        other => panic!("16 MB under a bound of 1 MiB must fail: {other:?}"),
    }
    // A batch of 2^32 - 1 rows without a column is refused before anything is written.
    let (result, took) = run(&p, "hostile-zerocols").await;
    match result {
        Err(InvokeError::Output(m)) => assert!(
            m.contains("without a column") || m.contains("per batch"),
            "{m}"
        ),
        other => panic!("4 billion rows of nothing must fail: {other:?}"),
    }
    assert!(took < Duration::from_secs(30), "{took:?}");
    // The host still serves: a plain parse right after works.
    let (result, _) = run(&p, "hostile-loud").await;
    assert!(result.is_ok(), "{result:?}");
}

/// Output that is no Arrow IPC at all, or a table whose schema changes mid-stream, fails the
/// invocation as the plugin's invalid output, whether the table is held in memory or streamed to a
/// sink (as an upload writes it); the sink is told nothing past the first schema, and the host
/// serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_that_does_not_decode_or_changes_its_schema_is_the_plugins_error() {
    use lake_host::plugins::ErrorKind;
    let (p, _dir) = registry(&[]);
    for (name, says) in [
        ("hostile-badipc", "unreadable Arrow IPC"),
        ("hostile-schemaflip", "different schemas"),
    ] {
        let (result, _) = run(&p, name).await;
        match result {
            Err(e @ InvokeError::Output(_)) => {
                assert!(e.to_string().contains(says), "{name}: {e}");
                assert_eq!(e.kind(), ErrorKind::InvalidOutput, "{name}");
                assert!(!e.is_caller_fault(), "{name}: {e}");
            }
            other => panic!("{name} must fail as invalid output: {other:?}"),
        }
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let into = seen.clone();
        let inv = p
            .parse_into(name, Vec::new(), one_chunk(), move |s, b| {
                let fields: Vec<String> = s.fields().iter().map(|f| f.name().clone()).collect();
                into.lock()
                    .expect("seen")
                    .push((fields, b.map(|b| b.num_rows())));
                Ok(())
            })
            .await;
        match inv.result {
            Err(InvokeError::Output(m)) => assert!(m.contains(says), "{name}: {m}"),
            other => panic!("{name} streamed must fail as invalid output: {other:?}"),
        }
        let seen = seen.lock().expect("seen").clone();
        assert!(
            seen.iter().all(|(fields, _)| fields == &["n"]),
            "{name}: the sink saw a second schema: {seen:?}"
        );
    }
    let (result, _) = run(&p, "hostile-loud").await;
    assert!(result.is_ok(), "{result:?}");
}

/// A guest asleep in a host call runs no code for the epoch to interrupt; its sleep still ends
/// at the time limit, and the invocation with `timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleep_counts_against_the_time_limit() {
    let (p, _dir) = registry(&[]);
    let (result, took) = run(&p, "hostile-sleep").await;
    let err = result.expect_err("a 45 s sleep under a 1 s limit must not finish");
    assert!(matches!(err, InvokeError::Timeout(_)), "{err}");
    assert!(
        took < Duration::from_secs(5),
        "stopped near 1 s, not {took:?}"
    );
    assert_eq!(p.invocations_in_flight(), 0);
}

/// Waits until no invocation holds a slot; how long that took.
async fn settled(p: &Plugins, within: Duration) -> Duration {
    let t = Instant::now();
    while p.invocations_in_flight() > 0 {
        assert!(
            t.elapsed() < within,
            "{} invocations still running after {within:?}",
            p.invocations_in_flight()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.elapsed()
}

/// Sleepers and spinners with a long limit: more than a plugin's share of the instance slots are
/// asked for, yet another plugin's parse is served at once; when their callers go away (their
/// futures dropped, as when an HTTP client hangs up), every one of them stops within moments and
/// gives its slot back, long before its 60 s limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_whose_callers_go_away_stop_and_no_plugin_takes_every_slot() {
    let (cfg, _dir) = with_only(&["sleep", "spin", "loud"]);
    let cfg = PluginsConfig {
        timeout_secs: 60.0,
        ..cfg
    };
    let p = Plugins::open(&cfg).expect("runtime");
    // One caller that goes away from a spinning guest, one from a sleeping one.
    for name in ["hostile-spin", "hostile-sleep"] {
        let gone = tokio::time::timeout(Duration::from_millis(500), run(&p, name)).await;
        assert!(gone.is_err(), "{name} finished under a 60 s limit");
        let took = settled(&p, Duration::from_secs(5)).await;
        println!("{name}: stopped {took:?} after its caller went away");
    }
    // 40 sleepers: more than one plugin's share of the 64 slots.
    let sleepers: Vec<_> = (0..40)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { run(&p, "hostile-sleep").await })
        })
        .collect();
    let t = Instant::now();
    while p.invocations_in_flight() < 32 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "sleepers did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        p.invocations_in_flight(),
        32,
        "one plugin holds at most half of the 64 slots"
    );
    // Another plugin is served while they sleep.
    let t = Instant::now();
    let iris = crate::plugins::parse(
        &p,
        &crate::plugins::shared().join("fixtures/csv/iris.csv"),
        serde_json::json!({}),
    )
    .await
    .expect("csv while 40 sleepers wait");
    assert_eq!(iris.num_rows(), 150);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    for s in &sleepers {
        s.abort();
    }
    let took = settled(&p, Duration::from_secs(5)).await;
    println!("40 sleepers: every slot back {took:?} after their callers went away");
    // The plugin still answers afterwards.
    let (result, _) = run(&p, "hostile-loud").await;
    assert!(result.is_ok(), "{result:?}");
}
