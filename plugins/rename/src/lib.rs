//! The bundled `rename` step: renames columns of one input table, keeping their order, types and
//! data.
//!
//! `columns` maps old names to new ones, `{"old": "new"}`. Every old name must exist, and the
//! resulting names must be unique and non-empty; swaps (`{"a": "b", "b": "a"}`) are fine because
//! the check runs on the result.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_schema::{Field, Schema, SchemaRef};
use lake_sdk::{Info, Params, PluginError, RecordBatch, Result, Step};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// Old name to new name.
    columns: BTreeMap<String, String>,
}

/// The step state: the renamed schema every batch is relabelled with.
#[derive(Debug)]
pub struct Rename {
    schema: SchemaRef,
}

impl Step for Rename {
    fn info() -> Info {
        Info {
            name: "rename",
            version: env!("CARGO_PKG_VERSION"),
            description: "Rename columns",
            capabilities: &[],
        }
    }

    fn start(params: Params, inputs: Vec<SchemaRef>) -> Result<Self> {
        let opts: Options = params.parse()?;
        let [input] = &inputs[..] else {
            return Err(PluginError::InvalidParams(format!(
                "rename takes one input table, not {}",
                inputs.len()
            )));
        };
        if opts.columns.is_empty() {
            return Err(PluginError::InvalidParams(
                r#"columns: name at least one column to rename, as {"old": "new"}"#.into(),
            ));
        }
        let names: Vec<&str> = input.fields().iter().map(|f| f.name().as_str()).collect();
        if let Some(missing) = opts
            .columns
            .keys()
            .find(|old| !names.contains(&old.as_str()))
        {
            return Err(PluginError::InvalidParams(format!(
                "columns: no column {missing:?}; the columns are {names:?}"
            )));
        }
        if let Some((old, _)) = opts.columns.iter().find(|(_, new)| new.trim().is_empty()) {
            return Err(PluginError::InvalidParams(format!(
                "columns: the new name for {old:?} is empty"
            )));
        }
        let fields: Vec<Field> = input
            .fields()
            .iter()
            .map(|f| match opts.columns.get(f.name()) {
                Some(new) => f.as_ref().clone().with_name(new),
                None => f.as_ref().clone(),
            })
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        for f in &fields {
            if !seen.insert(f.name().as_str()) {
                let result: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
                return Err(PluginError::InvalidParams(format!(
                    "columns: two columns would be named {:?}; the result would be {result:?}",
                    f.name()
                )));
            }
        }
        Ok(Rename {
            schema: Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())),
        })
    }

    fn push(&mut self, _input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        Ok(vec![RecordBatch::try_new(
            self.schema.clone(),
            batch.columns().to_vec(),
        )?])
    }

    fn finish(&mut self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        Ok((self.schema.clone(), Vec::new()))
    }
}

lake_sdk::export_step!(crate::Rename);

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::DataType;
    use lake_sdk::arrow_array::{Int64Array, StringArray};

    fn input() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec!["x", "y"])),
            ],
        )
        .expect("batch")
    }

    fn start(columns: serde_json::Value) -> Result<Rename> {
        Rename::start(
            Params::from_json(&serde_json::json!({ "columns": columns })),
            vec![input().schema()],
        )
    }

    #[test]
    fn renames_and_keeps_order_types_and_data() {
        let mut s = start(serde_json::json!({"b": "label"})).expect("start");
        let out = s.push(0, input()).expect("push");
        let names: Vec<String> = out[0]
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["a", "label"]);
        assert!(
            !out[0].schema().field(1).is_nullable(),
            "the field keeps its nullability"
        );
        assert_eq!(out[0].column(1), input().column(1));
        assert_eq!(s.finish().expect("finish").0, out[0].schema());
    }

    #[test]
    fn swaps_are_allowed() {
        let s = start(serde_json::json!({"a": "b", "b": "a"})).expect("swap");
        assert_eq!(s.schema.field(0).name(), "b");
        assert_eq!(s.schema.field(0).data_type(), &DataType::Int64);
    }

    #[test]
    fn bad_parameters_are_refused() {
        let e = start(serde_json::json!({"zz": "y"})).expect_err("unknown");
        assert!(
            matches!(&e, PluginError::InvalidParams(m) if m.contains(r#"["a", "b"]"#)),
            "{e}"
        );
        let e = start(serde_json::json!({"a": "b"})).expect_err("duplicate");
        assert!(
            matches!(&e, PluginError::InvalidParams(m) if m.contains(r#"named "b""#)),
            "{e}"
        );
        let e = start(serde_json::json!({"a": " "})).expect_err("empty");
        assert!(
            matches!(&e, PluginError::InvalidParams(m) if m.contains("empty")),
            "{e}"
        );
        let e = start(serde_json::json!({})).expect_err("nothing");
        assert!(matches!(&e, PluginError::InvalidParams(_)), "{e}");
        let e = start(serde_json::json!(["a"])).expect_err("not a map");
        assert!(matches!(&e, PluginError::InvalidParams(_)), "{e}");
    }
}
