//! The bundled `uniprot-entries` parser: UniProtKB entries, as flat text, FASTA or XML, to a table.
//!
//! One row per entry: `accession` (the primary one), `accessions` (all, primary first),
//! `entry_name`, `reviewed` (Swiss-Prot rather than TrEMBL), `protein_name` (the recommended or
//! submitted full name), `genes` (primary gene names), `organism`, `taxon_id`, `length` and
//! `sequence`. Flat text gives `organism` as the `OS` line writes it (the scientific name, then any
//! common name in parentheses); FASTA gives its `OS=` value and no accessions beyond the primary.
//! Entries stream: each is read when its end (`//`, or the next `>`) arrives.
//!
//! XML is read entry by entry (`lake_sdk::xml`) and gives the scientific name as `organism`.
//! JSON (the REST API's `format=json`: one entry, or a search page `{"results": [...]}`) is read
//! whole when it ends, and gives the scientific name too. Every entry needs a sequence: a search
//! asked for with a `fields=` list that leaves it out is refused, naming the entry.

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Int64Builder, ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use lake_sdk::xml::{Node, Records};
use lake_sdk::{Info, Params, Parser, PluginError, Result};
use serde::Deserialize;

/// Parameters of the UniProt parser.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Options {
    /// `auto` (from the first bytes), `text`, `fasta`, `xml` or `json`.
    format: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            format: "auto".into(),
        }
    }
}

/// Entries per output batch.
const BATCH_ROWS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Fasta,
    Xml,
    Json,
}

/// One entry as read.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Entry {
    pub accessions: Vec<String>,
    pub entry_name: String,
    pub reviewed: bool,
    pub protein_name: Option<String>,
    pub genes: Vec<String>,
    pub organism: Option<String>,
    pub taxon_id: Option<i64>,
    /// The length the entry states (flat text's `ID` line); checked against the sequence.
    pub stated_length: Option<usize>,
    pub sequence: String,
}

/// The parser state.
pub struct Uniprot {
    format: Option<Format>,
    /// UniProt XML: its `entry` records, and how many were read.
    xml: Records,
    xml_entries: usize,
    /// UniProt JSON, gathered until the input ends.
    json: Vec<u8>,
    pending: Vec<u8>,
    line: usize,
    /// The entry being read, and the line it started on.
    entry: Option<(Entry, usize)>,
    /// Flat text: the entry's `OS` text so far, and whether its `DE` lines named a protein.
    os: String,
    /// Flat text: inside the sequence block.
    in_sequence: bool,
    done: Vec<Entry>,
}

fn schema() -> SchemaRef {
    let list = || DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
    Arc::new(Schema::new(vec![
        Field::new("accession", DataType::Utf8, false),
        Field::new("accessions", list(), false),
        Field::new("entry_name", DataType::Utf8, false),
        Field::new("reviewed", DataType::Boolean, false),
        Field::new("protein_name", DataType::Utf8, true),
        Field::new("genes", list(), false),
        Field::new("organism", DataType::Utf8, true),
        Field::new("taxon_id", DataType::Int64, true),
        Field::new("length", DataType::Int64, false),
        Field::new("sequence", DataType::Utf8, false),
    ]))
}

/// Drops UniProt's evidence tags (` {ECO:0000269|PubMed:123}`) from a value.
fn without_evidence(s: &str) -> &str {
    match s.find(" {ECO:") {
        Some(i) => s[..i].trim_end(),
        None => s.trim_end(),
    }
}

/// `Key=value;` pairs of a flat-text line (`GN   Name=nirQ; OrderedLocusNames=PA0520;`).
fn pairs(s: &str) -> impl Iterator<Item = (&str, &str)> {
    s.split(';').filter_map(|p| {
        let (k, v) = p.split_once('=')?;
        Some((k.trim(), without_evidence(v.trim())))
    })
}

impl Uniprot {
    fn error(&self, message: impl std::fmt::Display) -> PluginError {
        PluginError::InvalidInput(format!("line {}: {message}", self.line))
    }

