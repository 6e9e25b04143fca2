//! The bundled CSV parser: bytes in, Arrow batches out, streamed.
//!
//! The bytes go through three stages, chunk by chunk, never held whole. First compression:
//! gzip, bzip2, xz and zstd input, recognised by its magic bytes, is decoded inside the plugin
//! (`lake_sdk::decompress`, in pieces of at most 1 MiB). Then text ([`text`]): a UTF-16
//! byte-order mark means UTF-16 (Excel's "Unicode text"), transcoded to UTF-8; a UTF-8 mark is
//! dropped; otherwise `encoding` says UTF-8, Latin-1 (transcoded) or `auto` (UTF-8 when the first
//! 64 KiB are valid UTF-8, else Latin-1). Then CSV: with `delimiter = "auto"` the first line picks
//! comma, tab or semicolon; the head of the text (up to 1 MiB) is kept to infer column types, and
//! the rest is decoded as it comes, by the direct reader ([`direct`]) while the input keeps to the
//! plain shape and by arrow-csv's push decoder from the first record that does not, so memory
//! follows the batch size, not the file size. `\r`, `\n` and `\r\n` all end a record.
//!
//! Every error about the data names its line, counted in the decoded text (1-based, the header is
//! line 1, so the same for every compression and encoding of one file), and its field where one is
//! known: a wrong number of fields, invalid UTF-8, a value that does not parse as its column's
//! type, a quoted field still open at the end of the input ([`lines`]).
//!
//! CSV cannot tell an empty field from a missing value, so both read as null in every column.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

use arrow_csv::reader::{Decoder, Format};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use lake_sdk::decompress::MaybeDecompress;
use lake_sdk::{Info, Params, Parser, PluginError, RecordBatch, Result};
use serde::Deserialize;

mod direct;
mod lines;
mod text;

use lines::{Lines, Syntax};
use text::{Encoding, Text};

/// Parameters of the CSV parser.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Options {
    /// Field separator, one ASCII character (`","`; `"\t"` for TSV), or `"auto"`: the most
    /// frequent of comma, tab and semicolon in the first line.
    delimiter: String,
    /// Quote character.
    quote: String,
    /// Escape character inside quotes (default: doubled quotes).
    escape: Option<String>,
    /// The first record names the columns.
    header: bool,
    /// `utf-8`, `latin-1` (also `iso-8859-1`) or `auto` (UTF-8 if the first 64 KiB are valid
    /// UTF-8, else Latin-1). A UTF-16 byte-order mark overrides it.
    encoding: String,
    /// Infer column types; when false every column is text.
    infer_types: bool,
    /// Records read to infer types.
    infer_rows: usize,
    /// Column types that override inference: `{"age": "int64"}`; types are `utf8`, `int64`,
    /// `float64`, `boolean`, `date32`, `timestamp`.
    types: BTreeMap<String, String>,
    /// Rows per output batch.
    batch_rows: usize,
}

/// Cells a batch holds at most: the builders of a batch are sized for its rows up front, so a
/// batch of 64k rows of 1,200 columns would reserve about a gigabyte for a 2 MB file.
const BATCH_CELLS: usize = 4 << 20;

/// The rows of a batch of `columns` columns: the rows asked for, fewer for a wide table so a
/// batch holds at most [`BATCH_CELLS`] cells (never fewer than 64 rows).
fn rows_per_batch(asked: usize, columns: usize) -> usize {
    asked.min((BATCH_CELLS / columns.max(1)).max(64))
}

impl Default for Options {
    fn default() -> Self {
        Self {
            delimiter: ",".into(),
            quote: "\"".into(),
            escape: None,
            header: true,
            encoding: "utf-8".into(),
            infer_types: true,
            infer_rows: 1000,
            types: BTreeMap::new(),
            batch_rows: 64 * 1024,
        }
    }
}

fn one_byte(name: &str, s: &str) -> Result<u8> {
    match s.as_bytes() {
        [b] if b.is_ascii() => Ok(*b),
        _ => Err(PluginError::InvalidParams(format!(
            "{name} must be one ASCII character, not {s:?}"
        ))),
    }
}

fn data_type(name: &str) -> Result<DataType> {
    lake_sdk::table::type_named(name).ok_or_else(|| {
        PluginError::InvalidParams(format!(
            "unknown column type {name:?}; use one of {}",
            lake_sdk::table::TYPE_NAMES
        ))
    })
}

/// The delimiter of a text whose first line is `line`, as the host picks it for uploads: tab
/// when tabs outnumber commas and are at least as many as semicolons, semicolon when semicolons
/// outnumber both, else comma.
fn sniff_delimiter(line: &[u8]) -> u8 {
    let count = |c: u8| line.iter().filter(|&&b| b == c).count();
    let (comma, tab, semi) = (count(b','), count(b'\t'), count(b';'));
    if tab > comma && tab >= semi {
        b'\t'
    } else if semi > comma && semi > tab {
        b';'
    } else {
        b','
    }
}

/// Bytes of decoded text kept before the schema is inferred (the records inference samples lie
/// within them).
const INFER_BYTES: usize = 1 << 20;

/// Decompression and text decoding, ahead of the CSV reader.
struct Source {
    decompress: MaybeDecompress,
    text: Text,
}

impl Source {
    /// Hands `out` the text of `chunk`.
    fn push(&mut self, chunk: &[u8], mut out: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let text = &mut self.text;
        self.decompress
            .push(chunk, |bytes| text.push(bytes, &mut out))
    }

    /// Hands `out` the rest of the text.
    fn finish(&mut self, mut out: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let text = &mut self.text;
        self.decompress.finish(|bytes| text.push(bytes, &mut out))?;
        self.text.finish(&mut out)
    }
}

/// The parser state.
pub struct Csv {
    opts: Options,
    /// The delimiter is still to be read from the first line (`delimiter = "auto"`).
    sniff: bool,
    delimiter: u8,
    quote: u8,
    escape: Option<u8>,
    /// Taken out while it hands text to the reader.
    source: Option<Box<Source>>,
    /// Text not yet decoded (the head, before inference; afterwards only a partial record).
    pending: Vec<u8>,
    /// The direct reader, while the input keeps to the shape it reads ([`direct`]).
    direct: Option<direct::Direct>,
    /// arrow-csv's decoder, once the direct reader has given way (or when it never applied).
    decoder: Option<Decoder>,
    /// The lines of the records arrow-csv reads, for its errors.
    lines: Option<Lines>,
    /// arrow-csv found record number N with too many fields before its end: the input is read on
    /// (by [`Lines`] alone) to the end of the record, to say how many.
    failed: Option<u64>,
    /// Tests compare the direct reader with arrow-csv alone.
    #[cfg(test)]
    arrow_only: bool,
    schema: Option<SchemaRef>,
}

