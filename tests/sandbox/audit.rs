//! The reachability audit: everything a script can reach from an agent's VM,
//! walked and checked against an allow-list that says why each C function is
//! safe. A new path to a C function (a library registered twice, a helper
//! that leaks a stock function, a new API function) fails the test until it
//! is added here with its reason; an entry nothing reaches any more fails too.
//!
//! The walk starts from every root a script has: the globals, `package.loaded`
//! (the registry's `_LOADED`, which `require` reads), the metatable of every
//! type (strings' included), and the value `require` returns for every
//! stdlib module. From each table it follows keys, values and the metatable
//! (read raw, past any `__metatable` field); from each Lua function its
//! upvalues (a script cannot read those, but a host wrapper that captured a
//! stock function must still be seen). Lua functions need no entry: every
//! instruction they run is under the budget hook. C functions do: a C
//! function runs outside the hook, so each must be cheap or bounded, or the
//! host's own.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mlua::{Lua, Table};
use orrery::agent::sandbox;
use orrery::capabilities::{Capabilities, RoleConfig};
use orrery::config::Config;
use orrery::coordination::Coordination;
use orrery::llm::TaskLlm;
use orrery::lua_api::AgentContext;
use orrery::scripts::ScriptRegistry;
use orrery::store::MemoryStore;

use crate::common::{Scratch, task};
use crate::util::config;

