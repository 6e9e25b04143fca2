//! The bundled `ncbi` connector: PubMed and Gene records from NCBI's E-utilities, untouched.
//!
//! With `term`, it runs `esearch` on the history server (`usehistory=y`, JSON) and keeps the answer
//! as the object `esearch.json` (a search with no hits ends there, and the answer shows why); then
//! it fetches the hits in batches of `batch_size` with `efetch` (`retmode=xml`), each batch one
//! object (`efetch-0001.xml`, ...), and with `summary`, `esummary` JSON per batch
//! (`esummary-0001.json`, ...). With `ids`, it fetches those records the same way, without a
//! search. `max_records` caps what a large search brings.
//!
//! NCBI asks clients to send `tool` and `email` (and an `api_key` for more than 3 requests a
//! second): those are the host's to add, from `lake.toml` (`[plugins.overrides.ncbi.credentials]`),
//! so the plugin never sees them, and the host spaces requests (`requests_per_sec`).

use lake_sdk::http::{Request, Response, encode};
use lake_sdk::{Connector, Info, Params, Part, PluginError, Result};
use serde::Deserialize;

/// Parameters of the NCBI connector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Options {
    /// `pubmed` or `gene`.
    db: String,
    /// An Entrez query (`biopython[All Fields]`, `BRCA1[gene] AND human[orgn]`).
    term: Option<String>,
    /// Record ids (PMIDs, Gene ids), instead of or besides a search.
    ids: Vec<String>,
    /// Records per efetch/esummary request (NCBI allows up to 10,000).
    batch_size: u64,
    /// At most this many records from a search.
    max_records: u64,
    /// Also fetch esummary JSON for each batch.
    summary: bool,
    /// The E-utilities base URL.
    base_url: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            db: "pubmed".into(),
            term: None,
            ids: Vec::new(),
            batch_size: 200,
            max_records: 10_000,
            summary: false,
            base_url: "https://eutils.ncbi.nlm.nih.gov/entrez/eutils".into(),
        }
    }
}

/// Bytes per part handed to the host.
const PIECE: usize = 1 << 20;
/// The largest esearch answer read (it carries no ids with `retmax=0`).
const SEARCH_LIMIT: usize = 4 << 20;

/// What an esearch answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    pub count: u64,
    pub webenv: Option<String>,
    pub query_key: Option<String>,
    pub ids: Vec<String>,
}

/// Reads an esearch JSON answer (every number in it is a string).
pub fn read_search(body: &[u8]) -> Result<Search> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| PluginError::InvalidInput(format!("the esearch answer is not JSON: {e}")))?;
    let r = v.get("esearchresult").ok_or_else(|| {
        PluginError::InvalidInput("the esearch answer has no esearchresult".into())
    })?;
    if let Some(err) = r.get("ERROR").and_then(|e| e.as_str()) {
        return Err(PluginError::InvalidParams(format!("esearch: {err}")));
    }
    let text = |k: &str| r.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let count = text("count")
        .ok_or_else(|| PluginError::InvalidInput("the esearch answer has no count".into()))?
        .parse()
        .map_err(|_| PluginError::InvalidInput("the esearch count is not a number".into()))?;
    let ids = r
        .get("idlist")
        .and_then(|l| l.as_array())
        .map(|l| {
            l.iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok(Search {
        count,
        webenv: text("webenv"),
        query_key: text("querykey"),
        ids,
    })
}

/// Which records a batch request names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Records {
    History { webenv: String, query_key: String },
    Ids(Vec<String>),
}

/// The connector's state.
pub struct Ncbi {
    opts: Options,
    searched: bool,
    records: Option<Records>,
    /// Records to fetch in all, and the next batch's first record.
    total: u64,
    next: u64,
    batch: u32,
    /// The esummary of the batch just fetched (its first record and size) is still to come.
    summary_due: bool,
    last_batch: (u64, u64),
    current: Option<(String, Response)>,
}

impl Ncbi {
    fn base(&self) -> &str {
        self.opts.base_url.trim_end_matches('/')
    }

