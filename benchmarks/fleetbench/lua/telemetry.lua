-- wrk script: telemetry batches. Each request carries POINTS metric points (the second
-- script argument) from the next device, round-robin over the device tokens in the file
-- given as the first argument. Every batch is new: its points follow the previous
-- batch's in time, one second apart, as a device sending its buffered readings would.
--   wrk -s telemetry.lua URL -- TOKENS_FILE POINTS

local tokens = {}
local index = 0
local threads = 0
local count = 0
local batch = 0
local tails = {}

local metrics = {
  "inference_latency_ms", "free_memory_bytes", "temperature_c",
  "resets_total", "uptime_s", "battery_v",
}
-- 2026-11-27T10:00:00Z, seconds since the epoch.
local start = 1795773600

function setup(thread)
  thread:set("thread_index", threads)
  threads = threads + 1
end

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
  index = ((thread_index or 0) * 7919) % #tokens
  -- Threads write different stretches of time.
  batch = (thread_index or 0) * 1000000
  count = tonumber(args[2])
  for i = 0, count - 1 do
    tails[i + 1] = string.format('Z","metric":"%s","value":%.1f}',
      metrics[i % #metrics + 1], (i % 500) / 10)
  end
end

function request()
  index = index % #tokens + 1
  batch = batch + 1
  local base = start + batch * count
  local parts = {}
  for i = 1, count do
    parts[i] = '{"t":"' .. os.date("!%Y-%m-%dT%H:%M:%S", base + i) .. tails[i]
  end
  local body = '{"points":[' .. table.concat(parts, ",") .. ']}'
  return wrk.format("POST", "/api/v1/device/telemetry", {
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
