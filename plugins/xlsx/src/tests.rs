//! Unit tests: workbooks written here part by part (so each feature is exercised on purpose), the
//! shared xlsx fixtures, and the error paths.

use std::io::Write;
use std::path::PathBuf;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, Time64MicrosecondType, TimestampMicrosecondType};
use calamine::{ExcelDateTime, ExcelDateTimeType};

use super::*;

/// Cell styles of the synthetic workbooks: 0 general, 1 a date (`m/d/yyyy`, built-in 14), 2 a date
/// and time (built-in 22), 3 a time of day (built-in 21, `h:mm:ss`), 4 a duration (built-in 46,
/// `[h]:mm:ss`).
const STYLES: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><cellXfs count="5"><xf numFmtId="0"/><xf numFmtId="14" applyNumberFormat="1"/><xf numFmtId="22" applyNumberFormat="1"/><xf numFmtId="21" applyNumberFormat="1"/><xf numFmtId="46" applyNumberFormat="1"/></cellXfs></styleSheet>"#;

/// A workbook with these sheets (name, the inside of `<sheetData>`) and shared strings.
fn workbook(sheets: &[(&str, &str)], strings: &[&str], date1904: bool) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let mut put = |name: &str, body: &str| {
        zip.start_file(name, opts).expect("zip entry");
        zip.write_all(body.as_bytes()).expect("zip write");
    };
    const NS: &str = r#"xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships""#;
    const REL: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";
    put(
        "_rels/.rels",
        &format!(
            r#"<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="{REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>"#
        ),
    );
    let sheet_list: String = sheets
        .iter()
        .enumerate()
        .map(|(i, (n, _))| {
            format!(
                r#"<sheet name="{n}" sheetId="{}" r:id="rId{}"/>"#,
                i + 1,
                i + 1
            )
        })
        .collect();
    put(
        "xl/workbook.xml",
        &format!(
            r#"<?xml version="1.0"?><workbook {NS}><workbookPr date1904="{}"/><sheets>{sheet_list}</sheets></workbook>"#,
            u8::from(date1904)
        ),
    );
    let mut rels: String =
        (1..=sheets.len()).map(|i| format!(r#"<Relationship Id="rId{i}" Type="{REL}/worksheet" Target="worksheets/sheet{i}.xml"/>"#)).collect();
    rels.push_str(&format!(
        r#"<Relationship Id="rIdS" Type="{REL}/styles" Target="styles.xml"/>"#
    ));
    rels.push_str(&format!(
        r#"<Relationship Id="rIdT" Type="{REL}/sharedStrings" Target="sharedStrings.xml"/>"#
    ));
    put(
        "xl/_rels/workbook.xml.rels",
        &format!(
            r#"<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">{rels}</Relationships>"#
        ),
    );
    put("xl/styles.xml", STYLES);
    let sst: String = strings
        .iter()
        .map(|s| format!("<si><t>{s}</t></si>"))
        .collect();
    put(
        "xl/sharedStrings.xml",
        &format!(
            r#"<?xml version="1.0"?><sst {NS} count="{0}" uniqueCount="{0}">{sst}</sst>"#,
            strings.len()
        ),
    );
    for (i, (_, data)) in sheets.iter().enumerate() {
        put(
            &format!("xl/worksheets/sheet{}.xml", i + 1),
            &format!(
                r#"<?xml version="1.0"?><worksheet {NS}><sheetData>{data}</sheetData></worksheet>"#
            ),
        );
    }
    zip.finish().expect("zip").into_inner()
}

fn parse_with(
    bytes: &[u8],
    params: serde_json::Value,
    chunk: usize,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let mut p = Xlsx::start(Params::from_json(&params))?;
    for c in bytes.chunks(chunk) {
        assert!(
            p.push(c)?.is_empty(),
            "the parser emits nothing before the end"
        );
    }
    p.finish()
}

fn parse(bytes: &[u8], params: serde_json::Value) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    parse_with(bytes, params, 1000)
}

fn one_batch(bytes: &[u8], params: serde_json::Value) -> RecordBatch {
    let (schema, batches) = parse(bytes, params).expect("parse");
    assert_eq!(batches.len(), 1, "one batch");
    assert_eq!(batches[0].schema(), schema);
    batches.into_iter().next().expect("batch")
}

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/xlsx")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn types(schema: &Schema) -> Vec<DataType> {
    schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect()
}

