//! The bundled `select` step: keeps the named columns of one input table, in the order given.

use std::sync::Arc;

use arrow_schema::{Schema, SchemaRef};
use lake_sdk::{Info, Params, PluginError, RecordBatch, Result, Step};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// Columns to keep, in output order.
    columns: Vec<String>,
}

/// The step state: which input columns make the output.
#[derive(Debug)]
pub struct Select {
    indices: Vec<usize>,
    schema: SchemaRef,
}

impl Step for Select {
    fn info() -> Info {
        Info {
            name: "select",
            version: env!("CARGO_PKG_VERSION"),
            description: "Keep some columns, in the order given",
            capabilities: &[],
        }
    }

    fn start(params: Params, inputs: Vec<SchemaRef>) -> Result<Self> {
        let opts: Options = params.parse()?;
        let [input] = &inputs[..] else {
            return Err(PluginError::InvalidParams(format!(
                "select takes one input table, not {}",
                inputs.len()
            )));
        };
        if opts.columns.is_empty() {
            return Err(PluginError::InvalidParams(
                "columns: name at least one column".into(),
            ));
        }
        let mut indices = Vec::with_capacity(opts.columns.len());
        for c in &opts.columns {
            let i = input.index_of(c).map_err(|_| {
                let names: Vec<&str> = input.fields().iter().map(|f| f.name().as_str()).collect();
                PluginError::InvalidParams(format!("no column {c:?}; the columns are {names:?}"))
            })?;
            indices.push(i);
        }
        let schema = Arc::new(Schema::new(
            indices
                .iter()
                .map(|&i| input.field(i).clone())
                .collect::<Vec<_>>(),
        ));
        Ok(Select { indices, schema })
    }

    fn push(&mut self, _input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        Ok(vec![batch.project(&self.indices)?])
    }

    fn finish(&mut self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        Ok((self.schema.clone(), Vec::new()))
    }
}

lake_sdk::export_step!(crate::Select);

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::{DataType, Field};
    use lake_sdk::arrow_array::{Int64Array, StringArray};

    fn input() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
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

    #[test]
    fn keeps_and_reorders() {
        let b = input();
        let mut s = Select::start(
            Params::from_json(&serde_json::json!({"columns": ["b", "a"]})),
            vec![b.schema()],
        )
        .expect("start");
        let out = s.push(0, b).expect("push");
        assert_eq!(out[0].schema().field(0).name(), "b");
        assert_eq!(out[0].num_columns(), 2);
    }

    #[test]
    fn missing_column_names_the_existing_ones() {
        let err = Select::start(
            Params::from_json(&serde_json::json!({"columns": ["zz"]})),
            vec![input().schema()],
        )
        .expect_err("missing");
        assert!(err.to_string().contains(r#"["a", "b"]"#), "{err}");
    }
}
