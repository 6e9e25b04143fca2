//! Facts read by hand from the fixtures (`fixtures/SOURCES.md`).

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_schema::SchemaRef;
use lake_sdk::{Params, Parser, PluginError, Result};

use super::GeoSoft;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse(
    input: &[u8],
    params: serde_json::Value,
    chunk: usize,
) -> Result<(SchemaRef, RecordBatch)> {
    let mut p = GeoSoft::start(Params::from_json(&params))?;
    let mut batches = Vec::new();
    for c in input.chunks(chunk.max(1)) {
        batches.extend(p.push(c)?);
    }
    let (schema, rest) = p.finish()?;
    batches.extend(rest);
    let table = arrow_select_concat(&schema, &batches);
    Ok((schema, table))
}

fn arrow_select_concat(schema: &SchemaRef, batches: &[RecordBatch]) -> RecordBatch {
    let columns = (0..schema.fields().len())
        .map(|i| {
            let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
            arrow_select::concat::concat(&parts).expect("concat")
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns).expect("table")
}

/// The attributes table as (entity, id, key, values) rows.
fn attributes(input: &[u8]) -> Vec<(String, String, String, Vec<String>)> {
    let (_, t) = parse(input, serde_json::json!({}), 1 << 20).expect("attributes");
    let text = |i: usize| t.column(i).as_string::<i32>().clone();
    let (entity, id, key) = (text(0), text(1), text(2));
    let values = t.column(3).as_list::<i32>();
    (0..t.num_rows())
        .map(|r| {
            let list = values.value(r);
            let list = list.as_string::<i32>();
            (
                entity.value(r).to_owned(),
                id.value(r).to_owned(),
                key.value(r).to_owned(),
                (0..list.len()).map(|i| list.value(i).to_owned()).collect(),
            )
        })
        .collect()
}

fn values_of<'a>(
    rows: &'a [(String, String, String, Vec<String>)],
    id: &str,
    key: &str,
) -> &'a [String] {
    rows.iter()
        .find(|r| r.1 == id && r.2 == key)
        .map(|r| r.3.as_slice())
        .unwrap_or_else(|| panic!("no {key} for {id}"))
}

fn column<'a>(t: &'a RecordBatch, name: &str) -> &'a arrow_array::StringArray {
    t.column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_string::<i32>()
}

#[test]
fn family_file_keeps_every_block_and_repeated_keys_as_lists() {
    let rows = attributes(&fixture("soft_ex_family.txt"));
    let mut blocks: Vec<(String, String)> =
        rows.iter().map(|r| (r.0.clone(), r.1.clone())).collect();
    blocks.dedup();
    assert_eq!(
        blocks,
        [
            ("PLATFORM", "Murine 15K long oligo array version 2.0"),
            ("SAMPLE", "Control Embyronic Stem Cell Replicate 1"),
            ("SAMPLE", "Control Embyronic Stem Cell Replicate 2"),
            (
                "SAMPLE",
                "Triple-Fusion Transfected Embryonic Stem Cells Replicate 1"
            ),
            ("SERIES", "Murine ES Cells"),
        ]
        .map(|(e, i)| (e.to_owned(), i.to_owned()))
    );
    let platform = "Murine 15K long oligo array version 2.0";
    assert_eq!(
        values_of(&rows, platform, "Platform_contributor"),
        [
            "Jane,Doe",
            "John,A,Smith",
            "Hans,van Elton",
            "John,Smithers Jr",
            "Jie,D,Chen"
        ]
    );
    let protocol = values_of(&rows, platform, "Platform_manufacture_protocol");
    assert_eq!(protocol.len(), 12);
    assert!(
        protocol[0].starts_with("1.  Oligos are arrayed"),
        "{}",
        protocol[0]
    );
    // Latin-1 bytes (the micro sign) read as their characters; trailing tabs trimmed.
    assert!(protocol[1].contains("5 \u{b5}L"), "{}", protocol[1]);
    assert_eq!(values_of(&rows, platform, "Platform_coating"), ["polysine"]);
    // Column descriptions keep their `#`; an empty description is an empty value.
    assert_eq!(values_of(&rows, platform, "#ID"), [""]);
    assert_eq!(values_of(&rows, platform, "#Gene_Sym"), ["Gene symbols"]);
    let sample = "Control Embyronic Stem Cell Replicate 1";
    let characteristics = values_of(&rows, sample, "Sample_characteristics_ch1");
    assert_eq!(characteristics[0], "ES-D3 cell line (CRL-1934)");
    assert!(characteristics.contains(&"Strain: 129/Sv mice".to_owned()));
}

