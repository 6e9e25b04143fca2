//! Facts read by hand from the fixtures (`fixtures/SOURCES.md`): the same eight entries as flat
//! text and as FASTA.

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, RecordBatch};
use lake_sdk::{Params, Parser, PluginError, Result};

use super::Uniprot;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse(input: &[u8], params: serde_json::Value, chunk: usize) -> Result<RecordBatch> {
    let mut p = Uniprot::start(Params::from_json(&params))?;
    let mut batches = Vec::new();
    for c in input.chunks(chunk.max(1)) {
        batches.extend(p.push(c)?);
    }
    let (schema, rest) = p.finish()?;
    batches.extend(rest);
    Ok(arrow_select::concat::concat_batches(&schema, &batches).expect("concat"))
}

/// One entry's cells, for comparing.
#[derive(Debug, PartialEq)]
struct Row {
    accession: String,
    accessions: Vec<String>,
    entry_name: String,
    reviewed: bool,
    protein_name: Option<String>,
    genes: Vec<String>,
    organism: Option<String>,
    taxon_id: Option<i64>,
    length: i64,
    sequence: String,
}

fn rows(t: &RecordBatch) -> Vec<Row> {
    let text = |name: &str| {
        t.column_by_name(name)
            .expect(name)
            .as_string::<i32>()
            .clone()
    };
    let list = |name: &str, r: usize| {
        let l = t
            .column_by_name(name)
            .expect(name)
            .as_list::<i32>()
            .value(r);
        let l = l.as_string::<i32>();
        (0..l.len())
            .map(|i| l.value(i).to_owned())
            .collect::<Vec<_>>()
    };
    let (accession, entry_name, protein, organism, sequence) = (
        text("accession"),
        text("entry_name"),
        text("protein_name"),
        text("organism"),
        text("sequence"),
    );
    let reviewed = t
        .column_by_name("reviewed")
        .expect("reviewed")
        .as_boolean()
        .clone();
    let taxon = t
        .column_by_name("taxon_id")
        .expect("taxon")
        .as_primitive::<Int64Type>()
        .clone();
    let length = t
        .column_by_name("length")
        .expect("length")
        .as_primitive::<Int64Type>()
        .clone();
    (0..t.num_rows())
        .map(|r| Row {
            accession: accession.value(r).to_owned(),
            accessions: list("accessions", r),
            entry_name: entry_name.value(r).to_owned(),
            reviewed: reviewed.value(r),
            protein_name: protein.is_valid(r).then(|| protein.value(r).to_owned()),
            genes: list("genes", r),
            organism: organism.is_valid(r).then(|| organism.value(r).to_owned()),
            taxon_id: taxon.is_valid(r).then(|| taxon.value(r)),
            length: length.value(r),
            sequence: sequence.value(r).to_owned(),
        })
        .collect()
}

#[test]
fn flat_text_entries_as_read_by_hand() {
    let t = parse(&fixture("multi_ex.txt"), serde_json::json!({}), 4096).expect("flat text");
    let rows = rows(&t);
    let accessions: Vec<&str> = rows.iter().map(|r| r.accession.as_str()).collect();
    assert_eq!(
        accessions,
        [
            "P00750", "P56540", "Q51858", "Q51481", "Q8NE62", "P00981", "P28799", "Q01436"
        ]
    );
    let tpa = &rows[0];
    assert_eq!(tpa.entry_name, "TPA_HUMAN");
    assert_eq!(
        tpa.accessions,
        [
            "P00750", "A8K022", "B2R8E8", "Q15103", "Q503B0", "Q6PJA5", "Q7Z7N2", "Q86YK8",
            "Q9BU99", "Q9BZW1"
        ]
    );
    assert!(tpa.reviewed);
    // The entry's own name, not a component's (`Contains: RecName: ... chain A`).
    assert_eq!(
        tpa.protein_name.as_deref(),
        Some("Tissue-type plasminogen activator")
    );
    assert_eq!(tpa.genes, ["PLAT"]);
    assert_eq!(tpa.organism.as_deref(), Some("Homo sapiens (Human)"));
    assert_eq!(tpa.taxon_id, Some(9606));
    assert_eq!(tpa.length, 562);
    assert!(
        tpa.sequence
            .starts_with("MDAMKRGLCCVLLLCGAVFVSPSQEIHARFRRGARSYQVICRDEKTQMIYQQHQSWLRPV")
    );
    // Only primary gene names: not OrderedLocusNames, not Synonyms.
    assert_eq!(rows[3].genes, ["nirQ"]);
    assert_eq!(rows[7].genes, ["cef"]);
    assert_eq!(rows[7].taxon_id, Some(10665));
    // No GN line: no genes.
    assert_eq!(rows[5].entry_name, "IVBKI_DENPO");
    assert!(rows[5].genes.is_empty());
    assert_eq!(rows[5].protein_name.as_deref(), Some("Dendrotoxin-K"));
    assert_eq!(
        rows[5].organism.as_deref(),
        Some("Dendroaspis polylepis polylepis (Black mamba)")
    );
    assert_eq!(
        rows.iter().map(|r| r.length).collect::<Vec<_>>(),
        [562, 74, 267, 260, 594, 79, 593, 71]
    );
}

