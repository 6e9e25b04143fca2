//! Apache Iceberg metadata for the lake's tables (format version 2).
//!
//! The lake publishes each chain of table versions (one Parquet file per version) as an Iceberg
//! table whose snapshots are the versions. This crate turns what the host knows of each version
//! (its file's URI, size and row count, its Arrow schema as read from the file's footer, its
//! snapshot id, sequence number and time) into the three kinds of files a reader needs: a
//! manifest per version, a manifest list per snapshot (both Avro, see [`avro`]) and the table
//! metadata JSON. It exchanges only paths, sizes, counts and schemas with the host and knows
//! nothing of where the bytes go; the host stores what it returns next to the data.
//!
//! Field ids: a file that carries Iceberg field ids (`PARQUET:field_id`, which the lake writes
//! into every table it stores) keeps them, and its snapshot's schema uses them. A file without
//! them (written before the lake wrote ids) gets ids by column path, stable along the chain (the
//! first version to have a column names its id), and the table's `schema.name-mapping.default`
//! property tells readers how to find those columns by name.

pub mod avro;

use std::collections::BTreeMap;

use arrow_schema::{DataType, Field, Schema};
use serde_json::{Value, json};

/// The Arrow field-metadata key under which Parquet keeps a field id.
pub const FIELD_ID_KEY: &str = "PARQUET:field_id";

/// One data file of a version.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Absolute URI (`file:///...`, `s3://bucket/key`).
    pub uri: String,
    /// Bytes.
    pub size: u64,
    /// Rows.
    pub rows: u64,
}

/// One version of a table, as the host knows it.
#[derive(Debug, Clone)]
pub struct Version {
    /// Its snapshot id (unique in the table, positive).
    pub snapshot_id: i64,
    /// Its sequence number: increasing along the chain and never reused.
    pub sequence_number: i64,
    /// When it was made, in milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// Its Parquet file.
    pub file: DataFile,
    /// The file's schema as read from its footer (field ids in the fields' metadata, if any).
    pub schema: Schema,
    /// The name of the tag that points at it (`version-3`).
    pub tag: String,
    /// Facts of the host's own, added to the snapshot's summary under `lake.`.
    pub facts: BTreeMap<String, String>,
}

/// A column whose type Iceberg cannot represent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// The column's path (`a`, `a.b`).
    pub column: String,
    /// Its Arrow type.
    pub data_type: String,
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "column {:?} is {}, which Iceberg has no type for",
            self.column, self.data_type
        )
    }
}

impl std::error::Error for Unsupported {}

/// A version with its place in the table: the schema its snapshot reads with.
#[derive(Debug, Clone)]
struct Planned {
    version: Version,
    schema_id: i32,
}

/// A chain of versions made ready to describe as one Iceberg table: ids assigned, schemas
/// shared by the versions they fit.
#[derive(Debug, Clone)]
pub struct Plan {
    versions: Vec<Planned>,
    schemas: Vec<Value>,
    last_column_id: i32,
    name_mapping: Option<Value>,
}

/// Ids by column path for files that carry none, stable along a chain.
#[derive(Debug, Default)]
struct PathIds {
    by_path: BTreeMap<String, i32>,
    next: i32,
}

impl PathIds {
    fn id(&mut self, path: &str) -> i32 {
        if let Some(id) = self.by_path.get(path) {
            return *id;
        }
        self.next += 1;
        self.by_path.insert(path.to_owned(), self.next);
        self.next
    }
}

/// Where a schema's ids come from: the file's own, or the chain's ids by path.
enum Ids<'a> {
    File,
    Paths(&'a mut PathIds),
}

impl Ids<'_> {
    fn of(&mut self, field: &Field, path: &str) -> i32 {
        match self {
            Ids::File => file_id(field).unwrap_or(0),
            Ids::Paths(p) => p.id(path),
        }
    }
}

fn file_id(field: &Field) -> Option<i32> {
    field.metadata().get(FIELD_ID_KEY)?.parse().ok()
}

/// Whether every field, nested ones included, carries a field id.
fn has_ids(fields: &[&Field]) -> bool {
    fields
        .iter()
        .all(|f| file_id(f).is_some() && has_ids(&children(f.data_type())))
}

