//! The bundled `merge` step: joins two input tables on key columns, as `pandas.merge` does.
//!
//! Parameters: `on`, a column name or a list of names present in both tables; `how`, `inner`
//! (default, only rows whose keys match), `left` (every left row), `right` (every right row) or
//! `outer` (every row of both); `suffixes`, two strings (default `["_x", "_y"]`) appended to the
//! non-key columns that both tables have, left then right; `nulls_equal` (default `false`); and
//! `batch_rows`, the most rows per output batch (default 65536); `right_first` (default `false`):
//! the inputs come as (right, left) instead, which lets the join stream (below). The output has every left column in
//! left order, then the right table's non-key columns in right order; each key appears once, under
//! its name in `on`, and in a right or outer join takes its value from whichever side has the
//! row. Columns of a side that can be missing from a row become nullable. Rows come in left order,
//! each left row followed by its matches in right order (every pair when keys repeat on both
//! sides); in right and outer joins the right rows that matched nothing follow, in right order.
//!
//! Keys compare by value: integers of any width as 64-bit integers (`uint64` only with
//! `uint64`), floats as 64-bit floats (NaN matches NaN, -0.0 matches 0.0), the three string types
//! with each other, and any other type only with the same type. As in SQL and Polars, a null key
//! matches nothing by default, so its row appears only as an unmatched row of a left, right or
//! outer join; with `nulls_equal: true` a null matches a null, as in pandas.
//!
//! The host sends all of the first input, then all of the second. By default both tables' batches
//! are kept as they come; when the inputs end, the right table's keys are hashed (foldhash) into an
//! open-addressing index of a few words per right row, the left rows probe it batch by batch, and
//! the output is gathered from the inputs, `batch_rows` rows at a time. With `right_first`, the
//! index is built when the first left batch arrives, and each left batch is probed and its output
//! returned at once: neither the whole left table nor the whole result is ever held, which is how
//! the file service runs large merges.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use arrow_array::types::{Float64Type, Int32Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BinaryViewArray, FixedSizeBinaryArray, Int64Array,
    LargeBinaryArray, LargeStringArray, PrimitiveArray, StringArray, StringViewArray, make_array,
    new_null_array,
};
use arrow_cast::{can_cast_types, cast};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use arrow_select::interleave::interleave;
use foldhash::fast::FixedState;
use lake_sdk::{Info, Params, PluginError, RecordBatch, Result, Step};
use serde::Deserialize;

/// Which rows a join keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum How {
    /// Only rows whose keys match.
    #[default]
    Inner,
    /// Every left row, with nulls where no right row matches.
    Left,
    /// Every right row, with nulls where no left row matches.
    Right,
    /// Every row of both tables.
    Outer,
}

impl How {
    /// Whether left rows that match nothing are kept.
    fn keeps_left(self) -> bool {
        matches!(self, How::Left | How::Outer)
    }

    /// Whether right rows that match nothing are kept.
    fn keeps_right(self) -> bool {
        matches!(self, How::Right | How::Outer)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// The key columns, present in both tables: one name or a list.
    #[serde(deserialize_with = "one_or_many")]
    on: Vec<String>,
    /// Which rows to keep.
    #[serde(default)]
    how: How,
    /// Appended to the names of non-key columns both tables have: left suffix, right suffix.
    #[serde(default = "default_suffixes")]
    suffixes: Vec<String>,
    /// Whether a null key matches a null key; by default it matches nothing.
    #[serde(default)]
    nulls_equal: bool,
    /// The most rows per output batch.
    #[serde(default = "default_batch_rows")]
    batch_rows: usize,
    /// The inputs are (right, left): join each left batch as it arrives.
    #[serde(default)]
    right_first: bool,
}

fn default_suffixes() -> Vec<String> {
    vec!["_x".into(), "_y".into()]
}

fn default_batch_rows() -> usize {
    64 * 1024
}

/// Deserializes a column name or a list of names into a list.
fn one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<String>, D::Error> {
    let bad = || serde::de::Error::custom("on: give a column name or a list of column names");
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(vec![s]),
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Ok(s),
                _ => Err(bad()),
            })
            .collect(),
        _ => Err(bad()),
    }
}

/// How one key column is compared and output.
#[derive(Debug)]
struct KeyPlan {
    /// Its index in the left table and in the right table.
    index: [usize; 2],
    /// Both sides are cast to this type, then normalised ([`KeyArr`]), to be compared.
    match_type: DataType,
    /// The type of the key column in the output.
    out_type: DataType,
}

/// Where an output column comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A non-key column of the left table, by index.
    Left(usize),
    /// Key number `k`, from the left row, or the right row when there is no left row.
    Key(usize),
    /// A non-key column of the right table, by index.
    Right(usize),
}

/// One input table as it arrives.
#[derive(Debug, Default)]
struct Side {
    batches: Vec<RecordBatch>,
    /// Per batch, per key: the values normalised for hashing and comparing.
    keys: Vec<Vec<KeyArr>>,
    /// Per batch, per key: the values in the output key type (empty when never output).
    out_keys: Vec<Vec<ArrayRef>>,
    /// The table row of each batch's first row, then the row count.
    starts: Vec<usize>,
    /// The rows of every batch but the last, when they all have that many (and the last no more).
    uniform: Option<usize>,
}

impl Side {
    fn rows(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    /// The batch and row in it of table row `row`.
    fn locate(&self, row: usize) -> (usize, usize) {
        if let Some(n) = self.uniform {
            return (row / n, row % n);
        }
        let b = self.starts.partition_point(|&s| s <= row).saturating_sub(1);
        (b, row - self.starts[b])
    }

    /// Adds a batch with its normalised and output keys.
    fn add(&mut self, batch: RecordBatch, keys: Vec<KeyArr>, out_keys: Vec<ArrayRef>) {
        if self.starts.is_empty() {
            self.starts.push(0);
        }
        self.starts.push(self.rows() + batch.num_rows());
        self.keys.push(keys);
        self.out_keys.push(out_keys);
        self.batches.push(batch);
    }

    /// Closes the input: the row bookkeeping is complete.
    fn close(&mut self) {
        if self.starts.is_empty() {
            self.starts.push(0);
        }
        let sizes: Vec<usize> = self.starts.windows(2).map(|w| w[1] - w[0]).collect();
        self.uniform = match sizes.split_last() {
            Some((&last, rest)) => {
                let n = rest.first().copied().unwrap_or(last);
                (n > 0 && last <= n && rest.iter().all(|&s| s == n)).then_some(n)
            }
            None => None,
        };
    }
}

/// The step state.
#[derive(Debug)]
pub struct Merge {
    how: How,
    nulls_equal: bool,
    batch_rows: usize,
    inputs: [SchemaRef; 2],
    keys: Vec<KeyPlan>,
    sources: Vec<Source>,
    schema: SchemaRef,
    sides: [Side; 2],
    /// The inputs are (right, left) ([`Options::right_first`]).
    right_first: bool,
    /// With `right_first`: the right table's index, once the first left batch came.
    index: Option<Index>,
    /// Per right row, whether a left row matched it (right and outer joins only).
    matched: Vec<bool>,
}

impl Step for Merge {
    fn info() -> Info {
        Info {
            name: "merge",
            version: env!("CARGO_PKG_VERSION"),
            description: "Join two tables on key columns (inner, left, right, outer), as pandas.merge does",
            capabilities: &[],
        }
    }

    fn start(params: Params, inputs: Vec<SchemaRef>) -> Result<Self> {
        let opts: Options = params.parse()?;
        let (left, right) = match &inputs[..] {
            [a, b] if opts.right_first => (b, a),
            [a, b] => (a, b),
            _ => {
                return Err(PluginError::InvalidParams(format!(
                    "merge takes two input tables (left, right), not {}",
                    inputs.len()
                )));
            }
        };
        if opts.on.is_empty() {
            return Err(PluginError::InvalidParams(
                "on: name at least one key column".into(),
            ));
        }
        for (i, c) in opts.on.iter().enumerate() {
            if opts.on[..i].contains(c) {
                return Err(PluginError::InvalidParams(format!(
                    "on: column {c:?} is named twice"
                )));
            }
        }
        let [suffix_left, suffix_right] = &opts.suffixes[..] else {
            return Err(PluginError::InvalidParams(format!(
                r#"suffixes: give two strings, as ["_x", "_y"], not {}"#,
                opts.suffixes.len()
            )));
        };
        if opts.batch_rows == 0 {
            return Err(PluginError::InvalidParams(
                "batch_rows must be at least 1".into(),
            ));
        }
        let mut keys = Vec::with_capacity(opts.on.len());
        for name in &opts.on {
            let index = [column(left, name, "left")?, column(right, name, "right")?];
            let (l, r) = (
                left.field(index[0]).data_type(),
                right.field(index[1]).data_type(),
            );
            let (match_type, out_type) = key_types(name, l, r)?;
            keys.push(KeyPlan {
                index,
                match_type,
                out_type,
            });
        }
        let (sources, schema) =
            output_schema(left, right, &keys, opts.how, suffix_left, suffix_right)?;
        Ok(Merge {
            how: opts.how,
            nulls_equal: opts.nulls_equal,
            batch_rows: opts.batch_rows,
            inputs: [left.clone(), right.clone()],
            keys,
            sources,
            schema,
            sides: [Side::default(), Side::default()],
            right_first: opts.right_first,
            index: None,
            matched: Vec::new(),
        })
    }

    fn push(&mut self, input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        // The side (0 left, 1 right) that this input is.
        let input = match (input, self.right_first) {
            (0 | 1, false) => input,
            (0 | 1, true) => 1 - input,
            _ => {
                return Err(PluginError::InvalidInput(format!(
                    "merge has inputs 0 and 1, not {input}"
                )));
            }
        };
        let expected = &self.inputs[input];
        let columns = batch.columns();
        if columns.len() != expected.fields().len()
            || columns
                .iter()
                .zip(expected.fields())
                .any(|(c, f)| c.data_type() != f.data_type())
        {
            return Err(PluginError::InvalidInput(format!(
                "a batch of the {} table does not match its schema",
                if input == 0 { "left" } else { "right" }
            )));
        }
        // The right table's output keys are only needed to fill keys of right rows without a
        // left match.
        let keep_out = input == 0 || self.how.keeps_right();
        let mut keys = Vec::with_capacity(self.keys.len());
        let mut out_keys = Vec::new();
        for k in &self.keys {
            let column = &columns[k.index[input]];
            let matched = cast(column, &k.match_type)?;
            keys.push(KeyArr::new(&matched)?);
            if keep_out {
                // The output type is the match type, or else the column's own (see key_types).
                out_keys.push(if k.out_type == k.match_type {
                    matched
                } else {
                    column.clone()
                });
            }
        }
        if self.right_first && input == 0 {
            let mut left = Side::default();
            left.add(batch, keys, out_keys);
            left.close();
            return self.stream(&left);
        }
        self.sides[input].add(batch, keys, out_keys);
        Ok(Vec::new())
    }

