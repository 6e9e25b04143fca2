//! What a connector may do over HTTP: which origins it reaches, how fast, with which credentials,
//! and the record of every request it made (for provenance).
//!
//! The runtime consults this for each outgoing request before anything leaves the machine. The
//! plugin never sees the credentials: they are added here, after the plugin handed the request
//! over, and the recorded URL is the one the plugin asked for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::PluginOverride;

/// Retries of a `429`/`503` answer that carried `Retry-After`.
pub(super) const MAX_RETRIES: u32 = 3;

/// Requests one invocation has open at once (each holds a connection, so a file descriptor, until
/// its answer is read); more wait their turn.
pub(crate) const MAX_OPEN_REQUESTS: usize = 8;

/// One request a connector made, as provenance records it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Fetch {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The URL the plugin asked for (credentials added by the host are not in it).
    pub url: String,
    /// The final status, when a response came.
    pub status: Option<u16>,
    /// How many times the host waited out `Retry-After` and asked again.
    pub retries: u32,
    /// Why there was no response (`denied: ...`, a connection error).
    pub error: Option<String>,
}

/// Spaces requests to each origin; shared by every invocation of one plugin.
#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    next: Mutex<HashMap<String, Instant>>,
}

impl RateLimiter {
    /// Reserves the next slot for `origin` at `per_sec` and returns when it starts.
    fn reserve(&self, origin: &str, per_sec: f64) -> Instant {
        let gap = Duration::from_secs_f64(1.0 / per_sec);
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let slot = next
            .get(origin)
            .copied()
            .filter(|t| *t > now)
            .unwrap_or(now);
        next.insert(origin.to_owned(), slot + gap);
        slot
    }
}

/// The rules for one invocation.
#[derive(Debug, Clone)]
pub(crate) struct HttpPolicy {
    plugin: String,
    origins: Vec<String>,
    query: Vec<(String, String)>,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    per_sec: Option<f64>,
    rate: Arc<RateLimiter>,
    deadline: Instant,
    fetches: Arc<Mutex<Vec<Fetch>>>,
    /// Requests of this invocation with a connection open (at most [`MAX_OPEN_REQUESTS`]).
    open: Arc<tokio::sync::Semaphore>,
}

/// `scheme://host:port`, lowercase, with the default port spelled out.
pub(crate) fn origin_of(uri: &http::Uri) -> Option<String> {
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    });
    Some(format!("{scheme}://{host}:{port}"))
}

impl HttpPolicy {
    /// No origin allowed: what parsers and steps get.
    pub(crate) fn deny_all() -> Self {
        Self {
            plugin: String::new(),
            origins: Vec::new(),
            query: Vec::new(),
            headers: Vec::new(),
            per_sec: None,
            rate: Arc::default(),
            deadline: Instant::now(),
            fetches: Arc::default(),
            open: Arc::new(tokio::sync::Semaphore::new(MAX_OPEN_REQUESTS)),
        }
    }

