-- Webhook subscriptions, per tenant. The secret signs deliveries, so it is kept as given (an HMAC needs it);
-- after a rotation the previous one keeps signing alongside until previous_secret_until.
CREATE TABLE webhooks (
    webhook_id            uuid PRIMARY KEY,
    tenant_id             text NOT NULL,
    url                   text NOT NULL,
    events                text[] NOT NULL,
    sources               text[],
    description           text NOT NULL DEFAULT '',
    secret                text NOT NULL,
    previous_secret       text,
    previous_secret_until timestamptz,
    is_active             boolean NOT NULL DEFAULT true,
    disabled_reason       text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- GET /v1/webhooks pages, oldest first per tenant.
CREATE INDEX webhooks_tenant ON webhooks (tenant_id, created_at, webhook_id);
