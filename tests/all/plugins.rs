//! The plugin runtime with the bundled components: the CSV fixtures through the sandboxed `csv`
//! parser (csv-spectrum's JSON is the oracle), steps over parsed tables, the registry and the cache.

use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use lake_host::config::PluginsConfig;
use lake_host::plugins::{InvokeError, Kind, Plugins, Table};

pub fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

/// A compiled-component cache shared by the tests: entries are keyed by component SHA-256 and engine
/// hash and written by atomic rename, so sharing is safe and spares each test a compile.
pub fn shared_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")
}

pub fn open(cache: &Path) -> Plugins {
    let cfg = PluginsConfig {
        cache_dir: cache.to_path_buf(),
        dir: cache.join("none"),
        ..PluginsConfig::default()
    };
    Plugins::open(&cfg).expect("plugin runtime")
}

fn stream(bytes: Vec<u8>, chunk: usize) -> lake_host::blob::ByteStream {
    let chunks: Vec<std::io::Result<bytes::Bytes>> = bytes
        .chunks(chunk.max(1))
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

pub async fn parse(
    p: &Plugins,
    file: &Path,
    params: serde_json::Value,
) -> Result<Table, InvokeError> {
    let bytes = std::fs::read(file).expect("fixture");
    let params = lake_host::plugins::params_from_json(&params).expect("params");
    p.parse("csv", params, stream(bytes, 7)).await.result
}

/// A table's rows as JSON objects of strings; nulls are absent values.
fn rows_as_strings(t: &Table) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let mut rows = Vec::new();
    for b in &t.batches {
        for r in 0..b.num_rows() {
            let mut obj = serde_json::Map::new();
            for (i, f) in b.schema().fields().iter().enumerate() {
                let col = b.column(i).as_string::<i32>();
                let v = if col.is_null(r) {
                    serde_json::Value::Null
                } else {
                    serde_json::Value::String(col.value(r).to_owned())
                };
                obj.insert(f.name().clone(), v);
            }
            rows.push(obj);
        }
    }
    rows
}

#[tokio::test]
async fn csv_spectrum_matches_its_oracle() {
    let p = open(&shared_cache());
    let dir = shared().join("fixtures/csv/csv-spectrum");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir.join("csvs")).expect("csvs") {
        let path = entry.expect("entry").path();
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("name")
            .to_owned();
        let oracle: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join(format!("json/{stem}.json"))).expect("oracle"),
        )
        .expect("oracle JSON");
        // One oracle is a bare object rather than a list of rows.
        let mut oracle: Vec<serde_json::Map<String, serde_json::Value>> = match oracle {
            serde_json::Value::Array(rows) => rows
                .into_iter()
                .filter_map(|r| r.as_object().cloned())
                .collect(),
            serde_json::Value::Object(row) => vec![row],
            other => panic!("{stem}: unexpected oracle {other}"),
        };
        let table = parse(&p, &path, serde_json::json!({"infer_types": false}))
            .await
            .unwrap_or_else(|e| panic!("{stem}: {e}"));
        let mut got = rows_as_strings(&table);
        if stem == "location_coordinates" {
            // Upstream's oracle gives the phone number as 1234567890; its CSV says 2095257564.
            assert_eq!(got[0]["Contact Phone Number"], "2095257564");
            got[0].remove("Contact Phone Number");
            oracle[0].remove("Contact Phone Number");
        }
        // CSV cannot tell an empty field from a missing one: the parser reads both as null, which
        // stands for the oracle's "".
        let want: Vec<_> = oracle
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|(k, v)| (k, if v == "" { serde_json::Value::Null } else { v }))
                    .collect::<serde_json::Map<_, _>>()
            })
            .collect();
        assert_eq!(got, want, "{stem}");
        checked += 1;
    }
    assert_eq!(checked, 12, "every csv-spectrum file was checked");
}