impl Csv {
    fn syntax(&self) -> Syntax {
        Syntax {
            delimiter: self.delimiter,
            quote: self.quote,
            escape: self.escape,
        }
    }

    fn format(&self) -> Format {
        let mut f = Format::default()
            .with_header(self.opts.header)
            .with_delimiter(self.delimiter)
            .with_quote(self.quote);
        if let Some(e) = self.escape {
            f = f.with_escape(e);
        }
        f
    }

    /// Infers the schema from the head of the text (with `last`, the whole text), after checking
    /// the records inference reads: their errors name lines, which inference's own would not.
    fn infer(&mut self, last: bool) -> Result<()> {
        let head_len = self.pending.len().min(INFER_BYTES);
        let complete = last && self.pending.len() <= INFER_BYTES;
        let syntax = self.syntax();
        let header_records = u64::from(self.opts.header);
        let infer = |this: &Self, records: usize| -> Result<SchemaRef> {
            let wanted = if this.opts.header {
                header_records + records as u64
            } else {
                records.max(1) as u64
            };
            let end = lines::check_head(&this.pending[..head_len], syntax, wanted, complete)?;
            this.format()
                .infer_schema(Cursor::new(&this.pending[..end]), Some(records))
                .map(|(schema, _)| Arc::new(schema))
                .map_err(|e| PluginError::InvalidInput(e.to_string()))
        };
        // When `types` names every column (as the host does for the later segments of a parallel
        // parse), the header alone gives the schema: the records need not be sampled.
        let header_only = if self.opts.types.is_empty() {
            None
        } else {
            Some(infer(self, 0)?).filter(|s| {
                s.fields()
                    .iter()
                    .all(|f| self.opts.types.contains_key(f.name()))
            })
        };
        let inferred = match header_only {
            Some(schema) => schema,
            None => infer(self, self.opts.infer_rows)?,
        };
        let mut fields: Vec<Field> = Vec::with_capacity(inferred.fields().len());
        for f in inferred.fields() {
            let ty = match self.opts.types.get(f.name()) {
                Some(t) => data_type(t)?,
                None if !self.opts.infer_types => DataType::Utf8,
                // Columns with no values in the sample are read as text rather than failing later.
                None if f.data_type() == &DataType::Null => DataType::Utf8,
                None => f.data_type().clone(),
            };
            fields.push(Field::new(f.name(), ty, true));
        }
        if let Some(missing) = self
            .opts
            .types
            .keys()
            .find(|k| !fields.iter().any(|f| f.name() == *k))
        {
            let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
            return Err(PluginError::InvalidParams(format!(
                "types names column {missing:?}, but the columns are {names:?}"
            )));
        }
        let schema = Arc::new(Schema::new(fields));
        self.opts.batch_rows = rows_per_batch(self.opts.batch_rows, schema.fields().len());
        self.direct = direct::Direct::new(
            schema.clone(),
            self.opts.header,
            self.delimiter,
            self.quote,
            self.escape,
            self.opts.batch_rows,
        );
        #[cfg(test)]
        if self.arrow_only {
            self.direct = None;
        }
        if self.direct.is_none() {
            self.start_arrow(&schema, 0, 0)?;
        }
        self.schema = Some(schema);
        Ok(())
    }