    fn finish(&mut self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let [mut left, mut right] = std::mem::take(&mut self.sides);
        left.close();
        right.close();
        let mut matched = self.take_matched(right.rows());
        // With `right_first` every left batch has been joined already and `left` is empty, so
        // no index is needed (and the one `stream` kept is dropped).
        let index = match left.rows() {
            0 => None,
            _ => Some(self.take_index(&mut right)?),
        };
        self.index = None;
        let mut out = Output::new(self, &left, &right);
        if let Some(index) = index {
            self.probe(&index, &left, &right, &mut matched, &mut out)?;
        }
        if self.how.keeps_right() {
            for (rb, batch) in right.batches.iter().enumerate() {
                let start = right.starts[rb];
                for rr in 0..batch.num_rows() {
                    if !matched[start + rr] {
                        out.push_right((rb, rr))?;
                    }
                }
            }
        }
        let batches = out.finish()?;
        Ok((self.schema.clone(), batches))
    }
}

impl Merge {
    /// With `right_first`: joins one left batch against the whole right table, building the
    /// index the first time.
    fn stream(&mut self, left: &Side) -> Result<Vec<RecordBatch>> {
        let mut right = std::mem::take(&mut self.sides[1]);
        let index = self.take_index(&mut right)?;
        let mut matched = self.take_matched(right.rows());
        let mut out = Output::new(self, left, &right);
        let joined = self
            .probe(&index, left, &right, &mut matched, &mut out)
            .and_then(|()| out.finish());
        self.sides[1] = right;
        self.index = Some(index);
        self.matched = matched;
        joined
    }

    /// The index of `right`: the one `stream` kept, or a new one over `right`, closed first.
    fn take_index(&mut self, right: &mut Side) -> Result<Index> {
        match self.index.take() {
            Some(index) => Ok(index),
            None => {
                right.close();
                Index::build(right, self.nulls_equal)
            }
        }
    }

    /// Per right row, whether a left row matched it so far (empty unless the join keeps right
    /// rows).
    fn take_matched(&mut self, right_rows: usize) -> Vec<bool> {
        if self.matched.len() != right_rows && self.how.keeps_right() {
            self.matched = vec![false; right_rows];
        }
        std::mem::take(&mut self.matched)
    }

    /// Probes the index of `right` with every row of `left`, in order, adding the joined rows to
    /// `out` and marking the right rows that matched.
    fn probe(
        &self,
        index: &Index,
        left: &Side,
        right: &Side,
        matched: &mut [bool],
        out: &mut Output<'_>,
    ) -> Result<()> {
        let mut hashes = Vec::new();
        let mut valid = Vec::new();
        for (lb, (batch, keys)) in left.batches.iter().zip(&left.keys).enumerate() {
            let rows = batch.num_rows();
            hash_rows(keys, rows, self.nulls_equal, &mut hashes, &mut valid);
            for block in (0..rows).step_by(PROBE_BLOCK) {
                let block = block..rows.min(block + PROBE_BLOCK);
                index.warm(&hashes[block.clone()], right);
                for i in block {
                    let found = if valid[i] {
                        index.find(hashes[i], keys, i, right, self.nulls_equal)
                    } else {
                        None
                    };
                    let Some((first, more)) = found else {
                        if self.how.keeps_left() {
                            out.push((lb, i), None)?;
                        }
                        continue;
                    };
                    // The rows with this key, in table order.
                    let mut g = Some(first);
                    while let Some(r) = g {
                        if let Some(m) = matched.get_mut(r) {
                            *m = true;
                        }
                        out.push((lb, i), Some(right.locate(r)))?;
                        g = if more { index.next(r) } else { None };
                    }
                }
            }
        }
        Ok(())
    }
}

lake_sdk::export_step!(crate::Merge);

/// The index of column `name` in the `side` table, or an error listing its columns.
fn column(schema: &Schema, name: &str, side: &str) -> Result<usize> {
    schema.index_of(name).map_err(|_| {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        PluginError::InvalidParams(format!(
            "on: no column {name:?} in the {side} table; its columns are {names:?}"
        ))
    })
}

/// The families of types whose members compare with each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Int,
    Float,
    Text,
}

fn family(t: &DataType) -> Option<Family> {
    match t {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => Some(Family::Int),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => Some(Family::Float),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(Family::Text),
        DataType::Dictionary(_, v) => family(v),
        _ => None,
    }
}

/// A type's name for messages: `int64`, `utf8`, `timestamp(ms)`.
fn type_name(t: &DataType) -> String {
    let s = t.to_string();
    let head = s.find('(').unwrap_or(s.len());
    format!("{}{}", s[..head].to_lowercase(), &s[head..])
}

/// The type both sides of key `name` are compared as, and the key's output type; or why the left
/// type `l` and the right type `r` cannot be compared.
fn key_types(name: &str, l: &DataType, r: &DataType) -> Result<(DataType, DataType)> {
    let fam = family(l);
    if l != r && (fam.is_none() || fam != family(r)) {
        return Err(PluginError::InvalidParams(format!(
            "on: key {name:?} is {} on the left and {} on the right",
            type_name(l),
            type_name(r)
        )));
    }
    let text = |t: &DataType| match t {
        DataType::Dictionary(_, v) => v.as_ref().clone(),
        t => t.clone(),
    };
    let match_type = match fam {
        Some(Family::Int) => DataType::Int64,
        Some(Family::Float) => DataType::Float64,
        Some(Family::Text) => {
            let (lt, rt) = (text(l), text(r));
            if lt == rt {
                lt
            } else if lt == DataType::LargeUtf8 || rt == DataType::LargeUtf8 {
                DataType::LargeUtf8
            } else {
                DataType::Utf8
            }
        }
        None => text(l),
    };
    let supported = matches!(
        match_type,
        DataType::Null
            | DataType::Boolean
            | DataType::Int64
            | DataType::UInt64
            | DataType::Float64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::FixedSizeBinary(_)
            | DataType::Date32
            | DataType::Date64
            | DataType::Time32(_)
            | DataType::Time64(_)
            | DataType::Timestamp(..)
            | DataType::Duration(_)
            | DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..)
    );
    if !supported || !can_cast_types(l, &match_type) || !can_cast_types(r, &match_type) {
        return Err(PluginError::Unsupported(format!(
            "merge cannot join on key {name:?} of type {}",
            type_name(l)
        )));
    }
    // Identical types keep their type; otherwise both sides become the common type.
    let out_type = if l == r {
        l.clone()
    } else {
        match_type.clone()
    };
    Ok((match_type, out_type))
}

/// Plans the output columns and their schema, refusing names that would appear twice.
fn output_schema(
    left: &Schema,
    right: &Schema,
    keys: &[KeyPlan],
    how: How,
    suffix_left: &str,
    suffix_right: &str,
) -> Result<(Vec<Source>, SchemaRef)> {
    let is_key = |side: usize, i: usize| keys.iter().position(|k| k.index[side] == i);
    let plain = |schema: &Schema, side: usize| -> BTreeSet<String> {
        schema
            .fields()
            .iter()
            .enumerate()
            .filter(|&(i, _)| is_key(side, i).is_none())
            .map(|(_, f)| f.name().clone())
            .collect()
    };
    let both: BTreeSet<String> = plain(left, 0)
        .intersection(&plain(right, 1))
        .cloned()
        .collect();
    let mut sources = Vec::new();
    let mut fields = Vec::new();
    let mut suffixed = BTreeSet::new();
    let mut rename = |f: &Field, suffix: &str| {
        if both.contains(f.name()) {
            let name = format!("{}{suffix}", f.name());
            suffixed.insert(name.clone());
            f.clone().with_name(name)
        } else {
            f.clone()
        }
    };
    for (i, f) in left.fields().iter().enumerate() {
        if let Some(k) = is_key(0, i) {
            let r = right.field(keys[k].index[1]);
            let nullable = f.is_nullable() || (how.keeps_right() && r.is_nullable());
            sources.push(Source::Key(k));
            fields.push(
                f.as_ref()
                    .clone()
                    .with_data_type(keys[k].out_type.clone())
                    .with_nullable(nullable),
            );
        } else {
            sources.push(Source::Left(i));
            let f = rename(f, suffix_left);
            let nullable = f.is_nullable() || how.keeps_right();
            fields.push(f.with_nullable(nullable));
        }
    }
    for (i, f) in right.fields().iter().enumerate() {
        if is_key(1, i).is_none() {
            sources.push(Source::Right(i));
            let f = rename(f, suffix_right);
            let nullable = f.is_nullable() || how.keeps_left();
            fields.push(f.with_nullable(nullable));
        }
    }
    let mut seen = BTreeSet::new();
    for f in &fields {
        if !seen.insert(f.name().as_str()) {
            let name = f.name();
            return Err(PluginError::InvalidParams(if suffixed.contains(name) {
                format!(
                    "suffixes: the output would have two columns named {name:?}; choose other suffixes"
                )
            } else {
                format!("the output would have two columns named {name:?}")
            }));
        }
    }
    Ok((sources, Arc::new(Schema::new(fields))))
}

/// The key values of one batch, normalised so that equal keys hash and compare equal.
#[derive(Debug)]
enum KeyArr {
    /// Integers, booleans, dates, times, small decimals, and float bits (NaN and -0.0 made one).
    Int(Int64Array),
    Utf8(StringArray),
    LargeUtf8(LargeStringArray),
    Utf8View(StringViewArray),
    Binary(BinaryArray),
    LargeBinary(LargeBinaryArray),
    BinaryView(BinaryViewArray),
    /// Fixed-size binary, and the bytes of 128- and 256-bit decimals.
    Fixed(FixedSizeBinaryArray),
}

