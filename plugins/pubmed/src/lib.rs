//! The bundled `pubmed` parser: PubMed efetch XML (`retmode=xml`) to an articles table.
//!
//! One row per `PubmedArticle` or `PubmedBookArticle`: `pmid`, `title`, `abstract` (sections
//! joined by blank lines, each with its label), `journal`, `journal_abbrev`, `volume`, `issue`,
//! `pub_year`, `pub_date` (as PubMed writes it: `2017 Jun`, `1990 Spring`, or a `MedlineDate` such as
//! `1998 Dec-1999 Jan`), `authors` (`LastName ForeName`, or a collective name), `mesh_terms`
//! (descriptor names), `publication_types`, `language` and `doi`.
//!
//! Only the record's own identifiers count: the PMIDs and DOIs inside `CommentsCorrectionsList`
//! and `ReferenceList` name other articles. Inline markup in titles and abstracts (`<i>`, `<sup>`)
//! is kept as its text. Articles stream: each is read when its end tag arrives.

use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use lake_sdk::xml::{Node, Records};
use lake_sdk::{Info, Params, Parser, PluginError, Result};
use serde::Deserialize;

/// The parser takes no parameters yet.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {}

/// Articles per output batch.
const BATCH_ROWS: usize = 1024;

/// One article as read.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Article {
    pub pmid: String,
    pub title: Option<String>,
    pub abstract_text: Option<String>,
    pub journal: Option<String>,
    pub journal_abbrev: Option<String>,
    pub volume: Option<String>,
    pub issue: Option<String>,
    pub pub_year: Option<i64>,
    pub pub_date: Option<String>,
    pub authors: Vec<String>,
    pub mesh_terms: Vec<String>,
    pub publication_types: Vec<String>,
    pub language: Option<String>,
    pub doi: Option<String>,
}

fn schema() -> SchemaRef {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let list = |name: &str| {
        Field::new(
            name,
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        )
    };
    Arc::new(Schema::new(vec![
        text("pmid", false),
        text("title", true),
        text("abstract", true),
        text("journal", true),
        text("journal_abbrev", true),
        text("volume", true),
        text("issue", true),
        Field::new("pub_year", DataType::Int64, true),
        text("pub_date", true),
        list("authors"),
        list("mesh_terms"),
        list("publication_types"),
        text("language", true),
        text("doi", true),
    ]))
}

/// The parser state.
pub struct Pubmed {
    records: Records,
    done: Vec<Article>,
}

impl Pubmed {
    /// Keeps the articles of these records.
    fn take(&mut self, records: Vec<Node>) -> Result<()> {
        for node in records {
            let article = article(&node).ok_or_else(|| {
                PluginError::InvalidInput(format!("a <{}> without its PMID", node.name))
            })?;
            self.done.push(article);
        }
        Ok(())
    }

    fn batch(&mut self) -> Result<RecordBatch> {
        let articles = std::mem::take(&mut self.done);
        let text = |cell: fn(&Article) -> Option<&str>| -> ArrayRef {
            Arc::new(articles.iter().map(cell).collect::<StringArray>())
        };
        let list = |cell: fn(&Article) -> &[String]| -> ArrayRef {
            let mut b = ListBuilder::new(StringBuilder::new());
            for a in &articles {
                for v in cell(a) {
                    b.values().append_value(v);
                }
                b.append(true);
            }
            Arc::new(b.finish())
        };
        // In schema order.
        let columns = vec![
            text(|a| Some(&a.pmid)),
            text(|a| a.title.as_deref()),
            text(|a| a.abstract_text.as_deref()),
            text(|a| a.journal.as_deref()),
            text(|a| a.journal_abbrev.as_deref()),
            text(|a| a.volume.as_deref()),
            text(|a| a.issue.as_deref()),
            Arc::new(articles.iter().map(|a| a.pub_year).collect::<Int64Array>()),
            text(|a| a.pub_date.as_deref()),
            list(|a| &a.authors),
            list(|a| &a.mesh_terms),
            list(|a| &a.publication_types),
            text(|a| a.language.as_deref()),
            text(|a| a.doi.as_deref()),
        ];
        RecordBatch::try_new(schema(), columns).map_err(|e| PluginError::Internal(e.to_string()))
    }
}

