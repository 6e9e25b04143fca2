//! A minimal connector for the policing tests: GETs each URL it is given and hands each body over as
//! one object, in pieces of at most `piece_bytes`, with the response's status and ETag as facts.
//!
//! Options let it behave as a careless or hostile connector would: name its objects anything
//! (`names`), follow redirects itself (`follow`: every hop is a new request the host polices),
//! store whatever body came (`any_status`), and keep every response header and each `Location`
//! it followed as facts (`header_facts`).

use lake_sdk::http::{Request, Response};
use lake_sdk::{Connector, Info, Params, Part, PluginError, Result};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    urls: Vec<String>,
    #[serde(default = "default_piece")]
    piece_bytes: usize,
    /// Headers the plugin itself sends (credentials are the host's business, not these).
    #[serde(default)]
    headers: Vec<(String, String)>,
    /// Object names, one per URL in order, instead of the URL's last segment: any string at all,
    /// as a hostile connector would send (`../x`, `/etc/passwd`, NUL, bidi controls, ...).
    #[serde(default)]
    names: Vec<String>,
    /// Redirects (a 3xx with `Location`) the plugin follows per URL; 0 treats a 3xx like any
    /// status but 200. The host never follows one itself: each hop is a request of its own.
    #[serde(default)]
    follow: u32,
    /// Stores the body whatever the status (a redirect's, an error page) instead of failing.
    #[serde(default)]
    any_status: bool,
    /// Keeps every header of the final response as a fact `header:<name>`; each `Location`
    /// followed is kept as `location:<hop>` regardless.
    #[serde(default)]
    header_facts: bool,
}

fn default_piece() -> usize {
    1 << 20
}

/// The object being handed over: its name, the response its bytes come from, and the facts its
/// last part carries beyond status and ETag.
struct Current {
    name: String,
    res: Response,
    facts: Vec<(String, String)>,
}

pub struct Fetch {
    opts: Options,
    next_url: usize,
    current: Option<Current>,
}

/// `location` as an absolute URL, read against `base` (absolute, scheme-relative `//host/...`,
/// absolute path, or relative to the origin).
fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_owned();
    }
    let scheme = base.split("://").next().unwrap_or("http");
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{scheme}://{rest}");
    }
    let after = base.find("://").map_or(0, |i| i + 3);
    let origin_end = base[after..].find('/').map_or(base.len(), |j| after + j);
    let origin = &base[..origin_end];
    match location.strip_prefix('/') {
        Some(path) => format!("{origin}/{path}"),
        None => format!("{origin}/{location}"),
    }
}

impl Fetch {
    /// GETs `url`, following up to `follow` redirects; the final response and each `Location`.
    fn get(&self, url: &str) -> Result<(String, Response, Vec<String>)> {
        let mut url = url.to_owned();
        let mut locations = Vec::new();
        loop {
            let mut req = Request::get(url.clone());
            for (n, v) in &self.opts.headers {
                req = req.header(n.clone(), v.clone());
            }
            let res = req.send()?;
            let location = res.header("location").map(str::to_owned);
            match location {
                Some(loc)
                    if (300..400).contains(&res.status)
                        && locations.len() < self.opts.follow as usize =>
                {
                    drop(res);
                    url = resolve(&url, &loc);
                    locations.push(loc);
                }
                _ => return Ok((url, res, locations)),
            }
        }
    }
}

impl Connector for Fetch {
    fn info() -> Info {
        Info {
            name: "fetch",
            version: "0.0.1",
            description: "GETs URLs (tests only)",
            capabilities: &["http:127.0.0.1"],
        }
    }

    fn start(params: Params) -> Result<Self> {
        let opts: Options = params.parse()?;
        if opts.piece_bytes == 0 {
            return Err(PluginError::InvalidParams(
                "piece_bytes must be at least 1".into(),
            ));
        }
        Ok(Fetch {
            opts,
            next_url: 0,
            current: None,
        })
    }

    fn next(&mut self) -> Result<Option<Part>> {
        if self.current.is_none() {
            let index = self.next_url;
            let Some(url) = self.opts.urls.get(index).cloned() else {
                return Ok(None);
            };
            self.next_url += 1;
            let (last_url, res, locations) = self.get(&url)?;
            if res.status != 200 && !self.opts.any_status {
                return Err(PluginError::InvalidInput(format!(
                    "{last_url} answered {}",
                    res.status
                )));
            }
            let name = match self.opts.names.get(index) {
                Some(n) => n.clone(),
                None => url.rsplit('/').next().unwrap_or("object").to_owned(),
            };
            let mut facts: Vec<(String, String)> = locations
                .into_iter()
                .enumerate()
                .map(|(hop, loc)| (format!("location:{hop}"), loc))
                .collect();
            if self.opts.header_facts {
                for (n, v) in &res.headers {
                    facts.push((format!("header:{n}"), v.clone()));
                }
            }
            self.current = Some(Current { name, res, facts });
        }
        let Some(cur) = self.current.as_mut() else {
            return Ok(None);
        };
        let piece = cur.res.read(self.opts.piece_bytes)?;
        let mut part = Part {
            name: cur.name.clone(),
            bytes: piece.unwrap_or_default(),
            ..Part::default()
        };
        if part.bytes.is_empty() {
            part.last = true;
            part.content_type = cur.res.header("content-type").map(str::to_owned);
            part.facts
                .push(("status".into(), cur.res.status.to_string()));
            if let Some(etag) = cur.res.header("etag") {
                part.facts.push(("etag".into(), etag.to_owned()));
            }
            part.facts.append(&mut cur.facts);
            self.current = None;
        }
        Ok(Some(part))
    }
}

lake_sdk::export_connector!(crate::Fetch);
