-- orrery bench: reports, first thing, when its start began.
local M = {}
function M.start(self) bus.send("spawner", "up", now()) end
return M
