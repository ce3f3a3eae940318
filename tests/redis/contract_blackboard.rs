//! The store contract, blackboard part: the same assertions on every backend.

use std::time::Duration;

use serde_json::json;

use crate::common::Backend;
use crate::util::open;

const TTL: Duration = Duration::from_secs(60);

/// Keys are plain text: `:`, `..` and glob characters mean nothing special.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_plain_text() {
    let tricky = [
        "a:b",
        "..",
        "*",
        "[x]",
        "?",
        "a*",
        "a",
        "ü/ß",
        "task:other:blackboard:x",
    ];
    for backend in Backend::all() {
        let s = open(backend).await;
        for (i, k) in tricky.iter().enumerate() {
            s.bb_set("t1", k, &json!({ "n": i }), TTL).await.unwrap();
        }
        for (i, k) in tricky.iter().enumerate() {
            assert_eq!(
                s.bb_get("t1", k).await.unwrap(),
                Some(json!({ "n": i })),
                "{backend:?}: key {k:?}"
            );
        }
        let mut all: Vec<String> = tricky.iter().map(|k| k.to_string()).collect();
        all.sort();
        assert_eq!(s.bb_keys("t1", "").await.unwrap(), all, "{backend:?}");
        assert_eq!(
            s.bb_keys("t1", "a").await.unwrap(),
            ["a", "a*", "a:b"],
            "{backend:?}"
        );
        assert_eq!(s.bb_keys("t1", "*").await.unwrap(), ["*"], "{backend:?}");
        assert_eq!(s.bb_keys("t1", "[").await.unwrap(), ["[x]"], "{backend:?}");
        assert_eq!(s.bb_keys("t1", "?").await.unwrap(), ["?"], "{backend:?}");
        assert!(
            s.bb_keys("t1", "zz").await.unwrap().is_empty(),
            "{backend:?}"
        );
        // Another task sees none of it.
        assert!(s.bb_keys("t2", "").await.unwrap().is_empty(), "{backend:?}");
        assert_eq!(s.bb_get("t2", "a:b").await.unwrap(), None, "{backend:?}");

        assert!(s.bb_delete("t1", "*").await.unwrap(), "{backend:?}");
        assert!(!s.bb_delete("t1", "*").await.unwrap(), "{backend:?}");
        assert_eq!(s.bb_get("t1", "*").await.unwrap(), None, "{backend:?}");
        assert!(
            !s.bb_keys("t1", "")
                .await
                .unwrap()
                .contains(&"*".to_string())
        );
    }
}

