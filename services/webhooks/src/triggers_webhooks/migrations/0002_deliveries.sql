-- One delivery per (webhook, event): its id is derived from both, so a redelivered Kafka record finds it
-- again, and its webhook-id header is the same on every attempt. The body is the exact JSON that is signed
-- and sent each time.
CREATE TABLE deliveries (
    delivery_id      uuid PRIMARY KEY,
    tenant_id        text NOT NULL,
    webhook_id       uuid NOT NULL REFERENCES webhooks (webhook_id) ON DELETE CASCADE,
    event_id         uuid NOT NULL,
    body             bytea NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- The dispatcher's queue: pending deliveries by when they are due.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_webhook ON deliveries (webhook_id, created_at);

-- Since when every attempt to the webhook has failed (NULL after any success): 5 days of it disables it.
ALTER TABLE webhooks ADD COLUMN failing_since timestamptz;

-- Every attempt, for the delivery log.
CREATE TABLE delivery_attempts (
    delivery_id uuid NOT NULL REFERENCES deliveries (delivery_id) ON DELETE CASCADE,
    attempt     integer NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    status_code integer,
    latency_ms  double precision NOT NULL,
    error       text,
    PRIMARY KEY (delivery_id, attempt)
);
