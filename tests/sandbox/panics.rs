//! A panic in host code serving one agent fails that agent, not the process:
//! a real store (MemoryStore) wrapped so that writing one key panics, as a bug
//! in a backend would.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use orrery::orchestrator::Orchestrator;
use orrery::report::TaskStatus;
use orrery::scripts::ScriptRegistry;
use orrery::store::{
    AgentRecord, BlackboardEvent, BlackboardStore, Delivery, Envelope, HostRecord, LockStore,
    MemoryStore, Pending, QueueStore, QueuedMessage, RecordStore, Sent, Store, StoreResult,
    TaskRecord,
};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::common::{Scratch, task};
use crate::util::{WITNESS, config};

/// The embedded store, except that setting the blackboard key `boom` panics.
struct PanickingStore(MemoryStore);

impl Store for PanickingStore {
    fn describe(&self) -> String {
        "memory (panics on key 'boom')".into()
    }
    fn is_embedded(&self) -> bool {
        true
    }
}

#[async_trait]
impl BlackboardStore for PanickingStore {
    async fn bb_set(&self, task: &str, key: &str, value: &Value, ttl: Duration) -> StoreResult<()> {
        assert_ne!(key, "boom", "store bug triggered by key 'boom'");
        self.0.bb_set(task, key, value, ttl).await
    }
    async fn bb_get(&self, task: &str, key: &str) -> StoreResult<Option<Value>> {
        self.0.bb_get(task, key).await
    }
    async fn bb_delete(&self, task: &str, key: &str) -> StoreResult<bool> {
        self.0.bb_delete(task, key).await
    }
    async fn bb_keys(&self, task: &str, prefix: &str) -> StoreResult<Vec<String>> {
        self.0.bb_keys(task, prefix).await
    }
    async fn bb_compare_and_set(
        &self,
        task: &str,
        key: &str,
        expected: Option<&Value>,
        new: Option<&Value>,
        ttl: Duration,
    ) -> StoreResult<bool> {
        self.0
            .bb_compare_and_set(task, key, expected, new, ttl)
            .await
    }
    async fn bb_subscribe(&self, task: &str) -> StoreResult<broadcast::Receiver<BlackboardEvent>> {
        self.0.bb_subscribe(task).await
    }
    fn bb_set_nowait(&self, task: &str, key: &str, value: &Value, ttl: Duration) -> Pending {
        assert_ne!(key, "boom", "store bug triggered by key 'boom'");
        self.0.bb_set_nowait(task, key, value, ttl)
    }
    fn bb_get_sent(&self, task: &str, key: &str) -> Sent<Option<Value>> {
        self.0.bb_get_sent(task, key)
    }
}

#[async_trait]
impl QueueStore for PanickingStore {
    async fn queue_push(&self, task: &str, queue: &str, envelope: &Envelope) -> StoreResult<()> {
        self.0.queue_push(task, queue, envelope).await
    }
    async fn queue_take(
        &self,
        task: &str,
        queues: &[String],
        consumer: &str,
        wait: Duration,
    ) -> StoreResult<Option<Delivery>> {
        self.0.queue_take(task, queues, consumer, wait).await
    }
    async fn queue_ack(&self, task: &str, delivery: &Delivery) -> StoreResult<()> {
        self.0.queue_ack(task, delivery).await
    }
    async fn queue_nack(&self, task: &str, delivery: &Delivery, max: u32) -> StoreResult<bool> {
        self.0.queue_nack(task, delivery, max).await
    }
    async fn queue_release_consumer(&self, task: &str, consumer: &str) -> StoreResult<usize> {
        self.0.queue_release_consumer(task, consumer).await
    }
    async fn queue_list(&self, task: &str) -> StoreResult<Vec<QueuedMessage>> {
        self.0.queue_list(task).await
    }
    async fn queue_revive(&self, task: &str, queue: &str) -> StoreResult<usize> {
        self.0.queue_revive(task, queue).await
    }
    fn queue_push_nowait(&self, task: &str, queue: &str, envelope: Envelope) -> Pending {
        self.0.queue_push_nowait(task, queue, envelope)
    }
    fn queue_ack_nowait(&self, task: &str, delivery: &Delivery) -> Pending {
        self.0.queue_ack_nowait(task, delivery)
    }
}

