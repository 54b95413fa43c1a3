-- wrk.lua: request shapes for scripts/bench.sh and a one-line JSON summary.
--
-- Configured through the environment (wrk passes it through):
--   BENCH_MODE       healthz | get | turn | direct   (default healthz)
--   BENCH_IDS        file with one context id per line (get, turn)
--   BENCH_THREADS    the -t given to wrk, so threads interleave the ids
--   BENCH_BODY       direct: file holding the exact body ctxd sends upstream
--   BENCH_APIKEY     direct: x-api-key value
-- done() prints "BENCH {...}" with req/s, latency percentiles (microseconds)
-- and wrk's error counters; bench.sh parses that line.

local mode = os.getenv("BENCH_MODE") or "healthz"
local threads = {}
local ids = {}
local counter, step = 0, 1
local direct_body, direct_headers
local turn_headers = {["Content-Type"] = "application/json"}
local turn_body = '{"message":"What is the weather like on the coast this week?"}'

local function read_file(path)
  local f = assert(io.open(path, "rb"), "cannot open " .. tostring(path))
  local s = f:read("*a")
  f:close()
  return s
end

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path = os.getenv("BENCH_IDS")
  if path and path ~= "" then
    for line in io.lines(path) do
      if line ~= "" then table.insert(ids, line) end
    end
  end
  counter = tid or 0
  step = tonumber(os.getenv("BENCH_THREADS") or "1") or 1
  if mode == "direct" then
    direct_body = read_file(os.getenv("BENCH_BODY"))
    direct_headers = {
      ["Content-Type"] = "application/json",
      ["x-api-key"] = os.getenv("BENCH_APIKEY") or "bench-key",
      ["anthropic-version"] = "2023-06-01",
    }
  end
end

local function next_id()
  local id = ids[counter % #ids + 1]
  counter = counter + step
  return id
end

-- BENCH_AUTH: an API key sent as Authorization: Bearer (scenario 11).
local auth = os.getenv("BENCH_AUTH")
local get_headers = auth and auth ~= "" and {["Authorization"] = "Bearer " .. auth} or nil

function request()
  if mode == "get" then
    return wrk.format("GET", "/mcp/context/" .. next_id(), get_headers)
  elseif mode == "turn" then
    return wrk.format("POST", "/mcp/context/" .. next_id() .. "/message",
                      turn_headers, turn_body)
  elseif mode == "direct" then
    return wrk.format("POST", "/v1/messages", direct_headers, direct_body)
  end
  return wrk.format("GET", "/healthz")
end

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    'BENCH {"requests":%d,"duration_s":%.3f,"rps":%.1f,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"max_us":%d,"mean_us":%.1f,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d,"errors":%d}\n',
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout,
    e.connect + e.read + e.write + e.status + e.timeout))
end
