//! The local-directory blob store: the embedded default.
//!
//! Each bucket is a directory under the root; a key is a relative path inside it. Puts go to a
//! temporary file in `<root>/.tmp` (same filesystem) that is synced and then renamed into place, so a
//! reader never sees a partial object and a failed upload leaves nothing behind. There is no Object
//! Lock here: the host alone enforces raw immutability, and says so.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use tokio_util::io::ReaderStream;

mod write;

use super::{
    BlobError, BlobStore, BucketPolicy, BucketReport, ByteStream, Enforcement, ListedObject,
    ObjectInfo, check_key,
};

/// What a `file://` URI's path escapes: controls, space and the characters URIs reserve, never
/// the separator.
const URI_PATH: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// A blob store in a local directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    /// Buckets whose objects are seldom read back soon ([`BucketPolicy::seldom_read`]): a large
    /// put into one is written past the page cache.
    seldom_read: std::sync::Arc<std::sync::RwLock<std::collections::HashSet<String>>>,
}

impl LocalStore {
    /// Opens (and creates) a store rooted at `root`.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self, BlobError> {
        let root = root.into();
        tokio::fs::create_dir_all(root.join(".tmp"))
            .await
            .map_err(|e| io_err(&root, e))?;
        // Absolute, so the URIs handed to engines name the objects from anywhere.
        let root = tokio::fs::canonicalize(&root)
            .await
            .map_err(|e| io_err(&root, e))?;
        Ok(Self {
            root,
            seldom_read: Default::default(),
        })
    }

    fn path(&self, bucket: &str, key: &str) -> Result<PathBuf, BlobError> {
        crate::config::check_bucket_name(bucket).map_err(|_| BlobError::InvalidKey {
            key: bucket.to_owned(),
            reason: "invalid bucket name",
        })?;
        check_key(key)?;
        Ok(self.root.join(bucket).join(key))
    }
}

/// A walk of one bucket's directory tree in the order the file system lists it: one open
/// directory per level and one page of objects in memory, so a directory of a million entries
/// costs no more than one of ten.
struct Walk {
    prefix: String,
    page: usize,
    pages: tokio::sync::mpsc::Sender<Vec<ListedObject>>,
}

impl Walk {
    /// Walks from `start` (the directory of key prefix `rel`, empty or ending in `/`); false
    /// when the receiver has gone.
    fn run(&self, start: PathBuf, rel: String) -> Result<bool, BlobError> {
        let mut out = Vec::with_capacity(self.page);
        let mut stack: Vec<(std::fs::ReadDir, PathBuf, String)> = Vec::new();
        match std::fs::read_dir(&start) {
            Ok(entries) => stack.push((entries, start, rel)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(io_err(&start, e)),
        }
        while let Some((entries, dir, rel)) = stack.last_mut() {
            let Some(entry) = entries.next() else {
                stack.pop();
                continue;
            };
            let entry = entry.map_err(|e| io_err(dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue; // not a key any put could have written
            };
            let ft = entry.file_type().map_err(|e| io_err(dir, e))?;
            if ft.is_dir() {
                let key = format!("{rel}{name}/");
                // Descend where the prefix continues below this directory, or covers it.
                if key.starts_with(&self.prefix) || self.prefix.starts_with(&key) {
                    let path = entry.path();
                    match std::fs::read_dir(&path) {
                        Ok(entries) => stack.push((entries, path, key)),
                        // Removed since it was listed (a delete pruning empty parents).
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_err(&path, e)),
                    }
                }
            } else if ft.is_file() {
                let key = format!("{rel}{name}");
                if !key.starts_with(&self.prefix) {
                    continue;
                }
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // deleted meanwhile
                    Err(e) => return Err(io_err(dir, e)),
                };
                out.push(ListedObject {
                    size: meta.len(),
                    modified: meta.modified().ok().map(chrono::DateTime::from),
                    key,
                });
                if out.len() >= self.page
                    && self
                        .pages
                        .blocking_send(std::mem::replace(&mut out, Vec::with_capacity(self.page)))
                        .is_err()
                {
                    return Ok(false);
                }
            }
        }
        Ok(out.is_empty() || self.pages.blocking_send(out).is_ok())
    }
}

