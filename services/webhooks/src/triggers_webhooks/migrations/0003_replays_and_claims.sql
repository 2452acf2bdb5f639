-- Until when a dispatcher holds a delivery it is sending (NULL: nobody). A manual retry or a replay leaves
-- such a delivery alone, so one attempt is never sent twice at once.
ALTER TABLE deliveries ADD COLUMN claimed_until timestamptz;

-- Replays of a time range (POST /v1/webhooks/{id}/replay): any webhooks process runs a pending one, holding
-- it until claimed_until and renewing that as it goes; a replay whose worker died is taken up again from
-- the offsets it reached. Rescheduling is idempotent (one delivery per event and webhook).
CREATE TABLE webhook_replays (
    replay_id     uuid PRIMARY KEY,
    tenant_id     text NOT NULL,
    webhook_id    uuid NOT NULL REFERENCES webhooks (webhook_id) ON DELETE CASCADE,
    since         timestamptz NOT NULL,
    until         timestamptz NOT NULL,
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    scheduled     integer NOT NULL DEFAULT 0,
    positions     jsonb NOT NULL DEFAULT '{}',
    error         text,
    claimed_until timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz
);
CREATE INDEX webhook_replays_open ON webhook_replays (created_at) WHERE status IN ('pending', 'running');
