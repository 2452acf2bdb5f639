-- Key versions: a rotation creates the next version of a key (same lineage); the old one keeps working,
-- as 'rotating', until its expires_at.
ALTER TABLE api_keys
    ADD COLUMN lineage_id text,
    ADD COLUMN version integer NOT NULL DEFAULT 1,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
UPDATE api_keys SET lineage_id = key_id;
ALTER TABLE api_keys ALTER COLUMN lineage_id SET NOT NULL;
CREATE UNIQUE INDEX api_keys_lineage ON api_keys (lineage_id, version);  -- one next version, even when raced
-- A key that must sign has a secret to sign with (checked for every change from now on).
ALTER TABLE api_keys ADD CONSTRAINT api_keys_signature_needs_secret
    CHECK (NOT require_signature OR signing_secret IS NOT NULL) NOT VALID;

-- Who changed which key, what and when; listed by the tenant's admins. Never holds a key or a secret.
CREATE TABLE key_audit (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id text NOT NULL,
    key_id    text NOT NULL,
    action    text NOT NULL CHECK (action IN ('created', 'updated', 'revoked', 'rotated')),
    actor     text NOT NULL,
    changes   jsonb NOT NULL DEFAULT '{}',
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX key_audit_tenant ON key_audit (tenant_id, id);