    /// Checks and keeps the finished entry.
    fn close_entry(&mut self) -> Result<()> {
        let Some((mut entry, started)) = self.entry.take() else {
            return Ok(());
        };
        if self.format == Some(Format::Text) {
            let os = std::mem::take(&mut self.os);
            let os = os.trim().trim_end_matches('.').trim();
            entry.organism = (!os.is_empty()).then(|| os.to_owned());
        }
        self.keep(entry, &format!("the entry starting on line {started}"))
    }

    /// Checks an entry and keeps it; `place` says where it is, for errors.
    fn keep(&mut self, entry: Entry, place: &str) -> Result<()> {
        let what = |m: &str| PluginError::InvalidInput(format!("{place}: {m}"));
        if entry.entry_name.is_empty() {
            return Err(what("no entry name"));
        }
        if entry.accessions.is_empty() {
            return Err(what("no accession"));
        }
        if entry.sequence.is_empty() {
            return Err(what("no sequence"));
        }
        if let Some(n) = entry.stated_length
            && n != entry.sequence.len()
        {
            return Err(what(&format!(
                "it states {n} residues, the sequence has {}",
                entry.sequence.len()
            )));
        }
        self.done.push(entry);
        Ok(())
    }

    fn read_line(&mut self, raw: &[u8]) -> Result<()> {
        self.line += 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = std::str::from_utf8(raw).map_err(|_| self.error("not UTF-8 text"))?;
        if self.format.is_none() {
            if line.trim().is_empty() {
                return Ok(());
            }
            self.format = Some(if line.starts_with("ID   ") {
                Format::Text
            } else if line.starts_with('>') {
                Format::Fasta
            } else {
                return Err(self.error("not UniProt flat text (`ID   ...`) or FASTA (`>sp|...`)"));
            });
        }
        match self.format {
            Some(Format::Text) => self.text_line(line),
            Some(Format::Fasta) => self.fasta_line(line),
            // XML is read by records, JSON whole; not by lines.
            Some(Format::Xml | Format::Json) | None => Ok(()),
        }
    }

