//! The bundled source parsers and connectors (issue 5) through the real sandbox: GEO SOFT, UniProt
//! and PubMed, on the real upstream files in `../shared/fixtures/{geo,uniprot,pubmed}`, with facts
//! read by hand from them. Connectors fetch those files from a local server on a loopback address
//! that answers as the upstream does (its paths, its headers): GEO, UniProt, E-utilities.

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use lake_host::plugins::{InvokeError, Plugins, Table};

use crate::plugins::{open, shared, shared_cache};

async fn parse(
    p: &Plugins,
    name: &str,
    file: &str,
    params: serde_json::Value,
) -> Result<Table, InvokeError> {
    let bytes = std::fs::read(shared().join("fixtures").join(file)).expect("fixture");
    let chunks: Vec<std::io::Result<bytes::Bytes>> = bytes
        .chunks(1000)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let params = lake_host::plugins::params_from_json(&params).expect("params");
    p.parse(name, params, Box::pin(futures::stream::iter(chunks)))
        .await
        .result
}

/// The table's one batch (these files are small: the parser returns each table in one batch).
fn one_batch(t: &Table) -> RecordBatch {
    assert_eq!(t.batches.len(), 1, "one batch");
    t.batches[0].clone()
}

#[tokio::test]
async fn geo_soft_reads_family_files_and_old_records_in_the_sandbox() {
    let p = open(&shared_cache());
    let manifest = p.get("geo-soft").expect("geo-soft is bundled");
    assert_eq!(manifest.kind, lake_host::plugins::Kind::Parser);

    // Attributes of the modern family file: repeated keys as lists, blocks in order.
    let t = one_batch(
        &parse(
            &p,
            "geo-soft",
            "geo/GSE105845_family.soft",
            serde_json::json!({}),
        )
        .await
        .expect("attributes"),
    );
    let (ids, keys) = (
        t.column(1).as_string::<i32>(),
        t.column(2).as_string::<i32>(),
    );
    let row = (0..t.num_rows())
        .find(|&r| ids.value(r) == "GSE105845" && keys.value(r) == "Series_sample_id")
        .expect("the series' sample ids");
    let samples = t.column(3).as_list::<i32>().value(row);
    let samples = samples.as_string::<i32>();
    assert_eq!(
        (0..samples.len())
            .map(|i| samples.value(i))
            .collect::<Vec<_>>(),
        ["GSM2828511", "GSM2828512"]
    );

    // The data table of an old record without begin/end markers (CRLF, `^SAMPLE=GSM645`).
    let t = one_batch(
        &parse(
            &p,
            "geo-soft",
            "geo/GSM645.txt",
            serde_json::json!({"table": "values"}),
        )
        .await
        .expect("values"),
    );
    assert_eq!(t.num_rows(), 20);
    let id_ref = t
        .column_by_name("ID_REF")
        .expect("ID_REF")
        .as_string::<i32>();
    assert_eq!(id_ref.value(0), "IL2_at");
    let value = t.column_by_name("VALUE").expect("VALUE").as_string::<i32>();
    assert_eq!(value.value(1), "161");

    // Not SOFT: a clear input error naming the line.
    let bytes = b"id,name\n1,a\n".to_vec();
    let params = lake_host::plugins::params_from_json(&serde_json::json!({})).expect("params");
    let err = p
        .parse(
            "geo-soft",
            params,
            Box::pin(futures::stream::iter([Ok(bytes::Bytes::from(bytes))])),
        )
        .await
        .result
        .expect_err("CSV is not SOFT");
    assert!(err.to_string().contains("not GEO SOFT"), "{err}");
}

#[tokio::test]
async fn uniprot_entries_reads_flat_text_and_fasta_in_the_sandbox() {
    let p = open(&shared_cache());
    for file in ["uniprot/multi_ex.txt", "uniprot/multi_ex.fasta"] {
        let t = one_batch(
            &parse(&p, "uniprot-entries", file, serde_json::json!({}))
                .await
                .expect(file),
        );
        let accession = t
            .column_by_name("accession")
            .expect("accession")
            .as_string::<i32>();
        assert_eq!(
            accession.iter().flatten().collect::<Vec<_>>(),
            [
                "P00750", "P56540", "Q51858", "Q51481", "Q8NE62", "P00981", "P28799", "Q01436"
            ],
            "{file}"
        );
        let length = t
            .column_by_name("length")
            .expect("length")
            .as_primitive::<arrow_array::types::Int64Type>();
        assert_eq!(length.value(0), 562, "{file}");
    }
    // UniProt XML too (read record by record with the SDK's `xml` helper).
    let t = one_batch(
        &parse(
            &p,
            "uniprot-entries",
            "uniprot/Q13639.xml",
            serde_json::json!({}),
        )
        .await
        .expect("XML"),
    );
    let name = t
        .column_by_name("entry_name")
        .expect("entry_name")
        .as_string::<i32>();
    assert_eq!(name.value(0), "5HT4R_HUMAN");
}

