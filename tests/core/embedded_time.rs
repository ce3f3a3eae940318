//! The embedded store's TTLs and waits run on tokio's clock: with time
//! paused, a test moves past an hour-long TTL or a long wait at once,
//! without sleeping and without depending on the machine's speed.

use std::time::Duration;

use orrery::store::{BlackboardStore, Envelope, LockStore, MemoryStore, QueueStore};
use serde_json::json;
use tokio::time::{Instant, advance};

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(start_paused = true)]
async fn blackboard_entries_live_exactly_their_ttl() {
    let store = MemoryStore::new();
    store.bb_set("t", "k", &json!(1), HOUR).await.unwrap();
    advance(HOUR - Duration::from_millis(1)).await;
    assert_eq!(store.bb_get("t", "k").await.unwrap(), Some(json!(1)));
    assert_eq!(store.bb_keys("t", "").await.unwrap(), ["k"]);
    advance(Duration::from_millis(1)).await;
    assert_eq!(store.bb_get("t", "k").await.unwrap(), None);
    assert!(store.bb_keys("t", "").await.unwrap().is_empty());
    // An expired entry is absent for compare-and-set too.
    assert!(
        store
            .bb_compare_and_set("t", "k", None, Some(&json!(2)), HOUR)
            .await
            .unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn a_lock_is_free_again_at_its_ttl_and_its_holder_loses_it() {
    let store = MemoryStore::new();
    let ttl = Duration::from_secs(30);
    assert_eq!(
        store.lock_try_acquire("t", "l", "a", ttl).await.unwrap(),
        Some(1)
    );
    advance(ttl / 2).await;
    assert!(store.lock_extend("t", "l", "a", ttl).await.unwrap());
    advance(ttl - Duration::from_millis(1)).await;
    assert_eq!(
        store.lock_try_acquire("t", "l", "b", ttl).await.unwrap(),
        None,
        "extended: still held"
    );
    advance(Duration::from_millis(1)).await;
    assert_eq!(
        store.lock_try_acquire("t", "l", "b", ttl).await.unwrap(),
        Some(2)
    );
    assert!(!store.lock_release("t", "l", "a").await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_take_waits_its_whole_wait_then_returns_nothing() {
    let store = MemoryStore::new();
    let queues = vec!["worker-1".to_string()];
    let started = Instant::now();
    let taken = store
        .queue_take("t", &queues, "worker-1", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(taken.is_none());
    assert_eq!(started.elapsed(), Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn a_waiting_take_gets_a_message_pushed_before_its_wait_ends() {
    let store = std::sync::Arc::new(MemoryStore::new());
    let queues = vec!["worker-1".to_string()];
    let taker = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .queue_take("t", &queues, "worker-1", Duration::from_secs(60))
                .await
        })
    };
    advance(Duration::from_secs(59)).await;
    let envelope = Envelope {
        id: "m1".into(),
        from: "boss-1".into(),
        to: "worker-1".into(),
        kind: "job".into(),
        payload: json!({}),
        attempts: 0,
        reply_to: None,
    };
    store.queue_push("t", "worker-1", &envelope).await.unwrap();
    let delivery = taker.await.unwrap().unwrap().expect("the message");
    assert_eq!(&*delivery.envelope.id, "m1");
}