    fn text_line(&mut self, line: &str) -> Result<()> {
        if line.trim().is_empty() {
            return Ok(());
        }
        let (code, rest) = (line.get(..2).unwrap_or(line), line.get(5..).unwrap_or(""));
        if code == "//" {
            if self.entry.is_none() {
                return Err(self.error("`//` ends no entry"));
            }
            self.in_sequence = false;
            return self.close_entry();
        }
        if code == "ID" {
            if self.entry.is_some() {
                return Err(self.error("a new entry (`ID`) before the last one ended with `//`"));
            }
            let mut words = rest.split_whitespace();
            let name = words.next().unwrap_or_default().to_owned();
            let status = words.next().unwrap_or_default();
            let length = words.next().and_then(|n| n.parse().ok());
            self.entry = Some((
                Entry {
                    entry_name: name,
                    reviewed: status == "Reviewed;",
                    stated_length: length,
                    ..Entry::default()
                },
                self.line,
            ));
            return Ok(());
        }
        let line_no = self.line;
        let Some((entry, _)) = self.entry.as_mut() else {
            return Err(PluginError::InvalidInput(format!(
                "line {line_no}: a `{code}` line outside an entry (entries start with `ID`)"
            )));
        };
        if self.in_sequence {
            entry
                .sequence
                .extend(line.chars().filter(|c| !c.is_whitespace()));
            return Ok(());
        }
        match code {
            "AC" => entry.accessions.extend(
                rest.split(';')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned),
            ),
            // The entry's own name: a top-level `RecName` (indented ones name its components),
            // else a `SubName` (TrEMBL).
            "DE" => {
                let top = !rest.starts_with(' ');
                let field = rest.trim_start();
                for prefix in ["RecName: Full=", "SubName: Full="] {
                    if top
                        && entry.protein_name.is_none()
                        && let Some(name) = field.strip_prefix(prefix)
                    {
                        let name = without_evidence(name.trim_end().trim_end_matches(';'));
                        entry.protein_name = Some(name.to_owned());
                    }
                }
            }
            "GN" => entry.genes.extend(
                pairs(rest)
                    .filter(|(k, _)| *k == "Name")
                    .map(|(_, v)| v.to_owned()),
            ),
            "OS" => {
                self.os.push(' ');
                self.os.push_str(rest.trim());
            }
            "OX" => {
                if let Some((_, id)) = pairs(rest).find(|(k, _)| *k == "NCBI_TaxID") {
                    entry.taxon_id = Some(id.parse().map_err(|_| {
                        PluginError::InvalidInput(format!(
                            "line {line_no}: taxon id {id:?} is not a number"
                        ))
                    })?);
                }
            }
            "SQ" => self.in_sequence = true,
            _ => {}
        }
        Ok(())
    }

    fn fasta_line(&mut self, line: &str) -> Result<()> {
        if let Some(header) = line.strip_prefix('>') {
            self.close_entry()?;
            let entry = fasta_header(header).ok_or_else(|| {
                self.error("a FASTA header that is not UniProt's `>db|ACCESSION|NAME ...`")
            })?;
            self.entry = Some((entry, self.line));
            return Ok(());
        }
        match self.entry.as_mut() {
            Some((entry, _)) => {
                entry
                    .sequence
                    .extend(line.chars().filter(|c| !c.is_whitespace()));
                Ok(())
            }
            None if line.trim().is_empty() => Ok(()),
            None => Err(self.error("sequence before any `>` header")),
        }
    }

    /// Checks and keeps entries read from UniProt XML.
    /// Reads a JSON answer: one entry, a search page `{"results": [...]}`, or a list of entries.
    fn take_json(&mut self, bytes: &[u8]) -> Result<()> {
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            PluginError::InvalidInput(format!(
                "not valid JSON: {e} (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let entries: Vec<&serde_json::Value> = match &v {
            serde_json::Value::Object(o) if o.contains_key("primaryAccession") => vec![&v],
            serde_json::Value::Object(o) => match o.get("results") {
                Some(serde_json::Value::Array(a)) => a.iter().collect(),
                _ => {
                    return Err(PluginError::InvalidInput(
                        "JSON without primaryAccession or a results list: not a UniProtKB entry or search answer".into(),
                    ));
                }
            },
            serde_json::Value::Array(a) => a.iter().collect(),
            _ => {
                return Err(PluginError::InvalidInput(
                    "JSON that is neither an entry nor a list of entries".into(),
                ));
            }
        };
        for (i, e) in entries.into_iter().enumerate() {
            let entry = entry_from_json(e);
            let name = entry.accessions.first().cloned().unwrap_or_default();
            let mut place = format!("entry {} of the JSON", i + 1);
            if !name.is_empty() {
                place.push_str(&format!(" ({name})"));
            }
            if entry.sequence.is_empty() && !entry.accessions.is_empty() {
                return Err(PluginError::InvalidInput(format!(
                    "{place}: no sequence; ask UniProt for the sequence field (or no fields= list)"
                )));
            }
            self.keep(entry, &place)?;
        }
        Ok(())
    }

    fn take_xml(&mut self, entries: Vec<Node>) -> Result<()> {
        for node in entries {
            self.xml_entries += 1;
            let place = format!("entry {} of the XML", self.xml_entries);
            self.keep(entry_from_xml(&node), &place)?;
        }
        Ok(())
    }

    fn batch(&mut self) -> Result<RecordBatch> {
        let entries = std::mem::take(&mut self.done);
        let mut accession = StringBuilder::new();
        let mut accessions = ListBuilder::new(StringBuilder::new());
        let mut entry_name = StringBuilder::new();
        let mut reviewed = BooleanBuilder::new();
        let mut protein_name = StringBuilder::new();
        let mut genes = ListBuilder::new(StringBuilder::new());
        let mut organism = StringBuilder::new();
        let mut taxon_id = Int64Builder::new();
        let mut length = Int64Builder::new();
        let mut sequence = StringBuilder::new();
        for e in &entries {
            accession.append_value(&e.accessions[0]);
            for a in &e.accessions {
                accessions.values().append_value(a);
            }
            accessions.append(true);
            entry_name.append_value(&e.entry_name);
            reviewed.append_value(e.reviewed);
            protein_name.append_option(e.protein_name.as_deref());
            for g in &e.genes {
                genes.values().append_value(g);
            }
            genes.append(true);
            organism.append_option(e.organism.as_deref());
            taxon_id.append_option(e.taxon_id);
            length.append_value(e.sequence.len() as i64);
            sequence.append_value(&e.sequence);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(accession.finish()),
            Arc::new(accessions.finish()),
            Arc::new(entry_name.finish()),
            Arc::new(reviewed.finish()),
            Arc::new(protein_name.finish()),
            Arc::new(genes.finish()),
            Arc::new(organism.finish()),
            Arc::new(taxon_id.finish()),
            Arc::new(length.finish()),
            Arc::new(sequence.finish()),
        ];
        RecordBatch::try_new(schema(), columns).map_err(|e| PluginError::Internal(e.to_string()))
    }
}

