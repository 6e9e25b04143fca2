//! A connector's response body with the host's credentials taken out.
//!
//! The host adds credentials to a connector's requests after the plugin handed them over, so the
//! plugin never holds them; an upstream that echoes its request (a debugging endpoint, an error
//! page quoting the URL) would hand them back in the body, and the connector would store them in
//! raw. [`Redacting`] replaces every occurrence of each secret with `REDACTED` as the body
//! streams, holding back only the bytes a secret split across two frames could still begin
//! with.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame};

/// What replaces a secret.
const MARK: &[u8] = b"REDACTED";

/// A body with the `secrets` replaced; see the module documentation.
pub(crate) struct Redacting<B> {
    inner: B,
    secrets: Arc<[Vec<u8>]>,
    /// Bytes a secret split across frames can start with: the longest secret's length, less one.
    keep: usize,
    /// Bytes received but not yet passed on (a possible start of a secret).
    held: Vec<u8>,
    /// The inner body has ended (its trailers, if any, wait in `trailers`).
    ended: bool,
    trailers: Option<Frame<Bytes>>,
    /// Secrets replaced so far.
    found: usize,
    plugin: String,
}

impl<B> Redacting<B> {
    /// Wraps `inner`; `secrets` are the byte strings that must not come through (none empty).
    pub(crate) fn new(inner: B, secrets: Vec<Vec<u8>>, plugin: &str) -> Self {
        let secrets: Arc<[Vec<u8>]> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        Redacting {
            inner,
            keep: secrets
                .iter()
                .map(Vec::len)
                .max()
                .unwrap_or(1)
                .saturating_sub(1),
            secrets,
            held: Vec::new(),
            ended: false,
            trailers: None,
            found: 0,
            plugin: plugin.to_owned(),
        }
    }

    /// Passes on what of `held` no secret can still straddle (all of it at the end), with the
    /// secrets in it replaced.
    fn release(&mut self, all: bool) -> Bytes {
        let upto = if all {
            self.held.len()
        } else {
            self.held.len().saturating_sub(self.keep)
        };
        let mut out = Vec::with_capacity(upto);
        let (mut i, mut start) = (0, 0);
        while i < upto {
            match self.secrets.iter().find(|s| self.held[i..].starts_with(s)) {
                Some(s) => {
                    out.extend_from_slice(&self.held[start..i]);
                    out.extend_from_slice(MARK);
                    i += s.len();
                    start = i;
                    self.found += 1;
                    if self.found == 1 {
                        tracing::warn!(
                            plugin = %self.plugin,
                            "An upstream's answer repeated the host's credentials in its body; removed before the plugin saw them"
                        );
                    }
                }
                None => i += 1,
            }
        }
        out.extend_from_slice(&self.held[start..i]);
        self.held.drain(..i);
        Bytes::from(out)
    }
}

impl<B> Body for Redacting<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        loop {
            if this.ended {
                if !this.held.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(this.release(true)))));
                }
                return Poll::Ready(this.trailers.take().map(Ok));
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                None => this.ended = true,
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.held.extend_from_slice(&data);
                        let out = this.release(false);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(trailers) => {
                        this.trailers = Some(trailers);
                        this.ended = true;
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.held.is_empty() && self.trailers.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    async fn through(frames: &[&[u8]], secrets: &[&str]) -> (String, usize) {
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = frames
            .iter()
            .map(|f| Ok(Frame::data(Bytes::copy_from_slice(f))))
            .collect();
        let body = StreamBody::new(futures::stream::iter(frames));
        let mut r = Redacting::new(
            body,
            secrets.iter().map(|s| s.as_bytes().to_vec()).collect(),
            "test",
        );
        let mut out = Vec::new();
        while let Some(Ok(frame)) = r.frame().await {
            out.extend_from_slice(&frame.into_data().unwrap_or_default());
        }
        (String::from_utf8_lossy(&out).into_owned(), r.found)
    }

    #[tokio::test]
    async fn secrets_are_replaced_even_split_across_frames() {
        let echoed = "GET /e?db=gene&api_key=s3cr3t%26x HTTP/1.1\r\nx-token: tok-123\r\n";
        let want = "GET /e?db=gene&api_key=REDACTED HTTP/1.1\r\nx-token: REDACTED\r\n";
        let secrets = ["s3cr3t&x", "s3cr3t%26x", "tok-123"];
        // Whole, byte by byte, and cut at every point.
        assert_eq!(
            through(&[echoed.as_bytes()], &secrets).await,
            (want.into(), 2)
        );
        let bytes: Vec<&[u8]> = echoed.as_bytes().chunks(1).collect();
        assert_eq!(through(&bytes, &secrets).await, (want.into(), 2));
        for cut in 0..echoed.len() {
            let (a, b) = echoed.as_bytes().split_at(cut);
            assert_eq!(through(&[a, b], &secrets).await.0, want, "cut at {cut}");
        }
        // A body without them comes through unchanged, a secret at the very end too.
        let plain = ">seq1\nACGT\n".repeat(1000);
        assert_eq!(through(&[plain.as_bytes()], &secrets).await, (plain, 0));
        assert_eq!(
            through(&[b"ends with tok-", b"123"], &secrets).await,
            ("ends with REDACTED".into(), 1)
        );
    }
}
