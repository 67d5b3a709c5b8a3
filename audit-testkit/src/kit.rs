//! [`TestKit`] and its builder: the server on its own OS thread and tokio runtime.

use crate::fault::{ActiveFault, FaultRule};
use crate::model::{RecordedRequest, StoredEvent};
use crate::state::{Config, Shared, lock};
use crate::streams::{Destination, StreamSettings, StreamStatus};
use crate::validate::Validators;
use std::net::{SocketAddr, TcpListener as StdListener};
#[cfg(feature = "sqlite")]
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Why a [`TestKit`] could not start or restart.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding the listening socket failed.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Starting the server thread or its runtime failed.
    #[error("starting the server: {0}")]
    Start(String),
    /// The configuration is invalid (for example the data file cannot be opened).
    #[error("configuration: {0}")]
    Config(String),
}

/// How many exports a testkit keeps by default ([`TestKitBuilder::max_exports`]).
pub const DEFAULT_MAX_EXPORTS: usize = 50;

/// The largest export CSV a testkit builds by default ([`TestKitBuilder::max_export_bytes`]).
pub const DEFAULT_MAX_EXPORT_BYTES: usize = 32 * 1024 * 1024;

/// Builder of a [`TestKit`]; see [`TestKit::builder`].
#[derive(Debug, Clone)]
pub struct TestKitBuilder {
    config: Config,
    addr: SocketAddr,
}

impl Default for TestKitBuilder {
    fn default() -> Self {
        TestKitBuilder {
            config: Config {
                orgs: Vec::new(),
                any_org: false,
                api_keys: Vec::new(),
                require_schemas: false,
                export_delay: Duration::from_millis(200),
                export_url_ttl: Duration::from_secs(600),
                rate_limit: None,
                log_stream: None,
                max_body_bytes: 1024 * 1024,
                max_event_request_bytes: crate::validate::DEFAULT_MAX_EVENT_REQUEST_BYTES,
                configuration_state: None,
                failing_exports: false,
                max_recorded_requests: 10_000,
                max_recorded_bytes: 64 * 1024 * 1024,
                #[cfg(feature = "sqlite")]
                data_path: None,
                streams: Vec::new(),
                stream_settings: StreamSettings::default(),
                allowed_hosts: Vec::new(),
                control_token: None,
                max_exports: DEFAULT_MAX_EXPORTS,
                max_export_bytes: DEFAULT_MAX_EXPORT_BYTES,
            },
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

impl TestKitBuilder {
    /// Registers an organization (repeatable). With none, one `org_<26 chars>` is generated.
    pub fn org(mut self, id: impl Into<String>) -> Self {
        self.config.orgs.push(id.into());
        self
    }

    /// Accept any organization id (no 404 for unknown organizations).
    pub fn any_org(mut self, yes: bool) -> Self {
        self.config.any_org = yes;
        self
    }

    /// Accept this API key (repeatable). With none, any key starting with `sk_` is accepted.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.config.api_keys.push(key.into());
        self
    }

    /// Validate events against the registered schema of their action and `version` (default 1),
    /// rejecting actions without a schema.
    pub fn require_schemas(mut self, yes: bool) -> Self {
        self.config.require_schemas = yes;
        self
    }

    /// How long an export stays `pending` before it is `ready` (default 200 ms).
    pub fn export_delay(mut self, d: Duration) -> Self {
        self.config.export_delay = d;
        self
    }

    /// How long an export's download URL stays valid (default 10 minutes, as WorkOS's).
    pub fn export_url_ttl(mut self, d: Duration) -> Self {
        self.config.export_url_ttl = d;
        self
    }

    /// Allow `n` requests per `per` for each API key (all endpoints together); more get 429.
    pub fn rate_limit(mut self, n: u64, per: Duration) -> Self {
        self.config.rate_limit = Some((n, per));
        self
    }

    /// Report a log stream of this type (e.g. `Datadog`) and state (e.g. `active`) in the
    /// configuration endpoint of every organization.
    pub fn log_stream(mut self, kind: impl Into<String>, state: impl Into<String>) -> Self {
        self.config.log_stream = Some((kind.into(), state.into()));
        self
    }

    /// Streams every event stored for `organization_id` to `destination` (see
    /// [`streams`](crate::streams)); the configuration endpoint then reports this stream for
    /// the organization. Replaces a stream configured earlier for it.
    pub fn stream(mut self, organization_id: impl Into<String>, destination: Destination) -> Self {
        let org = organization_id.into();
        self.config.streams.retain(|(o, _)| *o != org);
        self.config.streams.push((org, destination));
        self
    }

    /// How log streams retry: `attempts` per event (default 5, at least 1), waiting
    /// `first_backoff` (default 500 ms) after the first failure and twice as long after each
    /// further one (at most 30 s). An event that fails every attempt is given up and the stream
    /// reports `error` until a delivery succeeds.
    pub fn stream_retries(mut self, attempts: u32, first_backoff: Duration) -> Self {
        self.config.stream_settings.attempts = attempts;
        self.config.stream_settings.first_backoff = first_backoff;
        self
    }

    /// How many events may wait for delivery per stream (default 10,000, the one being
    /// attempted included); events stored beyond it are dropped from the stream, counted as
    /// failed and shown as `dropped` among the recent deliveries.
    pub fn stream_queue(mut self, max_pending: usize) -> Self {
        self.config.stream_settings.max_pending = max_pending;
        self
    }

    /// Keep state in this SQLite file, so that it survives restarts (the `sqlite` feature).
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    pub fn data_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.data_path = Some(path.into());
        self
    }

    /// Listen on this address (default `127.0.0.1:0`, a free port).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Largest accepted request body (default 1 MiB); larger ones get 413.
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.config.max_body_bytes = n;
        self
    }

