//! `bus`: delivery to an agent id, to a role and to everyone; FIFO order;
//! receive timeouts; handlers by type; redelivery and dead letters.

use orrery::config::Config;
use orrery::report::TaskStatus;
use serde_json::{Value, json};

use crate::common::Backend;
use crate::util::{config, error_messages, line_of, output, run, run_clean, show_report, task};

const SENDER: &str = r#"
local M = {}
function M.start(self)
  for _ = 1, 3 do assert(bus.receive(20000), "a listener never got ready") end
  bus.send("listener-2", "direct", { n = 1 })
  bus.send("listener", "to_role", { n = 2 })
  bus.broadcast("news", { n = 3 })
end
return M
"#;

const LISTENER: &str = r#"
local M = {}
function M.start(self)
  self.got = {}
  bus.send("sender", "ready", {})
end
function M.on_message(self, msg)
  self.got[#self.got + 1] = { from = msg.from, to = msg.to, type = msg.type, payload = msg.payload }
  task.output(agent.id, self.got)
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_an_agent_id_one_agent_of_a_role_and_every_agent_on_broadcast() {
    for backend in Backend::all() {
        let report = run_clean(
            backend,
            &[("sender.lua", SENDER), ("listener.lua", LISTENER)],
            task(
                "bus-routing",
                r#"agents = ["sender", "listener", "listener", "listener"]"#,
            ),
        )
        .await;
        let got = |id: &str| output(&report, id).as_array().unwrap().clone();
        let all: Vec<Value> = ["listener-1", "listener-2", "listener-3"]
            .iter()
            .flat_map(|id| got(id))
            .collect();
        let of_type = |t: &str| all.iter().filter(|m| m["type"] == t).count();

        assert!(got("listener-2").contains(
            &json!({"from": "sender-1", "to": "listener-2", "type": "direct", "payload": {"n": 1}})
        ));
        assert_eq!(of_type("direct"), 1, "{all:#?}");
        assert_eq!(
            of_type("to_role"),
            1,
            "a role message goes to one agent: {all:#?}"
        );
        for id in ["listener-1", "listener-2", "listener-3"] {
            let news: Vec<Value> = got(id)
                .into_iter()
                .filter(|m| m["type"] == "news")
                .collect();
            assert_eq!(
                news,
                [json!({"from": "sender-1", "to": "*", "type": "news", "payload": {"n": 3}})],
                "{id}"
            );
        }
        let sender = &report.metrics.agent_metrics["sender-1"];
        // A broadcast is one send, however many agents get a copy.
        assert_eq!((sender.messages_sent, sender.messages_received), (3, 3));
    }
}

const PRODUCER: &str = r#"
local M = {}
function M.start(self)
  for _ = 1, 2 do assert(bus.receive(20000), "a consumer never got ready") end
  for i = 1, 300 do
    bus.send("puller", "n", i)
    bus.send("handler", "n", i)
  end
  bus.send("puller", "end", 0)
  bus.send("handler", "end", 0)
end
return M
"#;

/// Takes its messages with `bus.receive`.
const PULLER: &str = r#"
local M = {}
function M.start(self)
  bus.send("producer", "ready", {})
  local got = {}
  while true do
    local msg = bus.receive(20000)
    assert(msg, "the producer stopped sending")
    if msg.type == "end" then break end
    got[#got + 1] = msg.payload
  end
  task.output("pulled", got)
end
return M
"#;

/// Takes its messages through `on_message`.
const HANDLER: &str = r#"
local M = {}
function M.start(self)
  self.got = {}
  bus.send("producer", "ready", {})
end
function M.on_message(self, msg)
  if msg.type == "end" then
    task.output("handled", self.got)
    agent.finish()
  else
    self.got[#self.got + 1] = msg.payload
  end
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_messages_arrive_in_the_order_they_were_sent() {
    for backend in Backend::all() {
        let report = run_clean(
            backend,
            &[
                ("producer.lua", PRODUCER),
                ("puller.lua", PULLER),
                ("handler.lua", HANDLER),
            ],
            task("bus-fifo", ""),
        )
        .await;
        let expected: Vec<Value> = (1..=300).map(|i| json!(i)).collect();
        assert_eq!(output(&report, "pulled").as_array().unwrap(), &expected);
        assert_eq!(output(&report, "handled").as_array().unwrap(), &expected);
    }
}

const RECEIVER: &str = r#"
local M = {}
function M.start(self)
  local r = {}
  r.waited = bus.receive(30) == nil
  r.no_wait = bus.receive(0) == nil
  bus.send(agent.id, "note", { text = "to myself" })
  local msg = bus.receive(0)
  r.own = msg and msg.payload.text
  r.fields = msg and { msg.from, msg.to, msg.type, msg.attempts, type(msg.id) }
  r.after = bus.receive(0) == nil
  bus.send(agent.id, "bare")
  r.bare_payload_is_nil = bus.receive(0).payload == nil
  task.output("receive", r)
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_returns_nil_when_nothing_arrives_within_the_timeout() {
    for backend in Backend::all() {
        let report = run_clean(backend, &[("solo.lua", RECEIVER)], task("bus-timeout", "")).await;
        assert_eq!(
            output(&report, "receive"),
            &json!({
                "waited": true,
                "no_wait": true,
                "own": "to myself",
                "fields": ["solo-1", "solo-1", "note", 1, "string"],
                "after": true,
                "bare_payload_is_nil": true,
            })
        );
    }
}

const SUBSCRIBER: &str = r#"
local M = {}
function M.start(self)
  self.log = {}
  bus.subscribe("a", function(msg) self.log[#self.log + 1] = "a:" .. msg.payload end)
  bus.subscribe("b", function(msg) self.log[#self.log + 1] = "b:" .. msg.payload end)
  bus.subscribe("a", function(msg) self.log[#self.log + 1] = "a2:" .. msg.payload end)
  for _, kind in ipairs({ "a", "b", "c", "a", "end" }) do
    bus.send(agent.id, kind, kind == "end" and 0 or #self.log)
  end
end
function M.on_message(self, msg)
  self.log[#self.log + 1] = "on_message:" .. msg.type
  if msg.type == "end" then task.output("log", self.log) end
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_handlers_get_their_type_and_on_message_gets_the_rest() {
    for backend in Backend::all() {
        let report = run_clean(
            backend,
            &[("sub.lua", SUBSCRIBER)],
            task("bus-subscribe", ""),
        )
        .await;
        assert_eq!(
            output(&report, "log"),
            &json!([
                "a:0",
                "a2:0",
                "b:0",
                "on_message:c",
                "a:0",
                "a2:0",
                "on_message:end"
            ])
        );
    }
}

const FLAKY: &str = r#"
local M = {}
function M.start(self)
  self.attempts, self.once = {}, 0
  bus.send(agent.id, "job", {})
  bus.send(agent.id, "once", {})
end
function M.on_message(self, msg)
  if msg.type == "job" then
    self.attempts[#self.attempts + 1] = msg.attempts
    task.output("job_attempts", self.attempts)
    error("job handler broke")
  else
    self.once = self.once + 1
    task.output("once", { calls = self.once, attempts = msg.attempts })
    if self.once == 1 then error("first try fails") end
  end
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_gives_the_message_back_until_it_is_dead_lettered() {
    for backend in Backend::all() {
        let scratch = crate::common::Scratch::new(&[("flaky.lua", FLAKY)]);
        let report = crate::common::run_in_process(
            backend,
            &scratch.scripts(),
            task("bus-dead-letter", ""),
            config(|c| c.max_attempts = 3),
        )
        .await;
        // Handler errors do not end the agent, and a message handled on a
        // later attempt is not lost; the one dead-lettered fails the run.
        assert_eq!(
            report.status,
            TaskStatus::Failed,
            "{}",
            show_report(&report)
        );
        assert_eq!(
            report.errors.iter().filter(|e| e.fatal).count(),
            1,
            "only the dead letter fails the run: {}",
            show_report(&report)
        );
        assert_eq!(output(&report, "job_attempts"), &json!([1, 2, 3]));
        assert_eq!(output(&report, "once"), &json!({"calls": 2, "attempts": 2}));

        let errors = error_messages(&report);
        let path = scratch.scripts().join("flaky.lua").display().to_string();
        let line = line_of(FLAKY, "error(\"job handler broke\")");
        let broke = format!("message 'job' from flaky-1: {path}:{line}: job handler broke");
        // Three identical errors: one entry, counted.
        let repeated: Vec<_> = report
            .errors
            .iter()
            .filter(|e| e.message.starts_with(&broke))
            .collect();
        assert_eq!(repeated.len(), 1, "{errors:#?}");
        assert_eq!(repeated[0].count, 3, "{errors:#?}");
        assert!(
            errors.iter().any(
                |e| e.contains("message 'job'") && e.contains("dead-lettered after 3 attempts")
            ),
            "{errors:#?}"
        );
        assert_eq!(
            errors
                .iter()
                .filter(|e| e.contains("first try fails"))
                .count(),
            1
        );
        assert_eq!(report.metrics.agent_metrics["flaky-1"].errors, 4);
    }
}

const CONVERSATION: &str = r#"
local M = {}
function M.start(self)
  bus.send("nobody-here", "hello", {})
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_to_an_unknown_recipient_is_an_error_naming_it() {
    for backend in Backend::all() {
        let report = run(
            backend,
            &[("talker.lua", CONVERSATION)],
            task("bus-unknown", ""),
            Config::default(),
        )
        .await;
        assert_eq!(report.status, TaskStatus::Failed);
        let errors = error_messages(&report);
        assert!(
            errors[0].contains(
                "bus.send: recipient 'nobody-here': no live agent has this id and no script has this role"
            ),
            "{errors:#?}"
        );
    }
}

const EARLY: &str = "local M = {}\nfunction M.start(self) end\nreturn M\n";

/// Waits for `early-1` to end (the API has no event for another agent's
/// phase, so it polls), then messages it.
const LATE: &str = r#"
local M = {}
function M.start(self)
  for _ = 1, 2000 do
    if state.get("early-1") == "COMPLETE" then break end
    sleep(5)
  end
  local ok, err = pcall(bus.send, "early-1", "hello", {})
  task.output("error", tostring(err))
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_to_an_agent_that_ended_is_an_error_naming_it() {
    for backend in Backend::all() {
        let report = run_clean(
            backend,
            &[("early.lua", EARLY), ("late.lua", LATE)],
            task("bus-ended", ""),
        )
        .await;
        let error = output(&report, "error").as_str().unwrap();
        assert!(
            error.contains(": bus.send: recipient 'early-1': the agent has ended"),
            "{error}"
        );
    }
}

/// Payloads of every shape JSON has, sent to itself twice: taken by
/// `bus.receive` (built in place from the envelope) and handed to
/// `on_message` (built through mlua), the two message tables must not differ.
const SHAPES: &str = r#"
local M = {}
local P = { 7, -3, 2.5, "text", true, false, json.null, 1e300, math.maxinteger, "",
  { 1, json.null, "x", { a = { true, false } }, {}, { [1] = 1, [3] = 3 } },
  { x = {}, y = { n = 1, list = { "a", { deep = { 1.5 } } } } } }
local N = #P + 1 -- and a message with no payload
local function same(a, b, path)
  if type(a) ~= type(b) then return path .. ": " .. type(a) .. " vs " .. type(b) end
  if type(a) ~= "table" then
    if a == b and math.type(a) == math.type(b) then return nil end
    return path .. ": " .. tostring(a) .. " vs " .. tostring(b)
  end
  if getmetatable(a) ~= getmetatable(b) then return path .. ": metatables differ" end
  for k, v in pairs(a) do
    local d = same(v, b[k], path .. "." .. tostring(k))
    if d then return d end
  end
  for k in pairs(b) do
    if a[k] == nil then return path .. "." .. tostring(k) .. ": missing" end
  end
end
function M.start(self)
  self.taken, self.n, self.diffs = {}, 0, {}
  for i = 1, N do bus.send(agent.id, "m", P[i]) end
  for i = 1, N do self.taken[i] = assert(bus.receive(0)) end
  for i = 1, N do bus.send(agent.id, "m", P[i]) end
end
function M.on_message(self, msg)
  self.n = self.n + 1
  local taken = self.taken[self.n]
  assert(type(taken.id) == "string" and taken.id ~= msg.id, "ids")
  taken.id, msg.id = nil, nil
  self.diffs[#self.diffs + 1] = same(taken, msg, "message " .. self.n)
  if self.n == N then task.output("diffs", self.diffs) end
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reads_the_same_taken_by_receive_or_handed_to_a_handler() {
    for backend in Backend::all() {
        let report = run_clean(backend, &[("shapes.lua", SHAPES)], task("bus-shapes", "")).await;
        assert_eq!(output(&report, "diffs"), &json!([]), "{backend:?}");
    }
}

/// Sends whose recipient and type change from one message to the next, from
/// two senders: the sender side shares the names it sent with last, the
/// receiving side pushes the strings it pushed last again when the bytes
/// match (`lua_api::fast`); neither may hand out a stale name.
const MIXER: &str = r#"
local M = {}
local SENDS = {
  { "mixer-1", "a" }, { "mixer", "a" }, { "mixer-1", "b" }, { "mixer", "b" },
  { "mixer-1", "a" }, { "mixer-1", "a" }, { "mixer", "c" }, { "mixer-1", "ab" },
}
function M.start(self)
  for i, s in ipairs(SENDS) do bus.send(s[1], s[2], i) end
  bus.send("echo", "go", #SENDS)
  local got = {}
  for _ = 1, 2 * #SENDS do
    local m = assert(bus.receive(20000), "a message never came")
    got[#got + 1] = string.format("%s>%s:%s:%d", m.from, m.to, m.type, m.payload)
  end
  table.sort(got)
  task.output("got", got)
end
return M
"#;

const ECHO: &str = r#"
local M = {}
function M.on_message(self, msg)
  for i = 1, msg.payload do
    bus.send(i % 2 == 0 and "mixer" or "mixer-1", i % 3 == 0 and "x" or "y", i)
  end
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_read_right_when_recipients_types_and_senders_change() {
    let mut want = Vec::new();
    for (i, (to, kind)) in [
        ("mixer-1", "a"),
        ("mixer", "a"),
        ("mixer-1", "b"),
        ("mixer", "b"),
        ("mixer-1", "a"),
        ("mixer-1", "a"),
        ("mixer", "c"),
        ("mixer-1", "ab"),
    ]
    .into_iter()
    .enumerate()
    {
        let i = i + 1;
        want.push(format!("mixer-1>{to}:{kind}:{i}"));
        let to = if i % 2 == 0 { "mixer" } else { "mixer-1" };
        let kind = if i % 3 == 0 { "x" } else { "y" };
        want.push(format!("echo-1>{to}:{kind}:{i}"));
    }
    want.sort();
    for backend in Backend::all() {
        let report = run_clean(
            backend,
            &[("mixer.lua", MIXER), ("echo.lua", ECHO)],
            task("bus-names", r#"agents = ["mixer", "echo"]"#),
        )
        .await;
        assert_eq!(output(&report, "got"), &json!(want), "{backend:?}");
    }
}
