//! Compressed input of the common kinds, decoded chunk by chunk (feature `decompress`).
//!
//! People hand the lake what their instruments and colleagues hand them: `.csv.gz`, `.tsv.bz2`,
//! `.txt.xz`, `.csv.zst`. [`MaybeDecompress`] recognises gzip, bzip2, xz and zstd by the magic
//! bytes at the start of the input (a parser never sees a file name) and decodes them as the chunks
//! arrive, in pure Rust that builds for `wasm32-wasip2`: flate2 (miniz_oxide) for gzip, bzip2
//! (libbz2-rs-sys), xz4rust (a port of xz-embedded) and ruzstd. Anything else passes through
//! untouched. Every format may hold several streams one after another (`cat a.gz b.gz`, pbzip2,
//! pzstd), and all of them are read. The plain bytes are handed on in pieces of at most 1 MiB, so a
//! decompression bomb costs time, never one huge buffer; input that is corrupt or cut short is
//! [`PluginError::InvalidInput`] naming the format ("the xz-compressed input is corrupt: ...",
//! "... ends early ...").

use xz4rust::{XzDecoder, XzError};

use crate::gzip::{Gunzip, PIECE};
use crate::{PluginError, Result};

/// A compression format [`MaybeDecompress`] recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

impl Compression {
    /// The format's usual name: `gzip`, `bzip2`, `xz` or `zstd`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }

    fn corrupt(self, detail: impl std::fmt::Display) -> PluginError {
        PluginError::InvalidInput(format!(
            "the {}-compressed input is corrupt: {detail}",
            self.name()
        ))
    }

    fn ends_early(self) -> PluginError {
        PluginError::InvalidInput(format!(
            "the {}-compressed input ends early: the file was cut short",
            self.name()
        ))
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One byte of a magic number: the values it may take.
type Magic = &'static [(u8, u8)];

/// The magic numbers, byte by byte as (lowest, highest) value.
const MAGIC: &[(Compression, Magic)] = &[
    (Compression::Gzip, &[(0x1f, 0x1f), (0x8b, 0x8b)]),
    // "BZh", the block size '1'..'9', then the first block's magic (the digits of pi) or, for an
    // empty stream, the end-of-stream magic (those of the square root of pi): ten bytes, so that a
    // text that happens to start with "BZh" is not taken for bzip2.
    (
        Compression::Bzip2,
        &[
            (b'B', b'B'),
            (b'Z', b'Z'),
            (b'h', b'h'),
            (b'1', b'9'),
            (0x31, 0x31),
            (0x41, 0x41),
            (0x59, 0x59),
            (0x26, 0x26),
            (0x53, 0x53),
            (0x59, 0x59),
        ],
    ),
    (
        Compression::Bzip2,
        &[
            (b'B', b'B'),
            (b'Z', b'Z'),
            (b'h', b'h'),
            (b'1', b'9'),
            (0x17, 0x17),
            (0x72, 0x72),
            (0x45, 0x45),
            (0x38, 0x38),
            (0x50, 0x50),
            (0x90, 0x90),
        ],
    ),
    (
        Compression::Xz,
        &[
            (0xfd, 0xfd),
            (b'7', b'7'),
            (b'z', b'z'),
            (b'X', b'X'),
            (b'Z', b'Z'),
            (0, 0),
        ],
    ),
    (
        Compression::Zstd,
        &[(0x28, 0x28), (0xb5, 0xb5), (0x2f, 0x2f), (0xfd, 0xfd)],
    ),
    // A skippable frame first, as pzstd writes its files.
    (
        Compression::Zstd,
        &[(0x50, 0x5f), (0x2a, 0x2a), (0x4d, 0x4d), (0x18, 0x18)],
    ),
];

/// What the first bytes say.
enum Sniff {
    /// They may still be the start of a magic number.
    More,
    Plain,
    Is(Compression),
}

fn sniff(head: &[u8]) -> Sniff {
    let mut more = false;
    for &(format, magic) in MAGIC {
        let fits = magic
            .iter()
            .zip(head)
            .all(|(&(lo, hi), &b)| (lo..=hi).contains(&b));
        if fits {
            if head.len() >= magic.len() {
                return Sniff::Is(format);
            }
            more = true;
        }
    }
    if more { Sniff::More } else { Sniff::Plain }
}

/// Passes plain input through and decodes compressed input, a chunk at a time.
#[derive(Default)]
pub struct MaybeDecompress {
    /// The first bytes, while they may still be the start of a magic number.
    head: Vec<u8>,
    state: State,
}

#[derive(Default)]
enum State {
    #[default]
    Undecided,
    Plain,
    Gzip(Box<Gunzip>),
    Bzip2(Box<Bunzip>),
    Xz(Box<Unxz>),
    Zstd(Box<Unzstd>),
}

impl std::fmt::Debug for MaybeDecompress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Undecided => "undecided",
            State::Plain => "plain",
            State::Gzip(_) => "gzip",
            State::Bzip2(_) => "bzip2",
            State::Xz(_) => "xz",
            State::Zstd(_) => "zstd",
        };
        f.debug_struct("MaybeDecompress")
            .field("state", &state)
            .finish()
    }
}

