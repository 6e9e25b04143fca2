//! The bundled `filter` step: keeps the rows of one input table where a column compares to a value.
//!
//! Parameters: `column`, `op` (`eq`, `ne`, `lt`, `le`, `gt`, `ge`, `is_null`, `not_null`,
//! `contains`) and `value`, a JSON value whose type must suit the column: a number for numeric
//! columns (compared numerically, exactly for integers), a string for text columns (compared by
//! bytes, so `lt` is lexicographic), a boolean for boolean columns, and an ISO 8601 string for
//! date, time and timestamp columns. `contains` finds a substring in a text column; `is_null` and
//! `not_null` take no value. As in SQL, a null cell satisfies no comparison, `ne` included.
//!
//! Comparisons run on Arrow's kernels (`arrow-ord`) batch by batch, and `filter_record_batch`
//! keeps the selected rows, so memory follows the batch size.

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, Scalar, StringArray, UInt64Array,
};
use arrow_cast::{CastOptions, cast, cast_with_options};
use arrow_schema::{DataType, SchemaRef};
use arrow_select::filter::filter_record_batch;
use lake_sdk::{Info, Params, PluginError, RecordBatch, Result, Step};
use serde::Deserialize;

/// The comparison to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    IsNull,
    NotNull,
    Contains,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// The column to test.
    column: String,
    /// The comparison.
    op: Op,
    /// What to compare with; absent for `is_null` and `not_null`. An explicit `null` is kept as
    /// `Some(Null)` so it can be refused with a hint rather than read as "no value".
    #[serde(default, deserialize_with = "present")]
    value: Option<serde_json::Value>,
}

/// Deserializes a field that is present, even as `null`, into `Some`.
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

impl Op {
    /// The name used in the parameters.
    fn name(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Ne => "ne",
            Op::Lt => "lt",
            Op::Le => "le",
            Op::Gt => "gt",
            Op::Ge => "ge",
            Op::IsNull => "is_null",
            Op::NotNull => "not_null",
            Op::Contains => "contains",
        }
    }
}

/// How each batch is tested, decided once from the parameters and the input schema.
#[derive(Debug)]
enum Test {
    /// Keep null cells (`is_null`) or non-null ones (`not_null`).
    Nulls { keep_null: bool },
    /// Compare the column, cast to `cast_to` first when set, with a one-element array.
    Compare {
        op: Op,
        cast_to: Option<DataType>,
        scalar: ArrayRef,
    },
    /// Keep text cells containing `needle`.
    Contains { needle: String },
}

/// The step state.
#[derive(Debug)]
pub struct Filter {
    index: usize,
    test: Test,
    schema: SchemaRef,
}

impl Step for Filter {
    fn info() -> Info {
        Info {
            name: "filter",
            version: env!("CARGO_PKG_VERSION"),
            description: "Keep the rows where a column compares to a value (eq, ne, lt, le, gt, ge, is_null, not_null, contains)",
            capabilities: &[],
        }
    }

    fn start(params: Params, inputs: Vec<SchemaRef>) -> Result<Self> {
        let opts: Options = params.parse()?;
        let [input] = &inputs[..] else {
            return Err(PluginError::InvalidParams(format!(
                "filter takes one input table, not {}",
                inputs.len()
            )));
        };
        let index = input.index_of(&opts.column).map_err(|_| {
            let names: Vec<&str> = input.fields().iter().map(|f| f.name().as_str()).collect();
            PluginError::InvalidParams(format!(
                "column: no column {:?}; the columns are {names:?}",
                opts.column
            ))
        })?;
        let ty = input.field(index).data_type();
        let test = plan(&opts, ty)?;
        Ok(Filter {
            index,
            test,
            schema: input.clone(),
        })
    }

