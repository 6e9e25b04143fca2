//! Text decoding on the way in: the bytes (already decompressed) become UTF-8 for the CSV reader.
//!
//! A byte-order mark decides first, whatever the `encoding` parameter says: `ff fe` or `fe ff` is
//! UTF-16 (little- or big-endian, as Excel's "Unicode text" export writes it), transcoded here code
//! unit by code unit, with a byte or a surrogate pair split between chunks carried over; `ef bb bf`
//! (UTF-8's mark) is dropped. Without a UTF-16 mark the parameter decides: `utf-8` passes the bytes
//! through untouched (invalid UTF-8 is reported later by the CSV reader, with its line and field),
//! `latin-1` maps each byte to its code point, and `auto` holds the first 64 KiB back to look at
//! them: UTF-8 if they are valid UTF-8 (a character cut by the 64 KiB boundary does not count, one
//! cut by the end of the text does), Latin-1 otherwise.

use lake_sdk::{PluginError, Result};

/// The `encoding` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Utf8,
    Latin1,
    Auto,
}

/// Bytes `auto` looks at before choosing between UTF-8 and Latin-1.
pub(crate) const AUTO_HEAD: usize = 64 << 10;

/// The byte-order marks.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
const UTF16LE_BOM: &[u8] = b"\xFF\xFE";
const UTF16BE_BOM: &[u8] = b"\xFE\xFF";

/// Turns the input bytes into UTF-8, chunk by chunk.
pub(crate) struct Text {
    requested: Encoding,
    state: State,
    /// Bytes held back while the byte-order mark, or under `auto` the encoding, is undecided.
    held: Vec<u8>,
    /// The transcoded text of one piece (Latin-1 and UTF-16), reused from piece to piece.
    buf: Vec<u8>,
}

enum State {
    /// Nothing seen, or only what may be the start of a byte-order mark.
    Mark,
    /// `auto`: collecting the head to look at.
    Head,
    Utf8,
    Latin1,
    Utf16(Utf16),
}

/// UTF-16 decoding state between chunks.
struct Utf16 {
    big_endian: bool,
    /// The first byte of a code unit whose second byte is in the next chunk.
    odd: Option<u8>,
    /// A high surrogate waiting for its low half.
    high: Option<u16>,
    /// Line of the text so far (1-based) and whether the last character was `\r`, so that an
    /// error names its line as the CSV reader counts them.
    line: u64,
    cr: bool,
}