fn children(t: &DataType) -> Vec<&Field> {
    match t {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            vec![f.as_ref()]
        }
        DataType::Struct(fs) => fs.iter().map(|f| f.as_ref()).collect(),
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) => kv.iter().map(|f| f.as_ref()).collect(),
            _ => Vec::new(),
        },
        DataType::Dictionary(_, v) => children(v),
        _ => Vec::new(),
    }
}

fn unsupported(path: &str, t: &DataType) -> Unsupported {
    Unsupported {
        column: path.to_owned(),
        data_type: t.to_string(),
    }
}

/// The Iceberg type of an Arrow type, nested ids taken from `ids`.
fn type_of(t: &DataType, path: &str, ids: &mut Ids<'_>) -> Result<Value, Unsupported> {
    use DataType as D;
    let primitive = |s: &str| Ok(Value::String(s.to_owned()));
    match t {
        D::Boolean => primitive("boolean"),
        D::Int8 | D::Int16 | D::Int32 | D::UInt8 | D::UInt16 => primitive("int"),
        D::Int64 | D::UInt32 | D::UInt64 => primitive("long"),
        D::Float32 => primitive("float"),
        D::Float64 => primitive("double"),
        D::Decimal32(p, s) | D::Decimal64(p, s) | D::Decimal128(p, s) if *s >= 0 => {
            primitive(&format!("decimal({p}, {s})"))
        }
        D::Decimal256(p, s) if *p <= 38 && *s >= 0 => primitive(&format!("decimal({p}, {s})")),
        D::Date32 | D::Date64 => primitive("date"),
        D::Time32(_) | D::Time64(_) => primitive("time"),
        D::Timestamp(_, None) => primitive("timestamp"),
        D::Timestamp(_, Some(_)) => primitive("timestamptz"),
        D::Utf8 | D::LargeUtf8 | D::Utf8View => primitive("string"),
        D::Binary | D::LargeBinary | D::BinaryView => primitive("binary"),
        D::FixedSizeBinary(n) => primitive(&format!("fixed[{n}]")),
        D::Dictionary(_, v) => type_of(v, path, ids),
        D::List(f) | D::LargeList(f) | D::FixedSizeList(f, _) => {
            let element_path = format!("{path}.element");
            let element_id = ids.of(f, &element_path);
            Ok(json!({
                "type": "list",
                "element-id": element_id,
                "element": type_of(f.data_type(), &element_path, ids)?,
                "element-required": !f.is_nullable(),
            }))
        }
        D::Struct(fs) => {
            let fields = fs
                .iter()
                .map(|f| field_of(f, &format!("{path}.{}", f.name()), ids))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(json!({"type": "struct", "fields": fields}))
        }
        D::Map(entries, _) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return Err(unsupported(path, t));
            };
            let [k, v] = kv.iter().collect::<Vec<_>>()[..] else {
                return Err(unsupported(path, t));
            };
            let (key_path, value_path) = (format!("{path}.key"), format!("{path}.value"));
            let key_id = ids.of(k, &key_path);
            let value_id = ids.of(v, &value_path);
            Ok(json!({
                "type": "map",
                "key-id": key_id,
                "key": type_of(k.data_type(), &key_path, ids)?,
                "value-id": value_id,
                "value": type_of(v.data_type(), &value_path, ids)?,
                "value-required": !v.is_nullable(),
            }))
        }
        _ => Err(unsupported(path, t)),
    }
}

fn field_of(f: &Field, path: &str, ids: &mut Ids<'_>) -> Result<Value, Unsupported> {
    let id = ids.of(f, path);
    Ok(json!({
        "id": id,
        "name": f.name(),
        "required": !f.is_nullable(),
        "type": type_of(f.data_type(), path, ids)?,
    }))
}

/// The highest field id in a schema's (or a type's) JSON.
fn max_id(v: &Value) -> i32 {
    let own = ["id", "element-id", "key-id", "value-id"]
        .iter()
        .filter_map(|k| v.get(k).and_then(Value::as_i64))
        .max()
        .unwrap_or(0);
    let nested = match v {
        Value::Object(m) => m.values().map(max_id).max().unwrap_or(0),
        Value::Array(a) => a.iter().map(max_id).max().unwrap_or(0),
        _ => 0,
    };
    i32::try_from(own).unwrap_or(i32::MAX).max(nested)
}