#[tokio::test]
async fn pubmed_reads_efetch_xml_in_the_sandbox() {
    let p = open(&shared_cache());
    let t = one_batch(
        &parse(&p, "pubmed", "pubmed/pubmed4.xml", serde_json::json!({}))
            .await
            .expect("efetch XML"),
    );
    // One article, though the file holds 50 PMIDs (the other 49 are cited articles).
    assert_eq!(t.num_rows(), 1);
    let text = |name: &str| {
        t.column_by_name(name)
            .expect(name)
            .as_string::<i32>()
            .value(0)
            .to_owned()
    };
    assert_eq!(text("pmid"), "27797938");
    assert_eq!(text("doi"), "10.1136/gutjnl-2016-312510");
    let mesh = t
        .column_by_name("mesh_terms")
        .expect("mesh")
        .as_list::<i32>()
        .value(0);
    let mesh = mesh.as_string::<i32>();
    assert_eq!(mesh.len(), 21);
    assert_eq!(mesh.value(0), "Adenocarcinoma");
    // An esearch answer with no hits is not an efetch result: refused by name.
    let err = parse(&p, "pubmed", "pubmed/esearch8.xml", serde_json::json!({}))
        .await
        .expect_err("esearch XML");
    assert!(err.to_string().contains("eSearchResult"), "{err}");
}

/// Serves `app` on a loopback port.
pub(crate) async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A local stand-in for rest.uniprot.org serving the recorded entries: `/uniprotkb/{acc}.{fmt}`
/// (the real Q13639.xml; 404 for others) and a search whose two pages hold the eight entries of
/// the real multi_ex.txt, linked by `Link: <...>; rel="next"` as UniProt does.
pub(crate) async fn uniprot_upstream() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use axum::extract::{Path, RawQuery, State};
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    type Seen = std::sync::Arc<std::sync::Mutex<Vec<String>>>;
    let flat = String::from_utf8(
        std::fs::read(shared().join("fixtures/uniprot/multi_ex.txt")).expect("fixture"),
    )
    .expect("utf-8");
    let entries: Vec<String> = flat.split_inclusive("//\n").map(str::to_owned).collect();
    assert_eq!(entries.len(), 8);
    let pages = std::sync::Arc::new([entries[..4].concat(), entries[4..].concat()]);
    async fn entry(
        State((seen, _)): State<(Seen, std::sync::Arc<[String; 2]>)>,
        Path(file): Path<String>,
    ) -> axum::response::Response {
        seen.lock()
            .expect("lock")
            .push(format!("/uniprotkb/{file}"));
        if file == "Q13639.xml" {
            let body =
                std::fs::read(shared().join("fixtures/uniprot/Q13639.xml")).expect("fixture");
            return (
                [
                    (header::CONTENT_TYPE, "application/xml"),
                    (header::ETAG, "\"q13639-v1\""),
                    (header::LAST_MODIFIED, "Wed, 13 Nov 2024 00:00:00 GMT"),
                    (
                        header::HeaderName::from_static("x-uniprot-release"),
                        "2024_06",
                    ),
                ],
                body,
            )
                .into_response();
        }
        (StatusCode::NOT_FOUND, "Error messages\nResource not found").into_response()
    }
    async fn search(
        State((seen, pages)): State<(Seen, std::sync::Arc<[String; 2]>)>,
        headers: axum::http::HeaderMap,
        RawQuery(q): RawQuery,
    ) -> axum::response::Response {
        let q = q.unwrap_or_default();
        seen.lock()
            .expect("lock")
            .push(format!("/uniprotkb/search?{q}"));
        let second = q.contains("cursor=page2");
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut res = (
            [
                (header::CONTENT_TYPE, "text/plain;format=flatfile"),
                (header::HeaderName::from_static("x-total-results"), "8"),
            ],
            pages[usize::from(second)].clone(),
        )
            .into_response();
        if !second {
            let next = format!("<http://{host}/uniprotkb/search?{q}&cursor=page2>; rel=\"next\"");
            res.headers_mut()
                .insert(header::LINK, next.parse().expect("header"));
        }
        res
    }
    let seen: Seen = Default::default();
    let app = axum::Router::new()
        .route("/uniprotkb/search", axum::routing::get(search))
        .route("/uniprotkb/{file}", axum::routing::get(entry))
        .with_state((seen.clone(), pages));
    (serve(app).await, seen)
}

