-- A delete marker (a 'deleted' row whose event has not arrived) belongs to the first tenant that deleted the
-- id. Other tenants that delete the same id while it is still in flight are listed here, so that whichever
-- of them owns the event, its delete holds when the event arrives.
ALTER TABLE events ADD COLUMN deleted_by text[];
