//! The testkit's shared state: configuration, stored data, recorded requests and faults.

#[cfg(feature = "sqlite")]
use crate::db::Db;
use crate::fault::ActiveFault;
use crate::model::{RecordedRequest, StoredEvent};
use crate::security::{Guard, Secret};
use crate::streams::{Destination, StreamSettings, Streams};
use crate::util::{format_ts, now, parse_ts};
use crate::validate::{CompiledSchema, Validators};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet, VecDeque};
#[cfg(feature = "sqlite")]
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// How long idempotency keys are remembered.
pub(crate) const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Configuration fixed at start.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) orgs: Vec<String>,
    pub(crate) any_org: bool,
    pub(crate) api_keys: Vec<String>,
    pub(crate) require_schemas: bool,
    pub(crate) export_delay: Duration,
    pub(crate) export_url_ttl: Duration,
    pub(crate) rate_limit: Option<(u64, Duration)>,
    pub(crate) log_stream: Option<(String, String)>,
    pub(crate) max_body_bytes: usize,
    /// The largest create-event body; larger ones get 413.
    pub(crate) max_event_request_bytes: usize,
    /// The `state` the configuration endpoint reports (default `active`).
    pub(crate) configuration_state: Option<String>,
    /// Exports end in state `error` instead of `ready`.
    pub(crate) failing_exports: bool,
    pub(crate) max_recorded_requests: usize,
    pub(crate) max_recorded_bytes: usize,
    #[cfg(feature = "sqlite")]
    pub(crate) data_path: Option<PathBuf>,
    /// Log streams configured at start: (organization, destination).
    pub(crate) streams: Vec<(String, Destination)>,
    pub(crate) stream_settings: StreamSettings,
    /// `Host` names answered besides the bound address and loopback names.
    pub(crate) allowed_hosts: Vec<String>,
    /// The token `/_testkit/*` and the viewer require, if any.
    pub(crate) control_token: Option<Secret>,
    /// Most exports kept; past it the oldest go.
    pub(crate) max_exports: usize,
    /// Largest CSV of one export, in bytes.
    pub(crate) max_export_bytes: usize,
}

pub(crate) struct IdemRecord {
    pub(crate) request: Value,
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
    pub(crate) created: OffsetDateTime,
}

pub(crate) struct SchemaRec {
    pub(crate) id: String,
    pub(crate) version: i64,
    pub(crate) body: Value,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) compiled: Arc<CompiledSchema>,
}

impl SchemaRec {
    pub(crate) fn to_json(&self) -> Value {
        let mut o = serde_json::Map::new();
        o.insert("object".into(), json!("audit_log_schema"));
        o.insert("version".into(), json!(self.version));
        if let Some(a) = self.body.get("actor") {
            o.insert("actor".into(), a.clone());
        }
        o.insert(
            "targets".into(),
            self.body.get("targets").cloned().unwrap_or(json!([])),
        );
        if let Some(m) = self.body.get("metadata") {
            o.insert("metadata".into(), m.clone());
        }
        o.insert("created_at".into(), json!(format_ts(self.created_at)));
        Value::Object(o)
    }
}

pub(crate) struct ActionRec {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) versions: Vec<SchemaRec>,
}

impl ActionRec {
    pub(crate) fn to_json(&self) -> Value {
        let latest = self.versions.last();
        json!({
            "object": "audit_log_action",
            "name": self.name,
            "schema": latest.map(SchemaRec::to_json),
            "created_at": format_ts(self.created_at),
            "updated_at": format_ts(latest.map(|v| v.created_at).unwrap_or(self.created_at)),
        })
    }
}

/// An export; its state is derived from the clock.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ExportRec {
    pub(crate) id: String,
    pub(crate) organization_id: String,
    pub(crate) created_at: String,
    pub(crate) ready_at: String,
    pub(crate) csv: String,
}

impl ExportRec {
    pub(crate) fn is_ready(&self) -> bool {
        parse_ts(&self.ready_at).is_none_or(|t| now() >= t)
    }
}

