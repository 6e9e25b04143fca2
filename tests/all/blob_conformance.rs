//! The blob-store contract (see `host/src/blob.rs`), run against every backend: the local directory
//! and a real Garage.

use std::io;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use lake_host::blob::{BlobError, BlobStore, BucketPolicy, ByteStream, Enforcement};

fn stream_of(chunks: Vec<Vec<u8>>) -> ByteStream {
    Box::pin(futures::stream::iter(
        chunks.into_iter().map(|c| Ok(Bytes::from(c))),
    ))
}

fn failing_after(chunks: Vec<Vec<u8>>) -> ByteStream {
    let ok = futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))));
    let fail = futures::stream::once(async { Err(io::Error::other("client went away")) });
    Box::pin(ok.chain(fail))
}

async fn read_all(store: &dyn BlobStore, bucket: &str, key: &str) -> Vec<u8> {
    let chunks: Vec<Bytes> = store
        .get(bucket, key)
        .await
        .expect("get")
        .try_collect()
        .await
        .expect("read body");
    chunks.concat()
}

/// Deterministic bytes that differ between offsets, so a reordered part would be caught.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64 * 2654435761 + seed as u64) >> 7) as u8)
        .collect()
}

pub async fn put_get_roundtrip(store: &dyn BlobStore, bucket: &str) {
    let chunks = vec![b"hello ".to_vec(), b"streamed ".to_vec(), b"world".to_vec()];
    let n = store
        .put(bucket, "a/b/hello.txt", stream_of(chunks))
        .await
        .expect("put");
    assert_eq!(n, 20);
    assert_eq!(
        read_all(store, bucket, "a/b/hello.txt").await,
        b"hello streamed world"
    );
    assert_eq!(
        store
            .head(bucket, "a/b/hello.txt")
            .await
            .expect("head")
            .size,
        20
    );
}

pub async fn missing_is_not_found(store: &dyn BlobStore, bucket: &str) {
    assert!(matches!(
        store.get(bucket, "no/such/key").await,
        Err(BlobError::NotFound { .. })
    ));
    assert!(matches!(
        store.head(bucket, "no/such/key").await,
        Err(BlobError::NotFound { .. })
    ));
}

pub async fn invalid_keys_rejected(store: &dyn BlobStore, bucket: &str) {
    for key in [
        "",
        "/abs",
        "../escape",
        "a/../b",
        "a//b",
        "a/./b",
        "back\\slash",
        "nul\0",
    ] {
        let r = store.put(bucket, key, stream_of(vec![b"x".to_vec()])).await;
        assert!(
            matches!(r, Err(BlobError::InvalidKey { .. })),
            "key {key:?} was accepted: {r:?}"
        );
    }
}

pub async fn list_by_prefix(store: &dyn BlobStore, bucket: &str) {
    for k in [
        "ds1/b.csv",
        "ds1/a.csv",
        "ds1/sub/c.csv",
        "ds10/x.csv",
        "ds2/y.csv",
    ] {
        store
            .put(bucket, k, stream_of(vec![k.as_bytes().to_vec()]))
            .await
            .expect("put");
    }
    let keys: Vec<String> = store
        .list(bucket, "ds1/")
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["ds1/a.csv", "ds1/b.csv", "ds1/sub/c.csv"]);
    let partial: Vec<String> = store
        .list(bucket, "ds1")
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        partial,
        ["ds1/a.csv", "ds1/b.csv", "ds1/sub/c.csv", "ds10/x.csv"]
    );
    let sizes: Vec<u64> = store
        .list(bucket, "ds2/")
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.size)
        .collect();
    assert_eq!(sizes, [9]);
    assert!(
        store
            .list(bucket, "nothing-here/")
            .await
            .expect("list")
            .is_empty()
    );
}

