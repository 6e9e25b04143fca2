//! The bundled `geo` connector: NCBI GEO records, untouched.
//!
//! `what = "soft"` (the default) asks `acc.cgi` for each accession's SOFT text (`form=text`, with
//! `targ` and `view`), one object `{ACC}.soft` each. `what = "family"` downloads the family SOFT
//! file of a series or platform from GEO's download tree (`series/GSE105nnn/GSE105845/soft/...`),
//! and `what = "matrix"` a series' series-matrix file, both gzipped as GEO serves them. The
//! upstream's `etag` and `last-modified` are kept as facts, and for SOFT text the record's own
//! `last_update_date` too. Platform files can be huge: one larger than `warn_bytes` is logged as a
//! warning before it streams, and one larger than `max_bytes` (when set) is refused.

use lake_sdk::http::{Request, Response};
use lake_sdk::{Connector, Info, Level, Params, Part, PluginError, Result};
use serde::Deserialize;

/// Parameters of the GEO connector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Options {
    /// GEO accessions: `GSE...`, `GSM...`, `GPL...`, `GDS...`.
    accessions: Vec<String>,
    /// `soft`, `family` or `matrix`.
    what: String,
    /// acc.cgi's `targ`: `self`, `gsm`, `gpl`, `gse` or `all`.
    targ: String,
    /// acc.cgi's `view`: `brief`, `quick`, `full` or `data`.
    view: String,
    /// Log a warning before streaming a file larger than this.
    warn_bytes: u64,
    /// Refuse files larger than this.
    max_bytes: Option<u64>,
    /// Where acc.cgi lives.
    base_url: String,
    /// The root of GEO's download tree.
    download_url: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            accessions: Vec::new(),
            what: "soft".into(),
            targ: "self".into(),
            view: "brief".into(),
            warn_bytes: 200 << 20,
            max_bytes: None,
            base_url: "https://www.ncbi.nlm.nih.gov/geo".into(),
            download_url: "https://ftp.ncbi.nlm.nih.gov/geo".into(),
        }
    }
}

/// Bytes per part handed to the host.
const PIECE: usize = 1 << 20;

/// A GEO accession's kind (`GSE`, ...) and number, when it has GEO's shape.
pub fn accession(s: &str) -> Option<(&str, &str)> {
    let kind = s.get(..3)?;
    let digits = &s[3..];
    (matches!(kind, "GSE" | "GSM" | "GPL" | "GDS")
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit()))
    .then_some((kind, digits))
}

/// GEO's download folder for an accession: the number without its last three digits, then `nnn`
/// (`GSE105845` is under `GSE105nnn`, `GSE16` under `GSEnnn`).
pub fn stub(kind: &str, digits: &str) -> String {
    let keep = digits.len().saturating_sub(3);
    format!("{kind}{}nnn", &digits[..keep])
}

/// The URL and object name of what `opts` asks for `acc`.
fn target(opts: &Options, acc: &str) -> Result<(String, String)> {
    let (kind, digits) = accession(acc).ok_or_else(|| {
        PluginError::InvalidParams(format!(
            "{acc:?} is not a GEO accession (GSE, GSM, GPL, GDS)"
        ))
    })?;
    let base = opts.base_url.trim_end_matches('/');
    let dl = opts.download_url.trim_end_matches('/');
    let folder = stub(kind, digits);
    Ok(match (opts.what.as_str(), kind) {
        ("soft", _) => (
            format!(
                "{base}/query/acc.cgi?acc={acc}&targ={}&view={}&form=text",
                opts.targ, opts.view
            ),
            format!("{acc}.soft"),
        ),
        ("family", "GSE") => (
            format!("{dl}/series/{folder}/{acc}/soft/{acc}_family.soft.gz"),
            format!("{acc}_family.soft.gz"),
        ),
        ("family", "GPL") => (
            format!("{dl}/platforms/{folder}/{acc}/soft/{acc}_family.soft.gz"),
            format!("{acc}_family.soft.gz"),
        ),
        ("matrix", "GSE") => (
            format!("{dl}/series/{folder}/{acc}/matrix/{acc}_series_matrix.txt.gz"),
            format!("{acc}_series_matrix.txt.gz"),
        ),
        (what, kind) => {
            return Err(PluginError::InvalidParams(format!(
                "GEO has no {what} file for a {kind} accession ({acc}): family files are for GSE \
                 and GPL, series matrices for GSE"
            )));
        }
    })
}

/// The record's `!..._last_update_date` in the head of a SOFT text.
pub fn last_update(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    text.lines().find_map(|l| {
        let (key, value) = l.strip_prefix('!')?.split_once('=')?;
        key.trim()
            .to_ascii_lowercase()
            .ends_with("_last_update_date")
            .then(|| value.trim().to_owned())
    })
}

/// The connector's state.
pub struct Geo {
    opts: Options,
    next: usize,
    /// The object being handed over, and whether its first piece was read.
    current: Option<(String, Response, bool)>,
    update: Option<String>,
}

impl Connector for Geo {
    fn info() -> Info {
        Info {
            name: "geo",
            version: env!("CARGO_PKG_VERSION"),
            description: "NCBI GEO records: SOFT text from acc.cgi, family SOFT and series matrix files, as GEO serves them",
            capabilities: &["http:www.ncbi.nlm.nih.gov", "http:ftp.ncbi.nlm.nih.gov"],
        }
    }