impl Text {
    pub(crate) fn new(requested: Encoding) -> Self {
        Self {
            requested,
            state: State::Mark,
            held: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// The encoding chosen, once it is known (`utf-16le`, `utf-16be`, `utf-8`, `latin-1`).
    #[cfg(test)]
    pub(crate) fn chosen(&self) -> Option<&'static str> {
        match &self.state {
            State::Mark | State::Head => None,
            State::Utf8 => Some("utf-8"),
            State::Latin1 => Some("latin-1"),
            State::Utf16(u) if u.big_endian => Some("utf-16be"),
            State::Utf16(_) => Some("utf-16le"),
        }
    }

    /// Takes the next bytes and hands `out` their text as UTF-8 (none, or one piece).
    pub(crate) fn push(
        &mut self,
        bytes: &[u8],
        out: &mut impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        match self.state {
            State::Mark | State::Head => {
                self.held.extend_from_slice(bytes);
                self.decide(false, out)
            }
            _ => self.pass(bytes, out),
        }
    }

    /// The input ended: hands `out` what is left. UTF-16 cut in the middle of a character is an
    /// error.
    pub(crate) fn finish(&mut self, out: &mut impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        if let State::Mark | State::Head = self.state {
            self.decide(true, out)?;
        }
        if let State::Utf16(u) = &self.state
            && (u.odd.is_some() || u.high.is_some())
        {
            return Err(PluginError::InvalidInput(format!(
                "line {}: the UTF-16 text ends in the middle of a character",
                u.line
            )));
        }
        Ok(())
    }

    /// Settles the byte-order mark and the encoding as far as the held bytes allow (all of them
    /// with `last`), then hands the held bytes on.
    fn decide(&mut self, last: bool, out: &mut impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        if let State::Mark = self.state {
            let held = &self.held;
            let may_be_mark = [UTF8_BOM, UTF16LE_BOM, UTF16BE_BOM]
                .iter()
                .any(|m| held.len() < m.len() && m.starts_with(held));
            if may_be_mark && !last {
                return Ok(());
            }
            let utf16 = |big_endian| {
                State::Utf16(Utf16 {
                    big_endian,
                    odd: None,
                    high: None,
                    line: 1,
                    cr: false,
                })
            };
            let (state, mark) = if held.starts_with(UTF16LE_BOM) {
                (utf16(false), UTF16LE_BOM.len())
            } else if held.starts_with(UTF16BE_BOM) {
                (utf16(true), UTF16BE_BOM.len())
            } else {
                let mark = if held.starts_with(UTF8_BOM) {
                    UTF8_BOM.len()
                } else {
                    0
                };
                let state = match self.requested {
                    Encoding::Utf8 => State::Utf8,
                    Encoding::Latin1 => State::Latin1,
                    Encoding::Auto => State::Head,
                };
                (state, mark)
            };
            self.state = state;
            self.held.drain(..mark);
        }
        if let State::Head = self.state {
            if self.held.len() < AUTO_HEAD && !last {
                return Ok(());
            }
            let head = &self.held[..self.held.len().min(AUTO_HEAD)];
            let utf8 = match std::str::from_utf8(head) {
                Ok(_) => true,
                // A character cut by the end of the head is not an error (the end of the text
                // is another matter).
                Err(e) => e.error_len().is_none() && (!last || self.held.len() > AUTO_HEAD),
            };
            self.state = if utf8 { State::Utf8 } else { State::Latin1 };
        }
        let held = std::mem::take(&mut self.held);
        self.pass(&held, out)
    }

    /// Hands `out` the text of `bytes`, the encoding being known.
    fn pass(&mut self, bytes: &[u8], out: &mut impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        match &mut self.state {
            State::Mark | State::Head => {
                return Err(PluginError::Internal(
                    "text passed before its encoding".into(),
                ));
            }
            State::Utf8 => return out(bytes),
            State::Latin1 => latin1(bytes, &mut self.buf),
            State::Utf16(u) => u.decode(bytes, &mut self.buf)?,
        }
        if self.buf.is_empty() {
            Ok(())
        } else {
            out(&self.buf)
        }
    }
}

/// Latin-1 to UTF-8: each byte is the code point of the same number.
fn latin1(bytes: &[u8], buf: &mut Vec<u8>) {
    buf.reserve(bytes.len() + bytes.len() / 8);
    for &b in bytes {
        if b < 0x80 {
            buf.push(b);
        } else {
            buf.extend_from_slice(char::from(b).encode_utf8(&mut [0; 2]).as_bytes());
        }
    }
}

impl Utf16 {
    /// Appends the UTF-8 of `bytes` to `buf`, carrying a split code unit or surrogate pair over.
    fn decode(&mut self, mut bytes: &[u8], buf: &mut Vec<u8>) -> Result<()> {
        buf.reserve(bytes.len() + bytes.len() / 2);
        if let Some(first) = self.odd.take() {
            match bytes.split_first() {
                Some((&second, rest)) => {
                    self.unit(first, second, buf)?;
                    bytes = rest;
                }
                None => self.odd = Some(first),
            }
        }
        let mut pairs = bytes.chunks_exact(2);
        for pair in &mut pairs {
            self.unit(pair[0], pair[1], buf)?;
        }
        if let [last] = pairs.remainder() {
            self.odd = Some(*last);
        }
        Ok(())
    }

    /// Decodes one code unit from its two bytes.
    fn unit(&mut self, a: u8, b: u8, buf: &mut Vec<u8>) -> Result<()> {
        let unit = if self.big_endian {
            u16::from_be_bytes([a, b])
        } else {
            u16::from_le_bytes([a, b])
        };
        let code = match (self.high.take(), unit) {
            (None, 0xD800..=0xDBFF) => {
                self.high = Some(unit);
                return Ok(());
            }
            (Some(high), 0xDC00..=0xDFFF) => {
                0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(unit) - 0xDC00)
            }
            (None, 0xDC00..=0xDFFF) | (Some(_), _) => {
                return Err(PluginError::InvalidInput(format!(
                    "line {}: invalid UTF-16: a surrogate code unit without its other half",
                    self.line
                )));
            }
            (None, unit) => u32::from(unit),
        };
        let c = char::from_u32(code).ok_or_else(|| {
            PluginError::Internal(format!("UTF-16 code point {code:#x} is not a character"))
        })?;
        match c {
            '\n' if self.cr => {}
            '\n' | '\r' => self.line += 1,
            _ => {}
        }
        self.cr = c == '\r';
        buf.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        Ok(())
    }
}