#[derive(Default)]
pub(crate) struct Data {
    pub(crate) events: Vec<StoredEvent>,
    pub(crate) idem: HashMap<String, IdemRecord>,
    pub(crate) actions: Vec<ActionRec>,
    pub(crate) action_index: HashMap<String, usize>,
    pub(crate) exports: HashMap<String, ExportRec>,
    /// Export ids, oldest first (pruning order).
    pub(crate) export_order: VecDeque<String>,
    /// token -> (export id, expires)
    pub(crate) export_tokens: HashMap<String, (String, OffsetDateTime)>,
    pub(crate) retention: HashMap<String, Option<i64>>,
    /// token -> (organization, intent, expires)
    pub(crate) portal_tokens: HashMap<String, (String, String, OffsetDateTime)>,
}

/// How long an Admin Portal link stays valid (WorkOS documents five minutes).
pub(crate) const PORTAL_LINK_TTL: Duration = Duration::from_secs(5 * 60);

/// Most live export-URL or portal tokens kept; past it the ones that expire first go.
pub(crate) const MAX_TOKENS: usize = 10_000;

/// Most API keys with a rate-limit window kept; past it the oldest windows go.
pub(crate) const MAX_RATE_WINDOWS: usize = 10_000;

/// Inserts a token that expires at `expires`. When [`MAX_TOKENS`] are kept, the expired ones go
/// first and then, while still full, the ones closest to expiry.
pub(crate) fn insert_token<V>(
    map: &mut HashMap<String, V>,
    token: String,
    value: V,
    expires: impl Fn(&V) -> OffsetDateTime,
) {
    let at = now();
    if map.len() >= MAX_TOKENS {
        map.retain(|_, v| expires(v) > at);
    }
    while map.len() >= MAX_TOKENS {
        let Some(first) = map.iter().min_by_key(|(_, v)| expires(v)).map(|(k, _)| k.clone()) else {
            break;
        };
        map.remove(&first);
    }
    map.insert(token, value);
}

/// The recorded requests, bounded by count and by bytes.
#[derive(Default)]
pub(crate) struct RequestLog {
    /// The sequence number of the last recorded request.
    pub(crate) seq: u64,
    pub(crate) items: VecDeque<RecordedRequest>,
    /// The sum of [`recorded_size`] over `items`.
    pub(crate) bytes: usize,
}

/// The bytes a recorded request holds (its text; the fixed-size fields are not counted).
pub(crate) fn recorded_size(r: &RecordedRequest) -> usize {
    r.method.len()
        + r.path.len()
        + r.query.as_ref().map_or(0, String::len)
        + r.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
        + r.body.len()
        + r.request_id.len()
}

/// Everything the server and the [`TestKit`](crate::TestKit) handle share.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) orgs: HashSet<String>,
    pub(crate) validators: Validators,
    pub(crate) base_url: String,
    pub(crate) started_at: OffsetDateTime,
    pub(crate) data: Mutex<Data>,
    pub(crate) requests: Mutex<RequestLog>,
    /// Signalled whenever a recorded request gets its answer.
    pub(crate) answered: tokio::sync::Notify,
    /// Requests to the WorkOS endpoints being handled now, and a signal when one ends.
    pub(crate) handling: std::sync::atomic::AtomicUsize,
    pub(crate) handled: tokio::sync::Notify,
    pub(crate) faults: Mutex<Vec<ActiveFault>>,
    pub(crate) rate: Mutex<HashMap<String, (Instant, u64)>>,
    #[cfg(feature = "sqlite")]
    pub(crate) db: Option<Mutex<Db>>,
    pub(crate) streams: Streams,
    /// The Host check, cross-site check and control token.
    pub(crate) guard: Guard,
    /// The per-process token the viewer's forms carry (see `viewer`).
    pub(crate) form_token: String,
}

/// Locks a mutex, also when poisoned (a panicking test thread must not wedge the server).
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The outcome of an idempotency lookup.
pub(crate) enum Idem {
    /// No live record: process the request.
    Miss,
    /// Same key, same body: replay.
    Replay(u16, Vec<u8>),
    /// Same key, different body.
    Conflict,
}

