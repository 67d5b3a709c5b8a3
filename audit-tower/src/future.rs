//! [`ResponseFuture`]: waits for the inner service, then decides and emits.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use audit_core::request::RequestAudit;
use http::Response;
use pin_project_lite::pin_project;

use crate::layer::Config;

/// What a call needs once the response head exists.
struct Pending {
    audit: RequestAudit,
    config: Arc<Config>,
}

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
        pending: Option<Pending>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, audit: RequestAudit, config: Arc<Config>) -> Self {
        Self {
            inner,
            pending: Some(Pending { audit, config }),
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
        if let Some(pending) = this.pending.take() {
            let status = match &result {
                Ok(response) => response.status().as_u16(),
                Err(_) => 500,
            };
            decide(pending, status);
        }
        Poll::Ready(result)
    }
}

fn decide(pending: Pending, status: u16) {
    let config = &pending.config;
    config.hand_off.finish(pending.audit, &config.policy, status);
}
