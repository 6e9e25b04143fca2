//! Facts read by hand from the fixtures (`fixtures/SOURCES.md`).

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use lake_sdk::{Params, Parser, PluginError, Result};

use super::GeoMatrix;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse(
    input: &[u8],
    params: serde_json::Value,
    chunk: usize,
) -> Result<(SchemaRef, RecordBatch)> {
    let mut p = GeoMatrix::start(Params::from_json(&params))?;
    let mut batches = Vec::new();
    for c in input.chunks(chunk.max(1)) {
        batches.extend(p.push(c)?);
    }
    let (schema, rest) = p.finish()?;
    batches.extend(rest);
    for b in &batches {
        assert_eq!(b.schema(), schema, "every batch has the table's schema");
    }
    let columns = (0..schema.fields().len())
        .map(|i| {
            let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
            if parts.is_empty() {
                arrow_array::new_empty_array(schema.field(i).data_type())
            } else {
                arrow_select::concat::concat(&parts).expect("concat")
            }
        })
        .collect();
    Ok((
        schema.clone(),
        RecordBatch::try_new(schema, columns).expect("table"),
    ))
}

fn strings(b: &RecordBatch, name: &str) -> Vec<String> {
    let i = b.schema().index_of(name).expect("column");
    b.column(i)
        .as_string::<i32>()
        .iter()
        .map(|v| v.unwrap_or_default().to_owned())
        .collect()
}

fn list_row(b: &RecordBatch, name: &str, row: usize) -> Vec<String> {
    let i = b.schema().index_of(name).expect("column");
    let v = b.column(i).as_list::<i32>().value(row);
    v.as_string::<i32>()
        .iter()
        .map(|v| v.unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn samples_table_has_one_row_per_sample_with_characteristics_as_lists() {
    let (schema, t) = parse(
        &fixture("GSE285754_series_matrix.txt"),
        serde_json::json!({}),
        4096,
    )
    .expect("samples");
    assert_eq!(t.num_rows(), 18);
    let samples = strings(&t, "sample");
    assert_eq!(samples[0], "GSM8708195");
    assert_eq!(samples[17], "GSM8708212");
    assert_eq!(strings(&t, "title")[0], "AD-Veh-rep1");
    assert_eq!(
        list_row(&t, "characteristics_ch1", 0),
        [
            "tissue: fresh-frozen brain tissue",
            "Sex: male",
            "strain: 5xFAD",
            "ev treatment: No",
            "ev cell line: n/a"
        ]
    );
    let strains = (0..18)
        .map(|r| list_row(&t, "characteristics_ch1", r)[2].clone())
        .collect::<Vec<_>>();
    assert_eq!(strains.iter().filter(|s| *s == "strain: 5xFAD").count(), 14);
    assert_eq!(
        strains.iter().filter(|s| *s == "strain: C57BL/6J").count(),
        4
    );
    assert_eq!(strings(&t, "data_row_count")[0], "757");
    assert_eq!(strings(&t, "platform_id")[5], "GPL30083");
    assert!(matches!(
        schema.field_with_name("title").expect("title").data_type(),
        DataType::Utf8
    ));
    assert!(
        schema.field_with_name("geo_accession").is_err(),
        "it is the sample column"
    );
}

#[test]
fn values_are_floats_in_batches_and_gzip_reads_the_same() {
    let plain = fixture("GSE285754_series_matrix.txt");
    let (schema, t) = parse(&plain, serde_json::json!({"table": "values"}), 1000).expect("values");
    assert_eq!(schema.fields().len(), 19);
    assert_eq!(schema.field(1).name(), "GSM8708195");
    assert_eq!(t.num_rows(), 757);
    let ids = strings(&t, "ID_REF");
    assert_eq!((ids[0].as_str(), ids[756].as_str()), ("1", "757"));
    let first = t.column(1).as_primitive::<Float64Type>();
    assert_eq!(first.value(0), 25.99);
    assert_eq!(first.value(1), 29.42);
    assert_eq!(t.column(2).as_primitive::<Float64Type>().value(0), 30.3);

    let packed = fixture("GSE285754_series_matrix.txt.gz");
    for table in ["samples", "series", "values"] {
        let params = serde_json::json!({ "table": table });
        let want = parse(&plain, params.clone(), 65536).expect("plain");
        for chunk in [1, 333, 1 << 20] {
            assert_eq!(
                parse(&packed, params.clone(), chunk).expect("gzip"),
                want,
                "{table} {chunk}"
            );
        }
    }
    let (_, text) = parse(
        &plain,
        serde_json::json!({"table": "values", "values": "text"}),
        500,
    )
    .expect("text");
    assert_eq!(strings(&text, "GSM8708195")[0], "25.99");
}

#[test]
fn series_attributes_keep_repeated_keys() {
    let (_, t) = parse(
        &fixture("GSE285754_series_matrix.txt"),
        serde_json::json!({"table": "series"}),
        4096,
    )
    .expect("series");
    let keys = strings(&t, "key");
    let at = |k: &str| keys.iter().position(|x| x == k).expect(k);
    assert_eq!(list_row(&t, "values", at("geo_accession")), ["GSE285754"]);
    assert!(
        list_row(&t, "values", at("title"))[0]
            .starts_with("Transcriptomic Profile of Neuroinflammation in Alzheimer’s")
    );
    // GEO writes the series' sample ids as one space-separated value.
    let ids = list_row(&t, "values", at("sample_id"));
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0].split_whitespace().count(), 18);
}

