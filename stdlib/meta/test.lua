---@meta
-- The test API of `orrery test`, in spec files (`*_spec.lua`) only: the
-- harness (describe, it, hooks, assert, spy) and the fixtures of `test`.
-- A spec also has every table an agent has; they act for the spec's own
-- agent `test-1` (role `test`) in the current test's world.

--- How a test's world is made.
---@class orrery.TestSetup
---@field task? string|table a task file's path, or fields laid over the default task (`id = "spec"`, `type = "test"`, `timeout = 60000`)
---@field settings? table<string, integer> settings of `orrery.toml` for this world: `max_agents`, `spawn_timeout`, `message_timeout`, `max_attempts`, `redelivery_backoff`, `agent_timeout`
---@field spies? string[] host functions (`"bus.send"`, `"spawn.signal"`) whose calls by the world's agents `test.host_calls` lists
---@field llm? string|orrery.LlmAnswer[] a replay file's path (`--llm-record` format), or the answers: a string answers the next call in order, a table answers every call whose prompt contains (or matches) `prompt`; `replay = path` adds a replay file behind them

--- One scripted LLM answer.
---@class orrery.LlmAnswer
---@field prompt? string answers calls whose last user message contains this text or matches it as a Lua pattern; without it, answers one call, in order
---@field answer? string|table the answer's text (a table is sent as JSON text)
---@field error? "timeout"|"rate_limited"|"http"|"malformed" the call fails with an error of this kind
---@field message? string the error's detail

--- What `test.run` returns: the run's report, plus the blackboard it left.
---@class orrery.TestReport
---@field task_id string
---@field status "complete"|"failed"|"timeout"|"interrupted"
---@field duration_ms integer
---@field agents_used string[]
---@field outputs table<string, any>
---@field errors {agent: string, kind: string, message: string, fatal: boolean}[]
---@field metrics table
---@field blackboard table<string, any>

--- One LLM call a test saw.
---@class orrery.LlmCall
---@field prompt string the last user message
---@field messages {role: string, content: string}[]
---@field json boolean
---@field model? string

test = {}

--- Starts a fresh world for the current test (call it in a test or a
--- `before_each`): a new embedded store, the task and LLM of `opts`, no agent
--- but the spec's own. The host tables (`bus`, `blackboard`, ...) are bound
--- to it again, so read them as globals after this call.
---@param opts? orrery.TestSetup
function test.setup(opts) end

--- Starts the roles the world's task starts up front (its `agents`, or
--- every role no spawn condition starts), as `orrery run` would; the task's
--- spawn conditions hold too. Returns the agents' ids.
---@return string[] ids
function test.start() end

--- Moves the test clock `ms` forward: whatever falls due meanwhile (agents'
--- sleeps, timers, timeouts) runs, in order. Same as `sleep(ms)` in a spec.
---@param ms number
function test.advance(ms) end

--- Runs a task from its start to its end, as `orrery run` does, on the test
--- clock: the task and LLM of the current world, or of `opts`.
---@param opts? orrery.TestSetup
---@return orrery.TestReport report
function test.run(opts) end

--- The LLM calls of the current test so far, in order.
---@return orrery.LlmCall[]
function test.llm_calls() end

--- The calls the world's agents made of the host functions the setup's
--- `spies` names (of `name` only, when given), in order: `{agent, name, args}`.
---@param name? string
---@return {agent: string, name: string, args: any[]}[]
function test.host_calls(name) end

--- A fresh copy of role `name`'s module table, loaded in the spec's own VM:
--- call its callbacks and functions directly (they use the spec's host tables).
---@param name string
---@return table module
function test.role(name) end

--- Groups tests under a name; `fn` runs at once to declare them.
---@param name string
---@param fn fun()
function describe(name, fn) end

--- Declares a test: `fn` runs in a world of its own, on a test clock that
--- moves only when everything waits, with the LLM the test scripts.
---@param name string
---@param fn fun()
function it(name, fn) end

--- Declares a test that is not run yet (reported as pending).
---@param name string
---@param fn? fun()
function pending(name, fn) end

--- Runs `fn` before each test of the enclosing `describe` (outer ones first).
---@param fn fun()
function before_each(fn) end

--- Runs `fn` after each test of the enclosing `describe`, also after a failure.
---@param fn fun()
function after_each(fn) end

--- A spy: `calls` holds each call's arguments (`n` is their count).
---@class orrery.Spy
---@field calls table[]
---@field fn function the function to call instead of the original
---@field revert fun(self: orrery.Spy) puts the original back
---@field clear fun(self: orrery.Spy) forgets the calls so far
---@field args fun(self: orrery.Spy, n?: integer): any[] the arguments of call `n` (default: the last)

spy = {}

--- A spy around `fn` (or around nothing): call `s.fn`.
---@param fn? function
---@return orrery.Spy
function spy.new(fn) end

--- Replaces `target[name]` (a host function such as `bus.send`, or a module's)
--- by a spy that records each call and calls the original; reverted when the
--- test ends.
---@param target table
---@param name string
---@return orrery.Spy
function spy.on(target, name) end

--- luassert-like assertions; each fails with `spec_file:line`, the
--- expectation and what was found. `assert(v, message)` still works, and
--- `assert.are.same`, `assert.is.truthy`, ... read as the plain names.
---@class orrery.Assert
---@overload fun(v: any, message?: string, ...): any
---@field are orrery.Assert
---@field is orrery.Assert
---@field has orrery.Assert

---@type orrery.Assert
assert = {}

--- `found == expected`.
---@param expected any
---@param found any
---@param message? string
function assert.equals(expected, found, message) end

--- Same as `assert.equals`.
function assert.equal(expected, found, message) end

--- `found` has the same content as `expected`, deeply; a failure lists every difference.
---@param expected any
---@param found any
---@param message? string
function assert.same(expected, found, message) end

--- `found ~= unexpected`.
function assert.not_equals(unexpected, found, message) end

--- `found` differs from `unexpected` somewhere, deeply.
function assert.not_same(unexpected, found, message) end

--- Neither nil nor false.
function assert.truthy(value, message) end

--- nil or false.
function assert.falsy(value, message) end

--- Exactly true.
function assert.is_true(value, message) end

--- Exactly false.
function assert.is_false(value, message) end

--- nil.
function assert.is_nil(value, message) end

--- Anything but nil.
function assert.is_not_nil(value, message) end

--- A string matching the Lua pattern `pattern`.
---@param pattern string
---@param text any
---@param message? string
function assert.matches(pattern, text, message) end

--- `fn()` raises an error whose text contains `pattern` (plain, or as a Lua
--- pattern); returns the error.
---@param fn fun()
---@param pattern? string
---@param message? string
---@return any err
function assert.has_error(fn, pattern, message) end

--- Same as `assert.has_error`.
function assert.error(fn, pattern, message) end

--- Same as `assert.has_error`.
function assert.has_errors(fn, pattern, message) end

--- `fn()` returns without raising.
---@param fn fun()
---@param message? string
function assert.has_no_error(fn, message) end

--- Assertions on a spy: `.was_called([n])`, `.was_not_called()`,
--- `.was_called_with(...)` (any call whose first arguments are these, deeply).
---@param s orrery.Spy|function
---@return {was_called: fun(n?: integer), was_not_called: fun(), was_called_with: fun(...)}
function assert.spy(s) end

--- Same as `assert.spy`.
function assert.stub(s) end