fn io_err(path: &Path, e: io::Error) -> BlobError {
    BlobError::Unavailable(format!("{}: {e}", path.display()))
}

fn not_found(bucket: &str, key: &str) -> BlobError {
    BlobError::NotFound {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
    }
}

#[async_trait::async_trait]
impl BlobStore for LocalStore {
    fn uri(&self, bucket: &str, key: &str) -> String {
        let path = self.root.join(bucket).join(key);
        let text = path.to_string_lossy();
        let encoded = percent_encoding::utf8_percent_encode(&text, URI_PATH);
        format!("file://{encoded}")
    }

    fn kind(&self) -> &'static str {
        "local"
    }

    async fn prepare_bucket(
        &self,
        bucket: &str,
        policy: &BucketPolicy,
    ) -> Result<BucketReport, BlobError> {
        crate::config::check_bucket_name(bucket).map_err(|_| BlobError::InvalidKey {
            key: bucket.to_owned(),
            reason: "invalid bucket name",
        })?;
        let dir = self.root.join(bucket);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io_err(&dir, e))?;
        let mut seldom = self.seldom_read.write().unwrap_or_else(|p| p.into_inner());
        if policy.seldom_read {
            seldom.insert(bucket.to_owned());
        } else {
            seldom.remove(bucket);
        }
        drop(seldom);
        let unsupported = |what: &str| Enforcement::Unsupported {
            reason: format!("a local directory has no {what}"),
        };
        Ok(BucketReport {
            object_lock: match policy.object_lock {
                Some(_) => unsupported("Object Lock"),
                None => Enforcement::NotRequested,
            },
            lifecycle: match policy.expire_after_days {
                Some(_) => unsupported("lifecycle rules"),
                None => Enforcement::NotRequested,
            },
        })
    }

    async fn put(&self, bucket: &str, key: &str, mut body: ByteStream) -> Result<u64, BlobError> {
        let dest = self.path(bucket, key)?;
        let tmp = self
            .root
            .join(".tmp")
            .join(uuid::Uuid::new_v4().to_string());
        // The file is written on a blocking thread of its own as the chunks arrive (no copy into
        // an async file's buffer, no hand-off per chunk): through the page cache, or in a bucket
        // seldom read back gathered into aligned blocks written past it (see `write`). An empty
        // chunk says the body is complete; without it (a failed body, or this future dropped)
        // the writer neither syncs nor keeps the file.
        let (chunks, received) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
        let path = tmp.clone();
        let past_cache = self
            .seldom_read
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(bucket);
        let writer =
            tokio::task::spawn_blocking(move || write::write_synced(&path, received, past_cache));
        let mut sent = Ok(());
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) if chunk.is_empty() => {}
                Ok(chunk) => {
                    if chunks.send(chunk).await.is_err() {
                        break; // the writer stopped: its error says why
                    }
                }
                Err(e) => {
                    sent = Err(BlobError::Body(e));
                    break;
                }
            }
        }
        if sent.is_ok() {
            // Refused only when the writer stopped, whose error says why.
            let _ = chunks.send(bytes::Bytes::new()).await;
        }
        drop(chunks);
        let result: Result<u64, BlobError> = async {
            let written = writer.await.map_err(|e| io_err(&tmp, io::Error::other(e)));
            sent?;
            let written = written?.map_err(|e| io_err(&tmp, e))?;
            if let Some(parent) = dest.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| io_err(parent, e))?;
            }
            tokio::fs::rename(&tmp, &dest)
                .await
                .map_err(|e| io_err(&dest, e))?;
            Ok(written)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<ByteStream, BlobError> {
        let path = self.path(bucket, key)?;
        match tokio::fs::File::open(&path).await {
            Ok(f) => Ok(Box::pin(ReaderStream::with_capacity(f, 64 << 10))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(not_found(bucket, key)),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    async fn get_range(
        &self,
        bucket: &str,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes, BlobError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let path = self.path(bucket, key)?;
        let mut f = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found(bucket, key)),
            Err(e) => return Err(io_err(&path, e)),
        };
        let len = range.end.saturating_sub(range.start);
        let mut out = Vec::with_capacity(usize::try_from(len.min(64 << 20)).unwrap_or(0));
        f.seek(io::SeekFrom::Start(range.start))
            .await
            .map_err(|e| io_err(&path, e))?;
        f.take(len)
            .read_to_end(&mut out)
            .await
            .map_err(|e| io_err(&path, e))?;
        Ok(out.into())
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo, BlobError> {
        let path = self.path(bucket, key)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(ObjectInfo {
                key: key.to_owned(),
                size: m.len(),
            }),
            Ok(_) => Err(not_found(bucket, key)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(not_found(bucket, key)),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>, BlobError> {
        crate::config::check_bucket_name(bucket).map_err(|_| BlobError::InvalidKey {
            key: bucket.to_owned(),
            reason: "invalid bucket name",
        })?;
        let bucket_dir = self.root.join(bucket);
        // Walk only the directory the prefix names, not the whole bucket.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        if !dir_part.is_empty() {
            check_key(dir_part)?;
        }
        let mut out = Vec::new();
        let mut stack = vec![(bucket_dir.join(dir_part), dir_part.to_owned())];
        while let Some((dir, rel)) = stack.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&dir, e)),
            };
            while let Some(entry) = entries.next_entry().await.map_err(|e| io_err(&dir, e))? {
                let name = entry.file_name().to_string_lossy().into_owned();
                let key = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let ft = entry.file_type().await.map_err(|e| io_err(&dir, e))?;
                if ft.is_dir() {
                    // Descend where the prefix continues below this directory, or covers it.
                    if key.starts_with(prefix) || prefix.starts_with(&key) {
                        stack.push((entry.path(), key));
                    }
                } else if ft.is_file() && key.starts_with(prefix) {
                    let size = entry.metadata().await.map_err(|e| io_err(&dir, e))?.len();
                    out.push(ObjectInfo { key, size });
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
        crate::config::check_bucket_name(bucket).map_err(|_| BlobError::InvalidKey {
            key: bucket.to_owned(),
            reason: "invalid bucket name",
        })?;
        // Start in the directory the prefix names, not at the bucket's top.
        let rel = match prefix.rfind('/') {
            Some(i) => &prefix[..=i],
            None => "",
        };
        if !rel.is_empty() {
            check_key(rel.trim_end_matches('/'))?;
        }
        let start = self.root.join(bucket).join(rel);
        let walk = Walk {
            prefix: prefix.to_owned(),
            // One page is at most what S3 answers at once.
            page: page.clamp(1, 1000),
            pages,
        };
        let rel = rel.to_owned();
        tokio::task::spawn_blocking(move || walk.run(start, rel))
            .await
            .map_err(|e| BlobError::Unavailable(format!("listing {bucket}: {e}")))?
            .map(|_| ())
    }

    async fn copy(
        &self,
        src_bucket: &str,
        src_key: &str,
        dst_bucket: &str,
        dst_key: &str,
    ) -> Result<(), BlobError> {
        let src = self.path(src_bucket, src_key)?;
        let dst = self.path(dst_bucket, dst_key)?;
        let tmp = self
            .root
            .join(".tmp")
            .join(uuid::Uuid::new_v4().to_string());
        match tokio::fs::copy(&src, &tmp).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(not_found(src_bucket, src_key));
            }
            Err(e) => return Err(io_err(&src, e)),
        }
        let placed = async {
            if let Some(parent) = dst.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| io_err(parent, e))?;
            }
            tokio::fs::rename(&tmp, &dst)
                .await
                .map_err(|e| io_err(&dst, e))
        }
        .await;
        if placed.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        placed
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), BlobError> {
        let path = self.path(bucket, key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    async fn presign_get(
        &self,
        bucket: &str,
        key: &str,
        _ttl: Duration,
    ) -> Result<Option<String>, BlobError> {
        self.path(bucket, key)?;
        Ok(None)
    }
}