/// Values come back as they went in, JSON null and nesting included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_round_trip() {
    let values = [
        json!(null),
        json!(true),
        json!(-3),
        json!(1.5),
        json!("text with \"quotes\" and\nnewlines"),
        json!([1, [2, { "x": null }]]),
        json!({ "z": 1, "a": { "b": [true] } }),
    ];
    for backend in Backend::all() {
        let s = open(backend).await;
        for (i, v) in values.iter().enumerate() {
            let key = format!("v{i}");
            s.bb_set("t", &key, v, TTL).await.unwrap();
            assert_eq!(
                s.bb_get("t", &key).await.unwrap().as_ref(),
                Some(v),
                "{backend:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_follows_the_current_value() {
    for backend in Backend::all() {
        let s = open(backend).await;
        let one = json!({ "a": 1, "b": [1, 2] });
        assert!(
            s.bb_compare_and_set("t", "k", None, Some(&one), TTL)
                .await
                .unwrap()
        );
        assert!(
            !s.bb_compare_and_set("t", "k", None, Some(&one), TTL)
                .await
                .unwrap(),
            "{backend:?}: absent expected"
        );
        let wrong = json!({ "a": 2, "b": [1, 2] });
        assert!(
            !s.bb_compare_and_set("t", "k", Some(&wrong), None, TTL)
                .await
                .unwrap()
        );
        // Equal values, whatever order their fields were built in.
        let same: serde_json::Value = serde_json::from_str(r#"{"b":[1,2],"a":1}"#).unwrap();
        let two = json!(2);
        assert!(
            s.bb_compare_and_set("t", "k", Some(&same), Some(&two), TTL)
                .await
                .unwrap(),
            "{backend:?}"
        );
        assert_eq!(s.bb_get("t", "k").await.unwrap(), Some(json!(2)));
        // 2 and 2.0 are different values.
        assert!(
            !s.bb_compare_and_set("t", "k", Some(&json!(2.0)), None, TTL)
                .await
                .unwrap(),
            "{backend:?}"
        );
        assert!(
            s.bb_compare_and_set("t", "k", Some(&two), None, TTL)
                .await
                .unwrap()
        );
        assert_eq!(
            s.bb_get("t", "k").await.unwrap(),
            None,
            "{backend:?}: deleted by cas"
        );
        assert!(s.bb_keys("t", "").await.unwrap().is_empty(), "{backend:?}");
    }
}

/// Eight writers (on two connections for Redis, as two processes would be)
/// incrementing one counter with compare-and-set lose no increment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_under_concurrent_writers() {
    const WRITERS: usize = 8;
    const EACH: i64 = 50;
    for backend in Backend::all() {
        let opened = open(backend).await;
        let other = opened.another().await;
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let s = if w % 2 == 0 {
                opened.store.clone()
            } else {
                other.clone()
            };
            writers.push(tokio::spawn(async move {
                let mut retries = 0;
                for _ in 0..EACH {
                    loop {
                        let current = s.bb_get("t", "counter").await.unwrap();
                        let n = current.as_ref().and_then(|v| v.as_i64()).unwrap_or(0);
                        let next = json!(n + 1);
                        if s.bb_compare_and_set("t", "counter", current.as_ref(), Some(&next), TTL)
                            .await
                            .unwrap()
                        {
                            break;
                        }
                        retries += 1;
                    }
                }
                retries
            }));
        }
        for w in writers {
            w.await.unwrap();
        }
        assert_eq!(
            opened.store.bb_get("t", "counter").await.unwrap(),
            Some(json!(WRITERS as i64 * EACH)),
            "{backend:?}"
        );
    }
}

/// Entries expire after their TTL and leave `keys` with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire() {
    for backend in Backend::all() {
        let s = open(backend).await;
        s.bb_set("t", "short", &json!(1), Duration::from_millis(150))
            .await
            .unwrap();
        s.bb_set("t", "long", &json!(2), TTL).await.unwrap();
        assert_eq!(s.bb_get("t", "short").await.unwrap(), Some(json!(1)));
        // Waiting for time itself to pass: there is no event to await.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(s.bb_get("t", "short").await.unwrap(), None, "{backend:?}");
        assert_eq!(s.bb_keys("t", "").await.unwrap(), ["long"], "{backend:?}");
        // A fresh set after expiry lives again.
        s.bb_set("t", "short", &json!(3), TTL).await.unwrap();
        assert_eq!(
            s.bb_keys("t", "").await.unwrap(),
            ["long", "short"],
            "{backend:?}"
        );
    }
}

/// Every change is published with the write; deleting a missing key publishes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_published() {
    for backend in Backend::all() {
        let opened = open(backend).await;
        let s = opened.store.clone();
        let mut events = s.bb_subscribe("t").await.unwrap();
        // A write through another connection (another process) is seen too.
        let writer = opened.another().await;
        writer
            .bb_set("t", "a:b", &json!({ "x": 1 }), TTL)
            .await
            .unwrap();
        s.bb_delete("t", "missing").await.unwrap();
        s.bb_compare_and_set("t", "c", None, Some(&json!(null)), TTL)
            .await
            .unwrap();
        s.bb_delete("t", "a:b").await.unwrap();
        s.bb_set("other-task", "x", &json!(0), TTL).await.unwrap();
        s.bb_compare_and_set("t", "c", Some(&json!(null)), None, TTL)
            .await
            .unwrap();
        let mut seen = Vec::new();
        for _ in 0..4 {
            let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
                .await
                .expect("event arrives")
                .unwrap();
            seen.push((ev.key, ev.value));
        }
        assert_eq!(
            seen,
            [
                ("a:b".to_string(), Some(json!({ "x": 1 }))),
                ("c".to_string(), Some(json!(null))),
                ("a:b".to_string(), None),
                ("c".to_string(), None),
            ],
            "{backend:?}"
        );
        assert!(events.try_recv().is_err(), "{backend:?}: nothing else");
        assert_eq!(
            s.events_in_flight("t"),
            0,
            "{backend:?}: every own event came back"
        );
    }
}

/// A write sent without waiting is applied even when its outcome is never
/// awaited (the agent that made it was stopped): the connection must not
/// drop it unwritten. One thread, so the write is queued but not yet written
/// when its outcome is dropped.
#[tokio::test(flavor = "current_thread")]
async fn a_write_is_applied_when_nobody_waits_for_it() {
    for backend in Backend::all() {
        let s = open(backend).await;
        drop(s.bb_set_nowait("t1", "orphan", &json!(1), TTL));
        assert_eq!(
            s.bb_get("t1", "orphan").await.unwrap(),
            Some(json!(1)),
            "{backend:?}"
        );
    }
}