impl Shared {
    pub(crate) fn new(
        config: Config,
        bound: std::net::SocketAddr,
        base_url: String,
        validators: Validators,
    ) -> Result<Shared, String> {
        let guard = Guard::new(
            bound,
            &config.allowed_hosts,
            config.control_token.as_ref().map(|t| t.0.clone()),
        )?;
        let orgs: HashSet<String> = config.orgs.iter().cloned().collect();
        #[cfg_attr(not(feature = "sqlite"), allow(unused_mut))]
        let mut data = Data::default();
        #[cfg(feature = "sqlite")]
        let db = match &config.data_path {
            None => None,
            Some(p) => {
                let (db, loaded) = Db::open(p).map_err(|e| format!("opening {}: {e}", p.display()))?;
                load_into(&mut data, loaded);
                Some(Mutex::new(db))
            }
        };
        let streams = Streams::new(config.stream_settings)?;
        for (org, dest) in &config.streams {
            streams
                .set(org, dest.clone(), true)
                .map_err(|e| format!("log stream of {org}: {e}"))?;
        }
        Ok(Shared {
            streams,
            guard,
            form_token: crate::util::token(),
            config,
            orgs,
            validators,
            base_url,
            started_at: now(),
            data: Mutex::new(data),
            requests: Mutex::new(RequestLog::default()),
            answered: tokio::sync::Notify::new(),
            handling: std::sync::atomic::AtomicUsize::new(0),
            handled: tokio::sync::Notify::new(),
            faults: Mutex::new(Vec::new()),
            rate: Mutex::new(HashMap::new()),
            #[cfg(feature = "sqlite")]
            db,
        })
    }

    pub(crate) fn org_known(&self, org: &str) -> bool {
        self.config.any_org || self.orgs.contains(org)
    }

    #[cfg(feature = "sqlite")]
    pub(crate) fn with_db(&self, f: impl FnOnce(&Db)) {
        if let Some(db) = &self.db {
            f(&lock(db));
        }
    }

    pub(crate) fn idem_lookup(data: &Data, key: &str, body: &Value) -> Idem {
        match data.idem.get(key) {
            Some(r) if now() - r.created < IDEMPOTENCY_TTL => {
                if &r.request == body {
                    Idem::Replay(r.status, r.body.clone())
                } else {
                    Idem::Conflict
                }
            }
            _ => Idem::Miss,
        }
    }

    /// Stores an event (and its idempotency record) atomically, unless a concurrent request
    /// with the same key won the race.
    pub(crate) fn store_event(
        &self,
        org: String,
        event: Value,
        key: Option<String>,
        request: Option<Value>,
        response: &[u8],
    ) -> Idem {
        let at = now();
        let mut data = lock(&self.data);
        if let (Some(k), Some(req)) = (&key, &request) {
            match Self::idem_lookup(&data, k, req) {
                Idem::Miss => {}
                other => return other,
            }
        }
        #[cfg(feature = "sqlite")]
        if let Some(db) = &self.db {
            let db = lock(db);
            let ts = format_ts(at);
            db.insert_event(&org, &event, key.as_deref(), &ts);
            if let (Some(k), Some(req)) = (&key, &request) {
                db.insert_idempotency(k, req, 200, response, &ts);
            }
        }
        if let (Some(k), Some(req)) = (&key, request) {
            data.idem.insert(
                k.clone(),
                IdemRecord {
                    request: req,
                    status: 200,
                    body: response.to_vec(),
                    created: at,
                },
            );
        }
        self.streams.enqueue(&org, &event);
        data.events.push(StoredEvent {
            organization_id: org,
            event,
            idempotency_key: key,
            received_at: at,
        });
        Idem::Miss
    }