    fn fetch(&self, url: &str, what: &str) -> Result<Response> {
        let res = Request::get(url).send()?;
        match res.status {
            200 => Ok(res),
            400 => Err(PluginError::InvalidParams(format!(
                "NCBI refused the {what} request (400 from {url})"
            ))),
            s => Err(PluginError::InvalidInput(format!(
                "NCBI answered {s} to the {what} request ({url})"
            ))),
        }
    }

    /// The query naming batch `[start, start + n)`.
    fn batch_query(&self, start: u64, n: u64) -> String {
        match &self.records {
            Some(Records::History { webenv, query_key }) => format!(
                "query_key={}&WebEnv={}&retstart={start}&retmax={n}",
                encode(query_key),
                encode(webenv)
            ),
            Some(Records::Ids(ids)) => {
                let from = usize::try_from(start).unwrap_or(usize::MAX).min(ids.len());
                let to = usize::try_from(start + n)
                    .unwrap_or(usize::MAX)
                    .min(ids.len());
                format!("id={}", ids[from..to].join(","))
            }
            None => String::new(),
        }
    }

    /// Runs the search, returning its answer as an object.
    fn search(&mut self, term: &str) -> Result<Part> {
        let url = format!(
            "{}/esearch.fcgi?db={}&term={}&usehistory=y&retmode=json&retmax=0",
            self.base(),
            self.opts.db,
            encode(term)
        );
        let res = self.fetch(&url, "esearch")?;
        let content_type = res.header("content-type").map(str::to_owned);
        let body = res.bytes(SEARCH_LIMIT)?;
        let found = read_search(&body)?;
        let mut facts = vec![("count".to_owned(), found.count.to_string())];
        self.total = found.count.min(self.opts.max_records);
        self.records = match (found.webenv, found.query_key) {
            (Some(webenv), Some(query_key)) => {
                facts.push(("webenv".into(), webenv.clone()));
                Some(Records::History { webenv, query_key })
            }
            // Without the history server, the ids in the answer are what there is.
            _ => {
                self.total = self.total.min(found.ids.len() as u64);
                Some(Records::Ids(found.ids))
            }
        };
        Ok(Part {
            name: "esearch.json".into(),
            bytes: body,
            last: true,
            content_type,
            facts,
        })
    }

    /// Starts the next object, or says there is none.
    fn open_next(&mut self) -> Result<Option<Part>> {
        if !self.searched {
            self.searched = true;
            if let Some(term) = self.opts.term.clone() {
                return self.search(&term).map(Some);
            }
            self.total = self.opts.ids.len() as u64;
            self.records = Some(Records::Ids(self.opts.ids.clone()));
        }
        let n = self.opts.batch_size;
        let db = self.opts.db.clone();
        if self.summary_due {
            self.summary_due = false;
            let (start, size) = self.last_batch;
            let url = format!(
                "{}/esummary.fcgi?db={db}&{}&retmode=json",
                self.base(),
                self.batch_query(start, size)
            );
            let res = self.fetch(&url, "esummary")?;
            self.current = Some((format!("esummary-{:04}.json", self.batch), res));
            return Ok(None);
        }
        if self.next >= self.total {
            return Ok(None);
        }
        let take = n.min(self.total - self.next);
        let url = format!(
            "{}/efetch.fcgi?db={db}&{}&retmode=xml",
            self.base(),
            self.batch_query(self.next, take)
        );
        let res = self.fetch(&url, "efetch")?;
        self.last_batch = (self.next, take);
        self.batch += 1;
        self.next += take;
        self.summary_due = self.opts.summary;
        lake_sdk::progress(self.next, Some(self.total));
        self.current = Some((format!("efetch-{:04}.xml", self.batch), res));
        Ok(None)
    }
}

impl Connector for Ncbi {
    fn info() -> Info {
        Info {
            name: "ncbi",
            version: env!("CARGO_PKG_VERSION"),
            description: "PubMed and Gene records from NCBI E-utilities: esearch on the history server, then efetch (and esummary) in batches",
            capabilities: &["http:eutils.ncbi.nlm.nih.gov"],
        }
    }

