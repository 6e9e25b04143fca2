//! A direct reader for worksheets in the shape nearly every writer produces (Excel, LibreOffice,
//! openpyxl, xlsxwriter, pandas): it scans the worksheet XML with a small tokenizer instead of a
//! general XML parser and reads the workbook parts it needs (package and workbook relationships,
//! the workbook, shared strings, number formats) the same way.
//!
//! It gives exactly the cells calamine gives (the tests compare the two on every fixture), and it
//! steps aside, returning `None`, on anything it does not handle itself: a cell without its `r`
//! position, rich structures it does not know, comments or CDATA in the data, Excel's `_xHHHH_`
//! escapes, an encoding other than UTF-8, or any error. The caller then reads the workbook with
//! calamine, which also words the error when the workbook is broken.
//!
//! The worksheet is inflated in chunks and scanned up to the last complete row of each, so memory
//! follows the cells, not the size of the sheet's XML.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use calamine::{CellErrorType, Data, ExcelDateTime, ExcelDateTimeType};
use memchr::{memchr, memchr3, memmem};

use crate::{Cells, MAX_COLUMNS, MAX_ROWS};

/// The direct reader gives way to calamine.
type Step<T> = Option<T>;

/// Bytes inflated from the worksheet per scan.
const CHUNK: usize = 1 << 20;

/// How a cell's number is shown, from its style's number format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Other,
    DateTime,
    TimeDelta,
}

/// The parts of a workbook the reader needs, read once.
pub(crate) struct Book<'a> {
    archive: zip::ZipArchive<Cursor<&'a [u8]>>,
    /// Lower-cased, `/`-separated entry names to the names in the archive (as calamine looks them up).
    entries: HashMap<String, String>,
    /// Sheet names in workbook order.
    pub(crate) names: Vec<String>,
    /// Each sheet's worksheet part; `None` for chart and dialog sheets.
    paths: Vec<Option<String>>,
    pub(crate) is_1904: bool,
    strings: Vec<String>,
    formats: Vec<Format>,
}

impl<'a> Book<'a> {
    /// Opens a workbook held in memory, or `None` when calamine should.
    pub(crate) fn open(bytes: &'a [u8]) -> Step<Self> {
        let archive = zip::ZipArchive::new(Cursor::new(bytes)).ok()?;
        let mut entries = HashMap::with_capacity(archive.len());
        for name in archive.file_names() {
            let name = name.ok()?;
            entries.insert(
                name.replace('\\', "/").to_ascii_lowercase(),
                name.into_owned(),
            );
        }
        let mut book = Book {
            archive,
            entries,
            names: Vec::new(),
            paths: Vec::new(),
            is_1904: false,
            strings: Vec::new(),
            formats: Vec::new(),
        };
        // The package's main document: the workbook part and the folder it sits in.
        let package = book.part("_rels/.rels")??;
        let mut target = None;
        for_each_open(&package, |name, attrs| {
            if name == b"Relationship"
                && attr(attrs, b"Type")?
                    .is_some_and(|t| t.ends_with(b"/relationships/officeDocument"))
                && let Some(t) = attr(attrs, b"Target")?
            {
                target = Some(decode_attr(t)?);
            }
            Some(())
        })?;
        let (xl_path, workbook_name) = match target {
            Some(t) => {
                let (dir, name) = t.split_at(t.rfind('/').map_or(0, |i| i + 1));
                let dir = dir.strip_prefix('/').unwrap_or(dir).to_owned();
                let name = if name.is_empty() {
                    "workbook.xml"
                } else {
                    name
                };
                (dir, name.to_owned())
            }
            None => ("xl/".to_owned(), "workbook.xml".to_owned()),
        };
        if let Some(strings) = book.part(&format!("{xl_path}sharedStrings.xml"))? {
            book.strings = shared_strings(&strings)?;
        }
        if let Some(styles) = book.part(&format!("{xl_path}styles.xml"))? {
            book.formats = formats(&styles)?;
        }
        let rels = book.part(&format!("{xl_path}_rels/{workbook_name}.rels"))??;
        let mut relationships: HashMap<Vec<u8>, (String, String)> = HashMap::new();
        for_each_open(&rels, |name, attrs| {
            if name == b"Relationship"
                && let Some(id) = attr(attrs, b"Id")?
            {
                let typ = attr(attrs, b"Type")?.map_or(Some(String::new()), decode_attr)?;
                let target = attr(attrs, b"Target")?.map_or(Some(String::new()), decode_attr)?;
                relationships.insert(id.to_vec(), (target, typ));
            }
            Some(())
        })?;
        let workbook = book.part(&format!("{xl_path}{workbook_name}"))??;
        let (mut names, mut paths, mut is_1904) = (Vec::new(), Vec::new(), false);
        for_each_open(&workbook, |name, attrs| {
            match name {
                b"sheet" => {
                    let name = attr(attrs, b"name")?.map_or(Some(String::new()), decode_attr)?;
                    if let Some(state) = attr(attrs, b"state")?
                        && !matches!(state, b"visible" | b"hidden" | b"veryHidden")
                    {
                        return None;
                    }
                    let id = attr_local(attrs, b"id")?.unwrap_or_default();
                    let (target, typ) = relationships.get(id)?;
                    let path = match target.strip_prefix('/') {
                        Some(abs) => abs.to_owned(),
                        None => format!("{xl_path}{target}"),
                    };
                    let path = match typ.rsplit('/').next() {
                        Some("worksheet") => Some(path),
                        Some("chartsheet" | "dialogsheet") => None,
                        _ => return None,
                    };
                    names.push(name);
                    paths.push(path);
                }
                b"workbookPr" => {
                    if let Some(v) = attr(attrs, b"date1904")? {
                        is_1904 = v == b"1" || v == b"true";
                    }
                }
                _ => {}
            }
            Some(())
        })?;
        book.names = names;
        book.paths = paths;
        book.is_1904 = is_1904;
        Some(book)
    }

