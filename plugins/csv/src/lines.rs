//! Line numbers for errors: where each record starts in the text, as a person counts lines.
//!
//! arrow-csv numbers records, not lines: it skips empty lines without counting them, a quoted
//! field may span lines, its parse errors count from 0 and its UTF-8 and field-count errors from 1.
//! A [`Tracker`] reads the same bytes with csv_core's own rules (records end at `\n`, `\r` or
//! `\r\n` outside quotes; a quote opens a quoted field only at the start of a field; a doubled quote
//! or the escape byte keeps it open; lines with no field are not records), jumping with `memchr`
//! from one byte that matters to the next, and notes at which line each record starts. Lines count
//! `\n`, `\r\n` and a lone `\r` alike, 1-based, the header being line 1, so a file has the same
//! numbers whatever its compression or encoding.
//!
//! The tracker serves twice: [`check_head`] reads the records that schema inference samples and
//! reports a wrong number of fields or invalid UTF-8 there itself, and [`Lines`] follows arrow-csv
//! through the rest of the input so that [`Lines::error`] can reword its errors with lines and
//! fields.

use std::collections::VecDeque;

use arrow_schema::{ArrowError, DataType, SchemaRef};
use lake_sdk::{PluginError, Result};
use memchr::{memchr, memchr2, memchr2_iter, memchr3};

/// The bytes that shape records.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Syntax {
    pub(crate) delimiter: u8,
    pub(crate) quote: u8,
    pub(crate) escape: Option<u8>,
}

/// Where the tracker is, as csv_core's states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between records (line ends and empty lines are skipped here).
    StartRecord,
    StartField,
    InField,
    InQuotedField,
    /// After the escape byte inside a quoted field.
    Escaped,
    /// After a quote inside a quoted field: it closes the field or, doubled, is a literal quote.
    QuoteInQuotedField,
}

/// What a scan reports, as it goes.
pub(crate) trait Sink {
    /// Record number `record` (1-based) starts at byte `at`, on line `line`.
    fn record_start(&mut self, _record: u64, _line: u64, _at: usize) {}
    /// A field starts at byte `at` (the first field too).
    fn field_start(&mut self, _at: usize) {}
    /// The current record ends at byte `at` with `fields` fields; `false` stops the scan.
    fn record_end(&mut self, _at: usize, _fields: usize) -> bool {
        true
    }
}

/// Follows records and lines through the text, chunk by chunk.
#[derive(Debug)]
pub(crate) struct Tracker {
    syntax: Syntax,
    state: State,
    /// The line at the current position.
    line: u64,
    /// The last byte was `\r` (a `\n` right after it ends no further line).
    cr: bool,
    /// Records started so far.
    records: u64,
    /// Fields started in the current record.
    fields: usize,
    /// The line where the open quoted field started.
    quote_line: u64,
}

impl Tracker {
    /// A tracker that starts after `records` records and `lines` whole lines.
    pub(crate) fn new(syntax: Syntax, records: u64, lines: u64) -> Self {
        Self {
            syntax,
            state: State::StartRecord,
            line: lines + 1,
            cr: false,
            records,
            fields: 0,
            quote_line: 0,
        }
    }

    /// Counts a line end (or not) for the byte `c`.
    fn byte(&mut self, c: u8) {
        if c == b'\r' || (c == b'\n' && !self.cr) {
            self.line += 1;
        }
        self.cr = c == b'\r';
    }

    /// Counts the line ends in `span`.
    fn span(&mut self, span: &[u8]) {
        for k in memchr2_iter(b'\r', b'\n', span) {
            let after_cr = if k == 0 {
                self.cr
            } else {
                span[k - 1] == b'\r'
            };
            if span[k] == b'\r' || !after_cr {
                self.line += 1;
            }
        }
        if let Some(&last) = span.last() {
            self.cr = last == b'\r';
        }
    }

    fn is_term(c: u8) -> bool {
        c == b'\r' || c == b'\n'
    }

