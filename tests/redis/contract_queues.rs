//! The store contract, message-queue part: the same assertions on every backend.

use std::sync::Arc;
use std::time::Duration;

use orrery::store::{Delivery, Store};

use crate::common::Backend;
use crate::util::{envelope, open, queues};

const NOW: Duration = Duration::ZERO;

async fn take(s: &Arc<dyn Store>, agent: &str, role: &str) -> Option<Delivery> {
    s.queue_take("t", &queues(agent, role), agent, NOW)
        .await
        .unwrap()
}

fn ids(d: &[Delivery]) -> Vec<String> {
    d.iter().map(|d| d.envelope.id.to_string()).collect()
}

/// First in, first out; an agent's own queue before its role's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_fifo_own_queue_first() {
    for backend in Backend::all() {
        let s = open(backend).await;
        for id in ["r1", "r2"] {
            s.queue_push("t", "worker", &envelope(id, "job"))
                .await
                .unwrap();
        }
        for id in ["o1", "o2"] {
            s.queue_push("t", "worker-1", &envelope(id, "job"))
                .await
                .unwrap();
        }
        let mut got = Vec::new();
        while let Some(d) = take(&s, "worker-1", "worker").await {
            assert_eq!(d.envelope.attempts, 1, "{backend:?}");
            s.queue_ack("t", &d).await.unwrap();
            got.push(d);
        }
        assert_eq!(ids(&got), ["o1", "o2", "r1", "r2"], "{backend:?}");
        assert_eq!(&*got[2].queue, "worker", "{backend:?}");
        assert!(s.queue_is_drained("t").await.unwrap(), "{backend:?}");
        assert!(s.queue_list("t").await.unwrap().is_empty(), "{backend:?}");
    }
}

/// A message given back comes again before newer ones, counting attempts,
/// and is dead-lettered after `max_attempts` deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_redelivers_then_dead_letters() {
    for backend in Backend::all() {
        let s = open(backend).await;
        for id in ["m1", "m2"] {
            s.queue_push("t", "worker", &envelope(id, "job"))
                .await
                .unwrap();
        }
        let first = take(&s, "worker-1", "worker").await.unwrap();
        assert!(!s.queue_nack("t", &first, 3).await.unwrap(), "{backend:?}");
        let again = take(&s, "worker-1", "worker").await.unwrap();
        assert_eq!(
            (&*again.envelope.id, again.envelope.attempts),
            ("m1", 2),
            "{backend:?}"
        );
        assert!(!s.queue_nack("t", &again, 3).await.unwrap());
        // Another agent of the role gets it next.
        let third = take(&s, "worker-2", "worker").await.unwrap();
        assert_eq!(
            (&*third.envelope.id, third.envelope.attempts),
            ("m1", 3),
            "{backend:?}"
        );
        assert!(
            s.queue_nack("t", &third, 3).await.unwrap(),
            "{backend:?}: dead after 3"
        );
        let next = take(&s, "worker-1", "worker").await.unwrap();
        assert_eq!(&*next.envelope.id, "m2", "{backend:?}");
        let list = s.queue_list("t").await.unwrap();
        let dead: Vec<_> = list.iter().filter(|m| m.state == "dead").collect();
        assert_eq!(dead.len(), 1, "{backend:?}: {list:?}");
        assert_eq!(
            (&*dead[0].envelope.id, dead[0].envelope.attempts),
            ("m1", 3)
        );
        assert_eq!(dead[0].queue, "worker");
        // m2 is in flight: pending, not drained.
        assert!(
            list.iter()
                .any(|m| m.state == "pending" && &*m.envelope.id == "m2")
        );
        assert!(!s.queue_is_drained("t").await.unwrap(), "{backend:?}");
        s.queue_ack("t", &next).await.unwrap();
        assert!(
            s.queue_is_drained("t").await.unwrap(),
            "{backend:?}: dead letters do not count"
        );
    }
}

/// The messages of a consumer that died go back to the queue for others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_consumer_gives_back_what_it_held() {
    for backend in Backend::all() {
        let s = open(backend).await;
        for id in ["m1", "m2", "m3"] {
            s.queue_push("t", "worker", &envelope(id, "job"))
                .await
                .unwrap();
        }
        let a = take(&s, "worker-1", "worker").await.unwrap();
        let b = take(&s, "worker-1", "worker").await.unwrap();
        s.queue_ack("t", &a).await.unwrap();
        assert_eq!(&*b.envelope.id, "m2");
        assert_eq!(
            s.queue_release_consumer("t", "worker-1").await.unwrap(),
            1,
            "{backend:?}"
        );
        assert_eq!(
            s.queue_release_consumer("t", "worker-1").await.unwrap(),
            0,
            "{backend:?}"
        );
        let c = take(&s, "worker-2", "worker").await.unwrap();
        assert_eq!(
            (&*c.envelope.id, c.envelope.attempts),
            ("m2", 2),
            "{backend:?}"
        );
        let d = take(&s, "worker-2", "worker").await.unwrap();
        assert_eq!(
            (&*d.envelope.id, d.envelope.attempts),
            ("m3", 1),
            "{backend:?}"
        );
    }
}

