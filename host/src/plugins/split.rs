//! Cutting delimited text at record boundaries, for a parser that opted in to
//! `delimited-records` (the bundled `csv`): [`super::parallel`] parses the segments in separate
//! sandboxed instances at once, one per core. Also [`text_encoding`], which says when an input
//! cannot be cut at all.
//!
//! A cut is safe only where a record ends: after a newline outside quotes. With CSV's doubled-quote
//! escaping, a position is inside quotes exactly when an odd number of quote characters precede it,
//! so the cutter only counts quotes. With a custom escape character that rule fails, and the parse
//! stays serial. The first segment (about [`HEAD_BYTES`]) is parsed alone; its schema is handed to
//! every other segment as explicit column types, with the header record put in front, so all
//! segments agree with what a serial parse would infer. Output keeps the input's order. If any
//! segment fails, the whole input is parsed again serially, so errors name the same line as
//! before.

use std::collections::VecDeque;

use bytes::Bytes;

use super::Table;

/// Inputs smaller than this parse serially (instances cost more than they save).
pub(super) const MIN_BYTES: usize = 16 << 20;
/// The first segment, parsed alone to learn the schema.
pub(super) const HEAD_BYTES: usize = 64 << 10;
/// A first segment that has not reached its records by this size makes the parse serial.
pub(super) const HEAD_LIMIT: usize = 64 << 20;
/// Later segments.
pub(super) const SEGMENT_BYTES: usize = 2 << 20;

/// How text is wrapped when the host cannot read it directly: a compression (gzip, bzip2, xz,
/// zstd) or UTF-16 (by its byte-order mark). `None` for plain bytes.
pub fn text_encoding(head: &[u8]) -> Option<&'static str> {
    const MAGIC: [(&[u8], &str); 5] = [
        (&[0x1F, 0x8B], "gzip"),
        (&[0xFD, b'7', b'z', b'X', b'Z', 0x00], "xz"),
        (&[0x28, 0xB5, 0x2F, 0xFD], "zstd"),
        (&[0xFF, 0xFE], "utf-16"),
        (&[0xFE, 0xFF], "utf-16"),
    ];
    // bzip2 as the SDK's decoder recognises it: "BZh", the block size, then the first block's
    // magic or the end-of-stream one, so a text that starts with "BZh" stays text.
    let bzip2 = head.len() >= 10
        && head.starts_with(b"BZh")
        && (b'1'..=b'9').contains(&head[3])
        && matches!(
            &head[4..10],
            [0x31, 0x41, 0x59, 0x26, 0x53, 0x59] | [0x17, 0x72, 0x45, 0x38, 0x50, 0x90]
        );
    if bzip2 {
        return Some("bzip2");
    }
    MAGIC
        .iter()
        .find(|(magic, _)| head.starts_with(magic))
        .map(|(_, name)| *name)
}

/// What the cutter needs from the csv parameters; `None` when the parse must stay serial.
#[derive(Debug, Clone)]
pub(super) struct CsvPlan {
    quote: u8,
    header: bool,
    /// Records the plugin reads to infer types: the first segment holds at least these.
    infer_rows: usize,
}

impl CsvPlan {
    /// Reads the parameters the way the csv plugin does; anything unusual keeps the parse serial.
    pub(super) fn from_params(params: &[(String, String)]) -> Option<Self> {
        let mut plan = CsvPlan {
            quote: b'"',
            header: true,
            infer_rows: 1000,
        };
        for (k, v) in params {
            let value: serde_json::Value =
                serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.clone()));
            match (k.as_str(), &value) {
                ("quote", serde_json::Value::String(q)) if q.len() == 1 => {
                    plan.quote = q.as_bytes()[0];
                }
                ("header", serde_json::Value::Bool(h)) => plan.header = *h,
                ("infer_rows", serde_json::Value::Number(n)) => {
                    plan.infer_rows = usize::try_from(n.as_u64()?).ok()?;
                }
                ("escape", serde_json::Value::Null) => {}
                ("escape", _) => return None,
                // Sniffed by the parser from the first line: segments must not each guess.
                ("delimiter" | "encoding", serde_json::Value::String(v)) if v == "auto" => {
                    return None;
                }
                ("delimiter" | "encoding" | "infer_types" | "types" | "batch_rows", _) => {}
                _ => return None,
            }
        }
        Some(plan)
    }
}

