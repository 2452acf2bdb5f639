-- wrk script: POST /v1/events with a ~200-byte event, a different order id per request.
--   BENCH_API_KEY=... BENCH_SOURCE=bench-wrk wrk -t1 -c64 -d15s -s bench/post_event.lua http://127.0.0.1:8080
-- The key may also be given as the first script argument (wrk ... -- KEY). done() prints one line,
-- "BENCH_JSON {...}", with the request count, latency percentiles (microseconds) and every non-201 status.

local api_key = os.getenv("BENCH_API_KEY")
local source = os.getenv("BENCH_SOURCE") or "bench-wrk"

local threads = {}
local thread_count = 0

wrk.method = "POST"
wrk.path = "/v1/events"
wrk.headers["Content-Type"] = "application/json"

local template = '{"source":"' .. source .. '","event_type":"order.created","payload":{"order_id":"ord_%d_%09d",'
  .. '"customer_id":"cus_4821","amount_cents":4999,"currency":"EUR","items":3},'
  .. '"metadata":{"trace_id":"bench","region":"eu-west-1"}}'

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
  table.insert(threads, thread)
end

function init(args)
  if args[1] ~= nil and args[1] ~= "" then
    api_key = args[1]
  end
  if api_key == nil or api_key == "" then
    error("set BENCH_API_KEY or pass the key after --")
  end
  wrk.headers["X-API-Key"] = api_key
  seq = 0
  non_201 = 0
  statuses = {}
end

function request()
  seq = seq + 1
  return wrk.format(nil, nil, nil, string.format(template, thread_id or 0, seq))
end

function response(status, headers, body)
  if status ~= 201 then
    non_201 = non_201 + 1
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
  end
end

function done(summary, latency, requests)
  local total_non_201 = 0
  local merged = {}
  for _, thread in ipairs(threads) do
    total_non_201 = total_non_201 + (thread:get("non_201") or 0)
    local thread_statuses = thread:get("statuses") or {}
    for code, count in pairs(thread_statuses) do
      merged[code] = (merged[code] or 0) + count
    end
  end
  local status_parts = {}
  for code, count in pairs(merged) do
    table.insert(status_parts, string.format('"%s":%d', code, count))
  end
  local pct = {}
  for _, p in ipairs({ 50, 90, 99, 99.9 }) do
    table.insert(pct, string.format('"%s":%d', tostring(p), latency:percentile(p)))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"duration_us":%d,"requests":%d,"bytes":%d,"non_201":%d,"statuses":{%s},'
      .. '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},"status_errors":%d,'
      .. '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"stdev":%.1f,"percentiles":{%s}}}\n',
    summary.duration, summary.requests, summary.bytes, total_non_201, table.concat(status_parts, ","),
    e.connect, e.read, e.write, e.timeout, e.status,
    latency.min, latency.mean, latency.max, latency.stdev, table.concat(pct, ",")
  ))
end
