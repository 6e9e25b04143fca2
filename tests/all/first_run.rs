//! What a new user meets first, against the real `lake` binary: a first start on an empty
//! `lake-data/` answers at once while the components compile in the background; `/` and `/docs`
//! render in a real headless Chromium with no network; nothing served refers to the internet.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::walkthrough::{Server, repo_root};

/// A `lake serve` in a new empty directory with an empty compiled-component cache, its URL, and
/// every line it logs.
fn start_cold() -> (Server, String, tempfile::TempDir, Arc<Mutex<Vec<String>>>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lake"));
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_remove("LAKE_CONFIG")
        .env_remove("LAKE_PLUGINS__CACHE_DIR")
        .env("LAKE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn lake serve");
    let stderr = child.stderr.take().expect("stderr");
    let server = Server::new(child);
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let keep = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("lake listening on ") {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
            }
            keep.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("lake serve did not listen: {:?}", log.lock()));
    (server, url, dir, log)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_answers_at_once_and_compiles_in_the_background() {
    let started = Instant::now();
    let (_server, url, dir, log) = start_cold();
    let http = client();
    // /health answers while the components compile.
    loop {
        if let Ok(r) = http.get(format!("{url}/health")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no /health within 10 s of starting"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let plugins: serde_json::Value = http
        .get(format!("{url}/plugins"))
        .send()
        .await
        .expect("GET /plugins")
        .json()
        .await
        .expect("json");
    assert!(
        plugins["loading"]["total"]
            .as_u64()
            .is_some_and(|t| t >= 14),
        "GET /plugins says how far loading has come: {plugins}"
    );

    // A parse request waits for its component, then succeeds.
    let r: serde_json::Value = http
        .post(format!("{url}/catalog"))
        .json(&serde_json::json!({"name": "iris", "source": "upload"}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("json");
    let id = r["id"].as_str().expect("id").to_owned();
    let iris = std::fs::read(repo_root().join("../shared/fixtures/csv/iris.csv")).expect("iris");
    let put = http
        .put(format!("{url}/catalog/{id}/files/iris.csv"))
        .body(iris)
        .send()
        .await
        .expect("upload");
    assert!(put.status().is_success(), "{}", put.status());
    let run = http
        .post(format!("{url}/pipelines/run"))
        .json(&serde_json::json!({"plugin": "csv", "inputs": [id]}))
        .send()
        .await
        .expect("run");
    let status = run.status();
    let body: serde_json::Value = run.json().await.expect("json");
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    assert_eq!(body["details"]["rows"], 150, "{body}");

    // The log named what it was compiling and how far it had come.
    let lines = log.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Loading plugin") && l.contains("csv") && l.contains("total=")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("Compiled a component")),
        "a cold cache compiles: {lines:#?}"
    );
    // A default start is clean: no warnings (such as backups in an expiring bucket).
    let warnings: Vec<&String> = lines.iter().filter(|l| l.contains(" WARN ")).collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
    assert!(dir.path().join("lake-data/plugin-cache").is_dir());
}

/// Debian's Chromium, or `None` (after saying so) when it is not installed and not required.
fn chromium() -> Option<String> {
    for bin in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(bin.to_owned());
        }
    }
    if std::env::var("LAKE_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("chromium is not installed but tests/run.sh requires it");
    }
    eprintln!("skipping: chromium is not installed (run the suite with tests/run.sh)");
    None
}

/// The DOM of `url` after headless Chromium rendered it, with the network limited to loopback.
fn rendered(chromium: &str, url: &str) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Anything but loopback fails to resolve, as on a lab machine without internet.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn docs_and_the_front_page_render_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        return;
    };
    let (_server, url, _dir) = crate::walkthrough::start(&[]);
    // The front page is the dashboard.
    let front = rendered(&chromium, &format!("{url}/"));
    assert!(
        front.contains("<h1>Overview</h1>") && front.contains("Datasets per layer"),
        "{front}"
    );
    for page in [format!("{url}/docs")] {
        let dom = rendered(&chromium, &page);
        assert!(dom.contains("API reference"), "{page}: {dom}");
        // The routes and their parameters are on the page, as rendered HTML.
        for text in [
            "/catalog/{id}/files",
            "/layers/promote",
            "/files/merge",
            "file_id_1",
            "id=\"schema-Dataset\"",
        ] {
            assert!(dom.contains(text), "{page} lacks {text}");
        }
    }
}

/// Every `http://` or `https://` URL in a text that is not on a loopback address.
pub(crate) fn remote_urls(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for scheme in ["http://", "https://"] {
        let mut rest = text;
        while let Some(i) = rest.find(scheme) {
            let after = &rest[i + scheme.len()..];
            let host: String = after
                .chars()
                .take_while(|c| !matches!(c, '/' | '"' | '\'' | ' ' | ')' | '<' | '>'))
                .collect();
            let hostname = host.rsplit_once(':').map_or(host.as_str(), |(h, p)| {
                if p.chars().all(|c| c.is_ascii_digit()) {
                    h
                } else {
                    host.as_str()
                }
            });
            if !matches!(hostname, "127.0.0.1" | "localhost" | "[::1]") {
                found.push(format!("{scheme}{host}"));
            }
            rest = after;
        }
    }
    found
}

#[tokio::test]
async fn nothing_served_refers_to_the_internet() {
    assert_eq!(
        remote_urls("a http://127.0.0.1:8080/x b https://cdn.example.org/x.js"),
        ["https://cdn.example.org"]
    );
    let (_server, url, _dir) = crate::walkthrough::start(&[]);
    let http = client();
    let root = http.get(format!("{url}/")).send().await.expect("GET /");
    assert!(root.status().is_redirection(), "{}", root.status());
    assert_eq!(
        root.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("/ui")
    );
    // The HTML, and every stylesheet and script it links to.
    let docs = http.get(format!("{url}/docs")).send().await.expect("docs");
    let csp = docs
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = docs.text().await.expect("html");
    let mut served = vec![(format!("{url}/docs"), html.clone())];
    for attr in ["href=\"/", "src=\""] {
        for part in html.split(attr).skip(1) {
            let link = part.split('"').next().unwrap_or("");
            if link.ends_with(".css") || link.ends_with(".js") {
                let link = format!("/{}", link.trim_start_matches('/'));
                let body = http
                    .get(format!("{url}{link}"))
                    .send()
                    .await
                    .expect("asset")
                    .text()
                    .await
                    .expect("text");
                served.push((link, body));
            }
        }
    }
    assert!(served.len() >= 2, "the page links its stylesheet");
    for (what, body) in &served {
        let remote = remote_urls(body);
        assert!(remote.is_empty(), "{what} refers to {remote:?}");
    }
    assert!(
        !html.contains("<script"),
        "the reference page runs no script"
    );
}
