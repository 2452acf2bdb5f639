-- Idempotency keys, per tenant. A key's row is claimed before the event is produced and already holds the
-- event id it will carry, so a retry after a crash or a 503 re-sends that same id (consumers dedupe by it).
CREATE TABLE idempotency_keys (
    tenant_id       text NOT NULL,
    idempotency_key text NOT NULL,
    request_hash    bytea NOT NULL,
    event_id        uuid NOT NULL,
    created_at      timestamptz NOT NULL,
    claimed_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    completed_at    timestamptz,
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, idempotency_key)
);

CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