#[test]
fn fasta_gives_the_same_entries_as_flat_text() {
    let flat = rows(&parse(&fixture("multi_ex.txt"), serde_json::json!({}), 1000).expect("flat"));
    let fasta =
        rows(&parse(&fixture("multi_ex.fasta"), serde_json::json!({}), 1000).expect("fasta"));
    assert_eq!(fasta.len(), 8);
    for (f, x) in flat.iter().zip(&fasta) {
        assert_eq!(x.accession, f.accession);
        assert_eq!(x.accessions, std::slice::from_ref(&f.accession));
        assert_eq!((&x.entry_name, x.reviewed), (&f.entry_name, f.reviewed));
        assert_eq!(
            (x.length, &x.sequence),
            (f.length, &f.sequence),
            "{}",
            f.accession
        );
        assert_eq!(x.genes, f.genes, "{}", f.accession);
        // FASTA marks fragments in the name.
        let name = x.protein_name.as_deref().expect("fasta name");
        let flat_name = f.protein_name.as_deref().expect("flat name");
        assert!(
            name == flat_name || name == format!("{flat_name} (Fragment)"),
            "{name} / {flat_name}"
        );
        // The OS line without its common name in parentheses.
        let organism = x.organism.as_deref().expect("fasta organism");
        assert!(
            f.organism
                .as_deref()
                .expect("flat organism")
                .starts_with(organism)
        );
        assert_eq!(x.taxon_id, None, "these FASTA headers carry no OX=");
    }
}

#[test]
fn xml_gives_the_same_entries_as_flat_text() {
    let flat = rows(&parse(&fixture("multi_ex.txt"), serde_json::json!({}), 1000).expect("flat"));
    let xml = rows(&parse(&fixture("multi_ex.xml"), serde_json::json!({}), 1000).expect("xml"));
    assert_eq!(xml.len(), 8);
    for (f, x) in flat.iter().zip(&xml) {
        assert_eq!(x.accessions, f.accessions, "{}", f.accession);
        assert_eq!((&x.entry_name, x.reviewed), (&f.entry_name, f.reviewed));
        assert_eq!(x.protein_name, f.protein_name, "{}", f.accession);
        assert_eq!(x.genes, f.genes, "{}", f.accession);
        assert_eq!(x.taxon_id, f.taxon_id, "{}", f.accession);
        assert_eq!(
            (x.length, &x.sequence),
            (f.length, &f.sequence),
            "{}",
            f.accession
        );
        // XML names the scientific name alone; the OS line adds the common name.
        let organism = x.organism.as_deref().expect("xml organism");
        assert!(
            f.organism
                .as_deref()
                .expect("flat organism")
                .starts_with(organism)
        );
    }
    let one = rows(
        &parse(
            &fixture("Q13639.xml"),
            serde_json::json!({"format": "xml"}),
            333,
        )
        .expect("Q13639"),
    );
    assert_eq!(one.len(), 1);
    let e = &one[0];
    assert_eq!((e.accession.as_str(), e.accessions.len()), ("Q13639", 10));
    assert_eq!(e.entry_name, "5HT4R_HUMAN");
    assert_eq!(
        e.protein_name.as_deref(),
        Some("5-hydroxytryptamine receptor 4")
    );
    assert_eq!(e.genes, ["HTR4"]);
    assert_eq!(
        (e.organism.as_deref(), e.taxon_id, e.length),
        (Some("Homo sapiens"), Some(9606), 388)
    );
}

#[test]
fn every_chunking_gives_the_same_table() {
    for name in ["multi_ex.txt", "multi_ex.fasta", "multi_ex.xml"] {
        let input = fixture(name);
        let whole = parse(&input, serde_json::json!({}), input.len()).expect("whole");
        for chunk in [1, 2, 7, 100, 4096] {
            assert_eq!(
                parse(&input, serde_json::json!({}), chunk).expect("chunked"),
                whole,
                "{name} {chunk}"
            );
        }
    }
}

