//! The store contract, the rest: locks, metrics, claims, agent and task
//! records, heartbeats, and cleaning a task. Same assertions on every backend.

use std::time::Duration;

use orrery::store::{
    AgentRecord, HostRecord, HostRole, HostState, PhaseEntry, RunStatus, TaskRecord,
};
use serde_json::json;

use crate::common::Backend;
use crate::util::{envelope, open};

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_fence_and_belong_to_their_owner() {
    for backend in Backend::all() {
        let s = open(backend).await;
        assert_eq!(
            s.lock_try_acquire("t", "a:b*", "one", LONG).await.unwrap(),
            Some(1),
            "{backend:?}"
        );
        assert_eq!(
            s.lock_try_acquire("t", "a:b*", "two", LONG).await.unwrap(),
            None,
            "{backend:?}"
        );
        assert!(
            !s.lock_release("t", "a:b*", "two").await.unwrap(),
            "{backend:?}: not the owner"
        );
        assert!(
            !s.lock_extend("t", "a:b*", "two", LONG).await.unwrap(),
            "{backend:?}"
        );
        assert!(
            s.lock_extend("t", "a:b*", "one", LONG).await.unwrap(),
            "{backend:?}"
        );
        assert!(
            s.lock_release("t", "a:b*", "one").await.unwrap(),
            "{backend:?}"
        );
        assert!(
            !s.lock_release("t", "a:b*", "one").await.unwrap(),
            "{backend:?}: released once"
        );
        assert_eq!(
            s.lock_try_acquire("t", "a:b*", "two", LONG).await.unwrap(),
            Some(2),
            "{backend:?}"
        );
        // Other names and other tasks are other locks.
        assert_eq!(
            s.lock_try_acquire("t", "a:b", "two", LONG).await.unwrap(),
            Some(1)
        );
        assert_eq!(
            s.lock_try_acquire("u", "a:b*", "two", LONG).await.unwrap(),
            Some(1)
        );
    }
}

/// A holder that never releases (a dead process) loses the lock at its TTL,
/// and can no longer release or extend it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_expire() {
    for backend in Backend::all() {
        let s = open(backend).await;
        let short = Duration::from_millis(150);
        assert_eq!(
            s.lock_try_acquire("t", "l", "dead", short).await.unwrap(),
            Some(1)
        );
        assert_eq!(
            s.lock_try_acquire("t", "l", "next", short).await.unwrap(),
            None
        );
        // Waiting for the TTL to run out: time itself is the event.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            s.lock_try_acquire("t", "l", "next", LONG).await.unwrap(),
            Some(2),
            "{backend:?}"
        );
        assert!(
            !s.lock_release("t", "l", "dead").await.unwrap(),
            "{backend:?}"
        );
        assert!(
            !s.lock_extend("t", "l", "dead", LONG).await.unwrap(),
            "{backend:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_add_up_and_claims_are_won_once() {
    for backend in Backend::all() {
        let opened = open(backend).await;
        let (s, other) = (opened.store.clone(), opened.another().await);
        s.metrics_add("t", "t1", &[("a".into(), 2), ("b".into(), -1)])
            .await
            .unwrap();
        other
            .metrics_add("t", "t2", &[("a".into(), 3)])
            .await
            .unwrap();
        if backend == Backend::Redis {
            // A flush sent again under its token is applied once.
            s.metrics_add("t", "t1", &[("a".into(), 2), ("b".into(), -1)])
                .await
                .unwrap();
        }
        let m = s.metrics_get("t").await.unwrap();
        assert_eq!((m["a"], m["b"]), (5, -1), "{backend:?}");
        assert!(s.metrics_get("u").await.unwrap().is_empty());

        assert!(
            s.claim("t", "spawn:x:0:gamma").await.unwrap(),
            "{backend:?}"
        );
        assert!(
            !other.claim("t", "spawn:x:0:gamma").await.unwrap(),
            "{backend:?}"
        );
        assert!(
            !s.claim("t", "spawn:x:0:gamma").await.unwrap(),
            "{backend:?}"
        );
        assert!(
            other.claim("u", "spawn:x:0:gamma").await.unwrap(),
            "{backend:?}"
        );

        // A claim held for someone: theirs again, no one else's.
        let name = "initial:c:0";
        assert!(
            s.claim_as("t", name, "entry-1").await.unwrap(),
            "{backend:?}"
        );
        assert!(
            other.claim_as("t", name, "entry-1").await.unwrap(),
            "{backend:?}"
        );
        assert!(
            !s.claim_as("t", name, "resume").await.unwrap(),
            "{backend:?}"
        );
        assert!(!s.claim_as("t", name, "").await.unwrap(), "{backend:?}");
        assert!(!s.claim("t", "initial:c:0").await.unwrap(), "{backend:?}");
    }
}