fn names(schema: &Schema) -> Vec<&str> {
    schema.fields().iter().map(|f| f.name().as_str()).collect()
}

fn micros(y: i64, m: u32, d: u32, h: i64, mi: i64, s: i64) -> i64 {
    days_from_civil(y, m, d) * DAY_MICROS + (h * 3600 + mi * 60 + s) * 1_000_000
}

/// A sheet with one column of each inferred type, a header, and a blank cell in every column.
fn typed_sheet() -> Vec<u8> {
    let rows = r#"
<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c><c r="C1" t="s"><v>2</v></c><c r="D1" t="s"><v>3</v></c><c r="E1" t="s"><v>4</v></c><c r="F1" t="s"><v>5</v></c><c r="G1" t="s"><v>6</v></c><c r="H1" t="s"><v>7</v></c></row>
<row r="2"><c r="A2"><v>1</v></c><c r="B2"><v>1.5</v></c><c r="C2" t="b"><v>1</v></c><c r="D2" s="1"><v>45000</v></c><c r="E2" s="3"><v>0.5</v></c><c r="F2" t="s"><v>8</v></c><c r="G2"><f>1/0</f><v>3</v></c><c r="H2" s="4"><v>1.5</v></c></row>
<row r="3"><c r="A3"><v>-2</v></c><c r="B3"><v>2</v></c><c r="C3" t="b"><f>FALSE()</f><v>0</v></c><c r="D3" s="2"><v>45000.75</v></c><c r="E3" s="3"><v>0.25</v></c><c r="F3"><v>7</v></c><c r="G3" t="e"><f>1/0</f><v>#DIV/0!</v></c></row>
<row r="4"><c r="H4" t="str"><f>""</f><v></v></c></row>
<row r="5"><c r="A5"><v>9007199254740992</v></c><c r="C5" t="b"><v>0</v></c><c r="D5" t="d"><v>2024-02-29T06:30:00</v></c><c r="F5" t="b"><v>1</v></c><c r="G5"><v>4</v></c></row>"#;
    workbook(
        &[("Data", rows)],
        &[
            "int", "float", "bool", "date", "time", "mixed", "formula", "duration", "text",
        ],
        false,
    )
}

#[test]
fn infers_one_type_per_column() {
    let b = one_batch(&typed_sheet(), serde_json::json!({}));
    assert_eq!(
        names(&b.schema()),
        [
            "int", "float", "bool", "date", "time", "mixed", "formula", "duration"
        ]
    );
    assert_eq!(
        types(&b.schema()),
        [
            DataType::Int64,
            DataType::Float64,
            DataType::Boolean,
            DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Time64(TimeUnit::Microsecond),
            DataType::Utf8,
            DataType::Int64,
            DataType::Utf8,
        ]
    );
    assert_eq!(
        b.num_rows(),
        4,
        "rows 2 to 5; row 4 holds only an empty string but is inside the table"
    );

    let ints = b.column(0).as_primitive::<Int64Type>();
    assert_eq!(
        ints.iter().collect::<Vec<_>>(),
        [Some(1), Some(-2), None, Some(9_007_199_254_740_992)]
    );
    let floats = b.column(1).as_primitive::<Float64Type>();
    assert_eq!(
        floats.iter().collect::<Vec<_>>(),
        [Some(1.5), Some(2.0), None, None]
    );
    let bools = b.column(2).as_boolean();
    assert_eq!(
        bools.iter().collect::<Vec<_>>(),
        [Some(true), Some(false), None, Some(false)],
        "a formula's cached value counts"
    );
    let dates = b.column(3).as_primitive::<TimestampMicrosecondType>();
    // Serial 45000 is 2023-03-15 in the 1900 system; .75 is 18:00; an ISO cell (t="d") is a date too.
    assert_eq!(
        dates.iter().collect::<Vec<_>>(),
        [
            Some(micros(2023, 3, 15, 0, 0, 0)),
            Some(micros(2023, 3, 15, 18, 0, 0)),
            None,
            Some(micros(2024, 2, 29, 6, 30, 0))
        ]
    );
    let times = b.column(4).as_primitive::<Time64MicrosecondType>();
    assert_eq!(
        times.iter().collect::<Vec<_>>(),
        [
            Some(12 * 3_600_000_000),
            Some(6 * 3_600_000_000),
            None,
            None
        ]
    );
    let mixed = b.column(5).as_string::<i32>();
    assert_eq!(
        mixed.iter().collect::<Vec<_>>(),
        [Some("text"), Some("7"), None, Some("TRUE")]
    );
    let formula = b.column(6).as_primitive::<Int64Type>();
    assert_eq!(
        formula.iter().collect::<Vec<_>>(),
        [Some(3), None, None, Some(4)],
        "error cells are null"
    );
    let duration = b.column(7).as_string::<i32>();
    assert_eq!(
        duration.iter().collect::<Vec<_>>(),
        [Some("36:00:00"), None, None, None],
        "a duration is text, an empty string null"
    );
}

