//! Every statement the outbox runs, with its schema spelled in once at construction.

/// The statements, schema-qualified.
pub(crate) struct Queries {
    pub(crate) insert_one: String,
    pub(crate) insert_request: String,
    pub(crate) insert_many: String,
    pub(crate) claim: String,
    pub(crate) delete: String,
    pub(crate) retry: String,
    pub(crate) release: String,
    pub(crate) unauthorized: String,
    pub(crate) extend: String,
    pub(crate) dead: String,
    pub(crate) next_due: String,
    pub(crate) ensure_bucket: String,
    pub(crate) take_tokens: String,
    pub(crate) refund_tokens: String,
    pub(crate) pause_left: String,
    pub(crate) pause: String,
    pub(crate) hold: String,
    pub(crate) unhold: String,
    pub(crate) stats: String,
    pub(crate) list_dead: String,
    pub(crate) replay_all: String,
    pub(crate) replay_ids: String,
}

/// The transaction-local setting holding the keys [`Queries::insert_request`] wrote in the
/// current transaction (`,key1,key2,`); PostgreSQL resets it when the transaction ends.
const WRITTEN: &str = "'audit_outbox.written'";

/// The tokens in the bucket `r` at the statement's one clock reading `c.now`: the stored ones
/// plus the refill since the last update, capped at the burst (`$3` is the rate per second, `$4`
/// the burst).
const AVAIL: &str = "LEAST($4::float8, r.tokens + GREATEST(0::float8, EXTRACT(EPOCH FROM (c.now - r.updated_at))::float8) * $3::float8)";