/// One `<entry>` of UniProt XML.
fn entry_from_xml(node: &Node) -> Entry {
    let named = |parent: &Node, name: &str, kind: &str| -> Vec<String> {
        parent
            .nodes()
            .filter(|n| n.name == name && n.attr("type") == Some(kind))
            .map(Node::text)
            .collect()
    };
    let protein = node.child("protein");
    let organism = node.child("organism");
    // The entry's own sequence is its direct child (isoforms' are inside comments).
    let sequence = node.child("sequence");
    Entry {
        accessions: node
            .nodes()
            .filter(|n| n.name == "accession")
            .map(Node::text)
            .filter(|a| !a.is_empty())
            .collect(),
        entry_name: node.text_at(&["name"]).unwrap_or_default(),
        reviewed: node.attr("dataset") == Some("Swiss-Prot"),
        protein_name: protein.and_then(|p| {
            p.text_at(&["recommendedName", "fullName"])
                .or_else(|| p.text_at(&["submittedName", "fullName"]))
        }),
        genes: node
            .nodes()
            .filter(|n| n.name == "gene")
            .flat_map(|g| named(g, "name", "primary"))
            .collect(),
        organism: organism.and_then(|o| named(o, "name", "scientific").into_iter().next()),
        taxon_id: organism.and_then(|o| {
            o.nodes()
                .find(|n| n.name == "dbReference" && n.attr("type") == Some("NCBI Taxonomy"))
                .and_then(|r| r.attr("id")?.parse().ok())
        }),
        stated_length: sequence.and_then(|s| s.attr("length")?.parse().ok()),
        sequence: sequence
            .map(|s| s.text().chars().filter(|c| !c.is_whitespace()).collect())
            .unwrap_or_default(),
    }
}

/// `db|ACCESSION|NAME protein name OS=... OX=... GN=... PE=... SV=...`
/// An entry from UniProt's REST JSON.
fn entry_from_json(e: &serde_json::Value) -> Entry {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let mut accessions: Vec<String> = text(&e["primaryAccession"]).into_iter().collect();
    if let Some(more) = e["secondaryAccessions"].as_array() {
        accessions.extend(more.iter().filter_map(text));
    }
    let desc = &e["proteinDescription"];
    let protein_name = text(&desc["recommendedName"]["fullName"]["value"]).or_else(|| {
        desc["submissionNames"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|n| text(&n["fullName"]["value"]))
    });
    let genes = e["genes"]
        .as_array()
        .map(|g| {
            g.iter()
                .filter_map(|g| text(&g["geneName"]["value"]))
                .collect()
        })
        .unwrap_or_default();
    Entry {
        accessions,
        entry_name: text(&e["uniProtkbId"]).unwrap_or_default(),
        reviewed: e["entryType"]
            .as_str()
            .is_some_and(|t| t.starts_with("UniProtKB reviewed")),
        protein_name,
        genes,
        organism: text(&e["organism"]["scientificName"]),
        taxon_id: e["organism"]["taxonId"].as_i64(),
        stated_length: e["sequence"]["length"].as_u64().map(|n| n as usize),
        sequence: text(&e["sequence"]["value"]).unwrap_or_default(),
    }
}

