-- The agent work cycle for wrk: every wrk thread is one agent with its own token and one
-- connection, looping claim-next → complete. Run it with as many threads as connections
-- (tests/wrk/run.sh does): `wrk -t64 -c64 -d5s --latency -s cycle.lua URL`, with the agents'
-- tokens, one per line, in the file named by $TOKENS.

local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do
  tokens[#tokens + 1] = line
end
local threads = {}

function setup(thread)
  thread:set("token", tokens[#threads + 1])
  threads[#threads + 1] = thread
end

-- Per thread (each has its own Lua state).
local claiming, id, fence = true, nil, nil
completes, empty, errors = 0, 0, 0

function request()
  local headers = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }
  if claiming then
    return wrk.format("POST", "/api/v1/claims/next", headers, "{}")
  end
  return wrk.format("POST", "/api/v1/tasks/" .. id .. "/complete", headers,
    '{"fence": ' .. fence .. ', "summary": "done by wrk"}')
end

function response(status, headers, body)
  if claiming then
    if status == 200 then
      id = body:match('"task":{"id":(%d+)')
      fence = body:match('"lease":{[^}]*"fence":(%d+)')
      if id and fence then
        claiming = false
      else
        errors = errors + 1
      end
    elseif status == 204 then
      empty = empty + 1
    else
      errors = errors + 1
    end
  else
    if status == 200 then
      completes = completes + 1
    else
      errors = errors + 1
    end
    claiming = true
  end
end

function done(summary, latency, requests)
  local total, none, failed = 0, 0, 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("completes")
    none = none + thread:get("empty")
    failed = failed + thread:get("errors")
  end
  local seconds = summary.duration / 1e6
  io.write(string.format("cycles %d in %.2f s: %.0f cycles/s; %d empty claims, %d errors\n",
    total, seconds, total / seconds, none, failed))
  io.write(string.format("latency per request: p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
