//! The accept loop: one hyper HTTP/1 connection per socket, around the axum router, with
//! request recording, body limits, `X-Request-ID` and scripted faults.

use crate::fault::{FaultAction, FaultRule, FaultWhen};
use crate::model::RecordedRequest;
use crate::state::{Shared, lock};
use crate::util::{json_response, message, now, request_id};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_service::Service;

/// The error a service returns to make hyper close the connection without an answer.
#[derive(Debug)]
pub(crate) struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an audit-testkit fault")
    }
}

impl std::error::Error for DropConnection {}

fn is_internal(path: &str) -> bool {
    path == "/_testkit"
        || path.starts_with("/_testkit/")
        || path == "/portal"
        || crate::viewer::is_viewer_path(path)
}

/// Accepts connections until `stop` flips; then drops the listener and every connection.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    router: Router,
    mut stop: watch::Receiver<bool>,
    stopped: std::sync::mpsc::Sender<()>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let router = router.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle(shared.clone(), router.clone(), req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                // Reap finished connections so the set does not grow without bound.
                while conns.try_join_next().is_some() {}
            }
        }
    }
    drop(listener);
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    let _ = stopped.send(());
}

fn fault_response(
    status: u16,
    body: Option<serde_json::Value>,
    retry_after: Option<String>,
) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = match body {
        Some(b) => json_response(status, &b),
        None => message(status, status.canonical_reason().unwrap_or("Injected fault")),
    };
    if let Some(ra) = retry_after.and_then(|r| HeaderValue::from_str(&r).ok()) {
        res.headers_mut().insert(header::RETRY_AFTER, ra);
    }
    res
}

enum Applied {
    Respond(Response<Body>),
    Continue,
    Drop,
}

async fn apply(rule: &FaultRule) -> Applied {
    match &rule.action {
        FaultAction::Respond {
            status,
            body,
            retry_after,
        } => Applied::Respond(fault_response(*status, body.clone(), retry_after.clone())),
        FaultAction::Latency { ms } => {
            tokio::time::sleep(Duration::from_millis(*ms)).await;
            Applied::Continue
        }
        FaultAction::Drop => Applied::Drop,
        FaultAction::Hang { ms } => {
            match ms {
                Some(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
                None => std::future::pending::<()>().await,
            }
            Applied::Drop
        }
    }
}

/// Counts a request to the WorkOS endpoints while it is handled: until it is answered, or dropped
/// with its connection.
struct Handling(Arc<Shared>);

impl Handling {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.handling.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(shared.clone())
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.handling.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.handled.notify_waiters();
    }
}

async fn handle(
    shared: Arc<Shared>,
    mut router: Router,
    req: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    let rid = request_id();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    if let Err(res) =
        shared
            .guard
            .check_head(&path, &parts.headers, parts.uri.authority().map(|a| a.as_str()))
    {
        return Ok(with_request_id(res, &rid));
    }
    let internal = is_internal(&path);
    let _handling = (!internal).then(|| Handling::new(&shared));
    let bytes = match Limited::new(body, shared.config.max_body_bytes).collect().await {
        Ok(c) => Some(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => None,
        Err(_) => return Err(DropConnection),
    };
    if let Some(b) = &bytes
        && let Err(res) = shared
            .guard
            .check_change(&parts.method, &path, &parts.headers, b.len())
    {
        return Ok(with_request_id(res, &rid));
    }
    let record = !internal && shared.config.max_recorded_requests > 0;
    let seq = record.then(|| {
        shared.record_request(RecordedRequest {
            seq: 0,
            method: parts.method.as_str().to_owned(),
            path: path.clone(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: bytes
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
            status: 0,
            request_id: rid.clone(),
            received_at: now(),
        })
    });
    let fault = if internal {
        None
    } else {
        let target =
            crate::fault::FaultTarget::new(parts.method.as_str(), &path, parts.uri.query(), bytes.as_deref());
        crate::fault::pick(&mut lock(&shared.faults), &target)
    };
    let mut res = None;
    if let Some(rule) = fault.as_ref().filter(|f| f.when == FaultWhen::Before) {
        match apply(rule).await {
            Applied::Respond(r) => res = Some(r),
            Applied::Continue => {}
            Applied::Drop => return Err(DropConnection),
        }
    }
    let mut res = match (res, bytes) {
        (Some(r), _) => r,
        (None, None) => message(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Request body exceeds the limit of {} bytes.",
                shared.config.max_body_bytes
            ),
        ),
        (None, Some(b)) => {
            let req = Request::from_parts(parts, Body::from(b));
            let r: Result<Response<Body>, Infallible> = router.call(req).await;
            match r {
                Ok(r) => r,
                Err(never) => match never {},
            }
        }
    };
    if let Some(rule) = fault.as_ref().filter(|f| f.when == FaultWhen::After) {
        match apply(rule).await {
            Applied::Respond(r) => res = r,
            Applied::Continue => {}
            Applied::Drop => return Err(DropConnection),
        }
    }
    let res = with_request_id(res, &rid);
    if let Some(seq) = seq {
        shared.set_request_status(seq, res.status().as_u16());
    }
    Ok(res)
}

fn with_request_id(mut res: Response<Body>, rid: &str) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(rid) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}
