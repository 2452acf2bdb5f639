-- Leases: POST /v1/inbox/lease hands pending events to one client for a while. A leased event keeps status
-- 'pending' but carries the lease, and is hidden from other leases and GET /v1/inbox until leased_until.
-- lease_id stays after expiry, so the lease can still ack it until another lease takes it. The lease row
-- lists the events it took (for a release of all of them).
CREATE TABLE leases (
    lease_id     uuid PRIMARY KEY,
    tenant_id    text NOT NULL,
    leased_until timestamptz NOT NULL,
    event_ids    uuid[] NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX leases_expiry ON leases (leased_until);

-- No index covers the lease columns, and pages keep room: leasing and releasing are HOT updates that touch
-- no index. (An ack changes status, which the partial indexes depend on, so it is not.)
ALTER TABLE events
    ADD COLUMN lease_id uuid,
    ADD COLUMN leased_until timestamptz,
    ADD COLUMN lease_count integer NOT NULL DEFAULT 0,
    ADD COLUMN quarantined_at timestamptz,
    DROP CONSTRAINT events_status_check,
    ADD CONSTRAINT events_status_check
        CHECK (status IN ('pending', 'acknowledged', 'deleted', 'quarantined')),
    SET (fillfactor = 85);
-- GET /v1/inbox/quarantine, oldest first per tenant.
CREATE INDEX events_quarantined ON events (tenant_id, created_at, event_id) WHERE status = 'quarantined';
-- Retention: acknowledged events by the time of their ack. (Unacknowledged ones are found by their
-- time-ordered UUIDv7 event id through the primary key.)
CREATE INDEX events_acknowledged_at ON events (acknowledged_at) WHERE status = 'acknowledged';

-- The inbox gauges' last snapshot: one process computes it, every process exports it.
CREATE TABLE inbox_stats (
    id       integer PRIMARY KEY CHECK (id = 1),
    taken_at timestamptz NOT NULL,
    stats    jsonb NOT NULL
);

-- Every status transition (ack, delete, quarantine, redrive, purge) is written here in the statement that
-- makes it, and relayed to triggers.event-status.v1 after the commit (at-least-once).
CREATE TABLE event_status_outbox (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id  uuid NOT NULL,
    tenant_id text NOT NULL,
    status    text NOT NULL,
    at        timestamptz NOT NULL
);
