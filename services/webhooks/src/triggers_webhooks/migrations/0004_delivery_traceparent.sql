-- The W3C trace context of the event a delivery carries (NULL: none, e.g. a replay or a test delivery): each
-- attempt continues that trace, so the receiver's traceparent has the trace id of the original request.
ALTER TABLE deliveries ADD COLUMN traceparent text;