/// A walk sends every key under its prefix exactly once, in pages no larger than asked, with
/// each object's size and time; a prefix that ends mid-name walks only the keys it begins; a
/// receiver that goes away ends the walk without error.
pub async fn walk_sends_every_key_once(store: &dyn BlobStore, bucket: &str) {
    let keys = [
        "a/x.csv",
        "a.b",
        "a0",
        "a/y/z.csv",
        "a/y.csv",
        "b",
        "a/y/a.csv",
        "c/d/e/f.csv",
        "ab/c.csv",
    ];
    for k in keys {
        store
            .put(bucket, k, stream_of(vec![k.as_bytes().to_vec()]))
            .await
            .expect("put");
    }
    async fn walked(store: &dyn BlobStore, bucket: &str, prefix: &str, page: usize) -> Vec<String> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<lake_host::blob::ListedObject>>(1);
        let collect = async {
            let mut keys = Vec::new();
            while let Some(objects) = rx.recv().await {
                assert!(!objects.is_empty() && objects.len() <= page, "{objects:?}");
                for o in objects {
                    assert_eq!(o.size, o.key.len() as u64, "{o:?}");
                    assert!(o.modified.is_some(), "{o:?}");
                    keys.push(o.key);
                }
            }
            keys
        };
        let (done, mut keys) = tokio::join!(store.walk(bucket, prefix, page, tx), collect);
        done.expect("walk");
        keys.sort_unstable();
        keys
    }
    let mut all: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    all.sort_unstable();
    for page in [1, 2, 3, 100] {
        assert_eq!(
            walked(store, bucket, "", page).await,
            all,
            "pages of {page}"
        );
    }
    assert_eq!(
        walked(store, bucket, "a/y", 2).await,
        ["a/y.csv", "a/y/a.csv", "a/y/z.csv"]
    );
    assert_eq!(walked(store, bucket, "a", 10).await.len(), 7);
    assert!(walked(store, bucket, "nothing/", 10).await.is_empty());
    // One page taken, then the receiver goes: the walk ends, Ok.
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let first = async move {
        let page = rx.recv().await;
        drop(rx);
        page
    };
    let (done, page) = tokio::join!(store.walk(bucket, "", 1, tx), first);
    done.expect("a walk nobody reads any more ends without error");
    assert_eq!(page.map(|p| p.len()), Some(1));
}

pub async fn copy_leaves_source(store: &dyn BlobStore, bucket: &str, other_bucket: &str) {
    let data = pattern(100_000, 3);
    store
        .put(bucket, "src/data.bin", stream_of(vec![data.clone()]))
        .await
        .expect("put");
    store
        .copy(bucket, "src/data.bin", other_bucket, "dst/data.bin")
        .await
        .expect("copy");
    assert_eq!(read_all(store, other_bucket, "dst/data.bin").await, data);
    assert_eq!(read_all(store, bucket, "src/data.bin").await, data);
    assert!(matches!(
        store
            .copy(bucket, "src/missing", other_bucket, "dst/x")
            .await,
        Err(BlobError::NotFound { .. })
    ));
}

pub async fn delete_is_idempotent(store: &dyn BlobStore, bucket: &str) {
    store
        .put(bucket, "del/me", stream_of(vec![b"x".to_vec()]))
        .await
        .expect("put");
    store.delete(bucket, "del/me").await.expect("delete");
    store.delete(bucket, "del/me").await.expect("second delete");
    assert!(matches!(
        store.head(bucket, "del/me").await,
        Err(BlobError::NotFound { .. })
    ));
}

pub async fn failed_body_leaves_nothing(store: &dyn BlobStore, bucket: &str) {
    // Small body (single-request path) and a large one (multipart path on S3).
    let r = store
        .put(
            bucket,
            "broken/small",
            failing_after(vec![b"partial".to_vec()]),
        )
        .await;
    assert!(matches!(r, Err(BlobError::Body(_))), "{r:?}");
    let big = failing_after(vec![pattern(6 << 20, 1), pattern(3 << 20, 2)]);
    let r = store.put(bucket, "broken/large", big).await;
    assert!(matches!(r, Err(BlobError::Body(_))), "{r:?}");
    assert!(
        store
            .list(bucket, "broken/")
            .await
            .expect("list")
            .is_empty()
    );
}

pub async fn overwrite_is_whole(store: &dyn BlobStore, bucket: &str) {
    store
        .put(bucket, "over/x", stream_of(vec![b"first version".to_vec()]))
        .await
        .expect("put");
    store
        .put(bucket, "over/x", stream_of(vec![b"second".to_vec()]))
        .await
        .expect("put");
    assert_eq!(read_all(store, bucket, "over/x").await, b"second");
}

pub async fn large_object_streams_in_parts(store: &dyn BlobStore, bucket: &str) {
    // 12 MiB in uneven chunks: three 5 MiB parts on the test S3 configuration.
    let data = pattern(12 << 20, 9);
    let chunks: Vec<Vec<u8>> = data.chunks(777_777).map(<[u8]>::to_vec).collect();
    let n = store
        .put(bucket, "big/object.bin", stream_of(chunks))
        .await
        .expect("put");
    assert_eq!(n, data.len() as u64);
    let back = read_all(store, bucket, "big/object.bin").await;
    assert!(
        back == data,
        "large object came back different ({} bytes)",
        back.len()
    );
    let (sha, size) = lake_host::blob::sha256_of(store, bucket, "big/object.bin")
        .await
        .expect("hash");
    assert_eq!(size, data.len() as u64);
    assert_eq!(sha, lake_host::blob::Sha256::of(&data));
}

