//! Object Lock on a store that has it (moto's S3 server, the test double for this path only; Garage
//! has no Object Lock): the host applies raw retention and archive lifecycle from configuration and
//! reports immutability as enforced by storage.

use std::sync::Arc;

use lake_host::blob::s3::S3Store;
use lake_host::blob::{BlobStore, BucketPolicy, Enforcement};
use lake_host::config::{ByteSize, S3Config, Secret};

fn moto() -> Option<S3Store> {
    let endpoint = crate::service_var("LAKE_TEST_MOTO_ENDPOINT")?;
    let cfg = S3Config {
        endpoint: Some(endpoint),
        region: "us-east-1".into(),
        force_path_style: true,
        access_key_id: Some("testing".into()),
        secret_access_key: Some(Secret::new("testing")),
        secret_access_key_file: None,
        multipart_part_size: ByteSize(5 << 20),
        multipart_concurrency: 2,
    };
    Some(S3Store::new(&cfg).expect("client"))
}

#[tokio::test]
async fn raw_gets_object_lock_and_archive_a_lifecycle() {
    let Some(store) = moto() else { return };
    let bucket = crate::unique("lock-");
    let policy = BucketPolicy {
        object_lock: Some((90, "GOVERNANCE")),
        expire_after_days: None,
        seldom_read: false,
    };
    let report = store
        .prepare_bucket(&bucket, &policy)
        .await
        .expect("prepare");
    assert_eq!(
        report.object_lock,
        Enforcement::Applied {
            detail: "GOVERNANCE retention, 90 days".into()
        }
    );

    // What the store recorded, read back through the S3 API.
    let conf = store
        .client()
        .get_object_lock_configuration()
        .bucket(&bucket)
        .send()
        .await
        .expect("get lock config");
    let rule = conf
        .object_lock_configuration()
        .and_then(|c| c.rule())
        .and_then(|r| r.default_retention())
        .expect("default retention");
    assert_eq!(rule.days(), Some(90));
    assert_eq!(rule.mode().map(|m| m.as_str()), Some("GOVERNANCE"));

    // A new raw object is retained by the store itself.
    let body: lake_host::blob::ByteStream = Box::pin(futures::stream::once(async {
        Ok(bytes::Bytes::from_static(b"raw bytes"))
    }));
    store
        .put(&bucket, "geo/x/raw.txt", body)
        .await
        .expect("put into a locked bucket");
    let head = store
        .client()
        .head_object()
        .bucket(&bucket)
        .key("geo/x/raw.txt")
        .send()
        .await
        .expect("head");
    assert_eq!(
        head.object_lock_mode().map(|m| m.as_str()),
        Some("GOVERNANCE")
    );
    assert!(head.object_lock_retain_until_date().is_some());

    let archive = crate::unique("arch-");
    let report = store
        .prepare_bucket(
            &archive,
            &BucketPolicy {
                object_lock: None,
                expire_after_days: Some(180),
                seldom_read: false,
            },
        )
        .await
        .expect("prepare");
    assert!(
        matches!(report.lifecycle, Enforcement::Applied { .. }),
        "{report:?}"
    );
    let lc = store
        .client()
        .get_bucket_lifecycle_configuration()
        .bucket(&archive)
        .send()
        .await
        .expect("lifecycle");
    assert_eq!(lc.rules()[0].expiration().and_then(|e| e.days()), Some(180));
}

#[tokio::test]
async fn layers_report_storage_enforcement_where_the_store_locks() {
    let Some(store) = moto() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("c.db").display());
    let catalog = lake_host::catalog::sqlite::SqliteCatalog::connect(&url, 2)
        .await
        .expect("sqlite");
    use lake_host::catalog::Catalog;
    catalog.migrate().await.expect("migrate");
    let mut settings = crate::http_api::settings(1 << 20);
    let tag = crate::unique("l");
    settings.buckets = ["raw", "processed", "curated", "archive"].map(|l| format!("{tag}-{l}"));
    let lake = lake_host::lake::Lake::new(Arc::new(catalog), Arc::new(store), settings);
    lake.prepare_buckets().await.expect("prepare");
    let layers = lake.layers().await.expect("layers");
    assert_eq!(layers[0].immutability, "storage");
    assert_eq!(layers[1].immutability, "host");
    assert!(matches!(
        layers[3].storage.lifecycle,
        Enforcement::Applied { .. }
    ));
}
