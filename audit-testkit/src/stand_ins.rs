//! Stand-ins for log-stream destinations, for tests (feature `stand-ins`): an HTTP collector, a
//! Splunk HTTP Event Collector and the Datadog API, each a small server on `127.0.0.1` that
//! records what it receives and answers as the real service documents.
//!
//! Answers modelled (sources: Splunk's "HTTP Event Collector error codes" table; Datadog's
//! `GET /api/v1/validate` and `POST /api/v2/logs` reference):
//!
//! | stand-in | request | answer |
//! |---|---|---|
//! | collector | any | the configured status, `{}` (a 3xx also gets `Location: /elsewhere`) |
//! | hanging | any | nothing, ever |
//! | Splunk | `GET /services/collector/health` | 200 `{"text":"HEC is healthy","code":17}` |
//! | Splunk | `POST /services/collector[/event]`, no `Authorization` | 401 `{"text":"Token is required","code":2}` |
//! | Splunk | `Authorization` not `Splunk <token>` | 401 `{"text":"Invalid authorization","code":3}` |
//! | Splunk | unknown token | 403 `{"text":"Invalid token","code":4}` |
//! | Splunk | disabled token | 403 `{"text":"Token disabled","code":1}` |
//! | Splunk | empty body | 400 `{"text":"No data","code":5}` |
//! | Splunk | not JSON | 400 `{"text":"Invalid data format","code":6}` |
//! | Splunk | JSON without `event` | 400 `{"text":"Event field is required","code":12}` |
//! | Splunk | good | 200 `{"text":"Success","code":0}` ([`StandIn::splunk_answering`]: the documented answer of another code, e.g. 400 `{"text":"Invalid data format","code":6}`) |
//! | Datadog | `GET /{site}/api/v1/validate`, key of that site | 200 `{"valid":true}` |
//! | Datadog | `GET /{site}/api/v1/validate`, other key | 403 `{"errors":["Forbidden"]}` |
//! | Datadog | `POST /{site}/api/v2/logs`, key of that site allowed to write logs | 202 `{}` |
//! | Datadog | `POST /{site}/api/v2/logs`, unknown key or one without logs write | 403 `{"errors":[{"status":"403","title":"Forbidden","detail":"Forbidden"}]}` |
//! | Datadog | `POST /{site}/api/v2/logs`, not JSON | 400 `{"errors":[{"status":"400","title":"Bad Request","detail":"Malformed payload"}]}` |
//!
//! UNCONFIRMED: the exact text of Datadog's 403 and 400 bodies, and how a key "without Logs
//! Write" shows (modelled as: valid for `validate`, 403 on the intake). A Splunk instance whose
//! HEC is disabled does not listen on the HEC port at all: use [`StandIn::refusing_url`].
//! The Datadog stand-in serves every site under a path prefix (`/us1`, `/eu1`, ...: see
//! [`StandIn::datadog_site_url`]) so that a test can show a key that is valid on another site.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri, header};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

use crate::state::lock;

/// One request a stand-in received.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Received {
    /// The method, e.g. `POST`.
    pub method: String,
    /// The path, e.g. `/services/collector/event`.
    pub path: String,
    /// The headers (names lower-case).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The status the stand-in answered.
    pub status: u16,
}

impl Received {
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A key the Datadog stand-in knows.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DatadogKey {
    /// The site it belongs to (`US1`, `EU1`, ...).
    pub site: crate::streams::DatadogSite,
    /// The API key.
    pub key: String,
    /// Whether it may send logs.
    pub logs_write: bool,
}

impl DatadogKey {
    /// A key of `site` that may send logs.
    pub fn new(site: crate::streams::DatadogSite, key: impl Into<String>) -> DatadogKey {
        DatadogKey {
            site,
            key: key.into(),
            logs_write: true,
        }
    }

