//! The bundled `cast` step: changes the types of some columns of one input table.
//!
//! `columns` maps column names to types: `int64`, `float64`, `utf8`, `boolean`, `date32` or
//! `timestamp` (microseconds, no time zone), with the same aliases as the CSV parser's `types`.
//! Conversions are arrow-cast's, run strictly (`safe: false`): a value that does not convert, such
//! as `"abc"` to `float64` or `1e20` to `int64`, fails the run with an error naming the column, the
//! row and the value, instead of silently becoming null. A float with a fraction is refused for
//! `int64` too, where arrow-cast alone would truncate it.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_cast::{CastOptions, can_cast_types, cast_with_options};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use lake_sdk::{Info, Params, PluginError, RecordBatch, Result, Step};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// Column name to type name.
    columns: BTreeMap<String, String>,
}

/// The type names accepted, for error messages.
const TYPES: &str = lake_sdk::table::TYPE_NAMES;

fn data_type(name: &str) -> Option<DataType> {
    lake_sdk::table::type_named(name)
}

/// One column to convert.
#[derive(Debug)]
struct Conversion {
    index: usize,
    name: String,
    to: DataType,
    /// The type name as the parameters gave it, for messages.
    to_name: String,
}

/// The step state.
#[derive(Debug)]
pub struct Cast {
    conversions: Vec<Conversion>,
    schema: SchemaRef,
    /// Rows seen in earlier batches, so errors give the row in the whole table.
    rows_before: usize,
}

impl Step for Cast {
    fn info() -> Info {
        Info {
            name: "cast",
            version: env!("CARGO_PKG_VERSION"),
            description: "Change column types (int64, float64, utf8, boolean, date32, timestamp); a value that does not convert is an error",
            capabilities: &[],
        }
    }

    fn start(params: Params, inputs: Vec<SchemaRef>) -> Result<Self> {
        let opts: Options = params.parse()?;
        let [input] = &inputs[..] else {
            return Err(PluginError::InvalidParams(format!(
                "cast takes one input table, not {}",
                inputs.len()
            )));
        };
        if opts.columns.is_empty() {
            return Err(PluginError::InvalidParams(
                r#"columns: name at least one column, as {"column": "int64"}"#.into(),
            ));
        }
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut conversions = Vec::with_capacity(opts.columns.len());
        for (name, type_name) in &opts.columns {
            let index = input.index_of(name).map_err(|_| {
                let names: Vec<&str> = input.fields().iter().map(|f| f.name().as_str()).collect();
                PluginError::InvalidParams(format!(
                    "columns: no column {name:?}; the columns are {names:?}"
                ))
            })?;
            let to = data_type(type_name).ok_or_else(|| {
                PluginError::InvalidParams(format!(
                    "columns: unknown type {type_name:?} for column {name:?}; the types are {TYPES}"
                ))
            })?;
            let from = input.field(index).data_type();
            if !can_cast_types(from, &to) {
                return Err(PluginError::InvalidParams(format!(
                    "columns: column {name:?} is {from}, which cannot be cast to {type_name}"
                )));
            }
            fields[index] = fields[index].clone().with_data_type(to.clone());
            conversions.push(Conversion {
                index,
                name: name.clone(),
                to,
                to_name: type_name.clone(),
            });
        }
        let schema = Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()));
        Ok(Cast {
            conversions,
            schema,
            rows_before: 0,
        })
    }

    fn push(&mut self, _input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let mut columns = batch.columns().to_vec();
        for c in &self.conversions {
            columns[c.index] = convert(c, &columns[c.index], self.rows_before)?;
        }
        self.rows_before += batch.num_rows();
        Ok(vec![RecordBatch::try_new(self.schema.clone(), columns)?])
    }

    fn finish(&mut self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        Ok((self.schema.clone(), Vec::new()))
    }
}

lake_sdk::export_step!(crate::Cast);

