---@meta
-- Shared key/value state of the task. Keys are 1 to 512 bytes of printable
-- text; every key is confined to the task.
--
-- Values are JSON-like: nil, booleans, numbers (not NaN or infinity), UTF-8
-- strings and tables of those. A table whose keys are 1..n is a list (holes
-- come back as `json.null`); any other table is an object whose keys are
-- strings (number keys become their decimal text); an empty table is an
-- empty list. A function, coroutine, userdata or cyclic table is an error at
-- the call, naming the call, the key and the place in the value
-- (`blackboard.set('plan'): a function at steps[2].run cannot be stored`).
-- The same holds for messages, outputs and `json.encode`.
--
-- On the embedded store these calls never yield; on a remote store they do,
-- so do not call them from inside a C function (a `table.sort` comparator, a
-- `string.gsub` replacement function).

blackboard = {}

--- Stores `value` under `key` (nil deletes the key), and notifies watchers.
--- Raises past `max_value_bytes`, or when the task's blackboard quota
--- (`max_blackboard_keys`, `max_blackboard_bytes`) is reached. On a server
--- store the write is sent without waiting: a failure of the server is raised
--- by the agent's next store call (or fails the callback), naming the write.
---@param key string
---@param value any
function blackboard.set(key, value) end

--- The value of `key`, or nil.
---@param key string
---@return any
function blackboard.get(key) end

--- Deletes `key`; true when it existed (watchers see nil).
---@param key string
---@return boolean existed
function blackboard.delete(key) end

--- Every key starting with `prefix` (every key when nil), sorted.
---@param prefix? string
---@return string[]
function blackboard.keys(prefix) end

--- Compare-and-set: replaces the value of `key` with `new` (deletes it when
--- nil) only if it currently equals `expected` (nil: the key is absent).
--- Tables compare by content.
---@param key string
---@param expected any
---@param new any
---@return boolean swapped
function blackboard.cas(key, expected, new) end

--- Atomically replaces the value of `key` with `fn(current)` (nil deletes),
--- retrying when another agent changed it in between, so `fn` may run more
--- than once and should have no other effects. `fn` may change the table it
--- is given in place and return it (`function(p) p.n = p.n + 1; return p end`):
--- the compare is against the value as it was read. Returns the value stored.
--- Raises when `fn` is not a function, or after 1000 lost races in a row.
---@param key string
---@param fn fun(current: any): any
---@return any new
function blackboard.update(key, fn) end

--- Calls `fn(key, value)` on every later change of a key matching
--- `pattern`: the exact key, or every key starting with the prefix before a
--- trailing `*` (`"artifacts/*"`). `value` is nil when the key was deleted.
--- Callbacks run one at a time, between other callbacks of the agent; an
--- agent that watches anything keeps running until `agent.finish()` or
--- until the task goes quiet.
---@param pattern string
---@param fn fun(key: string, value: any)
function blackboard.watch(pattern, fn) end
