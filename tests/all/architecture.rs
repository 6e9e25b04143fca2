//! Enforces the greppable `Architecture Invariant:` lines of ARCHITECTURE.md.
//!
//! Each rule below quotes its invariant; the first test checks that ARCHITECTURE.md still states
//! every one of them, so the document and this test cannot drift apart silently.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every file below `dir`, sorted.
pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect()
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root().join("host/src"))
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}

/// Source lines that are not comments.
fn code_lines(p: &Path) -> Vec<(usize, String)> {
    std::fs::read_to_string(p)
        .expect("read source")
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l.to_owned()))
        .collect()
}

const INVARIANTS: &[&str] = &[
    "Architecture Invariant: only `catalog/sqlite.rs` and `catalog/postgres.rs` name `sqlx`.",
    "Architecture Invariant: only `blob/s3.rs` names `aws_sdk_s3`.",
    "Architecture Invariant: only `plugins/runtime.rs` and its submodules name `wasmtime`.",
    "Architecture Invariant: `http.rs`, `cli.rs` and their submodules never name a driver (`sqlx`, `aws_sdk_s3`) or touch the filesystem for objects; they call `Lake`.",
    "Architecture Invariant: no code issues `UPDATE` or `DELETE` against provenance tables or the audit log; the schemas reject both with triggers.",
    "Architecture Invariant: no `.unwrap()` or `.expect(` in `host/src`: request and plugin paths return errors, never panic.",
    "Architecture Invariant: every module of `host/src` starts with a `//!` paragraph.",
    "Architecture Invariant: every asset the lake serves is embedded in the binary (`include_str!`/`include_bytes!` of files under `host/src`, the dashboard's files under `host/assets/ui` through the table in `ui/assets.rs`, its templates compiled in by askama), and none of the lake's own (`.html`, `.css`, `.js`, `.svg`) names a URL outside loopback; vendored scripts match their manifest.",
    "Architecture Invariant: provenance parameters are built and read only in `provenance.rs`: outside it (and the catalog adapters, which store and copy entries) no code writes a `NewProvenance {` literal or reads `.parameters[` or `.parameters.get(`.",
    "Architecture Invariant: only `jobs.rs` records, claims, heartbeats or ends jobs (`insert_job`, `start_job`, `heartbeat_job`, `finish_job`, `fail_stale_jobs`).",
    "Architecture Invariant: only `tables.rs` names `parquet`: every Parquet object the lake writes or reads goes through it.",
    "Architecture Invariant: only `iceberg.rs` names `lake_iceberg`: the Iceberg catalog's files are derived and stored in one place.",
    "Architecture Invariant: no control flow on message text: outside `catalog/` no code reads a catalog conflict's message to decide (`Conflict(..)` is matched on its `constraint`), and no plugin is treated differently by its name (a parser opts into parallel parsing through its manifest's `parallel`).",
    "Architecture Invariant: `Lake` is the composition root: `impl Lake` appears only in `lake.rs`; a service is declared with `service!` (its type borrowing the lake, and the lake's one accessor for it) and puts its operations on its own type, in its own module.",
];

#[test]
fn architecture_md_states_every_invariant() {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    for inv in INVARIANTS {
        assert!(doc.contains(inv), "ARCHITECTURE.md no longer states: {inv}");
    }
}

fn files_naming(word: &str) -> Vec<String> {
    rust_files(&root().join("host/src"))
        .into_iter()
        .filter(|p| code_lines(p).iter().any(|(_, l)| l.contains(word)))
        .map(|p| rel(&p))
        .collect()
}

#[test]
fn drivers_stay_in_their_adapters() {
    assert_eq!(
        files_naming("sqlx"),
        ["catalog/postgres.rs", "catalog/sqlite.rs"]
    );
    assert_eq!(files_naming("aws_sdk_s3"), ["blob/s3.rs"]);
    assert_eq!(
        files_naming("wasmtime"),
        ["plugins/runtime/deadline.rs", "plugins/runtime.rs"]
    );
}

#[test]
fn http_and_cli_go_through_the_lake() {
    let src = root().join("host/src");
    let mut files = vec![src.join("http.rs"), src.join("cli.rs")];
    files.extend(rust_files(&src.join("http")));
    files.extend(rust_files(&src.join("cli")));
    assert!(
        files.len() >= 6,
        "the shells and their submodules: {files:?}"
    );
    for path in files {
        let f = rel(&path);
        for (n, l) in code_lines(&path) {
            for banned in [
                "sqlx",
                "aws_sdk_s3",
                "wasmtime",
                "tokio::fs::remove",
                "tokio::fs::write",
                "std::fs::",
            ] {
                assert!(!l.contains(banned), "{f}:{n} names {banned}: {l}");
            }
        }
    }
}

