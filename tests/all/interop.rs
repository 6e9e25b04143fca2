//! What research infrastructure reads of the lake, read back with clients no one here wrote: a
//! merged dataset's RO-Crate opened with the `rocrate` package.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::http_api::{TestLake, embedded_settings, settings};

async fn upload(t: &TestLake, name: &str, body: &str) -> Value {
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("/files/upload?filename={name}"))
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body.to_owned()))
        .expect("request");
    let (s, v) = t.send(req).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v
}

/// The response's status, content type and bytes.
async fn raw(t: &TestLake, uri: &str) -> (StatusCode, String, Vec<u8>) {
    let req = Request::builder()
        .uri(uri)
        .header(header::HOST, "127.0.0.1:8080")
        .body(Body::empty())
        .expect("request");
    let resp = t.app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, ct, bytes.to_vec())
}

/// Opens a crate with the `rocrate` package and answers what a reader finds in it: the root's
/// profile, every action with its instrument, objects and results, and every file's checksum.
const CRATE_READ: &str = r#"
import json, sys
from rocrate.rocrate import ROCrate
crate = ROCrate(sys.argv[1])
def ids(v):
    v = v if isinstance(v, list) else ([v] if v else [])
    return [e.id if hasattr(e, "id") else str(e) for e in v]
root = crate.root_dataset
actions = []
for e in crate.get_entities():
    if e.type == "CreateAction" or "CreateAction" in (e.type if isinstance(e.type, list) else [e.type]):
        tool = e.get("instrument")
        actions.append({
            "name": e.get("name"),
            "instrument": tool.get("identifier") if tool is not None else None,
            "tool_name": tool.get("name") if tool is not None else None,
            "object": ids(e.get("object")),
            "result": ids(e.get("result")),
            "agent": e.get("agent").get("name") if e.get("agent") is not None else None,
        })
files = {e.id: e.get("sha256") for e in crate.get_entities() if e.type == "File"}
parts = {e.id: ids(e.get("hasPart")) for e in crate.get_entities() if e.type == "Dataset"}
print(json.dumps({
    "conforms": ids(root.get("conformsTo")),
    "main": ids(root.get("mainEntity")),
    "actions": actions,
    "files": files,
    "parts": parts,
}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ro_crate_of_a_merge_names_both_inputs_the_component_and_the_checksums() {
    let t = embedded_settings(
        settings(64 << 20),
        Some(crate::plugins::open(&crate::plugins::shared_cache())),
    )
    .await;
    let left = upload(
        &t,
        "expression.csv",
        "sample_id,gene,tpm\nS1,TP53,12.4\nS2,TP53,3.1\nS3,BRCA1,7.0\n",
    )
    .await;
    let right = upload(&t, "samples.csv", "sample_id,tissue\nS1,liver\nS2,lung\n").await;
    let (l, r) = (&left["file_id"], &right["file_id"]);
    let (s, m) = t
        .call(
            Method::GET,
            &format!(
                "/files/merge?file_id_1={}&file_id_2={}&on=sample_id",
                l.as_str().expect("id"),
                r.as_str().expect("id")
            ),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{m}");
    let (s, saved) = t
        .call(
            Method::POST,
            "/files/save_merged",
            Some(json!({"cache_key": m["cache_key"], "name": "expression with tissues", "format": "parquet"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{saved}");
    let id = saved["dataset_id"].as_str().expect("id").to_owned();
    let sha = saved["file"]["sha256"].as_str().expect("sha").to_owned();
    let (_, prov) = t
        .call(Method::GET, &format!("/provenance/{id}"), None)
        .await;
    let merge_sha = prov["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["parameters"]["plugin"] == "merge")
        .and_then(|e| e["parameters"]["component_sha256"].as_str())
        .expect("the merge's component")
        .to_owned();
    let inputs = [
        left["dataset_ids"]["table"]
            .as_str()
            .expect("table")
            .to_owned(),
        right["dataset_ids"]["table"]
            .as_str()
            .expect("table")
            .to_owned(),
    ];

    // The JSON-LD: the merge is an action whose instrument is the component, by its SHA-256.
    let (s, ct, body) = raw(&t, &format!("/provenance/{id}/ro-crate?format=json")).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(ct, "application/ld+json");
    let doc: Value = serde_json::from_slice(&body).expect("json-ld");
    assert_eq!(doc["@context"], "https://w3id.org/ro/crate/1.1/context");

    // The zip, as a reader opens it.
    let (s, ct, zip) = raw(&t, &format!("/provenance/{id}/ro-crate")).await;
    assert_eq!((s, ct.as_str()), (StatusCode::OK, "application/zip"));
    let Some(python) = crate::service_var("LAKE_TEST_PYTHON") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("crate.zip");
    std::fs::write(&path, &zip).expect("write");
    let out = std::process::Command::new(python)
        .args(["-c", CRATE_READ])
        .arg(&path)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "rocrate could not open the crate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        read["conforms"].as_array().is_some_and(|c| c
            .iter()
            .any(|p| p == "https://w3id.org/ro/wfrun/process/0.5")),
        "{read}"
    );
    let at = |d: &str| format!("http://127.0.0.1:8080/ui/datasets/{d}/");
    assert_eq!(read["main"], json!([at(&id)]), "{read}");
    let merge = read["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .find(|a| a["result"] == json!([at(&id)]))
        .unwrap_or_else(|| panic!("no action made the merged dataset: {read}"))
        .clone();
    assert_eq!(
        merge["instrument"],
        json!(format!("sha256:{merge_sha}")),
        "{merge}"
    );
    assert_eq!(merge["tool_name"], "merge", "{merge}");
    assert_eq!(
        merge["object"],
        json!([at(&inputs[0]), at(&inputs[1])]),
        "both inputs: {merge}"
    );
    // The result's file, with its checksum, is part of the merged dataset.
    let parts = read["parts"][at(&id)]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(parts.len(), 1, "{read}");
    let file = parts[0].as_str().expect("file id");
    assert_eq!(read["files"][file], json!(sha), "{read}");
    // The uploads that began it are there too, as the lake's own actions.
    for input in &inputs {
        assert!(
            read["actions"]
                .as_array()
                .expect("actions")
                .iter()
                .any(|a| a["result"]
                    .as_array()
                    .is_some_and(|r| r.contains(&json!(at(input))))),
            "how {input} was made: {read}"
        );
    }

    // A dataset's id in the crate leads to its page.
    let (s, _, _) = raw(&t, &format!("/ui/datasets/{id}/")).await;
    assert_eq!(s, StatusCode::PERMANENT_REDIRECT);

    // Bad asks: a clear 4xx each.
    for (uri, want) in [
        (
            format!("/provenance/{id}/ro-crate?format=tar"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            format!("/provenance/{id}/ro-crate?depth=0"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/provenance/0190b6c2-0000-7000-8000-000000000000/ro-crate".to_owned(),
            StatusCode::NOT_FOUND,
        ),
        (
            "/provenance/nope/ro-crate".to_owned(),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (s, _, body) = raw(&t, &uri).await;
        assert_eq!(s, want, "{uri}: {}", String::from_utf8_lossy(&body));
    }
}
