//! The lake host: the `lake` server and CLI, the catalog and blob-store adapters, layers and
//! provenance.
//!
//! Start at [`lake::Lake`], the composition root every entry point holds, and its services, one
//! module per noun ([`files`], [`pipeline`], [`collect`], [`backup`], [`promotion`], [`jobs`]);
//! [`http`] and [`cli`] are thin shells over them. [`catalog`] and [`blob`] each define one contract with two adapters, and nothing
//! outside an adapter names its driver. See `ARCHITECTURE.md` at the repository root for the map.

pub mod audit;
pub mod backup;
pub mod blob;
pub mod catalog;
pub mod cli;
pub mod collect;
pub mod config;
pub mod files;
pub mod fsck;
pub mod http;
pub mod iceberg;
pub mod identity;
pub mod jobs;
pub mod lake;
pub mod layers;
pub mod openlineage;
pub mod pipeline;
pub mod plugins;
pub mod promotion;
pub mod provenance;
pub mod rocrate;
pub mod scaffold;
pub mod tables;
pub mod telemetry;
pub mod ui;
