//! The bundled `geo-soft` parser: NCBI GEO's SOFT text (family files and single records) to a table.
//!
//! SOFT is line based. `^ENTITY = ID` opens a block (`^SAMPLE=GSM645` in old files), `!Key = value`
//! lines are its attributes (a key may repeat: its values are kept as a list, in order), `#Column =
//! description` lines describe its data table, and the table itself sits between
//! `!<entity>_table_begin` and `!<entity>_table_end`, or, in old files without those markers, runs
//! from the first other line (the tab-separated header) to a blank line or the next block.
//!
//! `table = "attributes"` (the default) gives one row per entity and key: `entity`, `id`, `key`,
//! `values` (a list of text); column descriptions appear with their `#` kept in the key.
//! `table = "values"` gives the rows of the data tables, `entity` and `id` first, then every column
//! any table has, as text (a column a table lacks, or an empty cell, is null); `entity` and `id`
//! pick which blocks' tables to read. Lines are read as UTF-8, or as Latin-1 where they are not
//! valid UTF-8 (older GEO files are Latin-1), and may end in `\n` or `\r\n`. Gzip-compressed
//! input (`GSE..._family.soft.gz` as GEO serves it) is inflated on the way in.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use lake_sdk::{Info, Params, Parser, PluginError, Result};
use serde::Deserialize;

/// Parameters of the GEO SOFT parser.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Options {
    /// `attributes` or `values`.
    table: String,
    /// Only blocks of this kind (`SAMPLE`, `PLATFORM`, `SERIES`, ...; any case).
    entity: Option<String>,
    /// Only the block with this id.
    id: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            table: "attributes".into(),
            entity: None,
            id: None,
        }
    }
}

/// Rows of the attributes table per batch.
const BATCH_ROWS: usize = 4096;

/// Where the reader is inside the current block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Attributes and column descriptions.
    Head,
    /// Inside a data table: `header` says whether its header line was read, `marked` whether it
    /// opened with a `_table_begin` marker (else a blank line ends it).
    Table { header: bool, marked: bool },
    /// After a table (or a blank line ending a table without markers).
    After,
}

/// One block being read.
struct Block {
    entity: Arc<str>,
    id: Arc<str>,
    /// Keys in first-seen order, with their values.
    keys: Vec<(String, Vec<String>)>,
    index: HashMap<String, usize>,
    mode: Mode,
    /// For `values`: this block's table columns, as positions in the union of columns.
    columns: Vec<usize>,
    wanted: bool,
}

/// An attributes row: entity, id, attribute name and its values.
type AttributeRow = (Arc<str>, Arc<str>, String, Vec<String>);
/// A `values` row: entity, id and the cells by union position.
type ValuesRow = (Arc<str>, Arc<str>, Vec<Option<String>>);

/// The parser state.
pub struct GeoSoft {
    opts: Options,
    values: bool,
    /// Inflates `.soft.gz` input; plain input passes through.
    gunzip: lake_sdk::gzip::MaybeGunzip,
    /// The first byte, while it is all there is.
    held: Vec<u8>,
    /// A line not yet ended by `\n`.
    pending: Vec<u8>,
    line: usize,
    block: Option<Block>,
    /// Attributes rows not yet in a batch.
    attributes: Vec<AttributeRow>,
    /// `values`: the union of table columns, and each row as (entity, id, cells by union position).
    names: Vec<String>,
    positions: HashMap<String, usize>,
    rows: Vec<ValuesRow>,
}

fn attributes_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("entity", DataType::Utf8, false),
        Field::new("id", DataType::Utf8, false),
        Field::new("key", DataType::Utf8, false),
        Field::new(
            "values",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
    ]))
}

/// A line as text: UTF-8, or Latin-1 where it is not valid UTF-8.
fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
    }
}

/// `left = right` split at the first `=`, both sides trimmed (`right` empty when there is no `=`).
fn split_eq(s: &str) -> (&str, &str) {
    match s.split_once('=') {
        Some((k, v)) => (k.trim(), v.trim()),
        None => (s.trim(), ""),
    }
}

impl GeoSoft {
    fn error(&self, message: impl std::fmt::Display) -> PluginError {
        PluginError::InvalidInput(format!("line {}: {message}", self.line))
    }

