//! Writing one object's file: through the page cache with its write-back started as it goes, or
//! past the cache in aligned blocks for objects seldom read back; synced before
//! [`super::LocalStore`] renames it into place.

use std::io;
use std::path::Path;

/// Bytes written between two requests to start writing back (see [`write_synced`]).
const WRITE_BACK_EVERY: u64 = 8 << 20;

/// Bytes a put past the page cache writes at once: a body shorter than this is written through
/// the cache as any other.
const DIRECT_BLOCK: usize = 4 << 20;

/// The alignment direct I/O asks of a buffer's address, a write's offset and its length: a page,
/// which every Linux filesystem's block size divides.
const DIRECT_ALIGN: usize = 4096;

/// Writes the chunks to a new file at `path` until an empty one says the body is complete, and
/// syncs it; the bytes written. Chunks that stop without the empty one leave no file.
///
/// Through the page cache, the kernel is asked to start writing each 8 MiB to disk as soon as it
/// is there, so the sync at the end waits for the last few MiB, not the whole object (a 251 MB
/// upload's own sync took a tenth of a second at the end before). `past_cache` (objects seldom
/// read back, such as raw uploads) writes a body of [`DIRECT_BLOCK`] or more straight to disk in
/// blocks of that size (`O_DIRECT`, Linux), and only its last partial page through the cache: the
/// kernel neither copies it into cache pages nor keeps them there, crowding out the tables that
/// are read. Where the filesystem refuses direct I/O, the object goes through the cache.
pub(super) fn write_synced(
    path: &Path,
    mut chunks: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    past_cache: bool,
) -> io::Result<u64> {
    let file = std::fs::File::create(path)?;
    let mut out = if past_cache {
        Out::Blocks(Blocks::new(file))
    } else {
        Out::Cached(Cached {
            file,
            written: 0,
            kicked: 0,
        })
    };
    loop {
        let Some(chunk) = chunks.blocking_recv() else {
            drop(out);
            let _ = std::fs::remove_file(path);
            return Err(io::Error::other("the body ended before it was complete"));
        };
        if chunk.is_empty() {
            break;
        }
        match &mut out {
            Out::Cached(c) => c.write(&chunk)?,
            Out::Blocks(b) => b.write(&chunk)?,
        }
    }
    let (file, written) = match out {
        Out::Cached(c) => (c.file, c.written),
        Out::Blocks(b) => b.finish()?,
    };
    file.sync_all()?;
    Ok(written)
}

/// Where [`write_synced`] writes.
enum Out {
    Cached(Cached),
    Blocks(Blocks),
}

/// A file written through the page cache, its write-back started every [`WRITE_BACK_EVERY`].
struct Cached {
    file: std::fs::File,
    written: u64,
    kicked: u64,
}

impl Cached {
    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        use std::io::Write;
        self.file.write_all(chunk)?;
        self.written += chunk.len() as u64;
        if self.written - self.kicked >= WRITE_BACK_EVERY {
            start_write_back(&self.file, self.kicked, self.written - self.kicked);
            self.kicked = self.written;
        }
        Ok(())
    }
}

/// A file written in aligned blocks of [`DIRECT_BLOCK`], past the page cache from the first full
/// block on (where the filesystem allows it).
struct Blocks {
    file: std::fs::File,
    /// Room for a block and its alignment; the block starts at `start`.
    buffer: Vec<u8>,
    start: usize,
    /// Bytes of the current block filled, and bytes written before it.
    filled: usize,
    written: u64,
    /// Whether the file is open for direct I/O now.
    direct: bool,
    /// Whether direct I/O was refused (the rest goes through the cache).
    refused: bool,
}

impl Blocks {
    fn new(file: std::fs::File) -> Self {
        let buffer = vec![0u8; DIRECT_BLOCK + DIRECT_ALIGN];
        let start = buffer.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
        Self {
            file,
            buffer,
            start,
            filled: 0,
            written: 0,
            direct: false,
            refused: false,
        }
    }

    fn write(&mut self, mut chunk: &[u8]) -> io::Result<()> {
        while !chunk.is_empty() {
            let n = (DIRECT_BLOCK - self.filled).min(chunk.len());
            let at = self.start + self.filled;
            self.buffer[at..at + n].copy_from_slice(&chunk[..n]);
            self.filled += n;
            chunk = &chunk[n..];
            if self.filled == DIRECT_BLOCK {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Writes the filled part of the block (all of it, or at the end what there is) after what
    /// was written: its whole pages directly once a full block came, a partial last page through
    /// the cache.
    fn flush(&mut self) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let len = self.filled;
        let whole = len - len % DIRECT_ALIGN;
        if len == DIRECT_BLOCK && !self.direct && !self.refused {
            self.direct = set_direct(&self.file, true);
            self.refused = !self.direct;
        }
        let block = &self.buffer[self.start..self.start + len];
        let mut done = 0;
        if self.direct && whole > 0 {
            match self.file.write_all_at(&block[..whole], self.written) {
                Ok(()) => done = whole,
                // Refused at the write (a filesystem that takes the flag but not the I/O): the
                // same bytes go through the cache instead, at the same offset.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.refused = true,
                Err(e) => return Err(e),
            }
        }
        if done < len {
            if self.direct {
                self.direct = set_direct(&self.file, false);
                if self.direct {
                    return Err(io::Error::other("direct I/O could not be turned off"));
                }
            }
            self.file
                .write_all_at(&block[done..], self.written + done as u64)?;
        }
        self.written += len as u64;
        self.filled = 0;
        Ok(())
    }

    /// Writes what is left of the last block; the file and the bytes written.
    fn finish(mut self) -> io::Result<(std::fs::File, u64)> {
        if self.filled > 0 {
            self.flush()?;
        }
        Ok((self.file, self.written))
    }
}

/// Turns direct I/O on `file` on or off; whether it is on afterwards (Linux; elsewhere it never
/// is).
#[cfg(target_os = "linux")]
fn set_direct(file: &std::fs::File, on: bool) -> bool {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: plain system calls on a descriptor `file` owns for their duration; they read and
    // write no memory of this process.
    #[allow(unsafe_code)]
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return !on;
    }
    let flags = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above.
    #[allow(unsafe_code)]
    let set = unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
    if set == 0 { on } else { !on }
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_: &std::fs::File, _: bool) -> bool {
    false
}

/// Starts writing `len` bytes at `offset` back to disk, without waiting (Linux; elsewhere the
/// sync at the end does it all). A refusal changes nothing: the sync at the end still writes.
#[cfg(target_os = "linux")]
fn start_write_back(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a plain system call on a descriptor `file` owns for the call's duration; it reads
    // and writes no memory of this process.
    #[allow(unsafe_code)]
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_write_back(_: &std::fs::File, _: u64, _: u64) {}
