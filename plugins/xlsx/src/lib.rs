//! The bundled XLSX parser: one worksheet of a workbook in, one typed Arrow table out.
//!
//! An XLSX file is a zip archive whose directory sits at its end, so the parser buffers the whole
//! input (up to `max_bytes`) and decodes it in `finish` with calamine. Cells are read with
//! calamine's cell reader and kept sparse, column by column, so memory follows the cells that
//! exist rather than the sheet's bounding box. Positions are the sheet's own: the table starts at
//! column A and at row `header_row`, as a spreadsheet user counts them (0-based here), which keeps
//! leading blank rows and columns where they are.
//!
//! Types are inferred per column from its non-empty cells: all numbers give `Float64` (`Int64`
//! when every value is integral and exactly representable), all booleans `Boolean`, all dates
//! `Timestamp(Microsecond)` (or `Time64(Microsecond)` when every value is a bare time of day), and
//! anything else `Utf8` with each cell rendered as text. Formulas contribute their cached values.
//! Empty cells, empty strings and error cells (`#N/A`, `#DIV/0!`, ...) are null; error cells are
//! counted in a warning.

use std::io::Cursor;
use std::sync::Arc;

use arrow_array::ArrayRef;
use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, Time64MicrosecondBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use calamine::{Data, Reader, XlsxError};
use lake_sdk::{Info, Level, Params, Parser, PluginError, RecordBatch, Result};
use serde::Deserialize;

/// The largest batch the parser emits.
const MAX_BATCH_ROWS: usize = 64 * 1024;

/// The first bytes of an OLE compound file: legacy `.xls` workbooks and encrypted XLSX files alike.
const OLE_MAGIC: [u8; 8] = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];

/// The first bytes of a zip archive's first local file header.
const ZIP_MAGIC: [u8; 4] = *b"PK\x03\x04";

/// Rows and columns of an Excel worksheet.
const MAX_ROWS: u32 = 1 << 20;
const MAX_COLUMNS: u32 = 1 << 14;

/// Microseconds in a day.
const DAY_MICROS: i64 = 86_400_000_000;

/// Parameters of the XLSX parser.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Options {
    /// Sheet name (a string) or 0-based index (a number); the first sheet when absent.
    sheet: Option<serde_json::Value>,
    /// The row at `header_row` names the columns; when false the columns are `column_1..n`.
    header: bool,
    /// 0-based sheet row where the table starts: the header, or the first data row without one.
    header_row: u32,
    /// Infer column types; when false every column is text.
    infer_types: bool,
    /// Largest workbook accepted, in bytes.
    max_bytes: u64,
    /// Rows per output batch (at most 65536).
    batch_rows: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            sheet: None,
            header: true,
            header_row: 0,
            infer_types: true,
            max_bytes: 512 << 20,
            batch_rows: MAX_BATCH_ROWS,
        }
    }
}

/// The parser state: the workbook bytes received so far.
#[derive(Debug)]
pub struct Xlsx {
    opts: Options,
    buf: Vec<u8>,
}

impl Parser for Xlsx {
    fn info() -> Info {
        Info {
            name: "xlsx",
            version: env!("CARGO_PKG_VERSION"),
            description: "XLSX worksheet to a table: sheet by name or index, header row, type inference, cached formula values",
            capabilities: &[],
        }
    }

    fn start(params: Params) -> Result<Self> {
        let opts: Options = params.parse()?;
        if opts.batch_rows == 0 || opts.batch_rows > MAX_BATCH_ROWS {
            return Err(PluginError::InvalidParams(format!(
                "batch_rows must be between 1 and {MAX_BATCH_ROWS}, not {}",
                opts.batch_rows
            )));
        }
        Ok(Xlsx {
            opts,
            buf: Vec::new(),
        })
    }

    fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>> {
        let total = self.buf.len() as u64 + chunk.len() as u64;
        if total > self.opts.max_bytes {
            return Err(PluginError::TooLarge(format!(
                "the workbook is larger than max_bytes ({} bytes); an XLSX file is read whole, so raise max_bytes to accept it",
                self.opts.max_bytes
            )));
        }
        // Refuse a file that is not a zip as soon as its first bytes show it, rather than after
        // buffering all of it.
        let was = self.buf.len();
        self.buf.extend_from_slice(chunk);
        if was < OLE_MAGIC.len() && self.buf.len() >= OLE_MAGIC.len() {
            check_magic(&self.buf)?;
        }
        Ok(Vec::new())
    }

    fn finish(&mut self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let bytes = std::mem::take(&mut self.buf);
        if bytes.is_empty() {
            return Err(PluginError::InvalidInput(
                "the file is empty: an XLSX workbook is a zip archive".into(),
            ));
        }
        check_magic(&bytes)?;
        // The direct reader handles the usual workbook; anything else, and every error, is
        // calamine's.
        if let Some(mut book) = fast::Book::open(&bytes) {
            let sheet = choose_sheet(self.opts.sheet.as_ref(), &book.names)?;
            if let Some(cells) = book.cells(&sheet) {
                return build_table(&self.opts, &sheet, cells, book.is_1904);
            }
        }
        let mut workbook = open_workbook(&bytes)?;
        let names = workbook.sheet_names();
        let sheet = choose_sheet(self.opts.sheet.as_ref(), &names)?;
        let is_1904 = workbook.has_1904_epoch();
        let cells = match read_cells(&mut workbook, &sheet) {
            Ok(cells) => cells,
            // Some writers pad numbers with spaces (`<v> 41</v>`, as in readxl's own example
            // workbook), which readxl reads but calamine refuses: trim them in a rewritten archive
            // and read that instead.
            Err(XlsxError::ParseFloat(e)) => {
                drop(workbook);
                let Some(fixed) = trim_padded_numbers(&bytes)? else {
                    return Err(sheet_error(&sheet, XlsxError::ParseFloat(e)));
                };
                lake_sdk::log(
                    Level::Warn,
                    &format!("sheet {sheet:?}: numbers padded with spaces were trimmed"),
                );
                let mut workbook = open_workbook(&fixed)?;
                read_cells(&mut workbook, &sheet).map_err(|e| sheet_error(&sheet, e))?
            }
            Err(e) => return Err(sheet_error(&sheet, e)),
        };
        build_table(&self.opts, &sheet, cells, is_1904)
    }
}

lake_sdk::export_parser!(crate::Xlsx);

mod fast;

/// Picks the sheet named, or at the index given, or the first one.
fn choose_sheet(wanted: Option<&serde_json::Value>, names: &[String]) -> Result<String> {
    let index = match wanted {
        None => {
            return names
                .first()
                .cloned()
                .ok_or_else(|| PluginError::InvalidInput("the workbook has no sheets".into()));
        }
        Some(serde_json::Value::String(n)) if names.contains(n) => return Ok(n.clone()),
        Some(serde_json::Value::String(n)) => {
            return Err(PluginError::InvalidParams(format!(
                "sheet: no sheet named {n:?}; the sheets are {names:?}"
            )));
        }
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(_) => None,
    };
    let Some(i) = index else {
        let shown = wanted.map(ToString::to_string).unwrap_or_default();
        return Err(PluginError::InvalidParams(format!(
            "sheet: give a sheet name or a 0-based index, not {shown}; the sheets are {names:?}"
        )));
    };
    if let Some(name) = usize::try_from(i).ok().and_then(|i| names.get(i)) {
        return Ok(name.clone());
    }
    // A sheet named like a number ("2019") may arrive as a number when parameters are untyped text.
    if let Some(name) = names.iter().find(|n| **n == i.to_string()) {
        return Ok(name.clone());
    }
    Err(PluginError::InvalidParams(format!(
        "sheet: index {i} is out of range: the workbook has {} sheets, {names:?} (indices start at 0)",
        names.len()
    )))
}

