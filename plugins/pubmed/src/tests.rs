//! Facts read by hand from the efetch fixtures (`fixtures/SOURCES.md`).

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, RecordBatch};
use lake_sdk::{Params, Parser, PluginError, Result};

use super::Pubmed;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse(input: &[u8], chunk: usize) -> Result<RecordBatch> {
    let mut p = Pubmed::start(Params::from_json(&serde_json::json!({})))?;
    let mut batches = Vec::new();
    for c in input.chunks(chunk.max(1)) {
        batches.extend(p.push(c)?);
    }
    let (schema, rest) = p.finish()?;
    batches.extend(rest);
    Ok(arrow_select::concat::concat_batches(&schema, &batches).expect("concat"))
}

fn text(t: &RecordBatch, name: &str, row: usize) -> Option<String> {
    let c = t.column_by_name(name).expect(name).as_string::<i32>();
    c.is_valid(row).then(|| c.value(row).to_owned())
}

fn list(t: &RecordBatch, name: &str, row: usize) -> Vec<String> {
    let l = t
        .column_by_name(name)
        .expect(name)
        .as_list::<i32>()
        .value(row);
    let l = l.as_string::<i32>();
    (0..l.len()).map(|i| l.value(i).to_owned()).collect()
}

fn year(t: &RecordBatch, row: usize) -> Option<i64> {
    let c = t
        .column_by_name("pub_year")
        .expect("pub_year")
        .as_primitive::<Int64Type>();
    c.is_valid(row).then(|| c.value(row))
}

#[test]
fn two_articles_as_read_by_hand() {
    let t = parse(&fixture("pubmed1.xml"), 1 << 20).expect("pubmed1");
    assert_eq!(t.num_rows(), 2);
    assert_eq!(text(&t, "pmid", 0).as_deref(), Some("12091962"));
    assert_eq!(
        text(&t, "title", 0).as_deref(),
        Some("The treatment of AIDS behind the walls of correctional facilities.")
    );
    assert_eq!(text(&t, "abstract", 0), None, "no abstract");
    assert_eq!(
        text(&t, "journal", 0).as_deref(),
        Some("Social justice (San Francisco, Calif.)")
    );
    assert_eq!(
        text(&t, "journal_abbrev", 0).as_deref(),
        Some("Soc Justice")
    );
    assert_eq!(
        (
            text(&t, "volume", 0).as_deref(),
            text(&t, "issue", 0).as_deref()
        ),
        (Some("17"), Some("1"))
    );
    assert_eq!(text(&t, "pub_date", 0).as_deref(), Some("1990 Spring"));
    assert_eq!(year(&t, 0), Some(1990));
    assert_eq!(list(&t, "authors", 0), ["Olivero J Michael"]);
    let mesh = list(&t, "mesh_terms", 0);
    assert_eq!(mesh.len(), 19);
    assert_eq!(mesh[0], "AIDS Serodiagnosis");
    assert_eq!(mesh[18], "United States");
    assert_eq!(
        list(&t, "publication_types", 0),
        ["Journal Article", "Review"]
    );
    assert_eq!(text(&t, "doi", 0), None);

    assert_eq!(text(&t, "pmid", 1).as_deref(), Some("9997"));
    assert_eq!(text(&t, "pub_date", 1).as_deref(), Some("1976 Sep 28"));
    assert_eq!(
        text(&t, "doi", 1).as_deref(),
        Some("10.1016/0005-2795(76)90109-4")
    );
    assert!(
        text(&t, "abstract", 1)
            .expect("abstract")
            .starts_with("Electron paramagnetic resonance")
    );
    let mesh = list(&t, "mesh_terms", 1);
    assert_eq!(mesh.len(), 13);
    assert!(mesh.contains(&"Chromatium".to_owned()) && mesh.contains(&"Temperature".to_owned()));
    assert_eq!(text(&t, "language", 1).as_deref(), Some("eng"));
}

#[test]
fn cited_pmids_are_not_records_and_markup_is_text() {
    let t = parse(&fixture("pubmed4.xml"), 777).expect("pubmed4");
    // 50 PMIDs in the file: the article's own and 49 it cites.
    assert_eq!(t.num_rows(), 1);
    assert_eq!(text(&t, "pmid", 0).as_deref(), Some("27797938"));
    assert_eq!(
        text(&t, "title", 0).as_deref(),
        Some(
            "Leucocyte telomere length, genetic variants at the TERT gene region and risk of pancreatic cancer."
        )
    );
    let abs = text(&t, "abstract", 0).expect("abstract");
    assert!(abs.starts_with("OBJECTIVE: Telomere shortening"), "{abs}");
    assert!(
        abs.contains("\n\nDESIGN: ") && abs.contains("\n\nCONCLUSIONS: "),
        "{abs}"
    );
    assert!(
        abs.contains("(TERT) gene region"),
        "inline <i> kept as text: {abs}"
    );
    let authors = list(&t, "authors", 0);
    assert_eq!(authors.len(), 22);
    assert!(authors[0].starts_with("Bao "), "{}", authors[0]);
    assert!(authors[21].starts_with("Wolpin "), "{}", authors[21]);
    assert_eq!(list(&t, "mesh_terms", 0).len(), 21);
    assert_eq!(
        text(&t, "doi", 0).as_deref(),
        Some("10.1136/gutjnl-2016-312510")
    );
    assert_eq!(
        (text(&t, "pub_date", 0).as_deref(), year(&t, 0)),
        (Some("2017 06"), Some(2017))
    );
}