fn fasta_header(header: &str) -> Option<Entry> {
    let mut parts = header.splitn(3, '|');
    let db = parts.next()?;
    let accession = parts.next()?.trim();
    let rest = parts.next()?;
    if accession.is_empty() || !matches!(db, "sp" | "tr") {
        return None;
    }
    let (name, description) = rest.split_once(' ').unwrap_or((rest, ""));
    // Field values run to the next ` XX=` key.
    let mut keys: Vec<(usize, &str)> = ["OS=", "OX=", "GN=", "PE=", "SV="]
        .iter()
        .filter_map(|k| description.find(&format!(" {k}")).map(|i| (i, *k)))
        .collect();
    keys.sort();
    let value = |key: &str| {
        let at = keys.iter().position(|(_, k)| *k == key)?;
        let start = keys[at].0 + 1 + key.len();
        let end = keys.get(at + 1).map_or(description.len(), |(i, _)| *i);
        Some(description[start..end].trim().to_owned())
    };
    let protein = description[..keys.first().map_or(description.len(), |(i, _)| *i)].trim();
    Some(Entry {
        accessions: vec![accession.to_owned()],
        entry_name: name.to_owned(),
        reviewed: db == "sp",
        protein_name: (!protein.is_empty()).then(|| protein.to_owned()),
        genes: value("GN=").into_iter().collect(),
        organism: value("OS="),
        taxon_id: value("OX=").and_then(|t| t.parse().ok()),
        stated_length: None,
        sequence: String::new(),
    })
}

impl Parser for Uniprot {
    fn info() -> Info {
        Info {
            name: "uniprot-entries",
            version: env!("CARGO_PKG_VERSION"),
            description: "UniProtKB entries (flat text, FASTA, XML, JSON) to a table of entries",
            capabilities: &[],
        }
    }

    fn start(params: Params) -> Result<Self> {
        let opts: Options = params.parse()?;
        let format = match opts.format.as_str() {
            "auto" => None,
            "text" | "txt" => Some(Format::Text),
            "fasta" => Some(Format::Fasta),
            "xml" => Some(Format::Xml),
            "json" => Some(Format::Json),
            other => {
                return Err(PluginError::InvalidParams(format!(
                    "format must be auto, text, fasta, xml or json, not {other:?}"
                )));
            }
        };
        Ok(Self {
            format,
            xml: Records::new("uniprot", &["entry"], "UniProtKB XML: ask for format=xml"),
            xml_entries: 0,
            json: Vec::new(),
            pending: Vec::new(),
            line: 0,
            entry: None,
            os: String::new(),
            in_sequence: false,
            done: Vec::new(),
        })
    }

    fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>> {
        if self.format.is_none() {
            match chunk.iter().find(|b| !b.is_ascii_whitespace()) {
                Some(b'<') => self.format = Some(Format::Xml),
                Some(b'{' | b'[') => self.format = Some(Format::Json),
                _ => {}
            }
        }
        if self.format == Some(Format::Json) {
            self.json.extend_from_slice(chunk);
            return Ok(Vec::new());
        }
        if self.format == Some(Format::Xml) {
            let entries = self.xml.push(chunk)?;
            self.take_xml(entries)?;
            if self.done.len() >= BATCH_ROWS {
                return Ok(vec![self.batch()?]);
            }
            return Ok(Vec::new());
        }
        let mut pending = std::mem::take(&mut self.pending);
        let read = lake_sdk::each_line(&mut pending, chunk, |line| self.read_line(line));
        self.pending = pending;
        read?;
        if self.done.len() >= BATCH_ROWS {
            return Ok(vec![self.batch()?]);
        }
        Ok(Vec::new())
    }

    fn finish(&mut self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        if self.format == Some(Format::Json) {
            let json = std::mem::take(&mut self.json);
            self.take_json(&json)?;
            let mut batches = Vec::new();
            while self.done.len() > BATCH_ROWS {
                let rest = self.done.split_off(BATCH_ROWS);
                batches.push(self.batch()?);
                self.done = rest;
            }
            batches.push(self.batch()?);
            return Ok((schema(), batches));
        }
        if self.format == Some(Format::Xml) {
            let entries = self.xml.finish()?;
            self.take_xml(entries)?;
            return Ok((schema(), vec![self.batch()?]));
        }
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.read_line(&line)?;
        }
        match self.format {
            None => {
                return Err(PluginError::InvalidInput(
                    "the file is empty: no UniProt entries".into(),
                ));
            }
            Some(Format::Text) if self.entry.is_some() => {
                return Err(
                    self.error("the last entry has no `//` end line: is the file cut short?")
                );
            }
            _ => self.close_entry()?,
        }
        Ok((schema(), vec![self.batch()?]))
    }
}

lake_sdk::export_parser!(crate::Uniprot);

#[cfg(test)]
mod tests;