/// A waiting take returns as soon as a message is pushed, from any connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_waits_for_a_push() {
    for backend in Backend::all() {
        let opened = open(backend).await;
        let s = opened.store.clone();
        let waiting = tokio::spawn({
            let s = s.clone();
            async move {
                s.queue_take(
                    "t",
                    &queues("worker-1", "worker"),
                    "worker-1",
                    Duration::from_secs(20),
                )
                .await
                .unwrap()
            }
        });
        let pusher = opened.another().await;
        pusher
            .queue_push("t", "worker", &envelope("late", "job"))
            .await
            .unwrap();
        let got = waiting
            .await
            .unwrap()
            .expect("the waiting take gets the message");
        assert_eq!(&*got.envelope.id, "late", "{backend:?}");
        // Nothing there: a bounded wait ends empty.
        let none = s
            .queue_take(
                "t",
                &queues("worker-1", "worker"),
                "worker-1",
                Duration::from_millis(100),
            )
            .await
            .unwrap();
        assert!(none.is_none(), "{backend:?}");
    }
}

/// A take dropped while it waits loses nothing: the message is returned by
/// the consumer's next take, or by another consumer's once it is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_take_loses_nothing() {
    for backend in Backend::all() {
        let opened = open(backend).await;
        let s = opened.store.clone();
        let q = queues("worker-1", "worker");
        let cancelled = tokio::time::timeout(
            Duration::from_millis(50),
            s.queue_take("t", &q, "worker-1", Duration::from_secs(20)),
        )
        .await;
        assert!(cancelled.is_err(), "{backend:?}: nothing to take yet");
        s.queue_push("t", "worker", &envelope("m1", "job"))
            .await
            .unwrap();
        let got = s
            .queue_take("t", &q, "worker-1", Duration::from_secs(20))
            .await
            .unwrap()
            .expect("the next take gets it");
        assert_eq!(&*got.envelope.id, "m1", "{backend:?}");
        s.queue_ack("t", &got).await.unwrap();

        // Cancelled again, then released before taking: another consumer gets it.
        let cancelled = tokio::time::timeout(
            Duration::from_millis(50),
            s.queue_take("t", &q, "worker-1", Duration::from_secs(20)),
        )
        .await;
        assert!(cancelled.is_err());
        s.queue_push("t", "worker", &envelope("m2", "job"))
            .await
            .unwrap();
        s.queue_release_consumer("t", "worker-1").await.unwrap();
        let other = s
            .queue_take(
                "t",
                &queues("worker-2", "worker"),
                "worker-2",
                Duration::from_secs(20),
            )
            .await
            .unwrap()
            .expect("another consumer gets it");
        assert_eq!(&*other.envelope.id, "m2", "{backend:?}");
        s.queue_ack("t", &other).await.unwrap();
        assert!(s.queue_is_drained("t").await.unwrap(), "{backend:?}");
    }
}

/// Acknowledgements travel with the next look at the queues, whoever looks.
/// A look abandoned on its way (its take cancelled: an agent woken by a
/// watch, a timer or a quiescence probe) must not take them with it: the
/// message would stay in flight for ever, and the task never go quiet (or be
/// recovered as an orphan and handled twice). One thread, so the look is
/// queued but not yet written when its take is dropped.
#[tokio::test(flavor = "current_thread")]
async fn an_acknowledgement_outlives_the_cancelled_take_that_carried_it() {
    for backend in Backend::all() {
        let s = open(backend).await;
        s.queue_push("t", "worker-1", &envelope("m1", "job"))
            .await
            .unwrap();
        let got = take(&s, "worker-1", "worker").await.expect("m1");
        s.queue_ack_nowait("t", &got).settle().await.unwrap();
        let other = queues("worker-2", "worker");
        let mut look = Box::pin(s.queue_take("t", &other, "worker-2", Duration::from_secs(20)));
        assert!(
            futures::poll!(look.as_mut()).is_pending(),
            "{backend:?}: nothing to take"
        );
        drop(look);
        assert!(
            s.queue_is_drained("t").await.unwrap(),
            "{backend:?}: still in flight: {:?}",
            s.queue_list("t").await.unwrap()
        );
    }
}

/// Queues of different tasks are separate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_do_not_share_queues() {
    for backend in Backend::all() {
        let s = open(backend).await;
        s.queue_push("t", "worker", &envelope("m1", "job"))
            .await
            .unwrap();
        let other = s
            .queue_take("u", &queues("worker-1", "worker"), "worker-1", NOW)
            .await
            .unwrap();
        assert!(other.is_none(), "{backend:?}");
        assert!(s.queue_is_drained("u").await.unwrap());
        assert!(!s.queue_is_drained("t").await.unwrap());
    }
}

/// A role message the store read ahead for one agent along with its own
/// (so no other agent can take it) is still reached exactly once: the
/// agent takes it as held even when another agent of the role has the
/// turn. Before, it stayed in the first agent's read-ahead for ever and the
/// task waited for its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_message_read_ahead_with_an_own_one_is_reached_once() {
    for backend in Backend::all() {
        let s = open(backend).await;
        s.queue_push("t", "worker", &envelope("r1", "job"))
            .await
            .unwrap();
        s.queue_push("t", "worker-1", &envelope("o1", "job"))
            .await
            .unwrap();
        let own = take(&s, "worker-1", "worker").await.unwrap();
        assert_eq!(&*own.envelope.id, "o1", "{backend:?}");
        // worker-1 is no longer in turn: it asks only for what it holds.
        let held = s.queue_take_held("t", &["worker".to_string()], "worker-1");
        let other = take(&s, "worker-2", "worker").await;
        let reached: Vec<String> = held
            .iter()
            .chain(other.iter())
            .map(|d| d.envelope.id.to_string())
            .collect();
        assert_eq!(reached, ["r1"], "{backend:?}");
    }
}
