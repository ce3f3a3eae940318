-- orrery bench --redis: the original system's workload. Each agent of the role
-- writes K small tables under its own keys, reads them back (checking each,
-- so read-your-writes is measured, not assumed), sends M messages to the next
-- agent of the ring (peer-1 -> peer-2 -> ... -> peer-1) and takes M messages.
-- With `relay`, every agent but peer-1 takes its messages before it sends, so
-- all of them wait at once (for counting connections) until the relay passes.
local M = {}
function M.start(self)
  local k, m, n = task.inputs.k, task.inputs.m, task.inputs.agents
  local me = agent.id
  local peer = "peer-" .. (tonumber(me:match("(%d+)$")) % n + 1)
  local set, get, send, receive = blackboard.set, blackboard.get, bus.send, bus.receive
  -- Agents start one after the other: the next one may not exist yet.
  while state.get(peer) == nil do sleep(1) end
  local t0 = now()
  for j = 1, k do
    set(me .. "/" .. j, { step = j, status = "done", by = me })
  end
  for j = 1, k do
    local v = get(me .. "/" .. j)
    if v == nil or v.step ~= j or v.by ~= me then
      error("read back " .. tostring(v and v.step) .. " for step " .. j)
    end
  end
  local function take()
    for j = 1, m do
      if receive(60000) == nil then error("message " .. j .. " of " .. m .. " never came") end
    end
  end
  if task.inputs.relay and me ~= "peer-1" then take() end
  for j = 1, m do
    send(peer, "step", { stepId = j })
  end
  if not (task.inputs.relay and me ~= "peer-1") then take() end
  task.output("timing/" .. me, { start = t0, stop = now(), ops = 2 * k + 2 * m })
end
return M