#[test]
fn data_tables_between_markers() {
    let input = fixture("soft_ex_family.txt");
    let (schema, t) = parse(
        &input,
        serde_json::json!({"table": "values", "entity": "platform"}),
        4096,
    )
    .expect("values");
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "entity",
            "id",
            "ID",
            "GB_ACC",
            "Gene_Desc",
            "Gene_Sym",
            "SPOT_ID",
            "SEQUENCE"
        ]
    );
    assert_eq!(t.num_rows(), 20);
    assert_eq!(column(&t, "ID").value(0), "1");
    assert_eq!(column(&t, "GB_ACC").value(0), "U02079");
    assert_eq!(column(&t, "Gene_Sym").value(1), "Gpr3");
    assert!(column(&t, "SPOT_ID").is_null(0), "an empty cell is null");
    assert!(column(&t, "entity").iter().all(|e| e == Some("PLATFORM")));

    // Every sample's table, one after another, with the block's id on each row.
    let (_, samples) = parse(
        &input,
        serde_json::json!({"table": "values", "entity": "SAMPLE"}),
        7,
    )
    .expect("samples");
    let ids = column(&samples, "id");
    assert_eq!(ids.value(0), "Control Embyronic Stem Cell Replicate 1");
    assert_eq!(
        ids.value(samples.num_rows() - 1),
        "Triple-Fusion Transfected Embryonic Stem Cells Replicate 1"
    );
    // One block by id.
    let (_, one) = parse(
        &input,
        serde_json::json!({"table": "values", "id": "Control Embyronic Stem Cell Replicate 2"}),
        64,
    )
    .expect("one");
    assert!(one.num_rows() > 0 && one.num_rows() < samples.num_rows());
    assert!(
        column(&one, "id")
            .iter()
            .all(|i| i == Some("Control Embyronic Stem Cell Replicate 2"))
    );
}

#[test]
fn old_records_without_markers_and_crlf() {
    // GSM645: CRLF, `^SAMPLE=GSM645`, a table without begin/end markers that a blank line ends.
    let input = fixture("GSM645.txt");
    let rows = attributes(&input);
    assert!(rows.iter().all(|r| r.0 == "SAMPLE" && r.1 == "GSM645"));
    assert_eq!(
        values_of(&rows, "GSM645", "Sample_title"),
        ["Large Pre-BII cells 8b"]
    );
    assert_eq!(values_of(&rows, "GSM645", "Sample_author").len(), 4);
    assert_eq!(
        values_of(&rows, "GSM645", "#VALUE"),
        ["Average Difference Intensity"]
    );
    let (schema, t) = parse(&input, serde_json::json!({"table": "values"}), 5).expect("values");
    assert_eq!(schema.fields().len(), 2 + 14);
    assert_eq!(t.num_rows(), 20);
    assert_eq!(column(&t, "ID_REF").value(0), "IL2_at");
    assert_eq!(column(&t, "VALUE").value(0), "-78");
    assert_eq!(column(&t, "Experiment Name").value(0), "RHMu8LarB");
    assert_eq!(column(&t, "ID_REF").value(19), "AFFX-BioB-M_st");
    assert_eq!(
        column(&t, "ABS_CALL").value(19),
        "A",
        "no \\r left in the last cell"
    );

    // GSE16: `^SAMPLE=GSM804`, 19 authors, a table to the end of the file with empty cells.
    let input = fixture("GSE16.txt");
    let rows = attributes(&input);
    assert_eq!(values_of(&rows, "GSM804", "Sample_author").len(), 19);
    assert_eq!(values_of(&rows, "GSM804", "Sample_series_id"), ["GSE16"]);
    let (_, t) = parse(&input, serde_json::json!({"table": "values"}), 3).expect("values");
    assert_eq!(t.num_rows(), 20);
    assert_eq!(column(&t, "ID_REF").value(1), "2");
    assert!(column(&t, "VALUE").is_null(1));
    assert_eq!(column(&t, "NO_REPLICATES").value(1), "0");
    assert_eq!(column(&t, "ID_REF").value(19), "20");
}

