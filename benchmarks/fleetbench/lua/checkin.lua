-- wrk script: device check-ins. Each request is the next device's check-in, round-robin
-- over the device tokens in the file given as the first script argument (one per line),
-- so every enrolled device checks in with its own credential.
--   wrk -s checkin.lua URL -- TOKENS_FILE

local tokens = {}
local index = 0
local threads = 0

local body = '{"installed":{"name":"kws","version":"1.0.0"},'
  .. '"slot":{"active":"a","state":"committed"},'
  .. '"health":{"uptime_s":3600,"resets":0,"free_memory_bytes":81234}}'

function setup(thread)
  thread:set("thread_index", threads)
  threads = threads + 1
end

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
  -- Threads start at different places in the list.
  index = ((thread_index or 0) * 7919) % #tokens
end

function request()
  index = index % #tokens + 1
  return wrk.format("POST", "/api/v1/device/checkin", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. tokens[index],
  }, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"status":%d,"connect":%d,"read":%d,'
      .. '"write":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
