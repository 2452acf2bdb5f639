-- wrk script: POST /v1/events like bench/post_event.lua, and every other request carries a unique
-- Idempotency-Key header, "<prefix>-<thread>-<seq>", so the key path runs on half of the requests and every
-- request is still a new event, never a replay.
--   BENCH_API_KEY=... BENCH_SOURCE=bench-checks wrk -t1 -c64 -d15s -s bench/post_event_checks.lua http://127.0.0.1:8080
-- The prefix is BENCH_IDEMPOTENCY_PREFIX, else the source. It must differ between runs against the same tenant
-- (the same key with another body is a 422).
-- done() adds two counters: "keyed" (requests sent with a key, including any still in flight at the end) and
-- "replayed" (responses with Idempotent-Replayed, which should be 0).

extra_counters = { "keyed", "replayed" }
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "wrk_common.lua")

local source = os.getenv("BENCH_SOURCE") or "bench-checks"
local prefix = os.getenv("BENCH_IDEMPOTENCY_PREFIX") or source

wrk.path = "/v1/events"

local template = '{"source":"' .. source .. '","event_type":"order.created","payload":{"order_id":"ord_%d_%09d",'
  .. '"customer_id":"cus_4821","amount_cents":4999,"currency":"EUR","items":3},'
  .. '"metadata":{"trace_id":"bench","region":"eu-west-1"}}'

local keyed_headers = {}

function init(args)
  bench_init(args)
  seq = 0
  -- wrk.format() uses the headers it is given instead of wrk.headers, so the keyed requests get a copy.
  for name, value in pairs(wrk.headers) do
    keyed_headers[name] = value
  end
end

function request()
  seq = seq + 1
  local body = string.format(template, thread_id or 0, seq)
  if seq % 2 == 0 then
    return wrk.format(nil, nil, nil, body)
  end
  keyed = keyed + 1
  keyed_headers["Idempotency-Key"] = string.format("%s-%d-%d", prefix, thread_id or 0, seq)
  return wrk.format(nil, nil, keyed_headers, body)
end

function response(status, headers, body)
  count_status(status)
  if headers["idempotent-replayed"] or headers["Idempotent-Replayed"] then
    replayed = replayed + 1
  end
end
