//! A direct reader for the plain shape of CSV: records end in `\n` (or `\r\n`), no field is quoted,
//! and every column is text, an integer, a float, a boolean or a date.
//!
//! arrow-csv first copies every record through csv_core's byte-at-a-time state machine into a
//! buffer of its own, then builds the columns from that buffer; in the sandbox that tokenizer alone
//! was 40% of a parse. This reader finds every field and line end in one `memchr2` pass and appends
//! each field straight to its column, parsing values with the same arrow-cast functions arrow-csv
//! calls, so the table is the same.
//!
//! It gives way, for good, at the first record it does not handle: one holding the quote byte or a
//! lone `\r`, with the wrong number of fields, with a value that does not parse, or with invalid
//! UTF-8. The caller then hands that record and everything after it to arrow-csv, which reads
//! quoting its own way and words the errors; [`Direct::records`] and [`Direct::lines`] tell it how
//! many records and lines came before, so its line numbers stay those of the whole file.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
};
use arrow_array::types::{Date32Type, Float64Type, Int64Type};
use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_cast::parse::Parser as _;
use arrow_schema::{DataType, SchemaRef};
use lake_sdk::{PluginError, Result};
use memchr::memchr;

/// One column being built.
enum Column {
    Utf8(StringBuilder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Boolean(BooleanBuilder),
    Date32(Date32Builder),
}

/// A field's value, parsed before any column of its record is appended to.
#[derive(Clone, Copy)]
enum Value {
    Null,
    Text,
    Int64(i64),
    Float64(f64),
    Boolean(bool),
    Date32(i32),
}

/// The reader's state between chunks.
pub(crate) struct Direct {
    schema: SchemaRef,
    columns: Vec<Column>,
    delimiter: u8,
    quote: u8,
    batch_rows: usize,
    /// Rows in the builders.
    rows: usize,
    /// Records read so far, the header included.
    records: usize,
    /// Lines read so far, empty ones included (all end in `\n`, but for a last one at the end of
    /// the input): where arrow-csv's line numbers continue from.
    lines: u64,
    /// The header record is still to be skipped.
    header: bool,
    /// Per record: where each field ends, and its parsed value.
    ends: Vec<usize>,
    values: Vec<Value>,
}

impl Direct {
    /// A reader for `schema`, or `None` when a column type or the escape option is not handled here.
    pub(crate) fn new(
        schema: SchemaRef,
        header: bool,
        delimiter: u8,
        quote: u8,
        escape: Option<u8>,
        batch_rows: usize,
    ) -> Option<Self> {
        if escape.is_some() || matches!(delimiter, b'\r' | b'\n') || delimiter == quote {
            return None;
        }
        let columns = schema
            .fields()
            .iter()
            .map(|f| column(f.data_type(), batch_rows))
            .collect::<Option<Vec<_>>>()?;
        if columns.is_empty() {
            return None;
        }
        Some(Self {
            schema,
            columns,
            delimiter,
            quote,
            batch_rows,
            rows: 0,
            records: 0,
            lines: 0,
            header,
            ends: Vec::new(),
            values: Vec::new(),
        })
    }

    /// Records read so far, the header included: the line number arrow-csv continues from.
    pub(crate) fn records(&self) -> usize {
        self.records
    }

    /// Lines read so far, empty ones included.
    pub(crate) fn lines(&self) -> u64 {
        self.lines
    }