/// Adds a type's columns to a name mapping level (`fields`), merging with what is there.
fn map_names(level: &mut Vec<Value>, fields: &[Value]) {
    for f in fields {
        let (Some(id), Some(name)) = (f["id"].as_i64(), f["name"].as_str()) else {
            continue;
        };
        let at = match level
            .iter()
            .position(|m| m["field-id"].as_i64() == Some(id))
        {
            Some(i) => i,
            None => {
                level.push(json!({"field-id": id, "names": [name]}));
                level.len() - 1
            }
        };
        let mut nested = level[at]["fields"].as_array().cloned().unwrap_or_default();
        map_type_names(&mut nested, &f["type"]);
        if !nested.is_empty() {
            level[at]["fields"] = Value::Array(nested);
        }
    }
}

fn map_type_names(level: &mut Vec<Value>, t: &Value) {
    match t["type"].as_str() {
        Some("struct") => {
            if let Some(fs) = t["fields"].as_array() {
                map_names(level, fs);
            }
        }
        Some("list") => {
            let element = json!({"id": t["element-id"], "name": "element", "type": t["element"]});
            map_names(level, &[element]);
            // Arrow names a list's element `item`; Parquet's spec, `element`.
            if let Some(m) = level.iter_mut().find(|m| m["field-id"] == t["element-id"])
                && let Some(names) = m["names"].as_array_mut()
                && !names.iter().any(|n| n == "item")
            {
                names.push("item".into());
            }
        }
        Some("map") => {
            let key = json!({"id": t["key-id"], "name": "key", "type": t["key"]});
            let value = json!({"id": t["value-id"], "name": "value", "type": t["value"]});
            map_names(level, &[key, value]);
        }
        _ => {}
    }
}

impl Plan {
    /// Assigns ids and schemas to a chain of versions, oldest first.
    pub fn new(versions: Vec<Version>) -> Result<Self, Unsupported> {
        let mut paths = PathIds::default();
        let mut schemas: Vec<Value> = Vec::new();
        let mut mapping: Vec<Value> = Vec::new();
        let mut planned = Vec::with_capacity(versions.len());
        for version in versions {
            let top: Vec<&Field> = version.schema.fields().iter().map(|f| f.as_ref()).collect();
            let with_ids = has_ids(&top);
            let mut ids = if with_ids {
                Ids::File
            } else {
                Ids::Paths(&mut paths)
            };
            let fields = top
                .iter()
                .map(|f| field_of(f, f.name(), &mut ids))
                .collect::<Result<Vec<_>, _>>()?;
            if !with_ids {
                map_names(&mut mapping, &fields);
            }
            let fields = Value::Array(fields);
            let schema_id = match schemas.iter().position(|s| s["fields"] == fields) {
                Some(i) => i,
                None => {
                    schemas.push(json!({
                        "type": "struct", "schema-id": schemas.len(), "fields": fields,
                    }));
                    schemas.len() - 1
                }
            };
            planned.push(Planned {
                version,
                schema_id: i32::try_from(schema_id).unwrap_or(i32::MAX),
            });
        }
        let last_column_id = schemas.iter().map(max_id).max().unwrap_or(0);
        Ok(Self {
            versions: planned,
            schemas,
            last_column_id,
            name_mapping: (!mapping.is_empty()).then_some(Value::Array(mapping)),
        })
    }