pub async fn ranges_read_part_of_an_object(store: &dyn BlobStore, bucket: &str) {
    let data = pattern(100_000, 9);
    store
        .put(bucket, "r/table.parquet", stream_of(vec![data.clone()]))
        .await
        .expect("put");
    for (range, want) in [
        (0..10, &data[0..10]),
        (99_992..100_000, &data[99_992..]),
        (40_000..70_001, &data[40_000..70_001]),
        // Cut at the end, or nothing at all past it.
        (99_990..200_000, &data[99_990..]),
        (100_000..100_008, &data[..0]),
        (150_000..150_001, &data[..0]),
        (5..5, &data[..0]),
    ] {
        let got = store
            .get_range(bucket, "r/table.parquet", range.clone())
            .await
            .unwrap_or_else(|e| panic!("range {range:?}: {e}"));
        assert_eq!(&got[..], want, "range {range:?}");
    }
    assert!(matches!(
        store.get_range(bucket, "r/missing", 0..4).await,
        Err(BlobError::NotFound { .. })
    ));
    assert!(matches!(
        store.get_range(bucket, "../escape", 0..4).await,
        Err(BlobError::InvalidKey { .. })
    ));
}

macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            conformance!(@one $make, put_get_roundtrip);
            conformance!(@one $make, missing_is_not_found);
            conformance!(@one $make, invalid_keys_rejected);
            conformance!(@one $make, list_by_prefix);
            conformance!(@one $make, walk_sends_every_key_once);
            conformance!(@one $make, delete_is_idempotent);
            conformance!(@one $make, failed_body_leaves_nothing);
            conformance!(@one $make, overwrite_is_whole);
            conformance!(@one $make, large_object_streams_in_parts);
            conformance!(@one $make, ranges_read_part_of_an_object);

            #[tokio::test]
            async fn copy_leaves_source() {
                let Some((store, bucket, _guard)) = $make.await else { return };
                let other = crate::unique("lt-other-");
                store.prepare_bucket(&other, &BucketPolicy::default()).await.expect("second bucket");
                super::copy_leaves_source(store.as_ref(), &bucket, &other).await;
            }
        }
    };
    (@one $make:expr, $name:ident) => {
        #[tokio::test]
        async fn $name() {
            let Some((store, bucket, _guard)) = $make.await else { return };
            super::$name(store.as_ref(), &bucket).await;
        }
    };
}

type Made = Option<(Box<dyn BlobStore>, String, Option<tempfile::TempDir>)>;

async fn make_local() -> Made {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = lake_host::blob::local::LocalStore::open(dir.path().join("objects"))
        .await
        .expect("open");
    let bucket = crate::unique("lt-");
    store
        .prepare_bucket(&bucket, &BucketPolicy::default())
        .await
        .expect("bucket");
    Some((Box::new(store), bucket, Some(dir)))
}

async fn make_garage() -> Made {
    let store = crate::garage()?;
    let bucket = crate::unique("lt-");
    store
        .prepare_bucket(&bucket, &BucketPolicy::default())
        .await
        .expect("create bucket on Garage");
    Some((Box::new(store), bucket, None))
}

conformance!(local, make_local());
conformance!(garage, make_garage());

#[tokio::test]
async fn local_reports_host_only_immutability() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = lake_host::blob::local::LocalStore::open(dir.path())
        .await
        .expect("open");
    let policy = BucketPolicy {
        object_lock: Some((90, "GOVERNANCE")),
        expire_after_days: Some(180),
        seldom_read: false,
    };
    let r = store
        .prepare_bucket("lake-raw", &policy)
        .await
        .expect("prepare");
    assert!(matches!(r.object_lock, Enforcement::Unsupported { .. }));
    assert!(matches!(r.lifecycle, Enforcement::Unsupported { .. }));
    assert_eq!(
        store
            .presign_get("lake-raw", "a/b", std::time::Duration::from_secs(60))
            .await
            .expect("presign"),
        None
    );
}

/// A local store in a new directory with its bucket `lake-raw` prepared under `policy`.
async fn local_raw_bucket(
    policy: &BucketPolicy,
) -> (tempfile::TempDir, lake_host::blob::local::LocalStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = lake_host::blob::local::LocalStore::open(dir.path())
        .await
        .expect("open");
    store
        .prepare_bucket("lake-raw", policy)
        .await
        .expect("bucket");
    (dir, store)
}

