//! Message queues as Redis Streams read through one consumer group.
//!
//! A queue is the stream `task:{id}:bus:{queue}`. Taking a message reads it
//! into the taker's pending list (XREADGROUP); acknowledging removes it
//! (XACK + XDEL), so a stream holds exactly the messages waiting or in
//! flight. A message given back is parked on the `~returned` consumer with
//! its entry id, hence its place in the queue, and the delivery count the
//! server keeps; takers look there first. Dead letters go to
//! `task:{id}:deadletter`.

use std::time::Duration;

use redis::RedisResult;
use redis::Value as RedisValue;

use super::Server;
use super::blackboard::decode;
use super::conn::{command_error, is_no_group};
use super::keys::{GROUP, Keys, RETURNED, token};
use super::reply::{
    array, entry_delivery, field, id_text, pending_counts, read_reply, unexpected, usize_of,
};
use super::scripts::{ACK, CLAIM_RETURNED, NACK, PUSH, RELEASE, REVIVE};
use crate::store::{Delivery, Envelope, MessageState, QueuedMessage, StoreResult};

impl Server {
    pub(super) async fn push(
        &self,
        task: &str,
        queue: &str,
        envelope: &Envelope,
    ) -> StoreResult<()> {
        let keys = Keys::new(task);
        let (stream, queues, once) = (keys.bus(queue), keys.queues(), keys.once(&token()));
        let json = serde_json::to_string(envelope).expect("an envelope always serializes");
        self.conn
            .eval::<i64>("bus push", &PUSH, |s| {
                s.key(&stream)
                    .key(&queues)
                    .key(&once)
                    .arg(queue)
                    .arg(&json)
                    .arg(GROUP);
            })
            .await?;
        self.groups.lock().insert(stream);
        Ok(())
    }

    /// Takes what is there without waiting, from the first of `queues` that
    /// has anything: its oldest message given back, then its next new one.
    /// One attempt: the caller decides about retries.
    ///
    /// New messages are read with a plain XREADGROUP, never inside a script
    /// (older Dragonfly versions could crash on an XREADGROUP of an empty
    /// stream in a script); the same round trip asks whether the queue holds a
    /// message given back, and only then a script claims it atomically.
    pub(super) async fn poll_once(
        &self,
        task: &str,
        queues: &[String],
        consumer: &str,
    ) -> RedisResult<Vec<Delivery>> {
        let keys = Keys::new(task);
        let streams = self.group_streams(&keys, queues).await?;
        for stream in &streams {
            let mut pipe = redis::pipe();
            pipe.cmd("XPENDING")
                .arg(stream)
                .arg(GROUP)
                .arg("-")
                .arg("+")
                .arg(1)
                .arg(RETURNED);
            pipe.cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(consumer)
                .arg("COUNT")
                .arg(1)
                .arg("STREAMS")
                .arg(stream)
                .arg(">");
            let (parked, new): (RedisValue, RedisValue) =
                match pipe.query_async(&mut self.conn.shared()).await {
                    Err(e) if is_no_group(&e) => {
                        // Nothing was read: both commands need the group.
                        self.forget_groups(&streams);
                        return Ok(Vec::new());
                    }
                    other => other?,
                };
            let mut found = Vec::new();
            if !array(&parked).is_empty() {
                found.extend(self.claim_returned(&keys, &[stream], consumer).await?);
            }
            found.extend(read_reply(&keys, new, 1)?);
            if !found.is_empty() {
                return Ok(found);
            }
        }
        Ok(Vec::new())
    }

    /// Claims the oldest message given back on the first of `streams` that
    /// still has one (another consumer may have been quicker).
    async fn claim_returned(
        &self,
        keys: &Keys,
        streams: &[&String],
        consumer: &str,
    ) -> RedisResult<Option<Delivery>> {
        let mut invocation = CLAIM_RETURNED.prepare_invoke();
        for s in streams {
            invocation.key(*s);
        }
        invocation.arg(GROUP).arg(consumer).arg(RETURNED);
        let reply: RedisValue = invocation.invoke_async(&mut self.conn.shared()).await?;
        let RedisValue::Array(parts) = reply else {
            return Ok(None);
        };
        let [index, id, fields, deliveries] = parts.as_slice() else {
            return Err(unexpected("CLAIM_RETURNED"));
        };
        let stream = usize_of(index)
            .and_then(|i| streams.get(i.wrapping_sub(1)))
            .ok_or_else(|| unexpected("CLAIM_RETURNED"))?;
        let queue = keys.queue_of(stream);
        let deliveries = usize_of(deliveries).unwrap_or(1) as u32;
        Ok(Some(entry_delivery(queue, id, fields, deliveries)?))
    }

