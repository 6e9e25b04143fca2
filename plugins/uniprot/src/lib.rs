//! The bundled `uniprot` connector: UniProtKB entries from UniProt's REST API, untouched.
//!
//! `accessions` fetches each entry (`/uniprotkb/{accession}.{format}`) as one object named
//! `{accession}.{format}`; `query` runs a search (`/uniprotkb/search?query=...`) and follows the
//! `Link: <...>; rel="next"` header page by page, each page one object (`search-0001.{format}`, ...).
//! Formats: `txt` (flat text, the default), `fasta`, `xml`, `json`. Each object's last part carries
//! the upstream's version facts: `etag`, `last-modified`, `x-uniprot-release`, for an entry the
//! `entry_version` its text states, and for searches `x-total-results`. A `404` is reported at once, naming the accession; the host retries only
//! `429`/`5xx` answers. `base_url` points elsewhere (a mirror, or a test server), and the host
//! refuses it unless `lake.toml` grants that origin to this plugin.

use lake_sdk::http::{Request, Response, encode};
use lake_sdk::{Connector, Info, Params, Part, PluginError, Result};
use serde::Deserialize;

/// Parameters of the UniProt connector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Options {
    /// UniProtKB accessions (`P12345`, `A0A023GPI8`).
    accessions: Vec<String>,
    /// A UniProt search query (`gene:BRCA1 AND organism_id:9606`).
    query: Option<String>,
    /// `txt`, `fasta`, `xml` or `json`.
    format: String,
    /// Entries per search page (UniProt allows up to 500).
    page_size: u32,
    /// At most this many search pages.
    max_pages: u32,
    /// The REST API's base URL.
    base_url: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            accessions: Vec::new(),
            query: None,
            format: "txt".into(),
            page_size: 500,
            max_pages: 1000,
            base_url: "https://rest.uniprot.org".into(),
        }
    }
}

/// Bytes per part handed to the host.
const PIECE: usize = 1 << 20;

/// The connector's state: what is left to fetch, and the response being handed over.
pub struct Uniprot {
    opts: Options,
    next_accession: usize,
    /// The next search page's URL, and how many pages were fetched.
    next_page: Option<String>,
    pages: u32,
    /// The object being handed over, and for an entry its version once its head was read.
    current: Option<(String, Response)>,
    /// `None` until the first piece of an entry was read; then its entry version, if stated.
    entry_version: Option<Option<String>>,
}

/// The entry version an entry's head states: flat text's `DT ... entry version N.`, XML's
/// `<entry ... version="N">`, JSON's `"entryVersion": N`. FASTA states none.
pub fn entry_version(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    let digits = |s: &str| -> Option<String> {
        let d: String = s
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        (!d.is_empty()).then_some(d)
    };
    if let Some(line) = text
        .lines()
        .find(|l| l.starts_with("DT ") && l.contains("entry version"))
    {
        return line.split("entry version").nth(1).and_then(digits);
    }
    if let Some(i) = text.find("<entry ") {
        let tag = &text[i..];
        let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
        return tag
            .split_whitespace()
            .find_map(|a| a.strip_prefix("version=\""))
            .and_then(digits);
    }
    let i = text.find("\"entryVersion\"")?;
    let rest = text[i + "\"entryVersion\"".len()..]
        .trim_start()
        .strip_prefix(':')?;
    digits(rest)
}

/// Whether `s` has the shape of a UniProtKB accession (UniProt's documented pattern).
pub fn is_accession(s: &str) -> bool {
    let b = s.as_bytes();
    let upper_digit = |c: u8| c.is_ascii_uppercase() || c.is_ascii_digit();
    let six = |b: &[u8]| {
        b.len() == 6
            && ((matches!(b[0], b'O' | b'P' | b'Q')
                && b[1].is_ascii_digit()
                && b[2..5].iter().all(|&c| upper_digit(c))
                && b[5].is_ascii_digit())
                || (b[0].is_ascii_uppercase()
                    && !matches!(b[0], b'O' | b'P' | b'Q')
                    && b[1].is_ascii_digit()
                    && b[2].is_ascii_uppercase()
                    && b[3..5].iter().all(|&c| upper_digit(c))
                    && b[5].is_ascii_digit()))
    };
    match b.len() {
        6 => six(b),
        10 => {
            six(&b[..6])
                && !matches!(b[0], b'O' | b'P' | b'Q')
                && b[6].is_ascii_uppercase()
                && b[7..9].iter().all(|&c| upper_digit(c))
                && b[9].is_ascii_digit()
        }
        _ => false,
    }
}