#[async_trait]
impl RecordStore for PanickingStore {
    async fn agent_put(&self, task: &str, record: &AgentRecord) -> StoreResult<()> {
        self.0.agent_put(task, record).await
    }
    async fn agent_get(&self, task: &str, agent: &str) -> StoreResult<Option<AgentRecord>> {
        self.0.agent_get(task, agent).await
    }
    async fn agent_list(&self, task: &str) -> StoreResult<Vec<AgentRecord>> {
        self.0.agent_list(task).await
    }
    async fn task_put(&self, task: &str, record: &TaskRecord) -> StoreResult<()> {
        self.0.task_put(task, record).await
    }
    async fn task_get(&self, task: &str) -> StoreResult<Option<TaskRecord>> {
        self.0.task_get(task).await
    }
    async fn heartbeat(
        &self,
        task: &str,
        host: &HostRecord,
        agents: &[String],
    ) -> StoreResult<bool> {
        self.0.heartbeat(task, host, agents).await
    }
    async fn host_list(&self, task: &str) -> StoreResult<Vec<HostRecord>> {
        self.0.host_list(task).await
    }
    async fn metrics_add(
        &self,
        task: &str,
        token: &str,
        deltas: &[(String, i64)],
    ) -> StoreResult<()> {
        self.0.metrics_add(task, token, deltas).await
    }
    async fn metrics_get(&self, task: &str) -> StoreResult<BTreeMap<String, i64>> {
        self.0.metrics_get(task).await
    }
    async fn claim(&self, task: &str, name: &str) -> StoreResult<bool> {
        self.0.claim(task, name).await
    }
    async fn claim_as(&self, task: &str, name: &str, holder: &str) -> StoreResult<bool> {
        self.0.claim_as(task, name, holder).await
    }
    async fn retain(&self, task: &str, retention: Duration) -> StoreResult<usize> {
        self.0.retain(task, retention).await
    }
    async fn member_join(&self, task: &str, host: &str) -> StoreResult<u64> {
        self.0.member_join(task, host).await
    }
    async fn member_fence(&self, task: &str, host: &str) -> StoreResult<bool> {
        self.0.member_fence(task, host).await
    }
    async fn checkpoint_put(&self, task: &str, agent: &str, json: &str) -> StoreResult<()> {
        self.0.checkpoint_put(task, agent, json).await
    }
    async fn checkpoint_get(&self, task: &str, agent: &str) -> StoreResult<Option<String>> {
        self.0.checkpoint_get(task, agent).await
    }
    async fn lease(&self, task: &str, holder: &str, ttl: Duration) -> StoreResult<bool> {
        self.0.lease(task, holder, ttl).await
    }
    async fn clean(&self, task: &str) -> StoreResult<usize> {
        self.0.clean(task).await
    }
}

#[async_trait]
impl LockStore for PanickingStore {
    async fn lock_try_acquire(
        &self,
        task: &str,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> StoreResult<Option<u64>> {
        self.0.lock_try_acquire(task, name, token, ttl).await
    }
    async fn lock_release(&self, task: &str, name: &str, token: &str) -> StoreResult<bool> {
        self.0.lock_release(task, name, token).await
    }
    async fn lock_extend(
        &self,
        task: &str,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> StoreResult<bool> {
        self.0.lock_extend(task, name, token, ttl).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_host_code_fails_only_the_agent_it_served() {
    // The script even tries to catch it: a host panic is not a script error.
    let crasher = r#"
local M = {}
function M.start(self)
  blackboard.set("before", "kept")
  local ok = pcall(blackboard.set, "boom", 1)
  blackboard.set("after", "never written")
end
return M
"#;
    let scratch = Scratch::new(&[("crasher.lua", crasher), WITNESS]);
    let mut cfg = config();
    cfg.scripts = scratch.scripts();
    let registry = Arc::new(ScriptRegistry::load(&cfg.scripts, &cfg.stdlib).unwrap());
    let store = Arc::new(PanickingStore(MemoryStore::new()));
    let report = Orchestrator::new(task("panics", 60_000), cfg, store.clone(), registry)
        .unwrap()
        .run()
        .await
        .unwrap();

    assert_eq!(report.status, TaskStatus::Failed, "{report:#?}");
    let e = report
        .errors
        .iter()
        .find(|e| e.agent == "crasher-1")
        .unwrap();
    assert!(e.fatal);
    assert_eq!(e.kind, "coordination");
    assert!(
        e.message.contains("host bug while serving this agent") && e.message.contains("key 'boom'"),
        "{}",
        e.message
    );
    assert_eq!(report.exit_code(), 5);
    // The rest of the task went on, and what was stored before the panic is there.
    assert_eq!(
        report.outputs.get("witness"),
        Some(&json!("done")),
        "{report:#?}"
    );
    assert_eq!(
        store.bb_get("panics", "before").await.unwrap(),
        Some(json!("kept"))
    );
    assert_eq!(store.bb_get("panics", "after").await.unwrap(), None);
    let record = store
        .agent_get("panics", "crasher-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.phase, "FAILED");
}
