//! Records out of a large XML document, one at a time (feature `xml`).
//!
//! Upstream XML (PubMed's efetch, UniProt's entries) is a root element holding many records. A
//! parser hands [`Records`] its chunks and gets each record whole, as a small element tree
//! ([`Node`]), as soon as the record's end tag has arrived: memory follows one record, not the file.
//! Text keeps inline markup as its text (`<i>TERT</i>` reads `TERT`), entities and character
//! references are resolved, and names are read without their namespace prefix.
//!
//! ```ignore
//! let mut records = lake_sdk::xml::Records::new("PubmedArticleSet", &["PubmedArticle"], "fetch with retmode=xml");
//! for article in records.push(chunk)? { /* article.text_at(&["MedlineCitation", "PMID"]) */ }
//! ```

use quick_xml::events::Event;

use crate::{PluginError, Result};

/// An element with its attributes and content, text and elements in document order.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Node {
    /// The local name.
    pub name: String,
    /// Attributes: local name and unescaped value.
    pub attrs: Vec<(String, String)>,
    /// Text and child elements in order.
    pub children: Vec<Child>,
}

/// A piece of an element's content.
#[derive(Debug, Clone, PartialEq)]
pub enum Child {
    /// Character data, unescaped.
    Text(String),
    /// A child element.
    Node(Node),
}

impl Node {
    /// The child elements.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.children.iter().filter_map(|c| match c {
            Child::Node(n) => Some(n),
            Child::Text(_) => None,
        })
    }

    /// The first child element named `name`.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.nodes().find(|n| n.name == name)
    }

    /// The element at this path of child names.
    pub fn at(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |n, name| n.child(name))
    }

    /// An attribute's value.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// All the text inside, markup dropped, whitespace runs folded to one space.
    pub fn text(&self) -> String {
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

    /// The text of the element at `path`, when there is one and it is not empty.
    pub fn text_at(&self, path: &[&str]) -> Option<String> {
        self.at(path).map(Node::text).filter(|t| !t.is_empty())
    }
}

/// Splits a document into its records as its bytes arrive.
#[derive(Debug)]
pub struct Records {
    root: &'static str,
    records: &'static [&'static str],
    hint: &'static str,
    ends: Vec<Vec<u8>>,
    /// Input after the last complete record.
    pending: Vec<u8>,
    /// Bytes of input before `pending`, for error offsets.
    offset: usize,
    seen_root: bool,
}

fn xml_error(at: usize, e: impl std::fmt::Display) -> PluginError {
    PluginError::InvalidInput(format!("not well-formed XML near byte {at}: {e}"))
}

fn attributes(e: &quick_xml::events::BytesStart<'_>, at: usize) -> Result<Vec<(String, String)>> {
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|e| xml_error(at, e))?;
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| xml_error(at, e))?;
        attrs.push((a.key.local_name().as_ref().to_owned(), value.into_owned()));
    }
    Ok(attrs)
}

impl Records {
    /// A document whose root element is `root` and whose records are the root's children named
    /// in `records`; `hint` is added to the error when the root is something else.
    pub fn new(root: &'static str, records: &'static [&'static str], hint: &'static str) -> Self {
        Self {
            root,
            records,
            hint,
            ends: records
                .iter()
                .map(|r| format!("</{r}>").into_bytes())
                .collect(),
            pending: Vec::new(),
            offset: 0,
            seen_root: false,
        }
    }

    /// Takes the next chunk; returns the records it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Node>> {
        // Only the new bytes (and an end tag straddling the chunks) can hold a new record end.
        let longest = self.ends.iter().map(Vec::len).max().unwrap_or(0);
        let from = self.pending.len().saturating_sub(longest);
        self.pending.extend_from_slice(chunk);
        let end = self
            .ends
            .iter()
            .filter_map(|end| {
                self.pending[from..]
                    .windows(end.len())
                    .rposition(|w| w == end.as_slice())
                    .map(|i| from + i + end.len())
            })
            .max();
        let Some(end) = end else {
            return Ok(Vec::new());
        };
        let data: Vec<u8> = self.pending.drain(..end).collect();
        let out = self.read(&data)?;
        self.offset += end;
        Ok(out)
    }