    /// Reads `data`, reporting to `sink`; returns the bytes read (all of them unless the sink
    /// stopped the scan at a record end, which is then the returned offset).
    pub(crate) fn scan(&mut self, data: &[u8], sink: &mut impl Sink) -> usize {
        let Syntax {
            delimiter,
            quote,
            escape,
        } = self.syntax;
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::StartRecord => {
                    let c = data[i];
                    if Self::is_term(c) {
                        self.byte(c);
                        i += 1;
                    } else {
                        self.records += 1;
                        self.fields = 1;
                        sink.record_start(self.records, self.line, i);
                        sink.field_start(i);
                        self.state = State::StartField;
                    }
                }
                State::StartField | State::QuoteInQuotedField => {
                    let c = data[i];
                    if c == quote {
                        // A quote opens a quoted field at its start; after a quote inside one,
                        // it is the second of a doubled quote and the field stays open.
                        if self.state == State::StartField {
                            self.quote_line = self.line;
                        }
                        self.state = State::InQuotedField;
                        self.byte(c);
                        i += 1;
                    } else if c == delimiter {
                        self.byte(c);
                        i += 1;
                        self.fields += 1;
                        sink.field_start(i);
                        self.state = State::StartField;
                    } else if Self::is_term(c) {
                        self.state = State::StartRecord;
                        if !sink.record_end(i, self.fields) {
                            return i;
                        }
                    } else {
                        self.byte(c);
                        i += 1;
                        self.state = State::InField;
                    }
                }
                State::InField => match memchr3(delimiter, b'\r', b'\n', &data[i..]) {
                    None => {
                        self.cr = false;
                        i = data.len();
                    }
                    Some(k) => {
                        if k > 0 {
                            self.cr = false;
                        }
                        i += k;
                        let c = data[i];
                        if c == delimiter {
                            self.byte(c);
                            i += 1;
                            self.fields += 1;
                            sink.field_start(i);
                            self.state = State::StartField;
                        } else {
                            self.state = State::StartRecord;
                            if !sink.record_end(i, self.fields) {
                                return i;
                            }
                        }
                    }
                },
                State::InQuotedField => {
                    let rest = &data[i..];
                    let found = match escape {
                        Some(e) => memchr2(quote, e, rest),
                        None => memchr(quote, rest),
                    };
                    let end = found.unwrap_or(rest.len());
                    self.span(&rest[..end]);
                    i += end;
                    if let Some(&c) = data.get(i) {
                        self.byte(c);
                        i += 1;
                        self.state = if c == quote {
                            State::QuoteInQuotedField
                        } else {
                            State::Escaped
                        };
                    }
                }
                State::Escaped => {
                    self.byte(data[i]);
                    i += 1;
                    self.state = State::InQuotedField;
                }
            }
        }
        data.len()
    }

    /// The input ended at byte `at`: a record still open ends there (as csv_core ends it).
    pub(crate) fn end(&mut self, at: usize, sink: &mut impl Sink) {
        if self.state != State::StartRecord {
            self.state = State::StartRecord;
            sink.record_end(at, self.fields);
        }
    }

    /// Where the quoted field still open started (line and field), if one is.
    pub(crate) fn open_quote(&self) -> Option<(u64, usize)> {
        matches!(self.state, State::InQuotedField | State::Escaped)
            .then_some((self.quote_line, self.fields))
    }
}

/// The error for a record with the wrong number of fields.
fn field_count(line: u64, expected: usize, found: &str) -> PluginError {
    PluginError::InvalidInput(format!(
        "line {line}: expected {expected} fields, found {found}"
    ))
}

/// The error for invalid UTF-8 in a field.
fn invalid_utf8(line: u64, field: usize) -> PluginError {
    PluginError::InvalidInput(format!(
        "line {line}, field {field}: invalid UTF-8 (set encoding to \"latin-1\" or \"auto\" if the file is not UTF-8)"
    ))
}

