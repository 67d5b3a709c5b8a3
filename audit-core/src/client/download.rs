//! Streaming an export's CSV.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use url::Url;

use super::{Client, Request, redact_url};
use crate::error::Error;

/// The timeout of an export download (the URL itself expires after 10 minutes).
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// The body of a download, chunk by chunk, as it arrives.
///
/// A [`Stream`] of `Result<Bytes, Error>`; [`ByteStream::collect_bytes`] reads it whole.
#[must_use = "a ByteStream does nothing unless polled"]
pub struct ByteStream {
    inner: Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send>>,
}

impl fmt::Debug for ByteStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteStream").finish_non_exhaustive()
    }
}

impl Stream for ByteStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl ByteStream {
    /// Reads the rest of the body into memory.
    pub async fn collect_bytes(self) -> Result<Vec<u8>, Error> {
        self.try_fold(Vec::new(), |mut all, chunk| async move {
            all.extend_from_slice(&chunk);
            Ok(all)
        })
        .await
    }
}

impl Client {
    /// Downloads an export's CSV from its pre-signed `url`
    /// ([`AuditLogExport::url`](super::AuditLogExport::url)) as a stream of bytes.
    ///
    /// The request is retried like any GET until the response headers arrive; a failure while
    /// the body streams ends the stream with that error. The whole download must finish within
    /// [`DOWNLOAD_TIMEOUT`].
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] (`url`) for a URL that is not `https` (or `http` to loopback);
    /// [`Error::Api`] for a non-2xx answer (403 once the URL has expired: get the export again).
    ///
    /// # Security
    /// The API key is not sent: the URL carries its own authorization, and the storage host is not
    /// WorkOS's API. Errors show the URL without its query, where the signature is.
    pub async fn download_export_csv(&self, url: &str) -> Result<ByteStream, Error> {
        let url = Url::parse(url).map_err(|e| Error::InvalidParameter {
            field: "url",
            message: format!("not a valid URL: {e}"),
        })?;
        super::builder::check_scheme(&url, self.inner.allow_insecure_http).map_err(|message| {
            Error::InvalidParameter {
                field: "url",
                message,
            }
        })?;
        let request = Request {
            method: reqwest::Method::GET,
            url,
            body: None,
            idempotency_key: None,
            authorized: false,
            timeout: Some(DOWNLOAD_TIMEOUT.max(self.inner.timeout)),
        };
        let response = self
            .retrying(&request.url, || async {
                let response = self.send(&request).await?;
                self.check_status(&request, response).await
            })
            .await?;
        let shown = redact_url(&request.url);
        let timeout = request.timeout.unwrap_or(self.inner.timeout);
        let stream = response.bytes_stream().map(move |chunk| {
            chunk.map_err(|e| {
                if e.is_timeout() {
                    Error::Timeout {
                        url: shown.clone(),
                        timeout,
                    }
                } else {
                    Error::Transport {
                        url: shown.clone(),
                        source: Box::new(super::TransportCause::from(&e)),
                    }
                }
            })
        });
        Ok(ByteStream {
            inner: Box::pin(stream),
        })
    }
}