/// Casts to a concrete array type, which `a`'s data type promises.
fn downcast<T: Array + Clone + 'static>(a: &ArrayRef) -> Result<T> {
    a.as_any()
        .downcast_ref::<T>()
        .cloned()
        .ok_or_else(|| PluginError::Internal(format!("a {} key did not downcast", a.data_type())))
}

/// The same buffers read as another type of the same width.
fn reinterpret(a: &ArrayRef, to: DataType) -> Result<ArrayRef> {
    Ok(make_array(
        a.to_data().into_builder().data_type(to).build()?,
    ))
}

/// The canonical bits of a float key: one NaN, one zero.
fn float_bits(v: f64) -> i64 {
    if v == 0.0 {
        0
    } else if v.is_nan() {
        f64::NAN.to_bits() as i64
    } else {
        v.to_bits() as i64
    }
}

impl KeyArr {
    /// Normalises an array of a key's match type.
    fn new(a: &ArrayRef) -> Result<KeyArr> {
        Ok(match a.data_type() {
            DataType::Int64 => KeyArr::Int(downcast(a)?),
            DataType::Float64 => {
                KeyArr::Int(downcast::<PrimitiveArray<Float64Type>>(a)?.unary(float_bits))
            }
            DataType::Null => KeyArr::Int(Int64Array::new_null(a.len())),
            DataType::Boolean => KeyArr::Int(downcast(&cast(a, &DataType::Int64)?)?),
            DataType::UInt64
            | DataType::Date64
            | DataType::Time64(_)
            | DataType::Timestamp(..)
            | DataType::Duration(_)
            | DataType::Decimal64(..) => KeyArr::Int(downcast(&reinterpret(a, DataType::Int64)?)?),
            DataType::Date32 | DataType::Time32(_) | DataType::Decimal32(..) => {
                let ints = reinterpret(a, DataType::Int32)?;
                let ints = downcast::<PrimitiveArray<Int32Type>>(&ints)?;
                KeyArr::Int(ints.unary::<_, Int64Type>(i64::from))
            }
            DataType::Utf8 => KeyArr::Utf8(downcast(a)?),
            DataType::LargeUtf8 => KeyArr::LargeUtf8(downcast(a)?),
            DataType::Utf8View => KeyArr::Utf8View(downcast(a)?),
            DataType::Binary => KeyArr::Binary(downcast(a)?),
            DataType::LargeBinary => KeyArr::LargeBinary(downcast(a)?),
            DataType::BinaryView => KeyArr::BinaryView(downcast(a)?),
            DataType::FixedSizeBinary(_) => KeyArr::Fixed(downcast(a)?),
            DataType::Decimal128(..) => {
                KeyArr::Fixed(downcast(&reinterpret(a, DataType::FixedSizeBinary(16))?)?)
            }
            DataType::Decimal256(..) => {
                KeyArr::Fixed(downcast(&reinterpret(a, DataType::FixedSizeBinary(32))?)?)
            }
            t => {
                return Err(PluginError::Internal(format!(
                    "no key normalisation for type {t}"
                )));
            }
        })
    }

    /// Reads value `i` (its length and first byte, for bytes), to bring it into the cache.
    fn touch(&self, i: usize) -> u64 {
        let bytes = |b: &[u8]| b.len() as u64 + b.first().map_or(0, |&x| u64::from(x));
        match self {
            KeyArr::Int(a) => a.values()[i] as u64,
            KeyArr::Utf8(a) => bytes(a.value(i).as_bytes()),
            KeyArr::LargeUtf8(a) => bytes(a.value(i).as_bytes()),
            KeyArr::Utf8View(a) => bytes(a.value(i).as_bytes()),
            KeyArr::Binary(a) => bytes(a.value(i)),
            KeyArr::LargeBinary(a) => bytes(a.value(i)),
            KeyArr::BinaryView(a) => bytes(a.value(i)),
            KeyArr::Fixed(a) => bytes(a.value(i)),
        }
    }

    fn is_null(&self, i: usize) -> bool {
        let a: &dyn Array = match self {
            KeyArr::Int(a) => a,
            KeyArr::Utf8(a) => a,
            KeyArr::LargeUtf8(a) => a,
            KeyArr::Utf8View(a) => a,
            KeyArr::Binary(a) => a,
            KeyArr::LargeBinary(a) => a,
            KeyArr::BinaryView(a) => a,
            KeyArr::Fixed(a) => a,
        };
        a.is_null(i)
    }

    /// Hashes row values into `hashes` (combining with what is there unless `first`), and clears
    /// `valid` for null values unless `nulls_equal`.
    fn hash_into(&self, first: bool, nulls_equal: bool, hashes: &mut [u64], valid: &mut [bool]) {
        match self {
            KeyArr::Int(a) => {
                let v = a.values();
                fill(a, first, nulls_equal, hashes, valid, |i| hash_int(v[i]))
            }
            KeyArr::Utf8(a) => fill(a, first, nulls_equal, hashes, valid, |i| {
                hash_bytes(a.value(i).as_bytes())
            }),
            KeyArr::LargeUtf8(a) => fill(a, first, nulls_equal, hashes, valid, |i| {
                hash_bytes(a.value(i).as_bytes())
            }),
            KeyArr::Utf8View(a) => fill(a, first, nulls_equal, hashes, valid, |i| {
                hash_bytes(a.value(i).as_bytes())
            }),
            KeyArr::Binary(a) => fill(a, first, nulls_equal, hashes, valid, |i| {
                hash_bytes(a.value(i))
            }),
            KeyArr::LargeBinary(a) => fill(a, first, nulls_equal, hashes, valid, |i| {
                hash_bytes(a.value(i))
            }),
            KeyArr::BinaryView(a) => fill(a, first, nulls_equal, hashes, valid, |i| {
                hash_bytes(a.value(i))
            }),
            KeyArr::Fixed(a) => fill(a, first, nulls_equal, hashes, valid, |i| {
                hash_bytes(a.value(i))
            }),
        }
    }

    /// Whether value `i` here equals value `j` of `other` (both non-null).
    fn eq(&self, i: usize, other: &KeyArr, j: usize) -> bool {
        match (self, other) {
            (KeyArr::Int(a), KeyArr::Int(b)) => a.values()[i] == b.values()[j],
            (KeyArr::Utf8(a), KeyArr::Utf8(b)) => bytes_eq(a.value(i), b.value(j)),
            (KeyArr::LargeUtf8(a), KeyArr::LargeUtf8(b)) => bytes_eq(a.value(i), b.value(j)),
            (KeyArr::Utf8View(a), KeyArr::Utf8View(b)) => bytes_eq(a.value(i), b.value(j)),
            (KeyArr::Binary(a), KeyArr::Binary(b)) => bytes_eq(a.value(i), b.value(j)),
            (KeyArr::LargeBinary(a), KeyArr::LargeBinary(b)) => bytes_eq(a.value(i), b.value(j)),
            (KeyArr::BinaryView(a), KeyArr::BinaryView(b)) => bytes_eq(a.value(i), b.value(j)),
            (KeyArr::Fixed(a), KeyArr::Fixed(b)) => bytes_eq(a.value(i), b.value(j)),
            _ => false,
        }
    }
}

/// Whether two keys' bytes are equal. Keys are mostly short ids, and in the sandbox `==` on
/// slices calls the guest's `memcmp` for every probe: a key of 8 to 16 bytes is compared here as
/// two overlapping 8-byte words instead, inline.
fn bytes_eq(a: impl AsRef<[u8]>, b: impl AsRef<[u8]>) -> bool {
    let (a, b) = (a.as_ref(), b.as_ref());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if (8..=16).contains(&n) {
        let word = |s: &[u8], at: usize| {
            s.get(at..at + 8)
                .and_then(|w| <[u8; 8]>::try_from(w).ok())
                .map(u64::from_ne_bytes)
        };
        return word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8);
    }
    a == b
}

/// Left rows probed together, a few hundred kilobytes of slots and keys to keep in the cache.
const PROBE_BLOCK: usize = 256;

/// The hash of a null key value, when nulls match.
const NULL_HASH: u64 = 0x9e37_79b9_7f4a_7c15;
/// Seeds the hashes; any constant does, the index lives only for one run.
const SEED: u64 = 0x243f_6a88_85a3_08d3;
const MIX: u64 = 0x5851_f42d_4c95_7f2d;

/// Multiplies and folds the halves of the product together: a fast, well-spread mix.
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

fn hash_int(v: i64) -> u64 {
    fold_mul(v as u64 ^ SEED, MIX)
}

fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = FixedState::with_seed(SEED).build_hasher();
    h.write(b);
    h.finish()
}

/// Folds the hash of one more key column into a row hash; the order of columns matters.
fn combine(h: u64, v: u64) -> u64 {
    fold_mul(h, MIX) ^ v
}

/// The loop behind [`KeyArr::hash_into`], with `hash` the hash of the non-null value at a row.
fn fill(
    a: &dyn Array,
    first: bool,
    nulls_equal: bool,
    hashes: &mut [u64],
    valid: &mut [bool],
    hash: impl Fn(usize) -> u64,
) {
    let put = |h: &mut u64, v: u64| *h = if first { v } else { combine(*h, v) };
    match a.nulls().filter(|n| n.null_count() > 0) {
        None => {
            for (i, h) in hashes.iter_mut().enumerate() {
                put(h, hash(i));
            }
        }
        Some(nulls) => {
            for (i, (h, ok)) in hashes.iter_mut().zip(valid.iter_mut()).enumerate() {
                if nulls.is_null(i) {
                    *ok &= nulls_equal;
                    put(h, NULL_HASH);
                } else {
                    put(h, hash(i));
                }
            }
        }
    }
}

/// Hashes the keys of `rows` rows into `hashes`; `valid` says which rows can match anything.
fn hash_rows(
    keys: &[KeyArr],
    rows: usize,
    nulls_equal: bool,
    hashes: &mut Vec<u64>,
    valid: &mut Vec<bool>,
) {
    hashes.clear();
    hashes.resize(rows, 0);
    valid.clear();
    valid.resize(rows, true);
    for (k, key) in keys.iter().enumerate() {
        key.hash_into(k == 0, nulls_equal, hashes, valid);
    }
    #[cfg(test)]
    {
        let bits = tests::HASH_BITS.with(|b| b.get());
        hashes.iter_mut().for_each(|h| *h &= bits);
    }
}

