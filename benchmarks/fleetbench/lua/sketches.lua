-- wrk script: drift sketches. Each request posts one window's histograms (the body
-- template in the file given as the second argument, with __START__ and __END__ for
-- the window) from the next device, round-robin over the device tokens in the file given
-- as the first argument. Every window is new: its start follows the previous one by an
-- hour, so the server stores each (no retry of a stored window).
-- The third argument offsets the windows, so that two runs on one database (the warm-up
-- and the measured run) never send the same window twice.
--   wrk -s sketches.lua URL -- TOKENS_FILE BODY_TEMPLATE_FILE WINDOW_OFFSET

local tokens = {}
local index = 0
local threads = 0
local window = 0
local template = ""
-- 2026-01-01T00:00:00Z, seconds since the epoch.
local start = 1767225600

function setup(thread)
  thread:set("thread_index", threads)
  threads = threads + 1
end

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
  local f = assert(io.open(args[2], "r"))
  template = f:read("*a")
  f:close()
  index = ((thread_index or 0) * 7919) % #tokens
  -- Threads write different stretches of time.
  window = (thread_index or 0) * 1000000 + tonumber(args[3] or "0")
end

function request()
  index = index % #tokens + 1
  window = window + 1
  local t0 = start + window * 3600
  local body = template
    :gsub("__START__", os.date("!%Y-%m-%dT%H:%M:%SZ", t0))
    :gsub("__END__", os.date("!%Y-%m-%dT%H:%M:%SZ", t0 + 3600))
  return wrk.format("POST", "/api/v1/device/sketches", {
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
