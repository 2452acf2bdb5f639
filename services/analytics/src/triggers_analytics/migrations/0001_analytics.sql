-- Pre-aggregated analytics, upserted by the analytics consumers one batch at a time. Hours are UTC and
-- belong to the event's creation; a day is the sum of its hours.

-- Events per tenant, hour, source and type.
CREATE TABLE analytics_hourly (
    tenant_id  text NOT NULL,
    hour       timestamptz NOT NULL,
    source     text NOT NULL,
    event_type text NOT NULL,
    events     bigint NOT NULL,
    PRIMARY KEY (tenant_id, hour, source, event_type)
);

-- Every event already counted, so a redelivered or re-sent record counts once. Event ids are UUIDv7, so the
-- key sorts by time and the purge of ids older than the topic's retention walks the front of the index.
CREATE TABLE analytics_counted (
    event_id uuid PRIMARY KEY
);

-- Of the events created in the hour: how many were acknowledged, and how many deleted without an ack.
CREATE TABLE analytics_status_hourly (
    tenant_id    text NOT NULL,
    hour         timestamptz NOT NULL,
    acknowledged bigint NOT NULL DEFAULT 0,
    deleted      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, hour)
);

-- What the status consumer has already counted for an event, so a repeated transition changes nothing.
CREATE TABLE analytics_event_status (
    event_id     uuid PRIMARY KEY,
    acknowledged boolean NOT NULL DEFAULT false,
    deleted      boolean NOT NULL DEFAULT false
);

-- Time from creation to acknowledgement, as a histogram per tenant and hour of creation: bucket b counts the
-- acks that took less than 2^(b/4) ms (and at least the bound of bucket b - 1). Percentiles of any range
-- come from the sum of its hours' buckets.
CREATE TABLE analytics_ack_latency (
    tenant_id text NOT NULL,
    hour      timestamptz NOT NULL,
    bucket    smallint NOT NULL,
    acks      bigint NOT NULL,
    PRIMARY KEY (tenant_id, hour, bucket)
);
