//! The S3 blob store (aws-sdk-s3): AWS, MinIO, Garage.
//!
//! Uploads are streamed: an object that fits one part goes up with one `PutObject`; a larger one is
//! sent as a multipart upload whose parts are read from the body one at a time, with a bounded number
//! in flight, so memory stays at `part_size * concurrency` whatever the object's size. A failed
//! multipart upload is aborted so no partial object or orphaned parts remain. Copies are server-side
//! (`CopyObject`, or `UploadPartCopy` past S3's 5 GiB single-copy limit).

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketLocationConstraint, CompletedMultipartUpload,
    CompletedPart, CreateBucketConfiguration, DefaultRetention, ExpirationStatus,
    LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, ObjectLockConfiguration,
    ObjectLockEnabled, ObjectLockRetentionMode, ObjectLockRule,
};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio_util::io::ReaderStream;

use super::{
    BlobError, BlobStore, BucketPolicy, BucketReport, ByteStream, Enforcement, ListedObject,
    ObjectInfo, check_key,
};
use crate::config::S3Config;

/// S3 refuses a single `CopyObject` above 5 GiB.
const MAX_SINGLE_COPY: u64 = 5 << 30;
/// Part size for multipart copies of very large objects.
const COPY_PART: u64 = 512 << 20;

/// A blob store on an S3-compatible service.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    region: String,
    part_size: usize,
    concurrency: usize,
}

impl S3Store {
    /// Builds a client from configuration; does not contact the store.
    pub fn new(cfg: &S3Config) -> Result<Self, BlobError> {
        let key = cfg.access_key_id.clone().unwrap_or_default();
        let secret = cfg
            .secret()
            .map(|s| s.expose().to_owned())
            .unwrap_or_default();
        let mut b = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()))
            .force_path_style(cfg.force_path_style)
            .credentials_provider(Credentials::new(key, secret, None, None, "lake.toml"));
        if let Some(ep) = &cfg.endpoint {
            b = b.endpoint_url(ep);
        }
        Ok(Self {
            client: Client::from_conf(b.build()),
            region: cfg.region.clone(),
            part_size: usize::try_from(cfg.multipart_part_size.0).unwrap_or(16 << 20),
            concurrency: cfg.multipart_concurrency.max(1),
        })
    }

    /// The underlying client, for tests that inspect what the store recorded.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Turns an SDK error into the contract's error, keeping S3's code and message.
fn map_err<E>(bucket: &str, key: &str, err: aws_sdk_s3::error::SdkError<E>) -> BlobError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err.code() {
        Some("NoSuchKey" | "NotFound" | "NoSuchBucket") => BlobError::NotFound {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        },
        _ => BlobError::Unavailable(format!("{bucket}/{key}: {}", DisplayErrorContext(&err))),
    }
}

fn code_of<E: ProvideErrorMetadata>(err: &aws_sdk_s3::error::SdkError<E>) -> String {
    match (err.code(), err.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_owned(),
        _ => "no error code (the store did not answer as S3 would)".to_owned(),
    }
}

/// Reads a body stream in parts of exactly `size` bytes (the last may be shorter).
struct PartReader {
    body: ByteStream,
    buf: BytesMut,
    done: bool,
}

impl PartReader {
    async fn next_part(&mut self, size: usize) -> Result<Bytes, BlobError> {
        while self.buf.len() < size && !self.done {
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(BlobError::Body(e)),
                None => self.done = true,
            }
        }
        let n = size.min(self.buf.len());
        Ok(self.buf.split_to(n).freeze())
    }
}

fn encode_copy_source(bucket: &str, key: &str) -> String {
    // Keep '/' readable; encode everything else that is not unreserved.
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    format!(
        "{bucket}/{}",
        percent_encoding::utf8_percent_encode(key, SET)
    )
}

impl S3Store {
    async fn multipart_put(
        &self,
        bucket: &str,
        key: &str,
        mut reader: PartReader,
        first: Bytes,
    ) -> Result<u64, BlobError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| map_err(bucket, key, e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| BlobError::Unavailable("store returned no multipart upload id".into()))?
            .to_owned();