/// Lets a connector reach the local stand-in at `addr`, and nothing else.
fn grant(addr: std::net::SocketAddr) -> lake_host::config::PluginOverride {
    lake_host::config::PluginOverride {
        hosts: vec![format!("http://{addr}")],
        ..Default::default()
    }
}

/// The bundled plugins, with `rules` (hosts, limits, credentials) for plugin `name`.
fn granting(name: &str, rules: lake_host::config::PluginOverride) -> Plugins {
    let cfg = lake_host::config::PluginsConfig {
        cache_dir: shared_cache(),
        dir: shared_cache().join("none"),
        overrides: [(name.to_owned(), rules)].into(),
        ..lake_host::config::PluginsConfig::default()
    };
    Plugins::open(&cfg).expect("runtime")
}

async fn collect(
    p: &Plugins,
    name: &str,
    params: serde_json::Value,
) -> (
    Result<Vec<lake_host::plugins::Fetch>, InvokeError>,
    Vec<lake_host::plugins::Part>,
) {
    let (inv, parts) = crate::connectors::collect_from(p, name, params).await;
    (inv.result, parts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uniprot_connector_fetches_entries_and_follows_search_pages() {
    let (addr, seen) = uniprot_upstream().await;
    let p = granting("uniprot", grant(addr));
    let base = format!("http://{addr}");

    // An entry by accession, byte for byte, with the upstream's version facts.
    let (fetches, parts) = collect(
        &p,
        "uniprot",
        serde_json::json!({"accessions": ["Q13639"], "format": "xml", "base_url": base}),
    )
    .await;
    let fetches = fetches.expect("collected");
    assert_eq!(fetches.len(), 1);
    let body: Vec<u8> = parts.iter().flat_map(|x| x.bytes.clone()).collect();
    assert_eq!(
        body,
        std::fs::read(shared().join("fixtures/uniprot/Q13639.xml")).expect("fixture")
    );
    let last = parts.last().expect("parts");
    assert_eq!(last.name, "Q13639.xml");
    assert!(
        last.facts
            .contains(&("x-uniprot-release".into(), "2024_06".into())),
        "{:?}",
        last.facts
    );
    assert!(
        last.facts
            .contains(&("etag".into(), "\"q13639-v1\"".into())),
        "{:?}",
        last.facts
    );
    // The entry's own version, from `<entry ... version="95">`.
    assert!(
        last.facts.contains(&("entry_version".into(), "95".into())),
        "{:?}",
        last.facts
    );

    // A search: both pages, following the Link header; the pages parse to the eight entries.
    let (fetches, parts) = collect(
        &p,
        "uniprot",
        serde_json::json!({"query": "organism_id:9606 OR reviewed:true", "page_size": 4, "base_url": base}),
    )
    .await;
    assert_eq!(fetches.expect("collected").len(), 2);
    let names: Vec<&str> = parts
        .iter()
        .filter(|x| x.last)
        .map(|x| x.name.as_str())
        .collect();
    assert_eq!(names, ["search-0001.txt", "search-0002.txt"]);
    let all: Vec<u8> = parts.iter().flat_map(|x| x.bytes.clone()).collect();
    let bytes = bytes::Bytes::from(all);
    let params = lake_host::plugins::params_from_json(&serde_json::json!({})).expect("params");
    let t = p
        .parse(
            "uniprot-entries",
            params,
            Box::pin(futures::stream::iter([Ok(bytes)])),
        )
        .await
        .result
        .expect("the collected pages parse");
    let t = one_batch(&t);
    let accession = t
        .column_by_name("accession")
        .expect("accession")
        .as_string::<i32>();
    assert_eq!(accession.len(), 8);
    assert_eq!(
        (accession.value(0), accession.value(7)),
        ("P00750", "Q01436")
    );
    let requests = seen.lock().expect("lock").clone();
    assert!(
        requests.iter().any(
            |r| r.contains("query=organism_id%3A9606%20OR%20reviewed%3Atrue")
                && r.contains("size=4")
        ),
        "{requests:?}"
    );

    // A missing entry is reported at once, by accession, with one request (no retries on a 404).
    let before = seen.lock().expect("lock").len();
    let (result, _) = collect(
        &p,
        "uniprot",
        serde_json::json!({"accessions": ["P99999"], "base_url": base}),
    )
    .await;
    let err = result.expect_err("404");
    assert!(
        err.to_string().contains("P99999") && err.to_string().contains("404"),
        "{err}"
    );
    assert_eq!(
        seen.lock().expect("lock").len(),
        before + 1,
        "one request, no retries"
    );

    // The real upstream is not granted: refused by the host, nothing sent.
    let (result, _) = collect(&p, "uniprot", serde_json::json!({"accessions": ["P12345"]})).await;
    let err = result.expect_err("not granted");
    assert!(err.to_string().contains("rest.uniprot.org"), "{err}");
}

/// A local stand-in for E-utilities serving recorded answers: esearch JSON (the real covid-19
/// answer, with the `webenv` and `querykey` that `usehistory=y` adds; the real no-hits answer),
/// efetch XML (the real pubmed1.xml) and esummary JSON. Every request's path and query is kept,
/// with its arrival time.
pub(crate) async fn eutils_upstream() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use axum::extract::{Path, RawQuery, State};
    use axum::http::header;
    use axum::response::IntoResponse;
    type Seen = std::sync::Arc<std::sync::Mutex<Vec<String>>>;
    async fn eutil(
        State(seen): State<Seen>,
        Path(tool): Path<String>,
        RawQuery(q): RawQuery,
    ) -> axum::response::Response {
        let q = q.unwrap_or_default();
        // When it arrived, in microseconds since the epoch, after ` @`.
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        seen.lock()
            .expect("lock")
            .push(format!("/{tool}?{q} @{at}"));
        let read = |name: &str| {
            std::fs::read(shared().join("fixtures/pubmed").join(name)).expect("fixture")
        };
        let (kind, body) = match tool.as_str() {
            "esearch.fcgi" if q.contains("zxqwvjkplmhftyrbsound12345678unique") => {
                ("application/json; charset=UTF-8", read("search_empty.json"))
            }
            "esearch.fcgi" => {
                let mut v: serde_json::Value =
                    serde_json::from_slice(&read("search_covid19.json")).expect("json");
                v["esearchresult"]["webenv"] = "MCID_6a1b2c3d4e5f".into();
                v["esearchresult"]["querykey"] = "1".into();
                (
                    "application/json; charset=UTF-8",
                    serde_json::to_vec(&v).expect("json"),
                )
            }
            "efetch.fcgi" => ("text/xml; charset=UTF-8", read("pubmed1.xml")),
            "esummary.fcgi" => (
                "application/json; charset=UTF-8",
                read("summary_25760099.json"),
            ),
            _ => return axum::http::StatusCode::NOT_FOUND.into_response(),
        };
        ([(header::CONTENT_TYPE, kind)], body).into_response()
    }
    let seen: Seen = Default::default();
    let app = axum::Router::new()
        .route("/entrez/eutils/{tool}", axum::routing::get(eutil))
        .with_state(seen.clone());
    (serve(app).await, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ncbi_connector_searches_on_the_history_server_then_fetches_in_batches() {
    use lake_host::config::{Credentials, PluginOverride, Secret};
    let (addr, seen) = eutils_upstream().await;
    let p = granting(
        "ncbi",
        PluginOverride {
            credentials: Credentials {
                query: [
                    ("tool".to_owned(), Secret::new("lake")),
                    ("email".to_owned(), Secret::new("lab@example.org")),
                    ("api_key".to_owned(), Secret::new("s3cret")),
                ]
                .into(),
                ..Default::default()
            },
            ..grant(addr)
        },
    );
    let base = format!("http://{addr}/entrez/eutils");

    let (fetches, parts) = collect(
        &p,
        "ncbi",
        serde_json::json!({"term": "covid-19", "max_records": 2, "batch_size": 2, "summary": true, "base_url": base}),
    )
    .await;
    let fetches = fetches.expect("collected");
    let names: Vec<&str> = parts
        .iter()
        .filter(|x| x.last)
        .map(|x| x.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["esearch.json", "efetch-0001.xml", "esummary-0001.json"]
    );
    let search = parts
        .iter()
        .find(|x| x.name == "esearch.json")
        .expect("search");
    assert!(
        search.facts.contains(&("count".into(), "504475".into())),
        "{:?}",
        search.facts
    );
    let requests = seen.lock().expect("lock").clone();
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert!(
        requests[0].starts_with("/esearch.fcgi?db=pubmed&term=covid-19&usehistory=y"),
        "{requests:?}"
    );
    assert!(
        requests[1].contains("query_key=1&WebEnv=MCID_6a1b2c3d4e5f&retstart=0&retmax=2"),
        "{requests:?}"
    );
    // NCBI's tool, email and key reach NCBI; the plugin and provenance never see the key.
    assert!(
        requests
            .iter()
            .all(|r| r.contains("tool=lake") && r.contains("api_key=s3cret")),
        "{requests:?}"
    );
    assert!(
        fetches.iter().all(|f| !f.url.contains("s3cret")),
        "{fetches:?}"
    );

    // The fetched batch is the real efetch XML and parses to its two articles.
    let xml: Vec<u8> = parts
        .iter()
        .filter(|x| x.name == "efetch-0001.xml")
        .flat_map(|x| x.bytes.clone())
        .collect();
    let params = lake_host::plugins::params_from_json(&serde_json::json!({})).expect("params");
    let t = p
        .parse(
            "pubmed",
            params,
            Box::pin(futures::stream::iter([Ok(bytes::Bytes::from(xml))])),
        )
        .await
        .result
        .expect("efetch parses");
    let t = one_batch(&t);
    let pmid = t.column_by_name("pmid").expect("pmid").as_string::<i32>();
    assert_eq!((pmid.value(0), pmid.value(1)), ("12091962", "9997"));

    // No hits: the answer is collected (it says why) and nothing is fetched.
    let before = seen.lock().expect("lock").len();
    let (fetches, parts) = collect(
        &p,
        "ncbi",
        serde_json::json!({"term": "zxqwvjkplmhftyrbsound12345678unique", "base_url": base}),
    )
    .await;
    assert_eq!(fetches.expect("collected").len(), 1);
    assert_eq!(parts.len(), 1);
    assert!(parts[0].facts.contains(&("count".into(), "0".into())));
    assert_eq!(seen.lock().expect("lock").len(), before + 1);
}

/// A local stand-in for GEO's acc.cgi serving recorded SOFT text: GSM804 (the real old sample page
/// in GSE16.txt) and GSE105845 (the real family SOFT); 404 for anything else.
pub(crate) async fn geo_upstream() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use axum::extract::{RawQuery, State};
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    type Seen = std::sync::Arc<std::sync::Mutex<Vec<String>>>;
    async fn acc(State(seen): State<Seen>, RawQuery(q): RawQuery) -> axum::response::Response {
        let q = q.unwrap_or_default();
        seen.lock()
            .expect("lock")
            .push(format!("/geo/query/acc.cgi?{q}"));
        let file = if q.starts_with("acc=GSM804&") {
            "GSE16.txt"
        } else if q.starts_with("acc=GSE105845&") {
            "GSE105845_family.soft"
        } else {
            return (StatusCode::NOT_FOUND, "No items found").into_response();
        };
        let body = std::fs::read(shared().join("fixtures/geo").join(file)).expect("fixture");
        ([(header::CONTENT_TYPE, "text/plain")], body).into_response()
    }
    let seen: Seen = Default::default();
    /// GEO's download tree: the recorded series matrix of GSE285754, gzipped as GEO serves it.
    async fn download(
        State(seen): State<Seen>,
        axum::extract::Path(path): axum::extract::Path<String>,
    ) -> axum::response::Response {
        seen.lock()
            .expect("lock")
            .push(format!("/geo/series/{path}"));
        if path != "GSE285nnn/GSE285754/matrix/GSE285754_series_matrix.txt.gz" {
            return (StatusCode::NOT_FOUND, "Not Found").into_response();
        }
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../plugins/geo-matrix/fixtures/GSE285754_series_matrix.txt.gz"
        ))
        .expect("fixture");
        (
            [
                (header::CONTENT_TYPE, "application/x-gzip"),
                (header::LAST_MODIFIED, "Fri, 17 Jan 2025 15:21:09 GMT"),
            ],
            body,
        )
            .into_response()
    }
    let app = axum::Router::new()
        .route("/geo/query/acc.cgi", axum::routing::get(acc))
        .route("/geo/series/{*path}", axum::routing::get(download))
        .with_state(seen.clone());
    (serve(app).await, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geo_connector_collects_soft_records_with_their_update_dates() {
    let (addr, seen) = geo_upstream().await;
    let p = granting("geo", grant(addr));
    let base = format!("http://{addr}/geo");

    let (fetches, parts) = collect(
        &p,
        "geo",
        serde_json::json!({"accessions": ["GSM804", "GSE105845"], "view": "full", "base_url": base}),
    )
    .await;
    assert_eq!(fetches.expect("collected").len(), 2);
    let requests = seen.lock().expect("lock").clone();
    assert_eq!(
        requests[0],
        "/geo/query/acc.cgi?acc=GSM804&targ=self&view=full&form=text"
    );
    let ends: Vec<&lake_host::plugins::Part> = parts.iter().filter(|x| x.last).collect();
    assert_eq!(
        ends.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(),
        ["GSM804.soft", "GSE105845.soft"]
    );
    assert!(
        ends[1]
            .facts
            .contains(&("geo_last_update_date".into(), "Oct 29 2017".into())),
        "{:?}",
        ends[1].facts
    );
    assert!(
        !ends[0]
            .facts
            .iter()
            .any(|(k, _)| k == "geo_last_update_date")
    );

    // The collected sample page parses to its data table.
    let soft: Vec<u8> = parts
        .iter()
        .filter(|x| x.name == "GSM804.soft")
        .flat_map(|x| x.bytes.clone())
        .collect();
    assert_eq!(
        soft,
        std::fs::read(shared().join("fixtures/geo/GSE16.txt")).expect("fixture")
    );
    let params = lake_host::plugins::params_from_json(&serde_json::json!({"table": "values"}))
        .expect("params");
    let t = p
        .parse(
            "geo-soft",
            params,
            Box::pin(futures::stream::iter([Ok(bytes::Bytes::from(soft))])),
        )
        .await
        .result
        .expect("parses");
    assert_eq!(t.num_rows(), 20);

    // A missing record: reported at once, by name. A file over max_bytes: refused.
    let (result, _) = collect(
        &p,
        "geo",
        serde_json::json!({"accessions": ["GSM999999"], "base_url": base}),
    )
    .await;
    let err = result.expect_err("404");
    assert!(
        err.to_string().contains("GSM999999") && err.to_string().contains("404"),
        "{err}"
    );
    let (result, _) = collect(
        &p,
        "geo",
        serde_json::json!({"accessions": ["GSE105845"], "max_bytes": 100, "base_url": base}),
    )
    .await;
    let err = result.expect_err("too large");
    assert!(err.to_string().contains("max_bytes"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_collections_share_one_rate_limit() {
    let (addr, seen) = eutils_upstream().await;
    let p = granting(
        "ncbi",
        lake_host::config::PluginOverride {
            requests_per_sec: Some(10.0),
            ..grant(addr)
        },
    );
    let t = crate::http_api::embedded_with(1 << 30, Some(p)).await;
    let base = format!("http://{addr}/entrez/eutils");
    // Ten collections at once through the lake's own route, each an esearch and one efetch: 20
    // requests at 10 a second.
    let mut jobs = Vec::new();
    for i in 0..10 {
        let (status, job) = t
            .call(
                axum::http::Method::POST,
                "/collections",
                Some(serde_json::json!({
                    "source": "ncbi",
                    "external_id": format!("covid-19-run{i}"),
                    "params": {"term": format!("covid-19 run{i}"), "max_records": 2, "batch_size": 2, "base_url": base},
                })),
            )
            .await;
        assert_eq!(status, axum::http::StatusCode::ACCEPTED, "{job}");
        jobs.push(job["id"].as_str().expect("job id").to_owned());
    }
    for id in &jobs {
        let mut job = serde_json::Value::Null;
        for _ in 0..400 {
            job = t
                .call(axum::http::Method::GET, &format!("/collections/{id}"), None)
                .await
                .1;
            if job["status"] == "succeeded" || job["status"] == "failed" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["result"]["requests"], 2, "{job}");
    }
    let mut times: Vec<u128> = seen
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|r| r.rsplit_once(" @")?.1.parse().ok())
        .collect();
    times.sort_unstable();
    assert_eq!(times.len(), 20);
    // Measured at the upstream: the 20 arrivals span at least 19 gaps of 100 ms (less jitter),
    // and no two come closer than half a gap.
    let span = times[19] - times[0];
    assert!(span >= 1_700_000, "20 requests in {span} µs");
    let closest = times.windows(2).map(|w| w[1] - w[0]).min().unwrap_or(0);
    assert!(closest >= 50_000, "two requests {closest} µs apart");
}