/// The `rel="next"` URL of a `Link` header (`<url>; rel="next", <url>; rel="prev"`).
pub fn next_link(link: &str) -> Option<String> {
    let mut rest = link;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let close = after.find('>')?;
        let url = &after[..close];
        let tail = &after[close + 1..];
        let end = tail.find('<').unwrap_or(tail.len());
        let is_next = tail[..end].split([';', ',']).any(|p| {
            let p: String = p.chars().filter(|c| !c.is_whitespace()).collect();
            p == "rel=\"next\"" || p == "rel=next"
        });
        if is_next {
            return Some(url.to_owned());
        }
        rest = &tail[end..];
    }
    None
}

impl Uniprot {
    fn fetch(&self, url: &str, what: &str) -> Result<Response> {
        let res = Request::get(url).send()?;
        match res.status {
            200 => Ok(res),
            404 => Err(PluginError::InvalidInput(format!(
                "UniProt has no {what} (404 from {url})"
            ))),
            400 => Err(PluginError::InvalidParams(format!(
                "UniProt refused the request for {what} (400 from {url})"
            ))),
            s => Err(PluginError::InvalidInput(format!(
                "UniProt answered {s} for {what} ({url})"
            ))),
        }
    }

    /// Starts the next object, or says there is none.
    fn open_next(&mut self) -> Result<bool> {
        let base = self.opts.base_url.trim_end_matches('/');
        let format = &self.opts.format;
        if let Some(acc) = self.opts.accessions.get(self.next_accession).cloned() {
            self.next_accession += 1;
            let url = format!("{base}/uniprotkb/{acc}.{format}");
            let res = self.fetch(&url, &format!("entry {acc}"))?;
            self.current = Some((format!("{acc}.{format}"), res));
            return Ok(true);
        }
        if let Some(url) = self.next_page.take() {
            if self.pages >= self.opts.max_pages {
                return Ok(false);
            }
            self.pages += 1;
            let res = self.fetch(&url, "search results")?;
            self.next_page = res.header("link").and_then(next_link);
            lake_sdk::progress(u64::from(self.pages), None);
            self.current = Some((format!("search-{:04}.{format}", self.pages), res));
            return Ok(true);
        }
        Ok(false)
    }
}

impl Connector for Uniprot {
    fn info() -> Info {
        Info {
            name: "uniprot",
            version: env!("CARGO_PKG_VERSION"),
            description: "UniProtKB entries by accession, and search results page by page, as UniProt sends them",
            capabilities: &["http:rest.uniprot.org"],
        }
    }

    fn start(params: Params) -> Result<Self> {
        let opts: Options = params.parse()?;
        if !matches!(opts.format.as_str(), "txt" | "fasta" | "xml" | "json") {
            return Err(PluginError::InvalidParams(format!(
                "format must be txt, fasta, xml or json, not {:?}",
                opts.format
            )));
        }
        if let Some(bad) = opts.accessions.iter().find(|a| !is_accession(a)) {
            return Err(PluginError::InvalidParams(format!(
                "{bad:?} is not a UniProtKB accession (like P12345 or A0A023GPI8)"
            )));
        }
        if opts.accessions.is_empty() && opts.query.as_deref().is_none_or(str::is_empty) {
            return Err(PluginError::InvalidParams(
                "give accessions, a query, or both".into(),
            ));
        }
        if !(1..=500).contains(&opts.page_size) {
            return Err(PluginError::InvalidParams(
                "page_size must be 1 to 500".into(),
            ));
        }
        let next_page = opts.query.as_deref().filter(|q| !q.is_empty()).map(|q| {
            format!(
                "{}/uniprotkb/search?query={}&format={}&size={}",
                opts.base_url.trim_end_matches('/'),
                encode(q),
                opts.format,
                opts.page_size
            )
        });
        Ok(Self {
            opts,
            next_accession: 0,
            next_page,
            pages: 0,
            current: None,
            entry_version: None,
        })
    }

