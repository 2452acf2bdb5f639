-- The inbox: one row per event id. Deleted events keep a row (status 'deleted', content cleared) so that
-- a Kafka redelivery, or an event that arrives after its delete, never brings them back.
CREATE TABLE events (
    event_id        uuid PRIMARY KEY,
    tenant_id       text NOT NULL,
    created_at      timestamptz NOT NULL,
    source          text,
    event_type      text,
    priority        text NOT NULL DEFAULT 'normal',
    payload         json,
    metadata        jsonb,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'acknowledged', 'deleted')),
    acknowledged_at timestamptz,
    deleted_at      timestamptz,
    persisted_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Keyset pagination of pending events, oldest first, per tenant (and per filter).
CREATE INDEX events_pending ON events (tenant_id, created_at, event_id) WHERE status = 'pending';
CREATE INDEX events_pending_source ON events (tenant_id, source, created_at, event_id) WHERE status = 'pending';
CREATE INDEX events_pending_type ON events (tenant_id, event_type, created_at, event_id) WHERE status = 'pending';
