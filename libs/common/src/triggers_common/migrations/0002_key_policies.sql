-- What a key may do beyond its scopes: where it may call from, whether it must sign, how fast it may go.
ALTER TABLE api_keys
    ADD COLUMN allowed_ips cidr[],
    ADD COLUMN signing_secret text,
    ADD COLUMN require_signature boolean NOT NULL DEFAULT false;

-- A cap across all of a tenant's keys (requests per minute); NULL means the configured default.
ALTER TABLE tenants ADD COLUMN rate_limit integer;

-- Token buckets shared by every replica. Replicas lease tokens in chunks (rate_lease), so a request never
-- waits on Postgres unless its replica's chunk ran out.
CREATE TABLE rate_buckets (
    bucket     text PRIMARY KEY,
    tokens     double precision NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE FUNCTION rate_lease(p_bucket text, p_capacity double precision, p_rate_per_s double precision, p_want integer)
RETURNS TABLE (granted integer, remaining double precision)
LANGUAGE plpgsql AS $$
DECLARE
    v_tokens double precision;
    v_updated timestamptz;
    v_now timestamptz;
BEGIN
    INSERT INTO rate_buckets (bucket, tokens, updated_at) VALUES (p_bucket, p_capacity, clock_timestamp())
    ON CONFLICT (bucket) DO NOTHING;
    SELECT b.tokens, b.updated_at INTO v_tokens, v_updated FROM rate_buckets b WHERE b.bucket = p_bucket FOR UPDATE;
    v_now := clock_timestamp();
    v_tokens := LEAST(p_capacity, v_tokens + p_rate_per_s * GREATEST(0, EXTRACT(EPOCH FROM v_now - v_updated)));
    granted := GREATEST(0, LEAST(p_want, floor(v_tokens)))::integer;
    remaining := v_tokens - granted;
    UPDATE rate_buckets SET tokens = remaining, updated_at = v_now WHERE bucket = p_bucket;
    RETURN NEXT;
END
$$;