    /// The rules lake.toml sets for `plugin`, for an invocation ending at `deadline`. Values were
    /// checked when the configuration was loaded; one that does not parse allows nothing.
    pub(crate) fn for_plugin(
        plugin: &str,
        o: Option<&PluginOverride>,
        rate: Arc<RateLimiter>,
        deadline: Instant,
    ) -> Self {
        let Some(o) = o else {
            return Self {
                plugin: plugin.to_owned(),
                rate,
                deadline,
                ..Self::deny_all()
            };
        };
        Self {
            plugin: plugin.to_owned(),
            origins: o
                .hosts
                .iter()
                .filter_map(|h| h.parse::<http::Uri>().ok())
                .filter_map(|u| origin_of(&u))
                .collect(),
            query: o
                .credentials
                .query
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                .collect(),
            headers: o
                .credentials
                .headers
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        http::HeaderName::from_bytes(k.as_bytes()).ok()?,
                        http::HeaderValue::from_str(v.expose()).ok()?,
                    ))
                })
                .collect(),
            per_sec: o.requests_per_sec,
            rate,
            deadline,
            fetches: Arc::default(),
            open: Arc::new(tokio::sync::Semaphore::new(MAX_OPEN_REQUESTS)),
        }
    }

    /// Time left before the invocation's deadline.
    pub(crate) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Whether the plugin may reach this URL; the reason when not.
    pub(crate) fn check(&self, uri: &http::Uri) -> Result<String, String> {
        let origin = origin_of(uri).ok_or_else(|| format!("{uri} is not an http(s) URL"))?;
        if let Some(host) = uri.host()
            && forbidden_host(host)
        {
            return Err(format!(
                "{uri}: link-local and cloud metadata addresses are never reachable, granted or not"
            ));
        }
        if self.origins.contains(&origin) {
            Ok(origin)
        } else if self.origins.is_empty() {
            Err(format!(
                "{uri}: lake.toml grants {} no hosts (plugins.overrides.{}.hosts)",
                self.plugin, self.plugin
            ))
        } else {
            Err(format!(
                "{uri}: {origin} is not among the hosts lake.toml grants {}",
                self.plugin
            ))
        }
    }

    /// Adds the credentials to a request on its way out.
    pub(crate) fn add_credentials(&self, parts: &mut http::request::Parts) {
        for (k, v) in &self.headers {
            parts.headers.insert(k.clone(), v.clone());
        }
        if self.query.is_empty() {
            return;
        }
        let mut pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        for (i, (k, v)) in self.query.iter().enumerate() {
            let sep = if i == 0 && !pq.contains('?') {
                '?'
            } else {
                '&'
            };
            pq.push(sep);
            pq.extend(percent_encoding::utf8_percent_encode(k, QUERY));
            pq.push('=');
            pq.extend(percent_encoding::utf8_percent_encode(v, QUERY));
        }
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.path_and_query = pq.parse().ok();
        if let Ok(u) = http::Uri::from_parts(uri) {
            parts.uri = u;
        }
    }

    /// The credential values the host adds, as they are (the query's decoded values, the headers'
    /// values).
    fn raw_secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = self.query.iter().map(|(_, v)| v.clone()).collect();
        for (_, v) in &self.headers {
            if let Ok(v) = v.to_str() {
                out.push(v.to_owned());
            }
        }
        out.retain(|s| s.len() >= 4);
        out
    }

    /// The credential values the host adds, as sent (raw and escaped) and as an upstream that
    /// normalises a URL writes them back (escapes in lowercase hex): what must never come back to
    /// the plugin. Longest first, each once.
    fn secrets(&self) -> Vec<String> {
        let mut out = self.raw_secrets();
        for (_, v) in &self.query {
            // As sent, and as the usual URL libraries write it back (`/` left as it is, as
            // Python's `quote` does), each in upper- and lowercase hex.
            for set in [QUERY, PATH_SAFE] {
                let escaped = percent_encoding::utf8_percent_encode(v, set).to_string();
                out.push(lowercase_escapes(&escaped));
                out.push(escaped);
            }
        }
        out.retain(|s| s.len() >= 4);
        out.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        out.dedup();
        out
    }

    /// The response body `body` with the host's credentials replaced as it streams (an upstream
    /// echoing its request), or `body` itself where the host adds none.
    pub(crate) fn redact_body<B>(&self, body: B) -> Result<super::redact::Redacting<B>, B> {
        let secrets = self.secrets();
        if secrets.is_empty() {
            return Err(body);
        }
        Ok(super::redact::Redacting::new(
            body,
            secrets.into_iter().map(String::into_bytes).collect(),
            &self.plugin,
        ))
    }

    /// Removes the host's credentials from a response's headers before the plugin sees them: a
    /// redirect's `Location` that repeats the query's `api_key`, an upstream echoing the token
    /// header. A value that still holds a credential once its escapes are decoded (an upstream
    /// that escaped it in its own way, `/` left as it is or `%2f`) is replaced whole. Returns how
    /// many headers were changed.
    pub(crate) fn scrub(&self, headers: &mut http::HeaderMap) -> usize {
        let secrets = self.secrets();
        if secrets.is_empty() {
            return 0;
        }
        let raw = self.raw_secrets();
        let mut changed = 0;
        for value in headers.values_mut() {
            let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
            let mut clean = text.clone();
            for s in &secrets {
                clean = clean.replace(s.as_str(), "REDACTED");
            }
            let decoded = percent_encoding::percent_decode_str(&clean).decode_utf8_lossy();
            let hidden = raw.iter().any(|s| decoded.contains(s.as_str()));
            if clean == text && !hidden {
                continue;
            }
            *value = if hidden {
                http::HeaderValue::from_static("REDACTED")
            } else {
                http::HeaderValue::from_str(&clean)
                    .unwrap_or_else(|_| http::HeaderValue::from_static("REDACTED"))
            };
            changed += 1;
        }
        changed
    }

    /// Waits until this invocation has fewer than [`MAX_OPEN_REQUESTS`] connections open (never
    /// past the deadline: `None` then); the permit is held until the answer has been read.
    pub(crate) async fn open_request(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        tokio::time::timeout_at(self.deadline.into(), self.open.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }

    /// Waits for this origin's next slot under the rate limit (never past the deadline).
    pub(crate) async fn wait_turn(&self, origin: &str) {
        if let Some(per_sec) = self.per_sec {
            let slot = self.rate.reserve(origin, per_sec).min(self.deadline);
            tokio::time::sleep_until(slot.into()).await;
        }
    }

    /// Records a finished request.
    pub(crate) fn record(&self, fetch: Fetch) {
        self.fetches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(fetch);
    }

    /// Every request made so far.
    pub(crate) fn fetches(&self) -> Vec<Fetch> {
        self.fetches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Link-local addresses (where clouds serve instance metadata and credentials) and the
/// metadata services' names: refused even when a grant names them.
fn forbidden_host(host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_link_local() || ip.is_unspecified(),
        Ok(std::net::IpAddr::V6(ip)) => {
            (ip.segments()[0] & 0xffc0) == 0xfe80
                || ip.is_unspecified()
                || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_link_local())
        }
        Err(_) => matches!(
            host.trim_end_matches('.'),
            "metadata"
                | "metadata.google.internal"
                | "instance-data"
                | "instance-data.ec2.internal"
        ),
    }
}