/// A run of the input: pieces of the input's own buffers, in order. Cutting copies nothing.
pub(super) type Pieces = Vec<Bytes>;

/// Cuts a byte stream into segments that end at record boundaries. It holds the input's chunks
/// as they came (reference-counted, not copied) and splits the one a cut falls in.
#[derive(Debug)]
pub(super) struct Cutter {
    plan: CsvPlan,
    chunks: VecDeque<Bytes>,
    /// Bytes held.
    len: usize,
    /// Scanned up to this offset of what is held, with the quote state there.
    scanned: usize,
    in_quote: bool,
    /// The header record (with its line end), put in front of every later segment.
    header: Option<Bytes>,
}

impl Cutter {
    pub(super) fn new(plan: CsvPlan) -> Self {
        Self {
            plan,
            chunks: VecDeque::new(),
            len: 0,
            scanned: 0,
            in_quote: false,
            header: None,
        }
    }

    /// Adds input.
    pub(super) fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    /// Bytes held and not yet handed out.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The held bytes in `from..to` as slices, each with its offset.
    fn slices(&self, from: usize, to: usize) -> impl Iterator<Item = (usize, &[u8])> {
        let mut start = 0;
        self.chunks.iter().filter_map(move |c| {
            let at = start;
            start += c.len();
            let (lo, hi) = (from.max(at), to.min(at + c.len()));
            (lo < hi).then(|| (lo, &c[lo - at..hi - at]))
        })
    }

    /// Hands out the first `end` bytes held.
    fn take(&mut self, end: usize) -> Pieces {
        let mut out = Vec::new();
        let mut left = end;
        while left > 0 {
            let Some(mut c) = self.chunks.pop_front() else {
                break;
            };
            if c.len() > left {
                out.push(c.split_to(left));
                self.chunks.push_front(c);
                left = 0;
            } else {
                left -= c.len();
                out.push(c);
            }
        }
        self.len -= end - left;
        self.scanned = 0;
        out
    }

    /// Scans the held bytes from `from` (inside quotes when `in_quote`) and offers each record end
    /// (the offset just past its newline) to `accept` until it takes one. Returns that end, and the
    /// quote state where the scan stopped.
    fn record_end(
        &self,
        from: usize,
        mut in_quote: bool,
        mut accept: impl FnMut(usize) -> bool,
    ) -> (Option<usize>, bool) {
        let q = self.plan.quote;
        for (at, s) in self.slices(from, self.len) {
            for (i, &b) in s.iter().enumerate() {
                if b == q {
                    in_quote = !in_quote;
                } else if b == b'\n' && !in_quote && accept(at + i + 1) {
                    return (Some(at + i + 1), in_quote);
                }
            }
        }
        (None, in_quote)
    }

    /// The next segment of at least `min` bytes ending at a record boundary, if the input so far
    /// has one.
    pub(super) fn cut(&mut self, min: usize) -> Option<Pieces> {
        if self.len <= min {
            return None;
        }
        let q = self.plan.quote;
        let mut in_quote = self.in_quote;
        if self.scanned < min {
            // A vectorised search: a plain byte loop here was 6% of a large upload's CPU.
            let quotes: usize = self
                .slices(self.scanned, min)
                .map(|(_, s)| memchr::memchr_iter(q, s).count())
                .sum();
            in_quote ^= quotes % 2 == 1;
            self.scanned = min;
        }
        let (end, in_quote) = self.record_end(self.scanned, in_quote, |_| true);
        self.in_quote = in_quote;
        match end {
            Some(end) => Some(self.take(end)),
            None => {
                self.scanned = self.len;
                None
            }
        }
    }