    /// A part of the archive, inflated: `Some(None)` when it is absent.
    fn part(&mut self, path: &str) -> Step<Option<Vec<u8>>> {
        let Some(mut file) = self.entry(path)? else {
            return Some(None);
        };
        let mut out = Vec::with_capacity(usize::try_from(file.size()).ok()?.min(64 << 20));
        file.read_to_end(&mut out).ok()?;
        Some(Some(out))
    }

    /// The archive entry at `path` as calamine finds it: case-insensitively.
    fn entry(&mut self, path: &str) -> Step<Option<zip::read::ZipFile<'_, Cursor<&'a [u8]>>>> {
        let name = self
            .entries
            .get(&path.to_ascii_lowercase())
            .map_or(path, String::as_str)
            .to_owned();
        match self.archive.by_name(&name) {
            Ok(file) => Some(Some(file)),
            Err(zip::result::ZipError::FileNotFound) => Some(None),
            Err(_) => None,
        }
    }

    /// The non-empty cells of the named worksheet, or `None` when calamine should read it.
    pub(crate) fn cells(&mut self, sheet: &str) -> Step<Cells> {
        let i = self.names.iter().position(|n| n == sheet)?;
        let path = self.paths[i].clone()?;
        let strings = std::mem::take(&mut self.strings);
        let formats = std::mem::take(&mut self.formats);
        let is_1904 = self.is_1904;
        let mut file = self.entry(&path)??;
        let mut scan = Scan {
            strings: &strings,
            formats: &formats,
            is_1904,
            phase: Phase::Before,
            cells: Cells::default(),
            text: String::new(),
        };
        let mut buf: Vec<u8> = Vec::with_capacity(2 * CHUNK);
        let mut eof = false;
        while !eof {
            let was = buf.len();
            let n = (&mut file).take(CHUNK as u64).read_to_end(&mut buf).ok()?;
            eof = n < CHUNK;
            // Scan whole rows only: up to the end of the last `</row>` (or everything at the end).
            let end = if eof {
                buf.len()
            } else {
                match memmem::rfind(&buf[was.saturating_sub(5)..], b"</row>") {
                    Some(at) => was.saturating_sub(5) + at + 6,
                    None => continue,
                }
            };
            scan.run(&buf[..end])?;
            buf.drain(..end);
            if scan.phase == Phase::After {
                break;
            }
        }
        if scan.phase != Phase::After {
            // No `</sheetData>`: calamine reports the truncated sheet.
            return None;
        }
        let mut cells = scan.cells;
        cells.normalise();
        Some(cells)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before `<sheetData>`.
    Before,
    In,
    /// After `</sheetData>`.
    After,
}

/// The worksheet scan, carried from one chunk of whole rows to the next.
struct Scan<'s> {
    strings: &'s [String],
    formats: &'s [Format],
    is_1904: bool,
    phase: Phase,
    cells: Cells,
    /// Reused text buffer.
    text: String,
}

