//! Blob storage: one small trait, a local-directory backend and an S3 backend.
//!
//! # Contract (checked by the conformance suite in `tests/all/blob_conformance.rs`)
//!
//! * Objects are addressed by `(bucket, key)`. Keys are `/`-separated relative paths: no empty,
//!   `.` or `..` segments, no leading `/`, no backslash or NUL. Every backend rejects other keys with
//!   [`BlobError::InvalidKey`] before touching storage.
//! * [`BlobStore::put`] streams its body: a backend never holds a whole object in memory (S3 uses
//!   multipart uploads past one part). A put is atomic: readers see the previous object or the whole
//!   new one, never a prefix. If the body stream fails, nothing is left behind.
//! * [`BlobStore::get`] and [`BlobStore::head`] of a missing key answer [`BlobError::NotFound`].
//! * [`BlobStore::list`] returns every object whose key starts with the prefix, sorted by key.
//!   [`BlobStore::walk`] sends them a page at a time, in no promised order, with their
//!   modification times, so a walk over every object holds one page, never them all (nor, on the
//!   local store, a directory's names).
//! * [`BlobStore::copy`] copies inside the store without moving bytes through the host where the store
//!   can (server-side `CopyObject` on S3); the source is unchanged.
//! * [`BlobStore::delete`] is idempotent: deleting a missing key succeeds.
//! * [`BlobStore::presign_get`] returns a time-limited URL on stores that have them, `None` otherwise.
//! * [`BlobStore::prepare_bucket`] creates a bucket if needed, applies what it can of a
//!   [`BucketPolicy`], and reports what the store enforces.

pub mod local;
pub mod s3;

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde::Serialize;
use sha2::Digest;

/// A stream of object bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// A stored object's key and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The full key within its bucket.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// One object of a listing page: its key, size and when it was last written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    /// The full key within its bucket.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// When the object was written, where the store says.
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// What a layer asks of its bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketPolicy {
    /// Default Object Lock retention in days, with its mode (`GOVERNANCE` or `COMPLIANCE`).
    pub object_lock: Option<(u32, &'static str)>,
    /// Expire objects this many days after creation.
    pub expire_after_days: Option<u32>,
    /// Objects are written once and seldom read back soon after (raw): a store with a cache of its
    /// own (the local directory's page cache) may write large ones past it.
    pub seldom_read: bool,
}

/// Whether the store enforces part of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Enforcement {
    /// The layer's policy does not ask for it.
    NotRequested,
    /// The store enforces it.
    Applied {
        /// What was applied, e.g. "GOVERNANCE 90 days".
        detail: String,
    },
    /// The store cannot do it; the host alone enforces what it can.
    Unsupported {
        /// Why, as the store answered.
        reason: String,
    },
}

/// What the store enforces for one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BucketReport {
    /// Object Lock retention.
    pub object_lock: Enforcement,
    /// Lifecycle expiration.
    pub lifecycle: Enforcement,
}

