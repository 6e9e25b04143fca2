//! HTTP for connectors, over the standard `wasi:http/outgoing-handler`.
//!
//! The host polices every request: only the hosts `lake.toml` grants this plugin are reachable (any
//! other gets [`PluginError::Unsupported`] naming the URL), requests are spaced to the upstream's
//! rate limit, `429`/`503` answers with `Retry-After` are waited out and retried by the host, and
//! credentials (an API key, a token) are added by the host, so a connector never sees them. Bodies
//! are read in pieces, so a large download never needs one giant buffer:
//!
//! ```ignore
//! let mut res = lake_sdk::http::get("https://eutils.ncbi.nlm.nih.gov/entrez/eutils/einfo.fcgi")?;
//! if res.status != 200 { /* ... */ }
//! while let Some(piece) = res.read(1 << 20)? { /* hand it on as a Part */ }
//! ```
//!
//! Outside a component (native unit tests) every request fails with `Unsupported`: keep the logic
//! that interprets responses in plain functions and test those.

use crate::{PluginError, Result};

/// A request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, `POST`, ...
    pub method: String,
    /// The full URL, `https://host/path?query`.
    pub url: String,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// The body (empty for `GET`).
    pub body: Vec<u8>,
}

impl Request {
    /// A `GET` of `url`.
    pub fn get(url: impl Into<String>) -> Self {
        Self {
            method: "GET".into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sends the request and waits for the response head; the body is read with [`Response::read`].
    pub fn send(self) -> Result<Response> {
        imp::send(self)
    }
}

/// A `GET` of `url`, sent.
pub fn get(url: &str) -> Result<Response> {
    Request::get(url).send()
}

/// Percent-encodes a query value: everything but RFC 3986's unreserved characters.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A response whose body has not been read yet.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
    body: imp::Body,
}

impl Response {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The next piece of the body, at most `max` bytes; `None` at its end.
    pub fn read(&mut self, max: usize) -> Result<Option<Vec<u8>>> {
        self.body.read(max)
    }

    /// The next piece of the body (at most `max` bytes) as a part of the object `name`. At the end
    /// of the body the part is empty and `last`, with the response's content type and the headers
    /// named in `facts` that it has (`etag`, `last-modified`, ...) as upstream version facts.
    pub fn next_part(&mut self, name: &str, max: usize, facts: &[&str]) -> Result<crate::Part> {
        let mut part = crate::Part {
            name: name.to_owned(),
            bytes: self.read(max)?.unwrap_or_default(),
            ..crate::Part::default()
        };
        if part.bytes.is_empty() {
            part.last = true;
            part.content_type = self.header("content-type").map(str::to_owned);
            for fact in facts {
                if let Some(v) = self.header(fact) {
                    part.facts.push(((*fact).to_owned(), v.to_owned()));
                }
            }
        }
        Ok(part)
    }

    /// The whole body; refused with `TooLarge` beyond `limit` bytes.
    pub fn bytes(mut self, limit: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(piece) = self.read(1 << 20)? {
            out.extend_from_slice(&piece);
            if out.len() > limit {
                return Err(PluginError::TooLarge(format!(
                    "the response body is larger than {limit} bytes"
                )));
            }
        }
        Ok(out)
    }
}

/// Splits `scheme://authority/path?query`.
fn split_url(url: &str) -> Result<(&str, &str, &str)> {
    let bad = || PluginError::InvalidParams(format!("not an http(s) URL: {url:?}"));
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(bad());
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() {
        return Err(bad());
    }
    Ok((scheme, authority, if path.is_empty() { "/" } else { path }))
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::{Request, Response, split_url};
    use crate::glue::connector::bindings::wasi::http::outgoing_handler;
    use crate::glue::connector::bindings::wasi::http::types::{
        ErrorCode, Fields, IncomingBody, IncomingResponse, Method, OutgoingBody, OutgoingRequest,
        Scheme,
    };
    use crate::glue::connector::bindings::wasi::io::streams::{InputStream, StreamError};
    use crate::{PluginError, Result};

    /// The body stream; fields drop in order (stream, body, response), as WASI requires.
    #[derive(Debug)]
    pub(super) struct Body {
        stream: Option<InputStream>,
        _body: Option<IncomingBody>,
        _response: IncomingResponse,
    }

    impl Body {
        pub(super) fn read(&mut self, max: usize) -> Result<Option<Vec<u8>>> {
            let Some(stream) = self.stream.as_ref() else {
                return Ok(None);
            };
            loop {
                match stream.blocking_read(max as u64) {
                    Ok(bytes) if bytes.is_empty() => continue,
                    Ok(bytes) => return Ok(Some(bytes)),
                    Err(StreamError::Closed) => {
                        self.stream = None;
                        return Ok(None);
                    }
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(PluginError::Internal(format!(
                            "reading the response body: {}",
                            e.to_debug_string()
                        )));
                    }
                }
            }
        }
    }