#[test]
fn dual_channel_latin1_and_modern_family_file() {
    let rows = attributes(&fixture("soft_ex_dual.txt"));
    let label = values_of(
        &rows,
        "Control Embyronic Stem Cell Replicate 1",
        "Sample_label_protocol_ch1",
    );
    assert!(
        label[0].starts_with("10 \u{b5}g of total RNA"),
        "{}",
        label[0]
    );
    assert!(label[0].contains("70\u{b0}C"), "{}", label[0]);

    let rows = attributes(&fixture("GSE105845_family.soft"));
    assert_eq!(
        values_of(&rows, "GSE105845", "Series_sample_id"),
        ["GSM2828511", "GSM2828512"]
    );
    let summary = values_of(&rows, "GSE105845", "Series_summary");
    assert_eq!(summary.len(), 3);
    assert_eq!(
        summary[1], "",
        "an empty repeated value is kept in its place"
    );
    assert_eq!(
        values_of(&rows, "GeoMiame", "Database_name"),
        ["Gene Expression Omnibus (GEO)"]
    );
    assert_eq!(values_of(&rows, "GPL13112", "Platform_taxid"), ["10090"]);
    let (schema, t) = parse(
        &fixture("GSE105845_family.soft"),
        serde_json::json!({"table": "values"}),
        100,
    )
    .expect("no tables");
    assert_eq!((schema.fields().len(), t.num_rows()), (2, 0));
}

#[test]
fn every_chunking_gives_the_same_table() {
    for name in [
        "soft_ex_family.txt",
        "soft_ex_dual.txt",
        "GSM645.txt",
        "GSE16.txt",
    ] {
        let input = fixture(name);
        for table in ["attributes", "values"] {
            let params = serde_json::json!({"table": table});
            let (_, whole) = parse(&input, params.clone(), input.len()).expect("whole");
            for chunk in [1, 2, 3, 17, 1000] {
                let (_, t) = parse(&input, params.clone(), chunk).expect("chunked");
                assert_eq!(t, whole, "{name} {table} in chunks of {chunk}");
            }
        }
    }
}

#[test]
fn what_is_not_soft_is_refused_clearly() {
    let err = |input: &[u8], params: serde_json::Value| match parse(input, params, 64) {
        Err(e) => e,
        Ok(_) => panic!("{:?} parsed", String::from_utf8_lossy(input)),
    };
    let e = err(b"id,name\n1,a\n", serde_json::json!({}));
    assert!(
        matches!(&e, PluginError::InvalidInput(m) if m.contains("line 1") && m.contains("not GEO SOFT")),
        "{e}"
    );
    let e = err(b"", serde_json::json!({}));
    assert!(
        matches!(&e, PluginError::InvalidInput(m) if m.contains("empty")),
        "{e}"
    );
    let e = err(
        b"^SAMPLE = A\n!x = 1\na\tb\n1\t2\t3\n",
        serde_json::json!({"table": "values"}),
    );
    assert!(
        matches!(&e, PluginError::InvalidInput(m) if m.contains("line 4") && m.contains("more cells")),
        "{e}"
    );
    let e = err(b"^ = A\n", serde_json::json!({}));
    assert!(
        matches!(&e, PluginError::InvalidInput(m) if m.contains("line 1")),
        "{e}"
    );
    let e = err(b"^SAMPLE = A\n", serde_json::json!({"table": "rows"}));
    assert!(matches!(e, PluginError::InvalidParams(_)), "{e}");
    let e = err(b"^SAMPLE = A\n", serde_json::json!({"tabel": "values"}));
    assert!(matches!(e, PluginError::InvalidParams(_)), "{e}");
}

#[test]
fn gzip_input_gives_the_same_tables_as_plain() {
    use std::io::Write;
    for file in ["GSE105845_family.soft", "soft_ex_family.txt", "GSM645.txt"] {
        let plain = fixture(file);
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&plain).expect("write");
        let packed = e.finish().expect("gzip");
        for table in ["attributes", "values"] {
            let params = serde_json::json!({ "table": table });
            let want = parse(&plain, params.clone(), 4096).expect("plain");
            for chunk in [1, 777, 1 << 20] {
                let got = parse(&packed, params.clone(), chunk).expect("gzip");
                assert_eq!(got, want, "{file} {table} at chunk {chunk}");
            }
        }
    }
    // A cut-off download is refused, not read as a shorter file.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&fixture("soft_ex_family.txt")).expect("write");
    let packed = e.finish().expect("gzip");
    let cut = &packed[..packed.len() / 2];
    assert!(matches!(
        parse(cut, serde_json::json!({}), 1000),
        Err(PluginError::InvalidInput(m)) if m.contains("gzip")
    ));
}