impl Scan<'_> {
    /// Scans a run of whole rows (the first run also holds what precedes `<sheetData>`).
    fn run(&mut self, xml: &[u8]) -> Step<()> {
        let mut tok = Tokens::new(xml);
        while self.phase != Phase::After {
            // Rows and plain cells, the bulk of a sheet, are read straight off the bytes; the
            // tokenizer takes anything else.
            if self.phase == Phase::In {
                let rest = &xml[tok.pos..];
                if rest.starts_with(b"<c ") {
                    if let Some(used) = self.plain_cell(rest)? {
                        tok.pos += used;
                        continue;
                    }
                } else if rest.starts_with(b"</row>") {
                    tok.pos += 6;
                    continue;
                }
            }
            let Some(ev) = tok.next()? else { break };
            match (self.phase, ev) {
                (Phase::Before, Ev::Open { name, empty, .. }) if local(name) == b"sheetData" => {
                    self.phase = if empty { Phase::After } else { Phase::In };
                }
                (Phase::Before, _) => {}
                (Phase::In, Ev::Close { name }) if local(name) == b"sheetData" => {
                    self.phase = Phase::After;
                }
                (Phase::In, Ev::Open { name, attrs, empty }) if local(name) == b"c" => {
                    self.cell(&mut tok, attrs, empty)?;
                }
                // Rows, their ends and anything else in the sheet data carry no values; a row's
                // `r` only matters for cells without their own position, which this reader
                // leaves to calamine.
                (Phase::In, _) => {}
                (Phase::After, _) => break,
            }
        }
        Some(())
    }

    /// Reads a cell in one of the plain shapes (`<c ...><v>raw</v></c>`, `<c ...><is><t>text</t></is></c>`,
    /// `<c .../>`) at the start of `xml`: the bytes it used, or `Some(None)` for any other shape.
    fn plain_cell(&mut self, xml: &[u8]) -> Step<Option<usize>> {
        let (mut r, mut s, mut t) = (None, None, None);
        let mut i = 2;
        let empty = loop {
            while xml.get(i)? == &b' ' {
                i += 1;
            }
            match xml[i] {
                b'>' => {
                    i += 1;
                    break false;
                }
                b'/' if xml.get(i + 1)? == &b'>' => {
                    i += 2;
                    break true;
                }
                _ => {}
            }
            let key_start = i;
            while !matches!(xml.get(i)?, b'=' | b' ' | b'>' | b'"' | b'\'' | b'/') {
                i += 1;
            }
            if xml[i] != b'=' || xml.get(i + 1)? != &b'"' {
                return Some(None);
            }
            let key = &xml[key_start..i];
            let value_start = i + 2;
            i = value_start;
            while xml.get(i)? != &b'"' {
                i += 1;
            }
            let value = &xml[value_start..i];
            i += 1;
            match key {
                b"r" => r = Some(value),
                b"s" => s = Some(value),
                b"t" => t = Some(value),
                _ => {}
            }
        };
        let Some(r) = r else { return Some(None) };
        let (row, col) = position(r)?;
        let rest = &xml[i..];
        let value = if empty {
            Data::Empty
        } else if let Some(body) = rest.strip_prefix(b"<v>") {
            let len = text_len(body)?;
            let Some(after) = body[len..].strip_prefix(b"</v></c>") else {
                return Some(None);
            };
            i = xml.len() - after.len();
            self.value_of(&body[..len], s, t)?
        } else if let Some(body) = rest.strip_prefix(b"<is><t>") {
            let len = text_len(body)?;
            let Some(after) = body[len..].strip_prefix(b"</t></is></c>") else {
                return Some(None);
            };
            i = xml.len() - after.len();
            self.text.clear();
            decode_text(&body[..len], &mut self.text)?;
            Data::String(t_value(&self.text, false)?.to_owned())
        } else {
            return Some(None);
        };
        self.keep(row, col, value)?;
        Some(Some(i))
    }

    /// Keeps a cell's value unless it is empty.
    fn keep(&mut self, row: u32, col: u32, value: Data) -> Step<()> {
        if matches!(&value, Data::Empty) || matches!(&value, Data::String(s) if s.is_empty()) {
            return Some(());
        }
        if row >= MAX_ROWS || col >= MAX_COLUMNS {
            return None;
        }
        self.cells.push(row, col as usize, value);
        Some(())
    }

    /// Reads one `<c>` element (its start tag just read) and keeps its value.
    fn cell(&mut self, tok: &mut Tokens<'_>, attrs: &[u8], empty: bool) -> Step<()> {
        let (mut r, mut s, mut t) = (None, None, None);
        for_each_attr(attrs, |k, v| {
            match k {
                b"r" => r = Some(v),
                b"s" => s = Some(v),
                b"t" => t = Some(v),
                _ => {}
            }
            Some(())
        })?;
        let (row, col) = position(r?)?;
        let mut value = Data::Empty;
        if !empty {
            loop {
                match tok.next()?? {
                    Ev::Close { name } if local(name) == b"c" => break,
                    Ev::Open { name, empty, .. } => {
                        value = match local(name) {
                            b"v" => self.value(tok, empty, s, t)?,
                            b"is" => {
                                if empty {
                                    Data::String(String::new())
                                } else {
                                    Data::String(string_item(tok, name, &mut self.text)?)
                                }
                            }
                            b"f" => {
                                if !empty {
                                    skip_to_close(tok, name)?;
                                }
                                Data::Empty
                            }
                            // calamine refuses other elements in a cell.
                            _ => return None,
                        };
                    }
                    Ev::Close { .. } => return None,
                    Ev::Text(_) => {}
                }
            }
        }
        self.keep(row, col, value)
    }

    /// A `<v>` element's value, read as calamine reads it for the cell's type and style.
    fn value(
        &mut self,
        tok: &mut Tokens<'_>,
        empty: bool,
        s: Option<&[u8]>,
        t: Option<&[u8]>,
    ) -> Step<Data> {
        // The raw text up to `</v>`; nothing else may sit inside.
        let raw: &[u8] = if empty {
            b""
        } else {
            match tok.next()?? {
                Ev::Text(raw) => {
                    match tok.next()?? {
                        Ev::Close { name } if local(name) == b"v" => {}
                        _ => return None,
                    }
                    raw
                }
                Ev::Close { name } if local(name) == b"v" => b"",
                Ev::Open { .. } | Ev::Close { .. } => return None,
            }
        };
        self.value_of(raw, s, t)
    }

    /// The value of a `<v>` element's raw text, read as calamine reads it for the cell's type
    /// and style.
    fn value_of(&mut self, raw: &[u8], s: Option<&[u8]>, t: Option<&[u8]>) -> Step<Data> {
        let format = match s {
            Some(style) => self
                .formats
                .get(digits(style)?)
                .copied()
                .unwrap_or(Format::Other),
            None => Format::Other,
        };
        Some(match t {
            Some(b"inlineStr" | b"is") => Data::Empty,
            Some(b"n" | b"s" | b"b" | b"e") | None => {
                // calamine takes these as plain ASCII, without entities.
                if memchr(b'&', raw).is_some() {
                    return None;
                }
                let v = std::str::from_utf8(raw).ok()?;
                match t {
                    Some(b"s") => {
                        if v.is_empty() {
                            return Some(Data::Empty);
                        }
                        Data::String(self.strings.get(digits(raw)?)?.clone())
                    }
                    Some(b"b") => match v.trim() {
                        "" => Data::Empty,
                        "0" => Data::Bool(false),
                        "1" => Data::Bool(true),
                        b if b.eq_ignore_ascii_case("false") => Data::Bool(false),
                        b if b.eq_ignore_ascii_case("true") => Data::Bool(true),
                        _ => return None,
                    },
                    Some(b"e") => Data::Error(match v {
                        "#DIV/0!" => CellErrorType::Div0,
                        "#N/A" => CellErrorType::NA,
                        "#NAME?" => CellErrorType::Name,
                        "#NULL!" => CellErrorType::Null,
                        "#NUM!" => CellErrorType::Num,
                        "#REF!" => CellErrorType::Ref,
                        "#VALUE!" => CellErrorType::Value,
                        _ => return None,
                    }),
                    _ => {
                        if v.is_empty() {
                            return Some(Data::Empty);
                        }
                        // A number that does not parse (padding, text in an untyped cell) is
                        // calamine's to handle or refuse.
                        let n: f64 = fast_float2::parse(raw).ok()?;
                        match format {
                            Format::DateTime => Data::DateTime(ExcelDateTime::new(
                                n,
                                ExcelDateTimeType::DateTime,
                                self.is_1904,
                            )),
                            Format::TimeDelta => Data::DateTime(ExcelDateTime::new(
                                n,
                                ExcelDateTimeType::TimeDelta,
                                self.is_1904,
                            )),
                            Format::Other => Data::Float(n),
                        }
                    }
                }
            }
            Some(b"str") => {
                self.text.clear();
                decode_text(raw, &mut self.text)?;
                if self.text.contains("_x") {
                    return None;
                }
                Data::String(self.text.clone())
            }
            Some(b"d") => {
                self.text.clear();
                decode_text(raw, &mut self.text)?;
                Data::DateTimeIso(self.text.clone())
            }
            Some(_) => return None,
        })
    }
}