#[test]
fn damaged_or_other_input_is_refused_clearly() {
    let err = |input: &[u8], params: serde_json::Value| match parse(input, params, 64) {
        Err(e) => e,
        Ok(_) => panic!("{:?} parsed", String::from_utf8_lossy(input)),
    };
    let flat = fixture("multi_ex.txt");
    // Cut short: the last entry never ends.
    let cut = &flat[..flat.len() - 200];
    let e = err(cut, serde_json::json!({}));
    assert!(
        matches!(&e, PluginError::InvalidInput(m) if m.contains("no `//`")),
        "{e}"
    );
    // The ID line's length disagrees with the sequence.
    let text = String::from_utf8(flat.clone()).expect("utf-8");
    let wrong = text.replacen("562 AA.", "563 AA.", 1);
    let e = err(wrong.as_bytes(), serde_json::json!({}));
    assert!(
        matches!(&e, PluginError::InvalidInput(m) if m.contains("line 1") && m.contains("563")),
        "{e}"
    );
    // A search page asked for without the sequence field.
    let e = err(&fixture("search_ec_2_6_1_7.json"), serde_json::json!({}));
    assert!(
        matches!(&e, PluginError::InvalidInput(m) if m.contains("entry 1 of the JSON (X2BBW9)") && m.contains("no sequence")),
        "{e}"
    );
    let e = err(b"{\"results\": [", serde_json::json!({}));
    assert!(
        matches!(&e, PluginError::InvalidInput(m) if m.contains("not valid JSON")),
        "{e}"
    );
    let e = err(b"{\"error\": \"x\"}", serde_json::json!({}));
    assert!(
        matches!(&e, PluginError::InvalidInput(m) if m.contains("primaryAccession")),
        "{e}"
    );
    let e = err(b"id,name\n1,a\n", serde_json::json!({}));
    assert!(
        matches!(&e, PluginError::InvalidInput(m) if m.contains("line 1")),
        "{e}"
    );
    let e = err(b"\n\n", serde_json::json!({}));
    assert!(
        matches!(&e, PluginError::InvalidInput(m) if m.contains("empty")),
        "{e}"
    );
    let e = err(b">gi|123|x\nMKV\n", serde_json::json!({}));
    assert!(
        matches!(&e, PluginError::InvalidInput(m) if m.contains("line 1")),
        "{e}"
    );
    let e = err(b"ID   X\n", serde_json::json!({"format": "gff"}));
    assert!(matches!(e, PluginError::InvalidParams(_)), "{e}");
    // XML that is not UniProt's, and UniProt XML cut short.
    let e = err(
        b"<?xml version='1.0'?>\n<PubmedArticleSet/>\n",
        serde_json::json!({}),
    );
    assert!(
        matches!(&e, PluginError::InvalidInput(m) if m.contains("PubmedArticleSet")),
        "{e}"
    );
    let xml = fixture("Q13639.xml");
    let e = err(&xml[..xml.len() / 2], serde_json::json!({}));
    assert!(
        matches!(&e, PluginError::InvalidInput(m) if m.contains("cut short") || m.contains("not closed")),
        "{e}"
    );
}

#[test]
fn json_entries_as_read_by_hand() {
    let entry = fixture("P12345.json");
    let t = rows(&parse(&entry, serde_json::json!({}), 777).expect("json"));
    assert_eq!(
        t,
        [Row {
            accession: "P12345".into(),
            accessions: vec!["P12345".into(), "G1SKL2".into()],
            entry_name: "AATM_RABIT".into(),
            reviewed: true,
            protein_name: Some("Aspartate aminotransferase, mitochondrial".into()),
            genes: vec!["GOT2".into()],
            organism: Some("Oryctolagus cuniculus".into()),
            taxon_id: Some(9986),
            length: 430,
            sequence: t[0].sequence.clone(),
        }]
    );
    assert!(t[0].sequence.starts_with('M') && t[0].sequence.len() == 430);
    // A search page of two entries, compact as the API sends it, at any chunking.
    let v: serde_json::Value = serde_json::from_slice(&entry).expect("json");
    let page = serde_json::to_vec(&serde_json::json!({ "results": [v.clone(), v] })).expect("page");
    for chunk in [1, 100, 1 << 20] {
        let two = rows(&parse(&page, serde_json::json!({}), chunk).expect("page"));
        assert_eq!(two.len(), 2);
        assert_eq!(two[0], t[0]);
    }
    assert_eq!(
        rows(&parse(&entry, serde_json::json!({"format": "json"}), 4096).expect("named")),
        t
    );
}
