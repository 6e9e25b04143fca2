//! Arrow helpers: tables to and from the IPC stream bytes that cross the component boundary.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};

use crate::PluginError;

/// Encodes a schema and batches as one Arrow IPC stream (uncompressed).
pub fn to_ipc(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, PluginError> {
    // Sized for the buffers up front, so that a large batch is not copied while the vector grows.
    let size: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
    let mut out = Vec::with_capacity(size + 4096);
    {
        let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, schema)
            .map_err(|e| PluginError::Internal(format!("encoding the schema: {e}")))?;
        for b in batches {
            w.write(b)
                .map_err(|e| PluginError::Internal(format!("encoding a batch: {e}")))?;
        }
        w.finish()
            .map_err(|e| PluginError::Internal(format!("ending the stream: {e}")))?;
    }
    Ok(out)
}

/// Decodes one Arrow IPC stream into its schema and batches, with full validation. The arrays are
/// slices of `bytes` (no second copy of the values).
pub fn from_ipc(bytes: Vec<u8>) -> Result<(SchemaRef, Vec<RecordBatch>), PluginError> {
    decode(bytes, arrow_ipc::reader::StreamDecoder::new())
}

/// Decodes an IPC stream that the host sent, as [`from_ipc`] but without checking every value
/// again (UTF-8, offsets): the host sends only arrays it built or validated itself, and checking
/// them in the guest cost about a tenth of a large merge.
#[cfg(feature = "step")]
#[allow(unsafe_code)]
pub(crate) fn from_host_ipc(bytes: Vec<u8>) -> Result<(SchemaRef, Vec<RecordBatch>), PluginError> {
    // SAFETY: the bytes come from the host's Arrow IPC writer over arrays that are valid (the host
    // runtime's `encode`), written into this instance's memory by the host alone.
    let decoder = unsafe { arrow_ipc::reader::StreamDecoder::new().with_skip_validation(true) };
    decode(bytes, decoder)
}

fn decode(
    bytes: Vec<u8>,
    mut decoder: arrow_ipc::reader::StreamDecoder,
) -> Result<(SchemaRef, Vec<RecordBatch>), PluginError> {
    let bad =
        |e: arrow_schema::ArrowError| PluginError::InvalidInput(format!("reading Arrow IPC: {e}"));
    let mut buffer = arrow_buffer::Buffer::from_vec(bytes);
    let mut batches = Vec::new();
    while !buffer.is_empty() {
        batches.extend(decoder.decode(&mut buffer).map_err(bad)?);
    }
    decoder.finish().map_err(bad)?;
    let schema = decoder
        .schema()
        .ok_or_else(|| PluginError::InvalidInput("reading Arrow IPC: no schema".into()))?;
    Ok((schema, batches))
}

/// An empty schema, for plugins that produce no columns.
pub fn empty_schema() -> SchemaRef {
    Arc::new(Schema::empty())
}

/// The column type names plugins accept in parameters, for error messages.
pub const TYPE_NAMES: &str = "utf8, int64, float64, boolean, date32, timestamp";

/// The Arrow type a parameter names: `utf8` (`string`, `text`), `int64` (`integer`, `int`),
/// `float64` (`float`, `double`), `boolean` (`bool`), `date32` (`date`), `timestamp`
/// (microseconds, no zone). Case-insensitive; `None` for anything else.
pub fn type_named(name: &str) -> Option<arrow_schema::DataType> {
    use arrow_schema::{DataType, TimeUnit};
    Some(match name.to_ascii_lowercase().as_str() {
        "utf8" | "string" | "text" => DataType::Utf8,
        "int64" | "integer" | "int" => DataType::Int64,
        "float64" | "float" | "double" => DataType::Float64,
        "boolean" | "bool" => DataType::Boolean,
        "date32" | "date" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        _ => return None,
    })
}

/// Adds a column to the end of a batch: `append(batch, "row_number", UInt64Array::from(...))`.
/// The new column is nullable, so every batch a step builds this way has the same schema. A name
/// the batch has already is [`PluginError::InvalidParams`].
pub fn append(
    batch: RecordBatch,
    name: &str,
    column: impl arrow_array::Array + 'static,
) -> Result<RecordBatch, PluginError> {
    let schema = batch.schema();
    if schema.index_of(name).is_ok() {
        return Err(PluginError::InvalidParams(format!(
            "the input already has a column {name:?}"
        )));
    }
    let mut fields: Vec<arrow_schema::FieldRef> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(arrow_schema::Field::new(
        name,
        column.data_type().clone(),
        true,
    )));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(column));
    let schema = Schema::new_with_metadata(fields, schema.metadata().clone());
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}