    /// Whether the header alone gives the schema and is complete in `pending`: `types` names
    /// every column of a plain (unquoted) header line.
    fn header_is_enough(&self) -> bool {
        if !self.opts.header || self.opts.types.is_empty() {
            return false;
        }
        let Some(end) = memchr::memchr(b'\n', &self.pending) else {
            return false;
        };
        let line = &self.pending[..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line.contains(&b'\r') || line.contains(&self.quote) {
            return false;
        }
        line.split(|&b| b == self.delimiter).all(|name| {
            std::str::from_utf8(name).is_ok_and(|name| self.opts.types.contains_key(name))
        })
    }

    /// Hands the input over to arrow-csv after the first `records` records (the header
    /// included), which took `lines` lines.
    fn start_arrow(&mut self, schema: &SchemaRef, records: usize, lines: u64) -> Result<()> {
        self.decoder = Some(self.arrow_decoder(schema, records)?);
        // arrow-csv skips the header itself when it reads from the start.
        let done = if records > 0 {
            records as u64
        } else {
            u64::from(self.opts.header)
        };
        self.lines = Some(Lines::new(
            self.syntax(),
            schema.fields().len(),
            records as u64,
            lines,
            done,
        ));
        Ok(())
    }

    /// arrow-csv's decoder for the input after the first `after` records (the header included),
    /// counting records as if it had read them: it is fed `after` placeholder records to skip.
    fn arrow_decoder(&self, schema: &SchemaRef, after: usize) -> Result<Decoder> {
        let mut builder = arrow_csv::ReaderBuilder::new(schema.clone())
            .with_header(self.opts.header && after == 0)
            .with_delimiter(self.delimiter)
            .with_quote(self.quote)
            .with_batch_size(self.opts.batch_rows);
        if after > 0 {
            builder = builder.with_bounds(after, usize::MAX);
        }
        if let Some(e) = self.escape {
            builder = builder.with_escape(e);
        }
        let mut decoder = builder.build_decoder();
        if after > 0 {
            let fill = *b"0123"
                .iter()
                .find(|b| ![self.delimiter, self.quote].contains(b))
                .ok_or_else(|| PluginError::Internal("no placeholder byte".into()))?;
            let mut record = vec![fill];
            for _ in 1..schema.fields().len() {
                record.extend([self.delimiter, fill]);
            }
            record.push(b'\n');
            let per_block = (64 << 10) / record.len() + 1;
            let block = record.repeat(per_block.min(after));
            let mut left = after;
            while left > 0 {
                let n = left.min(per_block);
                let mut buf = &block[..n * record.len()];
                while !buf.is_empty() {
                    let used = decoder
                        .decode(buf)
                        .map_err(|e| PluginError::Internal(format!("skipping records: {e}")))?;
                    if used == 0 {
                        return Err(PluginError::Internal("skipping records stalled".into()));
                    }
                    buf = &buf[used..];
                }
                left -= n;
            }
        }
        Ok(decoder)
    }

    /// Reads what it can of `data` (with `last`, the end of the input), pushing full batches to
    /// `out`; returns the bytes consumed. The direct reader reads whole lines; where it gives way,
    /// arrow-csv takes over from that record on.
    fn decode(&mut self, data: &[u8], last: bool, out: &mut Vec<RecordBatch>) -> Result<usize> {
        if let Some(reader) = self.direct.as_mut() {
            let (used, gave_way) = reader.feed(data, last, out)?;
            if !gave_way {
                return Ok(used);
            }
            out.extend(reader.flush()?);
            let (records, lines) = (reader.records(), reader.lines());
            self.direct = None;
            let schema = self
                .schema
                .clone()
                .ok_or_else(|| PluginError::Internal("no schema after inference".into()))?;
            self.start_arrow(&schema, records, lines)?;
            return Ok(used + self.decode(&data[used..], last, out)?);
        }
        self.feed(data, out)
    }

    /// arrow-csv's error, with the line and field it is about.
    fn arrow_error(&self, e: &arrow_schema::ArrowError) -> PluginError {
        match (&self.lines, &self.schema) {
            (Some(lines), Some(schema)) => lines.error(e, schema),
            _ => PluginError::InvalidInput(e.to_string()),
        }
    }

    /// Feeds `data` to arrow-csv, emitting every full batch; returns the bytes consumed.
    fn feed(&mut self, data: &[u8], out: &mut Vec<RecordBatch>) -> Result<usize> {
        let mut offset = 0;
        while offset < data.len() {
            let used = self.arrow_decode(&data[offset..])?;
            offset += used;
            let capacity = self.decoder.as_ref().map_or(1, Decoder::capacity);
            if used == 0 || capacity == 0 {
                self.arrow_flush(out)?;
                let capacity = self.decoder.as_ref().map_or(1, Decoder::capacity);
                if used == 0 && offset < data.len() && capacity > 0 {
                    break;
                }
            }
        }
        Ok(offset)
    }

    /// One call of arrow-csv's `decode`, the lines following the bytes it read.
    fn arrow_decode(&mut self, data: &[u8]) -> Result<usize> {
        let (Some(decoder), Some(lines)) = (self.decoder.as_mut(), self.lines.as_mut()) else {
            return Ok(0);
        };
        if let Some(record) = self.failed {
            // Reading on to the end of the record with too many fields.
            lines.scan(data);
            return match lines.wrong_fields(record) {
                Some(e) => Err(e),
                None => Ok(data.len()),
            };
        }
        match decoder.decode(data) {
            Ok(used) => {
                lines.scan(&data[..used]);
                Ok(used)
            }
            Err(e) => {
                // The record at fault starts somewhere in `data`.
                lines.scan(data);
                if let Some(record) = Lines::field_count_record(&e)
                    && lines.wrong_fields(record).is_none()
                {
                    self.failed = Some(record);
                    return Ok(data.len());
                }
                Err(self.arrow_error(&e))
            }
        }
    }

    /// Takes arrow-csv's complete records as a batch, if there are any.
    fn arrow_flush(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        let Some(decoder) = self.decoder.as_mut() else {
            return Ok(());
        };
        if self.failed.is_some() {
            return Ok(());
        }
        match decoder.flush() {
            Ok(Some(batch)) => {
                if let Some(lines) = self.lines.as_mut() {
                    lines.done(batch.num_rows());
                }
                out.push(batch);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(self.arrow_error(&e)),
        }
    }

    /// Reads `pending`, keeping what was not consumed.
    fn drain(&mut self, last: bool, out: &mut Vec<RecordBatch>) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let used = self.decode(&pending, last, out);
        self.pending = pending;
        self.pending.drain(..used?);
        Ok(())
    }

    /// Sets the delimiter from the first line of `pending` (with `last`, all of the text), if it
    /// is complete; returns whether it is set.
    fn sniff(&mut self, last: bool) -> bool {
        let head = &self.pending[..self.pending.len().min(INFER_BYTES)];
        let line = match memchr::memchr2(b'\n', b'\r', head) {
            Some(end) => &head[..end],
            None if last || head.len() == INFER_BYTES => head,
            None => return false,
        };
        self.delimiter = sniff_delimiter(line);
        self.sniff = false;
        true
    }

    /// Reads the next piece of text.
    fn read(&mut self, text: &[u8], out: &mut Vec<RecordBatch>) -> Result<()> {
        let mut bytes = text;
        if self.schema.is_some() && !self.pending.is_empty() && self.direct.is_some() {
            // Complete the record that straddles the chunks, then read the rest in place.
            match memchr::memchr(b'\n', bytes) {
                Some(k) => {
                    self.pending.extend_from_slice(&bytes[..=k]);
                    bytes = &bytes[k + 1..];
                }
                None if memchr::memchr2(b'\r', self.quote, bytes).is_none() => {
                    // Still inside one long record: nothing to read yet.
                    self.pending.extend_from_slice(bytes);
                    return Ok(());
                }
                None => {
                    self.pending.extend_from_slice(bytes);
                    bytes = &[];
                }
            }
            self.drain(false, out)?;
        }
        if self.schema.is_some() && self.pending.is_empty() {
            // The common case: decode straight from the chunk, keeping only an unconsumed tail.
            let used = self.decode(bytes, false, out)?;
            self.pending.extend_from_slice(&bytes[used..]);
            return Ok(());
        }
        self.pending.extend_from_slice(bytes);
        if self.schema.is_none() {
            if self.sniff && !self.sniff(false) {
                return Ok(());
            }
            if self.pending.len() < INFER_BYTES && !self.header_is_enough() {
                return Ok(());
            }
            self.infer(false)?;
        }
        self.drain(false, out)
    }
}

impl Parser for Csv {
    fn info() -> Info {
        Info {
            name: "csv",
            version: env!("CARGO_PKG_VERSION"),
            description: "CSV to a table: gzip, bzip2, xz or zstd compressed or not, UTF-8, UTF-16 or Latin-1; delimiter (or sniffed), quoting, header, type inference with overrides",
            capabilities: &[],
        }
    }

    fn start(params: Params) -> Result<Self> {
        let opts: Options = params.parse()?;
        let encoding = match opts
            .encoding
            .to_ascii_lowercase()
            .replace('_', "-")
            .as_str()
        {
            "utf-8" | "utf8" => Encoding::Utf8,
            "latin-1" | "latin1" | "iso-8859-1" => Encoding::Latin1,
            "auto" => Encoding::Auto,
            other => {
                return Err(PluginError::Unsupported(format!(
                    "encoding {other:?}; use utf-8, latin-1 or auto"
                )));
            }
        };
        if opts.batch_rows == 0 || opts.infer_rows == 0 {
            return Err(PluginError::InvalidParams(
                "batch_rows and infer_rows must be at least 1".into(),
            ));
        }
        let sniff = opts.delimiter.eq_ignore_ascii_case("auto");
        Ok(Csv {
            sniff,
            delimiter: if sniff {
                b','
            } else {
                one_byte("delimiter", &opts.delimiter)?
            },
            quote: one_byte("quote", &opts.quote)?,
            escape: opts
                .escape
                .as_deref()
                .map(|e| one_byte("escape", e))
                .transpose()?,
            source: Some(Box::new(Source {
                decompress: MaybeDecompress::new(),
                text: Text::new(encoding),
            })),
            opts,
            pending: Vec::new(),
            direct: None,
            decoder: None,
            lines: None,
            failed: None,
            #[cfg(test)]
            arrow_only: false,
            schema: None,
        })
    }

    fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        let mut source = self
            .source
            .take()
            .ok_or_else(|| PluginError::Internal("push after an error or finish".into()))?;
        let read = source.push(chunk, |text| self.read(text, &mut out));
        self.source = Some(source);
        read?;
        Ok(out)
    }

    fn finish(&mut self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let mut out = Vec::new();
        let mut source = self
            .source
            .take()
            .ok_or_else(|| PluginError::Internal("finish after an error or finish".into()))?;
        source.finish(|text| self.read(text, &mut out))?;
        if self.pending.iter().all(|b| b.is_ascii_whitespace()) && self.schema.is_none() {
            return Err(PluginError::InvalidInput(
                "the file is empty: no header and no records".into(),
            ));
        }
        if self.sniff {
            self.sniff(true);
        }
        if self.schema.is_none() {
            self.infer(true)?;
        }
        self.drain(true, &mut out)?;
        if let Some(reader) = self.direct.as_mut() {
            out.extend(reader.flush()?);
        }
        if self.decoder.is_some() {
            // End of input: a final record without a line terminator is complete now.
            let pending = std::mem::take(&mut self.pending);
            let mut rest = &pending[..];
            let mut stalled = false;
            while !rest.is_empty() {
                let used = self.arrow_decode(rest)?;
                if used == 0 {
                    // A full batch: take it, and the decoder has room again.
                    if stalled {
                        return Err(PluginError::Internal("arrow-csv reads nothing".into()));
                    }
                    self.arrow_flush(&mut out)?;
                }
                stalled = used == 0;
                rest = &rest[used..];
            }
            if let (Some(record), Some(lines)) = (self.failed, self.lines.as_mut()) {
                lines.end();
                return Err(lines.wrong_fields(record).unwrap_or_else(|| {
                    PluginError::Internal(format!("record {record}: no field count"))
                }));
            }
            if let Some(open) = self.lines.as_ref().and_then(Lines::open_quote) {
                return Err(open);
            }
            self.arrow_decode(&[])?;
            self.arrow_flush(&mut out)?;
        }
        let schema = self
            .schema
            .clone()
            .ok_or_else(|| PluginError::Internal("no schema after inference".into()))?;
        Ok((schema, out))
    }
}

