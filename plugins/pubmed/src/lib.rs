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

use arrow_array::builder::{Int64Builder, ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use lake_sdk::{Info, Params, Parser, PluginError, Result};
use quick_xml::events::Event;
use serde::Deserialize;

/// The parser takes no parameters yet.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {}

/// Articles per output batch.
const BATCH_ROWS: usize = 1024;
/// The end tags of the records.
const ENDS: [&[u8]; 2] = [b"</PubmedArticle>", b"</PubmedBookArticle>"];

/// An element with its attributes and content, text and elements in document order.
#[derive(Debug, Default)]
struct Node {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Child>,
}

#[derive(Debug)]
enum Child {
    Text(String),
    Node(Node),
}

impl Node {
    fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.children.iter().filter_map(|c| match c {
            Child::Node(n) => Some(n),
            Child::Text(_) => None,
        })
    }

    fn child(&self, name: &str) -> Option<&Node> {
        self.nodes().find(|n| n.name == name)
    }

    /// The element at this path of child names.
    fn at(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |n, name| n.child(name))
    }

    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// All the text inside, markup dropped, whitespace runs folded to one space.
    fn text(&self) -> String {
        fn collect(n: &Node, out: &mut String) {
            for c in &n.children {
                match c {
                    Child::Text(t) => out.push_str(t),
                    Child::Node(n) => collect(n, out),
                }
            }
        }
        let mut raw = String::new();
        collect(self, &mut raw);
        raw.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    fn text_at(&self, path: &[&str]) -> Option<String> {
        self.at(path).map(Node::text).filter(|t| !t.is_empty())
    }
}

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
    /// Input after the last complete record.
    pending: Vec<u8>,
    /// Bytes of input before `pending`, for error offsets.
    offset: usize,
    /// The root element, once seen (it must be `PubmedArticleSet`).
    root: Option<String>,
    done: Vec<Article>,
}

fn xml_error(at: usize, e: impl std::fmt::Display) -> PluginError {
    PluginError::InvalidInput(format!("not well-formed XML near byte {at}: {e}"))
}

