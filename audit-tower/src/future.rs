//! [`ResponseFuture`]: waits for the inner service, then hands the request off.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use audit_core::adapter::InFlight;
use http::Response;
use pin_project_lite::pin_project;

pin_project! {
    /// The response future of [`AuditService`](crate::AuditService).
    ///
    /// Resolves to exactly what the inner service's future resolves to. When that is a response,
    /// the request's audit record is decided once and a due event is handed to the emitter (a
    /// non-blocking hand-off) before the response is returned. An inner error is passed through
    /// and counts as a failed request (status 500) for the outcome policy. A future dropped before
    /// it completed (the client went away) emits nothing.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight<http::request::Parts>>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, in_flight: InFlight<http::request::Parts>) -> Self {
        Self {
            inner,
            in_flight: Some(in_flight),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Some(in_flight) = this.in_flight.take() {
            in_flight.finish(result.as_ref().map_or(500, |response| response.status().as_u16()));
        }
        Poll::Ready(result)
    }
}