/// An unsigned decimal number written with digits only (calamine reads anything else, even `+1`,
/// its own way).
fn digits(v: &[u8]) -> Step<usize> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The length of the text at the start of `xml`, up to the next `<`.
fn text_len(xml: &[u8]) -> Step<usize> {
    // Cell values are short: a plain loop beats a vectorised search's set-up.
    xml.iter()
        .take(64)
        .position(|&b| b == b'<')
        .or_else(|| memchr(b'<', xml))
}

/// Skips to the end tag matching an element already opened (not empty).
fn skip_to_close(tok: &mut Tokens<'_>, name: &[u8]) -> Step<()> {
    let mut depth = 0usize;
    loop {
        match tok.next()?? {
            Ev::Open {
                name: n,
                empty: false,
                ..
            } if n == name => depth += 1,
            Ev::Close { name: n } if n == name => {
                if depth == 0 {
                    return Some(());
                }
                depth -= 1;
            }
            _ => {}
        }
    }
}

/// A string item (`<si>` of the shared strings, `<is>` of an inline string), its start tag read:
/// the text of its `<t>` elements outside phonetic runs, each trimmed unless it preserves space.
fn string_item(tok: &mut Tokens<'_>, name: &[u8], text: &mut String) -> Step<String> {
    let mut out = String::new();
    let mut phonetic = 0usize;
    loop {
        match tok.next()?? {
            Ev::Close { name: n } if n == name => return Some(out),
            Ev::Open { name: n, empty, .. } if local(n) == b"rPh" => {
                phonetic += usize::from(!empty)
            }
            Ev::Close { name: n } if local(n) == b"rPh" => phonetic = phonetic.checked_sub(1)?,
            Ev::Open {
                name: n,
                attrs,
                empty,
            } if local(n) == b"t" && phonetic == 0 => {
                let preserve = attr(attrs, b"xml:space")? == Some(b"preserve");
                text.clear();
                if !empty {
                    loop {
                        match tok.next()?? {
                            Ev::Text(raw) => decode_text(raw, text)?,
                            Ev::Close { name: c } if c == n => break,
                            _ => return None,
                        }
                    }
                }
                out.push_str(t_value(text, preserve)?);
            }
            _ => {}
        }
    }
}

