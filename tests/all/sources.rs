//! The bundled source parsers (issue 5) through the real sandbox: GEO SOFT, UniProt and PubMed, on
//! the real upstream files in `../shared/fixtures/{geo,uniprot,pubmed}`, with facts read by hand from them.

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
async fn uniprot_reads_flat_text_and_fasta_in_the_sandbox() {
    let p = open(&shared_cache());
    for file in ["uniprot/multi_ex.txt", "uniprot/multi_ex.fasta"] {
        let t = one_batch(
            &parse(&p, "uniprot", file, serde_json::json!({}))
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
    // XML is refused by name, not misread.
    let err = parse(&p, "uniprot", "uniprot/Q13639.xml", serde_json::json!({}))
        .await
        .expect_err("XML is not read yet");
    assert!(err.to_string().contains("XML"), "{err}");
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