#[test]
fn provenance_is_never_rewritten() {
    for p in rust_files(&root().join("host/src")) {
        for (n, l) in code_lines(&p) {
            let upper = l.to_uppercase();
            for table in [
                "PROVENANCE",
                "PROVENANCE_DATASETS",
                "LINEAGE_EDGES",
                "AUDIT",
            ] {
                assert!(
                    !upper.contains(&format!("UPDATE {table} ")),
                    "{}:{n}: {l}",
                    rel(&p)
                );
                assert!(
                    !upper.contains(&format!("DELETE FROM {table}")),
                    "{}:{n}: {l}",
                    rel(&p)
                );
            }
        }
    }
    for dialect in ["sqlite", "postgres"] {
        let dir = root().join("migrations").join(dialect);
        let all: String = std::fs::read_dir(&dir)
            .expect("migrations")
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect();
        assert!(
            all.contains("append-only"),
            "{dialect} migrations lack the append-only triggers"
        );
    }
}

#[test]
fn no_panics_in_host_code() {
    for p in rust_files(&root().join("host/src")) {
        for (n, l) in code_lines(&p) {
            assert!(
                !l.contains(".unwrap()") && !l.contains(".expect("),
                "{}:{n} may panic: {l}",
                rel(&p)
            );
        }
    }
}

#[test]
fn every_module_has_a_doc_paragraph() {
    for p in rust_files(&root().join("host/src")) {
        let text = std::fs::read_to_string(&p).expect("read");
        assert!(
            text.trim_start().starts_with("//!"),
            "{} has no //! paragraph",
            rel(&p)
        );
    }
}

#[test]
fn served_assets_are_embedded_and_name_no_remote_url() {
    let served = |dir: &str| -> Vec<PathBuf> {
        files_under(&root().join(dir))
            .into_iter()
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "html" || x == "css" || x == "js" || x == "svg")
            })
            // Vendored scripts are held to their manifest (tests/all/dashboard.rs).
            .filter(|p| !p.components().any(|c| c.as_os_str() == "vendor"))
            .collect()
    };
    let mut assets = served("host/src");
    assets.extend(served("host/assets"));
    assets.extend(served("host/templates"));
    assert!(
        assets.len() > 10,
        "the docs stylesheet and the dashboard at least"
    );
    let sources: String = rust_files(&root().join("host/src"))
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read"))
        .collect();
    for a in &assets {
        let text = std::fs::read_to_string(a).expect("read asset");
        for scheme in ["http://", "https://"] {
            for (i, _) in text.match_indices(scheme) {
                let host = &text[i + scheme.len()..];
                assert!(
                    ["127.0.0.1", "localhost", "[::1]"]
                        .iter()
                        .any(|h| host.starts_with(h))
                        // An SVG file names its XML namespace; nothing is fetched from it.
                        || (a.extension().is_some_and(|x| x == "svg")
                            && host.starts_with("www.w3.org/2000/svg\"")),
                    "{} names a remote URL: {}",
                    rel(a),
                    &text[i..(i + 60).min(text.len())]
                );
            }
        }
        let name = a.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let rel_path = a
            .strip_prefix(root())
            .unwrap_or(a)
            .to_string_lossy()
            .replace('\\', "/");
        let embedded = if let Some(t) = rel_path.strip_prefix("host/templates/") {
            // askama compiles a template into the binary from its `path`.
            sources.contains(&format!("path = \"{t}\""))
                || rel_path.ends_with("base.html")
                || rel_path.ends_with("plain.html")
        } else if let Some(f) = rel_path.strip_prefix("host/assets/ui/") {
            sources.contains(&format!("=> \"{f}\""))
        } else {
            sources.contains(&format!("include_str!(\"{name}\")"))
                || sources.contains(&format!("include_bytes!(\"{name}\")"))
        };
        assert!(embedded, "{rel_path} is not embedded in the binary");
    }
}

/// The bundled plugins as `plugins/bundled.txt` lists them: (name, package, kind); the fourth
/// column, `parallel`, is `-` or, for a parser, `delimited-records`.
fn bundled() -> Vec<(String, String, String)> {
    std::fs::read_to_string(root().join("plugins/bundled.txt"))
        .expect("plugins/bundled.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 4, "bundled.txt: {l:?}");
            assert!(
                f[3] == "-" || (f[3] == "delimited-records" && f[2] == "parser"),
                "bundled.txt: {l:?} has no valid parallel column"
            );
            (f[0].to_owned(), f[1].to_owned(), f[2].to_owned())
        })
        .collect()
}