/// Converts one column of one batch; `rows_before` is the table row of the batch's first row.
fn convert(c: &Conversion, array: &ArrayRef, rows_before: usize) -> Result<ArrayRef> {
    if array.data_type() == &c.to {
        return Ok(array.clone());
    }
    let bad = |row: usize, why: &str| {
        let value = ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default())
            .map_or_else(|_| "?".to_owned(), |f| f.value(row).to_string());
        PluginError::InvalidInput(format!(
            "column {:?}, row {}: cannot cast {value:?} to {}: {why}",
            c.name,
            rows_before + row + 1,
            c.to_name
        ))
    };
    // arrow-cast truncates floats towards zero on the way to integers; a fraction is data loss.
    if array.data_type().is_floating() && c.to.is_integer() {
        let floats = cast_with_options(array, &DataType::Float64, &CastOptions::default())?;
        let floats = floats
            .as_any()
            .downcast_ref::<arrow_array::Float64Array>()
            .ok_or_else(|| {
                PluginError::Internal("a cast to Float64 did not give a Float64 array".into())
            })?;
        if let Some(row) =
            (0..floats.len()).find(|&i| floats.is_valid(i) && floats.value(i).fract() != 0.0)
        {
            return Err(bad(row, "it has a fractional part"));
        }
    }
    let strict = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    cast_with_options(array, &c.to, &strict).map_err(|e| {
        // The strict cast says why but not where: a lenient cast turns exactly the bad values into
        // nulls, so the first new null is the first bad value.
        let lenient = cast_with_options(array, &c.to, &CastOptions::default());
        match lenient
            .ok()
            .and_then(|l| (0..array.len()).find(|&i| array.is_valid(i) && l.is_null(i)))
        {
            Some(row) => bad(row, &e.to_string()),
            None => PluginError::InvalidInput(format!(
                "column {:?}: cannot cast to {}: {e}",
                c.name, c.to_name
            )),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Date32Type, Float64Type, Int64Type, TimestampMicrosecondType};
    use arrow_array::{Float64Array, StringArray};

    fn input() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Utf8, true),
            Field::new("f", DataType::Float64, true),
            Field::new("d", DataType::Utf8, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("1"), None, Some("-3")])),
                Arc::new(Float64Array::from(vec![Some(1.0), Some(2.5), None])),
                Arc::new(StringArray::from(vec![
                    Some("2024-02-29"),
                    Some("1970-01-02"),
                    None,
                ])),
                Arc::new(StringArray::from(vec![Some("true"), Some("false"), None])),
            ],
        )
        .expect("batch")
    }

    fn run(columns: serde_json::Value, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        let mut s = Cast::start(
            Params::from_json(&serde_json::json!({ "columns": columns })),
            vec![input().schema()],
        )?;
        let mut out = Vec::new();
        for b in batches {
            out.extend(s.push(0, b)?);
        }
        let (schema, rest) = s.finish()?;
        out.extend(rest);
        assert!(out.iter().all(|b| b.schema() == schema));
        Ok(out)
    }

    #[test]
    fn converts_the_named_columns() {
        let out = run(
            serde_json::json!({"n": "int64", "f": "utf8", "d": "date", "b": "boolean"}),
            vec![input()],
        )
        .expect("cast");
        let b = &out[0];
        assert_eq!(
            b.column(0)
                .as_primitive::<Int64Type>()
                .iter()
                .collect::<Vec<_>>(),
            [Some(1), None, Some(-3)]
        );
        assert_eq!(
            b.column(1).as_string::<i32>().iter().collect::<Vec<_>>(),
            [Some("1.0"), Some("2.5"), None]
        );
        assert_eq!(
            b.column(2)
                .as_primitive::<Date32Type>()
                .iter()
                .collect::<Vec<_>>(),
            [Some(19_782), Some(1), None]
        );
        assert_eq!(
            b.column(3).as_boolean().iter().collect::<Vec<_>>(),
            [Some(true), Some(false), None]
        );

        let out = run(
            serde_json::json!({"n": "float64", "d": "timestamp"}),
            vec![input()],
        )
        .expect("cast");
        assert_eq!(
            out[0].column(0).as_primitive::<Float64Type>().value(2),
            -3.0
        );
        assert_eq!(
            out[0]
                .column(2)
                .as_primitive::<TimestampMicrosecondType>()
                .value(1),
            86_400_000_000
        );
    }

    #[test]
    fn a_bad_value_names_column_row_and_value() {
        let e = run(serde_json::json!({"d": "int64"}), vec![input()])
            .expect_err("dates are not integers");
        assert!(
            matches!(&e, PluginError::InvalidInput(m) if m.contains(r#"column "d", row 1: cannot cast "2024-02-29" to int64"#)),
            "{e}"
        );
        // The row counts across batches.
        let e = run(serde_json::json!({"f": "int64"}), vec![input(), input()])
            .expect_err("2.5 has a fraction");
        assert!(
            matches!(&e, PluginError::InvalidInput(m) if m.contains(r#"column "f", row 2: cannot cast "2.5""#)),
            "{e}"
        );
        let e = run(serde_json::json!({"b": "date32"}), vec![input()]).expect_err("not dates");
        assert!(
            matches!(&e, PluginError::InvalidInput(m) if m.contains(r#""true""#)),
            "{e}"
        );
    }

    #[test]
    fn bad_parameters_are_refused() {
        let e = run(serde_json::json!({"zz": "int64"}), vec![]).expect_err("unknown column");
        assert!(
            matches!(&e, PluginError::InvalidParams(m) if m.contains(r#"["n", "f", "d", "b"]"#)),
            "{e}"
        );
        let e = run(serde_json::json!({"n": "int32"}), vec![]).expect_err("unknown type");
        assert!(
            matches!(&e, PluginError::InvalidParams(m) if m.contains(TYPES)),
            "{e}"
        );
        let e = run(serde_json::json!({}), vec![]).expect_err("nothing to do");
        assert!(matches!(&e, PluginError::InvalidParams(_)), "{e}");
    }
}