#[test]
fn infer_types_false_renders_every_cell_as_text() {
    let b = one_batch(&typed_sheet(), serde_json::json!({"infer_types": false}));
    assert!(types(&b.schema()).iter().all(|t| *t == DataType::Utf8));
    let row0: Vec<Option<&str>> = (0..b.num_columns())
        .map(|c| b.column(c).as_string::<i32>().iter().next().flatten())
        .collect();
    assert_eq!(
        row0,
        [
            Some("1"),
            Some("1.5"),
            Some("TRUE"),
            Some("2023-03-15"),
            Some("12:00:00"),
            Some("text"),
            Some("3"),
            Some("36:00:00")
        ]
    );
    let dates = b.column(3).as_string::<i32>();
    assert_eq!(dates.value(1), "2023-03-15 18:00:00");
    assert_eq!(
        dates.value(3),
        "2024-02-29T06:30:00",
        "an ISO cell keeps its text"
    );
}

#[test]
fn headers_are_named_deduplicated_and_positions_are_the_sheets() {
    // B1 and C1 repeat a name, D1 is blank, E1 is a number; data starts in column B, so column A
    // (blank throughout) is kept as it is in the sheet.
    let rows = r#"<row r="1"><c r="B1" t="inlineStr"><is><t>x</t></is></c><c r="C1" t="inlineStr"><is><t> x </t></is></c><c r="E1"><v>2024</v></c></row>
<row r="2"><c r="B2"><v>1</v></c><c r="C2"><v>2</v></c><c r="D2"><v>3</v></c><c r="E2"><v>4</v></c></row>"#;
    let book = workbook(&[("S", rows)], &[], false);
    let b = one_batch(&book, serde_json::json!({}));
    assert_eq!(
        names(&b.schema()),
        ["column_1", "x", "x_2", "column_4", "2024"]
    );
    assert_eq!(
        b.column(0).data_type(),
        &DataType::Utf8,
        "a column without values is text, all null"
    );
    assert_eq!(b.column(0).null_count(), 1);

    let b = one_batch(&book, serde_json::json!({"header": false}));
    assert_eq!(
        names(&b.schema()),
        ["column_1", "column_2", "column_3", "column_4", "column_5"]
    );
    assert_eq!(b.num_rows(), 2);
    assert_eq!(
        b.column(1).as_string::<i32>().iter().collect::<Vec<_>>(),
        [Some("x"), Some("1")],
        "text and a number: text"
    );

    let b = one_batch(&book, serde_json::json!({"header_row": 1, "header": false}));
    assert_eq!(b.num_rows(), 1);
    assert_eq!(b.column(4).as_primitive::<Int64Type>().value(0), 4);

    let (schema, batches) =
        parse(&book, serde_json::json!({"header_row": 1})).expect("header only");
    assert_eq!(names(&schema), ["column_1", "1", "2", "3", "4"]);
    assert!(batches.is_empty(), "a header with no rows below");

    let err = parse(&book, serde_json::json!({"header_row": 5})).expect_err("past the end");
    assert!(
        matches!(&err, PluginError::InvalidParams(m) if m.contains("header_row 5")),
        "{err}"
    );
}