/// A `<t>` element's decoded text as calamine keeps it: trimmed of ASCII whitespace unless it
/// preserves space; `None` (give way) when it holds what may be an Excel `_xHHHH_` escape.
fn t_value(text: &str, preserve: bool) -> Step<&str> {
    let value = if preserve {
        text
    } else {
        text.trim_matches([' ', '\t', '\r', '\n'])
    };
    (!value.contains("_x")).then_some(value)
}

/// The shared strings table.
fn shared_strings(xml: &[u8]) -> Step<Vec<String>> {
    let mut tok = Tokens::new(xml);
    let mut strings = Vec::new();
    let mut text = String::new();
    // calamine starts at `<sst>` and stops at `</sst>`.
    loop {
        match tok.next()?? {
            Ev::Open { name, attrs, empty } if local(name) == b"sst" => {
                if let Some(n) = attr(attrs, b"uniqueCount")?
                    && let Some(n) = std::str::from_utf8(n).ok().and_then(|n| n.parse().ok())
                {
                    strings.reserve(usize::min(n, 1 << 22));
                }
                if empty {
                    return Some(strings);
                }
                break;
            }
            _ => {}
        }
    }
    loop {
        match tok.next()?? {
            Ev::Open { name, empty, .. } if local(name) == b"si" => {
                strings.push(if empty {
                    String::new()
                } else {
                    string_item(&mut tok, name, &mut text)?
                });
            }
            Ev::Close { name } if local(name) == b"sst" => return Some(strings),
            _ => {}
        }
    }
}

