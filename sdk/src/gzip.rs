//! Gzip-compressed input, inflated chunk by chunk (feature `gzip`).
//!
//! Upstreams serve large files gzipped (GEO's `_family.soft.gz` and `_series_matrix.txt.gz`), and
//! the lake keeps raw bytes as they came, so a parser may be handed either form. [`MaybeGunzip`]
//! looks at the first two bytes: gzip's magic (`1f 8b`) switches it to inflating (every member of
//! a multi-member file), anything else passes through untouched. Only one chunk's output is held at
//! a time.

use std::io::Write;

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
    Gzip(Box<flate2::write::MultiGzDecoder<Vec<u8>>>),
}

fn corrupt(e: std::io::Error) -> PluginError {
    PluginError::InvalidInput(format!("the gzip-compressed input is corrupt: {e}"))
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
                self.state = State::Gzip(Box::new(flate2::write::MultiGzDecoder::new(Vec::new())));
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
            State::Gzip(d) => {
                // Inflate in slices, so one chunk of a highly compressed file never becomes one
                // huge buffer.
                for piece in chunk.chunks(64 << 10) {
                    d.write_all(piece).map_err(corrupt)?;
                    let plain = std::mem::take(d.get_mut());
                    if !plain.is_empty() {
                        out(&plain)?;
                    }
                }
                Ok(())
            }
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
            State::Gzip(mut d) => {
                d.try_finish().map_err(corrupt)?;
                let plain = std::mem::take(d.get_mut());
                if !plain.is_empty() {
                    out(&plain)?;
                }
                // A stream cut short leaves the decoder mid-member; `finish` reports it.
                d.finish().map_err(corrupt)?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
