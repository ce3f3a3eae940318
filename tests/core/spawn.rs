//! `spawn`: conditions below, at and above their threshold (once, or every
//! time with `repeat`), spawning a role added as a file, and `max_agents`.

use std::sync::Arc;
use std::time::Duration;

use orrery::orchestrator::Orchestrator;
use orrery::report::TaskStatus;
use orrery::scripts::ScriptRegistry;
use serde_json::{Value, json};

use crate::common::{Backend, Scratch, orrery, show};
use crate::util::{config, output, phases, run, run_clean, show_report, task};

const SIGNALER: &str = r#"
local M = {}
function M.start(self)
  local r = {}
  r.below = spawn.signal("GO", 0.4)
  r.at = spawn.signal("GO", 0.5)
  r.above = spawn.signal("GO", 0.9) -- the condition already fired: once only
  r.other_trigger = spawn.signal("OTHER", 1)
  spawn.when({ trigger = "AGAIN", threshold = 1, agent = "helper", ["repeat"] = true })
  r.repeat_below = spawn.signal("AGAIN", 0.99)
  r.repeat_first = spawn.signal("AGAIN", 1)
  r.repeat_second = spawn.signal("AGAIN", 7)
  task.output("started", r)
end
return M
"#;

const HELPER: &str = r#"
local M = {}
function M.start(self) task.output(agent.id, agent.role) end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_condition_starts_its_role_at_or_above_the_threshold_once_unless_it_repeats() {
    for backend in Backend::all() {
        let report = run_clean(
            backend,
            &[("signaler.lua", SIGNALER), ("helper.lua", HELPER)],
            task(
                "spawn-thresholds",
                "[[spawn]]\ntrigger = \"GO\"\nthreshold = 0.5\nagent = \"helper\"\n",
            ),
        )
        .await;
        assert_eq!(
            output(&report, "started"),
            &json!({
                "below": [],
                "at": ["helper-1"],
                "above": [],
                "other_trigger": [],
                "repeat_below": [],
                "repeat_first": ["helper-2"],
                "repeat_second": ["helper-3"],
            })
        );
        // Helpers are not started up front: a condition names them.
        assert_eq!(
            report.agents_used,
            ["signaler-1", "helper-1", "helper-2", "helper-3"]
        );
        assert_eq!(report.metrics.spawn_events, 3);
        for id in ["helper-1", "helper-2", "helper-3"] {
            assert_eq!(output(&report, id), "helper");
            assert_eq!(phases(&report, id), ["INIT", "READY", "COMPLETE"]);
        }
    }
}

const BOSS: &str = r#"
local M = {}
function M.start(self)
  local id = spawn.agent("delta")
  local msg = assert(bus.receive(20000), "delta never said hello")
  local ok, err = pcall(spawn.agent, "epsilon")
  task.output("boss", { spawned = id, hello = msg.payload, from = msg.from, unknown = tostring(err) })
end
return M
"#;