    /// Records a request, dropping the oldest ones while more than `max_recorded_requests` or
    /// `max_recorded_bytes` would be kept. A body that alone exceeds the byte bound is cut.
    pub(crate) fn record_request(&self, mut r: RecordedRequest) -> u64 {
        let max_bytes = self.config.max_recorded_bytes;
        let mut size = recorded_size(&r);
        if size > max_bytes {
            let keep = max_bytes.saturating_sub(size - r.body.len());
            let mut cut = keep.min(r.body.len());
            while !r.body.is_char_boundary(cut) {
                cut -= 1;
            }
            r.body.truncate(cut);
            size = recorded_size(&r);
        }
        let mut g = lock(&self.requests);
        g.seq += 1;
        r.seq = g.seq;
        let seq = g.seq;
        if self.config.max_recorded_requests > 0 && size <= max_bytes {
            while g.items.len() >= self.config.max_recorded_requests || g.bytes + size > max_bytes {
                let Some(old) = g.items.pop_front() else { break };
                g.bytes -= recorded_size(&old);
            }
            g.bytes += size;
            g.items.push_back(r);
        }
        seq
    }

    pub(crate) fn set_request_status(&self, seq: u64, status: u16) {
        let mut g = lock(&self.requests);
        if let Some(r) = g.items.iter_mut().rev().find(|r| r.seq == seq) {
            r.status = status;
        }
        drop(g);
        self.answered.notify_waiters();
    }

    /// Fixed-window rate limit per API key: `Err(retry_after_secs)` when exceeded.
    pub(crate) fn rate_check(&self, key: &str) -> Result<(), u64> {
        let Some((limit, per)) = self.config.rate_limit else {
            return Ok(());
        };
        let mut g = lock(&self.rate);
        let now = Instant::now();
        if !g.contains_key(key) && g.len() >= MAX_RATE_WINDOWS {
            g.retain(|_, w| now.duration_since(w.0) < per);
            while g.len() >= MAX_RATE_WINDOWS {
                let Some(oldest) = g.iter().min_by_key(|(_, w)| w.0).map(|(k, _)| k.clone()) else {
                    break;
                };
                g.remove(&oldest);
            }
        }
        let entry = g.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= per {
            *entry = (now, 0);
        }
        if entry.1 >= limit {
            let left = per.saturating_sub(now.duration_since(entry.0));
            return Err(left.as_secs_f64().ceil().max(1.0) as u64);
        }
        entry.1 += 1;
        Ok(())
    }

    pub(crate) fn reset(&self) {
        *lock(&self.data) = Data::default();
        *lock(&self.requests) = RequestLog::default();
        lock(&self.faults).clear();
        lock(&self.rate).clear();
        self.streams.reset();
        #[cfg(feature = "sqlite")]
        self.with_db(Db::clear);
    }

    /// Adds a schema version (or returns the latest one when unchanged). Returns its JSON.
    pub(crate) fn upsert_schema(&self, action: &str, body: Value, compiled: CompiledSchema) -> Value {
        let at = now();
        let mut data = lock(&self.data);
        let idx = match data.action_index.get(action) {
            Some(i) => *i,
            None => {
                data.actions.push(ActionRec {
                    id: format!("audit_log_action_{}", crate::util::ulid()),
                    name: action.to_owned(),
                    created_at: at,
                    versions: Vec::new(),
                });
                let i = data.actions.len() - 1;
                data.action_index.insert(action.to_owned(), i);
                i
            }
        };
        let rec = &mut data.actions[idx];
        if let Some(latest) = rec.versions.last()
            && latest.body == body
        {
            return latest.to_json();
        }
        let version = rec.versions.len() as i64 + 1;
        let id = format!("audit_log_schema_{}", crate::util::ulid());
        #[cfg(feature = "sqlite")]
        self.with_db(|db| db.insert_schema(action, &id, version, &body, &format_ts(at)));
        let s = SchemaRec {
            id,
            version,
            body,
            created_at: at,
            compiled: Arc::new(compiled),
        };
        let out = s.to_json();
        rec.versions.push(s);
        out
    }
}