    /// The first segment: at least `min` bytes and every record type inference reads (the header
    /// and `infer_rows` records), so later segments get the types a serial parse infers.
    pub(super) fn cut_head(&mut self, min: usize) -> Option<Pieces> {
        let want = self.plan.infer_rows + usize::from(self.plan.header);
        let mut records = 0;
        let (end, _) = self.record_end(0, false, |end| {
            records += 1;
            records >= want && end >= min
        });
        let end = end?;
        self.in_quote = false;
        Some(self.take(end))
    }

    /// Everything left, at the end of the input.
    pub(super) fn rest(&mut self) -> Pieces {
        let end = self.len;
        self.take(end)
    }

    /// Learns the header record from the first segment (when the input has one).
    pub(super) fn learn_header(&mut self, first: &[Bytes]) {
        if !self.plan.header {
            return;
        }
        let mut probe = Cutter::new(self.plan.clone());
        for piece in first {
            probe.push(piece.clone());
        }
        // The header is one small record: one buffer of its own.
        self.header = probe.cut(0).map(|pieces| Bytes::from(pieces.concat()));
    }

    /// A later segment as a complete input of its own: the header record, then its records.
    pub(super) fn framed(&self, segment: &[Bytes]) -> Vec<Bytes> {
        self.header.iter().chain(segment.iter()).cloned().collect()
    }
}