    /// Largest accepted create-event body (default 100 KiB, the budget audit-core applies by
    /// default); larger ones get WorkOS's 413. WorkOS publishes no figure: set the one your
    /// application's emitter uses.
    pub fn max_event_request_bytes(mut self, n: usize) -> Self {
        self.config.max_event_request_bytes = n;
        self
    }

    /// The `state` the configuration endpoint reports for every organization (default
    /// `active`; WorkOS also answers `inactive` and `disabled`), for testing how an
    /// application reacts to audit logs being switched off.
    pub fn configuration_state(mut self, state: impl Into<String>) -> Self {
        self.config.configuration_state = Some(state.into());
        self
    }

    /// Every export ends in state `error` (without a URL) once its delay has passed, instead of
    /// `ready`, for testing how an application handles a failed export.
    pub fn failing_exports(mut self, yes: bool) -> Self {
        self.config.failing_exports = yes;
        self
    }

    /// How many received requests to keep for [`TestKit::requests`] (default 10,000; oldest
    /// dropped first; 0 keeps none).
    pub fn max_recorded_requests(mut self, n: usize) -> Self {
        self.config.max_recorded_requests = n;
        self
    }

    /// How many bytes of received requests (bodies, headers, paths) to keep for
    /// [`TestKit::requests`] (default 64 MiB; oldest dropped first). A request whose body alone
    /// exceeds it is kept with its body cut to fit.
    pub fn max_recorded_bytes(mut self, n: usize) -> Self {
        self.config.max_recorded_bytes = n;
        self
    }

    /// Also answer requests whose `Host` is `host` (repeatable): `name` (any port) or `name:port`,
    /// say `testkit:8787` for another container of a compose file, or `host.docker.internal`.
    ///
    /// # Security
    ///
    /// Requests are answered only when their `Host` is the bound address, a loopback address,
    /// `localhost` (or `*.localhost`) or one of these, so that a web page cannot reach the
    /// testkit by rebinding its own domain name to 127.0.0.1 (DNS rebinding); others get a 403
    /// that names this setting. Allow only names that you control.
    pub fn allowed_host(mut self, host: impl Into<String>) -> Self {
        self.config.allowed_hosts.push(host.into());
        self
    }

    /// Require this token on `/_testkit/*` (but `/_testkit/health` and export downloads) and
    /// on the viewer's pages: `Authorization: Bearer <token>`, or HTTP Basic with the token as
    /// the password (a browser asks for it once). The [`TestKit`] methods need no token.
    ///
    /// # Security
    ///
    /// Meant for a testkit reachable beyond loopback (`addr` `0.0.0.0:...` in a container). The
    /// token travels in clear over plain HTTP: use it on networks you trust. The WorkOS
    /// endpoints keep their own check ([`api_key`](TestKitBuilder::api_key)).
    pub fn control_token(mut self, token: impl Into<String>) -> Self {
        self.config.control_token = Some(crate::security::Secret(token.into()));
        self
    }

    /// How many exports to keep (default [`DEFAULT_MAX_EXPORTS`], at least 1); creating one
    /// more drops the oldest (its download URL then answers 404).
    pub fn max_exports(mut self, n: usize) -> Self {
        self.config.max_exports = n.max(1);
        self
    }

    /// The largest CSV one export may have, in bytes (default [`DEFAULT_MAX_EXPORT_BYTES`]); an
    /// export that would be larger is refused with a 400 that names the limit.
    pub fn max_export_bytes(mut self, n: usize) -> Self {
        self.config.max_export_bytes = n;
        self
    }

    /// Starts the server. Callable from any runtime (or none): the server runs on its own thread.
    pub async fn start(self) -> Result<TestKit, Error> {
        self.start_blocking()
    }

