//! What research infrastructure and engines exchange with the lake, with clients no one here
//! wrote: a merged dataset's RO-Crate opened with the `rocrate` package, and an engine's run
//! reported with the official OpenLineage client.

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

/// `POST /files/upload` of `body` as `name` to a running lake: its answer.
async fn upload_to(http: &reqwest::Client, url: &str, name: &str, body: &str) -> Value {
    http.post(format!("{url}/files/upload?filename={name}"))
        .body(body.to_owned())
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("json")
}

/// The table dataset an upload made.
async fn table_of_upload(http: &reqwest::Client, url: &str, name: &str, body: &str) -> String {
    let v = upload_to(http, url, name, body).await;
    v["dataset_ids"]["table"]
        .as_str()
        .unwrap_or_else(|| panic!("a table: {v}"))
        .to_owned()
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

/// Reports a finished engine run with the official OpenLineage client (START, then COMPLETE):
/// argv: the lake's URL, an input by id, an input by its storage path, the output by id.
const OPENLINEAGE_EMIT: &str = r#"
import datetime, json, sys, uuid
from openlineage.client import OpenLineageClient
from openlineage.client.transport.http import HttpConfig, HttpTransport
from openlineage.client.event_v2 import RunEvent, RunState, Run, Job, InputDataset, OutputDataset
url, by_id, by_path, out = sys.argv[1:5]
client = OpenLineageClient(transport=HttpTransport(HttpConfig(url=url)))
run = Run(runId=str(uuid.uuid4()))
job = Job(namespace="spark", name="join_expression_with_samples")
now = lambda: datetime.datetime.now(datetime.timezone.utc).isoformat()
inputs = [
    InputDataset(namespace="lake", name=by_id),
    InputDataset(namespace="file", name=by_path),
    InputDataset(namespace="postgres://db.lab:5432", name="public.orders"),
]
outputs = [OutputDataset(namespace="lake", name=out)]
for state in (RunState.START, RunState.COMPLETE):
    client.emit(RunEvent(eventType=state, eventTime=now(), run=run, job=job,
        producer="https://github.com/apache/spark", inputs=inputs, outputs=outputs))
print(json.dumps({"run": run.runId}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engines_openlineage_run_sits_between_its_inputs_and_output() {
    let (_server, url, _dir) = crate::walkthrough::start(&[]);
    let http = reqwest::Client::new();
    let upload = |name: &'static str, body: &'static str| table_of_upload(&http, &url, name, body);
    let expression = upload("expression.csv", "sample_id,tpm\nS1,1.5\nS2,2.5\n").await;
    let samples = upload("samples.csv", "sample_id,tissue\nS1,liver\nS2,lung\n").await;
    let joined = upload(
        "joined.csv",
        "sample_id,tpm,tissue\nS1,1.5,liver\nS2,2.5,lung\n",
    )
    .await;
    // The samples table named by where it is stored, as an engine that read the file says it.
    let d: Value = http
        .get(format!("{url}/catalog/{samples}"))
        .send()
        .await
        .expect("dataset")
        .json()
        .await
        .expect("json");
    let by_path = format!(
        "/srv/lake/data/{}/{}samples.parquet",
        d["bucket"].as_str().expect("bucket"),
        d["prefix"].as_str().expect("prefix")
    );

    // Refusals first: what is not a run event is a 422 that says why; a start is acknowledged.
    let post = |body: Value| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http
                .post(format!("{url}/api/v1/lineage"))
                .json(&body)
                .send()
                .await
                .expect("post");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let event = |kind: &str, run: &str| {
        json!({
            "eventType": kind, "eventTime": "2026-12-03T10:00:00Z",
            "run": {"runId": run}, "job": {"namespace": "spark", "name": "x"},
            "inputs": [{"namespace": "lake", "name": expression}], "outputs": [],
            "producer": "https://example.org/engine",
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
        })
    };
    let run = uuid::Uuid::new_v4().to_string();
    for (body, want) in [
        (event("DONE", &run), "eventType"),
        (event("COMPLETE", "run-1"), "runId"),
        (json!({"eventType": "COMPLETE"}), "missing field"),
    ] {
        let (s, v) = post(body).await;
        assert_eq!(s, 422, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap_or("").contains(want),
            "{v}"
        );
    }
    let (s, v) = post(event("START", &run)).await;
    assert_eq!((s, &v["recorded"]), (200, &json!(false)), "{v}");
    assert_eq!(v["inputs"], json!([expression]), "{v}");

    // The engine's run, reported by the official client.
    let Some(python) = crate::service_var("LAKE_TEST_PYTHON") else {
        return;
    };
    let out = std::process::Command::new(python)
        .args(["-c", OPENLINEAGE_EMIT, &url, &expression, &by_path, &joined])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "the OpenLineage client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let emitted: Value = serde_json::from_slice(&out.stdout).expect("json");
    let graph: Value = http
        .get(format!(
            "{url}/provenance/{joined}/graph?direction=ancestors&depth=1"
        ))
        .send()
        .await
        .expect("graph")
        .json()
        .await
        .expect("json");
    let external: Vec<&Value> = graph["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .filter(|e| e["action"] == "external")
        .collect();
    let mut from: Vec<&str> = external.iter().filter_map(|e| e["from"].as_str()).collect();
    from.sort();
    let mut want = vec![expression.as_str(), samples.as_str()];
    want.sort();
    assert_eq!(from, want, "both inputs lead to the output: {graph}");
    assert!(external.iter().all(|e| e["to"] == json!(joined)), "{graph}");
    // The entry names the job and its run, and what the lake does not hold.
    let lineage: Value = http
        .get(format!("{url}/provenance/{joined}"))
        .send()
        .await
        .expect("provenance")
        .json()
        .await
        .expect("json");
    let entries = lineage["entries"].as_array().cloned().unwrap_or_default();
    let entry = entries
        .iter()
        .find(|e| e["action"] == "external")
        .unwrap_or_else(|| panic!("no external entry: {lineage}"));
    let p = &entry["parameters"];
    assert_eq!(p["job_name"], "join_expression_with_samples", "{entry}");
    assert_eq!(p["run_id"], emitted["run"], "{entry}");
    assert_eq!(p["event_type"], "COMPLETE", "{entry}");
    assert_eq!(p["unmatched"][0]["name"], "public.orders", "{entry}");
    // Only the run's end was recorded: one entry for the run.
    assert_eq!(
        entries.iter().filter(|e| e["action"] == "external").count(),
        1,
        "{lineage}"
    );
}

/// An engine's job with PyIceberg: reads two lake tables through the Iceberg catalog, joins them,
/// writes the result into the lake's store, and reports the run with the official OpenLineage
/// client (inputs by Iceberg identifier, the output by where it wrote it), twice for the end as a
/// retrying client would.
const ENGINE_JOB: &str = r#"
import datetime, json, os, sys, uuid
import pyarrow.parquet as pq
from pyiceberg.catalog import load_catalog
from openlineage.client import OpenLineageClient
from openlineage.client.transport.http import HttpConfig, HttpTransport
from openlineage.client.event_v2 import RunEvent, RunState, Run, Job, InputDataset, OutputDataset
url = sys.argv[1]
catalog = load_catalog("lake", type="rest", uri=url + "/iceberg")
samples = catalog.load_table("processed.samples")
expression = catalog.load_table("processed.expression")
joined = expression.scan().to_arrow().join(samples.scan().to_arrow(), "sample_id", join_type="inner")
bucket_dir = samples.metadata_location[len("file://"):].split("/files/")[0]
out_dir = f"{bucket_dir}/engine/joined-{uuid.uuid4().hex[:8]}"
os.makedirs(out_dir)
pq.write_table(joined, f"{out_dir}/part-00000.parquet")
client = OpenLineageClient(transport=HttpTransport(HttpConfig(url=url)))
run = Run(runId=str(uuid.uuid4()))
job = Job(namespace="pyiceberg", name="join_expression_with_samples")
inputs = [InputDataset(namespace=url + "/iceberg", name=n) for n in ("processed.samples", "processed.expression")]
outputs = [OutputDataset(namespace="file", name=out_dir)]
now = lambda: datetime.datetime.now(datetime.timezone.utc).isoformat()
for state in (RunState.START, RunState.COMPLETE, RunState.COMPLETE):
    client.emit(RunEvent(eventType=state, eventTime=now(), run=run, job=job,
        producer="https://py.iceberg.apache.org", inputs=inputs, outputs=outputs))
print(json.dumps({"run": run.runId, "rows": joined.num_rows, "out": out_dir}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_reads_through_iceberg_and_its_result_joins_the_lineage_once() {
    let (_server, url, _dir) = crate::walkthrough::start(&[]);
    let http = reqwest::Client::new();
    let upload = |name: &'static str, body: &'static str| table_of_upload(&http, &url, name, body);
    let samples = upload("samples.csv", "sample_id,tissue\nS1,liver\nS2,lung\n").await;
    let expression = upload(
        "expression.csv",
        "sample_id,gene,tpm\nS1,TP53,1.5\nS2,TP53,2.5\nS9,TP53,9\n",
    )
    .await;
    let Some(python) = crate::service_var("LAKE_TEST_PYTHON") else {
        return;
    };
    let out = std::process::Command::new(python)
        .args(["-c", ENGINE_JOB, &url])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "the engine's job failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(job["rows"], 2, "{job}");
    // The output the engine wrote is a processed dataset now, registered by the event.
    let found: Value = http
        .get(format!("{url}/catalog?source=pyiceberg"))
        .send()
        .await
        .expect("catalog")
        .json()
        .await
        .expect("json");
    let items = found["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{found}");
    let result = items[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(items[0]["layer"], "processed", "{found}");
    assert_eq!(items[0]["file_count"], 1, "{found}");
    let graph: Value = http
        .get(format!(
            "{url}/provenance/{result}/graph?direction=ancestors&depth=1"
        ))
        .send()
        .await
        .expect("graph")
        .json()
        .await
        .expect("json");
    let mut from: Vec<&str> = graph["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .filter(|e| e["action"] == "external" && e["to"] == json!(result))
        .filter_map(|e| e["from"].as_str())
        .collect();
    from.sort();
    let mut want = vec![samples.as_str(), expression.as_str()];
    want.sort();
    assert_eq!(
        from, want,
        "the job sits between both tables and its result: {graph}"
    );
    // The end was sent twice; it is recorded once.
    let lineage: Value = http
        .get(format!("{url}/provenance/{result}"))
        .send()
        .await
        .expect("provenance")
        .json()
        .await
        .expect("json");
    let external: Vec<&Value> = lineage["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "external")
        .collect();
    assert_eq!(external.len(), 1, "{lineage}");
    assert_eq!(external[0]["parameters"]["run_id"], job["run"], "{lineage}");
    // A retry answers the entry recorded the first time.
    let again = json!({
        "eventType": "COMPLETE", "eventTime": "2026-12-04T10:00:00Z",
        "run": {"runId": job["run"]}, "job": {"namespace": "pyiceberg", "name": "join_expression_with_samples"},
        "inputs": [{"namespace": "lake", "name": "processed.samples"}],
        "outputs": [{"namespace": "lake", "name": result}],
        "producer": "https://py.iceberg.apache.org",
    });
    let r = http
        .post(format!("{url}/api/v1/lineage"))
        .json(&again)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(
        (&v["repeated"], &v["entry_id"]),
        (&json!(true), &external[0]["id"]),
        "{v}"
    );
}

/// Rebuilds each event the lake sent with the official client's generated classes (their
/// validators run: a UUID run id, an ISO time with a time, the facets' own schema URLs) and
/// reports whether the client serialises it back to exactly what the lake sent.
const OPENLINEAGE_CHECK: &str = r#"
import json, sys
from openlineage.client.event_v2 import RunEvent, RunState, Run, Job, InputDataset, OutputDataset
from openlineage.client.serde import Serde
from openlineage.client.generated import job_type_job, error_message_run, documentation_job

def rebuild(e):
    rf = e["run"].get("facets", {})
    run_facets = {}
    if "errorMessage" in rf:
        f = rf["errorMessage"]
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=f["message"], programmingLanguage=f["programmingLanguage"], producer=f["_producer"])
    jf = e["job"].get("facets", {})
    job_facets = {}
    if "jobType" in jf:
        f = jf["jobType"]
        job_facets["jobType"] = job_type_job.JobTypeJobFacet(
            processingType=f["processingType"], integration=f["integration"], jobType=f.get("jobType"),
            producer=f["_producer"])
    if "documentation" in jf:
        f = jf["documentation"]
        job_facets["documentation"] = documentation_job.DocumentationJobFacet(
            description=f["description"], producer=f["_producer"])
    ev = RunEvent(
        eventType=RunState[e["eventType"]], eventTime=e["eventTime"],
        run=Run(runId=e["run"]["runId"], facets=run_facets),
        job=Job(namespace=e["job"]["namespace"], name=e["job"]["name"], facets=job_facets),
        inputs=[InputDataset(namespace=d["namespace"], name=d["name"]) for d in e["inputs"]],
        outputs=[OutputDataset(namespace=d["namespace"], name=d["name"]) for d in e["outputs"]],
        producer=e["producer"])
    return json.loads(Serde.to_json(ev))

out = []
for e in json.loads(sys.argv[1]):
    again = rebuild(e)
    out.append({"job": e["job"]["name"], "same": again == e, "client": again})
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lakes_runs_go_out_as_openlineage_events_the_official_client_accepts() {
    use std::sync::{Arc, Mutex};
    // A stand-in for Marquez on loopback: it keeps what it is sent.
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let kept = received.clone();
    let app = axum::Router::new().route(
        "/api/v1/lineage",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let kept = kept.clone();
            async move {
                kept.lock().expect("lock").push(v);
                StatusCode::CREATED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (_server, url, _dir) = crate::walkthrough::start(&[(
        "LAKE_LINEAGE__OPENLINEAGE_URL".into(),
        format!("http://{addr}"),
    )]);
    let http = reqwest::Client::new();
    let upload = |name: &'static str, body: &'static str| upload_to(&http, &url, name, body);
    let ok = upload("samples.csv", "sample_id,tissue\nS1,liver\nS2,lung\n").await;
    let (raw, table) = (
        ok["dataset_ids"]["raw"].as_str().expect("raw").to_owned(),
        ok["dataset_ids"]["table"]
            .as_str()
            .expect("table")
            .to_owned(),
    );
    let bad = upload("ragged.csv", "a,b\n1,2,3,4\n5\n").await;
    assert!(bad["dataset_ids"]["table"].is_null(), "{bad}");
    let promoted: Value = http
        .post(format!("{url}/layers/promote"))
        .json(&json!({"dataset_id": table, "target_layer": "curated", "reason": "reviewed"}))
        .send()
        .await
        .expect("promote")
        .json()
        .await
        .expect("json");
    let curated = promoted["dataset"]["id"].as_str().expect("id").to_owned();
    let mut events = Vec::new();
    for _ in 0..100 {
        events = received.lock().expect("lock").clone();
        if events.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let find = |job: &str, kind: &str| {
        events
            .iter()
            .find(|e| e["job"]["name"] == job && e["eventType"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} event of {job}: {events:?}"))
    };
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["name"].as_str().map(str::to_owned))
            .collect()
    };
    let parse = find("pipeline.csv", "COMPLETE");
    assert_eq!(
        names(&parse["inputs"]),
        std::slice::from_ref(&raw),
        "{parse}"
    );
    assert_eq!(
        names(&parse["outputs"]),
        std::slice::from_ref(&table),
        "{parse}"
    );
    assert_eq!(parse["job"]["namespace"], "lake");
    let failed = find("pipeline.csv", "FAIL");
    assert!(
        failed["run"]["facets"]["errorMessage"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{failed}"
    );
    let promotion = find("promotion.curated", "COMPLETE");
    assert_eq!(names(&promotion["inputs"]), [table], "{promotion}");
    assert_eq!(names(&promotion["outputs"]), [curated], "{promotion}");

    let Some(python) = crate::service_var("LAKE_TEST_PYTHON") else {
        return;
    };
    let out = std::process::Command::new(python)
        .args([
            "-c",
            OPENLINEAGE_CHECK,
            &Value::from(events.clone()).to_string(),
        ])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "the client refused an event: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checked: Value = serde_json::from_slice(&out.stdout).expect("json");
    for c in checked.as_array().expect("list") {
        assert_eq!(c["same"], true, "the client builds another event: {c}");
    }
    assert_eq!(checked.as_array().map(Vec::len), Some(events.len()));
}
