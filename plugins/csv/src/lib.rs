//! The bundled CSV parser: bytes in, Arrow batches out, streamed.
//!
//! It buffers only the head of the input (to infer column types), then decodes chunk by chunk with
//! arrow-csv's push decoder, so memory follows the batch size, not the file size. A byte-order mark
//! is dropped; Latin-1 input is transcoded to UTF-8 on the way in; `\r`, `\n` and `\r\n` all end a
//! record. A malformed record is reported with its line number.
//!
//! CSV cannot tell an empty field from a missing value, so both read as null in every column.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

use arrow_csv::reader::{Decoder, Format};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use lake_sdk::{Info, Params, Parser, PluginError, RecordBatch, Result};
use serde::Deserialize;

mod direct;

/// Parameters of the CSV parser.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Options {
    /// Field separator, one ASCII character (`","`; `"\t"` for TSV).
    delimiter: String,
    /// Quote character.
    quote: String,
    /// Escape character inside quotes (default: doubled quotes).
    escape: Option<String>,
    /// The first record names the columns.
    header: bool,
    /// `utf-8` or `latin-1` (also `iso-8859-1`).
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

/// Bytes of input kept before the schema is inferred.
const INFER_BYTES: usize = 1 << 20;

/// The parser state.
pub struct Csv {
    opts: Options,
    delimiter: u8,
    quote: u8,
    escape: Option<u8>,
    latin1: bool,
    /// Input not yet decoded (the head, before inference; afterwards only a partial record).
    pending: Vec<u8>,
    seen_first: bool,
    /// The direct reader, while the input keeps to the shape it reads ([`direct`]).
    direct: Option<direct::Direct>,
    /// arrow-csv's decoder, once the direct reader has given way (or when it never applied).
    decoder: Option<Decoder>,
    /// Tests compare the direct reader with arrow-csv alone.
    #[cfg(test)]
    arrow_only: bool,
    schema: Option<SchemaRef>,
}

impl Csv {
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

    fn transcode<'a>(&self, chunk: &'a [u8]) -> Cow<'a, [u8]> {
        if !self.latin1 {
            return Cow::Borrowed(chunk);
        }
        let mut out = Vec::with_capacity(chunk.len() + chunk.len() / 8);
        for &b in chunk {
            if b < 0x80 {
                out.push(b);
            } else {
                out.extend_from_slice(char::from(b).encode_utf8(&mut [0; 2]).as_bytes());
            }
        }
        Cow::Owned(out)
    }

    fn infer(&mut self) -> Result<()> {
        let infer = |records: usize| {
            self.format()
                .infer_schema(Cursor::new(&self.pending), Some(records))
                .map(|(schema, _)| schema)
                .map_err(|e| PluginError::InvalidInput(e.to_string()))
        };
        // When `types` names every column (as the host does for the later segments of a parallel
        // parse), the header alone gives the schema: the records need not be sampled.
        let header_only = if self.opts.types.is_empty() {
            None
        } else {
            Some(infer(0)?).filter(|s| {
                s.fields()
                    .iter()
                    .all(|f| self.opts.types.contains_key(f.name()))
            })
        };
        let inferred = match header_only {
            Some(schema) => schema,
            None => infer(self.opts.infer_rows)?,
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
            self.decoder = Some(self.arrow_decoder(&schema, 0)?);
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

    /// arrow-csv's decoder for the input after the first `after` records (the header included),
    /// counting lines as if it had read them: it is fed `after` placeholder records to skip.
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
            let after = reader.records();
            self.direct = None;
            let schema = self
                .schema
                .clone()
                .ok_or_else(|| PluginError::Internal("no schema after inference".into()))?;
            self.decoder = Some(self.arrow_decoder(&schema, after)?);
            return Ok(used + self.decode(&data[used..], last, out)?);
        }
        match self.decoder.as_mut() {
            Some(decoder) => Self::feed(decoder, data, out),
            None => Ok(0),
        }
    }

    /// Feeds `data` to the decoder, emitting every full batch; returns the bytes consumed.
    fn feed(decoder: &mut Decoder, data: &[u8], out: &mut Vec<RecordBatch>) -> Result<usize> {
        let mut offset = 0;
        while offset < data.len() {
            let used = decoder
                .decode(&data[offset..])
                .map_err(|e| PluginError::InvalidInput(e.to_string()))?;
            offset += used;
            if used == 0 || decoder.capacity() == 0 {
                if let Some(b) = decoder
                    .flush()
                    .map_err(|e| PluginError::InvalidInput(e.to_string()))?
                {
                    out.push(b);
                }
                if used == 0 && offset < data.len() && decoder.capacity() > 0 {
                    break;
                }
            }
        }
        Ok(offset)
    }

    /// Reads `pending`, keeping what was not consumed.
    fn drain(&mut self, last: bool, out: &mut Vec<RecordBatch>) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let used = self.decode(&pending, last, out);
        self.pending = pending;
        self.pending.drain(..used?);
        Ok(())
    }
}