    /// The same key without permission to send logs.
    pub fn without_logs_write(mut self) -> DatadogKey {
        self.logs_write = false;
        self
    }
}

enum Behaviour {
    Collector {
        status: u16,
    },
    Hang,
    Splunk {
        token: String,
        disabled: bool,
        /// The code a well-formed event gets (0 unless set).
        event_code: Option<u16>,
    },
    Datadog {
        keys: Vec<DatadogKey>,
    },
}

struct Inner {
    behaviour: Mutex<Behaviour>,
    received: Mutex<Vec<Received>>,
    arrived: Notify,
}

/// A running stand-in; dropping it stops the server.
pub struct StandIn {
    inner: Arc<Inner>,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIn")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn json_answer(status: u16, body: Value) -> (u16, Value) {
    (status, body)
}

/// HEC's documented answer for a code: (HTTP status, text).
fn hec(code: u16) -> (u16, &'static str) {
    match code {
        0 => (200, "Success"),
        1 => (403, "Token disabled"),
        2 => (401, "Token is required"),
        3 => (401, "Invalid authorization"),
        4 => (403, "Invalid token"),
        5 => (400, "No data"),
        6 => (400, "Invalid data format"),
        7 => (400, "Incorrect index"),
        8 => (500, "Internal server error"),
        9 => (503, "Server is busy"),
        12 => (400, "Event field is required"),
        13 => (400, "Event field cannot be blank"),
        17 => (200, "HEC is healthy"),
        _ => (503, "HEC is unhealthy, queues are full"),
    }
}

fn splunk_code(code: u16) -> (u16, Value) {
    let (status, text) = hec(code);
    splunk_answer(code, text, status)
}

fn splunk_answer(code: u16, text: &str, status: u16) -> (u16, Value) {
    json_answer(status, json!({"text": text, "code": code}))
}

fn answer(b: &Behaviour, method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) -> (u16, Value) {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    match b {
        Behaviour::Collector { status } => (*status, json!({})),
        // Answered by the caller, which never responds.
        Behaviour::Hang => (0, Value::Null),
        Behaviour::Splunk {
            token,
            disabled,
            event_code,
        } => {
            if path == "/services/collector/health" || path == "/services/collector/health/1.0" {
                return splunk_answer(17, "HEC is healthy", 200);
            }
            if !path.starts_with("/services/collector") {
                return (
                    404,
                    json!({"text": "The requested URL was not found on this server.", "code": 404}),
                );
            }
            if method != Method::POST {
                return (405, json!({"text": "Method Not Allowed", "code": 405}));
            }
            let Some(auth) = get("authorization") else {
                return splunk_answer(2, "Token is required", 401);
            };
            let Some(given) = auth.strip_prefix("Splunk ") else {
                return splunk_answer(3, "Invalid authorization", 401);
            };
            if given.trim() != token {
                return splunk_answer(4, "Invalid token", 403);
            }
            if *disabled {
                return splunk_answer(1, "Token disabled", 403);
            }
            if body.is_empty() {
                return splunk_answer(5, "No data", 400);
            }
            match serde_json::from_slice::<Value>(body) {
                Err(_) => splunk_answer(6, "Invalid data format", 400),
                Ok(v) if v.get("event").is_none() => splunk_answer(12, "Event field is required", 400),
                Ok(_) => splunk_code(event_code.unwrap_or(0)),
            }
        }
        Behaviour::Datadog { keys } => {
            let forbidden_v2 = || {
                json_answer(
                    403,
                    json!({"errors": [{"status": "403", "title": "Forbidden", "detail": "Forbidden"}]}),
                )
            };
            let Some((site, rest)) = path
                .strip_prefix('/')
                .and_then(|p| p.split_once('/'))
                .and_then(|(s, r)| crate::streams::DatadogSite::parse(s).map(|s| (s, format!("/{r}"))))
            else {
                return (404, json!({"errors": ["Not Found"]}));
            };
            let key = get("dd-api-key").unwrap_or("");
            let known = keys.iter().find(|k| k.site == site && k.key == key);
            match (method, rest.as_str()) {
                (&Method::GET, "/api/v1/validate") => match known {
                    Some(_) => json_answer(200, json!({"valid": true})),
                    None => json_answer(403, json!({"errors": ["Forbidden"]})),
                },
                (&Method::POST, "/api/v2/logs") => match known {
                    Some(k) if k.logs_write => {
                        if serde_json::from_slice::<Value>(body).is_err() {
                            json_answer(
                                400,
                                json!({"errors": [{"status": "400", "title": "Bad Request", "detail": "Malformed payload"}]}),
                            )
                        } else {
                            json_answer(202, json!({}))
                        }
                    }
                    _ => forbidden_v2(),
                },
                _ => (404, json!({"errors": ["Not Found"]})),
            }
        }
    }
}

impl StandIn {
    fn start(behaviour: Behaviour) -> StandIn {
        let inner = Arc::new(Inner {
            behaviour: Mutex::new(behaviour),
            received: Mutex::new(Vec::new()),
            arrived: Notify::new(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("stand-in: binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("stand-in: local address");
        listener.set_nonblocking(true).expect("stand-in: non-blocking");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let shared = inner.clone();
        let thread = std::thread::Builder::new()
            .name("audit-testkit-stand-in".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("stand-in runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("stand-in listener");
                    let app = axum::Router::new().fallback(
                        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                            let shared = shared.clone();
                            async move {
                                let hang = matches!(*lock(&shared.behaviour), Behaviour::Hang);
                                if hang {
                                    lock(&shared.received).push(Received {
                                        method: method.to_string(),
                                        path: uri.path().to_owned(),
                                        headers: Vec::new(),
                                        body: body.to_vec(),
                                        status: 0,
                                    });
                                    shared.arrived.notify_waiters();
                                    std::future::pending::<()>().await;
                                }
                                let (status, value) =
                                    answer(&lock(&shared.behaviour), &method, uri.path(), &headers, &body);
                                lock(&shared.received).push(Received {
                                    method: method.to_string(),
                                    path: uri.path().to_owned(),
                                    headers: headers
                                        .iter()
                                        .map(|(k, v)| {
                                            (
                                                k.as_str().to_owned(),
                                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                            )
                                        })
                                        .collect(),
                                    body: body.to_vec(),
                                    status,
                                });
                                shared.arrived.notify_waiters();
                                let mut res = Response::new(Body::from(value.to_string()));
                                *res.status_mut() =
                                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                                res.headers_mut().insert(
                                    header::CONTENT_TYPE,
                                    header::HeaderValue::from_static("application/json"),
                                );
                                if (300..400).contains(&status) {
                                    res.headers_mut().insert(
                                        header::LOCATION,
                                        header::HeaderValue::from_static("/elsewhere"),
                                    );
                                }
                                res
                            }
                        },
                    );
                    // Not a graceful shutdown: a hanging answer must not keep the stand-in alive.
                    // Dropping the runtime below cancels the open connections.
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = stop_rx => {}
                    }
                });
            })
            .expect("stand-in thread");
        StandIn {
            inner,
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// An HTTP collector answering every request with `status` (and `{}`).
    pub fn collector(status: u16) -> StandIn {
        StandIn::start(Behaviour::Collector { status })
    }

    /// A collector that accepts connections and reads requests but never answers (a destination
    /// stuck behind a firewall that drops the answers, or overloaded). Requests are recorded
    /// with status 0 and without headers.
    pub fn hanging() -> StandIn {
        StandIn::start(Behaviour::Hang)
    }

    /// A Splunk HEC that accepts `token`.
    pub fn splunk(token: impl Into<String>) -> StandIn {
        StandIn::start(Behaviour::Splunk {
            token: token.into(),
            disabled: false,
            event_code: None,
        })
    }

    /// A Splunk HEC where `token` exists but is disabled.
    pub fn splunk_disabled_token(token: impl Into<String>) -> StandIn {
        StandIn::start(Behaviour::Splunk {
            token: token.into(),
            disabled: true,
            event_code: None,
        })
    }

    /// A Splunk HEC that accepts `token` but answers every well-formed event with HEC's
    /// documented answer for `code` (say 6, "Invalid data format", when a token only takes raw
    /// data, or 7, "Incorrect index").
    pub fn splunk_answering(token: impl Into<String>, code: u16) -> StandIn {
        StandIn::start(Behaviour::Splunk {
            token: token.into(),
            disabled: false,
            event_code: Some(code),
        })
    }

    /// The Datadog API of every site, knowing these keys.
    pub fn datadog(keys: Vec<DatadogKey>) -> StandIn {
        StandIn::start(Behaviour::Datadog { keys })
    }

    /// Makes a collector answer `status` from now on (no effect on the others).
    pub fn set_status(&self, status: u16) {
        if let Behaviour::Collector { status: s } = &mut *lock(&self.inner.behaviour) {
            *s = status;
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The base URL of one Datadog site on the Datadog stand-in, e.g. `http://127.0.0.1:PORT/eu1`.
    pub fn datadog_site_url(&self, site: crate::streams::DatadogSite) -> String {
        format!("{}/{}", self.url(), site.name().to_ascii_lowercase())
    }

    /// A loopback URL on which nothing listens: connections are refused.
    pub fn refusing_url() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let port = l.local_addr().map(|a| a.port()).unwrap_or(9);
        drop(l);
        format!("http://127.0.0.1:{port}")
    }

    /// Every request received so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.inner.received).clone()
    }

    /// Waits until `n` requests have been received and returns them; `None` after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Option<Vec<Received>> {
        let wait = async {
            loop {
                let mut arrived = std::pin::pin!(self.inner.arrived.notified());
                arrived.as_mut().enable();
                {
                    let got = lock(&self.inner.received);
                    if got.len() >= n {
                        return got.clone();
                    }
                }
                arrived.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.ok()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