/// Checks the first `records` records of `head` as schema inference reads them: each must have
/// the fields of the first and be valid UTF-8. With `complete`, `head` is the whole input, so a
/// final record without a line end counts. Returns the length of the records checked (the bytes
/// inference should read).
pub(crate) fn check_head(
    head: &[u8],
    syntax: Syntax,
    records: u64,
    complete: bool,
) -> Result<usize> {
    struct Check<'a> {
        head: &'a [u8],
        want: u64,
        seen: u64,
        expected: Option<usize>,
        start: usize,
        line: u64,
        field_starts: Vec<usize>,
        end: usize,
        error: Option<PluginError>,
    }
    impl Sink for Check<'_> {
        fn record_start(&mut self, _record: u64, line: u64, at: usize) {
            self.start = at;
            self.line = line;
            self.field_starts.clear();
        }
        fn field_start(&mut self, at: usize) {
            self.field_starts.push(at);
        }
        fn record_end(&mut self, at: usize, fields: usize) -> bool {
            let expected = *self.expected.get_or_insert(fields);
            if fields != expected {
                self.error = Some(field_count(self.line, expected, &fields.to_string()));
                return false;
            }
            if let Err(e) = std::str::from_utf8(&self.head[self.start..at]) {
                let bad = self.start + e.valid_up_to();
                let field = self.field_starts.iter().filter(|&&s| s <= bad).count();
                self.error = Some(invalid_utf8(self.line, field.max(1)));
                return false;
            }
            self.end = at;
            self.seen += 1;
            self.seen < self.want
        }
    }
    let mut check = Check {
        head,
        want: records.max(1),
        seen: 0,
        expected: None,
        start: 0,
        line: 1,
        field_starts: Vec::new(),
        end: 0,
        error: None,
    };
    let mut tracker = Tracker::new(syntax, 0, 0);
    let read = tracker.scan(head, &mut check);
    if complete && read == head.len() && check.error.is_none() && check.seen < check.want {
        tracker.end(head.len(), &mut check);
    }
    match check.error {
        Some(e) => Err(e),
        None if check.seen == 0 => Ok(head.len()),
        None => Ok(check.end),
    }
}

/// Record starts where the line number stops being the record number plus a constant: after
/// an empty line or a record spanning lines. Between two, each record starts one line after
/// the one before. Also the first record with the wrong number of fields.
#[derive(Debug, Default)]
struct Starts {
    /// (record, line), in order.
    marks: VecDeque<(u64, u64)>,
    /// Fields each record should have.
    expected: usize,
    /// The record being read and its line.
    current: (u64, u64),
    /// The first record with the wrong number of fields: (record, line, fields).
    bad: Option<(u64, u64, usize)>,
}

impl Sink for Starts {
    fn record_start(&mut self, record: u64, line: u64, _at: usize) {
        let shift = line - record.min(line);
        if self.marks.back().map(|&(r, l)| l - r.min(l)) != Some(shift) {
            self.marks.push_back((record, line));
        }
        self.current = (record, line);
    }

    fn record_end(&mut self, _at: usize, fields: usize) -> bool {
        if fields != self.expected && self.bad.is_none() {
            self.bad = Some((self.current.0, self.current.1, fields));
        }
        true
    }
}

/// Follows arrow-csv through the input (from the record where it takes over) to name lines in
/// its errors.
#[derive(Debug)]
pub(crate) struct Lines {
    tracker: Tracker,
    starts: Starts,
    /// Records arrow-csv is done with (handed on in batches, or skipped): their lines are
    /// forgotten.
    done: u64,
}

impl Lines {
    /// Lines for arrow-csv reading records of `fields` fields after `records` records and `lines`
    /// lines, of which it is done with the first `done` (the header it skips itself counts as
    /// done).
    pub(crate) fn new(syntax: Syntax, fields: usize, records: u64, lines: u64, done: u64) -> Self {
        Self {
            tracker: Tracker::new(syntax, records, lines),
            starts: Starts {
                expected: fields,
                ..Starts::default()
            },
            done,
        }
    }

    /// The record of arrow-csv's error `e` when it is about the number of fields. arrow-csv may
    /// report a record with too many fields before its end (and then cannot say how many): the
    /// caller reads on with [`Lines::scan`] until [`Lines::wrong_fields`] can tell.
    pub(crate) fn field_count_record(e: &ArrowError) -> Option<u64> {
        number_after(&e.to_string(), "incorrect number of fields for line ")
    }

    /// The error for record `record`, once its end has been read and it has the wrong number of
    /// fields.
    pub(crate) fn wrong_fields(&self, record: u64) -> Option<PluginError> {
        match self.starts.bad {
            Some((r, line, fields)) if r == record => {
                Some(field_count(line, self.starts.expected, &fields.to_string()))
            }
            _ => None,
        }
    }

    /// The input ended: the record still open ends here.
    pub(crate) fn end(&mut self) {
        self.tracker.end(0, &mut self.starts);
    }

    /// Reads the bytes arrow-csv has read.
    pub(crate) fn scan(&mut self, data: &[u8]) {
        self.tracker.scan(data, &mut self.starts);
    }