/// Refuses input whose first bytes show it is not a zip archive.
fn check_magic(bytes: &[u8]) -> Result<()> {
    if bytes.starts_with(&OLE_MAGIC) {
        return Err(PluginError::InvalidInput(
            "the workbook is encrypted or not an XLSX (an OLE container): remove the password, or save a legacy .xls file as .xlsx".into(),
        ));
    }
    let head = &bytes[..bytes.len().min(ZIP_MAGIC.len())];
    if !ZIP_MAGIC.starts_with(head) {
        return Err(PluginError::InvalidInput(format!(
            "not an XLSX workbook: an XLSX file is a zip archive starting with \"PK\\x03\\x04\", this one starts with {head:02X?}"
        )));
    }
    Ok(())
}

/// Explains a calamine error about the workbook as a whole.
fn workbook_error(e: &XlsxError) -> PluginError {
    match e {
        XlsxError::Password => PluginError::InvalidInput("the workbook is encrypted (password protected): remove the password and upload it again".into()),
        XlsxError::Zip(z) => PluginError::InvalidInput(format!("corrupt XLSX: the zip archive cannot be read ({z}); the file may be truncated")),
        XlsxError::FileNotFound(f) => PluginError::InvalidInput(format!("not an XLSX workbook: the zip archive has no {f}")),
        other => PluginError::InvalidInput(format!("corrupt XLSX: {other}")),
    }
}

/// Opens a workbook held in memory.
fn open_workbook(bytes: &[u8]) -> Result<calamine::Xlsx<Cursor<&[u8]>>> {
    calamine::Xlsx::new(Cursor::new(bytes)).map_err(|e| workbook_error(&e))
}

/// Explains a calamine error about one sheet.
fn sheet_error(sheet: &str, e: XlsxError) -> PluginError {
    match e {
        XlsxError::NotAWorksheet(kind) => PluginError::Unsupported(format!(
            "sheet {sheet:?} is not a worksheet (it is a {kind}); choose a worksheet"
        )),
        other => PluginError::InvalidInput(format!("sheet {sheet:?}: corrupt worksheet: {other}")),
    }
}

/// Rewrites the archive with the padding trimmed from numeric cell values in every worksheet; `None`
/// when no value needed it. Other entries are copied still compressed.
fn trim_padded_numbers(bytes: &[u8]) -> Result<Option<Vec<u8>>> {
    let zip_error = |e: zip::result::ZipError| {
        PluginError::InvalidInput(format!(
            "corrupt XLSX: the zip archive cannot be read ({e})"
        ))
    };
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(zip_error)?;
    let mut out = zip::ZipWriter::new(Cursor::new(Vec::with_capacity(bytes.len())));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut changed = false;
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).map_err(zip_error)?;
        let name = file.name().map_err(zip_error)?.into_owned();
        if !(name.starts_with("xl/worksheets/") && name.ends_with(".xml")) {
            drop(file);
            let raw = archive.by_index_raw(i).map_err(zip_error)?;
            out.raw_copy_file(raw).map_err(zip_error)?;
            continue;
        }
        let mut xml = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut xml)
            .map_err(|e| PluginError::InvalidInput(format!("corrupt XLSX: {name}: {e}")))?;
        let xml = match trim_values(&xml) {
            Some(fixed) => {
                changed = true;
                fixed
            }
            None => xml,
        };
        out.start_file(name, stored).map_err(zip_error)?;
        std::io::Write::write_all(&mut out, &xml)
            .map_err(|e| PluginError::Internal(format!("rewriting the archive: {e}")))?;
    }
    if !changed {
        return Ok(None);
    }
    Ok(Some(out.finish().map_err(zip_error)?.into_inner()))
}

