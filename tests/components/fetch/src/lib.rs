//! A minimal connector for the policing tests: GETs each URL it is given and hands each body over as
//! one object, in pieces of at most `piece_bytes`, with the response's status and ETag as facts.

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
}

fn default_piece() -> usize {
    1 << 20
}

pub struct Fetch {
    opts: Options,
    next_url: usize,
    current: Option<(String, Response)>,
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
            let Some(url) = self.opts.urls.get(self.next_url).cloned() else {
                return Ok(None);
            };
            self.next_url += 1;
            let mut req = Request::get(url.clone());
            for (n, v) in &self.opts.headers {
                req = req.header(n.clone(), v.clone());
            }
            let res = req.send()?;
            if res.status != 200 {
                return Err(PluginError::InvalidInput(format!(
                    "{url} answered {}",
                    res.status
                )));
            }
            let name = url.rsplit('/').next().unwrap_or("object").to_owned();
            self.current = Some((name, res));
        }
        let Some((name, res)) = self.current.as_mut() else {
            return Ok(None);
        };
        let piece = res.read(self.opts.piece_bytes)?;
        let mut part = Part {
            name: name.clone(),
            bytes: piece.unwrap_or_default(),
            ..Part::default()
        };
        if part.bytes.is_empty() {
            part.last = true;
            part.content_type = res.header("content-type").map(str::to_owned);
            part.facts.push(("status".into(), res.status.to_string()));
            if let Some(etag) = res.header("etag") {
                part.facts.push(("etag".into(), etag.to_owned()));
            }
            self.current = None;
        }
        Ok(Some(part))
    }
}

lake_sdk::export_connector!(crate::Fetch);