    fn push(&mut self, _input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let column = batch.column(self.index);
        let mask = match &self.test {
            Test::Nulls { keep_null } => {
                let nulls = column.logical_nulls();
                BooleanArray::from_iter(
                    (0..column.len())
                        .map(|i| Some(nulls.as_ref().is_some_and(|n| n.is_null(i)) == *keep_null)),
                )
            }
            Test::Compare {
                op,
                cast_to,
                scalar,
            } => {
                let left = match cast_to {
                    Some(t) => cast(column, t)?,
                    None => column.clone(),
                };
                let right = Scalar::new(scalar.clone());
                match op {
                    Op::Eq => arrow_ord::cmp::eq(&left, &right)?,
                    Op::Ne => arrow_ord::cmp::neq(&left, &right)?,
                    Op::Lt => arrow_ord::cmp::lt(&left, &right)?,
                    Op::Le => arrow_ord::cmp::lt_eq(&left, &right)?,
                    Op::Gt => arrow_ord::cmp::gt(&left, &right)?,
                    Op::Ge => arrow_ord::cmp::gt_eq(&left, &right)?,
                    Op::IsNull | Op::NotNull | Op::Contains => {
                        return Err(PluginError::Internal(format!(
                            "op {} planned as a comparison",
                            op.name()
                        )));
                    }
                }
            }
            Test::Contains { needle } => {
                let text = cast(column, &DataType::Utf8)?;
                let text = text.as_any().downcast_ref::<StringArray>().ok_or_else(|| {
                    PluginError::Internal("a cast to Utf8 did not give a string array".into())
                })?;
                text.iter()
                    .map(|v| v.map(|s| s.contains(needle.as_str())))
                    .collect()
            }
        };
        // Rows where the test is null (a null cell) are dropped, as filter_record_batch does.
        let out = filter_record_batch(&batch, &mask)?;
        Ok(if out.num_rows() == 0 {
            Vec::new()
        } else {
            vec![out]
        })
    }

    fn finish(&mut self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        Ok((self.schema.clone(), Vec::new()))
    }
}

lake_sdk::export_step!(crate::Filter);

