//! Enforces the greppable `Architecture Invariant:` lines of ARCHITECTURE.md.
//!
//! Each rule below quotes its invariant; the first test checks that ARCHITECTURE.md still states
//! every one of them, so the document and this test cannot drift apart silently.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
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
    "Architecture Invariant: only `plugins/runtime.rs` names `wasmtime`.",
    "Architecture Invariant: `http.rs`, `cli.rs` and their submodules never name a driver (`sqlx`, `aws_sdk_s3`) or touch the filesystem for objects; they call `Lake`.",
    "Architecture Invariant: no code issues `UPDATE` or `DELETE` against provenance tables; the schemas reject both with triggers.",
    "Architecture Invariant: no `.unwrap()` or `.expect(` in `host/src`: request and plugin paths return errors, never panic.",
    "Architecture Invariant: every module of `host/src` starts with a `//!` paragraph.",
    "Architecture Invariant: every asset the lake serves is embedded in the binary (`include_str!`/`include_bytes!` of files under `host/src`), and none of them (`.html`, `.css`, `.js`) names a URL outside loopback.",
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
    assert_eq!(files_naming("wasmtime"), ["plugins/runtime.rs"]);
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
            for table in ["PROVENANCE", "PROVENANCE_DATASETS", "LINEAGE_EDGES"] {
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
    let mut stack = vec![root().join("host/src")];
    let mut assets = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .is_some_and(|x| x == "html" || x == "css" || x == "js")
            {
                assets.push(p);
            }
        }
    }
    assert!(!assets.is_empty(), "the docs stylesheet at least");
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
                        .any(|h| host.starts_with(h)),
                    "{} names a remote URL: {}",
                    rel(a),
                    &text[i..(i + 60).min(text.len())]
                );
            }
        }
        let name = a.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert!(
            sources.contains(&format!("include_str!(\"{name}\")"))
                || sources.contains(&format!("include_bytes!(\"{name}\")")),
            "{} is not embedded in the binary",
            rel(a)
        );
    }
}