impl Pubmed {
    /// Reads the records in `data` (complete ones only, so it ends after a record end tag or at
    /// the end of the input).
    fn read(&mut self, data: &[u8]) -> Result<()> {
        let mut reader = quick_xml::Reader::from_reader(data);
        // Each part is read on its own: the root opens in the first and closes in the last.
        reader.config_mut().check_end_names = false;
        reader.config_mut().allow_unmatched_ends = true;
        let mut stack: Vec<Node> = Vec::new();
        let mut buf = Vec::new();
        loop {
            let at = self.offset + reader.buffer_position() as usize;
            let event = reader
                .read_event_into(&mut buf)
                .map_err(|e| xml_error(at, e))?;
            match event {
                Event::Start(e) => {
                    let name = e.local_name().as_ref().to_owned();
                    if self.root.is_none() {
                        if name != "PubmedArticleSet" {
                            return Err(PluginError::InvalidInput(format!(
                                "not PubMed efetch XML: the root element is <{name}>, not \
                                 <PubmedArticleSet> (fetch with db=pubmed&retmode=xml)"
                            )));
                        }
                        self.root = Some(name);
                        continue;
                    }
                    if stack.is_empty() && !name.starts_with("Pubmed") {
                        // Outside a record (DeleteCitation lists and the like).
                        stack.push(Node {
                            name,
                            ..Node::default()
                        });
                        continue;
                    }
                    let mut attrs = Vec::new();
                    for a in e.attributes() {
                        let a = a.map_err(|e| xml_error(at, e))?;
                        let value = a
                            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                            .map_err(|e| xml_error(at, e))?;
                        attrs.push((a.key.local_name().as_ref().to_owned(), value.into_owned()));
                    }
                    stack.push(Node {
                        name,
                        attrs,
                        children: Vec::new(),
                    });
                }
                Event::Empty(e) => {
                    if let Some(top) = stack.last_mut() {
                        let mut attrs = Vec::new();
                        for a in e.attributes().flatten() {
                            if let Ok(v) = a.normalized_value(quick_xml::XmlVersion::Implicit1_0) {
                                attrs
                                    .push((a.key.local_name().as_ref().to_owned(), v.into_owned()));
                            }
                        }
                        top.children.push(Child::Node(Node {
                            name: e.local_name().as_ref().to_owned(),
                            attrs,
                            children: Vec::new(),
                        }));
                    } else if self.root.is_none() {
                        let name = e.local_name().as_ref().to_owned();
                        if name != "PubmedArticleSet" {
                            return Err(PluginError::InvalidInput(format!(
                                "not PubMed efetch XML: the root element is <{name}/>"
                            )));
                        }
                        self.root = Some(name);
                    }
                }
                Event::Text(t) => {
                    if let Some(top) = stack.last_mut() {
                        top.children
                            .push(Child::Text(t.xml10_content().into_owned()));
                    }
                }
                Event::CData(t) => {
                    if let Some(top) = stack.last_mut() {
                        top.children
                            .push(Child::Text(t.xml10_content().into_owned()));
                    }
                }
                Event::GeneralRef(r) => {
                    if let Some(top) = stack.last_mut() {
                        let name = r.xml10_content();
                        let text = match quick_xml::escape::resolve_predefined_entity(&name) {
                            Some(s) => s.to_owned(),
                            None => match r.resolve_char_ref().map_err(|e| xml_error(at, e))? {
                                Some(c) => c.to_string(),
                                None => {
                                    return Err(xml_error(at, format!("unknown entity &{name};")));
                                }
                            },
                        };
                        top.children.push(Child::Text(text));
                    }
                }
                Event::End(_) => {
                    let Some(node) = stack.pop() else {
                        continue;
                    };
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(Child::Node(node)),
                        None if node.name == "PubmedArticle"
                            || node.name == "PubmedBookArticle" =>
                        {
                            self.done.push(article(&node).ok_or_else(|| {
                                PluginError::InvalidInput(format!(
                                    "a <{}> without its PMID, near byte {at}",
                                    node.name
                                ))
                            })?);
                        }
                        None => {}
                    }
                }
                Event::Eof => break,
                Event::Decl(_) | Event::DocType(_) | Event::PI(_) | Event::Comment(_) => {}
            }
            buf.clear();
        }
        if !stack.is_empty() {
            return Err(PluginError::InvalidInput(format!(
                "the XML ends inside <{}>: is the file cut short?",
                stack
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join("><")
            )));
        }
        Ok(())
    }

    fn batch(&mut self) -> Result<RecordBatch> {
        let articles = std::mem::take(&mut self.done);
        let mut text: Vec<StringBuilder> = (0..12).map(|_| StringBuilder::new()).collect();
        let mut year = Int64Builder::new();
        let mut lists: Vec<ListBuilder<StringBuilder>> = (0..3)
            .map(|_| ListBuilder::new(StringBuilder::new()))
            .collect();
        for a in &articles {
            let cells = [
                Some(a.pmid.as_str()),
                a.title.as_deref(),
                a.abstract_text.as_deref(),
                a.journal.as_deref(),
                a.journal_abbrev.as_deref(),
                a.volume.as_deref(),
                a.issue.as_deref(),
                a.pub_date.as_deref(),
                a.language.as_deref(),
                a.doi.as_deref(),
            ];
            for (b, c) in text.iter_mut().zip(cells) {
                b.append_option(c);
            }
            year.append_option(a.pub_year);
            for (b, l) in lists
                .iter_mut()
                .zip([&a.authors, &a.mesh_terms, &a.publication_types])
            {
                for v in l {
                    b.values().append_value(v);
                }
                b.append(true);
            }
        }
        let mut t: Vec<ArrayRef> = text
            .iter_mut()
            .take(10)
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let l: Vec<ArrayRef> = lists
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        // Schema order: pmid .. issue, pub_year, pub_date, lists, language, doi.
        let columns = vec![
            t.remove(0),
            t.remove(0),
            t.remove(0),
            t.remove(0),
            t.remove(0),
            t.remove(0),
            t.remove(0),
            Arc::new(year.finish()),
            t.remove(0),
            l[0].clone(),
            l[1].clone(),
            l[2].clone(),
            t.remove(0),
            t.remove(0),
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

/// Where the last complete record in `data` ends.
fn last_record_end(data: &[u8]) -> Option<usize> {
    ENDS.iter()
        .filter_map(|end| {
            data.windows(end.len())
                .rposition(|w| w == *end)
                .map(|i| i + end.len())
        })
        .max()
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
            pending: Vec::new(),
            offset: 0,
            root: None,
            done: Vec::new(),
        })
    }

    fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>> {
        // Only the new bytes (and an end tag straddling the chunks) can hold a new record end.
        let from = self.pending.len().saturating_sub(ENDS[1].len());
        self.pending.extend_from_slice(chunk);
        if let Some(end) = last_record_end(&self.pending[from..]).map(|e| from + e) {
            let data: Vec<u8> = self.pending.drain(..end).collect();
            self.read(&data)?;
            self.offset += end;
        }
        if self.done.len() >= BATCH_ROWS {
            return Ok(vec![self.batch()?]);
        }
        Ok(Vec::new())
    }

    fn finish(&mut self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let data = std::mem::take(&mut self.pending);
        self.read(&data)?;
        if self.root.is_none() {
            return Err(PluginError::InvalidInput(
                "no XML elements: the file is empty or not PubMed efetch XML".into(),
            ));
        }
        Ok((schema(), vec![self.batch()?]))
    }
}

lake_sdk::export_parser!(crate::Pubmed);

#[cfg(test)]
mod tests;
