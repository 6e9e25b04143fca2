//! The bundled `geo-matrix` parser: NCBI GEO series matrix files (`GSE..._series_matrix.txt`, plain
//! or gzipped as GEO serves them) to a table.
//!
//! A series matrix is tab-separated text. `!Series_<key>` lines carry the series' attributes (one
//! value each, quoted); `!Sample_<key>` lines carry one quoted value per sample, in the order of
//! `!Sample_geo_accession`, and a key may repeat (`!Sample_characteristics_ch1` once per
//! characteristic); the value matrix sits between `!series_matrix_table_begin` and
//! `!series_matrix_table_end`, headed by `"ID_REF"` and the sample accessions.
//!
//! `table = "samples"` (the default) gives one row per sample: `sample` (its GSM accession), then
//! one column per `!Sample_` key in file order, named without the prefix; a key that repeats is a
//! list of text, others are text. `table = "series"` gives the series' attributes as `key` and
//! `values` (a list: a repeated key keeps every value). `table = "values"` gives the matrix:
//! `ID_REF` as text and one column per sample, as 64-bit floats (`values = "float"`, the default:
//! empty, `null`, `NA` and `NaN` cells are null, anything else not a number is an error naming its
//! line) or as text (`values = "text"`), in batches as it reads. Lines may be UTF-8 or Latin-1 and
//! end in `\n` or `\r\n`.

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, ListBuilder, StringBuilder};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use lake_sdk::gzip::MaybeGunzip;
use lake_sdk::{Info, Params, Parser, PluginError, Result};
use serde::Deserialize;

/// Parameters of the series matrix parser.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Options {
    /// `samples`, `series` or `values`.
    table: String,
    /// For `values`: `float` or `text`.
    values: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            table: "samples".into(),
            values: "float".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Samples,
    Series,
    Values,
}

/// Matrix rows per batch.
const BATCH_ROWS: usize = 8192;

/// Where the reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Series and sample attributes.
    Head,
    /// After `!series_matrix_table_begin`, before the header line.
    Header,
    /// Inside the matrix.
    Rows,
    /// After `!series_matrix_table_end`.
    End,
}

/// The series matrix parser.
#[derive(Debug)]
pub struct GeoMatrix {
    table: Table,
    text_values: bool,
    gunzip: MaybeGunzip,
    held: Vec<u8>,
    pending: Vec<u8>,
    line: usize,
    place: Place,
    /// `!Series_` keys and values, in order; repeated keys gathered.
    series: Vec<(String, Vec<String>)>,
    /// `!Sample_` keys and their rows (one value per sample per occurrence), in order.
    samples: Vec<(String, Vec<Vec<String>>)>,
    /// The matrix schema, once its header was read.
    schema: Option<SchemaRef>,
    ids: Vec<String>,
    /// The line each of `ids` came from, for errors.
    row_lines: Vec<usize>,
    cells: Vec<Vec<Option<String>>>,
    seen_any: bool,
}

/// A line as text: UTF-8, or Latin-1 where it is not valid UTF-8.
fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
    }
}

/// A cell without its surrounding quotes.
fn unquote(cell: &str) -> &str {
    let c = cell.trim();
    c.strip_prefix('"')
        .and_then(|c| c.strip_suffix('"'))
        .unwrap_or(c)
}

fn internal(e: impl std::fmt::Display) -> PluginError {
    PluginError::Internal(e.to_string())
}

