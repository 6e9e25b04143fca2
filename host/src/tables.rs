//! Tables as the lake stores them: the one Parquet writer and the one Parquet reader every path
//! uses (uploads, pipeline outputs, saved merges, step inputs, `lake plugin run`), and the rules
//! every Parquet object the lake writes follows, whatever plugin produced the batches.
//!
//! [`TableWriter`] writes batches as they come (Snappy, but for a column it does not shrink; a
//! bounded row group); [`ParquetSink`] is that writer feeding an async byte stream, so a parser's
//! table streams into the store without ever being whole in memory; [`write_parquet`] is the
//! writer over a table already in memory.
//! [`parquet_reader`] and [`decode_ahead`] read back, a batch at a time.
//!
//! Arrow allows a schema with empty or repeated column names, and a spreadsheet's header row often
//! has both; Parquet readers do not (Polars refuses a file with two columns named `""`). So the
//! writer gives each column a unique, non-empty name before the first batch, and the caller records
//! what was renamed next to the table ([`Written`]), so nobody is left guessing where `name_2` came
//! from. Every table's columns are recorded the same way, as [`Column`]s.
//!
//! Every column the writer stores carries an Iceberg field id (`PARQUET:field_id`: the top-level
//! columns 1..n in order, nested fields after them), so engines reading the table through the
//! Iceberg catalog find columns by id; [`footer`] reads a stored table's schema (ids included)
//! and row count from its footer alone.

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;

use arrow_array::{RecordBatch, RecordBatchOptions, RecordBatchReader};
use arrow_schema::{Field, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::file::writer::SerializedFileWriter;
use serde::{Deserialize, Serialize};

use crate::plugins::{StepInput, Table};

/// One column of a stored table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Column {
    /// Name.
    pub name: String,
    /// Arrow type, e.g. `Int64`, `Utf8`, `Date32`.
    #[serde(rename = "type")]
    pub data_type: String,
    /// Whether it may hold nulls.
    pub nullable: bool,
}

/// The columns of a schema.
pub fn columns_of(schema: &SchemaRef) -> Vec<Column> {
    schema
        .fields()
        .iter()
        .map(|f| Column {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect()
}

/// One column whose name the lake changed on the way to Parquet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Renamed {
    /// The column's position, from 1.
    pub position: usize,
    /// The name the parser gave it (empty, or a repeat of an earlier column's).
    pub from: String,
    /// The name it is stored under.
    pub to: String,
}

/// The schema with every column name unique and non-empty, and what changed: an empty name becomes
/// `column_{position}`, a repeated one `{name}_2`, `{name}_3`, ... (skipping names already taken).
/// `None` when every name was fine, the usual case.
pub fn unique_names(schema: &SchemaRef) -> Option<(SchemaRef, Vec<Renamed>)> {
    let fields = schema.fields();
    let mut seen = HashSet::with_capacity(fields.len());
    let clean = fields
        .iter()
        .all(|f| !f.name().trim().is_empty() && seen.insert(f.name().as_str()));
    if clean {
        return None;
    }
    // Names as given are kept where they can be, so a later repeat never takes an original name.
    let originals: HashSet<&str> = fields.iter().map(|f| f.name().as_str()).collect();
    let mut taken: HashSet<String> = HashSet::with_capacity(fields.len());
    let mut renamed = Vec::new();
    let mut out: Vec<Field> = Vec::with_capacity(fields.len());
    for (i, f) in fields.iter().enumerate() {
        let name = f.name();
        let empty = name.trim().is_empty();
        let new = if !empty && !taken.contains(name.as_str()) {
            name.clone()
        } else {
            let base = if empty {
                format!("column_{}", i + 1)
            } else {
                name.clone()
            };
            let free = |c: &str| !taken.contains(c) && !originals.contains(c);
            let mut candidate = base.clone();
            let mut n = 2;
            while !free(&candidate) {
                candidate = format!("{base}_{n}");
                n += 1;
            }
            renamed.push(Renamed {
                position: i + 1,
                from: name.clone(),
                to: candidate.clone(),
            });
            candidate
        };
        taken.insert(new.clone());
        out.push(f.as_ref().clone().with_name(new));
    }
    let schema = Arc::new(Schema::new_with_metadata(out, schema.metadata().clone()));
    Some((schema, renamed))
}

/// The batch under `schema`, which has the batch's columns in order with other names (see
/// [`unique_names`]); no data is copied.
pub fn rename_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, String> {
    RecordBatch::try_new_with_options(
        schema.clone(),
        batch.columns().to_vec(),
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
    .map_err(|e| format!("renaming the table's columns: {e}"))
}

/// The schema with an Iceberg field id on every field, replacing any it had: the top-level
/// columns 1..n in order, then each column's nested fields depth-first.
pub fn with_field_ids(schema: &SchemaRef) -> SchemaRef {
    use arrow_schema::DataType as D;
    fn tagged(field: &Field, id: i32) -> Field {
        let mut metadata = field.metadata().clone();
        metadata.insert(
            parquet::arrow::PARQUET_FIELD_ID_META_KEY.to_owned(),
            id.to_string(),
        );
        field.clone().with_metadata(metadata)
    }
    fn nested(t: &D, next: &mut i32) -> D {
        let child = |f: &Arc<Field>, next: &mut i32| {
            *next += 1;
            let id = *next;
            let inner = nested(f.data_type(), next);
            Arc::new(tagged(f, id).with_data_type(inner))
        };
        match t {
            D::List(f) => D::List(child(f, next)),
            D::LargeList(f) => D::LargeList(child(f, next)),
            D::FixedSizeList(f, n) => D::FixedSizeList(child(f, next), *n),
            D::Struct(fs) => D::Struct(fs.iter().map(|f| child(f, next)).collect()),
            D::Map(entries, sorted) => {
                let kv = match entries.data_type() {
                    D::Struct(kv) => D::Struct(kv.iter().map(|f| child(f, next)).collect()),
                    other => other.clone(),
                };
                D::Map(
                    Arc::new(entries.as_ref().clone().with_data_type(kv)),
                    *sorted,
                )
            }
            other => other.clone(),
        }
    }
    let fields = schema.fields();
    let mut next = i32::try_from(fields.len()).unwrap_or(i32::MAX);
    let tagged_fields: Vec<Field> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let id = i32::try_from(i + 1).unwrap_or(i32::MAX);
            tagged(f, id).with_data_type(nested(f.data_type(), &mut next))
        })
        .collect();
    Arc::new(Schema::new_with_metadata(
        tagged_fields,
        schema.metadata().clone(),
    ))
}

