//! Arrow helpers: tables to and from the IPC stream bytes that cross the component boundary.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};

use crate::PluginError;

/// Encodes a schema and batches as one Arrow IPC stream (uncompressed).
pub fn to_ipc(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, PluginError> {
    let mut out = Vec::new();
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

/// Decodes one Arrow IPC stream into its schema and batches, with full validation.
pub fn from_ipc(bytes: Vec<u8>) -> Result<(SchemaRef, Vec<RecordBatch>), PluginError> {
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| PluginError::InvalidInput(format!("reading Arrow IPC: {e}")))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PluginError::InvalidInput(format!("reading Arrow IPC: {e}")))?;
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
