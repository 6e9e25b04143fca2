//! What an upload is: its format read from the first bytes, its CSV dialect, a name safe to store.
//!
//! The host recognises; it does not parse. Compressed and UTF-16 text is recognised by its magic
//! bytes (`crate::plugins::text_encoding`) and handed to the sandboxed csv parser, which decodes it.
//! The one exception is gzip's first bytes, inflated here (at most 64 KiB of text) so a gzip
//! CSV's dialect is read like a plain one's: the parse then gets definite parameters and can be
//! cut for every core (the host inflates the rest as it arrives, `plugins/parallel.rs`).

use futures::StreamExt;

use crate::blob::ByteStream;

use super::Format;

/// Reads the format from the first bytes of a file; the name only decides between plausible ones.
/// `Err` says why the bytes are neither CSV nor XLSX.
pub fn detect_format(head: &[u8], name: &str) -> Result<Format, String> {
    let lower = name.to_ascii_lowercase();
    if head.starts_with(b"PK\x03\x04") {
        let looks_like_workbook = head.windows(19).any(|w| w == b"[Content_Types].xml")
            || head.windows(3).any(|w| w == b"xl/");
        return if looks_like_workbook || lower.ends_with(".xlsx") || lower.ends_with(".xlsm") {
            Ok(Format::Xlsx)
        } else {
            Err("the file is a ZIP archive but not an XLSX workbook".into())
        };
    }
    if head.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        return Err(
            "the file is a legacy Excel (.xls) workbook; save it as .xlsx or CSV and upload that"
                .into(),
        );
    }
    // Compressed text and UTF-16 text are decoded by the csv parser, in the sandbox: the host only
    // recognises them (a table is what labs compress and what Excel's "Unicode text" writes).
    if crate::plugins::text_encoding(head).is_some() {
        return Ok(Format::Csv);
    }
    if head.starts_with(b"%PDF") {
        return Err("the file is a PDF, not a table".into());
    }
    if head.contains(&0) {
        return Err("the file holds binary data, neither CSV nor XLSX".into());
    }
    Ok(Format::Csv)
}