    /// How many versions the table has.
    pub fn len(&self) -> usize {
        self.versions.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    fn schema_of(&self, i: usize) -> &Value {
        &self.schemas[self.versions[i].schema_id as usize]
    }

    /// The manifest of version `i`: its one data file, added by its snapshot.
    pub fn manifest(&self, i: usize) -> Vec<u8> {
        let v = &self.versions[i].version;
        let mut e = avro::Encoder::new();
        e.int(1) // status: ADDED
            .some()
            .long(v.snapshot_id)
            .null() // sequence_number: inherited from the manifest list
            .null(); // file_sequence_number: inherited
        e.int(0) // content: data
            .string(&v.file.uri)
            .string("PARQUET");
        // partition: the empty struct of an unpartitioned table takes no bytes.
        e.long(i64::try_from(v.file.rows).unwrap_or(i64::MAX))
            .long(i64::try_from(v.file.size).unwrap_or(i64::MAX));
        // column_sizes, value_counts, null_value_counts, nan_value_counts, lower_bounds,
        // upper_bounds, key_metadata, split_offsets, equality_ids, sort_order_id: unknown.
        for _ in 0..10 {
            e.null();
        }
        avro::container(
            MANIFEST_ENTRY_SCHEMA,
            &[
                ("schema", self.schema_of(i).to_string()),
                ("partition-spec", "[]".into()),
                ("partition-spec-id", "0".into()),
                ("format-version", "2".into()),
                ("content", "data".into()),
            ],
            1,
            e,
            sync_marker(v.snapshot_id, 1),
        )
    }

    /// The manifest list of version `i`'s snapshot: the manifest at `manifest_uri`
    /// (`manifest_len` bytes), written by [`Plan::manifest`].
    pub fn manifest_list(&self, i: usize, manifest_uri: &str, manifest_len: u64) -> Vec<u8> {
        let v = &self.versions[i].version;
        let parent = i
            .checked_sub(1)
            .map(|p| self.versions[p].version.snapshot_id);
        let rows = i64::try_from(v.file.rows).unwrap_or(i64::MAX);
        let mut e = avro::Encoder::new();
        e.string(manifest_uri)
            .long(i64::try_from(manifest_len).unwrap_or(i64::MAX))
            .int(0) // partition_spec_id
            .int(0) // content: data
            .long(v.sequence_number)
            .long(v.sequence_number) // min_sequence_number
            .long(v.snapshot_id)
            .int(1) // added_files_count
            .int(0)
            .int(0)
            .long(rows)
            .long(0)
            .long(0)
            .null() // partitions
            .null(); // key_metadata
        avro::container(
            MANIFEST_FILE_SCHEMA,
            &[
                ("snapshot-id", v.snapshot_id.to_string()),
                (
                    "parent-snapshot-id",
                    parent.map_or("null".into(), |p| p.to_string()),
                ),
                ("sequence-number", v.sequence_number.to_string()),
                ("format-version", "2".into()),
            ],
            1,
            e,
            sync_marker(v.snapshot_id, 2),
        )
    }

    /// The table metadata: every version a snapshot (the newest current, each tagged with its
    /// version's tag), `manifest_lists[i]` the URI of version `i`'s manifest list.
    pub fn metadata(
        &self,
        table_uuid: &str,
        location: &str,
        manifest_lists: &[String],
        mut properties: BTreeMap<String, String>,
    ) -> Value {
        if let Some(m) = &self.name_mapping {
            properties.insert("schema.name-mapping.default".into(), m.to_string());
        }
        let mut snapshots = Vec::new();
        let mut log = Vec::new();
        let mut refs = serde_json::Map::new();
        let mut previous: Option<&Version> = None;
        for (i, p) in self.versions.iter().enumerate() {
            let v = &p.version;
            let mut summary = serde_json::Map::new();
            summary.insert(
                "operation".into(),
                if previous.is_some() {
                    "overwrite"
                } else {
                    "append"
                }
                .into(),
            );
            summary.insert("added-data-files".into(), "1".into());
            summary.insert("added-records".into(), v.file.rows.to_string().into());
            summary.insert("added-files-size".into(), v.file.size.to_string().into());
            if let Some(prev) = previous {
                summary.insert("deleted-data-files".into(), "1".into());
                summary.insert("deleted-records".into(), prev.file.rows.to_string().into());
                summary.insert(
                    "removed-files-size".into(),
                    prev.file.size.to_string().into(),
                );
            }
            summary.insert("total-data-files".into(), "1".into());
            summary.insert("total-delete-files".into(), "0".into());
            summary.insert("total-records".into(), v.file.rows.to_string().into());
            summary.insert("total-files-size".into(), v.file.size.to_string().into());
            for (k, val) in &v.facts {
                summary.insert(format!("lake.{k}"), val.clone().into());
            }
            let mut snapshot = json!({
                "snapshot-id": v.snapshot_id,
                "sequence-number": v.sequence_number,
                "timestamp-ms": v.timestamp_ms,
                "manifest-list": manifest_lists.get(i).cloned().unwrap_or_default(),
                "summary": summary,
                "schema-id": p.schema_id,
            });
            if let Some(prev) = previous {
                snapshot["parent-snapshot-id"] = prev.snapshot_id.into();
            }
            snapshots.push(snapshot);
            log.push(json!({"timestamp-ms": v.timestamp_ms, "snapshot-id": v.snapshot_id}));
            refs.insert(
                v.tag.clone(),
                json!({"snapshot-id": v.snapshot_id, "type": "tag"}),
            );
            previous = Some(v);
        }
        let mut metadata = json!({
            "format-version": 2,
            "table-uuid": table_uuid,
            "location": location,
            "last-sequence-number": self.versions.last().map_or(0, |p| p.version.sequence_number),
            "last-updated-ms": self.versions.last().map_or(0, |p| p.version.timestamp_ms),
            "last-column-id": self.last_column_id,
            "current-schema-id": self.versions.last().map_or(0, |p| p.schema_id),
            "schemas": if self.schemas.is_empty() {
                vec![json!({"type": "struct", "schema-id": 0, "fields": []})]
            } else {
                self.schemas.clone()
            },
            "default-spec-id": 0,
            "partition-specs": [{"spec-id": 0, "fields": []}],
            "last-partition-id": 999,
            "default-sort-order-id": 0,
            "sort-orders": [{"order-id": 0, "fields": []}],
            "properties": properties,
            "snapshots": snapshots,
            "snapshot-log": log,
            "metadata-log": [],
        });
        if let Some(current) = previous {
            refs.insert(
                "main".into(),
                json!({"snapshot-id": current.snapshot_id, "type": "branch"}),
            );
            metadata["current-snapshot-id"] = current.snapshot_id.into();
        }
        metadata["refs"] = Value::Object(refs);
        metadata
    }
}

/// A file's sync marker, from its snapshot and kind: the same description, the same bytes.
fn sync_marker(snapshot_id: i64, kind: u8) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[..8].copy_from_slice(&snapshot_id.to_le_bytes());
    m[8..].copy_from_slice(&(!snapshot_id).to_be_bytes());
    m[0] ^= kind;
    m
}

