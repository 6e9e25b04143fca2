//! Gzip-compressed input, inflated chunk by chunk (feature `gzip`).
//!
//! Upstreams serve large files gzipped (GEO's `_family.soft.gz` and `_series_matrix.txt.gz`), and
//! the lake keeps raw bytes as they came, so a parser may be handed either form. [`MaybeGunzip`]
//! looks at the first two bytes: gzip's magic (`1f 8b`) switches it to inflating (every member of
//! a multi-member file), anything else passes through untouched. The output is handed on in pieces
//! of about 1 MiB at most, so a small, highly compressed chunk never becomes one huge buffer.
//! (`lake_sdk::decompress`, feature `decompress`, also reads bzip2, xz and zstd.)

use crate::{PluginError, Result};

/// Passes plain input through and inflates gzip input, a chunk at a time.
#[derive(Default)]
pub struct MaybeGunzip {
    state: State,
}

impl std::fmt::Debug for MaybeGunzip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Undecided => "undecided",
            State::Plain => "plain",
            State::Gzip(_) => "gzip",
        };
        f.debug_struct("MaybeGunzip")
            .field("state", &state)
            .finish()
    }
}

#[derive(Default)]
enum State {
    /// Fewer than two bytes seen.
    #[default]
    Undecided,
    Plain,
    Gzip(Box<Gunzip>),
}

impl MaybeGunzip {
    /// A reader that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the input turned out to be gzip (known after its first two bytes).
    pub fn is_gzip(&self) -> bool {
        matches!(self.state, State::Gzip(_))
    }

    /// Takes the next chunk and hands `out` the plain bytes it yields (none, or several pieces).
    /// `held` carries a lone first byte between calls; pass the same vector every time.
    pub fn push(
        &mut self,
        held: &mut Vec<u8>,
        chunk: &[u8],
        mut out: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        if let State::Undecided = self.state {
            held.extend_from_slice(chunk);
            if held.len() < 2 {
                return Ok(());
            }
            let start = std::mem::take(held);
            if start[..2] == [0x1f, 0x8b] {
                self.state = State::Gzip(Box::new(Gunzip::new()));
            } else {
                self.state = State::Plain;
            }
            return self.pass(&start, &mut out);
        }
        self.pass(chunk, &mut out)
    }

    fn pass(&mut self, chunk: &[u8], out: &mut impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        match &mut self.state {
            State::Undecided => Ok(()),
            State::Plain => out(chunk),
            State::Gzip(d) => d.push(chunk, out),
        }
    }

    /// The input ended: hands `out` what is left. A gzip stream cut short is an error.
    pub fn finish(
        &mut self,
        held: &mut Vec<u8>,
        mut out: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        match std::mem::take(&mut self.state) {
            State::Undecided => {
                let rest = std::mem::take(held);
                if rest.is_empty() { Ok(()) } else { out(&rest) }
            }
            State::Plain => Ok(()),
            State::Gzip(mut d) => d.finish(),
        }
    }
}

/// The most output one decoding step hands on: a small, highly compressed chunk is handed on in
/// pieces of this size, never as one huge buffer.
pub(crate) const PIECE: usize = 1 << 20;

/// Bytes a gzip member header may take (its optional file name and comment are NUL-terminated,
/// so a corrupt one could otherwise run on): far more than any real header.
const MAX_HEADER: usize = 64 << 10;

/// The gzip decoder behind [`MaybeGunzip`] and `lake_sdk::decompress`: every member of the
/// stream, its header parsed here, its deflate data inflated by flate2 a piece at a time, its
/// CRC-32 and length checked.
pub(crate) struct Gunzip {
    member: Member,
    /// Members read to the end.
    members: usize,
    out: Vec<u8>,
}

enum Member {
    /// The header so far (the next member's, or the first's).
    Header(Vec<u8>),
    /// The deflate data, and the CRC-32 and length of what it gave so far.
    Deflate(Box<flate2::Decompress>, flate2::Crc),
    /// The trailer's bytes so far (its CRC-32 and length), and what the data gave.
    Trailer(Vec<u8>, flate2::Crc),
    /// A member ended; more input starts another (or is zero padding).
    Between,
}

/// The error for corrupt gzip input, saying what is wrong.
fn gzip_corrupt(detail: impl std::fmt::Display) -> PluginError {
    PluginError::InvalidInput(format!("the gzip-compressed input is corrupt: {detail}"))
}