lake_sdk::export_parser!(crate::Csv);

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;

    #[test]
    fn wide_tables_come_in_smaller_batches() {
        assert_eq!(rows_per_batch(64 * 1024, 10), 64 * 1024);
        assert_eq!(rows_per_batch(64 * 1024, 1200), (4 << 20) / 1200);
        assert_eq!(rows_per_batch(7, 5000), 7);
        assert_eq!(rows_per_batch(64 * 1024, 1_000_000), 64);
    }

    fn parse(
        input: &[u8],
        params: serde_json::Value,
        chunk: usize,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        parse_by(input, params, chunk, false).map(|(s, b, _)| (s, b))
    }

    /// Parses `input` in chunks of `chunk` bytes; with `arrow_only`, without the direct reader.
    /// Also says whether the direct reader read to the end.
    fn parse_by(
        input: &[u8],
        params: serde_json::Value,
        chunk: usize,
        arrow_only: bool,
    ) -> Result<(SchemaRef, Vec<RecordBatch>, bool)> {
        let mut p = Csv::start(Params::from_json(&params))?;
        p.arrow_only = arrow_only;
        let mut batches = Vec::new();
        for c in input.chunks(chunk.max(1)) {
            batches.extend(p.push(c)?);
        }
        let (schema, rest) = p.finish()?;
        batches.extend(rest);
        Ok((schema, batches, p.direct.is_some()))
    }

    /// One table from the batches, so that batch boundaries do not matter.
    fn table(schema: &SchemaRef, batches: &[RecordBatch]) -> RecordBatch {
        arrow_select::concat::concat_batches(schema, batches).expect("concat")
    }

    /// The direct reader and arrow-csv alone give the same table, or the same error, for every
    /// chunking; returns whether the direct reader read the whole input.
    fn same_as_arrow(input: &[u8], params: serde_json::Value) -> bool {
        let expected = parse_by(input, params.clone(), input.len().max(1), true);
        let mut direct_to_the_end = true;
        for chunk in [1, 2, 3, 5, 8, 13, 64, 4096, input.len().max(1)] {
            let got = parse_by(input, params.clone(), chunk, false);
            match (&expected, &got) {
                (Ok((es, eb, _)), Ok((gs, gb, direct))) => {
                    assert_eq!(
                        es,
                        gs,
                        "schema, chunk {chunk}, input {:?}",
                        String::from_utf8_lossy(input)
                    );
                    assert_eq!(
                        table(es, eb),
                        table(gs, gb),
                        "table, chunk {chunk}, input {:?}",
                        String::from_utf8_lossy(input)
                    );
                    direct_to_the_end &= direct;
                }
                (Err(e), Err(g)) => {
                    assert_eq!(e.to_string(), g.to_string(), "chunk {chunk}");
                    direct_to_the_end = false;
                }
                (e, g) => panic!(
                    "chunk {chunk}, input {:?}: arrow-csv gave {:?}, the direct reader {:?}",
                    String::from_utf8_lossy(input),
                    e.as_ref().map(|(_, b, _)| b.len()),
                    g.as_ref().map(|(_, b, _)| b.len())
                ),
            }
        }
        direct_to_the_end
    }

    #[test]
    fn direct_reader_reads_plain_csv_as_arrow_csv_does() {
        let typed = serde_json::json!({"types": {"flag": "boolean", "day": "date32"}});
        let plain =
            b"id,name,score,flag,day\n1,a,2.5,true,2024-02-29\n2,,-3e2,FALSE,1970-01-01\n,c,,,\n";
        assert!(
            same_as_arrow(plain, typed.clone()),
            "plain input stays direct"
        );
        // \r\n terminators, empty lines, no final terminator, a final \r.
        assert!(same_as_arrow(
            b"a,b\r\n1,x\r\n\r\n\n2,y",
            serde_json::json!({})
        ));
        assert!(same_as_arrow(b"a,b\n1,x\n2,y\r", serde_json::json!({})));
        assert!(same_as_arrow(b"a\n1\n2\n\n3\n", serde_json::json!({})));
        assert!(same_as_arrow(
            b"a;b\n1;2\n",
            serde_json::json!({"delimiter": ";"})
        ));
        assert!(same_as_arrow(
            b"1,2\n3,4\n",
            serde_json::json!({"header": false})
        ));
        assert!(same_as_arrow(
            "name,n\ncaf\u{e9},1\n\u{1F600},2\n".as_bytes(),
            serde_json::json!({})
        ));
        // Small batches: the direct reader cuts them as arrow-csv does not, the table is the same.
        let many: String = std::iter::once("n,t\n".to_string())
            .chain((0..500).map(|i| format!("{i},v{}\n", i % 7)))
            .collect();
        assert!(same_as_arrow(
            many.as_bytes(),
            serde_json::json!({"batch_rows": 7})
        ));
    }

    #[test]
    fn direct_reader_gives_way_where_arrow_csv_must_read() {
        let cases: &[(&[u8], serde_json::Value)] = &[
            // Quoting, at the start and later (the header alone quoted too).
            (b"\"a\",b\n1,\"x,y\"\n", serde_json::json!({})),
            (b"a,b\n1,x\n2,y\n3,\"z\"\"q\"\n4,w\n", serde_json::json!({})),
            (b"a,b\n1,x\n2,\"multi\nline\"\n3,w\n", serde_json::json!({})),
            // A lone \r ends a record for csv_core.
            (b"a,b\n1,x\r2,y\n3,z\n", serde_json::json!({})),
            (b"a,b\r1,x\r2,y\r", serde_json::json!({})),
            // Ragged records, early and late: the same error and line number.
            (b"a,b,c\n1,2,3\n4,5\n", serde_json::json!({})),
            (b"a,b,c\n1,2,3\n\n4,5,6\n7,8,9,10\n", serde_json::json!({})),
            (b"a,b\n1\n", serde_json::json!({"header": true})),
            // A value that does not parse as its column's type.
            (
                b"a,b\n1,x\n2,y\nthree,z\n",
                serde_json::json!({"types": {"a": "int64"}}),
            ),
            (
                b"a,d\n1,2024-01-01\n2,2023-02-29\n",
                serde_json::json!({"types": {"d": "date32"}}),
            ),
            (
                b"a,f\n1,true\n2,yes\n",
                serde_json::json!({"types": {"f": "boolean"}}),
            ),
            // Invalid UTF-8 in a later record.
            (b"a,b\n1,x\n2,\xff\xfe\n3,z\n", serde_json::json!({})),
            // A different quote byte, and an escape (never direct).
            (b"a,b\n1,'x,y'\n", serde_json::json!({"quote": "'"})),
            (b"a,b\n1,\"x\\\"y\"\n", serde_json::json!({"escape": "\\"})),
            // Timestamps are left to arrow-csv.
            (b"t,n\n2024-01-01T00:00:00,1\n", serde_json::json!({})),
        ];
        for (input, params) in cases {
            assert!(
                !same_as_arrow(input, params.clone()),
                "{:?} should not be read directly to the end",
                String::from_utf8_lossy(input)
            );
        }
        // The placeholder records keep the line numbers of the whole file.
        let err = parse(b"a,b\n1,x\n2,y\n3\n", serde_json::json!({}), 4).expect_err("ragged");
        assert!(err.to_string().contains("line 4"), "{err}");
    }

    #[test]
    fn iso_dates_are_read_as_arrow_cast_reads_them() {
        use arrow_array::types::Date32Type;
        use arrow_cast::parse::Parser as _;
        let mut checked = 0;
        for year in (0..=9999).step_by(97).chain(1896..=2104) {
            for month in 0..=13 {
                for day in [0, 1, 15, 28, 29, 30, 31, 32] {
                    let s = format!("{year:04}-{month:02}-{day:02}");
                    let expected = Date32Type::parse(&s);
                    let got = direct::iso_date(s.as_bytes());
                    assert!(
                        got.is_none() || got == expected,
                        "{s}: {got:?} vs {expected:?}"
                    );
                    assert_eq!(got.is_some(), expected.is_some(), "{s}");
                    checked += usize::from(got.is_some());
                }
            }
        }
        assert!(checked > 10_000);
        for other in [
            "2024-1-01",
            "2024-01-01 ",
            "+2024-01-01",
            "2024/01/01",
            "20240101",
        ] {
            assert_eq!(direct::iso_date(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn infers_types_and_streams_in_small_chunks() {
        let (schema, batches) = parse(
            b"id,score,name\n1,2.5,a\n2,3.5,b\n",
            serde_json::json!({}),
            3,
        )
        .expect("parse");
        assert_eq!(schema.field(0).data_type(), &DataType::Int64);
        assert_eq!(schema.field(1).data_type(), &DataType::Float64);
        assert_eq!(schema.field(2).data_type(), &DataType::Utf8);
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 2);
        assert_eq!(batches[0].column(2).as_string::<i32>().value(1), "b");
    }

    #[test]
    fn overrides_bom_latin1_and_semicolons() {
        let (schema, _) = parse(
            b"\xEF\xBB\xBFa;b\n1;2\n",
            serde_json::json!({"delimiter": ";", "types": {"b": "utf8"}}),
            64,
        )
        .expect("parse");
        assert_eq!(schema.field(0).name(), "a");
        assert_eq!(schema.field(1).data_type(), &DataType::Utf8);
        let (_, b) = parse(
            b"name\ncaf\xE9\n",
            serde_json::json!({"encoding": "latin-1"}),
            64,
        )
        .expect("parse");
        assert_eq!(b[0].column(0).as_string::<i32>().value(0), "café");
    }

    #[test]
    fn ragged_rows_name_their_line() {
        let err = parse(b"a,b,c\n1,2,3\n4,5\n", serde_json::json!({}), 64).expect_err("ragged");
        let PluginError::InvalidInput(m) = err else {
            panic!("wrong error kind")
        };
        assert!(m.contains("line"), "{m}");
    }

    #[test]
    fn bad_params_are_refused() {
        assert!(matches!(
            Csv::start(Params::from_json(&serde_json::json!({"delimter": ";"}))),
            Err(PluginError::InvalidParams(_))
        ));
        assert!(matches!(
            Csv::start(Params::from_json(
                &serde_json::json!({"encoding": "ebcdic"})
            )),
            Err(PluginError::Unsupported(_))
        ));
        assert!(matches!(
            parse(b"a\n1\n", serde_json::json!({"types": {"zz": "int64"}}), 8),
            Err(PluginError::InvalidParams(_))
        ));
        assert!(matches!(
            parse(b"\n", serde_json::json!({}), 8),
            Err(PluginError::InvalidInput(_))
        ));
    }

    // Compressed and UTF-16 input: the same table, or the same error, as the plain file.

    use std::io::Write as _;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    }

    fn bzip2(data: &[u8]) -> Vec<u8> {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        e.write_all(data).expect("bzip2");
        e.finish().expect("bzip2")
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut e = lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(6))
            .expect("xz");
        e.write_all(data).expect("xz");
        e.finish().expect("xz")
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    }

    /// `text` as UTF-16 with its byte-order mark, as Excel's "Unicode text" export writes it.
    fn utf16(text: &str, big_endian: bool) -> Vec<u8> {
        let mut out = if big_endian {
            vec![0xFE, 0xFF]
        } else {
            vec![0xFF, 0xFE]
        };
        for unit in text.encode_utf16() {
            out.extend(if big_endian {
                unit.to_be_bytes()
            } else {
                unit.to_le_bytes()
            });
        }
        out
    }

    /// The text of a plain file as `encoding = "auto"` reads it: without a UTF-8 byte-order mark,
    /// UTF-8 when it is, else Latin-1.
    fn text_of(plain: &[u8]) -> String {
        let plain = plain.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(plain);
        match std::str::from_utf8(plain) {
            Ok(s) => s.to_owned(),
            Err(_) => plain.iter().map(|&b| char::from(b)).collect(),
        }
    }

    /// The compressed forms of `plain`.
    fn compressed(plain: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("gzip", gzip(plain)),
            ("bzip2", bzip2(plain)),
            ("xz", xz(plain)),
            ("zstd", zstd(plain)),
        ]
    }

    /// The UTF-16 forms of `plain`'s text, plain and compressed.
    fn utf16_forms(plain: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
        let text = text_of(plain);
        let (le, be) = (utf16(&text, false), utf16(&text, true));
        vec![
            ("utf-16le", le.clone()),
            ("utf-16be", be.clone()),
            ("gzip utf-16le", gzip(&le)),
            ("zstd utf-16be", zstd(&be)),
            ("xz utf-16le", xz(&le)),
        ]
    }

    /// Asserts that two parses gave the same table, or the same error.
    fn assert_same(
        expected: &Result<(SchemaRef, Vec<RecordBatch>)>,
        got: &Result<(SchemaRef, Vec<RecordBatch>)>,
        what: &str,
    ) {
        match (expected, got) {
            (Ok((es, eb)), Ok((gs, gb))) => {
                assert_eq!(es, gs, "schema, {what}");
                assert_eq!(table(es, eb), table(gs, gb), "table, {what}");
            }
            (Err(e), Err(g)) => assert_eq!(e.to_string(), g.to_string(), "error, {what}"),
            (e, g) => panic!(
                "{what}: expected {:?}, got {:?}",
                e.as_ref().map(|(_, b)| b.len()),
                g.as_ref().map(|(_, b)| b.len())
            ),
        }
    }

    /// Every CSV file under `dir`, recursively.
    fn csv_files(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                csv_files(&path, found);
            } else if path.extension().is_some_and(|e| e == "csv") {
                found.push(path);
            }
        }
    }

    const CHUNKS: [usize; 3] = [1, 7, 64 << 10];

    #[test]
    fn every_fixture_reads_the_same_compressed_and_as_utf16() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/fixtures/csv");
        let mut files = Vec::new();
        csv_files(&dir, &mut files);
        files.sort();
        assert!(files.len() >= 15, "{} fixtures", files.len());
        let mut failures = 0;
        for path in &files {
            let plain = std::fs::read(path).expect("fixture");
            let name = path
                .strip_prefix(&dir)
                .unwrap_or(path)
                .display()
                .to_string();
            let forms = compressed(&plain);
            let utf16 = utf16_forms(&plain);
            for params in [
                serde_json::json!({}),
                serde_json::json!({"encoding": "auto", "delimiter": "auto"}),
                serde_json::json!({"encoding": "latin-1", "types": {}}),
            ] {
                let expected = parse(&plain, params.clone(), plain.len().max(1));
                failures += usize::from(expected.is_err());
                for (form, bytes) in &forms {
                    for chunk in CHUNKS {
                        let got = parse(bytes, params.clone(), chunk);
                        assert_same(
                            &expected,
                            &got,
                            &format!("{name} {form} {params} chunk {chunk}"),
                        );
                    }
                }
                // UTF-16 holds the text whatever `encoding` says: it reads as `auto` reads the
                // plain file.
                let mut auto = params.clone();
                auto["encoding"] = "auto".into();
                let expected = parse(&plain, auto, plain.len().max(1));
                for (form, bytes) in &utf16 {
                    for chunk in CHUNKS {
                        let got = parse(bytes, params.clone(), chunk);
                        assert_same(
                            &expected,
                            &got,
                            &format!("{name} {form} {params} chunk {chunk}"),
                        );
                    }
                }
            }
        }
        // bad.csv, empty.csv and (as UTF-8) test_latin1.csv fail, the same way in every form.
        assert!(failures >= 3, "{failures} failing parses");
    }

    #[test]
    fn a_large_file_reads_the_same_compressed_and_as_utf16() {
        // Beyond the inference head and the 64 KiB encoding head, with the direct reader giving
        // way to arrow-csv half way (a quoted field) and a field cut between UTF-16 chunks.
        let mut plain = String::from("id,name,score,day\n");
        for i in 0..40_000 {
            let name = if i == 20_000 {
                "\"quoted, \"\"name\"\"\"".to_string()
            } else {
                format!("n\u{e9}{}\u{1F600}", i % 97)
            };
            plain.push_str(&format!(
                "{i},{name},{}.5,2024-01-{:02}\n",
                i % 13,
                i % 28 + 1
            ));
        }
        let expected = parse(plain.as_bytes(), serde_json::json!({}), 1 << 20);
        let (schema, batches) = expected.as_ref().expect("plain");
        assert_eq!(table(schema, batches).num_rows(), 40_000);
        let mut forms = compressed(plain.as_bytes());
        forms.extend(utf16_forms(plain.as_bytes()));
        for (form, bytes) in &forms {
            for chunk in [7, 4096, 64 << 10] {
                for params in [
                    serde_json::json!({}),
                    serde_json::json!({"delimiter": "auto", "encoding": "auto", "batch_rows": 999}),
                ] {
                    let got = parse(bytes, params.clone(), chunk);
                    assert_same(&expected, &got, &format!("{form} {params} chunk {chunk}"));
                }
            }
        }
    }

    #[test]
    fn corrupt_or_truncated_compressed_input_names_the_format() {
        let plain: Vec<u8> = std::iter::once("a,b\n".to_string())
            .chain((0..5000).map(|i| format!("{i},text {}\n", i * 31 % 17)))
            .collect::<String>()
            .into_bytes();
        for (form, bytes) in compressed(&plain) {
            let cut = &bytes[..bytes.len() * 2 / 3];
            match parse(cut, serde_json::json!({}), 1000) {
                Err(PluginError::InvalidInput(m)) => assert!(
                    m.contains(&format!("the {form}-compressed input ends early")),
                    "{form}: {m}"
                ),
                other => panic!("{form} cut: {:?}", other.map(|(_, b)| b.len())),
            }
            let mut bad = bytes.clone();
            let mid = bad.len() / 2;
            for b in &mut bad[mid..mid + 16] {
                *b = !*b;
            }
            match parse(&bad, serde_json::json!({}), 1000) {
                Err(PluginError::InvalidInput(m)) => {
                    assert!(
                        m.contains(&format!("the {form}-compressed input")),
                        "{form}: {m}"
                    );
                }
                // Damage the format does not check may still parse, as other text.
                Ok((schema, batches)) => {
                    let ok = parse(&plain, serde_json::json!({}), 1000).expect("plain");
                    assert_ne!(table(&schema, &batches), table(&ok.0, &ok.1), "{form}");
                }
                Err(e) => panic!("{form}: {e}"),
            }
        }
        // UTF-16 cut in the middle of a character, or with half a surrogate pair.
        let mut odd = utf16("a,b\n1,2\n", false);
        odd.pop();
        let err = parse(&odd, serde_json::json!({}), 3).expect_err("odd");
        assert!(
            err.to_string().contains("line 2: the UTF-16 text ends"),
            "{err}"
        );
        let mut lone = utf16("a,b\n1,", true);
        lone.extend([0xD8, 0x3D, 0x00, 0x0A]);
        let err = parse(&lone, serde_json::json!({}), 5).expect_err("surrogate");
        assert!(err.to_string().contains("line 2: invalid UTF-16"), "{err}");
    }

    #[test]
    fn delimiter_and_encoding_auto_are_sniffed() {
        let columns = |input: &[u8], params: serde_json::Value| -> Vec<String> {
            let (schema, _) = parse(input, params, 3).expect("parse");
            schema.fields().iter().map(|f| f.name().clone()).collect()
        };
        let auto = serde_json::json!({"delimiter": "auto"});
        assert_eq!(columns(b"a;b;c\n1;2;3\n", auto.clone()), ["a", "b", "c"]);
        assert_eq!(
            columns(b"a\tb\tc\n1\t2\t3\n", auto.clone()),
            ["a", "b", "c"]
        );
        assert_eq!(
            columns(b"a,b,c\r\n1,2,3\r\n", auto.clone()),
            ["a", "b", "c"]
        );
        // Ties: tab beats semicolon, comma beats both.
        assert_eq!(columns(b"a\tb;c\n1\t2;3\n", auto.clone()), ["a", "b;c"]);
        assert_eq!(columns(b"a,b;c\n1,2;3\n", auto.clone()), ["a", "b;c"]);
        assert_eq!(columns(b"a,b\tc\n1,2\t3\n", auto.clone()), ["a", "b\tc"]);
        // Only the first line counts, and a file of one column reads as comma-separated.
        assert_eq!(columns(b"a;b\n1,2,3;4\n", auto.clone()), ["a", "b"]);
        assert_eq!(columns(b"only\n1\n", auto.clone()), ["only"]);
        assert_eq!(columns(b"x;y", auto.clone()), ["x", "y"]);
        // Excel's "Unicode text": UTF-16LE with a mark, tab-separated, CRLF, gzipped or not.
        let excel = utf16(
            "Name\tCity\r\nJos\u{e9}\tM\u{fc}nchen\r\n\u{1F600}\t\u{4E0A}\u{6D77}\r\n",
            false,
        );
        for bytes in [excel.clone(), gzip(&excel)] {
            for chunk in [1, 3, 1000] {
                let (schema, batches) = parse(&bytes, auto.clone(), chunk).expect("excel");
                let t = table(&schema, &batches);
                assert_eq!(columns(&bytes, auto.clone()), ["Name", "City"]);
                let city = t.column(1).as_string::<i32>();
                assert_eq!(
                    (city.value(0), city.value(1)),
                    ("M\u{fc}nchen", "\u{4E0A}\u{6D77}")
                );
            }
        }
        // `encoding = "auto"`: Latin-1 when the head is not UTF-8, UTF-8 when it is (a character
        // cut by the 64 KiB boundary does not count), UTF-16 by its mark.
        let value = |input: &[u8], params: serde_json::Value, chunk: usize| -> String {
            let (schema, batches) = parse(input, params, chunk).expect("parse");
            let t = table(&schema, &batches);
            let col = t.column(0).as_string::<i32>();
            col.value(arrow_array::Array::len(col) - 1).to_owned()
        };
        let enc = serde_json::json!({"encoding": "auto"});
        assert_eq!(value(b"name\ncaf\xE9\n", enc.clone(), 2), "caf\u{e9}");
        assert_eq!(
            value("name\ncaf\u{e9}\n".as_bytes(), enc.clone(), 2),
            "caf\u{e9}"
        );
        let mut cut = b"name\n".to_vec();
        while cut.len() < text::AUTO_HEAD - 100 {
            cut.extend_from_slice(b"abc\n");
        }
        let pad = "a".repeat(text::AUTO_HEAD - 1 - cut.len());
        cut.extend_from_slice(format!("{pad}\u{e9}\n").as_bytes());
        for chunk in [1, 1000, 1 << 20] {
            assert_eq!(
                value(&cut, enc.clone(), chunk),
                format!("{pad}\u{e9}"),
                "chunk {chunk}"
            );
        }
        for (bytes, chosen) in [
            (utf16("x", false), "utf-16le"),
            (utf16("x", true), "utf-16be"),
            (b"\xEF\xBB\xBFx".to_vec(), "utf-8"),
            (b"x\xE9".to_vec(), "latin-1"),
        ] {
            let mut t = Text::new(Encoding::Auto);
            t.push(&bytes, &mut |_| Ok(())).expect("push");
            t.finish(&mut |_| Ok(())).expect("finish");
            assert_eq!(t.chosen(), Some(chosen));
        }
        // Explicit values keep working, and a UTF-16 mark wins over them.
        assert_eq!(
            value(
                b"name\ncaf\xE9\n",
                serde_json::json!({"encoding": "latin-1"}),
                2
            ),
            "caf\u{e9}"
        );
        assert_eq!(
            value(
                &utf16("name\ncaf\u{e9}\n", true),
                serde_json::json!({"encoding": "latin-1"}),
                2
            ),
            "caf\u{e9}"
        );
        // A UTF-8 mark split between chunks is still dropped.
        assert_eq!(
            columns(b"\xEF\xBB\xBFa,b\n1,2\n", serde_json::json!({})),
            ["a", "b"]
        );
        assert!(matches!(
            Csv::start(Params::from_json(&serde_json::json!({"delimiter": "au"}))),
            Err(PluginError::InvalidParams(_))
        ));
    }

    /// The error message of a parse that must fail.
    fn error(input: &[u8], params: serde_json::Value, chunk: usize) -> String {
        match parse(input, params, chunk) {
            Err(PluginError::InvalidInput(m)) => m,
            other => panic!(
                "{:?}: expected invalid input, got {:?}",
                String::from_utf8_lossy(input),
                other.map(|(_, b)| b.len())
            ),
        }
    }

    /// What an invalid UTF-8 error adds.
    const UTF8_HINT: &str = " (set encoding to \"latin-1\" or \"auto\" if the file is not UTF-8)";

    #[test]
    fn every_error_names_its_line_and_field() {
        // Each input fails the same way in the inference head, after the direct reader gives way,
        // in arrow-csv alone, in every chunking, compressed and as UTF-16. Lines count empty lines
        // and the lines inside quoted fields, `\r`, `\n` and `\r\n` alike.
        let pinned = serde_json::json!({"types": {"a": "utf8", "b": "utf8"}});
        let cases: Vec<(&[u8], serde_json::Value, String)> = vec![
            (
                b"a,b\n1,2\n\n3,4\n5\n",
                serde_json::json!({}),
                "line 5: expected 2 fields, found 1".into(),
            ),
            (
                b"a,b\n1,2\n\n3,4\n5\n",
                pinned.clone(),
                "line 5: expected 2 fields, found 1".into(),
            ),
            (
                b"a,b\r\n\"x\r\ny\",1\r\n2,3,4\r\n",
                pinned.clone(),
                "line 4: expected 2 fields, found 3".into(),
            ),
            (
                b"a,b\r1,2\r\r3,4,5,6,7\r",
                pinned.clone(),
                "line 4: expected 2 fields, found 5".into(),
            ),
            (
                b"a,b\n1,x\n2,\xff\n",
                serde_json::json!({}),
                format!("line 3, field 2: invalid UTF-8{UTF8_HINT}"),
            ),
            (
                b"a,b\n1,x\n\n2,\"\n\xff\"\n",
                pinned.clone(),
                format!("line 4, field 2: invalid UTF-8{UTF8_HINT}"),
            ),
            (
                b"a,b\n\xff,x\n",
                pinned.clone(),
                format!("line 2, field 1: invalid UTF-8{UTF8_HINT}"),
            ),
            (
                b"a,\xffb\n1,x\n",
                serde_json::json!({}),
                format!("line 1, field 2: invalid UTF-8{UTF8_HINT}"),
            ),
            (
                b"a,b\n1,x\n\n\"three\",z\n",
                serde_json::json!({"types": {"a": "int64"}}),
                "line 4, field 1 (\"a\"): cannot read \"three\" as int64".into(),
            ),
            (
                b"a,b\n\"x\ny\",2024-01-01\n2,2024-02-30\n",
                serde_json::json!({"types": {"b": "date32"}}),
                "line 4, field 2 (\"b\"): cannot read \"2024-02-30\" as date32".into(),
            ),
            (
                b"a,b\n1,x\n2,\"y\n3,z\n",
                serde_json::json!({}),
                "line 3, field 2: a quoted field is not closed by the end of the input".into(),
            ),
            (
                b"a,b\n1,x\n2,\"y\n3,z\n",
                pinned.clone(),
                "line 3, field 2: a quoted field is not closed by the end of the input".into(),
            ),
        ];
        for (input, params, expected) in &cases {
            let mut forms = vec![("plain", input.to_vec())];
            forms.extend(compressed(input));
            if std::str::from_utf8(input).is_ok() {
                forms.extend(utf16_forms(input));
            }
            for (form, bytes) in &forms {
                for chunk in [1, 2, 5, 1000] {
                    for arrow_only in [false, true] {
                        let got = match parse_by(bytes, params.clone(), chunk, arrow_only) {
                            Err(PluginError::InvalidInput(m)) => m,
                            other => panic!(
                                "{form} {:?}: {:?}",
                                String::from_utf8_lossy(input),
                                other.map(|r| r.2)
                            ),
                        };
                        assert_eq!(
                            &got,
                            expected,
                            "{form}, chunk {chunk}, {:?}",
                            String::from_utf8_lossy(input)
                        );
                    }
                }
            }
        }
        // The same beyond the inference head, and with too many fields at the end of a batch
        // (where arrow-csv stops reading the record before its end).
        let mut big = String::from("a,b\n");
        while big.len() < INFER_BYTES + 1000 {
            big.push_str("1,x\n\n");
        }
        let lines = big.matches('\n').count();
        let mut late = big.clone();
        late.push_str("2,y,z\n");
        let expected = format!("line {}: expected 2 fields, found 3", lines + 1);
        for chunk in [1 << 10, 64 << 10] {
            assert_eq!(
                error(late.as_bytes(), serde_json::json!({}), chunk),
                expected
            );
            assert_eq!(
                error(&gzip(late.as_bytes()), serde_json::json!({}), chunk),
                expected
            );
        }
        let mut rows = String::from("a,b\n");
        for i in 0..9 {
            rows.push_str(&format!("{i},x\n"));
        }
        rows.push_str("9,x,y,z,w\n10,x\n");
        for chunk in [1, 3, 100] {
            for batch_rows in [1, 3, 5, 10] {
                for arrow_only in [false, true] {
                    let params = serde_json::json!({"batch_rows": batch_rows, "types": {"a": "int64", "b": "utf8"}});
                    let got = parse_by(rows.as_bytes(), params, chunk, arrow_only).map(|r| r.2);
                    assert!(
                        matches!(&got, Err(PluginError::InvalidInput(m)) if m == "line 11: expected 2 fields, found 5"),
                        "chunk {chunk}, batch_rows {batch_rows}: {got:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn files_the_reference_tools_compressed_read_as_the_plain_file() {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let plain =
            std::fs::read(root.join("../../../shared/fixtures/csv/iris.csv")).expect("iris");
        let expected = parse(&plain, serde_json::json!({}), 1 << 20);
        let (schema, batches) = expected.as_ref().expect("plain iris");
        assert_eq!(table(schema, batches).num_rows(), 150);
        for name in [
            "iris.csv.gz",
            "iris.two-members.csv.gz",
            "iris.csv.bz2",
            "iris.csv.xz",
            "iris.sha256.csv.xz",
            "iris.csv.zst",
            "iris.pzstd.csv.zst",
        ] {
            let bytes = std::fs::read(root.join("tests/data").join(name)).expect(name);
            for chunk in CHUNKS {
                let got = parse(&bytes, serde_json::json!({}), chunk);
                assert_same(&expected, &got, &format!("{name}, chunk {chunk}"));
            }
        }
        // The content checksum zstd writes is checked.
        let mut zst = std::fs::read(root.join("tests/data/iris.csv.zst")).expect("zst");
        if let Some(last) = zst.last_mut() {
            *last ^= 1;
        }
        let err = parse(&zst, serde_json::json!({}), 100).expect_err("checksum");
        assert!(
            err.to_string()
                .contains("the zstd-compressed input is corrupt: the checksum"),
            "{err}"
        );
    }
}