fn agent(id: &str, phase: &str, host: &str) -> AgentRecord {
    AgentRecord {
        id: id.to_string(),
        role: id.split('-').next().unwrap().to_string(),
        phase: phase.to_string(),
        history: vec![PhaseEntry {
            phase: phase.to_string(),
            at_ms: 7,
        }],
        heartbeat_ms: 7,
        host: host.to_string(),
        error: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_agents_hosts_and_the_task() {
    for backend in Backend::all() {
        let s = open(backend).await;
        s.agent_put("t", &agent("beta-1", "READY", "h:1"))
            .await
            .unwrap();
        s.agent_put("t", &agent("alpha-1", "INIT", "h:1"))
            .await
            .unwrap();
        let mut done = agent("alpha-1", "COMPLETE", "h:1");
        done.error = Some("none".into());
        s.agent_put("t", &done).await.unwrap();
        let list = s.agent_list("t").await.unwrap();
        assert_eq!(
            list.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["alpha-1", "beta-1"]
        );
        assert_eq!(list[0], done, "{backend:?}");
        assert_eq!(s.agent_get("t", "nobody").await.unwrap(), None);

        let host = HostRecord {
            id: "h:1".into(),
            role: HostRole::Owner,
            state: HostState::Alive,
            heartbeat_ms: 1000,
            busy: 2,
            epoch: 9,
            lost_after_ms: None,
        };
        s.heartbeat("t", &host, &["beta-1".to_string()])
            .await
            .unwrap();
        assert_eq!(
            s.host_list("t").await.unwrap(),
            std::slice::from_ref(&host),
            "{backend:?}"
        );
        assert_eq!(
            s.agent_get("t", "beta-1")
                .await
                .unwrap()
                .unwrap()
                .heartbeat_ms,
            1000
        );
        assert_eq!(
            s.agent_get("t", "alpha-1")
                .await
                .unwrap()
                .unwrap()
                .heartbeat_ms,
            7
        );

        assert_eq!(s.task_get("t").await.unwrap(), None);
        let record = TaskRecord {
            definition: json!({ "id": "t", "type": "test" }),
            status: RunStatus::Running,
            owner: "h:1".into(),
            roles: vec!["alpha".into()],
            started_ms: 5,
            ended_ms: None,
            journal: true,
            heartbeat_interval: 1000,
        };
        s.task_put("t", &record).await.unwrap();
        assert_eq!(s.task_get("t").await.unwrap(), Some(record), "{backend:?}");
    }
}

/// `clean` removes every trace of one task and nothing of another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_removes_a_task() {
    for backend in Backend::all() {
        let s = open(backend).await;
        for task in ["t", "keep"] {
            s.bb_set(task, "k", &json!(1), LONG).await.unwrap();
            s.agent_put(task, &agent("alpha-1", "INIT", "h"))
                .await
                .unwrap();
            s.queue_push(task, "beta", &envelope("m", "x"))
                .await
                .unwrap();
            s.metrics_add(task, &format!("n{task}"), &[("n".into(), 1)])
                .await
                .unwrap();
            s.claim(task, "c").await.unwrap();
            s.lock_try_acquire(task, "l", "tok", LONG).await.unwrap();
        }
        assert!(s.clean("t").await.unwrap() > 0, "{backend:?}");
        assert!(s.bb_keys("t", "").await.unwrap().is_empty(), "{backend:?}");
        assert!(s.agent_list("t").await.unwrap().is_empty(), "{backend:?}");
        assert!(s.queue_list("t").await.unwrap().is_empty(), "{backend:?}");
        assert!(s.metrics_get("t").await.unwrap().is_empty(), "{backend:?}");
        assert!(
            s.claim("t", "c").await.unwrap(),
            "{backend:?}: claims are gone"
        );
        assert_eq!(
            s.lock_try_acquire("t", "l", "new", LONG).await.unwrap(),
            Some(1)
        );
        // The other task is untouched.
        assert_eq!(s.bb_keys("keep", "").await.unwrap(), ["k"], "{backend:?}");
        assert_eq!(s.queue_list("keep").await.unwrap().len(), 1, "{backend:?}");
        assert!(!s.claim("keep", "c").await.unwrap());
    }
}

/// The journal's lines are stored several to a stream entry: all of them
/// come back in order, a read from a position goes on after its entry, and
/// the stream is trimmed to about `max_len` lines, not entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_lines_are_packed_and_read_back_in_order() {
    let s = open(Backend::Redis).await;
    let lines: Vec<String> = (0..200).map(|i| format!(r#"{{"seq":{i}}}"#)).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    s.journal_append("t", &refs, 10_000).await.unwrap();
    let read = s.journal_read("t", None, 1000).await.unwrap();
    let texts: Vec<&str> = read.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(texts, refs, "every line, in order");
    let positions: std::collections::BTreeSet<&str> =
        read.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(positions.len(), 4, "200 lines in entries of at most 64");
    // From the position of the first entry: the lines of the other three.
    let after = s.journal_read("t", Some(&read[0].0), 1000).await.unwrap();
    assert_eq!(after.len(), 200 - 64);
    assert_eq!(after[0].1, refs[64]);
    // Counted in entries: one entry asked for, its 64 lines given.
    assert_eq!(s.journal_read("t", None, 1).await.unwrap().len(), 64);
    // Trimmed to about max_len lines: at least the last max_len of 100
    // appends of 200, and not all 20,000 (as max_len entries would keep).
    // `MAXLEN ~` trims whole nodes of 100 entries, ~5,000 lines here.
    for _ in 0..100 {
        s.journal_append("u", &refs, 1_000).await.unwrap();
    }
    let kept = s.journal_read("u", None, 100_000).await.unwrap().len();
    assert!((1_000..10_000).contains(&kept), "{kept} lines kept");
}
