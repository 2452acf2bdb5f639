-- metadata is kept as the client sent it (compact json), so every number reads back exactly as written: jsonb
-- rewrote 1e2 as 100 and -0.0 as 0.0. The metadata_key/metadata_value filter uses its jsonb form, indexed.
DROP INDEX events_pending_metadata;
ALTER TABLE events ALTER COLUMN metadata TYPE json USING metadata::json;
CREATE INDEX events_pending_metadata ON events USING gin (tenant_id, (metadata::jsonb) jsonb_path_ops)
    WHERE status = 'pending';
