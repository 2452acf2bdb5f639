-- What "the same body" means now: the event however its JSON is spelled (body_hash). request_hash stays, with
-- its old meaning (the compact JSON as sent), so that replicas of the previous version, during a rolling
-- deploy or after a rollback, still recognise a byte-identical retry. A nullable column: nothing rewritten.
ALTER TABLE idempotency_keys ADD COLUMN body_hash bytea;