        let result: Result<(u64, Vec<CompletedPart>), BlobError> = async {
            let mut in_flight = FuturesUnordered::new();
            let mut parts = Vec::new();
            let mut total = 0u64;
            let mut number = 1i32;
            let mut next = Some(first);
            loop {
                let chunk = match next.take() {
                    Some(c) => c,
                    None => reader.next_part(self.part_size).await?,
                };
                if chunk.is_empty() {
                    break;
                }
                let last = chunk.len() < self.part_size;
                total += chunk.len() as u64;
                let (client, b, k, id, n) = (
                    self.client.clone(),
                    bucket.to_owned(),
                    key.to_owned(),
                    upload_id.clone(),
                    number,
                );
                in_flight.push(async move {
                    let out = client
                        .upload_part()
                        .bucket(&b)
                        .key(&k)
                        .upload_id(id)
                        .part_number(n)
                        .content_length(chunk.len() as i64)
                        .body(chunk.into())
                        .send()
                        .await
                        .map_err(|e| map_err(&b, &k, e))?;
                    Ok::<_, BlobError>(
                        CompletedPart::builder()
                            .part_number(n)
                            .set_e_tag(out.e_tag().map(str::to_owned))
                            .build(),
                    )
                });
                number += 1;
                while in_flight.len() >= self.concurrency {
                    if let Some(p) = in_flight.next().await {
                        parts.push(p?);
                    }
                }
                if last {
                    break;
                }
            }
            while let Some(p) = in_flight.next().await {
                parts.push(p?);
            }
            parts.sort_by_key(|p| p.part_number());
            Ok((total, parts))
        }
        .await;

        match result {
            Ok((total, parts)) => {
                self.client
                    .complete_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| map_err(bucket, key, e))?;
                Ok(total)
            }
            Err(e) => {
                // Abort so the store keeps no orphaned parts; the object never becomes visible.
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                Err(e)
            }
        }
    }

    async fn multipart_copy(
        &self,
        src: (&str, &str),
        dst: (&str, &str),
        size: u64,
    ) -> Result<(), BlobError> {
        let (db, dk) = dst;
        let created = self
            .client
            .create_multipart_upload()
            .bucket(db)
            .key(dk)
            .send()
            .await
            .map_err(|e| map_err(db, dk, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
        let source = encode_copy_source(src.0, src.1);
        let result: Result<Vec<CompletedPart>, BlobError> = async {
            let mut parts = Vec::new();
            let mut start = 0u64;
            let mut n = 1i32;
            while start < size {
                let end = (start + COPY_PART).min(size) - 1;
                let out = self
                    .client
                    .upload_part_copy()
                    .bucket(db)
                    .key(dk)
                    .upload_id(&upload_id)
                    .part_number(n)
                    .copy_source(&source)
                    .copy_source_range(format!("bytes={start}-{end}"))
                    .send()
                    .await
                    .map_err(|e| map_err(db, dk, e))?;
                let etag = out
                    .copy_part_result()
                    .and_then(|r| r.e_tag())
                    .map(str::to_owned);
                parts.push(
                    CompletedPart::builder()
                        .part_number(n)
                        .set_e_tag(etag)
                        .build(),
                );
                start = end + 1;
                n += 1;
            }
            Ok(parts)
        }
        .await;
        match result {
            Ok(parts) => {
                self.client
                    .complete_multipart_upload()
                    .bucket(db)
                    .key(dk)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| map_err(db, dk, e))?;
                Ok(())
            }
            Err(e) => {
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(db)
                    .key(dk)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                Err(e)
            }
        }
    }
}

#[async_trait::async_trait]
impl BlobStore for S3Store {
    fn uri(&self, bucket: &str, key: &str) -> String {
        format!("s3://{bucket}/{key}")
    }

