//! Runs plugins natively in unit tests, as the host would run the component: a parser over bytes,
//! a step over tables, and the resulting [`Table`] to inspect. Compiled for native targets only,
//! never into a component.
//!
//! ```
//! use lake_sdk::{ByLine, LineParser, RecordBatch, Result, arrow_array::builder::StringBuilder};
//!
//! #[derive(Default)]
//! struct Lines(StringBuilder);
//!
//! impl LineParser for Lines {
//!     fn line(&mut self, line: &str) -> Result<()> {
//!         self.0.append_value(line);
//!         Ok(())
//!     }
//!     fn batch(&mut self) -> Result<RecordBatch> {
//!         lake_sdk::batch!("line" => self.0.finish())
//!     }
//! }
//!
//! let table = lake_sdk::testing::parse::<ByLine<Lines>>((), b"one\ntwo\n").expect("parse");
//! assert_eq!(table.values("line"), ["one", "two"]);
//! ```

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;

use crate::{Params, Parser, PluginError, Result, Step};

/// A table a plugin produced (or a step's input): its schema and batches.
#[derive(Debug, Clone)]
pub struct Table {
    /// The table's schema (what `finish` returned).
    pub schema: SchemaRef,
    /// The batches, in order.
    pub batches: Vec<RecordBatch>,
}

impl From<RecordBatch> for Table {
    fn from(batch: RecordBatch) -> Self {
        Table {
            schema: batch.schema(),
            batches: vec![batch],
        }
    }
}

impl Table {
    /// A table of these batches, which must have this schema.
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        Table { schema, batches }
    }

    /// The number of rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// The column names, in order.
    pub fn column_names(&self) -> Vec<&str> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect()
    }

    /// All the batches as one.
    pub fn batch(&self) -> RecordBatch {
        match arrow_select::concat::concat_batches(&self.schema, &self.batches) {
            Ok(b) => b,
            Err(e) => panic!("the batches do not share the table's schema: {e}"),
        }
    }

    /// One column, all batches concatenated; panics if there is no such column. Downcast it with
    /// `lake_sdk::arrow_array::cast::AsArray` (`column("n").as_primitive::<UInt64Type>()`).
    pub fn column(&self, name: &str) -> ArrayRef {
        match self.batch().column_by_name(name) {
            Some(c) => c.clone(),
            None => panic!(
                "no column {name:?}; the columns are {:?}",
                self.column_names()
            ),
        }
    }

    /// One column's values as text, as Arrow displays them (a null is the empty string).
    pub fn values(&self, name: &str) -> Vec<String> {
        let column = self.column(name);
        let options = arrow_cast::display::FormatOptions::default();
        let formatter = match arrow_cast::display::ArrayFormatter::try_new(&column, &options) {
            Ok(f) => f,
            Err(e) => panic!("cannot display column {name:?}: {e}"),
        };
        (0..column.len())
            .map(|i| formatter.value(i).to_string())
            .collect()
    }
}

/// Runs a parser over `input` in one chunk, with these parameters (`()` for none,
/// `[("name", "value")]`, or a `serde_json::Value` object).
pub fn parse<P: Parser>(params: impl Into<Params>, input: &[u8]) -> Result<Table> {
    parse_chunks::<P>(params, [input])
}

/// Runs a parser over its input cut into these chunks, as the host feeds it.
pub fn parse_chunks<P: Parser>(
    params: impl Into<Params>,
    chunks: impl IntoIterator<Item = impl AsRef<[u8]>>,
) -> Result<Table> {
    let mut parser = P::start(params.into())?;
    let mut batches = Vec::new();
    for chunk in chunks {
        batches.extend(parser.push(chunk.as_ref())?);
    }
    let (schema, rest) = parser.finish()?;
    batches.extend(rest);
    output(schema, batches)
}

/// Runs a step over these input tables (a `RecordBatch` converts into a one-batch table).
pub fn step<S: Step>(
    params: impl Into<Params>,
    inputs: impl IntoIterator<Item = impl Into<Table>>,
) -> Result<Table> {
    let inputs: Vec<Table> = inputs.into_iter().map(Into::into).collect();
    let mut step = S::start(
        params.into(),
        inputs.iter().map(|t| t.schema.clone()).collect(),
    )?;
    let mut batches = Vec::new();
    for (i, table) in inputs.into_iter().enumerate() {
        for batch in table.batches {
            batches.extend(step.push(i, batch)?);
        }
    }
    let (schema, rest) = step.finish()?;
    batches.extend(rest);
    output(schema, batches)
}