/// Whether row `i` of a left batch's keys matches row `j` of a right batch's keys.
fn keys_equal(left: &[KeyArr], i: usize, right: &[KeyArr], j: usize, nulls_equal: bool) -> bool {
    left.iter().zip(right).all(|(l, r)| {
        if nulls_equal {
            match (l.is_null(i), r.is_null(j)) {
                (true, true) => return true,
                (false, false) => {}
                _ => return false,
            }
        }
        l.eq(i, r, j)
    })
}

/// The right table's rows grouped by key: an open-addressing table with a slot per distinct key,
/// holding the high half of its hash and its first row, and a chain from each row to the next row
/// with the same key, so a probe touches one slot and one key per left row, then only matches.
#[derive(Debug)]
struct Index {
    mask: usize,
    /// Per key: (high half of the hash, first row + 1, with [`MORE`] set when other rows have the
    /// key too); (0, 0) is an empty slot.
    slots: Vec<(u32, u32)>,
    /// Per row: the next row with the same key, plus 1; 0 after the last.
    next: Vec<u32>,
}

/// Marks a slot whose key has several rows, so that a key with one row skips its chain.
const MORE: u32 = 1 << 31;

/// A right row found for a left row: the row, and whether others with the same key follow.
type Found = Option<(usize, bool)>;

impl Index {
    fn build(side: &Side, nulls_equal: bool) -> Result<Index> {
        let rows = side.rows();
        let too_large = || {
            PluginError::TooLarge(format!(
                "the right table has {rows} rows; merge indexes fewer than {}",
                MORE - 1
            ))
        };
        if rows >= (MORE - 1) as usize {
            return Err(too_large());
        }
        let mut hashes = Vec::with_capacity(rows);
        let mut valid = Vec::with_capacity(rows);
        let (mut h, mut v) = (Vec::new(), Vec::new());
        for (batch, keys) in side.batches.iter().zip(&side.keys) {
            hash_rows(keys, batch.num_rows(), nulls_equal, &mut h, &mut v);
            hashes.extend_from_slice(&h);
            valid.extend_from_slice(&v);
        }
        let count = valid.iter().filter(|&&ok| ok).count();
        // At most three quarters full, so that a probe that misses stops soon.
        let capacity = count
            .checked_add(count / 3 + 1)
            .and_then(usize::checked_next_power_of_two)
            .ok_or_else(too_large)?;
        let mut index = Index {
            mask: capacity - 1,
            slots: vec![(0, 0); capacity],
            next: vec![0; rows],
        };
        // Backwards, so that each key's chain starts at its first row and runs in table order;
        // by blocks whose home slots are loaded first, all at once (see `warm`).
        let mut end = rows;
        while end > 0 {
            let block = end.saturating_sub(PROBE_BLOCK)..end;
            end = block.start;
            let sum = hashes[block.clone()]
                .iter()
                .fold(0u64, |sum, &h| sum.wrapping_add(u64::from(index.home(h).1)));
            std::hint::black_box(sum);
            for g in block.rev() {
                if valid[g] {
                    index.insert(g, hashes[g], side, nulls_equal);
                }
            }
        }
        Ok(index)
    }

    /// The home slot of hash `h`.
    fn home(&self, h: u64) -> (u32, u32) {
        self.slots[h as usize & self.mask]
    }

    /// Adds right row `g`, whose key hashes to `h`, in front of the rows with the same key.
    fn insert(&mut self, g: usize, h: u64, side: &Side, nulls_equal: bool) {
        let tag = (h >> 32) as u32;
        let mut s = h as usize & self.mask;
        loop {
            let (t, first) = self.slots[s];
            if first == 0 {
                self.slots[s] = (tag, g as u32 + 1);
                return;
            }
            if t == tag {
                let (fb, fr) = side.locate(((first & !MORE) - 1) as usize);
                let (gb, gr) = side.locate(g);
                if keys_equal(&side.keys[gb], gr, &side.keys[fb], fr, nulls_equal) {
                    self.next[g] = first & !MORE;
                    self.slots[s].1 = (g as u32 + 1) | MORE;
                    return;
                }
            }
            s = (s + 1) & self.mask;
        }
    }

    /// The first slot from the home slot of hash `h` on that is empty or has its tag.
    fn start(&self, h: u64) -> usize {
        let tag = (h >> 32) as u32;
        let mut s = h as usize & self.mask;
        loop {
            let (t, first) = self.slots[s];
            if first == 0 || t == tag {
                return s;
            }
            s = (s + 1) & self.mask;
        }
    }

    /// The first right row whose key equals row `i` of `keys`, which hashes to `h`.
    fn find(&self, h: u64, keys: &[KeyArr], i: usize, right: &Side, nulls_equal: bool) -> Found {
        let tag = (h >> 32) as u32;
        let mut s = self.start(h);
        loop {
            let (t, first) = self.slots[s];
            if first == 0 {
                return None;
            }
            if t == tag {
                let g = ((first & !MORE) - 1) as usize;
                let (rb, rr) = right.locate(g);
                if keys_equal(keys, i, &right.keys[rb], rr, nulls_equal) {
                    return Some((g, first & MORE != 0));
                }
            }
            s = (s + 1) & self.mask;
        }
    }

    /// Loads the home slots of the hashes `hashes`, then the first key of the right rows they
    /// point at, so that [`Index::find`] then finds both in the cache. Each pass's loads are
    /// independent of each other, with no branch on what they load, so they overlap rather than
    /// wait for memory one by one.
    fn warm(&self, hashes: &[u64], right: &Side) {
        let mut sum = 0u64;
        for &h in hashes {
            sum = sum.wrapping_add(u64::from(self.home(h).1));
        }
        for &h in hashes {
            let (t, first) = self.slots[self.start(h)];
            if first != 0 && t == (h >> 32) as u32 {
                let (rb, rr) = right.locate(((first & !MORE) - 1) as usize);
                if let Some(key) = right.keys[rb].first() {
                    sum = sum.wrapping_add(key.touch(rr));
                }
            }
        }
        std::hint::black_box(sum);
    }

    /// The right row after `g` with the same key.
    fn next(&self, g: usize) -> Option<usize> {
        (self.next[g] as usize).checked_sub(1)
    }
}

/// Collects output rows as (left batch, row) and (right batch, row) pairs and gathers them into
/// batches of `batch_rows`.
struct Output<'a> {
    schema: SchemaRef,
    sources: &'a [Source],
    batch_rows: usize,
    /// Per output column, the arrays its rows are gathered from.
    values: Vec<Vec<&'a dyn Array>>,
    /// The index of the one-row null arrays in `values` of left and of right columns.
    null_left: usize,
    null_right: usize,
    /// Per pending output row: where its left columns come from (batch, row).
    left: Vec<(usize, usize)>,
    /// Per pending output row: where its right columns come from.
    right: Vec<(usize, usize)>,
    /// Per pending output row: where its keys come from, among the left then the right keys.
    key: Vec<(usize, usize)>,
    /// The finished output batches.
    batches: Vec<RecordBatch>,
}