    /// Waits up to `wait` for new messages on a dedicated connection (a
    /// blocking read would stall every other command on the shared one).
    /// Messages given back do not wake it: the caller polls between reads.
    pub(super) async fn block_once(
        &self,
        task: &str,
        queues: &[String],
        consumer: &str,
        wait: Duration,
    ) -> RedisResult<Vec<Delivery>> {
        let keys = Keys::new(task);
        let streams = self.group_streams(&keys, queues).await?;
        let mut conn = self.conn.checkout().await?;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(wait.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&streams);
        for _ in &streams {
            cmd.arg(">");
        }
        // Bounded by BLOCK; the margin covers a slow server. Past it the
        // connection is dropped, never reused with a reply outstanding.
        let bound = wait + self.conn.patience;
        let reply =
            match tokio::time::timeout(bound, cmd.query_async::<RedisValue>(&mut conn)).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    if is_no_group(&e) {
                        self.forget_groups(&streams);
                        self.conn.checkin(conn);
                        return Ok(Vec::new());
                    }
                    return Err(e);
                }
                Err(_) => {
                    return Err(redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "blocking read got no answer",
                    )));
                }
            };
        self.conn.checkin(conn);
        read_reply(&keys, reply, 1)
    }

    /// The messages `consumer` holds on `queues` according to the server
    /// (XREADGROUP from id 0 reads the consumer's own pending list).
    pub(super) async fn held_by(
        &self,
        task: &str,
        queues: &[String],
        consumer: &str,
    ) -> RedisResult<Vec<Delivery>> {
        let keys = Keys::new(task);
        let streams = self.group_streams(&keys, queues).await?;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("STREAMS")
            .arg(&streams);
        for _ in &streams {
            cmd.arg("0");
        }
        let reply: RedisValue = cmd.query_async(&mut self.conn.shared()).await?;
        read_reply(&keys, reply, 1)
    }

    /// Parks a message for redelivery without counting a delivery.
    pub(super) async fn park(&self, task: &str, delivery: &Delivery) -> StoreResult<()> {
        let stream = Keys::new(task).bus(&delivery.queue);
        self.conn
            .query::<RedisValue>("bus give back", || {
                let mut cmd = redis::cmd("XCLAIM");
                cmd.arg(&stream)
                    .arg(GROUP)
                    .arg(RETURNED)
                    .arg(0)
                    .arg(&delivery.receipt)
                    .arg("JUSTID");
                cmd
            })
            .await?;
        Ok(())
    }

    pub(super) async fn ack(&self, task: &str, delivery: &Delivery) -> StoreResult<()> {
        let stream = Keys::new(task).bus(&delivery.queue);
        self.conn
            .eval::<i64>("bus ack", &ACK, |s| {
                s.key(&stream).arg(GROUP).arg(&delivery.receipt);
            })
            .await?;
        self.consumers.settled(task, delivery);
        Ok(())
    }

    pub(super) async fn nack(
        &self,
        task: &str,
        delivery: &Delivery,
        max_attempts: u32,
    ) -> StoreResult<bool> {
        let keys = Keys::new(task);
        let (stream, dead) = (keys.bus(&delivery.queue), keys.dead_letters());
        let json =
            serde_json::to_string(&delivery.envelope).expect("an envelope always serializes");
        // Empty when this process did not hand the message out: no holder check then.
        let holder = self.consumers.holder(task, delivery).unwrap_or_default();
        let outcome: i64 = self
            .conn
            .eval("bus nack", &NACK, |s| {
                s.key(&stream)
                    .key(&dead)
                    .arg(GROUP)
                    .arg(&delivery.receipt)
                    .arg(&holder)
                    .arg(RETURNED)
                    .arg(max_attempts)
                    .arg(&delivery.queue)
                    .arg(&json);
            })
            .await?;
        self.consumers.settled(task, delivery);
        Ok(outcome == 1)
    }

    /// Parks every message `consumer` holds, on every queue of the task
    /// (a consumer only ever holds messages of queues written to).
    pub(super) async fn release_server_side(
        &self,
        task: &str,
        consumer: &str,
    ) -> StoreResult<usize> {
        let keys = Keys::new(task);
        let mut released = 0;
        for q in self.queue_names(task).await? {
            let stream = keys.bus(&q);
            let n: i64 = self
                .conn
                .eval("bus release", &RELEASE, |s| {
                    s.key(&stream).arg(GROUP).arg(consumer).arg(RETURNED);
                })
                .await?;
            released += n as usize;
        }
        Ok(released)
    }

    /// Moves the dead letters of `queue` back to it (see `Store::queue_revive`).
    pub(super) async fn revive(&self, task: &str, queue: &str) -> StoreResult<usize> {
        let keys = Keys::new(task);
        let (dead, stream, queues) = (keys.dead_letters(), keys.bus(queue), keys.queues());
        let n: i64 = self
            .conn
            .eval("bus revive", &REVIVE, |s| {
                s.key(&dead).key(&stream).key(&queues).arg(queue).arg(GROUP);
            })
            .await?;
        if n > 0 {
            self.groups.lock().insert(stream);
        }
        Ok(n as usize)
    }

    /// Every queue written to, sorted.
    pub(super) async fn queue_names(&self, task: &str) -> StoreResult<Vec<String>> {
        let set = Keys::new(task).queues();
        let mut names: Vec<String> = self
            .conn
            .query("bus queues", || {
                let mut cmd = redis::cmd("SMEMBERS");
                cmd.arg(&set);
                cmd
            })
            .await?;
        names.sort();
        Ok(names)
    }

    pub(super) async fn queue_list(&self, task: &str) -> StoreResult<Vec<QueuedMessage>> {
        let keys = Keys::new(task);
        let mut out = Vec::new();
        for queue in self.queue_names(task).await? {
            let stream = keys.bus(&queue);
            let (entries, pending): (RedisValue, RedisValue) = self
                .conn
                .pipeline("bus list", || {
                    let mut pipe = redis::pipe();
                    pipe.cmd("XRANGE").arg(&stream).arg("-").arg("+");
                    pipe.cmd("XPENDING")
                        .arg(&stream)
                        .arg(GROUP)
                        .arg("-")
                        .arg("+")
                        .arg(100_000);
                    pipe
                })
                .await?;
            let counts = pending_counts(&pending);
            for entry in array(&entries) {
                let [id, fields] = array(entry) else { continue };
                let deliveries = id_text(id)
                    .and_then(|i| counts.iter().find(|(p, _)| *p == i))
                    .map_or(0, |(_, n)| *n);
                let d = entry_delivery(&queue, id, fields, deliveries as u32)
                    .map_err(|e| command_error("bus list", &e))?;
                out.push(QueuedMessage {
                    queue: queue.clone(),
                    envelope: d.envelope,
                    state: MessageState::Pending,
                });
            }
        }
        let dead_key = keys.dead_letters();
        let dead: RedisValue = self
            .conn
            .query("bus list", || {
                let mut cmd = redis::cmd("XRANGE");
                cmd.arg(&dead_key).arg("-").arg("+");
                cmd
            })
            .await?;
        for entry in array(&dead) {
            let [_, fields] = array(entry) else { continue };
            let fields = array(fields);
            let (Some(queue), Some(m)) = (field(fields, "q"), field(fields, "m")) else {
                continue;
            };
            let mut envelope: Envelope = decode(&dead_key, &m)?;
            if let Some(a) = field(fields, "a").and_then(|a| a.parse().ok()) {
                envelope.attempts = a;
            }
            out.push(QueuedMessage {
                queue,
                envelope,
                state: MessageState::Dead,
            });
        }
        Ok(out)
    }

    pub(super) async fn queue_is_drained(&self, task: &str) -> StoreResult<bool> {
        let keys = Keys::new(task);
        let queues = self.queue_names(task).await?;
        if queues.is_empty() {
            return Ok(true);
        }
        let lengths: Vec<u64> = self
            .conn
            .pipeline("bus length", || {
                let mut pipe = redis::pipe();
                for q in &queues {
                    pipe.cmd("XLEN").arg(keys.bus(q));
                }
                pipe
            })
            .await?;
        Ok(lengths.iter().all(|n| *n == 0))
    }

    /// The streams of `queues`, each with its consumer group.
    async fn group_streams(&self, keys: &Keys, queues: &[String]) -> RedisResult<Vec<String>> {
        let streams: Vec<String> = queues.iter().map(|q| keys.bus(q)).collect();
        self.ensure_groups(&streams).await?;
        Ok(streams)
    }

    /// Creates the consumer group of each stream this process has not seen yet.
    async fn ensure_groups(&self, streams: &[String]) -> RedisResult<()> {
        let missing: Vec<String> = {
            let known = self.groups.lock();
            streams
                .iter()
                .filter(|s| !known.contains(*s))
                .cloned()
                .collect()
        };
        for stream in missing {
            let created: RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut self.conn.shared())
                .await;
            match created {
                Ok(()) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(e),
            }
            self.groups.lock().insert(stream);
        }
        Ok(())
    }

    /// Forgets the consumer groups of a cleaned task.
    pub(super) fn forget_task(&self, task: &str) {
        let prefix = Keys::new(task).bus("");
        self.groups.lock().retain(|s| !s.starts_with(&prefix));
    }

    fn forget_groups(&self, streams: &[String]) {
        let mut known = self.groups.lock();
        for s in streams {
            known.remove(s);
        }
    }
}
