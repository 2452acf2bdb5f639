-- wrk script: POST /v1/events/bulk with BENCH_BULK_SIZE (default 500) ~200-byte events per request. Each
-- thread builds the body once; per request only the batch number in every order id changes.
--   BENCH_API_KEY=... BENCH_SOURCE=bench-bulk wrk -t1 -c8 -d15s -s bench/post_bulk.lua http://127.0.0.1:8080
-- done() adds counters: "partial" (201 responses whose "failed" list is not empty) and "failed_items" (the
-- items in those lists). Nothing is parsed when "failed" is empty, so the check costs one substring search.

extra_counters = { "partial", "failed_items" }
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "wrk_common.lua")

local source = os.getenv("BENCH_SOURCE") or "bench-bulk"
local size = tonumber(os.getenv("BENCH_BULK_SIZE") or "500")

wrk.path = "/v1/events/bulk"

local parts = {}
local slots = {}

function init(args)
  bench_init(args)
  seq = 0
  -- parts: '{"items":[' .. item .. ',' .. item .. ']}' with the batch number of each order id in its own slot.
  local head = '{"source":"' .. source .. '","event_type":"order.created","payload":{"order_id":"ord_'
    .. (thread_id or 0) .. "_"
  for i = 1, size do
    table.insert(parts, (i == 1 and '{"items":[' or ",") .. head)
    table.insert(parts, "0")
    table.insert(slots, #parts)
    table.insert(parts, string.format(
      '_%04d","customer_id":"cus_4821","amount_cents":4999,"currency":"EUR","items":3},'
        .. '"metadata":{"trace_id":"bench","region":"eu-west-1"}}',
      i
    ))
  end
  table.insert(parts, "]}")
end

function request()
  seq = seq + 1
  local batch = tostring(seq)
  for _, slot in ipairs(slots) do
    parts[slot] = batch
  end
  return wrk.format(nil, nil, nil, table.concat(parts))
end

function response(status, headers, body)
  count_status(status)
  if status == 201 and body and not body:find('"failed":[]', 1, true) then
    partial = partial + 1
    local _, n = body:gsub('"index":', "")
    failed_items = failed_items + n
  end
end