    /// The input ended: returns the last records, or says the document was not the one expected.
    pub fn finish(&mut self) -> Result<Vec<Node>> {
        let data = std::mem::take(&mut self.pending);
        let out = self.read(&data)?;
        if !self.seen_root {
            return Err(PluginError::InvalidInput(format!(
                "no XML elements: the input is empty or not a <{}> document",
                self.root
            )));
        }
        Ok(out)
    }

    fn check_root(&mut self, name: &str, at: usize) -> Result<()> {
        if name != self.root {
            return Err(PluginError::InvalidInput(format!(
                "not the XML expected: the root element is <{name}>, not <{}> ({}), near byte {at}",
                self.root, self.hint
            )));
        }
        self.seen_root = true;
        Ok(())
    }

    /// Reads the records in `data` (complete ones only: it ends after a record's end tag or at
    /// the end of the input).
    fn read(&mut self, data: &[u8]) -> Result<Vec<Node>> {
        let mut reader = quick_xml::Reader::from_reader(data);
        // Each part is read on its own: the root opens in the first and closes in the last.
        reader.config_mut().check_end_names = false;
        reader.config_mut().allow_unmatched_ends = true;
        let mut stack: Vec<Node> = Vec::new();
        let mut out = Vec::new();
        let mut buf = Vec::new();
        loop {
            let at = self.offset + usize::try_from(reader.buffer_position()).unwrap_or(0);
            let event = reader
                .read_event_into(&mut buf)
                .map_err(|e| xml_error(at, e))?;
            match event {
                Event::Start(e) => {
                    let name = e.local_name().as_ref().to_owned();
                    if !self.seen_root {
                        self.check_root(&name, at)?;
                        continue;
                    }
                    let attrs = if stack.is_empty() && !self.records.contains(&name.as_str()) {
                        // Outside a record (PubMed's DeleteCitation lists and the like).
                        Vec::new()
                    } else {
                        attributes(&e, at)?
                    };
                    stack.push(Node {
                        name,
                        attrs,
                        children: Vec::new(),
                    });
                }
                Event::Empty(e) => {
                    let name = e.local_name().as_ref().to_owned();
                    if !self.seen_root {
                        self.check_root(&name, at)?;
                    } else if let Some(top) = stack.last_mut() {
                        top.children.push(Child::Node(Node {
                            name,
                            attrs: attributes(&e, at)?,
                            children: Vec::new(),
                        }));
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
                        None if self.records.contains(&node.name.as_str()) => out.push(node),
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
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_arrive_whole_whatever_the_chunks() {
        let doc = br#"<?xml version="1.0"?><set xmlns:p="urn:x"><rec id="1"><p:a>x &amp; <i>y</i></p:a></rec>
<other/><rec id="2"><a>&#946;</a><b/></rec></set>"#;
        for size in 1..=doc.len() {
            let mut r = Records::new("set", &["rec"], "a test");
            let mut got = Vec::new();
            for c in doc.chunks(size) {
                got.extend(r.push(c).expect("push"));
            }
            got.extend(r.finish().expect("finish"));
            assert_eq!(got.len(), 2, "chunks of {size}");
            assert_eq!(got[0].attr("id"), Some("1"));
            assert_eq!(got[0].text_at(&["a"]).as_deref(), Some("x & y"));
            assert_eq!(got[1].text_at(&["a"]).as_deref(), Some("\u{3b2}"));
            assert!(got[1].child("b").is_some());
        }
        let mut r = Records::new("set", &["rec"], "ask for the set");
        let err = r
            .push(b"<other><rec/></other>")
            .and(r.finish())
            .expect_err("root");
        assert!(
            err.to_string().contains("<other>") && err.to_string().contains("ask for the set"),
            "{err}"
        );
        let mut r = Records::new("set", &["rec"], "");
        assert!(r.finish().is_err(), "empty input");
    }
}