    /// arrow-csv handed on `rows` more records: their start lines are no longer needed.
    pub(crate) fn done(&mut self, rows: usize) {
        self.done += rows as u64;
        let marks = &mut self.starts.marks;
        while marks.len() > 1 && marks[1].0 <= self.done + 1 {
            marks.pop_front();
        }
    }

    /// The line where record `record` starts (the record number itself when it is unknown).
    pub(crate) fn line_of(&self, record: u64) -> u64 {
        self.starts
            .marks
            .iter()
            .rev()
            .find(|&&(r, _)| r <= record)
            .map_or(record, |&(r, l)| l + (record - r))
    }

    /// The error for a quoted field still open at the end of the input, if one is.
    pub(crate) fn open_quote(&self) -> Option<PluginError> {
        self.tracker.open_quote().map(|(line, field)| {
            PluginError::InvalidInput(format!(
                "line {line}, field {field}: a quoted field is not closed by the end of the input"
            ))
        })
    }

    /// arrow-csv's error `e`, reworded with the line (and field) where the record starts.
    pub(crate) fn error(&self, e: &ArrowError, schema: &SchemaRef) -> PluginError {
        let text = e.to_string();
        let number_after = |key: &str| number_after(&text, key);
        let field_name = |index: u64| {
            usize::try_from(index)
                .ok()
                .and_then(|i| schema.fields().get(i))
                .map(|f| format!(" ({:?})", f.name()))
                .unwrap_or_default()
        };
        // "incorrect number of fields for line {record}, expected {n} got {m}" (or "got more
        // than {m}"): the record number is 1-based.
        if let (Some(record), Some(expected)) = (
            number_after("incorrect number of fields for line "),
            number_after(", expected "),
        ) {
            if let Some(e) = self.wrong_fields(record) {
                return e;
            }
            let found = match (number_after(" got more than "), number_after(" got ")) {
                (Some(m), _) => format!("more than {m}"),
                (None, Some(m)) => m.to_string(),
                (None, None) => "another number".into(),
            };
            return field_count(self.line_of(record), expected as usize, &found);
        }
        // "Encountered invalid UTF-8 data for line {record} and field {field}", both 1-based.
        if let (Some(record), Some(field)) = (
            number_after("invalid UTF-8 data for line "),
            number_after(" and field "),
        ) {
            return invalid_utf8(self.line_of(record), field as usize);
        }
        // "Error while parsing value '{v}' as type '{t}' for column {c} at line {n}. Row data:
        // ...": the column and `n` count from 0 (`n` is the record number less one).
        if let (Some(column), Some(record)) =
            (number_after("' for column "), number_after(" at line "))
        {
            let value = text
                .find("parsing value '")
                .map(|at| &text[at + "parsing value '".len()..])
                .and_then(|rest| rest.find("' as type '").map(|end| &rest[..end]))
                .unwrap_or("?");
            let ty = usize::try_from(column)
                .ok()
                .and_then(|i| schema.fields().get(i))
                .map_or("its type", |f| type_name(f.data_type()));
            return PluginError::InvalidInput(format!(
                "line {}, field {}{}: cannot read {value:?} as {ty}",
                self.line_of(record + 1),
                column + 1,
                field_name(column)
            ));
        }
        // "Error parsing column {c} at line {n}: {detail}" (timestamps), counted as above.
        if let (Some(column), Some(record)) = (
            number_after("Error parsing column "),
            number_after(" at line "),
        ) {
            let detail = text
                .find(" at line ")
                .and_then(|at| text[at..].find(": ").map(|k| &text[at + k + 2..]))
                .unwrap_or("");
            return PluginError::InvalidInput(format!(
                "line {}, field {}{}: {detail}",
                self.line_of(record + 1),
                column + 1,
                field_name(column)
            ));
        }
        PluginError::InvalidInput(text)
    }
}

/// The lake's name of a column type, as `types` spells it.
fn type_name(ty: &DataType) -> &'static str {
    match ty {
        DataType::Utf8 => "utf8",
        DataType::Int64 => "int64",
        DataType::Float64 => "float64",
        DataType::Boolean => "boolean",
        DataType::Date32 => "date32",
        DataType::Timestamp(..) => "timestamp",
        _ => "its type",
    }
}

/// The number right after `key` in an arrow-csv error message.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}