    fn failed(url: &str, e: ErrorCode) -> PluginError {
        match e {
            ErrorCode::HttpRequestDenied => PluginError::Unsupported(format!(
                "{url}: the lake does not let this plugin reach that host (see plugins.overrides in lake.toml)"
            )),
            other => PluginError::Internal(format!("{url}: {other:?}")),
        }
    }

    pub(super) fn send(req: Request) -> Result<Response> {
        let (scheme, authority, path) = split_url(&req.url)?;
        let entries: Vec<(String, Vec<u8>)> = req
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), v.as_bytes().to_vec()))
            .collect();
        let headers = Fields::from_list(&entries)
            .map_err(|e| PluginError::InvalidParams(format!("a request header: {e:?}")))?;
        let out = OutgoingRequest::new(headers);
        let method = match req.method.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        };
        let scheme = if scheme.eq_ignore_ascii_case("https") {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let refused = |what: &str| PluginError::InvalidParams(format!("{}: bad {what}", req.url));
        out.set_method(&method).map_err(|()| refused("method"))?;
        out.set_scheme(Some(&scheme))
            .map_err(|()| refused("scheme"))?;
        out.set_authority(Some(authority))
            .map_err(|()| refused("host"))?;
        out.set_path_with_query(Some(path))
            .map_err(|()| refused("path"))?;
        let body = out
            .body()
            .map_err(|()| PluginError::Internal("the request body was taken twice".into()))?;
        // The request goes out first; its body is written while the host sends it.
        let future = outgoing_handler::handle(out, None).map_err(|e| failed(&req.url, e))?;
        if !req.body.is_empty() {
            let stream = body
                .write()
                .map_err(|()| PluginError::Internal("opening the request body".into()))?;
            for piece in req.body.chunks(4096) {
                stream.blocking_write_and_flush(piece).map_err(|e| {
                    PluginError::Internal(format!("writing the request body: {e:?}"))
                })?;
            }
            drop(stream);
        }
        OutgoingBody::finish(body, None).map_err(|e| failed(&req.url, e))?;
        future.subscribe().block();
        let response = match future.get() {
            Some(Ok(Ok(r))) => r,
            Some(Ok(Err(e))) => return Err(failed(&req.url, e)),
            Some(Err(())) | None => {
                return Err(PluginError::Internal(format!(
                    "{}: the response was not ready",
                    req.url
                )));
            }
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(n, v)| {
                (
                    n.to_ascii_lowercase(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        let body = response.consume().ok();
        let stream = body.as_ref().and_then(|b| b.stream().ok());
        Ok(Response {
            status,
            headers,
            body: Body {
                stream,
                _body: body,
                _response: response,
            },
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::{Request, Response, split_url};
    use crate::{PluginError, Result};

    #[derive(Debug)]
    pub(super) struct Body;

    impl Body {
        pub(super) fn read(&mut self, _max: usize) -> Result<Option<Vec<u8>>> {
            Ok(None)
        }
    }

    pub(super) fn send(req: Request) -> Result<Response> {
        split_url(&req.url)?;
        Err(PluginError::Unsupported(format!(
            "{}: HTTP is available only inside the lake (a wasm32-wasip2 component)",
            req.url
        )))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            super::encode("gene:BRCA1 AND organism_id:9606"),
            "gene%3ABRCA1%20AND%20organism_id%3A9606"
        );
        assert_eq!(super::encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(super::encode("caf\u{e9}/&"), "caf%C3%A9%2F%26");
    }

    use super::*;

    #[test]
    fn urls_split_into_scheme_host_and_path() {
        assert_eq!(
            split_url("https://eutils.ncbi.nlm.nih.gov/entrez/eutils/esearch.fcgi?db=gene")
                .expect("url"),
            (
                "https",
                "eutils.ncbi.nlm.nih.gov",
                "/entrez/eutils/esearch.fcgi?db=gene"
            )
        );
        assert_eq!(
            split_url("http://127.0.0.1:8080").expect("url"),
            ("http", "127.0.0.1:8080", "/")
        );
        assert!(split_url("ftp://x/y").is_err());
        assert!(split_url("https:///path").is_err());
        assert!(matches!(
            get("https://example.org/"),
            Err(PluginError::Unsupported(_))
        ));
    }
}
