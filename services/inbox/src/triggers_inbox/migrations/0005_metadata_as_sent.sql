-- Metadata as the client sent it (compact json), which readers get, so every number reads back as written:
-- the jsonb column, which the metadata filter queries, rewrites 1e2 as 100 and -0.0 as 0.0. Rows stored
-- before have only the jsonb form. A nullable column without a default: nothing is rewritten or locked long.
ALTER TABLE events ADD COLUMN metadata_sent json;
