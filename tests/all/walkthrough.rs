//! Runs the README's curl walkthrough, unchanged, against the real `lake` binary: once on the
//! embedded default and once with `LAKE_*` variables pointing at PostgreSQL and Garage.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub(crate) struct Server(Child);

impl Server {
    /// Owns a started server: dropping it ends that process (and only that one).
    pub(crate) fn new(child: Child) -> Self {
        Self(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only the process this test started, by its handle.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The shell blocks between the walkthrough markers of README.md.
fn walkthrough_script() -> String {
    readme_block("walkthrough")
}

/// The shell blocks between `<!-- NAME:start -->` and `<!-- NAME:end -->` in README.md.
fn readme_block(name: &str) -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let start = readme
        .find(&format!("<!-- {name}:start -->"))
        .expect("start marker");
    let end = readme
        .find(&format!("<!-- {name}:end -->"))
        .expect("end marker");
    let mut script = String::from("set -euo pipefail\n");
    let mut in_block = false;
    for line in readme[start..end].lines() {
        if line.starts_with("```") {
            in_block = !in_block && line.trim() == "```sh";
            continue;
        }
        if in_block {
            script.push_str(line);
            script.push('\n');
        }
    }
    assert!(
        script.lines().count() > 5,
        "the {name} block has no shell code"
    );
    script
}

pub(crate) fn start(envs: &[(String, String)]) -> (Server, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lake"));
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_remove("LAKE_CONFIG")
        .env("LAKE_LOG", "warn")
        // Share the suite's compiled-component cache so each server start skips compiling.
        .env("LAKE_PLUGINS__CACHE_DIR", crate::plugins::shared_cache())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn lake serve");
    let stderr = child.stderr.take().expect("stderr");
    let server = Server(child);
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let url = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("lake serve exited before listening: {seen:?}"))
            .expect("read stderr");
        if let Some(rest) = line.strip_prefix("lake listening on ") {
            break rest.split_whitespace().next().expect("url").to_owned();
        }
        seen.push(line);
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (server, url, dir)
}

fn run_walkthrough(url: &str) -> String {
    run_script(url, &walkthrough_script())
}

fn run_script(url: &str, script: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(repo_root())
        .env("LAKE", url)
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "walkthrough failed:\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn check_output(out: &str) {
    let sha = lake_host::blob::Sha256::of(
        &std::fs::read(repo_root().join("tests/fixtures/GSE16.txt")).expect("fixture"),
    )
    .to_hex();
    assert!(
        out.matches(&sha).count() >= 3,
        "the raw file, its listing and the promoted download must all hash to {sha}:\n{out}"
    );
    assert!(out.contains("\"promotion\""), "{out}");
    assert!(
        out.contains("\"forbidden\""),
        "the raw delete must be refused:\n{out}"
    );
    assert!(out.contains("GSE16 sample page"), "{out}");
}

#[test]
fn readme_walkthrough_on_the_embedded_default() {
    let (_server, url, _dir) = start(&[]);
    check_output(&run_walkthrough(&url));
}

/// `LAKE_*` variables for a server on PostgreSQL and Garage (fresh database and buckets).
pub(crate) fn production_envs() -> Option<Vec<(String, String)>> {
    let s3 = crate::garage_config()?;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let pg = rt.block_on(crate::scratch_pg())?;
    let tag = crate::unique("w");
    let mut envs: Vec<(String, String)> = vec![
        ("LAKE_CATALOG__URL".into(), pg),
        ("LAKE_STORAGE__BACKEND".into(), "s3".into()),
        (
            "LAKE_STORAGE__S3__ENDPOINT".into(),
            s3.endpoint.clone().expect("endpoint"),
        ),
        ("LAKE_STORAGE__S3__REGION".into(), s3.region.clone()),
        (
            "LAKE_STORAGE__S3__ACCESS_KEY_ID".into(),
            s3.access_key_id.clone().expect("key"),
        ),
        (
            "LAKE_STORAGE__S3__SECRET_ACCESS_KEY".into(),
            s3.secret().expect("secret").expose().to_owned(),
        ),
    ];
    for layer in ["raw", "processed", "curated", "archive"] {
        envs.push((
            format!("LAKE_STORAGE__BUCKETS__{}", layer.to_uppercase()),
            format!("{tag}-{layer}"),
        ));
    }
    // The default backup target on S3 is a bucket of its own; one per test keeps runs apart.
    envs.push(("LAKE_BACKUP__BUCKET".into(), format!("{tag}-backups")));
    Some(envs)
}

#[test]
fn readme_walkthrough_on_postgres_and_garage() {
    let Some(envs) = production_envs() else {
        return;
    };
    let (_server, url, _dir) = start(&envs);
    let out = run_walkthrough(&url);
    check_output(&out);
    // On S3 the download answered with a redirect to a presigned URL.
    assert!(
        out.contains("postgres"),
        "health must report the PostgreSQL catalog:\n{out}"
    );
}

/// What the README's files block must print, checked against the fixtures it uploads.
fn check_files_output(out: &str) {
    let expression = std::fs::read_to_string(repo_root().join("tests/fixtures/expression.csv"))
        .expect("fixture");
    let left_rows = expression.lines().count() - 1;
    assert!(out.contains("\"duplicate\":true"), "{out}");
    assert!(
        out.contains(&format!("{{\"cached\":true,\"rows\":{left_rows}}}")),
        "a left join keeps every expression row, and the repeat is cached:\n{out}"
    );
    assert!(
        out.contains(
            "\"schema\":[\"sample_id\",\"gene\",\"tpm\",\"patient_id\",\"tissue\",\"sex\",\"age\"]"
        ),
        "{out}"
    );
    // The saved CSV: a header and one line per row, the unmatched rows with empty sample fields.
    assert!(
        out.contains(
            "sample_id,gene,tpm,patient_id,tissue,sex,age\nS001,TP53,12.4,P01,liver,F,54\n"
        ),
        "{out}"
    );
    assert!(out.contains("S007,TP53,9.6,,,,\n"), "{out}");
    assert!(
        out.contains("expression.csv") && out.contains("samples.csv"),
        "{out}"
    );
}

#[test]
fn readme_files_flow_on_the_embedded_default() {
    let (_server, url, _dir) = start(&[]);
    check_files_output(&run_script(&url, &readme_block("files")));
}

#[test]
fn readme_files_flow_on_postgres_and_garage() {
    let Some(envs) = production_envs() else {
        return;
    };
    let (_server, url, _dir) = start(&envs);
    check_files_output(&run_script(&url, &readme_block("files")));
}

#[test]
fn readme_plugin_example_runs() {
    let (_server, url, _dir) = start(&[]);
    let out = run_script(&url, &readme_block("plugins"));
    assert!(out.contains("\"succeeded\""), "{out}");
    assert!(out.contains("\"rows\": 150"), "{out}");
    assert!(
        out.trim_end().ends_with('1'),
        "select kept one column: {out}"
    );
}

/// What the seed's walkthrough must print: the registered and promoted datasets, the promotion
/// edge with its note, and a backup that succeeded.
fn check_seed_output(out: &str) {
    assert!(
        out.contains("{\"file_count\":1,"),
        "the upload went into the seed-registered dataset:\n{out}"
    );
    assert!(
        out.contains("{\"name\":\"GSE2034 - Breast Cancer Metastasis\",\"layer\":\"raw\"}")
            && out.contains(
                "{\"name\":\"GSE2034 - Breast Cancer Metastasis\",\"layer\":\"processed\"}"
            ),
        "the graph holds both datasets:\n{out}"
    );
    assert!(
        out.contains("\"edges\":[\"promotion\"]")
            && out.contains("{\"action\":\"promotion\",\"notes\":\"RMA normalization applied\"}"),
        "{out}"
    );
    assert!(
        out.contains("{\"status\":\"succeeded\",\"kind\":\"backup\"}"),
        "the backup must succeed on the default target:\n{out}"
    );
}

#[test]
fn the_seed_walkthrough_runs_verbatim_on_the_embedded_default() {
    let (_server, url, _dir) = start(&[]);
    check_seed_output(&run_script(&url, &readme_block("seed")));
}

#[test]
fn the_seed_walkthrough_runs_verbatim_on_postgres_and_garage() {
    let Some(envs) = production_envs() else {
        return;
    };
    let (_server, url, _dir) = start(&envs);
    check_seed_output(&run_script(&url, &readme_block("seed")));
}
