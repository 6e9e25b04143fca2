//! Write plugins for the lake.
//!
//! A plugin is plain Rust: implement [`Parser`] (bytes in, table out), [`Step`] (tables in,
//! table out) or [`Connector`] (an upstream source to objects, over [`http`]), and export it with
//! [`export_parser!`], [`export_step!`] or [`export_connector!`]. The shortest plugins implement
//! [`LineParser`] (one line of text at a time, exported as [`ByLine`]) or [`MapBatches`] (one
//! batch in, one batch out, exported as [`PerBatch`]). [`Info`] defaults to the crate's
//! `Cargo.toml`. The trait methods take and return Arrow [`RecordBatch`]es and return
//! [`PluginError`] on bad input, so the logic unit-tests natively with `cargo test` (see
//! [`testing`]); the export macro wires it to the `lake:plugin@0.1.0` component interface when
//! built for `wasm32-wasip2`. The raw bindings stay hidden. See `sdk/README.md` for a complete
//! walk-through.

// Lets generated code name this crate `lake_sdk` from inside it, as it must from plugin crates.
extern crate self as lake_sdk;

mod lines;
mod map;
mod params;
pub mod table;

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

#[cfg(any(feature = "parser", feature = "step", feature = "connector"))]
#[doc(hidden)]
pub mod glue;

#[cfg(feature = "connector")]
pub mod http;

#[cfg(feature = "xml")]
pub mod xml;

#[cfg(feature = "gzip")]
pub mod gzip;

#[cfg(feature = "decompress")]
pub mod decompress;

pub use arrow_array;
pub use arrow_array::RecordBatch;
pub use arrow_schema;
pub use arrow_schema::{DataType, Field, Schema, SchemaRef};
pub use lines::{ByLine, LineParser};
pub use map::{MapBatches, PerBatch};
pub use params::Params;

/// Builds a [`RecordBatch`] from named arrays: `batch!("name" => names, "age" => ages)` with any
/// Arrow arrays of equal length (the builders' `finish()`, `StringArray::from(vec![...])`).
/// Every column is nullable. Returns a [`Result`], an Arrow error as [`PluginError::InvalidInput`].
#[macro_export]
macro_rules! batch {
    ($($name:expr => $array:expr),+ $(,)?) => {
        $crate::RecordBatch::try_from_iter([
            $(($name, ::std::sync::Arc::new($array) as $crate::arrow_array::ArrayRef)),+
        ])
        .map_err($crate::PluginError::from)
    };
}

/// The interface version this SDK builds against.
pub const WIT_VERSION: &str = "0.1.0";

/// What a plugin says about itself.
///
/// Every field has a default: an empty `name`, `version` or `description` is filled, when the
/// plugin is exported, from the crate's `Cargo.toml` (`name`, `version`, `description`, or
/// "A lake parser" and so on when it has none), and `capabilities` defaults to none. So
/// `Info::default()` (what [`Parser::info`] returns unless overridden) describes a plugin by its
/// package, and `Info { description: "...", ..Info::default() }` overrides one field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    /// Unique lowercase name, e.g. `csv`.
    pub name: &'static str,
    /// The plugin's own version, usually `env!("CARGO_PKG_VERSION")`.
    pub version: &'static str,
    /// One line for people.
    pub description: &'static str,
    /// Capabilities it asks for; the host grants or refuses them (none for parsers and steps).
    pub capabilities: &'static [&'static str],
}

impl Info {
    /// Fills the empty fields from the package (the export macros pass `env!("CARGO_PKG_...")`).
    #[doc(hidden)]
    pub fn or_package(
        self,
        name: &'static str,
        version: &'static str,
        description: &'static str,
        kind: &'static str,
    ) -> Info {
        let or = |field: &'static str, package: &'static str| {
            if field.is_empty() { package } else { field }
        };
        let fallback = match kind {
            "parser" => "A lake parser",
            "step" => "A lake step",
            _ => "A lake connector",
        };
        Info {
            name: or(self.name, name),
            version: or(self.version, version),
            description: or(self.description, or(description, fallback)),
            capabilities: self.capabilities,
        }
    }
}

/// Why a plugin call failed. The host shows the message to the user and records it in provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginError {
    /// The input is malformed; say where ("line 17: ...").
    InvalidInput(String),
    /// A parameter is missing, unknown or wrong.
    InvalidParams(String),
    /// The plugin does not support what was asked.
    Unsupported(String),
    /// An input is larger than the plugin accepts.
    TooLarge(String),
    /// An unexpected state: a bug in the plugin.
    Internal(String),
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginError::InvalidInput(m) => write!(f, "invalid input: {m}"),
            PluginError::InvalidParams(m) => write!(f, "invalid parameters: {m}"),
            PluginError::Unsupported(m) => write!(f, "unsupported: {m}"),
            PluginError::TooLarge(m) => write!(f, "too large: {m}"),
            PluginError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for PluginError {}

impl From<arrow_schema::ArrowError> for PluginError {
    fn from(e: arrow_schema::ArrowError) -> Self {
        PluginError::InvalidInput(e.to_string())
    }
}

/// A result with a [`PluginError`].
pub type Result<T, E = PluginError> = std::result::Result<T, E>;

