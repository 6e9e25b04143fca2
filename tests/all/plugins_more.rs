//! The bundled `xlsx` parser and the `filter`, `rename` and `cast` steps through the real sandbox.
//!
//! Every workbook in the shared xlsx fixtures is read: `datetime`, `float` and `escape` against the
//! CSV that xlsx2csv 0.8.6 made from them (the oracle), `datasets` against facts read by hand from
//! its XML (readxl's four R datasets). The steps run over `iris.csv` parsed by the `csv` plugin.
//! Also the `csv` parser at the edges of width: a 1,200-column CSV large enough to be cut into
//! segments parsed on several instances, and the host's cap on the columns a plugin may return.

use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use lake_host::plugins::{InvokeError, Plugins, Table};

use crate::plugins::{open, shared, shared_cache};

fn xlsx_fixture(name: &str) -> PathBuf {
    shared().join("fixtures/xlsx").join(name)
}

fn stream(bytes: Vec<u8>, chunk: usize) -> lake_host::blob::ByteStream {
    let chunks: Vec<std::io::Result<bytes::Bytes>> = bytes
        .chunks(chunk.max(1))
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

/// Runs the `xlsx` parser over these bytes, fed in 64 KiB chunks.
async fn parse_xlsx(
    p: &Plugins,
    bytes: Vec<u8>,
    params: serde_json::Value,
) -> Result<Table, InvokeError> {
    let params = lake_host::plugins::params_from_json(&params).expect("params");
    p.parse("xlsx", params, stream(bytes, 64 << 10))
        .await
        .result
}

async fn parse_xlsx_file(
    p: &Plugins,
    path: &Path,
    params: serde_json::Value,
) -> Result<Table, InvokeError> {
    parse_xlsx(p, std::fs::read(path).expect("fixture"), params).await
}

async fn step(
    p: &Plugins,
    name: &str,
    params: serde_json::Value,
    input: &Table,
) -> Result<Table, InvokeError> {
    let params = lake_host::plugins::params_from_json(&params).expect("params");
    p.step(name, params, vec![input.clone().into()])
        .await
        .result
}

async fn iris(p: &Plugins) -> Table {
    crate::plugins::parse(
        p,
        &shared().join("fixtures/csv/iris.csv"),
        serde_json::json!({}),
    )
    .await
    .expect("iris.csv")
}

fn names(t: &Table) -> Vec<&str> {
    t.schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect()
}

fn types(t: &Table) -> Vec<DataType> {
    t.schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect()
}

/// One column of a table, all batches concatenated, as text in xlsx2csv's style: booleans as
/// `TRUE`/`FALSE`, timestamps as `%Y-%m-%d %H:%M:%S`, and newline, carriage return and tab in text
/// written as `\n`, `\r`, `\t` (what its `--escape` option does). Null is `None`.
fn column_text(t: &Table, col: usize) -> Vec<Option<String>> {
    t.batches
        .iter()
        .flat_map(|b| {
            (0..b.num_rows())
                .map(|r| cell_text(b.column(col), r))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn cell_text(a: &ArrayRef, row: usize) -> Option<String> {
    if a.is_null(row) {
        return None;
    }
    Some(match a.data_type() {
        DataType::Utf8 => a
            .as_string::<i32>()
            .value(row)
            .replace('\r', "\\r")
            .replace('\n', "\\n")
            .replace('\t', "\\t"),
        DataType::Boolean => if a.as_boolean().value(row) {
            "TRUE"
        } else {
            "FALSE"
        }
        .to_owned(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::Float64 => a.as_primitive::<Float64Type>().value(row).to_string(),
        DataType::Timestamp(_, None) => {
            let micros = a.as_primitive::<TimestampMicrosecondType>().value(row);
            let dt = chrono::DateTime::from_timestamp_micros(micros).expect("timestamp in range");
            dt.naive_utc().format("%Y-%m-%d %H:%M:%S").to_string()
        }
        other => panic!("no text form for {other}"),
    })
}

/// An xlsx2csv oracle as rows of fields. The oracles hold no quotes (checked), so splitting on
/// commas and line ends is exact.
fn read_oracle(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).expect("oracle");
    assert!(
        !text.contains('"'),
        "{}: quoted fields need a real CSV reader",
        path.display()
    );
    text.lines()
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

/// Compares a table read with `header: false` to an xlsx2csv oracle, cell by cell. An empty oracle
/// field is a null cell. Numbers are compared as numbers: xlsx2csv applies each cell's number
/// format (float.xlsx's `0.00000` gives `0.10300`), which a typed table does not keep, so the
/// oracle's text is parsed as f64 and must equal the Float64 value exactly (both are the f64
/// nearest to the decimal). Every other cell must match as text.
fn assert_matches_oracle(t: &Table, oracle: &[Vec<String>], what: &str) {
    assert_eq!(t.num_rows(), oracle.len(), "{what}: row count");
    let width = oracle.iter().map(Vec::len).max().unwrap_or(0);
    assert_eq!(t.schema.fields().len(), width, "{what}: column count");
    for col in 0..width {
        let got = column_text(t, col);
        let numeric = t.schema.field(col).data_type() == &DataType::Float64;
        for (row, fields) in oracle.iter().enumerate() {
            let want = fields.get(col).map(String::as_str).unwrap_or("");
            let cell = got[row].as_deref();
            if want.is_empty() {
                assert_eq!(cell, None, "{what}: row {row} column {col} should be empty");
            } else if numeric {
                let want: f64 = want
                    .parse()
                    .unwrap_or_else(|_| panic!("{what}: oracle {want:?} is not a number"));
                let cell: f64 = cell
                    .unwrap_or_else(|| panic!("{what}: row {row} column {col} is null"))
                    .parse()
                    .expect("f64");
                assert_eq!(cell, want, "{what}: row {row} column {col}");
            } else {
                assert_eq!(cell, Some(want), "{what}: row {row} column {col}");
            }
        }
    }
}

#[tokio::test]
async fn xlsx2csv_fixtures_match_their_oracles() {
    let p = open(&shared_cache());
    for stem in ["datetime", "float", "escape"] {
        // xlsx2csv writes every row, the first included, and starts at column A: header: false
        // with the table starting at sheet row 0 is the same view.
        let table = parse_xlsx_file(
            &p,
            &xlsx_fixture(&format!("{stem}.xlsx")),
            serde_json::json!({"header": false}),
        )
        .await
        .unwrap_or_else(|e| panic!("{stem}: {e}"));
        assert_matches_oracle(
            &table,
            &read_oracle(&xlsx_fixture(&format!("{stem}.csv"))),
            stem,
        );
    }

    // The cells' types, beyond their text: a 1904-system date (serial 39339.64 counted from
    // 1904-01-01, not 1900), numbers, and a formula's cached boolean next to empty columns.
    let datetime = parse_xlsx_file(
        &p,
        &xlsx_fixture("datetime.xlsx"),
        serde_json::json!({"header": false}),
    )
    .await
    .expect("datetime");
    assert_eq!(
        types(&datetime),
        [DataType::Timestamp(
            arrow_schema::TimeUnit::Microsecond,
            None
        )]
    );
    let float = parse_xlsx_file(
        &p,
        &xlsx_fixture("float.xlsx"),
        serde_json::json!({"header": false}),
    )
    .await
    .expect("float");
    assert_eq!(types(&float), [DataType::Float64]);
    let escape = parse_xlsx_file(
        &p,
        &xlsx_fixture("escape.xlsx"),
        serde_json::json!({"header": false}),
    )
    .await
    .expect("escape");
    assert_eq!(types(&escape)[4..], [DataType::Utf8, DataType::Boolean]);
    assert_eq!(
        escape.batches[0].column(4).as_string::<i32>().value(0),
        "Hello\nWorld\t!",
        "real control characters"
    );
}

#[tokio::test]
async fn xlsx2csv_fixtures_other_sheets_parse_or_fail_clearly() {
    let p = open(&shared_cache());
    // escape.xlsx's second sheet holds one row of two numbers.
    let sheet2 = parse_xlsx_file(
        &p,
        &xlsx_fixture("escape.xlsx"),
        serde_json::json!({"sheet": "Sheet2", "header": false}),
    )
    .await
    .expect("Sheet2");
    assert_eq!(
        (
            types(&sheet2),
            column_text(&sheet2, 0),
            column_text(&sheet2, 1)
        ),
        (
            vec![DataType::Int64; 2],
            vec![Some("1".into())],
            vec![Some("2".into())]
        )
    );
    // float.xlsx's second and third sheets have no cells.
    for sheet in [1, 2] {
        let err = parse_xlsx_file(
            &p,
            &xlsx_fixture("float.xlsx"),
            serde_json::json!({ "sheet": sheet }),
        )
        .await
        .expect_err("empty sheet");
        assert_eq!(err.code(), "invalid_input", "{err}");
        assert!(err.to_string().contains("is empty"), "{err}");
    }
    // With a header, float.xlsx's blank first row names the column after its position.
    let float = parse_xlsx_file(&p, &xlsx_fixture("float.xlsx"), serde_json::json!({}))
        .await
        .expect("float with a header");
    assert_eq!((names(&float), float.num_rows()), (vec!["column_1"], 4));
}

#[tokio::test]
async fn xlsx_datasets_read_as_typed_tables() {
    let p = open(&shared_cache());
    let path = xlsx_fixture("datasets.xlsx");

    let err = parse_xlsx_file(&p, &path, serde_json::json!({"sheet": "nope"}))
        .await
        .expect_err("unknown sheet");
    assert_eq!(err.code(), "invalid_params");
    assert!(
        err.to_string()
            .contains(r#"["iris", "mtcars", "chickwts", "quakes"]"#),
        "lists the sheets: {err}"
    );

    // iris is the first sheet: the default.
    let iris = parse_xlsx_file(&p, &path, serde_json::json!({}))
        .await
        .expect("iris");
    assert_eq!(
        names(&iris),
        [
            "Sepal.Length",
            "Sepal.Width",
            "Petal.Length",
            "Petal.Width",
            "Species"
        ]
    );
    assert_eq!(
        types(&iris),
        [
            DataType::Float64,
            DataType::Float64,
            DataType::Float64,
            DataType::Float64,
            DataType::Utf8
        ]
    );
    assert_eq!(iris.num_rows(), 150);
    let first: Vec<_> = (0..5).map(|c| column_text(&iris, c)[0].clone()).collect();
    assert_eq!(
        first,
        [
            Some("5.1".into()),
            Some("3.5".into()),
            Some("1.4".into()),
            Some("0.2".into()),
            Some("setosa".into())
        ]
    );
    let last: Vec<_> = (0..5).map(|c| column_text(&iris, c)[149].clone()).collect();
    assert_eq!(
        last,
        [
            Some("5.9".into()),
            Some("3".into()),
            Some("5.1".into()),
            Some("1.8".into()),
            Some("virginica".into())
        ]
    );

    // mtcars: whole-number columns are Int64, the others Float64.
    let mtcars = parse_xlsx_file(&p, &path, serde_json::json!({"sheet": "mtcars"}))
        .await
        .expect("mtcars");
    assert_eq!(
        names(&mtcars),
        [
            "mpg", "cyl", "disp", "hp", "drat", "wt", "qsec", "vs", "am", "gear", "carb"
        ]
    );
    let (i, f) = (DataType::Int64, DataType::Float64);
    assert_eq!(
        types(&mtcars),
        [
            f.clone(),
            i.clone(),
            f.clone(),
            i.clone(),
            f.clone(),
            f.clone(),
            f.clone(),
            i.clone(),
            i.clone(),
            i.clone(),
            i.clone()
        ]
    );
    assert_eq!(mtcars.num_rows(), 32);
    let row = |t: &Table, r: usize| {
        (0..t.schema.fields().len())
            .map(|c| column_text(t, c)[r].clone().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(",")
    };
    assert_eq!(row(&mtcars, 0), "21,6,160,110,3.9,2.62,16.46,0,1,4,4");
    assert_eq!(row(&mtcars, 31), "21.4,4,121,109,4.11,2.78,18.6,1,1,4,2");

    // chickwts by index.
    let chickwts = parse_xlsx_file(&p, &path, serde_json::json!({"sheet": 2}))
        .await
        .expect("chickwts");
    assert_eq!(
        (names(&chickwts), types(&chickwts)),
        (
            vec!["weight", "feed"],
            vec![DataType::Int64, DataType::Utf8]
        )
    );
    assert_eq!(chickwts.num_rows(), 71);
    assert_eq!(
        (row(&chickwts, 0), row(&chickwts, 70)),
        ("179,horsebean".into(), "332,casein".into())
    );

    // quakes writes numbers with a leading space (`<v> 41</v>`); they are still numbers.
    let quakes = parse_xlsx_file(&p, &path, serde_json::json!({"sheet": "quakes"}))
        .await
        .expect("quakes");
    assert_eq!(names(&quakes), ["lat", "long", "depth", "mag", "stations"]);
    assert_eq!(
        types(&quakes),
        [f.clone(), f.clone(), i.clone(), f.clone(), i.clone()]
    );
    assert_eq!(quakes.num_rows(), 1000);
    assert_eq!(
        (row(&quakes, 0), row(&quakes, 999)),
        (
            "-20.42,181.62,562,4.8,41".into(),
            "-21.59,170.56,165,6,119".into()
        )
    );

    // Without type inference every cell is text; the header row can be moved.
    let text = parse_xlsx_file(
        &p,
        &path,
        serde_json::json!({"sheet": "chickwts", "infer_types": false, "header_row": 70}),
    )
    .await
    .expect("text");
    assert_eq!(
        (names(&text), types(&text), row(&text, 0)),
        (
            vec!["283", "casein"],
            vec![DataType::Utf8; 2],
            "332,casein".into()
        )
    );
}

#[tokio::test]
async fn xlsx_refuses_what_is_not_a_readable_workbook() {
    let p = open(&shared_cache());
    let datasets = std::fs::read(xlsx_fixture("datasets.xlsx")).expect("fixture");

    let csv = parse_xlsx_file(
        &p,
        &shared().join("fixtures/csv/iris.csv"),
        serde_json::json!({}),
    )
    .await
    .expect_err("a CSV");
    assert_eq!(csv.code(), "invalid_input");
    assert!(csv.to_string().contains("zip archive"), "{csv}");

    let truncated = parse_xlsx(
        &p,
        datasets[..datasets.len() / 2].to_vec(),
        serde_json::json!({}),
    )
    .await
    .expect_err("truncated");
    assert_eq!(truncated.code(), "invalid_input");
    assert!(
        truncated.to_string().contains("corrupt XLSX"),
        "{truncated}"
    );

    // Encrypted XLSX files and legacy .xls files are OLE compound files; no fixture is encrypted, so
    // an OLE header stands in for one.
    let mut ole = vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
    ole.resize(4096, 0);
    let encrypted = parse_xlsx(&p, ole, serde_json::json!({}))
        .await
        .expect_err("OLE");
    assert_eq!(encrypted.code(), "invalid_input");
    assert!(
        encrypted
            .to_string()
            .contains("encrypted or not an XLSX (an OLE container)"),
        "{encrypted}"
    );

    let empty = parse_xlsx(&p, Vec::new(), serde_json::json!({}))
        .await
        .expect_err("empty");
    assert_eq!(empty.code(), "invalid_input");

    let big = parse_xlsx(&p, datasets.clone(), serde_json::json!({"max_bytes": 1000}))
        .await
        .expect_err("over max_bytes");
    assert_eq!(big.code(), "too_large", "{big}");

    let typo = parse_xlsx(&p, datasets, serde_json::json!({"sheets": "iris"}))
        .await
        .expect_err("unknown parameter");
    assert_eq!(typo.code(), "invalid_params");
}

#[tokio::test]
async fn filter_keeps_matching_rows_of_iris() {
    let p = open(&shared_cache());
    let iris = iris(&p).await;
    // The oracle for numeric filters: the CSV's own values.
    let csv = std::fs::read_to_string(shared().join("fixtures/csv/iris.csv")).expect("iris.csv");
    let sepal_lengths: Vec<f64> = csv
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').next().expect("field").parse().expect("f64"))
        .collect();
    assert_eq!(sepal_lengths.len(), 150);

    let setosa = step(
        &p,
        "filter",
        serde_json::json!({"column": "species", "op": "eq", "value": "Iris-setosa"}),
        &iris,
    )
    .await
    .expect("eq");
    assert_eq!(setosa.num_rows(), 50);
    assert!(
        column_text(&setosa, 4)
            .iter()
            .all(|s| s.as_deref() == Some("Iris-setosa"))
    );
    assert_eq!(setosa.schema, iris.schema, "the schema is kept");

    for (op, keep) in [
        ("gt", (|v: f64| v > 7.0) as fn(f64) -> bool),
        ("le", |v| v <= 7.0),
        ("ne", |v| v != 5.0),
        ("ge", |v| v >= 5.0),
        ("lt", |v| v < 5.0),
    ] {
        let value = if op == "gt" || op == "le" { 7 } else { 5 };
        let out = step(
            &p,
            "filter",
            serde_json::json!({"column": "sepal_length", "op": op, "value": value}),
            &iris,
        )
        .await
        .expect(op);
        assert_eq!(
            out.num_rows(),
            sepal_lengths.iter().filter(|v| keep(**v)).count(),
            "{op} {value}"
        );
    }
    let versicolor = step(
        &p,
        "filter",
        serde_json::json!({"column": "species", "op": "contains", "value": "versi"}),
        &iris,
    )
    .await
    .expect("contains");
    assert_eq!(versicolor.num_rows(), 50);
    let all = step(
        &p,
        "filter",
        serde_json::json!({"column": "petal_width", "op": "not_null"}),
        &iris,
    )
    .await
    .expect("not_null");
    assert_eq!(all.num_rows(), 150);
    let none = step(
        &p,
        "filter",
        serde_json::json!({"column": "petal_width", "op": "is_null"}),
        &iris,
    )
    .await
    .expect("is_null");
    assert_eq!(
        (none.num_rows(), none.schema.fields().len()),
        (0, 5),
        "an empty table keeps its schema"
    );

    let err = step(
        &p,
        "filter",
        serde_json::json!({"column": "colour", "op": "eq", "value": "red"}),
        &iris,
    )
    .await
    .expect_err("unknown column");
    assert_eq!(err.code(), "invalid_params");
    assert!(
        err.to_string().contains(
            r#"["sepal_length", "sepal_width", "petal_length", "petal_width", "species"]"#
        ),
        "{err}"
    );
    let err = step(
        &p,
        "filter",
        serde_json::json!({"column": "sepal_length", "op": "gt", "value": "7"}),
        &iris,
    )
    .await
    .expect_err("a string for a number");
    assert_eq!(err.code(), "invalid_params");
    assert!(err.to_string().contains("must be a number"), "{err}");
    let err = step(
        &p,
        "filter",
        serde_json::json!({"column": "species", "op": "eq", "value": true}),
        &iris,
    )
    .await
    .expect_err("a bool for text");
    assert_eq!(err.code(), "invalid_params");
    let err = step(
        &p,
        "filter",
        serde_json::json!({"column": "sepal_length", "op": "contains", "value": "5"}),
        &iris,
    )
    .await
    .expect_err("contains on numbers");
    assert_eq!(err.code(), "invalid_params");
    let err = step(
        &p,
        "filter",
        serde_json::json!({"column": "species", "op": "matches", "value": "x"}),
        &iris,
    )
    .await
    .expect_err("unknown op");
    assert_eq!(err.code(), "invalid_params");
}

#[tokio::test]
async fn rename_relabels_columns_of_iris() {
    let p = open(&shared_cache());
    let iris = iris(&p).await;
    let out = step(
        &p,
        "rename",
        serde_json::json!({"columns": {"species": "class", "sepal_length": "sl"}}),
        &iris,
    )
    .await
    .expect("rename");
    assert_eq!(
        names(&out),
        ["sl", "sepal_width", "petal_length", "petal_width", "class"]
    );
    assert_eq!(types(&out), types(&iris));
    assert_eq!(out.num_rows(), 150);
    assert_eq!(column_text(&out, 4), column_text(&iris, 4));

    let err = step(
        &p,
        "rename",
        serde_json::json!({"columns": {"Species": "class"}}),
        &iris,
    )
    .await
    .expect_err("unknown column");
    assert_eq!(err.code(), "invalid_params");
    assert!(
        err.to_string().contains(r#""species""#),
        "names the columns: {err}"
    );
    let err = step(
        &p,
        "rename",
        serde_json::json!({"columns": {"species": "petal_width"}}),
        &iris,
    )
    .await
    .expect_err("duplicate");
    assert_eq!(err.code(), "invalid_params");
    assert!(err.to_string().contains("petal_width"), "{err}");
}

#[tokio::test]
async fn cast_converts_iris_columns_or_names_the_bad_value() {
    let p = open(&shared_cache());
    let iris = iris(&p).await;
    let text = step(
        &p,
        "cast",
        serde_json::json!({"columns": {"sepal_length": "utf8"}}),
        &iris,
    )
    .await
    .expect("to text");
    assert_eq!(types(&text)[0], DataType::Utf8);
    assert_eq!(text.batches[0].column(0).as_string::<i32>().value(0), "5.1");
    let back = step(
        &p,
        "cast",
        serde_json::json!({"columns": {"sepal_length": "float64"}}),
        &text,
    )
    .await
    .expect("back to numbers");
    assert_eq!(back.schema, iris.schema);
    assert_eq!(
        column_text(&back, 0),
        column_text(&iris, 0),
        "a round trip keeps every value"
    );

    let err = step(
        &p,
        "cast",
        serde_json::json!({"columns": {"species": "float64"}}),
        &iris,
    )
    .await
    .expect_err("names are not numbers");
    assert_eq!(err.code(), "invalid_input");
    assert!(
        err.to_string()
            .contains(r#"column "species", row 1: cannot cast "Iris-setosa" to float64"#),
        "{err}"
    );
    let err = step(
        &p,
        "cast",
        serde_json::json!({"columns": {"petal_width": "int64"}}),
        &iris,
    )
    .await
    .expect_err("fractions");
    assert_eq!(err.code(), "invalid_input");
    assert!(
        err.to_string()
            .contains(r#"column "petal_width", row 1: cannot cast "0.2""#),
        "{err}"
    );
    let err = step(
        &p,
        "cast",
        serde_json::json!({"columns": {"petal": "int64"}}),
        &iris,
    )
    .await
    .expect_err("unknown column");
    assert_eq!(err.code(), "invalid_params");
    assert!(err.to_string().contains("sepal_length"), "{err}");
    let err = step(
        &p,
        "cast",
        serde_json::json!({"columns": {"species": "decimal"}}),
        &iris,
    )
    .await
    .expect_err("unknown type");
    assert_eq!(err.code(), "invalid_params");

    // The steps compose: keep one species, rename, then make a whole-number column an integer.
    let virginica = step(
        &p,
        "filter",
        serde_json::json!({"column": "species", "op": "eq", "value": "Iris-virginica"}),
        &iris,
    )
    .await
    .expect("filter");
    let renamed = step(
        &p,
        "rename",
        serde_json::json!({"columns": {"petal_length": "pl"}}),
        &virginica,
    )
    .await
    .expect("rename");
    let scaled = step(
        &p,
        "filter",
        serde_json::json!({"column": "pl", "op": "ge", "value": 6}),
        &renamed,
    )
    .await
    .expect("filter again");
    let whole = step(
        &p,
        "filter",
        serde_json::json!({"column": "sepal_width", "op": "eq", "value": 3}),
        &scaled,
    )
    .await
    .expect("whole widths");
    let ints = step(
        &p,
        "cast",
        serde_json::json!({"columns": {"sepal_width": "int64"}}),
        &whole,
    )
    .await
    .expect("cast");
    assert_eq!(types(&ints)[1], DataType::Int64);
    assert!(
        column_text(&ints, 1)
            .iter()
            .all(|v| v.as_deref() == Some("3"))
    );
    assert!(ints.num_rows() > 0);
}

/// A cell of [`wide_csv`] as the CSV has it: by column, an integer, a float, quoted text holding a
/// comma (a doubled quote too every third row), or short text left empty now and then.
fn wide_cell(r: usize, c: usize) -> String {
    match c % 4 {
        0 => ((r * 7 + c) % 1000).to_string(),
        1 => format!("{}.25", (r + c) % 500),
        2 if r.is_multiple_of(3) => format!("\"q\"\"{r},{c}\""),
        2 => format!("\"t{r},{c}\""),
        _ if (r + c).is_multiple_of(5) => String::new(),
        _ => format!("w{c}"),
    }
}

/// The same cell as the parsed table shows it (Arrow's display; an empty cell shows empty).
fn wide_value(r: usize, c: usize) -> String {
    match c % 4 {
        2 if r.is_multiple_of(3) => format!("q\"{r},{c}"),
        2 => format!("t{r},{c}"),
        _ => wide_cell(r, c),
    }
}

/// A CSV of `rows` records of `cols` columns named `c0`, `c1`, ...
fn wide_csv(rows: usize, cols: usize) -> Vec<u8> {
    let mut out = (0..cols)
        .map(|c| format!("c{c}"))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    for r in 0..rows {
        let row: Vec<String> = (0..cols).map(|c| wide_cell(r, c)).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out.into_bytes()
}

/// One cell of a table as text (Arrow's display, null as empty), whatever the batch boundaries.
fn cell_at(t: &Table, row: usize, col: usize) -> String {
    let mut r = row;
    for b in &t.batches {
        if r < b.num_rows() {
            let f = arrow_cast::display::ArrayFormatter::try_new(
                b.column(col).as_ref(),
                &Default::default(),
            )
            .expect("formatter");
            return f.value(r).to_string();
        }
        r -= b.num_rows();
    }
    panic!("row {row} is past the table's {} rows", t.num_rows());
}

/// Issue 22, found 11: a valid CSV of 1,200 columns and about 19 MiB (past the 16 MiB from which
/// a parse is cut into segments) parses on several instances at once into the right table
/// (records of a wide table once came out of the segments with "unequal lengths"): every row,
/// every column with its type, and cells of the first segment (the 1,000 records type inference
/// reads), of later ones and of the last row, as the CSV has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_csv_over_the_cut_size_parses_in_parallel() {
    use lake_host::config::PluginsConfig;
    let cache = shared_cache();
    let parallel = Plugins::open(&PluginsConfig {
        cache_dir: cache.clone(),
        dir: cache.join("none"),
        parse_parallelism: 2,
        ..PluginsConfig::default()
    })
    .expect("plugin runtime");
    let (rows, cols) = (2_400, 1_200);
    let data = wide_csv(rows, cols);
    assert!(
        data.len() > 17 << 20 && data.len() < 20 << 20,
        "past the cut size: {} bytes",
        data.len()
    );
    let inv = parallel
        .parse("csv", Vec::new(), stream(data, 1 << 20))
        .await;
    assert_eq!(
        inv.usage.instances, 3,
        "the head, then two workers: the parse was cut into segments"
    );
    let t = inv.result.expect("the wide CSV parses in segments");
    assert_eq!(t.num_rows(), rows);
    assert_eq!(t.schema.fields().len(), cols);
    assert_eq!(t.schema.field(cols - 1).name(), "c1199");
    for (c, want) in [
        (0, DataType::Int64),
        (1, DataType::Float64),
        (1196, DataType::Int64),
        (1197, DataType::Float64),
    ] {
        assert_eq!(t.schema.field(c).data_type(), &want, "column {c}");
    }
    for c in [2, 3, 1198, 1199] {
        let dt = t.schema.field(c).data_type();
        assert!(
            matches!(
                dt,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ),
            "column {c}: {dt}"
        );
    }
    let mut checked = 0;
    for r in (0..rows).step_by(37).chain([1, 999, 1000, 1001, rows - 1]) {
        for c in [0, 1, 2, 3, 598, 599, 1196, 1197, 1198, 1199] {
            assert_eq!(cell_at(&t, r, c), wide_value(r, c), "row {r}, column {c}");
            checked += 1;
        }
    }
    assert!(checked > 600, "{checked} cells");
}

/// Issue 22, found 5: the widest table the host takes from a plugin is 10,000 columns (the
/// runtime's `MAX_OUTPUT_COLUMNS`, not exported, so spelt out here): a CSV of exactly 10,000
/// columns parses; one of 10,001 is refused as the plugin's invalid output, with an error that
/// names the width and the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_wider_than_the_column_cap_is_refused() {
    let p = open(&shared_cache());
    let csv = |cols: usize| -> Vec<u8> {
        let header: Vec<String> = (0..cols).map(|c| format!("c{c}")).collect();
        let row: Vec<String> = (0..cols).map(|c| (c % 10).to_string()).collect();
        format!(
            "{}\n{}\n{}\n",
            header.join(","),
            row.join(","),
            row.join(",")
        )
        .into_bytes()
    };
    let at_cap = p
        .parse("csv", Vec::new(), stream(csv(10_000), 64 << 10))
        .await
        .result
        .expect("10,000 columns are taken");
    assert_eq!(at_cap.schema.fields().len(), 10_000);
    assert_eq!(at_cap.num_rows(), 2);
    let over = p
        .parse("csv", Vec::new(), stream(csv(10_001), 64 << 10))
        .await
        .result
        .expect_err("10,001 columns are refused");
    assert!(matches!(over, InvokeError::Output(_)), "{over:?}");
    assert_eq!(over.code(), "invalid_output");
    let m = over.to_string();
    assert!(
        m.contains("10001 columns") && m.contains("at most 10000"),
        "the error names the width and the cap: {m}"
    );
}