/// `text` with the hex digits of its `%XX` escapes in lowercase.
fn lowercase_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut hex = 0;
    for c in text.chars() {
        if hex > 0 {
            out.push(c.to_ascii_lowercase());
            hex -= 1;
        } else {
            if c == '%' {
                hex = 2;
            }
            out.push(c);
        }
    }
    out
}

/// Characters escaped in a query value.
const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// [`QUERY`] with `/` left as it is: how Python's `quote` and most path encoders write a value.
const PATH_SAFE: &percent_encoding::AsciiSet = &QUERY.remove(b'/');

/// How long a `Retry-After` asks to wait: seconds, or an HTTP date (approximated as one second
/// when it cannot be read); capped at a minute.
pub(crate) fn retry_after(value: Option<&http::HeaderValue>) -> Option<Duration> {
    let v = value?.to_str().ok()?.trim();
    let secs = v.parse::<u64>().unwrap_or(1);
    Some(Duration::from_secs(secs.min(60)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Credentials, Secret};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn policy() -> HttpPolicy {
        let o = PluginOverride {
            hosts: vec![
                "https://eutils.ncbi.nlm.nih.gov".into(),
                "http://127.0.0.1:8081".into(),
            ],
            credentials: Credentials {
                query: [("api_key".to_owned(), Secret::new("s3cr3t&x"))].into(),
                headers: [("X-Token".to_owned(), Secret::new("t"))].into(),
            },
            ..Default::default()
        };
        HttpPolicy::for_plugin("ncbi", Some(&o), Arc::default(), Instant::now())
    }

    #[test]
    fn only_granted_origins_pass() -> TestResult {
        let p = policy();
        let ok = |u: &str| -> Result<Result<String, String>, http::uri::InvalidUri> {
            Ok(p.check(&u.parse()?))
        };
        assert_eq!(
            ok("https://EUTILS.ncbi.nlm.nih.gov/entrez?db=gene")?,
            Ok("https://eutils.ncbi.nlm.nih.gov:443".to_owned())
        );
        assert!(ok("http://127.0.0.1:8081/x")?.is_ok());
        assert!(
            ok("http://eutils.ncbi.nlm.nih.gov/")?.is_err(),
            "scheme counts"
        );
        assert!(ok("http://127.0.0.1:8082/x")?.is_err(), "port counts");
        assert!(ok("https://evil.example/")?.is_err());
        let none = HttpPolicy::deny_all();
        assert!(none.check(&"https://x.org/".parse()?).is_err());
        Ok(())
    }

    #[test]
    fn link_local_and_metadata_hosts_are_refused_even_when_granted() -> TestResult {
        let o = PluginOverride {
            hosts: vec![
                "http://169.254.169.254".into(),
                "http://[fe80::1]".into(),
                "http://metadata.google.internal".into(),
                "http://127.0.0.1:9".into(),
            ],
            ..Default::default()
        };
        let p = HttpPolicy::for_plugin("x", Some(&o), Arc::default(), Instant::now());
        for u in [
            "http://169.254.169.254/latest/meta-data/iam/",
            "http://[fe80::1]/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.google.internal./x",
            "http://[::ffff:169.254.169.254]/",
            "http://0.0.0.0/",
        ] {
            let refused = p.check(&u.parse()?);
            assert!(
                refused
                    .as_ref()
                    .is_err_and(|e| e.contains("never reachable")),
                "{u}: {refused:?}"
            );
        }
        assert!(p.check(&"http://127.0.0.1:9/".parse()?).is_ok());
        Ok(())
    }

    #[test]
    fn credentials_never_come_back_in_response_headers() -> TestResult {
        let p = policy();
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::LOCATION,
            "https://eutils.ncbi.nlm.nih.gov/e?db=gene&api_key=s3cr3t%26x".parse()?,
        );
        h.insert("x-echo", "s3cr3t&x".parse()?);
        h.insert("etag", "\"abc\"".parse()?);
        assert_eq!(p.scrub(&mut h), 2);
        assert_eq!(
            h[http::header::LOCATION],
            "https://eutils.ncbi.nlm.nih.gov/e?db=gene&api_key=REDACTED"
        );
        assert_eq!(h["x-echo"], "REDACTED");
        assert_eq!(h["etag"], "\"abc\"");
        Ok(())
    }

    /// An upstream that writes the credential back escaped its own way (lowercase hex, `/` left
    /// unescaped, every byte escaped) still never hands it to the plugin: a usual spelling is
    /// replaced where it stands, any other makes the whole value go.
    #[test]
    fn credentials_escaped_by_the_upstream_are_removed_too() -> TestResult {
        let o = PluginOverride {
            hosts: vec!["http://127.0.0.1:8081".into()],
            credentials: Credentials {
                query: [("api_key".to_owned(), Secret::new("qs3cr3t/K+42"))].into(),
                headers: [("X-Token".to_owned(), Secret::new("hdr-T0KEN-77"))].into(),
            },
            ..Default::default()
        };
        let p = HttpPolicy::for_plugin("x", Some(&o), Arc::default(), Instant::now());
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::LOCATION,
            "http://127.0.0.1:8081/e?api_key=qs3cr3t%2fK%2b42&db=gene".parse()?,
        );
        h.insert("x-python-quote", "/e?api_key=qs3cr3t/K%2B42".parse()?);
        h.insert(
            "x-all-escaped",
            "%71%73%33%63%72%33%74%2F%4B%2B%34%32".parse()?,
        );
        h.insert("x-token-escaped", "hdr%2DT0KEN%2D77".parse()?);
        h.insert("x-other", "qs3cr3t".parse()?);
        assert_eq!(p.scrub(&mut h), 4);
        assert_eq!(
            h[http::header::LOCATION],
            "http://127.0.0.1:8081/e?api_key=REDACTED&db=gene"
        );
        // A spelling the usual libraries write is replaced where it stands, the rest kept.
        assert_eq!(h["x-python-quote"], "/e?api_key=REDACTED");
        assert_eq!(h["x-all-escaped"], "REDACTED");
        assert_eq!(h["x-token-escaped"], "REDACTED");
        assert_eq!(h["x-other"], "qs3cr3t", "a part of a secret is no secret");
        let secrets = p.secrets();
        assert!(
            secrets.contains(&"qs3cr3t%2fK%2b42".to_owned()),
            "{secrets:?}"
        );
        assert!(
            secrets.contains(&"qs3cr3t%2FK%2B42".to_owned()),
            "{secrets:?}"
        );
        assert!(
            secrets.contains(&"qs3cr3t/K%2B42".to_owned()),
            "as Python's quote writes it: {secrets:?}"
        );
        let distinct: std::collections::HashSet<&String> = secrets.iter().collect();
        assert_eq!(distinct.len(), secrets.len(), "each once: {secrets:?}");
        Ok(())
    }

    /// However many requests a connector starts at once, at most `MAX_OPEN_REQUESTS` hold a
    /// connection; the next waits for one to be read, and gives up at the deadline.
    #[tokio::test]
    async fn open_requests_are_bounded_per_invocation() {
        let p = HttpPolicy {
            deadline: Instant::now() + Duration::from_secs(2),
            ..HttpPolicy::deny_all()
        };
        let mut held = Vec::new();
        for _ in 0..MAX_OPEN_REQUESTS {
            held.push(p.open_request().await);
        }
        assert!(held.iter().all(Option::is_some), "a connection each");
        let waiting = tokio::time::timeout(Duration::from_millis(200), p.open_request()).await;
        assert!(waiting.is_err(), "a ninth request opened a connection");
        drop(held.pop());
        let again = p.open_request().await;
        assert!(again.is_some(), "a freed connection is taken");
        let t = Instant::now();
        let late = p.open_request().await;
        assert!(
            late.is_none(),
            "no connection frees: none past the deadline"
        );
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }

    #[test]
    fn credentials_are_added_escaped() -> TestResult {
        let p = policy();
        let (mut parts, ()) = http::Request::get("https://eutils.ncbi.nlm.nih.gov/e?db=gene")
            .body(())?
            .into_parts();
        p.add_credentials(&mut parts);
        assert_eq!(
            parts.uri.to_string(),
            "https://eutils.ncbi.nlm.nih.gov/e?db=gene&api_key=s3cr3t%26x"
        );
        assert_eq!(parts.headers["x-token"], "t");
        Ok(())
    }

    #[test]
    fn the_rate_limiter_spaces_slots() {
        let r = RateLimiter::default();
        let a = r.reserve("o", 4.0);
        let b = r.reserve("o", 4.0);
        let c = r.reserve("other", 4.0);
        assert!(b.duration_since(a) >= Duration::from_millis(249));
        assert!(c <= b);
        assert_eq!(
            retry_after(Some(&http::HeaderValue::from_static("2"))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(Some(&http::HeaderValue::from_static("999"))),
            Some(Duration::from_secs(60))
        );
        assert_eq!(retry_after(None), None);
    }
}