/// The parameters for later segments: the caller's, with every column's type fixed to the first
/// segment's schema. `None` when a type has no name the csv plugin accepts.
pub(super) fn pinned_params(
    params: &[(String, String)],
    first: &Table,
) -> Option<Vec<(String, String)>> {
    use arrow_schema::{DataType, TimeUnit};
    let mut types = serde_json::Map::new();
    for f in first.schema.fields() {
        let name = match f.data_type() {
            DataType::Utf8 => "utf8",
            DataType::Int64 => "int64",
            DataType::Float64 => "float64",
            DataType::Boolean => "boolean",
            DataType::Date32 => "date32",
            DataType::Timestamp(TimeUnit::Microsecond, None) => "timestamp",
            _ => return None,
        };
        types.insert(f.name().clone(), name.into());
    }
    let mut out: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "types")
        .cloned()
        .collect();
    out.push(("types".into(), serde_json::Value::Object(types).to_string()));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pieces as one byte string.
    fn cat(pieces: Option<Pieces>) -> Option<Vec<u8>> {
        pieces.map(|p| p.concat())
    }

    fn plan() -> CsvPlan {
        CsvPlan {
            quote: b'"',
            header: true,
            infer_rows: 2,
        }
    }

    #[test]
    fn cuts_fall_after_newlines_outside_quotes() {
        let mut c = Cutter::new(plan());
        c.push(Bytes::from_static(b"a,b\n1,\"x\ny\"\n2,z\n3,w"));
        // From offset 5 the first newline (inside quotes) is skipped.
        assert_eq!(cat(c.cut(5)).as_deref(), Some(&b"a,b\n1,\"x\ny\"\n"[..]));
        assert_eq!(cat(c.cut(0)).as_deref(), Some(&b"2,z\n"[..]));
        assert_eq!(c.cut(0), None, "no record end yet");
        c.push(Bytes::from_static(b"\n4,v\n"));
        assert_eq!(cat(c.cut(0)).as_deref(), Some(&b"3,w\n"[..]));
        assert_eq!(c.rest().concat(), b"4,v\n");
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn the_head_holds_every_record_inference_reads() {
        let mut c = Cutter::new(plan());
        c.push(Bytes::from_static(b"h\n1\n\"2\n\"\n3\n4\n"));
        // Header + 2 records, at least 3 bytes: the quoted newline is not a record end.
        assert_eq!(cat(c.cut_head(3)).as_deref(), Some(&b"h\n1\n\"2\n\"\n"[..]));
        let mut short = Cutter::new(plan());
        short.push(Bytes::from_static(b"h\n1\n"));
        assert_eq!(short.cut_head(0), None);
    }

    #[test]
    fn doubled_quotes_keep_the_count_right() {
        let mut c = Cutter::new(plan());
        c.push(Bytes::from_static(b"\"say \"\"hi\"\"\nthere\"\nnext\n"));
        assert_eq!(
            cat(c.cut(1)).as_deref(),
            Some(&b"\"say \"\"hi\"\"\nthere\"\n"[..])
        );
        let mut h = Cutter::new(plan());
        h.learn_header(&[
            Bytes::from_static(b"\"a\nb"),
            Bytes::from_static(b"\",c\n1,2\n"),
        ]);
        let framed = h.framed(&[Bytes::from_static(b"3,4\n")]);
        assert_eq!(framed[0].as_ref(), b"\"a\nb\",c\n");
        assert_eq!(framed[1].as_ref(), b"3,4\n");
    }

    #[test]
    fn cuts_across_chunks_share_the_input_buffers() {
        // The same input in chunks of every size cuts into the same segments, and every piece
        // handed out points into the input's own buffers.
        let input: &'static [u8] = b"h,x\n1,\"a\nb\"\n2,\"\"\"q\"\"\"\n3,c\n4,d\n5,e";
        let whole = {
            let mut c = Cutter::new(plan());
            c.push(Bytes::from_static(input));
            let mut segs: Vec<Vec<u8>> = cat(c.cut_head(0)).into_iter().collect();
            assert_eq!(segs.len(), 1, "a head");
            while let Some(s) = c.cut(3) {
                segs.push(s.concat());
            }
            segs.push(c.rest().concat());
            segs
        };
        assert_eq!(whole.concat(), input);
        assert!(whole.len() >= 3, "{whole:?}");
        let range = input.as_ptr_range();
        for size in 1..input.len() {
            let mut c = Cutter::new(plan());
            let mut segs = Vec::new();
            let mut head = None;
            for chunk in input.chunks(size) {
                c.push(Bytes::from_static(chunk));
                if head.is_none() {
                    head = c.cut_head(0);
                    if let Some(h) = &head {
                        segs.push(h.clone());
                    }
                }
                if head.is_some() {
                    while let Some(s) = c.cut(3) {
                        segs.push(s);
                    }
                }
            }
            segs.push(c.rest());
            for piece in segs.iter().flatten() {
                assert!(
                    range.contains(&piece.as_ptr()),
                    "chunk size {size}: a copied piece"
                );
            }
            let segs: Vec<Vec<u8>> = segs.iter().map(|s| s.concat()).collect();
            assert_eq!(segs, whole, "chunk size {size}");
        }
    }

    #[test]
    fn wrapped_text_is_recognised_by_the_same_magic_as_the_sdk() {
        assert_eq!(text_encoding(&[0x1F, 0x8B, 8, 0]), Some("gzip"));
        assert_eq!(
            text_encoding(b"BZh91AY&SY\x00\x01"),
            Some("bzip2"),
            "a bzip2 stream's header"
        );
        assert_eq!(
            text_encoding(b"BZh9\x17\x72\x45\x38\x50\x90"),
            Some("bzip2"),
            "an empty bzip2 stream"
        );
        assert_eq!(
            text_encoding(b"BZh,sample\n1,2\n"),
            None,
            "text that starts with BZh"
        );
        assert_eq!(text_encoding(b"\xFD7zXZ\x00\x00"), Some("xz"));
        assert_eq!(text_encoding(&[0x28, 0xB5, 0x2F, 0xFD, 0]), Some("zstd"));
        assert_eq!(text_encoding(b"\xFF\xFEa\x00"), Some("utf-16"));
        assert_eq!(text_encoding(b"a,b\n"), None);
    }

    #[test]
    fn unusual_parameters_keep_the_parse_serial() {
        let p = |k: &str, v: &str| CsvPlan::from_params(&[(k.to_owned(), v.to_owned())]);
        assert!(p("delimiter", "\";\"").is_some());
        assert!(p("escape", "\"\\\\\"").is_none());
        assert!(p("mystery", "1").is_none());
        assert!(p("header", "false").is_some_and(|x| !x.header));
        assert!(p("quote", "\"'\"").is_some_and(|x| x.quote == b'\''));
        assert!(p("infer_rows", "5").is_some_and(|x| x.infer_rows == 5));
    }
}
