//! Hostile HTTP input, route by route from `/openapi.json`: malformed JSON, deeply nested JSON,
//! huge strings, invalid ids and pagination values, and path tricks in file names. Every such
//! request gets a 4xx that says why, never a 5xx or a success, and nothing is half-written: the
//! catalog's counts, the provenance log and every bucket's objects are the same afterwards.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use lake_host::layers::Layer;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::http_api::TestLake;

/// What a request may have written: catalog stats, provenance entries and objects per bucket.
async fn footprint(t: &TestLake) -> (Value, usize, Vec<usize>) {
    let stats = serde_json::to_value(t.lake.stats().await.expect("stats")).expect("json");
    let mut entries = 0;
    for action in [
        lake_host::provenance::Action::Registration,
        lake_host::provenance::Action::Pipeline,
        lake_host::provenance::Action::Promotion,
        lake_host::provenance::Action::Deletion,
        lake_host::provenance::Action::Manual,
        lake_host::provenance::Action::Collection,
    ] {
        entries += t
            .lake
            .catalog()
            .entries_by_action(action, 10_000)
            .await
            .expect("entries")
            .len();
    }
    // The Iceberg catalog's files, written in the background for the seeded table, are not
    // the requests' doing.
    let mut objects = Vec::new();
    for l in Layer::ALL {
        objects.push(
            t.lake
                .blobs()
                .list(t.lake.bucket(l), "")
                .await
                .expect("list")
                .iter()
                .filter(|o| !o.key.contains("/metadata/"))
                .count(),
        );
    }
    (stats, entries, objects)
}

async fn send(t: &TestLake, req: Request<Body>) -> (StatusCode, String) {
    let resp = t.app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn refused(what: &str, status: StatusCode, body: &str) {
    assert!(
        status.is_client_error(),
        "{what}: a 4xx, not {status}: {}",
        &body[..body.len().min(300)]
    );
    // The refusal says why, in the one error shape (or Iceberg's, under /iceberg).
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {status} without a message: {}",
        &body[..body.len().min(300)]
    );
}

/// A seeded embedded lake: one uploaded file, so ids and names exist to aim at.
async fn lake() -> TestLake {
    let plugins = crate::plugins::open(&crate::plugins::shared_cache());
    let t = crate::http_api::embedded_with(64 << 20, Some(plugins)).await;
    let req = Request::builder()
        .method(Method::POST)
        .uri("/files/upload?filename=samples.csv")
        .body(Body::from("sample_id,value\nS1,1\nS2,2\n"))
        .expect("request");
    let (s, b) = send(&t, req).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    t
}

/// Every route with a JSON body, from the OpenAPI document.
async fn json_routes(t: &TestLake) -> Vec<(Method, String)> {
    let (_, spec) = t.call(Method::GET, "/openapi.json", None).await;
    let mut out = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("methods") {
            let json_body = op["requestBody"]["content"]
                .as_object()
                .is_some_and(|c| c.contains_key("application/json"));
            if json_body {
                let uri = path
                    .replace("{id}", &uuid::Uuid::now_v7().to_string())
                    .replace("{name}", "nobody")
                    .replace("{namespace}", "processed")
                    .replace("{table}", "samples");
                out.push((method.to_uppercase().parse().expect("method"), uri));
            }
        }
    }
    assert!(out.len() >= 8, "JSON routes found: {out:?}");
    out
}

fn json_request(method: &Method, uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(method.clone())
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .expect("request")
}

#[tokio::test]
async fn malformed_json_is_refused_on_every_route() {
    let t = lake().await;
    let before = footprint(&t).await;
    for (method, uri) in json_routes(&t).await {
        for body in [
            "{",
            "{\"name\": }",
            "[1, 2",
            "\u{0}",
            "{\"a\": \"\\ud800\"}",
            "nul",
        ] {
            let (s, b) = send(&t, json_request(&method, &uri, body)).await;
            refused(&format!("{method} {uri} with {body:?}"), s, &b);
        }
    }
    assert_eq!(footprint(&t).await, before, "nothing written");
}

#[tokio::test]
async fn deeply_nested_json_is_refused_on_every_route() {
    let t = lake().await;
    let before = footprint(&t).await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!(
        "{{\"metadata\": {}1{}}}",
        "{\"a\":".repeat(50_000),
        "}".repeat(50_000)
    );
    for (method, uri) in json_routes(&t).await {
        for body in [&deep, &deep_object] {
            let (s, b) = send(&t, json_request(&method, &uri, body.clone())).await;
            refused(&format!("{method} {uri} with nested JSON"), s, &b);
        }
    }
    assert_eq!(footprint(&t).await, before, "nothing written");
}