/// Checks the output as the host does (every batch has the table's columns) and sends each batch
/// through Arrow IPC, as it crosses the component boundary.
fn output(schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<Table> {
    let mut out = Vec::with_capacity(batches.len());
    for (i, batch) in batches.into_iter().enumerate() {
        if batch.schema().fields() != schema.fields() {
            return Err(PluginError::Internal(format!(
                "output batch {i} has the columns {:?}, but finish returned {:?}",
                batch.schema().fields(),
                schema.fields()
            )));
        }
        let bytes = crate::table::to_ipc(&batch.schema(), std::slice::from_ref(&batch))?;
        out.extend(crate::table::from_ipc(bytes)?.1);
    }
    Ok(Table {
        schema,
        batches: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arrow_array::builder::StringBuilder;
    use crate::arrow_array::cast::AsArray;
    use crate::arrow_array::types::UInt64Type;
    use crate::arrow_array::{StringArray, UInt64Array};
    use crate::{ByLine, LineParser, MapBatches, PerBatch};

    #[derive(Default)]
    struct Lines(StringBuilder);

    impl LineParser for Lines {
        fn line(&mut self, line: &str) -> Result<()> {
            if line == "bad" {
                return Err(PluginError::InvalidInput("a bad line".into()));
            }
            self.0.append_value(line);
            Ok(())
        }
        fn batch(&mut self) -> Result<RecordBatch> {
            crate::batch!("line" => self.0.finish())
        }
    }

    #[derive(serde::Deserialize)]
    struct Numbers {
        column: String,
        #[serde(skip)]
        rows: u64,
    }

    impl MapBatches for Numbers {
        fn map(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
            let n = batch.num_rows() as u64;
            let numbers = UInt64Array::from_iter_values(self.rows + 1..=self.rows + n);
            self.rows += n;
            crate::table::append(batch, &self.column, numbers)
        }
    }

    #[test]
    fn a_line_parser_sees_whole_lines_whatever_the_chunks() {
        let input = "\u{feff}first li\r\nsecond\n\nthird";
        for size in 1..input.len() {
            let t =
                parse_chunks::<ByLine<Lines>>((), input.as_bytes().chunks(size)).expect("parse");
            assert_eq!(t.values("line"), ["first li", "second", "", "third"]);
            assert_eq!(t.column_names(), ["line"]);
        }
    }

    #[test]
    fn a_line_parser_names_the_line_of_an_error_and_refuses_parameters() {
        let e = parse::<ByLine<Lines>>((), b"ok\nbad\n").expect_err("bad line");
        assert_eq!(e, PluginError::InvalidInput("line 2: a bad line".into()));
        let e = parse::<ByLine<Lines>>((), b"ok\n\xff\n").expect_err("not UTF-8");
        assert!(e.to_string().contains("line 2: not UTF-8"), "{e}");
        let e = parse::<ByLine<Lines>>([("x", "1")], b"").expect_err("params");
        assert!(matches!(e, PluginError::InvalidParams(_)), "{e}");
    }

    #[test]
    fn an_empty_input_still_has_its_schema() {
        let t = parse::<ByLine<Lines>>((), b"").expect("parse");
        assert_eq!((t.num_rows(), t.column_names()), (0, vec!["line"]));
        let t = step::<PerBatch<Numbers>>(
            [("column", "n")],
            [Table::new(t.schema.clone(), Vec::new())],
        )
        .expect("step");
        assert_eq!((t.num_rows(), t.column_names()), (0, vec!["line", "n"]));
    }

    #[test]
    fn a_per_batch_step_maps_every_batch_and_reads_its_parameters() {
        let batch = crate::batch!("name" => StringArray::from(vec!["a", "b"])).expect("batch");
        let input = Table::new(batch.schema(), vec![batch.clone(), batch]);
        let t = step::<PerBatch<Numbers>>(serde_json::json!({"column": "n"}), [input.clone()])
            .expect("step");
        assert_eq!(
            t.column("n").as_primitive::<UInt64Type>().values(),
            &[1, 2, 3, 4]
        );
        assert_eq!(t.values("name"), ["a", "b", "a", "b"]);
        let e = step::<PerBatch<Numbers>>((), [input.clone()]).expect_err("no column");
        assert!(e.to_string().contains("column"), "{e}");
        let e = step::<PerBatch<Numbers>>([("column", "n")], [input.clone(), input])
            .expect_err("two inputs");
        assert!(e.to_string().contains("one input table, not 2"), "{e}");
    }

    #[test]
    fn info_defaults_to_the_package() {
        let info = <ByLine<Lines> as Parser>::info().or_package("lines", "1.2.3", "", "parser");
        assert_eq!(
            (info.name, info.version, info.description),
            ("lines", "1.2.3", "A lake parser")
        );
        let own = crate::Info {
            description: "Mine",
            ..crate::Info::default()
        }
        .or_package("lines", "1.2.3", "From Cargo", "step");
        assert_eq!((own.name, own.description), ("lines", "Mine"));
    }
}