    fn start(params: Params) -> Result<Self> {
        let opts: Options = params.parse()?;
        if !matches!(opts.what.as_str(), "soft" | "family" | "matrix") {
            return Err(PluginError::InvalidParams(format!(
                "what must be soft, family or matrix, not {:?}",
                opts.what
            )));
        }
        if !matches!(opts.targ.as_str(), "self" | "gsm" | "gpl" | "gse" | "all") {
            return Err(PluginError::InvalidParams(format!(
                "targ must be self, gsm, gpl, gse or all, not {:?}",
                opts.targ
            )));
        }
        if !matches!(opts.view.as_str(), "brief" | "quick" | "full" | "data") {
            return Err(PluginError::InvalidParams(format!(
                "view must be brief, quick, full or data, not {:?}",
                opts.view
            )));
        }
        if opts.accessions.is_empty() {
            return Err(PluginError::InvalidParams(
                "give at least one accession".into(),
            ));
        }
        // Every accession is checked before the first request.
        for acc in &opts.accessions {
            target(&opts, acc)?;
        }
        Ok(Self {
            opts,
            next: 0,
            current: None,
            update: None,
        })
    }

    fn next(&mut self) -> Result<Option<Part>> {
        if self.current.is_none() {
            let Some(acc) = self.opts.accessions.get(self.next).cloned() else {
                return Ok(None);
            };
            self.next += 1;
            let (url, name) = target(&self.opts, &acc)?;
            let res = Request::get(url.clone()).send()?;
            match res.status {
                200 => {}
                404 => {
                    return Err(PluginError::InvalidInput(format!(
                        "GEO has no {name} (404 from {url})"
                    )));
                }
                s => {
                    return Err(PluginError::InvalidInput(format!(
                        "GEO answered {s} for {name} ({url})"
                    )));
                }
            }
            let size = res
                .header("content-length")
                .and_then(|n| n.parse::<u64>().ok());
            if let (Some(size), Some(max)) = (size, self.opts.max_bytes)
                && size > max
            {
                return Err(PluginError::TooLarge(format!(
                    "{name} is {size} bytes, over max_bytes ({max})"
                )));
            }
            if let Some(size) = size.filter(|s| *s > self.opts.warn_bytes) {
                lake_sdk::log(
                    Level::Warn,
                    &format!(
                        "{name} is {} MB; collecting it will take a while",
                        size >> 20
                    ),
                );
            }
            self.update = None;
            self.current = Some((name, res, false));
        }
        let Some((name, res, started)) = self.current.as_mut() else {
            return Ok(None);
        };
        let mut part = res.next_part(name, PIECE, &["etag", "last-modified"])?;
        if !*started {
            *started = true;
            if name.ends_with(".soft") {
                self.update = last_update(&part.bytes[..part.bytes.len().min(64 << 10)]);
            }
        }
        if part.last {
            if let Some(date) = self.update.take() {
                part.facts.push(("geo_last_update_date".into(), date));
            }
            self.current = None;
        }
        Ok(Some(part))
    }
}

lake_sdk::export_connector!(crate::Geo);

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(what: &str) -> Options {
        Options {
            what: what.into(),
            ..Options::default()
        }
    }

    #[test]
    fn urls_follow_geos_download_tree() {
        assert_eq!(stub("GSE", "105845"), "GSE105nnn");
        assert_eq!(stub("GSE", "16"), "GSEnnn");
        assert_eq!(stub("GPL", "1261"), "GPL1nnn");
        assert_eq!(
            target(&opts("family"), "GSE105845").expect("family").0,
            "https://ftp.ncbi.nlm.nih.gov/geo/series/GSE105nnn/GSE105845/soft/GSE105845_family.soft.gz"
        );
        assert_eq!(
            target(&opts("family"), "GPL13112").expect("platform").0,
            "https://ftp.ncbi.nlm.nih.gov/geo/platforms/GPL13nnn/GPL13112/soft/GPL13112_family.soft.gz"
        );
        assert_eq!(
            target(&opts("matrix"), "GSE16").expect("matrix"),
            (
                "https://ftp.ncbi.nlm.nih.gov/geo/series/GSEnnn/GSE16/matrix/GSE16_series_matrix.txt.gz".into(),
                "GSE16_series_matrix.txt.gz".into()
            )
        );
        assert_eq!(
            target(&opts("soft"), "GSM804").expect("soft"),
            (
                "https://www.ncbi.nlm.nih.gov/geo/query/acc.cgi?acc=GSM804&targ=self&view=brief&form=text".into(),
                "GSM804.soft".into()
            )
        );
        assert!(matches!(
            target(&opts("matrix"), "GSM804"),
            Err(PluginError::InvalidParams(_))
        ));
        assert!(matches!(
            target(&opts("soft"), "GSE16x"),
            Err(PluginError::InvalidParams(_))
        ));
    }

    #[test]
    fn the_records_update_date_is_read_from_its_head() {
        let family = std::fs::read(format!(
            "{}/fixtures/GSE105845_family.soft",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("fixture");
        // The first block is the database; the series' own date comes after it.
        assert_eq!(last_update(&family).as_deref(), Some("Oct 29 2017"));
        assert_eq!(last_update(b"^SAMPLE = A\n!Sample_title = x\n"), None);
    }

    #[test]
    fn parameters_are_checked_before_any_request() {
        let start = |v: serde_json::Value| Geo::start(Params::from_json(&v));
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"accessions": ["GSE1", "nope"]}),
            serde_json::json!({"accessions": ["GSE1"], "what": "raw"}),
            serde_json::json!({"accessions": ["GSE1"], "view": "everything"}),
            serde_json::json!({"accessions": ["GSE1"], "targ": "me"}),
            serde_json::json!({"accessions": ["GSM1"], "what": "family"}),
        ] {
            assert!(
                matches!(start(bad.clone()), Err(PluginError::InvalidParams(_))),
                "{bad}"
            );
        }
        assert!(
            start(serde_json::json!({"accessions": ["GSE16", "GPL28"], "what": "family"})).is_ok()
        );
    }
}