const DELTA: &str = r#"
local M = {}
function M.start(self)
  bus.send("boss", "hello", { me = agent.id, role = agent.role, task = agent.task_id == task.id })
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_added_as_a_file_is_spawned_from_another_script() {
    for backend in Backend::all() {
        let report = run_clean(
            backend,
            &[("boss.lua", BOSS), ("delta.lua", DELTA)],
            task("spawn-delta", r#"agents = ["boss"]"#),
        )
        .await;
        let boss = output(&report, "boss");
        assert_eq!(boss["spawned"], "delta-1");
        assert_eq!(boss["from"], "delta-1");
        assert_eq!(
            boss["hello"],
            json!({"me": "delta-1", "role": "delta", "task": true})
        );
        assert!(
            boss["unknown"]
                .as_str()
                .unwrap()
                .contains(".lua:6: spawn.agent: unknown role 'epsilon': no "),
            "{boss:#}"
        );
        assert_eq!(report.agents_used, ["boss-1", "delta-1"]);
        assert_eq!(report.metrics.spawn_events, 1);
    }
}

const SPAWNER: &str = r#"
local M = {}
function M.start(self)
  spawn.agent("idle")
  spawn.agent("idle")
end
return M
"#;

/// Stays live (it has a handler) without doing anything.
const IDLE: &str = r#"
local M = {}
function M.on_message(self, msg) end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawning_past_max_agents_fails_with_spawn_limit() {
    for backend in Backend::all() {
        let report = run(
            backend,
            &[("spawner.lua", SPAWNER), ("idle.lua", IDLE)],
            task("spawn-limit", r#"agents = ["spawner"]"#),
            config(|c| c.max_agents = 2),
        )
        .await;
        assert_eq!(
            report.status,
            TaskStatus::Failed,
            "{}",
            show_report(&report)
        );
        assert_eq!(report.exit_code(), orrery::error::exit::SPAWN_LIMIT);
        let fatal: Vec<_> = report.errors.iter().filter(|e| e.fatal).collect();
        assert_eq!(fatal.len(), 1, "{}", show_report(&report));
        assert_eq!(fatal[0].kind, "spawn_limit");
        assert_eq!(fatal[0].agent, "spawner-1");
        // As the script would have caught it: its line, the function, the
        // traceback.
        let (first, traceback) = fatal[0].message.split_once('\n').unwrap_or_default();
        let line = crate::util::line_of(SPAWNER, "spawn.agent") + 1;
        assert!(
            first.ends_with(&format!(
                "spawner.lua:{line}: spawn.agent: spawn limit: cannot start 'idle', 2 agents live and max_agents is 2"
            )),
            "{}",
            show_report(&report)
        );
        assert!(
            traceback.starts_with("stack traceback:") && traceback.contains("spawner.lua:"),
            "{}",
            show_report(&report)
        );
        assert_eq!(report.agents_used, ["spawner-1", "idle-1"]);
    }
}

#[test]
fn spawn_limit_exits_with_its_own_code_through_the_binary() {
    let scratch = Scratch::new(&[("spawner.lua", SPAWNER), ("idle.lua", IDLE)]);
    scratch.write(
        "task.toml",
        "id = \"limit\"\ntype = \"test\"\ndescription = \"d\"\nagents = [\"spawner\"]\n",
    );
    let out = orrery(
        scratch.path(),
        &["run", "task.toml", "--json", "--max-agents", "2"],
    );
    assert_eq!(out.status.code(), Some(6), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "failed");
    let message = report["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("scripts/spawner.lua:5: spawn.agent: spawn limit: cannot start 'idle'")
            && message.contains("max_agents is 2"),
        "{}",
        show(&out)
    );
}

const PARENT: &str = r#"
local M = {}
function M.start(self)
  local id = spawn.agent("child")
  task.output("seen", { child = id, said = blackboard.get("hello") or "nothing yet" })
end
return M
"#;

const CHILD: &str = r#"
local M = {}
function M.start(self) blackboard.set("hello", agent.id) end
return M
"#;

/// On one thread, `spawn.agent` returns after the new agent's first turn
/// (its `start` up to its first wait), as when the orchestrator's task
/// started it: specs rely on it. The spawn itself is done on the parent's
/// task now, which would otherwise go on first.
#[tokio::test(flavor = "current_thread")]
async fn a_spawned_agent_takes_its_first_turn_before_its_parent_goes_on() {
    let report = run_clean(
        Backend::Memory,
        &[("parent.lua", PARENT), ("child.lua", CHILD)],
        task("spawn-first-turn", r#"agents = ["parent"]"#),
    )
    .await;
    assert_eq!(
        output(&report, "seen"),
        &json!({ "child": "child-1", "said": "child-1" })
    );
}

const FANOUT: &str = r#"
local M = {}
function M.start(self)
  local ids = {}
  for i = 1, 4 do ids[i] = spawn.agent("helper") end
  task.output(agent.id, ids)
end
return M
"#;

/// Spawns are done on the tasks of the agents that ask, several at once:
/// each gets an id of its own, and each is counted and run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_spawning_at_once_get_ids_of_their_own() {
    for backend in Backend::all() {
        let report = run(
            backend,
            &[("fanout.lua", FANOUT), ("helper.lua", HELPER)],
            task(
                "spawn-at-once",
                r#"agents = ["fanout", "fanout", "fanout"]"#,
            ),
            config(|c| c.max_agents = 15),
        )
        .await;
        crate::util::assert_clean(backend, &report);
        let mut helpers: Vec<String> = ["fanout-1", "fanout-2", "fanout-3"]
            .iter()
            .flat_map(|id| output(&report, id).as_array().unwrap().clone())
            .map(|id| id.as_str().unwrap().to_string())
            .collect();
        helpers.sort();
        let mut expected: Vec<String> = (1..=12).map(|n| format!("helper-{n}")).collect();
        expected.sort();
        assert_eq!(helpers, expected);
        assert_eq!(report.agents_used.len(), 15);
        assert_eq!(report.metrics.spawn_events, 12);
        for id in &expected {
            assert_eq!(output(&report, id), "helper");
            assert_eq!(phases(&report, id), ["INIT", "READY", "COMPLETE"]);
        }
    }
}

const ONE_AT_A_TIME: &str = r#"
local M = {}
function M.start(self)
  blackboard.set("started", true)
  for i = 1, 30 do
    local ok, id = pcall(spawn.agent, "helper")
    if not ok then
      blackboard.set("result", tostring(id))
      return
    end
    assert(spawn.wait(id) == "COMPLETE", id)
  end
  blackboard.set("result", "ok")
end
return M
"#;

/// An agent that ended gives its place under `max_agents` back as it
/// ends, not when the orchestrator's task gets round to joining it: a
/// script starting short-lived agents one after another, each waited for,
/// never hits the limit, however far behind the orchestrator is. Here it
/// is not polled at all while they run (`orrery bench`'s spawn figure hit
/// the limit, 64 places deep, on a loaded machine).
#[tokio::test(flavor = "current_thread")]
async fn agents_started_one_after_another_never_find_an_ended_ones_place_taken() {
    let scratch = Scratch::new(&[("serial.lua", ONE_AT_A_TIME), ("helper.lua", HELPER)]);
    let mut config = config(|c| {
        c.max_agents = 2;
        c.quotas.max_spawns = 40;
    });
    config.scripts = scratch.scripts();
    let registry = ScriptRegistry::load(&config.scripts, &config.stdlib).unwrap();
    let store = orrery::store::open(&config.store, Duration::from_secs(5))
        .await
        .unwrap();
    let task = task("spawn-serial", r#"agents = ["serial"]"#);
    let orchestrator = Orchestrator::new(task, config, store, Arc::new(registry)).unwrap();
    let coord = orchestrator.coordination().clone();
    let key = |key: &'static str| {
        let coord = coord.clone();
        async move {
            loop {
                if let Some(v) = coord.blackboard.get(key).await.unwrap() {
                    return v;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let run = orchestrator.run();
    tokio::pin!(run);
    tokio::select! {
        _ = &mut run => panic!("the run ended before its agent started"),
        _ = key("started") => {}
    }
    // From here on the orchestrator's task is not polled: it joins no agent.
    let result = tokio::time::timeout(Duration::from_secs(30), key("result"))
        .await
        .expect("the serial agent went on");
    assert_eq!(result, "ok");
    let report = run.await.unwrap();
    assert_eq!(
        report.status,
        TaskStatus::Complete,
        "{}",
        show_report(&report)
    );
    assert_eq!(report.agents_used.len(), 31);
}

/// Registers its condition at the top level, which runs for each of the
/// three agents of the role (and again at each reload).
const TOP_LEVEL_WHEN: &str = r#"
spawn.when({ trigger = "T", threshold = 1, agent = "helper" })
local M = {}
function M.start(self)
  if agent.id ~= "top-1" then
    bus.send("top-1", "ready", {})
    return
  end
  -- The others' top levels have run: they are in start.
  assert(bus.receive(20000), "no ready")
  assert(bus.receive(20000), "no ready")
  local again = spawn.when({ trigger = "T", threshold = 1, agent = "helper" })
  local other = spawn.when({ trigger = "T", threshold = 2, agent = "helper" })
  local started = spawn.signal("T", 1)
  -- Past max_spawn_conditions (256) identical registrations: no quota error.
  for i = 1, 300 do spawn.when({ trigger = "T", threshold = 1, agent = "helper" }) end
  task.output("when", { again = again, other = other, started = started })
end
return M
"#;

/// A condition identical to one registered (same trigger, threshold, role
/// and repeat flag) keeps that one and returns false, so a role's top level
/// registers it once however many agents load it; a different one is added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_an_identical_condition_again_keeps_the_one_there() {
    for backend in Backend::all() {
        let report = run(
            backend,
            &[("top.lua", TOP_LEVEL_WHEN), ("helper.lua", HELPER)],
            task("spawn-when-again", r#"agents = ["top", "top", "top"]"#),
            config(|c| c.max_agents = 10),
        )
        .await;
        crate::util::assert_clean(backend, &report);
        let when = output(&report, "when");
        assert_eq!(when["again"], false, "{when}");
        assert_eq!(when["other"], true, "{when}");
        assert_eq!(when["started"], json!(["helper-1"]), "{when}");
        assert_eq!(report.metrics.spawn_events, 1);
    }
}