/// A local put that fails, or is dropped half-way (its client gone), leaves no temporary file; one
/// that completes leaves only its object, whole.
#[tokio::test]
async fn local_puts_leave_no_temporary_file_behind() {
    let (dir, store) = local_raw_bucket(&BucketPolicy::default()).await;
    let temporary = || {
        std::fs::read_dir(dir.path().join(".tmp"))
            .expect("the store's temporary directory")
            .count()
    };
    // Failed past the first write-back (8 MiB).
    let r = store
        .put(
            "lake-raw",
            "failed",
            failing_after(vec![pattern(9 << 20, 3), vec![1]]),
        )
        .await;
    assert!(matches!(r, Err(BlobError::Body(_))), "{r:?}");
    assert_eq!(temporary(), 0, "after a failed body");
    // Dropped while waiting for more of the body.
    let stalled: ByteStream = Box::pin(
        futures::stream::iter([Ok(Bytes::from(pattern(1 << 20, 4)))])
            .chain(futures::stream::pending()),
    );
    let dropped = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        store.put("lake-raw", "dropped", stalled),
    )
    .await;
    assert!(dropped.is_err(), "the stalled put should still be waiting");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while temporary() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(temporary(), 0, "after a dropped put");
    // Complete, with an empty chunk inside the body (not taken for its end).
    let data = pattern(20 << 20, 5);
    let mut chunks: Vec<Vec<u8>> = data.chunks(3 << 20).map(<[u8]>::to_vec).collect();
    chunks.insert(2, Vec::new());
    let n = store
        .put("lake-raw", "whole", stream_of(chunks))
        .await
        .expect("put");
    assert_eq!(n, data.len() as u64);
    assert!(
        read_all(&store, "lake-raw", "whole").await == data,
        "the object came back different"
    );
    assert_eq!(temporary(), 0, "after a complete put");
    let listed: Vec<String> = store
        .list("lake-raw", "")
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(listed, vec!["whole".to_owned()]);
}

#[tokio::test]
async fn garage_presigned_get_serves_the_bytes_and_lifecycle_applies() {
    let Some(store) = crate::garage() else { return };
    let bucket = crate::unique("lt-");
    let policy = BucketPolicy {
        object_lock: Some((90, "GOVERNANCE")),
        expire_after_days: Some(180),
        seldom_read: false,
    };
    let report = store
        .prepare_bucket(&bucket, &policy)
        .await
        .expect("prepare");
    // Garage has lifecycle expiration but no Object Lock: the report must say exactly that.
    assert!(
        matches!(report.lifecycle, Enforcement::Applied { .. }),
        "{report:?}"
    );
    assert!(
        matches!(report.object_lock, Enforcement::Unsupported { .. }),
        "{report:?}"
    );
    store
        .put(
            &bucket,
            "p/file.txt",
            stream_of(vec![b"presigned bytes".to_vec()]),
        )
        .await
        .expect("put");
    let url = store
        .presign_get(&bucket, "p/file.txt", std::time::Duration::from_secs(60))
        .await
        .expect("presign")
        .expect("a URL");
    let body = reqwest::get(&url)
        .await
        .expect("fetch presigned")
        .bytes()
        .await
        .expect("body");
    assert_eq!(&body[..], b"presigned bytes");
}

/// A local bucket whose objects are seldom read ([`BucketPolicy::seldom_read`], raw) writes large
/// bodies past the page cache in aligned blocks: every length (none, under a block, exactly one,
/// one and a byte, several with a partial page at the end) and every way of cutting the body into
/// chunks comes back byte for byte; a failed body there leaves no temporary file either.
#[tokio::test]
async fn local_puts_past_the_page_cache_come_back_whole() {
    let policy = BucketPolicy {
        seldom_read: true,
        ..BucketPolicy::default()
    };
    let (dir, store) = local_raw_bucket(&policy).await;
    const BLOCK: usize = 4 << 20;
    let cases: [(usize, usize); 7] = [
        (0, 1),
        (100, 7),
        (BLOCK - 1, 1 << 20),
        (BLOCK, 65_536),
        (BLOCK + 1, 3 << 20),
        (9 * (1 << 20) + 4096, 1_000_003),
        (3 * BLOCK + 123, 5 << 20),
    ];
    for (i, (len, piece)) in cases.into_iter().enumerate() {
        let data = pattern(len, i as u8);
        let chunks: Vec<Vec<u8>> = data.chunks(piece).map(<[u8]>::to_vec).collect();
        let key = format!("object-{i}");
        let n = store
            .put("lake-raw", &key, stream_of(chunks))
            .await
            .expect("put");
        assert_eq!(n, len as u64, "{key}: bytes counted");
        let back = read_all(&store, "lake-raw", &key).await;
        assert_eq!(back.len(), len, "{key}: length read back");
        assert!(back == data, "{key}: the object came back different");
    }
    let r = store
        .put(
            "lake-raw",
            "failed",
            failing_after(vec![pattern(BLOCK + 5000, 9)]),
        )
        .await;
    assert!(matches!(r, Err(BlobError::Body(_))), "{r:?}");
    let left = std::fs::read_dir(dir.path().join(".tmp"))
        .expect("the store's temporary directory")
        .count();
    assert_eq!(left, 0, "a failed put left a temporary file");
    assert!(
        store.head("lake-raw", "failed").await.is_err(),
        "a failed put left an object"
    );
}