#[test]
fn sheets_by_name_and_index_and_unknown_ones_list_the_names() {
    let book = workbook(
        &[
            ("First", r#"<row r="1"><c r="A1"><v>1</v></c></row>"#),
            ("Second", r#"<row r="1"><c r="A1"><v>2</v></c></row>"#),
        ],
        &[],
        false,
    );
    let value = |params| {
        one_batch(&book, params)
            .column(0)
            .as_primitive::<Int64Type>()
            .value(0)
    };
    assert_eq!(
        value(serde_json::json!({"header": false})),
        1,
        "the first sheet by default"
    );
    assert_eq!(
        value(serde_json::json!({"header": false, "sheet": "Second"})),
        2
    );
    assert_eq!(value(serde_json::json!({"header": false, "sheet": 1})), 2);
    let err = parse(&book, serde_json::json!({"sheet": "Third"})).expect_err("unknown sheet");
    assert!(
        matches!(&err, PluginError::InvalidParams(m) if m.contains(r#"["First", "Second"]"#)),
        "{err}"
    );
    let err = parse(&book, serde_json::json!({"sheet": 2})).expect_err("index out of range");
    assert!(
        matches!(&err, PluginError::InvalidParams(m) if m.contains("2 sheets") && m.contains("Second")),
        "{err}"
    );
    let err = parse(&book, serde_json::json!({"sheet": -1})).expect_err("negative index");
    assert!(
        matches!(&err, PluginError::InvalidParams(m) if m.contains("0-based index")),
        "{err}"
    );
    let numbered = workbook(
        &[("2019", r#"<row r="1"><c r="A1"><v>7</v></c></row>"#)],
        &[],
        false,
    );
    let b = one_batch(
        &numbered,
        serde_json::json!({"sheet": 2019, "header": false}),
    );
    assert_eq!(
        b.column(0).as_primitive::<Int64Type>().value(0),
        7,
        "a number that is no index but a sheet's name"
    );
    let err = parse(&book, serde_json::json!({"sheets": 0})).expect_err("typo");
    assert!(matches!(err, PluginError::InvalidParams(_)), "{err}");
}

#[test]
fn batches_hold_at_most_batch_rows() {
    let rows: String = (1..=10)
        .map(|r| format!(r#"<row r="{r}"><c r="A{r}"><v>{r}</v></c></row>"#))
        .collect();
    let book = workbook(&[("S", &rows)], &[], false);
    let (_, batches) =
        parse(&book, serde_json::json!({"header": false, "batch_rows": 4})).expect("parse");
    assert_eq!(
        batches
            .iter()
            .map(RecordBatch::num_rows)
            .collect::<Vec<_>>(),
        [4, 4, 2]
    );
    let all: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(all, (1..=10).collect::<Vec<_>>());
    let err = Xlsx::start(Params::from_json(
        &serde_json::json!({"batch_rows": 100_000}),
    ))
    .expect_err("too many rows per batch");
    assert!(matches!(err, PluginError::InvalidParams(_)));
}

#[test]
fn the_1904_date_system_shifts_dates() {
    let rows = r#"<row r="1"><c r="A1" s="1"><v>0</v></c></row><row r="2"><c r="A2" s="2"><v>1.5</v></c></row>"#;
    let b = one_batch(
        &workbook(&[("S", rows)], &[], true),
        serde_json::json!({"header": false}),
    );
    let dates = b.column(0).as_primitive::<TimestampMicrosecondType>();
    assert_eq!(
        dates.value(0),
        micros(1904, 1, 1, 0, 0, 0),
        "serial 0 is not a bare time here: the column has a full date"
    );
    assert_eq!(dates.value(1), micros(1904, 1, 2, 12, 0, 0));
}

#[test]
fn serials_match_calamines_own_conversion() {
    // calamine's to_ymd_hms_milli is an independent implementation of the same calendar.
    for is_1904 in [false, true] {
        let mut serial = 1.0;
        while serial < 2_958_000.0 {
            for frac in [0.0, 0.25, 0.640_277_777_777, 0.999_999_9] {
                let v = serial + frac;
                let (y, mo, d, h, mi, s, ms) =
                    ExcelDateTime::new(v, ExcelDateTimeType::DateTime, is_1904).to_ymd_hms_milli();
                let want = micros(
                    i64::from(y),
                    u32::from(mo),
                    u32::from(d),
                    i64::from(h),
                    i64::from(mi),
                    i64::from(s),
                ) + i64::from(ms) * 1000;
                assert_eq!(
                    serial_to_micros(v, is_1904),
                    Some(want),
                    "serial {v}, 1904: {is_1904}"
                );
            }
            serial = (serial * 1.37).floor() + 1.0;
        }
    }
    assert_eq!(format_timestamp(micros(1900, 2, 28, 0, 0, 0)), "1900-02-28");
    assert_eq!(civil_from_days(days_from_civil(2000, 2, 29)), (2000, 2, 29));
}

#[test]
fn fixture_datetime_uses_the_1904_system() {
    // xlsx2csv's oracle: 2011-09-15 15:22:00 (serial 39339.640277777777 counted from 1904-01-01).
    let b = one_batch(
        &fixture("datetime.xlsx"),
        serde_json::json!({"header": false}),
    );
    let dates = b.column(0).as_primitive::<TimestampMicrosecondType>();
    assert_eq!(format_timestamp(dates.value(0)), "2011-09-15 15:22:00");
}

#[test]
fn fixture_float_keeps_the_blank_first_row() {
    let b = one_batch(&fixture("float.xlsx"), serde_json::json!({"header": false}));
    let v = b.column(0).as_primitive::<Float64Type>();
    assert_eq!(
        v.iter().collect::<Vec<_>>(),
        [None, Some(0.103), Some(0.276), Some(0.103), Some(0.276)]
    );
    let err =
        parse(&fixture("float.xlsx"), serde_json::json!({"sheet": 1})).expect_err("empty sheet");
    assert!(
        matches!(&err, PluginError::InvalidInput(m) if m.contains("empty") && m.contains("Лист2")),
        "{err}"
    );
}

#[test]
fn fixture_escape_keeps_control_characters_and_leading_blank_columns() {
    let b = one_batch(
        &fixture("escape.xlsx"),
        serde_json::json!({"header": false}),
    );
    assert_eq!(b.num_columns(), 6);
    assert_eq!(b.column(4).as_string::<i32>().value(0), "Hello\nWorld\t!");
    assert!(!b.column(5).as_boolean().value(0));
    assert!((0..4).all(|c| b.column(c).is_null(0)));
}

#[test]
fn fixture_datasets_has_four_sheets() {
    let book = fixture("datasets.xlsx");
    let (schema, batches) = parse(&book, serde_json::json!({"sheet": "quakes"})).expect("quakes");
    assert_eq!(names(&schema), ["lat", "long", "depth", "mag", "stations"]);
    assert_eq!(
        types(&schema),
        [
            DataType::Float64,
            DataType::Float64,
            DataType::Int64,
            DataType::Float64,
            DataType::Int64
        ]
    );
    assert_eq!(
        batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
        1000
    );
    // The file writes many numbers with a leading space (`<v> 41</v>`).
    assert_eq!(
        batches[0].column(4).as_primitive::<Int64Type>().value(0),
        41
    );
    let (schema, batches) = parse(&book, serde_json::json!({})).expect("iris, the first sheet");
    assert_eq!(
        names(&schema),
        [
            "Sepal.Length",
            "Sepal.Width",
            "Petal.Length",
            "Petal.Width",
            "Species"
        ]
    );
    assert_eq!(batches[0].num_rows(), 150);
    assert_eq!(
        batches[0].column(4).as_string::<i32>().value(149),
        "virginica"
    );
    let err =
        parse(&book, serde_json::json!({"sheet": "Iris"})).expect_err("names are case-sensitive");
    assert!(
        err.to_string()
            .contains(r#"["iris", "mtcars", "chickwts", "quakes"]"#),
        "{err}"
    );
}

#[test]
fn padded_numbers_are_trimmed_but_padded_text_is_kept() {
    let xml = br#"<row r="1"><c r="A1"><v> 41</v></c><c r="B1" t="str"><f>" 7"</f><v> 7</v></c><c r="C1"><v>x</v></c></row>"#;
    let fixed = trim_values(xml).expect("changed");
    assert_eq!(
        String::from_utf8(fixed).expect("utf-8"),
        r#"<row r="1"><c r="A1"><v>41</v></c><c r="B1" t="str"><f>" 7"</f><v> 7</v></c><c r="C1"><v>x</v></c></row>"#
    );
    assert_eq!(trim_values(br#"<c r="A1"><v>41</v></c>"#), None);
}

#[test]
fn not_a_workbook_is_invalid_input() {
    let err = parse(b"a,b\n1,2\n", serde_json::json!({})).expect_err("csv");
    assert!(
        matches!(&err, PluginError::InvalidInput(m) if m.contains("zip")),
        "{err}"
    );
    let err = parse(b"", serde_json::json!({})).expect_err("empty");
    assert!(
        matches!(&err, PluginError::InvalidInput(m) if m.contains("empty")),
        "{err}"
    );

    // An OLE container is refused on the first chunk, before the rest is buffered.
    let mut p = Xlsx::start(Params::default()).expect("start");
    let mut ole = OLE_MAGIC.to_vec();
    ole.extend_from_slice(&[0; 512]);
    let err = p.push(&ole).expect_err("OLE");
    assert!(
        matches!(&err, PluginError::InvalidInput(m) if m.contains("encrypted or not an XLSX (an OLE container)")),
        "{err}"
    );

    let book = typed_sheet();
    let err = parse(&book[..book.len() / 2], serde_json::json!({})).expect_err("truncated");
    assert!(
        matches!(&err, PluginError::InvalidInput(m) if m.contains("corrupt XLSX")),
        "{err}"
    );

    // A zip that is not a workbook.
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    zip.start_file("hello.txt", zip::write::SimpleFileOptions::default())
        .expect("entry");
    zip.write_all(b"hello").expect("write");
    let err = parse(
        &zip.finish().expect("zip").into_inner(),
        serde_json::json!({}),
    )
    .expect_err("plain zip");
    assert!(
        matches!(&err, PluginError::InvalidInput(m) if m.contains("not an XLSX")),
        "{err}"
    );
}

#[test]
fn max_bytes_is_enforced_while_pushing() {
    let book = typed_sheet();
    let mut p =
        Xlsx::start(Params::from_json(&serde_json::json!({"max_bytes": 100}))).expect("start");
    assert!(p.push(&book[..60]).is_ok());
    let err = p.push(&book[60..120]).expect_err("over the limit");
    assert!(
        matches!(&err, PluginError::TooLarge(m) if m.contains("max_bytes")),
        "{err}"
    );
    // Chunking does not change the result.
    let whole = parse_with(&book, serde_json::json!({}), book.len()).expect("one chunk");
    let bytewise = parse_with(&book, serde_json::json!({}), 1).expect("byte by byte");
    assert_eq!(whole.1, bytewise.1);
}

#[test]
fn cells_beyond_excels_grid_are_refused() {
    let book = workbook(
        &[(
            "S",
            r#"<row r="1"><c r="A1"><v>1</v></c></row><row r="2000000"><c r="A2000000"><v>2</v></c></row>"#,
        )],
        &[],
        false,
    );
    let err = parse(&book, serde_json::json!({})).expect_err("row 2,000,000");
    assert!(
        matches!(&err, PluginError::InvalidInput(m) if m.contains("beyond Excel's limits")),
        "{err}"
    );
}

/// The cells calamine reads from a sheet: the reference the direct reader must match.
fn calamine_cells(bytes: &[u8], sheet: &str) -> Cells {
    let mut workbook = open_workbook(bytes).expect("calamine opens the workbook");
    read_cells(&mut workbook, sheet).expect("calamine reads the sheet")
}

/// The direct reader's cells, or `None` when it gives way to calamine.
fn direct_cells(bytes: &[u8], sheet: &str) -> Option<Cells> {
    let mut book = fast::Book::open(bytes)?;
    book.cells(sheet)
}

/// Asserts the direct reader reads `sheet` itself, and exactly as calamine does.
fn same_as_calamine(bytes: &[u8], sheet: &str) {
    let direct = direct_cells(bytes, sheet)
        .unwrap_or_else(|| panic!("the direct reader gave way on sheet {sheet:?}"));
    assert_eq!(direct, calamine_cells(bytes, sheet), "sheet {sheet:?}");
}

#[test]
fn the_direct_reader_matches_calamine_on_every_fixture_sheet() {
    let mut gave_way = Vec::new();
    for name in [
        "datasets.xlsx",
        "datetime.xlsx",
        "escape.xlsx",
        "float.xlsx",
    ] {
        let bytes = fixture(name);
        let workbook = open_workbook(&bytes).expect("open");
        let names = workbook.sheet_names();
        let book = fast::Book::open(&bytes).unwrap_or_else(|| panic!("{name}: gave way"));
        assert_eq!(book.names, names, "{name}: sheet names");
        assert_eq!(
            book.is_1904,
            workbook.has_1904_epoch(),
            "{name}: date system"
        );
        for sheet in &names {
            match direct_cells(&bytes, sheet) {
                Some(direct) => assert_eq!(direct, calamine_cells(&bytes, sheet), "{name} {sheet}"),
                None => gave_way.push(format!("{name} {sheet}")),
            }
        }
    }
    // readxl's `quakes` pads numbers with spaces (`<v> 41</v>`), which calamine refuses and the
    // parser trims and retries: that one is left to the calamine path on purpose.
    assert_eq!(gave_way, ["datasets.xlsx quakes"]);
}

#[test]
fn the_direct_reader_matches_calamine_on_the_synthetic_sheets() {
    // Every cell type, styles for dates, times and durations, formulas, errors, an empty string.
    let typed = typed_sheet();
    same_as_calamine(&typed, "Data");
    // Inline strings (plain, rich text with a phonetic run, preserved and trimmed space,
    // entities, an empty one), a string formula result with a line break, booleans written as
    // words, a `<v>` in an inline-string cell, self-closing cells and rows, prefixed names.
    let rows = r#"
<row r="1" spans="1:4"><c r="A1" t="inlineStr"><is><t>name</t></is></c><c r="B1" t="inlineStr"><is><r><rPr><b/></rPr><t>ri</t></r><r><t xml:space="preserve">ch </t></r><rPh sb="0" eb="1"><t>phonetic</t></rPh></is></c><c r="C1" t="inlineStr"><is><t>  padded  </t></is></c><c r="D1" t="inlineStr"><is><t xml:space="preserve">  kept  </t></is></c></row>
<row r="2"/>
<row r="3"><c r="A3" t="inlineStr"><is><t>R&amp;D &lt;1&gt; &#233;&#x4E2D;</t></is></c><c r="B3" t="str"><f>A1</f><v>two&#10;lines&#13;&#10;x</v></c><c r="C3" t="b"><v> true </v></c><c r="D3" t="inlineStr"><v>ignored</v><is><t>inline</t></is></c></row>
<row r="4"><c r="A4" s="1"/><c r="B4" t="inlineStr"><is/></c><c r="C4" t="b"><v>FALSE</v></c><c r="D4" t="n"><v>-1.25E-3</v></c></row>
<x:row r="5"><x:c r="A5" t="s"><x:v>1</x:v></x:c><x:c r="AA5"><x:v>7</x:v></x:c></x:row>"#;
    let book = workbook(&[("S", rows)], &["a", "b&amp;c"], false);
    same_as_calamine(&book, "S");
    // The 1904 date system.
    let book = workbook(
        &[(
            "D",
            r#"<row r="1"><c r="A1" s="1"><v>0</v></c><c r="B1" s="4"><v>1.5</v></c></row>"#,
        )],
        &[],
        true,
    );
    same_as_calamine(&book, "D");
}

#[test]
fn the_direct_reader_gives_way_on_what_it_does_not_handle_and_the_result_is_calamines() {
    for (what, rows) in [
        (
            "a cell without its position",
            r#"<row r="1"><c><v>1</v></c><c><v>2</v></c></row>"#,
        ),
        (
            "an Excel escape",
            r#"<row r="1"><c r="A1" t="inlineStr"><is><t>a_x000D_b</t></is></c></row>"#,
        ),
        (
            "a comment",
            r#"<row r="1"><!-- note --><c r="A1"><v>1</v></c></row>"#,
        ),
        (
            "a padded number",
            r#"<row r="1"><c r="A1"><v> 41</v></c></row>"#,
        ),
        (
            "an unknown cell child",
            r#"<row r="1"><c r="A1"><x>1</x></c></row>"#,
        ),
        (
            "a signed string index",
            r#"<row r="1"><c r="A1" t="s"><v>+1</v></c></row>"#,
        ),
        (
            "a signed style",
            r#"<row r="1"><c r="A1" s="+1"><v>1</v></c></row>"#,
        ),
    ] {
        let book = workbook(&[("S", rows)], &[], false);
        assert!(
            direct_cells(&book, "S").is_none(),
            "{what}: the direct reader should give way"
        );
        // The parser still reads it, through calamine: the same table as before this reader.
        let direct = parse(&book, serde_json::json!({"header": false}));
        let mut workbook = open_workbook(&book).expect("open");
        match read_cells(&mut workbook, "S") {
            Ok(cells) => {
                let (schema, batches) = direct.unwrap_or_else(|e| panic!("{what}: {e}"));
                let (want_schema, want) = build_table(
                    &Options {
                        header: false,
                        ..Options::default()
                    },
                    "S",
                    cells,
                    false,
                )
                .expect("table");
                assert_eq!((schema, batches), (want_schema, want), "{what}");
            }
            // calamine refuses it (the padded number is trimmed and retried by the parser).
            Err(_) => {
                if what == "a padded number" {
                    let (_, batches) = direct.expect("trimmed and read");
                    assert_eq!(batches[0].num_rows(), 1);
                } else {
                    assert!(
                        direct.is_err(),
                        "{what}: calamine refuses it, so must the parser"
                    );
                }
            }
        }
    }
}

#[test]
fn the_direct_reader_reads_a_sheet_larger_than_one_chunk() {
    // About 3 MB of sheet XML: several inflate chunks, rows cut at chunk ends.
    let rows: String = (1..=40_000)
        .map(|r| {
            format!(
                r#"<row r="{r}"><c r="A{r}" t="inlineStr"><is><t>S{r:07}</t></is></c><c r="B{r}"><v>{}.5</v></c><c r="C{r}" s="1"><v>{}</v></c><c r="D{r}" t="s"><v>{}</v></c></row>"#,
                r * 3,
                40_000 + r,
                r % 3
            )
        })
        .collect();
    let book = workbook(&[("Big", &rows)], &["x", "y", "z"], false);
    same_as_calamine(&book, "Big");
    let direct = direct_cells(&book, "Big").expect("direct");
    assert_eq!(direct.last_row, Some(39_999));
    assert_eq!(direct.columns.iter().map(Vec::len).sum::<usize>(), 160_000);
}

#[test]
fn the_direct_reader_never_panics_on_damaged_sheet_xml() {
    // Every prefix of a sheet's XML, and every byte swapped for markup, in a workbook that is
    // otherwise sound: the direct reader reads it or gives way, and the parser never panics.
    let sheet = r#"<row r="1"><c r="A1" t="inlineStr"><is><t>a&amp;b</t></is></c><c r="B1" s="1"><v>45000</v></c><c r="C1" t="s"><v>0</v></c><c r="D1" t="b"><v>1</v></c></row><row r="2"><c r="A2" t="str"><f>A1</f><v>x</v></c><c r="AB2"><v>-1.5e3</v></c></row>"#;
    let mut cases: Vec<String> = (0..sheet.len()).map(|n| sheet[..n].to_owned()).collect();
    for (i, _) in sheet.char_indices() {
        for with in ["<", ">", "\"", "&"] {
            cases.push(format!("{}{with}{}", &sheet[..i], &sheet[i + 1..]));
        }
    }
    let mut read = 0;
    for case in &cases {
        let book = workbook(&[("S", case)], &["s"], false);
        if let Some(cells) = direct_cells(&book, "S") {
            read += 1;
            // What the direct reader accepts, calamine reads alike (when it reads it at all).
            if let Ok(mut wb) = open_workbook(&book)
                && let Ok(want) = read_cells(&mut wb, "S")
            {
                assert_eq!(cells, want, "{case}");
            }
        }
    }
    // And the whole parser on the truncated ones.
    for case in &cases[..sheet.len()] {
        let book = workbook(&[("S", case)], &["s"], false);
        let _ = parse(&book, serde_json::json!({"header": false}));
    }
    assert!(
        read > 0 && read < cases.len(),
        "{read} of {} read directly",
        cases.len()
    );
}