/// The first text of a gzip file from its first bytes (as much as they give, at most 64 KiB), to
/// read its dialect; `None` when they do not inflate.
fn inflated_head(head: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut gz = flate2::bufread::MultiGzDecoder::new(head);
    let mut text = vec![0; 64 << 10];
    let mut filled = 0;
    while filled < text.len() {
        match gz.read(&mut text[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            // The head is the start of the file: its compressed bytes stop mid-stream.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(_) => return None,
        }
    }
    text.truncate(filled);
    (filled > 0).then_some(text)
}

/// The name without a compression suffix: `samples.csv.gz` is a `samples.csv`.
pub(super) fn without_compression(name: &str) -> &str {
    let lower = name.to_ascii_lowercase();
    [".gz", ".gzip", ".bz2", ".xz", ".zst", ".zstd"]
        .iter()
        .find(|ext| lower.ends_with(*ext))
        .map_or(name, |ext| &name[..name.len() - ext.len()])
}

/// The stem a file's table is named after: `samples.csv.gz` gives `samples`.
pub(super) fn table_stem(name: &str) -> &str {
    let name = without_compression(name);
    name.rsplit_once('.').map_or(name, |(s, _)| s)
}

/// The name of the table parsed from the file `name`: its stem with `.parquet`, the stem cut so
/// the whole stays within the 255 bytes a file system allows a name.
pub(super) fn table_file_name(name: &str) -> String {
    const SUFFIX: &str = ".parquet";
    let stem = table_stem(name);
    let mut cut = stem.len().min(255 - SUFFIX.len());
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{SUFFIX}", &stem[..cut])
}

/// Parser parameters for a CSV file: the delimiter read from the first line (comma, tab or
/// semicolon; the extension decides for `.tsv`), and Latin-1 when the head is not UTF-8.
/// Compressed or UTF-16 bytes cannot be read here, so the parser is asked to sniff both itself
/// (`"auto"`) once it has decoded them.
pub(super) fn csv_params(head: &[u8], name: &str) -> Vec<(String, String)> {
    if let Some(encoding) = crate::plugins::text_encoding(head) {
        if encoding == "gzip"
            && let Some(plain) = inflated_head(head)
            && crate::plugins::text_encoding(&plain).is_none()
        {
            return csv_params(&plain, without_compression(name));
        }
        let lower = without_compression(name).to_ascii_lowercase();
        let delimiter = if lower.ends_with(".tsv") || lower.ends_with(".tab") {
            "\"\\t\""
        } else {
            "\"auto\""
        };
        return vec![
            ("delimiter".to_owned(), delimiter.to_owned()),
            ("encoding".to_owned(), "\"auto\"".to_owned()),
        ];
    }
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let line_end = text
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .unwrap_or(text.len());
    let line = &text[..line_end];
    let count = |c: u8| line.iter().filter(|&&b| b == c).count();
    let lower = name.to_ascii_lowercase();
    let delimiter = if lower.ends_with(".tsv") || lower.ends_with(".tab") {
        '\t'
    } else {
        let (comma, tab, semi) = (count(b','), count(b'\t'), count(b';'));
        if tab > comma && tab >= semi {
            '\t'
        } else if semi > comma && semi > tab {
            ';'
        } else {
            ','
        }
    };
    let mut params = Vec::new();
    if delimiter != ',' {
        params.push((
            "delimiter".to_owned(),
            serde_json::Value::from(delimiter.to_string()).to_string(),
        ));
    }
    // A cut in the middle of a multi-byte character at the end of the head is not an error.
    let valid_utf8 = match std::str::from_utf8(text) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    };
    if !valid_utf8 {
        params.push(("encoding".to_owned(), "\"latin-1\"".to_owned()));
    }
    params
}

/// Bytes of an upload read to tell its format.
pub(super) const HEAD_BYTES: usize = 64 << 10;

