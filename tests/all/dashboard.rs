//! The dashboard in a real browser: Debian's Chromium driven through WebDriver (chromedriver, on
//! loopback) against the real `lake serve`, on a lake seeded over its own API. Each test saves a
//! full-page screenshot under `target/dashboard/`. The browser may resolve nothing but
//! 127.0.0.1, and every page checks that it logged no JavaScript error (CSP violations included)
//! and loaded nothing from another origin.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::walkthrough::Server;

/// A chromedriver this test started, ended by its handle when dropped.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver leads a process group of its own, which the browser it started joins: a
        // test that failed before closing its session leaves no browser behind.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn installed(bin: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A browser session on a fresh chromedriver, or `None` (after saying so) when Chromium is not
/// installed and the suite does not require it.
async fn browser() -> Option<(Client, Driver)> {
    if !installed("chromedriver") || !installed("chromium") {
        if std::env::var("LAKE_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("chromium and chromedriver are not installed but tests/run.sh requires them");
        }
        eprintln!("skipping: chromium is not installed (run the suite with tests/run.sh)");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new("chromedriver")
        .process_group(0)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let profile = tempfile::tempdir().expect("profile");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _profile: profile,
    };
    let http = reqwest::Client::new();
    let started = Instant::now();
    while http
        .get(format!("{}/status", driver.url))
        .send()
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let caps = json!({
        "browserName": "chrome",
        "goog:loggingPrefs": {"browser": "ALL"},
        "goog:chromeOptions": {
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-quic", "--window-size=1280,900",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                format!("--user-data-dir={}", driver._profile.path().display()),
            ]
        }
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("WebDriver session");
    Some((client, driver))
}

/// What the page logged at level SEVERE (uncaught errors, failed loads, CSP violations).
async fn severe_logs(c: &Client, driver: &Driver) -> Vec<String> {
    let sid = c.session_id().await.ok().flatten().expect("session id");
    let resp: Value = reqwest::Client::new()
        .post(format!("{}/session/{sid}/se/log", driver.url))
        .json(&json!({"type": "browser"}))
        .send()
        .await
        .expect("browser log")
        .json()
        .await
        .expect("log json");
    resp["value"]
        .as_array()
        .expect("log entries")
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Every resource the page loaded, by URL.
async fn resources(c: &Client) -> Vec<String> {
    let v = c
        .execute(
            "return performance.getEntriesByType('resource').map(e => e.name).concat([location.href]);",
            vec![],
        )
        .await
        .expect("resources");
    v.as_array()
        .expect("array")
        .iter()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// Checks a page as a person would meet it: it loaded, logged no error, fetched nothing from
/// elsewhere; then saves its screenshot.
async fn check_page(c: &Client, d: &Driver, lake: &str, name: &str) {
    let logs = severe_logs(c, d).await;
    assert!(
        logs.is_empty(),
        "{name}: the browser logged errors: {logs:#?}"
    );
    for r in resources(c).await {
        assert!(
            r.starts_with(lake),
            "{name}: loaded {r}, which is not the lake"
        );
    }
    let poor = c.execute(CONTRAST, vec![]).await.expect("contrast check");
    assert_eq!(
        poor,
        json!([]),
        "{name}: text below WCAG AA contrast, or a coloured mark without its text"
    );
    screenshot(c, name).await;
}

/// Every visible piece of text on the page whose contrast with what is behind it is below WCAG
/// AA (4.5:1, or 3:1 for large text), and every coloured mark (layer, state) that has no text of
/// its own, so colour never carries meaning alone: the list of offenders (empty when all is well).
const CONTRAST: &str = r#"
const rgba = (s) => { const m = s.match(/[\d.]+/g) || []; return m.map(Number).concat([1]).slice(0, 4); };
const lum = ([r, g, b]) => {
  const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
};
const behind = (el) => {
  for (let e = el; e; e = e.parentElement) {
    const c = rgba(getComputedStyle(e).backgroundColor);
    if (c[3] > 0.5) return c;
  }
  return [255, 255, 255, 1];
};
const out = [];
for (const el of document.querySelectorAll('body *')) {
  if (el.closest('svg, canvas, script, style, noscript, [hidden]')) continue;
  const own = Array.from(el.childNodes).some((n) => n.nodeType === 3 && n.textContent.trim());
  if (!own) continue;
  const r = el.getBoundingClientRect();
  const st = getComputedStyle(el);
  if (r.width === 0 || r.height === 0 || st.visibility === 'hidden') continue;
  const fg = rgba(st.color), bg = behind(el);
  const [a, b] = [lum(fg), lum(bg)];
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  const size = parseFloat(st.fontSize), bold = parseInt(st.fontWeight, 10) >= 700;
  const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
  if (ratio < need) {
    out.push(`${el.tagName.toLowerCase()}.${el.className} "${el.textContent.trim().slice(0, 40)}": ${st.color} on rgba(${bg}) = ${ratio.toFixed(2)}`);
  }
}
for (const el of document.querySelectorAll('.layer, .state')) {
  if (!el.textContent.trim()) out.push(`${el.className}: a coloured mark without text`);
}
return out;
"#;

/// A full-page screenshot under `target/dashboard/NAME.png`.
async fn screenshot(c: &Client, name: &str) {
    let height = c
        .execute("return document.documentElement.scrollHeight;", vec![])
        .await
        .ok()
        .and_then(|v| v.as_u64())
        .unwrap_or(900)
        .clamp(600, 6000);
    let _ = c.set_window_size(1280, height as u32 + 140).await;
    let png = c.screenshot().await.expect("screenshot");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../dashboard");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    let _ = c.set_window_size(1280, 900).await;
}

/// Waits (up to 15 s) for `check` to hold on the page; on a timeout, says what the page shows.
async fn until<F, Fut>(c: &Client, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        if started.elapsed() > Duration::from_secs(15) {
            let shown = text_of(c, "body").await;
            screenshot(c, "timed-out").await;
            panic!("timed out waiting for {what}; the page shows:\n{shown}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// A seeded lake: two uploaded tables and a chain of four `select` runs from the first, so the
/// lineage around the middle reaches further at every depth.
struct Seeded {
    _server: Server,
    url: String,
    dir: tempfile::TempDir,
    samples: String,
    measurements: String,
    chain: Vec<String>,
}

async fn call(url: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let http = reqwest::Client::new();
    let mut req = http.request(method, format!("{url}{path}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

async fn upload(url: &str, name: &str, body: String) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{url}/files/upload?filename={name}"))
        .body(body)
        .send()
        .await
        .expect("upload");
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.json().await.expect("json")
}

async fn seeded(envs: &[(String, String)]) -> Seeded {
    let (server, url, dir) = crate::walkthrough::start(envs);
    // Every component loaded (from the suite's shared cache, or compiled once), so no page waits
    // for one.
    let started = Instant::now();
    while call(&url, reqwest::Method::GET, "/plugins", None).await["loading"]["done"] != true {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the plugins did not load"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut samples = String::from("sample_id,condition,value\n");
    let mut measurements = String::from("sample_id,gene,count\n");
    for i in 0..60 {
        samples.push_str(&format!(
            "S{i:03},{},{}.5\n",
            if i % 2 == 0 { "control" } else { "treated" },
            i
        ));
        measurements.push_str(&format!("S{i:03},BRCA{},{}\n", i % 3 + 1, i * 7));
    }
    let s = upload(&url, "samples.csv", samples).await;
    let m = upload(&url, "measurements.csv", measurements).await;
    let samples = s["dataset_ids"]["table"]
        .as_str()
        .expect("table")
        .to_owned();
    let measurements = m["dataset_ids"]["table"]
        .as_str()
        .expect("table")
        .to_owned();
    let mut chain = Vec::new();
    let mut from = samples.clone();
    for (i, cols) in [
        vec!["sample_id", "condition", "value"],
        vec!["sample_id", "value"],
        vec!["sample_id"],
        vec!["sample_id"],
    ]
    .into_iter()
    .enumerate()
    {
        let run = call(
            &url,
            reqwest::Method::POST,
            "/pipelines/run",
            Some(json!({"plugin": "select", "inputs": [from], "params": {"columns": cols}, "name": format!("step {i}")})),
        )
        .await;
        from = run["output"].as_str().expect("output").to_owned();
        chain.push(from.clone());
    }
    Seeded {
        _server: server,
        url,
        dir,
        samples,
        measurements,
        chain,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_opens_without_errors_and_loads_only_from_the_lake() {
    let Some((c, d)) = browser().await else {
        return;
    };
    let lake = seeded(&[]).await;
    let url = &lake.url;
    // `/` leads to the dashboard.
    c.goto(&format!("{url}/")).await.expect("goto /");
    assert_eq!(c.current_url().await.expect("url").path(), "/ui");
    let pages = [
        ("overview", "/ui".to_owned(), "Overview"),
        ("catalog", "/ui/catalog".to_owned(), "Catalog"),
        (
            "dataset",
            format!("/ui/datasets/{}", lake.chain[1]),
            "Lineage",
        ),
        ("layers", "/ui/layers".to_owned(), "Promote a dataset"),
        ("files", "/ui/files".to_owned(), "Upload a table"),
        ("collections", "/ui/collections".to_owned(), "Sources"),
        ("runs", "/ui/runs".to_owned(), "Pipeline runs"),
        ("backups", "/ui/backups".to_owned(), "Back up now"),
        ("admin", "/ui/admin".to_owned(), "Tokens"),
    ];
    for (name, path, expect) in pages {
        c.goto(&format!("{url}{path}")).await.expect("goto");
        let body = text_of(&c, "body").await;
        assert!(body.contains(expect), "{name} lacks {expect:?}: {body}");
        if name == "dataset" {
            until(&c, "the lineage graph", || async {
                !text_of(&c, "#graph-status").await.is_empty()
                    && !text_of(&c, "#graph-status").await.contains("Loading")
            })
            .await;
        }
        check_page(&c, &d, url, name).await;
    }
    // The overview's charts count what the lake holds: 2 raw uploads, 6 processed tables.
    c.goto(&format!("{url}/ui")).await.expect("goto");
    let total = text_of(&c, "#total-datasets").await;
    assert_eq!(total, "8", "datasets on the overview");
    let svg = c
        .find(Locator::Css("svg.chart title"))
        .await
        .expect("a chart")
        .html(true)
        .await
        .expect("title");
    assert!(svg.contains("Datasets per layer"), "{svg}");
    c.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_in_the_catalog_search_changes_the_rows_and_the_url() {
    let Some((c, d)) = browser().await else {
        return;
    };
    let lake = seeded(&[]).await;
    let url = &lake.url;
    c.goto(&format!("{url}/ui/catalog")).await.expect("goto");
    let rows = || async {
        c.find_all(Locator::Css("#datasets tbody tr"))
            .await
            .map(|r| r.len())
            .unwrap_or(0)
    };
    let before = rows().await;
    assert_eq!(before, 8, "every dataset at first");
    let q = c.find(Locator::Css("#q")).await.expect("search box");
    q.send_keys("measurements").await.expect("type");
    until(&c, "the rows to narrow", || async {
        let n = rows().await;
        n > 0 && n < before
    })
    .await;
    for r in c
        .find_all(Locator::Css("#datasets tbody tr td:first-child"))
        .await
        .expect("rows")
    {
        let t = r.text().await.expect("text");
        assert!(t.contains("measurements"), "{t}");
    }
    until(&c, "the query in the URL", || async {
        c.current_url()
            .await
            .is_ok_and(|u| u.query().unwrap_or("").contains("q=measurements"))
    })
    .await;
    // The URL reproduces the view.
    let shared = c.current_url().await.expect("url").to_string();
    c.goto(&shared).await.expect("goto shared");
    assert!(rows().await < before);
    // No match says so, unlike an empty lake.
    let q = c.find(Locator::Css("#q")).await.expect("search box");
    q.clear().await.expect("clear");
    q.send_keys("zzzz-nothing").await.expect("type");
    until(&c, "the no-match message", || async {
        c.find(Locator::Css("#no-match")).await.is_ok()
    })
    .await;
    // Creation dates: nothing was made in 2000; everything today.
    c.goto(&format!("{url}/ui/catalog?to=2000-01-01"))
        .await
        .expect("goto");
    assert!(c.find(Locator::Css("#no-match")).await.is_ok());
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    c.goto(&format!("{url}/ui/catalog?from={today}&to={today}"))
        .await
        .expect("goto");
    assert_eq!(rows().await, before, "made today");
    let count = text_of(&c, "#count").await;
    assert!(count.starts_with("8 matching datasets"), "{count}");
    check_page(&c, &d, url, "catalog-search").await;
    c.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_is_searched_and_a_dataset_opened_with_the_keyboard_alone() {
    let Some((c, d)) = browser().await else {
        return;
    };
    let lake = seeded(&[]).await;
    let url = &lake.url;
    c.goto(&format!("{url}/ui/catalog")).await.expect("goto");
    const TAB: &str = "\u{E004}";
    const ENTER: &str = "\u{E007}";
    let focused = || async {
        c.execute(
            "const e = document.activeElement; \
             return [e.id || '', e.tagName.toLowerCase(), e.getAttribute('href') || '', \
                     getComputedStyle(e).outlineStyle];",
            vec![],
        )
        .await
        .expect("active element")
    };
    // Tab from the top of the page: the first stop skips to the content, and the search box is
    // reached in a few more, every stop showing where the focus is.
    let tab = || async {
        c.active_element()
            .await
            .expect("focus")
            .send_keys(TAB)
            .await
            .expect("tab");
    };
    tab().await;
    let first = focused().await;
    assert_eq!(
        first[2],
        json!("#main"),
        "the first stop skips to the content: {first}"
    );
    let mut stops = 0;
    loop {
        tab().await;
        stops += 1;
        let now = focused().await;
        assert_ne!(
            now[3],
            json!("none"),
            "a stop without a visible focus: {now}"
        );
        if now[0] == json!("q") {
            break;
        }
        assert!(stops < 20, "the search box is not reachable by Tab: {now}");
    }
    c.active_element()
        .await
        .expect("focus")
        .send_keys("measurements")
        .await
        .expect("type");
    until(&c, "the rows to narrow", || async {
        text_of(&c, "#count").await.contains("matching")
    })
    .await;
    // On through the filters to the first dataset, and open it with Enter.
    let mut stops = 0;
    loop {
        tab().await;
        stops += 1;
        let now = focused().await;
        if now[2]
            .as_str()
            .is_some_and(|h| h.starts_with("/ui/datasets/"))
        {
            break;
        }
        assert!(stops < 30, "no dataset link is reachable by Tab: {now}");
    }
    c.active_element()
        .await
        .expect("focus")
        .send_keys(ENTER)
        .await
        .expect("enter");
    until(&c, "the dataset page", || async {
        c.find(Locator::Css("#files")).await.is_ok()
    })
    .await;
    let title = text_of(&c, "h1").await;
    assert!(
        title.contains("measurements"),
        "a dataset found opened: {title}"
    );
    check_page(&c, &d, url, "keyboard-dataset").await;
    c.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dataset_page_shows_rows_files_and_a_graph_that_grows_with_depth() {
    let Some((c, d)) = browser().await else {
        return;
    };
    let lake = seeded(&[]).await;
    let url = &lake.url;
    let files = call(
        url,
        reqwest::Method::GET,
        &format!("/catalog/{}/files", lake.samples),
        None,
    )
    .await;
    let sha = files[0]["sha256"].as_str().expect("sha").to_owned();
    c.goto(&format!("{url}/ui/datasets/{}", lake.samples))
        .await
        .expect("goto");
    let preview = c
        .find_all(Locator::Css("#preview tbody tr"))
        .await
        .expect("preview");
    assert_eq!(preview.len(), 20, "the first 20 rows");
    let first = preview[0].text().await.expect("row");
    assert!(
        first.contains("S000") && first.contains("control"),
        "{first}"
    );
    let files = text_of(&c, "#files").await;
    assert!(files.contains(&sha), "{files} lacks {sha}");
    // The middle of the chain: depth 1 reaches its neighbours, depth 3 the raw upload.
    c.goto(&format!("{url}/ui/datasets/{}", lake.chain[1]))
        .await
        .expect("goto");
    let nodes = |want: &'static str| {
        let c = c.clone();
        async move {
            c.find(Locator::Css("#graph"))
                .await
                .ok()?
                .attr("data-nodes")
                .await
                .ok()
                .flatten()
                .filter(|_| !want.is_empty())
                .and_then(|n| n.parse::<usize>().ok())
        }
    };
    let depth = c.find(Locator::Css("#depth")).await.expect("depth");
    depth.select_by_value("1").await.expect("depth 1");
    until(&c, "the depth-1 graph", || async {
        text_of(&c, "#graph-status").await.contains("depth 1")
    })
    .await;
    let one = nodes("1").await.expect("nodes at depth 1");
    depth.select_by_value("3").await.expect("depth 3");
    until(&c, "the depth-3 graph", || async {
        text_of(&c, "#graph-status").await.contains("depth 3")
    })
    .await;
    let three = nodes("3").await.expect("nodes at depth 3");
    assert_eq!(one, 3, "the dataset and its two neighbours");
    assert!(three > one, "depth 3 shows more: {three} vs {one}");
    let drawn = c
        .execute(
            "return document.querySelectorAll('#graph canvas').length;",
            vec![],
        )
        .await
        .expect("canvas");
    assert!(drawn.as_u64().unwrap_or(0) > 0, "cytoscape drew the graph");
    check_page(&c, &d, url, "dataset").await;
    c.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promoting_from_the_layers_page_records_the_note_in_the_timeline() {
    let Some((c, d)) = browser().await else {
        return;
    };
    let lake = seeded(&[]).await;
    let url = &lake.url;
    c.goto(&format!("{url}/ui/datasets/{}", lake.measurements))
        .await
        .expect("goto");
    c.find(Locator::Css("#promote-link"))
        .await
        .expect("a promote link")
        .click()
        .await
        .expect("click");
    let target = c.find(Locator::Css("#target_layer")).await.expect("target");
    target.select_by_value("curated").await.expect("curated");
    c.find(Locator::Css("#note"))
        .await
        .expect("note")
        .send_keys("checked against the plate map by the PI")
        .await
        .expect("type");
    c.find(Locator::Css("#promote-ask"))
        .await
        .expect("ask")
        .click()
        .await
        .expect("click");
    let implies = text_of(&c, "#promote-implies").await;
    assert!(
        implies.contains("curated") && implies.contains("vouches"),
        "the confirmation says what curated implies: {implies}"
    );
    c.find(Locator::Css("#promote-go"))
        .await
        .expect("go")
        .click()
        .await
        .expect("click");
    let link = c
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css("#done-link"))
        .await
        .expect("the promoted dataset");
    screenshot(&c, "layers-promoted").await;
    link.click().await.expect("open it");
    until(&c, "the promoted dataset's page", || async {
        text_of(&c, "#timeline").await.contains("promotion")
    })
    .await;
    let timeline = text_of(&c, "#timeline").await;
    assert!(
        timeline.contains("checked against the plate map by the PI"),
        "{timeline}"
    );
    let facts = text_of(&c, ".facts").await;
    assert!(facts.contains("curated"), "{facts}");
    check_page(&c, &d, url, "promoted-dataset").await;
    // The Layers page's promotions are read from provenance: who moved what, where, and why.
    c.goto(&format!("{url}/ui/layers")).await.expect("goto");
    let promotions = text_of(&c, "#promotions").await;
    assert!(
        promotions.contains("checked against the plate map by the PI")
            && promotions.contains("curated")
            && promotions.contains(lake.measurements.as_str()),
        "{promotions}"
    );
    c.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_uploaded_and_merged_in_the_files_page_is_saved_and_opens() {
    let Some((c, d)) = browser().await else {
        return;
    };
    let lake = seeded(&[]).await;
    let url = &lake.url;
    let path = lake.dir.path().join("conditions.csv");
    let mut csv = String::from("sample_id,batch\n");
    for i in 0..60 {
        csv.push_str(&format!("S{i:03},B{}\n", i % 4));
    }
    std::fs::write(&path, csv).expect("write");
    c.goto(&format!("{url}/ui/files")).await.expect("goto");
    c.find(Locator::Css("#file"))
        .await
        .expect("file input")
        .send_keys(&path.display().to_string())
        .await
        .expect("choose file");
    c.find(Locator::Css("#upload button[type=submit]"))
        .await
        .expect("upload button")
        .click()
        .await
        .expect("click");
    until(&c, "the uploaded file in the list", || async {
        text_of(&c, "#uploads").await.contains("conditions.csv")
    })
    .await;
    // Merge it with samples.csv on sample_id.
    let pick = |sel: &'static str, file: &'static str| {
        let c = c.clone();
        async move {
            let s = c.find(Locator::Css(sel)).await.expect("select");
            for o in s.find_all(Locator::Css("option")).await.expect("options") {
                if o.text().await.unwrap_or_default().starts_with(file) {
                    o.click().await.expect("pick");
                    return;
                }
            }
            panic!("{file} is not offered in {sel}");
        }
    };
    pick("#left", "samples.csv").await;
    pick("#right", "conditions.csv").await;
    let keys = text_of(&c, "#on").await;
    assert!(keys.contains("sample_id"), "key columns offered: {keys}");
    c.find(Locator::Css("#merge button[type=submit]"))
        .await
        .expect("merge")
        .click()
        .await
        .expect("click");
    until(&c, "the merge preview", || async {
        text_of(&c, "#merge-rows").await.contains("60 rows")
    })
    .await;
    let head = text_of(&c, "#merge-preview thead").await;
    assert!(
        head.contains("batch") && head.contains("condition"),
        "{head}"
    );
    let name = c.find(Locator::Css("#save-name")).await.expect("name");
    name.clear().await.expect("clear");
    name.send_keys("samples with batches").await.expect("type");
    c.find(Locator::Css("#save button[type=submit]"))
        .await
        .expect("save")
        .click()
        .await
        .expect("click");
    let link = c
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css("#done-link"))
        .await
        .expect("the saved dataset");
    screenshot(&c, "files-merged").await;
    link.click().await.expect("open");
    until(&c, "the saved dataset's preview", || async {
        text_of(&c, "#preview").await.contains("B0")
    })
    .await;
    check_page(&c, &d, url, "saved-merge").await;
    c.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_triggered_from_the_page_succeeds() {
    let Some((c, d)) = browser().await else {
        return;
    };
    let lake = seeded(&[]).await;
    let url = &lake.url;
    c.goto(&format!("{url}/ui/backups")).await.expect("goto");
    c.find(Locator::Css("#backup-now"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
    let started = Instant::now();
    loop {
        let jobs = text_of(&c, "#backup-table tbody tr").await;
        if jobs.contains("succeeded") {
            break;
        }
        assert!(!jobs.contains("failed"), "the backup failed: {jobs}");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no succeeded backup within 60 s: {jobs}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    c.refresh().await.expect("reload");
    let kept = text_of(&c, "#backups").await;
    assert!(!kept.is_empty(), "the backup is listed");
    // Verified from the page: every object read back.
    c.find(Locator::Css("#backups button.verify"))
        .await
        .expect("verify button")
        .click()
        .await
        .expect("click");
    until(&c, "the verification", || async {
        text_of(&c, "#verify-result").await.contains("verified")
    })
    .await;
    let verified = text_of(&c, "#verified").await;
    assert!(verified.contains("every one as recorded"), "{verified}");
    check_page(&c, &d, url, "backups").await;
    c.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_sees_no_promote_button_and_a_forged_post_is_refused() {
    let Some((c, d)) = browser().await else {
        return;
    };
    let envs = [("LAKE_AUTH__MODE".to_owned(), "tokens".to_owned())];
    let (_server, url, dir) = crate::walkthrough::start(&envs);
    let dir = dir.path();
    let (ok, out, err) = crate::cli::lake(dir, &["admin", "bootstrap"]);
    assert!(ok, "{err}");
    let admin: Value = serde_json::from_str(&out).expect("json");
    let admin = admin["token"].as_str().expect("token").to_owned();
    let http = reqwest::Client::new();
    let up = http
        .post(format!("{url}/files/upload?filename=plate.csv"))
        .bearer_auth(&admin)
        .body("well,od\nA1,0.5\nA2,0.7\n")
        .send()
        .await
        .expect("upload");
    let up: Value = up.json().await.expect("json");
    let table = up["dataset_ids"]["table"]
        .as_str()
        .expect("table")
        .to_owned();
    let (ok, _, err) = crate::cli::lake(dir, &["user", "add", "rita", "--role", "reader"]);
    assert!(ok, "{err}");
    let (ok, out, err) = crate::cli::lake(
        dir,
        &["token", "create", "--owner", "rita", "--role", "reader"],
    );
    assert!(ok, "{err}");
    let reader: Value = serde_json::from_str(&out).expect("json");
    let reader = reader["token"].as_str().expect("token").to_owned();

    // Not signed in: the sign-in page, then back where the reader was going.
    c.goto(&format!("{url}/ui/layers")).await.expect("goto");
    c.find(Locator::Css("#token"))
        .await
        .expect("sign-in form")
        .send_keys(&reader)
        .await
        .expect("type");
    c.find(Locator::Css("form button[type=submit]"))
        .await
        .expect("button")
        .click()
        .await
        .expect("sign in");
    until(&c, "the layers page", || async {
        text_of(&c, "h1").await == "Layers"
    })
    .await;
    // The only error so far: the sign-in page's own 401.
    let logs = severe_logs(&c, &d).await;
    assert!(
        logs.iter()
            .all(|l| l.contains("/ui/layers") && l.contains("401")),
        "{logs:#?}"
    );
    let who = text_of(&c, ".who").await;
    assert!(who.contains("rita") && who.contains("reader"), "{who}");
    assert!(
        c.find(Locator::Css("#promote")).await.is_err(),
        "a reader is offered no promotion"
    );
    c.goto(&format!("{url}/ui/datasets/{table}"))
        .await
        .expect("goto");
    assert!(c.find(Locator::Css("#promote-link")).await.is_err());
    check_page(&c, &d, &url, "reader-dataset").await;
    // A POST the page never offered, with the page's own CSRF token: the server refuses it.
    let status = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
            const csrf = JSON.parse(document.body.getAttribute('hx-headers'))['x-csrf-token'];
            fetch('/ui/layers/promote', {method: 'POST', credentials: 'same-origin',
                headers: {'x-csrf-token': csrf, 'content-type': 'application/x-www-form-urlencoded'},
                body: 'dataset_id=' + arguments[0] + '&target_layer=curated&note=sneaky'})
              .then(r => done(r.status), e => done(String(e)));"#,
            vec![Value::String(table.clone())],
        )
        .await
        .expect("forged post");
    assert_eq!(status, json!(403), "a reader's forged promotion");
    // A change the reader may make, without the page's CSRF token: refused, nothing made.
    let answer = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
            fetch('/ui/admin/tokens', {method: 'POST', credentials: 'same-origin',
                headers: {'content-type': 'application/x-www-form-urlencoded'}, body: 'name=forged&role=reader'})
              .then(r => r.text().then(t => done([r.status, t])), e => done(String(e)));"#,
            vec![],
        )
        .await
        .expect("forged post");
    assert_eq!(answer[0], json!(403), "no CSRF token: {answer}");
    assert!(
        answer[1]
            .as_str()
            .unwrap_or("")
            .contains("did not come from a page"),
        "{answer}"
    );
    // The JSON API never takes the dashboard's cookie as a credential.
    let status = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
            fetch('/catalog', {credentials: 'same-origin'}).then(r => done(r.status), e => done(String(e)));"#,
            vec![],
        )
        .await
        .expect("api call");
    assert_eq!(status, json!(401), "the API asks for a bearer token");
    // The refusal is in the audit log.
    let audit: Value = http
        .get(format!("{url}/audit?decision=refused&principal=rita"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    assert!(
        audit["items"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["route"] == "/ui/layers/promote")),
        "{audit}"
    );
    c.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_at_the_oidc_issuer_opens_the_dashboard_as_that_person() {
    let Some(python) = crate::service_var("LAKE_TEST_PYTHON") else {
        return;
    };
    let Some((c, d)) = browser().await else {
        return;
    };
    let provider = crate::identity::Provider::start(&python, 600).await;
    provider
        .set_claims("ada", json!({"groups": ["lab-curators"]}))
        .await;
    provider
        .set_claims("eve", json!({"groups": ["elsewhere"]}))
        .await;
    let (_server, url, _dirs) = crate::identity::oidc_lake(&provider, 60);

    // Not signed in: the sign-in page offers the issuer; the issuer's own form signs Ada in, and
    // the browser comes back to the page it wanted, as Ada with her group's role.
    let sign_in = |who: &'static str| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            c.goto(&format!("{url}/ui/catalog?q=plate"))
                .await
                .expect("goto");
            c.find(Locator::Css("#oidc-sign-in"))
                .await
                .expect("the issuer's sign-in button")
                .click()
                .await
                .expect("click");
            let sub = c
                .wait()
                .at_most(Duration::from_secs(15))
                .for_element(Locator::Css("input[name=sub]"))
                .await
                .expect("the issuer's form");
            sub.send_keys(who).await.expect("type");
            c.find(Locator::Css("form button[type=submit]"))
                .await
                .expect("authorize")
                .click()
                .await
                .expect("click");
        }
    };
    sign_in("ada").await;
    until(&c, "the catalog as Ada", || async {
        text_of(&c, "h1").await == "Catalog"
    })
    .await;
    let here = c.current_url().await.expect("url");
    assert!(
        here.as_str()
            .starts_with(&format!("{url}/ui/catalog?q=plate")),
        "back to the page asked for: {here}"
    );
    let who = text_of(&c, ".who").await;
    assert!(who.contains("ada") && who.contains("curator"), "{who}");
    screenshot(&c, "oidc-signed-in").await;

    // Someone whose groups map to no role: back to the sign-in page, saying why.
    c.execute(
        "document.querySelector('form[action=\"/ui/sign-out\"]').submit();",
        vec![],
    )
    .await
    .expect("sign out");
    until(&c, "signed out", || async {
        c.find(Locator::Css("#oidc-sign-in")).await.is_ok()
    })
    .await;
    sign_in("eve").await;
    until(&c, "Eve refused", || async {
        text_of(&c, ".problem").await.contains("map to no role")
    })
    .await;
    // A return the browser never began: refused, not signed in.
    c.goto(&format!(
        "{url}/ui/sign-in/oidc/callback?code=forged&state=forged"
    ))
    .await
    .expect("goto");
    let problem = text_of(&c, ".problem").await;
    assert!(problem.contains("sign in again"), "{problem}");
    c.goto(&format!("{url}/ui/catalog")).await.expect("goto");
    assert!(
        c.find(Locator::Css("#oidc-sign-in")).await.is_ok(),
        "still signed out"
    );
    // What the browser logged: only the lake's own refusals (401 and 400), nothing else of ours.
    let logs = severe_logs(&c, &d).await;
    assert!(
        logs.iter()
            .filter(|l| l.contains(&url))
            .all(|l| l.contains("401") || l.contains("400")),
        "{logs:#?}"
    );
    c.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_run_from_the_page_shows_its_outcome_and_requests() {
    let Some((c, d)) = browser().await else {
        return;
    };
    let (geo, seen) = crate::sources::geo_upstream().await;
    let conf = tempfile::tempdir().expect("tempdir");
    let path = conf.path().join("lake.toml");
    std::fs::write(
        &path,
        format!(
            "[plugins.overrides.geo]\nhosts = [\"http://{geo}\"]\nrequests_per_sec = 50.0\n\n\
             [[sources]]\nname = \"gsm804\"\nplugin = \"geo\"\nexternal_id = \"GSM804\"\n\
             params = {{ accessions = [\"GSM804\"], what = \"soft\", view = \"full\", \
             base_url = \"http://{geo}/geo\" }}\n"
        ),
    )
    .expect("config");
    let envs = [("LAKE_CONFIG".to_owned(), path.display().to_string())];
    let lake = seeded(&envs).await;
    let url = &lake.url;
    c.goto(&format!("{url}/ui/collections"))
        .await
        .expect("goto");
    let sources = text_of(&c, "#sources").await;
    assert!(
        sources.contains("gsm804") && sources.contains("GSM804"),
        "{sources}"
    );
    c.find(Locator::Css("#sources button[type=submit]"))
        .await
        .expect("collect now")
        .click()
        .await
        .expect("click");
    // The job runs in the background; the page shows it once it has ended.
    let started = Instant::now();
    loop {
        c.goto(&format!("{url}/ui/collections"))
            .await
            .expect("goto");
        let jobs = text_of(&c, "#jobs").await;
        if jobs.contains("succeeded") {
            assert!(jobs.contains("new"), "the first collection is new: {jobs}");
            break;
        }
        assert!(!jobs.contains("failed"), "{jobs}");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the collection did not end: {jobs}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    check_page(&c, &d, url, "collections-run").await;
    let asked = seen.lock().expect("lock").clone();
    assert!(!asked.is_empty(), "the connector asked the upstream");
    c.find(Locator::Css("#jobs a[href^='/ui/collections/']"))
        .await
        .expect("the job's requests")
        .click()
        .await
        .expect("open");
    until(&c, "the collection's requests", || async {
        c.find(Locator::Css("#requests")).await.is_ok()
    })
    .await;
    let requests = text_of(&c, "#requests").await;
    // Every request the upstream saw is listed, with its answer.
    for path in &asked {
        let q = path.split('?').nth(1).unwrap_or(path);
        assert!(requests.contains(q), "{q} is not listed: {requests}");
    }
    assert!(requests.contains("200"), "{requests}");
    check_page(&c, &d, url, "collection-requests").await;
    c.close().await.expect("close");
}

/// The vendored scripts as `host/assets/ui/vendor/manifest.json` describes them.
fn manifest() -> Vec<Value> {
    let dir = crate::walkthrough::repo_root().join("host/assets/ui/vendor");
    let m: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
            .expect("manifest json");
    m["files"].as_array().expect("files").clone()
}

#[test]
fn the_vendored_scripts_are_what_the_manifest_says() {
    use sha2::Digest;
    let dir = crate::walkthrough::repo_root().join("host/assets/ui/vendor");
    let files = manifest();
    let mut named = std::collections::BTreeSet::new();
    for f in &files {
        let name = f["file"].as_str().expect("file");
        named.insert(name.to_owned());
        let bytes = std::fs::read(dir.join(name)).expect("vendored file");
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&bytes)),
            f["sha256"].as_str().expect("sha256"),
            "{name} differs from the manifest"
        );
        for key in ["package", "version", "licence", "from"] {
            assert!(
                f[key].as_str().is_some_and(|v| !v.is_empty()),
                "{name}: no {key}"
            );
        }
        let licence =
            std::fs::read_to_string(dir.join(f["licence_file"].as_str().expect("licence")))
                .expect("licence file");
        assert!(
            licence.contains("Permission") || licence.contains("Zero-Clause BSD"),
            "{name}: its licence text"
        );
        // Every host named in its text is listed, so an upgrade that adds one is reviewed.
        let listed: Vec<&str> = f["hosts_in_text"]
            .as_array()
            .expect("hosts")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for u in crate::first_run::remote_urls(&String::from_utf8_lossy(&bytes)) {
            assert!(
                listed.contains(&u.as_str()),
                "{name} names {u}, not in the manifest"
            );
        }
    }
    for e in std::fs::read_dir(&dir).expect("vendor dir") {
        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
        if name.ends_with(".js") {
            assert!(
                named.contains(&name),
                "{name} is vendored but not in the manifest"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_dashboard_page_or_asset_refers_to_the_internet() {
    let lake = seeded(&[]).await;
    let url = &lake.url;
    let http = reqwest::Client::new();
    let vendored: Vec<(String, Vec<String>)> = manifest()
        .iter()
        .map(|f| {
            (
                f["file"].as_str().unwrap_or("").to_owned(),
                f["hosts_in_text"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|h| h.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        })
        .collect();
    let mut assets = std::collections::BTreeSet::new();
    for page in [
        "/ui".to_owned(),
        "/ui/catalog".to_owned(),
        format!("/ui/datasets/{}", lake.chain[1]),
        "/ui/layers".to_owned(),
        "/ui/files".to_owned(),
        "/ui/collections".to_owned(),
        "/ui/runs".to_owned(),
        "/ui/backups".to_owned(),
        "/ui/admin".to_owned(),
        "/ui/sign-in".to_owned(),
    ] {
        let resp = http.get(format!("{url}{page}")).send().await.expect("page");
        assert!(resp.status().is_success(), "{page}: {}", resp.status());
        let csp = resp
            .headers()
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe"),
            "{page}: {csp}"
        );
        let html = resp.text().await.expect("html");
        let remote = crate::first_run::remote_urls(&html);
        assert!(remote.is_empty(), "{page} refers to {remote:?}");
        assert!(
            !html.contains("<script>") && !html.contains(" style=") && !html.contains(" onclick="),
            "{page} has inline script or style"
        );
        for part in html.split("/ui/assets/").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| !matches!(c, '"' | '\''))
                .collect();
            assets.insert(name);
        }
    }
    assert!(assets.len() >= 8, "the pages link their assets: {assets:?}");
    for name in &assets {
        let resp = http
            .get(format!("{url}/ui/assets/{name}"))
            .send()
            .await
            .expect("asset");
        assert!(resp.status().is_success(), "{name}: {}", resp.status());
        let cache = resp
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(cache.contains("immutable"), "{name}: {cache}");
        let body = resp.text().await.expect("text");
        let remote = crate::first_run::remote_urls(&body);
        // The lake's own files name no other host (an SVG names its XML namespace); a vendored
        // one only the hosts its manifest lists.
        let allowed: Vec<String> = vendored
            .iter()
            .find(|(file, _)| {
                let stem = file.trim_end_matches(".js");
                name.starts_with(&format!("{stem}."))
                    && name.ends_with(".js")
                    && name.matches('.').count() == file.matches('.').count() + 1
            })
            .map(|(_, hosts)| hosts.clone())
            .unwrap_or_else(|| vec!["http://www.w3.org".to_owned()]);
        for u in remote {
            assert!(allowed.contains(&u), "{name} refers to {u}");
        }
    }
    // An unknown asset is a 404, not a page.
    let resp = http
        .get(format!("{url}/ui/assets/nope.0000000000.js"))
        .send()
        .await
        .expect("asset");
    assert_eq!(resp.status(), reqwest::StatusCode::NOT_FOUND);
}