impl<'a> Output<'a> {
    fn new(merge: &'a Merge, left: &'a Side, right: &'a Side) -> Output<'a> {
        let mut values = Vec::with_capacity(merge.sources.len());
        for source in &merge.sources {
            let mut v: Vec<&dyn Array> = Vec::new();
            match *source {
                Source::Left(i) => {
                    v.extend(left.batches.iter().map(|b| b.column(i).as_ref()));
                }
                Source::Right(i) => {
                    v.extend(right.batches.iter().map(|b| b.column(i).as_ref()));
                }
                Source::Key(k) => {
                    v.extend(left.out_keys.iter().map(|keys| keys[k].as_ref()));
                    // Right rows without a left row take the key from the right table.
                    if merge.how.keeps_right() {
                        v.extend(right.out_keys.iter().map(|keys| keys[k].as_ref()));
                    }
                }
            }
            values.push(v);
        }
        Output {
            schema: merge.schema.clone(),
            sources: &merge.sources,
            batch_rows: merge.batch_rows,
            values,
            null_left: left.batches.len(),
            null_right: right.batches.len(),
            left: Vec::new(),
            right: Vec::new(),
            key: Vec::new(),
            batches: Vec::new(),
        }
    }

    /// Adds a row of left row `l` and right row `r` (none: nulls).
    fn push(&mut self, l: (usize, usize), r: Option<(usize, usize)>) -> Result<()> {
        self.left.push(l);
        self.right.push(r.unwrap_or((self.null_right, 0)));
        self.key.push(l);
        self.flush_if_full()
    }

    /// Adds a row of right row `r` with no left row.
    fn push_right(&mut self, r: (usize, usize)) -> Result<()> {
        self.left.push((self.null_left, 0));
        self.right.push(r);
        self.key.push((self.null_left + r.0, r.1));
        self.flush_if_full()
    }

    fn flush_if_full(&mut self) -> Result<()> {
        if self.left.len() >= self.batch_rows {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.left.is_empty() {
            return Ok(());
        }
        let mut columns = Vec::with_capacity(self.sources.len());
        for ((source, values), field) in self
            .sources
            .iter()
            .zip(&self.values)
            .zip(self.schema.fields())
        {
            let (indices, missing) = match source {
                Source::Left(_) => (&self.left, self.null_left),
                Source::Right(_) => (&self.right, self.null_right),
                Source::Key(_) => (&self.key, usize::MAX),
            };
            // Rows without a row on this side point one past its batches, at a one-row null array.
            let column = if indices.iter().any(|&(b, _)| b == missing) {
                let null = new_null_array(field.data_type(), 1);
                let mut with_null = values.clone();
                with_null.push(null.as_ref());
                gather(&with_null, indices)?
            } else {
                gather(values, indices)?
            };
            columns.push(column);
        }
        self.batches
            .push(RecordBatch::try_new(self.schema.clone(), columns)?);
        self.left.clear();
        self.right.clear();
        self.key.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<RecordBatch>> {
        self.flush()?;
        Ok(self.batches)
    }
}

/// Rows `indices` (array, row) of `arrays`, as one array: `interleave`, except for UTF-8 strings.
fn gather(arrays: &[&dyn Array], indices: &[(usize, usize)]) -> Result<ArrayRef> {
    if let Some(strings) = gather_utf8(arrays, indices) {
        return Ok(strings);
    }
    Ok(interleave(arrays, indices)?)
}

/// Bytes copied at once for a short string; the output keeps this much spare room.
const SHORT: usize = 16;

/// Gathers UTF-8 strings in two passes. The first reads each row's span (its offsets) and lays out
/// the output offsets; the second copies the bytes. No row's loads wait on another row's, so the
/// processor overlaps the cache misses of the random rows of the right table instead of taking
/// them one at a time, as a copy that appends to a growing buffer would. `interleave` would also
/// copy each value with its own `memory.copy`, which in a sandbox is a call out to the host; here
/// a string of at most [`SHORT`] bytes is copied as a fixed-size block (inline loads and stores)
/// whose excess the next row overwrites. `None` when an array is not `Utf8` or the result would
/// not fit 32-bit offsets.
fn gather_utf8(arrays: &[&dyn Array], indices: &[(usize, usize)]) -> Option<ArrayRef> {
    let arrays: Vec<&StringArray> = arrays
        .iter()
        .map(|a| a.as_any().downcast_ref::<StringArray>())
        .collect::<Option<_>>()?;
    let mut nulls = arrays
        .iter()
        .any(|a| a.null_count() > 0)
        .then(|| arrow_array::builder::BooleanBufferBuilder::new(indices.len()));
    let mut offsets: Vec<i32> = Vec::with_capacity(indices.len() + 1);
    let mut starts: Vec<u32> = Vec::with_capacity(indices.len());
    let mut end = 0i64;
    offsets.push(0);
    for &(a, r) in indices {
        let array = arrays.get(a)?;
        let offs = array.value_offsets();
        let (s, e) = (*offs.get(r)?, *offs.get(r + 1)?);
        let valid = array.is_valid(r);
        if let Some(n) = nulls.as_mut() {
            n.append(valid);
        }
        let len = if valid { i64::from(e - s) } else { 0 };
        end += len;
        offsets.push(i32::try_from(end).ok()?);
        starts.push(s as u32);
    }
    let total = end as usize;
    let mut values = vec![0u8; total + SHORT];
    for (i, &(a, _)) in indices.iter().enumerate() {
        let (o, e) = (offsets[i] as usize, offsets[i + 1] as usize);
        let s = starts[i] as usize;
        let data = arrays[a].value_data();
        match data.get(s..s + SHORT) {
            Some(block) if e - o <= SHORT => values.get_mut(o..o + SHORT)?.copy_from_slice(block),
            _ => values
                .get_mut(o..e)?
                .copy_from_slice(data.get(s..s + (e - o))?),
        }
    }
    values.truncate(total);
    let offsets = arrow_buffer::OffsetBuffer::new(arrow_buffer::ScalarBuffer::from(offsets));
    let nulls = nulls.map(|mut n| arrow_buffer::NullBuffer::new(n.finish()));
    // SAFETY: the offsets start at 0, never decrease (each adds a length) and end at
    // `values.len()`, all within `i32`; each value's bytes are one whole value of a `StringArray`
    // copied as they were, so every value is valid UTF-8 on its own. (Validating them again was
    // 3% of a merge; the host validates what a plugin returns anyway.)
    #[allow(unsafe_code)]
    let out = unsafe {
        StringArray::new_unchecked(offsets, arrow_buffer::Buffer::from_vec(values), nulls)
    };
    Some(Arc::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{
        BooleanArray, Date32Array, Decimal128Array, DictionaryArray, Float32Array, Int32Array,
        TimestampMillisecondArray, UInt32Array,
    };
    use arrow_cast::display::{ArrayFormatter, FormatOptions};
    use arrow_schema::TimeUnit;
    use serde_json::json;

    #[test]
    fn bytes_eq_agrees_with_slice_equality() {
        let base: Vec<u8> = (0u8..24).map(|b| b'a' + b).collect();
        for n in 0..=20 {
            let a = &base[..n];
            let copy = a.to_vec();
            assert!(bytes_eq(a, &copy), "{n} bytes");
            for at in 0..n {
                let mut b = a.to_vec();
                b[at] ^= 1;
                assert!(!bytes_eq(a, &b), "{n} bytes, byte {at} differs");
            }
            assert!(!bytes_eq(a, &base[..n + 1]), "{n} bytes against {}", n + 1);
        }
    }

    #[test]
    fn strings_gather_like_interleave() {
        let long = "a string longer than sixteen bytes, with ünïcode";
        let a = StringArray::from(vec![
            Some("x"),
            None,
            Some(long),
            Some(""),
            Some("sixteen bytes!!!"),
        ]);
        let b = StringArray::from(vec![Some("tail"), Some(long)]).slice(1, 1);
        let c = StringArray::from(vec!["exactly 16 bytes", "seventeen bytes!!"]);
        let arrays: Vec<&dyn Array> = vec![&a, &b, &c];
        let indices = [
            (0, 0),
            (0, 1),
            (0, 2),
            (1, 0),
            (0, 3),
            (2, 1),
            (0, 4),
            (2, 0),
            (0, 0),
        ];
        let fast = gather_utf8(&arrays, &indices).expect("utf-8");
        let slow = interleave(&arrays, &indices).expect("interleave");
        assert_eq!(fast.as_ref(), slow.as_ref());
        // Built without checking: it holds what a checked array would.
        fast.to_data()
            .validate_full()
            .expect("valid offsets and UTF-8");
        let no_nulls: Vec<&dyn Array> = vec![&c];
        let fast = gather_utf8(&no_nulls, &[(0, 1), (0, 0)]).expect("utf-8");
        assert_eq!(fast.null_count(), 0);
        assert_eq!(
            fast.as_ref(),
            interleave(&no_nulls, &[(0, 1), (0, 0)])
                .expect("interleave")
                .as_ref()
        );
        // Runs of consecutive rows, in a slice and across a null row whose slot spans bytes.
        let spanning = StringArray::try_new(
            arrow_buffer::OffsetBuffer::new(vec![0, 2, 5, 6, 9].into()),
            arrow_buffer::Buffer::from_vec(b"abcdefghi".to_vec()),
            Some(arrow_buffer::NullBuffer::from(vec![
                true, false, true, true,
            ])),
        )
        .expect("valid");
        let sliced = StringArray::from(vec!["p", "q", "r", "s", "t"]).slice(1, 4);
        let arrays: Vec<&dyn Array> = vec![&spanning, &sliced];
        let indices = [
            (0, 0),
            (0, 1),
            (0, 2),
            (1, 1),
            (1, 2),
            (1, 3),
            (0, 3),
            (1, 0),
            (1, 1),
        ];
        let fast = gather_utf8(&arrays, &indices).expect("utf-8");
        assert_eq!(
            fast.as_ref(),
            interleave(&arrays, &indices).expect("interleave").as_ref()
        );
        let ints = Int64Array::from(vec![1, 2]);
        assert!(gather_utf8(&[&ints], &[(0, 0)]).is_none());
    }

    fn ints(v: &[Option<i64>]) -> ArrayRef {
        Arc::new(Int64Array::from(v.to_vec()))
    }

    fn strs(v: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(v.to_vec()))
    }

    /// A batch of nullable columns.
    fn table(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let fields: Vec<Field> = cols
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            cols.into_iter().map(|(_, a)| a).collect(),
        )
        .expect("batch")
    }

    /// The output of a merge: its schema, its batches' sizes, and its rows as `a|b|c` (`null` for
    /// null cells).
    #[derive(Debug)]
    struct Run {
        schema: SchemaRef,
        sizes: Vec<usize>,
        rows: Vec<String>,
    }

    /// Merges tables with these schemas, given as these batches, through the `Step` calls.
    fn run_with(
        params: serde_json::Value,
        schemas: [SchemaRef; 2],
        left: &[RecordBatch],
        right: &[RecordBatch],
    ) -> Result<Run> {
        // With `right_first`, the right table is input 0 and comes first.
        let right_first = params["right_first"] == json!(true);
        let (first, second) = if right_first {
            (right, left)
        } else {
            (left, right)
        };
        let mut schemas = schemas.to_vec();
        if right_first {
            schemas.reverse();
        }
        let mut m = Merge::start(Params::from_json(&params), schemas)?;
        let mut out = Vec::new();
        for b in first {
            out.extend(m.push(0, b.clone())?);
        }
        for b in second {
            out.extend(m.push(1, b.clone())?);
        }
        let (schema, rest) = m.finish()?;
        out.extend(rest);
        let opts = FormatOptions::default().with_null("null");
        let mut rows = Vec::new();
        for b in &out {
            assert_eq!(b.schema(), schema, "every batch has the output schema");
            assert!(b.num_rows() > 0, "no empty batches");
            let formatters: Vec<ArrayFormatter> = b
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).expect("formatter"))
                .collect();
            for i in 0..b.num_rows() {
                let cells: Vec<String> =
                    formatters.iter().map(|f| f.value(i).to_string()).collect();
                rows.push(cells.join("|"));
            }
        }
        Ok(Run {
            schema,
            sizes: out.iter().map(|b| b.num_rows()).collect(),
            rows,
        })
    }

    /// Merges one left batch with one right batch.
    fn run(params: serde_json::Value, left: &RecordBatch, right: &RecordBatch) -> Result<Run> {
        run_with(
            params,
            [left.schema(), right.schema()],
            std::slice::from_ref(left),
            std::slice::from_ref(right),
        )
    }

    fn names(schema: &Schema) -> Vec<&str> {
        schema.fields().iter().map(|f| f.name().as_str()).collect()
    }

    fn left() -> RecordBatch {
        table(vec![
            ("id", ints(&[Some(1), Some(2), Some(2), Some(3)])),
            ("l", strs(&[Some("a"), Some("b"), Some("c"), Some("d")])),
        ])
    }

    fn right() -> RecordBatch {
        table(vec![
            ("r", strs(&[Some("x"), Some("y"), Some("z"), Some("w")])),
            ("id", ints(&[Some(2), Some(3), Some(3), Some(4)])),
        ])
    }