/// Reads the first [`HEAD_BYTES`] of a stream (fewer when it ends or fails first) and gives them
/// back with the whole stream again, read chunks included.
pub(super) async fn read_head(inner: ByteStream) -> (Vec<u8>, ByteStream) {
    // A stream that ended is not polled again (a request body's would panic).
    let mut inner = inner.fuse();
    let mut head = Vec::new();
    let mut read = Vec::new();
    while head.len() < HEAD_BYTES {
        match inner.next().await {
            Some(Ok(c)) => {
                let take = (HEAD_BYTES - head.len()).min(c.len());
                head.extend_from_slice(&c[..take]);
                read.push(Ok(c));
            }
            Some(Err(e)) => {
                read.push(Err(e));
                break;
            }
            None => break,
        }
    }
    (head, Box::pin(futures::stream::iter(read).chain(inner)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_fit_the_file_system() -> Result<(), String> {
        // The longest name kept gives a table name a file system takes (it was 260 bytes).
        let longest = format!("{}.c", "é".repeat(126));
        let table = table_file_name(&longest);
        if table.len() > 255 || !table.ends_with(".parquet") || !longest.starts_with(&table[..200])
        {
            return Err(format!("table name {} bytes: {table}", table.len()));
        }
        if table_file_name("plate 1.csv.gz") != "plate 1.parquet" {
            return Err(table_file_name("plate 1.csv.gz"));
        }
        Ok(())
    }

    #[test]
    fn formats_come_from_content() -> Result<(), String> {
        let zip_xlsx = b"PK\x03\x04\x14\x00\x00\x00[Content_Types].xml";
        let checks: [(&[u8], &str, Result<Format, ()>); 7] = [
            (b"a,b\n1,2\n", "data.xlsx", Ok(Format::Csv)),
            (zip_xlsx, "data.csv", Ok(Format::Xlsx)),
            (b"PK\x03\x04plain zip", "x.zip", Err(())),
            (b"PK\x03\x04plain zip", "x.xlsx", Ok(Format::Xlsx)),
            (
                &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1, 0],
                "old.xls",
                Err(()),
            ),
            (&[0x1F, 0x8B, 8, 0], "t.csv.gz", Ok(Format::Csv)),
            (b"ab\0cd", "t.csv", Err(())),
        ];
        for (head, name, want) in checks {
            let got = detect_format(head, name).map_err(|_| ());
            if got != want {
                return Err(format!("{name}: got {got:?}, want {want:?}"));
            }
        }
        Ok(())
    }

    #[test]
    fn csv_delimiter_and_encoding_are_sniffed() -> Result<(), String> {
        let p = |head: &[u8], name: &str| csv_params(head, name);
        if !p(b"a,b,c\n1,2,3", "x.csv").is_empty() {
            return Err("plain CSV needs no parameters".into());
        }
        if p(b"a\tb\tc\n", "x.txt") != vec![("delimiter".to_owned(), "\"\\t\"".to_owned())] {
            return Err(format!("tabs: {:?}", p(b"a\tb\tc\n", "x.txt")));
        }
        if p(b"a;b;c\n1,5;2;3", "x.csv")[0].1 != "\";\"" {
            return Err("semicolons".into());
        }
        if !p(b"name\ncaf\xe9\n", "x.csv")
            .iter()
            .any(|(k, v)| k == "encoding" && v == "\"latin-1\"")
        {
            return Err("latin-1 not detected".into());
        }
        // A head that ends inside a UTF-8 character is still UTF-8.
        if !p(b"name\ncaf\xc3", "x.csv").is_empty() {
            return Err("a cut character is not Latin-1".into());
        }
        Ok(())
    }

    /// A gzip CSV's dialect is read from its first text, even when the head holds only the start
    /// of the compressed stream; what does not inflate to plain text is left to the parser.
    #[test]
    fn a_gzip_csvs_dialect_is_read_from_its_first_text() -> Result<(), String> {
        use std::io::Write;
        let gz = |text: &[u8]| -> Result<Vec<u8>, String> {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(text).map_err(|e| e.to_string())?;
            e.finish().map_err(|e| e.to_string())
        };
        let mut text = b"sample;gene;value\n".to_vec();
        for i in 0..200_000 {
            text.extend_from_slice(format!("S{i:08};G{};{}.5\n", i % 977, i % 13).as_bytes());
        }
        let whole = gz(&text)?;
        let head = &whole[..whole.len().min(64 << 10)];
        assert!(head.len() < whole.len(), "the head is only the start");
        let params = csv_params(head, "x.csv.gz");
        if params != vec![("delimiter".to_owned(), "\";\"".to_owned())] {
            return Err(format!("semicolons in a gzip head: {params:?}"));
        }
        if !csv_params(&gz(b"a,b\n1,2\n")?, "x.csv.gz").is_empty() {
            return Err("a plain comma CSV, gzipped, needs no parameters".into());
        }
        let tsv = csv_params(&gz(b"a,b\n1,2\n")?, "x.tsv.gz");
        if tsv != vec![("delimiter".to_owned(), "\"\\t\"".to_owned())] {
            return Err(format!("a .tsv.gz is tab-separated by its name: {tsv:?}"));
        }
        // UTF-16 inside, or a damaged stream: the parser sniffs for itself.
        let auto = |params: Vec<(String, String)>| params.iter().any(|(_, v)| v == "\"auto\"");
        if !auto(csv_params(&gz(b"\xFF\xFEa\0,\0b\0")?, "x.csv.gz")) {
            return Err("UTF-16 inside gzip".into());
        }
        let mut damaged = gz(b"a;b\n1;2\n")?;
        damaged[2] = 7;
        if !auto(csv_params(&damaged, "x.csv.gz")) {
            return Err("a damaged gzip head".into());
        }
        Ok(())
    }
}