impl Queries {
    pub(crate) fn new(schema: &str) -> Self {
        let t = format!(r#""{schema}".audit_outbox"#);
        let d = format!(r#""{schema}".audit_outbox_dead_letters"#);
        let r = format!(r#""{schema}".audit_outbox_rate_limits"#);
        let dead_json = format!(
            "json_build_object('organization_id', organization_id, 'event', event, 'idempotency_key', idempotency_key, \
             'reason', reason, 'error', error, 'attempts', attempts, \
             'first_attempt_at', to_char(first_attempt_at AT TIME ZONE 'UTC', {f}), \
             'last_attempt_at', to_char(last_attempt_at AT TIME ZONE 'UTC', {f}))::text",
            f = r#"'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'"#
        );
        // While the key is held by a refused authorization, one row at a time probes.
        let granted = format!(
            "CASE WHEN r.paused_until > c.now THEN 0 \
                  WHEN r.held_since IS NOT NULL THEN LEAST(1::int8, FLOOR({AVAIL})::int8) \
                  ELSE LEAST($2::int8, FLOOR({AVAIL})::int8) END"
        );
        // When an attempt started: `u.ago` seconds before now.
        let started = "clock_timestamp() - make_interval(secs => u.ago)";
        Self {
            insert_one: format!(
                "INSERT INTO {t} (organization_id, idempotency_key, event) VALUES ($1, $2, $3::jsonb)"
            ),
            // Writes the row unless this transaction already wrote this key, and notes the key
            // in a setting that ends with the transaction: no row means "already written".
            insert_request: format!(
                "INSERT INTO {t} (organization_id, idempotency_key, event) SELECT $1, $2, $3::jsonb \
                 WHERE strpos(COALESCE(current_setting({WRITTEN}, true), ''), ',' || $2 || ',') = 0 \
                 RETURNING set_config({WRITTEN}, \
                   COALESCE(NULLIF(current_setting({WRITTEN}, true), ''), ',') || $2 || ',', true)"
            ),
            insert_many: format!(
                "INSERT INTO {t} (organization_id, idempotency_key, event) \
                 SELECT o, k, e::jsonb FROM UNNEST($1::text[], $2::text[], $3::text[]) AS u(o, k, e)"
            ),
            // Due rows, oldest first, skipping rows another relay is claiming right now, none
            // while the bucket `$4` is paused. The lease is the row's `available_at`, extended
            // while the relay works on it: a relay that dies leaves it to expire. The retry
            // window starts at a row's first attempt, recorded with the attempt's outcome (a
            // row given back unsent has not started it).
            claim: format!(
                "UPDATE {t} AS o SET lease_owner = $1, \
                   available_at = clock_timestamp() + make_interval(secs => $2::float8), \
                   claims = o.claims + 1 \
                 FROM (SELECT id FROM {t} WHERE available_at <= clock_timestamp() \
                         AND NOT EXISTS (SELECT 1 FROM {r} WHERE key = $4 AND paused_until > clock_timestamp()) \
                       ORDER BY available_at LIMIT $3 FOR UPDATE SKIP LOCKED) AS due \
                 WHERE o.id = due.id \
                 RETURNING o.id, o.claims, o.organization_id, o.idempotency_key, o.event::text, o.attempts, \
                   EXTRACT(EPOCH FROM (clock_timestamp() - o.first_attempt_at))::float8"
            ),
            delete: format!("DELETE FROM {t} WHERE id = ANY($1::int8[])"),
            retry: format!(
                "UPDATE {t} AS o SET available_at = clock_timestamp() + make_interval(secs => u.delay), \
                   lease_owner = NULL, attempts = o.attempts + 1, last_error = u.err, \
                   first_attempt_at = COALESCE(o.first_attempt_at, {started}), last_attempt_at = {started} \
                 FROM UNNEST($1::int8[], $2::int8[], $3::float8[], $4::text[], $5::float8[]) AS u(id, claims, delay, err, ago) \
                 WHERE o.id = u.id AND o.claims = u.claims"
            ),
            // Rows claimed but not sent: due again now, unless another relay took them over.
            release: format!(
                "UPDATE {t} AS o SET available_at = clock_timestamp(), lease_owner = NULL \
                 FROM UNNEST($1::int8[], $2::int8[]) AS u(id, claims) \
                 WHERE o.id = u.id AND o.claims = u.claims"
            ),
            // Rows refused for the key's authorization: they wait for the hold to end, and the
            // refusal does not count against their retry window.
            unauthorized: format!(
                "UPDATE {t} AS o SET available_at = clock_timestamp(), lease_owner = NULL, \
                   first_attempt_at = NULL, last_attempt_at = {started}, last_error = u.err \
                 FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::float8[]) AS u(id, claims, err, ago) \
                 WHERE o.id = u.id AND o.claims = u.claims"
            ),
            // Leases of rows still being worked on last another lease from now.
            extend: format!(
                "UPDATE {t} AS o SET available_at = clock_timestamp() + make_interval(secs => $3::float8) \
                 FROM UNNEST($1::int8[], $2::int8[]) AS u(id, claims) \
                 WHERE o.id = u.id AND o.claims = u.claims"
            ),
            dead: format!(
                "WITH u AS (SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::text[], $5::float8[]) AS u(id, claims, reason, err, ago)), \
                 moved AS (DELETE FROM {t} AS o USING u WHERE o.id = u.id AND o.claims = u.claims \
                           RETURNING o.organization_id, o.idempotency_key, o.event, o.attempts, o.created_at, \
                                     COALESCE(o.first_attempt_at, {started}) AS first_at, {started} AS last_at, \
                                     u.reason, u.err) \
                 INSERT INTO {d} (organization_id, idempotency_key, event, reason, error, attempts, created_at, \
                                  first_attempt_at, last_attempt_at) \
                 SELECT organization_id, idempotency_key, event, reason, err::jsonb, attempts + 1, created_at, \
                        first_at, last_at FROM moved"
            ),
            next_due: format!(
                "SELECT EXTRACT(EPOCH FROM (MIN(available_at) - clock_timestamp()))::float8 FROM {t}"
            ),
            ensure_bucket: format!(
                "INSERT INTO {r} (key, tokens) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING"
            ),
            // One statement and one clock reading: every expression reads the row's latest
            // version (under a concurrent update PostgreSQL re-evaluates them), so two relays
            // never share tokens. While the key is held, the grant of one row takes the probe
            // slot: the bucket is paused for `$5` seconds from now.
            take_tokens: format!(
                "WITH c AS (SELECT clock_timestamp() AS now) \
                 UPDATE {r} AS r SET granted = {granted}, tokens = {AVAIL} - ({granted}), \
                   updated_at = GREATEST(r.updated_at, c.now), \
                   paused_until = CASE WHEN r.held_since IS NOT NULL AND ({granted}) > 0 \
                                       THEN c.now + make_interval(secs => $5::float8) ELSE r.paused_until END \
                 FROM c WHERE r.key = $1 \
                 RETURNING r.granted, r.tokens, \
                   COALESCE(EXTRACT(EPOCH FROM (r.paused_until - c.now))::float8, 0), \
                   COALESCE(EXTRACT(EPOCH FROM (c.now - r.held_since))::float8, -1)"
            ),
            refund_tokens: format!(
                "UPDATE {r} SET tokens = LEAST($3::float8, tokens + $2::float8) WHERE key = $1"
            ),
            pause_left: format!(
                "SELECT COALESCE(EXTRACT(EPOCH FROM (paused_until - clock_timestamp()))::float8, 0) FROM {r} WHERE key = $1"
            ),
            pause: format!(
                "UPDATE {r} SET paused_until = GREATEST(COALESCE(paused_until, '-infinity'), \
                   clock_timestamp() + make_interval(secs => $2::float8)) WHERE key = $1"
            ),
            // Starts (or continues) an authorization hold: the bucket pauses until the next
            // probe, `$2` seconds, or as long as the hold has lasted (between `$2` and `$3`).
            // Returns how long the key has been held.
            hold: format!(
                "WITH c AS (SELECT clock_timestamp() AS now) \
                 UPDATE {r} AS r SET held_since = COALESCE(r.held_since, c.now), \
                   paused_until = GREATEST(COALESCE(r.paused_until, '-infinity'), c.now + make_interval(secs => \
                     LEAST($3::float8, GREATEST($2::float8, EXTRACT(EPOCH FROM (c.now - COALESCE(r.held_since, c.now)))::float8)))) \
                 FROM c WHERE r.key = $1 \
                 RETURNING EXTRACT(EPOCH FROM (c.now - r.held_since))::float8"
            ),
            unhold: format!(
                "UPDATE {r} SET held_since = NULL, paused_until = NULL WHERE key = $1 AND held_since IS NOT NULL"
            ),
            stats: format!(
                "SELECT (SELECT COUNT(*) FROM {t}), \
                        (SELECT EXTRACT(EPOCH FROM (clock_timestamp() - MIN(created_at)))::float8 FROM {t}), \
                        (SELECT COUNT(*) FROM {t} WHERE lease_owner IS NOT NULL AND available_at > clock_timestamp()), \
                        (SELECT COUNT(*) FROM {d})"
            ),
            list_dead: format!("SELECT id, {dead_json} FROM {d} ORDER BY id LIMIT $1"),
            replay_all: format!(
                "WITH moved AS (DELETE FROM {d} RETURNING id, organization_id, idempotency_key, event) \
                 INSERT INTO {t} (organization_id, idempotency_key, event) \
                 SELECT organization_id, idempotency_key, event FROM moved ORDER BY id"
            ),
            replay_ids: format!(
                "WITH moved AS (DELETE FROM {d} WHERE id = ANY($1::int8[]) RETURNING id, organization_id, idempotency_key, event) \
                 INSERT INTO {t} (organization_id, idempotency_key, event) \
                 SELECT organization_id, idempotency_key, event FROM moved ORDER BY id"
            ),
        }
    }
}
