//! `lake upload`, `lake merge` and `lake save-merged`: clients of a running lake's `/files` routes.
//! They talk HTTP rather than opening the catalog because merge results live in the server's
//! cache, and because a lab member usually uploads from another machine than the server's.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use futures::StreamExt;

/// A running lake: its base URL and the bearer token to present (`--token` / `LAKE_TOKEN`).
#[derive(Debug, Clone)]
pub(super) struct Server {
    base: String,
    token: Option<String>,
}

impl Server {
    /// `--server`, else the configured listen address, and the token, if any.
    pub(super) fn new(server: Option<String>, listen: &str, token: Option<String>) -> Self {
        Self {
            base: base_url(server, listen),
            token: token.filter(|t| !t.trim().is_empty()),
        }
    }

    fn client(&self) -> Result<reqwest::Client> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = &self.token {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.trim()))
                .context("the token holds characters a header cannot")?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .default_headers(headers)
            .build()
            .context("building the HTTP client")
    }
}

/// The server's base URL: `--server`, else the configured listen address (a wildcard address is
/// reached on loopback).
fn base_url(server: Option<String>, listen: &str) -> String {
    let url = server.unwrap_or_else(|| {
        let addr = listen
            .replace("0.0.0.0:", "127.0.0.1:")
            .replace("[::]:", "[::1]:");
        format!("http://{addr}")
    });
    url.trim_end_matches('/').to_owned()
}

/// The JSON body of a response, or an error carrying the server's own message.
async fn answer(resp: reqwest::Response, what: &str) -> Result<serde_json::Value> {
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .with_context(|| format!("{what}: reading the answer"))?;
    let v: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
    if !status.is_success() {
        let msg = v["error"]["message"]
            .as_str()
            .map_or_else(|| v.to_string(), str::to_owned);
        bail!("{what}: {status}: {msg}");
    }
    Ok(v)
}

fn connect_error(base: &str, e: reqwest::Error) -> anyhow::Error {
    if e.is_connect() {
        anyhow::anyhow!(
            "no lake answers at {base} (start one with `lake serve`, or pass --server URL): {e}"
        )
    } else {
        anyhow::anyhow!("{base}: {e}")
    }
}

/// Uploads each file as a streamed raw body, with a progress bar per file; prints one JSON line per
/// file. Fails (after trying every file) when any upload failed.
pub(super) async fn upload(server: &Server, files: &[PathBuf]) -> Result<bool> {
    let base = server.base.as_str();
    let client = server.client()?;
    let bars = indicatif::MultiProgress::new();
    let style = indicatif::ProgressStyle::with_template(
        "{prefix:>24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    )
    .context("progress bar template")?
    .progress_chars("=> ");
    let mut ok = true;
    for path in files {
        match upload_one(&client, base, path, &bars, &style).await {
            Ok(v) => println!("{v}"),
            Err(e) => {
                ok = false;
                eprintln!("{}: {e:#}", path.display());
            }
        }
    }
    Ok(ok)
}

async fn upload_one(
    client: &reqwest::Client,
    base: &str,
    path: &std::path::Path,
    bars: &indicatif::MultiProgress,
    style: &indicatif::ProgressStyle,
) -> Result<serde_json::Value> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let size = file
        .metadata()
        .await
        .context("reading the file's size")?
        .len();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("the file has no usable name")?
        .to_owned();
    let bar = bars.add(indicatif::ProgressBar::new(size));
    bar.set_style(style.clone());
    bar.set_prefix(name.clone());
    let counter = bar.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).inspect(move |c| {
        if let Ok(c) = c {
            counter.inc(c.len() as u64);
        }
    });
    let url =
        reqwest::Url::parse_with_params(&format!("{base}/files/upload"), [("filename", &name)])
            .with_context(|| format!("{base} is not a URL"))?;
    let resp = client
        .post(url)
        .header(reqwest::header::CONTENT_LENGTH, size)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .map_err(|e| connect_error(base, e));
    bar.finish_and_clear();
    let v = answer(resp?, "upload").await?;
    Ok(serde_json::json!({
        "file": path.display().to_string(),
        "file_id": v["file_id"],
        "duplicate": v["duplicate"].as_bool().unwrap_or(false),
        "version": v["version"],
        "format": v["format"],
        "rows": v["rows"],
        "columns": v["columns"],
        "table_dataset": v["dataset_ids"]["table"],
        "parse_error": v["parse_error"],
    }))
}

/// What `lake merge` asks for.
#[derive(Debug, clap::Args)]
pub(super) struct MergeArgs {
    /// Left file id.
    file_id_1: String,
    /// Right file id.
    file_id_2: String,
    /// Key column(s), comma-separated.
    #[arg(long)]
    on: String,
    /// inner, left, right or outer.
    #[arg(long, default_value = "inner")]
    how: String,
    /// Suffixes for clashing column names, comma-separated (default _x,_y).
    #[arg(long)]
    suffixes: Option<String>,
    /// Rows to preview.
    #[arg(long, default_value_t = 10)]
    preview: usize,
    /// Let a null key match a null key (by default nulls match nothing).
    #[arg(long)]
    nulls_equal: bool,
}

pub(super) async fn merge(server: &Server, a: MergeArgs) -> Result<serde_json::Value> {
    let base = server.base.as_str();
    let mut query = vec![
        ("file_id_1", a.file_id_1),
        ("file_id_2", a.file_id_2),
        ("on", a.on),
        ("how", a.how),
        ("preview", a.preview.to_string()),
        ("nulls_equal", a.nulls_equal.to_string()),
    ];
    if let Some(s) = a.suffixes {
        query.push(("suffixes", s));
    }
    let url = reqwest::Url::parse_with_params(&format!("{base}/files/merge"), &query)
        .with_context(|| format!("{base} is not a URL"))?;
    let resp = server
        .client()?
        .get(url)
        .send()
        .await
        .map_err(|e| connect_error(base, e))?;
    answer(resp, "merge").await
}

pub(super) async fn save_merged(
    server: &Server,
    cache_key: &str,
    name: &str,
    format: &str,
) -> Result<serde_json::Value> {
    let base = server.base.as_str();
    let resp = server
        .client()?
        .post(format!("{base}/files/save_merged"))
        .json(&serde_json::json!({"cache_key": cache_key, "name": name, "format": format}))
        .send()
        .await
        .map_err(|e| connect_error(base, e))?;
    answer(resp, "save_merged").await
}