#[test]
fn the_code_map_names_every_host_file_and_bundled_plugin() {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    for p in rust_files(&root().join("host/src")) {
        let r = rel(&p);
        assert!(
            doc.contains(&format!("`host/src/{r}`")) || doc.contains(&format!("`{r}`")),
            "ARCHITECTURE.md's code map does not name host/src/{r}"
        );
    }
    let plugins = bundled();
    assert!(plugins.len() >= 14, "{} bundled plugins", plugins.len());
    let manifest =
        std::fs::read_to_string(root().join("plugins/Cargo.toml")).expect("plugins/Cargo.toml");
    let members_line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("a members line");
    let members: Vec<&str> = members_line.split('"').skip(1).step_by(2).collect();
    let readme =
        std::fs::read_to_string(root().join("plugins/README.md")).expect("plugins/README.md");
    for (name, package, kind) in &plugins {
        assert!(
            doc.contains(&format!("`{name}`")),
            "ARCHITECTURE.md does not name the bundled {kind} `{name}`"
        );
        assert!(
            readme.contains(&format!("`{name}`")),
            "plugins/README.md does not describe the bundled {kind} `{name}`"
        );
        let cargo = std::fs::read_to_string(root().join("plugins").join(name).join("Cargo.toml"))
            .unwrap_or_else(|e| panic!("plugins/{name}/Cargo.toml: {e}"));
        assert!(
            cargo.contains(&format!("name = \"{package}\"")),
            "plugins/{name} is not the package {package}"
        );
        assert!(
            cargo.contains(&format!("\"{kind}\"")),
            "plugins/{name} does not build the SDK's {kind} world"
        );
        assert!(
            members.contains(&name.as_str()),
            "{name} is not a plugins workspace member"
        );
    }
    for m in &members {
        assert!(
            plugins.iter().any(|(n, _, _)| n == m),
            "plugins/{m} is in the workspace but not in plugins/bundled.txt"
        );
    }
}

/// Files under `host/src` (relative names) whose code lines contain any of `words`.
fn files_naming_any(words: &[&str]) -> Vec<String> {
    rust_files(&root().join("host/src"))
        .into_iter()
        .filter(|p| {
            code_lines(p)
                .iter()
                .any(|(_, l)| words.iter().any(|w| l.contains(w)))
        })
        .map(|p| rel(&p))
        .collect()
}

#[test]
fn provenance_records_are_built_and_read_in_provenance_rs() {
    let outside: Vec<String> =
        files_naming_any(&["NewProvenance {", ".parameters[", ".parameters.get("])
            .into_iter()
            .filter(|f| f != "provenance.rs" && !f.starts_with("catalog/"))
            .collect();
    assert!(
        outside.is_empty(),
        "provenance parameters built or read outside provenance.rs: {outside:?}"
    );
    assert!(
        files_naming_any(&["NewProvenance {"]).contains(&"provenance.rs".to_owned()),
        "the check looks for the right words"
    );
}

#[test]
fn only_jobs_rs_drives_jobs() {
    let callers: Vec<String> = files_naming_any(&[
        ".insert_job(",
        ".start_job(",
        ".heartbeat_job(",
        ".finish_job(",
        ".fail_stale_jobs(",
    ])
    .into_iter()
    .filter(|f| !f.starts_with("catalog"))
    .collect();
    assert_eq!(callers, ["jobs.rs"]);
}

#[test]
fn only_tables_rs_names_parquet() {
    assert_eq!(files_naming_any(&["parquet::"]), ["tables.rs"]);
    assert_eq!(files_naming("lake_iceberg"), ["iceberg.rs"]);
}

#[test]
fn lake_is_a_composition_root() {
    assert_eq!(
        files_naming_any(&["impl Lake {", "impl Lake<"]),
        ["lake.rs"]
    );
    let services = files_naming_any(&["crate::lake::service!"]);
    for module in [
        "backup.rs",
        "collect.rs",
        "files.rs",
        "jobs.rs",
        "pipeline.rs",
        "promotion.rs",
    ] {
        assert!(
            services.contains(&module.to_owned()),
            "{module} declares no service: {services:?}"
        );
    }
}

#[test]
fn decisions_never_read_message_text() {
    for p in rust_files(&root().join("host/src")) {
        let f = rel(&p);
        if f.starts_with("catalog") {
            continue;
        }
        let lines = code_lines(&p);
        for (i, (n, l)) in lines.iter().enumerate() {
            // A conflict arm and the few lines of its guard.
            if l.contains("Conflict(") {
                for (_, g) in lines.iter().skip(i).take(3) {
                    assert!(
                        !g.contains(".contains(") && !g.contains("starts_with("),
                        "{f}:{n} decides on a conflict's message: {g}"
                    );
                }
            }
            for name in ["\"csv\"", "\"merge\"", "\"xlsx\""] {
                assert!(
                    !(l.contains("manifest.name ==") && l.contains(name)),
                    "{f}:{n} treats a plugin by its name: {l}"
                );
            }
        }
    }
}