#[tokio::test]
async fn csvkit_fixtures_parse_or_fail_clearly() {
    let p = open(&shared_cache());
    let dir = shared().join("fixtures/csv");

    let iris = parse(&p, &dir.join("iris.csv"), serde_json::json!({}))
        .await
        .expect("iris");
    assert_eq!(iris.num_rows(), 150);
    assert_eq!(
        iris.schema.field(0).data_type(),
        &arrow_schema::DataType::Float64
    );
    assert_eq!(
        iris.schema.field(4).data_type(),
        &arrow_schema::DataType::Utf8
    );

    let bom = parse(
        &p,
        &dir.join("test_utf8_bom.csv"),
        serde_json::json!({"infer_types": false}),
    )
    .await
    .expect("bom");
    assert_eq!(
        bom.schema.field(0).name(),
        "foo",
        "the byte-order mark is not part of the first name"
    );
    assert_eq!(rows_as_strings(&bom)[1]["baz"], "ʤ");

    let latin = parse(
        &p,
        &dir.join("test_latin1.csv"),
        serde_json::json!({"encoding": "latin-1", "infer_types": false}),
    )
    .await
    .expect("latin-1");
    assert_eq!(rows_as_strings(&latin)[1]["c"], "©");
    let not_utf8 = parse(&p, &dir.join("test_latin1.csv"), serde_json::json!({}))
        .await
        .expect_err("latin-1 bytes read as UTF-8");
    assert_eq!(not_utf8.code(), "invalid_input", "{not_utf8}");

    let mac = parse(
        &p,
        &dir.join("mac_newlines.csv"),
        serde_json::json!({"infer_types": false}),
    )
    .await
    .expect("CR line ends");
    let rows = rows_as_strings(&mac);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["a"], "Once upon\ra time");

    let bad = parse(&p, &dir.join("bad.csv"), serde_json::json!({}))
        .await
        .expect_err("ragged rows");
    assert_eq!(bad.code(), "invalid_input");
    assert!(
        bad.to_string().contains("line 2"),
        "the error names the line: {bad}"
    );

    let empty = parse(&p, &dir.join("empty.csv"), serde_json::json!({}))
        .await
        .expect_err("empty");
    assert_eq!(empty.code(), "invalid_input");
    assert!(empty.to_string().contains("empty"), "{empty}");

    let bad_param = parse(
        &p,
        &dir.join("iris.csv"),
        serde_json::json!({"delimter": ";"}),
    )
    .await
    .expect_err("typo");
    assert_eq!(bad_param.code(), "invalid_params");
    assert!(bad_param.is_caller_fault());
}

#[tokio::test]
async fn registry_lists_bundled_plugins_and_caches_compiled_components() {
    let cache = tempfile::tempdir().expect("tempdir");
    let p = open(cache.path());
    let csv = p.get("csv").expect("csv is bundled");
    assert_eq!(
        (csv.kind, csv.wit_version.as_str(), csv.source.as_str()),
        (Kind::Parser, "0.1.0", "bundled")
    );
    assert_eq!(csv.sha256.len(), 64);
    assert!(
        csv.imports
            .iter()
            .all(|i| !i.starts_with("wasi:filesystem") && !i.starts_with("wasi:sockets")),
        "{:?}",
        csv.imports
    );
    assert_eq!(p.get("select").map(|m| m.kind), Some(Kind::Step));
    let cached: Vec<_> = std::fs::read_dir(cache.path())
        .expect("cache")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .collect();
    let bundled = p.list().iter().filter(|m| m.source == "bundled").count();
    assert!(
        bundled >= 6,
        "csv, xlsx, select, filter, rename, cast are bundled: {:?}",
        p.list()
    );
    assert_eq!(cached.len(), bundled, "one compiled artifact per component");
    // A second registry on the same cache loads the compiled artifacts instead of compiling again.
    let again = open(cache.path());
    assert_eq!(again.get("csv").map(|m| m.sha256), Some(csv.sha256));
}

#[tokio::test]
async fn select_runs_over_a_parsed_table() {
    let p = open(&shared_cache());
    let iris = parse(
        &p,
        &shared().join("fixtures/csv/iris.csv"),
        serde_json::json!({}),
    )
    .await
    .expect("iris");
    let params = lake_host::plugins::params_from_json(
        &serde_json::json!({"columns": ["species", "sepal_length"]}),
    )
    .expect("params");
    let inv = p.step("select", params, vec![iris.into()]).await;
    let out = inv.result.expect("select");
    let names: Vec<&str> = out
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["species", "sepal_length"]);
    assert_eq!(out.num_rows(), 150);
    assert!(inv.usage.peak_memory_bytes > 0);
    let missing = p
        .step(
            "select",
            lake_host::plugins::params_from_json(&serde_json::json!({"columns": ["nope"]}))
                .expect("params"),
            vec![out.clone().into()],
        )
        .await;
    let err = missing.result.expect_err("missing column");
    assert!(
        err.to_string().contains("species"),
        "names the columns that exist: {err}"
    );
    let _: &[RecordBatch] = &out.batches;
    // An input that fails part-way (storage gone bad mid-read) ends the invocation with that
    // reason, after the plugin took the batches before it.
    let first = out.batches[0].clone();
    let failing = lake_host::plugins::StepInput {
        schema: out.schema.clone(),
        rows: None,
        batches: Box::new([Ok(first), Err("the disk went away".to_owned())].into_iter()),
    };
    let broken = p
        .step(
            "select",
            lake_host::plugins::params_from_json(&serde_json::json!({"columns": ["species"]}))
                .expect("params"),
            vec![failing],
        )
        .await;
    match broken.result {
        Err(lake_host::plugins::InvokeError::Input(m)) => {
            assert!(m.contains("the disk went away"), "{m}")
        }
        other => panic!("expected an input error, got {other:?}"),
    }
}