/// What a [`TableWriter`] wrote: the schema as stored, the columns it renamed, the rows.
#[derive(Debug, Clone)]
pub struct Written {
    /// The schema as stored (unique, non-empty column names).
    pub schema: SchemaRef,
    /// Columns stored under another name than the producer gave them.
    pub renamed: Vec<Renamed>,
    /// Rows written.
    pub rows: u64,
}

/// Writes batches as one Parquet file (Snappy-compressed, but for a column Snappy does not
/// shrink) into `W`, under unique column names.
///
/// Row groups are encoded on a few threads at once (see [`Encoders`]) and appended in order, so
/// the thread feeding the writer only gathers rows and copies out finished column chunks: an
/// upload parsed on every core is no longer held to the pace of one encoder.
pub struct TableWriter<W: Write + Send> {
    file: SerializedFileWriter<W>,
    encoders: Encoders,
    schema: SchemaRef,
    renamed: Vec<Renamed>,
    rows: u64,
    /// Rows per row group (`None`: the whole table in one).
    group_rows: Option<usize>,
    /// The row group being gathered.
    gathering: Vec<RecordBatch>,
    gathered: usize,
}

impl<W: Write + Send> std::fmt::Debug for TableWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableWriter")
            .field("schema", &self.schema)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl<W: Write + Send> TableWriter<W> {
    /// A writer of tables shaped `schema`; `row_group_rows` bounds a row group (the Parquet
    /// default otherwise).
    pub fn new(out: W, schema: &SchemaRef, row_group_rows: Option<usize>) -> Result<Self, String> {
        // A column whose dictionary outgrows 256 KiB in a row group is written plain from there
        // (the library's default, 1 MiB, spent a quarter of an upload's CPU building dictionaries
        // of unique ids and measurements only to drop them).
        let mut props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .set_dictionary_page_size_limit(256 << 10);
        if let Some(n) = row_group_rows {
            props = props.set_max_row_group_row_count(Some(n));
        }
        let (schema, renamed) =
            unique_names(schema).unwrap_or_else(|| (schema.clone(), Vec::new()));
        let stored = with_field_ids(&schema);
        let (file, factory) = ArrowWriter::try_new(out, stored.clone(), Some(props.build()))
            .and_then(|w| w.into_serialized_writer())
            .map_err(|e| format!("the table cannot be written as Parquet: {e}"))?;
        let group_rows = file.properties().max_row_group_row_count();
        let encoders = Encoders::new(factory, stored, &file);
        Ok(Self {
            file,
            encoders,
            schema,
            renamed,
            rows: 0,
            group_rows,
            gathering: Vec::new(),
            gathered: 0,
        })
    }

    /// Writes one batch (under the stored names).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        if batch.num_columns() != self.schema.fields().len() {
            return Err(format!(
                "writing Parquet: a batch of {} columns for a table of {}",
                batch.num_columns(),
                self.schema.fields().len()
            ));
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows += batch.num_rows() as u64;
        let mut rest = if self.renamed.is_empty() {
            batch.clone()
        } else {
            rename_batch(batch, &self.schema)?
        };
        loop {
            let room = self.group_rows.map_or(usize::MAX, |n| n - self.gathered);
            if rest.num_rows() < room {
                self.gathered += rest.num_rows();
                self.gathering.push(rest);
                return Ok(());
            }
            self.gathering.push(rest.slice(0, room));
            self.gathered += room;
            rest = rest.slice(room, rest.num_rows() - room);
            self.seal(false)?;
            if rest.num_rows() == 0 {
                return Ok(());
            }
        }
    }

    /// Hands the gathered row group (the `last` or not) to the encoders and appends what they
    /// have finished.
    fn seal(&mut self, last: bool) -> Result<(), String> {
        if self.gathering.is_empty() {
            return Ok(());
        }
        let group = std::mem::take(&mut self.gathering);
        self.gathered = 0;
        self.encoders.submit(group, last, &mut self.file)
    }

    /// Writes the footer and hands back the output and what was written.
    pub fn finish(mut self) -> Result<(W, Written), String> {
        self.seal(true)?;
        self.encoders.drain(&mut self.file)?;
        let out = self
            .file
            .into_inner()
            .map_err(|e| format!("finishing Parquet: {e}"))?;
        Ok((
            out,
            Written {
                schema: self.schema,
                renamed: self.renamed,
                rows: self.rows,
            },
        ))
    }
}

/// A row group's encoded column chunks, or why it could not be encoded.
type Encoded = Result<Vec<ArrowColumnChunk>, String>;

/// Work for the process's encoder threads.
type Task = Box<dyn FnOnce() + Send>;

/// The process's Parquet encoder threads, shared by every table being written: one per core (at
/// most [`MAX_ENCODERS`]), started with the first table of more than one row group. Two uploads at
/// once share them instead of each starting a thread per core, so the encoders never outnumber
/// the cores. `None` when the machine has one core or no thread could be started.
fn encoder_pool() -> Option<&'static (std::sync::mpsc::SyncSender<Task>, usize)> {
    static POOL: std::sync::OnceLock<Option<(std::sync::mpsc::SyncSender<Task>, usize)>> =
        std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_ENCODERS);
        if cores < 2 {
            return None;
        }
        // A task is handed over only to a thread free to take it.
        let (tasks, queue) = std::sync::mpsc::sync_channel::<Task>(0);
        let queue = Arc::new(std::sync::Mutex::new(queue));
        let started = (0..cores)
            .filter(|n| {
                let queue = queue.clone();
                std::thread::Builder::new()
                    .name(format!("parquet-encode-{n}"))
                    .spawn(move || {
                        loop {
                            let task = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                            let Ok(task) = task else {
                                return;
                            };
                            task();
                        }
                    })
                    .map_err(|e| tracing::warn!("Could not start a Parquet encoder: {e}"))
                    .is_ok()
            })
            .count();
        (started > 1).then_some((tasks, started))
    })
    .as_ref()
}

