-- The agent work cycle for wrk: agents loop claim-next → complete, each with its own token, one
-- lease at a time. Any number of threads and connections: `wrk -t2 -c64 -d5s --latency -s cycle.lua
-- URL` (tests/wrk/run.sh runs it so, in the same shape as its plain-404 run), with the agents'
-- tokens, one per line, in the file named by $TOKENS (line i belongs to the agent named wrk-<i-1>)
-- and the number of wrk threads in $THREADS. Thread k (from 0) drives the agents wrk-n with
-- n modulo $THREADS = k; give wrk as many agents as connections, so that each request belongs to
-- one agent that is not waiting for another answer.
--
-- wrk does not say on which connection an answer arrived, so answers say whose they are: a claim's
-- lease names its holder, a completion names its task.

local threads = {}

function setup(thread)
  thread:set("index", #threads)
  threads[#threads + 1] = thread
end

-- Per thread (each has its own Lua state).
local tokens        -- agent name → token, this thread's agents only
local idle = {}     -- agents with neither a lease nor a request under way
local held = {}     -- claimed tasks waiting to be completed: {agent, id, fence}
local finishing = {} -- task id → agent completing it
local next_any = 0
completes, empty, errors = 0, 0, 0

local function load_agents()
  tokens = {}
  local count, n = assert(tonumber(os.getenv("THREADS")), "set THREADS to the number of wrk threads"), 0
  for line in io.lines(os.getenv("TOKENS")) do
    if n % count == index then
      local name = "wrk-" .. n
      tokens[name] = line
      idle[#idle + 1] = name
    end
    n = n + 1
  end
end

local function post(path, agent, body)
  return wrk.format("POST", path, {
    ["Authorization"] = "Bearer " .. tokens[agent],
    ["Content-Type"] = "application/json",
  }, body)
end

function request()
  if not tokens then
    load_agents()
  end
  local lease = table.remove(held, 1)
  if lease then
    finishing[lease.id] = lease.agent
    return post("/api/v1/tasks/" .. lease.id .. "/complete", lease.agent,
      '{"fence": ' .. lease.fence .. ', "summary": "done by wrk"}')
  end
  local agent = table.remove(idle)
  if not agent then
    -- Only after an answer that named nobody (an error, or no work left): any agent will do.
    local names = {}
    for name in pairs(tokens) do
      names[#names + 1] = name
    end
    table.sort(names)
    next_any = next_any % #names + 1
    agent = names[next_any]
  end
  return post("/api/v1/claims/next", agent, "{}")
end

function response(status, headers, body)
  if status == 204 then
    empty = empty + 1 -- no work left; whose claim it was is not said
    return
  end
  if status ~= 200 then
    errors = errors + 1
    return
  end
  local id = body:match('^{"task":{"id":(%d+)')
  if id then
    local holder = body:match('"lease":{"holder":"([^"]+)","fence":')
    local fence = body:match('"lease":{[^}]*"fence":(%d+)')
    if holder and fence and tokens[holder] then
      held[#held + 1] = { agent = holder, id = id, fence = fence }
    else
      errors = errors + 1
    end
    return
  end
  id = body:match('^{"id":(%d+)')
  local agent = id and finishing[id]
  if agent and body:find('"status":"completed"', 1, true) then
    finishing[id] = nil
    idle[#idle + 1] = agent
    completes = completes + 1
  else
    errors = errors + 1
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