impl MaybeDecompress {
    /// A reader that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The compression of the input, once its first bytes have told (`None` for plain input and
    /// before they have).
    pub fn compression(&self) -> Option<Compression> {
        match self.state {
            State::Undecided | State::Plain => None,
            State::Gzip(_) => Some(Compression::Gzip),
            State::Bzip2(_) => Some(Compression::Bzip2),
            State::Xz(_) => Some(Compression::Xz),
            State::Zstd(_) => Some(Compression::Zstd),
        }
    }

    /// Takes the next chunk and hands `out` the plain bytes it yields: none, or several pieces of
    /// at most 1 MiB each.
    pub fn push(&mut self, chunk: &[u8], mut out: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        if let State::Undecided = self.state {
            self.head.extend_from_slice(chunk);
            self.state = match sniff(&self.head) {
                Sniff::More => return Ok(()),
                Sniff::Plain => State::Plain,
                Sniff::Is(Compression::Gzip) => State::Gzip(Box::new(Gunzip::new())),
                Sniff::Is(Compression::Bzip2) => State::Bzip2(Box::new(Bunzip::new())),
                Sniff::Is(Compression::Xz) => State::Xz(Box::new(Unxz::new())),
                Sniff::Is(Compression::Zstd) => State::Zstd(Box::new(Unzstd::new())),
            };
            let head = std::mem::take(&mut self.head);
            return self.pass(&head, &mut out);
        }
        self.pass(chunk, &mut out)
    }

    fn pass(&mut self, chunk: &[u8], out: &mut impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        match &mut self.state {
            State::Undecided => Ok(()),
            State::Plain => {
                if chunk.is_empty() {
                    Ok(())
                } else {
                    out(chunk)
                }
            }
            State::Gzip(d) => d.push(chunk, out),
            State::Bzip2(d) => d.push(chunk, out),
            State::Xz(d) => d.push(chunk, out),
            State::Zstd(d) => d.push(chunk, out),
        }
    }

    /// The input ended: hands `out` what is left. A compressed stream cut short is an error.
    pub fn finish(&mut self, mut out: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        match &mut self.state {
            // A short input that could have been the start of a magic number is plain text.
            State::Undecided => {
                let head = std::mem::take(&mut self.head);
                if head.is_empty() { Ok(()) } else { out(&head) }
            }
            State::Plain => Ok(()),
            State::Gzip(d) => d.finish(),
            State::Bzip2(d) => d.finish(),
            State::Xz(d) => d.finish(),
            State::Zstd(d) => d.finish(),
        }
    }
}

/// A difference of two byte counters, as a length.
fn counted(after: u64, before: u64) -> Result<usize> {
    usize::try_from(after - before).map_err(|e| PluginError::Internal(format!("byte count: {e}")))
}

/// Bzip2: libbz2-rs-sys's decoder, stream after stream.
struct Bunzip {
    stream: bzip2::Decompress,
    /// The current stream has ended; more input starts another.
    ended: bool,
    out: Vec<u8>,
}

impl Bunzip {
    fn new() -> Self {
        Self {
            stream: bzip2::Decompress::new(false),
            ended: false,
            out: vec![0; PIECE],
        }
    }