/// How a [`TableWriter`]'s row groups are encoded: on the process's encoder threads
/// ([`encoder_pool`]) from its second row group (a table of one row group is encoded on the
/// caller's thread). At most one row group per encoder is in flight, so the memory held is a few
/// row groups whatever the table's length; finished row groups are appended in order.
///
/// A column whose dictionary outgrew its limit in a row group (ids, measurements: nearly every
/// value distinct) is written plain in the row groups handed out after that one, instead of
/// building a dictionary again in each only to drop it; a column Snappy shrank by less than a
/// twentieth in a row group (random measurements, bit-packed dictionary indices) is stored
/// uncompressed after it, instead of compressing it again for nothing.
struct Encoders {
    factory: Arc<ArrowRowGroupWriterFactory>,
    schema: SchemaRef,
    /// The file's properties and schema, for the factories of later row groups.
    props: parquet::file::properties::WriterProperties,
    root: parquet::schema::types::TypePtr,
    /// Each leaf column's path, whether it is written plain from now on, and whether it is
    /// stored uncompressed from now on.
    columns: Vec<parquet::schema::types::ColumnPath>,
    plain: Vec<bool>,
    stored: Vec<bool>,
    /// The process's encoders and how many there are (the row groups this table may have in
    /// flight at once), once this table has a second row group.
    pool: Option<&'static (std::sync::mpsc::SyncSender<Task>, usize)>,
    /// Where the encoders send this table's row groups back.
    done_tx: std::sync::mpsc::Sender<(usize, Encoded)>,
    done: std::sync::mpsc::Receiver<(usize, Encoded)>,
    /// Row groups handed out and not yet back.
    in_flight: usize,
    /// Finished row groups waiting for an earlier one.
    ready: std::collections::BTreeMap<usize, Vec<ArrowColumnChunk>>,
    /// The next row group to hand out, and the next to append.
    next_out: usize,
    next_in: usize,
}

/// The most threads one table is encoded on.
const MAX_ENCODERS: usize = 4;

/// The share of a column's bytes compression must save in a row group (1 in 20) for the column
/// to stay compressed in later row groups.
const MIN_SAVED: (i64, i64) = (1, 20);

impl Encoders {
    fn new<W: Write + Send>(
        factory: ArrowRowGroupWriterFactory,
        schema: SchemaRef,
        file: &SerializedFileWriter<W>,
    ) -> Self {
        let descr = file.schema_descr();
        let (done_tx, done) = std::sync::mpsc::channel();
        let columns: Vec<_> = descr.columns().iter().map(|c| c.path().clone()).collect();
        Self {
            factory: Arc::new(factory),
            schema,
            props: file.properties().as_ref().clone(),
            root: descr.root_schema_ptr(),
            plain: vec![false; columns.len()],
            stored: vec![false; columns.len()],
            columns,
            pool: None,
            done_tx,
            done,
            in_flight: 0,
            ready: Default::default(),
            next_out: 0,
            next_in: 0,
        }
    }

    /// Encodes row group `index` of `batches` (all shaped like `schema`).
    fn encode(
        factory: &ArrowRowGroupWriterFactory,
        schema: &SchemaRef,
        index: usize,
        batches: &[RecordBatch],
    ) -> Encoded {
        let fail = |e: parquet::errors::ParquetError| format!("encoding Parquet: {e}");
        let mut writers = factory.create_column_writers(index).map_err(fail)?;
        for batch in batches {
            let mut leaves_to = writers.iter_mut();
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                for leaf in compute_leaves(field, column).map_err(fail)? {
                    leaves_to
                        .next()
                        .ok_or("encoding Parquet: more leaves than columns")?
                        .write(&leaf)
                        .map_err(fail)?;
                }
            }
        }
        writers
            .into_iter()
            .map(|w| w.close().map_err(fail))
            .collect()
    }

    /// Encodes the next row group, `last` or not: on the caller's thread when the machine has one
    /// core or the table only one row group, on the encoders' otherwise. Appends what is finished.
    fn submit<W: Write + Send>(
        &mut self,
        batches: Vec<RecordBatch>,
        last: bool,
        file: &mut SerializedFileWriter<W>,
    ) -> Result<(), String> {
        let index = self.next_out;
        self.next_out += 1;
        if self.pool.is_none() && !last {
            self.pool = encoder_pool();
        }
        let Some((pool, threads)) = self.pool else {
            let encoded = Self::encode(&self.factory, &self.schema, index, &batches);
            drop(batches);
            self.in_flight += 1;
            return self.finished(index, encoded, file);
        };
        while self.in_flight >= *threads {
            self.wait(file)?;
        }
        let (factory, schema, done) = (
            self.factory.clone(),
            self.schema.clone(),
            self.done_tx.clone(),
        );
        let task: Task = Box::new(move || {
            let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                Self::encode(&factory, &schema, index, &batches)
            }))
            .unwrap_or_else(|_| Err("encoding Parquet: the encoder failed".into()));
            drop(batches);
            // A table given up on no longer waits for its row groups.
            let _ = done.send((index, encoded));
        });
        pool.send(task)
            .map_err(|_| "the Parquet encoders stopped")?;
        self.in_flight += 1;
        while let Ok((i, encoded)) = self.done.try_recv() {
            self.finished(i, encoded, file)?;
        }
        Ok(())
    }

    /// Waits for one row group to come back.
    fn wait<W: Write + Send>(&mut self, file: &mut SerializedFileWriter<W>) -> Result<(), String> {
        let (i, encoded) = self
            .done
            .recv()
            .map_err(|_| "the Parquet encoders stopped")?;
        self.finished(i, encoded, file)
    }

    /// Waits for every row group handed out and appends them.
    fn drain<W: Write + Send>(&mut self, file: &mut SerializedFileWriter<W>) -> Result<(), String> {
        while self.in_flight > 0 {
            self.wait(file)?;
        }
        Ok(())
    }

    /// Adapts the row groups handed out from now on to what one row group (`chunks`) showed:
    /// a column whose dictionary gave up (a dictionary page, then data pages not encoded with
    /// it) is written plain; a column Snappy shrank by less than [`MIN_SAVED`] is stored
    /// uncompressed.
    fn adapt(&mut self, chunks: &[ArrowColumnChunk]) -> Result<(), String> {
        use parquet::basic::{Compression, Encoding, PageType};
        let mut changed = false;
        for (i, chunk) in chunks.iter().enumerate() {
            let meta = &chunk.close().metadata;
            if let Some(stats) = meta.page_encoding_stats() {
                let dictionary = stats
                    .iter()
                    .any(|e| e.page_type == PageType::DICTIONARY_PAGE);
                let gave_up = stats.iter().any(|e| {
                    matches!(e.page_type, PageType::DATA_PAGE | PageType::DATA_PAGE_V2)
                        && !matches!(
                            e.encoding,
                            Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY
                        )
                });
                if dictionary && gave_up && self.plain.get(i) == Some(&false) {
                    self.plain[i] = true;
                    changed = true;
                }
            }
            let (packed, whole) = (meta.compressed_size(), meta.uncompressed_size());
            let barely = meta.compression() != Compression::UNCOMPRESSED
                && whole > 0
                && (whole - packed) * MIN_SAVED.1 < whole * MIN_SAVED.0;
            if barely && self.stored.get(i) == Some(&false) {
                self.stored[i] = true;
                changed = true;
            }
        }
        if !changed {
            return Ok(());
        }
        let mut props = self.props.clone().into_builder();
        for ((path, plain), stored) in self.columns.iter().zip(&self.plain).zip(&self.stored) {
            if *plain {
                props = props.set_column_dictionary_enabled(path.clone(), false);
            }
            if *stored {
                props = props.set_column_compression(path.clone(), Compression::UNCOMPRESSED);
            }
        }
        // The factory only reads a file writer's schema and properties: this one writes nowhere.
        let shadow =
            SerializedFileWriter::new(std::io::sink(), self.root.clone(), Arc::new(props.build()))
                .map_err(|e| format!("writing Parquet: {e}"))?;
        self.factory = Arc::new(ArrowRowGroupWriterFactory::new(
            &shadow,
            self.schema.clone(),
        ));
        Ok(())
    }

    /// Takes row group `index` back and appends every finished one that is next in order.
    fn finished<W: Write + Send>(
        &mut self,
        index: usize,
        encoded: Encoded,
        file: &mut SerializedFileWriter<W>,
    ) -> Result<(), String> {
        self.in_flight -= 1;
        let chunks = encoded?;
        self.adapt(&chunks)?;
        self.ready.insert(index, chunks);
        while let Some(chunks) = self.ready.remove(&self.next_in) {
            let fail = |e: parquet::errors::ParquetError| format!("writing Parquet: {e}");
            let mut group = file.next_row_group().map_err(fail)?;
            for chunk in chunks {
                chunk.append_to_row_group(&mut group).map_err(fail)?;
            }
            group.close().map_err(fail)?;
            self.next_in += 1;
        }
        Ok(())
    }
}