/// Trims ASCII whitespace around the `<v>` values of a worksheet's cells when what remains is a
/// number; cached string results (`t="str"`) keep their spaces. `None` when nothing changed.
fn trim_values(xml: &[u8]) -> Option<Vec<u8>> {
    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }
    let mut out = Vec::with_capacity(xml.len());
    let mut changed = false;
    let mut text_cell = false;
    let mut i = 0;
    while let Some(off) = xml[i..].iter().position(|&b| b == b'<') {
        out.extend_from_slice(&xml[i..i + off]);
        i += off;
        let rest = &xml[i..];
        if rest.starts_with(b"<c ") || rest.starts_with(b"<c>") {
            let tag = &rest[..rest.iter().position(|&b| b == b'>').unwrap_or(rest.len())];
            text_cell = find(tag, b"t=\"str\"").is_some() || find(tag, b"t='str'").is_some();
        } else if rest.starts_with(b"<v>")
            && let Some(len) = find(&rest[3..], b"</v>")
        {
            let inner = &rest[3..3 + len];
            let trimmed = inner.trim_ascii();
            let number = std::str::from_utf8(trimmed).is_ok_and(|t| t.parse::<f64>().is_ok());
            out.extend_from_slice(b"<v>");
            if !text_cell && number && trimmed.len() != inner.len() {
                out.extend_from_slice(trimmed);
                changed = true;
            } else {
                out.extend_from_slice(inner);
            }
            i += 3 + len;
            continue;
        }
        out.push(b'<');
        i += 1;
    }
    out.extend_from_slice(&xml[i..]);
    changed.then_some(out)
}

/// The non-empty cells of one sheet, column by column: `columns[c]` holds `(row, value)` sorted by row.
#[derive(Debug, Default, PartialEq)]
struct Cells {
    columns: Vec<Vec<(u32, Data)>>,
    /// The last row that holds a cell, if any.
    last_row: Option<u32>,
}

impl Cells {
    /// Keeps a non-empty cell; cells arrive in document order.
    fn push(&mut self, row: u32, col: usize, value: Data) {
        if self.columns.len() <= col {
            self.columns.resize_with(col + 1, Vec::new);
        }
        self.columns[col].push((row, value));
        self.last_row = Some(self.last_row.map_or(row, |r| r.max(row)));
    }

    /// Sorts each column by row, keeping the last of any duplicated position.
    fn normalise(&mut self) {
        // Cells arrive in document order, which is row order in every well-formed sheet; sort
        // anyway so lookups by row stay correct.
        for column in &mut self.columns {
            if !column.is_sorted_by_key(|(r, _)| *r) {
                column.sort_by_key(|(r, _)| *r);
            }
            if column.windows(2).any(|w| w[0].0 == w[1].0) {
                let mut deduped: Vec<(u32, Data)> = Vec::with_capacity(column.len());
                for (r, v) in column.drain(..) {
                    match deduped.last_mut() {
                        Some(last) if last.0 == r => last.1 = v,
                        _ => deduped.push((r, v)),
                    }
                }
                *column = deduped;
            }
        }
    }

    /// The cell at an absolute position, if it is not empty.
    fn get(&self, row: u32, col: usize) -> Option<&Data> {
        let column = self.columns.get(col)?;
        column
            .binary_search_by_key(&row, |(r, _)| *r)
            .ok()
            .map(|i| &column[i].1)
    }
}

/// Reads one sheet's cells through calamine's cell reader.
fn read_cells<RS: std::io::Read + std::io::Seek>(
    workbook: &mut calamine::Xlsx<RS>,
    sheet: &str,
) -> Result<Cells, XlsxError> {
    let mut reader = workbook.worksheet_cells_reader(sheet)?;
    let mut cells = Cells::default();
    while let Some(cell) = reader.next_cell()? {
        let value: Data = cell.get_value().clone().into();
        // An empty string (for example a formula returning "") carries no value, like an empty cell.
        if matches!(&value, Data::Empty) || matches!(&value, Data::String(s) if s.is_empty()) {
            continue;
        }
        let (row, col) = cell.get_position();
        // Excel's own limits; a cell beyond them would make a table of millions of empty rows or
        // columns out of a tiny file.
        if row >= MAX_ROWS || col >= MAX_COLUMNS {
            return Err(XlsxError::Unexpected(
                "a cell lies beyond Excel's limits (row 1048576, column XFD)",
            ));
        }
        cells.push(row, col as usize, value);
    }
    cells.normalise();
    Ok(cells)
}