/// Each cell style's number format kind, indexed by style id (`cellXfs`).
fn formats(xml: &[u8]) -> Step<Vec<Format>> {
    let mut tok = Tokens::new(xml);
    let mut custom: HashMap<Vec<u8>, String> = HashMap::new();
    let mut out = Vec::new();
    let mut section: &[u8] = b"";
    while let Some(ev) = tok.next()? {
        match ev {
            Ev::Open { name, empty, .. }
                if matches!(local(name), b"numFmts" | b"cellXfs") && !empty =>
            {
                section = local(name);
            }
            Ev::Close { name } if local(name) == section => section = b"",
            Ev::Open { name, attrs, .. } if section == b"numFmts" && local(name) == b"numFmt" => {
                if let (Some(id), Some(code)) =
                    (attr(attrs, b"numFmtId")?, attr(attrs, b"formatCode")?)
                {
                    custom.insert(id.to_vec(), decode_attr(code)?);
                }
            }
            Ev::Open { name, attrs, .. } if section == b"cellXfs" && local(name) == b"xf" => {
                out.push(match attr(attrs, b"numFmtId")? {
                    None => Format::Other,
                    Some(id) => match custom.get(id) {
                        Some(code) => custom_format(code),
                        None => builtin_format(id),
                    },
                });
            }
            _ => {}
        }
    }
    Some(out)
}

/// Excel's built-in number formats that show dates, times and durations.
fn builtin_format(id: &[u8]) -> Format {
    match id {
        b"14" | b"15" | b"16" | b"17" | b"18" | b"19" | b"20" | b"21" | b"22" | b"45" | b"47" => {
            Format::DateTime
        }
        b"27" | b"28" | b"29" | b"30" | b"31" | b"32" | b"33" | b"34" | b"35" | b"36" | b"50"
        | b"51" | b"52" | b"53" | b"54" | b"55" | b"56" | b"57" | b"58" => Format::DateTime,
        b"46" => Format::TimeDelta,
        _ => Format::Other,
    }
}

/// Whether a custom number format shows a date or a duration: calamine's
/// `detect_custom_number_format` (MIT, Johann Tuffe and contributors), kept identical so both
/// readers type the same cells alike.
fn custom_format(format: &str) -> Format {
    let mut escaped = false;
    let mut is_quote = false;
    let mut brackets = 0u8;
    let mut prev = ' ';
    let mut hms = false;
    let mut ap = false;
    for s in format.chars() {
        match (s, escaped, is_quote, ap, brackets) {
            (_, true, ..) => escaped = false,
            ('_' | '\\' | '*', ..) => escaped = true,
            ('"', _, true, _, _) => is_quote = false,
            (_, _, true, _, _) => (),
            ('"', _, _, _, _) => is_quote = true,
            (';', ..) => return Format::Other,
            ('[', ..) => brackets += 1,
            (']', .., 1) if hms => return Format::TimeDelta,
            (']', ..) => brackets = brackets.saturating_sub(1),
            ('a' | 'A', _, _, false, 0) => ap = true,
            ('p' | 'm' | '/' | 'P' | 'M', _, _, true, 0) => return Format::DateTime,
            ('d' | 'm' | 'h' | 'y' | 's' | 'D' | 'M' | 'H' | 'Y' | 'S', _, _, false, 0) => {
                return Format::DateTime;
            }
            _ => {
                if !(hms && s.eq_ignore_ascii_case(&prev)) {
                    hms = prev == '[' && matches!(s, 'm' | 'h' | 's' | 'M' | 'H' | 'S');
                }
            }
        }
        prev = s;
    }
    Format::Other
}