#[cfg(feature = "sqlite")]
fn load_into(data: &mut Data, loaded: crate::db::Loaded) {
    for (org, ev, key, at) in loaded.events {
        let Ok(event) = serde_json::from_str(&ev) else {
            continue;
        };
        data.events.push(StoredEvent {
            organization_id: org,
            event,
            idempotency_key: key,
            received_at: parse_ts(&at).unwrap_or_else(now),
        });
    }
    for (key, req, status, body, at) in loaded.idempotency {
        let Ok(request) = serde_json::from_str(&req) else {
            continue;
        };
        data.idem.insert(
            key,
            IdemRecord {
                request,
                status,
                body,
                created: parse_ts(&at).unwrap_or_else(now),
            },
        );
    }
    for (action, id, version, body, at) in loaded.schemas {
        let Ok(body) = serde_json::from_str::<Value>(&body) else {
            continue;
        };
        let Ok(compiled) = CompiledSchema::compile(&body) else {
            continue;
        };
        let created_at = parse_ts(&at).unwrap_or_else(now);
        let idx = match data.action_index.get(&action) {
            Some(i) => *i,
            None => {
                data.actions.push(ActionRec {
                    id: format!("audit_log_action_{}", crate::util::ulid()),
                    name: action.clone(),
                    created_at,
                    versions: Vec::new(),
                });
                data.action_index.insert(action, data.actions.len() - 1);
                data.actions.len() - 1
            }
        };
        data.actions[idx].versions.push(SchemaRec {
            id,
            version,
            body,
            created_at,
            compiled: Arc::new(compiled),
        });
    }
    let mut exports: Vec<ExportRec> = loaded
        .exports
        .iter()
        .filter_map(|rec| serde_json::from_str::<ExportRec>(rec).ok())
        .collect();
    exports.sort_by(|a, b| a.created_at.cmp(&b.created_at));
    for e in exports {
        data.export_order.push_back(e.id.clone());
        data.exports.insert(e.id.clone(), e);
    }
    for (org, days) in loaded.retention {
        data.retention.insert(org, days);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_pruned_when_expired_and_bounded_when_live() {
        let mut map: HashMap<String, OffsetDateTime> = HashMap::new();
        let past = now() - Duration::from_secs(1);
        for i in 0..MAX_TOKENS {
            insert_token(&mut map, format!("old{i}"), past, |v| *v);
        }
        let soon = now() + Duration::from_secs(60);
        insert_token(&mut map, "fresh".into(), soon, |v| *v);
        assert_eq!(map.len(), 1, "expired tokens are dropped once the map is full");
        for i in 0..MAX_TOKENS + 10 {
            let at = now() + Duration::from_secs(120 + i as u64);
            insert_token(&mut map, format!("live{i}"), at, |v| *v);
        }
        assert_eq!(map.len(), MAX_TOKENS);
        assert!(!map.contains_key("fresh"), "the first to expire goes first");
        assert!(map.contains_key(&format!("live{}", MAX_TOKENS + 9)));
    }

    #[test]
    fn rate_windows_are_bounded() {
        let config = Config {
            orgs: vec![],
            any_org: true,
            api_keys: vec![],
            require_schemas: false,
            export_delay: Duration::ZERO,
            export_url_ttl: Duration::from_secs(60),
            rate_limit: Some((1, Duration::from_secs(3600))),
            log_stream: None,
            max_body_bytes: 1024,
            max_event_request_bytes: 1024,
            configuration_state: None,
            failing_exports: false,
            max_recorded_requests: 0,
            max_recorded_bytes: 0,
            #[cfg(feature = "sqlite")]
            data_path: None,
            streams: vec![],
            stream_settings: StreamSettings::default(),
            allowed_hosts: vec![],
            control_token: None,
            max_exports: 1,
            max_export_bytes: 1024,
        };
        let bound = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let shared = Shared::new(config, bound, String::new(), Validators::load().unwrap()).unwrap();
        assert!(shared.rate_check("sk_first").is_ok());
        assert!(shared.rate_check("sk_first").is_err(), "the window binds");
        for i in 0..MAX_RATE_WINDOWS + 5 {
            let _ = shared.rate_check(&format!("sk_{i}"));
        }
        let windows = lock(&shared.rate);
        assert_eq!(windows.len(), MAX_RATE_WINDOWS);
        assert!(!windows.contains_key("sk_first"), "the oldest window goes first");
    }
}
