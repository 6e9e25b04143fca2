//! The dashboard's static assets, embedded in the binary and served under URLs that hold their
//! content's hash (`/ui/assets/htmx.min.22283ef6ab.js`), so a browser may keep them for a year and
//! never sees a stale one after an upgrade.
//!
//! `vendor/` holds third-party scripts exactly as their npm packages ship them, each with its
//! licence; `vendor/manifest.json` names each one's package, version, licence and SHA-256, and a
//! test holds the files to it.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// One embedded file: its name, its bytes and its media type.
struct Embedded {
    name: &'static str,
    bytes: &'static [u8],
    media_type: &'static str,
}

macro_rules! embed {
    ($($name:literal => $path:literal, $media:literal;)*) => {
        &[$(Embedded {
            name: $name,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/ui/", $path)),
            media_type: $media,
        }),*]
    };
}

/// Every file the dashboard serves.
static FILES: &[Embedded] = embed! {
    "lake.css" => "lake.css", "text/css; charset=utf-8";
    "lake.js" => "lake.js", "text/javascript; charset=utf-8";
    "graph.js" => "graph.js", "text/javascript; charset=utf-8";
    "favicon.svg" => "favicon.svg", "image/svg+xml";
    "htmx.min.js" => "vendor/htmx.min.js", "text/javascript; charset=utf-8";
    "cytoscape.min.js" => "vendor/cytoscape.min.js", "text/javascript; charset=utf-8";
    "dagre.min.js" => "vendor/dagre.min.js", "text/javascript; charset=utf-8";
    "cytoscape-dagre.js" => "vendor/cytoscape-dagre.js", "text/javascript; charset=utf-8";
};

/// The served file names (with their hash) by plain name, and the files by served name.
struct Table {
    urls: HashMap<&'static str, &'static str>,
    by_served: HashMap<&'static str, &'static Embedded>,
}

static TABLE: LazyLock<Table> = LazyLock::new(|| {
    let mut urls = HashMap::new();
    let mut by_served = HashMap::new();
    for f in FILES {
        let hash = hex::encode(&Sha256::digest(f.bytes)[..5]);
        let served = match f.name.rsplit_once('.') {
            Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
            None => format!("{}.{hash}", f.name),
        };
        // Leaked once per asset for the life of the process: the table is built once.
        let served: &'static str = Box::leak(served.into_boxed_str());
        let url: &'static str = Box::leak(format!("/ui/assets/{served}").into_boxed_str());
        urls.insert(f.name, url);
        by_served.insert(served, f);
    }
    Table { urls, by_served }
});

/// The URL of the embedded asset `name` (its hashed name under `/ui/assets/`); an unknown name
/// gives a URL that answers 404, so a typo in a template shows in the browser test.
pub fn url(name: &str) -> &'static str {
    TABLE
        .urls
        .get(name)
        .copied()
        .unwrap_or("/ui/assets/unknown")
}

/// Every served asset's URL, for tests.
pub fn all_urls() -> Vec<&'static str> {
    FILES.iter().map(|f| url(f.name)).collect()
}

/// `GET /ui/assets/{file}`: the asset, cached for a year (its URL changes with its content).
pub async fn serve(Path(file): Path<String>) -> Response {
    match TABLE.by_served.get(file.as_str()) {
        Some(f) => (
            [
                (header::CONTENT_TYPE, f.media_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            f.bytes,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CACHE_CONTROL, "no-store")],
            "no such asset",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_hashed_url_that_serves_it() {
        for f in FILES {
            let u = url(f.name);
            let served = u.trim_start_matches("/ui/assets/");
            assert!(
                TABLE
                    .by_served
                    .get(served)
                    .is_some_and(|g| g.bytes == f.bytes)
            );
            assert_ne!(served, f.name, "the served name holds the hash");
        }
        assert_eq!(url("nope.js"), "/ui/assets/unknown");
    }
}
