-- audit-postgres migration 2: business commits no longer notify, and a refused key holds the fleet.
--
-- The statement trigger of migration 1 sent NOTIFY at every commit that wrote an event; a
-- transaction that executed NOTIFY takes a database-wide lock while it commits, so concurrent
-- writers queued behind each other. Relays now find rows by polling (fast after a write of their
-- own process, slow when idle) instead.
DROP TRIGGER IF EXISTS audit_outbox_notify ON audit_outbox;
DROP FUNCTION IF EXISTS audit_outbox_notify();

-- When WorkOS started refusing this bucket's API key (401/403); NULL when it is not refused.
-- While set, relays send one probe row at a time, `paused_until` spacing the probes.
ALTER TABLE audit_outbox_rate_limits ADD COLUMN held_since timestamptz;