/// The v2 `manifest_entry` schema, as the table spec (and PyIceberg) writes it.
const MANIFEST_ENTRY_SCHEMA: &str = include_str!("manifest_entry.avsc");

/// The v2 `manifest_file` schema (an entry of a manifest list).
const MANIFEST_FILE_SCHEMA: &str = include_str!("manifest_file.avsc");

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::TimeUnit;
    use std::collections::HashMap;
    use std::sync::Arc;

    fn version(n: i64, fields: Vec<Field>) -> Version {
        Version {
            snapshot_id: 100 + n,
            sequence_number: n,
            timestamp_ms: 1_700_000_000_000 + n,
            file: DataFile {
                uri: format!("file:///lake/v{n}.parquet"),
                size: 10 * n as u64,
                rows: n as u64,
            },
            schema: Schema::new(fields),
            tag: format!("version-{n}"),
            facts: BTreeMap::from([("dataset-id".into(), format!("d{n}"))]),
        }
    }

    fn with_id(f: Field, id: i32) -> Field {
        f.with_metadata(HashMap::from([(FIELD_ID_KEY.into(), id.to_string())]))
    }

    #[test]
    fn files_without_ids_get_ids_by_name_along_the_chain_and_a_name_mapping()
    -> Result<(), Unsupported> {
        let a = Field::new("a", DataType::Int64, true);
        let b = Field::new("b", DataType::Utf8, true);
        let c = Field::new("c", DataType::Float64, false);
        let plan = Plan::new(vec![
            version(1, vec![a.clone(), b.clone()]),
            // Reordered, one added: a and b keep their ids.
            version(2, vec![b.clone(), c.clone(), a.clone()]),
            version(3, vec![a.clone(), b.clone()]),
        ])?;
        assert_eq!(plan.schemas.len(), 2, "{:?}", plan.schemas);
        let ids = |s: &Value| -> Vec<(String, i64)> {
            s["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    (
                        f["name"].as_str().unwrap_or("").to_owned(),
                        f["id"].as_i64().unwrap_or(0),
                    )
                })
                .collect()
        };
        assert_eq!(ids(&plan.schemas[0]), [("a".into(), 1), ("b".into(), 2)]);
        assert_eq!(
            ids(&plan.schemas[1]),
            [("b".into(), 2), ("c".into(), 3), ("a".into(), 1)]
        );
        assert_eq!(plan.schemas[1]["fields"][1]["required"], true);
        assert_eq!(plan.versions[2].schema_id, 0);
        assert_eq!(plan.last_column_id, 3);
        let mapping = plan.name_mapping.clone().unwrap_or_default();
        assert_eq!(
            mapping,
            json!([
                {"field-id": 1, "names": ["a"]},
                {"field-id": 2, "names": ["b"]},
                {"field-id": 3, "names": ["c"]},
            ])
        );
        let meta = plan.metadata(
            "u",
            "file:///lake",
            &["l1".into(), "l2".into(), "l3".into()],
            BTreeMap::new(),
        );
        assert_eq!(meta["current-snapshot-id"], 103);
        assert_eq!(meta["current-schema-id"], 0);
        assert_eq!(meta["refs"]["main"]["snapshot-id"], 103);
        assert_eq!(meta["refs"]["version-1"]["snapshot-id"], 101);
        assert_eq!(meta["snapshots"][1]["parent-snapshot-id"], 101);
        assert_eq!(meta["snapshots"][1]["manifest-list"], "l2");
        assert_eq!(meta["snapshots"][1]["summary"]["operation"], "overwrite");
        assert_eq!(meta["snapshots"][1]["summary"]["lake.dataset-id"], "d2");
        assert_eq!(meta["last-sequence-number"], 3);
        assert!(meta["properties"]["schema.name-mapping.default"].is_string());
        Ok(())
    }

    #[test]
    fn files_with_ids_keep_them_and_need_no_mapping() -> Result<(), Unsupported> {
        let item = with_id(Field::new("item", DataType::Utf8, true), 3);
        let fields = vec![
            with_id(Field::new("x", DataType::Int32, true), 1),
            with_id(Field::new("tags", DataType::List(Arc::new(item)), true), 2),
        ];
        let plan = Plan::new(vec![version(1, fields)])?;
        assert!(plan.name_mapping.is_none());
        let tags = &plan.schemas[0]["fields"][1];
        assert_eq!(tags["id"], 2);
        assert_eq!(tags["type"]["type"], "list");
        assert_eq!(tags["type"]["element-id"], 3);
        assert_eq!(tags["type"]["element"], "string");
        assert_eq!(plan.last_column_id, 3);
        Ok(())
    }

    #[test]
    fn types_map_to_iceberg_and_the_unrepresentable_is_named() {
        let t = |dt: DataType| {
            let plan = Plan::new(vec![version(1, vec![Field::new("c", dt, true)])]);
            plan.map(|p| p.schemas[0]["fields"][0]["type"].clone())
        };
        assert_eq!(t(DataType::Utf8), Ok(json!("string")));
        assert_eq!(t(DataType::Int16), Ok(json!("int")));
        assert_eq!(t(DataType::Decimal128(10, 2)), Ok(json!("decimal(10, 2)")));
        assert_eq!(
            t(DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("UTC".into())
            )),
            Ok(json!("timestamptz"))
        );
        assert_eq!(
            t(DataType::Dictionary(
                Box::new(DataType::Int32),
                Box::new(DataType::Utf8)
            )),
            Ok(json!("string"))
        );
        let err = t(DataType::Duration(TimeUnit::Second));
        assert_eq!(
            err.map_err(|e| e.to_string()),
            Err("column \"c\" is Duration(s), which Iceberg has no type for".to_owned())
        );
    }

    #[test]
    fn manifests_are_the_same_bytes_for_the_same_version() -> Result<(), Unsupported> {
        let plan = Plan::new(vec![version(
            1,
            vec![Field::new("a", DataType::Int64, true)],
        )])?;
        let m = plan.manifest(0);
        assert_eq!(m, plan.manifest(0));
        assert!(m.starts_with(b"Obj\x01"));
        let text = String::from_utf8_lossy(&m);
        assert!(text.contains("file:///lake/v1.parquet"));
        assert!(text.contains(r#""field-id": 134"#));
        let list = plan.manifest_list(0, "file:///lake/m.avro", m.len() as u64);
        assert!(String::from_utf8_lossy(&list).contains("file:///lake/m.avro"));
        assert_ne!(sync_marker(1, 1), sync_marker(1, 2));
        Ok(())
    }
}
