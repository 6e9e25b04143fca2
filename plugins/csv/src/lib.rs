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
    decoder: Option<Decoder>,
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
        let mut builder = arrow_csv::ReaderBuilder::new(schema.clone())
            .with_header(self.opts.header)
            .with_delimiter(self.delimiter)
            .with_quote(self.quote)
            .with_batch_size(self.opts.batch_rows);
        if let Some(e) = self.escape {
            builder = builder.with_escape(e);
        }
        self.decoder = Some(builder.build_decoder());
        self.schema = Some(schema);
        Ok(())
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

    /// Feeds `pending` to the decoder, keeping what it did not consume.
    fn drain(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        let Some(decoder) = self.decoder.as_mut() else {
            return Ok(());
        };
        let used = Self::feed(decoder, &self.pending, out)?;
        self.pending.drain(..used);
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
            decoder: None,
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
        let mut out = Vec::new();
        if let (Some(decoder), true) = (self.decoder.as_mut(), self.pending.is_empty()) {
            // The common case: decode straight from the chunk, keeping only an unconsumed tail.
            let used = Self::feed(decoder, &bytes, &mut out)?;
            self.pending.extend_from_slice(&bytes[used..]);
            return Ok(out);
        }
        self.pending.extend_from_slice(&bytes);
        if self.decoder.is_none() {
            if self.pending.len() < INFER_BYTES {
                return Ok(out);
            }
            self.infer()?;
        }
        self.drain(&mut out)?;
        Ok(out)
    }

    fn finish(&mut self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        if self.pending.iter().all(|b| b.is_ascii_whitespace()) && self.decoder.is_none() {
            return Err(PluginError::InvalidInput(
                "the file is empty: no header and no records".into(),
            ));
        }
        if self.decoder.is_none() {
            self.infer()?;
        }
        let mut out = Vec::new();
        self.drain(&mut out)?;
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
        let mut p = Csv::start(Params::from_json(&params))?;
        let mut batches = Vec::new();
        for c in input.chunks(chunk.max(1)) {
            batches.extend(p.push(c)?);
        }
        let (schema, rest) = p.finish()?;
        batches.extend(rest);
        Ok((schema, batches))
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