#[tokio::test]
async fn huge_strings_are_refused() {
    let t = lake().await;
    let before = footprint(&t).await;
    let huge = "x".repeat(2 << 20);
    let (_, files) = t.call(Method::GET, "/files", None).await;
    let file_id = files["items"][0]["file_id"]
        .as_str()
        .or_else(|| files[0]["file_id"].as_str())
        .map(str::to_owned)
        .unwrap_or_default();
    let cases: Vec<(Method, String, Value)> = vec![
        (
            Method::POST,
            "/catalog".into(),
            json!({ "name": huge, "source": "s" }),
        ),
        (
            Method::POST,
            "/catalog".into(),
            json!({ "name": "n", "source": huge }),
        ),
        (
            Method::POST,
            "/catalog".into(),
            json!({ "name": "n", "source": "s", "tags": [huge] }),
        ),
        (
            Method::POST,
            "/catalog".into(),
            json!({ "name": "n", "source": "s", "external_id": huge }),
        ),
        (
            Method::POST,
            "/users".into(),
            json!({ "name": huge, "role": "reader" }),
        ),
        (Method::POST, "/tokens".into(), json!({ "name": huge })),
        (
            Method::POST,
            "/collections".into(),
            json!({ "source": huge }),
        ),
        (
            Method::POST,
            "/files/save_merged".into(),
            json!({ "cache_key": huge, "name": "x" }),
        ),
        (
            Method::POST,
            "/pipelines/run".into(),
            json!({ "plugin": huge, "inputs": [file_id] }),
        ),
        (
            Method::POST,
            "/layers/promote".into(),
            json!({ "dataset_id": file_id, "target_layer": "processed", "reason": huge }),
        ),
    ];
    for (method, uri, body) in cases {
        let (s, b) = send(&t, json_request(&method, &uri, body.to_string())).await;
        refused(&format!("{method} {uri} with a 2 MiB string"), s, &b);
    }
    let (s, b) = send(
        &t,
        Request::builder()
            .uri(format!("/catalog?q={}", &huge[..60_000]))
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    refused("a 2 MiB search", s, &b);
    assert_eq!(footprint(&t).await, before, "nothing written");
}

#[tokio::test]
async fn invalid_ids_are_refused_on_every_route() {
    let t = lake().await;
    let before = footprint(&t).await;
    let (_, spec) = t.call(Method::GET, "/openapi.json", None).await;
    let long = "9".repeat(10_000);
    let bad_ids = [
        "not-a-uuid",
        "%2e%2e%2f%2e%2e",
        "%00",
        "00000000-0000-0000-0000-00000000000g",
        "-1",
        long.as_str(),
    ];
    let mut tried = 0;
    for (path, item) in spec["paths"].as_object().expect("paths") {
        if !path.contains("{id}") {
            continue;
        }
        for method in item.as_object().expect("methods").keys() {
            let method: Method = method.to_uppercase().parse().expect("method");
            for id in bad_ids {
                let uri = path.replace("{id}", id).replace("{filename}", "a.csv");
                let req = json_request(&method, &uri, "{}");
                let (s, b) = send(&t, req).await;
                refused(&format!("{method} {uri}"), s, &b);
                tried += 1;
            }
        }
    }
    assert!(tried >= 60, "{tried} requests");
    assert_eq!(footprint(&t).await, before, "nothing written");
}

#[tokio::test]
async fn invalid_pagination_is_refused_on_every_paged_route() {
    let t = lake().await;
    let before = footprint(&t).await;
    let (_, spec) = t.call(Method::GET, "/openapi.json", None).await;
    let mut tried = 0;
    for (path, item) in spec["paths"].as_object().expect("paths") {
        let Some(op) = item.get("get") else { continue };
        if path.contains('{') {
            continue;
        }
        let params: Vec<String> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "query")
                    .filter_map(|p| p["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for name in params
            .iter()
            .filter(|n| ["limit", "offset", "cursor", "before", "page_size"].contains(&n.as_str()))
        {
            for value in [
                "-1",
                "99999999999999999999999",
                "18446744073709551616",
                "1e3",
                "abc",
                "%00",
            ] {
                if name == "cursor" && value == "-1" {
                    continue;
                }
                let uri = format!("{path}?{name}={value}");
                let (s, b) = send(
                    &t,
                    Request::builder()
                        .uri(&uri)
                        .body(Body::empty())
                        .expect("request"),
                )
                .await;
                refused(&format!("GET {uri}"), s, &b);
                tried += 1;
            }
        }
    }
    assert!(tried >= 20, "{tried} requests");
    assert_eq!(footprint(&t).await, before, "nothing written");
}

#[tokio::test]
async fn path_tricks_in_file_names_are_refused() {
    let t = lake().await;
    let before = footprint(&t).await;
    let long = "a".repeat(300);
    let names = [
        "..%2F..%2Fetc%2Fpasswd.csv".to_owned(),
        "a%2Fb.csv".to_owned(),
        "a%5Cb.csv".to_owned(),
        "a%00b.csv".to_owned(),
        "%2E%2E".to_owned(),
        format!("{long}.csv"),
        "evil%E2%80%AEvsc.csv".to_owned(),
        "zero%E2%80%8Bwidth.csv".to_owned(),
        "line%0Abreak.csv".to_owned(),
        "%C0%AF.csv".to_owned(),
    ];
    for name in &names {
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("/files/upload?filename={name}"))
            .body(Body::from("a,b\n1,2\n"))
            .expect("request");
        let (s, b) = send(&t, req).await;
        refused(&format!("upload named {name:?}"), s, &b);
        // The same name in a multipart form.
        let boundary = "XyZ";
        let decoded = percent_decode(name);
        let mut form =
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"")
                .into_bytes();
        form.extend_from_slice(&decoded);
        form.extend_from_slice(
            format!("\"\r\nContent-Type: text/csv\r\n\r\na,b\n1,2\n\r\n--{boundary}--\r\n")
                .as_bytes(),
        );
        let req = Request::builder()
            .method(Method::POST)
            .uri("/files/upload")
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(Body::from(form))
            .expect("request");
        let (s, b) = send(&t, req).await;
        refused(&format!("multipart upload named {name:?}"), s, &b);
    }
    // Downloads by such names find nothing to serve.
    let (_, files) = t.call(Method::GET, "/files", None).await;
    let id = files["items"][0]["file_id"]
        .as_str()
        .or_else(|| files[0]["file_id"].as_str())
        .map(str::to_owned)
        .unwrap_or_default();
    for name in ["..%2F..%2Fcatalog.db", "%2E%2E", "a%00b.csv"] {
        let (s, b) = send(
            &t,
            Request::builder()
                .uri(format!("/catalog/{id}/download/{name}"))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        refused(&format!("download of {name:?}"), s, &b);
    }
    assert_eq!(footprint(&t).await, before, "nothing written");
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}
