-- wrk script: POST /v1/events with a ~200-byte event, a different order id per request.
--   BENCH_API_KEY=... BENCH_SOURCE=bench-wrk wrk -t1 -c64 -d15s -s bench/post_event.lua http://127.0.0.1:8080
-- The key may also be given as the first script argument (wrk ... -- KEY). done() (bench/wrk_common.lua)
-- prints one line, "BENCH_JSON {...}", with the request count, latency percentiles and every non-201 status.

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "wrk_common.lua")

local source = os.getenv("BENCH_SOURCE") or "bench-wrk"

wrk.path = "/v1/events"

local template = '{"source":"' .. source .. '","event_type":"order.created","payload":{"order_id":"ord_%d_%09d",'
  .. '"customer_id":"cus_4821","amount_cents":4999,"currency":"EUR","items":3},'
  .. '"metadata":{"trace_id":"bench","region":"eu-west-1"}}'

function init(args)
  bench_init(args)
  seq = 0
end

function request()
  seq = seq + 1
  return wrk.format(nil, nil, nil, string.format(template, thread_id or 0, seq))
end
