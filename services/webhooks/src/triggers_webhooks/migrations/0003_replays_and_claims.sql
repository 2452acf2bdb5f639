-- Until when a dispatcher holds a delivery it is sending (NULL: nobody); other dispatchers, a manual retry
-- and a replay leave it alone meanwhile, so one attempt is never sent twice at once. Claiming touches no
-- indexed column, so it is a HOT update; room on each page and eager vacuuming keep this queue table and
-- its due index lean under a high turnover.
ALTER TABLE deliveries ADD COLUMN claimed_until timestamptz;
ALTER TABLE deliveries SET (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02,
                            autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_vacuum_cost_delay = 0);

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
    tries         integer NOT NULL DEFAULT 0,
    error         text,
    claimed_until timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz
);
CREATE INDEX webhook_replays_open ON webhook_replays (created_at) WHERE status IN ('pending', 'running');

-- The subscription index of each webhooks process catches up on changes since its last read.
CREATE INDEX webhooks_updated ON webhooks (updated_at);
