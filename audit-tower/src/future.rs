//! [`ResponseFuture`]: waits for the inner service, then decides and emits.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use audit_core::emitter::EmitError;
use audit_core::request::{Decision, RequestAudit, ResponseInfo, SkipReason};
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
    match pending.audit.finish(&config.policy, &ResponseInfo::new(status)) {
        Decision::Skip(reason) => config.counters.record(reason),
        Decision::Emit { organization, event } => {
            let action = event.action.clone();
            match config.emitter.try_emit(organization, event) {
                Ok(_) => {}
                Err(EmitError::Invalid(errors)) => {
                    config.counters.record(SkipReason::Invalid);
                    if let Some(unlogged) = config.warnings.failure_log_slot() {
                        tracing::warn!(
                            action = %action,
                            errors = %errors,
                            not_logged_since_last = unlogged,
                            "audit: event not emitted, it breaks a WorkOS rule",
                        );
                    }
                }
                Err(error) => {
                    config.counters.record_emit_failure();
                    if let Some(unlogged) = config.warnings.failure_log_slot() {
                        tracing::warn!(
                            action = %action,
                            error = %error,
                            not_logged_since_last = unlogged,
                            "audit: the emitter refused an event",
                        );
                    }
                }
            }
        }
        _ => {}
    }
}