    /// Reads the complete records at the start of `data` (with `last`, also a final record without
    /// a terminator), pushing each full batch to `out`. Returns the bytes read, and whether it
    /// stopped at a record it does not handle (which starts at the returned offset).
    pub(crate) fn feed(
        &mut self,
        data: &[u8],
        last: bool,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(usize, bool)> {
        // The bytes this call may read: whole lines, up to the first line it does not handle.
        let mut end = if last {
            data.len()
        } else {
            data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
        };
        let mut gave_way = false;
        // Gives way at the start of the line holding `at` (the partial last line included, so a
        // record that is not read here is not held back waiting for a `\n`).
        let mut stop = |at: usize, end: &mut usize| {
            let line_start = data[..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            *end = line_start.min(*end);
            gave_way = true;
        };
        if let Some(q) = memchr(self.quote, data) {
            stop(q, &mut end);
        }
        // A `\r` is only read as part of a `\r\n` terminator (or at the end of the input, where
        // the next chunk tells).
        let mut from = 0;
        while let Some(r) = memchr(b'\r', &data[from..]) {
            let at = from + r;
            match data.get(at + 1) {
                Some(b'\n') => from = at + 2,
                None => break,
                Some(_) => {
                    stop(at, &mut end);
                    break;
                }
            }
        }
        let text = match std::str::from_utf8(&data[..end]) {
            Ok(text) => text,
            Err(e) => {
                stop(e.valid_up_to(), &mut end);
                // The prefix up to a line start is valid UTF-8 on its own.
                std::str::from_utf8(&data[..end])
                    .map_err(|e| PluginError::Internal(format!("direct CSV reader: {e}")))?
            }
        };

        // One pass finds every field and line end: each delimiter is a field's end, each `\n` a
        // line's (short fields make a search per field cost more than the search itself).
        let bytes = text.as_bytes();
        let fields = self.columns.len();
        let mut line_start = 0;
        // Set once a line has more fields than columns: it is not handled here.
        let mut extra = false;
        self.ends.clear();
        let hits = memchr::memchr2_iter(self.delimiter, b'\n', bytes).chain(
            // A last line without a terminator (only when `last`: `end` stops after a `\n`).
            (bytes.last().is_some_and(|&b| b != b'\n')).then_some(bytes.len()),
        );
        for at in hits {
            if at < bytes.len() && bytes[at] == self.delimiter {
                if self.ends.len() + 1 < fields {
                    self.ends.push(at - line_start);
                } else {
                    extra = true;
                }
                continue;
            }
            let line = &text[line_start..at];
            let line = line.strip_suffix('\r').unwrap_or(line);
            // csv_core skips empty lines: they are not records.
            if !line.is_empty() {
                if extra || self.ends.len() + 1 != fields {
                    return Ok((line_start, true));
                }
                self.ends.push(line.len());
                if !self.record(line)? {
                    return Ok((line_start, true));
                }
                self.records += 1;
                if self.rows >= self.batch_rows {
                    out.extend(self.flush()?);
                }
            }
            self.lines += 1;
            line_start = at + 1;
            extra = false;
            self.ends.clear();
        }
        Ok((end, gave_way))
    }

    /// Reads one record (its line without the terminator), whose field ends `self.ends` holds (one
    /// per column); `false` when it is not handled here.
    fn record(&mut self, line: &str) -> Result<bool> {
        if std::mem::take(&mut self.header) {
            return Ok(true);
        }

        self.values.clear();
        let mut start = 0;
        for (column, &end) in self.columns.iter().zip(&self.ends) {
            let field = &line[start..end];
            start = end + 1;
            // As arrow-csv's default null pattern: an empty field is null, whatever the type.
            let value = if field.is_empty() {
                Value::Null
            } else {
                let parsed = match column {
                    Column::Utf8(_) => Some(Value::Text),
                    Column::Int64(_) => Int64Type::parse(field).map(Value::Int64),
                    Column::Float64(_) => Float64Type::parse(field).map(Value::Float64),
                    Column::Boolean(_) => parse_bool(field).map(Value::Boolean),
                    Column::Date32(_) => iso_date(field.as_bytes())
                        .or_else(|| Date32Type::parse(field))
                        .map(Value::Date32),
                };
                match parsed {
                    Some(v) => v,
                    None => return Ok(false),
                }
            };
            self.values.push(value);
        }

        let mut start = 0;
        for ((column, &end), &value) in self.columns.iter_mut().zip(&self.ends).zip(&self.values) {
            match (column, value) {
                (Column::Utf8(b), Value::Text) => b.append_value(&line[start..end]),
                (Column::Utf8(b), _) => b.append_null(),
                (Column::Int64(b), Value::Int64(v)) => b.append_value(v),
                (Column::Int64(b), _) => b.append_null(),
                (Column::Float64(b), Value::Float64(v)) => b.append_value(v),
                (Column::Float64(b), _) => b.append_null(),
                (Column::Boolean(b), Value::Boolean(v)) => b.append_value(v),
                (Column::Boolean(b), _) => b.append_null(),
                (Column::Date32(b), Value::Date32(v)) => b.append_value(v),
                (Column::Date32(b), _) => b.append_null(),
            }
            start = end + 1;
        }
        self.rows += 1;
        Ok(true)
    }

    /// The rows built so far as a batch (none when there are none).
    pub(crate) fn flush(&mut self) -> Result<Option<RecordBatch>> {
        if self.rows == 0 {
            return Ok(None);
        }
        let rows = std::mem::take(&mut self.rows);
        // Each builder starts the next batch with room for as much as this one held.
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter_mut()
            .map(|c| -> ArrayRef {
                match c {
                    Column::Utf8(b) => {
                        let a = b.finish();
                        *b = StringBuilder::with_capacity(rows, a.value_data().len());
                        Arc::new(a)
                    }
                    Column::Int64(b) => {
                        Arc::new(std::mem::replace(b, Int64Builder::with_capacity(rows)).finish())
                    }
                    Column::Float64(b) => {
                        Arc::new(std::mem::replace(b, Float64Builder::with_capacity(rows)).finish())
                    }
                    Column::Boolean(b) => {
                        Arc::new(std::mem::replace(b, BooleanBuilder::with_capacity(rows)).finish())
                    }
                    Column::Date32(b) => {
                        Arc::new(std::mem::replace(b, Date32Builder::with_capacity(rows)).finish())
                    }
                }
            })
            .collect();
        RecordBatch::try_new_with_options(
            self.schema.clone(),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map(Some)
        .map_err(|e| PluginError::Internal(format!("direct CSV reader: {e}")))
    }
}

/// An empty builder for a column of `ty` (small: a small file stays small; after the first batch
/// each builder is sized as the last batch was).
fn column(ty: &DataType, rows: usize) -> Option<Column> {
    let rows = rows.min(1024);
    Some(match ty {
        DataType::Utf8 => Column::Utf8(StringBuilder::with_capacity(rows, rows * 8)),
        DataType::Int64 => Column::Int64(Int64Builder::with_capacity(rows)),
        DataType::Float64 => Column::Float64(Float64Builder::with_capacity(rows)),
        DataType::Boolean => Column::Boolean(BooleanBuilder::with_capacity(rows)),
        DataType::Date32 => Column::Date32(Date32Builder::with_capacity(rows)),
        _ => return None,
    })
}

/// arrow-csv's reading of a boolean.
fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else {
        None
    }
}

/// `YYYY-MM-DD` as days since 1970-01-01; `None` for any other shape or a day that does not exist
/// (arrow-cast then has the last word).
pub(crate) fn iso_date(s: &[u8]) -> Option<i32> {
    let [y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] = *s else {
        return None;
    };
    let digit = |b: u8| b.is_ascii_digit().then(|| i32::from(b - b'0'));
    let year = digit(y0)? * 1000 + digit(y1)? * 100 + digit(y2)? * 10 + digit(y3)?;
    let month = digit(m0)? * 10 + digit(m1)?;
    let day = digit(d0)? * 10 + digit(d1)?;
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1..=days_in_month).contains(&day) {
        return None;
    }
    // Howard Hinnant's days_from_civil, for years 0..=9999.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}
