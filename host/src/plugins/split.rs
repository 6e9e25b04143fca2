//! Parallel CSV parsing for the bundled `csv` parser: the input is cut at record boundaries into
//! segments that parse in separate sandboxed instances at once, one per core.
//!
//! A cut is safe only where a record ends: after a newline outside quotes. With CSV's doubled-quote
//! escaping, a position is inside quotes exactly when an odd number of quote characters precede it,
//! so the cutter only counts quotes. With a custom escape character that rule fails, and the parse
//! stays serial. The first segment (about [`HEAD_BYTES`]) is parsed alone; its schema is handed to
//! every other segment as explicit column types, with the header record put in front, so all
//! segments agree with what a serial parse would infer. Output keeps the input's order. If any
//! segment fails, the whole input is parsed again serially, so errors name the same line as
//! before.

use bytes::{Bytes, BytesMut};

use super::Table;

/// Inputs smaller than this parse serially (instances cost more than they save).
pub(super) const MIN_BYTES: usize = 16 << 20;
/// The first segment, parsed alone to learn the schema.
pub(super) const HEAD_BYTES: usize = 1 << 20;
/// A first segment that has not reached its records by this size makes the parse serial.
pub(super) const HEAD_LIMIT: usize = 64 << 20;
/// Later segments.
pub(super) const SEGMENT_BYTES: usize = 4 << 20;

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
                ("delimiter" | "encoding" | "infer_types" | "types" | "batch_rows", _) => {}
                _ => return None,
            }
        }
        Some(plan)
    }
}

/// Cuts a byte stream into segments that end at record boundaries.
#[derive(Debug)]
pub(super) struct Cutter {
    plan: CsvPlan,
    buf: BytesMut,
    /// Scanned up to here in `buf`, with the quote state there.
    scanned: usize,
    in_quote: bool,
    /// The header record (with its line end), put in front of every later segment.
    header: Option<Bytes>,
}

impl Cutter {
    pub(super) fn new(plan: CsvPlan) -> Self {
        Self {
            plan,
            buf: BytesMut::new(),
            scanned: 0,
            in_quote: false,
            header: None,
        }
    }

    /// Adds input.
    pub(super) fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes held and not yet handed out.
    pub(super) fn len(&self) -> usize {
        self.buf.len()
    }

    /// The next segment of at least `min` bytes ending at a record boundary, if the input so far
    /// has one.
    pub(super) fn cut(&mut self, min: usize) -> Option<Bytes> {
        if self.buf.len() <= min {
            return None;
        }
        if self.scanned < min {
            let q = self.plan.quote;
            let quotes = self.buf[self.scanned..min]
                .iter()
                .filter(|&&b| b == q)
                .count();
            self.in_quote ^= quotes % 2 == 1;
            self.scanned = min;
        }
        let q = self.plan.quote;
        for i in self.scanned..self.buf.len() {
            let b = self.buf[i];
            if b == q {
                self.in_quote = !self.in_quote;
            } else if b == b'\n' && !self.in_quote {
                self.scanned = 0;
                return Some(self.buf.split_to(i + 1).freeze());
            }
        }
        self.scanned = self.buf.len();
        None
    }

    /// The first segment: at least `min` bytes and every record type inference reads (the header
    /// and `infer_rows` records), so later segments get the types a serial parse infers.
    pub(super) fn cut_head(&mut self, min: usize) -> Option<Bytes> {
        let q = self.plan.quote;
        let want = self.plan.infer_rows + usize::from(self.plan.header);
        let (mut records, mut in_quote) = (0, false);
        for (i, &b) in self.buf.iter().enumerate() {
            if b == q {
                in_quote = !in_quote;
            } else if b == b'\n' && !in_quote {
                records += 1;
                if records >= want && i + 1 >= min {
                    self.scanned = 0;
                    self.in_quote = false;
                    return Some(self.buf.split_to(i + 1).freeze());
                }
            }
        }
        None
    }

    /// Everything left, at the end of the input.
    pub(super) fn rest(&mut self) -> Bytes {
        self.scanned = 0;
        self.buf.split().freeze()
    }

    /// Learns the header record from the first segment (when the input has one).
    pub(super) fn learn_header(&mut self, first: &Bytes) {
        if !self.plan.header {
            return;
        }
        let mut probe = Cutter::new(self.plan.clone());
        probe.push(first);
        self.header = probe.cut(0);
    }

    /// A later segment as a complete input of its own: the header record, then its records.
    pub(super) fn framed(&self, segment: &Bytes) -> Vec<Bytes> {
        match &self.header {
            Some(h) => vec![h.clone(), segment.clone()],
            None => vec![segment.clone()],
        }
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
        c.push(b"a,b\n1,\"x\ny\"\n2,z\n3,w");
        // From offset 5 the first newline (inside quotes) is skipped.
        assert_eq!(c.cut(5).as_deref(), Some(&b"a,b\n1,\"x\ny\"\n"[..]));
        assert_eq!(c.cut(0).as_deref(), Some(&b"2,z\n"[..]));
        assert_eq!(c.cut(0), None, "no record end yet");
        c.push(b"\n4,v\n");
        assert_eq!(c.cut(0).as_deref(), Some(&b"3,w\n"[..]));
        assert_eq!(c.rest().as_ref(), b"4,v\n");
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn the_head_holds_every_record_inference_reads() {
        let mut c = Cutter::new(plan());
        c.push(b"h\n1\n\"2\n\"\n3\n4\n");
        // Header + 2 records, at least 3 bytes: the quoted newline is not a record end.
        assert_eq!(c.cut_head(3).as_deref(), Some(&b"h\n1\n\"2\n\"\n"[..]));
        let mut short = Cutter::new(plan());
        short.push(b"h\n1\n");
        assert_eq!(short.cut_head(0), None);
    }

    #[test]
    fn doubled_quotes_keep_the_count_right() {
        let mut c = Cutter::new(plan());
        c.push(b"\"say \"\"hi\"\"\nthere\"\nnext\n");
        assert_eq!(
            c.cut(1).as_deref(),
            Some(&b"\"say \"\"hi\"\"\nthere\"\n"[..])
        );
        let mut h = Cutter::new(plan());
        h.learn_header(&Bytes::from_static(b"\"a\nb\",c\n1,2\n"));
        let framed = h.framed(&Bytes::from_static(b"3,4\n"));
        assert_eq!(framed[0].as_ref(), b"\"a\nb\",c\n");
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
