//! What recording one journal entry costs the thread that records it: the
//! part of the journal's cost an agent pays on its own core (the writer's
//! JSON and I/O run on another). `cargo bench --bench journal`.
//!
//! Each figure is the median of nine rounds of 200,000 entries recorded in
//! a loop on one thread, with a writer attached that discards its lines,
//! as nanoseconds per entry [min-max]. Between rounds the loop waits for
//! the writer to catch up: a loop records faster than the writer turns
//! records into lines, and past the journal's limit it would measure
//! dropped entries. Run it on a machine at rest: these are wall-clock times
//! of a tight loop.

use std::time::Instant;

use async_trait::async_trait;
use orrery::coordination::journal::{Batch, Fast, Journal, Sink, scope};
use serde_json::{Value, json};

const ENTRIES: u32 = 200_000;
const ROUNDS: usize = 9;
/// Time for the writer to write a round's lines before the next.
const CATCH_UP: std::time::Duration = std::time::Duration::from_millis(200);

/// A figure: its name, the agent that records, and how it records entry `i`.
type Case = (&'static str, &'static str, fn(&Journal, u32));

/// Takes the lines and keeps nothing.
struct Discard;

#[async_trait]
impl Sink for Discard {
    async fn write(&mut self, _batch: &Batch) {}
}

/// Nanoseconds per entry of `record`, called `entries` times in each of
/// `rounds` rounds by an agent (a tokio task in the journal's scope of
/// agent `agent`) on a thread of its own, per round.
fn rounds(
    journal: &Journal,
    agent: &'static str,
    record: fn(&Journal, u32),
    (rounds, entries): (usize, u32),
) -> Vec<f64> {
    let journal = journal.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime");
        runtime.block_on(scope(agent, async move {
            (0..rounds)
                .map(|_| {
                    std::thread::sleep(CATCH_UP);
                    let started = Instant::now();
                    for i in 0..entries {
                        record(&journal, i);
                    }
                    started.elapsed().as_nanos() as f64 / f64::from(entries)
                })
                .collect()
        }))
    })
    .join()
    .expect("the recording thread panicked")
}

fn handled(journal: &Journal, _: u32) {
    journal.note(|| Fast::MessageHandled {
        id: "o-1a2b3c-123456",
        from: "sender-1",
        message_type: "m",
        attempt: 1,
    });
}

fn sent(journal: &Journal, i: u32) {
    let payload = Value::from(i);
    journal.note(|| Fast::MessageSent {
        id: "o-1a2b3c-123456",
        to: "receiver-1",
        message_type: "m",
        bytes: 6,
        payload: &payload,
    });
}

fn written(journal: &Journal, _: u32) {
    thread_local! {
        static VALUE: Value = json!({ "step": 12, "status": "done", "by": "worker-3" });
    }
    VALUE.with(|value| {
        journal.note(|| Fast::BlackboardWrite {
            key: "step:12",
            bytes: 44,
            value,
        })
    });
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // `cargo test --all-targets` runs this too (without `--bench`): one
    // short round then, to show it still works without taking the suite's time.
    let size = if std::env::args().any(|a| a == "--bench") {
        (ROUNDS, ENTRIES)
    } else {
        (1, 1_000)
    };
    runtime.block_on(async {
        let journal = Journal::new("bench");
        journal.attach(Box::new(Discard));
        println!(
            "journal entry, ns on the recording thread: median [min-max] of {} x {}",
            size.0, size.1
        );
        let cases: [Case; 3] = [
            ("message handled", "receiver-1", handled),
            ("message sent (number payload)", "sender-1", sent),
            ("blackboard write (table value)", "worker-3", written),
        ];
        for (name, agent, record) in cases {
            let mut ns = rounds(&journal, agent, record, size);
            ns.sort_by(f64::total_cmp);
            println!(
                "  {name:32} {:6.1} [{:.1}-{:.1}]",
                ns[ns.len() / 2],
                ns[0],
                ns[ns.len() - 1]
            );
        }
        journal.close().await;
        assert_eq!(
            journal.dropped(),
            0,
            "entries were dropped: the figures do not hold"
        );
    });
}