    fn push(&mut self, mut input: &[u8], out: &mut impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let format = Compression::Bzip2;
        loop {
            if self.ended {
                if input.is_empty() {
                    return Ok(());
                }
                // Another stream follows, as pbzip2 and `cat a.bz2 b.bz2` make.
                self.stream = bzip2::Decompress::new(false);
                self.ended = false;
            }
            let (in0, out0) = (self.stream.total_in(), self.stream.total_out());
            let status = self
                .stream
                .decompress(input, &mut self.out)
                .map_err(|e| format.corrupt(format!("{e:?}")))?;
            let used = counted(self.stream.total_in(), in0)?;
            let made = counted(self.stream.total_out(), out0)?;
            input = &input[used..];
            if made > 0 {
                out(&self.out[..made])?;
            }
            match status {
                bzip2::Status::StreamEnd => self.ended = true,
                bzip2::Status::MemNeeded => {
                    return Err(PluginError::TooLarge(
                        "the bzip2-compressed input needs more memory than there is".into(),
                    ));
                }
                // The output was full: more may be waiting, even with no input left.
                _ if made == self.out.len() => {}
                _ if input.is_empty() => return Ok(()),
                _ if used == 0 && made == 0 => {
                    return Err(format.corrupt("the decoder makes no progress"));
                }
                _ => {}
            }
        }
    }

    fn finish(&self) -> Result<()> {
        if self.ended {
            Ok(())
        } else {
            Err(Compression::Bzip2.ends_early())
        }
    }
}

/// The largest LZMA2 dictionary accepted: `xz -9` uses 64 MiB; a larger one is refused rather than
/// allocated inside the plugin's memory limit.
const XZ_MAX_DICT: usize = 64 << 20;

/// Xz: xz4rust's decoder, stream after stream (with the zero padding allowed between them).
struct Unxz {
    decoder: Box<XzDecoder<'static>>,
    /// A stream has ended: what follows is padding or another stream.
    between: bool,
    /// Zero bytes of padding after the last stream.
    padding: usize,
    /// Input the decoder could not yet make progress on, kept for the next chunk.
    stash: Vec<u8>,
    out: Vec<u8>,
}

impl Unxz {
    fn new() -> Self {
        Self {
            decoder: XzDecoder::in_heap_with_alloc_dict_size(xz4rust::DICT_SIZE_MIN, XZ_MAX_DICT),
            between: false,
            padding: 0,
            stash: Vec::new(),
            out: vec![0; PIECE],
        }
    }

    fn push(&mut self, chunk: &[u8], out: &mut impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let format = Compression::Xz;
        let stashed;
        let mut input = if self.stash.is_empty() {
            chunk
        } else {
            self.stash.extend_from_slice(chunk);
            stashed = std::mem::take(&mut self.stash);
            &stashed[..]
        };
        loop {
            if self.between {
                // Stream padding: zero bytes, a multiple of four in all, then maybe another stream.
                let zeros = input.iter().take_while(|&&b| b == 0).count();
                self.padding += zeros;
                input = &input[zeros..];
                if input.is_empty() {
                    return Ok(());
                }
                if !self.padding.is_multiple_of(4) {
                    return Err(format
                        .corrupt("the padding after a stream is not a multiple of four bytes"));
                }
                self.decoder.reset();
                self.between = false;
                self.padding = 0;
            }
            if input.is_empty() {
                // The decoder may hold output still (when the last piece filled `out`): a valid
                // stream always has its index and footer to come, and those bring it out.
                return Ok(());
            }
            match self.decoder.decode(input, &mut self.out) {
                Ok(result) => {
                    let (used, made) = (result.input_consumed(), result.output_produced());
                    input = &input[used..];
                    if made > 0 {
                        out(&self.out[..made])?;
                    }
                    if result.is_end_of_stream() {
                        self.between = true;
                    } else if used == 0 && made == 0 {
                        return self.keep(input);
                    }
                }
                // Too few bytes to go on with: they wait for the next chunk.
                Err(XzError::NeedsLargerInputBuffer) => return self.keep(input),
                Err(XzError::DictionaryTooLarge(size)) => {
                    return Err(PluginError::TooLarge(format!(
                        "the xz-compressed input needs a {} MiB dictionary; at most {} MiB is accepted",
                        size >> 20,
                        XZ_MAX_DICT >> 20
                    )));
                }
                Err(e) => return Err(format.corrupt(e)),
            }
        }
    }