impl GeoMatrix {
    fn read_line(&mut self, raw: &[u8]) -> Result<Vec<RecordBatch>> {
        self.line += 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = text(raw);
        if line.trim().is_empty() {
            return Ok(Vec::new());
        }
        self.seen_any = true;
        match self.place {
            Place::Head => {
                if line.starts_with("!series_matrix_table_begin") {
                    self.place = Place::Header;
                    return Ok(Vec::new());
                }
                let mut cells = line.split('\t');
                let key = cells.next().unwrap_or_default();
                if let Some(k) = key.strip_prefix("!Series_") {
                    let values: Vec<String> = cells.map(|c| unquote(c).to_owned()).collect();
                    match self.series.iter_mut().find(|(have, _)| have == k) {
                        Some((_, v)) => v.extend(values),
                        None => self.series.push((k.to_owned(), values)),
                    }
                } else if let Some(k) = key.strip_prefix("!Sample_") {
                    let values: Vec<String> = cells.map(|c| unquote(c).to_owned()).collect();
                    match self.samples.iter_mut().find(|(have, _)| have == k) {
                        Some((_, rows)) => rows.push(values),
                        None => self.samples.push((k.to_owned(), vec![values])),
                    }
                } else if !key.starts_with('!') && !key.starts_with('#') {
                    return Err(PluginError::InvalidInput(format!(
                        "line {}: expected a !Series_ or !Sample_ line or !series_matrix_table_begin; this is not a GEO series matrix",
                        self.line
                    )));
                }
                Ok(Vec::new())
            }
            Place::Header => {
                let names: Vec<&str> = line.split('\t').map(unquote).collect();
                if names.first() != Some(&"ID_REF") {
                    return Err(PluginError::InvalidInput(format!(
                        "line {}: the matrix header must start with \"ID_REF\", not {:?}",
                        self.line,
                        names.first().unwrap_or(&"")
                    )));
                }
                let value_type = if self.text_values {
                    DataType::Utf8
                } else {
                    DataType::Float64
                };
                let mut fields = vec![Field::new("ID_REF", DataType::Utf8, false)];
                for (i, n) in names[1..].iter().enumerate() {
                    if n.is_empty() || names[..i + 1].contains(n) {
                        return Err(PluginError::InvalidInput(format!(
                            "line {}: column {} of the matrix header is empty or repeated ({n:?})",
                            self.line,
                            i + 2
                        )));
                    }
                    fields.push(Field::new(*n, value_type.clone(), true));
                }
                self.cells = vec![Vec::new(); fields.len() - 1];
                self.schema = Some(Arc::new(Schema::new(fields)));
                self.place = Place::Rows;
                Ok(Vec::new())
            }
            Place::Rows => {
                if line.starts_with("!series_matrix_table_end") {
                    self.place = Place::End;
                    return Ok(Vec::new());
                }
                if self.table != Table::Values {
                    return Ok(Vec::new());
                }
                let mut cells = line.split('\t');
                let id = unquote(cells.next().unwrap_or_default()).to_owned();
                let want = self.cells.len();
                let mut n = 0;
                for (i, c) in cells.enumerate() {
                    if i >= want {
                        n = i + 1;
                        break;
                    }
                    let c = unquote(c);
                    self.cells[i].push((!c.is_empty()).then(|| c.to_owned()));
                    n = i + 1;
                }
                if n != want {
                    return Err(PluginError::InvalidInput(format!(
                        "line {}: {} values for {want} samples",
                        self.line,
                        if n > want {
                            "more".to_owned()
                        } else {
                            n.to_string()
                        }
                    )));
                }
                self.ids.push(id);
                self.row_lines.push(self.line);
                if self.ids.len() >= BATCH_ROWS {
                    return Ok(vec![self.values_batch()?]);
                }
                Ok(Vec::new())
            }
            Place::End => {
                if line.starts_with('!') {
                    return Ok(Vec::new());
                }
                Err(PluginError::InvalidInput(format!(
                    "line {}: data after !series_matrix_table_end",
                    self.line
                )))
            }
        }
    }

    /// The matrix rows read so far as one batch.
    fn values_batch(&mut self) -> Result<RecordBatch> {
        let schema = self
            .schema
            .clone()
            .ok_or_else(|| internal("no matrix header"))?;
        let ids = std::mem::take(&mut self.ids);
        let lines = std::mem::take(&mut self.row_lines);
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        let mut b = StringBuilder::new();
        for id in &ids {
            b.append_value(id);
        }
        columns.push(Arc::new(b.finish()));
        for (col, cells) in self.cells.iter_mut().enumerate() {
            let cells = std::mem::take(cells);
            if self.text_values {
                let mut b = StringBuilder::new();
                for c in &cells {
                    b.append_option(c.as_deref());
                }
                columns.push(Arc::new(b.finish()));
                continue;
            }
            let mut b = Float64Builder::with_capacity(cells.len());
            for (row, c) in cells.iter().enumerate() {
                match c.as_deref() {
                    None | Some("null" | "NULL" | "NA" | "NaN" | "nan") => b.append_null(),
                    Some(v) => match v.parse::<f64>() {
                        Ok(x) => b.append_value(x),
                        Err(_) => {
                            return Err(PluginError::InvalidInput(format!(
                                "line {}: {v:?} in column {:?} is not a number (values = \"text\" keeps the matrix as text)",
                                lines.get(row).copied().unwrap_or_default(),
                                schema.field(col + 1).name()
                            )));
                        }
                    },
                }
            }
            columns.push(Arc::new(b.finish()));
        }
        RecordBatch::try_new(schema, columns).map_err(internal)
    }

    fn samples_batch(&self) -> Result<(SchemaRef, RecordBatch)> {
        let accessions = self
            .samples
            .iter()
            .find(|(k, _)| k == "geo_accession")
            .and_then(|(_, rows)| rows.first())
            .ok_or_else(|| {
                PluginError::InvalidInput(
                    "no !Sample_geo_accession line: this is not a GEO series matrix".into(),
                )
            })?;
        let n = accessions.len();
        let mut fields = vec![Field::new("sample", DataType::Utf8, false)];
        let mut b = StringBuilder::new();
        for a in accessions {
            b.append_value(a);
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(b.finish())];
        for (key, rows) in &self.samples {
            if key == "geo_accession" {
                continue;
            }
            if key == "sample" {
                return Err(PluginError::InvalidInput(
                    "a !Sample_sample line clashes with the output's sample column".into(),
                ));
            }
            for r in rows {
                if r.len() != n {
                    return Err(PluginError::InvalidInput(format!(
                        "!Sample_{key} has {} values for {n} samples",
                        r.len()
                    )));
                }
            }
            if rows.len() == 1 {
                let mut b = StringBuilder::new();
                for v in &rows[0] {
                    b.append_value(v);
                }
                fields.push(Field::new(key, DataType::Utf8, true));
                columns.push(Arc::new(b.finish()));
            } else {
                let mut b = ListBuilder::new(StringBuilder::new());
                for s in 0..n {
                    for r in rows {
                        b.values().append_value(&r[s]);
                    }
                    b.append(true);
                }
                let list = b.finish();
                fields.push(Field::new(key, list.data_type().clone(), true));
                columns.push(Arc::new(list));
            }
        }
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(schema.clone(), columns).map_err(internal)?;
        Ok((schema, batch))
    }

