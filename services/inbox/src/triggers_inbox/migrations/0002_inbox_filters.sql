-- Every GET /v1/inbox filter is served by a partial index on pending events, scoped to the tenant.
-- created_after / created_before use events_pending (tenant_id, created_at, event_id).
CREATE INDEX events_pending_priority ON events (tenant_id, priority, created_at, event_id) WHERE status = 'pending';

-- metadata_key + metadata_value: containment (metadata @> {"key": value}) within the tenant.
CREATE EXTENSION IF NOT EXISTS btree_gin;
CREATE INDEX events_pending_metadata ON events USING gin (tenant_id, metadata jsonb_path_ops) WHERE status = 'pending';
