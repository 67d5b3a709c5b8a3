//! Every statement the outbox runs, with its schema spelled in once at construction.

/// The statements, schema-qualified.
pub(crate) struct Queries {
    pub(crate) insert_one: String,
    pub(crate) insert_many: String,
    pub(crate) claim: String,
    pub(crate) delete: String,
    pub(crate) retry: String,
    pub(crate) release: String,
    pub(crate) dead: String,
    pub(crate) next_due: String,
    pub(crate) ensure_bucket: String,
    pub(crate) take_tokens: String,
    pub(crate) refund_tokens: String,
    pub(crate) pause_left: String,
    pub(crate) pause: String,
    pub(crate) stats: String,
    pub(crate) list_dead: String,
    pub(crate) replay_all: String,
    pub(crate) replay_ids: String,
}

/// The tokens in the bucket now: the stored ones plus the refill since the last update, capped at
/// the burst (`$3` is the rate per second, `$4` the burst).
const AVAIL: &str = "LEAST($4::float8, tokens + GREATEST(0::float8, EXTRACT(EPOCH FROM (clock_timestamp() - updated_at))::float8) * $3::float8)";

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
        let granted = format!(
            "CASE WHEN paused_until > clock_timestamp() THEN 0 ELSE LEAST($2::int8, FLOOR({AVAIL})::int8) END"
        );
        Self {
            insert_one: format!(
                "INSERT INTO {t} (organization_id, idempotency_key, event) VALUES ($1, $2, $3::jsonb)"
            ),
            insert_many: format!(
                "INSERT INTO {t} (organization_id, idempotency_key, event) \
                 SELECT o, k, e::jsonb FROM UNNEST($1::text[], $2::text[], $3::text[]) AS u(o, k, e)"
            ),
            // Due rows, oldest first, skipping rows another relay is claiming right now, none
            // while the bucket `$4` is paused by a Retry-After. The lease is the row's
            // `available_at`: a relay that dies leaves it to expire.
            claim: format!(
                "UPDATE {t} AS o SET lease_owner = $1, \
                   available_at = clock_timestamp() + make_interval(secs => $2::float8), \
                   claims = o.claims + 1, \
                   first_attempt_at = COALESCE(o.first_attempt_at, clock_timestamp()), \
                   last_attempt_at = clock_timestamp() \
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
                   lease_owner = NULL, attempts = o.attempts + 1, last_error = u.err \
                 FROM UNNEST($1::int8[], $2::int8[], $3::float8[], $4::text[]) AS u(id, claims, delay, err) \
                 WHERE o.id = u.id AND o.claims = u.claims"
            ),
            // Rows claimed but not sent: due again now, unless another relay took them over.
            release: format!(
                "UPDATE {t} AS o SET available_at = clock_timestamp(), lease_owner = NULL \
                 FROM UNNEST($1::int8[], $2::int8[]) AS u(id, claims) \
                 WHERE o.id = u.id AND o.claims = u.claims"
            ),
            dead: format!(
                "WITH u AS (SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::text[]) AS u(id, claims, reason, err)), \
                 moved AS (DELETE FROM {t} AS o USING u WHERE o.id = u.id AND o.claims = u.claims \
                           RETURNING o.organization_id, o.idempotency_key, o.event, o.attempts, o.created_at, \
                                     o.first_attempt_at, o.last_attempt_at, u.reason, u.err) \
                 INSERT INTO {d} (organization_id, idempotency_key, event, reason, error, attempts, created_at, \
                                  first_attempt_at, last_attempt_at) \
                 SELECT organization_id, idempotency_key, event, reason, err::jsonb, attempts + 1, created_at, \
                        first_attempt_at, last_attempt_at FROM moved"
            ),
            next_due: format!(
                "SELECT EXTRACT(EPOCH FROM (MIN(available_at) - clock_timestamp()))::float8 FROM {t}"
            ),
            ensure_bucket: format!(
                "INSERT INTO {r} (key, tokens) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING"
            ),
            // One statement: every expression reads the row's latest version (under a
            // concurrent update PostgreSQL re-evaluates them), so two relays never share tokens.
            take_tokens: format!(
                "UPDATE {r} SET granted = {granted}, tokens = {AVAIL} - ({granted}), updated_at = clock_timestamp() \
                 WHERE key = $1 \
                 RETURNING granted, tokens, COALESCE(EXTRACT(EPOCH FROM (paused_until - clock_timestamp()))::float8, 0)"
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