    /// Ends the current block: its attributes become rows.
    fn close_block(&mut self) {
        if let Some(block) = self.block.take()
            && !self.values
            && block.wanted
        {
            for (key, values) in block.keys {
                self.attributes
                    .push((block.entity.clone(), block.id.clone(), key, values));
            }
        }
    }

    fn wanted(&self, entity: &str, id: &str) -> bool {
        self.opts
            .entity
            .as_deref()
            .is_none_or(|e| e.eq_ignore_ascii_case(entity))
            && self.opts.id.as_deref().is_none_or(|i| i == id)
    }

    fn read_line(&mut self, raw: &[u8]) -> Result<()> {
        self.line += 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = text(raw);
        if let Some(rest) = line.strip_prefix('^') {
            self.close_block();
            let (entity, id) = split_eq(rest);
            if entity.is_empty() {
                return Err(self.error("a block (`^`) without an entity name"));
            }
            let entity = entity.to_ascii_uppercase();
            let wanted = self.wanted(&entity, id);
            self.block = Some(Block {
                entity: entity.into(),
                id: id.into(),
                keys: Vec::new(),
                index: HashMap::new(),
                mode: Mode::Head,
                columns: Vec::new(),
                wanted,
            });
            return Ok(());
        }
        let line_no = self.line;
        let Some(block) = self.block.as_mut() else {
            if line.trim().is_empty() {
                return Ok(());
            }
            return Err(PluginError::InvalidInput(format!(
                "line {line_no}: not GEO SOFT: the first line that is not blank must open a block \
                 (`^SERIES = GSE...`, `^SAMPLE = GSM...`)"
            )));
        };
        if let Some(rest) = line.strip_prefix('!') {
            let (key, value) = split_eq(rest);
            let lower = key.to_ascii_lowercase();
            if lower.ends_with("_table_begin") {
                block.mode = Mode::Table {
                    header: false,
                    marked: true,
                };
                return Ok(());
            }
            if lower.ends_with("_table_end") {
                block.mode = Mode::After;
                return Ok(());
            }
            push_value(block, key.to_owned(), value.to_owned());
            return Ok(());
        }
        if block.mode == Mode::Head
            && let Some(rest) = line.strip_prefix('#')
        {
            let (column, description) = split_eq(rest);
            push_value(block, format!("#{column}"), description.to_owned());
            return Ok(());
        }
        let blank = line.trim().is_empty();
        let marked = match block.mode {
            // A table without markers starts at its header line.
            Mode::Head if !blank => false,
            // A blank line ends a table without markers; one with markers ends at its end marker.
            Mode::Table { marked: false, .. } if blank => {
                block.mode = Mode::After;
                return Ok(());
            }
            Mode::Table { marked, .. } if !blank => marked,
            Mode::Head | Mode::Table { .. } | Mode::After => return Ok(()),
        };
        let header = !matches!(block.mode, Mode::Table { header: true, .. });
        block.mode = Mode::Table {
            header: true,
            marked,
        };
        if !self.values || !block.wanted {
            return Ok(());
        }
        let cells = line.split('\t');
        if header {
            block.columns = cells
                .map(|name| {
                    let name = name.trim().to_owned();
                    let next = self.names.len();
                    let at = *self.positions.entry(name.clone()).or_insert(next);
                    if at == next {
                        self.names.push(name);
                    }
                    at
                })
                .collect();
            return Ok(());
        }
        let mut row = vec![None; self.names.len()];
        let mut extra = false;
        for (i, cell) in cells.enumerate() {
            match block.columns.get(i) {
                Some(&at) => row[at] = (!cell.is_empty()).then(|| cell.to_owned()),
                None => extra |= !cell.trim().is_empty(),
            }
        }
        if extra {
            return Err(PluginError::InvalidInput(format!(
                "line {line_no}: the row has more cells than the table of {} {} has columns ({})",
                block.entity,
                block.id,
                block.columns.len()
            )));
        }
        self.rows
            .push((block.entity.clone(), block.id.clone(), row));
        Ok(())
    }

    fn attributes_batch(&mut self) -> Result<RecordBatch> {
        let rows = std::mem::take(&mut self.attributes);
        let mut values = ListBuilder::new(StringBuilder::new());
        for (_, _, _, list) in &rows {
            for v in list {
                values.values().append_value(v);
            }
            values.append(true);
        }
        let column = |f: fn(&AttributeRow) -> &str| -> ArrayRef {
            Arc::new(rows.iter().map(|r| Some(f(r))).collect::<StringArray>())
        };
        RecordBatch::try_new(
            attributes_schema(),
            vec![
                column(|r| &r.0),
                column(|r| &r.1),
                column(|r| &r.2),
                Arc::new(values.finish()),
            ],
        )
        .map_err(|e| PluginError::Internal(e.to_string()))
    }