    fn next(&mut self) -> Result<Option<Part>> {
        if self.current.is_none() && !self.open_next()? {
            return Ok(None);
        }
        let Some((name, res)) = self.current.as_mut() else {
            return Ok(None);
        };
        let mut part = res.next_part(
            name,
            PIECE,
            &[
                "etag",
                "last-modified",
                "x-uniprot-release",
                "x-total-results",
            ],
        )?;
        // One entry per object: its head says which version of the entry this is.
        if self.entry_version.is_none() && !part.name.starts_with("search-") {
            self.entry_version = Some(entry_version(&part.bytes[..part.bytes.len().min(64 << 10)]));
        }
        if part.last {
            if let Some(Some(v)) = self.entry_version.take() {
                part.facts.push(("entry_version".into(), v));
            }
            self.entry_version = None;
            self.current = None;
        }
        Ok(Some(part))
    }
}

lake_sdk::export_connector!(crate::Uniprot);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_versions_are_read_from_every_format_that_states_one() {
        let fixture = |name: &str| {
            std::fs::read(format!(
                "{}/../uniprot-entries/fixtures/{name}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .expect("fixture")
        };
        assert_eq!(
            entry_version(&fixture("multi_ex.txt")).as_deref(),
            Some("160")
        );
        assert_eq!(entry_version(&fixture("Q13639.xml")).as_deref(), Some("95"));
        assert_eq!(
            entry_version(&fixture("P12345.json")).as_deref(),
            Some("145")
        );
        let compact = serde_json::to_vec(
            &serde_json::from_slice::<serde_json::Value>(&fixture("P12345.json")).expect("json"),
        )
        .expect("json");
        assert_eq!(entry_version(&compact).as_deref(), Some("145"));
        assert_eq!(entry_version(&fixture("multi_ex.fasta")), None);
    }

    #[test]
    fn accessions_have_uniprots_shape() {
        for good in [
            "P12345",
            "Q13639",
            "A0A023GPI8",
            "O95793",
            "Q8NE62",
            "P00750",
        ] {
            assert!(is_accession(good), "{good}");
        }
        for bad in [
            "",
            "P1234",
            "p12345",
            "P12345X",
            "12345P",
            "A0A023GPI",
            "GSE16",
            "P12345;",
        ] {
            assert!(!is_accession(bad), "{bad}");
        }
    }

    #[test]
    fn the_next_link_is_found_among_others() {
        let link =
            r#"<https://rest.uniprot.org/uniprotkb/search?query=x&cursor=abc&size=2>; rel="next""#;
        assert_eq!(
            next_link(link).as_deref(),
            Some("https://rest.uniprot.org/uniprotkb/search?query=x&cursor=abc&size=2")
        );
        assert_eq!(
            next_link(r#"<http://a/prev>; rel="prev", <http://a/next?x=1,2>; rel="next""#)
                .as_deref(),
            Some("http://a/next?x=1,2"),
            "a comma inside the URL is part of it"
        );
        assert_eq!(next_link(r#"<http://a/prev>; rel="prev""#), None);
        assert_eq!(next_link(""), None);
    }

    #[test]
    fn parameters_are_checked_before_any_request() {
        let start = |v: serde_json::Value| Uniprot::start(Params::from_json(&v));
        assert!(matches!(
            start(serde_json::json!({})),
            Err(PluginError::InvalidParams(_))
        ));
        assert!(matches!(
            start(serde_json::json!({"accessions": ["P12345", "nope"]})),
            Err(PluginError::InvalidParams(m)) if m.contains("nope")
        ));
        assert!(matches!(
            start(serde_json::json!({"accessions": ["P12345"], "format": "gff"})),
            Err(PluginError::InvalidParams(_))
        ));
        assert!(matches!(
            start(serde_json::json!({"query": "x", "page_size": 0})),
            Err(PluginError::InvalidParams(_))
        ));
        let s = start(serde_json::json!({"query": "gene:BRCA1 AND organism_id:9606", "base_url": "http://127.0.0.1:9/"}))
            .expect("query");
        assert_eq!(
            s.next_page.as_deref(),
            Some(
                "http://127.0.0.1:9/uniprotkb/search?query=gene%3ABRCA1%20AND%20organism_id%3A9606&format=txt&size=500"
            )
        );
    }
}
