CREATE TABLE tenants (
    tenant_id  text PRIMARY KEY CHECK (tenant_id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    key_id       text PRIMARY KEY,
    tenant_id    text NOT NULL REFERENCES tenants (tenant_id),
    key_hash     bytea NOT NULL UNIQUE,
    name         text NOT NULL DEFAULT '',
    scopes       text[] NOT NULL,
    rate_limit   integer,
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'rotating', 'revoked', 'expired')),
    expires_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

CREATE INDEX api_keys_tenant ON api_keys (tenant_id);
