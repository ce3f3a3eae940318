//! Writes of many agents in one script call (the Redis store's batches):
//! the writes made while a batch is on the wire go in the next one; a write
//! the server refuses fails alone, a fenced member's writes are refused
//! whole (and only theirs), and each agent's writes keep its order.

use std::time::Duration;

use orrery::store::{Pending, Store, StoreError};
use serde_json::{Value, json};

use crate::common::RedisServer;
use crate::util::{connect, envelope};

const TTL: Duration = Duration::from_secs(60);

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Script calls the server ran since its counters were reset.
async fn script_calls(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    command_stat(conn, "evalsha", "calls").await
}

/// A counter of `INFO commandstats` (`calls`, `failed_calls`...) for one
/// command since the counters were reset (0 when it never ran).
async fn command_stat(
    conn: &mut redis::aio::MultiplexedConnection,
    command: &str,
    counter: &str,
) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    let Some(line) = info
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:")))
    else {
        return 0;
    };
    line.split(',')
        .find_map(|kv| kv.strip_prefix(&format!("{counter}=")))
        .map_or(0, |n| n.parse().unwrap())
}

async fn reset_stats(conn: &mut redis::aio::MultiplexedConnection) {
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(conn)
        .await
        .unwrap();
}

/// The payloads' `id`s of a queue's stream, in stream order.
async fn queued_ids(
    conn: &mut redis::aio::MultiplexedConnection,
    task: &str,
    queue: &str,
) -> Vec<String> {
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(format!("task:{task}:bus:{queue}"))
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap();
    entries
        .ids
        .iter()
        .map(|e| {
            let m: String = e.get("m").unwrap();
            let v: Value = serde_json::from_str(&m).unwrap();
            v["payload"]["id"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Two writes to a task of their own, which hold the way for the next ones:
/// with nothing on the wire the first goes alone (a script call of its
/// own), the second in a batch of its own. On one thread nothing answers
/// them until the test awaits: the writes made after them wait for one
/// batch together. Two script calls.
fn hold_the_way(store: &std::sync::Arc<dyn Store>) -> [Pending; 2] {
    [
        store.bb_set_nowait("way", "first", &json!(0), TTL),
        store.bb_set_nowait("way", "second", &json!(0), TTL),
    ]
}

async fn settle_all(writes: [Pending; 2]) {
    for w in writes {
        w.settle().await.unwrap();
    }
}

#[tokio::test]
async fn a_write_the_server_refuses_in_a_batch_fails_alone() {
    let server = RedisServer::start();
    let store = connect(&server.url()).await;
    let mut conn = raw(&server.url()).await;
    // A queue whose key is a string: the server refuses sends to it.
    let () = redis::cmd("SET")
        .arg("task:b:bus:broken")
        .arg("not a stream")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Task c's blackboard index is a string: its sets fail inside the
    // script (an error raised, where the send's is a reply).
    let () = redis::cmd("SET")
        .arg("task:c:bbindex")
        .arg("not a sorted set")
        .query_async(&mut conn)
        .await
        .unwrap();
    reset_stats(&mut conn).await;
    let way = hold_the_way(&store);
    let a = store.bb_set_nowait("b", "a", &json!(1), TTL);
    let broken = store.queue_push_nowait("b", "broken", envelope("m1", "x"));
    let bad = store.bb_set_nowait("c", "bad", &json!(1), TTL);
    let b = store.bb_set_nowait("b", "b", &json!(2), TTL);
    let sent = store.queue_push_nowait("b", "ok", envelope("m2", "x"));
    let after_bad = store.queue_push_nowait("c", "ok", envelope("m4", "x"));
    settle_all(way).await;
    a.settle().await.unwrap();
    let refused = broken.settle().await.unwrap_err();
    let text = refused.to_string();
    assert!(
        text.contains("bus send to 'broken'") && text.contains("WRONGTYPE"),
        "{text}"
    );
    let raised = bad.settle().await.unwrap_err().to_string();
    assert!(
        raised.contains("blackboard set 'bad'") && raised.contains("WRONGTYPE"),
        "{raised}"
    );
    b.settle().await.unwrap();
    sent.settle().await.unwrap();
    after_bad.settle().await.unwrap();
    // The batch is one script call per task.
    assert_eq!(script_calls(&mut conn).await, 2 + 2);
    assert_eq!(queued_ids(&mut conn, "c", "ok").await, ["m4"]);
    assert_eq!(store.bb_get("b", "a").await.unwrap(), Some(json!(1)));
    assert_eq!(store.bb_get("b", "b").await.unwrap(), Some(json!(2)));
    assert_eq!(queued_ids(&mut conn, "b", "ok").await, ["m2"]);
    // The refused send left no mark: sent again (once the queue is fixed) it
    // is delivered.
    let () = redis::cmd("DEL")
        .arg("task:b:bus:broken")
        .query_async(&mut conn)
        .await
        .unwrap();
    store
        .queue_push("b", "broken", &envelope("m3", "x"))
        .await
        .unwrap();
    assert_eq!(queued_ids(&mut conn, "b", "broken").await, ["m3"]);
}

#[tokio::test]
async fn a_fenced_members_batch_is_refused_whole_and_only_its_own() {
    let server = RedisServer::start();
    let store = connect(&server.url()).await;
    let other = connect(&server.url()).await;
    let mut conn = raw(&server.url()).await;
    store.member_join("f", "host-a").await.unwrap();
    assert!(other.member_fence("f", "host-a").await.unwrap());
    reset_stats(&mut conn).await;
    // Task g: this process is no member there, nothing fences its writes.
    let way = hold_the_way(&store);
    let x = store.bb_set_nowait("f", "x", &json!(1), TTL);
    let send = store.queue_push_nowait("f", "q", envelope("m1", "x"));
    let y = store.bb_set_nowait("g", "y", &json!(2), TTL);
    let z = store.bb_set_nowait("f", "z", &json!(3), TTL);
    settle_all(way).await;
    for (what, write) in [("x", x), ("send", send), ("z", z)] {
        match write.settle().await {
            Err(StoreError::Fenced { .. }) => {}
            other => panic!("{what}: expected a fenced refusal, got {other:?}"),
        }
    }
    y.settle().await.unwrap();
    // One call per member in the batch: f's refused whole, g's applied.
    assert_eq!(script_calls(&mut conn).await, 2 + 2);
    assert_eq!(other.bb_get("g", "y").await.unwrap(), Some(json!(2)));
    assert_eq!(other.bb_get("f", "x").await.unwrap(), None);
    assert_eq!(other.bb_get("f", "z").await.unwrap(), None);
    assert!(queued_ids(&mut conn, "f", "q").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writes_of_many_agents_share_calls_and_keep_each_agents_order() {
    const AGENTS: usize = 20;
    const WRITES: usize = 300;
    let server = RedisServer::start();
    let store = connect(&server.url()).await;
    let mut conn = raw(&server.url()).await;
    reset_stats(&mut conn).await;
    let mut agents = Vec::new();
    for a in 0..AGENTS {
        let store = store.clone();
        agents.push(tokio::spawn(async move {
            // Each agent overwrites one key and sends to its own queue,
            // never waiting, then settles its writes in order.
            let mut pending: Vec<Pending> = Vec::new();
            for i in 1..=WRITES {
                pending.push(store.bb_set_nowait("o", &format!("k{a}"), &json!(i), TTL));
                let m = envelope(&i.to_string(), "step");
                pending.push(store.queue_push_nowait("o", &format!("q{a}"), m));
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            for p in pending {
                p.settle().await.unwrap();
            }
        }));
    }
    for a in agents {
        a.await.unwrap();
    }
    let expected: Vec<String> = (1..=WRITES).map(|i| i.to_string()).collect();
    for a in 0..AGENTS {
        let last = store.bb_get("o", &format!("k{a}")).await.unwrap();
        assert_eq!(last, Some(json!(WRITES)), "agent {a}");
        assert_eq!(
            queued_ids(&mut conn, "o", &format!("q{a}")).await,
            expected,
            "agent {a}"
        );
    }
    let calls = script_calls(&mut conn).await;
    let writes = (AGENTS * WRITES * 2) as u64;
    assert!(
        calls * 10 < writes,
        "{calls} script calls for {writes} writes"
    );
}

/// A member declared lost (paused, then woken) may take no message: a read
/// would move it into a consumer's pending list that no live agent reads,
/// and the message would be lost. Neither a new message of its role's queue
/// nor one given back there is taken (its read goes back to the queue), also
/// when the look's acknowledgements are refused first; both stay for another
/// agent.
#[tokio::test]
async fn a_fenced_member_takes_no_message_and_leaves_them_to_others() {
    let server = RedisServer::start();
    let store = connect(&server.url()).await;
    let other = connect(&server.url()).await;
    let queues = |agent: &str| vec![agent.to_string(), "c".to_string()];
    store.member_join("f", "host-a").await.unwrap();
    // A message taken and given back (parked for redelivery), one taken
    // and acknowledged (the acknowledgement waits for the next look, which
    // the fence makes refuse it, the reads beside it too), and a new one.
    for id in ["m1", "m0"] {
        other
            .queue_push("f", "c", &envelope(id, "job"))
            .await
            .unwrap();
    }
    let mine = queues("c-1");
    let mut taken = Vec::new();
    for _ in 0..2 {
        let d = store.queue_take("f", &mine, "c-1", Duration::ZERO);
        taken.push(d.await.unwrap().expect("m1 and m0 are there"));
    }
    assert_eq!(&*taken[0].envelope.id, "m1");
    store.queue_nack("f", &taken[0], 5).await.unwrap();
    store.queue_ack("f", &taken[1]).await.unwrap();
    other
        .queue_push("f", "c", &envelope("m2", "job"))
        .await
        .unwrap();
    assert!(other.member_fence("f", "host-a").await.unwrap());
    for _ in 0..2 {
        match store.queue_take("f", &mine, "c-1", Duration::ZERO).await {
            Err(StoreError::Fenced { .. }) => {}
            got => panic!("expected a fenced refusal, got {got:?}"),
        }
    }
    let mut left = Vec::new();
    while let Some(d) = other
        .queue_take("f", &queues("c-2"), "c-2", Duration::ZERO)
        .await
        .unwrap()
    {
        left.push(d.envelope.id.to_string());
        other.queue_ack("f", &d).await.unwrap();
    }
    assert_eq!(left, ["m1", "m2"]);
}

/// An agent's own queue read by a member that was fenced meanwhile: its
/// agent's adopter, reading under the same consumer name in another
/// process, gets every message, in order, woken as by a send.
#[tokio::test]
async fn a_fenced_members_read_of_its_own_queue_goes_to_the_adopter() {
    let server = RedisServer::start();
    let store = connect(&server.url()).await;
    let adopter = connect(&server.url()).await;
    let queues = vec!["a-1".to_string(), "a".to_string()];
    store.member_join("f", "host-a").await.unwrap();
    // The consumer's group exists before the fence, as in a run.
    let none = store.queue_take("f", &queues, "a-1", Duration::ZERO);
    assert!(none.await.unwrap().is_none());
    for id in ["m1", "m2", "m3"] {
        adopter
            .queue_push("f", "a-1", &envelope(id, "job"))
            .await
            .unwrap();
    }
    assert!(adopter.member_fence("f", "host-a").await.unwrap());
    match store.queue_take("f", &queues, "a-1", Duration::ZERO).await {
        Err(StoreError::Fenced { .. }) => {}
        got => panic!("expected a fenced refusal, got {got:?}"),
    }
    adopter.member_join("f", "host-b").await.unwrap();
    adopter.queue_adopt("f", "a-1");
    let mut got = Vec::new();
    while let Some(d) = adopter
        .queue_take("f", &queues, "a-1", Duration::from_millis(200))
        .await
        .unwrap()
    {
        got.push(d.envelope.id.to_string());
        assert_eq!(
            d.envelope.attempts, 1,
            "{}: never handed out before",
            d.envelope.id
        );
        adopter.queue_ack("f", &d).await.unwrap();
    }
    assert_eq!(got, ["m1", "m2", "m3"]);
}

/// Agents of one process reading a new queue at once create its consumer
/// group once: no `XGROUP CREATE` fails with BUSYGROUP (a failed command
/// an operator would see in the server's statistics).
#[tokio::test]
async fn agents_reading_a_new_queue_at_once_create_its_group_once() {
    let server = RedisServer::start();
    let store = connect(&server.url()).await;
    let mut conn = raw(&server.url()).await;
    reset_stats(&mut conn).await;
    let takes = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let queues = vec![format!("w-{i}"), "w".to_string()];
            store
                .queue_take("t", &queues, &format!("w-{i}"), Duration::ZERO)
                .await
                .unwrap()
        })
    });
    for take in takes.collect::<Vec<_>>() {
        assert!(take.await.unwrap().is_none());
    }
    assert_eq!(
        command_stat(&mut conn, "xgroup|create", "failed_calls").await,
        0
    );
    // The shared queue's group once, and each agent's own queue's.
    assert_eq!(
        command_stat(&mut conn, "xgroup|create", "calls").await,
        8 + 1
    );
}