    fn full_batches(&mut self) -> Result<Vec<RecordBatch>> {
        if !self.values && self.attributes.len() >= BATCH_ROWS {
            return Ok(vec![self.attributes_batch()?]);
        }
        Ok(Vec::new())
    }
}

fn push_value(block: &mut Block, key: String, value: String) {
    match block.index.get(&key) {
        Some(&i) => block.keys[i].1.push(value),
        None => {
            block.index.insert(key.clone(), block.keys.len());
            block.keys.push((key, vec![value]));
        }
    }
}

impl Parser for GeoSoft {
    fn info() -> Info {
        Info {
            name: "geo-soft",
            version: env!("CARGO_PKG_VERSION"),
            description: "GEO SOFT text to a table: each block's attributes (repeated keys as lists), or its data table",
            capabilities: &[],
        }
    }

    fn start(params: Params) -> Result<Self> {
        let opts: Options = params.parse()?;
        let values = match opts.table.as_str() {
            "attributes" => false,
            "values" => true,
            other => {
                return Err(PluginError::InvalidParams(format!(
                    "table must be \"attributes\" or \"values\", not {other:?}"
                )));
            }
        };
        Ok(Self {
            opts,
            values,
            gunzip: lake_sdk::gzip::MaybeGunzip::new(),
            held: Vec::new(),
            pending: Vec::new(),
            line: 0,
            block: None,
            attributes: Vec::new(),
            names: Vec::new(),
            positions: HashMap::new(),
            rows: Vec::new(),
        })
    }

    fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>> {
        let mut pending = std::mem::take(&mut self.pending);
        let mut gunzip = std::mem::take(&mut self.gunzip);
        let mut held = std::mem::take(&mut self.held);
        let read = gunzip.push(&mut held, chunk, |plain| {
            lake_sdk::each_line(&mut pending, plain, |line| self.read_line(line))
        });
        (self.pending, self.gunzip, self.held) = (pending, gunzip, held);
        read?;
        self.full_batches()
    }

    fn finish(&mut self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let mut pending = std::mem::take(&mut self.pending);
        let mut gunzip = std::mem::take(&mut self.gunzip);
        let mut held = std::mem::take(&mut self.held);
        gunzip.finish(&mut held, |plain| {
            lake_sdk::each_line(&mut pending, plain, |line| self.read_line(line))
        })?;
        self.pending = pending;
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.read_line(&line)?;
        }
        if self.block.is_none() && self.line == 0 {
            return Err(PluginError::InvalidInput(
                "the file is empty: no GEO SOFT blocks".into(),
            ));
        }
        self.close_block();
        if !self.values {
            let batch = self.attributes_batch()?;
            return Ok((attributes_schema(), vec![batch]));
        }
        let mut fields = vec![
            Field::new("entity", DataType::Utf8, false),
            Field::new("id", DataType::Utf8, false),
        ];
        for name in &self.names {
            if name == "entity" || name == "id" {
                return Err(PluginError::InvalidInput(format!(
                    "a data table has a column named {name:?}, which the output uses for the block"
                )));
            }
            fields.push(Field::new(name, DataType::Utf8, true));
        }
        let schema = Arc::new(Schema::new(fields));
        let rows = std::mem::take(&mut self.rows);
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(rows.iter().map(|r| Some(&*r.0)).collect::<StringArray>()),
            Arc::new(rows.iter().map(|r| Some(&*r.1)).collect::<StringArray>()),
        ];
        for i in 0..self.names.len() {
            columns.push(Arc::new(
                rows.iter()
                    .map(|r| r.2.get(i).and_then(|c| c.as_deref()))
                    .collect::<StringArray>(),
            ));
        }
        let batch = RecordBatch::try_new(schema.clone(), columns)
            .map_err(|e| PluginError::Internal(e.to_string()))?;
        Ok((schema, vec![batch]))
    }
}

lake_sdk::export_parser!(crate::GeoSoft);

#[cfg(test)]
mod tests;