/// A CSV of `rows` records (about 50 bytes each) with quoted fields holding commas, doubled quotes
/// and newlines, so segment cuts land near records that a naive newline split would break.
fn big_csv(rows: usize, bad_row: Option<usize>) -> Vec<u8> {
    let mut out = b"id,name,score,day\n".to_vec();
    for i in 0..rows {
        let name = match i % 7 {
            0 => format!("\"multi\nline, \"\"{i}\"\"\""),
            3 => format!("\"comma, {i}\""),
            _ => format!("name{i}"),
        };
        if Some(i) == bad_row {
            out.extend_from_slice(format!("{i},{name},1.5,2024-01-01,extra\n").as_bytes());
        } else {
            out.extend_from_slice(
                format!(
                    "{i},{name},{}.25,2024-0{}-1{}\n",
                    i % 1000,
                    1 + i % 9,
                    i % 10
                )
                .as_bytes(),
            );
        }
    }
    out
}

/// Every value of a table as text, row by row, whatever the batch boundaries.
fn flatten(t: &Table) -> Vec<String> {
    let mut out = Vec::new();
    for b in &t.batches {
        let cols: Vec<_> = b
            .columns()
            .iter()
            .map(|c| {
                arrow_cast::display::ArrayFormatter::try_new(c, &Default::default())
                    .expect("formatter")
            })
            .collect();
        for r in 0..b.num_rows() {
            out.push(
                cols.iter()
                    .map(|c| c.value(r).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_csv_parses_in_parallel_with_exactly_the_serial_result() {
    let cache = shared_cache();
    let with = |n: usize| {
        Plugins::open(&PluginsConfig {
            cache_dir: cache.clone(),
            dir: cache.join("none"),
            parse_parallelism: n,
            ..PluginsConfig::default()
        })
        .expect("plugin runtime")
    };
    let (parallel, serial) = (with(2), with(1));
    let data = big_csv(600_000, None);
    assert!(
        data.len() > 20 << 20,
        "large enough to be cut: {}",
        data.len()
    );
    let run = |p: &Plugins, bytes: Vec<u8>| {
        let p = p.clone();
        async move {
            p.parse("csv", Vec::new(), stream(bytes, 1 << 20))
                .await
                .result
        }
    };
    let a = parallel
        .parse("csv", Vec::new(), stream(data.clone(), 1 << 20))
        .await;
    assert_eq!(a.usage.instances, 3, "the head, then two workers");
    let a = a.result.expect("parallel parse");
    let b = serial.parse("csv", Vec::new(), stream(data, 1 << 20)).await;
    assert_eq!(b.usage.instances, 1);
    let b = b.result.expect("serial parse");
    assert_eq!(a.schema.fields(), b.schema.fields());
    assert_eq!(a.num_rows(), 600_000);
    let (fa, fb) = (flatten(&a), flatten(&b));
    assert_eq!(fa.len(), fb.len());
    for (i, (x, y)) in fa.iter().zip(&fb).enumerate() {
        assert_eq!(x, y, "row {i}");
    }
    assert!(fa[7].contains("multi\nline, \"7\""), "{}", fa[7]);

    // A bad record deep in the file: the same error, naming the same line, either way.
    let bad = big_csv(600_000, Some(550_000));
    let ea = run(&parallel, bad.clone()).await.expect_err("bad record");
    let eb = run(&serial, bad).await.expect_err("bad record");
    assert_eq!(ea.to_string(), eb.to_string());
    assert_eq!(ea.code(), "invalid_input");
}

/// Whether a parse is cut is the parser's opt-in (its manifest's `parallel`), never its name: the
/// bundled csv opts in through the bundled list and no other bundled plugin does; withdrawn in
/// lake.toml, the same large csv parse stays in one instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_parser_that_opts_in_is_cut_into_segments() {
    use lake_host::config::PluginOverride;
    use lake_host::plugins::Parallel;
    let cache = shared_cache();
    let with = |parallel: Option<Parallel>| {
        let overrides = parallel
            .map(|p| {
                let o = PluginOverride {
                    parallel: Some(p),
                    ..PluginOverride::default()
                };
                [("csv".to_owned(), o)].into()
            })
            .unwrap_or_default();
        Plugins::open(&PluginsConfig {
            cache_dir: cache.clone(),
            dir: cache.join("none"),
            parse_parallelism: 2,
            overrides,
            ..PluginsConfig::default()
        })
        .expect("plugin runtime")
    };
    let bundled = with(None);
    let listed = bundled.list();
    assert!(listed.len() >= 14, "{} plugins", listed.len());
    for m in &listed {
        let want = if m.name == "csv" {
            Parallel::DelimitedRecords
        } else {
            Parallel::None
        };
        assert_eq!(m.parallel, want, "{}", m.name);
    }
    let shown = serde_json::to_value(bundled.get("csv").expect("csv")).expect("json");
    assert_eq!(shown["parallel"], "delimited-records");

    let withdrawn = with(Some(Parallel::None));
    assert_eq!(
        withdrawn.get("csv").map(|m| m.parallel),
        Some(Parallel::None)
    );
    let data = big_csv(600_000, None);
    let inv = withdrawn
        .parse("csv", Vec::new(), stream(data, 1 << 20))
        .await;
    assert_eq!(inv.usage.instances, 1, "not opted in: one instance");
    assert_eq!(inv.result.expect("serial parse").num_rows(), 600_000);
}

/// A table of `batches` batches of `rows` rows: `id` (every seventh null, values repeating every
/// `modulo`), and a text column derived from the row.
fn keyed(batches: usize, rows: usize, modulo: i64, tag: &str) -> Table {
    use std::sync::Arc;
    let schema = Arc::new(arrow_schema::Schema::new(vec![
        arrow_schema::Field::new("id", arrow_schema::DataType::Int64, true),
        arrow_schema::Field::new(tag, arrow_schema::DataType::Utf8, false),
    ]));
    let batches = (0..batches)
        .map(|b| {
            let ids: arrow_array::Int64Array = (0..rows)
                .map(|r| {
                    let n = (b * rows + r) as i64;
                    (n % 7 != 3).then_some((n * 31) % modulo)
                })
                .collect();
            let text: arrow_array::StringArray = (0..rows)
                .map(|r| Some(format!("{tag}{}", b * rows + r)))
                .collect();
            RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(text)])
                .expect("batch")
        })
        .collect();
    Table { schema, batches }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_split_over_instances_gives_exactly_the_serial_result() {
    let p = open(&shared_cache());
    // 40 left batches against a right table whose keys repeat, so left rows match 0, 1 or more
    // right rows and some match none.
    let left = keyed(40, 500, 5_000, "l");
    let right = keyed(3, 1_000, 1_500, "r");
    for how in ["inner", "left"] {
        let params = lake_host::plugins::params_from_json(
            &serde_json::json!({"on": "id", "how": how, "right_first": true}),
        )
        .expect("params");
        let serial = p
            .step(
                "merge",
                params.clone(),
                vec![right.clone().into(), left.clone().into()],
            )
            .await;
        let split = p
            .step_split(
                "merge",
                params.clone(),
                vec![right.clone().into()],
                left.clone().into(),
                3,
            )
            .await;
        assert_eq!(serial.usage.instances, 1);
        assert_eq!(split.usage.instances, 3, "{how}");
        let (a, b) = (
            serial.result.expect("serial merge"),
            split.result.expect("split merge"),
        );
        assert_eq!(a.schema.fields(), b.schema.fields());
        assert!(a.num_rows() > 5_000, "{how}: {}", a.num_rows());
        let (fa, fb) = (flatten(&a), flatten(&b));
        assert_eq!(fa.len(), fb.len(), "{how}");
        for (i, (x, y)) in fa.iter().zip(&fb).enumerate() {
            assert_eq!(x, y, "{how}: row {i}");
        }
    }
    let params = |v: serde_json::Value| lake_host::plugins::params_from_json(&v).expect("params");

    // A left input failing part-way ends the split run with that reason.
    let mut batches: Vec<Result<RecordBatch, String>> =
        left.batches.iter().cloned().map(Ok).collect();
    batches.insert(25, Err("the disk went away".to_owned()));
    let failing = lake_host::plugins::StepInput {
        schema: left.schema.clone(),
        rows: None,
        batches: Box::new(batches.into_iter()),
    };
    let broken = p
        .step_split(
            "merge",
            params(serde_json::json!({"on": "id", "right_first": true})),
            vec![right.clone().into()],
            failing,
            2,
        )
        .await;
    match broken.result {
        Err(InvokeError::Input(m)) => assert!(m.contains("the disk went away"), "{m}"),
        other => panic!("expected an input error, got {other:?}"),
    }

    // A parameter error reads as it does in one instance.
    let bad = params(serde_json::json!({"on": "nope", "right_first": true}));
    let one = p
        .step(
            "merge",
            bad.clone(),
            vec![right.clone().into(), left.clone().into()],
        )
        .await
        .result
        .expect_err("unknown key");
    let many = p
        .step_split("merge", bad, vec![right.into()], left.into(), 2)
        .await
        .result
        .expect_err("unknown key");
    assert_eq!(one.to_string(), many.to_string());
    assert!(many.to_string().contains("id"), "names the columns: {many}");
}

/// A large CSV parsed into a sink on two instances reaches it whole and in input order; stored
/// through `tables::parse_into_store`, a bad record deep in it fails with the error a single
/// parse of the whole file reports (the segments' failure is parsed again in one instance), and
/// nothing is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_csv_streams_into_its_sink_in_input_order() {
    use std::sync::{Arc, Mutex};
    let cache = shared_cache();
    let with = |n: usize| {
        Plugins::open(&PluginsConfig {
            cache_dir: cache.clone(),
            dir: cache.join("none"),
            parse_parallelism: n,
            ..PluginsConfig::default()
        })
        .expect("plugin runtime")
    };
    let (parallel, serial) = (with(2), with(1));
    let data = big_csv(600_000, None);
    let got = Arc::new(Mutex::new(Vec::new()));
    let into = got.clone();
    let inv = parallel
        .parse_into(
            "csv",
            Vec::new(),
            stream(data.clone(), 1 << 20),
            move |_, b| {
                into.lock().expect("batches").extend(b);
                Ok(())
            },
        )
        .await;
    assert_eq!(inv.usage.instances, 3, "the head, then two workers");
    let schema = inv.result.expect("parallel parse");
    let streamed = Table {
        schema,
        batches: std::mem::take(&mut *got.lock().expect("batches")),
    };
    let whole = serial
        .parse("csv", Vec::new(), stream(data, 1 << 20))
        .await
        .result
        .expect("serial parse");
    assert_eq!(streamed.schema.fields(), whole.schema.fields());
    assert_eq!(streamed.num_rows(), 600_000);
    let (fa, fb) = (flatten(&streamed), flatten(&whole));
    for (i, (x, y)) in fa.iter().zip(&fb).enumerate() {
        assert_eq!(x, y, "row {i}");
    }

    // Stored: the bad record's error is the serial parse's; nothing is left in the store.
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = lake_host::blob::local::LocalStore::open(dir.path().join("objects"))
        .await
        .expect("store");
    use lake_host::blob::BlobStore;
    let bad = big_csv(600_000, Some(550_000));
    let serial_error = serial
        .parse("csv", Vec::new(), stream(bad.clone(), 1 << 20))
        .await
        .result
        .expect_err("bad record");
    blobs
        .put("raw", "in/bad.csv", stream(bad, 1 << 20))
        .await
        .expect("put");
    let to = ("processed", "out/table.parquet");
    let store = |p: Plugins, split: bool| {
        let blobs = &blobs;
        async move {
            let input = blobs.get("raw", "in/bad.csv").await.expect("get");
            lake_host::tables::parse_into_store(
                &p,
                blobs,
                "csv",
                Vec::new(),
                input,
                to,
                128 * 1024,
                split,
            )
            .await
            .expect("the store worked")
        }
    };
    // In segments: the failure asks for one more parse in one instance.
    let (inv, stored) = store(parallel.clone(), true).await;
    assert!(stored.is_none());
    assert_eq!(inv.usage.instances, 3, "the head, then two workers");
    assert!(lake_host::tables::parse_again_serially(&inv, &stored));
    let (inv, stored) = store(parallel.clone(), false).await;
    assert!(stored.is_none());
    assert!(!lake_host::tables::parse_again_serially(&inv, &stored));
    let error = inv.result.expect_err("bad record");
    assert_eq!(error.to_string(), serial_error.to_string());
    assert_eq!(inv.usage.instances, 1, "the error comes from one instance");
    let left = blobs.get("processed", "out/table.parquet").await;
    assert!(left.is_err(), "a failed parse keeps nothing");
}

/// A large gzip CSV parsed into a sink is inflated by the host and cut like a plain one: two
/// workers parse it, and the rows are the plain file's. A gzip stream cut short or damaged is the
/// input's fault, worded as the parsers' own gzip reader words it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_gzip_csv_is_inflated_and_parsed_on_every_core() {
    use lake_host::plugins::PluginErrorKind;
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    let cache = shared_cache();
    let p = Plugins::open(&PluginsConfig {
        cache_dir: cache.clone(),
        dir: cache.join("none"),
        parse_parallelism: 2,
        ..PluginsConfig::default()
    })
    .expect("plugin runtime");
    let data = big_csv(600_000, None);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&data).expect("gzip");
    let gz = gz.finish().expect("gzip");
    assert!(gz.len() < data.len() / 2, "compressed");

    let into = |got: &Arc<Mutex<Vec<RecordBatch>>>| {
        let got = got.clone();
        move |_: &arrow_schema::SchemaRef, b: Option<RecordBatch>| {
            got.lock().expect("batches").extend(b);
            Ok(())
        }
    };
    let got = Arc::new(Mutex::new(Vec::new()));
    let inv = p
        .parse_into("csv", Vec::new(), stream(gz.clone(), 256 << 10), into(&got))
        .await;
    assert_eq!(inv.usage.instances, 3, "the head, then two workers");
    let schema = inv.result.expect("the gzip parses");
    let streamed = Table {
        schema,
        batches: std::mem::take(&mut *got.lock().expect("batches")),
    };
    let whole = p
        .parse("csv", Vec::new(), stream(data, 1 << 20))
        .await
        .result
        .expect("the plain file parses");
    assert_eq!(streamed.schema.fields(), whole.schema.fields());
    assert_eq!(streamed.num_rows(), 600_000);
    assert_eq!(flatten(&streamed), flatten(&whole));

    let cut = gz[..gz.len() * 2 / 3].to_vec();
    // A compression method other than deflate (the magic bytes still say gzip).
    let mut damaged = gz.clone();
    damaged[2] = 7;
    for (what, bytes, says) in [
        ("cut short", cut, "ends early"),
        ("damaged", damaged, "is corrupt"),
    ] {
        let got = Arc::new(Mutex::new(Vec::new()));
        let inv = p
            .parse_into("csv", Vec::new(), stream(bytes, 256 << 10), into(&got))
            .await;
        match inv.result {
            Err(InvokeError::Plugin {
                kind: PluginErrorKind::InvalidInput,
                message,
            }) => assert!(
                message.contains("gzip-compressed input") && message.contains(says),
                "{what}: {message}"
            ),
            other => panic!("{what}: {other:?}"),
        }
    }
}

/// A server starting on a cold cache compiles first what it is asked for: a request for the last
/// bundled plugin waits for the component being compiled when it came and then its own, not for
/// every one listed before it (under load, a cold replica's merges had waited minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_compiles_first_what_it_is_asked_for() {
    let cold = tempfile::tempdir().expect("tempdir");
    let p = Plugins::start(&PluginsConfig {
        cache_dir: cold.path().join("cache"),
        dir: cold.path().join("none"),
        ..PluginsConfig::default()
    })
    .expect("plugin runtime");
    let total = p.load_state().total;
    assert!(total >= 14, "{total} components");
    let geo = p
        .manifest("geo")
        .await
        .expect("geo, the last bundled plugin");
    assert_eq!(geo.kind, Kind::Connector);
    let state = p.load_state();
    assert!(
        state.loaded <= 2 && !state.done && state.pending.len() >= total - 2,
        "geo waited for more than the component in progress: {state:?}"
    );
    // The loader stops at its next component once nobody holds the registry.
    drop(p);
}