/// Bytes in, table out. The host feeds the input in chunks, so a parser keeps only what it needs.
///
/// For text read line by line, [`LineParser`] is shorter: the SDK splits the lines and collects
/// the batches.
pub trait Parser: Sized + 'static {
    /// Name, version, description; by default those of the crate's `Cargo.toml` (see [`Info`]).
    fn info() -> Info {
        Info::default()
    }
    /// Starts a parse; refuse bad parameters here.
    fn start(params: Params) -> Result<Self>;
    /// Takes the next chunk of input; returns the batches that are complete so far.
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>>;
    /// The input ended: returns the table's schema and the remaining batches.
    fn finish(&mut self) -> Result<(SchemaRef, Vec<RecordBatch>)>;
}

/// Tables in, table out.
///
/// A step that maps each batch of one input to one output batch is shorter as a [`MapBatches`].
pub trait Step: Sized + 'static {
    /// Name, version, description; by default those of the crate's `Cargo.toml` (see [`Info`]).
    fn info() -> Info {
        Info::default()
    }
    /// Starts a run over inputs with these schemas; refuse bad parameters and missing columns here.
    fn start(params: Params, inputs: Vec<SchemaRef>) -> Result<Self>;
    /// Takes one batch of input number `input`; returns output batches that are ready.
    fn push(&mut self, input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>>;
    /// All inputs ended: returns the output schema and the remaining batches.
    fn finish(&mut self) -> Result<(SchemaRef, Vec<RecordBatch>)>;
}

/// One piece of a collected object. A connector hands objects over one after another, each in one
/// or more pieces (`last` marks the final one), so a large upstream file is never held whole.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Part {
    /// Object name inside the collected dataset, e.g. `GSE16_family.soft.gz`.
    pub name: String,
    /// The next bytes of the object, exactly as the upstream sent them.
    pub bytes: Vec<u8>,
    /// True on the object's last piece.
    pub last: bool,
    /// On the last piece: the content type, when known.
    pub content_type: Option<String>,
    /// On the last piece: upstream version facts (etag, last-modified, release, entry version).
    pub facts: Vec<(String, String)>,
}

/// Fetches from an upstream source over HTTP ([`http`]); the host polices every request (granted
/// hosts only, rate limits, credentials added by the host, `Retry-After` honoured).
pub trait Connector: Sized + 'static {
    /// Name, version, description, and the hosts it needs as capabilities (`http:HOST`); by
    /// default those of the crate's `Cargo.toml` and no capabilities (see [`Info`]).
    fn info() -> Info {
        Info::default()
    }
    /// Starts a collection; refuse bad parameters (an unknown accession format) here.
    fn start(params: Params) -> Result<Self>;
    /// The next piece of the next object, or `None` when everything has been collected.
    fn next(&mut self) -> Result<Option<Part>>;
}

/// Log severity for [`log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Very detailed.
    Trace,
    /// For developers.
    Debug,
    /// Normal progress.
    Info,
    /// Something odd but handled.
    Warn,
    /// Something failed.
    Error,
}

/// Splits a byte stream into lines for a line-based parser: hands `line` each complete line of
/// `chunk` (without its `\n`; a `\r` before it is left for the parser), the first one joined to
/// what `pending` held; an unfinished last line stays in `pending` for the next chunk.
pub fn each_line(
    pending: &mut Vec<u8>,
    chunk: &[u8],
    mut line: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut rest = chunk;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        if pending.is_empty() {
            line(&rest[..end])?;
        } else {
            pending.extend_from_slice(&rest[..end]);
            let whole = std::mem::take(pending);
            line(&whole)?;
        }
        rest = &rest[end + 1..];
    }
    pending.extend_from_slice(rest);
    Ok(())
}

/// Writes to the host's structured log (to stderr when running natively, as in unit tests).
///
/// Inside a component the message goes to the host alone: stderr is where the host looks for a
/// panic's message, so a log line there would read as one. The two `cfg`s are exact complements
/// (every world, connectors included), so exactly one branch is compiled.
pub fn log(level: Level, message: &str) {
    #[cfg(all(
        target_arch = "wasm32",
        any(feature = "parser", feature = "step", feature = "connector")
    ))]
    glue::log(level, message);
    #[cfg(not(all(
        target_arch = "wasm32",
        any(feature = "parser", feature = "step", feature = "connector")
    )))]
    eprintln!("[{level:?}] {message}");
}

/// Reports progress to the host: `done` units of `total`, when known.
pub fn progress(done: u64, total: Option<u64>) {
    #[cfg(all(
        target_arch = "wasm32",
        any(feature = "parser", feature = "step", feature = "connector")
    ))]
    glue::progress(done, total);
    #[cfg(not(all(
        target_arch = "wasm32",
        any(feature = "parser", feature = "step", feature = "connector")
    )))]
    let _ = (done, total);
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_are_whole_whatever_the_chunks() {
        let input = b"one\ntwo\r\n\nthree";
        for size in 1..=input.len() {
            let mut pending = Vec::new();
            let mut lines: Vec<Vec<u8>> = Vec::new();
            for chunk in input.chunks(size) {
                super::each_line(&mut pending, chunk, |l| {
                    lines.push(l.to_vec());
                    Ok(())
                })
                .expect("lines");
            }
            assert_eq!(lines, [&b"one"[..], b"two\r", b""], "chunks of {size}");
            assert_eq!(pending, b"three", "the unfinished line waits");
        }
    }
}