/// A column's inferred type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Float,
    Bool,
    Timestamp,
    Time,
    Text,
}

impl Kind {
    fn data_type(self) -> DataType {
        match self {
            Kind::Int => DataType::Int64,
            Kind::Float => DataType::Float64,
            Kind::Bool => DataType::Boolean,
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::Time => DataType::Time64(TimeUnit::Microsecond),
            Kind::Text => DataType::Utf8,
        }
    }
}

/// What one cell says about its column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CellKind {
    /// No value: empty or an error.
    Null,
    Integral,
    Fractional,
    Bool,
    DateTime,
    /// A date cell holding only a time of day (serial in `[0, 1)`).
    TimeOfDay,
    Text,
}

/// The largest magnitude an `f64` holds exactly as an integer (2^53).
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

fn cell_kind(cell: &Data) -> CellKind {
    match cell {
        Data::Empty | Data::Error(_) => CellKind::Null,
        Data::Int(_) => CellKind::Integral,
        Data::Float(f) if f.fract() == 0.0 && f.abs() <= EXACT_INT => CellKind::Integral,
        Data::Float(_) => CellKind::Fractional,
        Data::Bool(_) => CellKind::Bool,
        Data::DateTime(dt) if dt.is_datetime() => {
            let v = dt.as_f64();
            if (0.0..1.0).contains(&v) {
                CellKind::TimeOfDay
            } else if serial_to_micros(v, false).is_some() {
                CellKind::DateTime
            } else {
                CellKind::Text
            }
        }
        Data::DateTimeIso(s) if parse_iso_datetime(s).is_some() => CellKind::DateTime,
        Data::DateTime(_) | Data::DateTimeIso(_) | Data::DurationIso(_) | Data::String(_) => {
            CellKind::Text
        }
    }
}

/// Infers a column's type from the cells in the data rows.
fn infer(cells: &[(u32, Data)]) -> Kind {
    let (mut ints, mut floats, mut bools, mut dates, mut times, mut texts) =
        (0usize, 0usize, 0usize, 0usize, 0usize, 0usize);
    for (_, c) in cells {
        match cell_kind(c) {
            CellKind::Null => {}
            CellKind::Integral => ints += 1,
            CellKind::Fractional => floats += 1,
            CellKind::Bool => bools += 1,
            CellKind::DateTime => dates += 1,
            CellKind::TimeOfDay => times += 1,
            CellKind::Text => texts += 1,
        }
    }
    let numbers = ints + floats;
    let temporal = dates + times;
    let kinds = [numbers > 0, bools > 0, temporal > 0, texts > 0]
        .iter()
        .filter(|&&b| b)
        .count();
    if kinds != 1 || texts > 0 {
        // Mixed kinds, text, or no values at all.
        return Kind::Text;
    }
    if numbers > 0 {
        return if floats == 0 { Kind::Int } else { Kind::Float };
    }
    if bools > 0 {
        return Kind::Bool;
    }
    if dates == 0 {
        Kind::Time
    } else {
        Kind::Timestamp
    }
}