    /// Starts the server without needing an async context.
    pub fn start_blocking(mut self) -> Result<TestKit, Error> {
        if self.config.orgs.is_empty() {
            self.config.orgs.push(format!("org_{}", crate::util::ulid()));
        }
        let listener = StdListener::bind(self.addr).map_err(|source| Error::Bind {
            addr: self.addr,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: self.addr,
            source,
        })?;
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else if addr.is_ipv6() {
            format!("[{}]", addr.ip())
        } else {
            addr.ip().to_string()
        };
        let base_url = format!("http://{host}:{}", addr.port());
        let validators = Validators::load().map_err(Error::Config)?;
        let any_key = self.config.api_keys.is_empty();
        let shared = Arc::new(Shared::new(self.config, addr, base_url, validators).map_err(Error::Config)?);
        let exposure = shared.guard.exposure_warning(any_key);
        if let Some(w) = &exposure {
            tracing::warn!(target: "audit_testkit::exposure", "{w}");
        }
        let router = crate::api::router(shared.clone());

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("audit-testkit")
            .enable_all()
            .build()
            .map_err(|e| Error::Start(e.to_string()))?;
        let handle = rt.handle().clone();
        shared.streams.start(handle.clone());
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("audit-testkit".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = shutdown_rx.await;
                });
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| Error::Start(e.to_string()))?;
        let kit = TestKit {
            exposure,
            shared,
            router,
            addr,
            handle,
            listening: Mutex::new(None),
            shutdown: Mutex::new(Some(shutdown_tx)),
            thread: Mutex::new(Some(thread)),
        };
        kit.listen(listener)?;
        Ok(kit)
    }
}

struct Listening {
    stop: watch::Sender<bool>,
    stopped: std::sync::mpsc::Receiver<()>,
}

/// A running WorkOS-compatible Audit Logs server.
///
/// Every method is synchronous and safe to call from any thread or runtime (tokio with a paused
/// clock, a current-thread runtime, actix-rt): the server has its own thread and runtime.
pub struct TestKit {
    exposure: Option<String>,
    shared: Arc<Shared>,
    router: axum::Router,
    addr: SocketAddr,
    handle: tokio::runtime::Handle,
    listening: Mutex<Option<Listening>>,
    shutdown: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for TestKit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestKit")
            .field("url", &self.shared.base_url)
            .finish_non_exhaustive()
    }
}

impl TestKit {
    /// A builder with the defaults.
    pub fn builder() -> TestKitBuilder {
        TestKitBuilder::default()
    }

    /// Starts a testkit with the defaults (one generated organization, any `sk_` key).
    pub async fn start() -> Result<TestKit, Error> {
        TestKitBuilder::default().start_blocking()
    }

    fn listen(&self, listener: StdListener) -> Result<(), Error> {
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::Start(e.to_string()))?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let shared = self.shared.clone();
        let router = self.router.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => {
                    let _ = ready_tx.send(Ok(()));
                    crate::server::accept_loop(l, shared, router, stop_rx, done_tx).await;
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|e| Error::Start(e.to_string()))?
            .map_err(Error::Start)?;
        *lock(&self.listening) = Some(Listening {
            stop: stop_tx,
            stopped: done_rx,
        });
        Ok(())
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A warning naming what is exposed, when the testkit listens beyond loopback (it is also
    /// logged at WARN, target `audit_testkit::exposure`, when the testkit starts); `None` on a
    /// loopback address.
    ///
    /// # Security
    ///
    /// Beyond loopback, whoever reaches the address reads the stored events and, without a
    /// [`control_token`](TestKitBuilder::control_token), can change the testkit's state and
    /// point log streams anywhere.
    pub fn exposure_warning(&self) -> Option<&str> {
        self.exposure.as_deref()
    }

    /// The first registered (or the generated) organization.
    pub fn organization_id(&self) -> &str {
        self.shared.config.orgs.first().map(String::as_str).unwrap_or("")
    }

    /// Every registered organization.
    pub fn organization_ids(&self) -> &[String] {
        &self.shared.config.orgs
    }

    /// Events stored for one organization, oldest first.
    pub fn events(&self, organization_id: &str) -> Vec<StoredEvent> {
        lock(&self.shared.data)
            .events
            .iter()
            .filter(|e| e.organization_id == organization_id)
            .cloned()
            .collect()
    }

    /// Every stored event, oldest first.
    pub fn all_events(&self) -> Vec<StoredEvent> {
        lock(&self.shared.data).events.clone()
    }

    /// Requests received on the WorkOS endpoints (not `/_testkit/`), oldest first.
    ///
    /// # Security
    ///
    /// These are the requests as received, `Authorization` header included, for tests in the
    /// same process. `GET /_testkit/requests` serves them with `Authorization` values and every
    /// `sk_...` word (in headers, query and body) replaced by `[redacted]`.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).items.iter().cloned().collect()
    }

