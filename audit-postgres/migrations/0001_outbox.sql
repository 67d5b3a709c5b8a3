-- audit-postgres migration 1: the outbox, its dead letters and the fleet's rate-limit buckets.
--
-- Runs with `search_path` set to the outbox's schema (`public` by default), so every object is
-- created there. Users of their own migration tool run it after `SET search_path TO <schema>;`.

-- One row per event waiting for delivery. `available_at` is when a relay may take it next: the
-- insert time, a backoff after a failed attempt, or the end of a relay's lease while one holds
-- it (`lease_owner` set). `claims` counts claims, so that a relay whose lease was taken over
-- cannot overwrite the row's newer state.
CREATE TABLE audit_outbox (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id  text        NOT NULL,
    idempotency_key  text        NOT NULL,
    event            jsonb       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    available_at     timestamptz NOT NULL DEFAULT now(),
    attempts         integer     NOT NULL DEFAULT 0,
    claims           bigint      NOT NULL DEFAULT 0,
    lease_owner      text,
    first_attempt_at timestamptz,
    last_attempt_at  timestamptz,
    last_error       text
);

CREATE INDEX audit_outbox_available_at ON audit_outbox (available_at);

-- Events WorkOS refused for good or whose retry window ended, with the reason and the last error
-- (the JSON form of audit-core's `DeadLetterError`). `replay` moves them back to `audit_outbox`
-- with their original idempotency keys.
CREATE TABLE audit_outbox_dead_letters (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id  text        NOT NULL,
    idempotency_key  text        NOT NULL,
    event            jsonb       NOT NULL,
    reason           text        NOT NULL,
    error            jsonb,
    attempts         integer     NOT NULL,
    created_at       timestamptz NOT NULL,
    first_attempt_at timestamptz,
    last_attempt_at  timestamptz,
    dead_at          timestamptz NOT NULL DEFAULT now()
);

-- One token bucket per API key (a hash of it, or a configured name; never the key itself),
-- shared by every relay of the fleet. `paused_until` is set from a 429's Retry-After; `granted` is
-- what the last taker was given (read back by the statement that takes tokens).
CREATE TABLE audit_outbox_rate_limits (
    key          text             PRIMARY KEY,
    tokens       double precision NOT NULL,
    updated_at   timestamptz      NOT NULL DEFAULT clock_timestamp(),
    paused_until timestamptz,
    granted      bigint           NOT NULL DEFAULT 0
);

-- New rows wake the relays: one notification per inserting statement, sent at commit (and not
-- at all when the transaction rolls back). The channel is '<schema>.audit_outbox'.
CREATE FUNCTION audit_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '.audit_outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER audit_outbox_notify
    AFTER INSERT ON audit_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION audit_outbox_notify();
