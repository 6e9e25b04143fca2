//! The plugin author's crate for the lake.
//!
//! Placeholder: issue 3 fills this with one trait per plugin kind, an export macro, Arrow helpers and
//! typed errors. It exists now so the workspace has its fixed shape from the first commit.
