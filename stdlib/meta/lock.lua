---@meta
-- Named locks of the task, with a TTL, an owner token and a fencing number.

---@class orrery.LockGrant
---@field name string
---@field token string Random owner token: only this grant can release or extend the lock.
---@field fence integer Grows with every grant of this lock, so a resource can refuse a holder whose lock expired.

---@class orrery.LockOptions
---@field ttl? number How long the lock is held unless released or extended (ms, more than 0, default 30000).
---@field wait? number How long to wait for the lock (ms, default: the `message_timeout` setting; 0 tries once).

lock = {}

--- Takes lock `name`, waiting (while other agents run) up to `opts.wait` ms
--- for it to be free. Nil when the wait ran out. Raises on a bad option, or
--- on a new name once the task has used `max_locks` names.
---@param name string
---@param opts? orrery.LockOptions
---@return orrery.LockGrant|nil
function lock.acquire(name, opts) end

--- Releases a grant; false when it had expired or been taken over already.
---@param grant orrery.LockGrant
---@return boolean released
function lock.release(grant) end

--- Extends a grant to `ttl_ms` (more than 0) from now; false when it is no
--- longer held. Raises on a `ttl_ms` of 0, below 0 or NaN.
---@param grant orrery.LockGrant
---@param ttl_ms number
---@return boolean extended
function lock.extend(grant, ttl_ms) end

--- Runs `fn(grant)` holding lock `name` and returns what it returns. The lock
--- is released when `fn` returns and when it raises (the error is raised
--- again). Raises when the lock could not be taken within `opts.wait`.
--- Whatever happens to `fn` (left suspended in a coroutine, say), the host
--- releases every lock an agent still holds when the agent ends.
---@generic R
---@param name string
---@param fn fun(grant: orrery.LockGrant): R
---@param opts? orrery.LockOptions
---@return R
function lock.with(name, fn, opts) end
