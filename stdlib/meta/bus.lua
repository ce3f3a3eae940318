---@meta
-- Messages between agents. Delivery is at least once: a message handed to a
-- handler is acknowledged when the handler returns and given back (redelivered,
-- then dead-lettered after `max_attempts` deliveries) when it raises. Messages
-- from one sender to one queue arrive in the order they were sent.

---@class orrery.Message
---@field id string Unique within the task.
---@field from string Sender agent id.
---@field to string The address the sender used: an agent id, a role, `*` (every agent) or `*<role>` (every agent of a role).
---@field type string Chosen by the sender.
---@field payload any JSON-like value.
---@field attempts integer How many times it has been delivered, this time included.
---@field reply_to? string For a reply (`bus.reply`), the id of the message it answers.

bus = {}

--- Sends a message to an agent id (`beta-1`) or a role (`beta`: exactly one
--- agent of the role gets it, possibly one spawned later). Returns its id.
--- Raises when no live agent has that id and no script has that role, when
--- `to` or `type` is not 1 to 512 bytes without control characters, when the
--- payload cannot be stored or is larger than `max_value_bytes`, or when a
--- queue quota (`max_queue_depth`, `max_queued_bytes`) is reached. On a
--- server store the message is sent without waiting: a failure of the server
--- is raised by the agent's next store call (or fails the callback).
---@param to string
---@param type string
---@param payload any
---@return string id
function bus.send(to, type, payload) end

--- Sends a copy of a message to every other live agent (`to` reads `*`),
--- or, given a role, to every live agent of that role (`to` reads
--- `*<role>`). Returns the message id and how many agents it reached (the
--- replies to wait for with `bus.replies(id, n)`).
---@param type string
---@param payload any
---@param role? string
---@return string id
---@return integer reached
function bus.broadcast(type, payload, role) end

--- Answers `msg`: sends `payload` to its sender as a message of `type`
--- (default `"reply"`) whose `reply_to` is `msg.id`. Returns its id.
---@param msg orrery.Message the message being answered
---@param payload any
---@param type? string
---@return string id
function bus.reply(msg, payload, type) end

--- Sends a message (as `bus.send`) and waits for its reply (`bus.reply`):
--- returns the reply message. While it waits, the agent takes only messages
--- to itself; the others are kept and handed to it afterwards, in order.
--- Raises when no reply came within `timeout_ms` (default: the
--- `message_timeout` setting). Two agents requesting each other at once
--- both time out.
---@param to string
---@param type string
---@param payload any
---@param timeout_ms? number
---@return orrery.Message reply
function bus.request(to, type, payload, timeout_ms) end

--- Waits for replies: `replies(id, n)` the first `n` replies to message `id`
--- (a `bus.broadcast` to a role: `n` is how many it reached), in the order
--- they came; `replies(ids)` one reply to each message of `ids` (ids
--- returned by `bus.send`), in the order of `ids`. Raises, saying how many
--- are missing, when they did not all come within `timeout_ms` (default:
--- the `message_timeout` setting). Other messages are kept, as by `request`.
---@overload fun(ids: string[], timeout_ms?: number): orrery.Message[]
---@param id string
---@param n integer
---@param timeout_ms? number
---@return orrery.Message[] replies
function bus.replies(id, n, timeout_ms) end

--- The next message for this agent (its own queue first, then its role's),
--- waiting up to `timeout_ms` (default: the `message_timeout` setting) while
--- other agents run. Nil when none came in time. A received message is
--- acknowledged at the next `receive` or when the callback returns, and given
--- back if the callback raises.
---@param timeout_ms? number 0 takes only a message already waiting
---@return orrery.Message|nil
function bus.receive(timeout_ms) end

--- Calls `fn(msg)` for every later message of `type` (every type when only a
--- function is given). Messages no handler takes go to the role's
--- `on_message`. Handlers run one at a time, between other callbacks.
---@overload fun(fn: fun(msg: orrery.Message))
---@param type string
---@param fn fun(msg: orrery.Message)
function bus.subscribe(type, fn) end