impl Parser for Csv {
    fn info() -> Info {
        Info {
            name: "csv",
            version: env!("CARGO_PKG_VERSION"),
            description: "CSV to a table: delimiter, quoting, header, BOM, Latin-1, type inference with overrides",
            capabilities: &[],
        }
    }

    fn start(params: Params) -> Result<Self> {
        let opts: Options = params.parse()?;
        let latin1 = match opts
            .encoding
            .to_ascii_lowercase()
            .replace('_', "-")
            .as_str()
        {
            "utf-8" | "utf8" => false,
            "latin-1" | "latin1" | "iso-8859-1" => true,
            other => {
                return Err(PluginError::Unsupported(format!(
                    "encoding {other:?}; use utf-8 or latin-1"
                )));
            }
        };
        if opts.batch_rows == 0 || opts.infer_rows == 0 {
            return Err(PluginError::InvalidParams(
                "batch_rows and infer_rows must be at least 1".into(),
            ));
        }
        Ok(Csv {
            delimiter: one_byte("delimiter", &opts.delimiter)?,
            quote: one_byte("quote", &opts.quote)?,
            escape: opts
                .escape
                .as_deref()
                .map(|e| one_byte("escape", e))
                .transpose()?,
            latin1,
            opts,
            pending: Vec::new(),
            seen_first: false,
            direct: None,
            decoder: None,
            #[cfg(test)]
            arrow_only: false,
            schema: None,
        })
    }

    fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>> {
        let mut chunk = chunk;
        if !self.seen_first && !chunk.is_empty() {
            self.seen_first = true;
            if let Some(rest) = chunk.strip_prefix(b"\xEF\xBB\xBF") {
                chunk = rest;
            }
        }
        let bytes = self.transcode(chunk);
        let mut bytes = &bytes[..];
        let mut out = Vec::new();
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
                    return Ok(out);
                }
                None => {
                    self.pending.extend_from_slice(bytes);
                    bytes = &[];
                }
            }
            self.drain(false, &mut out)?;
        }
        if self.schema.is_some() && self.pending.is_empty() {
            // The common case: decode straight from the chunk, keeping only an unconsumed tail.
            let used = self.decode(bytes, false, &mut out)?;
            self.pending.extend_from_slice(&bytes[used..]);
            return Ok(out);
        }
        self.pending.extend_from_slice(bytes);
        if self.schema.is_none() {
            if self.pending.len() < INFER_BYTES && !self.header_is_enough() {
                return Ok(out);
            }
            self.infer()?;
        }
        self.drain(false, &mut out)?;
        Ok(out)
    }

    fn finish(&mut self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        if self.pending.iter().all(|b| b.is_ascii_whitespace()) && self.schema.is_none() {
            return Err(PluginError::InvalidInput(
                "the file is empty: no header and no records".into(),
            ));
        }
        if self.schema.is_none() {
            self.infer()?;
        }
        let mut out = Vec::new();
        self.drain(true, &mut out)?;
        if let Some(reader) = self.direct.as_mut() {
            out.extend(reader.flush()?);
        }
        if let Some(decoder) = self.decoder.as_mut() {
            // End of input: a final record without a line terminator is complete now.
            if !self.pending.is_empty() {
                let _ = decoder
                    .decode(&self.pending)
                    .map_err(|e| PluginError::InvalidInput(e.to_string()))?;
                self.pending.clear();
            }
            decoder
                .decode(&[])
                .map_err(|e| PluginError::InvalidInput(e.to_string()))?;
            if let Some(b) = decoder
                .flush()
                .map_err(|e| PluginError::InvalidInput(e.to_string()))?
            {
                out.push(b);
            }
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
}
