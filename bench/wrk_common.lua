-- Shared by the bench wrk scripts, which load it with dofile(): the API key, per-thread status counters, and
-- done(), which prints one line "BENCH_JSON {...}" with the request count, latency percentiles (microseconds),
-- every non-201 status, and the sums of the script's own counters.
--
-- A script sets `extra_counters = { "name", ... }` (per-thread globals that init() zeroes and done() sums into
-- "counters") before it loads this file, calls bench_init(args) from its init(), and count_status(status) from
-- its response() if it defines its own.

local threads = {}
local thread_count = 0

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
  table.insert(threads, thread)
end

-- The API key comes from BENCH_API_KEY or the first script argument (wrk ... -- KEY).
function bench_init(args)
  local api_key = os.getenv("BENCH_API_KEY")
  if args[1] ~= nil and args[1] ~= "" then
    api_key = args[1]
  end
  if api_key == nil or api_key == "" then
    error("set BENCH_API_KEY or pass the key after --")
  end
  wrk.headers["X-API-Key"] = api_key
  non_201 = 0
  statuses = {}
  for _, name in ipairs(extra_counters or {}) do
    _G[name] = 0
  end
end

function count_status(status)
  if status ~= 201 then
    non_201 = non_201 + 1
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
  end
end

function response(status, headers, body)
  count_status(status)
end

function done(summary, latency, requests)
  local total_non_201 = 0
  local merged = {}
  local counters = {}
  for _, name in ipairs(extra_counters or {}) do
    counters[name] = 0
  end
  for _, thread in ipairs(threads) do
    total_non_201 = total_non_201 + (thread:get("non_201") or 0)
    local thread_statuses = thread:get("statuses") or {}
    for code, count in pairs(thread_statuses) do
      merged[code] = (merged[code] or 0) + count
    end
    for name, _ in pairs(counters) do
      counters[name] = counters[name] + (thread:get(name) or 0)
    end
  end
  local status_parts = {}
  for code, count in pairs(merged) do
    table.insert(status_parts, string.format('"%s":%d', code, count))
  end
  local counter_parts = {}
  for name, count in pairs(counters) do
    table.insert(counter_parts, string.format('"%s":%d', name, count))
  end
  local pct = {}
  for _, p in ipairs({ 50, 90, 99, 99.9 }) do
    table.insert(pct, string.format('"%s":%d', tostring(p), latency:percentile(p)))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"duration_us":%d,"requests":%d,"bytes":%d,"non_201":%d,"statuses":{%s},"counters":{%s},'
      .. '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},"status_errors":%d,'
      .. '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"stdev":%.1f,"percentiles":{%s}}}\n',
    summary.duration, summary.requests, summary.bytes, total_non_201, table.concat(status_parts, ","),
    table.concat(counter_parts, ","), e.connect, e.read, e.write, e.timeout, e.status,
    latency.min, latency.mean, latency.max, latency.stdev, table.concat(pct, ",")
  ))
end
