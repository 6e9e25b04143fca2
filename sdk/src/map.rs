//! The short way to write a step: [`MapBatches`], one output batch per input batch, run by
//! [`PerBatch`].

use serde::de::DeserializeOwned;

use crate::{Info, Params, PluginError, RecordBatch, Result, SchemaRef, Step};

/// A step over one input table that maps each batch to one output batch. The struct is its own
/// parameters: by default [`MapBatches::start`] reads the run's parameters into it with serde
/// (mark state fields `#[serde(skip)]`). Export it as
/// `lake_sdk::export_step!(lake_sdk::PerBatch<crate::MyStep>)`.
///
/// ```
/// use lake_sdk::{MapBatches, RecordBatch, Result};
///
/// #[derive(serde::Deserialize)]
/// pub struct Head {
///     rows: usize,
/// }
///
/// impl MapBatches for Head {
///     fn map(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
///         let keep = self.rows.min(batch.num_rows());
///         self.rows -= keep;
///         Ok(batch.slice(0, keep))
///     }
/// }
/// ```
pub trait MapBatches: DeserializeOwned + 'static {
    /// Name, version, description; by default those of the crate's `Cargo.toml` (see [`Info`]).
    fn info() -> Info {
        Info::default()
    }
    /// Starts a run over an input with this schema. By default reads the parameters into `Self`;
    /// override it to check the input's columns too.
    fn start(params: Params, input: &SchemaRef) -> Result<Self> {
        let _ = input;
        params.parse()
    }
    /// Maps one batch of the input to one batch of the output. Every output batch must have the
    /// same columns; the output schema of an empty input is that of an empty batch mapped.
    fn map(&mut self, batch: RecordBatch) -> Result<RecordBatch>;
}

/// Runs a [`MapBatches`] as a [`Step`] over exactly one input table.
#[derive(Debug)]
pub struct PerBatch<S> {
    step: S,
    input: SchemaRef,
    output: Option<SchemaRef>,
}

impl<S> PerBatch<S> {
    /// The step inside.
    pub fn inner(&self) -> &S {
        &self.step
    }
}

impl<S: MapBatches> Step for PerBatch<S> {
    fn info() -> Info {
        S::info()
    }

    fn start(params: Params, inputs: Vec<SchemaRef>) -> Result<Self> {
        let [input] = &inputs[..] else {
            return Err(PluginError::InvalidParams(format!(
                "this step takes one input table, not {}",
                inputs.len()
            )));
        };
        Ok(PerBatch {
            step: S::start(params, input)?,
            input: input.clone(),
            output: None,
        })
    }

    fn push(&mut self, _input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let out = self.step.map(batch)?;
        match &self.output {
            Some(schema) if schema.fields() != out.schema().fields() => {
                return Err(PluginError::Internal(format!(
                    "a batch came out with columns {:?} after {:?}",
                    out.schema().fields(),
                    schema.fields()
                )));
            }
            Some(_) => {}
            None => self.output = Some(out.schema()),
        }
        Ok(if out.num_rows() == 0 {
            Vec::new()
        } else {
            vec![out]
        })
    }

    fn finish(&mut self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let schema = match &self.output {
            Some(s) => s.clone(),
            None => self
                .step
                .map(RecordBatch::new_empty(self.input.clone()))?
                .schema(),
        };
        Ok((schema, Vec::new()))
    }
}