/// Walks the roots breadth-first and returns every distinct C function with
/// the first path that reaches it.
const WALK: &str = r#"
local debug, roots, modules = ...
local getmetatable, getupvalue, getinfo = debug.getmetatable, debug.getupvalue, debug.getinfo
local setupvalue = debug.setupvalue
_G.debug = nil
package.loaded.debug = nil
local seen, found, queue = {}, {}, {}
local function key_text(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return "." .. k end
  if type(k) == "string" then return ("[%q]"):format(k) end
  return "[" .. tostring(k) .. "]"
end
local function push(v, path)
  local t = type(v)
  if t ~= "table" and t ~= "function" and t ~= "userdata" and t ~= "thread" then return end
  if seen[v] then return end
  seen[v] = true
  queue[#queue + 1] = { v, path }
end
for _, root in ipairs(roots) do push(root[2], root[1]) end
for name, value in pairs(modules) do push(value, "require('" .. name .. "')") end
local i = 1
while queue[i] do
  local v, path = queue[i][1], queue[i][2]
  i = i + 1
  local t = type(v)
  if t == "table" then
    local keys = {}
    for k in next, v do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return key_text(a) < key_text(b) end)
    for _, k in ipairs(keys) do
      push(k, path .. "<key " .. key_text(k) .. ">")
      push(rawget(v, k), path .. key_text(k))
    end
  elseif t == "function" then
    if getinfo(v, "S").what == "C" then
      found[#found + 1] = path
    else
      -- The stub of an async host function, made on its first call (see
      -- src/lua_api/lazy.rs): made here, so the walk sees what it calls.
      local ups = {}
      for n = 1, 255 do
        local name, up = getupvalue(v, n)
        if name == nil then break end
        ups[name] = { n, up }
      end
      if ups.make and ups.i and ups.f and ups.f[2] == nil then
        setupvalue(v, ups.f[1], ups.make[2](ups.i[2]))
      end
      for n = 1, 255 do
        local name, up = getupvalue(v, n)
        if name == nil then break end
        push(up, path .. "<upvalue " .. name .. ">")
      end
    end
  end
  if t == "table" or t == "userdata" then
    local mt = getmetatable(v)
    if mt ~= nil and t == "table" then push(mt, path .. "<metatable>") end
  end
end
return found
"#;

/// A VM built as an agent's, for a role granted everything (`granted`) or nothing.
pub(crate) fn agent_vm(scratch: &Scratch, granted: bool) -> sandbox::Vm {
    let mut cfg = Config {
        scripts: scratch.scripts(),
        ..config()
    };
    if granted {
        let caps = Capabilities {
            read_files: Some(scratch.path().to_path_buf()),
            commands: vec!["true".into()],
            http: vec!["127.0.0.1:9".into()],
        };
        cfg.roles
            .insert("probe".into(), RoleConfig { capabilities: caps });
    }
    let registry = Arc::new(ScriptRegistry::load(&cfg.scripts, &cfg.stdlib).unwrap());
    let coord = Coordination::new(
        Arc::new(task("audit", 1000)),
        Arc::new(cfg),
        Arc::new(MemoryStore::new()),
    );
    let ctx = AgentContext::new("probe-1", "probe", coord, registry, TaskLlm::offline());
    let (lua, _budget) = sandbox::agent_vm(&ctx).unwrap();
    lua
}

/// Every C function reachable in `lua`, by first path.
fn reachable(lua: &Lua) -> Vec<String> {
    let globals = lua.globals();
    let loaded: Table = lua.named_registry_value("_LOADED").unwrap();
    let roots = lua.create_table().unwrap();
    let push = |name: &str, value: mlua::Value| {
        let root = lua.create_table().unwrap();
        root.push(name).unwrap();
        root.push(value).unwrap();
        roots.push(root).unwrap();
    };
    push("_G", mlua::Value::Table(globals.clone()));
    push("package.loaded", mlua::Value::Table(loaded));
    // The metatable of each type that has one, read before `debug` is loaded.
    let samples = lua
        .load(
            r#"return { string = "", number = 0, boolean = true, ["nil"] = nil,
                        ["function"] = print, thread = coroutine.running() }"#,
        )
        .eval::<Table>()
        .unwrap();
    let modules = lua.create_table().unwrap();
    let require: mlua::Function = globals.get("require").unwrap();
    for name in ["plan", "validate", "retry", "pretty", "testing", "prompt"] {
        modules
            .set(name, require.call::<mlua::Value>(name).unwrap())
            .unwrap();
    }
    // mlua refuses to load `debug` into a safe VM; the walk needs it, and
    // removes it (global and `package.loaded.debug`) before looking.
    // SAFETY: luaL_requiref on the main thread with room on the stack.
    unsafe {
        lua.exec_raw::<()>((), |state| {
            mlua::ffi::luaL_requiref(state, c"debug".as_ptr(), mlua::ffi::luaopen_debug, 1);
            mlua::ffi::lua_pop(state, 1);
        })
        .unwrap();
    }
    let debug: Table = globals.get("debug").unwrap();
    let getmetatable: mlua::Function = debug.get("getmetatable").unwrap();
    for kind in ["string", "number", "boolean", "function", "thread"] {
        let sample: mlua::Value = samples.get(kind).unwrap();
        let mt: mlua::Value = getmetatable.call(sample).unwrap();
        if !mt.is_nil() {
            push(&format!("<metatable of {kind}>"), mt);
        }
    }
    let light: mlua::Value = getmetatable
        .call(mlua::Value::LightUserData(mlua::LightUserData(
            std::ptr::null_mut(),
        )))
        .unwrap();
    if !light.is_nil() {
        push("<metatable of light userdata>", light);
    }
    lua.load(WALK)
        .set_name("=audit")
        .call::<Vec<String>>((debug, roots, modules))
        .unwrap()
}

/// Each C function a script can reach, by the first path the walk finds, and
/// why it is safe to run outside the budget hook.
const ALLOWED: &[(&str, &str)] = &[
    // Strings' arithmetic metamethods (Lua 5.4 converts "10" + 1).
    ("<metatable of string>.__add", STRING_ARITH),
    ("<metatable of string>.__div", STRING_ARITH),
    ("<metatable of string>.__idiv", STRING_ARITH),
    ("<metatable of string>.__mod", STRING_ARITH),
    ("<metatable of string>.__mul", STRING_ARITH),
    ("<metatable of string>.__pow", STRING_ARITH),
    ("<metatable of string>.__sub", STRING_ARITH),
    ("<metatable of string>.__unm", STRING_ARITH),
    // Base functions.
    (
        "_G.assert",
        "returns its arguments: linear in their number, which the Lua stack bounds",
    ),
    (
        "_G.collectgarbage",
        "host replacement: collect, count, step and isrunning only; a collection is linear in the agent's heap",
    ),
    (
        "_G.error",
        "constant work (adds a position to a string message)",
    ),
    ("_G.getmetatable", "constant work; honours __metatable"),
    (
        "_G.ipairs",
        "constant work; the iteration steps are Lua code",
    ),
    (
        "_G.load",
        "host replacement: text only, compiled in time linear in the text, which is in the agent's heap; the chunk runs under the budget",
    ),
    ("_G.next", "one table step"),
    (
        "_G.pairs",
        "constant work (a __pairs metamethod runs as Lua code)",
    ),
    (
        "_G.print",
        "host replacement: one line of at most 16 KiB to the host's log, control characters escaped",
    ),
    ("_G.rawequal", "constant work"),
    ("_G.rawget", "constant work"),
    ("_G.rawlen", "constant work"),
    ("_G.rawset", "constant work"),
    (
        "_G.require",
        "host: looks up the script registry; a module's top level runs under the budget",
    ),
    (
        "_G.select",
        "constant work: the arguments are already on the stack",
    ),
    (
        "_G.setmetatable",
        "host replacement: refuses __gc (finalizers run with hooks off)",
    ),
    ("_G.tonumber", "linear in its string argument"),
    (
        "_G.tostring",
        "constant work; __tostring and __name run as Lua code",
    ),
    ("_G.type", "constant work"),
    (
        "_G.pcall<upvalue pcall>",
        "stock pcall, reachable only inside the host's pcall wrapper (surfaces Rust panics)",
    ),
    (
        "_G.pcall<upvalue surface>",
        "host: returns its arguments (reading them in Rust surfaces a caught panic)",
    ),
    // coroutine
    ("_G.coroutine.create", "constant work"),
    ("_G.coroutine.isyieldable", "constant work"),
    ("_G.coroutine.running", "constant work"),
    ("_G.coroutine.status", "constant work"),
    ("_G.coroutine.yield", "constant work"),
    (
        "_G.coroutine.resume<upvalue resume>",
        "stock resume, reachable only inside the host's resume and wrap, which refuse to resume once the budget is spent",
    ),
    (
        "_G.coroutine.resume<upvalue spent>",
        "host: fails when the callback's budget is spent",
    ),
    (
        "_G.coroutine.close<upvalue close>",
        "stock close, reachable only inside the host's wrappers; the __close handlers it runs run with hooks on (patched Lua core)",
    ),
    // math: constant work each (min and max linear in their arguments).
    ("_G.math.abs", MATH),
    ("_G.math.acos", MATH),
    ("_G.math.asin", MATH),
    ("_G.math.atan", MATH),
    ("_G.math.ceil", MATH),
    ("_G.math.cos", MATH),
    ("_G.math.cosh", MATH),
    ("_G.math.deg", MATH),
    ("_G.math.exp", MATH),
    ("_G.math.floor", MATH),
    ("_G.math.fmod", MATH),
    ("_G.math.frexp", MATH),
    ("_G.math.ldexp", MATH),
    ("_G.math.log", MATH),
    ("_G.math.log10", MATH),
    ("_G.math.max", MATH),
    ("_G.math.min", MATH),
    ("_G.math.modf", MATH),
    ("_G.math.pow", MATH),
    ("_G.math.rad", MATH),
    ("_G.math.random", MATH),
    ("_G.math.randomseed", MATH),
    ("_G.math.sin", MATH),
    ("_G.math.sinh", MATH),
    ("_G.math.sqrt", MATH),
    ("_G.math.tan", MATH),
    ("_G.math.tanh", MATH),
    ("_G.math.tointeger", MATH),
    ("_G.math.type", MATH),
    ("_G.math.ult", MATH),
    // os: the clock only.
    ("_G.os.clock", "reads the clock"),
    ("_G.os.date", "linear in its format string"),
    ("_G.os.difftime", "constant work"),
    (
        "_G.os.time",
        "reads the clock, or six fields of a table (metamethods run as Lua code)",
    ),
    // string
    (
        "_G.string.byte",
        "at most the string's length of results, within the Lua stack limit",
    ),
    ("_G.string.char", "linear in its arguments"),
    ("_G.string.find", PATTERN),
    ("_G.string.gmatch", PATTERN),
    ("_G.string.gsub", PATTERN),
    ("_G.string.match", PATTERN),
    (
        "_G.string.format",
        "each conversion is bounded (width and precision at most 99); linear in the format and the arguments; %s of a table calls __tostring as Lua code",
    ),
    ("_G.string.len", "constant work"),
    ("_G.string.lower", "linear in the string"),
    ("_G.string.upper", "linear in the string"),
    ("_G.string.reverse", "linear in the string"),
    ("_G.string.sub", "linear in the result, at most the string"),
    (
        "_G.string.pack",
        "linear in the format and the arguments; padding and 'cN' grow a buffer in the Lua heap, so the heap limit bounds them",
    ),
    ("_G.string.packsize", "linear in the format"),
    (
        "_G.string.unpack",
        "linear in the format; every read is checked against the data's length",
    ),
    (
        "_G.string.rep",
        "host replacement: an empty string with an empty separator returns at once; otherwise every step writes at least a byte into the Lua heap, so the heap limit bounds it",
    ),
    // table (insert, remove and move are Lua code: see agent/safe_table.rs)
    (
        "_G.table.concat",
        "one step per element, and a missing element is an error (__index runs as Lua code); the result grows in the Lua heap",
    ),
    ("_G.table.pack", "linear in its arguments"),
    (
        "_G.table.sort",
        "O(n log n) comparisons of the elements of a table (under 2^31; a comparator or metamethod runs as Lua code, and comparing missing elements is an error)",
    ),
    (
        "_G.table.unpack",
        "at most 1,000,000 values (the Lua stack limit), each one table read",
    ),
    // utf8: bounded by the string.
    ("_G.utf8.char", "linear in its arguments"),
    (
        "_G.utf8.codepoint",
        "at most the string's length of results, within the Lua stack limit",
    ),
    ("_G.utf8.codes", "one step per call"),
    ("_G.utf8.len", "linear in the string"),
    ("_G.utf8.offset", "linear in the string"),
    // mlua's async machinery: upvalues of the Lua wrapper of every async host function.
    (
        "_G.bus.receive<upvalue wait_receive><upvalue f><upvalue get_future>",
        ASYNC,
    ),
    (
        "_G.bus.receive<upvalue wait_receive><upvalue f><upvalue poll>",
        ASYNC,
    ),
    (
        "_G.bus.send<upvalue settle><upvalue f><upvalue get_future>",
        ASYNC,
    ),
    (
        "_G.bus.send<upvalue settle><upvalue f><upvalue poll>",
        ASYNC,
    ),
    ("_G.exec.run<upvalue f><upvalue get_future>", ASYNC),
    ("_G.exec.run<upvalue f><upvalue poll>", ASYNC),
    ("_G.fs.list<upvalue f><upvalue get_future>", ASYNC),
    ("_G.fs.list<upvalue f><upvalue poll>", ASYNC),
    ("_G.fs.read<upvalue f><upvalue get_future>", ASYNC),
    ("_G.fs.read<upvalue f><upvalue poll>", ASYNC),
    ("_G.http.get<upvalue f><upvalue get_future>", ASYNC),
    ("_G.http.get<upvalue f><upvalue poll>", ASYNC),
    ("_G.http.post<upvalue f><upvalue get_future>", ASYNC),
    ("_G.http.post<upvalue f><upvalue poll>", ASYNC),
    (
        "_G.llm.chat<upvalue call><upvalue f><upvalue get_future>",
        ASYNC,
    ),
    ("_G.llm.chat<upvalue call><upvalue f><upvalue poll>", ASYNC),
    ("_G.lock.acquire<upvalue f><upvalue get_future>", ASYNC),
    ("_G.lock.acquire<upvalue f><upvalue poll>", ASYNC),
    ("_G.sleep<upvalue f><upvalue get_future>", ASYNC),
    ("_G.sleep<upvalue f><upvalue poll>", ASYNC),
    (
        "_G.sleep<upvalue f><upvalue unpack>",
        "mlua's C unpack of a future's results, captured by its async wrapper: linear in the results the host function returns",
    ),
    (
        "_G.sleep<upvalue make>",
        "host: makes the async host function a stub stands for (mlua's machinery, see the <upvalue f> entries), once per function, with the stock coroutine.yield",
    ),
    (
        "_G.bus.send<upvalue send_fast>",
        "host C function: one message to a recipient known here, as bus.send; a payload that needs a walk, or anything refused, goes to the mlua functions",
    ),
    (
        "_G.bus.receive<upvalue receive_fast>",
        "host C function: takes one message ready here and builds its table; linear in the payload, which max_value_bytes bounds",
    ),
    ("_G.spawn.agent<upvalue f><upvalue get_future>", ASYNC),
    ("_G.spawn.agent<upvalue f><upvalue poll>", ASYNC),
    ("_G.spawn.signal<upvalue f><upvalue get_future>", ASYNC),
    ("_G.spawn.signal<upvalue f><upvalue poll>", ASYNC),
    ("_G.spawn.wait<upvalue f><upvalue get_future>", ASYNC),
    ("_G.spawn.wait<upvalue f><upvalue poll>", ASYNC),
    ("_G.bus.request<upvalue f><upvalue get_future>", ASYNC),
    ("_G.bus.request<upvalue f><upvalue poll>", ASYNC),
    ("_G.bus.replies<upvalue f><upvalue get_future>", ASYNC),
    ("_G.bus.replies<upvalue f><upvalue poll>", ASYNC),
    // The host API (src/lua_api): Rust, every input bounded by the limits and quotas.
    ("_G.agent.finish", "host: sets a flag"),
    (
        "_G.agent.checkpoint",
        "host: one store write of a value bounded by max_value_bytes",
    ),
    (
        "_G.blackboard.cas",
        "host: converts two values (refused past max_value_bytes) and compares one key; within the blackboard quotas",
    ),
    ("_G.blackboard.delete", "host: deletes one key"),
    (
        "_G.blackboard.update<upvalue read>",
        "host: reads one key (a value of at most max_value_bytes) and keeps it as read",
    ),
    (
        "_G.blackboard.update<upvalue swap>",
        "host: converts one value (refused past max_value_bytes) and compares one key; within the blackboard quotas",
    ),
    (
        "_G.blackboard.get",
        "host: reads one key (a value of at most max_value_bytes)",
    ),
    (
        "_G.blackboard.keys",
        "host: the task's keys, at most max_blackboard_keys",
    ),
    (
        "_G.blackboard.set",
        "host: converts a value (refused past max_value_bytes) and writes one key; within the blackboard quotas",
    ),
    (
        "_G.blackboard.watch",
        "host: records a watch in the Lua heap",
    ),
    (
        "_G.bus.broadcast",
        "host: one message (payload at most max_value_bytes) per live agent; queue quotas",
    ),
    (
        "_G.bus.receive<upvalue try_receive>",
        "host: takes one message without waiting",
    ),
    (
        "_G.bus.receive<upvalue receive_now>",
        "host: takes one message the store holds here, without waiting",
    ),
    (
        "_G.bus.send<upvalue send_now>",
        "host: one message (payload at most max_value_bytes, names bounded); queue quotas",
    ),
    (
        "_G.bus.send<upvalue send_wait>",
        "host: one message (payload at most max_value_bytes, names bounded); queue quotas",
    ),
    (
        "_G.bus.subscribe",
        "host: records a handler in the Lua heap",
    ),
    (
        "_G.bus.reply",
        "host: one message (payload at most max_value_bytes, names bounded); queue quotas",
    ),
    (
        "_G.every",
        "host: one timer, at most MAX_TIMERS per agent; its callback runs under the budget",
    ),
    (
        "_G.after",
        "host: one timer, at most MAX_TIMERS per agent; its callback runs under the budget",
    ),
    ("_G.time.cancel", "host: removes one timer"),
    ("_G.exec<metatable>.__index", NOT_GRANTED),
    ("_G.fs<metatable>.__index", NOT_GRANTED),
    ("_G.http<metatable>.__index", NOT_GRANTED),
    (
        "_G.json.decode",
        "host: parses a text of at most max_value_bytes",
    ),
    (
        "_G.json.encode",
        "host: converts a value, refused past max_value_bytes",
    ),
    ("_G.llm.available", "host: constant work"),
    ("_G.llm.mode", "host: constant work"),
    ("_G.lock.extend", "host: one lock"),
    ("_G.lock.release", "host: one lock"),
    ("_G.log.debug", LOG),
    ("_G.log.error", LOG),
    ("_G.log.info", LOG),
    ("_G.log.warn", LOG),
    ("_G.metrics.get", "host: one counter"),
    ("_G.metrics.incr", "host: one counter, within max_metrics"),
    (
        "_G.metrics.snapshot",
        "host: the task's counters, bounded by the quotas",
    ),
    ("_G.now", "host: reads the clock"),
    (
        "_G.spawn.when",
        "host: one spawn condition, within max_spawn_conditions",
    ),
    (
        "_G.state.agents",
        "host: one record per agent of the task, bounded by max_spawns",
    ),
    ("_G.state.get", "host: one record"),
    (
        "_G.state.history",
        "host: one agent's history, bounded by its phases",
    ),
    (
        "_G.state.set",
        "host: one phase change (legal moves only go forward)",
    ),
    (
        "_G.task<metatable>.__index.output",
        "host: writes one blackboard key (see blackboard.set)",
    ),
    (
        "_G.task<metatable>.__index.outputs",
        "host: reads the task's outputs, within the blackboard quotas",
    ),
];

const STRING_ARITH: &str = "converts both operands to numbers (linear in their length) or calls the other operand's metamethod as Lua code";
const MATH: &str = "constant work (min and max: linear in their arguments)";
const PATTERN: &str = "host port of Lua's matcher (src/agent/patterns.rs) that checks the budget as it goes; gsub's result is bounded by memory_limit";
const ASYNC: &str = "mlua's async call machinery, an upvalue of the Lua wrapper of an async host function: scripts cannot read upvalues; it starts or polls the host future";
const NOT_GRANTED: &str = "host: the capability is not granted; any use fails naming the setting";
const LOG: &str = "host: one line of at most 16 KiB to the host's log, control characters escaped";

#[test]
fn every_c_function_a_script_can_reach_is_on_the_allow_list() {
    let scratch = Scratch::new(&[("probe.lua", "return {}")]);
    let mut found = BTreeSet::new();
    for granted in [false, true] {
        found.extend(reachable(&agent_vm(&scratch, granted)));
    }
    let allowed: BTreeMap<&str, &str> = ALLOWED.iter().copied().collect();
    assert_eq!(allowed.len(), ALLOWED.len(), "an entry is listed twice");
    let unexplained: Vec<&String> = found
        .iter()
        .filter(|p| !allowed.contains_key(p.as_str()))
        .collect();
    let stale: Vec<&&str> = allowed.keys().filter(|p| !found.contains(**p)).collect();
    assert!(
        unexplained.is_empty() && stale.is_empty(),
        "C functions reachable by scripts but not on the allow-list (add each with why it is safe): \
         {unexplained:#?}\nallow-list entries nothing reaches any more: {stale:#?}"
    );
}

#[test]
fn package_loaded_holds_exactly_the_tables_the_globals_show() {
    let scratch = Scratch::new(&[("probe.lua", "return {}")]);
    let lua = agent_vm(&scratch, false);
    let names: Vec<String> = lua
        .load(
            r#"
            local names = {}
            for name, value in pairs(package.loaded) do
              assert(value == _G[name] or (name == "_G" and value == _G), name)
              assert(require(name) == value, name)
              names[#names + 1] = name
            end
            table.sort(names)
            return names
            "#,
        )
        .eval()
        .unwrap();
    assert_eq!(
        names,
        [
            "_G",
            "agent",
            "blackboard",
            "bus",
            "coroutine",
            "exec",
            "fs",
            "http",
            "json",
            "llm",
            "lock",
            "log",
            "math",
            "metrics",
            "os",
            "spawn",
            "state",
            "string",
            "table",
            "task",
            "time",
            "utf8"
        ]
    );
}

#[test]
fn the_walk_sees_a_library_left_in_package_loaded() {
    // The escape this audit exists for: a stock library registered in
    // `package.loaded` but not as a global. The walk must report it.
    let scratch = Scratch::new(&[("probe.lua", "return {}")]);
    let lua = agent_vm(&scratch, false);
    // SAFETY: luaL_requiref on the main thread with room on the stack.
    unsafe {
        lua.exec_raw::<()>((), |state| {
            mlua::ffi::luaL_requiref(state, c"io".as_ptr(), mlua::ffi::luaopen_io, 0);
            mlua::ffi::lua_pop(state, 1);
        })
        .unwrap();
    }
    let found = reachable(&lua);
    assert!(
        found.iter().any(|p| p == "package.loaded.io.open"),
        "{found:#?}"
    );
}

/// Every way a script can wrap a waiting host call in coroutines, run in
/// an agent's VM: what each hands the script, as `type` names, one line per
/// shape. mlua suspends an async call by yielding a "pending" marker (a
/// light userdata holding a host address); that must never be among them.
const WAITING_SHAPES: &str = r#"
local shapes = {
  resume = function()
    local co = coroutine.create(function() sleep(5) return "slept" end)
    return coroutine.resume(co)
  end,
  resume_again = function()
    local co = coroutine.create(function() sleep(5) return "slept" end)
    coroutine.resume(co)
    return coroutine.resume(co)
  end,
  wrap = function() return coroutine.wrap(function() return bus.receive(5) end)() end,
  nested = function()
    return coroutine.wrap(function()
      return coroutine.resume(coroutine.create(function() sleep(5) return 1 end))
    end)()
  end,
  pcall_inside = function()
    return coroutine.resume(coroutine.create(function() return pcall(sleep, 5) end))
  end,
  xpcall_inside = function()
    return coroutine.resume(coroutine.create(function() return xpcall(sleep, tostring, 5) end))
  end,
  yield_then_wait = function()
    local co = coroutine.wrap(function() coroutine.yield("mine") sleep(5) return "done" end)
    return co(), co()
  end,
  close_after = function()
    local co = coroutine.create(function() sleep(5) end)
    local a, b = coroutine.resume(co)
    return a, b, coroutine.status(co), coroutine.close(co)
  end,
  host_wrapper = function()
    return coroutine.wrap(function()
      return blackboard.update("k", function(v) sleep(5) return (v or 0) + 1 end)
    end)()
  end,
}
local names = {}
for name in pairs(shapes) do names[#names + 1] = name end
table.sort(names)
local out = {}
for _, name in ipairs(names) do
  local got = table.pack(shapes[name]())
  local types = {}
  for i = 1, got.n do types[i] = type(got[i]) end
  out[#out + 1] = name .. ": " .. table.concat(types, " ")
end
return out
"#;

#[tokio::test]
async fn no_shape_of_a_waiting_call_in_a_coroutine_hands_the_script_a_userdata() {
    let scratch = Scratch::new(&[("probe.lua", "return {}")]);
    let lua = agent_vm(&scratch, true);
    let got: Vec<String> = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        lua.load(WAITING_SHAPES)
            .set_name("=shapes")
            .call_async::<Vec<String>>(()),
    )
    .await
    .expect("every shape returns")
    .unwrap();
    assert_eq!(
        got,
        [
            "close_after: boolean nil string boolean",
            "host_wrapper: number",
            "nested: boolean number",
            "pcall_inside: boolean boolean",
            "resume: boolean string",
            "resume_again: boolean string",
            "wrap: nil",
            "xpcall_inside: boolean boolean",
            "yield_then_wait: string string",
        ]
    );
}