/// Converts an Excel serial date (days since the workbook's epoch, time as the fraction) to
/// microseconds since 1970-01-01, rounded to Excel's millisecond precision.
fn serial_to_micros(serial: f64, is_1904: bool) -> Option<i64> {
    // Excel's dates end at 9999-12-31; anything beyond is not a date it wrote.
    if !serial.is_finite() || !(-1.0e6..=3.0e6).contains(&serial) {
        return None;
    }
    // Days from 1970-01-01 back to each epoch's day 0. In the 1900 system Excel counts the
    // nonexistent 1900-02-29 as day 60, so serials from 61 on count from 1899-12-30 and earlier
    // ones from 1899-12-31 (day 60 itself lands on 1900-03-01).
    let epoch_days: i64 = if is_1904 {
        -24_107
    } else if serial < 61.0 {
        -25_568
    } else {
        -25_569
    };
    let millis = (serial * 86_400_000.0).round() as i64;
    Some((millis + epoch_days * 86_400_000) * 1000)
}

/// The time of day of a serial in `[0, 1)`, in microseconds, rounded to milliseconds.
fn serial_to_time_micros(serial: f64) -> i64 {
    let millis = (serial * 86_400_000.0).round() as i64;
    (millis * 1000).rem_euclid(DAY_MICROS)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a count of days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Parses the ISO 8601 dates calamine passes through for `t="d"` cells: `YYYY-MM-DD`, optionally
/// followed by `THH:MM[:SS[.fff]]` and a `Z`; returns microseconds since 1970-01-01.
fn parse_iso_datetime(s: &str) -> Option<i64> {
    let s = s.trim().trim_end_matches('Z');
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut parts = date.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if parts.next().is_some()
        || !(0..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || d == 0
        || d > days_in_month(y, m)
    {
        return None;
    }
    let mut micros = days_from_civil(y, m, d) * DAY_MICROS;
    if let Some(t) = time {
        micros += parse_iso_time(t)?;
    }
    Some(micros)
}

/// Parses `HH:MM[:SS[.fff]]` into microseconds since midnight.
fn parse_iso_time(t: &str) -> Option<i64> {
    let mut parts = t.split(':');
    let h: i64 = parts.next()?.parse().ok()?;
    let mi: i64 = parts.next()?.parse().ok()?;
    let sec: f64 = parts.next().map_or(Some(0.0), |s| s.parse().ok())?;
    if parts.next().is_some()
        || !(0..24).contains(&h)
        || !(0..60).contains(&mi)
        || !(0.0..61.0).contains(&sec)
    {
        return None;
    }
    Some((h * 3600 + mi * 60) * 1_000_000 + (sec * 1_000_000.0).round() as i64)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Renders microseconds since 1970-01-01 as `YYYY-MM-DD`, or `YYYY-MM-DD HH:MM:SS[.ffffff]` when
/// the time of day is not midnight.
fn format_timestamp(micros: i64) -> String {
    let (y, m, d) = civil_from_days(micros.div_euclid(DAY_MICROS));
    let tod = micros.rem_euclid(DAY_MICROS);
    if tod == 0 {
        format!("{y:04}-{m:02}-{d:02}")
    } else {
        format!("{y:04}-{m:02}-{d:02} {}", format_time(tod))
    }
}

/// Renders microseconds since midnight as `HH:MM:SS[.fff]` (hours may exceed 23 for durations).
fn format_time(micros: i64) -> String {
    let secs = micros / 1_000_000;
    let frac = micros % 1_000_000;
    let (h, mi, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if frac == 0 {
        format!("{h:02}:{mi:02}:{s:02}")
    } else if frac % 1000 == 0 {
        format!("{h:02}:{mi:02}:{s:02}.{:03}", frac / 1000)
    } else {
        format!("{h:02}:{mi:02}:{s:02}.{frac:06}")
    }
}

/// A cell as text: numbers in their shortest round-trip form, booleans as `TRUE`/`FALSE` (as
/// Excel shows them), dates in ISO 8601, durations as `[h]:mm:ss`; `None` for empty and error cells.
fn render(cell: &Data, is_1904: bool) -> Option<String> {
    Some(match cell {
        Data::Empty | Data::Error(_) => return None,
        Data::Int(i) => i.to_string(),
        Data::Float(f) => f.to_string(),
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_owned(),
        Data::DateTime(dt) if dt.is_duration() => {
            let millis = (dt.as_f64() * 86_400_000.0).round();
            // Beyond about 30,000 years a duration is not a time span anyone wrote: show the number.
            if !millis.is_finite() || millis.abs() > 1.0e15 {
                return Some(dt.as_f64().to_string());
            }
            let micros = millis as i64 * 1000;
            if micros < 0 {
                format!("-{}", format_time(-micros))
            } else {
                format_time(micros)
            }
        }
        Data::DateTime(dt) => match cell_kind(cell) {
            CellKind::TimeOfDay => format_time(serial_to_time_micros(dt.as_f64())),
            _ => serial_to_micros(dt.as_f64(), is_1904)
                .map_or_else(|| dt.as_f64().to_string(), format_timestamp),
        },
    })
}

/// Column names from the header row: the cells as text, `column_N` (N from 1, by sheet column)
/// for blank ones, and a `_2`, `_3`, ... suffix on repeats so every name is unique.
fn header_names(cells: &Cells, row: Option<u32>, width: usize, is_1904: bool) -> Vec<String> {
    let mut names: Vec<String> = Vec::with_capacity(width);
    for col in 0..width {
        let text = row
            .and_then(|r| cells.get(r, col))
            .and_then(|c| render(c, is_1904))
            .map(|s| s.trim().to_owned());
        let base = match text {
            Some(t) if !t.is_empty() => t,
            _ => format!("column_{}", col + 1),
        };
        let mut name = base.clone();
        let mut n = 2;
        while names.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        names.push(name);
    }
    names
}

/// Builds the table from the sheet's cells.
fn build_table(
    opts: &Options,
    sheet: &str,
    cells: Cells,
    is_1904: bool,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let Some(last_row) = cells.last_row else {
        return Err(PluginError::InvalidInput(format!(
            "sheet {sheet:?} is empty: it has no cells with values"
        )));
    };
    let width = cells.columns.len();
    let first_data = if opts.header {
        if opts.header_row > last_row {
            return Err(PluginError::InvalidParams(format!(
                "header_row {} is past the last row of sheet {sheet:?} (row {} counting from 0)",
                opts.header_row, last_row
            )));
        }
        // Cannot overflow: header_row <= last_row would need last_row == u32::MAX, beyond any sheet.
        opts.header_row.saturating_add(1)
    } else {
        opts.header_row
    };
    let names = header_names(
        &cells,
        opts.header.then_some(opts.header_row),
        width,
        is_1904,
    );

    // The data rows of each column: its cells at or after the first data row.
    let data: Vec<&[(u32, Data)]> = cells
        .columns
        .iter()
        .map(|c| {
            let start = c.partition_point(|(r, _)| *r < first_data);
            &c[start..]
        })
        .collect();
    let kinds: Vec<Kind> = data
        .iter()
        .map(|c| {
            if opts.infer_types {
                infer(c)
            } else {
                Kind::Text
            }
        })
        .collect();
    let errors: usize = data
        .iter()
        .map(|c| {
            c.iter()
                .filter(|(_, v)| matches!(v, Data::Error(_)))
                .count()
        })
        .sum();
    if errors > 0 {
        lake_sdk::log(
            Level::Warn,
            &format!(
                "sheet {sheet:?}: {errors} error cells (such as #N/A or #DIV/0!) read as null"
            ),
        );
    }

    let schema = Arc::new(Schema::new(
        names
            .iter()
            .zip(&kinds)
            .map(|(n, k)| Field::new(n, k.data_type(), true))
            .collect::<Vec<_>>(),
    ));
    let rows = if last_row >= first_data {
        (last_row - first_data) as usize + 1
    } else {
        0
    };
    let mut batches = Vec::with_capacity(rows.div_ceil(opts.batch_rows));
    // One cursor per column into its sorted cells, advanced batch by batch.
    let mut cursors = vec![0usize; width];
    let mut start = 0usize;
    while start < rows {
        let len = opts.batch_rows.min(rows - start);
        let lo = u64::from(first_data) + start as u64;
        let hi = lo + len as u64;
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(width);
        for (col, kind) in kinds.iter().enumerate() {
            let column = data[col];
            let from = cursors[col];
            let to = from + column[from..].partition_point(|(r, _)| u64::from(*r) < hi);
            cursors[col] = to;
            arrays.push(build_array(*kind, &column[from..to], lo, len, is_1904)?);
        }
        batches.push(RecordBatch::try_new(schema.clone(), arrays)?);
        start += len;
    }
    Ok((schema, batches))
}

/// Builds one column of one batch: `cells` are the column's cells in rows `lo..lo + len`.
fn build_array(
    kind: Kind,
    cells: &[(u32, Data)],
    lo: u64,
    len: usize,
    is_1904: bool,
) -> Result<ArrayRef> {
    // Walks the rows of the batch, giving each row's cell or None.
    fn each<'a>(
        cells: &'a [(u32, Data)],
        lo: u64,
        len: usize,
        mut f: impl FnMut(Option<&'a Data>),
    ) {
        let mut it = cells.iter().peekable();
        for i in 0..len {
            let row = lo + i as u64;
            match it.peek() {
                Some((r, v)) if u64::from(*r) == row => {
                    f(Some(v));
                    it.next();
                }
                _ => f(None),
            }
        }
    }
    Ok(match kind {
        Kind::Int => {
            let mut b = Int64Builder::with_capacity(len);
            each(cells, lo, len, |c| {
                b.append_option(match c {
                    Some(Data::Int(i)) => Some(*i),
                    // Inference admitted only integral floats within 2^53, so this is exact.
                    Some(Data::Float(f)) => Some(*f as i64),
                    _ => None,
                })
            });
            Arc::new(b.finish())
        }
        Kind::Float => {
            let mut b = Float64Builder::with_capacity(len);
            each(cells, lo, len, |c| {
                b.append_option(match c {
                    Some(Data::Int(i)) => Some(*i as f64),
                    Some(Data::Float(f)) => Some(*f),
                    _ => None,
                })
            });
            Arc::new(b.finish())
        }
        Kind::Bool => {
            let mut b = BooleanBuilder::with_capacity(len);
            each(cells, lo, len, |c| {
                b.append_option(if let Some(Data::Bool(v)) = c {
                    Some(*v)
                } else {
                    None
                })
            });
            Arc::new(b.finish())
        }
        Kind::Timestamp => {
            let mut b = TimestampMicrosecondBuilder::with_capacity(len);
            each(cells, lo, len, |c| {
                b.append_option(match c {
                    Some(Data::DateTime(dt)) => serial_to_micros(dt.as_f64(), is_1904),
                    Some(Data::DateTimeIso(s)) => parse_iso_datetime(s),
                    _ => None,
                })
            });
            Arc::new(b.finish())
        }
        Kind::Time => {
            let mut b = Time64MicrosecondBuilder::with_capacity(len);
            each(cells, lo, len, |c| {
                b.append_option(if let Some(Data::DateTime(dt)) = c {
                    Some(serial_to_time_micros(dt.as_f64()))
                } else {
                    None
                })
            });
            Arc::new(b.finish())
        }
        Kind::Text => {
            let mut b = StringBuilder::with_capacity(len, len * 8);
            each(cells, lo, len, |c| match c {
                // Text goes in as it is, without a rendered copy.
                Some(Data::String(s)) => b.append_value(s),
                c => b.append_option(c.and_then(|c| render(c, is_1904))),
            });
            Arc::new(b.finish())
        }
    })
}

#[cfg(test)]
mod tests;