    fn kind(&self) -> &'static str {
        "s3"
    }

    async fn prepare_bucket(
        &self,
        bucket: &str,
        policy: &BucketPolicy,
    ) -> Result<BucketReport, BlobError> {
        let exists = match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => true,
            Err(e)
                if matches!(e.code(), Some("NotFound" | "NoSuchBucket"))
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 404) =>
            {
                false
            }
            Err(e) => return Err(map_err(bucket, "", e)),
        };
        if !exists {
            let mut create = self.client.create_bucket().bucket(bucket);
            if self.region != "us-east-1" {
                create = create.create_bucket_configuration(
                    CreateBucketConfiguration::builder()
                        .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                        .build(),
                );
            }
            let with_lock = create
                .clone()
                .object_lock_enabled_for_bucket(policy.object_lock.is_some());
            if let Err(e) = with_lock.send().await {
                match e.code() {
                    Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists") => {}
                    // Stores without Object Lock may refuse the lock flag: create a plain bucket and
                    // report the lock as unsupported below.
                    _ if policy.object_lock.is_some() => {
                        if let Err(e2) = create.send().await
                            && !matches!(
                                e2.code(),
                                Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                            )
                        {
                            return Err(map_err(bucket, "", e2));
                        }
                    }
                    _ => return Err(map_err(bucket, "", e)),
                }
            }
        }

        let object_lock = match policy.object_lock {
            None => Enforcement::NotRequested,
            Some((days, mode)) => {
                let mode_enum = if mode == "COMPLIANCE" {
                    ObjectLockRetentionMode::Compliance
                } else {
                    ObjectLockRetentionMode::Governance
                };
                let conf = ObjectLockConfiguration::builder()
                    .object_lock_enabled(ObjectLockEnabled::Enabled)
                    .rule(
                        ObjectLockRule::builder()
                            .default_retention(
                                DefaultRetention::builder()
                                    .mode(mode_enum)
                                    .days(days as i32)
                                    .build(),
                            )
                            .build(),
                    )
                    .build();
                // Read before writing: a lock already in place is reported as is (some stores refuse
                // to set it again on a bucket that holds objects, as after a restart).
                let existing = self
                    .client
                    .get_object_lock_configuration()
                    .bucket(bucket)
                    .send()
                    .await
                    .ok();
                let current = existing
                    .as_ref()
                    .and_then(|o| o.object_lock_configuration())
                    .and_then(|c| c.rule())
                    .and_then(|r| r.default_retention())
                    .map(|d| (d.days(), d.mode().map(|m| m.as_str().to_owned())));
                if current == Some((Some(days as i32), Some(mode.to_owned()))) {
                    Enforcement::Applied {
                        detail: format!("{mode} retention, {days} days"),
                    }
                } else {
                    match self
                        .client
                        .put_object_lock_configuration()
                        .bucket(bucket)
                        .object_lock_configuration(conf)
                        .send()
                        .await
                    {
                        Ok(_) => Enforcement::Applied {
                            detail: format!("{mode} retention, {days} days"),
                        },
                        Err(e) => Enforcement::Unsupported {
                            reason: code_of(&e),
                        },
                    }
                }
            }
        };

        let lifecycle = match policy.expire_after_days {
            None => Enforcement::NotRequested,
            Some(days) => {
                let rule = LifecycleRule::builder()
                    .id("lake-expiration")
                    .status(ExpirationStatus::Enabled)
                    .filter(LifecycleRuleFilter::builder().prefix("").build())
                    .expiration(LifecycleExpiration::builder().days(days as i32).build())
                    .build()
                    .map_err(|e| BlobError::Unavailable(e.to_string()))?;
                let conf = BucketLifecycleConfiguration::builder()
                    .rules(rule)
                    .build()
                    .map_err(|e| BlobError::Unavailable(e.to_string()))?;
                match self
                    .client
                    .put_bucket_lifecycle_configuration()
                    .bucket(bucket)
                    .lifecycle_configuration(conf)
                    .send()
                    .await
                {
                    Ok(_) => Enforcement::Applied {
                        detail: format!("objects expire {days} days after creation"),
                    },
                    Err(e) => Enforcement::Unsupported {
                        reason: code_of(&e),
                    },
                }
            }
        };
        Ok(BucketReport {
            object_lock,
            lifecycle,
        })
    }

    async fn put(&self, bucket: &str, key: &str, body: ByteStream) -> Result<u64, BlobError> {
        check_key(key)?;
        let mut reader = PartReader {
            body,
            buf: BytesMut::new(),
            done: false,
        };
        let first = reader.next_part(self.part_size).await?;
        if first.len() < self.part_size {
            let len = first.len() as u64;
            self.client
                .put_object()
                .bucket(bucket)
                .key(key)
                .content_length(len as i64)
                .body(first.into())
                .send()
                .await
                .map_err(|e| map_err(bucket, key, e))?;
            return Ok(len);
        }
        self.multipart_put(bucket, key, reader, first).await
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<ByteStream, BlobError> {
        check_key(key)?;
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| map_err(bucket, key, e))?;
        Ok(Box::pin(ReaderStream::with_capacity(
            out.body.into_async_read(),
            64 << 10,
        )))
    }

    async fn get_range(
        &self,
        bucket: &str,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, BlobError> {
        check_key(key)?;
        if range.end <= range.start {
            // Still says whether the object is there.
            self.head(bucket, key).await?;
            return Ok(Bytes::new());
        }
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await;
        let out = match out {
            Ok(o) => o,
            // A range that starts past the end: nothing there, if the object is.
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) => {
                self.head(bucket, key).await?;
                return Ok(Bytes::new());
            }
            Err(e) => return Err(map_err(bucket, key, e)),
        };
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| BlobError::Unavailable(format!("reading {bucket}/{key}: {e}")))?;
        Ok(body.into_bytes())
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo, BlobError> {
        check_key(key)?;
        let out = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| map_err(bucket, key, e))?;
        Ok(ObjectInfo {
            key: key.to_owned(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
        })
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>, BlobError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_err(bucket, prefix, e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push(ObjectInfo {
                        key: k.to_owned(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn walk(
        &self,
        bucket: &str,
        prefix: &str,
        page: usize,
        pages: tokio::sync::mpsc::Sender<Vec<ListedObject>>,
    ) -> Result<(), BlobError> {
        let mut token: Option<String> = None;
        loop {
            let answer = self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .max_keys(i32::try_from(page.clamp(1, 1000)).unwrap_or(1000))
                .send()
                .await
                .map_err(|e| map_err(bucket, prefix, e))?;
            let objects: Vec<ListedObject> = answer
                .contents()
                .iter()
                .filter_map(|o| {
                    Some(ListedObject {
                        key: o.key()?.to_owned(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                        modified: o.last_modified().and_then(|t| {
                            chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
                        }),
                    })
                })
                .collect();
            if !objects.is_empty() && pages.send(objects).await.is_err() {
                return Ok(()); // nobody is listening any more
            }
            match answer.next_continuation_token() {
                Some(next) if answer.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => return Ok(()),
            }
        }
    }

    async fn copy(
        &self,
        src_bucket: &str,
        src_key: &str,
        dst_bucket: &str,
        dst_key: &str,
    ) -> Result<(), BlobError> {
        check_key(src_key)?;
        check_key(dst_key)?;
        let size = self.head(src_bucket, src_key).await?.size;
        if size > MAX_SINGLE_COPY {
            return self
                .multipart_copy((src_bucket, src_key), (dst_bucket, dst_key), size)
                .await;
        }
        self.client
            .copy_object()
            .bucket(dst_bucket)
            .key(dst_key)
            .copy_source(encode_copy_source(src_bucket, src_key))
            .send()
            .await
            .map_err(|e| map_err(src_bucket, src_key, e))?;
        Ok(())
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), BlobError> {
        check_key(key)?;
        match self
            .client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.code(), Some("NoSuchKey" | "NotFound")) => Ok(()),
            Err(e) => Err(map_err(bucket, key, e)),
        }
    }

    async fn presign_get(
        &self,
        bucket: &str,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<String>, BlobError> {
        check_key(key)?;
        let conf =
            PresigningConfig::expires_in(ttl).map_err(|e| BlobError::Unavailable(e.to_string()))?;
        let req = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .presigned(conf)
            .await
            .map_err(|e| map_err(bucket, key, e))?;
        Ok(Some(req.uri().to_owned()))
    }
}