/// A cell reference such as `B12` as a 0-based (row, column).
fn position(r: &[u8]) -> Step<(u32, u32)> {
    let mut i = 0;
    let mut col: u32 = 0;
    while i < r.len() && r[i].is_ascii_alphabetic() {
        col = col
            .checked_mul(26)?
            .checked_add(u32::from(r[i].to_ascii_uppercase() - b'A') + 1)?;
        i += 1;
    }
    let mut row: u32 = 0;
    if i == r.len() {
        return None;
    }
    for &b in &r[i..] {
        if !b.is_ascii_digit() {
            return None;
        }
        row = row.checked_mul(10)?.checked_add(u32::from(b - b'0'))?;
    }
    Some((row.checked_sub(1)?, col.checked_sub(1)?))
}

/// Calls `f` with each start (or empty) element's local name and attributes, through the whole
/// document.
fn for_each_open(xml: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> Step<()>) -> Step<()> {
    let mut tok = Tokens::new(xml);
    while let Some(ev) = tok.next()? {
        if let Ev::Open { name, attrs, .. } = ev {
            f(local(name), attrs)?;
        }
    }
    Some(())
}

/// The part of a name after its namespace prefix.
fn local(name: &[u8]) -> &[u8] {
    match memchr(b':', name) {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

/// Calls `f` with each attribute's name and raw value.
fn for_each_attr<'x>(
    attrs: &'x [u8],
    mut f: impl FnMut(&'x [u8], &'x [u8]) -> Step<()>,
) -> Step<()> {
    let mut i = 0;
    loop {
        while i < attrs.len() && attrs[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == attrs.len() {
            return Some(());
        }
        let start = i;
        while i < attrs.len() && attrs[i] != b'=' && !attrs[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &attrs[start..i];
        while i < attrs.len() && attrs[i].is_ascii_whitespace() {
            i += 1;
        }
        if attrs.get(i) != Some(&b'=') {
            return None;
        }
        i += 1;
        while i < attrs.len() && attrs[i].is_ascii_whitespace() {
            i += 1;
        }
        let quote = *attrs.get(i)?;
        if quote != b'"' && quote != b'\'' {
            return None;
        }
        let len = memchr(quote, &attrs[i + 1..])?;
        f(key, &attrs[i + 1..i + 1 + len])?;
        i += len + 2;
    }
}

/// The raw value of the attribute named exactly `key`.
fn attr<'x>(attrs: &'x [u8], key: &[u8]) -> Step<Option<&'x [u8]>> {
    let mut found = None;
    for_each_attr(attrs, |k, v| {
        if k == key {
            found = Some(v);
        }
        Some(())
    })?;
    Some(found)
}

/// The raw value of the attribute whose local name is `key` (`r:id` for `id`).
fn attr_local<'x>(attrs: &'x [u8], key: &[u8]) -> Step<Option<&'x [u8]>> {
    let mut found = None;
    for_each_attr(attrs, |k, v| {
        if local(k) == key {
            found = Some(v);
        }
        Some(())
    })?;
    Some(found)
}

/// An attribute value with its entities resolved (a literal carriage return, which calamine keeps
/// as it is, is left to calamine).
fn decode_attr(raw: &[u8]) -> Step<String> {
    if memchr(b'\r', raw).is_some() {
        return None;
    }
    let mut out = String::new();
    decode_text(raw, &mut out)?;
    Some(out)
}

