//! Tables as the lake stores them: the rules every Parquet object it writes follows, whatever
//! plugin produced the batches.
//!
//! Arrow allows a schema with empty or repeated column names, and a spreadsheet's header row often
//! has both; Parquet readers do not (Polars refuses a file with two columns named `""`). So the
//! writers give each column a unique, non-empty name before the first batch, and the caller records
//! what was renamed next to the table, so nobody is left guessing where `name_2` came from.

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::{RecordBatch, RecordBatchOptions};
use arrow_schema::{Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

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
}