#[test]
fn an_rna_seq_series_has_samples_and_an_empty_matrix() {
    let packed = fixture("GSE99709_series_matrix.txt.gz");
    let (_, s) = parse(&packed, serde_json::json!({}), 512).expect("samples");
    assert_eq!(s.num_rows(), 12);
    assert_eq!(strings(&s, "sample")[0], "GSM2650749");
    assert_eq!(strings(&s, "sample")[11], "GSM2650760");
    assert_eq!(
        list_row(&s, "characteristics_ch1", 0),
        [
            "strain background: backcrossed onto C57BL/6",
            "genotype/variation: Stat3 flox/flox",
            "cell type: Primary Cortical Oligodendrocyte Progenitor (OLP) cells",
            "viral treatment: Ad5CMV-eGFP",
            "treated with: Vehicle"
        ]
    );
    let (schema, v) = parse(&packed, serde_json::json!({"table": "values"}), 512).expect("values");
    assert_eq!(v.num_rows(), 0);
    assert_eq!(schema.fields().len(), 13);
}

#[test]
fn bad_input_is_refused_with_its_line() {
    let plain = String::from_utf8(fixture("GSE285754_series_matrix.txt")).expect("utf-8");
    let err = |input: &str, params: serde_json::Value| match parse(input.as_bytes(), params, 100) {
        Err(PluginError::InvalidInput(m)) => m,
        other => panic!("expected invalid input, got {other:?}"),
    };
    let values = serde_json::json!({"table": "values"});
    // A value that is no number, on line 68.
    let broken = plain.replacen("\t29.42\t", "\tabc\t", 1);
    let m = err(&broken, values.clone());
    assert!(m.contains("line 68") && m.contains("\"abc\""), "{m}");
    // A row short of a value.
    let short = plain.replacen("\t29.42\t", "\t", 1);
    assert!(err(&short, values.clone()).contains("line 68"));
    // Cut short inside the matrix.
    let cut: String = plain.split_inclusive('\n').take(400).collect();
    let cut = cut.as_str();
    assert!(err(cut, values.clone()).contains("cut short"));
    // Not a series matrix at all.
    assert!(err("ID\tVALUE\n1\t2\n", serde_json::json!({})).contains("not a GEO series matrix"));
    assert!(err("", serde_json::json!({})).contains("empty"));
    // A sample line with the wrong number of values.
    let wrong = plain.replacen("\"AD-Veh-rep1\"\t", "", 1);
    assert!(
        err(&wrong, serde_json::json!({})).contains("!Sample_title has 17 values for 18 samples")
    );
    // Null markers are nulls.
    let nulls = plain.replacen("\t29.42\t", "\tnull\t", 1);
    let (_, t) = parse(nulls.as_bytes(), values, 100).expect("nulls");
    assert!(t.column(1).is_null(1));
    assert!(matches!(
        GeoMatrix::start(Params::from_json(&serde_json::json!({"table": "matrix"}))),
        Err(PluginError::InvalidParams(_))
    ));
}
