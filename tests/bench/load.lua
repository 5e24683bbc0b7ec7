-- wrk script: POST fixture-shaped deliveries with a fresh CorrelationId each, and
-- print the latency percentiles and error counts as one JSON line at the end.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("id", thread_id)
  thread_id = thread_id + 1
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-api-key"] = os.getenv("BENCH_API_KEY")
  non200 = 0
end

local template = '{"EventName":"placement_updated","FrontOfficeTenantId":6,' ..
  '"Resource":"{\\"PlacementId\\":86635, \\"PlacementExtensionId\\":86635,' ..
  '\\"CorrelationId\\":\\"%s\\"}","ResourceModelType":"Avionte.Commons.CompasEventModel.' ..
  'ResourceModel.PlacementResourceModel, Avionte.Commons.CompasEventModel, Version=1.2.4.0, ' ..
  'Culture=neutral, PublicKeyToken=null","CorrelationId":"%s"}'

-- With BENCH_SAME set, every request repeats one delivery, as Avionté's retries of one
-- event do; otherwise each carries a fresh CorrelationId.
local same = os.getenv("BENCH_SAME")
if same == "" then
  same = nil
end

function request()
  counter = counter + 1
  local cid = same and "bench-same-delivery" or string.format("bench-%d-%d", id, counter)
  return wrk.format(nil, nil, nil, string.format(template, cid, cid))
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("non200")
  end
  local errors = summary.errors
  io.write(string.format(
    '{"requests":%d,"seconds":%.3f,"non200":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"timeouts":%d,"p50_ms":%.3f,"p95_ms":%.3f,"p99_ms":%.3f}\n',
    summary.requests, summary.duration / 1e6, bad, errors.connect, errors.read,
    errors.write, errors.timeout, latency:percentile(50) / 1000,
    latency:percentile(95) / 1000, latency:percentile(99) / 1000))
end
