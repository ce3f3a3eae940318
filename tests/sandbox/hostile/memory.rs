//! Host memory: everything a script can make the host keep outside its Lua
//! heap is bounded by a quota, refused with an error naming the setting.
//! Small quotas keep the cases quick; the defaults are the same code.

use super::{Case, run, start};

const QUOTAS: &str = "max_blackboard_keys = 200\nmax_blackboard_bytes = 200000\n\
max_queue_depth = 50\nmax_queued_bytes = 300000\nmax_spawns = 6\n\
max_spawn_conditions = 20\nmax_metrics = 30\nmax_locks = 30\n";

/// Runs `body` as the hostile agent's `start` with small quotas; expects it
/// to fail with a script error naming `setting`.
async fn refused(body: &str, setting: &str) {
    let outcome = run(Case {
        hostile: &start(body),
        config: QUOTAS,
        ..Case::default()
    })
    .await;
    outcome.failed("hostile-1", "script", &format!("quota {setting}"));
}

#[tokio::test]
async fn a_huge_message_type_is_refused() {
    let outcome = run(Case {
        hostile: &start(r#"  bus.send("witness", string.rep("t", 8e6), {})"#),
        ..Case::default()
    })
    .await;
    outcome.failed("hostile-1", "script", "message type");
}

#[tokio::test]
async fn a_huge_recipient_trigger_metric_lock_or_model_name_is_refused() {
    let outcome = run(Case {
        hostile: &start(
            r#"
  local long = string.rep("n", 8e6)
  for what, f in pairs({
    recipient = function() bus.send(long, "t", {}) end,
    trigger = function() spawn.signal(long, 1) end,
    condition = function() spawn.when{ trigger = long, threshold = 1, agent = "witness" } end,
    metric = function() metrics.incr(long) end,
    lock = function() lock.acquire(long, { wait = 0 }) end,
    model = function() llm.chat{ prompt = "x", model = long } end,
  }) do
    if pcall(f) then escaped("a huge " .. what) end
  end
"#,
        ),
        ..Case::default()
    })
    .await;
    outcome.completed();
}

#[tokio::test]
async fn flooding_its_own_queue_hits_max_queue_depth() {
    refused(
        r#"  for i = 1, 1e6 do bus.send(agent.id, "m", i) end"#,
        "max_queue_depth",
    )
    .await;
}

#[tokio::test]
async fn flooding_every_queue_hits_max_queued_bytes() {
    refused(
        r#"
  local big = string.rep("x", 60000)
  for i = 1, 1e6 do
    bus.send("witness", "m", big)
    bus.send(agent.id, "m", big)
  end
"#,
        "max_queued_bytes",
    )
    .await;
}

#[tokio::test]
async fn dead_letters_count_towards_the_queue_depth() {
    let outcome = run(Case {
        hostile: r#"
local M = {}
function M.start(self)
  for i = 1, 30 do bus.send(agent.id, "m", i) end
  bus.send(agent.id, "more", {})
end
function M.on_message(self, msg)
  if msg.type == "m" then error("never handled") end
  if msg.type ~= "more" then return end
  -- The 30 dead letters still count: 20 more fill the queue.
  for i = 1, 1e6 do
    local ok, err = pcall(bus.send, agent.id, "late", i)
    if not ok then task.output("refused", tostring(err)) return end
  end
end
return M
"#,
        config: QUOTAS,
        ..Case::default()
    })
    .await;
    let refused = outcome.output("refused").as_str().unwrap_or_default();
    assert!(
        refused.contains("quota max_queue_depth"),
        "{}",
        outcome.show()
    );
}

/// Fills the blackboard with `write(i)` until refused, then clears what it
/// wrote (the quota is the task's: the witness needs room for its output)
/// and raises the refusal.
fn fill_then_clear(write: &str) -> String {
    format!(
        r#"
  while blackboard.get("witness/seed") == nil do sleep(5) end -- after the witness's first write
  local ok, err = pcall(function() for i = 1, 1e6 do {write} end end)
  for _, k in ipairs(blackboard.keys("")) do
    if k:match("^k%d") or k:match("^outputs/o%d") then blackboard.delete(k) end
  end
  error(err, 0)
"#
    )
}

#[tokio::test]
async fn many_blackboard_keys_hit_max_blackboard_keys() {
    refused(
        &fill_then_clear(r#"blackboard.set("k" .. i, i)"#),
        "max_blackboard_keys",
    )
    .await;
}

#[tokio::test]
async fn big_blackboard_values_hit_max_blackboard_bytes() {
    refused(
        &fill_then_clear(r#"blackboard.set("k" .. i, string.rep("v", 60000))"#),
        "max_blackboard_bytes",
    )
    .await;
}

#[tokio::test]
async fn compare_and_set_counts_like_set() {
    refused(
        &fill_then_clear(r#"blackboard.cas("k" .. i, nil, string.rep("v", 60000))"#),
        "max_blackboard_bytes",
    )
    .await;
}

#[tokio::test]
async fn outputs_count_like_the_blackboard() {
    refused(
        &fill_then_clear(r#"task.output("o" .. i, i)"#),
        "max_blackboard_keys",
    )
    .await;
}

#[tokio::test]
async fn many_metric_names_hit_max_metrics() {
    refused(
        r#"  for i = 1, 1e6 do metrics.incr("m" .. i) end"#,
        "max_metrics",
    )
    .await;
}

#[tokio::test]
async fn many_lock_names_hit_max_locks() {
    refused(
        r#"  for i = 1, 1e6 do lock.acquire("l" .. i, { wait = 0, ttl = 1 }) end"#,
        "max_locks",
    )
    .await;
}

#[tokio::test]
async fn many_spawn_conditions_hit_max_spawn_conditions() {
    refused(
        r#"  for i = 1, 1e6 do spawn.when{ trigger = "t" .. i, threshold = 1, agent = "witness" } end"#,
        "max_spawn_conditions",
    )
    .await;
}

#[tokio::test]
async fn spawning_again_and_again_hits_max_spawns() {
    // Each agent starts the next and ends: the live limit always holds; the
    // total over the run is what max_spawns bounds.
    let outcome = run(Case {
        hostile: r#"
local M = {}
function M.start(self)
  local ok, err = pcall(spawn.agent, "hostile")
  if not ok then task.output("refused", tostring(err)) end
end
return M
"#,
        // Ended agents may not be released yet: only max_spawns must bind.
        config: &format!("{QUOTAS}max_agents = 50\n"),
        ..Case::default()
    })
    .await;
    let refused = outcome.output("refused").as_str().unwrap_or_default();
    assert!(
        refused.contains("max_spawns is 6"),
        "{refused:?}\n{}",
        outcome.show()
    );
}

#[tokio::test]
async fn spawning_in_one_callback_hits_max_agents_or_max_spawns() {
    let outcome = run(Case {
        hostile: &start(r#"  for i = 1, 1000 do spawn.agent("witness") end"#),
        config: QUOTAS,
        ..Case::default()
    })
    .await;
    outcome.failed("hostile-1", "spawn_limit", "spawn limit");
}

#[tokio::test]
async fn a_heap_bomb_fails_its_agent() {
    let outcome = run(Case {
        hostile: &start(
            r#"  local t = {} while true do t[#t + 1] = string.rep("x", 1e5) .. #t end"#,
        ),
        ..Case::default()
    })
    .await;
    outcome.failed("hostile-1", "script", "memory:");
}

#[tokio::test]
async fn many_model_names_are_counted_in_a_bounded_report() {
    let outcome = run(Case {
        hostile: &start(
            r#"  for i = 1, 200 do pcall(llm.chat, { prompt = "x", model = "m" .. i }) end"#,
        ),
        ..Case::default()
    })
    .await;
    outcome.completed();
    let per_model = outcome.report["metrics"]["llm"]["per_model"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(per_model.len() <= 65, "{} models", per_model.len());
}

#[tokio::test]
async fn a_giant_log_line_is_cut() {
    let outcome = run(Case {
        hostile: &start(r#"  log.info(string.rep("y", 8e6))"#),
        ..Case::default()
    })
    .await;
    outcome.completed();
    assert!(
        outcome.stderr.len() < 1_000_000,
        "{} bytes of log",
        outcome.stderr.len()
    );
    assert!(
        outcome.stderr.contains("cut at"),
        "{}",
        &outcome.stderr[..2000.min(outcome.stderr.len())]
    );
}
