//! The short way to write a parser of line-based text: [`LineParser`], run by [`ByLine`].

use crate::{Info, Params, Parser, PluginError, RecordBatch, Result, SchemaRef};

/// A parser of text, one line at a time. The SDK splits the input into lines whatever the chunk
/// boundaries, hands you each one as `&str` (without `\n` or `\r\n`, a leading byte-order mark
/// dropped), and asks for the rows read so far with [`LineParser::batch`]. Export it as
/// `lake_sdk::export_parser!(lake_sdk::ByLine<crate::MyParser>)`.
///
/// ```
/// use lake_sdk::{LineParser, RecordBatch, Result, arrow_array::builder::StringBuilder};
///
/// #[derive(Default)]
/// pub struct Lines(StringBuilder);
///
/// impl LineParser for Lines {
///     fn line(&mut self, line: &str) -> Result<()> {
///         self.0.append_value(line);
///         Ok(())
///     }
///     fn batch(&mut self) -> Result<RecordBatch> {
///         lake_sdk::batch!("line" => self.0.finish())
///     }
/// }
/// ```
pub trait LineParser: Default + 'static {
    /// Name, version, description; by default those of the crate's `Cargo.toml` (see [`Info`]).
    fn info() -> Info {
        Info::default()
    }
    /// Starts a parse. By default the parser starts from [`Default`] and refuses any parameter;
    /// override this to read parameters (`params.parse()`).
    fn start(params: Params) -> Result<Self> {
        crate::params::none(&params)?;
        Ok(Self::default())
    }
    /// Takes one line. An [`PluginError::InvalidInput`] returned here reaches the user prefixed
    /// with the line number (`line 17: ...`).
    fn line(&mut self, line: &str) -> Result<()>;
    /// The rows read since the last call, as one batch (the builders' `finish()`). Called after
    /// each chunk of input, and once more at the end, when it may have no rows: its schema is the
    /// table's, so every batch must have the same columns.
    fn batch(&mut self) -> Result<RecordBatch>;
}

/// Runs a [`LineParser`] as a [`Parser`]: splits the chunks into lines and collects the batches.
#[derive(Debug)]
pub struct ByLine<P> {
    parser: P,
    pending: Vec<u8>,
    line: u64,
}

impl<P> ByLine<P> {
    /// The line parser inside.
    pub fn inner(&self) -> &P {
        &self.parser
    }
}

impl<P: LineParser> ByLine<P> {
    fn take(&mut self, line: &[u8]) -> Result<()> {
        self.line += 1;
        let n = self.line;
        let mut line = line.strip_suffix(b"\r").unwrap_or(line);
        if n == 1 {
            line = line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line);
        }
        let text = std::str::from_utf8(line)
            .map_err(|e| PluginError::InvalidInput(format!("line {n}: not UTF-8 text: {e}")))?;
        self.parser.line(text).map_err(|e| match e {
            PluginError::InvalidInput(m) => PluginError::InvalidInput(format!("line {n}: {m}")),
            other => other,
        })
    }

    fn rows(&mut self) -> Result<RecordBatch> {
        self.parser.batch()
    }
}

impl<P: LineParser> Parser for ByLine<P> {
    fn info() -> Info {
        P::info()
    }

    fn start(params: Params) -> Result<Self> {
        Ok(ByLine {
            parser: P::start(params)?,
            pending: Vec::new(),
            line: 0,
        })
    }

    fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>> {
        let mut pending = std::mem::take(&mut self.pending);
        let split = crate::each_line(&mut pending, chunk, |l| self.take(l));
        self.pending = pending;
        split?;
        let batch = self.rows()?;
        Ok(if batch.num_rows() == 0 {
            Vec::new()
        } else {
            vec![batch]
        })
    }

    fn finish(&mut self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let last = std::mem::take(&mut self.pending);
        if !last.is_empty() {
            self.take(&last)?;
        }
        let batch = self.rows()?;
        let schema = batch.schema();
        Ok((
            schema,
            if batch.num_rows() == 0 {
                Vec::new()
            } else {
                vec![batch]
            },
        ))
    }
}