/// Decides how to test a column of type `ty`, checking that the value suits it.
fn plan(opts: &Options, ty: &DataType) -> Result<Test> {
    let column = &opts.column;
    let value = opts.value.as_ref();
    match opts.op {
        Op::IsNull | Op::NotNull => {
            if value.is_some() {
                return Err(PluginError::InvalidParams(format!(
                    "value: op {} takes no value",
                    opts.op.name()
                )));
            }
            return Ok(Test::Nulls {
                keep_null: opts.op == Op::IsNull,
            });
        }
        _ => {}
    }
    let value = match value {
        None => {
            return Err(PluginError::InvalidParams(format!(
                "value: op {} needs a value to compare column {column:?} with",
                opts.op.name()
            )));
        }
        Some(serde_json::Value::Null) => {
            return Err(PluginError::InvalidParams(
                "value: null compares with nothing; use op is_null or not_null".into(),
            ));
        }
        Some(v) => v,
    };
    let wrong = |want: &str| {
        PluginError::InvalidParams(format!(
            "value: column {column:?} is {ty}, so the value must be {want}, not {value}"
        ))
    };
    let text = matches!(
        ty,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    );
    if opts.op == Op::Contains {
        if !text {
            return Err(PluginError::InvalidParams(format!(
                "op contains needs a text column; column {column:?} is {ty}"
            )));
        }
        let needle = value.as_str().ok_or_else(|| wrong("a string"))?;
        return Ok(Test::Contains {
            needle: needle.to_owned(),
        });
    }
    let op = opts.op;
    let one = |cast_to: Option<DataType>, scalar: ArrayRef| {
        Ok(Test::Compare {
            op,
            cast_to,
            scalar,
        })
    };
    if ty.is_integer()
        || ty.is_floating()
        || matches!(
            ty,
            DataType::Decimal32(..)
                | DataType::Decimal64(..)
                | DataType::Decimal128(..)
                | DataType::Decimal256(..)
        )
    {
        let serde_json::Value::Number(n) = value else {
            return Err(wrong("a number"));
        };
        // Integers compare exactly as 64-bit integers; anything else compares as f64.
        if ty.is_signed_integer()
            && let Some(i) = n.as_i64()
        {
            return one(
                (ty != &DataType::Int64).then_some(DataType::Int64),
                Arc::new(Int64Array::from(vec![i])),
            );
        }
        if ty.is_unsigned_integer()
            && let Some(u) = n.as_u64()
        {
            return one(
                (ty != &DataType::UInt64).then_some(DataType::UInt64),
                Arc::new(UInt64Array::from(vec![u])),
            );
        }
        let f = n.as_f64().ok_or_else(|| wrong("a finite number"))?;
        return one(
            (ty != &DataType::Float64).then_some(DataType::Float64),
            Arc::new(Float64Array::from(vec![f])),
        );
    }
    if text {
        let s = value.as_str().ok_or_else(|| wrong("a string"))?;
        return one(None, cast(&StringArray::from(vec![s]), ty)?);
    }
    if ty == &DataType::Boolean {
        let b = value.as_bool().ok_or_else(|| wrong("true or false"))?;
        return one(None, Arc::new(BooleanArray::from(vec![b])));
    }
    if ty.is_temporal() {
        let s = value.as_str().ok_or_else(|| wrong("an ISO 8601 string"))?;
        let strict = CastOptions {
            safe: false,
            ..CastOptions::default()
        };
        let scalar = cast_with_options(&StringArray::from(vec![s]), ty, &strict).map_err(|e| {
            PluginError::InvalidParams(format!(
                "value: {s:?} is not a valid {ty} for column {column:?}: {e}"
            ))
        })?;
        return one(None, scalar);
    }
    Err(PluginError::Unsupported(format!(
        "filter cannot compare column {column:?} of type {ty}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::{Date32Array, Float32Array, UInt8Array};
    use arrow_schema::{Field, Schema};

    fn input() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("i", DataType::Int64, true),
            Field::new("f", DataType::Float32, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("d", DataType::Date32, true),
            Field::new("u", DataType::UInt8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![
                    Some(1),
                    Some(2),
                    None,
                    Some(4),
                    Some(i64::MAX),
                ])),
                Arc::new(Float32Array::from(vec![
                    Some(0.5),
                    Some(1.5),
                    Some(2.5),
                    None,
                    Some(-1.0),
                ])),
                Arc::new(StringArray::from(vec![
                    Some("apple"),
                    Some("banana"),
                    None,
                    Some("cherry"),
                    Some("grape"),
                ])),
                Arc::new(BooleanArray::from(vec![
                    Some(true),
                    Some(false),
                    Some(true),
                    None,
                    Some(false),
                ])),
                Arc::new(Date32Array::from(vec![
                    Some(0),
                    Some(19_000),
                    None,
                    Some(20_000),
                    Some(-1),
                ])),
                Arc::new(UInt8Array::from(vec![
                    Some(0),
                    Some(200),
                    Some(255),
                    None,
                    Some(1),
                ])),
            ],
        )
        .expect("batch")
    }

    /// The values of column `i` in the rows kept.
    fn run(params: serde_json::Value) -> Result<Vec<Option<i64>>> {
        let b = input();
        let mut s = Filter::start(Params::from_json(&params), vec![b.schema()])?;
        let mut out = s.push(0, b)?;
        let (schema, rest) = s.finish()?;
        out.extend(rest);
        assert!(out.iter().all(|o| o.schema() == schema));
        Ok(out
            .iter()
            .flat_map(|o| {
                o.column(0)
                    .as_primitive::<Int64Type>()
                    .iter()
                    .collect::<Vec<_>>()
            })
            .collect())
    }

    #[test]
    fn numeric_comparisons() {
        let r = |op: &str, v: serde_json::Value| {
            run(serde_json::json!({"column": "i", "op": op, "value": v})).expect("filter")
        };
        assert_eq!(r("eq", 2.into()), [Some(2)]);
        assert_eq!(
            r("ne", 2.into()),
            [Some(1), Some(4), Some(i64::MAX)],
            "a null cell is not unequal"
        );
        assert_eq!(r("lt", 2.into()), [Some(1)]);
        assert_eq!(r("le", 2.into()), [Some(1), Some(2)]);
        assert_eq!(
            r("gt", serde_json::json!(1.5)),
            [Some(2), Some(4), Some(i64::MAX)]
        );
        assert_eq!(
            r("ge", serde_json::json!(i64::MAX)),
            [Some(i64::MAX)],
            "integers compare exactly"
        );
        let f = |op: &str, v: f64| {
            run(serde_json::json!({"column": "f", "op": op, "value": v})).expect("filter")
        };
        assert_eq!(f("gt", 1.0), [Some(2), None]);
        let u = |op: &str, v: i64| {
            run(serde_json::json!({"column": "u", "op": op, "value": v})).expect("filter")
        };
        assert_eq!(u("ge", 200), [Some(2), None]);
        assert_eq!(
            u("gt", -1),
            [Some(1), Some(2), None, Some(i64::MAX)],
            "a negative bound on an unsigned column"
        );
    }

    #[test]
    fn text_bool_date_and_null_tests() {
        let r = |p: serde_json::Value| run(p).expect("filter");
        assert_eq!(
            r(serde_json::json!({"column": "s", "op": "eq", "value": "banana"})),
            [Some(2)]
        );
        assert_eq!(
            r(serde_json::json!({"column": "s", "op": "lt", "value": "c"})),
            [Some(1), Some(2)]
        );
        assert_eq!(
            r(serde_json::json!({"column": "s", "op": "contains", "value": "an"})),
            [Some(2)]
        );
        assert_eq!(
            r(serde_json::json!({"column": "b", "op": "eq", "value": true})),
            [Some(1), None]
        );
        assert_eq!(
            r(serde_json::json!({"column": "d", "op": "ge", "value": "2022-01-09"})),
            [Some(4)]
        );
        assert_eq!(
            r(serde_json::json!({"column": "s", "op": "is_null"})),
            [None]
        );
        assert_eq!(
            r(serde_json::json!({"column": "i", "op": "not_null"})),
            [Some(1), Some(2), Some(4), Some(i64::MAX)]
        );
    }

    #[test]
    fn bad_parameters_are_refused_at_start() {
        let err = |p: serde_json::Value| run(p).expect_err("refused");
        let e = err(serde_json::json!({"column": "zz", "op": "eq", "value": 1}));
        assert!(
            matches!(&e, PluginError::InvalidParams(m) if m.contains(r#"["i", "f", "s", "b", "d", "u"]"#)),
            "{e}"
        );
        let e = err(serde_json::json!({"column": "i", "op": "eq", "value": "2"}));
        assert!(
            matches!(&e, PluginError::InvalidParams(m) if m.contains("must be a number")),
            "{e}"
        );
        let e = err(serde_json::json!({"column": "s", "op": "eq", "value": 2}));
        assert!(
            matches!(&e, PluginError::InvalidParams(m) if m.contains("must be a string")),
            "{e}"
        );
        let e = err(serde_json::json!({"column": "b", "op": "eq", "value": "yes"}));
        assert!(
            matches!(&e, PluginError::InvalidParams(m) if m.contains("true or false")),
            "{e}"
        );
        let e = err(serde_json::json!({"column": "d", "op": "eq", "value": "yesterday"}));
        assert!(
            matches!(&e, PluginError::InvalidParams(m) if m.contains("yesterday")),
            "{e}"
        );
        let e = err(serde_json::json!({"column": "i", "op": "contains", "value": "1"}));
        assert!(
            matches!(&e, PluginError::InvalidParams(m) if m.contains("text column")),
            "{e}"
        );
        let e = err(serde_json::json!({"column": "i", "op": "eq"}));
        assert!(
            matches!(&e, PluginError::InvalidParams(m) if m.contains("needs a value")),
            "{e}"
        );
        let e = err(serde_json::json!({"column": "i", "op": "eq", "value": null}));
        assert!(
            matches!(&e, PluginError::InvalidParams(m) if m.contains("is_null")),
            "{e}"
        );
        let e = err(serde_json::json!({"column": "i", "op": "is_null", "value": 1}));
        assert!(
            matches!(&e, PluginError::InvalidParams(m) if m.contains("no value")),
            "{e}"
        );
        let e = err(serde_json::json!({"column": "i", "op": "like", "value": 1}));
        assert!(
            matches!(&e, PluginError::InvalidParams(m) if m.contains("like")),
            "{e}"
        );
    }
}