/// The fields of one `PubmedArticle` or `PubmedBookArticle`.
fn article(record: &Node) -> Option<Article> {
    if record.name == "PubmedBookArticle" {
        let doc = record.child("BookDocument")?;
        return Some(Article {
            pmid: doc.text_at(&["PMID"])?,
            title: doc
                .text_at(&["ArticleTitle"])
                .or_else(|| doc.text_at(&["Book", "BookTitle"])),
            abstract_text: doc.child("Abstract").and_then(abstract_of),
            pub_year: doc
                .at(&["Book", "PubDate"])
                .and_then(|d| year_of(&date_of(d))),
            pub_date: doc.at(&["Book", "PubDate"]).map(date_of),
            authors: doc.child("AuthorList").map(authors_of).unwrap_or_default(),
            language: doc.text_at(&["Language"]),
            doi: doi_of(record.at(&["PubmedBookData", "ArticleIdList"])),
            ..Article::default()
        });
    }
    let citation = record.child("MedlineCitation")?;
    let article = citation.child("Article");
    let journal = article.and_then(|a| a.child("Journal"));
    let pub_date = journal.and_then(|j| j.at(&["JournalIssue", "PubDate"]));
    let list = |parent: Option<&Node>, path: &[&str], item: &str| -> Vec<String> {
        parent
            .and_then(|p| p.at(path))
            .map(|l| {
                l.nodes()
                    .filter_map(|n| {
                        if item.contains('/') {
                            let (a, b) = item.split_once('/')?;
                            (n.name == a).then(|| n.text_at(&[b]))?
                        } else {
                            (n.name == item).then(|| n.text())
                        }
                    })
                    .filter(|t| !t.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    let doi = doi_of(record.at(&["PubmedData", "ArticleIdList"])).or_else(|| {
        article?
            .nodes()
            .find(|n| n.name == "ELocationID" && n.attr("EIdType") == Some("doi"))
            .map(Node::text)
    });
    Some(Article {
        pmid: citation.text_at(&["PMID"])?,
        title: article.and_then(|a| a.text_at(&["ArticleTitle"])),
        abstract_text: article
            .and_then(|a| a.child("Abstract"))
            .and_then(abstract_of),
        journal: journal.and_then(|j| j.text_at(&["Title"])),
        journal_abbrev: journal.and_then(|j| j.text_at(&["ISOAbbreviation"])),
        volume: journal.and_then(|j| j.text_at(&["JournalIssue", "Volume"])),
        issue: journal.and_then(|j| j.text_at(&["JournalIssue", "Issue"])),
        pub_year: pub_date.and_then(|d| year_of(&date_of(d))),
        pub_date: pub_date.map(date_of),
        authors: article
            .and_then(|a| a.child("AuthorList"))
            .map(authors_of)
            .unwrap_or_default(),
        mesh_terms: list(
            Some(citation),
            &["MeshHeadingList"],
            "MeshHeading/DescriptorName",
        ),
        publication_types: list(article, &["PublicationTypeList"], "PublicationType"),
        language: article.and_then(|a| a.text_at(&["Language"])),
        doi,
    })
}

/// `Year Month Day`, `Year Season`, or the `MedlineDate` text.
fn date_of(d: &Node) -> String {
    if let Some(m) = d.text_at(&["MedlineDate"]) {
        return m;
    }
    ["Year", "Month", "Day", "Season"]
        .iter()
        .filter_map(|p| d.text_at(&[p]))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first four-digit year in a date.
fn year_of(date: &str) -> Option<i64> {
    date.as_bytes()
        .windows(4)
        .position(|w| w.iter().all(u8::is_ascii_digit))
        .and_then(|i| date[i..i + 4].parse().ok())
}

fn abstract_of(a: &Node) -> Option<String> {
    let parts: Vec<String> = a
        .nodes()
        .filter(|n| n.name == "AbstractText")
        .map(|n| match n.attr("Label") {
            Some(label) if !label.is_empty() => format!("{label}: {}", n.text()),
            _ => n.text(),
        })
        .filter(|t| !t.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

fn authors_of(list: &Node) -> Vec<String> {
    list.nodes()
        .filter(|n| n.name == "Author")
        .filter_map(|a| {
            if let Some(c) = a.text_at(&["CollectiveName"]) {
                return Some(c);
            }
            let last = a.text_at(&["LastName"])?;
            match a
                .text_at(&["ForeName"])
                .or_else(|| a.text_at(&["Initials"]))
            {
                Some(first) => Some(format!("{last} {first}")),
                None => Some(last),
            }
        })
        .collect()
}

fn doi_of(ids: Option<&Node>) -> Option<String> {
    ids?.nodes()
        .find(|n| n.name == "ArticleId" && n.attr("IdType") == Some("doi"))
        .map(Node::text)
        .filter(|t| !t.is_empty())
}

impl Parser for Pubmed {
    fn info() -> Info {
        Info {
            name: "pubmed",
            version: env!("CARGO_PKG_VERSION"),
            description: "PubMed efetch XML to a table of articles: PMID, title, abstract, journal, dates, authors, MeSH, DOI",
            capabilities: &[],
        }
    }

    fn start(params: Params) -> Result<Self> {
        let _: Options = params.parse()?;
        Ok(Self {
            records: Records::new(
                "PubmedArticleSet",
                &["PubmedArticle", "PubmedBookArticle"],
                "PubMed efetch XML: fetch with db=pubmed&retmode=xml",
            ),
            done: Vec::new(),
        })
    }

    fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>> {
        let records = self.records.push(chunk)?;
        self.take(records)?;
        if self.done.len() >= BATCH_ROWS {
            return Ok(vec![self.batch()?]);
        }
        Ok(Vec::new())
    }

    fn finish(&mut self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let records = self.records.finish()?;
        self.take(records)?;
        Ok((schema(), vec![self.batch()?]))
    }
}

lake_sdk::export_parser!(crate::Pubmed);

#[cfg(test)]
mod tests;