#[test]
fn medline_dates_books_entities_and_empty_sets() {
    let xml = br#"<?xml version="1.0"?>
<PubmedArticleSet>
<PubmedArticle><MedlineCitation><PMID Version="1">1</PMID><Article><Journal><JournalIssue>
<PubDate><MedlineDate>1998 Dec-1999 Jan</MedlineDate></PubDate></JournalIssue><Title>J &amp; K</Title></Journal>
<ArticleTitle>A &lt;b&gt; &#946;-cell title</ArticleTitle>
<AuthorList><Author><CollectiveName>The Consortium</CollectiveName></Author><Author><LastName>Roe</LastName><Initials>R</Initials></Author></AuthorList>
<ELocationID EIdType="doi">10.1/x</ELocationID></Article></MedlineCitation>
<PubmedData><ArticleIdList><ArticleId IdType="pubmed">1</ArticleId></ArticleIdList>
<ReferenceList><Reference><ArticleIdList><ArticleId IdType="doi">10.9/not-this</ArticleId></ArticleIdList></Reference></ReferenceList></PubmedData></PubmedArticle>
<PubmedBookArticle><BookDocument><PMID Version="1">2</PMID><Book><BookTitle>A Book</BookTitle><PubDate><Year>2005</Year></PubDate></Book></BookDocument></PubmedBookArticle>
</PubmedArticleSet>"#;
    for chunk in [1, 5, 64, xml.len()] {
        let t = parse(xml, chunk).expect("synthetic");
        assert_eq!(t.num_rows(), 2);
        assert_eq!(
            text(&t, "pub_date", 0).as_deref(),
            Some("1998 Dec-1999 Jan")
        );
        assert_eq!(year(&t, 0), Some(1998));
        assert_eq!(text(&t, "journal", 0).as_deref(), Some("J & K"));
        assert_eq!(
            text(&t, "title", 0).as_deref(),
            Some("A <b> \u{3b2}-cell title")
        );
        assert_eq!(list(&t, "authors", 0), ["The Consortium", "Roe R"]);
        // Not the DOI of a cited reference: the article's own, from ELocationID.
        assert_eq!(text(&t, "doi", 0).as_deref(), Some("10.1/x"));
        assert_eq!(text(&t, "pmid", 1).as_deref(), Some("2"));
        assert_eq!(text(&t, "title", 1).as_deref(), Some("A Book"));
        assert_eq!(year(&t, 1), Some(2005));
    }
    let t = parse(
        b"<?xml version=\"1.0\"?>\n<PubmedArticleSet></PubmedArticleSet>\n",
        8,
    )
    .expect("no articles");
    assert_eq!(t.num_rows(), 0);
    let t = parse(b"<PubmedArticleSet/>", 8).expect("no articles");
    assert_eq!(t.num_rows(), 0);
}

#[test]
fn every_chunking_gives_the_same_table() {
    for name in ["pubmed1.xml", "pubmed4.xml"] {
        let input = fixture(name);
        let whole = parse(&input, input.len()).expect("whole");
        for chunk in [1, 3, 16, 1000] {
            assert_eq!(
                parse(&input, chunk).expect("chunked"),
                whole,
                "{name} {chunk}"
            );
        }
    }
}

#[test]
fn what_is_not_efetch_xml_is_refused_clearly() {
    let err = |input: &[u8]| match parse(input, 100) {
        Err(e) => e,
        Ok(t) => panic!(
            "{:?} parsed: {} rows",
            String::from_utf8_lossy(input),
            t.num_rows()
        ),
    };
    let e = err(&fixture("esearch8.xml"));
    assert!(
        matches!(&e, PluginError::InvalidInput(m) if m.contains("eSearchResult")),
        "{e}"
    );
    let whole = fixture("pubmed1.xml");
    // Cut short inside an element, and inside a tag.
    for cut in [whole.len() - 309, whole.len() - 300] {
        let e = err(&whole[..cut]);
        assert!(
            matches!(&e, PluginError::InvalidInput(m) if m.contains("cut short") || m.contains("not closed")),
            "{e}"
        );
    }
    let e = err(b"");
    assert!(
        matches!(&e, PluginError::InvalidInput(m) if m.contains("empty")),
        "{e}"
    );
    let e = err(b"<PubmedArticleSet><PubmedArticle><MedlineCitation></MedlineCitation></PubmedArticle></PubmedArticleSet>");
    assert!(
        matches!(&e, PluginError::InvalidInput(m) if m.contains("PMID")),
        "{e}"
    );
    let e = err(b"<PubmedArticleSet><PubmedArticle>&bogus;</PubmedArticle></PubmedArticleSet>");
    assert!(
        matches!(&e, PluginError::InvalidInput(m) if m.contains("bogus")),
        "{e}"
    );
    assert!(matches!(
        Pubmed::start(Params::from_json(&serde_json::json!({"x": 1}))),
        Err(PluginError::InvalidParams(_))
    ));
}