    #[test]
    fn right_first_returns_each_left_batch_joined_as_it_comes() {
        let (l, r) = (left(), right());
        let mut m = Merge::start(
            Params::from_json(&json!({"on": "id", "how": "outer", "right_first": true})),
            vec![r.schema(), l.schema()],
        )
        .expect("start");
        assert!(m.push(0, r.clone()).expect("right").is_empty());
        // Left rows 1 and 2, 2: one unmatched, two matching right row 0.
        let first = m.push(1, l.slice(0, 3)).expect("left");
        assert_eq!(first.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
        // Left row 3 matches right rows 1 and 2.
        let second = m.push(1, l.slice(3, 1)).expect("left");
        assert_eq!(second.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
        // Only the right row that nothing matched is left for the end.
        let (schema, rest) = m.finish().expect("finish");
        assert_eq!(rest.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "l", "r"]);
        // A right table that does not match its schema is named as the right table.
        let mut m = Merge::start(
            Params::from_json(&json!({"on": "id", "right_first": true})),
            vec![r.schema(), l.schema()],
        )
        .expect("start");
        let err = m
            .push(0, l.clone())
            .expect_err("left batch as the right table");
        assert!(err.to_string().contains("right table"), "{err}");
    }

    #[test]
    fn inner_keeps_matching_pairs_in_left_then_right_order() {
        let out = run(json!({"on": "id"}), &left(), &right()).expect("merge");
        assert_eq!(names(&out.schema), ["id", "l", "r"]);
        assert_eq!(out.rows, ["2|b|x", "2|c|x", "3|d|y", "3|d|z"]);
    }

    #[test]
    fn left_keeps_unmatched_left_rows() {
        let out = run(json!({"on": ["id"], "how": "left"}), &left(), &right()).expect("merge");
        assert_eq!(out.rows, ["1|a|null", "2|b|x", "2|c|x", "3|d|y", "3|d|z"]);
    }

    #[test]
    fn right_appends_unmatched_right_rows_with_their_keys() {
        let out = run(json!({"on": "id", "how": "right"}), &left(), &right()).expect("merge");
        assert_eq!(out.rows, ["2|b|x", "2|c|x", "3|d|y", "3|d|z", "4|null|w"]);
    }

    #[test]
    fn outer_keeps_every_row() {
        let out = run(json!({"on": "id", "how": "outer"}), &left(), &right()).expect("merge");
        assert_eq!(
            out.rows,
            ["1|a|null", "2|b|x", "2|c|x", "3|d|y", "3|d|z", "4|null|w"]
        );
    }

    #[test]
    fn columns_that_can_be_missing_become_nullable() {
        let l = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("l", DataType::Utf8, false),
            ])),
            vec![ints(&[Some(1)]), strs(&[Some("a")])],
        )
        .expect("batch");
        let r = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("r", DataType::Utf8, false),
            ])),
            vec![ints(&[Some(2)]), strs(&[Some("x")])],
        )
        .expect("batch");
        let nullable = |how: &str| {
            let out = run(json!({"on": "id", "how": how}), &l, &r).expect("merge");
            let n: Vec<bool> = out
                .schema
                .fields()
                .iter()
                .map(|f| f.is_nullable())
                .collect();
            (n, out.rows)
        };
        assert_eq!(nullable("inner"), (vec![false, false, false], vec![]));
        assert_eq!(
            nullable("left"),
            (vec![false, false, true], vec!["1|a|null".to_owned()])
        );
        assert_eq!(
            nullable("right"),
            (vec![false, true, false], vec!["2|null|x".to_owned()])
        );
        assert_eq!(
            nullable("outer"),
            (
                vec![false, true, true],
                vec!["1|a|null".to_owned(), "2|null|x".to_owned()]
            )
        );
    }

    #[test]
    fn several_keys_must_all_match() {
        let l = table(vec![
            ("a", ints(&[Some(1), Some(1), Some(2)])),
            ("b", strs(&[Some("p"), Some("q"), Some("p")])),
            ("v", ints(&[Some(10), Some(11), Some(12)])),
        ]);
        let r = table(vec![
            ("b", strs(&[Some("p"), Some("p"), Some("q")])),
            ("a", ints(&[Some(2), Some(1), Some(2)])),
            ("w", ints(&[Some(20), Some(21), Some(22)])),
        ]);
        let out = run(json!({"on": ["a", "b"], "how": "outer"}), &l, &r).expect("merge");
        assert_eq!(names(&out.schema), ["a", "b", "v", "w"]);
        assert_eq!(
            out.rows,
            ["1|p|10|21", "1|q|11|null", "2|p|12|20", "2|q|null|22"]
        );
        // The order of the keys in `on` does not change the result.
        let swapped = run(json!({"on": ["b", "a"], "how": "outer"}), &l, &r).expect("merge");
        assert_eq!(swapped.rows, out.rows);
    }

    #[test]
    fn clashing_columns_get_suffixes() {
        let l = table(vec![
            ("id", ints(&[Some(1)])),
            ("value", ints(&[Some(10)])),
            ("only_left", ints(&[Some(0)])),
        ]);
        let r = table(vec![("id", ints(&[Some(1)])), ("value", ints(&[Some(20)]))]);
        let out = run(json!({"on": "id"}), &l, &r).expect("merge");
        assert_eq!(
            names(&out.schema),
            ["id", "value_x", "only_left", "value_y"]
        );
        assert_eq!(out.rows, ["1|10|0|20"]);
        let out = run(json!({"on": "id", "suffixes": ["", "_right"]}), &l, &r).expect("merge");
        assert_eq!(
            names(&out.schema),
            ["id", "value", "only_left", "value_right"]
        );
    }

    #[test]
    fn a_suffixed_name_that_collides_is_refused() {
        let l = table(vec![
            ("id", ints(&[Some(1)])),
            ("a", ints(&[Some(1)])),
            ("a_x", ints(&[Some(1)])),
        ]);
        let r = table(vec![("id", ints(&[Some(1)])), ("a", ints(&[Some(2)]))]);
        let err = run(json!({"on": "id"}), &l, &r).expect_err("collision");
        assert!(matches!(err, PluginError::InvalidParams(_)), "{err:?}");
        assert!(
            err.to_string().contains(r#"two columns named "a_x""#),
            "{err}"
        );
        // The same suffix on both sides makes the clashing pair collide.
        let err = run(json!({"on": "id", "suffixes": ["_s", "_s"]}), &l, &r).expect_err("same");
        assert!(err.to_string().contains(r#""a_s""#), "{err}");
    }

    fn with_nulls() -> (RecordBatch, RecordBatch) {
        let l = table(vec![
            ("k", strs(&[Some("a"), None, Some("b")])),
            ("l", ints(&[Some(1), Some(2), Some(3)])),
        ]);
        let r = table(vec![
            ("k", strs(&[None, Some("a"), None])),
            ("r", ints(&[Some(10), Some(11), Some(12)])),
        ]);
        (l, r)
    }

    #[test]
    fn null_keys_match_nothing_by_default() {
        let (l, r) = with_nulls();
        let out = |how: &str| {
            run(json!({"on": "k", "how": how}), &l, &r)
                .expect("merge")
                .rows
        };
        assert_eq!(out("inner"), ["a|1|11"]);
        assert_eq!(out("left"), ["a|1|11", "null|2|null", "b|3|null"]);
        assert_eq!(out("right"), ["a|1|11", "null|null|10", "null|null|12"]);
        assert_eq!(
            out("outer"),
            [
                "a|1|11",
                "null|2|null",
                "b|3|null",
                "null|null|10",
                "null|null|12"
            ]
        );
    }

    #[test]
    fn null_keys_match_each_other_with_nulls_equal() {
        let (l, r) = with_nulls();
        let out = |how: &str| {
            run(json!({"on": "k", "how": how, "nulls_equal": true}), &l, &r)
                .expect("merge")
                .rows
        };
        assert_eq!(out("inner"), ["a|1|11", "null|2|10", "null|2|12"]);
        assert_eq!(
            out("left"),
            ["a|1|11", "null|2|10", "null|2|12", "b|3|null"]
        );
        assert_eq!(out("right"), ["a|1|11", "null|2|10", "null|2|12"]);
    }

    #[test]
    fn a_null_in_any_of_several_keys_matches_only_with_nulls_equal() {
        let l = table(vec![
            ("a", ints(&[Some(1), Some(1)])),
            ("b", ints(&[None, Some(2)])),
        ]);
        let r = table(vec![
            ("a", ints(&[Some(1), Some(1)])),
            ("b", ints(&[Some(2), None])),
        ]);
        let out = run(json!({"on": ["a", "b"]}), &l, &r).expect("merge");
        assert_eq!(out.rows, ["1|2"]);
        let out = run(json!({"on": ["a", "b"], "nulls_equal": true}), &l, &r).expect("merge");
        assert_eq!(out.rows, ["1|null", "1|2"]);
    }

    #[test]
    fn integer_keys_of_different_widths_match_as_int64() {
        let l = table(vec![
            ("id", Arc::new(Int32Array::from(vec![1, 2, 3])) as ArrayRef),
            ("l", strs(&[Some("a"), Some("b"), Some("c")])),
        ]);
        let r = table(vec![
            ("id", ints(&[Some(3), Some(4), Some(1)])),
            ("r", strs(&[Some("x"), Some("y"), Some("z")])),
        ]);
        let out = run(json!({"on": "id", "how": "outer"}), &l, &r).expect("merge");
        assert_eq!(out.schema.field(0).data_type(), &DataType::Int64);
        assert_eq!(out.rows, ["1|a|z", "2|b|null", "3|c|x", "4|null|y"]);
        // Unsigned 32-bit values above i32::MAX keep their value.
        let big = u32::MAX;
        let l = table(vec![(
            "id",
            Arc::new(UInt32Array::from(vec![big, 7])) as ArrayRef,
        )]);
        let r = table(vec![("id", ints(&[Some(i64::from(big)), Some(-1)]))]);
        let out = run(json!({"on": "id"}), &l, &r).expect("merge");
        assert_eq!(out.rows, [big.to_string()]);
        // Same-type keys keep their type.
        let l = table(vec![(
            "id",
            Arc::new(Int32Array::from(vec![5])) as ArrayRef,
        )]);
        let out = run(json!({"on": "id"}), &l, &l).expect("merge");
        assert_eq!(out.schema.field(0).data_type(), &DataType::Int32);
        assert_eq!(out.rows, ["5"]);
    }

    #[test]
    fn other_key_types_compare_by_value() {
        // Utf8 with LargeUtf8 and with a dictionary of strings.
        let large: ArrayRef = Arc::new(LargeStringArray::from(vec!["a", "b"]));
        let dict: ArrayRef = Arc::new(
            vec![Some("b"), Some("a"), Some("b")]
                .into_iter()
                .collect::<DictionaryArray<Int32Type>>(),
        );
        let l = table(vec![("k", strs(&[Some("b"), Some("c")]))]);
        let out = run(json!({"on": "k"}), &l, &table(vec![("k", large)])).expect("merge");
        assert_eq!(out.schema.field(0).data_type(), &DataType::LargeUtf8);
        assert_eq!(out.rows, ["b"]);
        let out = run(
            json!({"on": "k", "how": "right"}),
            &l,
            &table(vec![("k", dict)]),
        )
        .expect("merge");
        assert_eq!(out.schema.field(0).data_type(), &DataType::Utf8);
        assert_eq!(out.rows, ["b", "b", "a"]);
        // Float32 with Float64: NaN matches NaN, -0.0 matches 0.0.
        let l = table(vec![(
            "f",
            Arc::new(Float32Array::from(vec![f32::NAN, -0.0, 1.5])) as ArrayRef,
        )]);
        let r = table(vec![(
            "f",
            Arc::new(arrow_array::Float64Array::from(vec![0.0, 1.5, f64::NAN])) as ArrayRef,
        )]);
        let out = run(json!({"on": "f"}), &l, &r).expect("merge");
        // The key comes from the left row: -0.0 stays -0.0.
        assert_eq!(out.rows, ["NaN", "-0.0", "1.5"]);
        // Booleans and timestamps with their own type.
        let b: ArrayRef = Arc::new(BooleanArray::from(vec![true, false]));
        let out = run(
            json!({"on": "b"}),
            &table(vec![("b", b.clone())]),
            &table(vec![("b", b)]),
        )
        .expect("merge");
        assert_eq!(out.rows, ["true", "false"]);
        let t: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![0, 86_400_000]));
        let r: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![86_400_000]));
        let out = run(
            json!({"on": "t"}),
            &table(vec![("t", t)]),
            &table(vec![("t", r)]),
        )
        .expect("merge");
        assert_eq!(out.rows, ["1970-01-02T00:00:00"]);
        // Dates, 128-bit decimals and all-null columns, sliced so that offsets are not zero.
        let d: ArrayRef = Arc::new(Date32Array::from(vec![0, 1, 2, 3]).slice(1, 3));
        let e: ArrayRef = Arc::new(Date32Array::from(vec![3, 9, 1]));
        let out = run(
            json!({"on": "d"}),
            &table(vec![("d", d)]),
            &table(vec![("d", e)]),
        )
        .expect("merge");
        assert_eq!(out.rows, ["1970-01-02", "1970-01-04"]);
        let dec = |v: Vec<i128>| -> ArrayRef {
            let a = Decimal128Array::from(v).with_precision_and_scale(10, 2);
            Arc::new(a.expect("decimal").slice(1, 2))
        };
        let out = run(
            json!({"on": "x"}),
            &table(vec![("x", dec(vec![0, 150, 275]))]),
            &table(vec![("x", dec(vec![150, 275, 150]))]),
        )
        .expect("merge");
        assert_eq!(out.rows, ["1.50", "2.75"]);
        let n: ArrayRef = Arc::new(arrow_array::NullArray::new(2));
        let out = run(
            json!({"on": "n", "nulls_equal": true}),
            &table(vec![("n", n.clone())]),
            &table(vec![("n", n)]),
        )
        .expect("merge");
        assert_eq!(out.rows, ["null", "null", "null", "null"]);
    }

    #[test]
    fn incompatible_key_types_are_refused() {
        let l = table(vec![("sample_id", ints(&[Some(1)]))]);
        let r = table(vec![("sample_id", strs(&[Some("1")]))]);
        let err = run(json!({"on": "sample_id"}), &l, &r).expect_err("types");
        assert!(matches!(err, PluginError::InvalidParams(_)), "{err:?}");
        assert!(
            err.to_string()
                .contains(r#"key "sample_id" is int64 on the left and utf8 on the right"#),
            "{err}"
        );
        let ms = DataType::Timestamp(TimeUnit::Millisecond, None);
        let s = DataType::Timestamp(TimeUnit::Second, None);
        let err = Merge::start(
            Params::from_json(&json!({"on": "t"})),
            vec![
                Arc::new(Schema::new(vec![Field::new("t", ms, true)])),
                Arc::new(Schema::new(vec![Field::new("t", s, true)])),
            ],
        )
        .expect_err("units");
        assert!(
            err.to_string()
                .contains("timestamp(ms) on the left and timestamp(s)"),
            "{err}"
        );
        let list = DataType::new_list(DataType::Int64, true);
        let schema = Arc::new(Schema::new(vec![Field::new("k", list, true)]));
        let err = Merge::start(
            Params::from_json(&json!({"on": "k"})),
            vec![schema.clone(), schema],
        )
        .expect_err("list");
        assert!(matches!(err, PluginError::Unsupported(_)), "{err:?}");
    }

    #[test]
    fn a_missing_key_column_names_the_side_and_its_columns() {
        let l = table(vec![
            ("sample_id", ints(&[Some(1)])),
            ("gene", strs(&[Some("g")])),
        ]);
        let r = table(vec![
            ("smaple_id", ints(&[Some(1)])),
            ("x", ints(&[Some(1)])),
        ]);
        let err = run(json!({"on": "smaple_id"}), &l, &r).expect_err("missing");
        assert!(matches!(err, PluginError::InvalidParams(_)), "{err:?}");
        assert!(
            err.to_string().contains(
                r#"no column "smaple_id" in the left table; its columns are ["sample_id", "gene"]"#
            ),
            "{err}"
        );
        let err = run(json!({"on": "sample_id"}), &l, &r).expect_err("missing");
        assert!(
            err.to_string().contains(
                r#"no column "sample_id" in the right table; its columns are ["smaple_id", "x"]"#
            ),
            "{err}"
        );
    }

    #[test]
    fn it_takes_exactly_two_inputs() {
        for n in [0, 1, 3] {
            let err = Merge::start(
                Params::from_json(&json!({"on": "id"})),
                vec![left().schema(); n],
            )
            .expect_err("inputs");
            assert!(matches!(err, PluginError::InvalidParams(_)), "{err:?}");
            assert!(err.to_string().contains(&format!("not {n}")), "{err}");
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        let start = |p: serde_json::Value| {
            Merge::start(
                Params::from_json(&p),
                vec![left().schema(), right().schema()],
            )
            .expect_err("refused")
        };
        for (params, says) in [
            (json!({}), "missing field `on`"),
            (json!({"on": []}), "at least one key"),
            (json!({"on": ["id", "id"]}), r#""id" is named twice"#),
            (json!({"on": 3}), "a column name or a list"),
            (json!({"on": "id", "how": "full"}), "unknown variant `full`"),
            (json!({"on": "id", "suffixes": ["_a"]}), "two strings"),
            (json!({"on": "id", "batch_rows": 0}), "at least 1"),
            (json!({"on": "id", "nulls": true}), "unknown field `nulls`"),
        ] {
            let err = start(params.clone());
            assert!(
                matches!(err, PluginError::InvalidParams(_)),
                "{params}: {err:?}"
            );
            assert!(err.to_string().contains(says), "{params}: {err}");
        }
    }

    #[test]
    fn empty_inputs_give_the_schema_and_only_unmatched_rows() {
        let (l, r) = (left(), right());
        let schemas = [l.schema(), r.schema()];
        let none: &[RecordBatch] = &[];
        let zero_l = [l.slice(0, 0)];
        for how in ["inner", "left", "right", "outer"] {
            let p = json!({"on": "id", "how": how});
            let both = run_with(p.clone(), schemas.clone(), none, none).expect("merge");
            assert_eq!(names(&both.schema), ["id", "l", "r"]);
            assert!(both.rows.is_empty());
            let no_left = run_with(
                p.clone(),
                schemas.clone(),
                &zero_l,
                std::slice::from_ref(&r),
            )
            .expect("merge");
            let no_right =
                run_with(p, schemas.clone(), std::slice::from_ref(&l), none).expect("merge");
            let (want_l, want_r): (&[&str], &[&str]) = match how {
                "inner" => (&[], &[]),
                "left" => (&[], &["1|a|null", "2|b|null", "2|c|null", "3|d|null"]),
                "right" => (&["2|null|x", "3|null|y", "3|null|z", "4|null|w"], &[]),
                _ => (
                    &["2|null|x", "3|null|y", "3|null|z", "4|null|w"],
                    &["1|a|null", "2|b|null", "2|c|null", "3|d|null"],
                ),
            };
            assert_eq!(no_left.rows, want_l, "{how}, empty left");
            assert_eq!(no_right.rows, want_r, "{how}, empty right");
        }
    }

    #[test]
    fn many_to_many_gives_every_pair() {
        let l = table(vec![
            ("k", ints(&[Some(7), Some(7), Some(8)])),
            ("l", strs(&[Some("a"), Some("b"), Some("c")])),
        ]);
        let r = table(vec![
            ("k", ints(&[Some(7), Some(9), Some(7), Some(7)])),
            ("r", strs(&[Some("x"), Some("y"), Some("z"), Some("w")])),
        ]);
        let out = run(json!({"on": "k"}), &l, &r).expect("merge");
        assert_eq!(
            out.rows,
            ["7|a|x", "7|a|z", "7|a|w", "7|b|x", "7|b|z", "7|b|w"]
        );
    }

    #[test]
    fn batches_split_anywhere_give_the_same_rows() {
        let (l, r) = (left(), right());
        let whole = run(json!({"on": "id", "how": "outer"}), &l, &r).expect("merge");
        let pieces = |b: &RecordBatch| -> Vec<RecordBatch> {
            vec![b.slice(0, 1), b.slice(1, 0), b.slice(1, 2), b.slice(3, 1)]
        };
        let split = run_with(
            json!({"on": "id", "how": "outer", "batch_rows": 4}),
            [l.schema(), r.schema()],
            &pieces(&l),
            &pieces(&r),
        )
        .expect("merge");
        assert_eq!(split.rows, whole.rows);
        assert_eq!(split.sizes, [4, 2]);
        assert_eq!(whole.sizes, [6]);
    }

    /// A fixed-seed linear congruential generator.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    /// A random table with int key `k1` (about 8% null), text key `k2` (about 10% null), row
    /// number `id_name`, and a column `v` both tables have; `k1` is int32 when `narrow`.
    struct Random {
        k1: Vec<Option<i64>>,
        k2: Vec<Option<String>>,
        v: Vec<i64>,
    }

    impl Random {
        fn new(rng: &mut Lcg, rows: usize) -> Random {
            let mut t = Random {
                k1: Vec::new(),
                k2: Vec::new(),
                v: Vec::new(),
            };
            for _ in 0..rows {
                t.k1.push((rng.below(12) != 0).then(|| rng.below(100) as i64 - 5));
                t.k2.push((rng.below(10) != 0).then(|| format!("s{}", rng.below(60))));
                t.v.push(rng.below(1000) as i64);
            }
            t
        }

        fn batches(
            &self,
            rng: &mut Lcg,
            id_name: &str,
            narrow: bool,
            large: bool,
        ) -> Vec<RecordBatch> {
            let k1: ArrayRef = if narrow {
                Arc::new(Int32Array::from_iter(
                    self.k1.iter().map(|k| k.map(|k| k as i32)),
                ))
            } else {
                Arc::new(Int64Array::from(self.k1.clone()))
            };
            let k2: ArrayRef = if large {
                Arc::new(LargeStringArray::from_iter(self.k2.iter()))
            } else {
                Arc::new(StringArray::from_iter(self.k2.iter()))
            };
            let ids: Vec<i64> = (0..self.v.len() as i64).collect();
            let whole = table(vec![
                ("k1", k1),
                ("k2", k2),
                (id_name, Arc::new(Int64Array::from(ids))),
                ("v", Arc::new(Int64Array::from(self.v.clone()))),
            ]);
            let mut out = Vec::new();
            let mut at = 0;
            while at < whole.num_rows() {
                let n = (rng.below(400) as usize).min(whole.num_rows() - at);
                out.push(whole.slice(at, n));
                at += n;
            }
            out
        }
    }

    /// The rows a naive nested loop gives, rendered as the merge output is.
    fn reference(l: &Random, r: &Random, on: &[&str], how: &str, nulls_equal: bool) -> Vec<String> {
        let cell = |v: Option<String>| v.unwrap_or_else(|| "null".into());
        let key = |t: &Random, i: usize, k: &str| -> Option<String> {
            if k == "k1" {
                t.k1[i].map(|v| v.to_string())
            } else {
                t.k2[i].clone()
            }
        };
        let same = |a: bool, b: bool, eq: bool| if a && b { eq } else { nulls_equal && !a && !b };
        let matches = |i: usize, j: usize| {
            on.iter().all(|&k| {
                if k == "k1" {
                    same(l.k1[i].is_some(), r.k1[j].is_some(), l.k1[i] == r.k1[j])
                } else {
                    same(l.k2[i].is_some(), r.k2[j].is_some(), l.k2[i] == r.k2[j])
                }
            })
        };
        let row = |i: Option<usize>, j: Option<usize>| {
            let mut cells = Vec::new();
            for k in ["k1", "k2"] {
                let from_left = i.map(|i| key(l, i, k));
                cells.push(cell(if on.contains(&k) {
                    from_left.unwrap_or_else(|| j.and_then(|j| key(r, j, k)))
                } else {
                    from_left.flatten()
                }));
            }
            cells.push(cell(i.map(|i| i.to_string())));
            cells.push(cell(i.map(|i| l.v[i].to_string())));
            for k in ["k1", "k2"] {
                if !on.contains(&k) {
                    cells.push(cell(j.and_then(|j| key(r, j, k))));
                }
            }
            cells.push(cell(j.map(|j| j.to_string())));
            cells.push(cell(j.map(|j| r.v[j].to_string())));
            cells.join("|")
        };
        let mut out = Vec::new();
        let mut matched = vec![false; r.v.len()];
        for i in 0..l.v.len() {
            let mut found = false;
            for (j, m) in matched.iter_mut().enumerate() {
                if matches(i, j) {
                    found = true;
                    *m = true;
                    out.push(row(Some(i), Some(j)));
                }
            }
            if !found && matches!(how, "left" | "outer") {
                out.push(row(Some(i), None));
            }
        }
        if matches!(how, "right" | "outer") {
            for (j, m) in matched.iter().enumerate() {
                if !m {
                    out.push(row(None, Some(j)));
                }
            }
        }
        out
    }

    thread_local! {
        /// The hash bits kept; tests clear most so that different keys collide.
        pub(super) static HASH_BITS: std::cell::Cell<u64> = const { std::cell::Cell::new(u64::MAX) };
    }

    /// Compares every `how`, `nulls_equal` and key choice on random tables with a nested loop;
    /// `variants` picks int32 left `k1` and large-string right `k2` or not. Returns the rows seen.
    fn check_random_tables(seed: u64, variants: &[(bool, bool)]) -> usize {
        let mut rng = Lcg(seed);
        let (l, r) = (Random::new(&mut rng, 1500), Random::new(&mut rng, 1200));
        let mut total = 0;
        for &(narrow, large) in variants {
            let lb = l.batches(&mut rng, "lid", narrow, false);
            let rb = r.batches(&mut rng, "rid", false, large);
            let schemas = [lb[0].schema(), rb[0].schema()];
            for on in [&["k1"][..], &["k2"], &["k1", "k2"]] {
                for nulls_equal in [false, true] {
                    for how in ["inner", "left", "right", "outer"] {
                        let batch_rows = 1 + rng.below(700);
                        let p = json!({"on": on, "how": how, "nulls_equal": nulls_equal,
                            "batch_rows": batch_rows});
                        let out = run_with(p.clone(), schemas.clone(), &lb, &rb).expect("merge");
                        let want = reference(&l, &r, on, how, nulls_equal);
                        assert_eq!(out.rows.len(), want.len(), "{p}");
                        assert_eq!(out.rows, want, "{p}");
                        let last = out.sizes.len().saturating_sub(1);
                        assert!(
                            out.sizes[..last].iter().all(|&n| n as u64 == batch_rows),
                            "{p}: batch sizes {:?}",
                            out.sizes
                        );
                        // Streamed from the right table first: the same rows, in batches of at
                        // most `batch_rows` returned as each left batch comes.
                        let mut p = p;
                        p["right_first"] = json!(true);
                        let streamed =
                            run_with(p.clone(), schemas.clone(), &lb, &rb).expect("merge");
                        assert_eq!(streamed.rows, want, "{p}");
                        assert_eq!(streamed.schema, out.schema, "{p}");
                        assert!(
                            streamed.sizes.iter().all(|&n| n as u64 <= batch_rows),
                            "{p}: batch sizes {:?}",
                            streamed.sizes
                        );
                        total += want.len();
                    }
                }
            }
        }
        total
    }

    #[test]
    fn random_tables_match_a_nested_loop() {
        let total = check_random_tables(42, &[(false, false), (true, true)]);
        assert!(
            total > 30_000,
            "the data should exercise many matches: {total}"
        );
    }

    #[test]
    fn random_tables_match_a_nested_loop_when_hashes_collide() {
        // Eight home slots and four tags: most probes meet other keys with the same tag, so the
        // key comparisons, not the hashes, decide.
        HASH_BITS.with(|b| b.set(0x3_0000_0007));
        let total = check_random_tables(7, &[(false, false)]);
        HASH_BITS.with(|b| b.set(u64::MAX));
        assert!(
            total > 15_000,
            "the data should exercise many matches: {total}"
        );
    }

    /// Times 1M x 1M joins on a text key like "S0000123456" and on an integer key, 80% of left
    /// keys matching, each five times:
    /// `cargo test --release -p plugin-merge -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn time_a_million_by_a_million() {
        let n = 1_000_000;
        let batch = 65_536;
        let mut rng = Lcg(7);
        let make = |ids: Vec<u64>, text: bool, value: &str| -> Vec<RecordBatch> {
            let key: ArrayRef = if text {
                Arc::new(StringArray::from_iter_values(
                    ids.iter().map(|i| format!("S{i:010}")),
                ))
            } else {
                Arc::new(Int64Array::from_iter_values(ids.iter().map(|&i| i as i64)))
            };
            let whole = table(vec![
                ("sample_id", key),
                (value, Arc::new(Int64Array::from_iter_values(0..n as i64))),
            ]);
            (0..n)
                .step_by(batch)
                .map(|at| whole.slice(at, batch.min(n - at)))
                .collect()
        };
        // Left keys are 0..n in a shuffled order; right keys are 0.2n..1.2n, shuffled too.
        let mut shuffled = |lo: u64| {
            let mut v: Vec<u64> = (lo..lo + n as u64).collect();
            for i in (1..v.len()).rev() {
                v.swap(i, rng.below(i as u64 + 1) as usize);
            }
            v
        };
        let (left_ids, right_ids) = (shuffled(0), shuffled(n as u64 / 5));
        for text in [true, false] {
            let l = make(left_ids.clone(), text, "a");
            let r = make(right_ids.clone(), text, "b");
            for how in ["inner", "inner", "inner", "inner", "inner", "outer"] {
                let started = std::time::Instant::now();
                let mut m = Merge::start(
                    Params::from_json(&json!({"on": "sample_id", "how": how})),
                    vec![l[0].schema(), r[0].schema()],
                )
                .expect("start");
                for b in &l {
                    m.push(0, b.clone()).expect("push");
                }
                for b in &r {
                    m.push(1, b.clone()).expect("push");
                }
                let (_, out) = m.finish().expect("finish");
                let rows: usize = out.iter().map(|b| b.num_rows()).sum();
                let key = if text { "a text" } else { "an int64" };
                eprintln!(
                    "1M x 1M {how} join on {key} key: {rows} rows in {:?}",
                    started.elapsed()
                );
                assert_eq!(rows, if how == "inner" { n * 4 / 5 } else { n * 6 / 5 });
            }
        }
    }
}