/// The length of the gzip member header at the start of `b`: `None` while it is incomplete.
fn header_len(b: &[u8]) -> Result<Option<usize>> {
    if b.len() < 10 {
        return Ok(None);
    }
    if b[..2] != [0x1f, 0x8b] {
        return Err(gzip_corrupt(
            "a member does not start with the gzip magic bytes",
        ));
    }
    if b[2] != 8 {
        return Err(gzip_corrupt(format!(
            "compression method {} is not deflate",
            b[2]
        )));
    }
    let flags = b[3];
    if flags & 0xe0 != 0 {
        return Err(gzip_corrupt("reserved header flags are set"));
    }
    let mut at = 10;
    if flags & 0x04 != 0 {
        let Some(xlen) = b.get(at..at + 2) else {
            return Ok(None);
        };
        at += 2 + usize::from(u16::from_le_bytes([xlen[0], xlen[1]]));
    }
    for flag in [0x08, 0x10] {
        if flags & flag != 0 {
            match b
                .get(at..)
                .and_then(|rest| rest.iter().position(|&c| c == 0))
            {
                Some(nul) => at += nul + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & 0x02 != 0 {
        at += 2;
    }
    Ok((b.len() >= at).then_some(at))
}

impl Gunzip {
    pub(crate) fn new() -> Self {
        Self {
            member: Member::Header(Vec::new()),
            members: 0,
            out: vec![0; PIECE],
        }
    }

    /// Inflates `chunk`, handing `out` the plain bytes in pieces of at most [`PIECE`].
    pub(crate) fn push(
        &mut self,
        mut chunk: &[u8],
        out: &mut impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        loop {
            match &mut self.member {
                Member::Between => {
                    // Zero bytes after a member are padding (as tape archives leave); gzip itself
                    // skips them too.
                    let zeros = chunk.iter().take_while(|&&b| b == 0).count();
                    chunk = &chunk[zeros..];
                    if chunk.is_empty() {
                        return Ok(());
                    }
                    self.member = Member::Header(Vec::new());
                }
                Member::Header(head) => {
                    if chunk.is_empty() {
                        return Ok(());
                    }
                    let before = head.len();
                    let take = chunk.len().min(MAX_HEADER - before);
                    head.extend_from_slice(&chunk[..take]);
                    match header_len(head)? {
                        Some(len) => {
                            chunk = &chunk[len - before..];
                            self.member = Member::Deflate(
                                Box::new(flate2::Decompress::new(false)),
                                flate2::Crc::new(),
                            );
                        }
                        None if head.len() >= MAX_HEADER => {
                            return Err(gzip_corrupt("a member header does not end"));
                        }
                        None => chunk = &chunk[take..],
                    }
                }
                Member::Deflate(inflate, crc) => {
                    let (in0, out0) = (inflate.total_in(), inflate.total_out());
                    let status = inflate
                        .decompress(chunk, &mut self.out, flate2::FlushDecompress::None)
                        .map_err(gzip_corrupt)?;
                    let used = usize::try_from(inflate.total_in() - in0)
                        .map_err(|e| PluginError::Internal(format!("gzip: {e}")))?;
                    let made = usize::try_from(inflate.total_out() - out0)
                        .map_err(|e| PluginError::Internal(format!("gzip: {e}")))?;
                    chunk = &chunk[used..];
                    crc.update(&self.out[..made]);
                    if made > 0 {
                        out(&self.out[..made])?;
                    }
                    if status == flate2::Status::StreamEnd {
                        let crc = std::mem::replace(crc, flate2::Crc::new());
                        self.member = Member::Trailer(Vec::with_capacity(8), crc);
                    } else if made == self.out.len() {
                        // The output was full: more may be waiting, even with no input left.
                    } else if chunk.is_empty() {
                        return Ok(());
                    } else if used == 0 && made == 0 {
                        return Err(gzip_corrupt("the deflate data makes no progress"));
                    }
                }
                Member::Trailer(trailer, crc) => {
                    let take = chunk.len().min(8 - trailer.len());
                    trailer.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    if trailer.len() < 8 {
                        return Ok(());
                    }
                    let word = |i: usize| {
                        u32::from_le_bytes([
                            trailer[i],
                            trailer[i + 1],
                            trailer[i + 2],
                            trailer[i + 3],
                        ])
                    };
                    if word(0) != crc.sum() {
                        return Err(gzip_corrupt(
                            "the CRC-32 of a member does not match its data",
                        ));
                    }
                    if word(4) != crc.amount() {
                        return Err(gzip_corrupt(
                            "the length of a member does not match its data",
                        ));
                    }
                    self.members += 1;
                    self.member = Member::Between;
                }
            }
        }
    }

    /// The input ended: a stream cut short is an error (all output was handed on by `push`).
    pub(crate) fn finish(&mut self) -> Result<()> {
        match self.member {
            Member::Between => Ok(()),
            Member::Header(ref head) if head.is_empty() && self.members > 0 => Ok(()),
            _ => Err(PluginError::InvalidInput(
                "the gzip-compressed input ends early: the file was cut short".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    fn run(input: &[u8], chunk: usize) -> Result<(Vec<u8>, bool)> {
        let mut g = MaybeGunzip::new();
        let mut held = Vec::new();
        let mut out = Vec::new();
        for c in input.chunks(chunk.max(1)) {
            g.push(&mut held, c, |p| {
                out.extend_from_slice(p);
                Ok(())
            })?;
        }
        let was = g.is_gzip();
        g.finish(&mut held, |p| {
            out.extend_from_slice(p);
            Ok(())
        })?;
        Ok((out, was))
    }

    #[test]
    fn plain_input_passes_through_and_gzip_is_inflated_at_any_chunking() {
        let text: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("line {i}\tvalue\n").into_bytes())
            .collect();
        let packed = gz(&text);
        for chunk in [1, 2, 3, 100, 4096, 1 << 20] {
            assert_eq!(run(&text, chunk).expect("plain"), (text.clone(), false));
            assert_eq!(run(&packed, chunk).expect("gzip"), (text.clone(), true));
        }
        // Two members, as `cat a.gz b.gz` makes.
        let mut two = gz(b"first\n");
        two.extend(gz(b"second\n"));
        assert_eq!(run(&two, 7).expect("members").0, b"first\nsecond\n");
        // Tiny inputs.
        assert_eq!(run(b"", 1).expect("empty").0, b"");
        assert_eq!(run(b"x", 1).expect("one byte").0, b"x");
    }

    #[test]
    fn corrupt_or_truncated_gzip_is_invalid_input() {
        let packed = gz(b"some text that is long enough to compress a little\n");
        let cut = &packed[..packed.len() - 6];
        assert!(matches!(run(cut, 5), Err(PluginError::InvalidInput(m)) if m.contains("gzip")));
        let mut bad = packed.clone();
        bad[12] ^= 0xff;
        bad[13] ^= 0xff;
        assert!(matches!(run(&bad, 5), Err(PluginError::InvalidInput(_))));
    }
}
