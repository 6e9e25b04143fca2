//! The API reference at `/docs`: the OpenAPI document rendered as one HTML page by the server.
//!
//! The page is built from the same document `/openapi.json` serves, so it cannot drift from the
//! routes. It needs no script and loads nothing but its own stylesheet (embedded in the binary and
//! served at `/docs/docs.css`), so it renders on a machine without internet and under a strict
//! Content-Security-Policy; a reference that loads a viewer from a CDN is a blank page in a lab
//! behind a firewall.

use std::fmt::Write;

use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;

/// The stylesheet of the reference page.
const CSS: &str = include_str!("docs.css");

/// Nothing but the page's own stylesheet may load; no script runs at all.
pub(super) const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /docs`: the reference page.
pub(super) async fn page() -> Response {
    // The document is fixed at build time, so the page is rendered once per process.
    static PAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let html = PAGE.get_or_init(|| {
        let doc = serde_json::to_value(<super::ApiDoc as utoipa::OpenApi>::openapi())
            .unwrap_or(Value::Null);
        render(&doc)
    });
    let mut resp = Html(html.as_str()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    resp
}

/// `GET /docs/docs.css`.
pub(super) async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

/// Escapes text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The anchor of an operation: `get-catalog-id`.
fn anchor(method: &str, path: &str) -> String {
    let mut a = method.to_owned();
    for c in path.chars() {
        if c.is_ascii_alphanumeric() {
            a.push(c.to_ascii_lowercase());
        } else if !a.ends_with('-') {
            a.push('-');
        }
    }
    a.trim_end_matches('-').to_owned()
}

/// A schema's type in a few words, with component references linked to their section.
fn type_of(schema: &Value) -> String {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("<a href=\"#schema-{0}\">{0}</a>", esc(name));
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(list) = schema.get(key).and_then(Value::as_array) {
            let parts: Vec<String> = list
                .iter()
                .filter(|s| s.get("type").and_then(Value::as_str) != Some("null"))
                .map(type_of)
                .collect();
            let joined = parts.join(if key == "allOf" { " &amp; " } else { " | " });
            let nullable = list
                .iter()
                .any(|s| s.get("type").and_then(Value::as_str) == Some("null"));
            return if nullable {
                format!("{joined} (nullable)")
            } else {
                joined
            };
        }
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" | "),
        _ => String::new(),
    };
    let mut out = match ty.as_str() {
        "array" => format!(
            "array of {}",
            schema.get("items").map_or_else(|| "any".into(), type_of)
        ),
        "" if schema.get("properties").is_some() => "object".into(),
        "" => "any".into(),
        t => esc(t),
    };
    if let Some(f) = schema.get("format").and_then(Value::as_str) {
        let _ = write!(out, " ({})", esc(f));
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let names: Vec<String> = values
            .iter()
            .map(|v| format!("<code>{}</code>", esc(&v.to_string())))
            .collect();
        let _ = write!(out, ": one of {}", names.join(", "));
    }
    out
}

/// A table of an object schema's properties, or nothing when it has none.
fn properties(schema: &Value, out: &mut String) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    out.push_str(
        "<table><thead><tr><th>field</th><th>type</th><th>description</th></tr></thead><tbody>",
    );
    for (name, p) in props {
        let _ = write!(
            out,
            "<tr><td><code>{}</code>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            if required.contains(&name.as_str()) {
                " <span class=\"req\">required</span>"
            } else {
                ""
            },
            type_of(p),
            esc(str_of(p, "description"))
        );
    }
    out.push_str("</tbody></table>");
}

fn operation(method: &str, path: &str, op: &Value, out: &mut String) {
    let id = anchor(method, path);
    let _ = write!(
        out,
        "<section class=\"op\" id=\"{id}\"><h3><a href=\"#{id}\"><span class=\"method {m}\">{M}</span> <code>{p}</code></a></h3>",
        m = esc(method),
        M = esc(&method.to_ascii_uppercase()),
        p = esc(path)
    );
    let summary = str_of(op, "summary");
    if !summary.is_empty() {
        let _ = write!(out, "<p class=\"summary\">{}</p>", esc(summary));
    }
    let description = str_of(op, "description");
    if !description.is_empty() {
        let _ = write!(out, "<p>{}</p>", esc(description));
    }
    if let Some(params) = op.get("parameters").and_then(Value::as_array)
        && !params.is_empty()
    {
        out.push_str("<h4>Parameters</h4><table><thead><tr><th>name</th><th>in</th><th>type</th><th>description</th></tr></thead><tbody>");
        for p in params {
            let _ = write!(
                out,
                "<tr><td><code>{}</code>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(str_of(p, "name")),
                if p.get("required").and_then(Value::as_bool) == Some(true) {
                    " <span class=\"req\">required</span>"
                } else {
                    ""
                },
                esc(str_of(p, "in")),
                p.get("schema").map_or_else(|| "any".into(), type_of),
                esc(str_of(p, "description"))
            );
        }
        out.push_str("</tbody></table>");
    }
    if let Some(content) = op
        .get("requestBody")
        .and_then(|b| b.get("content"))
        .and_then(Value::as_object)
    {
        out.push_str("<h4>Request body</h4><ul>");
        for (media, c) in content {
            let _ = write!(
                out,
                "<li><code>{}</code>: {}</li>",
                esc(media),
                c.get("schema").map_or_else(|| "any".into(), type_of)
            );
        }
        out.push_str("</ul>");
    }
    if let Some(responses) = op.get("responses").and_then(Value::as_object) {
        out.push_str("<h4>Responses</h4><table><thead><tr><th>status</th><th>body</th><th>description</th></tr></thead><tbody>");
        for (status, r) in responses {
            let body = r
                .get("content")
                .and_then(Value::as_object)
                .and_then(|c| c.values().next())
                .and_then(|c| c.get("schema"))
                .map(type_of)
                .unwrap_or_default();
            let _ = write!(
                out,
                "<tr><td class=\"status s{}\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(&status[..1.min(status.len())]),
                esc(status),
                body,
                esc(str_of(r, "description"))
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
}

/// One operation: method, path, and its OpenAPI object.
type Route<'a> = (&'a str, &'a str, &'a Value);

/// The whole page.
fn render(doc: &Value) -> String {
    let info = doc.get("info").cloned().unwrap_or(Value::Null);
    let title = str_of(&info, "title");
    let mut out = String::with_capacity(256 << 10);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}: API reference</title><link rel=\"stylesheet\" href=\"/docs/docs.css\"></head><body>\
         <header><h1>{t} <small>API reference</small></h1><p>{d}</p>\
         <p>Version {v}. The same document as JSON: <a href=\"/openapi.json\">/openapi.json</a> \
         (for code generators and API clients).</p></header><div class=\"layout\"><nav aria-label=\"Routes\">",
        t = esc(title),
        d = esc(str_of(&info, "description")),
        v = esc(str_of(&info, "version")),
    );
    let empty = serde_json::Map::new();
    let paths = doc
        .get("paths")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    // Group routes by their first path segment: catalog, layers, provenance, files, ...
    let mut groups: Vec<(String, Vec<Route<'_>>)> = Vec::new();
    for (path, item) in paths {
        let group = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("")
            .to_owned();
        let Some(ops) = item.as_object() else {
            continue;
        };
        for (method, op) in ops {
            if !["get", "put", "post", "delete", "patch", "head"].contains(&method.as_str()) {
                continue;
            }
            match groups.iter_mut().find(|(g, _)| *g == group) {
                Some((_, list)) => list.push((method, path, op)),
                None => groups.push((group.clone(), vec![(method, path, op)])),
            }
        }
    }
    // The lab's nouns first, the service routes last; anything new goes before those.
    const ORDER: [&str; 11] = [
        "catalog",
        "files",
        "layers",
        "provenance",
        "pipelines",
        "plugins",
        "collections",
        "backup",
        "health",
        "metrics",
        "openapi.json",
    ];
    groups.sort_by_key(|(g, _)| ORDER.iter().position(|o| o == g).unwrap_or(ORDER.len() - 3));
    for (group, ops) in &groups {
        let _ = write!(out, "<h2>{}</h2><ul>", esc(group));
        for (method, path, _) in ops {
            let _ = write!(
                out,
                "<li><a href=\"#{}\"><span class=\"method {m}\">{M}</span> {p}</a></li>",
                anchor(method, path),
                m = esc(method),
                M = esc(&method.to_ascii_uppercase()),
                p = esc(path)
            );
        }
        out.push_str("</ul>");
    }
    out.push_str(
        "<h2>schemas</h2><ul><li><a href=\"#schemas\">every body shape</a></li></ul></nav><main>",
    );
    for (group, ops) in &groups {
        let _ = write!(out, "<h2 id=\"group-{0}\">/{0}</h2>", esc(group));
        for (method, path, op) in ops {
            operation(method, path, op, &mut out);
        }
    }
    out.push_str("<h2 id=\"schemas\">Schemas</h2>");
    if let Some(schemas) = doc
        .get("components")
        .and_then(|c| c.get("schemas"))
        .and_then(Value::as_object)
    {
        for (name, schema) in schemas {
            let _ = write!(
                out,
                "<section class=\"schema\" id=\"schema-{0}\"><h3>{0}</h3>",
                esc(name)
            );
            let description = str_of(schema, "description");
            if !description.is_empty() {
                let _ = write!(out, "<p>{}</p>", esc(description));
            }
            if schema.get("properties").is_some() {
                properties(schema, &mut out);
            } else {
                let _ = write!(out, "<p>{}</p>", type_of(schema));
            }
            out.push_str("</section>");
        }
    }
    out.push_str("</main></div></body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_every_route_and_escapes_text() {
        let doc = serde_json::to_value(<super::super::ApiDoc as utoipa::OpenApi>::openapi())
            .unwrap_or(Value::Null);
        let html = render(&doc);
        let paths = doc["paths"].as_object().map(|p| p.len()).unwrap_or(0);
        assert!(paths > 20, "the document lists {paths} paths");
        for path in doc["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(p, _)| p)
        {
            assert!(
                html.contains(&format!("<code>{}</code>", esc(path))),
                "{path} missing"
            );
        }
        assert!(html.contains("id=\"schema-Dataset\""));
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(anchor("get", "/catalog/{id}/files"), "get-catalog-id-files");
    }
}