    /// Keeps `input` for the next chunk.
    fn keep(&mut self, input: &[u8]) -> Result<()> {
        if self.stash.len() + input.len() > PIECE {
            return Err(Compression::Xz.corrupt("the decoder makes no progress"));
        }
        self.stash.extend_from_slice(input);
        Ok(())
    }

    fn finish(&self) -> Result<()> {
        if !self.between || !self.stash.is_empty() {
            Err(Compression::Xz.ends_early())
        } else if !self.padding.is_multiple_of(4) {
            Err(Compression::Xz
                .corrupt("the padding after the last stream is not a multiple of four bytes"))
        } else {
            Ok(())
        }
    }
}

/// The magic number of a zstd frame, and (in its upper 28 bits) of a skippable frame.
const ZSTD_MAGIC: u32 = 0xFD2F_B528;
const ZSTD_SKIPPABLE: u32 = 0x184D_2A50;
/// The largest block: 128 KiB of content (a block header says up to 2 MiB, which is corrupt).
const ZSTD_MAX_BLOCK: usize = 128 << 10;

/// Zstd: ruzstd's frame decoder, fed one whole block at a time. ruzstd decodes every block its
/// input holds at once, so handing it exactly one block (at most 128 KiB of output) keeps the
/// output bounded; the frame and block headers are read here to know where blocks end.
struct Unzstd {
    decoder: ruzstd::decoding::FrameDecoder,
    /// Input not yet decoded: at most one block and its header, plus the last chunk.
    held: Vec<u8>,
    phase: Phase,
    out: Vec<u8>,
}

enum Phase {
    /// Before a frame (or a skippable frame).
    Frame,
    /// Bytes of a skippable frame still to skip.
    Skip(u64),
    /// Inside a frame; whether it ends in a checksum.
    Blocks { checksum: bool },
}

/// Reads a little-endian `u32` at `at`.
fn le32(b: &[u8], at: usize) -> Option<u32> {
    let w = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
}

impl Unzstd {
    fn new() -> Self {
        Self {
            decoder: ruzstd::decoding::FrameDecoder::new(),
            held: Vec::new(),
            phase: Phase::Frame,
            out: vec![0; PIECE],
        }
    }

    fn push(&mut self, chunk: &[u8], out: &mut impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.held.extend_from_slice(chunk);
        let held = std::mem::take(&mut self.held);
        let used = self.decode(&held, out);
        self.held = held;
        self.held.drain(..used?);
        Ok(())
    }