/// Appends XML text with its entity and character references resolved and line ends normalised
/// (`\r\n` and `\r` to `\n`); `None` on invalid UTF-8 or an unknown entity.
fn decode_text(raw: &[u8], out: &mut String) -> Step<()> {
    let text = std::str::from_utf8(raw).ok()?;
    if memchr::memchr2(b'&', b'\r', raw).is_none() {
        out.push_str(text);
        return Some(());
    }
    let mut rest = text;
    while let Some(i) = rest.find(['&', '\r']) {
        out.push_str(&rest[..i]);
        if rest.as_bytes()[i] == b'\r' {
            out.push('\n');
            rest = &rest[i + 1..];
            if rest.starts_with('\n') {
                rest = &rest[1..];
            }
            continue;
        }
        let end = rest[i..].find(';')? + i;
        let entity = &rest[i + 1..end];
        match entity {
            "amp" => out.push('&'),
            "lt" => out.push('<'),
            "gt" => out.push('>'),
            "quot" => out.push('"'),
            "apos" => out.push('\''),
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()?
                } else {
                    entity.strip_prefix('#')?.parse().ok()?
                };
                let c = char::from_u32(code)?;
                // Leave characters XML 1.0 forbids to calamine's stricter reading.
                if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') {
                    return None;
                }
                out.push(c);
            }
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(())
}

/// One token of the tokenizer.
#[derive(Debug, Clone, Copy)]
enum Ev<'x> {
    /// A start tag, or an empty element (`<x/>`) when `empty`.
    Open {
        name: &'x [u8],
        attrs: &'x [u8],
        empty: bool,
    },
    Close {
        name: &'x [u8],
    },
    /// Raw text between tags (entities unresolved).
    Text(&'x [u8]),
}

/// A minimal XML tokenizer for the well-formed, UTF-8, namespace-prefixed-or-not markup of an
/// XLSX part. Declarations and processing instructions are skipped; comments, CDATA and DTDs
/// make it give way (`None`), as does markup cut short.
struct Tokens<'x> {
    xml: &'x [u8],
    pos: usize,
}

impl<'x> Tokens<'x> {
    fn new(xml: &'x [u8]) -> Self {
        // A UTF-8 byte order mark is allowed; UTF-16 is calamine's.
        let pos = if xml.starts_with(b"\xEF\xBB\xBF") {
            3
        } else {
            0
        };
        Tokens { xml, pos }
    }

    /// The next token: `Some(None)` at the end of the input, `None` to give way.
    fn next(&mut self) -> Step<Option<Ev<'x>>> {
        loop {
            let rest = &self.xml[self.pos..];
            if rest.is_empty() {
                return Some(None);
            }
            if rest[0] != b'<' {
                let len = memchr(b'<', rest).unwrap_or(rest.len());
                self.pos += len;
                return Some(Some(Ev::Text(&rest[..len])));
            }
            match rest.get(1)? {
                b'?' => {
                    let end = memmem::find(rest, b"?>")?;
                    // Only UTF-8 documents are read here.
                    let decl = &rest[..end];
                    if let Some(at) = memmem::find(decl, b"encoding=") {
                        let enc = decl.get(at + 10..).unwrap_or_default();
                        if !(enc.len() >= 5 && enc[..5].eq_ignore_ascii_case(b"utf-8")) {
                            return None;
                        }
                    }
                    self.pos += end + 2;
                }
                b'!' => return None,
                b'/' => {
                    let end = memchr(b'>', rest)?;
                    let name = rest[2..end].trim_ascii_end();
                    self.pos += end + 1;
                    return Some(Some(Ev::Close { name }));
                }
                _ => {
                    let end = tag_end(rest)?;
                    let inner = &rest[1..end];
                    let (inner, empty) = match inner.strip_suffix(b"/") {
                        Some(i) => (i, true),
                        None => (inner, false),
                    };
                    let name_len = inner
                        .iter()
                        .position(|b| b.is_ascii_whitespace())
                        .unwrap_or(inner.len());
                    if name_len == 0 {
                        return None;
                    }
                    self.pos += end + 1;
                    return Some(Some(Ev::Open {
                        name: &inner[..name_len],
                        attrs: &inner[name_len..],
                        empty,
                    }));
                }
            }
        }
    }
}

/// The index of the `>` closing the tag at the start of `tag`, skipping quoted attribute values.
fn tag_end(tag: &[u8]) -> Step<usize> {
    let mut i = 0;
    loop {
        i += memchr3(b'>', b'"', b'\'', &tag[i..])?;
        let b = tag[i];
        if b == b'>' {
            return Some(i);
        }
        i += 1 + memchr(b, &tag[i + 1..])? + 1;
    }
}
