//! The Avro object container files Iceberg keeps its manifests and manifest lists in.
//!
//! Iceberg readers resolve a manifest's fields by the `field-id`, `element-id` and `logicalType`
//! attributes of the schema in the file's header, so the header must carry the schema exactly as
//! the table spec writes it. A general Avro library re-serialises the schema it is given (and may
//! drop attributes it does not know); the two schemas here are fixed, so the container is written
//! directly: the header (magic, metadata map with the schema text verbatim, sync marker), one data
//! block, the marker again. [`Encoder`] writes Avro's binary encoding of the values.

/// Avro's binary encoding of values, appended to a buffer.
#[derive(Debug, Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// `long` (and `int`): zig-zag, then a variable-length integer.
    pub fn long(&mut self, v: i64) -> &mut Self {
        let mut n = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                self.buf.push(byte);
                return self;
            }
            self.buf.push(byte | 0x80);
        }
    }

    /// `int`, encoded as a long.
    pub fn int(&mut self, v: i32) -> &mut Self {
        self.long(i64::from(v))
    }

    /// `boolean`.
    pub fn boolean(&mut self, v: bool) -> &mut Self {
        self.buf.push(u8::from(v));
        self
    }

    /// `bytes`: the length, then the bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.long(v.len() as i64);
        self.buf.extend_from_slice(v);
        self
    }

    /// `string`: UTF-8 as `bytes`.
    pub fn string(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }

    /// The `null` branch of a `["null", T]` union.
    pub fn null(&mut self) -> &mut Self {
        self.long(0)
    }

    /// Selects the non-null branch of a `["null", T]` union; the value follows.
    pub fn some(&mut self) -> &mut Self {
        self.long(1)
    }

    /// An empty array or map.
    pub fn empty(&mut self) -> &mut Self {
        self.long(0)
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    fn len(&self) -> usize {
        self.buf.len()
    }
}

/// One object container file: `metadata` (the schema under `avro.schema`, verbatim, and the
/// entries Iceberg adds), then `count` records already encoded in `records`, in one block.
/// `sync` is the file's 16-byte marker: derived from what the file describes, so the same
/// description always gives the same bytes.
pub fn container(
    schema: &str,
    metadata: &[(&str, String)],
    count: usize,
    records: Encoder,
    sync: [u8; 16],
) -> Vec<u8> {
    let mut out = Encoder::new();
    out.buf.extend_from_slice(b"Obj\x01");
    out.long(metadata.len() as i64 + 2);
    out.string("avro.schema").string(schema);
    out.string("avro.codec").string("null");
    for (k, v) in metadata {
        out.string(k).string(v);
    }
    out.empty();
    out.buf.extend_from_slice(&sync);
    if count > 0 {
        out.long(count as i64).long(records.len() as i64);
        out.buf.extend_from_slice(&records.buf);
        out.buf.extend_from_slice(&sync);
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longs_are_zigzag_varints() {
        let cases: [(i64, &[u8]); 6] = [
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (
                i64::MAX,
                &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for (v, want) in cases {
            let mut e = Encoder::new();
            e.long(v);
            assert_eq!(e.into_bytes(), want, "{v}");
        }
    }

    #[test]
    fn a_container_has_magic_metadata_marker_and_one_block() {
        let mut records = Encoder::new();
        records.string("ab");
        let sync = [7u8; 16];
        let file = container(r#""string""#, &[("k", "v".into())], 1, records, sync);
        assert_eq!(&file[..4], b"Obj\x01");
        // The metadata map: 3 entries (schema, codec, k), then the end of the map.
        assert_eq!(file[4], 0x06);
        let text = String::from_utf8_lossy(&file);
        assert!(text.contains("avro.schema") && text.contains(r#""string""#));
        // The block: 1 record of 3 bytes ("ab" with its length), then the marker.
        let tail = &file[file.len() - 16 - 3 - 2..];
        assert_eq!(&tail[..2], &[0x02, 0x06]);
        assert_eq!(&tail[2..5], &[0x04, b'a', b'b']);
        assert_eq!(&tail[5..], &sync);
        assert_eq!(file.windows(16).filter(|w| *w == sync).count(), 2);
    }
}