    /// Decodes what it can of `data`; returns the bytes used.
    fn decode(&mut self, data: &[u8], out: &mut impl FnMut(&[u8]) -> Result<()>) -> Result<usize> {
        let format = Compression::Zstd;
        let mut pos = 0;
        loop {
            let rest = &data[pos..];
            match self.phase {
                Phase::Frame => {
                    let Some(magic) = le32(rest, 0) else {
                        return Ok(pos);
                    };
                    if magic & 0xFFFF_FFF0 == ZSTD_SKIPPABLE {
                        let Some(len) = le32(rest, 4) else {
                            return Ok(pos);
                        };
                        pos += 8;
                        self.phase = Phase::Skip(u64::from(len));
                        continue;
                    }
                    if magic != ZSTD_MAGIC {
                        return Err(format.corrupt("bytes after a frame are not another frame"));
                    }
                    let Some(&descriptor) = rest.get(4) else {
                        return Ok(pos);
                    };
                    let single_segment = descriptor & 0x20 != 0;
                    let window = usize::from(!single_segment);
                    let dictionary = [0, 1, 2, 4][usize::from(descriptor & 3)];
                    let content_size = match descriptor >> 6 {
                        0 => usize::from(single_segment),
                        1 => 2,
                        2 => 4,
                        _ => 8,
                    };
                    let len = 5 + window + dictionary + content_size;
                    if rest.len() < len {
                        return Ok(pos);
                    }
                    self.decoder
                        .reset(&rest[..len])
                        .map_err(|e| format.corrupt(e))?;
                    pos += len;
                    self.phase = Phase::Blocks {
                        checksum: descriptor & 0x04 != 0,
                    };
                }
                Phase::Skip(left) => {
                    let n = usize::try_from(left).map_or(rest.len(), |l| l.min(rest.len()));
                    pos += n;
                    let left = left - n as u64;
                    self.phase = if left == 0 {
                        Phase::Frame
                    } else {
                        Phase::Skip(left)
                    };
                    if left > 0 {
                        return Ok(pos);
                    }
                }
                Phase::Blocks { checksum } => {
                    let Some(header) = rest.get(..3) else {
                        return Ok(pos);
                    };
                    let header = u32::from_le_bytes([header[0], header[1], header[2], 0]);
                    let last = header & 1 != 0;
                    let size = (header >> 3) as usize;
                    let content = match (header >> 1) & 3 {
                        0 | 2 => size,
                        1 => 1,
                        _ => return Err(format.corrupt("a block has the reserved type")),
                    };
                    if size > ZSTD_MAX_BLOCK {
                        return Err(format.corrupt("a block is larger than 128 KiB"));
                    }
                    let len = 3 + content + if last && checksum { 4 } else { 0 };
                    if rest.len() < len {
                        return Ok(pos);
                    }
                    let (read, made) = self
                        .decoder
                        .decode_from_to(&rest[..len], &mut self.out)
                        .map_err(|e| format.corrupt(e))?;
                    if read != len {
                        return Err(format.corrupt("a block is not the length its header says"));
                    }
                    pos += len;
                    if made > 0 {
                        out(&self.out[..made])?;
                    }
                    // Hand on all that can go: while the frame lasts ruzstd keeps its window.
                    while self.decoder.can_collect() > 0 {
                        let (_, made) = self
                            .decoder
                            .decode_from_to(&[], &mut self.out)
                            .map_err(|e| format.corrupt(e))?;
                        if made == 0 {
                            break;
                        }
                        out(&self.out[..made])?;
                    }
                    if last {
                        if checksum
                            && self.decoder.get_checksum_from_data()
                                != self.decoder.get_calculated_checksum()
                        {
                            return Err(format.corrupt("the checksum does not match the data"));
                        }
                        self.phase = Phase::Frame;
                    }
                }
            }
        }
    }