    fn series_batch(&self) -> Result<(SchemaRef, RecordBatch)> {
        let mut keys = StringBuilder::new();
        let mut values = ListBuilder::new(StringBuilder::new());
        for (k, vs) in &self.series {
            keys.append_value(k);
            for v in vs {
                values.values().append_value(v);
            }
            values.append(true);
        }
        let values = values.finish();
        let schema = Arc::new(Schema::new(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("values", values.data_type().clone(), false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(keys.finish()), Arc::new(values)],
        )
        .map_err(internal)?;
        Ok((schema, batch))
    }

    fn lines(&mut self, plain: &[u8], out: &mut Vec<RecordBatch>) -> Result<()> {
        let mut pending = std::mem::take(&mut self.pending);
        let read = lake_sdk::each_line(&mut pending, plain, |line| {
            out.extend(self.read_line(line)?);
            Ok(())
        });
        self.pending = pending;
        read
    }
}

impl Parser for GeoMatrix {
    fn info() -> Info {
        Info {
            name: "geo-matrix",
            version: env!("CARGO_PKG_VERSION"),
            description: "GEO series matrix (plain or gzipped) to a table: sample metadata, series attributes, or the value matrix",
            capabilities: &[],
        }
    }

    fn start(params: Params) -> Result<Self> {
        let opts: Options = params.parse()?;
        let table = match opts.table.as_str() {
            "samples" => Table::Samples,
            "series" => Table::Series,
            "values" => Table::Values,
            other => {
                return Err(PluginError::InvalidParams(format!(
                    "table must be \"samples\", \"series\" or \"values\", not {other:?}"
                )));
            }
        };
        let text_values = match opts.values.as_str() {
            "float" => false,
            "text" => true,
            other => {
                return Err(PluginError::InvalidParams(format!(
                    "values must be \"float\" or \"text\", not {other:?}"
                )));
            }
        };
        Ok(Self {
            table,
            text_values,
            gunzip: MaybeGunzip::new(),
            held: Vec::new(),
            pending: Vec::new(),
            line: 0,
            place: Place::Head,
            series: Vec::new(),
            samples: Vec::new(),
            schema: None,
            ids: Vec::new(),
            row_lines: Vec::new(),
            cells: Vec::new(),
            seen_any: false,
        })
    }

    fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        let mut gunzip = std::mem::take(&mut self.gunzip);
        let mut held = std::mem::take(&mut self.held);
        let read = gunzip.push(&mut held, chunk, |plain| self.lines(plain, &mut out));
        (self.gunzip, self.held) = (gunzip, held);
        read?;
        Ok(out)
    }

    fn finish(&mut self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let mut out = Vec::new();
        let mut gunzip = std::mem::take(&mut self.gunzip);
        let mut held = std::mem::take(&mut self.held);
        gunzip.finish(&mut held, |plain| self.lines(plain, &mut out))?;
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            out.extend(self.read_line(&line)?);
        }
        if !self.seen_any {
            return Err(PluginError::InvalidInput(
                "the file is empty: no series matrix lines".into(),
            ));
        }
        match self.table {
            Table::Samples => {
                let (schema, batch) = self.samples_batch()?;
                Ok((schema, vec![batch]))
            }
            Table::Series => {
                if self.series.is_empty() {
                    return Err(PluginError::InvalidInput(
                        "no !Series_ lines: this is not a GEO series matrix".into(),
                    ));
                }
                let (schema, batch) = self.series_batch()?;
                Ok((schema, vec![batch]))
            }
            Table::Values => {
                match self.place {
                    Place::Rows => {
                        return Err(PluginError::InvalidInput(format!(
                            "line {}: the file ended inside the matrix (no !series_matrix_table_end): cut short?",
                            self.line
                        )));
                    }
                    Place::Head | Place::Header => {
                        return Err(PluginError::InvalidInput(
                            "no value matrix (!series_matrix_table_begin and its \"ID_REF\" header)"
                                .into(),
                        ));
                    }
                    Place::End => {}
                }
                let schema = self
                    .schema
                    .clone()
                    .ok_or_else(|| internal("no matrix header"))?;
                if !self.ids.is_empty() {
                    out.push(self.values_batch()?);
                }
                Ok((schema, out))
            }
        }
    }
}

lake_sdk::export_parser!(crate::GeoMatrix);

#[cfg(test)]
mod tests;