/// Blob store failures; each variant is a decision for the caller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// No object at that key.
    #[error("object not found: {bucket}/{key}")]
    NotFound {
        /// Bucket asked for.
        bucket: String,
        /// Key asked for.
        key: String,
    },
    /// The key breaks the key rules in the module contract.
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The rejected key.
        key: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The body stream given to `put` failed (the client went away, a size limit tripped).
    #[error("reading the upload failed: {0}")]
    Body(#[source] io::Error),
    /// The store could not be reached or refused the request; retrying later may work.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// An object store holding the lake's bytes. See the module documentation for the contract.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + fmt::Debug {
    /// `local` or `s3`, for reports.
    fn kind(&self) -> &'static str;
    /// Where an object is, as engines name it: `file:///abs/path` or `s3://bucket/key`.
    fn uri(&self, bucket: &str, key: &str) -> String;
    /// Creates the bucket if it does not exist and applies what it can of the policy.
    async fn prepare_bucket(
        &self,
        bucket: &str,
        policy: &BucketPolicy,
    ) -> Result<BucketReport, BlobError>;
    /// Streams `body` into `bucket/key`, atomically; returns the number of bytes stored.
    async fn put(&self, bucket: &str, key: &str, body: ByteStream) -> Result<u64, BlobError>;
    /// Streams an object's bytes.
    async fn get(&self, bucket: &str, key: &str) -> Result<ByteStream, BlobError>;
    /// The bytes of `range` of an object, cut at its end (fewer bytes, or none, where the range
    /// passes it): a Parquet footer or page without fetching the whole object.
    async fn get_range(
        &self,
        bucket: &str,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes, BlobError>;
    /// An object's size.
    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo, BlobError>;
    /// Every object under a prefix, sorted by key.
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>, BlobError>;
    /// Every object under a prefix, sent to `pages` in pages of at most `page` objects, each key
    /// once and in no promised order: a walk of any size that holds one page at a time (and, on
    /// the local store, one open directory per level, never a directory's names). Ends early,
    /// without error, when the receiver is dropped.
    async fn walk(
        &self,
        bucket: &str,
        prefix: &str,
        page: usize,
        pages: tokio::sync::mpsc::Sender<Vec<ListedObject>>,
    ) -> Result<(), BlobError>;
    /// Copies an object within the store.
    async fn copy(
        &self,
        src_bucket: &str,
        src_key: &str,
        dst_bucket: &str,
        dst_key: &str,
    ) -> Result<(), BlobError>;
    /// Deletes an object; a missing object is not an error.
    async fn delete(&self, bucket: &str, key: &str) -> Result<(), BlobError>;
    /// A time-limited download URL, where the store has them.
    async fn presign_get(
        &self,
        bucket: &str,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<String>, BlobError>;
}

/// Checks a key against the contract's rules.
pub fn check_key(key: &str) -> Result<(), BlobError> {
    let bad = |reason| {
        Err(BlobError::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("empty");
    }
    if key.len() > 1024 {
        return bad("longer than 1024 bytes");
    }
    if key.starts_with('/') {
        return bad("starts with /");
    }
    if key.contains('\\') || key.contains('\0') {
        return bad("contains a backslash or NUL");
    }
    if key.chars().any(char::is_control) {
        return bad("contains a control character");
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return bad("has an empty, . or .. segment");
    }
    Ok(())
}

/// A SHA-256 digest, shown and stored as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256([u8; 32]);

impl Sha256 {
    /// The digest of a byte slice.
    pub fn of(bytes: &[u8]) -> Self {
        Self(sha2::Sha256::digest(bytes).into())
    }
    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({})", self.to_hex())
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The pieces a channel receives, as a [`ByteStream`] (a writer on another task or thread sends
/// them; closing the channel ends the stream, sending an error fails it).
pub fn stream_of(mut rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>) -> ByteStream {
    Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// Wraps a stream so that its bytes are hashed and counted as they pass, without buffering them.
/// Optionally fails the stream once more than `limit` bytes have passed.
pub fn hashing(inner: ByteStream, limit: Option<u64>) -> (ByteStream, HashHandle) {
    let state = Arc::new(Mutex::new((sha2::Sha256::new(), 0u64)));
    let handle = HashHandle(state.clone());
    (
        Box::pin(Hashing {
            inner,
            state,
            limit,
        }),
        handle,
    )
}

/// Reads the digest and length of what passed through a [`hashing`] stream.
#[derive(Debug, Clone)]
pub struct HashHandle(Arc<Mutex<(sha2::Sha256, u64)>>);

impl HashHandle {
    /// The digest and byte count so far; call after the stream has ended.
    pub fn finish(&self) -> (Sha256, u64) {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (Sha256(guard.0.clone().finalize().into()), guard.1)
    }
}

/// The error kind a [`hashing`] stream fails with when its limit is passed; callers turn it into 413.
pub const LIMIT_EXCEEDED_MESSAGE: &str = "upload exceeds the size limit";

struct Hashing {
    inner: ByteStream,
    state: Arc<Mutex<(sha2::Sha256, u64)>>,
    limit: Option<u64>,
}

impl Stream for Hashing {
    type Item = io::Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
            guard.0.update(chunk);
            guard.1 += chunk.len() as u64;
            if let Some(limit) = self.limit
                && guard.1 > limit
            {
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::FileTooLarge,
                    LIMIT_EXCEEDED_MESSAGE,
                ))));
            }
        }
        polled
    }
}

/// A small object's whole bytes (a manifest, a metadata file): never for data, which streams.
/// `inner`, failing with `TimedOut` when no bytes come for `idle`: a client that stops sending
/// without closing (a half-closed upload) ends the upload instead of holding it open forever.
pub fn idle_limited(inner: ByteStream, idle: Duration) -> ByteStream {
    use futures::StreamExt;
    Box::pin(futures::stream::unfold(
        Some(inner),
        move |state| async move {
            let mut s = state?;
            match tokio::time::timeout(idle, s.next()).await {
                Ok(Some(item)) => Some((item, Some(s))),
                Ok(None) => None,
                Err(_) => Some((
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the client sent nothing for {} s (server.body_idle_secs)",
                            idle.as_secs()
                        ),
                    )),
                    None,
                )),
            }
        },
    ))
}

pub async fn read_all(
    store: &dyn BlobStore,
    bucket: &str,
    key: &str,
) -> Result<Vec<u8>, BlobError> {
    use futures::StreamExt;
    let mut stream = store.get(bucket, key).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(
            &chunk.map_err(|e| BlobError::Unavailable(format!("reading {bucket}/{key}: {e}")))?,
        );
    }
    Ok(out)
}

/// Bytes already in memory as a body to put.
pub fn body_of(bytes: Vec<u8>) -> ByteStream {
    Box::pin(futures::stream::once(async move {
        Ok::<_, io::Error>(Bytes::from(bytes))
    }))
}

/// Hashes an object already in the store by streaming it once.
pub async fn sha256_of(
    store: &dyn BlobStore,
    bucket: &str,
    key: &str,
) -> Result<(Sha256, u64), BlobError> {
    use futures::StreamExt;
    let mut stream = store.get(bucket, key).await?;
    let mut h = sha2::Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| BlobError::Unavailable(format!("reading {bucket}/{key}: {e}")))?;
        h.update(&chunk);
        n += chunk.len() as u64;
    }
    Ok((Sha256(h.finalize().into()), n))
}