/// The memory `batches` hold: each buffer's allocation counted once, however many arrays,
/// slices and batches share it. (`RecordBatch::get_array_memory_size` counts a shared buffer
/// once per batch: a plugin's output, decoded from a few IPC buffers, would weigh many times
/// what it holds.)
pub fn held_bytes(batches: &[RecordBatch]) -> usize {
    fn visit(data: &arrow_data::ArrayData, seen: &mut HashSet<usize>, total: &mut usize) {
        let nulls = data.nulls().map(|n| n.buffer());
        for b in data.buffers().iter().chain(nulls) {
            if seen.insert(b.data_ptr().as_ptr() as usize) {
                // An allocation the buffer does not own says no capacity: count what it shows.
                *total += b.capacity().max(b.len());
            }
        }
        for child in data.child_data() {
            visit(child, seen, total);
        }
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for batch in batches {
        for column in batch.columns() {
            visit(&column.to_data(), &mut seen, &mut total);
        }
    }
    total
}

/// A table in memory as one Parquet file, and what was written.
pub fn write_parquet(table: &Table) -> Result<(Vec<u8>, Written), String> {
    let mut w = TableWriter::new(Vec::new(), &table.schema, None)?;
    for b in &table.batches {
        w.write(b)?;
    }
    w.finish()
}

/// A `Write` that hands its bytes to an async consumer in pieces of about 1 MiB.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

const PIECE: usize = 1 << 20;

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE)));
        self.tx
            .blocking_send(Ok(piece))
            .map_err(|_| std::io::Error::other("the store stopped taking the table"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PIECE {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A [`TableWriter`] feeding a byte stream (see [`ParquetSink::new`]), for batches that arrive on a
/// blocking thread (a parser's) while the store takes the bytes. The writer starts with the first
/// schema it is given.
pub struct ParquetSink {
    /// The writer's end of the channel, until the first schema creates the writer.
    tx: Option<tokio::sync::mpsc::Sender<std::io::Result<Bytes>>>,
    /// A second end, to break the stream when the producer fails (the store then keeps nothing).
    control: Option<tokio::sync::mpsc::Sender<std::io::Result<Bytes>>>,
    writer: Option<TableWriter<ChannelWriter>>,
    row_group_rows: usize,
}

impl std::fmt::Debug for ParquetSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetSink")
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

impl ParquetSink {
    /// A sink and the stream of its Parquet bytes (for `BlobStore::put`).
    pub fn new(row_group_rows: usize) -> (Self, crate::blob::ByteStream) {
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        let sink = Self {
            control: Some(tx.clone()),
            tx: Some(tx),
            writer: None,
            row_group_rows,
        };
        (sink, crate::blob::stream_of(rx))
    }

    /// Takes the producer's schema (the first call starts the file) and a batch, if any. Blocks
    /// while the store is behind: call it from a blocking thread.
    pub fn take(&mut self, schema: &SchemaRef, batch: Option<RecordBatch>) -> Result<(), String> {
        if self.writer.is_none() {
            let tx = self
                .tx
                .take()
                .ok_or_else(|| "the table's output was already closed".to_owned())?;
            let out = ChannelWriter {
                tx,
                buf: Vec::with_capacity(PIECE),
            };
            self.writer = Some(TableWriter::new(out, schema, Some(self.row_group_rows))?);
        }
        if let (Some(b), Some(w)) = (batch, self.writer.as_mut()) {
            w.write(&b)?;
        }
        Ok(())
    }

    /// Ends the Parquet file (footer included) and the stream, and says what was written; after a
    /// failed producer (`ok` false), breaks the stream instead, so the store discards the partial
    /// object, and says so. Blocks like [`ParquetSink::take`].
    pub fn close(&mut self, ok: bool) -> Result<Written, String> {
        let control = self.control.take();
        let writer = self.writer.take();
        self.tx = None;
        if !ok {
            if let Some(c) = control {
                let _ = c.blocking_send(Err(std::io::Error::other("the parse failed")));
            }
            return Err("the parse failed; the table was not stored".into());
        }
        drop(control);
        match writer {
            Some(w) => {
                let (mut out, written) = w.finish()?;
                out.send().map_err(|e| e.to_string())?;
                Ok(written)
            }
            None => Err("the parser returned no schema".into()),
        }
    }
}

/// Rows a reader decodes per batch.
const READ_BATCH_ROWS: usize = 64 * 1024;

/// A reader of Parquet bytes, [`READ_BATCH_ROWS`] a batch, and the file's row count.
pub fn parquet_reader(bytes: Bytes) -> Result<(ParquetRecordBatchReader, u64), String> {
    ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| {
            let rows = u64::try_from(b.metadata().file_metadata().num_rows()).unwrap_or(0);
            Ok((b.with_batch_size(READ_BATCH_ROWS).build()?, rows))
        })
        .map_err(|e| e.to_string())
}

/// The first rows of a stored Parquet table, read by range: its footer and page index, then only
/// the pages those rows are in (a 5 GB table previews for the price of a few pages).
#[derive(Debug)]
pub struct FirstRows {
    /// The table's schema.
    pub schema: SchemaRef,
    /// At most the rows asked for.
    pub batches: Vec<RecordBatch>,
    /// All the table's rows, from its footer.
    pub total_rows: u64,
    /// Bytes fetched from the store to answer.
    pub bytes_read: u64,
}

/// One stored object as the Parquet reader sees it: ranges fetched from the store as it asks.
struct StoredParquet {
    blobs: Arc<dyn crate::blob::BlobStore>,
    bucket: String,
    key: String,
    size: u64,
    read: Arc<std::sync::atomic::AtomicU64>,
}

impl parquet::arrow::async_reader::AsyncFileReader for StoredParquet {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Bytes>> {
        use futures::FutureExt as _;
        async move {
            let want = range.end.saturating_sub(range.start);
            let got = self
                .blobs
                .get_range(&self.bucket, &self.key, range)
                .await
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))?;
            self.read
                .fetch_add(got.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if got.len() as u64 != want {
                return Err(parquet::errors::ParquetError::EOF(format!(
                    "{}/{} ended {} bytes early",
                    self.bucket,
                    self.key,
                    want - got.len() as u64
                )));
            }
            Ok(got)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a parquet::arrow::arrow_reader::ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<
        'a,
        parquet::errors::Result<Arc<parquet::file::metadata::ParquetMetaData>>,
    > {
        use futures::FutureExt as _;
        async move {
            let size = self.size;
            let metadata = parquet::file::metadata::ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// What a stored table's footer says: its schema (field ids in the fields' metadata, where the
/// file has them) and its row count.
pub async fn footer(
    blobs: Arc<dyn crate::blob::BlobStore>,
    bucket: &str,
    key: &str,
    size: u64,
) -> Result<(Schema, u64), String> {
    let input = StoredParquet {
        blobs,
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        size,
        read: Arc::new(std::sync::atomic::AtomicU64::new(0)),
    };
    let builder = parquet::arrow::ParquetRecordBatchStreamBuilder::new(input)
        .await
        .map_err(|e| format!("{bucket}/{key}: {e}"))?;
    let rows = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    Ok((builder.schema().as_ref().clone(), rows))
}

/// The first `rows` rows of the Parquet table stored at `bucket/key` (`size` bytes).
pub async fn first_rows(
    blobs: Arc<dyn crate::blob::BlobStore>,
    bucket: &str,
    key: &str,
    size: u64,
    rows: usize,
) -> Result<FirstRows, String> {
    use futures::TryStreamExt as _;
    use parquet::arrow::arrow_reader::ArrowReaderOptions;
    use parquet::file::metadata::PageIndexPolicy;
    let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let input = StoredParquet {
        blobs,
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        size,
        read: read.clone(),
    };
    // The offset index says where each page starts, so only the first pages are fetched.
    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
    let builder = parquet::arrow::ParquetRecordBatchStreamBuilder::new_with_options(input, options)
        .await
        .map_err(|e| e.to_string())?;
    let total_rows = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    let schema = builder.schema().clone();
    let batches: Vec<RecordBatch> = builder
        .with_limit(rows)
        .with_batch_size(rows.max(1))
        .build()
        .map_err(|e| e.to_string())?
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(FirstRows {
        schema,
        batches,
        total_rows,
        bytes_read: read.load(std::sync::atomic::Ordering::Relaxed),
    })
}

/// A Parquet file's whole table.
pub fn read_parquet(bytes: Bytes) -> Result<Table, String> {
    let (reader, _) = parquet_reader(bytes)?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok(Table { schema, batches })
}

/// Decoded batches a step input's decoding thread keeps ready for the plugin.
const DECODED_AHEAD: usize = 2;

/// A step input that decodes `readers` in turn on a blocking thread, at most [`DECODED_AHEAD`]
/// batches ahead of whoever takes them, so decoding overlaps the plugin's work and the host never
/// holds a whole decoded table. `what` names the table in errors.
pub fn decode_ahead(
    schema: SchemaRef,
    rows: u64,
    readers: Vec<ParquetRecordBatchReader>,
    what: String,
) -> StepInput {
    let (tx, rx) = std::sync::mpsc::sync_channel(DECODED_AHEAD);
    tokio::task::spawn_blocking(move || {
        for batch in readers.into_iter().flatten() {
            let batch = batch.map_err(|e| format!("decoding Parquet of {what}: {e}"));
            let failed = batch.is_err();
            // The receiver is gone when the invocation ended early: stop decoding.
            if tx.send(batch).is_err() || failed {
                return;
            }
        }
    });
    StepInput {
        schema,
        rows: Some(rows),
        batches: Box::new(rx.into_iter()),
    }
}

/// A parser's table as [`parse_into_store`] stored it.
#[derive(Debug)]
pub struct StoredTable {
    /// What was written: schema as stored, renamed columns, rows.
    pub written: Written,
    /// The object's size, bytes.
    pub size: u64,
    /// The object's SHA-256, hex.
    pub sha256: String,
}

/// Whether a parse that [`parse_into_store`] ran in segments failed in a way one instance may
/// word otherwise: then it is run again over the whole input with `split` off, so the error a
/// person reads is the one a single parse of the whole input reports (a segment's would name the
/// wrong line). A timeout or a caller gone would only happen again.
pub fn parse_again_serially(
    inv: &crate::plugins::Invocation<SchemaRef>,
    stored: &Option<StoredTable>,
) -> bool {
    use crate::plugins::InvokeError;
    stored.is_none()
        && inv.usage.instances > 1
        && !matches!(
            inv.result,
            Ok(_) | Err(InvokeError::Timeout(_) | InvokeError::Cancelled)
        )
}

/// Runs the parser `parser` over `input` and streams its table as Parquet into `to` (bucket, key)
/// as the batches come, so neither the plugin's output nor the file is ever whole in memory; in
/// segments on several instances when `split` and the parser opted in (see
/// [`parse_again_serially`] for what a failure then asks of the caller).
///
/// Returns the invocation and, when it succeeded, what was stored. When the parser fails nothing
/// is kept and the invocation says why (the input's fault or the plugin's). The outer error is the
/// store's or the writer's (reading the input, taking the table, encoding it): nothing is kept
/// then either, and the input is not to blame.
#[allow(clippy::too_many_arguments)]
pub async fn parse_into_store(
    plugins: &crate::plugins::Plugins,
    blobs: &dyn crate::blob::BlobStore,
    parser: &str,
    params: Vec<(String, String)>,
    input: crate::blob::ByteStream,
    (bucket, key): (&str, &str),
    row_group_rows: usize,
    split: bool,
) -> Result<(crate::plugins::Invocation<SchemaRef>, Option<StoredTable>), crate::lake::LakeError> {
    use crate::lake::LakeError;
    use crate::plugins::InvokeError;
    let discard = |why: &'static str| async move {
        if let Err(e) = blobs.delete(bucket, key).await {
            tracing::warn!(bucket, key, error = %e, why, "An uncataloged object was left behind");
        }
    };
    let (sink, out) = ParquetSink::new(row_group_rows);
    let sink = Arc::new(std::sync::Mutex::new(sink));
    let (out, hash) = crate::blob::hashing(out, None);
    let writer = sink.clone();
    let parse = async {
        let into: crate::plugins::Sink = Box::new(move |schema, batch| {
            writer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(schema, batch)
        });
        let inv = if split {
            plugins.parse_into(parser, params, input, into).await
        } else {
            plugins.parse_into_serial(parser, params, input, into).await
        };
        let ok = inv.result.is_ok();
        let closed = tokio::task::spawn_blocking(move || {
            sink.lock().unwrap_or_else(|p| p.into_inner()).close(ok)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        (inv, closed)
    };
    let ((inv, closed), put) = tokio::join!(parse, blobs.put(bucket, key, out));
    match (&inv.result, closed, put) {
        // The store failed (reading the input back or taking the table): not the input's fault.
        (Err(InvokeError::Sink(e) | InvokeError::Input(e)), _, put) => {
            discard("the store failed").await;
            Err(match put {
                Err(pe) => pe.into(),
                Ok(_) => LakeError::Unavailable(format!("storing the parsed table: {e}")),
            })
        }
        (Err(_), _, put) => {
            // The broken stream made the put fail, so nothing is stored; make sure of it.
            if put.is_ok() {
                discard("the parse failed").await;
            }
            Ok((inv, None))
        }
        (Ok(_), Err(e), _) => {
            discard("the writer failed").await;
            Err(LakeError::Unavailable(format!(
                "writing the parsed table: {e}"
            )))
        }
        (Ok(_), Ok(_), Err(e)) => Err(e.into()),
        (Ok(_), Ok(written), Ok(size)) => {
            let (sha, _) = hash.finish();
            Ok((
                inv,
                Some(StoredTable {
                    written,
                    size,
                    sha256: sha.to_hex(),
                }),
            ))
        }
    }
}

/// [`parse_into_store`] over the stored object `from` (bucket, key): a parse run again over bytes
/// the store already holds (a split parse's failure, a parse that timed out waiting for a slow
/// client), or a pipeline run's over its input file. The store failing to hand the bytes back is
/// the outer error, like its failing to take the table.
#[allow(clippy::too_many_arguments)]
pub async fn parse_stored(
    plugins: &crate::plugins::Plugins,
    blobs: &dyn crate::blob::BlobStore,
    parser: &str,
    params: Vec<(String, String)>,
    (bucket, key): (&str, &str),
    to: (&str, &str),
    row_group_rows: usize,
    split: bool,
) -> Result<(crate::plugins::Invocation<SchemaRef>, Option<StoredTable>), crate::lake::LakeError> {
    let input = blobs.get(bucket, key).await?;
    parse_into_store(
        plugins,
        blobs,
        parser,
        params,
        input,
        to,
        row_group_rows,
        split,
    )
    .await
}

/// A dataset's Parquet files as one step input. The files' bytes are fetched first (Parquet needs
/// random access to its footer; they are compressed), then [`decode_ahead`] decodes them a batch
/// at a time, so two inputs start decoding at once and the decoding overlaps the plugin's work.
pub async fn read_dataset(
    catalog: &dyn crate::catalog::Catalog,
    blobs: &dyn crate::blob::BlobStore,
    d: &crate::catalog::Dataset,
) -> Result<StepInput, crate::lake::LakeError> {
    use crate::lake::LakeError;
    use futures::TryStreamExt;
    let files: Vec<_> = catalog
        .list_files(d.id)
        .await?
        .into_iter()
        .filter(|f| f.name.ends_with(".parquet"))
        .collect();
    if files.is_empty() {
        return Err(LakeError::Invalid(format!(
            "dataset {} ({}) holds no Parquet table; parse it first",
            d.id, d.name
        )));
    }
    let mut schema = None;
    let mut readers = Vec::new();
    let mut rows = 0;
    for f in files {
        let stream = blobs
            .get(&d.bucket, &format!("{}{}", d.prefix, f.name))
            .await?;
        // One buffer, filled as the stream arrives.
        let bytes = stream
            .try_fold(
                bytes::BytesMut::with_capacity(f.size as usize),
                |mut acc, chunk| async move {
                    acc.extend_from_slice(&chunk);
                    Ok(acc)
                },
            )
            .await
            .map_err(|e| LakeError::Unavailable(e.to_string()))?
            .freeze();
        let (reader, n) = parquet_reader(bytes).map_err(|e| {
            LakeError::Invalid(format!(
                "{} in dataset {} is not readable Parquet: {e}",
                f.name, d.id
            ))
        })?;
        let s = schema.get_or_insert_with(|| reader.schema());
        if s.fields() != reader.schema().fields() {
            return Err(LakeError::Invalid(format!(
                "the Parquet files of dataset {} do not share one schema",
                d.id
            )));
        }
        readers.push(reader);
        rows += n;
    }
    let schema = schema.ok_or_else(|| LakeError::Invalid("no schema".into()))?;
    Ok(decode_ahead(
        schema,
        rows,
        readers,
        format!("dataset {}", d.id),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::DataType;

    fn names(fields: &[&str]) -> SchemaRef {
        Arc::new(Schema::new(
            fields
                .iter()
                .map(|n| Field::new(*n, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ))
    }

    fn renamed_to(fields: &[&str]) -> Vec<String> {
        match unique_names(&names(fields)) {
            Some((s, _)) => s.fields().iter().map(|f| f.name().clone()).collect(),
            None => fields.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// Row groups encoded on several threads come back whole and in order: the file reads back
    /// row for row as written (nested and nullable columns included), each row group as long as
    /// the limit asks, whatever the batches' sizes.
    #[test]
    fn row_groups_encoded_at_once_come_back_in_order() -> Result<(), Box<dyn std::error::Error>> {
        use arrow_array::builder::{Int64Builder, ListBuilder};
        use arrow_array::{Array, Float64Array, Int64Array, StringArray};
        let item = Arc::new(Field::new("item", DataType::Int64, true));
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("x", DataType::Float64, true),
            Field::new("tags", DataType::List(item.clone()), true),
        ]));
        let mut batches = Vec::new();
        let mut next = 0i64;
        for (i, len) in [1000usize, 7000, 3, 4096, 12_345, 1, 2500, 9000]
            .into_iter()
            .enumerate()
        {
            let n: Vec<i64> = (next..next + len as i64).collect();
            next += len as i64;
            let name: StringArray = n
                .iter()
                .map(|v| (v % 7 != 0).then(|| format!("row {v} of batch {i}")))
                .collect();
            let x: Float64Array = n
                .iter()
                .map(|v| (v % 5 != 0).then_some(*v as f64 / 3.0))
                .collect();
            let mut tags = ListBuilder::new(Int64Builder::new()).with_field(item.clone());
            for v in &n {
                if v % 11 == 0 {
                    tags.append_null();
                } else {
                    for t in 0..(v % 4) {
                        tags.values().append_value(v * 10 + t);
                    }
                    tags.append(true);
                }
            }
            batches.push(RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(n)),
                    Arc::new(name),
                    Arc::new(x),
                    Arc::new(tags.finish()),
                ],
            )?);
        }
        let group = 4096;
        let mut w = TableWriter::new(Vec::new(), &schema, Some(group))?;
        for b in &batches {
            w.write(b)?;
        }
        let (bytes, written) = w.finish()?;
        let total = next as usize;
        assert_eq!(written.rows, total as u64);

        let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes.clone()))?;
        let sizes: Vec<i64> = builder
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        assert_eq!(sizes.len(), total.div_ceil(group), "row groups: {sizes:?}");
        assert!(
            sizes[..sizes.len() - 1].iter().all(|&r| r == group as i64),
            "{sizes:?}"
        );
        assert_eq!(sizes.iter().sum::<i64>(), total as i64);

        let (reader, rows) = parquet_reader(Bytes::from(bytes))?;
        assert_eq!(rows, total as u64);
        let back = reader.collect::<Result<Vec<_>, _>>()?;
        let back = arrow_select::concat::concat_batches(&back[0].schema(), &back)?;
        let sent = arrow_select::concat::concat_batches(&schema, &batches)?;
        assert_eq!(back.num_rows(), total);
        for c in 0..sent.num_columns() {
            // The stored list's item carries its field id: compare values, not field metadata.
            let read = arrow_cast::cast(back.column(c), sent.column(c).data_type())?;
            assert_eq!(
                read.to_data(),
                sent.column(c).to_data(),
                "column {} differs",
                schema.field(c).name()
            );
        }
        assert_eq!(back.column(3).null_count(), sent.column(3).null_count());
        Ok(())
    }

    /// `batch` written in slices of 1,000 rows, in row groups of `group` rows: the file.
    fn written_in_slices(
        batch: &RecordBatch,
        group: usize,
    ) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let rows = batch.num_rows();
        let mut w = TableWriter::new(Vec::new(), &batch.schema(), Some(group))?;
        for at in (0..rows).step_by(1000) {
            w.write(&batch.slice(at, 1000.min(rows - at)))?;
        }
        Ok(w.finish()?.0)
    }

    /// Reads `bytes` back and checks that every column is `batch`'s.
    fn assert_reads_back(
        bytes: Vec<u8>,
        batch: &RecordBatch,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (reader, _) = parquet_reader(Bytes::from(bytes))?;
        let back = reader.collect::<Result<Vec<_>, _>>()?;
        let back = arrow_select::concat::concat_batches(&back[0].schema(), &back)?;
        for c in 0..batch.num_columns() {
            assert_eq!(back.column(c).to_data(), batch.column(c).to_data());
        }
        Ok(())
    }

    /// A column whose dictionary outgrew its limit in a row group (every value distinct) is
    /// written plain in later row groups; a column of few values keeps its dictionary; the file
    /// reads back as written.
    #[test]
    fn a_column_that_outgrew_its_dictionary_is_written_plain_after()
    -> Result<(), Box<dyn std::error::Error>> {
        use arrow_array::StringArray;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
        ]));
        let group = 4096;
        let rows = group * 6;
        // 4096 distinct ids of 80 bytes: 320 KiB of dictionary, over the 256 KiB limit.
        let id: StringArray = (0..rows).map(|i| Some(format!("{i:080}"))).collect();
        let kind: StringArray = (0..rows).map(|i| Some(["a", "b", "c"][i % 3])).collect();
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(id), Arc::new(kind)])?;
        let bytes = written_in_slices(&batch, group)?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes.clone()))?;
        let groups = builder.metadata().row_groups();
        assert_eq!(groups.len(), 6);
        // The first row groups were handed out before any came back; from the fourth on, at
        // most one encoder was still busy when it was handed out (two threads, or one).
        for (i, g) in groups.iter().enumerate() {
            assert!(
                g.column(1).dictionary_page_offset().is_some(),
                "kind, row group {i}"
            );
        }
        for (i, g) in groups.iter().enumerate().skip(3) {
            assert!(
                g.column(0).dictionary_page_offset().is_none(),
                "id, row group {i}"
            );
        }
        assert!(
            groups[0].column(0).dictionary_page_offset().is_some(),
            "id tried at first"
        );
        assert_reads_back(bytes, &batch)
    }

    /// A column Snappy does not shrink (random measurements) is stored uncompressed in later row
    /// groups; a column it shrinks stays compressed; the file reads back the same.
    #[test]
    fn a_column_compression_does_not_shrink_is_stored_uncompressed_after()
    -> Result<(), Box<dyn std::error::Error>> {
        use arrow_array::{Float64Array, StringArray};
        use parquet::basic::Compression;
        let schema = Arc::new(Schema::new(vec![
            Field::new("noise", DataType::Float64, false),
            Field::new("note", DataType::Utf8, false),
        ]));
        let group = 4096;
        let rows = group * 6;
        // Random bits (xorshift): nothing for Snappy to find.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let noise: Float64Array = (0..rows)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                f64::from_bits(state >> 2)
            })
            .collect();
        let note: StringArray = (0..rows)
            .map(|i| {
                Some(format!(
                    "sample {i:08} of the same long repeated description"
                ))
            })
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(noise), Arc::new(note)])?;
        let bytes = written_in_slices(&batch, group)?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes.clone()))?;
        let groups = builder.metadata().row_groups();
        assert_eq!(groups.len(), 6);
        assert_eq!(groups[0].column(0).compression(), Compression::SNAPPY);
        // As with dictionaries: from the fourth row group on, the first had come back.
        for (i, g) in groups.iter().enumerate().skip(3) {
            assert_eq!(
                g.column(0).compression(),
                Compression::UNCOMPRESSED,
                "noise, row group {i}"
            );
        }
        for (i, g) in groups.iter().enumerate() {
            assert_eq!(
                g.column(1).compression(),
                Compression::SNAPPY,
                "note, row group {i}"
            );
            assert!(
                g.column(1).compressed_size() * 2 < g.column(1).uncompressed_size(),
                "note, row group {i}"
            );
        }
        assert_reads_back(bytes, &batch)
    }

    /// A table whose batches are slices of one buffer (as a plugin's decoded output is) weighs
    /// that buffer once, not once per batch; separate buffers add up.
    #[test]
    fn held_bytes_counts_a_shared_buffer_once() -> Result<(), arrow_schema::ArrowError> {
        use arrow_array::{Array, Int64Array};
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let whole = Int64Array::from_iter_values(0..1_000_000);
        let bytes = whole.get_buffer_memory_size();
        assert!(bytes >= 8_000_000, "{bytes}");
        let sliced: Vec<RecordBatch> = (0..100)
            .map(|i| {
                RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(whole.slice(i * 10_000, 10_000))],
                )
            })
            .collect::<Result<_, _>>()?;
        let per_batch: usize = sliced.iter().map(RecordBatch::get_array_memory_size).sum();
        assert!(
            per_batch >= 100 * bytes,
            "the per-batch sum counts it 100 times"
        );
        assert_eq!(held_bytes(&sliced), bytes);
        // Two separate buffers count twice; the same batch twice counts once.
        let other = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..1_000_000))],
        )?;
        let first = RecordBatch::try_new(schema, vec![Arc::new(whole)])?;
        assert_eq!(held_bytes(&[first.clone(), other]), 2 * bytes);
        assert_eq!(held_bytes(&[first.clone(), first]), bytes);
        Ok(())
    }

    #[test]
    fn empty_and_repeated_names_become_unique() {
        assert!(unique_names(&names(&["a", "b"])).is_none());
        assert_eq!(renamed_to(&["", "b", ""]), ["column_1", "b", "column_3"]);
        assert_eq!(renamed_to(&["x", "x", "x"]), ["x", "x_2", "x_3"]);
        // A repeat never takes a name a later column has as given.
        assert_eq!(renamed_to(&["x", "x", "x_2"]), ["x", "x_3", "x_2"]);
        // An empty name's default is taken by a real column.
        assert_eq!(renamed_to(&["column_2", ""]), ["column_2", "column_2_2"]);
        let Some((_, r)) = unique_names(&names(&["id", "", "id"])) else {
            panic!("renames expected")
        };
        assert_eq!(
            r,
            vec![
                Renamed {
                    position: 2,
                    from: String::new(),
                    to: "column_2".into()
                },
                Renamed {
                    position: 3,
                    from: "id".into(),
                    to: "id_2".into()
                }
            ]
        );
    }

    #[tokio::test]
    async fn first_rows_reads_only_the_footer_and_first_pages()
    -> Result<(), Box<dyn std::error::Error>> {
        use arrow_array::{Int64Array, StringArray};
        let dir = tempfile::tempdir()?;
        let store = crate::blob::local::LocalStore::open(dir.path()).await?;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("note", DataType::Utf8, false),
        ]));
        // 800,000 rows of text that does not compress away: megabytes of Parquet.
        let mut out = Vec::new();
        let mut w = TableWriter::new(&mut out, &schema, None)?;
        for b in 0..80 {
            let ids: Vec<i64> = (b * 10_000..(b + 1) * 10_000).collect();
            let notes: Vec<String> = ids
                .iter()
                .map(|i| format!("{:x}", (*i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)))
                .collect();
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(ids)),
                    Arc::new(StringArray::from(notes)),
                ],
            )?;
            w.write(&batch)?;
        }
        w.finish()?;
        let size = out.len() as u64;
        assert!(size > 4 << 20, "a table of {size} bytes");
        let stream: crate::blob::ByteStream =
            Box::pin(futures::stream::once(async move { Ok(Bytes::from(out)) }));
        let blobs: Arc<dyn crate::blob::BlobStore> = Arc::new(store);
        blobs
            .put("lake-processed", "t/table.parquet", stream)
            .await?;

        let first =
            first_rows(blobs.clone(), "lake-processed", "t/table.parquet", size, 20).await?;
        assert_eq!(first.total_rows, 800_000);
        let mut ids = Vec::new();
        for b in &first.batches {
            let col = b.column(0).as_any().downcast_ref::<Int64Array>();
            ids.extend(col.map(|c| c.values().to_vec()).unwrap_or_default());
        }
        assert_eq!(ids, (0..20).collect::<Vec<_>>());
        assert!(
            first.bytes_read < size / 4,
            "read {} of {size} bytes for 20 rows",
            first.bytes_read
        );
        // A file cut short is an error, not rows.
        let r = first_rows(blobs, "lake-processed", "t/table.parquet", size + 100, 20).await;
        assert!(r.is_err(), "{r:?}");
        Ok(())
    }
}
