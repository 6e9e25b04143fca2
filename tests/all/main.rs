//! The lake's integration tests: one binary, one module per concern.
//!
//! Tests that need PostgreSQL, Garage or moto read their addresses from the `LAKE_TEST_*` variables
//! that `tests/run.sh` exports after starting them. Run through that script they are required
//! (`LAKE_TEST_REQUIRE_SERVICES=1`): a missing service fails the test. Run with a bare `cargo test`
//! they are skipped with a message instead.

mod access;
mod architecture;
mod backup;
mod blob_conformance;
mod catalog_conformance;
mod cli;
mod config;
mod connectors;
mod crash;
mod dashboard;
mod files;
mod first_run;
mod fsck;
mod hostile;
mod hostile_http;
mod http_api;
mod iceberg;
mod identity;
mod ingest;
mod interop;
mod lab_files;
mod object_lock;
mod pipelines;
mod plugins;
mod plugins_more;
mod scaffold;
mod sources;
mod walkthrough;

use std::sync::Arc;

use lake_host::blob::s3::S3Store;
use lake_host::catalog::postgres::PostgresCatalog;
use lake_host::config::{ByteSize, S3Config, Secret};

/// The value of a service variable, or `None` (after saying so) when it is absent and not required.
pub fn service_var(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            if std::env::var("LAKE_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("{name} is not set but tests/run.sh requires it: the service did not start");
            }
            eprintln!("skipping: {name} is not set (run the suite with tests/run.sh)");
            None
        }
    }
}

/// A short unique name for buckets and databases.
pub fn unique(prefix: &str) -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &u[..20])
}

/// A fresh, empty PostgreSQL database for one test; returns its URL.
pub async fn scratch_pg() -> Option<String> {
    use sqlx::Connection;
    let admin = service_var("LAKE_TEST_PG_URL")?;
    let name = unique("lake_test_");
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create a scratch database");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    Some(format!("{base}/{name}"))
}

/// A migrated PostgreSQL catalog in a scratch database.
pub async fn pg_catalog() -> Option<Arc<PostgresCatalog>> {
    use lake_host::catalog::Catalog;
    let url = scratch_pg().await?;
    let c = PostgresCatalog::connect(&url, 8)
        .await
        .expect("connect to the scratch database");
    c.migrate().await.expect("migrate PostgreSQL");
    Some(Arc::new(c))
}

/// S3 settings for the test Garage.
pub fn garage_config() -> Option<S3Config> {
    Some(S3Config {
        endpoint: Some(service_var("LAKE_TEST_S3_ENDPOINT")?),
        region: std::env::var("LAKE_TEST_S3_REGION").unwrap_or_else(|_| "garage".into()),
        force_path_style: true,
        access_key_id: Some(service_var("LAKE_TEST_S3_ACCESS_KEY_ID")?),
        secret_access_key: Some(Secret::new(service_var("LAKE_TEST_S3_SECRET_ACCESS_KEY")?)),
        secret_access_key_file: None,
        multipart_part_size: ByteSize(5 << 20),
        multipart_concurrency: 2,
    })
}

/// A blob store on the test Garage.
pub fn garage() -> Option<S3Store> {
    Some(S3Store::new(&garage_config()?).expect("configure the Garage client"))
}