    fn finish(&self) -> Result<()> {
        match self.phase {
            Phase::Frame if self.held.is_empty() => Ok(()),
            _ => Err(Compression::Zstd.ends_early()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    fn bzip2(data: &[u8]) -> Vec<u8> {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut e = lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(6))
            .expect("xz writer");
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    }

    fn compress(format: Compression, data: &[u8]) -> Vec<u8> {
        match format {
            Compression::Gzip => gzip(data),
            Compression::Bzip2 => bzip2(data),
            Compression::Xz => xz(data),
            Compression::Zstd => zstd(data),
        }
    }

    const ALL: [Compression; 4] = [
        Compression::Gzip,
        Compression::Bzip2,
        Compression::Xz,
        Compression::Zstd,
    ];

    /// Decodes `input` fed in chunks of `chunk` bytes; also returns the largest piece handed on
    /// and the compression seen.
    fn run(input: &[u8], chunk: usize) -> Result<(Vec<u8>, usize, Option<Compression>)> {
        let mut d = MaybeDecompress::new();
        let mut out = Vec::new();
        let mut largest = 0;
        let mut take = |p: &[u8]| {
            largest = largest.max(p.len());
            out.extend_from_slice(p);
            Ok(())
        };
        for c in input.chunks(chunk.max(1)) {
            d.push(c, &mut take)?;
        }
        let seen = d.compression();
        d.finish(&mut take)?;
        Ok((out, largest, seen))
    }

    fn text() -> Vec<u8> {
        (0..30_000)
            .flat_map(|i| format!("line {i}\tvalue {}\n", i * 7 % 13).into_bytes())
            .collect()
    }

    #[test]
    fn every_format_decodes_at_any_chunking_and_plain_passes_through() {
        let text = text();
        for chunk in [1, 2, 3, 7, 100, 4096, 1 << 20] {
            let (plain, _, seen) = run(&text, chunk).expect("plain");
            assert_eq!((plain == text, seen), (true, None), "plain, chunk {chunk}");
        }
        for format in ALL {
            let packed = compress(format, &text);
            for chunk in [1, 3, 7, 100, 4096, 1 << 20] {
                let (got, _, seen) =
                    run(&packed, chunk).unwrap_or_else(|e| panic!("{format}: {e}"));
                assert!(got == text, "{format}, chunk {chunk}");
                assert_eq!(seen, Some(format));
            }
            // An empty stream.
            assert_eq!(run(&compress(format, b""), 1).expect("empty").0, b"");
        }
        // Short plain inputs that start like a magic number.
        for short in [
            &b""[..],
            b"B",
            b"BZh",
            b"BZh9 is a column\n",
            b"\x1f",
            b"\xfd7zX",
        ] {
            assert_eq!(run(short, 1).expect("short").0, short);
        }
    }

    #[test]
    fn several_streams_are_read_one_after_another() {
        for format in ALL {
            let mut two = compress(format, b"first\n");
            two.extend(compress(format, b"second\n"));
            for chunk in [1, 5, 1 << 10] {
                assert_eq!(
                    run(&two, chunk)
                        .unwrap_or_else(|e| panic!("{format}: {e}"))
                        .0,
                    b"first\nsecond\n",
                    "{format}"
                );
            }
        }
        // Xz allows zero padding between streams and after the last, gzip (as gzip does) too.
        let mut padded = xz(b"a\n");
        padded.extend([0; 8]);
        padded.extend(xz(b"b\n"));
        padded.extend([0; 4]);
        assert_eq!(run(&padded, 3).expect("xz padding").0, b"a\nb\n");
        let mut padded = gzip(b"a\n");
        padded.extend([0; 3]);
        assert_eq!(run(&padded, 3).expect("gzip padding").0, b"a\n");
        // pzstd starts its files with a skippable frame.
        let mut skippable = vec![0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3];
        skippable.extend(zstd(b"z\n"));
        assert_eq!(run(&skippable, 1).expect("skippable").0, b"z\n");
    }

    #[test]
    fn corrupt_or_truncated_input_is_invalid_input_naming_the_format() {
        let text = text();
        for format in ALL {
            let packed = compress(format, &text);
            let name = format.name();
            for cut in [packed.len() / 2, packed.len() - 1] {
                match run(&packed[..cut], 4096) {
                    Err(PluginError::InvalidInput(m)) => assert!(
                        m.contains(&format!("the {name}-compressed input ends early")),
                        "{name} cut at {cut}: {m}"
                    ),
                    other => panic!("{name} cut at {cut}: {:?}", other.map(|r| r.0.len())),
                }
            }
            // Flipped bytes in the middle: corrupt (or, where the damage hides in a part the
            // format does not check, cut short or wrong output, but never a panic).
            let mut bad = packed.clone();
            let mid = bad.len() / 2;
            for b in &mut bad[mid..mid + 8] {
                *b ^= 0x5a;
            }
            match run(&bad, 4096) {
                Err(PluginError::InvalidInput(m)) => {
                    assert!(m.contains(&format!("the {name}-compressed input")), "{m}");
                }
                Ok((got, _, _)) => assert!(got != text, "{name}: damage went unnoticed"),
                Err(e) => panic!("{name}: {e}"),
            }
            // Garbage after the data.
            let mut trailing = packed.clone();
            trailing.extend(b"garbage!");
            assert!(
                matches!(run(&trailing, 4096), Err(PluginError::InvalidInput(m)) if m.contains(name)),
                "{name}: trailing garbage"
            );
        }
    }

    #[test]
    fn a_decompression_bomb_comes_out_in_bounded_pieces() {
        let zeros = vec![0u8; 16 << 20];
        for format in ALL {
            let packed = compress(format, &zeros);
            assert!(packed.len() < 1 << 20, "{format}: {}", packed.len());
            let (got, largest, _) =
                run(&packed, packed.len()).unwrap_or_else(|e| panic!("{format}: {e}"));
            assert_eq!(got.len(), zeros.len(), "{format}");
            assert!(largest <= PIECE, "{format}: a piece of {largest} bytes");
        }
    }
}