    fn start(params: Params) -> Result<Self> {
        let opts: Options = params.parse()?;
        if !matches!(opts.db.as_str(), "pubmed" | "gene") {
            return Err(PluginError::InvalidParams(format!(
                "db must be pubmed or gene, not {:?}",
                opts.db
            )));
        }
        if opts.term.as_deref().is_none_or(str::is_empty) && opts.ids.is_empty() {
            return Err(PluginError::InvalidParams(
                "give a search term or record ids".into(),
            ));
        }
        if opts.term.is_some() && !opts.ids.is_empty() {
            return Err(PluginError::InvalidParams(
                "give a search term or record ids, not both".into(),
            ));
        }
        if let Some(bad) = opts
            .ids
            .iter()
            .find(|i| i.is_empty() || !i.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(PluginError::InvalidParams(format!(
                "{bad:?} is not an NCBI record id (digits only)"
            )));
        }
        if !(1..=10_000).contains(&opts.batch_size) {
            return Err(PluginError::InvalidParams(
                "batch_size must be 1 to 10000".into(),
            ));
        }
        Ok(Self {
            opts,
            searched: false,
            records: None,
            total: 0,
            next: 0,
            batch: 0,
            summary_due: false,
            last_batch: (0, 0),
            current: None,
        })
    }

    fn next(&mut self) -> Result<Option<Part>> {
        if self.current.is_none() {
            if let Some(whole) = self.open_next()? {
                return Ok(Some(whole));
            }
            if self.current.is_none() {
                return Ok(None);
            }
        }
        let Some((name, res)) = self.current.as_mut() else {
            return Ok(None);
        };
        let part = res.next_part(name, PIECE, &["last-modified", "etag"])?;
        if part.last {
            self.current = None;
        }
        Ok(Some(part))
    }
}

lake_sdk::export_connector!(crate::Ncbi);

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn esearch_answers_are_read_as_ncbi_writes_them() {
        let s = read_search(&fixture("search_covid19.json")).expect("hits");
        assert_eq!(s.count, 504_475);
        assert_eq!(
            s.ids,
            ["41730216", "41730214", "41730213", "41730209", "41730197"]
        );
        assert_eq!((s.webenv, s.query_key), (None, None));
        let empty = read_search(&fixture("search_empty.json")).expect("no hits");
        assert_eq!((empty.count, empty.ids.len()), (0, 0));
        let err =
            read_search(br#"{"esearchresult": {"ERROR": "Invalid db name specified: pubmd"}}"#)
                .expect_err("error answer");
        assert!(matches!(err, PluginError::InvalidParams(m) if m.contains("pubmd")));
        assert!(matches!(
            read_search(b"<html>busy</html>"),
            Err(PluginError::InvalidInput(_))
        ));
    }

    #[test]
    fn batches_name_their_records() {
        let mut c = Ncbi::start(Params::from_json(
            &serde_json::json!({"ids": ["1", "2", "3"], "batch_size": 2}),
        ))
        .expect("start");
        c.records = Some(Records::Ids(c.opts.ids.clone()));
        assert_eq!(c.batch_query(0, 2), "id=1,2");
        assert_eq!(c.batch_query(2, 2), "id=3");
        c.records = Some(Records::History {
            webenv: "MCID_1/x".into(),
            query_key: "1".into(),
        });
        assert_eq!(
            c.batch_query(200, 100),
            "query_key=1&WebEnv=MCID_1%2Fx&retstart=200&retmax=100"
        );
    }

    #[test]
    fn parameters_are_checked_before_any_request() {
        let start = |v: serde_json::Value| Ncbi::start(Params::from_json(&v));
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"db": "nuccore", "term": "x"}),
            serde_json::json!({"term": "x", "ids": ["1"]}),
            serde_json::json!({"ids": ["12a"]}),
            serde_json::json!({"term": "x", "batch_size": 0}),
            serde_json::json!({"term": "x", "api_key": "secret"}),
        ] {
            assert!(
                matches!(start(bad.clone()), Err(PluginError::InvalidParams(_))),
                "{bad}"
            );
        }
        assert!(start(serde_json::json!({"db": "gene", "term": "BRCA1[gene]"})).is_ok());
    }
}