    /// Waits until a recorded request that `matches` has been answered, and returns it; `None`
    /// when none is within `timeout`. For tests that must know a client saw an answer (say, a
    /// scripted 500) before they go on. Only recorded requests count (see
    /// [`TestKitBuilder::max_recorded_requests`]).
    pub async fn wait_for_request(
        &self,
        timeout: Duration,
        matches: impl Fn(&RecordedRequest) -> bool,
    ) -> Option<RecordedRequest> {
        let find = || {
            lock(&self.shared.requests)
                .items
                .iter()
                .find(|r| r.status != 0 && matches(r))
                .cloned()
        };
        let wait = async {
            loop {
                let mut answered = std::pin::pin!(self.shared.answered.notified());
                answered.as_mut().enable();
                if let Some(found) = find() {
                    return found;
                }
                answered.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.ok()
    }

    /// Waits until no request to the WorkOS endpoints is being handled (each was answered, or
    /// dropped with its connection), at most `timeout`; `false` when some still are. For tests
    /// that count what the server stored after clients gave up on slow requests.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let idle = || self.shared.handling.load(std::sync::atomic::Ordering::SeqCst) == 0;
        let wait = async {
            loop {
                let mut handled = std::pin::pin!(self.shared.handled.notified());
                handled.as_mut().enable();
                if idle() {
                    return;
                }
                handled.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// Streams every event stored for the organization from now on to `destination`, replacing
    /// its stream if it had one (events still waiting go to the new destination). An invalid
    /// destination is refused with a message naming the field.
    pub fn set_stream(&self, organization_id: &str, destination: Destination) -> Result<StreamStatus, Error> {
        self.shared
            .streams
            .set(organization_id, destination, true)
            .map_err(Error::Config)
    }

    /// Pauses (`false`: the stream is `inactive`, events stored meanwhile are not delivered) or
    /// resumes an organization's stream; `None` when it has none.
    pub fn set_stream_active(&self, organization_id: &str, active: bool) -> Option<StreamStatus> {
        self.shared.streams.set_active(organization_id, active)
    }

    /// Removes an organization's stream; whether it had one.
    pub fn remove_stream(&self, organization_id: &str) -> bool {
        self.shared.streams.remove(organization_id)
    }

    /// An organization's stream: state, counters and recent deliveries.
    pub fn stream_status(&self, organization_id: &str) -> Option<StreamStatus> {
        self.shared.streams.status(organization_id)
    }

    /// Waits until the organization's stream status satisfies `matches` (say, three events
    /// delivered, or the state `error`) and returns it; `None` when it does not within `timeout`.
    pub async fn wait_for_stream(
        &self,
        organization_id: &str,
        timeout: Duration,
        matches: impl Fn(&StreamStatus) -> bool,
    ) -> Option<StreamStatus> {
        let streams = &self.shared.streams;
        let wait = async {
            loop {
                let mut changed = std::pin::pin!(streams.changed.notified());
                changed.as_mut().enable();
                if let Some(s) = streams.status(organization_id).filter(|s| matches(s)) {
                    return s;
                }
                changed.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.ok()
    }

    /// Adds a scripted fault; rules are tried in the order added.
    pub fn fault(&self, rule: FaultRule) {
        lock(&self.shared.faults).push(ActiveFault::new(rule));
    }

    /// Removes every scripted fault.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Forgets events, idempotency keys, schemas, exports, retention settings, recorded requests,
    /// faults and rate-limit windows (also in the data file), and the log streams' waiting events,
    /// counters and recent deliveries. Organizations, keys and stream destinations stay.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Whether the server is currently accepting connections.
    pub fn is_listening(&self) -> bool {
        lock(&self.listening).is_some()
    }

    /// Stops listening and closes every open connection; the state is kept. Connections to the
    /// port are refused until [`restart`](TestKit::restart).
    pub fn stop(&self) {
        let l = lock(&self.listening).take();
        if let Some(l) = l {
            let _ = l.stop.send(true);
            let _ = l.stopped.recv_timeout(Duration::from_secs(10));
        }
    }

    /// Listens again on the same port with the same state.
    pub fn restart(&self) -> Result<(), Error> {
        if self.is_listening() {
            return Ok(());
        }
        let listener = StdListener::bind(self.addr).map_err(|source| Error::Bind {
            addr: self.addr,
            source,
        })?;
        self.listen(listener)
    }

    /// Stops the server and its thread. Dropping the `TestKit` does the same.
    pub fn shutdown(self) {
        self.shutdown_inner();
    }

    fn shutdown_inner(&self) {
        self.stop();
        if let Some(tx) = lock(&self.shutdown).take() {
            let _ = tx.send(());
        }
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestKit {
    fn drop(&mut self) {
        self.shutdown_inner();
    }
}
